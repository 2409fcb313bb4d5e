//! `--self-signed`: a CA and a serving certificate made in memory at start, and the CA written
//! into the `caBundle` of the injector's own MutatingWebhookConfiguration, so that no
//! cert-manager is needed. The only right this takes is `patch` on that one object.
//!
//! Each start makes a new CA and replaces the caBundle, so run one replica in this mode (two
//! would each trust only their own CA; see `manifests/injector/self-signed`).

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;

use crate::api::{self, KubeOverrides};

/// A CA and the serving certificate it signed, in PEM.
pub struct Made {
    /// The CA certificate, for the caBundle.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// Its key.
    pub key_pem: String,
}

/// Makes a CA and a serving certificate for `dns_names`.
pub fn make(dns_names: &[String]) -> Result<Made, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("making the {what}: {e}");
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "pod-webhook-tracker injector CA");
    let ca_key = KeyPair::generate().map_err(|e| fail("CA key", &e))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| fail("CA", &e))?;
    let issuer = Issuer::new(ca, ca_key);
    let mut serving =
        CertificateParams::new(dns_names.to_vec()).map_err(|e| fail("serving names", &e))?;
    serving.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().map_or("injector", String::as_str),
    );
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().map_err(|e| fail("serving key", &e))?;
    let cert = serving
        .signed_by(&key, &issuer)
        .map_err(|e| fail("serving certificate", &e))?;
    Ok(Made {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The strategic merge patch that sets the caBundle of each named webhook (merged by name, so
/// the rest of the configuration stays as applied).
pub fn ca_bundle_patch(webhooks: &[String], ca_pem: &str) -> serde_json::Value {
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    json!({
        "webhooks": webhooks
            .iter()
            .map(|name| json!({"name": name, "clientConfig": {"caBundle": bundle}}))
            .collect::<Vec<_>>()
    })
}

/// Writes the CA into the configuration, retrying (1 s, doubling up to 30 s) until it is done.
pub async fn register(
    kube: &KubeOverrides,
    configuration: &str,
    webhooks: &[String],
    ca_pem: &str,
) {
    let patch = ca_bundle_patch(webhooks, ca_pem);
    let mut wait = Duration::from_secs(1);
    loop {
        match try_register(kube, configuration, &patch).await {
            Ok(()) => {
                log::info!(
                    "the CA is in the caBundle of MutatingWebhookConfiguration {configuration} ({})",
                    webhooks.join(", ")
                );
                return;
            }
            Err(e) => log::warn!(
                "cannot set the caBundle of MutatingWebhookConfiguration {configuration}: {e}; trying again in {}s",
                wait.as_secs()
            ),
        }
        tokio::time::sleep(wait).await;
        wait = wait.saturating_mul(2).min(Duration::from_secs(30));
    }
}

async fn try_register(
    kube: &KubeOverrides,
    configuration: &str,
    patch: &serde_json::Value,
) -> Result<(), String> {
    let client = api::connect(kube).await.map_err(|e| e.to_string())?;
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client);
    configs
        .patch(
            configuration,
            &PatchParams {
                field_manager: Some("pod-webhook-tracker".to_owned()),
                ..PatchParams::default()
            },
            &Patch::Strategic(patch),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::tls::ServingCertificate;

    #[test]
    fn the_made_certificate_serves_and_its_ca_goes_into_each_named_webhook() {
        let made = make(&["injector.ns.svc".to_owned()]).expect("made");
        ServingCertificate::from_pem(&made.cert_pem, &made.key_pem).expect("a usable pair");
        let patch = ca_bundle_patch(&["a".to_owned(), "b".to_owned()], &made.ca_pem);
        let bundle = patch["webhooks"][1]["clientConfig"]["caBundle"]
            .as_str()
            .expect("a bundle");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(bundle)
            .expect("base64");
        assert_eq!(decoded, made.ca_pem.as_bytes());
        assert_eq!(patch["webhooks"][0]["name"], "a");
    }
}
