//! Roles and bindings: get and patch on pods, nothing else, for accounts that exist; the
//! self-signed injector's patch on its own webhook configuration, and the authenticated
//! tracker's create on tokenreviews, nothing else.

#[allow(unused_imports)]
use crate::prelude::*;

#[test]
fn roles_grant_exactly_get_and_patch_on_pods() {
    let expected = vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["pods".to_owned()]),
        verbs: vec!["get".to_owned(), "patch".to_owned()],
        ..PolicyRule::default()
    }];
    let (mut roles, mut cluster_roles) = (0, 0);
    for build in BUILDS.iter() {
        for doc in &build.objects {
            let rules = match doc.object() {
                Object::Role(role) => {
                    roles += 1;
                    role.rules
                }
                Object::ClusterRole(role) => {
                    assert!(role.aggregation_rule.is_none(), "{}: aggregated", doc.at());
                    cluster_roles += 1;
                    role.rules
                }
                _ => continue,
            };
            let rules = rules.unwrap_or_default();
            if doc.name() == "pod-webhook-tracker-tokenreviews" {
                let reviews = vec![PolicyRule {
                    api_groups: Some(vec!["authentication.k8s.io".to_owned()]),
                    resources: Some(vec!["tokenreviews".to_owned()]),
                    verbs: vec!["create".to_owned()],
                    ..PolicyRule::default()
                }];
                assert_eq!(rules, reviews, "{}: create on tokenreviews only", doc.at());
                continue;
            }
            if doc.name() == "pod-webhook-tracker-injector" {
                let injector = vec![PolicyRule {
                    api_groups: Some(vec!["admissionregistration.k8s.io".to_owned()]),
                    resources: Some(vec!["mutatingwebhookconfigurations".to_owned()]),
                    resource_names: Some(vec!["pod-webhook-tracker".to_owned()]),
                    verbs: vec!["patch".to_owned()],
                    ..PolicyRule::default()
                }];
                assert_eq!(
                    rules,
                    injector,
                    "{}: patch on its own webhook configuration only",
                    doc.at()
                );
                // The configuration it may patch is the one its own kustomization installs.
                let configurations = build.names_of("MutatingWebhookConfiguration");
                assert!(
                    configurations.contains("pod-webhook-tracker"),
                    "{}: {configurations:?}",
                    doc.at()
                );
                continue;
            }
            let verbs: Vec<_> = rules.iter().flat_map(|rule| rule.verbs.iter()).collect();
            assert!(
                !verbs.iter().any(|verb| *verb == "list"),
                "{}: never list",
                doc.at()
            );
            assert_eq!(
                rules,
                expected,
                "{}: get and patch on pods, nothing else",
                doc.at()
            );
        }
    }
    assert!(roles >= 2, "expected the sidecar and standalone Roles");
    assert!(cluster_roles >= 1, "expected the cluster-wide ClusterRole");
}
#[test]
fn bindings_grant_existing_roles_to_existing_service_accounts() {
    let mut bindings = 0;
    for build in BUILDS.iter() {
        let accounts = build.names_of("ServiceAccount");
        for doc in &build.objects {
            let (role_ref, subjects, cluster_wide) = match doc.object() {
                Object::RoleBinding(binding) => (binding.role_ref, binding.subjects, false),
                Object::ClusterRoleBinding(binding) => (binding.role_ref, binding.subjects, true),
                _ => continue,
            };
            bindings += 1;
            let at = doc.at();
            let roles = build.names_of(&role_ref.kind);
            assert!(
                roles.contains(&role_ref.name),
                "{at}: no {} {}",
                role_ref.kind,
                role_ref.name
            );
            let subjects = subjects.unwrap_or_default();
            assert!(!subjects.is_empty(), "{at}: binds nobody");
            for subject in subjects {
                assert_eq!(
                    subject.kind, "ServiceAccount",
                    "{at}: binds a {}",
                    subject.kind
                );
                assert!(
                    accounts.contains(&subject.name),
                    "{at}: no ServiceAccount {}",
                    subject.name
                );
                // The account's namespace, as rendered: a ClusterRoleBinding's subject needs
                // it (kustomize writes it from `namespace:`); a RoleBinding's may leave it to
                // the binding's own.
                let account = build.one("ServiceAccount", &subject.name);
                if cluster_wide {
                    assert!(
                        subject.namespace.is_some(),
                        "{at}: a ClusterRoleBinding's subject needs a namespace"
                    );
                }
                if let Some(namespace) = subject.namespace.as_deref() {
                    assert_eq!(
                        Some(namespace),
                        account.namespace().or(doc.namespace()),
                        "{at}: binds the account {} of another namespace",
                        subject.name
                    );
                }
            }
        }
        for (doc, template) in build.pod_templates() {
            let account = spec_of(&template).service_account_name.clone();
            let account = account.unwrap_or_else(|| panic!("{}: no serviceAccountName", doc.at()));
            assert!(
                accounts.contains(&account),
                "{}: runs as ServiceAccount {account}, which its kustomization does not create",
                doc.at()
            );
        }
    }
    assert!(
        bindings >= 3,
        "expected the sidecar, namespaced and cluster-wide bindings"
    );
}
