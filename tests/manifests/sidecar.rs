//! Sidecars: native, on loopback, with the API token in the tracker only, and `run` installed
//! from this version.

#[allow(unused_imports)]
use crate::prelude::*;

#[test]
fn sidecars_are_native_and_agree_with_the_program_defaults() {
    for (doc, _, container, regular) in sidecars() {
        let at = format!("{}: container {}", doc.name(), container.name);
        assert!(!regular, "{at}: a sidecar must be an init container");
        assert_eq!(
            container.restart_policy.as_deref(),
            Some("Always"),
            "{at}: a native sidecar has restartPolicy Always, so the pod can complete"
        );
        assert_eq!(
            env_field_path(&container, "POD_NAME").as_deref(),
            Some("metadata.name"),
            "{at}: POD_NAME from the downward API"
        );
        assert_eq!(
            env_field_path(&container, "POD_NAMESPACE").as_deref(),
            Some("metadata.namespace"),
            "{at}: POD_NAMESPACE from the downward API"
        );
        let args = args_of(&container);
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
        let startup = probe_target(&container, container.startup_probe.as_ref(), "startupProbe");
        assert_eq!(
            startup,
            ("/readyz".to_owned(), ADMIN_PORT),
            "{at}: startupProbe"
        );
        assert_probes_on(&container, ADMIN_PORT, &at);
    }
}
#[test]
fn sidecar_jobs_call_the_tracker_on_loopback() {
    let mut jobs = 0;
    for (doc, template) in TREE.pod_templates() {
        if !doc.file.starts_with("manifests/sidecar") {
            continue;
        }
        let spec = spec_of(&template);
        assert!(
            spec.init_containers.iter().flatten().any(is_tracker),
            "{}: has no tracker sidecar",
            doc.name()
        );
        for container in &spec.containers {
            let script = script_of(container);
            let at = format!("{}: container {}", doc.name(), container.name);
            if let Some((_, flags)) = run_wrapper(container) {
                // `run` calls the sidecar and decrements on every way out itself.
                let url = flags.iter().find_map(|flag| flag.strip_prefix("--url="));
                assert!(
                    url.is_none_or(|url| url == format!("http://{SIDECAR_API}")),
                    "{at}: run calls {SIDECAR_API}: {flags:?}"
                );
                jobs += 1;
                continue;
            }
            assert!(
                script.contains(&format!("http://{SIDECAR_API}/")),
                "{at}: calls {SIDECAR_API}"
            );
            assert!(
                script.contains("increment") && script.contains("decrement"),
                "{at}"
            );
            assert!(script.contains("trap"), "{at}: decrements on every way out");
            assert!(
                !script.contains("pod_name="),
                "{at}: a sidecar counts its own pod"
            );
            jobs += 1;
        }
        if doc.value["kind"] == "Job" {
            let restart = spec.restart_policy.as_deref();
            assert_eq!(
                restart,
                Some("Never"),
                "{}: a Job's pods do not restart",
                doc.name()
            );
        }
        let grace = spec.termination_grace_period_seconds.unwrap_or(30);
        assert!(
            grace >= 300,
            "{}: {grace}s is too short for a job",
            doc.name()
        );
    }
    assert!(jobs >= 2, "expected the example Job and worker Deployment");
}
#[test]
fn only_the_tracker_container_holds_the_api_token() {
    for (doc, template, tracker, _) in sidecars() {
        let spec = spec_of(&template);
        let at = doc.name();
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
}
#[test]
fn wrapped_jobs_get_the_program_from_an_installer_of_this_version() {
    let image = format!("{IMAGE}:v{}", env!("CARGO_PKG_VERSION"));
    let mut wrapped = 0;
    for (doc, template) in TREE.pod_templates() {
        let spec = spec_of(&template);
        for container in &spec.containers {
            let Some((program, _)) = run_wrapper(container) else {
                continue;
            };
            let at = format!("{}: container {}", doc.name(), container.name);
            let dir = program
                .strip_suffix("/pod-webhook-tracker")
                .expect("a path ending in the program");
            let mount = container
                .volume_mounts
                .iter()
                .flatten()
                .find(|mount| mount.mount_path == dir)
                .unwrap_or_else(|| panic!("{at}: nothing mounted at {dir}"));
            assert_eq!(
                mount.read_only,
                Some(true),
                "{at}: the program is read-only"
            );
            let volume = spec
                .volumes
                .iter()
                .flatten()
                .find(|volume| volume.name == mount.name)
                .unwrap_or_else(|| panic!("{at}: no volume {}", mount.name));
            assert!(
                volume.empty_dir.is_some(),
                "{at}: {} is an emptyDir",
                mount.name
            );
            let init = spec.init_containers.iter().flatten();
            let installers: Vec<&Container> = init
                .filter(|init| is_installer(init) && mount_named(init, &mount.name).is_some())
                .collect();
            assert_eq!(
                installers.len(),
                1,
                "{at}: one installer fills {}",
                mount.name
            );
            let installer = installers[0];
            assert_eq!(
                installer.image.as_deref(),
                Some(image.as_str()),
                "{at}: the image tag"
            );
            assert_eq!(
                installer.restart_policy, None,
                "{at}: the installer runs to completion before the job"
            );
            let installer_mount = mount_named(installer, &mount.name).expect("mounted");
            assert_eq!(
                argv(installer),
                [
                    "/pod-webhook-tracker",
                    "install",
                    installer_mount.mount_path.as_str()
                ],
                "{at}: installs where the job finds it"
            );
            wrapped += 1;
        }
    }
    assert!(wrapped >= 1, "expected the example Job with run");
}
