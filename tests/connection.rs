//! Black-box tests of every connection flag group against the API test double: TLS with a CA,
//! client certificates, tokens, basic auth, impersonation, kubeconfig selection, TLS server name,
//! proxy and request timeout.

mod support;

use std::path::PathBuf;

use kube_double::{ApiServer, Credentials, Rule, Subject, User};
use support::{NS, TOKEN, Tracker, grant_tracker};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pwt-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path.display().to_string()
}

fn tls_api() -> ApiServer {
    let api = ApiServer::builder().tls().start();
    grant_tracker(&api);
    api.create_pod(NS, "worker-1", &[]);
    api
}

fn base_args(api: &ApiServer) -> Vec<String> {
    vec![
        format!("--kube-server={}", api.url()),
        format!("--namespace={NS}"),
    ]
}

#[test]
fn https_with_a_certificate_authority_file_and_a_token_works() {
    let api = tls_api();
    assert!(api.url().starts_with("https://"));
    let dir = temp_dir("ca");
    let ca = write(&dir, "ca.pem", &api.ca_pem().expect("a CA"));
    let tracker = Tracker::builder()
        .args(base_args(&api))
        .args([
            format!("--kube-certificate-authority={ca}"),
            format!("--kube-token={TOKEN}"),
        ])
        .start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
}

#[test]
fn https_without_the_ca_is_refused_and_insecure_skip_verify_accepts_it() {
    let api = tls_api();
    let untrusted = Tracker::builder()
        .args(base_args(&api))
        .args([
            format!("--kube-token={TOKEN}"),
            "--retry-timeout=300ms".into(),
        ])
        .start();
    let answer = untrusted.increment("pod_name=worker-1");
    assert!(
        answer.status == 503 || answer.status == 504,
        "an untrusted server certificate fails: {answer:?}"
    );
    let insecure = Tracker::builder()
        .args(base_args(&api))
        .args([
            format!("--kube-token={TOKEN}"),
            "--kube-insecure-skip-tls-verify".into(),
        ])
        .start();
    assert_eq!(insecure.increment("pod_name=worker-1").count(), 1);
}

#[test]
fn the_tls_server_name_flag_is_used_for_verification() {
    let api = tls_api();
    let dir = temp_dir("sni");
    let ca = write(&dir, "ca.pem", &api.ca_pem().expect("a CA"));
    let right = Tracker::builder()
        .args(base_args(&api))
        .args([
            format!("--kube-certificate-authority={ca}"),
            format!("--kube-token={TOKEN}"),
            "--kube-tls-server-name=localhost".into(),
        ])
        .start();
    assert_eq!(right.increment("pod_name=worker-1").count(), 1);
    let wrong = Tracker::builder()
        .args(base_args(&api))
        .args([
            format!("--kube-certificate-authority={ca}"),
            format!("--kube-token={TOKEN}"),
            "--kube-tls-server-name=not-the-server.example".into(),
            "--retry-timeout=300ms".into(),
        ])
        .start();
    let answer = wrong.increment("pod_name=worker-1");
    assert!(
        answer.status == 503 || answer.status == 504,
        "a name outside the certificate fails: {answer:?}"
    );
}

#[test]
fn client_certificates_authenticate_the_tracker() {
    let api = ApiServer::builder().tls().require_client_certs().start();
    api.allow(
        Subject::user("cert-user"),
        Rule::new(["get", "patch"], ["pods"]).namespace(NS),
    );
    api.create_pod(NS, "worker-1", &[]);
    let (cert, key) = api.issue_client_cert(User::new("cert-user"));
    let dir = temp_dir("client-cert");
    let ca = write(&dir, "ca.pem", &api.ca_pem().expect("a CA"));
    let cert = write(&dir, "cert.pem", &cert);
    let key = write(&dir, "key.pem", &key);
    let tracker = Tracker::builder()
        .args(base_args(&api))
        .args([
            format!("--kube-certificate-authority={ca}"),
            format!("--kube-client-certificate={cert}"),
            format!("--kube-client-key={key}"),
        ])
        .start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    assert!(
        api.requests()
            .iter()
            .any(|r| r.user.as_deref() == Some("cert-user"))
    );
}

#[test]
fn basic_auth_authenticates_the_tracker() {
    let api = ApiServer::start();
    api.add_basic_auth("alice", "s3cret", User::new("alice"));
    api.allow(
        Subject::user("alice"),
        Rule::new(["get", "patch"], ["pods"]).namespace(NS),
    );
    api.create_pod(NS, "worker-1", &[]);
    let tracker = Tracker::builder()
        .args(base_args(&api))
        .args(["--kube-username=alice", "--kube-password=s3cret"])
        .start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
}

#[test]
fn impersonation_flags_reach_the_api_server_and_are_authorized_as_the_impersonated_user() {
    let api = ApiServer::start();
    api.add_token("admin-token", User::new("admin").groups(["system:masters"]));
    api.allow(
        Subject::user("robot"),
        Rule::new(["get", "patch"], ["pods"]).namespace(NS),
    );
    api.create_pod(NS, "worker-1", &[]);
    let tracker = Tracker::builder()
        .args(base_args(&api))
        .args([
            "--kube-token=admin-token",
            "--kube-as=robot",
            "--kube-as-group=team-a",
            "--kube-as-group=team-b",
            "--kube-as-uid=uid-7",
        ])
        .start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    let seen = api.requests();
    let patch = seen
        .iter()
        .find(|r| r.method == "PATCH")
        .expect("a patch was sent");
    assert_eq!(patch.impersonated_user.as_deref(), Some("robot"));
    assert_eq!(
        patch.impersonated_groups,
        vec!["team-a".to_owned(), "team-b".to_owned()]
    );
    assert_eq!(patch.impersonated_uid.as_deref(), Some("uid-7"));
    assert_eq!(
        patch.user.as_deref(),
        Some("robot"),
        "authorized as the impersonated user"
    );
}

#[test]
fn kubeconfig_file_and_context_selection_work() {
    let api = ApiServer::start();
    grant_tracker(&api);
    api.create_pod(NS, "worker-1", &[]);
    let dir = temp_dir("kubeconfig");
    let path = dir.join("config");
    api.write_kubeconfig(&path, Credentials::Token(TOKEN.to_owned()));
    let tracker = Tracker::builder()
        .args([
            format!("--kubeconfig={}", path.display()),
            format!("--namespace={NS}"),
        ])
        .start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
    let via_env = Tracker::builder()
        .env("KUBECONFIG", &path.display().to_string())
        .args([format!("--namespace={NS}")])
        .start();
    assert_eq!(via_env.increment("pod_name=worker-1").count(), 2);
    let (status, output) = Tracker::builder()
        .args([
            format!("--kubeconfig={}", path.display()),
            "--kube-context=no-such-context".into(),
        ])
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("no-such-context"), "{output}");
}

#[test]
fn a_token_flag_overrides_the_kubeconfig_credentials() {
    let api = ApiServer::start();
    grant_tracker(&api);
    api.create_pod(NS, "worker-1", &[]);
    let dir = temp_dir("kubeconfig-override");
    let path = dir.join("config");
    api.write_kubeconfig(&path, Credentials::Token("not-a-valid-token".to_owned()));
    let tracker = Tracker::builder()
        .args([
            format!("--kubeconfig={}", path.display()),
            format!("--namespace={NS}"),
            format!("--kube-token={TOKEN}"),
        ])
        .start();
    assert_eq!(tracker.increment("pod_name=worker-1").count(), 1);
}

#[test]
fn the_proxy_flag_sends_api_requests_through_the_proxy() {
    let api = ApiServer::start();
    grant_tracker(&api);
    api.create_pod(NS, "worker-1", &[]);
    // Nothing listens at the proxy address: if the flag is applied, the API cannot be reached.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let tracker = Tracker::builder()
        .args(base_args(&api))
        .args([
            format!("--kube-token={TOKEN}"),
            format!("--kube-proxy-url=http://{closed}"),
            "--retry-timeout=300ms".into(),
        ])
        .start();
    let answer = tracker.increment("pod_name=worker-1");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        api.requests().is_empty(),
        "no request reached the API server directly"
    );
}

#[test]
fn a_missing_kubeconfig_file_is_refused_at_start_up() {
    let (status, output) = Tracker::builder()
        .args(["--kubeconfig=/no/such/kubeconfig"])
        .run_to_exit();
    assert_eq!(status.code(), Some(2), "{output}");
    assert!(output.contains("--kubeconfig"), "{output}");
}
