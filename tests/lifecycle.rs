//! Black-box tests of the process itself: subcommands, start-up refusals with exit status 2,
//! graceful stop on SIGTERM, request logs and what they must never contain.

mod support;

use std::process::Command;
use std::time::Duration;

use kube_double::{Fault, FaultKind, Verb};
use support::{NS, Tracker, api, standalone};

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_pod-webhook-tracker"))
        .args(args)
        .output()
        .expect("runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn version_prints_the_package_version() {
    let (code, stdout, _) = run(&["version"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout.trim(), format!("v{}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_lists_every_subcommand_and_every_serve_flag_with_its_default() {
    for args in [&["help"][..], &["--help"]] {
        let (code, stdout, _) = run(args);
        assert_eq!(code, Some(0));
        for command in ["serve", "version", "completion"] {
            assert!(stdout.contains(command), "{command} missing from {stdout}");
        }
    }
    let (code, stdout, _) = run(&["serve", "--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--address",
        "--allow-negative",
        "--kube-as",
        "--kube-as-group",
        "--kube-as-uid",
        "--kube-certificate-authority",
        "--kube-client-certificate",
        "--kube-client-key",
        "--kube-cluster",
        "--kube-context",
        "--kube-disable-compression",
        "--kube-insecure-skip-tls-verify",
        "-n",
        "--kube-password",
        "--kube-proxy-url",
        "--kube-request-timeout",
        "--kube-server",
        "--kube-tls-server-name",
        "--kube-token",
        "--kube-user",
        "--kube-username",
        "--kubeconfig",
        "--label",
        "--label-selector",
        "--namespace",
        "--remove-on-zero",
    ] {
        assert!(stdout.contains(flag), "{flag} missing from serve --help");
    }
    // argh wraps help text; compare with the white space folded.
    let folded = stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for default in [
        "default active-jobs",
        "default true",
        "default 0",
        "default false",
        "default 30s",
    ] {
        assert!(
            folded.contains(default),
            "{default:?} missing from serve --help"
        );
    }
}

#[test]
fn completion_prints_scripts_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, stdout, _) = run(&["completion", shell]);
        assert_eq!(code, Some(0), "{shell}");
        assert!(
            stdout.contains("pod-webhook-tracker") && stdout.contains("serve"),
            "{shell}: {stdout}"
        );
    }
    let (code, _, stderr) = run(&["completion", "powershell"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("powershell"), "{stderr}");
}

#[test]
fn invalid_input_is_refused_at_start_up_with_one_line_naming_the_flag_and_status_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--label=bad key!"], "--label"),
        (&["serve", "--label-selector=app in (x"], "--label-selector"),
        (&["serve", "--address=nowhere"], "--address"),
        (
            &["serve", "--kube-request-timeout=soon"],
            "--kube-request-timeout",
        ),
        (
            &["serve", "--kube-certificate-authority=/no/such/ca.pem"],
            "--kube-certificate-authority",
        ),
        (
            &[
                "serve",
                "--kube-client-certificate=/no/cert",
                "--kube-client-key=/no/key",
            ],
            "--kube-client-certificate",
        ),
        (&["serve", "--allow-negative=perhaps"], "--allow-negative"),
        (&["serve", "--no-such-flag"], "--no-such-flag"),
    ];
    for (args, flag) in cases {
        let (code, _, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "one line for {args:?}: {stderr}"
        );
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn sigterm_finishes_calls_in_flight_then_exits_zero() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let mut tracker = standalone(&api).start();
    // A kept-alive connection that stays idle: the stop must not wait for it (the grace
    // period, 30 s by default, is longer than the exit this test waits for).
    let mut idle = support::Connection::open(tracker.address).expect("connects");
    assert_eq!(
        idle.send("POST", "/increment?pod_name=worker-1", &[])
            .expect("an answer")
            .count(),
        1
    );
    // Nor for a connection that has sent nothing yet, or only half a request's head.
    let _fresh = std::net::TcpStream::connect(tracker.address).expect("connects");
    let mut half = std::net::TcpStream::connect(tracker.address).expect("connects");
    std::io::Write::write_all(
        &mut half,
        b"POST /increment?pod_name=worker-1 HTTP/1.1\r\nHo",
    )
    .expect("sends");
    api.inject(
        Fault::new(FaultKind::Latency(Duration::from_millis(1500)))
            .verb(Verb::Patch)
            .next(1),
    );
    let address = tracker.address;
    let in_flight = std::thread::spawn(move || {
        support::request(address, "POST", "/increment?pod_name=worker-1", &[])
    });
    // The call is in flight once the double has seen its PATCH (and not yet answered it).
    wait_for_a_patch_in_flight(&api);
    tracker.signal("TERM");
    let answer = in_flight.join().expect("client");
    assert_eq!(answer.count(), 2, "the call in flight was finished");
    let status = tracker.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", tracker.log());
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "no longer listening"
    );
}

#[test]
fn each_call_is_logged_once_with_method_path_pod_status_count_and_duration_and_probes_are_not() {
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    assert_eq!(tracker.request("GET", "/healthz", &[]).status, 200);
    tracker.wait_ready();
    assert_eq!(tracker.request("GET", "/readyz", &[]).status, 200);
    let line = tracker
        .wait_for_line("POST /increment", Duration::from_secs(5))
        .expect("a request line");
    for part in ["pod=jobs/worker-1", "status=200", "count=1", "duration="] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
    assert!(
        !tracker.log().contains("/healthz") && !tracker.log().contains("/readyz"),
        "{}",
        tracker.log()
    );
}

#[test]
fn a_call_whose_caller_hangs_up_is_still_counted_and_logged_once() {
    use std::io::Write;
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).start();
    api.inject(
        Fault::new(FaultKind::Latency(Duration::from_millis(300)))
            .verb(Verb::Patch)
            .next(1),
    );
    let mut caller = std::net::TcpStream::connect(tracker.address).expect("connects");
    caller
        .write_all(
            b"POST /increment?pod_name=worker-1 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        )
        .expect("sends");
    wait_for_a_patch_in_flight(&api);
    // The caller gives up while the write is on its way.
    drop(caller);
    let line = tracker
        .wait_for_line("POST /increment", Duration::from_secs(10))
        .expect("the call is logged although nobody reads the answer");
    assert!(
        line.contains("status=200") && line.contains("count=1"),
        "{line}"
    );
    assert_eq!(
        api.labels(NS, "worker-1")
            .expect("the pod exists")
            .get("active-jobs")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        tracker.increment("pod_name=worker-1").count(),
        2,
        "the next call sees it"
    );
    assert!(
        tracker
            .wait_for_line("count=2", Duration::from_secs(10))
            .is_some()
    );
    assert_eq!(
        tracker.log().matches("POST /increment").count(),
        2,
        "{}",
        tracker.log()
    );
}

#[test]
fn tokens_and_passwords_never_appear_in_logs_at_any_level() {
    let api = api();
    api.add_basic_auth("alice", "pa55-w0rd-secret", kube_double::User::new("alice"));
    api.create_pod(NS, "worker-1", &[]);
    let mut tracker = Tracker::builder()
        .args([
            format!("--kube-server={}", api.url()),
            "--kube-token=t0ken-secret-value".to_owned(),
            "--kube-username=alice".to_owned(),
            "--kube-password=pa55-w0rd-secret".to_owned(),
            format!("--namespace={NS}"),
        ])
        .env("RUST_LOG", "trace")
        .start();
    let _ = tracker.increment("pod_name=worker-1");
    let _ = tracker.increment("pod_name=Bad_Name");
    tracker.signal("TERM");
    tracker.wait_exit(Duration::from_secs(20)).expect("exits");
    let log = tracker.log();
    assert!(log.contains("listening on"), "the log was captured: {log}");
    for secret in ["t0ken-secret-value", "pa55-w0rd-secret"] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
}

/// Waits until the double has seen a PATCH it has not answered yet: a call in flight.
fn wait_for_a_patch_in_flight(api: &kube_double::ApiServer) {
    assert!(
        api.wait_for_request(
            |r| r.method == "PATCH" && r.status.is_none(),
            Duration::from_secs(10)
        ),
        "the call never reached the API: {:?}",
        api.requests()
    );
}
