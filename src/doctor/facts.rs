//! What `doctor` learns about a namespace: its budgets, its pods' labels, what could not be
//! read, and the answers of the access reviews.

use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_labels::Selector;

use crate::core::budgets::selector_of;

/// A PodDisruptionBudget, as far as the checks care.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Its name.
    pub name: String,
    /// The pods it selects; `None`: none (no selector, or one doctor cannot read).
    pub selector: Option<Selector>,
    /// Its selector requires the tracked label (`operator: Exists`): it protects busy pods.
    pub on_label: bool,
    /// It looks at the tracked label in another way (`matchLabels`, `In`...).
    pub mentions_label: bool,
    /// `spec.minAvailable`.
    pub min_available: Option<IntOrString>,
    /// `spec.maxUnavailable`.
    pub max_unavailable: Option<IntOrString>,
    /// `spec.unhealthyPodEvictionPolicy`.
    pub unhealthy_pod_eviction_policy: Option<String>,
}

impl Budget {
    /// The parts of `pdb` the checks use, for the tracked `label`.
    pub fn new(pdb: &PodDisruptionBudget, label: &str) -> Budget {
        let spec = pdb.spec.clone().unwrap_or_default();
        let expressions = spec
            .selector
            .as_ref()
            .and_then(|s| s.match_expressions.clone())
            .unwrap_or_default();
        let on_label = expressions
            .iter()
            .any(|e| e.key == label && e.operator == "Exists");
        let in_match_labels = spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_some_and(|labels| labels.contains_key(label));
        Budget {
            name: pdb.metadata.name.clone().unwrap_or_default(),
            selector: spec.selector.as_ref().and_then(selector_of),
            on_label,
            mentions_label: !on_label
                && (in_match_labels || expressions.iter().any(|e| e.key == label)),
            min_available: spec.min_available,
            max_unavailable: spec.max_unavailable,
            unhealthy_pod_eviction_policy: spec.unhealthy_pod_eviction_policy,
        }
    }

    pub(crate) fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// A pod: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLabels {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// A service account of pods that opt in to injection (`pod-webhook-tracker.io/inject:
/// "true"`): their injected tracker acts as it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedAccount {
    /// The account's name.
    pub name: String,
    /// The opted-in pods that run as it.
    pub pods: Vec<String>,
    /// Which of get and patch on pods it may not use; or why doctor could not ask.
    pub missing: Result<Vec<String>, String>,
}

/// Why something could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The API server refused (403): not a problem of the setup, doctor just may not look.
    pub forbidden: bool,
    /// What went wrong.
    pub message: String,
}

/// Everything doctor learnt from the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The namespace checked.
    pub namespace: String,
    /// The tracked label (`--label`).
    pub label: String,
    /// `--label-selector`: only pods matching it can be counted, so only they can become busy.
    pub selector: Option<Selector>,
    /// The budgets in the namespace.
    pub budgets: Result<Vec<Budget>, Unreadable>,
    /// The pods in the namespace.
    pub pods: Result<Vec<PodLabels>, Unreadable>,
    /// Verb on pods → whether the identity doctor connects as may use it.
    pub access: Result<BTreeMap<String, bool>, String>,
    /// With `--events`: whether that identity may create events in the namespace.
    pub create_events: Option<Result<bool, String>>,
    /// With `--authenticate=serviceaccount`: whether that identity may create TokenReviews.
    pub create_token_reviews: Option<Result<bool, String>>,
    /// The service accounts of the namespace's opted-in pods (empty if none, or if the pods
    /// could not be read).
    pub injected: Vec<InjectedAccount>,
}

impl Facts {
    /// Pods that can be counted, with their labels as when they are busy.
    pub(crate) fn busy_pods(&self) -> Option<Vec<PodLabels>> {
        let pods = self.pods.as_ref().ok()?;
        Some(
            pods.iter()
                .filter(|pod| {
                    self.selector
                        .as_ref()
                        .is_none_or(|s| s.matches(&pod.labels))
                })
                .map(|pod| {
                    let mut busy = pod.clone();
                    busy.labels
                        .entry(self.label.clone())
                        .or_insert_with(|| "1".to_owned());
                    busy
                })
                .collect(),
        )
    }
}
