//! The API server the benchmark talks to: the in-process test double, its users and rights,
//! the pods under load, and how many API requests a phase cost.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use kube_double::{ApiServer, Outcome, Rule, Subject, User, Verb};

/// The namespace of every pod in the benchmark.
pub(crate) const NAMESPACE: &str = "jobs";
/// The label every pod carries; the baseline's label selector asks for it.
pub(crate) const APP_LABEL: (&str, &str) = ("app", "worker");
/// The label that holds the count (the tracker's default).
pub(crate) const COUNT_LABEL: &str = "active-jobs";

/// Who may do what. Each caller has its own token and only the rights it needs.
pub(crate) const TRACKER_TOKEN: &str = "tracker-token";
pub(crate) const SIDECAR_TOKEN: &str = "sidecar-token";
pub(crate) const BASELINE_TOKEN: &str = "baseline-token";
pub(crate) const ADMIN_TOKEN: &str = "admin-token";

/// The double, set up.
pub(crate) struct Cluster {
    pub api: ApiServer,
}

impl Cluster {
    /// Starts the double with these latencies and grants:
    /// - the standalone tracker: get and patch on pods in the namespace;
    /// - the sidecar: get and patch on its own pod only (`resourceNames`);
    /// - the baseline: list and update on pods in the namespace (the original's needs);
    /// - an admin, for the reference requests the harness sends itself.
    pub(crate) fn start(
        write_latency: Duration,
        read_latency: Duration,
        sidecar_pod: &str,
    ) -> Cluster {
        let api = ApiServer::builder()
            .write_latency(write_latency)
            .read_latency(read_latency)
            .start();
        api.add_token(TRACKER_TOKEN, User::new("tracker"));
        api.add_token(SIDECAR_TOKEN, User::new("sidecar"));
        api.add_token(BASELINE_TOKEN, User::new("baseline"));
        api.add_token(ADMIN_TOKEN, User::admin("bench-admin"));
        api.allow(
            Subject::user("tracker"),
            Rule::new(["get", "patch"], ["pods"]).namespace(NAMESPACE),
        );
        api.allow(
            Subject::user("sidecar"),
            Rule::new(["get", "patch"], ["pods"])
                .namespace(NAMESPACE)
                .resource_names([sidecar_pod]),
        );
        api.allow(
            Subject::user("baseline"),
            Rule::new(["list", "update"], ["pods"]).namespace(NAMESPACE),
        );
        Cluster { api }
    }

    /// The double's address (it listens on loopback).
    pub(crate) fn address(&self) -> SocketAddr {
        let port = self.api.port();
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Creates a pod that carries the app label.
    pub(crate) fn create_pod(&self, name: &str) {
        self.api.create_pod(NAMESPACE, name, &[APP_LABEL]);
    }

    /// The count label of a pod, as stored (`None`: absent).
    pub(crate) fn count_label(&self, pod: &str) -> Option<String> {
        self.api
            .labels(NAMESPACE, pod)
            .and_then(|labels| labels.get(COUNT_LABEL).cloned())
    }

    /// The API requests made since the last reset, by verb.
    pub(crate) fn usage(&self) -> ApiUsage {
        let mut by_verb: BTreeMap<Verb, VerbUsage> = BTreeMap::new();
        for ((verb, outcome), count) in self.api.counts() {
            let entry = by_verb.entry(verb).or_default();
            entry.requests += count;
            if !matches!(outcome, Outcome::Status(200..=299)) {
                *entry.failures.entry(outcome_text(outcome)).or_default() += count;
            }
        }
        ApiUsage { by_verb }
    }

    /// Forgets the counted requests: the next phase is measured alone.
    pub(crate) fn reset_usage(&self) {
        self.api.reset_counts();
    }
}

fn outcome_text(outcome: Outcome) -> String {
    match outcome {
        Outcome::Status(code) => code.to_string(),
        // Dropped, hung: the variant's name.
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Requests of one verb.
#[derive(Debug, Clone, Default)]
pub(crate) struct VerbUsage {
    pub requests: u64,
    /// Answers other than 2xx, by status.
    pub failures: BTreeMap<String, u64>,
}

/// API requests of one phase.
#[derive(Debug, Clone, Default)]
pub(crate) struct ApiUsage {
    pub by_verb: BTreeMap<Verb, VerbUsage>,
}

impl ApiUsage {
    pub(crate) fn total(&self) -> u64 {
        self.by_verb.values().map(|v| v.requests).sum()
    }

    pub(crate) fn requests(&self, verb: Verb) -> u64 {
        self.by_verb.get(&verb).map_or(0, |v| v.requests)
    }

    /// `PATCH 1.000` or `LIST 1.00 + UPDATE 1.00`: requests per call, by verb.
    pub(crate) fn per_call(&self, calls: usize) -> String {
        if self.by_verb.is_empty() {
            return "none".into();
        }
        self.by_verb
            .iter()
            .map(|(verb, usage)| {
                format!(
                    "{} {:.3}",
                    verb.rbac().to_uppercase(),
                    usage.requests as f64 / calls.max(1) as f64
                )
            })
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// `PUT 409×12` style summary of the non-2xx API answers, or `-`.
    pub(crate) fn failures(&self) -> String {
        let parts: Vec<String> =
            self.by_verb
                .iter()
                .flat_map(|(verb, usage)| {
                    usage.failures.iter().map(move |(status, n)| {
                        format!("{} {status}×{n}", verb.rbac().to_uppercase())
                    })
                })
                .collect();
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(", ")
        }
    }

    /// `GET 1 + PATCH 1`: absolute counts (for a single call).
    pub(crate) fn counts(&self) -> String {
        if self.by_verb.is_empty() {
            return "none".into();
        }
        self.by_verb
            .iter()
            .map(|(verb, usage)| format!("{} {}", verb.rbac().to_uppercase(), usage.requests))
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// What the API server itself takes, measured from the harness on one kept-alive connection:
/// the floor under every webhook call.
#[derive(Debug, Clone)]
pub(crate) struct Reference {
    pub requests: usize,
    pub patch_p50: Duration,
    pub patch_p99: Duration,
    pub get_p50: Duration,
}

impl Cluster {
    /// `requests` label merge PATCHes of `pod`, one after another, then as many GETs.
    pub(crate) fn reference(&self, pod: &str, requests: usize) -> Result<Reference, String> {
        let mut conn = crate::client::Conn::new(self.address());
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}");
        let mut timed = |method: &str, content_type: &str, body: &[u8]| {
            let started = std::time::Instant::now();
            let response = conn
                .request(
                    method,
                    &path,
                    &[("Authorization", &auth), ("Content-Type", content_type)],
                    body,
                )
                .map_err(|e| format!("reference {method} {path}: {e}"))?;
            if response.status != 200 {
                return Err(format!(
                    "reference {method} {path}: {} {}",
                    response.status,
                    response.text()
                ));
            }
            Ok(started.elapsed())
        };
        let mut patches = Vec::with_capacity(requests);
        for n in 0..requests {
            let body = format!(r#"{{"metadata":{{"labels":{{"bench-reference":"{n}"}}}}}}"#);
            patches.push(timed(
                "PATCH",
                "application/merge-patch+json",
                body.as_bytes(),
            )?);
        }
        let mut gets = Vec::with_capacity(requests);
        for _ in 0..requests {
            gets.push(timed("GET", "application/json", b"")?);
        }
        patches.sort();
        gets.sort();
        Ok(Reference {
            requests,
            patch_p50: crate::scenario::percentile(&patches, 50.0),
            patch_p99: crate::scenario::percentile(&patches, 99.0),
            get_p50: crate::scenario::percentile(&gets, 50.0),
        })
    }
}
