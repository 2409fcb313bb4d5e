//! examples/gitlab-runner: config.toml's pre_build_script and post_build_script, sourcing
//! job-tracker.sh, in the shell that runs the job's script.
//!
//! GitLab Runner cannot run a job here (it needs GitLab), so the tests write the step script
//! the way GitLab Runner 19.4's bash shell writes it for the Kubernetes executor
//! (shells/bash.go, BashWriter.Finish, and shells/abstract.go, writeUserScript): the outer
//! TERM trap and the exit-status trap, pipefail and errexit, and pre_build_script, the job's
//! script and post_build_script, each command echoed, eval'd in a subshell that answers
//! SIGTERM with `exit 1` (quoted for eval the POSIX way, as with FF_POSIXLY_CORRECT_ESCAPES,
//! so that `sh` can run it too). A cancellation is what the Kubernetes executor does
//! (executors/kubernetes, stageCancellationScript): SIGTERM to the children of the process
//! running the step script. pre_build_script and post_build_script are read from config.toml.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::recipe::{
    Recipe, Scratch, assert_budget_holds_busy_pods, assert_each_job_counted_once, finish, job_sets,
    kill, kustomize_build, nobody, object, read, root, stderr_of,
};

const DIR: &str = "examples/gitlab-runner";

/// The string setting `key` of section `section` (`[...]` or `[[...]]`, as written) of
/// config.toml; `KEY = "VALUE"` is the only form the example uses.
fn setting(section: &str, key: &str) -> String {
    let config = read(&format!("{DIR}/config.toml"));
    let mut current = "";
    let mut values = Vec::new();
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            current = line;
            continue;
        }
        let Some(value) = line
            .strip_prefix(key)
            .and_then(|rest| rest.trim().strip_prefix('='))
        else {
            continue;
        };
        if current != section {
            continue;
        }
        let value = value.trim();
        let inner = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("{key} is not a basic string: {value}"));
        values.push(inner.replace("\\\"", "\"").replace("\\\\", "\\"));
    }
    assert_eq!(
        values.len(),
        1,
        "config.toml sets {section} {key} once: {values:?}"
    );
    values.remove(0)
}

const RUNNER: &str = "[[runners]]";
const KUBERNETES: &str = "[runners.kubernetes]";
const CONFIG_MAP: &str = "[[runners.kubernetes.volumes.config_map]]";

/// `'text'` for sh, quotes inside escaped.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The step script GitLab Runner writes for a job with `script` under `shell`.
fn step_script(shell: &str, job_id: &str, script: &[&str], mount: &str) -> String {
    let pre =
        setting(RUNNER, "pre_build_script").replace(&setting(CONFIG_MAP, "mount_path"), mount);
    let post = setting(RUNNER, "post_build_script");
    let mut user = format!("export CI_JOB_ID={job_id}\nexport CI_JOB_STATUS=running\n");
    let mut command = |text: &str| {
        user.push_str(&format!("echo {}\n{text}\n", quoted(&format!("$ {text}"))));
    };
    command(&pre);
    for line in script {
        command(line);
    }
    command(&post);
    format!(
        "#!/usr/bin/env {shell}\n\n\
         trap 'exit 1' TERM\n\n\
         start_json=\"{{\\\"script\\\": \\\"$0\\\"}}\"\n\
         echo \"$start_json\"\n\
         runner_script_trap() {{\n\
         \texit_code=$?\n\
         \tout_json=\"{{\\\"command_exit_code\\\": $exit_code, \\\"script\\\": \\\"$0\\\"}}\"\n\
         \n\
         \techo \"\"\n\
         \techo \"$out_json\"\n\
         \texit 0\n\
         }}\n\
         \n\
         trap runner_script_trap EXIT\n\
         case \"$(set -o)\" in *\"pipefail\"*) set -o pipefail;; esac; set -o errexit\n\
         set +o noclobber\n\
         (trap 'exit 1' TERM; eval {}) < /dev/null\n\
         exit 0\n",
        quoted(&user)
    )
}

/// How a job's script ends.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    Succeeds,
    Fails,
    Cancelled,
}

/// Runs one job's step script with `shell` and returns the exit code its trap reported and
/// what it printed.
fn run_job(shell: &str, url: &str, job_id: &str, ending: Ending) -> (i64, String, Scratch) {
    let scratch = Scratch::new(&format!("gitlab-{shell}-{job_id}"));
    // The ConfigMap's mount, with the example's file in it.
    let mount = scratch.path().join("mount");
    std::fs::create_dir_all(&mount).expect("a mount");
    std::fs::copy(
        root().join(DIR).join("job-tracker.sh"),
        mount.join("job-tracker.sh"),
    )
    .expect("copies job-tracker.sh");
    let marker = scratch.path().join("script-ran");
    let touch = format!("touch {}", quoted(&marker.display().to_string()));
    let script: Vec<&str> = match ending {
        Ending::Succeeds => vec![&touch, "echo building"],
        Ending::Fails => vec![&touch, "echo failing", "false", "echo never"],
        Ending::Cancelled => vec![&touch, "while :; do sleep 0.1; done"],
    };
    let path = scratch.path().join("step_script");
    std::fs::write(
        &path,
        step_script(shell, job_id, &script, &mount.display().to_string()),
    )
    .expect("writes the step script");
    let mut child = Command::new(shell)
        .arg(&path)
        .env("TRACKER_URL", url)
        .env("TRACKER_RETRY_TIMEOUT", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the shell runs");
    if ending == Ending::Cancelled {
        let started = Instant::now();
        while !marker.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the script never ran"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The runner's cancellation: SIGTERM to the children of the step script's process.
        let pid = child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .expect("the step script's children");
        for child_pid in children.split_whitespace() {
            kill("TERM", child_pid);
        }
    }
    let status = finish(&mut child, "the step script");
    let stderr = stderr_of(&mut child);
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stdout).expect("reads stdout");
    }
    assert!(
        status.success(),
        "the runner's trap exits 0: {stdout}{stderr}"
    );
    let reported = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|line| line["command_exit_code"].as_i64())
        .unwrap_or_else(|| panic!("no exit status reported: {stdout}{stderr}"));
    (reported, format!("{stdout}{stderr}"), scratch)
}

/// Jobs that succeed, fail and are cancelled, each in the shell `shell`.
fn jobs_that_succeed_fail_and_are_cancelled(shell: &str) {
    let recipe = Recipe::start(
        &format!("gitlab-{shell}"),
        "runner-build-1",
        &[("app.kubernetes.io/name", "gitlab-ci-job")],
    );
    let url = recipe.url();
    let (code, output, _) = run_job(shell, &url, "501", Ending::Succeeds);
    assert_eq!(code, 0, "{output}");
    for words in [
        "increment gitlab-501: ok (active jobs in this pod: 1)",
        "building",
        "decrement gitlab-501: ok (active jobs in this pod: 0)",
    ] {
        assert!(output.contains(words), "{words:?} in {output}");
    }
    let (code, output, _) = run_job(shell, &url, "502", Ending::Fails);
    assert_eq!(code, 1, "{output}");
    assert!(
        !output.contains("never"),
        "errexit stopped the script: {output}"
    );
    assert!(
        !output.contains("$ pod_webhook_tracker_end"),
        "post_build_script skipped: {output}"
    );
    assert!(
        output.contains("decrement gitlab-502: ok (active jobs in this pod: 0)"),
        "the trap ended the job: {output}"
    );
    let (code, output, _) = run_job(shell, &url, "503", Ending::Cancelled);
    assert_eq!(code, 1, "the subshell's TERM trap exits 1: {output}");
    assert!(
        output.contains("decrement gitlab-503: ok (active jobs in this pod: 0)"),
        "the trap ended the cancelled job: {output}"
    );
    assert_eq!(recipe.count(), None);
    let history = recipe.history();
    assert_each_job_counted_once(&history, &["gitlab-501", "gitlab-502", "gitlab-503"]);
    let one = |key: &str| vec![key.to_owned()];
    assert_eq!(
        job_sets(&history),
        vec![
            vec![],
            one("gitlab-501"),
            vec![],
            one("gitlab-502"),
            vec![],
            one("gitlab-503"),
            vec![]
        ]
    );
    // post_build_script ended the successful job; its trap then sent nothing.
    recipe.assert_calls("/increment", 3);
    recipe.assert_calls("/decrement", 3);
}

#[test]
fn build_scripts_in_bash_count_each_job_once_whether_it_succeeds_fails_or_is_cancelled() {
    jobs_that_succeed_fail_and_are_cancelled("bash");
}

#[test]
fn build_scripts_in_sh_count_each_job_once_whether_it_succeeds_fails_or_is_cancelled() {
    jobs_that_succeed_fail_and_are_cancelled("sh");
}

#[test]
fn a_tracker_that_cannot_be_reached_fails_the_job_before_its_script_saying_why() {
    let url = nobody();
    let started = Instant::now();
    let (code, output, scratch) = run_job("bash", &url, "601", Ending::Succeeds);
    assert_eq!(code, 75, "EX_TEMPFAIL: {output}");
    assert!(
        !scratch.path().join("script-ran").exists(),
        "the job's script must not run: {output}"
    );
    for words in [
        "could not count job gitlab-601 in this pod's active-jobs label",
        &format!("no final answer from the tracker at {url}"),
        "so the job does not run",
    ] {
        assert!(output.contains(words), "{words:?} in {output}");
    }
    assert!(
        !output.contains("decrement"),
        "nothing reached the tracker, so nothing is ended: {output}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded by TRACKER_RETRY_TIMEOUT"
    );
}

#[test]
fn build_pods_opt_in_and_mount_the_script_the_kustomization_ships() {
    let config = read(&format!("{DIR}/config.toml"));
    let objects = kustomize_build(DIR);
    // The labels the runner puts on build pods.
    let labels = json!({
        "pod-webhook-tracker.io/inject": "true",
        "app.kubernetes.io/name": "gitlab-ci-job",
    });
    for (key, value) in labels.as_object().into_iter().flatten() {
        let line = format!("\"{key}\" = {value}");
        assert!(
            config.contains(&line),
            "config.toml labels build pods {line}"
        );
    }
    assert_budget_holds_busy_pods(&objects, &labels);
    object(
        &objects,
        "ServiceAccount",
        &setting(KUBERNETES, "service_account"),
    );
    assert!(config.contains("automount_service_account_token = false"));
    let config_map = object(&objects, "ConfigMap", &setting(CONFIG_MAP, "name"));
    assert_eq!(
        config_map["data"]["job-tracker.sh"],
        json!(read(&format!("{DIR}/job-tracker.sh"))),
        "the ConfigMap holds the file the tests run"
    );
    let sourced = format!("{}/job-tracker.sh", setting(CONFIG_MAP, "mount_path"));
    assert!(
        setting(RUNNER, "pre_build_script").starts_with(&format!(". {sourced};")),
        "pre_build_script sources {sourced}"
    );
}
