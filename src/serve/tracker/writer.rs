//! A pod's writer: what wakes it (a call, a deadline, a recheck, the sweep), and how it folds
//! queued calls into one batch.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::core::durations;
use crate::core::guard::PodView;
use crate::core::jobs::{self, JobCall};
use crate::core::pod::PodRef;
use crate::error::Error;

use super::batch::unix_now;
use super::bookkeeping::stored;
use super::rounds::settle;
use super::{Call, EXPIRY_RETRY, Inner, MAX_BATCH, Message, Settings};

/// What wakes a writer.
pub(super) enum Wake {
    /// A call arrived.
    Call(Call),
    /// A keyed job's deadline passed: release it.
    Deadline,
    /// Time to read the pod again (`Settings::recheck`): release what it shows is over.
    Recheck,
    /// The sweep saw a job past its deadline: release it, starting from this view.
    Sweep(Box<PodView>),
    /// No call for the idle time (standalone), or the tracker is gone: stop.
    Stop,
}

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

pub(super) fn wake_of(message: Option<Message>) -> Wake {
    match message {
        Some(Message::Call(call)) => Wake::Call(call),
        Some(Message::Sweep(view)) => Wake::Sweep(view),
        #[cfg(test)]
        Some(Message::Panic(held)) => {
            let _held = held;
            panic!("a writer bug, as a test asks")
        }
        None => Wake::Stop,
    }
}

pub(super) async fn next_wake(
    inner: &Inner,
    known: Option<&PodView>,
    expiry_not_before: Option<Instant>,
    calls: &mut mpsc::UnboundedReceiver<Message>,
) -> Wake {
    let deadline = until_next_deadline(&inner.settings, known).map(|wait| (wait, Wake::Deadline));
    let recheck = until_recheck(&inner.settings, known).map(|wait| (wait, Wake::Recheck));
    let mut timer = match (deadline, recheck) {
        (Some(deadline), Some(recheck)) => Some(if recheck.0 < deadline.0 {
            recheck
        } else {
            deadline
        }),
        (one, other) => one.or(other),
    };
    if let (Some((wait, _)), Some(not_before)) = (timer.as_mut(), expiry_not_before) {
        *wait = (*wait).max(not_before.saturating_duration_since(Instant::now()));
    }
    // A writer with jobs still to release does not go idle: it is the sweep of its pod.
    let limit = match (timer, inner.settings.idle_writer) {
        (Some(timer), _) => Some(timer),
        (None, Some(idle)) => Some((idle, Wake::Stop)),
        (None, None) => None,
    };
    match limit {
        Some((wait, on_timeout)) => match tokio::time::timeout(wait, calls.recv()).await {
            Ok(message) => wake_of(message),
            Err(_) => on_timeout,
        },
        None => wake_of(calls.recv().await),
    }
}

pub(super) async fn run_writer(
    inner: Arc<Inner>,
    pod: PodRef,
    mut calls: mpsc::UnboundedReceiver<Message>,
) {
    // A primed view is only a starting point: guards catch it if it is stale, and refusals are
    // decided on fresh reads only.
    let mut known: Option<PodView> = inner
        .primed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&pod);
    let mut expiry_not_before: Option<Instant> = None;
    loop {
        let wake = next_wake(&inner, known.as_ref(), expiry_not_before, &mut calls).await;
        let first = match wake {
            Wake::Call(call) => Some(call),
            Wake::Deadline | Wake::Recheck | Wake::Sweep(_) => {
                match wake {
                    // A fresh read shows restarts and other writers' jobs.
                    Wake::Recheck => known = None,
                    // The listed view may be older or newer than the kept one; either way
                    // the round's guards decide, and a stale view costs one re-read.
                    Wake::Sweep(listed) => known = Some(*listed),
                    _ => {}
                }
                // A round without calls: the computation releases what is due.
                if write_batch(&inner, &pod, &mut known, Vec::new()).await {
                    expiry_not_before = None;
                } else {
                    expiry_not_before =
                        Some(durations::instant_after(Instant::now(), EXPIRY_RETRY));
                }
                continue;
            }
            Wake::Stop => None,
        };
        let Some(first) = first else {
            // Leave the map first, under its lock, so no new call can reach this writer; then
            // answer whatever slipped in before.
            inner
                .writers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&pod);
            inner
                .status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&pod);
            inner.client.metrics().forget(&pod);
            calls.close();
            let mut rest = Vec::new();
            while let Ok(message) = calls.try_recv() {
                if let Message::Call(call) = message {
                    rest.push(call);
                }
            }
            if !rest.is_empty() {
                write_batch(&inner, &pod, &mut known, rest).await;
            }
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match calls.try_recv() {
                Ok(Message::Call(call)) => batch.push(call),
                // This batch's round releases what is due anyway.
                Ok(Message::Sweep(_)) => {}
                #[cfg(test)]
                Ok(Message::Panic(held)) => {
                    let _held = held;
                    panic!("a writer bug, as a test asks")
                }
                Err(_) => break,
            }
        }
        write_batch(&inner, &pod, &mut known, batch).await;
    }
}

/// Settles one batch and answers each caller; returns whether it was stored.
pub(super) async fn write_batch(
    inner: &Arc<Inner>,
    pod: &PodRef,
    known: &mut Option<PodView>,
    calls: Vec<Call>,
) -> bool {
    let job_calls: Vec<JobCall> = calls.iter().map(|call| call.call.clone()).collect();
    if !job_calls.is_empty() {
        inner
            .client
            .metrics()
            .calls_per_write
            .observe(job_calls.len() as f64);
    }
    let (answers, ok) = match settle(inner, pod, known, &job_calls).await {
        Ok(settled) => {
            let jobs = known
                .as_ref()
                .and_then(|view| {
                    jobs::decode(view.annotation(&inner.settings.keys.jobs_annotation)).ok()
                })
                .map(|state| state.jobs)
                .unwrap_or_default();
            stored(inner, pod, &settled, jobs);
            (settled.answers, true)
        }
        Err(error) => {
            if job_calls.is_empty() {
                log::warn!("pod {pod}: releasing expired jobs failed: {error}");
            }
            if matches!(error, Error::PodNotFound { .. }) && inner.settings.idle_writer.is_some() {
                // A standalone service forgets a pod that is gone (or no longer countable) at
                // once: its status entry and series; the idle writer itself ends later.
                inner
                    .status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(pod);
                inner.client.metrics().forget(pod);
                *known = None;
            }
            (vec![Err(error); calls.len()], false)
        }
    };
    for (call, answer) in calls.into_iter().zip(answers) {
        // A caller that went away does not need its answer; the count stands either way.
        let _ = call.reply.send(answer);
    }
    ok
}
