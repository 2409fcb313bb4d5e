//! Black-box tests of hostile input against the real binary: garbage bytes, a TLS hello on the
//! plain port, oversize heads, absurd bodies, ambiguous parameters, durations and annotations
//! past any sane range, slow clients and connection floods. The tracker keeps serving, and
//! counts stay exact, throughout.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use kube_double::{Outcome, Verb};
use support::{Connection, NS, Tracker, api, standalone};

/// What came back on a raw connection: the status code of the first answer, if any.
fn raw_exchange(address: SocketAddr, bytes: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(address).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // The server may answer and close before reading everything: a failed write is fine.
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(chunk.get(..n).unwrap_or_default());
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    status.parse().ok()
}

fn count_label(api: &kube_double::ApiServer, pod: &str) -> Option<String> {
    api.labels(NS, pod)
        .and_then(|labels| labels.get("active-jobs").cloned())
}

/// What is sent, and the statuses it may get (`None`: closed without an answer).
type Case = (&'static str, Vec<u8>, Vec<Option<u16>>);

const TLS_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x5e, 0x1c, 0x2b, 0x00, 0x00,
    0x20, 0xc0, 0x2b, 0xc0, 0x2f, 0x00, 0x9e, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x0b, 0x00,
];

#[test]
fn garbage_tls_hellos_oversize_heads_and_broken_bodies_never_stop_the_tracker() {
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = standalone(&api).start();
    let address = tracker.address;
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let long_target = format!(
        "POST /increment?pod_name=w1&x={} HTTP/1.1\r\nHost: t\r\n\r\n",
        "b".repeat(9 * 1024)
    );
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many_headers = format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many_headers}\r\n");
    // (what is sent, the statuses it may get: None is a closed connection without an answer)
    let cases: Vec<Case> = vec![
        (
            "garbage bytes",
            (0u8..=255).cycle().take(3000).collect(),
            vec![Some(400), None],
        ),
        (
            "a TLS client hello on the plain port",
            TLS_CLIENT_HELLO.to_vec(),
            vec![Some(400), None],
        ),
        (
            "an HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            vec![Some(400), None],
        ),
        ("a 40 KiB header", big_header.into_bytes(), vec![Some(431)]),
        ("200 headers", many_headers.into_bytes(), vec![Some(431)]),
        ("a 9 KiB request target", long_target.into_bytes(), vec![Some(414)]),
        (
            "conflicting Content-Length headers",
            b"POST /increment?pod_name=w1 HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx"
                .to_vec(),
            vec![Some(400)],
        ),
        (
            "a lone LF and a bare CR",
            b"GET /healthz HTTP/1.1\rHost: t\r\n\r\n".to_vec(),
            vec![Some(400), None],
        ),
    ];
    for (what, bytes, allowed) in &cases {
        let status = raw_exchange(address, bytes);
        assert!(
            allowed.contains(&status),
            "{what}: got {status:?}, expected one of {allowed:?}\n{}",
            tracker.log()
        );
        assert_eq!(
            tracker.request("GET", "/healthz", &[]).status,
            200,
            "still serving after {what}"
        );
    }
    assert_eq!(count_label(&api, "w1"), None, "none of those counted");
    assert_eq!(api.count(Verb::Patch, Outcome::Status(200)), 0);

    // Bodies are never read: a call with an absurd or broken body is answered and counted
    // once, and the connection is not reused for garbage that follows.
    let bodies: [(&str, &[u8]); 3] = [
        (
            "Content-Length: 99999999999",
            b"POST /increment?pod_name=w1 HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\n\r\nxyz",
        ),
        (
            "a broken chunked body",
            b"POST /increment?pod_name=w1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot a chunk\r\n",
        ),
        (
            "Expect: 100-continue",
            b"POST /increment?pod_name=w1 HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
        ),
    ];
    for (expected, (what, bytes)) in (1..).zip(bodies) {
        assert_eq!(raw_exchange(address, bytes), Some(200), "{what}");
        assert_eq!(
            count_label(&api, "w1").as_deref(),
            Some(expected.to_string().as_str()),
            "{what} counted once"
        );
    }
    assert_eq!(tracker.increment("pod_name=w1").count(), 4);
    assert!(
        !tracker.log().contains("panicked"),
        "no panic:\n{}",
        tracker.log()
    );
}

#[test]
fn repeated_and_unknown_parameters_are_refused_and_nothing_is_written() {
    let api = api();
    api.create_pod(NS, "a", &[]);
    api.create_pod(NS, "b", &[]);
    let tracker = standalone(&api).start();
    for (query, named) in [
        ("pod_name=a&pod_name=b", "pod_name"),
        ("pod_name=a&namespace=jobs&namespace=jobs", "namespace"),
        ("pod_name=a&job=x&job=y", "job"),
        ("pod_name=a&job=x&ttl=1m&ttl=2m", "ttl"),
        ("pod_name=a&jobid=x", "jobid"),
        ("pod_name=a&job=", "job"),
        ("pod_name=a&job=x&ttl=10000y", "ttl"),
    ] {
        let answer = tracker.increment(query);
        assert_eq!(answer.status, 400, "{query}: {answer:?}");
        assert!(answer.body.contains(named), "{query}: {answer:?}");
    }
    let answer = tracker.request(
        "POST",
        "/increment?pod_name=a&job=x",
        &[("Idempotency-Key", "y")],
    );
    assert_eq!(answer.status, 400, "{answer:?}");
    let answer = tracker.request("GET", "/wait-idle?pod_name=a&timeout=1s&timeout=2s", &[]);
    assert_eq!(answer.status, 400, "{answer:?}");
    let answer = tracker.request("GET", "/wait-idle?pod_name=a&timeout=2d", &[]);
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.body.contains("at most 1day"), "{answer:?}");
    assert_eq!(
        api.count(Verb::Patch, Outcome::Status(200)),
        0,
        "nothing written"
    );
    assert_eq!(count_label(&api, "a"), None);
    assert_eq!(count_label(&api, "b"), None);
}

#[test]
fn a_deadline_past_the_year_9999_written_by_hand_is_not_readable_and_status_keeps_answering() {
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = standalone(&api)
        .args(["--admin-address=127.0.0.1:0"])
        .start();
    assert_eq!(tracker.increment("pod_name=w1&job=ok&ttl=1y").count(), 1);
    assert_eq!(tracker.request("GET", "/status", &[]).status, 200);
    api.set_annotation(
        NS,
        "w1",
        "active-jobs-jobs",
        Some(r#"{"v":1,"jobs":{"ok":{"s":1,"d":253402300800}}}"#),
    );
    api.set_label(NS, "w1", "active-jobs", Some("1"));
    let writes = api.count(Verb::Patch, Outcome::Status(200));
    let answer = tracker.increment("pod_name=w1&job=two");
    assert_eq!(answer.status, 409, "{answer:?}");
    assert!(answer.body.contains("year 9999"), "{answer:?}");
    assert_eq!(
        api.count(Verb::Patch, Outcome::Status(200)),
        writes,
        "nothing written"
    );
    for _ in 0..3 {
        assert_eq!(tracker.request("GET", "/status", &[]).status, 200);
    }
    assert_eq!(tracker.request("GET", "/healthz", &[]).status, 200);
}

#[test]
fn slow_clients_are_cut_off_after_the_header_timeout_while_normal_calls_are_answered() {
    const SLOW: usize = 1000;
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = standalone(&api)
        .args(["--header-read-timeout=2s", "--idle-timeout=3s"])
        .start();
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|i| {
            let mut stream = TcpStream::connect(tracker.address).expect("connects");
            let partial = if i % 2 == 0 {
                "POST /increment?pod_name=w1 HTTP/1.1\r\nHost: t\r\nX-Slow: "
            } else {
                "POS"
            };
            stream.write_all(partial.as_bytes()).expect("written");
            stream
        })
        .collect();
    // A normal call on a connection of its own is answered meanwhile.
    let mut connection = Connection::open(tracker.address).expect("connects");
    connection
        .set_read_timeout(Duration::from_secs(5))
        .expect("timeout");
    let answer = connection
        .send("POST", "/increment?pod_name=w1", &[])
        .expect("answered while 1000 clients dawdle");
    assert_eq!(answer.count(), 1);
    // Every slow connection is closed by the tracker (end of stream, no answer), well before
    // the generous bound here.
    for stream in &mut slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let read = stream.read(&mut buf);
        assert!(
            matches!(read, Ok(0))
                || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "a slow client is cut off"
        );
    }
    let cut_after = started.elapsed();
    assert!(
        cut_after >= Duration::from_secs(2),
        "not before the header timeout: {cut_after:?}"
    );
    // Nothing was counted for them, and the tracker goes on.
    assert_eq!(count_label(&api, "w1").as_deref(), Some("1"));
    assert_eq!(tracker.increment("pod_name=w1").count(), 2);
    let metrics = tracker.request("GET", "/metrics", &[]).body;
    assert!(
        metrics.contains(
            r#"connections_closed_total{listener="webhook",reason="header-timeout"} 1000"#
        ),
        "{metrics}"
    );
}

#[test]
fn beyond_max_connections_a_new_connection_gets_503_and_the_admin_probes_still_answer() {
    let api = api();
    api.create_pod(NS, "w1", &[]);
    let tracker = standalone(&api)
        .args(["--max-connections=4", "--admin-address=127.0.0.1:0"])
        .start();
    tracker.wait_ready();
    let admin = tracker.admin.expect("an admin address");
    let held: Vec<Connection> = (0..4)
        .map(|_| {
            let mut connection = Connection::open(tracker.address).expect("connects");
            assert_eq!(
                connection
                    .send("GET", "/healthz", &[])
                    .expect("answered")
                    .status,
                200
            );
            connection
        })
        .collect();
    let answer = tracker.request("POST", "/increment?pod_name=w1", &[]);
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert!(answer.body.contains("--max-connections"), "{answer:?}");
    assert_eq!(support::request(admin, "GET", "/readyz", &[]).status, 200);
    assert_eq!(support::request(admin, "GET", "/healthz", &[]).status, 200);
    assert_eq!(
        count_label(&api, "w1"),
        None,
        "the refused call was not counted"
    );
    drop(held);
    // Once the held connections are gone, calls are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = tracker.request("POST", "/increment?pod_name=w1", &[]);
        if answer.status == 200 {
            assert_eq!(answer.count(), 1);
            break;
        }
        assert!(Instant::now() < deadline, "never served again: {answer:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let api = api();
    let tracker = Tracker::builder()
        .args([
            format!("--kube-server={}", api.url()),
            "--idle-timeout=1s".to_owned(),
        ])
        .start();
    let mut connection = TcpStream::connect(tracker.address).expect("connects");
    connection
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("written");
    connection
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut everything = Vec::new();
    // The answer, then the end of the stream once the connection has idled for a second.
    let read = connection.read_to_end(&mut everything);
    assert!(read.is_ok(), "{read:?}");
    let text = String::from_utf8_lossy(&everything);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn a_duration_past_its_bound_stops_the_start_with_exit_status_2_naming_the_flag_and_the_limit() {
    for (flag, limit) in [
        ("--retry-timeout=10000y", "at most 1h"),
        ("--max-job-duration=10000y", "at most 1year"),
        ("--sweep-interval=1ms", "at least 100ms"),
        (
            "--header-read-timeout=99999999999999999999s",
            "--header-read-timeout",
        ),
        ("--max-connections=0", "from 1 to 65536"),
    ] {
        let (status, output) = Tracker::builder().args([flag]).run_to_exit();
        assert_eq!(status.code(), Some(2), "{flag}: {output}");
        let name = flag.split('=').next().unwrap_or(flag);
        assert!(
            output.contains(name) && output.contains(limit),
            "{flag}: {output}"
        );
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pod-webhook-tracker"))
        .args(["run", "--retry-timeout=10000y", "--", "true"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(
        text.contains("--retry-timeout") && text.contains("at most 1day"),
        "{text}"
    );
}
