//! Rounds of read → compute → guarded write until a batch is stored or its time is up, with
//! writes whose answer was lost resolved from what is stored before any failure is answered,
//! and jittered backoff.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kube_labels::Selector;

use crate::api::ApiFailure;
use crate::core::durations;
use crate::core::guard::{WritePlan, next_marker};
use crate::core::jobs::JobCall;
use crate::core::pod::PodRef;
use crate::core::view::PodView;
use crate::error::{Error, Result};

use super::batch::compute;
use super::bookkeeping::Settled;
use super::unresolved::Unresolved;
use super::{Inner, RetryPolicy};

/// A batch's time: rounds start until `last_round`, and every request is answered by `end`
/// (one request timeout later), so that each call is answered within `--retry-timeout` plus
/// one `--kube-request-timeout` of its arrival.
#[derive(Debug, Clone, Copy)]
pub(super) struct Budget {
    last_round: Instant,
    end: Option<Instant>,
}

impl Budget {
    /// The budget of a batch whose oldest call arrived at `since`.
    pub(super) fn new(since: Instant, retry: Duration, request_timeout: Option<Duration>) -> Self {
        let last_round = durations::instant_after(since, retry);
        Budget {
            last_round,
            end: request_timeout.map(|timeout| durations::instant_after(last_round, timeout)),
        }
    }

    fn may_start_round(&self, now: Instant) -> bool {
        now < self.last_round
    }

    /// Whether a request may still be sent: one sent with no time left would be cut at once,
    /// its outcome unknown.
    fn may_send(&self, now: Instant) -> bool {
        self.end.is_none_or(|end| now < end)
    }
}

/// Runs rounds of read → compute → guarded write until the batch is stored or its budget ends.
///
/// A call is never answered as failed while a write of its batch may have been stored: such a
/// write is looked for on every read, and if it cannot be resolved in time the answer is
/// [`Error::OutcomeUnknown`] (504). Refusals of a recovering API server are retried like a 503
/// (see [`crate::api::recovery::RECOVERY_WINDOW`]), and a 429 waits for the server's `Retry-After`.
pub(super) async fn settle(
    inner: &Inner,
    pod: &PodRef,
    known: &mut Option<PodView>,
    calls: &[JobCall],
    budget: Budget,
) -> Result<Settled> {
    let settings = &inner.settings;
    let metrics = inner.client.metrics();
    let mut backoff = Backoff::new(settings.retry);
    let mut unresolved = Unresolved::default();
    // A final answer (a refusal, a rejection) that must wait until no lost write may be stored.
    let mut held: Option<Error> = None;
    let mut last_problem = String::new();
    let mut retry_after = None;
    let mut reread_now = false;
    for round in 1..=settings.retry.attempts {
        if round > 1 {
            if !budget.may_start_round(Instant::now()) {
                break;
            }
            if !reread_now {
                let asked = retry_after.take().unwrap_or_default();
                if !backoff.pause_at_least(asked, budget.last_round).await {
                    // The server asked for a longer wait than the budget has left.
                    break;
                }
            }
        }
        if !budget.may_send(Instant::now()) {
            break;
        }
        reread_now = false;
        let (view, fresh) = match known.take() {
            Some(view) => (view, false),
            None => match inner.client.get_until(pod, budget.end).await {
                Ok(view) => (view, true),
                Err(failure) => {
                    retry_after = asked_wait(&failure);
                    count_retry(inner, &failure);
                    match final_or_retry(pod, "get", failure) {
                        Ok(problem) => last_problem = problem,
                        Err(error) => hold_or_answer(&mut held, error, &unresolved)?,
                    }
                    continue;
                }
            },
        };
        if fresh {
            // Did a write whose answer was lost land after all? Then its answers stand.
            let marker = view.annotation(&settings.keys.marker_annotation);
            if let Some((id, settled)) = unresolved.read(marker) {
                log::info!("pod {pod}: write {id} was stored although its answer was lost");
                metrics.lost_answer(true);
                *known = Some(view);
                return Ok(settled);
            }
            held = None;
        }
        // A refusal is decided on a fresh read only: the kept view may predate another
        // writer's fix (a label added to match the selector, a label value repaired).
        if let Some(selector) = &settings.selector
            && !selector.matches_with(|key| view.label(key))
        {
            if !fresh {
                reread_now = true;
                metrics.retry("stale-view");
                continue;
            }
            *known = Some(view);
            count_ruled_out(inner, &unresolved);
            return Err(Error::PodNotFound { pod: pod.clone() });
        }
        let (settled, desired) = match compute(inner, pod, &view, calls) {
            // A refusal that another writer may have made wrong (a job started or ended
            // elsewhere) is decided on a fresh read only.
            Ok((_, desired)) if desired.needs_fresh_view && !fresh => {
                reread_now = true;
                metrics.retry("stale-view");
                continue;
            }
            Ok(computed) => computed,
            Err(_) if !fresh => {
                reread_now = true;
                metrics.retry("stale-view");
                continue;
            }
            Err(error) => {
                if unresolved.any() {
                    // The fresh read shows no lost write (yet); one still in flight could
                    // land, so this refusal waits, and the next round reads again.
                    hold_or_answer(&mut held, error, &unresolved)?;
                    continue;
                }
                *known = Some(view);
                count_ruled_out(inner, &unresolved);
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
            marker: None,
            annotations: desired
                .annotations
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_deref()))
                .collect(),
            require_not_deleting: desired.may_start_a_job,
            require_same_pod: calls.iter().any(|call| call.pod_uid.is_some()),
        };
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
        match inner
            .client
            .patch(pod, plan.to_patch(&view), budget.end)
            .await
        {
            Ok(stored) => {
                *known = Some(stored);
                // This write's guard pinned the marker, so none of the lost ones landed.
                for _ in 0..unresolved.superseded() {
                    metrics.lost_answer(false);
                }
                return Ok(settled);
            }
            Err(ApiFailure::GuardFailed) => {
                metrics.retry("conflict");
                log::debug!("pod {pod}: changed since it was read; reading it again");
                last_problem = "the pod kept changing (conflicts)".to_owned();
                backoff.reset_once_for_conflict();
            }
            Err(ApiFailure::NotSent(problem)) => {
                metrics.retry("unavailable");
                last_problem = problem;
                *known = Some(view);
            }
            Err(ApiFailure::Unknown(problem)) => {
                metrics.retry("unknown-outcome");
                if changes {
                    log::warn!(
                        "pod {pod}: write {id} got no answer ({problem}); reading the pod to learn whether it landed"
                    );
                    unresolved.sent(id, settled, false);
                }
                last_problem = problem;
            }
            Err(ApiFailure::ServerError(problem)) => {
                metrics.retry("server-error");
                if changes {
                    log::debug!(
                        "pod {pod}: write {id} answered {problem}; reading the pod to learn whether it landed"
                    );
                    unresolved.sent(id, settled, true);
                }
                last_problem = problem;
            }
            Err(failure) => {
                // Throttled, refused or rejected before it was applied: nothing of this write
                // is stored.
                retry_after = asked_wait(&failure);
                count_retry(inner, &failure);
                match final_or_retry(pod, "patch", failure) {
                    // The view it was computed from is still the latest known.
                    Ok(problem) => {
                        last_problem = problem;
                        *known = Some(view);
                    }
                    // The next round reads the pod, to resolve the writes that hold it.
                    Err(error) => hold_or_answer(&mut held, error, &unresolved)?,
                }
            }
        }
    }
    // The budget is spent. One last read may still settle writes whose answer was lost.
    if unresolved.any()
        && budget.may_send(Instant::now())
        && let Ok(view) = inner.client.get_until(pod, budget.end).await
    {
        if let Some((id, settled)) =
            unresolved.read(view.annotation(&settings.keys.marker_annotation))
        {
            log::info!("pod {pod}: write {id} was stored although its answer was lost");
            metrics.lost_answer(true);
            *known = Some(view);
            return Ok(settled);
        }
        *known = Some(view);
    }
    count_ruled_out(inner, &unresolved);
    if unresolved.any() {
        Err(Error::OutcomeUnknown {
            pod: pod.clone(),
            reason: last_problem,
        })
    } else if let Some(error) = held {
        Err(error)
    } else {
        Err(Error::ApiUnavailable {
            pod: pod.clone(),
            reason: last_problem,
            retry_after: retry_after
                .unwrap_or(Duration::from_secs(1))
                .max(Duration::from_secs(1)),
        })
    }
}

/// A final answer found while a lost write may still be stored waits (`held`) until that is
/// resolved; otherwise it is the answer now.
fn hold_or_answer(held: &mut Option<Error>, error: Error, unresolved: &Unresolved) -> Result<()> {
    if unresolved.any() && !matches!(error, Error::PodNotFound { .. }) {
        *held = Some(error);
        Ok(())
    } else {
        Err(error)
    }
}

/// Counts the lost writes proven not applied when a batch ends without one landing.
fn count_ruled_out(inner: &Inner, unresolved: &Unresolved) {
    for _ in 0..unresolved.ruled_out() {
        inner.client.metrics().lost_answer(false);
    }
}

/// Counts a round repeated because the server refused while recovering or throttled.
fn count_retry(inner: &Inner, failure: &ApiFailure) {
    match failure {
        ApiFailure::Recovering(_) => inner.client.metrics().retry("recovering"),
        ApiFailure::Throttled { .. } => inner.client.metrics().retry("throttled"),
        _ => {}
    }
}

/// The wait a 429 asked for.
fn asked_wait(failure: &ApiFailure) -> Option<Duration> {
    match failure {
        ApiFailure::Throttled { retry_after, .. } => *retry_after,
        _ => None,
    }
}

/// Turns a failure that no retry can fix into the batch's error; returns the problem text of
/// one worth retrying (and counts the retry's reason where the caller does not).
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
        ApiFailure::Recovering(message) => Ok(format!(
            "the API server refused to {verb} pods while it recovers: {message}"
        )),
        ApiFailure::Throttled { problem, .. } => Ok(problem),
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

    /// Pauses for the next jittered step, or for `asked` (a server's `Retry-After`) if that
    /// is longer. Returns `false`, without pausing, when `asked` would pass `last_round`.
    async fn pause_at_least(&mut self, asked: Duration, last_round: Instant) -> bool {
        // xorshift: cheap jitter between 50% and 100% of the step.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = u64::try_from(self.next.as_micros()).unwrap_or(u64::MAX);
        let half = step / 2;
        let jittered =
            half.saturating_add(self.seed.checked_rem(half.saturating_add(1)).unwrap_or(0));
        self.next = self.next.saturating_mul(2).min(self.policy.max_backoff);
        let now = Instant::now();
        if !asked.is_zero() && durations::instant_after(now, asked) > last_round {
            return false;
        }
        let pause = Duration::from_micros(jittered).max(asked);
        tokio::time::sleep(pause).await;
        true
    }

    /// A conflict means someone else just wrote: retry soon rather than after a long pause.
    fn reset_once_for_conflict(&mut self) {
        self.next = self.next.min(self.policy.first_backoff.saturating_mul(4));
    }
}
