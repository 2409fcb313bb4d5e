//! The calls `run` makes to the tracker: a tiny blocking HTTP/1.1 client over std's
//! `TcpStream` (plain HTTP: the sidecar listens on the pod's loopback), and which answers are
//! final. A call is repeated only while the tracker has not received it (see [`Call`]).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::{Event, Options};
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
    /// The port (80 if the URL names none).
    pub port: u16,
}

impl Endpoint {
    /// Parses `http://host[:port][/]`; anything else (https, a path, credentials) is refused
    /// with the reason.
    pub fn parse(text: &str) -> std::result::Result<Endpoint, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("not a URL ({e}); expected http://host:port"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(
                    "https is not supported: the tracker serves plain HTTP (a sidecar \
                            on the pod's loopback); use http://host:port"
                        .to_owned(),
                );
            }
            Some(other) => {
                return Err(format!(
                    "the scheme {other} is not supported; expected http://host:port"
                ));
            }
            None => return Err("expected http://host:port, e.g. http://127.0.0.1:8080".to_owned()),
        }
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
            port: authority.port_u16().unwrap_or(80),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// The two calls `run` makes.
///
/// Only a call the tracker never received is repeated (it could not be reached, or it answered
/// 503, "nothing written"). A call it received has been applied exactly once, or not at all, or
/// its outcome is unknown (504): repeating it could count the job twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `POST /increment`, before the command starts.
    Increment,
    /// `POST /decrement`, after it ended.
    Decrement,
}

impl Call {
    /// The request target. Job keys (a separate change) will name the job here.
    fn target(self) -> &'static str {
        match self {
            Call::Increment => "/increment",
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
    /// It may or may not have been applied.
    Unknown(String),
    /// A signal came while waiting to repeat the call (which had not been applied).
    Interrupted(i32),
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

/// A parsed HTTP answer.
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
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line,
        }
    }
}

/// What an answer means for the call.
pub(super) fn judge(call: Call, answer: &Answer) -> Option<Outcome> {
    let what = format!("the tracker answered {}: {}", answer.status, answer.quote());
    match answer.status {
        200 => Some(Outcome::Counted(answer.body.trim().to_owned())),
        // Nothing was written: repeat it.
        503 => None,
        504 => Some(Outcome::Unknown(what)),
        // The tracker refused the call (bad request, not allowed, not found, not a count) or the
        // API server refused the tracker: nothing was written.
        400..=499 | 502 => Some(Outcome::NotApplied(what)),
        // 500 or something the tracker never answers: whether it applied the call is unknown.
        _ => Some(Outcome::Unknown(format!("{what} (on {})", call.target()))),
    }
}

/// A tiny HTTP/1.1 client for the tracker's two calls.
#[derive(Debug, Clone)]
pub struct Tracker {
    endpoint: Endpoint,
    retry_timeout: Duration,
    request_timeout: Duration,
}

impl Tracker {
    /// A client for the tracker the options name.
    pub fn new(options: &Options) -> Tracker {
        Tracker {
            endpoint: options.tracker.clone(),
            retry_timeout: options.retry_timeout,
            request_timeout: options.request_timeout,
        }
    }

    /// Makes the call, repeating it while the tracker has not taken it, up to the retry
    /// timeout. With `signals`, a signal that comes while waiting to repeat ends the wait.
    pub fn call(&self, call: Call, signals: Option<&Receiver<Event>>) -> Outcome {
        let deadline = durations::instant_after(Instant::now(), self.retry_timeout);
        let mut pause = FIRST_PAUSE;
        let mut attempts: u32 = 0;
        loop {
            attempts = attempts.saturating_add(1);
            let (why, wait) = match self.exchange(call) {
                Exchange::NotSent(why) => (why, pause),
                Exchange::Lost(why) => {
                    return Outcome::Unknown(format!(
                        "{why} (the tracker may have received the call)"
                    ));
                }
                Exchange::Answered(answer) => match judge(call, &answer) {
                    Some(outcome) => return outcome,
                    None => (
                        format!("the tracker answered 503: {}", answer.quote()),
                        answer.retry_after.map_or(pause, |after| after.max(pause)),
                    ),
                },
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let tries = if attempts == 1 {
                    "1 attempt".to_owned()
                } else {
                    format!("{attempts} attempts")
                };
                return Outcome::NotApplied(format!("{why} ({tries})"));
            }
            let wait = wait.min(left);
            match signals.map(|events| events.recv_timeout(wait)) {
                Some(Ok(Event::Signal(signal))) => return Outcome::Interrupted(signal),
                Some(Ok(Event::Exited) | Err(RecvTimeoutError::Timeout)) => {}
                Some(Err(RecvTimeoutError::Disconnected)) | None => std::thread::sleep(wait),
            }
            pause = pause.saturating_mul(2).min(MAX_PAUSE);
        }
    }

    fn exchange(&self, call: Call) -> Exchange {
        let endpoint = &self.endpoint;
        let addresses = match (endpoint.host.as_str(), endpoint.port).to_socket_addrs() {
            Ok(addresses) => addresses.collect::<Vec<_>>(),
            Err(e) => return Exchange::NotSent(format!("cannot resolve {}: {e}", endpoint.host)),
        };
        let mut failure = format!("{} resolves to no address", endpoint.host);
        let mut connection = None;
        for address in addresses {
            match TcpStream::connect_timeout(&address, self.request_timeout) {
                Ok(stream) => {
                    connection = Some(stream);
                    break;
                }
                Err(e) => failure = format!("cannot connect: {e}"),
            }
        }
        let Some(mut stream) = connection else {
            return Exchange::NotSent(failure);
        };
        let deadline = durations::instant_after(Instant::now(), self.request_timeout);
        let request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nAccept: text/plain\r\n\
             Connection: close\r\nUser-Agent: pod-webhook-tracker-run/{}\r\n\r\n",
            call.target(),
            endpoint.authority,
            env!("CARGO_PKG_VERSION")
        );
        let sent = stream
            .set_write_timeout(Some(self.request_timeout))
            .and_then(|()| stream.write_all(request.as_bytes()));
        if let Err(e) = sent {
            return Exchange::Lost(format!("sending the call failed: {e}"));
        }
        match read_answer(&mut stream, deadline) {
            Ok(answer) => Exchange::Answered(answer),
            Err(why) => Exchange::Lost(format!("no complete answer: {why}")),
        }
    }
}

/// Reads one answer: up to its `Content-Length`, or to the end of the connection.
pub(super) fn read_answer(
    stream: &mut TcpStream,
    deadline: Instant,
) -> std::result::Result<Answer, String> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(answer) = complete_answer(&bytes)? {
            return Ok(answer);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("it took too long (--request-timeout)".to_owned());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut chunk) {
            Ok(0) => return parse_answer(&bytes, true),
            Ok(n) if bytes.len().saturating_add(n) <= MAX_ANSWER => {
                bytes.extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
            Ok(_) => return Err(format!("the answer is longer than {MAX_ANSWER} bytes")),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The answer, once `bytes` hold all of it (by its `Content-Length`).
pub(super) fn complete_answer(bytes: &[u8]) -> std::result::Result<Option<Answer>, String> {
    match parse_answer(bytes, false) {
        Ok(answer) => Ok(Some(answer)),
        Err(why) if why == INCOMPLETE => Ok(None),
        Err(why) => Err(why),
    }
}

pub(super) const INCOMPLETE: &str = "the connection closed before the answer was complete";

/// Parses an answer; `ended`: no more bytes will come.
pub(super) fn parse_answer(bytes: &[u8], ended: bool) -> std::result::Result<Answer, String> {
    let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(INCOMPLETE.to_owned());
    };
    let (head, rest) = bytes.split_at_checked(head_end).unwrap_or_default();
    let head = std::str::from_utf8(head).map_err(|_| "the answer's head is not text".to_owned())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let status = match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") && code.len() == 3 => code
            .parse::<u16>()
            .map_err(|_| format!("malformed status line {status_line:?}"))?,
        _ => return Err(format!("malformed status line {status_line:?}")),
    };
    let mut length = None;
    let mut retry_after = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("malformed header {line:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("malformed Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    let body = rest.get(b"\r\n\r\n".len()..).unwrap_or_default();
    let body = match length.map(|length| body.get(..length)) {
        Some(Some(body)) => body,
        Some(_) => return Err(INCOMPLETE.to_owned()),
        None if ended => body,
        None => return Err(INCOMPLETE.to_owned()),
    };
    Ok(Answer {
        status,
        retry_after,
        body: String::from_utf8_lossy(body).into_owned(),
    })
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
    fn https_paths_and_credentials_are_refused_with_the_reason() {
        let https = Endpoint::parse("https://127.0.0.1:8080").expect_err("refused");
        assert!(https.contains("https is not supported"), "{https}");
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

    #[test]
    fn an_answer_is_complete_at_its_content_length_or_at_the_end() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n";
        assert_eq!(
            complete_answer(head).expect("fine"),
            None,
            "the body is missing"
        );
        let mut whole = head.to_vec();
        whole.extend_from_slice(b"12");
        let answer = complete_answer(&whole).expect("fine").expect("complete");
        assert_eq!((answer.status, answer.body.as_str()), (200, "12"));
        let unsized_answer = b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 2\r\n\r\nbusy";
        assert_eq!(complete_answer(unsized_answer).expect("fine"), None);
        let answer = parse_answer(unsized_answer, true).expect("complete at the end");
        assert_eq!(answer.status, 503);
        assert_eq!(answer.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(answer.body, "busy");
        assert!(parse_answer(b"SSH-2.0\r\n\r\n", true).is_err());
        assert!(parse_answer(b"HTTP/1.1 2000 OK\r\n\r\n", true).is_err());
    }

    fn answer(status: u16) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: "pod jobs/x: why\n".to_owned(),
        }
    }

    #[test]
    fn only_a_503_is_repeated_and_a_504_stays_unknown() {
        assert_eq!(
            judge(
                Call::Increment,
                &Answer {
                    body: "3\n".to_owned(),
                    ..answer(200)
                }
            ),
            Some(Outcome::Counted("3".to_owned()))
        );
        assert_eq!(judge(Call::Increment, &answer(503)), None);
        for status in [400, 403, 404, 409, 502] {
            assert!(
                matches!(judge(Call::Decrement, &answer(status)), Some(Outcome::NotApplied(why)) if why.contains("pod jobs/x: why")),
                "{status}"
            );
        }
        for status in [504, 500, 201] {
            assert!(
                matches!(
                    judge(Call::Decrement, &answer(status)),
                    Some(Outcome::Unknown(_))
                ),
                "{status}"
            );
        }
    }
}
