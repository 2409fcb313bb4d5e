//! What every recipe test shares: a pod on the real API server with its sidecar tracker, the
//! pod's stored history (watched with kubectl from before the first job), the checks that
//! every job is counted once and released once, and the recipes' files.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::scene::{Scene, get_and_patch_pods};
use crate::support::Tracker;

/// The label that holds the count (the tracker's default).
pub(crate) const LABEL: &str = "active-jobs";
/// The annotation that holds the running keyed jobs.
pub(crate) const JOBS: &str = "active-jobs-jobs";
/// How long anything here may take before a test gives up.
pub(crate) const LIMIT: Duration = Duration::from_secs(60);

/// The repository's root.
pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the repository, read.
pub(crate) fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// A URL where nothing listens: a tracker that cannot be reached.
pub(crate) fn nobody() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let address = listener.local_addr().expect("an address");
    drop(listener);
    format!("http://{address}")
}

/// A fresh scratch folder, removed on drop.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("pwt-recipes-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        Scratch(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// Waits (bounded) until `name` exists in the folder.
    pub(crate) fn wait_for(&self, name: &str) {
        wait_until(&format!("{name} to appear"), || self.0.join(name).exists());
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `done` every 50 ms until it holds; panics after [`LIMIT`].
pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < LIMIT, "waited {LIMIT:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A pod on the real API server, counted by its own sidecar tracker (as the injector adds
/// it: the pod's service account with get and patch on pods), and the pod's stored history
/// from before the tracker started.
pub(crate) struct Recipe {
    pub(crate) scene: Scene,
    pub(crate) pod: String,
    pub(crate) tracker: Tracker,
    history: History,
}

impl Recipe {
    /// A namespace named after `prefix`, pod `pod` with `labels`, and its tracker, ready.
    pub(crate) fn start(prefix: &str, pod: &str, labels: &[(&str, &str)]) -> Recipe {
        let scene = Scene::new(prefix);
        scene.pod(pod, labels);
        let account = scene.account("job-tracker", get_and_patch_pods(&[]));
        scene.wait_allowed(&scene.kubeconfig(&account), &scene.pods_path(Some(pod)));
        let history = History::watch(&scene, pod);
        let tracker = scene.sidecar(&account, pod).start();
        tracker.wait_ready();
        Recipe {
            scene,
            pod: pod.to_owned(),
            tracker,
            history,
        }
    }

    /// The tracker's base URL, as the injector sets `TRACKER_URL`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.tracker.address)
    }

    /// The stored count label.
    pub(crate) fn count(&self) -> Option<String> {
        self.scene.label(&self.pod, LABEL)
    }

    /// Waits (bounded) until the stored count is `expected` (`None`: no label).
    pub(crate) fn wait_for_count(&self, expected: Option<&str>, what: &str) {
        let started = Instant::now();
        loop {
            let count = self.count();
            if count.as_deref() == expected {
                return;
            }
            assert!(
                started.elapsed() < LIMIT,
                "{what}: the count stayed {count:?}, expected {expected:?}\n--- tracker ---\n{}",
                self.tracker.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every stored state of the pod since before its tracker started, consecutive repeats
    /// (writes that changed neither the count nor the jobs) folded.
    pub(crate) fn history(&self) -> Vec<State> {
        let now = self.scene.read_pod(&self.pod)["metadata"]["resourceVersion"]
            .as_str()
            .expect("a resourceVersion")
            .to_owned();
        self.history.states_until(&now)
    }

    /// Checks that the tracker answered exactly `expected` calls of `route` (`/increment`,
    /// `/decrement`) with 200; its log lines are read from its stderr a moment after the
    /// answers, so this waits (bounded) for them.
    pub(crate) fn assert_calls(&self, route: &str, expected: usize) {
        let needle = format!("POST {route} ");
        let calls = || {
            self.tracker
                .log()
                .lines()
                .filter(|line| line.contains(&needle) && line.contains("status=200"))
                .count()
        };
        let started = Instant::now();
        while calls() < expected && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(calls(), expected, "{route} calls:\n{}", self.tracker.log());
    }
}

/// The pod as stored at one moment: its count label and the keys of its running jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct State {
    pub(crate) count: Option<String>,
    pub(crate) jobs: BTreeSet<String>,
}

impl State {
    fn of(pod: &Value) -> State {
        let metadata = &pod["metadata"];
        let count = metadata["labels"][LABEL].as_str().map(str::to_owned);
        let jobs = metadata["annotations"][JOBS]
            .as_str()
            .map(|text| {
                let parsed: Value =
                    serde_json::from_str(text).expect("the jobs annotation is JSON");
                parsed["jobs"]
                    .as_object()
                    .map(|jobs| jobs.keys().cloned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        State { count, jobs }
    }
}

/// `kubectl get pod --watch`: every version of the pod the API server stores, in order, from
/// before the first job (a poll could miss a job that starts and ends between two reads).
struct History {
    child: Child,
    events: Arc<Mutex<Vec<(String, State)>>>,
}

impl History {
    fn watch(scene: &Scene, pod: &str) -> History {
        let mut child = scene
            .cluster
            .kubectl()
            .args(["get", "pod", pod, "-n", &scene.namespace])
            .args(["--watch", "--output-watch-events", "-o", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl runs");
        let stdout = child.stdout.take().expect("stdout piped");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        std::thread::spawn(move || {
            let stream = serde_json::Deserializer::from_reader(stdout).into_iter::<Value>();
            for event in stream.map_while(Result::ok) {
                let pod = &event["object"];
                let version = pod["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((version, State::of(pod)));
            }
        });
        let history = History { child, events };
        // The watch has begun once it printed the pod as it is.
        wait_until("kubectl's watch to start", || {
            !history.snapshot().is_empty()
        });
        history
    }

    fn snapshot(&self) -> Vec<(String, State)> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The states up to the stored version `version` (waits until the watch has seen it).
    fn states_until(&self, version: &str) -> Vec<State> {
        wait_until("the watch to see the pod's last version", || {
            self.snapshot().iter().any(|(seen, _)| seen == version)
        });
        let mut states: Vec<State> = Vec::new();
        for (_, state) in self.snapshot() {
            if states.last() != Some(&state) {
                states.push(state);
            }
        }
        states
    }
}

impl Drop for History {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Checks what every recipe promises: at every stored moment the count is the number of
/// running jobs (no anonymous count, nothing counted twice); each of `keys` was counted in
/// one unbroken stretch (started once, released once) and no other job was; and at the end
/// nothing is counted (the label removed).
pub(crate) fn assert_each_job_counted_once(states: &[State], keys: &[&str]) {
    for state in states {
        let expected = (!state.jobs.is_empty()).then(|| state.jobs.len().to_string());
        assert_eq!(
            state.count, expected,
            "count and jobs disagree: {states:#?}"
        );
    }
    let seen: BTreeSet<&str> = states
        .iter()
        .flat_map(|state| state.jobs.iter().map(String::as_str))
        .collect();
    let wanted: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(seen, wanted, "the jobs counted: {states:#?}");
    for key in keys {
        let at: Vec<usize> = states
            .iter()
            .enumerate()
            .filter(|(_, state)| state.jobs.contains(*key))
            .map(|(index, _)| index)
            .collect();
        let (first, last) = (at[0], at[at.len() - 1]);
        assert_eq!(
            last - first + 1,
            at.len(),
            "job {key} was counted, released and counted again: {states:#?}"
        );
    }
    let end = states.last().expect("a history");
    assert!(
        end.jobs.is_empty() && end.count.is_none(),
        "counted at the end: {states:#?}"
    );
}

/// The jobs of each stored state, for histories whose exact order is known.
pub(crate) fn job_sets(states: &[State]) -> Vec<Vec<String>> {
    states
        .iter()
        .map(|state| state.jobs.iter().cloned().collect())
        .collect()
}

/// A child process's standard error, read in full.
pub(crate) fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut text).expect("reads stderr");
    }
    text
}

/// Waits (bounded) for `child` to exit; kills it and panics after [`LIMIT`].
pub(crate) fn finish(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("{what} did not exit within {LIMIT:?}");
        }
        // Polling a child's exit has no blocking-with-timeout form in std.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kill -SIGNAL TARGET` (a pid, or `-PGID` for a process group).
pub(crate) fn kill(signal: &str, target: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), "--".to_owned(), target.to_owned()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {target} failed");
}

/// The objects `kustomize build DIR` renders (the real kustomize of crates/testenv).
pub(crate) fn kustomize_build(dir: &str) -> Vec<Value> {
    let output = Command::new(testenv::tool("kustomize"))
        .arg("build")
        .arg(root().join(dir))
        .output()
        .expect("kustomize runs");
    assert!(output.status.success(), "kustomize build {dir}: {output:?}");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    serde_saphyr::from_multiple::<Value>(&text).expect("kustomize's output is YAML")
}

/// The one object of `kind` named `name` among `objects`.
pub(crate) fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {objects:#?}"))
}

/// The YAML code block of a Markdown file that contains `marker`, parsed.
pub(crate) fn yaml_block(markdown: &str, marker: &str) -> Value {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in read(markdown).lines() {
        match (&mut current, line.trim_start()) {
            (None, fence) if fence.starts_with("```yaml") => current = Some(Vec::new()),
            (Some(lines), "```") => {
                blocks.push(lines.join("\n"));
                current = None;
            }
            (Some(lines), _) => lines.push(line),
            _ => {}
        }
    }
    let block = blocks
        .into_iter()
        .find(|block| block.contains(marker))
        .unwrap_or_else(|| panic!("{markdown} has no yaml block with {marker}"));
    serde_saphyr::from_str(&block).unwrap_or_else(|e| panic!("{markdown}: {e}"))
}

/// Whether the budget `pdb` selects a pod with `labels` (matchLabels and Exists only, which
/// is what the recipes' budgets use).
pub(crate) fn selects(pdb: &Value, labels: &Value) -> bool {
    let selector = &pdb["spec"]["selector"];
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let by_expression = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|expression| {
            assert_eq!(expression["operator"], "Exists", "{pdb}");
            labels
                .get(expression["key"].as_str().unwrap_or_default())
                .is_some()
        });
    by_label && by_expression
}

/// Checks that the budget of `dir` holds pods with `labels` while they are busy and not while
/// they are idle.
pub(crate) fn assert_budget_holds_busy_pods(objects: &[Value], labels: &Value) {
    let budgets: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "PodDisruptionBudget")
        .collect();
    assert_eq!(budgets.len(), 1, "one budget: {budgets:#?}");
    let mut busy = labels.clone();
    busy[LABEL] = Value::from("1");
    assert!(selects(budgets[0], &busy), "busy pods held: {labels}");
    assert!(!selects(budgets[0], labels), "idle pods free: {labels}");
}
