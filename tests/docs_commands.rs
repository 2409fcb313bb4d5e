//! The commands the documentation gives work as written. Every command of the programs named in
//! `tests/docs_commands.yaml` is collected from README.md, the Markdown under `manifests/`,
//! `docs/` and `examples/` (each line of a shell code block, each `$ ` line of another block,
//! each inline code span) and from the comments of the files under `manifests/` and
//! `examples/` (a comment line that is a command, an inline code span). Each is either run here,
//! by `sh -c` in the repository root with its paths and flags as written — only the
//! placeholders (`NS`, `POD`, `URL`, ...) are filled in, see [`PLACEHOLDERS`] — against the real
//! API server of crates/testenv or a running tracker, or listed in `tests/docs_commands.yaml`
//! with the reason it cannot run here. A command that is neither fails
//! [`every_documented_command_is_run_here_or_listed_with_why_not`].
//!
//! The runners check what the documentation promises of each command: `kubectl apply -k`
//! installs every object its kustomization renders; `kubectl label` sets or removes the label;
//! `kubectl get -L` shows the count; the documented RoleBinding gives an account the tracker's
//! rights; `kustomize edit set image` moves every tracker to the image; `curl` counts the pod of
//! a sidecar tracker; `doctor` prints the documented findings; `run` counts its command and
//! passes on its exit status; `helm install`, `upgrade` and `uninstall` deploy, change and remove
//! the chart's objects (tests/chart/documented_commands.rs).

#[path = "support/mod.rs"]
mod support;

#[path = "support/crds.rs"]
mod crds;

#[path = "support/kustomize.rs"]
mod kustomize;

// The helm runner, beside the chart's own tests.
#[path = "chart/documented_commands.rs"]
mod helm_commands;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};
use support::Tracker;
use testenv::{Cluster, Credentials};

use kustomize::{documents, ensure_namespace, kubectl_kustomize, repository};

/// The list of commands not run, and the programs whose commands are collected.
const LIST: &str = "tests/docs_commands.yaml";

// ---------------------------------------------------------------------------------------------
// Collecting the documented commands

/// One command as the documentation gives it.
#[derive(Debug, Clone)]
struct Documented {
    /// The command, whitespace collapsed and a trailing `# comment` removed.
    text: String,
    /// Where: the file (relative to the root) and line.
    file: PathBuf,
    line: usize,
    /// For a `$ ` line: the lines that follow it in its block (its documented output).
    output: Vec<String>,
}
impl Documented {
    fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// What `tests/docs_commands.yaml` holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct List {
    programs: Vec<String>,
    not_run: Vec<NotRun>,
}

/// A documented command that no test runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotRun {
    command: String,
    why: String,
}

fn list() -> List {
    let text = std::fs::read_to_string(repository().join(LIST)).expect("the list of commands");
    serde_saphyr::from_str(&text).unwrap_or_else(|error| panic!("{LIST}: {error}"))
}

/// Whether `text` is a command of one of `programs`: it starts with the program's name and
/// goes on (the name alone names the program, it is no command).
fn starts_with_program(text: &str, programs: &[String]) -> bool {
    programs.iter().any(|program| {
        text.strip_prefix(program.as_str())
            .is_some_and(|rest| rest.starts_with(' '))
    })
}

/// Whether a line of shell runs one of `programs` somewhere: at its start, or after `(`, `;`,
/// `|`, `&`, `do`, `then`, `else`, or an opening quote (a command string, as in `trap '...'`).
fn runs_program(line: &str, programs: &[String]) -> bool {
    programs.iter().any(|program| {
        line.match_indices(program.as_str()).any(|(at, _)| {
            let after = &line[at + program.len()..];
            let before = line[..at].trim_end();
            let word_ends = after.is_empty() || after.starts_with(' ');
            let word_starts = line[..at].chars().next_back().is_none_or(|c| {
                !(c.is_alphanumeric() || c == '-' || c == '_' || c == '/' || c == '.')
            });
            let command_position = before.is_empty()
                || before.ends_with(['(', ';', '|', '&', '\'', '"', '`'])
                || ["do", "then", "else"]
                    .iter()
                    .any(|word| before == *word || before.ends_with(&format!(" {word}")));
            word_ends && word_starts && command_position
        })
    })
}

/// Collapses whitespace outside quotes and drops a trailing `# comment`.
fn normalize(text: &str) -> String {
    let mut out = String::new();
    let mut quote = None;
    let mut space = false;
    for c in text.trim().chars() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c.is_whitespace() => space = true,
            None if c == '#' && (space || out.is_empty()) => break,
            None => {
                if space && !out.is_empty() {
                    out.push(' ');
                }
                space = false;
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out.trim().to_owned()
}

/// The inline code spans of `text` (a paragraph, or comment lines joined), with the line (from
/// `first_line`) each starts on; a span may run over lines.
fn code_spans(text: &str, first_line: usize) -> Vec<(usize, String)> {
    let chars: Vec<char> = text.chars().collect();
    let mut spans = Vec::new();
    let mut i = 0;
    let mut line = first_line;
    while i < chars.len() {
        if chars[i] == '\n' {
            line += 1;
            i += 1;
            continue;
        }
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|c| **c == '`').count();
        let start = i + run;
        // The closing run has exactly as many backticks.
        let mut j = start;
        let mut end = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let closing = chars[j..].iter().take_while(|c| **c == '`').count();
                if closing == run {
                    end = Some(j);
                    break;
                }
                j += closing;
            } else {
                j += 1;
            }
        }
        let Some(end) = end else {
            i = start;
            continue;
        };
        let content: String = chars[start..end].iter().collect();
        spans.push((line, content.replace('\n', " ")));
        line += content.matches('\n').count();
        i = end + run;
    }
    spans
}

/// The commands of a Markdown text.
fn markdown_commands(text: &str, programs: &[String]) -> Vec<(usize, String, Vec<String>)> {
    const SHELLS: [&str; 5] = ["sh", "bash", "shell", "console", "zsh"];
    let mut found = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut paragraph: Vec<&str> = Vec::new();
    let mut paragraph_start = 0;
    let mut i = 0;
    let flush = |paragraph: &mut Vec<&str>, start: usize, found: &mut Vec<_>| {
        for (line, span) in code_spans(&paragraph.join("\n"), start) {
            let span = normalize(&span);
            if starts_with_program(&span, programs) {
                found.push((line, span, Vec::new()));
            }
        }
        paragraph.clear();
    };
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            flush(&mut paragraph, paragraph_start, &mut found);
            let fence = &trimmed[..3];
            let language = trimmed[3..].split_whitespace().next().unwrap_or_default();
            let shell = SHELLS.contains(&language);
            let mut block = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with(fence) {
                block.push((i + 1, lines[i]));
                i += 1;
            }
            i += 1;
            let mut index = 0;
            while index < block.len() {
                let (number, raw) = block[index];
                // A line ending in a backslash goes on on the next one.
                let mut logical = raw.trim().to_owned();
                while logical.ends_with('\\') && index + 1 < block.len() {
                    logical.pop();
                    index += 1;
                    logical.push(' ');
                    logical.push_str(block[index].1.trim());
                }
                index += 1;
                let prompt = logical.strip_prefix("$ ");
                let candidate = match (prompt, shell) {
                    (Some(command), _) => command.to_owned(),
                    (None, true) => logical.clone(),
                    (None, false) => continue,
                };
                if candidate.starts_with('#') || !runs_program(&candidate, programs) {
                    continue;
                }
                let output = if prompt.is_some() {
                    block[index..]
                        .iter()
                        .map(|(_, line)| *line)
                        .take_while(|line| !line.starts_with("$ "))
                        .map(str::to_owned)
                        .collect()
                } else {
                    Vec::new()
                };
                found.push((number, normalize(&candidate), output));
            }
            continue;
        }
        if trimmed.is_empty() {
            flush(&mut paragraph, paragraph_start, &mut found);
        } else {
            if paragraph.is_empty() {
                paragraph_start = i + 1;
            }
            paragraph.push(lines[i]);
        }
        i += 1;
    }
    flush(&mut paragraph, paragraph_start, &mut found);
    found
}

/// The commands in the comments of a file whose comments start with `marker` (`#`, `//`).
fn comment_commands(text: &str, marker: &str, programs: &[String]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut block: Vec<String> = Vec::new();
    let mut block_start = 0;
    let flush = |block: &mut Vec<String>, start: usize, found: &mut Vec<(usize, String)>| {
        for (line, span) in code_spans(&block.join("\n"), start) {
            let span = normalize(&span);
            if starts_with_program(&span, programs) {
                found.push((line, span));
            }
        }
        block.clear();
    };
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let comment = trimmed
            .strip_prefix(marker)
            .filter(|_| !trimmed.starts_with("#!"))
            .map(|rest| rest.trim_start_matches(['/', '!']).trim_end());
        let Some(comment) = comment else {
            flush(&mut block, block_start, &mut found);
            continue;
        };
        if block.is_empty() {
            block_start = index + 1;
        }
        // A command line in a comment is indented (`#   kubectl apply -k ...`), as code is in
        // Markdown; a sentence that starts with a program's name is prose.
        let command = comment.strip_prefix("  ").map(str::trim);
        match command.filter(|text| starts_with_program(text, programs)) {
            Some(text) => {
                found.push((index + 1, normalize(text)));
                // Keeps the block's line numbers, and ends any span before the command.
                block.push(String::new());
            }
            None => block.push(comment.trim().to_owned()),
        }
    }
    flush(&mut block, block_start, &mut found);
    found
}

/// Every file under `dir` (relative to the root) whose name ends in one of `extensions`.
fn files_under(dir: &str, extensions: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, extensions: &[&str], found: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(repository().join(dir))
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()));
        for entry in entries {
            let entry = entry.expect("a folder entry");
            let path = dir.join(entry.file_name());
            if entry.file_type().expect("a file type").is_dir() {
                walk(&path, extensions, found);
            } else if path
                .extension()
                .and_then(|ext| ext.to_str())
                .is_some_and(|ext| extensions.contains(&ext))
            {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new(dir), extensions, &mut found);
    found.sort();
    found
}

/// Every documented command, in the order of its files and lines.
fn documented() -> Vec<Documented> {
    let programs = list().programs;
    let mut markdown = vec![PathBuf::from("README.md")];
    for dir in ["manifests", "docs", "examples"] {
        markdown.extend(files_under(dir, &["md"]));
    }
    let mut found = Vec::new();
    let read = |file: &Path| {
        std::fs::read_to_string(repository().join(file))
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", file.display()))
    };
    for file in markdown {
        for (line, text, output) in markdown_commands(&read(&file), &programs) {
            found.push(Documented {
                text,
                file: file.clone(),
                line,
                output,
            });
        }
    }
    for dir in ["manifests", "examples"] {
        for (extensions, marker) in [(&["yaml", "yml", "sh"][..], "#"), (&["rs"][..], "//")] {
            for file in files_under(dir, extensions) {
                for (line, text) in comment_commands(&read(&file), marker, &programs) {
                    found.push(Documented {
                        text,
                        file: file.clone(),
                        line,
                        output: Vec::new(),
                    });
                }
            }
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Which test runs a command

/// The kinds of command the tests here run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runner {
    /// `kubectl apply [-n NS] -k DIR`
    KubectlApply,
    /// `kubectl label namespace|pod NAME KEY=VALUE|KEY- ... [-n NS]`
    KubectlLabel,
    /// `kubectl get pods [-n NS] -L LABEL`
    KubectlGetPods,
    /// `kubectl create rolebinding NAME -n NS --role=ROLE --serviceaccount=NS:ACCOUNT`
    KubectlCreateRoleBinding,
    /// `kustomize edit set image IMAGE=NEW`
    KustomizeSetImage,
    /// `curl` (or a line of shell running it) calling the sidecar's address
    Curl,
    /// `pod-webhook-tracker doctor FLAGS...`, with its documented output
    Doctor,
    /// `pod-webhook-tracker run [FLAGS] -- COMMAND...`
    Run,
    /// `helm install|upgrade|uninstall RELEASE [charts/...] -n NS ...` (tests/chart/documented_commands.rs)
    Helm,
}

/// The words of a command as `sh` splits them (quotes removed; enough for the documentation).
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// `-n X` / `--namespace=X` pairs removed from `args`: the namespace and the rest.
fn take_namespace(args: &[String]) -> (Option<String>, Vec<String>) {
    let mut namespace = None;
    let mut rest = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "-n" || arg == "--namespace" {
            namespace = iter.next().cloned();
        } else if let Some(value) = arg.strip_prefix("--namespace=") {
            namespace = Some(value.to_owned());
        } else {
            rest.push(arg.clone());
        }
    }
    (namespace, rest)
}

/// The runner for a documented command, if one runs it (its shape must be the one the runner
/// knows, flag for flag).
fn runner(text: &str) -> Option<Runner> {
    let words = shell_words(text);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    if text.contains("curl ") && (text.contains("http://127.0.0.1:8080/") || words.contains(&"URL"))
    {
        return Some(Runner::Curl);
    }
    let (namespace, rest) = take_namespace(
        &words
            .iter()
            .skip(1)
            .map(|w| (*w).to_owned())
            .collect::<Vec<_>>(),
    );
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    if words.len() > 2 && words[..2] == ["pod-webhook-tracker", "doctor"] {
        return Some(Runner::Doctor);
    }
    match (words.first().copied(), rest.as_slice()) {
        (Some("helm"), ["install" | "upgrade", release, chart, ..])
            if namespace.is_some() && !release.starts_with('-') && chart.starts_with("charts/") =>
        {
            Some(Runner::Helm)
        }
        (Some("helm"), ["uninstall", release])
            if namespace.is_some() && !release.starts_with('-') =>
        {
            Some(Runner::Helm)
        }
        (Some("kubectl"), ["apply", "-k", dir]) if !dir.starts_with('-') => {
            Some(Runner::KubectlApply)
        }
        (Some("kubectl"), ["label", "namespace" | "pod", name, changes @ ..])
            if !name.starts_with('-')
                && !changes.is_empty()
                && changes
                    .iter()
                    .all(|c| c.contains('=') || (c.ends_with('-') && !c.starts_with('-'))) =>
        {
            Some(Runner::KubectlLabel)
        }
        (Some("kubectl"), ["get", "pods", "-L", label]) if !label.starts_with('-') => {
            Some(Runner::KubectlGetPods)
        }
        (Some("kubectl"), ["create", "rolebinding", name, flags @ ..])
            if namespace.is_some()
                && !name.starts_with('-')
                && flags.iter().any(|f| f.starts_with("--role="))
                && flags
                    .iter()
                    .all(|f| f.starts_with("--role=") || f.starts_with("--serviceaccount=")) =>
        {
            Some(Runner::KubectlCreateRoleBinding)
        }
        (Some("kustomize"), ["edit", "set", "image", image]) if image.contains('=') => {
            Some(Runner::KustomizeSetImage)
        }
        (Some("pod-webhook-tracker"), ["run", args @ ..])
            if args
                .iter()
                .position(|a| *a == "--")
                .is_some_and(|at| at + 1 < args.len()) =>
        {
            Some(Runner::Run)
        }
        _ => None,
    }
}

/// The distinct documented commands `runner` runs, each with where it is documented first.
fn commands_for(runner_kind: Runner) -> Vec<Documented> {
    let mut seen = BTreeSet::new();
    let found: Vec<Documented> = documented()
        .into_iter()
        .filter(|command| runner(&command.text) == Some(runner_kind))
        .filter(|command| seen.insert(command.text.clone()))
        .collect();
    assert!(
        !found.is_empty(),
        "the documentation gives no command of the kind {runner_kind:?}: remove its runner"
    );
    for command in &found {
        // Shown with --nocapture, and with a failure.
        eprintln!("{runner_kind:?}: {} ({})", command.text, command.at());
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Running a command as written

/// The placeholders of the documentation, and what the tests put in their place (each a whole
/// word: `NS` in `NS:batch-workers` too, not the `POD` of `POD_NAME`).
const PLACEHOLDERS: [(&str, &str); 6] = [
    ("NS", "a namespace of the test's own"),
    ("NAMESPACE", "a namespace of the test's own"),
    ("POD", "a busy pod, with the label active-jobs"),
    (
        "URL",
        "the sidecar's increment URL, http://127.0.0.1:8080/increment",
    ),
    ("REGISTRY/NAME:TAG", "an image of another registry"),
    ("COMMAND [ARG...]", "a command that exits with status 3"),
];

/// `text` with each placeholder (a whole word) replaced as `values` says.
fn fill(text: &str, values: &BTreeMap<&str, String>) -> String {
    let mut out = text.to_owned();
    for (placeholder, _) in PLACEHOLDERS {
        let Some(value) = values.get(placeholder) else {
            continue;
        };
        let mut filled = String::new();
        let mut rest = out.as_str();
        while let Some(at) = rest.find(placeholder) {
            let before = rest[..at].chars().next_back();
            let after = rest[at + placeholder.len()..].chars().next();
            let part_of_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            filled.push_str(&rest[..at]);
            if part_of_word(before) || part_of_word(after) {
                filled.push_str(placeholder);
            } else {
                filled.push_str(value);
            }
            rest = &rest[at + placeholder.len()..];
        }
        filled.push_str(rest);
        out = filled;
    }
    out
}

/// A place to run documented commands: the shared cluster, and a kubeconfig (the
/// administrator's) whose current namespace is a fresh one, as a user's current namespace.
struct Shell {
    cluster: &'static Cluster,
    namespace: String,
    kubeconfig: PathBuf,
    env: Vec<(String, String)>,
    dir: PathBuf,
}
impl Shell {
    fn new(prefix: &str) -> Shell {
        let cluster = Cluster::shared();
        let namespace = cluster.namespace(prefix);
        let admin = cluster
            .authority()
            .client("testenv-admin", Some("system:masters"));
        let kubeconfig = cluster.kubeconfig(
            &format!("docs-{namespace}"),
            &Credentials::Certificate(admin),
            &namespace,
        );
        Shell {
            cluster,
            namespace,
            kubeconfig,
            env: Vec::new(),
            dir: repository().to_path_buf(),
        }
    }

    /// The programs as a user has them: kubectl and kustomize (the built tools) and this
    /// package's binary first on the PATH.
    fn path(&self, more: &[&Path]) -> String {
        let mut dirs: Vec<PathBuf> = more.iter().map(|dir| dir.to_path_buf()).collect();
        for program in [
            testenv::tool("kubectl"),
            testenv::tool("kustomize"),
            PathBuf::from(env!("CARGO_BIN_EXE_pod-webhook-tracker")),
        ] {
            dirs.push(program.parent().expect("a folder").to_path_buf());
        }
        let mut path = std::env::join_paths(dirs)
            .expect("a PATH")
            .into_string()
            .expect("UTF-8");
        if let Ok(inherited) = std::env::var("PATH") {
            path.push(':');
            path.push_str(&inherited);
        }
        path
    }

    /// Runs `script` (a documented command, filled in) with `sh -c`.
    fn run(&self, script: &str, more_path: &[&Path]) -> Output {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .current_dir(&self.dir)
            .env("PATH", self.path(more_path))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.cluster.scratch("docs-home"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE");
        for proxy in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "no_proxy",
            "NO_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ] {
            command.env_remove(proxy);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command.output().expect("sh runs")
    }
}

/// Panics with everything a failed command said.
fn assert_succeeded(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The objects `kubectl apply -k dir` applies, and the CRDs of their custom kinds installed.
fn rendered(cluster: &Cluster, dir: &str) -> Vec<Value> {
    let text = kubectl_kustomize(Path::new(dir)).unwrap_or_else(|error| panic!("{error}"));
    let objects = documents(&text, dir);
    crds::install_for(cluster, &objects);
    objects
}

/// A pod that never runs (no kubelet), as the administrator.
fn create_pod(cluster: &Cluster, namespace: &str, name: &str, labels: &[(&str, &str)]) {
    create_pod_as(cluster, namespace, name, labels, "default");
}

/// A pod that never runs, of the service account `account`.
fn create_pod_as(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    account: &str,
) {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    cluster
        .admin()
        .post(
            &format!("/api/v1/namespaces/{namespace}/pods"),
            &json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": labels},
                "spec": {
                    "serviceAccountName": account,
                    "automountServiceAccountToken": false,
                    "containers": [{"name": "job", "image": "busybox:1.37.0"}],
                },
            }),
        )
        .expect(201, "create a pod");
}

fn labels_of(cluster: &Cluster, path: &str) -> BTreeMap<String, String> {
    let object = cluster.admin().get(path).expect(200, "read the object");
    serde_json::from_value(object["metadata"]["labels"].clone()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The list

#[test]
fn every_documented_command_is_run_here_or_listed_with_why_not() {
    let list = list();
    let listed: BTreeSet<&str> = list.not_run.iter().map(|n| n.command.as_str()).collect();
    let commands = documented();
    assert!(
        commands.len() >= 30,
        "only {} commands found",
        commands.len()
    );
    let mut problems = Vec::new();
    for command in &commands {
        match (runner(&command.text), listed.contains(command.text.as_str())) {
            (Some(_), false) | (None, true) => {}
            (Some(kind), true) => problems.push(format!(
                "{}: `{}` is run here ({kind:?}): remove it from {LIST}",
                command.at(),
                command.text
            )),
            (None, false) => problems.push(format!(
                "{}: `{}` is neither run by tests/docs_commands.rs nor listed in {LIST} with why it cannot run",
                command.at(),
                command.text
            )),
        }
    }
    for program in &list.programs {
        assert!(
            commands
                .iter()
                .any(|c| c.text.starts_with(&format!("{program} "))
                    || runs_program(&c.text, std::slice::from_ref(program))),
            "{LIST} names {program}, of which the documentation gives no command"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_command_listed_as_not_run_is_documented_and_says_why() {
    let list = list();
    let documented: BTreeSet<String> = documented().into_iter().map(|c| c.text).collect();
    let mut seen = BTreeSet::new();
    for entry in &list.not_run {
        assert!(
            documented.contains(&entry.command),
            "{LIST}: `{}` is not in the documentation (any more): remove it",
            entry.command
        );
        assert!(
            entry.why.split_whitespace().count() >= 4,
            "{LIST}: `{}` needs the reason it cannot run here",
            entry.command
        );
        assert!(
            seen.insert(&entry.command),
            "{LIST}: `{}` twice",
            entry.command
        );
    }
}

#[test]
fn commands_are_found_in_shell_blocks_prompts_inline_code_and_comments() {
    let programs = vec!["kubectl".to_owned(), "curl".to_owned(), "tool".to_owned()];
    let markdown = "Run `kubectl apply\n-k dir` (or `kubectl`).\n\n```sh\n\
        kubectl label pod \\\n  POD a-   # a comment\n( while sleep 1; do curl -X POST x; done ) &\n\
        trap 'curl y' EXIT\necho kubectl\n```\n\n```\ntool serve [flags]   synopsis\n$ tool doctor -n jobs\n\
        ok  budget\n```\n";
    let found: Vec<(usize, String, Vec<String>)> = markdown_commands(markdown, &programs);
    let texts: Vec<&str> = found.iter().map(|(_, text, _)| text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "kubectl apply -k dir",
            "kubectl label pod POD a-",
            "( while sleep 1; do curl -X POST x; done ) &",
            "trap 'curl y' EXIT",
            "tool doctor -n jobs",
        ]
    );
    assert_eq!(found[0].0, 1);
    assert_eq!(found[1].0, 5);
    assert_eq!(found[4].2, ["ok  budget"]);
    let comments = "# Apply it:\n#   kubectl apply -k x\n# or `curl -fsS URL`, by\n# `tool\n# run -- x`.\n\
        # kubectl sets it (prose)\nkey: kubectl apply\n";
    assert_eq!(
        comment_commands(comments, "#", &programs),
        [
            (2, "kubectl apply -k x".to_owned()),
            (3, "curl -fsS URL".to_owned()),
            (4, "tool run -- x".to_owned())
        ]
    );
    assert_eq!(
        runner("kubectl apply -n NS -k manifests/sidecar"),
        Some(Runner::KubectlApply)
    );
    assert_eq!(runner("kubectl apply -k"), None);
    assert_eq!(runner("kubectl get pods -L active-jobs -w"), None);
    let values = BTreeMap::from([("NS", "ns-1".to_owned()), ("POD", "p".to_owned())]);
    assert_eq!(
        fill(
            "kubectl create rolebinding b -n NS --serviceaccount=NS:a POD_NAME=1 POD",
            &values
        ),
        "kubectl create rolebinding b -n ns-1 --serviceaccount=ns-1:a POD_NAME=1 p"
    );
}

// ---------------------------------------------------------------------------------------------
// kubectl and kustomize

/// Held by the tests whose commands install objects of fixed names (the same namespaces,
/// webhook configurations and cluster roles come from several kustomizations).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn the_documented_kubectl_apply_commands_install_what_their_kustomizations_render() {
    let _turn = one_at_a_time();
    for command in commands_for(Runner::KubectlApply) {
        let shell = Shell::new("apply");
        let cluster = shell.cluster;
        let (namespace, rest) = take_namespace(&shell_words(&command.text)[1..]);
        let dir = rest.last().expect("the folder").clone();
        let objects = rendered(cluster, &dir);
        // A namespace the command names, or its objects name and do not create, is the user's
        // to make first (`-n media`, the authenticated variant's `workers`).
        let created: BTreeSet<&str> = objects
            .iter()
            .filter(|o| o["kind"] == "Namespace")
            .filter_map(|o| o["metadata"]["name"].as_str())
            .collect();
        let mut values = BTreeMap::new();
        values.insert("NS", shell.namespace.clone());
        values.insert("NAMESPACE", shell.namespace.clone());
        let target = namespace.map(|n| fill(&n, &values));
        let expected: BTreeSet<String> = objects
            .iter()
            .filter_map(|o| o["metadata"]["namespace"].as_str().map(str::to_owned))
            .chain(target.clone())
            .filter(|n| !created.contains(n.as_str()))
            .collect();
        for namespace in &expected {
            ensure_namespace(cluster, namespace, &[]);
        }
        let script = fill(&command.text, &values);
        let output = shell.run(&script, &[]);
        let what = format!("{} ({}, run as `{script}`)", command.text, command.at());
        assert_succeeded(&what, &output);
        let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
        assert_eq!(
            lines.len(),
            objects.len(),
            "{what}: one line per object: {lines:#?}"
        );
        assert!(
            lines.iter().all(|line| line.ends_with(" created")
                || line.ends_with(" configured")
                || line.ends_with(" unchanged")),
            "{what}: {lines:#?}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.trim().is_empty(),
            "{what}: a user sees warnings: {stderr}"
        );
        // Every object is there now, where the command put it.
        let mut get = format!("kubectl get -k {dir} -o name");
        if let Some(target) = &target {
            get = format!("kubectl get -n {target} -k {dir} -o name");
        }
        let stored = shell.run(&get, &[]);
        assert_succeeded(&get, &stored);
        assert_eq!(
            stdout(&stored).lines().count(),
            objects.len(),
            "{what}: {}",
            stdout(&stored)
        );
    }
}

#[test]
fn the_documented_kubectl_label_commands_set_and_remove_labels() {
    for command in commands_for(Runner::KubectlLabel) {
        let shell = Shell::new("label");
        let cluster = shell.cluster;
        let words = shell_words(&command.text);
        let (namespace, rest) = take_namespace(&words[1..]);
        let (kind, name, changes) = (&rest[1], &rest[2], &rest[3..]);
        let mut values = BTreeMap::new();
        values.insert("NS", shell.namespace.clone());
        values.insert("NAMESPACE", shell.namespace.clone());
        values.insert("POD", "worker-7".to_owned());
        let name = fill(name, &values);
        let in_namespace = namespace.map_or(shell.namespace.clone(), |n| fill(&n, &values));
        // The object as the documentation finds it: a namespace; a busy pod carrying every
        // label the command removes.
        let removed: Vec<&str> = changes.iter().filter_map(|c| c.strip_suffix('-')).collect();
        let path = if kind == "namespace" {
            ensure_namespace(cluster, &name, &[]);
            format!("/api/v1/namespaces/{name}")
        } else {
            let labels: Vec<(&str, &str)> = removed.iter().map(|key| (*key, "2")).collect();
            create_pod(cluster, &in_namespace, &name, &labels);
            format!("/api/v1/namespaces/{in_namespace}/pods/{name}")
        };
        let script = fill(&command.text, &values);
        let output = shell.run(&script, &[]);
        let what = format!("{} ({})", command.text, command.at());
        assert_succeeded(&what, &output);
        let labels = labels_of(cluster, &path);
        for change in changes {
            match change.split_once('=') {
                Some((key, value)) => {
                    assert_eq!(
                        labels.get(key).map(String::as_str),
                        Some(value),
                        "{what}: {labels:?}"
                    )
                }
                None => {
                    let key = change.trim_end_matches('-');
                    assert!(!labels.contains_key(key), "{what}: {labels:?}");
                }
            }
        }
    }
}

#[test]
fn the_documented_kubectl_get_commands_show_each_pods_count() {
    for command in commands_for(Runner::KubectlGetPods) {
        let shell = Shell::new("get");
        let cluster = shell.cluster;
        let words = shell_words(&command.text);
        let (namespace, rest) = take_namespace(&words[1..]);
        let label = rest.last().expect("a label").clone();
        let namespace = namespace.unwrap_or(shell.namespace.clone());
        ensure_namespace(cluster, &namespace, &[]);
        let (busy, idle) = (
            format!("busy-{}", shell.namespace),
            format!("idle-{}", shell.namespace),
        );
        create_pod(cluster, &namespace, &busy, &[(&label, "3")]);
        create_pod(cluster, &namespace, &idle, &[]);
        let output = shell.run(&command.text, &[]);
        let what = format!("{} ({})", command.text, command.at());
        assert_succeeded(&what, &output);
        let text = stdout(&output);
        let header = text.lines().next().unwrap_or_default();
        assert!(
            header.trim_end().ends_with(&label.to_uppercase()),
            "{what}: {text}"
        );
        let row = |name: &str| {
            text.lines()
                .find(|line| line.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{what}: no row for {name}: {text}"))
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            row(&busy).last().map(String::as_str),
            Some("3"),
            "{what}: {text}"
        );
        let columns = header.split_whitespace().count();
        assert_eq!(
            row(&idle).len(),
            columns - 1,
            "{what}: an idle pod shows no count: {text}"
        );
    }
}

#[test]
fn the_documented_rolebinding_gives_an_account_exactly_the_trackers_rights() {
    for command in commands_for(Runner::KubectlCreateRoleBinding) {
        let shell = Shell::new("binding");
        let cluster = shell.cluster;
        let mut values = BTreeMap::new();
        values.insert("NS", shell.namespace.clone());
        values.insert("NAMESPACE", shell.namespace.clone());
        let script = fill(&command.text, &values);
        let words = shell_words(&script);
        let (namespace, rest) = take_namespace(&words[1..]);
        let namespace = namespace.expect("-n");
        let role = rest
            .iter()
            .find_map(|w| w.strip_prefix("--role="))
            .expect("--role")
            .to_owned();
        let accounts: Vec<(String, String)> = rest
            .iter()
            .filter_map(|w| w.strip_prefix("--serviceaccount="))
            .map(|a| {
                let (ns, name) = a.split_once(':').expect("NS:NAME");
                (ns.to_owned(), name.to_owned())
            })
            .collect();
        // "with manifests/sidecar/rbac applied in NS", and the account the pods run as.
        let rbac = shell.run(
            &format!("kubectl apply -n {namespace} -k manifests/sidecar/rbac"),
            &[],
        );
        assert_succeeded("kubectl apply -k manifests/sidecar/rbac", &rbac);
        for (ns, name) in &accounts {
            cluster
                .admin()
                .post(
                    &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
                    &json!({"metadata": {"name": name}}),
                )
                .expect(201, "create the pods' account");
        }
        let output = shell.run(&script, &[]);
        let what = format!("{} ({})", command.text, command.at());
        assert_succeeded(&what, &output);
        let granted = cluster
            .admin()
            .get(&format!(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{role}"
            ))
            .expect(200, "the role");
        let rules = granted["rules"].as_array().expect("rules").clone();
        assert!(!rules.is_empty());
        for (ns, name) in &accounts {
            let user = format!("system:serviceaccount:{ns}:{name}");
            let allowed = |verb: &str, resource: &str| {
                let review = json!({
                    "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                    "spec": {
                        "user": user,
                        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                        "resourceAttributes": {"namespace": namespace, "verb": verb, "resource": resource},
                    },
                });
                let answer = cluster
                    .admin()
                    .post(
                        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                        &review,
                    )
                    .expect(201, "a SubjectAccessReview");
                answer["status"]["allowed"] == true
            };
            // The tracker's rights arrive once RBAC has seen the binding.
            let started = Instant::now();
            while !(allowed("get", "pods") && allowed("patch", "pods")) {
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "{what}: {user} may not get and patch pods"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            for (verb, resource) in [
                ("list", "pods"),
                ("delete", "pods"),
                ("update", "pods"),
                ("get", "secrets"),
            ] {
                assert!(
                    !allowed(verb, resource),
                    "{what}: {user} may also {verb} {resource}"
                );
            }
        }
    }
}

#[test]
fn the_documented_kustomize_edit_moves_every_tracker_to_the_image() {
    for command in commands_for(Runner::KustomizeSetImage) {
        let mut shell = Shell::new("kustomize");
        let cluster = shell.cluster;
        // "Override it in your own kustomization": one that builds on manifests/sidecar.
        let own = cluster.scratch(&format!("own-kustomization-{}", shell.namespace));
        // kustomize takes no absolute path: the way from there to here.
        let up = "../".repeat(own.components().count() - 1);
        let base = format!("{up}{}", repository().join("manifests/sidecar").display());
        std::fs::write(
            own.join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\n",
                base.trim_start_matches('/')
            ),
        )
        .expect("a kustomization");
        shell.dir = own.clone();
        let image = "registry.example.com/team/pod-webhook-tracker:v9.9.9";
        let values = BTreeMap::from([("REGISTRY/NAME:TAG", image.to_owned())]);
        let output = shell.run(&fill(&command.text, &values), &[]);
        let what = format!("{} ({})", command.text, command.at());
        assert_succeeded(&what, &output);
        let built = shell.run("kustomize build .", &[]);
        assert_succeeded("kustomize build", &built);
        let old = shell_words(&command.text)[4]
            .split_once('=')
            .expect("IMAGE=NEW")
            .0
            .to_owned();
        let mut moved = 0;
        let text = stdout(&built);
        for object in documents(&text, "kustomize build") {
            let text = object.to_string();
            assert!(
                !text.contains(&format!("\"{old}:")),
                "{what}: {old} is still used: {text}"
            );
            moved += text.matches(&format!("\"{image}\"")).count();
        }
        assert!(moved >= 4, "{what}: only {moved} containers use {image}");
    }
}

// ---------------------------------------------------------------------------------------------
// A sidecar tracker, and the commands that call it

/// A sidecar tracker as manifests/sidecar runs it, for one pod of a fresh namespace: the
/// account from manifests/sidecar/rbac, a token bound to the pod.
struct Sidecar {
    shell: Shell,
    pod: String,
    tracker: Tracker,
}
impl Sidecar {
    fn start(prefix: &str) -> Sidecar {
        let shell = Shell::new(prefix);
        let cluster = shell.cluster;
        let namespace = shell.namespace.clone();
        let rbac = shell.run(
            &format!("kubectl apply -n {namespace} -k manifests/sidecar/rbac"),
            &[],
        );
        assert_succeeded("kubectl apply -k manifests/sidecar/rbac", &rbac);
        let pod = "worker-7".to_owned();
        create_pod_as(
            cluster,
            &namespace,
            &pod,
            &[("app.kubernetes.io/name", "worker")],
            "job-tracker",
        );
        let token = cluster.token(&namespace, "job-tracker", &[], Some(&pod));
        let kubeconfig = cluster.kubeconfig(
            &format!("tracker-{namespace}"),
            &Credentials::Token(token),
            &namespace,
        );
        let tracker = Tracker::builder()
            .args([format!("--kubeconfig={}", kubeconfig.display())])
            .env("POD_NAME", &pod)
            .env("POD_NAMESPACE", &namespace)
            .start();
        tracker.wait_ready();
        Sidecar {
            shell,
            pod,
            tracker,
        }
    }

    fn count_label(&self) -> Option<String> {
        let path = format!(
            "/api/v1/namespaces/{}/pods/{}",
            self.shell.namespace, self.pod
        );
        labels_of(self.shell.cluster, &path).remove("active-jobs")
    }
}

#[test]
fn the_documented_curl_calls_count_the_pod_of_a_sidecar_tracker() {
    // The calls of one file run in order against one sidecar, as one job's would.
    let mut by_file: BTreeMap<PathBuf, Vec<Documented>> = BTreeMap::new();
    for command in commands_for(Runner::Curl) {
        by_file
            .entry(command.file.clone())
            .or_default()
            .push(command);
    }
    for (file, commands) in by_file {
        let mut sidecar = Sidecar::start("curl");
        // The sidecar's address, 127.0.0.1:8080, exists inside its pod only; curl reaches the
        // tracker here through http_proxy, with the URL and flags as written.
        sidecar.shell.env = vec![
            (
                "http_proxy".to_owned(),
                format!("http://{}", sidecar.tracker.address),
            ),
            ("JOB_ID".to_owned(), "docs-job-1".to_owned()),
        ];
        // `while sleep 1800` loops: the first sleep returns at once, the next one fails.
        let fast = sidecar
            .shell
            .cluster
            .scratch(&format!("fast-sleep-{}", sidecar.shell.namespace));
        let sleep = fast.join("sleep");
        std::fs::write(
            &sleep,
            "#!/bin/sh\n[ -e \"$0.slept\" ] && exit 1\n: > \"$0.slept\"\n",
        )
        .expect("a sleep");
        std::fs::set_permissions(&sleep, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("executable");
        let values = BTreeMap::from([("URL", "http://127.0.0.1:8080/increment".to_owned())]);
        let mut count: i64 = 0;
        for command in commands {
            let script = fill(&command.text, &values);
            let what = format!("{} ({}, in {})", command.text, command.at(), file.display());
            let path = script
                .split("http://127.0.0.1:8080/")
                .nth(1)
                .and_then(|rest| rest.split(['?', '"', '\'', ' ']).next())
                .expect("a path")
                .to_owned();
            let before = count;
            count = match path.as_str() {
                "increment" => count + 1,
                "decrement" => (count - 1).max(0),
                "renew" => count,
                other => panic!("{what}: a call to /{other}: add what it does here"),
            };
            // Background loops are waited for; an EXIT trap runs as the shell ends.
            let output = sidecar.shell.run(&format!("{script}\nwait"), &[&fast]);
            assert_succeeded(&what, &output);
            let answer = stdout(&output);
            assert_eq!(
                answer.trim(),
                count.to_string(),
                "{what}: the count (was {before})"
            );
            assert!(
                sidecar
                    .tracker
                    .wait_for_line(&format!("/{path}"), Duration::from_secs(5))
                    .is_some(),
                "{what}: the tracker saw no call: {}",
                sidecar.tracker.log()
            );
            let label = sidecar.count_label();
            let expected = (count > 0).then(|| count.to_string());
            assert_eq!(label, expected, "{what}: the pod's label");
        }
    }
}

#[test]
fn the_documented_run_counts_its_command_and_passes_on_its_exit_status() {
    for command in commands_for(Runner::Run) {
        let mut sidecar = Sidecar::start("run");
        // What the injector gives every container.
        sidecar.shell.env = vec![(
            "TRACKER_URL".to_owned(),
            format!("http://{}", sidecar.tracker.address),
        )];
        let values = BTreeMap::from([("COMMAND [ARG...]", "sh -c 'exit 3'".to_owned())]);
        let script = fill(&command.text, &values);
        let output = sidecar.shell.run(&script, &[]);
        let what = format!("{} ({}, run as `{script}`)", command.text, command.at());
        assert_eq!(output.status.code(), Some(3), "{what}: {output:?}");
        let said = String::from_utf8_lossy(&output.stderr);
        // The messages README.md shows for `run`.
        for line in [
            "pod-webhook-tracker run: increment: ok (active jobs in this pod: 1)",
            "pod-webhook-tracker run: decrement: ok (active jobs in this pod: 0)",
        ] {
            assert!(
                said.lines().any(|l| l == line),
                "{what}: no `{line}` in:\n{said}"
            );
        }
        assert_eq!(
            sidecar.count_label(),
            None,
            "{what}: counted down at the end"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// doctor

#[test]
fn the_documented_doctor_run_reports_what_the_documentation_shows() {
    for command in commands_for(Runner::Doctor) {
        let shell = Shell::new("doctor");
        let cluster = shell.cluster;
        let what = format!("{} ({})", command.text, command.at());
        assert!(
            !command.output.is_empty(),
            "{what}: the documentation shows no output to check"
        );
        let (namespace, _) = take_namespace(&shell_words(&command.text)[1..]);
        let namespace = namespace.unwrap_or(shell.namespace.clone());
        // The namespace the documented report describes: a worker pod held by two budgets, one
        // of them on the label with a percentage and AlwaysAllow.
        ensure_namespace(cluster, &namespace, &[]);
        create_pod(cluster, &namespace, "worker-7", &[("app", "worker")]);
        let budgets = format!("/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets");
        for budget in [
            json!({"metadata": {"name": "busy-workers"}, "spec": {
                "minAvailable": "100%", "unhealthyPodEvictionPolicy": "AlwaysAllow",
                "selector": {"matchLabels": {"app": "worker"}, "matchExpressions": [{"key": "active-jobs", "operator": "Exists"}]}}}),
            json!({"metadata": {"name": "workers"}, "spec": {
                "minAvailable": 1, "unhealthyPodEvictionPolicy": "IfHealthyBudget",
                "selector": {"matchLabels": {"app": "worker"}}}}),
        ] {
            cluster
                .admin()
                .post(&budgets, &budget)
                .expect(201, "create a budget");
        }
        let output = shell.run(&command.text, &[]);
        let said = stdout(&output);
        let documented: Vec<&str> = command.output.iter().map(String::as_str).collect();
        // Each finding: its status and check, in the documented order; the first line and the
        // summary as written.
        let findings = |lines: &[&str]| -> Vec<(String, String)> {
            lines
                .iter()
                .filter_map(|line| {
                    let mut words = line.split_whitespace();
                    let status = words.next()?;
                    ["ok", "warning", "problem"].contains(&status).then(|| {
                        (
                            status.to_owned(),
                            words.next().unwrap_or_default().to_owned(),
                        )
                    })
                })
                .collect()
        };
        let actual: Vec<&str> = said.lines().collect();
        assert_eq!(findings(&actual), findings(&documented), "{what}:\n{said}");
        assert_eq!(actual.first(), documented.first(), "{what}:\n{said}");
        assert_eq!(actual.last(), documented.last(), "{what}:\n{said}");
        let problems = findings(&documented)
            .iter()
            .any(|(status, _)| status == "problem");
        assert_eq!(
            output.status.code(),
            Some(i32::from(problems)),
            "{what}: {output:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// helm

#[test]
fn the_documented_helm_commands_install_upgrade_and_uninstall_the_chart() {
    helm_commands::run_the_documented_helm_commands();
}
