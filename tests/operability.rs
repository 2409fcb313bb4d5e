//! Black-box tests of what operators look at: `/metrics` (parsed back), `/status`, the admin
//! listener, and Kubernetes Events with and without the right to create them.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube_double::{ApiServer, Fault, FaultKind, Rule, Subject, Verb};
use support::{NS, Tracker, api, standalone};

/// Parses the Prometheus text exposition into `name{labels}` → value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("malformed line {line:?}"));
            (
                series.to_owned(),
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("malformed value in {line:?}")),
            )
        })
        .collect()
}

fn metrics(tracker: &Tracker) -> BTreeMap<String, f64> {
    let answer = support::request(
        tracker.admin.expect("an admin address"),
        "GET",
        "/metrics",
        &[],
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.ends_with("# EOF\n"), "a complete exposition");
    parse_metrics(&answer.body)
}

/// `GET /status` on the webhook address, as JSON.
fn status_of(tracker: &Tracker) -> serde_json::Value {
    serde_json::from_str(&tracker.request("GET", "/status", &[]).body).expect("JSON")
}

/// The `tracked_pods` gauge, from `/metrics` on the webhook address.
fn tracked_pods(tracker: &Tracker) -> u64 {
    tracker
        .request("GET", "/metrics", &[])
        .body
        .lines()
        .find_map(|line| {
            line.strip_prefix("pod_webhook_tracker_tracked_pods ")?
                .parse::<u64>()
                .ok()
        })
        .expect("the tracked_pods gauge")
}

fn value(metrics: &BTreeMap<String, f64>, series: &str) -> f64 {
    metrics
        .get(series)
        .copied()
        .unwrap_or_else(|| panic!("{series} missing from {metrics:#?}"))
}

#[test]
fn metrics_count_calls_api_requests_conflicts_folding_and_the_current_count() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api)
        .args(["--admin-address=127.0.0.1:0"])
        .start();
    for _ in 0..3 {
        tracker.increment("pod_name=worker-1").count();
    }
    tracker.decrement("pod_name=worker-1").count();
    assert_eq!(tracker.increment("pod_name=nope").status, 404);
    api.inject(Fault::new(FaultKind::Status(409)).verb(Verb::Patch).next(1));
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 3);

    let m = metrics(&tracker);
    let p = "pod_webhook_tracker_";
    assert_eq!(
        value(
            &m,
            &format!("{p}webhook_calls_total{{endpoint=\"increment\",status=\"200\"}}")
        ),
        4.0
    );
    assert_eq!(
        value(
            &m,
            &format!("{p}webhook_calls_total{{endpoint=\"decrement\",status=\"200\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            &format!("{p}webhook_calls_total{{endpoint=\"increment\",status=\"404\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            &format!("{p}api_requests_total{{verb=\"patch\",outcome=\"409\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            &format!("{p}api_requests_total{{verb=\"patch\",outcome=\"ok\"}}")
        ),
        5.0
    );
    assert_eq!(
        value(
            &m,
            &format!("{p}write_retries_total{{reason=\"conflict\"}}")
        ),
        1.0
    );
    // One round per sequential call, the call for the missing pod included.
    assert_eq!(value(&m, &format!("{p}calls_per_write_count")), 6.0);
    assert_eq!(
        value(
            &m,
            &format!("{p}active_jobs{{namespace=\"{NS}\",pod=\"worker-1\"}}")
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            &format!("{p}webhook_call_duration_seconds_count{{endpoint=\"increment\"}}")
        ),
        5.0
    );
    assert!(
        !tracker.log().contains("/metrics"),
        "scrapes stay out of the request log"
    );
}

#[test]
fn status_shows_mode_pods_counts_readiness_and_the_last_api_error() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api)
        .args(["--admin-address=127.0.0.1:0", "--retry-timeout=200ms"])
        .start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    api.inject(
        Fault::new(FaultKind::Status(500))
            .verb(Verb::Patch)
            .always(),
    );
    assert_eq!(tracker.increment("pod_name=worker-1").status, 503);
    api.clear_faults();
    tracker.wait_ready();
    let answer = tracker.request("GET", "/status", &[]);
    assert_eq!(answer.status, 200);
    let status: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(status["mode"], "standalone");
    assert_eq!(status["label"], "active-jobs");
    assert_eq!(status["ready"], true);
    assert_eq!(status["pods"][0]["pod"], format!("{NS}/worker-1"));
    assert_eq!(status["pods"][0]["count"], 1);
    assert_eq!(status["pods"][0]["label"], "1");
    assert!(
        status["pods"][0]["updated"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{status}"
    );
    let error = status["lastApiError"]["message"]
        .as_str()
        .expect("a last error");
    assert!(error.contains("500"), "{error}");
    let on_admin = support::request(tracker.admin.expect("admin"), "GET", "/status", &[]);
    assert_eq!(on_admin.status, 200, "also on the admin listener");
}

fn events_api() -> ApiServer {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    api
}

#[test]
fn events_record_busy_and_idle_when_the_tracker_may_create_them() {
    let api = events_api();
    api.allow(
        Subject::user("tracker"),
        Rule::new(["create"], ["events"]).namespace(NS),
    );
    let tracker = standalone(&api).args(["--events"]).start();
    tracker.wait_ready();
    // The readiness check's access reviews are creates too: count only the events.
    api.reset_counts();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 2);
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), 1);
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), 0);
    assert!(
        api.wait_for_count(
            Verb::Create,
            kube_double::Outcome::Status(201),
            2,
            Duration::from_secs(10)
        ),
        "two events created: {:?}",
        api.requests()
    );
    let events = api.events();
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(reasons, ["Busy", "Idle"], "{events:?}");
    assert_eq!(events[0]["involvedObject"]["name"], "worker-1");
    assert_eq!(
        events[0]["involvedObject"]["uid"],
        api.pod(NS, "worker-1").expect("the pod")["metadata"]["uid"],
        "kubectl describe pod finds events by the pod's uid"
    );
    assert_eq!(events[0]["involvedObject"]["kind"], "Pod");
    assert!(
        events[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("evictions are refused"))
    );
}

#[test]
fn without_the_right_to_create_events_calls_still_succeed_and_events_turn_off_with_one_warning() {
    let api = events_api();
    let tracker = standalone(&api).args(["--events"]).start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    assert!(
        tracker
            .wait_for_line("events are off", Duration::from_secs(10))
            .is_some(),
        "{}",
        tracker.log()
    );
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), 0);
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    assert!(api.events().is_empty());
    assert_eq!(
        api.count(Verb::Create, kube_double::Outcome::Status(403)),
        1,
        "tried once, then stopped"
    );
    assert_eq!(tracker.log().matches("events are off").count(), 1);
}

#[test]
fn a_standalone_tracker_is_ready_only_once_the_api_server_allows_get_and_patch() {
    let api = ApiServer::start();
    api.add_token(support::TOKEN, kube_double::User::new("tracker"));
    api.allow(
        Subject::user("tracker"),
        Rule::new(["get"], ["pods"]).namespace(NS),
    );
    let tracker = standalone(&api).start();
    let line = tracker
        .wait_for_line("not ready", Duration::from_secs(20))
        .expect("a not-ready line");
    assert!(
        line.contains(&format!("may not patch pods in namespace {NS}")),
        "{line}"
    );
    let ready = tracker.request("GET", "/readyz", &[]);
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body.contains("may not patch"), "{ready:?}");
}

#[test]
fn events_are_off_by_default() {
    let api = events_api();
    api.allow(
        Subject::user("tracker"),
        Rule::new(["create"], ["events"]).namespace(NS),
    );
    let tracker = standalone(&api).start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), 0);
    assert!(api.events().is_empty());
}

#[test]
fn status_lists_running_job_keys_with_ages_and_deadlines_and_metrics_count_released_jobs() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api)
        .args(["--admin-address=127.0.0.1:0"])
        .start();
    assert_eq!(
        tracker
            .increment("pod_name=worker-1&job=build-7&ttl=30m")
            .count(),
        1
    );
    assert_eq!(
        tracker
            // A few seconds: deadlines are whole seconds, and /status must still list it.
            .increment("pod_name=worker-1&job=short&ttl=3s")
            .count(),
        2
    );
    let status: serde_json::Value =
        serde_json::from_str(&tracker.request("GET", "/status", &[]).body).expect("JSON");
    let jobs = status["pods"][0]["jobs"].as_array().expect("a job list");
    let ids: Vec<&str> = jobs.iter().filter_map(|job| job["id"].as_str()).collect();
    assert_eq!(ids, ["build-7", "short"], "{status}");
    assert!(
        jobs[0]["deadline"]
            .as_str()
            .is_some_and(|d| d.ends_with('Z')),
        "{status}"
    );
    assert!(
        jobs[0]["started"]
            .as_str()
            .is_some_and(|d| d.ends_with('Z')),
        "{status}"
    );
    assert!(
        jobs[0]["ageSeconds"].as_u64().is_some_and(|age| age < 60),
        "{status}"
    );
    // Nobody ends `short`: the writer's own timer releases it at its deadline.
    assert!(
        tracker
            .wait_for_line("job short released", Duration::from_secs(20))
            .is_some(),
        "{}",
        tracker.log()
    );
    let m = metrics(&tracker);
    assert_eq!(
        value(
            &m,
            "pod_webhook_tracker_jobs_released_total{reason=\"expired\"}"
        ),
        1.0
    );
    let status: serde_json::Value =
        serde_json::from_str(&tracker.request("GET", "/status", &[]).body).expect("JSON");
    assert_eq!(status["pods"][0]["count"], 1);
    assert_eq!(status["pods"][0]["jobs"][0]["id"], "build-7");
}

#[test]
fn status_lists_busy_pods_only_at_most_a_hundred_and_details_any_pod_on_request() {
    let api = api();
    for i in 0..103 {
        api.create_pod(NS, &format!("worker-{i:03}"), &[]);
    }
    let tracker = standalone(&api).start();
    for i in 0..102 {
        assert_eq!(
            tracker
                .increment(&format!("pod_name=worker-{i:03}"))
                .count(),
            1
        );
    }
    // worker-101 goes back to idle; worker-102 was never called.
    assert_eq!(tracker.decrement("pod_name=worker-101").count(), 0);
    let status = |query: &str| -> serde_json::Value {
        let answer = tracker.request("GET", &format!("/status{query}"), &[]);
        assert_eq!(answer.status, 200);
        serde_json::from_str(&answer.body).expect("JSON")
    };
    let all = status("");
    assert_eq!(all["trackedPods"], 102);
    assert_eq!(all["busyPods"], 101);
    assert_eq!(all["pods"].as_array().map(Vec::len), Some(100));
    assert_eq!(all["podsTruncated"], true);
    assert_eq!(all["pods"][0]["pod"], format!("{NS}/worker-000"));
    let listed = all["pods"].to_string();
    assert!(!listed.contains("worker-101"), "an idle pod is not listed");
    assert!(
        tracker.request("GET", "/status", &[]).body.len() < 20_000,
        "a few KB"
    );
    let idle = status(&format!("?pod={NS}/worker-101"));
    assert_eq!(idle["pods"][0]["count"], 0, "{idle}");
    assert_eq!(idle["podsTruncated"], false);
    assert_eq!(status("?pod=elsewhere/none")["pods"], serde_json::json!([]));
}

#[test]
fn a_deleted_pod_is_forgotten_by_the_standalone_service_at_its_next_call() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    let status = || status_of(&tracker);
    assert_eq!(status()["trackedPods"], 1);
    assert!(
        tracker
            .request("GET", "/metrics", &[])
            .body
            .contains("pod=\"worker-1\"")
    );
    assert!(api.remove_pod(NS, "worker-1"));
    assert_eq!(tracker.increment("pod_name=worker-1").status, 404);
    assert_eq!(status()["trackedPods"], 0, "{}", status());
    assert!(
        !tracker
            .request("GET", "/metrics", &[])
            .body
            .contains("pod=\"worker-1\"")
    );
}

#[test]
fn a_standalone_service_forgets_pods_nobody_called_for_forget_idle_pods_after() {
    let api = api();
    for name in ["worker-1", "worker-2"] {
        api.create_pod(NS, name, &[]);
    }
    let tracker = standalone(&api)
        .args(["--forget-idle-pods-after", "1s"])
        .start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    assert_eq!(tracker.increment("pod_name=worker-2").count(), 1);
    let status = || status_of(&tracker);
    assert_eq!(status()["trackedPods"], 2);
    let tracked = || tracked_pods(&tracker);
    assert_eq!(tracked(), 2);
    let waited = std::time::Instant::now();
    while status()["trackedPods"] != 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "forgotten soon after 1s: {}",
            status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !tracker
            .request("GET", "/metrics", &[])
            .body
            .contains("active_jobs{"),
        "no series left"
    );
    assert_eq!(tracked(), 0, "no slot left");
    // Forgetting is the tracker's memory only: the pods keep their counts, and the next
    // call reads them again.
    assert_eq!(
        api.labels(NS, "worker-1")
            .and_then(|labels| labels.get("active-jobs").cloned())
            .as_deref(),
        Some("1")
    );
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 2);
    assert_eq!(status()["trackedPods"], 1);
}

#[test]
fn a_sweep_forgets_the_tracked_pods_it_no_longer_lists() {
    let api = api();
    api.allow(
        Subject::user("tracker"),
        Rule::new(["list"], ["pods"]).namespace(NS),
    );
    for name in ["worker-1", "worker-2", "worker-3"] {
        api.create_pod(NS, name, &[]);
    }
    let tracker = standalone(&api)
        .args(["--sweep-interval=100ms", "--sweep-page-size=2"])
        .start();
    for name in ["worker-1", "worker-2", "worker-3"] {
        assert_eq!(tracker.increment(&format!("pod_name={name}")).count(), 1);
    }
    let status = || status_of(&tracker);
    assert_eq!(status()["trackedPods"], 3);
    // Deleted behind the tracker's back, and nobody calls about it again.
    assert!(api.remove_pod(NS, "worker-2"));
    let waited = std::time::Instant::now();
    while status()["trackedPods"] != 2 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the sweep forgot worker-2: {}\n{}",
            status(),
            tracker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = tracker.request("GET", "/metrics", &[]).body;
    assert!(!metrics.contains("pod=\"worker-2\""), "{metrics}");
    assert!(metrics.contains("pod=\"worker-1\""), "{metrics}");
    // The pods it still lists stay tracked, sweep after sweep.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(status()["trackedPods"], 2, "{}", status());
    assert_eq!(tracker.increment("pod_name=worker-3").count(), 2);
}

#[test]
fn calls_for_pods_that_do_not_exist_or_may_not_be_touched_leave_nothing_tracked() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    api.create_pod("elsewhere", "worker-1", &[]);
    let tracker = standalone(&api).start();
    let tracked = || tracked_pods(&tracker);
    for i in 0..50 {
        assert_eq!(
            tracker
                .increment(&format!("pod_name=no-such-pod-{i}"))
                .status,
            404
        );
    }
    // The tracker has no rights in this namespace: the API server refuses it (502), and
    // nothing is kept either.
    let refused = tracker.increment("pod_name=worker-1&namespace=elsewhere");
    assert_eq!(refused.status, 502, "{refused:?}");
    assert_eq!(tracked(), 0, "no slot kept for a pod never counted");
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    assert_eq!(tracked(), 1);
}
