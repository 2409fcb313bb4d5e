//! What each kustomization renders, as the real kustomize builds it: every object with its
//! typed Kubernetes form, and the round trip that finds fields Kubernetes does not know.

#[allow(unused_imports)]
use crate::prelude::*;

/// Every built-in kind the manifests may hold, with its `k8s-openapi` type; objects of custom
/// kinds (cert-manager's) are checked by the API server, with their real CRDs (`server`).
macro_rules! kinds {
    ($($kind:ident => $ty:ty),* $(,)?) => {
        /// A rendered object as its typed Kubernetes object.
        #[derive(Debug)]
        pub(crate) enum Object {
            $($kind(Box<$ty>),)*
            /// A kind of a CustomResourceDefinition's.
            Custom,
        }

        /// Parses an object into the type its `kind` names.
        pub(crate) fn typed(value: &Value) -> Result<Object, String> {
            let kind = value
                .get("kind")
                .and_then(Value::as_str)
                .ok_or("the object has no kind")?;
            let api_version = value["apiVersion"].as_str().unwrap_or_default();
            if !crds::is_built_in(api_version) {
                return Ok(Object::Custom);
            }
            match kind {
                $(stringify!($kind) => serde_json::from_value::<$ty>(value.clone())
                    .map(|object| Object::$kind(Box::new(object)))
                    .map_err(|error| format!("not a valid {kind}: {error}")),)*
                other => Err(format!(
                    "kind {other} is not checked by this test: add it to kinds! in tests/manifests/rendered.rs"
                )),
            }
        }

        /// The object as the Kubernetes API would receive it from `k8s-openapi`.
        pub(crate) fn untyped(object: &Object) -> Option<Value> {
            match object {
                $(Object::$kind(inner) => Some(serde_json::to_value(inner).expect("serializes")),)*
                Object::Custom => None,
            }
        }
    };
}

kinds! {
    ClusterRole => ClusterRole,
    ClusterRoleBinding => ClusterRoleBinding,
    // The recipes' scripts, from configMapGenerator (examples/actions-runner-controller,
    // examples/gitlab-runner).
    ConfigMap => k8s_openapi::api::core::v1::ConfigMap,
    Deployment => Deployment,
    Job => Job,
    MutatingWebhookConfiguration => MutatingWebhookConfiguration,
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

/// One object of a kustomization's output.
pub(crate) struct Rendered {
    /// The kustomization that rendered it, relative to the root.
    pub(crate) kustomization: PathBuf,
    pub(crate) value: Value,
}
impl Rendered {
    /// `kustomization: Kind [namespace/]name`, for messages.
    pub(crate) fn at(&self) -> String {
        format!(
            "{}: {}",
            self.kustomization.display(),
            kind_and_name(&self.value)
        )
    }

    pub(crate) fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    pub(crate) fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub(crate) fn namespace(&self) -> Option<&str> {
        self.value["metadata"]["namespace"].as_str()
    }

    pub(crate) fn object(&self) -> Object {
        typed(&self.value).unwrap_or_else(|error| panic!("{}: {error}", self.at()))
    }

    pub(crate) fn pod_template(&self) -> Option<PodTemplateSpec> {
        match self.object() {
            Object::Deployment(deployment) => Some(deployment.spec.template),
            Object::Job(job) => job.spec.map(|spec| spec.template),
            _ => None,
        }
    }
}

/// What one kustomization renders.
pub(crate) struct Build {
    /// Its folder, relative to the root.
    pub(crate) dir: PathBuf,
    pub(crate) objects: Vec<Rendered>,
}
impl Build {
    fn of(dir: PathBuf) -> Build {
        let text = kustomize_build(&dir).unwrap_or_else(|error| panic!("{error}"));
        let objects = documents(&text, &format!("kustomize build {}", dir.display()))
            .into_iter()
            .map(|value| Rendered {
                kustomization: dir.clone(),
                value,
            })
            .collect();
        Build { dir, objects }
    }

    /// The values, as `kubectl apply` sends them.
    pub(crate) fn values(&self) -> Vec<Value> {
        self.objects.iter().map(|o| o.value.clone()).collect()
    }

    pub(crate) fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Rendered> {
        self.objects
            .iter()
            .filter(move |object| object.kind() == kind)
    }

    pub(crate) fn names_of(&self, kind: &str) -> BTreeSet<String> {
        self.of_kind(kind).map(|o| o.name().to_owned()).collect()
    }

    /// The one object of this kind and name.
    pub(crate) fn one(&self, kind: &str, name: &str) -> &Rendered {
        let found: Vec<&Rendered> = self
            .objects
            .iter()
            .filter(|o| o.kind() == kind && o.name() == name)
            .collect();
        assert_eq!(found.len(), 1, "{}: {kind} {name}", self.dir.display());
        found[0]
    }

    /// Every pod template, with the object that holds it.
    pub(crate) fn pod_templates(&self) -> Vec<(&Rendered, PodTemplateSpec)> {
        self.objects
            .iter()
            .filter_map(|object| object.pod_template().map(|template| (object, template)))
            .collect()
    }

    /// The selectors of its budgets, with their names.
    pub(crate) fn budgets(&self) -> Vec<(String, LabelSelector)> {
        self.of_kind("PodDisruptionBudget")
            .filter_map(|object| match object.object() {
                Object::PodDisruptionBudget(pdb) => {
                    Some((object.name().to_owned(), pdb.spec?.selector?))
                }
                _ => None,
            })
            .collect()
    }
}

/// Every kustomization under `manifests/` and `examples/`, built once.
pub(crate) static BUILDS: LazyLock<Vec<Build>> =
    LazyLock::new(|| kustomizations().into_iter().map(Build::of).collect());

/// The build of the kustomization in `dir`.
pub(crate) fn build(dir: impl AsRef<Path>) -> &'static Build {
    let dir = dir.as_ref();
    BUILDS
        .iter()
        .find(|build| build.dir == dir)
        .unwrap_or_else(|| panic!("{} holds no kustomization", dir.display()))
}

/// Every object of every build (an object two kustomizations render is there twice).
pub(crate) fn all_objects() -> impl Iterator<Item = &'static Rendered> {
    BUILDS.iter().flat_map(|build| build.objects.iter())
}

/// Every pod template of every build.
pub(crate) fn all_pod_templates() -> Vec<(&'static Rendered, PodTemplateSpec)> {
    BUILDS.iter().flat_map(Build::pod_templates).collect()
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
