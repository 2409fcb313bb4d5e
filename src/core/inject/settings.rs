//! What the injected tracker is made of: its image, its flags and resources. The injector's
//! flags give the defaults; a pod may override each through an annotation under
//! `pod-webhook-tracker.io/`. Both are read by the same parsers, so a value means the same
//! wherever it is written, and each refusal names where the value came from.

use std::collections::BTreeMap;

use crate::core::durations::{self, Bounds, MAX_JOB_LIFETIME};
use crate::core::inject::quantity;

/// The prefix of every annotation and label the injector reads or writes.
pub const PREFIX: &str = "pod-webhook-tracker.io/";
/// The label that opts a pod in (the webhook configuration's `objectSelector`).
pub const INJECT_LABEL: &str = "pod-webhook-tracker.io/inject";
/// The annotation the injector leaves on a pod it has injected (the version that did it).
pub const INJECTED_ANNOTATION: &str = "pod-webhook-tracker.io/injected";

/// Which node autoscaler is kept off busy pods (through `--active-annotation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autoscaler {
    /// `karpenter.sh/do-not-disrupt=true`.
    Karpenter,
    /// `cluster-autoscaler.kubernetes.io/safe-to-evict=false`.
    ClusterAutoscaler,
    /// No annotation: the disruption budget alone protects busy pods.
    None,
}

impl Autoscaler {
    /// The tracker's `--active-annotation`, if any.
    pub fn active_annotation(self) -> Option<&'static str> {
        match self {
            Autoscaler::Karpenter => Some("karpenter.sh/do-not-disrupt=true"),
            Autoscaler::ClusterAutoscaler => {
                Some("cluster-autoscaler.kubernetes.io/safe-to-evict=false")
            }
            Autoscaler::None => None,
        }
    }

    fn parse(text: &str) -> Result<Autoscaler, String> {
        match text {
            "karpenter" => Ok(Autoscaler::Karpenter),
            "cluster-autoscaler" => Ok(Autoscaler::ClusterAutoscaler),
            "none" => Ok(Autoscaler::None),
            _ => Err(format!(
                "{text:?} is not an autoscaler preset (karpenter, cluster-autoscaler, none)"
            )),
        }
    }
}

/// The injected tracker, every value checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Sidecar {
    /// The image of the tracker and of the installer.
    pub image: String,
    /// The label that holds the count (`--label`).
    pub label: String,
    /// The counting API's port on 127.0.0.1.
    pub port: u16,
    /// The admin port (probes, `/wait-idle`), on every address of the pod.
    pub admin_port: u16,
    /// `--max-job-duration`, as written (checked to be a duration within a year); `0` = none.
    pub max_job_duration: String,
    /// The autoscaler preset.
    pub autoscaler: Autoscaler,
    /// The tracker's CPU request.
    pub cpu_request: String,
    /// The tracker's memory request.
    pub memory_request: String,
    /// The tracker's memory limit.
    pub memory_limit: String,
    /// Whether `run` is installed for the pod's containers.
    pub run: bool,
}

impl Sidecar {
    /// The defaults of the tracker's own manifests (`manifests/sidecar/job.yaml`).
    pub fn defaults(image: String) -> Sidecar {
        Sidecar {
            image,
            label: "active-jobs".to_owned(),
            port: 8080,
            admin_port: 9090,
            max_job_duration: "6h".to_owned(),
            autoscaler: Autoscaler::Karpenter,
            cpu_request: "5m".to_owned(),
            memory_request: "8Mi".to_owned(),
            memory_limit: "32Mi".to_owned(),
            run: false,
        }
    }

    /// Sets `setting` (an annotation name without the prefix, or the flag without `--`) to
    /// `value`; the error says what is wrong with the value.
    pub fn set(&mut self, setting: &str, value: &str) -> Result<(), String> {
        match setting {
            "image" => self.image = image(value)?,
            "label" => {
                kube_labels::validate_label_key(value).map_err(|problems| {
                    format!("{value:?} is not a label key: {}", problems.join("; "))
                })?;
                value.clone_into(&mut self.label);
            }
            "port" => self.port = port(value)?,
            "admin-port" => self.admin_port = port(value)?,
            "max-job-duration" => {
                durations::parse_flag(value, Bounds::up_to(MAX_JOB_LIFETIME))?;
                value.trim().clone_into(&mut self.max_job_duration);
            }
            "autoscaler" => self.autoscaler = Autoscaler::parse(value)?,
            "cpu-request" => self.cpu_request = checked_quantity(value)?,
            "memory-request" => self.memory_request = checked_quantity(value)?,
            "memory-limit" => self.memory_limit = checked_quantity(value)?,
            "run" => {
                self.run = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("{value:?} is neither \"true\" nor \"false\"")),
                }
            }
            _ => return Err(format!("unknown setting (known: {})", SETTINGS.join(", "))),
        }
        Ok(())
    }

    /// What is wrong with the combination of values, each problem a sentence.
    pub fn conflicts(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.port == self.admin_port {
            problems.push(format!(
                "the tracker's port and admin port are both {}",
                self.port
            ));
        }
        if let (Ok(request), Ok(limit)) = (
            quantity::parse(&self.memory_request),
            quantity::parse(&self.memory_limit),
        ) && request > limit
        {
            problems.push(format!(
                "the memory request {} is more than the memory limit {}",
                self.memory_request, self.memory_limit
            ));
        }
        problems
    }

    /// The defaults overridden by the pod's annotations under [`PREFIX`]; or every problem
    /// with them, each naming its annotation.
    pub fn for_pod(&self, annotations: &BTreeMap<String, String>) -> Result<Sidecar, Vec<String>> {
        let mut sidecar = self.clone();
        let mut problems = Vec::new();
        for (name, value) in annotations {
            let Some(setting) = name.strip_prefix(PREFIX) else {
                continue;
            };
            // The injector's own mark, and the opt-in written as an annotation too.
            if name == INJECTED_ANNOTATION || name == INJECT_LABEL {
                continue;
            }
            if !ANNOTATED.contains(&setting) {
                problems.push(format!(
                    "annotation {name}: unknown (known: {})",
                    ANNOTATED
                        .iter()
                        .map(|s| format!("{PREFIX}{s}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                continue;
            }
            if value.len() > MAX_VALUE {
                problems.push(format!(
                    "annotation {name}: longer than {MAX_VALUE} characters"
                ));
            } else if let Err(why) = sidecar.set(setting, value) {
                problems.push(format!("annotation {name}: {why}"));
            }
        }
        problems.extend(
            sidecar
                .conflicts()
                .into_iter()
                .map(|c| format!("annotations: {c}")),
        );
        if problems.is_empty() {
            Ok(sidecar)
        } else {
            Err(problems)
        }
    }
}

/// The longest annotation value read (every setting's valid values are far shorter), so that a
/// huge value is not echoed back in a denial.
const MAX_VALUE: usize = 256;

/// Every setting of [`Sidecar::set`].
pub const SETTINGS: &[&str] = &[
    "image",
    "label",
    "port",
    "admin-port",
    "max-job-duration",
    "autoscaler",
    "cpu-request",
    "memory-request",
    "memory-limit",
    "run",
];

/// The settings a pod may override by annotation. Not the image: the cluster's operator
/// chooses which program runs with the pods' service accounts.
pub const ANNOTATED: &[&str] = &[
    "label",
    "port",
    "admin-port",
    "max-job-duration",
    "autoscaler",
    "cpu-request",
    "memory-request",
    "memory-limit",
    "run",
];

fn port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{text:?} is not a port (1 to 65535)")),
    }
}

fn checked_quantity(text: &str) -> Result<String, String> {
    quantity::parse(text)?;
    Ok(text.to_owned())
}

/// The longest image reference accepted.
const MAX_IMAGE: usize = 512;

fn image(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_IMAGE {
        return Err(format!(
            "an image reference has 1 to {MAX_IMAGE} characters"
        ));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{text:?} is not an image reference (it holds a space)"
        ));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn defaults() -> Sidecar {
        Sidecar::defaults("tracker:test".to_owned())
    }

    #[test]
    fn annotations_override_the_defaults() {
        let sidecar = defaults()
            .for_pod(&annotations(&[
                ("pod-webhook-tracker.io/label", "example.com/busy"),
                ("pod-webhook-tracker.io/admin-port", "9191"),
                ("pod-webhook-tracker.io/max-job-duration", "2h"),
                ("pod-webhook-tracker.io/autoscaler", "cluster-autoscaler"),
                ("pod-webhook-tracker.io/memory-limit", "64Mi"),
                ("pod-webhook-tracker.io/run", "true"),
                ("other.io/annotation", "ignored"),
            ]))
            .expect("valid");
        assert_eq!(sidecar.label, "example.com/busy");
        assert_eq!(sidecar.admin_port, 9191);
        assert_eq!(sidecar.max_job_duration, "2h");
        assert_eq!(sidecar.autoscaler, Autoscaler::ClusterAutoscaler);
        assert_eq!(sidecar.memory_limit, "64Mi");
        assert!(sidecar.run);
        assert_eq!(
            sidecar.image, "tracker:test",
            "the image is not the pod's to choose"
        );
    }

    #[test]
    fn every_bad_annotation_is_named_with_its_problem() {
        let problems = defaults()
            .for_pod(&annotations(&[
                ("pod-webhook-tracker.io/admin-port", "0"),
                ("pod-webhook-tracker.io/max-job-duration", "10000y"),
                ("pod-webhook-tracker.io/label", "bad key!"),
                ("pod-webhook-tracker.io/memory-request", "64Mi"),
                ("pod-webhook-tracker.io/run", "yes"),
                ("pod-webhook-tracker.io/max-job-duraton", "1h"),
                ("pod-webhook-tracker.io/image", "evil:latest"),
            ]))
            .expect_err("refused");
        let text = problems.join("\n");
        for expected in [
            "annotation pod-webhook-tracker.io/admin-port: \"0\" is not a port",
            "annotation pod-webhook-tracker.io/max-job-duration:",
            "annotation pod-webhook-tracker.io/label: \"bad key!\" is not a label key",
            "annotation pod-webhook-tracker.io/run: \"yes\"",
            "annotation pod-webhook-tracker.io/max-job-duraton: unknown",
            "annotation pod-webhook-tracker.io/image: unknown",
            "the memory request 64Mi is more than the memory limit 32Mi",
        ] {
            assert!(text.contains(expected), "{expected} in:\n{text}");
        }
    }

    #[test]
    fn a_huge_annotation_value_is_refused_without_being_echoed() {
        let huge = "x".repeat(100_000);
        let problems = defaults()
            .for_pod(&annotations(&[("pod-webhook-tracker.io/label", &huge)]))
            .expect_err("refused");
        assert!(problems[0].contains("longer than 256"), "{problems:?}");
        assert!(problems[0].len() < 200, "the value is not repeated");
    }

    #[test]
    fn the_two_ports_must_differ() {
        let problems = defaults()
            .for_pod(&annotations(&[("pod-webhook-tracker.io/port", "9090")]))
            .expect_err("refused");
        assert!(
            problems.iter().any(|p| p.contains("both 9090")),
            "{problems:?}"
        );
    }

    proptest! {
        #[test]
        fn any_annotations_give_a_sidecar_or_named_problems(
            pairs in proptest::collection::btree_map(
                prop::sample::select(ANNOTATED.iter().chain(["nope", "image"].iter())
                    .map(|s| format!("{PREFIX}{s}")).collect::<Vec<_>>()),
                "\\PC{0,20}",
                0..6,
            )
        ) {
            match defaults().for_pod(&pairs) {
                Ok(sidecar) => prop_assert!(sidecar.conflicts().is_empty()),
                Err(problems) => {
                    prop_assert!(!problems.is_empty());
                    for problem in problems {
                        prop_assert!(problem.starts_with("annotation"), "{}", problem);
                    }
                }
            }
        }
    }
}
