//! The Helm chart `charts/pod-webhook-tracker`, with the real helm (v4.3.2, built from its Go
//! module: `testenv::tool("helm")`) and a real API server (crates/testenv).
//!
//! - `metadata`: the chart's version and appVersion follow Cargo.toml, its image defaults to
//!   the release's, `helm lint --strict` passes for every set of values of [`helm::MATRIX`].
//! - `schema`: values.schema.json and the chart's own checks refuse wrong values, saying which.
//! - `agreement`: what the chart renders equals what the matching `manifests/` variants render
//!   (kustomize), object for object and field for field, but for the differences it declares.
//! - `server`: every rendering of the matrix is known field for field to `k8s-openapi` and
//!   accepted by the API server under server-side dry run and strict field validation (custom
//!   kinds against their projects' real CRDs), meeting the `restricted` Pod Security Standard.
//! - `install`: `helm install` into the API server stores what the chart renders, an upgrade
//!   with the same values changes nothing, uninstall removes it all; missing CRDs are named.
//! - `inject`: the injector, run with the flags the chart renders, injects pods that the API
//!   server sends it under the chart's webhook configuration; a self-signed injector installed
//!   by the chart registers its CA with the chart's rights, and the NOTES' checks work.
//! - `notes`: NOTES.txt names the labels the webhook selects on and a URL the standalone
//!   service serves.
//! - `policy`: the chart's ValidatingAdmissionPolicy, enforced by the API server, holds the
//!   accounts and the label its values name.
//! - `monitoring`: the chart's alerts are manifests/monitoring's, its monitors scrape the ports
//!   the workloads serve.

#[path = "../support/mod.rs"]
mod support; // its own `#![allow(dead_code)]` covers the parts this binary does not use

#[path = "../support/yaml.rs"]
#[allow(dead_code)] // read_yaml is for the policy tests
mod yaml;

#[path = "../support/sidecar_checks.rs"]
mod sidecar_checks;

#[path = "../support/crds.rs"]
mod crds;

#[path = "../support/kustomize.rs"]
mod kustomize;

mod agreement;
mod helm;
mod inject;
mod install;
mod metadata;
mod monitoring;
mod notes;
mod policy;
mod schema;
mod server;
