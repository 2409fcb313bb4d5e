//! What NOTES.txt tells a user matches what the chart installs: the opt-in label (or namespace
//! label) is the one the webhook selects on, and the URL callers of the standalone service are
//! given names its Service, on the port and scheme it serves, with a name its certificate
//! holds. (tests/chart/inject.rs runs the notes' checks against a real API server.)

use serde_json::Value;

use crate::helm::{CHART, helm, of_kind, one, render, sets};

/// The notes `helm install` prints for these values (a client-side dry run: no cluster).
fn notes(release: &str, namespace: &str, values: &[&str]) -> String {
    let output = helm()
        .args([
            "install",
            release,
            CHART,
            "-n",
            namespace,
            "--dry-run=client",
        ])
        .args(sets(values))
        .output()
        .expect("helm runs");
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{values:?}: {output:?}");
    said.split("NOTES:\n").nth(1).expect("NOTES").to_owned()
}

#[test]
fn the_notes_opt_pods_in_with_the_label_the_webhook_selects() {
    let text = notes("pod-webhook-tracker", "pod-webhook-tracker", &[]);
    let objects = render("pod-webhook-tracker", "pod-webhook-tracker", &[]);
    let webhook = &one(
        &objects,
        "MutatingWebhookConfiguration",
        "pod-webhook-tracker",
    )["webhooks"][0];
    let selector = webhook["objectSelector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert_eq!(selector.len(), 1);
    let (key, value) = selector.iter().next().expect("a label");
    assert!(
        text.contains(&format!("{key}: {value}")),
        "the pod label {key}: {value} in {text}"
    );
    assert!(
        text.contains("in every namespace but pod-webhook-tracker, kube-system"),
        "{text}"
    );

    let values = ["injector.optIn=namespaces"];
    let text = notes("pod-webhook-tracker", "pod-webhook-tracker", &values);
    let objects = render("pod-webhook-tracker", "pod-webhook-tracker", &values);
    let webhook = &one(
        &objects,
        "MutatingWebhookConfiguration",
        "pod-webhook-tracker",
    )["webhooks"][0];
    let expressions = webhook["namespaceSelector"]["matchExpressions"]
        .as_array()
        .expect("expressions");
    let opt_in = expressions
        .iter()
        .find(|e| e["operator"] == "In")
        .expect("the namespace opt-in");
    let label = format!(
        "kubectl label namespace NS {}={}",
        opt_in["key"].as_str().expect("a key"),
        opt_in["values"][0].as_str().expect("a value")
    );
    assert!(text.contains(&label), "{label} in {text}");
    let opt_out = &webhook["objectSelector"]["matchExpressions"][0];
    assert_eq!(opt_out["operator"], "NotIn");
    assert!(
        text.contains(&format!(
            "{}: \"{}\"",
            opt_out["key"].as_str().expect("a key"),
            opt_out["values"][0].as_str().expect("a value")
        )),
        "the pod's opt-out in {text}"
    );
}

/// The `scheme://host` of the first `POST` line of the notes.
fn called(text: &str) -> (String, String) {
    let url = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("POST "))
        .unwrap_or_else(|| panic!("no POST in {text}"));
    let (scheme, rest) = url.split_once("://").expect("a URL");
    (
        scheme.to_owned(),
        rest.split('/').next().expect("a host").to_owned(),
    )
}

#[test]
fn the_notes_give_callers_a_url_the_standalone_service_serves() {
    for (values, scheme) in [
        (&["standalone.enabled=true"][..], "http"),
        (
            &[
                "standalone.enabled=true",
                "standalone.authenticate=serviceaccount",
                "certManager.enabled=true",
            ],
            "https",
        ),
        (
            &[
                "standalone.enabled=true",
                "standalone.scope=cluster",
                "certManager.enabled=true",
            ],
            "https",
        ),
        (
            &[
                "standalone.enabled=true",
                "standalone.scope=cluster",
                "standalone.authenticate=none",
            ],
            "http",
        ),
    ] {
        let text = notes("guard", "jobs", values);
        let objects = render("guard", "jobs", values);
        let (used, host) = called(&text);
        assert_eq!(used, scheme, "{values:?}: {text}");
        let service_name = host.split('.').next().expect("a name");
        let service = one(&objects, "Service", service_name);
        if host.contains('.') {
            assert_eq!(
                host,
                format!("{service_name}.jobs.svc"),
                "{values:?}: the Service's namespace"
            );
        }
        let port = &service["spec"]["ports"][0];
        assert_eq!(
            port["port"],
            if scheme == "https" { 443 } else { 80 },
            "{values:?}"
        );
        if scheme == "https" {
            let certificate = of_kind(&objects, "Certificate")
                .find(|c| c["metadata"]["name"] == "guard-pod-webhook-tracker")
                .expect("its certificate");
            let names: Vec<&Value> = certificate["spec"]["dnsNames"]
                .as_array()
                .expect("dnsNames")
                .iter()
                .collect();
            assert!(
                names.contains(&&Value::from(host.clone())),
                "{values:?}: {host} not in {names:?}"
            );
        }
        // The NetworkPolicy's client label is the one the notes name.
        assert!(
            text.contains("from pods labelled pod-webhook-tracker/client=true"),
            "{text}"
        );
    }
}
