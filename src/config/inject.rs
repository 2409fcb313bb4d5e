//! `inject`'s validated settings: the listener, its certificate, and the defaults of the
//! injected tracker, all checked before anything starts (exit status 2 otherwise).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::api::KubeOverrides;
use crate::cli::InjectArgs;
use crate::config::flags::{connection_limits, invalid, parse_address, parse_timeout};
use crate::core::durations::{Bounds, MAX_SHUTDOWN_GRACE};
use crate::core::inject::settings::Sidecar;
use crate::error::{Error, Result};
use crate::listen::ConnectionLimits;

/// The image of this very version, the default of `--sidecar-image`.
pub const OWN_IMAGE: &str = concat!(
    "ghcr.io/pod-webhook-tracker/pod-webhook-tracker:v",
    env!("CARGO_PKG_VERSION")
);
/// The webhook name in the manifests, the default of `--webhook-name`.
pub const DEFAULT_WEBHOOK: &str = "inject.pod-webhook-tracker.io";

/// Where the serving certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Certificate {
    /// PEM files, read again when they change (cert-manager, or any Secret).
    Files {
        /// `--tls-cert-file`.
        cert: PathBuf,
        /// `--tls-key-file`.
        key: PathBuf,
    },
    /// Made at start; the CA is written into the webhook configuration's caBundle.
    SelfSigned {
        /// The serving certificate's DNS names.
        dns_names: Vec<String>,
        /// The MutatingWebhookConfiguration to patch.
        configuration: String,
        /// The webhooks in it whose caBundle is set.
        webhooks: Vec<String>,
        /// How to reach the API server.
        kube: Box<KubeOverrides>,
    },
}

/// What to do with a pod the tracker cannot be added to correctly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnfitPods {
    /// Refuse the pod (`allowed: false`), saying why.
    Deny,
    /// Admit it without the tracker, with a warning saying why.
    Admit,
}

/// `inject`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectConfig {
    /// The HTTPS address.
    pub address: SocketAddr,
    /// The plain-HTTP address for probes and metrics, if any.
    pub admin_address: Option<SocketAddr>,
    /// The serving certificate.
    pub certificate: Certificate,
    /// The defaults of the injected tracker.
    pub sidecar: Sidecar,
    /// Deny or admit unfit pods.
    pub unfit_pods: UnfitPods,
    /// The listener's bounds.
    pub connections: ConnectionLimits,
    /// How long reviews in flight may finish after SIGTERM.
    pub shutdown_grace: Duration,
}

impl InjectConfig {
    /// Validates the flags; reads the certificate files only in [`crate::inject`], at start.
    pub fn from_args(args: &InjectArgs) -> Result<InjectConfig> {
        let address =
            |flag: &str, text: &str| parse_address(text).map_err(|why| invalid(flag, text, &why));
        let mut sidecar = Sidecar::defaults(
            args.sidecar_image
                .clone()
                .unwrap_or_else(|| OWN_IMAGE.to_owned()),
        );
        for (setting, flag, value) in [
            ("image", "--sidecar-image", sidecar.image.clone().as_str()),
            ("label", "--label", &args.label),
            ("port", "--tracker-port", &args.tracker_port),
            ("admin-port", "--admin-port", &args.admin_port),
            (
                "max-job-duration",
                "--max-job-duration",
                &args.max_job_duration,
            ),
            ("autoscaler", "--autoscaler", &args.autoscaler),
            ("cpu-request", "--cpu-request", &args.cpu_request),
            ("memory-request", "--memory-request", &args.memory_request),
            ("memory-limit", "--memory-limit", &args.memory_limit),
        ] {
            sidecar
                .set(setting, value)
                .map_err(|why| invalid(flag, value, &why))?;
        }
        if let Some(conflict) = sidecar.conflicts().into_iter().next() {
            return Err(Error::Config(format!(
                "the injected tracker's flags: {conflict}"
            )));
        }
        let unfit_pods = match args.unfit_pods.as_str() {
            "deny" => UnfitPods::Deny,
            "admit" => UnfitPods::Admit,
            other => return Err(invalid("--unfit-pods", other, "expected deny or admit")),
        };
        let certificate = certificate(args)?;
        Ok(InjectConfig {
            address: address("--address", &args.address)?,
            admin_address: args
                .admin_address
                .as_deref()
                .map(|text| address("--admin-address", text))
                .transpose()?,
            certificate,
            sidecar,
            unfit_pods,
            connections: connection_limits(
                &args.max_connections,
                &args.header_read_timeout,
                &args.idle_timeout,
            )?,
            shutdown_grace: parse_timeout(
                "--shutdown-grace-period",
                &args.shutdown_grace_period,
                Bounds::up_to(MAX_SHUTDOWN_GRACE),
            )?
            .unwrap_or(Duration::ZERO),
        })
    }
}

fn certificate(args: &InjectArgs) -> Result<Certificate> {
    match (&args.tls_cert_file, &args.tls_key_file, args.self_signed) {
        (Some(cert), Some(key), false) => Ok(Certificate::Files {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        }),
        (None, None, true) => {
            if args.self_signed_dns_name.is_empty() {
                return Err(Error::Config(
                    "--self-signed needs --self-signed-dns-name: the name the API server calls, e.g. pod-webhook-tracker-injector.pod-webhook-tracker.svc".to_owned(),
                ));
            }
            for name in &args.self_signed_dns_name {
                kube_labels::validate_dns1123_subdomain(name).map_err(|problems| {
                    invalid("--self-signed-dns-name", name, &problems.join("; "))
                })?;
            }
            kube_labels::validate_dns1123_subdomain(&args.webhook_configuration).map_err(
                |problems| {
                    invalid(
                        "--webhook-configuration",
                        &args.webhook_configuration,
                        &problems.join("; "),
                    )
                },
            )?;
            let webhooks = if args.webhook_name.is_empty() {
                vec![DEFAULT_WEBHOOK.to_owned()]
            } else {
                args.webhook_name.clone()
            };
            Ok(Certificate::SelfSigned {
                dns_names: args.self_signed_dns_name.clone(),
                configuration: args.webhook_configuration.clone(),
                webhooks,
                kube: Box::new(KubeOverrides {
                    kubeconfig: args.kubeconfig.clone(),
                    context: args.kube_context.clone(),
                    ..KubeOverrides::default()
                }),
            })
        }
        (_, _, true) => Err(Error::Config(
            "--self-signed makes its own certificate: leave out --tls-cert-file and --tls-key-file"
                .to_owned(),
        )),
        _ => Err(Error::Config(
            "inject serves HTTPS only (the API server calls webhooks over TLS): give --tls-cert-file and --tls-key-file, or --self-signed"
                .to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> std::result::Result<InjectConfig, String> {
        let mut argv = vec!["inject"];
        argv.extend_from_slice(extra);
        let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
        let argv = crate::cli::normalize(&argv)?;
        let cli = crate::cli::parse("pod-webhook-tracker", &argv).map_err(|e| e.output)?;
        let crate::cli::Command::Inject(args) = cli.command else {
            return Err("not inject".to_owned());
        };
        InjectConfig::from_args(&args).map_err(|e| e.to_string())
    }

    const FILES: &[&str] = &[
        "--tls-cert-file=/tls/tls.crt",
        "--tls-key-file=/tls/tls.key",
    ];

    #[test]
    fn the_defaults_are_those_of_the_sidecar_manifests() {
        let config = args(FILES).expect("valid");
        assert_eq!(config.address, "0.0.0.0:8443".parse().expect("an address"));
        assert_eq!(config.sidecar, Sidecar::defaults(OWN_IMAGE.to_owned()));
        assert_eq!(config.unfit_pods, UnfitPods::Deny);
    }

    #[test]
    fn a_certificate_or_self_signed_is_required_and_not_both() {
        let none = args(&[]).expect_err("refused");
        assert!(none.contains("--tls-cert-file"), "{none}");
        let both = args(&["--self-signed", "--tls-cert-file=a", "--tls-key-file=b"]);
        assert!(both.expect_err("refused").contains("leave out"));
        let no_name = args(&["--self-signed"]).expect_err("refused");
        assert!(no_name.contains("--self-signed-dns-name"), "{no_name}");
        let bad_name = args(&["--self-signed", "--self-signed-dns-name=Not_A_Name"]);
        assert!(
            bad_name
                .expect_err("refused")
                .contains("--self-signed-dns-name")
        );
        let ok = args(&["--self-signed", "--self-signed-dns-name=injector.ns.svc"]).expect("ok");
        let Certificate::SelfSigned { webhooks, .. } = ok.certificate else {
            panic!("self-signed");
        };
        assert_eq!(webhooks, [DEFAULT_WEBHOOK]);
    }

    #[test]
    fn each_bad_default_is_refused_naming_its_flag() {
        for (flag, expected) in [
            ("--tracker-port=0", "--tracker-port"),
            ("--admin-port=70000", "--admin-port"),
            ("--max-job-duration=2y", "--max-job-duration"),
            ("--autoscaler=keda", "--autoscaler"),
            ("--memory-limit=1MB", "--memory-limit"),
            ("--label=bad key", "--label"),
            ("--unfit-pods=maybe", "--unfit-pods"),
            ("--sidecar-image=a b", "--sidecar-image"),
            ("--tracker-port=9090", "both 9090"),
        ] {
            let mut all = FILES.to_vec();
            all.push(flag);
            let error = args(&all).expect_err(flag);
            assert!(error.contains(expected), "{flag}: {error}");
        }
    }
}
