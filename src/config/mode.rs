//! Sidecar or standalone: which mode the flags and the downward-API environment choose, and
//! which pods each may touch.

use crate::cli::ServeArgs;
use crate::core::pod::PodRef;
use crate::core::target::Targeting;
use crate::error::{Error, Result};

use super::flags::invalid;
use super::{Environment, SERVICE_ACCOUNT_NAMESPACE_FILE};

/// Sidecar when the downward API names the pod (and `--standalone` is off); otherwise the
/// original's central service, so that its deployments keep working without a new flag.
pub(super) fn targeting(args: &ServeArgs, env: &Environment) -> Result<(Targeting, String)> {
    let default_namespace = args
        .namespace
        .clone()
        .or_else(|| args.kube_namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    check_namespace("--namespace", &default_namespace)?;
    let allowed: Vec<String> = args
        .allowed_namespaces
        .iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|ns| !ns.is_empty())
        .map(str::to_owned)
        .collect();
    for ns in &allowed {
        check_namespace("--allowed-namespaces", ns)?;
    }
    let standalone = |reason: &str| {
        let allowed_namespaces = (!allowed.is_empty()).then(|| allowed.clone());
        (
            Targeting::Standalone {
                default_namespace: default_namespace.clone(),
                allowed_namespaces,
            },
            reason.to_owned(),
        )
    };
    if args.standalone {
        return Ok(standalone("standalone mode: --standalone is set"));
    }
    let Some(name) = env.pod_name.clone() else {
        return Ok(standalone(
            "standalone mode: POD_NAME is not set, so callers name the pod with ?pod_name=",
        ));
    };
    if let Err(problems) = kube_labels::validate_dns1123_subdomain(&name) {
        return Err(invalid(
            "POD_NAME (environment)",
            &name,
            &problems.join("; "),
        ));
    }
    let (namespace, source) = match (&env.pod_namespace, &env.service_account_namespace) {
        (Some(ns), _) => (ns.clone(), "POD_NAMESPACE"),
        (None, Some(ns)) => (ns.clone(), SERVICE_ACCOUNT_NAMESPACE_FILE),
        (None, None) => {
            return Err(Error::Config(format!(
                "POD_NAME is set ({name}) but the pod's namespace is unknown: set POD_NAMESPACE from the downward \
                 API (fieldRef metadata.namespace), mount the service account token, or pass --standalone"
            )));
        }
    };
    check_namespace(source, &namespace)?;
    let own = PodRef::new(namespace, name);
    let reason = format!(
        "sidecar mode: tracking own pod {own} (name from POD_NAME, namespace from {source})"
    );
    Ok((Targeting::Sidecar { own }, reason))
}

pub(super) fn check_namespace(source: &str, ns: &str) -> Result<()> {
    kube_labels::validate_dns1123_label(ns)
        .map_err(|problems| invalid(source, ns, &problems.join("; ")))
}
