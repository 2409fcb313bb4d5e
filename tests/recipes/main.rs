//! The recipes of `examples/` for the runners people use, run against a real sidecar tracker
//! on a real kube-apiserver (crates/testenv): actions-runner-controller's job hooks, GitLab
//! Runner's pre/post build scripts, an Argo Workflows step wrapped with `run`, and Celery's
//! task signals in a real Celery worker.
//!
//! Each test watches its pod as the API server stores it (the `active-jobs` label and the
//! jobs annotation) and checks that every job is counted once and released once, whether it
//! succeeds, fails or is cancelled; that a repeated call changes nothing; and that a tracker
//! that cannot be reached is reported. Each recipe's file says what of the runner is real and
//! what is reproduced.

#[path = "../support/mod.rs"]
mod support; // it allows dead code itself: each test file uses a different part of it

#[path = "../real/scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;

mod recipe;

mod actions_runner_controller;
mod argo_workflows;
mod celery;
mod gitlab_runner;
