//! The chart's Prometheus objects: its alerts are manifests/monitoring's (the chart carries a
//! copy, files/prometheus-rules.yaml, that must not drift), valid for the real promtool, naming
//! the release's injector; its monitors scrape ports the workloads serve /metrics on, and the
//! trackers the injector adds as manifests/monitoring scrapes them.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::helm::{CHART, NAMESPACE, RELEASE, args, of_kind, one, render};
use crate::kustomize::repository;

/// The alerts of manifests/monitoring.
const RULES: &str = "manifests/monitoring/prometheusrule.yaml";

fn manifests_object(file: &str) -> Value {
    let path = Path::new(file);
    assert!(
        repository().join(path).is_file(),
        "{file} is missing: the chart's monitoring follows it"
    );
    crate::yaml::parse_yaml(path).remove(0)
}

#[test]
fn the_charts_alerts_are_those_of_manifests_monitoring() {
    let theirs = manifests_object(RULES);
    let objects = render(RELEASE, NAMESPACE, &["metrics.prometheusRule.enabled=true"]);
    let rule = one(&objects, "PrometheusRule", "pod-webhook-tracker");
    assert_eq!(
        rule["spec"], theirs["spec"],
        "charts/pod-webhook-tracker/files/prometheus-rules.yaml is not {RULES}'s spec: copy it again"
    );
    assert!(
        rule["spec"]["groups"]
            .as_array()
            .is_some_and(|groups| groups.len() >= 3),
        "{rule}"
    );
    // Without the value, no rule.
    let objects = render(RELEASE, NAMESPACE, &[]);
    assert_eq!(of_kind(&objects, "PrometheusRule").count(), 0);
}

#[test]
fn the_alerts_name_the_releases_injector() {
    let theirs = manifests_object(RULES);
    let objects = render("guard", NAMESPACE, &["metrics.prometheusRule.enabled=true"]);
    let rule = one(&objects, "PrometheusRule", "guard-pod-webhook-tracker");
    let text = rule["spec"].to_string();
    for selector in [
        r#"deployment=\"guard-pod-webhook-tracker-injector\""#,
        r#"name=\"guard-pod-webhook-tracker-injector\""#,
    ] {
        assert!(text.contains(selector), "{selector} not in {text}");
    }
    // And nothing else differs.
    let back = text.replace(
        "guard-pod-webhook-tracker-injector",
        "pod-webhook-tracker-injector",
    );
    assert_eq!(
        serde_json::from_str::<Value>(&back).expect("JSON"),
        theirs["spec"]
    );
}

#[test]
fn promtool_accepts_the_charts_rules() {
    let output = Command::new(testenv::tool("promtool"))
        .args(["check", "rules"])
        .arg(repository().join(CHART).join("files/prometheus-rules.yaml"))
        .output()
        .expect("promtool runs");
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("SUCCESS"), "{said}");
}

/// Whether `labels` has every pair of `selector`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|pairs| pairs.iter().all(|(key, value)| &labels[key] == value))
}

/// The Deployments whose pods `selector` selects.
fn deployments_selected<'a>(objects: &'a [Value], selector: &Value) -> Vec<&'a Value> {
    of_kind(objects, "Deployment")
        .filter(|d| selects(selector, &d["spec"]["template"]["metadata"]["labels"]))
        .collect()
}

/// The Deployment serves /metrics on its port `port`: the container declares it, and its admin
/// listener (which serves /metrics) is on that port.
fn assert_serves_metrics(deployment: &Value, port: &str, at: &str) {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let number = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == port)
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("{at}: no container port {port}"));
    let listener = format!("--admin-address=0.0.0.0:{number}");
    assert!(
        args(container).contains(&listener),
        "{at}: {listener} not in {:?}",
        args(container)
    );
}

#[test]
fn the_monitors_scrape_the_ports_the_workloads_serve_metrics_on() {
    let injected = manifests_object("manifests/monitoring/podmonitor-injected.yaml");
    for values in [
        &["metrics.podMonitor.enabled=true", "standalone.enabled=true"][..],
        &[
            "metrics.serviceMonitor.enabled=true",
            "standalone.enabled=true",
            "standalone.scope=cluster",
            "certManager.enabled=true",
        ],
    ] {
        let objects = render(RELEASE, NAMESPACE, values);
        let mut scraped = Vec::new();
        for monitor in of_kind(&objects, "PodMonitor") {
            let at = format!("{values:?}: PodMonitor {}", monitor["metadata"]["name"]);
            let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
            if monitor["metadata"]["name"] == "pod-webhook-tracker-injected" {
                // The trackers the injector adds, wherever they run: as manifests/monitoring.
                assert_eq!(monitor["spec"], injected["spec"], "{at}");
                continue;
            }
            let selected =
                deployments_selected(&objects, &monitor["spec"]["selector"]["matchLabels"]);
            assert_eq!(selected.len(), 1, "{at}: selects one workload");
            assert_serves_metrics(selected[0], endpoint["port"].as_str().expect("a port"), &at);
            scraped.push(selected[0]["metadata"]["name"].clone());
        }
        for monitor in of_kind(&objects, "ServiceMonitor") {
            let at = format!("{values:?}: ServiceMonitor {}", monitor["metadata"]["name"]);
            let services: Vec<&Value> = of_kind(&objects, "Service")
                .filter(|s| {
                    selects(
                        &monitor["spec"]["selector"]["matchLabels"],
                        &s["metadata"]["labels"],
                    )
                })
                .collect();
            assert_eq!(services.len(), 1, "{at}: selects one Service");
            let port = &monitor["spec"]["endpoints"][0]["port"];
            let service_port = services[0]["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| &p["name"] == port)
                .unwrap_or_else(|| panic!("{at}: the Service has no port {port}"));
            let selected = deployments_selected(&objects, &services[0]["spec"]["selector"]);
            assert_eq!(selected.len(), 1, "{at}: the Service selects one workload");
            assert_serves_metrics(
                selected[0],
                service_port["targetPort"].as_str().expect("a named port"),
                &at,
            );
            scraped.push(selected[0]["metadata"]["name"].clone());
        }
        scraped.sort_by_key(Value::to_string);
        assert_eq!(
            scraped,
            [
                Value::from("pod-webhook-tracker"),
                Value::from("pod-webhook-tracker-injector")
            ],
            "{values:?}: the injector and the standalone service are scraped"
        );
        // The callers' NetworkPolicy lets Prometheus reach the standalone service's admin port.
        let policy = one(&objects, "NetworkPolicy", "pod-webhook-tracker");
        assert!(
            policy["spec"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|rule| rule["from"].is_null() && rule["ports"][0]["port"] == "admin"),
            "{policy}"
        );
    }
    // Without monitoring, the standalone service keeps manifests/standalone's single listener.
    let objects = render(RELEASE, NAMESPACE, &["standalone.enabled=true"]);
    let deployment = one(&objects, "Deployment", "pod-webhook-tracker");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(
        !args(container)
            .iter()
            .any(|a| a.starts_with("--admin-address"))
    );
}
