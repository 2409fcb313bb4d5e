//! Watches of pods and disruption budgets on the double: each change of a selected object
//! arrives as one event line of a chunked answer, from the version a list gave (or with every
//! object `ADDED` first), an object that stops matching leaves as `DELETED`, budgets follow their
//! pods' readiness, a forgotten version is an `ERROR` 410, and the watch is authorized as
//! `watch`.

mod client;

use std::time::Duration;

use bytes::Bytes;
use client::Connection;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kube_double::{ApiServer, NewPod, Outcome, Rule, Subject, User, Verb};
use serde_json::{Value, json};

const NS: &str = "ci";
const TOKEN: &str = "watcher-token";
/// How long an expected event may take.
const LIMIT: Duration = Duration::from_secs(10);

/// A double where `watcher` may list and watch pods and budgets in [`NS`].
fn api() -> ApiServer {
    let api = ApiServer::start();
    api.add_token(TOKEN, User::new("watcher"));
    api.allow(
        Subject::user("watcher"),
        Rule::new(["list", "watch"], ["pods", "poddisruptionbudgets"]).namespace(NS),
    );
    api
}

/// One watch's answer, read event by event.
struct Watching {
    runtime: tokio::runtime::Runtime,
    status: u16,
    content_type: Option<String>,
    body: Option<Incoming>,
    buffered: Vec<u8>,
}

impl Watching {
    fn open(api: &ApiServer, path: &str) -> Watching {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let response = runtime.block_on(async {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", api.port()))
                .await
                .expect("the double listens");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("an HTTP/1.1 connection");
            tokio::spawn(connection);
            let request = hyper::Request::get(path)
                .header("Host", "kube-double")
                .header("Authorization", format!("Bearer {TOKEN}"))
                .body(Empty::<Bytes>::new())
                .expect("a request");
            tokio::time::timeout(LIMIT, sender.send_request(request))
                .await
                .expect("answered in time")
                .expect("an answer")
        });
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Watching {
            runtime,
            status,
            content_type,
            body: Some(response.into_body()),
            buffered: Vec::new(),
        }
    }

    /// The next event, or `None` if none arrives within `limit` or the stream ends.
    fn next_within(&mut self, limit: Duration) -> Option<Value> {
        loop {
            if let Some(end) = self.buffered.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffered.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).expect("an event is a JSON line"));
            }
            let body = self.body.as_mut()?;
            let frame = self
                .runtime
                .block_on(async { tokio::time::timeout(limit, body.frame()).await });
            match frame {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffered.extend_from_slice(&data);
                    }
                }
                Ok(_) => {
                    self.body = None;
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    fn next(&mut self) -> Value {
        self.next_within(LIMIT).expect("an event in time")
    }

    /// Whether the stream has ended (within `limit`).
    fn ended_within(&mut self, limit: Duration) -> bool {
        self.next_within(limit).is_none() && self.body.is_none()
    }
}

/// `TYPE namespace/name` of an event, with the pod's `active-jobs` label when it has one.
fn summary(event: &Value) -> String {
    let object = &event["object"];
    let label = object["metadata"]["labels"]["active-jobs"]
        .as_str()
        .map(|v| format!(" active-jobs={v}"))
        .unwrap_or_default();
    format!(
        "{} {}/{}{label}",
        event["type"].as_str().unwrap_or_default(),
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

fn list_version(api: &ApiServer, path: &str) -> String {
    let mut connection = Connection::open(api);
    let answer = connection.send(
        "GET",
        path,
        &[("Authorization".to_owned(), format!("Bearer {TOKEN}"))],
        None,
    );
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["metadata"]["resourceVersion"]
        .as_str()
        .expect("a list's version")
        .to_owned()
}

#[test]
fn a_watch_from_a_lists_version_streams_each_change_of_the_pods_it_selects() {
    let api = api();
    api.create_pod(NS, "runner-0", &[("app", "runner")]);
    api.create_pod(NS, "runner-1", &[("app", "runner")]);
    api.create_pod("elsewhere", "runner-2", &[("app", "runner")]);
    let version = list_version(&api, "/api/v1/namespaces/ci/pods?labelSelector=active-jobs");
    let mut watch = Watching::open(
        &api,
        &format!(
            "/api/v1/namespaces/ci/pods?watch=true&labelSelector=active-jobs&resourceVersion={version}"
        ),
    );
    assert_eq!(watch.status, 200);
    assert_eq!(watch.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        watch.next_within(Duration::from_millis(300)),
        None,
        "nothing changed yet"
    );
    api.set_label(NS, "runner-0", "active-jobs", Some("1"));
    let added = watch.next();
    assert_eq!(summary(&added), "ADDED ci/runner-0 active-jobs=1");
    assert_eq!(
        added["object"]["kind"], "Pod",
        "a watch's objects carry their kind"
    );
    assert_eq!(
        added["object"]["metadata"]["resourceVersion"],
        json!(api.resource_version(NS, "runner-0").expect("a version"))
    );
    api.set_label(NS, "runner-0", "active-jobs", Some("2"));
    assert_eq!(summary(&watch.next()), "MODIFIED ci/runner-0 active-jobs=2");
    // Neither a pod without the label nor one in another namespace is watched.
    api.set_label(NS, "runner-1", "app", Some("other"));
    api.set_label("elsewhere", "runner-2", "active-jobs", Some("1"));
    api.set_label(NS, "runner-0", "active-jobs", None);
    assert_eq!(
        summary(&watch.next()),
        "DELETED ci/runner-0 active-jobs=2",
        "a pod whose label went leaves the selection as it was last seen"
    );
    api.set_label(NS, "runner-1", "active-jobs", Some("1"));
    assert_eq!(summary(&watch.next()), "ADDED ci/runner-1 active-jobs=1");
    assert!(api.remove_pod(NS, "runner-1"));
    assert_eq!(summary(&watch.next()), "DELETED ci/runner-1 active-jobs=1");
    assert_eq!(api.count(Verb::Watch, Outcome::Status(200)), 1);
}

#[test]
fn a_watch_without_a_version_starts_with_every_selected_pod_added() {
    let api = api();
    api.add_pod(
        NewPod::new(NS, "a")
            .label("active-jobs", "1")
            .node("node-a"),
    );
    api.add_pod(
        NewPod::new(NS, "b")
            .label("active-jobs", "2")
            .node("node-b"),
    );
    api.add_pod(NewPod::new(NS, "c").node("node-a"));
    let mut watch = Watching::open(
        &api,
        "/api/v1/namespaces/ci/pods?watch=1&labelSelector=active-jobs&fieldSelector=spec.nodeName%3Dnode-a",
    );
    assert_eq!(summary(&watch.next()), "ADDED ci/a active-jobs=1");
    assert_eq!(
        watch.next_within(Duration::from_millis(300)),
        None,
        "b is on another node"
    );
}

#[test]
fn a_watch_from_an_earlier_version_gets_the_changes_made_since() {
    let api = api();
    api.create_pod(NS, "a", &[("active-jobs", "1")]);
    api.create_pod(NS, "b", &[("active-jobs", "1")]);
    let version = list_version(&api, "/api/v1/namespaces/ci/pods");
    api.set_label(NS, "a", "active-jobs", Some("5"));
    assert!(api.remove_pod(NS, "b"));
    api.create_pod(NS, "c", &[("active-jobs", "1")]);
    let mut watch = Watching::open(
        &api,
        &format!("/api/v1/namespaces/ci/pods?watch=true&resourceVersion={version}"),
    );
    let mut seen = vec![
        summary(&watch.next()),
        summary(&watch.next()),
        summary(&watch.next()),
    ];
    seen.sort();
    assert_eq!(
        seen,
        [
            "ADDED ci/c active-jobs=1",
            "DELETED ci/b active-jobs=1",
            "MODIFIED ci/a active-jobs=5"
        ]
    );
    assert_eq!(watch.next_within(Duration::from_millis(300)), None);
}

#[test]
fn a_watch_from_a_version_the_store_forgot_ends_with_410_expired() {
    let api = api();
    api.create_pod(NS, "a", &[("active-jobs", "1")]);
    let version = list_version(&api, "/api/v1/namespaces/ci/pods");
    api.set_label(NS, "a", "active-jobs", Some("2"));
    api.compact();
    let mut watch = Watching::open(
        &api,
        &format!("/api/v1/namespaces/ci/pods?watch=true&resourceVersion={version}"),
    );
    assert_eq!(
        watch.status, 200,
        "the error comes in the stream, as a server's does"
    );
    let error = watch.next();
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert!(
        error["object"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("too old resource version: {version} ("))),
        "{error}"
    );
    assert!(watch.ended_within(LIMIT));
}

#[test]
fn a_budgets_watch_follows_its_pods_readiness() {
    let api = api();
    api.create_pdb(
        NS,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "busy"},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "runner"}}}}),
    );
    api.add_pod(NewPod::new(NS, "a").label("app", "runner").phase("Running"));
    let mut watch = Watching::open(
        &api,
        "/apis/policy/v1/namespaces/ci/poddisruptionbudgets?watch=true",
    );
    let added = watch.next();
    assert_eq!(added["type"], "ADDED");
    assert_eq!(added["object"]["kind"], "PodDisruptionBudget");
    assert_eq!(added["object"]["status"]["disruptionsAllowed"], 0);
    api.add_pod(NewPod::new(NS, "b").label("app", "runner").phase("Running"));
    let modified = watch.next();
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"]["status"]["currentHealthy"], 2);
    assert_eq!(modified["object"]["status"]["disruptionsAllowed"], 1);
    api.set_ready(NS, "b", false);
    assert_eq!(watch.next()["object"]["status"]["disruptionsAllowed"], 0);
    assert!(api.delete_pdb(NS, "busy"));
    assert_eq!(watch.next()["type"], "DELETED");
}

#[test]
fn a_watch_ends_after_its_timeout_and_when_the_server_goes_away() {
    let api = api();
    let mut watch = Watching::open(
        &api,
        "/api/v1/namespaces/ci/pods?watch=true&timeoutSeconds=1",
    );
    assert_eq!(watch.status, 200);
    assert!(
        watch.ended_within(Duration::from_secs(5)),
        "closed after a second"
    );
    let mut watch = Watching::open(&api, "/api/v1/namespaces/ci/pods?watch=true");
    api.go_away();
    assert!(
        watch.ended_within(Duration::from_secs(5)),
        "cut with the server"
    );
}

#[test]
fn a_watch_is_authorized_as_watch_and_checked_as_a_list_is() {
    let api = api();
    api.add_token("lister", User::new("lister"));
    api.allow(
        Subject::user("lister"),
        Rule::new(["list"], ["pods"]).namespace(NS),
    );
    let mut connection = Connection::open(&api);
    let as_lister = [("Authorization".to_owned(), "Bearer lister".to_owned())];
    let refused = connection.send(
        "GET",
        "/api/v1/namespaces/ci/pods?watch=true",
        &as_lister,
        None,
    );
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.body["message"],
        "pods is forbidden: User \"lister\" cannot watch resource \"pods\" in API group \"\" in the namespace \"ci\""
    );
    let as_watcher = [("Authorization".to_owned(), format!("Bearer {TOKEN}"))];
    let bad = connection.send(
        "GET",
        "/api/v1/namespaces/ci/pods?watch=true&fieldSelector=spec.hostname%3Dx",
        &as_watcher,
        None,
    );
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body["message"],
        "field label not supported: spec.hostname"
    );
    let elsewhere = connection.send("GET", "/api/v1/pods?watch=true", &as_watcher, None);
    assert_eq!(elsewhere.status, 403, "no right to watch every namespace");
}
