//! Object validation as the API server does it (names, labels, annotations), turned into
//! `422 Invalid` answers with the server's field errors and wording.

use std::collections::BTreeMap;

use crate::status::{ApiError, Cause, go_quote};

/// Maximum total size of an object's annotations, keys plus values (`TotalAnnotationSizeLimitB`).
pub(crate) const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// The kinds of field error the double produces (apimachinery's `field.ErrorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    Invalid,
    Required,
    Forbidden,
    TooLong,
}

impl ErrorType {
    fn text(self) -> &'static str {
        match self {
            ErrorType::Invalid => "Invalid value",
            ErrorType::Required => "Required value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
        }
    }

    fn cause_reason(self) -> &'static str {
        match self {
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
        }
    }
}

/// One field error (apimachinery's `field.Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub kind: ErrorType,
    pub field: String,
    /// The bad value, shown for `Invalid` errors.
    pub value: String,
    pub detail: String,
}

impl FieldError {
    pub(crate) fn invalid(field: &str, value: &str, detail: impl Into<String>) -> FieldError {
        FieldError {
            kind: ErrorType::Invalid,
            field: field.into(),
            value: value.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn required(field: &str, detail: impl Into<String>) -> FieldError {
        FieldError {
            kind: ErrorType::Required,
            field: field.into(),
            value: String::new(),
            detail: detail.into(),
        }
    }

    pub(crate) fn forbidden(field: &str, detail: impl Into<String>) -> FieldError {
        FieldError {
            kind: ErrorType::Forbidden,
            field: field.into(),
            value: String::new(),
            detail: detail.into(),
        }
    }

    pub(crate) fn too_long(field: &str, max: usize) -> FieldError {
        FieldError {
            kind: ErrorType::TooLong,
            field: field.into(),
            value: String::new(),
            // As a v1.37 server words it (`field.TooLong`).
            detail: format!("may not be more than {max} bytes"),
        }
    }

    /// `ErrorBody()`: `Invalid value: "x": detail`.
    fn body(&self) -> String {
        let mut body = match self.kind {
            ErrorType::Invalid => format!("{}: {}", self.kind.text(), go_quote(&self.value)),
            _ => self.kind.text().to_string(),
        };
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }

    /// `Error()`: `field: body`.
    fn text(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }

    fn cause(&self) -> Cause {
        Cause {
            reason: self.kind.cause_reason().into(),
            message: self.body(),
            field: Some(self.field.clone()),
        }
    }
}

/// The `422 Invalid` answer for these errors, as `errors.NewInvalid` builds it: every error
/// is a cause, and the message aggregates the distinct ones (`[a, b]` when more than one).
pub(crate) fn invalid(kind: &str, name: &str, errors: &[FieldError]) -> ApiError {
    let mut distinct: Vec<String> = Vec::new();
    for error in errors {
        let text = error.text();
        if !distinct.contains(&text) {
            distinct.push(text);
        }
    }
    let aggregate = if distinct.len() == 1 {
        distinct.remove(0)
    } else {
        format!("[{}]", distinct.join(", "))
    };
    let causes: Vec<Cause> = errors.iter().map(FieldError::cause).collect();
    ApiError::invalid(kind, name, &aggregate, &causes)
}

/// `ValidateLabels`: every key must be a qualified name and every value a label value. The
/// field is `metadata.labels` for all of them, as in the API server.
pub(crate) fn labels(labels: &BTreeMap<String, String>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (key, value) in labels {
        if let Err(messages) = kube_labels::validate_label_key(key) {
            errors.extend(
                messages
                    .into_iter()
                    .map(|m| FieldError::invalid("metadata.labels", key, m)),
            );
        }
        if let Err(messages) = kube_labels::validate_label_value(value) {
            errors.extend(
                messages
                    .into_iter()
                    .map(|m| FieldError::invalid("metadata.labels", value, m)),
            );
        }
    }
    errors
}

/// `ValidateAnnotations`: keys are qualified names (checked in lower case), and keys plus
/// values may not exceed 256 KiB in total.
pub(crate) fn annotations(annotations: &BTreeMap<String, String>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut total = 0usize;
    for (key, value) in annotations {
        if let Err(messages) = kube_labels::validate_label_key(&key.to_lowercase()) {
            errors.extend(
                messages
                    .into_iter()
                    .map(|m| FieldError::invalid("metadata.annotations", key, m)),
            );
        }
        total += key.len() + value.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errors.push(FieldError::too_long(
            "metadata.annotations",
            TOTAL_ANNOTATION_SIZE_LIMIT,
        ));
    }
    errors
}

/// The metadata checks run on every write: labels, then annotations.
pub(crate) fn label_maps(
    label_map: &BTreeMap<String, String>,
    annotation_map: &BTreeMap<String, String>,
) -> Vec<FieldError> {
    let mut errors = labels(label_map);
    errors.extend(annotations(annotation_map));
    errors
}

/// `metadata.name` of a new object: required, and a DNS-1123 subdomain.
pub(crate) fn object_name(name: &str) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )];
    }
    match kube_labels::validate_dns1123_subdomain(name) {
        Ok(()) => Vec::new(),
        Err(messages) => messages
            .into_iter()
            .map(|m| FieldError::invalid("metadata.name", name, m))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_negative_label_value_is_invalid_with_the_servers_wording() {
        let errors = labels(&map(&[("active-jobs", "-1"), ("app", "worker")]));
        assert_eq!(errors.len(), 1);
        let body = invalid("Pod", "worker-a", &errors).to_json();
        let message = body["message"].as_str().expect("message");
        assert!(
            message.starts_with("Pod \"worker-a\" is invalid: metadata.labels: Invalid value: \"-1\": a valid label must be an empty string"),
            "{message}"
        );
        assert_eq!(body["details"]["causes"][0]["reason"], "FieldValueInvalid");
        assert_eq!(body["details"]["causes"][0]["field"], "metadata.labels");
        assert_eq!(body["reason"], "Invalid");
        assert_eq!(body["code"], 422);
    }

    #[test]
    fn repeated_errors_are_all_causes_but_appear_once_in_the_message() {
        let errors = labels(&map(&[("bad key!", "1")]));
        let repeated: Vec<FieldError> = errors.iter().cycle().take(4).cloned().collect();
        let body = invalid("Pod", "p", &repeated).to_json();
        assert_eq!(body["details"]["causes"].as_array().map(Vec::len), Some(4));
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(
                "Pod \"p\" is invalid: metadata.labels: Invalid value: \"bad key!\": name part"
            ),
            "{message}"
        );
    }

    #[test]
    fn distinct_errors_are_listed_in_brackets() {
        let errors = labels(&map(&[("a", "-1"), ("b", "x".repeat(64).as_str())]));
        let body = invalid("Pod", "p", &errors).to_json();
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("Pod \"p\" is invalid: [metadata.labels: Invalid value: \"-1\""),
            "{message}"
        );
        assert!(
            message.contains(", metadata.labels: Invalid value: \"xxxx"),
            "{message}"
        );
        assert!(message.ends_with(']'), "{message}");
    }

    #[test]
    fn annotations_are_limited_to_256_kib_in_total() {
        let big = "v".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let errors = annotations(&map(&[("k", &big)]));
        assert_eq!(
            errors,
            vec![FieldError::too_long(
                "metadata.annotations",
                TOTAL_ANNOTATION_SIZE_LIMIT
            )]
        );
        let body = invalid("Pod", "p", &errors).to_json();
        assert_eq!(
            body["message"],
            "Pod \"p\" is invalid: metadata.annotations: Too long: may not be more than 262144 bytes"
        );
        assert_eq!(
            body["details"]["causes"][0],
            json!({"reason": "FieldValueTooLong", "message": "Too long: may not be more than 262144 bytes", "field": "metadata.annotations"})
        );
        assert!(annotations(&map(&[("k", &big[1..])])).is_empty());
    }

    #[test]
    fn annotation_keys_are_checked_in_lower_case() {
        assert!(annotations(&map(&[("Example.COM/Thing", "anything at all!")])).is_empty());
        assert_eq!(annotations(&map(&[("bad key", "v")])).len(), 1);
    }

    #[test]
    fn object_names_must_be_dns_subdomains() {
        assert!(object_name("worker-a").is_empty());
        let errors = object_name("Bad_Name");
        assert_eq!(errors.len(), 1);
        assert!(errors[0].text().starts_with(
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        ));
        assert_eq!(
            object_name("")[0].text(),
            "metadata.name: Required value: name or generateName is required"
        );
    }
}
