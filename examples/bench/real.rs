//! The restart phase against a real kube-apiserver (`--real-api-server`), the issue's own
//! setup: a control plane of its own from `testenv` (etcd and kube-apiserver v1.37.2 on
//! loopback, no controller manager), a namespace, the pods, a service account allowed to get and
//! patch pods there and a kubeconfig for it; the API server process killed (`kill -9`) and
//! started again mid-burst, as a single control plane's upgrade or a crash does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use testenv::{Cluster, Credentials, Options};

use crate::cluster::COUNT_LABEL;
use crate::restart::{Server, Variant};
use crate::tracker::Tracker;

/// How long the API server stays killed before it is started again (as tests/real/restart.rs).
const DOWN: Duration = Duration::from_millis(300);

/// The pods: `w0` alone for the one-pod table, `w0`…`w3` for the four-pod variant.
const PODS: usize = 4;

/// A real control plane, set up for the restart phase.
pub(crate) struct Real<'a> {
    cluster: Cluster,
    namespace: String,
    kubeconfig: PathBuf,
    binary: &'a Path,
    /// `kube-apiserver v1.37.2`, from its `/version`.
    pub version: String,
}

impl Real<'_> {
    /// Starts etcd and kube-apiserver (built by `crates/testenv/tools.sh`, cached), and makes
    /// the namespace, pods, account, role, binding and kubeconfig.
    pub(crate) fn start(binary: &Path) -> Result<Real<'_>, String> {
        // A control plane of its own: it is restarted, and nothing else uses it.
        let cluster = Cluster::start(Options {
            controller_manager: false,
            ..Options::default()
        });
        let namespace = cluster.namespace("bench-restart");
        let admin = cluster.admin();
        let expect = |answer: testenv::Answer, status: u16, what: &str| {
            if answer.status == status {
                Ok(answer.body)
            } else {
                Err(format!("{what}: {} {}", answer.status, answer.message()))
            }
        };
        for pod in 0..PODS {
            expect(
                admin.post(
                    &format!("/api/v1/namespaces/{namespace}/pods"),
                    &json!({"metadata": {"name": format!("w{pod}"), "labels": {"app": "worker"}},
                            "spec": {"containers": [{"name": "job", "image": "busybox:1.37.0"}]}}),
                ),
                201,
                "create a pod",
            )?;
        }
        for (what, path, body) in [
            (
                "create the service account",
                format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
                json!({"metadata": {"name": "tracker"}}),
            ),
            (
                "create the role",
                format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles"),
                json!({"metadata": {"name": "tracker"},
                       "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]}),
            ),
            (
                "create the role binding",
                format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"),
                json!({"metadata": {"name": "tracker"},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tracker"},
                       "subjects": [{"kind": "ServiceAccount", "name": "tracker", "namespace": namespace}]}),
            ),
        ] {
            expect(admin.post(&path, &body), 201, what)?;
        }
        let token = cluster.token(&namespace, "tracker", &[], None);
        let kubeconfig = cluster.kubeconfig("tracker", &Credentials::Token(token), &namespace);
        let version = expect(admin.get("/version"), 200, "read /version")?["gitVersion"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        Ok(Real {
            cluster,
            namespace,
            kubeconfig,
            binary,
            version: format!("kube-apiserver {version}"),
        })
    }

    /// The table (one pod) and the four-pod variant: with one pod the tracker folds
    /// the 16 callers into one writer, so few requests meet the restarted server's short 403
    /// window; four writers meet it more often.
    pub(crate) fn variants(&self, clients: usize, calls: usize, runs: usize) -> Vec<Variant> {
        [1, PODS]
            .into_iter()
            .map(|pods| Variant {
                name: format!(
                    "real kube-apiserver, standalone, {}",
                    if pods == 1 {
                        "one pod".to_owned()
                    } else {
                        format!("{pods} pods")
                    }
                ),
                sidecar: false,
                pods: (0..pods).map(|pod| format!("w{pod}")).collect(),
                clients,
                calls,
                runs,
            })
            .collect()
    }

    /// How the restart is described in the report.
    pub(crate) fn fault(&self) -> String {
        format!(
            "{} with etcd (testenv, loopback, TLS, RBAC), its process killed (SIGKILL) \
             mid-burst, started again {} ms later; the run goes on until its /readyz answers 200",
            self.version,
            DOWN.as_millis()
        )
    }

    fn pod_path(&self, pod: &str) -> String {
        format!("/api/v1/namespaces/{}/pods/{pod}", self.namespace)
    }
}

impl Server for Real<'_> {
    fn start_tracker(&self, sidecar: bool) -> Result<Tracker, String> {
        if sidecar {
            return Err("the real API server's phase runs the standalone service only".into());
        }
        // The tracker's defaults otherwise (`--retry-timeout=10s`), as deployed.
        Tracker::spawn_args(
            self.binary,
            &[
                format!("--kubeconfig={}", self.kubeconfig.display()),
                format!("--namespace={}", self.namespace),
                "--standalone=true".to_owned(),
            ],
        )
    }

    fn clear(&self, pod: &str) -> Result<(), String> {
        let answer = self.cluster.admin().merge_patch(
            &self.pod_path(pod),
            &json!({"metadata": {"labels": {COUNT_LABEL: Value::Null}}}),
        );
        if answer.status == 200 {
            Ok(())
        } else {
            Err(format!(
                "remove the label of {pod}: {} {}",
                answer.status,
                answer.message()
            ))
        }
    }

    fn label(&self, pod: &str) -> Result<Option<String>, String> {
        let answer = self.cluster.admin().get(&self.pod_path(pod));
        if answer.status != 200 {
            return Err(format!(
                "read {pod}: {} {}",
                answer.status,
                answer.message()
            ));
        }
        Ok(answer.body["metadata"]["labels"][COUNT_LABEL]
            .as_str()
            .map(str::to_owned))
    }

    fn restart(&self) -> Result<(), String> {
        self.cluster.restart_apiserver(DOWN);
        self.cluster.wait_ready();
        Ok(())
    }
}
