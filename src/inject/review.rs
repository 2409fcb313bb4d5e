//! The AdmissionReview exchange: the API server's request read strictly (anything that is not
//! an `admission.k8s.io/v1` review is refused, naming what is wrong), and the answer built from
//! the injector's [`Decision`]. Pure: bytes in, bytes out.

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value, json};

use crate::config::inject::UnfitPods;
use crate::core::inject::settings::Sidecar;
use crate::core::inject::{Decision, decide};

/// The largest review accepted: a pod is at most about 1.5 MiB (etcd's object limit), and a
/// CREATE review holds it once.
pub const MAX_REVIEW: usize = 2 * 1024 * 1024;
/// The longest `request.uid` accepted (the API server sends a 36-character UUID).
const MAX_UID: usize = 128;

/// What the injector did with one review, for the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A patch was answered.
    Injected,
    /// The pod had a tracker already.
    AlreadyInjected,
    /// Not a pod CREATE: allowed unchanged.
    Ignored,
    /// The pod was unfit and refused.
    Denied,
    /// The pod was unfit and admitted without the tracker.
    AdmittedUnfit,
}

impl Outcome {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::AlreadyInjected => "already-injected",
            Outcome::Ignored => "ignored",
            Outcome::Denied => "denied",
            Outcome::AdmittedUnfit => "admitted-unfit",
        }
    }
}

/// An answered review.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The `AdmissionReview` to send back.
    pub body: Value,
    /// What happened.
    pub outcome: Outcome,
    /// `namespace/name` of the pod (or its generateName), for the log.
    pub pod: String,
    /// Whether the review was a dry run.
    pub dry_run: bool,
}

/// Answers one review.
pub fn answer(
    body: &[u8],
    sidecar: &Sidecar,
    unfit: UnfitPods,
    version: &str,
) -> Result<Answer, String> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let api_version = review.get("apiVersion").and_then(Value::as_str);
    let kind = review.get("kind").and_then(Value::as_str);
    if api_version != Some("admission.k8s.io/v1") || kind != Some("AdmissionReview") {
        return Err(format!(
            "expected an admission.k8s.io/v1 AdmissionReview, got apiVersion {} kind {} (register the webhook with admissionReviewVersions: [v1])",
            shown(api_version),
            shown(kind)
        ));
    }
    let request = review
        .get("request")
        .filter(|r| r.is_object())
        .ok_or("the AdmissionReview has no request")?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .filter(|uid| !uid.is_empty() && uid.len() <= MAX_UID)
        .ok_or_else(|| format!("request.uid is missing, empty or longer than {MAX_UID}"))?;
    let dry_run = request.get("dryRun").and_then(Value::as_bool) == Some(true);
    let namespace = request
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let is_pod_create = request.pointer("/kind/kind").and_then(Value::as_str) == Some("Pod")
        && request.pointer("/kind/group").and_then(Value::as_str) == Some("")
        && request.get("operation").and_then(Value::as_str) == Some("CREATE");
    let mut response = Map::new();
    response.insert("uid".to_owned(), json!(uid));
    response.insert("allowed".to_owned(), json!(true));
    if !is_pod_create {
        return Ok(Answer {
            body: review_of(response),
            outcome: Outcome::Ignored,
            pod: namespace.to_owned(),
            dry_run,
        });
    }
    let object = request
        .get("object")
        .filter(|o| o.is_object())
        .ok_or("request.object is missing")?;
    let pod: Pod = serde_json::from_value(object.clone())
        .map_err(|e| format!("request.object is not a Pod: {e}"))?;
    let name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone().map(|g| format!("{g}*")))
        .unwrap_or_default();
    let outcome = match decide(&pod, sidecar, version) {
        Decision::Inject { patch, warnings } => {
            let patch = serde_json::to_vec(&patch).map_err(|e| format!("the patch: {e}"))?;
            response.insert("patchType".to_owned(), json!("JSONPatch"));
            let patch = base64::engine::general_purpose::STANDARD.encode(patch);
            response.insert("patch".to_owned(), json!(patch));
            set_warnings(&mut response, warnings);
            Outcome::Injected
        }
        Decision::AlreadyInjected { warnings } => {
            set_warnings(&mut response, warnings);
            Outcome::AlreadyInjected
        }
        Decision::Unfit { problems } => {
            let message = format!(
                "pod-webhook-tracker cannot add the tracker to this pod: {}",
                problems.join("; ")
            );
            match unfit {
                UnfitPods::Deny => {
                    response.insert("allowed".to_owned(), json!(false));
                    let status = json!({"code": 403, "message": message});
                    response.insert("status".to_owned(), status);
                    Outcome::Denied
                }
                UnfitPods::Admit => {
                    set_warnings(
                        &mut response,
                        vec![format!("{message}; it is created without one")],
                    );
                    Outcome::AdmittedUnfit
                }
            }
        }
    };
    Ok(Answer {
        body: review_of(response),
        outcome,
        pod: format!("{namespace}/{name}"),
        dry_run,
    })
}

fn set_warnings(response: &mut Map<String, Value>, warnings: Vec<String>) {
    if !warnings.is_empty() {
        response.insert("warnings".to_owned(), json!(warnings));
    }
}

fn review_of(response: Map<String, Value>) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

fn shown(field: Option<&str>) -> String {
    field.map_or_else(
        || "(none)".to_owned(),
        |text| format!("{:?}", truncate(text)),
    )
}

fn truncate(text: &str) -> &str {
    let end = text
        .char_indices()
        .nth(64)
        .map_or(text.len(), |(index, _)| index);
    text.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests;
