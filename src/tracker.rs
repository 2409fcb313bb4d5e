//! One writer per pod: it takes every queued call, folds them into one guarded write, retries
//! when the pod changed underneath, and answers each caller exactly once with its own count.
//!
//! Correctness rests on three rules:
//! - every write is a JSON patch whose `test` operations pin the values the counts were
//!   computed from, so a write based on stale data is refused by the API server, never applied;
//! - every write that changes the count also records its id in the marker annotation, so a
//!   write whose answer was lost (timeout, dropped connection, 5xx) is recognised on the next
//!   read, and its callers get the counts it stored instead of a second application;
//! - a caller gets 200 only after the API server answered that it stored the value (or a
//!   re-read shows the marker), so every acknowledged call is in the label exactly once.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube_labels::Selector;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::api::{ApiFailure, PodClient};
use crate::count::{self, Delta, Policy};
use crate::error::{Error, Result};
use crate::guard::{PodView, WritePlan, marker_records, next_marker};
use crate::target::PodRef;

/// How hard the writer tries before it answers 503 (or 504 when a write's fate is unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// At most this many rounds (read and/or write) for one batch.
    pub attempts: u32,
    /// Give up after this long (checked between rounds).
    pub deadline: Duration,
    /// First pause between rounds; doubles up to `max_backoff`, with jitter.
    pub first_backoff: Duration,
    /// Longest pause between rounds.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 40,
            deadline: Duration::from_secs(10),
            first_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(500),
        }
    }
}

/// What the writers need to know, shared by all of them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The counting label.
    pub label: String,
    /// The annotation that records recent write ids.
    pub marker_annotation: String,
    /// Pods must match this to be counted (checked on every read, guarded on every write).
    pub selector: Option<Selector>,
    /// Counting rules.
    pub policy: Policy,
    /// Retry budget.
    pub retry: RetryPolicy,
    /// A writer with no calls for this long stops and forgets its pod (`None`: never).
    pub idle_writer: Option<Duration>,
}

struct Call {
    delta: Delta,
    reply: oneshot::Sender<Result<i64>>,
}

struct Inner {
    client: PodClient,
    settings: Settings,
    writers: Mutex<HashMap<PodRef, mpsc::UnboundedSender<Call>>>,
    runtime: Handle,
    instance: String,
    next_write: AtomicU64,
}

/// Hands each call to its pod's writer. Cheap to clone; safe to use from any thread.
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

impl Tracker {
    /// A tracker whose writers run on `runtime`.
    pub fn new(client: PodClient, settings: Settings, runtime: Handle) -> Self {
        // Write ids must differ between replicas and restarts; a random 32-bit prefix does that.
        let instance = format!(
            "{:08x}",
            RandomState::new().hash_one(std::process::id()) as u32
        );
        Tracker {
            inner: Arc::new(Inner {
                client,
                settings,
                writers: Mutex::new(HashMap::new()),
                runtime,
                instance,
                next_write: AtomicU64::new(1),
            }),
        }
    }

    /// Queues one call; the receiver gets exactly one answer: the count right after this call,
    /// or why it was not applied.
    ///
    /// Never blocks, so it can be called from the HTTP threads.
    pub fn submit(&self, pod: PodRef, delta: Delta) -> oneshot::Receiver<Result<i64>> {
        let (reply, answer) = oneshot::channel();
        let mut call = Call { delta, reply };
        let mut writers = self
            .inner
            .writers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(writer) = writers.get(&pod) {
            match writer.send(call) {
                Ok(()) => return answer,
                // The writer stopped; start a new one below.
                Err(mpsc::error::SendError(returned)) => call = returned,
            }
        }
        let (writer, calls) = mpsc::unbounded_channel();
        // The receiver is alive: it was made on the line above.
        let _ = writer.send(call);
        writers.insert(pod.clone(), writer);
        drop(writers);
        self.inner
            .runtime
            .spawn(run_writer(Arc::clone(&self.inner), pod, calls));
        answer
    }

    /// How many pods currently have a writer.
    pub fn tracked_pods(&self) -> usize {
        self.inner
            .writers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The most calls folded into one write; bounds the work a single round repeats on a conflict.
const MAX_BATCH: usize = 4096;

async fn run_writer(inner: Arc<Inner>, pod: PodRef, mut calls: mpsc::UnboundedReceiver<Call>) {
    let mut known: Option<PodView> = None;
    loop {
        let first = match inner.settings.idle_writer {
            Some(idle) => tokio::time::timeout(idle, calls.recv())
                .await
                .ok()
                .flatten(),
            None => calls.recv().await,
        };
        let Some(first) = first else {
            // Leave the map first, under its lock, so no new call can reach this writer; then
            // answer whatever slipped in before.
            inner
                .writers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&pod);
            calls.close();
            let mut rest = Vec::new();
            while let Ok(call) = calls.try_recv() {
                rest.push(call);
            }
            if !rest.is_empty() {
                write_batch(&inner, &pod, &mut known, rest).await;
            }
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match calls.try_recv() {
                Ok(call) => batch.push(call),
                Err(_) => break,
            }
        }
        write_batch(&inner, &pod, &mut known, batch).await;
    }
}

async fn write_batch(inner: &Inner, pod: &PodRef, known: &mut Option<PodView>, calls: Vec<Call>) {
    let deltas: Vec<Delta> = calls.iter().map(|call| call.delta).collect();
    let answers = match settle(inner, pod, known, &deltas).await {
        Ok(answers) => answers,
        Err(error) => vec![Err(error); calls.len()],
    };
    for (call, answer) in calls.into_iter().zip(answers) {
        // A caller that went away does not need its answer; the count stands either way.
        let _ = call.reply.send(answer);
    }
}

/// A write that was sent but whose answer was lost: its id, and the answers it would give.
struct Unanswered {
    id: String,
    answers: Vec<Result<i64>>,
}

/// Runs rounds of read → compute → guarded write until the batch is stored or the budget ends.
async fn settle(
    inner: &Inner,
    pod: &PodRef,
    known: &mut Option<PodView>,
    deltas: &[Delta],
) -> Result<Vec<Result<i64>>> {
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
                view.annotation(&settings.marker_annotation),
                std::slice::from_ref(&write.id),
            )
        }) {
            log::info!(
                "pod {pod}: write {} was stored although its answer was lost",
                unanswered[landed].id
            );
            *known = Some(view);
            return Ok(unanswered.swap_remove(landed).answers);
        }
        // A refusal is decided on a fresh read only: the kept view may predate another
        // writer's fix (a label added to match the selector, a label value repaired).
        if let Some(selector) = &settings.selector
            && !selector.matches_with(|key| view.label(key))
        {
            if !fresh {
                reread_now = true;
                continue;
            }
            *known = Some(view);
            return Err(Error::PodNotFound { pod: pod.clone() });
        }
        let (answers, new_label) = match compute(inner, pod, &view, deltas) {
            Ok(computed) => computed,
            Err(_) if !fresh => {
                reread_now = true;
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
        let marker = next_marker(view.annotation(&settings.marker_annotation), &id);
        let mut plan = WritePlan {
            label_key: &settings.label,
            label_value: new_label.as_deref(),
            guarded_labels: settings
                .selector
                .as_ref()
                .map(Selector::keys)
                .unwrap_or_default(),
            marker: Some((&settings.marker_annotation, &marker)),
        };
        let changes = view.label(&settings.label) != new_label.as_deref();
        if !changes {
            // Nothing to store: the guards alone confirm the count in one round trip.
            plan.marker = None;
        }
        match inner.client.patch(pod, plan.to_patch(&view)).await {
            Ok(stored) => {
                *known = Some(stored);
                return Ok(answers);
            }
            Err(ApiFailure::GuardFailed) => {
                log::debug!("pod {pod}: changed since it was read; reading it again");
                last_problem = "the pod kept changing (conflicts)".to_owned();
                backoff.reset_once_for_conflict();
            }
            Err(ApiFailure::NotSent(problem)) => {
                last_problem = problem;
                *known = Some(view);
            }
            Err(ApiFailure::Unknown(problem)) => {
                if changes {
                    log::warn!(
                        "pod {pod}: write {id} got no answer ({problem}); reading the pod to learn whether it landed"
                    );
                    unanswered.push(Unanswered { id, answers });
                }
                last_problem = problem;
            }
            Err(failure) => {
                last_problem = final_or_retry(pod, "patch", failure)?;
            }
        }
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

/// Every caller's count, computed one after another from the label's current value, and the
/// label value to store afterwards.
fn compute(
    inner: &Inner,
    pod: &PodRef,
    view: &PodView,
    deltas: &[Delta],
) -> Result<(Vec<Result<i64>>, Option<String>)> {
    let settings = &inner.settings;
    let current = view.label(&settings.label);
    let mut value = count::decode(current).map_err(|count::NotACount| Error::NotACount {
        pod: pod.clone(),
        label: settings.label.clone(),
        value: current.unwrap_or_default().to_owned(),
    })?;
    let answers = deltas
        .iter()
        .map(|&delta| match count::apply(value, delta, settings.policy) {
            Ok(next) => {
                value = next;
                Ok(next)
            }
            Err(count::Overflow) => Err(Error::Overflow {
                pod: pod.clone(),
                label: settings.label.clone(),
                delta,
            }),
        })
        .collect();
    Ok((answers, count::label_for(value, settings.policy)))
}

/// Turns a failure that no retry can fix into the batch's error; returns the problem text of
/// one worth retrying.
fn final_or_retry(pod: &PodRef, verb: &str, failure: ApiFailure) -> Result<String> {
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
        ApiFailure::NotSent(problem) | ApiFailure::Unknown(problem) => Ok(problem),
    }
}

/// Exponential backoff with jitter, so that replicas that collided do not collide again.
struct Backoff {
    policy: RetryPolicy,
    next: Duration,
    seed: u64,
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
        let step = self.next.as_micros() as u64;
        let jittered = step / 2 + self.seed % (step / 2 + 1);
        tokio::time::sleep(Duration::from_micros(jittered)).await;
        self.next = (self.next * 2).min(self.policy.max_backoff);
    }

    /// A conflict means someone else just wrote: retry soon rather than after a long pause.
    fn reset_once_for_conflict(&mut self) {
        self.next = self.next.min(self.policy.first_backoff * 4);
    }
}
