//! The counting label and the two annotations named after it: one type owns all three names,
//! so that nothing derives `-writes` or `-jobs` on its own.

/// The suffix of the annotation that records recent write ids.
const MARKER_SUFFIX: &str = "-writes";
/// The suffix of the annotation that holds the keyed jobs.
const JOBS_SUFFIX: &str = "-jobs";

/// The keys the tracker writes on a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerKeys {
    /// The label that holds the count (`--label`, default `active-jobs`).
    pub label: String,
    /// `<label>-writes`: recent write ids (see [`crate::core::guard::next_marker`]).
    pub marker_annotation: String,
    /// `<label>-jobs`: the keyed jobs (see [`crate::core::jobs`]).
    pub jobs_annotation: String,
}

impl TrackerKeys {
    /// The keys for `label`, which must be a valid label key with room for the longer suffix
    /// in its name part; the error says why not.
    pub fn new(label: &str) -> Result<Self, String> {
        kube_labels::validate_label_key(label).map_err(|problems| problems.join("; "))?;
        let marker_annotation = format!("{label}{MARKER_SUFFIX}");
        if kube_labels::validate_label_key(&marker_annotation).is_err() {
            return Err(format!(
                "its name part must leave room for the \"{MARKER_SUFFIX}\" suffix of the marker annotation (at most 56 characters)"
            ));
        }
        Ok(TrackerKeys {
            label: label.to_owned(),
            marker_annotation,
            jobs_annotation: format!("{label}{JOBS_SUFFIX}"),
        })
    }

    /// Whether `key` is one of the tracker's own annotations.
    pub fn is_own_annotation(&self, key: &str) -> bool {
        key == self.marker_annotation || key == self.jobs_annotation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotations_are_named_after_the_label() {
        let keys = TrackerKeys::new("example.com/active-jobs").expect("valid");
        assert_eq!(keys.marker_annotation, "example.com/active-jobs-writes");
        assert_eq!(keys.jobs_annotation, "example.com/active-jobs-jobs");
        assert!(keys.is_own_annotation("example.com/active-jobs-jobs"));
        assert!(!keys.is_own_annotation("example.com/active-jobs"));
    }

    #[test]
    fn a_label_without_room_for_the_suffix_is_refused() {
        let longest = "a".repeat(56);
        assert!(TrackerKeys::new(&longest).is_ok());
        let error = TrackerKeys::new(&"a".repeat(57)).expect_err("no room");
        assert!(error.contains("-writes"), "{error}");
        assert!(TrackerKeys::new("bad key!").is_err());
    }
}
