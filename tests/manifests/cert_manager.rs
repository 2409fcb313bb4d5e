//! The two cert-manager kinds the injector's manifests use (`cert-manager.io/v1`), typed as
//! far as those manifests need, so that the round trip in `tree` finds a misspelled field in
//! them as it does in the Kubernetes kinds.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// `Issuer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Issuer {
    pub(crate) api_version: String,
    pub(crate) kind: String,
    pub(crate) metadata: ObjectMeta,
    pub(crate) spec: IssuerSpec,
}

/// `Issuer.spec`: only the self-signed issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct IssuerSpec {
    pub(crate) self_signed: BTreeMap<String, String>,
}

/// `Certificate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Certificate {
    pub(crate) api_version: String,
    pub(crate) kind: String,
    pub(crate) metadata: ObjectMeta,
    pub(crate) spec: CertificateSpec,
}

/// `Certificate.spec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CertificateSpec {
    pub(crate) secret_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) renew_before: Option<String>,
    pub(crate) dns_names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) private_key: Option<PrivateKey>,
    pub(crate) issuer_ref: IssuerRef,
}

/// `Certificate.spec.privateKey`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PrivateKey {
    pub(crate) algorithm: String,
    pub(crate) size: u32,
    pub(crate) rotation_policy: String,
}

/// `Certificate.spec.issuerRef`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct IssuerRef {
    pub(crate) name: String,
    pub(crate) kind: String,
}
