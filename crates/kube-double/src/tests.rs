//! Tests of the running server over real sockets: keep-alive, TLS and client certificates,
//! authentication, impersonation, resource versions, every fault, going away and coming
//! back, counters.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};

use crate::{ApiServer, Credentials, Fault, NewPod, Outcome, Rule, Subject, User, Verb};

const NS: &str = "jobs";
const POD: &str = "/api/v1/namespaces/jobs/pods/worker-0";

/// A minimal blocking HTTP/1.1 client over plain TCP or TLS.
///
/// Hand-written on purpose: the fault tests must see what the double does on the wire, byte by
/// byte (a connection dropped before or after the answer was written, an answer that never
/// comes, keep-alive across requests, a TLS handshake refused for a missing client
/// certificate), which a full client would fold into one error or retry away.
struct Client {
    stream: Box<dyn Stream>,
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn address(api: &ApiServer) -> String {
    format!("127.0.0.1:{}", api.port())
}

impl Client {
    fn tcp(api: &ApiServer, timeout: Duration) -> std::io::Result<TcpStream> {
        let tcp = TcpStream::connect(address(api))?;
        tcp.set_read_timeout(Some(timeout))?;
        Ok(tcp)
    }

    fn plain(api: &ApiServer) -> Client {
        Client {
            stream: Box::new(Client::tcp(api, Duration::from_secs(20)).expect("connects")),
        }
    }

    fn tls(
        api: &ApiServer,
        ca_pem: &str,
        identity: Option<&(String, String)>,
    ) -> std::io::Result<Client> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
            .expect("CA root");
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert PEM")],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key PEM"),
                )
                .expect("client identity"),
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from("localhost").expect("server name");
        let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS client");
        let tcp = Client::tcp(api, Duration::from_secs(20))?;
        Ok(Client {
            stream: Box::new(rustls::StreamOwned::new(connection, tcp)),
        })
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, &str)>,
    ) -> std::io::Result<Answer> {
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: kube-double\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = match body {
            Some((content_type, body)) => {
                request.push_str(&format!("Content-Type: {content_type}\r\n"));
                body
            }
            None => "",
        };
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.stream.write_all(request.as_bytes())?;
        self.stream.flush()?;
        self.read_answer()
    }

    fn read_answer(&mut self) -> std::io::Result<Answer> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if self.stream.read(&mut byte)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before an answer",
                ));
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body)?;
        let body = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&body).into_owned()));
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    fn get(&mut self, path: &str, token: &str) -> std::io::Result<Answer> {
        self.send(
            "GET",
            path,
            &[("Authorization", &format!("Bearer {token}"))],
            None,
        )
    }

    fn merge_patch(&mut self, path: &str, token: &str, patch: Value) -> std::io::Result<Answer> {
        let auth = format!("Bearer {token}");
        self.send(
            "PATCH",
            path,
            &[("Authorization", &auth)],
            Some(("application/merge-patch+json", &patch.to_string())),
        )
    }
}

/// A server with a pod `jobs/worker-0` and two users: `tok` (tracker, may get, list and
/// patch pods in `jobs`) and `admin` (system:masters).
fn server(api: ApiServer) -> ApiServer {
    api.add_token("tok", User::new("tracker"));
    api.add_token("admin", User::admin("admin"));
    api.allow(
        Subject::user("tracker"),
        Rule::new(["get", "list", "patch"], ["pods"]).namespace(NS),
    );
    api.create_pod(NS, "worker-0", &[("app", "worker")]);
    api
}

fn rv(answer: &Answer) -> u64 {
    answer.body["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("resource version")
}

#[test]
fn a_kept_alive_connection_serves_many_requests() {
    let api = server(ApiServer::start());
    let mut client = Client::plain(&api);
    for _ in 0..3 {
        let answer = client.get(POD, "tok").expect("answer");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.body["metadata"]["name"], "worker-0");
    }
    assert_eq!(api.count(Verb::Get, Outcome::Status(200)), 3);
}

#[test]
fn unknown_credentials_and_no_credentials_are_unauthorized() {
    let api = server(ApiServer::start());
    let mut client = Client::plain(&api);
    let answer = client.get(POD, "wrong").expect("answer");
    assert_eq!(answer.status, 401);
    assert_eq!(
        answer.body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
    );
    assert_eq!(
        client.send("GET", POD, &[], None).expect("answer").status,
        401
    );
    assert!(api.requests().iter().all(|r| r.user.is_none()));
}

#[test]
fn basic_auth_identifies_a_user() {
    let api = server(ApiServer::start());
    api.add_basic_auth("alice", "s3cret", User::new("tracker"));
    use base64::Engine as _;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    let answer = Client::plain(&api)
        .send("GET", POD, &[("Authorization", &auth)], None)
        .expect("answer");
    assert_eq!(answer.status, 200);
    assert_eq!(api.requests()[0].user.as_deref(), Some("tracker"));
}

#[test]
fn tls_works_with_the_servers_ca_and_fails_with_another() {
    let api = server(ApiServer::builder().tls().start());
    assert!(api.url().starts_with("https://127.0.0.1:"));
    let ca = api.ca_pem().expect("a CA");
    let answer = Client::tls(&api, &ca, None)
        .expect("connects")
        .get(POD, "tok")
        .expect("answer");
    assert_eq!(answer.status, 200);
    let other = ApiServer::builder().tls().start();
    let foreign = other.ca_pem().expect("a CA");
    let result = Client::tls(&api, &foreign, None)
        .expect("connects")
        .get(POD, "tok");
    assert!(
        result.is_err(),
        "a server certificate from another CA must not be trusted"
    );
}

#[test]
fn a_client_certificate_identifies_its_user() {
    let api = server(ApiServer::builder().tls().start());
    let identity = api.issue_client_cert(User::new("tracker").groups(["workers"]));
    let ca = api.ca_pem().expect("a CA");
    let mut client = Client::tls(&api, &ca, Some(&identity)).expect("connects");
    let answer = client.send("GET", POD, &[], None).expect("answer");
    assert_eq!(answer.status, 200);
    assert_eq!(api.requests()[0].user.as_deref(), Some("tracker"));
    let answer = Client::tls(&api, &ca, None)
        .expect("connects")
        .send("GET", POD, &[], None)
        .expect("answer");
    assert_eq!(answer.status, 401, "without a certificate or token");
}

#[test]
fn required_client_certificates_refuse_clients_without_one() {
    let api = server(ApiServer::builder().require_client_certs().start());
    let ca = api.ca_pem().expect("a CA");
    let result = Client::tls(&api, &ca, None).and_then(|mut c| c.get(POD, "tok"));
    assert!(result.is_err(), "the handshake must fail");
    let identity = api.issue_client_cert(User::new("tracker"));
    let answer = Client::tls(&api, &ca, Some(&identity))
        .expect("connects")
        .get(POD, "tok")
        .expect("answer");
    assert_eq!(answer.status, 200);
}

#[test]
fn impersonation_is_recorded_and_authorized_as_the_impersonated_user() {
    let api = server(ApiServer::start());
    api.add_token("gate", User::new("gatekeeper"));
    api.allow(
        Subject::user("gatekeeper"),
        Rule::new(["impersonate"], ["users", "groups", "uids"]),
    );
    let mut client = Client::plain(&api);
    let headers = [
        ("Authorization", "Bearer gate"),
        ("Impersonate-User", "tracker"),
        ("Impersonate-Group", "g1"),
        ("Impersonate-Group", "g2"),
        ("Impersonate-Uid", "u-7"),
    ];
    assert_eq!(
        client
            .send("GET", POD, &headers, None)
            .expect("answer")
            .status,
        200
    );
    let denied = client
        .send(
            "GET",
            POD,
            &[
                ("Authorization", "Bearer gate"),
                ("Impersonate-User", "nobody"),
            ],
            None,
        )
        .expect("answer");
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.body["message"],
        "pods \"worker-0\" is forbidden: User \"nobody\" cannot get resource \"pods\" in API group \"\" in the namespace \"jobs\""
    );
    let refused = client
        .send(
            "GET",
            POD,
            &[
                ("Authorization", "Bearer tok"),
                ("Impersonate-User", "admin"),
            ],
            None,
        )
        .expect("answer");
    assert_eq!(refused.status, 403);
    let recorded = api.requests();
    assert_eq!(
        recorded[0].user.as_deref(),
        Some("tracker"),
        "authorized as the impersonated user"
    );
    assert_eq!(
        recorded[0].authenticated_user.as_deref(),
        Some("gatekeeper")
    );
    assert_eq!(
        recorded[2].user.as_deref(),
        Some("tracker"),
        "impersonation refused"
    );
    assert_eq!(recorded[0].impersonated_user.as_deref(), Some("tracker"));
    assert_eq!(recorded[0].impersonated_groups, ["g1", "g2"]);
    assert_eq!(recorded[0].impersonated_uid.as_deref(), Some("u-7"));
    assert_eq!(recorded[2].impersonated_user.as_deref(), Some("admin"));
}

#[test]
fn resource_versions_advance_on_changes_only_and_stale_ones_conflict() {
    let api = server(ApiServer::start());
    let mut client = Client::plain(&api);
    let first = client.get(POD, "tok").expect("answer");
    let changed = client
        .merge_patch(
            POD,
            "tok",
            json!({"metadata": {"labels": {"active-jobs": "1"}}}),
        )
        .expect("answer");
    assert_eq!(changed.status, 200);
    assert!(rv(&changed) > rv(&first));
    let same = client
        .merge_patch(
            POD,
            "tok",
            json!({"metadata": {"labels": {"active-jobs": "1"}}}),
        )
        .expect("answer");
    assert_eq!(
        rv(&same),
        rv(&changed),
        "a write that changes nothing keeps the resource version"
    );
    let external = api.set_label(NS, "worker-0", "active-jobs", Some("2"));
    assert!(external.parse::<u64>().expect("number") > rv(&changed));
    let stale = json!({"metadata": {"resourceVersion": rv(&changed).to_string(), "labels": {"active-jobs": "3"}}});
    let conflict = client.merge_patch(POD, "tok", stale).expect("answer");
    assert_eq!(
        (conflict.status, conflict.body["reason"].as_str()),
        (409, Some("Conflict"))
    );
    assert_eq!(api.labels(NS, "worker-0").expect("pod")["active-jobs"], "2");
    let listed = client
        .get("/api/v1/namespaces/jobs/pods", "tok")
        .expect("answer");
    assert_eq!(
        listed.body["metadata"]["resourceVersion"],
        external.as_str()
    );
}

#[test]
fn an_injected_status_answers_as_the_api_server_does_and_applies_nothing() {
    let api = server(ApiServer::start());
    api.inject(Fault::status(409).verb(Verb::Patch).pod("worker-0").next(2));
    api.inject(Fault::status(429).verb(Verb::Get));
    let mut client = Client::plain(&api);
    for _ in 0..2 {
        let answer = client
            .merge_patch(POD, "tok", json!({"metadata": {"labels": {"x": "1"}}}))
            .expect("answer");
        assert_eq!(answer.status, 409);
        assert_eq!(answer.body["kind"], "Status");
        assert_eq!(
            answer.body["message"],
            "Operation cannot be fulfilled on pods \"worker-0\": the object has been modified; please apply your changes to the latest version and try again"
        );
    }
    assert!(!api.labels(NS, "worker-0").expect("pod").contains_key("x"));
    assert_eq!(
        client
            .merge_patch(POD, "tok", json!({"metadata": {"labels": {"x": "1"}}}))
            .expect("answer")
            .status,
        200
    );
    let throttled = client.get(POD, "tok").expect("answer");
    assert_eq!(
        (throttled.status, throttled.header("retry-after")),
        (429, Some("1"))
    );
    // API Priority and Fairness's refusal is Go's http.Error: plain text, not a Status.
    assert_eq!(
        (
            throttled.header("content-type"),
            throttled.header("x-content-type-options")
        ),
        (Some("text/plain; charset=utf-8"), Some("nosniff"))
    );
    assert_eq!(
        throttled.body,
        json!("Too many requests, please try again later.\n")
    );
    assert_eq!(api.count(Verb::Patch, Outcome::Status(409)), 2);
    assert_eq!(api.count(Verb::Patch, Outcome::Status(200)), 1);
    assert_eq!(api.count(Verb::Get, Outcome::Status(429)), 1);
}

#[test]
fn injected_and_configured_latency_delay_answers() {
    let api = server(
        ApiServer::builder()
            .write_latency(Duration::from_millis(30))
            .start(),
    );
    let mut client = Client::plain(&api);
    let started = Instant::now();
    client.get(POD, "tok").expect("answer");
    let read = started.elapsed();
    let started = Instant::now();
    client
        .merge_patch(POD, "tok", json!({"metadata": {"labels": {"a": "b"}}}))
        .expect("answer");
    assert!(
        started.elapsed() >= Duration::from_millis(30),
        "writes wait"
    );
    api.set_write_latency(Duration::ZERO);
    api.inject(Fault::latency(Duration::from_millis(40)).verb(Verb::Get));
    let started = Instant::now();
    assert_eq!(client.get(POD, "tok").expect("answer").status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(40),
        "the latency fault applies"
    );
    assert!(read < Duration::from_secs(5));
}

#[test]
fn a_hung_request_gets_no_answer_until_the_server_goes_away() {
    let api = server(ApiServer::start());
    api.inject(Fault::hang().verb(Verb::Patch));
    let mut client = Client::plain(&api);
    let waiter = std::thread::spawn(move || {
        client.merge_patch(POD, "tok", json!({"metadata": {"labels": {"h": "1"}}}))
    });
    assert!(api.wait_for_count(Verb::Patch, Outcome::Hung, 1, Duration::from_secs(10)));
    api.go_away();
    let result = waiter.join().expect("client thread");
    assert!(result.is_err(), "no answer: {result:?}");
    assert!(
        !api.labels(NS, "worker-0").expect("pod").contains_key("h"),
        "a hung request is not applied"
    );
}

#[test]
fn a_reset_closes_the_connection_before_applying() {
    let api = server(ApiServer::start());
    api.inject(Fault::reset().verb(Verb::Patch));
    let mut client = Client::plain(&api);
    let result = client.merge_patch(POD, "tok", json!({"metadata": {"labels": {"r": "1"}}}));
    assert!(result.is_err(), "no answer: {result:?}");
    assert!(!api.labels(NS, "worker-0").expect("pod").contains_key("r"));
    assert_eq!(api.count(Verb::Patch, Outcome::Dropped), 1);
    let answer = Client::plain(&api)
        .merge_patch(POD, "tok", json!({"metadata": {"labels": {"r": "1"}}}))
        .expect("answer");
    assert_eq!(answer.status, 200, "only the next request was hit");
}

#[test]
fn apply_then_drop_applies_the_write_but_never_answers() {
    let api = server(ApiServer::start());
    let before = api.resource_version(NS, "worker-0").expect("pod");
    api.inject(Fault::apply_then_drop().verb(Verb::Patch));
    let result = Client::plain(&api).merge_patch(
        POD,
        "tok",
        json!({"metadata": {"labels": {"active-jobs": "1"}}}),
    );
    assert!(result.is_err(), "no answer: {result:?}");
    assert_eq!(
        api.labels(NS, "worker-0").expect("pod")["active-jobs"],
        "1",
        "the write happened"
    );
    assert_ne!(api.resource_version(NS, "worker-0").expect("pod"), before);
    assert_eq!(api.count(Verb::Patch, Outcome::Dropped), 1);
}

#[test]
fn a_fraction_of_requests_fails_repeatably() {
    let run = || {
        let api = server(ApiServer::builder().seed(5).start());
        api.inject(Fault::status(503).verb(Verb::Get).fraction(0.5));
        let mut client = Client::plain(&api);
        (0..40)
            .map(|_| client.get(POD, "tok").expect("answer").status)
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first, run(), "same seed, same failures");
    let failed = first.iter().filter(|s| **s == 503).count();
    assert!((5..35).contains(&failed), "{failed} of 40");
}

#[test]
fn the_server_goes_away_and_comes_back_on_the_same_port_with_its_data() {
    let api = server(ApiServer::start());
    let port = api.port();
    let mut kept = Client::plain(&api);
    assert_eq!(kept.get(POD, "tok").expect("answer").status, 200);
    api.set_label(NS, "worker-0", "active-jobs", Some("4"));
    api.go_away();
    assert!(!api.is_up());
    assert!(
        TcpStream::connect(address(&api)).is_err(),
        "nothing listens"
    );
    assert!(
        kept.get(POD, "tok").is_err(),
        "open connections were dropped"
    );
    api.come_back();
    assert_eq!(api.port(), port);
    let answer = Client::plain(&api).get(POD, "tok").expect("answer");
    assert_eq!(answer.body["metadata"]["labels"]["active-jobs"], "4");
}

#[test]
fn dropping_the_handle_stops_the_server() {
    let api = server(ApiServer::start());
    let address = address(&api);
    drop(api);
    assert!(TcpStream::connect(address).is_err());
}

#[test]
fn the_handle_works_inside_an_async_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let api = server(ApiServer::start());
        api.go_away();
        api.come_back();
        assert!(api.is_up());
        drop(api);
    });
}

#[test]
fn counters_and_the_log_describe_each_request() {
    let api = server(ApiServer::start());
    let mut client = Client::plain(&api);
    client.get(POD, "tok").expect("answer");
    client
        .get("/api/v1/namespaces/jobs/pods/missing", "tok")
        .expect("answer");
    client
        .merge_patch(POD, "tok", json!({"metadata": {"labels": {"a": "1"}}}))
        .expect("answer");
    client
        .send("DELETE", POD, &[("Authorization", "Bearer tok")], None)
        .expect("answer");
    let counts = api.counts();
    assert_eq!(counts.get(&(Verb::Get, Outcome::Status(200))), Some(&1));
    assert_eq!(counts.get(&(Verb::Get, Outcome::Status(404))), Some(&1));
    assert_eq!(counts.get(&(Verb::Patch, Outcome::Status(200))), Some(&1));
    assert_eq!(counts.get(&(Verb::Delete, Outcome::Status(403))), Some(&1));
    let patch = &api.requests()[2];
    assert_eq!((patch.method.as_str(), patch.path.as_str()), ("PATCH", POD));
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        (patch.outcome, patch.status),
        (Some(Outcome::Status(200)), Some(200))
    );
    api.reset_counts();
    assert!(api.counts().is_empty() && api.requests().is_empty());
}

#[test]
fn evictions_respect_budgets_kept_current_by_the_controller() {
    let api = server(ApiServer::start());
    api.add_pod(
        NewPod::new(NS, "busy")
            .label("active-jobs", "1")
            .phase("Running"),
    );
    api.add_pod(NewPod::new(NS, "idle").phase("Running"));
    api.create_pdb(NS, json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "busy"},
                               "spec": {"minAvailable": 1, "selector": {"matchExpressions": [{"key": "active-jobs", "operator": "Exists"}]}}}));
    let mut client = Client::plain(&api);
    let evict = |client: &mut Client, pod: &str| {
        let body =
            json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod}})
                .to_string();
        let path = format!("/api/v1/namespaces/jobs/pods/{pod}/eviction");
        client
            .send(
                "POST",
                &path,
                &[("Authorization", "Bearer admin")],
                Some(("application/json", &body)),
            )
            .expect("answer")
    };
    let refused = evict(&mut client, "busy");
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.body["details"]["causes"][0]["message"],
        "The disruption budget busy needs 1 healthy pods and has 1 currently"
    );
    assert_eq!(evict(&mut client, "idle").status, 201);
    assert!(api.pod(NS, "idle").is_none());
    api.set_label(NS, "busy", "active-jobs", None);
    assert_eq!(evict(&mut client, "busy").status, 201);
    assert_eq!(api.count(Verb::Evict, Outcome::Status(201)), 2);
    let budget = client
        .get(
            "/apis/policy/v1beta1/namespaces/jobs/poddisruptionbudgets/busy",
            "admin",
        )
        .expect("answer");
    assert_eq!(budget.body["apiVersion"], "policy/v1beta1");
    assert_eq!(budget.body["status"]["expectedPods"], 0);
}

#[test]
fn events_are_stored_and_need_the_create_right() {
    let api = server(ApiServer::start());
    let event = json!({"metadata": {"generateName": "worker-0."}, "involvedObject": {"kind": "Pod", "name": "worker-0", "namespace": NS},
                       "reason": "Busy", "message": "1 job running", "type": "Normal"})
    .to_string();
    let mut client = Client::plain(&api);
    let path = "/api/v1/namespaces/jobs/events";
    let denied = client
        .send(
            "POST",
            path,
            &[("Authorization", "Bearer tok")],
            Some(("application/json", &event)),
        )
        .expect("answer");
    assert_eq!(denied.status, 403);
    api.allow(
        Subject::user("tracker"),
        Rule::new(["create"], ["events"]).namespace(NS),
    );
    let created = client
        .send(
            "POST",
            path,
            &[("Authorization", "Bearer tok")],
            Some(("application/json", &event)),
        )
        .expect("answer");
    assert_eq!(created.status, 201);
    let events = api.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["reason"], "Busy");
}

#[test]
fn a_written_kubeconfig_points_at_the_server() {
    let api = server(ApiServer::builder().tls().start());
    let path = std::env::temp_dir().join(format!("kube-double-kubeconfig-{}.json", api.port()));
    api.write_kubeconfig(&path, Credentials::token("tok"));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("readable")).expect("JSON");
    std::fs::remove_file(&path).expect("removed");
    assert_eq!(
        config["clusters"][0]["cluster"]["server"],
        api.url().as_str()
    );
    assert!(config["clusters"][0]["cluster"]["certificate-authority-data"].is_string());
    assert_eq!(config["users"][0]["user"]["token"], "tok");
    assert_eq!(config["contexts"][0]["context"]["namespace"], "default");
}

#[test]
fn unknown_paths_and_methods_get_status_answers() {
    let api = server(ApiServer::start());
    let mut client = Client::plain(&api);
    let unknown = client
        .get("/api/v1/namespaces/jobs/configmaps", "admin")
        .expect("answer");
    assert_eq!(
        (unknown.status, unknown.body["reason"].as_str()),
        (404, Some("NotFound"))
    );
    let method = client
        .send(
            "POST",
            POD,
            &[("Authorization", "Bearer admin")],
            Some(("application/json", "{}")),
        )
        .expect("answer");
    assert_eq!(
        (method.status, method.body["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
    let health = client.get("/healthz", "tok").expect("answer");
    assert_eq!((health.status, health.body.as_str()), (200, Some("ok")));
}

#[test]
fn clones_share_the_server_and_the_last_one_stops_it() {
    fn shareable<T: Send + Sync>(_: &T) {}
    let api = server(ApiServer::start());
    shareable(&api);
    let writer = {
        let api = api.clone();
        std::thread::spawn(move || api.set_label(NS, "worker-0", "w", Some("1")))
    };
    let rv = writer.join().expect("writer thread");
    assert_eq!(api.resource_version(NS, "worker-0"), Some(rv));
    let address = address(&api);
    let other = api.clone();
    drop(api);
    assert_eq!(
        Client::plain(&other)
            .get(POD, "tok")
            .expect("still up")
            .status,
        200
    );
    drop(other);
    assert!(
        TcpStream::connect(address).is_err(),
        "stopped with the last handle"
    );
}

#[test]
fn pods_can_be_shaped_when_created() {
    let api = ApiServer::start();
    let pod = api.create_pod_with(NS, "shaped", |pod| {
        pod.label("app", "worker")
            .annotation("note", "x")
            .phase("Running")
            .node("node-1")
            .service_account("job-tracker")
    });
    assert_eq!(pod["metadata"]["labels"], json!({"app": "worker"}));
    assert_eq!(pod["metadata"]["annotations"], json!({"note": "x"}));
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["spec"]["nodeName"], "node-1");
    assert_eq!(pod["spec"]["serviceAccountName"], "job-tracker");
    assert_eq!(api.pod(NS, "shaped"), Some(pod));
    let bare = api.create_pod_without_labels(NS, "bare");
    assert!(bare["metadata"].get("labels").is_none());
    assert_eq!(api.labels(NS, "bare"), Some(Default::default()));
    assert_eq!(api.labels(NS, "missing"), None);
}

#[test]
fn a_container_restart_shows_in_the_served_status_and_advances_the_version() {
    let api = server(ApiServer::start());
    let before = api.resource_version(NS, "worker-0").expect("exists");
    let ended = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let after = api.set_container_restart(NS, "worker-0", "main", 1, ended);
    assert_ne!(before, after);
    api.set_container_restart(NS, "worker-0", "main", 2, ended);
    let answer = Client::plain(&api).get(POD, "tok").expect("answers");
    assert_eq!(answer.status, 200);
    let statuses = answer.body["status"]["containerStatuses"]
        .as_array()
        .expect("container statuses");
    assert_eq!(statuses.len(), 1, "one status per container");
    assert_eq!(statuses[0]["name"], "main");
    assert_eq!(statuses[0]["restartCount"], 2);
    assert_eq!(
        statuses[0]["lastState"]["terminated"]["finishedAt"],
        "2023-11-14T22:13:20Z"
    );
}

#[test]
fn a_request_is_logged_while_in_flight_and_dropped_when_the_server_goes_away() {
    let api = server(ApiServer::start());
    api.inject(Fault::latency(Duration::from_secs(60)).verb(Verb::Patch));
    let mut client = Client::plain(&api);
    let waiter = std::thread::spawn(move || {
        client.merge_patch(POD, "tok", json!({"metadata": {"labels": {"slow": "1"}}}))
    });
    let in_flight = |r: &crate::RecordedRequest| {
        r.method == "PATCH" && r.status.is_none() && r.outcome.is_none()
    };
    assert!(api.wait_for_request(in_flight, Duration::from_secs(10)));
    assert!(
        api.counts().is_empty(),
        "in-flight requests are not counted"
    );
    api.go_away();
    assert!(waiter.join().expect("client thread").is_err());
    let patch = api
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("logged");
    assert_eq!(
        (patch.outcome, patch.status),
        (Some(Outcome::Dropped), None)
    );
    assert_eq!(api.count(Verb::Patch, Outcome::Dropped), 1);
    assert!(
        !api.labels(NS, "worker-0")
            .expect("pod")
            .contains_key("slow")
    );
}

mod restart;
