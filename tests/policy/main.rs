//! Checks the least-privilege policy in `manifests/policy/` by running it.
//!
//! The ValidatingAdmissionPolicy is read from its YAML into the `k8s-openapi` types, and every
//! CEL expression in it (match conditions, variables, validations and their messages) is
//! evaluated with the `cel` crate the way the API server does for an admission request:
//! `matchConstraints` first, then the match conditions (any false: not matched; an error:
//! denied, as `failurePolicy: Fail` says), then the variables in order, then each validation
//! (false or an error: denied, with the message of the first refusal shown to the caller).
//!
//! The inputs are built as the API server presents them to CEL: `request` is an
//! AdmissionRequest as JSON, where empty fields are left out (`userInfo.extra` of a token
//! with no extras, `subResource` of the pod itself); `object` and `oldObject` are pods
//! serialized from the `k8s-openapi` types, with integers as CEL `int`. No variable the API
//! server would not provide is defined, so an expression with a wrong field path or name
//! fails here as it would in the cluster.

#[path = "../support/yaml.rs"]
mod yaml;

mod agreement;
mod allowed;
mod compiled;
mod denied;
mod fixtures;

/// What every module of this test uses.
mod prelude {
    pub(crate) use std::collections::{BTreeMap, HashMap};
    pub(crate) use std::path::Path;
    pub(crate) use std::sync::{Arc, LazyLock};

    pub(crate) use cel::{Context, Env, Program, Value as Cel};
    pub(crate) use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicySpec,
    };
    pub(crate) use k8s_openapi::api::authentication::v1::UserInfo;
    pub(crate) use k8s_openapi::api::core::v1::{
        Container, EphemeralContainer, Pod, PodCondition, PodSpec, PodStatus,
    };
    pub(crate) use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    pub(crate) use serde_json::{Value, json};

    pub(crate) use crate::compiled::*;
    pub(crate) use crate::fixtures::*;
    pub(crate) use crate::yaml::{parse_yaml, read_yaml, yaml_files};
}
