//! What a restart is and where the restarts stand: the fault's settings, its warm-up answers, and
//! the queue of restarts (plain data in the server's state; the thread that runs them is
//! [`super`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::record::Verb;
use crate::routes::Route;

/// A restart of the API server, as a fault: see [`crate::ApiServer::restart`].
///
/// What a real kube-apiserver restarted under load does (issue #21; not in the recordings of
/// `tests/recorded`, which are of a v1.19 server that was not restarted): the write it was
/// handling when it died may be committed with its answer lost; while it is down, connections
/// are refused; once it listens again, for a few seconds, its authenticator (401), its RBAC
/// authorizer (403, caches not synced) and its API Priority and Fairness (429) may refuse
/// requests although nothing changed. Each warm-up phase is optional and they come in that
/// order. Members of `system:masters` are never refused by them (kube-apiserver authorizes
/// them without RBAC and exempts them from API Priority and Fairness): the credentials' owner
/// for the 401 phase, the user the request acts as (after impersonation) for the others.
///
/// ```
/// use std::time::Duration;
/// use kube_double::{ApiServer, Restart};
///
/// let api = ApiServer::start();
/// api.restart(
///     Restart::new()
///         .now()
///         .down_for(Duration::from_millis(50))
///         .forbidden_for(Duration::from_millis(100)),
/// );
/// assert!(api.wait_restarted(Duration::from_secs(10)));
/// assert_eq!(api.restarts(), 1);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Restart {
    pub(super) down: Duration,
    unauthorized: Duration,
    forbidden: Duration,
    throttled: Duration,
    retry_after_seconds: u32,
    pub(super) now: bool,
    verb: Option<Verb>,
}

impl Default for Restart {
    fn default() -> Restart {
        Restart::new()
    }
}

impl Restart {
    /// A restart at the next write, down for 200 ms, then 403 (RBAC caches not synced) for
    /// 1 s, with no 401 or 429 phase.
    pub fn new() -> Restart {
        Restart {
            down: Duration::from_millis(200),
            unauthorized: Duration::ZERO,
            forbidden: Duration::from_secs(1),
            throttled: Duration::ZERO,
            retry_after_seconds: 1,
            now: false,
            verb: None,
        }
    }

    /// How long nothing listens (connections are refused), counted from when every connection
    /// has been cut.
    pub fn down_for(mut self, down: Duration) -> Restart {
        self.down = down;
        self
    }

    /// Once listening again, answers `401 Unauthorized` this long (the authenticator warming
    /// up). Zero (the default): no such phase.
    pub fn unauthorized_for(mut self, phase: Duration) -> Restart {
        self.unauthorized = phase;
        self
    }

    /// Then answers `403 Forbidden` this long: the ordinary refusal for the user, verb and
    /// resource, followed by the RBAC authorizer's complaint that its cluster roles are not
    /// found (its caches have not synced). Zero: no such phase.
    pub fn forbidden_for(mut self, phase: Duration) -> Restart {
        self.forbidden = phase;
        self
    }

    /// Then answers `429 Too Many Requests` with `Retry-After: <retry_after_seconds>` this
    /// long (API Priority and Fairness). Zero (the default): no such phase.
    ///
    /// The answer is what kube-apiserver's own filters write (`tooManyRequests` in
    /// apiserver's `maxinflight.go` and `priority-and-fairness.go`, through Go's
    /// `http.Error`), as the double's injected 429 is too: not a `Status` but the plain text
    /// `Too many requests, please try again later.` and a newline, `Content-Type: text/plain;
    /// charset=utf-8`, `X-Content-Type-Options: nosniff`. A client learns when to try again
    /// from the `Retry-After` header only.
    pub fn throttled_for(mut self, phase: Duration, retry_after_seconds: u32) -> Restart {
        self.throttled = phase;
        self.retry_after_seconds = retry_after_seconds;
        self
    }

    /// Goes down at once (requests in flight are cut, none is committed by the restart)
    /// instead of at the next write.
    pub fn now(mut self) -> Restart {
        self.now = true;
        self
    }

    /// Goes down at the next write of this kind only (say [`Verb::Patch`], so that an event
    /// written first does not take the cut), instead of at the next write of any kind. A kind
    /// that is not a write (see [`Verb::is_write`]) never takes it.
    pub fn verb(mut self, verb: Verb) -> Restart {
        self.verb = Some(verb);
        self
    }

    /// How long the warm-up phases last together.
    pub(super) fn warm_up(&self) -> Duration {
        self.unauthorized + self.forbidden + self.throttled
    }

    /// Whether a request of this kind to this route takes the cut: a write that stores
    /// something (reviews and token requests store nothing).
    fn cuts(&self, verb: Verb, route: &Route) -> bool {
        let stores = !matches!(
            route,
            Route::AccessReview
                | Route::SubjectAccessReview
                | Route::TokenReviews
                | Route::ServiceAccountToken { .. }
        );
        verb.is_write() && stores && self.verb.is_none_or(|v| v == verb)
    }
}

/// How a restarted server that is warming up refuses a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WarmUp {
    /// 401: the authenticator is not ready.
    Unauthorized,
    /// 403: the RBAC authorizer's caches have not synced.
    Forbidden,
    /// 429 with `Retry-After` (seconds): API Priority and Fairness.
    Throttled(u32),
}

/// Where the restart under way stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Waiting for the write that takes the cut.
    Armed,
    /// Going down or down: requests still reaching a handler are cut, unanswered.
    Down,
    /// Listening again since then, warming up.
    Back(Instant),
}

/// Restarts asked for, under way and done (part of the server's state).
#[derive(Debug, Default)]
pub(crate) struct Restarts {
    /// Asked for, not started: they run one after the other.
    pub(super) queue: VecDeque<Restart>,
    pub(super) current: Option<(Restart, Stage)>,
    pub(super) completed: u64,
    /// Whether a thread is running the restarts.
    pub(super) driving: bool,
    /// The server has been dropped: the thread stops.
    pub(super) closed: bool,
    /// Why a restart could not be completed, if one could not.
    pub(super) failure: Option<String>,
}

impl Restarts {
    /// Whether a request reaching a handler now is cut, unanswered and not applied.
    pub(crate) fn is_down(&self) -> bool {
        matches!(self.current, Some((_, Stage::Down)))
    }

    /// Whether this request is the write that takes the cut; if so, the server goes down as
    /// soon as it has been applied (and requests reaching a handler after it are cut).
    pub(crate) fn take_cut(&mut self, verb: Verb, route: &Route) -> bool {
        match &mut self.current {
            Some((restart, stage)) if *stage == Stage::Armed && restart.cuts(verb, route) => {
                *stage = Stage::Down;
                true
            }
            _ => false,
        }
    }

    /// How a request arriving at `now` is refused by the warm-up, if it is.
    pub(crate) fn warm_up(&self, now: Instant) -> Option<WarmUp> {
        let Some((restart, Stage::Back(since))) = &self.current else {
            return None;
        };
        let elapsed = now.saturating_duration_since(*since);
        if elapsed < restart.unauthorized {
            Some(WarmUp::Unauthorized)
        } else if elapsed < restart.unauthorized + restart.forbidden {
            Some(WarmUp::Forbidden)
        } else if elapsed < restart.warm_up() {
            Some(WarmUp::Throttled(restart.retry_after_seconds))
        } else {
            None
        }
    }

    /// How many restarts have completed.
    pub(crate) fn completed(&self) -> u64 {
        self.completed
    }

    /// Whether every restart asked for has ended.
    pub(crate) fn idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    /// Why a restart could not be completed, if one could not.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Stops the thread running the restarts (the server is being dropped).
    pub(crate) fn close(&mut self) {
        self.closed = true;
    }

    /// Starts the next queued restart (armed for its write, or going down at once) and
    /// returns it; `None` if none is queued or the server has been dropped.
    pub(super) fn start_next(&mut self) -> Option<Restart> {
        if self.closed {
            return None;
        }
        let restart = self.queue.pop_front()?;
        let stage = if restart.now {
            Stage::Down
        } else {
            Stage::Armed
        };
        self.current = Some((restart.clone(), stage));
        Some(restart)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn back(restart: Restart, since: Instant) -> Restarts {
        Restarts {
            current: Some((restart, Stage::Back(since))),
            ..Restarts::default()
        }
    }

    #[test]
    fn the_warm_up_phases_follow_each_other_in_order_and_end() {
        let ms = Duration::from_millis;
        let since = Instant::now();
        let restarts = back(
            Restart::new()
                .unauthorized_for(ms(10))
                .forbidden_for(ms(20))
                .throttled_for(ms(30), 7),
            since,
        );
        let at = |t| restarts.warm_up(since + ms(t));
        assert_eq!(at(0), Some(WarmUp::Unauthorized));
        assert_eq!(at(9), Some(WarmUp::Unauthorized));
        assert_eq!(at(10), Some(WarmUp::Forbidden));
        assert_eq!(at(29), Some(WarmUp::Forbidden));
        assert_eq!(at(30), Some(WarmUp::Throttled(7)));
        assert_eq!(at(59), Some(WarmUp::Throttled(7)));
        assert_eq!(at(60), None);
    }

    #[test]
    fn a_phase_of_zero_length_is_skipped() {
        let since = Instant::now();
        let restarts = back(Restart::new().forbidden_for(Duration::ZERO), since);
        assert_eq!(restarts.warm_up(since), None);
        let restarts = back(Restart::new(), since);
        assert_eq!(restarts.warm_up(since), Some(WarmUp::Forbidden));
    }

    #[test]
    fn only_writes_that_store_something_take_the_cut() {
        let mut restarts = Restarts {
            current: Some((Restart::new(), Stage::Armed)),
            ..Restarts::default()
        };
        let pod = Route::Pod {
            namespace: "ns".into(),
            name: "p".into(),
        };
        assert!(!restarts.take_cut(Verb::Get, &pod));
        assert!(!restarts.take_cut(Verb::Create, &Route::AccessReview));
        assert!(!restarts.take_cut(Verb::Create, &Route::TokenReviews));
        assert!(!restarts.is_down());
        assert!(restarts.take_cut(Verb::Patch, &pod));
        assert!(restarts.is_down());
        assert!(
            !restarts.take_cut(Verb::Patch, &pod),
            "only one write takes it"
        );
    }

    #[test]
    fn a_restart_for_one_kind_of_write_waits_for_that_kind() {
        let mut restarts = Restarts {
            current: Some((Restart::new().verb(Verb::Patch), Stage::Armed)),
            ..Restarts::default()
        };
        let events = Route::parse("/api/v1/namespaces/ns/events");
        let pod = Route::parse("/api/v1/namespaces/ns/pods/p");
        assert!(!restarts.take_cut(Verb::Create, &events));
        assert!(!restarts.take_cut(Verb::Delete, &pod));
        assert!(restarts.take_cut(Verb::Patch, &pod));
    }
}
