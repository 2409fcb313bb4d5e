//! `inject`: the mutating admission webhook that adds the tracker sidecar to opted-in pods.
//! Wires the certificate (files, or made in memory with `--self-signed`), the HTTPS listener
//! and the optional plain admin listener, and stops gracefully on SIGTERM or SIGINT.
//!
//! Injection itself needs no Kubernetes API rights: the answer is computed from the review
//! alone ([`crate::core::inject`]). Only `--self-signed` talks to the API server, once.

pub mod http;
pub mod review;
pub mod self_signed;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::inject::{Certificate, InjectConfig};
use crate::core::durations;
use crate::exit::EXIT_BAD_CONFIG;
use crate::inject::http::Injector;
use crate::listen::tls::ServingCertificate;
use crate::listen::{self, Listener, accept};
use crate::serve::wait_for_stop_signal;

/// The most connections the plain admin listener (probes, metrics) takes at once.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// A started injector: listening, serving on its own runtime.
pub struct Running {
    address: SocketAddr,
    admin_address: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    serving: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Runtime,
}

impl Running {
    /// Where the HTTPS listener is.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where the plain admin listener is, if any.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin_address
    }

    /// Stops taking connections; reviews in flight are answered within the grace period.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Serves until stopped.
    pub fn wait(self) {
        let _ = self.runtime.block_on(self.serving);
        self.runtime
            .shutdown_timeout(std::time::Duration::from_secs(1));
    }
}

/// Reads the certificate, binds the listeners and starts serving (the demo embeds this).
pub fn start(config: InjectConfig) -> Result<Running, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .thread_name("injector")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let (stop, stopped) = watch::channel(false);
    let bound = {
        let _in_runtime = runtime.enter();
        bind(&config)?
    };
    let (address, admin_address) = (bound.address, bound.admin_address);
    let serving = runtime.spawn(serve(config, bound, stopped));
    Ok(Running {
        address,
        admin_address,
        stop,
        serving,
        runtime,
    })
}

/// Runs the injector until SIGTERM or SIGINT.
pub fn run(config: InjectConfig) -> ExitCode {
    let running = match start(config) {
        Ok(running) => running,
        Err(message) => {
            log::error!("{message}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let stop = running.stop.clone();
    running.runtime.spawn(async move {
        let signal = wait_for_stop_signal().await;
        log::info!("{signal}: no new reviews; finishing those in flight");
        stop.send_replace(true);
    });
    running.wait();
    log::info!("stopped");
    ExitCode::SUCCESS
}

/// The listeners and the certificate, ready before anything is served.
struct Bound {
    injector: Arc<Injector>,
    tls: tokio_rustls::TlsAcceptor,
    webhook: TcpListener,
    admin: Option<TcpListener>,
    address: SocketAddr,
    admin_address: Option<SocketAddr>,
}

fn bind(config: &InjectConfig) -> Result<Bound, String> {
    let injector = Arc::new(Injector::new(config.sidecar.clone(), config.unfit_pods));
    let certificate = match &config.certificate {
        Certificate::Files { cert, key } => {
            injector.ready.store(true, Ordering::SeqCst);
            ServingCertificate::from_files(cert, key)?
        }
        Certificate::SelfSigned {
            dns_names,
            configuration,
            webhooks,
            kube,
        } => {
            let made = self_signed::make(dns_names)?;
            let certificate = ServingCertificate::from_pem(&made.cert_pem, &made.key_pem)?;
            let (kube, configuration, webhooks) =
                (kube.clone(), configuration.clone(), webhooks.clone());
            let ready = Arc::clone(&injector);
            tokio::spawn(async move {
                self_signed::register(&kube, &configuration, &webhooks, &made.ca_pem).await;
                ready.ready.store(true, Ordering::SeqCst);
            });
            certificate
        }
    };
    let tls = Arc::new(certificate).acceptor()?;
    let webhook = listen::bind(config.address)?;
    let admin = config.admin_address.map(listen::bind).transpose()?;
    let address = webhook.local_addr().map_err(|e| e.to_string())?;
    let admin_address = admin.as_ref().and_then(|a| a.local_addr().ok());
    if let Some(admin) = admin_address {
        log::info!("/metrics, probes (/healthz, /readyz) also on http://{admin}");
    }
    log::info!(
        "injecting {} into pods labelled pod-webhook-tracker.io/inject=true; listening on https://{address}",
        config.sidecar.image
    );
    Ok(Bound {
        injector,
        tls,
        webhook,
        admin,
        address,
        admin_address,
    })
}

async fn serve(config: InjectConfig, bound: Bound, stopped: watch::Receiver<bool>) {
    let Bound {
        injector,
        tls,
        webhook,
        admin,
        ..
    } = bound;
    let connections = GracefulShutdown::new();
    let limits = config.connections;
    let handler = {
        let injector = Arc::clone(&injector);
        move |request| http::handle(Arc::clone(&injector), request)
    };
    let serve_webhook = accept(
        &webhook,
        stopped.clone(),
        &connections,
        Listener::new(
            "webhook",
            limits.max_connections,
            limits,
            injector.connections_closed.clone(),
        )
        .with_tls(tls),
        handler.clone(),
    );
    let serve_admin = async {
        if let Some(admin) = &admin {
            let listener = Listener::new(
                "admin",
                MAX_ADMIN_CONNECTIONS,
                limits,
                injector.connections_closed.clone(),
            );
            accept(admin, stopped.clone(), &connections, listener, handler).await;
        }
    };
    tokio::join!(serve_webhook, serve_admin);
    drop((webhook, admin));
    let deadline = tokio::time::Instant::from_std(durations::instant_after(
        Instant::now(),
        config.shutdown_grace,
    ));
    if tokio::time::timeout_at(deadline, connections.shutdown())
        .await
        .is_err()
    {
        log::warn!("some reviews were still being answered after the grace period");
    }
}
