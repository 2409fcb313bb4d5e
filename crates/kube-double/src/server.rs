//! The HTTP(S) side: accepting connections (plain or TLS), HTTP/1.1 with keep-alive through
//! hyper, and for each request: faults, latency, authentication, impersonation,
//! authorization, the resource call, the record, and the answer (or no answer).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::admission;
use crate::faults::{FaultKind, Faults};
use crate::objects::Options;
use crate::rbac::{self, Impersonation, Rbac, User};
use crate::record::{Outcome, RecordedRequest, Records, Verb};
use crate::resources::{self, Call};
use crate::restart::plan::{Restarts, WarmUp};
use crate::routes::{Query, Route};
use crate::status::ApiError;
use crate::store::Store;
use crate::tls::Tls;
use crate::watch::{self, WatchBody};
use crate::webhook_call;

/// The body of an answer: whole, or a watch's stream.
type Reply = Either<Full<Bytes>, WatchBody>;

/// The largest request body accepted (the API server's limit is about 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Everything a request may read or change, behind one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub store: Store,
    pub rbac: Rbac,
    pub faults: Faults,
    pub records: Records,
    pub options: Options,
    pub read_latency: Duration,
    pub write_latency: Duration,
    /// Services webhooks may name, routed to local addresses (`route_service`).
    pub services: BTreeMap<(String, String), String>,
    /// Restarts asked for, under way and done.
    pub restarts: Restarts,
}

/// State shared by the handle and the server tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Notified whenever a request is recorded and whenever a restart moves on.
    changed: Condvar,
    pub tls: Option<Tls>,
}

impl Shared {
    pub(crate) fn new(state: State, tls: Option<Tls>) -> Shared {
        Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
            tls,
        }
    }

    /// Logs a request that has just arrived, and wakes whoever waits.
    fn begin(self: &Arc<Self>, request: RecordedRequest) -> Tracked {
        let verb = request.verb;
        let number = self.lock().records.begin(request);
        self.notify();
        Tracked {
            shared: Arc::clone(self),
            number,
            verb,
            finished: false,
        }
    }

    /// Waits until `done` holds for the recorded requests, at most `timeout`; returns
    /// whether it holds.
    pub(crate) fn wait_for_records(
        &self,
        timeout: Duration,
        done: impl Fn(&Records) -> bool,
    ) -> bool {
        self.wait_until(Some(timeout), |state| done(&state.records))
    }

    /// Waits until `done` holds for the state, at most `timeout` (`None`: for as long as it
    /// takes); returns whether it holds. Whoever changes what `done` looks at calls
    /// [`Shared::notify`].
    pub(crate) fn wait_until(
        &self,
        timeout: Option<Duration>,
        done: impl Fn(&State) -> bool,
    ) -> bool {
        let state = self.lock();
        let state = match timeout {
            Some(timeout) => {
                self.changed
                    .wait_timeout_while(state, timeout, |state| !done(state))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => self
                .changed
                .wait_while(state, |state| !done(state))
                .unwrap_or_else(PoisonError::into_inner),
        };
        done(&state)
    }

    /// Wakes whoever waits in [`Shared::wait_until`].
    pub(crate) fn notify(&self) {
        self.changed.notify_all();
    }

    /// The state. A panic elsewhere cannot leave it half-changed in a way that matters to a
    /// test double, so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl watch::StoreAccess for Shared {
    fn read<R>(&self, read: impl FnOnce(&Store) -> R) -> R {
        read(&self.lock().store)
    }
}

/// A request in the log, to be completed exactly once. If its handler is dropped before
/// that (the server went away), it ends as dropped.
struct Tracked {
    shared: Arc<Shared>,
    number: u64,
    verb: Verb,
    finished: bool,
}

impl Tracked {
    fn finish(&mut self, outcome: Outcome, who: Identity) {
        self.finished = true;
        self.shared
            .lock()
            .records
            .finish(self.number, self.verb, outcome, |request| {
                request.user = who.effective;
                request.authenticated_user = who.authenticated;
            });
        self.shared.notify();
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(Outcome::Dropped, Identity::default());
        }
    }
}

/// Accepts connections until told to stop (or until the stop sender is dropped); then closes
/// the listener, drops every open connection, and reports that it is done.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
    done: std::sync::mpsc::Sender<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(serve_connection(tcp, shared.clone()));
                }
                // Out of file descriptors or similar: give the system a moment.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
    let _ = done.send(());
}

/// A TCP stream that can be told to end with a reset (RST) instead of a normal close.
struct Socket {
    tcp: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.tcp.set_zero_linger();
        }
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// What a request handler may do to its connection.
struct Connection {
    /// The client certificate (DER), if the client gave one.
    peer_certificate: Option<Vec<u8>>,
    /// Closes the connection when notified.
    kill: Notify,
    /// Makes the close a reset.
    reset: Arc<AtomicBool>,
}

async fn serve_connection(tcp: TcpStream, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let reset = Arc::new(AtomicBool::new(false));
    let socket = Socket {
        tcp,
        reset: reset.clone(),
    };
    match &shared.tls {
        Some(tls) => {
            let acceptor = TlsAcceptor::from(tls.server_config.clone());
            let Ok(stream) = acceptor.accept(socket).await else {
                return;
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec());
            serve_http(stream, peer, reset, shared.clone()).await;
        }
        None => serve_http(socket, None, reset, shared.clone()).await,
    }
}

async fn serve_http<IO>(
    io: IO,
    peer_certificate: Option<Vec<u8>>,
    reset: Arc<AtomicBool>,
    shared: Arc<Shared>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = Arc::new(Connection {
        peer_certificate,
        kill: Notify::new(),
        reset,
    });
    let handler = connection.clone();
    let service = service_fn(move |request| {
        let shared = shared.clone();
        let connection = handler.clone();
        async move { Ok::<_, Infallible>(handle(shared, connection, request).await) }
    });
    let mut builder = http1::Builder::new();
    builder.keep_alive(true).header_read_timeout(None);
    let serving = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = serving => {}
        _ = connection.kill.notified() => {}
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn respond(
    code: u16,
    body: &Value,
    extra: Option<(hyper::header::HeaderName, HeaderValue)>,
) -> Response<Reply> {
    respond_with(code, body, extra.into_iter().collect())
}

fn respond_with(
    code: u16,
    body: &Value,
    extra: Vec<(hyper::header::HeaderName, HeaderValue)>,
) -> Response<Reply> {
    let (content_type, bytes) = match body {
        Value::String(text) => ("text/plain; charset=utf-8", Bytes::from(text.clone())),
        body => ("application/json", Bytes::from(body.to_string())),
    };
    let mut response = Response::new(Either::Left(Full::new(bytes)));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in extra {
        response.headers_mut().append(name, value);
    }
    response
}

/// Closes the connection without an answer; never returns.
async fn drop_connection(connection: &Connection, reset: bool) -> Response<Reply> {
    if reset {
        connection.reset.store(true, Ordering::SeqCst);
    }
    connection.kill.notify_one();
    std::future::pending().await
}

async fn handle(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    request: Request<Incoming>,
) -> Response<Reply> {
    let method = request.method().as_str().to_string();
    let uri = request.uri().clone();
    let headers = request.headers().clone();
    let query = Query::parse(uri.query());
    let route = Route::parse(uri.path());
    let verb = route.verb(&method, &query);
    let kind = verb.unwrap_or(match method.as_str() {
        "POST" => Verb::Create,
        "PUT" => Verb::Update,
        "PATCH" => Verb::Patch,
        "DELETE" => Verb::Delete,
        _ => Verb::Get,
    });
    let impersonation = Impersonation {
        user: header(&headers, "impersonate-user"),
        groups: headers
            .get_all("impersonate-group")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect(),
        uid: header(&headers, "impersonate-uid"),
    };
    let content_type = header(&headers, CONTENT_TYPE.as_str());
    let mut tracked = shared.begin(RecordedRequest {
        method: method.clone(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string()),
        verb: kind,
        user: None,
        authenticated_user: None,
        impersonated_user: impersonation.user.clone(),
        impersonated_groups: impersonation.groups.clone(),
        impersonated_uid: impersonation.uid.clone(),
        content_type: content_type.clone(),
        status: None,
        outcome: None,
    });

    let decided = {
        let mut state = shared.lock();
        let latency = if kind.is_write() {
            state.write_latency
        } else {
            state.read_latency
        };
        // A restart is cutting every connection: this one too, whatever it asks.
        (!state.restarts.is_down()).then(|| (state.faults.decide(kind, route.pod_name()), latency))
    };
    let Some((decision, latency)) = decided else {
        tracked.finish(Outcome::Dropped, Identity::default());
        return drop_connection(&connection, false).await;
    };
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    match decision.action {
        Some(FaultKind::Status(code)) => {
            tracked.finish(Outcome::Status(code), Identity::default());
            // An injected 429 is API Priority and Fairness refusing the request.
            if code == 429 {
                return respond_with(code, &throttled_body(), throttled_headers(1));
            }
            let error = ApiError::injected(
                code,
                route.resource(),
                route.object_name().unwrap_or_default(),
            );
            return respond(error.code, &error.to_json(), None);
        }
        Some(FaultKind::Hang) => {
            tracked.finish(Outcome::Hung, Identity::default());
            return std::future::pending().await;
        }
        Some(FaultKind::Reset) => {
            tracked.finish(Outcome::Dropped, Identity::default());
            return drop_connection(&connection, true).await;
        }
        _ => {}
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                let error = ApiError::too_large("the request body is too large");
                tracked.finish(Outcome::Status(error.code), Identity::default());
                return respond(error.code, &error.to_json(), None);
            }
            // The client went away while sending.
            tracked.finish(Outcome::Dropped, Identity::default());
            return drop_connection(&connection, false).await;
        }
    };

    let authorization = header(&headers, AUTHORIZATION.as_str());
    let mut received = Received {
        method: &method,
        path: uri.path(),
        authorization,
        peer_certificate: connection.peer_certificate.as_deref(),
        impersonation: &impersonation,
        route: &route,
        verb,
        query: &query,
        content_type: content_type.as_deref(),
        body,
    };
    // Mutating admission runs after authentication and authorization, before the create.
    let mut warnings = Vec::new();
    if let (
        Route::Pods {
            namespace: Some(namespace),
        },
        Some(Verb::Create),
    ) = (&route, verb)
    {
        let admitted = {
            let state = shared.lock();
            authorize(&state, &received).map(|(who, user)| {
                let object = admission::review_object(&received.body)
                    .filter(|object| admission::claimable(object, namespace));
                let webhooks = object.as_ref().map_or_else(Vec::new, |object| {
                    admission::matching(&state.store, &state.services, namespace, object)
                });
                (who, user, object, webhooks)
            })
        };
        if let Ok((who, user, Some(object), webhooks)) = admitted
            && !webhooks.is_empty()
        {
            let uid = shared.lock().store.uid();
            match mutate(&uid, namespace, object, &user, &query, &webhooks).await {
                Ok((object, said)) => {
                    received.body = Bytes::from(object.to_string());
                    warnings = said;
                }
                Err(error) => {
                    tracked.finish(Outcome::Status(error.code), who);
                    return respond_with(error.code, &error.to_json(), warning_headers(&warnings));
                }
            }
        }
    }

    let processed = {
        let mut state = shared.lock();
        let state = &mut *state;
        // The write a restart waits for is applied, then the server goes down: its answer is
        // lost, and so are those of requests that have not been applied yet.
        (!state.restarts.is_down()).then(|| {
            let cut = state.restarts.take_cut(kind, &route);
            (process(state, &received), cut)
        })
    };
    let Some((answer, cut)) = processed else {
        tracked.finish(Outcome::Dropped, Identity::default());
        return drop_connection(&connection, false).await;
    };
    if cut {
        // The restart's thread takes the server away.
        shared.notify();
    }
    if cut || decision.action == Some(FaultKind::ApplyThenDrop) {
        tracked.finish(Outcome::Dropped, answer.who);
        return drop_connection(&connection, false).await;
    }
    // An authorized, valid watch: its events stream from here (checked once more by the same
    // rules that let it through).
    if verb == Some(Verb::Watch)
        && answer.code == 200
        && let Ok(request) = watch::Watch::parse(&route, &query)
    {
        tracked.finish(Outcome::Status(200), answer.who);
        let options = shared.lock().options;
        let mut response = Response::new(Either::Right(watch::start(
            shared.clone(),
            request,
            options,
        )));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
    }
    let mut headers = warning_headers(&warnings);
    let outcome = match answer.warm_up {
        None => Outcome::Status(answer.code),
        Some(warm_up) => {
            if let WarmUp::Throttled(seconds) = warm_up {
                headers.extend(throttled_headers(seconds));
            }
            Outcome::WarmingUp(answer.code)
        }
    };
    tracked.finish(outcome, answer.who);
    respond_with(answer.code, &answer.body, headers)
}

/// The body of API Priority and Fairness's 429 (see [`crate::status::THROTTLED_BODY`]):
/// plain text, which [`respond_with`] sends as `text/plain; charset=utf-8`.
fn throttled_body() -> Value {
    Value::from(crate::status::THROTTLED_BODY)
}

/// The headers Go's `http.Error` and apiserver's `tooManyRequests` add to that 429.
fn throttled_headers(retry_after_seconds: u32) -> Vec<(hyper::header::HeaderName, HeaderValue)> {
    vec![
        (RETRY_AFTER, HeaderValue::from(retry_after_seconds)),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ]
}

/// `Warning: 299 - "..."` for each warning a webhook gave.
fn warning_headers(warnings: &[String]) -> Vec<(hyper::header::HeaderName, HeaderValue)> {
    warnings
        .iter()
        .filter_map(|text| {
            let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
            HeaderValue::from_str(&format!("299 - \"{escaped}\"")).ok()
        })
        .map(|value| (hyper::header::WARNING, value))
        .collect()
}

/// Calls each matching webhook in turn with the object as the previous one left it, then
/// once more those with `reinvocationPolicy: IfNeeded` that a later webhook changed the
/// object after; returns the object to create and the warnings, or the error to answer.
async fn mutate(
    uid: &str,
    namespace: &str,
    mut object: Value,
    user: &User,
    query: &Query,
    webhooks: &[admission::Webhook],
) -> Result<(Value, Vec<String>), ApiError> {
    let mut warnings = Vec::new();
    let mut changed_after = vec![false; webhooks.len()];
    for round in 0..2 {
        for (index, webhook) in webhooks.iter().enumerate() {
            if round == 1 && !(webhook.reinvoke && changed_after[index]) {
                continue;
            }
            if query.dry_run() && !webhook.supports_dry_run {
                return Err(admission::no_dry_run(webhook));
            }
            let review = admission::review(uid, namespace, &object, user, query);
            let verdict = match webhook_call::call(webhook, &review).await {
                Ok(reply) => admission::verdict(webhook, uid, &object, reply.status, &reply.body),
                Err(why) => admission::Verdict::Failed(format!(
                    "failed calling webhook \"{}\": {why}",
                    webhook.name
                )),
            };
            match verdict {
                admission::Verdict::Allowed {
                    object: next,
                    warnings: said,
                } => {
                    if next != object {
                        for earlier in changed_after.iter_mut().take(index) {
                            *earlier = true;
                        }
                    }
                    changed_after[index] = false;
                    object = next;
                    warnings.extend(said);
                }
                admission::Verdict::Denied(error) => return Err(error),
                admission::Verdict::Failed(_) if webhook.fail_open => {}
                admission::Verdict::Failed(why) => return Err(admission::internal(&why)),
            }
        }
        if webhooks.len() < 2 {
            break;
        }
    }
    Ok((object, warnings))
}

/// A request with its body, ready to be answered.
struct Received<'a> {
    method: &'a str,
    /// The path, without the query.
    path: &'a str,
    authorization: Option<String>,
    peer_certificate: Option<&'a [u8]>,
    impersonation: &'a Impersonation,
    route: &'a Route,
    verb: Option<Verb>,
    query: &'a Query,
    content_type: Option<&'a str>,
    body: Bytes,
}

/// Who a request came from: the owner of its credentials and the user it was authorized as
/// (the impersonated user, when impersonation was allowed).
#[derive(Debug, Default)]
struct Identity {
    authenticated: Option<String>,
    effective: Option<String>,
}

/// A request refused before it reached a resource: who it came from (as far as it is known),
/// the error to answer, and whether a restarted server's warm-up refused it.
struct Refusal {
    who: Identity,
    error: ApiError,
    warm_up: Option<WarmUp>,
}

fn refuse(who: Identity, error: ApiError, warm_up: Option<WarmUp>) -> Box<Refusal> {
    Box::new(Refusal {
        who,
        error,
        warm_up,
    })
}

/// Authenticates, impersonates and authorizes a request: who it came from and the user it
/// acts as, or the refusal to answer.
///
/// In the order of kube-apiserver's filters: authentication, impersonation, API Priority and
/// Fairness, authorization; a restarted server's warm-up (see [`crate::Restart`]) refuses at
/// the filter that is not ready, members of `system:masters` excepted.
fn authorize(state: &State, request: &Received) -> Result<(Identity, User), Box<Refusal>> {
    let warm_up = state.restarts.warm_up(Instant::now());
    let Some(requestor) = state
        .rbac
        .authenticate(request.authorization.as_deref(), request.peer_certificate)
    else {
        return Err(refuse(Identity::default(), ApiError::unauthorized(), None));
    };
    if warm_up == Some(WarmUp::Unauthorized) && !requestor.is_master() {
        return Err(refuse(
            Identity::default(),
            ApiError::unauthorized(),
            warm_up,
        ));
    }
    let synced = warm_up != Some(WarmUp::Forbidden);
    // Unsynced, the authorizer refuses every non-master: the warm-up's refusal.
    let unsynced = (!synced).then_some(WarmUp::Forbidden);
    let authenticated = Some(requestor.name().to_string());
    let user = match state
        .rbac
        .impersonate(&requestor, request.impersonation, synced)
    {
        Ok(Some(user)) => user,
        Ok(None) => requestor,
        Err(error) => {
            let who = Identity {
                effective: authenticated.clone(),
                authenticated,
            };
            let warm_up = if error.code == 403 { unsynced } else { None };
            return Err(refuse(who, error, warm_up));
        }
    };
    let name = Identity {
        authenticated,
        effective: Some(user.name().to_string()),
    };
    if let Some(WarmUp::Throttled(_)) = warm_up
        && !user.is_master()
    {
        return Err(refuse(name, ApiError::throttled(), warm_up));
    }
    let attributes = request
        .verb
        .and_then(|verb| request.route.attributes(verb, request.query));
    if !synced && attributes.is_none() && !user.is_master() {
        let error = rbac::unsynced_path_forbidden(user.name(), request.method, request.path);
        return Err(refuse(name, error, unsynced));
    }
    if request.verb.is_none() {
        return Err(refuse(name, ApiError::method_not_allowed(), None));
    }
    if let Some(attributes) = attributes
        && let Err(error) = state.rbac.check(&user, &attributes, synced)
    {
        return Err(refuse(name, error, unsynced));
    }
    Ok((name, user))
}

/// A request's answer: who it came from, the status code, the body, and whether a restarted
/// server's warm-up gave it.
struct Answer {
    who: Identity,
    code: u16,
    body: Value,
    warm_up: Option<WarmUp>,
}

impl Answer {
    fn new(who: Identity, code: u16, body: Value) -> Answer {
        Answer {
            who,
            code,
            body,
            warm_up: None,
        }
    }

    fn error(who: Identity, error: &ApiError) -> Answer {
        Answer::new(who, error.code, error.to_json())
    }
}

/// Authenticates, impersonates, authorizes and serves a request.
fn process(state: &mut State, request: &Received) -> Answer {
    let (name, user) = match authorize(state, request) {
        Ok(authorized) => authorized,
        Err(refused) => {
            let Refusal {
                who,
                error,
                warm_up,
            } = *refused;
            let mut answer = Answer::error(who, &error);
            if let Some(WarmUp::Throttled(_)) = warm_up {
                answer.body = throttled_body();
            }
            return Answer { warm_up, ..answer };
        }
    };
    let Some(verb) = request.verb else {
        return Answer::error(name, &ApiError::method_not_allowed());
    };
    let call = Call {
        verb,
        route: request.route,
        query: request.query,
        content_type: request.content_type,
        body: &request.body,
        user: &user,
    };
    match resources::serve(&mut state.store, &state.rbac, state.options, &call) {
        Ok((code, body)) => Answer::new(name, code, body),
        Err(error) => Answer::error(name, &error),
    }
}
