//! Who may call `serve` and how calls travel: `--authenticate`, `--token-audience`,
//! `--allowed-callers`, and TLS for the webhook address (`--tls-cert-file`, `--tls-key-file`).

use std::path::PathBuf;

use crate::cli::ServeArgs;
use crate::config::flags::invalid;
use crate::core::callers::{AllowedCallers, AuthSettings};
use crate::error::{Error, Result};

/// The longest `--token-audience`.
const MAX_AUDIENCE: usize = 256;

/// `--authenticate` and its companions, validated; `None`: anyone may call.
pub(super) fn authentication(args: &ServeArgs, standalone: bool) -> Result<Option<AuthSettings>> {
    match args.authenticate.trim() {
        // Empty: a ServeArgs built in code rather than parsed (argh's default is "none").
        "none" | "" => {
            if !args.allowed_callers.is_empty() {
                return Err(Error::Config(
                    "--allowed-callers needs --authenticate=serviceaccount: without it, anyone may call".to_owned(),
                ));
            }
            Ok(None)
        }
        "serviceaccount" => {
            if !standalone {
                return Err(invalid(
                    "--authenticate",
                    &args.authenticate,
                    "only the standalone service checks callers; a sidecar listens on its pod's loopback, which only the pod reaches",
                ));
            }
            let audience = args.token_audience.trim();
            if audience.is_empty()
                || audience.len() > MAX_AUDIENCE
                || audience
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(
                    "--token-audience",
                    &args.token_audience,
                    &format!("expected a name without spaces, at most {MAX_AUDIENCE} bytes"),
                ));
            }
            let allowed = AllowedCallers::parse(&args.allowed_callers)
                .map_err(|why| Error::Config(format!("invalid --allowed-callers: {why}")))?;
            Ok(Some(AuthSettings {
                audience: audience.to_owned(),
                allowed,
            }))
        }
        other => Err(invalid(
            "--authenticate",
            other,
            "expected none or serviceaccount",
        )),
    }
}

/// `--tls-cert-file` and `--tls-key-file`, both or neither (read at start-up, in `serve`).
pub(super) fn tls_files(args: &ServeArgs) -> Result<Option<(PathBuf, PathBuf)>> {
    match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => Ok(Some((PathBuf::from(cert), PathBuf::from(key)))),
        (None, None) => Ok(None),
        _ => Err(Error::Config(
            "--tls-cert-file and --tls-key-file go together".to_owned(),
        )),
    }
}
