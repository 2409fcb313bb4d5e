//! The program as the manifests run it: restricted, small, `serve` once with this image, and
//! every flag and variable known.

#[allow(unused_imports)]
use crate::prelude::*;

#[test]
fn every_tracker_container_runs_restricted_with_small_resources() {
    let all = trackers()
        .into_iter()
        .chain(installers())
        .chain(injectors());
    for (doc, template, container, _) in all {
        let at = format!("{}: container {}", doc.at(), container.name);
        assert_restricted_and_small(&at, spec_of(&template), &container);
    }
}
#[test]
fn every_tracker_runs_serve_once_with_the_image_of_this_version() {
    let image = format!("{IMAGE}:v{}", env!("CARGO_PKG_VERSION"));
    let trackers = trackers();
    assert!(
        workloads(&trackers).len() >= 4,
        "expected three sidecars and the standalone service"
    );
    for (doc, _, container, _) in trackers {
        let at = format!("{}: container {}", doc.at(), container.name);
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
/// The flags `pod-webhook-tracker SUBCOMMAND --help` lists.
fn flags_of(subcommand: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_pod-webhook-tracker"))
        .args([subcommand, "--help"])
        .output()
        .expect("runs pod-webhook-tracker SUBCOMMAND --help");
    assert!(output.status.success(), "{subcommand} --help: {output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.starts_with("--"))
        .map(str::to_owned)
        .collect()
}
#[test]
fn every_flag_in_the_manifests_is_known_to_the_program() {
    let (serve, inject) = (flags_of("serve"), flags_of("inject"));
    let mut injectors = 0;
    // The rendered containers: the flags a kustomization adds with a patch (the authenticated
    // and self-signed variants) are among their arguments.
    let mut seen = BTreeMap::new();
    for (doc, template) in all_pod_templates() {
        let spec = spec_of(&template);
        let containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for container in containers.filter(|c| is_tracker(c) || is_injector(c)) {
            let at = format!("{}: container {}", doc.at(), container.name);
            let (subcommand, known) = if is_injector(container) {
                injectors += 1;
                ("inject", &inject)
            } else {
                ("serve", &serve)
            };
            for arg in args_of(container)
                .iter()
                .filter(|arg| arg.starts_with("--"))
            {
                let flag = arg.split_once('=').map_or(arg.as_str(), |(flag, _)| flag);
                assert!(
                    known.contains(flag),
                    "{at}: {flag} is not a flag of {subcommand}: {known:?}"
                );
                seen.entry(doc.kustomization.clone())
                    .or_insert_with(BTreeSet::new)
                    .insert(arg.clone());
            }
        }
    }
    assert!(injectors >= 1, "expected the injector's Deployment");
    for (dir, patched) in [
        ("manifests/injector/self-signed", "--self-signed"),
        (
            "manifests/standalone/authenticated",
            "--authenticate=serviceaccount",
        ),
        (
            "manifests/standalone/authenticated",
            "--tls-cert-file=/tls/tls.crt",
        ),
    ] {
        let args = seen.get(Path::new(dir)).cloned().unwrap_or_default();
        assert!(args.contains(patched), "{dir}: {patched} not in {args:?}");
    }
}
#[test]
fn every_variable_an_argument_names_is_defined() {
    // The kubelet expands $(NAME) only for variables the container defines (in env, before
    // the reference); anything else is passed on literally.
    let mut expansions = 0;
    for (doc, template) in all_pod_templates() {
        let spec = spec_of(&template);
        for container in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let at = format!("{}: container {}", doc.at(), container.name);
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
