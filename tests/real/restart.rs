//! A real API server restarted under load: no stored count is answered as a failure, and the
//! label ends equal to what was acknowledged.

#[path = "../support/mod.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod support;

#[path = "scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;
