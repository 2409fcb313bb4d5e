//! The patch builder over many pod shapes: each patch is applied to the pod as the API server
//! would apply it, and the result is read back as a pod.

use super::*;
use proptest::prelude::*;
use serde_json::json;

const VERSION: &str = "0.1.0";

fn defaults() -> Sidecar {
    Sidecar::defaults("ghcr.io/pod-webhook-tracker/pod-webhook-tracker:v0.1.0".to_owned())
}

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).expect("a pod")
}

fn bare() -> Value {
    json!({
        "metadata": {"name": "job-1", "labels": {"pod-webhook-tracker.io/inject": "true"}},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "job", "image": "busybox"}]}
    })
}

/// Decides, applies the patch, and returns the patched pod and the warnings.
fn injected(value: Value) -> (Pod, Vec<String>) {
    let Decision::Inject { patch, warnings } = decide(&pod(value.clone()), &defaults(), VERSION)
    else {
        panic!("not injected: {value}");
    };
    let mut document = value;
    json_patch::patch(&mut document, &patch).expect("the patch applies");
    (pod(document), warnings)
}

fn spec(pod: &Pod) -> &PodSpec {
    pod.spec.as_ref().expect("a spec")
}

fn init_names(pod: &Pod) -> Vec<&str> {
    spec(pod)
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect()
}

fn env<'a>(container: &'a Container, name: &str) -> Vec<&'a str> {
    container
        .env
        .iter()
        .flatten()
        .filter(|v| v.name == name)
        .filter_map(|v| v.value.as_deref())
        .collect()
}

fn problems(value: Value) -> Vec<String> {
    match decide(&pod(value), &defaults(), VERSION) {
        Decision::Unfit { problems } => problems,
        other => panic!("expected unfit, got {other:?}"),
    }
}

#[test]
fn a_bare_pod_gets_the_sidecar_first_with_its_token_and_the_url_in_its_containers() {
    let (pod, warnings) = injected(bare());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(init_names(&pod), [TRACKER]);
    let tracker = spec(&pod).init_containers.as_ref().expect("init")[0].clone();
    assert_eq!(tracker.restart_policy.as_deref(), Some("Always"));
    assert_eq!(tracker, sidecar::tracker(&defaults()));
    let volumes: Vec<_> = spec(&pod)
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(volumes, [API_VOLUME]);
    assert_eq!(
        env(&spec(&pod).containers[0], TRACKER_URL),
        ["http://127.0.0.1:8080"]
    );
    let annotations = pod.metadata.annotations.expect("annotations");
    assert_eq!(annotations[INJECTED_ANNOTATION], VERSION);
}

#[test]
fn existing_init_containers_come_after_the_tracker_and_get_the_url_too() {
    let mut value = bare();
    value["spec"]["initContainers"] = json!([
        {"name": "migrate", "image": "migrate", "env": [{"name": "A", "value": "1"}]},
        {"name": "warm", "image": "warm", "env": [{"name": "TRACKER_URL", "value": "http://elsewhere"}]}
    ]);
    value["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    value["metadata"]["annotations"] = json!({"team": "batch"});
    let (pod, _) = injected(value);
    assert_eq!(init_names(&pod), [TRACKER, "migrate", "warm"]);
    let init = spec(&pod).init_containers.as_ref().expect("init");
    assert_eq!(env(&init[1], TRACKER_URL), ["http://127.0.0.1:8080"]);
    assert_eq!(env(&init[1], "A"), ["1"], "existing variables stay");
    assert_eq!(
        env(&init[2], TRACKER_URL),
        ["http://elsewhere"],
        "a container's own value wins"
    );
    let volumes: Vec<_> = spec(&pod)
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(volumes, ["data", API_VOLUME]);
    let annotations = pod.metadata.annotations.expect("annotations");
    assert_eq!(annotations["team"], "batch");
    assert_eq!(annotations[INJECTED_ANNOTATION], VERSION);
}

#[test]
fn the_run_annotation_adds_the_installer_before_the_tracker_and_mounts_the_program() {
    let mut value = bare();
    value["metadata"]["annotations"] = json!({"pod-webhook-tracker.io/run": "true"});
    value["spec"]["initContainers"] = json!([{"name": "migrate", "image": "migrate"}]);
    let (pod, _) = injected(value);
    assert_eq!(init_names(&pod), [INSTALLER, TRACKER, "migrate"]);
    let volumes: Vec<_> = spec(&pod)
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(volumes, [API_VOLUME, PROGRAM_VOLUME]);
    let mounts: Vec<_> = spec(&pod).containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [(
            PROGRAM_VOLUME.to_owned(),
            sidecar::PROGRAM_DIR.to_owned(),
            Some(true)
        )]
    );
}

#[test]
fn annotations_override_the_trackers_defaults() {
    let mut value = bare();
    value["metadata"]["annotations"] = json!({
        "pod-webhook-tracker.io/port": "8181",
        "pod-webhook-tracker.io/admin-port": "9191",
        "pod-webhook-tracker.io/label": "example.com/busy",
        "pod-webhook-tracker.io/autoscaler": "none",
        "pod-webhook-tracker.io/max-job-duration": "30m"
    });
    let (pod, _) = injected(value);
    let tracker = &spec(&pod).init_containers.as_ref().expect("init")[0];
    let args = tracker.args.clone().expect("args");
    assert_eq!(
        args,
        [
            "serve",
            "--admin-address=0.0.0.0:9191",
            "--address=127.0.0.1:8181",
            "--label=example.com/busy",
            "--max-job-duration=30m"
        ]
    );
    assert_eq!(
        tracker.ports.as_ref().expect("ports")[0].container_port,
        9191
    );
    assert_eq!(
        env(&spec(&pod).containers[0], TRACKER_URL),
        ["http://127.0.0.1:8181"]
    );
}

#[test]
fn a_pod_that_already_has_a_tracker_gets_no_patch() {
    let (pod, _) = injected(bare());
    let again = decide(&pod, &defaults(), VERSION);
    assert_eq!(
        again,
        Decision::AlreadyInjected {
            warnings: Vec::new()
        },
        "reinvocation adds nothing"
    );

    let mut by_hand = bare();
    by_hand["spec"]["initContainers"] = json!([{"name": "tracker", "image": "tracker"}]);
    let Decision::AlreadyInjected { warnings } = decide(&self::pod(by_hand), &defaults(), VERSION)
    else {
        panic!("a pod with a tracker by hand is left alone");
    };
    assert!(
        warnings[0].contains("already has a container named \"tracker\""),
        "{warnings:?}"
    );
}

#[test]
fn pods_the_tracker_cannot_serve_correctly_are_unfit_with_the_reason() {
    let mut host = bare();
    host["spec"]["hostNetwork"] = json!(true);
    assert!(problems(host)[0].contains("hostNetwork"));

    let mut ports = bare();
    ports["spec"]["containers"][0]["ports"] =
        json!([{"containerPort": 8080}, {"containerPort": 9090}]);
    let found = problems(ports);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].contains("container \"job\" already uses port 8080"),
        "{found:?}"
    );

    let mut named = bare();
    named["spec"]["containers"][0]["ports"] =
        json!([{"name": "tracker-admin", "containerPort": 1234}]);
    assert!(problems(named)[0].contains("port named \"tracker-admin\""));

    let mut volume = bare();
    volume["spec"]["volumes"] = json!([{"name": "tracker-api-access", "emptyDir": {}}]);
    assert!(problems(volume)[0].contains("volume named \"tracker-api-access\""));

    let mut run_volume = bare();
    run_volume["metadata"]["annotations"] = json!({"pod-webhook-tracker.io/run": "true"});
    run_volume["spec"]["volumes"] = json!([{"name": "tracker-program", "emptyDir": {}}]);
    assert!(problems(run_volume)[0].contains("volume named \"tracker-program\""));
}

#[test]
fn a_bad_annotation_makes_the_pod_unfit_naming_the_annotation() {
    let mut value = bare();
    value["metadata"]["annotations"] = json!({"pod-webhook-tracker.io/memory-limit": "lots"});
    let found = problems(value);
    assert!(
        found[0].starts_with(
            "annotation pod-webhook-tracker.io/memory-limit: \"lots\" is not a resource quantity"
        ),
        "{found:?}"
    );
}

#[test]
fn a_pod_that_mounts_the_token_everywhere_is_injected_with_a_warning() {
    let mut value = bare();
    value["spec"]
        .as_object_mut()
        .expect("a spec")
        .remove("automountServiceAccountToken");
    let (_, warnings) = injected(value);
    assert!(
        warnings[0].contains("automountServiceAccountToken"),
        "{warnings:?}"
    );
}

/// Pods of many shapes: with or without init containers, env, mounts, volumes, annotations.
fn any_pod() -> impl Strategy<Value = Value> {
    let container = |prefix: &'static str| {
        (0..3usize, any::<bool>(), any::<bool>()).prop_map(move |(i, with_env, with_url)| {
            let mut c = json!({"name": format!("{prefix}-{i}"), "image": "busybox"});
            if with_env {
                let mut env = vec![json!({"name": "X", "value": "1"})];
                if with_url {
                    env.push(json!({"name": "TRACKER_URL", "value": "http://own"}));
                }
                c["env"] = json!(env);
            }
            c
        })
    };
    (
        proptest::collection::vec(container("c"), 1..4),
        proptest::option::of(proptest::collection::vec(container("i"), 0..3)),
        proptest::option::of(proptest::collection::vec("[a-z]{1,8}", 0..3)),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(containers, init, volumes, run)| {
            let dedupe = |list: Vec<Value>| {
                let mut seen = std::collections::BTreeSet::new();
                list.into_iter()
                    .filter(|c| seen.insert(c["name"].as_str().unwrap_or_default().to_owned()))
                    .collect::<Vec<_>>()
            };
            let mut value = bare();
            value["spec"]["containers"] = json!(dedupe(containers));
            if let Some(init) = init {
                value["spec"]["initContainers"] = json!(dedupe(init));
            }
            if let Some(volumes) = volumes {
                let volumes: std::collections::BTreeSet<_> = volumes.into_iter().collect();
                let list: Vec<_> = volumes
                    .iter()
                    .map(|n| json!({"name": n, "emptyDir": {}}))
                    .collect();
                value["spec"]["volumes"] = json!(list);
            }
            if let Some(run) = run {
                value["metadata"]["annotations"] =
                    json!({"pod-webhook-tracker.io/run": run.to_string()});
            }
            value
        })
}

proptest! {
    #[test]
    fn every_pod_shape_gets_a_patch_that_applies_once_and_only_once(value in any_pod()) {
        let before = pod(value.clone());
        let (after, _) = injected(value);
        let init = spec(&after).init_containers.clone().unwrap_or_default();
        let run = before.metadata.annotations.as_ref()
            .is_some_and(|a| a.get("pod-webhook-tracker.io/run").is_some_and(|v| v == "true"));
        let tracker_at = usize::from(run);
        prop_assert_eq!(&init[tracker_at].name, TRACKER);
        if run {
            prop_assert_eq!(&init[0].name, INSTALLER);
        }
        let original_init = spec(&before).init_containers.clone().unwrap_or_default();
        prop_assert_eq!(init.len(), original_init.len() + 1 + usize::from(run));
        for container in spec(&after).containers.iter().chain(init.iter().skip(tracker_at + 1)) {
            prop_assert_eq!(env(container, TRACKER_URL).len(), 1, "{}", container.name);
        }
        let volumes: Vec<_> = spec(&after).volumes.iter().flatten().map(|v| v.name.clone()).collect();
        prop_assert_eq!(volumes.iter().filter(|v| *v == API_VOLUME).count(), 1);
        prop_assert_eq!(decide(&after, &defaults(), VERSION), Decision::AlreadyInjected { warnings: Vec::new() });
    }

    #[test]
    fn any_annotation_values_give_a_patch_or_named_problems(
        values in proptest::collection::btree_map(
            prop::sample::select(settings::ANNOTATED.to_vec()),
            "\\PC{0,12}",
            1..5,
        )
    ) {
        let mut value = bare();
        let annotations: BTreeMap<String, String> =
            values.into_iter().map(|(k, v)| (format!("pod-webhook-tracker.io/{k}"), v)).collect();
        value["metadata"]["annotations"] = json!(annotations);
        match decide(&pod(value.clone()), &defaults(), VERSION) {
            Decision::Inject { patch, .. } => {
                let mut document = value;
                prop_assert!(json_patch::patch(&mut document, &patch).is_ok());
            }
            Decision::Unfit { problems } => {
                for problem in problems {
                    prop_assert!(problem.starts_with("annotation"), "{}", problem);
                }
            }
            Decision::AlreadyInjected { .. } => prop_assert!(false, "no tracker was there"),
        }
    }
}
