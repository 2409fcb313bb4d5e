//! Rounds of read → compute → guarded write until a batch is stored or its budget ends, with a
//! write whose answer was lost settled by its id on the next read, and jittered backoff.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kube_labels::Selector;

use crate::api::ApiFailure;
use crate::core::guard::{WritePlan, marker_records, next_marker};
use crate::core::jobs::JobCall;
use crate::core::pod::PodRef;
use crate::core::view::PodView;
use crate::error::{Error, Result};

use super::batch::compute;
use super::bookkeeping::Settled;
use super::{Inner, RetryPolicy};

/// A write that was sent but whose answer was lost: its id, and what it would settle.
pub(super) struct Unanswered {
    pub(super) id: String,
    pub(super) settled: Settled,
    /// The server answered (with an error): a read that does not show the write proves it was
    /// not applied. Without an answer the request may still be in flight.
    pub(super) answered: bool,
}

/// Runs rounds of read → compute → guarded write until the batch is stored or the budget ends.
pub(super) async fn settle(
    inner: &Inner,
    pod: &PodRef,
    known: &mut Option<PodView>,
    calls: &[JobCall],
) -> Result<Settled> {
    let settings = &inner.settings;
    let started = Instant::now();
    let mut backoff = Backoff::new(settings.retry);
    let mut unanswered: Vec<Unanswered> = Vec::new();
    let mut last_problem = String::new();
    let mut reread_now = false;
    for round in 1..=settings.retry.attempts {
        if round > 1 {
            if started.elapsed() >= settings.retry.deadline {
                break;
            }
            if !reread_now {
                backoff.pause().await;
            }
        }
        reread_now = false;
        let (view, fresh) = match known.take() {
            Some(view) => (view, false),
            None => match inner.client.get(pod).await {
                Ok(view) => (view, true),
                Err(failure) => {
                    last_problem = final_or_retry(pod, "get", failure)?;
                    continue;
                }
            },
        };
        // Did a write whose answer was lost land after all? Then its answers stand.
        if let Some(landed) = unanswered.iter().position(|write| {
            marker_records(
                view.annotation(&settings.keys.marker_annotation),
                std::slice::from_ref(&write.id),
            )
        }) {
            log::info!(
                "pod {pod}: write {} was stored although its answer was lost",
                unanswered
                    .get(landed)
                    .map_or("?", |write| write.id.as_str())
            );
            inner.client.metrics().lost_answer(true);
            *known = Some(view);
            return Ok(unanswered.swap_remove(landed).settled);
        }
        if fresh {
            let before = unanswered.len();
            unanswered.retain(|write| !write.answered);
            for _ in unanswered.len()..before {
                inner.client.metrics().lost_answer(false);
            }
        }
        // A refusal is decided on a fresh read only: the kept view may predate another
        // writer's fix (a label added to match the selector, a label value repaired).
        if let Some(selector) = &settings.selector
            && !selector.matches_with(|key| view.label(key))
        {
            if !fresh {
                reread_now = true;
                inner.client.metrics().retry("stale-view");
                continue;
            }
            *known = Some(view);
            return Err(Error::PodNotFound { pod: pod.clone() });
        }
        let (settled, desired) = match compute(inner, pod, &view, calls) {
            // A refusal that another writer may have made wrong (a job started or ended
            // elsewhere) is decided on a fresh read only.
            Ok((_, desired)) if desired.needs_fresh_view && !fresh => {
                reread_now = true;
                inner.client.metrics().retry("stale-view");
                continue;
            }
            Ok(computed) => computed,
            Err(_) if !fresh => {
                reread_now = true;
                inner.client.metrics().retry("stale-view");
                continue;
            }
            Err(error) => {
                *known = Some(view);
                return Err(error);
            }
        };
        let id = format!(
            "{}-{:x}",
            inner.instance,
            inner.next_write.fetch_add(1, Ordering::Relaxed)
        );
        let marker = next_marker(view.annotation(&settings.keys.marker_annotation), &id);
        let mut plan = WritePlan {
            label_key: &settings.keys.label,
            label_value: desired.label.as_deref(),
            guarded_labels: settings
                .selector
                .as_ref()
                .map(Selector::keys)
                .unwrap_or_default(),
            marker: Some((&settings.keys.marker_annotation, &marker)),
            annotations: desired
                .annotations
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_deref()))
                .collect(),
            require_not_deleting: desired.may_start_a_job,
            require_same_pod: calls.iter().any(|call| call.pod_uid.is_some()),
        };
        plan.marker = None;
        let changes = !plan.changes_nothing(&view);
        if changes {
            plan.marker = Some((&settings.keys.marker_annotation, &marker));
        } else if calls.is_empty() {
            // A timer round with nothing due (another writer released it already).
            *known = Some(view);
            return Ok(settled);
        }
        // Without changes, nothing is stored: the guards alone confirm the count in one
        // round trip.
        match inner.client.patch(pod, plan.to_patch(&view)).await {
            Ok(stored) => {
                *known = Some(stored);
                for _ in &unanswered {
                    // This write's guard pinned the marker, so none of the lost ones landed.
                    inner.client.metrics().lost_answer(false);
                }
                return Ok(settled);
            }
            Err(ApiFailure::GuardFailed) => {
                inner.client.metrics().retry("conflict");
                log::debug!("pod {pod}: changed since it was read; reading it again");
                last_problem = "the pod kept changing (conflicts)".to_owned();
                backoff.reset_once_for_conflict();
            }
            Err(ApiFailure::NotSent(problem)) => {
                inner.client.metrics().retry("unavailable");
                last_problem = problem;
                *known = Some(view);
            }
            Err(ApiFailure::Unknown(problem)) => {
                inner.client.metrics().retry("unknown-outcome");
                if changes {
                    log::warn!(
                        "pod {pod}: write {id} got no answer ({problem}); reading the pod to learn whether it landed"
                    );
                    unanswered.push(Unanswered {
                        id,
                        settled,
                        answered: false,
                    });
                }
                last_problem = problem;
            }
            Err(ApiFailure::ServerError(problem)) => {
                inner.client.metrics().retry("server-error");
                if changes {
                    log::debug!(
                        "pod {pod}: write {id} answered {problem}; reading the pod to learn whether it landed"
                    );
                    unanswered.push(Unanswered {
                        id,
                        settled,
                        answered: true,
                    });
                }
                last_problem = problem;
            }
            Err(failure) => {
                last_problem = final_or_retry(pod, "patch", failure)?;
            }
        }
    }
    // The budget is spent. One last read may still settle writes whose answer was lost.
    if !unanswered.is_empty()
        && let Ok(view) = inner.client.get(pod).await
    {
        let marker = view.annotation(&settings.keys.marker_annotation);
        if let Some(landed) = unanswered
            .iter()
            .position(|write| marker_records(marker, std::slice::from_ref(&write.id)))
        {
            inner.client.metrics().lost_answer(true);
            *known = Some(view);
            return Ok(unanswered.swap_remove(landed).settled);
        }
        unanswered.retain(|write| !write.answered);
        *known = Some(view);
    }
    if unanswered.is_empty() {
        Err(Error::ApiUnavailable {
            pod: pod.clone(),
            reason: last_problem,
            retry_after: Duration::from_secs(1),
        })
    } else {
        Err(Error::OutcomeUnknown {
            pod: pod.clone(),
            reason: last_problem,
        })
    }
}

/// Turns a failure that no retry can fix into the batch's error; returns the problem text of
/// one worth retrying.
pub(super) fn final_or_retry(pod: &PodRef, verb: &str, failure: ApiFailure) -> Result<String> {
    match failure {
        ApiFailure::NotFound => Err(Error::PodNotFound { pod: pod.clone() }),
        ApiFailure::Refused(message) => Err(Error::ApiRefused {
            pod: pod.clone(),
            message: format!("cannot {verb} pods: {message}"),
        }),
        ApiFailure::Rejected(message) => Err(Error::ApiRejected {
            pod: pod.clone(),
            message,
        }),
        ApiFailure::GuardFailed => Ok("the pod kept changing (conflicts)".to_owned()),
        ApiFailure::NotSent(problem)
        | ApiFailure::ServerError(problem)
        | ApiFailure::Unknown(problem) => Ok(problem),
    }
}

/// Exponential backoff with jitter, so that replicas that collided do not collide again.
pub(super) struct Backoff {
    pub(super) policy: RetryPolicy,
    pub(super) next: Duration,
    pub(super) seed: u64,
}

impl Backoff {
    fn new(policy: RetryPolicy) -> Self {
        Backoff {
            policy,
            next: policy.first_backoff,
            seed: RandomState::new().hash_one(Instant::now()),
        }
    }

    async fn pause(&mut self) {
        // xorshift: cheap jitter between 50% and 100% of the step.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = u64::try_from(self.next.as_micros()).unwrap_or(u64::MAX);
        let half = step / 2;
        let jittered =
            half.saturating_add(self.seed.checked_rem(half.saturating_add(1)).unwrap_or(0));
        tokio::time::sleep(Duration::from_micros(jittered)).await;
        self.next = self.next.saturating_mul(2).min(self.policy.max_backoff);
    }

    /// A conflict means someone else just wrote: retry soon rather than after a long pause.
    fn reset_once_for_conflict(&mut self) {
        self.next = self.next.min(self.policy.first_backoff.saturating_mul(4));
    }
}
