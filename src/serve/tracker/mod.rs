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
//!
//! The writer's parts: [`slots`] (what is kept per pod between calls, and the timers),
//! [`writer`] (the task that runs while a pod has work, batching queued calls), [`rounds`]
//! (rounds of read → compute → guarded write, and settling a lost answer), [`batch`] (every
//! caller's count and what to store), [`bookkeeping`] (status, metrics and events after a
//! stored batch), [`trim`] (memory back to the system once most pods are forgotten).

mod batch;
mod bookkeeping;
mod rounds;
mod slots;
mod trim;
mod unresolved;
mod writer;

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use kube_labels::Selector;
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};

use crate::api::PodClient;
use crate::core::count::Policy;
use crate::core::jobs::{Job, JobCall, Limits};
use crate::core::keys::TrackerKeys;
use crate::core::pod::PodRef;
use crate::core::view::{PodView, ViewKeys};
use crate::error::{Error, Result};

use batch::current_count;
use rounds::final_or_retry;
use slots::{Pods, Round};
use writer::{run_timers, run_writer};

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
    /// The counting label and the annotations named after it.
    pub keys: TrackerKeys,
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

/// What `/status` reports of the pods: see [`Tracker::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCensus {
    /// Pods with a stored count.
    pub tracked: usize,
    /// Of them, those whose count is not zero.
    pub busy: usize,
    /// The statuses asked for, sorted by pod.
    pub pods: Vec<PodStatus>,
}

struct Call {
    call: JobCall,
    reply: oneshot::Sender<Result<i64>>,
    /// When it was queued: its retry budget runs from then, not from when its batch starts.
    received: Instant,
}

struct Inner {
    client: PodClient,
    settings: Settings,
    /// What a kept view of a pod holds (see [`PodView::keep`]).
    view_keys: ViewKeys,
    /// Every tracked pod's slot and timer.
    pods: Mutex<Pods>,
    /// Woken when a writer parks with a timer (the timer task may need to wake earlier).
    timers_changed: Arc<Notify>,
    runtime: Handle,
    instance: String,
    next_write: AtomicU64,
    /// Cleared for good when the API server refuses to create events (no rights).
    events_allowed: AtomicBool,
    /// Woken after every stored write, for `/wait-idle`.
    stored_writes: Notify,
}

impl Inner {
    fn pods(&self) -> MutexGuard<'_, Pods> {
        // Slots are changed in steps that never panic halfway.
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the pod's writer (after [`Pods`] said none runs).
    fn start_writer(self: &Arc<Self>, pod: PodRef) {
        self.runtime.spawn(run_writer(Arc::clone(self), pod));
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The timer task ends once it sees the tracker gone.
        self.timers_changed.notify_one();
    }
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
        let timers_changed = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            view_keys: ViewKeys::of(
                &settings.keys,
                settings.selector.as_ref(),
                &settings.active_annotations,
                settings.release_on_restart.as_deref(),
            ),
            client,
            settings,
            pods: Mutex::new(Pods::default()),
            timers_changed: Arc::clone(&timers_changed),
            runtime,
            instance,
            next_write: AtomicU64::new(1),
            events_allowed: AtomicBool::new(true),
            stored_writes: Notify::new(),
        });
        inner
            .runtime
            .spawn(run_timers(Arc::downgrade(&inner), timers_changed));
        Tracker { inner }
    }

    /// Queues one call; the receiver gets exactly one answer: the count right after this call,
    /// or why it was not applied.
    ///
    /// Never blocks, so it can be called from the HTTP threads.
    pub fn submit(&self, pod: PodRef, call: JobCall) -> oneshot::Receiver<Result<i64>> {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            call,
            reply,
            received: Instant::now(),
        };
        if self.inner.pods().enqueue(&pod, call) {
            self.inner.start_writer(pod);
        }
        answer
    }

    /// Has the pod's writer release its jobs past their deadline, in an ordinary guarded
    /// round (the standalone sweep; `listed` is the pod as the list showed it).
    pub fn sweep(&self, pod: PodRef, listed: PodView) {
        self.ask_round(pod, Round::Sweep(Box::new(listed)));
    }

    fn ask_round(&self, pod: PodRef, round: Round) {
        if self.inner.pods().ask_round(&pod, round) {
            self.inner.start_writer(pod);
        }
    }

    /// The names of the pods of `namespace` the tracker keeps, sorted (a sweep marks those it
    /// lists).
    pub fn tracked_in(&self, namespace: &str) -> Vec<String> {
        self.inner.pods().names_in(namespace)
    }

    /// Forgets the pods of `namespace` named in `names` that have no call or round in
    /// progress: a complete sweep did not list them (deleted, or no longer selected). Returns
    /// how many were forgotten.
    pub fn forget_unlisted(&self, namespace: &str, names: Vec<String>) -> usize {
        let (forgotten, shrunk) = {
            let mut pods = self.inner.pods();
            let forgotten = pods.forget_unlisted(namespace, names);
            (forgotten, pods.take_shrunk())
        };
        for pod in &forgotten {
            self.inner.client.metrics().forget(pod);
        }
        if shrunk {
            trim::give_back_free_memory();
        }
        forgotten.len()
    }

    /// How many pods the tracker keeps a slot for.
    pub fn tracked_pods(&self) -> usize {
        self.inner.pods().len()
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
    ///
    /// The view's deadlines and rechecks are scheduled at once: jobs found on the pod are
    /// released when due, before any call.
    pub fn prime(&self, pod: PodRef, view: PodView) {
        let next = writer::next_timer(&self.inner.settings, Some(&view), None, Instant::now());
        let view = view.keep(&self.inner.view_keys);
        if self.inner.pods().prime(&pod, view, next) && next.is_some() {
            self.inner.timers_changed.notify_one();
        }
    }

    /// What was last stored for each tracked pod.
    ///
    /// Returns how many pods have a stored count, how many of them are busy, and the
    /// statuses of those `wanted` picks (given the pod and its count), sorted by pod.
    pub fn status(&self, wanted: impl Fn(&PodRef, i64) -> bool) -> StatusCensus {
        let census = self.inner.pods().stored(wanted);
        let policy = self.inner.settings.policy;
        let mut pods: Vec<PodStatus> = census
            .picked
            .into_iter()
            .map(|(pod, stored)| PodStatus {
                pod,
                count: stored.count,
                label: crate::core::count::label_for(stored.count, policy),
                updated: stored.updated,
                jobs: stored.jobs,
            })
            .collect();
        pods.sort_by(|a, b| a.pod.cmp(&b.pod));
        StatusCensus {
            tracked: census.tracked,
            busy: census.busy,
            pods,
        }
    }
}

/// The most calls folded into one write; bounds the work a single round repeats on a conflict.
const MAX_BATCH: usize = 4096;

/// How often `/wait-idle` reads the pod when no write of this tracker wakes it.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// After a failed expiry round, the next one waits at least this long (no busy loop when the
/// pod cannot be written, e.g. its label is not a count).
const EXPIRY_RETRY: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::keys::TrackerKeys;
    use crate::metrics::Metrics;

    const TOKEN: &str = "writer-test";

    fn settings() -> Settings {
        Settings {
            keys: TrackerKeys::new("active-jobs").expect("a valid label"),
            selector: None,
            policy: Policy {
                allow_negative: false,
                remove_on_zero: true,
            },
            retry: RetryPolicy::default(),
            idle_writer: None,
            events: false,
            limits: Limits::default(),
            active_annotations: Vec::new(),
            release_on_restart: None,
            recheck: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_panics_drops_its_calls_answers_and_the_next_call_gets_a_new_writer() {
        let api = kube_double::ApiServer::start();
        api.add_token(TOKEN, kube_double::User::new("tracker"));
        api.allow(
            kube_double::Subject::user("tracker"),
            kube_double::Rule::new(["get", "patch"], ["pods"]).namespace("jobs"),
        );
        api.create_pod("jobs", "w1", &[]);
        let mut config = kube::Config::new(api.url().parse().expect("a URL"));
        config.auth_info.token = Some(TOKEN.to_owned().into());
        let client = kube::Client::try_from(config).expect("a client");
        let pods = PodClient::new(client, None, Arc::new(Metrics::new()));
        let tracker = Tracker::new(pods, settings(), Handle::current());
        let pod = PodRef::new("jobs", "w1");
        let first = tracker.submit(
            pod.clone(),
            JobCall::anonymous(crate::core::jobs::Action::Increment),
        );
        assert_eq!(first.await.expect("answered").expect("counted"), 1);
        // The writer panics holding a call: that call is never answered (the route answers its
        // caller 500, see `http::writer_failed`) and nothing is stored for it.
        let (reply, lost) = oneshot::channel();
        let call = JobCall::anonymous(crate::core::jobs::Action::Increment);
        let received = Instant::now();
        tracker.ask_round(
            pod.clone(),
            Round::Panic(Call {
                call,
                reply,
                received,
            }),
        );
        assert!(lost.await.is_err(), "the panicked writer dropped the call");
        // Once the dead writer's slot is gone, the next call starts a new writer.
        let dead = std::time::Instant::now();
        while tracker.tracked_pods() != 0 {
            assert!(
                dead.elapsed() < Duration::from_secs(5),
                "the dead writer's slot was dropped"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let next = tracker.submit(
            pod.clone(),
            JobCall::anonymous(crate::core::jobs::Action::Increment),
        );
        assert_eq!(next.await.expect("answered").expect("counted"), 2);
        assert_eq!(
            api.labels("jobs", "w1")
                .and_then(|labels| labels.get("active-jobs").cloned())
                .as_deref(),
            Some("2")
        );
    }
}
