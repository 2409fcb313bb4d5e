//! One measured phase: a load against one endpoint and one pod, with the API requests it
//! cost (counted by the double from a reset just before), the final label and the check that
//! every caller got its own serial count.

use std::time::Duration;

use crate::client::Conn;
use crate::cluster::{ApiUsage, Cluster};
use crate::load::{self, Call, Connections, Endpoint, Run};
use crate::serial;

/// A phase's results.
#[derive(Debug, Clone)]
pub(crate) struct Phase {
    pub name: String,
    pub run: Run,
    pub api: ApiUsage,
    /// The label as it should be (start + answered steps) and as stored.
    pub expected_label: Option<String>,
    pub final_label: Option<String>,
    /// The final count if the answers fit a serial order, else what is wrong.
    pub serial: Result<i64, String>,
}

impl Phase {
    pub(crate) fn calls(&self) -> usize {
        self.run.calls.len()
    }

    pub(crate) fn rate(&self) -> f64 {
        self.calls() as f64 / self.run.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Latencies, sorted.
    pub(crate) fn latencies(&self) -> Vec<Duration> {
        let mut latencies: Vec<Duration> = self.run.calls.iter().map(|c| c.latency).collect();
        latencies.sort();
        latencies
    }

    pub(crate) fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies(), p)
    }

    /// Calls not answered 2xx (failures on the wire included).
    pub(crate) fn non_2xx(&self) -> usize {
        self.run
            .calls
            .iter()
            .filter(|c| !matches!(c.status, Some(200..=299)))
            .count()
    }

    /// `500×197` style summary of the non-2xx answers, or `-`.
    pub(crate) fn failures(&self) -> String {
        let mut by_status = std::collections::BTreeMap::<String, usize>::new();
        for call in &self.run.calls {
            match call.status {
                Some(200..=299) => {}
                Some(status) => *by_status.entry(status.to_string()).or_default() += 1,
                None => *by_status.entry("io".into()).or_default() += 1,
            }
        }
        if by_status.is_empty() {
            return "-".into();
        }
        by_status
            .iter()
            .map(|(status, n)| format!("{status}×{n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The first failure's text, for the report.
    pub(crate) fn first_error(&self) -> Option<&str> {
        self.run.calls.iter().find_map(|c| c.error.as_deref())
    }

    pub(crate) fn api_per_call(&self) -> f64 {
        self.api.total() as f64 / self.calls().max(1) as f64
    }

    pub(crate) fn label_exact(&self) -> bool {
        self.expected_label == self.final_label
    }
}

/// The nearest-rank percentile of sorted samples (zero when there are none).
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The count a label value stands for (absent: 0).
fn count_of(label: Option<&str>) -> Result<i64, String> {
    label.map_or(Ok(0), |text| {
        text.parse()
            .map_err(|_| format!("the label holds {text:?}, not a count"))
    })
}

/// The label value a count is stored as (0: no label).
fn label_of(count: i64) -> Option<String> {
    (count != 0).then(|| count.to_string())
}

/// The first call for a pod (which may cost an extra read), then `extra` more calls that are
/// not measured either; returns the first call and what it cost the API.
pub(crate) fn warm_up(cluster: &Cluster, endpoint: &Endpoint, extra: usize) -> (Call, ApiUsage) {
    cluster.reset_usage();
    let mut conn = Conn::new(endpoint.address);
    let first = load::call(&mut conn, endpoint, 1, false);
    let usage = cluster.usage();
    for n in 0..extra {
        load::call(&mut conn, endpoint, if n % 2 == 0 { 1 } else { -1 }, false);
    }
    (first, usage)
}

/// Runs `jobs` jobs at `concurrency` against `endpoint`, which counts `pod`.
pub(crate) fn measure(
    cluster: &Cluster,
    name: String,
    endpoint: &Endpoint,
    pod: &str,
    jobs: usize,
    concurrency: usize,
    connections: Connections,
) -> Result<Phase, String> {
    let start = count_of(cluster.count_label(pod).as_deref())?;
    cluster.reset_usage();
    let run = load::run(endpoint, jobs, concurrency, connections)?;
    let api = cluster.usage();
    let final_label = cluster.count_label(pod);
    let answers: Vec<serial::Answer> = run
        .calls
        .iter()
        .filter_map(|c| Some((c.delta, c.count?)))
        .collect();
    let end = start + answers.iter().map(|(delta, _)| delta).sum::<i64>();
    Ok(Phase {
        name,
        serial: serial::check(start, &answers),
        expected_label: label_of(end),
        final_label,
        run,
        api,
    })
}
