//! The tracker under test: the release binary, started as a child process in sidecar or
//! standalone mode against the double; where it listens, how long it took to get there, and
//! how much memory it holds.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::Conn;
use crate::cluster::{NAMESPACE, SIDECAR_TOKEN, TRACKER_TOKEN};

/// How long a tracker may take to log where it listens, or to become ready.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How many of the last log lines are kept for error messages.
const LOG_TAIL: usize = 40;

/// How the tracker runs.
#[derive(Debug, Clone)]
pub(crate) enum Mode {
    /// `POD_NAME`/`POD_NAMESPACE` set: counts its own pod.
    Sidecar { pod: String },
    /// `--standalone=true`: callers name the pod.
    Standalone,
    /// Standalone with `--authenticate=serviceaccount`: callers send pod-bound tokens.
    Authenticated,
}

/// The default binary: `<target>/release/pod-webhook-tracker`, beside this example's own
/// `<target>/<profile>/examples/bench`.
pub(crate) fn default_binary() -> PathBuf {
    let target_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target_dir.join("release").join("pod-webhook-tracker")
}

/// A running tracker.
pub(crate) struct Tracker {
    child: Child,
    pub address: SocketAddr,
    /// From spawning the process to its `listening on` log line.
    pub startup: Duration,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Tracker {
    /// Starts the binary and waits for its `listening on http://ADDR` line.
    pub(crate) fn spawn(binary: &Path, mode: &Mode, api_url: &str) -> Result<Tracker, String> {
        Tracker::spawn_with(binary, mode, api_url, &[])
    }

    /// [`Tracker::spawn`] with more `serve` flags.
    pub(crate) fn spawn_with(
        binary: &Path,
        mode: &Mode,
        api_url: &str,
        flags: &[&str],
    ) -> Result<Tracker, String> {
        let mut command = serve_command(binary);
        command.arg(format!("--kube-server={api_url}"));
        match mode {
            Mode::Sidecar { pod } => {
                command
                    .arg(format!("--kube-token={SIDECAR_TOKEN}"))
                    .env("POD_NAME", pod)
                    .env("POD_NAMESPACE", NAMESPACE);
            }
            Mode::Standalone => {
                command
                    .arg("--standalone=true")
                    .arg(format!("--namespace={NAMESPACE}"))
                    .arg(format!("--kube-token={TRACKER_TOKEN}"));
            }
            Mode::Authenticated => {
                command
                    .arg("--standalone=true")
                    .arg("--authenticate=serviceaccount")
                    .arg(format!("--namespace={NAMESPACE}"))
                    .arg(format!("--kube-token={TRACKER_TOKEN}"));
            }
        }
        command.args(flags);
        Tracker::launch(binary, command)
    }

    /// `serve` with these flags only (say `--kubeconfig=PATH` for a real API server): no
    /// `--kube-server`, no token.
    pub(crate) fn spawn_args(binary: &Path, flags: &[String]) -> Result<Tracker, String> {
        let mut command = serve_command(binary);
        command.args(flags);
        Tracker::launch(binary, command)
    }

    /// Starts `command` and waits for its `listening on http://ADDR` line.
    fn launch(binary: &Path, mut command: Command) -> Result<Tracker, String> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());

        let started = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let Some(stderr) = child.stderr.take() else {
            unreachable!("stderr is piped");
        };
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (found, listening) = mpsc::channel();
        let tail = Arc::clone(&log);
        // Reads the log for as long as the process runs: a full pipe would block it.
        thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1)
                    && let Some(sender) = found.take()
                {
                    let _ = sender.send((Instant::now(), rest.trim().to_string()));
                }
                let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
                if tail.len() == LOG_TAIL {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let mut tracker = Tracker {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            startup: Duration::ZERO,
            log,
        };
        match listening.recv_timeout(START_LIMIT) {
            Ok((at, address)) => {
                tracker.startup = at - started;
                tracker.address = address.parse().map_err(|e| {
                    format!("the tracker logged an address that is not one: {address:?}: {e}")
                })?;
                Ok(tracker)
            }
            Err(_) => {
                let status = tracker.child.try_wait().ok().flatten();
                Err(format!(
                    "the tracker did not log `listening on http://…` within {}s (exit status: {})\n--- log ---\n{}",
                    START_LIMIT.as_secs(),
                    status.map_or("still running".into(), |s| s.to_string()),
                    tracker.log_tail()
                ))
            }
        }
    }

    /// Waits until `/readyz` answers 200 (the sidecar checks its pod and its rights first).
    pub(crate) fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        let mut conn = Conn::new(self.address);
        loop {
            let last = match conn.request("GET", "/readyz", &[], b"") {
                Ok(response) if response.status == 200 => return Ok(()),
                Ok(response) => format!("{} {}", response.status, response.text().trim()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "the tracker is not ready after {}s: {last}\n--- log ---\n{}",
                    START_LIMIT.as_secs(),
                    self.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// One sample of its `/metrics` (a line `NAME VALUE`, no labels), if it has it.
    pub(crate) fn metric(&self, name: &str) -> Result<Option<f64>, String> {
        Ok(self.metrics()?.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        }))
    }

    /// Its `/metrics` page, as text.
    pub(crate) fn metrics(&self) -> Result<String, String> {
        let mut conn = Conn::new(self.address);
        let response = conn
            .request("GET", "/metrics", &[], b"")
            .map_err(|e| format!("GET /metrics: {e}"))?;
        Ok(response.text())
    }

    /// The last lines it logged.
    pub(crate) fn log_tail(&self) -> String {
        let tail = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Resident memory now and at its peak (`VmRSS`, `VmHWM` from `/proc/<pid>/status`).
    pub(crate) fn memory(&self) -> Result<Memory, String> {
        let path = format!("/proc/{}/status", self.child.id());
        let status =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let field = |name: &str| -> Result<u64, String> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| format!("no {name} in {path}"))
        };
        Ok(Memory {
            current_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
            anon_kib: field("RssAnon:")?,
            file_kib: field("RssFile:")?,
            libraries_kib: shared_library_kib(self.child.id()),
            threads: field("Threads:")?,
            thread_names: thread_names(self.child.id()),
        })
    }

    /// Stops the process (it was started here; nothing else is touched).
    pub(crate) fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `serve` on a free loopback port, with an environment that points at no cluster.
fn serve_command(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    command.arg("serve").arg("--address=127.0.0.1:0");
    // Never the developer's cluster: no kubeconfig, no in-cluster account, no identity.
    command
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .env("HOME", std::env::temp_dir().join("pwt-bench-no-home"))
        // Info: the `listening on` line, and one line per call as deployed.
        .env("RUST_LOG", "info");
    command
}

/// Resident KiB of the shared libraries a process maps (`/proc/<pid>/smaps`: file mappings
/// under `/lib` or `/usr/lib`, or named `*.so*`); 0 for a static binary.
fn shared_library_kib(pid: u32) -> u64 {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return 0;
    };
    let mut in_library = false;
    let mut total = 0;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            // A mapping's first line: `start-end perms offset dev inode [path]`.
            Some(first) if first.contains('-') && !first.ends_with(':') => {
                let path = fields.nth(4).unwrap_or_default();
                in_library = path.contains(".so")
                    || path.starts_with("/lib")
                    || path.starts_with("/usr/lib");
            }
            Some("Rss:") if in_library => {
                total += fields
                    .next()
                    .and_then(|kib| kib.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            _ => {}
        }
    }
    total
}

/// `3×http, 32×tokio-runtime-w`: a process's threads, grouped by name.
fn thread_names(pid: u32) -> String {
    let mut names = std::collections::BTreeMap::<String, usize>::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            // Numbered names (`http-0`, `http-1`) count as one kind.
            let kind = name
                .trim()
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
            *names.entry(kind.to_string()).or_default() += 1;
        }
    }
    let mut counted: Vec<(String, usize)> = names.into_iter().collect();
    counted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counted
        .iter()
        .map(|(name, n)| format!("{n}×{name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resident memory of a process, in KiB, and its threads.
#[derive(Debug, Clone)]
pub(crate) struct Memory {
    /// `VmRSS`: resident now.
    pub current_kib: u64,
    /// `VmHWM`: the peak of `VmRSS` so far.
    pub peak_kib: u64,
    /// `RssAnon`: heap and stacks, now.
    pub anon_kib: u64,
    /// `RssFile`: pages of the binary and libraries, now.
    pub file_kib: u64,
    /// Of `file_kib`, the shared libraries' pages (none for a static binary).
    pub libraries_kib: u64,
    pub threads: u64,
    /// The threads grouped by name.
    pub thread_names: String,
}

/// The binary's size and whether it still has a symbol table.
#[derive(Debug, Clone)]
pub(crate) struct BinaryInfo {
    pub bytes: u64,
    pub stripped: bool,
    /// The program interpreter (`ld-linux…`) of a dynamically linked binary; `None` if static.
    pub interpreter: Option<String>,
    pub version: String,
}

/// The `PT_INTERP` segment of a 64-bit little-endian ELF file: the dynamic loader it needs.
fn elf_interpreter(elf: &[u8]) -> Option<String> {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    if elf.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let (table, entry_size, entries) = (u64_at(0x20)? as usize, u16_at(0x36)?, u16_at(0x38)?);
    (0..usize::from(entries)).find_map(|n| {
        let header = table + n * usize::from(entry_size);
        if u32_at(header)? != PT_INTERP {
            return None;
        }
        let (offset, size) = (u64_at(header + 8)? as usize, u64_at(header + 32)? as usize);
        let path = elf.get(offset..offset + size)?;
        Some(
            String::from_utf8_lossy(path)
                .trim_end_matches('\0')
                .to_string(),
        )
    })
}

/// Size, strip state (an ELF file without `.symtab`), linking and `version` output of the binary.
pub(crate) fn binary_info(binary: &Path) -> Result<BinaryInfo, String> {
    let content =
        std::fs::read(binary).map_err(|e| format!("cannot read {}: {e}", binary.display()))?;
    let stripped = !content.windows(8).any(|w| w == b".symtab\0");
    let version = Command::new(binary)
        .arg("version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .unwrap_or_default();
    Ok(BinaryInfo {
        bytes: content.len() as u64,
        stripped,
        interpreter: elf_interpreter(&content),
        version,
    })
}

/// Starts the binary `times` times in `mode`; the start-up times (spawn → listening), sorted.
pub(crate) fn startup_times(
    binary: &Path,
    mode: &Mode,
    api_url: &str,
    times: usize,
) -> Result<Vec<Duration>, String> {
    let mut samples = Vec::with_capacity(times);
    for _ in 0..times {
        let tracker = Tracker::spawn(binary, mode, api_url)?;
        samples.push(tracker.startup);
        tracker.stop();
    }
    samples.sort();
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::elf_interpreter;

    /// Test binaries for a glibc target are linked dynamically, and loaded by ld.so.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn the_loader_of_a_dynamically_linked_binary_is_found() {
        let this = std::fs::read(std::env::current_exe().expect("own path")).expect("readable");
        let loader = elf_interpreter(&this).expect("a glibc test binary has a loader");
        assert!(loader.contains("ld-linux"), "{loader}");
    }

    #[test]
    fn a_file_without_a_loader_segment_or_not_elf_has_none() {
        // An ELF64 header whose program header table has no entries.
        let mut header = vec![0u8; 64];
        header[..5].copy_from_slice(b"\x7fELF\x02");
        assert_eq!(elf_interpreter(&header), None);
        assert_eq!(elf_interpreter(b"#!/bin/sh\n"), None);
        assert_eq!(elf_interpreter(&header[..10]), None);
    }
}
