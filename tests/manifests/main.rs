//! Checks the Kubernetes manifests under `manifests/` and `examples/fileflows/`.
//!
//! Every YAML document is parsed into its `k8s-openapi` type by `kind`. Those deserializers
//! skip unknown fields silently, so each document also makes a round trip (YAML -> JSON value
//! -> typed -> JSON value) in which every field of the original must survive: a misspelled or
//! misplaced field is reported with its JSON path. The kustomizations must list only files
//! and directories that exist, and every manifest must be part of one.
//!
//! The remaining tests hold the manifests to the program's defaults: a sidecar tracker counts
//! its own pod (POD_NAME and POD_NAMESPACE from the downward API), serves the counting API on
//! 127.0.0.1:8080 and its probes on the admin listener 0.0.0.0:9090; the standalone service
//! serves everything on 8080; the trackers may only get and patch pods; and busy pods, those
//! carrying the `active-jobs` label, are held by a budget that can never be met.

#[path = "../support/yaml.rs"]
#[allow(dead_code)] // read_yaml is for the policy tests
mod yaml;

#[path = "../support/sidecar_checks.rs"]
mod sidecar_checks;

mod budgets;
mod cert_manager;
mod containers;
mod program;
mod rbac;
mod sidecar;
mod standalone;
mod structure;
mod tree;

/// What every module of this test uses.
mod prelude {
    pub(crate) use std::collections::{BTreeMap, BTreeSet};
    pub(crate) use std::path::{Path, PathBuf};
    pub(crate) use std::process::Command;
    pub(crate) use std::sync::LazyLock;

    pub(crate) use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    pub(crate) use k8s_openapi::api::apps::v1::Deployment;
    pub(crate) use k8s_openapi::api::batch::v1::Job;
    pub(crate) use k8s_openapi::api::core::v1::{
        Container, Namespace, PodSpec, PodTemplateSpec, Service, ServiceAccount,
    };
    pub(crate) use k8s_openapi::api::networking::v1::NetworkPolicy;
    pub(crate) use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    pub(crate) use k8s_openapi::api::rbac::v1::{
        ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding,
    };
    pub(crate) use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    pub(crate) use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    pub(crate) use serde_json::Value;

    pub(crate) use crate::containers::*;
    pub(crate) use crate::sidecar_checks::*;
    pub(crate) use crate::tree::*;
    pub(crate) use crate::yaml::{parse_yaml, root, yaml_files};
}
