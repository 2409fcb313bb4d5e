//! The tracker's rights on a real API server: the sidecar's least-privilege Role (get and patch
//! by `resourceNames`) and its SelfSubjectAccessReview advice, the standalone service's
//! `--allowed-namespaces`, and `doctor` judging a good and a broken setup.

#[path = "../support/mod.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod support;

#[path = "scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;
