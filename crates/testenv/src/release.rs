//! The project's release build, for tests: `make` run as the release workflow runs it
//! (cargo-auditable on PATH, installed once into the tools' cache), so that the tests against a
//! real API server run the very static binary the image ships, and tests/release.rs checks the
//! same build without compiling it a second time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The cargo-auditable release the release workflow installs (`.github/workflows/release.yml`).
pub const CARGO_AUDITABLE: &str = "0.7.7";

/// The release's build command, as the workflow sets it: the crate list embedded for the SBOM.
pub const CARGO_BUILD: &str = "CARGO_BUILD=cargo auditable build";

/// `make --no-print-directory` in `root` with cargo-auditable first on PATH and without the
/// variables cargo sets for a test (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...): build scripts watch
/// some of them (ring's watches CARGO_MANIFEST_DIR), and a build from the shell would then
/// compile everything again, and the next test run again.
pub fn make(root: &Path) -> Command {
    let mut command = Command::new("make");
    command
        .arg("--no-print-directory")
        .current_dir(root)
        .env("PATH", path_with_cargo_auditable());
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_for_a_test = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|prefix| key.starts_with(prefix))
            || key == "CARGO_TARGET_TMPDIR";
        if set_for_a_test {
            command.env_remove(key.as_ref());
        }
    }
    command
}

/// The static release binary of this machine's architecture, built once per test binary with
/// `make build-linux-ARCH` as the release workflow builds it (a no-op when cargo finds it up
/// to date; cargo's progress goes to stderr), from cargo's target folder (`CARGO_TARGET_DIR`
/// honoured).
///
/// # Panics
/// When the build fails, for instance without musl-gcc (`make test-prerequisites` says so).
pub fn static_release_binary(root: &Path) -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let (arch, rust_target) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", "x86_64-unknown-linux-musl"),
            "aarch64" => ("arm64", "aarch64-unknown-linux-musl"),
            other => panic!("no static release build for {other}"),
        };
        let dist = std::env::temp_dir().join(format!("pwt-static-build-{}", std::process::id()));
        let status = make(root)
            .arg(format!("build-linux-{arch}"))
            .arg(CARGO_BUILD)
            .arg(format!("DIST={}", dist.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .expect("make runs");
        let _ = std::fs::remove_dir_all(&dist);
        assert!(status.success(), "make build-linux-{arch}: {status}");
        let binary = target_directory(root)
            .join(rust_target)
            .join("release/pod-webhook-tracker");
        assert!(binary.is_file(), "{} was not built", binary.display());
        binary
    })
}

/// Cargo's target folder for the workspace at `root`, as `cargo metadata` reports it.
fn target_directory(root: &Path) -> PathBuf {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version=1", "--no-deps", "--offline"])
        .current_dir(root)
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {output:?}");
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    PathBuf::from(
        metadata["target_directory"]
            .as_str()
            .expect("a target_directory"),
    )
}

/// PATH with the folder that holds cargo-auditable (installed once from crates.io into the
/// test-time tools' cache) first.
pub fn path_with_cargo_auditable() -> String {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    let bin = BIN.get_or_init(|| {
        let root = crate::tools::cache().join(format!("cargo-auditable-v{CARGO_AUDITABLE}"));
        if !root.join("bin/cargo-auditable").is_file() {
            let output = Command::new(env!("CARGO"))
                .args(["install", "cargo-auditable", "--locked", "--version"])
                .arg(CARGO_AUDITABLE)
                .arg("--root")
                .arg(&root)
                .output()
                .expect("cargo install runs");
            assert!(
                output.status.success(),
                "cargo install cargo-auditable: {output:?}"
            );
        }
        root.join("bin")
    });
    let rest = std::env::var("PATH").unwrap_or_default();
    format!("{}:{rest}", bin.display())
}
