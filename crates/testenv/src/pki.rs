//! The control plane's certificates and keys, made fresh for each cluster: a CA, the API
//! server's serving certificate, client certificates, and the service-account signing key.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// A CA that signs serving and client certificates.
pub struct Authority {
    /// The CA's certificate, PEM (what clients trust, and the API server's `--client-ca-file`).
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Authority {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a CA key");
        let cert = params.self_signed(&key).expect("a CA certificate");
        Authority {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A serving certificate for loopback (`127.0.0.1`, `localhost`) and `names`.
    pub fn serving(&self, names: &[&str]) -> Pair {
        let mut params = CertificateParams::new(
            std::iter::once("localhost")
                .chain(names.iter().copied())
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
        .expect("valid names");
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate for user `name`, in `group` if given (the API server reads the
    /// common name as the user and the organization as a group).
    pub fn client(&self, name: &str, group: Option<&str>) -> Pair {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some(group) = group {
            params
                .distinguished_name
                .push(DnType::OrganizationName, group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A key that signs service-account tokens: the private half for
/// `--service-account-signing-key-file`, the public half for `--service-account-key-file`.
pub(crate) fn signing_key() -> (String, String) {
    let key = KeyPair::generate().expect("a signing key");
    (key.serialize_pem(), key.public_key_pem())
}
