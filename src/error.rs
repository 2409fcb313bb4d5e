//! The one error type of the program, and its `Result` alias.
//!
//! Variants say what went wrong in the caller's terms; [`crate::serve::http`] alone turns them into
//! status codes.

use std::time::Duration;

use crate::core::pod::PodRef;

/// Everything that can go wrong, from start-up to one webhook call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A flag or setting is invalid; the program refuses to start.
    #[error("{0}")]
    Config(String),

    /// The tracker hit a bug (a panic) while answering; the request's outcome is named in the
    /// message.
    #[error("internal error: {0}")]
    Internal(String),

    /// The request target (path and query) is longer than the tracker reads.
    #[error("the request target is {length} bytes long; at most {max} are read")]
    TargetTooLong {
        /// Its length in bytes.
        length: usize,
        /// The most accepted.
        max: usize,
    },

    /// The webhook request itself is malformed (missing or invalid parameter).
    #[error("{0}")]
    BadRequest(String),

    /// The caller may not act on this pod or namespace.
    #[error("{0}")]
    NotAllowed(String),

    /// The pod does not exist, or does not match the label selector (deliberately one answer).
    #[error("pod {pod} not found")]
    PodNotFound {
        /// The pod asked for.
        pod: PodRef,
    },

    /// The label holds something that is not a count; nothing was written.
    #[error("pod {pod}: label {label} holds {value:?}, which is not a count; nothing was written")]
    NotACount {
        /// The pod.
        pod: PodRef,
        /// The label key.
        label: String,
        /// What the label holds.
        value: String,
    },

    /// The count would leave the 64-bit range; nothing was written for this call.
    #[error(
        "pod {pod}: a {delta} would take label {label} out of the 64-bit range; nothing was written"
    )]
    Overflow {
        /// The pod.
        pod: PodRef,
        /// The label key.
        label: String,
        /// The change that overflowed.
        delta: crate::core::count::Delta,
    },

    /// The jobs annotation holds something this tracker cannot read; nothing was written.
    #[error("pod {pod}: annotation {annotation} cannot be read ({problem}); nothing was written")]
    NotJobs {
        /// The pod.
        pod: PodRef,
        /// The annotation key.
        annotation: String,
        /// What is wrong with it.
        problem: String,
    },

    /// A new keyed job would exceed the number of keyed jobs a pod may run at once.
    #[error(
        "pod {pod}: already {limit} keyed jobs running, the most one pod may track; end some first (nothing was written)"
    )]
    TooManyJobs {
        /// The pod.
        pod: PodRef,
        /// The limit.
        limit: usize,
    },

    /// A renewal for a job that is not running (it ended, expired or never started).
    #[error("pod {pod}: job {job:?} is not running (ended, expired or never started)")]
    UnknownJob {
        /// The pod.
        pod: PodRef,
        /// The job id asked for.
        job: String,
    },

    /// The pod is being deleted: a new job must not start there.
    #[error(
        "pod {pod} is being deleted: do not start a job here, start it on another pod (nothing was written)"
    )]
    PodDeleting {
        /// The pod.
        pod: PodRef,
        /// How long until the pod is gone (its remaining grace period), at least 1 s.
        retry_after: Duration,
    },

    /// `/wait-idle` gave up: jobs were still running when its timeout passed.
    #[error("pod {pod}: {count} job(s) still running after waiting {}", humantime::format_duration(*waited))]
    StillBusy {
        /// The pod.
        pod: PodRef,
        /// The count when the wait ended.
        count: i64,
        /// How long it waited.
        waited: Duration,
    },

    /// The API server refused the tracker's credentials (401) or rights (403).
    #[error("pod {pod}: the API server refused the tracker: {message}")]
    ApiRefused {
        /// The pod.
        pod: PodRef,
        /// What the tracker lacks, in the API server's words.
        message: String,
    },

    /// The API server rejected the request for a reason other than rights or a failed guard.
    #[error("pod {pod}: the API server rejected the change: {message}")]
    ApiRejected {
        /// The pod.
        pod: PodRef,
        /// The API server's message.
        message: String,
    },

    /// The API server could not be reached or kept failing; nothing was written.
    #[error("pod {pod}: the API server is unavailable ({reason}); nothing was written")]
    ApiUnavailable {
        /// The pod.
        pod: PodRef,
        /// The last failure.
        reason: String,
        /// When to try again.
        retry_after: Duration,
    },

    /// A write was sent but its outcome could not be learnt before giving up.
    #[error(
        "pod {pod}: the outcome is unknown ({reason}); the change may or may not have been stored: \
         GET /status?pod={pod} shows the count stored now, and for a keyed job repeating this call \
         with the same job key (?job= or Idempotency-Key) is safe"
    )]
    OutcomeUnknown {
        /// The pod.
        pod: PodRef,
        /// The last failure.
        reason: String,
    },

    /// No such route.
    #[error("no such path {0}: use POST /increment or POST /decrement")]
    UnknownPath(String),

    /// A known route with the wrong method.
    #[error("method {method} is not allowed on {path}: use {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path.
        path: String,
        /// The method that works.
        allow: String,
    },

    /// `--authenticate`: no valid bearer token (401). The message never holds the token.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),

    /// `--authenticate`: the caller is known but may not do this (403).
    #[error("forbidden: {0}")]
    CallerForbidden(String),

    /// `--authenticate`: the token could not be reviewed (the API server failed or refused
    /// the TokenReview); the caller may try again (503).
    #[error("cannot check the caller's token now: {0}")]
    AuthUnavailable(String),

    /// The tracker is shutting down and takes no new calls.
    #[error("the tracker is shutting down")]
    ShuttingDown,
}

/// The program's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
