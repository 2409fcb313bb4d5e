//! `busy`'s output: the table (fitted to 100 columns), the wide table, JSON and YAML.
//!
//! Pure: the caller passes the time, and whether to colour (only on a terminal, never with
//! `NO_COLOR`).

use serde_json::{Value, json};

use crate::core::durations::rfc3339;

use super::report::{Eviction, NodeRow, PodRow, Release, Report};

/// The width the default table fits.
pub const TABLE_WIDTH: usize = 100;

/// How to draw.
#[derive(Debug, Clone)]
pub struct Style {
    /// The counting label.
    pub label: String,
    /// The jobs annotation.
    pub jobs_annotation: String,
    /// The time, Unix seconds.
    pub now: u64,
    /// ANSI colours.
    pub color: bool,
    /// Header lines.
    pub headers: bool,
    /// Write each pod's namespace (the default table leaves it out when every pod is in the
    /// one namespace asked for, as kubectl does without `-A`).
    pub namespaces: bool,
}

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RESET: &str = "\x1b[0m";

/// A cell: its text and its colour.
#[derive(Debug, Clone, Default)]
struct Cell {
    text: String,
    color: Option<&'static str>,
}

impl Cell {
    fn new(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            color: None,
        }
    }

    fn colored(text: impl Into<String>, color: &'static str) -> Cell {
        Cell {
            text: text.into(),
            color: Some(color),
        }
    }
}

/// A line of a table: cells under the columns, or one text across the line.
enum Line {
    Cells(Vec<Cell>),
    Across(Cell),
}

/// `45s`, `5m10s`, `42m`, `3h5m`, `2d4h`: a duration as kubectl writes ages.
pub fn short(seconds: u64) -> String {
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    match () {
        () if seconds < 60 => format!("{seconds}s"),
        () if minutes < 10 && !seconds.is_multiple_of(60) => format!("{minutes}m{}s", seconds % 60),
        () if hours == 0 => format!("{minutes}m"),
        () if days == 0 && !minutes.is_multiple_of(60) => format!("{hours}h{}m", minutes % 60),
        () if days == 0 => format!("{hours}h"),
        () if !hours.is_multiple_of(24) => format!("{days}d{}h", hours % 24),
        () => format!("{days}d"),
    }
}

/// A deadline from now: `in 45m`, `expired 3m ago`.
fn until(deadline: u64, now: u64) -> Cell {
    if deadline > now {
        Cell::new(format!("in {}", short(deadline.saturating_sub(now))))
    } else {
        Cell::colored(
            format!("expired {} ago", short(now.saturating_sub(deadline))),
            YELLOW,
        )
    }
}

/// A deadline written out: the time, and how far it is in the wide table.
fn when(deadline: u64, now: u64) -> Cell {
    let relative = until(deadline, now);
    Cell {
        text: format!("{} ({})", rfc3339(deadline), relative.text),
        color: relative.color,
    }
}

fn release_cell(release: Release, now: u64, wide: bool) -> Cell {
    match release {
        Release::At(at) if wide => when(at, now),
        Release::At(at) => until(at, now),
        Release::Never => Cell::new("none"),
        Release::Unknown => Cell::colored("?", YELLOW),
    }
}

fn eviction_cell(eviction: &Eviction) -> Cell {
    let color = match eviction {
        Eviction::Allowed(_) => GREEN,
        Eviction::Refused(_) => RED,
        Eviction::Unknown(_) => YELLOW,
    };
    Cell::colored(eviction.word(), color)
}

/// `karpenter.sh/do-not-disrupt=true` as `do-not-disrupt`, others as `name=value` (the key
/// without its prefix); the wide table writes `key=value` whole.
fn annotation_text(key: &str, value: &str, wide: bool) -> String {
    if wide {
        return format!("{key}={value}");
    }
    let name = key.rsplit('/').next().unwrap_or(key);
    match (name, value) {
        ("do-not-disrupt", "true") => name.to_owned(),
        ("pod-deletion-cost", _) => format!("deletion-cost={value}"),
        _ => format!("{name}={value}"),
    }
}

fn budgets_text(row: &PodRow, wide: bool) -> Cell {
    match &row.budgets {
        None => Cell::colored("?", YELLOW),
        Some(budgets) if budgets.is_empty() => Cell::new("-"),
        Some(budgets) => Cell::new(
            budgets
                .iter()
                .map(|b| {
                    if wide {
                        format!("{} ({} allowed)", b.name, b.disruptions_allowed)
                    } else {
                        b.name.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

/// The oldest job's start: how long the pod has been busy, as far as its jobs tell.
fn busy_since(row: &PodRow) -> Option<u64> {
    row.jobs.iter().flatten().map(|job| job.started).min()
}

/// The table (`wide`: every column, nothing shortened, absolute times) with the node summary.
pub fn table(report: &Report, style: &Style, wide: bool) -> String {
    let now = style.now;
    let mut header: Vec<&str> = if wide {
        vec!["NAMESPACE", "POD", "NODE", "STATUS"]
    } else if style.namespaces {
        vec!["NAMESPACE/POD", "NODE"]
    } else {
        vec!["POD", "NODE"]
    };
    header.extend([
        "JOBS",
        "AGE",
        "DEADLINE",
        "BUDGET",
        "EVICTION",
        "ANNOTATIONS",
    ]);
    if wide {
        header.push("WHY");
    }
    // Where the job lines put their key, age and deadline.
    let (key_at, age_at): (usize, usize) = if wide { (1, 5) } else { (0, 3) };
    let mut lines = Vec::new();
    for row in &report.pods {
        let pod = &row.pod;
        let mut cells = if wide {
            let mut status = pod.phase.clone();
            if pod.phase == "Running" && !pod.ready {
                status.push_str(",NotReady");
            }
            if pod.deleting {
                status.push_str(",Terminating");
            }
            vec![
                Cell::new(pod.namespace.clone()),
                Cell::new(pod.name.clone()),
                Cell::new(pod.node.clone().unwrap_or_else(|| "<none>".to_owned())),
                Cell::new(status),
            ]
        } else {
            let mut name = if style.namespaces {
                format!("{}/{}", pod.namespace, pod.name)
            } else {
                pod.name.clone()
            };
            if !row.holds() {
                name.push_str(" (done)");
            }
            vec![
                Cell::new(name),
                Cell::new(pod.node.clone().unwrap_or_else(|| "<none>".to_owned())),
            ]
        };
        cells.push(match &row.count {
            Ok(count) => Cell::new(count.to_string()),
            Err(_) => Cell::colored("?", YELLOW),
        });
        cells.push(Cell::new(
            busy_since(row).map_or_else(|| "-".to_owned(), |s| short(now.saturating_sub(s))),
        ));
        cells.push(release_cell(row.release, now, wide));
        cells.push(budgets_text(row, wide));
        cells.push(eviction_cell(&row.eviction));
        cells.push(Cell::new(
            pod.annotations
                .iter()
                .map(|(key, value)| annotation_text(key, value, wide))
                .collect::<Vec<_>>()
                .join(","),
        ));
        if wide {
            cells.push(Cell::new(row.eviction.reason()));
        }
        lines.push(Line::Cells(cells));
        for job in row.jobs.iter().flatten() {
            let mut cells = vec![Cell::default(); age_at.saturating_add(2)];
            if let Some(cell) = cells.get_mut(key_at) {
                *cell = Cell::new(format!("  {}", job.key));
            }
            if let Some(cell) = cells.get_mut(age_at) {
                *cell = Cell::new(short(now.saturating_sub(job.started)));
            }
            if let Some(cell) = cells.get_mut(age_at.saturating_add(1)) {
                *cell = match job.deadline {
                    Some(deadline) => release_cell(Release::At(deadline), now, wide),
                    None => Cell::new("none"),
                };
            }
            lines.push(Line::Cells(cells));
        }
        if row.anonymous > 0 {
            // Across the line, so that its length does not widen the pod column.
            let jobs = if row.anonymous == 1 { "job" } else { "jobs" };
            lines.push(Line::Across(Cell::new(format!(
                "  + {} {jobs} without a key (no deadline)",
                row.anonymous
            ))));
        }
        for problem in row.problems(&style.label, &style.jobs_annotation) {
            lines.push(Line::Across(Cell::colored(
                format!("  ! {problem}"),
                YELLOW,
            )));
        }
    }
    let width = (!wide).then_some(TABLE_WIDTH);
    let mut out = draw(&header, &lines, width, style);
    if !report.nodes.is_empty() {
        out.push('\n');
        let header = ["NODE", "PODS", "JOBS", "FIRST DEADLINE", "LAST DEADLINE"];
        let lines: Vec<Line> = report
            .nodes
            .iter()
            .map(|node| Line::Cells(node_cells(node, now, wide)))
            .collect();
        out.push_str(&draw(&header, &lines, width, style));
    }
    out
}

fn node_cells(node: &NodeRow, now: u64, wide: bool) -> Vec<Cell> {
    vec![
        Cell::new(node.node.clone().unwrap_or_else(|| "<none>".to_owned())),
        Cell::new(node.pods.to_string()),
        Cell::new(node.jobs.to_string()),
        node.earliest.map_or_else(
            || Cell::new("none"),
            |at| release_cell(Release::At(at), now, wide),
        ),
        release_cell(node.latest, now, wide),
    ]
}

/// Lays out the columns: each as wide as its widest cell; with a `width`, the widest columns
/// are shortened (with `…`) until every line fits it.
fn draw(header: &[&str], lines: &[Line], width: Option<usize>, style: &Style) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header
        .iter()
        .map(|h| if style.headers { h.chars().count() } else { 0 })
        .collect();
    for line in lines {
        if let Line::Cells(cells) = line {
            for (width, cell) in widths.iter_mut().zip(cells) {
                *width = (*width).max(cell.text.chars().count());
            }
        }
    }
    if let Some(limit) = width {
        // Two spaces between columns; the last column needs no padding.
        let total = |widths: &[usize]| {
            widths
                .iter()
                .sum::<usize>()
                .saturating_add(columns.saturating_sub(1).saturating_mul(2))
        };
        // The last column (the annotations) gives way first, down to a few words: names
        // matter more.
        while total(&widths) > limit {
            match widths.last_mut() {
                Some(last) if *last > 16 => *last = last.saturating_sub(1),
                _ => break,
            }
        }
        while total(&widths) > limit {
            let Some((widest, _)) = widths
                .iter()
                .enumerate()
                .filter(|(_, w)| **w > 8)
                .max_by_key(|(_, w)| **w)
            else {
                break;
            };
            if let Some(w) = widths.get_mut(widest) {
                *w = w.saturating_sub(1);
            }
        }
    }
    let mut out = String::new();
    if style.headers {
        let cells: Vec<Cell> = header.iter().map(|h| Cell::new(*h)).collect();
        out.push_str(&row_line(&cells, &widths, style.color));
    }
    for line in lines {
        match line {
            Line::Cells(cells) => out.push_str(&row_line(cells, &widths, style.color)),
            Line::Across(cell) => {
                let text = match width {
                    Some(limit) => fit(&cell.text, limit),
                    None => cell.text.clone(),
                };
                let text = match (cell.color, style.color) {
                    (Some(color), true) => format!("{color}{text}{RESET}"),
                    _ => text,
                };
                out.push_str(&text);
                out.push('\n');
            }
        }
    }
    out
}

/// One line of cells, each padded to its column's width (the last one not at all).
fn row_line(cells: &[Cell], widths: &[usize], color: bool) -> String {
    let mut line = String::new();
    let last = cells
        .iter()
        .rposition(|cell| !cell.text.is_empty())
        .unwrap_or(0);
    for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if index > last {
            break;
        }
        let text = fit(&cell.text, *width);
        let pad = width.saturating_sub(text.chars().count());
        match (cell.color, color) {
            (Some(code), true) => line.push_str(&format!("{code}{text}{RESET}")),
            _ => line.push_str(&text),
        }
        if index < last {
            line.push_str(&" ".repeat(pad.saturating_add(2)));
        }
    }
    let mut line = line.trim_end().to_owned();
    line.push('\n');
    line
}

/// `text` cut to `width` characters, its last one `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The report as one JSON document.
pub fn json(report: &Report, style: &Style) -> Value {
    let now = style.now;
    let release = |release: Release| match release {
        Release::At(at) => (Value::from(rfc3339(at)), false),
        Release::Never => (Value::Null, true),
        Release::Unknown => (Value::Null, false),
    };
    let pods: Vec<Value> = report
        .pods
        .iter()
        .map(|row| {
            let pod = &row.pod;
            let (deadline, unbounded) = release(row.release);
            json!({
                "namespace": pod.namespace,
                "name": pod.name,
                "node": pod.node,
                "phase": pod.phase,
                "ready": pod.ready,
                "deleting": pod.deleting,
                "holdsNode": row.holds(),
                "count": row.count.as_ref().ok(),
                "labelValue": pod.labels.get(&style.label),
                "jobs": row.jobs.as_ref().ok().map(|jobs| jobs.iter().map(|job| json!({
                    "key": job.key,
                    "started": rfc3339(job.started),
                    "ageSeconds": now.saturating_sub(job.started),
                    "deadline": job.deadline.map(rfc3339),
                    "expired": job.deadline.is_some_and(|d| d <= now),
                })).collect::<Vec<_>>()),
                "jobsWithoutKey": row.anonymous,
                "deadline": deadline,
                "withoutDeadline": unbounded,
                "problems": row.problems(&style.label, &style.jobs_annotation),
                "budgets": row.budgets.as_ref().map(|budgets| budgets.iter().map(|b| json!({
                    "name": b.name,
                    "disruptionsAllowed": b.disruptions_allowed,
                    "currentHealthy": b.current_healthy,
                    "desiredHealthy": b.desired_healthy,
                })).collect::<Vec<_>>()),
                "eviction": {
                    "allowed": match row.eviction {
                        Eviction::Allowed(_) => Value::from(true),
                        Eviction::Refused(_) => Value::from(false),
                        Eviction::Unknown(_) => Value::Null,
                    },
                    "reason": row.eviction.reason(),
                },
                "annotations": pod.annotations.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    let nodes: Vec<Value> = report
        .nodes
        .iter()
        .map(|node| {
            let (last, unbounded) = release(node.latest);
            json!({
                "name": node.node,
                "pods": node.pods,
                "jobs": node.jobs,
                "firstDeadline": node.earliest.map(rfc3339),
                "lastDeadline": last,
                "withoutDeadline": unbounded,
            })
        })
        .collect();
    json!({
        "label": style.label,
        "time": rfc3339(now),
        "pods": pods,
        "nodes": nodes,
    })
}

/// A JSON document as block YAML. Strings are written plain only when no YAML reader could take
/// them for anything else (a number, a date, `true`, `null`...), else double-quoted, where
/// JSON's escapes are YAML's.
pub fn yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => yaml_map(map, 0, &mut out),
        Value::Array(items) if !items.is_empty() => yaml_list(items, 0, &mut out),
        scalar => {
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
    out
}

fn yaml_map(map: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (index, (key, value)) in map.iter().enumerate() {
        // A map that is a list item starts on the dash's line.
        if index > 0 || !out.ends_with("- ") {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&yaml_string(key));
        out.push(':');
        yaml_value(value, indent, out);
    }
}

fn yaml_list(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => yaml_map(map, indent.saturating_add(2), out),
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                yaml_list(inner, indent.saturating_add(2), out);
            }
            scalar => {
                out.push_str(&yaml_scalar(scalar));
                out.push('\n');
            }
        }
    }
}

/// After `key:`: a scalar on the same line, a collection on the lines below.
fn yaml_value(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            yaml_map(map, indent.saturating_add(2), out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            yaml_list(items, indent, out);
        }
        scalar => {
            out.push(' ');
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::String(text) => yaml_string(text),
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        other => other.to_string(),
    }
}

fn yaml_string(text: &str) -> String {
    let plain = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '/')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "nan" | "inf"
        );
    if plain {
        text.to_owned()
    } else {
        Value::from(text).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::busy::objects::{Budget, Pod};
    use kube_labels::Selector;
    use std::collections::BTreeMap;

    const NOW: u64 = 1_800_000_000;

    fn style() -> Style {
        Style {
            label: "active-jobs".to_owned(),
            jobs_annotation: "active-jobs-jobs".to_owned(),
            now: NOW,
            color: false,
            headers: true,
            namespaces: true,
        }
    }

    fn pod(namespace: &str, name: &str, node: &str, count: &str, jobs: &str) -> Pod {
        Pod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            resource_version: "1".to_owned(),
            node: Some(node.to_owned()),
            phase: "Running".to_owned(),
            ready: true,
            deleting: false,
            labels: BTreeMap::from([
                ("app".to_owned(), "runner".to_owned()),
                ("active-jobs".to_owned(), count.to_owned()),
            ]),
            jobs: Some(jobs.to_owned()),
            annotations: vec![
                ("karpenter.sh/do-not-disrupt".to_owned(), "true".to_owned()),
                (
                    "controller.kubernetes.io/pod-deletion-cost".to_owned(),
                    "10000".to_owned(),
                ),
            ],
        }
    }

    fn budget() -> Budget {
        Budget {
            namespace: "ci".to_owned(),
            name: "busy-runners".to_owned(),
            resource_version: "1".to_owned(),
            selector: Some(Selector::parse("app=runner,active-jobs").expect("selector")),
            generation: 1,
            observed_generation: 1,
            disruptions_allowed: 0,
            current_healthy: 2,
            desired_healthy: 9999,
            always_allow_unhealthy: false,
        }
    }

    fn sample() -> Report {
        let jobs = format!(
            r#"{{"v":1,"jobs":{{"build-42":{{"s":{},"d":{}}},"build-43":{{"s":{}}}}}}}"#,
            NOW - 900,
            NOW + 2700,
            NOW - 120
        );
        let expired = format!(
            r#"{{"v":1,"jobs":{{"nightly":{{"s":{},"d":{}}}}}}}"#,
            NOW - 7200,
            NOW - 180
        );
        let pods = [
            pod("ci", "runner-0", "node-a", "3", &jobs),
            pod("ci", "runner-1", "node-b", "1", &expired),
            pod("ci", "runner-2", "node-b", "x", "{broken"),
        ];
        Report::build(&pods, Ok(&[budget()]), "active-jobs")
    }

    #[test]
    fn ages_read_as_kubectls() {
        assert_eq!(short(45), "45s");
        assert_eq!(short(310), "5m10s");
        assert_eq!(short(600), "10m");
        assert_eq!(short(2520), "42m");
        assert_eq!(short(3 * 3600 + 300), "3h5m");
        assert_eq!(short(7200), "2h");
        assert_eq!(short(2 * 86_400 + 4 * 3600 + 59), "2d4h");
        assert_eq!(short(86_400), "1d");
    }

    #[test]
    fn the_table_shows_pods_their_jobs_and_the_nodes_within_100_columns() {
        let text = table(&sample(), &style(), false);
        let expected = "\
NAMESPACE/POD  NODE    JOBS  AGE  DEADLINE        BUDGET        EVICTION  ANNOTATIONS
ci/runner-0    node-a  3     15m  none            busy-runners  refused   do-not-disrupt,deletion-c…
  build-42                   15m  in 45m
  build-43                   2m   none
  + 1 job without a key (no deadline)
ci/runner-1    node-b  1     2h   expired 3m ago  busy-runners  refused   do-not-disrupt,deletion-c…
  nightly                    2h   expired 3m ago
ci/runner-2    node-b  ?     -    ?               busy-runners  refused   do-not-disrupt,deletion-c…
  ! label active-jobs holds \"x\", which is not a count
  ! annotation active-jobs-jobs: not the jobs format: key must be a string at line 1 column 2

NODE    PODS  JOBS  FIRST DEADLINE  LAST DEADLINE
node-a  1     3     in 45m          none
node-b  2     1     expired 3m ago  ?
";
        assert_eq!(text, expected, "\n{text}");
        assert!(text.lines().all(|line| line.chars().count() <= TABLE_WIDTH));
    }

    #[test]
    fn one_namespace_leaves_the_namespace_out_and_no_headers_leaves_the_headers_out() {
        let text = table(
            &sample(),
            &Style {
                namespaces: false,
                headers: false,
                ..style()
            },
            false,
        );
        let first = text.lines().next().expect("a line");
        assert!(first.starts_with("runner-0 "), "{text}");
        assert!(
            !text.contains("NAMESPACE") && !text.contains("NODE "),
            "{text}"
        );
        assert!(text.lines().all(|line| line.chars().count() <= TABLE_WIDTH));
    }

    #[test]
    fn the_wide_table_shortens_nothing_and_writes_times_out() {
        let text = table(&sample(), &style(), true);
        let header = text.lines().next().expect("a header");
        for column in ["NAMESPACE", "POD", "NODE", "STATUS", "BUDGET", "WHY"] {
            assert!(header.contains(column), "{header}");
        }
        assert!(
            text.lines().any(|l| l.chars().count() > TABLE_WIDTH),
            "{text}"
        );
        assert!(
            text.contains(
                "karpenter.sh/do-not-disrupt=true,controller.kubernetes.io/pod-deletion-cost=10000"
            ),
            "{text}"
        );
        assert!(text.contains("busy-runners (0 allowed)"), "{text}");
        assert!(
            text.contains(&format!("{} (in 45m)", rfc3339(NOW + 2700))),
            "{text}"
        );
        assert!(
            text.contains("busy-runners needs 9999 healthy pods and has 2 (disruptionsAllowed 0)"),
            "{text}"
        );
        assert!(!text.contains('…'));
    }

    #[test]
    fn colours_mark_evictions_and_problems_only_when_asked() {
        let plain = table(&sample(), &style(), false);
        assert!(!plain.contains('\x1b'));
        let coloured = table(
            &sample(),
            &Style {
                color: true,
                ..style()
            },
            false,
        );
        assert!(
            coloured.contains(&format!("{RED}refused{RESET}")),
            "{coloured}"
        );
        assert!(coloured.contains(&format!("{YELLOW}expired 3m ago{RESET}")));
        assert!(coloured.contains(&format!("{YELLOW}  ! label active-jobs")));
        let stripped = coloured
            .replace(RED, "")
            .replace(YELLOW, "")
            .replace(GREEN, "")
            .replace(RESET, "");
        assert_eq!(
            stripped, plain,
            "colours change nothing else, not even the widths"
        );
    }

    #[test]
    fn json_says_everything_the_table_does() {
        let value = json(&sample(), &style());
        let pod = &value["pods"][0];
        assert_eq!(pod["namespace"], "ci");
        assert_eq!(pod["count"], 3);
        assert_eq!(pod["jobsWithoutKey"], 1);
        assert_eq!(pod["withoutDeadline"], true);
        assert_eq!(pod["jobs"][0]["key"], "build-42");
        assert_eq!(pod["jobs"][0]["deadline"], rfc3339(NOW + 2700));
        assert_eq!(pod["jobs"][0]["ageSeconds"], 900);
        assert_eq!(pod["budgets"][0]["name"], "busy-runners");
        assert_eq!(pod["budgets"][0]["disruptionsAllowed"], 0);
        assert_eq!(pod["eviction"]["allowed"], false);
        assert_eq!(pod["annotations"]["karpenter.sh/do-not-disrupt"], "true");
        let expired = &value["pods"][1]["jobs"][0];
        assert_eq!(expired["expired"], true);
        let broken = &value["pods"][2];
        assert_eq!(broken["count"], Value::Null);
        assert_eq!(broken["labelValue"], "x");
        assert_eq!(broken["jobs"], Value::Null);
        assert_eq!(broken["problems"].as_array().map(Vec::len), Some(2));
        assert_eq!(value["nodes"][1]["name"], "node-b");
        assert_eq!(value["nodes"][1]["firstDeadline"], rfc3339(NOW - 180));
        assert_eq!(value["nodes"][1]["lastDeadline"], Value::Null);
        assert_eq!(value["time"], rfc3339(NOW));
    }

    #[test]
    fn yaml_reads_back_as_the_json_it_was_made_from() {
        let value = json(&sample(), &style());
        let text = yaml(&value);
        let read: Value = serde_saphyr::from_str(&text).expect("valid YAML");
        assert_eq!(read, value, "\n{text}");
        assert!(
            text.contains(
                "pods:\n- annotations:\n    controller.kubernetes.io/pod-deletion-cost: \"10000\"\n"
            ),
            "block style, a list item's map on the dash's line: {text}"
        );
    }

    #[test]
    fn yaml_quotes_every_string_a_reader_could_take_for_something_else() {
        let tricky = serde_json::json!({
            "plain": "node-a.example/x_1",
            "words": ["true", "No", "null", "~", "", " lead", "a: b", "# c", "- d", "12", "1e3",
                      "2026-01-01", "0x1F", "é", "line\nbreak", "tab\there", "\"quoted\"", "{x}"],
            "empty": {}, "none": [], "n": null, "b": false, "i": -3, "f": 1.5,
            "nested": [[1, 2], [], {"k": [ {"deep": "v"} ]}],
            "weird key: yes": 1,
        });
        let text = yaml(&tricky);
        let read: Value = serde_saphyr::from_str(&text).expect("valid YAML");
        assert_eq!(read, tricky, "\n{text}");
        assert!(text.contains("plain: node-a.example/x_1\n"), "{text}");
    }
}
