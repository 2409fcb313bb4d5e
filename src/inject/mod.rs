//! `inject`: the mutating admission webhook that adds the tracker sidecar to opted-in pods.
//! Wires the certificate (files, or made in memory with `--self-signed`), the HTTPS listener
//! and the optional plain admin listener, and stops gracefully on SIGTERM or SIGINT.
//!
//! Injection itself needs no Kubernetes API rights: the answer is computed from the review
//! alone ([`crate::core::inject`]). Only `--self-signed` talks to the API server, once.

pub mod http;
pub mod review;
pub mod self_signed;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;

use crate::config::inject::{Certificate, InjectConfig};
use crate::core::durations;
use crate::exit::{EXIT_BAD_CONFIG, EXIT_FAILURE};
use crate::inject::http::Injector;
use crate::listen::tls::ServingCertificate;
use crate::listen::{self, Listener, accept};
use crate::serve::wait_for_stop_signal;

/// The most connections the plain admin listener (probes, metrics) takes at once.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Runs the injector until SIGTERM or SIGINT.
pub fn run(config: InjectConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .thread_name("injector")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(message) => {
            log::error!("{message}");
            ExitCode::from(EXIT_BAD_CONFIG)
        }
    }
}

async fn serve(config: InjectConfig) -> Result<(), String> {
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
    if let Some(address) = admin.as_ref().and_then(|a| a.local_addr().ok()) {
        log::info!("/metrics, probes (/healthz, /readyz) also on http://{address}");
    }
    let address = webhook.local_addr().map_err(|e| e.to_string())?;
    log::info!(
        "injecting {} into pods labelled pod-webhook-tracker.io/inject=true; listening on https://{address}",
        config.sidecar.image
    );

    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        let signal = wait_for_stop_signal().await;
        log::info!("{signal}: no new reviews; finishing those in flight");
        stop.send_replace(true);
    });
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
    Ok(())
}
