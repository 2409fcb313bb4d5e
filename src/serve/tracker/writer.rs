//! A pod's writer: a task that runs while its pod's slot has work (calls, or a round asked for
//! by a timer or the sweep), folds queued calls into batches, and parks with the pod's next
//! timer when the work is done.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::core::durations;
use crate::core::jobs::{self, JobCall};
use crate::core::pod::PodRef;
use crate::core::view::{KeptView, PodView};
use crate::error::Error;

use super::batch::unix_now;
use super::bookkeeping::stored;
use super::rounds::{Budget, settle};
use super::slots::{Resumed, Round, Timer, Work};
use super::trim::give_back_free_memory;
use super::{Call, EXPIRY_RETRY, Inner, MAX_BATCH, Settings};

/// How long until the earliest deadline of a keyed job on the kept view, if any.
pub(super) fn until_next_deadline(
    settings: &Settings,
    known: Option<&PodView>,
) -> Option<Duration> {
    let view = known?;
    let state = jobs::decode(view.annotation(&settings.keys.jobs_annotation)).ok()?;
    let deadline = state.next_deadline()?;
    // One second late, so the deadline has certainly passed by the writer's own clock.
    Some(Duration::from_secs(
        deadline.saturating_sub(unix_now()).saturating_add(1),
    ))
}

/// How long until the writer should read its pod again, if it should: while the kept view
/// shows jobs (started ones can be released by a restart) and a recheck interval is set.
pub(super) fn until_recheck(settings: &Settings, known: Option<&PodView>) -> Option<Duration> {
    let every = settings.recheck?;
    let has_jobs = match known {
        Some(view) => jobs::decode(view.annotation(&settings.keys.jobs_annotation))
            .is_ok_and(|state| !state.jobs.is_empty()),
        // Not read yet (or dropped after a failure): reading it is how to find out.
        None => false,
    };
    has_jobs.then_some(every)
}

/// The slot's next timer once its writer parks: the earliest deadline or recheck (not before
/// `expiry_not_before`), or else the end of the idle time.
pub(super) fn next_timer(
    settings: &Settings,
    known: Option<&PodView>,
    expiry_not_before: Option<Instant>,
    now: Instant,
) -> Option<(Instant, Timer)> {
    let deadline = until_next_deadline(settings, known).map(|wait| (wait, Timer::Deadline));
    let recheck = until_recheck(settings, known).map(|wait| (wait, Timer::Recheck));
    let mut timer = match (deadline, recheck) {
        (Some(deadline), Some(recheck)) => Some(if recheck.0 < deadline.0 {
            recheck
        } else {
            deadline
        }),
        (one, other) => one.or(other),
    };
    if let (Some((wait, _)), Some(not_before)) = (timer.as_mut(), expiry_not_before) {
        *wait = (*wait).max(not_before.saturating_duration_since(now));
    }
    // A pod with jobs still to release does not go idle: its writer is the sweep of its pod.
    timer
        .or_else(|| settings.idle_writer.map(|idle| (idle, Timer::Idle)))
        .map(|(wait, timer)| (durations::instant_after(now, wait), timer))
}

/// Ends a writer whose task unwinds (a bug) or is cancelled: its pod's slot and queued calls
/// are dropped, so those callers learn it failed and the next call starts afresh.
struct Running<'a> {
    inner: &'a Inner,
    pod: &'a PodRef,
    parked: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.parked {
            self.inner.pods().remove(self.pod);
            self.inner.client.metrics().forget(self.pod);
        }
    }
}

/// A pod's writer: runs while its slot has work, then parks and ends.
pub(super) async fn run_writer(inner: Arc<Inner>, pod: PodRef) {
    let mut running = Running {
        inner: &inner,
        pod: &pod,
        parked: false,
    };
    // A primed view is only a starting point: guards catch it if it is stale, and refusals are
    // decided on fresh reads only.
    let Resumed {
        known,
        mut expiry_not_before,
    } = inner.pods().resume(&pod);
    let mut known = known.map(KeptView::into_view);
    let mut gone = false;
    loop {
        let work = {
            let mut pods = inner.pods();
            match pods.next_work(&pod, MAX_BATCH) {
                Some(work) => work,
                None => {
                    // A standalone service keeps nothing of a pod that is gone, nor of one it
                    // never stored anything for and holds no view of (every call refused or
                    // failed: a caller naming pods that do not exist, or that the tracker may
                    // not touch, must not make it grow).
                    let worthless = known.is_none() && !pods.has_stored(&pod);
                    let forget = inner.settings.idle_writer.is_some() && (gone || worthless);
                    let next = next_timer(
                        &inner.settings,
                        known.as_ref(),
                        expiry_not_before,
                        Instant::now(),
                    );
                    let resumed = Resumed {
                        known: known.map(|view| view.keep(&inner.view_keys)),
                        expiry_not_before,
                    };
                    pods.park(&pod, resumed, next, forget);
                    running.parked = true;
                    drop(pods);
                    if next.is_some() {
                        inner.timers_changed.notify_one();
                    }
                    return;
                }
            }
        };
        let outcome = match work {
            Work::Calls(batch) => write_batch(&inner, &pod, &mut known, batch).await,
            Work::Round(round) => {
                match round {
                    // A fresh read shows restarts and other writers' jobs.
                    Round::Recheck => known = None,
                    // The listed view may be older or newer than the kept one; either way
                    // the round's guards decide, and a stale view costs one re-read.
                    Round::Sweep(listed) => known = Some(*listed),
                    Round::Deadline => {}
                    #[cfg(test)]
                    Round::Panic(held) => {
                        let _held = held;
                        panic!("a writer bug, as a test asks")
                    }
                }
                // A round without calls: the computation releases what is due.
                let outcome = write_batch(&inner, &pod, &mut known, Vec::new()).await;
                expiry_not_before = (outcome != Outcome::Stored)
                    .then(|| durations::instant_after(Instant::now(), EXPIRY_RETRY));
                outcome
            }
        };
        gone = outcome == Outcome::Gone;
    }
}

/// How a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Stored (or nothing to store).
    Stored,
    /// The pod is gone or no longer countable (404, or it left the selector).
    Gone,
    /// Another failure.
    Failed,
}

/// Settles one batch and answers each caller; returns whether it was stored.
pub(super) async fn write_batch(
    inner: &Arc<Inner>,
    pod: &PodRef,
    known: &mut Option<PodView>,
    calls: Vec<Call>,
) -> Outcome {
    let job_calls: Vec<JobCall> = calls.iter().map(|call| call.call.clone()).collect();
    if !job_calls.is_empty() {
        inner
            .client
            .metrics()
            .calls_per_write
            .observe(job_calls.len() as f64);
    }
    // The oldest call's budget is the batch's: each call is answered within its own
    // `--retry-timeout` (and one request timeout), however long it queued.
    let since = calls
        .iter()
        .map(|call| call.received)
        .min()
        .unwrap_or_else(Instant::now);
    let budget = Budget::new(
        since,
        inner.settings.retry.deadline,
        inner.client.request_timeout(),
    );
    let (answers, outcome) = match settle(inner, pod, known, &job_calls, budget).await {
        Ok(settled) => {
            let jobs = known
                .as_ref()
                .and_then(|view| {
                    jobs::decode(view.annotation(&inner.settings.keys.jobs_annotation)).ok()
                })
                .map(|state| state.jobs)
                .unwrap_or_default();
            let uid = known.as_ref().and_then(|view| view.uid.clone());
            stored(inner, pod, uid, &settled, jobs);
            (settled.answers, Outcome::Stored)
        }
        Err(error) => {
            if job_calls.is_empty() {
                log::warn!("pod {pod}: releasing expired jobs failed: {error}");
            }
            let outcome = if matches!(error, Error::PodNotFound { .. }) {
                Outcome::Gone
            } else {
                Outcome::Failed
            };
            if outcome == Outcome::Gone && inner.settings.idle_writer.is_some() {
                // A standalone service forgets a pod that is gone (or no longer countable) at
                // once: its status entry and series now, its slot when its writer parks.
                inner.pods().clear_stored(pod);
                inner.client.metrics().forget(pod);
                *known = None;
            }
            (vec![Err(error); calls.len()], outcome)
        }
    };
    for (call, answer) in calls.into_iter().zip(answers) {
        // A caller that went away does not need its answer; the count stands either way.
        let _ = call.reply.send(answer);
    }
    outcome
}

/// The one timer task of all pods: fires due timers (starting the writers they wake, forgetting
/// idle pods) and sleeps until the earliest, or until a parking writer sets a new one. Ends
/// with the tracker.
pub(super) async fn run_timers(inner: Weak<Inner>, changed: Arc<Notify>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let (fired, earliest, shrunk) = {
            let mut pods = strong.pods();
            let fired = pods.fire(Instant::now());
            (fired, pods.next_timer(), pods.take_shrunk())
        };
        if shrunk {
            give_back_free_memory();
        }
        for pod in fired.forgotten {
            strong.client.metrics().forget(&pod);
        }
        for pod in fired.start {
            strong.runtime.spawn(run_writer(Arc::clone(&strong), pod));
        }
        // Holding the tracker while asleep would keep it alive for ever.
        drop(strong);
        let notified = changed.notified();
        match earliest {
            Some(at) => {
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep_until(at.into()) => {}
                }
            }
            None => notified.await,
        }
    }
}
