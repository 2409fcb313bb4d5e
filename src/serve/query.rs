//! The query of a counting call or `/wait-idle`, read strictly: known parameters once each,
//! durations within their bounds, and the job key from `?job=` or `Idempotency-Key`.

use std::time::Duration;

use crate::core::durations::{self, Bounds, MAX_JOB_LIFETIME};
use crate::core::jobs::{self, Action, JobCall};
use crate::error::Error;

/// The query parameters of a counting call or `/wait-idle`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Query {
    pub(crate) pod_name: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) job: Option<String>,
    pub(crate) ttl: Option<String>,
    pub(crate) timeout: Option<String>,
}

/// The parameters the counting routes read.
pub(crate) const COUNTING_PARAMETERS: &[&str] = &["pod_name", "namespace", "job", "ttl"];
/// The parameters `/wait-idle` reads.
pub(crate) const WAIT_IDLE_PARAMETERS: &[&str] = &["pod_name", "namespace", "timeout"];

/// Reads the query of a route that takes the parameters `known`. A parameter given twice,
/// or one the route does not know (a typo such as `jobid=` must not become an anonymous
/// call), is refused: ambiguous input is never guessed at.
pub(crate) fn parse_query(query: &str, known: &[&str]) -> Result<Query, Error> {
    let mut parsed = Query::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "pod_name" => Some(&mut parsed.pod_name),
            "namespace" => Some(&mut parsed.namespace),
            "job" => Some(&mut parsed.job),
            "ttl" => Some(&mut parsed.ttl),
            "timeout" => Some(&mut parsed.timeout),
            _ => None,
        };
        let Some(slot) = slot.filter(|_| known.contains(&key.as_ref())) else {
            return Err(Error::BadRequest(format!(
                "unknown parameter {}: this route takes {}",
                quoted(&key),
                known.join(", ")
            )));
        };
        if slot.is_some() {
            return Err(Error::BadRequest(format!(
                "parameter {key} is given more than once; give it once"
            )));
        }
        *slot = Some(value.into_owned());
    }
    Ok(parsed)
}

/// Untrusted text quoted for an error message, cut to a readable length.
pub(crate) fn quoted(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", text.get(..cut).unwrap_or_default()),
        None => format!("{text:?}"),
    }
}

/// `/wait-idle` waits this long when the caller names no `timeout`.
pub(crate) const DEFAULT_WAIT_IDLE: Duration = Duration::from_secs(30);

/// A duration parameter (`30`, `30s`, `5m`, `1h30m`) within `bounds`; the error names the
/// parameter and the bound.
pub(crate) fn parse_duration_parameter(
    name: &str,
    text: &str,
    bounds: Bounds,
) -> Result<Duration, Error> {
    durations::parse_bounded(text, bounds)
        .map_err(|why| Error::BadRequest(format!("invalid {name} {}: {why}", quoted(text.trim()))))
}

/// The job call a request asks for: its key comes from `?job=` or the `Idempotency-Key`
/// header (both may be given only if they agree), its lifetime from `?ttl=`.
pub(crate) fn job_call(
    action: Action,
    query: &Query,
    idempotency_keys: &[String],
) -> Result<JobCall, Error> {
    let header = match idempotency_keys {
        [] => None,
        [key] => Some(key.trim()),
        _ => {
            return Err(Error::BadRequest(
                "the Idempotency-Key header is given more than once; give it once".to_owned(),
            ));
        }
    };
    let from_query = query.job.as_deref().map(str::trim);
    let job = match (from_query, header) {
        (Some(job), Some(key)) if job != key => {
            return Err(Error::BadRequest(format!(
                "job {} and Idempotency-Key {} name different jobs; give one of them",
                quoted(job),
                quoted(key)
            )));
        }
        (job, key) => job.or(key),
    };
    if let Some(job) = job {
        jobs::validate_job_id(job)
            .map_err(|why| Error::BadRequest(format!("invalid job {}: {why}", quoted(job))))?;
    }
    if action == Action::Renew && job.is_none() {
        return Err(Error::BadRequest(
            "renew needs the job's id: POST /renew?job=ID[&ttl=30m]".to_owned(),
        ));
    }
    let ttl = match query.ttl.as_deref() {
        Some(text) if job.is_none() => {
            return Err(Error::BadRequest(format!(
                "ttl={} needs a job id (?job=ID): only keyed jobs have deadlines",
                quoted(text)
            )));
        }
        Some(text) => Some(parse_duration_parameter(
            "ttl",
            text,
            Bounds::new(Duration::from_secs(1), MAX_JOB_LIFETIME),
        )?),
        None => None,
    };
    Ok(JobCall {
        action,
        job: job.map(str::to_owned),
        ttl,
        pod_uid: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::serve::http::{MAX_REQUEST_TARGET, status_of};

    fn counting(query: &str) -> Result<Query, Error> {
        parse_query(query, COUNTING_PARAMETERS)
    }

    #[test]
    fn query_parameters_are_percent_decoded() {
        assert_eq!(
            counting("pod_name=worker%2D1&namespace=jobs").ok(),
            Some(Query {
                pod_name: Some("worker-1".into()),
                namespace: Some("jobs".into()),
                ..Query::default()
            })
        );
        assert_eq!(counting("").ok(), Some(Query::default()));
        assert_eq!(
            counting("pod_name=").ok(),
            Some(Query {
                pod_name: Some(String::new()),
                ..Query::default()
            })
        );
    }

    #[test]
    fn a_repeated_parameter_is_refused_naming_it() {
        for (query, name) in [
            ("pod_name=a&pod_name=b", "pod_name"),
            ("namespace=a&namespace=a", "namespace"),
            ("job=a&job=b", "job"),
            ("job=a&ttl=1m&ttl=2m", "ttl"),
        ] {
            let error = counting(query).expect_err(query);
            assert_eq!(status_of(&error), 400);
            assert!(error.to_string().contains(name), "{query}: {error}");
        }
        let error = parse_query("timeout=1s&timeout=2s", WAIT_IDLE_PARAMETERS).expect_err("twice");
        assert!(error.to_string().contains("timeout"), "{error}");
    }

    #[test]
    fn an_unknown_parameter_is_refused_so_a_typo_never_becomes_an_anonymous_call() {
        let error = counting("jobid=build-7").expect_err("typo");
        assert_eq!(status_of(&error), 400);
        assert!(error.to_string().contains("\"jobid\""), "{error}");
        assert!(
            error.to_string().contains("pod_name, namespace, job, ttl"),
            "{error}"
        );
        assert!(counting("timeout=5s").is_err(), "timeout is for /wait-idle");
        assert!(
            parse_query("job=a", WAIT_IDLE_PARAMETERS).is_err(),
            "job is for counting"
        );
        let long = format!("{}=1", "k".repeat(5000));
        let error = counting(&long).expect_err("unknown");
        assert!(error.to_string().len() < 300, "quoted short: {error}");
    }

    #[test]
    fn a_ttl_beyond_a_year_is_refused_naming_the_limit() {
        let query = counting("job=x&ttl=10000y").expect("parses");
        let error = job_call(Action::Increment, &query, &[]).expect_err("refused");
        assert_eq!(status_of(&error), 400);
        assert!(
            error.to_string().contains("ttl") && error.to_string().contains("1year"),
            "{error}"
        );
        let query = counting("job=x&ttl=1y").expect("parses");
        assert_eq!(
            job_call(Action::Renew, &query, &[]).expect("valid").ttl,
            Some(MAX_JOB_LIFETIME)
        );
    }

    #[test]
    fn the_job_of_the_query_and_of_the_header_must_agree() {
        let query = counting("job=a").expect("parses");
        let same = job_call(Action::Increment, &query, &["a".to_owned()]).expect("agree");
        assert_eq!(same.job.as_deref(), Some("a"));
        let error = job_call(Action::Increment, &query, &["b".to_owned()]).expect_err("differ");
        assert_eq!(status_of(&error), 400);
        let twice = ["a".to_owned(), "a".to_owned()];
        let error = job_call(Action::Increment, &Query::default(), &twice).expect_err("twice");
        assert!(error.to_string().contains("Idempotency-Key"), "{error}");
    }

    #[test]
    fn a_request_target_past_the_limit_is_414() {
        let error = Error::TargetTooLong {
            length: MAX_REQUEST_TARGET + 1,
            max: MAX_REQUEST_TARGET,
        };
        assert_eq!(status_of(&error), 414);
        assert_eq!(status_of(&Error::Internal("x".into())), 500);
    }

    proptest::proptest! {
        #[test]
        fn any_query_parses_or_is_refused_with_400(query in "[a-z_%0-9=&+.:-]{0,60}|\\PC{0,60}") {
            match counting(&query) {
                Ok(parsed) => {
                    if let Some(job) = parsed.job {
                        let _ = job_call(Action::Increment, &counting(&format!("job={job}")).unwrap_or_default(), &[]);
                    }
                }
                Err(error) => proptest::prop_assert_eq!(status_of(&error), 400),
            }
        }

        #[test]
        fn any_job_ttl_and_header_give_a_call_or_400(
            job in proptest::option::of("\\PC{0,80}"),
            ttl in proptest::option::of("[0-9]{0,25}[a-z]{0,6}|\\PC{0,10}"),
            header in proptest::collection::vec("\\PC{0,80}", 0..3),
        ) {
            let query = Query { job, ttl, ..Query::default() };
            match job_call(Action::Increment, &query, &header) {
                Ok(call) => {
                    if let Some(job) = &call.job {
                        proptest::prop_assert!(jobs::validate_job_id(job).is_ok());
                    }
                    if let Some(ttl) = call.ttl {
                        proptest::prop_assert!(ttl >= Duration::from_secs(1) && ttl <= MAX_JOB_LIFETIME);
                    }
                }
                Err(error) => proptest::prop_assert_eq!(status_of(&error), 400),
            }
        }
    }

    #[test]
    fn a_job_key_comes_from_the_query_or_the_idempotency_key_header() {
        let query = counting("job=build-7&ttl=30m").expect("parses");
        let call = job_call(Action::Increment, &query, &[]).expect("valid");
        assert_eq!(call.job.as_deref(), Some("build-7"));
        assert_eq!(call.ttl, Some(Duration::from_secs(1800)));
        let call = job_call(
            Action::Decrement,
            &Query::default(),
            &["from-header".to_owned()],
        )
        .expect("valid");
        assert_eq!(call.job.as_deref(), Some("from-header"));
        let call = job_call(Action::Increment, &Query::default(), &[]).expect("valid");
        assert_eq!(call, JobCall::anonymous(Action::Increment));
    }

    #[test]
    fn bad_job_parameters_are_refused_with_400() {
        let long = format!("job={}", "x".repeat(65));
        for (action, query) in [
            (Action::Increment, long.as_str()),
            (Action::Increment, "job=a%20b"),
            (Action::Increment, "job="),
            (Action::Increment, "job=a&ttl=soon"),
            (Action::Increment, "job=a&ttl=0s"),
            (Action::Increment, "job=a&ttl=18446744073709551616"),
            (Action::Increment, "ttl=5m"),
            (Action::Renew, ""),
        ] {
            let error = counting(query)
                .and_then(|parsed| job_call(action, &parsed, &[]))
                .expect_err(query);
            assert_eq!(status_of(&error), 400, "{query}: {error}");
        }
    }
}
