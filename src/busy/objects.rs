//! Pods and PodDisruptionBudgets as `busy` decodes them: only the fields it shows or reasons
//! with, straight from the API server's JSON (the rest of each object is skipped by the parser),
//! and a pod's annotations cut down at once to the few it shows.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube_labels::Selector;

use crate::core::budgets::selector_of;
use serde::Deserialize;

/// What every object's `metadata` gives. Fields the API server leaves out when empty are
/// plain values with their defaults; an `Option` only where being absent means something.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Meta {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) namespace: String,
    #[serde(default)]
    pub(crate) resource_version: String,
    #[serde(default)]
    pub(crate) generation: i64,
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) deletion_timestamp: Option<String>,
}

/// A pod as it arrives (a list item or a watch event's object).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PodItem {
    #[serde(default)]
    pub(crate) metadata: Meta,
    #[serde(default)]
    pub(crate) spec: PodSpec,
    #[serde(default)]
    pub(crate) status: PodStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodSpec {
    #[serde(default)]
    pub(crate) node_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PodStatus {
    #[serde(default)]
    pub(crate) phase: String,
    #[serde(default)]
    pub(crate) conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Condition {
    #[serde(default, rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) status: String,
}

/// A budget as it arrives.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct BudgetItem {
    #[serde(default)]
    pub(crate) metadata: Meta,
    #[serde(default)]
    pub(crate) spec: BudgetSpec,
    #[serde(default)]
    pub(crate) status: BudgetStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BudgetSpec {
    #[serde(default)]
    pub(crate) selector: Option<LabelSelector>,
    #[serde(default)]
    pub(crate) unhealthy_pod_eviction_policy: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BudgetStatus {
    #[serde(default)]
    pub(crate) observed_generation: i64,
    #[serde(default)]
    pub(crate) disruptions_allowed: i64,
    #[serde(default)]
    pub(crate) current_healthy: i64,
    #[serde(default)]
    pub(crate) desired_healthy: i64,
}

/// A page of a list.
#[derive(Debug, Deserialize)]
pub(crate) struct List<T> {
    #[serde(default)]
    pub(crate) metadata: ListMeta,
    #[serde(default = "Vec::new")]
    pub(crate) items: Vec<T>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListMeta {
    #[serde(default)]
    pub(crate) resource_version: String,
    #[serde(default, rename = "continue")]
    pub(crate) next: Option<String>,
}

/// Where an object is: namespace and name.
pub(crate) type Key = (String, String);

/// A pod, kept: what `busy` shows and what budgets select it by.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pod {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `spec.nodeName`, if scheduled.
    pub node: Option<String>,
    /// `status.phase` (`Pending` when absent).
    pub phase: String,
    /// Its `Ready` condition is `True`.
    pub ready: bool,
    /// It has a deletion timestamp.
    pub deleting: bool,
    /// Every label (budgets select by them).
    pub labels: BTreeMap<String, String>,
    /// The jobs annotation, as stored.
    pub jobs: Option<String>,
    /// The shown annotations the pod has, in the order they are shown.
    pub annotations: Vec<(String, String)>,
}

impl Pod {
    /// Keeps what `busy` needs of `item`: its labels, the jobs annotation `jobs_key` and the
    /// annotations of `shown` (every other annotation is dropped here).
    pub(crate) fn keep(item: PodItem, jobs_key: &str, shown: &[String]) -> Pod {
        let PodItem {
            metadata,
            spec,
            status,
        } = item;
        let mut annotations = metadata.annotations;
        Pod {
            jobs: annotations.remove(jobs_key),
            annotations: shown
                .iter()
                .filter_map(|key| annotations.remove_entry(key))
                .collect(),
            namespace: metadata.namespace,
            name: metadata.name,
            resource_version: metadata.resource_version,
            node: Some(spec.node_name).filter(|n| !n.is_empty()),
            phase: Some(status.phase)
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "Pending".to_owned()),
            ready: status
                .conditions
                .iter()
                .any(|c| c.kind == "Ready" && c.status == "True"),
            deleting: metadata.deletion_timestamp.is_some(),
            labels: metadata.labels,
        }
    }

    /// Where it is.
    pub(crate) fn key(&self) -> Key {
        (self.namespace.clone(), self.name.clone())
    }
}

/// A budget, kept: what decides whether it selects a pod and lets it be evicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// The pods it selects; `None`: none (no selector, or one that cannot be read).
    pub selector: Option<Selector>,
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.observedGeneration` (0: never): below `generation`, the controller has not seen
    /// the change.
    pub observed_generation: i64,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: i64,
    /// `status.currentHealthy`.
    pub current_healthy: i64,
    /// `status.desiredHealthy`.
    pub desired_healthy: i64,
    /// `spec.unhealthyPodEvictionPolicy` is `AlwaysAllow`.
    pub always_allow_unhealthy: bool,
}

impl Budget {
    /// Keeps what `busy` needs of `item`.
    pub(crate) fn keep(item: BudgetItem) -> Budget {
        let BudgetItem {
            metadata,
            spec,
            status,
        } = item;
        Budget {
            namespace: metadata.namespace,
            name: metadata.name,
            resource_version: metadata.resource_version,
            selector: spec.selector.as_ref().and_then(selector_of),
            generation: metadata.generation,
            observed_generation: status.observed_generation,
            disruptions_allowed: status.disruptions_allowed,
            current_healthy: status.current_healthy,
            desired_healthy: status.desired_healthy,
            always_allow_unhealthy: spec.unhealthy_pod_eviction_policy == "AlwaysAllow",
        }
    }

    /// Whether it selects `pod`: the same namespace and a selector its labels match.
    pub fn selects(&self, pod: &Pod) -> bool {
        self.namespace == pod.namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|selector| selector.matches(&pod.labels))
    }

    /// Where it is.
    pub(crate) fn key(&self) -> Key {
        (self.namespace.clone(), self.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown() -> Vec<String> {
        vec![
            "karpenter.sh/do-not-disrupt".to_owned(),
            "controller.kubernetes.io/pod-deletion-cost".to_owned(),
        ]
    }

    #[test]
    fn a_pod_keeps_its_labels_the_jobs_annotation_and_the_shown_annotations_only() {
        let item: PodItem = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "runner-0", "namespace": "ci", "resourceVersion": "42",
                "labels": {"app": "runner", "active-jobs": "2"},
                "annotations": {
                    "active-jobs-jobs": "{\"v\":1}",
                    "karpenter.sh/do-not-disrupt": "true",
                    "kubectl.kubernetes.io/last-applied-configuration": "{... a large document ...}"
                },
                "managedFields": [{"manager": "kubectl"}]
            },
            "spec": {"nodeName": "node-a", "containers": [{"name": "main", "image": "x"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("decodes");
        let pod = Pod::keep(item, "active-jobs-jobs", &shown());
        assert_eq!(pod.key(), ("ci".to_owned(), "runner-0".to_owned()));
        assert_eq!(pod.node.as_deref(), Some("node-a"));
        assert_eq!(
            (pod.phase.as_str(), pod.ready, pod.deleting),
            ("Running", true, false)
        );
        assert_eq!(pod.jobs.as_deref(), Some("{\"v\":1}"));
        assert_eq!(
            pod.annotations,
            vec![("karpenter.sh/do-not-disrupt".to_owned(), "true".to_owned())]
        );
        assert_eq!(pod.labels.len(), 2);
    }

    #[test]
    fn a_bare_pod_reads_as_pending_unscheduled_and_not_ready() {
        let item: PodItem =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}}))
                .expect("decodes");
        let pod = Pod::keep(item, "active-jobs-jobs", &shown());
        assert_eq!(pod.node, None);
        assert_eq!(
            (pod.phase.as_str(), pod.ready, pod.deleting),
            ("Pending", false, true)
        );
    }

    #[test]
    fn a_budget_selects_pods_of_its_namespace_by_labels() {
        let item: BudgetItem = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "busy", "namespace": "ci", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "runner"},
                                  "matchExpressions": [{"key": "active-jobs", "operator": "Exists"}]},
                     "unhealthyPodEvictionPolicy": "AlwaysAllow"},
            "status": {"observedGeneration": 2, "disruptionsAllowed": 0, "currentHealthy": 3, "desiredHealthy": 9999}
        }))
        .expect("decodes");
        let budget = Budget::keep(item);
        assert_eq!(budget.observed_generation, 2);
        assert!(budget.always_allow_unhealthy);
        let mut pod = Pod {
            namespace: "ci".to_owned(),
            ..Pod::default()
        };
        pod.labels.insert("app".to_owned(), "runner".to_owned());
        assert!(!budget.selects(&pod), "not busy: the label is missing");
        pod.labels.insert("active-jobs".to_owned(), "1".to_owned());
        assert!(budget.selects(&pod));
        pod.namespace = "other".to_owned();
        assert!(!budget.selects(&pod), "another namespace");
    }

    #[test]
    fn a_budget_without_a_selector_or_with_an_unknown_operator_selects_nothing() {
        let none: BudgetItem = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "b", "namespace": "ci"}}),
        )
        .expect("decodes");
        let odd: BudgetItem = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b", "namespace": "ci"},
            "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}}
        }))
        .expect("decodes");
        let everything: BudgetItem = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "b", "namespace": "ci"}, "spec": {"selector": {}}}),
        )
        .expect("decodes");
        let pod = Pod {
            namespace: "ci".to_owned(),
            ..Pod::default()
        };
        assert!(!Budget::keep(none).selects(&pod));
        assert!(!Budget::keep(odd).selects(&pod));
        assert!(
            Budget::keep(everything).selects(&pod),
            "policy/v1: {{}} selects all"
        );
        let status_less: BudgetItem =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "b", "generation": 1}}))
                .expect("decodes");
        assert_eq!(Budget::keep(status_less).observed_generation, 0);
    }
}
