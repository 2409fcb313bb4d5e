//! `serve`: wires the runtime, the API client, the tracker and the webhook server together, runs
//! the sidecar's start-up check, and stops gracefully on SIGTERM or SIGINT.

pub(crate) mod app;
pub mod auth;
pub(crate) mod http;
pub(crate) mod in_flight;
pub(crate) mod query;
pub mod server;
pub(crate) mod status;
pub(crate) mod sweep;
pub(crate) mod tracker;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::api::{self, ApiFailure, PodClient};
use crate::config::Config;
use crate::core::pod::PodRef;
use crate::core::target::Targeting;
use crate::core::view::PodView;
use crate::exit::{EXIT_BAD_CONFIG, EXIT_FAILURE};
use crate::listen::tls::ServingCertificate;
use crate::metrics::Metrics;
use crate::serve::app::{App, Readiness};
use crate::serve::auth::Authenticator;
use crate::serve::server::{Server, StopHandle};
use crate::serve::sweep::Sweep;
use crate::serve::tracker::Tracker;

/// How often the sidecar repeats a failed start-up check.
const RECHECK: Duration = Duration::from_secs(10);

/// A started tracker: listening, its writers running.
pub struct Running {
    server: Server,
    runtime: tokio::runtime::Runtime,
    grace: Duration,
}

/// Why `serve` could not start, and the exit status that says so.
#[derive(Debug)]
pub struct StartError {
    /// [`EXIT_BAD_CONFIG`] or [`EXIT_FAILURE`].
    pub exit_status: u8,
    /// One line for the log.
    pub message: String,
}

impl Running {
    /// Where the webhook server listens.
    pub fn address(&self) -> Option<SocketAddr> {
        self.server.local_addr()
    }

    /// Where the probes are served too, if `--admin-address` was given.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.server.admin_addr()
    }

    /// Stops the server from another thread or task.
    pub fn stop_handle(&self) -> StopHandle {
        self.server.stop_handle()
    }

    /// Serves until stopped, then finishes calls in flight within the grace period; returns how
    /// many were still unanswered.
    pub fn wait(self) -> usize {
        let unanswered = self.runtime.block_on(self.server.run(self.grace));
        self.runtime.shutdown_timeout(Duration::from_secs(1));
        unanswered
    }
}

/// Connects to the API server, starts the writers and binds the listeners.
///
/// Used by `serve` and by programs that embed a tracker (the demo).
pub fn start(config: Config) -> Result<Running, StartError> {
    let failure = |exit_status, message: String| StartError {
        exit_status,
        message,
    };
    // A sidecar serves one pod, whose calls queue behind one writer anyway: one thread is
    // enough (tokio's current-thread runtime), and each thread costs memory (its stack, and
    // with glibc a malloc arena of its own). The standalone service serves many pods at once.
    let sidecar = matches!(config.targeting, Targeting::Sidecar { .. });
    let mut builder = if sidecar {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2);
        builder
    };
    let runtime = builder
        // Nothing runs on tokio's blocking pool but kube's rare file reads (kubeconfig, tokens).
        .max_blocking_threads(4)
        .thread_name("tracker")
        .enable_all()
        .build()
        .map_err(|e| failure(EXIT_FAILURE, format!("cannot start the async runtime: {e}")))?;
    let client = runtime
        .block_on(api::connect(&config.kube))
        .map_err(|e| failure(EXIT_BAD_CONFIG, e.to_string()))?;
    let metrics = Arc::new(Metrics::new());
    let pods = PodClient::new(client, config.request_timeout, Arc::clone(&metrics));
    let tracker = Tracker::new(
        pods.clone(),
        config.tracker_settings(),
        runtime.handle().clone(),
    );
    if let (
        Targeting::Standalone {
            default_namespace,
            allowed_namespaces,
        },
        Some(interval),
    ) = (&config.targeting, config.sweep_interval)
    {
        let sweep = Sweep {
            tracker: tracker.clone(),
            pods: pods.clone(),
            namespaces: allowed_namespaces
                .clone()
                .unwrap_or_else(|| vec![default_namespace.clone()]),
            selector: config.selector.clone(),
            jobs_annotation: config.keys.jobs_annotation.clone(),
            page_size: config.sweep_page_size,
        };
        log::info!(
            "sweeping pods in {} every {} for expired jobs, {} pods per LIST",
            sweep.namespaces.join(", "),
            humantime::format_duration(interval),
            sweep.page_size
        );
        runtime.spawn(sweep.run(interval));
    }
    let readiness = match &config.targeting {
        Targeting::Sidecar { own } => {
            let readiness = Arc::new(Readiness::not_ready(format!("checking own pod {own}")));
            runtime.spawn(check_own_pod(
                pods.clone(),
                tracker.clone(),
                own.clone(),
                Arc::clone(&readiness),
            ));
            readiness
        }
        Targeting::Standalone {
            default_namespace, ..
        } => {
            let readiness = Arc::new(Readiness::not_ready("checking the API server"));
            runtime.spawn(check_namespace_rights(
                pods.clone(),
                default_namespace.clone(),
                config.authentication.is_some(),
                Arc::clone(&readiness),
            ));
            readiness
        }
    };
    let authenticator = config.authentication.clone().map(|settings| {
        log::info!(
            "callers must send a service-account token for the audience {}; allowed to count any pod: {}",
            settings.audience,
            if settings.allowed.entries().is_empty() {
                "nobody".to_owned()
            } else {
                settings.allowed.entries().join(", ")
            }
        );
        Authenticator::new(pods.clone(), settings)
    });
    let tls = match &config.tls {
        Some((cert, key)) => Some(
            Arc::new(
                ServingCertificate::from_files(cert, key)
                    .map_err(|e| failure(EXIT_BAD_CONFIG, e))?,
            )
            .acceptor()
            .map_err(|e| failure(EXIT_BAD_CONFIG, e))?,
        ),
        None => None,
    };
    if authenticator.is_some() && tls.is_none() && !config.address.ip().is_loopback() {
        log::warn!(
            "callers' tokens arrive over plain HTTP on {}: anyone on the path can read and reuse them; \
             give --tls-cert-file and --tls-key-file",
            config.address
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let app = App {
        tracker,
        targeting: config.targeting.clone(),
        readiness,
        metrics,
        label: config.keys.label.clone(),
        authenticator,
    };
    let server = {
        let _in_runtime = runtime.enter();
        Server::bind(
            config.address,
            config.admin_address,
            app,
            config.connections,
            tls,
        )
        .map_err(|e| failure(EXIT_FAILURE, e))?
    };
    log::info!("{}", config.mode_reason);
    log::info!(
        "counting in label {} (policy: allow-negative={}, remove-on-zero={}){}",
        config.keys.label,
        config.policy.allow_negative,
        config.policy.remove_on_zero,
        config
            .selector
            .as_ref()
            .map(|s| format!(", only pods matching {s}"))
            .unwrap_or_default()
    );
    if let Some(admin) = server.admin_addr() {
        log::info!("probes (/healthz, /readyz) also on http://{admin}");
    }
    match server.local_addr() {
        Some(address) => log::info!("listening on {scheme}://{address}"),
        None => log::info!("listening on {}", config.address),
    }
    Ok(Running {
        server,
        runtime,
        grace: config.shutdown_grace,
    })
}

/// Runs the webhook server until SIGTERM or SIGINT, then stops gracefully.
pub fn run(config: Config) -> ExitCode {
    let running = match start(config) {
        Ok(running) => running,
        Err(e) => {
            log::error!("{}", e.message);
            return ExitCode::from(e.exit_status);
        }
    };
    let stop = running.stop_handle();
    let grace = running.grace;
    running.runtime.spawn(async move {
        let signal = wait_for_stop_signal().await;
        log::info!(
            "{signal}: no new calls; finishing calls in flight (up to {}s)",
            grace.as_secs()
        );
        stop.stop();
    });
    if running.wait() == 0 {
        log::info!("stopped");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

pub(crate) async fn wait_for_stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot listen for SIGTERM/SIGINT; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The sidecar serves at once but reports not ready until its own pod exists and may be
/// patched; it keeps checking, because RBAC created in the same apply can take a moment to
/// take effect. Calls made meanwhile still go to the API server, which has the last word: no
/// caller ever gets 200 for a count that was not stored.
async fn check_own_pod(pods: PodClient, tracker: Tracker, own: PodRef, readiness: Arc<Readiness>) {
    loop {
        match own_pod_problem(&pods, &own).await {
            Ok(view) => {
                // The pod was just read: the first call need not read it again.
                tracker.prime(own.clone(), view);
                readiness.set_ready();
                log::info!("own pod {own} found and patchable: ready");
                return;
            }
            Err(problem) => {
                // Readiness first: whoever reads the log line must find /readyz saying the same.
                readiness.set_problem(problem.clone());
                log::error!("not ready: {problem}");
            }
        }
        tokio::time::sleep(RECHECK).await;
    }
}

/// The standalone service is ready once the API server answers and lets it get and patch pods
/// in its default namespace; checked until it passes, then never again (a periodic check would
/// take every replica out of its Service during an API outage, when a 503 says more).
async fn check_namespace_rights(
    pods: PodClient,
    namespace: String,
    reviews_tokens: bool,
    readiness: Arc<Readiness>,
) {
    loop {
        let mut problems = Vec::new();
        for verb in ["get", "patch"] {
            match pods.may_in_namespace(verb, &namespace).await {
                Ok(true) => {}
                Ok(false) => problems.push(format!("may not {verb} pods in namespace {namespace}")),
                Err(failure) => problems.push(format!("cannot reach the API server: {failure}")),
            }
        }
        if reviews_tokens {
            match pods.may_create_token_reviews().await {
                Ok(true) => {}
                Ok(false) => problems.push(
                    "may not create tokenreviews.authentication.k8s.io, which --authenticate=serviceaccount needs (bind the ClusterRole system:auth-delegator, or one with that right)".to_owned(),
                ),
                Err(failure) => problems.push(format!("cannot reach the API server: {failure}")),
            }
        }
        problems.dedup();
        if problems.is_empty() {
            readiness.set_ready();
            log::info!(
                "the API server answers and allows get and patch on pods in {namespace}: ready"
            );
            return;
        }
        let problem = problems.join("; ");
        readiness.set_problem(problem.clone());
        log::error!("not ready: {problem}");
        tokio::time::sleep(RECHECK).await;
    }
}

/// The own pod, if it exists and may be patched; otherwise what is wrong.
async fn own_pod_problem(pods: &PodClient, own: &PodRef) -> Result<PodView, String> {
    let (view, account) = match pods.get_own(own).await {
        Ok(own_pod) => own_pod,
        Err(ApiFailure::NotFound) => {
            return Err(format!(
                "own pod {own} not found: check that POD_NAME and POD_NAMESPACE come from the downward API"
            ));
        }
        Err(ApiFailure::Refused(message)) => {
            return Err(format!(
                "may not get own pod {own}: {message}; grant verbs [get, patch] on pods"
            ));
        }
        Err(other) => return Err(format!("cannot read own pod {own}: {other:?}")),
    };
    let account = account.unwrap_or_else(|| "default".to_owned());
    match pods.may("patch", own).await {
        Ok(true) => Ok(view),
        Ok(false) => Err(format!(
            "service account {}/{account} may not patch pod {own}: grant verbs [get, patch] on pods \
             (resourceNames: [{}]) in namespace {} with a Role and RoleBinding",
            own.namespace, own.name, own.namespace
        )),
        Err(other) => Err(format!(
            "cannot check the right to patch own pod {own}: {other:?}"
        )),
    }
}
