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
/// error the API server answers with:
/// - a merge patch that is not JSON: 500 `Invalid JSON Patch` (no reason, no details);
/// - a JSON patch or strategic merge patch that cannot be decoded: 400 `BadRequest`;
/// - a JSON patch operation that does not apply (failed `test`, `remove` or `replace` of a
///   missing member, `add` under a missing parent, unknown `op`): 422 `Invalid` with the
///   generic message and `details: {}`.
pub(crate) fn apply(kind: PatchType, doc: &Value, body: &[u8]) -> Result<Value, ApiError> {
    match kind {
        PatchType::Merge => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|_| ApiError::plain_internal("Invalid JSON Patch"))?;
            Ok(merge(doc, &patch))
        }
        PatchType::Strategic => {
            let patch: Value =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            Ok(merge(doc, &patch))
        }
        PatchType::Json => {
            let ops: Value =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let Value::Array(ops) = ops else {
                return Err(ApiError::bad_request(format!(
                    "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
                    crate::store::json_type(&ops)
                )));
            };
            if let Some(op) = ops.iter().find(|op| !op.is_object()) {
                return Err(ApiError::bad_request(format!(
                    "json: cannot unmarshal {} into Go value of type jsonpatch.Operation",
                    crate::store::json_type(op)
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

/// RFC 7386 merge, except that a `null` patch changes nothing (Go decodes `null` into an
/// empty patch document).
fn merge(doc: &Value, patch: &Value) -> Value {
    let mut doc = doc.clone();
    if !patch.is_null() {
        json_patch::merge(&mut doc, patch);
    }
    doc
}

/// Applies one JSON patch operation. Operations are applied one at a time so that `test` can
/// follow `evanphx/json-patch`: a `test` for `null` passes when the member is absent (or
/// null) as long as its parent exists. Everything else is strict RFC 6902, which is also what
/// current API servers do (`replace` of a missing member fails).
fn apply_operation(doc: &mut Value, op: &Value) -> Result<(), String> {
    let kind = op.get("op").and_then(Value::as_str).unwrap_or("unknown");
    if kind == "test" && op.get("value").is_none_or(Value::is_null) {
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or("test operation missing path")?;
        return test_null(doc, path);
    }
    let operation: PatchOperation =
        serde_json::from_value(op.clone()).map_err(|e| e.to_string())?;
    json_patch::patch(doc, &[operation]).map_err(|e| e.to_string())
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
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!(
            "test operation does not apply: is missing path: {path}"
        ));
    };
    let parts: Vec<String> = rest.split('/').map(decode_token).collect();
    let (last, parents) = parts.split_last().ok_or("empty path")?;
    let mut container = doc;
    for part in parents {
        container = child(container, part)
            .ok_or_else(|| format!("test operation does not apply: is missing path: {path}"))?;
        if !(container.is_object() || container.is_array()) {
            return Err(format!(
                "test operation does not apply: is missing path: {path}"
            ));
        }
    }
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
    fn a_null_merge_patch_changes_nothing() {
        let doc = pod(None);
        assert_eq!(
            apply(PatchType::Merge, &doc, b"null").expect("applies"),
            doc
        );
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
    fn replace_of_a_missing_member_is_rejected() {
        let ops = json!([{"op": "replace", "path": "/metadata/labels/active-jobs", "value": "1"}]);
        assert!(json_patch(&pod(Some(json!({}))), ops).is_err());
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
            json_patch(&pod(None), json!({"op": "add"}))
                .expect_err("not a list")
                .code,
            400
        );
        assert_eq!(
            apply(PatchType::Json, &pod(None), b"[{")
                .expect_err("not json")
                .code,
            400
        );
    }
}
