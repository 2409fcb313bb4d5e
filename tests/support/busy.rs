//! Running `busy` as a user would, for the tests against the double (tests/busy.rs) and the
//! real API server (tests/real/busy.rs): the binary clean of the developer's cluster, its
//! output gathered as it comes, and readers of its JSON report.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test, clean of the developer's cluster, pod identity and colour settings.
pub(crate) fn binary() -> Command {
    let mut command = Command::new(super::program());
    command
        .env_remove("KUBECONFIG")
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("NO_COLOR")
        .env("HOME", std::env::temp_dir().join("pwt-no-home"));
    command
}

/// How a command that ran to its end exited, and what it printed.
pub(crate) struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to its end.
pub(crate) fn run(mut command: Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("the command runs");
    Run {
        code: status.code(),
        stdout: String::from_utf8(stdout).expect("UTF-8 output"),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// The JSON report of a run that succeeded.
pub(crate) fn json_of(run: &Run) -> Value {
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

/// `namespace/name` of every pod of a JSON report.
pub(crate) fn names(report: &Value) -> Vec<String> {
    report["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|pod| {
            format!(
                "{}/{}",
                pod["namespace"].as_str().unwrap_or("?"),
                pod["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// The pod `namespace/name` of a JSON report.
pub(crate) fn pod<'a>(report: &'a Value, namespace: &str, name: &str) -> &'a Value {
    report["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|pod| pod["namespace"] == namespace && pod["name"] == name)
        .unwrap_or_else(|| panic!("no {namespace}/{name} in {report:#}"))
}

/// A child's output, gathered by a thread as it comes.
pub(crate) struct Gathered {
    chunks: mpsc::Receiver<String>,
    /// Everything gathered so far.
    pub seen: String,
    limit: Duration,
}

impl Gathered {
    fn new(stream: impl Read + Send + 'static, limit: Duration) -> Gathered {
        let (sender, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut stream = stream;
            let mut buffer = [0u8; 4096];
            while let Ok(read) = stream.read(&mut buffer) {
                if read == 0
                    || sender
                        .send(String::from_utf8_lossy(&buffer[..read]).into_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        Gathered {
            chunks,
            seen: String::new(),
            limit,
        }
    }

    /// Waits (within the limit given to [`spawn`]) until what was gathered satisfies `done`.
    pub(crate) fn until(&mut self, what: &str, done: impl Fn(&str) -> bool) -> &str {
        let deadline = Instant::now() + self.limit;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(text) => self.seen.push_str(&text),
                Err(_) => panic!("{what}: not seen in time; gathered:\n{}", self.seen),
            }
        }
        &self.seen
    }
}

/// Starts `command` with its stdout and stderr gathered; each wait on them gives up after
/// `limit`.
pub(crate) fn spawn(mut command: Command, limit: Duration) -> (Child, Gathered, Gathered) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let out = Gathered::new(child.stdout.take().expect("stdout"), limit);
    let err = Gathered::new(child.stderr.take().expect("stderr"), limit);
    (child, out, err)
}

/// The exit code of `child` if it exits within `limit`.
pub(crate) fn exit_within(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        // std has no wait with a time limit.
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
