//! What an authorized request does: dispatch to the kind of resource, the helpers all kinds
//! share (decoding, naming, stamping, listing), events, access reviews, `/version` and health
//! checks. Pure: no HTTP here.

use kube_labels::Selector;
use serde_json::{Map, Value, json};

use crate::ids;
use crate::patch::PatchType;
use crate::pods::{self, DeleteOptions};
use crate::policy;
use crate::rbac::{Attributes, Rbac, User};
use crate::record::Verb;
use crate::routes::{EventsApi, FieldSelector, Query, Route};
use crate::status::{ApiError, GroupResource};
use crate::store::{self, Objects, Store, meta_str, metadata_mut, string_map};
use crate::validation::{self, FieldError};

/// Server-wide behaviour that requests depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Options {
    /// Whether a disruption controller keeps budget statuses up to date (as on a real
    /// cluster). Without one, every budget is "still being processed" forever.
    pub disruption_controller: bool,
}

/// One authorized request.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub verb: Verb,
    pub route: &'a Route,
    pub query: &'a Query,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    pub user: &'a User,
}

/// Answers an authorized request: the status code and body, or an error `Status`.
pub(crate) fn serve(
    store: &mut Store,
    rbac: &Rbac,
    options: Options,
    call: &Call,
) -> Result<(u16, Value), ApiError> {
    let dry_run = call.query.dry_run();
    match (call.route, call.verb) {
        (Route::Info(path), Verb::Get) => Ok((200, info(path))),
        (Route::Pods { namespace }, Verb::List) => Ok((
            200,
            pods::list_pods(store, namespace.as_deref(), call.query)?,
        )),
        (
            Route::Pods {
                namespace: Some(ns),
            },
            Verb::Create,
        ) => {
            let body = decode_body(call.body, "Pod")?;
            Ok((201, pods::create_pod(store, ns, body, None, dry_run)?))
        }
        (Route::Pod { namespace, name }, Verb::Get) => {
            Ok((200, pods::get_pod(store, namespace, name)?))
        }
        (Route::Pod { namespace, name }, Verb::Update) => Ok((
            200,
            pods::replace_pod(store, namespace, name, call.body, dry_run)?,
        )),
        (Route::Pod { namespace, name }, Verb::Patch) => {
            let content_type = call.content_type.unwrap_or_default();
            let kind = PatchType::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            Ok((
                200,
                pods::patch_pod(store, namespace, name, kind, call.body, dry_run)?,
            ))
        }
        (Route::Pod { namespace, name }, Verb::Delete) => {
            let options = DeleteOptions::parse(call.body, call.query)?;
            Ok((
                200,
                pods::delete_pod(store, namespace, name, &options, dry_run)?,
            ))
        }
        (Route::Eviction { namespace, name }, Verb::Evict) => {
            policy::evict(store, options, namespace, name, call.body, dry_run)
        }
        (Route::Events { namespace, api }, Verb::Create) => Ok((
            201,
            create_event(store, namespace, *api, call.body, dry_run)?,
        )),
        (Route::Pdbs { version, namespace }, Verb::List) => Ok((
            200,
            policy::list_pdbs(store, options, *version, namespace.as_deref(), call.query)?,
        )),
        (
            Route::Pdbs {
                version,
                namespace: Some(ns),
            },
            Verb::Create,
        ) => {
            let body = decode_body(call.body, "PodDisruptionBudget")?;
            Ok((
                201,
                policy::create_pdb(store, ns, Some(*version), body, dry_run)?,
            ))
        }
        (
            Route::Pdb {
                version,
                namespace,
                name,
            },
            Verb::Get,
        ) => Ok((
            200,
            policy::get_pdb(store, options, *version, namespace, name)?,
        )),
        (
            Route::Pdb {
                version,
                namespace,
                name,
            },
            Verb::Delete,
        ) => {
            let pdb = policy::delete_pdb(store, options, *version, namespace, name, dry_run)?;
            Ok((200, pdb))
        }
        (Route::AccessReview, Verb::Create) => {
            Ok((201, access_review(rbac, call.user, call.body)?))
        }
        (Route::Unknown, _) => Err(ApiError::unknown_path()),
        _ => Err(ApiError::method_not_allowed()),
    }
}

pub(crate) fn info(path: &str) -> Value {
    if path == "version" {
        json!({"major": "1", "minor": "19", "gitVersion": "v1.19.0", "gitCommit": "kube-double",
               "gitTreeState": "clean", "buildDate": "2020-08-26T14:23:04Z", "goVersion": "go1.15",
               "compiler": "gc", "platform": "linux/amd64"})
    } else {
        Value::from("ok")
    }
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
        Some(token) => Some(decode_continue(token)?),
    };
    let matching: Vec<(&(String, String), &Value)> = objects
        .iter()
        .filter(|((ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
        .filter(|(k, _)| start.as_ref().is_none_or(|s| *k > s))
        .filter(|(_, object)| labels.matches(&string_map(object, "labels")))
        .filter(|(_, object)| fields.matches(|f| field_value(object, f)))
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

pub(crate) fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    use base64::Engine as _;
    let invalid = || ApiError::bad_request("continue key is not valid");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| invalid())?;
    let token: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
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

pub(crate) fn create_event(
    store: &mut Store,
    namespace: &str,
    api: EventsApi,
    body: &[u8],
    dry_run: bool,
) -> Result<Value, ApiError> {
    let mut event = decode_body(body, "Event")?;
    claim_namespace(&mut event, namespace)?;
    let name = assign_name(store, &mut event);
    let (api_version, link) = match api {
        EventsApi::Core => (
            "v1",
            format!("/api/v1/namespaces/{namespace}/events/{name}"),
        ),
        EventsApi::EventsV1 => (
            "events.k8s.io/v1",
            format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}"),
        ),
    };
    event["kind"] = json!("Event");
    event["apiVersion"] = json!(api_version);
    if api == EventsApi::Core {
        for (field, value) in [
            ("firstTimestamp", Value::Null),
            ("lastTimestamp", Value::Null),
            ("eventTime", Value::Null),
            ("reportingComponent", json!("")),
            ("reportingInstance", json!("")),
        ] {
            if event.get(field).is_none() {
                event[field] = value;
            }
        }
    }
    let errors = validation::object_name(&name);
    if !errors.is_empty() {
        return Err(validation::invalid("Event", &name, &errors));
    }
    if store
        .events
        .iter()
        .any(|e| meta_str(e, "namespace") == namespace && meta_str(e, "name") == name)
    {
        return Err(ApiError::already_exists(GroupResource::EVENTS, &name));
    }
    stamp_new(store, &mut event, link)?;
    if !dry_run {
        metadata_mut(&mut event)
            .insert("resourceVersion".into(), Value::from(store.next_revision()));
        store.events.push(event.clone());
    }
    Ok(event)
}

/// Paths every authenticated user may read (system:public-info-viewer, system:discovery).
pub(crate) const PUBLIC_PATHS: &[&str] =
    &["/version", "/healthz", "/livez", "/readyz", "/api", "/apis"];

pub(crate) fn access_review(rbac: &Rbac, user: &User, body: &[u8]) -> Result<Value, ApiError> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let text = |attributes: &Value, field: &str| {
        attributes
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let decision = match (
        spec.get("resourceAttributes"),
        spec.get("nonResourceAttributes"),
    ) {
        (Some(attributes), None) => {
            let attributes = Attributes {
                verb: text(attributes, "verb"),
                group: text(attributes, "group"),
                resource: text(attributes, "resource"),
                subresource: text(attributes, "subresource"),
                namespace: text(attributes, "namespace"),
                name: text(attributes, "name"),
            };
            rbac.authorize(user, &attributes)
        }
        (None, Some(attributes)) => {
            let public = text(attributes, "verb") == "get"
                && PUBLIC_PATHS.contains(&text(attributes, "path").as_str());
            crate::rbac::Decision {
                allowed: public || user.is_master(),
                reason: None,
            }
        }
        _ => {
            return Err(validation::invalid(
                "SelfSubjectAccessReview.authorization.k8s.io",
                "",
                &[FieldError::invalid(
                    "spec.resourceAttributes",
                    "null",
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                )],
            ));
        }
    };
    let mut status = json!({"allowed": decision.allowed});
    if let Some(reason) = decision.reason {
        status["reason"] = Value::from(reason);
    }
    Ok(json!({
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": status,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::Subject;

    const NS: &str = "ns";

    #[test]
    fn access_reviews_answer_with_the_rbac_reason() {
        let mut rbac = Rbac::default();
        rbac.allow(
            Subject::user("t"),
            crate::rbac::Rule::new(["patch"], ["pods"])
                .namespace(NS)
                .named("t"),
        );
        let body = json!({"spec": {"resourceAttributes": {"namespace": NS, "verb": "patch", "resource": "pods", "name": "p"}}});
        let review = access_review(
            &rbac,
            &User::new("t").authenticated(),
            body.to_string().as_bytes(),
        )
        .expect("review");
        assert_eq!(
            review["status"],
            json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding \"t/ns\" of Role \"t\" to User \"t\""})
        );
        let review = access_review(
            &rbac,
            &User::new("u").authenticated(),
            body.to_string().as_bytes(),
        )
        .expect("review");
        assert_eq!(review["status"], json!({"allowed": false}));
        assert_eq!(
            access_review(&rbac, &User::new("u"), b"{}")
                .expect_err("no attributes")
                .code,
            422
        );
    }

    #[test]
    fn events_get_a_generated_name_and_the_core_defaults() {
        let mut store = Store::new(1);
        let body = json!({"metadata": {"generateName": "p."}, "reason": "Busy", "involvedObject": {"kind": "Pod", "name": "p"}});
        let event = create_event(
            &mut store,
            NS,
            EventsApi::Core,
            body.to_string().as_bytes(),
            false,
        )
        .expect("created");
        assert!(meta_str(&event, "name").starts_with("p."));
        assert_eq!(event["reportingComponent"], "");
        assert_eq!(store.events.len(), 1);
    }
}
