//! The `--kube-*` flags as the API client's connection settings, with the files they name read
//! (and checked) at start-up.

use crate::api::KubeOverrides;
use crate::cli::ServeArgs;
use crate::error::{Error, Result};

use super::flags::invalid;

pub(super) fn kube_overrides(args: &ServeArgs) -> Result<KubeOverrides> {
    let uri = |flag: &str, value: &Option<String>| -> Result<Option<http::Uri>> {
        value
            .as_deref()
            .map(|text| {
                text.parse::<http::Uri>()
                    .map_err(|e| invalid(flag, text, &e.to_string()))
            })
            .transpose()
    };
    let read = |flag: &str, path: &Option<String>| -> Result<Option<String>> {
        path.as_deref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .map_err(|e| invalid(flag, path, &format!("cannot read the file: {e}")))
            })
            .transpose()
    };
    let certificate_authority = match read(
        "--kube-certificate-authority",
        &args.kube_certificate_authority,
    )? {
        Some(pem) => Some(pem_certificates(&pem).map_err(|why| {
            invalid(
                "--kube-certificate-authority",
                args.kube_certificate_authority.as_deref().unwrap_or(""),
                &why,
            )
        })?),
        None => None,
    };
    // kube reads the client certificate and key itself; reading them here refuses a bad path at start-up.
    read("--kube-client-certificate", &args.kube_client_certificate)?;
    read("--kube-client-key", &args.kube_client_key)?;
    if args.kube_client_certificate.is_some() != args.kube_client_key.is_some() {
        return Err(Error::Config(
            "--kube-client-certificate and --kube-client-key go together: give both or neither"
                .to_owned(),
        ));
    }
    if let Some(path) = &args.kubeconfig
        && let Err(e) = std::fs::metadata(path)
    {
        return Err(invalid(
            "--kubeconfig",
            path,
            &format!("cannot read the file: {e}"),
        ));
    }
    Ok(KubeOverrides {
        kubeconfig: args.kubeconfig.clone(),
        context: args.kube_context.clone(),
        cluster: args.kube_cluster.clone(),
        user: args.kube_user.clone(),
        server: uri("--kube-server", &args.kube_server)?,
        certificate_authority,
        client_certificate: args.kube_client_certificate.clone(),
        client_key: args.kube_client_key.clone(),
        token: args.kube_token.clone(),
        username: args.kube_username.clone(),
        password: args.kube_password.clone(),
        impersonate_user: args.kube_as.clone(),
        impersonate_groups: args.kube_as_group.clone(),
        impersonate_uid: args.kube_as_uid.clone(),
        tls_server_name: args.kube_tls_server_name.clone(),
        insecure_skip_tls_verify: args.kube_insecure_skip_tls_verify,
        proxy_url: uri("--kube-proxy-url", &args.kube_proxy_url)?,
        disable_compression: args.kube_disable_compression,
    })
}

/// The DER certificates of a PEM bundle; an empty or malformed bundle is an error.
pub(super) fn pem_certificates(pem: &str) -> std::result::Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|cert| cert.map(|der| der.to_vec()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("the file holds no PEM certificate".to_owned());
    }
    Ok(certs)
}
