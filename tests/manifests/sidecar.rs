//! Sidecars: native, on loopback, with the API token in the tracker only, and `run` installed
//! from this version.

#[allow(unused_imports)]
use crate::prelude::*;

#[test]
fn sidecars_are_native_and_agree_with_the_program_defaults() {
    for (doc, _, container, regular) in sidecars() {
        let at = format!("{}: container {}", doc.at(), container.name);
        assert!(!regular, "{at}: a sidecar must be an init container");
        assert_native_sidecar(&at, &container);
    }
}
#[test]
fn sidecar_jobs_call_the_tracker_on_loopback() {
    let mut jobs = 0;
    for (doc, template) in build("manifests/sidecar").pod_templates() {
        let spec = spec_of(&template);
        assert!(
            spec.init_containers.iter().flatten().any(is_tracker),
            "{}: has no tracker sidecar",
            doc.at()
        );
        for container in &spec.containers {
            let script = script_of(container);
            let at = format!("{}: container {}", doc.at(), container.name);
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
        if doc.kind() == "Job" {
            let restart = spec.restart_policy.as_deref();
            assert_eq!(
                restart,
                Some("Never"),
                "{}: a Job's pods do not restart",
                doc.at()
            );
        }
        let grace = spec.termination_grace_period_seconds.unwrap_or(30);
        assert!(
            grace >= 300,
            "{}: {grace}s is too short for a job",
            doc.at()
        );
    }
    assert!(jobs >= 2, "expected the example Job and worker Deployment");
}
#[test]
fn only_the_tracker_container_holds_the_api_token() {
    for (doc, template, tracker, _) in sidecars() {
        assert_token_in_tracker_only(&doc.at(), spec_of(&template), &tracker);
    }
}
#[test]
fn wrapped_jobs_get_the_program_from_an_installer_of_this_version() {
    let image = format!("{IMAGE}:v{}", env!("CARGO_PKG_VERSION"));
    let mut wrapped = 0;
    for (doc, template) in all_pod_templates() {
        let spec = spec_of(&template);
        for container in &spec.containers {
            let Some((program, _)) = run_wrapper(container) else {
                continue;
            };
            let at = format!("{}: container {}", doc.at(), container.name);
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
