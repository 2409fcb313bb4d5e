//! `GET /status`: what is tracked, the counts last stored, each pod's running jobs, readiness
//! and the last API error, as JSON.

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

/// `GET /status`: what is tracked, the counts last stored, readiness and the last API error.
pub(crate) fn status_json(app: &App) -> serde_json::Value {
    let time = durations::rfc3339_of;
    let pods: Vec<_> = app
        .tracker
        .status()
        .into_iter()
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
        "pods": pods,
        "lastApiError": app.metrics.last_error().map(|e| serde_json::json!({"at": time(e.at), "message": e.message})),
    })
}
