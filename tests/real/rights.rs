//! The tracker's rights on a real API server: the sidecar's least-privilege Role (the one in
//! `manifests/sidecar/rbac`, and one narrowed by `resourceNames`) and its
//! SelfSubjectAccessReview advice, the standalone service's `--allowed-namespaces`, and `doctor`
//! judging a good and a broken setup.

// support/mod.rs allows its own dead code (an outer allow here too is a clippy error).
#[path = "../support/mod.rs"]
mod support;

#[path = "scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use scene::{Scene, get_and_patch_pods};
use serde_json::{Value, json};
use support::doctor::Report;
use testenv::{Api, Cluster};

/// Creates pod `name` (labelled `app: worker`) that runs as service account `account`, as the
/// administrator: the sidecar names that account in its advice, read from the pod's spec.
fn pod_as(scene: &Scene, name: &str, account: &str) {
    scene.create_pod(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "worker"}},
        "spec": {
            "serviceAccountName": account,
            "containers": [{"name": "job", "image": "busybox:1.37.0"}],
        },
    }));
}

/// The pod's `metadata.resourceVersion`: unchanged means nothing at all was written to it.
fn resource_version(scene: &Scene, pod: &str) -> String {
    scene.read_pod(pod)["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion")
        .to_owned()
}

/// `GET /readyz` on the tracker's admin address.
fn readyz(tracker: &support::Tracker) -> support::Answer {
    let admin = tracker.admin.expect("started with --admin-address");
    support::request(admin, "GET", "/readyz", &[])
}

/// Asserts that `answer` is the API server's 403.
fn forbidden(answer: &testenv::Answer, what: &str) {
    assert_eq!(answer.status, 403, "{what}: {answer:?}");
    assert_eq!(answer.body["reason"], "Forbidden", "{what}: {answer:?}");
}

/// What `identity` may do in namespace `ns`, as the server's SelfSubjectRulesReview lists it:
/// `(apiGroups, resources, resourceNames, verbs)` of each resource rule, sorted.
fn resource_rules(identity: &Api, ns: &str) -> Vec<(Value, Value, Value, Value)> {
    let review = identity
        .post(
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            &json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectRulesReview",
                "spec": {"namespace": ns},
            }),
        )
        .expect(201, "a SelfSubjectRulesReview");
    assert_eq!(review["status"]["incomplete"], false, "{review:#}");
    let mut rules: Vec<_> = review["status"]["resourceRules"]
        .as_array()
        .expect("resource rules")
        .iter()
        .map(|rule| {
            (
                rule["apiGroups"].clone(),
                rule["resources"].clone(),
                rule.get("resourceNames").cloned().unwrap_or(Value::Null),
                rule["verbs"].clone(),
            )
        })
        .collect();
    rules.sort_by_key(|rule| format!("{rule:?}"));
    rules
}

/// The rules every service account has from the default cluster roles, which the tracker's
/// Role adds to: `system:basic-user` (ask what it may do, who it is) and
/// `system:cluster-trust-bundle-discovery` (read ClusterTrustBundles, bound to all service
/// accounts since ClusterTrustBundle is on by default).
fn everyones_rules() -> Vec<(Value, Value, Value, Value)> {
    vec![
        (
            json!(["certificates.k8s.io"]),
            json!(["clustertrustbundles"]),
            Value::Null,
            json!(["get", "list", "watch"]),
        ),
        (
            json!(["authentication.k8s.io"]),
            json!(["selfsubjectreviews"]),
            Value::Null,
            json!(["create"]),
        ),
        (
            json!(["authorization.k8s.io"]),
            json!(["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
            Value::Null,
            json!(["create"]),
        ),
    ]
}

#[test]
fn the_manifests_sidecar_role_lets_a_sidecar_count_its_own_pod_and_do_nothing_else() {
    let scene = Scene::new("rights");
    let ns = &scene.namespace;
    // The manifests themselves, applied as an operator would (the kustomization names no
    // namespace, so -n places it).
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/sidecar/rbac");
    let applied = scene
        .cluster
        .kubectl()
        .args(["apply", "-n", ns, "-k"])
        .arg(&rbac)
        .output()
        .expect("kubectl runs");
    assert!(applied.status.success(), "kubectl apply -k: {applied:?}");
    let role = scene
        .admin()
        .get(&format!(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/job-tracker"
        ))
        .expect(200, "the manifests' Role");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]),
        "the Role this test relies on"
    );
    pod_as(&scene, "w1", "job-tracker");
    pod_as(&scene, "w2", "job-tracker");
    let kubeconfig = scene.kubeconfig("job-tracker");
    scene.wait_allowed(&kubeconfig, &scene.pods_path(Some("w1")));

    let tracker = scene
        .sidecar("job-tracker", "w1")
        .args(["--admin-address=127.0.0.1:0"])
        .start();
    tracker.wait_ready();
    assert_eq!(readyz(&tracker).status, 200, "{}", tracker.log());
    assert_eq!(tracker.increment("").count(), 1);
    assert_eq!(tracker.increment("pod_name=w1").count(), 2, "its own name");
    assert_eq!(tracker.decrement("").count(), 1);
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("1"));

    // Another pod: the Role would let the token patch it, the sidecar refuses.
    let before = resource_version(&scene, "w2");
    let other = tracker.increment(&format!("pod_name=w2&namespace={ns}"));
    assert_eq!(other.status, 403, "{other:?}");
    assert!(
        other.body.contains(&format!("{ns}/w2")) && other.body.contains(&format!("{ns}/w1")),
        "{other:?}"
    );
    assert_eq!(tracker.decrement("pod_name=w2").status, 403);
    assert_eq!(resource_version(&scene, "w2"), before, "w2 not written");
    assert_eq!(scene.label("w2", "active-jobs"), None);

    // The account itself can do nothing but get and patch pods of its namespace.
    let token = Api::from_kubeconfig(&kubeconfig);
    let pods = scene.pods_path(None);
    forbidden(&token.get(&pods), "list pods");
    forbidden(&token.get(&format!("{pods}?watch=true")), "watch pods");
    forbidden(
        &token.post(
            &pods,
            &json!({"metadata": {"name": "w3"}, "spec": {"containers": [{"name": "c", "image": "busybox:1.37.0"}]}}),
        ),
        "create a pod",
    );
    forbidden(&token.delete(&scene.pods_path(Some("w2"))), "delete a pod");
    forbidden(
        &token.put(&scene.pods_path(Some("w2")), &scene.read_pod("w2")),
        "update a pod",
    );
    forbidden(
        &token.merge_patch(
            &format!("{}/status", scene.pods_path(Some("w2"))),
            &json!({"status": {"phase": "Failed"}}),
        ),
        "patch a pod's status",
    );
    forbidden(
        &token.get(&format!("/api/v1/namespaces/{ns}/secrets")),
        "list secrets",
    );
    forbidden(
        &token.get("/api/v1/namespaces/default/pods/anything"),
        "get a pod of another namespace",
    );
    let mut expected = everyones_rules();
    expected.push((
        json!([""]),
        json!(["pods"]),
        Value::Null,
        json!(["get", "patch"]),
    ));
    expected.sort_by_key(|rule| format!("{rule:?}"));
    assert_eq!(resource_rules(&token, ns), expected, "nothing else");
    assert_eq!(resource_version(&scene, "w2"), before, "w2 still untouched");

    assert_eq!(tracker.decrement("").count(), 0);
    assert_eq!(scene.label("w1", "active-jobs"), None);
}

#[test]
fn a_role_naming_only_its_own_pod_is_enough_for_a_sidecar() {
    let scene = Scene::new("rights");
    let account = scene.account("tracker", get_and_patch_pods(&["w1"]));
    pod_as(&scene, "w1", &account);
    pod_as(&scene, "w2", &account);
    let kubeconfig = scene.kubeconfig(&account);
    scene.wait_allowed(&kubeconfig, &scene.pods_path(Some("w1")));
    let token = Api::from_kubeconfig(&kubeconfig);
    forbidden(&token.get(&scene.pods_path(Some("w2"))), "get another pod");

    let tracker = scene
        .sidecar(&account, "w1")
        .args(["--admin-address=127.0.0.1:0"])
        .start();
    // Its start-up review names the pod: a review of "patch pods" in general would be denied.
    tracker.wait_ready();
    assert_eq!(readyz(&tracker).status, 200, "{}", tracker.log());
    assert_eq!(tracker.increment("").count(), 1);
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("1"));
    let before = resource_version(&scene, "w2");
    assert_eq!(tracker.increment("pod_name=w2").status, 403);
    assert_eq!(resource_version(&scene, "w2"), before);
    assert_eq!(tracker.decrement("").count(), 0);
    assert_eq!(scene.label("w1", "active-jobs"), None);
}

#[test]
fn a_sidecar_that_may_not_patch_its_pod_says_so_stays_not_ready_and_recovers_once_granted() {
    let scene = Scene::new("rights");
    let ns = scene.namespace.clone();
    let account = scene.account(
        "tracker",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
    );
    pod_as(&scene, "w1", &account);
    let kubeconfig = scene.kubeconfig(&account);
    scene.wait_allowed(&kubeconfig, &scene.pods_path(Some("w1")));
    let tracker = scene
        .sidecar(&account, "w1")
        .args(["--admin-address=127.0.0.1:0"])
        .start();
    let line = tracker
        .wait_for_line("not ready", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no not-ready line:\n{}", tracker.log()));
    for part in [
        format!("service account {ns}/tracker"),
        format!("may not patch pod {ns}/w1"),
        "verbs [get, patch] on pods".to_owned(),
    ] {
        assert!(line.contains(&part), "{part:?} missing from {line}");
    }
    let ready = readyz(&tracker);
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(
        ready.body.contains(&format!("may not patch pod {ns}/w1"))
            && ready.body.contains(&format!("{ns}/tracker")),
        "{ready:?}"
    );
    // Meanwhile the API server has the last word: refused, never acknowledged.
    let call = tracker.increment("");
    assert_eq!(call.status, 502, "{call:?}");
    assert!(call.body.contains("patch"), "{call:?}");
    assert_eq!(scene.label("w1", "active-jobs"), None);

    scene
        .admin()
        .put(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/tracker"),
            &json!({"metadata": {"name": "tracker"}, "rules": get_and_patch_pods(&[])}),
        )
        .expect(200, "grant patch");
    let granted = Instant::now();
    // It checks again every 10 s; RBAC takes a moment more to take effect.
    let limit = Duration::from_secs(15);
    loop {
        let ready = readyz(&tracker);
        if ready.status == 200 {
            break;
        }
        assert!(
            granted.elapsed() < limit,
            "still not ready {:?} after the grant: {ready:?}\n{}",
            granted.elapsed(),
            tracker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        tracker
            .log()
            .contains(&format!("own pod {ns}/w1 found and patchable: ready")),
        "{}",
        tracker.log()
    );
    assert_eq!(tracker.increment("").count(), 1);
    assert_eq!(scene.label("w1", "active-jobs").as_deref(), Some("1"));
}

#[test]
fn a_standalone_tracker_refuses_namespaces_outside_its_allow_list_without_touching_the_pod() {
    let home = Scene::new("rights");
    let other = Scene {
        namespace: Cluster::shared().namespace("rights-other"),
        cluster: Cluster::shared(),
    };
    let account = home.account("tracker", get_and_patch_pods(&[]));
    // The same account may get and patch pods in the other namespace too.
    let ns = &other.namespace;
    other
        .admin()
        .post(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
            &json!({"metadata": {"name": "tracker"}, "rules": get_and_patch_pods(&[])}),
        )
        .expect(201, "a role in the other namespace");
    other
        .admin()
        .post(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
            &json!({
                "metadata": {"name": "tracker"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tracker"},
                "subjects": [{"kind": "ServiceAccount", "name": "tracker", "namespace": home.namespace}],
            }),
        )
        .expect(201, "bind it to the home namespace's account");
    home.pod("w1", &[("app", "worker")]);
    other.pod("w1", &[("app", "worker")]);
    let kubeconfig = home.kubeconfig(&account);
    home.wait_allowed(&kubeconfig, &home.pods_path(Some("w1")));
    home.wait_allowed(&kubeconfig, &other.pods_path(Some("w1")));

    // Only the other namespace is allowed, not even the default one.
    let tracker = home
        .standalone(&account)
        .args([format!("--allowed-namespaces={ns}")])
        .start();
    let before = resource_version(&home, "w1");
    for query in [
        "pod_name=w1".to_owned(),
        format!("pod_name=w1&namespace={}", home.namespace),
    ] {
        let answer = tracker.increment(&query);
        assert_eq!(answer.status, 403, "{query}: {answer:?}");
        assert!(
            answer.body.contains(&format!("{}/w1", home.namespace))
                && answer.body.contains("--allowed-namespaces"),
            "{answer:?}"
        );
    }
    assert_eq!(resource_version(&home, "w1"), before, "not written");
    // Not even read: the tracker has made no pod request yet.
    let metrics = tracker.request("GET", "/metrics", &[]);
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(
        !metrics.body.contains("api_requests_total{verb=\"get\"")
            && !metrics.body.contains("api_requests_total{verb=\"patch\""),
        "{}",
        metrics.body
    );

    let inside = format!("pod_name=w1&namespace={ns}");
    assert_eq!(tracker.increment(&inside).count(), 1);
    assert_eq!(tracker.increment(&inside).count(), 2);
    assert_eq!(other.label("w1", "active-jobs").as_deref(), Some("2"));
    assert_eq!(tracker.decrement(&inside).count(), 1);
    assert_eq!(other.label("w1", "active-jobs").as_deref(), Some("1"));
    assert_eq!(home.label("w1", "active-jobs"), None);
    assert_eq!(resource_version(&home, "w1"), before);
}

/// Creates PodDisruptionBudget `name` in the scene's namespace: the README's budget with
/// `spec` merged over it (a `null` removes a field).
fn budget(scene: &Scene, name: &str, spec: Value) {
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
    scene
        .admin()
        .post(
            &budgets_path(scene),
            &json!({
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {"name": name},
                "spec": full,
            }),
        )
        .expect(201, "create a budget");
}

/// Where the scene's PodDisruptionBudgets live.
fn budgets_path(scene: &Scene) -> String {
    format!(
        "/apis/policy/v1/namespaces/{}/poddisruptionbudgets",
        scene.namespace
    )
}

/// An account for doctor to run as: pods `verbs`, and `list` on budgets (which the budget
/// checks read); its kubeconfig once the rights have taken effect.
fn doctor_account(scene: &Scene, verbs: &[&str]) -> std::path::PathBuf {
    let account = scene.account(
        "job-tracker",
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": verbs},
            {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["list"]},
        ]),
    );
    let kubeconfig = scene.kubeconfig(&account);
    scene.wait_allowed(&kubeconfig, &budgets_path(scene));
    kubeconfig
}

/// `pod-webhook-tracker doctor` as `kubeconfig`'s identity on namespace `ns`.
fn doctor_command(kubeconfig: &Path, ns: &str) -> Command {
    let mut command = support::doctor::doctor_command();
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["-n", ns]);
    command
}

/// Runs `doctor` as `kubeconfig`'s identity on namespace `ns`, once as text and once with
/// `--output json`.
fn doctor(kubeconfig: &Path, ns: &str) -> Report {
    Report::of(|| doctor_command(kubeconfig, ns))
}

#[test]
fn doctor_run_as_the_tracker_finds_the_readme_setup_good_with_exit_status_0() {
    let scene = Scene::new("rights");
    budget(&scene, "busy-workers", json!({}));
    // Another budget, on other pods: no overlap.
    budget(
        &scene,
        "databases",
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}),
    );
    scene.pod("w1", &[("app", "worker")]);
    let kubeconfig = doctor_account(&scene, &["get", "patch"]);
    let report = doctor(&kubeconfig, &scene.namespace);
    report.assert_exit(0);
    let names: Vec<&str> = report.json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(
        names,
        [
            "budget",
            "min-available",
            "overlap",
            "unhealthy-pod-eviction-policy",
            "rights",
            "least-privilege",
        ],
        "{}",
        report.text
    );
    for name in names {
        assert_eq!(report.finding(name).0, "ok", "{name}:\n{}", report.text);
    }
    report.assert_finding("budget", "ok", &["busy-workers", "active-jobs"]);
    report.assert_finding(
        "rights",
        "ok",
        &[&format!(
            "may get and patch pods in namespace {}",
            scene.namespace
        )],
    );
    assert_eq!(report.json["namespace"], scene.namespace.as_str());
    assert_eq!(report.json["label"], "active-jobs");
    assert_eq!(report.json["problems"], 0);
    assert_eq!(report.json["warnings"], 0);
    assert_eq!(report.text.lines().last(), Some("0 problems, 0 warnings"));
}

#[test]
fn doctor_names_a_missing_budget() {
    let scene = Scene::new("rights");
    budget(
        &scene,
        "databases",
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}),
    );
    let kubeconfig = doctor_account(&scene, &["get", "patch"]);
    let report = doctor(&kubeconfig, &scene.namespace);
    report.assert_exit(1);
    report.assert_finding(
        "budget",
        "problem",
        &[
            &format!("no PodDisruptionBudget in namespace {}", scene.namespace),
            "active-jobs",
            "operator: Exists",
        ],
    );
    report.assert_finding("rights", "ok", &[]);
    assert_eq!(report.json["problems"], 1, "{}", report.text);
}

#[test]
fn doctor_names_a_percentage_min_available() {
    let scene = Scene::new("rights");
    // Before the budget exists: a sync refused meanwhile would be retried only after a backoff.
    budget(&scene, "busy-workers", json!({"minAvailable": "100%"}));
    let kubeconfig = doctor_account(&scene, &["get", "patch"]);
    let report = doctor(&kubeconfig, &scene.namespace);
    report.assert_exit(1);
    report.assert_finding(
        "min-available",
        "problem",
        &[
            "busy-workers",
            "minAvailable: 100%",
            "scale subresource",
            "9999",
        ],
    );
    report.assert_finding("budget", "ok", &["busy-workers"]);
    assert_eq!(report.json["problems"], 1, "{}", report.text);

    // What doctor explains, on the real controller: once the tracker makes a Job's pod busy,
    // the budget cannot be computed. (A bare pod is not a failure there: the controller counts
    // it as unmanaged and expects 0 pods, InsufficientPods.)
    let job = scene
        .admin()
        .post(
            &format!("/apis/batch/v1/namespaces/{}/jobs", scene.namespace),
            &json!({
                "metadata": {"name": "batch"},
                "spec": {"template": {
                    "metadata": {"labels": {"app": "worker"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "job", "image": "busybox:1.37.0"}],
                    },
                }},
            }),
        )
        .expect(201, "create a Job");
    // No job controller runs here: the Job's pod is made as it would make it.
    scene.create_pod(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "batch-1",
            "labels": {"app": "worker"},
            "ownerReferences": [{
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": "batch",
                "uid": job["metadata"]["uid"],
                "controller": true,
            }],
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "job", "image": "busybox:1.37.0"}],
        },
    }));
    let tracker = scene.standalone("job-tracker").start();
    assert_eq!(tracker.increment("pod_name=batch-1").count(), 1);
    let path = format!("{}/busy-workers", budgets_path(&scene));
    let started = Instant::now();
    loop {
        let budget = scene.admin().get(&path).expect(200, "read the budget");
        let failed = budget["status"]["conditions"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["type"] == "DisruptionAllowed"))
            .filter(|c| c["reason"] == "SyncFailed")
            .cloned();
        if let Some(condition) = failed {
            assert_eq!(condition["status"], "False", "{budget:#}");
            assert_eq!(
                condition["message"], "jobs.batch does not implement the scale subresource",
                "{budget:#}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the disruption controller never failed the budget: {budget:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn doctor_names_a_second_budget_that_selects_busy_pods_which_the_real_eviction_api_answers_500() {
    let scene = Scene::new("rights");
    budget(&scene, "busy-workers", json!({}));
    budget(
        &scene,
        "workers",
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "worker"}}}),
    );
    scene.pod("w1", &[("app", "worker")]);
    // Run as the administrator (the README's "run as yourself"): the tracker may not list
    // pods, and overlap is a problem only when a pod shows it.
    let admin = scene.cluster.admin_kubeconfig();
    let report = doctor(admin, &scene.namespace);
    report.assert_exit(1);
    report.assert_finding(
        "overlap",
        "problem",
        &[
            "pod w1",
            "busy-workers and workers",
            "answers 500 instead of 429",
        ],
    );
    report.assert_finding("budget", "ok", &[]);
    assert_eq!(report.json["problems"], 1, "{}", report.text);

    // What doctor warns of: once the tracker makes w1 busy, the Eviction API gives up on it.
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene.standalone(&account).start();
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    scene
        .admin()
        .merge_patch(
            &format!("{}/status", scene.pods_path(Some("w1"))),
            &json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .expect(200, "report w1 Running and Ready");
    let evicted = scene.admin().post(
        &format!("{}/eviction", scene.pods_path(Some("w1"))),
        &json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "w1", "namespace": scene.namespace},
        }),
    );
    assert_eq!(evicted.status, 500, "{evicted:?}");
    assert_eq!(
        evicted.message(),
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    assert_eq!(scene.admin().get(&scene.pods_path(Some("w1"))).status, 200);
}

#[test]
fn doctor_names_an_account_that_may_not_patch_pods() {
    let scene = Scene::new("rights");
    budget(&scene, "busy-workers", json!({}));
    let kubeconfig = doctor_account(&scene, &["get"]);
    let report = doctor(&kubeconfig, &scene.namespace);
    report.assert_exit(1);
    report.assert_finding(
        "rights",
        "problem",
        &[&format!(
            "may not patch pods in namespace {}",
            scene.namespace
        )],
    );
    report.assert_finding("least-privilege", "ok", &[]);
    assert_eq!(report.json["problems"], 1, "{}", report.text);
}

#[test]
fn doctor_warns_of_an_account_that_may_also_list_pods_and_still_exits_0() {
    let scene = Scene::new("rights");
    budget(&scene, "busy-workers", json!({}));
    let kubeconfig = doctor_account(&scene, &["get", "patch", "list"]);
    let report = doctor(&kubeconfig, &scene.namespace);
    report.assert_exit(0);
    report.assert_finding(
        "least-privilege",
        "warning",
        &[&format!(
            "may also list pods in namespace {}",
            scene.namespace
        )],
    );
    report.assert_finding("rights", "ok", &[]);
    assert_eq!(report.json["problems"], 0, "{}", report.text);
    assert_eq!(report.json["warnings"], 1, "{}", report.text);
    assert_eq!(report.text.lines().last(), Some("0 problems, 1 warning"));
}
