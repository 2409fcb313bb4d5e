//! After a batch: each caller's answer, what was released, and the bookkeeping of a stored
//! batch (status, the count metric, busy/idle and release events).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use crate::api::ApiFailure;
use crate::core::durations;
use crate::core::jobs::Job;
use crate::core::pod::PodRef;
use crate::error::Result;

use super::Inner;
use super::slots::Stored;

/// A batch's outcome once stored: each caller's answer, and the count before and after.
pub(super) struct Settled {
    pub(super) answers: Vec<Result<i64>>,
    pub(super) before: i64,
    pub(super) after: i64,
    /// Jobs released without a call: past their deadline, or their container restarted.
    pub(super) released: Vec<Released>,
}

/// One job released without a call, and why.
pub(super) struct Released {
    pub(super) id: String,
    pub(super) job: Job,
    /// `None`: it passed its deadline; `Some((container, ended))`: it started before that
    /// container's previous instance ended (Unix seconds).
    pub(super) restart: Option<(String, u64)>,
}

/// Bookkeeping after a stored batch: status, the count metric, and busy/idle events (about the
/// pod `uid`, as stored).
pub(super) fn stored(
    inner: &Arc<Inner>,
    pod: &PodRef,
    uid: Option<String>,
    settled: &Settled,
    jobs: BTreeMap<String, Job>,
) {
    inner.client.metrics().set_count(pod, settled.after);
    inner.pods().record(
        pod,
        Stored {
            count: settled.after,
            updated: SystemTime::now(),
            jobs,
        },
    );
    inner.stored_writes.notify_waiters();
    let time = durations::rfc3339;
    for Released { id, job, restart } in &settled.released {
        let started = time(job.started);
        let (reason, message) = match restart {
            None => {
                let deadline = job
                    .deadline
                    .map_or_else(String::new, |d| format!(", deadline {}", time(d)));
                (
                    "JobExpired",
                    format!(
                        "job {id} released: it passed its deadline (started {started}{deadline})"
                    ),
                )
            }
            Some((container, ended)) => (
                "JobReleased",
                format!(
                    "job {id} released: container {container} restarted (job started {started}, \
                     previous container ended {})",
                    time(*ended)
                ),
            ),
        };
        log::info!("pod {pod}: {message}");
        inner.client.metrics().job_released(if restart.is_some() {
            "restart"
        } else {
            "expired"
        });
        record_event(inner, pod, uid.clone(), reason, message);
    }
    let event = match (settled.before, settled.after) {
        (0, after) if after > 0 => Some((
            "Busy",
            format!("{after} job(s) running: evictions are refused until they end"),
        )),
        (before, 0) if before > 0 => {
            Some(("Idle", "no job running: the pod can be evicted".to_owned()))
        }
        _ => None,
    };
    if let Some((reason, message)) = event {
        record_event(inner, pod, uid, reason, message);
    }
}

/// Records a Kubernetes Event on the pod when events are on (and allowed). `uid` names which
/// pod of that name it is: `kubectl describe pod` finds events by it.
pub(super) fn record_event(
    inner: &Arc<Inner>,
    pod: &PodRef,
    uid: Option<String>,
    reason: &'static str,
    message: String,
) {
    if inner.settings.events && inner.events_allowed.load(Ordering::Relaxed) {
        // Off the answer's path: a slow or refused event never delays a job.
        let inner = Arc::clone(inner);
        let pod = pod.clone();
        inner.runtime.clone().spawn(async move {
            match inner
                .client
                .create_event(&pod, uid.as_deref(), reason, &message)
                .await
            {
                Ok(()) => {}
                Err(ApiFailure::Refused(why)) => {
                    if inner.events_allowed.swap(false, Ordering::Relaxed) {
                        log::warn!("events are off: the API server refused to create one ({why}); grant create on events");
                    }
                }
                Err(other) => log::warn!("pod {pod}: event {reason} not recorded: {other}"),
            }
        });
    }
}
