//! Black-box tests of an API server restart (the double's restart fault): a write committed as
//! the server died is answered as stored, the refusals of the restarted server while its caches
//! sync are retried, a 429 waits for its `Retry-After`, and only a write whose outcome stays
//! unknown is answered 504, with how to find out.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use kube_double::{ApiServer, Fault, Outcome, Restart, Verb};
use support::{NS, TOKEN, Tracker, TrackerBuilder, api, standalone};

const LIMIT: Duration = Duration::from_secs(30);

fn label(api: &ApiServer, pod: &str) -> Option<String> {
    api.labels(NS, pod)
        .and_then(|labels| labels.get("active-jobs").cloned())
}

fn sidecar(api: &ApiServer, pod: &str) -> TrackerBuilder {
    Tracker::builder()
        .args([
            format!("--kube-server={}", api.url()),
            format!("--kube-token={TOKEN}"),
        ])
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", NS)
}

/// The tracker's `write_retries_total` series by reason.
fn retries(tracker: &Tracker) -> BTreeMap<String, f64> {
    let answer = tracker.request("GET", "/metrics", &[]);
    assert_eq!(answer.status, 200, "{answer:?}");
    answer
        .body
        .lines()
        .filter_map(|line| line.strip_prefix("pod_webhook_tracker_write_retries_total{reason=\""))
        .filter_map(|rest| rest.split_once("\"} "))
        .map(|(reason, value)| (reason.to_owned(), value.trim().parse().expect("a number")))
        .collect()
}

#[test]
fn a_write_committed_as_the_server_died_is_answered_as_stored_in_a_standalone_tracker() {
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = standalone(&api).start();
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    api.restart(
        Restart::new()
            .down_for(Duration::from_millis(300))
            .forbidden_for(Duration::from_millis(500)),
    );
    let answer = tracker.increment("pod_name=w1");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.count(), 2, "the cut write is this call's");
    assert!(api.wait_restarted(LIMIT));
    assert_eq!(label(&api, "w1").as_deref(), Some("2"), "stored once");
    assert_eq!(
        api.count(Verb::Patch, Outcome::Dropped),
        1,
        "its answer was lost"
    );
}

#[test]
fn a_sidecar_answers_a_decrement_committed_as_the_server_died_as_stored() {
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = sidecar(&api, "w1").start();
    assert_eq!(tracker.increment("").count(), 1);
    assert_eq!(tracker.increment("").count(), 2);
    api.restart(Restart::new().down_for(Duration::from_millis(200)));
    let answer = tracker.decrement("");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.count(), 1);
    assert!(api.wait_restarted(LIMIT));
    assert_eq!(label(&api, "w1").as_deref(), Some("1"));
}

#[test]
fn the_forbidden_answers_of_a_restarted_server_are_retried_and_counted_not_answered_502() {
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = standalone(&api).start();
    // The tracker was allowed to get and patch this pod before the restart.
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    api.restart(
        Restart::new()
            .now()
            .down_for(Duration::from_millis(200))
            .forbidden_for(Duration::from_millis(1500)),
    );
    // Calls while it is down and refusing: each is retried until the server answers again.
    let started = Instant::now();
    let answer = tracker.increment("pod_name=w1");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.count(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "within --retry-timeout"
    );
    assert!(
        api.count(Verb::Get, Outcome::WarmingUp(403))
            + api.count(Verb::Patch, Outcome::WarmingUp(403))
            > 0,
        "the tracker met the warm-up refusals"
    );
    assert!(
        retries(&tracker).get("recovering").copied().unwrap_or(0.0) >= 1.0,
        "retries counted: {:?}",
        retries(&tracker)
    );
    assert_eq!(label(&api, "w1").as_deref(), Some("2"));
}

#[test]
fn a_warm_up_refusal_that_outlasts_the_call_is_answered_503_nothing_written_not_502() {
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = standalone(&api).args(["--retry-timeout=1s"]).start();
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    api.restart(
        Restart::new()
            .now()
            .down_for(Duration::from_millis(100))
            .forbidden_for(Duration::from_secs(4)),
    );
    // Wait until it listens again and refuses.
    let started = Instant::now();
    while api.count(Verb::Get, Outcome::WarmingUp(403)) == 0 {
        let _ = tracker.request("GET", "/wait-idle?pod_name=w1&timeout=0s", &[]);
        assert!(started.elapsed() < LIMIT, "the server came back refusing");
    }
    let answer = tracker.increment("pod_name=w1");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.header("retry-after").is_some(), "{answer:?}");
    assert!(answer.body.contains("nothing was written"), "{answer:?}");
    assert!(answer.body.contains("recovers"), "{answer:?}");
    assert!(api.wait_restarted(LIMIT));
    assert_eq!(label(&api, "w1").as_deref(), Some("1"), "nothing stored");
    assert_eq!(
        tracker.increment("pod_name=w1").count(),
        2,
        "and then it works"
    );
}

#[test]
fn a_refusal_with_no_failure_before_it_is_answered_at_once_as_502() {
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = standalone(&api).start();
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    api.clear_rules();
    let started = Instant::now();
    let answer = tracker.increment("pod_name=w1");
    assert_eq!(answer.status, 502, "{answer:?}");
    // The kept view saves the read: the write is what is refused.
    assert!(answer.body.contains("cannot patch pods"), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a real refusal is not retried"
    );
}

#[test]
fn unauthorized_answers_while_the_authenticator_warms_up_are_retried_too() {
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = sidecar(&api, "w1").start();
    assert_eq!(tracker.increment("").count(), 1);
    api.restart(
        Restart::new()
            .now()
            .down_for(Duration::from_millis(100))
            .unauthorized_for(Duration::from_millis(800))
            .forbidden_for(Duration::ZERO),
    );
    let answer = tracker.increment("");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.count(), 2);
    assert!(
        api.count(Verb::Get, Outcome::WarmingUp(401))
            + api.count(Verb::Patch, Outcome::WarmingUp(401))
            > 0
    );
}

#[test]
fn a_429_is_retried_after_the_servers_retry_after() {
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = standalone(&api).start();
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    api.restart(
        Restart::new()
            .now()
            .down_for(Duration::from_millis(50))
            .forbidden_for(Duration::ZERO)
            .throttled_for(Duration::from_millis(300), 1),
    );
    let answer = tracker.increment("pod_name=w1");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.count(), 2);
    let throttled = api.count(Verb::Get, Outcome::WarmingUp(429))
        + api.count(Verb::Patch, Outcome::WarmingUp(429));
    assert!(throttled >= 1, "it met the 429");
    assert!(
        throttled <= 2,
        "it waited Retry-After (1 s) before trying again, instead of hammering: {throttled} requests throttled"
    );
    assert_eq!(
        retries(&tracker).get("throttled").copied(),
        Some(throttled as f64)
    );
}

#[test]
fn a_write_whose_outcome_stays_unknown_is_answered_504_with_how_to_find_out() {
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = standalone(&api)
        .args(["--retry-timeout=1s", "--kube-request-timeout=1s"])
        .start();
    assert_eq!(tracker.increment("pod_name=w1&job=build-1").count(), 1);
    // The write is applied and its answer lost, and from then on the tracker may not read the
    // pod: nothing can tell whether it landed.
    api.inject(Fault::apply_then_drop().verb(Verb::Patch));
    api.inject(Fault::status(403).verb(Verb::Get).always());
    let started = Instant::now();
    let answer = tracker.increment("pod_name=w1&job=build-2");
    assert_eq!(answer.status, 504, "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered within --retry-timeout and one request timeout: {:?}",
        started.elapsed()
    );
    for words in [
        "outcome is unknown",
        "may or may not have been stored",
        "GET /status?pod=jobs/w1",
        "same job key",
    ] {
        assert!(answer.body.contains(words), "{words:?} in {answer:?}");
    }
    assert_eq!(label(&api, "w1").as_deref(), Some("2"), "it had landed");
    api.clear_faults();
    // Repeating the call with its key is safe: it is counted once.
    assert_eq!(tracker.increment("pod_name=w1&job=build-2").count(), 2);
    assert_eq!(label(&api, "w1").as_deref(), Some("2"));
}

#[test]
fn a_renew_and_a_decrement_across_a_restart_are_answered_as_stored() {
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = standalone(&api).start();
    assert_eq!(tracker.increment("pod_name=w1&job=a&ttl=1h").count(), 1);
    api.restart(Restart::new().down_for(Duration::from_millis(200)));
    let renewed = tracker.request("POST", "/renew?pod_name=w1&job=a&ttl=2h", &[]);
    assert_eq!(renewed.status, 200, "{renewed:?}");
    assert!(api.wait_restarted(LIMIT));
    api.restart(Restart::new().down_for(Duration::from_millis(200)));
    let ended = tracker.decrement("pod_name=w1&job=a");
    assert_eq!(ended.status, 200, "{ended:?}");
    assert_eq!(ended.count(), 0);
    assert!(api.wait_restarted(LIMIT));
    assert_eq!(label(&api, "w1"), None);
    assert_eq!(api.restarts(), 2);
}

#[test]
fn run_counts_its_job_once_and_releases_it_once_across_restarts() {
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = sidecar(&api, "w1").start();
    // Both of run's calls meet a restart that commits their write and cuts the answer.
    api.restart(Restart::new().down_for(Duration::from_millis(300)));
    api.restart(Restart::new().down_for(Duration::from_millis(300)));
    let output = Command::new(env!("CARGO_BIN_EXE_pod-webhook-tracker"))
        .args([
            "run",
            &format!("--url=http://{}", tracker.address),
            "--job=exactly-once",
            "--",
            "sh",
            "-c",
            "exit 7",
        ])
        .output()
        .expect("run runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("increment: ok (active jobs in this pod: 1)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("decrement: ok (active jobs in this pod: 0)"),
        "{stderr}"
    );
    assert!(api.wait_restarted(LIMIT));
    assert_eq!(api.restarts(), 2);
    assert_eq!(label(&api, "w1"), None, "released exactly once");
    let jobs = api
        .annotations(NS, "w1")
        .and_then(|a| a.get("active-jobs-jobs").cloned());
    assert!(
        jobs.as_ref()
            .is_none_or(|jobs| !jobs.contains("exactly-once")),
        "the job is not left behind: {jobs:?}"
    );
}
