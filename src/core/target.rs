//! Which pod a webhook call is about: the sidecar's own pod, or the pod a standalone caller names.
//!
//! Pure logic: validates query parameters against the mode, never calls the API.

use crate::core::pod::PodRef;
use crate::error::{Error, Result};

/// How the tracker finds the pod of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targeting {
    /// Injected into one pod: every call is about that pod.
    Sidecar {
        /// The pod the sidecar runs in.
        own: PodRef,
    },
    /// A central service: callers name the pod (`pod_name`) and optionally its namespace.
    Standalone {
        /// The namespace used when the caller names none (`--namespace`).
        default_namespace: String,
        /// If set, the only namespaces callers may name.
        allowed_namespaces: Option<Vec<String>>,
    },
}

impl Targeting {
    /// Resolves the pod of one call from its `pod_name` and `namespace` query parameters.
    pub fn resolve(&self, pod_name: Option<&str>, namespace: Option<&str>) -> Result<PodRef> {
        let pod_name = pod_name.filter(|name| !name.is_empty());
        let namespace = namespace.filter(|ns| !ns.is_empty());
        if let Some(name) = pod_name {
            validate_name("pod_name", name, kube_labels::validate_dns1123_subdomain)?;
        }
        if let Some(ns) = namespace {
            validate_name("namespace", ns, kube_labels::validate_dns1123_label)?;
        }
        match self {
            Targeting::Sidecar { own } => {
                if pod_name.is_some_and(|name| name != own.name)
                    || namespace.is_some_and(|ns| ns != own.namespace)
                {
                    let asked = PodRef::new(
                        namespace.unwrap_or(&own.namespace),
                        pod_name.unwrap_or(&own.name),
                    );
                    return Err(Error::NotAllowed(format!(
                        "pod {asked}: this sidecar only tracks its own pod {own}; nothing was written"
                    )));
                }
                Ok(own.clone())
            }
            Targeting::Standalone {
                default_namespace,
                allowed_namespaces,
            } => {
                let name = pod_name.ok_or_else(|| {
                    Error::BadRequest(
                        "missing query parameter pod_name (the pod to count jobs for)".to_owned(),
                    )
                })?;
                let namespace = namespace.unwrap_or(default_namespace);
                if let Some(allowed) = allowed_namespaces
                    && !allowed.iter().any(|ns| ns == namespace)
                {
                    return Err(Error::NotAllowed(format!(
                        "pod {namespace}/{name}: namespace {namespace} is not in --allowed-namespaces; nothing was written"
                    )));
                }
                Ok(PodRef::new(namespace, name))
            }
        }
    }
}

fn validate_name(
    parameter: &str,
    value: &str,
    rule: fn(&str) -> Result<(), Vec<String>>,
) -> Result<()> {
    rule(value).map_err(|problems| {
        Error::BadRequest(format!(
            "invalid {parameter} {value:?}: {}",
            problems.join("; ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standalone(allowed: Option<&[&str]>) -> Targeting {
        Targeting::Standalone {
            default_namespace: "jobs".to_owned(),
            allowed_namespaces: allowed
                .map(|list| list.iter().map(|ns| (*ns).to_owned()).collect()),
        }
    }

    fn sidecar() -> Targeting {
        Targeting::Sidecar {
            own: PodRef::new("jobs", "worker-0"),
        }
    }

    #[test]
    fn standalone_uses_the_named_pod_in_the_default_namespace() {
        assert_eq!(
            standalone(None).resolve(Some("worker-1"), None).ok(),
            Some(PodRef::new("jobs", "worker-1"))
        );
    }

    #[test]
    fn standalone_accepts_a_namespace_parameter() {
        assert_eq!(
            standalone(None)
                .resolve(Some("worker-1"), Some("batch"))
                .ok(),
            Some(PodRef::new("batch", "worker-1"))
        );
    }

    #[test]
    fn standalone_refuses_a_missing_or_empty_pod_name() {
        for name in [None, Some("")] {
            let err = standalone(None).resolve(name, None).expect_err("refused");
            assert!(
                matches!(&err, Error::BadRequest(m) if m.contains("pod_name")),
                "{err}"
            );
        }
    }

    #[test]
    fn an_invalid_pod_name_is_a_bad_request_naming_the_value() {
        for name in ["Bad_Name", "-x", "a/b", &"x".repeat(254)] {
            let err = standalone(None)
                .resolve(Some(name), None)
                .expect_err("refused");
            assert!(
                matches!(&err, Error::BadRequest(m) if m.contains("invalid pod_name")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_namespace_outside_the_allow_list_is_not_allowed() {
        let targeting = standalone(Some(&["jobs", "batch"]));
        assert!(targeting.resolve(Some("w"), Some("batch")).is_ok());
        assert!(targeting.resolve(Some("w"), None).is_ok());
        let err = targeting
            .resolve(Some("w"), Some("prod"))
            .expect_err("refused");
        assert!(
            matches!(&err, Error::NotAllowed(m) if m.contains("prod")),
            "{err}"
        );
    }

    #[test]
    fn the_sidecar_acts_on_its_own_pod_without_parameters() {
        assert_eq!(
            sidecar().resolve(None, None).ok(),
            Some(PodRef::new("jobs", "worker-0"))
        );
        assert_eq!(
            sidecar().resolve(Some("worker-0"), Some("jobs")).ok(),
            Some(PodRef::new("jobs", "worker-0"))
        );
    }

    #[test]
    fn the_sidecar_refuses_any_other_pod() {
        for (name, ns) in [(Some("worker-1"), None), (None, Some("other"))] {
            let err = sidecar().resolve(name, ns).expect_err("refused");
            assert!(
                matches!(&err, Error::NotAllowed(m) if m.contains("own pod jobs/worker-0")),
                "{err}"
            );
        }
    }
}
