//! The injector part of the demo: `pod-webhook-tracker inject` in this process, registered in
//! the API test double as a mutating webhook, and a pod created bare that is stored with its
//! tracker sidecar.

use std::io::{Read, Write};
use std::net::TcpStream;

use base64::Engine;
use kube_double::ApiServer;
use pod_webhook_tracker::cli::{self, Command};
use pod_webhook_tracker::config::inject::InjectConfig;
use pod_webhook_tracker::inject;
use serde_json::{Value, json};

/// Starts the injector, registers it, creates a bare opted-in pod and shows what was stored.
pub(crate) fn show(api: &ApiServer, namespace: &str, say: impl Fn(String)) {
    let dir = std::env::temp_dir().join(format!("pwt-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let ca_pem = write_certificate(&dir);
    let args = vec![
        "inject".to_owned(),
        "--address=127.0.0.1:0".to_owned(),
        format!("--tls-cert-file={}", dir.join("tls.crt").display()),
        format!("--tls-key-file={}", dir.join("tls.key").display()),
    ];
    let args = cli::normalize(&args).expect("demo flags are valid");
    let Ok(cli::Cli {
        command: Command::Inject(inject_args),
    }) = cli::parse("pod-webhook-tracker", &args)
    else {
        panic!("demo flags parse as inject");
    };
    let config = InjectConfig::from_args(&inject_args).expect("demo configuration is valid");
    let injector = inject::start(config).unwrap_or_else(|e| panic!("injector did not start: {e}"));
    say(format!(
        "injector (mutating admission webhook) listens on https://{}",
        injector.address()
    ));

    let webhook = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "pod-webhook-tracker"},
        "webhooks": [{
            "name": "inject.pod-webhook-tracker.io",
            "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
            "clientConfig": {
                "url": format!("https://{}/mutate", injector.address()),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(&ca_pem),
            },
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "objectSelector": {"matchLabels": {"pod-webhook-tracker.io/inject": "true"}},
        }]
    });
    let (status, _) = post(
        api,
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        &webhook,
    );
    assert_eq!(status, 201, "the webhook is registered");

    let bare = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "batch-0", "labels": {"app": "batch", "pod-webhook-tracker.io/inject": "true"}},
        "spec": {"automountServiceAccountToken": false,
                 "containers": [{"name": "job", "image": "busybox", "command": ["sleep", "60"]}]}
    });
    say(
        "creating pod batch-0 with one container and the label pod-webhook-tracker.io/inject=true"
            .into(),
    );
    let (status, stored) = post(api, &format!("/api/v1/namespaces/{namespace}/pods"), &bare);
    assert_eq!(status, 201, "the pod is created: {stored}");
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .map(str::to_owned)
            .collect()
    };
    let tracker = &stored["spec"]["initContainers"][0];
    say(format!(
        "stored with init containers {:?} (restartPolicy {}: a native sidecar) and containers {:?}",
        names(&stored["spec"]["initContainers"]),
        tracker["restartPolicy"].as_str().unwrap_or("?"),
        names(&stored["spec"]["containers"]),
    ));
    say(format!(
        "  tracker args {}; the job container has TRACKER_URL={}",
        tracker["args"],
        stored["spec"]["containers"][0]["env"][0]["value"]
            .as_str()
            .unwrap_or("?")
    ));
    injector.stop();
    injector.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A serving certificate for 127.0.0.1 and the CA that signed it (the CA's PEM is returned).
fn write_certificate(dir: &std::path::Path) -> String {
    let ca_key = rcgen::KeyPair::generate().expect("a key");
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("a CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("a name")
        .signed_by(&key, &issuer)
        .expect("a certificate");
    std::fs::write(dir.join("tls.crt"), cert.pem()).expect("written");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("written");
    ca_cert.pem()
}

/// POSTs JSON to the double as its administrator: the status and the body.
fn post(api: &ApiServer, path: &str, body: &Value) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", api.port())).expect("the double listens");
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer admin-token\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
