//! The command line's unit tests: every flag form of the original, the subcommands, and the
//! completions.

use super::*;

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn serve(args: &[&str]) -> ServeArgs {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let normalized = normalize(&strings(&all)).expect("normalises");
    match parse("pod-webhook-tracker", &normalized)
        .expect("parses")
        .command
    {
        Command::Serve(serve) => serve,
        other => panic!("not serve: {other:?}"),
    }
}

#[test]
fn the_original_deployment_args_parse_unchanged() {
    let args = serve(&[
        "--namespace=jobs",
        "--label-selector=app.kubernetes.io/instance=fileflows,app.kubernetes.io/name=fileflows",
    ]);
    assert_eq!(args.namespace.as_deref(), Some("jobs"));
    assert_eq!(
        args.label_selector.as_deref(),
        Some("app.kubernetes.io/instance=fileflows,app.kubernetes.io/name=fileflows")
    );
    assert!(args.remove_on_zero);
    assert!(!args.allow_negative);
    assert_eq!(args.label, "active-jobs");
    assert_eq!(args.kube_request_timeout, "0");
}

#[test]
fn flags_take_their_value_after_a_space_or_an_equals_sign() {
    assert_eq!(serve(&["--label", "busy"]).label, "busy");
    assert_eq!(serve(&["--label=busy"]).label, "busy");
    assert_eq!(
        serve(&["--label-selector=a=b"]).label_selector.as_deref(),
        Some("a=b")
    );
}

#[test]
fn booleans_take_every_go_form() {
    assert!(serve(&["--allow-negative"]).allow_negative);
    assert!(serve(&["--allow-negative=true"]).allow_negative);
    assert!(serve(&["--allow-negative=1"]).allow_negative);
    assert!(serve(&["--allow-negative", "True"]).allow_negative);
    assert!(!serve(&["--remove-on-zero=false"]).remove_on_zero);
    assert!(!serve(&["--remove-on-zero=F"]).remove_on_zero);
    assert!(!serve(&["--remove-on-zero", "false"]).remove_on_zero);
    assert!(serve(&["--remove-on-zero"]).remove_on_zero);
    let args = serve(&[
        "--kube-insecure-skip-tls-verify",
        "--kube-disable-compression",
        "--label",
        "x",
    ]);
    assert!(args.kube_insecure_skip_tls_verify && args.kube_disable_compression);
    assert_eq!(args.label, "x");
}

#[test]
fn a_boolean_with_a_bad_value_names_the_flag() {
    let err = normalize(&strings(&["serve", "--allow-negative=yes"])).expect_err("refused");
    assert!(
        err.contains("--allow-negative") && err.contains("yes"),
        "{err}"
    );
}

#[test]
fn the_short_namespace_flag_takes_every_form() {
    for form in [
        &["-n", "ns1"][..],
        &["-n=ns1"],
        &["-nns1"],
        &["--kube-namespace=ns1"],
    ] {
        assert_eq!(
            serve(form).kube_namespace.as_deref(),
            Some("ns1"),
            "{form:?}"
        );
    }
}

#[test]
fn every_connection_flag_is_accepted() {
    let args = serve(&[
        "--kube-as=bob",
        "--kube-as-group=g1",
        "--kube-as-group",
        "g2",
        "--kube-as-uid=42",
        "--kube-certificate-authority=/ca.pem",
        "--kube-client-certificate=/c.pem",
        "--kube-client-key=/k.pem",
        "--kube-cluster=c",
        "--kube-context=ctx",
        "--kube-password=pw",
        "--kube-proxy-url=http://proxy:3128",
        "--kube-request-timeout=2m",
        "--kube-server=https://api:6443",
        "--kube-tls-server-name=api",
        "--kube-token=tok",
        "--kube-user=u",
        "--kube-username=alice",
        "--kubeconfig=/kc",
        "--address=127.0.0.1:9000",
    ]);
    assert_eq!(args.kube_as.as_deref(), Some("bob"));
    assert_eq!(args.kube_as_group, vec!["g1".to_owned(), "g2".to_owned()]);
    assert_eq!(args.kube_as_uid.as_deref(), Some("42"));
    assert_eq!(args.kube_certificate_authority.as_deref(), Some("/ca.pem"));
    assert_eq!(args.kube_client_certificate.as_deref(), Some("/c.pem"));
    assert_eq!(args.kube_client_key.as_deref(), Some("/k.pem"));
    assert_eq!(args.kube_cluster.as_deref(), Some("c"));
    assert_eq!(args.kube_context.as_deref(), Some("ctx"));
    assert_eq!(args.kube_password.as_deref(), Some("pw"));
    assert_eq!(args.kube_proxy_url.as_deref(), Some("http://proxy:3128"));
    assert_eq!(args.kube_request_timeout, "2m");
    assert_eq!(args.kube_server.as_deref(), Some("https://api:6443"));
    assert_eq!(args.kube_tls_server_name.as_deref(), Some("api"));
    assert_eq!(args.kube_token.as_deref(), Some("tok"));
    assert_eq!(args.kube_user.as_deref(), Some("u"));
    assert_eq!(args.kube_username.as_deref(), Some("alice"));
    assert_eq!(args.kubeconfig.as_deref(), Some("/kc"));
    assert_eq!(args.address.as_deref(), Some("127.0.0.1:9000"));
}

#[test]
fn an_unknown_flag_is_refused() {
    let normalized = normalize(&strings(&["serve", "--no-such-flag=1"])).expect("normalises");
    let exit = parse("pod-webhook-tracker", &normalized).expect_err("refused");
    assert!(exit.status.is_err());
    assert!(exit.output.contains("--no-such-flag"), "{}", exit.output);
}

#[test]
fn arguments_after_a_double_dash_are_left_alone() {
    let normalized =
        normalize(&strings(&["x", "--", "--allow-negative=maybe"])).expect("normalises");
    assert_eq!(normalized, strings(&["x", "--", "--allow-negative=maybe"]));
}

#[test]
fn completions_exist_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let script = completion_script(shell, "pod-webhook-tracker").expect("generated");
        assert!(script.contains("pod-webhook-tracker"), "{shell}");
        assert!(script.contains("serve"), "{shell}");
    }
    assert!(completion_script("tcsh", "pod-webhook-tracker").is_err());
}

fn busy(args: &[&str]) -> Result<BusyArgs, String> {
    let mut all = vec!["busy"];
    all.extend_from_slice(args);
    let normalized = normalize(&strings(&all))?;
    match parse("kubectl tracker", &normalized) {
        Ok(cli) => match cli.command {
            Command::Busy(busy) => Ok(busy),
            other => Err(format!("not busy: {other:?}")),
        },
        Err(exit) => Err(exit.output),
    }
}

#[test]
fn busy_takes_kubectls_flag_names_and_forms() {
    let args = busy(&[
        "-nci",
        "--context=prod",
        "--kubeconfig",
        "/kc",
        "--as=system:serviceaccount:ci:drainer",
        "--as-group=g1",
        "--as-group",
        "g2",
        "-s",
        "https://api:6443",
        "--token=tok",
        "--insecure-skip-tls-verify",
        "--request-timeout=10s",
        "-ojson",
        "--node=a,b",
        "--node",
        "c",
        "-l",
        "app!=web",
    ])
    .expect("parses");
    assert_eq!(args.namespace.as_deref(), Some("ci"));
    assert_eq!(args.context.as_deref(), Some("prod"));
    assert_eq!(args.kubeconfig.as_deref(), Some("/kc"));
    assert_eq!(
        args.as_user.as_deref(),
        Some("system:serviceaccount:ci:drainer")
    );
    assert_eq!(args.as_group, ["g1", "g2"]);
    assert_eq!(args.server.as_deref(), Some("https://api:6443"));
    assert_eq!(args.token.as_deref(), Some("tok"));
    assert!(args.insecure_skip_tls_verify);
    assert_eq!(args.request_timeout, "10s");
    assert_eq!(args.output.as_deref(), Some("json"));
    assert_eq!(args.node, ["a,b", "c"]);
    assert_eq!(args.selector.as_deref(), Some("app!=web"));
    assert!(!args.all_namespaces && !args.watch && !args.wait_idle);
    assert_eq!(args.label, "active-jobs");
    assert_eq!(args.chunk_size, "500");
}

#[test]
fn busy_switches_cluster_and_take_only_an_attached_boolean() {
    let args = busy(&["-Aw", "-o=wide"]).expect("parses");
    assert!(args.all_namespaces && args.watch);
    assert_eq!(args.output.as_deref(), Some("wide"));
    let args = busy(&["--all-namespaces=true", "--watch=false", "--no-headers"]).expect("parses");
    assert!(args.all_namespaces && !args.watch && args.no_headers);
    let args = busy(&["-n=ci", "--wait-idle", "--timeout=30m"]).expect("parses");
    assert_eq!(args.namespace.as_deref(), Some("ci"));
    assert!(args.wait_idle);
    assert_eq!(args.timeout.as_deref(), Some("30m"));
    let error = busy(&["--watch=maybe"]).expect_err("refused");
    assert!(error.contains("expected true or false"), "{error}");
    // As pflag, a switch does not take the next word: it is a stray argument.
    assert!(busy(&["--watch", "true"]).is_err());
}

#[test]
fn busy_takes_serves_kube_flags_as_aliases() {
    let args = busy(&[
        "--kube-context=prod",
        "--kube-namespace",
        "ci",
        "--kube-as=alice",
        "--kube-insecure-skip-tls-verify=true",
        "--kube-request-timeout=5s",
        "--kube-server=https://api:6443",
    ])
    .expect("parses");
    assert_eq!(args.context.as_deref(), Some("prod"));
    assert_eq!(args.namespace.as_deref(), Some("ci"));
    assert_eq!(args.as_user.as_deref(), Some("alice"));
    assert!(args.insecure_skip_tls_verify);
    assert_eq!(args.request_timeout, "5s");
    assert_eq!(args.server.as_deref(), Some("https://api:6443"));
}

#[test]
fn a_busy_flags_value_is_taken_as_it_is() {
    let args = busy(&["-l", "-weird", "--node", "-Aw"]).expect("parses");
    assert_eq!(args.selector.as_deref(), Some("-weird"));
    assert_eq!(args.node, ["-Aw"]);
    assert!(!args.all_namespaces);
}

#[test]
fn busy_refuses_unknown_flags_and_names_itself_as_the_plugin() {
    let error = busy(&["--no-such-flag"]).expect_err("refused");
    assert!(error.contains("--no-such-flag"), "{error}");
    let error = busy(&["-x"]).expect_err("refused");
    assert!(error.contains("-x"), "{error}");
    let help = busy(&["--help"]).expect_err("help is an early exit");
    assert!(help.contains("Usage: kubectl tracker busy"), "{help}");
    for word in [
        "--wait-idle",
        "--watch",
        "list and watch",
        "kubectl-tracker",
        "-A",
    ] {
        assert!(help.contains(word), "{word}: {help}");
    }
}
