//! Budgets: busy pods held by an integer budget on the label, no pod under two.

#[allow(unused_imports)]
use crate::prelude::*;

#[test]
fn busy_pods_are_protected_by_an_integer_budget_on_the_label() {
    let mut with_budget = BTreeSet::new();
    for doc in all_objects().filter(|object| object.kind() == "PodDisruptionBudget") {
        let Object::PodDisruptionBudget(pdb) = doc.object() else {
            unreachable!()
        };
        let spec = pdb.spec.expect("a budget has a spec");
        let selector = spec.selector.clone().expect("a budget selects pods");
        let expressions = selector.match_expressions.clone().unwrap_or_default();
        if !expressions.iter().any(|expr| expr.key == LABEL) {
            continue;
        }
        with_budget.insert(doc.kustomization.clone());
        let at = doc.at();
        assert_eq!(
            spec.min_available,
            Some(IntOrString::Int(9999)),
            "{at}: an integer minAvailable (a percentage needs the controllers' scale)"
        );
        assert!(
            doc.value
                .pointer("/spec/minAvailable")
                .is_some_and(Value::is_number),
            "{at}"
        );
        assert_eq!(spec.max_unavailable, None, "{at}");
        let on_label: Vec<_> = expressions
            .iter()
            .filter(|expr| expr.key == LABEL)
            .collect();
        assert_eq!(on_label.len(), 1, "{at}");
        assert_eq!(on_label[0].operator, "Exists", "{at}: selects any count");
        assert!(
            on_label[0].values.as_ref().is_none_or(Vec::is_empty),
            "{at}"
        );
        let app = selector.match_labels.clone().unwrap_or_default();
        assert!(
            app.contains_key("app.kubernetes.io/name"),
            "{at}: limited to the workers' app label"
        );
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("IfHealthyBudget"),
            "{at}"
        );
    }
    for dir in [
        "manifests/sidecar",
        "manifests/standalone",
        "examples/fileflows",
    ] {
        assert!(
            with_budget.contains(Path::new(dir)),
            "{dir} renders no budget on the label: {with_budget:?}"
        );
    }

    // Every pod with a sidecar is held by a budget of its own kustomization while it carries
    // the label, and by none while it does not.
    for build in BUILDS.iter() {
        let budgets: Vec<_> = build.budgets().into_iter().map(|(_, s)| s).collect();
        for (doc, template) in build.pod_templates() {
            if !spec_of(&template)
                .init_containers
                .iter()
                .flatten()
                .any(is_tracker)
            {
                continue;
            }
            let idle = labels_of(&template);
            let mut busy = idle.clone();
            busy.insert(LABEL.to_owned(), "1".to_owned());
            let at = doc.at();
            assert!(
                budgets.iter().any(|s| selects(s, &busy)),
                "{at}: busy pods unprotected"
            );
            assert!(
                !budgets.iter().any(|s| selects(s, &idle)),
                "{at}: idle pods held"
            );
        }
    }
}
#[test]
fn no_pod_is_selected_by_two_budgets() {
    // The eviction API refuses to evict a pod that more than one budget selects.
    for build in BUILDS.iter() {
        let budgets = build.budgets();
        for (doc, template) in build.pod_templates() {
            let mut busy = labels_of(&template);
            busy.insert(LABEL.to_owned(), "1".to_owned());
            let holding: Vec<_> = budgets
                .iter()
                .filter(|(_, selector)| selects(selector, &busy))
                .map(|(name, _)| name)
                .collect();
            assert!(holding.len() <= 1, "{}: held by {holding:?}", doc.at());
        }
    }
}
