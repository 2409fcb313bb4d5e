//! Jobs on a real API server: job keys, expiry by the tracker's own timer, busy annotations,
//! events, `/wait-idle` and `run`.

#[path = "../support/mod.rs"]
mod support; // it allows dead code itself: each test file uses a different part of it

#[path = "scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use scene::{Scene, get_and_patch_pods};

const LABEL: &str = "active-jobs";
const JOBS: &str = "active-jobs-jobs";
const KARPENTER: &str = "karpenter.sh/do-not-disrupt";
const COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// How long anything here may take before a test gives up.
const LIMIT: Duration = Duration::from_secs(30);

/// A scene with pod `pod` and a service account `tracker` holding `rules`, whose rights
/// have taken effect.
fn scene_with(prefix: &str, pod: &str, rules: Value) -> (Scene, String) {
    let scene = Scene::new(prefix);
    scene.pod(pod, &[("app", "worker")]);
    let account = scene.account("tracker", rules);
    scene.wait_allowed(&scene.kubeconfig(&account), &scene.pods_path(Some(pod)));
    (scene, account)
}

/// The stored jobs annotation, parsed (`None` when the pod has none).
fn stored_jobs(scene: &Scene, pod: &str) -> Option<Value> {
    scene
        .annotations(pod)
        .get(JOBS)
        .map(|text| serde_json::from_str(text).expect("the jobs annotation is JSON"))
}

/// Unix seconds now (the cluster runs on this machine's clock).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// Polls the stored pod (bounded) until `done` holds for its labels.
fn wait_for_labels(
    scene: &Scene,
    pod: &str,
    what: &str,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) {
    let started = Instant::now();
    loop {
        let labels = scene.labels(pod);
        if done(&labels) {
            return;
        }
        assert!(
            started.elapsed() < LIMIT,
            "{what} within {LIMIT:?}: {labels:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_job_key_counts_a_retried_start_once_and_its_job_lives_in_the_jobs_annotation() {
    let (scene, account) = scene_with("jobs-keys", "w1", get_and_patch_pods(&[]));
    let tracker = scene.standalone(&account).start();
    let before = unix_now();
    assert_eq!(tracker.increment("pod_name=w1&job=A&ttl=1h").count(), 1);
    assert_eq!(
        tracker.increment("pod_name=w1&job=A&ttl=1h").count(),
        1,
        "a retried start changes nothing"
    );
    assert_eq!(scene.label("w1", LABEL).as_deref(), Some("1"));
    let jobs = stored_jobs(&scene, "w1").expect("the jobs annotation");
    assert_eq!(jobs["v"], 1, "{jobs}");
    let start = jobs["jobs"]["A"]["s"].as_u64().expect("a start");
    let deadline = jobs["jobs"]["A"]["d"].as_u64().expect("a deadline");
    assert!(
        (before..=unix_now()).contains(&start),
        "started now: {jobs}"
    );
    assert_eq!(deadline - start, 3600, "the ttl: {jobs}");

    // The same, with the key in an Idempotency-Key header.
    let by_header = [("Idempotency-Key", "B")];
    let start_b = || tracker.request("POST", "/increment?pod_name=w1", &by_header);
    assert_eq!(start_b().count(), 2);
    assert_eq!(start_b().count(), 2, "a retried start changes nothing");
    assert_eq!(scene.label("w1", LABEL).as_deref(), Some("2"));
    let jobs = stored_jobs(&scene, "w1").expect("the jobs annotation");
    let ids: Vec<&String> = jobs["jobs"].as_object().expect("jobs").keys().collect();
    assert_eq!(ids, ["A", "B"], "{jobs}");
    assert!(
        jobs["jobs"]["B"].get("d").is_none(),
        "no ttl and no --max-job-duration: no deadline: {jobs}"
    );

    assert_eq!(tracker.decrement("pod_name=w1&job=A").count(), 1);
    assert_eq!(
        tracker.decrement("pod_name=w1&job=A").count(),
        1,
        "an ended job ends once"
    );
    let end_b = tracker.request("POST", "/decrement?pod_name=w1", &by_header);
    assert_eq!(end_b.count(), 0);
    assert_eq!(scene.label("w1", LABEL), None, "removed at zero");
    assert_eq!(stored_jobs(&scene, "w1"), None, "no jobs, no annotation");
    assert_eq!(
        scene.labels("w1").get("app").map(String::as_str),
        Some("worker")
    );
}

#[test]
fn a_sidecar_releases_a_job_at_its_maximum_duration_with_no_call() {
    let (scene, account) = scene_with("jobs-expiry", "job-1", get_and_patch_pods(&["job-1"]));
    let tracker = scene
        .sidecar(&account, "job-1")
        .args(["--max-job-duration=2s"])
        .start();
    let started = Instant::now();
    assert_eq!(tracker.increment("job=crashed").count(), 1);
    let jobs = stored_jobs(&scene, "job-1").expect("the jobs annotation");
    let job = &jobs["jobs"]["crashed"];
    assert_eq!(
        job["d"].as_u64().zip(job["s"].as_u64()).map(|(d, s)| d - s),
        Some(2),
        "the maximum duration is its lifetime: {jobs}"
    );
    // Nobody calls the tracker again: its own timer releases the job at the deadline.
    wait_for_labels(&scene, "job-1", "the job released", |labels| {
        !labels.contains_key(LABEL)
    });
    // The deadline is the start's whole second + 2 s: more than 1 s after the call.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "not before its deadline: {took:?}"
    );
    assert_eq!(stored_jobs(&scene, "job-1"), None);
    assert!(
        tracker
            .wait_for_line("job crashed released", LIMIT)
            .is_some(),
        "{}",
        tracker.log()
    );
}

#[test]
fn a_standalone_tracker_releases_a_job_at_the_ttl_it_asked_for_with_no_call() {
    let (scene, account) = scene_with("jobs-ttl", "w1", get_and_patch_pods(&[]));
    let tracker = scene.standalone(&account).start();
    assert_eq!(tracker.increment("pod_name=w1").count(), 1, "anonymous");
    assert_eq!(tracker.increment("pod_name=w1&job=short&ttl=2s").count(), 2);
    wait_for_labels(&scene, "w1", "the keyed job released", |labels| {
        labels.get(LABEL).map(String::as_str) == Some("1")
    });
    assert_eq!(
        stored_jobs(&scene, "w1"),
        None,
        "the anonymous job has no deadline and is not in the annotation"
    );
    assert_eq!(tracker.decrement("pod_name=w1").count(), 0);
    assert_eq!(scene.label("w1", LABEL), None);
}

#[test]
fn busy_annotations_are_set_while_busy_and_removed_or_restored_at_zero() {
    let scene = Scene::new("jobs-annotations");
    scene.create_pod(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "w1", "annotations": {COST: "-5"}},
        "spec": {"containers": [{"name": "job", "image": "busybox:1.37.0"}]},
    }));
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    scene.wait_allowed(&scene.kubeconfig(&account), &scene.pods_path(Some("w1")));
    let tracker = scene
        .standalone(&account)
        .args([
            format!("--active-annotation={KARPENTER}=true"),
            "--pod-deletion-cost=10000".to_owned(),
        ])
        .start();
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    let busy = scene.annotations("w1");
    assert_eq!(busy.get(KARPENTER).map(String::as_str), Some("true"));
    assert_eq!(busy.get(COST).map(String::as_str), Some("10000"));
    assert_eq!(tracker.increment("pod_name=w1&job=k").count(), 2);
    assert_eq!(tracker.decrement("pod_name=w1").count(), 1);
    let still = scene.annotations("w1");
    assert_eq!(still.get(KARPENTER).map(String::as_str), Some("true"));
    assert_eq!(still.get(COST).map(String::as_str), Some("10000"));
    assert_eq!(tracker.decrement("pod_name=w1&job=k").count(), 0);
    let idle = scene.annotations("w1");
    assert_eq!(idle.get(KARPENTER), None, "removed at zero: {idle:?}");
    assert_eq!(
        idle.get(COST).map(String::as_str),
        Some("-5"),
        "the pod's own cost is back"
    );
    assert_eq!(idle.get(JOBS), None, "nothing left saved: {idle:?}");
}

#[test]
fn with_events_a_pod_gets_a_busy_and_an_idle_event() {
    let mut rules = get_and_patch_pods(&[]);
    rules
        .as_array_mut()
        .expect("rules")
        .push(json!({"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}));
    let (scene, account) = scene_with("jobs-events", "w1", rules);
    let tracker = scene.standalone(&account).args(["--events"]).start();
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    assert_eq!(tracker.increment("pod_name=w1").count(), 2);
    assert_eq!(tracker.decrement("pod_name=w1").count(), 1);
    assert_eq!(tracker.decrement("pod_name=w1").count(), 0);
    // Events are sent off the answers' path: poll (bounded) until both are stored.
    let path = format!(
        "/api/v1/namespaces/{}/events?fieldSelector=involvedObject.name%3Dw1",
        scene.namespace
    );
    let started = Instant::now();
    let events = loop {
        let list = scene.admin().get(&path).expect(200, "list events");
        let events = list["items"].as_array().cloned().unwrap_or_default();
        let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
        if reasons.contains(&"Busy") && reasons.contains(&"Idle") {
            break events;
        }
        assert!(
            started.elapsed() < LIMIT,
            "a Busy and an Idle event: {events:?}\n{}",
            tracker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(events.len(), 2, "only on idle ↔ busy: {events:?}");
    let uid = scene.read_pod("w1")["metadata"]["uid"].clone();
    for event in &events {
        // `kubectl describe pod` finds a pod's events by its uid.
        assert_eq!(event["involvedObject"]["uid"], uid, "{event}");
        let about = &event["involvedObject"];
        assert_eq!(
            (&about["kind"], &about["namespace"], &about["name"]),
            (&json!("Pod"), &json!(scene.namespace), &json!("w1")),
            "{event}"
        );
        assert_eq!(event["type"], "Normal", "{event}");
        assert_eq!(
            event["source"]["component"], "pod-webhook-tracker",
            "{event}"
        );
    }
    let described = scene
        .cluster
        .kubectl()
        .args(["describe", "pod", "w1", "-n", &scene.namespace])
        .output()
        .expect("kubectl runs");
    let described = String::from_utf8_lossy(&described.stdout);
    let events_part = described
        .split_once("Events:")
        .map(|(_, events)| events)
        .unwrap_or_default();
    for reason in ["Busy", "Idle"] {
        assert!(
            events_part.contains(reason) && events_part.contains("pod-webhook-tracker"),
            "kubectl describe pod shows the {reason} event:\n{described}"
        );
    }
    let busy = events
        .iter()
        .find(|e| e["reason"] == "Busy")
        .expect("a Busy event");
    assert!(
        busy["message"]
            .as_str()
            .is_some_and(|m| m.contains("job(s) running")),
        "{busy}"
    );
}

#[test]
fn wait_idle_answers_once_the_count_reaches_zero_and_503_after_its_timeout_while_busy() {
    let (scene, account) = scene_with("jobs-wait-idle", "w1", get_and_patch_pods(&[]));
    let tracker = scene
        .standalone(&account)
        .args(["--admin-address=127.0.0.1:0"])
        .start();
    let idle = tracker.request("GET", "/wait-idle?pod_name=w1&timeout=5s", &[]);
    assert_eq!(idle.count(), 0, "an idle pod answers at once");

    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    let started = Instant::now();
    let timed_out = tracker.request("GET", "/wait-idle?pod_name=w1&timeout=1s", &[]);
    assert_eq!(timed_out.status, 503, "{timed_out:?}");
    assert!(
        timed_out.body.contains("1 job(s) still running"),
        "{timed_out:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "after its timeout"
    );

    // A preStop hook's wait on the admin listener, while the job runs.
    let admin = tracker.admin.expect("an admin address");
    let waiter = std::thread::spawn(move || {
        support::request(admin, "GET", "/wait-idle?pod_name=w1&timeout=60s", &[])
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiter.is_finished(), "still waiting while the job runs");
    assert_eq!(tracker.decrement("pod_name=w1").count(), 0);
    let answer = waiter.join().expect("the waiter");
    assert_eq!(answer.count(), 0, "{answer:?}");
    assert_eq!(scene.label("w1", LABEL), None);
}

/// A command's wait for the test, in 10 ms steps (bounded, so a lost signal fails the test
/// instead of hanging it).
const WAIT_FOR_GO: &str = r#"i=0; while [ ! -e "$1/go" ]; do i=$((i + 1)); [ "$i" -gt 3000 ] && exit 99; sleep 0.01; done"#;

/// A running `run`, killed if the test ends first.
struct Wrapper(Child);

impl Drop for Wrapper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded polling) until `file` exists.
fn wait_for_file(file: &Path) {
    let started = Instant::now();
    while !file.exists() {
        assert!(
            started.elapsed() < LIMIT,
            "{} never appeared",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn run_counts_its_command_while_it_runs_and_passes_on_its_exit_status() {
    let (scene, account) = scene_with("jobs-run", "job-1", get_and_patch_pods(&["job-1"]));
    let tracker = scene.sidecar(&account, "job-1").start();
    let dir: PathBuf = scene.cluster.scratch(&format!("{}-run", scene.namespace));
    let script = format!(r#"touch "$1/started"; {WAIT_FOR_GO}; exit 3"#);
    let mut wrapper = Wrapper(
        Command::new(support::program())
            .arg("run")
            .arg(format!("--url=http://{}", tracker.address))
            .args(["--", "sh", "-c", &script, "sh"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs"),
    );
    wait_for_file(&dir.join("started"));
    assert_eq!(
        scene.label("job-1", LABEL).as_deref(),
        Some("1"),
        "counted while the command runs"
    );
    let jobs = stored_jobs(&scene, "job-1").expect("the jobs annotation");
    let ids: Vec<&String> = jobs["jobs"].as_object().expect("jobs").keys().collect();
    assert!(
        ids.len() == 1 && ids[0].starts_with("run-"),
        "one job with run's own key: {jobs}"
    );
    std::fs::write(dir.join("go"), b"").expect("the go marker");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = wrapper.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(started.elapsed() < LIMIT, "run exited within {LIMIT:?}");
        // Polling a child's exit has no blocking-with-timeout form in std.
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    wrapper
        .0
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut stderr)
        .expect("reads stderr");
    assert_eq!(status.code(), Some(3), "the command's status: {stderr}");
    assert_eq!(scene.label("job-1", LABEL), None, "uncounted: {stderr}");
    assert_eq!(stored_jobs(&scene, "job-1"), None, "{stderr}");
    for line in [
        "increment: ok (active jobs in this pod: 1)",
        "decrement: ok (active jobs in this pod: 0)",
    ] {
        assert!(stderr.contains(line), "{line} missing from {stderr}");
    }
}
