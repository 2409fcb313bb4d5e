//! The manifest trees: every YAML document with its typed object, the kustomizations, and the
//! round trip that finds fields Kubernetes does not know.

#[allow(unused_imports)]
use crate::prelude::*;

/// The directories whose YAML files are Kubernetes manifests and kustomizations.
pub(crate) const TREES: [&str; 2] = ["manifests", "examples/fileflows"];

/// Every kind the manifests may hold, with its `k8s-openapi` type.
macro_rules! kinds {
    ($($kind:ident => $ty:ty),* $(,)?) => {
        /// A manifest document as its typed Kubernetes object.
        #[derive(Debug)]
        pub(crate) enum Object {
            $($kind(Box<$ty>),)*
        }

        /// Parses a document into the type its `kind` names.
        pub(crate) fn typed(value: &Value) -> Result<Object, String> {
            let kind = value
                .get("kind")
                .and_then(Value::as_str)
                .ok_or("the document has no kind")?;
            match kind {
                $(stringify!($kind) => serde_json::from_value::<$ty>(value.clone())
                    .map(|object| Object::$kind(Box::new(object)))
                    .map_err(|error| format!("not a valid {kind}: {error}")),)*
                other => Err(format!(
                    "kind {other} is not checked by this test: add it to kinds! in tests/manifests/tree.rs"
                )),
            }
        }

        /// The object as the Kubernetes API would receive it from `k8s-openapi`.
        pub(crate) fn untyped(object: &Object) -> Value {
            match object {
                $(Object::$kind(inner) => serde_json::to_value(inner).expect("serializes"),)*
            }
        }
    };
}

kinds! {
    Certificate => crate::cert_manager::Certificate,
    ClusterRole => ClusterRole,
    ClusterRoleBinding => ClusterRoleBinding,
    Deployment => Deployment,
    Issuer => crate::cert_manager::Issuer,
    Job => Job,
    MutatingWebhookConfiguration => k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
    Namespace => Namespace,
    NetworkPolicy => NetworkPolicy,
    PodDisruptionBudget => PodDisruptionBudget,
    Role => Role,
    RoleBinding => RoleBinding,
    Service => Service,
    ServiceAccount => ServiceAccount,
    ValidatingAdmissionPolicy => ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding => ValidatingAdmissionPolicyBinding,
}
/// One YAML document of a manifest file.
pub(crate) struct Doc {
    /// The file, relative to the package root.
    pub(crate) file: PathBuf,
    /// The document's position in its file, from 0.
    pub(crate) index: usize,
    pub(crate) value: Value,
}
impl Doc {
    pub(crate) fn at(&self) -> String {
        format!("{} (document {})", self.file.display(), self.index + 1)
    }

    pub(crate) fn object(&self) -> Object {
        typed(&self.value).unwrap_or_else(|error| panic!("{}: {error}", self.at()))
    }

    pub(crate) fn name(&self) -> String {
        let name = self.value.pointer("/metadata/name").and_then(Value::as_str);
        format!(
            "{} {}",
            self.value["kind"].as_str().unwrap_or("?"),
            name.unwrap_or("?")
        )
    }

    pub(crate) fn pod_template(&self) -> Option<PodTemplateSpec> {
        match self.object() {
            Object::Deployment(deployment) => Some(deployment.spec.template),
            Object::Job(job) => job.spec.map(|spec| spec.template),
            _ => None,
        }
    }
}
/// A `kustomization.yaml`.
pub(crate) struct Kustomization {
    /// Its directory, relative to the package root.
    pub(crate) dir: PathBuf,
    pub(crate) value: Value,
}
impl Kustomization {
    /// The entries of a list field (`resources`, `components`).
    pub(crate) fn entries(&self, field: &str) -> Vec<String> {
        match self.value.get(field) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .unwrap_or_else(|| panic!("{}: {field} holds {item}", self.file()))
                        .to_owned()
                })
                .collect(),
            Some(other) => panic!("{}: {field} must be a list, not {other}", self.file()),
        }
    }

    pub(crate) fn file(&self) -> String {
        self.dir.join("kustomization.yaml").display().to_string()
    }

    pub(crate) fn namespace(&self) -> Option<&str> {
        self.value.get("namespace").and_then(Value::as_str)
    }
}
/// Everything under [`TREES`], read once.
pub(crate) struct Tree {
    pub(crate) docs: Vec<Doc>,
    pub(crate) kustomizations: Vec<Kustomization>,
}
pub(crate) static TREE: LazyLock<Tree> = LazyLock::new(Tree::load);
impl Tree {
    pub(crate) fn load() -> Tree {
        let mut files = Vec::new();
        for tree in TREES {
            yaml_files(Path::new(tree), &mut files);
        }
        files.sort();
        let mut docs = Vec::new();
        let mut kustomizations = Vec::new();
        for file in files {
            let values = parse_yaml(&file);
            if file
                .file_name()
                .is_some_and(|name| name == "kustomization.yaml")
            {
                assert_eq!(values.len(), 1, "{}: one document", file.display());
                let dir = file.parent().expect("in a directory").to_path_buf();
                let value = values.into_iter().next().expect("one");
                kustomizations.push(Kustomization { dir, value });
            } else {
                assert!(!values.is_empty(), "{} holds no document", file.display());
                for (index, value) in values.into_iter().enumerate() {
                    docs.push(Doc {
                        file: file.clone(),
                        index,
                        value,
                    });
                }
            }
        }
        Tree {
            docs,
            kustomizations,
        }
    }

    pub(crate) fn kustomization(&self, dir: &Path) -> Option<&Kustomization> {
        self.kustomizations.iter().find(|k| k.dir == dir)
    }

    /// The documents `kubectl apply -k DIR` would apply, and the namespace kustomize sets.
    pub(crate) fn build(&self, dir: &Path) -> Build<'_> {
        let mut build = Build {
            docs: Vec::new(),
            namespace: None,
        };
        self.collect(dir, &mut build);
        build
    }

    pub(crate) fn collect<'a>(&'a self, dir: &Path, build: &mut Build<'a>) {
        let kustomization = self
            .kustomization(dir)
            .unwrap_or_else(|| panic!("{} has no kustomization.yaml", dir.display()));
        if build.namespace.is_none() {
            build.namespace = kustomization.namespace().map(str::to_owned);
        }
        for entry in kustomization.entries("resources") {
            let path = normalize(&dir.join(&entry));
            if self.kustomization(&path).is_some() {
                self.collect(&path, build);
            } else {
                build
                    .docs
                    .extend(self.docs.iter().filter(|doc| doc.file == path));
            }
        }
    }

    pub(crate) fn docs_of_kind(&self, kind: &str) -> impl Iterator<Item = &Doc> {
        self.docs
            .iter()
            .filter(move |doc| doc.value["kind"] == kind)
    }

    /// Every pod template, with the document that holds it.
    pub(crate) fn pod_templates(&self) -> Vec<(&Doc, PodTemplateSpec)> {
        self.docs
            .iter()
            .filter_map(|doc| doc.pod_template().map(|template| (doc, template)))
            .collect()
    }
}
/// What one kustomization directory applies.
pub(crate) struct Build<'a> {
    pub(crate) docs: Vec<&'a Doc>,
    pub(crate) namespace: Option<String>,
}
impl Build<'_> {
    pub(crate) fn names_of(&self, kind: &str) -> BTreeSet<String> {
        self.docs
            .iter()
            .filter(|doc| doc.value["kind"] == kind)
            .filter_map(|doc| doc.value.pointer("/metadata/name").and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    }
}
/// `a/b/../c` -> `a/c`, without touching the file system.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                assert!(out.pop(), "{} leaves the package", path.display());
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
/// Records every field or value of `original` that did not survive into `again`.
pub(crate) fn lost_fields(original: &Value, again: &Value, path: &str, lost: &mut Vec<String>) {
    match (original, again) {
        (Value::Object(before), Value::Object(after)) => {
            for (key, value) in before {
                let here = format!("{path}.{key}");
                match after.get(key) {
                    Some(kept) => lost_fields(value, kept, &here, lost),
                    None => lost.push(format!("{here} is unknown (dropped)")),
                }
            }
        }
        (Value::Array(before), Value::Array(after)) if before.len() == after.len() => {
            for (index, (value, kept)) in before.iter().zip(after).enumerate() {
                lost_fields(value, kept, &format!("{path}[{index}]"), lost);
            }
        }
        (before, after) if before == after => {}
        (before, after) => lost.push(format!("{path} was {before}, became {after}")),
    }
}
