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
//! Requests are served concurrently (a goroutine per request in Go; a pool of threads here,
//! larger than any load the benchmark applies), each thread with its own kept-alive API
//! connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::Value;
use tiny_http::{Response, Server};

use crate::client::Conn;
use crate::cluster::{APP_LABEL, BASELINE_TOKEN, COUNT_LABEL, NAMESPACE};
use crate::throttle::TokenBucket;

/// client-go's `retry.DefaultRetry`: 5 steps, 10 ms apart, jitter 0.1.
const ATTEMPTS: u32 = 5;
const RETRY_DELAY: Duration = Duration::from_millis(10);
/// Request threads: more than the largest concurrency the benchmark uses.
pub const THREADS: usize = 64;

/// A running baseline server.
pub struct Baseline {
    server: Arc<Server>,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    pub address: SocketAddr,
}

impl Baseline {
    /// Starts the server on a loopback port; `throttle` limits its API requests.
    pub fn start(api: SocketAddr, throttle: Option<TokenBucket>) -> Result<Baseline, String> {
        let server = Server::http("127.0.0.1:0")
            .map_err(|e| format!("the baseline cannot listen on 127.0.0.1: {e}"))?;
        let address = server
            .server_addr()
            .to_ip()
            .ok_or("the baseline did not get an IP address")?;
        let server = Arc::new(server);
        let stopping = Arc::new(AtomicBool::new(false));
        let throttle = Arc::new(throttle);
        let workers = (0..THREADS)
            .map(|n| {
                let server = Arc::clone(&server);
                let stopping = Arc::clone(&stopping);
                let throttle = Arc::clone(&throttle);
                thread::Builder::new()
                    .name(format!("baseline-{n}"))
                    .spawn(move || {
                        let mut client = ApiClient {
                            conn: Conn::new(api),
                            throttle,
                            jitter: Jitter(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1)),
                        };
                        while !stopping.load(Ordering::SeqCst) {
                            if let Ok(request) = server.recv() {
                                serve(&mut client, request);
                            }
                        }
                    })
                    .map_err(|e| format!("cannot start a baseline thread: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Baseline {
            server,
            stopping,
            workers,
            address,
        })
    }

    /// Stops the threads and the listener.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
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

fn serve(client: &mut ApiClient, request: tiny_http::Request) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let delta = match path {
        "/increment" => 1,
        "/decrement" => -1,
        _ => {
            let _ = request.respond(Response::from_string("not found\n").with_status_code(404));
            return;
        }
    };
    let pod = form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "pod_name")
        .map(|(_, value)| value.into_owned())
        .filter(|pod| !pod.is_empty());
    let answer = match pod {
        None => Err((400, "pod_name is required".to_string())),
        Some(pod) => count(client, &pod, delta),
    };
    let response = match answer {
        Ok(count) => Response::from_string(count.to_string()),
        Err((status, message)) => {
            Response::from_string(format!("{message}\n")).with_status_code(status)
        }
    };
    let _ = request.respond(response);
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
