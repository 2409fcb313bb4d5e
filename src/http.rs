//! The webhook's HTTP side: routes, query parameters, the one place where errors become status
//! codes, and one log line per call. The sockets and the graceful stop are in [`crate::listen`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::error::Error;
use crate::jobs::{self, Action, JobCall};
use crate::listen::InFlight;
use crate::metrics::Metrics;
use crate::target::{PodRef, Targeting};
use crate::tracker::Tracker;

/// The body of every answer: small, and complete before it is sent.
pub type Body = Full<Bytes>;

/// Whether the tracker can do its job right now, and if not, why (for `/readyz`).
#[derive(Debug, Default)]
pub struct Readiness {
    problem: Mutex<Option<String>>,
}

impl Readiness {
    /// Ready from the start.
    pub fn ready() -> Self {
        Readiness {
            problem: Mutex::new(None),
        }
    }

    /// Not ready until [`Readiness::set_ready`].
    pub fn not_ready(problem: impl Into<String>) -> Self {
        Readiness {
            problem: Mutex::new(Some(problem.into())),
        }
    }

    /// Marks the tracker ready.
    pub fn set_ready(&self) {
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Marks the tracker not ready, with the reason.
    pub fn set_problem(&self, problem: impl Into<String>) {
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = Some(problem.into());
    }

    /// `None` when ready, else the reason.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What the request handlers share.
pub struct App {
    /// Counts.
    pub tracker: Tracker,
    /// Finds each call's pod.
    pub targeting: Targeting,
    /// For `/readyz`.
    pub readiness: Arc<Readiness>,
    /// For `/metrics`, and counted on every call.
    pub metrics: Arc<Metrics>,
    /// The counting label, for `/status`.
    pub label: String,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Count(Action),
    WaitIdle,
    Healthz,
    Readyz,
    Metrics,
    Status,
}

fn route(method: &Method, path: &str) -> Result<Route, Error> {
    let (route, allowed) = match path {
        "/increment" => (Route::Count(Action::Increment), Method::POST),
        "/decrement" => (Route::Count(Action::Decrement), Method::POST),
        "/renew" => (Route::Count(Action::Renew), Method::POST),
        "/wait-idle" => (Route::WaitIdle, Method::GET),
        "/healthz" => (Route::Healthz, Method::GET),
        "/readyz" => (Route::Readyz, Method::GET),
        "/metrics" => (Route::Metrics, Method::GET),
        "/status" => (Route::Status, Method::GET),
        _ => return Err(Error::UnknownPath(path.to_owned())),
    };
    if *method == allowed || (allowed == Method::GET && *method == Method::HEAD) {
        Ok(route)
    } else {
        Err(Error::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_owned(),
            allow: allowed.to_string(),
        })
    }
}

/// What the handlers use of a request. Its body is never read: no route takes one.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    path: String,
    query: String,
    /// `Accept: application/json`: answer in JSON rather than plain text.
    wants_json: bool,
    /// The `Idempotency-Key` header, another way to name a job.
    idempotency_key: Option<String>,
}

impl Received {
    fn of<B>(request: &Request<B>) -> Received {
        let headers = request.headers();
        Received {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
            query: request.uri().query().unwrap_or_default().to_owned(),
            wants_json: headers
                .get_all(http::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/json")),
            idempotency_key: headers
                .get("Idempotency-Key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }
}

/// The query parameters of a counting call.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    pod_name: Option<String>,
    namespace: Option<String>,
    job: Option<String>,
    ttl: Option<String>,
    timeout: Option<String>,
}

fn parse_query(query: &str) -> Query {
    let mut parsed = Query::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "pod_name" => parsed.pod_name = Some(value.into_owned()),
            "namespace" => parsed.namespace = Some(value.into_owned()),
            "job" => parsed.job = Some(value.into_owned()),
            "ttl" => parsed.ttl = Some(value.into_owned()),
            "timeout" => parsed.timeout = Some(value.into_owned()),
            _ => {}
        }
    }
    parsed
}

/// `/wait-idle` waits this long when the caller names no `timeout`.
pub const DEFAULT_WAIT_IDLE: Duration = Duration::from_secs(30);
/// The longest `/wait-idle` waits (a `preStop` hook is bounded by the pod's grace period).
pub const MAX_WAIT_IDLE: Duration = Duration::from_secs(24 * 3600);

/// A duration parameter: `30`, `30s`, `5m`, `1h30m`.
fn parse_duration_parameter(name: &str, text: &str) -> Result<Duration, Error> {
    let text = text.trim();
    let parsed = match text.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(text),
    };
    parsed.map_err(|_| {
        Error::BadRequest(format!(
            "invalid {name} {text:?}: expected a duration such as 30s, 5m, 1h30m"
        ))
    })
}

/// The job call a request asks for: its key comes from `?job=` or the `Idempotency-Key`
/// header (the query wins), its lifetime from `?ttl=`.
fn job_call(
    action: Action,
    query: &Query,
    idempotency_key: Option<&str>,
) -> Result<JobCall, Error> {
    let job = query
        .job
        .as_deref()
        .or(idempotency_key)
        .map(str::trim)
        .filter(|job| !job.is_empty());
    if let Some(job) = job {
        jobs::validate_job_id(job)
            .map_err(|why| Error::BadRequest(format!("invalid job {job:?}: {why}")))?;
    }
    if action == Action::Renew && job.is_none() {
        return Err(Error::BadRequest(
            "renew needs the job's id: POST /renew?job=ID[&ttl=30m]".to_owned(),
        ));
    }
    let ttl = match query.ttl.as_deref() {
        Some(text) if job.is_none() => {
            return Err(Error::BadRequest(format!(
                "ttl={text} needs a job id (?job=ID): only keyed jobs have deadlines"
            )));
        }
        Some(text) => Some(parse_duration_parameter("ttl", text)?),
        None => None,
    };
    if ttl.is_some_and(|ttl| ttl.is_zero()) {
        return Err(Error::BadRequest("ttl must be above zero".to_owned()));
    }
    Ok(JobCall {
        action,
        job: job.map(str::to_owned),
        ttl,
    })
}

/// Answers one request on the webhook address.
pub async fn handle<B>(
    app: Arc<App>,
    in_flight: Arc<InFlight>,
    request: Request<B>,
) -> Response<Body> {
    let started = Instant::now();
    let received = Received::of(&request);
    drop(request);
    let refuse = |error| finish(&received, None, Err(error), started, Some(&app.metrics));
    let route = match route(&received.method, &received.path) {
        Ok(route) => route,
        Err(error) => return refuse(error),
    };
    let action = match route {
        Route::Count(action) => action,
        Route::WaitIdle => return wait_idle(&app, Some(&in_flight), &received).await,
        other => return serve_admin_route(&app, other),
    };
    let query = parse_query(&received.query);
    let resolved = app
        .targeting
        .resolve(query.pod_name.as_deref(), query.namespace.as_deref())
        .and_then(|pod| {
            let call = job_call(action, &query, received.idempotency_key.as_deref())?;
            Ok((pod, call))
        });
    let (pod, call) = match resolved {
        Ok(resolved) => resolved,
        Err(error) => return refuse(error),
    };
    let in_flight = in_flight.enter();
    let answer = app.tracker.submit(pod.clone(), call);
    let metrics = Arc::clone(&app.metrics);
    // Kept for the one case where the task below never answers: the runtime is shutting down.
    let stopping = received.clone();
    // The call is the tracker's from here on. If the caller hangs up, hyper drops this future,
    // but the task still logs and counts the outcome, and a stop still waits for it.
    let answering = tokio::spawn(async move {
        let _in_flight = in_flight;
        let outcome = answer.await.unwrap_or(Err(Error::ShuttingDown));
        finish(&received, Some(&pod), outcome, started, Some(&metrics))
    });
    answering.await.unwrap_or_else(|_| {
        finish(
            &stopping,
            None,
            Err(Error::ShuttingDown),
            started,
            Some(&app.metrics),
        )
    })
}

/// `GET /wait-idle[?timeout=30s&pod_name=…]`: answers once the pod's count is zero (200, the
/// count), or when the timeout passes (503, how many are still running). Served on both
/// listeners: a `preStop` hook reaches the admin one.
async fn wait_idle(
    app: &App,
    in_flight: Option<&Arc<InFlight>>,
    received: &Received,
) -> Response<Body> {
    let started = Instant::now();
    let query = parse_query(&received.query);
    let timeout = query
        .timeout
        .as_deref()
        .map(|text| parse_duration_parameter("timeout", text))
        .transpose()
        .map(|timeout| timeout.unwrap_or(DEFAULT_WAIT_IDLE).min(MAX_WAIT_IDLE));
    let target = timeout.and_then(|timeout| {
        let pod = app
            .targeting
            .resolve(query.pod_name.as_deref(), query.namespace.as_deref())?;
        Ok((pod, timeout))
    });
    let (pod, timeout) = match target {
        Ok(target) => target,
        Err(error) => return finish(received, None, Err(error), started, None),
    };
    let _in_flight = in_flight.map(InFlight::enter);
    let outcome = app.tracker.wait_idle(&pod, timeout).await;
    finish(received, Some(&pod), outcome, started, None)
}

/// Answers one request on the admin address: probes, metrics, status and `/wait-idle`. The
/// counting routes stay on the webhook address.
pub async fn handle_admin<B>(app: Arc<App>, request: Request<B>) -> Response<Body> {
    let received = Received::of(&request);
    drop(request);
    match route(&received.method, &received.path) {
        Ok(Route::WaitIdle) => wait_idle(&app, None, &received).await,
        Ok(Route::Count(_)) | Err(_) => {
            plain(404, format!("no such path {} here\n", received.path))
        }
        Ok(other) => serve_admin_route(&app, other),
    }
}

/// Probes, metrics and status: answered at once, and kept out of the request log.
fn serve_admin_route(app: &App, route: Route) -> Response<Body> {
    match route {
        Route::Healthz => probe(None),
        Route::Readyz => probe(app.readiness.problem()),
        Route::Metrics => answer(
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            app.metrics.encode(),
            Vec::new(),
        ),
        Route::Status => answer(
            200,
            "application/json",
            status_json(app).to_string(),
            Vec::new(),
        ),
        Route::Count(_) | Route::WaitIdle => plain(404, "not an admin route\n".to_owned()),
    }
}

/// The keyed jobs of a pod for `/status`: id, start, deadline, age in seconds.
fn job_status(
    jobs: &std::collections::BTreeMap<String, crate::jobs::Job>,
) -> Vec<serde_json::Value> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let time = |seconds: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(seconds))
            .to_string()
    };
    jobs.iter()
        .map(|(id, job)| {
            serde_json::json!({
                "id": id,
                "started": time(job.started),
                "ageSeconds": now.saturating_sub(job.started),
                "deadline": job.deadline.map(time),
            })
        })
        .collect()
}

/// `GET /status`: what is tracked, the counts last stored, readiness and the last API error.
fn status_json(app: &App) -> serde_json::Value {
    let time = |at: std::time::SystemTime| humantime::format_rfc3339_seconds(at).to_string();
    let pods: Vec<_> = app
        .tracker
        .status()
        .into_iter()
        .map(|pod| {
            serde_json::json!({
                "pod": pod.pod.to_string(),
                "count": pod.count,
                "label": pod.label,
                "updated": time(pod.updated),
                "jobs": job_status(&pod.jobs),
            })
        })
        .collect();
    let (mode, own) = match &app.targeting {
        Targeting::Sidecar { own } => ("sidecar", Some(own.to_string())),
        Targeting::Standalone { .. } => ("standalone", None),
    };
    serde_json::json!({
        "mode": mode,
        "ownPod": own,
        "label": app.label,
        "ready": app.readiness.problem().is_none(),
        "notReadyReason": app.readiness.problem(),
        "pods": pods,
        "lastApiError": app.metrics.last_error().map(|e| serde_json::json!({"at": time(e.at), "message": e.message})),
    })
}

/// Health probes answer plainly and stay out of the request log.
fn probe(problem: Option<String>) -> Response<Body> {
    match problem {
        None => plain(200, "ok\n".to_owned()),
        Some(problem) => plain(503, format!("not ready: {problem}\n")),
    }
}

/// The HTTP status of every error: the only place that knows.
pub fn status_of(error: &Error) -> u16 {
    match error {
        Error::BadRequest(_) => 400,
        Error::NotAllowed(_) => 403,
        Error::PodNotFound { .. } | Error::UnknownPath(_) => 404,
        Error::MethodNotAllowed { .. } => 405,
        Error::NotACount { .. }
        | Error::Overflow { .. }
        | Error::NotJobs { .. }
        | Error::TooManyJobs { .. }
        | Error::PodDeleting { .. } => 409,
        Error::UnknownJob { .. } => 404,
        Error::StillBusy { .. } => 503,
        Error::ApiRefused { .. } | Error::ApiRejected { .. } => 502,
        Error::ApiUnavailable { .. } | Error::ShuttingDown => 503,
        Error::OutcomeUnknown { .. } => 504,
        Error::Config(_) => 500,
    }
}

/// The answer to a call, its metrics and its one log line.
fn finish(
    received: &Received,
    pod: Option<&PodRef>,
    outcome: crate::Result<i64>,
    started: Instant,
    metrics: Option<&Metrics>,
) -> Response<Body> {
    let json = received.wants_json;
    let pod_text = pod.map_or_else(|| "-".to_owned(), PodRef::to_string);
    let (status, body, headers) = match &outcome {
        Ok(count) if json => (
            200,
            serde_json::json!({"pod": pod_text, "count": count}).to_string(),
            vec![],
        ),
        Ok(count) => (200, count.to_string(), vec![]),
        Err(error) => {
            let status = status_of(error);
            let mut headers = Vec::new();
            match error {
                Error::MethodNotAllowed { allow, .. } => headers.push((ALLOW, allow.clone())),
                Error::ApiUnavailable { retry_after, .. } => {
                    headers.push((RETRY_AFTER, retry_after.as_secs().max(1).to_string()));
                }
                Error::ShuttingDown => headers.push((RETRY_AFTER, "1".to_owned())),
                // Not "try this pod again soon": the pod is gone after this long.
                Error::PodDeleting { retry_after, .. } => {
                    headers.push((RETRY_AFTER, retry_after.as_secs().max(1).to_string()));
                }
                _ => {}
            }
            let body = if json {
                serde_json::json!({"error": error.to_string(), "status": status}).to_string()
            } else {
                format!("{error}\n")
            };
            (status, body, headers)
        }
    };
    let kind = if json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let elapsed = started.elapsed();
    let method = &received.method;
    let path = &received.path;
    // Counted before the answer leaves, so a caller that reads /metrics next sees its own call.
    if let Some(endpoint) = path
        .strip_prefix('/')
        .filter(|p| matches!(*p, "increment" | "decrement" | "renew"))
        && let Some(metrics) = metrics
    {
        metrics.webhook_call(endpoint, status, elapsed);
    }
    match &outcome {
        Ok(count) => log::info!(
            target: "request",
            "{method} {path} pod={pod_text} status={status} count={count} duration={:.1}ms",
            elapsed.as_secs_f64() * 1000.0
        ),
        Err(error) => log::info!(
            target: "request",
            "{method} {path} pod={pod_text} status={status} error=\"{error}\" duration={:.1}ms",
            elapsed.as_secs_f64() * 1000.0
        ),
    }
    answer(status, kind, body, headers)
}

/// A plain-text answer.
fn plain(status: u16, body: String) -> Response<Body> {
    answer(status, "text/plain; charset=utf-8", body, Vec::new())
}

/// An answer with a complete body (hyper sends its `Content-Length`).
fn answer(
    status: u16,
    content_type: &'static str,
    body: String,
    headers: Vec<(HeaderName, String)>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let answer_headers = response.headers_mut();
    answer_headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in headers {
        // Values here are numbers or method names, always valid header values.
        if let Ok(value) = HeaderValue::from_str(&value) {
            answer_headers.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_routes_take_post_only() {
        assert_eq!(
            route(&Method::POST, "/increment").ok(),
            Some(Route::Count(Action::Increment))
        );
        assert_eq!(
            route(&Method::POST, "/decrement").ok(),
            Some(Route::Count(Action::Decrement))
        );
        assert_eq!(
            route(&Method::POST, "/renew").ok(),
            Some(Route::Count(Action::Renew))
        );
        assert_eq!(
            route(&Method::GET, "/wait-idle").ok(),
            Some(Route::WaitIdle)
        );
        let err = route(&Method::GET, "/increment").expect_err("refused");
        assert_eq!(status_of(&err), 405);
        assert!(matches!(err, Error::MethodNotAllowed { allow, .. } if allow == "POST"));
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in ["/", "/inc", "/increment/", "/metrics2"] {
            let err = route(&Method::POST, path).expect_err("refused");
            assert_eq!(status_of(&err), 404, "{path}");
        }
    }

    #[test]
    fn probes_take_get_and_head() {
        assert_eq!(route(&Method::GET, "/healthz").ok(), Some(Route::Healthz));
        assert_eq!(route(&Method::HEAD, "/readyz").ok(), Some(Route::Readyz));
        assert!(route(&Method::POST, "/healthz").is_err());
    }

    #[test]
    fn query_parameters_are_percent_decoded() {
        assert_eq!(
            parse_query("pod_name=worker%2D1&namespace=jobs&other=1"),
            Query {
                pod_name: Some("worker-1".into()),
                namespace: Some("jobs".into()),
                ..Query::default()
            }
        );
        assert_eq!(parse_query(""), Query::default());
        assert_eq!(
            parse_query("pod_name="),
            Query {
                pod_name: Some(String::new()),
                ..Query::default()
            }
        );
    }

    #[test]
    fn every_error_has_its_status() {
        let pod = PodRef::new("ns", "p");
        let cases = [
            (Error::BadRequest("x".into()), 400),
            (Error::NotAllowed("x".into()), 403),
            (Error::PodNotFound { pod: pod.clone() }, 404),
            (
                Error::NotACount {
                    pod: pod.clone(),
                    label: "l".into(),
                    value: "abc".into(),
                },
                409,
            ),
            (
                Error::Overflow {
                    pod: pod.clone(),
                    label: "l".into(),
                    delta: crate::count::Delta::Increment,
                },
                409,
            ),
            (
                Error::ApiRefused {
                    pod: pod.clone(),
                    message: "m".into(),
                },
                502,
            ),
            (
                Error::ApiRejected {
                    pod: pod.clone(),
                    message: "m".into(),
                },
                502,
            ),
            (
                Error::ApiUnavailable {
                    pod: pod.clone(),
                    reason: "r".into(),
                    retry_after: Duration::from_secs(1),
                },
                503,
            ),
            (
                Error::OutcomeUnknown {
                    pod,
                    reason: "r".into(),
                },
                504,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(status_of(&error), status, "{error}");
        }
    }

    #[test]
    fn a_job_key_comes_from_the_query_or_the_idempotency_key_header() {
        let query = parse_query("job=build-7&ttl=30m");
        let call = job_call(Action::Increment, &query, Some("ignored")).expect("valid");
        assert_eq!(call.job.as_deref(), Some("build-7"));
        assert_eq!(call.ttl, Some(Duration::from_secs(1800)));
        let call =
            job_call(Action::Decrement, &Query::default(), Some("from-header")).expect("valid");
        assert_eq!(call.job.as_deref(), Some("from-header"));
        let call = job_call(Action::Increment, &Query::default(), None).expect("valid");
        assert_eq!(call, JobCall::anonymous(Action::Increment));
    }

    #[test]
    fn bad_job_parameters_are_refused_with_400() {
        let long = format!("job={}", "x".repeat(65));
        for (action, query) in [
            (Action::Increment, long.as_str()),
            (Action::Increment, "job=a%20b"),
            (Action::Increment, "job=a&ttl=soon"),
            (Action::Increment, "job=a&ttl=0s"),
            (Action::Increment, "ttl=5m"),
            (Action::Renew, ""),
        ] {
            let error = job_call(action, &parse_query(query), None).expect_err(query);
            assert_eq!(status_of(&error), 400, "{query}: {error}");
        }
    }
}
