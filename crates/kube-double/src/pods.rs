//! Pods: defaults, get, list, create, update, patch and delete as the API server does them,
//! and the direct changes the handle makes (another writer, the kubelet).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::ids;
use crate::objects::{assign_name, claim_namespace, decode_body, key, list, stamp_new};
use crate::patch::{self, PatchType};
use crate::routes::Query;
use crate::status::{ApiError, GroupResource};
use crate::store::{self, Store, Watched, meta_str, metadata_mut, string_map};
use crate::validation::{self, FieldError};

pub(crate) fn pod_link(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods/{name}")
}

/// Fills in what the API server's defaulting fills in for a pod spec (as the transcripts
/// show for a pod with one `busybox` container).
pub(crate) fn default_pod_spec(pod: &mut Value) {
    if !pod.get("spec").is_some_and(Value::is_object) {
        pod["spec"] = json!({});
    }
    let spec = &mut pod["spec"];
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for container in containers.iter_mut().filter(|c| c.is_object()) {
                let policy = pull_policy(
                    container
                        .get("image")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
                let defaults = [
                    ("resources", json!({})),
                    ("terminationMessagePath", json!("/dev/termination-log")),
                    ("terminationMessagePolicy", json!("File")),
                    ("imagePullPolicy", json!(policy)),
                ];
                for (field, value) in defaults {
                    if container.get(field).is_none() {
                        container[field] = value;
                    }
                }
            }
        }
    }
    let defaults = [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("securityContext", json!({})),
        ("schedulerName", json!("default-scheduler")),
        ("priority", json!(0)),
        ("enableServiceLinks", json!(true)),
        ("preemptionPolicy", json!("PreemptLowerPriority")),
    ];
    for (field, value) in defaults {
        if spec.get(field).is_none() {
            spec[field] = value;
        }
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise.
pub(crate) fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

/// The tolerations the `DefaultTolerationSeconds` admission plugin adds to new pods.
pub(crate) fn default_tolerations(pod: &mut Value) {
    let tolerations = pod["spec"]
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut tolerations = tolerations;
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = tolerations.iter().any(|t| {
            t.get("key").and_then(Value::as_str) == Some(key)
                || (t.get("key").is_none()
                    && t.get("operator").and_then(Value::as_str) == Some("Exists"))
        });
        if !tolerated {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    pod["spec"]["tolerations"] = Value::Array(tolerations);
}

pub(crate) fn qos_class(pod: &Value) -> &'static str {
    let has_resources = pod["spec"]
        .get("containers")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("resources")
                    .and_then(Value::as_object)
                    .is_some_and(|r| !r.is_empty())
            })
        });
    if has_resources {
        "Burstable"
    } else {
        "BestEffort"
    }
}

pub(crate) fn not_found(name: &str) -> ApiError {
    ApiError::not_found(GroupResource::PODS, name)
}

pub(crate) fn get_pod(store: &Store, namespace: &str, name: &str) -> Result<Value, ApiError> {
    store
        .pods
        .get(&key(namespace, name))
        .cloned()
        .ok_or_else(|| not_found(name))
}

pub(crate) const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

pub(crate) fn list_pods(
    store: &Store,
    namespace: Option<&str>,
    query: &Query,
) -> Result<Value, ApiError> {
    let (items, mut metadata) = list(store, &store.pods, namespace, query, POD_FIELDS, &|pod| {
        pod.clone()
    })?;
    let link = match namespace {
        Some(ns) => format!("/api/v1/namespaces/{ns}/pods"),
        None => "/api/v1/pods".to_string(),
    };
    metadata.insert("selfLink".into(), Value::from(link));
    metadata.insert("resourceVersion".into(), Value::from(store.revision()));
    Ok(json!({"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": items}))
}

/// Creates a pod as `POST .../pods` does. `status` replaces the `Pending` status the API
/// server gives every new pod (only the handle passes one, to set up running pods).
pub(crate) fn create_pod(
    store: &mut Store,
    namespace: &str,
    mut pod: Value,
    status: Option<Value>,
    dry_run: bool,
) -> Result<Value, ApiError> {
    claim_namespace(&mut pod, namespace)?;
    let name = assign_name(store, &mut pod);
    pod["kind"] = json!("Pod");
    pod["apiVersion"] = json!("v1");
    default_pod_spec(&mut pod);
    default_tolerations(&mut pod);
    pod["status"] =
        status.unwrap_or_else(|| json!({"phase": "Pending", "qosClass": qos_class(&pod)}));
    let mut errors = validation::object_name(&name);
    errors.extend(validation::label_maps(
        &string_map(&pod, "labels"),
        &string_map(&pod, "annotations"),
    ));
    if pod["spec"]
        .get("containers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        errors.push(FieldError::required("spec.containers", ""));
    }
    if !errors.is_empty() {
        return Err(validation::invalid("Pod", &name, &errors));
    }
    if store.pods.contains_key(&key(namespace, &name)) {
        return Err(ApiError::already_exists(GroupResource::PODS, &name));
    }
    stamp_new(store, &mut pod, pod_link(namespace, &name))?;
    if !dry_run {
        metadata_mut(&mut pod).insert("resourceVersion".into(), Value::from(store.next_revision()));
        store.put(Watched::Pods, key(namespace, &name), pod.clone());
    }
    Ok(pod)
}

/// `checkName`: the object in the body must be the one in the URL.
pub(crate) fn check_name(object: &Value, namespace: &str, name: &str) -> Result<(), ApiError> {
    let object_name = meta_str(object, "name");
    if object_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({object_name}) does not match the name on the URL ({name})"
        )));
    }
    let object_namespace = meta_str(object, "namespace");
    if !object_namespace.is_empty() && object_namespace != namespace {
        return Err(ApiError::bad_request(format!(
            "the namespace of the object ({object_namespace}) does not match the namespace on the request ({namespace})"
        )));
    }
    Ok(())
}

pub(crate) fn replace_pod(
    store: &mut Store,
    namespace: &str,
    name: &str,
    body: &[u8],
    dry_run: bool,
) -> Result<Value, ApiError> {
    let pod = decode_body(body, "Pod")?;
    check_name(&pod, namespace, name)?;
    update_pod(store, namespace, name, pod, dry_run)
}

pub(crate) fn patch_pod(
    store: &mut Store,
    namespace: &str,
    name: &str,
    kind: PatchType,
    body: &[u8],
    dry_run: bool,
) -> Result<Value, ApiError> {
    let current = get_pod(store, namespace, name)?;
    let mut patched = patch::apply(kind, &current, body)?;
    if let Err(error) = store::decode_metadata(&mut patched, "Pod") {
        let text = patched.to_string();
        return Err(validation::invalid(
            "",
            "",
            &[FieldError::invalid("patch", &text, error)],
        ));
    }
    check_name(&patched, namespace, name)?;
    update_pod(store, namespace, name, patched, dry_run)
}

/// The fields of a running pod's spec that an update may change.
pub(crate) const MUTABLE_SPEC: &str = "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations` (only additions to existing tolerations)";

pub(crate) fn spec_errors(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut munged = new.clone();
    for list in ["containers", "initContainers"] {
        if let (Some(Value::Array(new_list)), Some(Value::Array(old_list))) =
            (munged.get_mut(list), old.get(list))
            && new_list.len() == old_list.len()
        {
            for (n, o) in new_list.iter_mut().zip(old_list) {
                if let (Some(image), true) = (o.get("image"), n.is_object()) {
                    n["image"] = image.clone();
                }
            }
        }
    }
    for field in ["activeDeadlineSeconds", "tolerations"] {
        if let Value::Object(spec) = &mut munged {
            match old.get(field) {
                Some(value) => {
                    spec.insert(field.into(), value.clone());
                }
                None => {
                    spec.remove(field);
                }
            }
        }
    }
    if munged == *old {
        Vec::new()
    } else {
        vec![FieldError::forbidden("spec", MUTABLE_SPEC)]
    }
}

/// Stores `new` in place of the pod, as an update does after the request is decoded: the
/// resource version in `new` (if any) must be current, server-owned fields are kept, the
/// result is validated, and a write that changes nothing keeps the resource version.
pub(crate) fn update_pod(
    store: &mut Store,
    namespace: &str,
    name: &str,
    mut new: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let old = get_pod(store, namespace, name)?;
    let current = meta_str(&old, "resourceVersion").to_string();
    let wanted = meta_str(&new, "resourceVersion").to_string();
    if !wanted.is_empty() && wanted != current {
        return Err(ApiError::stale(GroupResource::PODS, name));
    }
    // What the server owns (rest.BeforeUpdate, PrepareForUpdate).
    new["kind"] = json!("Pod");
    new["apiVersion"] = json!("v1");
    new["status"] = old.get("status").cloned().unwrap_or(Value::Null);
    let new_uid = meta_str(&new, "uid").to_string();
    {
        let old_meta = old
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let metadata = metadata_mut(&mut new);
        metadata.insert("namespace".into(), Value::from(namespace));
        metadata.insert("selfLink".into(), Value::from(pod_link(namespace, name)));
        metadata.insert("resourceVersion".into(), Value::from(current.clone()));
        metadata.remove("managedFields");
        for field in [
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(field) {
                Some(value) => metadata.insert(field.into(), value.clone()),
                None => metadata.remove(field),
            };
        }
        if new_uid.is_empty() {
            metadata.insert(
                "uid".into(),
                old_meta.get("uid").cloned().unwrap_or(Value::Null),
            );
        }
    }
    if new.get("status").is_some_and(Value::is_null)
        && let Value::Object(fields) = &mut new
    {
        fields.remove("status");
    }
    default_pod_spec(&mut new);
    // Validation, as often as the API server runs each check on an update of a pod:
    // the common object-meta checks twice, then ValidatePod, then ValidatePodUpdate.
    let meta = validation::label_maps(
        &string_map(&new, "labels"),
        &string_map(&new, "annotations"),
    );
    let immutable: Vec<FieldError> = if new_uid != meta_str(&old, "uid") && !new_uid.is_empty() {
        vec![FieldError::invalid(
            "metadata.uid",
            &new_uid,
            "field is immutable",
        )]
    } else {
        Vec::new()
    };
    let mut errors = meta.clone();
    errors.extend(immutable.iter().cloned());
    errors.extend(meta.iter().cloned());
    errors.extend(meta.iter().cloned());
    errors.extend(immutable);
    errors.extend(meta);
    errors.extend(spec_errors(&old["spec"], &new["spec"]));
    if !errors.is_empty() {
        return Err(validation::invalid("Pod", name, &errors));
    }
    if new == old {
        return Ok(old);
    }
    if !dry_run {
        metadata_mut(&mut new).insert("resourceVersion".into(), Value::from(store.next_revision()));
        store.put(Watched::Pods, key(namespace, name), new.clone());
    }
    Ok(new)
}

/// The parts of `DeleteOptions` the double honours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DeleteOptions {
    grace_period: Option<u64>,
    uid: Option<String>,
    resource_version: Option<String>,
}

impl DeleteOptions {
    pub(crate) fn parse(body: &[u8], query: &Query) -> Result<DeleteOptions, ApiError> {
        let mut options = DeleteOptions::default();
        if !body.iter().all(u8::is_ascii_whitespace) {
            let value: Value =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            options = DeleteOptions::from_json(&value);
        }
        if let Some(grace) = query
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse::<i64>().ok())
        {
            options.grace_period = Some(grace.max(0) as u64);
        }
        Ok(options)
    }

    pub(crate) fn from_json(value: &Value) -> DeleteOptions {
        let preconditions = value.get("preconditions");
        let text = |field: &str| {
            preconditions
                .and_then(|p| p.get(field))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        DeleteOptions {
            grace_period: value
                .get("gracePeriodSeconds")
                .and_then(Value::as_i64)
                .map(|g| g.max(0) as u64),
            uid: text("uid"),
            resource_version: text("resourceVersion"),
        }
    }
}

/// Deletes a pod as the API server does: a pod bound to a node is deleted gracefully (it
/// gets a deletion timestamp and stays until its kubelet is done, see
/// `ApiServer::remove_pod`); a pod that is not bound, or has finished, goes at once. The
/// answer is the pod with its deletion timestamp.
pub(crate) fn delete_pod(
    store: &mut Store,
    namespace: &str,
    name: &str,
    options: &DeleteOptions,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let mut pod = get_pod(store, namespace, name)?;
    let conflict = |why: String| ApiError::conflict("Pod", name, &why);
    if let Some(uid) = &options.uid {
        let actual = meta_str(&pod, "uid");
        if uid != actual {
            return Err(conflict(format!(
                "the UID in the precondition ({uid}) does not match the UID in record ({actual}). The object might have been deleted and then recreated"
            )));
        }
    }
    if let Some(rv) = &options.resource_version {
        let actual = meta_str(&pod, "resourceVersion");
        if rv != actual {
            return Err(conflict(format!(
                "the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({actual}). The object might have been modified"
            )));
        }
    }
    let existing_grace = pod["metadata"]
        .get("deletionGracePeriodSeconds")
        .and_then(Value::as_u64);
    let grace = if pod["metadata"].get("deletionTimestamp").is_some() {
        match (existing_grace, options.grace_period) {
            (None | Some(0), _) => 0,
            (Some(current), Some(shorter)) if shorter < current => shorter,
            // Graceful deletion is already under way: nothing changes.
            (Some(_), _) => return Ok(pod),
        }
    } else {
        let phase = pod["status"]
            .get("phase")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let bound = !pod["spec"]
            .get("nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty();
        if !bound || phase == "Succeeded" || phase == "Failed" {
            0
        } else {
            options
                .grace_period
                .or_else(|| {
                    pod["spec"]
                        .get("terminationGracePeriodSeconds")
                        .and_then(Value::as_u64)
                })
                .unwrap_or(30)
        }
    };
    if dry_run {
        return Ok(pod);
    }
    let rv = store.next_revision();
    let metadata = metadata_mut(&mut pod);
    metadata.insert(
        "deletionTimestamp".into(),
        Value::from(ids::now_plus(grace)),
    );
    metadata.insert("deletionGracePeriodSeconds".into(), Value::from(grace));
    metadata.insert("resourceVersion".into(), Value::from(rv));
    if grace == 0 {
        store.remove(Watched::Pods, &key(namespace, name));
    } else {
        store.put(Watched::Pods, key(namespace, name), pod.clone());
    }
    Ok(pod)
}

/// A pod for [`crate::ApiServer::add_pod`]: by default one container `main` running
/// `busybox`, `Pending`, not bound to a node, no labels or annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPod {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    phase: Option<String>,
    ready: Option<bool>,
    node: Option<String>,
    service_account: Option<String>,
}

impl NewPod {
    /// A pod to create in `namespace` under `name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> NewPod {
        NewPod {
            namespace: namespace.into(),
            name: name.into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            phase: None,
            ready: None,
            node: None,
            service_account: None,
        }
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> NewPod {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds an annotation.
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> NewPod {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Sets `status.phase` (`Running`, `Succeeded`, ...) instead of `Pending`. A `Running`
    /// pod is also ready (its `Ready` condition `True`, as the kubelet reports a pod whose
    /// containers run without a failing readiness probe) unless [`NewPod::ready`] says not.
    pub fn phase(mut self, phase: impl Into<String>) -> NewPod {
        self.phase = Some(phase.into());
        self
    }

    /// Sets the pod's `Ready` condition (with a phase): `false` for a pod whose readiness
    /// probe fails. Disruption budgets count only ready pods as healthy.
    pub fn ready(mut self, ready: bool) -> NewPod {
        self.ready = Some(ready);
        self
    }

    /// Binds the pod to a node (`spec.nodeName`): deleting it is then graceful.
    pub fn node(mut self, node: impl Into<String>) -> NewPod {
        self.node = Some(node.into());
        self
    }

    /// Runs the pod as this service account (`spec.serviceAccountName`).
    pub fn service_account(mut self, name: impl Into<String>) -> NewPod {
        self.service_account = Some(name.into());
        self
    }
}

pub(crate) fn add_pod(store: &mut Store, pod: &NewPod) -> Result<Value, ApiError> {
    let mut body = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.name},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    });
    store::set_string_map(&mut body, "labels", &pod.labels);
    store::set_string_map(&mut body, "annotations", &pod.annotations);
    if let Some(account) = &pod.service_account {
        // Defaulting copies the name into the deprecated `serviceAccount` too.
        body["spec"]["serviceAccountName"] = Value::from(account.clone());
        body["spec"]["serviceAccount"] = Value::from(account.clone());
    }
    if let Some(node) = &pod.node {
        body["spec"]["nodeName"] = Value::from(node.clone());
    }
    let status = pod.phase.as_ref().map(|phase| {
        let mut status = json!({"phase": phase, "qosClass": "BestEffort"});
        let ready = pod.ready.unwrap_or(phase == "Running");
        if ready || pod.ready.is_some() {
            set_ready_condition(&mut status, ready);
        }
        status
    });
    create_pod(store, &pod.namespace, body, status, false)
}

/// Sets the `Ready` condition of a pod's `status` (adding the condition list if needed).
pub(crate) fn set_ready_condition(status: &mut Value, ready: bool) {
    let condition = json!({"type": "Ready", "status": if ready { "True" } else { "False" }});
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    if let Some(conditions) = status["conditions"].as_array_mut() {
        match conditions.iter_mut().find(|c| c["type"] == "Ready") {
            Some(existing) => *existing = condition,
            None => conditions.push(condition),
        }
    }
}

/// Changes a pod directly (as a kubelet or controller would), advancing its resource version.
pub(crate) fn write_pod(
    store: &mut Store,
    namespace: &str,
    name: &str,
    change: impl FnOnce(&mut Value),
) -> Option<String> {
    let mut pod = store.pods.get(&key(namespace, name))?.clone();
    change(&mut pod);
    let rv = store.next_revision();
    metadata_mut(&mut pod).insert("resourceVersion".into(), Value::from(rv.clone()));
    store.put(Watched::Pods, key(namespace, name), pod);
    Some(rv)
}

/// Sets (or with `None` removes) one label or annotation through the update path, so the
/// result is validated and an unchanged pod keeps its resource version.
pub(crate) fn set_map_entry(
    store: &mut Store,
    namespace: &str,
    name: &str,
    field: &str,
    entry: &str,
    value: impl FnOnce(Option<&str>) -> Option<String>,
) -> Result<Value, ApiError> {
    let mut pod = get_pod(store, namespace, name)?;
    let mut map = string_map(&pod, field);
    match value(map.get(entry).map(String::as_str)) {
        Some(value) => map.insert(entry.to_string(), value),
        None => map.remove(entry),
    };
    store::set_string_map(&mut pod, field, &map);
    metadata_mut(&mut pod).remove("resourceVersion");
    update_pod(store, namespace, name, pod, false)
}

/// A store holding these pods, for tests of this crate.
#[cfg(test)]
pub(crate) fn store_with(pods: &[NewPod]) -> Store {
    let mut store = Store::new(42);
    for pod in pods {
        add_pod(&mut store, pod).expect("pod is valid");
    }
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "ns";

    fn query(raw: &str) -> Query {
        Query::parse(Some(raw))
    }

    fn rv(pod: &Value) -> u64 {
        meta_str(pod, "resourceVersion")
            .parse()
            .expect("numeric resource version")
    }

    fn merge(store: &mut Store, name: &str, body: Value) -> Result<Value, ApiError> {
        patch_pod(
            store,
            NS,
            name,
            PatchType::Merge,
            body.to_string().as_bytes(),
            false,
        )
    }

    #[test]
    fn a_new_pod_gets_the_api_servers_defaults() {
        let mut store = Store::new(1);
        let body = json!({"metadata": {"name": "p", "labels": {"app": "worker"}}, "spec": {"containers": [{"name": "main", "image": "busybox"}]}});
        let pod = create_pod(&mut store, NS, body, None, false).expect("created");
        assert_eq!(
            pod["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
        assert_eq!(pod["metadata"]["selfLink"], "/api/v1/namespaces/ns/pods/p");
        assert_eq!(meta_str(&pod, "resourceVersion"), store.revision());
        assert_eq!(pull_policy("nginx:1.2"), "IfNotPresent");
        assert_eq!(pull_policy("registry:5000/nginx"), "Always");
    }

    #[test]
    fn creating_a_pod_twice_is_a_conflict_and_bad_names_are_invalid() {
        let mut store = store_with(&[NewPod::new(NS, "p")]);
        let error = add_pod(&mut store, &NewPod::new(NS, "p")).expect_err("exists");
        assert_eq!((error.code, error.reason), (409, "AlreadyExists"));
        let error = add_pod(&mut store, &NewPod::new(NS, "Bad_Name")).expect_err("invalid");
        assert_eq!((error.code, error.reason), (422, "Invalid"));
        let error =
            add_pod(&mut store, &NewPod::new(NS, "q").label("a", "-1")).expect_err("invalid");
        assert_eq!(
            error.to_json()["details"]["causes"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "create validates once"
        );
    }

    #[test]
    fn generate_name_makes_a_name() {
        let mut store = Store::new(1);
        let body = json!({"metadata": {"generateName": "w-"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let pod = create_pod(&mut store, NS, body, None, false).expect("created");
        let name = meta_str(&pod, "name");
        assert!(name.starts_with("w-") && name.len() == 7, "{name}");
    }

    #[test]
    fn a_patch_that_changes_something_advances_the_resource_version_and_one_that_does_not_keeps_it()
    {
        let mut store = store_with(&[NewPod::new(NS, "p").label("app", "worker")]);
        let before = rv(&get_pod(&store, NS, "p").expect("pod"));
        let after =
            merge(&mut store, "p", json!({"metadata": {"labels": {"x": "1"}}})).expect("patched");
        assert!(rv(&after) > before);
        let again =
            merge(&mut store, "p", json!({"metadata": {"labels": {"x": "1"}}})).expect("patched");
        assert_eq!(rv(&again), rv(&after));
        let removed = merge(
            &mut store,
            "p",
            json!({"metadata": {"labels": {"absent": null}}}),
        )
        .expect("patched");
        assert_eq!(rv(&removed), rv(&after));
    }

    #[test]
    fn a_resource_version_in_a_patch_or_update_must_be_current() {
        let mut store = store_with(&[NewPod::new(NS, "p")]);
        let error = merge(
            &mut store,
            "p",
            json!({"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}}),
        )
        .expect_err("stale");
        assert_eq!(
            error.to_json(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "Operation cannot be fulfilled on pods \"p\": the object has been modified; please apply your changes to the latest version and try again",
                   "reason": "Conflict", "details": {"name": "p", "kind": "pods"}, "code": 409})
        );
        let current = get_pod(&store, NS, "p").expect("pod");
        let mut updated = current.clone();
        updated["metadata"]["labels"] = json!({"a": "b"});
        let stored = replace_pod(&mut store, NS, "p", updated.to_string().as_bytes(), false)
            .expect("current");
        assert!(rv(&stored) > rv(&current));
        let error = replace_pod(&mut store, NS, "p", updated.to_string().as_bytes(), false)
            .expect_err("stale now");
        assert_eq!(error.code, 409);
    }

    #[test]
    fn an_update_keeps_status_and_server_fields_and_refuses_spec_changes() {
        let mut store = store_with(&[NewPod::new(NS, "p").phase("Running")]);
        let current = get_pod(&store, NS, "p").expect("pod");
        let mut body = current.clone();
        body["status"] = json!({"phase": "Failed"});
        body["metadata"]["uid"] = json!("");
        body["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
        let stored = replace_pod(&mut store, NS, "p", body.to_string().as_bytes(), false)
            .expect("no change");
        assert_eq!(stored, current);
        let mut body = current.clone();
        body["spec"]["restartPolicy"] = json!("Never");
        let error = replace_pod(&mut store, NS, "p", body.to_string().as_bytes(), false)
            .expect_err("spec change");
        assert_eq!(error.code, 422);
        assert!(
            error
                .message
                .contains("spec: Forbidden: pod updates may not change fields"),
            "{}",
            error.message
        );
        let mut body = current;
        body["spec"]["containers"][0]["image"] = json!("busybox:2");
        assert!(replace_pod(&mut store, NS, "p", body.to_string().as_bytes(), false).is_ok());
    }

    #[test]
    fn invalid_labels_in_an_update_are_reported_as_the_api_server_does() {
        let mut store = store_with(&[NewPod::new(NS, "p").label("app", "worker")]);
        let error = merge(
            &mut store,
            "p",
            json!({"metadata": {"labels": {"active-jobs": "-1"}}}),
        )
        .expect_err("invalid");
        let body = error.to_json();
        assert_eq!(body["details"]["causes"].as_array().map(Vec::len), Some(4));
        assert_eq!(body["details"]["kind"], "Pod");
    }

    #[test]
    fn a_patch_with_a_label_of_the_wrong_type_is_invalid() {
        let mut store = store_with(&[NewPod::new(NS, "p")]);
        let error =
            merge(&mut store, "p", json!({"metadata": {"labels": {"a": 1}}})).expect_err("number");
        assert_eq!(error.code, 422);
        assert!(
            error
                .message
                .starts_with(" \"\" is invalid: patch: Invalid value: "),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_patch_may_not_rename_the_pod() {
        let mut store = store_with(&[NewPod::new(NS, "p")]);
        let error = merge(&mut store, "p", json!({"metadata": {"name": "q"}})).expect_err("rename");
        assert_eq!(
            error.message,
            "the name of the object (q) does not match the name on the URL (p)"
        );
    }

    #[test]
    fn a_continue_token_from_before_a_compaction_answers_410_expired() {
        let mut store = store_with(&[
            NewPod::new("ns", "a"),
            NewPod::new("ns", "b"),
            NewPod::new("ns", "c"),
        ]);
        let first = list_pods(&store, Some("ns"), &query("limit=1")).expect("a page");
        let token = first["metadata"]["continue"]
            .as_str()
            .expect("a token")
            .to_owned();
        store.compacted = store.revision().parse().expect("a number");
        store.next_revision();
        let error = list_pods(
            &store,
            Some("ns"),
            &query(&format!("limit=1&continue={token}")),
        )
        .expect_err("expired");
        assert_eq!((error.code, error.reason), (410, "Expired"));
        // A new list pages on.
        let again = list_pods(&store, Some("ns"), &query("limit=1")).expect("a page");
        let token = again["metadata"]["continue"]
            .as_str()
            .expect("a token")
            .to_owned();
        let next = list_pods(
            &store,
            Some("ns"),
            &query(&format!("limit=1&continue={token}")),
        )
        .expect("the next page");
        assert_eq!(next["items"][0]["metadata"]["name"], "b");
    }

    #[test]
    fn lists_filter_by_namespace_labels_and_fields_and_page_with_continue() {
        let store = store_with(&[
            NewPod::new("a", "p1").label("app", "worker"),
            NewPod::new("a", "p2")
                .label("app", "worker")
                .phase("Running"),
            NewPod::new("a", "p3").label("app", "web"),
            NewPod::new("b", "p4").label("app", "worker"),
        ]);
        let names = |list: &Value| -> Vec<String> {
            list["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|i| meta_str(i, "name").to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let all = list_pods(&store, None, &query("labelSelector=app%3Dworker")).expect("list");
        assert_eq!(names(&all), ["p1", "p2", "p4"]);
        assert!(all["items"][0].get("kind").is_none());
        let running = list_pods(
            &store,
            Some("a"),
            &query("fieldSelector=status.phase%3DRunning"),
        )
        .expect("list");
        assert_eq!(names(&running), ["p2"]);
        let first = list_pods(&store, Some("a"), &query("limit=2")).expect("list");
        assert_eq!(names(&first), ["p1", "p2"]);
        assert_eq!(first["metadata"]["remainingItemCount"], 1);
        let token = first["metadata"]["continue"]
            .as_str()
            .expect("continue token")
            .to_string();
        let rest = list_pods(
            &store,
            Some("a"),
            &Query(vec![
                ("limit".into(), "2".into()),
                ("continue".into(), token),
            ]),
        )
        .expect("list");
        assert_eq!(names(&rest), ["p3"]);
        assert!(rest["metadata"].get("continue").is_none());
        // A namespace's pages never run into the next namespace, and the whole-cluster list
        // pages across namespaces.
        let b = list_pods(&store, Some("b"), &query("limit=5")).expect("list");
        assert_eq!(names(&b), ["p4"]);
        assert!(b["metadata"].get("continue").is_none());
        let across = list_pods(&store, None, &query("limit=3")).expect("list");
        assert_eq!(names(&across), ["p1", "p2", "p3"]);
        let token = across["metadata"]["continue"]
            .as_str()
            .expect("continue token")
            .to_string();
        let next = list_pods(
            &store,
            None,
            &Query(vec![
                ("limit".into(), "3".into()),
                ("continue".into(), token),
            ]),
        )
        .expect("list");
        assert_eq!(names(&next), ["p4"]);
        assert!(list_pods(&store, Some("c"), &query("")).is_ok_and(|l| names(&l).is_empty()));
        let error =
            list_pods(&store, None, &query("fieldSelector=spec.foo%3Dx")).expect_err("unsupported");
        assert_eq!(error.message, "field label not supported: spec.foo");
        let error = list_pods(&store, None, &query("labelSelector=app+in+%28worker"))
            .expect_err("bad selector");
        assert_eq!(
            error.message,
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
    }

    #[test]
    fn deleting_an_unbound_pod_removes_it_at_once_and_a_bound_one_gracefully() {
        let mut store = store_with(&[
            NewPod::new(NS, "free"),
            NewPod::new(NS, "bound").node("n1").phase("Running"),
        ]);
        let deleted =
            delete_pod(&mut store, NS, "free", &DeleteOptions::default(), false).expect("deleted");
        assert_eq!(deleted["metadata"]["deletionGracePeriodSeconds"], 0);
        assert!(!store.pods.contains_key(&key(NS, "free")));
        let deleting = delete_pod(&mut store, NS, "bound", &DeleteOptions::default(), false)
            .expect("deleting");
        assert_eq!(deleting["metadata"]["deletionGracePeriodSeconds"], 30);
        assert!(store.pods.contains_key(&key(NS, "bound")));
        let now = delete_pod(
            &mut store,
            NS,
            "bound",
            &DeleteOptions {
                grace_period: Some(0),
                ..DeleteOptions::default()
            },
            false,
        )
        .expect("forced");
        assert_eq!(now["metadata"]["deletionGracePeriodSeconds"], 0);
        assert!(store.pods.is_empty());
    }

    #[test]
    fn an_absurd_grace_period_does_not_break_the_server() {
        let mut store = store_with(&[NewPod::new(NS, "p").node("n").phase("Running")]);
        let options = DeleteOptions::parse(b"", &query("gracePeriodSeconds=9223372036854775807"))
            .expect("options");
        let deleting = delete_pod(&mut store, NS, "p", &options, false).expect("deleting");
        assert!(deleting["metadata"]["deletionTimestamp"].is_string());
    }

    #[test]
    fn delete_preconditions_are_checked() {
        let mut store = store_with(&[NewPod::new(NS, "p")]);
        let options = DeleteOptions {
            resource_version: Some("1".into()),
            ..DeleteOptions::default()
        };
        let error = delete_pod(&mut store, NS, "p", &options, false).expect_err("stale");
        assert_eq!((error.code, error.reason), (409, "Conflict"));
        assert!(error.message.starts_with("Operation cannot be fulfilled on Pod \"p\": the ResourceVersion in the precondition (1)"));
    }

    #[test]
    fn the_external_writer_validates_and_advances_the_resource_version() {
        let mut store = store_with(&[NewPod::new(NS, "p")]);
        let before = rv(&get_pod(&store, NS, "p").expect("pod"));
        let after = set_map_entry(&mut store, NS, "p", "labels", "active-jobs", |_| {
            Some("2".into())
        })
        .expect("set");
        assert!(rv(&after) > before);
        assert!(
            set_map_entry(&mut store, NS, "p", "labels", "active-jobs", |_| Some(
                "-1".into()
            ))
            .is_err()
        );
        let removed =
            set_map_entry(&mut store, NS, "p", "labels", "active-jobs", |_| None).expect("removed");
        assert!(removed["metadata"].get("labels").is_none());
        assert!(
            write_pod(&mut store, NS, "p", |pod| pod["status"]["phase"] =
                json!("Running"))
            .is_some()
        );
        assert!(write_pod(&mut store, NS, "missing", |_| ()).is_none());
    }
}
