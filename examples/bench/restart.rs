//! The restart phase (issue #21): 16 clients send 300 `POST /increment` calls in all to one pod
//! and the API server is restarted mid-burst; per run, what the clients were answered, the label
//! at the end, how many stored increments no client was told about, what the tracker retried
//! (its `/metrics`) and how long the calls in flight during the restart took.
//!
//! The API server is the double with its restart fault ([`Double`]: the write in flight
//! committed and its answer lost, connections refused while down, then 401, 403 and 429 while
//! it warms up), or a real kube-apiserver killed and started again (`crate::real`). Each run
//! has a tracker of its own, started for it, so that its metrics are the run's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use kube_double::{Restart, Verb};

use crate::client::Conn;
use crate::cluster::{COUNT_LABEL, Cluster, NAMESPACE};
use crate::load::{self, Call, Endpoint};
use crate::report::Target;
use crate::scenario::percentile;
use crate::tracker::{Mode, Tracker};

/// The load: 16 clients, 300 increments in all.
pub(crate) const CLIENTS: usize = 16;
pub(crate) const CALLS: usize = 300;

/// The double's restart: down this long (connections refused), then 401 (the authenticator
/// warming up), 403 (the RBAC caches not synced: what the issue saw, "a few seconds"; the
/// README's 2 to 5 s) and 429 with `Retry-After: 1` (API Priority and Fairness) for these
/// lengths. Together well within the tracker's `--retry-timeout` (10 s by default).
const DOWN: Duration = Duration::from_millis(300);
const UNAUTHORIZED: Duration = Duration::from_millis(200);
const FORBIDDEN: Duration = Duration::from_secs(2);
const THROTTLED: Duration = Duration::from_millis(500);

/// The longest a restart, a warm-up call or a burst may take before the run is abandoned.
const PATIENCE: Duration = Duration::from_secs(120);

/// The pods of the double's restart phase: one per mode, apart from every other phase's.
pub(crate) const SIDECAR_POD: &str = "worker-restart-sidecar";
const STANDALONE_POD: &str = "worker-restart-standalone";

/// How the double's restart is described in the report.
pub(crate) fn double_fault() -> String {
    format!(
        "at the next label PATCH (committed, its answer lost); down {} ms (connections \
         refused); then 401 for {} ms, 403 (RBAC caches not synced) for {} ms, 429 with \
         `Retry-After: 1` for {} ms",
        DOWN.as_millis(),
        UNAUTHORIZED.as_millis(),
        FORBIDDEN.as_millis(),
        THROTTLED.as_millis()
    )
}

/// An API server that can be restarted, and a tracker in front of it.
pub(crate) trait Server {
    /// Starts a tracker for one run (standalone, or the sidecar of `pods[0]`).
    fn start_tracker(&self, sidecar: bool) -> Result<Tracker, String>;
    /// Removes the count label of `pod`.
    fn clear(&self, pod: &str) -> Result<(), String>;
    /// The count label of `pod`, as stored.
    fn label(&self, pod: &str) -> Result<Option<String>, String>;
    /// Restarts the API server; returns once it answers normally again.
    fn restart(&self) -> Result<(), String>;
}

/// One configuration measured over several runs.
pub(crate) struct Variant {
    /// The table's title.
    pub name: String,
    pub sidecar: bool,
    /// The pods the clients call for, client `n` for `pods[n % pods.len()]`.
    pub pods: Vec<String>,
    pub clients: usize,
    pub calls: usize,
    pub runs: usize,
}

/// One run's results for one pod.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodResult {
    pub acknowledged: i64,
    pub unknown: i64,
    pub label: Option<String>,
    /// The label's count (absent: 0); `None` if it is not a count.
    pub stored: Option<i64>,
}

impl PodResult {
    /// Stored increments no caller was told about: the label minus the 200s.
    pub(crate) fn unacknowledged(&self) -> Option<i64> {
        Some(self.stored? - self.acknowledged)
    }

    /// Whether that is within [0, the 504s]: every 200 stored, and a store no caller heard of
    /// only behind a 504 ("may or may not have been stored").
    pub(crate) fn exact(&self) -> bool {
        self.unacknowledged()
            .is_some_and(|n| (0..=self.unknown).contains(&n))
    }
}

/// One run.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// Answers by status; `None`: failed on the wire.
    pub answers: BTreeMap<Option<u16>, usize>,
    /// The first body of each status other than 200.
    pub first_bodies: BTreeMap<Option<u16>, String>,
    pub pods: Vec<PodResult>,
    /// From the tracker's `/metrics`; a series it never wrote counts 0 (the previous
    /// tracker had no `recovering` or `throttled` reason at all).
    pub recovering: f64,
    pub throttled: f64,
    pub lost_stored: f64,
    pub lost_not_stored: f64,
    /// The API answers the tracker got other than success, by outcome (its
    /// `api_requests_total`): `403×3 error×2`.
    pub api_failures: String,
    /// Calls in flight at some moment of the restart (from asking for it to answering
    /// normally again), and their latencies, sorted.
    pub during: Vec<Duration>,
    /// From asking for the restart to the server answering normally again.
    pub restart_took: Duration,
    /// The whole burst.
    pub burst_took: Duration,
}

impl Row {
    fn count(&self, status: u16) -> usize {
        self.answers.get(&Some(status)).copied().unwrap_or(0)
    }

    /// Answers other than 200, 502, 503 and 504 (failures on the wire included).
    fn others(&self) -> Vec<(Option<u16>, usize)> {
        self.answers
            .iter()
            .filter(|(status, _)| !matches!(status, Some(200 | 502 | 503 | 504)))
            .map(|(status, n)| (*status, *n))
            .collect()
    }

    fn calls(&self) -> usize {
        self.answers.values().sum()
    }
}

/// A variant's runs.
pub(crate) struct Table {
    pub name: String,
    /// What the API server was and how it was restarted.
    pub server: String,
    pub binary: PathBuf,
    pub variant_clients: usize,
    pub variant_calls: usize,
    pub rows: Vec<Row>,
}

/// The double, set up for the restart phase: its own instance, so that no other phase sees
/// its restarts.
pub(crate) struct Double<'a> {
    pub cluster: Cluster,
    pub binary: &'a Path,
}

impl Double<'_> {
    pub(crate) fn start(
        binary: &Path,
        write_latency: Duration,
        read_latency: Duration,
    ) -> Double<'_> {
        let cluster = Cluster::start(write_latency, read_latency, SIDECAR_POD);
        cluster.create_pod(SIDECAR_POD);
        cluster.create_pod(STANDALONE_POD);
        Double { cluster, binary }
    }

    /// The two variants of the double: the sidecar and the standalone service, one pod each.
    pub(crate) fn variants(&self, clients: usize, calls: usize, runs: usize) -> Vec<Variant> {
        [(true, SIDECAR_POD), (false, STANDALONE_POD)]
            .into_iter()
            .map(|(sidecar, pod)| Variant {
                name: format!(
                    "API double, {}, one pod",
                    if sidecar { "sidecar" } else { "standalone" }
                ),
                sidecar,
                pods: vec![pod.to_owned()],
                clients,
                calls,
                runs,
            })
            .collect()
    }
}

impl Server for Double<'_> {
    fn start_tracker(&self, sidecar: bool) -> Result<Tracker, String> {
        let mode = if sidecar {
            Mode::Sidecar {
                pod: SIDECAR_POD.into(),
            }
        } else {
            Mode::Standalone
        };
        Tracker::spawn(self.binary, &mode, &self.cluster.api.url())
    }

    fn clear(&self, pod: &str) -> Result<(), String> {
        self.cluster
            .api
            .set_label(NAMESPACE, pod, COUNT_LABEL, None);
        Ok(())
    }

    fn label(&self, pod: &str) -> Result<Option<String>, String> {
        Ok(self.cluster.count_label(pod))
    }

    fn restart(&self) -> Result<(), String> {
        self.cluster.api.restart(
            Restart::new()
                // A label write takes the cut, not an event.
                .verb(Verb::Patch)
                .down_for(DOWN)
                .unauthorized_for(UNAUTHORIZED)
                .forbidden_for(FORBIDDEN)
                .throttled_for(THROTTLED, 1),
        );
        if self.cluster.api.wait_restarted(PATIENCE) {
            Ok(())
        } else {
            Err(format!(
                "the double's restart did not end within {} s (no label write came to take its cut?)",
                PATIENCE.as_secs()
            ))
        }
    }
}

/// Runs a variant `variant.runs` times against `server`.
pub(crate) fn measure(
    server: &dyn Server,
    variant: &Variant,
    description: &str,
    binary: &Path,
) -> Result<Table, String> {
    let mut rows = Vec::with_capacity(variant.runs);
    for run in 1..=variant.runs {
        eprintln!("bench: restart, {}: run {run}", variant.name);
        // Before the tracker starts, so that the view it reads first is current.
        for pod in &variant.pods {
            server.clear(pod)?;
        }
        let tracker = server.start_tracker(variant.sidecar)?;
        let row = one_run(server, variant, &tracker).map_err(|e| {
            format!(
                "restart, {}, run {run}: {e}\n--- tracker log ---\n{}",
                variant.name,
                tracker.log_tail()
            )
        });
        tracker.stop();
        rows.push(row?);
    }
    Ok(Table {
        name: variant.name.clone(),
        server: description.to_owned(),
        binary: binary.to_path_buf(),
        variant_clients: variant.clients,
        variant_calls: variant.calls,
        rows,
    })
}

/// Where a client's calls go.
fn endpoint(tracker: &Tracker, variant: &Variant, pod: &str) -> Endpoint {
    Endpoint {
        address: tracker.address,
        query: if variant.sidecar {
            String::new()
        } else {
            format!("?pod_name={pod}")
        },
    }
}

/// A call and when it was sent.
struct Timed {
    pod: usize,
    sent: Instant,
    call: Call,
}

fn one_run(server: &dyn Server, variant: &Variant, tracker: &Tracker) -> Result<Row, String> {
    tracker.wait_ready()?;
    for pod in &variant.pods {
        warm_up(&endpoint(tracker, variant, pod))?;
        if let Some(label) = server.label(pod)? {
            return Err(format!(
                "pod {pod}: the label is {label:?} after the warm-up, not absent"
            ));
        }
    }

    let answered = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(variant.clients + 1));
    let clients: Vec<_> = (0..variant.clients)
        .map(|n| {
            let pod = n % variant.pods.len();
            let endpoint = endpoint(tracker, variant, &variant.pods[pod]);
            let mine =
                variant.calls / variant.clients + usize::from(n < variant.calls % variant.clients);
            let (answered, start) = (Arc::clone(&answered), Arc::clone(&start));
            thread::Builder::new()
                .name(format!("restart-client-{n}"))
                .spawn(move || {
                    let mut conn = Conn::new(endpoint.address);
                    start.wait();
                    (0..mine)
                        .map(|_| {
                            let sent = Instant::now();
                            let call = load::call(&mut conn, &endpoint, 1, false);
                            answered.fetch_add(1, Ordering::Relaxed);
                            Timed { pod, sent, call }
                        })
                        .collect::<Vec<Timed>>()
                })
                .map_err(|e| format!("cannot start a client thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    start.wait();
    let burst_started = Instant::now();
    // Mid-burst: once half the calls have been answered.
    let half = variant.calls / 2;
    let restarted = loop {
        let done = answered.load(Ordering::Relaxed);
        if done >= variant.calls {
            break Err(format!(
                "the burst ended before the restart ({done} calls answered)"
            ));
        }
        if done >= half {
            let asked = Instant::now();
            break server.restart().map(|()| (asked, Instant::now()));
        }
        if burst_started.elapsed() > PATIENCE {
            break Err(format!(
                "only {done} of {} calls answered after {} s",
                variant.calls,
                PATIENCE.as_secs()
            ));
        }
        thread::sleep(Duration::from_micros(200));
    };
    let mut calls = Vec::with_capacity(variant.calls);
    for client in clients {
        calls.extend(
            client
                .join()
                .map_err(|_| "a client thread panicked".to_string())?,
        );
    }
    let burst_took = burst_started.elapsed();
    let (asked, back) = restarted?;

    let mut answers = BTreeMap::new();
    let mut first_bodies = BTreeMap::new();
    let mut pods = vec![PodResult::default(); variant.pods.len()];
    let mut during = Vec::new();
    for timed in &calls {
        let status = timed.call.status;
        *answers.entry(status).or_default() += 1;
        if status != Some(200) {
            first_bodies
                .entry(status)
                .or_insert_with(|| timed.call.error.clone().unwrap_or_default());
        }
        match status {
            Some(200) => pods[timed.pod].acknowledged += 1,
            Some(504) => pods[timed.pod].unknown += 1,
            _ => {}
        }
        if timed.sent <= back && timed.sent + timed.call.latency >= asked {
            during.push(timed.call.latency);
        }
    }
    during.sort();
    for (result, pod) in pods.iter_mut().zip(&variant.pods) {
        result.label = server.label(pod)?;
        result.stored = match &result.label {
            None => Some(0),
            Some(text) => text.parse().ok(),
        };
    }
    let metrics = tracker.metrics()?;
    let series =
        |name: &str| sample(&metrics, &format!("pod_webhook_tracker_{name}")).unwrap_or(0.0);
    Ok(Row {
        answers,
        first_bodies,
        pods,
        recovering: series("write_retries_total{reason=\"recovering\"}"),
        throttled: series("write_retries_total{reason=\"throttled\"}"),
        lost_stored: series("lost_answers_total{stored=\"true\"}"),
        lost_not_stored: series("lost_answers_total{stored=\"false\"}"),
        api_failures: api_failures(&metrics),
        during,
        restart_took: back - asked,
        burst_took,
    })
}

/// One job (increment, decrement) answered 200 twice: the tracker has been allowed to read
/// and patch the pod before the restart, as a running tracker has (a restarted server's 403
/// is retried only for a kind of request allowed before). Retried while the rights are not
/// yet in force on a real server.
fn warm_up(endpoint: &Endpoint) -> Result<(), String> {
    let started = Instant::now();
    let mut conn = Conn::new(endpoint.address);
    loop {
        let increment = load::call(&mut conn, endpoint, 1, false);
        if increment.status == Some(200) {
            let decrement = load::call(&mut conn, endpoint, -1, false);
            return match decrement.status {
                Some(200) => Ok(()),
                _ => Err(format!(
                    "the warm-up's decrement failed: {}",
                    decrement.error.unwrap_or_default()
                )),
            };
        }
        if started.elapsed() > PATIENCE {
            return Err(format!(
                "the warm-up's increment kept failing: {}",
                increment.error.unwrap_or_default()
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The value of one series (`name{labels}`, exactly as written) of a `/metrics` page.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `403×3 error×2`: the tracker's API requests that did not succeed, by outcome, summed over
/// verbs; `-` if none.
fn api_failures(metrics: &str) -> String {
    let mut by_outcome = BTreeMap::<String, f64>::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("pod_webhook_tracker_api_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let outcome = labels
            .split(',')
            .find_map(|label| label.strip_prefix("outcome=\""))
            .map(|v| v.trim_end_matches('"'));
        let (Some(outcome), Ok(value)) = (outcome, value.trim().parse::<f64>()) else {
            continue;
        };
        if outcome != "ok" && value > 0.0 {
            *by_outcome.entry(outcome.to_owned()).or_default() += value;
        }
    }
    if by_outcome.is_empty() {
        return "-".into();
    }
    by_outcome
        .iter()
        .map(|(outcome, n)| format!("{outcome}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn status_text(status: Option<u16>) -> String {
    status.map_or("io".into(), |s| s.to_string())
}

/// The tables, as Markdown.
pub(crate) fn print(tables: &[Table]) {
    if tables.is_empty() {
        return;
    }
    println!("\n## An API server restart mid-burst (#21)");
    for table in tables {
        println!(
            "\n### {}: {} clients, {} increments in all\n",
            table.name, table.variant_clients, table.variant_calls
        );
        println!("- API server: {}", table.server);
        println!("- tracker: {}", table.binary.display());
        println!(
            "\n| run | 200 | 502 | 503 | 504 | other | label at the end | stored but not acknowledged | recovering retries | throttled retries | lost answers: stored / not | API failures the tracker saw | calls during the restart | their p99 ms | max ms | restart took ms | burst took ms |"
        );
        println!(
            "| ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for (n, row) in table.rows.iter().enumerate() {
            let others = row.others();
            let other = if others.is_empty() {
                "0".to_owned()
            } else {
                others
                    .iter()
                    .map(|(status, n)| format!("{}×{n}", status_text(*status)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let labels = row
                .pods
                .iter()
                .map(|pod| {
                    pod.label
                        .as_deref()
                        .map_or("(absent)".into(), |v| format!("`{v}`"))
                })
                .collect::<Vec<_>>()
                .join(" ");
            let unacknowledged: Vec<String> = row
                .pods
                .iter()
                .map(|pod| {
                    let text = pod.unacknowledged().map_or("?".into(), |n| n.to_string());
                    if pod.exact() {
                        text
                    } else {
                        format!("**{text}**")
                    }
                })
                .collect();
            println!(
                "| {} | {} | {} | {} | {} | {other} | {labels} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} |",
                n + 1,
                row.count(200),
                row.count(502),
                row.count(503),
                row.count(504),
                unacknowledged.join(" "),
                row.recovering,
                row.throttled,
                row.lost_stored,
                row.lost_not_stored,
                row.api_failures,
                row.during.len(),
                ms(percentile(&row.during, 99.0)),
                ms(percentile(&row.during, 100.0)),
                ms(row.restart_took),
                ms(row.burst_took),
            );
        }
        let mut firsts = BTreeMap::new();
        for row in &table.rows {
            for (status, body) in &row.first_bodies {
                firsts.entry(*status).or_insert(body);
            }
        }
        for (status, body) in firsts {
            println!(
                "\nFirst {} answer: `{}`",
                status_text(status),
                body.trim().replace('`', "'")
            );
        }
    }
}

/// The phase's targets: no call answered 502 or 500 or cut, every 200 stored and no other
/// increment stored but behind a 504, and the restart met the burst.
pub(crate) fn targets(tables: &[Table]) -> Vec<Target> {
    let mut targets = Vec::new();
    for table in tables {
        let calls: usize = table.rows.iter().map(Row::calls).sum();
        let failed = |status: Option<u16>| -> usize {
            table
                .rows
                .iter()
                .map(|row| row.answers.get(&status).copied().unwrap_or(0))
                .sum()
        };
        let (bad_gateway, server_error, wire) =
            (failed(Some(502)), failed(Some(500)), failed(None));
        targets.push(Target {
            what: format!(
                "restart, {}: failed answers ({} runs)",
                table.name,
                table.rows.len()
            ),
            measured: format!(
                "502×{bad_gateway}, 500×{server_error}, cut on the wire ×{wire} of {calls} calls"
            ),
            limit: "none (200, 503 or 504 only)".into(),
            met: bad_gateway + server_error + wire == 0,
        });
        let per_run: Vec<String> = table
            .rows
            .iter()
            .map(|row| {
                row.pods
                    .iter()
                    .map(|pod| {
                        format!(
                            "{} (504s: {})",
                            pod.unacknowledged().map_or("?".into(), |n| n.to_string()),
                            pod.unknown
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        targets.push(Target {
            what: format!(
                "restart, {}: stored but not acknowledged, per run and pod",
                table.name
            ),
            measured: per_run.join("; "),
            limit: "within [0, the pod's 504s]".into(),
            met: table
                .rows
                .iter()
                .all(|row| row.pods.iter().all(PodResult::exact)),
        });
        let met_burst: Vec<String> = table
            .rows
            .iter()
            .map(|row| row.during.len().to_string())
            .collect();
        targets.push(Target {
            what: format!(
                "restart, {}: calls in flight during the restart, per run",
                table.name
            ),
            measured: met_burst.join(", "),
            limit: "≥ 1 in every run (the restart came mid-burst)".into(),
            met: table.rows.iter().all(|row| !row.during.is_empty()),
        });
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# TYPE pod_webhook_tracker_api_requests counter
pod_webhook_tracker_api_requests_total{verb=\"patch\",outcome=\"ok\"} 20
pod_webhook_tracker_api_requests_total{verb=\"patch\",outcome=\"403\"} 2
pod_webhook_tracker_api_requests_total{verb=\"get\",outcome=\"403\"} 1
pod_webhook_tracker_api_requests_total{verb=\"patch\",outcome=\"error\"} 4
pod_webhook_tracker_write_retries_total{reason=\"recovering\"} 3
pod_webhook_tracker_lost_answers_total{stored=\"true\"} 1
";

    #[test]
    fn a_series_is_read_by_its_whole_name_and_labels() {
        let retries = "pod_webhook_tracker_write_retries_total{reason=\"recovering\"}";
        assert_eq!(sample(METRICS, retries), Some(3.0));
        let throttled = "pod_webhook_tracker_write_retries_total{reason=\"throttled\"}";
        assert_eq!(sample(METRICS, throttled), None);
    }

    #[test]
    fn api_failures_are_summed_over_verbs_by_outcome() {
        assert_eq!(api_failures(METRICS), "403×3 error×4");
        assert_eq!(api_failures(""), "-");
    }

    #[test]
    fn a_store_no_caller_heard_of_is_allowed_only_behind_a_504() {
        let pod = |acknowledged, unknown, stored| PodResult {
            acknowledged,
            unknown,
            label: None,
            stored: Some(stored),
        };
        assert!(pod(150, 0, 150).exact());
        assert!(pod(150, 2, 151).exact());
        assert!(!pod(150, 0, 151).exact(), "stored, answered 502");
        assert!(!pod(150, 3, 149).exact(), "a 200 not stored");
        let unreadable = PodResult {
            stored: None,
            ..pod(1, 0, 0)
        };
        assert!(!unreadable.exact());
    }
}
