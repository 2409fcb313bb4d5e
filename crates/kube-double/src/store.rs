//! The stored objects and the resource version: one global counter, like etcd's revision,
//! that every change of any object advances; plus helpers to read and write object metadata
//! the way Go's typed decoding sees it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::ids::Prng;

/// The first resource version the double hands out is `FIRST_REVISION + 1`, so that small
/// numbers such as `"1"` are always stale, as they are on a real cluster.
const FIRST_REVISION: u64 = 1000;

/// Objects by `(namespace, name)`, in etcd's key order.
pub(crate) type Objects = BTreeMap<(String, String), Value>;

/// How many changes of pods and budgets the store remembers, so that a watch can start from a
/// resource version that is not the latest (as etcd keeps history until it compacts it). A
/// watch from further back is answered 410 `Expired`.
const HISTORY: usize = 4096;

/// The collections watches follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Watched {
    Pods,
    Pdbs,
}

/// One change of a watched collection: its revision, where, and the object before it (`None`:
/// it was created).
#[derive(Debug)]
struct Change {
    revision: u64,
    collection: Watched,
    key: (String, String),
    before: Option<Value>,
}

/// Everything the double stores.
#[derive(Debug)]
pub(crate) struct Store {
    revision: u64,
    prng: Prng,
    pub pods: Objects,
    pub pdbs: Objects,
    pub events: Vec<Value>,
    /// MutatingWebhookConfigurations, by `("", name)`.
    pub webhook_configs: Objects,
    /// Namespace labels (for webhooks' `namespaceSelector`); every namespace also has
    /// `kubernetes.io/metadata.name`.
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Service-account tokens: the signing key, account uids, reviews cached.
    pub tokens: Tokens,
    /// Continue tokens issued at or before this revision have expired (410), as after etcd
    /// compacted the snapshot they page through.
    pub compacted: u64,
    /// The latest changes of pods and budgets, oldest first (at most [`HISTORY`]).
    history: VecDeque<Change>,
    /// The revision of the newest change no longer in `history`.
    forgotten: u64,
    /// Told the revision whenever a pod or budget changes: what watches wait on.
    changes: watch::Sender<u64>,
}

/// The strings of a JSON array (`[]` for anything else, and non-strings left out), as Go
/// decodes a `[]string` field it is lenient about.
pub(crate) fn string_list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// How long the API server trusts a token it has authenticated without checking again.
pub(crate) const DEFAULT_TOKEN_CACHE: Duration = Duration::from_secs(10);

/// What the token API keeps (see [`crate::tokens`]): the signing key, the service accounts'
/// uids, and the cache of successful reviews.
pub(crate) struct Tokens {
    pub key: ring::hmac::Key,
    pub accounts: HashMap<(String, String), String>,
    pub cache: HashMap<String, (Instant, Value)>,
    pub cache_for: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("accounts", &self.accounts.len())
            .field("cache_for", &self.cache_for)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    fn new(seed: u64) -> Tokens {
        let mut prng = Prng::new(seed ^ 0x70_4E);
        let secret: Vec<u8> = (0..4).flat_map(|_| prng.next_u64().to_le_bytes()).collect();
        Tokens {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            accounts: HashMap::new(),
            cache: HashMap::new(),
            cache_for: DEFAULT_TOKEN_CACHE,
        }
    }
}

impl Store {
    pub(crate) fn new(seed: u64) -> Store {
        Store {
            revision: FIRST_REVISION,
            prng: Prng::new(seed),
            pods: Objects::new(),
            pdbs: Objects::new(),
            events: Vec::new(),
            webhook_configs: Objects::new(),
            namespace_labels: BTreeMap::new(),
            tokens: Tokens::new(seed),
            compacted: 0,
            history: VecDeque::new(),
            forgotten: 0,
            changes: watch::Sender::new(FIRST_REVISION),
        }
    }

    /// The current revision as a number.
    pub(crate) fn revision_number(&self) -> u64 {
        self.revision
    }

    /// The pods or the budgets.
    pub(crate) fn objects(&self, collection: Watched) -> &Objects {
        match collection {
            Watched::Pods => &self.pods,
            Watched::Pdbs => &self.pdbs,
        }
    }

    /// Stores `object` at `key` as a change of the current revision (the caller has advanced
    /// it and stamped the object's resource version); returns what was there.
    pub(crate) fn put(&mut self, collection: Watched, key: (String, String), object: Value) {
        let objects = match collection {
            Watched::Pods => &mut self.pods,
            Watched::Pdbs => &mut self.pdbs,
        };
        let before = objects.insert(key.clone(), object);
        self.remember(collection, key, before);
    }

    /// Removes the object at `key` as a change of the current revision (the caller has advanced
    /// it); returns it, or `None` (and nothing changes) if there was none.
    pub(crate) fn remove(&mut self, collection: Watched, key: &(String, String)) -> Option<Value> {
        let objects = match collection {
            Watched::Pods => &mut self.pods,
            Watched::Pdbs => &mut self.pdbs,
        };
        let removed = objects.remove(key)?;
        self.remember(collection, key.clone(), Some(removed.clone()));
        Some(removed)
    }

    fn remember(&mut self, collection: Watched, key: (String, String), before: Option<Value>) {
        self.history.push_back(Change {
            revision: self.revision,
            collection,
            key,
            before,
        });
        while self.history.len() > HISTORY {
            if let Some(dropped) = self.history.pop_front() {
                self.forgotten = dropped.revision;
            }
        }
        self.changes.send_replace(self.revision);
    }

    /// Whoever waits for pods or budgets to change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The pods or budgets as they were at `revision`, or `None` when the store no longer
    /// knows (its history does not reach back that far, or it was compacted since).
    pub(crate) fn objects_at(&self, collection: Watched, revision: u64) -> Option<Objects> {
        if revision < self.forgotten || (self.compacted > 0 && revision <= self.compacted) {
            return None;
        }
        let mut objects = self.objects(collection).clone();
        let later = self
            .history
            .iter()
            .rev()
            .take_while(|change| change.revision > revision);
        for change in later.filter(|change| change.collection == collection) {
            match &change.before {
                Some(before) => objects.insert(change.key.clone(), before.clone()),
                None => objects.remove(&change.key),
            };
        }
        Some(objects)
    }

    /// The current revision (a list's `metadata.resourceVersion`).
    pub(crate) fn revision(&self) -> String {
        self.revision.to_string()
    }

    /// Advances the revision for a write and returns the new resource version.
    pub(crate) fn next_revision(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }

    /// A new object uid.
    pub(crate) fn uid(&mut self) -> String {
        self.prng.uuid()
    }

    /// A `generateName` suffix.
    pub(crate) fn name_suffix(&mut self) -> String {
        self.prng.name_suffix()
    }
}

/// `metadata.<field>` as a string (empty if absent).
pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata`, created if missing. Callers decode objects first, so `metadata` is an object.
pub(crate) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = Value::Object(Map::new());
    }
    match object.get_mut("metadata") {
        Some(Value::Object(metadata)) => metadata,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// `metadata.labels` or `metadata.annotations` as a map (empty if absent).
pub(crate) fn string_map(object: &Value, field: &str) -> BTreeMap<String, String> {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `metadata.labels` or `metadata.annotations`; an empty map disappears, as Go's
/// `omitempty` makes it.
pub(crate) fn set_string_map(object: &mut Value, field: &str, map: &BTreeMap<String, String>) {
    let metadata = metadata_mut(object);
    if map.is_empty() {
        metadata.remove(field);
    } else {
        let map = map
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect();
        metadata.insert(field.to_string(), Value::Object(map));
    }
}

/// Checks an object the way decoding it into a Go struct would, and normalises what Go
/// would: `metadata` must be an object; its string fields strings; `labels` and
/// `annotations` maps of strings, where `null` values become `""` and an empty or `null` map
/// disappears. The error is Go's `encoding/json` message.
pub(crate) fn decode_metadata(object: &mut Value, kind: &str) -> Result<(), String> {
    if !object.is_object() {
        return Err(format!(
            "json: cannot unmarshal {} into Go value of type v1.{kind}",
            json_type(object)
        ));
    }
    match object.get("metadata") {
        None | Some(Value::Null | Value::Object(_)) => {}
        Some(other) => {
            return Err(format!(
                "json: cannot unmarshal {} into Go struct field {kind}.metadata of type v1.ObjectMeta",
                json_type(other)
            ));
        }
    }
    let metadata = metadata_mut(object);
    for field in [
        "name",
        "generateName",
        "namespace",
        "uid",
        "resourceVersion",
        "selfLink",
    ] {
        match metadata.get(field) {
            None | Some(Value::String(_)) => {}
            Some(Value::Null) => {
                metadata.remove(field);
            }
            Some(other) => {
                return Err(format!(
                    "json: cannot unmarshal {} into Go struct field ObjectMeta.metadata.{field} of type string",
                    json_type(other)
                ));
            }
        }
    }
    for field in ["labels", "annotations"] {
        let map = match metadata.get_mut(field) {
            None => continue,
            Some(Value::Null) => {
                metadata.remove(field);
                continue;
            }
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(format!(
                    "json: cannot unmarshal {} into Go struct field ObjectMeta.metadata.{field} of type map[string]string",
                    json_type(other)
                ));
            }
        };
        for value in map.values_mut() {
            match value {
                Value::String(_) => {}
                Value::Null => *value = Value::from(""),
                other => {
                    return Err(format!(
                        "json: cannot unmarshal {} into Go struct field ObjectMeta.metadata.{field} of type string",
                        json_type(other)
                    ));
                }
            }
        }
        if map.is_empty() {
            metadata.remove(field);
        }
    }
    Ok(())
}

/// The name Go's `encoding/json` gives a JSON value's type in its errors.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_write_gets_a_higher_resource_version() {
        let mut store = Store::new(1);
        let first = store.revision();
        let a = store.next_revision();
        let b = store.next_revision();
        assert!(first.parse::<u64>().expect("number") < a.parse::<u64>().expect("number"));
        assert!(a.parse::<u64>().expect("number") < b.parse::<u64>().expect("number"));
        assert_eq!(store.revision(), b);
        const { assert!(FIRST_REVISION > 1, "\"1\" must always be stale") };
    }

    #[test]
    fn the_store_can_say_what_its_pods_were_at_a_remembered_revision() {
        let mut store = Store::new(1);
        let at = |store: &Store, revision: u64| {
            store
                .objects_at(Watched::Pods, revision)
                .map(|objects| objects.values().map(|o| o["v"].clone()).collect::<Vec<_>>())
        };
        let start = store.revision_number();
        let key = ("ns".to_string(), "p".to_string());
        store.next_revision();
        store.put(Watched::Pods, key.clone(), json!({"v": 1}));
        let first = store.revision_number();
        store.next_revision();
        store.put(Watched::Pods, key.clone(), json!({"v": 2}));
        store.next_revision();
        store.put(Watched::Pdbs, key.clone(), json!({"v": "budget"}));
        let second = store.revision_number();
        store.next_revision();
        assert_eq!(store.remove(Watched::Pods, &key), Some(json!({"v": 2})));
        assert_eq!(
            store.remove(Watched::Pods, &key),
            None,
            "nothing left to remove"
        );
        assert_eq!(at(&store, start), Some(vec![]));
        assert_eq!(at(&store, first), Some(vec![json!(1)]));
        assert_eq!(at(&store, second), Some(vec![json!(2)]));
        assert_eq!(at(&store, store.revision_number()), Some(vec![]));
        assert_eq!(
            store
                .objects_at(Watched::Pdbs, first)
                .map(|objects| objects.len()),
            Some(0),
            "the budget came later"
        );
        let changes = store.subscribe();
        assert!(!changes.has_changed().expect("open"));
        store.next_revision();
        store.put(Watched::Pods, key.clone(), json!({"v": 3}));
        assert!(changes.has_changed().expect("open"), "watchers are told");
    }

    #[test]
    fn the_store_forgets_the_oldest_changes_and_compaction_forgets_them_all() {
        let mut store = Store::new(1);
        let start = store.revision_number();
        for n in 0..=HISTORY {
            store.next_revision();
            store.put(Watched::Pods, ("ns".into(), format!("p{n}")), json!({}));
        }
        assert_eq!(store.objects_at(Watched::Pods, start), None, "too far back");
        let recent = store.revision_number() - 10;
        assert_eq!(
            store.objects_at(Watched::Pods, recent).map(|o| o.len()),
            Some(HISTORY + 1 - 10)
        );
        store.compacted = store.revision_number();
        assert_eq!(store.objects_at(Watched::Pods, recent), None);
    }

    #[test]
    fn decoding_turns_null_label_values_into_empty_strings_and_drops_empty_maps() {
        let mut pod = json!({"metadata": {"labels": {"a": null, "b": "x"}, "annotations": {}}});
        decode_metadata(&mut pod, "Pod").expect("decodes");
        assert_eq!(pod, json!({"metadata": {"labels": {"a": "", "b": "x"}}}));
    }

    #[test]
    fn decoding_refuses_labels_that_are_not_strings() {
        let mut pod = json!({"metadata": {"labels": {"a": 1}}});
        assert_eq!(
            decode_metadata(&mut pod, "Pod").expect_err("number"),
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type string"
        );
        let mut pod = json!({"metadata": {"labels": ["a"]}});
        assert!(decode_metadata(&mut pod, "Pod").is_err());
        assert!(decode_metadata(&mut json!([1]), "Pod").is_err());
        assert!(decode_metadata(&mut json!({"metadata": {"resourceVersion": 5}}), "Pod").is_err());
    }

    #[test]
    fn string_maps_round_trip_and_empty_maps_disappear() {
        let mut pod = json!({"metadata": {"name": "p"}});
        let mut labels = BTreeMap::new();
        labels.insert("a".to_string(), "1".to_string());
        set_string_map(&mut pod, "labels", &labels);
        assert_eq!(string_map(&pod, "labels"), labels);
        set_string_map(&mut pod, "labels", &BTreeMap::new());
        assert_eq!(pod, json!({"metadata": {"name": "p"}}));
        assert_eq!(meta_str(&pod, "name"), "p");
        assert_eq!(meta_str(&pod, "uid"), "");
    }
}
