//! Calling one admission webhook as kube-apiserver does: `POST URL?timeout=Ns` over TLS,
//! trusting only the webhook's `caBundle`, bounded by its `timeoutSeconds`; failures worded as
//! Go's HTTP client words them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper::header::{ACCEPT, CONTENT_TYPE};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::admission::Webhook;

/// The largest answer read from a webhook.
const MAX_ANSWER: usize = 3 * 1024 * 1024;

/// A webhook's HTTP answer.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Bytes,
}

/// Posts `review` to the webhook; the error is the part after `failed calling webhook "NAME": `.
pub(crate) async fn call(webhook: &Webhook, review: &Value) -> Result<Reply, String> {
    let url = format!("{}?timeout={}s", webhook.url, webhook.timeout_seconds);
    let post = |why: &str| format!("Post {url:?}: {why}");
    let timeout = Duration::from_secs(webhook.timeout_seconds);
    match tokio::time::timeout(timeout, exchange(webhook, &url, review)).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(why)) => Err(post(&why)),
        Err(_) => Err(post("context deadline exceeded")),
    }
}

async fn exchange(webhook: &Webhook, url: &str, review: &Value) -> Result<Reply, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("webhooks are called over https only".into());
    }
    let host = uri
        .host()
        .ok_or("no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let address = format!("{host}:{port}");
    let target = webhook
        .connect_to
        .clone()
        .unwrap_or_else(|| address.clone());
    let tcp = TcpStream::connect(&target)
        .await
        .map_err(|e| format!("dial tcp {target}: connect: {}", go_errno(&e)))?;
    let mut roots = RootCertStore::empty();
    for certificate in
        CertificateDer::pem_slice_iter(webhook.ca_bundle.as_deref().unwrap_or_default()).flatten()
    {
        let _ = roots.add(certificate);
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| {
            // Another CA's certificate, or one with the same name as the trusted CA.
            let text = e.to_string();
            if text.contains("UnknownIssuer") || text.contains("BadSignature") {
                "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                    .to_string()
            } else {
                format!("tls: {e}")
            }
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let request = Request::post(path)
        .header("host", &address)
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json, */*")
        .body(Full::new(Bytes::from(review.to_string())))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply { status, body })
}

fn go_errno(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => error.to_string(),
    }
}
