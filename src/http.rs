//! The webhook server: routes, query parameters, the one place where errors become status codes,
//! one log line per call, and a graceful stop.
//!
//! Threads: a few tiny_http threads receive requests and never wait on the API; each counting
//! call is handed to the tracker, and its answer is written from tokio's blocking pool, so the
//! runtime never blocks on a socket either.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response};
use tokio::runtime::Handle;

use crate::count::Delta;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::target::{PodRef, Targeting};
use crate::tracker::Tracker;

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
    /// Where answers are written from.
    pub runtime: Handle,
    /// For `/readyz`.
    pub readiness: Arc<Readiness>,
    /// For `/metrics`, and counted on every call.
    pub metrics: Arc<Metrics>,
    /// The counting label, for `/status`.
    pub label: String,
}

/// Counts calls still being answered, so that a stop can wait for them.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl InFlight {
    fn enter(&self) {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    fn leave(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.idle.notify_all();
        }
    }

    /// Waits until no call is in flight or `grace` has passed; returns how many are left.
    fn wait_idle(&self, grace: Duration) -> usize {
        let count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        let (count, _) = self
            .idle
            .wait_timeout_while(count, grace, |count| *count > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *count
    }
}

/// The listening webhook server.
pub struct Server {
    http: Arc<tiny_http::Server>,
    admin: Option<Arc<tiny_http::Server>>,
    app: Arc<App>,
    in_flight: Arc<InFlight>,
    stopping: Arc<AtomicBool>,
    threads: usize,
}

/// Stops a running [`Server`] from another thread (the signal handler).
#[derive(Clone)]
pub struct StopHandle {
    http: Arc<tiny_http::Server>,
    admin: Option<Arc<tiny_http::Server>>,
    stopping: Arc<AtomicBool>,
    threads: usize,
}

impl StopHandle {
    /// Stops taking requests; calls in flight are still answered.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in 0..self.threads {
            self.http.unblock();
        }
        if let Some(admin) = &self.admin {
            admin.unblock();
        }
    }
}

impl Server {
    /// Binds the webhook address (and the admin address, which serves only probes, if given);
    /// `threads` tiny_http threads will receive webhook requests.
    pub fn bind(
        address: SocketAddr,
        admin: Option<SocketAddr>,
        app: App,
        threads: usize,
    ) -> Result<Server, String> {
        let listen = |address: SocketAddr| {
            tiny_http::Server::http(address)
                .map(Arc::new)
                .map_err(|e| format!("cannot listen on {address}: {e}"))
        };
        Ok(Server {
            http: listen(address)?,
            admin: admin.map(listen).transpose()?,
            app: Arc::new(app),
            in_flight: Arc::new(InFlight::default()),
            stopping: Arc::new(AtomicBool::new(false)),
            threads: threads.max(1),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.http.server_addr().to_ip()
    }

    /// The admin address actually bound, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref()?.server_addr().to_ip()
    }

    /// A handle that stops this server.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            http: Arc::clone(&self.http),
            admin: self.admin.clone(),
            stopping: Arc::clone(&self.stopping),
            threads: self.threads,
        }
    }

    /// Serves until stopped, then waits up to `grace` for calls in flight; returns how many
    /// were still unanswered when the grace period ended.
    pub fn run(self, grace: Duration) -> usize {
        let workers: Vec<_> = (0..self.threads)
            .map(|n| {
                let http = Arc::clone(&self.http);
                let app = Arc::clone(&self.app);
                let in_flight = Arc::clone(&self.in_flight);
                let stopping = Arc::clone(&self.stopping);
                std::thread::Builder::new()
                    .name(format!("http-{n}"))
                    .spawn(move || {
                        while !stopping.load(Ordering::SeqCst) {
                            match http.recv() {
                                Ok(request) => handle(&app, &in_flight, request),
                                Err(e) if !stopping.load(Ordering::SeqCst) => {
                                    log::warn!("receiving a request failed: {e}")
                                }
                                Err(_) => {}
                            }
                        }
                    })
            })
            .collect();
        let admin = self.admin.clone().map(|admin| {
            let app = Arc::clone(&self.app);
            let stopping = Arc::clone(&self.stopping);
            std::thread::Builder::new()
                .name("admin".to_owned())
                .spawn(move || {
                    while !stopping.load(Ordering::SeqCst) {
                        if let Ok(request) = admin.recv() {
                            handle_admin(&app, request);
                        }
                    }
                })
        });
        for worker in workers.into_iter().chain(admin).flatten() {
            let _ = worker.join();
        }
        let left = self.in_flight.wait_idle(grace);
        if left > 0 {
            log::warn!(
                "{left} call(s) still unanswered after the {}s grace period",
                grace.as_secs()
            );
        }
        left
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Count(Delta),
    Healthz,
    Readyz,
    Metrics,
    Status,
}

fn route(method: &Method, path: &str) -> Result<Route, Error> {
    let (route, allowed) = match path {
        "/increment" => (Route::Count(Delta::Increment), Method::Post),
        "/decrement" => (Route::Count(Delta::Decrement), Method::Post),
        "/healthz" => (Route::Healthz, Method::Get),
        "/readyz" => (Route::Readyz, Method::Get),
        "/metrics" => (Route::Metrics, Method::Get),
        "/status" => (Route::Status, Method::Get),
        _ => return Err(Error::UnknownPath(path.to_owned())),
    };
    if *method == allowed || (allowed == Method::Get && *method == Method::Head) {
        Ok(route)
    } else {
        Err(Error::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_owned(),
            allow: allowed.to_string(),
        })
    }
}

/// The query parameters of a counting call.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    pod_name: Option<String>,
    namespace: Option<String>,
}

fn parse_query(query: &str) -> Query {
    let mut parsed = Query::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "pod_name" => parsed.pod_name = Some(value.into_owned()),
            "namespace" => parsed.namespace = Some(value.into_owned()),
            _ => {}
        }
    }
    parsed
}

fn handle(app: &Arc<App>, in_flight: &Arc<InFlight>, request: Request) {
    let started = Instant::now();
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let wants_json = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Accept") && h.value.as_str().contains("application/json"));
    let route = match route(request.method(), path) {
        Ok(route) => route,
        Err(error) => {
            return finish(
                request,
                None,
                Err(error),
                wants_json,
                started,
                Some(&app.metrics),
            );
        }
    };
    let delta = match route {
        Route::Count(delta) => delta,
        other => return serve_admin_route(app, other, request),
    };
    let query = parse_query(query);
    let pod = match app
        .targeting
        .resolve(query.pod_name.as_deref(), query.namespace.as_deref())
    {
        Ok(pod) => pod,
        Err(error) => {
            return finish(
                request,
                None,
                Err(error),
                wants_json,
                started,
                Some(&app.metrics),
            );
        }
    };
    in_flight.enter();
    let answer = app.tracker.submit(pod.clone(), delta);
    let in_flight = Arc::clone(in_flight);
    let metrics = Arc::clone(&app.metrics);
    app.runtime.spawn(async move {
        let outcome = answer.await.unwrap_or(Err(Error::ShuttingDown));
        // Writing to the socket blocks; keep it off the runtime's own threads.
        let _ = tokio::task::spawn_blocking(move || {
            finish(
                request,
                Some(&pod),
                outcome,
                wants_json,
                started,
                Some(&metrics),
            );
            in_flight.leave();
        })
        .await;
    });
}

/// The request's path, without the query.
fn path_of(request: &Request) -> String {
    request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The admin listener serves probes, metrics and status: the counting routes stay on the
/// webhook address.
fn handle_admin(app: &App, request: Request) {
    let path = path_of(&request);
    match route(request.method(), &path) {
        Ok(Route::Count(_)) | Err(_) => {
            let _ = request.respond(
                Response::from_string(format!("no such path {path} here\n")).with_status_code(404),
            );
        }
        Ok(other) => serve_admin_route(app, other, request),
    }
}

/// Probes, metrics and status: answered at once, and kept out of the request log.
fn serve_admin_route(app: &App, route: Route, request: Request) {
    match route {
        Route::Healthz => probe(request, None),
        Route::Readyz => probe(request, app.readiness.problem()),
        Route::Metrics => {
            let response = Response::from_string(app.metrics.encode()).with_header(content_type(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ));
            let _ = request.respond(response);
        }
        Route::Status => {
            let body = status_json(app).to_string();
            let _ = request
                .respond(Response::from_string(body).with_header(content_type("application/json")));
        }
        Route::Count(_) => {}
    }
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
fn probe(request: Request, problem: Option<String>) {
    let response = match problem {
        None => Response::from_string("ok\n").with_status_code(200),
        Some(problem) => {
            Response::from_string(format!("not ready: {problem}\n")).with_status_code(503)
        }
    };
    let _ = request.respond(response.with_header(content_type("text/plain; charset=utf-8")));
}

/// The HTTP status of every error: the only place that knows.
pub fn status_of(error: &Error) -> u16 {
    match error {
        Error::BadRequest(_) => 400,
        Error::NotAllowed(_) => 403,
        Error::PodNotFound { .. } | Error::UnknownPath(_) => 404,
        Error::MethodNotAllowed { .. } => 405,
        Error::NotACount { .. } | Error::Overflow { .. } => 409,
        Error::ApiRefused { .. } | Error::ApiRejected { .. } => 502,
        Error::ApiUnavailable { .. } | Error::ShuttingDown => 503,
        Error::OutcomeUnknown { .. } => 504,
        Error::Config(_) => 500,
    }
}

fn finish(
    request: Request,
    pod: Option<&PodRef>,
    outcome: crate::Result<i64>,
    json: bool,
    started: Instant,
    metrics: Option<&Metrics>,
) {
    let method = request.method().to_string();
    let path = path_of(&request);
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
                Error::MethodNotAllowed { allow, .. } => headers.push(header("Allow", allow)),
                Error::ApiUnavailable { retry_after, .. } => {
                    headers.push(header(
                        "Retry-After",
                        &retry_after.as_secs().max(1).to_string(),
                    ));
                }
                Error::ShuttingDown => headers.push(header("Retry-After", "1")),
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
    let mut response = Response::from_string(body)
        .with_status_code(status)
        .with_header(content_type(kind));
    for extra in headers {
        response.add_header(extra);
    }
    let written = request.respond(response);
    let elapsed = started.elapsed();
    if let Some(endpoint) = path
        .strip_prefix('/')
        .filter(|p| matches!(*p, "increment" | "decrement"))
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
    if let Err(e) = written {
        log::warn!(target: "request", "{method} {path} pod={pod_text}: the answer could not be written: {e}");
    }
}

fn header(name: &str, value: &str) -> Header {
    // Names and values here are ASCII literals or numbers, which tiny_http always accepts.
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .unwrap_or_else(|()| content_type("text/plain"))
}

fn content_type(value: &str) -> Header {
    Header {
        field: "Content-Type"
            .parse()
            .unwrap_or_else(|_| unreachable!("a valid header name")),
        value: value
            .parse()
            .unwrap_or_else(|_| unreachable!("an ASCII header value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_routes_take_post_only() {
        assert_eq!(
            route(&Method::Post, "/increment").ok(),
            Some(Route::Count(Delta::Increment))
        );
        assert_eq!(
            route(&Method::Post, "/decrement").ok(),
            Some(Route::Count(Delta::Decrement))
        );
        let err = route(&Method::Get, "/increment").expect_err("refused");
        assert_eq!(status_of(&err), 405);
        assert!(matches!(err, Error::MethodNotAllowed { allow, .. } if allow == "POST"));
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in ["/", "/inc", "/increment/", "/metrics2"] {
            let err = route(&Method::Post, path).expect_err("refused");
            assert_eq!(status_of(&err), 404, "{path}");
        }
    }

    #[test]
    fn probes_take_get_and_head() {
        assert_eq!(route(&Method::Get, "/healthz").ok(), Some(Route::Healthz));
        assert_eq!(route(&Method::Head, "/readyz").ok(), Some(Route::Readyz));
        assert!(route(&Method::Post, "/healthz").is_err());
    }

    #[test]
    fn query_parameters_are_percent_decoded() {
        assert_eq!(
            parse_query("pod_name=worker%2D1&namespace=jobs&other=1"),
            Query {
                pod_name: Some("worker-1".into()),
                namespace: Some("jobs".into())
            }
        );
        assert_eq!(parse_query(""), Query::default());
        assert_eq!(
            parse_query("pod_name="),
            Query {
                pod_name: Some(String::new()),
                namespace: None
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
                    delta: Delta::Increment,
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
    fn in_flight_waits_until_the_last_call_leaves() {
        let in_flight = Arc::new(InFlight::default());
        in_flight.enter();
        in_flight.enter();
        let other = Arc::clone(&in_flight);
        let leaver = std::thread::spawn(move || {
            other.leave();
            other.leave();
        });
        assert_eq!(in_flight.wait_idle(Duration::from_secs(10)), 0);
        leaver.join().expect("joined");
        in_flight.enter();
        assert_eq!(
            in_flight.wait_idle(Duration::from_millis(10)),
            1,
            "gives up after the grace period"
        );
    }
}
