//! Kustomizations as users build and apply them: every folder under `manifests/` and
//! `examples/` that holds a `kustomization.yaml`, built by the real kustomize (v5.8.2, built from
//! its Go module: `testenv::tool`) and by the one inside the real kubectl, and applied to a test
//! API server with the real kubectl — always with the repository root as working directory, so
//! that the paths the documentation gives work as written.
#![allow(dead_code)] // each test crate uses a different part of it

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, PoisonError};

use serde_json::{Value, json};
use testenv::Cluster;

/// The folders that hold kustomizations.
pub(crate) const TREES: [&str; 2] = ["manifests", "examples"];

/// The repository's root.
pub(crate) fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every folder under [`TREES`] with a `kustomization.yaml`, relative to the root, sorted.
pub(crate) fn kustomizations() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(repository().join(dir))
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()));
        for entry in entries {
            let entry = entry.expect("a folder entry");
            let path = dir.join(entry.file_name());
            if entry.file_type().expect("a file type").is_dir() {
                walk(&path, found);
            } else if entry.file_name() == "kustomization.yaml" {
                found.push(dir.to_path_buf());
            }
        }
    }
    let mut found = Vec::new();
    for tree in TREES {
        walk(Path::new(tree), &mut found);
    }
    found.sort();
    found
}

/// What a command printed, or why it failed (its status and both streams).
fn finished(what: &str, output: std::io::Result<Output>) -> Result<String, String> {
    let output = output.map_err(|error| format!("{what}: cannot run: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{what}: {}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `kustomize build DIR`, by the standalone kustomize.
pub(crate) fn kustomize_build(dir: &Path) -> Result<String, String> {
    let output = Command::new(testenv::tool("kustomize"))
        .arg("build")
        .arg(dir)
        .current_dir(repository())
        .output();
    finished(&format!("kustomize build {}", dir.display()), output)
}

/// `kubectl kustomize DIR`: what `kubectl apply -k DIR` applies (no cluster needed).
pub(crate) fn kubectl_kustomize(dir: &Path) -> Result<String, String> {
    let output = Command::new(testenv::tool("kubectl"))
        .arg("kustomize")
        .arg(dir)
        .current_dir(repository())
        .env_remove("KUBECONFIG")
        .output();
    finished(&format!("kubectl kustomize {}", dir.display()), output)
}

/// The documents of a YAML stream, read as kubectl reads them (YAML 1.1: `0644` is octal).
pub(crate) fn documents(text: &str, what: &str) -> Vec<Value> {
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    let documents: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
        .unwrap_or_else(|error| panic!("{what} is not YAML: {error}"));
    documents
        .into_iter()
        .filter(|document| !document.is_null())
        .collect()
}

/// `Kind name`, or `Kind namespace/name`.
pub(crate) fn kind_and_name(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("?");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// Real kubectl as the cluster's administrator, in the repository root.
pub(crate) fn kubectl(cluster: &Cluster) -> Command {
    let mut command = cluster.kubectl();
    command.current_dir(repository());
    command
}

/// Whether the cluster stores objects of this kind per namespace (from its discovery).
pub(crate) fn namespaced(cluster: &Cluster, api_version: &str, kind: &str) -> bool {
    static KNOWN: Mutex<BTreeMap<(String, String, String), bool>> = Mutex::new(BTreeMap::new());
    let key = (
        cluster.url().to_owned(),
        api_version.to_owned(),
        kind.to_owned(),
    );
    if let Some(known) = KNOWN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return *known;
    }
    let path = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let resources = cluster.admin().get(&path).expect(200, "discovery");
    let namespaced = resources["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|resource| {
            resource["kind"] == kind && !resource["name"].as_str().unwrap_or("/").contains('/')
        })
        .and_then(|resource| resource["namespaced"].as_bool())
        .unwrap_or_else(|| panic!("the API server does not serve {kind} in {api_version}"));
    KNOWN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, namespaced);
    namespaced
}

/// Creates the namespace `name` unless it exists (as a user does before applying into it),
/// with kubectl's record of it, so that a later `kubectl apply` of the same Namespace is an
/// ordinary update.
pub(crate) fn ensure_namespace(cluster: &Cluster, name: &str, labels: &[(&str, &str)]) {
    let path = format!("/api/v1/namespaces/{name}");
    if cluster.admin().get(&path).status == 200 {
        return;
    }
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let namespace = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    });
    let mut create = kubectl(cluster);
    create.args(["create", "--save-config", "-f", "-"]);
    let output = run_with_input(create, &namespace.to_string());
    // Another test may have made it meanwhile.
    assert!(
        output.status.success() || cluster.admin().get(&path).status == 200,
        "create the namespace {name}: {output:?}"
    );
}

/// Runs `command` with `input` on its standard input.
pub(crate) fn run_with_input(mut command: Command, input: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(input.as_bytes())
        .expect("the command reads its input");
    child.wait_with_output().expect("the command ends")
}

/// What `kubectl apply` reported, one line per object: `kind.group/name created`.
pub(crate) fn applied_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|line| !line.trim().is_empty())
        .collect()
}

/// The namespaces `objects` (one build's output) put namespaced objects into, and whether some
/// namespaced object names none (so that it goes where `kubectl apply -n` says).
pub(crate) fn namespaces_of(cluster: &Cluster, objects: &[Value]) -> (Vec<String>, bool) {
    let mut named = Vec::new();
    let mut unnamed = false;
    for object in objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        if !namespaced(cluster, api_version, kind) {
            continue;
        }
        match object["metadata"]["namespace"].as_str() {
            Some(namespace) if !named.iter().any(|known| known == namespace) => {
                named.push(namespace.to_owned());
            }
            Some(_) => {}
            None => unnamed = true,
        }
    }
    (named, unnamed)
}
