//! `busy` on a real API server: pods across nodes and namespaces made busy by real trackers
//! (standalone and sidecar), budgets that allow and refuse as the real disruption controller
//! counts them (each verdict checked against the real Eviction API), malformed annotations,
//! paged lists, `--watch` following pods and budgets, `--wait-idle` exiting at the right moment,
//! the rights the README gives (list and watch, nothing else), and the plugin run by a real
//! kubectl.

#[path = "../support/mod.rs"]
mod support; // it allows dead code itself: each test file uses a different part of it

#[path = "scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testenv::Credentials;

use scene::{Scene, get_and_patch_pods};
use support::busy::{binary, exit_within, json_of, names, pod, run, spawn};

/// How long anything here may take before a test gives up.
const LIMIT: Duration = Duration::from_secs(60);

/// The README's rights for `busy`: list and watch pods and budgets, cluster-wide.
fn reader_rules() -> Value {
    json!([
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["list", "watch"]},
    ])
}

/// A service account `reader` in the scene's namespace bound to a ClusterRole of
/// [`reader_rules`]; returns a kubeconfig that speaks as it, once the rights took effect.
fn reader(scene: &Scene) -> PathBuf {
    let ns = &scene.namespace;
    let name = format!("{ns}-busy-reader");
    scene
        .admin()
        .post(
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            &json!({"metadata": {"name": "reader"}}),
        )
        .expect(201, "create the reader's account");
    scene
        .admin()
        .post(
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            &json!({"metadata": {"name": name}, "rules": reader_rules()}),
        )
        .expect(201, "create the reader's ClusterRole");
    scene
        .admin()
        .post(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            &json!({
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
            }),
        )
        .expect(201, "bind it");
    let token = scene.cluster.token(ns, "reader", &[], None);
    let kubeconfig = scene
        .cluster
        .kubeconfig(&name, &Credentials::Token(token), ns);
    scene.wait_allowed(&kubeconfig, "/api/v1/pods?limit=1");
    scene.wait_allowed(&kubeconfig, "/apis/policy/v1/poddisruptionbudgets?limit=1");
    kubeconfig
}

/// Creates pod `name` on `node` with `labels`, and reports it Running and Ready as its kubelet
/// would (none runs here): budgets count only ready pods, the Eviction API looks at budgets
/// only for running ones.
fn running_pod(scene: &Scene, name: &str, node: &str, labels: Value) {
    scene.create_pod(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "job", "image": "busybox:1.37.0"}]},
    }));
    scene
        .admin()
        .merge_patch(
            &format!("{}/status", scene.pods_path(Some(name))),
            &json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .expect(200, "report the pod Running and Ready");
}

/// Creates budget `name` in the scene's namespace.
fn budget(scene: &Scene, name: &str, min_available: i64, selector: Value) {
    scene
        .admin()
        .post(
            &format!(
                "/apis/policy/v1/namespaces/{}/poddisruptionbudgets",
                scene.namespace
            ),
            &json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                    "metadata": {"name": name},
                    "spec": {"minAvailable": min_available,
                             "unhealthyPodEvictionPolicy": "IfHealthyBudget",
                             "selector": selector}}),
        )
        .expect(201, "create a budget");
}

/// Waits until the disruption controller has observed budget `name` with `healthy` healthy
/// pods; returns it.
fn wait_budget(scene: &Scene, name: &str, healthy: i64) -> Value {
    let path = format!(
        "/apis/policy/v1/namespaces/{}/poddisruptionbudgets/{name}",
        scene.namespace
    );
    let started = Instant::now();
    loop {
        let budget = scene.admin().get(&path).expect(200, "read the budget");
        let status = &budget["status"];
        if status["observedGeneration"] == budget["metadata"]["generation"]
            && status["currentHealthy"] == healthy
        {
            return budget;
        }
        assert!(
            started.elapsed() < LIMIT,
            "the disruption controller never saw {healthy} healthy pods: {budget:#}\n{}",
            scene.cluster.log_tail("kube-controller-manager")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the real Eviction API answers for `pod` now, without evicting it (a dry run).
fn eviction_status(scene: &Scene, namespace: &str, pod: &str) -> u16 {
    scene
        .admin()
        .post(
            &format!("/api/v1/namespaces/{namespace}/pods/{pod}/eviction?dryRun=All"),
            &json!({"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": pod, "namespace": namespace},
                    "deleteOptions": {"dryRun": ["All"]}}),
        )
        .status
}

fn busy_command(kubeconfig: &Path, args: &[&str]) -> Command {
    let mut command = binary();
    command
        .arg("busy")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args);
    command
}

#[test]
fn busy_shows_the_jobs_on_each_node_and_the_real_eviction_apis_verdict() {
    let ci = Scene::new("busy");
    let batch = Scene::new("busy-other");
    let (node_a, node_b) = (
        format!("{}-node-a", ci.namespace),
        format!("{}-node-b", ci.namespace),
    );
    let runner = json!({"app": "runner"});
    running_pod(&ci, "runner-0", &node_a, runner.clone());
    running_pod(&ci, "runner-1", &node_b, runner.clone());
    running_pod(&ci, "broken-0", &node_b, runner.clone());
    running_pod(&ci, "runner-2", &node_a, runner.clone());
    running_pod(&ci, "idle-0", &node_a, runner);
    running_pod(&batch, "worker-0", &node_a, json!({"app": "worker"}));
    // The README's budget: it refuses while a pod is busy.
    budget(
        &ci,
        "busy-runners",
        9999,
        json!({"matchLabels": {"app": "runner"},
               "matchExpressions": [{"key": "active-jobs", "operator": "Exists"}]}),
    );
    // One that lets pods go.
    budget(
        &batch,
        "lenient",
        0,
        json!({"matchLabels": {"app": "worker"}}),
    );

    // A standalone tracker in ci, a sidecar in batch.
    let account = ci.account("tracker", get_and_patch_pods(&[]));
    let standalone = ci
        .standalone(&account)
        .args(["--active-annotation=karpenter.sh/do-not-disrupt=true"])
        .start();
    assert_eq!(
        standalone
            .increment("pod_name=runner-0&job=build-1&ttl=2h")
            .count(),
        1
    );
    assert_eq!(
        standalone
            .increment("pod_name=runner-0&job=build-2")
            .count(),
        2
    );
    assert_eq!(standalone.increment("pod_name=runner-1").count(), 1);
    let side_account = batch.account("tracker", get_and_patch_pods(&["worker-0"]));
    batch.wait_allowed(
        &batch.kubeconfig(&side_account),
        &batch.pods_path(Some("worker-0")),
    );
    let sidecar = batch
        .sidecar(&side_account, "worker-0")
        .args(["--max-job-duration=1h", "--pod-deletion-cost=10000"])
        .start();
    assert_eq!(sidecar.increment("job=nightly").count(), 1);
    // Written by hand: a label and a jobs annotation that cannot be read.
    ci.admin()
        .merge_patch(
            &ci.pods_path(Some("broken-0")),
            &json!({"metadata": {"labels": {"active-jobs": "lots"},
                                 "annotations": {"active-jobs-jobs": "{oops"}}}),
        )
        .expect(200, "garble broken-0");
    // A job that has run for 25 minutes, as a tracker wrote it then (the trackers above
    // started theirs just now).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let jobs = json!({"v": 1, "jobs": {"deploy-9": {"s": now - 1500, "d": now + 2130}}});
    ci.admin()
        .merge_patch(
            &ci.pods_path(Some("runner-2")),
            &json!({"metadata": {"labels": {"active-jobs": "1"},
                                 "annotations": {"active-jobs-jobs": jobs.to_string()}}}),
        )
        .expect(200, "runner-2 busy for 25 minutes");
    wait_budget(&ci, "busy-runners", 4);
    wait_budget(&batch, "lenient", 1);
    let kubeconfig = reader(&ci);

    let report = json_of(&run(busy_command(
        &kubeconfig,
        &["-n", &ci.namespace, "-o", "json"],
    )));
    let ns = ci.namespace.as_str();
    assert_eq!(
        names(&report),
        [
            format!("{ns}/runner-0"),
            format!("{ns}/runner-2"),
            format!("{ns}/broken-0"),
            format!("{ns}/runner-1")
        ]
    );
    let runner_0 = pod(&report, ns, "runner-0");
    assert_eq!(runner_0["count"], 2);
    assert_eq!(runner_0["jobs"][0]["key"], "build-1");
    assert!(runner_0["jobs"][0]["deadline"].is_string(), "{runner_0}");
    assert_eq!(runner_0["jobs"][1]["deadline"], Value::Null);
    assert_eq!(
        runner_0["annotations"]["karpenter.sh/do-not-disrupt"],
        "true"
    );
    assert_eq!(
        runner_0["eviction"]["reason"],
        "busy-runners needs 9999 healthy pods and has 4 (disruptionsAllowed 0)"
    );
    assert_eq!(pod(&report, ns, "runner-1")["jobsWithoutKey"], 1);
    let broken = pod(&report, ns, "broken-0");
    assert_eq!(
        (broken["labelValue"].as_str(), broken["count"].is_null()),
        (Some("lots"), true)
    );
    assert_eq!(
        broken["problems"].as_array().map(Vec::len),
        Some(2),
        "{broken}"
    );

    // Across namespaces, per node.
    let on_a = json_of(&run(busy_command(
        &kubeconfig,
        &["--node", &node_a, "-o", "json"],
    )));
    // By node, then namespace and name.
    assert_eq!(
        names(&on_a),
        [
            format!("{ns}/runner-0"),
            format!("{ns}/runner-2"),
            format!("{}/worker-0", batch.namespace)
        ]
    );
    let worker = pod(&on_a, &batch.namespace, "worker-0");
    assert_eq!(worker["budgets"][0]["name"], "lenient");
    assert_eq!(worker["budgets"][0]["disruptionsAllowed"], 1);
    assert_eq!(worker["eviction"]["allowed"], true);
    assert!(
        worker["jobs"][0]["deadline"].is_string(),
        "--max-job-duration: {worker}"
    );
    assert_eq!(
        worker["annotations"]["controller.kubernetes.io/pod-deletion-cost"],
        "10000"
    );
    assert_eq!(on_a["nodes"][0]["name"], node_a.as_str());
    assert_eq!(
        (
            on_a["nodes"][0]["pods"].as_u64(),
            on_a["nodes"][0]["jobs"].as_u64()
        ),
        (Some(3), Some(4))
    );
    assert_eq!(
        on_a["nodes"][0]["firstDeadline"],
        pod(&on_a, ns, "runner-2")["jobs"][0]["deadline"],
        "deploy-9's deadline (in 35 minutes) comes first"
    );
    assert_eq!(
        on_a["nodes"][0]["withoutDeadline"], true,
        "build-2 has none"
    );

    // Every verdict is what the Eviction API answers.
    for (report, namespace) in [(&report, ns), (&on_a, batch.namespace.as_str())] {
        for row in report["pods"].as_array().expect("pods") {
            if row["namespace"] != namespace {
                continue;
            }
            let name = row["name"].as_str().expect("a name");
            let expected = if row["eviction"]["allowed"] == true {
                201
            } else {
                429
            };
            assert_eq!(
                eviction_status(&ci, namespace, name),
                expected,
                "{namespace}/{name}: {}",
                row["eviction"]
            );
        }
    }

    // Paged one pod at a time, the same pods.
    let paged = json_of(&run(busy_command(
        &kubeconfig,
        &["-n", ns, "--chunk-size=1", "-o", "json"],
    )));
    assert_eq!(names(&paged), names(&report));

    // The table (the README shows one of these).
    let table = run(busy_command(
        &kubeconfig,
        &["--node", &node_a, "--node", &node_b],
    ));
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    eprintln!("--- busy --node {node_a} --node {node_b}\n{}", table.stdout);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE/POD"), "{}", table.stdout);
    assert!(
        lines.iter().all(|line| line.chars().count() <= 100),
        "{}",
        table.stdout
    );
    for part in [
        "runner-0",
        "deploy-9",
        "25m",
        "in 35m",
        "build-1",
        "build-2",
        "nightly",
        "refused",
        "allowed",
        "lenient",
        "busy-runners",
        "! label active-jobs holds \"lots\"",
    ] {
        assert!(table.stdout.contains(part), "{part}:\n{}", table.stdout);
    }
    assert!(!table.stdout.contains("idle-0"));
}

#[test]
fn wait_idle_exits_0_when_the_last_job_on_the_node_ends_and_1_at_its_timeout() {
    let scene = Scene::new("busy-wait");
    let node = format!("{}-node", scene.namespace);
    let other = format!("{}-other", scene.namespace);
    running_pod(&scene, "p0", &node, json!({"app": "worker"}));
    running_pod(&scene, "p1", &node, json!({"app": "worker"}));
    running_pod(&scene, "elsewhere", &other, json!({"app": "worker"}));
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene.standalone(&account).start();
    assert_eq!(tracker.increment("pod_name=p0&job=a&ttl=1h").count(), 1);
    assert_eq!(tracker.increment("pod_name=p1&job=b&ttl=2h").count(), 1);
    assert_eq!(tracker.increment("pod_name=elsewhere&job=c").count(), 1);
    let kubeconfig = reader(&scene);

    let held = run(busy_command(
        &kubeconfig,
        &["--node", &node, "--wait-idle", "--timeout=2s"],
    ));
    assert_eq!(held.code, Some(1), "{}", held.stderr);
    assert!(
        held.stderr.ends_with(&format!(
            "timed out after 2s: 2 pods still busy on node {node} in any namespace\n"
        )),
        "{}",
        held.stderr
    );
    assert!(
        held.stdout.contains("p0") && held.stdout.contains("p1"),
        "{}",
        held.stdout
    );

    let (mut child, _out, mut err) = spawn(
        busy_command(
            &kubeconfig,
            &["--node", &node, "--wait-idle", "--timeout=60s"],
        ),
        LIMIT,
    );
    err.until("both pods", |text| {
        text.contains(&format!(
            "waiting: 2 busy pods with 2 jobs on {node}; last deadline in 1h5"
        ))
    });
    assert_eq!(tracker.decrement("pod_name=p0&job=a").count(), 0);
    err.until("one pod", |text| {
        text.contains(&format!(
            "waiting: 1 busy pod with 1 job on {node}; last deadline in 1h5"
        ))
    });
    assert_eq!(
        exit_within(&mut child, Duration::from_secs(1)),
        None,
        "p1 still holds the node"
    );
    let ended = Instant::now();
    assert_eq!(tracker.decrement("pod_name=p1&job=b").count(), 0);
    assert_eq!(exit_within(&mut child, Duration::from_secs(10)), Some(0));
    assert!(
        ended.elapsed() < Duration::from_secs(5),
        "a watch, not a slow poll: {:?}",
        ended.elapsed()
    );
    err.until("the last word", |text| {
        text.contains(&format!(
            "idle: no busy pods on node {node} in any namespace"
        ))
    });
    eprintln!(
        "--- busy --node {node} --wait-idle --timeout=60s\n{}",
        err.seen
    );
    assert_eq!(
        scene.label("elsewhere", "active-jobs").as_deref(),
        Some("1"),
        "another node's job"
    );
}

#[test]
fn watch_draws_again_as_jobs_start_and_the_disruption_controller_updates_the_budget() {
    let scene = Scene::new("busy-watch");
    let node = format!("{}-node", scene.namespace);
    running_pod(&scene, "r0", &node, json!({"app": "runner"}));
    running_pod(&scene, "r1", &node, json!({"app": "runner"}));
    budget(
        &scene,
        "lenient",
        0,
        json!({"matchLabels": {"app": "runner"},
               "matchExpressions": [{"key": "active-jobs", "operator": "Exists"}]}),
    );
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene.standalone(&account).start();
    assert_eq!(tracker.increment("pod_name=r0&job=one").count(), 1);
    wait_budget(&scene, "lenient", 1);
    let kubeconfig = reader(&scene);
    let ns = scene.namespace.clone();
    let (mut child, mut out, _err) = spawn(
        busy_command(&kubeconfig, &["-n", &ns, "-w", "-o", "json"]),
        LIMIT,
    );
    let documents = |text: &str| -> Vec<Value> {
        serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .collect()
    };
    out.until("r0 alone", |text| {
        documents(text)
            .last()
            .is_some_and(|doc| names(doc) == [format!("{ns}/r0")])
    });
    assert_eq!(tracker.increment("pod_name=r1&job=two").count(), 1);
    // The pod's change, then the controller's: the budget now counts two healthy pods.
    out.until("r1 busy, the budget at two", |text| {
        documents(text).last().is_some_and(|doc| {
            names(doc).len() == 2
                && pod(doc, &ns, "r1")["budgets"][0]["currentHealthy"] == 2
                && pod(doc, &ns, "r1")["budgets"][0]["disruptionsAllowed"] == 2
        })
    });
    assert_eq!(tracker.decrement("pod_name=r0&job=one").count(), 0);
    out.until("r0 idle", |text| {
        documents(text)
            .last()
            .is_some_and(|doc| names(doc) == [format!("{ns}/r1")])
    });
    assert_eq!(
        exit_within(&mut child, Duration::from_millis(200)),
        None,
        "it keeps watching"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_plugin_runs_through_a_real_kubectl_with_its_flags() {
    let scene = Scene::new("busy-plugin");
    let node = format!("{}-node", scene.namespace);
    running_pod(&scene, "w0", &node, json!({"app": "worker"}));
    let account = scene.account("tracker", get_and_patch_pods(&[]));
    let tracker = scene.standalone(&account).start();
    assert_eq!(tracker.increment("pod_name=w0&job=build").count(), 1);
    reader(&scene);
    let plugins = scene
        .cluster
        .scratch(&format!("{}-plugins", scene.namespace));
    let plugin = plugins.join("kubectl-tracker");
    std::os::unix::fs::symlink(support::program(), &plugin)
        .expect("a symlink named kubectl-tracker");
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |args: &[&str]| {
        let mut command = scene.cluster.kubectl();
        command.env("PATH", &path).args(args);
        run(command)
    };
    let listed = kubectl(&["plugin", "list"]);
    assert!(
        listed.stdout.contains(&plugin.display().to_string()),
        "{}{}",
        listed.stdout,
        listed.stderr
    );

    let ns = scene.namespace.as_str();
    let report = json_of(&kubectl(&["tracker", "busy", "-n", ns, "-o", "json"]));
    assert_eq!(names(&report), [format!("{ns}/w0")]);
    assert_eq!(report["pods"][0]["jobs"][0]["key"], "build");

    // kubectl's impersonation flag, as the administrator may: the reader may read...
    let reader_user = format!("system:serviceaccount:{ns}:reader");
    let as_reader = json_of(&kubectl(&[
        "tracker",
        "busy",
        "--as",
        &reader_user,
        "--node",
        &node,
        "-ojson",
    ]));
    assert_eq!(names(&as_reader), [format!("{ns}/w0")]);
    // ...and the tracker's own account may not list.
    let as_tracker = kubectl(&[
        "tracker",
        "busy",
        &format!("--as=system:serviceaccount:{ns}:tracker"),
        "-n",
        ns,
    ]);
    assert_eq!(as_tracker.code, Some(1), "{}", as_tracker.stderr);
    assert!(
        as_tracker.stderr.starts_with(&format!(
            "error: cannot list pods in namespace {ns}: pods is forbidden: User \"system:serviceaccount:{ns}:tracker\" cannot list resource \"pods\""
        )),
        "{}",
        as_tracker.stderr
    );
    let help = kubectl(&["tracker", "busy", "--help"]);
    assert!(
        help.stdout.starts_with("Usage: kubectl tracker busy"),
        "{}",
        help.stdout
    );
    let bad = kubectl(&["tracker", "busy", "-o", "name"]);
    assert_eq!(
        bad.code,
        Some(2),
        "kubectl passes the plugin's exit status on: {}",
        bad.stderr
    );
}
