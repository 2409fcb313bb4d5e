//! What the policy refuses, and whom it does not match at all.

#[allow(unused_imports)]
use crate::prelude::*;

#[test]
fn the_tracker_may_not_change_another_pod() {
    let other = |labels: &[(&str, &str)]| pod("worker-8", labels, &[]);
    let admission = update(
        tracker(),
        &other(&[("app.kubernetes.io/name", "worker")]),
        &other(&[("app.kubernetes.io/name", "worker"), (LABEL, "1")]),
    );
    assert_denied(
        decide(&admission),
        &[
            "system:serviceaccount:jobs:job-tracker of pod worker-7",
            "may change only its own pod, not pod worker-8",
        ],
    );
}
#[test]
fn a_job_tracker_of_another_namespace_may_not_change_pods_here() {
    let admission = update(tracker_of("elsewhere", POD), &idle(), &busy("1", "a-1"));
    assert_denied(
        decide(&admission),
        &[
            "system:serviceaccount:elsewhere:job-tracker",
            "own namespace only, not of jobs",
        ],
    );
}
#[test]
fn a_token_bound_to_no_pod_may_change_no_pod() {
    // A token of a Secret or of the TokenRequest API without a pod: no pod-name extra.
    let unbound = service_account(
        NAMESPACE,
        "job-tracker",
        Some(&[("authentication.kubernetes.io/credential-id", "JTI=1")]),
    );
    let no_extra_at_all = service_account(NAMESPACE, "job-tracker", None);
    for user in [unbound, no_extra_at_all] {
        let admission = update(user, &idle(), &busy("1", "a-1"));
        assert_denied(
            decide(&admission),
            &[
                "job-tracker may change only the pod its token is bound to",
                "bound to no pod",
            ],
        );
    }
}
#[test]
fn the_tracker_may_not_add_change_or_remove_another_label() {
    let cases = [
        // Added: e.g. to make its pod match another budget or Service.
        (
            busy("1", "a-1"),
            pod(
                POD,
                &[
                    ("app.kubernetes.io/name", "worker"),
                    (LABEL, "1"),
                    ("role", "db"),
                ],
                &[(WRITES, "a-1")],
            ),
            "role",
        ),
        // Changed.
        (
            busy("1", "a-1"),
            pod(
                POD,
                &[("app.kubernetes.io/name", "db"), (LABEL, "1")],
                &[(WRITES, "a-1")],
            ),
            "app.kubernetes.io/name",
        ),
        // Removed: e.g. to leave the budget's selection.
        (
            busy("1", "a-1"),
            pod(POD, &[(LABEL, "1")], &[(WRITES, "a-1")]),
            "app.kubernetes.io/name",
        ),
    ];
    for (before, after, key) in cases {
        let admission = update(tracker(), &before, &after);
        assert_denied(
            decide(&admission),
            &[
                "may change only the labels active-jobs of pod worker-7",
                &format!("not {key}"),
            ],
        );
    }
}
#[test]
fn the_tracker_may_not_add_change_or_remove_an_unrelated_annotation() {
    let labels = [("app.kubernetes.io/name", "worker"), (LABEL, "1")];
    let before = pod(POD, &labels, &[(WRITES, "a-1"), ("owner", "team-a")]);
    let cases = [
        (
            pod(
                POD,
                &labels,
                &[
                    (WRITES, "a-1"),
                    ("owner", "team-a"),
                    ("sidecar.istio.io/inject", "false"),
                ],
            ),
            "sidecar.istio.io/inject",
        ),
        (
            pod(POD, &labels, &[(WRITES, "a-1"), ("owner", "team-b")]),
            "owner",
        ),
        (pod(POD, &labels, &[(WRITES, "a-1")]), "owner"),
    ];
    for (after, key) in cases {
        let admission = update(tracker(), &before, &after);
        assert_denied(
            decide(&admission),
            &[
                &format!("may change only the annotations {ALLOWED_ANNOTATIONS} of pod worker-7"),
                &format!("not {key}"),
            ],
        );
    }
}
#[test]
fn the_tracker_may_not_change_the_spec_owner_references_or_finalizers() {
    let before = busy("1", "a-1");

    let mut image = before.clone();
    image.spec.as_mut().expect("spec").containers[0].image = Some("evil:latest".to_owned());
    assert_denied(
        decide(&update(tracker(), &before, &image)),
        &["may not change the spec of pod worker-7"],
    );

    let mut orphaned = before.clone();
    orphaned.metadata.owner_references = None;
    let mut pinned = before.clone();
    pinned.metadata.finalizers = Some(vec![
        "batch.kubernetes.io/job-tracking".to_owned(),
        "example.com/never".to_owned(),
    ]);
    for after in [orphaned, pinned] {
        assert_denied(
            decide(&update(tracker(), &before, &after)),
            &["may not change the owner references or finalizers of pod worker-7"],
        );
    }
}
#[test]
fn the_tracker_may_not_touch_a_subresource_of_its_own_pod() {
    let before = busy("1", "a-1");
    let mut not_ready = before.clone();
    not_ready.status.as_mut().expect("status").conditions = None;
    let status = on_subresource(update(tracker(), &before, &not_ready), "status");
    assert_denied(
        decide(&status),
        &["may not change pods/status of pod worker-7"],
    );

    let mut debug = before.clone();
    debug.spec.as_mut().expect("spec").ephemeral_containers = Some(vec![EphemeralContainer {
        name: "debugger".to_owned(),
        image: Some("busybox".to_owned()),
        ..EphemeralContainer::default()
    }]);
    let ephemeral = on_subresource(update(tracker(), &before, &debug), "ephemeralcontainers");
    assert_denied(
        decide(&ephemeral),
        &["may not change pods/ephemeralcontainers of pod worker-7"],
    );
}

// ---- Whom the policy applies to --------------------------------------------------------------
#[test]
fn requests_of_other_users_and_service_accounts_are_not_matched() {
    // Everything the tracker may not do, done by others: the policy stays out of the way.
    let before = busy("1", "a-1");
    let after = pod(POD, &[("app.kubernetes.io/name", "db")], &[("owner", "x")]);
    let admin = UserInfo {
        username: Some("kubernetes-admin".to_owned()),
        groups: Some(vec![
            "system:masters".to_owned(),
            "system:authenticated".to_owned(),
        ]),
        ..UserInfo::default()
    };
    let kubelet = UserInfo {
        username: Some("system:node:node-1".to_owned()),
        groups: Some(vec![
            "system:nodes".to_owned(),
            "system:authenticated".to_owned(),
        ]),
        ..UserInfo::default()
    };
    let others = [
        admin,
        kubelet,
        service_account(NAMESPACE, "default", Some(&[(POD_NAME_EXTRA, "worker-8")])),
        service_account(NAMESPACE, "my-job-tracker", Some(&[(POD_NAME_EXTRA, POD)])),
        service_account(NAMESPACE, "job-tracker-2", Some(&[(POD_NAME_EXTRA, POD)])),
        service_account("kube-system", "job-controller", None),
    ];
    for user in others {
        let who = user.username.clone();
        let admission = update(user, &before, &after);
        assert_eq!(decide(&admission), Decision::NotMatched, "{who:?}");
    }
    // The same change by the tracker is refused, so the samples do reach the validations.
    assert!(matches!(
        decide(&update(tracker(), &before, &after)),
        Decision::Denied(_)
    ));
}
#[test]
fn only_updates_of_pods_are_matched() {
    let mut admission = update(tracker(), &idle(), &busy("1", "a-1"));
    assert_eq!(decide(&admission), Decision::Allowed);
    for operation in ["CREATE", "DELETE", "CONNECT"] {
        admission.request["operation"] = json!(operation);
        assert_eq!(decide(&admission), Decision::NotMatched, "{operation}");
    }
    admission.request["operation"] = json!("UPDATE");
    admission.request["resource"] = json!({"group": "", "version": "v1", "resource": "configmaps"});
    assert_eq!(decide(&admission), Decision::NotMatched);
    admission.request["resource"] = json!({"group": "apps", "version": "v1", "resource": "pods"});
    assert_eq!(decide(&admission), Decision::NotMatched);
}

// ---- The policy's form -----------------------------------------------------------------------
#[test]
fn the_policy_fails_closed_and_its_binding_denies_everywhere() {
    let spec = spec();
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    assert!(
        spec.param_kind.is_none(),
        "no params: nothing to find or miss"
    );
    assert!(
        spec.audit_annotations.is_none(),
        "every expression is evaluated here"
    );
    let constraints = spec.match_constraints.expect("matchConstraints");
    for rule in constraints.resource_rules.iter().flatten() {
        // Not modelled by this test's matcher: none of them is set.
        assert!(
            rule.resource_names.is_none() && rule.scope.is_none(),
            "{rule:?}"
        );
    }
    assert!(constraints.exclude_resource_rules.is_none());
    assert!(
        constraints
            .namespace_selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_none() && s.match_expressions.is_none())
    );
    assert!(
        constraints
            .object_selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_none() && s.match_expressions.is_none())
    );

    let binding = BINDING.spec.clone();
    assert_eq!(Some(&binding.policy_name), POLICY.metadata.name.as_ref());
    assert_eq!(binding.validation_actions, ["Deny"]);
    assert!(binding.match_resources.is_none(), "every namespace");
    assert!(binding.param_ref.is_none());
    for validation in spec.validations.iter().flatten() {
        assert_eq!(
            validation.reason.as_deref(),
            Some("Forbidden"),
            "{}",
            validation.expression
        );
        assert!(
            validation.message_expression.is_some(),
            "{}",
            validation.expression
        );
    }
}
