//! Black-box tests of the standalone (original) behaviour: every row of the HTTP API table,
//! run against the compiled binary and the API test double.

mod support;

use std::time::Duration;

use kube_double::{Fault, FaultKind, Verb};
use support::{Connection, NS, Tracker, api, standalone};

#[test]
fn increments_and_decrements_answer_the_new_count_and_keep_the_label_in_step() {
    let api = api();
    api.create_pod(NS, "worker-1", &[("app", "worker")]);
    let tracker = standalone(&api).start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 2);
    assert_eq!(label(&api, "worker-1"), Some("2".to_owned()));
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), 1);
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), 0);
    assert_eq!(
        label(&api, "worker-1"),
        None,
        "the label is removed at zero"
    );
    assert_eq!(
        tracker.decrement("pod_name=worker-1").count(),
        0,
        "a count never goes below zero by default"
    );
    assert_eq!(label(&api, "worker-1"), None);
    let answer = tracker.increment("pod_name=worker-1");
    assert_eq!(answer.body, "1", "the body is the bare count");
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
}

#[test]
fn other_methods_on_the_counting_paths_answer_405_with_allow_post() {
    let api = api();
    let tracker = standalone(&api).start();
    for method in ["GET", "PUT", "DELETE"] {
        let answer = tracker.request(method, "/increment?pod_name=worker-1", &[]);
        assert_eq!(answer.status, 405, "{method}");
        assert_eq!(answer.header("allow"), Some("POST"), "{method}");
    }
}

#[test]
fn a_request_body_is_ignored_and_the_connection_serves_the_next_call() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).start();
    let mut connection = Connection::open(tracker.address).expect("connects");
    let with_body = b"POST /increment?pod_name=worker-1 HTTP/1.1\r\nHost: tracker\r\n\
        Content-Type: application/json\r\nContent-Length: 18\r\n\r\n{\"job\": \"ignored\"}";
    let first = connection.send_raw(with_body).expect("an answer");
    assert_eq!(first.count(), 1, "{first:?}");
    let second = connection
        .send("POST", "/increment?pod_name=worker-1", &[])
        .expect("the same connection serves the next call");
    assert_eq!(second.count(), 2);
    assert_eq!(label(&api, "worker-1"), Some("2".to_owned()));
}

#[test]
fn an_unknown_path_answers_404() {
    let api = api();
    let tracker = standalone(&api).start();
    assert_eq!(
        tracker
            .request("POST", "/incr?pod_name=worker-1", &[])
            .status,
        404
    );
    assert_eq!(tracker.request("GET", "/", &[]).status, 404);
}

#[test]
fn a_missing_or_empty_pod_name_answers_400() {
    let api = api();
    let tracker = standalone(&api).start();
    for query in ["", "pod_name=", "namespace=jobs"] {
        let answer = tracker.increment(query);
        assert_eq!(answer.status, 400, "{query}: {answer:?}");
        assert!(answer.body.contains("pod_name"), "{answer:?}");
    }
}

#[test]
fn an_invalid_pod_name_answers_400_without_calling_the_api() {
    let api = api();
    let tracker = standalone(&api).start();
    tracker.wait_ready();
    api.reset_counts();
    for name in ["Bad_Name", "x%2Fy", "-leading-dash", &"a".repeat(254)] {
        let answer = tracker.increment(&format!("pod_name={name}"));
        assert_eq!(answer.status, 400, "{name}: {answer:?}");
        assert!(answer.body.contains("invalid pod_name"), "{answer:?}");
    }
    assert_eq!(api.requests().len(), 0, "no API call for an invalid name");
}

#[test]
fn a_missing_pod_and_a_pod_outside_the_selector_get_the_same_404() {
    let api = api();
    api.create_pod(NS, "other-app", &[("app", "web")]);
    let tracker = standalone(&api)
        .args(["--label-selector=app=worker"])
        .start();
    let missing = tracker.increment("pod_name=does-not-exist");
    let outside = tracker.increment("pod_name=other-app");
    assert_eq!(missing.status, 404, "{missing:?}");
    assert_eq!(outside.status, 404, "{outside:?}");
    assert_eq!(
        missing.body.replace("does-not-exist", "X"),
        outside.body.replace("other-app", "X"),
        "the two answers must not reveal which case it is"
    );
    assert_eq!(
        api.labels(NS, "other-app")
            .and_then(|l| l.get("active-jobs").cloned()),
        None,
        "nothing written"
    );
}

#[test]
fn a_label_that_is_not_a_count_answers_409_naming_pod_label_and_value_and_writes_nothing() {
    let api = api();
    api.create_pod(NS, "worker-1", &[("active-jobs", "abc")]);
    let tracker = standalone(&api).start();
    let answer = tracker.increment("pod_name=worker-1");
    assert_eq!(answer.status, 409, "{answer:?}");
    for part in ["jobs/worker-1", "active-jobs", "abc"] {
        assert!(answer.body.contains(part), "{part} missing from {answer:?}");
    }
    assert_eq!(label(&api, "worker-1"), Some("abc".to_owned()));
}

#[test]
fn refused_rights_answer_502_naming_the_verb_and_resource() {
    let api = kube_double::ApiServer::start();
    api.add_token(support::TOKEN, kube_double::User::new("tracker"));
    api.allow(
        kube_double::Subject::user("tracker"),
        kube_double::Rule::new(["get"], ["pods"]).namespace(NS),
    );
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).start();
    let answer = tracker.increment("pod_name=worker-1");
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(
        answer.body.contains("patch") && answer.body.contains("pods"),
        "{answer:?}"
    );
    assert_eq!(label(&api, "worker-1"), None);
}

#[test]
fn an_unknown_token_answers_502() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = Tracker::builder()
        .args([
            format!("--kube-server={}", api.url()),
            "--kube-token=wrong".to_owned(),
            format!("--namespace={NS}"),
        ])
        .start();
    let answer = tracker.increment("pod_name=worker-1");
    assert_eq!(answer.status, 502, "{answer:?}");
    assert!(answer.body.contains("Unauthorized"), "{answer:?}");
}

#[test]
fn an_unreachable_api_server_answers_503_with_retry_after_and_nothing_is_written() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).args(["--retry-timeout=1s"]).start();
    api.go_away();
    let answer = tracker.increment("pod_name=worker-1");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.header("retry-after").is_some(), "{answer:?}");
    api.come_back();
    assert_eq!(label(&api, "worker-1"), None);
    assert_eq!(
        tracker.increment("pod_name=worker-1").count(),
        1,
        "works again once the server is back"
    );
}

#[test]
fn server_errors_are_retried_until_they_pass() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).start();
    api.inject(Fault::new(FaultKind::Status(500)).verb(Verb::Patch).next(2));
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    assert_eq!(label(&api, "worker-1"), Some("1".to_owned()));
}

#[test]
fn conflicts_that_never_end_answer_503() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).args(["--retry-timeout=500ms"]).start();
    api.inject(
        Fault::new(FaultKind::Status(409))
            .verb(Verb::Patch)
            .always(),
    );
    let answer = tracker.increment("pod_name=worker-1");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.header("retry-after").is_some());
    api.clear_faults();
    assert_eq!(label(&api, "worker-1"), None);
}

#[test]
fn a_write_whose_answer_is_lost_is_recognised_and_not_applied_twice() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    api.inject(
        Fault::new(FaultKind::ApplyThenDrop)
            .verb(Verb::Patch)
            .next(1),
    );
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 2);
    assert_eq!(
        label(&api, "worker-1"),
        Some("2".to_owned()),
        "applied exactly once"
    );
    // The tracker logs it before answering; the log reaches the test through a pipe, so wait.
    assert!(
        tracker
            .wait_for_line(
                "was stored although its answer was lost",
                Duration::from_secs(10)
            )
            .is_some(),
        "{}",
        tracker.log()
    );
}

#[test]
fn a_write_whose_outcome_stays_unknown_answers_504() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api)
        .args(["--kube-request-timeout=300ms", "--retry-timeout=1s"])
        .start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    api.inject(Fault::new(FaultKind::Hang).verb(Verb::Patch).always());
    api.inject(Fault::new(FaultKind::Hang).verb(Verb::Get).always());
    let answer = tracker.increment("pod_name=worker-1");
    assert_eq!(answer.status, 504, "{answer:?}");
    assert!(answer.body.contains("may or may not"), "{answer:?}");
}

#[test]
fn errors_are_json_when_the_client_accepts_json() {
    let api = api();
    let tracker = standalone(&api).start();
    let answer = tracker.request(
        "POST",
        "/increment?pod_name=nope",
        &[("Accept", "application/json")],
    );
    assert_eq!(answer.status, 404);
    let body: serde_json::Value = serde_json::from_str(&answer.body).expect("a JSON body");
    assert_eq!(body["status"], 404);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("jobs/nope")),
        "{body}"
    );
}

#[test]
fn negative_counts_are_stored_in_a_label_valid_encoding_and_answered_as_integers() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).args(["--allow-negative"]).start();
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), -1);
    assert_eq!(label(&api, "worker-1"), Some("neg1".to_owned()));
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), -2);
    assert_eq!(tracker.increment("pod_name=worker-1").count(), -1);
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 0);
    assert_eq!(label(&api, "worker-1"), None);
}

#[test]
fn remove_on_zero_false_writes_zero() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).args(["--remove-on-zero=false"]).start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), 0);
    assert_eq!(label(&api, "worker-1"), Some("0".to_owned()));
}

#[test]
fn prefixed_label_keys_and_pods_without_labels_work() {
    let api = api();
    api.create_pod(NS, "bare", &[]);
    let tracker = standalone(&api)
        .args(["--label=example.com/active-jobs"])
        .start();
    assert_eq!(tracker.increment("pod_name=bare").count(), 1);
    assert_eq!(tracker.increment("pod_name=bare").count(), 2);
    let labels = api.labels(NS, "bare").expect("pod exists");
    assert_eq!(
        labels.get("example.com/active-jobs").map(String::as_str),
        Some("2")
    );
    assert_eq!(tracker.decrement("pod_name=bare").count(), 1);
}

#[test]
fn an_overflowing_count_answers_409_and_writes_nothing() {
    let api = api();
    api.create_pod(NS, "worker-1", &[("active-jobs", &i64::MAX.to_string())]);
    let tracker = standalone(&api).start();
    let answer = tracker.increment("pod_name=worker-1");
    assert_eq!(answer.status, 409, "{answer:?}");
    assert!(answer.body.contains("64-bit"), "{answer:?}");
    assert_eq!(label(&api, "worker-1"), Some(i64::MAX.to_string()));
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), i64::MAX - 1);
}

#[test]
fn repeated_calls_cost_one_api_request_each_once_the_pod_is_known() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).start();
    tracker.wait_ready();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    api.reset_counts();
    for expected in 2..=21 {
        assert_eq!(tracker.increment("pod_name=worker-1").count(), expected);
    }
    assert_eq!(
        api.requests().len(),
        20,
        "one PATCH per call, no reads: {:?}",
        api.requests()
    );
}

#[test]
fn an_external_label_edit_is_respected() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    api.set_label(NS, "worker-1", "active-jobs", Some("5"));
    assert_eq!(
        tracker.increment("pod_name=worker-1").count(),
        6,
        "the tracker's cached view was stale; the guard caught it"
    );
}

fn label(api: &kube_double::ApiServer, pod: &str) -> Option<String> {
    api.labels(NS, pod)
        .expect("the pod exists")
        .get("active-jobs")
        .cloned()
}

#[test]
fn a_refusal_is_not_repeated_from_a_stale_view_once_another_writer_fixed_the_pod() {
    let api = api();
    api.create_pod(NS, "worker-1", &[("active-jobs", "abc")]);
    api.create_pod(NS, "worker-2", &[]);
    let tracker = standalone(&api)
        .args(["--label-selector=app=worker"])
        .start();
    assert_eq!(
        tracker.increment("pod_name=worker-1").status,
        404,
        "outside the selector"
    );
    api.set_label(NS, "worker-1", "app", Some("worker"));
    assert_eq!(
        tracker.increment("pod_name=worker-1").status,
        409,
        "now inside, but not a count"
    );
    api.set_label(NS, "worker-1", "active-jobs", Some("4"));
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 5);
}

#[test]
fn server_errors_that_never_end_answer_503_because_a_read_proves_nothing_was_stored() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).args(["--retry-timeout=300ms"]).start();
    api.inject(
        Fault::new(FaultKind::Status(503))
            .verb(Verb::Patch)
            .always(),
    );
    let answer = tracker.increment("pod_name=worker-1");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.header("retry-after").is_some());
    assert!(answer.body.contains("nothing was written"), "{answer:?}");
    assert_eq!(label(&api, "worker-1"), None);
}
