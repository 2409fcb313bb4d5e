//! The control plane's processes: started so that they die with the test binary (even when it
//! is killed), stopped and their folders removed when it exits, and folders that a killed run
//! left behind removed by the next one.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// What exit cleans up: the processes still running and the folders of the clusters.
#[derive(Default)]
struct Leftovers {
    pids: Vec<i32>,
    folders: Vec<PathBuf>,
}

fn leftovers() -> &'static Mutex<Leftovers> {
    static LEFTOVERS: OnceLock<Mutex<Leftovers>> = OnceLock::new();
    LEFTOVERS.get_or_init(|| {
        // SAFETY: `clean_up` is an `extern "C" fn()` that never unwinds (it catches panics),
        // as atexit requires; registering it has no other effect.
        #[allow(unsafe_code)]
        let registered = unsafe { libc::atexit(clean_up) };
        assert_eq!(registered, 0, "atexit refused the clean-up");
        Mutex::default()
    })
}

/// Runs when the test binary exits (after `main` returns or `process::exit`): kills what is
/// still running and removes the clusters' folders.
extern "C" fn clean_up() {
    let _ = std::panic::catch_unwind(|| {
        let mut left = leftovers().lock().unwrap_or_else(PoisonError::into_inner);
        for pid in left.pids.drain(..) {
            kill_and_reap(pid);
        }
        for folder in left.folders.drain(..) {
            let _ = std::fs::remove_dir_all(folder);
        }
    });
}

fn kill_and_reap(pid: i32) {
    // SAFETY: plain system calls on a pid this process started and has not reaped yet.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// A folder for one cluster under the system's temporary folder, removed at exit. Folders of
/// earlier runs whose process is gone are removed first.
pub(crate) fn cluster_folder() -> PathBuf {
    let base = std::env::temp_dir().join("pod-webhook-tracker-testenv");
    std::fs::create_dir_all(&base).expect("the testenv temporary folder");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|name| name.split('-').next())
                .and_then(|pid| pid.parse::<i32>().ok());
            if pid.is_some_and(|pid| !alive(pid)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    static NEXT: Mutex<u32> = Mutex::new(0);
    let n = {
        let mut next = NEXT.lock().unwrap_or_else(PoisonError::into_inner);
        *next += 1;
        *next
    };
    let folder = base.join(format!("{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).expect("a cluster folder");
    leftovers()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .folders
        .push(folder.clone());
    folder
}

/// Removes a folder now rather than at exit (a cluster that was stopped).
pub(crate) fn remove_folder(folder: &Path) {
    let mut left = leftovers().lock().unwrap_or_else(PoisonError::into_inner);
    left.folders.retain(|f| f != folder);
    let _ = std::fs::remove_dir_all(folder);
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    #[allow(unsafe_code)]
    let answer = unsafe { libc::kill(pid, 0) };
    answer == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

type Spawned = std::io::Result<Child>;
/// A command to start, and where to send the started child.
type SpawnRequest = (Command, mpsc::Sender<Spawned>);

/// Starts processes from one thread that lives as long as the test binary: the kernel's
/// parent-death signal follows the thread that started a child, and test threads end.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testenv-spawner".to_owned())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
                // The channel is never closed (the sender is a static): this thread, and the
                // death signal of its children, lasts until the process ends.
            })
            .expect("the spawner thread");
        Mutex::new(requests)
    })
}

/// One process of the control plane, its output in a log file.
pub(crate) struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program` with `args`, its output appended to `log`.
    pub(crate) fn start(name: &'static str, program: &Path, args: &[String], log: &Path) -> Self {
        let output = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("a log file");
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("a log file"))
            .stderr(output);
        // SAFETY: prctl is async-signal-safe, as code between fork and exec must be.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (reply, answer) = mpsc::channel();
        spawner()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send((command, reply))
            .expect("the spawner thread runs");
        let child = answer
            .recv()
            .expect("the spawner answers")
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        leftovers()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pids
            .push(child.id() as i32);
        Process {
            name,
            child,
            log: log.to_owned(),
        }
    }

    /// Panics with the end of its log if it has exited.
    pub(crate) fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            );
        }
    }

    /// Kills it at once (as a crash or `kill -9` would) and waits until it is gone.
    pub(crate) fn kill(&mut self) {
        let pid = self.child.id() as i32;
        let _ = self.child.kill();
        let _ = self.child.wait();
        leftovers()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pids
            .retain(|p| *p != pid);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of a log file.
pub(crate) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Polls `ready` every 50 ms until it holds; panics with `what` after `limit`.
pub(crate) fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}
