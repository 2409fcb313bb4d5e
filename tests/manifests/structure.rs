//! Every field known to Kubernetes, every kustomization complete, every manifest in one.

#[allow(unused_imports)]
use crate::prelude::*;

#[test]
fn every_manifest_field_is_known_to_kubernetes() {
    let mut problems = Vec::new();
    for doc in &TREE.docs {
        match typed(&doc.value) {
            Err(error) => problems.push(format!("{}: {error}", doc.at())),
            Ok(object) => {
                let mut lost = Vec::new();
                lost_fields(&doc.value, &untyped(&object), "$", &mut lost);
                problems.extend(lost.into_iter().map(|lost| format!("{}: {lost}", doc.at())));
            }
        }
    }
    assert!(TREE.docs.len() >= 20, "only {} documents", TREE.docs.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
#[test]
fn every_resource_a_kustomization_lists_exists() {
    const KNOWN: [&str; 10] = [
        "apiVersion",
        "kind",
        "resources",
        "components",
        "namespace",
        "namePrefix",
        "labels",
        "commonAnnotations",
        "images",
        "patches",
    ];
    let mut problems = Vec::new();
    for kustomization in &TREE.kustomizations {
        let file = kustomization.file();
        let value = &kustomization.value;
        for key in value.as_object().expect("a mapping").keys() {
            if !KNOWN.contains(&key.as_str()) {
                problems.push(format!("{file}: field {key} is unknown or unexpected"));
            }
        }
        let kind = (value["apiVersion"].as_str(), value["kind"].as_str());
        if !matches!(
            kind,
            (
                Some("kustomize.config.k8s.io/v1beta1"),
                Some("Kustomization")
            ) | (Some("kustomize.config.k8s.io/v1alpha1"), Some("Component"))
        ) {
            problems.push(format!("{file}: not a Kustomization: {kind:?}"));
        }
        let entries = kustomization.entries("resources");
        if entries.is_empty() {
            problems.push(format!("{file}: lists no resources"));
        }
        for entry in entries.iter().chain(&kustomization.entries("components")) {
            let path = normalize(&kustomization.dir.join(entry));
            let on_disk = root().join(&path);
            let fine = if on_disk.is_dir() {
                on_disk.join("kustomization.yaml").is_file()
            } else {
                on_disk.is_file() && TREE.docs.iter().any(|doc| doc.file == path)
            };
            if !fine {
                problems.push(format!(
                    "{file}: {entry} is neither a manifest nor a directory with a kustomization.yaml"
                ));
            }
        }
    }
    for tree in [
        "manifests/sidecar",
        "manifests/standalone",
        "examples/fileflows",
    ] {
        if TREE.kustomization(Path::new(tree)).is_none() {
            problems.push(format!("{tree} cannot be applied with kubectl apply -k"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
#[test]
fn every_manifest_is_part_of_a_kustomization() {
    let mut listed = BTreeSet::new();
    for kustomization in &TREE.kustomizations {
        for entry in kustomization.entries("resources") {
            listed.insert(normalize(&kustomization.dir.join(entry)));
        }
    }
    let orphans: BTreeSet<_> = TREE
        .docs
        .iter()
        .filter(|doc| !listed.contains(&doc.file))
        .map(|doc| doc.file.display().to_string())
        .collect();
    assert!(
        orphans.is_empty(),
        "not applied by any kustomization: {orphans:?}"
    );
}
#[test]
fn manifests_leave_the_namespace_to_kubectl_or_kustomize() {
    // A namespace written into a manifest defeats `kubectl apply -n` and kustomize's
    // `namespace:`; only ClusterRoleBinding subjects may need one (kustomize fills it in).
    let fixed: Vec<_> = TREE
        .docs
        .iter()
        .filter(|doc| doc.value.pointer("/metadata/namespace").is_some())
        .map(Doc::at)
        .collect();
    assert!(fixed.is_empty(), "namespace hard-coded in {fixed:?}");
}
