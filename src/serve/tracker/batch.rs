//! Pure computation of one batch on a view of the pod: every caller's count, the refusals,
//! and what the pod should hold afterwards.

use std::time::{Duration, SystemTime};

use crate::core::count;
use crate::core::durations;
use crate::core::jobs::{self, Action, JobCall, PodJobs, Refusal};
use crate::core::pod::PodRef;
use crate::core::view::PodView;
use crate::error::{Error, Result};

use super::bookkeeping::{Released, Settled};
use super::{Inner, Settings};

/// What a batch wants the pod to look like afterwards.
pub(super) struct Desired {
    /// The count label's value (`None`: no label).
    pub(super) label: Option<String>,
    /// The jobs annotation and the `--active-annotation` keys, with their values afterwards.
    pub(super) annotations: Vec<(String, Option<String>)>,
    /// Some call may start a job: the write must be refused if the pod started being deleted.
    pub(super) may_start_a_job: bool,
    /// Some call was refused for a reason another writer could have changed meanwhile.
    pub(super) needs_fresh_view: bool,
}

/// The count a pod's label holds, checked against the selector (for `/wait-idle`).
pub(super) fn current_count(settings: &Settings, pod: &PodRef, view: &PodView) -> Result<i64> {
    if let Some(selector) = &settings.selector
        && !selector.matches_with(|key| view.label(key))
    {
        return Err(Error::PodNotFound { pod: pod.clone() });
    }
    let current = view.label(&settings.keys.label);
    count::decode(current).map_err(|count::NotACount| Error::NotACount {
        pod: pod.clone(),
        label: settings.keys.label.clone(),
        value: current.unwrap_or_default().to_owned(),
    })
}

pub(super) fn unix_now() -> u64 {
    durations::unix_seconds(SystemTime::now())
}

/// Every caller's count, computed one after another from the pod's current label and jobs
/// annotation (after releasing jobs past their deadline), and what to store afterwards.
pub(super) fn compute(
    inner: &Inner,
    pod: &PodRef,
    view: &PodView,
    calls: &[JobCall],
) -> Result<(Settled, Desired)> {
    let settings = &inner.settings;
    let before = current_count(settings, pod, view)?;
    let state =
        jobs::decode(view.annotation(&settings.keys.jobs_annotation)).map_err(|problem| {
            Error::NotJobs {
                pod: pod.clone(),
                annotation: settings.keys.jobs_annotation.clone(),
                problem: problem.0,
            }
        })?;
    let now = unix_now();
    let mut pod_jobs = PodJobs::from_count(before, state, settings.policy);
    let mut released: Vec<Released> = pod_jobs
        .expire(now)
        .into_iter()
        .map(|(id, job)| Released {
            id,
            job,
            restart: None,
        })
        .collect();
    if let Some(container) = &settings.release_on_restart
        && let Some(ended) = view.restarted_at(container)
    {
        released.extend(
            pod_jobs
                .release_started_before(ended)
                .into_iter()
                .map(|(id, job)| Released {
                    id,
                    job,
                    restart: Some((container.clone(), ended)),
                }),
        );
    }
    let deleting = view.deletion.is_some();
    let mut needs_fresh_view = false;
    let answers = calls
        .iter()
        .map(|call| {
            if let Some(uid) = &call.pod_uid
                && view.uid.as_ref() != Some(uid)
            {
                // Perhaps a stale view of a pod re-created since: decided on a fresh read.
                needs_fresh_view = true;
                return Err(Error::CallerForbidden(format!(
                    "the caller's token is bound to pod {pod} with uid {uid}, and that pod is gone: a pod of the same name ({}) is another pod",
                    view.uid.as_deref().unwrap_or("no uid")
                )));
            }
            pod_jobs
                .apply(call, now, &settings.limits, settings.policy, deleting)
                .map_err(|refusal| {
                    needs_fresh_view |=
                        matches!(refusal, Refusal::TooManyJobs(_) | Refusal::UnknownJob(_));
                    refused(settings, pod, view, call, refusal)
                })
        })
        .collect();
    let after = pod_jobs
        .count()
        .map_err(|count::Overflow| Error::Overflow {
            pod: pod.clone(),
            label: settings.keys.label.clone(),
            delta: count::Delta::Increment,
        })?;
    let active = jobs::active_annotations(
        &settings.active_annotations,
        |key| view.annotation(key),
        &mut pod_jobs.state,
        before,
        after,
    );
    let mut annotations = vec![(
        settings.keys.jobs_annotation.clone(),
        jobs::encode(&pod_jobs.state),
    )];
    annotations.extend(
        active
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value)),
    );
    let desired = Desired {
        label: count::label_for(after, settings.policy),
        annotations,
        may_start_a_job: calls.iter().any(|call| call.action == Action::Increment),
        needs_fresh_view,
    };
    let settled = Settled {
        answers,
        before,
        after,
        released,
    };
    Ok((settled, desired))
}

/// The caller's error for a refused call.
pub(super) fn refused(
    settings: &Settings,
    pod: &PodRef,
    view: &PodView,
    call: &JobCall,
    refusal: Refusal,
) -> Error {
    match refusal {
        Refusal::Overflow(delta) => Error::Overflow {
            pod: pod.clone(),
            label: settings.keys.label.clone(),
            delta,
        },
        Refusal::TooManyJobs(limit) => Error::TooManyJobs {
            pod: pod.clone(),
            limit,
        },
        Refusal::UnknownJob(job) => Error::UnknownJob {
            pod: pod.clone(),
            job: call.job.clone().unwrap_or(job),
        },
        Refusal::Deleting => Error::PodDeleting {
            pod: pod.clone(),
            retry_after: view
                .deletion
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .unwrap_or_default()
                .max(Duration::from_secs(1)),
        },
    }
}
