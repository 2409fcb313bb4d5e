//! The API server's word on every kustomization (crates/testenv): each is applied with the real
//! kubectl as a user applies it — into a namespace of its own with `-n` when its objects name
//! none, the namespaces it expects created first — under server-side dry run and strict field
//! validation, then for real, then again, when every object must be reported unchanged.

use std::process::Output;
use std::sync::{Mutex, MutexGuard, PoisonError};

use testenv::Cluster;

#[allow(unused_imports)]
use crate::prelude::*;

use crate::kustomize::{applied_lines, ensure_namespace, kubectl, namespaces_of};

/// Held by the tests that apply kustomizations: several install objects of the same fixed names
/// (the namespace `pod-webhook-tracker`, the injector's webhook configuration, cluster roles),
/// so they take turns.
pub(crate) fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `kubectl apply` of one kustomization, as a user runs it.
pub(crate) struct Apply {
    pub(crate) dir: PathBuf,
    /// `-n NAMESPACE`, when its objects name no namespace.
    pub(crate) namespace: Option<String>,
}
impl Apply {
    /// Prepares the cluster for `build` as its user would: the CRDs of its custom kinds, the
    /// namespaces its objects name (dry runs need them to exist), and a namespace of its own
    /// when some objects name none. For `manifests/`, that namespace warns about pods that do
    /// not meet the `restricted` Pod Security Standard, which manifests/README.md promises
    /// (the FileFlows example runs FileFlows' own image, which does not).
    pub(crate) fn prepare(cluster: &Cluster, build: &Build) -> Apply {
        let objects = build.values();
        crds::install_for(cluster, &objects);
        let (named, unnamed) = namespaces_of(cluster, &objects);
        for namespace in &named {
            ensure_namespace(cluster, namespace, &[]);
        }
        let namespace = unnamed.then(|| {
            let namespace = cluster.namespace("apply");
            if !build.dir.starts_with("manifests") {
                return namespace;
            }
            cluster
                .admin()
                .merge_patch(
                    &format!("/api/v1/namespaces/{namespace}"),
                    &json!({"metadata": {"labels": {"pod-security.kubernetes.io/warn": "restricted"}}}),
                )
                .expect(200, "label the namespace");
            namespace
        });
        Apply {
            dir: build.dir.clone(),
            namespace,
        }
    }

    /// Runs `kubectl apply [-n NS] -k DIR EXTRA...`.
    pub(crate) fn run(&self, cluster: &Cluster, extra: &[&str]) -> Output {
        self.kubectl(cluster, "apply", extra)
    }

    /// Runs `kubectl VERB [-n NS] -k DIR EXTRA...`.
    fn kubectl(&self, cluster: &Cluster, verb: &str, extra: &[&str]) -> Output {
        let mut command = kubectl(cluster);
        command.arg(verb);
        if let Some(namespace) = &self.namespace {
            command.args(["-n", namespace]);
        }
        command.arg("-k").arg(&self.dir).args(extra);
        command.output().expect("kubectl runs")
    }

    /// The stored objects (`kubectl get -k DIR -o json`) as the user set them: without what
    /// the server and its controllers keep changing (status, resourceVersion, managedFields).
    fn stored(&self, cluster: &Cluster) -> Result<Vec<Value>, String> {
        let output = self.kubectl(cluster, "get", &["-o", "json"]);
        if !output.status.success() {
            return Err(format!("kubectl get -k {}: {output:?}", self.dir.display()));
        }
        let list: Value = serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
        let mut items = list["items"].as_array().cloned().unwrap_or_default();
        for item in &mut items {
            let object = item.as_object_mut().expect("an object");
            object.remove("status");
            let metadata = object["metadata"].as_object_mut().expect("metadata");
            metadata.remove("resourceVersion");
            metadata.remove("managedFields");
        }
        Ok(items)
    }
}

/// The kinds kubectl reports `configured` on every apply of an unchanged object, and why:
/// its three-way merge sends a field again although the server stores it as it is (the stored
/// objects are compared: nothing may change).
const RESENT_BY_KUBECTL: [(&str, &str); 2] = [
    (
        "poddisruptionbudget.policy/",
        "spec.selector has the patch strategy `replace`, which kubectl always sends whole",
    ),
    (
        "validatingadmissionpolicy.admissionregistration.k8s.io/",
        "the server writes `scope: \"*\"` (its default) into each rule of the atomic list \
         matchConstraints.resourceRules, which kubectl then sends whole; tests/policy reads \
         the policy with `scope` unset",
    ),
];

/// Why `output` of `what` is not `count` lines that all end with `ending` and no warning, if
/// it is not.
fn reported(what: &str, output: &Output, count: usize, ending: &str) -> Option<String> {
    let lines = applied_lines(output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let as_expected = |line: &String| {
        line.ends_with(ending)
            || (ending == " unchanged"
                && line.ends_with(" configured")
                && RESENT_BY_KUBECTL
                    .iter()
                    .any(|(prefix, _)| line.starts_with(prefix)))
    };
    let fine = output.status.success()
        && lines.len() == count
        && lines.iter().all(as_expected)
        && stderr.trim().is_empty();
    (!fine).then(|| {
        format!(
            "{what}: expected {count} objects reported `{ending}` and no warning, got {}:\n{}{stderr}",
            output.status,
            lines.join("\n")
        )
    })
}

#[test]
fn every_kustomization_is_accepted_by_the_api_server_and_a_second_apply_changes_nothing() {
    let cluster = Cluster::shared();
    let _turn = one_at_a_time();
    let mut problems = Vec::new();
    for build in BUILDS.iter() {
        let apply = Apply::prepare(cluster, build);
        let what = format!(
            "kubectl apply {}-k {}",
            apply
                .namespace
                .as_ref()
                .map(|ns| format!("-n {ns} "))
                .unwrap_or_default(),
            build.dir.display()
        );
        let count = build.objects.len();
        let steps: [(&[&str], &str, &str); 3] = [
            (
                &["--dry-run=server", "--validate=strict"],
                "(server dry run)",
                "server-side dry run, strict field validation",
            ),
            (&["--validate=strict"], "", "for real"),
            (&[], " unchanged", "again"),
        ];
        let mut before = Ok(Vec::new());
        for (extra, ending, step) in steps {
            if step == "again" {
                before = apply.stored(cluster);
            }
            let output = apply.run(cluster, extra);
            if let Some(problem) = reported(&format!("{what} ({step})"), &output, count, ending) {
                problems.push(problem);
                break;
            }
            if step == "again" {
                let after = apply.stored(cluster);
                match (&before, &after) {
                    (Ok(before), Ok(after)) if before == after && before.len() == count => {}
                    (Ok(before), Ok(after)) => problems.push(format!(
                        "{what}: the second apply changed stored objects:\nbefore: {before:#?}\nafter: {after:#?}"
                    )),
                    (Err(problem), _) | (_, Err(problem)) => problems.push(problem.clone()),
                }
            }
        }
    }
    assert!(BUILDS.len() >= 13, "only {} kustomizations", BUILDS.len());
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
