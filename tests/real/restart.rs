//! A real API server restarted under load: no stored count is answered as a failure, and the
//! label ends equal to what was acknowledged.

#[path = "../support/mod.rs"]
mod support;

#[path = "scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use testenv::{Cluster, Credentials, Options};

use support::{Tracker, request};

/// Callers, spread over [`PODS`] pods: one pod's calls fold into one writer, so several pods
/// keep several requests in flight when the server comes back, as a busy cluster does.
const CLIENTS: usize = 16;
const PODS: usize = 4;
/// Kills and restarts of the API server during the burst.
const RESTARTS: usize = 3;

/// What the clients of one pod were answered.
#[derive(Debug, Default)]
struct Answers {
    by_status: BTreeMap<u16, u64>,
    /// Bodies of answers other than 200, 503 and 504.
    unexpected: Vec<String>,
}

#[test]
fn sixteen_clients_across_a_killed_and_restarted_api_server_get_no_failure_for_a_stored_count() {
    // A control plane of its own: restarting the shared one would disturb the other tests.
    let cluster = Cluster::start(Options {
        controller_manager: false,
        ..Options::default()
    });
    let namespace = cluster.namespace("restart");
    let admin = cluster.admin();
    let pods = format!("/api/v1/namespaces/{namespace}/pods");
    for pod in 0..PODS {
        admin
            .post(
                &pods,
                &json!({"metadata": {"name": format!("w{pod}")},
                        "spec": {"containers": [{"name": "job", "image": "busybox:1.37.0"}]}}),
            )
            .expect(201, "a pod");
    }
    for (kind, path, body) in [
        (
            "service account",
            format!("/api/v1/namespaces/{namespace}/serviceaccounts"),
            json!({"metadata": {"name": "tracker"}}),
        ),
        (
            "role",
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles"),
            json!({"metadata": {"name": "tracker"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}]}),
        ),
        (
            "binding",
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings"),
            json!({"metadata": {"name": "tracker"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tracker"},
                   "subjects": [{"kind": "ServiceAccount", "name": "tracker", "namespace": namespace}]}),
        ),
    ] {
        admin.post(&path, &body).expect(201, kind);
    }
    let token = cluster.token(&namespace, "tracker", &[], None);
    let kubeconfig = cluster.kubeconfig("tracker", &Credentials::Token(token), &namespace);
    let tracker = Tracker::builder()
        .args([
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--namespace={namespace}"),
            "--standalone=true".to_owned(),
            "--retry-timeout=10s".to_owned(),
            "--kube-request-timeout=5s".to_owned(),
        ])
        .start();
    let address = tracker.address;
    // The rights take a moment to reach the server's authorizer; then the tracker has been
    // allowed before the restart, as a running tracker has.
    let started = Instant::now();
    for pod in 0..PODS {
        let job = format!("pod_name=w{pod}&job=first");
        while request(address, "POST", &format!("/increment?{job}"), &[]).status != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the tracker's rights took effect"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            request(address, "POST", &format!("/decrement?{job}"), &[]).status,
            200
        );
    }

    let answers: Arc<Vec<Mutex<Answers>>> = Arc::new((0..PODS).map(|_| Mutex::default()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (answers, stop) = (Arc::clone(&answers), Arc::clone(&stop));
            let pod = client % PODS;
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let target = format!("/increment?pod_name=w{pod}");
                    let answer = request(address, "POST", &target, &[]);
                    let mut answers = answers[pod].lock().expect("answers");
                    *answers.by_status.entry(answer.status).or_default() += 1;
                    if ![200, 503, 504].contains(&answer.status) {
                        answers.unexpected.push(format!(
                            "{} {}",
                            answer.status,
                            answer.body.trim()
                        ));
                    }
                }
            })
        })
        .collect();
    // Mid-burst: the API server process is killed and started again, as an upgrade of a
    // single control plane does; the burst goes on until well after it is back.
    for _ in 0..RESTARTS {
        std::thread::sleep(Duration::from_millis(700));
        cluster.restart_apiserver(Duration::from_millis(300));
        cluster.wait_ready();
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client");
    }
    let mut table = Vec::new();
    for (pod, answers) in answers.iter().enumerate() {
        let answers = answers.lock().expect("answers");
        assert!(answers.unexpected.is_empty(), "pod w{pod}: {answers:?}");
        let stored: u64 = admin.get(&format!("{pods}/w{pod}")).expect(200, "the pod")["metadata"]
            ["labels"]["active-jobs"]
            .as_str()
            .map_or(0, |count| count.parse().expect("a count"));
        let acknowledged = answers.by_status.get(&200).copied().unwrap_or(0);
        let unknown = answers.by_status.get(&504).copied().unwrap_or(0);
        assert!(
            (acknowledged..=acknowledged + unknown).contains(&stored),
            "pod w{pod}: stored {stored}, answers {:?}",
            answers.by_status
        );
        assert!(
            acknowledged > 0,
            "the burst went on across the restarts: {:?}",
            answers.by_status
        );
        table.push(format!("w{pod}: {:?}, label {stored}", answers.by_status));
    }
    let metrics = tracker.request("GET", "/metrics", &[]).body;
    let recovering = metrics
        .lines()
        .find(|line| line.contains("write_retries_total{reason=\"recovering\"}"))
        .unwrap_or("no recovering retries");
    // For the record (docs/benchmarks.md): what the clients saw and what the tracker retried.
    eprintln!("{}\n{recovering}", table.join("\n"));
}
