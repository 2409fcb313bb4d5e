//! The guarded write: one JSON patch that changes the count only if the pod still looks the way
//! the count was computed from, and that leaves a marker to recognise the write on a re-read.
//!
//! Pure logic: builds patches from a [`PodView`], never sends them.

use std::collections::BTreeMap;

use super::view::PodView;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, TestOperation};
use serde_json::Value;

/// How many recent write ids the marker annotation keeps.
///
/// A write whose outcome is unknown (timeout, dropped connection) is looked up here on the next
/// read; it would only fall out if this many other writes landed in between.
pub const MARKER_DEPTH: usize = 16;

/// One map of the pod's metadata (`labels` or `annotations`) as the write sees it.
struct MapWrite<'a> {
    field: &'static str,
    current: Option<&'a BTreeMap<String, String>>,
    /// Keys whose current value (or absence) must still hold.
    guarded: Vec<&'a str>,
    /// Keys to set (`Some`) or remove (`None`).
    changes: Vec<(&'a str, Option<&'a str>)>,
}

impl MapWrite<'_> {
    fn operations(&self, ops: &mut Vec<PatchOperation>) {
        let Some(current) = self.current else {
            // No map at all: `add /metadata/labels/k` would fail (422), so the map itself is
            // tested absent and added whole.
            ops.push(test(
                PointerBuf::from_tokens(["metadata", self.field]),
                Value::Null,
            ));
            let added: serde_json::Map<String, Value> = self
                .changes
                .iter()
                .filter_map(|(key, value)| {
                    Some(((*key).to_owned(), Value::from(value.map(str::to_owned)?)))
                })
                .collect();
            if !added.is_empty() {
                ops.push(PatchOperation::Add(AddOperation {
                    path: PointerBuf::from_tokens(["metadata", self.field]),
                    value: Value::Object(added),
                }));
            }
            return;
        };
        for key in &self.guarded {
            let value = current
                .get(*key)
                .map_or(Value::Null, |v| Value::from(v.as_str()));
            ops.push(test(self.pointer(key), value));
        }
        for (key, value) in &self.changes {
            match (current.get(*key).map(String::as_str), value) {
                (old, Some(new)) if old != Some(*new) => {
                    ops.push(PatchOperation::Add(AddOperation {
                        path: self.pointer(key),
                        value: Value::from(*new),
                    }))
                }
                (Some(_), None) => ops.push(PatchOperation::Remove(RemoveOperation {
                    path: self.pointer(key),
                })),
                _ => {}
            }
        }
    }

    fn pointer(&self, key: &str) -> PointerBuf {
        PointerBuf::from_tokens(["metadata", self.field, key])
    }
}

fn test(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Test(TestOperation { path, value })
}

/// Everything one write wants to change, and what it must find unchanged.
#[derive(Debug, Clone)]
pub struct WritePlan<'a> {
    /// The counting label's key.
    pub label_key: &'a str,
    /// The label's new value (`None`: remove it).
    pub label_value: Option<&'a str>,
    /// Other labels whose values must not have changed (the ones the label selector looked at).
    pub guarded_labels: Vec<&'a str>,
    /// The marker annotation's key and its new value; `None` for a write that changes nothing.
    pub marker: Option<(&'a str, &'a str)>,
    /// Other annotations and the values they must have afterwards (`None`: absent). Each is
    /// guarded like the label: a `test` on the value it was computed from.
    pub annotations: Vec<(&'a str, Option<&'a str>)>,
    /// Refuse the write if the pod has started being deleted since it was read (a `test` that
    /// `deletionTimestamp` is still absent): a new job must not start on a pod going away.
    pub require_not_deleting: bool,
    /// Refuse the write unless the pod still has the uid it was read with (a `test` on
    /// `metadata.uid`): a caller whose token is bound to a pod must not count its successor.
    pub require_same_pod: bool,
}

impl WritePlan<'_> {
    /// True when the plan changes nothing on this pod (only tests): a read that is checked by
    /// the server in the same round trip a write would take.
    pub fn changes_nothing(&self, view: &PodView) -> bool {
        self.marker.is_none()
            && view.label(self.label_key) == self.label_value
            && self
                .annotations
                .iter()
                .all(|(key, value)| view.annotation(key) == *value)
    }

    /// The JSON patch: `test` operations on every value the count was computed from (the label,
    /// the selector's labels, the marker), then the changes. A failed test answers 422 and
    /// changes nothing, which makes read-modify-write safe against every other writer.
    pub fn to_patch(&self, view: &PodView) -> Patch {
        let mut ops = Vec::new();
        if self.require_same_pod
            && let Some(uid) = &view.uid
        {
            ops.push(test(
                PointerBuf::from_tokens(["metadata", "uid"]),
                Value::from(uid.as_str()),
            ));
        }
        if self.require_not_deleting && view.deletion.is_none() {
            ops.push(test(
                PointerBuf::from_tokens(["metadata", "deletionTimestamp"]),
                Value::Null,
            ));
        }
        let mut guarded = vec![self.label_key];
        guarded.extend(
            self.guarded_labels
                .iter()
                .copied()
                .filter(|key| *key != self.label_key),
        );
        MapWrite {
            field: "labels",
            current: view.labels.as_ref(),
            guarded,
            changes: vec![(self.label_key, self.label_value)],
        }
        .operations(&mut ops);
        let mut guarded = Vec::new();
        let mut changes = Vec::new();
        if let Some((key, value)) = self.marker {
            guarded.push(key);
            changes.push((key, Some(value)));
        }
        for (key, value) in &self.annotations {
            guarded.push(*key);
            changes.push((*key, *value));
        }
        if !guarded.is_empty() {
            MapWrite {
                field: "annotations",
                current: view.annotations.as_ref(),
                guarded,
                changes,
            }
            .operations(&mut ops);
        }
        Patch(ops)
    }
}

/// The marker annotation's value after a write with id `id`: the previous ids, oldest dropped
/// beyond [`MARKER_DEPTH`], then `id`.
pub fn next_marker(current: Option<&str>, id: &str) -> String {
    let previous: Vec<&str> = current.unwrap_or("").split_whitespace().collect();
    let keep = previous
        .len()
        .saturating_sub(MARKER_DEPTH.saturating_sub(1));
    let mut ids = previous.get(keep..).unwrap_or_default().to_vec();
    ids.push(id);
    ids.join(" ")
}

/// True if the marker annotation's value records a write with one of these ids.
pub fn marker_records(current: Option<&str>, ids: &[String]) -> bool {
    current
        .unwrap_or("")
        .split_whitespace()
        .any(|recorded| ids.iter().any(|id| id == recorded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(labels: Option<&[(&str, &str)]>, annotations: Option<&[(&str, &str)]>) -> PodView {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        PodView {
            labels: labels.map(map),
            annotations: annotations.map(map),
            uid: None,
            resource_version: None,
            deletion: None,
            containers: Vec::new(),
        }
    }

    fn patch_json(plan: &WritePlan<'_>, view: &PodView) -> Value {
        serde_json::to_value(plan.to_patch(view)).expect("a patch serialises")
    }

    fn plan<'a>(value: Option<&'a str>, marker: Option<(&'a str, &'a str)>) -> WritePlan<'a> {
        WritePlan {
            label_key: "active-jobs",
            label_value: value,
            guarded_labels: vec![],
            marker,
            annotations: vec![],
            require_not_deleting: false,
            require_same_pod: false,
        }
    }

    #[test]
    fn a_first_increment_tests_the_label_absent_then_adds_it() {
        let pod = view(Some(&[("app", "worker")]), Some(&[]));
        assert_eq!(
            patch_json(&plan(Some("1"), None), &pod),
            json!([
                {"op": "test", "path": "/metadata/labels/active-jobs", "value": null},
                {"op": "add", "path": "/metadata/labels/active-jobs", "value": "1"},
            ])
        );
    }

    #[test]
    fn a_change_tests_the_old_value_then_replaces_it() {
        let pod = view(Some(&[("active-jobs", "3")]), None);
        assert_eq!(
            patch_json(&plan(Some("4"), None), &pod),
            json!([
                {"op": "test", "path": "/metadata/labels/active-jobs", "value": "3"},
                {"op": "add", "path": "/metadata/labels/active-jobs", "value": "4"},
            ])
        );
    }

    #[test]
    fn reaching_zero_removes_the_label() {
        let pod = view(Some(&[("active-jobs", "1")]), None);
        assert_eq!(
            patch_json(&plan(None, None), &pod),
            json!([
                {"op": "test", "path": "/metadata/labels/active-jobs", "value": "1"},
                {"op": "remove", "path": "/metadata/labels/active-jobs"},
            ])
        );
    }

    #[test]
    fn a_pod_without_a_labels_map_gets_the_whole_map_added() {
        let pod = view(None, None);
        assert_eq!(
            patch_json(&plan(Some("1"), Some(("m", "a1"))), &pod),
            json!([
                {"op": "test", "path": "/metadata/labels", "value": null},
                {"op": "add", "path": "/metadata/labels", "value": {"active-jobs": "1"}},
                {"op": "test", "path": "/metadata/annotations", "value": null},
                {"op": "add", "path": "/metadata/annotations", "value": {"m": "a1"}},
            ])
        );
    }

    #[test]
    fn a_prefixed_key_is_escaped_with_tilde_one() {
        let pod = view(Some(&[("example.com/active-jobs", "2")]), None);
        let plan = WritePlan {
            label_key: "example.com/active-jobs",
            label_value: Some("3"),
            guarded_labels: vec![],
            marker: None,
            annotations: vec![],
            require_not_deleting: false,
            require_same_pod: false,
        };
        assert_eq!(
            patch_json(&plan, &pod),
            json!([
                {"op": "test", "path": "/metadata/labels/example.com~1active-jobs", "value": "2"},
                {"op": "add", "path": "/metadata/labels/example.com~1active-jobs", "value": "3"},
            ])
        );
    }

    #[test]
    fn the_selectors_labels_are_guarded_too() {
        let pod = view(Some(&[("app", "worker")]), None);
        let plan = WritePlan {
            label_key: "active-jobs",
            label_value: Some("1"),
            guarded_labels: vec!["app", "tier", "active-jobs"],
            marker: None,
            annotations: vec![],
            require_not_deleting: false,
            require_same_pod: false,
        };
        assert_eq!(
            patch_json(&plan, &pod),
            json!([
                {"op": "test", "path": "/metadata/labels/active-jobs", "value": null},
                {"op": "test", "path": "/metadata/labels/app", "value": "worker"},
                {"op": "test", "path": "/metadata/labels/tier", "value": null},
                {"op": "add", "path": "/metadata/labels/active-jobs", "value": "1"},
            ])
        );
    }

    #[test]
    fn the_marker_is_tested_and_replaced_in_the_same_patch() {
        let pod = view(Some(&[("active-jobs", "1")]), Some(&[("m", "a1")]));
        assert_eq!(
            patch_json(&plan(Some("2"), Some(("m", "a1 a2"))), &pod),
            json!([
                {"op": "test", "path": "/metadata/labels/active-jobs", "value": "1"},
                {"op": "add", "path": "/metadata/labels/active-jobs", "value": "2"},
                {"op": "test", "path": "/metadata/annotations/m", "value": "a1"},
                {"op": "add", "path": "/metadata/annotations/m", "value": "a1 a2"},
            ])
        );
    }

    #[test]
    fn a_plan_without_changes_is_only_tests() {
        let pod = view(None, None);
        let plan = plan(None, None);
        assert!(plan.changes_nothing(&pod));
        assert_eq!(
            patch_json(&plan, &pod),
            json!([{"op": "test", "path": "/metadata/labels", "value": null}])
        );
    }

    #[test]
    fn other_annotations_are_tested_and_changed_in_the_same_patch() {
        let pod = view(
            Some(&[("active-jobs", "1")]),
            Some(&[("m", "a1"), ("jobs", "old"), ("gone", "x")]),
        );
        let plan = WritePlan {
            annotations: vec![("jobs", Some("new")), ("gone", None), ("same", None)],
            ..plan(Some("2"), Some(("m", "a1 a2")))
        };
        assert_eq!(
            patch_json(&plan, &pod),
            json!([
                {"op": "test", "path": "/metadata/labels/active-jobs", "value": "1"},
                {"op": "add", "path": "/metadata/labels/active-jobs", "value": "2"},
                {"op": "test", "path": "/metadata/annotations/m", "value": "a1"},
                {"op": "test", "path": "/metadata/annotations/jobs", "value": "old"},
                {"op": "test", "path": "/metadata/annotations/gone", "value": "x"},
                {"op": "test", "path": "/metadata/annotations/same", "value": null},
                {"op": "add", "path": "/metadata/annotations/m", "value": "a1 a2"},
                {"op": "add", "path": "/metadata/annotations/jobs", "value": "new"},
                {"op": "remove", "path": "/metadata/annotations/gone"},
            ])
        );
        assert!(!plan.changes_nothing(&pod));
    }

    #[test]
    fn a_write_that_may_start_a_job_is_refused_once_the_pod_is_deleting() {
        let pod = view(Some(&[]), None);
        let plan = WritePlan {
            require_not_deleting: true,
            require_same_pod: false,
            ..plan(Some("1"), None)
        };
        assert_eq!(
            patch_json(&plan, &pod)[0],
            json!({"op": "test", "path": "/metadata/deletionTimestamp", "value": null})
        );
    }

    #[test]
    fn the_marker_keeps_the_most_recent_ids() {
        let mut marker = None;
        for n in 0..(MARKER_DEPTH + 5) {
            marker = Some(next_marker(marker.as_deref(), &format!("w{n}")));
        }
        let marker = marker.expect("written");
        let ids: Vec<&str> = marker.split(' ').collect();
        assert_eq!(ids.len(), MARKER_DEPTH);
        assert_eq!(ids.first(), Some(&"w5"));
        assert_eq!(ids.last(), Some(&format!("w{}", MARKER_DEPTH + 4).as_str()));
    }

    #[test]
    fn the_marker_tells_whether_a_write_landed() {
        let marker = next_marker(Some("a1 b7"), "c3");
        assert!(marker_records(
            Some(&marker),
            &["zz".to_owned(), "b7".to_owned()]
        ));
        assert!(marker_records(Some(&marker), &["c3".to_owned()]));
        assert!(!marker_records(Some(&marker), &["c4".to_owned()]));
        assert!(!marker_records(None, &["c3".to_owned()]));
    }
}
