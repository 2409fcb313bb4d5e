//! The standalone service: its ports and probes, who may reach it, and the pods it counts.

#[allow(unused_imports)]
use crate::prelude::*;

#[test]
fn the_standalone_service_probes_and_serves_on_port_8080() {
    for (doc, template, container, regular) in standalone_trackers() {
        let at = format!("{}: container {}", doc.name(), container.name);
        assert!(
            regular,
            "{at}: the standalone tracker is the pod's main container"
        );
        let Object::Deployment(deployment) = doc.object() else {
            panic!("{at}: the standalone tracker is a Deployment")
        };
        let replicas = deployment.spec.replicas;
        assert_eq!(replicas, Some(2), "{at}: two replicas");
        let args = args_of(&container);
        for arg in [
            "--namespace=$(NAMESPACE)",
            "--label-selector=app.kubernetes.io/name=worker",
        ] {
            assert!(args.iter().any(|a| a == arg), "{at}: {arg} in {args:?}");
        }
        let namespace = env_field_path(&container, "NAMESPACE");
        assert_eq!(
            namespace.as_deref(),
            Some("metadata.namespace"),
            "{at}: NAMESPACE"
        );
        assert!(
            env_field_path(&container, "POD_NAME").is_none(),
            "{at}: no POD_NAME"
        );
        let http = container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("http"));
        assert_eq!(
            http.map(|p| p.container_port),
            Some(STANDALONE_PORT),
            "{at}: port http"
        );
        assert_probes_on(&container, STANDALONE_PORT, &at);

        let labels = labels_of(&template);
        let services: Vec<Service> = TREE
            .docs_of_kind("Service")
            .filter_map(|doc| match doc.object() {
                Object::Service(service) => Some(*service),
                _ => None,
            })
            .filter(|service| {
                let selector = service.spec.as_ref().and_then(|spec| spec.selector.clone());
                selector.is_some_and(|s| {
                    !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
            })
            .collect();
        assert_eq!(services.len(), 1, "{at}: one Service selects the tracker");
        let ports = services[0]
            .spec
            .clone()
            .and_then(|spec| spec.ports)
            .unwrap_or_default();
        assert_eq!(ports.len(), 1, "{at}: the Service has one port");
        assert_eq!(
            ports[0].port, 80,
            "{at}: callers use http://pod-webhook-tracker/"
        );
        let target = ports[0].target_port.as_ref().expect("a targetPort");
        assert_eq!(
            container_port(&container, target),
            Some(STANDALONE_PORT),
            "{at}: targetPort"
        );

        let own_budgets: Vec<_> = TREE
            .docs_of_kind("PodDisruptionBudget")
            .filter_map(|doc| match doc.object() {
                Object::PodDisruptionBudget(pdb) => pdb.spec,
                _ => None,
            })
            .filter(|spec| spec.selector.as_ref().is_some_and(|s| selects(s, &labels)))
            .collect();
        assert_eq!(
            own_budgets.len(),
            1,
            "{at}: one budget keeps a tracker during drains"
        );
        assert_eq!(
            own_budgets[0].min_available,
            Some(IntOrString::Int(1)),
            "{at}"
        );
    }
}
#[test]
fn only_labelled_clients_may_reach_the_standalone_service() {
    let mut policies = 0;
    for doc in TREE.docs_of_kind("NetworkPolicy") {
        let Object::NetworkPolicy(policy) = doc.object() else {
            unreachable!()
        };
        let spec = policy.spec.expect("a policy has a spec");
        let at = doc.name();
        let selector = spec.pod_selector.clone().unwrap_or_default();
        let guarded: Vec<_> = standalone_trackers()
            .into_iter()
            .filter(|(_, template, ..)| selects(&selector, &labels_of(template)))
            .collect();
        assert!(!guarded.is_empty(), "{at}: selects no tracker pod");
        assert!(
            !selects(&selector, &BTreeMap::new()),
            "{at}: selects every pod"
        );
        assert!(
            spec.policy_types
                .unwrap_or_default()
                .contains(&"Ingress".to_owned()),
            "{at}"
        );
        let rules = spec.ingress.unwrap_or_default();
        assert!(
            !rules.is_empty(),
            "{at}: no ingress rule admits the clients"
        );
        for rule in rules {
            let peers = rule.from.unwrap_or_default();
            assert!(
                !peers.is_empty(),
                "{at}: a rule without `from` admits everybody"
            );
            for peer in peers {
                let client = peer
                    .pod_selector
                    .and_then(|s| s.match_labels)
                    .unwrap_or_default();
                assert_eq!(
                    client.get("pod-webhook-tracker/client").map(String::as_str),
                    Some("true"),
                    "{at}: admits only pods labelled pod-webhook-tracker/client=true"
                );
                assert!(peer.ip_block.is_none(), "{at}: no address ranges");
            }
            for port in rule.ports.unwrap_or_default() {
                let port = port.port.expect("a port");
                for (_, _, container, _) in &guarded {
                    assert_eq!(
                        container_port(container, &port),
                        Some(STANDALONE_PORT),
                        "{at}"
                    );
                }
            }
        }
        policies += 1;
    }
    assert!(
        policies >= 2,
        "expected the namespaced and cluster-wide policies"
    );
}
#[test]
fn the_standalone_tracker_counts_the_pods_its_budget_protects() {
    let build = TREE.build(Path::new("manifests/standalone"));
    let mut checked = 0;
    for doc in &build.docs {
        let Some(template) = doc.pod_template() else {
            continue;
        };
        for container in spec_of(&template)
            .containers
            .iter()
            .filter(|c| is_standalone(c))
        {
            let args = args_of(container);
            let selector = args
                .iter()
                .find_map(|arg| arg.strip_prefix("--label-selector="))
                .expect("--label-selector");
            let counted: BTreeMap<String, String> = selector
                .split(',')
                .map(|term| {
                    let (key, value) = term.split_once('=').expect("key=value terms");
                    (key.to_owned(), value.to_owned())
                })
                .collect();
            let budget = build
                .docs
                .iter()
                .filter_map(|doc| match doc.object() {
                    Object::PodDisruptionBudget(pdb) => pdb.spec.and_then(|spec| spec.selector),
                    _ => None,
                })
                .find(|s| s.match_expressions.iter().flatten().any(|e| e.key == LABEL))
                .expect("the default standalone build holds the busy-workers budget");
            assert_eq!(budget.match_labels, Some(counted), "{}", doc.name());
            checked += 1;
        }
    }
    assert_eq!(checked, 1, "one standalone tracker in the default build");
}
