//! The API test double held to the real server: the same scenarios against both, the same
//! status codes, reasons and stored objects.
//!
//! Each scenario is a function of a [`Side`] (the double, or a namespace of the real cluster)
//! that writes down what it saw in a [`Transcript`]: what the API server answered raw requests
//! (status, reason, message, details), what the tracker answered its callers (status and
//! body), and the pod's labels and annotations afterwards. Both sides use the same namespace
//! name and the same user names (the double's users are named like the real service accounts),
//! so the transcripts must be equal, word for word. Adding a scenario is one entry in
//! [`SCENARIOS`].

#[path = "../support/mod.rs"]
mod support; // it allows dead code itself: each test file uses a different part of it

#[path = "scene.rs"]
#[allow(dead_code)] // each test file uses a different part of it
mod scene;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube_double::{ApiServer, Credentials, Restart, Rule, Subject, User};
use serde_json::{Value, json};

use scene::{Scene, get_and_patch_pods};
use support::{Tracker, TrackerBuilder};

/// The tracker's label and its jobs annotation.
const LABEL: &str = "active-jobs";
const JOBS: &str = "active-jobs-jobs";
const WRITES: &str = "active-jobs-writes";

/// Where a scenario runs: the double, or a namespace of the real cluster. Both have the same
/// identities: the administrator (`system:masters`), and the service accounts `tracker` (get
/// and patch on the namespace's pods, create on its events), `getter` (get only) and
/// `nobody` (no rights at all).
struct Side {
    name: &'static str,
    namespace: String,
    world: World,
    admin: Client,
    tracker: Client,
    nobody: Client,
    tracker_kubeconfig: PathBuf,
    /// `getter`: a tracker identity that may get pods but not patch them.
    getter_kubeconfig: PathBuf,
}

enum World {
    Double(ApiServer),
    Real,
}

/// A raw client of an API server, blocking: each answer as it came, headers included. kube's
/// own retries of 429, 503 and 504 are off (they would wait minutes on an eviction's 429 and
/// hide it).
struct Client {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
}

/// An API server's answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    /// JSON, or the text as a string when it is not JSON.
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body, after checking the status.
    fn expect(self, status: u16, what: &str) -> Value {
        assert_eq!(self.status, status, "{what}: {self:?}");
        self.body
    }
}

impl Client {
    fn from_kubeconfig(path: &Path) -> Client {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let client = runtime.block_on(async {
            let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("a kubeconfig");
            let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .expect("a usable kubeconfig");
            config.default_retry = false;
            config.read_timeout = Some(Duration::from_secs(60));
            kube::Client::try_from(config).expect("a client")
        });
        Client { runtime, client }
    }

    /// `method path` with `body` as `content_type`, or the error that kept it from an answer.
    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<Reply, String> {
        self.runtime
            .block_on(send(&self.client, method, path, body))
    }

    fn request(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Reply {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"))
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, None)
    }

    fn post(&self, path: &str, body: &Value) -> Reply {
        let body = body.to_string();
        self.request("POST", path, Some(("application/json", body.as_bytes())))
    }

    fn patch(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        self.request("PATCH", path, Some((content_type, body)))
    }

    fn merge_patch(&self, path: &str, patch: &Value) -> Reply {
        self.patch(
            path,
            "application/merge-patch+json",
            patch.to_string().as_bytes(),
        )
    }

    fn json_patch(&self, path: &str, patch: &Value) -> Reply {
        self.patch(
            path,
            "application/json-patch+json",
            patch.to_string().as_bytes(),
        )
    }
}

async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> Result<Reply, String> {
    use http_body_util::BodyExt;
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::ACCEPT, "application/json");
    if let Some((content_type, _)) = body {
        request = request.header(http::header::CONTENT_TYPE, content_type);
    }
    let bytes = body.map(|(_, b)| b.to_vec()).unwrap_or_default();
    let request = request.body(bytes).map_err(|e| e.to_string())?;
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// A service account's user name, as the real server names it.
fn account_user(namespace: &str, account: &str) -> User {
    User::new(format!("system:serviceaccount:{namespace}:{account}")).groups([
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{namespace}"),
    ])
}

impl Side {
    /// The double, serving `namespace` with the same identities as the real side; its
    /// kubeconfigs are written to `folder`.
    fn double(namespace: &str, folder: &Path) -> Side {
        let api = ApiServer::start();
        let kubeconfig = |who: &str, user: User| {
            let token = format!("{who}-token");
            api.add_token(&token, user);
            let path = folder.join(format!("{who}.kubeconfig"));
            let config = api.kubeconfig(&Credentials::token(token), namespace);
            std::fs::write(&path, config.to_string()).expect("a kubeconfig");
            path
        };
        let admin = kubeconfig("admin", User::admin("testenv-admin"));
        let tracker_kubeconfig = kubeconfig("tracker", account_user(namespace, "tracker"));
        let nobody = kubeconfig("nobody", account_user(namespace, "nobody"));
        let getter_kubeconfig = kubeconfig("getter", account_user(namespace, "getter"));
        let tracker_user = account_user(namespace, "tracker").name().to_owned();
        api.allow(
            Subject::user(&tracker_user),
            Rule::new(["get", "patch"], ["pods"]).namespace(namespace),
        );
        api.allow(
            Subject::user(tracker_user),
            Rule::new(["create"], ["events"]).namespace(namespace),
        );
        api.allow(
            Subject::user(account_user(namespace, "getter").name()),
            Rule::new(["get"], ["pods"]).namespace(namespace),
        );
        Side {
            name: "double",
            namespace: namespace.to_owned(),
            admin: Client::from_kubeconfig(&admin),
            tracker: Client::from_kubeconfig(&tracker_kubeconfig),
            nobody: Client::from_kubeconfig(&nobody),
            tracker_kubeconfig,
            getter_kubeconfig,
            world: World::Double(api),
        }
    }

    /// A fresh namespace of the real cluster.
    fn real() -> Side {
        let scene = Scene::new("agreement");
        let mut rules = get_and_patch_pods(&[]);
        rules
            .as_array_mut()
            .expect("a list of rules")
            .push(json!({"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}));
        scene.account("tracker", rules);
        scene.account(
            "getter",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
        );
        scene
            .admin()
            .post(
                &format!("/api/v1/namespaces/{}/serviceaccounts", scene.namespace),
                &json!({"metadata": {"name": "nobody"}}),
            )
            .expect(201, "create a service account without rights");
        let tracker_kubeconfig = scene.kubeconfig("tracker");
        let getter_kubeconfig = scene.kubeconfig("getter");
        let nobody = scene.kubeconfig("nobody");
        // RBAC changes take a moment to reach the authorizer.
        let missing = scene.pods_path(Some("none"));
        wait_not_forbidden(&tracker_kubeconfig, &missing);
        wait_not_forbidden(&getter_kubeconfig, &missing);
        Side {
            name: "real",
            namespace: scene.namespace.clone(),
            admin: Client::from_kubeconfig(scene.cluster.admin_kubeconfig()),
            tracker: Client::from_kubeconfig(&tracker_kubeconfig),
            nobody: Client::from_kubeconfig(&nobody),
            tracker_kubeconfig,
            getter_kubeconfig,
            world: World::Real,
        }
    }

    fn admin(&self) -> &Client {
        &self.admin
    }

    fn pods_path(&self, name: Option<&str>) -> String {
        let base = format!("/api/v1/namespaces/{}/pods", self.namespace);
        name.map_or(base.clone(), |name| format!("{base}/{name}"))
    }

    /// Creates a pod as the administrator (one container, not bound to a node unless `node`).
    fn pod(&self, name: &str, labels: &[(&str, &str)], node: Option<&str>) {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "job", "image": "busybox:1.37.0"}]},
        });
        if let Some(node) = node {
            pod["spec"]["nodeName"] = json!(node);
        }
        self.admin()
            .post(&self.pods_path(None), &pod)
            .expect(201, "create a pod");
    }

    /// Makes a pod Running, and ready or not (a failing readiness probe), as its kubelet
    /// would report it.
    fn run(&self, name: &str, ready: bool) {
        match &self.world {
            World::Double(api) => {
                api.set_phase(&self.namespace, name, "Running");
                api.set_ready(&self.namespace, name, ready);
            }
            World::Real => {
                let ready = if ready { "True" } else { "False" };
                let status = json!({"status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": ready}],
                }});
                self.admin()
                    .merge_patch(&format!("{}/status", self.pods_path(Some(name))), &status)
                    .expect(200, "set the pod's status");
            }
        }
    }

    /// The stored pod, as the administrator reads it.
    fn read_pod(&self, name: &str) -> Value {
        self.admin()
            .get(&self.pods_path(Some(name)))
            .expect(200, "read a pod")
    }

    /// A standalone tracker for the namespace, as `tracker`.
    fn standalone(&self) -> TrackerBuilder {
        Tracker::builder().args([
            format!("--kubeconfig={}", self.tracker_kubeconfig.display()),
            format!("--namespace={}", self.namespace),
            "--standalone=true".to_owned(),
        ])
    }

    /// A sidecar tracker of `pod`, as `tracker`.
    fn sidecar(&self, pod: &str) -> TrackerBuilder {
        Tracker::builder()
            .args([format!(
                "--kubeconfig={}",
                self.tracker_kubeconfig.display()
            )])
            .env("POD_NAME", pod)
            .env("POD_NAMESPACE", &self.namespace)
    }

    /// The events about `pod`: `(type, reason)`, sorted.
    fn event_reasons(&self, pod: &str) -> Vec<(String, String)> {
        let events: Vec<Value> = match &self.world {
            World::Double(api) => api
                .events()
                .into_iter()
                .filter(|e| e["involvedObject"]["name"] == pod)
                .collect(),
            World::Real => {
                let list = self
                    .admin()
                    .get(&format!(
                        "/api/v1/namespaces/{}/events?fieldSelector=involvedObject.name%3D{pod}",
                        self.namespace
                    ))
                    .expect(200, "list events");
                list["items"].as_array().cloned().unwrap_or_default()
            }
        };
        let mut reasons: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or_default().to_owned(),
                    e["reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        reasons.sort();
        reasons
    }
}

/// Waits until `kubeconfig`'s identity may `GET path` (a 404 is an answer it may see).
fn wait_not_forbidden(kubeconfig: &Path, path: &str) {
    let api = Client::from_kubeconfig(kubeconfig);
    let started = Instant::now();
    loop {
        let answer = api.get(path);
        if answer.status != 403 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the rights took effect: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a scenario saw, step by step.
#[derive(Debug, Default)]
struct Transcript {
    steps: Vec<(String, Value)>,
}

impl Transcript {
    fn record(&mut self, step: &str, value: Value) {
        self.steps.push((step.to_owned(), value));
    }

    /// An API server's answer: its status and, for a `Status`, everything but the
    /// boilerplate; for an object, its labels and annotations; anything else as it came.
    fn api(&mut self, step: &str, answer: &Reply) {
        let body = &answer.body;
        let seen = if body["kind"] == "Status" {
            let mut details = distinct_causes(&body["details"]);
            if let Some(causes) = details.get_mut("causes").and_then(Value::as_array_mut) {
                for cause in causes {
                    cause["message"] = json!(without_patched_object(&cause["message"]));
                }
            }
            json!({
                "status": body["status"],
                "code": body["code"],
                "reason": body["reason"],
                "message": without_patched_object(&body["message"]),
                "details": details,
            })
        } else if body["metadata"].is_object() {
            json!({"labels": body["metadata"]["labels"], "annotations": normalized_annotations(&body["metadata"]["annotations"])})
        } else {
            body.clone()
        };
        self.record(step, json!({"status": answer.status, "body": seen}));
    }

    /// The tracker's answer: its status and body.
    fn tracker(&mut self, step: &str, answer: &support::Answer) {
        self.record(
            step,
            json!({"status": answer.status, "body": answer.body.trim()}),
        );
    }

    /// The pod's labels and annotations as stored.
    fn pod(&mut self, step: &str, side: &Side, name: &str) {
        let pod = side.read_pod(name);
        self.record(
            step,
            json!({
                "labels": pod["metadata"]["labels"],
                "annotations": normalized_annotations(&pod["metadata"]["annotations"]),
            }),
        );
    }
}

/// A message with the patched object that a decoding error quotes (`patch: Invalid value:
/// "{...the whole pod...}": json: cannot unmarshal ...`) left out: the pods differ in what
/// the servers make up (uids, times, managed fields, defaulted volumes).
fn without_patched_object(message: &Value) -> String {
    let text = message.as_str().unwrap_or_default();
    match (text.find("Invalid value: \"{"), text.rfind("}\": json: ")) {
        (Some(start), Some(end)) if start < end => format!(
            "{}Invalid value: \"<the patched object>{}",
            &text[..start],
            &text[end + 1..]
        ),
        _ => text.to_owned(),
    }
}

/// Wordings of the v1.19 server the double's recordings come from (`tests/recorded`), where a
/// v1.37 server words the same answer differently: the double keeps the recorded one so that
/// the recordings replay. Each is replaced by v1.37's in the double's transcript before the
/// comparison; anything else must agree as it is.
const RECORDED_WORDING: &[(&str, &str)] = &[
    // A label value's length (apimachinery's validation now counts bytes).
    (
        "must be no more than 63 characters",
        "must be no more than 63 bytes",
    ),
];

fn as_v1_37(step: &Value) -> Value {
    let mut text = step.to_string();
    for (recorded, current) in RECORDED_WORDING {
        text = text.replace(recorded, current);
    }
    serde_json::from_str(&text).expect("still JSON")
}

/// `details` with each distinct cause once. kube-apiserver v1.19 (the double's recordings)
/// repeats a label's field error once for every time an update validated the object meta
/// (four causes for one bad label); v1.37 gives it once. The message, which the tracker
/// reads, is the same; the double keeps the recorded repetition (see the report of #22).
fn distinct_causes(details: &Value) -> Value {
    let mut details = details.clone();
    if let Some(causes) = details.get_mut("causes").and_then(Value::as_array_mut) {
        let mut seen = Vec::new();
        causes.retain(|cause| {
            let new = !seen.contains(cause);
            if new {
                seen.push(cause.clone());
            }
            new
        });
    }
    details
}

/// Annotations with the tracker's own annotations made comparable: in the jobs annotation,
/// start and deadline in Unix seconds differ from run to run, the lifetime (`d - s`) does
/// not; in the write marker (`ID-N ...`), each tracker process has its own random `ID`, the
/// sequence numbers are the same.
fn normalized_annotations(annotations: &Value) -> Value {
    let mut annotations = annotations.clone();
    if let Some(writes) = annotations.get_mut(WRITES)
        && let Some(text) = writes.as_str()
    {
        let numbers: Vec<&str> = text
            .split_whitespace()
            .map(|write| write.rsplit_once('-').map_or(write, |(_, n)| n))
            .collect();
        *writes = json!(numbers.join(" "));
    }
    if let Some(jobs) = annotations.get_mut(JOBS)
        && let Some(text) = jobs.as_str()
        && let Ok(mut parsed) = serde_json::from_str::<Value>(text)
    {
        if let Some(map) = parsed["jobs"].as_object_mut() {
            for job in map.values_mut() {
                let start = job["s"].as_u64();
                let deadline = job["d"].as_u64();
                *job = json!({
                    "started": start.is_some(),
                    "lifetime": deadline.zip(start).map(|(d, s)| d - s),
                });
            }
        }
        *jobs = parsed;
    }
    annotations
}

/// A scenario: a name (what it checks) and what it does on a side.
type Scenario = (&'static str, fn(&Side, &mut Transcript));

/// Every scenario; each runs on both sides and must give the same transcript.
const SCENARIOS: &[Scenario] = &[
    ("a JSON patch whose test fails", json_patch_failing_test),
    (
        "a JSON patch testing null on an absent label",
        json_patch_test_null,
    ),
    (
        "a JSON patch removing or replacing an absent label",
        json_patch_absent,
    ),
    (
        "patches the server cannot decode or apply",
        malformed_patches,
    ),
    ("a label value of -1", negative_label),
    ("a label value over 63 characters", long_label),
    ("a label of the wrong type", label_of_the_wrong_type),
    ("annotations over 256 KiB", annotations_too_long),
    ("a merge patch setting and removing labels", merge_patch),
    (
        "a merge patch with a stale resourceVersion",
        stale_merge_patch,
    ),
    ("a GET of a missing pod", missing_pod),
    ("a user without rights", forbidden),
    (
        "an eviction of a busy pod under the README's budget",
        eviction,
    ),
    (
        "an eviction of a busy pod that is not ready",
        unready_eviction,
    ),
    ("counting up and down", counting),
    ("keyed jobs and Idempotency-Key", keyed_jobs),
    (
        "active annotations and the pod-deletion cost",
        active_annotations,
    ),
    ("a new job on a deleting pod", deleting_pod),
    ("a tracker that may not patch", tracker_without_patch),
    ("a tracker about a missing pod", tracker_missing_pod),
    ("busy and idle events", events),
];

fn json_patch_failing_test(side: &Side, t: &mut Transcript) {
    side.pod("failing-test", &[(LABEL, "2")], None);
    let path = side.pods_path(Some("failing-test"));
    let answer = side.tracker.json_patch(
        &path,
        &json!([
            {"op": "test", "path": "/metadata/labels/active-jobs", "value": "1"},
            {"op": "replace", "path": "/metadata/labels/active-jobs", "value": "3"},
        ]),
    );
    t.api("test 1 when the label is 2", &answer);
    t.pod("unchanged", side, "failing-test");
}

fn json_patch_test_null(side: &Side, t: &mut Transcript) {
    side.pod("test-null", &[("app", "worker")], None);
    let path = side.pods_path(Some("test-null"));
    let answer = side.tracker.json_patch(
        &path,
        &json!([
            {"op": "test", "path": "/metadata/labels/active-jobs", "value": null},
            {"op": "add", "path": "/metadata/labels/active-jobs", "value": "1"},
        ]),
    );
    t.api("test null then add", &answer);
    let answer = side.tracker.json_patch(
        &path,
        &json!([{"op": "test", "path": "/metadata/annotations/active-jobs-writes", "value": null}]),
    );
    t.api("test null under an absent annotations map", &answer);
    t.pod("after", side, "test-null");
}

fn json_patch_absent(side: &Side, t: &mut Transcript) {
    side.pod("absent", &[("app", "worker")], None);
    let path = side.pods_path(Some("absent"));
    let answer = side.tracker.json_patch(
        &path,
        &json!([{"op": "remove", "path": "/metadata/labels/active-jobs"}]),
    );
    t.api("remove an absent label", &answer);
    t.pod("unchanged", side, "absent");
    let answer = side.tracker.json_patch(
        &path,
        &json!([{"op": "replace", "path": "/metadata/labels/active-jobs", "value": "1"}]),
    );
    t.api("replace an absent label", &answer);
    let answer = side.tracker.json_patch(
        &path,
        &json!([{"op": "replace", "path": "/metadata/annotations/active-jobs-writes", "value": "x"}]),
    );
    t.api("replace under an absent annotations map", &answer);
    t.pod("after", side, "absent");
}

fn malformed_patches(side: &Side, t: &mut Transcript) {
    side.pod("malformed", &[("app", "worker")], None);
    let path = side.pods_path(Some("malformed"));
    const JSON: &str = "application/json-patch+json";
    const MERGE: &str = "application/merge-patch+json";
    const STRATEGIC: &str = "application/strategic-merge-patch+json";
    // A merge patch that is not JSON is left out: the double answers it as the recorded
    // v1.19 server did (500 "Invalid JSON Patch"), v1.37 answers 400 "invalid JSON patch".
    for (content_type, body) in [
        (JSON, "[{"),
        (JSON, ""),
        (JSON, "true"),
        (JSON, "[1]"),
        (JSON, "null"),
        (JSON, "[null]"),
        (
            JSON,
            r#"[{"op": "frobnicate", "path": "/metadata/labels/a"}]"#,
        ),
        (JSON, r#"[{"op": "add"}]"#),
        (MERGE, "null"),
        (MERGE, "[]"),
        (MERGE, "1"),
        (STRATEGIC, "{not json"),
        (STRATEGIC, "[]"),
        (STRATEGIC, "null"),
        ("text/plain", "x"),
    ] {
        let answer = side.tracker.patch(&path, content_type, body.as_bytes());
        t.api(&format!("{content_type} {body}"), &answer);
    }
    t.pod("unchanged", side, "malformed");
}

fn negative_label(side: &Side, t: &mut Transcript) {
    side.pod("negative", &[("app", "worker")], None);
    let path = side.pods_path(Some("negative"));
    let answer = side.tracker.merge_patch(
        &path,
        &json!({"metadata": {"labels": {"active-jobs": "-1"}}}),
    );
    t.api("merge patch to -1", &answer);
    let answer = side.tracker.json_patch(
        &path,
        &json!([{"op": "add", "path": "/metadata/labels/active-jobs", "value": "-1"}]),
    );
    t.api("JSON patch to -1", &answer);
    t.pod("unchanged", side, "negative");
}

fn long_label(side: &Side, t: &mut Transcript) {
    side.pod("long-label", &[], None);
    let answer = side.tracker.merge_patch(
        &side.pods_path(Some("long-label")),
        &json!({"metadata": {"labels": {"active-jobs": "1".repeat(64)}}}),
    );
    t.api("64 digits", &answer);
}

fn label_of_the_wrong_type(side: &Side, t: &mut Transcript) {
    side.pod("wrong-type", &[], None);
    let answer = side.tracker.merge_patch(
        &side.pods_path(Some("wrong-type")),
        &json!({"metadata": {"labels": {"active-jobs": 1}}}),
    );
    t.api("a number", &answer);
}

fn annotations_too_long(side: &Side, t: &mut Transcript) {
    side.pod("big", &[], None);
    let answer = side.tracker.merge_patch(
        &side.pods_path(Some("big")),
        &json!({"metadata": {"annotations": {"big": "x".repeat(256 * 1024)}}}),
    );
    t.api("one of 256 KiB and its key", &answer);
    t.pod("unchanged", side, "big");
}

fn merge_patch(side: &Side, t: &mut Transcript) {
    side.pod("merge", &[("app", "worker")], None);
    let path = side.pods_path(Some("merge"));
    let answer = side.tracker.merge_patch(
        &path,
        &json!({"metadata": {"labels": {"active-jobs": "1"}, "annotations": {"note": "x"}}}),
    );
    t.api("set a label and an annotation", &answer);
    let answer = side.tracker.merge_patch(
        &path,
        &json!({"metadata": {"labels": {"active-jobs": null, "absent": null}}}),
    );
    t.api("remove it (and one that is absent)", &answer);
    t.pod("after", side, "merge");
}

fn stale_merge_patch(side: &Side, t: &mut Transcript) {
    side.pod("stale", &[], None);
    let path = side.pods_path(Some("stale"));
    let answer = side.tracker.merge_patch(
        &path,
        &json!({"metadata": {"resourceVersion": "1", "labels": {"active-jobs": "1"}}}),
    );
    t.api("patch with resourceVersion 1", &answer);
    t.pod("unchanged", side, "stale");
}

fn missing_pod(side: &Side, t: &mut Transcript) {
    let path = side.pods_path(Some("does-not-exist"));
    t.api("get", &side.tracker.get(&path));
    t.api(
        "merge patch",
        &side.tracker.merge_patch(
            &path,
            &json!({"metadata": {"labels": {"active-jobs": "1"}}}),
        ),
    );
    t.api(
        "JSON patch",
        &side.tracker.json_patch(
            &path,
            &json!([{"op": "test", "path": "/metadata/labels/active-jobs", "value": null}]),
        ),
    );
}

fn forbidden(side: &Side, t: &mut Transcript) {
    side.pod("forbidden", &[], None);
    let path = side.pods_path(Some("forbidden"));
    t.api("get", &side.nobody.get(&path));
    t.api(
        "get a missing pod",
        &side.nobody.get(&side.pods_path(Some("nothing"))),
    );
    t.api(
        "patch",
        &side.nobody.merge_patch(
            &path,
            &json!({"metadata": {"labels": {"active-jobs": "1"}}}),
        ),
    );
    t.api("list", &side.nobody.get(&side.pods_path(None)));
    t.api(
        "list by the tracker (get and patch only)",
        &side.tracker.get(&side.pods_path(None)),
    );
    t.api(
        "evict by the tracker",
        &side.tracker.post(
            &eviction_path(side, "forbidden"),
            &eviction_body(side, "forbidden"),
        ),
    );
    t.api("delete by the tracker", &side.tracker.delete(&path));
    t.pod("unchanged", side, "forbidden");
}

/// The budget at the top of the README (`minAvailable: 9999`, `IfHealthyBudget`), or with
/// `policy` as its `unhealthyPodEvictionPolicy`, for pods labelled `app: <app>`.
fn budget(side: &Side, name: &str, app: &str, policy: &str) {
    let budget = json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name},
        "spec": {
            "minAvailable": 9999,
            "unhealthyPodEvictionPolicy": policy,
            "selector": {
                "matchLabels": {"app": app},
                "matchExpressions": [{"key": LABEL, "operator": "Exists"}],
            },
        },
    });
    side.admin()
        .post(&budgets_path(side, None), &budget)
        .expect(201, "create the budget");
}

fn budgets_path(side: &Side, name: Option<&str>) -> String {
    let base = format!(
        "/apis/policy/v1/namespaces/{}/poddisruptionbudgets",
        side.namespace
    );
    name.map_or(base.clone(), |name| format!("{base}/{name}"))
}

fn eviction_path(side: &Side, pod: &str) -> String {
    format!("{}/eviction", side.pods_path(Some(pod)))
}

fn eviction_body(side: &Side, pod: &str) -> Value {
    json!({"apiVersion": "policy/v1", "kind": "Eviction",
           "metadata": {"name": pod, "namespace": side.namespace}})
}

/// Waits until the disruption controller has processed budget `name` and counts `expected`
/// pods (it recomputes a budget when a pod it selects changes), then records its status:
/// what the eviction's refusal quotes.
fn settled_budget(side: &Side, t: &mut Transcript, name: &str, expected: u64) {
    let started = Instant::now();
    let status = loop {
        let pdb = side
            .admin()
            .get(&budgets_path(side, Some(name)))
            .expect(200, "read the budget");
        let status = &pdb["status"];
        if status["observedGeneration"] == pdb["metadata"]["generation"]
            && status["expectedPods"].as_u64() == Some(expected)
        {
            break status.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the disruption controller counted {expected} pods for the budget: {pdb}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut status = status;
    // When the condition last changed is the controller's clock, not an answer.
    if let Some(conditions) = status["conditions"].as_array_mut() {
        for condition in conditions {
            condition["lastTransitionTime"] = json!("(a time)");
        }
    }
    t.record(&format!("budget {name}"), status);
}

fn eviction(side: &Side, t: &mut Transcript) {
    side.pod("evictable", &[("app", "evictable")], None);
    side.run("evictable", true);
    budget(side, "busy-workers", "evictable", "IfHealthyBudget");
    let tracker = side.standalone().start();
    t.tracker(
        "increment",
        &tracker.increment("pod_name=evictable&job=work"),
    );
    settled_budget(side, t, "busy-workers", 1);
    let evict = || {
        side.admin().post(
            &eviction_path(side, "evictable"),
            &eviction_body(side, "evictable"),
        )
    };
    t.api("evict while busy", &evict());
    t.pod("still there", side, "evictable");
    t.tracker(
        "decrement",
        &tracker.decrement("pod_name=evictable&job=work"),
    );
    // An idle pod is selected by no budget: the eviction does not look at any status.
    t.api("evict when idle", &evict());
    let gone = side.admin().get(&side.pods_path(Some("evictable")));
    t.api("the pod afterwards", &gone);
}

fn unready_eviction(side: &Side, t: &mut Transcript) {
    for (pod, policy) in [
        ("unready-if-healthy", "IfHealthyBudget"),
        ("unready-always", "AlwaysAllow"),
    ] {
        side.pod(pod, &[("app", pod), (LABEL, "1")], None);
        side.run(pod, false);
        budget(side, pod, pod, policy);
        settled_budget(side, t, pod, 1);
        let answer = side
            .admin()
            .post(&eviction_path(side, pod), &eviction_body(side, pod));
        t.api(&format!("evict under {policy}"), &answer);
        let after = side.admin().get(&side.pods_path(Some(pod)));
        t.record(
            "the pod afterwards",
            json!({"status": after.status, "labels": after.body["metadata"]["labels"]}),
        );
    }
}

fn counting(side: &Side, t: &mut Transcript) {
    side.pod("counted", &[("app", "worker")], None);
    let tracker = side.standalone().start();
    t.tracker("increment", &tracker.increment("pod_name=counted"));
    t.tracker("increment", &tracker.increment("pod_name=counted"));
    t.pod("busy", side, "counted");
    t.tracker("decrement", &tracker.decrement("pod_name=counted"));
    t.tracker("decrement", &tracker.decrement("pod_name=counted"));
    t.tracker(
        "decrement below zero",
        &tracker.decrement("pod_name=counted"),
    );
    t.pod("idle", side, "counted");
}

fn keyed_jobs(side: &Side, t: &mut Transcript) {
    side.pod("keyed", &[], None);
    let tracker = side.standalone().start();
    t.tracker("start A", &tracker.increment("pod_name=keyed&job=A&ttl=1h"));
    t.tracker("start A again", &tracker.increment("pod_name=keyed&job=A"));
    let by_header = [("Idempotency-Key", "B")];
    t.tracker(
        "start B by header",
        &tracker.request("POST", "/increment?pod_name=keyed", &by_header),
    );
    t.tracker(
        "start B again",
        &tracker.request("POST", "/increment?pod_name=keyed", &by_header),
    );
    t.pod("two jobs", side, "keyed");
    t.tracker("end A", &tracker.decrement("pod_name=keyed&job=A"));
    t.tracker("end A again", &tracker.decrement("pod_name=keyed&job=A"));
    t.tracker(
        "renew an ended job",
        &tracker.request("POST", "/renew?pod_name=keyed&job=A", &[]),
    );
    t.tracker(
        "end B by header",
        &tracker.request("POST", "/decrement?pod_name=keyed", &by_header),
    );
    t.pod("no jobs", side, "keyed");
}

fn active_annotations(side: &Side, t: &mut Transcript) {
    side.pod("annotated", &[], None);
    side.admin()
        .merge_patch(
            &side.pods_path(Some("annotated")),
            &json!({"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-5"}}}),
        )
        .expect(200, "annotate the pod");
    let tracker = side
        .standalone()
        .args([
            "--active-annotation=karpenter.sh/do-not-disrupt=true",
            "--pod-deletion-cost=10000",
        ])
        .start();
    t.tracker("increment", &tracker.increment("pod_name=annotated"));
    t.tracker("keyed", &tracker.increment("pod_name=annotated&job=k"));
    t.pod("busy", side, "annotated");
    t.tracker("decrement", &tracker.decrement("pod_name=annotated"));
    t.tracker("end", &tracker.decrement("pod_name=annotated&job=k"));
    t.pod("idle", side, "annotated");
}

fn deleting_pod(side: &Side, t: &mut Transcript) {
    // Bound to a node (that does not exist): deleting it is graceful, and with no kubelet
    // to finish it the pod stays, being deleted.
    side.pod("deleting", &[], Some("node-1"));
    let tracker = side.standalone().start();
    t.tracker("start a", &tracker.increment("pod_name=deleting&job=a"));
    let deleted = side.admin().delete(&side.pods_path(Some("deleting")));
    t.record(
        "delete",
        json!({"status": deleted.status, "grace": deleted.body["metadata"]["deletionGracePeriodSeconds"]}),
    );
    let refused = tracker.increment("pod_name=deleting&job=b");
    t.record(
        "start b",
        json!({"status": refused.status, "retry-after": refused.header("retry-after").is_some()}),
    );
    t.tracker(
        "start a again",
        &tracker.increment("pod_name=deleting&job=a"),
    );
    t.tracker("end a", &tracker.decrement("pod_name=deleting&job=a"));
    t.pod("after", side, "deleting");
}

fn tracker_without_patch(side: &Side, t: &mut Transcript) {
    side.pod("unpatchable", &[], None);
    let tracker = Tracker::builder()
        .args([
            format!("--kubeconfig={}", side.getter_kubeconfig.display()),
            format!("--namespace={}", side.namespace),
            "--standalone=true".to_owned(),
            "--retry-timeout=0".to_owned(),
        ])
        .start();
    t.tracker("increment", &tracker.increment("pod_name=unpatchable"));
    t.pod("unchanged", side, "unpatchable");
}

fn tracker_missing_pod(side: &Side, t: &mut Transcript) {
    let tracker = side.standalone().start();
    t.tracker("increment", &tracker.increment("pod_name=nowhere"));
}

fn events(side: &Side, t: &mut Transcript) {
    side.pod("eventful", &[], None);
    let tracker = side.sidecar("eventful").args(["--events"]).start();
    tracker.wait_ready();
    t.tracker("increment", &tracker.increment(""));
    t.tracker("decrement", &tracker.decrement(""));
    // Events are written in the background: wait (bounded) for two.
    let started = Instant::now();
    while side.event_reasons("eventful").len() < 2 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    t.record("events", json!(side.event_reasons("eventful")));
}

/// Runs every scenario on `side`.
fn transcripts(side: &Side) -> Vec<(&'static str, Transcript)> {
    SCENARIOS
        .iter()
        .map(|(name, scenario)| {
            let mut transcript = Transcript::default();
            scenario(side, &mut transcript);
            (*name, transcript)
        })
        .collect()
}

#[test]
fn the_double_answers_every_scenario_as_the_real_server_does() {
    let real = Side::real();
    let folder = testenv::Cluster::shared().scratch(&format!("double-{}", real.namespace));
    let double = Side::double(&real.namespace, &folder);
    let (real_seen, double_seen) = std::thread::scope(|scope| {
        let real_run = scope.spawn(|| transcripts(&real));
        let double_seen = transcripts(&double);
        (real_run.join().expect("the real side ran"), double_seen)
    });
    let mut differences = Vec::new();
    for ((name, real_t), (_, double_t)) in real_seen.iter().zip(&double_seen) {
        let steps = real_t.steps.len().max(double_t.steps.len());
        for i in 0..steps {
            let r = real_t.steps.get(i);
            let d = double_t
                .steps
                .get(i)
                .map(|(step, seen)| (step.clone(), as_v1_37(seen)));
            if r != d.as_ref() {
                let show = |step: Option<&(String, Value)>| {
                    step.map_or("(none)".to_owned(), |(s, v)| format!("{s}: {v}"))
                };
                differences.push(format!(
                    "{name}, step {}:\n  {}: {}\n  {}: {}",
                    i + 1,
                    real.name,
                    show(r),
                    double.name,
                    show(d.as_ref()),
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} difference(s) between the real server and the double:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// What a client sees of a refusal by API Priority and Fairness (or the max-in-flight
/// filter): the status, the headers that say what the body is and when to try again, and the
/// body itself.
fn throttled_answer(reply: &Reply) -> Value {
    json!({
        "status": reply.status,
        "content-type": reply.header("content-type"),
        "x-content-type-options": reply.header("x-content-type-options"),
        "retry-after": reply.header("retry-after"),
        "body": reply.body,
    })
}

#[test]
fn the_doubles_429_while_throttling_is_the_real_servers_plain_text_answer() {
    // A server of its own that admits one read at a time (and no API Priority and Fairness,
    // whose queues would make concurrent reads wait instead): concurrent reads by a service
    // account meet its max-in-flight filter.
    let cluster = testenv::Cluster::start(testenv::Options {
        controller_manager: false,
        apiserver_flags: vec![
            "--enable-priority-and-fairness=false".to_owned(),
            "--max-requests-inflight=1".to_owned(),
        ],
    });
    let namespace = cluster.namespace("throttled");
    let token = cluster.token(&namespace, "default", &[], None);
    let kubeconfig =
        cluster.kubeconfig("throttled", &testenv::Credentials::Token(token), &namespace);
    let reader = Client::from_kubeconfig(&kubeconfig);
    let path = format!("/api/v1/namespaces/{namespace}/pods");
    let started = Instant::now();
    let real = loop {
        let replies = reader.runtime.block_on(futures_util::future::join_all(
            (0..40).map(|_| send(&reader.client, "GET", &path, None)),
        ));
        if let Some(throttled) = replies.into_iter().flatten().find(|r| r.status == 429) {
            break throttled;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "40 concurrent reads at a time met the max-in-flight filter"
        );
    };

    let double = Side::double(&namespace, &cluster.scratch("restarted-double"));
    let World::Double(api) = &double.world else {
        unreachable!("a double")
    };
    api.restart(
        Restart::new()
            .now()
            .down_for(Duration::from_millis(10))
            .forbidden_for(Duration::ZERO)
            .throttled_for(Duration::from_secs(60), 1),
    );
    let started = Instant::now();
    let throttled = loop {
        // Refused while it is down; then throttled.
        if let Ok(reply) = double
            .tracker
            .try_request("GET", &double.pods_path(None), None)
            && reply.status == 429
        {
            break reply;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the restarted double throttles"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(throttled_answer(&throttled), throttled_answer(&real));
    assert_eq!(
        real.body,
        json!("Too many requests, please try again later.\n"),
        "plain text, not a Status"
    );

    // The double's injected 429 is the same answer.
    let double = Side::double(&namespace, &cluster.scratch("injecting-double"));
    let World::Double(api) = &double.world else {
        unreachable!("a double")
    };
    api.inject(kube_double::Fault::status(429));
    let injected = double.tracker.get(&double.pods_path(None));
    assert_eq!(throttled_answer(&injected), throttled_answer(&real));
}
