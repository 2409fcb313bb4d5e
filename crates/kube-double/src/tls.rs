//! TLS: a certificate authority made on the fly, a server certificate for `127.0.0.1` and
//! `localhost`, client certificates for users, and the rustls server configuration (ring).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};

use crate::rbac::User;

/// The ring crypto provider (aws-lc needs cmake to build).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The double's certificate authority and server TLS configuration.
pub(crate) struct Tls {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    pub server_config: Arc<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

/// A client certificate issued by the double's authority.
pub(crate) struct ClientCertificate {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Tls {
    /// Makes a CA and a server certificate. With `require_client_certs`, the handshake fails
    /// for clients without a certificate signed by the CA; otherwise a certificate is
    /// optional (but checked when given).
    pub(crate) fn generate(require_client_certs: bool) -> Result<Tls, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("kube-double TLS: {what}: {e}");
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params.distinguished_name = rcgen::DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kube-double-ca");
        let ca_key = KeyPair::generate().map_err(|e| fail("CA key", &e))?;
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(|e| fail("CA certificate", &e))?;
        let ca_der = ca_cert.der().clone();
        let issuer = Issuer::new(ca_params, ca_key);

        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .map_err(|e| fail("server names", &e))?;
        server_params.distinguished_name = rcgen::DistinguishedName::new();
        server_params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().map_err(|e| fail("server key", &e))?;
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .map_err(|e| fail("server certificate", &e))?;

        let provider = provider();
        let mut roots = RootCertStore::empty();
        roots.add(ca_der.clone()).map_err(|e| fail("CA root", &e))?;
        let mut verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if !require_client_certs {
            verifier = verifier.allow_unauthenticated();
        }
        let verifier = verifier.build().map_err(|e| fail("client verifier", &e))?;
        let server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail("protocol versions", &e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .map_err(|e| fail("server configuration", &e))?;
        Ok(Tls {
            ca_pem: ca_cert.pem(),
            issuer,
            server_config: Arc::new(server_config),
        })
    }

    /// The CA certificate, PEM.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A client certificate (common name = user name, organizations = groups) signed by the CA.
    pub(crate) fn issue(&self, user: &User) -> Result<ClientCertificate, String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| format!("kube-double TLS: {what}: {e}");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, user.name());
        for group in user.group_names() {
            params
                .distinguished_name
                .push(DnType::OrganizationName, group.as_str());
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(|e| fail("client key", &e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| fail("client certificate", &e))?;
        let der: CertificateDer<'static> = cert.der().clone();
        Ok(ClientCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: der.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_issues_pem_certificates_for_users() {
        let tls = Tls::generate(false).expect("TLS material");
        assert!(tls.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let cert = tls
            .issue(&User::new("carol").groups(["g"]))
            .expect("client certificate");
        assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.key_pem.contains("PRIVATE KEY"));
        assert!(!cert.der.is_empty());
        let other = tls.issue(&User::new("carol")).expect("client certificate");
        assert_ne!(
            cert.der, other.der,
            "every certificate is distinct, so it maps to one user"
        );
    }
}
