//! A fleet: one standalone tracker in front of many pods (default 10,000), every pod counted once
//! (a job: an increment and a decrement) by callers spread over the fleet, and the same calls by
//! the same callers on one pod, side by side, with 32 and 256 callers. Shows what each tracked
//! pod costs in resident memory, what is left once the tracker has forgotten the idle pods, and
//! what one sweep of the fleet costs.

use std::thread;
use std::time::{Duration, Instant};

use kube_double::{NewPod, Rule, Subject, Verb};

use crate::client::Conn;
use crate::cluster::{APP_LABEL, Cluster, NAMESPACE};
use crate::load::{self, Endpoint};
use crate::tracker::{Memory, Mode, Tracker};

/// The larger number of callers (the smaller one is `--concurrency`).
pub(crate) const MANY_CALLERS: usize = 256;

/// How long the fleet's tracker keeps an idle pod (`--forget-idle-pods-after`): longer than the
/// first load takes (so that every pod is still tracked at its end), short enough to wait for.
const FORGET_AFTER: &str = "20s";

/// The longest wait for the tracker to forget the fleet, or for the sweeps to run.
const PATIENCE: Duration = Duration::from_secs(60);

/// The sweeps measured.
const SWEEPS: f64 = 3.0;

/// One load: `calls` calls by `callers` callers, over the fleet or on one pod.
pub(crate) struct Run {
    pub callers: usize,
    pub one_pod: bool,
    pub calls: usize,
    pub failures: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

impl Run {
    pub(crate) fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What sweeping the fleet costs (`--sweep-interval`, default page size).
pub(crate) struct SweepCost {
    /// Pods each sweep listed.
    pub pods: f64,
    /// LIST requests per sweep.
    pub lists: f64,
    /// Time per sweep.
    pub seconds: f64,
    /// The sweeping tracker's peak RSS.
    pub peak: Memory,
}

/// What the fleet phase measured.
pub(crate) struct Fleet {
    pub pods: usize,
    pub runs: Vec<Run>,
    /// Ready, before any call.
    pub idle: Memory,
    /// Once every pod has been counted by the first load (every pod still tracked).
    pub after: Memory,
    /// Once the tracker has forgotten them (`--forget-idle-pods-after`).
    pub forgotten: Memory,
    /// Pods still tracked right after the first load (the `tracked_pods` metric).
    pub tracked: f64,
    pub sweep: SweepCost,
}

impl Fleet {
    /// Resident memory the tracked pods added, per pod, in bytes.
    pub(crate) fn per_pod_bytes(&self) -> f64 {
        let added = self.after.current_kib.saturating_sub(self.idle.current_kib);
        added as f64 * 1024.0 / self.pods.max(1) as f64
    }
}

fn name(i: usize) -> String {
    format!("fleet-{i:05}")
}

const ONE_POD: &str = "fleet-one";

/// Adds `pods` pods, runs the loads with `callers` and [`MANY_CALLERS`], and measures memory and
/// one sweep.
pub(crate) fn measure(
    binary: &std::path::Path,
    cluster: &Cluster,
    pods: usize,
    callers: usize,
) -> Result<Fleet, String> {
    for i in 0..pods {
        cluster.api.add_pod(
            NewPod::new(NAMESPACE, name(i))
                .label(APP_LABEL.0, APP_LABEL.1)
                .phase("Running"),
        );
    }
    cluster.create_pod(ONE_POD);
    let forget = ["--forget-idle-pods-after", FORGET_AFTER];
    let tracker = Tracker::spawn_with(binary, &Mode::Standalone, &cluster.api.url(), &forget)?;
    tracker.wait_ready()?;
    let idle = tracker.memory()?;
    let mut runs = vec![spread(&tracker, pods, callers, false)?];
    let after = tracker.memory()?;
    let tracked = tracker
        .metric("pod_webhook_tracker_tracked_pods")?
        .unwrap_or(f64::NAN);
    wait_for(&tracker, "pod_webhook_tracker_tracked_pods", |n| n == 0.0)?;
    let forgotten = tracker.memory()?;
    runs.push(spread(&tracker, pods, callers, true)?);
    tracker.stop();
    // A new tracker, so that the many callers' connections start from the same state.
    let tracker = Tracker::spawn_with(binary, &Mode::Standalone, &cluster.api.url(), &forget)?;
    tracker.wait_ready()?;
    runs.push(spread(&tracker, pods, MANY_CALLERS, false)?);
    runs.push(spread(&tracker, pods, MANY_CALLERS, true)?);
    tracker.stop();
    let sweep = sweep_cost(binary, cluster)?;
    Ok(Fleet {
        pods,
        runs,
        idle,
        after,
        forgotten,
        tracked,
        sweep,
    })
}

/// Counts each of `pods` pods once (or makes as many calls on one pod) with `callers` callers.
fn spread(tracker: &Tracker, pods: usize, callers: usize, one_pod: bool) -> Result<Run, String> {
    let address = tracker.address;
    let started = Instant::now();
    let callers = callers.max(1);
    let handles: Vec<_> = (0..callers)
        .map(|caller| {
            thread::spawn(move || {
                let mut conn = Conn::new(address);
                let mut calls = Vec::new();
                for i in (caller..pods).step_by(callers) {
                    let pod = if one_pod { ONE_POD.to_owned() } else { name(i) };
                    let endpoint = Endpoint {
                        address,
                        query: format!("?pod_name={pod}"),
                    };
                    let increment = load::call(&mut conn, &endpoint, 1, false);
                    let counted = increment.count.is_some();
                    calls.push(increment);
                    if counted {
                        calls.push(load::call(&mut conn, &endpoint, -1, false));
                    }
                }
                calls
            })
        })
        .collect();
    let mut calls = Vec::new();
    for handle in handles {
        calls.extend(
            handle
                .join()
                .map_err(|_| "a fleet caller panicked".to_owned())?,
        );
    }
    let elapsed = started.elapsed();
    let failures = calls.iter().filter(|c| c.count.is_none()).count();
    let mut latencies: Vec<Duration> = calls.iter().map(|c| c.latency).collect();
    latencies.sort();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(index).copied().unwrap_or_default()
    };
    Ok(Run {
        callers,
        one_pod,
        calls: calls.len(),
        failures,
        elapsed,
        p50: at(0.5),
        p99: at(0.99),
    })
}

/// Polls a metric of the tracker until `done` holds, within [`PATIENCE`].
fn wait_for(tracker: &Tracker, metric: &str, done: impl Fn(f64) -> bool) -> Result<f64, String> {
    let started = Instant::now();
    loop {
        if let Some(value) = tracker.metric(metric)?
            && done(value)
        {
            return Ok(value);
        }
        if started.elapsed() > PATIENCE {
            return Err(format!(
                "{metric} did not reach its goal within {} s",
                PATIENCE.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A tracker that sweeps every second: pods, LIST requests and time per sweep.
fn sweep_cost(binary: &std::path::Path, cluster: &Cluster) -> Result<SweepCost, String> {
    cluster.api.allow(
        Subject::user("tracker"),
        Rule::new(["list"], ["pods"]).namespace(NAMESPACE),
    );
    cluster.reset_usage();
    let flags = ["--sweep-interval", "1s"];
    let tracker = Tracker::spawn_with(binary, &Mode::Standalone, &cluster.api.url(), &flags)?;
    tracker.wait_ready()?;
    let count = "pod_webhook_tracker_sweep_duration_seconds_count";
    let sweeps = wait_for(&tracker, count, |n| n >= SWEEPS)?;
    // Read at once: the next sweep starts a second after this one ended.
    let lists = cluster.usage().requests(Verb::List) as f64;
    let seconds = tracker
        .metric("pod_webhook_tracker_sweep_duration_seconds_sum")?
        .unwrap_or(f64::NAN);
    let pods = tracker
        .metric("pod_webhook_tracker_sweep_pods_total")?
        .unwrap_or(f64::NAN);
    let peak = tracker.memory()?;
    tracker.stop();
    Ok(SweepCost {
        pods: pods / sweeps,
        lists: lists / sweeps,
        seconds: seconds / sweeps,
        peak,
    })
}
