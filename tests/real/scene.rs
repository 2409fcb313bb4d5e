//! A test's corner of the real cluster: its namespace, its pods, the service accounts the
//! trackers run as (with the rights a test grants), and the trackers started as them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testenv::{Api, Cluster, Credentials};

use super::support::{Tracker, TrackerBuilder};

/// A test's namespace on the shared cluster.
pub(crate) struct Scene {
    pub(crate) cluster: &'static Cluster,
    pub(crate) namespace: String,
}

impl Scene {
    /// A new namespace named after `prefix`.
    pub(crate) fn new(prefix: &str) -> Scene {
        let cluster = Cluster::shared();
        Scene {
            namespace: cluster.namespace(prefix),
            cluster,
        }
    }

    /// The administrator's requests.
    pub(crate) fn admin(&self) -> &Api {
        self.cluster.admin()
    }

    /// `/api/v1/namespaces/NS/pods[/NAME]`.
    pub(crate) fn pods_path(&self, name: Option<&str>) -> String {
        let base = format!("/api/v1/namespaces/{}/pods", self.namespace);
        name.map_or(base.clone(), |name| format!("{base}/{name}"))
    }

    /// Creates a bare pod (it never runs: no kubelet) with these labels, as the administrator.
    pub(crate) fn pod(&self, name: &str, labels: &[(&str, &str)]) -> Value {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        self.create_pod(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "job", "image": "busybox:1.37.0"}]},
        }))
    }

    /// Creates `pod` (a whole manifest) in the namespace, as the administrator.
    pub(crate) fn create_pod(&self, pod: Value) -> Value {
        self.admin()
            .post(&self.pods_path(None), &pod)
            .expect(201, "create a pod")
    }

    /// The pod as stored.
    pub(crate) fn read_pod(&self, name: &str) -> Value {
        self.admin()
            .get(&self.pods_path(Some(name)))
            .expect(200, "read a pod")
    }

    /// The pod's labels.
    pub(crate) fn labels(&self, name: &str) -> BTreeMap<String, String> {
        string_map(&self.read_pod(name)["metadata"]["labels"])
    }

    /// The pod's annotations.
    pub(crate) fn annotations(&self, name: &str) -> BTreeMap<String, String> {
        string_map(&self.read_pod(name)["metadata"]["annotations"])
    }

    /// The pod's `label`, if set.
    pub(crate) fn label(&self, pod: &str, label: &str) -> Option<String> {
        self.labels(pod).remove(label)
    }

    /// A service account `name` with a Role of `rules` bound to it in the namespace.
    pub(crate) fn account(&self, name: &str, rules: Value) -> String {
        let ns = &self.namespace;
        self.admin()
            .post(
                &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
                &json!({"metadata": {"name": name}}),
            )
            .expect(201, "create a service account");
        self.admin()
            .post(
                &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
                &json!({"metadata": {"name": name}, "rules": rules}),
            )
            .expect(201, "create a role");
        self.admin()
            .post(
                &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
                &json!({
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                    "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}],
                }),
            )
            .expect(201, "bind the role");
        name.to_owned()
    }

    /// A kubeconfig that speaks as service account `account` (a TokenRequest token).
    pub(crate) fn kubeconfig(&self, account: &str) -> PathBuf {
        let token = self.cluster.token(&self.namespace, account, &[], None);
        self.cluster.kubeconfig(
            &format!("{}-{account}", self.namespace),
            &Credentials::Token(token),
            &self.namespace,
        )
    }

    /// Waits until `kubeconfig`'s identity may `GET path` (an RBAC change takes a moment).
    pub(crate) fn wait_allowed(&self, kubeconfig: &Path, path: &str) {
        let api = Api::from_kubeconfig(kubeconfig);
        let started = Instant::now();
        loop {
            let answer = api.get(path);
            if answer.status == 200 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the rights took effect: {answer:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A standalone tracker for this namespace, running as `account`.
    pub(crate) fn standalone(&self, account: &str) -> TrackerBuilder {
        Tracker::builder().args([
            format!("--kubeconfig={}", self.kubeconfig(account).display()),
            format!("--namespace={}", self.namespace),
            "--standalone=true".to_owned(),
        ])
    }

    /// A sidecar tracker for pod `pod`, running as `account`.
    pub(crate) fn sidecar(&self, account: &str, pod: &str) -> TrackerBuilder {
        Tracker::builder()
            .args([format!(
                "--kubeconfig={}",
                self.kubeconfig(account).display()
            )])
            .env("POD_NAME", pod)
            .env("POD_NAMESPACE", &self.namespace)
    }
}

/// The rules of the sidecar's Role: get and patch on pods (`names`: only those).
pub(crate) fn get_and_patch_pods(names: &[&str]) -> Value {
    let mut rule = json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]});
    if !names.is_empty() {
        rule["resourceNames"] = json!(names);
    }
    json!([rule])
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}
