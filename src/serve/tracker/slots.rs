//! What the tracker keeps per pod between calls: a small slot (queued calls, the trimmed view,
//! what was last stored for `/status`, one timer), and the one schedule of every slot's timer.
//!
//! No task or channel lives per idle pod: a writer task runs only while its pod has work
//! ([`Pods::enqueue`] says when to start one, [`Pods::next_work`] and [`Pods::park`] end it),
//! and one timer task for all pods wakes slots whose deadline, recheck or idle time has come.
//! Everything here runs under one lock and never awaits.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Instant, SystemTime};

use crate::core::jobs::Job;
use crate::core::pod::PodRef;
use crate::core::view::{KeptView, PodView};

use super::Call;

/// What a timer or the sweep asks of a writer besides calls: a round without calls.
pub(super) enum Round {
    /// A keyed job's deadline passed: release it.
    Deadline,
    /// Time to read the pod again (`Settings::recheck`): release what it shows is over.
    Recheck,
    /// The sweep saw a job past its deadline: release it, starting from this view.
    Sweep(Box<PodView>),
    /// Tests only: the writer panics holding this call, as a bug in it would.
    #[cfg(test)]
    Panic(Call),
}

/// Why a slot's timer is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// A keyed job's deadline.
    Deadline,
    /// The next recheck.
    Recheck,
    /// The idle time ends: forget the pod.
    Idle,
}

/// A pod's state between calls.
#[derive(Default)]
pub(super) struct Slot {
    /// Calls not yet taken by the writer.
    calls: VecDeque<Call>,
    /// A round asked for besides the calls (the latest wins; a batch of calls does it too).
    round: Option<Round>,
    /// A writer task owns the pod now (it holds the view).
    running: bool,
    /// The last view of the pod, trimmed to what counting reads; `None` while a writer runs
    /// or when the next round must read the pod.
    known: Option<KeptView>,
    /// What the last stored batch left, for `/status`; `None` before the first.
    stored: Option<Stored>,
    /// No expiry round before this (after a failed one).
    expiry_not_before: Option<Instant>,
    /// This slot's entry in [`Pods::timers`].
    timer: Option<TimerKey>,
}

/// When a timer fires, and a sequence number that keeps keys unique.
pub(super) type TimerKey = (Instant, u64);

/// What a writer takes from its slot.
pub(super) enum Work {
    /// Calls to fold into one write.
    Calls(Vec<Call>),
    /// A round without calls.
    Round(Round),
}

/// What the last stored batch left on a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stored {
    /// The count then.
    pub(super) count: i64,
    /// When it was stored.
    pub(super) updated: SystemTime,
    /// The keyed jobs running then, by id.
    pub(super) jobs: BTreeMap<String, Job>,
}

/// What [`Pods::stored`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Census {
    pub(super) tracked: usize,
    pub(super) busy: usize,
    pub(super) picked: Vec<(PodRef, Stored)>,
}

/// What a starting writer takes over from its slot.
pub(super) struct Resumed {
    pub(super) known: Option<KeptView>,
    pub(super) expiry_not_before: Option<Instant>,
}

/// What a timer woke: the pods whose writer must start, and the pods forgotten.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Fired {
    pub(super) start: Vec<PodRef>,
    pub(super) forgotten: Vec<PodRef>,
}

/// Every tracked pod's slot and the schedule of their timers.
#[derive(Default)]
pub(super) struct Pods {
    /// Boxed: a map keeps room for more entries than it holds, and an empty place should cost
    /// a pointer, not a whole slot.
    slots: HashMap<PodRef, Box<Slot>>,
    timers: BTreeMap<TimerKey, (PodRef, Timer)>,
    next_timer: u64,
    /// The slot map shrank since [`Pods::take_shrunk`] was last asked.
    shrunk: bool,
}

impl Pods {
    /// Queues a call; `true` when no writer runs for the pod and the caller must start one.
    pub(super) fn enqueue(&mut self, pod: &PodRef, call: Call) -> bool {
        let slot = self.slot(pod);
        slot.calls.push_back(call);
        slot.start()
    }

    /// Asks for a round without calls; `true` when the caller must start a writer.
    pub(super) fn ask_round(&mut self, pod: &PodRef, round: Round) -> bool {
        let slot = self.slot(pod);
        slot.round = Some(round);
        slot.start()
    }

    /// Keeps a freshly read view for the pod's first writer, unless the pod already has a slot
    /// (its writer knows better).
    ///
    /// `next` is the timer the view calls for (a job's deadline, a recheck), so that the jobs a
    /// restarted tracker finds are released without waiting for a call. Returns whether the
    /// view was kept.
    pub(super) fn prime(
        &mut self,
        pod: &PodRef,
        view: KeptView,
        next: Option<(Instant, Timer)>,
    ) -> bool {
        if self.slots.contains_key(pod) {
            return false;
        }
        self.slot(pod).known = Some(view);
        self.set_timer(pod, next);
        true
    }

    /// A starting writer takes the slot's view and expiry pause.
    pub(super) fn resume(&mut self, pod: &PodRef) -> Resumed {
        let slot = self.slot(pod);
        Resumed {
            known: slot.known.take(),
            expiry_not_before: slot.expiry_not_before.take(),
        }
    }

    /// The writer's next work: up to `max` queued calls, or else the round asked for; `None`
    /// when there is nothing (then the writer must [`Pods::park`] before it lets the lock go).
    pub(super) fn next_work(&mut self, pod: &PodRef, max: usize) -> Option<Work> {
        let slot = self.slots.get_mut(pod)?;
        if slot.calls.is_empty() {
            return slot.round.take().map(Work::Round);
        }
        // This batch's round releases what is due anyway.
        #[cfg(test)]
        if let Some(Round::Panic(_)) = slot.round {
            return slot.round.take().map(Work::Round);
        }
        slot.round = None;
        let take = slot.calls.len().min(max);
        Some(Work::Calls(slot.calls.drain(..take).collect()))
    }

    /// The writer stops: it leaves its view and sets the slot's next timer (`None`: none).
    /// `forget`: the pod is gone, keep nothing. Call only right after [`Pods::next_work`]
    /// returned `None`, under the same lock.
    pub(super) fn park(
        &mut self,
        pod: &PodRef,
        resumed: Resumed,
        next: Option<(Instant, Timer)>,
        forget: bool,
    ) {
        if forget {
            self.remove(pod);
            return;
        }
        let Some(slot) = self.slots.get_mut(pod) else {
            return;
        };
        slot.running = false;
        slot.known = resumed.known;
        slot.expiry_not_before = resumed.expiry_not_before;
        self.set_timer(pod, next);
    }

    /// Replaces the slot's timer (`None`: no timer).
    fn set_timer(&mut self, pod: &PodRef, next: Option<(Instant, Timer)>) {
        let new = next.map(|(at, timer)| {
            let key = (at, self.next_timer);
            self.next_timer = self.next_timer.wrapping_add(1);
            (key, timer)
        });
        let Some(slot) = self.slots.get_mut(pod) else {
            return;
        };
        let old = std::mem::replace(&mut slot.timer, new.map(|(key, _)| key));
        if let Some(old) = old {
            self.timers.remove(&old);
        }
        if let Some((key, timer)) = new {
            self.timers.insert(key, (pod.clone(), timer));
        }
    }

    /// Drops the pod's slot, its queued calls (their callers learn the writer failed) and its
    /// timer: after a writer's panic, or when it is gone.
    pub(super) fn remove(&mut self, pod: &PodRef) {
        if let Some(slot) = self.slots.remove(pod)
            && let Some(key) = slot.timer
        {
            self.timers.remove(&key);
        }
        self.shrink();
    }

    /// Gives memory back once most pods are forgotten (a fleet that shrank, or a burst of new
    /// names that went idle).
    fn shrink(&mut self) {
        if self.slots.len().saturating_mul(4) < self.slots.capacity() {
            self.slots.shrink_to(self.slots.len().saturating_mul(2));
            self.shrunk = true;
        }
    }

    /// Whether the slot map shrank since last asked: most pods are forgotten, and the memory
    /// they took is worth giving back to the system.
    pub(super) fn take_shrunk(&mut self) -> bool {
        std::mem::take(&mut self.shrunk)
    }

    /// Records what a stored batch left (the pod's writer is running, so its slot exists).
    pub(super) fn record(&mut self, pod: &PodRef, stored: Stored) {
        if let Some(slot) = self.slots.get_mut(pod) {
            slot.stored = Some(stored);
        }
    }

    /// Whether a batch was ever stored for the pod (and not cleared since).
    pub(super) fn has_stored(&self, pod: &PodRef) -> bool {
        self.slots
            .get(pod)
            .is_some_and(|slot| slot.stored.is_some())
    }

    /// Forgets what was stored for the pod (it is gone); its slot goes when its writer parks.
    pub(super) fn clear_stored(&mut self, pod: &PodRef) {
        if let Some(slot) = self.slots.get_mut(pod) {
            slot.stored = None;
        }
    }

    /// The pods with something stored: how many, how many of them busy (count not zero),
    /// and those `wanted` picks (given the pod and its count).
    pub(super) fn stored(&self, wanted: impl Fn(&PodRef, i64) -> bool) -> Census {
        let mut census = Census::default();
        for (pod, slot) in &self.slots {
            if let Some(stored) = &slot.stored {
                census.tracked = census.tracked.saturating_add(1);
                if stored.count != 0 {
                    census.busy = census.busy.saturating_add(1);
                }
                if wanted(pod, stored.count) {
                    census.picked.push((pod.clone(), stored.clone()));
                }
            }
        }
        census
    }

    /// When the earliest timer fires.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.timers.first_key_value().map(|(&(at, _), _)| at)
    }

    /// Fires every timer due at `now`: a deadline or recheck asks its slot for a round, an
    /// idle time forgets its slot (a slot with work is never idle: its timer is set again
    /// when its writer parks).
    pub(super) fn fire(&mut self, now: Instant) -> Fired {
        let mut fired = Fired::default();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (key, (pod, timer)) = entry.remove_entry();
            let Some(slot) = self.slots.get_mut(&pod) else {
                continue;
            };
            if slot.timer != Some(key) {
                continue;
            }
            slot.timer = None;
            match timer {
                Timer::Idle => {
                    if !slot.running && slot.calls.is_empty() && slot.round.is_none() {
                        self.slots.remove(&pod);
                        fired.forgotten.push(pod);
                    }
                }
                Timer::Deadline | Timer::Recheck => {
                    slot.round = Some(if timer == Timer::Recheck {
                        Round::Recheck
                    } else {
                        Round::Deadline
                    });
                    if slot.start() {
                        fired.start.push(pod);
                    }
                }
            }
        }
        self.shrink();
        fired
    }

    /// The names of the pods of `namespace` with a slot, sorted.
    pub(super) fn names_in(&self, namespace: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .slots
            .keys()
            .filter(|pod| pod.namespace == namespace)
            .map(|pod| pod.name.clone())
            .collect();
        names.sort_unstable();
        names
    }

    /// Forgets the pods of `namespace` named in `names` whose slots have no work (a sweep did
    /// not list them: deleted, or no longer selected); returns those forgotten. A pod that does
    /// exist only costs a read at its next call: a slot is a cache of what the label holds.
    pub(super) fn forget_unlisted(&mut self, namespace: &str, names: Vec<String>) -> Vec<PodRef> {
        let mut forgotten = Vec::new();
        for name in names {
            let pod = PodRef::new(namespace, name);
            let idle = self
                .slots
                .get(&pod)
                .is_some_and(|slot| !slot.running && slot.calls.is_empty() && slot.round.is_none());
            if idle {
                self.remove(&pod);
                forgotten.push(pod);
            }
        }
        forgotten
    }

    /// How many pods have a slot.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    fn slot(&mut self, pod: &PodRef) -> &mut Slot {
        self.slots.entry(pod.clone()).or_default()
    }
}

impl Slot {
    /// Marks a writer as running; `true` when none was.
    fn start(&mut self) -> bool {
        !std::mem::replace(&mut self.running, true)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;
    use crate::core::jobs::{Action, JobCall};
    use crate::core::view::ViewKeys;

    fn kept(uid: &str) -> KeptView {
        PodView {
            uid: Some(uid.to_owned()),
            ..PodView::default()
        }
        .keep(&ViewKeys::default())
    }

    fn call() -> (Call, oneshot::Receiver<crate::error::Result<i64>>) {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            call: JobCall::anonymous(Action::Increment),
            reply,
            received: Instant::now(),
        };
        (call, answer)
    }

    fn pod(name: &str) -> PodRef {
        PodRef::new("jobs", name)
    }

    fn resumed(pods: &mut Pods, pod: &PodRef) -> Resumed {
        pods.resume(pod)
    }

    #[test]
    fn only_the_first_call_to_an_idle_pod_starts_a_writer_and_the_writer_takes_every_queued_call() {
        let mut pods = Pods::default();
        let w1 = pod("w1");
        assert!(pods.enqueue(&w1, call().0));
        assert!(!pods.enqueue(&w1, call().0));
        assert!(!pods.enqueue(&w1, call().0));
        let Some(Work::Calls(batch)) = pods.next_work(&w1, 2) else {
            panic!("a batch of calls")
        };
        assert_eq!(batch.len(), 2, "at most the batch size");
        let Some(Work::Calls(batch)) = pods.next_work(&w1, 2) else {
            panic!("the rest")
        };
        assert_eq!(batch.len(), 1);
        assert!(pods.next_work(&w1, 2).is_none());
        let state = resumed(&mut pods, &w1);
        pods.park(&w1, state, None, false);
        assert!(
            pods.enqueue(&w1, call().0),
            "a parked pod needs a new writer"
        );
    }

    #[test]
    fn a_parked_writer_leaves_its_view_for_the_next_one() {
        let mut pods = Pods::default();
        let w1 = pod("w1");
        assert!(pods.enqueue(&w1, call().0));
        let view = kept("u1");
        let _ = pods.next_work(&w1, 8);
        assert!(pods.next_work(&w1, 8).is_none());
        let state = Resumed {
            known: Some(view.clone()),
            expiry_not_before: None,
        };
        pods.park(&w1, state, None, false);
        assert!(pods.enqueue(&w1, call().0));
        assert_eq!(pods.resume(&w1).known, Some(view));
    }

    #[test]
    fn an_idle_timer_forgets_a_pod_that_has_no_work_and_only_its_own_latest_timer_counts() {
        let mut pods = Pods::default();
        let (w1, w2) = (pod("w1"), pod("w2"));
        let now = Instant::now();
        for pod in [&w1, &w2] {
            assert!(pods.enqueue(pod, call().0));
            let _ = pods.next_work(pod, 8);
            assert!(pods.next_work(pod, 8).is_none());
            let state = resumed(&mut pods, pod);
            pods.park(pod, state, Some((now, Timer::Idle)), false);
        }
        // w2 is called again before its idle time: its writer runs, so it is not forgotten,
        // and parking again replaces its timer.
        assert!(pods.enqueue(&w2, call().0));
        let fired = pods.fire(now);
        assert_eq!(fired.forgotten, vec![w1.clone()]);
        assert!(fired.start.is_empty());
        assert_eq!(pods.len(), 1);
        let _ = pods.next_work(&w2, 8);
        assert!(pods.next_work(&w2, 8).is_none());
        let later = now + Duration::from_secs(60);
        let state = resumed(&mut pods, &w2);
        pods.park(&w2, state, Some((later, Timer::Idle)), false);
        assert_eq!(pods.next_timer(), Some(later));
        assert_eq!(pods.fire(now), Fired::default(), "not due yet");
        assert_eq!(pods.fire(later).forgotten, vec![w2]);
        assert_eq!(pods.len(), 0);
        assert_eq!(pods.slots.capacity(), 0, "the memory is given back");
        assert!(pods.take_shrunk());
        assert!(!pods.take_shrunk(), "told once");
        assert_eq!(pods.next_timer(), None);
    }

    #[test]
    fn a_deadline_timer_asks_for_a_round_and_starts_a_writer_only_if_none_runs() {
        let mut pods = Pods::default();
        let w1 = pod("w1");
        let now = Instant::now();
        assert!(pods.enqueue(&w1, call().0));
        let _ = pods.next_work(&w1, 8);
        assert!(pods.next_work(&w1, 8).is_none());
        let state = resumed(&mut pods, &w1);
        pods.park(&w1, state, Some((now, Timer::Deadline)), false);
        assert_eq!(pods.fire(now).start, vec![w1.clone()]);
        assert!(matches!(
            pods.next_work(&w1, 8),
            Some(Work::Round(Round::Deadline))
        ));
        assert!(pods.next_work(&w1, 8).is_none());
    }

    #[test]
    fn a_pod_found_gone_keeps_nothing_and_its_queued_callers_learn_the_writer_failed() {
        let mut pods = Pods::default();
        let w1 = pod("w1");
        let (first, _) = call();
        assert!(pods.enqueue(&w1, first));
        let _ = pods.next_work(&w1, 8);
        let state = resumed(&mut pods, &w1);
        pods.park(&w1, state, Some((Instant::now(), Timer::Idle)), true);
        assert_eq!(pods.len(), 0);
        assert_eq!(pods.next_timer(), None);
        let (queued, answer) = call();
        assert!(pods.enqueue(&w1, queued));
        pods.remove(&w1);
        assert!(answer.blocking_recv().is_err(), "the call was dropped");
    }

    #[test]
    fn only_pods_with_a_stored_batch_are_tracked_and_a_gone_pods_entry_is_cleared_at_once() {
        let mut pods = Pods::default();
        let (w1, w2) = (pod("w1"), pod("w2"));
        let stored = |count| Stored {
            count,
            updated: SystemTime::UNIX_EPOCH,
            jobs: BTreeMap::new(),
        };
        assert!(pods.enqueue(&w1, call().0));
        assert!(pods.enqueue(&w2, call().0));
        pods.record(&w1, stored(0));
        pods.record(&w2, stored(3));
        let census = pods.stored(|pod, _| pod.name == "w2");
        assert_eq!((census.tracked, census.busy), (2, 1));
        assert_eq!(census.picked, vec![(w2.clone(), stored(3))]);
        pods.clear_stored(&w2);
        assert_eq!(pods.stored(|_, _| true).tracked, 1);
        assert_eq!(pods.len(), 2, "the slot stays until its writer parks");
    }

    #[test]
    fn a_sweep_forgets_only_unlisted_pods_of_its_namespace_that_have_no_work() {
        let mut pods = Pods::default();
        let (w1, w2, busy) = (pod("w1"), pod("w2"), pod("busy"));
        let elsewhere = PodRef::new("other", "w1");
        for pod in [&w1, &w2, &busy, &elsewhere] {
            assert!(pods.enqueue(pod, call().0));
            let _ = pods.next_work(pod, 8);
            assert!(pods.next_work(pod, 8).is_none());
            let state = resumed(&mut pods, pod);
            pods.park(pod, state, Some((Instant::now(), Timer::Idle)), false);
        }
        assert!(pods.enqueue(&busy, call().0), "busy has work again");
        assert_eq!(pods.names_in("jobs"), vec!["busy", "w1", "w2"]);
        let unlisted = vec!["busy".to_owned(), "w2".to_owned(), "never".to_owned()];
        assert_eq!(pods.forget_unlisted("jobs", unlisted), vec![w2]);
        assert_eq!(pods.names_in("jobs"), vec!["busy", "w1"]);
        assert_eq!(pods.names_in("other"), vec!["w1"]);
    }

    #[test]
    fn a_primed_view_is_kept_only_for_a_pod_without_a_slot() {
        let mut pods = Pods::default();
        let w1 = pod("w1");
        let due = Instant::now();
        assert!(pods.prime(&w1, kept("first"), Some((due, Timer::Deadline))));
        assert!(!pods.prime(&w1, kept("second"), None));
        assert_eq!(pods.next_timer(), Some(due), "the view's deadline is kept");
        assert!(pods.enqueue(&w1, call().0), "priming starts no writer");
        assert_eq!(pods.resume(&w1).known, Some(kept("first")));
    }
}
