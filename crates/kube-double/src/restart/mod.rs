//! Restarts of the API server, as a fault: the write being handled committed and its answer
//! lost, connections refused while it is down, then warm-up answers (401, 403, 429) for a while.
//! [`plan`] says what a restart is; this module runs them, one after the other, on a thread.

pub(crate) mod plan;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::Inner;
use crate::server::Shared;
use plan::{Restart, Stage};

/// Queues a restart, starts it at once if none is under way (so that the very next write
/// takes its cut), and starts the thread that runs them if it is not running.
pub(crate) fn request(inner: &Arc<Inner>, restart: Restart) {
    let shared = Arc::clone(&inner.shared);
    let start = {
        let mut state = shared.lock();
        let restarts = &mut state.restarts;
        restarts.queue.push_back(restart);
        if restarts.current.is_none() {
            restarts.start_next();
        }
        !std::mem::replace(&mut restarts.driving, true)
    };
    if start {
        let inner = Arc::downgrade(inner);
        std::thread::Builder::new()
            .name("kube-double-restart".into())
            .spawn(move || drive(&inner, &shared))
            .unwrap_or_else(|e| panic!("kube-double: cannot start the restart thread: {e}"));
    }
}

/// Runs the queued restarts one after the other, then stops. Holds the server weakly, so that
/// dropping the last handle stops the server (and this thread) even mid-restart.
fn drive(inner: &Weak<Inner>, shared: &Shared) {
    let mut next_restart = shared
        .lock()
        .restarts
        .current
        .as_ref()
        .map(|(restart, _)| restart.clone());
    while let Some(restart) = next_restart {
        if !restart.now {
            // The handler of the write that takes the cut moves the stage on.
            shared.wait_until(None, |state| {
                state.restarts.closed || state.restarts.is_down()
            });
        }
        let Some(server) = inner.upgrade() else {
            return;
        };
        server.go_away();
        drop(server);
        if sleep(shared, restart.down) {
            return;
        }
        let Some(server) = inner.upgrade() else {
            return;
        };
        let listening = come_back(&server, shared);
        drop(server);
        if let Err(why) = listening {
            let mut state = shared.lock();
            state.restarts.failure = Some(why);
            state.restarts.current = None;
            state.restarts.queue.clear();
            state.restarts.driving = false;
            drop(state);
            shared.notify();
            return;
        }
        if sleep(shared, restart.warm_up()) {
            return;
        }
        next_restart = next(shared);
    }
}

/// Ends the restart under way and starts the next queued one, in one step, so that no write
/// slips between them. `None` (and the thread is done) if none is queued or the server has
/// been dropped.
fn next(shared: &Shared) -> Option<Restart> {
    let mut state = shared.lock();
    let restarts = &mut state.restarts;
    restarts.current = None;
    restarts.completed += 1;
    let restart = restarts.start_next();
    if restart.is_none() {
        restarts.driving = false;
    }
    drop(state);
    shared.notify();
    restart
}

fn set_stage(shared: &Shared, stage: Stage) {
    if let Some((_, current)) = &mut shared.lock().restarts.current {
        *current = stage;
    }
    shared.notify();
}

/// Waits this long; returns whether the server was dropped meanwhile.
fn sleep(shared: &Shared, duration: Duration) -> bool {
    shared.wait_until(Some(duration), |state| state.restarts.closed)
}

/// Listens again on the same port, the warm-up phases counted from just before (so that no
/// request slips in ahead of them). The port may be taken for a moment by another listener
/// (a client's connection in TIME_WAIT does not stop it), so it is tried again for up to 10 s.
fn come_back(server: &Inner, shared: &Shared) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        set_stage(shared, Stage::Back(Instant::now()));
        match server.come_back() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "cannot listen on port {} again after a restart: {e}",
                    server.port
                ));
            }
            Err(_) => {
                if sleep(shared, Duration::from_millis(20)) {
                    return Ok(());
                }
            }
        }
    }
}
