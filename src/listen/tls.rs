//! A listener's serving certificate: read from PEM files and read again when they change (so
//! that cert-manager, which rewrites the Secret's files in place, rotates it without a restart),
//! or made in memory.
//!
//! The files are checked at most once per [`RECHECK`] during handshakes. A new pair that does
//! not load (half-written, or a key that does not match) is logged and the previous certificate
//! stays in use; only at start-up is a bad pair an error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// How often the files are looked at again.
pub const RECHECK: Duration = Duration::from_secs(1);
/// The largest certificate or key file read (a chain of a few certificates is a few KiB).
pub const MAX_PEM_FILE: u64 = 1024 * 1024;

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Files { cert: PathBuf, key: PathBuf },
    Memory,
}

/// What the files looked like when last read: a change to either means read them again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    cert: (Option<SystemTime>, u64),
    key: (Option<SystemTime>, u64),
}

struct Current {
    key: Arc<CertifiedKey>,
    stamp: Option<Stamp>,
    checked: Instant,
}

/// The certificate a TLS listener presents.
pub struct ServingCertificate {
    source: Source,
    provider: Arc<CryptoProvider>,
    current: Mutex<Current>,
}

impl fmt::Debug for ServingCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCertificate")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The ring crypto provider, the one the Kubernetes client uses too (aws-lc needs cmake).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServingCertificate {
    /// Reads the certificate chain and key from PEM files; they are read again when they change.
    pub fn from_files(cert: &Path, key: &Path) -> Result<ServingCertificate, String> {
        let provider = provider();
        let stamp = stamp(cert, key);
        let loaded = load_files(cert, key, &provider)?;
        Ok(ServingCertificate {
            source: Source::Files {
                cert: cert.to_owned(),
                key: key.to_owned(),
            },
            provider,
            current: Mutex::new(Current {
                key: loaded,
                stamp: Some(stamp),
                checked: Instant::now(),
            }),
        })
    }

    /// A certificate chain and key held in memory (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ServingCertificate, String> {
        let provider = provider();
        let key = certified_key(cert_pem.as_bytes(), key_pem.as_bytes(), &provider)?;
        Ok(ServingCertificate {
            source: Source::Memory,
            provider,
            current: Mutex::new(Current {
                key,
                stamp: None,
                checked: Instant::now(),
            }),
        })
    }

    /// A TLS acceptor presenting this certificate (TLS 1.2 and 1.3, HTTP/1.1).
    pub fn acceptor(self: Arc<Self>) -> Result<TlsAcceptor, String> {
        let provider = Arc::clone(&self.provider);
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS settings: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The certificate to present now, after reading the files again if they changed.
    fn now(&self) -> Arc<CertifiedKey> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Source::Files { cert, key } = &self.source
            && current.checked.elapsed() >= RECHECK
        {
            current.checked = Instant::now();
            let seen = stamp(cert, key);
            if current.stamp.as_ref() != Some(&seen) {
                match load_files(cert, key, &self.provider) {
                    Ok(loaded) => {
                        log::info!("serving the new certificate in {}", cert.display());
                        current.key = loaded;
                        current.stamp = Some(seen);
                    }
                    // Most likely a rotation half-way: the next check reads the pair again.
                    Err(e) => log::warn!("keeping the previous certificate: {e}"),
                }
            }
        }
        Arc::clone(&current.key)
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.now())
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let of =
        |path: &Path| std::fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len()));
    Stamp {
        cert: of(cert),
        key: of(key),
    }
}

fn read_bounded(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let fail = |e: &dyn fmt::Display| format!("cannot read the {what} {}: {e}", path.display());
    let size = std::fs::metadata(path).map_err(|e| fail(&e))?.len();
    if size > MAX_PEM_FILE {
        return Err(fail(&format!(
            "{size} bytes, more than the {MAX_PEM_FILE} a PEM file may have"
        )));
    }
    std::fs::read(path).map_err(|e| fail(&e))
}

fn load_files(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let cert_pem = read_bounded(cert, "certificate file")?;
    let key_pem = read_bounded(key, "key file")?;
    certified_key(&cert_pem, &key_pem, provider).map_err(|e| {
        format!(
            "{e} (certificate {}, key {})",
            cert.display(),
            key.display()
        )
    })
}

/// Parses a PEM chain and key and checks that they belong together.
fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no certificate".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the key is not a valid PEM private key: {e}"))?;
    let certified = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("the certificate and key do not make a pair: {e}"))?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("a certificate");
        (cert.pem(), key.serialize_pem())
    }

    fn leaf(certificate: &ServingCertificate) -> Vec<u8> {
        certificate.now().cert.first().expect("a leaf").to_vec()
    }

    #[test]
    fn a_certificate_that_changes_on_disk_is_served_after_the_next_check() {
        let dir = std::env::temp_dir().join(format!("tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
        let (cert, key) = pair("one.example");
        std::fs::write(&cert_path, &cert).expect("written");
        std::fs::write(&key_path, &key).expect("written");
        let serving = ServingCertificate::from_files(&cert_path, &key_path).expect("loads");
        let first = leaf(&serving);

        let (cert, key) = pair("two.example");
        std::fs::write(&cert_path, &cert).expect("written");
        std::fs::write(&key_path, &key).expect("written");
        assert_eq!(
            leaf(&serving),
            first,
            "not read again before the recheck time"
        );
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        let second = leaf(&serving);
        assert_ne!(second, first, "the new certificate is served");

        // A rotation caught half-way (a key that does not match) keeps the previous pair.
        let (_, other_key) = pair("three.example");
        std::fs::write(&key_path, &other_key).expect("written");
        std::thread::sleep(RECHECK + Duration::from_millis(50));
        assert_eq!(leaf(&serving), second);
        std::fs::remove_dir_all(&dir).expect("removed");
    }

    #[test]
    fn a_bad_pair_at_start_up_is_an_error_that_names_the_problem() {
        let (cert, _) = pair("a.example");
        let (_, other_key) = pair("b.example");
        let mismatch = ServingCertificate::from_pem(&cert, &other_key).expect_err("refused");
        assert!(mismatch.contains("do not make a pair"), "{mismatch}");
        let empty = ServingCertificate::from_pem("", &other_key).expect_err("refused");
        assert!(empty.contains("no certificate"), "{empty}");
        let missing =
            ServingCertificate::from_files(Path::new("/nonexistent/tls.crt"), Path::new("/x"))
                .expect_err("refused");
        assert!(missing.contains("/nonexistent/tls.crt"), "{missing}");
    }

    proptest! {
        #[test]
        fn any_bytes_as_pem_are_refused_or_accepted_without_a_panic(
            cert in proptest::collection::vec(any::<u8>(), 0..2048),
            key in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let provider = provider();
            prop_assert!(certified_key(&cert, &key, &provider).is_err());
        }
    }
}
