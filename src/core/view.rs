//! What the tracker knows of a pod: the parts counting reads, and how a kept view is trimmed
//! to the keys this tracker's settings read (so a fleet of tracked pods costs little memory).

use std::collections::{BTreeMap, BTreeSet};

use kube_labels::Selector;

use super::keys::TrackerKeys;

/// The parts of a pod that counting depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    /// `metadata.labels`; `None` when the pod has no labels map at all.
    pub labels: Option<BTreeMap<String, String>>,
    /// `metadata.annotations`; `None` when the pod has no annotations map at all.
    pub annotations: Option<BTreeMap<String, String>>,
    /// `metadata.uid`: which pod of this name it is.
    pub uid: Option<String>,
    /// `metadata.resourceVersion`, for logs only: guards test values, not versions, so that
    /// unrelated writes (status updates by the kubelet) do not cost a retry.
    pub resource_version: Option<String>,
    /// `metadata.deletionTimestamp`: set once the pod is being deleted (it cannot be unset).
    pub deletion: Option<std::time::SystemTime>,
    /// `status.containerStatuses`: how often each container restarted, and when its previous
    /// instance ended (for `--release-on-restart`).
    pub containers: Vec<ContainerRestarts>,
}

/// One container's restarts, from `status.containerStatuses[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRestarts {
    /// The container's name.
    pub name: String,
    /// `restartCount`.
    pub restart_count: u32,
    /// `lastState.terminated.finishedAt` (Unix seconds): when the previous instance ended.
    pub last_finished: Option<u64>,
}

impl PodView {
    /// The value of a label, if the pod carries it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key).map(String::as_str)
    }

    /// The value of an annotation, if the pod carries it.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }

    /// When the previous instance of `container` ended (Unix seconds), if it has restarted
    /// at least once: jobs started before then belonged to that instance.
    pub fn restarted_at(&self, container: &str) -> Option<u64> {
        self.containers
            .iter()
            .find(|status| status.name == container && status.restart_count > 0)
            .and_then(|status| status.last_finished)
    }
}

/// The label and annotation keys (and the container) that counting reads, from the settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewKeys {
    labels: BTreeSet<String>,
    annotations: BTreeSet<String>,
    container: Option<String>,
}

impl ViewKeys {
    /// The keys a tracker with these settings reads: the counting label and the selector's
    /// labels; the marker, the jobs annotation and the `--active-annotation` keys; the
    /// `--release-on-restart` container.
    pub fn of(
        keys: &TrackerKeys,
        selector: Option<&Selector>,
        active_annotations: &[(String, String)],
        release_on_restart: Option<&str>,
    ) -> ViewKeys {
        let mut labels = BTreeSet::from([keys.label.clone()]);
        labels.extend(
            selector
                .map(Selector::keys)
                .unwrap_or_default()
                .into_iter()
                .map(str::to_owned),
        );
        let mut annotations =
            BTreeSet::from([keys.marker_annotation.clone(), keys.jobs_annotation.clone()]);
        annotations.extend(active_annotations.iter().map(|(key, _)| key.clone()));
        ViewKeys {
            labels,
            annotations,
            container: release_on_restart.map(str::to_owned),
        }
    }
}

impl PodView {
    /// The view kept between calls: only the labels, annotations and container that `keys`
    /// names, in as little memory as they take. Every count, refusal and patch computed from
    /// [`KeptView::into_view`] is the one computed from the whole view.
    pub fn keep(self, keys: &ViewKeys) -> KeptView {
        // A map that exists stays (perhaps empty): "no map at all" is what makes a write add
        // the whole map instead of one key (see `guard`).
        let kept = |map: Option<BTreeMap<String, String>>, wanted: &BTreeSet<String>| {
            map.map(|map| {
                map.into_iter()
                    .filter(|(key, _)| wanted.contains(key))
                    .map(|(key, value)| (key.into_boxed_str(), value.into_boxed_str()))
                    .collect::<Box<[_]>>()
            })
        };
        KeptView {
            labels: kept(self.labels, &keys.labels),
            annotations: kept(self.annotations, &keys.annotations),
            uid: self.uid.map(String::into_boxed_str),
            resource_version: self.resource_version.map(String::into_boxed_str),
            deletion: self.deletion,
            containers: self
                .containers
                .into_iter()
                .filter(|status| keys.container.as_deref() == Some(status.name.as_str()))
                .collect(),
        }
    }
}

/// A kept labels or annotations map: its pairs in key order.
type KeptMap = Box<[(Box<str>, Box<str>)]>;

/// A [`PodView`] as the tracker keeps it between calls (see [`PodView::keep`]): boxed slices
/// instead of maps, as a map's first node alone takes more than half a kilobyte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptView {
    labels: Option<KeptMap>,
    annotations: Option<KeptMap>,
    uid: Option<Box<str>>,
    resource_version: Option<Box<str>>,
    deletion: Option<std::time::SystemTime>,
    containers: Box<[ContainerRestarts]>,
}

impl KeptView {
    /// The view to compute with.
    pub fn into_view(self) -> PodView {
        let map = |pairs: Option<KeptMap>| {
            pairs.map(|pairs| {
                pairs
                    .into_vec()
                    .into_iter()
                    .map(|(key, value)| (key.into_string(), value.into_string()))
                    .collect()
            })
        };
        PodView {
            labels: map(self.labels),
            annotations: map(self.annotations),
            uid: self.uid.map(str::into_string),
            resource_version: self.resource_version.map(str::into_string),
            deletion: self.deletion,
            containers: self.containers.into_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::{btree_map, vec};
    use proptest::option;
    use proptest::prelude::*;

    use super::*;
    use crate::core::guard::{WritePlan, next_marker};

    fn keys() -> ViewKeys {
        let selector: Selector = "team=a,tier".parse().expect("a selector");
        ViewKeys::of(
            &TrackerKeys::new("active-jobs").expect("a label"),
            Some(&selector),
            &[("cost".to_owned(), "1".to_owned())],
            Some("worker"),
        )
    }

    #[test]
    fn a_kept_view_holds_only_the_keys_counting_reads_and_keeps_an_emptied_map() {
        let full = PodView {
            labels: Some(BTreeMap::from([
                ("active-jobs".to_owned(), "2".to_owned()),
                ("team".to_owned(), "a".to_owned()),
                ("app".to_owned(), "x".repeat(60)),
            ])),
            annotations: Some(BTreeMap::from([(
                "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                "{}".repeat(5000),
            )])),
            containers: vec![
                ContainerRestarts {
                    name: "worker".to_owned(),
                    restart_count: 1,
                    last_finished: Some(5),
                },
                ContainerRestarts {
                    name: "other".to_owned(),
                    restart_count: 3,
                    last_finished: Some(7),
                },
            ],
            ..PodView::default()
        };
        let kept = full.clone().keep(&keys()).into_view();
        assert_eq!(
            kept.labels
                .as_ref()
                .map(|labels| labels.keys().map(String::as_str).collect::<Vec<_>>()),
            Some(vec!["active-jobs", "team"])
        );
        assert_eq!(kept.annotations, Some(BTreeMap::new()), "emptied, not gone");
        assert_eq!(kept.restarted_at("worker"), full.restarted_at("worker"));
        assert_eq!(kept.containers.len(), 1);
    }

    #[test]
    fn a_container_restart_shows_when_its_previous_instance_ended() {
        let mut pod = PodView::default();
        assert_eq!(pod.restarted_at("main"), None);
        pod.containers = vec![
            ContainerRestarts {
                name: "main".into(),
                restart_count: 0,
                last_finished: None,
            },
            ContainerRestarts {
                name: "worker".into(),
                restart_count: 2,
                last_finished: Some(1_700_000_000),
            },
        ];
        assert_eq!(pod.restarted_at("main"), None, "never restarted");
        assert_eq!(pod.restarted_at("worker"), Some(1_700_000_000));
        assert_eq!(pod.restarted_at("other"), None);
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("active-jobs".to_owned()),
            Just("active-jobs-writes".to_owned()),
            Just("active-jobs-jobs".to_owned()),
            Just("team".to_owned()),
            Just("tier".to_owned()),
            Just("cost".to_owned()),
            Just("app".to_owned()),
            Just("other/key".to_owned()),
        ]
    }

    fn map() -> impl Strategy<Value = Option<BTreeMap<String, String>>> {
        option::of(btree_map(key(), "[a-z0-9 ]{0,6}", 0..6))
    }

    fn view() -> impl Strategy<Value = PodView> {
        (
            map(),
            map(),
            option::of("[a-f0-9]{4}"),
            any::<bool>(),
            vec(("worker|other|sidecar", 0u32..3, option::of(0u64..9)), 0..3),
        )
            .prop_map(|(labels, annotations, uid, deleting, containers)| PodView {
                labels,
                annotations,
                uid,
                resource_version: None,
                deletion: deleting.then_some(std::time::UNIX_EPOCH),
                containers: containers
                    .into_iter()
                    .map(|(name, restart_count, last_finished)| ContainerRestarts {
                        name,
                        restart_count,
                        last_finished,
                    })
                    .collect(),
            })
    }

    proptest! {
        /// Whatever else the pod carries, a write planned on the kept view is the write planned
        /// on the whole one, and it reads the same values.
        #[test]
        fn a_write_planned_on_a_kept_view_is_the_write_planned_on_the_whole_pod(
            full in view(),
            label in option::of("[0-9]{1,2}"),
            jobs in option::of("[a-z]{0,4}"),
            cost in option::of("[0-9]"),
            with_marker in any::<bool>(),
            deleting_guard in any::<bool>(),
            same_pod in any::<bool>(),
        ) {
            let keys = keys();
            let kept = full.clone().keep(&keys).into_view();
            for key in ["active-jobs", "team", "tier"] {
                prop_assert_eq!(kept.label(key), full.label(key));
            }
            for key in ["active-jobs-writes", "active-jobs-jobs", "cost"] {
                prop_assert_eq!(kept.annotation(key), full.annotation(key));
            }
            prop_assert_eq!(kept.restarted_at("worker"), full.restarted_at("worker"));
            let marker = next_marker(full.annotation("active-jobs-writes"), "id-1");
            let plan = WritePlan {
                label_key: "active-jobs",
                label_value: label.as_deref(),
                guarded_labels: vec!["team", "tier"],
                marker: with_marker.then_some(("active-jobs-writes", marker.as_str())),
                annotations: vec![
                    ("active-jobs-jobs", jobs.as_deref()),
                    ("cost", cost.as_deref()),
                ],
                require_not_deleting: deleting_guard,
                require_same_pod: same_pod,
            };
            prop_assert_eq!(plan.to_patch(&kept), plan.to_patch(&full));
            prop_assert_eq!(plan.changes_nothing(&kept), plan.changes_nothing(&full));
        }
    }
}
