//! examples/actions-runner-controller: the runner's job-started and job-completed hooks.
//!
//! GitHub's runner cannot run here (it needs GitHub), so the tests do what it does with the
//! hooks (actions/runner, src/Runner.Worker/JobExtension.cs and Handlers/ScriptHandler.cs):
//! it runs the script named by ACTIONS_RUNNER_HOOK_JOB_STARTED as `bash -e SCRIPT` (`sh -e`
//! where there is no bash) before the job's steps, and fails the job if it fails; it runs the
//! one named by ACTIONS_RUNNER_HOOK_JOB_COMPLETED the same way after the steps with the
//! condition always(), so also after a failed or cancelled step; both see the job's
//! GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT and GITHUB_JOB. The scripts are the example's files, run
//! as they are, against a real sidecar tracker; the pod template is the README's values.

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::recipe::{
    Recipe, assert_budget_holds_busy_pods, assert_each_job_counted_once, job_sets, kustomize_build,
    nobody, object, read, root, yaml_block,
};

const DIR: &str = "examples/actions-runner-controller";

/// One GitHub Actions job, as the runner describes it to its hooks.
struct Job {
    run_id: &'static str,
    attempt: &'static str,
    job: &'static str,
}

impl Job {
    /// The key the hooks give the tracker.
    fn key(&self) -> String {
        format!("gha-{}-{}-{}", self.run_id, self.attempt, self.job)
    }
}

/// Runs hook `script` of the example as the runner does: `SHELL -e SCRIPT` with the job's
/// variables and the injector's TRACKER_URL. Returns its status and standard error.
fn hook(shell: &str, script: &str, job: &Job, url: &str) -> (ExitStatus, String) {
    let output = Command::new(shell)
        .arg("-e")
        .arg(root().join(DIR).join(script))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GITHUB_RUN_ID", job.run_id)
        .env("GITHUB_RUN_ATTEMPT", job.attempt)
        .env("GITHUB_JOB", job.job)
        .env("TRACKER_URL", url)
        .env("TRACKER_RETRY_TIMEOUT", "2")
        .stdin(Stdio::null())
        .output()
        .expect("the shell runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// How a job's steps end.
enum Steps {
    Succeed,
    Fail,
    /// Cancelled while a step runs: the runner kills the step's process.
    Cancelled,
}

/// One job from its started hook to its completed hook, checking the count in between.
fn run_job(recipe: &Recipe, shell: &str, job: &Job, steps: Steps) {
    let url = recipe.url();
    let (status, stderr) = hook(shell, "job-started.sh", job, &url);
    assert!(status.success(), "job-started.sh: {stderr}");
    assert!(
        stderr.contains(&format!(
            "increment {}: ok (active jobs in this pod: 1)",
            job.key()
        )),
        "{stderr}"
    );
    assert_eq!(
        recipe.count().as_deref(),
        Some("1"),
        "counted while it runs"
    );
    match steps {
        Steps::Succeed => {
            let status = Command::new("sh").args(["-c", "true"]).status();
            assert!(status.expect("a step runs").success());
        }
        Steps::Fail => {
            let status = Command::new("sh").args(["-c", "exit 1"]).status();
            assert_eq!(status.expect("a step runs").code(), Some(1));
        }
        Steps::Cancelled => {
            let mut step = Command::new("sleep")
                .arg("600")
                .spawn()
                .expect("a step runs");
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(
                recipe.count().as_deref(),
                Some("1"),
                "counted while it runs"
            );
            step.kill().expect("the runner cancels the step");
            let _ = step.wait();
        }
    }
    let (status, stderr) = hook(shell, "job-completed.sh", job, &url);
    assert!(status.success(), "job-completed.sh: {stderr}");
    assert!(
        stderr.contains(&format!(
            "decrement {}: ok (active jobs in this pod: 0)",
            job.key()
        )),
        "{stderr}"
    );
    assert_eq!(recipe.count(), None, "released after the job");
}

/// Three jobs on one runner pod, run by `shell`: they succeed, fail, and are cancelled.
fn jobs_that_succeed_fail_and_are_cancelled(shell: &str) {
    let recipe = Recipe::start(
        &format!("arc-{shell}"),
        "runner-1",
        &[("app.kubernetes.io/name", "gha-runner")],
    );
    let jobs = [
        Job {
            run_id: "1001",
            attempt: "1",
            job: "build",
        },
        Job {
            run_id: "1002",
            attempt: "1",
            job: "test",
        },
        Job {
            run_id: "1002",
            attempt: "2",
            job: "test",
        },
    ];
    run_job(&recipe, shell, &jobs[0], Steps::Succeed);
    run_job(&recipe, shell, &jobs[1], Steps::Fail);
    // A re-run (the next attempt) is another job, cancelled this time.
    run_job(&recipe, shell, &jobs[2], Steps::Cancelled);
    let keys: Vec<String> = jobs.iter().map(Job::key).collect();
    let history = recipe.history();
    assert_each_job_counted_once(
        &history,
        &keys.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let one = |key: &String| vec![key.clone()];
    assert_eq!(
        job_sets(&history),
        vec![
            vec![],
            one(&keys[0]),
            vec![],
            one(&keys[1]),
            vec![],
            one(&keys[2]),
            vec![]
        ],
        "each job counted from its started hook to its completed hook"
    );
    recipe.assert_calls("/increment", 3);
    recipe.assert_calls("/decrement", 3);
}

#[test]
fn runner_hooks_run_by_bash_count_each_job_once_whether_it_succeeds_fails_or_is_cancelled() {
    jobs_that_succeed_fail_and_are_cancelled("bash");
}

#[test]
fn runner_hooks_run_by_sh_count_each_job_once_whether_it_succeeds_fails_or_is_cancelled() {
    jobs_that_succeed_fail_and_are_cancelled("sh");
}

#[test]
fn a_repeated_hook_changes_nothing_and_never_ends_another_job() {
    let recipe = Recipe::start(
        "arc-repeat",
        "runner-1",
        &[("app.kubernetes.io/name", "gha-runner")],
    );
    let url = recipe.url();
    let deploy = Job {
        run_id: "2001",
        attempt: "1",
        job: "deploy",
    };
    let build = Job {
        run_id: "2002",
        attempt: "1",
        job: "build",
    };
    let expect = |script: &str, job: &Job, count: &str| {
        let (status, stderr) = hook("bash", script, job, &url);
        assert!(status.success(), "{script}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{} {}: ok (active jobs in this pod: {count})",
                if script == "job-started.sh" {
                    "increment"
                } else {
                    "decrement"
                },
                job.key()
            )),
            "{script} for {}: {stderr}",
            job.key()
        );
        assert_eq!(recipe.count().as_deref(), (count != "0").then_some(count));
    };
    expect("job-started.sh", &deploy, "1");
    expect("job-started.sh", &build, "2");
    // The same hook again (a runner that retries it): the job is already counted.
    expect("job-started.sh", &build, "2");
    expect("job-completed.sh", &build, "1");
    // Ending it again must not end the deploy job.
    expect("job-completed.sh", &build, "1");
    expect("job-completed.sh", &deploy, "0");
    let history = recipe.history();
    assert_each_job_counted_once(&history, &[&deploy.key(), &build.key()]);
    let (d, b) = (deploy.key(), build.key());
    let mut both = vec![d.clone(), b.clone()];
    both.sort();
    assert_eq!(
        job_sets(&history),
        vec![vec![], vec![d.clone()], both, vec![d], vec![]],
        "the repeated calls stored nothing"
    );
}

#[test]
fn a_tracker_that_cannot_be_reached_fails_the_job_before_its_first_step_saying_why() {
    let url = nobody();
    let job = Job {
        run_id: "3001",
        attempt: "1",
        job: "build",
    };
    let started = Instant::now();
    let (status, stderr) = hook("bash", "job-started.sh", &job, &url);
    assert!(!status.success(), "the job must not start: {stderr}");
    for words in [
        "::error title=pod-webhook-tracker::could not count job gha-3001-1-build",
        &format!("no final answer from the tracker at {url}"),
        "so the job does not start",
    ] {
        assert!(stderr.contains(words), "{words:?} in {stderr}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded by TRACKER_RETRY_TIMEOUT"
    );
    // The completed hook still runs; it warns and leaves the job's result alone.
    let (status, stderr) = hook("bash", "job-completed.sh", &job, &url);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("::warning title=pod-webhook-tracker::could not end job gha-3001-1-build"),
        "{stderr}"
    );
}

#[test]
fn a_hook_run_outside_a_job_says_what_is_missing() {
    let output = Command::new("bash")
        .arg("-e")
        .arg(root().join(DIR).join("job-started.sh"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TRACKER_URL", nobody())
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("GITHUB_RUN_ID or GITHUB_JOB is not set"),
        "{stderr}"
    );
}

#[test]
fn the_runner_pod_template_opts_in_and_runs_the_hooks_the_kustomization_ships() {
    let values = yaml_block(&format!("{DIR}/README.md"), "githubConfigUrl");
    let template = &values["template"];
    let labels = &template["metadata"]["labels"];
    assert_eq!(
        labels["pod-webhook-tracker.io/inject"], "true",
        "{template}"
    );
    let objects = kustomize_build(DIR);
    assert_budget_holds_busy_pods(&objects, labels);
    let spec = &template["spec"];
    object(
        &objects,
        "ServiceAccount",
        spec["serviceAccountName"].as_str().unwrap_or_default(),
    );
    assert_eq!(
        spec["automountServiceAccountToken"], false,
        "the token reaches the tracker only"
    );
    let runner = &spec["containers"][0];
    assert_eq!(runner["name"], "runner", "the chart's runner container");
    // The hooks' paths lie in a mount of a volume of the ConfigMap the kustomization renders.
    let volume = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|volume| volume["configMap"].is_object())
        .expect("a ConfigMap volume");
    let mount = runner["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|mount| mount["name"] == volume["name"])
        .expect("the hooks mounted into the runner");
    let config_map = object(
        &objects,
        "ConfigMap",
        volume["configMap"]["name"].as_str().unwrap_or_default(),
    );
    let env: Vec<(&str, &str)> = runner["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default(),
                e["value"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    for (variable, script) in [
        ("ACTIONS_RUNNER_HOOK_JOB_STARTED", "job-started.sh"),
        ("ACTIONS_RUNNER_HOOK_JOB_COMPLETED", "job-completed.sh"),
    ] {
        let path = format!(
            "{}/{script}",
            mount["mountPath"].as_str().unwrap_or_default()
        );
        assert!(
            env.contains(&(variable, path.as_str())),
            "{variable}={path} in {env:?}"
        );
    }
    // The ConfigMap holds the files the tests run, as they are.
    let data: Value = config_map["data"].clone();
    for file in ["tracker.sh", "job-started.sh", "job-completed.sh"] {
        assert_eq!(data[file], json!(read(&format!("{DIR}/{file}"))), "{file}");
    }
    assert_eq!(data.as_object().map(|d| d.len()), Some(3), "{data}");
}
