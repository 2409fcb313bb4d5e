//! The chart's least-privilege policy, installed by `helm install` and enforced by the real API
//! server, follows its values: the accounts of `policy.trackerAccounts` are held to their own
//! pod and to the label `injection.label` names (with its `-writes` annotation), which a sidecar
//! tracker of that label writes through; the default label is then refused, with the policy's
//! words passed on by the tracker; an account not listed is not held at all.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testenv::{Api, Cluster, Credentials};

use crate::install::Release;
use crate::support::Tracker;

/// The label of the release's injected trackers.
const LABEL: &str = "example.com/busy";

fn pod_path(namespace: &str, pod: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods/{pod}")
}

/// An account with get and patch on the namespace's pods (what the NOTES grant).
fn account(cluster: &Cluster, namespace: &str, name: &str) {
    let admin = cluster.admin();
    admin
        .post(
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
            &json!({"metadata": {"name": name}}),
        )
        .expect(201, "an account");
    let rbac = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}");
    admin
        .post(
            &format!("{rbac}/roles"),
            &json!({"metadata": {"name": name},
                    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]}),
        )
        .expect(201, "a role");
    admin
        .post(
            &format!("{rbac}/rolebindings"),
            &json!({"metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}),
        )
        .expect(201, "a binding");
}

/// A pod of `account` that never runs.
fn pod(cluster: &Cluster, namespace: &str, name: &str, account: &str) {
    cluster
        .admin()
        .post(
            &format!("/api/v1/namespaces/{namespace}/pods"),
            &json!({"metadata": {"name": name, "labels": {"app": "worker"}},
                    "spec": {"serviceAccountName": account, "automountServiceAccountToken": false,
                             "containers": [{"name": "job", "image": "busybox:1.37.0"}]}}),
        )
        .expect(201, "a pod");
}

/// A kubeconfig with a token of `account` bound to `pod`, as the pod's projected volume holds.
fn bound(cluster: &Cluster, namespace: &str, account: &str, pod: &str) -> std::path::PathBuf {
    let token = cluster.token(namespace, account, &[], Some(pod));
    cluster.kubeconfig(
        &format!("{namespace}-{account}-{pod}"),
        &Credentials::Token(token),
        namespace,
    )
}

fn labels(cluster: &Cluster, namespace: &str, pod: &str) -> Value {
    cluster
        .admin()
        .get(&pod_path(namespace, pod))
        .expect(200, "the pod")["metadata"]["labels"]
        .clone()
}

#[test]
fn the_charts_policy_holds_the_listed_accounts_to_their_pod_and_the_label_of_the_values() {
    let cluster = Cluster::shared();
    let _turn = crate::helm::one_at_a_time();
    let home = cluster.namespace("policy-home");
    let _release = Release::install(
        cluster,
        "policy",
        &home,
        &[
            "injector.enabled=false",
            &format!("injection.label={LABEL}"),
            "policy.trackerAccounts={batch-workers}",
        ],
    );
    let ns = cluster.namespace("policy");
    account(cluster, &ns, "batch-workers");
    account(cluster, &ns, "other-tool");
    for (name, owner) in [
        ("worker", "batch-workers"),
        ("other", "batch-workers"),
        ("tool", "other-tool"),
    ] {
        pod(cluster, &ns, name, owner);
    }
    let worker = bound(cluster, &ns, "batch-workers", "worker");
    let api = Api::from_kubeconfig(&worker);

    // The server takes up the policy a moment after it is stored: a write to another pod,
    // dry run, is refused by it once it is in force.
    let who = format!("system:serviceaccount:{ns}:batch-workers");
    let started = Instant::now();
    loop {
        let answer = api.merge_patch(
            &format!("{}?dryRun=All", pod_path(&ns, "other")),
            &json!({"metadata": {"labels": {LABEL: "1"}}}),
        );
        if answer.status == 403
            && answer.message().contains(&format!(
                "{who} of pod worker may change only its own pod, not pod other"
            ))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the policy is not enforced: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A sidecar tracker of the release's label counts its own pod: the label and its write
    // record are the keys the values allow.
    let tracker = Tracker::builder()
        .args([
            format!("--kubeconfig={}", worker.display()),
            format!("--label={LABEL}"),
        ])
        .env("POD_NAME", "worker")
        .env("POD_NAMESPACE", &ns)
        .start();
    tracker.wait_ready();
    assert_eq!(tracker.increment("").count(), 1);
    assert_eq!(labels(cluster, &ns, "worker")[LABEL], "1");

    // The default label is not the release's: the server refuses, the tracker says why.
    let default_label = Tracker::builder()
        .args([format!("--kubeconfig={}", worker.display())])
        .env("POD_NAME", "worker")
        .env("POD_NAMESPACE", &ns)
        .start();
    default_label.wait_ready();
    let answer = default_label.increment("");
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        answer.body.contains(&format!(
            "{who} may change only the labels {LABEL} of pod worker, not active-jobs"
        )),
        "{answer:?}"
    );
    assert!(
        labels(cluster, &ns, "worker").get("active-jobs").is_none(),
        "nothing stored"
    );

    // An account the values do not list is not held: it may change another pod.
    let tool = Api::from_kubeconfig(&bound(cluster, &ns, "other-tool", "tool"));
    tool.merge_patch(
        &pod_path(&ns, "other"),
        &json!({"metadata": {"labels": {"checked": "yes"}}}),
    )
    .expect(200, "an account the policy does not list");
}
