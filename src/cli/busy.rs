//! `busy`'s command line: kubectl's flag names and forms (it also runs as the kubectl plugin
//! `kubectl tracker busy`), and the `--kube-*` names of `serve` accepted as their aliases.
//!
//! Pure: strings in, strings out; [`crate::config::busy`] validates what they mean.

use argh::{ArgsInfo, FromArgs};

/// List the pods the tracker holds busy: which jobs hold which nodes, since when, until when,
/// and whether their budgets let an eviction through now.
#[derive(FromArgs, ArgsInfo, Debug, PartialEq, Default)]
#[argh(
    subcommand,
    name = "busy",
    example = "{command_name} -A
{command_name} --node ip-10-0-1-5.ec2.internal -o wide
{command_name} --node ip-10-0-1-5.ec2.internal --wait-idle --timeout 30m && kubectl drain ip-10-0-1-5.ec2.internal",
    note = "A pod is busy while its label (--label) holds a count above zero; its jobs come from
the annotation LABEL-jobs. Each budget that selects it is shown with its disruptionsAllowed,
and whether the eviction API would refuse to evict it now. --node looks in every namespace
unless -n is given; without --node, -n or -A, in the kubeconfig context's namespace.

Reads only: needs list and watch on pods and on poddisruptionbudgets (policy) where it
looks (cluster-wide for -A and --node), nothing else. Without the right to list budgets it
still lists the pods, and says the budgets are unknown.

As a kubectl plugin: put the binary on PATH as kubectl-tracker (a symlink will do) and run
`kubectl tracker busy ...`. It reads KUBECONFIG and kubectl's flags (--kubeconfig,
--context, -n, -A, --as, --token, --server, --request-timeout ...); the --kube-* names of
serve are accepted too.",
    error_code(
        1,
        "--wait-idle: pods were still busy at --timeout; or the cluster could not be read"
    ),
    error_code(2, "invalid flags or connection settings")
)]
pub struct BusyArgs {
    /// the namespace to look in (default: the kubeconfig context's namespace)
    #[argh(option, short = 'n')]
    pub namespace: Option<String>,
    /// look in every namespace
    #[argh(switch, short = 'A')]
    pub all_namespaces: bool,
    /// only the pods on this node (repeatable, or comma-separated); every namespace unless -n is given
    #[argh(option)]
    pub node: Vec<String>,
    /// output format: wide, json or yaml (default: a table that fits 100 columns)
    #[argh(option, short = 'o')]
    pub output: Option<String>,
    /// after the list, watch pods and budgets and draw it again whenever they change
    #[argh(switch, short = 'w')]
    pub watch: bool,
    /// wait until no pod in scope is busy: exit 0 then, 1 at --timeout (progress on stderr)
    #[argh(switch)]
    pub wait_idle: bool,
    /// with --wait-idle: how long to wait, e.g. 30m, up to 1 day; 0 = no limit (default 0)
    #[argh(option)]
    pub timeout: Option<String>,
    /// do not print the table's header lines
    #[argh(switch)]
    pub no_headers: bool,
    /// the label that holds the number of running jobs, as the tracker's --label (default active-jobs)
    #[argh(option, default = "String::from(\"active-jobs\")")]
    pub label: String,
    /// only pods that also match this label selector, e.g. app=worker
    #[argh(option, short = 'l')]
    pub selector: Option<String>,
    /// also show this annotation when a pod has it: KEY, or KEY=VALUE as the tracker's --active-annotation (repeatable); the Karpenter, cluster-autoscaler and pod-deletion-cost ones are always shown
    #[argh(option)]
    pub active_annotation: Vec<String>,
    /// pods or budgets per LIST request, 1 to 10000; 0 = one request (default 500)
    #[argh(option, default = "String::from(\"500\")")]
    pub chunk_size: String,
    /// path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)
    #[argh(option)]
    pub kubeconfig: Option<String>,
    /// the name of the kubeconfig context to use
    #[argh(option)]
    pub context: Option<String>,
    /// the name of the kubeconfig cluster to use
    #[argh(option)]
    pub cluster: Option<String>,
    /// the name of the kubeconfig user to use
    #[argh(option)]
    pub user: Option<String>,
    /// the address and port of the Kubernetes API server
    #[argh(option, short = 's')]
    pub server: Option<String>,
    /// bearer token for authentication to the API server
    #[argh(option)]
    pub token: Option<String>,
    /// username to impersonate for the operation
    #[argh(option, long = "as")]
    pub as_user: Option<String>,
    /// group to impersonate for the operation, repeat for several groups
    #[argh(option)]
    pub as_group: Vec<String>,
    /// UID to impersonate for the operation
    #[argh(option)]
    pub as_uid: Option<String>,
    /// path to a cert file for the certificate authority
    #[argh(option)]
    pub certificate_authority: Option<String>,
    /// path to a client certificate file for TLS
    #[argh(option)]
    pub client_certificate: Option<String>,
    /// path to a client key file for TLS
    #[argh(option)]
    pub client_key: Option<String>,
    /// username for basic authentication to the API server
    #[argh(option)]
    pub username: Option<String>,
    /// password for basic authentication to the API server
    #[argh(option)]
    pub password: Option<String>,
    /// server name to use for server certificate validation
    #[argh(option)]
    pub tls_server_name: Option<String>,
    /// do not check the server's certificate; insecure
    #[argh(switch)]
    pub insecure_skip_tls_verify: bool,
    /// an HTTP proxy for the API requests
    #[argh(option)]
    pub proxy_url: Option<String>,
    /// ask the server not to compress its answers
    #[argh(switch)]
    pub disable_compression: bool,
    /// the longest one list request may take, e.g. 10s; 0 = no limit (default 0)
    #[argh(option, default = "String::from(\"0\")")]
    pub request_timeout: String,
}

/// The `--kube-*` flags of `serve` and the kubectl names `busy` takes for them.
const ALIASES: &[(&str, &str)] = &[
    ("--kube-namespace", "--namespace"),
    ("--kube-context", "--context"),
    ("--kube-cluster", "--cluster"),
    ("--kube-user", "--user"),
    ("--kube-server", "--server"),
    ("--kube-token", "--token"),
    ("--kube-as", "--as"),
    ("--kube-as-group", "--as-group"),
    ("--kube-as-uid", "--as-uid"),
    ("--kube-certificate-authority", "--certificate-authority"),
    ("--kube-client-certificate", "--client-certificate"),
    ("--kube-client-key", "--client-key"),
    ("--kube-username", "--username"),
    ("--kube-password", "--password"),
    ("--kube-tls-server-name", "--tls-server-name"),
    (
        "--kube-insecure-skip-tls-verify",
        "--insecure-skip-tls-verify",
    ),
    ("--kube-proxy-url", "--proxy-url"),
    ("--kube-disable-compression", "--disable-compression"),
    ("--kube-request-timeout", "--request-timeout"),
];

/// Whether `flag` (`--name` or `-c`) is one of busy's switches (booleans).
fn is_switch(flag: &str) -> bool {
    flag_kind(flag) == Some(false)
}

/// `Some(true)` for a flag that takes a value, `Some(false)` for a switch, `None` if unknown.
fn flag_kind(flag: &str) -> Option<bool> {
    BusyArgs::get_args_info()
        .flags
        .iter()
        .find(|info| {
            info.long == flag || info.short.is_some_and(|c| flag == format!("-{c}").as_str())
        })
        .map(|info| matches!(info.kind, argh::FlagInfoKind::Option { .. }))
}

/// Rewrites kubectl's flag forms (spf13/pflag's) into the forms argh parses: `--flag=value`
/// becomes `--flag value`; a switch takes `--flag`, `--flag=true` or `--flag=false` (dropped)
/// but never a separate value; shorthands cluster (`-Aw`) and take their value attached
/// (`-nci`, `-n=ci`, `-ojson`); `--kube-*` names become kubectl's. `args` starts with `busy`.
pub(crate) fn normalize(args: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(args.len().saturating_add(4));
    let mut rest = args.iter();
    // A flag's value, copied as it is, whatever it looks like.
    let mut value_next = false;
    while let Some(arg) = rest.next() {
        if std::mem::take(&mut value_next) || out.is_empty() {
            out.push(arg.clone());
            continue;
        }
        if arg == "--" {
            out.push(arg.clone());
            out.extend(rest.by_ref().cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (format!("--{name}"), Some(value)),
                None => (arg.clone(), None),
            };
            let name = ALIASES
                .iter()
                .find(|(alias, _)| *alias == name)
                .map_or(name, |(_, kubectl)| (*kubectl).to_owned());
            if is_switch(&name) {
                match inline.map(switch_value).transpose() {
                    Err(()) => {
                        return Err(format!(
                            "invalid value {:?} for {name}: expected true or false",
                            inline.unwrap_or_default()
                        ));
                    }
                    Ok(Some(false)) => {}
                    Ok(_) => out.push(name),
                }
            } else {
                value_next = inline.is_none() && flag_kind(&name) == Some(true);
                out.push(name);
                out.extend(inline.map(str::to_owned));
            }
        } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            // pflag's shorthands: switches cluster, and the first one that takes a value takes
            // the rest of the word (after an optional `=`), or else the next argument.
            for (at, c) in shorts.char_indices() {
                let flag = format!("-{c}");
                match flag_kind(&flag) {
                    Some(true) => {
                        out.push(flag);
                        let attached = &shorts[at.saturating_add(c.len_utf8())..];
                        let attached = attached.strip_prefix('=').unwrap_or(attached);
                        if attached.is_empty() {
                            value_next = true;
                        } else {
                            out.push(attached.to_owned());
                        }
                        break;
                    }
                    Some(false) => out.push(flag),
                    // Unknown: argh names it in its refusal.
                    None => {
                        out.push(arg.clone());
                        break;
                    }
                }
            }
        } else {
            out.push(arg.clone());
        }
    }
    Ok(out)
}

/// Go's `strconv.ParseBool` spellings, which pflag takes for `--switch=VALUE`.
fn switch_value(text: &str) -> Result<bool, ()> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(()),
    }
}
