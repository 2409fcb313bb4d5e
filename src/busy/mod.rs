//! `busy`: which pods the tracker holds busy, with their jobs, the budgets that select them and
//! whether an eviction would be refused now, per node; `--watch` draws it again on every change
//! and `--wait-idle` waits until the nodes are free.
//!
//! [`cluster`] reads (paged lists, watches) into [`objects`]; [`follow`] keeps a copy of a
//! collection current from a watch; [`report`] is pure (what the pods and budgets mean) and
//! [`render`] prints it (table, wide, JSON, YAML).

pub(crate) mod cluster;
pub(crate) mod follow;
pub mod objects;
pub mod render;
pub mod report;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::busy::{BusyConfig, Format, Mode, Scope};
use crate::core::durations::unix_seconds;
use crate::exit::{EXIT_BAD_CONFIG, EXIT_FAILURE};

use cluster::{Cluster, Collection, Failure};
use follow::{Copy, Update, follow};
use objects::{Budget, BudgetItem, Pod, PodItem};
use render::Style;
use report::Report;

/// How long after a change `--watch` waits for more before it draws: a burst of changes (a
/// tracker writing a pod, the disruption controller updating its budget) is drawn once.
const SETTLE: Duration = Duration::from_millis(200);

/// Runs `busy`: exit status 0 once printed (or, with `--wait-idle`, once idle), 1 when the
/// pods cannot be read or are still busy at `--timeout`, 2 when the connection settings are
/// unusable.
pub fn run(config: &BusyConfig) -> ExitCode {
    // busy says what failed in its own words: the client's log lines (kube logs a refused
    // connection as an error) would only repeat it, unless RUST_LOG asks for them.
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(log::LevelFilter::Off);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(busy(config))
}

/// Where `busy` looks, resolved: the namespace (`None`: all) and what to call it.
struct Place {
    namespace: Option<String>,
    nodes: Vec<String>,
}

impl Place {
    /// `in namespace ci`, `on node a in every namespace`...
    fn describe(&self) -> String {
        let nodes = match self.nodes.as_slice() {
            [] => String::new(),
            [one] => format!("on node {one} "),
            several => format!("on nodes {} ", several.join(", ")),
        };
        match &self.namespace {
            Some(namespace) => format!("{nodes}in namespace {namespace}"),
            None => format!("{nodes}in any namespace"),
        }
    }

    fn holds(&self, pod: &Pod) -> bool {
        self.nodes.is_empty()
            || pod
                .node
                .as_ref()
                .is_some_and(|node| self.nodes.contains(node))
    }
}

async fn busy(config: &BusyConfig) -> ExitCode {
    let cluster =
        match Cluster::connect(&config.kube, config.request_timeout, config.chunk_size).await {
            Ok(cluster) => cluster,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        };
    let place = Place {
        namespace: match &config.scope {
            Scope::All => None,
            Scope::Namespace(Some(namespace)) => Some(namespace.clone()),
            Scope::Namespace(None) => Some(cluster.default_namespace().to_owned()),
        },
        nodes: config.nodes.clone(),
    };
    let mut pods = Collection::pods(place.namespace.as_deref());
    // Only pods carrying the label come back: a cluster's idle pods are never read.
    pods.labels = Some(match &config.selector {
        Some(selector) => format!("{},{selector}", config.keys.label),
        None => config.keys.label.clone(),
    });
    if let [node] = place.nodes.as_slice() {
        pods.fields = Some(format!("spec.nodeName={node}"));
    }
    let budgets = Collection::budgets(place.namespace.as_deref());
    let job = Job {
        config,
        cluster,
        place,
        pods,
        budgets,
    };
    match config.mode {
        Mode::List => job.list().await,
        Mode::Watch => job.watch().await,
        Mode::WaitIdle(timeout) => job.wait_idle(timeout).await,
    }
}

/// Everything one run needs.
struct Job<'a> {
    config: &'a BusyConfig,
    cluster: Cluster,
    place: Place,
    pods: Collection,
    budgets: Collection,
}

/// Colour on a terminal, unless `NO_COLOR` is set to anything (<https://no-color.org>).
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn now() -> u64 {
    unix_seconds(SystemTime::now())
}

impl Job<'_> {
    /// Keeps the parts of a pod `busy` uses.
    fn keeper(&self) -> impl Fn(PodItem) -> Pod + Send + 'static {
        let jobs = self.config.keys.jobs_annotation.clone();
        let shown = self.config.annotations.clone();
        move |item| Pod::keep(item, &jobs, &shown)
    }

    fn style(&self, color: bool) -> Style {
        Style {
            label: self.config.keys.label.clone(),
            jobs_annotation: self.config.keys.jobs_annotation.clone(),
            now: now(),
            color,
            headers: !self.config.no_headers,
            namespaces: self.place.namespace.is_none(),
        }
    }

    fn report<'p>(
        &self,
        pods: impl IntoIterator<Item = &'p Pod>,
        budgets: Result<&[Budget], &str>,
    ) -> Report {
        Report::build(
            pods.into_iter().filter(|pod| self.place.holds(pod)),
            budgets,
            &self.config.keys.label,
        )
    }

    /// The report as the format says; for an empty table, one line saying so.
    fn render(&self, report: &Report, style: &Style) -> String {
        match self.config.format {
            Format::Table | Format::Wide if report.pods.is_empty() => {
                format!("No busy pods {}.\n", self.place.describe())
            }
            Format::Table => render::table(report, style, false),
            Format::Wide => render::table(report, style, true),
            Format::Json => {
                let mut text =
                    serde_json::to_string_pretty(&render::json(report, style)).unwrap_or_default();
                text.push('\n');
                text
            }
            Format::Yaml => render::yaml(&render::json(report, style)),
        }
    }

    /// What to say when the budgets cannot be listed: the pods are still shown.
    fn budgets_unknown(&self, failure: &Failure) -> String {
        format!(
            "cannot list poddisruptionbudgets {}: {}",
            self.place.describe(),
            failure.message
        )
    }

    fn pods_unreadable(&self, failure: &Failure) -> String {
        format!(
            "cannot list pods {}: {}",
            self.place.describe(),
            failure.message
        )
    }

    /// Lists once and prints.
    async fn list(&self) -> ExitCode {
        let (pods, budgets) = tokio::join!(
            self.cluster.list::<PodItem>(&self.pods),
            self.cluster.list::<BudgetItem>(&self.budgets)
        );
        let pods: Vec<Pod> = match pods {
            Ok((items, _)) => items.into_iter().map(self.keeper()).collect(),
            Err(failure) => {
                eprintln!("error: {}", self.pods_unreadable(&failure));
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let budgets =
            budgets.map(|(items, _)| items.into_iter().map(Budget::keep).collect::<Vec<Budget>>());
        let unknown = budgets.as_ref().err().map(|f| self.budgets_unknown(f));
        if let Some(why) = &unknown {
            eprintln!("warning: {why}; budgets and evictions show as unknown");
        }
        let report = self.report(
            &pods,
            budgets
                .as_deref()
                .map_err(|_| unknown.as_deref().unwrap_or_default()),
        );
        let style = self.style(colour());
        let text = self.render(&report, &style);
        if report.pods.is_empty() && matches!(self.config.format, Format::Table | Format::Wide) {
            // kubectl's way: "No resources found" goes to stderr, stdout stays empty.
            eprint!("{text}");
        } else {
            output(&text);
        }
        ExitCode::SUCCESS
    }

    /// Lists, prints, and prints again on every change until interrupted.
    async fn watch(&self) -> ExitCode {
        let terminal = std::io::stdout().is_terminal();
        let (pods_sender, mut pod_updates) = mpsc::channel(64);
        let (budgets_sender, mut budget_updates) = mpsc::channel(64);
        let pod_task = tokio::spawn(follow(
            self.cluster.clone(),
            self.pods.clone(),
            self.keeper(),
            pods_sender,
        ));
        let budget_task = tokio::spawn(follow(
            self.cluster.clone(),
            self.budgets.clone(),
            Budget::keep,
            budgets_sender,
        ));
        let mut pods: Copy<Pod> = Copy::default();
        let mut budgets: Copy<Budget> = Copy::default();
        let (mut pods_listed, mut budgets_known) = (false, None::<Result<(), String>>);
        let mut warned: Option<String> = None;
        let mut changed_at: Option<Instant> = None;
        let mut drawn: Option<(Report, String)> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let code = loop {
            tokio::select! {
                Some(update) = pod_updates.recv() => {
                    if let Update::Failed(failure) = &update {
                        // As kubectl get --watch: a first list that fails is an error; later
                        // failures are waited out.
                        if !pods_listed {
                            eprintln!("error: {}", self.pods_unreadable(failure));
                            break ExitCode::from(EXIT_FAILURE);
                        }
                        warn_once(&mut warned, &self.pods_unreadable(failure));
                    }
                    pods_listed |= matches!(update, Update::Listed(_));
                    if pods.apply(update) {
                        changed_at.get_or_insert_with(Instant::now);
                    }
                }
                Some(update) = budget_updates.recv() => {
                    match &update {
                        Update::Failed(failure) if failure.refused || budgets_known.is_none() => {
                            let why = self.budgets_unknown(failure);
                            warn_once(&mut warned, &why);
                            budgets_known = Some(Err(why));
                        }
                        Update::Failed(failure) => warn_once(&mut warned, &self.budgets_unknown(failure)),
                        Update::Listed(_) => budgets_known = Some(Ok(())),
                        _ => {}
                    }
                    budgets.apply(update);
                    changed_at.get_or_insert_with(Instant::now);
                }
                () = tokio::time::sleep_until(settled(changed_at)),
                    if changed_at.is_some() && pods_listed && budgets_known.is_some() => {
                    changed_at = None;
                    if !self.draw(&pods, &budgets, budgets_known.as_ref(), terminal, false, &mut drawn) {
                        break ExitCode::SUCCESS;
                    }
                }
                _ = tick.tick(), if terminal && drawn.is_some() => {
                    // Ages and deadlines move on: redraw when their text does.
                    if !self.draw(&pods, &budgets, budgets_known.as_ref(), terminal, true, &mut drawn) {
                        break ExitCode::SUCCESS;
                    }
                }
            }
        };
        pod_task.abort();
        budget_task.abort();
        code
    }

    /// Draws the report if it changed (`timely`: if its text did, for the moving times);
    /// `false` once nobody reads the output any more (a closed pipe): time to stop.
    fn draw(
        &self,
        pods: &Copy<Pod>,
        budgets: &Copy<Budget>,
        known: Option<&Result<(), String>>,
        terminal: bool,
        timely: bool,
        drawn: &mut Option<(Report, String)>,
    ) -> bool {
        let listed: Vec<Budget> = budgets.items.values().cloned().collect();
        let budgets = match known {
            Some(Err(why)) => Err(why.as_str()),
            _ => Ok(listed.as_slice()),
        };
        let report = self.report(pods.items.values(), budgets);
        let style = self.style(terminal && colour());
        let text = self.render(&report, &style);
        let same = match drawn.as_ref() {
            Some((last, _)) if !timely => *last == report,
            Some((_, last)) => *last == text,
            None => false,
        };
        if same {
            return true;
        }
        let frame = if terminal {
            // Home, clear, then the table: a redraw in place.
            format!("\x1b[H\x1b[2J{text}")
        } else {
            match (self.config.format, drawn.is_some()) {
                (Format::Yaml, _) => format!("---\n{text}"),
                (_, true) => format!("\n{text}"),
                (_, false) => text.clone(),
            }
        };
        *drawn = Some((report, text));
        output(&frame)
    }

    /// Waits until no pod in scope is busy, at most `timeout`.
    async fn wait_idle(&self, timeout: Option<Duration>) -> ExitCode {
        let started = Instant::now();
        // A timeout past what an Instant can hold is no timeout.
        let deadline = timeout.and_then(|t| started.checked_add(t));
        let (sender, mut updates) = mpsc::channel(64);
        let task = tokio::spawn(follow(
            self.cluster.clone(),
            self.pods.clone(),
            self.keeper(),
            sender,
        ));
        let mut pods: Copy<Pod> = Copy::default();
        let mut listed = false;
        let mut warned = None;
        let mut said = String::new();
        let code = loop {
            tokio::select! {
                Some(update) = updates.recv() => {
                    if let Update::Failed(failure) = &update {
                        if !listed {
                            eprintln!("error: {}", self.pods_unreadable(failure));
                            break ExitCode::from(EXIT_FAILURE);
                        }
                        warn_once(&mut warned, &self.pods_unreadable(failure));
                        continue;
                    }
                    listed |= matches!(update, Update::Listed(_));
                    pods.apply(update);
                    if !listed {
                        continue;
                    }
                    let report = self.report(pods.items.values(), Ok(&[]));
                    if !report.holds_any() {
                        eprintln!(
                            "idle: no busy pods {} (waited {})",
                            self.place.describe(),
                            render::short(started.elapsed().as_secs())
                        );
                        break ExitCode::SUCCESS;
                    }
                    let progress = progress(&report, now());
                    if progress != said {
                        eprintln!("waiting: {progress}");
                        said = progress;
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or(started)), if deadline.is_some() => {
                    break self.timed_out(&pods, timeout.unwrap_or_default()).await;
                }
            }
        };
        task.abort();
        code
    }

    /// `--timeout` passed: print what still holds the nodes (with its budgets, if they can be
    /// read) and say so.
    async fn timed_out(&self, pods: &Copy<Pod>, waited: Duration) -> ExitCode {
        let budgets = self
            .cluster
            .list::<BudgetItem>(&self.budgets)
            .await
            .map(|(items, _)| items.into_iter().map(Budget::keep).collect::<Vec<_>>());
        let unknown = budgets.as_ref().err().map(|f| self.budgets_unknown(f));
        let report = self.report(
            pods.items.values(),
            budgets
                .as_deref()
                .map_err(|_| unknown.as_deref().unwrap_or_default()),
        );
        let style = self.style(colour());
        output(&self.render(&report, &style));
        let holding = report.pods.iter().filter(|row| row.holds()).count();
        eprintln!(
            "timed out after {}: {holding} pod{} still busy {}",
            render::short(waited.as_secs()),
            if holding == 1 { "" } else { "s" },
            self.place.describe()
        );
        ExitCode::from(EXIT_FAILURE)
    }
}

/// When a change first seen at `changed_at` is drawn.
fn settled(changed_at: Option<Instant>) -> Instant {
    let at = changed_at.unwrap_or_else(Instant::now);
    at.checked_add(SETTLE).unwrap_or(at)
}

/// One line on what is still busy: `2 pods, 3 jobs on node-a; last deadline in 45m`.
fn progress(report: &Report, now: u64) -> String {
    let pods = report.pods.iter().filter(|row| row.holds()).count();
    let jobs: u64 = report.nodes.iter().map(|node| node.jobs).sum();
    let nodes: Vec<&str> = report
        .nodes
        .iter()
        .map(|node| node.node.as_deref().unwrap_or("<none>"))
        .collect();
    let last = report
        .nodes
        .iter()
        .try_fold(0, |latest, node| match node.latest {
            report::Release::At(at) => Some(latest.max(at)),
            _ => None,
        });
    let until = match last {
        Some(at) if at > now => {
            format!("last deadline in {}", render::short(at.saturating_sub(now)))
        }
        Some(at) => format!(
            "every deadline passed ({} ago)",
            render::short(now.saturating_sub(at))
        ),
        None => "a job has no deadline".to_owned(),
    };
    format!(
        "{pods} busy pod{} with {jobs} job{} on {}; {until}",
        if pods == 1 { "" } else { "s" },
        if jobs == 1 { "" } else { "s" },
        nodes.join(", ")
    )
}

/// Writes `text` to stdout; `false` when it cannot (a reader such as `head` has gone: not
/// worth a panic, as `print!` would make it).
fn output(text: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

/// A warning on stderr, not repeated while it stays the same.
fn warn_once(last: &mut Option<String>, message: &str) {
    if last.as_deref() != Some(message) {
        eprintln!("warning: {message}");
        *last = Some(message.to_owned());
    }
}
