//! Replays the recorded mutating-webhook exchanges of a real kube-apiserver
//! (`tests/recorded/kube-apiserver-admission-and-tokens.json`, entries `admission`) against the
//! double: a test webhook on loopback answers each way the recording's did (a patch, warnings,
//! a bad patch, no patchType, a wrong uid, a denial, not JSON, HTTP 500, too slow), and the
//! double must send the same AdmissionReview and make the same of each answer: the same status
//! and message to the pod's creator, the same stored pod, the same `Warning` header.

mod client;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use client::Connection;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kube_double::{ApiServer, User};
use serde_json::{Value, json};

const RECORDED_PORT: &str = "34125";

fn recording() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/recorded/kube-apiserver-admission-and-tokens.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the recording is JSON")
}

/// What the test webhook saw of one call.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    content_type: String,
    accept: String,
    body: Value,
}

/// A webhook on loopback over TLS that answers as it is told.
struct TestWebhook {
    port: u16,
    ca_pem: String,
    behaviour: Arc<Mutex<String>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

fn tracker_patch() -> Value {
    json!([{"op": "add", "path": "/spec/initContainers", "value": [{
        "name": "tracker", "image": "pod-webhook-tracker:test", "restartPolicy": "Always",
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}]
    }]}])
}

fn encode(patch: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(patch.to_string())
}

/// The answer for `behaviour` to a review with `uid`: status, body.
fn answer_for(behaviour: &str, uid: &str) -> (u16, String) {
    let review = |response: Value| {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
            .to_string()
    };
    let patched = json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": encode(&tracker_patch())});
    match behaviour {
        "patch" | "slow" => (200, review(patched)),
        "warnings" => {
            let mut response = patched;
            response["warnings"] =
                json!(["tracker injected: the pod's service account needs get and patch on pods"]);
            (200, review(response))
        }
        "bad-patch" => {
            let patch = json!([{"op": "replace", "path": "/spec/nothing/here", "value": 1}]);
            (
                200,
                review(
                    json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": encode(&patch)}),
                ),
            )
        }
        "no-patch-type" => (
            200,
            review(json!({"uid": uid, "allowed": true, "patch": encode(&tracker_patch())})),
        ),
        "wrong-uid" => (200, review(json!({"uid": "not-the-uid", "allowed": true}))),
        "deny" => (
            200,
            review(
                json!({"uid": uid, "allowed": false, "status": {"code": 403, "message": "no tracker for this pod"}}),
            ),
        ),
        "not-json" => (200, "\"not json\"".to_owned()),
        // Each webhook (by its path) adds a label of its own: every call changes the pod.
        label if label.starts_with("label:") => {
            let name = label.trim_start_matches("label:");
            let patch = json!([{"op": "add", "path": format!("/metadata/labels/seen-{name}"), "value": "true"}]);
            (
                200,
                review(
                    json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": encode(&patch)}),
                ),
            )
        }
        "http-500" => (500, String::new()),
        other => panic!("no behaviour {other}"),
    }
}

impl TestWebhook {
    fn start() -> TestWebhook {
        let ca_key = rcgen::KeyPair::generate().expect("a key");
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("a CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("names")
            .signed_by(&key, &issuer)
            .expect("a certificate");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("a config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binds");
        let port = listener.local_addr().expect("an address").port();
        let behaviour = Arc::new(Mutex::new(String::from("patch")));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (b, s) = (behaviour.clone(), seen.clone());
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, behaviour, seen) = (acceptor.clone(), b.clone(), s.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let (behaviour, seen) = (behaviour.clone(), seen.clone());
                            async move {
                                let header = |name: &str| {
                                    request
                                        .headers()
                                        .get(name)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or_default()
                                        .to_owned()
                                };
                                let path = request
                                    .uri()
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default();
                                let (content_type, accept) =
                                    (header("content-type"), header("accept"));
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .expect("a body")
                                    .to_bytes();
                                let body: Value =
                                    serde_json::from_slice(&body).expect("a JSON review");
                                let uid = body["request"]["uid"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_owned();
                                seen.lock().expect("seen").push(Seen {
                                    path,
                                    content_type,
                                    accept,
                                    body,
                                });
                                let mut behaviour = behaviour.lock().expect("behaviour").clone();
                                if behaviour == "label-by-path" {
                                    let segment = seen
                                        .lock()
                                        .expect("seen")
                                        .last()
                                        .map(|s| s.path.clone())
                                        .unwrap_or_default();
                                    let name = segment
                                        .trim_start_matches('/')
                                        .split('?')
                                        .next()
                                        .unwrap_or_default()
                                        .to_owned();
                                    behaviour = format!("label:{name}");
                                }
                                if behaviour == "slow" {
                                    tokio::time::sleep(Duration::from_secs(4)).await;
                                }
                                let (status, text) = answer_for(&behaviour, &uid);
                                let mut response =
                                    hyper::Response::new(Full::new(Bytes::from(text)));
                                *response.status_mut() =
                                    hyper::StatusCode::from_u16(status).expect("a status");
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TestWebhook {
            port,
            ca_pem: ca_cert.pem(),
            behaviour,
            seen,
            _runtime: runtime,
        }
    }
}

/// Replaces what this run makes up (the webhook's port, the review's uid) in recorded text.
fn localize(text: &str, port: u16, recorded_uid: &str, uid: &str) -> String {
    text.replace(RECORDED_PORT, &port.to_string())
        .replace(recorded_uid, uid)
}

/// The review without what a server makes up: uid, managed fields, the request's timestamp.
fn comparable_review(review: &Value) -> Value {
    let mut review = review.clone();
    review["request"]["uid"] = json!("<uid>");
    if let Some(metadata) = review["request"]["object"]["metadata"].as_object_mut() {
        metadata.remove("managedFields");
    }
    review
}

fn init_containers_without_restart_policy(pod: &Value) -> Value {
    let mut containers = pod["spec"]["initContainers"].clone();
    for container in containers.as_array_mut().into_iter().flatten() {
        container
            .as_object_mut()
            .expect("a container")
            .remove("restartPolicy");
    }
    containers
}

#[test]
fn the_double_calls_mutating_webhooks_and_treats_each_answer_as_the_api_server_did() {
    let recording = recording();
    let entries = recording["admission"]
        .as_array()
        .expect("admission entries");
    let webhook = TestWebhook::start();
    let api = ApiServer::start();
    api.add_token("admin-token", User::admin("admin").uid("1"));
    let mut connection = Connection::open(&api);
    let headers = vec![
        ("Authorization".to_owned(), "Bearer admin-token".to_owned()),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ];
    let mut checked = 0;
    for entry in entries {
        let name = entry["name"].as_str().expect("a name");
        let request = &entry["request"];
        let path = request["path"].as_str().expect("a path");
        let mut body = request["body"].clone();
        let is_registration = path.ends_with("mutatingwebhookconfigurations");
        if is_registration {
            // The recording's webhook is gone: point the registration at this run's.
            let config_name = body["metadata"]["name"]
                .as_str()
                .expect("a name")
                .to_owned();
            connection.send("DELETE", &format!("{path}/{config_name}"), &headers, None);
            let hook = &mut body["webhooks"][0]["clientConfig"];
            hook["url"] = json!(format!("https://127.0.0.1:{}/mutate", webhook.port));
            hook["caBundle"] =
                json!(base64::engine::general_purpose::STANDARD.encode(&webhook.ca_pem));
        }
        if let Some(behaviour) = name.strip_prefix("create a pod, the webhook answers: ") {
            let behaviour = behaviour.split(' ').next().expect("a behaviour");
            *webhook.behaviour.lock().expect("behaviour") = behaviour.to_owned();
        }
        webhook.seen.lock().expect("seen").clear();
        let answer = connection.send(
            request["method"].as_str().expect("a method"),
            path,
            &headers,
            Some(body.to_string().as_bytes()),
        );
        let expected = &entry["response"];
        assert_eq!(
            answer.status, expected["status"],
            "{name}: status, got {}",
            answer.body
        );

        let saw = webhook.seen.lock().expect("seen").clone();
        let recorded_saw = entry["webhook_saw"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            saw.len(),
            recorded_saw.len(),
            "{name}: calls to the webhook"
        );
        let mut uid = String::new();
        let mut recorded_uid = String::new();
        for (seen, recorded) in saw.iter().zip(&recorded_saw) {
            assert_eq!(seen.path, recorded["path"], "{name}: the path");
            assert_eq!(
                seen.content_type, recorded["headers"]["Content-Type"],
                "{name}"
            );
            assert_eq!(seen.accept, recorded["headers"]["Accept"], "{name}");
            assert_eq!(
                comparable_review(&seen.body),
                comparable_review(&recorded["body"]),
                "{name}: the AdmissionReview sent"
            );
            uid = seen.body["request"]["uid"]
                .as_str()
                .expect("a uid")
                .to_owned();
            recorded_uid = recorded["body"]["request"]["uid"]
                .as_str()
                .expect("a uid")
                .to_owned();
        }

        if answer.status >= 400 {
            let expected_body = localize(
                &expected["body"].to_string(),
                webhook.port,
                &recorded_uid,
                &uid,
            );
            let expected_body: Value = serde_json::from_str(&expected_body).expect("JSON");
            assert_eq!(answer.body, expected_body, "{name}: the Status answered");
        } else if !is_registration {
            assert_eq!(
                init_containers_without_restart_policy(&answer.body),
                init_containers_without_restart_policy(&expected["body"]),
                "{name}: the stored pod's init containers"
            );
            if !expected["body"]["spec"]["initContainers"].is_null() && answer.status == 201 {
                assert_eq!(
                    answer.body["spec"]["initContainers"][0]["restartPolicy"], "Always",
                    "{name}: unlike 1.19, a 1.29+ server keeps a native sidecar's restartPolicy"
                );
            }
            let expected_warnings: Vec<String> = expected["warning_header"]
                .as_str()
                .map(str::to_owned)
                .into_iter()
                .collect();
            assert_eq!(
                answer.warnings, expected_warnings,
                "{name}: Warning headers"
            );
            let pod_name = body["metadata"]["name"].as_str().expect("a name");
            let namespace = path.split('/').nth(4).expect("a namespace");
            let stored = api.pod(namespace, pod_name).is_some();
            assert_eq!(
                stored,
                !path.contains("dryRun"),
                "{name}: stored unless a dry run"
            );
            if stored {
                api.remove_pod(namespace, pod_name);
            }
        }
        checked += 1;
    }
    assert_eq!(checked, entries.len());
}

fn config(name: &str, port: u16, ca_pem: &str, path: &str, extra: Value) -> Value {
    let mut webhook = json!({
        "name": format!("{name}.example.com"),
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "clientConfig": {
            "url": format!("https://127.0.0.1:{port}/{path}"),
            "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
        },
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
    });
    for (key, value) in extra.as_object().into_iter().flatten() {
        webhook[key] = value.clone();
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
           "metadata": {"name": name}, "webhooks": [webhook]})
}

fn admin_connection(api: &ApiServer) -> (Connection, Vec<(String, String)>) {
    api.add_token("admin-token", User::admin("admin"));
    let headers = vec![
        ("Authorization".to_owned(), "Bearer admin-token".to_owned()),
        ("Content-Type".to_owned(), "application/json".to_owned()),
    ];
    (Connection::open(api), headers)
}

const CONFIGS: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

#[test]
fn a_webhook_with_reinvocation_if_needed_sees_what_a_later_webhook_changed_once_more() {
    let webhook = TestWebhook::start();
    *webhook.behaviour.lock().expect("behaviour") = "label-by-path".to_owned();
    let api = ApiServer::start();
    let (mut connection, headers) = admin_connection(&api);
    for (name, path, policy) in [
        ("a-first", "first", "IfNeeded"),
        ("b-second", "second", "Never"),
    ] {
        let body = config(
            name,
            webhook.port,
            &webhook.ca_pem,
            path,
            json!({"reinvocationPolicy": policy}),
        );
        let answer = connection.send("POST", CONFIGS, &headers, Some(body.to_string().as_bytes()));
        assert_eq!(answer.status, 201, "{}", answer.body);
    }
    let pod = json!({"metadata": {"name": "p", "labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let answer = connection.send(
        "POST",
        "/api/v1/namespaces/ns/pods",
        &headers,
        Some(pod.to_string().as_bytes()),
    );
    assert_eq!(answer.status, 201, "{}", answer.body);
    let paths: Vec<String> = webhook
        .seen
        .lock()
        .expect("seen")
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(
        paths,
        [
            "/first?timeout=10s",
            "/second?timeout=10s",
            "/first?timeout=10s"
        ]
    );
    let labels = &answer.body["metadata"]["labels"];
    assert_eq!(labels["seen-first"], "true");
    assert_eq!(labels["seen-second"], "true");
    // The second call of the first webhook saw the second's change.
    let last = webhook
        .seen
        .lock()
        .expect("seen")
        .last()
        .cloned()
        .expect("a call");
    assert_eq!(
        last.body["request"]["object"]["metadata"]["labels"]["seen-second"],
        "true"
    );
}

#[test]
fn namespace_selectors_and_dry_run_side_effects_are_honoured() {
    let webhook = TestWebhook::start();
    let api = ApiServer::start();
    api.set_namespace_labels("opted", &[("inject", "enabled")]);
    let (mut connection, headers) = admin_connection(&api);
    let selector = json!({"namespaceSelector": {"matchLabels": {"inject": "enabled"}}});
    let body = config("ns-only", webhook.port, &webhook.ca_pem, "mutate", selector);
    assert_eq!(
        connection
            .send("POST", CONFIGS, &headers, Some(body.to_string().as_bytes()))
            .status,
        201
    );
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let create = |connection: &mut Connection, namespace: &str, query: &str| {
        connection.send(
            "POST",
            &format!("/api/v1/namespaces/{namespace}/pods{query}"),
            &headers,
            Some(pod.to_string().as_bytes()),
        )
    };
    let other = create(&mut connection, "other", "");
    assert!(
        other.body["spec"].get("initContainers").is_none(),
        "not selected: {}",
        other.body
    );
    let opted = create(&mut connection, "opted", "");
    assert_eq!(opted.body["spec"]["initContainers"][0]["name"], "tracker");

    // A webhook that may have side effects is not called for a dry run: the request is refused.
    let path = format!("{CONFIGS}/ns-only");
    let patch = json!({"webhooks": [{"name": "ns-only.example.com", "sideEffects": "Some"}]});
    let mut patch_headers = headers.clone();
    patch_headers[1].1 = "application/strategic-merge-patch+json".to_owned();
    assert_eq!(
        connection
            .send(
                "PATCH",
                &path,
                &patch_headers,
                Some(patch.to_string().as_bytes())
            )
            .status,
        200
    );
    webhook.seen.lock().expect("seen").clear();
    let dry = create(&mut connection, "opted", "?dryRun=All");
    assert_eq!(dry.status, 400, "{}", dry.body);
    assert_eq!(
        dry.body["message"],
        "admission webhook \"ns-only.example.com\" does not support dry run"
    );
    assert!(webhook.seen.lock().expect("seen").is_empty());
}
