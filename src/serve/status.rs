//! `GET /status`: what is tracked, the counts last stored, each busy pod's running jobs,
//! readiness and the last API error, as JSON. Bounded: it lists busy pods only, at most
//! [`MAX_LISTED`] of them, and counts the rest; `?pod=NAMESPACE/NAME` details one pod.

use crate::core::durations;
use crate::core::target::Targeting;
use crate::serve::app::App;

/// The keyed jobs of a pod for `/status`: id, start, deadline, age in seconds.
fn job_status(
    jobs: &std::collections::BTreeMap<String, crate::core::jobs::Job>,
) -> Vec<serde_json::Value> {
    let now = durations::unix_seconds(std::time::SystemTime::now());
    let time = durations::rfc3339;
    jobs.iter()
        .map(|(id, job)| {
            serde_json::json!({
                "id": id,
                "started": time(job.started),
                "ageSeconds": now.saturating_sub(job.started),
                "deadline": job.deadline.map(time),
            })
        })
        .collect()
}

/// The most pods `/status` lists (a few KB); the others are counted.
pub(crate) const MAX_LISTED: usize = 100;

/// `GET /status`: what is tracked, the counts last stored, readiness and the last API error;
/// with `pod`, that pod's entry only (whether busy or not).
pub(crate) fn status_json(app: &App, pod: Option<&str>) -> serde_json::Value {
    let time = durations::rfc3339_of;
    let sidecar = matches!(app.targeting, Targeting::Sidecar { .. });
    // `?pod=NAMESPACE/NAME`, split once rather than formatting every tracked pod's name.
    let wanted = pod.map(|pod| pod.split_once('/').unwrap_or(("", pod)));
    let census = app.tracker.status(|tracked, count| match wanted {
        Some((namespace, name)) => tracked.namespace == namespace && tracked.name == name,
        // A sidecar has one pod: always shown. A standalone service shows its busy pods.
        None => sidecar || count != 0,
    });
    let (tracked, busy, listed) = (census.tracked, census.busy, census.pods);
    let truncated = listed.len() > MAX_LISTED;
    let pods: Vec<_> = listed
        .into_iter()
        .take(MAX_LISTED)
        .map(|pod| {
            serde_json::json!({
                "pod": pod.pod.to_string(),
                "count": pod.count,
                "label": pod.label,
                "updated": time(pod.updated),
                "jobs": job_status(&pod.jobs),
            })
        })
        .collect();
    let (mode, own) = match &app.targeting {
        Targeting::Sidecar { own } => ("sidecar", Some(own.to_string())),
        Targeting::Standalone { .. } => ("standalone", None),
    };
    serde_json::json!({
        "mode": mode,
        "ownPod": own,
        "label": app.label,
        "ready": app.readiness.problem().is_none(),
        "notReadyReason": app.readiness.problem(),
        "trackedPods": tracked,
        "busyPods": busy,
        "pods": pods,
        "podsTruncated": truncated,
        "lastApiError": app.metrics.last_error().map(|e| serde_json::json!({"at": time(e.at), "message": e.message})),
    })
}
