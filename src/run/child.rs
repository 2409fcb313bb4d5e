//! The command `run` wraps: started as a child, signals passed on to it, the processes it leaves
//! behind adopted and reaped (a child subreaper), and its exit status as a shell reports it.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::mpsc::{self, Receiver, Sender};

use crate::exit::{EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND};

use super::say;

/// What the main thread waits for while the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The wrapper received this signal.
    Signal(i32),
    /// The command has exited (it is not reaped yet).
    Exited,
}

/// Starts the command and waits for it, passing on the signals the wrapper gets. Errors carry
/// the exit status to use (126 or 127, as a shell's) and the reason.
pub(super) fn run_command(
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
#[allow(unsafe_code)] // the libc calls below, each with its SAFETY note
pub(super) fn become_subreaper() {
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
pub(super) fn become_subreaper() {}

/// Blocks until the command has exited, leaving it to be reaped by `Child::wait`, and meanwhile
/// reaps every other child that exits: orphaned descendants the wrapper adopted.
#[allow(unsafe_code)] // the libc calls below, each with its SAFETY note
pub(super) fn wait_reaping_orphans(pid: u32) {
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
#[allow(unsafe_code)] // the libc calls below, each with its SAFETY note
pub(super) fn pass_on(pid: u32, signal: i32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory effects; the pid is our unreaped child's.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Listens for SIGTERM, SIGINT and SIGHUP on a thread of its own and reports each as an
/// [`Event`]; returns once the handlers are installed.
pub(super) fn watch_signals(events: Sender<Event>) -> std::result::Result<(), String> {
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
pub(super) fn status_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128_i32.saturating_add(signal),
        (None, None) => 1,
    }
}

pub(super) fn exit_with(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

pub(super) fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGTERM => "SIGTERM".to_owned(),
        libc::SIGINT => "SIGINT".to_owned(),
        libc::SIGHUP => "SIGHUP".to_owned(),
        other => format!("signal {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn a_signal_ends_the_command_with_128_plus_its_number() {
        assert_eq!(status_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(status_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
        assert_eq!(status_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }
}
