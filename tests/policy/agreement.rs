//! The policy agrees with the manifests and the program: the keys it allows, the expressions it
//! uses, and the field paths it reads.

#[allow(unused_imports)]
use crate::prelude::*;

#[test]
fn the_allowed_keys_are_the_programs_defaults_and_come_first() {
    // The README's overlay replaces /spec/variables/0 and /spec/variables/1.
    let compiled = compile(spec());
    let names: Vec<&str> = compiled.variables.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..2], ["allowedLabels", "allowedAnnotations"]);
    assert_eq!(strings_of(&compiled, "allowedLabels"), [LABEL]);
    assert_eq!(
        strings_of(&compiled, "allowedAnnotations"),
        [WRITES, JOBS, KARPENTER, DELETION_COST, SAFE_TO_EVICT]
    );
    assert_eq!(WRITES, format!("{LABEL}-writes"));
    assert_eq!(JOBS, format!("{LABEL}-jobs"));
}
/// The values of a variable that evaluates to a list of strings on any request.
fn strings_of(compiled: &Compiled, name: &str) -> Vec<String> {
    let admission = update(tracker(), &idle(), &idle());
    let context = compiled.context(&admission, Some(&HashMap::new()));
    let (_, program) = compiled
        .variables
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no variable {name}"));
    match program.execute(&context) {
        Ok(Cel::List(items)) => items
            .iter()
            .map(|item| match item {
                Cel::String(text) => text.to_string(),
                other => panic!("{name} holds {other:?}"),
            })
            .collect(),
        other => panic!("{name} is {other:?}"),
    }
}
/// Every YAML document under `dir`.
fn yaml_documents(dir: &Path, out: &mut Vec<(String, Value)>) {
    let mut files = Vec::new();
    yaml_files(dir, &mut files);
    for file in files {
        let name = file.display().to_string();
        out.extend(parse_yaml(&file).into_iter().map(|doc| (name.clone(), doc)));
    }
}
#[test]
fn every_job_tracker_in_the_manifests_writes_only_keys_the_policy_allows() {
    let compiled = compile(spec());
    let labels = strings_of(&compiled, "allowedLabels");
    let annotations = strings_of(&compiled, "allowedAnnotations");
    let mut docs = Vec::new();
    for dir in ["manifests", "examples"] {
        yaml_documents(Path::new(dir), &mut docs);
    }
    let mut trackers = 0;
    for (file, doc) in &docs {
        let Some(pod) = doc.pointer("/spec/template/spec") else {
            continue;
        };
        if pod["serviceAccountName"] != "job-tracker" {
            continue;
        }
        let containers = ["initContainers", "containers"]
            .iter()
            .filter_map(|field| pod[field].as_array())
            .flatten();
        for container in containers {
            let image = container["image"].as_str().unwrap_or_default();
            if !image.starts_with("ghcr.io/pod-webhook-tracker/pod-webhook-tracker:") {
                continue;
            }
            let args: Vec<&str> = container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let label = args
                .iter()
                .enumerate()
                .find_map(|(i, arg)| match arg.strip_prefix("--label") {
                    Some(rest) if rest.starts_with('=') => Some(rest[1..].to_owned()),
                    Some("") => args.get(i + 1).map(|next| (*next).to_owned()),
                    _ => None,
                })
                .unwrap_or_else(|| LABEL.to_owned());
            assert!(
                labels.contains(&label),
                "{file}: label {label} not in {labels:?}"
            );
            for own in [format!("{label}-writes"), format!("{label}-jobs")] {
                assert!(
                    annotations.contains(&own),
                    "{file}: annotation {own} not in {annotations:?}"
                );
            }
            let deletion_cost = args
                .iter()
                .any(|arg| arg.starts_with("--pod-deletion-cost"));
            assert!(
                !deletion_cost || annotations.iter().any(|allowed| allowed == DELETION_COST),
                "{file}: --pod-deletion-cost sets {DELETION_COST}, not in {annotations:?}"
            );
            // Annotations a tracker is told to set while busy (autoscaler hints).
            let hints = args.iter().enumerate().filter_map(|(i, arg)| {
                match arg.strip_prefix("--active-annotation") {
                    Some(rest) if rest.starts_with('=') => Some(&rest[1..]),
                    Some("") => args.get(i + 1).copied(),
                    _ => None,
                }
            });
            for hint in hints {
                let key = hint.split_once('=').map_or(hint, |(key, _)| key);
                assert!(
                    annotations.iter().any(|allowed| allowed == key),
                    "{file}: --active-annotation {key} not in {annotations:?}"
                );
            }
            trackers += 1;
        }
    }
    assert!(
        trackers >= 3,
        "expected the sidecar Job, Deployment and FileFlows nodes"
    );
}
#[test]
fn every_autoscaler_preset_of_the_injector_sets_only_annotations_the_policy_allows() {
    use pod_webhook_tracker::core::inject::settings::Autoscaler;
    let annotations = strings_of(&compile(spec()), "allowedAnnotations");
    for preset in [
        Autoscaler::Karpenter,
        Autoscaler::ClusterAutoscaler,
        Autoscaler::None,
    ] {
        if let Some(annotation) = preset.active_annotation() {
            let key = annotation
                .split_once('=')
                .map_or(annotation, |(key, _)| key);
            assert!(
                annotations.iter().any(|a| a == key),
                "{preset:?}: {key} not in {annotations:?}"
            );
        }
    }
}
#[test]
fn every_expression_uses_only_what_kubernetes_provides() {
    let spec = spec();
    let env = env();
    let mut sources: Vec<String> = Vec::new();
    sources.extend(
        spec.match_conditions
            .iter()
            .flatten()
            .map(|c| c.expression.clone()),
    );
    sources.extend(
        spec.variables
            .iter()
            .flatten()
            .map(|v| v.expression.clone()),
    );
    for validation in spec.validations.iter().flatten() {
        sources.push(validation.expression.clone());
        sources.extend(validation.message_expression.clone());
    }
    assert!(sources.len() >= 15, "only {} expressions", sources.len());
    for source in &sources {
        let program = compile_one(&env, "expression", source);
        let references = program.references();
        for function in references.functions() {
            // Operators are named like _&&_, @in, !_ and are standard.
            let operator =
                function.starts_with('_') || function.starts_with('@') || function.starts_with('!');
            assert!(
                operator || KUBERNETES_FUNCTIONS.contains(&function),
                "{function} is not known to be in Kubernetes 1.30's CEL: {source}"
            );
        }
        for variable in references.variables() {
            // Comprehension variables (k) are bound by the macros.
            assert!(
                ["request", "object", "oldObject", "variables", "k"].contains(&variable),
                "{variable} is not provided: {source}"
            );
        }
        assert!(
            !source.contains(".?") && !source.contains("[?"),
            "no optional syntax: {source}"
        );
    }
}
#[test]
fn a_wrong_field_path_in_the_policy_would_fail_these_tests() {
    // The harness is strict: a misspelled path does not pass silently.
    let allowed = update(tracker(), &idle(), &busy("1", "a-1"));
    let changed_app = update(
        tracker(),
        &busy("1", "a-1"),
        &pod(
            POD,
            &[("app.kubernetes.io/name", "db"), (LABEL, "1")],
            &[(WRITES, "a-1")],
        ),
    );
    let misspell = |from: &str, to: &str| {
        let mut spec = spec();
        let text = serde_json::to_string(&spec).expect("serializes");
        assert!(text.contains(from), "{from} is not in the policy");
        spec = serde_json::from_str(&text.replace(from, to)).expect("deserializes");
        compile(spec)
    };
    // A path outside has(): the evaluation fails, and the change is refused.
    let broken = misspell("[object.metadata.name]", "[object.metadata.nam]");
    assert!(matches!(broken.decide(&allowed), Decision::Denied(r) if r.iter().any(|r| r.error)));
    // A path inside has(): the labels look empty, so the allowed change looks like a removal.
    let broken = misspell(
        "has(oldObject.metadata.labels)",
        "has(oldObject.metadata.label)",
    );
    assert!(matches!(broken.decide(&allowed), Decision::Denied(_)));
    // The extra's key.
    let broken = misspell(POD_NAME_EXTRA, "authentication.kubernetes.io/podname");
    assert!(matches!(broken.decide(&allowed), Decision::Denied(_)));
    // And the unbroken policy tells the two apart.
    assert_allowed(decide(&allowed));
    assert_denied(decide(&changed_app), &["app.kubernetes.io/name"]);
}
