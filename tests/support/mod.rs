//! Shared helpers for the black-box tests: start the real binary, talk HTTP to it like a job
//! would, and stop it with a signal.
//!
//! [`Connection`] is the one strict HTTP/1.1 client of the black-box tests. It stays
//! hand-written because it must see the tracker's exact bytes: a status line that is not
//! `HTTP/1.1 NNN`, a header without a colon, a missing `Content-Length` or a body that is not
//! UTF-8 fails the test instead of being smoothed over, and `send_raw` puts any bytes on the
//! wire (the hostile-input tests need that).
#![allow(dead_code)] // each test file uses a different part of it

pub(crate) mod busy;
pub(crate) mod doctor;
pub(crate) mod https;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long a tracker may take to start listening before a test gives up.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The binary under test. The tests against a real API server (the `real_*` test crates of
/// tests/real) run the static release binary that the image ships, built as the release
/// workflow builds it; the others run the debug build that `cargo test` makes, whose overflow
/// checks and debug assertions catch more.
pub(crate) fn program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        if env!("CARGO_CRATE_NAME").starts_with("real_") {
            testenv::release::static_release_binary(Path::new(env!("CARGO_MANIFEST_DIR")))
                .to_path_buf()
        } else {
            PathBuf::from(env!("CARGO_BIN_EXE_pod-webhook-tracker"))
        }
    })
}

/// The tracker binary, running.
pub(crate) struct Tracker {
    child: Child,
    /// Where it listens, e.g. `127.0.0.1:43121`.
    pub address: SocketAddr,
    /// The admin address, if `--admin-address` was given.
    pub admin: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
}

/// Builds the command line of a tracker.
pub(crate) struct TrackerBuilder {
    subcommand: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl TrackerBuilder {
    /// Adds arguments after the subcommand.
    pub(crate) fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Listens on `address` instead of a loopback port.
    pub(crate) fn address(mut self, address: &str) -> Self {
        self.args.retain(|arg| !arg.starts_with("--address="));
        self.args.push(format!("--address={address}"));
        self
    }

    /// Sets an environment variable.
    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Starts the binary and waits until it logs where it listens.
    pub(crate) fn start(self) -> Tracker {
        Tracker::spawn(self)
            .unwrap_or_else(|(log, why)| panic!("tracker did not start: {why}\n--- log ---\n{log}"))
    }

    /// Starts the binary and waits for it to exit by itself (for start-up errors).
    pub(crate) fn run_to_exit(self) -> (ExitStatus, String) {
        let mut command = self.command();
        let output = command.output().expect("the binary runs");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status, text)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(program());
        command.arg(self.subcommand).args(&self.args);
        // A test must never pick up the developer's cluster or pod identity.
        command
            .env_remove("KUBECONFIG")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE");
        command.env("HOME", std::env::temp_dir().join("pwt-no-home"));
        command.env_remove("KUBERNETES_SERVICE_HOST");
        command.env("RUST_LOG", "info");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

impl Tracker {
    /// A tracker listening on a port the OS picks.
    pub(crate) fn builder() -> TrackerBuilder {
        TrackerBuilder {
            subcommand: "serve",
            args: vec!["--address=127.0.0.1:0".to_owned()],
            env: Vec::new(),
        }
    }

    /// The injector (`inject`) listening on a port the OS picks.
    pub(crate) fn injector() -> TrackerBuilder {
        TrackerBuilder {
            subcommand: "inject",
            ..Tracker::builder()
        }
    }

    fn spawn(builder: TrackerBuilder) -> Result<Tracker, (String, String)> {
        let mut child = builder
            .command()
            .spawn()
            .map_err(|e| (String::new(), e.to_string()))?;
        let log = Arc::new(Mutex::new(String::new()));
        let (sender, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stderr.take().expect("stderr piped")) as Box<dyn Read + Send>,
            Box::new(child.stdout.take().expect("stdout piped")),
        ] {
            let log = Arc::clone(&log);
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut all = log.lock().expect("log lock");
                    all.push_str(&line);
                    all.push('\n');
                    drop(all);
                    let _ = sender.send(line);
                }
            });
        }
        let mut admin = None;
        loop {
            let line = match lines.recv_timeout(START_LIMIT) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let text = log.lock().expect("log lock").clone();
                    return Err((text, "no 'listening on' line".to_owned()));
                }
            };
            if let Some(rest) = line
                .split("probes (/healthz, /readyz) also on http://")
                .nth(1)
            {
                admin = rest.trim().parse().ok();
            }
            let listening = line
                .split("listening on http://")
                .nth(1)
                .or_else(|| line.split("listening on https://").nth(1));
            if let Some(rest) = listening {
                let address = rest.trim().parse().expect("a socket address");
                return Ok(Tracker {
                    child,
                    address,
                    admin,
                    log,
                    lines,
                });
            }
        }
    }

    /// Everything the process printed so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until the process prints a line containing `needle` (bounded by `limit`).
    pub(crate) fn wait_for_line(&self, needle: &str, limit: Duration) -> Option<String> {
        if let Some(line) = self.log().lines().find(|line| line.contains(needle)) {
            return Some(line.to_owned());
        }
        let deadline = std::time::Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// Waits until the tracker reports itself ready (its start-up check passed).
    pub(crate) fn wait_ready(&self) {
        self.wait_for_line(": ready", Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the tracker never became ready:\n{}", self.log()));
    }

    /// `POST /increment` with a query string (may be empty).
    pub(crate) fn increment(&self, query: &str) -> Answer {
        self.request("POST", &with_query("/increment", query), &[])
    }

    /// `POST /decrement` with a query string (may be empty).
    pub(crate) fn decrement(&self, query: &str) -> Answer {
        self.request("POST", &with_query("/decrement", query), &[])
    }

    /// One request on a fresh connection.
    pub(crate) fn request(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Answer {
        request(self.address, method, target, headers)
    }

    /// The process's memory mappings (`/proc/<pid>/maps`), to see which libraries it loaded.
    #[allow(dead_code)] // not every test file looks at them
    pub(crate) fn memory_maps(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/maps", self.child.id())).expect("/proc maps")
    }

    /// Sends a signal to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} failed");
    }

    /// Waits for the process to exit (bounded by `limit`).
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            // Polling a child's exit has no blocking-with-timeout form in std.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// One HTTP answer, parsed strictly.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Answer {
    /// A header's value.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The status, after checking that a 200 carries a count (panics with the answer if not).
    pub(crate) fn checked_status(&self) -> u16 {
        if self.status == 200 {
            self.count();
        }
        self.status
    }

    /// The body of a 200 as a count; panics with the whole answer otherwise.
    pub(crate) fn count(&self) -> i64 {
        assert_eq!(self.status, 200, "expected 200, got {self:?}");
        self.body
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a count: {self:?}"))
    }
}

/// One request on a fresh connection.
pub(crate) fn request(
    address: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut connection = Connection::open(address).expect("connects");
    connection.send(method, target, headers).expect("an answer")
}

/// A kept-alive HTTP/1.1 connection, for load.
pub(crate) struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    /// Connects.
    pub(crate) fn open(address: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream: BufReader::new(stream),
        })
    }

    /// How long a read may wait before the answer counts as missing.
    pub(crate) fn set_read_timeout(&self, limit: Duration) -> std::io::Result<()> {
        self.stream.get_ref().set_read_timeout(Some(limit))
    }

    /// Sends one request and reads exactly one answer; errors on anything malformed.
    pub(crate) fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, String> {
        let mut request =
            format!("{method} {target} HTTP/1.1\r\nHost: tracker\r\nContent-Length: 0\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.send_raw(request.as_bytes())
    }

    /// Sends `request` exactly as given and reads exactly one answer.
    pub(crate) fn send_raw(&mut self, request: &[u8]) -> Result<Answer, String> {
        self.stream
            .get_mut()
            .write_all(request)
            .map_err(|e| format!("write: {e}"))?;
        let mut status_line = String::new();
        self.stream
            .read_line(&mut status_line)
            .map_err(|e| format!("read: {e}"))?;
        let mut parts = status_line.trim_end().splitn(3, ' ');
        let (Some("HTTP/1.1"), Some(code)) = (parts.next(), parts.next()) else {
            return Err(format!("malformed status line {status_line:?}"));
        };
        let status = code
            .parse()
            .map_err(|_| format!("malformed status {status_line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.stream
                .read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("malformed header {line:?}"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| format!("no content-length in {headers:?}"))?;
        let mut body = vec![0; length];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| format!("read body: {e}"))?;
        let body = String::from_utf8(body).map_err(|e| format!("body not UTF-8: {e}"))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// The token every black-box test's tracker uses.
pub(crate) const TOKEN: &str = "tracker-token";
/// The namespace the tests' pods live in.
pub(crate) const NS: &str = "jobs";

/// An API test double over plain HTTP with a `tracker` user that may get and patch pods in [`NS`].
pub(crate) fn api() -> kube_double::ApiServer {
    let api = kube_double::ApiServer::start();
    grant_tracker(&api);
    api
}

/// Gives the `tracker` user (token [`TOKEN`]) get and patch on pods in [`NS`].
pub(crate) fn grant_tracker(api: &kube_double::ApiServer) {
    api.add_token(TOKEN, kube_double::User::new("tracker"));
    api.allow(
        kube_double::Subject::user("tracker"),
        kube_double::Rule::new(["get", "patch"], ["pods"]).namespace(NS),
    );
}

/// A standalone tracker connected to `api` with flags alone (no kubeconfig).
pub(crate) fn standalone(api: &kube_double::ApiServer) -> TrackerBuilder {
    Tracker::builder().args([
        format!("--kube-server={}", api.url()),
        format!("--kube-token={TOKEN}"),
        format!("--namespace={NS}"),
    ])
}
