//! The calls `run` makes to the tracker, through hyper's HTTP/1.1 client (plain HTTP: the
//! sidecar listens on the pod's loopback), and which answers are final. Every call names the
//! job by a key of its own, so a call whose answer was lost (or answered 504) is repeated
//! rather than given up: the tracker applies a keyed start or end once however often it comes.

use std::hash::{BuildHasher, RandomState};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Event, Options, TokenFile, say};
use crate::core::callers::MAX_TOKEN;
use crate::core::durations;

/// The first pause before a call is repeated; it doubles up to [`MAX_PAUSE`].
pub(super) const FIRST_PAUSE: Duration = Duration::from_millis(100);
pub(super) const MAX_PAUSE: Duration = Duration::from_secs(1);
/// The most of an answer that is read (the tracker's are one short line).
pub(super) const MAX_ANSWER: usize = 64 * 1024;
/// The most of an answer's body quoted in a message.
pub(super) const MAX_QUOTE: usize = 300;

/// The tracker's address, from `--url http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` as given, for the `Host` header.
    pub authority: String,
    /// The host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// The port (80, or 443 with https, if the URL names none).
    pub port: u16,
    /// `https://`: the call goes over TLS (a standalone tracker with `--tls-cert-file`).
    pub tls: bool,
}

impl Endpoint {
    /// Parses `http://host[:port][/]` or `https://…`; anything else (a path, credentials) is
    /// refused with the reason.
    pub fn parse(text: &str) -> std::result::Result<Endpoint, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("not a URL ({e}); expected http://host:port"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => {
                return Err(format!(
                    "the scheme {other} is not supported; expected http://host:port"
                ));
            }
            None => return Err("expected http://host:port, e.g. http://127.0.0.1:8080".to_owned()),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| "expected http://host:port".to_owned())?;
        if authority.as_str().contains('@') {
            return Err(
                "credentials in the URL are not supported; expected http://host:port".to_owned(),
            );
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(
                "expected http://host:port without a path or query: run calls /increment and \
                 /decrement itself"
                    .to_owned(),
            );
        }
        let host = authority.host();
        Ok(Endpoint {
            authority: authority.as_str().to_owned(),
            host: host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host)
                .to_owned(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            tls,
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

/// A call `run` makes. Each names the job by the wrapper's key (`?job=run-…`), so that any of
/// them can be repeated after a lost answer: a repeated start or end of the same job changes
/// nothing on the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `POST /increment`, before the command starts.
    Increment,
    /// `POST /renew`, now and then while it runs (the job's deadline moves on).
    Renew,
    /// `POST /decrement`, after it ended.
    Decrement,
}

impl Call {
    fn path(self) -> &'static str {
        match self {
            Call::Increment => "/increment",
            Call::Renew => "/renew",
            Call::Decrement => "/decrement",
        }
    }
}

/// How a call ended, after any repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200: the count right after the call.
    Counted(String),
    /// Certainly not applied.
    NotApplied(String),
    /// It may or may not have been applied, and repeating it did not tell before the retry
    /// timeout.
    Unknown(String),
    /// A signal came while waiting to repeat the call.
    Interrupted {
        /// The signal.
        signal: i32,
        /// Whether an earlier attempt may have reached the tracker (then the job is ended with a
        /// decrement, which changes nothing if it never started).
        maybe_applied: bool,
    },
}

/// One exchange with the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Exchange {
    /// No connection: the request was not sent.
    NotSent(String),
    /// The request may have arrived, but no complete answer did.
    Lost(String),
    /// An answer.
    Answered(Answer),
}

/// A tracker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

impl Answer {
    /// The body as one short line, for messages.
    fn quote(&self) -> String {
        let line = self.body.split_whitespace().collect::<Vec<_>>().join(" ");
        match line.char_indices().nth(MAX_QUOTE) {
            Some((cut, _)) => format!("{}…", line.get(..cut).unwrap_or_default()),
            None => line,
        }
    }
}

/// What an answer means for the call: final (`Some`), or worth repeating (`None`).
pub(super) fn judge(answer: &Answer) -> Option<Outcome> {
    let what = format!("the tracker answered {}: {}", answer.status, answer.quote());
    match answer.status {
        200 => Some(Outcome::Counted(answer.body.trim().to_owned())),
        // 503: nothing was written. 504: the tracker could not learn whether it was; the job's
        // key makes repeating it safe either way.
        503 | 504 => None,
        // The tracker refused the call (bad request, not allowed, not found, not a count) or the
        // API server refused the tracker: nothing was written.
        400..=499 | 502 => Some(Outcome::NotApplied(what)),
        // 500 or something the tracker never answers: whether it applied the call is unknown.
        _ => Some(Outcome::Unknown(what)),
    }
}

/// The tracker as `run` talks to it: hyper's HTTP/1.1 client, one connection per call, on a
/// small runtime of its own for each call (a handful of calls per job).
#[derive(Debug, Clone)]
pub struct Tracker {
    endpoint: Endpoint,
    retry_timeout: Duration,
    request_timeout: Duration,
    job: String,
    token_file: Option<TokenFile>,
    /// With an `https://` URL: the TLS client, trusting the CA of `--ca-file`.
    tls: Option<Tls>,
}

/// A TLS client for the tracker.
#[derive(Clone)]
struct Tls(tokio_rustls::TlsConnector);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

fn tls_client(certificates: &[rustls_pki_types::CertificateDer<'static>]) -> Option<Tls> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate.clone()).ok()?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Some(Tls(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    ))))
}

impl Tracker {
    /// A client for the tracker the options name, for a job with a fresh key.
    pub fn new(options: &Options) -> Tracker {
        Tracker {
            endpoint: options.tracker.clone(),
            retry_timeout: options.retry_timeout,
            request_timeout: options.request_timeout,
            job: options.job.clone().unwrap_or_else(new_job_key),
            token_file: options.token_file.clone(),
            tls: options.ca.as_deref().and_then(tls_client),
        }
    }

    /// The job's key, as the tracker knows it.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// Makes the call, repeating it until it gets a final answer or the retry timeout passes.
    /// With `signals`, a signal that comes while waiting to repeat ends the wait.
    pub fn call(&self, call: Call, signals: Option<&Receiver<Event>>) -> Outcome {
        let deadline = durations::instant_after(Instant::now(), self.retry_timeout);
        let mut pause = FIRST_PAUSE;
        let mut attempts: u32 = 0;
        // Whether some attempt may have reached the tracker (then "not applied" is not known).
        let mut maybe_received = false;
        loop {
            attempts = attempts.saturating_add(1);
            let (why, wait) = match self.exchange(call) {
                Exchange::NotSent(why) => (why, pause),
                Exchange::Lost(why) => {
                    maybe_received = true;
                    (
                        format!("{why} (the tracker may have received the call)"),
                        pause,
                    )
                }
                Exchange::Answered(answer) => match judge(&answer) {
                    Some(outcome) => return outcome,
                    None => {
                        maybe_received |= answer.status == 504;
                        (
                            format!("the tracker answered {}: {}", answer.status, answer.quote()),
                            answer.retry_after.map_or(pause, |after| after.max(pause)),
                        )
                    }
                },
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let tries = if attempts == 1 {
                    "1 attempt".to_owned()
                } else {
                    format!("{attempts} attempts")
                };
                let why = format!("{why} ({tries})");
                return if maybe_received {
                    Outcome::Unknown(why)
                } else {
                    Outcome::NotApplied(why)
                };
            }
            let wait = wait.min(left);
            match signals.map(|events| events.recv_timeout(wait)) {
                Some(Ok(Event::Signal(signal))) => {
                    return Outcome::Interrupted {
                        signal,
                        maybe_applied: maybe_received,
                    };
                }
                Some(Ok(Event::Exited) | Err(RecvTimeoutError::Timeout)) => {}
                Some(Err(RecvTimeoutError::Disconnected)) | None => std::thread::sleep(wait),
            }
            pause = pause.saturating_mul(2).min(MAX_PAUSE);
        }
    }

    /// `Bearer TOKEN` from the token file, read now (the kubelet rotates it); `None` without one.
    fn bearer(&self) -> std::result::Result<Option<String>, String> {
        let Some(file) = &self.token_file else {
            return Ok(None);
        };
        match std::fs::read_to_string(&file.path) {
            Ok(token) if token.trim().len() <= MAX_TOKEN => {
                let token = token.trim();
                Ok((!token.is_empty()).then(|| format!("Bearer {token}")))
            }
            Ok(_) => Err(format!(
                "the token in {} is longer than {MAX_TOKEN} bytes",
                file.path.display()
            )),
            Err(_) if !file.required => Ok(None),
            Err(e) => Err(format!(
                "cannot read the token in {}: {e}",
                file.path.display()
            )),
        }
    }

    /// One attempt, bounded by the request timeout.
    fn exchange(&self, call: Call) -> Exchange {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => return Exchange::NotSent(format!("cannot start a runtime: {e}")),
        };
        runtime.block_on(async {
            let connected = tokio::time::timeout(
                self.request_timeout,
                TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port)),
            )
            .await;
            let stream = match connected {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Exchange::NotSent(format!("cannot connect: {e}")),
                Err(_) => return Exchange::NotSent("cannot connect: it took too long".to_owned()),
            };
            let exchange = async {
                match (&self.tls, self.endpoint.tls) {
                    (_, false) => self.send(call, stream).await,
                    (Some(tls), true) => {
                        let Ok(name) =
                            rustls_pki_types::ServerName::try_from(self.endpoint.host.clone())
                        else {
                            return Exchange::NotSent(format!(
                                "{} is not a TLS server name",
                                self.endpoint.host
                            ));
                        };
                        match tls.0.connect(name, stream).await {
                            Ok(stream) => self.send(call, stream).await,
                            Err(e) => Exchange::NotSent(format!("the TLS handshake failed: {e}")),
                        }
                    }
                    (None, true) => {
                        Exchange::NotSent("https needs the tracker's CA (--ca-file)".to_owned())
                    }
                }
            };
            match tokio::time::timeout(self.request_timeout, exchange).await {
                Ok(exchange) => exchange,
                Err(_) => Exchange::Lost("no answer within --request-timeout".to_owned()),
            }
        })
    }

    async fn send<S>(&self, call: Call, stream: S) -> Exchange
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(handshake) => handshake,
                Err(e) => return Exchange::NotSent(format!("cannot start HTTP: {e}")),
            };
        let connection = tokio::spawn(connection);
        let target = format!("{}?job={}", call.path(), self.job);
        let bearer = match self.bearer() {
            Ok(bearer) => bearer,
            Err(why) => return Exchange::NotSent(why),
        };
        let mut request = http::Request::post(target);
        if let Some(bearer) = bearer {
            request = request.header(http::header::AUTHORIZATION, bearer);
        }
        let request = request
            .header(http::header::HOST, &self.endpoint.authority)
            .header(http::header::ACCEPT, "text/plain")
            .header(
                http::header::USER_AGENT,
                concat!("pod-webhook-tracker-run/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new());
        let request = match request {
            Ok(request) => request,
            Err(e) => return Exchange::NotSent(format!("cannot build the request: {e}")),
        };
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => return Exchange::Lost(format!("no answer: {e}")),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
        {
            Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            Err(e) => return Exchange::Lost(format!("no complete answer: {e}")),
        };
        connection.abort();
        Exchange::Answered(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// A key no other job shares: `run-` and 16 hex digits from the clock, the process id and
/// the standard library's random hasher seed.
fn new_job_key() -> String {
    let key = RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()));
    format!("run-{key:016x}")
}

/// Renewals of a running job, on a thread of its own (so that signals are never held up by a
/// slow tracker). Dropping it stops them and waits for one in progress, so that no renewal
/// lands after the job's decrement.
pub(super) struct Renewals {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Renewals {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Renews the job every `every` until the returned [`Renewals`] is dropped. A failed renewal is
/// reported and tried again at the next turn: the job's deadline is far enough away for that.
pub(super) fn keep_renewing(tracker: &Tracker, every: Duration) -> Option<Renewals> {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let renewing = Tracker {
        // One attempt per turn: the next turn is the retry.
        retry_timeout: Duration::ZERO,
        ..tracker.clone()
    };
    let spawned = std::thread::Builder::new()
        .name("renew".to_owned())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                match renewing.call(Call::Renew, None) {
                    Outcome::Counted(_) | Outcome::Interrupted { .. } => {}
                    Outcome::NotApplied(why) | Outcome::Unknown(why) => say(&format!(
                        "renewing the job failed: {why}; trying again in {}",
                        durations::describe(every)
                    )),
                }
            }
        });
    match spawned {
        Ok(thread) => Some(Renewals {
            stop: Some(stop),
            thread: Some(thread),
        }),
        Err(e) => {
            say(&format!(
                "cannot renew the job ({e}): it may be released at the tracker's --max-job-duration"
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_url_is_http_host_and_port() {
        let endpoint = Endpoint::parse("http://127.0.0.1:8080").expect("parses");
        assert_eq!(endpoint.host, "127.0.0.1");
        assert_eq!(endpoint.port, 8080);
        assert_eq!(endpoint.to_string(), "http://127.0.0.1:8080");
        let endpoint = Endpoint::parse("http://[::1]:9000/").expect("parses");
        assert_eq!((endpoint.host.as_str(), endpoint.port), ("::1", 9000));
        assert_eq!(endpoint.authority, "[::1]:9000");
        assert_eq!(Endpoint::parse("http://tracker").expect("parses").port, 80);
    }

    #[test]
    fn https_is_tls_on_443_and_paths_and_credentials_are_refused_with_the_reason() {
        let https = Endpoint::parse("https://tracker.jobs.svc").expect("parses");
        assert!(https.tls);
        assert_eq!(https.port, 443);
        assert_eq!(https.to_string(), "https://tracker.jobs.svc");
        for (url, why) in [
            ("http://127.0.0.1:8080/increment", "without a path"),
            (
                "http://127.0.0.1:8080/?pod_name=x",
                "without a path or query",
            ),
            ("http://user:pw@127.0.0.1:8080", "credentials"),
            ("127.0.0.1:8080", "expected http://host:port"),
            ("ftp://x:1", "scheme ftp"),
        ] {
            let error = Endpoint::parse(url).expect_err(url);
            assert!(error.contains(why), "{url}: {error}");
        }
    }

    fn answer(status: u16) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: "pod jobs/x: why\n".to_owned(),
        }
    }

    #[test]
    fn a_503_and_a_504_are_repeated_and_refusals_are_final() {
        assert_eq!(
            judge(&Answer {
                body: "3\n".to_owned(),
                ..answer(200)
            }),
            Some(Outcome::Counted("3".to_owned()))
        );
        assert_eq!(judge(&answer(503)), None, "nothing was written");
        assert_eq!(
            judge(&answer(504)),
            None,
            "the job's key makes a repeat safe"
        );
        for status in [400, 403, 404, 409, 502] {
            assert!(
                matches!(judge(&answer(status)), Some(Outcome::NotApplied(why)) if why.contains("pod jobs/x: why")),
                "{status}"
            );
        }
        for status in [500, 201] {
            assert!(
                matches!(judge(&answer(status)), Some(Outcome::Unknown(_))),
                "{status}"
            );
        }
    }

    #[test]
    fn every_run_gets_a_key_of_its_own_that_the_tracker_accepts() {
        let (first, second) = (new_job_key(), new_job_key());
        assert_ne!(first, second);
        for key in [first, second] {
            assert!(key.starts_with("run-"), "{key}");
            assert_eq!(crate::core::jobs::validate_job_id(&key), Ok(()));
        }
    }
}
