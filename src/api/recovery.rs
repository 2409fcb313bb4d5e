//! Tells the refusals of an API server that is recovering from a restart from real ones.
//!
//! A kube-apiserver that has just started answers 401 and 403 for a few seconds, although no
//! right changed, until the caches of its authenticator and its RBAC authorizer have synced.
//! Such a refusal looks like a real one; what gives it away is what came just before it: the
//! server was unreachable or failing (a broken connection, a 5xx, a 429), and the same kind of
//! request was allowed earlier. Those refusals are retried like a 503; a refusal that persists
//! past [`RECOVERY_WINDOW`] is a real one.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long after the server last failed a 401 or 403 counts as its warm-up.
///
/// A restarted kube-apiserver refuses while its RBAC informers list every Role and binding (seen
/// here: a tenth of a second to a few seconds, longer under load); a large cluster's lists take
/// longer.
/// 30 s covers that with room, and a real revocation that happens to follow a failure is still
/// reported (502) within half a minute.
pub(crate) const RECOVERY_WINDOW: Duration = Duration::from_secs(30);

/// The most request kinds remembered as allowed; beyond it a new kind is not remembered, so its
/// refusals are taken as real (the safe side: answered at once, nothing stored).
const MAX_KINDS: usize = 1024;

/// A kind of request, as authorization sees it: a verb on a resource in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Kind<'a> {
    /// `get`, `patch`, `list`, `create`.
    pub verb: &'static str,
    /// `pods`, `events`, `tokenreviews`, ...
    pub resource: &'static str,
    /// The namespace; empty for cluster-scoped resources.
    pub namespace: &'a str,
}

impl<'a> Kind<'a> {
    /// `verb` on the pod's namespace's pods.
    pub(crate) fn pods(verb: &'static str, pod: &'a crate::core::pod::PodRef) -> Kind<'a> {
        Kind {
            verb,
            resource: "pods",
            namespace: &pod.namespace,
        }
    }

    /// `verb` on a cluster-scoped resource.
    pub(crate) fn cluster(verb: &'static str, resource: &'static str) -> Kind<'a> {
        Kind {
            verb,
            resource,
            namespace: "",
        }
    }

    fn key(&self) -> u64 {
        // A fixed-key hash: the same kind always has the same key.
        let mut hasher = DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }
}

/// What the API client has seen of the server: when it last failed, and which kinds of request
/// it allowed. Shared by every request of one client.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    failed_at: Option<Instant>,
    allowed: HashSet<u64>,
}

impl Recovery {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Each change is one assignment or insert: a panic cannot leave it half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request of this kind was answered (not refused).
    pub(crate) fn allowed(&self, kind: &Kind<'_>) {
        let key = kind.key();
        let mut state = self.state();
        if state.allowed.len() < MAX_KINDS {
            state.allowed.insert(key);
        }
    }

    /// The server could not be reached, broke a connection, or answered 5xx or 429.
    pub(crate) fn failed(&self, at: Instant) {
        let mut state = self.state();
        if state.failed_at.is_none_or(|last| last < at) {
            state.failed_at = Some(at);
        }
    }

    /// Whether a 401 or 403 for `kind` at `now` is the server's warm-up rather than a real
    /// refusal.
    pub(crate) fn warming_up(&self, kind: &Kind<'_>, now: Instant) -> bool {
        let state = self.state();
        is_warm_up(state.failed_at, state.allowed.contains(&kind.key()), now)
    }
}

/// The rule itself: a refusal within [`RECOVERY_WINDOW`] after a failure, of a kind of request
/// that was allowed before.
fn is_warm_up(failed_at: Option<Instant>, allowed_before: bool, now: Instant) -> bool {
    allowed_before
        && failed_at.is_some_and(|failed| now.saturating_duration_since(failed) <= RECOVERY_WINDOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET_PODS: Kind<'static> = Kind {
        verb: "get",
        resource: "pods",
        namespace: "jobs",
    };

    #[test]
    fn a_refusal_soon_after_a_failure_of_a_kind_allowed_before_is_the_warm_up() {
        let recovery = Recovery::default();
        let start = Instant::now();
        recovery.allowed(&GET_PODS);
        recovery.failed(start);
        assert!(recovery.warming_up(&GET_PODS, start + Duration::from_secs(3)));
        assert!(recovery.warming_up(&GET_PODS, start + RECOVERY_WINDOW));
    }

    #[test]
    fn a_refusal_past_the_window_is_real() {
        let recovery = Recovery::default();
        let start = Instant::now();
        recovery.allowed(&GET_PODS);
        recovery.failed(start);
        assert!(!recovery.warming_up(
            &GET_PODS,
            start + RECOVERY_WINDOW + Duration::from_millis(1)
        ));
    }

    #[test]
    fn a_refusal_without_a_failure_before_it_is_real() {
        let recovery = Recovery::default();
        recovery.allowed(&GET_PODS);
        assert!(!recovery.warming_up(&GET_PODS, Instant::now()));
    }

    #[test]
    fn a_refusal_of_a_kind_never_allowed_is_real_even_after_a_failure() {
        let recovery = Recovery::default();
        let start = Instant::now();
        recovery.allowed(&GET_PODS);
        recovery.failed(start);
        let patch = Kind {
            verb: "patch",
            ..GET_PODS
        };
        let elsewhere = Kind {
            namespace: "other",
            ..GET_PODS
        };
        assert!(!recovery.warming_up(&patch, start));
        assert!(!recovery.warming_up(&elsewhere, start));
    }

    #[test]
    fn an_older_failure_reported_late_does_not_move_the_window_back() {
        let recovery = Recovery::default();
        let start = Instant::now();
        recovery.allowed(&GET_PODS);
        recovery.failed(start + Duration::from_secs(20));
        recovery.failed(start);
        assert!(recovery.warming_up(&GET_PODS, start + Duration::from_secs(45)));
    }

    #[test]
    fn kinds_beyond_the_limit_are_not_remembered() {
        let recovery = Recovery::default();
        let start = Instant::now();
        let names: Vec<String> = (0..=MAX_KINDS).map(|n| format!("ns-{n}")).collect();
        for name in &names {
            recovery.allowed(&Kind {
                namespace: name,
                ..GET_PODS
            });
        }
        recovery.failed(start);
        let first = Kind {
            namespace: &names[0],
            ..GET_PODS
        };
        let last = Kind {
            namespace: &names[MAX_KINDS],
            ..GET_PODS
        };
        assert!(recovery.warming_up(&first, start));
        assert!(!recovery.warming_up(&last, start));
    }
}
