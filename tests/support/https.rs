//! HTTPS for the black-box tests: certificates made on the fly, and one request over TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// A CA and a serving certificate signed by it, written to `dir/tls.crt` and `dir/tls.key`.
pub(crate) fn write_certificate(dir: &Path, names: &[&str]) -> String {
    std::fs::create_dir_all(dir).expect("a directory");
    let ca_key = rcgen::KeyPair::generate().expect("a key");
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Names of their own: OpenSSL takes a leaf named like its issuer for a self-signed one.
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "pod-webhook-tracker test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("a CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut leaf =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("names");
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().copied().unwrap_or("tracker"),
    );
    let cert = leaf.signed_by(&key, &issuer).expect("a certificate");
    // Written beside and renamed, as a Secret volume swaps its files.
    for (name, text) in [("tls.key", key.serialize_pem()), ("tls.crt", cert.pem())] {
        let part = dir.join(format!("{name}.new"));
        std::fs::write(&part, text).expect("written");
        std::fs::rename(&part, dir.join(name)).expect("renamed");
    }
    ca_cert.pem()
}

/// A client configuration trusting `ca_pem`.
fn client_config(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("a certificate")).expect("added");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Runs `future` to its end on a runtime of its own (the tests calling these are synchronous).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// A TLS connection to `address`, trusting `ca_pem` for the name 127.0.0.1.
async fn connect(
    address: SocketAddr,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
    tokio_rustls::TlsConnector::from(Arc::new(client_config(ca_pem)))
        .connect(name, tcp)
        .await
        .expect("a handshake")
}

/// A POST with these headers whose body is only `sent` (the headers may declare more), then the
/// answer: the status and the body. For a server that refuses a body before its end — a client
/// that went on writing it could lose that answer to a reset.
pub(crate) fn post_raw(
    address: SocketAddr,
    ca_pem: &str,
    path: &str,
    headers: &[(&str, &str)],
    sent: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    block_on(async {
        let mut tls = connect(address, ca_pem).await;
        let mut head = format!("POST {path} HTTP/1.1\r\nhost: tracker\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes())
            .await
            .expect("the head is sent");
        tls.write_all(sent).await.expect("the first bytes are sent");
        tls.flush().await.expect("flushed");
        let mut answer = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let mut chunk = [0_u8; 4096];
            loop {
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut response = httparse::Response::new(&mut headers);
                if let Ok(httparse::Status::Complete(length)) = response.parse(&answer) {
                    let body_length = response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                        .unwrap_or(0);
                    if answer.len() >= length + body_length {
                        let status = response.code.expect("a status");
                        let body = String::from_utf8_lossy(&answer[length..length + body_length])
                            .into_owned();
                        return (status, body);
                    }
                }
                let n = tls.read(&mut chunk).await.expect("the answer is read");
                assert!(
                    n > 0,
                    "the connection closed before a whole answer: {answer:?}"
                );
                answer.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        read.expect("an answer within 10 s")
    })
}

/// One HTTPS request, trusting `ca_pem` for the name 127.0.0.1: the status and the body.
pub(crate) fn request(
    address: SocketAddr,
    ca_pem: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String) {
    block_on(async {
        let tls = connect(address, ca_pem).await;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP");
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "tracker");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .expect("a request");
        let response = sender.send_request(request).await.expect("an answer");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}
