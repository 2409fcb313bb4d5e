//! `busy`'s validated settings: where to look, how to show it, and how to connect, all checked
//! before anything runs (exit status 2 otherwise).

use std::time::Duration;

use kube_labels::Selector;

use crate::api::KubeOverrides;
use crate::cli::{BusyArgs, ServeArgs};
use crate::core::durations::{Bounds, MAX_KUBE_REQUEST_TIMEOUT, MAX_WAIT_IDLE};
use crate::core::keys::TrackerKeys;
use crate::error::{Error, Result};

use super::POD_DELETION_COST;
use super::flags::{invalid, parse_timeout};
use super::kube_flags::kube_overrides;

/// The annotations autoscalers read that `busy` always shows when a pod has them.
pub const AUTOSCALER_ANNOTATIONS: &[&str] = &[
    "karpenter.sh/do-not-disrupt",
    "cluster-autoscaler.kubernetes.io/safe-to-evict",
    POD_DELETION_COST,
];

/// The largest `--chunk-size` (the API server caps a page near this anyway).
pub const MAX_CHUNK_SIZE: u32 = 10_000;

/// Which namespaces to look in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One namespace; `None`: the kubeconfig context's (known once connected).
    Namespace(Option<String>),
    /// Every namespace (`-A`, or `--node` without `-n`).
    All,
}

/// How the pods are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A table that fits 100 columns.
    Table,
    /// A table with every column, nothing shortened, absolute times.
    Wide,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// What `busy` does once it has read the pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Print them once.
    List,
    /// Print them, then again whenever pods or budgets change (`--watch`).
    Watch,
    /// Wait until none is busy (`--wait-idle`), at most this long (`None`: no limit).
    WaitIdle(Option<Duration>),
}

/// `busy`, validated.
#[derive(Debug, Clone)]
pub struct BusyConfig {
    /// Where to look.
    pub scope: Scope,
    /// Only the pods on these nodes (empty: any node).
    pub nodes: Vec<String>,
    /// How to print.
    pub format: Format,
    /// List, watch or wait.
    pub mode: Mode,
    /// Leave out the table's header lines.
    pub no_headers: bool,
    /// The counting label and the jobs annotation named after it.
    pub keys: TrackerKeys,
    /// Pods must match this selector too (`-l`).
    pub selector: Option<Selector>,
    /// The annotations shown when a pod has them: the autoscalers' and `--active-annotation`'s.
    pub annotations: Vec<String>,
    /// Items per LIST request; `None`: all in one.
    pub chunk_size: Option<u32>,
    /// API connection settings.
    pub kube: KubeOverrides,
    /// Time limit of one LIST request (watches last as long as the server keeps them).
    pub request_timeout: Option<Duration>,
}

impl BusyConfig {
    /// Validates `busy`'s flags; every error names its flag.
    pub fn from_args(args: &BusyArgs) -> Result<BusyConfig> {
        let keys =
            TrackerKeys::new(&args.label).map_err(|why| invalid("--label", &args.label, &why))?;
        let selector = match args.selector.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(text) => Some(
                Selector::parse(text).map_err(|e| invalid("--selector", text, &e.to_string()))?,
            ),
            None => None,
        };
        let mut nodes: Vec<String> = Vec::new();
        for text in &args.node {
            for name in text.split(',').map(str::trim) {
                kube_labels::validate_dns1123_subdomain(name)
                    .map_err(|problems| invalid("--node", name, &problems.join("; ")))?;
                if !nodes.iter().any(|seen| seen == name) {
                    nodes.push(name.to_owned());
                }
            }
        }
        let namespace = match &args.namespace {
            Some(name) => {
                kube_labels::validate_dns1123_label(name)
                    .map_err(|problems| invalid("--namespace", name, &problems.join("; ")))?;
                Some(name.clone())
            }
            None => None,
        };
        // kubectl's way: -A wins over -n; a node's pods are in any namespace.
        let scope = if args.all_namespaces || (namespace.is_none() && !nodes.is_empty()) {
            Scope::All
        } else {
            Scope::Namespace(namespace)
        };
        let format = match args.output.as_deref() {
            None | Some("") => Format::Table,
            Some("wide") => Format::Wide,
            Some("json") => Format::Json,
            Some("yaml") => Format::Yaml,
            Some(other) => {
                return Err(invalid("--output", other, "expected wide, json or yaml"));
            }
        };
        let mode = match (args.watch, args.wait_idle, args.timeout.as_deref()) {
            (true, true, _) => {
                return Err(Error::Config(
                    "--watch and --wait-idle do not go together: give one of them".to_owned(),
                ));
            }
            (_, false, Some(text)) => {
                return Err(invalid(
                    "--timeout",
                    text,
                    "it is how long --wait-idle waits; give --wait-idle too",
                ));
            }
            (true, false, None) => Mode::Watch,
            (false, false, None) => Mode::List,
            (false, true, timeout) => Mode::WaitIdle(parse_timeout(
                "--timeout",
                timeout.unwrap_or("0"),
                Bounds::up_to(MAX_WAIT_IDLE),
            )?),
        };
        let mut annotations: Vec<String> = AUTOSCALER_ANNOTATIONS
            .iter()
            .map(|key| (*key).to_owned())
            .collect();
        for text in &args.active_annotation {
            // The tracker's own `KEY=VALUE` can be pasted: only the key matters here.
            let key = text.split_once('=').map_or(text.as_str(), |(key, _)| key);
            kube_labels::validate_label_key(key)
                .map_err(|problems| invalid("--active-annotation", text, &problems.join("; ")))?;
            if !annotations.iter().any(|seen| seen == key) {
                annotations.push(key.to_owned());
            }
        }
        let chunk_size = match args.chunk_size.trim().parse::<u32>() {
            Ok(0) => None,
            Ok(n) if n <= MAX_CHUNK_SIZE => Some(n),
            _ => {
                return Err(invalid(
                    "--chunk-size",
                    &args.chunk_size,
                    &format!("expected a number of items from 0 to {MAX_CHUNK_SIZE}"),
                ));
            }
        };
        Ok(BusyConfig {
            scope,
            nodes,
            format,
            mode,
            no_headers: args.no_headers,
            keys,
            selector,
            annotations,
            chunk_size,
            // The messages name serve's flags; busy's are kubectl's, without `kube-`.
            kube: kube_overrides(&connection_flags(args))
                .map_err(|e| Error::Config(e.to_string().replace("--kube-", "--")))?,
            request_timeout: parse_timeout(
                "--request-timeout",
                &args.request_timeout,
                Bounds::up_to(MAX_KUBE_REQUEST_TIMEOUT),
            )?,
        })
    }
}

/// busy's connection flags under serve's names, so that one function reads and checks them.
fn connection_flags(args: &BusyArgs) -> ServeArgs {
    ServeArgs {
        kubeconfig: args.kubeconfig.clone(),
        kube_context: args.context.clone(),
        kube_cluster: args.cluster.clone(),
        kube_user: args.user.clone(),
        kube_server: args.server.clone(),
        kube_token: args.token.clone(),
        kube_as: args.as_user.clone(),
        kube_as_group: args.as_group.clone(),
        kube_as_uid: args.as_uid.clone(),
        kube_certificate_authority: args.certificate_authority.clone(),
        kube_client_certificate: args.client_certificate.clone(),
        kube_client_key: args.client_key.clone(),
        kube_username: args.username.clone(),
        kube_password: args.password.clone(),
        kube_tls_server_name: args.tls_server_name.clone(),
        kube_insecure_skip_tls_verify: args.insecure_skip_tls_verify,
        kube_proxy_url: args.proxy_url.clone(),
        kube_disable_compression: args.disable_compression,
        ..ServeArgs::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: impl FnOnce(&mut BusyArgs)) -> BusyArgs {
        let mut args = BusyArgs {
            label: "active-jobs".to_owned(),
            chunk_size: "500".to_owned(),
            request_timeout: "0".to_owned(),
            ..BusyArgs::default()
        };
        extra(&mut args);
        args
    }

    fn config(extra: impl FnOnce(&mut BusyArgs)) -> Result<BusyConfig> {
        BusyConfig::from_args(&args(extra))
    }

    fn refusal(extra: impl FnOnce(&mut BusyArgs)) -> String {
        config(extra).expect_err("refused").to_string()
    }

    #[test]
    fn by_default_busy_lists_the_contexts_namespace_as_a_table() {
        let config = config(|_| {}).expect("valid");
        assert_eq!(config.scope, Scope::Namespace(None));
        assert_eq!((config.format, config.mode), (Format::Table, Mode::List));
        assert_eq!(config.chunk_size, Some(500));
        assert_eq!(config.annotations, AUTOSCALER_ANNOTATIONS);
        assert_eq!(config.keys.jobs_annotation, "active-jobs-jobs");
        assert_eq!(config.request_timeout, None);
    }

    #[test]
    fn nodes_look_in_every_namespace_unless_one_is_given_and_all_wins_as_in_kubectl() {
        let nodes =
            config(|a| a.node = vec!["a,b".into(), "b".into(), " c".into()]).expect("valid");
        assert_eq!(nodes.scope, Scope::All);
        assert_eq!(nodes.nodes, ["a", "b", "c"]);
        let in_ci = config(|a| {
            a.node = vec!["a".into()];
            a.namespace = Some("ci".into());
        })
        .expect("valid");
        assert_eq!(in_ci.scope, Scope::Namespace(Some("ci".into())));
        let all = config(|a| {
            a.all_namespaces = true;
            a.namespace = Some("ci".into());
        })
        .expect("valid");
        assert_eq!(all.scope, Scope::All);
    }

    #[test]
    fn wait_idle_takes_a_bounded_timeout_and_watch_does_not_go_with_it() {
        let wait = config(|a| {
            a.wait_idle = true;
            a.timeout = Some("30m".into());
        })
        .expect("valid");
        assert_eq!(wait.mode, Mode::WaitIdle(Some(Duration::from_secs(1800))));
        let forever = config(|a| a.wait_idle = true).expect("valid");
        assert_eq!(forever.mode, Mode::WaitIdle(None));
        assert!(
            refusal(|a| {
                a.wait_idle = true;
                a.timeout = Some("2d".into());
            })
            .contains("at most 1day")
        );
        assert!(refusal(|a| a.timeout = Some("5m".into())).contains("give --wait-idle too"));
        assert!(
            refusal(|a| {
                a.wait_idle = true;
                a.watch = true;
            })
            .contains("--watch and --wait-idle")
        );
        assert_eq!(config(|a| a.watch = true).expect("valid").mode, Mode::Watch);
    }

    /// A change to the flags, and the flag its refusal names.
    type Case = (Box<dyn FnOnce(&mut BusyArgs)>, &'static str);

    #[test]
    fn every_bad_value_is_refused_naming_its_flag() {
        let cases: Vec<Case> = vec![
            (Box::new(|a| a.output = Some("name".into())), "--output"),
            (Box::new(|a| a.node = vec!["Bad_Node".into()]), "--node"),
            (Box::new(|a| a.node = vec!["a,,b".into()]), "--node"),
            (
                Box::new(|a| a.namespace = Some("Not/A/Namespace".into())),
                "--namespace",
            ),
            (Box::new(|a| a.label = "bad label".into()), "--label"),
            (
                Box::new(|a| a.selector = Some("a in (".into())),
                "--selector",
            ),
            (Box::new(|a| a.chunk_size = "10001".into()), "--chunk-size"),
            (Box::new(|a| a.chunk_size = "many".into()), "--chunk-size"),
            (
                Box::new(|a| a.request_timeout = "soon".into()),
                "--request-timeout",
            ),
            (
                Box::new(|a| a.active_annotation = vec!["bad key!=1".into()]),
                "--active-annotation",
            ),
            (
                Box::new(|a| a.kubeconfig = Some("/no/such/kubeconfig".into())),
                "--kubeconfig",
            ),
            (
                Box::new(|a| a.certificate_authority = Some("/no/such/ca.pem".into())),
                "--certificate-authority",
            ),
            (
                Box::new(|a| a.client_key = Some("/etc/hostname".into())),
                "--client-certificate",
            ),
        ];
        for (change, flag) in cases {
            let message = refusal(change);
            assert!(message.contains(flag), "{flag}: {message}");
            assert!(
                !message.contains("--kube-"),
                "busy's own flag names: {message}"
            );
        }
    }

    #[test]
    fn active_annotations_add_their_keys_once_whether_or_not_a_value_is_pasted() {
        let config = config(|a| {
            a.active_annotation = vec![
                "example.com/busy=yes".into(),
                "example.com/busy".into(),
                "karpenter.sh/do-not-disrupt=true".into(),
            ];
        })
        .expect("valid");
        assert_eq!(config.annotations.len(), AUTOSCALER_ANNOTATIONS.len() + 1);
        assert_eq!(
            config.annotations.last().map(String::as_str),
            Some("example.com/busy")
        );
        assert_eq!(
            self::config(|a| a.chunk_size = "0".into())
                .expect("valid")
                .chunk_size,
            None,
            "0: no paging, as kubectl's --chunk-size=0"
        );
    }
}
