//! Patches applied the way kube-apiserver applies them: JSON merge patch, strategic merge
//! patch (as a merge patch), and JSON patch with the quirks of the `evanphx/json-patch`
//! library the server uses.

use json_patch::PatchOperation;
use serde_json::Value;

use crate::status::ApiError;

/// The patch formats, told apart by the request's content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`, treated as a merge patch: exact for maps
    /// such as `metadata.labels` and `metadata.annotations`, which is all this double needs.
    Strategic,
}

impl PatchType {
    /// The patch type of a `Content-Type` header value, ignoring parameters.
    pub(crate) fn from_content_type(content_type: &str) -> Option<PatchType> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            _ => None,
        }
    }
}

/// Applies `body` (a patch of type `kind`) to `doc` and returns the patched document, or the
/// error the API server answers with (as a v1.37 server answered each, unless noted):
/// - a body that is not JSON: 400 `invalid JSON patch` — except a merge patch, which the
///   recorded v1.19 server answered 500 `Invalid JSON Patch` (no reason, no details), kept so
///   that the recordings replay (v1.37 answers it like the others);
/// - a merge patch of `null`: 400 `Invalid JSON Patch`; one that is not an object: 400
///   `error decoding patch: json: cannot unmarshal <type> into Go value of type
///   map[string]interface {}`. A strategic merge patch that is not an object: the same
///   message without `error decoding patch: `; of `null`: no change;
/// - a JSON patch of `null`: no operations; one that is not a list: 400 `error decoding
///   patch: json: cannot unmarshal <type> into Go value of type []handlers.jsonPatchOp`, or
///   `... handlers.jsonPatchOp` for an operation that is neither an object nor `null`;
/// - a JSON patch operation that does not apply (failed `test`, `remove` of a missing
///   member, `add` or `replace` under a missing parent, unknown or missing `op`, a `null`
///   operation): 422 `Invalid` with the generic message and `details: {}`.
pub(crate) fn apply(kind: PatchType, doc: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return Err(match kind {
            PatchType::Merge => ApiError::plain_internal("Invalid JSON Patch"),
            PatchType::Json | PatchType::Strategic => ApiError::bad_request("invalid JSON patch"),
        });
    };
    let cannot_unmarshal = |value: &Value, into: &str| {
        format!(
            "json: cannot unmarshal {} into Go value of type {into}",
            crate::store::json_type(value)
        )
    };
    const MAP: &str = "map[string]interface {}";
    match kind {
        PatchType::Merge => match &patch {
            Value::Object(_) => Ok(merge(doc, &patch)),
            Value::Null => Err(ApiError::bad_request("Invalid JSON Patch")),
            other => Err(ApiError::bad_request(format!(
                "error decoding patch: {}",
                cannot_unmarshal(other, MAP)
            ))),
        },
        PatchType::Strategic => match &patch {
            Value::Object(_) | Value::Null => Ok(merge(doc, &patch)),
            other => Err(ApiError::bad_request(cannot_unmarshal(other, MAP))),
        },
        PatchType::Json => {
            let ops = match patch {
                Value::Array(ops) => ops,
                Value::Null => Vec::new(),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "error decoding patch: {}",
                        cannot_unmarshal(&other, "[]handlers.jsonPatchOp")
                    )));
                }
            };
            if let Some(op) = ops.iter().find(|op| !(op.is_object() || op.is_null())) {
                return Err(ApiError::bad_request(format!(
                    "error decoding patch: {}",
                    cannot_unmarshal(op, "handlers.jsonPatchOp")
                )));
            }
            let mut doc = doc.clone();
            for op in &ops {
                apply_operation(&mut doc, op).map_err(|_| ApiError::rejected())?;
            }
            Ok(doc)
        }
    }
}

/// RFC 7386 merge, except that a `null` patch changes nothing (a strategic merge patch of
/// `null` is decoded into an empty patch document).
fn merge(doc: &Value, patch: &Value) -> Value {
    let mut doc = doc.clone();
    if !patch.is_null() {
        json_patch::merge(&mut doc, patch);
    }
    doc
}

/// Applies one JSON patch operation. Operations are applied one at a time so that they can
/// follow `evanphx/json-patch` (v4, which kube-apiserver v1.37 still uses) where it departs
/// from RFC 6902:
/// - a `test` for `null` passes when the member is absent (or null) as long as its parent
///   exists;
/// - a `replace` of a member that an existing object lacks adds it (its `replace` sets the
///   key without looking whether it is there; a v1.37 server answered 200 and stored the
///   label). Under a missing parent, or past the end of an array, it fails.
///
/// Everything else is strict RFC 6902 (`remove` of a missing member fails).
fn apply_operation(doc: &mut Value, op: &Value) -> Result<(), String> {
    let kind = op.get("op").and_then(Value::as_str).unwrap_or("unknown");
    let path = op.get("path").and_then(Value::as_str);
    if kind == "test" && op.get("value").is_none_or(Value::is_null) {
        return test_null(doc, path.ok_or("test operation missing path")?);
    }
    let mut op = op.clone();
    if kind == "replace"
        && let Some(path) = path
        && matches!(parent(doc, path), Ok((Value::Object(map), key)) if !map.contains_key(&key))
    {
        op["op"] = Value::from("add");
    }
    let operation: PatchOperation = serde_json::from_value(op).map_err(|e| e.to_string())?;
    json_patch::patch(doc, &[operation]).map_err(|e| e.to_string())
}

/// The container a non-empty JSON pointer points into, and the last (decoded) token.
fn parent<'a>(doc: &'a Value, path: &str) -> Result<(&'a Value, String), String> {
    let missing = || format!("doc is missing path: {path}");
    let rest = path.strip_prefix('/').ok_or_else(missing)?;
    let mut parts: Vec<String> = rest.split('/').map(decode_token).collect();
    let last = parts.pop().ok_or_else(missing)?;
    let mut container = doc;
    for part in &parts {
        container = child(container, part).ok_or_else(missing)?;
    }
    if container.is_object() || container.is_array() {
        Ok((container, last))
    } else {
        Err(missing())
    }
}

/// `test` with a `null` value, as `evanphx/json-patch` does it: the parent container must
/// exist; the member may be absent or `null`.
fn test_null(doc: &Value, path: &str) -> Result<(), String> {
    if path.is_empty() {
        return if doc.is_null() {
            Ok(())
        } else {
            Err("testing value failed".into())
        };
    }
    let (container, last) =
        parent(doc, path).map_err(|why| format!("test operation does not apply: {why}"))?;
    let member = match container {
        Value::Object(map) => map.get(last.as_str()),
        Value::Array(items) => {
            let index: usize = last.parse().map_err(|_| format!("invalid index {last}"))?;
            Some(
                items
                    .get(index)
                    .ok_or_else(|| format!("invalid index {last}"))?,
            )
        }
        _ => {
            return Err(format!(
                "test operation does not apply: is missing path: {path}"
            ));
        }
    };
    match member {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(format!("testing value {path} failed")),
    }
}

fn child<'a>(value: &'a Value, token: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(token.parse::<usize>().ok()?),
        _ => None,
    }
}

/// Decodes a JSON pointer token: `~1` is `/`, `~0` is `~`.
fn decode_token(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Option<Value>) -> Value {
        let mut pod = json!({"metadata": {"name": "p", "resourceVersion": "5"}, "spec": {}});
        if let Some(labels) = labels {
            pod["metadata"]["labels"] = labels;
        }
        pod
    }

    fn json_patch(doc: &Value, ops: Value) -> Result<Value, ApiError> {
        apply(PatchType::Json, doc, ops.to_string().as_bytes())
    }

    #[test]
    fn content_types_select_the_patch_type() {
        assert_eq!(
            PatchType::from_content_type("application/json-patch+json"),
            Some(PatchType::Json)
        );
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json"),
            Some(PatchType::Strategic)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
    }

    #[test]
    fn a_merge_patch_sets_and_removes_labels() {
        let doc = pod(Some(json!({"app": "worker", "active-jobs": "1"})));
        let patched = apply(
            PatchType::Merge,
            &doc,
            br#"{"metadata":{"labels":{"active-jobs":null,"x":"2"}}}"#,
        )
        .expect("patch applies");
        assert_eq!(
            patched["metadata"]["labels"],
            json!({"app": "worker", "x": "2"})
        );
    }

    #[test]
    fn a_malformed_merge_patch_is_an_invalid_json_patch() {
        let error = apply(PatchType::Merge, &pod(None), b"{not json").expect_err("malformed");
        assert_eq!(error, ApiError::plain_internal("Invalid JSON Patch"));
    }

    #[test]
    fn a_null_merge_patch_is_a_bad_request_and_a_null_strategic_or_json_patch_changes_nothing() {
        let doc = pod(None);
        assert_eq!(
            apply(PatchType::Merge, &doc, b"null").expect_err("null"),
            ApiError::bad_request("Invalid JSON Patch")
        );
        assert_eq!(
            apply(PatchType::Strategic, &doc, b"null").expect("applies"),
            doc
        );
        assert_eq!(apply(PatchType::Json, &doc, b"null").expect("applies"), doc);
    }

    #[test]
    fn patches_of_the_wrong_shape_are_bad_requests_in_the_servers_words() {
        let doc = pod(None);
        let message = |kind, body: &str| {
            let error = apply(kind, &doc, body.as_bytes()).expect_err(body);
            assert_eq!((error.code, error.reason), (400, "BadRequest"), "{body}");
            error.message
        };
        assert_eq!(
            message(PatchType::Merge, "[]"),
            "error decoding patch: json: cannot unmarshal array into Go value of type map[string]interface {}"
        );
        assert_eq!(
            message(PatchType::Strategic, "1"),
            "json: cannot unmarshal number into Go value of type map[string]interface {}"
        );
        assert_eq!(
            message(PatchType::Json, "true"),
            "error decoding patch: json: cannot unmarshal bool into Go value of type []handlers.jsonPatchOp"
        );
        assert_eq!(
            message(PatchType::Json, "[1]"),
            "error decoding patch: json: cannot unmarshal number into Go value of type handlers.jsonPatchOp"
        );
        for kind in [PatchType::Json, PatchType::Strategic] {
            assert_eq!(message(kind, "[{"), "invalid JSON patch");
            assert_eq!(message(kind, ""), "invalid JSON patch");
        }
    }

    #[test]
    fn test_null_passes_on_an_absent_member_whose_parent_exists() {
        let doc = pod(Some(json!({"app": "worker"})));
        let ops = json!([{"op": "test", "path": "/metadata/labels/active-jobs", "value": null},
                         {"op": "add", "path": "/metadata/labels/active-jobs", "value": "1"}]);
        let patched = json_patch(&doc, ops).expect("applies");
        assert_eq!(patched["metadata"]["labels"]["active-jobs"], "1");
    }

    #[test]
    fn test_null_passes_on_an_absent_map_and_fails_on_a_present_one() {
        let ops = json!([{"op": "test", "path": "/metadata/labels", "value": null}]);
        assert!(json_patch(&pod(None), ops.clone()).is_ok());
        assert_eq!(
            json_patch(&pod(Some(json!({"a": "b"}))), ops).expect_err("map present"),
            ApiError::rejected()
        );
    }

    #[test]
    fn test_null_fails_when_the_parent_is_missing() {
        let ops = json!([{"op": "test", "path": "/metadata/labels/active-jobs", "value": null}]);
        assert_eq!(
            json_patch(&pod(None), ops).expect_err("no labels map"),
            ApiError::rejected()
        );
    }

    #[test]
    fn test_null_fails_on_a_present_member() {
        let ops = json!([{"op": "test", "path": "/metadata/labels/app", "value": null}]);
        assert!(json_patch(&pod(Some(json!({"app": "worker"}))), ops).is_err());
    }

    #[test]
    fn a_failed_test_rejects_the_whole_patch() {
        let doc = pod(Some(json!({"active-jobs": "4"})));
        let ops = json!([{"op": "test", "path": "/metadata/labels/active-jobs", "value": "3"},
                         {"op": "replace", "path": "/metadata/labels/active-jobs", "value": "4"}]);
        let error = json_patch(&doc, ops).expect_err("test fails");
        assert_eq!(
            error.to_json()["message"],
            "the server rejected our request due to an error in our request"
        );
        assert_eq!(error.to_json()["details"], json!({}));
    }

    #[test]
    fn remove_of_an_absent_member_is_rejected() {
        let ops = json!([{"op": "remove", "path": "/metadata/labels/active-jobs"}]);
        assert!(json_patch(&pod(Some(json!({"app": "worker"}))), ops).is_err());
    }

    #[test]
    fn add_under_a_missing_map_is_rejected() {
        let ops = json!([{"op": "add", "path": "/metadata/labels/active-jobs", "value": "1"}]);
        assert!(json_patch(&pod(None), ops).is_err());
    }

    #[test]
    fn escaped_slashes_and_tildes_address_prefixed_keys() {
        let doc = pod(Some(json!({"example.com/active-jobs": "2", "a~b": "x"})));
        let ops = json!([{"op": "test", "path": "/metadata/labels/example.com~1active-jobs", "value": "2"},
                         {"op": "replace", "path": "/metadata/labels/example.com~1active-jobs", "value": "3"},
                         {"op": "test", "path": "/metadata/labels/a~0c", "value": null},
                         {"op": "move", "from": "/metadata/labels/a~0b", "path": "/metadata/labels/a~0c"},
                         {"op": "copy", "from": "/metadata/labels/a~0c", "path": "/metadata/labels/d"}]);
        let patched = json_patch(&doc, ops).expect("applies");
        assert_eq!(
            patched["metadata"]["labels"],
            json!({"example.com/active-jobs": "3", "a~c": "x", "d": "x"})
        );
    }

    #[test]
    fn replace_of_a_member_an_existing_map_lacks_adds_it() {
        let ops = json!([{"op": "replace", "path": "/metadata/labels/active-jobs", "value": "1"}]);
        let patched = json_patch(&pod(Some(json!({"app": "worker"}))), ops).expect("applies");
        assert_eq!(
            patched["metadata"]["labels"],
            json!({"app": "worker", "active-jobs": "1"})
        );
    }

    #[test]
    fn replace_under_a_missing_map_or_past_an_array_is_rejected() {
        let ops = json!([{"op": "replace", "path": "/metadata/labels/active-jobs", "value": "1"}]);
        assert!(json_patch(&pod(None), ops).is_err());
        let doc = json!({"items": ["a"]});
        let ops = json!([{"op": "replace", "path": "/items/1", "value": "b"}]);
        assert!(json_patch(&doc, ops).is_err());
    }

    #[test]
    fn a_test_on_the_resource_version_guards_the_write() {
        let ops = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}]);
        assert!(json_patch(&pod(None), ops).is_err());
        let ops = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "5"}]);
        assert!(json_patch(&pod(None), ops).is_ok());
    }

    #[test]
    fn unknown_operations_are_rejected_and_non_lists_are_bad_requests() {
        assert_eq!(
            json_patch(&pod(None), json!([{"op": "frobnicate", "path": "/a"}]))
                .expect_err("unknown")
                .code,
            422
        );
        assert_eq!(
            json_patch(&pod(None), json!([null]))
                .expect_err("a null operation")
                .code,
            422
        );
        assert_eq!(
            json_patch(&pod(None), json!({"op": "add"}))
                .expect_err("not a list")
                .code,
            400
        );
    }
}
