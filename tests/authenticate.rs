//! Black-box tests of `serve --standalone --authenticate=serviceaccount`: callers send
//! service-account tokens that the API test double issued, the tracker reviews them with the
//! double (TokenReview), and each caller may count what its token allows, nothing else.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use kube_double::{ApiServer, NewPod, Rule, Subject};
use support::https::{self, write_certificate};
use support::{Answer, NS, Tracker, TrackerBuilder, api, standalone};

const AUDIENCE: &str = "pod-webhook-tracker";
const REPORTER: &str = "system:serviceaccount:ci:reporter";

/// The double with pods job-1 and job-2 (account `worker`) and a CI pod (account `reporter`),
/// and a tracker user that may also create TokenReviews.
fn cluster() -> ApiServer {
    let api = api();
    api.allow(
        Subject::user("tracker"),
        Rule::new(["create"], ["tokenreviews"]),
    );
    for name in ["job-1", "job-2"] {
        api.add_pod(
            NewPod::new(NS, name)
                .label("app", "worker")
                .phase("Running")
                .service_account("worker"),
        );
    }
    api.add_pod(NewPod::new("ci", "reporter-0").service_account("reporter"));
    api
}

fn token(api: &ApiServer, pod: &str) -> String {
    api.issue_token(NS, "worker", pod, &[AUDIENCE], Duration::from_secs(600))
}

fn authenticated(api: &ApiServer) -> TrackerBuilder {
    standalone(api).args([
        "--authenticate=serviceaccount".to_owned(),
        format!("--allowed-callers={REPORTER}"),
    ])
}

fn call(tracker: &Tracker, path: &str, query: &str, token: Option<&str>) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("Authorization", b)])
        .unwrap_or_default();
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let method = if path.starts_with("/status") || path.starts_with("/metrics") {
        "GET"
    } else {
        "POST"
    };
    tracker.request(method, &target, &headers)
}

/// The requests the tracker sent about `pod` (reads or writes).
fn touched(api: &ApiServer, pod: &str) -> usize {
    let path = format!("/api/v1/namespaces/{NS}/pods/{pod}");
    api.requests()
        .iter()
        .filter(|r| r.path.split('?').next() == Some(path.as_str()))
        .count()
}

/// A fresh, empty directory for one test's files.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pwt-auth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a directory");
    dir
}

fn reviews(api: &ApiServer) -> usize {
    api.requests()
        .iter()
        .filter(|r| {
            r.path
                .starts_with("/apis/authentication.k8s.io/v1/tokenreviews")
        })
        .count()
}

#[test]
fn a_pod_counts_itself_with_its_token_and_no_other_pod() {
    let api = cluster();
    let tracker = authenticated(&api).start();
    tracker.wait_ready();
    let own = token(&api, "job-1");

    let answer = call(&tracker, "/increment", "", Some(&own));
    assert_eq!(
        (answer.status, answer.body.trim()),
        (200, "1"),
        "{answer:?}"
    );
    let answer = call(&tracker, "/increment", "pod_name=job-1", Some(&own));
    assert_eq!(answer.checked_status(), 200, "{answer:?}");
    assert_eq!(api.labels(NS, "job-1").expect("job-1")["active-jobs"], "2");

    let version = api.resource_version(NS, "job-2");
    let answer = call(&tracker, "/increment", "pod_name=job-2", Some(&own));
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(
        answer
            .body
            .contains("system:serviceaccount:jobs:worker may count only its own pod jobs/job-1"),
        "{}",
        answer.body
    );
    let answer = call(
        &tracker,
        "/increment",
        "pod_name=job-1&namespace=other",
        Some(&own),
    );
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(
        api.resource_version(NS, "job-2"),
        version,
        "nothing written"
    );
    assert_eq!(touched(&api, "job-2"), 0, "the pod was not even read");

    let answer = call(&tracker, "/decrement", "", Some(&own));
    assert_eq!(answer.checked_status(), 200);
    assert_eq!(answer.count(), 1);
}

#[test]
fn missing_malformed_foreign_and_expired_tokens_are_401_and_nothing_is_touched() {
    let api = cluster();
    let tracker = authenticated(&api).start();
    tracker.wait_ready();
    let other_audience = api.issue_token(
        NS,
        "worker",
        "job-1",
        &["elsewhere"],
        Duration::from_secs(600),
    );
    let expired = api.issue_token(NS, "worker", "job-1", &[AUDIENCE], Duration::ZERO);
    let forged = {
        let real = token(&api, "job-1");
        let (signed, _) = real.rsplit_once('.').expect("a JWT");
        format!("{signed}.c2lnbmVkLWJ5LXNvbWVvbmUtZWxzZQ")
    };
    let version = api.resource_version(NS, "job-1");
    for (token, says) in [
        (None, "no Authorization header"),
        (Some("not a token"), "characters a token cannot have"),
        (Some("garbage"), "not a JWT"),
        (
            Some(other_audience.as_str()),
            "is invalid for the target audiences",
        ),
        (Some(expired.as_str()), "Token has expired"),
        (Some(forged.as_str()), "cryptographic primitive"),
    ] {
        for query in ["", "pod_name=job-1"] {
            let answer = call(&tracker, "/increment", query, token);
            assert_eq!(answer.status, 401, "{says}: {answer:?}");
            assert_eq!(
                answer.header("www-authenticate"),
                Some("Bearer realm=\"pod-webhook-tracker\""),
                "{says}"
            );
            assert!(answer.body.contains(says), "{says}: {}", answer.body);
        }
    }
    assert_eq!(
        api.resource_version(NS, "job-1"),
        version,
        "nothing written"
    );
    assert_eq!(touched(&api, "job-1"), 0, "the pod was not even read");
}

#[test]
fn a_token_of_a_pod_that_was_re_created_under_the_same_name_counts_nothing() {
    let api = cluster();
    let tracker = authenticated(&api).start();
    tracker.wait_ready();
    let old = token(&api, "job-1");
    assert_eq!(
        call(&tracker, "/increment", "", Some(&old)).checked_status(),
        200
    );
    // The pod goes and comes back: the API server (and the tracker) still trust the token for
    // a few seconds, but the pod is another one.
    assert!(api.remove_pod(NS, "job-1"));
    api.add_pod(
        NewPod::new(NS, "job-1")
            .label("app", "worker")
            .phase("Running")
            .service_account("worker"),
    );
    let version = api.resource_version(NS, "job-1");
    let answer = call(&tracker, "/increment", "", Some(&old));
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.body.contains("is another pod"), "{}", answer.body);
    assert_eq!(
        api.resource_version(NS, "job-1"),
        version,
        "nothing written"
    );
    assert!(
        !api.labels(NS, "job-1")
            .expect("the new pod")
            .contains_key("active-jobs")
    );
    // The new pod's own token counts it.
    let new = token(&api, "job-1");
    assert_eq!(
        call(&tracker, "/increment", "", Some(&new)).checked_status(),
        200
    );
}

#[test]
fn an_allowed_caller_counts_any_pod_and_reads_the_status_which_pods_may_not() {
    let api = cluster();
    let tracker = authenticated(&api).start();
    tracker.wait_ready();
    let ci = api.issue_token(
        "ci",
        "reporter",
        "reporter-0",
        &[AUDIENCE],
        Duration::from_secs(600),
    );
    let answer = call(&tracker, "/increment", "pod_name=job-2", Some(&ci));
    assert_eq!(answer.checked_status(), 200, "{answer:?}");
    assert_eq!(api.labels(NS, "job-2").expect("job-2")["active-jobs"], "1");
    assert_eq!(call(&tracker, "/status", "", Some(&ci)).status, 200);
    let own = token(&api, "job-1");
    assert_eq!(call(&tracker, "/status", "", Some(&own)).status, 403);
    assert_eq!(call(&tracker, "/status", "", None).status, 401);
    assert_eq!(call(&tracker, "/metrics", "", None).status, 401);
    // The probes stay open.
    assert_eq!(tracker.request("GET", "/readyz", &[]).status, 200);
}

#[test]
fn a_busy_caller_costs_one_token_review_and_its_token_never_reaches_the_log() {
    let api = cluster();
    let tracker = authenticated(&api).env("RUST_LOG", "trace").start();
    tracker.wait_ready();
    let own = token(&api, "job-1");
    let before = reviews(&api);
    for _ in 0..20 {
        assert_eq!(
            call(&tracker, "/increment", "", Some(&own)).checked_status(),
            200
        );
    }
    assert_eq!(reviews(&api) - before, 1, "20 calls, 1 TokenReview");
    let garbage = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.bm9wZQ";
    for _ in 0..5 {
        assert_eq!(call(&tracker, "/increment", "", Some(garbage)).status, 401);
    }
    assert_eq!(
        reviews(&api) - before,
        2,
        "a refused token is remembered too"
    );
    let admin = support::request(tracker.address, "GET", "/readyz", &[]);
    assert_eq!(admin.status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let log = tracker.log();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log runs at its most verbose"
    );
    let (_, signature) = own.rsplit_once('.').expect("a JWT");
    for secret in [own.as_str(), signature, garbage] {
        assert!(!log.contains(secret), "a token in the log:\n{log}");
    }
}

#[test]
fn authentication_refuses_to_start_in_a_sidecar_and_warns_over_plain_http() {
    let api = cluster();
    let (status, output) = support::Tracker::builder()
        .args([
            format!("--kube-server={}", api.url()),
            "--kube-token=tracker-token".to_owned(),
            "--authenticate=serviceaccount".to_owned(),
        ])
        .env("POD_NAME", "job-1")
        .env("POD_NAMESPACE", NS)
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(
        output.contains("only the standalone service checks callers"),
        "{output}"
    );

    let open = authenticated(&api).address("0.0.0.0:0").start();
    assert!(
        open.wait_for_line("arrive over plain HTTP", Duration::from_secs(5))
            .is_some(),
        "{}",
        open.log()
    );
}

/// POST over HTTPS with a bearer token.
fn https_increment(address: SocketAddr, ca: &str, token: &str) -> (u16, String) {
    let bearer = format!("Bearer {token}");
    https::request(
        address,
        ca,
        "POST",
        "/increment",
        &[("authorization", &bearer)],
        Vec::new(),
    )
}

#[test]
fn tokens_travel_over_tls_with_a_certificate_read_again_when_it_changes() {
    let api = cluster();
    let dir = scratch("tls");
    let first = write_certificate(&dir, &["127.0.0.1"]);
    let tracker = authenticated(&api)
        .args([
            format!("--tls-cert-file={}", dir.join("tls.crt").display()),
            format!("--tls-key-file={}", dir.join("tls.key").display()),
        ])
        .start();
    tracker.wait_ready();
    assert!(
        tracker.log().contains("listening on https://"),
        "{}",
        tracker.log()
    );
    let own = token(&api, "job-1");
    assert_eq!(
        https_increment(tracker.address, &first, &own),
        (200, "1".to_owned())
    );

    let second = write_certificate(&dir, &["127.0.0.1"]);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        https_increment(tracker.address, &second, &own).0,
        200,
        "the new certificate is served"
    );
    // Plain HTTP on the HTTPS address gets no answer.
    let plain = support::Connection::open(tracker.address).and_then(|mut c| {
        c.set_read_timeout(Duration::from_secs(5))?;
        Ok(c.send("POST", "/increment", &[]))
    });
    assert!(matches!(plain, Ok(Err(_))), "{plain:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_sends_the_token_it_finds_in_its_token_file() {
    let api = cluster();
    let tracker = authenticated(&api).start();
    tracker.wait_ready();
    let dir = scratch("run");
    let file = dir.join("token");
    std::fs::write(&file, format!("{}\n", token(&api, "job-1"))).expect("written");
    let run = |extra: &[String]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pod-webhook-tracker"))
            .arg("run")
            .arg(format!("--url=http://{}", tracker.address))
            .arg("--retry-timeout=0")
            .args(extra)
            .args(["--", "sh", "-c", "exit 0"])
            .env_remove("TRACKER_URL")
            .output()
            .expect("run runs")
    };
    let counted = run(&[format!("--token-file={}", file.display())]);
    assert_eq!(
        counted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&counted.stderr)
    );
    let increments = api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/pods/job-1"))
        .count();
    assert_eq!(increments, 2, "an increment and a decrement for job-1");
    assert!(
        !api.labels(NS, "job-1")
            .expect("job-1")
            .contains_key("active-jobs")
    );

    // Without a token the job is not counted, so not started (exit 75), and says why.
    let refused = run(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    let missing = run(&["--token-file=/nonexistent/token".to_owned()]);
    assert_eq!(missing.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_job_sh_wrapper_sends_the_token_from_its_token_file() {
    let api = cluster();
    let tracker = authenticated(&api).start();
    tracker.wait_ready();
    let dir = scratch("sh");
    let file = dir.join("token");
    std::fs::write(&file, token(&api, "job-2")).expect("written");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/job.sh");
    let job = |token_file: &std::path::Path| {
        std::process::Command::new("sh")
            .arg(&script)
            .args(["sh", "-c", "echo working"])
            .env("TRACKER_URL", format!("http://{}", tracker.address))
            .env("TRACKER_TOKEN_FILE", token_file)
            .env("TRACKER_ATTEMPTS", "1")
            .output()
            .expect("sh runs")
    };
    let counted = job(&file);
    let stderr = String::from_utf8_lossy(&counted.stderr);
    assert_eq!(counted.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("increment: ok (active jobs in this pod: 1)"),
        "{stderr}"
    );
    assert!(stderr.contains("decrement: ok"), "{stderr}");
    assert!(
        !stderr.contains(&token(&api, "job-2")[..40]),
        "no token in the output"
    );

    let refused = job(&dir.join("absent"));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_ne!(refused.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("HTTP 401"), "{stderr}");

    // Over HTTPS, trusting TRACKER_CA_FILE.
    let ca = write_certificate(&dir.join("tls"), &["127.0.0.1"]);
    std::fs::write(dir.join("ca.crt"), ca).expect("written");
    let secure = authenticated(&api)
        .args([
            format!("--tls-cert-file={}", dir.join("tls/tls.crt").display()),
            format!("--tls-key-file={}", dir.join("tls/tls.key").display()),
        ])
        .start();
    secure.wait_ready();
    let output = std::process::Command::new("sh")
        .arg(&script)
        .args(["sh", "-c", "echo working"])
        .env("TRACKER_URL", format!("https://{}", secure.address))
        .env("TRACKER_TOKEN_FILE", &file)
        .env("TRACKER_CA_FILE", dir.join("ca.crt"))
        .env("TRACKER_ATTEMPTS", "1")
        .output()
        .expect("sh runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("increment: ok"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_calls_an_https_tracker_trusting_the_ca_it_is_given() {
    let api = cluster();
    let dir = scratch("run-tls");
    let ca = write_certificate(&dir, &["127.0.0.1"]);
    std::fs::write(dir.join("ca.crt"), &ca).expect("written");
    std::fs::write(dir.join("token"), token(&api, "job-1")).expect("written");
    let tracker = authenticated(&api)
        .args([
            format!("--tls-cert-file={}", dir.join("tls.crt").display()),
            format!("--tls-key-file={}", dir.join("tls.key").display()),
        ])
        .start();
    tracker.wait_ready();
    let run = |ca: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pod-webhook-tracker"))
            .arg("run")
            .arg(format!("--url=https://{}", tracker.address))
            .arg(format!("--ca-file={}", ca.display()))
            .arg(format!("--token-file={}", dir.join("token").display()))
            .args(["--retry-timeout=0", "--", "sh", "-c", "exit 3"])
            .output()
            .expect("run runs")
    };
    let output = run(&dir.join("ca.crt"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(3),
        "the command's own status: {stderr}"
    );
    let patches = api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/pods/job-1"))
        .count();
    assert_eq!(patches, 2, "counted and released over TLS");
    // Another CA: the handshake fails, the job is not counted and not started.
    let other = write_certificate(&dir.join("other"), &["127.0.0.1"]);
    std::fs::write(dir.join("other-ca.crt"), other).expect("written");
    let output = run(&dir.join("other-ca.crt"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(75), "{stderr}");
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wait_idle_on_the_webhook_address_takes_the_same_token_rules() {
    let api = cluster();
    let tracker = authenticated(&api).start();
    tracker.wait_ready();
    let own = token(&api, "job-1");
    let bearer = format!("Bearer {own}");
    let wait = |query: &str, headers: &[(&str, &str)]| {
        tracker.request("GET", &format!("/wait-idle?timeout=0s{query}"), headers)
    };
    let idle = wait("", &[("Authorization", &bearer)]);
    assert_eq!((idle.status, idle.body.trim()), (200, "0"), "{idle:?}");
    assert_eq!(wait("", &[]).status, 401);
    assert_eq!(
        wait("&pod_name=job-2", &[("Authorization", &bearer)]).status,
        403
    );
}
