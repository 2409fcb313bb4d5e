//! `serve`'s listeners: the webhook address and the admin address (probes, metrics, status),
//! and the graceful stop: the listeners close at once, every connection finishes the request it
//! is serving, and calls in flight are waited for up to the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::core::durations;
use crate::listen::{self, ConnectionLimits, Listener, accept};
use crate::serve::app::App;
use crate::serve::http;
use crate::serve::in_flight::InFlight;

/// The bound webhook server, not yet serving.
pub struct Server {
    webhook: TcpListener,
    admin: Option<TcpListener>,
    app: Arc<App>,
    in_flight: Arc<InFlight>,
    stop: Arc<watch::Sender<bool>>,
    limits: ConnectionLimits,
    /// The webhook address's TLS; the admin address stays plain HTTP (probes, in the pod).
    tls: Option<TlsAcceptor>,
}

/// Stops a running [`Server`] from any thread (the signal handler, a test, the demo).
#[derive(Clone)]
pub struct StopHandle {
    stop: Arc<watch::Sender<bool>>,
}

impl StopHandle {
    /// Stops taking connections; calls in flight are still answered.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

impl Server {
    /// Binds the webhook address, and the admin address (probes, metrics, status) if given.
    ///
    /// Binding happens here, before the server runs, so that a taken port is reported at
    /// start-up and the address is known (port 0 picks one). Call it within the runtime that
    /// will serve (`Runtime::enter`): the listeners are registered with it.
    pub fn bind(
        address: SocketAddr,
        admin: Option<SocketAddr>,
        app: App,
        limits: ConnectionLimits,
        tls: Option<TlsAcceptor>,
    ) -> Result<Server, String> {
        Ok(Server {
            webhook: listen::bind(address)?,
            admin: admin.map(listen::bind).transpose()?,
            app: Arc::new(app),
            in_flight: Arc::new(InFlight::default()),
            stop: Arc::new(watch::Sender::new(false)),
            limits,
            tls,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.webhook.local_addr().ok()
    }

    /// The admin address actually bound, if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref()?.local_addr().ok()
    }

    /// A handle that stops this server.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            stop: Arc::clone(&self.stop),
        }
    }

    /// Serves until stopped, then lets open connections finish their requests and waits up to
    /// `grace` for calls in flight; returns how many were still unanswered when it ended.
    /// Runs on the tracker's runtime.
    pub async fn run(self, grace: Duration) -> usize {
        let connections = GracefulShutdown::new();
        let (webhook, admin) = (self.webhook, self.admin);
        let (app, in_flight) = (Arc::clone(&self.app), Arc::clone(&self.in_flight));
        let webhook_handler =
            move |request| http::handle(Arc::clone(&app), Arc::clone(&in_flight), request);
        let limits = self.limits;
        let metrics = Arc::clone(&self.app.metrics);
        let serve_webhook = accept(
            &webhook,
            self.stop.subscribe(),
            &connections,
            {
                let listener = Listener::new(
                    "webhook",
                    limits.max_connections,
                    limits,
                    metrics.connections_closed.clone(),
                )
                .with_panic_answer(http::internal_error);
                match self.tls {
                    Some(tls) => listener.with_tls(tls),
                    None => listener,
                }
            },
            webhook_handler,
        );
        let app = Arc::clone(&self.app);
        let admin_handler = move |request| http::handle_admin(Arc::clone(&app), request);
        let serve_admin = async {
            if let Some(admin) = &admin {
                let listener = Listener::new(
                    "admin",
                    limits.max_admin_connections,
                    limits,
                    metrics.connections_closed.clone(),
                )
                .with_panic_answer(http::internal_error);
                accept(
                    admin,
                    self.stop.subscribe(),
                    &connections,
                    listener,
                    admin_handler,
                )
                .await;
            }
        };
        tokio::join!(serve_webhook, serve_admin);
        // No new connections from here on.
        drop((webhook, admin));
        let deadline =
            tokio::time::Instant::from_std(durations::instant_after(Instant::now(), grace));
        // Each connection finishes the request it is serving; idle ones close at once.
        let _ = tokio::time::timeout_at(deadline, connections.shutdown()).await;
        // A call whose caller hung up is still in flight after its connection has ended.
        let rest = deadline.saturating_duration_since(tokio::time::Instant::now());
        let left = self.in_flight.wait_idle(rest).await;
        if left > 0 {
            log::warn!(
                "{left} call(s) still unanswered after the {}s grace period",
                grace.as_secs()
            );
        }
        left
    }
}
