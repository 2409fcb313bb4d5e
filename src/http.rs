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

use crate::error::Error;
use crate::jobs::{self, Action, JobCall};
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
    /// Writes the answers of counting calls.
    pub responder: Arc<Responder>,
    /// The counting label, for `/status`.
    pub label: String,
}

/// Writes answers on a few dedicated threads: a socket write may block, and the runtime's own
/// threads must not; a thread per answer (tokio's blocking pool) would cost memory in bursts.
pub struct Responder {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl Responder {
    /// Starts `threads` answer-writing threads.
    pub fn new(threads: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("answer-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while taking the next job, never while running it.
                        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                log::error!("cannot start an answer-writing thread: {e}");
            }
        }
        Responder { jobs }
    }

    /// Queues the writing of one answer.
    pub fn answer(&self, job: impl FnOnce() + Send + 'static) {
        // The threads live as long as the sender, which lives as long as this responder.
        let _ = self.jobs.send(Box::new(job));
    }
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
    Count(Action),
    WaitIdle,
    Healthz,
    Readyz,
    Metrics,
    Status,
}

fn route(method: &Method, path: &str) -> Result<Route, Error> {
    let (route, allowed) = match path {
        "/increment" => (Route::Count(Action::Increment), Method::Post),
        "/decrement" => (Route::Count(Action::Decrement), Method::Post),
        "/renew" => (Route::Count(Action::Renew), Method::Post),
        "/wait-idle" => (Route::WaitIdle, Method::Get),
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

fn handle(app: &Arc<App>, in_flight: &Arc<InFlight>, request: Request) {
    let started = Instant::now();
    let url = request.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let wants_json = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Accept") && h.value.as_str().contains("application/json"));
    let refuse = |request, error| {
        finish(
            request,
            None,
            Err(error),
            wants_json,
            started,
            Some(&app.metrics),
        );
    };
    let route = match route(request.method(), path) {
        Ok(route) => route,
        Err(error) => return refuse(request, error),
    };
    let action = match route {
        Route::Count(action) => action,
        Route::WaitIdle => return wait_idle(app, Some(in_flight), request, query, wants_json),
        other => return serve_admin_route(app, other, request),
    };
    let idempotency_key = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Idempotency-Key"))
        .map(|h| h.value.as_str().to_owned());
    let query = parse_query(query);
    let resolved = app
        .targeting
        .resolve(query.pod_name.as_deref(), query.namespace.as_deref())
        .and_then(|pod| Ok((pod, job_call(action, &query, idempotency_key.as_deref())?)));
    let (pod, call) = match resolved {
        Ok(resolved) => resolved,
        Err(error) => return refuse(request, error),
    };
    in_flight.enter();
    let answer = app.tracker.submit(pod.clone(), call);
    let in_flight = Arc::clone(in_flight);
    let metrics = Arc::clone(&app.metrics);
    let responder = Arc::clone(&app.responder);
    app.runtime.spawn(async move {
        let outcome = answer.await.unwrap_or(Err(Error::ShuttingDown));
        responder.answer(move || {
            finish(
                request,
                Some(&pod),
                outcome,
                wants_json,
                started,
                Some(&metrics),
            );
            in_flight.leave();
        });
    });
}

/// `GET /wait-idle[?timeout=30s&pod_name=…]`: answers once the pod's count is zero (200, the
/// count), or when the timeout passes (503, how many are still running). Served on both
/// listeners: a `preStop` hook reaches the admin one.
fn wait_idle(
    app: &Arc<App>,
    in_flight: Option<&Arc<InFlight>>,
    request: Request,
    query: &str,
    wants_json: bool,
) {
    let started = Instant::now();
    let query = parse_query(query);
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
        Err(error) => return finish(request, None, Err(error), wants_json, started, None),
    };
    let in_flight = in_flight.cloned();
    if let Some(in_flight) = &in_flight {
        in_flight.enter();
    }
    let tracker = app.tracker.clone();
    let responder = Arc::clone(&app.responder);
    app.runtime.spawn(async move {
        let outcome = tracker.wait_idle(&pod, timeout).await;
        responder.answer(move || {
            finish(request, Some(&pod), outcome, wants_json, started, None);
            if let Some(in_flight) = in_flight {
                in_flight.leave();
            }
        });
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
fn handle_admin(app: &Arc<App>, request: Request) {
    let path = path_of(&request);
    match route(request.method(), &path) {
        Ok(Route::WaitIdle) => {
            let url = request.url().to_owned();
            let query = url.split_once('?').map_or("", |(_, query)| query);
            wait_idle(app, None, request, query, false);
        }
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
        Route::Count(_) | Route::WaitIdle => {}
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
                // Not "try this pod again soon": the pod is gone after this long.
                Error::PodDeleting { retry_after, .. } => headers.push(header(
                    "Retry-After",
                    &retry_after.as_secs().max(1).to_string(),
                )),
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
    let elapsed = started.elapsed();
    // Counted before the answer leaves, so a caller that reads /metrics next sees its own call.
    if let Some(endpoint) = path
        .strip_prefix('/')
        .filter(|p| matches!(*p, "increment" | "decrement" | "renew"))
        && let Some(metrics) = metrics
    {
        metrics.webhook_call(endpoint, status, elapsed);
    }
    let written = request.respond(response);
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
            Some(Route::Count(Action::Increment))
        );
        assert_eq!(
            route(&Method::Post, "/decrement").ok(),
            Some(Route::Count(Action::Decrement))
        );
        assert_eq!(
            route(&Method::Post, "/renew").ok(),
            Some(Route::Count(Action::Renew))
        );
        assert_eq!(
            route(&Method::Get, "/wait-idle").ok(),
            Some(Route::WaitIdle)
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
