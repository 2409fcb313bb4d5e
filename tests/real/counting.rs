//! Counting on a real API server: the label goes up and down, is removed at zero (or kept as
//! `0`), goes negative as `negN` only when allowed, refuses pods outside `--label-selector` and
//! labels that are not counts without writing, works with prefixed keys and unlabelled pods,
//! counts 32 concurrent callers each exactly once, and the README's budget makes the real
//! Eviction API refuse busy pods (429) while idle ones are evicted.

// support/mod.rs allows its own dead code (an outer allow here too is a clippy error).
#[path = "../support/mod.rs"]
mod support;

#[path = "scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;

use std::time::{Duration, Instant};

use scene::{Scene, get_and_patch_pods};
use serde_json::json;
use support::request;

#[test]
fn a_standalone_tracker_counts_a_pod_label_up_and_down_and_removes_it_at_zero() {
    let scene = Scene::new("counting");
    scene.pod("w1", &[("app", "worker")]);
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene.standalone(&account).start();
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("1"));
    assert_eq!(tracker.increment("pod_name=w1").count(), 2);
    assert_eq!(tracker.decrement("pod_name=w1").count(), 1);
    assert_eq!(tracker.decrement("pod_name=w1").count(), 0);
    assert_eq!(scene.label("w1", "active-jobs"), None, "removed at zero");
    assert_eq!(
        scene.labels("w1").get("app").map(String::as_str),
        Some("worker")
    );
}

#[test]
fn thirty_two_clients_on_one_pod_are_each_counted_exactly_once() {
    let scene = Scene::new("counting");
    scene.pod("w1", &[]);
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene.standalone(&account).start();
    let address = tracker.address;
    let callers: Vec<_> = (0..32)
        .map(|_| {
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| request(address, "POST", "/increment?pod_name=w1", &[]).count())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut counts: Vec<i64> = callers
        .into_iter()
        .flat_map(|caller| caller.join().expect("a caller"))
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=160).collect::<Vec<_>>(), "every count once");
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("160"));
}

/// The pod's `metadata.resourceVersion`: unchanged means nothing at all was written to it.
fn resource_version(scene: &Scene, pod: &str) -> String {
    scene.read_pod(pod)["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion")
        .to_owned()
}

/// Asserts that the tracker's answer body names each of `parts`.
fn says(answer: &support::Answer, parts: &[&str]) {
    for part in parts {
        assert!(
            answer.body.contains(part),
            "{part:?} missing from {answer:?}"
        );
    }
}

#[test]
fn with_remove_on_zero_false_the_label_is_written_as_zero() {
    let scene = Scene::new("counting");
    scene.pod("w1", &[("app", "worker")]);
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene
        .standalone(&account)
        .args(["--remove-on-zero=false"])
        .start();
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    assert_eq!(tracker.decrement("pod_name=w1").count(), 0);
    assert_eq!(
        scene.label("w1", "active-jobs").as_deref(),
        Some("0"),
        "kept as 0, not removed"
    );
    // At 0 a further decrement stays at 0 (no --allow-negative) and changes nothing.
    let before = resource_version(&scene, "w1");
    assert_eq!(tracker.decrement("pod_name=w1").count(), 0);
    assert_eq!(resource_version(&scene, "w1"), before);
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("0"));
}

#[test]
fn with_allow_negative_a_decrement_at_zero_answers_minus_one_and_stores_neg1() {
    let scene = Scene::new("counting");
    scene.pod("w1", &[("app", "worker")]);
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene
        .standalone(&account)
        .args(["--allow-negative=true"])
        .start();
    assert_eq!(tracker.decrement("pod_name=w1").count(), -1);
    // The real server refuses "-1" as a label value; the tracker writes its own spelling.
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("neg1"));
    assert_eq!(tracker.decrement("pod_name=w1").count(), -2);
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("neg2"));
    assert_eq!(tracker.increment("pod_name=w1").count(), -1);
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("neg1"));
    assert_eq!(tracker.increment("pod_name=w1").count(), 0);
    assert_eq!(scene.label("w1", "active-jobs"), None, "removed at zero");
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("1"));

    // Why the spelling: the real server refuses a label value that starts with '-'.
    let refused = scene.admin().merge_patch(
        &scene.pods_path(Some("w1")),
        &json!({"metadata": {"labels": {"active-jobs": "-1"}}}),
    );
    assert_eq!(refused.status, 422, "{refused:?}");

    // A count stored as negN by someone else (another replica, an administrator) reads back:
    // the tracker's guard sees the change and reads the pod again.
    scene
        .admin()
        .merge_patch(
            &scene.pods_path(Some("w1")),
            &json!({"metadata": {"labels": {"active-jobs": "neg5"}}}),
        )
        .expect(200, "label the pod neg5");
    assert_eq!(tracker.increment("pod_name=w1").count(), -4);
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("neg4"));
}

#[test]
fn without_allow_negative_a_decrement_at_zero_answers_zero_and_stores_nothing() {
    let scene = Scene::new("counting");
    scene.pod("w1", &[("app", "worker")]);
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene.standalone(&account).start();
    let before = scene.read_pod("w1");
    assert_eq!(tracker.decrement("pod_name=w1").count(), 0);
    assert_eq!(tracker.decrement("pod_name=w1").count(), 0);
    let after = scene.read_pod("w1");
    assert_eq!(
        after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"],
        "not written at all: {after:#}"
    );
    assert_eq!(after["metadata"]["labels"], json!({"app": "worker"}));
    assert_eq!(
        tracker.increment("pod_name=w1").count(),
        1,
        "still counts from 0"
    );
}

#[test]
fn a_pod_outside_the_label_selector_answers_404_like_a_missing_pod_and_is_not_written() {
    let scene = Scene::new("counting");
    scene.pod("w1", &[("app", "worker")]);
    scene.pod("db1", &[("app", "db")]);
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene
        .standalone(&account)
        .args(["--label-selector=app=worker"])
        .start();
    let before = resource_version(&scene, "db1");
    for answer in [
        tracker.increment("pod_name=db1"),
        tracker.decrement("pod_name=db1"),
    ] {
        assert_eq!(answer.status, 404, "{answer:?}");
        says(&answer, &["db1"]);
    }
    assert_eq!(resource_version(&scene, "db1"), before, "db1 not written");
    assert_eq!(scene.label("db1", "active-jobs"), None);

    let missing = tracker.increment("pod_name=gone");
    assert_eq!(missing.status, 404, "{missing:?}");
    says(&missing, &["gone"]);
    assert_eq!(
        scene.admin().get(&scene.pods_path(Some("gone"))).status,
        404,
        "no pod was made"
    );

    // The selector lets its own pods through.
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("1"));

    // A pod that leaves the selector while counted is refused from then on.
    scene
        .admin()
        .merge_patch(
            &scene.pods_path(Some("w1")),
            &json!({"metadata": {"labels": {"app": "retired"}}}),
        )
        .expect(200, "relabel w1");
    let answer = tracker.increment("pod_name=w1");
    assert_eq!(answer.status, 404, "{answer:?}");
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("1"));
}

#[test]
fn a_label_that_is_not_a_count_answers_409_and_nothing_is_written() {
    let scene = Scene::new("counting");
    scene.pod("w1", &[("app", "worker"), ("active-jobs", "abc")]);
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene.standalone(&account).start();
    let before = resource_version(&scene, "w1");
    for answer in [
        tracker.increment("pod_name=w1"),
        tracker.decrement("pod_name=w1"),
    ] {
        assert_eq!(answer.status, 409, "{answer:?}");
        says(&answer, &["w1", "active-jobs", "abc"]);
    }
    assert_eq!(resource_version(&scene, "w1"), before, "not written");
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("abc"));

    // Once the administrator repairs the label, counting resumes from it.
    scene
        .admin()
        .merge_patch(
            &scene.pods_path(Some("w1")),
            &json!({"metadata": {"labels": {"active-jobs": "2"}}}),
        )
        .expect(200, "repair the label");
    assert_eq!(tracker.increment("pod_name=w1").count(), 3);
}

#[test]
fn a_prefixed_label_key_counts_on_a_pod_with_no_labels_at_all() {
    let scene = Scene::new("counting");
    let created = scene.create_pod(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "job", "image": "busybox:1.37.0"}]},
    }));
    assert_eq!(created["metadata"].get("labels"), None, "{created:#}");
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene
        .standalone(&account)
        .args(["--label=example.com/active-jobs"])
        .start();
    assert_eq!(tracker.increment("pod_name=bare").count(), 1);
    assert_eq!(tracker.increment("pod_name=bare").count(), 2);
    let labels = scene.labels("bare");
    assert_eq!(
        labels.get("example.com/active-jobs").map(String::as_str),
        Some("2")
    );
    assert_eq!(labels.len(), 1, "only the count: {labels:?}");
    assert!(
        scene
            .annotations("bare")
            .contains_key("example.com/active-jobs-writes"),
        "the write ids follow the label: {:?}",
        scene.annotations("bare")
    );
    assert_eq!(tracker.decrement("pod_name=bare").count(), 1);
    assert_eq!(tracker.decrement("pod_name=bare").count(), 0);
    assert_eq!(scene.labels("bare"), Default::default(), "no labels again");
}

/// Reports a stored pod Running and Ready, as its kubelet would (none runs here): the eviction
/// API consults budgets only for running pods, and the disruption controller counts only ready
/// ones as healthy.
fn run_and_ready(scene: &Scene, pod: &str) {
    scene
        .admin()
        .merge_patch(
            &format!("{}/status", scene.pods_path(Some(pod))),
            &json!({"status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
            }}),
        )
        .expect(200, "report the pod Running and Ready");
}

/// Asks the Eviction API to evict `pod`, as `kubectl drain` does, and returns the server's
/// first answer. Not through `testenv::Api`: its kube client keeps kube 5's default retry
/// layer, which repeats a 429 up to 15 times with backoff growing to minutes (a refused
/// eviction then took six minutes to come back), so the request goes through a client of the
/// same administrator with that layer off.
fn evict(scene: &Scene, pod: &str) -> testenv::Answer {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let path = format!("{}/eviction", scene.pods_path(Some(pod)));
    let body = json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": scene.namespace},
    });
    runtime.block_on(async {
        use http_body_util::BodyExt;
        let kubeconfig = kube::config::Kubeconfig::read_from(scene.cluster.admin_kubeconfig())
            .expect("the admin kubeconfig");
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("a usable kubeconfig");
        config.default_retry = false;
        let client = kube::Client::try_from(config).expect("a client");
        let request = http::Request::post(path.as_str())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(kube::client::Body::from(body.to_string().into_bytes()))
            .expect("a request");
        let response = client.send(request).await.expect("an answer");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        testenv::Answer {
            status,
            body: serde_json::from_slice(&bytes).expect("a JSON body"),
        }
    })
}

/// Waits until the disruption controller has observed budget `name` in its current generation
/// and counts `healthy` of its pods (all of them) healthy; returns the budget.
fn wait_budget(scene: &Scene, name: &str, healthy: i64) -> serde_json::Value {
    let path = format!(
        "/apis/policy/v1/namespaces/{}/poddisruptionbudgets/{name}",
        scene.namespace
    );
    let started = Instant::now();
    loop {
        let budget = scene.admin().get(&path).expect(200, "read the budget");
        let status = &budget["status"];
        if status["observedGeneration"] == budget["metadata"]["generation"]
            && status["expectedPods"] == healthy
            && status["currentHealthy"] == healthy
        {
            return budget;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the disruption controller never observed {healthy} healthy pods: {budget:#}\n{}",
            scene.cluster.log_tail("kube-controller-manager")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_readmes_budget_makes_the_real_eviction_api_refuse_busy_pods_and_evict_idle_ones() {
    let scene = Scene::new("counting");
    for pod in ["busy", "idle"] {
        scene.pod(pod, &[("app", "worker")]);
        run_and_ready(&scene, pod);
    }
    // The README's budget, as written there.
    scene
        .admin()
        .post(
            &format!(
                "/apis/policy/v1/namespaces/{}/poddisruptionbudgets",
                scene.namespace
            ),
            &json!({
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": "busy-workers"},
                "spec": {
                    "minAvailable": 9999,
                    "unhealthyPodEvictionPolicy": "IfHealthyBudget",
                    "selector": {
                        "matchLabels": {"app": "worker"},
                        "matchExpressions": [{"key": "active-jobs", "operator": "Exists"}],
                    },
                },
            }),
        )
        .expect(201, "create the budget");
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene.standalone(&account).start();
    assert_eq!(tracker.increment("pod_name=busy").count(), 1);
    let budget = wait_budget(&scene, "busy-workers", 1);
    assert_eq!(budget["status"]["desiredHealthy"], 9999, "{budget:#}");
    assert_eq!(budget["status"]["disruptionsAllowed"], 0, "{budget:#}");

    let idle = evict(&scene, "idle");
    assert_eq!(idle.status, 201, "the idle pod is evicted: {idle:?}");
    assert_eq!(idle.body["status"], "Success", "{idle:?}");
    assert_eq!(
        scene.admin().get(&scene.pods_path(Some("idle"))).status,
        404,
        "an unscheduled pod is deleted at once"
    );

    let busy = evict(&scene, "busy");
    assert_eq!(busy.status, 429, "the busy pod is protected: {busy:?}");
    assert_eq!(busy.body["reason"], "TooManyRequests", "{busy:?}");
    assert_eq!(
        busy.message(),
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        busy.body["details"]["causes"],
        json!([{
            "reason": "DisruptionBudget",
            "message": "The disruption budget busy-workers needs 9999 healthy pods and has 1 currently",
        }]),
        "{busy:?}"
    );
    let pod = scene.read_pod("busy");
    assert_eq!(pod["metadata"].get("deletionTimestamp"), None, "{pod:#}");
    assert_eq!(pod["metadata"]["labels"]["active-jobs"], "1");

    // The job ends: the label goes, and with it the budget's hold on the pod.
    assert_eq!(tracker.decrement("pod_name=busy").count(), 0);
    assert_eq!(scene.label("busy", "active-jobs"), None);
    let drained = evict(&scene, "busy");
    assert_eq!(drained.status, 201, "idle again, evicted: {drained:?}");
    assert_eq!(
        scene.admin().get(&scene.pods_path(Some("busy"))).status,
        404
    );
}
