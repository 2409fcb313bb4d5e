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
use crate::core::count::{self, Policy};
use crate::core::durations;
use crate::core::guard::{PodView, WritePlan, marker_records, next_marker};
use crate::core::jobs::{self, Action, Job, JobCall, Limits, PodJobs, Refusal};
use crate::core::pod::PodRef;
use crate::error::{Error, Result};

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
    /// Record Kubernetes Events when a pod becomes busy (0 → 1) or idle (→ 0), and when a job
    /// is released at its deadline.
    pub events: bool,
    /// The annotation that holds the keyed jobs (see [`crate::core::jobs`]).
    pub jobs_annotation: String,
    /// Job id and lifetime limits.
    pub limits: Limits,
    /// Annotations set while the count is above zero (`--active-annotation KEY=VALUE`, and
    /// `--pod-deletion-cost`).
    pub active_annotations: Vec<(String, String)>,
    /// Release the jobs started before this container's latest restart
    /// (`--release-on-restart`).
    pub release_on_restart: Option<String>,
    /// While its pod has jobs, a writer reads the pod again this often (sidecar: to see
    /// restarts and jobs stored by other writers); `None`: never.
    pub recheck: Option<Duration>,
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
    /// The keyed jobs running then, by id.
    pub jobs: BTreeMap<String, Job>,
}

struct Call {
    call: JobCall,
    reply: oneshot::Sender<Result<i64>>,
}

/// What a pod's writer is sent.
enum Message {
    /// A webhook call.
    Call(Call),
    /// The standalone sweep saw a job past its deadline on this pod (as listed): release it.
    Sweep(Box<PodView>),
}

struct Inner {
    client: PodClient,
    settings: Settings,
    writers: Mutex<HashMap<PodRef, mpsc::UnboundedSender<Message>>>,
    runtime: Handle,
    instance: String,
    next_write: AtomicU64,
    status: Mutex<BTreeMap<PodRef, PodStatus>>,
    /// Cleared for good when the API server refuses to create events (no rights).
    events_allowed: AtomicBool,
    /// Woken after every stored write, for `/wait-idle`.
    stored_writes: tokio::sync::Notify,
    /// Pods already read elsewhere (the sidecar's start-up check): a new writer starts from
    /// that view instead of reading the pod again.
    primed: Mutex<HashMap<PodRef, PodView>>,
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
                primed: Mutex::new(HashMap::new()),
                stored_writes: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Queues one call; the receiver gets exactly one answer: the count right after this call,
    /// or why it was not applied.
    ///
    /// Never blocks, so it can be called from the HTTP threads.
    pub fn submit(&self, pod: PodRef, call: JobCall) -> oneshot::Receiver<Result<i64>> {
        let (reply, answer) = oneshot::channel();
        self.send(pod, Message::Call(Call { call, reply }));
        answer
    }

    /// Has the pod's writer release its jobs past their deadline, in an ordinary guarded
    /// round (the standalone sweep; `listed` is the pod as the list showed it).
    pub fn sweep(&self, pod: PodRef, listed: PodView) {
        self.send(pod, Message::Sweep(Box::new(listed)));
    }

    /// Hands a message to the pod's writer, starting one if there is none.
    fn send(&self, pod: PodRef, message: Message) {
        let mut message = message;
        let mut writers = self
            .inner
            .writers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(writer) = writers.get(&pod) {
            match writer.send(message) {
                Ok(()) => return,
                // The writer stopped; start a new one below.
                Err(mpsc::error::SendError(returned)) => message = returned,
            }
        }
        let (writer, calls) = mpsc::unbounded_channel();
        // The receiver is alive: it was made on the line above.
        let _ = writer.send(message);
        writers.insert(pod.clone(), writer);
        drop(writers);
        self.inner
            .runtime
            .spawn(run_writer(Arc::clone(&self.inner), pod, calls));
    }

    /// Waits until the pod's count is zero (or below) and returns it, or answers
    /// [`Error::StillBusy`] once `timeout` has passed (for a `preStop` hook).
    ///
    /// Reads the pod rather than trusting this tracker's last write, because other replicas
    /// and other writers change the count too; it reads again after every write stored here
    /// and at least every [`IDLE_POLL`].
    pub async fn wait_idle(&self, pod: &PodRef, timeout: Duration) -> Result<i64> {
        let started = Instant::now();
        loop {
            // Registered before the read, so a write stored during the read is not missed.
            let stored = self.inner.stored_writes.notified();
            tokio::pin!(stored);
            stored.as_mut().enable();
            let count = match self.inner.client.get(pod).await {
                Ok(view) => Some(current_count(&self.inner.settings, pod, &view)?),
                Err(failure) => {
                    let problem = final_or_retry(pod, "get", failure)?;
                    log::debug!("pod {pod}: /wait-idle could not read the pod: {problem}");
                    None
                }
            };
            let left = timeout.saturating_sub(started.elapsed());
            match count {
                Some(count) if count <= 0 => return Ok(count),
                Some(count) if left.is_zero() => {
                    return Err(Error::StillBusy {
                        pod: pod.clone(),
                        count,
                        waited: started.elapsed(),
                    });
                }
                None if left.is_zero() => {
                    return Err(Error::ApiUnavailable {
                        pod: pod.clone(),
                        reason: "the pod could not be read while waiting for it to be idle"
                            .to_owned(),
                        retry_after: Duration::from_secs(1),
                    });
                }
                _ => {}
            }
            tokio::select! {
                () = &mut stored => {}
                () = tokio::time::sleep(left.min(IDLE_POLL)) => {}
            }
        }
    }

    /// Hands a freshly read view of a pod to its future writer, saving the first call's read.
    /// Ignored when the pod already has a writer (it knows better).
    pub fn prime(&self, pod: PodRef, view: PodView) {
        let writers = self
            .inner
            .writers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !writers.contains_key(&pod) {
            self.inner
                .primed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(pod, view);
        }
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

/// How often `/wait-idle` reads the pod when no write of this tracker wakes it.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// After a failed expiry round, the next one waits at least this long (no busy loop when the
/// pod cannot be written, e.g. its label is not a count).
const EXPIRY_RETRY: Duration = Duration::from_secs(5);

/// What wakes a writer.
enum Wake {
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
fn until_next_deadline(settings: &Settings, known: Option<&PodView>) -> Option<Duration> {
    let view = known?;
    let state = jobs::decode(view.annotation(&settings.jobs_annotation)).ok()?;
    let deadline = state.jobs.values().filter_map(|job| job.deadline).min()?;
    // One second late, so the deadline has certainly passed by the writer's own clock.
    Some(Duration::from_secs(
        deadline.saturating_sub(unix_now()).saturating_add(1),
    ))
}

/// How long until the writer should read its pod again, if it should: while the kept view
/// shows jobs (started ones can be released by a restart) and a recheck interval is set.
fn until_recheck(settings: &Settings, known: Option<&PodView>) -> Option<Duration> {
    let every = settings.recheck?;
    let has_jobs = match known {
        Some(view) => jobs::decode(view.annotation(&settings.jobs_annotation))
            .is_ok_and(|state| !state.jobs.is_empty()),
        // Not read yet (or dropped after a failure): reading it is how to find out.
        None => false,
    };
    has_jobs.then_some(every)
}

fn wake_of(message: Option<Message>) -> Wake {
    match message {
        Some(Message::Call(call)) => Wake::Call(call),
        Some(Message::Sweep(view)) => Wake::Sweep(view),
        None => Wake::Stop,
    }
}

async fn next_wake(
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

async fn run_writer(inner: Arc<Inner>, pod: PodRef, mut calls: mpsc::UnboundedReceiver<Message>) {
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
                Err(_) => break,
            }
        }
        write_batch(&inner, &pod, &mut known, batch).await;
    }
}

/// Settles one batch and answers each caller; returns whether it was stored.
async fn write_batch(
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
                    jobs::decode(view.annotation(&inner.settings.jobs_annotation)).ok()
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
            (vec![Err(error); calls.len()], false)
        }
    };
    for (call, answer) in calls.into_iter().zip(answers) {
        // A caller that went away does not need its answer; the count stands either way.
        let _ = call.reply.send(answer);
    }
    ok
}

/// A batch's outcome once stored: each caller's answer, and the count before and after.
struct Settled {
    answers: Vec<Result<i64>>,
    before: i64,
    after: i64,
    /// Jobs released without a call: past their deadline, or their container restarted.
    released: Vec<Released>,
}

/// One job released without a call, and why.
struct Released {
    id: String,
    job: Job,
    /// `None`: it passed its deadline; `Some((container, ended))`: it started before that
    /// container's previous instance ended (Unix seconds).
    restart: Option<(String, u64)>,
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
fn stored(inner: &Arc<Inner>, pod: &PodRef, settled: &Settled, jobs: BTreeMap<String, Job>) {
    let policy = inner.settings.policy;
    inner.client.metrics().set_count(pod, settled.after);
    let status = PodStatus {
        pod: pod.clone(),
        count: settled.after,
        label: count::label_for(settled.after, policy),
        updated: SystemTime::now(),
        jobs,
    };
    inner
        .status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(pod.clone(), status);
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
        record_event(inner, pod, reason, message);
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
        record_event(inner, pod, reason, message);
    }
}

/// Records a Kubernetes Event on the pod when events are on (and allowed).
fn record_event(inner: &Arc<Inner>, pod: &PodRef, reason: &'static str, message: String) {
    if inner.settings.events && inner.events_allowed.load(Ordering::Relaxed) {
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
                view.annotation(&settings.marker_annotation),
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
        let marker = next_marker(view.annotation(&settings.marker_annotation), &id);
        let mut plan = WritePlan {
            label_key: &settings.label,
            label_value: desired.label.as_deref(),
            guarded_labels: settings
                .selector
                .as_ref()
                .map(Selector::keys)
                .unwrap_or_default(),
            marker: Some((&settings.marker_annotation, &marker)),
            annotations: desired
                .annotations
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_deref()))
                .collect(),
            require_not_deleting: desired.may_start_a_job,
        };
        plan.marker = None;
        let changes = !plan.changes_nothing(&view);
        if changes {
            plan.marker = Some((&settings.marker_annotation, &marker));
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

/// What a batch wants the pod to look like afterwards.
struct Desired {
    /// The count label's value (`None`: no label).
    label: Option<String>,
    /// The jobs annotation and the `--active-annotation` keys, with their values afterwards.
    annotations: Vec<(String, Option<String>)>,
    /// Some call may start a job: the write must be refused if the pod started being deleted.
    may_start_a_job: bool,
    /// Some call was refused for a reason another writer could have changed meanwhile.
    needs_fresh_view: bool,
}

/// The count a pod's label holds, checked against the selector (for `/wait-idle`).
fn current_count(settings: &Settings, pod: &PodRef, view: &PodView) -> Result<i64> {
    if let Some(selector) = &settings.selector
        && !selector.matches_with(|key| view.label(key))
    {
        return Err(Error::PodNotFound { pod: pod.clone() });
    }
    let current = view.label(&settings.label);
    count::decode(current).map_err(|count::NotACount| Error::NotACount {
        pod: pod.clone(),
        label: settings.label.clone(),
        value: current.unwrap_or_default().to_owned(),
    })
}

fn unix_now() -> u64 {
    durations::unix_seconds(SystemTime::now())
}

/// Every caller's count, computed one after another from the pod's current label and jobs
/// annotation (after releasing jobs past their deadline), and what to store afterwards.
fn compute(
    inner: &Inner,
    pod: &PodRef,
    view: &PodView,
    calls: &[JobCall],
) -> Result<(Settled, Desired)> {
    let settings = &inner.settings;
    let before = current_count(settings, pod, view)?;
    let state = jobs::decode(view.annotation(&settings.jobs_annotation)).map_err(|problem| {
        Error::NotJobs {
            pod: pod.clone(),
            annotation: settings.jobs_annotation.clone(),
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
            label: settings.label.clone(),
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
        settings.jobs_annotation.clone(),
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
fn refused(
    settings: &Settings,
    pod: &PodRef,
    view: &PodView,
    call: &JobCall,
    refusal: Refusal,
) -> Error {
    match refusal {
        Refusal::Overflow(delta) => Error::Overflow {
            pod: pod.clone(),
            label: settings.label.clone(),
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
