//! What every kind of object shares: server-wide options, store keys, body decoding, generated
//! names, namespaces, creation stamps, and paged lists with field and label selectors.

use kube_labels::Selector;
use serde_json::{Map, Value, json};
use std::ops::Bound;

use crate::ids;
use crate::routes::{FieldSelector, Query};
use crate::status::ApiError;
use crate::store::{self, Objects, Store, meta_str, metadata_mut, string_map};

/// Server-wide behaviour that requests depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Options {
    /// Whether a disruption controller keeps budget statuses up to date (as on a real
    /// cluster). Without one, every budget is "still being processed" forever.
    pub disruption_controller: bool,
}

pub(crate) fn key(namespace: &str, name: &str) -> (String, String) {
    (namespace.to_string(), name.to_string())
}

pub(crate) fn decode_body(body: &[u8], kind: &str) -> Result<Value, ApiError> {
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("json parse error: {e}")))?;
    store::decode_metadata(&mut value, kind).map_err(ApiError::bad_request)?;
    Ok(value)
}

pub(crate) fn list_item(object: &Value) -> Value {
    let mut item = object.clone();
    if let Value::Object(fields) = &mut item {
        fields.remove("kind");
        fields.remove("apiVersion");
    }
    item
}

pub(crate) fn field_value(object: &Value, field: &str) -> String {
    field
        .split('.')
        .try_fold(object, |value, part| value.get(part))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A list of objects of one kind, with selectors, `limit` and `continue`.
pub(crate) fn list(
    store: &Store,
    objects: &Objects,
    namespace: Option<&str>,
    query: &Query,
    supported_fields: &[&str],
    serve: &dyn Fn(&Value) -> Value,
) -> Result<(Vec<Value>, Map<String, Value>), ApiError> {
    let labels = Selector::parse(query.get("labelSelector").unwrap_or_default())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or_default())?;
    fields.check(supported_fields)?;
    let limit = match query.get("limit") {
        None | Some("") => None,
        Some(text) => match text.parse::<usize>() {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) => return Err(ApiError::bad_request(format!("invalid limit {text:?}"))),
        },
    };
    let start = match query.get("continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(token) => Some(decode_continue(store, token)?),
    };
    // Keys sort by namespace, then name: a page starts where the namespace (or the continue
    // token) does, and the selectors are only evaluated when there are any (a sweep of a large
    // fleet lists every pod, page after page).
    let from = match (&start, namespace) {
        (Some(after), _) => Bound::Excluded(after.clone()),
        (None, Some(ns)) => Bound::Included((ns.to_owned(), String::new())),
        (None, None) => Bound::Unbounded,
    };
    let matching: Vec<(&(String, String), &Value)> = objects
        .range((from, Bound::Unbounded))
        .skip_while(|((ns, _), _)| namespace.is_some_and(|wanted| wanted != ns))
        .take_while(|((ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
        .filter(|(_, object)| labels.is_empty() || labels.matches(&string_map(object, "labels")))
        .filter(|(_, object)| fields.terms.is_empty() || fields.matches(|f| field_value(object, f)))
        .collect();
    let mut metadata = Map::new();
    let page = match limit {
        Some(limit) if matching.len() > limit => {
            let last = matching[limit - 1].0;
            metadata.insert("continue".into(), Value::from(encode_continue(store, last)));
            if labels.is_empty() && fields.terms.is_empty() {
                metadata.insert(
                    "remainingItemCount".into(),
                    Value::from(matching.len() - limit),
                );
            }
            &matching[..limit]
        }
        _ => &matching[..],
    };
    Ok((
        page.iter()
            .map(|(_, object)| list_item(&serve(object)))
            .collect(),
        metadata,
    ))
}

pub(crate) fn encode_continue(store: &Store, last: &(String, String)) -> String {
    use base64::Engine as _;
    let token = json!({"v": "meta.k8s.io/v1", "rv": store.revision().parse::<u64>().unwrap_or(0), "start": format!("{}/{}\u{0}", last.0, last.1)});
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}

pub(crate) fn decode_continue(store: &Store, token: &str) -> Result<(String, String), ApiError> {
    use base64::Engine as _;
    let invalid = || ApiError::bad_request("continue key is not valid");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| invalid())?;
    let token: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if token.get("rv").and_then(Value::as_u64).unwrap_or(0) <= store.compacted {
        return Err(ApiError::expired_continue());
    }
    let start = token
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(invalid)?;
    let start = start.strip_suffix('\u{0}').unwrap_or(start);
    let (ns, name) = start.split_once('/').ok_or_else(invalid)?;
    Ok((ns.to_string(), name.to_string()))
}

/// Takes the name from `metadata.name` or makes one from `metadata.generateName`.
pub(crate) fn assign_name(store: &mut Store, object: &mut Value) -> String {
    let name = meta_str(object, "name").to_string();
    let generate = meta_str(object, "generateName").to_string();
    if name.is_empty() && !generate.is_empty() {
        let generated = format!("{generate}{}", store.name_suffix());
        metadata_mut(object).insert("name".into(), Value::from(generated.clone()));
        return generated;
    }
    name
}

/// Checks the namespace of a new object against the request's, and sets it.
pub(crate) fn claim_namespace(object: &mut Value, namespace: &str) -> Result<(), ApiError> {
    let given = meta_str(object, "namespace");
    if !given.is_empty() && given != namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    metadata_mut(object).insert("namespace".into(), Value::from(namespace));
    Ok(())
}

/// Sets what the server owns on a new object: uid, creation time, self link; drops what a
/// client may not set.
pub(crate) fn stamp_new(
    store: &mut Store,
    object: &mut Value,
    link: String,
) -> Result<(), ApiError> {
    if !meta_str(object, "resourceVersion").is_empty() {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let uid = store.uid();
    let metadata = metadata_mut(object);
    metadata.insert("selfLink".into(), Value::from(link));
    metadata.insert("uid".into(), Value::from(uid));
    metadata.insert("creationTimestamp".into(), Value::from(ids::now()));
    for field in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
    ] {
        metadata.remove(field);
    }
    Ok(())
}
