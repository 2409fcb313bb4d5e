//! The test-time tools (kube-apiserver, etcd, kubectl, kustomize, helm, ...): built from their Go
//! modules by `tools.sh` into a cache outside the work tree on first use, then reused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};

/// The script that builds the tools (its header says how, and where they are cached).
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools.sh")
}

/// The path of a tool's binary, building it first if the cache does not hold this version.
///
/// # Panics
/// When it cannot be built, with the script's words: a test that needs a real tool fails
/// without it, it is never skipped. The first build of kube-apiserver takes minutes.
pub fn tool(name: &str) -> PathBuf {
    static FOUND: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let found = FOUND.get_or_init(Mutex::default);
    // Held while building, so one test binary builds each tool once.
    let mut found = found.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(path) = found.get(name) {
        return path.clone();
    }
    let output = Command::new("bash")
        .arg(script())
        .arg(name)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the test-time tool {name} is not available ({}):\n{stderr}",
        output.status
    );
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(
        path.is_file(),
        "{} printed {path:?} for {name}, which is not a file:\n{stderr}",
        script().display()
    );
    found.insert(name.to_owned(), path.clone());
    path
}

/// The tools' cache: `$POD_WEBHOOK_TRACKER_TOOLS`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/pod-webhook-tracker/tools`, as `tools.sh` chooses it.
pub(crate) fn cache() -> PathBuf {
    if let Some(folder) = std::env::var_os("POD_WEBHOOK_TRACKER_TOOLS") {
        return PathBuf::from(folder);
    }
    let caches = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    caches.join("pod-webhook-tracker/tools")
}
