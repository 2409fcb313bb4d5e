//! `helm install` into a real API server (crates/testenv; no kubelet: the pods never run, so no
//! `--wait`). The documented install stores every object the chart renders, as rendered, owned
//! by its release; an upgrade with the same values changes no stored object; uninstall removes
//! them all, cluster-scoped ones too. cert-manager and the Prometheus operator's objects install
//! once their CRDs are there, and without them the install is refused, naming what is missing.

use std::time::{Duration, Instant};

use serde_json::Value;
use testenv::{Cluster, Options};

use crate::helm::{CHART, NAMESPACE, RELEASE, helm_on, sets, succeeded};
use crate::kustomize::{documents, kind_and_name, run_with_input};

/// A release installed by a test, uninstalled when dropped (a failing test leaves none behind
/// to refuse pods or to stand in the next install's way).
pub(crate) struct Release<'a> {
    pub(crate) cluster: &'a Cluster,
    pub(crate) name: String,
    pub(crate) namespace: String,
    /// What `helm install` printed (its status and NOTES).
    pub(crate) said: String,
}

impl<'a> Release<'a> {
    /// `helm install NAME charts/pod-webhook-tracker -n NAMESPACE --create-namespace --set ...`.
    pub(crate) fn install(
        cluster: &'a Cluster,
        name: &str,
        namespace: &str,
        values: &[&str],
    ) -> Release<'a> {
        let output = helm_on(cluster)
            .args([
                "install",
                name,
                CHART,
                "-n",
                namespace,
                "--create-namespace",
            ])
            .args(sets(values))
            .output()
            .expect("helm runs");
        let said = succeeded(&format!("helm install {name} {values:?}"), &output)
            .unwrap_or_else(|error| panic!("{error}"));
        Release {
            cluster,
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            said,
        }
    }

    /// `helm get manifest`: what the release installed.
    pub(crate) fn manifest(&self) -> String {
        let output = helm_on(self.cluster)
            .args(["get", "manifest", &self.name, "-n", &self.namespace])
            .output()
            .expect("helm runs");
        succeeded("helm get manifest", &output).unwrap_or_else(|error| panic!("{error}"))
    }

    /// The stored objects of the release's manifest (`kubectl get -f -`), without what the
    /// server keeps changing.
    pub(crate) fn stored(&self) -> Vec<Value> {
        stored(self.cluster, &self.manifest())
    }

    fn uninstall(&self) -> std::process::Output {
        helm_on(self.cluster)
            .args(["uninstall", &self.name, "-n", &self.namespace])
            .output()
            .expect("helm runs")
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let _ = self.uninstall();
    }
}

/// The objects of `manifest` as the server stores them now (those it has).
fn stored(cluster: &Cluster, manifest: &str) -> Vec<Value> {
    let mut get = cluster.kubectl();
    get.args(["get", "--ignore-not-found", "-o", "json", "-f", "-"]);
    let output = run_with_input(get, manifest);
    assert!(output.status.success(), "kubectl get -f -: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    if text.trim().is_empty() {
        return Vec::new();
    }
    let list: Value = serde_json::from_str(&text).expect("JSON");
    // One object comes alone, several as a List.
    match list["kind"].as_str() {
        Some("List") => list["items"].as_array().cloned().unwrap_or_default(),
        _ => vec![list],
    }
}

/// Every field `rendered` sets, where `stored` differs (the server adds its defaults; it must
/// change nothing that was set).
fn not_kept(rendered: &Value, stored: &Value, path: &str, out: &mut Vec<String>) {
    match (rendered, stored) {
        (Value::Object(set), Value::Object(kept)) => {
            for (key, value) in set {
                let here = format!("{path}.{key}");
                match kept.get(key) {
                    Some(other) => not_kept(value, other, &here, out),
                    None => out.push(format!("{here} was not stored")),
                }
            }
        }
        (Value::Array(set), Value::Array(kept)) if set.len() == kept.len() => {
            for (index, (value, other)) in set.iter().zip(kept).enumerate() {
                not_kept(value, other, &format!("{path}[{index}]"), out);
            }
        }
        // Quantities and ports come back as the server normalizes them.
        (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a))
            if a.to_string() == *b => {}
        (set, kept) if set == kept => {}
        (set, kept) => out.push(format!("{path}: rendered {set}, stored {kept}")),
    }
}

/// The stored object of the same kind and name.
fn find<'a>(stored: &'a [Value], rendered: &Value) -> Option<&'a Value> {
    stored.iter().find(|s| {
        s["kind"] == rendered["kind"] && s["metadata"]["name"] == rendered["metadata"]["name"]
    })
}

/// The resourceVersion of each stored object, by kind and name.
fn versions(objects: &[Value]) -> Vec<(String, String)> {
    let mut versions: Vec<(String, String)> = objects
        .iter()
        .map(|o| {
            (
                kind_and_name(o),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    versions.sort();
    versions
}

/// Installs, checks the stored objects, upgrades with the same values, uninstalls.
fn install_upgrade_uninstall(cluster: &Cluster, name: &str, namespace: &str, values: &[&str]) {
    let release = Release::install(cluster, name, namespace, values);
    assert!(
        release.said.contains("STATUS: deployed"),
        "{}",
        release.said
    );
    assert!(release.said.contains("NOTES:"), "{}", release.said);
    let manifest = release.manifest();
    let rendered = documents(&manifest, "helm get manifest");
    let expected = crate::helm::render(name, namespace, values);
    assert_eq!(
        crate::helm::names(&rendered),
        crate::helm::names(&expected),
        "{name}: installs what helm template renders"
    );
    let kept_objects = release.stored();
    assert_eq!(
        kept_objects.len(),
        rendered.len(),
        "{name}: every object is stored"
    );
    let mut problems = Vec::new();
    for object in &rendered {
        let at = kind_and_name(object);
        let Some(kept) = find(&kept_objects, object) else {
            problems.push(format!("{at} is not stored"));
            continue;
        };
        not_kept(object, kept, &at, &mut problems);
        // Owned by the release: helm upgrades and uninstalls it, and refuses to take it over
        // from another.
        assert_eq!(
            kept["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm",
            "{at}"
        );
        assert_eq!(
            kept["metadata"]["annotations"]["meta.helm.sh/release-name"], name,
            "{at}"
        );
    }
    assert!(problems.is_empty(), "{name}: {}", problems.join("\n"));

    let before = versions(&kept_objects);
    let output = helm_on(cluster)
        .args(["upgrade", name, CHART, "-n", namespace])
        .args(sets(values))
        .output()
        .expect("helm runs");
    succeeded("helm upgrade with the same values", &output).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        versions(&release.stored()),
        before,
        "{name}: an upgrade with the same values changes no stored object"
    );

    let output = release.uninstall();
    succeeded("helm uninstall", &output).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    loop {
        let left = stored(cluster, &manifest);
        if left.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name}: helm uninstall left {}",
            crate::helm::names(&left)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_documented_install_stores_what_the_chart_renders_and_uninstall_removes_it() {
    let cluster = Cluster::shared();
    let _turn = crate::helm::one_at_a_time();
    // helm install pod-webhook-tracker charts/pod-webhook-tracker -n pod-webhook-tracker --create-namespace
    install_upgrade_uninstall(cluster, RELEASE, NAMESPACE, &[]);
}

#[test]
fn cert_manager_the_standalone_service_and_monitoring_install_once_their_crds_are_there() {
    let cluster = Cluster::shared();
    let _turn = crate::helm::one_at_a_time();
    let values = [
        "certManager.enabled=true",
        "injector.optIn=namespaces",
        "standalone.enabled=true",
        "standalone.scope=cluster",
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
    ];
    let namespace = cluster.namespace("release");
    crate::crds::install_for(cluster, &crate::helm::render("guard", &namespace, &values));
    install_upgrade_uninstall(cluster, "guard", &namespace, &values);
    let values = ["standalone.enabled=true", "metrics.podMonitor.enabled=true"];
    install_upgrade_uninstall(cluster, "watched", &cluster.namespace("release"), &values);
}

#[test]
fn without_their_crds_an_install_is_refused_naming_what_is_missing() {
    // A cluster of its own: the shared one gets the CRDs from other tests.
    let cluster = Cluster::start(Options {
        controller_manager: false,
        ..Options::default()
    });
    let refused = |values: &[&str], expected: &str| {
        let output = helm_on(&cluster)
            .args(["install", "guard", CHART, "-n", "default"])
            .args(sets(values))
            .output()
            .expect("helm runs");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "{values:?} installed without its CRDs"
        );
        assert!(
            said.contains(expected),
            "{values:?}: expected `{expected}` in: {said}"
        );
        // Nothing was stored, not even the release's record.
        let secrets = cluster
            .admin()
            .get("/api/v1/namespaces/default/secrets?labelSelector=owner%3Dhelm")
            .expect(200, "list the releases' records");
        assert_eq!(
            secrets["items"].as_array().map(Vec::len),
            Some(0),
            "{secrets}"
        );
    };
    refused(
        &["certManager.enabled=true"],
        "certManager.enabled (cert-manager issues the certificates): the cluster does not serve \
         cert-manager.io/v1/Certificate. Install its CRDs first, or turn the option off",
    );
    refused(
        &["metrics.podMonitor.enabled=true"],
        "metrics (the Prometheus operator's ServiceMonitor, PodMonitor and PrometheusRule): the \
         cluster does not serve monitoring.coreos.com/v1. Install its CRDs first, or turn the \
         option off",
    );
    // With cert-manager's CRDs, the same install goes through.
    let kinds = ["Certificate", "Issuer"].into_iter().collect();
    crate::crds::install(&cluster, "cert-manager.io", &kinds);
    let release = Release::install(&cluster, "guard", "default", &["certManager.enabled=true"]);
    assert!(
        release.said.contains("STATUS: deployed"),
        "{}",
        release.said
    );
}
