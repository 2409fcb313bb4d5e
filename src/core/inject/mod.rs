//! What the injector does to a pod, as a pure function: pod and defaults in, a JSON patch (or
//! why not) out. `inject` serves it as an admission webhook.
//!
//! The patch adds what `manifests/sidecar/job.yaml` adds by hand: the tracker as the first init
//! container (a native sidecar, so it runs before any other init container that might call it),
//! its token volume, `TRACKER_URL` in every other container, and with the `run` annotation the
//! installer and the program volume. A pod that already has a tracker is left alone, so a second
//! call (reinvocation) adds nothing.

pub mod quantity;
pub mod settings;
pub mod sidecar;

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde::Serialize;
use serde_json::Value;

use crate::core::inject::settings::{INJECTED_ANNOTATION, Sidecar};
use crate::core::inject::sidecar::{
    ADMIN_PORT_NAME, API_VOLUME, INSTALLER, PROGRAM_VOLUME, TRACKER, TRACKER_URL,
};

/// What to do with a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Apply this patch; tell the creator these warnings.
    Inject {
        /// RFC 6902 operations against the pod as it was sent.
        patch: Patch,
        /// Things the creator should know, each a sentence.
        warnings: Vec<String>,
    },
    /// The pod has a tracker already: no patch.
    AlreadyInjected {
        /// Set when the tracker was not put there by the injector.
        warnings: Vec<String>,
    },
    /// The injector cannot make this pod correct.
    Unfit {
        /// Each problem, a sentence naming the field or annotation.
        problems: Vec<String>,
    },
}

/// Decides what to do with `pod`, given the injector's defaults.
pub fn decide(pod: &Pod, defaults: &Sidecar, version: &str) -> Decision {
    let empty = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty);
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let init = spec.init_containers.as_deref().unwrap_or_default();
    if all_containers(spec).any(|c| c.name == TRACKER) {
        let warnings = if annotations.contains_key(INJECTED_ANNOTATION) {
            Vec::new()
        } else {
            vec![format!(
                "pod-webhook-tracker: the pod already has a container named {TRACKER:?}; no tracker was injected"
            )]
        };
        return Decision::AlreadyInjected { warnings };
    }
    let sidecar = match defaults.for_pod(&annotations) {
        Ok(sidecar) => sidecar,
        Err(problems) => return Decision::Unfit { problems },
    };
    let problems = unfit(spec, &sidecar);
    if !problems.is_empty() {
        return Decision::Unfit { problems };
    }

    let mut patch = Vec::new();
    // Other containers first, while the indices are still the pod's own.
    for (list, containers) in [
        ("containers", &spec.containers[..]),
        ("initContainers", init),
    ] {
        for (index, container) in containers.iter().enumerate() {
            let at = ["spec", list, &index.to_string()];
            let env = container.env.as_deref().unwrap_or_default();
            if !env.iter().any(|var| var.name == TRACKER_URL) {
                append(
                    &mut patch,
                    &at,
                    "env",
                    env.is_empty(),
                    &sidecar::url_env(&sidecar),
                );
            }
            if sidecar.run {
                let mounts = container.volume_mounts.as_deref().unwrap_or_default();
                let mount = sidecar::program_mount(true);
                append(&mut patch, &at, "volumeMounts", mounts.is_empty(), &mount);
            }
        }
    }
    // Then the tracker in front, and the installer in front of it: it must finish first.
    let mut ours = vec![sidecar::tracker(&sidecar)];
    if sidecar.run {
        ours.insert(0, sidecar::installer(&sidecar));
    }
    if init.is_empty() {
        add(&mut patch, &["spec", "initContainers"], &ours);
    } else {
        for container in ours.iter().rev() {
            add(&mut patch, &["spec", "initContainers", "0"], container);
        }
    }
    let mut volumes = vec![sidecar::api_volume()];
    if sidecar.run {
        volumes.push(sidecar::program_volume());
    }
    let existing = spec.volumes.as_deref().unwrap_or_default();
    let mut have_volumes = !existing.is_empty();
    for volume in &volumes {
        append(&mut patch, &["spec"], "volumes", !have_volumes, volume);
        have_volumes = true;
    }
    let mark = BTreeMap::from([(INJECTED_ANNOTATION.to_owned(), version.to_owned())]);
    if pod.metadata.annotations.is_none() {
        add(&mut patch, &["metadata", "annotations"], &mark);
    } else {
        add(
            &mut patch,
            &["metadata", "annotations", INJECTED_ANNOTATION],
            &version,
        );
    }

    let mut warnings = Vec::new();
    if spec.automount_service_account_token != Some(false) {
        warnings.push(
            "pod-webhook-tracker: automountServiceAccountToken is not false, so every container holds the pod's token; set it to false to leave the token to the tracker"
                .to_owned(),
        );
    }
    Decision::Inject {
        patch: Patch(patch),
        warnings,
    }
}

/// Why the pod cannot take the tracker, if it cannot.
fn unfit(spec: &PodSpec, sidecar: &Sidecar) -> Vec<String> {
    let mut problems = Vec::new();
    if spec.host_network == Some(true) {
        problems.push(
            "the pod uses hostNetwork: its 127.0.0.1 is the node's, shared by every such pod there, so a tracker on it would count for the wrong pod"
                .to_owned(),
        );
    }
    for container in all_containers(spec) {
        if sidecar.run && container.name == INSTALLER {
            problems.push(format!(
                "the pod already has a container named {INSTALLER:?}"
            ));
        }
        for port in container.ports.iter().flatten() {
            let number = port.container_port;
            if number == i32::from(sidecar.port) || number == i32::from(sidecar.admin_port) {
                problems.push(format!(
                    "container {:?} already uses port {number}, which the tracker needs (choose others with the annotations pod-webhook-tracker.io/port and pod-webhook-tracker.io/admin-port)",
                    container.name
                ));
            }
            if port.name.as_deref() == Some(ADMIN_PORT_NAME) {
                problems.push(format!(
                    "container {:?} already has a port named {ADMIN_PORT_NAME:?}",
                    container.name
                ));
            }
        }
    }
    for volume in spec.volumes.iter().flatten() {
        if volume.name == API_VOLUME || (sidecar.run && volume.name == PROGRAM_VOLUME) {
            problems.push(format!(
                "the pod already has a volume named {:?}",
                volume.name
            ));
        }
    }
    problems
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
}

fn add(patch: &mut Vec<PatchOperation>, path: &[&str], value: &impl Serialize) {
    patch.push(PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value: serde_json::to_value(value).unwrap_or(Value::Null),
    }));
}

/// Adds `item` to the list `field` of the object at `at`: as a new list if there is none yet.
fn append(
    patch: &mut Vec<PatchOperation>,
    at: &[&str],
    field: &str,
    new_list: bool,
    item: &impl Serialize,
) {
    let mut path: Vec<&str> = at.to_vec();
    path.push(field);
    if new_list {
        add(patch, &path, &[item]);
    } else {
        path.push("-");
        add(patch, &path, item);
    }
}

#[cfg(test)]
mod tests;
