//! Exactly-once under load: many concurrent callers, several replicas, injected API faults and
//! another writer editing the pod, and still every acknowledged call is in the label once.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use kube_double::{ApiServer, Fault, FaultKind, Verb};
use support::{Connection, NS, Tracker, api, standalone};

/// What a group of clients saw.
#[derive(Debug, Default)]
struct Tally {
    increments: i64,
    decrements: i64,
    unavailable: i64,
    unknown: i64,
}

/// Runs `clients` threads of `calls` mixed calls each against the trackers (round-robin) and
/// checks every answer is well formed.
fn hammer(trackers: &[&Tracker], pod: &str, clients: usize, calls: usize) -> Tally {
    let addresses: Vec<_> = trackers.iter().map(|t| t.address).collect();
    let handles: Vec<_> = (0..clients)
        .map(|client| {
            let address = addresses[client % addresses.len()];
            let pod = pod.to_owned();
            thread::spawn(move || {
                let mut tally = Tally::default();
                let mut connection = Connection::open(address).expect("connects");
                for call in 0..calls {
                    // A fixed, uneven mix so that the count wanders both ways.
                    let increment = (client * 7 + call * 3) % 5 < 3;
                    let path = if increment {
                        "/increment"
                    } else {
                        "/decrement"
                    };
                    let answer = connection
                        .send("POST", &format!("{path}?pod_name={pod}"), &[])
                        .unwrap_or_else(|e| panic!("malformed or missing answer: {e}"));
                    match answer.checked_status() {
                        200 => {
                            if increment {
                                tally.increments += 1;
                            } else {
                                tally.decrements += 1;
                            }
                        }
                        503 => tally.unavailable += 1,
                        504 => tally.unknown += 1,
                        _ => panic!("unexpected answer {answer:?}"),
                    }
                    assert!(
                        !answer.body.contains('\n') || answer.status != 200,
                        "one value per answer: {answer:?}"
                    );
                }
                tally
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .fold(Tally::default(), |mut all, t| {
            all.increments += t.increments;
            all.decrements += t.decrements;
            all.unavailable += t.unavailable;
            all.unknown += t.unknown;
            all
        })
}

/// Reads a label value as the tracker does (`neg` for negative counts).
fn decode(value: Option<&str>) -> i64 {
    match value {
        None => 0,
        Some(value) => match value.strip_prefix("neg") {
            Some(digits) => -digits.parse::<i64>().expect("digits"),
            None => value.parse().expect("digits"),
        },
    }
}

fn encode(count: i64) -> String {
    if count < 0 {
        format!("neg{}", -count)
    } else {
        count.to_string()
    }
}

fn final_count(api: &ApiServer, pod: &str) -> i64 {
    decode(
        api.labels(NS, pod)
            .expect("the pod exists")
            .get("active-jobs")
            .map(String::as_str),
    )
}

fn assert_exactly_once(api: &ApiServer, pod: &str, tally: &Tally) {
    let acknowledged = tally.increments - tally.decrements;
    let stored = final_count(api, pod);
    // A 504 is "may or may not have been stored"; every 200 must be there exactly once.
    assert!(
        (stored - acknowledged).abs() <= tally.unknown,
        "stored {stored}, acknowledged {acknowledged}, {tally:?}"
    );
    if tally.unknown == 0 {
        assert_eq!(stored, acknowledged, "{tally:?}");
    }
}

#[test]
fn sixty_four_clients_with_faults_and_another_writer_lose_and_double_nothing() {
    let api = api();
    api.create_pod(NS, "busy", &[("app", "worker"), ("tier", "a")]);
    let tracker = standalone(&api)
        .args([
            "--allow-negative",
            "--label-selector=app=worker,tier in (a,b)",
            "--retry-timeout=60s",
            "--kube-request-timeout=2s",
        ])
        .env("RUST_LOG", "info,request=warn")
        .start();
    api.inject(
        Fault::new(FaultKind::Status(409))
            .verb(Verb::Patch)
            .fraction(0.05),
    );
    api.inject(
        Fault::new(FaultKind::Status(500))
            .verb(Verb::Patch)
            .fraction(0.03),
    );
    api.inject(
        Fault::new(FaultKind::Reset)
            .verb(Verb::Patch)
            .fraction(0.02),
    );
    api.inject(
        Fault::new(FaultKind::ApplyThenDrop)
            .verb(Verb::Patch)
            .fraction(0.02),
    );
    api.inject(
        Fault::new(FaultKind::Status(503))
            .verb(Verb::Get)
            .fraction(0.05),
    );

    // Another writer, like `kubectl label`, keeps changing the pod: a label the selector looks
    // at, the count label's spelling (same count), and the count itself (+1, counted here).
    let done = Arc::new(AtomicBool::new(false));
    let editor = {
        let api = api.clone();
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let (mut edits, mut added) = (0u64, 0i64);
            while !done.load(Ordering::SeqCst) {
                match edits % 3 {
                    0 => {
                        let tier = if edits % 2 == 0 { "b" } else { "a" };
                        api.set_label(NS, "busy", "tier", Some(tier));
                    }
                    1 => {
                        api.update_label(NS, "busy", "active-jobs", |value| {
                            Some(encode(decode(value) + 1))
                        });
                        added += 1;
                    }
                    _ => {
                        api.update_label(NS, "busy", "active-jobs", |value| {
                            value.map(|v| match v.strip_prefix("neg") {
                                Some(digits) => format!("neg0{digits}"),
                                None => format!("0{v}"),
                            })
                        });
                    }
                }
                edits += 1;
                thread::sleep(Duration::from_millis(20));
            }
            (edits, added)
        })
    };
    let mut tally = hammer(&[&tracker], "busy", 64, 1000);
    done.store(true, Ordering::SeqCst);
    let (edits, added) = editor.join().expect("editor");
    assert!(edits > 10, "the other writer ran ({edits} edits)");
    assert!(
        tally.increments + tally.decrements > 60_000,
        "nearly every call acknowledged: {tally:?}"
    );
    // The other writer's increments are in the label too.
    tally.increments += added;
    assert_exactly_once(&api, "busy", &tally);
}

#[test]
fn two_standalone_replicas_hammering_one_pod_lose_nothing() {
    let api = api();
    api.create_pod(NS, "shared", &[("app", "worker")]);
    let first = standalone(&api)
        .args(["--allow-negative", "--retry-timeout=60s"])
        .env("RUST_LOG", "info,request=warn")
        .start();
    let second = standalone(&api)
        .args(["--allow-negative", "--retry-timeout=60s"])
        .env("RUST_LOG", "info,request=warn")
        .start();
    let tally = hammer(&[&first, &second], "shared", 32, 300);
    assert_eq!(tally.unavailable + tally.unknown, 0, "{tally:?}");
    assert_exactly_once(&api, "shared", &tally);
}

#[test]
fn concurrent_calls_are_folded_into_few_writes_and_each_gets_its_own_count() {
    let api = api();
    api.create_pod(NS, "burst", &[]);
    let tracker = standalone(&api)
        .env("RUST_LOG", "info,request=warn")
        .start();
    tracker.wait_ready();
    assert_eq!(tracker.increment("pod_name=burst").count(), 1);
    api.reset_counts();
    api.inject(
        Fault::new(FaultKind::Latency(Duration::from_millis(20)))
            .verb(Verb::Patch)
            .always(),
    );
    let address = tracker.address;
    let counts: Vec<i64> = (0..32)
        .map(|_| {
            thread::spawn(move || {
                support::request(address, "POST", "/increment?pod_name=burst", &[]).count()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    let mut sorted = counts.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (2..=33).collect::<Vec<_>>(),
        "each caller got its own serial count"
    );
    assert_eq!(final_count(&api, "burst"), 33);
    let writes = api.requests().len();
    assert!(
        writes < 32,
        "32 concurrent calls folded into fewer writes, got {writes}"
    );
}

#[test]
fn every_connection_is_answered_while_the_other_connections_stay_open() {
    // Kept-alive HTTP clients (a Go or Python worker behind a Service) hold their connections
    // open between calls. Callers that connect at the same moment must each get an answer
    // without waiting for some other connection to close first (which here never happens
    // before all have answered: a caller left waiting would time out).
    const CALLERS: usize = 32;
    const ROUNDS: usize = 4;
    let api = api();
    api.create_pod(NS, "worker-1", &[]);
    let tracker = standalone(&api).start();
    let address = tracker.address;
    for round in 0..ROUNDS {
        let connected = Arc::new(Barrier::new(CALLERS));
        let answered = Arc::new(Barrier::new(CALLERS));
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (connected, answered) = (Arc::clone(&connected), Arc::clone(&answered));
                thread::spawn(move || {
                    connected.wait();
                    let answer = Connection::open(address)
                        .map_err(|e| format!("connect: {e}"))
                        .and_then(|mut connection| {
                            connection
                                .set_read_timeout(Duration::from_secs(20))
                                .map_err(|e| format!("timeout: {e}"))?;
                            let answer =
                                connection.send("POST", "/increment?pod_name=worker-1", &[]);
                            Ok((connection, answer))
                        });
                    // Every connection stays open until every caller has its answer.
                    answered.wait();
                    answer.and_then(|(_connection, answer)| answer)
                })
            })
            .collect();
        for caller in callers {
            let answer = caller.join().expect("caller thread");
            let answer = answer.unwrap_or_else(|e| panic!("round {round}: no answer: {e}"));
            assert_eq!(answer.status, 200, "round {round}: {answer:?}");
        }
    }
    assert_eq!(
        final_count(&api, "worker-1"),
        (CALLERS * ROUNDS) as i64,
        "every call counted once"
    );
}
