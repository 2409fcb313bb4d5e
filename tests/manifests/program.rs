//! The program as the manifests run it: restricted, small, `serve` once with this image, and
//! every flag and variable known.

#[allow(unused_imports)]
use crate::prelude::*;

#[test]
fn every_tracker_container_runs_restricted_with_small_resources() {
    for (doc, template, container, _) in trackers().into_iter().chain(installers()) {
        let at = format!("{}: container {}", doc.name(), container.name);
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
        let pod_seccomp = spec_of(&template)
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
}
#[test]
fn every_tracker_runs_serve_once_with_the_image_of_this_version() {
    let image = format!("{IMAGE}:v{}", env!("CARGO_PKG_VERSION"));
    let trackers = trackers();
    assert!(
        trackers.len() >= 4,
        "expected three sidecars and the standalone service"
    );
    for (doc, _, container, _) in trackers {
        let at = format!("{}: container {}", doc.name(), container.name);
        assert_eq!(
            container.image.as_deref(),
            Some(image.as_str()),
            "{at}: the image tag"
        );
        let argv = argv(&container);
        assert_eq!(
            argv.first().map(String::as_str),
            Some("/pod-webhook-tracker"),
            "{at}: {argv:?}"
        );
        assert_eq!(
            argv.get(1).map(String::as_str),
            Some("serve"),
            "{at}: {argv:?}"
        );
        assert_eq!(
            argv.iter().filter(|word| *word == "serve").count(),
            1,
            "{at}: {argv:?}"
        );
    }
}
#[test]
fn every_flag_in_the_manifests_is_known_to_the_program() {
    let output = Command::new(env!("CARGO_BIN_EXE_pod-webhook-tracker"))
        .args(["serve", "--help"])
        .output()
        .expect("runs pod-webhook-tracker serve --help");
    assert!(output.status.success(), "serve --help: {output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    let known: BTreeSet<&str> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.starts_with("--"))
        .collect();
    for (doc, _, container, _) in trackers() {
        let at = format!("{}: container {}", doc.name(), container.name);
        for arg in args_of(&container)
            .iter()
            .filter(|arg| arg.starts_with("--"))
        {
            let (flag, _) = arg
                .split_once('=')
                .unwrap_or_else(|| panic!("{at}: {arg} is not in the form --flag=value"));
            assert!(
                known.contains(flag),
                "{at}: {flag} is not a flag of serve: {known:?}"
            );
        }
    }
}
#[test]
fn every_variable_an_argument_names_is_defined() {
    // The kubelet expands $(NAME) only for variables the container defines (in env, before
    // the reference); anything else is passed on literally.
    let mut expansions = 0;
    for (doc, template) in TREE.pod_templates() {
        let spec = spec_of(&template);
        for container in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let at = format!("{}: container {}", doc.name(), container.name);
            let mut defined = BTreeSet::new();
            for env in container.env.iter().flatten() {
                for name in references(env.value.as_deref().unwrap_or_default()) {
                    assert!(
                        defined.contains(name),
                        "{at}: {} uses $({name}) first",
                        env.name
                    );
                    expansions += 1;
                }
                defined.insert(env.name.as_str());
            }
            if !is_tracker(container) {
                // The job scripts are shell, where $(...) means something else.
                continue;
            }
            for word in container
                .command
                .iter()
                .flatten()
                .chain(container.args.iter().flatten())
            {
                for name in references(word) {
                    assert!(defined.contains(name), "{at}: $({name}) is not defined");
                    expansions += 1;
                }
            }
        }
    }
    assert!(expansions >= 2, "expected $(NAMESPACE) and $(POD_NAME)");
}
