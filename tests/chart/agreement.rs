//! The chart and `manifests/` install the same thing: for each variant of the manifests, the
//! values that choose it render, with the real helm, the same objects kustomize builds from the
//! variant — the same flags, rights, probes, ports, selectors, budgets and webhook settings,
//! field for field. What the chart adds is declared here, each with its reason, and nothing
//! else may differ:
//!
//! - helm's own labels (chart, version, managed-by, instance), and `app.kubernetes.io/instance`
//!   in every selector, so that two releases never select each other's pods;
//! - `app.kubernetes.io/name` and `component` labels on objects the manifests leave unlabelled;
//! - `imagePullPolicy: IfNotPresent`, what the API server sets for a tagged image anyway;
//! - the injector's flags for the injected trackers' defaults (values `injection`), each equal
//!   to the default `pod-webhook-tracker inject --help` states;
//! - the namespace a RoleBinding's subject is in, where the manifests leave it to the binding's;
//! - no Namespace object: `helm install --create-namespace` makes the release's namespace;
//! - no example caller (`manifests/standalone/authenticated`'s Job and its account).
//!
//! One difference is kustomize's, not the chart's: its YAML library keeps an extra line break
//! before each more-indented line of a folded scalar (`>-`, the policy's CEL expressions),
//! where the YAML specification, helm and the parser here keep one; CEL reads both alike.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::helm::{RELEASE, render};
use crate::kustomize::{documents, kind_and_name, kustomize_build};

/// A variant of the manifests, the values that choose it, and the namespace its objects go to.
struct Pair {
    manifests: &'static str,
    values: &'static [&'static str],
    namespace: &'static str,
}

const PAIRS: [Pair; 7] = [
    Pair {
        manifests: "manifests/injector",
        values: &["certManager.enabled=true", "policy.enabled=false"],
        namespace: "pod-webhook-tracker",
    },
    Pair {
        manifests: "manifests/injector/self-signed",
        values: &["policy.enabled=false"],
        namespace: "pod-webhook-tracker",
    },
    Pair {
        manifests: "manifests/injector/namespace-opt-in",
        values: &[
            "certManager.enabled=true",
            "injector.optIn=namespaces",
            "policy.enabled=false",
        ],
        namespace: "pod-webhook-tracker",
    },
    Pair {
        manifests: "manifests/standalone/namespaced",
        values: &[
            "injector.enabled=false",
            "policy.enabled=false",
            "standalone.enabled=true",
        ],
        // kubectl apply -n workers -k manifests/standalone/namespaced
        namespace: "workers",
    },
    Pair {
        manifests: "manifests/standalone/cluster-wide",
        // The chart authenticates cluster-wide callers by default; the manifests' variant
        // is the original's, without.
        values: &[
            "injector.enabled=false",
            "policy.enabled=false",
            "standalone.enabled=true",
            "standalone.scope=cluster",
            "standalone.authenticate=none",
        ],
        namespace: "pod-webhook-tracker",
    },
    Pair {
        manifests: "manifests/standalone/authenticated",
        values: &[
            "injector.enabled=false",
            "policy.enabled=false",
            "standalone.enabled=true",
            "standalone.authenticate=serviceaccount",
            "certManager.enabled=true",
        ],
        // The variant's kustomization sets `namespace: workers`.
        namespace: "workers",
    },
    Pair {
        manifests: "manifests/policy",
        values: &["injector.enabled=false"],
        namespace: "pod-webhook-tracker",
    },
];

/// The objects of the manifests the chart leaves out, and why.
const LEFT_OUT: [(&str, &str, &str); 3] = [
    (
        "Namespace",
        "pod-webhook-tracker",
        "helm install --create-namespace makes the release's namespace",
    ),
    (
        "Job",
        "example-authenticated-job",
        "an example caller of the service, not part of it",
    ),
    (
        "ServiceAccount",
        "batch-worker",
        "the example caller's account",
    ),
];

/// The labels helm's conventions add to every object.
const HELM_LABELS: [&str; 4] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

/// The labels the chart puts on objects the manifests leave unlabelled.
const COMPONENT_LABELS: [&str; 2] = ["app.kubernetes.io/name", "app.kubernetes.io/component"];

/// The defaults `pod-webhook-tracker inject --help` states, by flag (`--label` → `active-jobs`).
fn injector_defaults() -> BTreeMap<String, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_pod-webhook-tracker"))
        .args(["inject", "--help"])
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("--") && line.starts_with("  --") {
            let (flag, text) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
            entries.push((flag.to_owned(), text.trim().to_owned()));
        } else if let Some((_, text)) = entries.last_mut()
            && line.starts_with("      ")
        {
            text.push(' ');
            text.push_str(trimmed);
        }
    }
    let mut defaults = BTreeMap::new();
    for (flag, text) in entries {
        if let Some(rest) = text.split("(default ").nth(1) {
            let value = rest.split(')').next().unwrap_or_default();
            defaults.insert(flag, value.to_owned());
        }
    }
    // "the image of the injected tracker (default: this version's image)"
    defaults.insert(
        "--sidecar-image".to_owned(),
        format!(
            "ghcr.io/pod-webhook-tracker/pod-webhook-tracker:v{}",
            env!("CARGO_PKG_VERSION")
        ),
    );
    defaults
}

/// Removes `key` from the map at `pointer`, if there is one.
fn remove_key(object: &mut Value, pointer: &str, key: &str) {
    if let Some(map) = object.pointer_mut(pointer).and_then(Value::as_object_mut) {
        map.remove(key);
    }
}

/// The containers of an object's pod template, if it has one.
fn containers(object: &mut Value) -> Vec<&mut Value> {
    match object.pointer_mut("/spec/template/spec/containers") {
        Some(Value::Array(list)) => list.iter_mut().collect(),
        _ => Vec::new(),
    }
}

/// What the chart renders, without what it declares it adds (see the module's documentation);
/// `manifest` is the manifests' object of the same kind and name.
fn without_declared_additions(
    chart: &Value,
    manifest: &Value,
    defaults: &BTreeMap<String, String>,
    namespace: &str,
) -> Result<Value, String> {
    let mut object = chart.clone();
    for label in HELM_LABELS {
        remove_key(&mut object, "/metadata/labels", label);
    }
    let instance = "app.kubernetes.io/instance";
    for selector in [
        "/spec/selector/matchLabels",
        "/spec/selector",
        "/spec/template/metadata/labels",
        "/spec/podSelector/matchLabels",
    ] {
        remove_key(&mut object, selector, instance);
    }
    if let Some(Value::Array(constraints)) =
        object.pointer_mut("/spec/template/spec/topologySpreadConstraints")
    {
        for constraint in constraints {
            remove_key(constraint, "/labelSelector/matchLabels", instance);
        }
    }
    // Labels on objects the manifests leave unlabelled, or label otherwise.
    let theirs = manifest["metadata"]["labels"].clone();
    if let Some(labels) = object
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.retain(|key, _| {
            !COMPONENT_LABELS.contains(&key.as_str()) || theirs.get(key).is_some()
        });
        if labels.is_empty() {
            object["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("labels");
        }
    }
    // The API server's default for a tagged image.
    let manifest_args: Vec<Value> = manifest
        .pointer("/spec/template/spec/containers/0/args")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for container in containers(&mut object) {
        let map = container.as_object_mut().expect("a container");
        if map.get("imagePullPolicy") == Some(&Value::from("IfNotPresent")) {
            map.remove("imagePullPolicy");
        }
        // The injected trackers' defaults, each the one the program states.
        if map.get("name") == Some(&Value::from("injector"))
            && let Some(Value::Array(args)) = map.get_mut("args")
        {
            let mut problems = Vec::new();
            args.retain(|arg| {
                if manifest_args.contains(arg) {
                    return true;
                }
                let text = arg.as_str().unwrap_or_default();
                let (flag, value) = text.split_once('=').unwrap_or((text, ""));
                match defaults.get(flag) {
                    Some(default) if default == value => false,
                    Some(default) => {
                        problems.push(format!("{text}: the program's default is {default}"));
                        true
                    }
                    None => {
                        problems.push(format!("{text}: not a flag with a stated default"));
                        true
                    }
                }
            });
            if !problems.is_empty() {
                return Err(problems.join("; "));
            }
        }
    }
    if object["kind"] == "RoleBinding"
        && let Some(Value::Array(subjects)) = object.get_mut("subjects")
    {
        for (index, subject) in subjects.iter_mut().enumerate() {
            let theirs = &manifest["subjects"][index];
            if subject["namespace"] == namespace && theirs.get("namespace").is_none() {
                subject
                    .as_object_mut()
                    .expect("a subject")
                    .remove("namespace");
            }
        }
    }
    Ok(object)
}

/// Every difference between two values, with its JSON path.
fn differences(chart: &Value, manifest: &Value, path: &str, out: &mut Vec<String>) {
    match (chart, manifest) {
        (Value::Object(ours), Value::Object(theirs)) => {
            for (key, value) in ours {
                let here = format!("{path}.{key}");
                match theirs.get(key) {
                    Some(other) => differences(value, other, &here, out),
                    None => out.push(format!(
                        "{here}: the chart has {value}, the manifests nothing"
                    )),
                }
            }
            for (key, value) in theirs {
                if !ours.contains_key(key) {
                    out.push(format!(
                        "{path}.{key}: the manifests have {value}, the chart nothing"
                    ));
                }
            }
        }
        (Value::Array(ours), Value::Array(theirs)) if ours.len() == theirs.len() => {
            for (index, (value, other)) in ours.iter().zip(theirs).enumerate() {
                differences(value, other, &format!("{path}[{index}]"), out);
            }
        }
        (ours, theirs) if ours == theirs => {}
        // kustomize's extra line break in folded scalars (see the module's documentation).
        (Value::String(ours), Value::String(theirs)) if *ours == theirs.replace("\n\n", "\n") => {}
        (ours, theirs) => out.push(format!(
            "{path}: the chart has {ours}, the manifests {theirs}"
        )),
    }
}

/// `(kind, name)` → the object, without its namespace (compared apart).
fn by_identity(objects: Vec<Value>) -> BTreeMap<(String, String), Value> {
    objects
        .into_iter()
        .map(|mut object| {
            let key = (
                object["kind"].as_str().unwrap_or_default().to_owned(),
                object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            remove_key(&mut object, "/metadata", "namespace");
            (key, object)
        })
        .collect()
}

#[test]
fn the_chart_renders_what_the_matching_manifests_render() {
    let defaults = injector_defaults();
    for flag in [
        "--label",
        "--tracker-port",
        "--autoscaler",
        "--memory-limit",
        "--unfit-pods",
    ] {
        assert!(
            defaults.contains_key(flag),
            "inject --help states no default of {flag}: {defaults:?}"
        );
    }
    let mut problems = Vec::new();
    for pair in &PAIRS {
        let what = format!(
            "helm template {RELEASE} -n {} {:?} vs kustomize build {}",
            pair.namespace, pair.values, pair.manifests
        );
        let chart_objects = render(RELEASE, pair.namespace, pair.values);
        // Every namespaced object of the chart goes to the release's namespace.
        for object in &chart_objects {
            if let Some(namespace) = object["metadata"]["namespace"].as_str() {
                assert_eq!(
                    namespace,
                    pair.namespace,
                    "{what}: {}",
                    kind_and_name(object)
                );
            }
        }
        let built = kustomize_build(std::path::Path::new(pair.manifests))
            .unwrap_or_else(|error| panic!("{error}"));
        let manifests = by_identity(documents(&built, pair.manifests));
        let chart = by_identity(chart_objects);
        for ((kind, name), theirs) in &manifests {
            let key = (kind.clone(), name.clone());
            let Some(ours) = chart.get(&key) else {
                if !LEFT_OUT.iter().any(|(k, n, _)| k == kind && n == name) {
                    problems.push(format!("{what}: the chart does not render {kind} {name}"));
                }
                continue;
            };
            match without_declared_additions(ours, theirs, &defaults, pair.namespace) {
                Err(problem) => problems.push(format!("{what}: {kind} {name}: {problem}")),
                Ok(ours) => {
                    let mut found = Vec::new();
                    differences(&ours, theirs, "", &mut found);
                    problems.extend(
                        found
                            .into_iter()
                            .map(|d| format!("{what}: {kind} {name}{d}")),
                    );
                }
            }
        }
        for (kind, name) in chart.keys() {
            if !manifests.contains_key(&(kind.clone(), name.clone())) {
                problems.push(format!(
                    "{what}: the chart renders {kind} {name}, which the manifests do not"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_declared_differences_are_what_the_chart_renders() {
    // The chart renders every injection default as a flag, and nothing the manifests render
    // is left out but what LEFT_OUT names: both checks above would pass vacuously otherwise.
    let objects = render(RELEASE, "pod-webhook-tracker", &[]);
    let injector = crate::helm::one(&objects, "Deployment", "pod-webhook-tracker-injector");
    let args = crate::helm::args(crate::helm::container(injector, "injector"));
    for flag in [
        "--sidecar-image=",
        "--label=active-jobs",
        "--tracker-port=8080",
        "--admin-port=9090",
        "--max-job-duration=6h",
        "--autoscaler=karpenter",
        "--cpu-request=5m",
        "--memory-request=8Mi",
        "--memory-limit=32Mi",
        "--unfit-pods=deny",
    ] {
        assert!(
            args.iter().any(|a| a.starts_with(flag)),
            "{flag} not in {args:?}"
        );
    }
    for (kind, name, why) in LEFT_OUT {
        assert!(why.split_whitespace().count() >= 4);
        let rendered_somewhere = PAIRS.iter().any(|pair| {
            let built = kustomize_build(std::path::Path::new(pair.manifests)).expect("builds");
            documents(&built, pair.manifests)
                .iter()
                .any(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        });
        assert!(
            rendered_somewhere,
            "{kind} {name} is in no variant: remove it from LEFT_OUT"
        );
    }
}
