//! Jobs on a real API server: job keys, expiry by the tracker's own timer, busy annotations,
//! events, `/wait-idle` and `run`.

#[path = "../support/mod.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod support;

#[path = "scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;
