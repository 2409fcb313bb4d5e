//! A demo that needs no cluster: `cargo run --example demo`.
//!
//! It starts the Kubernetes API test double with three running worker pods and the
//! PodDisruptionBudget that protects busy ones, starts a tracker in sidecar mode (for
//! `worker-0`) and one in standalone mode (for the others), runs a few overlapping jobs (one of
//! them fails, and still decrements), prints the label as it changes, and asks the eviction API
//! which pods a node drain could take. Then it starts the injector (`inject`), registers it
//! as a mutating webhook and creates a bare pod that is stored with its tracker sidecar. It
//! finishes by itself in a few seconds.

mod injection;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kube_double::{ApiServer, NewPod, Rule, Subject, User};
use pod_webhook_tracker::cli::{self, Command};
use pod_webhook_tracker::config::{Config, Environment};
use pod_webhook_tracker::serve;
use pod_webhook_tracker::serve::server::StopHandle;
use serde_json::json;

const NS: &str = "demo";
const WORKERS: [&str; 3] = ["worker-0", "worker-1", "worker-2"];

fn main() {
    // The trackers log through `log`; RUST_LOG=info shows their lines too.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let started = Instant::now();
    let say = move |text: String| println!("[{:>5} ms] {text}", started.elapsed().as_millis());

    say("starting the Kubernetes API test double (no cluster needed)".into());
    let api = cluster();
    let sidecar = Tracker::start(
        &api,
        &[],
        Environment {
            pod_name: Some("worker-0".into()),
            pod_namespace: Some(NS.into()),
            ..Default::default()
        },
    );
    say(format!(
        "sidecar tracker for {NS}/worker-0 listens on {}",
        sidecar.address
    ));
    let central = Tracker::start(
        &api,
        &["--standalone=true", "--label-selector=app=worker"],
        Environment::default(),
    );
    say(format!(
        "standalone tracker for the other workers listens on {}",
        central.address
    ));

    let watching = Arc::new(AtomicBool::new(true));
    let watcher = watch_labels(&api, Arc::clone(&watching), say);

    // Overlapping jobs: two on worker-0 through its sidecar, one on worker-1 and a failing one
    // on worker-2 through the central service (`?pod_name=`).
    let jobs = [
        Job {
            name: "transcode-a",
            tracker: sidecar.address,
            query: "",
            start_ms: 0,
            run_ms: 900,
            fails: false,
        },
        Job {
            name: "transcode-b",
            tracker: sidecar.address,
            query: "",
            start_ms: 200,
            run_ms: 500,
            fails: false,
        },
        Job {
            name: "report",
            tracker: central.address,
            query: "pod_name=worker-1",
            start_ms: 100,
            run_ms: 700,
            fails: false,
        },
        Job {
            name: "import",
            tracker: central.address,
            query: "pod_name=worker-2",
            start_ms: 150,
            run_ms: 300,
            fails: true,
        },
    ];
    let (started_tx, started) = std::sync::mpsc::channel();
    let job_count = jobs.len();
    let runners: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let started_tx = started_tx.clone();
            thread::spawn(move || job.run(say, started_tx))
        })
        .collect();

    // The drain comes once every job has started: the shortest job still runs for 300 ms.
    for _ in 0..job_count {
        let _ = started.recv_timeout(Duration::from_secs(30));
    }
    say("a node drain now asks the eviction API about each pod (dry run):".into());
    drain(&api, say, false);

    for runner in runners {
        let _ = runner.join();
    }
    thread::sleep(Duration::from_millis(100));
    say("all jobs are done; the drain asks again, and this time evicts:".into());
    drain(&api, say, true);

    watching.store(false, Ordering::SeqCst);
    let _ = watcher.join();
    sidecar.stop();
    central.stop();

    say("pods can get the sidecar without a line of YAML: the injector adds it".into());
    injection::show(&api, NS, say);
    say("done".into());
}

/// The double with the workers, their RBAC and the budget.
fn cluster() -> ApiServer {
    let api = ApiServer::start();
    api.add_token("admin-token", User::admin("admin"));
    api.add_token(
        "tracker-token",
        User::new("system:serviceaccount:demo:job-tracker"),
    );
    api.allow(
        Subject::user("system:serviceaccount:demo:job-tracker"),
        Rule::new(["get", "patch"], ["pods"]).namespace(NS),
    );
    for name in WORKERS {
        api.add_pod(
            NewPod::new(NS, name)
                .label("app", "worker")
                .phase("Running")
                .node("node-1")
                .service_account("job-tracker"),
        );
    }
    api.create_pdb(
        NS,
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "busy-workers"},
            "spec": {
                "minAvailable": 9999,
                "selector": {
                    "matchLabels": {"app": "worker"},
                    "matchExpressions": [{"key": "active-jobs", "operator": "Exists"}]
                }
            }
        }),
    );
    api
}

/// A tracker running in this process, as `pod-webhook-tracker serve` would.
struct Tracker {
    address: SocketAddr,
    stop: StopHandle,
    serving: thread::JoinHandle<usize>,
}

impl Tracker {
    fn start(api: &ApiServer, extra: &[&str], environment: Environment) -> Tracker {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--address=127.0.0.1:0".into(),
            format!("--kube-server={}", api.url()),
            "--kube-token=tracker-token".into(),
            format!("--namespace={NS}"),
        ];
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let args = cli::normalize(&args).expect("demo flags are valid");
        let Ok(cli::Cli {
            command: Command::Serve(serve_args),
        }) = cli::parse("pod-webhook-tracker", &args)
        else {
            panic!("demo flags parse as serve");
        };
        let config =
            Config::from_args(&serve_args, &environment).expect("demo configuration is valid");
        let running =
            serve::start(config).unwrap_or_else(|e| panic!("tracker did not start: {}", e.message));
        let address = running.address().expect("an IP address");
        let stop = running.stop_handle();
        Tracker {
            address,
            stop,
            serving: thread::spawn(move || running.wait()),
        }
    }

    fn stop(self) {
        self.stop.stop();
        let _ = self.serving.join();
    }
}

/// A simulated job: increments, works, and decrements on every way out (like `trap … EXIT`).
struct Job {
    name: &'static str,
    tracker: SocketAddr,
    query: &'static str,
    start_ms: u64,
    run_ms: u64,
    fails: bool,
}

impl Job {
    fn run(self, say: impl Fn(String), started: std::sync::mpsc::Sender<()>) {
        thread::sleep(Duration::from_millis(self.start_ms));
        let (status, count) = post(self.tracker, "/increment", self.query);
        say(format!(
            "job {:<11} started:  POST /increment → {status} {count}",
            self.name
        ));
        let _ = started.send(());
        let outcome: Result<(), String> = {
            thread::sleep(Duration::from_millis(self.run_ms));
            if self.fails {
                Err("input file is corrupt".into())
            } else {
                Ok(())
            }
        };
        // The decrement runs whatever the outcome, as a shell `trap` would.
        let (status, count) = post(self.tracker, "/decrement", self.query);
        match outcome {
            Ok(()) => say(format!(
                "job {:<11} finished: POST /decrement → {status} {count}",
                self.name
            )),
            Err(why) => say(format!(
                "job {:<11} FAILED ({why}): POST /decrement → {status} {count}",
                self.name
            )),
        }
    }
}

/// One webhook call, the way `curl -X POST` would make it.
fn post(tracker: SocketAddr, path: &str, query: &str) -> (u16, String) {
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    http(tracker, &target, &[], "")
}

/// One HTTP/1.1 POST on a fresh connection: the status and the body.
fn http(address: SocketAddr, target: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("the server listens");
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nHost: demo\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("request sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer read");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned();
    (status, body)
}

/// Prints every change of the `active-jobs` label on the workers.
fn watch_labels(
    api: &ApiServer,
    watching: Arc<AtomicBool>,
    say: impl Fn(String) + Send + 'static,
) -> thread::JoinHandle<()> {
    let api = api.clone();
    let seen = Arc::new(Mutex::new(BTreeMap::<&str, Option<String>>::new()));
    thread::spawn(move || {
        while watching.load(Ordering::SeqCst) {
            for name in WORKERS {
                let now = api
                    .labels(NS, name)
                    .and_then(|labels| labels.get("active-jobs").cloned());
                let mut seen = seen.lock().expect("seen");
                let before = seen.insert(name, now.clone()).flatten();
                if before != now {
                    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
                    say(format!(
                        "    label active-jobs on {name}: {} → {}",
                        show(&before),
                        show(&now)
                    ));
                }
            }
            // A demo prints changes as a person would see them in `kubectl get pods -L active-jobs -w`.
            thread::sleep(Duration::from_millis(10));
        }
    })
}

/// Asks the eviction API about each worker as the admin, as `kubectl drain` does; a dry run
/// only asks.
fn drain(api: &ApiServer, say: impl Fn(String), for_real: bool) {
    let address: SocketAddr = api
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("the double's address");
    for name in WORKERS {
        let dry_run = if for_real { "" } else { "?dryRun=All" };
        let body =
            json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}})
                .to_string();
        let (status, answer) = http(
            address,
            &format!("/api/v1/namespaces/{NS}/pods/{name}/eviction{dry_run}"),
            &[
                ("Authorization", "Bearer admin-token"),
                ("Content-Type", "application/json"),
            ],
            &body,
        );
        let message = serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|status| status["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        match (status, for_real) {
            (201, true) => say(format!("    evict {name}: allowed (201), pod evicted")),
            (201, false) => say(format!("    evict {name}: would be allowed (201)")),
            (429, _) => say(format!("    evict {name}: REFUSED (429) — {message}")),
            (other, _) => say(format!("    evict {name}: {other} {message}")),
        }
    }
}
