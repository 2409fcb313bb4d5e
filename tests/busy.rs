//! Black-box tests of `busy` against the API test double: the real binary lists the pods the
//! tracker holds busy (written by real sidecar and standalone trackers, or by hand, malformed
//! ones included) with their jobs, budgets and evictions, per namespace, across namespaces and
//! per node, as a table, wide, JSON and YAML; pages its lists; watches (`--watch` redraws,
//! `--wait-idle` exits at the right moment); takes kubectl's flags and KUBECONFIG as the
//! plugin `kubectl-tracker`; colours only a terminal.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube_double::{ApiServer, Credentials, NewPod, Outcome, Rule, Subject, User, Verb};
use serde_json::{Value, json};
use support::Tracker;
use support::busy::{Run, binary, exit_within, json_of, names, pod, run, spawn};

/// The token of a user who may list and watch pods and budgets everywhere.
const READER: &str = "reader-token";
/// How long a test waits for the binary to do something.
const LIMIT: Duration = Duration::from_secs(30);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The jobs annotation of `jobs` (key, seconds since it started, seconds to its deadline).
fn jobs(jobs: &[(&str, u64, Option<u64>)]) -> String {
    let now = unix_now();
    let entries: serde_json::Map<String, Value> = jobs
        .iter()
        .map(|(key, age, left)| {
            let mut job = json!({"s": now - age});
            if let Some(left) = left {
                job["d"] = json!(now + left);
            }
            ((*key).to_owned(), job)
        })
        .collect();
    json!({"v": 1, "jobs": entries}).to_string()
}

/// A double holding the scene most tests look at:
///
/// - `ci/runner-0` on node-a: two keyed jobs (one with a deadline in 2 h), Karpenter's and the
///   deletion-cost annotations; `ci/runner-1` on node-b: one job without a key;
///   `ci/broken-0` on node-b: a label and a jobs annotation that cannot be read;
///   `ci/idle-0` on node-a: not busy. The budget `busy-runners` selects busy runners and
///   allows no disruption.
/// - `batch/worker-0` on node-a: one job, no budget.
fn scene() -> ApiServer {
    let api = ApiServer::start();
    api.add_token(READER, User::new("reader"));
    api.allow(
        Subject::user("reader"),
        Rule::new(["list", "watch"], ["pods", "poddisruptionbudgets"]),
    );
    api.add_pod(
        NewPod::new("ci", "runner-0")
            .label("app", "runner")
            .label("active-jobs", "2")
            .annotation(
                "active-jobs-jobs",
                jobs(&[("build-1", 615, Some(7230)), ("build-2", 615, None)]),
            )
            .annotation("karpenter.sh/do-not-disrupt", "true")
            .annotation("controller.kubernetes.io/pod-deletion-cost", "10000")
            .phase("Running")
            .node("node-a"),
    );
    api.add_pod(
        NewPod::new("ci", "runner-1")
            .label("app", "runner")
            .label("active-jobs", "1")
            .phase("Running")
            .node("node-b"),
    );
    api.add_pod(
        NewPod::new("ci", "broken-0")
            .label("app", "runner")
            .label("active-jobs", "lots")
            .annotation("active-jobs-jobs", "{oops")
            .phase("Running")
            .node("node-b"),
    );
    api.add_pod(
        NewPod::new("ci", "idle-0")
            .label("app", "runner")
            .phase("Running")
            .node("node-a"),
    );
    api.add_pod(
        NewPod::new("batch", "worker-0")
            .label("active-jobs", "1")
            .phase("Running")
            .node("node-a"),
    );
    api.create_pdb(
        "ci",
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "busy-runners"},
               "spec": {"minAvailable": 9999, "unhealthyPodEvictionPolicy": "IfHealthyBudget",
                        "selector": {"matchLabels": {"app": "runner"},
                                     "matchExpressions": [{"key": "active-jobs", "operator": "Exists"}]}}}),
    );
    api
}

/// `busy ARGS` as the reader, connected by flags.
fn busy_command(api: &ApiServer, token: &str, args: &[&str]) -> Command {
    let mut command = binary();
    command
        .arg("busy")
        .arg(format!("--server={}", api.url()))
        .arg(format!("--token={token}"))
        .args(args);
    command
}

fn busy(api: &ApiServer, args: &[&str]) -> Run {
    run(busy_command(api, READER, args))
}

#[test]
fn a_namespaces_busy_pods_show_their_jobs_budget_eviction_and_annotations() {
    let api = scene();
    let table = busy(&api, &["-n", "ci"]);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        words(lines[0]),
        [
            "POD",
            "NODE",
            "JOBS",
            "AGE",
            "DEADLINE",
            "BUDGET",
            "EVICTION",
            "ANNOTATIONS"
        ],
        "one namespace: no namespace column\n{}",
        table.stdout
    );
    // Pods by node, then name; each pod's jobs below it.
    assert_eq!(
        words(lines[1]),
        [
            "runner-0",
            "node-a",
            "2",
            "10m",
            "none",
            "busy-runners",
            "refused",
            "do-not-disrupt,deletion-cost=10000"
        ]
    );
    assert_eq!(words(lines[2]), ["build-1", "10m", "in", "2h"]);
    assert_eq!(words(lines[3]), ["build-2", "10m", "none"]);
    assert_eq!(
        words(lines[4]),
        [
            "broken-0",
            "node-b",
            "?",
            "-",
            "?",
            "busy-runners",
            "refused"
        ]
    );
    assert_eq!(
        lines[5],
        "  ! label active-jobs holds \"lots\", which is not a count"
    );
    assert!(
        lines[6].starts_with("  ! annotation active-jobs-jobs: not the jobs format"),
        "{}",
        lines[6]
    );
    assert_eq!(
        words(lines[7]),
        [
            "runner-1",
            "node-b",
            "1",
            "-",
            "none",
            "busy-runners",
            "refused"
        ]
    );
    assert_eq!(lines[8], "  + 1 job without a key (no deadline)");
    assert_eq!(lines[9], "");
    assert_eq!(
        words(lines[10]),
        [
            "NODE", "PODS", "JOBS", "FIRST", "DEADLINE", "LAST", "DEADLINE"
        ]
    );
    assert_eq!(words(lines[11]), ["node-a", "1", "2", "in", "2h", "none"]);
    assert_eq!(words(lines[12]), ["node-b", "2", "1", "none", "?"]);
    assert_eq!(lines.len(), 13, "{}", table.stdout);
    assert!(!table.stdout.contains("idle-0") && !table.stdout.contains("worker-0"));
    assert!(lines.iter().all(|line| line.chars().count() <= 100));
    assert!(!table.stdout.contains('\x1b'), "no colours into a pipe");
    assert_eq!(table.stderr, "");

    let report = json_of(&busy(&api, &["-n", "ci", "-o", "json"]));
    assert_eq!(
        names(&report),
        ["ci/runner-0", "ci/broken-0", "ci/runner-1"]
    );
    let runner = pod(&report, "ci", "runner-0");
    assert_eq!(runner["count"], 2);
    assert_eq!(runner["jobs"][0]["key"], "build-1");
    assert_eq!(runner["jobs"][1]["deadline"], Value::Null);
    assert_eq!(runner["budgets"][0]["name"], "busy-runners");
    assert_eq!(runner["budgets"][0]["disruptionsAllowed"], 0);
    assert_eq!(runner["eviction"]["allowed"], false);
    assert_eq!(
        runner["eviction"]["reason"],
        "busy-runners needs 9999 healthy pods and has 3 (disruptionsAllowed 0)"
    );
    assert_eq!(runner["annotations"]["karpenter.sh/do-not-disrupt"], "true");
    let broken = pod(&report, "ci", "broken-0");
    assert_eq!(broken["labelValue"], "lots");
    assert_eq!(broken["count"], Value::Null);
    assert_eq!(broken["problems"].as_array().map(Vec::len), Some(2));
}

#[test]
fn the_eviction_shown_is_the_eviction_apis_answer() {
    let api = scene();
    let report = json_of(&busy(&api, &["-A", "-o", "json"]));
    for row in report["pods"].as_array().expect("pods") {
        let (namespace, name) = (
            row["namespace"].as_str().expect("ns"),
            row["name"].as_str().expect("name"),
        );
        let before = api.pod(namespace, name);
        let mut connection =
            std::net::TcpStream::connect(("127.0.0.1", api.port())).expect("connects");
        use std::io::Write;
        let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                          "metadata": {"name": name, "namespace": namespace},
                          "deleteOptions": {"dryRun": ["All"]}})
        .to_string();
        write!(
            connection,
            "POST /api/v1/namespaces/{namespace}/pods/{name}/eviction?dryRun=All HTTP/1.1\r\nHost: api\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            admin_token(&api),
            body.len()
        )
        .expect("sent");
        let mut answer = String::new();
        connection.read_to_string(&mut answer).expect("answered");
        let status: u16 = answer[9..12].parse().expect("a status");
        let expected = if row["eviction"]["allowed"] == true {
            201
        } else {
            429
        };
        assert_eq!(
            status, expected,
            "{namespace}/{name}: {}\n{answer}",
            row["eviction"]
        );
        assert_eq!(
            api.pod(namespace, name),
            before,
            "a dry run changes nothing"
        );
    }
    assert_eq!(
        pod(&report, "batch", "worker-0")["eviction"]["reason"],
        "no budget selects it"
    );
}

/// A token of `system:masters`, made once per double.
fn admin_token(api: &ApiServer) -> &'static str {
    api.add_token("admin-token", User::new("admin").groups(["system:masters"]));
    "admin-token"
}

#[test]
fn nodes_gather_their_pods_from_every_namespace() {
    let api = scene();
    let one = json_of(&busy(&api, &["--node", "node-a", "-o", "json"]));
    assert_eq!(names(&one), ["batch/worker-0", "ci/runner-0"]);
    assert_eq!(
        one["nodes"],
        json!([{"name": "node-a", "pods": 2, "jobs": 3,
                "firstDeadline": pod(&one, "ci", "runner-0")["jobs"][0]["deadline"],
                "lastDeadline": null, "withoutDeadline": true}])
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r.path.starts_with("/api/v1/pods?")
                && r.path.contains("fieldSelector=spec.nodeName%3Dnode-a")
                && r.path.contains("labelSelector=active-jobs")),
        "one node: the server selects the pods"
    );
    let both = json_of(&busy(&api, &["--node=node-a,node-b", "-o", "json"]));
    assert_eq!(
        names(&both),
        [
            "batch/worker-0",
            "ci/runner-0",
            "ci/broken-0",
            "ci/runner-1"
        ]
    );
    let table = busy(&api, &["--node", "node-b", "--node", "node-c"]);
    assert!(
        table.stdout.starts_with("NAMESPACE/POD "),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("ci/broken-0") && !table.stdout.contains("node-a"),
        "{}",
        table.stdout
    );
    let in_batch = json_of(&busy(
        &api,
        &["--node", "node-a", "-n", "batch", "-o", "json"],
    ));
    assert_eq!(names(&in_batch), ["batch/worker-0"]);
    let none = busy(&api, &["--node", "node-z"]);
    assert_eq!(none.code, Some(0));
    assert_eq!(none.stdout, "");
    assert_eq!(
        none.stderr,
        "No busy pods on node node-z in any namespace.\n"
    );
}

/// `value` without what moves with the clock.
fn timeless(mut value: Value) -> Value {
    value.as_object_mut().expect("an object").remove("time");
    for pod in value["pods"].as_array_mut().expect("pods") {
        for job in pod["jobs"].as_array_mut().into_iter().flatten() {
            job.as_object_mut().expect("a job").remove("ageSeconds");
        }
    }
    value
}

#[test]
fn yaml_and_wide_say_what_json_says() {
    let api = scene();
    let json = json_of(&busy(&api, &["-A", "-o", "json"]));
    let yaml = busy(&api, &["-A", "-o", "yaml"]);
    assert_eq!(yaml.code, Some(0), "{}", yaml.stderr);
    let read: Value = serde_saphyr::from_str(&yaml.stdout).expect("valid YAML");
    assert_eq!(timeless(read), timeless(json.clone()), "\n{}", yaml.stdout);
    let wide = busy(&api, &["-A", "-o", "wide"]);
    let deadline = pod(&json, "ci", "runner-0")["jobs"][0]["deadline"]
        .as_str()
        .expect("a deadline")
        .to_owned();
    for part in [
        "NAMESPACE",
        "STATUS",
        "WHY",
        "karpenter.sh/do-not-disrupt=true",
        "busy-runners (0 allowed)",
        "no budget selects it",
        &deadline,
    ] {
        assert!(wide.stdout.contains(part), "{part}:\n{}", wide.stdout);
    }
}

#[test]
fn pods_of_sidecar_and_standalone_trackers_are_shown_alike() {
    let api = support::api();
    api.allow(
        Subject::user("tracker"),
        Rule::new(["list", "watch"], ["pods", "poddisruptionbudgets"]).namespace(support::NS),
    );
    api.add_pod(
        NewPod::new(support::NS, "sidecar-0")
            .phase("Running")
            .node("node-a"),
    );
    api.add_pod(
        NewPod::new(support::NS, "central-0")
            .phase("Running")
            .node("node-b"),
    );
    let sidecar = Tracker::builder()
        .args([
            format!("--kube-server={}", api.url()),
            format!("--kube-token={}", support::TOKEN),
            "--max-job-duration=6h".to_owned(),
            "--active-annotation=karpenter.sh/do-not-disrupt=true".to_owned(),
        ])
        .env("POD_NAME", "sidecar-0")
        .env("POD_NAMESPACE", support::NS)
        .start();
    let standalone = support::standalone(&api)
        .args(["--anonymous-job-ttl=30m", "--pod-deletion-cost=500"])
        .start();
    assert_eq!(sidecar.increment("job=build-7&ttl=1h").count(), 1);
    assert_eq!(sidecar.increment("job=build-8").count(), 2);
    assert_eq!(standalone.increment("pod_name=central-0").count(), 1);
    let report = json_of(&run(busy_command(
        &api,
        support::TOKEN,
        &["-n", support::NS, "-o", "json"],
    )));
    assert_eq!(names(&report), ["jobs/sidecar-0", "jobs/central-0"]);
    let side = pod(&report, support::NS, "sidecar-0");
    let keys: Vec<&str> = side["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["build-7", "build-8"]);
    assert!(
        side["jobs"][1]["deadline"].is_string(),
        "--max-job-duration gives build-8 a deadline"
    );
    assert_eq!(side["withoutDeadline"], false);
    assert_eq!(side["annotations"]["karpenter.sh/do-not-disrupt"], "true");
    let central = pod(&report, support::NS, "central-0");
    let anonymous = &central["jobs"][0];
    assert!(
        anonymous["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("#anon-")),
        "{central}"
    );
    assert!(anonymous["deadline"].is_string(), "{central}");
    assert_eq!(
        central["annotations"]["controller.kubernetes.io/pod-deletion-cost"],
        "500"
    );
    assert_eq!(central["budgets"], json!([]));
    assert_eq!(report["nodes"].as_array().map(Vec::len), Some(2));
}

#[test]
fn lists_are_paged_and_every_page_is_read() {
    let api = scene();
    let report = json_of(&busy(&api, &["-A", "--chunk-size=1", "-o", "json"]));
    assert_eq!(names(&report).len(), 4);
    let pages: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/api/v1/pods?"))
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(pages.len(), 4, "{pages:#?}");
    assert!(pages.iter().all(|p| p.contains("limit=1")));
    assert_eq!(pages.iter().filter(|p| p.contains("continue=")).count(), 3);
    let budget_pages = api
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/apis/policy/v1/poddisruptionbudgets?"))
        .count();
    assert_eq!(budget_pages, 1);
}

#[test]
fn without_the_right_to_list_budgets_the_pods_are_shown_with_unknown_evictions() {
    let api = scene();
    api.add_token("pods-only", User::new("pods-only"));
    api.allow(
        Subject::user("pods-only"),
        Rule::new(["list", "watch"], ["pods"]).namespace("ci"),
    );
    let table = run(busy_command(&api, "pods-only", &["-n", "ci"]));
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(
        table.stderr.starts_with("warning: cannot list poddisruptionbudgets in namespace ci: poddisruptionbudgets.policy is forbidden: User \"pods-only\" cannot list resource \"poddisruptionbudgets\""),
        "{}",
        table.stderr
    );
    let runner = table
        .stdout
        .lines()
        .find(|l| l.starts_with("runner-0"))
        .expect("runner-0");
    assert!(
        runner.contains(" ?  ") && runner.contains("unknown"),
        "{runner}"
    );
    let nothing = run(busy_command(&api, "pods-only", &["-A"]));
    assert_eq!(nothing.code, Some(1));
    assert_eq!(nothing.stdout, "");
    assert!(
        nothing.stderr.starts_with("error: cannot list pods in any namespace: pods is forbidden: User \"pods-only\" cannot list resource \"pods\""),
        "{}",
        nothing.stderr
    );
}

#[test]
fn bad_arguments_exit_2_naming_the_flag() {
    let api = scene();
    for (args, says) in [
        (&["-o", "name"][..], "--output"),
        (&["--timeout", "5m"], "give --wait-idle too"),
        (&["--watch", "--wait-idle"], "--watch and --wait-idle"),
        (&["--node", "Node_A"], "--node"),
        (&["--wait-idle", "--timeout", "forever"], "--timeout"),
        (&["--bogus"], "--bogus"),
        (&["--kubeconfig", "/no/such/file"], "--kubeconfig"),
    ] {
        let result = busy(&api, args);
        assert_eq!(result.code, Some(2), "{args:?}: {}", result.stderr);
        assert!(result.stderr.contains(says), "{args:?}: {}", result.stderr);
        assert_eq!(result.stdout, "");
    }
    assert!(
        api.requests().is_empty(),
        "nothing is read before the flags are checked"
    );
}

/// Every complete JSON document in `text`.
fn documents(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

#[test]
fn watch_draws_again_when_a_pod_or_its_budget_changes_and_reads_the_cluster_once() {
    let api = scene();
    let (mut child, mut out, _err) = spawn(
        busy_command(&api, READER, &["-n", "ci", "-w", "-o", "json"]),
        LIMIT,
    );
    out.until("the first report", |text| documents(text).len() == 1);
    api.set_label("ci", "idle-0", "active-jobs", Some("1"));
    // idle-0 turns busy, and its budget now selects four ready pods.
    out.until("idle-0 busy under its budget", |text| {
        documents(text).last().is_some_and(|doc| {
            names(doc).contains(&"ci/idle-0".to_owned())
                && pod(doc, "ci", "idle-0")["eviction"]["reason"]
                    == "busy-runners needs 9999 healthy pods and has 4 (disruptionsAllowed 0)"
        })
    });
    api.set_label("ci", "runner-0", "active-jobs", None);
    out.until("runner-0 idle", |text| {
        documents(text)
            .last()
            .is_some_and(|doc| !names(doc).contains(&"ci/runner-0".to_owned()))
    });
    // The disruption controller's view changes when a pod stops being ready.
    api.set_ready("ci", "runner-1", false);
    out.until("the budget's healthy pods go down", |text| {
        documents(text).last().is_some_and(|doc| {
            pod(doc, "ci", "runner-1")["eviction"]["reason"]
                == "busy-runners needs 9999 healthy pods and has 2 (disruptionsAllowed 0)"
        })
    });
    let lists = api
        .requests()
        .iter()
        .filter(|r| !r.path.contains("watch="))
        .count();
    assert_eq!(
        lists,
        2,
        "one list of pods, one of budgets: {:#?}",
        api.requests()
    );
    assert_eq!(api.count(Verb::Watch, Outcome::Status(200)), 2);
    assert_eq!(
        exit_within(&mut child, Duration::from_millis(200)),
        None,
        "it keeps watching"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn wait_idle_exits_0_the_moment_the_last_pod_on_the_node_is_idle() {
    let api = scene();
    // A finished pod's label holds no node.
    api.add_pod(
        NewPod::new("batch", "done-0")
            .label("active-jobs", "1")
            .phase("Succeeded")
            .node("node-a"),
    );
    let (mut child, _out, mut err) = spawn(
        busy_command(
            &api,
            READER,
            &["--node", "node-a", "--wait-idle", "--timeout=60s"],
        ),
        LIMIT,
    );
    err.until("progress", |text| {
        text.contains("waiting: 2 busy pods with 3 jobs on node-a; a job has no deadline")
    });
    api.set_label("batch", "worker-0", "active-jobs", None);
    err.until("progress", |text| {
        text.contains("waiting: 1 busy pod with 2 jobs on node-a")
    });
    assert_eq!(
        exit_within(&mut child, Duration::from_millis(500)),
        None,
        "runner-0 still holds node-a"
    );
    api.set_label("ci", "runner-0", "active-jobs", None);
    let code = exit_within(&mut child, Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", err.seen);
    err.until("the last word", |text| {
        text.contains("idle: no busy pods on node node-a in any namespace")
    });
    let pod_lists = api
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/api/v1/pods?") && !r.path.contains("watch="))
        .count();
    assert_eq!(
        pod_lists,
        1,
        "listed once, then watched: {:#?}",
        api.requests()
    );
    assert!(api.count(Verb::Watch, Outcome::Status(200)) >= 1);
}

#[test]
fn wait_idle_exits_0_at_once_when_nothing_is_busy_and_1_at_its_timeout_saying_what_holds() {
    let api = scene();
    let idle = busy(&api, &["--node", "node-c", "--wait-idle"]);
    assert_eq!(idle.code, Some(0), "{}", idle.stderr);
    assert_eq!(idle.stdout, "");
    let started = Instant::now();
    let held = busy(
        &api,
        &["--node", "node-b", "--wait-idle", "--timeout", "1s"],
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(held.code, Some(1), "{}", held.stderr);
    assert!(
        held.stderr
            .ends_with("timed out after 1s: 2 pods still busy on node node-b in any namespace\n"),
        "{}",
        held.stderr
    );
    assert!(
        held.stdout.contains("ci/runner-1") && held.stdout.contains("ci/broken-0"),
        "{}",
        held.stdout
    );
    assert!(
        held.stdout.contains("refused"),
        "the budgets are read for the report: {}",
        held.stdout
    );
}

/// A kubeconfig with two contexts: `dead` (current; nothing listens there) and `kube-double`
/// (namespace `ci`, as the reader).
fn kubeconfig(api: &ApiServer, folder: &Path) -> PathBuf {
    let mut config = api.kubeconfig(&Credentials::token(READER), "ci");
    config["clusters"]
        .as_array_mut()
        .expect("clusters")
        .push(json!({"name": "dead", "cluster": {"server": "http://127.0.0.1:9"}}));
    config["contexts"]
        .as_array_mut()
        .expect("contexts")
        .push(json!({"name": "dead", "context": {"cluster": "dead", "user": "kube-double-user"}}));
    config["current-context"] = json!("dead");
    let path = folder.join("kubeconfig");
    std::fs::write(&path, config.to_string()).expect("a kubeconfig");
    path
}

fn scratch(name: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("pwt-busy-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("a folder");
    folder
}

#[test]
fn as_kubectl_tracker_it_reads_kubeconfig_and_kubectls_flags() {
    let api = scene();
    let folder = scratch("plugin");
    let config = kubeconfig(&api, &folder);
    let plugin = folder.join("kubectl-tracker");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_pod-webhook-tracker"), &plugin)
        .expect("a symlink");
    let plugin_command = |args: &[&str]| {
        let mut command = Command::new(&plugin);
        command
            .env("KUBECONFIG", &config)
            .env("HOME", &folder)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .arg("busy")
            .args(args);
        run(command)
    };
    let json = plugin_command(&["--context=kube-double", "-o", "json"]);
    assert_eq!(
        names(&json_of(&json)),
        ["ci/runner-0", "ci/broken-0", "ci/runner-1"],
        "KUBECONFIG, the context chosen, and its namespace"
    );
    let alias = plugin_command(&["--kube-context", "kube-double", "-n", "batch", "-ojson"]);
    assert_eq!(names(&json_of(&alias)), ["batch/worker-0"]);
    let dead = plugin_command(&["-A"]);
    assert_eq!(
        dead.code,
        Some(1),
        "the current context's server is down: {}",
        dead.stderr
    );
    assert!(
        dead.stderr
            .starts_with("error: cannot list pods in any namespace:"),
        "{}",
        dead.stderr
    );
    let flag = run({
        let mut command = Command::new(&plugin);
        command.env_remove("KUBECONFIG").env("HOME", &folder).args([
            "busy",
            "--kubeconfig",
            config.to_str().expect("UTF-8"),
            "--context",
            "kube-double",
            "-A",
            "-o",
            "json",
        ]);
        command
    });
    assert_eq!(names(&json_of(&flag)).len(), 4);
    let help = plugin_command(&["--help"]);
    assert_eq!(help.code, Some(0));
    assert!(
        help.stdout.starts_with("Usage: kubectl tracker busy"),
        "{}",
        help.stdout
    );
    let missing = plugin_command(&["--context", "nowhere"]);
    assert_eq!(missing.code, Some(2), "{}", missing.stderr);
    assert!(missing.stderr.contains("nowhere"), "{}", missing.stderr);
    let _ = std::fs::remove_dir_all(&folder);
}

/// Runs `busy ARGS` on a pseudo-terminal (`script`), its output as the terminal shows it.
fn on_a_terminal(api: &ApiServer, args: &str, no_color: bool) -> String {
    let line = format!(
        "{} busy --server={} --token={READER} {args}",
        env!("CARGO_BIN_EXE_pod-webhook-tracker"),
        api.url()
    );
    let mut command = Command::new("script");
    command
        .args(["-qec", &line, "/dev/null"])
        .env_remove("NO_COLOR");
    if no_color {
        command.env("NO_COLOR", "1");
    }
    let output = run(command);
    assert_eq!(output.code, Some(0), "{}{}", output.stdout, output.stderr);
    output.stdout
}

#[test]
fn colours_go_to_a_terminal_only_and_no_color_turns_them_off() {
    let api = scene();
    let coloured = on_a_terminal(&api, "-n ci", false);
    assert!(coloured.contains("\x1b[31mrefused\x1b[0m"), "{coloured:?}");
    assert!(
        coloured.contains("\x1b[33m  ! label active-jobs"),
        "{coloured:?}"
    );
    let plain = on_a_terminal(&api, "-n ci", true);
    assert!(
        plain.contains("refused") && !plain.contains('\x1b'),
        "{plain:?}"
    );
}

/// Renders the krew-release-bot template as the bot does at tag `tag`: `{{ .TagName }}`, and
/// each `{{addURIAndSha "URL" .TagName }}` as the URL's `uri` and a `sha256`.
fn render_krew_template(template: &str, tag: &str) -> String {
    let mut out = String::new();
    for line in template.lines() {
        let line = line.replace("{{ .TagName }}", tag);
        match line.split_once("{{addURIAndSha \"") {
            Some((indent, rest)) => {
                let url = rest
                    .split_once("\" .TagName }}")
                    .map(|(url, _)| url)
                    .expect("addURIAndSha \"URL\" .TagName");
                out.push_str(&format!(
                    "{indent}uri: {url}\n{indent}sha256: {}\n",
                    "0123456789abcdef".repeat(4)
                ));
            }
            None => {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

#[test]
fn the_krew_manifest_installs_the_release_tarballs_binary_as_kubectl_tracker() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let template =
        std::fs::read_to_string(root.join("plugins/krew/tracker.yaml")).expect("the manifest");
    let tag = format!("v{}", env!("CARGO_PKG_VERSION"));
    let manifest: Value =
        serde_saphyr::from_str(&render_krew_template(&template, &tag)).expect("valid YAML");
    assert_eq!(
        manifest["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(
        manifest["metadata"]["name"], "tracker",
        "krew links the binary as kubectl-<name>"
    );
    let spec = &manifest["spec"];
    assert_eq!(spec["version"], tag.as_str());
    for field in ["homepage", "shortDescription", "description", "caveats"] {
        assert!(
            spec[field].as_str().is_some_and(|t| !t.is_empty()),
            "{field}"
        );
    }
    assert!(
        spec["shortDescription"]
            .as_str()
            .is_some_and(|t| t.len() <= 60)
    );
    // The tarballs `make release` builds (the Makefile's ARCHES, TARBALL and package) and the
    // release workflow uploads.
    let makefile = std::fs::read_to_string(root.join("Makefile")).expect("the Makefile");
    let arches: Vec<&str> = makefile
        .lines()
        .find_map(|line| line.strip_prefix("ARCHES := "))
        .expect("ARCHES")
        .split_whitespace()
        .collect();
    assert!(makefile.contains("TARBALL = $(DIST)/$(NAME)-$(VERSION)-$(1).tar.gz"));
    let packed = makefile
        .lines()
        .find(|line| line.contains("tar -czf $(call TARBALL"))
        .expect("the package's tar line");
    let platforms = spec["platforms"].as_array().expect("platforms");
    assert_eq!(platforms.len(), arches.len());
    for (platform, arch) in platforms.iter().zip(&arches) {
        assert_eq!(
            platform["selector"]["matchLabels"],
            json!({"os": "linux", "arch": arch})
        );
        assert_eq!(
            platform["uri"],
            format!(
                "https://github.com/pod-webhook-tracker/pod-webhook-tracker/releases/download/{tag}/pod-webhook-tracker-{tag}-linux-{arch}.tar.gz"
            )
        );
        assert_eq!(platform["sha256"].as_str().map(str::len), Some(64));
        assert_eq!(platform["bin"], "pod-webhook-tracker");
        let files = platform["files"].as_array().expect("files");
        assert!(files.iter().any(|f| f["from"] == "pod-webhook-tracker"));
        for file in files {
            let from = file["from"].as_str().expect("from");
            let packed_name = if from == "pod-webhook-tracker" {
                "$(NAME)"
            } else {
                from
            };
            assert!(
                packed.split_whitespace().any(|word| word == packed_name),
                "{from} is in the tarball: {packed}"
            );
            assert_eq!(file["to"], ".");
        }
    }
}

#[test]
fn on_a_terminal_watch_redraws_the_table_in_place() {
    let api = scene();
    // `timeout` ends the watch; `script` gives it a terminal.
    let line = format!(
        "timeout 3 {} busy --server={} --token={READER} -n ci --watch",
        env!("CARGO_BIN_EXE_pod-webhook-tracker"),
        api.url()
    );
    let mut command = Command::new("script");
    command
        .args(["-qec", &line, "/dev/null"])
        .env("NO_COLOR", "1");
    let changer = {
        let api = api.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            api.set_label("ci", "idle-0", "active-jobs", Some("1"));
        })
    };
    let output = run(command);
    changer.join().expect("the change is made");
    let frames: Vec<&str> = output.stdout.split("\x1b[H\x1b[2J").skip(1).collect();
    assert!(frames.len() >= 2, "{:?}", output.stdout);
    assert!(frames[0].starts_with("POD "), "{:?}", frames[0]);
    assert!(!frames[0].contains("idle-0"), "{:?}", frames[0]);
    assert!(
        frames.last().is_some_and(|frame| frame.contains("idle-0")),
        "{:?}",
        output.stdout
    );
}

#[test]
fn watching_or_waiting_on_a_cluster_that_cannot_be_read_fails_at_once() {
    for mode in ["--watch", "--wait-idle"] {
        let mut command = binary();
        command.args([
            "busy",
            "--server=http://127.0.0.1:9",
            "--token=nobody",
            "-A",
            mode,
        ]);
        let started = Instant::now();
        let result = run(command);
        assert_eq!(result.code, Some(1), "{mode}: {}", result.stderr);
        // The budgets are listed beside the pods: their warning may come first.
        assert!(
            result
                .stderr
                .lines()
                .any(|line| line.starts_with("error: cannot list pods in any namespace:")),
            "{mode}: {}",
            result.stderr
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{mode}");
    }
}

#[test]
fn a_reader_that_goes_away_ends_busy_quietly() {
    let api = scene();
    let mut child = busy_command(&api, READER, &["-A", "-o", "yaml"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // As `| head` does once it has read enough: before busy writes, here.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr read");
    assert_eq!(exit_within(&mut child, LIMIT), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
