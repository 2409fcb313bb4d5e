//! Mutating admission as kube-apiserver does it for pod CREATE: MutatingWebhookConfigurations
//! stored like any object, the webhooks whose rules and selectors match a new pod, the
//! `AdmissionReview` each is sent, and what the server makes of each answer (a patch, warnings,
//! a denial, or one of the failures `failurePolicy` decides about), word for word as recorded.
//! Pure: the calls themselves are in [`crate::webhook_call`].

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::objects::{claim_namespace, decode_body, key, stamp_new};
use crate::pods;
use crate::rbac::User;
use crate::routes::Query;
use crate::status::{ApiError, GroupResource};
use crate::store::{Store, meta_str, metadata_mut, string_list};
use crate::validation;

const KIND: &str = "MutatingWebhookConfiguration";
const API_VERSION: &str = "admissionregistration.k8s.io/v1";

fn link(name: &str) -> String {
    format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}")
}

/// `POST .../mutatingwebhookconfigurations`, with the defaults the API server fills in.
pub(crate) fn create_config(
    store: &mut Store,
    body: &[u8],
    dry_run: bool,
) -> Result<Value, ApiError> {
    let mut config = decode_body(body, KIND)?;
    let name = meta_str(&config, "name").to_string();
    let errors = validation::object_name(&name);
    if !errors.is_empty() {
        return Err(validation::invalid(KIND, &name, &errors));
    }
    if store.webhook_configs.contains_key(&key("", &name)) {
        return Err(ApiError::already_exists(
            GroupResource::WEBHOOK_CONFIGS,
            &name,
        ));
    }
    config["kind"] = json!(KIND);
    config["apiVersion"] = json!(API_VERSION);
    for webhook in config
        .get_mut("webhooks")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        default_webhook(webhook);
    }
    stamp_new(store, &mut config, link(&name))?;
    if !dry_run {
        metadata_mut(&mut config)
            .insert("resourceVersion".into(), Value::from(store.next_revision()));
        store.webhook_configs.insert(key("", &name), config.clone());
    }
    Ok(config)
}

fn default_webhook(webhook: &mut Value) {
    for (field, value) in [
        ("failurePolicy", json!("Fail")),
        ("matchPolicy", json!("Equivalent")),
        ("timeoutSeconds", json!(10)),
        ("reinvocationPolicy", json!("Never")),
        ("namespaceSelector", json!({})),
        ("objectSelector", json!({})),
    ] {
        if webhook.get(field).is_none() {
            webhook[field] = value;
        }
    }
}

/// `GET` of one configuration.
pub(crate) fn get_config(store: &Store, name: &str) -> Result<Value, ApiError> {
    store
        .webhook_configs
        .get(&key("", name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(GroupResource::WEBHOOK_CONFIGS, name))
}

/// `GET` of the collection.
pub(crate) fn list_configs(store: &Store) -> Value {
    let items: Vec<Value> = store.webhook_configs.values().cloned().collect();
    json!({"kind": "MutatingWebhookConfigurationList", "apiVersion": API_VERSION,
           "metadata": {"resourceVersion": store.revision()}, "items": items})
}

/// `DELETE` of one configuration: a `Status` Success, as for cluster-scoped objects.
pub(crate) fn delete_config(
    store: &mut Store,
    name: &str,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let config = get_config(store, name)?;
    if !dry_run {
        store.webhook_configs.remove(&key("", name));
        store.next_revision();
    }
    Ok(config)
}

/// `PATCH` of one configuration. A strategic merge patch merges `webhooks` by `name` (their
/// `patchMergeKey`); a merge patch replaces the list; a JSON patch applies as for pods.
pub(crate) fn patch_config(
    store: &mut Store,
    name: &str,
    kind: crate::patch::PatchType,
    body: &[u8],
    dry_run: bool,
) -> Result<Value, ApiError> {
    let old = get_config(store, name)?;
    let mut new = if kind == crate::patch::PatchType::Strategic {
        let patch: Value =
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
        strategic(&old, &patch)
    } else {
        crate::patch::apply(kind, &old, body)?
    };
    if meta_str(&new, "name") != name {
        return Err(ApiError::bad_request(
            "the name of the object may not change",
        ));
    }
    let given = meta_str(&new, "resourceVersion");
    if !given.is_empty() && given != meta_str(&old, "resourceVersion") {
        return Err(ApiError::stale(GroupResource::WEBHOOK_CONFIGS, name));
    }
    if new == old {
        return Ok(old);
    }
    for webhook in new
        .get_mut("webhooks")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        default_webhook(webhook);
    }
    if !dry_run {
        metadata_mut(&mut new).insert("resourceVersion".into(), Value::from(store.next_revision()));
        store.webhook_configs.insert(key("", name), new.clone());
    }
    Ok(new)
}

fn strategic(old: &Value, patch: &Value) -> Value {
    let mut merged = old.clone();
    let mut rest = patch.clone();
    let webhooks = rest.as_object_mut().and_then(|p| p.remove("webhooks"));
    json_patch::merge(&mut merged, &rest);
    if let Some(Value::Array(patches)) = webhooks {
        let list = merged["webhooks"].as_array().cloned().unwrap_or_default();
        let mut list = list;
        for item in patches {
            let name = item.get("name").cloned();
            match list.iter_mut().find(|w| w.get("name") == name.as_ref()) {
                Some(existing) => json_patch::merge(existing, &item),
                None => list.push(item),
            }
        }
        merged["webhooks"] = Value::Array(list);
    }
    merged
}

/// One webhook to call for a pod CREATE.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub name: String,
    pub url: String,
    /// Where to connect instead of the URL's host (a Service routed with `route_service`).
    pub connect_to: Option<String>,
    pub ca_bundle: Option<Vec<u8>>,
    pub fail_open: bool,
    pub timeout_seconds: u64,
    pub reinvoke: bool,
    pub supports_dry_run: bool,
}

/// The webhooks that see this pod: configurations in name order, webhooks in their order;
/// those whose rules cover pod CREATE and whose selectors match.
pub(crate) fn matching(
    store: &Store,
    services: &BTreeMap<(String, String), String>,
    namespace: &str,
    pod: &Value,
) -> Vec<Webhook> {
    let labels = string_map(&pod["metadata"]["labels"]);
    let mut namespace_labels = store
        .namespace_labels
        .get(namespace)
        .cloned()
        .unwrap_or_default();
    namespace_labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
    let mut found = Vec::new();
    for config in store.webhook_configs.values() {
        for webhook in config["webhooks"].as_array().into_iter().flatten() {
            let covers = webhook["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|rule| {
                    let has = |field: &str, wanted: &str| {
                        rule[field]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|v| v == wanted || v == "*")
                    };
                    has("operations", "CREATE")
                        && has("apiGroups", "")
                        && has("apiVersions", "v1")
                        && has("resources", "pods")
                });
            if !covers
                || !selects(&webhook["objectSelector"], &labels)
                || !selects(&webhook["namespaceSelector"], &namespace_labels)
            {
                continue;
            }
            let Some((url, connect_to)) = resolve(&webhook["clientConfig"], services) else {
                continue;
            };
            let ca_bundle = webhook["clientConfig"]["caBundle"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
            found.push(Webhook {
                name: webhook["name"].as_str().unwrap_or_default().to_string(),
                url,
                connect_to,
                ca_bundle,
                fail_open: webhook["failurePolicy"] == "Ignore",
                timeout_seconds: webhook["timeoutSeconds"]
                    .as_u64()
                    .unwrap_or(10)
                    .clamp(1, 30),
                reinvoke: webhook["reinvocationPolicy"] == "IfNeeded",
                supports_dry_run: matches!(
                    webhook["sideEffects"].as_str(),
                    Some("None" | "NoneOnDryRun")
                ),
            });
        }
    }
    found
}

/// The URL a `clientConfig` names, and for a Service the address it is routed to.
fn resolve(
    client: &Value,
    services: &BTreeMap<(String, String), String>,
) -> Option<(String, Option<String>)> {
    if let Some(url) = client["url"].as_str() {
        return Some((url.to_string(), None));
    }
    let service = client.get("service")?;
    let (namespace, name) = (service["namespace"].as_str()?, service["name"].as_str()?);
    let port = service["port"].as_u64().unwrap_or(443);
    let path = service["path"].as_str().unwrap_or("/");
    let url = format!("https://{name}.{namespace}.svc:{port}{path}");
    let routed = services
        .get(&(namespace.to_string(), name.to_string()))
        .cloned();
    // An unrouted Service does not resolve, as a missing one would not.
    Some((
        url,
        Some(routed.unwrap_or_else(|| "127.0.0.1:1".to_string())),
    ))
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
        .collect()
}

/// A `metav1.LabelSelector`: `matchLabels` and `matchExpressions` (In, NotIn, Exists,
/// DoesNotExist); empty selects everything.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let exact = string_map(&selector["matchLabels"]);
    if exact.iter().any(|(k, v)| labels.get(k) != Some(v)) {
        return false;
    }
    selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|expression| {
            let key = expression["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = expression["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let value = labels.get(key).map(String::as_str);
            match expression["operator"].as_str() {
                Some("In") => value.is_some_and(|v| values.contains(&v)),
                Some("NotIn") => value.is_none_or(|v| !values.contains(&v)),
                Some("Exists") => value.is_some(),
                Some("DoesNotExist") => value.is_none(),
                _ => false,
            }
        })
}

/// The pod as webhooks see it: defaulted, without namespace or server fields, `status: {}`.
pub(crate) fn review_object(body: &[u8]) -> Option<Value> {
    let mut pod: Value = serde_json::from_slice(body).ok().filter(Value::is_object)?;
    pod["kind"] = json!("Pod");
    pod["apiVersion"] = json!("v1");
    if !pod.get("metadata").is_some_and(Value::is_object) {
        pod["metadata"] = json!({});
    }
    pod["metadata"]["creationTimestamp"] = Value::Null;
    if !pod.get("spec").is_some_and(Value::is_object) {
        return None;
    }
    pods::default_pod_spec(&mut pod);
    pods::default_tolerations(&mut pod);
    pod["status"] = json!({});
    Some(pod)
}

/// The `AdmissionReview` sent to a webhook.
pub(crate) fn review(
    uid: &str,
    namespace: &str,
    object: &Value,
    user: &User,
    query: &Query,
) -> Value {
    let dry_run = query.dry_run();
    let mut options = json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"});
    if dry_run {
        options["dryRun"] = json!(["All"]);
    }
    let mut user_info = Map::new();
    user_info.insert("username".into(), json!(user.name()));
    if let Some(uid) = user.uid_value() {
        user_info.insert("uid".into(), json!(uid));
    }
    let mut groups: Vec<String> = user.group_names().to_vec();
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    user_info.insert("groups".into(), json!(groups));
    let pod_kind = json!({"group": "", "version": "v1", "kind": "Pod"});
    let pod_resource = json!({"group": "", "version": "v1", "resource": "pods"});
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": pod_kind,
            "resource": pod_resource,
            "requestKind": pod_kind,
            "requestResource": pod_resource,
            "name": meta_str(object, "name"),
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": user_info,
            "object": object,
            "oldObject": null,
            "dryRun": dry_run,
            "options": options,
        }
    })
}

/// What a webhook's answer means.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Allowed: the object (patched or not) and the warnings.
    Allowed {
        object: Value,
        warnings: Vec<String>,
    },
    /// Refused with this `Status` (`allowed: false`).
    Denied(ApiError),
    /// The call failed: `failurePolicy` decides.
    Failed(String),
}

/// Reads a webhook's HTTP answer to `review` as kube-apiserver does.
pub(crate) fn verdict(
    webhook: &Webhook,
    uid: &str,
    object: &Value,
    status: u16,
    body: &[u8],
) -> Verdict {
    let failed = |why: String| {
        Verdict::Failed(format!(
            "failed calling webhook \"{}\": {why}",
            webhook.name
        ))
    };
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(body);
        return failed(format!(
            "an error on the server ({:?}) has prevented the request from succeeding",
            text.trim()
        ));
    }
    let answer: Value = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(e) => return failed(format!("couldn't get version/kind; json parse error: {e}")),
    };
    if !answer.is_object() {
        return failed(format!(
            "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
            crate::store::json_type(&answer)
        ));
    }
    if answer["apiVersion"] != "admission.k8s.io/v1" || answer["kind"] != "AdmissionReview" {
        return failed(format!(
            "unexpected response: {}, Kind={}",
            answer["apiVersion"].as_str().unwrap_or_default(),
            answer["kind"].as_str().unwrap_or_default()
        ));
    }
    let Some(response) = answer.get("response").filter(|r| r.is_object()) else {
        return failed("webhook response was absent".into());
    };
    let got = response["uid"].as_str().unwrap_or_default();
    if got != uid {
        return failed(format!("expected response.uid={uid:?}, got {got:?}"));
    }
    let warnings = string_list(&response["warnings"]);
    if response["allowed"] != true {
        let status = &response["status"];
        let code = status["code"]
            .as_u64()
            .filter(|c| (400..600).contains(c))
            .unwrap_or(403) as u16;
        let message = status["message"]
            .as_str()
            .filter(|m| !m.is_empty())
            .unwrap_or("without explanation");
        let text = format!(
            "admission webhook \"{}\" denied the request: {message}",
            webhook.name
        );
        return Verdict::Denied(ApiError::webhook_denial(code, text));
    }
    let patch = response["patch"].as_str().filter(|p| !p.is_empty());
    let Some(patch) = patch else {
        return Verdict::Allowed {
            object: object.clone(),
            warnings,
        };
    };
    match response["patchType"].as_str() {
        None => return failed("webhook returned response.patch but not response.patchType".into()),
        Some("JSONPatch") => {}
        Some(other) => {
            return failed(format!(
                "webhook returned invalid response.patchType of {other:?}"
            ));
        }
    }
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(patch) else {
        return failed("illegal base64 data in response.patch".into());
    };
    let operations: json_patch::Patch = match serde_json::from_slice(&bytes) {
        Ok(operations) => operations,
        Err(e) => return Verdict::Failed(format!("json: {e}")),
    };
    let mut patched = object.clone();
    if let Err(e) = json_patch::patch(&mut patched, &operations) {
        return Verdict::Failed(go_patch_error(&operations, &e));
    }
    Verdict::Allowed {
        object: patched,
        warnings,
    }
}

/// evanphx/json-patch's wording for an operation that does not apply.
fn go_patch_error(patch: &json_patch::Patch, error: &json_patch::PatchError) -> String {
    let operation = patch.0.get(error.operation);
    let (op, path) = match operation {
        Some(json_patch::PatchOperation::Add(o)) => ("add", o.path.to_string()),
        Some(json_patch::PatchOperation::Remove(o)) => ("remove", o.path.to_string()),
        Some(json_patch::PatchOperation::Replace(o)) => ("replace", o.path.to_string()),
        Some(json_patch::PatchOperation::Move(o)) => ("move", o.path.to_string()),
        Some(json_patch::PatchOperation::Copy(o)) => ("copy", o.path.to_string()),
        Some(json_patch::PatchOperation::Test(o)) => ("test", o.path.to_string()),
        None => ("unknown", String::new()),
    };
    if op == "test" {
        return format!("testing value {path} failed: test failed");
    }
    format!("{op} operation does not apply: doc is missing path: {path}: missing value")
}

/// The error a failed call becomes under `failurePolicy: Fail`.
pub(crate) fn internal(message: &str) -> ApiError {
    ApiError::internal(message)
}

/// A dry-run request reached a webhook that may have side effects.
pub(crate) fn no_dry_run(webhook: &Webhook) -> ApiError {
    ApiError::bad_request(format!(
        "admission webhook \"{}\" does not support dry run",
        webhook.name
    ))
}

/// Checks the claimed namespace as the create will, so a bad request is not sent to webhooks.
pub(crate) fn claimable(object: &Value, namespace: &str) -> bool {
    let mut copy = object.clone();
    claim_namespace(&mut copy, namespace).is_ok()
}
