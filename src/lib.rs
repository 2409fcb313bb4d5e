//! pod-webhook-tracker: keeps the number of running jobs of a pod in a label of that pod, so that
//! a PodDisruptionBudget selecting the label keeps busy pods from being evicted.
//!
//! The tree: five subcommands ([`serve`], [`run`], [`doctor`], [`busy`], [`inject`]) above a pure [`core`] (counting,
//! guarded patch plans, keyed jobs, targeting, bounded durations), the Kubernetes client
//! ([`api`]) and the settings ([`cli`] → [`config`]) they share.
//!
//! The path of one call: [`listen`] accepts it, [`serve::http`] routes it,
//! [`core::target`] finds the pod, [`serve::tracker`] queues it on the pod's single writer, which
//! computes every caller's count with [`core::count`], writes once with a [`core::guard`]ed JSON
//! patch through [`api`], and answers each caller.

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

pub(crate) mod api;
pub mod busy;
pub mod cli;
pub mod command;
pub mod config;
pub mod core;
pub mod doctor;
pub mod error;
pub mod exit;
pub mod inject;
pub mod listen;
pub(crate) mod metrics;
mod no_libm;
pub mod run;
pub mod serve;

pub use error::{Error, Result};
