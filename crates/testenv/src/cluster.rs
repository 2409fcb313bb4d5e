//! A real control plane on loopback: etcd, kube-apiserver and kube-controller-manager, started
//! from the tools built by `tools.sh`, with a CA, client certificates and service-account keys
//! made for it. One is shared by the tests of a test binary ([`Cluster::shared`]); a test that
//! restarts the API server starts its own ([`Cluster::start`]).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::api::Api;
use crate::pki::{self, Authority, Pair};
use crate::process::{self, Process, free_port, wait_until};
use crate::tools::tool;

/// How long a component may take to become ready (a cold machine, two cores, other tests).
const START_LIMIT: Duration = Duration::from_secs(120);

/// The controllers run: what a test cluster needs of a controller manager. `serviceaccount`
/// makes each namespace's `default` account (the ServiceAccount admission plugin refuses pods
/// without it), `disruption` computes each PodDisruptionBudget's `disruptionsAllowed` (the
/// eviction API reads it), `namespace` deletes namespaces, `garbage-collector` their owned
/// objects. No kubelet or scheduler runs: pods are stored, never started.
const CONTROLLERS: &str = "serviceaccount-controller,disruption-controller,namespace-controller,garbage-collector-controller";

/// The admission plugins a real cluster runs on pods, named so the choice is visible (most are
/// on by default in 1.37 anyway).
const ADMISSION_PLUGINS: &str = "NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,Priority,\
DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook,ResourceQuota";

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run kube-controller-manager (default: yes).
    pub controller_manager: bool,
    /// More kube-apiserver flags (feature gates, runtime config).
    pub apiserver_flags: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            controller_manager: true,
            apiserver_flags: Vec::new(),
        }
    }
}

/// Who a kubeconfig speaks as.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A bearer token (a service account's, from [`Cluster::token`]).
    Token(String),
    /// A client certificate signed by the cluster's CA.
    Certificate(Pair),
}

/// A running control plane; stopped, and its folder removed, when dropped (or, for the shared
/// one, when the test binary exits).
pub struct Cluster {
    folder: PathBuf,
    url: String,
    authority: Authority,
    admin_kubeconfig: PathBuf,
    apiserver_args: Vec<String>,
    admin: Api,
    namespaces: AtomicU32,
    // Dropped in this order: the controller manager, the API server, etcd.
    controller_manager: Mutex<Option<Process>>,
    apiserver: Mutex<Option<Process>>,
    _etcd: Process,
}

impl Cluster {
    /// The cluster of this test binary, started by the first test that asks.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| Cluster::start(Options::default()))
    }

    /// A cluster of one's own.
    pub fn start(options: Options) -> Cluster {
        let folder = process::cluster_folder();
        let write = |name: &str, text: &str| {
            let path = folder.join(name);
            std::fs::write(&path, text).expect("a cluster file");
            path
        };
        let authority = Authority::new("pod-webhook-tracker testenv CA");
        let ca = write("ca.crt", &authority.ca_pem);
        let serving = authority.serving(&["kubernetes", "kubernetes.default.svc"]);
        let serving_cert = write("apiserver.crt", &serving.cert_pem);
        let serving_key = write("apiserver.key", &serving.key_pem);
        let (signing_key, public_key) = pki::signing_key();
        let sa_key = write("service-accounts.key", &signing_key);
        let sa_pub = write("service-accounts.pub", &public_key);

        let etcd_port = free_port();
        let etcd_peer = free_port();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = Process::start(
            "etcd",
            &tool("etcd"),
            &[
                format!("--data-dir={}", folder.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
                // Test data need not survive a power cut: no fsync makes writes fast.
                "--unsafe-no-fsync".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            &folder.join("etcd.log"),
        );
        wait_until("etcd listens", START_LIMIT, || {
            TcpStream::connect(("127.0.0.1", etcd_port)).is_ok()
        });

        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={port}"),
            "--advertise-address=127.0.0.1".to_owned(),
            // A loopback advertise address is refused by the endpoint reconciler.
            "--endpoint-reconciler-type=none".to_owned(),
            format!("--tls-cert-file={}", serving_cert.display()),
            format!("--tls-private-key-file={}", serving_key.display()),
            format!("--client-ca-file={}", ca.display()),
            "--authorization-mode=Node,RBAC".to_owned(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
            format!("--service-account-key-file={}", sa_pub.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-cluster-ip-range=10.96.0.0/24".to_owned(),
            format!("--enable-admission-plugins={ADMISSION_PLUGINS}"),
            format!("--cert-dir={}", folder.join("apiserver-certs").display()),
            "--allow-privileged=true".to_owned(),
        ];
        apiserver_args.extend(options.apiserver_flags);

        let admin = authority.client("testenv-admin", Some("system:masters"));
        let admin_kubeconfig = folder.join("admin.kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &url,
            &authority.ca_pem,
            "testenv-admin",
            &Credentials::Certificate(admin),
            "default",
        );
        let cluster = Cluster {
            admin: Api::from_kubeconfig(&admin_kubeconfig),
            folder,
            url,
            authority,
            admin_kubeconfig,
            apiserver_args,
            namespaces: AtomicU32::new(0),
            controller_manager: Mutex::new(None),
            apiserver: Mutex::new(None),
            _etcd: etcd,
        };
        cluster.start_apiserver();
        cluster.wait_ready();
        if options.controller_manager {
            cluster.start_controller_manager(&sa_key);
        }
        cluster
    }

    fn start_controller_manager(&self, sa_key: &Path) {
        let identity = self
            .authority
            .client("system:kube-controller-manager", None);
        let kubeconfig = self.folder.join("controller-manager.kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &self.url,
            &self.authority.ca_pem,
            "system:kube-controller-manager",
            &Credentials::Certificate(identity),
            "default",
        );
        let manager = Process::start(
            "kube-controller-manager",
            &tool("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                format!("--controllers={CONTROLLERS}"),
                "--leader-elect=false".to_owned(),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={}", free_port()),
                format!(
                    "--cert-dir={}",
                    self.folder.join("controller-manager-certs").display()
                ),
                format!("--service-account-private-key-file={}", sa_key.display()),
                // Each controller acts as its own service account with its bootstrap role, as
                // in a real cluster (the manager's own identity may not, say, write budget
                // statuses).
                "--use-service-account-credentials=true".to_owned(),
            ],
            &self.folder.join("kube-controller-manager.log"),
        );
        *lock(&self.controller_manager) = Some(manager);
        // Its service-account controller is working once `default` has its account.
        wait_until(
            "kube-controller-manager makes service accounts",
            START_LIMIT,
            || {
                if let Some(manager) = lock(&self.controller_manager).as_mut() {
                    manager.check_running();
                }
                self.admin
                    .get("/api/v1/namespaces/default/serviceaccounts/default")
                    .status
                    == 200
            },
        );
    }

    /// Starts the API server (again).
    pub fn start_apiserver(&self) {
        let mut apiserver = lock(&self.apiserver);
        if apiserver.is_none() {
            *apiserver = Some(Process::start(
                "kube-apiserver",
                &tool("kube-apiserver"),
                &self.apiserver_args,
                &self.folder.join("kube-apiserver.log"),
            ));
        }
    }

    /// Kills the API server at once, as a crash or an upgrade's `kill -9` would; etcd and what
    /// it stored stay.
    pub fn kill_apiserver(&self) {
        if let Some(mut apiserver) = lock(&self.apiserver).take() {
            apiserver.kill();
        }
    }

    /// Kills the API server, waits `down`, and starts it again without waiting for it to be
    /// ready (a test wants to see how it answers meanwhile).
    pub fn restart_apiserver(&self, down: Duration) {
        self.kill_apiserver();
        std::thread::sleep(down);
        self.start_apiserver();
    }

    /// Waits until the API server answers `/readyz` with 200.
    pub fn wait_ready(&self) {
        wait_until("kube-apiserver is ready (/readyz)", START_LIMIT, || {
            if let Some(apiserver) = lock(&self.apiserver).as_mut() {
                apiserver.check_running();
            }
            TcpStream::connect(self.address()).is_ok() && self.admin.get("/readyz").status == 200
        });
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The API server's loopback address.
    pub fn address(&self) -> std::net::SocketAddr {
        self.url
            .trim_start_matches("https://")
            .parse()
            .expect("a loopback address")
    }

    /// The cluster CA's certificate, PEM (the API server's serving and client CA).
    pub fn ca_pem(&self) -> &str {
        &self.authority.ca_pem
    }

    /// The CA, to sign more certificates (a webhook's serving certificate, a client's).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The administrator's requests (`system:masters`).
    pub fn admin(&self) -> &Api {
        &self.admin
    }

    /// The administrator's kubeconfig.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A folder of this cluster's for a test's files (removed with the cluster).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let path = self.folder.join("scratch").join(name);
        std::fs::create_dir_all(&path).expect("a scratch folder");
        path
    }

    /// Writes a kubeconfig for `credentials` (its context's namespace: `namespace`) and returns
    /// its path.
    pub fn kubeconfig(&self, name: &str, credentials: &Credentials, namespace: &str) -> PathBuf {
        let path = self
            .scratch("kubeconfigs")
            .join(format!("{name}.kubeconfig"));
        write_kubeconfig(
            &path,
            &self.url,
            &self.authority.ca_pem,
            name,
            credentials,
            namespace,
        );
        path
    }

    /// A new namespace of its own for a test, named `prefix-N`, with its `default` service
    /// account (made by the controller manager, or here when none runs).
    pub fn namespace(&self, prefix: &str) -> String {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{n}");
        self.admin
            .post(
                "/api/v1/namespaces",
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            )
            .expect(201, "create the test namespace");
        let account = format!("/api/v1/namespaces/{name}/serviceaccounts/default");
        if lock(&self.controller_manager).is_none() {
            self.admin.post(
                &format!("/api/v1/namespaces/{name}/serviceaccounts"),
                &json!({"metadata": {"name": "default"}}),
            );
        }
        wait_until(
            "the namespace's default service account",
            START_LIMIT,
            || self.admin.get(&account).status == 200,
        );
        name
    }

    /// A token of service account `namespace/account` (TokenRequest) for `audiences` (empty:
    /// the API server's own), bound to the pod `bound_pod` when given (its name; the uid is read).
    pub fn token(
        &self,
        namespace: &str,
        account: &str,
        audiences: &[&str],
        bound_pod: Option<&str>,
    ) -> String {
        let mut spec = json!({"expirationSeconds": 3600});
        if !audiences.is_empty() {
            spec["audiences"] = json!(audiences);
        }
        if let Some(pod) = bound_pod {
            let uid = self
                .admin
                .get(&format!("/api/v1/namespaces/{namespace}/pods/{pod}"))
                .expect(200, "read the pod to bind a token to")["metadata"]["uid"]
                .clone();
            spec["boundObjectRef"] =
                json!({"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid});
        }
        let answer = self
            .admin
            .post(
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"),
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
            )
            .expect(201, "request a service-account token");
        answer["status"]["token"]
            .as_str()
            .expect("a token")
            .to_owned()
    }

    /// `kubectl` (built from its Go module) as the administrator, its cache in the cluster's
    /// folder.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(tool("kubectl"));
        command
            .env("KUBECONFIG", &self.admin_kubeconfig)
            .env("HOME", self.scratch("home"))
            .env_remove("KUBERNETES_SERVICE_HOST");
        command
    }

    /// The end of a component's log (`kube-apiserver`, `etcd`, `kube-controller-manager`).
    pub fn log_tail(&self, component: &str) -> String {
        process::log_tail(&self.folder.join(format!("{component}.log")))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The processes stop as their fields drop; the folder goes now.
        lock(&self.controller_manager).take();
        lock(&self.apiserver).take();
        process::remove_folder(&self.folder);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes a kubeconfig (JSON, which is YAML) with one context.
fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &str,
    user: &str,
    credentials: &Credentials,
    namespace: &str,
) {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let user_entry = match credentials {
        Credentials::Token(token) => json!({"token": token}),
        Credentials::Certificate(pair) => json!({
            "client-certificate-data": b64(&pair.cert_pem),
            "client-key-data": b64(&pair.key_pem),
        }),
    };
    let config: Value = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": user, "namespace": namespace}}],
        "current-context": "testenv",
    });
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("a kubeconfig folder");
    }
    std::fs::write(path, config.to_string()).expect("a kubeconfig");
}
