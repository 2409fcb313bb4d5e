//! A test client: one HTTP/1.1 connection to the double through hyper's client, as kube's is.
#![allow(dead_code)] // Each test uses the parts it needs.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kube_double::ApiServer;
use serde_json::Value;

/// One HTTP/1.1 connection through hyper's client, kept alive across requests like a real
/// client's, on a small runtime of its own.
pub(crate) struct Connection {
    runtime: tokio::runtime::Runtime,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: Option<String>,
    /// `Warning` headers, in order.
    pub(crate) warnings: Vec<String>,
    pub(crate) body: Value,
}

impl Connection {
    pub(crate) fn open(api: &ApiServer) -> Connection {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let sender = runtime.block_on(async {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", api.port()))
                .await
                .expect("the double listens");
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("an HTTP/1.1 connection");
            tokio::spawn(connection);
            sender
        });
        Connection { runtime, sender }
    }

    pub(crate) fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
    ) -> Answer {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "kube-double")
            .header("Accept", "application/json");
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let body = Bytes::copy_from_slice(body.unwrap_or_default());
        let request = request.body(Full::new(body)).expect("a request");
        let sender = &mut self.sender;
        let (status, content_type, warnings, body) = self.runtime.block_on(async {
            let response =
                tokio::time::timeout(Duration::from_secs(20), sender.send_request(request))
                    .await
                    .expect("answered in time")
                    .expect("an answer");
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let warnings = response
                .headers()
                .get_all("warning")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .map(str::to_owned)
                .collect();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("a body")
                .to_bytes();
            (status, content_type, warnings, body)
        });
        let body = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&body).into_owned()));
        Answer {
            status,
            content_type,
            warnings,
            body,
        }
    }
}
