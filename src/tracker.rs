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

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

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
    /// Record Kubernetes Events when a pod becomes busy (0 → 1) or idle (→ 0).
    pub events: bool,
}

/// What the tracker last stored for a pod, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodStatus {
    /// The pod.
    pub pod: PodRef,
    /// Its count after the last call.
    pub count: i64,
    /// The label's value then (`None`: no label).
    pub label: Option<String>,
    /// When the last call was stored.
    pub updated: SystemTime,
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
    status: Mutex<BTreeMap<PodRef, PodStatus>>,
    /// Cleared for good when the API server refuses to create events (no rights).
    events_allowed: AtomicBool,
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
                status: Mutex::new(BTreeMap::new()),
                events_allowed: AtomicBool::new(true),
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

    /// What was last stored for each tracked pod.
    pub fn status(&self) -> Vec<PodStatus> {
        let status = self
            .inner
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        status.values().cloned().collect()
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
            inner
                .status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&pod);
            inner.client.metrics().forget(&pod);
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

async fn write_batch(
    inner: &Arc<Inner>,
    pod: &PodRef,
    known: &mut Option<PodView>,
    calls: Vec<Call>,
) {
    let deltas: Vec<Delta> = calls.iter().map(|call| call.delta).collect();
    inner
        .client
        .metrics()
        .calls_per_write
        .observe(deltas.len() as f64);
    let answers = match settle(inner, pod, known, &deltas).await {
        Ok(settled) => {
            stored(inner, pod, &settled);
            settled.answers
        }
        Err(error) => vec![Err(error); calls.len()],
    };
    for (call, answer) in calls.into_iter().zip(answers) {
        // A caller that went away does not need its answer; the count stands either way.
        let _ = call.reply.send(answer);
    }
}

/// A batch's outcome once stored: each caller's answer, and the count before and after.
struct Settled {
    answers: Vec<Result<i64>>,
    before: i64,
    after: i64,
}

/// A write that was sent but whose answer was lost: its id, and what it would settle.
struct Unanswered {
    id: String,
    settled: Settled,
    /// The server answered (with an error): a read that does not show the write proves it was
    /// not applied. Without an answer the request may still be in flight.
    answered: bool,
}

/// Bookkeeping after a stored batch: status, the count metric, and busy/idle events.
fn stored(inner: &Arc<Inner>, pod: &PodRef, settled: &Settled) {
    let policy = inner.settings.policy;
    inner.client.metrics().set_count(pod, settled.after);
    let status = PodStatus {
        pod: pod.clone(),
        count: settled.after,
        label: count::label_for(settled.after, policy),
        updated: SystemTime::now(),
    };
    inner
        .status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(pod.clone(), status);
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
    if let Some((reason, message)) = event
        && inner.settings.events
        && inner.events_allowed.load(Ordering::Relaxed)
    {
        // Off the answer's path: a slow or refused event never delays a job.
        let inner = Arc::clone(inner);
        let pod = pod.clone();
        inner.runtime.clone().spawn(async move {
            match inner.client.create_event(&pod, reason, &message).await {
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

/// Runs rounds of read → compute → guarded write until the batch is stored or the budget ends.
async fn settle(
    inner: &Inner,
    pod: &PodRef,
    known: &mut Option<PodView>,
    deltas: &[Delta],
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
                view.annotation(&settings.marker_annotation),
                std::slice::from_ref(&write.id),
            )
        }) {
            log::info!(
                "pod {pod}: write {} was stored although its answer was lost",
                unanswered[landed].id
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
        let (settled, new_label) = match compute(inner, pod, &view, deltas) {
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
        let marker = view.annotation(&settings.marker_annotation);
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

/// Every caller's count, computed one after another from the label's current value, and the
/// label value to store afterwards.
fn compute(
    inner: &Inner,
    pod: &PodRef,
    view: &PodView,
    deltas: &[Delta],
) -> Result<(Settled, Option<String>)> {
    let settings = &inner.settings;
    let current = view.label(&settings.label);
    let before = count::decode(current).map_err(|count::NotACount| Error::NotACount {
        pod: pod.clone(),
        label: settings.label.clone(),
        value: current.unwrap_or_default().to_owned(),
    })?;
    let mut value = before;
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
    let settled = Settled {
        answers,
        before,
        after: value,
    };
    Ok((settled, count::label_for(value, settings.policy)))
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
        ApiFailure::NotSent(problem)
        | ApiFailure::ServerError(problem)
        | ApiFailure::Unknown(problem) => Ok(problem),
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
