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

use crate::core::count::Delta;
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
    /// The pod must have this uid (a caller whose token is bound to that pod; a re-created pod
    /// of the same name is another pod); `None`: any pod of that name.
    pub pod_uid: Option<String>,
}

impl JobCall {
    /// A call without a key or lifetime: the original counter behaviour.
    pub fn anonymous(action: Action) -> Self {
        JobCall {
            action,
            job: None,
            ttl: None,
            pod_uid: None,
        }
    }

    /// A call for a keyed job.
    pub fn keyed(action: Action, job: impl Into<String>) -> Self {
        JobCall {
            action,
            job: Some(job.into()),
            ttl: None,
            pod_uid: None,
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

impl JobState {
    /// The earliest deadline of a running keyed job.
    pub fn next_deadline(&self) -> Option<u64> {
        self.jobs.values().filter_map(|job| job.deadline).min()
    }
}

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

mod active;
mod pod_jobs;

pub use active::active_annotations;
pub use pod_jobs::{Limits, PodJobs, Refusal, has_due_job};

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::core::count::Policy;

    pub(super) const DEFAULT: Policy = Policy {
        allow_negative: false,
        remove_on_zero: true,
    };
    pub(super) const NEGATIVE: Policy = Policy {
        allow_negative: true,
        remove_on_zero: true,
    };

    pub(super) fn limits(max: Option<u64>) -> Limits {
        Limits {
            max_duration: max.map(Duration::from_secs),
            max_jobs: 3,
            anonymous_ttl: None,
        }
    }

    pub(super) fn fresh() -> PodJobs {
        PodJobs::from_count(0, JobState::default(), DEFAULT)
    }

    pub(super) fn call(action: Action, job: &str) -> JobCall {
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

    /// Jobs annotation documents shaped like ours, with ids, times and versions drawn from
    /// anywhere in their range, and now and then a stray field or a broken value.
    pub(super) fn documents() -> impl proptest::strategy::Strategy<Value = String> {
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

    }
}
