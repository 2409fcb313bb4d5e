//! Disruption budgets (policy/v1 and v1beta1) and the eviction subresource that honours them,
//! with the disruption controller's arithmetic.

use kube_labels::{Operator, Requirement, Selector};
use serde_json::{Value, json};

use crate::objects::{Options, assign_name, claim_namespace, key, list, stamp_new};
use crate::pods::{DeleteOptions, delete_pod, get_pod};
use crate::routes::{PolicyVersion, Query};
use crate::status::{self, ApiError, Cause, GroupResource};
use crate::store::{Objects, Store, Watched, meta_str, metadata_mut, string_map};
use crate::validation::{self, FieldError};

pub(crate) fn pdb_link(version: PolicyVersion, namespace: &str, name: &str) -> String {
    format!(
        "/apis/{}/namespaces/{namespace}/poddisruptionbudgets/{name}",
        version.api_version()
    )
}

/// A budget's selector: `None` if it selects nothing.
pub(crate) fn pdb_selector(pdb: &Value) -> Option<Selector> {
    let selector = pdb.get("spec").and_then(|s| s.get("selector"))?;
    if !selector.is_object() {
        return None;
    }
    let mut requirements = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            requirements.push(
                Requirement::new(k.clone(), Operator::Equals, vec![v.as_str()?.to_string()])
                    .ok()?,
            );
        }
    }
    if let Some(expressions) = selector.get("matchExpressions").and_then(Value::as_array) {
        for expression in expressions {
            let key = expression.get("key").and_then(Value::as_str)?;
            let operator = match expression.get("operator").and_then(Value::as_str)? {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                _ => return None,
            };
            let values = expression
                .get("values")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            requirements.push(Requirement::new(key, operator, values).ok()?);
        }
    }
    let selector = Selector::from_requirements(requirements);
    // policy/v1beta1: an empty selector selects nothing; policy/v1: everything.
    let created_as_v1 = pdb.get("apiVersion").and_then(Value::as_str) == Some("policy/v1");
    if selector.is_empty() && !created_as_v1 {
        return None;
    }
    Some(selector)
}

pub(crate) fn pdb_selects(pdb: &Value, pod: &Value) -> bool {
    meta_str(pdb, "namespace") == meta_str(pod, "namespace")
        && pdb_selector(pdb).is_some_and(|s| s.matches(&string_map(pod, "labels")))
}

/// Whether the pod's `Ready` condition is `True` (`podutil.IsPodReady`; the phase does not
/// matter: a Running pod whose readiness probe fails is not ready).
pub(crate) fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Whether the disruption controller counts the pod as healthy: ready and not being deleted.
pub(crate) fn is_healthy(pod: &Value) -> bool {
    is_ready(pod) && pod["metadata"].get("deletionTimestamp").is_none()
}

/// An `IntOrString` scaled like the disruption controller does (`50%` of 3, rounded up).
pub(crate) fn scaled(value: &Value, total: u64) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let percent: u64 = s.strip_suffix('%')?.parse().ok()?;
            Some(percent.checked_mul(total)?.div_ceil(100))
        }
        _ => None,
    }
}

/// The status the disruption controller would give a budget now.
pub(crate) fn computed_pdb_status(store: &Store, pdb: &Value) -> Value {
    pdb_status_among(&store.pods, pdb)
}

/// The status the disruption controller would give a budget among these pods (a watch looks
/// at the pods of an earlier revision too).
pub(crate) fn pdb_status_among(pods: &Objects, pdb: &Value) -> Value {
    let pods: Vec<&Value> = pods.values().filter(|pod| pdb_selects(pdb, pod)).collect();
    let expected = pods.len() as u64;
    let healthy = pods.iter().filter(|pod| is_healthy(pod)).count() as u64;
    let spec = &pdb["spec"];
    let desired = if let Some(min) = spec.get("minAvailable") {
        scaled(min, expected).unwrap_or(0)
    } else if let Some(max) = spec.get("maxUnavailable") {
        expected.saturating_sub(scaled(max, expected).unwrap_or(0))
    } else {
        1
    };
    let generation = pdb["metadata"]
        .get("generation")
        .cloned()
        .unwrap_or(json!(1));
    let allowed = healthy.saturating_sub(desired);
    // The controller's condition; the double computes statuses when they are read, so the
    // transition is dated at the budget's creation.
    let (condition_status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    json!({
        "observedGeneration": generation,
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": [{
            "type": "DisruptionAllowed",
            "status": condition_status,
            "reason": reason,
            "message": "",
            "observedGeneration": generation,
            "lastTransitionTime": pdb["metadata"].get("creationTimestamp").cloned().unwrap_or(Value::Null),
        }],
    })
}

/// A budget as served in `version`, with its status brought up to date if there is a
/// disruption controller.
pub(crate) fn serve_pdb(
    store: &Store,
    options: Options,
    version: PolicyVersion,
    pdb: &Value,
) -> Value {
    serve_pdb_among(&store.pods, options, version, pdb)
}

/// [`serve_pdb`], its status computed among `pods`.
pub(crate) fn serve_pdb_among(
    pods: &Objects,
    options: Options,
    version: PolicyVersion,
    pdb: &Value,
) -> Value {
    let mut served = pdb.clone();
    served["apiVersion"] = Value::from(version.api_version());
    served["kind"] = Value::from("PodDisruptionBudget");
    let (ns, name) = (
        meta_str(pdb, "namespace").to_string(),
        meta_str(pdb, "name").to_string(),
    );
    metadata_mut(&mut served).insert(
        "selfLink".into(),
        Value::from(pdb_link(version, &ns, &name)),
    );
    if options.disruption_controller {
        served["status"] = pdb_status_among(pods, pdb);
    }
    served
}

/// `GET` of one budget.
pub(crate) fn get_pdb(
    store: &Store,
    options: Options,
    version: PolicyVersion,
    namespace: &str,
    name: &str,
) -> Result<Value, ApiError> {
    let pdb = store
        .pdbs
        .get(&key(namespace, name))
        .ok_or_else(|| ApiError::not_found(GroupResource::PDBS, name))?;
    Ok(serve_pdb(store, options, version, pdb))
}

/// `DELETE` of one budget (budgets have no graceful deletion): the budget as it was.
pub(crate) fn delete_pdb(
    store: &mut Store,
    options: Options,
    version: PolicyVersion,
    namespace: &str,
    name: &str,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let served = get_pdb(store, options, version, namespace, name)?;
    if !dry_run {
        store.next_revision();
        store.remove(Watched::Pdbs, &key(namespace, name));
    }
    Ok(served)
}

pub(crate) fn list_pdbs(
    store: &Store,
    options: Options,
    version: PolicyVersion,
    namespace: Option<&str>,
    query: &Query,
) -> Result<Value, ApiError> {
    let serve = |pdb: &Value| serve_pdb(store, options, version, pdb);
    let (items, mut metadata) = list(
        store,
        &store.pdbs,
        namespace,
        query,
        &["metadata.name", "metadata.namespace"],
        &serve,
    )?;
    let link = match namespace {
        Some(ns) => format!(
            "/apis/{}/namespaces/{ns}/poddisruptionbudgets",
            version.api_version()
        ),
        None => format!("/apis/{}/poddisruptionbudgets", version.api_version()),
    };
    metadata.insert("selfLink".into(), Value::from(link));
    metadata.insert("resourceVersion".into(), Value::from(store.revision()));
    Ok(
        json!({"kind": "PodDisruptionBudgetList", "apiVersion": version.api_version(), "metadata": metadata, "items": items}),
    )
}

/// Creates a budget. `version` is the API version of the request; `None` means "as the
/// body says" (the handle's way).
pub(crate) fn create_pdb(
    store: &mut Store,
    namespace: &str,
    version: Option<PolicyVersion>,
    mut pdb: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let version = version
        .or_else(|| {
            pdb.get("apiVersion")
                .and_then(Value::as_str)
                .and_then(|v| PolicyVersion::parse(v.trim_start_matches("policy/")))
        })
        .unwrap_or(PolicyVersion::V1);
    claim_namespace(&mut pdb, namespace)?;
    let name = assign_name(store, &mut pdb);
    pdb["apiVersion"] = Value::from(version.api_version());
    pdb["kind"] = Value::from("PodDisruptionBudget");
    if !pdb.get("spec").is_some_and(Value::is_object) {
        pdb["spec"] = json!({});
    }
    if pdb["spec"].get("minAvailable").is_none() && pdb["spec"].get("maxUnavailable").is_none() {
        pdb["spec"]["minAvailable"] = json!(1);
    }
    let mut errors = validation::object_name(&name);
    errors.extend(validation::label_maps(
        &string_map(&pdb, "labels"),
        &string_map(&pdb, "annotations"),
    ));
    if pdb["spec"].get("minAvailable").is_some() && pdb["spec"].get("maxUnavailable").is_some() {
        errors.push(FieldError::invalid(
            "spec",
            "",
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    if !errors.is_empty() {
        return Err(validation::invalid(
            "PodDisruptionBudget.policy",
            &name,
            &errors,
        ));
    }
    if store.pdbs.contains_key(&key(namespace, &name)) {
        return Err(ApiError::already_exists(GroupResource::PDBS, &name));
    }
    stamp_new(store, &mut pdb, pdb_link(version, namespace, &name))?;
    metadata_mut(&mut pdb).insert("generation".into(), json!(1));
    pdb["status"] = json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0});
    if !dry_run {
        metadata_mut(&mut pdb).insert("resourceVersion".into(), Value::from(store.next_revision()));
        store.put(Watched::Pdbs, key(namespace, &name), pdb.clone());
    }
    Ok(pdb)
}

/// `POST pods/{name}/eviction`, as the eviction subresource decides: pods that are pending,
/// finished or already being deleted go regardless of budgets; a pod under two budgets is a
/// 500; a pod under one goes only if the budget allows a disruption (429 otherwise), except
/// that a pod that is not ready goes when its budget's `unhealthyPodEvictionPolicy` is
/// `AlwaysAllow`, or (`IfHealthyBudget`, the default) when the budget has all the healthy
/// pods it needs.
pub(crate) fn evict(
    store: &mut Store,
    options: Options,
    namespace: &str,
    name: &str,
    body: &[u8],
    dry_run: bool,
) -> Result<(u16, Value), ApiError> {
    let eviction: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let named = meta_str(&eviction, "name");
    if !named.is_empty() && named != name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let delete_options = eviction
        .get("deleteOptions")
        .map(DeleteOptions::from_json)
        .unwrap_or_default();
    let pod = get_pod(store, namespace, name)?;
    let phase = pod["status"]
        .get("phase")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ignores_budgets = matches!(phase, "Pending" | "Succeeded" | "Failed")
        || pod["metadata"].get("deletionTimestamp").is_some();
    if !ignores_budgets {
        let budgets: Vec<&Value> = store
            .pdbs
            .values()
            .filter(|pdb| pdb_selects(pdb, &pod))
            .collect();
        if budgets.len() > 1 {
            return Ok((
                500,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                       "code": 500}),
            ));
        }
        if let Some(pdb) = budgets.first() {
            let pdb_name = meta_str(pdb, "name").to_string();
            let refuse = |why: String| {
                ApiError::too_many_requests(
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    &[Cause {
                        reason: "DisruptionBudget".into(),
                        message: why,
                        field: None,
                    }],
                )
            };
            // Without a controller the budget keeps the status it was created with.
            let status = if options.disruption_controller {
                computed_pdb_status(store, pdb)
            } else {
                pdb["status"].clone()
            };
            let number = |field: &str| status.get(field).and_then(Value::as_u64).unwrap_or(0);
            let (healthy, desired, allowed) = (
                number("currentHealthy"),
                number("desiredHealthy"),
                number("disruptionsAllowed"),
            );
            // A pod that is not ready is deleted without looking at the budget's
            // allowance when its policy lets it go.
            let always_allow = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
            let unhealthy_goes =
                !is_ready(&pod) && (always_allow || (healthy >= desired && desired > 0));
            if !unhealthy_goes {
                if !options.disruption_controller {
                    return Err(refuse(format!(
                        "The disruption budget {pdb_name} is still being processed by the server."
                    )));
                }
                if allowed == 0 {
                    return Err(refuse(format!(
                        "The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently"
                    )));
                }
            }
        }
    }
    delete_pod(store, namespace, name, &delete_options, dry_run)?;
    Ok((201, status::success(201)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::{NewPod, store_with};

    const NS: &str = "ns";

    fn budget(min_available: Value, selector: Value) -> Value {
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"},
               "spec": {"minAvailable": min_available, "selector": selector}})
    }

    fn evict_pod(
        store: &mut Store,
        controller: bool,
        name: &str,
    ) -> Result<(u16, Value), ApiError> {
        let body =
            json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}});
        evict(
            store,
            Options {
                disruption_controller: controller,
            },
            NS,
            name,
            body.to_string().as_bytes(),
            false,
        )
    }

    #[test]
    fn an_eviction_is_refused_while_the_budget_needs_the_pod() {
        let mut store = store_with(&[
            NewPod::new(NS, "busy-1")
                .label("active-jobs", "1")
                .phase("Running"),
            NewPod::new(NS, "busy-2")
                .label("active-jobs", "2")
                .phase("Running"),
            NewPod::new(NS, "idle").phase("Running"),
        ]);
        let selector = json!({"matchExpressions": [{"key": "active-jobs", "operator": "Exists"}]});
        create_pdb(&mut store, NS, None, budget(json!(2), selector), false).expect("budget");
        let error = evict_pod(&mut store, true, "busy-1").expect_err("needed");
        assert_eq!(error.code, 429);
        assert_eq!(
            error.to_json()["details"],
            json!({"causes": [{"reason": "DisruptionBudget", "message": "The disruption budget b needs 2 healthy pods and has 2 currently"}]})
        );
        assert_eq!(
            evict_pod(&mut store, true, "idle").expect("no budget"),
            (201, status::success(201))
        );
        assert!(!store.pods.contains_key(&key(NS, "idle")));
    }

    #[test]
    fn an_eviction_goes_through_when_the_budget_allows_a_disruption() {
        let mut store = store_with(&[
            NewPod::new(NS, "a").label("app", "w").phase("Running"),
            NewPod::new(NS, "b").label("app", "w").phase("Running"),
        ]);
        create_pdb(
            &mut store,
            NS,
            None,
            budget(json!("50%"), json!({"matchLabels": {"app": "w"}})),
            false,
        )
        .expect("budget");
        assert_eq!(evict_pod(&mut store, true, "a").expect("allowed").0, 201);
        assert_eq!(
            evict_pod(&mut store, true, "b")
                .expect_err("now needed")
                .code,
            429
        );
    }

    #[test]
    fn pending_pods_are_evicted_regardless_and_two_budgets_are_an_error() {
        let mut store = store_with(&[
            NewPod::new(NS, "pending").label("app", "w"),
            NewPod::new(NS, "running")
                .label("app", "w")
                .phase("Running"),
        ]);
        create_pdb(
            &mut store,
            NS,
            None,
            budget(json!(9999), json!({"matchLabels": {"app": "w"}})),
            false,
        )
        .expect("budget");
        let mut second = budget(json!(1), json!({"matchLabels": {"app": "w"}}));
        second["metadata"]["name"] = json!("c");
        create_pdb(&mut store, NS, None, second, false).expect("budget");
        assert_eq!(
            evict_pod(&mut store, true, "pending")
                .expect("pending goes")
                .0,
            201
        );
        let (code, body) = evict_pod(&mut store, true, "running").expect("a status");
        assert_eq!(code, 500);
        assert_eq!(
            body["message"],
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
        );
        assert!(body.get("reason").is_none());
    }

    #[test]
    fn without_a_disruption_controller_a_budget_is_still_being_processed() {
        let mut store = store_with(&[NewPod::new(NS, "p")
            .label("active-jobs", "1")
            .phase("Running")]);
        let selector = json!({"matchExpressions": [{"key": "active-jobs", "operator": "Exists"}]});
        create_pdb(&mut store, NS, None, budget(json!(0), selector), false).expect("budget");
        let error = evict_pod(&mut store, false, "p").expect_err("unprocessed");
        assert_eq!(
            error.to_json()["details"]["causes"][0]["message"],
            "The disruption budget b is still being processed by the server."
        );
        assert_eq!(evict_pod(&mut store, true, "p").expect("min 0").0, 201);
    }

    #[test]
    fn an_empty_selector_selects_nothing_in_v1beta1_and_everything_in_v1() {
        let pod = json!({"metadata": {"namespace": NS, "labels": {"a": "b"}}});
        let v1 = json!({"apiVersion": "policy/v1", "metadata": {"namespace": NS}, "spec": {"selector": {}}});
        let beta = json!({"apiVersion": "policy/v1beta1", "metadata": {"namespace": NS}, "spec": {"selector": {}}});
        assert!(pdb_selects(&v1, &pod));
        assert!(!pdb_selects(&beta, &pod));
    }

    #[test]
    fn budgets_report_a_live_status_with_a_controller() {
        let mut store = store_with(&[
            NewPod::new(NS, "a").label("app", "w").phase("Running"),
            NewPod::new(NS, "b").label("app", "w"),
        ]);
        create_pdb(
            &mut store,
            NS,
            None,
            budget(json!(1), json!({"matchLabels": {"app": "w"}})),
            false,
        )
        .expect("budget");
        let controller = Options {
            disruption_controller: true,
        };
        let served = get_pdb(&store, controller, PolicyVersion::V1beta1, NS, "b").expect("served");
        assert_eq!(served["apiVersion"], "policy/v1beta1");
        let created = served["metadata"]["creationTimestamp"].clone();
        assert_eq!(
            served["status"],
            json!({"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 2,
                   "conditions": [{"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": "",
                                   "observedGeneration": 1, "lastTransitionTime": created}]})
        );
        store.pods.get_mut(&key(NS, "b")).expect("b")["status"] =
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        let served = get_pdb(&store, controller, PolicyVersion::V1, NS, "b").expect("served");
        assert_eq!(served["status"]["disruptionsAllowed"], 1);
        assert_eq!(served["status"]["conditions"][0]["status"], "True");
        assert_eq!(
            served["status"]["conditions"][0]["reason"],
            "SufficientPods"
        );
    }

    #[test]
    fn only_ready_pods_are_healthy_and_an_unready_one_goes_as_its_budgets_policy_says() {
        let busy = |name: &str, app: &str| {
            NewPod::new(NS, name)
                .label("app", app)
                .label("active-jobs", "1")
                .phase("Running")
                .ready(false)
        };
        let mut store = store_with(&[
            busy("unready", "if-healthy"),
            busy("unready-always", "always"),
        ]);
        create_pdb(
            &mut store,
            NS,
            None,
            budget(json!(9999), json!({"matchLabels": {"app": "if-healthy"}})),
            false,
        )
        .expect("budget");
        let mut always = budget(json!(9999), json!({"matchLabels": {"app": "always"}}));
        always["metadata"]["name"] = json!("always");
        always["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        create_pdb(&mut store, NS, None, always, false).expect("budget");
        let error = evict_pod(&mut store, true, "unready").expect_err("the budget is unhealthy");
        assert_eq!(
            error.to_json()["details"]["causes"][0]["message"],
            "The disruption budget b needs 9999 healthy pods and has 0 currently"
        );
        assert_eq!(
            evict_pod(&mut store, true, "unready-always")
                .expect("AlwaysAllow")
                .0,
            201
        );
        assert!(!store.pods.contains_key(&key(NS, "unready-always")));
    }
}
