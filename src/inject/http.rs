//! `inject`'s routes: `POST /mutate` (the review), `/healthz`, `/readyz`, `/metrics`; each
//! refusal a status with a line that names the problem, and one log line per review.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::config::inject::UnfitPods;
use crate::core::inject::settings::Sidecar;
use crate::inject::review::{self, MAX_REVIEW};
use crate::listen::{Body, ClosedConnections};

/// Reviews read and answered at once; the others wait their turn. Each may hold a body of up
/// to [`MAX_REVIEW`] and its parsed form, so this bounds the injector's memory.
pub const CONCURRENT_REVIEWS: usize = 4;

/// `outcome` of `reviews_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// injected, already-injected, ignored, denied, admitted-unfit, refused.
    pub outcome: String,
}

/// What the routes share.
pub struct Injector {
    pub(crate) sidecar: Sidecar,
    pub(crate) unfit_pods: UnfitPods,
    /// Set once the serving certificate is in place (and, self-signed, its CA is registered).
    pub(crate) ready: AtomicBool,
    reviews: Family<OutcomeLabels, Counter>,
    pub(crate) connections_closed: ClosedConnections,
    registry: Registry,
    permits: Semaphore,
}

impl Injector {
    /// The injector's state and metrics.
    pub fn new(sidecar: Sidecar, unfit_pods: UnfitPods) -> Injector {
        let mut registry = Registry::with_prefix("pod_webhook_tracker_injector");
        let reviews = Family::<OutcomeLabels, Counter>::default();
        let connections_closed = ClosedConnections::default();
        registry.register(
            "reviews",
            "Admission reviews by outcome: injected, already-injected, ignored (not a pod CREATE), denied, admitted-unfit, refused (not a valid review)",
            reviews.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections refused when full or cut after a handshake, header or idle timeout, and requests answered 500 after a panic",
            connections_closed.clone(),
        );
        Injector {
            sidecar,
            unfit_pods,
            ready: AtomicBool::new(false),
            reviews,
            connections_closed,
            registry,
            permits: Semaphore::new(CONCURRENT_REVIEWS),
        }
    }

    fn count(&self, outcome: &str) {
        self.reviews
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// Answers one request.
pub(crate) async fn handle(injector: Arc<Injector>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let allowed = match path.as_str() {
        "/mutate" => Method::POST,
        "/healthz" | "/readyz" | "/metrics" => Method::GET,
        _ => {
            return plain(
                StatusCode::NOT_FOUND,
                format!(
                    "no route {path:?}: the injector serves POST /mutate, GET /healthz, /readyz, /metrics"
                ),
            );
        }
    };
    if method != allowed && !(allowed == Method::GET && method == Method::HEAD) {
        let mut answer = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}; use {allowed}"),
        );
        if let Ok(value) = HeaderValue::from_str(allowed.as_str()) {
            answer.headers_mut().insert(ALLOW, value);
        }
        return answer;
    }
    match path.as_str() {
        "/mutate" => mutate(&injector, request).await,
        "/healthz" => plain(StatusCode::OK, "ok".to_owned()),
        "/readyz" if injector.ready.load(Ordering::SeqCst) => {
            plain(StatusCode::OK, "ok".to_owned())
        }
        "/readyz" => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the CA is not yet registered in the webhook configuration (see the log)"
                .to_owned(),
        ),
        _ => {
            let mut text = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut text, &injector.registry);
            // Exactly the exposition: OpenMetrics allows nothing after its `# EOF` line.
            let mut answer = Response::new(Body::from(text));
            answer.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            answer
        }
    }
}

async fn mutate(injector: &Injector, request: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !content_type.starts_with("application/json") {
        injector.count("refused");
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the review must be sent as application/json, not {content_type:?}"),
        );
    }
    let Ok(_permit) = injector.permits.acquire().await else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "stopping".to_owned());
    };
    let too_large = || {
        injector.count("refused");
        plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the review is larger than {MAX_REVIEW} bytes"),
        )
    };
    // A declared length above the bound is refused before any of the body is read.
    if hyper::body::Body::size_hint(request.body()).lower() > MAX_REVIEW as u64 {
        return too_large();
    }
    let body = match Limited::new(request.into_body(), MAX_REVIEW)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return too_large();
            }
            injector.count("refused");
            return plain(
                StatusCode::BAD_REQUEST,
                format!("the review could not be read: {e}"),
            );
        }
    };
    let version = env!("CARGO_PKG_VERSION");
    match review::answer(&body, &injector.sidecar, injector.unfit_pods, version) {
        Ok(answer) => {
            injector.count(answer.outcome.label());
            log::info!(
                target: "review",
                "pod={} outcome={} dry_run={} duration={:.1}ms",
                answer.pod,
                answer.outcome.label(),
                answer.dry_run,
                started.elapsed().as_secs_f64() * 1000.0
            );
            let mut response = Response::new(Body::from(answer.body.to_string()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(problem) => {
            injector.count("refused");
            log::warn!(target: "review", "refused a review: {problem}");
            plain(StatusCode::BAD_REQUEST, problem)
        }
    }
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(Body::from(format!("{text}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
