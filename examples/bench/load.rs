//! The load: jobs that call `POST /increment` when they start and `POST /decrement` when they
//! end, sequentially or from many callers at once. A job whose increment was not answered 200
//! does not run and does not decrement (as `examples/job.sh` does), so the count never goes
//! below its start and the final label is known: the start plus the sum of the answered steps.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::Conn;

/// Where calls go: the server and the query every call carries (`?pod_name=P`, or none).
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub address: SocketAddr,
    pub query: String,
}

/// How callers connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connections {
    /// One kept-alive connection per caller, opened by its first call: all callers connect
    /// at the same moment, when the burst starts.
    OpenedTogether,
    /// One kept-alive connection per caller, opened and used once (`GET /healthz`) one after
    /// another before the burst: the burst measures the calls alone.
    OpenedBeforehand,
    /// A new connection for every call, closed after it (`Connection: close`), as `curl` in
    /// `examples/job.sh` does.
    PerCall,
}

impl Connections {
    /// How a phase's name describes it (empty for the usual kept-alive connections).
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Connections::OpenedTogether => "",
            Connections::OpenedBeforehand => ", connections opened beforehand",
            Connections::PerCall => ", a new connection per call",
        }
    }
}

/// One call and how it went.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// +1 (increment) or -1 (decrement).
    pub delta: i64,
    pub latency: Duration,
    /// The HTTP status; `None` if the call failed on the wire.
    pub status: Option<u16>,
    /// The count in a 200 answer's body.
    pub count: Option<i64>,
    /// For failures: the status and body, or the transport error.
    pub error: Option<String>,
}

/// Every call of one phase and how long the phase took.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub calls: Vec<Call>,
    pub elapsed: Duration,
}

/// Makes one call on `conn` (`close`: asks the server to close the connection after it).
pub(crate) fn call(conn: &mut Conn, endpoint: &Endpoint, delta: i64, close: bool) -> Call {
    let path = if delta > 0 {
        "/increment"
    } else {
        "/decrement"
    };
    let target = format!("{path}{}", endpoint.query);
    let headers: &[(&str, &str)] = if close {
        &[("Connection", "close")]
    } else {
        &[]
    };
    let started = Instant::now();
    let result = conn.request("POST", &target, headers, b"");
    let latency = started.elapsed();
    match result {
        Ok(response) => {
            let text = response.text();
            let count = (response.status == 200)
                .then(|| text.trim().parse::<i64>().ok())
                .flatten();
            let error = (count.is_none()).then(|| format!("{} {}", response.status, text.trim()));
            Call {
                delta,
                latency,
                status: Some(response.status),
                count,
                error,
            }
        }
        Err(e) => Call {
            delta,
            latency,
            status: None,
            count: None,
            error: Some(e.to_string()),
        },
    }
}

/// One caller: its jobs, one after another.
fn caller(endpoint: &Endpoint, mut conn: Conn, jobs: usize, connections: Connections) -> Vec<Call> {
    let per_call = connections == Connections::PerCall;
    let mut one = |delta| {
        if per_call {
            conn = Conn::new(endpoint.address);
        }
        call(&mut conn, endpoint, delta, per_call)
    };
    let mut calls = Vec::with_capacity(2 * jobs);
    for _ in 0..jobs {
        let increment = one(1);
        let counted = increment.count.is_some();
        calls.push(increment);
        if counted {
            calls.push(one(-1));
        }
    }
    calls
}

/// Runs `jobs` jobs (an increment, then a decrement if the increment got 200) spread over
/// `concurrency` callers started together; returns once every caller is done.
pub(crate) fn run(
    endpoint: &Endpoint,
    jobs: usize,
    concurrency: usize,
    connections: Connections,
) -> Result<Run, String> {
    let concurrency = concurrency.clamp(1, jobs.max(1));
    let mut conns = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let mut conn = Conn::new(endpoint.address);
        if connections == Connections::OpenedBeforehand {
            // Any answer will do (the baseline has no /healthz): the connection is served.
            conn.request("GET", "/healthz", &[], b"")
                .map_err(|e| format!("cannot open a connection beforehand: {e}"))?;
        }
        conns.push(conn);
    }
    let start = Arc::new(Barrier::new(concurrency + 1));
    let callers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(n, conn)| {
            let mine = jobs / concurrency + usize::from(n < jobs % concurrency);
            let endpoint = endpoint.clone();
            let start = Arc::clone(&start);
            thread::Builder::new()
                .name(format!("caller-{n}"))
                .spawn(move || {
                    start.wait();
                    caller(&endpoint, conn, mine, connections)
                })
                .map_err(|e| format!("cannot start a caller thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    start.wait();
    let started = Instant::now();
    let mut calls = Vec::with_capacity(2 * jobs);
    for caller in callers {
        calls.extend(
            caller
                .join()
                .map_err(|_| "a caller thread panicked".to_string())?,
        );
    }
    Ok(Run {
        calls,
        elapsed: started.elapsed(),
    })
}
