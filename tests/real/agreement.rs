//! The API test double held to the real server: the same scenarios against both, the same
//! status codes, reasons and stored objects.

#[path = "../support/mod.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod support;

#[path = "scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;
