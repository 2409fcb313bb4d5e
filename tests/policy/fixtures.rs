//! Pods, users and admission requests to put to the policy, and the keys it allows.

#[allow(unused_imports)]
use crate::prelude::*;

/// The label that holds the count (the program's default `--label`) and its write record.
pub(crate) const LABEL: &str = "active-jobs";
pub(crate) const WRITES: &str = "active-jobs-writes";
/// The running jobs (`<label>-jobs`) and the annotations the sidecar manifests set while busy.
pub(crate) const JOBS: &str = "active-jobs-jobs";
pub(crate) const KARPENTER: &str = "karpenter.sh/do-not-disrupt";
pub(crate) const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
pub(crate) const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
/// The allowed annotations as the denial message lists them.
pub(crate) const ALLOWED_ANNOTATIONS: &str = "active-jobs-writes, active-jobs-jobs, \
    karpenter.sh/do-not-disrupt, controller.kubernetes.io/pod-deletion-cost, \
    cluster-autoscaler.kubernetes.io/safe-to-evict";
/// The namespace and pod of the samples.
pub(crate) const NAMESPACE: &str = "jobs";
pub(crate) const POD: &str = "worker-7";
/// The user extra naming the pod a bound service account token belongs to.
pub(crate) const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
pub(crate) fn map(entries: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    // Go leaves an empty map out of the JSON, and so out of CEL's view.
    (!entries.is_empty()).then(|| {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    })
}
/// A running worker pod of a Job, with the tracker sidecar.
pub(crate) fn pod(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            generate_name: Some("worker-".to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            uid: Some(format!("{name}-uid")),
            resource_version: Some("4711".to_owned()),
            labels: map(labels),
            annotations: map(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".to_owned(),
                kind: "Job".to_owned(),
                name: "worker".to_owned(),
                uid: "job-uid".to_owned(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            finalizers: Some(vec!["batch.kubernetes.io/job-tracking".to_owned()]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some("job-tracker".to_owned()),
            automount_service_account_token: Some(false),
            node_name: Some("node-1".to_owned()),
            restart_policy: Some("Never".to_owned()),
            termination_grace_period_seconds: Some(600),
            init_containers: Some(vec![Container {
                name: "tracker".to_owned(),
                image: Some("ghcr.io/pod-webhook-tracker/pod-webhook-tracker:v0.1.0".to_owned()),
                restart_policy: Some("Always".to_owned()),
                ..Container::default()
            }]),
            containers: vec![Container {
                name: "job".to_owned(),
                image: Some("busybox:1.37".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: Some("10.0.0.7".to_owned()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}
pub(crate) fn json_of(pod: &Pod) -> Value {
    serde_json::to_value(pod).expect("a pod serializes")
}
/// The user of a bound service account token, as the API server authenticates it.
pub(crate) fn service_account(
    namespace: &str,
    name: &str,
    extra: Option<&[(&str, &str)]>,
) -> UserInfo {
    UserInfo {
        username: Some(format!("system:serviceaccount:{namespace}:{name}")),
        uid: Some(format!("{name}-sa-uid")),
        groups: Some(vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_owned(),
        ]),
        extra: extra.map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                .collect()
        }),
    }
}
/// The tracker's token: bound to its pod (Kubernetes 1.30+ adds the pod and node).
pub(crate) fn tracker_of(namespace: &str, pod: &str) -> UserInfo {
    let pod_uid = format!("{pod}-uid");
    service_account(
        namespace,
        "job-tracker",
        Some(&[
            ("authentication.kubernetes.io/credential-id", "JTI=0b5c6a7e"),
            ("authentication.kubernetes.io/node-name", "node-1"),
            ("authentication.kubernetes.io/node-uid", "node-1-uid"),
            (POD_NAME_EXTRA, pod),
            ("authentication.kubernetes.io/pod-uid", &pod_uid),
        ]),
    )
}
/// An UPDATE of `old` into `new` (a patch arrives as one), by `user`.
pub(crate) fn update(user: UserInfo, old: &Pod, new: &Pod) -> Admission {
    let name = new.metadata.name.clone().expect("a name");
    let namespace = new.metadata.namespace.clone().expect("a namespace");
    let pods = json!({"group": "", "version": "v1", "resource": "pods"});
    let kind = json!({"group": "", "version": "v1", "kind": "Pod"});
    Admission {
        request: json!({
            "uid": "7d0c3f0e-2b1a-4c55-9a43-5b1f0c2d9e11",
            "kind": kind,
            "resource": pods,
            "requestKind": kind,
            "requestResource": pods,
            "name": name,
            "namespace": namespace,
            "operation": "UPDATE",
            "userInfo": serde_json::to_value(user).expect("user info serializes"),
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "PatchOptions"},
            "dryRun": false,
        }),
        object: json_of(new),
        old_object: json_of(old),
    }
}
/// The same request on a subresource of the pod.
pub(crate) fn on_subresource(mut admission: Admission, sub: &str) -> Admission {
    admission.request["subResource"] = json!(sub);
    admission.request["requestSubResource"] = json!(sub);
    admission
}
pub(crate) fn tracker() -> UserInfo {
    tracker_of(NAMESPACE, POD)
}
pub(crate) fn idle() -> Pod {
    pod(POD, &[("app.kubernetes.io/name", "worker")], &[])
}
pub(crate) fn busy(count: &str, writes: &str) -> Pod {
    pod(
        POD,
        &[("app.kubernetes.io/name", "worker"), (LABEL, count)],
        &[(WRITES, writes)],
    )
}

// ---- What the policy allows ------------------------------------------------------------------
