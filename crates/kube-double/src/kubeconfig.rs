//! Kubeconfig files that point a client (or a binary under test) at the double.

use base64::Engine as _;
use serde_json::{Value, json};

/// How a kubeconfig's user authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A bearer token (see [`crate::ApiServer::add_token`]).
    Token(String),
    /// A user name and password (see [`crate::ApiServer::add_basic_auth`]).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// A client certificate and its key, PEM (see [`crate::ApiServer::issue_client_cert`]).
    ClientCert {
        /// The certificate, PEM.
        cert_pem: String,
        /// The private key, PEM.
        key_pem: String,
    },
    /// No credentials at all (every request is then answered 401).
    None,
}

impl Credentials {
    /// [`Credentials::Token`].
    pub fn token(token: impl Into<String>) -> Credentials {
        Credentials::Token(token.into())
    }

    /// [`Credentials::Basic`].
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    /// [`Credentials::ClientCert`], from the pair [`crate::ApiServer::issue_client_cert`] returns.
    pub fn client_cert((cert_pem, key_pem): (String, String)) -> Credentials {
        Credentials::ClientCert { cert_pem, key_pem }
    }
}

/// A kubeconfig with one cluster, one user and one context (the current one).
pub(crate) fn build(
    server: &str,
    ca_pem: Option<&str>,
    credentials: &Credentials,
    namespace: &str,
) -> Value {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let mut cluster = json!({"server": server});
    if let Some(ca) = ca_pem {
        cluster["certificate-authority-data"] = Value::from(b64(ca));
    }
    let user = match credentials {
        Credentials::Token(token) => json!({"token": token}),
        Credentials::Basic { username, password } => {
            json!({"username": username, "password": password})
        }
        Credentials::ClientCert { cert_pem, key_pem } => {
            json!({"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)})
        }
        Credentials::None => json!({}),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kube-double", "cluster": cluster}],
        "users": [{"name": "kube-double-user", "user": user}],
        "contexts": [{"name": "kube-double", "context": {"cluster": "kube-double", "user": "kube-double-user", "namespace": namespace}}],
        "current-context": "kube-double",
        "preferences": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_carries_server_ca_credentials_and_namespace() {
        let config = build(
            "https://127.0.0.1:1",
            Some("PEM"),
            &Credentials::token("tok"),
            "jobs",
        );
        assert_eq!(
            config["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:1"
        );
        assert_eq!(
            config["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(config["users"][0]["user"], json!({"token": "tok"}));
        assert_eq!(config["contexts"][0]["context"]["namespace"], "jobs");
        assert_eq!(config["current-context"], "kube-double");
        let plain = build(
            "http://127.0.0.1:1",
            None,
            &Credentials::basic("a", "b"),
            "default",
        );
        assert!(
            plain["clusters"][0]["cluster"]
                .get("certificate-authority-data")
                .is_none()
        );
        assert_eq!(
            plain["users"][0]["user"],
            json!({"username": "a", "password": "b"})
        );
    }
}
