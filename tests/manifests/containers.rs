//! What the checks read from pod templates and containers: which is the tracker, its
//! arguments, ports, probes and environment, and the program defaults they must agree with.

#[allow(unused_imports)]
use crate::prelude::*;

/// The tracker's container image, without the tag.
pub(crate) const IMAGE: &str = "ghcr.io/pod-webhook-tracker/pod-webhook-tracker";
/// The label that holds the count (the program's default `--label`).
pub(crate) const LABEL: &str = "active-jobs";
/// Where a sidecar serves the counting API (loopback only) and its probes.
/// Where the standalone service serves the counting API and its probes.
pub(crate) const STANDALONE_PORT: i32 = 8080;
/// Whether a label selector selects a pod with these labels.
pub(crate) fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions_match = selector.match_expressions.iter().flatten().all(|expr| {
        let values = expr.values.clone().unwrap_or_default();
        let label = labels.get(&expr.key);
        match expr.operator.as_str() {
            "In" => label.is_some_and(|label| values.contains(label)),
            "NotIn" => label.is_none_or(|label| !values.contains(label)),
            "Exists" => label.is_some(),
            "DoesNotExist" => label.is_none(),
            other => panic!("unknown selector operator {other}"),
        }
    });
    labels_match && expressions_match
}
pub(crate) fn labels_of(template: &PodTemplateSpec) -> BTreeMap<String, String> {
    template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default()
}
pub(crate) fn spec_of(template: &PodTemplateSpec) -> &PodSpec {
    template.spec.as_ref().expect("a pod template has a spec")
}
pub(crate) fn is_tracker(container: &Container) -> bool {
    has_tracker_image(container) && !is_installer(container) && !is_injector(container)
}
/// The injector's container (`inject`): the tracker's image, but not a tracker.
pub(crate) fn is_injector(container: &Container) -> bool {
    has_tracker_image(container) && args_of(container).first().map(String::as_str) == Some("inject")
}
pub(crate) fn has_tracker_image(container: &Container) -> bool {
    container
        .image
        .as_deref()
        .is_some_and(|image| image.starts_with(&format!("{IMAGE}:")))
}
/// An init container of the tracker's image that copies the program into a volume for `run`
/// (`install DIR`), instead of serving.
pub(crate) fn is_installer(container: &Container) -> bool {
    has_tracker_image(container)
        && args_of(container).first().map(String::as_str) == Some("install")
}
/// A job container whose command `pod-webhook-tracker run` wraps: the program, `run`, flags,
/// `--`, then the command. Returns the program's path and `run`'s flags.
pub(crate) fn run_wrapper(container: &Container) -> Option<(String, Vec<String>)> {
    let mut words = container.command.clone().unwrap_or_default();
    words.extend(args_of(container));
    let program = words.first()?;
    if !program.ends_with("/pod-webhook-tracker") || words.get(1).map(String::as_str) != Some("run")
    {
        return None;
    }
    let end = words.iter().position(|word| word == "--")?;
    Some((program.clone(), words[2..end].to_vec()))
}
pub(crate) fn is_standalone(container: &Container) -> bool {
    args_of(container)
        .iter()
        .any(|arg| arg == "--standalone=true")
}
/// A container of a rendered pod template: the object that holds it, the template, the
/// container, and whether it is a regular container (false: an init container).
pub(crate) type Found = (&'static Rendered, PodTemplateSpec, Container, bool);

/// Every container of every build that `pick` picks (see [`Found`]).
fn containers_where(pick: fn(&Container) -> bool) -> Vec<Found> {
    let mut found = Vec::new();
    for (object, template) in all_pod_templates() {
        let spec = spec_of(&template);
        for container in spec.containers.iter().filter(|c| pick(c)) {
            found.push((object, template.clone(), container.clone(), true));
        }
        for container in spec.init_containers.iter().flatten().filter(|c| pick(c)) {
            found.push((object, template.clone(), container.clone(), false));
        }
    }
    found
}
/// Every tracker container.
pub(crate) fn trackers() -> Vec<Found> {
    containers_where(is_tracker)
}
/// Every installer (see [`is_installer`]).
pub(crate) fn installers() -> Vec<Found> {
    containers_where(is_installer)
}
/// Every injector container (see [`is_injector`]).
pub(crate) fn injectors() -> Vec<Found> {
    containers_where(is_injector)
}
/// The distinct workloads (`Kind name`) among `found`.
pub(crate) fn workloads(found: &[Found]) -> BTreeSet<String> {
    found
        .iter()
        .map(|(object, ..)| format!("{} {}", object.kind(), object.name()))
        .collect()
}
pub(crate) fn sidecars() -> Vec<Found> {
    let found: Vec<_> = trackers()
        .into_iter()
        .filter(|(_, _, container, _)| !is_standalone(container))
        .collect();
    let workloads = workloads(&found);
    assert!(
        workloads.len() >= 3 && workloads.iter().any(|w| w.starts_with("Job ")),
        "expected the sidecar Job, worker Deployment and FileFlows nodes: {workloads:?}"
    );
    found
}
pub(crate) fn standalone_trackers() -> Vec<Found> {
    let found: Vec<_> = trackers()
        .into_iter()
        .filter(|(_, _, container, _)| is_standalone(container))
        .collect();
    assert!(!found.is_empty(), "expected the standalone Deployment");
    found
}
/// A JSON array instruction (`ENTRYPOINT [...]`, `CMD [...]`) of the Dockerfile's last stage.
pub(crate) fn dockerfile_instruction(instruction: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let last_stage = text
        .rsplit_once("\nFROM ")
        .map_or(text.as_str(), |(_, stage)| stage);
    let line = last_stage
        .lines()
        .filter_map(|line| line.trim().strip_prefix(instruction))
        .rfind(|rest| rest.starts_with(' '))?;
    let words = serde_json::from_str(line.trim()).unwrap_or_else(|error| {
        panic!("Dockerfile: {instruction} must be a JSON array ({error}): {line}")
    });
    Some(words)
}
/// What the container runs: its command or the image's ENTRYPOINT, then its args or (when
/// neither command nor args are set) the image's CMD.
pub(crate) fn argv(container: &Container) -> Vec<String> {
    let entrypoint = dockerfile_instruction("ENTRYPOINT").unwrap_or_default();
    let cmd = dockerfile_instruction("CMD").unwrap_or_default();
    let mut argv = container.command.clone().unwrap_or(entrypoint);
    match (&container.command, &container.args) {
        (_, Some(args)) => argv.extend(args.iter().cloned()),
        (None, None) => argv.extend(cmd),
        (Some(_), None) => {}
    }
    argv
}
/// The text of a regular container's command line (the job scripts).
pub(crate) fn script_of(container: &Container) -> String {
    let mut words = container.command.clone().unwrap_or_default();
    words.extend(args_of(container));
    words.join(" ")
}
/// The `$(NAME)` references the kubelet expands in `text` (NAME a C identifier; anything
/// else, such as the shell's `$((1 + 1))`, it leaves alone).
pub(crate) fn references(text: &str) -> Vec<&str> {
    text.split("$(")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(name, _)| name))
        .filter(|name| {
            let mut chars = name.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .collect()
}

/// The container's mount of the volume `name`, if it mounts it.
pub(crate) fn mount_named<'a>(
    container: &'a Container,
    name: &str,
) -> Option<&'a k8s_openapi::api::core::v1::VolumeMount> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| mount.name == name)
}
