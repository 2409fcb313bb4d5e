//! Black-box tests of keyed jobs, expiry, drain awareness and active annotations, against the
//! compiled binary and the API test double.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use kube_double::{ApiServer, Fault, FaultKind, Outcome, Rule, Subject, Verb};
use support::{Connection, NS, TOKEN, Tracker, TrackerBuilder, api, standalone};

const JOBS: &str = "active-jobs-jobs";

fn label(api: &ApiServer, pod: &str) -> Option<String> {
    api.labels(NS, pod)
        .expect("the pod exists")
        .get("active-jobs")
        .cloned()
}

fn annotation(api: &ApiServer, pod: &str, key: &str) -> Option<String> {
    api.annotations(NS, pod)
        .expect("the pod exists")
        .get(key)
        .cloned()
}

/// The ids of the keyed jobs stored on the pod.
fn job_ids(api: &ApiServer, pod: &str) -> Vec<String> {
    let Some(text) = annotation(api, pod, JOBS) else {
        return Vec::new();
    };
    let value: serde_json::Value = serde_json::from_str(&text).expect("the annotation is JSON");
    assert_eq!(value["v"], 1, "{text}");
    value["jobs"]
        .as_object()
        .map(|jobs| jobs.keys().cloned().collect())
        .unwrap_or_default()
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

#[test]
fn duplicate_keyed_increments_and_decrements_change_nothing() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).start();
    assert_eq!(tracker.increment("pod_name=worker-1&job=a").count(), 1);
    assert_eq!(
        tracker.increment("pod_name=worker-1&job=a").count(),
        1,
        "a retried start answers the current count"
    );
    assert_eq!(
        tracker.increment("pod_name=worker-1").count(),
        2,
        "anonymous"
    );
    let by_header = tracker.request(
        "POST",
        "/increment?pod_name=worker-1",
        &[("Idempotency-Key", "b")],
    );
    assert_eq!(by_header.count(), 3);
    assert_eq!(
        tracker
            .request(
                "POST",
                "/increment?pod_name=worker-1",
                &[("Idempotency-Key", "b")]
            )
            .count(),
        3
    );
    assert_eq!(label(&api, "worker-1").as_deref(), Some("3"));
    assert_eq!(job_ids(&api, "worker-1"), ["a", "b"]);
    assert_eq!(tracker.decrement("pod_name=worker-1&job=a").count(), 2);
    assert_eq!(
        tracker.decrement("pod_name=worker-1&job=a").count(),
        2,
        "a finished job ends once"
    );
    assert_eq!(tracker.decrement("pod_name=worker-1&job=never").count(), 2);
    assert_eq!(tracker.decrement("pod_name=worker-1&job=b").count(), 1);
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), 0);
    assert_eq!(label(&api, "worker-1"), None);
    assert_eq!(
        annotation(&api, "worker-1", JOBS),
        None,
        "no jobs, no annotation"
    );
}

#[test]
fn invalid_job_ids_are_refused_with_400_and_nothing_is_written() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).start();
    tracker.wait_ready();
    api.reset_counts();
    for query in [
        format!("pod_name=worker-1&job={}", "x".repeat(65)),
        "pod_name=worker-1&job=a%22b".to_owned(),
        "pod_name=worker-1&job=a&ttl=later".to_owned(),
    ] {
        let answer = tracker.increment(&query);
        assert_eq!(answer.status, 400, "{query}: {answer:?}");
    }
    assert!(
        api.requests().iter().all(|r| !r.path.contains("/pods")),
        "refused before any call about pods: {:?}",
        api.requests()
    );
}

#[test]
fn a_tracker_restart_keeps_keyed_jobs_because_they_live_on_the_pod() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let first = standalone(&api).start();
    assert_eq!(first.increment("pod_name=worker-1&job=a").count(), 1);
    assert_eq!(first.increment("pod_name=worker-1&job=b").count(), 2);
    drop(first);
    let second = standalone(&api).start();
    assert_eq!(
        second.increment("pod_name=worker-1&job=a").count(),
        2,
        "the new process knows job a is running"
    );
    assert_eq!(second.decrement("pod_name=worker-1&job=b").count(), 1);
    assert_eq!(second.decrement("pod_name=worker-1&job=b").count(), 1);
    assert_eq!(job_ids(&api, "worker-1"), ["a"]);
}

#[test]
fn increments_are_refused_on_a_deleting_pod_while_decrements_still_work() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).start();
    assert_eq!(tracker.increment("pod_name=worker-1&job=a").count(), 1);
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 2);
    // The tracker's kept view does not show the deletion: the write's guard must catch it.
    api.mark_deleting(NS, "worker-1");
    for query in ["pod_name=worker-1", "pod_name=worker-1&job=b"] {
        let answer = tracker.increment(query);
        assert_eq!(answer.status, 409, "{query}: {answer:?}");
        assert!(answer.body.contains("being deleted"), "{answer:?}");
        let retry_after: u64 = answer
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("a Retry-After in seconds: {answer:?}"));
        assert!((1..=30).contains(&retry_after), "{answer:?}");
    }
    assert_eq!(
        label(&api, "worker-1").as_deref(),
        Some("2"),
        "nothing added"
    );
    assert_eq!(
        tracker.increment("pod_name=worker-1&job=a").count(),
        2,
        "a retried start of a running job is still answered"
    );
    assert_eq!(tracker.decrement("pod_name=worker-1&job=a").count(), 1);
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), 0);
    assert_eq!(label(&api, "worker-1"), None);
}

#[test]
fn wait_idle_returns_when_the_count_reaches_zero_and_times_out_otherwise() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api)
        .args(["--admin-address=127.0.0.1:0"])
        .start();
    let idle = tracker.request("GET", "/wait-idle?pod_name=worker-1&timeout=5s", &[]);
    assert_eq!(idle.count(), 0, "an idle pod answers at once");

    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    let timed_out = tracker.request("GET", "/wait-idle?pod_name=worker-1&timeout=300ms", &[]);
    assert_eq!(timed_out.status, 503, "{timed_out:?}");
    assert!(
        timed_out.body.contains("1 job(s) still running"),
        "{timed_out:?}"
    );

    // A preStop hook on the admin listener waits while the job runs.
    let admin = tracker.admin.expect("an admin address");
    api.reset_counts();
    let waiter = std::thread::spawn(move || {
        support::request(
            admin,
            "GET",
            "/wait-idle?pod_name=worker-1&timeout=60s",
            &[],
        )
    });
    assert!(
        api.wait_for_count(Verb::Get, Outcome::Status(200), 1, Duration::from_secs(10)),
        "the waiter read the pod"
    );
    assert!(!waiter.is_finished(), "still waiting while a job runs");
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), 0);
    let answer = waiter.join().expect("the waiter");
    assert_eq!(answer.count(), 0, "{answer:?}");
}

#[test]
fn a_sidecar_releases_a_crashed_job_at_its_deadline_and_renew_extends_another() {
    let api = api();
    api.allow(
        Subject::user("tracker"),
        Rule::new(["create"], ["events"]).namespace(NS),
    );
    api.create_pod(NS, "job-1", &[]);
    let tracker = sidecar(&api, "job-1").args(["--events"]).start();
    assert_eq!(tracker.increment("job=crashed&ttl=1s").count(), 1);
    // Deadlines are whole seconds: `alive` gets a margin so that it is still running when it
    // is renewed, however slow the machine.
    assert_eq!(tracker.increment("job=alive&ttl=5s").count(), 2);
    assert_eq!(
        tracker
            .request("POST", "/renew?job=alive&ttl=1h", &[])
            .count(),
        2
    );
    assert_eq!(
        tracker.request("POST", "/renew?job=nobody", &[]).status,
        404,
        "only running jobs can be renewed"
    );
    // Nobody calls the tracker: its own timer releases the job.
    assert!(
        tracker
            .wait_for_line("job crashed released", Duration::from_secs(20))
            .is_some(),
        "{}",
        tracker.log()
    );
    assert_eq!(label(&api, "job-1").as_deref(), Some("1"));
    assert_eq!(job_ids(&api, "job-1"), ["alive"], "the renewed job stays");
    // Creates are the access review and the events, in no fixed order: wait for each in turn
    // until the release's event is among them.
    let expired_event = |api: &ApiServer| {
        api.events()
            .iter()
            .any(|e| e["reason"] == "JobExpired" && e["involvedObject"]["name"] == "job-1")
    };
    assert!(
        (1..=5).any(|creates| {
            api.wait_for_count(
                Verb::Create,
                Outcome::Status(201),
                creates,
                Duration::from_secs(10),
            ) && expired_event(&api)
        }),
        "a JobExpired event: {:?}",
        api.events()
    );
}

#[test]
fn the_maximum_job_duration_caps_the_ttl_a_job_asks_for() {
    let api = api();
    api.create_pod(NS, "job-1", &[]);
    let tracker = sidecar(&api, "job-1")
        .args(["--max-job-duration=1s"])
        .start();
    // The anonymous job first: nothing can expire before the keyed job is counted.
    assert_eq!(tracker.increment("").count(), 1);
    assert_eq!(tracker.increment("job=greedy&ttl=24h").count(), 2);
    assert!(
        tracker
            .wait_for_line("job greedy released", Duration::from_secs(20))
            .is_some(),
        "{}",
        tracker.log()
    );
    assert_eq!(
        label(&api, "job-1").as_deref(),
        Some("1"),
        "the anonymous job has no deadline and stays"
    );
}

#[test]
fn the_standalone_service_releases_an_expired_job_when_it_next_touches_the_pod() {
    let api = api();
    api.create_pod(NS, "worker-1", &[("active-jobs", "1")]);
    // A job that a previous tracker stored, whose deadline passed long ago.
    api.set_annotation(
        NS,
        "worker-1",
        JOBS,
        Some(r#"{"v":1,"jobs":{"stale":{"s":1,"d":2}}}"#),
    );
    let tracker = standalone(&api).start();
    assert_eq!(
        tracker.increment("pod_name=worker-1&job=fresh").count(),
        1,
        "the stale job was released in the same write"
    );
    assert_eq!(job_ids(&api, "worker-1"), ["fresh"]);
    // Logged before the answer was sent; the test's log reader may still be catching up.
    assert!(
        tracker
            .wait_for_line("job stale released", Duration::from_secs(10))
            .is_some(),
        "{}",
        tracker.log()
    );
}

#[test]
fn a_jobs_annotation_that_cannot_be_read_answers_409_and_is_left_alone() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    api.set_annotation(NS, "worker-1", JOBS, Some("garbage"));
    let tracker = standalone(&api).start();
    let answer = tracker.increment("pod_name=worker-1&job=a");
    assert_eq!(answer.status, 409, "{answer:?}");
    assert!(answer.body.contains(JOBS), "{answer:?}");
    assert_eq!(
        annotation(&api, "worker-1", JOBS).as_deref(),
        Some("garbage")
    );
}

#[test]
fn active_annotations_follow_the_count_and_a_previous_value_is_restored_at_zero() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    api.set_annotation(
        NS,
        "worker-1",
        "cluster-autoscaler.kubernetes.io/safe-to-evict",
        Some("true"),
    );
    let tracker = standalone(&api)
        .args([
            "--active-annotation=karpenter.sh/do-not-disrupt=true",
            "--active-annotation",
            "cluster-autoscaler.kubernetes.io/safe-to-evict=false",
        ])
        .start();
    let karpenter = |api: &ApiServer| annotation(api, "worker-1", "karpenter.sh/do-not-disrupt");
    let autoscaler = |api: &ApiServer| {
        annotation(
            api,
            "worker-1",
            "cluster-autoscaler.kubernetes.io/safe-to-evict",
        )
    };
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    assert_eq!(karpenter(&api).as_deref(), Some("true"));
    assert_eq!(autoscaler(&api).as_deref(), Some("false"));
    assert_eq!(tracker.increment("pod_name=worker-1&job=a").count(), 2);
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), 1);
    assert_eq!(autoscaler(&api).as_deref(), Some("false"), "still busy");
    assert_eq!(tracker.decrement("pod_name=worker-1&job=a").count(), 0);
    assert_eq!(karpenter(&api), None, "removed at zero");
    assert_eq!(
        autoscaler(&api).as_deref(),
        Some("true"),
        "the pod's own value is back"
    );
    assert_eq!(annotation(&api, "worker-1", JOBS), None);
}

/// What one client of the keyed concurrency test saw.
#[derive(Debug, Default)]
struct KeyedTally {
    /// Net anonymous jobs acknowledged (200s).
    anonymous: i64,
    /// Each key's state after its last 200: running or not.
    running: BTreeMap<String, bool>,
    /// Keys with an answer of unknown outcome (504): their state is not checked.
    uncertain: BTreeSet<String>,
    /// Anonymous calls with an unknown outcome: each may or may not be in the count.
    uncertain_anonymous: i64,
    /// 200s in all.
    acknowledged: u64,
}

fn keyed_client(address: std::net::SocketAddr, client: usize, keys: usize) -> KeyedTally {
    let mut tally = KeyedTally::default();
    let mut connection = Connection::open(address).expect("connects");
    let mut call = |path: &str, job: Option<&str>| -> Option<u16> {
        let target = match job {
            Some(job) => format!("{path}?pod_name=busy&job={job}"),
            None => format!("{path}?pod_name=busy"),
        };
        let answer = connection
            .send("POST", &target, &[])
            .unwrap_or_else(|e| panic!("malformed or missing answer: {e}"));
        match answer.checked_status() {
            200 => Some(200),
            503 | 504 => Some(answer.status),
            _ => panic!("unexpected answer to {target}: {answer:?}"),
        }
    };
    for i in 0..keys {
        let key = format!("c{client}-{i}");
        // Start (twice: a retried webhook), an anonymous job beside it, then end the keyed job
        // (twice) except every fourth, which keeps running.
        let mut steps = vec![
            ("/increment", Some(true)),
            ("/increment", Some(true)),
            ("/increment", None),
        ];
        if !i.is_multiple_of(4) {
            steps.push(("/decrement", Some(false)));
            steps.push(("/decrement", Some(false)));
        }
        if i.is_multiple_of(2) {
            steps.push(("/decrement", None));
        }
        for (path, keyed) in steps {
            let status = call(path, keyed.map(|_| key.as_str()));
            match (status, keyed) {
                (Some(200), Some(running)) => {
                    tally.running.insert(key.clone(), running);
                    tally.acknowledged += 1;
                }
                (Some(200), None) => {
                    tally.anonymous += if path == "/increment" { 1 } else { -1 };
                    tally.acknowledged += 1;
                }
                (Some(504), Some(_)) => {
                    tally.uncertain.insert(key.clone());
                }
                (Some(504), None) => tally.uncertain_anonymous += 1,
                _ => {}
            }
        }
    }
    tally
}

#[test]
fn keyed_and_anonymous_calls_under_faults_and_another_writer_lose_and_double_nothing() {
    let api = api();
    api.create_pod(NS, "busy", &[("app", "worker")]);
    let tracker = standalone(&api)
        .args([
            "--allow-negative",
            "--retry-timeout=60s",
            "--kube-request-timeout=2s",
            "--active-annotation=karpenter.sh/do-not-disrupt=true",
        ])
        .env("RUST_LOG", "info,request=warn")
        .start();
    for (kind, verb, fraction) in [
        (FaultKind::Status(409), Verb::Patch, 0.05),
        (FaultKind::Status(500), Verb::Patch, 0.03),
        (FaultKind::Reset, Verb::Patch, 0.02),
        (FaultKind::ApplyThenDrop, Verb::Patch, 0.03),
        (FaultKind::Status(503), Verb::Get, 0.05),
    ] {
        api.inject(Fault::new(kind).verb(verb).fraction(fraction));
    }
    // Another writer raises the count by hand (an anonymous job, counted here) and edits an
    // unrelated annotation.
    let done = Arc::new(AtomicBool::new(false));
    let editor = {
        let api = api.clone();
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut added = 0i64;
            let mut edits = 0u64;
            while !done.load(Ordering::SeqCst) {
                if edits.is_multiple_of(2) {
                    api.update_label(NS, "busy", "active-jobs", |value| {
                        let count: i64 = match value {
                            None => 0,
                            Some(v) => match v.strip_prefix("neg") {
                                Some(digits) => -digits.parse::<i64>().expect("digits"),
                                None => v.parse().expect("digits"),
                            },
                        };
                        let next = count + 1;
                        Some(if next < 0 {
                            format!("neg{}", -next)
                        } else {
                            next.to_string()
                        })
                    });
                    added += 1;
                } else {
                    api.set_annotation(NS, "busy", "note", Some(&edits.to_string()));
                }
                edits += 1;
                thread::sleep(Duration::from_millis(20));
            }
            added
        })
    };
    let address = tracker.address;
    let tallies: Vec<KeyedTally> = (0..16)
        .map(|client| thread::spawn(move || keyed_client(address, client, 60)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    done.store(true, Ordering::SeqCst);
    let added = editor.join().expect("editor");
    assert!(added > 5, "the other writer ran ({added} edits)");

    let acknowledged: u64 = tallies.iter().map(|t| t.acknowledged).sum();
    assert!(
        acknowledged > 4000,
        "nearly every call acknowledged: {acknowledged}"
    );
    let stored_jobs: BTreeSet<String> = job_ids(&api, "busy").into_iter().collect();
    let mut expected_running = 0i64;
    let mut uncertain = 0i64;
    for tally in &tallies {
        uncertain += tally.uncertain_anonymous + tally.uncertain.len() as i64;
        for (key, running) in &tally.running {
            if tally.uncertain.contains(key) {
                continue;
            }
            assert_eq!(
                stored_jobs.contains(key),
                *running,
                "job {key}: stored {} after its last acknowledged call said running={running}",
                stored_jobs.contains(key)
            );
            expected_running += i64::from(*running);
        }
    }
    let anonymous: i64 = tallies.iter().map(|t| t.anonymous).sum::<i64>() + added;
    let stored = label(&api, "busy").map_or(0, |v| match v.strip_prefix("neg") {
        Some(digits) => -digits.parse::<i64>().expect("digits"),
        None => v.parse().expect("digits"),
    });
    let expected = anonymous + expected_running;
    assert!(
        (stored - expected).abs() <= uncertain,
        "stored {stored}, expected {expected} (± {uncertain} unknown outcomes)"
    );
    if uncertain == 0 {
        assert_eq!(stored, expected);
    }
    // The other writer's last edit may have moved the count without the tracker: one more
    // start and end (net zero) lets the tracker bring the annotation in line with the count.
    api.clear_faults();
    assert_eq!(tracker.increment("pod_name=busy").count(), stored + 1);
    assert_eq!(tracker.decrement("pod_name=busy").count(), stored);
    assert_eq!(
        annotation(&api, "busy", "karpenter.sh/do-not-disrupt").is_some(),
        stored > 0,
        "the active annotation follows the count"
    );
}

/// Unix seconds now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

#[test]
fn a_sidecar_releases_the_jobs_its_main_container_started_before_that_container_restarted() {
    let api = api();
    api.create_pod(NS, "job-1", &[("active-jobs", "1")]);
    // A job the container's previous instance started 100 s ago.
    let old_start = unix_now() - 100;
    api.set_annotation(
        NS,
        "job-1",
        JOBS,
        Some(&format!(
            r#"{{"v":1,"jobs":{{"old":{{"s":{old_start}}}}}}}"#
        )),
    );
    let tracker = sidecar(&api, "job-1")
        .args(["--release-on-restart=main", "--sweep-interval=100ms"])
        .start();
    tracker.wait_ready();
    assert_eq!(tracker.increment("job=new").count(), 2);

    // Another container restarting says nothing about main's jobs.
    let ended = std::time::SystemTime::now() - Duration::from_secs(10);
    api.set_container_restart(NS, "job-1", "helper", 1, ended);
    api.reset_counts();
    assert!(
        api.wait_for_count(Verb::Get, Outcome::Status(200), 2, Duration::from_secs(10)),
        "the sidecar reads its pod again while it has jobs"
    );
    assert_eq!(label(&api, "job-1").as_deref(), Some("2"));
    assert_eq!(job_ids(&api, "job-1"), ["new", "old"]);

    // main restarted 10 s ago: the job from before is over, the one started since is not.
    api.set_container_restart(NS, "job-1", "main", 1, ended);
    let line = tracker
        .wait_for_line("job old released", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("released: {}", tracker.log()));
    assert!(line.contains("container main restarted"), "{line}");
    assert_eq!(label(&api, "job-1").as_deref(), Some("1"));
    assert_eq!(job_ids(&api, "job-1"), ["new"]);
    assert_eq!(
        tracker.decrement("job=new").count(),
        0,
        "the job started after the restart ends normally"
    );
    assert!(
        !tracker.log().contains("job new released"),
        "{}",
        tracker.log()
    );
}

#[test]
fn anonymous_jobs_with_a_lifetime_are_recorded_and_a_decrement_ends_the_oldest() {
    let api = api();
    api.create_pod(NS, "job-1", &[]);
    let tracker = sidecar(&api, "job-1")
        .args(["--anonymous-job-ttl=1h"])
        .start();
    assert_eq!(tracker.increment("").count(), 1);
    assert_eq!(tracker.increment("").count(), 2);
    let ids = job_ids(&api, "job-1");
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("#anon-")), "{ids:?}");
    assert_eq!(tracker.decrement("").count(), 1);
    assert_eq!(job_ids(&api, "job-1"), ids[1..], "the oldest ended");
    let stored: serde_json::Value =
        serde_json::from_str(&annotation(&api, "job-1", JOBS).expect("jobs")).expect("JSON");
    let job = &stored["jobs"][&ids[1]];
    let (start, deadline) = (
        job["s"].as_u64().expect("start"),
        job["d"].as_u64().expect("deadline"),
    );
    assert_eq!(deadline - start, 3600, "{stored}");
}

#[test]
fn an_anonymous_job_with_a_lifetime_is_released_when_its_caller_never_decrements() {
    let api = api();
    api.create_pod(NS, "job-1", &[]);
    let tracker = sidecar(&api, "job-1")
        .args(["--anonymous-job-ttl=1s"])
        .start();
    assert_eq!(tracker.increment("").count(), 1);
    assert!(
        tracker
            .wait_for_line("released: it passed its deadline", Duration::from_secs(20))
            .is_some(),
        "{}",
        tracker.log()
    );
    assert_eq!(label(&api, "job-1"), None);
    assert_eq!(annotation(&api, "job-1", JOBS), None);
}

#[test]
fn the_pod_deletion_cost_follows_busy_and_idle_and_a_previous_value_comes_back() {
    const COST: &str = "controller.kubernetes.io/pod-deletion-cost";
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    api.set_annotation(NS, "worker-1", COST, Some("-5"));
    let tracker = standalone(&api).args(["--pod-deletion-cost=10000"]).start();
    tracker.wait_ready();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    assert_eq!(annotation(&api, "worker-1", COST).as_deref(), Some("10000"));
    api.reset_counts();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 2);
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), 1);
    assert_eq!(
        api.requests().len(),
        2,
        "still one PATCH per call while busy: {:?}",
        api.requests()
    );
    assert_eq!(annotation(&api, "worker-1", COST).as_deref(), Some("10000"));
    assert_eq!(tracker.decrement("pod_name=worker-1").count(), 0);
    assert_eq!(
        annotation(&api, "worker-1", COST).as_deref(),
        Some("-5"),
        "the pod's own cost is back"
    );
    assert_eq!(
        annotation(&api, "worker-1", JOBS),
        None,
        "nothing left saved"
    );
}

#[test]
fn the_standalone_sweep_releases_expired_jobs_on_pods_nobody_calls_about() {
    let api = api();
    api.allow(
        Subject::user("tracker"),
        Rule::new(["list"], ["pods"]).namespace(NS),
    );
    let expired = Some(r#"{"v":1,"jobs":{"gone":{"s":1,"d":2}}}"#);
    api.create_pod(NS, "stale", &[("app", "worker"), ("active-jobs", "1")]);
    api.set_annotation(NS, "stale", JOBS, expired);
    // Outside --label-selector: the sweep must not touch it.
    api.create_pod(NS, "foreign", &[("app", "other"), ("active-jobs", "1")]);
    api.set_annotation(NS, "foreign", JOBS, expired);
    let running = format!(
        r#"{{"v":1,"jobs":{{"busy":{{"s":1,"d":{}}}}}}}"#,
        unix_now() + 3600
    );
    api.create_pod(NS, "fresh", &[("app", "worker"), ("active-jobs", "1")]);
    api.set_annotation(NS, "fresh", JOBS, Some(&running));
    let tracker = standalone(&api)
        .args(["--sweep-interval=100ms", "--label-selector=app=worker"])
        .start();
    assert!(
        tracker
            .wait_for_line("job gone released", Duration::from_secs(20))
            .is_some(),
        "{}",
        tracker.log()
    );
    assert_eq!(label(&api, "stale"), None);
    assert_eq!(annotation(&api, "stale", JOBS), None);
    // Two more sweeps: still nothing written elsewhere.
    let lists = api.count(Verb::List, Outcome::Status(200));
    assert!(api.wait_for_count(
        Verb::List,
        Outcome::Status(200),
        lists + 2,
        Duration::from_secs(10)
    ));
    assert_eq!(label(&api, "foreign").as_deref(), Some("1"));
    assert_eq!(annotation(&api, "foreign", JOBS).as_deref(), expired);
    assert_eq!(job_ids(&api, "fresh"), ["busy"]);
    let writes: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.verb == Verb::Patch)
        .map(|r| r.path.clone())
        .collect();
    assert!(
        writes.iter().all(|path| path.contains("/pods/stale")),
        "only the pod with an expired job was written: {writes:?}"
    );
    assert!(
        api.requests()
            .iter()
            .filter(|r| r.verb == Verb::List)
            .all(|r| r.path.contains("labelSelector=app")),
        "the sweep lists only pods the selector allows"
    );
}

#[test]
fn the_sweep_pages_through_a_namespace_and_starts_again_when_its_list_expires() {
    let api = api();
    api.allow(
        Subject::user("tracker"),
        Rule::new(["list"], ["pods"]).namespace(NS),
    );
    let expired = Some(r#"{"v":1,"jobs":{"gone":{"s":1,"d":2}}}"#);
    for i in 0..7 {
        let name = format!("stale-{i}");
        api.create_pod(NS, &name, &[("app", "worker"), ("active-jobs", "1")]);
        api.set_annotation(NS, &name, JOBS, expired);
    }
    let tracker = standalone(&api)
        .args(["--sweep-interval=100ms", "--sweep-page-size=3"])
        .start();
    for i in 0..7 {
        let pod = format!("stale-{i}");
        let released = (0..200).any(|_| {
            let done = label(&api, &pod).is_none();
            if !done {
                std::thread::sleep(Duration::from_millis(50));
            }
            done
        });
        assert!(released, "{pod} released:\n{}", tracker.log());
    }
    let pages: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.verb == Verb::List)
        .map(|r| r.path.clone())
        .collect();
    assert!(pages.iter().all(|p| p.contains("limit=3")), "{pages:?}");
    // Each sweep counts the pods it listed and how long it took.
    let metrics = tracker.request("GET", "/metrics", &[]).body;
    let series = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let sweeps = series("pod_webhook_tracker_sweep_duration_seconds_count");
    assert!(sweeps >= 1.0, "{metrics}");
    let listed = series("pod_webhook_tracker_sweep_pods_total");
    assert!(
        listed >= 7.0 * sweeps,
        "every sweep lists the 7 pods: {metrics}"
    );
    assert!(
        pages.iter().any(|p| p.contains("continue=")),
        "7 pods take 3 pages: {pages:?}"
    );
    // A compaction expires the continue token of a sweep in progress: it lists again. Slower
    // reads keep each sweep's pages apart in time, so that compactions fall between them.
    api.set_read_latency(Duration::from_millis(30));
    let before = api.count(Verb::List, Outcome::Status(410));
    for _ in 0..150 {
        api.compact();
        std::thread::sleep(Duration::from_millis(20));
        if api.count(Verb::List, Outcome::Status(410)) > before {
            break;
        }
    }
    assert!(
        api.count(Verb::List, Outcome::Status(410)) > before,
        "a page asked with an expired token"
    );
    assert!(
        tracker
            .wait_for_line("listing again from the start", Duration::from_secs(10))
            .is_some(),
        "{}",
        tracker.log()
    );
}

#[test]
fn a_restarted_sidecar_releases_a_job_past_its_deadline_without_waiting_for_a_call() {
    let api = api();
    // What a sidecar that was restarted finds: a job whose deadline has passed meanwhile.
    api.create_pod(NS, "job-1", &[("active-jobs", "1")]);
    api.set_annotation(
        NS,
        "job-1",
        JOBS,
        Some(r#"{"v":1,"jobs":{"gone":{"s":1,"d":2}}}"#),
    );
    let tracker = sidecar(&api, "job-1").start();
    tracker.wait_ready();
    let released = (0..100).any(|_| {
        let done = label(&api, "job-1").is_none();
        if !done {
            std::thread::sleep(Duration::from_millis(50));
        }
        done
    });
    assert!(released, "released with no call:\n{}", tracker.log());
    assert_eq!(annotation(&api, "job-1", JOBS), None);
}
