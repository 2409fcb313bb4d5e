//! The CustomResourceDefinitions that the manifests' custom objects need (cert-manager's Issuer
//! and Certificate; the Prometheus operator's ServiceMonitor and PrometheusRule), taken from the projects' own published Go modules through the Go module
//! proxy (`go mod download`, checked against the checksum database like any module) and
//! installed into a test API server. Their YAML is never copied into this repository: a pinned
//! module version says which CRDs the manifests are checked against.
//!
//! Only the CRDs of the kinds the objects use are installed. A kind of another API group needs
//! one more row in [`SOURCES`]; until then its objects fail with a message saying so.
#![allow(dead_code)] // each test crate uses a different part of it

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use testenv::Cluster;

/// Where the CRDs of one API group are published.
pub(crate) struct Source {
    /// The API group whose kinds the CRDs define.
    pub(crate) group: &'static str,
    /// The Go module that ships them, and its version (`go list -m -versions MODULE` lists
    /// what the proxy serves).
    pub(crate) module: &'static str,
    pub(crate) version: &'static str,
    /// The folder of the module that holds the CRDs as plain YAML.
    pub(crate) folder: &'static str,
}

/// Every API group whose CRDs the tests can install.
pub(crate) const SOURCES: &[Source] = &[
    // cert-manager's release CRDs: deploy/crds/cert-manager.io_*.yaml (plain YAML, not the
    // Helm chart's templates).
    Source {
        group: "cert-manager.io",
        module: "github.com/cert-manager/cert-manager",
        version: "v1.21.2",
        folder: "deploy/crds",
    },
    // The Prometheus operator's CRDs (ServiceMonitor, PrometheusRule, ...), as its release
    // ships them: example/prometheus-operator-crd/monitoring.coreos.com_*.yaml.
    Source {
        group: "monitoring.coreos.com",
        module: "github.com/prometheus-operator/prometheus-operator",
        version: "v0.85.0",
        folder: "example/prometheus-operator-crd",
    },
];

/// Whether objects of `api_version` are served by every API server without a CRD: the core
/// group (`v1`), the groups without a dot (`apps`, `batch`, `policy`) and `*.k8s.io`.
pub(crate) fn is_built_in(api_version: &str) -> bool {
    match api_version.split_once('/') {
        None => true,
        Some((group, _)) => !group.contains('.') || group.ends_with(".k8s.io"),
    }
}

/// The API group of `api_version` (empty for the core group).
pub(crate) fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(group, _)| group)
}

/// Installs, once per cluster, the CRDs of every custom kind among `objects`, and waits until
/// the API server serves them.
///
/// # Panics
/// When a group has no [`Source`], when its module cannot be fetched (naming the module and
/// what the Go toolchain said), or when the module holds no CRD of a kind.
pub(crate) fn install_for(cluster: &Cluster, objects: &[Value]) {
    let mut kinds: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for object in objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        if is_built_in(api_version) {
            continue;
        }
        let kind = object["kind"].as_str().unwrap_or_default();
        kinds.entry(group_of(api_version)).or_default().insert(kind);
    }
    for (group, kinds) in kinds {
        install(cluster, group, &kinds);
    }
}

/// Installs the CRDs of these `kinds` of `group` into `cluster` unless they are there.
pub(crate) fn install(cluster: &Cluster, group: &str, kinds: &BTreeSet<&str>) {
    static INSTALLED: Mutex<BTreeSet<(String, String, String)>> = Mutex::new(BTreeSet::new());
    // Held while installing, so that parallel tests install each CRD once.
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    let key = |kind: &str| (cluster.url().to_owned(), group.to_owned(), kind.to_owned());
    let missing: BTreeSet<&str> = kinds
        .iter()
        .copied()
        .filter(|kind| !installed.contains(&key(kind)))
        .collect();
    if missing.is_empty() {
        return;
    }
    let source = SOURCES
        .iter()
        .find(|source| source.group == group)
        .unwrap_or_else(|| {
            panic!(
                "objects of the API group {group} ({missing:?}) need their CustomResourceDefinitions, \
                 and tests/support/crds.rs names no Go module that publishes them: add a row to SOURCES"
            )
        });
    let crds: Vec<Value> = crds_of(source)
        .into_iter()
        .filter(|crd| {
            crd["spec"]["names"]["kind"]
                .as_str()
                .is_some_and(|kind| missing.contains(kind))
        })
        .collect();
    for kind in &missing {
        assert!(
            crds.iter().any(|crd| crd["spec"]["names"]["kind"] == *kind),
            "{}@{} has no CustomResourceDefinition of {kind}.{group} in {}",
            source.module,
            source.version,
            source.folder
        );
    }
    for crd in &crds {
        let answer = cluster.admin().post(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            crd,
        );
        assert!(
            answer.status == 201 || answer.status == 409,
            "install the CRD {} from {}@{}: {answer:?}",
            crd["metadata"]["name"],
            source.module,
            source.version
        );
    }
    for crd in &crds {
        wait_served(cluster, crd);
    }
    installed.extend(missing.iter().map(|kind| key(kind)));
}

/// The CRDs of `source.group` in its module.
fn crds_of(source: &Source) -> Vec<Value> {
    let folder = module_dir(source).join(source.folder);
    let entries = std::fs::read_dir(&folder).unwrap_or_else(|error| {
        panic!(
            "{}@{} has no folder {} ({error}): has the module moved its CRDs?",
            source.module, source.version, source.folder
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a folder entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", file.display()));
        let documents: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|error| panic!("{} is not YAML: {error}", file.display()));
        crds.extend(documents.into_iter().filter(|document| {
            document["kind"] == "CustomResourceDefinition"
                && document["spec"]["group"] == source.group
        }));
    }
    assert!(
        !crds.is_empty(),
        "{}@{} holds no CustomResourceDefinition of the group {} in {}",
        source.module,
        source.version,
        source.group,
        folder.display()
    );
    crds
}

/// The module's folder in the Go module cache, downloaded through the module proxy if needed.
fn module_dir(source: &Source) -> PathBuf {
    static DIRS: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut dirs = DIRS.lock().unwrap_or_else(PoisonError::into_inner);
    let module = format!("{}@{}", source.module, source.version);
    if let Some(dir) = dirs.get(&module) {
        return dir.clone();
    }
    let why = format!(
        "the CRDs of {} come from the Go module {module}, fetched with `go mod download` through \
         the Go module proxy",
        source.group
    );
    // Outside any module (no go.mod applies), with the installed toolchain only.
    let output = Command::new("go")
        .args(["mod", "download", "-json", &module])
        .current_dir(std::env::temp_dir())
        .env("GOTOOLCHAIN", "local")
        .output()
        .unwrap_or_else(|error| {
            panic!("{why}, and the Go toolchain ('go') cannot be run: {error}")
        });
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    let dir = answer["Dir"].as_str().filter(|_| output.status.success());
    let Some(dir) = dir else {
        panic!(
            "{why}, which failed ({}): {}\n{}",
            output.status,
            answer["Error"].as_str().unwrap_or_default(),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let dir = PathBuf::from(dir);
    dirs.insert(module, dir.clone());
    dir
}

/// Waits until the CRD is Established and its kinds are in discovery.
fn wait_served(cluster: &Cluster, crd: &Value) {
    let name = crd["metadata"]["name"].as_str().expect("a CRD's name");
    let group = crd["spec"]["group"].as_str().expect("a CRD's group");
    let kind = crd["spec"]["names"]["kind"].as_str().expect("a CRD's kind");
    let versions: Vec<&str> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|version| version["served"] == true)
        .filter_map(|version| version["name"].as_str())
        .collect();
    let started = Instant::now();
    loop {
        let stored = cluster.admin().get(&format!(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        ));
        let established = stored.body["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|condition| condition["type"] == "Established" && condition["status"] == "True");
        let discovered = versions.iter().all(|version| {
            let resources = cluster.admin().get(&format!("/apis/{group}/{version}"));
            resources.body["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|resource| resource["kind"] == kind)
        });
        if established && discovered {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the CRD {name} was not served within a minute: {stored:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
