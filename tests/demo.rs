//! The README's first command, `cargo run --example demo`, must keep working: this runs the
//! example binary that `cargo test` builds beside the tests and checks the story it tells.

use std::path::PathBuf;
use std::process::Command;

fn demo_binary() -> PathBuf {
    // target/<profile>/pod-webhook-tracker → target/<profile>/examples/demo
    let tracker = PathBuf::from(env!("CARGO_BIN_EXE_pod-webhook-tracker"));
    let profile_dir = tracker
        .parent()
        .expect("the binary lives in a profile directory");
    profile_dir
        .join("examples")
        .join(format!("demo{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn the_demo_refuses_to_evict_busy_pods_then_drains_them_once_idle() {
    let binary = demo_binary();
    assert!(
        binary.exists(),
        "cargo test builds the demo example at {}",
        binary.display()
    );
    let output = Command::new(&binary)
        .env_remove("RUST_LOG")
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (busy, idle) = stdout
        .split_once("all jobs are done")
        .expect("the demo reaches its end");
    assert_eq!(
        busy.matches("REFUSED (429)").count(),
        3,
        "busy pods are protected:\n{stdout}"
    );
    assert!(
        busy.contains("FAILED (input file is corrupt): POST /decrement → 200 0"),
        "{stdout}"
    );
    assert!(
        busy.contains("label active-jobs on worker-0: 1 → 2"),
        "two jobs overlap:\n{stdout}"
    );
    assert_eq!(
        idle.matches("allowed (201), pod evicted").count(),
        3,
        "idle pods drain:\n{stdout}"
    );
    assert!(
        idle.contains(r#"stored with init containers ["tracker"] (restartPolicy Always: a native sidecar) and containers ["job"]"#),
        "a bare pod is stored with the injected sidecar:\n{stdout}"
    );
    assert!(stdout.trim_end().ends_with("done"), "{stdout}");
}
