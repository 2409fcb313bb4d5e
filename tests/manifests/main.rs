//! Checks the Kubernetes manifests: every kustomization under `manifests/` and `examples/`, as
//! the real kustomize renders it (v5.8.2, built from its Go module) and as the real kubectl
//! applies it to a real API server (crates/testenv).
//!
//! Every kustomization builds, with kustomize and with kubectl's own kustomize alike; the API
//! server accepts every rendered object under strict field validation (custom kinds against
//! their projects' real CRDs), and applying a kustomization twice changes nothing. Every
//! built-in object also makes a round trip through its `k8s-openapi` type, in which every field
//! must survive: a misspelled or misplaced field is reported with its JSON path.
//!
//! The remaining tests hold what each kustomization renders to the program's defaults: a
//! sidecar tracker counts its own pod (POD_NAME and POD_NAMESPACE from the downward API),
//! serves the counting API on 127.0.0.1:8080 and its probes on the admin listener 0.0.0.0:9090;
//! the standalone service serves everything on 8080; the trackers may only get and patch pods;
//! busy pods, those carrying the `active-jobs` label, are held by a budget that can never be
//! met; and each variant of the injector intercepts exactly the pods it says it does.

#[path = "../support/yaml.rs"]
#[allow(dead_code)] // read_yaml is for the policy tests
mod yaml;

#[path = "../support/sidecar_checks.rs"]
mod sidecar_checks;

#[path = "../support/crds.rs"]
mod crds;

#[path = "../support/kustomize.rs"]
mod kustomize;

mod budgets;
mod containers;
mod injector;
mod program;
mod rbac;
mod rendered;
mod server;
mod sidecar;
mod standalone;
mod structure;

/// What every module of this test uses.
mod prelude {
    pub(crate) use std::collections::{BTreeMap, BTreeSet};
    pub(crate) use std::path::{Path, PathBuf};
    pub(crate) use std::process::Command;
    pub(crate) use std::sync::LazyLock;

    pub(crate) use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
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
    pub(crate) use serde_json::{Value, json};

    pub(crate) use crate::containers::*;
    pub(crate) use crate::crds;
    pub(crate) use crate::kustomize::{
        documents, kind_and_name, kubectl_kustomize, kustomizations, kustomize_build,
    };
    pub(crate) use crate::rendered::*;
    pub(crate) use crate::sidecar_checks::*;
    pub(crate) use crate::yaml::{parse_yaml, root, yaml_files};
}
