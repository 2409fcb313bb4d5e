//! The monitoring of `manifests/monitoring` held to real Prometheus tooling and to the program:
//! the PrometheusRule passes `promtool check rules` (every lint) and the unit tests of
//! `tests/monitoring/alerts.test.yaml`, in which every alert fires and stays quiet, and which
//! fail when an alert is made to never fire or to always fire; every metric the alerts and the
//! Grafana dashboard read is one a running `serve` or `inject` exports (with the label names
//! and values they match on), or another program's that the runbook names; every alert has its
//! section in `docs/runbook.md`; the dashboard's queries parse as PromQL; the kustomization
//! renders the files as written, and its monitors find the ports and labels the other
//! manifests and the injector give trackers.
//!
//! The tools are built from their Go modules by crates/testenv (promtool from
//! github.com/prometheus/prometheus, kustomize from sigs.k8s.io/kustomize).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kube_double::{Fault, FaultKind, Restart, Verb};
use serde_json::{Value, json};
use support::{NS, Tracker};

const RULE: &str = "manifests/monitoring/prometheusrule.yaml";
const DASHBOARD: &str = "manifests/monitoring/dashboards/pod-webhook-tracker.json";
const UNIT_TESTS: &str = "tests/monitoring/alerts.test.yaml";
/// The rule file the unit tests name, written from the PrometheusRule's `spec`.
const RULE_FILE: &str = "pod-webhook-tracker.rules.yaml";
const RUNBOOK: &str = "docs/runbook.md";
const RUNBOOK_URL: &str =
    "https://github.com/pod-webhook-tracker/pod-webhook-tracker/blob/main/docs/runbook.md";
const PREFIX: &str = "pod_webhook_tracker_";

/// The metrics of other programs that alerts may read, and which program exports them. The
/// runbook section of each alert that reads one must name it (so an operator knows what to
/// scrape); the dashboard reads none.
const EXTERNAL: [(&str, &str); 9] = [
    ("kube_pod_init_container_status_ready", "kube-state-metrics"),
    ("kube_pod_container_status_ready", "kube-state-metrics"),
    ("kube_pod_status_phase", "kube-state-metrics"),
    ("kube_pod_info", "kube-state-metrics"),
    ("kube_pod_deletion_timestamp", "kube-state-metrics"),
    ("kube_node_spec_unschedulable", "kube-state-metrics"),
    (
        "kube_deployment_status_replicas_available",
        "kube-state-metrics",
    ),
    (
        "apiserver_admission_webhook_rejection_count",
        "kube-apiserver",
    ),
    (
        "certmanager_certificate_expiration_timestamp_seconds",
        "cert-manager",
    ),
];

/// The labels the Prometheus operator's monitors give every series they scrape (the target's
/// namespace, pod, container, ...): a query may match on them although no exposition has them.
const TARGET_LABELS: [&str; 7] = [
    "namespace",
    "pod",
    "container",
    "instance",
    "job",
    "endpoint",
    "service",
];

/// Label values the alerts match on that no test here can make the binary export, and why.
const NOT_PRODUCED: [(&str, &str, &str); 1] = [(
    "connections_closed_total",
    "panic",
    "counted when a request handler panics; no input is meant to make it panic",
)];

// ---------------------------------------------------------------------------------------------
// Files and tools

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(file: &str) -> String {
    std::fs::read_to_string(root().join(file))
        .unwrap_or_else(|error| panic!("cannot read {file}: {error}"))
}

/// The documents of a YAML text.
fn yaml_documents(text: &str, what: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|error| panic!("{what} is not valid YAML: {error}"))
}

/// The one document of a YAML file.
fn yaml(file: &str) -> Value {
    let mut documents = yaml_documents(&read(file), file);
    assert_eq!(documents.len(), 1, "{file} holds one document");
    documents.remove(0)
}

/// A fresh folder of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pwt-monitoring-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}

fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new(testenv::tool("promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs")
}

fn said(output: &Output) -> String {
    format!(
        "{}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The PrometheusRule's `spec`: a Prometheus rule file.
fn rule_spec() -> Value {
    let rule = yaml(RULE);
    assert_eq!(rule["kind"], "PrometheusRule", "{RULE}");
    rule["spec"].clone()
}

/// Writes `spec` as the rule file the unit tests name (JSON, which is YAML) into `dir`, with a
/// copy of the unit tests beside it.
fn write_rules(dir: &Path, spec: &Value) {
    std::fs::write(dir.join(RULE_FILE), spec.to_string()).expect("the rule file is written");
    std::fs::write(dir.join("alerts.test.yaml"), read(UNIT_TESTS)).expect("the unit tests");
}

/// One alerting rule.
struct Alert {
    name: String,
    expr: String,
    rule: Value,
}

fn alerts(spec: &Value) -> Vec<Alert> {
    let mut found = Vec::new();
    for group in spec["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("only alerting rules");
            found.push(Alert {
                name: name.to_owned(),
                expr: rule["expr"].as_str().expect("an expression").to_owned(),
                rule: rule.clone(),
            });
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// PromQL: the metrics and label matchers an expression reads

/// A metric selector of an expression: the metric and its label matchers `(label, op, value)`.
#[derive(Debug, Clone, PartialEq)]
struct Selector {
    metric: String,
    matchers: Vec<(String, String, String)>,
}

/// Words that are PromQL's own, never a metric: binary and set operators, modifiers, the
/// aggregation operators (which may be followed by `by`/`without` instead of `(`).
const KEYWORDS: [&str; 25] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
/// The keywords followed by a list of label names in parentheses.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The index just past the string literal that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The index just past the bracket that closes the one at `start` (strings inside skipped).
fn skip_group(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unclosed {open} in {:?}", chars.iter().collect::<String>())
}

fn next_non_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The label matchers inside `{...}` (without the braces).
fn matchers(inner: &str) -> Vec<(String, String, String)> {
    let chars: Vec<char> = inner.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    loop {
        i = next_non_space(&chars, i);
        if i >= chars.len() {
            return found;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        i = next_non_space(&chars, i);
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| chars[i..].iter().collect::<String>().starts_with(op))
            .unwrap_or_else(|| panic!("no matcher operator in {{{inner}}}"));
        i = next_non_space(&chars, i + op.len());
        let end = skip_string(&chars, i);
        let value: String = chars[i + 1..end - 1].iter().collect();
        found.push((label, op.to_owned(), value.replace("\\\"", "\"")));
        i = next_non_space(&chars, end);
        if i < chars.len() && chars[i] == ',' {
            i += 1;
        }
    }
}

/// Every metric selector of a PromQL expression. Function names (followed by `(`), keywords,
/// label lists after `by`/`on`/..., strings, durations and numbers are no metrics.
fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '[' {
            i = skip_group(&chars, i, '[', ']');
        } else if c == '{' {
            // A selector with no metric name: PromQL allows it; these files do not use it.
            panic!("a selector without a metric name in {expr:?}");
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || ((chars[i] == '+' || chars[i] == '-') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = next_non_space(&chars, i);
            let followed_by = chars.get(next).copied();
            if GROUPING.contains(&word.as_str()) && followed_by == Some('(') {
                i = skip_group(&chars, next, '(', ')');
            } else if followed_by == Some('(') || KEYWORDS.contains(&word.to_lowercase().as_str()) {
                // A function's or an aggregation's name.
            } else if followed_by == Some('{') {
                let end = skip_group(&chars, next, '{', '}');
                let inner: String = chars[next + 1..end - 1].iter().collect();
                found.push(Selector {
                    metric: word,
                    matchers: matchers(&inner),
                });
                i = end;
            } else {
                found.push(Selector {
                    metric: word,
                    matchers: Vec::new(),
                });
            }
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn selectors_are_read_from_promql_as_prometheus_reads_them() {
    let expr = r#"sum by (namespace, pod) (increase(a_total{reason="expired", x=~"1|2"}[15m])) > 0
        and on (namespace) group_left (node) max without (le) (b) * 1e-3 offset 5m
        / ignoring(x) histogram_quantile(0.99, sum(rate(c_bucket{s!~'a"b'}[$__rate_interval]))) or vector(0) unless count(d) by (e)"#;
    let found = selectors(expr);
    let metrics: Vec<&str> = found.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(metrics, ["a_total", "b", "c_bucket", "d"]);
    assert_eq!(
        found[0].matchers,
        [
            ("reason".to_owned(), "=".to_owned(), "expired".to_owned()),
            ("x".to_owned(), "=~".to_owned(), "1|2".to_owned())
        ]
    );
    assert_eq!(
        found[2].matchers,
        [("s".to_owned(), "!~".to_owned(), "a\"b".to_owned())]
    );
}

// ---------------------------------------------------------------------------------------------
// promtool

#[test]
fn the_prometheus_rule_passes_promtool_check_rules_with_every_lint() {
    let dir = scratch("check");
    write_rules(&dir, &rule_spec());
    let output = promtool(
        &["check", "rules", "--lint=all", "--lint-fatal", RULE_FILE],
        &dir,
    );
    let text = said(&output);
    assert!(output.status.success(), "promtool check rules: {text}");
    let count = alerts(&rule_spec()).len();
    assert!(
        text.contains(&format!("SUCCESS: {count} rules found")),
        "{text}"
    );
    assert!(count >= 14, "only {count} alerts");
}

/// The alert names each unit test shows firing (a non-empty `exp_alerts`) and quiet (empty).
fn unit_test_cases() -> (BTreeSet<String>, BTreeSet<String>) {
    let tests = yaml(UNIT_TESTS);
    assert_eq!(tests["rule_files"], json!([RULE_FILE]), "{UNIT_TESTS}");
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for test in tests["tests"].as_array().expect("tests") {
        for case in test["alert_rule_test"].as_array().expect("alert_rule_test") {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let expected = case["exp_alerts"].as_array().expect("exp_alerts");
            if expected.is_empty() {
                quiet.insert(name);
            } else {
                for alert in expected {
                    assert!(
                        alert["exp_annotations"]["runbook_url"].is_string(),
                        "{name}: the test checks the annotations too"
                    );
                }
                firing.insert(name);
            }
        }
    }
    (firing, quiet)
}

#[test]
fn every_alert_is_shown_firing_and_not_firing_by_the_promtool_unit_tests() {
    let spec = rule_spec();
    let names: BTreeSet<String> = alerts(&spec).into_iter().map(|a| a.name).collect();
    let (firing, quiet) = unit_test_cases();
    let never_fired: Vec<_> = names.difference(&firing).collect();
    let never_quiet: Vec<_> = names.difference(&quiet).collect();
    assert!(never_fired.is_empty(), "no unit test fires {never_fired:?}");
    assert!(
        never_quiet.is_empty(),
        "no unit test keeps {never_quiet:?} quiet"
    );
    let unknown: Vec<_> = firing
        .union(&quiet)
        .filter(|n| !names.contains(*n))
        .collect();
    assert!(
        unknown.is_empty(),
        "unit tests of alerts that do not exist: {unknown:?}"
    );

    let dir = scratch("unit");
    write_rules(&dir, &spec);
    let output = promtool(&["test", "rules", "alerts.test.yaml"], &dir);
    assert!(
        output.status.success(),
        "promtool test rules: {}",
        said(&output)
    );
    assert!(said(&output).contains("SUCCESS"), "{}", said(&output));
}

#[test]
fn the_unit_tests_fail_when_an_alert_never_fires_or_always_fires() {
    // Each alert in turn gets an expression that never holds, then one that always holds: the
    // unit tests must notice both, naming that alert.
    let spec = rule_spec();
    let dir = scratch("mutants");
    let mut unnoticed = Vec::new();
    for alert in alerts(&spec) {
        for (what, expr) in [
            ("never fires", "vector(1) < 0"),
            ("always fires", "vector(1)"),
        ] {
            let mut mutant = spec.clone();
            for group in mutant["groups"].as_array_mut().expect("groups") {
                for rule in group["rules"].as_array_mut().expect("rules") {
                    if rule["alert"] == alert.name.as_str() {
                        rule["expr"] = json!(expr);
                    }
                }
            }
            write_rules(&dir, &mutant);
            let output = promtool(&["test", "rules", "alerts.test.yaml"], &dir);
            let text = said(&output);
            if output.status.success() || !text.contains(&alert.name) {
                unnoticed.push(format!("{} {what}: {text}", alert.name));
            }
        }
    }
    assert!(
        unnoticed.is_empty(),
        "the unit tests did not notice:\n{}",
        unnoticed.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Alerts and the runbook

/// The runbook's sections by heading (any level), each with its text up to the next heading.
fn runbook_sections() -> BTreeMap<String, String> {
    let mut sections = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in read(RUNBOOK).lines() {
        if line.starts_with('#') {
            if let Some((heading, text)) = current.take() {
                sections.insert(heading, text);
            }
            current = Some((
                line.trim_start_matches('#').trim().to_owned(),
                String::new(),
            ));
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    if let Some((heading, text)) = current {
        sections.insert(heading, text);
    }
    sections
}

#[test]
fn every_alert_says_how_bad_it_is_and_links_its_section_of_the_runbook() {
    let sections = runbook_sections();
    let external: BTreeMap<&str, &str> = EXTERNAL.into_iter().collect();
    let mut problems = Vec::new();
    for alert in alerts(&rule_spec()) {
        let name = &alert.name;
        assert!(
            name.starts_with("PodWebhookTracker"),
            "{name}: one prefix for all"
        );
        let severity = alert.rule["labels"]["severity"]
            .as_str()
            .unwrap_or_default();
        if !["critical", "warning", "info"].contains(&severity) {
            problems.push(format!("{name}: severity {severity:?}"));
        }
        for key in ["summary", "description", "runbook_url"] {
            if !alert.rule["annotations"][key].is_string() {
                problems.push(format!("{name}: no {key} annotation"));
            }
        }
        let url = format!("{RUNBOOK_URL}#{}", name.to_lowercase());
        if alert.rule["annotations"]["runbook_url"] != url.as_str() {
            problems.push(format!("{name}: runbook_url is not {url}"));
        }
        // GitHub's anchor of a heading that is the alert's name is the name in lower case.
        let Some(section) = sections.get(name.as_str()) else {
            problems.push(format!("{name}: {RUNBOOK} has no heading {name}"));
            continue;
        };
        if section.split_whitespace().count() < 40 {
            problems.push(format!("{name}: its runbook section says too little"));
        }
        for selector in selectors(&alert.expr) {
            if let Some(program) = external.get(selector.metric.as_str())
                && !(section.contains(&selector.metric) && section.contains(program))
            {
                problems.push(format!(
                    "{name}: reads {} of {program}, which its runbook section does not name",
                    selector.metric
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The metrics the running binary exports

/// Parses an exposition: the sample names each `# TYPE` family may have, and the label names and
/// values of every sample seen, by sample name.
#[derive(Default, Debug)]
struct Exposition {
    names: BTreeSet<String>,
    labels: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Exposition {
    fn add(&mut self, text: &str) {
        // A whole exposition, and nothing after it: Prometheus's OpenMetrics parser refuses
        // "unexpected data after # EOF".
        assert!(
            text.ends_with("\n# EOF\n"),
            "a whole exposition ending with its # EOF line:\n{text:?}"
        );
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (family, kind) = rest.split_once(' ').expect("# TYPE NAME KIND");
                let suffixes: &[&str] = match kind {
                    "counter" => &["_total"],
                    "histogram" => &["_bucket", "_sum", "_count"],
                    "gauge" | "unknown" => &[""],
                    other => panic!("a family of kind {other}: {line}"),
                };
                for suffix in suffixes {
                    self.names.insert(format!("{family}{suffix}"));
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, _) = line.rsplit_once(' ').expect("a sample");
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, matchers(rest.trim_end_matches('}'))),
                    None => (series, Vec::new()),
                };
                let seen = self.labels.entry(name.to_owned()).or_default();
                for (label, _, value) in labels {
                    seen.entry(label).or_default().insert(value);
                }
            }
        }
    }
}

fn metrics_at(address: std::net::SocketAddr) -> String {
    let answer = support::request(address, "GET", "/metrics", &[]);
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body
}

/// Waits until `/metrics` at `address` holds `line`, and returns it.
fn wait_for_metric(address: std::net::SocketAddr, line: &str) -> String {
    let started = Instant::now();
    loop {
        let text = metrics_at(address);
        if text.contains(line) || started.elapsed() > Duration::from_secs(20) {
            assert!(text.contains(line), "{line} never appeared in\n{text}");
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `/metrics` of a standalone `serve` against the API test double after it met what the
/// alerts are about: calls answered 200, 404, 503 and 504, a conflict, a 429, a restarting API
/// server's 403s, a lost answer, a job held past its deadline, an idle connection cut.
fn serve_exposition() -> String {
    let api = support::api();
    for pod in ["w1", "w2", "w3", "w4", "w5"] {
        api.create_pod(NS, pod, &[]);
    }
    let tracker = support::standalone(&api)
        .args([
            "--admin-address=127.0.0.1:0",
            "--retry-timeout=3s",
            "--kube-request-timeout=1s",
            "--idle-timeout=1s",
        ])
        .start();
    let admin = tracker.admin.expect("an admin address");
    assert_eq!(tracker.increment("pod_name=w1").count(), 1);
    assert_eq!(tracker.increment("pod_name=w1").count(), 2);
    assert_eq!(tracker.decrement("pod_name=w1").count(), 1);
    assert_eq!(tracker.increment("pod_name=nope").status, 404);
    // A guard conflict, then API Priority and Fairness' 429: both retried.
    api.inject(Fault::new(FaultKind::Status(409)).verb(Verb::Patch).next(1));
    assert_eq!(tracker.increment("pod_name=w2").count(), 1);
    api.inject(Fault::status(429).verb(Verb::Patch).next(1));
    assert_eq!(tracker.increment("pod_name=w2").count(), 2);
    // A lost answer, found stored.
    api.inject(Fault::apply_then_drop().verb(Verb::Patch).next(1));
    assert_eq!(tracker.increment("pod_name=w3").count(), 1);
    // A job held past its deadline: released by the tracker's own timer.
    assert_eq!(
        tracker.increment("pod_name=w4&job=build-1&ttl=1s").count(),
        1
    );
    wait_for_metric(
        admin,
        "pod_webhook_tracker_jobs_released_total{reason=\"expired\"} 1",
    );
    // A restarting API server: its 403s retried as `recovering`.
    api.restart(
        Restart::new()
            .now()
            .down_for(Duration::from_millis(100))
            .forbidden_for(Duration::from_millis(500)),
    );
    assert_eq!(tracker.increment("pod_name=w5").count(), 1);
    assert!(api.wait_restarted(Duration::from_secs(20)));
    // An API server that answers 503 for longer than --retry-timeout: 503, nothing written.
    api.inject(Fault::status(503).verb(Verb::Patch).always());
    assert_eq!(tracker.increment("pod_name=w5").status, 503);
    api.clear_faults();
    // A write whose answer is lost and that cannot be read back: 504.
    api.inject(Fault::apply_then_drop().verb(Verb::Patch));
    api.inject(Fault::status(403).verb(Verb::Get).always());
    assert_eq!(tracker.increment("pod_name=w5").status, 504);
    api.clear_faults();
    // A connection left idle is cut after --idle-timeout.
    let idle = TcpStream::connect(tracker.address).expect("a connection");
    let text = wait_for_metric(
        admin,
        "pod_webhook_tracker_connections_closed_total{listener=\"webhook\",reason=\"idle-timeout\"} 1",
    );
    drop(idle);
    text
}

/// `/metrics` of `inject` after it injected a pod, denied one it cannot serve and refused a
/// request that is no AdmissionReview, and the JSON patch it answered for the injected pod.
fn inject_exposition() -> (String, Value) {
    let dir = scratch("injector");
    let ca = support::https::write_certificate(&dir, &["127.0.0.1"]);
    let injector = Tracker::injector()
        .args([
            format!("--tls-cert-file={}", dir.join("tls.crt").display()),
            format!("--tls-key-file={}", dir.join("tls.key").display()),
            "--admin-address=127.0.0.1:0".to_owned(),
            "--idle-timeout=1s".to_owned(),
        ])
        .start();
    let review = |name: &str, host_network: bool| {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": format!("uid-{name}"), "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "namespace": NS, "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": NS,
                             "labels": {"pod-webhook-tracker.io/inject": "true"}},
                "spec": {"hostNetwork": host_network,
                         "containers": [{"name": "job", "image": "busybox"}]}}}})
        .to_string()
        .into_bytes()
    };
    let json_type = [("content-type", "application/json")];
    let post = |body: Vec<u8>| {
        let (status, text) =
            support::https::request(injector.address, &ca, "POST", "/mutate", &json_type, body);
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<Value>(&text).expect("an AdmissionReview")
    };
    let injected = post(review("worker-1", false));
    assert_eq!(injected["response"]["allowed"], true, "{injected}");
    let patch = injected["response"]["patch"].as_str().expect("a patch");
    let patch: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, patch).expect("base64"),
    )
    .expect("a JSON patch");
    let denied = post(review("worker-2", true));
    assert_eq!(denied["response"]["allowed"], false, "{denied}");
    let (status, text) = support::https::request(
        injector.address,
        &ca,
        "POST",
        "/mutate",
        &json_type,
        b"{}".to_vec(),
    );
    assert_eq!(status, 400, "{text}");
    let admin = injector.admin.expect("an admin address");
    wait_for_metric(
        admin,
        "pod_webhook_tracker_injector_reviews_total{outcome=\"refused\"} 1",
    );
    // A connection left idle is cut after --idle-timeout.
    let idle = TcpStream::connect(injector.address).expect("a connection");
    let text = wait_for_metric(
        admin,
        "pod_webhook_tracker_injector_connections_closed_total{listener=\"webhook\",reason=\"idle-timeout\"} 1",
    );
    drop(idle);
    (text, patch)
}

/// The metric selectors of every Grafana query of the dashboard, with Grafana's variables
/// filled in as Grafana would, and the metric of the `namespace` variable's query.
fn dashboard_queries() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("JSON");
    let mut queries = Vec::new();
    let mut panels: Vec<Value> = dashboard["panels"].as_array().expect("panels").clone();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().cloned().unwrap_or_default());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a Prometheus query");
            queries.push(
                expr.replace("$__rate_interval", "5m")
                    .replace("$namespace", ".*"),
            );
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            // Grafana's label_values(METRIC, LABEL): the metric is PromQL.
            let metric = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.split_once(','))
                .map(|(metric, _)| metric.to_owned())
                .unwrap_or_else(|| panic!("an unexpected variable query {query}"));
            queries.push(metric);
        }
    }
    queries
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_read_is_one_the_binary_exports_or_the_runbook_names() {
    let mut exported = Exposition::default();
    exported.add(&serve_exposition());
    let (injector, _) = inject_exposition();
    exported.add(&injector);
    let external: BTreeMap<&str, &str> = EXTERNAL.into_iter().collect();
    let mut problems = Vec::new();
    let mut read_ours = BTreeSet::new();
    let rules = alerts(&rule_spec())
        .into_iter()
        .map(|alert| (format!("alert {}", alert.name), alert.expr));
    let dashboard = dashboard_queries()
        .into_iter()
        .map(|query| (format!("dashboard query {query}"), query));
    for (what, expr) in rules.chain(dashboard) {
        for selector in selectors(&expr) {
            let metric = &selector.metric;
            if !metric.starts_with(PREFIX) {
                if what.starts_with("dashboard") || !external.contains_key(metric.as_str()) {
                    problems.push(format!("{what}: reads {metric}, not the binary's"));
                }
                continue;
            }
            read_ours.insert(metric.clone());
            if !exported.names.contains(metric) {
                problems.push(format!(
                    "{what}: {metric} is not exported by serve or inject"
                ));
                continue;
            }
            let seen = exported.labels.get(metric).cloned().unwrap_or_default();
            for (label, op, value) in &selector.matchers {
                if TARGET_LABELS.contains(&label.as_str()) && !seen.contains_key(label) {
                    continue;
                }
                let Some(values) = seen.get(label) else {
                    problems.push(format!("{what}: {metric} has no label {label}"));
                    continue;
                };
                let unproduced = NOT_PRODUCED.iter().any(|(family, v, _)| {
                    metric.trim_start_matches(PREFIX) == *family && value == v
                });
                if op == "=" && !values.contains(value) && !unproduced {
                    problems.push(format!(
                        "{what}: {metric}{{{label}=\"{value}\"}} never seen (seen: {values:?})"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The test saw the metrics it is about.
    for metric in [
        "pod_webhook_tracker_active_jobs",
        "pod_webhook_tracker_write_retries_total",
        "pod_webhook_tracker_injector_reviews_total",
    ] {
        assert!(read_ours.contains(metric), "nothing reads {metric}");
    }
    for (family, value, why) in NOT_PRODUCED {
        assert!(
            why.split_whitespace().count() >= 4,
            "{family} {value}: say why"
        );
    }
}

#[test]
fn the_dashboard_queries_parse_as_promql_and_its_panels_fit_the_grid() {
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).expect("JSON");
    assert_eq!(dashboard["uid"], "pod-webhook-tracker");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "ids are unique"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (
            grid["x"].as_u64().expect("x"),
            grid["w"].as_u64().expect("w"),
        );
        assert!(x + w <= 24, "{} is wider than the grid", panel["title"]);
        titles.push(panel["title"].as_str().expect("a title").to_owned());
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
            assert!(
                !panel["targets"].as_array().expect("targets").is_empty(),
                "{} has no query",
                panel["title"]
            );
        }
    }
    // What an operator asked to see.
    for wanted in [
        "Busy pods by namespace",
        "Running jobs by pod (top 20)",
        "Time held busy in the last 6 hours (top 20)",
        "Calls by outcome",
        "API latency",
        "Write retries by reason",
        "Admission reviews by outcome",
    ] {
        assert!(
            titles.iter().any(|t| t == wanted),
            "no panel {wanted}: {titles:?}"
        );
    }
    // promtool parses each query as the expression of a recording rule.
    let rules: Vec<Value> = dashboard_queries()
        .iter()
        .enumerate()
        .map(|(n, query)| json!({"record": format!("dashboard:query_{n}"), "expr": query}))
        .collect();
    let dir = scratch("dashboard");
    std::fs::write(
        dir.join("dashboard.rules.yaml"),
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .expect("written");
    let output = promtool(&["check", "rules", "dashboard.rules.yaml"], &dir);
    assert!(output.status.success(), "{}", said(&output));
    assert!(
        said(&output).contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{}",
        said(&output)
    );
}

// ---------------------------------------------------------------------------------------------
// The kustomization and what its monitors scrape

/// The objects `kustomize build DIR` renders.
fn rendered(dir: &str) -> Vec<Value> {
    let output = Command::new(testenv::tool("kustomize"))
        .args(["build", dir])
        .current_dir(root())
        .output()
        .expect("kustomize runs");
    assert!(
        output.status.success(),
        "kustomize build {dir}: {}",
        said(&output)
    );
    yaml_documents(&String::from_utf8_lossy(&output.stdout), dir)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The pod templates of a rendered kustomization (Deployments and Jobs).
fn pod_templates(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter_map(|o| o.pointer("/spec/template"))
        .collect()
}

/// Whether a pod template's labels match a label selector's `matchLabels` (all it uses here).
fn selected(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .map(|wanted| wanted.iter().all(|(k, v)| labels[k] == *v))
        .unwrap_or(true)
}

/// The names of every container port of a pod spec, init containers included.
fn port_names(spec: &Value) -> BTreeSet<String> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|list| spec[list].as_array().cloned().unwrap_or_default())
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_kustomization_renders_the_rule_and_the_dashboard_as_written() {
    let objects = rendered("manifests/monitoring");
    let kinds: BTreeSet<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap/pod-webhook-tracker-dashboard",
            "PodMonitor/pod-webhook-tracker-injected",
            "PodMonitor/pod-webhook-tracker-injector",
            "PodMonitor/pod-webhook-tracker-sidecars",
            "PrometheusRule/pod-webhook-tracker",
            "ServiceMonitor/pod-webhook-tracker-standalone",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect()
    );
    assert_eq!(
        find(&objects, "PrometheusRule", "pod-webhook-tracker")["spec"],
        rule_spec()
    );
    let map = find(&objects, "ConfigMap", "pod-webhook-tracker-dashboard");
    assert_eq!(
        map["metadata"]["labels"]["grafana_dashboard"], "1",
        "Grafana's dashboard sidecar loads it"
    );
    let shipped: Value = serde_json::from_str(
        map["data"]["pod-webhook-tracker.json"]
            .as_str()
            .expect("the dashboard"),
    )
    .expect("JSON");
    let file: Value = serde_json::from_str(&read(DASHBOARD)).expect("JSON");
    assert_eq!(shipped, file, "the dashboard as written");
    for object in &objects {
        assert!(
            object.pointer("/metadata/namespace").is_none(),
            "the namespace is the user's: kubectl apply -n"
        );
    }
}

#[test]
fn the_monitors_scrape_the_ports_that_the_manifests_and_the_injector_give_trackers() {
    let objects = rendered("manifests/monitoring");
    let endpoint = |kind: &str, name: &str| -> (Value, Value) {
        let monitor = find(&objects, kind, name);
        let list = if kind == "PodMonitor" {
            "podMetricsEndpoints"
        } else {
            "endpoints"
        };
        let endpoints = monitor["spec"][list].as_array().expect("endpoints");
        assert_eq!(endpoints.len(), 1, "{name}");
        (monitor["spec"]["selector"].clone(), endpoints[0].clone())
    };
    // Trackers' series keep their own namespace and pod (active_jobs names the counted pod).
    for (kind, name) in [
        ("PodMonitor", "pod-webhook-tracker-injected"),
        ("PodMonitor", "pod-webhook-tracker-sidecars"),
        ("ServiceMonitor", "pod-webhook-tracker-standalone"),
    ] {
        let (_, endpoint) = endpoint(kind, name);
        assert_eq!(endpoint["honorLabels"], true, "{name}");
        assert_eq!(endpoint["path"], "/metrics", "{name}");
    }

    // Injected trackers: the port the injector really adds, whatever the pod's labels.
    let (selector, scraped) = endpoint("PodMonitor", "pod-webhook-tracker-injected");
    assert_eq!(
        selector,
        json!({}),
        "every pod: the port picks the trackers out"
    );
    let (_, patch) = inject_exposition();
    let added_ports: BTreeSet<String> = patch
        .as_array()
        .expect("a JSON patch")
        .iter()
        .filter_map(|op| op.get("value"))
        // A patch adds the init containers as a list, or one container at a time.
        .flat_map(|value| match value.as_array() {
            Some(containers) => containers.clone(),
            None => vec![value.clone()],
        })
        .filter(|c| c["name"] == "tracker")
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        added_ports,
        BTreeSet::from([scraped["port"].as_str().expect("a port").to_owned()]),
        "the injected tracker's ports: {patch}"
    );

    // Hand-written sidecars (manifests/sidecar): the pods the monitor selects have the port.
    let (selector, scraped) = endpoint("PodMonitor", "pod-webhook-tracker-sidecars");
    let sidecar = rendered("manifests/sidecar");
    let templates = pod_templates(&sidecar);
    assert!(templates.len() >= 3, "the Jobs and the Deployment");
    for template in templates {
        assert!(
            selected(&selector, &template["metadata"]["labels"]),
            "{template}"
        );
        assert!(
            port_names(&template["spec"]).contains(scraped["port"].as_str().expect("a port")),
            "{template}"
        );
    }

    // The standalone service: its Service, by labels and port name.
    let (selector, scraped) = endpoint("ServiceMonitor", "pod-webhook-tracker-standalone");
    for variant in [
        "manifests/standalone/namespaced",
        "manifests/standalone/cluster-wide",
    ] {
        let objects = rendered(variant);
        let service = find(&objects, "Service", "pod-webhook-tracker");
        assert!(
            selected(&selector, &service["metadata"]["labels"]),
            "{variant}"
        );
        let ports: Vec<&str> = service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(
            ports.contains(&scraped["port"].as_str().expect("a port")),
            "{variant}: {ports:?}"
        );
        let deployment = find(&objects, "Deployment", "pod-webhook-tracker");
        let args = deployment
            .pointer("/spec/template/spec/containers/0/args")
            .expect("args");
        assert!(
            !args.to_string().contains("--authenticate=serviceaccount"),
            "/metrics on the webhook address is open in {variant}"
        );
    }

    // The injector: its pods, on their admin port.
    let (selector, scraped) = endpoint("PodMonitor", "pod-webhook-tracker-injector");
    let objects = rendered("manifests/injector");
    let deployment = find(&objects, "Deployment", "pod-webhook-tracker-injector");
    let template = &deployment["spec"]["template"];
    assert!(selected(&selector, &template["metadata"]["labels"]));
    assert!(port_names(&template["spec"]).contains(scraped["port"].as_str().expect("a port")));
    let args = template
        .pointer("/spec/containers/0/args")
        .expect("args")
        .to_string();
    assert!(args.contains("--admin-address=0.0.0.0:9090"), "{args}");

    // The names the alerts expect of the objects they watch.
    let webhook = find(
        &objects,
        "MutatingWebhookConfiguration",
        "pod-webhook-tracker",
    );
    let rule = read(RULE);
    for name in webhook["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .filter_map(|w| w["name"].as_str())
    {
        assert!(
            rule.contains(&format!("name=\"{name}\"")),
            "the rule watches the webhook {name}"
        );
    }
    assert!(rule.contains("deployment=\"pod-webhook-tracker-injector\""));
    let certificate = find(&objects, "Certificate", "pod-webhook-tracker-injector");
    assert_eq!(
        certificate["spec"]["renewBefore"], "360h",
        "the alert's 7 days are past renewal"
    );
    assert!(rule.contains("certmanager_certificate_expiration_timestamp_seconds{name=\"pod-webhook-tracker-injector\"}"));
}

// ---------------------------------------------------------------------------------------------
// The API server's side of the injector alert

#[test]
fn the_injector_failing_alert_matches_what_a_real_api_server_counts_when_it_cannot_call_the_webhook()
 {
    // A webhook of the injector's name that nothing answers, with the manifests' failurePolicy,
    // for the pods of one fresh namespace only (the cluster is shared by this test binary).
    let cluster = testenv::Cluster::shared();
    let admin = cluster.admin();
    let namespace = cluster.namespace("monitoring");
    let configuration = format!("pwt-monitoring-{namespace}");
    let injector = yaml("manifests/injector/base/webhook.yaml");
    let webhook = &injector["webhooks"][0];
    assert_eq!(
        webhook["failurePolicy"], "Fail",
        "as the alert's runbook says"
    );
    let name = webhook["name"].as_str().expect("a webhook name");
    admin
        .post(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            &json!({"metadata": {"name": configuration}, "webhooks": [{
                "name": name,
                // A port nothing listens on: the injector is down.
                "clientConfig": {"url": "https://127.0.0.1:1/mutate", "caBundle": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, cluster.ca_pem())},
                "rules": webhook["rules"],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 2,
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "objectSelector": {"matchLabels": {"pod-webhook-tracker.io/inject": "true"}},
            }]}),
        )
        .expect(201, "the webhook configuration");
    // The API server takes a moment to use a new configuration: create until it calls it.
    let started = Instant::now();
    let refused = loop {
        let answer = admin.post(
            &format!("/api/v1/namespaces/{namespace}/pods"),
            &json!({"metadata": {"generateName": "worker-", "labels": {"pod-webhook-tracker.io/inject": "true"}},
                    "spec": {"containers": [{"name": "job", "image": "busybox"}]}}),
        );
        if answer.status != 201 || started.elapsed() > Duration::from_secs(30) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    admin
        .delete(&format!(
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{configuration}"
        ))
        .expect(200, "removed");
    assert_eq!(refused.status, 500, "the pod is refused: {refused:?}");
    assert!(
        refused.message().contains("failed calling webhook"),
        "{refused:?}"
    );

    // The alert's selector matches the series the API server now exports.
    let metrics = admin.get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().expect("the exposition");
    let alert = alerts(&rule_spec())
        .into_iter()
        .find(|a| a.name == "PodWebhookTrackerInjectorFailing")
        .expect("the alert");
    let selector = selectors(&alert.expr)
        .into_iter()
        .find(|s| s.metric == "apiserver_admission_webhook_rejection_count")
        .expect("the API server's metric");
    let matching: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with(&format!("{}{{", selector.metric)))
        .filter(|line| {
            let labels = matchers(
                line.split_once('{')
                    .and_then(|(_, rest)| rest.rsplit_once('}'))
                    .map(|(labels, _)| labels)
                    .unwrap_or_default(),
            );
            selector.matchers.iter().all(|(label, op, value)| {
                op == "=" && labels.iter().any(|(l, _, v)| l == label && v == value)
            })
        })
        .collect();
    assert!(
        !matching.is_empty(),
        "no series of the API server matches {:?}:\n{}",
        selector.matchers,
        text.lines()
            .filter(|l| l.contains("admission_webhook"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
