//! The sockets every server of the program shares (`serve`'s webhook and admin addresses,
//! `inject`'s admission webhook): accepts connections, serves HTTP/1.1 on them with hyper (a
//! task per connection, no thread), over TLS where the listener has a certificate.
//!
//! Each listener bounds what clients can hold: a cap on open connections (beyond it a new one
//! is answered 503 and closed), a header-read and an idle timeout ([`watchdog`]; the TLS
//! handshake counts as reading the head), and a bound on the request head (hyper answers 431). A
//! handler that panics costs its request a 500, not the process. A stop closes the listener
//! at once; each connection finishes the request it is serving, idle ones close.

pub(crate) mod head;
pub mod tls;
pub(crate) mod watchdog;

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::listen::watchdog::{Activity, Watched};
use crate::metrics::ConnectionLabels;

/// The body of every answer: small, and complete before it is sent.
pub(crate) type Body = Full<Bytes>;

/// `connections_closed_total`: connections a listener closed, by listener and reason.
pub(crate) type ClosedConnections = Family<ConnectionLabels, Counter>;

/// The bounds that keep slow, idle or numerous clients from exhausting the listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once on the webhook address (`--max-connections`).
    pub max_connections: usize,
    /// Connections open at once on the admin address: its own budget, so probes still answer
    /// while the webhook address is full.
    pub max_admin_connections: usize,
    /// From a request's first byte to the end of its headers (`--header-read-timeout`).
    pub header_read_timeout: Duration,
    /// A kept-alive connection with no request in progress (`--idle-timeout`); also the time
    /// a fresh connection has to send its first byte.
    pub idle_timeout: Duration,
    /// The longest request target (path and query) in bytes; longer answers 414.
    pub max_request_target: usize,
    /// The largest request line and headers in bytes; larger answers 431.
    pub max_head: usize,
}

/// The most `--max-connections` accepts (the default is 1024).
pub const MAX_CONNECTIONS_LIMIT: usize = 65_536;

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            max_admin_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_request_target: 8 * 1024,
            // With 1024 connections each holding a head short of this, about 19 MiB: under a
            // sidecar's 32 MiB limit with the tracker's own 8 or so.
            max_head: 16 * 1024,
        }
    }
}

/// Binds `address` for a listener, on the runtime of the caller (`Runtime::enter`).
///
/// Binding happens before the server runs, so that a taken port is reported at start-up and
/// the address is known (port 0 picks one).
pub(crate) fn bind(address: std::net::SocketAddr) -> Result<TcpListener, String> {
    std::net::TcpListener::bind(address)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        })
        .map_err(|e| format!("cannot listen on {address}: {e}"))
}

/// One listener's name (for metrics and logs), its share of the connection limits, and its
/// TLS, if any.
#[derive(Clone)]
pub(crate) struct Listener {
    name: &'static str,
    limits: ConnectionLimits,
    /// One permit per open connection.
    open: Arc<Semaphore>,
    /// One permit per connection being refused (answered 503 and closed).
    refusing: Arc<Semaphore>,
    closed: ClosedConnections,
    tls: Option<TlsAcceptor>,
    /// The answer to a request whose handler panicked.
    panic_answer: fn() -> hyper::Response<Body>,
}

impl Listener {
    pub(crate) fn new(
        name: &'static str,
        max_connections: usize,
        limits: ConnectionLimits,
        closed: ClosedConnections,
    ) -> Self {
        Listener {
            name,
            limits,
            open: Arc::new(Semaphore::new(max_connections)),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
            closed,
            tls: None,
            panic_answer: internal_error,
        }
    }

    /// Serves HTTPS instead of HTTP.
    pub(crate) fn with_tls(mut self, tls: TlsAcceptor) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Answers a request whose handler panicked with `answer` (which says what the panic may
    /// have left undone).
    pub(crate) fn with_panic_answer(mut self, answer: fn() -> hyper::Response<Body>) -> Self {
        self.panic_answer = answer;
        self
    }

    fn count_closed(&self, reason: &str) {
        count_closed(&self.closed, self.name, reason);
    }
}

fn count_closed(closed: &ClosedConnections, listener: &str, reason: &str) {
    closed
        .get_or_create(&ConnectionLabels {
            listener: listener.to_owned(),
            reason: reason.to_owned(),
        })
        .inc();
}

/// At most this many full-listener refusals are written at once; beyond that a new
/// connection is closed without an answer.
const MAX_REFUSING: usize = 64;
/// How long a refusal may take to be written and its caller's request drained.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// The answer to a connection beyond `--max-connections`.
const FULL: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 67\r\n\r\n\
too many open connections (--max-connections): try again in a moment\n";

/// Accepts connections until `stop` turns true, serving each on its own task with `handler`.
pub(crate) async fn accept<H, F>(
    tcp_listener: &TcpListener,
    stop: watch::Receiver<bool>,
    connections: &GracefulShutdown,
    listener: Listener,
    handler: H,
) where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    // Each connection's own view of the stop, for the time before hyper has it.
    let stop_connection = stop.clone();
    loop {
        tokio::select! {
            () = stop_requested(stop.clone()) => return,
            accepted = tcp_listener.accept() => match accepted {
                Ok((tcp, _)) => match Arc::clone(&listener.open).try_acquire_owned() {
                    Ok(permit) => serve(
                        tcp,
                        permit,
                        (connections, stop_connection.clone()),
                        &listener,
                        handler.clone(),
                    ),
                    Err(_) => refuse_full(tcp, &listener),
                },
                // Out of file descriptors or similar: give the system a moment, keep serving.
                Err(e) => {
                    log::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves one connection on its own task, within the listener's time and size limits; a
/// handler that panics answers 500 and the connection goes on.
fn serve<H, F>(
    tcp: TcpStream,
    permit: OwnedSemaphorePermit,
    (connections, stop): (&GracefulShutdown, watch::Receiver<bool>),
    listener: &Listener,
    handler: H,
) where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = hyper::Response<Body>> + Send + 'static,
{
    // Answers are small and written at once: do not let Nagle hold them back.
    let _ = tcp.set_nodelay(true);
    let activity = Activity::new();
    let (name, closed) = (listener.name, listener.closed.clone());
    let panic_answer = listener.panic_answer;
    let service_activity = Arc::clone(&activity);
    let service = service_fn(move |request| {
        let serving = service_activity.serving();
        // Boxed, for as long as the request is answered: hyper keeps room for the service's
        // future for the connection's whole life, and an async block that awaits a future it
        // captured holds it twice.
        let answer = Box::pin(AssertUnwindSafe(handler(request)).catch_unwind());
        let closed = closed.clone();
        async move {
            let response = answer.await.unwrap_or_else(|panic| {
                log::error!(
                    "answering a request on the {name} address panicked ({}); it is answered 500 and the program goes on",
                    panic_message(panic.as_ref())
                );
                count_closed(&closed, name, "panic");
                panic_answer()
            });
            drop(serving);
            Ok::<_, Infallible>(response)
        }
    });
    let limits = listener.limits;
    let watcher = connections.watcher();
    let listener = listener.clone();
    tokio::spawn(async move {
        let _permit = permit;
        // Each way of serving is boxed, so that a plain connection does not hold room for TLS
        // (a rustls connection and its handshake are kilobytes).
        let serving = async {
            let Some(tls) = &listener.tls else {
                return Box::pin(serve_http(tcp, &activity, stop, limits, service, watcher)).await;
            };
            Box::pin(async {
                // A handshake is bounded as a request head is: a client that stalls in it is
                // cut off.
                let handshake = tokio::select! {
                    handshake = tokio::time::timeout(limits.header_read_timeout, tls.accept(tcp)) => handshake,
                    () = stopping(stop.clone()) => return,
                };
                match handshake {
                    Ok(Ok(stream)) => {
                        serve_http(stream, &activity, stop, limits, service, watcher).await
                    }
                    Ok(Err(e)) => {
                        log::debug!("TLS handshake failed: {e}");
                        listener.count_closed("tls-handshake");
                    }
                    Err(_) => listener.count_closed("tls-handshake-timeout"),
                }
            })
            .await
        };
        tokio::select! {
            () = serving => {}
            expired = activity.expired(limits.header_read_timeout, limits.idle_timeout) => {
                log::debug!("connection closed: {}", expired.reason());
                listener.count_closed(expired.reason());
            }
        }
    });
}

/// Serves HTTP/1.1 on an open connection (plain or TLS) until it ends.
async fn serve_http<IO, S>(
    mut io: IO,
    activity: &Arc<Activity>,
    stop: watch::Receiver<bool>,
    limits: ConnectionLimits,
    service: S,
    watcher: Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Body> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // hyper's buffers only once the first request's head is here (see `head`). A stop
    // meanwhile closes the connection, as it closes an idle one: no request is lost, none had
    // arrived whole (and the watcher, dropped, does not hold the stop up).
    let read = tokio::select! {
        read = head::read(&mut io, activity, limits.max_head) => read,
        () = stopping(stop) => return,
    };
    let already_read = match read {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return,
        Err(e) => return log::debug!("connection ended while reading a head: {e}"),
    };
    let io = TokioIo::new(Watched::new(io, Arc::clone(activity), already_read));
    let connection = http1::Builder::new()
        .keep_alive(true)
        .max_buf_size(limits.max_head.max(MIN_BUFFER))
        .max_header_size(limits.max_head)
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(connection).await {
        log::debug!("connection ended with an error: {e}");
    }
}

/// Resolves once a stop is requested, or once nobody can request one any more.
async fn stop_requested(mut stop: watch::Receiver<bool>) {
    // The borrowed value is dropped here, so the caller's future stays `Send`.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Resolves once the server is stopping.
pub(crate) async fn stopping(mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            // The server is gone: whoever serves this connection decides.
            return std::future::pending().await;
        }
    }
}

/// hyper's smallest accepted read buffer.
const MIN_BUFFER: usize = 8192;

/// Answers a connection beyond the limit with 503 and closes it, without reading a request
/// beyond draining what the caller sent (so that the answer is not lost to a reset).
fn refuse_full(mut tcp: TcpStream, listener: &Listener) {
    listener.count_closed("full");
    let Ok(permit) = Arc::clone(&listener.refusing).try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(REFUSAL_TIME, async {
            tcp.write_all(FULL).await?;
            tcp.shutdown().await?;
            let mut sink = [0u8; 1024];
            while tcp.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    });
}

/// The answer to a request whose handler panicked.
pub(crate) fn internal_error() -> hyper::Response<Body> {
    let mut response = hyper::Response::new(Body::from("internal error: see the log\n"));
    *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What a panic said, for the log.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `handler` on a loopback port with `limits`, on a runtime of its own; returns
    /// the address.
    fn serving<H, F>(limits: ConnectionLimits, handler: H) -> std::net::SocketAddr
    where
        H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + 'static,
        F: Future<Output = hyper::Response<Body>> + Send + 'static,
    {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        tcp.set_nonblocking(true).expect("non-blocking");
        let address = tcp.local_addr().expect("an address");
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let tcp = TcpListener::from_std(tcp).expect("registered");
                let (_stop, stopped) = watch::channel(false);
                let connections = GracefulShutdown::new();
                let listener =
                    Listener::new("webhook", limits.max_connections, limits, Family::default());
                accept(&tcp, stopped, &connections, listener, handler).await;
            });
        });
        address
    }

    /// Sends one request and reads its answer (head and `content-length` body).
    async fn exchange(stream: &mut TcpStream, request: &str) -> String {
        stream.write_all(request.as_bytes()).await.expect("written");
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .expect("a content-length");
                if body.len() >= length {
                    return text;
                }
            }
            let read = stream.read(&mut chunk).await.expect("read");
            assert!(read > 0, "closed after {text:?}");
            answer.extend_from_slice(chunk.get(..read).unwrap_or_default());
        }
    }

    #[tokio::test]
    async fn a_handler_that_panics_costs_its_request_a_500_and_the_connection_goes_on() {
        let handler = |request: hyper::Request<hyper::body::Incoming>| async move {
            assert_ne!(request.uri().path(), "/boom", "a bug in a handler");
            internal_error().map(|_| Body::from("fine\n"))
        };
        let address = serving(ConnectionLimits::default(), handler);
        let mut stream = TcpStream::connect(address).await.expect("connects");
        let answer = exchange(&mut stream, "GET /boom HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(answer.contains("internal error"), "{answer}");
        let answer = exchange(&mut stream, "GET /fine HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(
            answer.contains("fine"),
            "the same connection serves the next request: {answer}"
        );
    }

    #[test]
    fn the_release_build_unwinds_so_that_a_panic_is_caught() {
        let manifest = include_str!("../../Cargo.toml");
        let release = manifest
            .split("[profile.release]")
            .nth(1)
            .expect("a release profile");
        assert!(release.contains("panic = \"unwind\""), "{release}");
    }
}
