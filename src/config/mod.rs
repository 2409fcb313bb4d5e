//! The validated settings every other module reads, built once from the command line and the
//! environment before anything starts.
//!
//! Pure apart from reading the certificate files the flags name (so that an unreadable file is
//! refused at start-up, not at the first webhook call).

pub mod busy;
mod flags;
pub mod inject;
mod kube_flags;
mod mode;
mod security;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use kube_labels::Selector;

use crate::api::KubeOverrides;
use crate::cli::ServeArgs;
use crate::core::callers::AuthSettings;
use crate::core::count::Policy;
use crate::core::durations::{
    Bounds, MAX_JOB_LIFETIME, MAX_KUBE_REQUEST_TIMEOUT, MAX_RETRY_TIMEOUT, MAX_SHUTDOWN_GRACE,
    MAX_SWEEP_INTERVAL, MIN_SWEEP_INTERVAL,
};
use crate::core::jobs::Limits;
use crate::core::keys::TrackerKeys;
use crate::core::target::Targeting;
use crate::error::Result;
use crate::listen::ConnectionLimits;
use crate::serve::tracker::{RetryPolicy, Settings};

/// The annotation ReplicaSets read to choose which pods to delete first on scale-in.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// How long a standalone service keeps a pod it has not heard of (`--forget-idle-pods-after`).
pub const DEFAULT_FORGET_IDLE: Duration = Duration::from_secs(300);

/// The bounds of `--forget-idle-pods-after`.
pub const FORGET_IDLE_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));

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
    /// `--sweep-page-size`: pods per LIST request of the sweep.
    pub sweep_page_size: u32,
    /// `--forget-idle-pods-after`: a standalone service forgets a pod after this long without
    /// work; `None` in a sidecar (its one pod is kept as long as it runs).
    pub forget_idle_pods_after: Option<Duration>,
    /// `--authenticate=serviceaccount`: how callers' tokens are checked; `None`: not at all.
    pub authentication: Option<AuthSettings>,
    /// The webhook address's certificate and key files (HTTPS); `None`: plain HTTP.
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

use flags::{
    active_annotations, connection_limits, invalid, parse_address, parse_timeout, pod_deletion_cost,
};
use kube_flags::kube_overrides;
use mode::targeting;

/// The largest `--sweep-page-size` (the API server caps a page near this anyway).
pub const MAX_SWEEP_PAGE: u32 = 10_000;

/// `--forget-idle-pods-after`: standalone only, within [`FORGET_IDLE_BOUNDS`].
fn forget_idle_pods_after(text: Option<&str>, sidecar: bool) -> Result<Option<Duration>> {
    let flag = "--forget-idle-pods-after";
    match text {
        None => Ok((!sidecar).then_some(DEFAULT_FORGET_IDLE)),
        Some(text) if sidecar => Err(invalid(
            flag,
            text,
            "a sidecar keeps its own pod for as long as it runs; the flag is for the standalone service",
        )),
        Some(text) => {
            let (min, max) = FORGET_IDLE_BOUNDS;
            crate::core::durations::parse_bounded(text, Bounds::new(min, max))
                .map(Some)
                .map_err(|why| {
                    invalid(
                        flag,
                        text,
                        &format!("{why}; expected a duration such as 30s, 5m, 1h"),
                    )
                })
        }
    }
}

/// `--sweep-page-size`: 1 to [`MAX_SWEEP_PAGE`]; empty (a ServeArgs built in code) is 500.
fn sweep_page_size(text: &str) -> Result<u32> {
    if text.trim().is_empty() {
        return Ok(500);
    }
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_SWEEP_PAGE).contains(n))
        .ok_or_else(|| {
            invalid(
                "--sweep-page-size",
                text,
                &format!("expected a number of pods from 1 to {MAX_SWEEP_PAGE}"),
            )
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
        let authentication = security::authentication(args, !sidecar)?;
        let tls = security::tls_files(args)?;
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
            connections: connection_limits(
                &args.max_connections,
                &args.header_read_timeout,
                &args.idle_timeout,
            )?,
            sweep_page_size: sweep_page_size(&args.sweep_page_size)?,
            forget_idle_pods_after: forget_idle_pods_after(
                args.forget_idle_pods_after.as_deref(),
                sidecar,
            )?,
            authentication,
            tls,
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
            // A sidecar keeps its one pod as long as it runs; a standalone service forgets
            // pods it has not heard of.
            idle_writer: self.forget_idle_pods_after,
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
