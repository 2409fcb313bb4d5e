//! The standalone service: its ports and probes, who may reach it, and the pods it counts.

#[allow(unused_imports)]
use crate::prelude::*;

#[test]
fn the_standalone_service_probes_and_serves_on_port_8080() {
    for (doc, template, container, regular) in standalone_trackers() {
        let at = format!("{}: container {}", doc.at(), container.name);
        let own = build(&doc.kustomization);
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
        let services: Vec<Service> = own
            .of_kind("Service")
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
        // Callers name the Service alone, on the scheme's own port: http://pod-webhook-tracker/,
        // or https:// when the tracker serves TLS (the authenticated variant).
        let tls = args.iter().any(|arg| arg.starts_with("--tls-cert-file="));
        let (scheme, port) = if tls { ("https", 443) } else { ("http", 80) };
        let service = own.of_kind("Service").find(|s| {
            s.value["spec"]["ports"][0]["port"] == ports[0].port
                && s.value["spec"]["selector"] == json!(labels)
        });
        let url = format!("{scheme}://{}", service.expect("the Service").name());
        assert_eq!(ports[0].port, port, "{at}: callers use {url}/");
        for (caller, template) in own.pod_templates() {
            for container in spec_of(&template).containers.iter() {
                let Some((_, flags)) = run_wrapper(container) else {
                    continue;
                };
                for flag in flags.iter().filter_map(|f| f.strip_prefix("--url=")) {
                    assert_eq!(
                        flag.trim_end_matches('/'),
                        url,
                        "{}: run --url",
                        caller.at()
                    );
                }
            }
        }
        let target = ports[0].target_port.as_ref().expect("a targetPort");
        assert_eq!(
            container_port(&container, target),
            Some(STANDALONE_PORT),
            "{at}: targetPort"
        );

        let own_budgets: Vec<_> = own
            .of_kind("PodDisruptionBudget")
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
    let mut policies = BTreeSet::new();
    for doc in all_objects().filter(|object| object.kind() == "NetworkPolicy") {
        let Object::NetworkPolicy(policy) = doc.object() else {
            unreachable!()
        };
        let spec = policy.spec.expect("a policy has a spec");
        let at = doc.at();
        let selector = spec.pod_selector.clone().unwrap_or_default();
        // The tracker pods of its own kustomization.
        let guarded: Vec<_> = standalone_trackers()
            .into_iter()
            .filter(|(object, ..)| object.kustomization == doc.kustomization)
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
        policies.insert(doc.kustomization.clone());
    }
    for dir in [
        "manifests/standalone/namespaced",
        "manifests/standalone/cluster-wide",
    ] {
        assert!(policies.contains(Path::new(dir)), "{dir}: no NetworkPolicy");
    }
    assert!(
        policies.len() >= 2,
        "expected the namespaced and cluster-wide policies"
    );
}
#[test]
fn the_standalone_tracker_counts_the_pods_its_budget_protects() {
    let build = build("manifests/standalone");
    let mut checked = 0;
    for (doc, template) in build.pod_templates() {
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
                .budgets()
                .into_iter()
                .map(|(_, selector)| selector)
                .find(|s| s.match_expressions.iter().flatten().any(|e| e.key == LABEL))
                .expect("the default standalone build holds the busy-workers budget");
            assert_eq!(budget.match_labels, Some(counted), "{}", doc.at());
            checked += 1;
        }
    }
    assert_eq!(checked, 1, "one standalone tracker in the default build");
}
