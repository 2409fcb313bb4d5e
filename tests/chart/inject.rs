//! The injector as the chart runs it, called by the real API server under the chart's webhook
//! configuration. No kubelet runs the chart's pods here, so each test runs the injector binary
//! itself with the arguments the chart renders — but for its listening addresses (a free
//! loopback port instead of 0.0.0.0:8443 and :9090), its certificate files where the chart
//! mounts cert-manager's (one the cluster's CA signs for localhost), and a kubeconfig for the
//! chart's service account where the self-signed injector would use its in-cluster token — and
//! points the webhook configuration's clientConfig at it (the server cannot reach a Service).

use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};
use testenv::{Api, Cluster, Credentials};

use crate::helm::{args, container, one, render};
use crate::install::Release;
use crate::support::Tracker;

/// The label that opts a pod in.
const OPT_IN: &str = "pod-webhook-tracker.io/inject";
/// How long the server may take to take up a new webhook configuration.
const TAKE_UP: Duration = Duration::from_secs(60);
const CONFIGURATIONS: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

/// Polls `check` until it answers `Ok`, for at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(done) => return done,
            Err(last) => assert!(
                started.elapsed() < limit,
                "{what} within {limit:?}; last seen: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The injector's arguments as the chart renders them (after `inject`), with its listeners on
/// free loopback ports and `replace`d files.
fn injector_args(deployment: &Value, replace: &[(&str, String)]) -> Vec<String> {
    let rendered = args(container(deployment, "injector"));
    assert_eq!(
        rendered.first().map(String::as_str),
        Some("inject"),
        "{rendered:?}"
    );
    assert!(
        rendered.contains(&"--address=0.0.0.0:8443".to_owned()),
        "{rendered:?}"
    );
    assert!(
        rendered.contains(&"--admin-address=0.0.0.0:9090".to_owned()),
        "{rendered:?}"
    );
    rendered[1..]
        .iter()
        // Tracker::injector() listens on 127.0.0.1:0 already.
        .filter(|arg| !arg.starts_with("--address="))
        .map(|arg| {
            if arg.starts_with("--admin-address=") {
                return "--admin-address=127.0.0.1:0".to_owned();
            }
            for (flag, value) in replace {
                if arg.starts_with(&format!("{flag}=")) {
                    return format!("{flag}={value}");
                }
            }
            arg.clone()
        })
        .collect()
}

/// A pod as a user writes it, opted in or not.
fn job_pod(name: &str, opted_in: bool) -> Value {
    let mut labels = json!({"app": "worker"});
    if opted_in {
        labels[OPT_IN] = json!("true");
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "automountServiceAccountToken": false,
            "restartPolicy": "Never",
            "containers": [{"name": "job", "image": "busybox:1.37.0", "command": ["sleep", "60"]}],
        },
    })
}

fn pods(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/pods")
}

/// Waits until the server sends opted-in pods of `namespace` to an injector (a dry run comes
/// back with the tracker).
fn wait_injecting(api: &Api, namespace: &str) {
    let path = format!("{}?dryRun=All", pods(namespace));
    wait_for("the server calls the injector", TAKE_UP, || {
        let answer = api.post(&path, &job_pod("probe", true));
        let injected =
            answer.status == 201 && answer.body["spec"]["initContainers"][0]["name"] == "tracker";
        if injected {
            Ok(())
        } else {
            Err(format!("{answer:?}"))
        }
    });
}

/// A webhook configuration created by a test, deleted when dropped.
struct Registered<'a> {
    api: &'a Api,
    name: String,
}
impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.api.delete(&format!("{CONFIGURATIONS}/{}", self.name));
    }
}

/// The tracker container of a stored pod.
fn tracker_of(pod: &Pod) -> Container {
    let spec = pod.spec.as_ref().expect("a spec");
    spec.init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "tracker")
        .cloned()
        .unwrap_or_else(|| panic!("no tracker in {spec:?}"))
}

fn env_value(container: &Container, variable: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|env| env.name == variable)
        .and_then(|env| env.value.clone())
}

#[test]
fn the_injector_run_with_the_charts_flags_injects_what_the_values_say() {
    let cluster = Cluster::shared();
    let _turn = crate::helm::one_at_a_time();
    let admin = cluster.admin();
    let namespace = cluster.namespace("inject");
    let values = [
        "certManager.enabled=true",
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
    ];
    let objects = render("flags", "tracker-home", &values);

    // cert-manager's files: a certificate the cluster's CA signed for localhost.
    let pair = cluster.authority().serving(&["localhost"]);
    let folder = cluster.scratch(&format!("{namespace}-tls"));
    std::fs::write(folder.join("tls.crt"), &pair.cert_pem).expect("written");
    std::fs::write(folder.join("tls.key"), &pair.key_pem).expect("written");
    let deployment = one(&objects, "Deployment", "flags-pod-webhook-tracker-injector");
    let injector = Tracker::injector()
        .args(injector_args(
            deployment,
            &[
                (
                    "--tls-cert-file",
                    folder.join("tls.crt").display().to_string(),
                ),
                (
                    "--tls-key-file",
                    folder.join("tls.key").display().to_string(),
                ),
            ],
        ))
        .start();

    // The chart's configuration, calling that injector, trusting the cluster's CA (as
    // cert-manager's CA injector would fill in its own), for this test's namespace only.
    let mut configuration = one(
        &objects,
        "MutatingWebhookConfiguration",
        "flags-pod-webhook-tracker",
    )
    .clone();
    let webhook = &mut configuration["webhooks"][0];
    webhook["clientConfig"] = json!({
        "url": format!("https://localhost:{}/mutate", injector.address.port()),
        "caBundle": base64::engine::general_purpose::STANDARD.encode(cluster.ca_pem()),
    });
    webhook["namespaceSelector"]["matchExpressions"]
        .as_array_mut()
        .expect("the chart's namespace expressions")
        .push(
            json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]}),
        );
    admin
        .post(CONFIGURATIONS, &configuration)
        .expect(201, "register the chart's configuration");
    let _registered = Registered {
        api: admin,
        name: "flags-pod-webhook-tracker".to_owned(),
    };
    wait_injecting(admin, &namespace);

    let created = admin
        .post(&pods(&namespace), &job_pod("job-1", true))
        .expect(201, "create the pod");
    let pod: Pod = serde_json::from_value(created).expect("a pod");
    let tracker = tracker_of(&pod);
    assert_eq!(
        tracker.image.as_deref(),
        Some("registry.example.com/mirror/pod-webhook-tracker:v9.9.9"),
        "injection.image"
    );
    let tracker_args = tracker.args.clone().unwrap_or_default();
    for arg in [
        "--admin-address=0.0.0.0:19090",
        "--address=127.0.0.1:18080",
        "--label=example.com/busy",
        "--max-job-duration=2h",
        "--active-annotation=cluster-autoscaler.kubernetes.io/safe-to-evict=false",
    ] {
        assert!(
            tracker_args.iter().any(|a| a == arg),
            "{arg} not in {tracker_args:?}"
        );
    }
    let ports: Vec<i32> = tracker
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [19090], "injection.adminPort");
    let resources = tracker.resources.clone().expect("resources");
    let quantity = |map: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
                    key: &str| {
        map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone())
    };
    assert_eq!(quantity(&resources.requests, "cpu").as_deref(), Some("7m"));
    assert_eq!(
        quantity(&resources.requests, "memory").as_deref(),
        Some("9Mi")
    );
    assert_eq!(
        quantity(&resources.limits, "memory").as_deref(),
        Some("40Mi")
    );
    let job = &pod.spec.as_ref().expect("a spec").containers[0];
    assert_eq!(
        env_value(job, "TRACKER_URL").as_deref(),
        Some("http://127.0.0.1:18080")
    );

    // injector.unfitPods=admit: a pod the tracker cannot serve is created unchanged, with a
    // warning, instead of refused.
    let mut host = job_pod("host", true);
    host["spec"]["hostNetwork"] = json!(true);
    let created = admin
        .post(&pods(&namespace), &host)
        .expect(201, "an unfit pod admitted");
    assert!(
        created["spec"]["initContainers"].is_null(),
        "unchanged: {created}"
    );
}

#[test]
fn a_self_signed_injector_installed_by_the_chart_registers_its_ca_and_the_notes_checks_work() {
    let cluster = Cluster::shared();
    let _turn = crate::helm::one_at_a_time();
    let admin = cluster.admin();
    let home = cluster.namespace("home");
    // The chart's defaults; the server calls the injector as localhost here (the chart names
    // its Service too), through injector.extraArgs.
    let release = Release::install(
        cluster,
        "selfsigned",
        &home,
        &["injector.extraArgs={--self-signed-dns-name=localhost}"],
    );
    let name = "selfsigned-pod-webhook-tracker";
    let account = "selfsigned-pod-webhook-tracker-injector";
    let objects = crate::kustomize::documents(&release.manifest(), "helm get manifest");
    let deployment = one(&objects, "Deployment", account);

    // The chart's account, with only the rights the chart gave it.
    let token = cluster.token(&home, account, &[], None);
    let kubeconfig = cluster.kubeconfig(
        &format!("{home}-{account}"),
        &Credentials::Token(token),
        &home,
    );
    let api = Api::from_kubeconfig(&kubeconfig);
    let may = |verb: &str, object: &str| {
        let review = api.post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &json!({"spec": {"resourceAttributes": {"verb": verb, "group": "admissionregistration.k8s.io",
                "resource": "mutatingwebhookconfigurations", "name": object}}}),
        );
        review.body["status"]["allowed"] == true
    };
    wait_for("the chart's binding takes effect", TAKE_UP, || {
        if may("patch", name) {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });
    for (verb, object) in [("get", name), ("update", name), ("patch", "another")] {
        assert!(
            !may(verb, object),
            "{verb} {object}: only patch on its own configuration"
        );
    }
    let mut arguments = injector_args(deployment, &[]);
    arguments.push(format!("--kubeconfig={}", kubeconfig.display()));
    let injector = Tracker::injector().args(arguments).start();
    let probes = injector.admin.expect("an admin address");
    wait_for(
        "the injector registers its CA and is ready",
        TAKE_UP,
        || {
            let ready = crate::support::request(probes, "GET", "/readyz", &[]).status == 200;
            if ready { Ok(()) } else { Err(injector.log()) }
        },
    );
    assert!(
        injector.log().contains(&format!(
            "the CA is in the caBundle of MutatingWebhookConfiguration {name}"
        )),
        "{}",
        injector.log()
    );
    // The server cannot reach the chart's Service here: the same webhook, by URL. Its
    // caBundle stays the injector's.
    let path = format!("{CONFIGURATIONS}/{name}");
    admin
        .json_patch(
            &path,
            &json!([
                {"op": "remove", "path": "/webhooks/0/clientConfig/service"},
                {"op": "add", "path": "/webhooks/0/clientConfig/url",
                 "value": format!("https://localhost:{}/mutate", injector.address.port())},
            ]),
        )
        .expect(200, "point the webhook at the injector");

    // The NOTES' commands, as written, for a namespace of the user's and its pod.
    let workers = cluster.namespace("workers");
    wait_injecting(admin, &workers);
    admin
        .post(
            &format!("/api/v1/namespaces/{workers}/serviceaccounts"),
            &json!({"metadata": {"name": "batch-workers"}}),
        )
        .expect(201, "the pods' account");
    let notes = release
        .said
        .split("NOTES:")
        .nth(1)
        .expect("NOTES")
        .to_owned();
    let commands: Vec<String> = notes
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("kubectl "))
        .map(str::to_owned)
        .collect();
    assert!(commands.len() >= 6, "{notes}");
    let mut pod_created = false;
    for command in commands {
        let script = command
            .replace(" NS ", &format!(" {workers} "))
            .replace("NS:", &format!("{workers}:"))
            .replace(" POD ", " job-1 ");
        if command.starts_with("kubectl get pod POD") && !pod_created {
            let mut pod = job_pod("job-1", true);
            pod["spec"]["serviceAccountName"] = json!("batch-workers");
            admin
                .post(&pods(&workers), &pod)
                .expect(201, "an opted-in pod");
            pod_created = true;
        }
        if command.starts_with("kubectl rollout status") {
            // Waits for pods a kubelet would run: none runs here. The Deployment is there.
            assert!(
                command.contains(&format!("deployment/{account} -n {home}")),
                "{command}"
            );
            admin
                .get(&format!(
                    "/apis/apps/v1/namespaces/{home}/deployments/{account}"
                ))
                .expect(200, "the injector's Deployment");
            continue;
        }
        let output = std::process::Command::new("sh")
            .args(["-c", &script])
            .env("PATH", path_with_kubectl())
            .env("KUBECONFIG", cluster.admin_kubeconfig())
            .env("HOME", cluster.scratch("notes-home"))
            .output()
            .expect("sh runs");
        let said = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(output.status.success(), "{script}: {output:?}");
        let expected_ok = if command.starts_with("kubectl get mutatingwebhookconfiguration") {
            said.parse::<usize>().is_ok_and(|bytes| bytes > 100)
        } else if command.starts_with("kubectl run inject-check") {
            said == "tracker"
        } else if command.starts_with("kubectl get pod POD") {
            said == env!("CARGO_PKG_VERSION")
        } else if command.starts_with("kubectl get pods") {
            said.lines()
                .next()
                .is_some_and(|header| header.trim_end().ends_with("ACTIVE-JOBS"))
        } else if command.starts_with("kubectl create role ")
            || command.starts_with("kubectl create rolebinding ")
        {
            said.ends_with("created")
        } else {
            panic!("the NOTES give `{command}`: check what it shows here")
        };
        assert!(expected_ok, "{script} printed: {said}");
    }
    assert!(pod_created, "the NOTES show how to check a pod: {notes}");
    // The NOTES' role and binding give the pods' account the tracker's rights.
    let user = format!("system:serviceaccount:{workers}:batch-workers");
    let allowed = |verb: &str| {
        let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": ["system:serviceaccounts", "system:authenticated"],
                     "resourceAttributes": {"namespace": workers, "verb": verb, "resource": "pods"}}});
        admin
            .post(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                &review,
            )
            .expect(201, "a review")["status"]["allowed"]
            == true
    };
    wait_for("the NOTES' binding takes effect", TAKE_UP, || {
        if allowed("get") && allowed("patch") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    });
    assert!(!allowed("list") && !allowed("delete"), "only get and patch");

    // The injected pod, with the chart's defaults: the sidecar every check holds it to.
    let stored: Pod = serde_json::from_value(
        admin
            .get(&format!("{}/job-1", pods(&workers)))
            .expect(200, "the pod"),
    )
    .expect("a pod");
    let spec = stored.spec.as_ref().expect("a spec");
    let tracker = tracker_of(&stored);
    crate::sidecar_checks::assert_native_sidecar("injected pod", &tracker);
    crate::sidecar_checks::assert_token_in_tracker_only("injected pod", spec, &tracker);
    crate::sidecar_checks::assert_restricted_and_small("injected pod", spec, &tracker);
    assert_eq!(
        tracker.image.as_deref(),
        Some(
            format!(
                "ghcr.io/pod-webhook-tracker/pod-webhook-tracker:v{}",
                env!("CARGO_PKG_VERSION")
            )
            .as_str()
        )
    );
    drop(injector);
    drop(release);
}

/// The PATH of the NOTES' commands: the real kubectl first.
fn path_with_kubectl() -> String {
    let kubectl = testenv::tool("kubectl");
    let dir = kubectl.parent().expect("a folder").display().to_string();
    match std::env::var("PATH") {
        Ok(inherited) => format!("{dir}:{inherited}"),
        Err(_) => dir,
    }
}
