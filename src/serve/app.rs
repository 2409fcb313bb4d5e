//! What the request handlers of both listeners share: the tracker, the targeting, readiness,
//! metrics and the label, and readiness itself.

use std::sync::{Arc, Mutex, PoisonError};

use crate::core::target::Targeting;
use crate::metrics::Metrics;
use crate::serve::tracker::Tracker;

/// Whether the tracker can do its job right now, and if not, why (for `/readyz`).
#[derive(Debug, Default)]
pub struct Readiness {
    problem: Mutex<Option<String>>,
}

impl Readiness {
    /// Not ready until [`Readiness::set_ready`].
    pub fn not_ready(problem: impl Into<String>) -> Self {
        Readiness {
            problem: Mutex::new(Some(problem.into())),
        }
    }

    /// Marks the tracker ready.
    pub fn set_ready(&self) {
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Marks the tracker not ready, with the reason.
    pub fn set_problem(&self, problem: impl Into<String>) {
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = Some(problem.into());
    }

    /// `None` when ready, else the reason.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What the request handlers share.
pub struct App {
    /// Counts.
    pub tracker: Tracker,
    /// Finds each call's pod.
    pub targeting: Targeting,
    /// For `/readyz`.
    pub readiness: Arc<Readiness>,
    /// For `/metrics`, and counted on every call.
    pub metrics: Arc<Metrics>,
    /// The counting label, for `/status`.
    pub label: String,
    /// `--authenticate=serviceaccount`: checks callers; `None`: anyone may call.
    pub(crate) authenticator: Option<crate::serve::auth::Authenticator>,
}
