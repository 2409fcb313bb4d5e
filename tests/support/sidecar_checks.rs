//! The checks every tracker sidecar must pass, whether a manifest spells it out by hand or the
//! injector added it: native, on loopback with its probes on the admin port, restricted and
//! small, and the only container that holds the API token. Shared by the manifests tests and
//! the injector's black-box tests.
#![allow(dead_code)] // each test crate uses a different part of it

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Where a sidecar serves the counting API (loopback only).
pub(crate) const SIDECAR_API: &str = "127.0.0.1:8080";
/// The admin listener's flag and port (probes, `/wait-idle`).
pub(crate) const ADMIN_FLAG: &str = "--admin-address=0.0.0.0:9090";
pub(crate) const ADMIN_PORT: i32 = 9090;
/// Where a container's service-account token is expected.
pub(crate) const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The container port a probe, Service or NetworkPolicy port means.
pub(crate) fn container_port(container: &Container, port: &IntOrString) -> Option<i32> {
    match port {
        IntOrString::Int(number) => Some(*number),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|port| port.name.as_deref() == Some(name.as_str()))
            .map(|port| port.container_port),
    }
}
/// The path and container port of an HTTP probe.
pub(crate) fn probe_target(
    container: &Container,
    probe: Option<&Probe>,
    which: &str,
) -> (String, i32) {
    let name = &container.name;
    let http = probe
        .unwrap_or_else(|| panic!("container {name} has no {which}"))
        .http_get
        .as_ref()
        .unwrap_or_else(|| panic!("container {name}: the {which} is not an HTTP probe"));
    let port = container_port(container, &http.port)
        .unwrap_or_else(|| panic!("container {name}: the {which} names no container port"));
    (http.path.clone().unwrap_or_default(), port)
}
pub(crate) fn env_field_path(container: &Container, variable: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|env| env.name == variable)?
        .value_from
        .as_ref()?
        .field_ref
        .as_ref()
        .map(|field| field.field_path.clone())
}
/// The container's readiness probe asks `/readyz` and its liveness probe `/healthz`, on `port`.
pub(crate) fn assert_probes_on(container: &Container, port: i32, at: &str) {
    let ready = probe_target(
        container,
        container.readiness_probe.as_ref(),
        "readinessProbe",
    );
    let live = probe_target(
        container,
        container.liveness_probe.as_ref(),
        "livenessProbe",
    );
    assert_eq!(ready, ("/readyz".to_owned(), port), "{at}: readinessProbe");
    assert_eq!(live, ("/healthz".to_owned(), port), "{at}: livenessProbe");
}

/// The container's arguments.
pub(crate) fn args_of(container: &Container) -> Vec<String> {
    container.args.clone().unwrap_or_default()
}

/// A native sidecar that counts its own pod, with the program's defaults.
pub(crate) fn assert_native_sidecar(at: &str, container: &Container) {
    assert_eq!(
        container.restart_policy.as_deref(),
        Some("Always"),
        "{at}: a native sidecar has restartPolicy Always, so the pod can complete"
    );
    assert_eq!(
        env_field_path(container, "POD_NAME").as_deref(),
        Some("metadata.name"),
        "{at}: POD_NAME from the downward API"
    );
    assert_eq!(
        env_field_path(container, "POD_NAMESPACE").as_deref(),
        Some("metadata.namespace"),
        "{at}: POD_NAMESPACE from the downward API"
    );
    let args = args_of(container);
    assert!(
        args.iter().any(|arg| arg == ADMIN_FLAG),
        "{at}: {ADMIN_FLAG} in {args:?}"
    );
    assert!(
        !args.iter().any(|arg| arg.starts_with("--address")),
        "{at}: the counting API must stay on its default {SIDECAR_API}"
    );
    let ports: Vec<i32> = container
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [ADMIN_PORT], "{at}: only the admin port is exposed");
    let startup = probe_target(container, container.startup_probe.as_ref(), "startupProbe");
    assert_eq!(
        startup,
        ("/readyz".to_owned(), ADMIN_PORT),
        "{at}: startupProbe"
    );
    assert_probes_on(container, ADMIN_PORT, at);
}

/// The pod turns the automatic token off and mounts a projected token into the tracker only.
pub(crate) fn assert_token_in_tracker_only(at: &str, spec: &PodSpec, tracker: &Container) {
    assert_eq!(
        spec.automount_service_account_token,
        Some(false),
        "{at}: the automatic token would reach every container"
    );
    let mount = tracker
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| mount.mount_path == TOKEN_DIR)
        .unwrap_or_else(|| panic!("{at}: the tracker has no token at {TOKEN_DIR}"));
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == mount.name)
        .unwrap_or_else(|| panic!("{at}: no volume {}", mount.name));
    let sources = volume.projected.as_ref().and_then(|p| p.sources.clone());
    let sources = sources.unwrap_or_default();
    let token = sources
        .iter()
        .find_map(|s| s.service_account_token.as_ref());
    assert_eq!(
        token.map(|t| t.path.as_str()),
        Some("token"),
        "{at}: projected token"
    );
    let files: BTreeSet<String> = sources
        .iter()
        .flat_map(|source| {
            let from_config = source
                .config_map
                .iter()
                .flat_map(|c| c.items.iter().flatten());
            let from_api = source
                .downward_api
                .iter()
                .flat_map(|d| d.items.iter().flatten());
            from_config
                .map(|item| item.path.clone())
                .chain(from_api.map(|item| item.path.clone()))
        })
        .collect();
    assert!(
        files.contains("ca.crt") && files.contains("namespace"),
        "{at}: {files:?}"
    );
    let others = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|container| container.name != tracker.name);
    for other in others {
        let mounts = other.volume_mounts.iter().flatten();
        assert!(
            !mounts
                .into_iter()
                .any(|m| m.name == mount.name || m.mount_path == TOKEN_DIR),
            "{at}: container {} can read the tracker's token",
            other.name
        );
    }
}

/// The restricted Pod Security Standard, requests and a memory limit, no CPU limit.
pub(crate) fn assert_restricted_and_small(at: &str, spec: &PodSpec, container: &Container) {
    let context = container
        .security_context
        .clone()
        .expect("a securityContext");
    assert_eq!(context.run_as_non_root, Some(true), "{at}: runAsNonRoot");
    assert_eq!(context.run_as_user, Some(65532), "{at}: runAsUser");
    assert_eq!(
        context.read_only_root_filesystem,
        Some(true),
        "{at}: readOnlyRootFilesystem"
    );
    assert_eq!(
        context.allow_privilege_escalation,
        Some(false),
        "{at}: allowPrivilegeEscalation"
    );
    assert_eq!(context.privileged, None, "{at}: privileged");
    let drop = context
        .capabilities
        .and_then(|c| c.drop)
        .unwrap_or_default();
    assert_eq!(drop, ["ALL"], "{at}: capabilities drop ALL");
    let pod_seccomp = spec
        .security_context
        .as_ref()
        .and_then(|c| c.seccomp_profile.clone());
    let seccomp = context.seccomp_profile.or(pod_seccomp).map(|p| p.type_);
    assert_eq!(
        seccomp.as_deref(),
        Some("RuntimeDefault"),
        "{at}: seccompProfile"
    );

    let resources = container.resources.clone().expect("resources");
    let requests = resources.requests.unwrap_or_default();
    let limits = resources.limits.unwrap_or_default();
    for (name, map) in [("cpu request", &requests), ("memory request", &requests)] {
        let key = name.split(' ').next().expect("a resource");
        assert!(map.contains_key(key), "{at}: a {name}");
    }
    assert!(limits.contains_key("memory"), "{at}: a memory limit");
    assert!(
        !limits.contains_key("cpu"),
        "{at}: no cpu limit (throttles the API calls)"
    );
}
