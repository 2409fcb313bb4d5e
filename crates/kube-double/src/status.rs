//! `Status` bodies: every error (and the eviction's success) in the API server's own shape and wording.

use serde_json::{Map, Value, json};

/// The whole body of kube-apiserver's 429 from API Priority and Fairness and from the
/// max-in-flight filter: not a `Status`, but Go's `http.Error` (`tooManyRequests` in
/// apiserver's filters) — plain text with a newline, `Content-Type: text/plain;
/// charset=utf-8`, `X-Content-Type-Options: nosniff`, and a `Retry-After` header. A v1.37
/// server with `--max-requests-inflight=1` answered exactly that to concurrent reads.
pub(crate) const THROTTLED_BODY: &str = "Too many requests, please try again later.\n";

/// The API server's optimistic-locking message (apiserver `OptimisticLockErrorMsg`).
pub(crate) const OPTIMISTIC_LOCK_MSG: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// An answer in the shape of a `meta/v1 Status` (kube-apiserver's `StatusError`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    /// The HTTP status code, also written as `code`.
    pub code: u16,
    /// `reason`, left out of the body when empty (as for a plain internal error).
    pub reason: &'static str,
    /// `message`.
    pub message: String,
    /// `details`, left out when `None`; `Some` of an empty map is written as `{}`.
    pub details: Option<Map<String, Value>>,
}

/// One `details.causes` entry (`StatusCause`: `reason` is Go's `Type`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cause {
    pub reason: String,
    pub message: String,
    pub field: Option<String>,
}

impl Cause {
    fn to_json(&self) -> Value {
        let mut cause = Map::new();
        if !self.reason.is_empty() {
            cause.insert("reason".into(), Value::from(self.reason.clone()));
        }
        cause.insert("message".into(), Value::from(self.message.clone()));
        if let Some(field) = &self.field {
            cause.insert("field".into(), Value::from(field.clone()));
        }
        Value::Object(cause)
    }
}

/// A resource with its API group, as Go's `schema.GroupResource` prints it (`pods`,
/// `poddisruptionbudgets.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupResource {
    pub group: &'static str,
    pub resource: &'static str,
}

impl GroupResource {
    pub(crate) const PODS: GroupResource = GroupResource {
        group: "",
        resource: "pods",
    };
    pub(crate) const EVENTS: GroupResource = GroupResource {
        group: "",
        resource: "events",
    };
    pub(crate) const PDBS: GroupResource = GroupResource {
        group: "policy",
        resource: "poddisruptionbudgets",
    };
    pub(crate) const WEBHOOK_CONFIGS: GroupResource = GroupResource {
        group: "admissionregistration.k8s.io",
        resource: "mutatingwebhookconfigurations",
    };

    /// `resource` or `resource.group`.
    pub(crate) fn qualified(&self) -> String {
        qualified(self.group, self.resource)
    }

    /// `details` naming this resource and, if not empty, an object.
    fn details(&self, name: &str) -> Map<String, Value> {
        resource_details(self.group, self.resource, name)
    }
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn resource_details(group: &str, resource: &str, name: &str) -> Map<String, Value> {
    let mut details = Map::new();
    if !name.is_empty() {
        details.insert("name".into(), Value::from(name));
    }
    if !group.is_empty() {
        details.insert("group".into(), Value::from(group));
    }
    details.insert("kind".into(), Value::from(resource));
    details
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Map<String, Value>) -> ApiError {
        self.details = Some(details);
        self
    }

    /// The `Status` body.
    pub(crate) fn to_json(&self) -> Value {
        let mut status = Map::new();
        status.insert("kind".into(), Value::from("Status"));
        status.insert("apiVersion".into(), Value::from("v1"));
        status.insert("metadata".into(), json!({}));
        status.insert("status".into(), Value::from("Failure"));
        status.insert("message".into(), Value::from(self.message.clone()));
        if !self.reason.is_empty() {
            status.insert("reason".into(), Value::from(self.reason));
        }
        if let Some(details) = &self.details {
            status.insert("details".into(), Value::Object(details.clone()));
        }
        status.insert("code".into(), Value::from(self.code));
        Value::Object(status)
    }

    /// 401 `Unauthorized`.
    pub(crate) fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 404 for an object: `pods "x" not found`.
    pub(crate) fn not_found(resource: GroupResource, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} {} not found", resource.qualified(), go_quote(name)),
        )
        .with_details(resource.details(name))
    }

    /// 404 for a path the server does not serve.
    pub(crate) fn unknown_path() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(Map::new())
    }

    /// 405 for a method the resource does not support.
    pub(crate) fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(Map::new())
    }

    /// 403 as `NewForbidden` writes it: `pods "x" is forbidden: <why>`.
    pub(crate) fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
        let qualified = qualified(group, resource);
        let message = if name.is_empty() {
            format!("{qualified} is forbidden: {why}")
        } else {
            format!("{qualified} {} is forbidden: {why}", go_quote(name))
        };
        ApiError::new(403, "Forbidden", message)
            .with_details(resource_details(group, resource, name))
    }

    /// 403 for a request that is not about a resource, as `NewForbidden` writes it with no
    /// resource: `forbidden: <why>`, empty details.
    pub(crate) fn forbidden_path(why: &str) -> ApiError {
        ApiError::new(403, "Forbidden", format!("forbidden: {why}")).with_details(Map::new())
    }

    /// 429 of API Priority and Fairness (or the max-in-flight filter). Only its code and
    /// words: that answer is not a `Status` but [`THROTTLED_BODY`], as plain text (see
    /// `server::throttled_headers`).
    pub(crate) fn throttled() -> ApiError {
        ApiError::new(429, "TooManyRequests", THROTTLED_BODY.trim_end())
    }

    /// 409 `Operation cannot be fulfilled on pods "x": <why>`.
    pub(crate) fn conflict(resource: &str, name: &str, why: &str) -> ApiError {
        let mut details = Map::new();
        details.insert("name".into(), Value::from(name));
        details.insert("kind".into(), Value::from(resource));
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} {}: {why}",
                go_quote(name)
            ),
        )
        .with_details(details)
    }

    /// 409 for a write that lost the optimistic-locking race.
    pub(crate) fn stale(resource: GroupResource, name: &str) -> ApiError {
        let mut error = ApiError::conflict(&resource.qualified(), name, OPTIMISTIC_LOCK_MSG);
        error.details = Some(resource.details(name));
        error
    }

    /// 409 `pods "x" already exists`.
    pub(crate) fn already_exists(resource: GroupResource, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} {} already exists", resource.qualified(), go_quote(name)),
        )
        .with_details(resource.details(name))
    }

    /// 400 `BadRequest` with no details.
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 422 `Invalid` with field causes: `Pod "x" is invalid: <aggregate>`.
    pub(crate) fn invalid(kind: &str, name: &str, aggregate: &str, causes: &[Cause]) -> ApiError {
        let mut details = Map::new();
        if !name.is_empty() {
            details.insert("name".into(), Value::from(name));
        }
        if !kind.is_empty() {
            details.insert("kind".into(), Value::from(kind));
        }
        details.insert(
            "causes".into(),
            Value::Array(causes.iter().map(Cause::to_json).collect()),
        );
        ApiError::new(
            422,
            "Invalid",
            format!("{kind} {} is invalid: {aggregate}", go_quote(name)),
        )
        .with_details(details)
    }

    /// 422 as `NewGenericServerResponse(422, ...)` writes it, e.g. for a failed JSON patch.
    pub(crate) fn rejected() -> ApiError {
        ApiError::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        )
        .with_details(Map::new())
    }

    /// 500 for an error that is not a `StatusError`: no reason, no details.
    pub(crate) fn plain_internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "", message)
    }

    /// 500 `InternalError` (`NewInternalError`).
    pub(crate) fn internal(why: &str) -> ApiError {
        let mut details = Map::new();
        details.insert("causes".into(), json!([{"message": why}]));
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {why}"),
        )
        .with_details(details)
    }

    /// 410 `Expired`: a continue token whose snapshot was compacted away.
    pub(crate) fn expired_continue() -> ApiError {
        ApiError::new(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        )
    }

    /// A mutating webhook's denial: its code and message, no reason or details.
    pub(crate) fn webhook_denial(code: u16, message: String) -> ApiError {
        ApiError::new(code, "", message)
    }

    /// 413 `RequestEntityTooLarge`.
    pub(crate) fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(413, "RequestEntityTooLarge", message)
    }

    /// 415 `UnsupportedMediaType` for a patch of a content type that is not a patch type
    /// (`application/json`, `text/plain`, ...), as a v1.37 server answered it: a generic
    /// message that names no type, and empty details.
    pub(crate) fn unsupported_media_type() -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", "415: Unsupported Media Type")
            .with_details(Map::new())
    }

    /// 429 `TooManyRequests` with causes (the eviction answer).
    pub(crate) fn too_many_requests(message: &str, causes: &[Cause]) -> ApiError {
        let mut details = Map::new();
        details.insert(
            "causes".into(),
            Value::Array(causes.iter().map(Cause::to_json).collect()),
        );
        ApiError::new(429, "TooManyRequests", message).with_details(details)
    }

    /// A plausible answer for an injected status code, with the reason and wording the API
    /// server uses for that code.
    pub(crate) fn injected(code: u16, resource: GroupResource, name: &str) -> ApiError {
        match code {
            400 => ApiError::bad_request("the server rejected our request for an unknown reason"),
            401 => ApiError::unauthorized(),
            403 => ApiError::forbidden(resource.group, resource.resource, name, "injected by kube-double"),
            404 => ApiError::not_found(resource, name),
            409 => ApiError::stale(resource, name),
            422 => ApiError::rejected(),
            429 => ApiError::throttled(),
            500 => ApiError::internal("injected by kube-double"),
            503 => ApiError::new(503, "ServiceUnavailable", "the server is currently unable to handle the request")
                .with_details(Map::new()),
            504 => ApiError::new(
                504,
                "Timeout",
                "Timeout: request did not complete within requested timeout - context deadline exceeded",
            )
            .with_details(Map::new()),
            code => ApiError::new(code, "", format!("an error on the server (\"injected status {code}\") has prevented the request from succeeding")),
        }
    }
}

/// A successful `Status` (`{"status": "Success", "code": 201}` for an eviction).
pub(crate) fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

/// Quotes like Go's `%q`, as the API server does in its messages.
pub(crate) use kube_labels::go_quote;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_the_object_and_its_resource() {
        let body = ApiError::not_found(GroupResource::PODS, "x").to_json();
        assert_eq!(
            body,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "pods \"x\" not found", "reason": "NotFound",
                   "details": {"name": "x", "kind": "pods"}, "code": 404})
        );
    }

    #[test]
    fn a_plain_internal_error_has_neither_reason_nor_details() {
        let body = ApiError::plain_internal("Invalid JSON Patch").to_json();
        assert_eq!(
            body,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "Invalid JSON Patch", "code": 500})
        );
    }

    #[test]
    fn a_group_qualifies_the_resource_in_messages_and_details() {
        let body = ApiError::forbidden(
            "policy",
            "poddisruptionbudgets",
            "",
            "User \"u\" cannot list",
        )
        .to_json();
        assert_eq!(
            body["message"],
            "poddisruptionbudgets.policy is forbidden: User \"u\" cannot list"
        );
        assert_eq!(
            body["details"],
            json!({"group": "policy", "kind": "poddisruptionbudgets"})
        );
    }

    #[test]
    fn injected_statuses_carry_the_reason_of_their_code() {
        for (code, reason) in [
            (409, "Conflict"),
            (500, "InternalError"),
            (503, "ServiceUnavailable"),
            (504, "Timeout"),
        ] {
            let body = ApiError::injected(code, GroupResource::PODS, "p").to_json();
            assert_eq!(body["code"], code);
            assert_eq!(body["reason"], reason);
            assert_eq!(body["kind"], "Status");
        }
    }

    #[test]
    fn go_quote_escapes_quotes_and_controls() {
        assert_eq!(go_quote("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\x01\"");
        assert_eq!(go_quote("héllo"), "\"héllo\"");
    }
}
