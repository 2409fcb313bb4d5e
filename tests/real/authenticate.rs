//! `serve --authenticate=serviceaccount` on a real API server: pod-bound tokens made by
//! TokenRequest and checked by TokenReview.

#[path = "../support/mod.rs"]
mod support; // its own `#![allow(dead_code)]` covers the parts this file does not use

#[path = "scene.rs"]
#[allow(dead_code)]
// each test file uses a different part of it
// scene.rs's `wait_allowed(&PathBuf)` is shared and not this file's to change.
#[allow(clippy::ptr_arg)]
mod scene;

use std::time::{Duration, Instant};

use scene::{Scene, get_and_patch_pods};
use serde_json::{Value, json};
use support::{Answer, Tracker};
use testenv::Api;

/// The audience the tracker asks TokenReview about (its `--token-audience` default).
const AUDIENCE: &str = "pod-webhook-tracker";
/// What every 401 carries.
const CHALLENGE: &str = "Bearer realm=\"pod-webhook-tracker\"";

/// A scene with the tracker's account (get and patch on pods, and `create` on tokenreviews
/// through `system:auth-delegator`, as README says) and a caller account `caller` with two
/// pods, `caller-pod` and `other-pod`, both running as it.
fn scene() -> Scene {
    let scene = Scene::new("authenticate");
    let ns = scene.namespace.clone();
    scene.account("tracker", get_and_patch_pods(&[]));
    scene
        .admin()
        .post(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            &json!({
                "metadata": {"name": format!("{ns}-tracker-reviews")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
                "subjects": [{"kind": "ServiceAccount", "name": "tracker", "namespace": ns}],
            }),
        )
        .expect(201, "bind system:auth-delegator");
    scene
        .admin()
        .post(
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            &json!({"metadata": {"name": "caller"}}),
        )
        .expect(201, "create the caller's account");
    for pod in ["caller-pod", "other-pod"] {
        caller_pod(&scene, pod);
    }
    // Both rights must be in effect before the tracker starts: /readyz checks the review right
    // once, at start.
    let kubeconfig = scene.kubeconfig("tracker");
    scene.wait_allowed(&kubeconfig, &scene.pods_path(Some("caller-pod")));
    wait_can_review(&Api::from_kubeconfig(&kubeconfig));
    scene
}

/// A pod running as the caller's account (a token can be bound only to a pod of its account).
fn caller_pod(scene: &Scene, name: &str) -> Value {
    scene.create_pod(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "worker"}},
        "spec": {
            "serviceAccountName": "caller",
            "containers": [{"name": "job", "image": "busybox:1.37.0"}],
        },
    }))
}

/// Waits until `api`'s identity may create tokenreviews (an RBAC binding takes a moment).
fn wait_can_review(api: &Api) {
    let started = Instant::now();
    loop {
        let review = api.post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &json!({"spec": {"resourceAttributes": {
                "group": "authentication.k8s.io", "resource": "tokenreviews", "verb": "create"}}}),
        );
        if review.body["status"]["allowed"] == true {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the tracker may create tokenreviews: {review:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The authenticated standalone tracker, ready (its review right checked), with an admin
/// listener for its metrics (the webhook address's `/metrics` wants an allowed caller).
fn tracker(scene: &Scene) -> Tracker {
    let tracker = scene
        .standalone("tracker")
        .args([
            "--authenticate=serviceaccount",
            "--admin-address=127.0.0.1:0",
        ])
        .start();
    tracker.wait_ready();
    tracker
}

/// The caller's token for the tracker's audience, bound to `pod`.
fn bound_token(scene: &Scene, pod: &str) -> String {
    scene
        .cluster
        .token(&scene.namespace, "caller", &[AUDIENCE], Some(pod))
}

/// `POST path?query` with `token` as a bearer token, if any.
fn call(tracker: &Tracker, path: &str, query: &str, token: Option<&str>) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("Authorization", b)])
        .unwrap_or_default();
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    tracker.request("POST", &target, &headers)
}

/// The pod's `metadata.resourceVersion`: it changes with every stored write.
fn version(scene: &Scene, pod: &str) -> String {
    scene.read_pod(pod)["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion")
        .to_owned()
}

/// The sum of the tracker's metric lines that start with `series` (a name and `{`, or a name
/// and some of its labels), read from its admin listener.
fn metric(tracker: &Tracker, series: &str, also: &[&str]) -> u64 {
    let admin = tracker.admin.expect("an admin address");
    let metrics = support::request(admin, "GET", "/metrics", &[]);
    assert_eq!(metrics.status, 200, "{metrics:?}");
    metrics
        .body
        .lines()
        .filter(|line| line.starts_with(series))
        .filter(|line| also.is_empty() || also.iter().any(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// How many pod reads and writes the tracker has sent (its `api_requests_total` for `get` and
/// `patch`): the real server keeps no per-request record a test can read, the tracker does.
fn pod_requests(tracker: &Tracker) -> u64 {
    metric(
        tracker,
        "pod_webhook_tracker_api_requests_total{",
        &["verb=\"get\"", "verb=\"patch\""],
    )
}

/// How many tokens the API server's TokenReview refused (each asked once, then cached).
fn refused_reviews(tracker: &Tracker) -> u64 {
    metric(
        tracker,
        "pod_webhook_tracker_token_reviews_total{reason=\"refused\"}",
        &[],
    )
}

#[test]
fn a_pod_bound_token_counts_its_own_pod_and_no_other_pod_which_is_not_even_read() {
    let scene = scene();
    let tracker = tracker(&scene);
    let own = bound_token(&scene, "caller-pod");

    // Without pod_name the token's pod is counted; naming it is the same.
    let answer = call(&tracker, "/increment", "", Some(&own));
    assert_eq!(
        (answer.status, answer.body.trim()),
        (200, "1"),
        "{answer:?}"
    );
    let answer = call(&tracker, "/increment", "pod_name=caller-pod", Some(&own));
    assert_eq!(answer.count(), 2, "{answer:?}");
    assert_eq!(
        scene.label("caller-pod", "active-jobs").as_deref(),
        Some("2")
    );

    // Another pod of the same account, and a pod that does not exist, get the same refusal:
    // the answer is decided before any pod is read, so it says nothing about pods.
    let other = version(&scene, "other-pod");
    let requests = pod_requests(&tracker);
    assert!(requests >= 2, "the two counts were written: {requests}");
    let ns = &scene.namespace;
    for pod in ["other-pod", "no-such-pod"] {
        let answer = call(
            &tracker,
            "/increment",
            &format!("pod_name={pod}"),
            Some(&own),
        );
        assert_eq!(answer.status, 403, "{pod}: {answer:?}");
        let says =
            format!("system:serviceaccount:{ns}:caller may count only its own pod {ns}/caller-pod");
        assert!(answer.body.contains(&says), "{pod}: {}", answer.body);
    }
    assert_eq!(version(&scene, "other-pod"), other, "nothing written");
    assert_eq!(scene.label("other-pod", "active-jobs"), None);
    assert_eq!(
        pod_requests(&tracker),
        requests,
        "no pod was read or written for a refused call"
    );

    assert_eq!(call(&tracker, "/decrement", "", Some(&own)).count(), 1);
    assert_eq!(call(&tracker, "/decrement", "", Some(&own)).count(), 0);
    assert_eq!(
        scene.label("caller-pod", "active-jobs"),
        None,
        "removed at zero"
    );
}

#[test]
fn missing_garbage_forged_and_foreign_audience_tokens_are_401_and_nothing_is_touched() {
    let scene = scene();
    let tracker = tracker(&scene);
    let ns = scene.namespace.clone();
    let cluster = scene.cluster;
    // A real token of the right pod, for audiences the tracker is not: another service's, and
    // the API server's own (a token for the Kubernetes API must not count pods).
    let elsewhere = cluster.token(&ns, "caller", &["elsewhere"], Some("caller-pod"));
    let kubernetes = cluster.token(&ns, "caller", &[], Some("caller-pod"));
    // The right audience and pod, signed by someone else.
    let forged = {
        let real = bound_token(&scene, "caller-pod");
        let (signed, _) = real.rsplit_once('.').expect("a JWT");
        format!("{signed}.c2lnbmVkLWJ5LXNvbWVvbmUtZWxzZQ")
    };
    let before = version(&scene, "caller-pod");
    let requests = pod_requests(&tracker);
    let refused = refused_reviews(&tracker);
    // The last three are refused by the real TokenReview, in the server's words.
    for (what, token, says) in [
        ("no token", None, "no Authorization header"),
        ("garbage", Some("garbage"), "not a JWT"),
        (
            "forged",
            Some(forged.as_str()),
            "[invalid bearer token, go-jose/go-jose: error in cryptographic primitive]",
        ),
        (
            "another audience",
            Some(elsewhere.as_str()),
            "token audiences [\"elsewhere\"] is invalid for the target audiences [\"pod-webhook-tracker\"]",
        ),
        (
            "the API server's audience",
            Some(kubernetes.as_str()),
            "token audiences [\"https://kubernetes.default.svc.cluster.local\"] is invalid",
        ),
    ] {
        for query in ["", "pod_name=caller-pod"] {
            let answer = call(&tracker, "/increment", query, token);
            assert_eq!(answer.status, 401, "{what}: {answer:?}");
            assert_eq!(
                answer.header("www-authenticate"),
                Some(CHALLENGE),
                "{what}: {answer:?}"
            );
            assert!(answer.body.contains(says), "{what}: {}", answer.body);
        }
    }
    assert_eq!(version(&scene, "caller-pod"), before, "nothing written");
    assert_eq!(
        pod_requests(&tracker),
        requests,
        "no pod was read or written for an unauthenticated call"
    );
    assert_eq!(
        refused_reviews(&tracker) - refused,
        3,
        "one TokenReview per token the tracker could not rule out itself"
    );
    // The right token still counts: the refusals were the tokens', not the tracker's.
    let own = bound_token(&scene, "caller-pod");
    assert_eq!(call(&tracker, "/increment", "", Some(&own)).count(), 1);
    assert!(
        pod_requests(&tracker) > requests,
        "and that write is counted"
    );
}

#[test]
fn the_token_of_a_deleted_pod_counts_nothing_on_a_pod_re_created_under_its_name() {
    let scene = scene();
    let tracker = tracker(&scene);
    let old = bound_token(&scene, "caller-pod");
    let old_uid = scene.read_pod("caller-pod")["metadata"]["uid"].clone();
    assert_eq!(call(&tracker, "/increment", "", Some(&old)).count(), 1);

    // The pod goes (never scheduled, so at once) and a namesake comes, with a new uid.
    let path = scene.pods_path(Some("caller-pod"));
    scene.admin().delete(&path).expect(200, "delete the pod");
    let started = Instant::now();
    while scene.admin().get(&path).status != 404 {
        assert!(started.elapsed() < Duration::from_secs(20), "the pod went");
        std::thread::sleep(Duration::from_millis(50));
    }
    let namesake = caller_pod(&scene, "caller-pod");
    assert_ne!(namesake["metadata"]["uid"], old_uid, "another pod");
    let before = version(&scene, "caller-pod");

    // README: the API server keeps accepting a token for about 10 s after its pod is deleted
    // (and the tracker reuses a verdict as long), and then the tracker's uid test refuses with
    // 403; once the server looks at the pod again, the review itself fails: 401. Either way,
    // nothing is written; the old token is asked until the server's own answer shows.
    let mut seen = Vec::new();
    let started = Instant::now();
    loop {
        let answer = call(&tracker, "/increment", "", Some(&old));
        match answer.status {
            403 => assert!(answer.body.contains("is another pod"), "{}", answer.body),
            401 => {
                assert_eq!(answer.header("www-authenticate"), Some(CHALLENGE));
                // The real TokenReview itself now refuses the token: its pod is another.
                let says = format!(
                    "pod UID ({}) does not match service account pod ref claim ({})",
                    namesake["metadata"]["uid"].as_str().expect("a uid"),
                    old_uid.as_str().expect("a uid")
                );
                assert!(answer.body.contains(&says), "{}", answer.body);
            }
            _ => panic!("the old token counted or failed otherwise: {answer:?}"),
        }
        assert_eq!(version(&scene, "caller-pod"), before, "nothing written");
        if seen.last() != Some(&answer.status) {
            seen.push(answer.status);
        }
        if answer.status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the API server stopped trusting the token: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The namesake came within a second of the old token's review, so the first answers are
    // the tracker's own 403; the API server's 401 follows and stays.
    assert_eq!(seen, [403, 401], "the old token's answers, in order");
    assert_eq!(scene.label("caller-pod", "active-jobs"), None);

    // The namesake's own token counts it.
    let new = bound_token(&scene, "caller-pod");
    assert_eq!(call(&tracker, "/increment", "", Some(&new)).count(), 1);
    assert_eq!(
        scene.label("caller-pod", "active-jobs").as_deref(),
        Some("1")
    );
}
