//! Running the real helm on the chart, as its users do: always from the repository's root, with
//! the chart's path as the documentation gives it, and nothing of the user's own helm setup.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use testenv::Cluster;

use crate::kustomize::{documents, repository};

/// The chart, relative to the repository's root.
pub(crate) const CHART: &str = "charts/pod-webhook-tracker";

/// The release name and namespace the documentation installs with; the names of the objects
/// then equal those of `manifests/`.
pub(crate) const RELEASE: &str = "pod-webhook-tracker";
pub(crate) const NAMESPACE: &str = "pod-webhook-tracker";

/// The values every test renders: each mode, each certificate source, monitoring on and off,
/// every kind of value a user sets (`--set` as on the command line).
pub(crate) const MATRIX: &[(&str, &[&str])] = &[
    ("the defaults (self-signed injector, policy)", &[]),
    ("cert-manager", &["certManager.enabled=true"]),
    (
        "cert-manager, namespaces opt in",
        &["certManager.enabled=true", "injector.optIn=namespaces"],
    ),
    (
        "self-signed, namespaces opt in",
        &["injector.optIn=namespaces"],
    ),
    (
        "cert-manager with a ClusterIssuer and three replicas",
        &[
            "certManager.enabled=true",
            "certManager.issuerRef.kind=ClusterIssuer",
            "certManager.issuerRef.name=cluster-ca",
            "replicaCount=3",
        ],
    ),
    ("standalone, namespaced", &["standalone.enabled=true"]),
    (
        "standalone, namespaced, authenticated over HTTPS from cert-manager",
        &[
            "standalone.enabled=true",
            "standalone.authenticate=serviceaccount",
            "certManager.enabled=true",
        ],
    ),
    (
        "standalone, cluster-wide (authenticated), cert-manager",
        &[
            "standalone.enabled=true",
            "standalone.scope=cluster",
            "certManager.enabled=true",
        ],
    ),
    (
        "standalone, cluster-wide (authenticated), a Secret of the user's",
        &[
            "standalone.enabled=true",
            "standalone.scope=cluster",
            "standalone.tls.secretName=my-tracker-tls",
            "standalone.allowedCallers={system:serviceaccount:ci:reporter,ci-bots}",
            "standalone.tokenAudience=jobs.example.com",
            "standalone.allowedNamespaces={jobs,batch}",
        ],
    ),
    (
        "standalone, cluster-wide, not authenticated",
        &[
            "standalone.enabled=true",
            "standalone.scope=cluster",
            "standalone.authenticate=none",
        ],
    ),
    (
        "the standalone service alone, no network policy, one replica",
        &[
            "injector.enabled=false",
            "policy.enabled=false",
            "standalone.enabled=true",
            "standalone.networkPolicy.enabled=false",
            "standalone.replicaCount=1",
            "standalone.label=example.com/busy",
        ],
    ),
    ("the policy alone", &["injector.enabled=false"]),
    (
        "monitoring: pod monitors and alerts, with the standalone service",
        &[
            "metrics.podMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "standalone.enabled=true",
        ],
    ),
    (
        "monitoring: service monitors, cert-manager, cluster-wide",
        &[
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.interval=30s",
            "metrics.serviceMonitor.labels.release=prometheus",
            "metrics.prometheusRule.enabled=true",
            "certManager.enabled=true",
            "standalone.enabled=true",
            "standalone.scope=cluster",
        ],
    ),
    (
        "other injection defaults",
        &[
            "injection.image=registry.example.com/mirror/pod-webhook-tracker:v9.9.9",
            "injection.label=example.com/busy",
            "injection.trackerPort=18080",
            "injection.adminPort=19090",
            "injection.maxJobDuration=2h",
            "injection.autoscaler=cluster-autoscaler",
            "injection.resources.requests.cpu=7m",
            "injection.resources.requests.memory=9Mi",
            "injection.resources.limits.memory=40Mi",
            "injector.unfitPods=admit",
            "policy.trackerAccounts={job-tracker,batch-workers}",
        ],
    ),
    (
        "every pod setting",
        &[
            "image.repository=registry.example.com/mirror/pod-webhook-tracker",
            "image.tag=v0.1.0-rc.1",
            "image.pullPolicy=Always",
            "imagePullSecrets[0].name=registry",
            "podAnnotations.example\\.com/team=batch",
            "podLabels.team=batch",
            "nodeSelector.kubernetes\\.io/os=linux",
            "tolerations[0].key=dedicated",
            "tolerations[0].operator=Equal",
            "tolerations[0].value=system",
            "tolerations[0].effect=NoSchedule",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key=kubernetes.io/arch",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator=In",
            "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].values={amd64,arm64}",
            "priorityClassName=system-cluster-critical",
            "spreadAcrossNodes=false",
            "serviceAccount.annotations.example\\.com/role=injector",
            "resources.requests.cpu=20m",
            "injector.excludedNamespaces={kube-system,monitoring}",
            "injector.failurePolicy=Ignore",
            "injector.timeoutSeconds=3",
            "injector.extraArgs={--shutdown-grace-period=20s}",
            "standalone.enabled=true",
            "standalone.resources.limits.memory=128Mi",
            "standalone.nodeSelector.pool=batch",
            "standalone.serviceAccount.annotations.example\\.com/role=tracker",
            "standalone.extraArgs={--events=true}",
        ],
    ),
    (
        "existing service accounts, other names",
        &[
            "serviceAccount.create=false",
            "serviceAccount.name=my-injector",
            "standalone.enabled=true",
            "standalone.serviceAccount.create=false",
            "standalone.serviceAccount.name=my-tracker",
            "fullnameOverride=jobs-guard",
            "certManager.enabled=true",
        ],
    ),
];

/// Where helm keeps its cache, configuration and data: none of the user's.
fn helm_home() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("chart-helm-home")
}

/// The real helm, in the repository's root, with a home of its own and no cluster unless a
/// test gives it one.
pub(crate) fn helm() -> Command {
    let mut command = Command::new(testenv::tool("helm"));
    let home = helm_home();
    command
        .current_dir(repository())
        .env("HOME", &home)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("HELM_NAMESPACE")
        .env_remove("HELM_KUBECONTEXT");
    command
}

/// helm against `cluster`, as its administrator.
pub(crate) fn helm_on(cluster: &Cluster) -> Command {
    let mut command = helm();
    command.env("KUBECONFIG", cluster.admin_kubeconfig());
    command
}

/// `--set` for each value.
pub(crate) fn sets(values: &[&str]) -> Vec<String> {
    values
        .iter()
        .flat_map(|value| ["--set".to_owned(), (*value).to_owned()])
        .collect()
}

/// What a command printed on its standard output, or everything it said when it failed.
pub(crate) fn succeeded(what: &str, output: &Output) -> Result<String, String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{what}: {}\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// `helm template RELEASE charts/pod-webhook-tracker -n NAMESPACE --set ...`.
pub(crate) fn template(release: &str, namespace: &str, values: &[&str]) -> Result<String, String> {
    let output = helm()
        .args(["template", release, CHART, "-n", namespace])
        .args(sets(values))
        .output()
        .expect("helm runs");
    succeeded(
        &format!("helm template {release} {CHART} -n {namespace} {values:?}"),
        &output,
    )
}

/// The objects `helm template` renders, read as kubectl reads them.
pub(crate) fn render(release: &str, namespace: &str, values: &[&str]) -> Vec<Value> {
    let text = template(release, namespace, values).unwrap_or_else(|error| panic!("{error}"));
    documents(&text, &format!("helm template {values:?}"))
}

/// The one object of this kind and name among `objects`.
pub(crate) fn one<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{kind} {name} among {}", names(objects));
    found[0]
}

/// The objects of a kind.
pub(crate) fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| o["kind"] == kind)
}

/// `Kind name, Kind name, ...`, for messages.
pub(crate) fn names(objects: &[Value]) -> String {
    objects
        .iter()
        .map(crate::kustomize::kind_and_name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The container of a Deployment's pod template, by name.
pub(crate) fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {deployment}"))
}

/// A container's arguments.
pub(crate) fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

/// Held by the tests that install releases or register webhook configurations on the shared
/// cluster: a release's webhook configuration calls an injector that never runs there, and
/// refuses every opted-in pod while it is installed; the policy is cluster-wide.
pub(crate) fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}
