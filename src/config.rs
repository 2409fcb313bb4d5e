//! The validated settings every other module reads, built once from the command line and the
//! environment before anything starts.
//!
//! Pure apart from reading the certificate files the flags name (so that an unreadable file is
//! refused at start-up, not at the first webhook call).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use kube_labels::Selector;

use crate::api::KubeOverrides;
use crate::cli::ServeArgs;
use crate::core::count::Policy;
use crate::core::durations::{
    self, Bounds, MAX_CONNECTION_TIMEOUT, MAX_JOB_LIFETIME, MAX_KUBE_REQUEST_TIMEOUT,
    MAX_RETRY_TIMEOUT, MAX_SHUTDOWN_GRACE, MAX_SWEEP_INTERVAL, MIN_CONNECTION_TIMEOUT,
    MIN_SWEEP_INTERVAL,
};
use crate::core::jobs::Limits;
use crate::core::keys::TrackerKeys;
use crate::core::pod::PodRef;
use crate::core::target::Targeting;
use crate::error::{Error, Result};
use crate::serve::listen::{ConnectionLimits, MAX_CONNECTIONS_LIMIT};
use crate::serve::tracker::{RetryPolicy, Settings};

/// The annotation ReplicaSets read to choose which pods to delete first on scale-in.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// How long a standalone writer keeps a pod it has not heard of.
const IDLE_WRITER: Duration = Duration::from_secs(300);

/// How often a sidecar with `--release-on-restart` reads its pod again while it has jobs,
/// unless `--sweep-interval` says otherwise.
pub const DEFAULT_RESTART_CHECK: Duration = Duration::from_secs(10);

/// Where a sidecar reads its namespace when `POD_NAMESPACE` is not set.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// What the process environment says about the pod it runs in (downward API).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// `POD_NAME` (`metadata.name`).
    pub pod_name: Option<String>,
    /// `POD_NAMESPACE` (`metadata.namespace`).
    pub pod_namespace: Option<String>,
    /// The service account's namespace file, if present.
    pub service_account_namespace: Option<String>,
}

impl Environment {
    /// Reads the real process environment.
    pub fn from_process() -> Self {
        let var = |name| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Environment {
            pod_name: var("POD_NAME"),
            pod_namespace: var("POD_NAMESPACE"),
            service_account_namespace: std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE_FILE)
                .ok()
                .map(|ns| ns.trim().to_owned())
                .filter(|ns| !ns.is_empty()),
        }
    }
}

/// Every validated setting of `serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the webhook server listens.
    pub address: SocketAddr,
    /// Where the probes are served too, if set.
    pub admin_address: Option<SocketAddr>,
    /// The counting label and the annotations named after it.
    pub keys: TrackerKeys,
    /// Pods must match this selector to be counted.
    pub selector: Option<Selector>,
    /// Counting rules.
    pub policy: Policy,
    /// Sidecar or standalone, and what each may touch.
    pub targeting: Targeting,
    /// Why this mode was chosen, for the start-up log.
    pub mode_reason: String,
    /// API connection settings.
    pub kube: KubeOverrides,
    /// Time limit of one API request; `None`: no limit.
    pub request_timeout: Option<Duration>,
    /// Record busy/idle Events on pods.
    pub events: bool,
    /// How long one call may keep retrying.
    pub retry_timeout: Duration,
    /// How long in-flight calls may take after SIGTERM.
    pub shutdown_grace: Duration,
    /// The longest a keyed job may run without a renewal; `None`: no limit.
    pub max_job_duration: Option<Duration>,
    /// Annotations set while the count is above zero (`--active-annotation KEY=VALUE`, and
    /// [`POD_DELETION_COST`] with `--pod-deletion-cost`).
    pub active_annotations: Vec<(String, String)>,
    /// The lifetime of anonymous jobs (`--anonymous-job-ttl`); `None`: plain counting.
    pub anonymous_job_ttl: Option<Duration>,
    /// Sidecar: the container whose restarts release the jobs started before them.
    pub release_on_restart: Option<String>,
    /// Standalone: how often to list the pods and release expired jobs. Sidecar: how often to
    /// read its own pod again while it has jobs. `None`: never.
    pub sweep_interval: Option<Duration>,
    /// What one client may hold of the webhook listener (and the admin listener's own cap).
    pub connections: ConnectionLimits,
}

/// `--max-connections`, `--header-read-timeout` and `--idle-timeout`, validated.
fn connection_limits(args: &ServeArgs) -> Result<ConnectionLimits> {
    let flag = "--max-connections";
    let max_connections = args
        .max_connections
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_CONNECTIONS_LIMIT).contains(n))
        .ok_or_else(|| {
            invalid(
                flag,
                &args.max_connections,
                &format!("expected a number of connections from 1 to {MAX_CONNECTIONS_LIMIT}"),
            )
        })?;
    let timeout = |flag: &str, text: &str| {
        durations::parse_bounded(
            text,
            Bounds::new(MIN_CONNECTION_TIMEOUT, MAX_CONNECTION_TIMEOUT),
        )
        .map_err(|why| {
            invalid(
                flag,
                text,
                &format!("{why}; expected a duration such as 10s"),
            )
        })
    };
    Ok(ConnectionLimits {
        max_connections,
        header_read_timeout: timeout("--header-read-timeout", &args.header_read_timeout)?,
        idle_timeout: timeout("--idle-timeout", &args.idle_timeout)?,
        ..ConnectionLimits::default()
    })
}

impl Config {
    /// Validates the `serve` flags against the environment; every error names its flag.
    pub fn from_args(args: &ServeArgs, env: &Environment) -> Result<Config> {
        let keys =
            TrackerKeys::new(&args.label).map_err(|why| invalid("--label", &args.label, &why))?;
        let selector = match args
            .label_selector
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            Some(text) => Some(
                Selector::parse(text)
                    .map_err(|e| invalid("--label-selector", text, &e.to_string()))?,
            ),
            None => None,
        };
        let mut active_annotations = active_annotations(&args.active_annotation, &keys)?;
        if let Some(text) = &args.pod_deletion_cost {
            active_annotations.push(pod_deletion_cost(text, &active_annotations)?);
        }
        let max_job_duration = match args.max_job_duration.trim() {
            "" => None,
            text => parse_timeout("--max-job-duration", text, Bounds::up_to(MAX_JOB_LIFETIME))?,
        };
        let anonymous_job_ttl = parse_timeout(
            "--anonymous-job-ttl",
            &args.anonymous_job_ttl,
            Bounds::up_to(MAX_JOB_LIFETIME),
        )?;
        let (targeting, mode_reason) = targeting(args, env)?;
        let sidecar = matches!(targeting, Targeting::Sidecar { .. });
        let release_on_restart = match &args.release_on_restart {
            None => None,
            Some(name) if !sidecar => {
                return Err(invalid(
                    "--release-on-restart",
                    name,
                    "only a sidecar sees its own pod's containers restart; the standalone service releases jobs by their deadlines",
                ));
            }
            Some(name) => {
                kube_labels::validate_dns1123_label(name).map_err(|problems| {
                    invalid("--release-on-restart", name, &problems.join("; "))
                })?;
                Some(name.clone())
            }
        };
        let sweep_interval = match parse_timeout(
            "--sweep-interval",
            &args.sweep_interval,
            Bounds::new(MIN_SWEEP_INTERVAL, MAX_SWEEP_INTERVAL),
        )? {
            None if sidecar && release_on_restart.is_some() => Some(DEFAULT_RESTART_CHECK),
            interval => interval,
        };
        let default_address = match targeting {
            Targeting::Sidecar { .. } => "127.0.0.1:8080",
            Targeting::Standalone { .. } => "0.0.0.0:8080",
        };
        let address_text = args.address.as_deref().unwrap_or(default_address);
        Ok(Config {
            address: parse_address(address_text)
                .map_err(|why| invalid("--address", address_text, &why))?,
            admin_address: args
                .admin_address
                .as_deref()
                .map(|text| {
                    parse_address(text).map_err(|why| invalid("--admin-address", text, &why))
                })
                .transpose()?,
            keys,
            selector,
            policy: Policy {
                allow_negative: args.allow_negative,
                remove_on_zero: args.remove_on_zero,
            },
            targeting,
            mode_reason,
            kube: kube_overrides(args)?,
            request_timeout: parse_timeout(
                "--kube-request-timeout",
                &args.kube_request_timeout,
                Bounds::up_to(MAX_KUBE_REQUEST_TIMEOUT),
            )?,
            events: args.events,
            retry_timeout: parse_timeout(
                "--retry-timeout",
                &args.retry_timeout,
                Bounds::up_to(MAX_RETRY_TIMEOUT),
            )?
            .unwrap_or(Duration::ZERO),
            shutdown_grace: parse_timeout(
                "--shutdown-grace-period",
                &args.shutdown_grace_period,
                Bounds::up_to(MAX_SHUTDOWN_GRACE),
            )?
            .unwrap_or(Duration::ZERO),
            max_job_duration,
            active_annotations,
            anonymous_job_ttl,
            release_on_restart,
            sweep_interval,
            connections: connection_limits(args)?,
        })
    }

    /// The settings of the pods' writers ([`crate::serve::tracker`]), built from the validated
    /// flags: the one place that knows how flags become writer behaviour.
    pub fn tracker_settings(&self) -> Settings {
        let sidecar = matches!(self.targeting, Targeting::Sidecar { .. });
        Settings {
            keys: self.keys.clone(),
            selector: self.selector.clone(),
            policy: self.policy,
            retry: RetryPolicy {
                deadline: self.retry_timeout,
                ..RetryPolicy::default()
            },
            // A sidecar's one writer lives as long as the process; a standalone service
            // forgets pods it has not heard of.
            idle_writer: (!sidecar).then_some(IDLE_WRITER),
            events: self.events,
            limits: Limits {
                max_duration: self.max_job_duration,
                anonymous_ttl: self.anonymous_job_ttl,
                ..Limits::default()
            },
            active_annotations: self.active_annotations.clone(),
            release_on_restart: self.release_on_restart.clone(),
            // The standalone service sweeps by listing instead (see `crate::serve`).
            recheck: if sidecar { self.sweep_interval } else { None },
        }
    }
}

/// Parses the `--active-annotation KEY=VALUE` flags: valid annotation keys (the label-key
/// syntax), each at most once, none of them the tracker's own annotations.
fn active_annotations(flags: &[String], keys: &TrackerKeys) -> Result<Vec<(String, String)>> {
    let flag = "--active-annotation";
    let mut parsed: Vec<(String, String)> = Vec::new();
    for text in flags {
        let Some((key, value)) = text.split_once('=') else {
            return Err(invalid(
                flag,
                text,
                "expected KEY=VALUE, e.g. karpenter.sh/do-not-disrupt=true",
            ));
        };
        if let Err(problems) = kube_labels::validate_label_key(key) {
            return Err(invalid(flag, text, &problems.join("; ")));
        }
        if keys.is_own_annotation(key) {
            return Err(invalid(
                flag,
                text,
                "the tracker keeps this annotation itself",
            ));
        }
        if parsed.iter().any(|(seen, _)| seen == key) {
            return Err(invalid(flag, text, "this key is given twice"));
        }
        parsed.push((key.to_owned(), value.to_owned()));
    }
    Ok(parsed)
}

/// `--pod-deletion-cost N`: the busy value of [`POD_DELETION_COST`], an int32 as the API
/// server requires, and not also given as an `--active-annotation`.
fn pod_deletion_cost(text: &str, active: &[(String, String)]) -> Result<(String, String)> {
    let flag = "--pod-deletion-cost";
    let cost: i32 = text.trim().parse().map_err(|_| {
        invalid(
            flag,
            text,
            "expected an integer from -2147483648 to 2147483647, e.g. 10000",
        )
    })?;
    if active.iter().any(|(key, _)| key == POD_DELETION_COST) {
        return Err(invalid(
            flag,
            text,
            "--active-annotation sets controller.kubernetes.io/pod-deletion-cost already; give one of them",
        ));
    }
    Ok((POD_DELETION_COST.to_owned(), cost.to_string()))
}

fn invalid(flag: &str, value: &str, why: &str) -> Error {
    Error::Config(format!("invalid value {value:?} for {flag}: {why}"))
}

/// Sidecar when the downward API names the pod (and `--standalone` is off); otherwise the
/// original's central service, so that its deployments keep working without a new flag.
fn targeting(args: &ServeArgs, env: &Environment) -> Result<(Targeting, String)> {
    let default_namespace = args
        .namespace
        .clone()
        .or_else(|| args.kube_namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    check_namespace("--namespace", &default_namespace)?;
    let allowed: Vec<String> = args
        .allowed_namespaces
        .iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|ns| !ns.is_empty())
        .map(str::to_owned)
        .collect();
    for ns in &allowed {
        check_namespace("--allowed-namespaces", ns)?;
    }
    let standalone = |reason: &str| {
        let allowed_namespaces = (!allowed.is_empty()).then(|| allowed.clone());
        (
            Targeting::Standalone {
                default_namespace: default_namespace.clone(),
                allowed_namespaces,
            },
            reason.to_owned(),
        )
    };
    if args.standalone {
        return Ok(standalone("standalone mode: --standalone is set"));
    }
    let Some(name) = env.pod_name.clone() else {
        return Ok(standalone(
            "standalone mode: POD_NAME is not set, so callers name the pod with ?pod_name=",
        ));
    };
    if let Err(problems) = kube_labels::validate_dns1123_subdomain(&name) {
        return Err(invalid(
            "POD_NAME (environment)",
            &name,
            &problems.join("; "),
        ));
    }
    let (namespace, source) = match (&env.pod_namespace, &env.service_account_namespace) {
        (Some(ns), _) => (ns.clone(), "POD_NAMESPACE"),
        (None, Some(ns)) => (ns.clone(), SERVICE_ACCOUNT_NAMESPACE_FILE),
        (None, None) => {
            return Err(Error::Config(format!(
                "POD_NAME is set ({name}) but the pod's namespace is unknown: set POD_NAMESPACE from the downward \
                 API (fieldRef metadata.namespace), mount the service account token, or pass --standalone"
            )));
        }
    };
    check_namespace(source, &namespace)?;
    let own = PodRef::new(namespace, name);
    let reason = format!(
        "sidecar mode: tracking own pod {own} (name from POD_NAME, namespace from {source})"
    );
    Ok((Targeting::Sidecar { own }, reason))
}

fn check_namespace(source: &str, ns: &str) -> Result<()> {
    kube_labels::validate_dns1123_label(ns)
        .map_err(|problems| invalid(source, ns, &problems.join("; ")))
}

/// Parses `host:port`, Go's `:port` (every interface) and `localhost:port`.
fn parse_address(text: &str) -> std::result::Result<SocketAddr, String> {
    let with_host = if text.starts_with(':') {
        format!("0.0.0.0{text}")
    } else {
        text.to_owned()
    };
    if let Ok(address) = with_host.parse::<SocketAddr>() {
        return Ok(address);
    }
    match with_host.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => with_host
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve it: {e}"))?
            .next()
            .ok_or_else(|| "it resolves to no address".to_owned()),
        _ => Err("expected host:port, e.g. 0.0.0.0:8080, 127.0.0.1:8080 or :8080".to_owned()),
    }
}

/// `0` is "off" (no limit); otherwise a duration such as `500ms`, `30s`, `2m`, `1h30m` within
/// `bounds` (see [`crate::core::durations`] for each flag's limits).
fn parse_timeout(flag: &str, text: &str, bounds: Bounds) -> Result<Option<Duration>> {
    durations::parse_flag(text, bounds).map_err(|why| {
        invalid(
            flag,
            text,
            &format!("{why}; expected 0 or a duration such as 30s, 2m, 1h"),
        )
    })
}

fn kube_overrides(args: &ServeArgs) -> Result<KubeOverrides> {
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
fn pem_certificates(pem: &str) -> std::result::Result<Vec<Vec<u8>>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: impl FnOnce(&mut ServeArgs)) -> ServeArgs {
        let mut args = ServeArgs {
            label: "active-jobs".to_owned(),
            kube_request_timeout: "0".to_owned(),
            remove_on_zero: true,
            shutdown_grace_period: "30s".to_owned(),
            retry_timeout: "10s".to_owned(),
            max_job_duration: "0".to_owned(),
            anonymous_job_ttl: "0".to_owned(),
            sweep_interval: "0".to_owned(),
            max_connections: "1024".to_owned(),
            header_read_timeout: "10s".to_owned(),
            idle_timeout: "60s".to_owned(),
            ..ServeArgs::default()
        };
        extra(&mut args);
        args
    }

    fn config(extra: impl FnOnce(&mut ServeArgs)) -> Result<Config> {
        Config::from_args(&args(extra), &Environment::default())
    }

    fn config_error(extra: impl FnOnce(&mut ServeArgs)) -> String {
        config(extra).expect_err("refused").to_string()
    }

    #[test]
    fn active_annotations_take_key_value_pairs_and_refuse_the_rest() {
        let config = config(|a| {
            a.active_annotation = vec![
                "karpenter.sh/do-not-disrupt=true".into(),
                "cluster-autoscaler.kubernetes.io/safe-to-evict=false".into(),
            ]
        })
        .expect("valid");
        assert_eq!(
            config.active_annotations,
            vec![
                ("karpenter.sh/do-not-disrupt".to_owned(), "true".to_owned()),
                (
                    "cluster-autoscaler.kubernetes.io/safe-to-evict".to_owned(),
                    "false".to_owned()
                ),
            ]
        );
        for bad in ["no-value", "bad key=1", "active-jobs-jobs=x"] {
            let error = config_error(|a| a.active_annotation = vec![bad.into()]);
            assert!(error.contains("--active-annotation"), "{bad}: {error}");
        }
        let twice = config_error(|a| a.active_annotation = vec!["a=1".into(), "a=2".into()]);
        assert!(twice.contains("twice"), "{twice}");
    }

    #[test]
    fn the_maximum_job_duration_is_off_by_default_and_takes_go_durations() {
        assert_eq!(config(|_| {}).expect("valid").max_job_duration, None);
        assert_eq!(
            config(|a| a.max_job_duration = "6h".into())
                .expect("valid")
                .max_job_duration,
            Some(Duration::from_secs(6 * 3600))
        );
        let error = config_error(|a| a.max_job_duration = "soon".into());
        assert!(error.contains("--max-job-duration"), "{error}");
    }

    #[test]
    fn the_pod_deletion_cost_is_an_active_annotation_with_an_int32_value() {
        let config = config(|a| a.pod_deletion_cost = Some("10000".into())).expect("valid");
        assert_eq!(
            config.active_annotations,
            vec![(POD_DELETION_COST.to_owned(), "10000".to_owned())]
        );
        for bad in ["lots", "3000000000", ""] {
            let error = config_error(|a| a.pod_deletion_cost = Some(bad.into()));
            assert!(error.contains("--pod-deletion-cost"), "{bad}: {error}");
        }
        let twice = config_error(|a| {
            a.pod_deletion_cost = Some("1".into());
            a.active_annotation = vec![format!("{POD_DELETION_COST}=5")];
        });
        assert!(twice.contains("one of them"), "{twice}");
    }

    #[test]
    fn job_lifetimes_restarts_and_sweeps_are_off_by_default() {
        let config = config(|_| {}).expect("valid");
        assert_eq!(config.anonymous_job_ttl, None);
        assert_eq!(config.release_on_restart, None);
        assert_eq!(config.sweep_interval, None);
        let config = config_standalone_sweep();
        assert_eq!(config.sweep_interval, Some(Duration::from_secs(30)));
        let error = config_error(|a| a.anonymous_job_ttl = "soon".into());
        assert!(error.contains("--anonymous-job-ttl"), "{error}");
    }

    fn config_standalone_sweep() -> Config {
        config(|a| a.sweep_interval = "30s".into()).expect("valid")
    }

    #[test]
    fn release_on_restart_is_for_a_sidecar_and_checks_every_ten_seconds_by_default() {
        let error = config_error(|a| a.release_on_restart = Some("main".into()));
        assert!(error.contains("--release-on-restart"), "{error}");
        let env = Environment {
            pod_name: Some("job-1".into()),
            pod_namespace: Some("jobs".into()),
            ..Default::default()
        };
        let sidecar = |extra: fn(&mut ServeArgs)| Config::from_args(&args(extra), &env);
        let config = sidecar(|a| a.release_on_restart = Some("main".into())).expect("valid");
        assert_eq!(config.release_on_restart.as_deref(), Some("main"));
        assert_eq!(config.sweep_interval, Some(DEFAULT_RESTART_CHECK));
        let config = sidecar(|a| {
            a.release_on_restart = Some("main".into());
            a.sweep_interval = "2s".into();
        })
        .expect("valid");
        assert_eq!(config.sweep_interval, Some(Duration::from_secs(2)));
        let error = sidecar(|a| a.release_on_restart = Some("Not_A_Name".into()))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("--release-on-restart"), "{error}");
    }

    #[test]
    fn defaults_match_the_original() {
        let config = config(|_| {}).expect("valid");
        assert_eq!(config.address, "0.0.0.0:8080".parse().expect("address"));
        assert_eq!(config.keys.label, "active-jobs");
        assert_eq!(
            config.policy,
            Policy {
                allow_negative: false,
                remove_on_zero: true
            }
        );
        assert_eq!(
            config.targeting,
            Targeting::Standalone {
                default_namespace: "default".to_owned(),
                allowed_namespaces: None
            }
        );
        assert_eq!(config.request_timeout, None);
        assert_eq!(config.shutdown_grace, Duration::from_secs(30));
    }

    #[test]
    fn an_invalid_label_key_is_refused_naming_the_flag() {
        let err = config_error(|a| a.label = "bad key!".to_owned());
        assert!(err.contains("--label") && err.contains("bad key!"), "{err}");
    }

    #[test]
    fn a_prefixed_label_key_is_accepted() {
        let config = config(|a| a.label = "example.com/active-jobs".to_owned()).expect("valid");
        assert_eq!(
            config.keys.marker_annotation,
            "example.com/active-jobs-writes"
        );
    }

    #[test]
    fn a_selector_that_does_not_parse_is_refused_naming_the_flag() {
        let err = config_error(|a| a.label_selector = Some("app in (worker".to_owned()));
        assert!(
            err.contains("--label-selector") && err.contains("app in (worker"),
            "{err}"
        );
    }

    #[test]
    fn an_address_that_does_not_parse_is_refused() {
        for bad in ["8080", "localhost", "1.2.3.4:99999", "::::"] {
            let err = config_error(|a| a.address = Some(bad.to_owned()));
            assert!(err.contains("--address"), "{bad}: {err}");
        }
    }

    #[test]
    fn go_style_addresses_are_accepted() {
        assert_eq!(
            config(|a| a.address = Some(":9090".to_owned()))
                .expect("valid")
                .address
                .port(),
            9090
        );
        assert!(config(|a| a.address = Some("localhost:9090".to_owned())).is_ok());
        assert!(config(|a| a.address = Some("[::1]:9090".to_owned())).is_ok());
    }

    #[test]
    fn a_bad_duration_is_refused_naming_the_flag() {
        let err = config_error(|a| a.kube_request_timeout = "soon".to_owned());
        assert!(
            err.contains("--kube-request-timeout") && err.contains("soon"),
            "{err}"
        );
    }

    #[test]
    fn every_duration_flag_is_bounded_and_the_error_names_the_flag_and_the_limit() {
        type Set = fn(&mut ServeArgs, String);
        let flags: [(&str, Set, &str); 7] = [
            (
                "--kube-request-timeout",
                |a, v| a.kube_request_timeout = v,
                "1day",
            ),
            ("--retry-timeout", |a, v| a.retry_timeout = v, "1h"),
            (
                "--shutdown-grace-period",
                |a, v| a.shutdown_grace_period = v,
                "1day",
            ),
            ("--sweep-interval", |a, v| a.sweep_interval = v, "1day"),
            ("--max-job-duration", |a, v| a.max_job_duration = v, "1year"),
            (
                "--anonymous-job-ttl",
                |a, v| a.anonymous_job_ttl = v,
                "1year",
            ),
            (
                "--header-read-timeout",
                |a, v| a.header_read_timeout = v,
                "1h",
            ),
        ];
        for (flag, set, limit) in flags {
            for huge in ["10000y", "18446744073709551615", "99999999999999999999999d"] {
                let error = config_error(|a| set(a, huge.to_owned()));
                assert!(error.contains(flag), "{flag} {huge}: {error}");
                if huge == "10000y" {
                    assert!(
                        error.contains(&format!("at most {limit}")),
                        "{flag}: {error}"
                    );
                }
            }
        }
        let error = config_error(|a| a.sweep_interval = "10ms".to_owned());
        assert!(error.contains("at least 100ms"), "{error}");
        let error = config_error(|a| a.idle_timeout = "0".to_owned());
        assert!(error.contains("--idle-timeout"), "{error}");
    }

    #[test]
    fn connection_limits_have_sane_defaults_and_bounds() {
        let defaults = config(|_| {}).expect("valid");
        assert_eq!(defaults.connections, ConnectionLimits::default());
        assert_eq!(defaults.connections.max_connections, 1024);
        for bad in ["0", "-1", "65537", "many", ""] {
            let error = config_error(|a| a.max_connections = bad.to_owned());
            assert!(error.contains("--max-connections"), "{bad}: {error}");
        }
        let chosen = config(|a| {
            a.max_connections = "8".to_owned();
            a.header_read_timeout = "2s".to_owned();
            a.idle_timeout = "5s".to_owned();
        })
        .expect("valid");
        assert_eq!(chosen.connections.max_connections, 8);
        assert_eq!(
            chosen.connections.header_read_timeout,
            Duration::from_secs(2)
        );
        assert_eq!(chosen.connections.idle_timeout, Duration::from_secs(5));
    }

    #[test]
    fn go_durations_are_accepted() {
        for (text, expected) in [("1s", 1), ("2m", 120), ("3h", 10800), ("1m30s", 90)] {
            let config = config(|a| a.kube_request_timeout = text.to_owned()).expect(text);
            assert_eq!(
                config.request_timeout,
                Some(Duration::from_secs(expected)),
                "{text}"
            );
        }
    }

    #[test]
    fn unreadable_certificate_files_are_refused_naming_the_flag() {
        let err =
            config_error(|a| a.kube_certificate_authority = Some("/no/such/ca.pem".to_owned()));
        assert!(err.contains("--kube-certificate-authority"), "{err}");
        let err = config_error(|a| {
            a.kube_client_certificate = Some("/no/such/cert.pem".to_owned());
            a.kube_client_key = Some("/no/such/key.pem".to_owned());
        });
        assert!(err.contains("--kube-client-certificate"), "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("pwt-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate").expect("written");
        let err = config_error(|a| a.kube_certificate_authority = Some(path.display().to_string()));
        assert!(
            err.contains("--kube-certificate-authority") && err.contains("no PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn namespace_precedence_is_flag_then_short_flag_then_default() {
        let ns = |c: Config| match c.targeting {
            Targeting::Standalone {
                default_namespace, ..
            } => default_namespace,
            other => panic!("{other:?}"),
        };
        assert_eq!(ns(config(|_| {}).expect("valid")), "default");
        assert_eq!(
            ns(config(|a| a.kube_namespace = Some("short".to_owned())).expect("valid")),
            "short"
        );
        assert_eq!(
            ns(config(|a| {
                a.kube_namespace = Some("short".to_owned());
                a.namespace = Some("long".to_owned());
            })
            .expect("valid")),
            "long"
        );
    }

    #[test]
    fn pod_name_in_the_environment_selects_sidecar_mode_on_loopback() {
        let env = Environment {
            pod_name: Some("job-1".into()),
            pod_namespace: Some("jobs".into()),
            ..Default::default()
        };
        let config = Config::from_args(&args(|_| {}), &env).expect("valid");
        assert_eq!(
            config.targeting,
            Targeting::Sidecar {
                own: PodRef::new("jobs", "job-1")
            }
        );
        assert_eq!(config.address, "127.0.0.1:8080".parse().expect("address"));
        assert!(config.mode_reason.contains("POD_NAMESPACE"));
    }

    #[test]
    fn the_service_account_namespace_is_the_fallback() {
        let env = Environment {
            pod_name: Some("job-1".into()),
            service_account_namespace: Some("batch".into()),
            ..Default::default()
        };
        let config = Config::from_args(&args(|_| {}), &env).expect("valid");
        assert_eq!(
            config.targeting,
            Targeting::Sidecar {
                own: PodRef::new("batch", "job-1")
            }
        );
    }

    #[test]
    fn a_sidecar_without_a_namespace_is_refused_with_advice() {
        let env = Environment {
            pod_name: Some("job-1".into()),
            ..Default::default()
        };
        let err = Config::from_args(&args(|_| {}), &env)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("POD_NAMESPACE"), "{err}");
    }

    #[test]
    fn the_standalone_flag_wins_over_the_environment() {
        let env = Environment {
            pod_name: Some("svc-0".into()),
            pod_namespace: Some("ops".into()),
            ..Default::default()
        };
        let config = Config::from_args(&args(|a| a.standalone = true), &env).expect("valid");
        assert!(matches!(config.targeting, Targeting::Standalone { .. }));
        assert_eq!(config.address.port(), 8080);
    }

    #[test]
    fn allowed_namespaces_take_lists_and_repeats() {
        let config =
            config(|a| a.allowed_namespaces = vec!["a,b".into(), "c".into()]).expect("valid");
        let Targeting::Standalone {
            allowed_namespaces, ..
        } = config.targeting
        else {
            panic!("standalone")
        };
        assert_eq!(
            allowed_namespaces,
            Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
        );
        let err = config_error(|a| a.allowed_namespaces = vec!["Bad_NS".into()]);
        assert!(err.contains("--allowed-namespaces"), "{err}");
    }

    #[test]
    fn client_certificate_and_key_go_together() {
        let dir = std::env::temp_dir().join(format!("pwt-config-pair-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert = dir.join("cert.pem");
        std::fs::write(&cert, "x").expect("written");
        let err = config_error(|a| a.kube_client_certificate = Some(cert.display().to_string()));
        assert!(err.contains("--kube-client-key"), "{err}");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let config = config(|a| {
            a.kube_token = Some("s3cr3t-token".into());
            a.kube_password = Some("s3cr3t-pass".into());
        })
        .expect("valid");
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }
}
