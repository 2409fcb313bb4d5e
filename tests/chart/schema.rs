//! Wrong values are refused before anything is rendered, each with a message that names the
//! value and what is wrong with it: values.schema.json for each value on its own (helm checks
//! it), the chart's `fail` for combinations (templates/_helpers.tpl, `pwt.validate`).

use crate::helm::{NAMESPACE, RELEASE, helm, render, sets, template};

/// A value (or values) a user may get wrong, and what helm must say.
const REFUSED: &[(&[&str], &str)] = &[
    // The schema: one value at a time, named by its path.
    (
        &["injection.autoscaler=keda"],
        "at '/injection/autoscaler': value must be one of 'karpenter', 'cluster-autoscaler', 'none'",
    ),
    (
        &["injection.trackerPort=70000"],
        "at '/injection/trackerPort': maximum: got 70,000, want 65,535",
    ),
    (
        &["injection.adminPort=0"],
        "at '/injection/adminPort': minimum: got 0, want 1",
    ),
    (
        &["injection.label=Active Jobs"],
        "at '/injection/label': 'Active Jobs' does not match pattern",
    ),
    (
        // 57 characters: its annotation active-…-writes would be longer than 63.
        &["injection.label=a23456789012345678901234567890123456789012345678901234567"],
        "at '/injection/label'",
    ),
    (
        &["injection.resources.limits.cpu=100m"],
        "at '/injection/resources/limits': additional properties 'cpu' not allowed",
    ),
    (
        &["injection.resources.requests.memory=lots"],
        "at '/injection/resources/requests/memory': 'lots' does not match pattern",
    ),
    (
        &["injection.maxJobDuration=forever"],
        "at '/injection/maxJobDuration': 'forever' does not match pattern",
    ),
    (
        &["injection.lable=busy"],
        "at '/injection': additional properties 'lable' not allowed",
    ),
    (
        &["replicas=2"],
        "at '': additional properties 'replicas' not allowed",
    ),
    (
        &["replicaCount=0"],
        "at '/replicaCount': minimum: got 0, want 1",
    ),
    (
        &["image.pullPolicy=Sometimes"],
        "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'",
    ),
    (
        &["image.tag=v1 rc"],
        "at '/image/tag': 'v1 rc' does not match pattern",
    ),
    (
        &["injector.optIn=all"],
        "at '/injector/optIn': value must be one of 'pods', 'namespaces'",
    ),
    (
        &["injector.failurePolicy=Retry"],
        "at '/injector/failurePolicy': value must be one of 'Fail', 'Ignore'",
    ),
    (
        &["injector.timeoutSeconds=60"],
        "at '/injector/timeoutSeconds': maximum: got 60, want 30",
    ),
    (
        &["injector.unfitPods=warn"],
        "at '/injector/unfitPods': value must be one of 'deny', 'admit'",
    ),
    (
        &["injector.excludedNamespaces={Kube_System}"],
        "at '/injector/excludedNamespaces/0'",
    ),
    (
        &["standalone.scope=global"],
        "at '/standalone/scope': value must be one of 'namespaced', 'cluster'",
    ),
    (
        &["standalone.authenticate=token"],
        "at '/standalone/authenticate': value must be one of '', 'none', 'serviceaccount'",
    ),
    (
        &["standalone.replicaCount=0"],
        "at '/standalone/replicaCount': minimum: got 0, want 1",
    ),
    (
        &["certManager.duration=90d"],
        "at '/certManager/duration': '90d' does not match pattern",
    ),
    (
        &["certManager.issuerRef.kind=Issuer"],
        "at '/certManager/issuerRef': missing property 'name'",
    ),
    (
        &["certManager.issuerRef.kind=Vault"],
        "at '/certManager/issuerRef/kind': value must be one of 'Issuer', 'ClusterIssuer'",
    ),
    // `{}` on the command line is a list of one empty name.
    (
        &["policy.trackerAccounts={}"],
        "at '/policy/trackerAccounts/0': '' does not match pattern",
    ),
    (
        &["metrics.podMonitor.interval=often"],
        "at '/metrics/podMonitor/interval': 'often' does not match pattern",
    ),
    (
        &["metrics.serviceMonitor.enabled=yes"],
        "at '/metrics/serviceMonitor/enabled': got string, want boolean",
    ),
    // The chart's own checks: combinations, each saying what to do instead.
    (
        &["replicaCount=2"],
        "replicaCount: 2 injectors cannot run with a self-signed certificate: each start makes a new CA",
    ),
    (
        &["standalone.enabled=true", "standalone.scope=cluster"],
        "standalone: HTTPS is on (callers' tokens are credentials, standalone.authenticate is serviceaccount), and its certificate needs a source: set certManager.enabled=true",
    ),
    (
        &[
            "standalone.enabled=true",
            "standalone.authenticate=serviceaccount",
        ],
        "its certificate needs a source",
    ),
    (
        &["injection.adminPort=8080"],
        "injection: trackerPort and adminPort are both 8080; the injected tracker needs two ports",
    ),
    (
        &[
            "metrics.podMonitor.enabled=true",
            "metrics.serviceMonitor.enabled=true",
        ],
        "metrics: serviceMonitor and podMonitor both scrape the same /metrics; enable one of them",
    ),
    (
        &["injector.enabled=false", "policy.enabled=false"],
        "nothing to install: injector.enabled, standalone.enabled and policy.enabled are all false",
    ),
    (
        &["serviceAccount.create=false"],
        "serviceAccount.name: the injector's existing service account (serviceAccount.create is false)",
    ),
    (
        &[
            "standalone.enabled=true",
            "standalone.serviceAccount.create=false",
        ],
        "standalone.serviceAccount.name: the standalone service's existing service account",
    ),
];

#[test]
fn wrong_values_are_refused_naming_the_value_and_the_reason() {
    let mut problems = Vec::new();
    for (values, expected) in REFUSED {
        match template(RELEASE, NAMESPACE, values) {
            Ok(_) => problems.push(format!("{values:?} was rendered: expected `{expected}`")),
            Err(said) if !said.contains(expected) => {
                problems.push(format!("{values:?}: expected `{expected}` in:\n{said}"));
            }
            Err(_) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn values_of_every_documented_form_are_accepted() {
    for values in [
        &["injection.maxJobDuration=0"][..],
        &["injection.maxJobDuration=1h30m"],
        &["injection.maxJobDuration=1y"],
        &["injection.label=example.com/active-jobs"],
        &[
            "injection.resources.requests.cpu=0.005",
            "injection.resources.limits.memory=1Gi",
        ],
        &["replicaCount=1"],
        &["certManager.enabled=true", "replicaCount=1"],
        &[
            "certManager.enabled=true",
            "certManager.issuerRef.name=ca",
            "certManager.issuerRef.kind=ClusterIssuer",
            "certManager.issuerRef.group=cert-manager.io",
        ],
        &[
            "standalone.enabled=true",
            "standalone.scope=cluster",
            "standalone.tls.enabled=false",
        ],
        &[
            "standalone.enabled=true",
            "standalone.tls.enabled=true",
            "standalone.tls.secretName=mine",
        ],
    ] {
        let objects = render(RELEASE, NAMESPACE, values);
        assert!(!objects.is_empty(), "{values:?}");
    }
}

#[test]
fn the_chart_refuses_clusters_it_cannot_serve() {
    // Native sidecars: Kubernetes 1.29 (Chart.yaml's kubeVersion).
    let output = helm()
        .args([
            "template",
            RELEASE,
            crate::helm::CHART,
            "--kube-version",
            "1.28.9",
        ])
        .output()
        .expect("helm runs");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        said.contains(
            "chart requires kubeVersion: >=1.29.0-0 which is incompatible with Kubernetes v1.28.9"
        ),
        "{said}"
    );
    // The policy needs the pod's name in service-account tokens: 1.30.
    let on_1_29 = |values: &[&str]| {
        helm()
            .args([
                "template",
                RELEASE,
                crate::helm::CHART,
                "--kube-version",
                "1.29.4",
            ])
            .args(sets(values))
            .output()
            .expect("helm runs")
    };
    let output = on_1_29(&[]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        said.contains("policy.enabled: Kubernetes v1.29.4 does not put the pod's name into service-account tokens (1.30+), so the policy would refuse every tracker's write; set policy.enabled=false"),
        "{said}"
    );
    let output = on_1_29(&["policy.enabled=false"]);
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn crds_are_required_only_where_helm_knows_the_clusters_api() {
    let with_apis = |apis: &[&str]| {
        let mut command = helm();
        command.args([
            "template",
            RELEASE,
            crate::helm::CHART,
            "--set",
            "certManager.enabled=true",
        ]);
        for api in apis {
            command.args(["--api-versions", api]);
        }
        command.output().expect("helm runs")
    };
    // helm template alone (GitOps tools render so) knows no cluster: it renders.
    assert!(with_apis(&[]).status.success());
    // A cluster's discovery lists its resources (v1/Namespace): without cert-manager's CRDs
    // the chart refuses, naming them; with them it renders.
    let output = with_apis(&["v1/Namespace"]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        said.contains("the cluster does not serve cert-manager.io/v1/Certificate"),
        "{said}"
    );
    let output = with_apis(&["v1/Namespace", "cert-manager.io/v1/Certificate"]);
    assert!(output.status.success(), "{output:?}");
}
