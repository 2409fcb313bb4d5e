//! The unit tests of the configuration: every flag's defaults, forms and refusals.

use super::*;
use crate::core::pod::PodRef;

fn args(extra: impl FnOnce(&mut ServeArgs)) -> ServeArgs {
    let mut args = ServeArgs {
        label: "active-jobs".to_owned(),
        kube_request_timeout: "0".to_owned(),
        remove_on_zero: true,
        shutdown_grace_period: "30s".to_owned(),
        retry_timeout: "10s".to_owned(),
        max_job_duration: "0".to_owned(),
        anonymous_job_ttl: "0".to_owned(),
        sweep_interval: "0".to_owned(),
        max_connections: "1024".to_owned(),
        header_read_timeout: "10s".to_owned(),
        idle_timeout: "60s".to_owned(),
        ..ServeArgs::default()
    };
    extra(&mut args);
    args
}

fn config(extra: impl FnOnce(&mut ServeArgs)) -> Result<Config> {
    Config::from_args(&args(extra), &Environment::default())
}

fn config_error(extra: impl FnOnce(&mut ServeArgs)) -> String {
    config(extra).expect_err("refused").to_string()
}

#[test]
fn active_annotations_take_key_value_pairs_and_refuse_the_rest() {
    let config = config(|a| {
        a.active_annotation = vec![
            "karpenter.sh/do-not-disrupt=true".into(),
            "cluster-autoscaler.kubernetes.io/safe-to-evict=false".into(),
        ]
    })
    .expect("valid");
    assert_eq!(
        config.active_annotations,
        vec![
            ("karpenter.sh/do-not-disrupt".to_owned(), "true".to_owned()),
            (
                "cluster-autoscaler.kubernetes.io/safe-to-evict".to_owned(),
                "false".to_owned()
            ),
        ]
    );
    for bad in ["no-value", "bad key=1", "active-jobs-jobs=x"] {
        let error = config_error(|a| a.active_annotation = vec![bad.into()]);
        assert!(error.contains("--active-annotation"), "{bad}: {error}");
    }
    let twice = config_error(|a| a.active_annotation = vec!["a=1".into(), "a=2".into()]);
    assert!(twice.contains("twice"), "{twice}");
}

#[test]
fn the_maximum_job_duration_is_off_by_default_and_takes_go_durations() {
    assert_eq!(config(|_| {}).expect("valid").max_job_duration, None);
    assert_eq!(
        config(|a| a.max_job_duration = "6h".into())
            .expect("valid")
            .max_job_duration,
        Some(Duration::from_secs(6 * 3600))
    );
    let error = config_error(|a| a.max_job_duration = "soon".into());
    assert!(error.contains("--max-job-duration"), "{error}");
}

#[test]
fn the_pod_deletion_cost_is_an_active_annotation_with_an_int32_value() {
    let config = config(|a| a.pod_deletion_cost = Some("10000".into())).expect("valid");
    assert_eq!(
        config.active_annotations,
        vec![(POD_DELETION_COST.to_owned(), "10000".to_owned())]
    );
    for bad in ["lots", "3000000000", ""] {
        let error = config_error(|a| a.pod_deletion_cost = Some(bad.into()));
        assert!(error.contains("--pod-deletion-cost"), "{bad}: {error}");
    }
    let twice = config_error(|a| {
        a.pod_deletion_cost = Some("1".into());
        a.active_annotation = vec![format!("{POD_DELETION_COST}=5")];
    });
    assert!(twice.contains("one of them"), "{twice}");
}

#[test]
fn job_lifetimes_restarts_and_sweeps_are_off_by_default() {
    let config = config(|_| {}).expect("valid");
    assert_eq!(config.anonymous_job_ttl, None);
    assert_eq!(config.release_on_restart, None);
    assert_eq!(config.sweep_interval, None);
    let config = config_standalone_sweep();
    assert_eq!(config.sweep_interval, Some(Duration::from_secs(30)));
    let error = config_error(|a| a.anonymous_job_ttl = "soon".into());
    assert!(error.contains("--anonymous-job-ttl"), "{error}");
}

fn config_standalone_sweep() -> Config {
    config(|a| a.sweep_interval = "30s".into()).expect("valid")
}

#[test]
fn release_on_restart_is_for_a_sidecar_and_checks_every_ten_seconds_by_default() {
    let error = config_error(|a| a.release_on_restart = Some("main".into()));
    assert!(error.contains("--release-on-restart"), "{error}");
    let env = Environment {
        pod_name: Some("job-1".into()),
        pod_namespace: Some("jobs".into()),
        ..Default::default()
    };
    let sidecar = |extra: fn(&mut ServeArgs)| Config::from_args(&args(extra), &env);
    let config = sidecar(|a| a.release_on_restart = Some("main".into())).expect("valid");
    assert_eq!(config.release_on_restart.as_deref(), Some("main"));
    assert_eq!(config.sweep_interval, Some(DEFAULT_RESTART_CHECK));
    let config = sidecar(|a| {
        a.release_on_restart = Some("main".into());
        a.sweep_interval = "2s".into();
    })
    .expect("valid");
    assert_eq!(config.sweep_interval, Some(Duration::from_secs(2)));
    let error = sidecar(|a| a.release_on_restart = Some("Not_A_Name".into()))
        .expect_err("refused")
        .to_string();
    assert!(error.contains("--release-on-restart"), "{error}");
}

#[test]
fn defaults_match_the_original() {
    let config = config(|_| {}).expect("valid");
    assert_eq!(config.address, "0.0.0.0:8080".parse().expect("address"));
    assert_eq!(config.keys.label, "active-jobs");
    assert_eq!(
        config.policy,
        Policy {
            allow_negative: false,
            remove_on_zero: true
        }
    );
    assert_eq!(
        config.targeting,
        Targeting::Standalone {
            default_namespace: "default".to_owned(),
            allowed_namespaces: None
        }
    );
    assert_eq!(config.request_timeout, None);
    assert_eq!(config.shutdown_grace, Duration::from_secs(30));
}

#[test]
fn an_invalid_label_key_is_refused_naming_the_flag() {
    let err = config_error(|a| a.label = "bad key!".to_owned());
    assert!(err.contains("--label") && err.contains("bad key!"), "{err}");
}

#[test]
fn a_prefixed_label_key_is_accepted() {
    let config = config(|a| a.label = "example.com/active-jobs".to_owned()).expect("valid");
    assert_eq!(
        config.keys.marker_annotation,
        "example.com/active-jobs-writes"
    );
}

#[test]
fn a_selector_that_does_not_parse_is_refused_naming_the_flag() {
    let err = config_error(|a| a.label_selector = Some("app in (worker".to_owned()));
    assert!(
        err.contains("--label-selector") && err.contains("app in (worker"),
        "{err}"
    );
}

#[test]
fn an_address_that_does_not_parse_is_refused() {
    for bad in ["8080", "localhost", "1.2.3.4:99999", "::::"] {
        let err = config_error(|a| a.address = Some(bad.to_owned()));
        assert!(err.contains("--address"), "{bad}: {err}");
    }
}

#[test]
fn go_style_addresses_are_accepted() {
    assert_eq!(
        config(|a| a.address = Some(":9090".to_owned()))
            .expect("valid")
            .address
            .port(),
        9090
    );
    assert!(config(|a| a.address = Some("localhost:9090".to_owned())).is_ok());
    assert!(config(|a| a.address = Some("[::1]:9090".to_owned())).is_ok());
}

#[test]
fn a_bad_duration_is_refused_naming_the_flag() {
    let err = config_error(|a| a.kube_request_timeout = "soon".to_owned());
    assert!(
        err.contains("--kube-request-timeout") && err.contains("soon"),
        "{err}"
    );
}

#[test]
fn every_duration_flag_is_bounded_and_the_error_names_the_flag_and_the_limit() {
    type Set = fn(&mut ServeArgs, String);
    let flags: [(&str, Set, &str); 7] = [
        (
            "--kube-request-timeout",
            |a, v| a.kube_request_timeout = v,
            "1day",
        ),
        ("--retry-timeout", |a, v| a.retry_timeout = v, "1h"),
        (
            "--shutdown-grace-period",
            |a, v| a.shutdown_grace_period = v,
            "1day",
        ),
        ("--sweep-interval", |a, v| a.sweep_interval = v, "1day"),
        ("--max-job-duration", |a, v| a.max_job_duration = v, "1year"),
        (
            "--anonymous-job-ttl",
            |a, v| a.anonymous_job_ttl = v,
            "1year",
        ),
        (
            "--header-read-timeout",
            |a, v| a.header_read_timeout = v,
            "1h",
        ),
    ];
    for (flag, set, limit) in flags {
        for huge in ["10000y", "18446744073709551615", "99999999999999999999999d"] {
            let error = config_error(|a| set(a, huge.to_owned()));
            assert!(error.contains(flag), "{flag} {huge}: {error}");
            if huge == "10000y" {
                assert!(
                    error.contains(&format!("at most {limit}")),
                    "{flag}: {error}"
                );
            }
        }
    }
    let error = config_error(|a| a.sweep_interval = "10ms".to_owned());
    assert!(error.contains("at least 100ms"), "{error}");
    let error = config_error(|a| a.idle_timeout = "0".to_owned());
    assert!(error.contains("--idle-timeout"), "{error}");
}

#[test]
fn connection_limits_have_sane_defaults_and_bounds() {
    let defaults = config(|_| {}).expect("valid");
    assert_eq!(defaults.connections, ConnectionLimits::default());
    assert_eq!(defaults.connections.max_connections, 1024);
    for bad in ["0", "-1", "65537", "many", ""] {
        let error = config_error(|a| a.max_connections = bad.to_owned());
        assert!(error.contains("--max-connections"), "{bad}: {error}");
    }
    let chosen = config(|a| {
        a.max_connections = "8".to_owned();
        a.header_read_timeout = "2s".to_owned();
        a.idle_timeout = "5s".to_owned();
    })
    .expect("valid");
    assert_eq!(chosen.connections.max_connections, 8);
    assert_eq!(
        chosen.connections.header_read_timeout,
        Duration::from_secs(2)
    );
    assert_eq!(chosen.connections.idle_timeout, Duration::from_secs(5));
}

#[test]
fn go_durations_are_accepted() {
    for (text, expected) in [("1s", 1), ("2m", 120), ("3h", 10800), ("1m30s", 90)] {
        let config = config(|a| a.kube_request_timeout = text.to_owned()).expect(text);
        assert_eq!(
            config.request_timeout,
            Some(Duration::from_secs(expected)),
            "{text}"
        );
    }
}

#[test]
fn unreadable_certificate_files_are_refused_naming_the_flag() {
    let err = config_error(|a| a.kube_certificate_authority = Some("/no/such/ca.pem".to_owned()));
    assert!(err.contains("--kube-certificate-authority"), "{err}");
    let err = config_error(|a| {
        a.kube_client_certificate = Some("/no/such/cert.pem".to_owned());
        a.kube_client_key = Some("/no/such/key.pem".to_owned());
    });
    assert!(err.contains("--kube-client-certificate"), "{err}");
}

#[test]
fn a_file_without_certificates_is_refused() {
    let dir = std::env::temp_dir().join(format!("pwt-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("empty.pem");
    std::fs::write(&path, "not a certificate").expect("written");
    let err = config_error(|a| a.kube_certificate_authority = Some(path.display().to_string()));
    assert!(
        err.contains("--kube-certificate-authority") && err.contains("no PEM certificate"),
        "{err}"
    );
}

#[test]
fn namespace_precedence_is_flag_then_short_flag_then_default() {
    let ns = |c: Config| match c.targeting {
        Targeting::Standalone {
            default_namespace, ..
        } => default_namespace,
        other => panic!("{other:?}"),
    };
    assert_eq!(ns(config(|_| {}).expect("valid")), "default");
    assert_eq!(
        ns(config(|a| a.kube_namespace = Some("short".to_owned())).expect("valid")),
        "short"
    );
    assert_eq!(
        ns(config(|a| {
            a.kube_namespace = Some("short".to_owned());
            a.namespace = Some("long".to_owned());
        })
        .expect("valid")),
        "long"
    );
}

#[test]
fn pod_name_in_the_environment_selects_sidecar_mode_on_loopback() {
    let env = Environment {
        pod_name: Some("job-1".into()),
        pod_namespace: Some("jobs".into()),
        ..Default::default()
    };
    let config = Config::from_args(&args(|_| {}), &env).expect("valid");
    assert_eq!(
        config.targeting,
        Targeting::Sidecar {
            own: PodRef::new("jobs", "job-1")
        }
    );
    assert_eq!(config.address, "127.0.0.1:8080".parse().expect("address"));
    assert!(config.mode_reason.contains("POD_NAMESPACE"));
}

#[test]
fn the_service_account_namespace_is_the_fallback() {
    let env = Environment {
        pod_name: Some("job-1".into()),
        service_account_namespace: Some("batch".into()),
        ..Default::default()
    };
    let config = Config::from_args(&args(|_| {}), &env).expect("valid");
    assert_eq!(
        config.targeting,
        Targeting::Sidecar {
            own: PodRef::new("batch", "job-1")
        }
    );
}

#[test]
fn a_sidecar_without_a_namespace_is_refused_with_advice() {
    let env = Environment {
        pod_name: Some("job-1".into()),
        ..Default::default()
    };
    let err = Config::from_args(&args(|_| {}), &env)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("POD_NAMESPACE"), "{err}");
}

#[test]
fn the_standalone_flag_wins_over_the_environment() {
    let env = Environment {
        pod_name: Some("svc-0".into()),
        pod_namespace: Some("ops".into()),
        ..Default::default()
    };
    let config = Config::from_args(&args(|a| a.standalone = true), &env).expect("valid");
    assert!(matches!(config.targeting, Targeting::Standalone { .. }));
    assert_eq!(config.address.port(), 8080);
}

#[test]
fn allowed_namespaces_take_lists_and_repeats() {
    let config = config(|a| a.allowed_namespaces = vec!["a,b".into(), "c".into()]).expect("valid");
    let Targeting::Standalone {
        allowed_namespaces, ..
    } = config.targeting
    else {
        panic!("standalone")
    };
    assert_eq!(
        allowed_namespaces,
        Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
    );
    let err = config_error(|a| a.allowed_namespaces = vec!["Bad_NS".into()]);
    assert!(err.contains("--allowed-namespaces"), "{err}");
}

#[test]
fn client_certificate_and_key_go_together() {
    let dir = std::env::temp_dir().join(format!("pwt-config-pair-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, "x").expect("written");
    let err = config_error(|a| a.kube_client_certificate = Some(cert.display().to_string()));
    assert!(err.contains("--kube-client-key"), "{err}");
}

#[test]
fn secrets_do_not_show_in_debug_output() {
    let config = config(|a| {
        a.kube_token = Some("s3cr3t-token".into());
        a.kube_password = Some("s3cr3t-pass".into());
    })
    .expect("valid");
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
}

#[test]
fn authentication_is_off_by_default_and_checks_its_flags() {
    let standalone = |a: &mut ServeArgs| a.standalone = true;
    assert_eq!(config(standalone).expect("valid").authentication, None);
    let on = config(|a| {
        standalone(a);
        a.authenticate = "serviceaccount".into();
        a.token_audience = "pod-webhook-tracker".into();
        a.allowed_callers =
            vec!["system:serviceaccount:ci:reporter,system:serviceaccounts:ops".into()];
    })
    .expect("valid");
    let settings = on.authentication.expect("on");
    assert_eq!(settings.audience, "pod-webhook-tracker");
    assert_eq!(
        settings.allowed.entries(),
        [
            "system:serviceaccount:ci:reporter",
            "system:serviceaccounts:ops"
        ]
    );
    for (change, expected) in [
        (
            (|a: &mut ServeArgs| a.authenticate = "mtls".into()) as fn(&mut ServeArgs),
            "--authenticate",
        ),
        (
            |a: &mut ServeArgs| {
                a.authenticate = "serviceaccount".into();
                a.token_audience = "two words".into();
            },
            "--token-audience",
        ),
        (
            |a: &mut ServeArgs| {
                a.authenticate = "serviceaccount".into();
                a.token_audience = "x".into();
                a.allowed_callers = vec!["system:serviceaccount:NOPE".into()];
            },
            "--allowed-callers",
        ),
        (
            |a: &mut ServeArgs| a.allowed_callers = vec!["system:serviceaccount:ci:r".into()],
            "needs --authenticate=serviceaccount",
        ),
        (
            |a: &mut ServeArgs| a.tls_cert_file = Some("/tls/tls.crt".into()),
            "go together",
        ),
    ] {
        let error = config_error(|a| {
            standalone(a);
            change(a);
        });
        assert!(error.contains(expected), "{expected}: {error}");
    }
}

#[test]
fn the_sweep_lists_five_hundred_pods_a_page_unless_told_otherwise() {
    assert_eq!(
        config(|a| a.sweep_page_size = "500".into())
            .expect("valid")
            .sweep_page_size,
        500
    );
    assert_eq!(
        config(|a| a.sweep_page_size = "25".into())
            .expect("valid")
            .sweep_page_size,
        25
    );
    for bad in ["0", "10001", "many"] {
        let error = config_error(|a| a.sweep_page_size = bad.into());
        assert!(error.contains("--sweep-page-size"), "{bad}: {error}");
    }
}

#[test]
fn a_standalone_service_forgets_idle_pods_after_five_minutes_unless_told_and_a_sidecar_never() {
    let standalone = config(|_| {}).expect("valid");
    assert_eq!(standalone.forget_idle_pods_after, Some(DEFAULT_FORGET_IDLE));
    assert_eq!(
        standalone.tracker_settings().idle_writer,
        Some(Duration::from_secs(300))
    );
    let told = config(|a| a.forget_idle_pods_after = Some("30s".into())).expect("valid");
    assert_eq!(
        told.tracker_settings().idle_writer,
        Some(Duration::from_secs(30))
    );
    for bad in ["0", "500ms", "25h", "soon", "-1s"] {
        let error = config_error(|a| a.forget_idle_pods_after = Some(bad.into()));
        assert!(error.contains("--forget-idle-pods-after"), "{bad}: {error}");
    }
    let env = Environment {
        pod_name: Some("job-1".into()),
        pod_namespace: Some("jobs".into()),
        ..Default::default()
    };
    let sidecar = Config::from_args(&args(|_| {}), &env).expect("valid");
    assert_eq!(sidecar.tracker_settings().idle_writer, None);
    let error = Config::from_args(
        &args(|a| a.forget_idle_pods_after = Some("1m".into())),
        &env,
    )
    .expect_err("refused")
    .to_string();
    assert!(error.contains("--forget-idle-pods-after"), "{error}");
}
