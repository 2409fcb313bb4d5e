//! Keyed jobs: which job ids are running on a pod (with start time and deadline), stored in an
//! annotation beside the count label, and how one call changes them.
//!
//! Pure logic, no I/O and no clock: the caller passes `now` (Unix seconds). The label stays the
//! total the PodDisruptionBudget selects: anonymous jobs (plain `/increment`) plus keyed jobs.
//!
//! Annotation format (compact JSON, version 1):
//! `{"v":1,"jobs":{"ID":{"s":START,"d":DEADLINE}},"saved":{"KEY":"VALUE"}}` — `d` is absent for
//! a job without a deadline; `saved` holds the values that `--active-annotation` keys had
//! before the tracker set them, to be restored at zero. Empty parts are left out, and an empty
//! state removes the annotation.
//!
//! With `--anonymous-job-ttl`, an anonymous increment is recorded as a job too, under a
//! generated id that starts with [`ANONYMOUS_PREFIX`] (a character job ids from callers cannot
//! hold), so that it can expire; an anonymous decrement ends the oldest of them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::count::{self, Delta, Policy};
use crate::core::durations::MAX_UNIX_SECONDS;

/// The longest job id accepted.
pub const MAX_JOB_ID_LEN: usize = 64;

/// The most keyed jobs one pod may run at once. With ids at their longest an entry takes about
/// 100 bytes, so the annotation stays near 25 KiB, far below the API's 256 KiB for all
/// annotations of an object.
pub const MAX_ACTIVE_JOBS: usize = 256;

/// The annotation format this version writes (and the only one it reads).
pub const FORMAT_VERSION: u32 = 1;

/// How the ids generated for anonymous jobs with a lifetime begin (`#anon-<start>-<n>`).
/// Callers' ids cannot contain `#`, so a generated id never collides with one.
pub const ANONYMOUS_PREFIX: &str = "#anon-";

/// What a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A job started (`/increment`).
    Increment,
    /// A job ended (`/decrement`).
    Decrement,
    /// A running keyed job is still alive: push its deadline out (`/renew`).
    Renew,
}

impl Action {
    /// The count change of this action, for error messages (`Renew` changes no count).
    pub fn delta(self) -> Option<Delta> {
        match self {
            Action::Increment => Some(Delta::Increment),
            Action::Decrement => Some(Delta::Decrement),
            Action::Renew => None,
        }
    }
}

/// One webhook call: what, for which job id (`None`: an anonymous job), and its lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCall {
    /// Increment, decrement or renew.
    pub action: Action,
    /// The job's id (`?job=` or `Idempotency-Key`); `None` keeps the plain counter behaviour.
    pub job: Option<String>,
    /// The lifetime asked for (`?ttl=`), capped by the maximum job duration.
    pub ttl: Option<Duration>,
}

impl JobCall {
    /// A call without a key or lifetime: the original counter behaviour.
    pub fn anonymous(action: Action) -> Self {
        JobCall {
            action,
            job: None,
            ttl: None,
        }
    }

    /// A call for a keyed job.
    pub fn keyed(action: Action, job: impl Into<String>) -> Self {
        JobCall {
            action,
            job: Some(job.into()),
            ttl: None,
        }
    }
}

/// One running keyed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// When it started (Unix seconds).
    #[serde(rename = "s")]
    pub started: u64,
    /// When it is released if nobody ended or renewed it (Unix seconds); `None`: never.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
}

/// Everything the jobs annotation holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobState {
    /// Running keyed jobs by id.
    pub jobs: BTreeMap<String, Job>,
    /// Values the `--active-annotation` keys had before the tracker set them.
    pub saved: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    v: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    jobs: BTreeMap<String, Job>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    saved: BTreeMap<String, String>,
}

/// Why the jobs annotation could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotJobs(pub String);

/// Reads the jobs annotation: absent is "no keyed jobs".
pub fn decode(value: Option<&str>) -> Result<JobState, NotJobs> {
    let Some(value) = value else {
        return Ok(JobState::default());
    };
    let stored: Stored =
        serde_json::from_str(value).map_err(|e| NotJobs(format!("not the jobs format: {e}")))?;
    if stored.v != FORMAT_VERSION {
        return Err(NotJobs(format!(
            "format version {} (this tracker reads version {FORMAT_VERSION})",
            stored.v
        )));
    }
    check_stored(&stored.jobs)?;
    Ok(JobState {
        jobs: stored.jobs,
        saved: stored.saved,
    })
}

/// Anyone with `patch` on the pod can write the annotation, so what it holds is checked like a
/// caller's input: ids a caller could send (or generated ones), at most [`MAX_ACTIVE_JOBS`],
/// and times a timestamp can be written for.
fn check_stored(jobs: &BTreeMap<String, Job>) -> Result<(), NotJobs> {
    if jobs.len() > MAX_ACTIVE_JOBS {
        return Err(NotJobs(format!(
            "{} jobs recorded; at most {MAX_ACTIVE_JOBS} can run at once",
            jobs.len()
        )));
    }
    for (id, job) in jobs {
        let generated = id.strip_prefix(ANONYMOUS_PREFIX).is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit() || c == '-')
        });
        if !generated {
            validate_job_id(id).map_err(|why| NotJobs(format!("job id {id:?}: {why}")))?;
        }
        let times = [Some(job.started), job.deadline];
        if let Some(time) = times.into_iter().flatten().find(|t| *t > MAX_UNIX_SECONDS) {
            return Err(NotJobs(format!(
                "job {id:?} has the time {time}, past the year 9999 (Unix seconds at most {MAX_UNIX_SECONDS})"
            )));
        }
    }
    Ok(())
}

/// Writes the jobs annotation; `None` when there is nothing to keep (the annotation is removed).
pub fn encode(state: &JobState) -> Option<String> {
    if state.jobs.is_empty() && state.saved.is_empty() {
        return None;
    }
    let stored = Stored {
        v: FORMAT_VERSION,
        jobs: state.jobs.clone(),
        saved: state.saved.clone(),
    };
    // Maps of strings and integers always serialise.
    serde_json::to_string(&stored).ok()
}

/// Checks a job id: 1 to [`MAX_JOB_ID_LEN`] characters of `A-Z a-z 0-9 . _ : -`, so that ids
/// need no escaping anywhere (URLs, JSON, logs).
pub fn validate_job_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("a job id must not be empty".to_owned());
    }
    if id.len() > MAX_JOB_ID_LEN {
        return Err(format!(
            "a job id has at most {MAX_JOB_ID_LEN} characters, this one has {}",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(format!(
            "a job id may contain only letters, digits, '.', '_', ':' and '-', not {bad:?}"
        ));
    }
    Ok(())
}

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

    /// The earliest deadline of a running keyed job.
    pub fn next_deadline(&self) -> Option<u64> {
        self.state
            .jobs
            .values()
            .filter_map(|job| job.deadline)
            .min()
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

/// The values `--active-annotation` keys should have after a batch that took the count from
/// `before` to `after`, updating the saved originals in `state`.
///
/// Busy (count above zero): each key holds the configured value; on the way into busy a value
/// the pod already carried is saved first. Idle: each key gets its saved value back, or is
/// removed if it had none. Returns `(key, desired value)` for every configured key.
pub fn active_annotations<'a>(
    configured: &'a [(String, String)],
    current: impl Fn(&str) -> Option<&'a str>,
    state: &mut JobState,
    before: i64,
    after: i64,
) -> Vec<(&'a str, Option<String>)> {
    let mut desired = Vec::with_capacity(configured.len());
    for (key, value) in configured {
        let now = current(key);
        let wanted = if after > 0 {
            if before <= 0
                && let Some(original) = now
                && !state.saved.contains_key(key)
            {
                state.saved.insert(key.clone(), original.to_owned());
            }
            Some(value.clone())
        } else if before > 0 || state.saved.contains_key(key) {
            state.saved.remove(key)
        } else {
            // Idle before and after: leave whatever the pod carries alone.
            now.map(str::to_owned)
        };
        desired.push((key.as_str(), wanted));
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Policy = Policy {
        allow_negative: false,
        remove_on_zero: true,
    };
    const NEGATIVE: Policy = Policy {
        allow_negative: true,
        remove_on_zero: true,
    };

    fn limits(max: Option<u64>) -> Limits {
        Limits {
            max_duration: max.map(Duration::from_secs),
            max_jobs: 3,
            anonymous_ttl: None,
        }
    }

    fn fresh() -> PodJobs {
        PodJobs::from_count(0, JobState::default(), DEFAULT)
    }

    fn call(action: Action, job: &str) -> JobCall {
        JobCall::keyed(action, job)
    }

    #[test]
    fn an_absent_annotation_means_no_keyed_jobs() {
        assert_eq!(decode(None), Ok(JobState::default()));
    }

    #[test]
    fn the_annotation_round_trips_in_its_compact_format() {
        let mut state = JobState::default();
        state.jobs.insert(
            "a".into(),
            Job {
                started: 100,
                deadline: Some(200),
            },
        );
        state.jobs.insert(
            "b".into(),
            Job {
                started: 150,
                deadline: None,
            },
        );
        state
            .saved
            .insert("karpenter.sh/do-not-disrupt".into(), "false".into());
        let text = encode(&state).expect("not empty");
        assert_eq!(
            text,
            r#"{"v":1,"jobs":{"a":{"s":100,"d":200},"b":{"s":150}},"saved":{"karpenter.sh/do-not-disrupt":"false"}}"#
        );
        assert_eq!(decode(Some(&text)), Ok(state));
    }

    #[test]
    fn an_empty_state_removes_the_annotation() {
        assert_eq!(encode(&JobState::default()), None);
    }

    #[test]
    fn a_foreign_or_newer_annotation_is_refused_not_overwritten() {
        assert!(decode(Some("abc")).is_err());
        assert!(decode(Some(r#"{"jobs":{}}"#)).is_err(), "no version");
        let newer = decode(Some(r#"{"v":2}"#)).expect_err("refused");
        assert!(newer.0.contains("version 2"), "{newer:?}");
    }

    #[test]
    fn job_ids_are_bounded_and_need_no_escaping() {
        assert_eq!(validate_job_id("build-42_a.b:c"), Ok(()));
        assert_eq!(validate_job_id(&"x".repeat(MAX_JOB_ID_LEN)), Ok(()));
        for bad in [
            String::new(),
            "x".repeat(MAX_JOB_ID_LEN + 1),
            "a b".into(),
            "a\"b".into(),
            "é".into(),
        ] {
            assert!(validate_job_id(&bad).is_err(), "{bad:?}");
        }
    }

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
        assert_eq!(jobs.next_deadline(), Some(100));
        assert!(jobs.expire(99).is_empty());
        let released = jobs.expire(100);
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].0, "old");
        assert_eq!(jobs.count(), Ok(1));
        assert_eq!(jobs.next_deadline(), Some(150));
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

    fn configured() -> Vec<(String, String)> {
        vec![
            ("karpenter.sh/do-not-disrupt".into(), "true".into()),
            (
                "cluster-autoscaler.kubernetes.io/safe-to-evict".into(),
                "false".into(),
            ),
        ]
    }

    #[test]
    fn active_annotations_are_set_while_busy_and_removed_at_zero() {
        let keys = configured();
        let mut state = JobState::default();
        let busy = active_annotations(&keys, |_| None, &mut state, 0, 1);
        assert_eq!(
            busy,
            vec![
                ("karpenter.sh/do-not-disrupt", Some("true".into())),
                (
                    "cluster-autoscaler.kubernetes.io/safe-to-evict",
                    Some("false".into())
                ),
            ]
        );
        assert!(state.saved.is_empty());
        let idle = active_annotations(&keys, |_| Some("true"), &mut state, 1, 0);
        assert!(idle.iter().all(|(_, value)| value.is_none()), "{idle:?}");
    }

    #[test]
    fn a_value_the_pod_carried_before_is_restored_at_zero() {
        let keys = configured();
        let mut state = JobState::default();
        let before = |key: &str| (key == "karpenter.sh/do-not-disrupt").then_some("false");
        active_annotations(&keys, before, &mut state, 0, 2);
        assert_eq!(
            state
                .saved
                .get("karpenter.sh/do-not-disrupt")
                .map(String::as_str),
            Some("false")
        );
        let still_busy = active_annotations(&keys, |_| Some("true"), &mut state, 2, 1);
        assert_eq!(still_busy[0].1.as_deref(), Some("true"));
        assert_eq!(state.saved.len(), 1, "saved once, on the way into busy");
        let idle = active_annotations(&keys, |_| Some("true"), &mut state, 1, 0);
        assert_eq!(
            idle[0],
            ("karpenter.sh/do-not-disrupt", Some("false".into()))
        );
        assert_eq!(idle[1].1, None);
        assert!(state.saved.is_empty(), "nothing left to restore");
    }

    #[test]
    fn an_idle_pod_keeps_its_own_annotations() {
        let keys = configured();
        let mut state = JobState::default();
        let idle = active_annotations(&keys, |_| Some("mine"), &mut state, 0, 0);
        assert!(
            idle.iter()
                .all(|(_, value)| value.as_deref() == Some("mine"))
        );
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
        assert_eq!(jobs.next_deadline(), Some(160));
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

    /// Jobs annotation documents shaped like ours, with ids, times and versions drawn from
    /// anywhere in their range, and now and then a stray field or a broken value.
    fn documents() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let id = prop_oneof!["[A-Za-z0-9._:-]{1,70}", "#anon-[0-9-]{0,12}", "\\PC{0,10}"];
        let time = prop_oneof![
            Just(None),
            any::<u64>().prop_map(Some),
            (0u64..=MAX_UNIX_SECONDS + 10).prop_map(Some)
        ];
        let job = (id, any::<u64>(), time).prop_map(|(id, started, deadline)| {
            let deadline = deadline.map_or_else(String::new, |d| format!(",\"d\":{d}"));
            format!(
                "{}:{{\"s\":{started}{deadline}}}",
                serde_json::Value::String(id)
            )
        });
        let version = prop_oneof![Just("1".to_owned()), "[0-9]{1,3}", Just("\"1\"".to_owned())];
        (version, proptest::collection::vec(job, 0..6), "\\PC{0,6}").prop_map(|(v, jobs, tail)| {
            format!("{{\"v\":{v},\"jobs\":{{{}}}}}{tail}", jobs.join(","))
        })
    }

    proptest::proptest! {
        #[test]
        fn any_jobs_annotation_is_read_within_range_or_refused(text in documents()) {
            match decode(Some(&text)) {
                Ok(state) => {
                    proptest::prop_assert!(state.jobs.len() <= MAX_ACTIVE_JOBS);
                    for (id, job) in &state.jobs {
                        proptest::prop_assert!(job.started <= MAX_UNIX_SECONDS);
                        proptest::prop_assert!(job.deadline.is_none_or(|d| d <= MAX_UNIX_SECONDS));
                        proptest::prop_assert!(validate_job_id(id).is_ok() || id.starts_with(ANONYMOUS_PREFIX));
                    }
                    // What was read is written back the same way.
                    proptest::prop_assert_eq!(decode(encode(&state).as_deref()), Ok(state));
                }
                Err(NotJobs(why)) => proptest::prop_assert!(!why.is_empty()),
            }
        }

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
            };
            let limits = Limits { max_duration: Some(Duration::from_secs(3600)), ..Limits::default() };
            if jobs.apply(&call, now, &limits, DEFAULT, false).is_ok() {
                let written = encode(&jobs.state);
                proptest::prop_assert_eq!(decode(written.as_deref()).map(|s| s.jobs.len()), Ok(jobs.state.jobs.len()));
            }
        }
    }
}
