//! What an authorized request does: dispatch to the kind of resource, the helpers all kinds
//! share (decoding, naming, stamping, listing), events, access reviews, `/version` and health
//! checks. Pure: no HTTP here.

use serde_json::{Value, json};

use crate::admission;
use crate::objects::{Options, assign_name, claim_namespace, decode_body, stamp_new};
use crate::patch::PatchType;
use crate::pods::{self, DeleteOptions};
use crate::policy;
use crate::rbac::{Attributes, Rbac, User};
use crate::record::Verb;
use crate::routes::{EventsApi, Query, Route};
use crate::status::{ApiError, GroupResource};
use crate::store::{Store, meta_str, metadata_mut};
use crate::validation::{self, FieldError};

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
        // The server streams an authorized, valid watch (see `crate::watch`).
        (Route::Pods { .. } | Route::Pdbs { .. }, Verb::Watch) => {
            crate::watch::Watch::parse(call.route, call.query)?;
            Ok((200, Value::Null))
        }
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
                .ok_or_else(ApiError::unsupported_media_type)?;
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
        (Route::ServiceAccountToken { namespace, name }, Verb::Create) => {
            let answer = crate::tokens::token_request(store, namespace, name, call.body)?;
            Ok((201, answer))
        }
        (Route::TokenReviews, Verb::Create) => {
            Ok((201, crate::tokens::token_review(store, call.body)?))
        }
        (Route::SubjectAccessReview, Verb::Create) => {
            Ok((201, subject_access_review(rbac, call.body)?))
        }
        (Route::WebhookConfigs, Verb::List) => Ok((200, admission::list_configs(store))),
        (Route::WebhookConfigs, Verb::Create) => {
            Ok((201, admission::create_config(store, call.body, dry_run)?))
        }
        (Route::WebhookConfig { name }, Verb::Get) => {
            Ok((200, admission::get_config(store, name)?))
        }
        (Route::WebhookConfig { name }, Verb::Patch) => {
            let content_type = call.content_type.unwrap_or_default();
            let kind = PatchType::from_content_type(content_type)
                .ok_or_else(ApiError::unsupported_media_type)?;
            Ok((
                200,
                admission::patch_config(store, name, kind, call.body, dry_run)?,
            ))
        }
        (Route::WebhookConfig { name }, Verb::Delete) => {
            admission::delete_config(store, name, dry_run)?;
            Ok((200, crate::status::success(200)))
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

/// `SubjectAccessReview`: the same question about `spec.user` and `spec.groups`.
pub(crate) fn subject_access_review(rbac: &Rbac, body: &[u8]) -> Result<Value, ApiError> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let spec = &review["spec"];
    let name = spec["user"].as_str().unwrap_or_default();
    if name.is_empty() && spec["groups"].as_array().is_none_or(Vec::is_empty) {
        return Err(validation::invalid(
            "SubjectAccessReview.authorization.k8s.io",
            "",
            &[FieldError::invalid(
                "spec.user",
                "\"\"",
                "at least one of user or group must be specified",
            )],
        ));
    }
    let groups = crate::store::string_list(&spec["groups"]);
    let user = User::new(name).groups(groups);
    let mut answer = access_review(rbac, &user, body)?;
    answer["kind"] = json!("SubjectAccessReview");
    Ok(answer)
}

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
