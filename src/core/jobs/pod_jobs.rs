//! A pod's jobs as one batch of calls sees them: anonymous and keyed jobs, the limits a call is
//! checked against, and how one call changes them. One piece with its tests (which make up
//! most of its length): every rule of a call is proven through [`PodJobs::apply`] here.

use std::time::Duration;

use crate::core::count::{self, Delta, Policy};
use crate::core::durations::MAX_UNIX_SECONDS;

use super::{ANONYMOUS_PREFIX, Action, Job, JobCall, JobState, MAX_ACTIVE_JOBS};

/// The limits calls are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest a keyed job may run without a renewal (`--max-job-duration`); also the
    /// lifetime of a keyed job that asks for none. `None`: no limit.
    pub max_duration: Option<Duration>,
    /// The most keyed jobs at once.
    pub max_jobs: usize,
    /// The lifetime of an anonymous job (`--anonymous-job-ttl`): when set, an anonymous
    /// increment is recorded as a job with a generated id and this deadline. `None`: anonymous
    /// jobs are only counted (the original behaviour).
    pub anonymous_ttl: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_duration: None,
            max_jobs: MAX_ACTIVE_JOBS,
            anonymous_ttl: None,
        }
    }
}

impl Limits {
    /// The deadline of a job started or renewed at `now` that asked for `ttl`.
    pub fn deadline(&self, now: u64, ttl: Option<Duration>) -> Option<u64> {
        let lifetime = match (ttl, self.max_duration) {
            (Some(ttl), Some(max)) => ttl.min(max),
            (Some(ttl), None) => ttl,
            (None, Some(max)) => max,
            (None, None) => return None,
        };
        // Lifetimes are bounded at parse time; the cap keeps a deadline writable as a
        // timestamp whatever the clock says.
        Some(
            now.saturating_add(lifetime.as_secs().max(1))
                .min(MAX_UNIX_SECONDS),
        )
    }
}

/// Why one call was refused; nothing was changed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The count would leave the 64-bit range.
    Overflow(Delta),
    /// A new keyed job would exceed [`Limits::max_jobs`].
    TooManyJobs(usize),
    /// A renewal for a job that is not running.
    UnknownJob(String),
    /// A new job on a pod that is being deleted.
    Deleting,
}

/// A pod's jobs as one batch of calls sees them: anonymous jobs, keyed jobs and the count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodJobs {
    /// Jobs started without a key (may be negative with `--allow-negative`).
    pub anonymous: i64,
    /// Keyed jobs and saved annotation values.
    pub state: JobState,
}

impl PodJobs {
    /// Splits a count (the label) into anonymous and keyed jobs. Without `allow_negative`, a
    /// label below the number of keyed jobs (someone lowered it by hand) leaves no anonymous
    /// jobs rather than a debt, so the next write stores a count that covers the keyed jobs.
    pub fn from_count(count: i64, state: JobState, policy: Policy) -> Self {
        let keyed = state.jobs.len() as i64;
        let anonymous = count.saturating_sub(keyed);
        PodJobs {
            anonymous: if policy.allow_negative {
                anonymous
            } else {
                anonymous.max(0)
            },
            state,
        }
    }

    /// The count the label holds: anonymous plus keyed jobs.
    pub fn count(&self) -> Result<i64, count::Overflow> {
        self.anonymous
            .checked_add(self.state.jobs.len() as i64)
            .ok_or(count::Overflow)
    }

    /// Releases every keyed job whose deadline is at or before `now`; returns them.
    pub fn expire(&mut self, now: u64) -> Vec<(String, Job)> {
        let expired: Vec<String> = self
            .state
            .jobs
            .iter()
            .filter(|(_, job)| job.deadline.is_some_and(|deadline| deadline <= now))
            .map(|(id, _)| id.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|id| self.state.jobs.remove_entry(&id))
            .collect()
    }

    /// Releases every job (keyed, or anonymous with a lifetime) that started before `cutoff`
    /// (Unix seconds, exclusive): the jobs of a container instance that has since ended. A job
    /// started in the same second is kept: keeping a pod protected a little longer is the
    /// safe side.
    pub fn release_started_before(&mut self, cutoff: u64) -> Vec<(String, Job)> {
        let ended: Vec<String> = self
            .state
            .jobs
            .iter()
            .filter(|(_, job)| job.started < cutoff)
            .map(|(id, _)| id.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|id| self.state.jobs.remove_entry(&id))
            .collect()
    }

    /// The oldest anonymous job recorded with a lifetime (by start, then id).
    fn oldest_anonymous(&self) -> Option<String> {
        self.state
            .jobs
            .iter()
            .filter(|(id, _)| id.starts_with(ANONYMOUS_PREFIX))
            .min_by_key(|(id, job)| (job.started, id.as_str()))
            .map(|(id, _)| id.clone())
    }

    /// A fresh id for an anonymous job started at `now`.
    fn anonymous_id(&self, now: u64) -> String {
        (0u64..)
            .map(|n| format!("{ANONYMOUS_PREFIX}{now}-{n}"))
            .find(|id| !self.state.jobs.contains_key(id))
            .unwrap_or_else(|| format!("{ANONYMOUS_PREFIX}{now}"))
    }

    /// Applies one call at `now`; returns the count right after it. A refused call changes
    /// nothing. `deleting`: the pod is being deleted, so no new job may start.
    pub fn apply(
        &mut self,
        call: &JobCall,
        now: u64,
        limits: &Limits,
        policy: Policy,
        deleting: bool,
    ) -> Result<i64, Refusal> {
        // A clock past what a timestamp can hold must not write a start nobody can read back.
        let now = now.min(MAX_UNIX_SECONDS);
        let before = self.clone();
        let outcome = self.change(call, now, limits, policy, deleting);
        let counted = outcome.and_then(|()| {
            self.count()
                .map_err(|count::Overflow| overflow(call.action))
        });
        if counted.is_err() {
            *self = before;
        }
        counted
    }

    fn change(
        &mut self,
        call: &JobCall,
        now: u64,
        limits: &Limits,
        policy: Policy,
        deleting: bool,
    ) -> Result<(), Refusal> {
        match (call.action, &call.job) {
            (Action::Increment, None) => {
                if deleting {
                    return Err(Refusal::Deleting);
                }
                if let Some(ttl) = limits.anonymous_ttl {
                    if self.state.jobs.len() >= limits.max_jobs {
                        return Err(Refusal::TooManyJobs(limits.max_jobs));
                    }
                    let job = Job {
                        started: now,
                        deadline: limits.deadline(now, Some(ttl)),
                    };
                    self.state.jobs.insert(self.anonymous_id(now), job);
                } else {
                    self.anonymous = count::apply(self.anonymous, Delta::Increment, policy)
                        .map_err(|count::Overflow| Refusal::Overflow(Delta::Increment))?;
                }
            }
            // An anonymous job recorded with a lifetime ends first (the oldest); otherwise
            // the plain counter goes down.
            (Action::Decrement, None) => match self.oldest_anonymous() {
                Some(id) => {
                    self.state.jobs.remove(&id);
                }
                None => {
                    self.anonymous = count::apply(self.anonymous, Delta::Decrement, policy)
                        .map_err(|count::Overflow| Refusal::Overflow(Delta::Decrement))?;
                }
            },
            // Already running: a retried start changes nothing (also on a deleting pod: the
            // job did start, and its caller only lost the answer).
            (Action::Increment, Some(id)) if self.state.jobs.contains_key(id) => {}
            (Action::Increment, Some(id)) => {
                if deleting {
                    return Err(Refusal::Deleting);
                }
                if self.state.jobs.len() >= limits.max_jobs {
                    return Err(Refusal::TooManyJobs(limits.max_jobs));
                }
                let job = Job {
                    started: now,
                    deadline: limits.deadline(now, call.ttl),
                };
                self.state.jobs.insert(id.clone(), job);
            }
            // Unknown or already finished: nothing to do.
            (Action::Decrement, Some(id)) => {
                self.state.jobs.remove(id);
            }
            (Action::Renew, None) => return Err(Refusal::UnknownJob(String::new())),
            (Action::Renew, Some(id)) => match self.state.jobs.get_mut(id) {
                Some(job) => job.deadline = limits.deadline(now, call.ttl),
                None => return Err(Refusal::UnknownJob(id.clone())),
            },
        }
        Ok(())
    }
}

fn overflow(action: Action) -> Refusal {
    Refusal::Overflow(action.delta().unwrap_or(Delta::Increment))
}

/// True if some job of `state` is past its deadline at `now` (a sweep routes a round to it).
pub fn has_due_job(state: &JobState, now: u64) -> bool {
    state
        .jobs
        .values()
        .any(|job| job.deadline.is_some_and(|deadline| deadline <= now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::jobs::tests::{DEFAULT, NEGATIVE, call, documents, fresh, limits};
    use crate::core::jobs::{decode, encode, validate_job_id};

    #[test]
    fn a_repeated_keyed_increment_changes_nothing_and_answers_the_current_count() {
        let mut jobs = fresh();
        let l = limits(None);
        assert_eq!(
            jobs.apply(&call(Action::Increment, "a"), 10, &l, DEFAULT, false),
            Ok(1)
        );
        assert_eq!(
            jobs.apply(&call(Action::Increment, "a"), 20, &l, DEFAULT, false),
            Ok(1)
        );
        assert_eq!(jobs.state.jobs["a"].started, 10, "the first start stands");
    }

    #[test]
    fn a_keyed_decrement_of_an_unknown_or_finished_job_changes_nothing() {
        let mut jobs = fresh();
        let l = limits(None);
        jobs.apply(
            &JobCall::anonymous(Action::Increment),
            1,
            &l,
            DEFAULT,
            false,
        )
        .expect("applies");
        assert_eq!(
            jobs.apply(&call(Action::Decrement, "nope"), 1, &l, DEFAULT, false),
            Ok(1)
        );
        jobs.apply(&call(Action::Increment, "a"), 1, &l, DEFAULT, false)
            .expect("applies");
        assert_eq!(
            jobs.apply(&call(Action::Decrement, "a"), 1, &l, DEFAULT, false),
            Ok(1)
        );
        assert_eq!(
            jobs.apply(&call(Action::Decrement, "a"), 1, &l, DEFAULT, false),
            Ok(1)
        );
        assert_eq!(jobs.anonymous, 1, "the anonymous job is untouched");
    }

    #[test]
    fn anonymous_and_keyed_jobs_add_up_to_the_count() {
        let mut jobs = PodJobs::from_count(2, JobState::default(), DEFAULT);
        let l = limits(None);
        assert_eq!(
            jobs.apply(&call(Action::Increment, "k"), 1, &l, DEFAULT, false),
            Ok(3)
        );
        assert_eq!(
            jobs.apply(
                &JobCall::anonymous(Action::Decrement),
                1,
                &l,
                DEFAULT,
                false
            ),
            Ok(2)
        );
        assert_eq!(
            jobs.apply(
                &JobCall::anonymous(Action::Decrement),
                1,
                &l,
                DEFAULT,
                false
            ),
            Ok(1)
        );
        assert_eq!(
            jobs.apply(
                &JobCall::anonymous(Action::Decrement),
                1,
                &l,
                DEFAULT,
                false
            ),
            Ok(1),
            "an anonymous decrement never ends a keyed job"
        );
    }

    #[test]
    fn a_label_lowered_by_hand_below_the_keyed_jobs_leaves_no_debt() {
        let mut state = JobState::default();
        state.jobs.insert(
            "a".into(),
            Job {
                started: 1,
                deadline: None,
            },
        );
        assert_eq!(
            PodJobs::from_count(0, state.clone(), DEFAULT).count(),
            Ok(1)
        );
        assert_eq!(PodJobs::from_count(0, state, NEGATIVE).count(), Ok(0));
    }

    #[test]
    fn the_number_of_active_keyed_jobs_is_bounded() {
        let mut jobs = fresh();
        let l = limits(None);
        for id in ["a", "b", "c"] {
            jobs.apply(&call(Action::Increment, id), 1, &l, DEFAULT, false)
                .expect("applies");
        }
        assert_eq!(
            jobs.apply(&call(Action::Increment, "d"), 1, &l, DEFAULT, false),
            Err(Refusal::TooManyJobs(3))
        );
        assert_eq!(jobs.count(), Ok(3), "nothing changed");
        assert_eq!(
            jobs.apply(&call(Action::Increment, "a"), 1, &l, DEFAULT, false),
            Ok(3),
            "a repeat of a running job is still fine"
        );
    }

    #[test]
    fn the_ttl_asked_for_is_capped_by_the_maximum_duration() {
        assert_eq!(limits(Some(60)).deadline(1000, None), Some(1060));
        assert_eq!(
            limits(Some(60)).deadline(1000, Some(Duration::from_secs(30))),
            Some(1030)
        );
        assert_eq!(
            limits(Some(60)).deadline(1000, Some(Duration::from_secs(600))),
            Some(1060)
        );
        assert_eq!(
            limits(None).deadline(1000, Some(Duration::from_secs(5))),
            Some(1005)
        );
        assert_eq!(limits(None).deadline(1000, None), None);
    }

    #[test]
    fn jobs_past_their_deadline_are_released_and_others_stay() {
        let mut jobs = fresh();
        let l = limits(Some(100));
        jobs.apply(&call(Action::Increment, "old"), 0, &l, DEFAULT, false)
            .expect("applies");
        jobs.apply(&call(Action::Increment, "new"), 50, &l, DEFAULT, false)
            .expect("applies");
        assert_eq!(jobs.state.next_deadline(), Some(100));
        assert!(jobs.expire(99).is_empty());
        let released = jobs.expire(100);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].0, "old");
        assert_eq!(jobs.count(), Ok(1));
        assert_eq!(jobs.state.next_deadline(), Some(150));
    }

    #[test]
    fn renew_moves_the_deadline_of_a_running_job_only() {
        let mut jobs = fresh();
        let l = limits(Some(100));
        jobs.apply(&call(Action::Increment, "a"), 0, &l, DEFAULT, false)
            .expect("applies");
        assert_eq!(
            jobs.apply(&call(Action::Renew, "a"), 90, &l, DEFAULT, false),
            Ok(1)
        );
        assert_eq!(jobs.state.jobs["a"].deadline, Some(190));
        assert_eq!(
            jobs.apply(&call(Action::Renew, "b"), 90, &l, DEFAULT, false),
            Err(Refusal::UnknownJob("b".into()))
        );
    }

    #[test]
    fn a_deleting_pod_refuses_new_jobs_but_ends_running_ones() {
        let mut jobs = fresh();
        let l = limits(None);
        jobs.apply(&call(Action::Increment, "a"), 0, &l, DEFAULT, false)
            .expect("applies");
        jobs.apply(
            &JobCall::anonymous(Action::Increment),
            0,
            &l,
            DEFAULT,
            false,
        )
        .expect("applies");
        for refused in [
            call(Action::Increment, "b"),
            JobCall::anonymous(Action::Increment),
        ] {
            assert_eq!(
                jobs.apply(&refused, 0, &l, DEFAULT, true),
                Err(Refusal::Deleting)
            );
        }
        assert_eq!(
            jobs.apply(&call(Action::Increment, "a"), 0, &l, DEFAULT, true),
            Ok(2),
            "a retried start of a running job is answered"
        );
        assert_eq!(
            jobs.apply(&call(Action::Decrement, "a"), 0, &l, DEFAULT, true),
            Ok(1)
        );
        assert_eq!(
            jobs.apply(&JobCall::anonymous(Action::Decrement), 0, &l, DEFAULT, true),
            Ok(0)
        );
    }

    #[test]
    fn a_clock_past_the_year_9999_still_writes_jobs_that_read_back() {
        let mut jobs = fresh();
        let l = limits(Some(60));
        let now = MAX_UNIX_SECONDS + 1000;
        assert_eq!(
            jobs.apply(&call(Action::Increment, "a"), now, &l, DEFAULT, false),
            Ok(1)
        );
        assert_eq!(jobs.state.jobs["a"].started, MAX_UNIX_SECONDS);
        assert_eq!(jobs.state.jobs["a"].deadline, Some(MAX_UNIX_SECONDS));
        assert_eq!(
            decode(encode(&jobs.state).as_deref()),
            Ok(jobs.state.clone())
        );
    }

    #[test]
    fn an_overflowing_call_changes_nothing() {
        let mut jobs = PodJobs::from_count(i64::MAX, JobState::default(), DEFAULT);
        let l = limits(None);
        assert_eq!(
            jobs.apply(&call(Action::Increment, "a"), 0, &l, DEFAULT, false),
            Err(Refusal::Overflow(Delta::Increment))
        );
        assert!(jobs.state.jobs.is_empty());
    }

    fn anonymous_with_ttl(ttl: u64) -> Limits {
        Limits {
            anonymous_ttl: Some(Duration::from_secs(ttl)),
            ..limits(None)
        }
    }

    #[test]
    fn with_a_lifetime_anonymous_increments_become_expiring_jobs_with_generated_ids() {
        let mut jobs = fresh();
        let l = anonymous_with_ttl(60);
        let anonymous = JobCall::anonymous(Action::Increment);
        assert_eq!(jobs.apply(&anonymous, 100, &l, DEFAULT, false), Ok(1));
        assert_eq!(jobs.apply(&anonymous, 100, &l, DEFAULT, false), Ok(2));
        assert_eq!(jobs.anonymous, 0, "nothing on the plain counter");
        let ids: Vec<&String> = jobs.state.jobs.keys().collect();
        assert_eq!(ids, ["#anon-100-0", "#anon-100-1"]);
        assert!(
            ids.iter().all(|id| validate_job_id(id).is_err()),
            "no caller can send one"
        );
        assert_eq!(jobs.state.next_deadline(), Some(160));
        assert_eq!(jobs.expire(160).len(), 2);
        assert_eq!(jobs.count(), Ok(0));
    }

    #[test]
    fn an_anonymous_decrement_ends_the_oldest_anonymous_job_then_the_plain_counter() {
        let mut jobs = PodJobs::from_count(1, JobState::default(), DEFAULT);
        let l = anonymous_with_ttl(60);
        let up = JobCall::anonymous(Action::Increment);
        let down = JobCall::anonymous(Action::Decrement);
        jobs.apply(&up, 200, &l, DEFAULT, false).expect("applies");
        jobs.apply(&up, 100, &l, DEFAULT, false).expect("applies");
        jobs.apply(&call(Action::Increment, "keyed"), 50, &l, DEFAULT, false)
            .expect("applies");
        assert_eq!(jobs.count(), Ok(4));
        assert_eq!(jobs.apply(&down, 300, &l, DEFAULT, false), Ok(3));
        assert!(
            !jobs.state.jobs.contains_key("#anon-100-0"),
            "the oldest ended"
        );
        assert_eq!(jobs.apply(&down, 300, &l, DEFAULT, false), Ok(2));
        assert_eq!(
            jobs.apply(&down, 300, &l, DEFAULT, false),
            Ok(1),
            "plain counter"
        );
        assert_eq!(
            jobs.apply(&down, 300, &l, DEFAULT, false),
            Ok(1),
            "never the keyed job"
        );
        assert_eq!(jobs.state.jobs.keys().collect::<Vec<_>>(), ["keyed"]);
    }

    #[test]
    fn without_a_lifetime_anonymous_jobs_stay_a_plain_count() {
        let mut jobs = fresh();
        let l = limits(Some(10));
        jobs.apply(
            &JobCall::anonymous(Action::Increment),
            1,
            &l,
            DEFAULT,
            false,
        )
        .expect("applies");
        assert_eq!(jobs.anonymous, 1);
        assert!(jobs.state.jobs.is_empty());
        assert_eq!(encode(&jobs.state), None, "no annotation to write");
    }

    #[test]
    fn a_restart_releases_the_jobs_started_before_it_and_keeps_later_ones() {
        let mut jobs = PodJobs::from_count(1, JobState::default(), DEFAULT);
        let l = Limits {
            max_jobs: 8,
            ..anonymous_with_ttl(3600)
        };
        jobs.apply(&call(Action::Increment, "old"), 100, &l, DEFAULT, false)
            .expect("applies");
        jobs.apply(
            &JobCall::anonymous(Action::Increment),
            150,
            &l,
            DEFAULT,
            false,
        )
        .expect("applies");
        jobs.apply(
            &call(Action::Increment, "same-second"),
            200,
            &l,
            DEFAULT,
            false,
        )
        .expect("applies");
        jobs.apply(&call(Action::Increment, "new"), 250, &l, DEFAULT, false)
            .expect("applies");
        let released: Vec<String> = jobs
            .release_started_before(200)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(released, ["#anon-150-0", "old"]);
        assert_eq!(
            jobs.count(),
            Ok(3),
            "the plain anonymous job has no start to compare"
        );
        assert!(jobs.release_started_before(200).is_empty(), "released once");
    }

    #[test]
    fn a_sweep_looks_only_at_pods_with_a_job_past_its_deadline() {
        let mut jobs = fresh();
        let l = limits(Some(100));
        jobs.apply(&call(Action::Increment, "a"), 0, &l, DEFAULT, false)
            .expect("applies");
        assert!(!has_due_job(&jobs.state, 99));
        assert!(has_due_job(&jobs.state, 100));
        assert!(!has_due_job(&JobState::default(), 100));
    }

    proptest::proptest! {
        #[test]
        fn any_call_at_any_time_keeps_the_jobs_readable(
            text in documents(),
            now in proptest::prelude::any::<u64>(),
            ttl in proptest::option::of(1u64..=31_557_600),
            keyed in proptest::prelude::any::<bool>(),
            action in proptest::sample::select(vec![Action::Increment, Action::Decrement, Action::Renew]),
        ) {
            let Ok(state) = decode(Some(&text)) else { return Ok(()) };
            let mut jobs = PodJobs::from_count(state.jobs.len() as i64, state, DEFAULT);
            let call = JobCall {
                action,
                job: keyed.then(|| "job-1".to_owned()),
                ttl: ttl.map(Duration::from_secs),
                pod_uid: None,
            };
            let limits = Limits { max_duration: Some(Duration::from_secs(3600)), ..Limits::default() };
            if jobs.apply(&call, now, &limits, DEFAULT, false).is_ok() {
                let written = encode(&jobs.state);
                proptest::prop_assert_eq!(decode(written.as_deref()).map(|s| s.jobs.len()), Ok(jobs.state.jobs.len()));
            }
        }
    }
}
