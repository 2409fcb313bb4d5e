//! Black-box tests of `pod-webhook-tracker inject`: the binary serves HTTPS, is registered in
//! the API test double with the manifests' MutatingWebhookConfiguration, and pods created
//! through the API come back with the sidecar, which must pass the same checks as the sidecar
//! the manifests write by hand.

#[path = "support/sidecar_checks.rs"]
mod sidecar_checks;
mod support;
#[path = "support/yaml.rs"]
#[allow(dead_code)] // only parse_yaml is used here
mod yaml;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube_double::{ApiServer, Credentials, Rule, Subject, User};
use serde_json::{Value, json};
use sidecar_checks::*;
use support::https::{self, write_certificate};
use support::{Answer, Connection, Tracker};

const ADMIN: &str = "admin-token";
const NS: &str = "jobs";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pwt-inject-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// An injector with the certificate in `dir`.
fn injector(dir: &Path, extra: &[&str]) -> Tracker {
    Tracker::injector()
        .args([
            format!("--tls-cert-file={}", dir.join("tls.crt").display()),
            format!("--tls-key-file={}", dir.join("tls.key").display()),
            "--admin-address=127.0.0.1:0".to_owned(),
        ])
        .args(extra.iter().map(|s| (*s).to_owned()))
        .start()
}

/// One request to the double as its administrator.
fn call_api(api: &ApiServer, method: &str, path: &str, body: Option<&Value>) -> Answer {
    let address: SocketAddr = format!("127.0.0.1:{}", api.port())
        .parse()
        .expect("an address");
    let mut connection = Connection::open(address).expect("the double listens");
    let body = body.map(Value::to_string).unwrap_or_default();
    let content_type = if method == "PATCH" {
        "application/strategic-merge-patch+json"
    } else {
        "application/json"
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    connection.send_raw(request.as_bytes()).expect("an answer")
}

fn double() -> ApiServer {
    let api = ApiServer::start();
    api.add_token(ADMIN, User::admin("admin"));
    api
}

/// The manifests' webhook configuration, pointed at `client_config`.
fn register(api: &ApiServer, client_config: Value) {
    let mut config = yaml::parse_yaml(Path::new("manifests/injector/base/webhook.yaml")).remove(0);
    config["webhooks"][0]["clientConfig"] = client_config;
    let answer = call_api(
        api,
        "POST",
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        Some(&config),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
}

fn url_config(injector: &Tracker, ca_pem: &str) -> Value {
    json!({
        "url": format!("https://{}/mutate", injector.address),
        "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
    })
}

/// A job pod as a user writes it, opted in, without any tracker.
fn bare_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"pod-webhook-tracker.io/inject": "true", "app": "worker"}},
        "spec": {
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "containers": [{"name": "job", "image": "busybox", "command": ["sleep", "60"]}]
        }
    })
}

fn create(api: &ApiServer, pod: &Value, query: &str) -> Answer {
    call_api(
        api,
        "POST",
        &format!("/api/v1/namespaces/{NS}/pods{query}"),
        Some(pod),
    )
}

fn tracker_of(pod: &Pod) -> k8s_openapi::api::core::v1::Container {
    let spec = pod.spec.as_ref().expect("a spec");
    spec.init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "tracker")
        .cloned()
        .unwrap_or_else(|| panic!("no tracker in {pod:?}"))
}

fn metric(admin: SocketAddr, name: &str) -> f64 {
    let answer = support::request(admin, "GET", "/metrics", &[]);
    answer
        .body
        .lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn pods_created_through_the_api_come_back_with_the_sidecar_the_manifests_would_give_them() {
    let dir = temp_dir("create");
    let ca = write_certificate(&dir, &["127.0.0.1"]);
    let injector = injector(&dir, &[]);
    let api = double();
    register(&api, url_config(&injector, &ca));

    let answer = create(&api, &bare_pod("job-1"), "");
    assert_eq!(answer.status, 201, "{}", answer.body);
    let stored = api.pod(NS, "job-1").expect("stored");
    let pod: Pod = serde_json::from_value(stored).expect("a pod");
    let spec = pod.spec.as_ref().expect("a spec");
    let tracker = tracker_of(&pod);
    assert_eq!(
        spec.init_containers.as_ref().expect("init")[0].name,
        "tracker",
        "first"
    );
    assert_native_sidecar("injected pod", &tracker);
    assert_token_in_tracker_only("injected pod", spec, &tracker);
    assert_restricted_and_small("injected pod", spec, &tracker);
    assert_eq!(
        tracker.image.as_deref(),
        Some(
            format!(
                "ghcr.io/pod-webhook-tracker/pod-webhook-tracker:v{}",
                env!("CARGO_PKG_VERSION")
            )
            .as_str()
        ),
        "the image of this version by default"
    );
    let url = spec.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "TRACKER_URL");
    assert_eq!(
        url.and_then(|e| e.value.as_deref()),
        Some(format!("http://{SIDECAR_API}").as_str())
    );
    let annotations = pod.metadata.annotations.expect("annotations");
    assert_eq!(
        annotations["pod-webhook-tracker.io/injected"],
        env!("CARGO_PKG_VERSION")
    );

    // Not opted in: never sent to the injector.
    let mut plain = bare_pod("plain");
    plain["metadata"]["labels"] = json!({"app": "worker"});
    assert_eq!(create(&api, &plain, "").status, 201);
    let plain = api.pod(NS, "plain").expect("stored");
    assert!(plain["spec"].get("initContainers").is_none(), "{plain}");

    // A dry run is answered the same way and stores nothing.
    let dry = create(&api, &bare_pod("dry"), "?dryRun=All");
    assert_eq!(dry.status, 201, "{}", dry.body);
    assert!(dry.body.contains("\"name\":\"tracker\""), "{}", dry.body);
    assert!(api.pod(NS, "dry").is_none());

    // With run: the installer first, the program mounted into the job container.
    let mut with_run = bare_pod("with-run");
    with_run["metadata"]["annotations"] = json!({"pod-webhook-tracker.io/run": "true"});
    assert_eq!(create(&api, &with_run, "").status, 201);
    let pod: Pod = serde_json::from_value(api.pod(NS, "with-run").expect("stored")).expect("a pod");
    let init: Vec<_> = pod
        .spec
        .as_ref()
        .expect("spec")
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(init, ["install-run", "tracker"]);

    let admin = injector.admin.expect("an admin address");
    assert_eq!(
        metric(
            admin,
            "pod_webhook_tracker_injector_reviews_total{outcome=\"injected\"}"
        ),
        3.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pods_the_tracker_cannot_serve_are_refused_with_the_reason_and_nothing_is_stored() {
    let dir = temp_dir("unfit");
    let ca = write_certificate(&dir, &["127.0.0.1"]);
    let injector = injector(&dir, &[]);
    let api = double();
    register(&api, url_config(&injector, &ca));

    let mut host = bare_pod("host");
    host["spec"]["hostNetwork"] = json!(true);
    let answer = create(&api, &host, "");
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("denied the request: pod-webhook-tracker cannot add the tracker to this pod: the pod uses hostNetwork"), "{}", answer.body);
    assert!(api.pod(NS, "host").is_none());

    let mut bad = bare_pod("bad");
    bad["metadata"]["annotations"] = json!({"pod-webhook-tracker.io/max-job-duration": "forever"});
    let answer = create(&api, &bad, "");
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(
        answer
            .body
            .contains("annotation pod-webhook-tracker.io/max-job-duration"),
        "{}",
        answer.body
    );
    assert!(api.pod(NS, "bad").is_none());

    // With --unfit-pods=admit the pod is created without the tracker, and its creator warned.
    drop(injector);
    let admitting = self::injector(&dir, &["--unfit-pods=admit"]);
    let api = double();
    register(&api, url_config(&admitting, &ca));
    let answer = create(&api, &host, "");
    assert_eq!(answer.status, 201, "{}", answer.body);
    let warning = answer.header("warning").expect("a Warning header");
    assert!(
        warning.starts_with("299 - \"") && warning.contains("hostNetwork"),
        "{warning}"
    );
    let stored = api.pod(NS, "host").expect("stored");
    assert!(stored["spec"].get("initContainers").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = temp_dir("rotate");
    let first_ca = write_certificate(&dir, &["127.0.0.1"]);
    let injector = injector(&dir, &[]);
    let api = double();
    register(&api, url_config(&injector, &first_ca));
    assert_eq!(create(&api, &bare_pod("before"), "").status, 201);

    let second_ca = write_certificate(&dir, &["127.0.0.1"]);
    let patch = json!({"webhooks": [{"name": "inject.pod-webhook-tracker.io",
        "clientConfig": {"caBundle": base64::engine::general_purpose::STANDARD.encode(&second_ca)}}]});
    let path =
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/pod-webhook-tracker";
    assert_eq!(call_api(&api, "PATCH", path, Some(&patch)).status, 200);
    // The API server now trusts only the new CA: the pod is created only once the injector
    // serves the new certificate (it looks at the files once a second).
    let mut created = None;
    for attempt in 0..50 {
        let answer = create(&api, &bare_pod(&format!("after-{attempt}")), "");
        if answer.status == 201 {
            created = Some(answer);
            break;
        }
        assert!(
            answer
                .body
                .contains("x509: certificate signed by unknown authority"),
            "{}",
            answer.body
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let created = created.expect("the new certificate is served within 5 s");
    assert!(created.body.contains("\"name\":\"tracker\""));
    assert!(
        injector
            .wait_for_line("serving the new certificate", Duration::from_secs(1))
            .is_some()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The args the self-signed variant's kustomization gives the injector.
fn self_signed_manifest_args() -> Vec<String> {
    let kustomization = yaml::parse_yaml(Path::new(
        "manifests/injector/self-signed/kustomization.yaml",
    ))
    .remove(0);
    let patch = kustomization["patches"][0]["patch"]
        .as_str()
        .expect("an inline patch");
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    let operations: Vec<Value> = serde_saphyr::from_str_with_options(patch, options).expect("YAML");
    let args = operations
        .iter()
        .find(|op| op["path"] == "/spec/template/spec/containers/0/args")
        .expect("the args");
    serde_json::from_value(args["value"].clone()).expect("strings")
}

#[test]
fn self_signed_mode_writes_its_ca_into_its_own_webhook_configuration_with_patch_rights_only() {
    let api = double();
    // What manifests/injector/self-signed binds: patch on this one configuration, nothing else.
    api.add_token(
        "injector-token",
        User::new("system:serviceaccount:pod-webhook-tracker:pod-webhook-tracker-injector"),
    );
    api.allow(
        Subject::user("system:serviceaccount:pod-webhook-tracker:pod-webhook-tracker-injector"),
        Rule::new(["patch"], ["mutatingwebhookconfigurations"])
            .resource_names(["pod-webhook-tracker"]),
    );
    register(
        &api,
        json!({"service": {"name": "pod-webhook-tracker-injector", "namespace": "pod-webhook-tracker", "path": "/mutate", "port": 443}}),
    );
    let dir = temp_dir("self-signed");
    std::fs::create_dir_all(&dir).expect("a directory");
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig, Credentials::token("injector-token"));

    let args: Vec<String> = self_signed_manifest_args()
        .into_iter()
        .skip(1) // `inject`
        .filter(|arg| !arg.starts_with("--address") && !arg.starts_with("--admin-address"))
        .collect();
    assert!(args.contains(&"--self-signed".to_owned()), "{args:?}");
    let injector = Tracker::injector()
        .args(args)
        .args([
            "--admin-address=127.0.0.1:0".to_owned(),
            format!("--kubeconfig={}", kubeconfig.display()),
        ])
        .start();
    api.route_service(
        "pod-webhook-tracker",
        "pod-webhook-tracker-injector",
        &injector.address.to_string(),
    );
    let admin = injector.admin.expect("an admin address");
    let mut ready = false;
    for _ in 0..100 {
        if support::request(admin, "GET", "/readyz", &[]).status == 200 {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ready,
        "ready once the CA is registered:\n{}",
        injector.log()
    );
    let config = api
        .webhook_configuration("pod-webhook-tracker")
        .expect("the configuration");
    let bundle = config["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .expect("a caBundle");
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .expect("base64");
    assert!(String::from_utf8_lossy(&bundle).contains("BEGIN CERTIFICATE"));
    assert_eq!(
        config["webhooks"][0]["failurePolicy"], "Fail",
        "the rest of the configuration stays"
    );

    // The API server reaches the injector through its Service name, trusting that CA.
    let answer = create(&api, &bare_pod("self-signed"), "");
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert!(
        answer.body.contains("\"name\":\"tracker\""),
        "{}",
        answer.body
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn malformed_oversized_or_misdirected_requests_get_a_clear_4xx() {
    let dir = temp_dir("hostile");
    let ca = write_certificate(&dir, &["127.0.0.1"]);
    let injector = injector(&dir, &[]);
    let at = injector.address;
    let json = "application/json";
    for (method, path, content_type, body, status, says) in [
        ("GET", "/mutate", json, Vec::new(), 405, "use POST"),
        (
            "POST",
            "/mutate",
            "text/plain",
            b"{}".to_vec(),
            415,
            "application/json",
        ),
        (
            "POST",
            "/mutate",
            json,
            b"not json".to_vec(),
            400,
            "not JSON",
        ),
        (
            "POST",
            "/mutate",
            json,
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#.to_vec(),
            400,
            "admissionReviewVersions",
        ),
        ("POST", "/elsewhere", json, Vec::new(), 404, "POST /mutate"),
        ("GET", "/healthz", json, Vec::new(), 200, "ok"),
    ] {
        let headers = [("content-type", content_type)];
        let (got, text) = https::request(at, &ca, method, path, &headers, body);
        assert_eq!(got, status, "{method} {path}: {text}");
        assert!(text.contains(says), "{method} {path}: {text}");
    }
    // Above 2 MiB: refused by its declared length before the body is read, and a chunked body
    // once it passes 2 MiB. The client stops writing where the server stops reading, so that
    // the answer cannot be lost to a reset while it writes.
    let declared = (3 * 1024 * 1024).to_string();
    let headers = [
        ("content-type", json),
        ("content-length", declared.as_str()),
    ];
    let (got, text) = https::post_raw(at, &ca, "/mutate", &headers, b"{ ");
    assert_eq!(got, 413, "{text}");
    assert!(text.contains("larger than"), "{text}");
    let chunk = vec![b' '; 2 * 1024 * 1024 + 1];
    let mut chunked = format!("{:x}\r\n", chunk.len()).into_bytes();
    chunked.extend_from_slice(&chunk);
    let headers = [("content-type", json), ("transfer-encoding", "chunked")];
    let (got, text) = https::post_raw(at, &ca, "/mutate", &headers, &chunked);
    assert_eq!(got, 413, "{text}");
    assert!(text.contains("larger than"), "{text}");
    // Plain HTTP on the HTTPS port: the handshake fails, the connection closes, nothing else.
    let answer = support::Connection::open(at).and_then(|mut c| {
        c.set_read_timeout(Duration::from_secs(5))?;
        Ok(c.send("GET", "/healthz", &[]))
    });
    assert!(matches!(answer, Ok(Err(_))), "{answer:?}");
    let admin = injector.admin.expect("an admin address");
    assert_eq!(
        metric(
            admin,
            "pod_webhook_tracker_injector_reviews_total{outcome=\"refused\"}"
        ),
        5.0
    );
    assert!(
        metric(
            admin,
            "pod_webhook_tracker_injector_connections_closed_total{listener=\"webhook\",reason=\"tls-handshake\"}"
        ) >= 1.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inject_refuses_to_start_without_a_certificate_or_with_an_unreadable_one() {
    let (status, output) = Tracker::injector().run_to_exit();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("--tls-cert-file"), "{output}");
    let (status, output) = Tracker::injector()
        .args([
            "--tls-cert-file=/nonexistent/tls.crt",
            "--tls-key-file=/nonexistent/tls.key",
        ])
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("/nonexistent/tls.crt"), "{output}");
}
