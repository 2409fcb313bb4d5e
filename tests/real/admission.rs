//! Admission on a real API server: `manifests/policy`'s ValidatingAdmissionPolicy enforced by the
//! server, and the injector registered as a mutating webhook that the server calls.

#[path = "../support/mod.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod support;

#[path = "scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;
