//! `run`: counts one job around a command. POST /increment, start the command, pass SIGTERM,
//! SIGINT and SIGHUP on to it, reap what it leaves behind, POST /decrement however it ends, and
//! exit with its status.
//!
//! Talks to the tracker with a tiny blocking HTTP/1.1 client over std's `TcpStream` (plain
//! HTTP: the sidecar listens on the pod's loopback). A call is repeated only while the tracker
//! has not received it; once it has answered, the answer is final (see [`Call`]).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::cli::RunArgs;
use crate::core::durations::{self, Bounds, MAX_RUN_REQUEST, MAX_RUN_RETRY};
use crate::error::{Error, Result};
use crate::exit::{EXIT_CANNOT_EXECUTE, EXIT_NOT_COUNTED, EXIT_NOT_FOUND};

/// The first pause before a call is repeated; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// The most of an answer that is read (the tracker's are one short line).
const MAX_ANSWER: usize = 64 * 1024;
/// The most of an answer's body quoted in a message.
const MAX_QUOTE: usize = 300;

/// The validated settings of `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Where the tracker listens.
    pub tracker: Endpoint,
    /// Run the command even if the job could not be counted.
    pub run_unprotected: bool,
    /// How long a call the tracker did not take may be repeated.
    pub retry_timeout: Duration,
    /// How long one call may take.
    pub request_timeout: Duration,
    /// The program and its arguments.
    pub command: Vec<String>,
}

impl Options {
    /// Validates the flags of `run`; every error names its flag.
    pub fn from_args(args: &RunArgs) -> Result<Options> {
        let tracker =
            Endpoint::parse(&args.url).map_err(|why| invalid("--url", &args.url, &why))?;
        let retry_timeout = duration("--retry-timeout", &args.retry_timeout, MAX_RUN_RETRY)?;
        let request_timeout =
            duration("--request-timeout", &args.request_timeout, MAX_RUN_REQUEST)?;
        if request_timeout.is_zero() {
            return Err(invalid(
                "--request-timeout",
                &args.request_timeout,
                "a call needs some time; expected a duration such as 60s",
            ));
        }
        if args.command.is_empty() {
            return Err(Error::Config(
                "run: no command given: put it after --, e.g. pod-webhook-tracker run -- /bin/sh -c 'make all'"
                    .to_owned(),
            ));
        }
        Ok(Options {
            tracker,
            run_unprotected: args.run_unprotected,
            retry_timeout,
            request_timeout,
            command: args.command.clone(),
        })
    }
}

fn invalid(flag: &str, value: &str, why: &str) -> Error {
    Error::Config(format!("invalid value {value:?} for {flag}: {why}"))
}

/// `0` or a duration such as `500ms`, `30s`, `2m`, at most `max`.
fn duration(flag: &str, text: &str, max: Duration) -> Result<Duration> {
    durations::parse_flag(text, Bounds::up_to(max))
        .map(Option::unwrap_or_default)
        .map_err(|why| {
            invalid(
                flag,
                text,
                &format!("{why}; expected 0 or a duration such as 30s, 2m"),
            )
        })
}

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
enum Exchange {
    /// No connection: the request was not sent.
    NotSent(String),
    /// The request may have arrived, but no complete answer did.
    Lost(String),
    /// An answer.
    Answered(Answer),
}

/// A parsed HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
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
fn judge(call: Call, answer: &Answer) -> Option<Outcome> {
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
fn read_answer(stream: &mut TcpStream, deadline: Instant) -> std::result::Result<Answer, String> {
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
fn complete_answer(bytes: &[u8]) -> std::result::Result<Option<Answer>, String> {
    match parse_answer(bytes, false) {
        Ok(answer) => Ok(Some(answer)),
        Err(why) if why == INCOMPLETE => Ok(None),
        Err(why) => Err(why),
    }
}

const INCOMPLETE: &str = "the connection closed before the answer was complete";

/// Parses an answer; `ended`: no more bytes will come.
fn parse_answer(bytes: &[u8], ended: bool) -> std::result::Result<Answer, String> {
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

/// What the main thread waits for while the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The wrapper received this signal.
    Signal(i32),
    /// The command has exited (it is not reaped yet).
    Exited,
}

/// Runs `run`: count, run the command, uncount; returns the command's exit status.
pub fn run(options: &Options) -> ExitCode {
    let (sender, events) = mpsc::channel();
    // Before anything else: from here on SIGTERM no longer ends the wrapper at once.
    if let Err(why) = watch_signals(sender.clone()) {
        say(&format!(
            "cannot listen for signals ({why}), so the job could not be uncounted on SIGTERM; not starting it"
        ));
        return ExitCode::from(EXIT_NOT_COUNTED);
    }
    let tracker = Tracker::new(options);
    let url = &options.tracker;
    let counted = match tracker.call(Call::Increment, Some(&events)) {
        Outcome::Counted(count) => {
            say(&format!("increment: ok (active jobs in this pod: {count})"));
            true
        }
        Outcome::Interrupted(signal) => {
            say(&format!(
                "stopped by {} before the job was counted; not starting it",
                signal_name(signal)
            ));
            return exit_with(128_i32.saturating_add(signal));
        }
        Outcome::NotApplied(why) | Outcome::Unknown(why) if options.run_unprotected => {
            say(&format!(
                "warning: could not count this job at {url}: {why}; running it anyway \
                 (--run-unprotected): the pod may be evicted while it runs"
            ));
            false
        }
        Outcome::NotApplied(why) => {
            say(&format!(
                "could not count this job at {url}: {why}; not starting it, since the pod would not \
                 be protected from eviction while it runs (--run-unprotected runs it anyway)"
            ));
            return ExitCode::from(EXIT_NOT_COUNTED);
        }
        Outcome::Unknown(why) => {
            // Not decremented: if the count was stored, the pod stays protected (safe) until
            // the label is corrected; a decrement that was not needed would uncount another job.
            say(&format!(
                "the increment's outcome is unknown at {url}: {why}; not starting the job. If the \
                 count was stored, the pod stays protected until its label is corrected"
            ));
            return ExitCode::from(EXIT_NOT_COUNTED);
        }
    };
    // A signal that came while the increment was under way: the job is not started.
    let pending = events.try_iter().find_map(|event| match event {
        Event::Signal(signal) => Some(signal),
        Event::Exited => None,
    });
    let code = match pending {
        Some(signal) => {
            say(&format!(
                "stopped by {} before the job started",
                signal_name(signal)
            ));
            128_i32.saturating_add(signal)
        }
        None => match run_command(&options.command, sender, &events) {
            Ok(status) => status_code(status),
            Err((code, why)) => {
                say(&why);
                i32::from(code)
            }
        },
    };
    if counted {
        match tracker.call(Call::Decrement, None) {
            Outcome::Counted(count) => {
                say(&format!("decrement: ok (active jobs in this pod: {count})"));
            }
            Outcome::NotApplied(why) => say(&format!(
                "decrement failed at {url}: {why}; the pod's count stays one too high (and the pod \
                 protected from eviction) until its label is corrected"
            )),
            Outcome::Unknown(why) => say(&format!(
                "the decrement's outcome is unknown at {url}: {why}; if it was not applied, the \
                 pod's count stays one too high until its label is corrected"
            )),
            // Only a wait that listens for signals is interrupted.
            Outcome::Interrupted(_) => {}
        }
    }
    exit_with(code)
}

/// Copies this program into `directory` as `pod-webhook-tracker` (mode 0755), through a
/// temporary file and a rename, so that a reader never sees half a program.
pub fn install(directory: &std::path::Path) -> ExitCode {
    use std::os::unix::fs::PermissionsExt;
    let target = directory.join("pod-webhook-tracker");
    let partial = directory.join(".pod-webhook-tracker.partial");
    let copied = std::env::current_exe()
        .map_err(|e| format!("cannot find this program: {e}"))
        .and_then(|source| {
            std::fs::copy(&source, &partial).map_err(|e| {
                format!(
                    "cannot copy {} to {}: {e}",
                    source.display(),
                    partial.display()
                )
            })
        })
        .and_then(|_| {
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
                .and_then(|()| std::fs::rename(&partial, &target))
                .map_err(|e| format!("cannot install {}: {e}", target.display()))
        });
    match copied {
        Ok(()) => {
            println!("installed {}", target.display());
            ExitCode::SUCCESS
        }
        Err(why) => {
            let _ = std::fs::remove_file(&partial);
            eprintln!("error: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the command and waits for it, passing on the signals the wrapper gets. Errors carry
/// the exit status to use (126 or 127, as a shell's) and the reason.
fn run_command(
    command: &[String],
    sender: Sender<Event>,
    events: &Receiver<Event>,
) -> std::result::Result<ExitStatus, (u8, String)> {
    let Some((program, args)) = command.split_first() else {
        return Err((EXIT_NOT_FOUND, "no command given".to_owned()));
    };
    become_subreaper();
    let mut child = Command::new(program).args(args).spawn().map_err(|e| {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
            _ => EXIT_CANNOT_EXECUTE,
        };
        (code, format!("cannot run {program}: {e}"))
    })?;
    let pid = child.id();
    // The child is reaped here only after the waiter has reported its exit, so a signal passed
    // on before that reaches the child (a zombie at worst), never a process that reused its pid.
    let waiter = std::thread::Builder::new()
        .name("child-waiter".to_owned())
        .spawn(move || {
            wait_reaping_orphans(pid);
            let _ = sender.send(Event::Exited);
        });
    if let Err(e) = waiter {
        say(&format!(
            "cannot watch the command ({e}); signals are not passed on to it"
        ));
    } else {
        while let Ok(Event::Signal(signal)) = events.recv() {
            say(&format!(
                "passing {} on to the command",
                signal_name(signal)
            ));
            pass_on(pid, signal);
        }
    }
    child.wait().map_err(|e| {
        (
            EXIT_CANNOT_EXECUTE,
            format!("cannot learn how {program} ended: {e}"),
        )
    })
}

/// Makes the wrapper the parent of the command's orphaned descendants (a child subreaper, as
/// `tini -s`), so that it reaps them as an init would; as PID 1 it already is. Without this, a
/// command that leaves background processes behind in a container fills it with zombies.
#[cfg(target_os = "linux")]
fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
    let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if result != 0 {
        say(&format!(
            "cannot adopt the command's orphaned processes ({}); they are left to init",
            std::io::Error::last_os_error()
        ));
    }
}

/// Elsewhere (macOS, for local use) orphans go to launchd, which reaps them.
#[cfg(not(target_os = "linux"))]
fn become_subreaper() {}

/// Blocks until the command has exited, leaving it to be reaped by `Child::wait`, and meanwhile
/// reaps every other child that exits: orphaned descendants the wrapper adopted.
fn wait_reaping_orphans(pid: u32) {
    loop {
        // SAFETY: `info` is a valid, writable siginfo_t; WNOWAIT leaves the child unreaped.
        let (result, info) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let result = libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT);
            (result, info)
        };
        if result != 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // No child left to wait for (ECHILD): the command has been reaped already.
            return;
        }
        // SAFETY: waitid filled `info` for a child that exited, so si_pid is set.
        let exited = unsafe { info.si_pid() };
        if u32::try_from(exited) == Ok(pid) {
            return;
        }
        // An adopted orphan: reap it (a zombie now, ours alone).
        // SAFETY: `info` is a valid, writable siginfo_t for this call.
        unsafe {
            let mut reaped: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                exited as libc::id_t,
                &mut reaped,
                libc::WEXITED,
            );
        }
    }
}

/// Sends `signal` to the child (still unreaped, see [`run_command`]).
fn pass_on(pid: u32, signal: i32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory effects; the pid is our unreaped child's.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Listens for SIGTERM, SIGINT and SIGHUP on a thread of its own and reports each as an
/// [`Event`]; returns once the handlers are installed.
fn watch_signals(events: Sender<Event>) -> std::result::Result<(), String> {
    let (ready_sender, ready) = mpsc::channel();
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(move || {
            use tokio::signal::unix::{SignalKind, signal};
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_sender.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let (mut term, mut int, mut hup) = match (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::hangup()),
                ) {
                    (Ok(term), Ok(int), Ok(hup)) => (term, int, hup),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                        let _ = ready_sender.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_sender.send(Ok(()));
                loop {
                    let signal = tokio::select! {
                        _ = term.recv() => libc::SIGTERM,
                        _ = int.recv() => libc::SIGINT,
                        _ = hup.recv() => libc::SIGHUP,
                    };
                    if events.send(Event::Signal(signal)).is_err() {
                        return;
                    }
                }
            });
        })
        .map_err(|e| e.to_string())?;
    ready
        .recv()
        .map_err(|_| "the signal thread ended".to_owned())?
}

/// The exit status a shell would report: the code, or 128+N when signal N ended the command.
fn status_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128_i32.saturating_add(signal),
        (None, None) => 1,
    }
}

fn exit_with(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGTERM => "SIGTERM".to_owned(),
        libc::SIGINT => "SIGINT".to_owned(),
        libc::SIGHUP => "SIGHUP".to_owned(),
        other => format!("signal {other}"),
    }
}

/// One line on stderr, where the job's own messages go.
fn say(message: &str) {
    eprintln!("pod-webhook-tracker run: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> RunArgs {
        RunArgs {
            url: url.to_owned(),
            run_unprotected: false,
            retry_timeout: "30s".to_owned(),
            request_timeout: "60s".to_owned(),
            command: vec!["true".to_owned()],
        }
    }

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
    fn flags_are_checked_and_every_error_names_its_flag() {
        let options = Options::from_args(&args("http://127.0.0.1:8080")).expect("valid");
        assert_eq!(options.retry_timeout, Duration::from_secs(30));
        assert_eq!(options.request_timeout, Duration::from_secs(60));
        let error = Options::from_args(&args("https://x:1")).expect_err("refused");
        assert!(error.to_string().contains("--url"), "{error}");
        let mut no_command = args("http://x:1");
        no_command.command.clear();
        let error = Options::from_args(&no_command).expect_err("refused");
        assert!(error.to_string().contains("after --"), "{error}");
        let mut zero = args("http://x:1");
        zero.retry_timeout = "0".to_owned();
        assert_eq!(
            Options::from_args(&zero).expect("valid").retry_timeout,
            Duration::ZERO
        );
        zero.request_timeout = "0".to_owned();
        let error = Options::from_args(&zero).expect_err("refused");
        assert!(error.to_string().contains("--request-timeout"), "{error}");
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

    #[test]
    fn a_signal_ends_the_command_with_128_plus_its_number() {
        assert_eq!(status_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(status_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
        assert_eq!(status_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
