//! The injector's variants keep their meaning, proven from what they render: which pods in which
//! namespaces the real API server sends to the injector under each variant's webhook
//! configuration, and that the certificate each variant serves is for the name the API server
//! calls.

use std::time::{Duration, Instant};

use testenv::Cluster;

#[allow(unused_imports)]
use crate::prelude::*;

use crate::kustomize::ensure_namespace;
use crate::server::{Apply, one_at_a_time};

/// The webhook configuration every variant installs, and its webhook.
const CONFIGURATION: &str = "pod-webhook-tracker";
const WEBHOOK: &str = "inject.pod-webhook-tracker.io";
/// The injector's namespace, which no variant injects into.
const OWN_NAMESPACE: &str = "pod-webhook-tracker";
/// The label pods and namespaces opt in with.
const OPT_IN: &str = "pod-webhook-tracker.io/inject";

/// What the documentation says a variant does with a pod: its namespace's name and opt-in label,
/// and the pod's opt-in label.
type Meaning = fn(&str, Option<&str>, Option<&str>) -> bool;

/// manifests/injector and self-signed: "the injector adds the sidecar to every pod labelled
/// pod-webhook-tracker.io/inject: "true"", never in its own namespace or kube-system.
fn pods_opt_in(namespace: &str, _: Option<&str>, pod: Option<&str>) -> bool {
    pod == Some("true") && ![OWN_NAMESPACE, "kube-system"].contains(&namespace)
}

/// namespace-opt-in: "every pod created in a namespace labelled pod-webhook-tracker.io/inject=
/// enabled gets the tracker, unless the pod itself says pod-webhook-tracker.io/inject: "false"",
/// instead of single pods; never in its own namespace or kube-system.
fn namespaces_opt_in(namespace: &str, labelled: Option<&str>, pod: Option<&str>) -> bool {
    labelled == Some("enabled")
        && pod != Some("false")
        && ![OWN_NAMESPACE, "kube-system"].contains(&namespace)
}

const VARIANTS: [(&str, Meaning); 3] = [
    ("manifests/injector", pods_opt_in),
    ("manifests/injector/self-signed", pods_opt_in),
    ("manifests/injector/namespace-opt-in", namespaces_opt_in),
];

/// One pod to create: its namespace (and that namespace's opt-in label), its own opt-in label.
struct Case {
    namespace: String,
    labelled: Option<&'static str>,
    pod: Option<&'static str>,
}
impl Case {
    fn describe(&self) -> String {
        format!(
            "namespace {} ({}), pod {}",
            self.namespace,
            self.labelled
                .map_or("not labelled".to_owned(), |l| format!("{OPT_IN}={l}")),
            self.pod
                .map_or("not labelled".to_owned(), |l| format!("{OPT_IN}: {l:?}"))
        )
    }

    /// Whether the API server sends this pod's creation to the injector: no injector runs, so
    /// the call fails, and `failurePolicy: Fail` refuses the pod naming the webhook. A dry run
    /// stores nothing; the webhook (`sideEffects: None`) is called for it all the same.
    fn sent_to_injector(&self, cluster: &Cluster) -> bool {
        let mut labels = serde_json::Map::new();
        if let Some(value) = self.pod {
            labels.insert(OPT_IN.to_owned(), Value::from(value));
        }
        // A pod that meets the `restricted` standard the injector's namespace enforces.
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "probe", "labels": labels},
            "spec": {
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "job", "image": "busybox:1.37.0",
                    "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                }],
            },
        });
        let answer = cluster.admin().post(
            &format!("/api/v1/namespaces/{}/pods?dryRun=All", self.namespace),
            &pod,
        );
        match answer.status {
            201 => false,
            _ if answer
                .message()
                .contains(&format!("failed calling webhook \"{WEBHOOK}\"")) =>
            {
                true
            }
            _ => panic!("{}: unexpected answer {answer:?}", self.describe()),
        }
    }
}

/// Which cases the API server sends to the injector now.
fn sent(cluster: &Cluster, cases: &[Case]) -> Vec<bool> {
    cases
        .iter()
        .map(|case| case.sent_to_injector(cluster))
        .collect()
}

/// Waits until the API server sends exactly `expected` (its webhook configurations reach the
/// admission chain a moment after they are stored).
fn wait_sent(cluster: &Cluster, cases: &[Case], expected: &[bool], what: &str) {
    let started = Instant::now();
    loop {
        let now = sent(cluster, cases);
        if now == expected {
            return;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let wrong: Vec<String> = cases
                .iter()
                .zip(now.iter().zip(expected))
                .filter(|(_, (now, expected))| now != expected)
                .map(|(case, (now, _))| {
                    let verb = if *now { "sent" } else { "not sent" };
                    format!("  {}: {verb} to the injector", case.describe())
                })
                .collect();
            panic!("{what}, but after 30 s:\n{}", wrong.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn each_injector_variant_sends_exactly_the_pods_it_opts_in_to_the_injector() {
    let cluster = Cluster::shared();
    let _turn = one_at_a_time();
    let plain = cluster.namespace("plain");
    let enabled = cluster.namespace("enabled");
    ensure_namespace(cluster, OWN_NAMESPACE, &[]);
    // The injector's own namespace and kube-system opted in too: only their exclusion may
    // leave them alone.
    for namespace in [enabled.as_str(), OWN_NAMESPACE, "kube-system"] {
        cluster
            .admin()
            .merge_patch(
                &format!("/api/v1/namespaces/{namespace}"),
                &json!({"metadata": {"labels": {OPT_IN: "enabled"}}}),
            )
            .expect(200, "opt the namespace in");
    }
    let mut cases = Vec::new();
    for (namespace, labelled) in [
        (plain.as_str(), None),
        (enabled.as_str(), Some("enabled")),
        (OWN_NAMESPACE, Some("enabled")),
        ("kube-system", Some("enabled")),
    ] {
        for pod in [None, Some("true"), Some("false")] {
            cases.push(Case {
                namespace: namespace.to_owned(),
                labelled,
                pod,
            });
        }
    }
    let configuration = format!(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{CONFIGURATION}"
    );
    for (dir, meaning) in VARIANTS {
        // Start from no webhook at all, so that the next configuration is seen taking effect.
        let deleted = cluster.admin().delete(&configuration);
        assert!(
            deleted.status == 200 || deleted.status == 404,
            "{deleted:?}"
        );
        wait_sent(
            cluster,
            &cases,
            &vec![false; cases.len()],
            "without a webhook configuration no pod is sent to the injector",
        );

        let build = build(dir);
        let apply = Apply::prepare(cluster, build);
        let output = apply.run(cluster, &[]);
        assert!(
            output.status.success(),
            "kubectl apply -k {dir}: {output:?}"
        );
        let rendered = &build
            .one("MutatingWebhookConfiguration", CONFIGURATION)
            .value;
        let stored = cluster
            .admin()
            .get(&configuration)
            .expect(200, "the configuration");
        for field in [
            "rules",
            "objectSelector",
            "namespaceSelector",
            "failurePolicy",
            "clientConfig",
        ] {
            assert_eq!(
                stored["webhooks"][0][field], rendered["webhooks"][0][field],
                "{dir}: the stored webhook's {field} is the rendered one"
            );
        }

        let expected: Vec<bool> = cases
            .iter()
            .map(|case| meaning(&case.namespace, case.labelled, case.pod))
            .collect();
        assert!(expected.contains(&true) && expected.contains(&false));
        wait_sent(
            cluster,
            &cases,
            &expected,
            &format!("{dir} should send exactly the pods it opts in to the injector"),
        );
    }
    let deleted = cluster.admin().delete(&configuration);
    assert_eq!(deleted.status, 200, "{deleted:?}");
}

#[test]
fn namespace_opt_in_changes_only_the_selectors_of_the_cert_manager_variant() {
    let default = build("manifests/injector");
    let opt_in = build("manifests/injector/namespace-opt-in");
    let without_selectors = |build: &Build| -> Vec<Value> {
        let mut values = build.values();
        for value in &mut values {
            if value["kind"] == "MutatingWebhookConfiguration" {
                let webhook = value["webhooks"][0].as_object_mut().expect("a webhook");
                assert!(webhook.remove("objectSelector").is_some());
                assert!(webhook.remove("namespaceSelector").is_some());
            }
        }
        values
    };
    assert_eq!(without_selectors(default), without_selectors(opt_in));
}

/// The Service the webhook calls, as `name.namespace.svc`.
fn called_name(build: &Build) -> String {
    let webhook = &build
        .one("MutatingWebhookConfiguration", CONFIGURATION)
        .value["webhooks"][0];
    assert_eq!(webhook["name"], WEBHOOK);
    let service = &webhook["clientConfig"]["service"];
    let (name, namespace) = (
        service["name"].as_str().expect("a service name"),
        service["namespace"].as_str().expect("a service namespace"),
    );
    let rendered = build.one("Service", name);
    assert_eq!(rendered.namespace(), Some(namespace), "{}", rendered.at());
    format!("{name}.{namespace}.svc")
}

#[test]
fn the_cert_manager_variants_serve_a_certificate_for_the_name_the_api_server_calls() {
    for dir in ["manifests/injector", "manifests/injector/namespace-opt-in"] {
        let build = build(dir);
        let called = called_name(build);
        let certificate = build.of_kind("Certificate").next().expect("a Certificate");
        let spec = &certificate.value["spec"];
        let names: Vec<&str> = spec["dnsNames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            names.contains(&called.as_str()),
            "{dir}: {names:?} lacks {called}"
        );
        let issuer = build.one(
            "Issuer",
            spec["issuerRef"]["name"].as_str().expect("an issuer"),
        );
        assert_eq!(issuer.namespace(), certificate.namespace(), "{dir}");
        // cert-manager's CA injector fills the caBundle from this certificate.
        let configuration = build.one("MutatingWebhookConfiguration", CONFIGURATION);
        assert_eq!(
            configuration.value["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            format!(
                "{}/{}",
                certificate.namespace().expect("a namespace"),
                certificate.name()
            ),
            "{dir}"
        );
        // The injector serves the Secret the certificate is written to.
        let secret = spec["secretName"].as_str().expect("a secretName");
        let deployment = build.one("Deployment", "pod-webhook-tracker-injector");
        let volumes = &deployment.value["spec"]["template"]["spec"]["volumes"];
        assert!(
            volumes
                .as_array()
                .into_iter()
                .flatten()
                .any(|volume| volume["secret"]["secretName"] == secret),
            "{dir}: the injector does not mount {secret}: {volumes}"
        );
    }
}

#[test]
fn the_self_signed_variant_makes_its_certificate_for_the_name_the_api_server_calls() {
    let build = build("manifests/injector/self-signed");
    let called = called_name(build);
    assert_eq!(build.of_kind("Certificate").count(), 0);
    let deployment = build.one("Deployment", "pod-webhook-tracker-injector");
    let Object::Deployment(typed) = deployment.object() else {
        unreachable!()
    };
    let spec = typed.spec;
    // Each start makes a new CA: two replicas would each trust only their own.
    assert_eq!(spec.replicas, Some(1));
    let injector = spec_of(&spec.template)
        .containers
        .iter()
        .find(|c| is_injector(c))
        .cloned()
        .expect("the injector");
    let args = args_of(&injector);
    for arg in [
        "--self-signed".to_owned(),
        format!("--self-signed-dns-name={called}"),
        format!("--webhook-configuration={CONFIGURATION}"),
    ] {
        assert!(args.contains(&arg), "{arg} not in {args:?}");
    }
}
