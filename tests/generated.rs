//! Generated requests against the whole request path: a tracker started in-process (as the
//! demo does) in front of the API test double, fed query strings, header values, durations,
//! job ids and pods in every state. Whatever arrives, the answer has a documented status,
//! nothing is written for a 4xx, and every label the double holds stays a count.

mod support;

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use kube_double::ApiServer;
use pod_webhook_tracker::cli::{self, Command};
use pod_webhook_tracker::config::{Config, Environment};
use pod_webhook_tracker::core::{count, durations, jobs};
use pod_webhook_tracker::serve;
use proptest::prelude::*;
use support::{Connection, NS, TOKEN, api};

/// Every status the README's HTTP API table documents.
const DOCUMENTED: [u16; 11] = [200, 400, 403, 404, 405, 409, 414, 431, 502, 503, 504];

/// The pods the generated calls aim at: a clean one, one whose label is not a count, one whose
/// jobs annotation a user broke by hand, and one with a deadline past the year 9999.
const PODS: [&str; 4] = ["clean", "not-a-count", "broken-jobs", "far-deadline"];

struct World {
    api: ApiServer,
    tracker: SocketAddr,
}

/// One tracker and one double for the whole suite (starting them per case would dominate).
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let api = api();
        for pod in PODS {
            api.create_pod(NS, pod, &[]);
        }
        api.set_label(NS, "not-a-count", "active-jobs", Some("abc"));
        api.set_annotation(
            NS,
            "broken-jobs",
            "active-jobs-jobs",
            Some("{\"v\":1,\"jobs\":"),
        );
        api.set_annotation(
            NS,
            "far-deadline",
            "active-jobs-jobs",
            Some(r#"{"v":1,"jobs":{"a":{"s":1,"d":99999999999999}}}"#),
        );
        let args = [
            "serve".to_owned(),
            "--address=127.0.0.1:0".to_owned(),
            format!("--kube-server={}", api.url()),
            format!("--kube-token={TOKEN}"),
            format!("--namespace={NS}"),
        ];
        let args = cli::normalize(&args).expect("flags normalise");
        let Ok(cli::Cli {
            command: Command::Serve(serve_args),
        }) = cli::parse("pod-webhook-tracker", &args)
        else {
            panic!("flags parse as serve");
        };
        let config = Config::from_args(&serve_args, &Environment::default()).expect("valid");
        let running = serve::start(config).unwrap_or_else(|e| panic!("{}", e.message));
        let tracker = running.address().expect("an address");
        std::thread::spawn(move || running.wait());
        World { api, tracker }
    })
}

/// A parameter value: plausible, absurd, or arbitrary.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(PODS.to_vec()).prop_map(str::to_owned),
        Just("missing".to_owned()),
        Just(NS.to_owned()),
        "[a-z0-9-]{0,12}",
        "[0-9]{1,22}(ns|ms|s|m|h|d|w|M|y)?",
        Just("10000y".to_owned()),
        "%[0-9A-Fa-f]{2}[a-z%]{0,6}",
        "\\PC{0,12}",
    ]
}

/// A query string: mostly a plausible call (a pod, maybe a job and a lifetime), otherwise
/// known and unknown keys, repeats, and the odd malformed pair.
fn query() -> impl Strategy<Value = String> {
    // Mostly the clean pod, where calls succeed and write.
    let pod = prop::sample::select(vec![
        "clean",
        "clean",
        "clean",
        "clean",
        "not-a-count",
        "broken-jobs",
        "far-deadline",
    ]);
    let plausible = (
        pod,
        prop::option::weighted(0.7, "[a-z0-9]{1,3}"),
        prop_oneof![
            3 => Just(None),
            2 => "[1-9][0-9]{0,2}h".prop_map(Some),
            1 => Just(Some("10000y".to_owned())),
        ],
    )
        .prop_map(|(pod, job, ttl)| {
            let mut query = format!("pod_name={pod}");
            if let Some(job) = job {
                query.push_str(&format!("&job={job}"));
            }
            if let Some(ttl) = ttl {
                query.push_str(&format!("&ttl={ttl}"));
            }
            query
        });
    let key = prop_oneof![
        4 => prop::sample::select(vec!["pod_name", "namespace", "job", "ttl"]).prop_map(str::to_owned),
        1 => Just("timeout".to_owned()),
        1 => "[a-z_]{1,8}",
    ];
    let pair = prop_oneof![
        6 => (key, value()).prop_map(|(k, v)| {
            let v: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
            format!("{k}={v}")
        }),
        1 => "[=&%a-z]{0,6}",
    ];
    let chaos = prop::collection::vec(pair, 0..5).prop_map(|pairs| pairs.join("&"));
    prop_oneof![2 => plausible, 1 => chaos]
}

/// A request line and headers: routes, methods, a query, maybe a job key header.
fn request() -> impl Strategy<Value = (String, String, Vec<(String, String)>)> {
    // Not HEAD: its answer announces a body it does not carry, which the strict client reads.
    let method = prop_oneof![
        6 => Just("POST"),
        1 => prop::sample::select(vec!["GET", "PUT", "DELETE"]),
    ];
    let path = prop_oneof![
        8 => prop::sample::select(vec!["/increment", "/decrement", "/renew"]),
        1 => prop::sample::select(vec!["/status", "/healthz", "/nope"]),
    ];
    let header = prop_oneof![
        4 => Just(None),
        1 => "[A-Za-z0-9._:-]{0,70}".prop_map(Some),
        1 => "[ -~]{0,20}".prop_map(Some),
    ];
    let accept = prop::bool::ANY;
    (method, path, query(), header, accept).prop_map(|(method, path, query, header, accept)| {
        let mut headers = Vec::new();
        if let Some(key) = header {
            headers.push(("Idempotency-Key".to_owned(), key));
        }
        if accept {
            headers.push(("Accept".to_owned(), "application/json".to_owned()));
        }
        (method.to_owned(), format!("{path}?{query}"), headers)
    })
}

/// `/wait-idle` with timeouts that answer at once or are refused, never one that waits.
fn wait_idle_request() -> impl Strategy<Value = String> {
    let timeout = prop_oneof![
        Just("0".to_owned()),
        Just("0s".to_owned()),
        Just("2d".to_owned()),
        Just("10000y".to_owned()),
        "[a-z]{1,4}",
    ];
    (
        prop::sample::select(PODS.to_vec()),
        timeout,
        prop::bool::ANY,
    )
        .prop_map(|(pod, timeout, twice)| {
            let again = if twice { "&timeout=0" } else { "" };
            format!("/wait-idle?pod_name={pod}&timeout={timeout}{again}")
        })
}

/// Each pod's resource version, labels and annotations as the double holds them: a write
/// that stores anything changes the resource version (a patch of `test` operations alone, with
/// which the tracker confirms a count, stores nothing and changes none).
fn pods(api: &ApiServer) -> Vec<String> {
    PODS.iter()
        .map(|pod| {
            format!(
                "{:?} {:?} {:?}",
                api.resource_version(NS, pod),
                api.labels(NS, pod),
                api.annotations(NS, pod)
            )
        })
        .collect()
}

fn check(method: &str, target: &str, headers: &[(String, String)]) -> Result<(), TestCaseError> {
    // The two properties share the tracker: one request at a time, so that "nothing written"
    // is this request's own.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let world = world();
    let before = pods(&world.api);
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let mut connection = Connection::open(world.tracker).expect("connects");
    let answer = connection
        .send(method, target, &headers)
        .map_err(|e| TestCaseError::fail(format!("{method} {target}: {e}")))?;
    prop_assert!(
        DOCUMENTED.contains(&answer.status),
        "{method} {target}: {answer:?}"
    );
    if (400..500).contains(&answer.status) {
        prop_assert_eq!(
            pods(&world.api),
            before,
            "nothing stored for {} {}: {:?}",
            method,
            target,
            answer
        );
    }
    for pod in PODS {
        let labels = world.api.labels(NS, pod).unwrap_or_default();
        let value = labels.get("active-jobs").map(String::as_str);
        if pod != "not-a-count" {
            prop_assert!(count::decode(value).is_ok(), "{pod}: {value:?}");
        }
        let annotations = world.api.annotations(NS, pod).unwrap_or_default();
        if pod == "clean" {
            let stored = annotations.get("active-jobs-jobs").map(String::as_str);
            prop_assert!(jobs::decode(stored).is_ok(), "{pod}: {stored:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_request_gets_a_documented_status_and_a_refusal_writes_nothing(
        (method, target, headers) in request()
    ) {
        // A job that expires while the suite runs is released by a write of the tracker's
        // own, which would look like a write for a refused call: lifetimes stay long.
        let query = target.split_once('?').map_or("", |(_, query)| query);
        let short = form_urlencoded::parse(query.as_bytes()).any(|(key, value)| {
            key == "ttl" && durations::parse(&value).is_ok_and(|ttl| ttl < Duration::from_secs(600))
        });
        prop_assume!(!short);
        check(&method, &target, &headers)?;
    }

    #[test]
    fn any_wait_idle_request_answers_at_once_with_a_documented_status(target in wait_idle_request()) {
        check("GET", &target, &[])?;
    }
}
