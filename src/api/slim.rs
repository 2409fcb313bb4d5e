//! The pod as the tracker decodes it: only the fields counting reads, straight into a
//! [`PodView`]. Everything else in the API server's answer (most of the spec, `managedFields`,
//! most of the status) is skipped by the parser instead of being built into k8s-openapi's whole
//! `Pod`, whose decoding alone is some hundreds of KiB of code a sidecar would keep resident.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;

use crate::core::view::{ContainerRestarts, PodView};

/// A pod, as far as counting reads it.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SlimPod {
    #[serde(default)]
    metadata: SlimMeta,
    #[serde(default)]
    spec: Option<SlimSpec>,
    #[serde(default)]
    status: Option<SlimStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimSpec {
    #[serde(default)]
    service_account_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    deletion_timestamp: Option<Time>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimStatus {
    #[serde(default)]
    container_statuses: Option<Vec<SlimContainer>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimContainer {
    name: String,
    #[serde(default)]
    restart_count: i32,
    #[serde(default)]
    last_state: Option<SlimState>,
}

#[derive(Debug, Deserialize)]
struct SlimState {
    #[serde(default)]
    terminated: Option<SlimTerminated>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimTerminated {
    #[serde(default)]
    finished_at: Option<Time>,
}

/// A page of a pod list, as far as the sweep reads it.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SlimList {
    #[serde(default)]
    metadata: SlimListMeta,
    #[serde(default)]
    items: Vec<SlimPod>,
}

#[derive(Debug, Default, Deserialize)]
struct SlimListMeta {
    #[serde(default, rename = "continue")]
    continue_: Option<String>,
}

impl SlimList {
    /// The continue token of the next page (`None` on the last), and the pods by name.
    pub(crate) fn into_page(self) -> (Option<String>, Vec<(String, PodView)>) {
        let next = self.metadata.continue_.filter(|token| !token.is_empty());
        let pods = self
            .items
            .into_iter()
            .filter_map(|pod| {
                let name = pod.metadata.name.clone()?;
                Some((name, pod.into_view()))
            })
            .collect();
        (next, pods)
    }
}

impl SlimPod {
    /// The service account the pod runs as, if the spec names one.
    pub(crate) fn service_account(&self) -> Option<&str> {
        self.spec.as_ref()?.service_account_name.as_deref()
    }

    /// The parts of the pod that counting depends on.
    pub(crate) fn into_view(self) -> PodView {
        let containers = self
            .status
            .and_then(|status| status.container_statuses)
            .unwrap_or_default()
            .into_iter()
            .map(|status| ContainerRestarts {
                restart_count: u32::try_from(status.restart_count).unwrap_or(0),
                last_finished: status
                    .last_state
                    .and_then(|state| state.terminated)
                    .and_then(|terminated| terminated.finished_at)
                    .map(|at| unix_seconds(&at)),
                name: status.name,
            })
            .collect();
        let meta = self.metadata;
        PodView {
            containers,
            labels: meta.labels,
            annotations: meta.annotations,
            uid: meta.uid,
            resource_version: meta.resource_version,
            // Being deleted is what matters: a time past SystemTime's range still counts.
            deletion: meta.deletion_timestamp.map(|time| {
                std::time::UNIX_EPOCH
                    .checked_add(Duration::from_secs(unix_seconds(&time)))
                    .unwrap_or(std::time::UNIX_EPOCH)
            }),
        }
    }
}

/// Unix seconds of an API time; a time before 1970 does not occur, so it is clamped.
fn unix_seconds(time: &Time) -> u64 {
    u64::try_from(time.0.as_second()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn slim(pod: &Value) -> PodView {
        serde_json::from_value::<SlimPod>(pod.clone())
            .expect("a pod decodes")
            .into_view()
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "worker-1",
                "namespace": "jobs",
                "uid": "4c1e0c4a-0000-4000-8000-000000000001",
                "resourceVersion": "812",
                "labels": {"app": "worker", "active-jobs": "2"},
                "annotations": {"active-jobs-writes": "a-1 a-2"},
                "deletionTimestamp": "2026-12-02T10:00:00Z",
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}}}]
            },
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [{
                    "name": "main", "restartCount": 2, "ready": true, "image": "busybox",
                    "imageID": "", "lastState": {"terminated": {"exitCode": 1,
                    "finishedAt": "2026-12-02T09:00:00Z"}}
                }]
            }
        })
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_slim_decoding_reads_the_fields_counting_needs_and_skips_the_rest() {
        let expected = PodView {
            labels: Some(map(&[("app", "worker"), ("active-jobs", "2")])),
            annotations: Some(map(&[("active-jobs-writes", "a-1 a-2")])),
            uid: Some("4c1e0c4a-0000-4000-8000-000000000001".to_owned()),
            resource_version: Some("812".to_owned()),
            deletion: std::time::UNIX_EPOCH.checked_add(Duration::from_secs(1_796_205_600)),
            containers: vec![ContainerRestarts {
                name: "main".to_owned(),
                restart_count: 2,
                last_finished: Some(1_796_202_000),
            }],
        };
        assert_eq!(slim(&pod()), expected);
    }

    #[test]
    fn the_service_account_is_read_from_the_spec_when_it_names_one() {
        let mut named = pod();
        named["spec"]["serviceAccountName"] = json!("job-tracker");
        let decode = |pod: Value| serde_json::from_value::<SlimPod>(pod).expect("a pod decodes");
        assert_eq!(decode(named).service_account(), Some("job-tracker"));
        assert_eq!(decode(pod()).service_account(), None);
        assert_eq!(decode(json!({})).service_account(), None);
    }

    #[test]
    fn a_pod_without_labels_or_status_has_no_maps_and_an_empty_map_stays_a_map() {
        let view = slim(&json!({"metadata": {"name": "w", "labels": {}}}));
        assert_eq!(view.labels, Some(BTreeMap::new()));
        assert_eq!(view.annotations, None);
        assert!(view.containers.is_empty());
        assert_eq!(slim(&json!({})), PodView::default());
    }

    #[test]
    fn a_list_page_gives_the_next_token_and_the_pods_by_name() {
        let list: SlimList = serde_json::from_value(json!({
            "kind": "PodList", "apiVersion": "v1",
            "metadata": {"continue": "abc", "remainingItemCount": 3},
            "items": [pod(), {"metadata": {}}]
        }))
        .expect("a list decodes");
        let (next, pods) = list.into_page();
        assert_eq!(next.as_deref(), Some("abc"));
        assert_eq!(pods.len(), 1, "a pod without a name is skipped");
        let last: SlimList =
            serde_json::from_value(json!({"metadata": {"continue": ""}, "items": []}))
                .expect("a list decodes");
        assert_eq!(last.into_page().0, None);
    }

    #[test]
    fn a_malformed_pod_is_an_error_not_a_guess() {
        for bad in [
            json!({"metadata": {"labels": {"a": 1}}}),
            json!({"metadata": {"deletionTimestamp": "yesterday"}}),
            json!({"status": {"containerStatuses": [{"restartCount": 1}]}}),
        ] {
            assert!(
                serde_json::from_value::<SlimPod>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    proptest! {
        /// Whatever labels, annotations and restarts a pod has, they are read as they are.
        #[test]
        fn generated_pods_decode_to_what_they_carry(
            labels in proptest::option::of(proptest::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{0,4}", 0..4)),
            annotations in proptest::option::of(proptest::collection::btree_map("[a-z]{1,4}", ".{0,8}", 0..4)),
            restarts in proptest::collection::vec(("[a-z]{1,5}", 0i32..5, proptest::option::of(0i64..2_000_000_000)), 0..3),
            deleted_at in proptest::option::of(0i64..2_000_000_000),
        ) {
            let time = |at: i64| {
                k8s_openapi::jiff::Timestamp::from_second(at).map(|t| t.to_string()).unwrap_or_default()
            };
            let mut metadata = json!({"name": "w", "uid": "u", "resourceVersion": "1",
                "managedFields": [{"manager": "m"}]});
            if let Some(labels) = &labels {
                metadata["labels"] = json!(labels);
            }
            if let Some(annotations) = &annotations {
                metadata["annotations"] = json!(annotations);
            }
            if let Some(at) = deleted_at {
                metadata["deletionTimestamp"] = json!(time(at));
            }
            let statuses: Vec<Value> = restarts
                .iter()
                .map(|(name, count, finished)| {
                    let mut status = json!({"name": name, "restartCount": count, "ready": true,
                        "image": "i", "imageID": ""});
                    if let Some(at) = finished {
                        status["lastState"] = json!({"terminated": {"exitCode": 1, "finishedAt": time(*at)}});
                    }
                    status
                })
                .collect();
            let pod = json!({"metadata": metadata, "spec": {"containers": []},
                "status": {"containerStatuses": statuses}});
            let expected = PodView {
                labels,
                annotations,
                uid: Some("u".to_owned()),
                resource_version: Some("1".to_owned()),
                deletion: deleted_at.and_then(|at| {
                    std::time::UNIX_EPOCH.checked_add(Duration::from_secs(at.unsigned_abs()))
                }),
                containers: restarts
                    .iter()
                    .map(|(name, count, finished)| ContainerRestarts {
                        name: name.clone(),
                        restart_count: count.unsigned_abs(),
                        last_finished: finished.map(i64::unsigned_abs),
                    })
                    .collect(),
            };
            prop_assert_eq!(slim(&pod), expected);
        }
    }
}
