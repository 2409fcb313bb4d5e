//! `serve --authenticate=serviceaccount` on a real API server: pod-bound tokens made by
//! TokenRequest and checked by TokenReview.

#[path = "../support/mod.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod support;

#[path = "scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;
