//! Plain requests to the test API server, as the cluster's administrator or as anyone with a
//! kubeconfig: blocking calls for the tests, each answer's status and JSON body as they came.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// An answer: the status code and the body (`Value::Null` when it is empty; a string when it
/// is not JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Answer {
    /// The body's `.message` (a `Status`'s words), or the empty string.
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    /// The body, after checking the status is `expected`.
    ///
    /// # Panics
    /// With the whole answer, when the status is another.
    pub fn expect(self, expected: u16, what: &str) -> Value {
        assert_eq!(self.status, expected, "{what}: {self:?}");
        self.body
    }
}

/// A client of the API server, blocking.
pub struct Api {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Api {
    /// A client with the identity and server of `kubeconfig`'s current context.
    pub fn from_kubeconfig(kubeconfig: &Path) -> Api {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let client = runtime.block_on(async {
            let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("a kubeconfig");
            let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .expect("a usable kubeconfig");
            config.read_timeout = Some(Duration::from_secs(60));
            // A test sees every answer as the server gave it: kube's own retries of 429, 503
            // and 504 (up to 15, backing off to minutes) would hide them.
            config.default_retry = false;
            kube::Client::try_from(config).expect("a client")
        });
        Api { runtime, client }
    }

    /// Sends `method path` with `body` (as `content_type`) and returns the answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> Answer {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, content_type);
        }
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let request = request.body(bytes).expect("a request");
        self.runtime.block_on(async {
            use http_body_util::BodyExt;
            let response = self
                .client
                .send(request.map(kube::client::Body::from))
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
            let status = response.status().as_u16();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|body| body.to_bytes())
                .unwrap_or_default();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            };
            Answer { status, body }
        })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None, "")
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, Some(body), "application/json")
    }

    /// `PUT path` with a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> Answer {
        self.request("PUT", path, Some(body), "application/json")
    }

    /// `PATCH path` with a JSON merge patch.
    pub fn merge_patch(&self, path: &str, patch: &Value) -> Answer {
        self.request("PATCH", path, Some(patch), "application/merge-patch+json")
    }

    /// `PATCH path` with a JSON patch.
    pub fn json_patch(&self, path: &str, patch: &Value) -> Answer {
        self.request("PATCH", path, Some(patch), "application/json-patch+json")
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Answer {
        self.request("DELETE", path, None, "")
    }
}
