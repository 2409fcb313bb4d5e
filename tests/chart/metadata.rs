//! The chart's identity: its version is the program's, its appVersion the release tag, its image
//! the release's image; and the real `helm lint --strict` finds nothing to say about any set of
//! values of the matrix.

use serde_json::Value;

use crate::helm::{CHART, MATRIX, NAMESPACE, RELEASE, args, container, helm, one, render, sets};
use crate::kustomize::repository;

/// The program's version, from Cargo.toml.
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn chart_yaml() -> Value {
    let text = std::fs::read_to_string(repository().join(CHART).join("Chart.yaml"))
        .expect("the chart's Chart.yaml");
    serde_saphyr::from_str(&text).expect("Chart.yaml is YAML")
}

/// The image the manifests run, the release's.
fn manifests_image() -> String {
    let deployment = &crate::yaml::parse_yaml(std::path::Path::new(
        "manifests/injector/base/deployment.yaml",
    ))[0];
    container(deployment, "injector")["image"]
        .as_str()
        .expect("an image")
        .to_owned()
}

#[test]
fn the_charts_version_is_cargos_and_its_app_version_the_release_tag() {
    let chart = chart_yaml();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "pod-webhook-tracker");
    assert_eq!(chart["version"], VERSION, "version: Cargo.toml's");
    assert_eq!(
        chart["appVersion"],
        format!("v{VERSION}"),
        "appVersion: the release tag, Cargo.toml's version with a v"
    );
    // Native sidecars are on by default from Kubernetes 1.29.
    assert_eq!(chart["kubeVersion"], ">=1.29.0-0");
}

#[test]
fn the_image_defaults_to_the_release_and_the_injected_tracker_follows_it() {
    let image = format!("ghcr.io/pod-webhook-tracker/pod-webhook-tracker:v{VERSION}");
    assert_eq!(
        manifests_image(),
        image,
        "manifests/ run the release's image"
    );
    let sidecar_image = |values: &[&str]| {
        let objects = render(RELEASE, NAMESPACE, values);
        let deployment = one(&objects, "Deployment", "pod-webhook-tracker-injector");
        let injector = container(deployment, "injector");
        let flag = args(injector)
            .into_iter()
            .find_map(|arg| arg.strip_prefix("--sidecar-image=").map(str::to_owned))
            .expect("--sidecar-image");
        (
            injector["image"].as_str().expect("an image").to_owned(),
            flag,
        )
    };
    assert_eq!(sidecar_image(&[]), (image.clone(), image.clone()));
    let mirror = "registry.example.com/mirror/pod-webhook-tracker";
    assert_eq!(
        sidecar_image(&[&format!("image.repository={mirror}")]),
        (
            format!("{mirror}:v{VERSION}"),
            format!("{mirror}:v{VERSION}")
        ),
        "a mirror of the image serves the injected trackers too"
    );
    assert_eq!(
        sidecar_image(&["image.tag=v9.9.9"]),
        (
            "ghcr.io/pod-webhook-tracker/pod-webhook-tracker:v9.9.9".to_owned(),
            "ghcr.io/pod-webhook-tracker/pod-webhook-tracker:v9.9.9".to_owned()
        )
    );
    assert_eq!(
        sidecar_image(&["injection.image=example.com/tracker:v1"]),
        (image, "example.com/tracker:v1".to_owned())
    );
}

#[test]
fn helm_lint_strict_passes_for_every_set_of_values() {
    let mut problems = Vec::new();
    for (what, values) in MATRIX {
        let output = helm()
            .args(["lint", "--strict", CHART, "-n", NAMESPACE])
            .args(sets(values))
            .output()
            .expect("helm runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // [INFO] is helm's advice (an icon); warnings and errors fail --strict.
        let complaints: Vec<&str> = said
            .lines()
            .filter(|line| line.contains("[WARNING]") || line.contains("[ERROR]"))
            .collect();
        if !output.status.success() || !complaints.is_empty() {
            problems.push(format!("{what}: helm lint --strict {values:?}:\n{said}"));
        }
        assert!(
            said.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{what}: {said}"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_packaged_chart_renders_as_the_folder_does() {
    // What a chart repository serves: `helm package`, with .helmignore applied.
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chart-package");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("a folder");
    let output = helm()
        .args(["package", CHART, "--destination"])
        .arg(&out)
        .output()
        .expect("helm runs");
    assert!(output.status.success(), "helm package: {output:?}");
    let package = out.join(format!("pod-webhook-tracker-{VERSION}.tgz"));
    assert!(package.is_file(), "{output:?}");
    let values = [
        "metrics.prometheusRule.enabled=true",
        "standalone.enabled=true",
    ];
    let from = |chart: &std::path::Path| {
        let output = helm()
            .args(["template", RELEASE])
            .arg(chart)
            .args(["-n", NAMESPACE])
            .args(sets(&values))
            .output()
            .expect("helm runs");
        assert!(
            output.status.success(),
            "helm template {}: {output:?}",
            chart.display()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // The alerts come from files/, which the package must carry.
    let packaged = from(&package);
    assert!(
        packaged.contains("PodWebhookTrackerInjectorDown"),
        "{packaged}"
    );
    assert_eq!(packaged, from(std::path::Path::new(CHART)));
    std::fs::remove_dir_all(&out).expect("removed");
}
