//! The pure core: counting, guarded patch plans, keyed jobs, which pod a call is about,
//! bounded durations, and what the injector adds to a pod. No I/O and no clock here: every subcommand builds on these.

pub mod budgets;
pub mod callers;
pub mod count;
pub mod durations;
pub mod guard;
pub mod inject;
pub mod jobs;
pub mod keys;
pub mod pod;
pub mod target;
pub mod view;
