//! A fleet: one standalone tracker in front of many pods (default 10,000), every pod counted once
//! (a job: an increment and a decrement) by callers spread over the fleet. Shows what each
//! tracked pod costs in resident memory, and the throughput when calls rarely share a pod.

use std::thread;
use std::time::{Duration, Instant};

use kube_double::NewPod;

use crate::client::Conn;
use crate::cluster::{APP_LABEL, Cluster, NAMESPACE};
use crate::load::{self, Endpoint};
use crate::tracker::{Memory, Mode, Tracker};

/// What the fleet phase measured.
pub(crate) struct Fleet {
    pub pods: usize,
    pub callers: usize,
    pub calls: usize,
    pub failures: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// Ready, before any call.
    pub idle: Memory,
    /// Once every pod has been counted (each pod's writer is still alive).
    pub after: Memory,
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

/// Adds `pods` pods, counts each once with `callers` callers, and reads the tracker's memory.
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
    let tracker = Tracker::spawn(binary, &Mode::Standalone, &cluster.api.url())?;
    tracker.wait_ready()?;
    let idle = tracker.memory()?;
    let address = tracker.address;
    let started = Instant::now();
    let callers = callers.max(1);
    let handles: Vec<_> = (0..callers)
        .map(|caller| {
            thread::spawn(move || {
                let mut conn = Conn::new(address);
                let mut calls = Vec::new();
                for i in (caller..pods).step_by(callers) {
                    let endpoint = Endpoint {
                        address,
                        query: format!("?pod_name={}", name(i)),
                    };
                    let increment = load::call(&mut conn, &endpoint, 1, false);
                    let counted = increment.count == Some(1);
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
    let after = tracker.memory()?;
    tracker.stop();
    let failures = calls.iter().filter(|c| c.count.is_none()).count();
    let mut latencies: Vec<Duration> = calls.iter().map(|c| c.latency).collect();
    latencies.sort();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(index).copied().unwrap_or_default()
    };
    Ok(Fleet {
        pods,
        callers,
        calls: calls.len(),
        failures,
        elapsed,
        p50: at(0.5),
        p99: at(0.99),
        idle,
        after,
    })
}
