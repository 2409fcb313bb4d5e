//! Every rendering of the matrix is valid Kubernetes: each built-in object makes a round trip
//! through its `k8s-openapi` type with every field kept (a misspelled or misplaced field is
//! reported with its path), and the API server accepts the whole rendering as `kubectl apply`
//! sends it, under server-side dry run with strict field validation — custom kinds against
//! their projects' real CRDs (tests/support/crds.rs) — in a namespace that warns about pods
//! that do not meet the `restricted` Pod Security Standard, with no warning at all.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use testenv::Cluster;

use crate::helm::{MATRIX, RELEASE, render, template};
use crate::kustomize::{applied_lines, kind_and_name, kubectl, run_with_input};

/// The object after a round trip through `T`.
fn through<T: DeserializeOwned + Serialize>(value: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    Ok(serde_json::to_value(typed).expect("serializes"))
}

/// The object as `k8s-openapi` reads and writes it; `None` for a custom kind.
fn round_trip(value: &Value) -> Option<Result<Value, String>> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default();
    if !crate::crds::is_built_in(api_version) {
        return None;
    }
    Some(match value["kind"].as_str().unwrap_or_default() {
        "ClusterRole" => through::<ClusterRole>(value),
        "ClusterRoleBinding" => through::<ClusterRoleBinding>(value),
        "Deployment" => through::<Deployment>(value),
        "MutatingWebhookConfiguration" => through::<MutatingWebhookConfiguration>(value),
        "NetworkPolicy" => through::<NetworkPolicy>(value),
        "PodDisruptionBudget" => through::<PodDisruptionBudget>(value),
        "Role" => through::<Role>(value),
        "RoleBinding" => through::<RoleBinding>(value),
        "Service" => through::<Service>(value),
        "ServiceAccount" => through::<ServiceAccount>(value),
        "ValidatingAdmissionPolicy" => through::<ValidatingAdmissionPolicy>(value),
        "ValidatingAdmissionPolicyBinding" => through::<ValidatingAdmissionPolicyBinding>(value),
        other => Err(format!(
            "kind {other} is not checked: add it to round_trip in tests/chart/server.rs"
        )),
    })
}

/// Every field or value of `original` that did not survive into `again`.
fn lost_fields(original: &Value, again: &Value, path: &str, lost: &mut Vec<String>) {
    match (original, again) {
        (Value::Object(before), Value::Object(after)) => {
            for (key, value) in before {
                let here = format!("{path}.{key}");
                match after.get(key) {
                    Some(kept) => lost_fields(value, kept, &here, lost),
                    None => lost.push(format!("{here} is unknown (dropped)")),
                }
            }
        }
        (Value::Array(before), Value::Array(after)) if before.len() == after.len() => {
            for (index, (value, kept)) in before.iter().zip(after).enumerate() {
                lost_fields(value, kept, &format!("{path}[{index}]"), lost);
            }
        }
        (before, after) if before == after => {}
        (before, after) => lost.push(format!("{path} was {before}, became {after}")),
    }
}

#[test]
fn every_rendered_field_is_known_to_kubernetes() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for (what, values) in MATRIX {
        for object in render(RELEASE, "workers", values) {
            let at = format!("{what}: {}", kind_and_name(&object));
            match round_trip(&object) {
                None => {}
                Some(Err(error)) => problems.push(format!("{at}: {error}")),
                Some(Ok(again)) => {
                    checked += 1;
                    let mut lost = Vec::new();
                    lost_fields(&object, &again, "$", &mut lost);
                    problems.extend(lost.into_iter().map(|l| format!("{at}: {l}")));
                }
            }
        }
    }
    assert!(checked >= 150, "only {checked} objects");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_rendering_is_accepted_by_the_api_server_under_strict_validation() {
    let cluster = Cluster::shared();
    // The default release's cluster-scoped objects would be there while a release is installed.
    let _turn = crate::helm::one_at_a_time();
    let mut problems = Vec::new();
    for (what, values) in MATRIX {
        let namespace = cluster.namespace("render");
        cluster
            .admin()
            .merge_patch(
                &format!("/api/v1/namespaces/{namespace}"),
                &json!({"metadata": {"labels": {"pod-security.kubernetes.io/warn": "restricted"}}}),
            )
            .expect(200, "label the namespace");
        let text = template(RELEASE, &namespace, values).unwrap_or_else(|e| panic!("{e}"));
        let objects = render(RELEASE, &namespace, values);
        crate::crds::install_for(cluster, &objects);
        let mut apply = kubectl(cluster);
        apply.args(["apply", "--dry-run=server", "--validate=strict", "-f", "-"]);
        let output = run_with_input(apply, &text);
        let lines = applied_lines(&output);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let fine = output.status.success()
            && lines.len() == objects.len()
            && lines
                .iter()
                .all(|line| line.ends_with(" created (server dry run)"))
            && stderr.trim().is_empty();
        if !fine {
            problems.push(format!(
                "{what} ({values:?}): kubectl apply --dry-run=server --validate=strict: {}, {} objects:\n{}\n{stderr}",
                output.status,
                objects.len(),
                lines.join("\n")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
