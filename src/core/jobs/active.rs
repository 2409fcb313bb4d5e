//! The annotations set while a pod is busy (`--active-annotation`, `--pod-deletion-cost`): their
//! values after a batch, with the pod's own values saved on the way into busy and restored at
//! zero.

use super::JobState;

/// The values `--active-annotation` keys should have after a batch that took the count from
/// `before` to `after`, updating the saved originals in `state`.
///
/// Busy (count above zero): each key holds the configured value; on the way into busy a value
/// the pod already carried is saved first. Idle: each key gets its saved value back, or is
/// removed if it had none. Returns `(key, desired value)` for every configured key.
pub fn active_annotations<'a>(
    configured: &'a [(String, String)],
    current: impl Fn(&str) -> Option<&'a str>,
    state: &mut JobState,
    before: i64,
    after: i64,
) -> Vec<(&'a str, Option<String>)> {
    let mut desired = Vec::with_capacity(configured.len());
    for (key, value) in configured {
        let now = current(key);
        let wanted = if after > 0 {
            if before <= 0
                && let Some(original) = now
                && !state.saved.contains_key(key)
            {
                state.saved.insert(key.clone(), original.to_owned());
            }
            Some(value.clone())
        } else if before > 0 || state.saved.contains_key(key) {
            state.saved.remove(key)
        } else {
            // Idle before and after: leave whatever the pod carries alone.
            now.map(str::to_owned)
        };
        desired.push((key.as_str(), wanted));
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> Vec<(String, String)> {
        vec![
            ("karpenter.sh/do-not-disrupt".into(), "true".into()),
            (
                "cluster-autoscaler.kubernetes.io/safe-to-evict".into(),
                "false".into(),
            ),
        ]
    }

    #[test]
    fn active_annotations_are_set_while_busy_and_removed_at_zero() {
        let keys = configured();
        let mut state = JobState::default();
        let busy = active_annotations(&keys, |_| None, &mut state, 0, 1);
        assert_eq!(
            busy,
            vec![
                ("karpenter.sh/do-not-disrupt", Some("true".into())),
                (
                    "cluster-autoscaler.kubernetes.io/safe-to-evict",
                    Some("false".into())
                ),
            ]
        );
        assert!(state.saved.is_empty());
        let idle = active_annotations(&keys, |_| Some("true"), &mut state, 1, 0);
        assert!(idle.iter().all(|(_, value)| value.is_none()), "{idle:?}");
    }

    #[test]
    fn a_value_the_pod_carried_before_is_restored_at_zero() {
        let keys = configured();
        let mut state = JobState::default();
        let before = |key: &str| (key == "karpenter.sh/do-not-disrupt").then_some("false");
        active_annotations(&keys, before, &mut state, 0, 2);
        assert_eq!(
            state
                .saved
                .get("karpenter.sh/do-not-disrupt")
                .map(String::as_str),
            Some("false")
        );
        let still_busy = active_annotations(&keys, |_| Some("true"), &mut state, 2, 1);
        assert_eq!(still_busy[0].1.as_deref(), Some("true"));
        assert_eq!(state.saved.len(), 1, "saved once, on the way into busy");
        let idle = active_annotations(&keys, |_| Some("true"), &mut state, 1, 0);
        assert_eq!(
            idle[0],
            ("karpenter.sh/do-not-disrupt", Some("false".into()))
        );
        assert_eq!(idle[1].1, None);
        assert!(state.saved.is_empty(), "nothing left to restore");
    }

    #[test]
    fn an_idle_pod_keeps_its_own_annotations() {
        let keys = configured();
        let mut state = JobState::default();
        let idle = active_annotations(&keys, |_| Some("mine"), &mut state, 0, 0);
        assert!(
            idle.iter()
                .all(|(_, value)| value.as_deref() == Some("mine"))
        );
    }
}
