//! Part of tests/docs_commands.rs (a module of that test binary, not of tests/chart): the
//! documented `helm` commands (README's "Install with Helm"), run as written by `sh` in the
//! repository root, in documentation order, against a control plane of their own — a fresh
//! cluster, as the README's user starts from (the shared one holds what the `kubectl apply -k`
//! commands left, which a helm release may not take over).
//!
//! - `helm install`: the release is deployed and prints its notes, and every object `helm
//!   template` renders with the same flags is stored. The documented installs are alternatives
//!   (self-signed, cert-manager): one installed before is uninstalled first; the CRDs of what
//!   it installs (cert-manager's) are installed first, as its user has them.
//! - `helm upgrade`: every `--set` value is in the release's values, every object of its new
//!   manifest is stored.
//! - `helm uninstall`: every object the release had is gone.

use std::process::{Command, Output};

use serde_json::{Value, json};
use testenv::{Cluster, Options};

use crate::kustomize::{documents, repository, run_with_input};
use crate::{Runner, assert_succeeded, commands_for, shell_words, stdout, take_namespace};

/// Where the documented commands run: the fresh cluster, helm and kubectl on the PATH, a home
/// of their own.
struct HelmShell {
    cluster: Cluster,
}

impl HelmShell {
    fn run(&self, script: &str) -> Output {
        let home = self.cluster.scratch("helm-home");
        let mut path = String::new();
        for tool in ["helm", "kubectl"] {
            let binary = testenv::tool(tool);
            path.push_str(&binary.parent().expect("a folder").display().to_string());
            path.push(':');
        }
        path.push_str(&std::env::var("PATH").unwrap_or_default());
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(repository())
            .env("PATH", path)
            .env("KUBECONFIG", self.cluster.admin_kubeconfig())
            .env("HOME", &home)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("HELM_NAMESPACE")
            .output()
            .expect("sh runs")
    }

    fn installed(&self, release: &str, namespace: &str) -> bool {
        self.run(&format!("helm status {release} -n {namespace}"))
            .status
            .success()
    }

    /// The release's manifest (`helm get manifest`).
    fn manifest(&self, release: &str, namespace: &str) -> String {
        let output = self.run(&format!("helm get manifest {release} -n {namespace}"));
        assert_succeeded("helm get manifest", &output);
        stdout(&output)
    }

    /// How many objects of `manifest` the server has.
    fn stored(&self, manifest: &str) -> usize {
        let mut get = self.cluster.kubectl();
        get.args(["get", "--ignore-not-found", "-o", "name", "-f", "-"]);
        let output = run_with_input(get, manifest);
        assert_succeeded("kubectl get -f -", &output);
        stdout(&output)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    }
}

/// `--set KEY=VALUE` as helm reads the documented forms: `{a,b}` a list, `true`/`false` a
/// boolean, anything else a string.
fn set_value(assignment: &str) -> (Vec<String>, Value) {
    let (key, value) = assignment.split_once('=').expect("KEY=VALUE");
    let value = match value {
        "true" => json!(true),
        "false" => json!(false),
        list if list.starts_with('{') && list.ends_with('}') => {
            json!(list[1..list.len() - 1].split(',').collect::<Vec<_>>())
        }
        text => json!(text),
    };
    (key.split('.').map(str::to_owned).collect(), value)
}

pub(crate) fn run_the_documented_helm_commands() {
    let commands = commands_for(Runner::Helm);
    let shell = HelmShell {
        cluster: Cluster::start(Options::default()),
    };
    for command in commands {
        let what = format!("{} ({})", command.text, command.at());
        let words = shell_words(&command.text);
        let (namespace, rest) = take_namespace(&words[1..]);
        let namespace = namespace.unwrap_or_else(|| panic!("{what}: names no namespace"));
        let (verb, release) = (rest[0].as_str(), rest[1].as_str());
        if verb != "install" && !shell.installed(release, &namespace) {
            // Upgrading or uninstalling a release: the documented install first.
            let output = shell.run(&format!(
                "helm install {release} charts/pod-webhook-tracker -n {namespace} --create-namespace"
            ));
            assert_succeeded(&format!("{what}: the install before it"), &output);
        }
        match verb {
            "install" => {
                if shell.installed(release, &namespace) {
                    let output = shell.run(&format!("helm uninstall {release} -n {namespace}"));
                    assert_succeeded(&format!("{what}: the other install uninstalled"), &output);
                }
                let template = command
                    .text
                    .replacen("helm install", "helm template", 1)
                    .replace(" --create-namespace", "");
                let rendered = shell.run(&template);
                assert_succeeded(&template, &rendered);
                let objects = documents(&stdout(&rendered), &template);
                crate::crds::install_for(&shell.cluster, &objects);
                let output = shell.run(&command.text);
                assert_succeeded(&what, &output);
                let said = stdout(&output);
                assert!(
                    said.contains("STATUS: deployed") && said.contains("NOTES:"),
                    "{what}: {said}"
                );
                let manifest = shell.manifest(release, &namespace);
                assert_eq!(
                    documents(&manifest, "helm get manifest"),
                    objects,
                    "{what}: installs what helm template renders"
                );
                assert_eq!(
                    shell.stored(&manifest),
                    objects.len(),
                    "{what}: every object stored"
                );
            }
            "upgrade" => {
                let output = shell.run(&command.text);
                assert_succeeded(&what, &output);
                assert!(
                    stdout(&output).contains("has been upgraded"),
                    "{what}: {output:?}"
                );
                let values =
                    shell.run(&format!("helm get values {release} -n {namespace} -o json"));
                assert_succeeded("helm get values", &values);
                let values: Value = serde_json::from_str(&stdout(&values)).expect("JSON");
                let assignments = words
                    .windows(2)
                    .filter(|pair| pair[0] == "--set")
                    .map(|pair| pair[1].clone());
                let mut checked = 0;
                for assignment in assignments {
                    let (path, value) = set_value(&assignment);
                    let pointer = format!("/{}", path.join("/"));
                    assert_eq!(
                        values.pointer(&pointer),
                        Some(&value),
                        "{what}: {assignment} in {values}"
                    );
                    checked += 1;
                }
                assert!(checked > 0, "{what}: sets nothing");
                let manifest = shell.manifest(release, &namespace);
                let count = documents(&manifest, "helm get manifest").len();
                assert_eq!(
                    shell.stored(&manifest),
                    count,
                    "{what}: every object stored"
                );
            }
            "uninstall" => {
                let manifest = shell.manifest(release, &namespace);
                assert!(shell.stored(&manifest) > 0);
                let output = shell.run(&command.text);
                assert_succeeded(&what, &output);
                assert!(
                    stdout(&output).contains("uninstalled"),
                    "{what}: {output:?}"
                );
                let started = std::time::Instant::now();
                while shell.stored(&manifest) > 0 {
                    assert!(
                        started.elapsed() < std::time::Duration::from_secs(30),
                        "{what}: objects left"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                assert!(
                    !shell.installed(release, &namespace),
                    "{what}: still installed"
                );
            }
            other => panic!("{what}: helm {other} has no runner: add it to {}", file!()),
        }
    }
}
