//! Black-box tests of `doctor`: the real binary checks a namespace of the API test double, and
//! each finding shows in the text and in the JSON report with the right exit status.

mod support;

use std::process::Command;

use kube_double::{ApiServer, Rule, Subject, User};
use serde_json::{Value, json};
use support::doctor::Report;
use support::{NS, TOKEN};

/// A double where the identity doctor connects as (token [`TOKEN`]) may get and patch pods, as
/// the tracker must, and read the budgets, as doctor must.
fn api() -> ApiServer {
    let api = ApiServer::start();
    api.add_token(TOKEN, User::new("system:serviceaccount:jobs:job-tracker"));
    allow(&api, &["get", "patch"], "pods");
    allow(&api, &["list"], "poddisruptionbudgets");
    api
}

fn allow(api: &ApiServer, verbs: &[&str], resource: &str) {
    api.allow(
        Subject::user("system:serviceaccount:jobs:job-tracker"),
        Rule::new(verbs.iter().copied(), [resource]).namespace(NS),
    );
}

/// A policy/v1 budget selecting `app: worker` pods; `spec` is merged over the README's one
/// (`minAvailable: 9999`, `IfHealthyBudget`, `active-jobs` Exists).
fn budget(api: &ApiServer, name: &str, spec: Value) {
    let mut full = json!({
        "minAvailable": 9999,
        "unhealthyPodEvictionPolicy": "IfHealthyBudget",
        "selector": {
            "matchLabels": {"app": "worker"},
            "matchExpressions": [{"key": "active-jobs", "operator": "Exists"}],
        },
    });
    for (key, value) in spec.as_object().expect("a spec object") {
        if value.is_null() {
            full.as_object_mut().expect("an object").remove(key);
        } else {
            full[key] = value.clone();
        }
    }
    api.create_pdb(
        NS,
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name},
            "spec": full,
        }),
    );
}

fn doctor_command(api: &ApiServer, args: &[&str]) -> Command {
    let mut command = support::doctor::doctor_command();
    command
        .arg(format!("--kube-server={}", api.url()))
        .arg(format!("--kube-token={TOKEN}"))
        .arg(format!("--namespace={NS}"))
        .args(args);
    command
}

fn doctor(api: &ApiServer, args: &[&str]) -> Report {
    Report::of(|| doctor_command(api, args))
}

const CHECKS: [&str; 6] = [
    "budget",
    "min-available",
    "overlap",
    "unhealthy-pod-eviction-policy",
    "rights",
    "least-privilege",
];

#[test]
fn a_good_setup_passes_every_check_with_exit_status_0() {
    let api = api();
    budget(&api, "busy-workers", json!({}));
    // Another budget, on other pods: no overlap.
    budget(
        &api,
        "databases",
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}),
    );
    let report = doctor(&api, &[]);
    report.assert_exit(0);
    for name in CHECKS {
        assert_eq!(report.finding(name).0, "ok", "{name}:\n{}", report.text);
    }
    report.assert_finding("budget", "ok", &["busy-workers"]);
    assert_eq!(report.json["namespace"], NS);
    assert_eq!(report.json["label"], "active-jobs");
    assert_eq!(report.json["problems"], 0);
    assert!(
        report
            .text
            .lines()
            .last()
            .is_some_and(|l| l == "0 problems, 0 warnings"),
        "{}",
        report.text
    );
}

#[test]
fn a_missing_budget_is_a_problem() {
    let api = api();
    budget(
        &api,
        "databases",
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}),
    );
    let report = doctor(&api, &[]);
    report.assert_exit(1);
    report.assert_finding(
        "budget",
        "problem",
        &[
            "no PodDisruptionBudget in namespace jobs",
            "active-jobs",
            "operator: Exists",
            "busy pods can be evicted",
        ],
    );
    report.assert_finding("min-available", "warning", &["not checked"]);
    assert_eq!(report.json["problems"], 1);
}

#[test]
fn a_budget_with_a_custom_label_is_found_by_the_label_flag() {
    let api = api();
    budget(
        &api,
        "busy",
        json!({"selector": {"matchExpressions": [{"key": "example.com/busy", "operator": "Exists"}]}}),
    );
    doctor(&api, &[]).assert_finding("budget", "problem", &["active-jobs"]);
    let report = doctor(&api, &["--label=example.com/busy"]);
    report.assert_exit(0);
    report.assert_finding("budget", "ok", &["busy", "example.com/busy"]);
}

#[test]
fn a_percentage_min_available_is_a_problem_that_names_the_scale_subresource() {
    let api = api();
    budget(&api, "busy-workers", json!({"minAvailable": "100%"}));
    let report = doctor(&api, &[]);
    report.assert_exit(1);
    report.assert_finding(
        "min-available",
        "problem",
        &[
            "busy-workers",
            "minAvailable: 100%",
            "percentage",
            "scale subresource",
            "bare pods and Jobs",
            "9999",
        ],
    );
    report.assert_finding("budget", "ok", &[]);
}

#[test]
fn max_unavailable_is_a_problem_too() {
    let api = api();
    budget(
        &api,
        "busy-workers",
        json!({"minAvailable": null, "maxUnavailable": 0}),
    );
    let report = doctor(&api, &[]);
    report.assert_exit(1);
    report.assert_finding(
        "min-available",
        "problem",
        &[
            "maxUnavailable: 0",
            "scale subresource",
            "minAvailable: 9999",
        ],
    );
}

#[test]
fn overlapping_budgets_are_a_problem_named_by_the_pod_they_share() {
    let api = api();
    allow(&api, &["list"], "pods");
    api.create_pod(NS, "worker-1", &[("app", "worker")]);
    api.create_pod(NS, "db-1", &[("app", "db")]);
    budget(&api, "busy-workers", json!({}));
    budget(
        &api,
        "all-workers",
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "worker"}}}),
    );
    let report = doctor(&api, &[]);
    report.assert_exit(1);
    report.assert_finding(
        "overlap",
        "problem",
        &[
            "pod worker-1",
            "all-workers and busy-workers",
            "more than one budget",
            "500 instead of 429",
        ],
    );
    // Listing pods is more than the tracker needs.
    report.assert_finding("least-privilege", "warning", &["list"]);
}

#[test]
fn budgets_that_could_overlap_are_a_warning_when_no_pod_shows_it() {
    let api = api();
    budget(&api, "busy-workers", json!({}));
    budget(
        &api,
        "everything",
        json!({"minAvailable": 1, "selector": {}}),
    );
    let report = doctor(&api, &[]);
    report.assert_exit(0);
    report.assert_finding(
        "overlap",
        "warning",
        &[
            "busy-workers and everything",
            "active-jobs=1",
            "may not list pods",
        ],
    );
}

#[test]
fn always_allow_for_unhealthy_pods_is_a_warning() {
    let api = api();
    budget(
        &api,
        "busy-workers",
        json!({"unhealthyPodEvictionPolicy": "AlwaysAllow"}),
    );
    let report = doctor(&api, &[]);
    report.assert_exit(0);
    report.assert_finding(
        "unhealthy-pod-eviction-policy",
        "warning",
        &["AlwaysAllow", "not ready", "IfHealthyBudget"],
    );
    assert_eq!(report.json["warnings"], 1);
}

#[test]
fn missing_patch_rights_are_a_problem() {
    let api = ApiServer::start();
    api.add_token(TOKEN, User::new("system:serviceaccount:jobs:job-tracker"));
    allow(&api, &["get"], "pods");
    allow(&api, &["list"], "poddisruptionbudgets");
    budget(&api, "busy-workers", json!({}));
    let report = doctor(&api, &[]);
    report.assert_exit(1);
    report.assert_finding(
        "rights",
        "problem",
        &["may not patch pods in namespace jobs", "get and patch"],
    );
    report.assert_finding("budget", "ok", &[]);
}

#[test]
fn more_rights_than_the_tracker_needs_are_a_warning() {
    let api = api();
    allow(&api, &["*"], "pods");
    budget(&api, "busy-workers", json!({}));
    let report = doctor(&api, &[]);
    report.assert_exit(0);
    report.assert_finding(
        "least-privilege",
        "warning",
        &["do anything (*)", "only get and patch"],
    );
}

#[test]
fn with_events_the_right_to_create_events_is_checked_and_its_absence_is_a_warning() {
    let api = api();
    budget(&api, "busy-workers", json!({}));
    let without_flag = doctor(&api, &[]);
    assert!(
        without_flag.json["checks"]
            .as_array()
            .is_some_and(|checks| checks.iter().all(|c| c["name"] != "events")),
        "events are not checked without --events:\n{}",
        without_flag.text
    );
    let missing = doctor(&api, &["--events=true"]);
    missing.assert_exit(0);
    missing.assert_finding(
        "events",
        "warning",
        &[
            "may not create events in namespace jobs",
            "[create] on events",
        ],
    );
    allow(&api, &["create"], "events");
    let granted = doctor(&api, &["--events=true"]);
    granted.assert_exit(0);
    granted.assert_finding("events", "ok", &["may create events in namespace jobs"]);
}

#[test]
fn budgets_doctor_may_not_read_are_not_checked_and_say_so() {
    let api = ApiServer::start();
    api.add_token(TOKEN, User::new("system:serviceaccount:jobs:job-tracker"));
    allow(&api, &["get", "patch"], "pods");
    let report = doctor(&api, &[]);
    report.assert_exit(0);
    report.assert_finding(
        "budget",
        "warning",
        &["not checked", "may not list PodDisruptionBudgets"],
    );
    report.assert_finding("rights", "ok", &[]);
}

#[test]
fn doctor_takes_serve_flags_and_refuses_bad_ones_with_exit_status_2() {
    let api = api();
    let help = doctor_command(&api, &["--help"]).output().expect("runs");
    assert!(help.status.success(), "{help:?}");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--kube-server",
        "--kubeconfig",
        "--kube-token",
        "-n, --kube-namespace",
        "--namespace",
        "--label ",
        "--label-selector",
        "--output",
    ] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
    assert!(!help.contains("Run the webhook server"), "{help}");
    for bad in [
        &["--output=yaml"][..],
        &["--no-such-flag=1"],
        &["--label=-x-"],
    ] {
        let output = doctor_command(&api, bad).output().expect("runs");
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {output:?}");
    }
}

#[test]
fn service_accounts_of_opted_in_pods_without_get_and_patch_are_a_problem() {
    let api = api();
    budget(&api, "busy-workers", json!({}));
    allow(&api, &["list"], "pods");
    // Doctor asks about other accounts with SubjectAccessReviews (cluster-scoped).
    api.allow(
        Subject::user("system:serviceaccount:jobs:job-tracker"),
        Rule::new(["create"], ["subjectaccessreviews"]),
    );
    let opted_in = |name: &str, account: &str| {
        let (name, account) = (name.to_owned(), account.to_owned());
        move |pod: kube_double::NewPod| {
            pod.label("app", "worker")
                .label("pod-webhook-tracker.io/inject", "true")
                .service_account(account)
                .phase("Running")
                .node(name)
        }
    };
    api.create_pod_with(NS, "good-0", opted_in("node-a", "workers"));
    api.create_pod_with(NS, "bare-0", opted_in("node-b", "default"));
    api.allow(
        Subject::user("system:serviceaccount:jobs:workers"),
        Rule::new(["get", "patch"], ["pods"]).namespace(NS),
    );
    let report = doctor(&api, &[]);
    report.assert_exit(1);
    report.assert_finding(
        "injected-accounts",
        "problem",
        &[
            "service account default of the opted-in pods (bare-0) may not get or patch pods",
            "manifests/sidecar/rbac",
        ],
    );

    api.allow(
        Subject::user("system:serviceaccount:jobs:default"),
        Rule::new(["get", "patch"], ["pods"]).namespace(NS),
    );
    let report = doctor(&api, &[]);
    report.assert_finding("injected-accounts", "ok", &["default", "workers"]);
}

#[test]
fn with_authenticate_the_right_to_create_token_reviews_is_checked() {
    let api = api();
    budget(&api, "busy-workers", json!({}));
    let report = doctor(
        &api,
        &["--standalone=true", "--authenticate=serviceaccount"],
    );
    report.assert_finding(
        "token-reviews",
        "problem",
        &["may not create tokenreviews", "system:auth-delegator"],
    );
    report.assert_exit(1);
    api.allow(
        Subject::user("system:serviceaccount:jobs:job-tracker"),
        Rule::new(["create"], ["tokenreviews"]),
    );
    let report = doctor(
        &api,
        &["--standalone=true", "--authenticate=serviceaccount"],
    );
    report.assert_finding("token-reviews", "ok", &["may create tokenreviews"]);
    let report = doctor(&api, &[]);
    assert!(
        report.json["checks"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["name"] != "token-reviews")),
        "{}",
        report.text
    );
}
