//! Admission on a real API server: `manifests/policy`'s ValidatingAdmissionPolicy enforced by the
//! server, and the injector registered as a mutating webhook that the server calls.

#[path = "../support/mod.rs"]
mod support; // its own `#![allow(dead_code)]` covers the parts this file does not use

#[path = "scene.rs"]
#[allow(dead_code)]
// each test file uses a different part of it
// scene.rs's `wait_allowed(&PathBuf)` is shared and not this file's to change.
#[allow(clippy::ptr_arg)]
mod scene;

#[path = "../support/sidecar_checks.rs"]
mod sidecar_checks;

#[path = "../support/yaml.rs"]
#[allow(dead_code)] // only parse_yaml is used here
mod yaml;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use scene::{Scene, get_and_patch_pods};
use serde_json::{Value, json};
use support::Tracker;
use testenv::{Api, Cluster, Credentials};

/// The policy and binding of `manifests/policy`.
const POLICY: &str = "job-tracker-own-pod-only";
/// The webhook's name in `manifests/injector/base/webhook.yaml`, as the server quotes it.
const WEBHOOK: &str = "inject.pod-webhook-tracker.io";
/// The label that opts a pod in.
const OPT_IN: &str = "pod-webhook-tracker.io/inject";
/// How long the server may take to take up a new admission object (it compiles a policy, and
/// loads webhook configurations from an informer).
const TAKE_UP: Duration = Duration::from_secs(60);

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Polls `check` every 100 ms until it answers `Ok`, for at most `limit`; if it never does, the
/// test fails naming `what` was awaited and the last state `check` saw (its `Err`).
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(done) => return done,
            Err(last) => assert!(
                started.elapsed() < limit,
                "{what} within {limit:?}; last seen: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `api`'s identity may do `attributes` (a SelfSubjectAccessReview), as the server says.
fn may(api: &Api, attributes: Value) -> bool {
    let review = api.post(
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        &json!({"spec": {"resourceAttributes": attributes}}),
    );
    review.body["status"]["allowed"] == true
}

// ---- The least-privilege policy ----------------------------------------------------------------

/// Applies `manifests/policy` once per cluster, the way README says to: `kubectl apply -k` from
/// the repository's root. Every policy test of this binary shares it (it is cluster-scoped).
fn apply_policy(cluster: &Cluster) {
    static APPLIED: OnceLock<()> = OnceLock::new();
    APPLIED.get_or_init(|| {
        let output = cluster
            .kubectl()
            .args(["apply", "-k", "manifests/policy"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "kubectl apply -k manifests/policy: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        for object in [
            "validatingadmissionpolicy.admissionregistration.k8s.io",
            "validatingadmissionpolicybinding.admissionregistration.k8s.io",
        ] {
            assert!(
                stdout.contains(&format!("{object}/{POLICY} created")),
                "{stdout}"
            );
        }
    });
}

/// A namespace with the sidecar's account `job-tracker` (get and patch on every pod of the
/// namespace, as `manifests/sidecar/rbac` grants), two pods running as it, `worker` and `other`,
/// and the policy applied; with a kubeconfig holding a `job-tracker` token bound to `worker`
/// (what the kubelet mounts into worker's projected volume), returned once the server enforces
/// the policy on it.
fn policy_scene() -> (Scene, PathBuf) {
    let scene = Scene::new("policy");
    apply_policy(scene.cluster);
    scene.account("job-tracker", get_and_patch_pods(&[]));
    for pod in ["worker", "other"] {
        scene.create_pod(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod, "labels": {"app": "worker"}},
            "spec": {
                "serviceAccountName": "job-tracker",
                "containers": [{"name": "job", "image": "busybox:1.37.0"}],
            },
        }));
    }
    let ns = scene.namespace.clone();
    let token = scene.cluster.token(&ns, "job-tracker", &[], Some("worker"));
    let kubeconfig =
        scene
            .cluster
            .kubeconfig(&format!("{ns}-worker"), &Credentials::Token(token), &ns);
    // A known-forbidden write, dry-run so that nothing is stored before the policy is in
    // force: RBAC's 403 first (the Role just bound), then 200 (the policy not compiled yet),
    // then the policy's own refusal.
    let api = Api::from_kubeconfig(&kubeconfig);
    let probe = format!("{}?dryRun=All", scene.pods_path(Some("other")));
    wait_for("the server enforces the policy", TAKE_UP, || {
        let answer = api.merge_patch(
            &probe,
            &json!({"metadata": {"labels": {"active-jobs": "1"}}}),
        );
        let refused =
            answer.status == 403 && answer.message().contains("may change only its own pod");
        if refused {
            Ok(())
        } else {
            Err(format!("{answer:?}"))
        }
    });
    (scene, kubeconfig)
}

/// The server's words for a write to `pod` the policy refuses with `message`.
fn policy_denial(pod: &str, message: &str) -> String {
    format!(
        "pods \"{pod}\" is forbidden: ValidatingAdmissionPolicy '{POLICY}' with binding \
         '{POLICY}' denied request: {message}"
    )
}

/// The pod's `metadata.resourceVersion`: it changes with every stored write.
fn version(scene: &Scene, pod: &str) -> String {
    scene.read_pod(pod)["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion")
        .to_owned()
}

/// kube-controller-manager running only the controller that type-checks admission policies
/// and writes the result into their status (the shared cluster's controller manager does not
/// run it); stopped when dropped.
struct TypeChecker(std::process::Child);

impl TypeChecker {
    fn start(cluster: &Cluster) -> TypeChecker {
        let folder = cluster.scratch("policy-type-checker");
        let log = std::fs::File::create(folder.join("kube-controller-manager.log")).expect("a log");
        let child = std::process::Command::new(testenv::tool("kube-controller-manager"))
            .args([
                format!("--kubeconfig={}", cluster.admin_kubeconfig().display()),
                "--controllers=validatingadmissionpolicy-status-controller".to_owned(),
                "--leader-elect=false".to_owned(),
                // No HTTPS endpoint: nothing here asks it anything.
                "--secure-port=0".to_owned(),
            ])
            .stdout(log.try_clone().expect("a log"))
            .stderr(log)
            .spawn()
            .expect("kube-controller-manager starts");
        TypeChecker(child)
    }
}

impl Drop for TypeChecker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_servers_type_check_finds_every_expression_of_the_policy_sound() {
    let cluster = Cluster::shared();
    apply_policy(cluster);
    let _checker = TypeChecker::start(cluster);
    let path =
        format!("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{POLICY}");
    // The controller type-checks every expression against the pod's schema and records the
    // generation it checked; a warning would be an expression that fails at admission time.
    let policy = wait_for("the policy's type check", TAKE_UP, || {
        let policy = cluster.admin().get(&path).expect(200, "read the policy");
        let checked = policy["status"]["observedGeneration"] == policy["metadata"]["generation"];
        if checked {
            Ok(policy)
        } else {
            Err(policy["status"].to_string())
        }
    });
    let checking = &policy["status"]["typeChecking"];
    assert!(checking.is_object(), "type-checked: {}", policy["status"]);
    let warnings = &checking["expressionWarnings"];
    assert!(
        warnings.as_array().is_none_or(Vec::is_empty),
        "the server's type check: {warnings}"
    );
}

#[test]
fn a_sidecar_under_the_policy_sets_changes_and_removes_its_own_pods_count() {
    let (scene, kubeconfig) = policy_scene();
    let tracker = Tracker::builder()
        .args([format!("--kubeconfig={}", kubeconfig.display())])
        .env("POD_NAME", "worker")
        .env("POD_NAMESPACE", &scene.namespace)
        .start();
    tracker.wait_ready();
    assert_eq!(tracker.increment("").count(), 1, "set");
    assert_eq!(scene.label("worker", "active-jobs").as_deref(), Some("1"));
    assert!(
        scene
            .annotations("worker")
            .contains_key("active-jobs-writes"),
        "its write record, an allowed annotation"
    );
    assert_eq!(tracker.increment("").count(), 2, "changed");
    assert_eq!(scene.label("worker", "active-jobs").as_deref(), Some("2"));
    assert_eq!(tracker.decrement("").count(), 1);
    assert_eq!(tracker.decrement("").count(), 0, "removed");
    assert_eq!(scene.label("worker", "active-jobs"), None);
    assert_eq!(
        scene.label("worker", "app").as_deref(),
        Some("worker"),
        "the other labels stay"
    );
}

#[test]
fn the_trackers_account_may_not_change_another_pod_and_the_tracker_answers_the_refusal() {
    let (scene, kubeconfig) = policy_scene();
    let ns = scene.namespace.clone();
    let refusal = format!(
        "system:serviceaccount:{ns}:job-tracker of pod worker may change only its own pod, not pod other"
    );
    // Straight to the API server, as whoever found the token would.
    let before = version(&scene, "other");
    let api = Api::from_kubeconfig(&kubeconfig);
    let answer = api.merge_patch(
        &scene.pods_path(Some("other")),
        &json!({"metadata": {"labels": {"active-jobs": "1"}}}),
    );
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(
        answer.message(),
        policy_denial("other", &refusal),
        "{answer:?}"
    );
    assert_eq!(answer.body["reason"], "Forbidden", "{answer:?}");

    // The same token in a standalone tracker: its own pod counts, the other is the server's
    // refusal, passed on as 502 with the server's words.
    let standalone = Tracker::builder()
        .args([
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--namespace={ns}"),
            "--standalone=true".to_owned(),
        ])
        .start();
    assert_eq!(standalone.increment("pod_name=worker").count(), 1);
    let answer = standalone.increment("pod_name=other");
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        answer.body.contains(&policy_denial("other", &refusal)),
        "{answer:?}"
    );
    assert_eq!(version(&scene, "other"), before, "nothing stored on other");
    assert_eq!(scene.label("other", "active-jobs"), None);
    assert_eq!(scene.label("worker", "active-jobs").as_deref(), Some("1"));

    // A token of the account bound to no pod may change no pod, not even in a sidecar.
    let unbound = scene
        .sidecar("job-tracker", "worker")
        .args(["--label=unbound-jobs"])
        .start();
    let answer = unbound.increment("");
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        answer.body.contains("this token is bound to no pod"),
        "{answer:?}"
    );
    assert_eq!(scene.label("worker", "unbound-jobs"), None);
}

#[test]
fn the_trackers_account_may_not_change_labels_or_annotations_that_are_not_the_trackers() {
    let (scene, kubeconfig) = policy_scene();
    let ns = scene.namespace.clone();
    let who = format!("system:serviceaccount:{ns}:job-tracker");
    let api = Api::from_kubeconfig(&kubeconfig);
    let own = scene.pods_path(Some("worker"));
    let before = version(&scene, "worker");
    for (patch, refusal) in [
        (
            json!({"metadata": {"labels": {"app": "elsewhere"}}}),
            format!("{who} may change only the labels active-jobs of pod worker, not app"),
        ),
        (
            json!({"metadata": {"labels": {"team-jobs": "1"}}}),
            format!("{who} may change only the labels active-jobs of pod worker, not team-jobs"),
        ),
        (
            json!({"metadata": {"annotations": {"example.com/note": "x"}}}),
            format!(
                "{who} may change only the annotations active-jobs-writes, active-jobs-jobs, \
                 karpenter.sh/do-not-disrupt, controller.kubernetes.io/pod-deletion-cost, \
                 cluster-autoscaler.kubernetes.io/safe-to-evict of pod worker, not example.com/note"
            ),
        ),
    ] {
        let answer = api.merge_patch(&own, &patch);
        assert_eq!(answer.status, 403, "{patch}: {answer:?}");
        assert_eq!(
            answer.message(),
            policy_denial("worker", &refusal),
            "{patch}"
        );
    }
    assert_eq!(version(&scene, "worker"), before, "nothing stored");

    // A sidecar counting in a label the policy does not list gets the refusal as 502.
    let tracker = Tracker::builder()
        .args([
            format!("--kubeconfig={}", kubeconfig.display()),
            "--label=team-jobs".to_owned(),
        ])
        .env("POD_NAME", "worker")
        .env("POD_NAMESPACE", &ns)
        .start();
    let answer = tracker.increment("");
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        answer
            .body
            .contains("may change only the labels active-jobs of pod worker, not team-jobs"),
        "{answer:?}"
    );
    assert_eq!(version(&scene, "worker"), before, "nothing stored");
    assert_eq!(scene.label("worker", "team-jobs"), None);
}

// ---- The injector as the server's mutating webhook ---------------------------------------------

/// `manifests/injector/base/webhook.yaml`'s configuration, named `name`, calling `client_config`
/// (a URL: the real server cannot reach a Service here, it has no endpoints), its
/// namespaceSelector narrowed to `namespace` so that tests running at once on the shared cluster
/// never call each other's injectors; everything else as the manifest says.
fn webhook_configuration(name: &str, namespace: &str, client_config: Value) -> Value {
    let mut config = yaml::parse_yaml(Path::new("manifests/injector/base/webhook.yaml")).remove(0);
    config["metadata"]["name"] = json!(name);
    let webhook = &mut config["webhooks"][0];
    assert_eq!(webhook["name"], WEBHOOK, "the manifest's webhook");
    webhook["clientConfig"] = client_config;
    webhook["namespaceSelector"]["matchExpressions"]
        .as_array_mut()
        .expect("the manifest's namespace expressions")
        .push(
            json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]}),
        );
    config
}

/// A cluster-scoped MutatingWebhookConfiguration, deleted when dropped (a test that fails
/// leaves none behind to refuse pods).
struct Registered<'a> {
    api: &'a Api,
    name: String,
}

impl<'a> Registered<'a> {
    const PATH: &'static str =
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

    fn create(api: &'a Api, configuration: &Value) -> Registered<'a> {
        let stored = api
            .post(Self::PATH, configuration)
            .expect(201, "create the webhook configuration");
        Registered {
            api,
            name: stored["metadata"]["name"]
                .as_str()
                .expect("a name")
                .to_owned(),
        }
    }

    fn read(&self) -> Value {
        self.api
            .get(&format!("{}/{}", Self::PATH, self.name))
            .expect(200, "read the webhook configuration")
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.api.delete(&format!("{}/{}", Self::PATH, self.name));
    }
}

/// A `clientConfig` calling `url`, trusting the cluster's CA.
fn url_config(cluster: &Cluster, url: &str) -> Value {
    json!({"url": url, "caBundle": b64(cluster.ca_pem())})
}

/// `inject` serving a certificate the cluster's CA signed for localhost and 127.0.0.1.
fn injector(scene: &Scene) -> Tracker {
    let pair = scene.cluster.authority().serving(&["localhost"]);
    let folder = scene
        .cluster
        .scratch(&format!("{}-injector", scene.namespace));
    std::fs::write(folder.join("tls.crt"), &pair.cert_pem).expect("written");
    std::fs::write(folder.join("tls.key"), &pair.key_pem).expect("written");
    Tracker::injector()
        .args([
            format!("--tls-cert-file={}", folder.join("tls.crt").display()),
            format!("--tls-key-file={}", folder.join("tls.key").display()),
            "--admin-address=127.0.0.1:0".to_owned(),
        ])
        .start()
}

/// The manifests' configuration for `injector`, registered for the scene's namespace, once
/// the server calls it (a dry run of an opted-in pod comes back with the tracker).
fn register<'a>(scene: &'a Scene, injector: &Tracker) -> Registered<'a> {
    let url = format!("https://{}/mutate", injector.address);
    let name = format!("{}-injector", scene.namespace);
    let configuration =
        webhook_configuration(&name, &scene.namespace, url_config(scene.cluster, &url));
    let registered = Registered::create(scene.admin(), &configuration);
    wait_injecting(scene);
    registered
}

/// Waits until the server sends the scene's opted-in pods to an injector.
fn wait_injecting(scene: &Scene) {
    let probe = job_pod("probe", true);
    let path = format!("{}?dryRun=All", scene.pods_path(None));
    wait_for("the server calls the injector", TAKE_UP, || {
        let answer = scene.admin().post(&path, &probe);
        let injected = answer.status == 201 && !init_names(&answer.body).is_empty();
        if injected {
            Ok(())
        } else {
            Err(format!("{answer:?}"))
        }
    });
}

/// A job pod as a user writes it: a setup init container, the job and a helper, the
/// automatic token off (README: the token then reaches the tracker only); opted in or not.
fn job_pod(name: &str, opted_in: bool) -> Value {
    let mut labels = json!({"app": "worker"});
    if opted_in {
        labels[OPT_IN] = json!("true");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "initContainers": [{"name": "setup", "image": "busybox:1.37.0", "command": ["true"]}],
            "containers": [
                {"name": "job", "image": "busybox:1.37.0", "command": ["sleep", "60"]},
                {"name": "helper", "image": "busybox:1.37.0", "command": ["sleep", "60"]},
            ],
        },
    })
}

/// The names of a pod's init containers, in order.
fn init_names(pod: &Value) -> Vec<String> {
    pod["spec"]["initContainers"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The values of `variable` in a container's env.
fn env_values(container: &k8s_openapi::api::core::v1::Container, variable: &str) -> Vec<String> {
    container
        .env
        .iter()
        .flatten()
        .filter(|env| env.name == variable)
        .map(|env| env.value.clone().unwrap_or_default())
        .collect()
}

/// The injector's review log line for a pod (it logs one per review).
fn review_lines(injector: &Tracker, pod: &str) -> Vec<String> {
    let needle = format!("pod={pod} ");
    injector
        .log()
        .lines()
        .filter(|line| line.contains(&needle))
        .map(|line| line[line.find("outcome=").unwrap_or(0)..].to_owned())
        .map(|rest| {
            rest.split(" duration=")
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The stored pod, as the API server answers it (404 is `None`).
fn stored(scene: &Scene, name: &str) -> Option<Value> {
    let answer = scene.admin().get(&scene.pods_path(Some(name)));
    match answer.status {
        200 => Some(answer.body),
        404 => None,
        _ => panic!("read pod {name}: {answer:?}"),
    }
}

#[test]
fn an_opted_in_pod_is_stored_with_the_native_sidecar_and_others_are_stored_untouched() {
    let scene = Scene::new("inject");
    let injector = injector(&scene);
    let _registered = register(&scene, &injector);
    let ns = scene.namespace.clone();

    let created = scene.create_pod(job_pod("job-1", true));
    let value = stored(&scene, "job-1").expect("stored");
    assert_eq!(created["metadata"]["uid"], value["metadata"]["uid"]);
    let pod: Pod = serde_json::from_value(value.clone()).expect("a pod");
    let spec = pod.spec.as_ref().expect("a spec");
    let init = spec.init_containers.as_ref().expect("init containers");
    assert_eq!(
        init_names(&value),
        ["tracker", "setup"],
        "the tracker first"
    );
    let tracker = &init[0];
    sidecar_checks::assert_native_sidecar("stored pod", tracker);
    sidecar_checks::assert_token_in_tracker_only("stored pod", spec, tracker);
    sidecar_checks::assert_restricted_and_small("stored pod", spec, tracker);
    assert_eq!(
        tracker
            .startup_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|h| h.path.clone()),
        Some(Some("/readyz".to_owned())),
        "the job starts only once the tracker is ready"
    );
    let url = format!("http://{}", sidecar_checks::SIDECAR_API);
    for other in spec.containers.iter().chain(&init[1..]) {
        assert_eq!(
            env_values(other, "TRACKER_URL"),
            [url.as_str()],
            "{}",
            other.name
        );
    }
    assert!(env_values(tracker, "TRACKER_URL").is_empty());
    assert_eq!(
        pod.metadata
            .annotations
            .as_ref()
            .map(|a| a["pod-webhook-tracker.io/injected"].clone()),
        Some(env!("CARGO_PKG_VERSION").to_owned())
    );
    assert_eq!(
        review_lines(&injector, &format!("{ns}/job-1")),
        ["outcome=injected dry_run=false"]
    );

    // Not opted in: the server never asks the injector, and stores the pod as sent.
    scene.create_pod(job_pod("plain", false));
    let plain = stored(&scene, "plain").expect("stored");
    assert_eq!(init_names(&plain), ["setup"]);
    assert!(
        plain["metadata"]["annotations"]
            .get("pod-webhook-tracker.io/injected")
            .is_none()
    );
    for container in plain["spec"]["containers"].as_array().expect("containers") {
        assert!(
            !container.to_string().contains("TRACKER_URL"),
            "{container}"
        );
    }
    assert!(review_lines(&injector, &format!("{ns}/plain")).is_empty());

    // A dry run answers the injected pod, and stores nothing.
    let path = format!("{}?dryRun=All", scene.pods_path(None));
    let answer = scene
        .admin()
        .post(&path, &job_pod("dry", true))
        .expect(201, "a dry run");
    assert_eq!(init_names(&answer), ["tracker", "setup"]);
    assert!(stored(&scene, "dry").is_none(), "a dry run stores nothing");
    assert_eq!(
        review_lines(&injector, &format!("{ns}/dry")),
        ["outcome=injected dry_run=true"]
    );
}

#[test]
fn an_unfit_pod_is_denied_by_the_server_with_the_injectors_reasons_and_not_stored() {
    let scene = Scene::new("inject");
    let injector = injector(&scene);
    let _registered = register(&scene, &injector);
    let mut host = job_pod("host", true);
    host["spec"]["hostNetwork"] = json!(true);
    let answer = scene.admin().post(&scene.pods_path(None), &host);
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        answer.message().starts_with(&format!(
            "admission webhook \"{WEBHOOK}\" denied the request: pod-webhook-tracker cannot add \
             the tracker to this pod: the pod uses hostNetwork"
        )),
        "{answer:?}"
    );
    assert!(stored(&scene, "host").is_none(), "nothing stored");
    assert_eq!(
        review_lines(&injector, &format!("{}/host", scene.namespace)),
        ["outcome=denied dry_run=false"]
    );
}

/// Another mutating webhook, as clusters have (a policy engine, a mesh): it annotates every pod
/// it is sent, so that the server reinvokes the webhooks before it that asked for it
/// (`reinvocationPolicy: IfNeeded`). Served over TLS with a certificate of the cluster's CA on a
/// thread per connection; the pods it was sent are kept for the test to look at. Its threads
/// end with the test binary.
struct Annotator {
    address: SocketAddr,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Annotator {
    /// The annotation it adds.
    const KEY: &'static str = "example.com/annotated";

    fn start(cluster: &Cluster) -> Annotator {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let pair = cluster.authority().serving(&["localhost"]);
        let certificates = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("a certificate");
        let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("a key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .expect("a serving configuration");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let address = listener.local_addr().expect("an address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (config, kept) = (Arc::clone(&config), Arc::clone(&kept));
                std::thread::spawn(move || Annotator::serve(stream, config, &kept));
            }
        });
        Annotator { address, seen }
    }

    /// Answers the reviews of one connection (the server keeps connections alive).
    fn serve(stream: TcpStream, config: Arc<rustls::ServerConfig>, seen: &Mutex<Vec<Value>>) {
        let connection = rustls::ServerConnection::new(config).expect("a TLS connection");
        let mut stream = BufReader::new(rustls::StreamOwned::new(connection, stream));
        loop {
            let mut length = 0;
            let mut line = String::new();
            if !matches!(stream.read_line(&mut line), Ok(n) if n > 0) {
                return;
            }
            loop {
                line.clear();
                if stream.read_line(&mut line).is_err() {
                    return;
                }
                let header = line.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().expect("a length");
                }
            }
            let mut body = vec![0; length];
            if stream.read_exact(&mut body).is_err() {
                return;
            }
            let review: Value = serde_json::from_slice(&body).expect("an AdmissionReview");
            let pod = review["request"]["object"].clone();
            let patch = if pod["metadata"]["annotations"].is_object() {
                json!([{"op": "add", "path": "/metadata/annotations/example.com~1annotated", "value": "yes"}])
            } else {
                json!([{"op": "add", "path": "/metadata/annotations", "value": {Self::KEY: "yes"}}])
            };
            seen.lock().expect("the pods seen").push(pod);
            let answer = json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": review["request"]["uid"],
                    "allowed": true,
                    "patchType": "JSONPatch",
                    "patch": b64(&patch.to_string()),
                },
            })
            .to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                answer.len()
            );
            let out = stream.get_mut();
            if out.write_all(head.as_bytes()).is_err()
                || out.write_all(answer.as_bytes()).is_err()
                || out.flush().is_err()
            {
                return;
            }
        }
    }
}

#[test]
fn a_reinvoked_injector_and_a_pod_with_its_own_tracker_get_no_second_tracker() {
    let scene = Scene::new("inject");
    let ns = scene.namespace.clone();
    let injector = injector(&scene);
    let _registered = register(&scene, &injector);
    // The annotator's configuration sorts after the injector's, so the server calls it second;
    // its change makes the server call the injector again (the manifest's IfNeeded).
    let annotator = Annotator::start(scene.cluster);
    let url = format!("https://{}/", annotator.address);
    let mut configuration = webhook_configuration(
        &format!("{ns}-z-annotator"),
        &ns,
        url_config(scene.cluster, &url),
    );
    configuration["webhooks"][0]["name"] = json!("annotate.example.com");
    configuration["webhooks"][0]["reinvocationPolicy"] = json!("Never");
    let _annotating = Registered::create(scene.admin(), &configuration);
    let pod = format!("{ns}/twice");
    wait_for("the server calls the annotator", TAKE_UP, || {
        let path = format!("{}?dryRun=All", scene.pods_path(None));
        let answer = scene.admin().post(&path, &job_pod("probe", true));
        let annotated = answer.body["metadata"]["annotations"][Annotator::KEY] == "yes";
        if annotated {
            Ok(())
        } else {
            Err(format!("{answer:?}"))
        }
    });

    scene.create_pod(job_pod("twice", true));
    let value = stored(&scene, "twice").expect("stored");
    assert_eq!(init_names(&value), ["tracker", "setup"], "one tracker");
    assert_eq!(value["metadata"]["annotations"][Annotator::KEY], "yes");
    let volumes: Vec<&str> = value["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| v["name"].as_str().unwrap_or_default())
        .collect();
    let mut unique = volumes.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), volumes.len(), "no volume twice: {volumes:?}");
    let spec: Pod = serde_json::from_value(value.clone()).expect("a pod");
    let spec = spec.spec.expect("a spec");
    for container in &spec.containers {
        assert_eq!(
            env_values(container, "TRACKER_URL").len(),
            1,
            "{}",
            container.name
        );
    }
    // The annotator saw the injected pod; the injector was then asked again and added nothing.
    let seen = annotator.seen.lock().expect("the pods seen").clone();
    let sent = seen
        .iter()
        .filter(|p| p["metadata"]["name"] == "twice")
        .collect::<Vec<_>>();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(init_names(sent[0]), ["tracker", "setup"]);
    assert_eq!(
        review_lines(&injector, &pod),
        [
            "outcome=injected dry_run=false",
            "outcome=already-injected dry_run=false"
        ],
        "injected, then reinvoked"
    );

    // A pod that brings its own tracker is stored as it came (but for the annotation).
    let mut own = job_pod("own", true);
    own["spec"]["initContainers"] = json!([{
        "name": "tracker", "image": "example.com/my-tracker:1", "restartPolicy": "Always",
    }]);
    scene.create_pod(own);
    let value = stored(&scene, "own").expect("stored");
    assert_eq!(init_names(&value), ["tracker"]);
    assert_eq!(
        value["spec"]["initContainers"][0]["image"],
        "example.com/my-tracker:1"
    );
    assert!(
        value["metadata"]["annotations"]
            .get("pod-webhook-tracker.io/injected")
            .is_none()
    );
    assert!(!value["spec"].to_string().contains("TRACKER_URL"));
    // Asked twice, as the first pod: once, and again after the annotator's change.
    assert_eq!(
        review_lines(&injector, &format!("{ns}/own")),
        [
            "outcome=already-injected dry_run=false",
            "outcome=already-injected dry_run=false"
        ]
    );
}

/// Whether a TLS handshake with `address` as `name` succeeds when trusting `ca_pem` alone.
fn handshake(address: SocketAddr, name: &str, ca_pem: &str) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(certificate.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let mut connection =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect(address).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    while connection.is_handshaking() {
        connection
            .complete_io(&mut tcp)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn a_self_signed_injector_registers_its_ca_with_patch_rights_only_and_the_server_calls_it() {
    let scene = Scene::new("self-signed");
    let ns = scene.namespace.clone();
    let admin = scene.admin();
    let name = format!("{ns}-injector");
    // manifests/injector/self-signed's account, role and binding, for this configuration: the
    // one right is patch on that one object.
    let account = "pod-webhook-tracker-injector";
    admin
        .post(
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            &json!({"metadata": {"name": account}}),
        )
        .expect(201, "create the injector's account");
    let mut role =
        yaml::parse_yaml(Path::new("manifests/injector/self-signed/clusterrole.yaml")).remove(0);
    assert_eq!(role["rules"].as_array().map(Vec::len), Some(1), "{role}");
    assert_eq!(role["rules"][0]["verbs"], json!(["patch"]), "{role}");
    role["metadata"]["name"] = json!(name);
    role["rules"][0]["resourceNames"] = json!([name]);
    admin
        .post("/apis/rbac.authorization.k8s.io/v1/clusterroles", &role)
        .expect(201, "create the role");
    let mut binding = yaml::parse_yaml(Path::new(
        "manifests/injector/self-signed/clusterrolebinding.yaml",
    ))
    .remove(0);
    binding["metadata"]["name"] = json!(name);
    binding["roleRef"]["name"] = json!(name);
    assert_eq!(binding["subjects"][0]["name"], account, "{binding}");
    binding["subjects"][0]["namespace"] = json!(ns);
    admin
        .post(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            &binding,
        )
        .expect(201, "bind the role");
    let token = scene.cluster.token(&ns, account, &[], None);
    let kubeconfig =
        scene
            .cluster
            .kubeconfig(&format!("{ns}-{account}"), &Credentials::Token(token), &ns);
    let api = Api::from_kubeconfig(&kubeconfig);
    let on = |verb: &str, object: &str| {
        json!({"verb": verb, "group": "admissionregistration.k8s.io",
            "resource": "mutatingwebhookconfigurations", "name": object})
    };
    wait_for("the binding takes effect", TAKE_UP, || {
        if may(&api, on("patch", &name)) {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });
    for (verb, object) in [
        ("get", name.as_str()),
        ("update", &name),
        ("patch", "another"),
    ] {
        assert!(
            !may(&api, on(verb, object)),
            "{verb} {object}: only patch on its own"
        );
    }

    // It starts before its configuration exists (kubectl apply creates them in any order):
    // it cannot have written its CA yet, so it is not ready.
    let injector = Tracker::injector()
        .args([
            "--self-signed".to_owned(),
            "--self-signed-dns-name=localhost".to_owned(),
            format!("--webhook-configuration={name}"),
            format!("--kubeconfig={}", kubeconfig.display()),
            "--admin-address=127.0.0.1:0".to_owned(),
        ])
        .start();
    let probes = injector.admin.expect("an admin address");
    let ready = || support::request(probes, "GET", "/readyz", &[]).status == 200;
    assert!(
        !ready(),
        "ready before its CA is registered:\n{}",
        injector.log()
    );

    // The manifest's configuration, calling it by the name its certificate has, with no
    // caBundle: the server can call it only once the injector has written its CA there.
    let url = format!("https://localhost:{}/mutate", injector.address.port());
    let configuration = webhook_configuration(&name, &ns, json!({"url": url}));
    let registered = Registered::create(admin, &configuration);
    wait_for("the injector is ready", TAKE_UP, || {
        if ready() { Ok(()) } else { Err(injector.log()) }
    });
    assert!(
        injector.log().contains(&format!(
            "the CA is in the caBundle of MutatingWebhookConfiguration {name}"
        )),
        "{}",
        injector.log()
    );
    let configuration = registered.read();
    let webhook = &configuration["webhooks"][0];
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(
            webhook["clientConfig"]["caBundle"]
                .as_str()
                .expect("a caBundle"),
        )
        .expect("base64");
    let bundle = String::from_utf8(bundle).expect("PEM");
    assert!(
        bundle.starts_with("-----BEGIN CERTIFICATE-----"),
        "{bundle}"
    );
    assert_ne!(
        bundle,
        scene.cluster.ca_pem(),
        "its own CA, not the cluster's"
    );
    handshake(injector.address, "localhost", &bundle)
        .unwrap_or_else(|e| panic!("the caBundle is the CA of what it serves: {e}"));
    let refused = handshake(injector.address, "localhost", scene.cluster.ca_pem());
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("UnknownIssuer")),
        "and another CA does not verify it: {refused:?}"
    );
    // The rest of the configuration stays as applied.
    assert_eq!(webhook["clientConfig"]["url"], json!(url));
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(webhook["reinvocationPolicy"], "IfNeeded");

    // The server calls it, trusting that CA.
    wait_injecting(&scene);
    scene.create_pod(job_pod("job-1", true));
    let value = stored(&scene, "job-1").expect("stored");
    assert_eq!(init_names(&value), ["tracker", "setup"]);
    assert_eq!(
        review_lines(&injector, &format!("{ns}/job-1")),
        ["outcome=injected dry_run=false"]
    );
}
