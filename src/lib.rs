//! pod-webhook-tracker: keeps the number of running jobs of a pod in a label of that pod, so that
//! a PodDisruptionBudget selecting the label keeps busy pods from being evicted.
//!
//! The path of one call: [`listen`] accepts it, [`http`] routes it, [`target`] finds the pod, [`tracker`] queues it on
//! the pod's single writer, which computes every caller's count with [`count`], writes once with
//! a [`guard`]ed JSON patch through [`api`], and answers each caller.

// No panic is reachable from input: outside tests, these are denied (see the README's
// architecture section); an `#[allow]` beside its invariant marks each exception.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod api;
pub mod cli;
pub mod config;
pub mod count;
pub mod doctor;
pub mod durations;
pub mod error;
pub mod guard;
pub mod head;
pub mod http;
pub mod jobs;
pub mod listen;
pub mod metrics;
pub mod run;
pub mod serve;
pub mod target;
pub mod tracker;
pub mod watchdog;

pub use error::{Error, Result};
