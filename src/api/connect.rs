//! Building the API client: the kubeconfig (or the in-cluster service account) first, then the
//! `--kube-*` flags on top, the way kubectl applies its flags over a kubeconfig.

use kube::config::{KubeConfigOptions, Kubeconfig};
use secrecy::SecretString;

use super::error_chain;
use crate::error::{Error, Result};

/// Connection settings from the `--kube-*` flags, applied on top of the kubeconfig or
/// in-cluster configuration (see [`crate::api::connect`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KubeOverrides {
    /// `--kubeconfig`.
    pub kubeconfig: Option<String>,
    /// `--kube-context`.
    pub context: Option<String>,
    /// `--kube-cluster`.
    pub cluster: Option<String>,
    /// `--kube-user`.
    pub user: Option<String>,
    /// `--kube-server`.
    pub server: Option<http::Uri>,
    /// `--kube-certificate-authority`, read: DER certificates.
    pub certificate_authority: Option<Vec<Vec<u8>>>,
    /// `--kube-client-certificate`: a path, checked readable.
    pub client_certificate: Option<String>,
    /// `--kube-client-key`: a path, checked readable.
    pub client_key: Option<String>,
    /// `--kube-token`.
    pub token: Option<String>,
    /// `--kube-username`.
    pub username: Option<String>,
    /// `--kube-password`.
    pub password: Option<String>,
    /// `--kube-as`.
    pub impersonate_user: Option<String>,
    /// `--kube-as-group` (repeated).
    pub impersonate_groups: Vec<String>,
    /// `--kube-as-uid`.
    pub impersonate_uid: Option<String>,
    /// `--kube-tls-server-name`.
    pub tls_server_name: Option<String>,
    /// `--kube-insecure-skip-tls-verify`.
    pub insecure_skip_tls_verify: bool,
    /// `--kube-proxy-url`.
    pub proxy_url: Option<http::Uri>,
    /// `--kube-disable-compression`.
    pub disable_compression: bool,
}

// Secrets never reach a log line, not even through `{:?}`.
impl std::fmt::Debug for KubeOverrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |set: bool| if set { "<hidden>" } else { "<none>" };
        f.debug_struct("KubeOverrides")
            .field("kubeconfig", &self.kubeconfig)
            .field("context", &self.context)
            .field("cluster", &self.cluster)
            .field("user", &self.user)
            .field("server", &self.server)
            .field(
                "certificate_authority",
                &self.certificate_authority.as_ref().map(Vec::len),
            )
            .field("client_certificate", &self.client_certificate)
            .field("client_key", &self.client_key)
            .field("token", &hidden(self.token.is_some()))
            .field("username", &self.username)
            .field("password", &hidden(self.password.is_some()))
            .field("impersonate_user", &self.impersonate_user)
            .field("impersonate_groups", &self.impersonate_groups)
            .field("impersonate_uid", &self.impersonate_uid)
            .field("tls_server_name", &self.tls_server_name)
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("proxy_url", &self.proxy_url)
            .field("disable_compression", &self.disable_compression)
            .finish()
    }
}

/// Builds the API client: `--kubeconfig`, else `KUBECONFIG` / `~/.kube/config`, else the
/// in-cluster service account; then every `--kube-*` flag on top.
pub(crate) async fn connect(overrides: &KubeOverrides) -> Result<kube::Client> {
    let mut config = load(overrides).await?;
    apply_overrides(&mut config, overrides);
    kube::Client::try_from(config)
        .map_err(|e| Error::Config(format!("cannot build the API client: {}", error_chain(&e))))
}

async fn load(overrides: &KubeOverrides) -> Result<kube::Config> {
    let options = KubeConfigOptions {
        context: overrides.context.clone(),
        cluster: overrides.cluster.clone(),
        user: overrides.user.clone(),
    };
    if let Some(path) = &overrides.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
            Error::Config(format!(
                "invalid value {path:?} for --kubeconfig: {}",
                error_chain(&e)
            ))
        })?;
        return kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| {
                Error::Config(format!(
                    "cannot use --kubeconfig {path:?}: {}",
                    error_chain(&e)
                ))
            });
    }
    let from_file = kube::Config::from_kubeconfig(&options).await;
    match from_file {
        Ok(config) => Ok(config),
        // A kubeconfig exists but the chosen context/cluster/user does not work: say so rather
        // than silently falling back to another identity.
        Err(e)
            if options.context.is_some() || options.cluster.is_some() || options.user.is_some() =>
        {
            Err(Error::Config(format!(
                "cannot use the kubeconfig: {}",
                error_chain(&e)
            )))
        }
        Err(kubeconfig_error) => match kube::Config::incluster() {
            Ok(config) => Ok(config),
            // Flags alone can describe the connection, as with kubectl --server.
            Err(_) if overrides.server.is_some() => Ok(kube::Config::new(
                overrides.server.clone().unwrap_or_default(),
            )),
            Err(in_cluster_error) => Err(Error::Config(format!(
                "no Kubernetes connection: no usable kubeconfig ({}) and not running in a cluster ({}); \
                 pass --kubeconfig or --kube-server",
                error_chain(&kubeconfig_error),
                error_chain(&in_cluster_error)
            ))),
        },
    }
}

/// Applies the `--kube-*` flags to a loaded configuration, the way kubectl's flags override a
/// kubeconfig. Also turns off kube's own retries: the tracker retries itself, knowing which
/// writes are safe to repeat.
pub(crate) fn apply_overrides(config: &mut kube::Config, o: &KubeOverrides) {
    if let Some(server) = &o.server {
        config.cluster_url = server.clone();
    }
    if let Some(certs) = &o.certificate_authority {
        config.root_cert = Some(certs.clone());
        config.root_cert_file = None;
    }
    let auth = &mut config.auth_info;
    if let (Some(cert), Some(key)) = (&o.client_certificate, &o.client_key) {
        auth.client_certificate = Some(cert.clone());
        auth.client_certificate_data = None;
        auth.client_key = Some(key.clone());
        auth.client_key_data = None;
    }
    if let Some(token) = &o.token {
        auth.token = Some(SecretString::from(token.clone()));
        auth.token_file = None;
        auth.exec = None;
        auth.auth_provider = None;
    }
    if let Some(username) = &o.username {
        auth.username = Some(username.clone());
    }
    if let Some(password) = &o.password {
        auth.password = Some(SecretString::from(password.clone()));
    }
    if let Some(user) = &o.impersonate_user {
        auth.impersonate = Some(user.clone());
    }
    if !o.impersonate_groups.is_empty() {
        auth.impersonate_groups = Some(o.impersonate_groups.clone());
    }
    if let Some(uid) = &o.impersonate_uid {
        auth.impersonate_uid = Some(uid.clone());
    }
    if let Some(name) = &o.tls_server_name {
        config.tls_server_name = Some(name.clone());
    }
    if o.insecure_skip_tls_verify {
        config.accept_invalid_certs = true;
    }
    if let Some(proxy) = &o.proxy_url {
        config.proxy_url = Some(proxy.clone());
    }
    if o.disable_compression {
        config.disable_compression = true;
    }
    config.default_retry = false;
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn base() -> kube::Config {
        let mut config = kube::Config::new("https://from-kubeconfig:6443".parse().expect("uri"));
        config.auth_info.token_file = Some("/var/run/token".to_owned());
        config.auth_info.client_certificate_data = Some("ZGF0YQ==".to_owned());
        config
    }

    #[test]
    fn no_flags_leave_the_kubeconfig_alone_except_retries() {
        let mut config = base();
        apply_overrides(&mut config, &KubeOverrides::default());
        assert_eq!(config.cluster_url, "https://from-kubeconfig:6443");
        assert_eq!(
            config.auth_info.token_file.as_deref(),
            Some("/var/run/token")
        );
        assert!(!config.default_retry);
        assert!(!config.accept_invalid_certs);
    }

    #[test]
    fn every_flag_lands_in_the_kube_config() {
        let mut config = base();
        let overrides = KubeOverrides {
            server: Some("https://flag:6443".parse().expect("uri")),
            certificate_authority: Some(vec![vec![1, 2, 3]]),
            client_certificate: Some("/c.pem".into()),
            client_key: Some("/k.pem".into()),
            token: Some("tok".into()),
            username: Some("alice".into()),
            password: Some("pw".into()),
            impersonate_user: Some("bob".into()),
            impersonate_groups: vec!["g1".into(), "g2".into()],
            impersonate_uid: Some("42".into()),
            tls_server_name: Some("api.internal".into()),
            insecure_skip_tls_verify: true,
            proxy_url: Some("http://proxy:3128".parse().expect("uri")),
            disable_compression: true,
            ..KubeOverrides::default()
        };
        apply_overrides(&mut config, &overrides);
        assert_eq!(config.cluster_url, "https://flag:6443");
        assert_eq!(config.root_cert, Some(vec![vec![1, 2, 3]]));
        let auth = &config.auth_info;
        assert_eq!(auth.client_certificate.as_deref(), Some("/c.pem"));
        assert_eq!(
            auth.client_certificate_data, None,
            "the flag's file wins over kubeconfig data"
        );
        assert_eq!(auth.client_key.as_deref(), Some("/k.pem"));
        assert_eq!(
            auth.token
                .as_ref()
                .map(|t| t.expose_secret().to_owned())
                .as_deref(),
            Some("tok")
        );
        assert_eq!(
            auth.token_file, None,
            "the flag's token wins over a token file"
        );
        assert_eq!(auth.username.as_deref(), Some("alice"));
        assert_eq!(
            auth.password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .as_deref(),
            Some("pw")
        );
        assert_eq!(auth.impersonate.as_deref(), Some("bob"));
        assert_eq!(
            auth.impersonate_groups,
            Some(vec!["g1".to_owned(), "g2".to_owned()])
        );
        assert_eq!(auth.impersonate_uid.as_deref(), Some("42"));
        assert_eq!(config.tls_server_name.as_deref(), Some("api.internal"));
        assert!(config.accept_invalid_certs);
        assert_eq!(
            config.proxy_url,
            Some("http://proxy:3128".parse().expect("uri"))
        );
        assert!(config.disable_compression);
    }
}
