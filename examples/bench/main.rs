//! Benchmark of pod-webhook-tracker against a baseline that follows the original Go tool's
//! algorithm, side by side, against the same in-process API server test double.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench   # full run, about 3 min
//! cargo run --release --example bench -- --quick                  # smoke run, about 30 s
//! cargo run --release --example bench -- --check                  # exit 1 if a target is missed
//! cargo run --release --example bench -- --help                   # every option
//! cargo run --release --example bench -- --restart-only           # the restart phase: about 25 s
//! cargo run --release --example bench -- --restart-only --real-api-server   # and kube-apiserver's
//! ```
//!
//! The restart phase adds about 25 s to a full run and 10 s to `--quick`; the real API server's
//! (`--real-api-server`, about 20 s more) runs only when asked for.
//!
//! What it measures:
//! - the **release binary** (`target/release/pod-webhook-tracker`, or `--binary`) as a child
//!   process, in **sidecar** mode (its own pod; `POD_NAME`) and in **standalone** mode
//!   (`?pod_name=`), against `kube-double` with a write latency (default 3 ms, what one label
//!   PATCH takes on a real kube-apiserver on loopback) and a read latency (default 0.9 ms);
//! - a **baseline** served from this harness that does what the original did for each call:
//!   LIST the pod by field selector, compute, UPDATE (PUT) with the listed resourceVersion,
//!   retry on 409 Conflict, 500 otherwise — with client-go's default client-side throttle
//!   (5 requests/s, burst 10) and, separately, without it;
//! - per load (sequential; a burst of concurrent callers on one pod): calls/s, p50/p99
//!   latency, API requests per call by verb (the double's counters, reset before each phase;
//!   the first call for a pod is measured apart), non-2xx answers, whether every caller got
//!   its own serial count, and the exact final label;
//! - the tracker's resident memory (peak and current, anonymous and file-backed, threads)
//!   after the first call, the sequential phase and the burst; the binary's size; start-up
//!   time (spawn → `listening on` log line, median of several starts);
//! - an API server restarted mid-burst (issue #21): 16 clients send 300 increments in all to one
//!   pod while the double restarts (the write in flight committed and cut, connections refused,
//!   then 401, 403 and 429 while it warms up), three runs per mode: the answers (200, 502, 503,
//!   504, other), the label at the end, the increments stored but not acknowledged, the
//!   tracker's retries and lost answers (its `/metrics`), the latency of the calls in flight
//!   during the restart; with `--real-api-server`, the same against a real kube-apiserver
//!   (`testenv`) killed and started again, with one pod and with four;
//! - the ratios ours / baseline, and each target of the performance issue, met or not.
//!
//! Everything listens on loopback; every loop is bounded. Results: `docs/benchmarks.md`.

mod auth;
mod baseline;
mod client;
mod cluster;
mod fleet;
mod load;
mod real;
mod report;
mod restart;
mod scenario;
mod serial;
mod slow;
mod throttle;
mod tracker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

use crate::baseline::Baseline;
use crate::cluster::Cluster;
use crate::load::{Connections, Endpoint};
use crate::report::{Report, Side};
use crate::throttle::TokenBucket;
use crate::tracker::{Memory, Mode, Tracker};

/// Pods under load, one per server so that no server sees another's writes.
const SIDECAR_POD: &str = "worker-sidecar";
const STANDALONE_POD: &str = "worker-standalone";
const THROTTLED_POD: &str = "worker-baseline";
const UNTHROTTLED_POD: &str = "worker-baseline-nothrottle";
const REFERENCE_POD: &str = "worker-reference";

/// The throttled baseline manages about 2.5 calls/s: its sequential phase is capped.
const THROTTLED_SEQUENTIAL_CALLS: usize = 30;
/// Calls that empty the throttled baseline's burst allowance (2 tokens each) before measuring.
const THROTTLE_DRAIN_CALLS: usize = 4;

/// The load applied to one server.
#[derive(Debug, Clone, Copy)]
struct Loads {
    /// Unmeasured calls after the first one (to empty the throttled baseline's burst allowance).
    extra_warm_up: usize,
    /// Jobs (an increment and a decrement each) in the sequential phase.
    jobs: usize,
    /// Jobs in the burst, spread over `concurrency` callers.
    burst_jobs: usize,
    concurrency: usize,
    /// One burst for each way of connecting.
    bursts: &'static [Connections],
}

/// Ours: the usual burst, and the two others that tell connection set-up from calls.
const ALL_BURSTS: &[Connections] = &[
    Connections::OpenedTogether,
    Connections::OpenedBeforehand,
    Connections::PerCall,
];

#[derive(FromArgs)]
/// Benchmark pod-webhook-tracker (release binary) against the original's algorithm.
struct Options {
    /// latency the API double adds to every write, in ms (default 3)
    #[argh(option, default = "3.0")]
    write_latency_ms: f64,
    /// latency the API double adds to every read, in ms (default 0.9)
    #[argh(option, default = "0.9")]
    read_latency_ms: f64,
    /// calls in each sequential phase (default 500)
    #[argh(option, default = "500")]
    calls: usize,
    /// calls in each burst phase, all callers together (default 2000)
    #[argh(option, default = "2000")]
    burst_calls: usize,
    /// concurrent callers in the burst phases (default 32)
    #[argh(option, default = "32")]
    concurrency: usize,
    /// how many times to start each mode for the start-up time (default 9)
    #[argh(option, default = "9")]
    starts: usize,
    /// the tracker binary (default: target/release/pod-webhook-tracker)
    #[argh(option)]
    binary: Option<PathBuf>,
    /// run only our tracker, no baseline
    #[argh(switch)]
    skip_baseline: bool,
    /// which baseline variants: both, throttled or unthrottled (default both)
    #[argh(option, default = "String::from(\"both\")")]
    baseline_throttle: String,
    /// standalone: connections that send half a request's head and then nothing, while a
    /// normal call is made (default 1000; 0 skips it)
    #[argh(option, default = "1000")]
    slow_clients: usize,
    /// standalone: pods of the fleet phase, each counted once by --concurrency callers (default 10000; 0 skips it)
    #[argh(option, default = "10000")]
    fleet_pods: usize,
    /// the restart phase (#21): runs per variant (default 3; --quick: 1; 0 skips it)
    #[argh(option, default = "3")]
    restart_runs: usize,
    /// the restart phase: clients (default 16)
    #[argh(option, default = "restart::CLIENTS")]
    restart_clients: usize,
    /// the restart phase: increments in all, per run (default 300)
    #[argh(option, default = "restart::CALLS")]
    restart_calls: usize,
    /// run the restart phase only (with --real-api-server: on the real server too)
    #[argh(switch)]
    restart_only: bool,
    /// the restart phase on a real kube-apiserver and etcd too (crates/testenv; its tools
    /// built by crates/testenv/tools.sh): one pod and four pods
    #[argh(switch)]
    real_api_server: bool,
    /// small loads, for a smoke run
    #[argh(switch)]
    quick: bool,
    /// exit with status 1 if a target is missed
    #[argh(switch)]
    check: bool,
}

fn main() -> ExitCode {
    let mut options = parse_options();
    if options.quick {
        options.calls = options.calls.min(60);
        options.burst_calls = options.burst_calls.min(320);
        options.starts = options.starts.min(3);
        options.fleet_pods = options.fleet_pods.min(1000);
        options.restart_runs = options.restart_runs.min(1);
    }
    if options.restart_only {
        return restart_only(&options);
    }
    match run(&options) {
        Ok(report) => {
            report.print();
            let missed = report.targets().iter().filter(|t| !t.met).count();
            if options.check && missed > 0 {
                eprintln!("bench: {missed} target(s) not met");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("bench: {message}");
            ExitCode::from(2)
        }
    }
}

/// argh with `--flag=value` accepted too.
fn parse_options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let command = args.first().map_or("bench", String::as_str);
    let rest: Vec<String> = args
        .iter()
        .skip(1)
        .flat_map(|arg| match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                vec![flag.to_string(), value.to_string()]
            }
            _ => vec![arg.clone()],
        })
        .collect();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    Options::from_args(&[command], &rest).unwrap_or_else(|exit| {
        if exit.status.is_ok() {
            println!("{}", exit.output);
            std::process::exit(0);
        }
        eprintln!("{}", exit.output);
        std::process::exit(2);
    })
}

fn millis(value: f64, flag: &str) -> Result<Duration, String> {
    if value.is_finite() && value >= 0.0 {
        Ok(Duration::from_secs_f64(value / 1000.0))
    } else {
        Err(format!(
            "{flag} must be a number of milliseconds ≥ 0, not {value}"
        ))
    }
}

fn run(options: &Options) -> Result<Report, String> {
    let (throttled, unthrottled) = match (options.skip_baseline, options.baseline_throttle.as_str())
    {
        (true, _) => (false, false),
        (false, "both") => (true, true),
        (false, "throttled") => (true, false),
        (false, "unthrottled") => (false, true),
        (false, other) => {
            return Err(format!(
                "--baseline-throttle takes both, throttled or unthrottled, not {other:?}"
            ));
        }
    };
    if options.calls < 2 || options.burst_calls < 2 || options.concurrency == 0 {
        return Err("--calls and --burst-calls must be ≥ 2, --concurrency ≥ 1".into());
    }
    let write_latency = millis(options.write_latency_ms, "--write-latency-ms")?;
    let read_latency = millis(options.read_latency_ms, "--read-latency-ms")?;
    let binary = tracker_binary(options)?;
    if cfg!(debug_assertions) {
        eprintln!(
            "bench: warning: this harness is a debug build; the baseline and the load generator \
             run slower than they should: use `cargo run --release --example bench`"
        );
    }
    let binary_info = tracker::binary_info(&binary)?;
    let load_before = read_trimmed("/proc/loadavg");

    let cluster = Cluster::start(write_latency, read_latency, SIDECAR_POD);
    for pod in [
        SIDECAR_POD,
        STANDALONE_POD,
        THROTTLED_POD,
        UNTHROTTLED_POD,
        REFERENCE_POD,
    ] {
        cluster.create_pod(pod);
    }
    let api_url = cluster.api.url();
    let reference = cluster.reference(REFERENCE_POD, options.calls.min(300))?;
    eprintln!(
        "bench: API alone: PATCH p50 {:.2} ms, GET p50 {:.2} ms",
        reference.patch_p50.as_secs_f64() * 1000.0,
        reference.get_p50.as_secs_f64() * 1000.0
    );

    let loads = Loads {
        extra_warm_up: 0,
        jobs: options.calls / 2,
        burst_jobs: options.burst_calls / 2,
        concurrency: options.concurrency,
        bursts: ALL_BURSTS,
    };
    // The throttled baseline manages about 2.5 calls/s; in its burst each call may take
    // 5 attempts of 2 throttled requests: one job per caller keeps the run to about a minute.
    let throttled_callers = if options.quick {
        options.concurrency.min(8)
    } else {
        options.concurrency
    };
    let throttled_loads = Loads {
        extra_warm_up: THROTTLE_DRAIN_CALLS,
        jobs: (options.calls.min(THROTTLED_SEQUENTIAL_CALLS) / 2).max(1),
        burst_jobs: throttled_callers,
        concurrency: throttled_callers,
        bursts: &[Connections::OpenedTogether],
    };
    let mut sides = Vec::new();

    let ours = [
        (
            "ours, sidecar",
            Mode::Sidecar {
                pod: SIDECAR_POD.into(),
            },
            SIDECAR_POD,
        ),
        ("ours, standalone", Mode::Standalone, STANDALONE_POD),
    ];
    for (name, mode, pod) in &ours {
        eprintln!("bench: {name}");
        cluster.reset_usage();
        let tracker = Tracker::spawn(&binary, mode, &api_url)?;
        tracker.wait_ready()?;
        let startup_api = cluster.usage();
        let endpoint = Endpoint {
            address: tracker.address,
            query: match mode {
                Mode::Sidecar { .. } => String::new(),
                Mode::Standalone | Mode::Authenticated => format!("?pod_name={pod}"),
            },
        };
        let side = measure_side(&cluster, name, true, &endpoint, pod, loads, &|| {
            tracker.memory().map(Some)
        })
        .map_err(|e| format!("{e}\n--- tracker log ---\n{}", tracker.log_tail()));
        let slow = match (&side, mode) {
            (Ok(_), Mode::Standalone) if options.slow_clients > 0 => {
                eprintln!(
                    "bench: {name}: {} slow clients (about {} s)",
                    options.slow_clients,
                    slow::HEADER_READ_TIMEOUT.as_secs()
                );
                Some(
                    slow::measure(&endpoint, options.slow_clients, &|| tracker.memory())
                        .map_err(|e| format!("{e}\n--- tracker log ---\n{}", tracker.log_tail()))?,
                )
            }
            _ => None,
        };
        tracker.stop();
        let mut side = side?;
        side.slow_clients = slow;
        side.startup_api = Some(startup_api);
        sides.push(side);
    }
    if throttled {
        eprintln!(
            "bench: baseline with client-go's throttle (about 2.5 calls/s: this takes a while)"
        );
        sides.push(baseline_side(
            &cluster,
            "baseline (client-go defaults: 5 req/s, burst 10)",
            Some(TokenBucket::client_go_default()),
            THROTTLED_POD,
            throttled_loads,
        )?);
    }
    if unthrottled {
        eprintln!("bench: baseline without throttle");
        sides.push(baseline_side(
            &cluster,
            "baseline without throttle",
            None,
            UNTHROTTLED_POD,
            Loads {
                bursts: &[Connections::OpenedTogether],
                ..loads
            },
        )?);
    }

    // Start-up times last: the processes started here make API requests in the background
    // that must not be counted in any phase.
    for (side, (_, mode, _)) in sides.iter_mut().zip(&ours) {
        side.startups = tracker::startup_times(&binary, mode, &api_url, options.starts)?;
    }

    let load_after = read_trimmed("/proc/loadavg");
    eprintln!(
        "bench: caller authentication ({} jobs with one token)",
        options.calls / 2
    );
    let authentication = Some(auth::measure(
        &binary,
        &cluster,
        (options.calls / 2).max(1),
    )?);
    let fleet_phase = if options.fleet_pods > 0 {
        eprintln!(
            "bench: a fleet of {} pods, {} callers",
            options.fleet_pods, options.concurrency
        );
        Some(fleet::measure(
            &binary,
            &cluster,
            options.fleet_pods,
            options.concurrency,
        )?)
    } else {
        None
    };
    let restart = restart_phase(options, &binary, write_latency, read_latency)?;
    Ok(Report {
        authentication,
        fleet: fleet_phase,
        restart,
        machine: machine(load_before, load_after),
        settings: vec![
            ("tracker binary".into(), binary.display().to_string()),
            (
                "API double latency".into(),
                format!(
                    "write {} ms, read {} ms (added before each request is handled)",
                    options.write_latency_ms, options.read_latency_ms
                ),
            ),
            (
                "loads".into(),
                format!(
                    "sequential {} calls; burst {} callers × {} calls in all; throttled baseline: \
                     sequential {} calls, burst {} callers × 1 job; start-ups {} per mode",
                    2 * loads.jobs,
                    loads.concurrency,
                    2 * loads.burst_jobs,
                    2 * throttled_loads.jobs,
                    throttled_loads.concurrency,
                    options.starts
                ),
            ),
            (
                "a job".into(),
                "POST /increment, then POST /decrement if it was answered 200 (as job.sh)".into(),
            ),
        ],
        nominal_write: write_latency,
        reference,
        binary: binary_info,
        sides,
    })
}

/// The tracker binary to measure (`--binary`, or the release build beside this example).
fn tracker_binary(options: &Options) -> Result<PathBuf, String> {
    let binary = options
        .binary
        .clone()
        .unwrap_or_else(tracker::default_binary);
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "no tracker binary at {}: run `cargo build --release` first (or pass --binary PATH)",
            binary.display()
        ))
    }
}

/// The restart phase: on the double (sidecar and standalone), then on a real kube-apiserver
/// if asked for. Each has an API server of its own: no other phase sees its restarts.
fn restart_phase(
    options: &Options,
    binary: &std::path::Path,
    write_latency: Duration,
    read_latency: Duration,
) -> Result<Vec<restart::Table>, String> {
    let runs = options.restart_runs;
    if runs == 0 {
        return Ok(Vec::new());
    }
    if options.restart_clients == 0 || options.restart_calls < 2 {
        return Err("--restart-clients must be ≥ 1 and --restart-calls ≥ 2".into());
    }
    let (clients, calls) = (options.restart_clients, options.restart_calls);
    let mut tables = Vec::new();
    let double = restart::Double::start(binary, write_latency, read_latency);
    let fault = format!(
        "the in-process double (write {} ms, read {} ms), restarted {}",
        options.write_latency_ms,
        options.read_latency_ms,
        restart::double_fault()
    );
    for variant in double.variants(clients, calls, runs) {
        tables.push(restart::measure(&double, &variant, &fault, binary)?);
    }
    drop(double);
    if options.real_api_server {
        eprintln!("bench: restart: starting etcd and kube-apiserver (testenv)");
        let real = real::Real::start(binary)?;
        let fault = real.fault();
        for variant in real.variants(clients, calls, runs) {
            tables.push(restart::measure(&real, &variant, &fault, binary)?);
        }
    }
    Ok(tables)
}

/// `--restart-only`: the restart phase, its tables and its targets.
fn restart_only(options: &Options) -> ExitCode {
    let measured = (|| {
        let binary = tracker_binary(options)?;
        let write_latency = millis(options.write_latency_ms, "--write-latency-ms")?;
        let read_latency = millis(options.read_latency_ms, "--read-latency-ms")?;
        let load_before = read_trimmed("/proc/loadavg");
        let tables = restart_phase(options, &binary, write_latency, read_latency)?;
        Ok::<_, String>((tables, load_before))
    })();
    match measured {
        Ok((tables, load_before)) => {
            println!("## Machine\n");
            for (key, value) in machine(load_before, read_trimmed("/proc/loadavg")) {
                println!("- {key}: {value}");
            }
            restart::print(&tables);
            let targets = restart::targets(&tables);
            report::print_targets(&targets);
            let missed = targets.iter().filter(|t| !t.met).count();
            if options.check && missed > 0 {
                eprintln!("bench: {missed} target(s) not met");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("bench: {message}");
            ExitCode::from(2)
        }
    }
}

/// The baseline, started for one measurement and stopped after it.
fn baseline_side(
    cluster: &Cluster,
    name: &str,
    throttle: Option<TokenBucket>,
    pod: &str,
    loads: Loads,
) -> Result<Side, String> {
    let baseline = Baseline::start(cluster.address(), throttle)?;
    let endpoint = Endpoint {
        address: baseline.address,
        query: format!("?pod_name={pod}"),
    };
    let side = measure_side(cluster, name, false, &endpoint, pod, loads, &|| Ok(None));
    baseline.stop();
    side
}

/// Warm-up, then the sequential phase, then the burst, for one server; `memory` reads the
/// server's memory (ours) after each.
fn measure_side(
    cluster: &Cluster,
    name: &str,
    ours: bool,
    endpoint: &Endpoint,
    pod: &str,
    loads: Loads,
    memory: &dyn Fn() -> Result<Option<Memory>, String>,
) -> Result<Side, String> {
    let load_at_start = read_trimmed("/proc/loadavg");
    let mut snapshots = Vec::new();
    let mut snapshot = |when: &str| -> Result<(), String> {
        if let Some(m) = memory()? {
            snapshots.push((when.to_string(), m));
        }
        Ok(())
    };
    let (first_call, first_call_api) = scenario::warm_up(cluster, endpoint, loads.extra_warm_up);
    snapshot("after the first call")?;
    if first_call.count.is_none() {
        return Err(format!(
            "{name}: the first call failed: {}",
            first_call.error.as_deref().unwrap_or("?")
        ));
    }
    let sequential = scenario::measure(
        cluster,
        format!("{name}, sequential"),
        endpoint,
        pod,
        loads.jobs,
        1,
        Connections::OpenedTogether,
    )?;
    snapshot("after the sequential phase")?;
    let mut bursts = Vec::new();
    for &connections in loads.bursts {
        bursts.push(scenario::measure(
            cluster,
            format!(
                "{name}, burst C={}{}",
                loads.concurrency,
                connections.describe()
            ),
            endpoint,
            pod,
            loads.burst_jobs,
            loads.concurrency,
            connections,
        )?);
        snapshot(&format!("after the burst{}", connections.describe()))?;
    }
    Ok(Side {
        name: name.to_string(),
        ours,
        load_at_start,
        startup_api: None,
        first_call,
        first_call_api,
        sequential,
        bursts,
        memory: snapshots,
        startups: Vec::new(),
        slow_clients: None,
    })
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|e| format!("? ({e})"), |s| s.trim().to_string())
}

/// Cores, architecture, memory, CPU, kernel and load average before and after the run.
fn machine(load_before: String, load_after: String) -> Vec<(String, String)> {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = read_trimmed("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("?".into(), |l| {
            l.trim_start_matches([' ', '\t', ':']).to_string()
        });
    let meminfo = read_trimmed("/proc/meminfo");
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0))
        });
    vec![
        ("cores (nproc)".into(), cores.to_string()),
        ("architecture".into(), std::env::consts::ARCH.to_string()),
        ("CPU".into(), cpu),
        ("memory".into(), memory),
        ("kernel".into(), read_trimmed("/proc/sys/kernel/osrelease")),
        ("load average before (1, 5, 15 min)".into(), load_before),
        ("load average after".into(), load_after),
    ]
}
