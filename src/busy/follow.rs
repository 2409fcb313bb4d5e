//! Keeping a copy of a collection current, the way client-go's reflector does: list it (paged),
//! then watch from the list's resource version, opening the watch again from the last version
//! seen when the server closes it, and listing again when that version has expired (410). The
//! cluster is read once and then only the changes: no polling.
//!
//! [`Copy`] is the pure part (a list replaces it, each change updates it); [`follow`] the task
//! that feeds it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::cluster::{Change, Cluster, Collection, Failure, WATCH_SECONDS};
use super::objects::Key;

/// An object a copy keeps: where it is and its version.
pub(crate) trait Kept: Clone {
    /// Namespace and name.
    fn key(&self) -> Key;
    /// `metadata.resourceVersion`.
    fn version(&self) -> &str;
}

impl Kept for super::objects::Pod {
    fn key(&self) -> Key {
        super::objects::Pod::key(self)
    }
    fn version(&self) -> &str {
        &self.resource_version
    }
}

impl Kept for super::objects::Budget {
    fn key(&self) -> Key {
        super::objects::Budget::key(self)
    }
    fn version(&self) -> &str {
        &self.resource_version
    }
}

/// What the copy of a collection has to take in.
#[derive(Debug)]
pub(crate) enum Update<T> {
    /// A whole (new) list: it replaces the copy.
    Listed(Vec<T>),
    /// One object added or changed.
    Put(T),
    /// One object gone (or out of the selectors).
    Gone(Key),
    /// Reading failed; the task tries again (the copy keeps what it had).
    Failed(Failure),
}

/// The local copy of a collection.
#[derive(Debug, Clone)]
pub(crate) struct Copy<T> {
    pub(crate) items: BTreeMap<Key, T>,
}

impl<T: Kept> Default for Copy<T> {
    fn default() -> Self {
        Copy {
            items: BTreeMap::new(),
        }
    }
}

impl<T: Kept> Copy<T> {
    /// Takes in an update; returns whether the copy changed.
    pub(crate) fn apply(&mut self, update: Update<T>) -> bool {
        match update {
            Update::Listed(items) => {
                let items: BTreeMap<Key, T> =
                    items.into_iter().map(|item| (item.key(), item)).collect();
                let changed = items.len() != self.items.len()
                    || items.iter().any(|(key, item)| {
                        self.items
                            .get(key)
                            .is_none_or(|kept| kept.version() != item.version())
                    });
                self.items = items;
                changed
            }
            Update::Put(item) => {
                let key = item.key();
                let changed = self
                    .items
                    .get(&key)
                    .is_none_or(|kept| kept.version() != item.version());
                self.items.insert(key, item);
                changed
            }
            Update::Gone(key) => self.items.remove(&key).is_some(),
            Update::Failed(_) => false,
        }
    }
}

/// How long to wait before reading again after a failure: doubling from 1 s to 30 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
}

/// Lists `collection`, then watches it for as long as the receiver of `updates` lives, sending
/// each object, made what the copy keeps by `keep`, as an [`Update`]. Failures are sent
/// too, and reading starts again after a pause.
pub(crate) async fn follow<I, T>(
    cluster: Cluster,
    collection: Collection,
    keep: impl Fn(I) -> T,
    updates: mpsc::Sender<Update<T>>,
) where
    I: DeserializeOwned,
    T: Kept,
{
    let mut failures: u32 = 0;
    loop {
        let version = match cluster.list::<I>(&collection).await {
            Ok((items, version)) => {
                failures = 0;
                let kept = items.into_iter().map(&keep).collect();
                if updates.send(Update::Listed(kept)).await.is_err() {
                    return;
                }
                version
            }
            Err(failure) => {
                if updates.send(Update::Failed(failure)).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff(failures)).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        if !watch(
            &cluster,
            &collection,
            version,
            &keep,
            &updates,
            &mut failures,
        )
        .await
        {
            return;
        }
    }
}

/// Watches from `version` until the version expires (returns `true`: list again) or nobody
/// listens any more (`false`). Each watch is opened again from the last version seen.
async fn watch<I, T>(
    cluster: &Cluster,
    collection: &Collection,
    mut version: String,
    keep: &impl Fn(I) -> T,
    updates: &mpsc::Sender<Update<T>>,
    failures: &mut u32,
) -> bool
where
    I: DeserializeOwned,
    T: Kept,
{
    // A connection that died without a word would otherwise keep the watch waiting forever.
    let session = Duration::from_secs(u64::from(WATCH_SECONDS).saturating_add(30));
    loop {
        let failure = match cluster.watch(collection, &version).await {
            Ok(mut events) => {
                let started = tokio::time::Instant::now();
                let ends = started.checked_add(session).unwrap_or(started);
                let mut failure = None;
                while let Ok(Some(event)) = tokio::time::timeout_at(ends, events.next::<I>()).await
                {
                    let update = match event {
                        Ok(Change::Put(object)) => {
                            let item = keep(object);
                            version = item.version().to_owned();
                            Update::Put(item)
                        }
                        Ok(Change::Gone(object)) => {
                            let item = keep(object);
                            version = item.version().to_owned();
                            Update::Gone(item.key())
                        }
                        Ok(Change::Bookmark(at)) => {
                            version = at;
                            continue;
                        }
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    };
                    *failures = 0;
                    if updates.send(update).await.is_err() {
                        return false;
                    }
                }
                failure
            }
            Err(failure) => Some(failure),
        };
        let Some(failure) = failure else {
            // The server closed the watch after its time: open it again.
            continue;
        };
        if failure.expired {
            return true;
        }
        if updates.send(Update::Failed(failure)).await.is_err() {
            return false;
        }
        tokio::time::sleep(backoff(*failures)).await;
        *failures = failures.saturating_add(1);
        // After a few failures in a row, start from a fresh list.
        if *failures >= 3 {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::busy::objects::Pod;

    fn pod(name: &str, version: &str) -> Pod {
        Pod {
            namespace: "ci".to_owned(),
            name: name.to_owned(),
            resource_version: version.to_owned(),
            ..Pod::default()
        }
    }

    #[test]
    fn a_list_replaces_the_copy_and_changes_update_it() {
        let mut copy = Copy::default();
        assert!(copy.apply(Update::Listed(vec![pod("a", "1"), pod("b", "2")])));
        assert!(
            !copy.apply(Update::Listed(vec![pod("b", "2"), pod("a", "1")])),
            "the same list again changes nothing"
        );
        assert!(copy.apply(Update::Put(pod("a", "3"))));
        assert!(!copy.apply(Update::Put(pod("a", "3"))), "a repeated event");
        assert!(copy.apply(Update::Gone(("ci".to_owned(), "b".to_owned()))));
        assert!(!copy.apply(Update::Gone(("ci".to_owned(), "b".to_owned()))));
        assert!(!copy.apply(Update::Failed(Failure {
            refused: false,
            expired: false,
            message: "down".to_owned()
        })));
        let names: Vec<&str> = copy.items.values().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a"]);
        assert!(copy.apply(Update::Listed(vec![])), "a list without a");
        assert!(copy.items.is_empty());
    }

    #[test]
    fn failures_back_off_from_one_second_to_thirty() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(16));
        assert_eq!(backoff(5), Duration::from_secs(30));
        assert_eq!(backoff(100), Duration::from_secs(30));
    }
}
