//! The baseline: a webhook server that follows the original Go tool's algorithm, against the
//! same API server and under the same load as the tracker.
//!
//! For each `POST /increment|decrement?pod_name=P` it
//! 1. LISTs pods with `fieldSelector=metadata.name=P&labelSelector=app=worker&limit=1`,
//! 2. computes the new count from the listed pod's label (absent = 0, never below 0, removed
//!    at 0),
//! 3. UPDATEs (PUT) the whole pod with the listed `resourceVersion`,
//!
//! and on 409 Conflict starts again from the LIST, like client-go's
//! `retry.RetryOnConflict(retry.DefaultRetry, …)`: at most 5 attempts, 10 ms (+10 % jitter)
//! apart; then, or on any other failure, it answers 500. Every API request first takes a token
//! from one shared client-side limiter when throttled (client-go's default: 5/s, burst 10).
//! Requests are served concurrently (a goroutine per request in Go; here hyper on a small
//! runtime, and a blocking thread per request, up to more than any load the benchmark applies),
//! each request with a kept-alive API connection of its own while it runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::client::Conn;
use crate::cluster::{APP_LABEL, BASELINE_TOKEN, COUNT_LABEL, NAMESPACE};
use crate::throttle::TokenBucket;

/// client-go's `retry.DefaultRetry`: 5 steps, 10 ms apart, jitter 0.1.
const ATTEMPTS: u32 = 5;
const RETRY_DELAY: Duration = Duration::from_millis(10);
/// Request threads: more than the largest concurrency the benchmark uses.
pub(crate) const THREADS: usize = 64;

/// A running baseline server.
pub(crate) struct Baseline {
    runtime: tokio::runtime::Runtime,
    stop: oneshot::Sender<()>,
    pub address: SocketAddr,
}

/// The API clients of the request threads, each with its kept-alive connection: a thread takes
/// one for a request and puts it back after.
struct Clients {
    api: SocketAddr,
    throttle: Arc<Option<TokenBucket>>,
    idle: Mutex<Vec<ApiClient>>,
    made: AtomicU64,
}

impl Clients {
    fn take(&self) -> ApiClient {
        if let Some(client) = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
        {
            return client;
        }
        let made = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        ApiClient {
            conn: Conn::new(self.api),
            throttle: Arc::clone(&self.throttle),
            jitter: Jitter(0x9E37_79B9_7F4A_7C15 ^ made),
        }
    }

    fn put_back(&self, client: ApiClient) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(client);
    }
}

impl Baseline {
    /// Starts the server on a loopback port; `throttle` limits its API requests.
    ///
    /// Connections are served by hyper on a small runtime, and each request runs the
    /// original's blocking algorithm on a thread of its own (up to [`THREADS`]).
    pub(crate) fn start(
        api: SocketAddr,
        throttle: Option<TokenBucket>,
    ) -> Result<Baseline, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(THREADS)
            .thread_name("baseline")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the baseline's runtime: {e}"))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| format!("the baseline cannot listen on 127.0.0.1: {e}"))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("the baseline has no address: {e}"))?;
        let clients = Arc::new(Clients {
            api,
            throttle: Arc::new(throttle),
            idle: Mutex::new(Vec::new()),
            made: AtomicU64::new(0),
        });
        let (stop, mut stopped) = oneshot::channel();
        runtime.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = &mut stopped => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let clients = Arc::clone(&clients);
                let service = service_fn(move |request| {
                    let clients = Arc::clone(&clients);
                    async move { Ok::<_, Infallible>(serve(clients, request).await) }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
            }
        });
        Ok(Baseline {
            runtime,
            stop,
            address,
        })
    }

    /// Stops the listener and the request threads.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// A small pseudo-random source for retry jitter.
struct Jitter(u64);

impl Jitter {
    /// A number in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One thread's API client: its connection and the shared limiter.
struct ApiClient {
    conn: Conn,
    throttle: Arc<Option<TokenBucket>>,
    jitter: Jitter,
}

impl ApiClient {
    fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        if let Some(throttle) = self.throttle.as_ref() {
            throttle.wait();
        }
        let auth = format!("Bearer {BASELINE_TOKEN}");
        let mut headers = vec![
            ("Authorization", auth.as_str()),
            ("Accept", "application/json"),
        ];
        let bytes = match body {
            Some(body) => {
                headers.push(("Content-Type", "application/json"));
                body.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        let response = self
            .conn
            .request(method, path, &headers, &bytes)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        Ok((response.status, value))
    }
}

/// Why a call failed: the HTTP status and a message.
type Failure = (u16, String);

async fn serve<B>(clients: Arc<Clients>, request: Request<B>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let answered = tokio::task::spawn_blocking(move || {
        let mut client = clients.take();
        let answer = answer(&mut client, &path, &query);
        clients.put_back(client);
        answer
    })
    .await;
    let (status, body) = match answered {
        Ok(Ok(count)) => (200, count.to_string()),
        Ok(Err((status, message))) => (status, format!("{message}\n")),
        Err(e) => (500, format!("the request thread failed: {e}\n")),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
}

/// One call, on a request thread: the new count or why not.
fn answer(client: &mut ApiClient, path: &str, query: &str) -> Result<i64, Failure> {
    let delta = match path {
        "/increment" => 1,
        "/decrement" => -1,
        _ => return Err((404, "not found".to_string())),
    };
    let pod = form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "pod_name")
        .map(|(_, value)| value.into_owned())
        .filter(|pod| !pod.is_empty());
    match pod {
        None => Err((400, "pod_name is required".to_string())),
        Some(pod) => count(client, &pod, delta),
    }
}

/// LIST, compute, UPDATE; again on conflict.
fn count(client: &mut ApiClient, pod: &str, delta: i64) -> Result<i64, Failure> {
    let list = format!(
        "/api/v1/namespaces/{NAMESPACE}/pods?fieldSelector=metadata.name%3D{pod}&labelSelector={}%3D{}&limit=1",
        APP_LABEL.0, APP_LABEL.1
    );
    let internal = |message: String| (500, message);
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            let factor = 1.0 + 0.1 * client.jitter.next();
            thread::sleep(RETRY_DELAY.mul_f64(factor));
        }
        let (status, listed) = client.send("GET", &list, None).map_err(internal)?;
        if status != 200 {
            return Err(internal(format!("listing pod {pod}: API status {status}")));
        }
        let Some(mut item) = listed["items"]
            .as_array()
            .and_then(|items| items.first())
            .cloned()
        else {
            return Err((404, format!("pod {pod} not found")));
        };
        let current = match item["metadata"]["labels"][COUNT_LABEL].as_str() {
            None => 0,
            Some(text) => text
                .parse::<i64>()
                .map_err(|_| internal(format!("label {COUNT_LABEL}={text:?} is not a count")))?,
        };
        let next = (current + delta).max(0);
        let labels = &mut item["metadata"]["labels"];
        if !labels.is_object() {
            *labels = Value::Object(serde_json::Map::new());
        }
        let Some(labels) = labels.as_object_mut() else {
            unreachable!("made an object just above");
        };
        if next == 0 {
            labels.remove(COUNT_LABEL);
        } else {
            labels.insert(COUNT_LABEL.to_string(), Value::from(next.to_string()));
        }
        item["kind"] = Value::from("Pod");
        item["apiVersion"] = Value::from("v1");
        let update = format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}");
        let (status, _) = client.send("PUT", &update, Some(&item)).map_err(internal)?;
        match status {
            200 => return Ok(next),
            409 => continue,
            other => return Err(internal(format!("updating pod {pod}: API status {other}"))),
        }
    }
    Err(internal(format!(
        "updating pod {pod}: still conflicting after {ATTEMPTS} attempts"
    )))
}
