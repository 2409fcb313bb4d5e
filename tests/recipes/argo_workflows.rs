//! examples/argo-workflows: a step's command wrapped with `run`.
//!
//! Argo's controller and executor do not run here. What they do with the step is small and
//! reproduced: Argo's executor starts the container's command and arguments as written, in a
//! process group of its own (workflow/executor/osspecific: Setpgid), and stops a step (argo
//! stop, terminate, a deadline) by signalling that group (osspecific.Kill: kill(-pgid)). The
//! command line is the README's WorkflowTemplate's, run as written but for the program's path,
//! which is the injector's copy in a pod and the built binary here.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::recipe::{
    Recipe, Scratch, assert_budget_holds_busy_pods, assert_each_job_counted_once, finish, kill,
    kustomize_build, nobody, object, stderr_of, yaml_block,
};

const DIR: &str = "examples/argo-workflows";
/// Where the injector installs the program for `run`.
const INSTALLED: &str = "/opt/pod-webhook-tracker/pod-webhook-tracker";

/// The README's WorkflowTemplate.
fn workflow_template() -> Value {
    yaml_block(&format!("{DIR}/README.md"), "kind: WorkflowTemplate")
}

/// The command line of the template `name`: its container's command, then its arguments.
fn command_line(name: &str) -> Vec<String> {
    let template = workflow_template();
    let step = template["spec"]["templates"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no template {name}"));
    let container = &step["container"];
    ["command", "args"]
        .iter()
        .flat_map(|field| container[field].as_array().cloned().unwrap_or_default())
        .map(|word| word.as_str().expect("a string").to_owned())
        .collect()
}

/// The `run --` prefix of the `work` step, with the program's path replaced.
fn wrapper() -> Vec<String> {
    let mut words = command_line("work");
    let end = words.iter().position(|w| w == "--").expect("run's --");
    words.truncate(end + 1);
    assert_eq!(words, [INSTALLED, "run", "--"], "the documented wrapper");
    words
}

/// Starts `words` as Argo's executor starts a step: the installed program is the built one,
/// TRACKER_URL as the injector sets it, in a process group of its own.
fn start(words: &[String], url: &str) -> std::process::Child {
    let program = match words[0].as_str() {
        INSTALLED => env!("CARGO_BIN_EXE_pod-webhook-tracker"),
        other => panic!("the step does not run {INSTALLED}: {other}"),
    };
    Command::new(program)
        .args(&words[1..])
        .env("TRACKER_URL", url)
        .env("RUST_LOG", "info")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program runs")
}

/// The job key `run` chose, from its messages.
fn run_key(recipe: &Recipe, before: &[crate::recipe::State]) -> String {
    let history = recipe.history();
    let known: std::collections::BTreeSet<&String> =
        before.iter().flat_map(|state| state.jobs.iter()).collect();
    let keys: std::collections::BTreeSet<String> = history
        .iter()
        .flat_map(|state| state.jobs.iter())
        .filter(|key| !known.contains(key))
        .cloned()
        .collect();
    assert_eq!(keys.len(), 1, "one new job: {history:#?}");
    let key = keys.into_iter().next().expect("one key");
    assert!(key.starts_with("run-"), "run's own key: {key}");
    key
}

#[test]
fn a_wrapped_step_is_counted_while_it_runs_and_released_when_it_succeeds_fails_or_is_stopped() {
    let recipe = Recipe::start(
        "argo",
        "protected-steps-work-1",
        &[("app.kubernetes.io/name", "argo-workflow-step")],
    );
    let url = recipe.url();
    let mut keys = Vec::new();

    // The work step, exactly as written.
    let before = recipe.history();
    let mut step = start(&command_line("work"), &url);
    let status = finish(&mut step, "the work step");
    let stderr = stderr_of(&mut step);
    let mut stdout = String::new();
    if let Some(mut pipe) = step.stdout.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stdout).expect("reads stdout");
    }
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stdout, "working\ndone\n", "the step's own output");
    assert!(
        stderr.contains("increment: ok (active jobs in this pod: 1)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("decrement: ok (active jobs in this pod: 0)"),
        "{stderr}"
    );
    keys.push(run_key(&recipe, &before));

    // A step whose command fails: Argo sees its status.
    let before = recipe.history();
    let mut words = wrapper();
    words.extend(["sh", "-c", "exit 3"].map(str::to_owned));
    let mut step = start(&words, &url);
    let status = finish(&mut step, "a failing step");
    let stderr = stderr_of(&mut step);
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("decrement: ok (active jobs in this pod: 0)"),
        "{stderr}"
    );
    keys.push(run_key(&recipe, &before));

    // A step stopped while it runs: SIGTERM to its process group.
    let before = recipe.history();
    let scratch = Scratch::new("argo-stopped");
    let mut words = wrapper();
    let script = format!("touch '{}/started'; sleep 600", scratch.path().display());
    words.extend(["sh".to_owned(), "-c".to_owned(), script]);
    let mut step = start(&words, &url);
    scratch.wait_for("started");
    recipe.wait_for_count(Some("1"), "counted while the step runs");
    kill("TERM", &format!("-{}", step.id()));
    let status = finish(&mut step, "a stopped step");
    let stderr = stderr_of(&mut step);
    assert_eq!(status.code(), Some(143), "128 + SIGTERM: {stderr}");
    assert!(
        stderr.contains("decrement: ok (active jobs in this pod: 0)"),
        "{stderr}"
    );
    keys.push(run_key(&recipe, &before));

    let history = recipe.history();
    assert_each_job_counted_once(
        &history,
        &keys.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(
        history.len(),
        7,
        "idle, then each step counted and released: {history:#?}"
    );
    recipe.assert_calls("/increment", 3);
    recipe.assert_calls("/decrement", 3);
}

#[test]
fn a_step_whose_tracker_cannot_be_reached_does_not_start_and_fails_saying_why() {
    let url = nobody();
    let scratch = Scratch::new("argo-unreachable");
    // The documented wrapper, with a retry timeout short enough for a test (30 s otherwise).
    let mut words = wrapper();
    words.insert(2, "--retry-timeout=2s".to_owned());
    let script = format!("touch '{}/started'", scratch.path().display());
    words.extend(["sh".to_owned(), "-c".to_owned(), script]);
    let started = Instant::now();
    let mut step = start(&words, &url);
    let status = finish(&mut step, "the step");
    let stderr = stderr_of(&mut step);
    assert_eq!(status.code(), Some(75), "EX_TEMPFAIL: {stderr}");
    assert!(
        !scratch.path().join("started").exists(),
        "the command must not start"
    );
    for words in [
        format!("could not count this job at {url}"),
        "not starting it".to_owned(),
    ] {
        assert!(stderr.contains(&words), "{words:?} in {stderr}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded by --retry-timeout"
    );
}

#[test]
fn step_pods_opt_in_to_injection_and_run_and_are_held_by_the_budget_while_busy() {
    let template = workflow_template();
    let spec = &template["spec"];
    let metadata = &spec["podMetadata"];
    assert_eq!(metadata["labels"]["pod-webhook-tracker.io/inject"], "true");
    assert_eq!(
        metadata["annotations"]["pod-webhook-tracker.io/run"],
        "true"
    );
    let objects = kustomize_build(DIR);
    assert_budget_holds_busy_pods(&objects, &metadata["labels"]);
    object(
        &objects,
        "ServiceAccount",
        spec["serviceAccountName"].as_str().unwrap_or_default(),
    );
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert!(
        spec["executor"]["serviceAccountName"].is_string(),
        "Argo's executor keeps a token"
    );
}
