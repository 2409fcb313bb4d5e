//! Replays the recorded TokenRequest and TokenReview exchanges of a real kube-apiserver
//! (`tests/recorded/kube-apiserver-admission-and-tokens.json`, entries `tokens`) against the
//! double, in order. The recording masks tokens as `<jwt>`: the replay puts in the token the
//! double issued (or that token with a broken signature, for the entry that has one), maps the
//! recorded pod uids to the double's, and compares status codes and bodies: Status messages
//! exactly, TokenReview verdicts exactly.
//!
//! Time is scaled: the recording shows the API server's 10 s cache of successful reviews (a
//! token of a deleted pod still accepted 1 s after the deletion, refused 12 s after). The
//! replay runs the double with a 1 s cache and looks 0 s and 1.2 s after the deletion.

mod client;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use client::Connection;
use kube_double::{ApiServer, NewPod, User};
use serde_json::{Value, json};

const NAMESPACE: &str = "admission-transcripts-27831";

fn recording() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/recorded/kube-apiserver-admission-and-tokens.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the recording is JSON")
}

/// Replaces every recorded uid in `value` by the double's.
fn map_uids(value: &Value, uids: &HashMap<String, String>) -> Value {
    let mut text = value.to_string();
    for (recorded, ours) in uids {
        text = text.replace(recorded, ours);
    }
    serde_json::from_str(&text).expect("still JSON")
}

/// What a server makes up, left out of comparisons.
fn comparable(mut body: Value) -> Value {
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    if let Some(status) = body.get_mut("status").and_then(Value::as_object_mut) {
        for field in ["token", "expirationTimestamp"] {
            if status.contains_key(field) {
                status.insert(field.to_owned(), json!("<made up>"));
            }
        }
    }
    body
}

#[test]
fn the_double_issues_and_reviews_pod_bound_tokens_as_the_api_server_did() {
    let recording = recording();
    let entries = recording["tokens"].as_array().expect("token entries");
    let api = ApiServer::builder()
        .token_review_cache(Duration::from_secs(1))
        .start();
    api.add_token("admin-token", User::admin("admin"));
    api.add_token("nobody-token", User::new("nobody"));
    let job_1 = api.add_pod(NewPod::new(NAMESPACE, "job-1").service_account("worker"));
    let job_2 = api.add_pod(NewPod::new(NAMESPACE, "job-2").service_account("other"));
    let mut uids = HashMap::new();
    let recorded_uid = |name: &str| {
        entries
            .iter()
            .find_map(|e| {
                let bound = &e["request"]["body"]["spec"]["boundObjectRef"];
                (bound["name"] == name).then(|| bound["uid"].as_str().expect("a uid").to_owned())
            })
            .expect("a recorded uid")
    };
    uids.insert(
        recorded_uid("job-1"),
        job_1["metadata"]["uid"].as_str().expect("uid").to_owned(),
    );
    uids.insert(
        recorded_uid("job-2"),
        job_2["metadata"]["uid"].as_str().expect("uid").to_owned(),
    );

    let mut connection = Connection::open(&api);
    let mut token = String::new();
    let mut account_uid = None;
    let mut checked = 0;
    for entry in entries {
        let name = entry["name"].as_str().expect("a name");
        let request = &entry["request"];
        let path = request["path"].as_str().expect("a path");
        let expected = &entry["response"];
        let mut body = map_uids(&request["body"], &uids);
        let bearer = match request["as"].as_str().expect("as") {
            "admin" => "admin-token".to_owned(),
            "nobody" => "nobody-token".to_owned(),
            "a pod-bound token" => token.clone(),
            other => panic!("{name}: unknown caller {other}"),
        };
        if body["spec"]["token"] == "<jwt>" {
            body["spec"]["token"] = json!(if name.contains("bad signature") {
                // The same claims, another server's signature.
                let (signed, _) = token.rsplit_once('.').expect("a JWT");
                format!("{signed}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            } else {
                token.clone()
            });
        }
        if name.contains("re-created with the same name") {
            // The recorded DELETE removed it; a new pod takes the name.
            assert!(api.pod(NAMESPACE, "job-1").is_none());
            let again = api.add_pod(NewPod::new(NAMESPACE, "job-1").service_account("worker"));
            let recorded_new = expected["body"]["status"]["error"]
                .as_str()
                .and_then(|e| e.split("Pod UID (").nth(1))
                .and_then(|rest| rest.split(')').next())
                .expect("the new uid in the message")
                .to_owned();
            uids.insert(
                recorded_new,
                again["metadata"]["uid"].as_str().expect("uid").to_owned(),
            );
        }
        if name.ends_with("12 s later") {
            std::thread::sleep(Duration::from_millis(1200));
        }
        let headers = vec![
            ("Authorization".to_owned(), format!("Bearer {bearer}")),
            ("Content-Type".to_owned(), "application/json".to_owned()),
        ];
        let sent = (!body.is_null()).then(|| body.to_string());
        let answer = connection.send(
            request["method"].as_str().expect("a method"),
            path,
            &headers,
            sent.as_deref().map(str::as_bytes),
        );
        assert_eq!(answer.status, expected["status"], "{name}: {}", answer.body);
        if answer.body["status"]["token"].is_string() {
            token = answer.body["status"]["token"]
                .as_str()
                .expect("a token")
                .to_owned();
            assert_eq!(token.split('.').count(), 3, "{name}: a JWT");
        }
        let mut expected_body = map_uids(&expected["body"], &uids);
        if let Some(recorded) = expected_body["status"]["user"]["uid"].as_str() {
            // The account's uid is the double's own, the same on every review.
            let ours = answer.body["status"]["user"]["uid"]
                .as_str()
                .expect("a uid")
                .to_owned();
            assert_eq!(account_uid.get_or_insert(ours.clone()), &ours, "{name}");
            let replaced = expected_body.to_string().replace(recorded, &ours);
            expected_body = serde_json::from_str(&replaced).expect("JSON");
        }
        if expected_body["spec"]["token"] == "<jwt>" {
            expected_body["spec"]["token"] = body["spec"]["token"].clone();
        }
        if expected["body"]["kind"] == "Pod" {
            // The deletion: the pod as it was (compared by the pod transcripts elsewhere).
            assert_eq!(answer.body["metadata"]["name"], "job-1", "{name}");
        } else {
            assert_eq!(
                comparable(answer.body.clone()),
                comparable(expected_body),
                "{name}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, entries.len());
}

#[test]
fn an_expired_token_is_refused_and_audiences_are_intersected() {
    let api = ApiServer::start();
    api.add_token("admin-token", User::admin("admin"));
    api.add_pod(NewPod::new("ns", "p").service_account("sa"));
    let expired = api.issue_token("ns", "sa", "p", &["a"], Duration::ZERO);
    let two = api.issue_token("ns", "sa", "p", &["a", "b"], Duration::from_secs(600));
    let mut connection = Connection::open(&api);
    let review = |connection: &mut Connection, token: &str, audiences: &[&str]| {
        let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                          "spec": {"token": token, "audiences": audiences}});
        let headers = vec![("Authorization".to_owned(), "Bearer admin-token".to_owned())];
        connection
            .send(
                "POST",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                &headers,
                Some(body.to_string().as_bytes()),
            )
            .body["status"]
            .clone()
    };
    let status = review(&mut connection, &expired, &["a"]);
    assert_eq!(
        status["error"], "[invalid bearer token, Token has expired.]",
        "{status}"
    );
    let status = review(&mut connection, &two, &["b", "c"]);
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(status["audiences"], json!(["b"]));
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["p"])
    );
}
