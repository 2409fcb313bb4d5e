//! The webhook's HTTP side: routes, query parameters, the one place where errors become status
//! codes, and one log line per call. The sockets and the graceful stop are in [`crate::listen`].

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::core::callers::{self, Identity, Scope};
use crate::core::durations::{Bounds, MAX_WAIT_IDLE};
use crate::core::jobs::Action;
use crate::core::pod::PodRef;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::serve::app::App;
use crate::serve::auth::Authenticator;
use crate::serve::in_flight::InFlight;
use crate::serve::query::{
    COUNTING_PARAMETERS, DEFAULT_WAIT_IDLE, WAIT_IDLE_PARAMETERS, job_call,
    parse_duration_parameter, parse_query,
};
use crate::serve::status::status_json;

/// The body of every answer: small, and complete before it is sent.
pub(crate) type Body = Full<Bytes>;

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
    /// The `Idempotency-Key` headers, another way to name a job (more than one is refused).
    idempotency_keys: Vec<String>,
    /// The length of the request target (path and query), checked against
    /// [`MAX_REQUEST_TARGET`].
    target_length: usize,
    /// The `Authorization` headers (`--authenticate`). Never logged.
    authorization: Vec<Vec<u8>>,
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
            idempotency_keys: headers
                .get_all("Idempotency-Key")
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect(),
            target_length: request
                .uri()
                .path_and_query()
                .map_or(0, |target| target.as_str().len()),
            authorization: headers
                .get_all(http::header::AUTHORIZATION)
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect(),
        }
    }
}

/// Answers one request on the webhook address.
pub(crate) async fn handle<B>(
    app: Arc<App>,
    in_flight: Arc<InFlight>,
    request: Request<B>,
) -> Response<Body> {
    let started = Instant::now();
    let received = Received::of(&request);
    drop(request);
    let refuse = |error| finish(&received, None, Err(error), started, Some(&app.metrics));
    if let Err(error) = check_target(&received) {
        return refuse(error);
    }
    let route = match route(&received.method, &received.path) {
        Ok(route) => route,
        Err(error) => return refuse(error),
    };
    let action = match route {
        Route::Count(action) => action,
        // Boxed: a rare route's longer wait should not enlarge every counting call's future.
        Route::WaitIdle => return Box::pin(wait_idle(&app, Some(&in_flight), &received)).await,
        Route::Status | Route::Metrics => {
            // With --authenticate, the tracker's state is for allowed callers only here.
            if let Some(auth) = &app.authenticator {
                let allowed = auth
                    .identify(&received.authorization)
                    .await
                    .and_then(|identity| {
                        callers::may_read_status(&identity, &auth.settings.allowed)
                            .map_err(|refused| Error::CallerForbidden(refused.0))
                    });
                if let Err(error) = allowed {
                    return refuse(error);
                }
            }
            return serve_admin_route(&app, route, &received.query);
        }
        other => return serve_admin_route(&app, other, &received.query),
    };
    let caller = match &app.authenticator {
        Some(auth) => match auth.identify(&received.authorization).await {
            Ok(identity) => Some((auth, identity)),
            Err(error) => return refuse(error),
        },
        None => None,
    };
    let resolved = parse_query(&received.query, COUNTING_PARAMETERS).and_then(|query| {
        let named = caller_scope(
            caller.as_ref(),
            query.pod_name.clone(),
            query.namespace.clone(),
        )?;
        let pod = app
            .targeting
            .resolve(named.pod_name.as_deref(), named.namespace.as_deref())?;
        let mut call = job_call(action, &query, &received.idempotency_keys)?;
        call.pod_uid = named.pod_uid;
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
        // The writer answers every call it takes; a dropped answer means it panicked.
        let outcome = answer.await.unwrap_or_else(|_| Err(writer_failed()));
        finish(&received, Some(&pod), outcome, started, Some(&metrics))
    });
    answering.await.unwrap_or_else(|joined| {
        let error = if joined.is_panic() {
            writer_failed()
        } else {
            Error::ShuttingDown
        };
        finish(&stopping, None, Err(error), started, Some(&app.metrics))
    })
}

/// The pod a call names, after `--authenticate` had its say.
struct Named {
    pod_name: Option<String>,
    namespace: Option<String>,
    /// The uid the pod must have (a token bound to a pod).
    pod_uid: Option<String>,
}

/// The pod a caller may name: what it asked, or (a token bound to a pod) its own pod, with the
/// uid the pod must have. Decided before any pod is read, so a refusal says nothing about pods.
fn caller_scope(
    caller: Option<&(&Authenticator, Identity)>,
    pod_name: Option<String>,
    namespace: Option<String>,
) -> Result<Named, Error> {
    let Some((auth, identity)) = caller else {
        return Ok(Named {
            pod_name,
            namespace,
            pod_uid: None,
        });
    };
    let scope = callers::scope(
        identity,
        &auth.settings.allowed,
        pod_name.as_deref(),
        namespace.as_deref(),
    )
    .map_err(|refused| Error::CallerForbidden(refused.0))?;
    Ok(match scope {
        Scope::AnyPod {
            pod_name,
            namespace,
        } => Named {
            pod_name,
            namespace,
            pod_uid: None,
        },
        Scope::OwnPod {
            name,
            namespace,
            uid,
        } => Named {
            pod_name: Some(name),
            namespace: Some(namespace),
            pod_uid: Some(uid),
        },
    })
}

/// A call whose answer was lost to a panic: it may have been stored (its write id settles that
/// on the pod's next call, but not for this caller).
fn writer_failed() -> Error {
    Error::Internal(
        "the pod's writer failed while handling this call (see the tracker's log); it may or may not have been stored"
            .to_owned(),
    )
}

/// The longest request target (path and query) read; longer answers 414. hyper refuses a
/// request line and headers above [`crate::config::ConnectionLimits::max_head`] with 431.
pub(crate) const MAX_REQUEST_TARGET: usize = 8 * 1024;

fn check_target(received: &Received) -> Result<(), Error> {
    if received.target_length > MAX_REQUEST_TARGET {
        return Err(Error::TargetTooLong {
            length: received.target_length,
            max: MAX_REQUEST_TARGET,
        });
    }
    Ok(())
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
    // On the webhook address (not the admin one, a pod's own), --authenticate applies: a token
    // bound to a pod may wait for that pod only.
    let caller = match (&app.authenticator, in_flight) {
        (Some(auth), Some(_)) => match auth.identify(&received.authorization).await {
            Ok(identity) => Some((auth, identity)),
            Err(error) => return finish(received, None, Err(error), started, None),
        },
        _ => None,
    };
    let target = parse_query(&received.query, WAIT_IDLE_PARAMETERS).and_then(|query| {
        let timeout = match query.timeout.as_deref() {
            Some(text) => parse_duration_parameter("timeout", text, Bounds::up_to(MAX_WAIT_IDLE))?,
            None => DEFAULT_WAIT_IDLE,
        };
        let named = caller_scope(caller.as_ref(), query.pod_name, query.namespace)?;
        let pod = app
            .targeting
            .resolve(named.pod_name.as_deref(), named.namespace.as_deref())?;
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
pub(crate) async fn handle_admin<B>(app: Arc<App>, request: Request<B>) -> Response<Body> {
    let received = Received::of(&request);
    drop(request);
    if let Err(error) = check_target(&received) {
        return finish(&received, None, Err(error), Instant::now(), None);
    }
    match route(&received.method, &received.path) {
        Ok(Route::WaitIdle) => wait_idle(&app, None, &received).await,
        Ok(Route::Count(_)) | Err(_) => {
            plain(404, format!("no such path {} here\n", received.path))
        }
        Ok(other) => serve_admin_route(&app, other, &received.query),
    }
}

/// Probes, metrics and status: answered at once, and kept out of the request log.
fn serve_admin_route(app: &App, route: Route, query: &str) -> Response<Body> {
    match route {
        Route::Healthz => probe(None),
        Route::Readyz => probe(app.readiness.problem()),
        Route::Metrics => {
            let tracked = i64::try_from(app.tracker.tracked_pods()).unwrap_or(i64::MAX);
            app.metrics.tracked_pods.set(tracked);
            answer(
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                app.metrics.encode(),
                Vec::new(),
            )
        }
        Route::Status => answer(
            200,
            "application/json",
            status_json(app, status_pod(query).as_deref()).to_string(),
            Vec::new(),
        ),
        Route::Count(_) | Route::WaitIdle => plain(404, "not an admin route\n".to_owned()),
    }
}

/// `/status?pod=NAMESPACE/NAME`: the pod to detail; every other parameter is ignored, as on
/// every admin route.
fn status_pod(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "pod")
        .map(|(_, value)| value.into_owned())
}

/// Health probes answer plainly and stay out of the request log.
fn probe(problem: Option<String>) -> Response<Body> {
    match problem {
        None => plain(200, "ok\n".to_owned()),
        Some(problem) => plain(503, format!("not ready: {problem}\n")),
    }
}

/// The HTTP status of every error: the only place that knows.
pub(crate) fn status_of(error: &Error) -> u16 {
    match error {
        Error::BadRequest(_) => 400,
        Error::Unauthenticated(_) => 401,
        Error::NotAllowed(_) | Error::CallerForbidden(_) => 403,
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
        Error::ApiUnavailable { .. } | Error::ShuttingDown | Error::AuthUnavailable(_) => 503,
        Error::OutcomeUnknown { .. } => 504,
        Error::TargetTooLong { .. } => 414,
        Error::Config(_) | Error::Internal(_) => 500,
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
                Error::ShuttingDown | Error::AuthUnavailable(_) => {
                    headers.push((RETRY_AFTER, "1".to_owned()));
                }
                Error::Unauthenticated(_) => headers.push((
                    WWW_AUTHENTICATE,
                    "Bearer realm=\"pod-webhook-tracker\"".to_owned(),
                )),
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

/// The answer to a request whose handler panicked (see [`crate::listen`]).
pub(crate) fn internal_error() -> Response<Body> {
    let error = Error::Internal(
        "the tracker failed while answering this request (see its log); a counting call may or may not have been stored"
            .to_owned(),
    );
    plain(status_of(&error), format!("{error}\n"))
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
    use std::time::Duration;

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
                    delta: crate::core::count::Delta::Increment,
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
}
