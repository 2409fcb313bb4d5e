//! examples/celery: the task signals of pod_webhook_tracker_celery.py in a real Celery worker.
//!
//! The worker is Celery's own (`celery worker`, prefork pool, three child processes), pinned in
//! tests/recipes/celery/requirements.txt and installed from PyPI into a virtual environment
//! under ~/.cache/pod-webhook-tracker (once; the test fails, naming pip's output, if it cannot
//! be installed). Its broker is Kombu's filesystem transport in a scratch folder (no broker
//! server), and tests/recipes/celery/driver.py sends tasks and revocations the way an
//! application does. The worker imports the example's module, unchanged, and counts its tasks
//! through a real sidecar tracker on a real kube-apiserver.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::recipe::{
    LIMIT, Recipe, Scratch, assert_budget_holds_busy_pods, assert_each_job_counted_once,
    kustomize_build, nobody, object, read, root,
};

const DIR: &str = "examples/celery";
const HELPERS: &str = "tests/recipes/celery";

/// A stable hash of `text` (FNV-1a), naming the environment of one set of pins.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The virtual environment with the pinned Celery, made once per set of pins.
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let requirements = root().join(HELPERS).join("requirements.txt");
        let pins = read(&format!("{HELPERS}/requirements.txt"));
        let home = std::env::var_os("HOME").expect("HOME is set");
        let cache = PathBuf::from(home).join(".cache/pod-webhook-tracker");
        std::fs::create_dir_all(&cache).expect("the cache folder");
        let dir = cache.join(format!("celery-{:016x}", fnv(&pins)));
        // A virtual environment cannot be moved (its scripts name its path), so it is made in
        // place, under a lock against other test processes, and marked ready last.
        let lock = File::create(cache.join(format!("celery-{:016x}.lock", fnv(&pins))))
            .expect("the lock file");
        lock.lock().expect("locks the environment");
        if dir.join("ready").exists() {
            return dir;
        }
        let _ = std::fs::remove_dir_all(&dir);
        let run = |command: &mut Command, what: &str| {
            let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                output.status.success(),
                "{what} failed, so the Celery recipe cannot be tested (PyPI must be reachable):\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        };
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&dir),
            "python3 -m venv",
        );
        run(
            Command::new(dir.join("bin/python"))
                .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input"])
                .arg("-r")
                .arg(&requirements),
            "pip install -r tests/recipes/celery/requirements.txt",
        );
        std::fs::write(dir.join("ready"), pins).expect("marks the environment ready");
        dir
    })
}

/// The environment of every Celery process of a test: the example's module and the test's
/// app on the path, the shared broker folder, the markers' folder, and the tracker.
fn environment(command: &mut Command, scratch: &Scratch, url: &str) {
    let path = format!(
        "{}:{}",
        root().join(DIR).display(),
        root().join(HELPERS).display()
    );
    command
        .env("PYTHONPATH", path)
        // No __pycache__ folders in the work tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("RECIPE_BROKER_DIR", scratch.path().join("broker"))
        .env("RECIPE_MARKER_DIR", scratch.path().join("markers"))
        .env("TRACKER_URL", url)
        .env("TRACKER_RETRY_TIMEOUT", "1")
        .current_dir(scratch.path());
}

/// A Celery worker, running; killed with its children on drop.
struct Worker {
    child: Child,
    log: PathBuf,
    scratch: Scratch,
    url: String,
}

impl Worker {
    fn start(name: &str, url: &str) -> Worker {
        let scratch = Scratch::new(name);
        for folder in ["broker/data", "broker/control", "markers"] {
            std::fs::create_dir_all(scratch.path().join(folder)).expect("a folder");
        }
        let log = scratch.path().join("worker.log");
        let file = File::create(&log).expect("the worker's log");
        let mut command = Command::new(venv().join("bin/celery"));
        command
            .args([
                "--app=recipe_app",
                "worker",
                "--pool=prefork",
                "--concurrency=3",
            ])
            .args(["--loglevel=INFO", "--hostname=recipe@%h"])
            .args([
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a second handle"))
            .stderr(file);
        environment(&mut command, &scratch, url);
        let child = command.spawn().expect("celery runs");
        let worker = Worker {
            child,
            log,
            scratch,
            url: url.to_owned(),
        };
        worker.wait_for_log("ready.");
        worker
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the worker logged `needle`.
    fn wait_for_log(&self, needle: &str) {
        let started = Instant::now();
        while !self.log().contains(needle) {
            assert!(
                started.elapsed() < LIMIT,
                "waited {LIMIT:?} for {needle:?} in the worker's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `driver.py ARGS...`, as the application sends tasks and revocations.
    fn drive(&self, args: &[&str]) {
        let mut command = Command::new(venv().join("bin/python"));
        command
            .arg(root().join(HELPERS).join("driver.py"))
            .args(args);
        environment(&mut command, &self.scratch, &self.url);
        let output = command.output().expect("python runs");
        assert!(output.status.success(), "driver.py {args:?}: {output:?}");
    }

    fn send(&self, task: &str, name: &str, id: &str) {
        self.drive(&["send", task, name, id]);
    }

    fn started(&self, name: &str) {
        self.scratch.wait_for(&format!("markers/{name}.started"));
    }

    fn release(&self, name: &str) {
        std::fs::write(self.scratch.path().join(format!("markers/{name}.go")), b"")
            .expect("writes a marker");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn a_worker_counts_every_task_while_it_runs_and_releases_it_when_it_succeeds_fails_or_is_revoked() {
    let recipe = Recipe::start(
        "celery",
        "celery-worker-1",
        &[("app.kubernetes.io/name", "celery-worker")],
    );
    let worker = Worker::start("celery-worker", &recipe.url());

    // Two tasks at once in one worker: the pod is counted twice.
    worker.send("wait", "a", "task-a");
    worker.started("a");
    recipe.wait_for_count(Some("1"), "task a runs");
    worker.send("wait", "b", "task-b");
    worker.started("b");
    recipe.wait_for_count(Some("2"), "tasks a and b run");

    // b succeeds: a still runs, and still protects the pod.
    worker.release("b");
    worker.wait_for_log("Task recipe_app.wait[task-b] succeeded");
    recipe.wait_for_count(Some("1"), "task a still runs");

    // c fails: task_failure and task_postrun both end it, once.
    worker.send("fail", "c", "task-c");
    worker.wait_for_log("Task recipe_app.fail[task-c] raised unexpected");
    worker.wait_for_log("task task-c ended (FAILURE)");
    recipe.wait_for_count(Some("1"), "task a still runs");

    // d is revoked before it starts: never counted, and ending it ends nothing else.
    worker.drive(&["revoke", "task-d"]);
    worker.wait_for_log("Tasks flagged as revoked: task-d");
    worker.send("succeed", "d", "task-d");
    worker.wait_for_log("Discarding revoked task: recipe_app.succeed[task-d]");
    worker.wait_for_log("task task-d ended (revoked)");
    assert_eq!(recipe.count().as_deref(), Some("1"), "{}", worker.log());

    // a is revoked with terminate=True: the main process kills its child and ends it.
    worker.drive(&["revoke", "task-a", "terminate"]);
    worker.wait_for_log("task task-a ended (revoked, terminated)");
    recipe.wait_for_count(None, "every task ended");

    let history = recipe.history();
    assert_each_job_counted_once(
        &history,
        &["celery-task-a", "celery-task-b", "celery-task-c"],
    );
    let most = history.iter().map(|state| state.jobs.len()).max();
    assert_eq!(most, Some(2), "one worker, two tasks at once: {history:#?}");
    recipe.assert_calls("/increment", 3);
    assert!(!worker.log().contains("UNPROTECTED"), "{}", worker.log());
}

#[test]
fn a_worker_whose_tracker_cannot_be_reached_logs_that_its_task_runs_unprotected() {
    let url = nobody();
    let worker = Worker::start("celery-unreachable", &url);
    worker.send("succeed", "e", "task-e");
    worker.wait_for_log("Task recipe_app.succeed[task-e] succeeded");
    let log = worker.log();
    for words in [
        "ERROR/ForkPoolWorker",
        "pod-webhook-tracker: task task-e runs UNPROTECTED",
        &format!("no final answer from the tracker at {url}"),
    ] {
        assert!(log.contains(words), "{words:?} in {log}");
    }
}

#[test]
fn the_worker_deployment_opts_in_and_its_budget_holds_busy_workers() {
    let objects = kustomize_build(DIR);
    let deployment = object(&objects, "Deployment", "celery-worker");
    let template = &deployment["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    assert_eq!(labels["pod-webhook-tracker.io/inject"], "true");
    assert_budget_holds_busy_pods(&objects, labels);
    let spec = &template["spec"];
    object(
        &objects,
        "ServiceAccount",
        spec["serviceAccountName"].as_str().unwrap_or_default(),
    );
    assert_eq!(spec["automountServiceAccountToken"], Value::Bool(false));
    let grace = spec["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
    assert!(
        grace >= 600,
        "a warm shutdown has time to finish tasks: {grace}s"
    );
    // The module the workers import is the one the tests run.
    let module = read(&format!("{DIR}/pod_webhook_tracker_celery.py"));
    assert!(
        module.contains("@signals.task_prerun.connect"),
        "connects on import"
    );
}
