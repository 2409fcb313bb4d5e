//! A Kubernetes API server test double: a real HTTP(S) server, started in-process, that
//! answers the pods API (and evictions, disruption budgets, events, access reviews and
//! MutatingWebhookConfigurations, calling mutating webhooks on pod CREATE; pods and budgets
//! are watched as well as listed) the way kube-apiserver does, word for word where it matters, with faults on demand (down to a
//! restart of the whole server: see [`Restart`]).
//!
//! Its behaviour follows answers recorded from a real kube-apiserver (v1.19, etcd, RBAC);
//! `tests/transcripts.rs` and `tests/admission.rs` replay them against the double. The
//! workspace's `tests/real/agreement.rs` runs the same scenarios against the double and a
//! real v1.37 server and compares every answer; where v1.37 words an answer the recordings
//! hold differently, the double keeps the recorded answer (that test names each).
//!
//! ```
//! use std::io::{Read, Write};
//! use kube_double::{ApiServer, Fault, Outcome, Rule, Subject, User, Verb};
//!
//! let api = ApiServer::start();
//! api.add_token("tok", User::new("tracker"));
//! api.allow(Subject::user("tracker"), Rule::new(["get", "patch"], ["pods"]).namespace("jobs"));
//! api.create_pod("jobs", "worker-0", &[("app", "worker")]);
//!
//! // Any HTTP client will do; the code under test would use a Kubernetes client.
//! let mut conn = std::net::TcpStream::connect(api.url().trim_start_matches("http://")).unwrap();
//! write!(conn, "GET /api/v1/namespaces/jobs/pods/worker-0 HTTP/1.1\r\nHost: api\r\n\
//!               Authorization: Bearer tok\r\nConnection: close\r\n\r\n").unwrap();
//! let mut answer = String::new();
//! conn.read_to_string(&mut answer).unwrap();
//! assert!(answer.starts_with("HTTP/1.1 200 OK"));
//! assert_eq!(api.count(Verb::Get, Outcome::Status(200)), 1);
//!
//! // Another writer changes the pod, and the next patch will fail with a conflict.
//! api.set_label("jobs", "worker-0", "active-jobs", Some("1"));
//! api.inject(Fault::status(409).verb(Verb::Patch));
//! assert_eq!(api.labels("jobs", "worker-0").unwrap()["active-jobs"], "1");
//! ```

mod admission;
mod faults;
mod ids;
mod kubeconfig;
mod objects;
mod patch;
mod pods;
mod policy;
mod rbac;
mod record;
mod resources;
mod restart;
mod routes;
mod server;
mod status;
mod store;
mod tls;
mod tokens;
mod validation;
mod watch;
mod webhook_call;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

pub use faults::{Fault, FaultKind};
pub use kubeconfig::Credentials;
pub use pods::NewPod;
pub use rbac::{MASTERS, Rule, Subject, User};
pub use record::{Outcome, RecordedRequest, Verb};
pub use restart::plan::Restart;

use objects::Options;
use server::{Shared, State};

/// Configures an [`ApiServer`] before it starts.
#[derive(Debug, Clone)]
pub struct ApiServerBuilder {
    tls: bool,
    require_client_certs: bool,
    write_latency: Duration,
    read_latency: Duration,
    disruption_controller: bool,
    seed: u64,
    token_review_cache: Duration,
}

impl ApiServerBuilder {
    /// Serves HTTPS with a certificate signed by a CA made for this server (see
    /// [`ApiServer::ca_pem`]). Client certificates are then accepted (and checked) but not
    /// required.
    pub fn tls(mut self) -> ApiServerBuilder {
        self.tls = true;
        self
    }

    /// Serves HTTPS and refuses the TLS handshake of clients without a certificate issued by
    /// [`ApiServer::issue_client_cert`].
    pub fn require_client_certs(mut self) -> ApiServerBuilder {
        self.tls = true;
        self.require_client_certs = true;
        self
    }

    /// Adds this much latency to every write (create, update, patch, delete, evict), before
    /// it is applied. Benchmarks use 3 ms, about what a real API server with etcd takes.
    pub fn write_latency(mut self, latency: Duration) -> ApiServerBuilder {
        self.write_latency = latency;
        self
    }

    /// Adds this much latency to every read (get, list).
    pub fn read_latency(mut self, latency: Duration) -> ApiServerBuilder {
        self.read_latency = latency;
        self
    }

    /// Runs without a disruption controller, like the cluster the transcripts were recorded
    /// on: every disruption budget then stays "still being processed", so an eviction it
    /// covers is always refused (429). By default the double keeps budget statuses current,
    /// as a cluster's controller manager does.
    pub fn without_disruption_controller(mut self) -> ApiServerBuilder {
        self.disruption_controller = false;
        self
    }

    /// How long a successful TokenReview is remembered without looking at the token's pod
    /// again (kube-apiserver: 10 s, so a token of a deleted pod stays valid that long).
    pub fn token_review_cache(mut self, cache: Duration) -> ApiServerBuilder {
        self.token_review_cache = cache;
        self
    }

    /// Seeds the generator behind uids, generated names and fault fractions.
    pub fn seed(mut self, seed: u64) -> ApiServerBuilder {
        self.seed = seed;
        self
    }

    /// Starts the server on `127.0.0.1` with a port the system chooses; returns once it is
    /// listening.
    ///
    /// # Panics
    /// If the runtime, the TLS material or the listening socket cannot be made.
    pub fn start(self) -> ApiServer {
        let tls = self.tls.then(|| {
            tls::Tls::generate(self.require_client_certs).unwrap_or_else(|e| panic!("{e}"))
        });
        let mut store = store::Store::new(self.seed);
        store.tokens.cache_for = self.token_review_cache;
        let state = State {
            store,
            rbac: rbac::Rbac::default(),
            faults: faults::Faults::new(self.seed ^ 0xFA17),
            records: record::Records::default(),
            options: Options {
                disruption_controller: self.disruption_controller,
            },
            read_latency: self.read_latency,
            write_latency: self.write_latency,
            services: BTreeMap::new(),
            restarts: restart::plan::Restarts::default(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kube-double")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("kube-double: cannot start its runtime: {e}"));
        let shared = Arc::new(Shared::new(state, tls));
        let (running, port) = listen(&runtime, &shared, 0)
            .unwrap_or_else(|e| panic!("kube-double: cannot listen on 127.0.0.1: {e}"));
        let inner = Arc::new(Inner {
            shared,
            runtime: Some(runtime),
            port,
            running: Mutex::new(Some(running)),
            stopped: AtomicBool::new(false),
        });
        ApiServer {
            _handles: Arc::new(Handles(Arc::clone(&inner))),
            inner,
        }
    }
}

/// Binds `127.0.0.1:<port>` (0: any) and starts accepting; returns once listening.
fn listen(runtime: &Runtime, shared: &Arc<Shared>, port: u16) -> std::io::Result<(Running, u16)> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let (stop, stop_rx) = oneshot::channel();
    let (done_tx, done) = std::sync::mpsc::channel();
    runtime.spawn(server::accept_loop(
        listener,
        shared.clone(),
        stop_rx,
        done_tx,
    ));
    Ok((Running { stop, done }, port))
}

/// The accept loop of a listening server.
struct Running {
    stop: oneshot::Sender<()>,
    done: std::sync::mpsc::Receiver<()>,
}

/// A running API server test double. Clones are handles to the same server; dropping the
/// last one stops it.
///
/// All methods are synchronous and may be called from any thread (also from inside an
/// async test); the server runs on its own runtime.
#[derive(Debug, Clone)]
pub struct ApiServer {
    inner: Arc<Inner>,
    /// Shared by the handles only: stops the server when the last one is dropped, even if a
    /// restart's thread holds the server at that moment.
    _handles: Arc<Handles>,
}

/// The server behind the handles.
#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    runtime: Option<Runtime>,
    port: u16,
    running: Mutex<Option<Running>>,
    /// Set (under the `running` lock) when the last handle is dropped: the server does not
    /// listen again.
    stopped: AtomicBool,
}

/// What the handles share; dropping it stops the server.
#[derive(Debug)]
struct Handles(Arc<Inner>);

impl Drop for Handles {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl Inner {
    fn runtime(&self) -> &Runtime {
        match &self.runtime {
            Some(runtime) => runtime,
            None => unreachable!("the runtime lives until drop"),
        }
    }

    /// Closes the listener and cuts every connection. The lock is held until that is done,
    /// so that whoever calls it at the same time (a restart, the last handle going) also
    /// returns only once it is done.
    fn go_away(&self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(taken) = running.take() {
            let _ = taken.stop.send(());
            let _ = taken.done.recv();
        }
    }

    /// Listens again on the same port if it is not listening (and has not been stopped).
    fn come_back(&self) -> std::io::Result<()> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.is_none() && !self.stopped.load(Ordering::SeqCst) {
            let (listening, _) = listen(self.runtime(), &self.shared, self.port)?;
            *running = Some(listening);
        }
        Ok(())
    }

    /// Stops the server for good: restarts end, the listener is closed, connections are cut.
    fn stop(&self) {
        self.shared.lock().restarts.close();
        self.shared.notify();
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        self.stopped.store(true, Ordering::SeqCst);
        drop(running);
        self.go_away();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Running")
    }
}

impl ApiServer {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.shared.lock()
    }

    /// Starts a plain-HTTP server with default settings.
    pub fn start() -> ApiServer {
        ApiServer::builder().start()
    }

    /// A builder for TLS, client certificates, latency and more.
    pub fn builder() -> ApiServerBuilder {
        ApiServerBuilder {
            tls: false,
            require_client_certs: false,
            write_latency: Duration::ZERO,
            read_latency: Duration::ZERO,
            disruption_controller: true,
            seed: 0x6B75_6265,
            token_review_cache: tokens::DEFAULT_CACHE,
        }
    }

    /// `http://127.0.0.1:<port>` or `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        let scheme = if self.inner.shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.inner.port)
    }

    /// The port the server listens on (the same after [`ApiServer::come_back`]).
    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// The CA certificate (PEM) that signed the server certificate, when serving HTTPS.
    pub fn ca_pem(&self) -> Option<String> {
        self.inner
            .shared
            .tls
            .as_ref()
            .map(|tls| tls.ca_pem().to_string())
    }

    /// Lets requests with `Authorization: Bearer <token>` in as `user`.
    pub fn add_token(&self, token: &str, user: User) {
        self.state().rbac.add_token(token, user);
    }

    /// Lets requests with HTTP basic auth `username:password` in as `user`.
    pub fn add_basic_auth(&self, username: &str, password: &str, user: User) {
        self.state().rbac.add_basic_auth(username, password, user);
    }

    /// Issues a client certificate for `user`, signed by the server's CA; TLS connections
    /// presenting it are that user. Returns `(certificate PEM, private key PEM)`.
    ///
    /// # Panics
    /// If the server does not serve HTTPS.
    pub fn issue_client_cert(&self, user: User) -> (String, String) {
        let Some(tls) = &self.inner.shared.tls else {
            panic!(
                "kube-double: client certificates need a TLS server (ApiServer::builder().tls())"
            );
        };
        let certificate = tls.issue(&user).unwrap_or_else(|e| panic!("{e}"));
        self.state().rbac.add_certificate(certificate.der, user);
        (certificate.cert_pem, certificate.key_pem)
    }

    /// Grants `rule` to `subject` (members of `system:masters` need no rules).
    pub fn allow(&self, subject: Subject, rule: Rule) {
        self.state().rbac.allow(subject, rule);
    }

    /// Takes every granted rule back.
    pub fn clear_rules(&self) {
        self.state().rbac.clear_rules();
    }

    /// Creates a pod as `POST /api/v1/namespaces/{ns}/pods` would (defaults, uid, resource
    /// version), with the phase and node `pod` asks for. Returns the stored pod.
    ///
    /// # Panics
    /// If the API server would refuse the pod (invalid name or labels, already exists);
    /// the message is the server's.
    pub fn add_pod(&self, pod: NewPod) -> Value {
        pods::add_pod(&mut self.state().store, &pod)
            .unwrap_or_else(|e| panic!("kube-double: cannot add the pod: {}", e.message))
    }

    /// Creates a `Pending` pod with these labels (see [`ApiServer::add_pod`]).
    pub fn create_pod(&self, namespace: &str, name: &str, labels: &[(&str, &str)]) -> Value {
        let pod = labels
            .iter()
            .fold(NewPod::new(namespace, name), |pod, (k, v)| {
                pod.label(*k, *v)
            });
        self.add_pod(pod)
    }

    /// Creates a pod shaped by `build` (labels, annotations, phase, node, service account):
    /// `api.create_pod_with("jobs", "p", |pod| pod.phase("Running").label("app", "worker"))`.
    /// See [`ApiServer::add_pod`].
    pub fn create_pod_with(
        &self,
        namespace: &str,
        name: &str,
        build: impl FnOnce(NewPod) -> NewPod,
    ) -> Value {
        self.add_pod(build(NewPod::new(namespace, name)))
    }

    /// Creates a `Pending` pod with no `labels` map at all.
    pub fn create_pod_without_labels(&self, namespace: &str, name: &str) -> Value {
        self.add_pod(NewPod::new(namespace, name))
    }

    fn write_pod(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        change: impl FnOnce(&mut Value),
    ) -> String {
        pods::write_pod(&mut self.state().store, namespace, name, change)
            .unwrap_or_else(|| panic!("kube-double: {what}: no pod {namespace}/{name}"))
    }

    /// Sets `status.phase` (as the kubelet would), advancing the resource version, and
    /// nothing else: the `Ready` condition stays as it was (see [`ApiServer::set_ready`]).
    /// Returns the new resource version.
    ///
    /// # Panics
    /// If the pod does not exist.
    pub fn set_phase(&self, namespace: &str, name: &str, phase: &str) -> String {
        self.write_pod(namespace, name, "set_phase", |pod| {
            pod["status"]["phase"] = Value::from(phase)
        })
    }

    /// Sets the pod's `Ready` condition (as the kubelet does when a readiness probe starts
    /// passing or failing), advancing the resource version. Disruption budgets count only
    /// ready pods as healthy. Returns the new resource version.
    ///
    /// # Panics
    /// If the pod does not exist.
    pub fn set_ready(&self, namespace: &str, name: &str, ready: bool) -> String {
        self.write_pod(namespace, name, "set_ready", |pod| {
            pods::set_ready_condition(&mut pod["status"], ready);
        })
    }

    /// Marks the pod as being deleted (a deletion timestamp 30 s ahead), keeping it, as
    /// after a graceful delete. Returns the new resource version.
    ///
    /// # Panics
    /// If the pod does not exist.
    pub fn mark_deleting(&self, namespace: &str, name: &str) -> String {
        self.write_pod(namespace, name, "mark_deleting", |pod| {
            pod["metadata"]["deletionTimestamp"] = Value::from(ids::now_plus(30));
            pod["metadata"]["deletionGracePeriodSeconds"] = Value::from(30);
        })
    }

    /// Records a restart of one of the pod's containers, as the kubelet reports it in
    /// `status.containerStatuses`: `restartCount` becomes `restart_count`, `lastState` says the
    /// previous instance terminated at `finished_at`, and the new one is running. A container
    /// with no status yet gets one. Returns the new resource version.
    ///
    /// # Panics
    /// If the pod does not exist.
    pub fn set_container_restart(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        restart_count: u32,
        finished_at: std::time::SystemTime,
    ) -> String {
        let finished = ids::rfc3339(finished_at);
        self.write_pod(namespace, name, "set_container_restart", |pod| {
            let status = serde_json::json!({
                "name": container,
                "ready": true,
                "started": true,
                "restartCount": restart_count,
                "image": "busybox",
                "imageID": "",
                "state": {"running": {"startedAt": finished}},
                "lastState": {"terminated": {
                    "exitCode": 137,
                    "reason": "Error",
                    "startedAt": finished,
                    "finishedAt": finished,
                }},
            });
            if !pod["status"].is_object() {
                pod["status"] = serde_json::json!({});
            }
            if !pod["status"]["containerStatuses"].is_array() {
                pod["status"]["containerStatuses"] = Value::Array(Vec::new());
            }
            if let Some(statuses) = pod["status"]["containerStatuses"].as_array_mut() {
                match statuses.iter_mut().find(|s| s["name"] == container) {
                    Some(existing) => *existing = status,
                    None => statuses.push(status),
                }
            }
        })
    }

    /// Removes a pod at once (as when its kubelet has finished a graceful deletion).
    /// Returns whether it existed.
    pub fn remove_pod(&self, namespace: &str, name: &str) -> bool {
        let mut state = self.state();
        let key = (namespace.to_string(), name.to_string());
        if !state.store.pods.contains_key(&key) {
            return false;
        }
        state.store.next_revision();
        state.store.remove(store::Watched::Pods, &key).is_some()
    }

    /// Routes the Service `namespace/name`, as a webhook's `clientConfig.service` names it, to
    /// `address` (`host:port`); the TLS name checked is still `name.namespace.svc`.
    pub fn route_service(&self, namespace: &str, name: &str, address: &str) {
        self.state().services.insert(
            (namespace.to_string(), name.to_string()),
            address.to_string(),
        );
    }

    /// Sets a namespace's labels (what webhooks' `namespaceSelector` sees; every namespace
    /// also has `kubernetes.io/metadata.name`).
    pub fn set_namespace_labels(&self, namespace: &str, labels: &[(&str, &str)]) {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        self.state()
            .store
            .namespace_labels
            .insert(namespace.to_string(), labels);
    }

    /// A MutatingWebhookConfiguration as stored, if it exists.
    pub fn webhook_configuration(&self, name: &str) -> Option<Value> {
        admission::get_config(&self.state().store, name).ok()
    }

    /// A token for the service account `namespace/account`, bound to `pod` (which must exist
    /// and run as that account), for `audiences`, valid for `lifetime` (any, even zero: an
    /// expired token; the TokenRequest API itself asks for at least 10 minutes).
    ///
    /// # Panics
    /// If the pod does not exist or runs as another account.
    pub fn issue_token(
        &self,
        namespace: &str,
        account: &str,
        pod: &str,
        audiences: &[&str],
        lifetime: Duration,
    ) -> String {
        let audiences: Vec<String> = audiences.iter().map(|a| (*a).to_string()).collect();
        let mut state = self.state();
        tokens::issue(
            &mut state.store,
            namespace,
            account,
            (pod, None),
            &audiences,
            lifetime,
        )
        .map(|(token, _)| token)
        .unwrap_or_else(|e| panic!("kube-double: cannot issue a token: {}", e.message))
    }

    /// Compacts the history, as etcd does every few minutes: every continue token issued so far
    /// has expired, and a list paged with one answers 410 `Expired`.
    pub fn compact(&self) {
        let mut state = self.state();
        state.store.compacted = state.store.revision().parse().unwrap_or(0);
        // Tokens issued from now on are newer than the compaction.
        state.store.next_revision();
    }

    /// The pod as the API would serve it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.state()
            .store
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every pod, in namespace and name order.
    pub fn pods(&self) -> Vec<Value> {
        self.state().store.pods.values().cloned().collect()
    }

    /// The pod's labels (empty if it has none), or `None` if there is no such pod.
    pub fn labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.pod(namespace, name)
            .map(|pod| store::string_map(&pod, "labels"))
    }

    /// The pod's annotations (empty if it has none), or `None` if there is no such pod.
    pub fn annotations(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.pod(namespace, name)
            .map(|pod| store::string_map(&pod, "annotations"))
    }

    /// The pod's resource version.
    pub fn resource_version(&self, namespace: &str, name: &str) -> Option<String> {
        self.pod(namespace, name)
            .map(|pod| store::meta_str(&pod, "resourceVersion").to_string())
    }

    fn set_entry(
        &self,
        namespace: &str,
        name: &str,
        field: &str,
        key: &str,
        value: impl FnOnce(Option<&str>) -> Option<String>,
    ) -> String {
        let pod = pods::set_map_entry(&mut self.state().store, namespace, name, field, key, value)
            .unwrap_or_else(|e| {
                panic!(
                    "kube-double: cannot change {field} of {namespace}/{name}: {}",
                    e.message
                )
            });
        store::meta_str(&pod, "resourceVersion").to_string()
    }

    /// Another writer (like `kubectl label`): sets a label, or removes it with `None`. A
    /// change advances the resource version; setting what is already there does not.
    /// Returns the pod's resource version afterwards.
    ///
    /// # Panics
    /// If the pod does not exist or the label is invalid (the API server's message).
    pub fn set_label(&self, namespace: &str, name: &str, key: &str, value: Option<&str>) -> String {
        self.set_entry(namespace, name, "labels", key, |_| value.map(str::to_owned))
    }

    /// Another writer that reads and rewrites a label in one step (atomic, like an update with
    /// a resourceVersion precondition that succeeded): `change` gets the current value and
    /// returns the new one (`None` removes the label). Returns the resource version afterwards.
    ///
    /// # Panics
    /// If the pod does not exist or the new value is invalid.
    pub fn update_label(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        change: impl FnOnce(Option<&str>) -> Option<String>,
    ) -> String {
        self.set_entry(namespace, name, "labels", key, change)
    }

    /// Another writer (like `kubectl annotate`): sets an annotation, or removes it with
    /// `None`. See [`ApiServer::set_label`].
    ///
    /// # Panics
    /// If the pod does not exist or the annotation is invalid.
    pub fn set_annotation(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        value: Option<&str>,
    ) -> String {
        self.set_entry(namespace, name, "annotations", key, |_| {
            value.map(str::to_owned)
        })
    }

    /// Creates a PodDisruptionBudget from its JSON (`apiVersion` `policy/v1` or
    /// `policy/v1beta1`; in v1beta1 an empty selector selects nothing, in v1 everything).
    /// Returns the stored budget.
    ///
    /// # Panics
    /// If the budget is invalid or already exists.
    pub fn create_pdb(&self, namespace: &str, pdb: Value) -> Value {
        let mut pdb = pdb;
        if let Err(e) = store::decode_metadata(&mut pdb, "PodDisruptionBudget") {
            panic!("kube-double: cannot create the budget: {e}");
        }
        policy::create_pdb(&mut self.state().store, namespace, None, pdb, false)
            .unwrap_or_else(|e| panic!("kube-double: cannot create the budget: {}", e.message))
    }

    /// Deletes a PodDisruptionBudget; returns whether it existed.
    pub fn delete_pdb(&self, namespace: &str, name: &str) -> bool {
        let mut state = self.state();
        let key = (namespace.to_string(), name.to_string());
        if !state.store.pdbs.contains_key(&key) {
            return false;
        }
        state.store.next_revision();
        state.store.remove(store::Watched::Pdbs, &key).is_some()
    }

    /// The events created so far (both event APIs), oldest first.
    pub fn events(&self) -> Vec<Value> {
        self.state().store.events.clone()
    }

    /// Injects a fault (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.state().faults.inject(fault);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Changes the latency added to every write.
    pub fn set_write_latency(&self, latency: Duration) {
        self.state().write_latency = latency;
    }

    /// Changes the latency added to every read.
    pub fn set_read_latency(&self, latency: Duration) {
        self.state().read_latency = latency;
    }

    /// Takes the whole server away: the listening socket is closed (new connections are
    /// refused) and open connections are dropped, requests in flight unanswered. Returns
    /// once all that is done. Does nothing if it is already away.
    pub fn go_away(&self) {
        self.inner.go_away();
    }

    /// Brings the server back on the same port, with everything it stored. Returns once it
    /// is listening. Does nothing if it is not away.
    ///
    /// # Panics
    /// If the port has been taken by someone else meanwhile.
    pub fn come_back(&self) {
        self.inner.come_back().unwrap_or_else(|e| {
            panic!(
                "kube-double: cannot listen on port {} again: {e}",
                self.inner.port
            )
        });
    }

    /// Restarts the server (see [`Restart`] for what a restart looks like and how long each
    /// part lasts). Returns at once; the restart runs in the background:
    ///
    /// 1. By default, at the next write that stores something (create, update, patch, delete
    ///    or eviction; not an access review, token review or token request), or only of the
    ///    kind [`Restart::verb`] names: that write is handled as usual (applied, if the server
    ///    would apply it) and its connection closed without an answer, as
    ///    [`FaultKind::ApplyThenDrop`] does; it is recorded as [`Outcome::Dropped`]. With
    ///    [`Restart::now`], at once instead.
    /// 2. Then every open connection is cut, requests in flight unanswered and not applied
    ///    (unless already applied), and the listener is closed, as by [`ApiServer::go_away`].
    /// 3. New connections are refused for [`Restart::down_for`].
    /// 4. The server listens again on the same port with everything it stored, as after
    ///    [`ApiServer::come_back`], and answers the warm-up phases in order (401, then 403,
    ///    then 429, each only if set; members of `system:masters` are not refused), then
    ///    normally. A warm-up answer applies nothing and is recorded as
    ///    [`Outcome::WarmingUp`] with its code.
    ///
    /// A restart asked for while another is under way (or waiting for its write) is queued:
    /// it starts once the one before has ended. Injected faults stay as they are and
    /// [`ApiServer::clear_faults`] does not cancel a restart.
    pub fn restart(&self, restart: Restart) {
        restart::request(&self.inner, restart);
    }

    /// Waits (without polling) until every restart asked for so far has ended (the server
    /// answers normally again), at most `timeout`; returns whether they have.
    ///
    /// # Panics
    /// If a restart could not listen on the server's port again (someone else took it).
    pub fn wait_restarted(&self, timeout: Duration) -> bool {
        let done = self.inner.shared.wait_until(Some(timeout), |state| {
            state.restarts.idle() || state.restarts.failure().is_some()
        });
        let failure = self.state().restarts.failure().map(str::to_owned);
        if let Some(why) = failure {
            panic!("kube-double: {why}");
        }
        done
    }

    /// How many restarts have ended (back to normal answers).
    pub fn restarts(&self) -> u64 {
        self.state().restarts.completed()
    }

    /// Whether the server is listening (not taken away by [`ApiServer::go_away`]).
    pub fn is_up(&self) -> bool {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// How many requests of this kind ended this way.
    pub fn count(&self, verb: Verb, outcome: Outcome) -> u64 {
        self.state().records.count(verb, outcome)
    }

    /// Every (kind, outcome) seen, with its count.
    pub fn counts(&self) -> BTreeMap<(Verb, Outcome), u64> {
        self.state().records.counts()
    }

    /// Recent requests (up to 10 000), oldest first, including those still in flight.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().records.requests()
    }

    /// Waits (without polling) until at least `at_least` requests of this kind have ended
    /// this way, at most `timeout`; returns whether they have. Use it to wait for a request
    /// that gets no answer (a hang) or for what a background task does.
    pub fn wait_for_count(
        &self,
        verb: Verb,
        outcome: Outcome,
        at_least: u64,
        timeout: Duration,
    ) -> bool {
        self.inner
            .shared
            .wait_for_records(timeout, |records| records.count(verb, outcome) >= at_least)
    }

    /// Waits (without polling) until some logged request satisfies `seen` (requests are
    /// logged when they arrive, so this can catch one in flight), at most `timeout`; returns
    /// whether one did.
    pub fn wait_for_request(
        &self,
        seen: impl Fn(&RecordedRequest) -> bool,
        timeout: Duration,
    ) -> bool {
        self.inner
            .shared
            .wait_for_records(timeout, |records| records.any(&seen))
    }

    /// Forgets counts and recorded requests.
    pub fn reset_counts(&self) {
        self.state().records.reset();
    }

    /// A kubeconfig (as JSON, which is YAML too) for this server: its URL, its CA when
    /// serving HTTPS, these credentials and this default namespace.
    pub fn kubeconfig(&self, credentials: &Credentials, namespace: &str) -> Value {
        kubeconfig::build(
            &self.url(),
            self.ca_pem().as_deref(),
            credentials,
            namespace,
        )
    }

    /// Writes a kubeconfig for this server with these credentials (namespace `default`) to
    /// `path`, for black-box tests of a binary (`--kubeconfig` or `KUBECONFIG`).
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>, credentials: Credentials) {
        let path = path.as_ref();
        let config = self.kubeconfig(&credentials, "default");
        let text = serde_json::to_string_pretty(&config)
            .unwrap_or_else(|e| panic!("kube-double: kubeconfig: {e}"));
        std::fs::write(path, text).unwrap_or_else(|e| {
            panic!(
                "kube-double: cannot write a kubeconfig to {}: {e}",
                path.display()
            )
        });
    }
}
