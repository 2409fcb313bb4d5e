//! Faults on demand: which requests they hit (kind, pod, how many, what fraction) and what
//! happens to them (latency, a status, a hang, a reset, apply-then-drop).

use std::time::Duration;

use crate::ids::Prng;
use crate::record::Verb;

/// What a fault does to a request it hits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// Waits this long before handling the request (adds up with other latency).
    Latency(Duration),
    /// Answers with this status code and a fitting `Status` body (409 Conflict, 500, 503,
    /// 504, ...) without applying anything. 429 is API Priority and Fairness refusing the
    /// request, answered as kube-apiserver does: plain text with `Retry-After: 1` (see
    /// [`crate::Restart::throttled_for`]).
    Status(u16),
    /// Never answers; the request is not applied. The client has to give up.
    Hang,
    /// Closes the connection (with a TCP reset) before applying anything.
    Reset,
    /// Applies the request, then closes the connection without an answer: the client cannot
    /// tell whether its write happened.
    ApplyThenDrop,
}

/// A fault to inject with [`crate::ApiServer::inject`].
///
/// By default a fault hits the next matching request only; see [`Fault::next`],
/// [`Fault::always`] and [`Fault::fraction`].
///
/// ```
/// use kube_double::{Fault, Verb};
/// let fault = Fault::status(409).verb(Verb::Patch).pod("worker-0").next(3);
/// let flaky = Fault::apply_then_drop().verb(Verb::Patch).fraction(0.2);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    kind: FaultKind,
    verb: Option<Verb>,
    pod: Option<String>,
    /// How many more times it fires; `None` = until cleared.
    remaining: Option<u64>,
    budget_set: bool,
    fraction: Option<f64>,
}

impl Fault {
    /// A fault of this kind for the next request of any kind.
    pub fn new(kind: FaultKind) -> Fault {
        Fault {
            kind,
            verb: None,
            pod: None,
            remaining: Some(1),
            budget_set: false,
            fraction: None,
        }
    }

    /// [`FaultKind::Latency`].
    pub fn latency(delay: Duration) -> Fault {
        Fault::new(FaultKind::Latency(delay))
    }

    /// [`FaultKind::Status`].
    pub fn status(code: u16) -> Fault {
        Fault::new(FaultKind::Status(code))
    }

    /// [`FaultKind::Hang`].
    pub fn hang() -> Fault {
        Fault::new(FaultKind::Hang)
    }

    /// [`FaultKind::Reset`].
    pub fn reset() -> Fault {
        Fault::new(FaultKind::Reset)
    }

    /// [`FaultKind::ApplyThenDrop`].
    pub fn apply_then_drop() -> Fault {
        Fault::new(FaultKind::ApplyThenDrop)
    }

    /// Only requests of this kind.
    pub fn verb(mut self, verb: Verb) -> Fault {
        self.verb = Some(verb);
        self
    }

    /// Only requests about this pod (get, update, patch, delete, evict of it).
    pub fn pod(mut self, name: impl Into<String>) -> Fault {
        self.pod = Some(name.into());
        self
    }

    /// Fires on the next `n` matching requests (that it is drawn for, with a fraction).
    pub fn next(mut self, n: u64) -> Fault {
        self.remaining = Some(n);
        self.budget_set = true;
        self
    }

    /// Fires on every matching request until [`crate::ApiServer::clear_faults`].
    pub fn always(mut self) -> Fault {
        self.remaining = None;
        self.budget_set = true;
        self
    }

    /// Fires on this fraction of matching requests (0.0 to 1.0), drawn from the server's
    /// seeded generator, so a run is repeatable. Unless [`Fault::next`] limits it, it stays
    /// until cleared.
    pub fn fraction(mut self, fraction: f64) -> Fault {
        self.fraction = Some(if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        });
        if !self.budget_set {
            self.remaining = None;
        }
        self
    }

    fn matches(&self, verb: Verb, pod: Option<&str>) -> bool {
        self.verb.is_none_or(|v| v == verb) && self.pod.as_deref().is_none_or(|p| Some(p) == pod)
    }
}

/// What the faults decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Decision {
    /// Extra latency from latency faults.
    pub latency: Duration,
    /// The first other fault that fired, if any.
    pub action: Option<FaultKind>,
}

/// The injected faults.
#[derive(Debug)]
pub(crate) struct Faults {
    faults: Vec<Fault>,
    prng: Prng,
}

impl Faults {
    pub(crate) fn new(seed: u64) -> Faults {
        Faults {
            faults: Vec::new(),
            prng: Prng::new(seed),
        }
    }

    pub(crate) fn inject(&mut self, fault: Fault) {
        self.faults.push(fault);
    }

    pub(crate) fn clear(&mut self) {
        self.faults.clear();
    }

    /// Decides what happens to a request, and uses up the faults that fire.
    pub(crate) fn decide(&mut self, verb: Verb, pod: Option<&str>) -> Decision {
        let mut decision = Decision::default();
        for fault in self.faults.iter_mut().filter(|f| f.matches(verb, pod)) {
            let is_latency = matches!(fault.kind, FaultKind::Latency(_));
            if !is_latency && decision.action.is_some() {
                continue;
            }
            if let Some(fraction) = fault.fraction
                && self.prng.next_f64() >= fraction
            {
                continue;
            }
            match fault.kind {
                FaultKind::Latency(delay) => decision.latency += delay,
                kind => decision.action = Some(kind),
            }
            if let Some(remaining) = &mut fault.remaining {
                *remaining = remaining.saturating_sub(1);
            }
        }
        self.faults.retain(|f| f.remaining != Some(0));
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_hits_the_next_matching_request_only_by_default() {
        let mut faults = Faults::new(1);
        faults.inject(Fault::status(409).verb(Verb::Patch));
        assert_eq!(faults.decide(Verb::Get, None).action, None);
        assert_eq!(
            faults.decide(Verb::Patch, Some("p")).action,
            Some(FaultKind::Status(409))
        );
        assert_eq!(faults.decide(Verb::Patch, Some("p")).action, None);
    }

    #[test]
    fn next_n_counts_matching_requests_and_pod_limits_them() {
        let mut faults = Faults::new(1);
        faults.inject(Fault::hang().pod("a").next(2));
        assert_eq!(faults.decide(Verb::Patch, Some("b")).action, None);
        assert_eq!(
            faults.decide(Verb::Get, Some("a")).action,
            Some(FaultKind::Hang)
        );
        assert_eq!(
            faults.decide(Verb::Patch, Some("a")).action,
            Some(FaultKind::Hang)
        );
        assert_eq!(faults.decide(Verb::Patch, Some("a")).action, None);
    }

    #[test]
    fn always_lasts_until_cleared() {
        let mut faults = Faults::new(1);
        faults.inject(Fault::reset().always());
        for _ in 0..10 {
            assert_eq!(
                faults.decide(Verb::List, None).action,
                Some(FaultKind::Reset)
            );
        }
        faults.clear();
        assert_eq!(faults.decide(Verb::List, None).action, None);
    }

    #[test]
    fn a_fraction_fires_about_that_often_and_repeatably() {
        let run = || {
            let mut faults = Faults::new(9);
            faults.inject(Fault::apply_then_drop().fraction(0.25));
            (0..1000)
                .map(|_| faults.decide(Verb::Patch, None).action.is_some())
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        let fired = first.iter().filter(|f| **f).count();
        assert!((180..320).contains(&fired), "{fired}");
    }

    #[test]
    fn latencies_add_up_and_combine_with_one_action() {
        let mut faults = Faults::new(1);
        faults.inject(Fault::latency(Duration::from_millis(5)));
        faults.inject(Fault::latency(Duration::from_millis(7)));
        faults.inject(Fault::status(500));
        faults.inject(Fault::status(503));
        let decision = faults.decide(Verb::Get, None);
        assert_eq!(
            decision,
            Decision {
                latency: Duration::from_millis(12),
                action: Some(FaultKind::Status(500))
            }
        );
        assert_eq!(
            faults.decide(Verb::Get, None).action,
            Some(FaultKind::Status(503)),
            "the second one was kept"
        );
    }
}
