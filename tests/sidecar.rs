//! Black-box tests of sidecar mode (identity from the downward API, least privilege, its own pod
//! only) and of the standalone mode's flag, namespaces, allow-list and selector.

mod support;

use std::time::Duration;

use kube_double::{ApiServer, Rule, Subject, User};
use support::{NS, TOKEN, Tracker, api, standalone};

/// A double where the tracker may only get and patch `job-1` (no list), like the sidecar Role.
fn least_privilege_api() -> ApiServer {
    let api = ApiServer::start();
    api.add_token(TOKEN, User::new("system:serviceaccount:jobs:job-tracker"));
    api.allow(
        Subject::user("system:serviceaccount:jobs:job-tracker"),
        Rule::new(["get", "patch"], ["pods"])
            .namespace(NS)
            .resource_names(["job-1"]),
    );
    api.create_pod(NS, "job-1", &[("app", "worker")]);
    api.create_pod(NS, "job-2", &[("app", "worker")]);
    api
}

fn sidecar(api: &ApiServer) -> support::TrackerBuilder {
    Tracker::builder()
        .args([
            format!("--kube-server={}", api.url()),
            format!("--kube-token={TOKEN}"),
        ])
        .env("POD_NAME", "job-1")
        .env("POD_NAMESPACE", NS)
}

#[test]
fn a_sidecar_needs_only_its_environment_and_counts_its_own_pod() {
    let api = least_privilege_api();
    let tracker = sidecar(&api).start();
    assert!(
        tracker
            .log()
            .contains("sidecar mode: tracking own pod jobs/job-1"),
        "{}",
        tracker.log()
    );
    assert_eq!(tracker.increment("").count(), 1);
    assert_eq!(
        tracker.increment("pod_name=job-1").count(),
        2,
        "its own name is accepted"
    );
    assert_eq!(tracker.decrement("").count(), 1);
    assert_eq!(
        api.labels(NS, "job-1")
            .expect("pod")
            .get("active-jobs")
            .map(String::as_str),
        Some("1")
    );
    assert!(
        api.requests()
            .iter()
            .all(|r| r.method != "GET" || !r.path.ends_with("/pods")),
        "never lists"
    );
}

#[test]
fn a_sidecar_becomes_ready_once_its_pod_is_found_and_patchable() {
    let api = least_privilege_api();
    let tracker = sidecar(&api).args(["--admin-address=127.0.0.1:0"]).start();
    tracker
        .wait_for_line("found and patchable: ready", Duration::from_secs(20))
        .expect("becomes ready");
    let admin = tracker.admin.expect("an admin address");
    assert_eq!(support::request(admin, "GET", "/readyz", &[]).status, 200);
    assert_eq!(support::request(admin, "GET", "/healthz", &[]).status, 200);
    assert_eq!(
        support::request(admin, "POST", "/increment", &[]).status,
        404,
        "counting stays on loopback"
    );
}

#[test]
fn a_sidecar_refuses_another_pod_with_403_and_writes_nothing() {
    let api = least_privilege_api();
    let tracker = sidecar(&api).start();
    let answer = tracker.increment("pod_name=job-2");
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        answer.body.contains("jobs/job-2") && answer.body.contains("own pod jobs/job-1"),
        "{answer:?}"
    );
    let answer = tracker.increment("namespace=other");
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(
        api.labels(NS, "job-2").expect("pod").get("active-jobs"),
        None
    );
    assert!(
        api.requests().iter().all(|r| !r.path.contains("job-2")),
        "no API call for another pod"
    );
}

#[test]
fn a_sidecar_without_a_namespace_refuses_to_start_and_says_what_to_set() {
    let api = least_privilege_api();
    let (status, output) = Tracker::builder()
        .args([
            format!("--kube-server={}", api.url()),
            format!("--kube-token={TOKEN}"),
        ])
        .env("POD_NAME", "job-1")
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("POD_NAMESPACE"), "{output}");
}

#[test]
fn a_missing_permission_is_reported_at_start_up_and_keeps_the_sidecar_not_ready() {
    let api = ApiServer::start();
    api.add_token(TOKEN, User::new("system:serviceaccount:jobs:job-tracker"));
    api.allow(
        Subject::user("system:serviceaccount:jobs:job-tracker"),
        Rule::new(["get"], ["pods"]).namespace(NS),
    );
    api.create_pod_with(NS, "job-1", |pod| pod.service_account("job-tracker"));
    let tracker = sidecar(&api).args(["--admin-address=127.0.0.1:0"]).start();
    let line = tracker
        .wait_for_line("not ready", Duration::from_secs(20))
        .expect("a not-ready line");
    for part in ["may not patch pod jobs/job-1", "job-tracker", "get, patch"] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
    let admin = tracker.admin.expect("an admin address");
    let ready = support::request(admin, "GET", "/readyz", &[]);
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body.contains("may not patch"), "{ready:?}");
    let answer = tracker.increment("");
    assert_eq!(
        answer.status, 502,
        "a call is refused by the API server, never acknowledged: {answer:?}"
    );
    assert_eq!(
        api.labels(NS, "job-1").expect("pod").get("active-jobs"),
        None
    );
}

#[test]
fn the_standalone_flag_serves_any_named_pod_even_with_pod_name_set() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api)
        .args(["--standalone"])
        .env("POD_NAME", "tracker-0")
        .env("POD_NAMESPACE", "ops")
        .start();
    assert!(
        tracker
            .log()
            .contains("standalone mode: --standalone is set"),
        "{}",
        tracker.log()
    );
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
}

#[test]
fn standalone_callers_may_name_a_namespace_within_the_allow_list() {
    let api = ApiServer::start();
    api.add_token(TOKEN, User::new("tracker"));
    api.allow(
        Subject::user("tracker"),
        Rule::new(["get", "patch"], ["pods"]),
    );
    api.create_pod("batch", "worker-1", &[]);
    api.create_pod("prod", "worker-1", &[]);
    let tracker = Tracker::builder()
        .args([
            format!("--kube-server={}", api.url()),
            format!("--kube-token={TOKEN}"),
            "--standalone=true".into(),
            "--namespace=batch".into(),
            "--allowed-namespaces=batch,etl".into(),
        ])
        .start();
    assert_eq!(
        tracker
            .increment("pod_name=worker-1&namespace=batch")
            .count(),
        1
    );
    assert_eq!(
        tracker.increment("pod_name=worker-1").count(),
        2,
        "the default namespace is --namespace"
    );
    let refused = tracker.increment("pod_name=worker-1&namespace=prod");
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(
        api.labels("prod", "worker-1")
            .expect("pod")
            .get("active-jobs"),
        None
    );
}

#[test]
fn the_originals_deployment_args_work_unchanged() {
    let api = api();
    api.create_pod(
        NS,
        "fileflows-node-1",
        &[
            ("app.kubernetes.io/instance", "fileflows"),
            ("app.kubernetes.io/name", "fileflows"),
        ],
    );
    api.create_pod(NS, "other", &[("app.kubernetes.io/name", "other")]);
    let tracker = Tracker::builder()
        .args([
            format!("--kube-server={}", api.url()),
            format!("--kube-token={TOKEN}"),
            format!("--namespace={NS}"),
            "--label-selector=app.kubernetes.io/instance=fileflows,app.kubernetes.io/name=fileflows".into(),
        ])
        .start();
    assert!(
        tracker
            .log()
            .contains("standalone mode: POD_NAME is not set"),
        "{}",
        tracker.log()
    );
    assert_eq!(tracker.increment("pod_name=fileflows-node-1").count(), 1);
    assert_eq!(tracker.decrement("pod_name=fileflows-node-1").count(), 0);
    assert_eq!(tracker.increment("pod_name=other").status, 404);
}

#[test]
fn a_ready_sidecar_counts_its_first_job_with_one_patch_because_the_start_up_check_read_the_pod() {
    let api = least_privilege_api();
    let tracker = sidecar(&api).start();
    tracker.wait_ready();
    api.reset_counts();
    assert_eq!(tracker.increment("").count(), 1);
    let methods: Vec<String> = api.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["PATCH"], "no second read of the pod");
    // A primed view is only a starting point: another writer's change is caught by the guard.
    api.set_label(NS, "job-1", "active-jobs", Some("5"));
    assert_eq!(tracker.increment("").count(), 6);
}

/// A glibc build does not load glibc's libm: the one function it needs from it is its own
/// (`src/no_libm.rs`), and the library alone would cost a sidecar about 0.4 MiB resident.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn a_glibc_build_loads_libc_but_not_libm() {
    let api = least_privilege_api();
    let tracker = sidecar(&api).start();
    tracker.wait_ready();
    let maps = tracker.memory_maps();
    assert!(
        maps.contains("libc.so"),
        "the maps are the process's own: {maps}"
    );
    assert!(!maps.contains("libm.so"), "libm is loaded: {maps}");
}
