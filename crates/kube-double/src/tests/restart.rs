//! Restarts over real sockets: the write that takes the cut, refused connections while down,
//! each warm-up phase's answer, the way back to normal answers, restarts one after another.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Client, NS, POD, address, server};
use crate::{ApiServer, Fault, Outcome, Restart, Verb};

const LONG: Duration = Duration::from_secs(10);

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Waits until `done` holds, checking every few milliseconds, at most 10 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(ms(2));
    }
}

/// Waits until a connection is refused (the server is down), then until one is accepted (it
/// listens again); returns a client on that connection.
fn connect_when_back(api: &ApiServer) -> Client {
    let deadline = Instant::now() + LONG;
    let mut was_down = false;
    loop {
        assert!(Instant::now() < deadline, "the server did not restart");
        match TcpStream::connect(address(api)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => was_down = true,
            // Caught in the closing listener's backlog.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connecting: {e}"),
            Ok(tcp) if was_down => {
                tcp.set_read_timeout(Some(Duration::from_secs(20)))
                    .expect("a timeout");
                return Client {
                    stream: Box::new(tcp),
                };
            }
            // Still the listener from before the restart.
            Ok(_) => {}
        }
        std::thread::sleep(ms(2));
    }
}

fn label(key: &str, value: &str) -> serde_json::Value {
    json!({"metadata": {"labels": {key: value}}})
}

#[test]
fn a_restart_commits_the_next_write_and_cuts_it_and_every_request_in_flight_unanswered() {
    let api = server(ApiServer::start());
    api.create_pod(NS, "worker-1", &[]);
    let before = api.resource_version(NS, "worker-0").expect("pod");
    // A write held up before it is applied, in flight when the server goes down.
    api.inject(Fault::latency(Duration::from_secs(60)).pod("worker-1"));
    let mut slow = Client::plain(&api);
    let held = std::thread::spawn(move || {
        slow.merge_patch(
            "/api/v1/namespaces/jobs/pods/worker-1",
            "tok",
            label("held", "1"),
        )
    });
    assert!(api.wait_for_request(
        |r| r.path.ends_with("/worker-1") && r.outcome.is_none(),
        LONG
    ));
    let mut kept = Client::plain(&api);
    assert_eq!(kept.get(POD, "tok").expect("answer").status, 200);
    api.restart(Restart::new().down_for(ms(100)).forbidden_for(ms(100)));
    assert_eq!(
        Client::plain(&api).get(POD, "tok").expect("answer").status,
        200,
        "a read does not take the cut"
    );

    let cut = Client::plain(&api).merge_patch(POD, "tok", label("active-jobs", "1"));

    assert!(cut.is_err(), "no answer: {cut:?}");
    assert_eq!(
        api.labels(NS, "worker-0").expect("pod")["active-jobs"],
        "1",
        "the write was committed"
    );
    let after = api.resource_version(NS, "worker-0").expect("pod");
    assert!(after.parse::<u64>().expect("a number") > before.parse().expect("a number"));
    let held = held.join().expect("client thread");
    assert!(held.is_err(), "the held write got no answer: {held:?}");
    assert!(kept.get(POD, "tok").is_err(), "open connections were cut");
    assert!(api.wait_restarted(LONG));
    assert!(
        !api.labels(NS, "worker-1")
            .expect("pod")
            .contains_key("held"),
        "the held write was not applied"
    );
    assert_eq!(api.count(Verb::Patch, Outcome::Dropped), 2);
    assert_eq!(api.resource_version(NS, "worker-0"), Some(after));
}

#[test]
fn connections_are_refused_while_the_restarted_server_is_down() {
    let api = server(ApiServer::start());
    api.restart(
        Restart::new()
            .now()
            .down_for(ms(500))
            .forbidden_for(Duration::ZERO),
    );
    // Connections made while it goes down are accepted and cut, or reset in the closing
    // listener's backlog; then they are refused.
    eventually("a refused connection", || {
        TcpStream::connect(address(&api)).is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
    });
    assert!(!api.is_up());
    assert_eq!(
        TcpStream::connect(address(&api))
            .map_err(|e| e.kind())
            .err(),
        Some(ErrorKind::ConnectionRefused),
        "still down"
    );
    assert!(api.wait_restarted(LONG));
    assert!(api.is_up());
    assert_eq!(
        Client::plain(&api).get(POD, "tok").expect("answer").status,
        200
    );
}

#[test]
fn a_restarted_server_answers_401_to_everyone_but_admins_while_its_authenticator_warms_up() {
    let api = server(ApiServer::start());
    api.restart(
        Restart::new()
            .now()
            .down_for(ms(50))
            .unauthorized_for(LONG)
            .forbidden_for(Duration::ZERO),
    );
    let mut client = connect_when_back(&api);

    let answer = client.get(POD, "tok").expect("answer");
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
    let patch = client
        .merge_patch(POD, "tok", label("active-jobs", "1"))
        .expect("answer");
    assert_eq!(patch.status, 401);
    assert!(
        !api.labels(NS, "worker-0")
            .expect("pod")
            .contains_key("active-jobs"),
        "nothing applied"
    );
    assert_eq!(client.get(POD, "admin").expect("answer").status, 200);
    assert_eq!(api.count(Verb::Get, Outcome::WarmingUp(401)), 1);
    assert_eq!(api.count(Verb::Patch, Outcome::WarmingUp(401)), 1);
    assert_eq!(api.count(Verb::Get, Outcome::Status(200)), 1);
    let logged = api.requests().into_iter().last().expect("logged");
    assert_eq!(logged.status, Some(200));
}

#[test]
fn a_restarted_server_refuses_non_admins_with_403_while_its_rbac_caches_sync() {
    let api = server(ApiServer::start());
    api.create_pod(NS, "w1", &[]);
    api.restart(Restart::new().now().down_for(ms(50)).forbidden_for(LONG));
    let mut client = connect_when_back(&api);

    let get = client
        .get("/api/v1/namespaces/jobs/pods/w1", "tok")
        .expect("answer");
    assert_eq!(get.status, 403);
    assert_eq!(
        get.body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "pods \"w1\" is forbidden: User \"tracker\" cannot get resource \"pods\" in API group \"\" in the namespace \"jobs\": rbac: RBAC: [clusterrole.rbac.authorization.k8s.io \"system:basic-user\" not found, clusterrole.rbac.authorization.k8s.io \"system:discovery\" not found, clusterrole.rbac.authorization.k8s.io \"system:public-info-viewer\" not found, clusterrole.rbac.authorization.k8s.io \"system:service-account-issuer-discovery\" not found, clusterrole.rbac.authorization.k8s.io \"system:cluster-trust-bundle-discovery\" not found]",
               "reason": "Forbidden", "details": {"name": "w1", "kind": "pods"}, "code": 403})
    );
    let patch = client
        .merge_patch(POD, "tok", label("active-jobs", "1"))
        .expect("answer");
    assert_eq!(patch.status, 403);
    assert!(
        patch.body["message"]
            .as_str()
            .expect("a message")
            .starts_with("pods \"worker-0\" is forbidden: User \"tracker\" cannot patch resource \"pods\" in API group \"\" in the namespace \"jobs\": rbac: RBAC: [clusterrole"),
        "{}",
        patch.body
    );
    let list = client
        .get("/api/v1/namespaces/jobs/pods", "tok")
        .expect("answer");
    assert_eq!(list.status, 403);
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                        "spec": {"resourceAttributes": {"verb": "patch", "resource": "pods", "namespace": NS}}})
    .to_string();
    let review = client
        .send(
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &[("Authorization", "Bearer tok")],
            Some(("application/json", &review)),
        )
        .expect("answer");
    assert_eq!(review.status, 403, "{}", review.body);
    let version = client.get("/version", "tok").expect("answer");
    assert_eq!(version.status, 403);
    assert!(
        version.body["message"]
            .as_str()
            .expect("a message")
            .starts_with("forbidden: User \"tracker\" cannot get path \"/version\": rbac: RBAC: ["),
        "{}",
        version.body
    );
    assert!(
        !api.labels(NS, "worker-0")
            .expect("pod")
            .contains_key("active-jobs"),
        "nothing applied"
    );

    assert_eq!(client.get(POD, "admin").expect("answer").status, 200);
    let admin_patch = client
        .merge_patch(POD, "admin", label("active-jobs", "2"))
        .expect("answer");
    assert_eq!(admin_patch.status, 200, "system:masters needs no RBAC");
    assert_eq!(api.labels(NS, "worker-0").expect("pod")["active-jobs"], "2");
    assert_eq!(
        api.count(Verb::Get, Outcome::WarmingUp(403)),
        2,
        "w1 and /version"
    );
    assert_eq!(api.count(Verb::Patch, Outcome::WarmingUp(403)), 1);
    assert_eq!(api.count(Verb::Create, Outcome::WarmingUp(403)), 1);
    assert_eq!(api.count(Verb::List, Outcome::WarmingUp(403)), 1);
    assert_eq!(api.count(Verb::Patch, Outcome::Status(200)), 1);
}

#[test]
fn a_restarted_server_throttles_non_admins_with_429_and_retry_after() {
    let api = server(ApiServer::start());
    api.restart(
        Restart::new()
            .now()
            .down_for(ms(50))
            .forbidden_for(Duration::ZERO)
            .throttled_for(LONG, 3),
    );
    let mut client = connect_when_back(&api);

    let answer = client.get(POD, "tok").expect("answer");
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("3"));
    // Go's http.Error, as kube-apiserver's filters write it: plain text, not a Status.
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        answer.body,
        json!("Too many requests, please try again later.\n")
    );
    let patch = client
        .merge_patch(POD, "tok", label("active-jobs", "1"))
        .expect("answer");
    assert_eq!(
        (patch.status, patch.header("retry-after")),
        (429, Some("3"))
    );
    assert!(
        !api.labels(NS, "worker-0")
            .expect("pod")
            .contains_key("active-jobs")
    );
    let admin = client.get(POD, "admin").expect("answer");
    assert_eq!((admin.status, admin.header("retry-after")), (200, None));
    assert_eq!(api.count(Verb::Get, Outcome::WarmingUp(429)), 1);
    assert_eq!(api.count(Verb::Patch, Outcome::WarmingUp(429)), 1);
}

#[test]
fn a_restarted_server_goes_through_its_phases_in_order_then_answers_normally_with_its_data() {
    let api = server(ApiServer::start());
    api.set_label(NS, "worker-0", "kept", "yes".into());
    api.restart(
        Restart::new()
            .down_for(ms(100))
            .unauthorized_for(ms(400))
            .forbidden_for(ms(400))
            .throttled_for(ms(400), 1),
    );
    assert!(
        Client::plain(&api)
            .merge_patch(POD, "tok", label("active-jobs", "1"))
            .is_err()
    );
    let mut client = connect_when_back(&api);
    let mut seen: Vec<u16> = Vec::new();
    let deadline = Instant::now() + LONG;
    while seen.last() != Some(&200) {
        assert!(Instant::now() < deadline, "never back to normal: {seen:?}");
        let status = client.get(POD, "tok").expect("answer").status;
        if seen.last() != Some(&status) {
            seen.push(status);
        }
        std::thread::sleep(ms(5));
    }
    assert_eq!(seen.first(), Some(&401), "{seen:?}");
    let order = [401, 403, 429, 200];
    assert!(
        seen.windows(2).all(|pair| {
            let at = |code| order.iter().position(|c| *c == code);
            at(pair[0]) < at(pair[1])
        }),
        "phases out of order: {seen:?}"
    );
    assert!(api.wait_restarted(LONG));
    assert_eq!(api.restarts(), 1);
    let answer = client.get(POD, "tok").expect("answer");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["metadata"]["labels"]["kept"], "yes");
    assert_eq!(answer.body["metadata"]["labels"]["active-jobs"], "1");
}

#[test]
fn a_restart_waits_for_its_write_and_waiting_for_it_times_out_until_then() {
    let api = server(ApiServer::start());
    api.restart(Restart::new().verb(Verb::Patch));
    assert!(!api.wait_restarted(ms(100)), "no write yet");
    assert_eq!(api.restarts(), 0);
    let mut client = Client::plain(&api);
    assert_eq!(client.get(POD, "tok").expect("answer").status, 200);
    assert_eq!(
        client
            .send("DELETE", POD, &[("Authorization", "Bearer tok")], None)
            .expect("answer")
            .status,
        403,
        "another kind of write"
    );
    assert!(
        client
            .merge_patch(POD, "tok", label("active-jobs", "1"))
            .is_err()
    );
    assert!(api.wait_restarted(LONG));
    assert_eq!(api.restarts(), 1);
}

#[test]
fn two_restarts_in_a_row_each_cut_a_write_and_are_counted() {
    let api = server(ApiServer::start());
    let restart = Restart::new().down_for(ms(100)).forbidden_for(ms(200));
    api.restart(restart.clone());
    api.restart(restart);
    assert_eq!(api.restarts(), 0);

    assert!(
        Client::plain(&api)
            .merge_patch(POD, "tok", label("first", "1"))
            .is_err()
    );
    connect_when_back(&api);
    eventually("the first restart to end", || api.restarts() == 1);
    let mut client = Client::plain(&api);
    assert_eq!(client.get(POD, "tok").expect("answer").status, 200);
    assert!(
        client
            .merge_patch(POD, "tok", label("second", "1"))
            .is_err(),
        "the queued restart waited for this write"
    );
    assert!(api.wait_restarted(LONG));
    assert_eq!(api.restarts(), 2);

    let labels = api.labels(NS, "worker-0").expect("pod");
    assert_eq!(
        (labels["first"].as_str(), labels["second"].as_str()),
        ("1", "1")
    );
    assert_eq!(api.count(Verb::Patch, Outcome::Dropped), 2);
    let answer = Client::plain(&api)
        .merge_patch(POD, "tok", label("third", "1"))
        .expect("answer");
    assert_eq!(answer.status, 200, "no restart left");
}

#[test]
fn dropping_the_server_mid_restart_stops_it() {
    let api = server(ApiServer::start());
    let address = address(&api);
    api.restart(Restart::new().now().down_for(ms(50)).forbidden_for(LONG));
    connect_when_back(&api);
    let started = Instant::now();
    drop(api);
    assert!(TcpStream::connect(address).is_err());
    assert!(started.elapsed() < ms(2000));
}
