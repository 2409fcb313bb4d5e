//! What the tracker counts about itself, for `GET /metrics` (Prometheus text format) and the last
//! API error shown by `GET /status`.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::core::pod::PodRef;

/// A webhook call's endpoint and answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `increment` or `decrement`.
    pub endpoint: String,
    /// The HTTP status answered.
    pub status: String,
}

/// A webhook endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `increment` or `decrement`.
    pub endpoint: String,
}

/// An API request's verb and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// `get`, `patch` or `create`.
    pub verb: String,
    /// The status code, or `timeout` / `error` when no answer came.
    pub outcome: String,
}

/// An API verb.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    /// `get`, `patch` or `create`.
    pub verb: String,
}

/// Why a write round was repeated.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `conflict`, `unavailable` or `unknown-outcome`.
    pub reason: String,
}

/// A listener and why it closed a connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `webhook` or `admin`.
    pub listener: String,
    /// `full` (refused at `--max-connections`), `header-timeout`, `idle-timeout` or `panic`.
    pub reason: String,
}

/// A pod.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    /// The namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
}

/// The last API failure, for `/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastError {
    /// When it happened.
    pub at: SystemTime,
    /// What happened.
    pub message: String,
}

/// Every metric of the process, registered once.
pub struct Metrics {
    registry: Registry,
    /// Webhook calls by endpoint and status.
    pub calls: Family<CallLabels, Counter>,
    /// Webhook call latency by endpoint.
    pub call_seconds: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    /// API requests by verb and outcome.
    pub api_requests: Family<ApiLabels, Counter>,
    /// API request latency by verb.
    pub api_seconds: Family<VerbLabels, Histogram, fn() -> Histogram>,
    /// Write rounds repeated, by reason.
    pub retries: Family<ReasonLabels, Counter>,
    /// Calls per write round: above 1 when concurrent calls were folded into one write.
    pub calls_per_write: Histogram,
    /// Writes whose answer was lost, by whether a re-read found them stored.
    pub lost_answers: Family<LostLabels, Counter>,
    /// The current count of each tracked pod.
    pub active_jobs: Family<PodLabels, Gauge>,
    /// Jobs released without a decrement, by reason.
    pub jobs_released: Family<ReasonLabels, Counter>,
    /// Connections the tracker refused or cut (`full`, `header-timeout`, `idle-timeout`) and
    /// requests answered 500 after a panic (`panic`).
    pub connections_closed: Family<ConnectionLabels, Counter>,
    /// Callers' tokens by outcome: authenticated or refused by a TokenReview, cached (no
    /// review sent), failed (the review itself failed).
    pub token_reviews: Family<ReasonLabels, Counter>,
    /// Pods the tracker keeps state for (a slot: a kept view, a `/status` entry, a timer).
    pub tracked_pods: Gauge,
    /// How long each standalone sweep took (every namespace, every page).
    pub sweep_seconds: Histogram,
    /// Pods the standalone sweeps listed.
    pub sweep_pods: Counter,
    last_error: Mutex<Option<LastError>>,
}

/// Whether a write whose answer was lost turned out stored.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LostLabels {
    /// `true` when the re-read found the write's id.
    pub stored: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s: a label patch takes a few milliseconds, a retried one seconds.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `pod_webhook_tracker` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pod_webhook_tracker");
        let metrics = Metrics {
            calls: Family::default(),
            call_seconds: Family::new_with_constructor(latency_histogram),
            api_requests: Family::default(),
            api_seconds: Family::new_with_constructor(latency_histogram),
            retries: Family::default(),
            calls_per_write: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            lost_answers: Family::default(),
            active_jobs: Family::default(),
            jobs_released: Family::default(),
            connections_closed: Family::default(),
            token_reviews: Family::default(),
            tracked_pods: Gauge::default(),
            // 10 ms to ~3 min: a page of 500 pods takes tens of milliseconds.
            sweep_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
            sweep_pods: Counter::default(),
            last_error: Mutex::new(None),
            registry: Registry::default(),
        };
        registry.register(
            "webhook_calls",
            "Webhook calls by endpoint and HTTP status",
            metrics.calls.clone(),
        );
        registry.register(
            "webhook_call_duration_seconds",
            "Webhook call latency by endpoint",
            metrics.call_seconds.clone(),
        );
        registry.register(
            "api_requests",
            "Kubernetes API requests by verb and outcome",
            metrics.api_requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "Kubernetes API request latency by verb",
            metrics.api_seconds.clone(),
        );
        registry.register(
            "write_retries",
            "Write rounds repeated: conflict (the pod changed), unavailable, unknown-outcome",
            metrics.retries.clone(),
        );
        registry.register(
            "calls_per_write",
            "Webhook calls folded into one write round",
            metrics.calls_per_write.clone(),
        );
        registry.register(
            "lost_answers",
            "Writes whose answer was lost, by whether a re-read found them stored",
            metrics.lost_answers.clone(),
        );
        registry.register(
            "jobs_released",
            "Jobs released without a decrement: expired (past their deadline) or restart (their container restarted)",
            metrics.jobs_released.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections refused when full or cut after a header or idle timeout, and requests answered 500 after a panic",
            metrics.connections_closed.clone(),
        );
        registry.register(
            "token_reviews",
            "Callers' bearer tokens (--authenticate) by outcome: authenticated, refused, cached (answered without a TokenReview), failed",
            metrics.token_reviews.clone(),
        );
        registry.register(
            "tracked_pods",
            "Pods the tracker keeps state for; a standalone service forgets a pod after --forget-idle-pods-after",
            metrics.tracked_pods.clone(),
        );
        registry.register(
            "sweep_duration_seconds",
            "How long each standalone sweep (--sweep-interval) took, every namespace and page",
            metrics.sweep_seconds.clone(),
        );
        registry.register(
            "sweep_pods",
            "Pods listed by the standalone sweeps",
            metrics.sweep_pods.clone(),
        );
        registry.register(
            "active_jobs",
            "Current count of each tracked pod",
            metrics.active_jobs.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Counts one webhook call.
    pub fn webhook_call(&self, endpoint: &str, status: u16, elapsed: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                endpoint: endpoint.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.call_seconds
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one API request.
    pub fn api_request(&self, verb: &str, outcome: &str, elapsed: Duration) {
        self.api_requests
            .get_or_create(&ApiLabels {
                verb: verb.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.api_seconds
            .get_or_create(&VerbLabels {
                verb: verb.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a repeated write round.
    pub fn retry(&self, reason: &str) {
        self.retries
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a write whose answer was lost.
    pub fn lost_answer(&self, stored: bool) {
        self.lost_answers
            .get_or_create(&LostLabels {
                stored: stored.to_string(),
            })
            .inc();
    }

    /// Counts a job released without a decrement (`expired` or `restart`).
    pub fn job_released(&self, reason: &str) {
        self.jobs_released
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a connection the listener refused or cut, or a request that panicked.
    /// Counts one caller's token: `authenticated`, `refused`, `cached` or `failed`.
    pub fn token_review(&self, outcome: &str) {
        self.token_reviews
            .get_or_create(&ReasonLabels {
                reason: outcome.to_owned(),
            })
            .inc();
    }

    /// Sets a pod's current count. A series exists only while the count is not zero, so that a
    /// fleet of idle pods costs no series.
    pub fn set_count(&self, pod: &PodRef, count: i64) {
        if count == 0 {
            self.active_jobs.remove(&pod_labels(pod));
        } else {
            self.active_jobs.get_or_create(&pod_labels(pod)).set(count);
        }
    }

    /// Forgets a pod that is no longer tracked.
    pub fn forget(&self, pod: &PodRef) {
        self.active_jobs.remove(&pod_labels(pod));
    }

    /// Records an API failure for `/status`.
    pub fn record_error(&self, message: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(LastError {
            at: SystemTime::now(),
            message,
        });
    }

    /// The last API failure, if any.
    pub fn last_error(&self) -> Option<LastError> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn pod_labels(pod: &PodRef) -> PodLabels {
    PodLabels {
        namespace: pod.namespace.clone(),
        pod: pod.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric_with_its_labels() {
        let metrics = Metrics::new();
        metrics.webhook_call("increment", 200, Duration::from_millis(3));
        metrics.api_request("patch", "200", Duration::from_millis(2));
        metrics.retry("conflict");
        metrics.calls_per_write.observe(4.0);
        metrics.lost_answer(true);
        metrics.set_count(&PodRef::new("jobs", "w-1"), 3);
        metrics.job_released("expired");
        let text = metrics.encode();
        for line in [
            "pod_webhook_tracker_webhook_calls_total{endpoint=\"increment\",status=\"200\"} 1",
            "pod_webhook_tracker_api_requests_total{verb=\"patch\",outcome=\"200\"} 1",
            "pod_webhook_tracker_write_retries_total{reason=\"conflict\"} 1",
            "pod_webhook_tracker_lost_answers_total{stored=\"true\"} 1",
            "pod_webhook_tracker_active_jobs{namespace=\"jobs\",pod=\"w-1\"} 3",
            "pod_webhook_tracker_calls_per_write_count 1",
            "pod_webhook_tracker_jobs_released_total{reason=\"expired\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.contains("pod_webhook_tracker_webhook_call_duration_seconds_bucket"));
        assert!(text.ends_with("# EOF\n"));
        // Back at zero, the pod's series goes: idle pods cost no series.
        metrics.set_count(&PodRef::new("jobs", "w-1"), 0);
        assert!(!metrics.encode().contains("pod=\"w-1\""));
        metrics.set_count(&PodRef::new("jobs", "w-2"), -1);
        assert!(
            metrics
                .encode()
                .contains("pod_webhook_tracker_active_jobs{namespace=\"jobs\",pod=\"w-2\"} -1")
        );
    }

    #[test]
    fn a_forgotten_pod_leaves_the_exposition() {
        let metrics = Metrics::new();
        let pod = PodRef::new("jobs", "w-1");
        metrics.set_count(&pod, 1);
        metrics.forget(&pod);
        assert!(!metrics.encode().contains("w-1"));
    }

    #[test]
    fn the_last_api_error_is_kept() {
        let metrics = Metrics::new();
        assert_eq!(metrics.last_error(), None);
        metrics.record_error("first".into());
        metrics.record_error("second".into());
        assert_eq!(
            metrics.last_error().map(|e| e.message),
            Some("second".to_owned())
        );
    }
}
