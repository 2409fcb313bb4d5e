//! Every kustomization builds, with kustomize and kubectl alike; every rendered field is known to
//! Kubernetes; every manifest file is rendered by a kustomization; no manifest fixes its
//! namespace.

#[allow(unused_imports)]
use crate::prelude::*;

/// The kustomizations the documentation tells users to apply, at least (tests/docs_commands.rs
/// runs the documented commands themselves).
const APPLIED_BY_USERS: [&str; 11] = [
    "examples/fileflows",
    "manifests/injector",
    "manifests/injector/namespace-opt-in",
    "manifests/injector/self-signed",
    "manifests/policy",
    "manifests/sidecar",
    "manifests/standalone",
    "manifests/standalone/authenticated",
    "manifests/standalone/cluster-wide",
    "manifests/standalone/namespaced",
    "manifests/sidecar/rbac",
];

#[test]
fn every_kustomization_builds_with_kustomize_and_with_kubectl_alike() {
    let dirs = kustomizations();
    for dir in APPLIED_BY_USERS {
        assert!(
            dirs.iter().any(|found| found == Path::new(dir)),
            "{dir} is not a kustomization: {dirs:?}"
        );
    }
    let mut problems = Vec::new();
    for dir in &dirs {
        // kustomize v5.8.2 from its Go module, and the kustomize `kubectl apply -k` runs.
        match (kustomize_build(dir), kubectl_kustomize(dir)) {
            (Ok(standalone), Ok(in_kubectl)) => {
                if standalone != in_kubectl {
                    problems.push(format!(
                        "{}: kubectl kustomize renders otherwise than kustomize build",
                        dir.display()
                    ));
                }
                if documents(&standalone, &dir.display().to_string()).is_empty() {
                    problems.push(format!("{}: renders nothing", dir.display()));
                }
            }
            (standalone, in_kubectl) => {
                problems.extend(standalone.err());
                problems.extend(in_kubectl.err());
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_rendered_field_is_known_to_kubernetes() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for object in all_objects() {
        match typed(&object.value) {
            Err(error) => problems.push(format!("{}: {error}", object.at())),
            Ok(typed) => {
                let Some(again) = untyped(&typed) else {
                    // A custom kind: the API server checks it against its CRD (server.rs).
                    continue;
                };
                checked += 1;
                let mut lost = Vec::new();
                lost_fields(&object.value, &again, "$", &mut lost);
                problems.extend(
                    lost.into_iter()
                        .map(|lost| format!("{}: {lost}", object.at())),
                );
            }
        }
    }
    assert!(checked >= 60, "only {checked} objects");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every manifest file (not a kustomization) under `manifests/` and `examples/`, with its
/// documents.
fn manifest_files() -> Vec<(PathBuf, Vec<Value>)> {
    let mut files = Vec::new();
    for tree in crate::kustomize::TREES {
        yaml_files(Path::new(tree), &mut files);
    }
    files.sort();
    files
        .into_iter()
        .filter(|file| {
            file.file_name()
                .is_some_and(|name| name != "kustomization.yaml")
        })
        .map(|file| {
            let documents = parse_yaml(&file);
            (file, documents)
        })
        .collect()
}

#[test]
fn every_manifest_is_rendered_by_a_kustomization() {
    // Identified by API version, kind and name: kustomize may set the namespace and patch the
    // rest.
    let identity = |value: &Value| {
        (
            value["apiVersion"].as_str().unwrap_or_default().to_owned(),
            value["kind"].as_str().unwrap_or_default().to_owned(),
            value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    let rendered: BTreeSet<_> = all_objects()
        .map(|object| identity(&object.value))
        .collect();
    let files = manifest_files();
    assert!(files.len() >= 30, "only {} manifest files", files.len());
    let mut orphans = Vec::new();
    for (file, documents) in files {
        assert!(
            !documents.is_empty(),
            "{} holds no document",
            file.display()
        );
        for document in documents {
            if !rendered.contains(&identity(&document)) {
                orphans.push(format!("{}: {}", file.display(), kind_and_name(&document)));
            }
        }
    }
    assert!(
        orphans.is_empty(),
        "not applied by any kustomization: {orphans:?}"
    );
}

#[test]
fn manifests_leave_the_namespace_to_kubectl_or_kustomize() {
    // A namespace written into a manifest defeats `kubectl apply -n` and kustomize's
    // `namespace:`; only ClusterRoleBinding subjects may need one (kustomize fills it in).
    let fixed: Vec<_> = manifest_files()
        .into_iter()
        .filter(|(_, documents)| {
            documents
                .iter()
                .any(|document| document.pointer("/metadata/namespace").is_some())
        })
        .map(|(file, _)| file.display().to_string())
        .collect();
    assert!(fixed.is_empty(), "namespace hard-coded in {fixed:?}");
}
