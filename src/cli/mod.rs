//! The command line as the user types it: argh structs, the Go-style flag forms the original
//! accepted, and shell completions.
//!
//! Pure: turns strings into structs; [`crate::config`] validates what they mean.

use argh::{ArgsInfo, FromArgs};

mod busy;
pub use busy::BusyArgs;

/// Keeps the number of running jobs of a pod in a label of that pod, so that a
/// PodDisruptionBudget keeps busy pods from being evicted.
#[derive(FromArgs, ArgsInfo, Debug, PartialEq)]
pub struct Cli {
    /// what to do
    #[argh(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once at start-up, so the size of the largest variant does not matter (and argh's derive
// does not take a boxed subcommand).
#[allow(clippy::large_enum_variant)]
#[derive(FromArgs, ArgsInfo, Debug, PartialEq)]
#[argh(subcommand)]
pub enum Command {
    /// Run the webhook server.
    Serve(ServeArgs),
    /// Run a command as one counted job.
    Run(RunArgs),
    /// Check a namespace's budget and the tracker's rights.
    Doctor(DoctorArgs),
    /// List the pods the tracker holds busy, or wait until they are idle.
    Busy(BusyArgs),
    /// Copy this program into a directory.
    Install(InstallArgs),
    /// Run the admission webhook that injects the tracker into pods.
    Inject(InjectArgs),
    /// Print the version.
    Version(VersionArgs),
    /// Print a shell completion script.
    Completion(CompletionArgs),
}

/// Run the webhook server: POST /increment and POST /decrement keep a pod label in step.
#[derive(FromArgs, ArgsInfo, Debug, PartialEq, Default)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// address to listen on (default 0.0.0.0:8080 standalone, 127.0.0.1:8080 as a sidecar)
    #[argh(option)]
    pub address: Option<String>,
    /// let decrements take the count below zero, stored as negN (default false)
    #[argh(option, default = "false")]
    pub allow_negative: bool,
    /// username to impersonate for the operation
    #[argh(option)]
    pub kube_as: Option<String>,
    /// group to impersonate for the operation, repeat for several groups
    #[argh(option)]
    pub kube_as_group: Vec<String>,
    /// UID to impersonate for the operation
    #[argh(option)]
    pub kube_as_uid: Option<String>,
    /// path to a cert file for the certificate authority
    #[argh(option)]
    pub kube_certificate_authority: Option<String>,
    /// path to a client certificate file for TLS
    #[argh(option)]
    pub kube_client_certificate: Option<String>,
    /// path to a client key file for TLS
    #[argh(option)]
    pub kube_client_key: Option<String>,
    /// the name of the kubeconfig cluster to use
    #[argh(option)]
    pub kube_cluster: Option<String>,
    /// the name of the kubeconfig context to use
    #[argh(option)]
    pub kube_context: Option<String>,
    /// if true, opt out of response compression for all requests to the server (default false)
    #[argh(option, default = "false")]
    pub kube_disable_compression: bool,
    /// if true, the server's certificate will not be checked for validity; insecure (default false)
    #[argh(option, default = "false")]
    pub kube_insecure_skip_tls_verify: bool,
    /// namespace of the pods when --namespace is not given
    #[argh(option, short = 'n')]
    pub kube_namespace: Option<String>,
    /// password for basic authentication to the API server
    #[argh(option)]
    pub kube_password: Option<String>,
    /// if provided, this URL will be used to connect via proxy
    #[argh(option)]
    pub kube_proxy_url: Option<String>,
    /// the length of time to wait before giving up on a single server request, e.g. 1s, 2m, 3h; 0 = no timeout (default 0)
    #[argh(option, default = "String::from(\"0\")")]
    pub kube_request_timeout: String,
    /// the address and port of the Kubernetes API server
    #[argh(option)]
    pub kube_server: Option<String>,
    /// server name to use for server certificate validation
    #[argh(option)]
    pub kube_tls_server_name: Option<String>,
    /// bearer token for authentication to the API server
    #[argh(option)]
    pub kube_token: Option<String>,
    /// the name of the kubeconfig user to use
    #[argh(option)]
    pub kube_user: Option<String>,
    /// username for basic authentication to the API server
    #[argh(option)]
    pub kube_username: Option<String>,
    /// path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)
    #[argh(option)]
    pub kubeconfig: Option<String>,
    /// label that holds the number of running jobs (default active-jobs)
    #[argh(option, default = "String::from(\"active-jobs\")")]
    pub label: String,
    /// only pods matching this label selector may be counted, e.g. app=worker,tier in (batch)
    #[argh(option)]
    pub label_selector: Option<String>,
    /// namespace of the pods (default: -n, else default)
    #[argh(option)]
    pub namespace: Option<String>,
    /// remove the label when the count reaches zero instead of writing 0 (default true)
    #[argh(option, default = "true")]
    pub remove_on_zero: bool,
    /// run as the central, cluster-wide service even if POD_NAME is set (default false)
    #[argh(option, default = "false")]
    pub standalone: bool,
    /// standalone: the only namespaces callers may name, comma-separated or repeated (default: any)
    #[argh(option)]
    pub allowed_namespaces: Vec<String>,
    /// how long one call may keep retrying (conflicts, API unavailable) before answering 503, or 504 when a write's outcome stays unknown (default 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub retry_timeout: String,
    /// also serve the probes /healthz and /readyz here, e.g. 0.0.0.0:9090 for a sidecar on loopback (default: off)
    #[argh(option)]
    pub admin_address: Option<String>,
    /// record Kubernetes Events on the pod when it becomes busy (0 → 1) or idle (→ 0); needs create on events (default false)
    #[argh(option, default = "false")]
    pub events: bool,
    /// how long in-flight calls may take to finish after SIGTERM, e.g. 30s (default 30s)
    #[argh(option, default = "String::from(\"30s\")")]
    pub shutdown_grace_period: String,
    /// the longest a keyed job may run without a renewal, e.g. 6h; also its lifetime when it asks for none (?ttl= is capped by it); 0 = no limit (default 0)
    #[argh(option, default = "String::from(\"0\")")]
    pub max_job_duration: String,
    /// KEY=VALUE: an annotation set while the count is above zero and removed (or restored) at zero, repeatable; e.g. karpenter.sh/do-not-disrupt=true
    #[argh(option)]
    pub active_annotation: Vec<String>,
    /// give anonymous jobs (no job key) this lifetime, e.g. 2h: each is then recorded with a generated id and released at its deadline; an anonymous decrement ends the oldest; 0 = plain counting (default 0)
    #[argh(option, default = "String::from(\"0\")")]
    pub anonymous_job_ttl: String,
    /// a number N: set controller.kubernetes.io/pod-deletion-cost to N while the pod is busy and remove (or restore) it when idle, so ReplicaSet scale-in prefers idle pods; written only when the pod turns busy or idle (default: off)
    #[argh(option)]
    pub pod_deletion_cost: Option<String>,
    /// sidecar: the container whose restart (status.containerStatuses) ends the jobs started before it; they are released (default: off)
    #[argh(option)]
    pub release_on_restart: Option<String>,
    /// standalone: list the pods it may touch this often and release their expired jobs (needs list on pods); sidecar: read its own pod again this often while it has jobs (default 10s with --release-on-restart); 0 = off (default 0)
    #[argh(option, default = "String::from(\"0\")")]
    pub sweep_interval: String,
    /// the most connections open at once on the webhook address, 1 to 65536; beyond it a new connection is answered 503 and closed (default 1024; the admin address has its own 64)
    #[argh(option, default = "String::from(\"1024\")")]
    pub max_connections: String,
    /// how long a client may take to send a request's line and headers once it has started one, 1s to 1h (default 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub header_read_timeout: String,
    /// how long a kept-alive connection may stay without a request before it is closed, 1s to 1h (default 60s)
    #[argh(option, default = "String::from(\"60s\")")]
    pub idle_timeout: String,
    /// standalone: forget a pod (its /status entry, its series, its kept view) after this long without a call or a job to release, 1s to 24h (default 5m)
    #[argh(option)]
    pub forget_idle_pods_after: Option<String>,
    /// standalone: pods per LIST request of the sweep, 1 to 10000 (default 500)
    #[argh(option, default = "String::from(\"500\")")]
    pub sweep_page_size: String,
    /// standalone: who may call: none (anyone who can reach it, the original's behaviour) or serviceaccount (a bearer service-account token, reviewed by the API server; a token bound to a pod counts that pod only) (default none)
    #[argh(option, default = "String::from(\"none\")")]
    pub authenticate: String,
    /// with --authenticate=serviceaccount: the audience callers' tokens must be issued for (default pod-webhook-tracker)
    #[argh(option, default = "String::from(\"pod-webhook-tracker\")")]
    pub token_audience: String,
    /// with --authenticate=serviceaccount: users or groups that may count any pod, e.g. system:serviceaccount:ci:reporter (comma-separated or repeated)
    #[argh(option)]
    pub allowed_callers: Vec<String>,
    /// serve the webhook address over HTTPS with this certificate chain (PEM), read again when it changes
    #[argh(option)]
    pub tls_cert_file: Option<String>,
    /// the key of --tls-cert-file (PEM)
    #[argh(option)]
    pub tls_key_file: Option<String>,
}

/// Run the mutating admission webhook that adds the tracker sidecar to pods labelled
/// pod-webhook-tracker.io/inject=true.
#[derive(FromArgs, ArgsInfo, Debug, PartialEq, Default)]
#[argh(
    subcommand,
    name = "inject",
    example = "{command_name} --tls-cert-file=/tls/tls.crt --tls-key-file=/tls/tls.key",
    note = "Serves POST /mutate (admission.k8s.io/v1 AdmissionReview) over HTTPS, and /healthz,
  /readyz and /metrics. The certificate files are read again when they change. Each default
  of the injected tracker can be overridden per pod by an annotation
  pod-webhook-tracker.io/SETTING (label, port, admin-port, max-job-duration, autoscaler,
  cpu-request, memory-request, memory-limit, run); see the README's \"Injecting the sidecar\".",
    error_code(2, "invalid flags or certificate files")
)]
pub struct InjectArgs {
    /// address to listen on for HTTPS (default 0.0.0.0:8443)
    #[argh(option, default = "String::from(\"0.0.0.0:8443\")")]
    pub address: String,
    /// also serve /healthz, /readyz and /metrics over plain HTTP here, e.g. 0.0.0.0:9090
    #[argh(option)]
    pub admin_address: Option<String>,
    /// the serving certificate chain (PEM); read again when it changes
    #[argh(option)]
    pub tls_cert_file: Option<String>,
    /// the serving certificate's private key (PEM); read again when it changes
    #[argh(option)]
    pub tls_key_file: Option<String>,
    /// make a CA and a serving certificate in memory at start, and write the CA into the caBundle of --webhook-configuration (instead of --tls-cert-file) (default false)
    #[argh(option, default = "false")]
    pub self_signed: bool,
    /// with --self-signed: a DNS name for the serving certificate, e.g. pod-webhook-tracker-injector.pod-webhook-tracker.svc (repeatable)
    #[argh(option)]
    pub self_signed_dns_name: Vec<String>,
    /// with --self-signed: the MutatingWebhookConfiguration whose caBundle to set (default pod-webhook-tracker)
    #[argh(option, default = "String::from(\"pod-webhook-tracker\")")]
    pub webhook_configuration: String,
    /// with --self-signed: the webhooks in it to set the caBundle of (repeatable; default inject.pod-webhook-tracker.io)
    #[argh(option)]
    pub webhook_name: Vec<String>,
    /// the image of the injected tracker (default: this version's image)
    #[argh(option)]
    pub sidecar_image: Option<String>,
    /// the injected tracker's label (default active-jobs)
    #[argh(option, default = "String::from(\"active-jobs\")")]
    pub label: String,
    /// the injected tracker's counting port on 127.0.0.1 (default 8080)
    #[argh(option, default = "String::from(\"8080\")")]
    pub tracker_port: String,
    /// the injected tracker's admin port (probes, /wait-idle) (default 9090)
    #[argh(option, default = "String::from(\"9090\")")]
    pub admin_port: String,
    /// the injected tracker's --max-job-duration, up to 1 year; 0: none (default 6h)
    #[argh(option, default = "String::from(\"6h\")")]
    pub max_job_duration: String,
    /// which autoscaler the injected tracker keeps off busy pods: karpenter, cluster-autoscaler or none (default karpenter)
    #[argh(option, default = "String::from(\"karpenter\")")]
    pub autoscaler: String,
    /// the injected tracker's CPU request (default 5m)
    #[argh(option, default = "String::from(\"5m\")")]
    pub cpu_request: String,
    /// the injected tracker's memory request (default 8Mi)
    #[argh(option, default = "String::from(\"8Mi\")")]
    pub memory_request: String,
    /// the injected tracker's memory limit (default 32Mi)
    #[argh(option, default = "String::from(\"32Mi\")")]
    pub memory_limit: String,
    /// what to do with a labelled pod the tracker cannot be added to correctly (hostNetwork, a port in use, a bad annotation): deny (refuse the pod, saying why) or admit (create it without the tracker, with a warning) (default deny)
    #[argh(option, default = "String::from(\"deny\")")]
    pub unfit_pods: String,
    /// with --self-signed: the kubeconfig file (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)
    #[argh(option)]
    pub kubeconfig: Option<String>,
    /// with --self-signed: the kubeconfig context
    #[argh(option)]
    pub kube_context: Option<String>,
    /// most connections open at once, 1 to 65536 (default 1024)
    #[argh(option, default = "String::from(\"1024\")")]
    pub max_connections: String,
    /// how long a client may take for the TLS handshake and a request's head, 1s to 1h (default 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub header_read_timeout: String,
    /// how long a kept-alive connection may stay without a request, 1s to 1h (default 60s)
    #[argh(option, default = "String::from(\"60s\")")]
    pub idle_timeout: String,
    /// how long to let reviews in flight finish on SIGTERM, up to 1 day (default 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub shutdown_grace_period: String,
}

/// Print the version.
#[derive(FromArgs, ArgsInfo, Debug, PartialEq)]
#[argh(subcommand, name = "version")]
pub struct VersionArgs {}

/// Print a completion script for a shell: bash, zsh or fish.
#[derive(FromArgs, ArgsInfo, Debug, PartialEq)]
#[argh(subcommand, name = "completion")]
pub struct CompletionArgs {
    /// the shell: bash, zsh or fish
    #[argh(positional)]
    pub shell: String,
}

/// Run a command as one counted job: increment, run it, decrement however it ends.
#[derive(FromArgs, ArgsInfo, Debug, PartialEq)]
#[argh(
    subcommand,
    name = "run",
    example = "{command_name} -- /bin/sh -c 'make -j4 all'",
    note = "POST /increment?job=KEY to the tracker, run the command (renewing the job every
  --renew-interval), POST /decrement?job=KEY on every way out, and exit with the command's
  exit status (128+N when signal N ended it). SIGTERM, SIGINT and SIGHUP are passed on to
  the command. A call without a final answer (nothing listening yet, 503, 504, or an answer
  lost) is repeated until --retry-timeout: the job's key makes the tracker apply it once.",
    error_code(2, "invalid flags, or no command given"),
    error_code(75, "the job could not be counted, so the command was not started"),
    error_code(126, "the command could not be started"),
    error_code(127, "the command was not found")
)]
pub struct RunArgs {
    /// the tracker's address, http://host:port or https://host:port (default: $TRACKER_URL, which the injector sets, else http://127.0.0.1:8080, the sidecar)
    #[argh(option)]
    pub url: Option<String>,
    /// run the command even if the job cannot be counted, with a warning (default false)
    #[argh(option, default = "false")]
    pub run_unprotected: bool,
    /// how long to keep repeating a call without a final answer (nothing listening yet, 503, 504, or an answer lost), e.g. 30s; 0: one attempt (default 30s)
    #[argh(option, default = "String::from(\"30s\")")]
    pub retry_timeout: String,
    /// how long one call may take before its outcome counts as unknown (default 60s)
    #[argh(option, default = "String::from(\"60s\")")]
    pub request_timeout: String,
    /// send this service-account token (read again for every call, as the kubelet rotates it) as Authorization: Bearer, for a standalone tracker with --authenticate=serviceaccount (default: /var/run/secrets/pod-webhook-tracker/token, if it exists)
    #[argh(option)]
    pub token_file: Option<String>,
    /// with an https:// --url: the CA certificates (PEM) that sign the tracker's certificate (default: /var/run/secrets/pod-webhook-tracker/ca.crt)
    #[argh(option)]
    pub ca_file: Option<String>,
    /// the job's key, letters, digits and . _ : - (default: a fresh run-… key for each run)
    #[argh(option)]
    pub job: Option<String>,
    /// renew the job this often while the command runs, so that the tracker's --max-job-duration does not release it; 0: never (default 60s)
    #[argh(option, default = "String::from(\"60s\")")]
    pub renew_interval: String,
    /// the command and its arguments, after --
    #[argh(positional, arg_name = "command")]
    pub command: Vec<String>,
}

/// Copy this program into a directory, for `run` in another container of the pod: an init
/// container of the tracker's image (which has no shell or cp) fills a shared emptyDir volume.
#[derive(FromArgs, ArgsInfo, Debug, PartialEq)]
#[argh(
    subcommand,
    name = "install",
    example = "{command_name} /shared",
    note = "Writes DIRECTORY/pod-webhook-tracker (mode 0755), replacing it if present."
)]
pub struct InstallArgs {
    /// the directory to copy the program into
    #[argh(positional)]
    pub directory: String,
}

/// `doctor`: every flag of `serve` (declared once, in [`ServeArgs`]) plus `--output`.
///
/// argh cannot embed one struct's flags in another, so `doctor` parses its arguments through
/// [`ServeArgs`] after taking `--output` out, and shows serve's help with its own description.
#[derive(Debug, PartialEq, Default)]
pub struct DoctorArgs {
    /// The flags as `serve` would take them; doctor uses the connection, namespace and label ones.
    pub serve: ServeArgs,
    /// `--output`.
    pub output: Output,
}

/// How `doctor` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// Lines for people (the default).
    #[default]
    Text,
    /// One JSON object.
    Json,
}

impl std::str::FromStr for Output {
    type Err = String;

    fn from_str(text: &str) -> Result<Output, String> {
        match text {
            "text" => Ok(Output::Text),
            "json" => Ok(Output::Json),
            other => Err(format!(
                "invalid value {other:?} for --output: expected text or json"
            )),
        }
    }
}

const DOCTOR_SUMMARY: &str =
    "Check the budget that protects busy pods and the tracker's rights in a namespace.";
const DOCTOR_DESCRIPTION: &str = "\
Check a namespace: is there a PodDisruptionBudget on the label, with an integer
minAvailable, no other budget selecting the same pods, and no AlwaysAllow for
unhealthy pods? May the tracker get and patch pods, and no more?";
const DOCTOR_NOTES: &str = "Notes:
  doctor takes every flag of serve, so the tracker's own arguments can be pasted. It uses
  the connection flags, the namespace (--namespace, else -n, else default; POD_NAMESPACE
  when POD_NAME is set), --label and --label-selector. The access checks are about the
  identity doctor connects as: to check the tracker's service account, run doctor with its
  credentials or with --kube-as=system:serviceaccount:NAMESPACE:ACCOUNT.

Error codes:
  1 a problem was found (warnings alone exit 0)
  2 invalid flags or connection settings";
const OUTPUT_HELP: &str = "text (default) or json";

/// Serve's flags and `--output`, for completions.
static DOCTOR_FLAGS: std::sync::LazyLock<Vec<argh::FlagInfo>> = std::sync::LazyLock::new(|| {
    use argh::{FlagInfo, FlagInfoKind, Optionality};
    let mut flags: Vec<FlagInfo> = ServeArgs::get_args_info()
        .flags
        .iter()
        .map(|flag| FlagInfo {
            kind: match flag.kind {
                FlagInfoKind::Switch => FlagInfoKind::Switch,
                FlagInfoKind::Option { arg_name } => FlagInfoKind::Option { arg_name },
            },
            optionality: match flag.optionality {
                Optionality::Required => Optionality::Required,
                Optionality::Optional => Optionality::Optional,
                Optionality::Repeating => Optionality::Repeating,
                Optionality::Greedy => Optionality::Greedy,
            },
            long: flag.long,
            short: flag.short,
            description: flag.description,
            hidden: flag.hidden,
        })
        .collect();
    flags.push(FlagInfo {
        kind: FlagInfoKind::Option { arg_name: "output" },
        optionality: Optionality::Optional,
        long: "--output",
        short: None,
        description: OUTPUT_HELP,
        hidden: false,
    });
    flags
});

impl argh::SubCommand for DoctorArgs {
    const COMMAND: &'static argh::CommandInfo = &argh::CommandInfo {
        name: "doctor",
        short: &'\0',
        description: DOCTOR_SUMMARY,
    };
}

impl ArgsInfo for DoctorArgs {
    fn get_args_info() -> argh::CommandInfoWithArgs {
        argh::CommandInfoWithArgs {
            name: "doctor",
            description: DOCTOR_DESCRIPTION,
            flags: &DOCTOR_FLAGS,
            ..argh::CommandInfoWithArgs::default()
        }
    }
}

impl FromArgs for DoctorArgs {
    fn from_args(command_name: &[&str], args: &[&str]) -> Result<Self, argh::EarlyExit> {
        let refuse = |output: String| argh::EarlyExit {
            output,
            status: Err(()),
        };
        let takes_value = |arg: &str| {
            DOCTOR_FLAGS.iter().any(|flag| {
                matches!(flag.kind, argh::FlagInfoKind::Option { .. })
                    && (flag.long == arg || flag.short.is_some_and(|c| arg == format!("-{c}")))
            })
        };
        let mut output = Output::default();
        let mut serve_args = Vec::with_capacity(args.len());
        let mut rest = args.iter().copied();
        while let Some(arg) = rest.next() {
            if arg == "--output" {
                let value = rest
                    .next()
                    .ok_or_else(|| refuse("No value provided for option '--output'.".into()))?;
                output = value.parse().map_err(refuse)?;
                continue;
            }
            serve_args.push(arg);
            if arg == "--" {
                serve_args.extend(rest.by_ref());
            } else if takes_value(arg) {
                serve_args.extend(rest.next());
            }
        }
        match ServeArgs::from_args(command_name, &serve_args) {
            Ok(serve) => Ok(DoctorArgs { serve, output }),
            Err(exit) if exit.status.is_ok() => Err(argh::EarlyExit {
                output: doctor_help(&exit.output),
                status: Ok(()),
            }),
            Err(exit) => Err(exit),
        }
    }
}

/// Serve's help, made doctor's: its description, `--output` and the notes.
fn doctor_help(serve_help: &str) -> String {
    let serve_description = <ServeArgs as argh::SubCommand>::COMMAND.description;
    let mut help = String::new();
    for (index, line) in serve_help.lines().enumerate() {
        if line.trim_start().starts_with("--help") {
            help.push_str(&format!("  {:<18}{OUTPUT_HELP}\n", "--output"));
        }
        match line {
            _ if index == 0 => help.push_str(&format!("{line} [--output <output>]")),
            _ if line == serve_description => help.push_str(DOCTOR_DESCRIPTION),
            _ => help.push_str(line),
        }
        help.push('\n');
    }
    help.push('\n');
    help.push_str(DOCTOR_NOTES);
    help
}

/// The flags of `serve` (and `run`) that take a boolean (the original accepted `--flag`, `--flag=false`…).
pub const BOOLEAN_FLAGS: &[&str] = &[
    "--allow-negative",
    "--kube-disable-compression",
    "--kube-insecure-skip-tls-verify",
    "--remove-on-zero",
    "--standalone",
    "--events",
    "--run-unprotected",
    "--self-signed",
];

/// Rewrites the Go-style forms the original accepted into the forms argh parses.
///
/// `--flag=value` becomes `--flag value`; a bare boolean `--flag` becomes `--flag true`; boolean
/// values take Go's spellings (`1`, `t`, `TRUE`, `False`…); `-n=ns` and `-nns` become `-n ns`.
/// Everything after `--` is left alone.
pub fn normalize(args: &[String]) -> Result<Vec<String>, String> {
    // `busy` speaks kubectl's flag forms (it is also a kubectl plugin).
    if args.first().is_some_and(|arg| arg == "busy") {
        return busy::normalize(args);
    }
    let mut out = Vec::with_capacity(args.len().saturating_add(4));
    let mut rest = args.iter().peekable();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            out.push(arg.clone());
            out.extend(rest.cloned());
            break;
        }
        if arg.starts_with("--") {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (arg.as_str(), None),
            };
            out.push(name.to_owned());
            if BOOLEAN_FLAGS.contains(&name) {
                let value = match inline {
                    Some(value) => go_bool(name, value)?,
                    // A following literal belongs to the flag; anything else starts a new argument.
                    None => match rest.peek().and_then(|next| go_bool(name, next).ok()) {
                        Some(value) => {
                            rest.next();
                            value
                        }
                        None => "true",
                    },
                };
                out.push(value.to_owned());
            } else if let Some(value) = inline {
                out.push(value.to_owned());
            }
        } else if let Some(value) = arg.strip_prefix("-n").filter(|v| !v.is_empty()) {
            out.push("-n".to_owned());
            out.push(value.strip_prefix('=').unwrap_or(value).to_owned());
        } else {
            out.push(arg.clone());
        }
    }
    Ok(out)
}

/// Go's `strconv.ParseBool` spellings.
fn go_bool(flag: &str, value: &str) -> Result<&'static str, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok("true"),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok("false"),
        _ => Err(format!(
            "invalid value {value:?} for {flag}: expected true or false"
        )),
    }
}

/// The completion script for `shell`, generated from the argh definitions.
pub fn completion_script(shell: &str, program: &str) -> Result<String, String> {
    use argh_complete::Generator;
    let info = Cli::get_args_info();
    match shell {
        "bash" => Ok(argh_complete::bash::Bash::generate(program, &info)),
        "zsh" => Ok(argh_complete::zsh::Zsh::generate(program, &info)),
        "fish" => Ok(argh_complete::fish::Fish::generate(program, &info)),
        other => Err(format!(
            "unsupported shell {other:?} for completion: expected bash, zsh or fish"
        )),
    }
}

/// Parses the arguments after the program name (already normalised).
pub fn parse(program: &str, args: &[String]) -> Result<Cli, argh::EarlyExit> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Cli::from_args(&[program], &args)
}

#[cfg(test)]
mod tests;
