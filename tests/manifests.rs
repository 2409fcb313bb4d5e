//! Checks the Kubernetes manifests under `manifests/` and `examples/fileflows/`.
//!
//! Every YAML document is parsed into its `k8s-openapi` type by `kind`. Those deserializers
//! skip unknown fields silently, so each document also makes a round trip (YAML -> JSON value
//! -> typed -> JSON value) in which every field of the original must survive: a misspelled or
//! misplaced field is reported with its JSON path. The kustomizations must list only files
//! and directories that exist, and every manifest must be part of one.
//!
//! The remaining tests hold the manifests to the program's defaults: a sidecar tracker counts
//! its own pod (POD_NAME and POD_NAMESPACE from the downward API), serves the counting API on
//! 127.0.0.1:8080 and its probes on the admin listener 0.0.0.0:9090; the standalone service
//! serves everything on 8080; the trackers may only get and patch pods; and busy pods, those
//! carrying the `active-jobs` label, are held by a budget that can never be met.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, Namespace, PodSpec, PodTemplateSpec, Probe, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

/// The directories whose YAML files are Kubernetes manifests and kustomizations.
const TREES: [&str; 2] = ["manifests", "examples/fileflows"];
/// The tracker's container image, without the tag.
const IMAGE: &str = "ghcr.io/pod-webhook-tracker/pod-webhook-tracker";
/// The label that holds the count (the program's default `--label`).
const LABEL: &str = "active-jobs";
/// Where a sidecar serves the counting API (loopback only) and its probes.
const SIDECAR_API: &str = "127.0.0.1:8080";
const ADMIN_FLAG: &str = "--admin-address=0.0.0.0:9090";
const ADMIN_PORT: i32 = 9090;
/// Where the standalone service serves the counting API and its probes.
const STANDALONE_PORT: i32 = 8080;
/// Where Kubernetes mounts a pod's service account token.
const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Every kind the manifests may hold, with its `k8s-openapi` type.
macro_rules! kinds {
    ($($kind:ident => $ty:ty),* $(,)?) => {
        /// A manifest document as its typed Kubernetes object.
        #[derive(Debug)]
        enum Object {
            $($kind(Box<$ty>),)*
        }

        /// Parses a document into the type its `kind` names.
        fn typed(value: &Value) -> Result<Object, String> {
            let kind = value
                .get("kind")
                .and_then(Value::as_str)
                .ok_or("the document has no kind")?;
            match kind {
                $(stringify!($kind) => serde_json::from_value::<$ty>(value.clone())
                    .map(|object| Object::$kind(Box::new(object)))
                    .map_err(|error| format!("not a valid {kind}: {error}")),)*
                other => Err(format!(
                    "kind {other} is not checked by this test: add it to kinds! in tests/manifests.rs"
                )),
            }
        }

        /// The object as the Kubernetes API would receive it from `k8s-openapi`.
        fn untyped(object: &Object) -> Value {
            match object {
                $(Object::$kind(inner) => serde_json::to_value(inner).expect("serializes"),)*
            }
        }
    };
}

kinds! {
    ClusterRole => ClusterRole,
    ClusterRoleBinding => ClusterRoleBinding,
    Deployment => Deployment,
    Job => Job,
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
struct Doc {
    /// The file, relative to the package root.
    file: PathBuf,
    /// The document's position in its file, from 0.
    index: usize,
    value: Value,
}

impl Doc {
    fn at(&self) -> String {
        format!("{} (document {})", self.file.display(), self.index + 1)
    }

    fn object(&self) -> Object {
        typed(&self.value).unwrap_or_else(|error| panic!("{}: {error}", self.at()))
    }

    fn name(&self) -> String {
        let name = self.value.pointer("/metadata/name").and_then(Value::as_str);
        format!(
            "{} {}",
            self.value["kind"].as_str().unwrap_or("?"),
            name.unwrap_or("?")
        )
    }

    fn pod_template(&self) -> Option<PodTemplateSpec> {
        match self.object() {
            Object::Deployment(deployment) => Some(deployment.spec.template),
            Object::Job(job) => job.spec.map(|spec| spec.template),
            _ => None,
        }
    }
}

/// A `kustomization.yaml`.
struct Kustomization {
    /// Its directory, relative to the package root.
    dir: PathBuf,
    value: Value,
}

impl Kustomization {
    /// The entries of a list field (`resources`, `components`).
    fn entries(&self, field: &str) -> Vec<String> {
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

    fn file(&self) -> String {
        self.dir.join("kustomization.yaml").display().to_string()
    }

    fn namespace(&self) -> Option<&str> {
        self.value.get("namespace").and_then(Value::as_str)
    }
}

/// Everything under [`TREES`], read once.
struct Tree {
    docs: Vec<Doc>,
    kustomizations: Vec<Kustomization>,
}

static TREE: LazyLock<Tree> = LazyLock::new(Tree::load);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let path = dir.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|ext| ext.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

fn parse_yaml(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(file))
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", file.display()));
    // kubectl reads YAML 1.1, where 0644 is octal; duplicate keys are errors (the default).
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    serde_saphyr::from_multiple_with_options::<Value>(&text, options)
        .unwrap_or_else(|error| panic!("{} is not valid YAML: {error}", file.display()))
}

impl Tree {
    fn load() -> Tree {
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

    fn kustomization(&self, dir: &Path) -> Option<&Kustomization> {
        self.kustomizations.iter().find(|k| k.dir == dir)
    }

    /// The documents `kubectl apply -k DIR` would apply, and the namespace kustomize sets.
    fn build(&self, dir: &Path) -> Build<'_> {
        let mut build = Build {
            docs: Vec::new(),
            namespace: None,
        };
        self.collect(dir, &mut build);
        build
    }

    fn collect<'a>(&'a self, dir: &Path, build: &mut Build<'a>) {
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

    fn docs_of_kind(&self, kind: &str) -> impl Iterator<Item = &Doc> {
        self.docs
            .iter()
            .filter(move |doc| doc.value["kind"] == kind)
    }

    /// Every pod template, with the document that holds it.
    fn pod_templates(&self) -> Vec<(&Doc, PodTemplateSpec)> {
        self.docs
            .iter()
            .filter_map(|doc| doc.pod_template().map(|template| (doc, template)))
            .collect()
    }
}

/// What one kustomization directory applies.
struct Build<'a> {
    docs: Vec<&'a Doc>,
    namespace: Option<String>,
}

impl Build<'_> {
    fn names_of(&self, kind: &str) -> BTreeSet<String> {
        self.docs
            .iter()
            .filter(|doc| doc.value["kind"] == kind)
            .filter_map(|doc| doc.value.pointer("/metadata/name").and_then(Value::as_str))
            .map(str::to_owned)
            .collect()
    }
}

/// `a/b/../c` -> `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
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
fn lost_fields(original: &Value, again: &Value, path: &str, lost: &mut Vec<String>) {
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

/// Whether a label selector selects a pod with these labels.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions_match = selector.match_expressions.iter().flatten().all(|expr| {
        let values = expr.values.clone().unwrap_or_default();
        let label = labels.get(&expr.key);
        match expr.operator.as_str() {
            "In" => label.is_some_and(|label| values.contains(label)),
            "NotIn" => label.is_none_or(|label| !values.contains(label)),
            "Exists" => label.is_some(),
            "DoesNotExist" => label.is_none(),
            other => panic!("unknown selector operator {other}"),
        }
    });
    labels_match && expressions_match
}

fn labels_of(template: &PodTemplateSpec) -> BTreeMap<String, String> {
    template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default()
}

fn spec_of(template: &PodTemplateSpec) -> &PodSpec {
    template.spec.as_ref().expect("a pod template has a spec")
}

fn is_tracker(container: &Container) -> bool {
    has_tracker_image(container) && !is_installer(container)
}

fn has_tracker_image(container: &Container) -> bool {
    container
        .image
        .as_deref()
        .is_some_and(|image| image.starts_with(&format!("{IMAGE}:")))
}

/// An init container of the tracker's image that copies the program into a volume for `run`
/// (`install DIR`), instead of serving.
fn is_installer(container: &Container) -> bool {
    has_tracker_image(container)
        && args_of(container).first().map(String::as_str) == Some("install")
}

/// A job container whose command `pod-webhook-tracker run` wraps: the program, `run`, flags,
/// `--`, then the command. Returns the program's path and `run`'s flags.
fn run_wrapper(container: &Container) -> Option<(String, Vec<String>)> {
    let mut words = container.command.clone().unwrap_or_default();
    words.extend(args_of(container));
    let program = words.first()?;
    if !program.ends_with("/pod-webhook-tracker") || words.get(1).map(String::as_str) != Some("run")
    {
        return None;
    }
    let end = words.iter().position(|word| word == "--")?;
    Some((program.clone(), words[2..end].to_vec()))
}

fn args_of(container: &Container) -> Vec<String> {
    container.args.clone().unwrap_or_default()
}

fn is_standalone(container: &Container) -> bool {
    args_of(container)
        .iter()
        .any(|arg| arg == "--standalone=true")
}

/// Every tracker container with the document and pod template that hold it, and whether it is
/// a regular container (false: an init container).
fn trackers() -> Vec<(&'static Doc, PodTemplateSpec, Container, bool)> {
    let mut found = Vec::new();
    for (doc, template) in TREE.pod_templates() {
        let spec = spec_of(&template);
        for container in spec.containers.iter().filter(|c| is_tracker(c)) {
            found.push((doc, template.clone(), container.clone(), true));
        }
        for container in spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| is_tracker(c))
        {
            found.push((doc, template.clone(), container.clone(), false));
        }
    }
    found
}

/// Every installer (see [`is_installer`]), like [`trackers`].
fn installers() -> Vec<(&'static Doc, PodTemplateSpec, Container, bool)> {
    let mut found = Vec::new();
    for (doc, template) in TREE.pod_templates() {
        let spec = spec_of(&template);
        for container in spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| is_installer(c))
        {
            found.push((doc, template.clone(), container.clone(), false));
        }
    }
    found
}

fn sidecars() -> Vec<(&'static Doc, PodTemplateSpec, Container, bool)> {
    let found: Vec<_> = trackers()
        .into_iter()
        .filter(|(_, _, container, _)| !is_standalone(container))
        .collect();
    let jobs = found.iter().filter(|(doc, ..)| doc.value["kind"] == "Job");
    assert!(
        found.len() >= 3 && jobs.count() >= 1,
        "expected the sidecar Job, worker Deployment and FileFlows nodes"
    );
    found
}

fn standalone_trackers() -> Vec<(&'static Doc, PodTemplateSpec, Container, bool)> {
    let found: Vec<_> = trackers()
        .into_iter()
        .filter(|(_, _, container, _)| is_standalone(container))
        .collect();
    assert!(!found.is_empty(), "expected the standalone Deployment");
    found
}

/// The container port a probe, Service or NetworkPolicy port means.
fn container_port(container: &Container, port: &IntOrString) -> Option<i32> {
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
fn probe_target(container: &Container, probe: Option<&Probe>, which: &str) -> (String, i32) {
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

fn env_field_path(container: &Container, variable: &str) -> Option<String> {
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

/// A JSON array instruction (`ENTRYPOINT [...]`, `CMD [...]`) of the Dockerfile's last stage.
fn dockerfile_instruction(instruction: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let last_stage = text
        .rsplit_once("\nFROM ")
        .map_or(text.as_str(), |(_, stage)| stage);
    let line = last_stage
        .lines()
        .filter_map(|line| line.trim().strip_prefix(instruction))
        .rfind(|rest| rest.starts_with(' '))?;
    let words = serde_json::from_str(line.trim()).unwrap_or_else(|error| {
        panic!("Dockerfile: {instruction} must be a JSON array ({error}): {line}")
    });
    Some(words)
}

/// What the container runs: its command or the image's ENTRYPOINT, then its args or (when
/// neither command nor args are set) the image's CMD.
fn argv(container: &Container) -> Vec<String> {
    let entrypoint = dockerfile_instruction("ENTRYPOINT").unwrap_or_default();
    let cmd = dockerfile_instruction("CMD").unwrap_or_default();
    let mut argv = container.command.clone().unwrap_or(entrypoint);
    match (&container.command, &container.args) {
        (_, Some(args)) => argv.extend(args.iter().cloned()),
        (None, None) => argv.extend(cmd),
        (Some(_), None) => {}
    }
    argv
}

/// The text of a regular container's command line (the job scripts).
fn script_of(container: &Container) -> String {
    let mut words = container.command.clone().unwrap_or_default();
    words.extend(args_of(container));
    words.join(" ")
}

/// The `$(NAME)` references the kubelet expands in `text` (NAME a C identifier; anything
/// else, such as the shell's `$((1 + 1))`, it leaves alone).
fn references(text: &str) -> Vec<&str> {
    text.split("$(")
        .skip(1)
        .filter_map(|rest| rest.split_once(')').map(|(name, _)| name))
        .filter(|name| {
            let mut chars = name.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .collect()
}

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
        let ready = probe_target(
            &container,
            container.readiness_probe.as_ref(),
            "readinessProbe",
        );
        let live = probe_target(
            &container,
            container.liveness_probe.as_ref(),
            "livenessProbe",
        );
        assert_eq!(
            startup,
            ("/readyz".to_owned(), ADMIN_PORT),
            "{at}: startupProbe"
        );
        assert_eq!(
            ready,
            ("/readyz".to_owned(), ADMIN_PORT),
            "{at}: readinessProbe"
        );
        assert_eq!(
            live,
            ("/healthz".to_owned(), ADMIN_PORT),
            "{at}: livenessProbe"
        );
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
fn roles_grant_exactly_get_and_patch_on_pods() {
    let expected = vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["pods".to_owned()]),
        verbs: vec!["get".to_owned(), "patch".to_owned()],
        ..PolicyRule::default()
    }];
    let (mut roles, mut cluster_roles) = (0, 0);
    for doc in &TREE.docs {
        let rules = match doc.object() {
            Object::Role(role) => {
                roles += 1;
                role.rules
            }
            Object::ClusterRole(role) => {
                assert!(
                    role.aggregation_rule.is_none(),
                    "{}: aggregated",
                    doc.name()
                );
                cluster_roles += 1;
                role.rules
            }
            _ => continue,
        };
        let rules = rules.unwrap_or_default();
        let verbs: Vec<_> = rules.iter().flat_map(|rule| rule.verbs.iter()).collect();
        assert!(
            !verbs.iter().any(|verb| *verb == "list"),
            "{}: never list",
            doc.name()
        );
        assert_eq!(
            rules,
            expected,
            "{}: get and patch on pods, nothing else",
            doc.name()
        );
    }
    assert!(roles >= 2, "expected the sidecar and standalone Roles");
    assert!(cluster_roles >= 1, "expected the cluster-wide ClusterRole");
}

#[test]
fn bindings_grant_existing_roles_to_existing_service_accounts() {
    let mut bindings = 0;
    for kustomization in &TREE.kustomizations {
        let build = TREE.build(&kustomization.dir);
        let accounts = build.names_of("ServiceAccount");
        for doc in &build.docs {
            let (role_ref, subjects, cluster_wide) = match doc.object() {
                Object::RoleBinding(binding) => (binding.role_ref, binding.subjects, false),
                Object::ClusterRoleBinding(binding) => (binding.role_ref, binding.subjects, true),
                _ => continue,
            };
            bindings += 1;
            let at = format!("{}: {}", kustomization.file(), doc.name());
            let roles = build.names_of(&role_ref.kind);
            assert!(
                roles.contains(&role_ref.name),
                "{at}: no {} {}",
                role_ref.kind,
                role_ref.name
            );
            let subjects = subjects.unwrap_or_default();
            assert!(!subjects.is_empty(), "{at}: binds nobody");
            for subject in subjects {
                assert_eq!(
                    subject.kind, "ServiceAccount",
                    "{at}: binds a {}",
                    subject.kind
                );
                assert!(
                    accounts.contains(&subject.name),
                    "{at}: no ServiceAccount {}",
                    subject.name
                );
                if cluster_wide {
                    assert!(
                        subject.namespace.is_some() || build.namespace.is_some(),
                        "{at}: a ClusterRoleBinding's subject needs a namespace"
                    );
                }
            }
        }
        for (doc, template) in build
            .docs
            .iter()
            .filter_map(|d| d.pod_template().map(|t| (d, t)))
        {
            let account = spec_of(&template).service_account_name.clone();
            let account =
                account.unwrap_or_else(|| panic!("{}: no serviceAccountName", doc.name()));
            assert!(
                accounts.contains(&account),
                "{}: {} runs as ServiceAccount {account}, which it does not create",
                kustomization.file(),
                doc.name()
            );
        }
    }
    assert!(
        bindings >= 3,
        "expected the sidecar, namespaced and cluster-wide bindings"
    );
}

#[test]
fn busy_pods_are_protected_by_an_integer_budget_on_the_label() {
    let mut budgets = 0;
    for doc in TREE.docs_of_kind("PodDisruptionBudget") {
        let Object::PodDisruptionBudget(pdb) = doc.object() else {
            unreachable!()
        };
        let spec = pdb.spec.expect("a budget has a spec");
        let selector = spec.selector.clone().expect("a budget selects pods");
        let expressions = selector.match_expressions.clone().unwrap_or_default();
        if !expressions.iter().any(|expr| expr.key == LABEL) {
            continue;
        }
        budgets += 1;
        let at = doc.name();
        assert_eq!(
            spec.min_available,
            Some(IntOrString::Int(9999)),
            "{at}: an integer minAvailable (a percentage needs the controllers' scale)"
        );
        assert!(
            doc.value
                .pointer("/spec/minAvailable")
                .is_some_and(Value::is_number),
            "{at}"
        );
        assert_eq!(spec.max_unavailable, None, "{at}");
        let on_label: Vec<_> = expressions
            .iter()
            .filter(|expr| expr.key == LABEL)
            .collect();
        assert_eq!(on_label.len(), 1, "{at}");
        assert_eq!(on_label[0].operator, "Exists", "{at}: selects any count");
        assert!(
            on_label[0].values.as_ref().is_none_or(Vec::is_empty),
            "{at}"
        );
        let app = selector.match_labels.clone().unwrap_or_default();
        assert!(
            app.contains_key("app.kubernetes.io/name"),
            "{at}: limited to the workers' app label"
        );
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("IfHealthyBudget"),
            "{at}"
        );
    }
    assert!(
        budgets >= 3,
        "expected the sidecar, standalone and FileFlows budgets"
    );

    // Every pod with a sidecar is held by a budget of its own kustomization while it carries
    // the label, and by none while it does not.
    for kustomization in &TREE.kustomizations {
        let build = TREE.build(&kustomization.dir);
        let budgets: Vec<_> = build
            .docs
            .iter()
            .filter_map(|doc| match doc.object() {
                Object::PodDisruptionBudget(pdb) => pdb.spec.and_then(|spec| spec.selector),
                _ => None,
            })
            .collect();
        for doc in &build.docs {
            let Some(template) = doc.pod_template() else {
                continue;
            };
            if !spec_of(&template)
                .init_containers
                .iter()
                .flatten()
                .any(is_tracker)
            {
                continue;
            }
            let idle = labels_of(&template);
            let mut busy = idle.clone();
            busy.insert(LABEL.to_owned(), "1".to_owned());
            let at = format!("{}: {}", kustomization.file(), doc.name());
            assert!(
                budgets.iter().any(|s| selects(s, &busy)),
                "{at}: busy pods unprotected"
            );
            assert!(
                !budgets.iter().any(|s| selects(s, &idle)),
                "{at}: idle pods held"
            );
        }
    }
}

#[test]
fn no_pod_is_selected_by_two_budgets() {
    // The eviction API refuses to evict a pod that more than one budget selects.
    for kustomization in &TREE.kustomizations {
        let build = TREE.build(&kustomization.dir);
        let budgets: Vec<(String, LabelSelector)> = build
            .docs
            .iter()
            .filter_map(|doc| match doc.object() {
                Object::PodDisruptionBudget(pdb) => {
                    Some((doc.name(), pdb.spec.and_then(|spec| spec.selector)?))
                }
                _ => None,
            })
            .collect();
        for doc in &build.docs {
            let Some(template) = doc.pod_template() else {
                continue;
            };
            let mut busy = labels_of(&template);
            busy.insert(LABEL.to_owned(), "1".to_owned());
            let holding: Vec<_> = budgets
                .iter()
                .filter(|(_, selector)| selects(selector, &busy))
                .map(|(name, _)| name)
                .collect();
            assert!(
                holding.len() <= 1,
                "{}: {} is held by {holding:?}",
                kustomization.file(),
                doc.name()
            );
        }
    }
}

#[test]
fn the_standalone_service_probes_and_serves_on_port_8080() {
    for (doc, template, container, regular) in standalone_trackers() {
        let at = format!("{}: container {}", doc.name(), container.name);
        assert!(
            regular,
            "{at}: the standalone tracker is the pod's main container"
        );
        let Object::Deployment(deployment) = doc.object() else {
            panic!("{at}: the standalone tracker is a Deployment")
        };
        let replicas = deployment.spec.replicas;
        assert_eq!(replicas, Some(2), "{at}: two replicas");
        let args = args_of(&container);
        for arg in [
            "--namespace=$(NAMESPACE)",
            "--label-selector=app.kubernetes.io/name=worker",
        ] {
            assert!(args.iter().any(|a| a == arg), "{at}: {arg} in {args:?}");
        }
        let namespace = env_field_path(&container, "NAMESPACE");
        assert_eq!(
            namespace.as_deref(),
            Some("metadata.namespace"),
            "{at}: NAMESPACE"
        );
        assert!(
            env_field_path(&container, "POD_NAME").is_none(),
            "{at}: no POD_NAME"
        );
        let http = container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("http"));
        assert_eq!(
            http.map(|p| p.container_port),
            Some(STANDALONE_PORT),
            "{at}: port http"
        );
        let ready = probe_target(
            &container,
            container.readiness_probe.as_ref(),
            "readinessProbe",
        );
        let live = probe_target(
            &container,
            container.liveness_probe.as_ref(),
            "livenessProbe",
        );
        assert_eq!(
            ready,
            ("/readyz".to_owned(), STANDALONE_PORT),
            "{at}: readinessProbe"
        );
        assert_eq!(
            live,
            ("/healthz".to_owned(), STANDALONE_PORT),
            "{at}: livenessProbe"
        );

        let labels = labels_of(&template);
        let services: Vec<Service> = TREE
            .docs_of_kind("Service")
            .filter_map(|doc| match doc.object() {
                Object::Service(service) => Some(*service),
                _ => None,
            })
            .filter(|service| {
                let selector = service.spec.as_ref().and_then(|spec| spec.selector.clone());
                selector.is_some_and(|s| {
                    !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
            })
            .collect();
        assert_eq!(services.len(), 1, "{at}: one Service selects the tracker");
        let ports = services[0]
            .spec
            .clone()
            .and_then(|spec| spec.ports)
            .unwrap_or_default();
        assert_eq!(ports.len(), 1, "{at}: the Service has one port");
        assert_eq!(
            ports[0].port, 80,
            "{at}: callers use http://pod-webhook-tracker/"
        );
        let target = ports[0].target_port.as_ref().expect("a targetPort");
        assert_eq!(
            container_port(&container, target),
            Some(STANDALONE_PORT),
            "{at}: targetPort"
        );

        let own_budgets: Vec<_> = TREE
            .docs_of_kind("PodDisruptionBudget")
            .filter_map(|doc| match doc.object() {
                Object::PodDisruptionBudget(pdb) => pdb.spec,
                _ => None,
            })
            .filter(|spec| spec.selector.as_ref().is_some_and(|s| selects(s, &labels)))
            .collect();
        assert_eq!(
            own_budgets.len(),
            1,
            "{at}: one budget keeps a tracker during drains"
        );
        assert_eq!(
            own_budgets[0].min_available,
            Some(IntOrString::Int(1)),
            "{at}"
        );
    }
}

#[test]
fn only_labelled_clients_may_reach_the_standalone_service() {
    let mut policies = 0;
    for doc in TREE.docs_of_kind("NetworkPolicy") {
        let Object::NetworkPolicy(policy) = doc.object() else {
            unreachable!()
        };
        let spec = policy.spec.expect("a policy has a spec");
        let at = doc.name();
        let selector = spec.pod_selector.clone().unwrap_or_default();
        let guarded: Vec<_> = standalone_trackers()
            .into_iter()
            .filter(|(_, template, ..)| selects(&selector, &labels_of(template)))
            .collect();
        assert!(!guarded.is_empty(), "{at}: selects no tracker pod");
        assert!(
            !selects(&selector, &BTreeMap::new()),
            "{at}: selects every pod"
        );
        assert!(
            spec.policy_types
                .unwrap_or_default()
                .contains(&"Ingress".to_owned()),
            "{at}"
        );
        let rules = spec.ingress.unwrap_or_default();
        assert!(
            !rules.is_empty(),
            "{at}: no ingress rule admits the clients"
        );
        for rule in rules {
            let peers = rule.from.unwrap_or_default();
            assert!(
                !peers.is_empty(),
                "{at}: a rule without `from` admits everybody"
            );
            for peer in peers {
                let client = peer
                    .pod_selector
                    .and_then(|s| s.match_labels)
                    .unwrap_or_default();
                assert_eq!(
                    client.get("pod-webhook-tracker/client").map(String::as_str),
                    Some("true"),
                    "{at}: admits only pods labelled pod-webhook-tracker/client=true"
                );
                assert!(peer.ip_block.is_none(), "{at}: no address ranges");
            }
            for port in rule.ports.unwrap_or_default() {
                let port = port.port.expect("a port");
                for (_, _, container, _) in &guarded {
                    assert_eq!(
                        container_port(container, &port),
                        Some(STANDALONE_PORT),
                        "{at}"
                    );
                }
            }
        }
        policies += 1;
    }
    assert!(
        policies >= 2,
        "expected the namespaced and cluster-wide policies"
    );
}

#[test]
fn the_standalone_tracker_counts_the_pods_its_budget_protects() {
    let build = TREE.build(Path::new("manifests/standalone"));
    let mut checked = 0;
    for doc in &build.docs {
        let Some(template) = doc.pod_template() else {
            continue;
        };
        for container in spec_of(&template)
            .containers
            .iter()
            .filter(|c| is_standalone(c))
        {
            let args = args_of(container);
            let selector = args
                .iter()
                .find_map(|arg| arg.strip_prefix("--label-selector="))
                .expect("--label-selector");
            let counted: BTreeMap<String, String> = selector
                .split(',')
                .map(|term| {
                    let (key, value) = term.split_once('=').expect("key=value terms");
                    (key.to_owned(), value.to_owned())
                })
                .collect();
            let budget = build
                .docs
                .iter()
                .filter_map(|doc| match doc.object() {
                    Object::PodDisruptionBudget(pdb) => pdb.spec.and_then(|spec| spec.selector),
                    _ => None,
                })
                .find(|s| s.match_expressions.iter().flatten().any(|e| e.key == LABEL))
                .expect("the default standalone build holds the busy-workers budget");
            assert_eq!(budget.match_labels, Some(counted), "{}", doc.name());
            checked += 1;
        }
    }
    assert_eq!(checked, 1, "one standalone tracker in the default build");
}

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
                .filter(|init| {
                    is_installer(init)
                        && init
                            .volume_mounts
                            .iter()
                            .flatten()
                            .any(|m| m.name == mount.name)
                })
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
            let installer_mount = installer
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == mount.name)
                .expect("mounted");
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
