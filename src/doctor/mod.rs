//! `doctor`: a preflight check of one namespace. Is there a PodDisruptionBudget that protects busy
//! pods, one that works for pods of any owner, alone on its pods? May the tracker's identity get
//! and patch pods, and no more?
//!
//! [`gather`] reads the cluster (budgets, pods, access reviews); [`diagnose`] is pure.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, PostParams};
use kube_labels::{Operator, Requirement, Selector};
use serde::Serialize;

use crate::cli::Output;
use crate::config::Config;
use crate::core::target::Targeting;
use crate::exit::{EXIT_BAD_CONFIG, EXIT_FAILURE};

/// The limit of one API request when `--kube-request-timeout` sets none: a preflight check
/// should not hang.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The verbs on pods the tracker needs.
const NEEDED: [&str; 2] = ["get", "patch"];
/// Verbs on pods it never uses (`*`: every verb).
const NOT_NEEDED: [&str; 7] = [
    "list",
    "watch",
    "create",
    "update",
    "delete",
    "deletecollection",
    "*",
];

/// Check name: a budget selects pods by the label, so it protects busy pods.
pub const BUDGET: &str = "budget";
/// Check name: that budget's minAvailable is an integer no count reaches.
pub const MIN_AVAILABLE: &str = "min-available";
/// Check name: no second budget selects the same pods.
pub const OVERLAP: &str = "overlap";
/// Check name: that budget does not let unhealthy busy pods be evicted.
pub const UNHEALTHY_POLICY: &str = "unhealthy-pod-eviction-policy";
/// Check name: the identity may get and patch pods.
pub const RIGHTS: &str = "rights";
/// Check name: and nothing more on pods.
pub const LEAST_PRIVILEGE: &str = "least-privilege";
/// Check name: with `--events`, the identity may create events (only checked then).
pub const EVENTS: &str = "events";

/// How a check ended, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As it should be.
    Ok,
    /// Works, but worth a look (or could not be checked).
    Warning,
    /// Busy pods are not protected as intended, or the tracker cannot work.
    Problem,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Problem => "problem",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Which check, e.g. [`BUDGET`].
    pub name: &'static str,
    /// How it ended.
    pub status: Status,
    /// One line for a person.
    pub message: String,
}

fn check(name: &'static str, status: Status, message: String) -> Check {
    Check {
        name,
        status,
        message,
    }
}

/// Findings about several budgets as one check: the worst status, with its messages.
fn worst(name: &'static str, findings: Vec<(Status, String)>) -> Check {
    let status = findings
        .iter()
        .map(|(status, _)| *status)
        .max()
        .unwrap_or(Status::Ok);
    let messages: Vec<String> = findings
        .into_iter()
        .filter(|(s, _)| *s == status)
        .map(|(_, message)| message)
        .collect();
    check(name, status, messages.join("; "))
}

/// A PodDisruptionBudget, as far as the checks care.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Its name.
    pub name: String,
    /// The pods it selects; `None`: none (no selector, or one doctor cannot read).
    pub selector: Option<Selector>,
    /// Its selector requires the tracked label (`operator: Exists`): it protects busy pods.
    pub on_label: bool,
    /// It looks at the tracked label in another way (`matchLabels`, `In`...).
    pub mentions_label: bool,
    /// `spec.minAvailable`.
    pub min_available: Option<IntOrString>,
    /// `spec.maxUnavailable`.
    pub max_unavailable: Option<IntOrString>,
    /// `spec.unhealthyPodEvictionPolicy`.
    pub unhealthy_pod_eviction_policy: Option<String>,
}

impl Budget {
    /// The parts of `pdb` the checks use, for the tracked `label`.
    pub fn new(pdb: &PodDisruptionBudget, label: &str) -> Budget {
        let spec = pdb.spec.clone().unwrap_or_default();
        let expressions = spec
            .selector
            .as_ref()
            .and_then(|s| s.match_expressions.clone())
            .unwrap_or_default();
        let on_label = expressions
            .iter()
            .any(|e| e.key == label && e.operator == "Exists");
        let in_match_labels = spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_some_and(|labels| labels.contains_key(label));
        Budget {
            name: pdb.metadata.name.clone().unwrap_or_default(),
            selector: spec.selector.as_ref().and_then(selector_of),
            on_label,
            mentions_label: !on_label
                && (in_match_labels || expressions.iter().any(|e| e.key == label)),
            min_available: spec.min_available,
            max_unavailable: spec.max_unavailable,
            unhealthy_pod_eviction_policy: spec.unhealthy_pod_eviction_policy,
        }
    }

    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// A policy/v1 selector as a [`Selector`] (an empty one selects every pod).
fn selector_of(selector: &LabelSelector) -> Option<Selector> {
    let mut requirements = Vec::new();
    for (key, value) in selector.match_labels.iter().flatten() {
        requirements
            .push(Requirement::new(key.clone(), Operator::Equals, vec![value.clone()]).ok()?);
    }
    for expression in selector.match_expressions.iter().flatten() {
        let operator = match expression.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            _ => return None,
        };
        let values = expression.values.clone().unwrap_or_default();
        requirements.push(Requirement::new(expression.key.clone(), operator, values).ok()?);
    }
    Some(Selector::from_requirements(requirements))
}

/// A pod: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLabels {
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// Why something could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The API server refused (403): not a problem of the setup, doctor just may not look.
    pub forbidden: bool,
    /// What went wrong.
    pub message: String,
}

/// Everything doctor learnt from the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The namespace checked.
    pub namespace: String,
    /// The tracked label (`--label`).
    pub label: String,
    /// `--label-selector`: only pods matching it can be counted, so only they can become busy.
    pub selector: Option<Selector>,
    /// The budgets in the namespace.
    pub budgets: Result<Vec<Budget>, Unreadable>,
    /// The pods in the namespace.
    pub pods: Result<Vec<PodLabels>, Unreadable>,
    /// Verb on pods → whether the identity doctor connects as may use it.
    pub access: Result<BTreeMap<String, bool>, String>,
    /// With `--events`: whether that identity may create events in the namespace.
    pub create_events: Option<Result<bool, String>>,
}

impl Facts {
    /// Pods that can be counted, with their labels as when they are busy.
    fn busy_pods(&self) -> Option<Vec<PodLabels>> {
        let pods = self.pods.as_ref().ok()?;
        Some(
            pods.iter()
                .filter(|pod| {
                    self.selector
                        .as_ref()
                        .is_none_or(|s| s.matches(&pod.labels))
                })
                .map(|pod| {
                    let mut busy = pod.clone();
                    busy.labels
                        .entry(self.label.clone())
                        .or_insert_with(|| "1".to_owned());
                    busy
                })
                .collect(),
        )
    }
}

/// Every check, in order.
pub fn diagnose(facts: &Facts) -> Vec<Check> {
    let mut checks = Vec::new();
    let budget_checks = [BUDGET, MIN_AVAILABLE, OVERLAP, UNHEALTHY_POLICY];
    match &facts.budgets {
        Err(unreadable) => {
            let (status, message) = if unreadable.forbidden {
                (
                    Status::Warning,
                    format!(
                        "not checked: may not list PodDisruptionBudgets in namespace {} ({}); run doctor as someone who may",
                        facts.namespace, unreadable.message
                    ),
                )
            } else {
                (
                    Status::Problem,
                    format!(
                        "cannot list PodDisruptionBudgets in namespace {}: {}",
                        facts.namespace, unreadable.message
                    ),
                )
            };
            for name in budget_checks {
                checks.push(check(name, status, message.clone()));
            }
        }
        Ok(budgets) => {
            let protecting: Vec<&Budget> = budgets.iter().filter(|b| b.on_label).collect();
            checks.push(budget_exists(facts, budgets, &protecting));
            if protecting.is_empty() {
                for name in &budget_checks[1..] {
                    checks.push(check(
                        name,
                        Status::Warning,
                        "not checked: no budget protects busy pods".to_owned(),
                    ));
                }
            } else {
                let busy = facts.busy_pods();
                checks.push(min_available(&protecting, busy.as_deref()));
                checks.push(overlap(facts, budgets, &protecting, busy.as_deref()));
                checks.push(unhealthy_policy(&protecting));
            }
        }
    }
    checks.extend(rights(facts));
    checks.extend(events(facts));
    checks
}

/// With `--events`, the tracker records busy/idle events on pods; without the right it still
/// counts (it turns events off with one warning), so a missing right is a warning.
fn events(facts: &Facts) -> Option<Check> {
    let ns = &facts.namespace;
    let check = match facts.create_events.as_ref()? {
        Ok(true) => check(
            EVENTS,
            Status::Ok,
            format!("may create events in namespace {ns}, as --events needs"),
        ),
        Ok(false) => check(
            EVENTS,
            Status::Warning,
            format!(
                "may not create events in namespace {ns}: with --events the tracker counts but records \
                 no busy/idle events (grant verbs [create] on events to its service account)"
            ),
        ),
        Err(why) => check(
            EVENTS,
            Status::Warning,
            format!(
                "not checked: cannot ask the API server whether this identity may create events: {why}"
            ),
        ),
    };
    Some(check)
}

fn budget_exists(facts: &Facts, budgets: &[Budget], protecting: &[&Budget]) -> Check {
    let label = &facts.label;
    if !protecting.is_empty() {
        let names: Vec<&str> = protecting.iter().map(|b| b.name.as_str()).collect();
        return check(
            BUDGET,
            Status::Ok,
            format!(
                "PodDisruptionBudget {} protects pods while they carry the label {label}",
                names.join(", ")
            ),
        );
    }
    let near: Vec<&str> = budgets
        .iter()
        .filter(|b| b.mentions_label)
        .map(|b| b.name.as_str())
        .collect();
    let hint = if near.is_empty() {
        String::new()
    } else {
        format!(
            " ({} looks at {label} but not with operator Exists, so it misses some counts)",
            near.join(", ")
        )
    };
    check(
        BUDGET,
        Status::Problem,
        format!(
            "no PodDisruptionBudget in namespace {} selects pods by the label {label} \
             (matchExpressions: [{{key: {label}, operator: Exists}}]), so busy pods can be evicted{hint}",
            facts.namespace
        ),
    )
}

fn min_available(protecting: &[&Budget], busy: Option<&[PodLabels]>) -> Check {
    const OWNERS: &str = "the disruption controller computes it from the scale subresource of the \
        pods' owner, which bare pods and Jobs do not have, so it cannot compute the budget \
        (SyncFailed) and evictions of the pods it selects are refused or fail instead of following \
        the count";
    let findings = protecting
        .iter()
        .map(|budget| {
            let name = &budget.name;
            match (&budget.min_available, &budget.max_unavailable) {
                (_, Some(max)) => (
                    Status::Problem,
                    format!(
                        "{name} sets maxUnavailable: {}; {OWNERS}: use minAvailable: 9999 instead",
                        int_or_string(max)
                    ),
                ),
                (Some(IntOrString::String(percent)), None) => (
                    Status::Problem,
                    format!(
                        "{name} sets minAvailable: {percent}, a percentage; {OWNERS}: use an integer such as 9999"
                    ),
                ),
                (None, None) => (
                    Status::Problem,
                    format!("{name} sets no minAvailable: set minAvailable: 9999"),
                ),
                (Some(IntOrString::Int(n)), None) if *n <= 0 => (
                    Status::Problem,
                    format!(
                        "{name} sets minAvailable: {n}, which allows every eviction: use a number no count of busy pods reaches, e.g. 9999"
                    ),
                ),
                (Some(IntOrString::Int(n)), None) => {
                    let selected = busy.map(|pods| pods.iter().filter(|p| budget.selects(&p.labels)).count());
                    match selected {
                        Some(selected) if usize::try_from(*n).is_ok_and(|n| n < selected) => (
                            Status::Warning,
                            format!(
                                "{name} sets minAvailable: {n}, but {selected} pods can be busy at once: while more than {n} \
                                 busy pods are healthy, some can be evicted; use a number no count reaches, e.g. 9999"
                            ),
                        ),
                        _ => (
                            Status::Ok,
                            format!("{name} sets minAvailable: {n}, an integer, as pods of any owner need"),
                        ),
                    }
                }
            }
        })
        .collect();
    worst(MIN_AVAILABLE, findings)
}

fn int_or_string(value: &IntOrString) -> String {
    match value {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

fn overlap(
    facts: &Facts,
    budgets: &[Budget],
    protecting: &[&Budget],
    busy: Option<&[PodLabels]>,
) -> Check {
    const WHY: &str = "the eviction API does not support more than one budget per pod and answers \
        500 instead of 429, so drains fail instead of waiting";
    // Pods that, when busy, more than one budget selects.
    let mut held = Vec::new();
    for pod in busy.unwrap_or_default() {
        let holding: Vec<&str> = budgets
            .iter()
            .filter(|b| b.selects(&pod.labels))
            .map(|b| b.name.as_str())
            .collect();
        if holding.len() > 1 && protecting.iter().any(|b| b.selects(&pod.labels)) {
            held.push((pod.name.as_str(), holding));
        }
    }
    if let Some((pod, holding)) = held.first() {
        let more = match held.len().saturating_sub(1) {
            0 => String::new(),
            1 => " (and 1 more pod)".to_owned(),
            n => format!(" (and {n} more pods)"),
        };
        return check(
            OVERLAP,
            Status::Problem,
            format!(
                "pod {pod}, when busy, is selected by the budgets {}{more}: {WHY}; make their selectors exclusive",
                holding.join(" and ")
            ),
        );
    }
    // No pod shows it now: could some pod ever be selected by two?
    let mut possible = Vec::new();
    for budget in protecting {
        for other in budgets.iter().filter(|o| o.name != budget.name) {
            if let (Some(a), Some(b)) = (&budget.selector, &other.selector)
                && let Some(labels) = common_pod(a, b, &facts.label)
            {
                let pair = BTreeSet::from([budget.name.as_str(), other.name.as_str()]);
                if !possible.iter().any(|(p, _)| *p == pair) {
                    possible.push((pair, labels));
                }
            }
        }
    }
    let pods_note = match (&facts.pods, busy) {
        (Err(unreadable), _) if unreadable.forbidden => {
            "selectors compared; doctor may not list pods".to_owned()
        }
        (Err(unreadable), _) => format!(
            "selectors compared; pods could not be listed: {}",
            unreadable.message
        ),
        (Ok(_), Some(pods)) => format!("selectors and {} pods compared", pods.len()),
        (Ok(_), None) => "selectors compared".to_owned(),
    };
    if let Some((pair, labels)) = possible.first() {
        let pair: Vec<&str> = pair.iter().copied().collect();
        return check(
            OVERLAP,
            Status::Warning,
            format!(
                "the budgets {} can select the same pod, e.g. one labelled {labels} (none does now; {pods_note}); if one does, {WHY}",
                pair.join(" and ")
            ),
        );
    }
    check(
        OVERLAP,
        Status::Ok,
        format!(
            "no other budget can select a busy pod that {} protects ({pods_note})",
            protecting
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// Labels of a pod both selectors select, if there can be one (as `k=v,k2=v2`).
fn common_pod(a: &Selector, b: &Selector, label: &str) -> Option<String> {
    let mut by_key: BTreeMap<&str, Vec<&Requirement>> = BTreeMap::new();
    for requirement in a.requirements().iter().chain(b.requirements()) {
        by_key
            .entry(&requirement.key)
            .or_default()
            .push(requirement);
    }
    let mut labels = Vec::new();
    for (key, requirements) in by_key {
        let fits = |value: Option<&str>| requirements.iter().all(|r| r.matches_with(|_| value));
        if fits(None) {
            continue;
        }
        let preferred = if key == label { "1" } else { "x" };
        let mentioned = requirements
            .iter()
            .flat_map(|r| r.values.iter().map(String::as_str));
        let value = std::iter::once(preferred)
            .chain(mentioned)
            .chain(["1", "true", "x", "y"])
            .find(|value| fits(Some(value)))?;
        labels.push(format!("{key}={value}"));
    }
    Some(if labels.is_empty() {
        "anything".to_owned()
    } else {
        labels.join(",")
    })
}

fn unhealthy_policy(protecting: &[&Budget]) -> Check {
    let findings = protecting
        .iter()
        .map(|budget| {
            let name = &budget.name;
            match budget.unhealthy_pod_eviction_policy.as_deref() {
                Some("AlwaysAllow") => (
                    Status::Warning,
                    format!(
                        "{name} sets unhealthyPodEvictionPolicy: AlwaysAllow, so a busy pod that is not ready \
                         (e.g. a readiness probe failing while it works) can be evicted; use IfHealthyBudget"
                    ),
                ),
                Some("IfHealthyBudget") => (
                    Status::Ok,
                    format!("{name} sets unhealthyPodEvictionPolicy: IfHealthyBudget"),
                ),
                None => (
                    Status::Ok,
                    format!("{name} sets no unhealthyPodEvictionPolicy, which acts as IfHealthyBudget"),
                ),
                Some(other) => (
                    Status::Warning,
                    format!("{name} sets an unknown unhealthyPodEvictionPolicy: {other}"),
                ),
            }
        })
        .collect();
    worst(UNHEALTHY_POLICY, findings)
}

fn rights(facts: &Facts) -> [Check; 2] {
    let ns = &facts.namespace;
    let access = match &facts.access {
        Ok(access) => access,
        Err(why) => {
            let message = format!("cannot ask the API server what this identity may do: {why}");
            return [
                check(RIGHTS, Status::Problem, message.clone()),
                check(
                    LEAST_PRIVILEGE,
                    Status::Warning,
                    format!("not checked: {message}"),
                ),
            ];
        }
    };
    let allowed = |verb: &str| access.get(verb).copied().unwrap_or(false);
    let missing: Vec<&str> = NEEDED.into_iter().filter(|v| !allowed(v)).collect();
    let rights = if missing.is_empty() {
        check(
            RIGHTS,
            Status::Ok,
            format!("may get and patch pods in namespace {ns}, as the tracker needs"),
        )
    } else {
        check(
            RIGHTS,
            Status::Problem,
            format!(
                "may not {} pods in namespace {ns}: the tracker needs get and patch on pods (a Role with \
                 verbs [get, patch] on pods, bound to its service account); run doctor as the tracker \
                 (its credentials, or --kube-as=system:serviceaccount:{ns}:ACCOUNT)",
                missing.join(" or ")
            ),
        )
    };
    let extra: Vec<&str> = if allowed("*") {
        vec!["*"]
    } else {
        NOT_NEEDED.into_iter().filter(|v| allowed(v)).collect()
    };
    let least = if extra.is_empty() {
        check(
            LEAST_PRIVILEGE,
            Status::Ok,
            "no rights on pods beyond get and patch".to_owned(),
        )
    } else {
        let what = if extra == ["*"] {
            "do anything (*) with".to_owned()
        } else {
            extra.join(", ")
        };
        check(
            LEAST_PRIVILEGE,
            Status::Warning,
            format!(
                "may also {what} pods in namespace {ns}: the tracker needs only get and patch, and whoever \
                 holds its token could do the rest; if this is not the tracker's identity, run doctor as it \
                 (--kube-as=system:serviceaccount:{ns}:ACCOUNT)"
            ),
        )
    };
    [rights, least]
}

/// Reads what the checks need from the cluster.
pub async fn gather(client: &kube::Client, config: &Config) -> Facts {
    let limit = config.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
    let (namespace, pod) = match &config.targeting {
        Targeting::Sidecar { own } => (own.namespace.clone(), Some(own.name.clone())),
        Targeting::Standalone {
            default_namespace, ..
        } => (default_namespace.clone(), None),
    };
    let budgets_api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    let budgets = limited(limit, budgets_api.list(&ListParams::default()))
        .await
        .map(|list| {
            list.items
                .iter()
                .map(|pdb| Budget::new(pdb, &config.keys.label))
                .collect()
        });
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pods = limited(limit, pods_api.list(&ListParams::default()))
        .await
        .map(|list| {
            list.items
                .into_iter()
                .map(|pod| PodLabels {
                    name: pod.metadata.name.unwrap_or_default(),
                    labels: pod.metadata.labels.unwrap_or_default(),
                })
                .collect()
        });
    let mut access = BTreeMap::new();
    let mut access_failure = None;
    for verb in NEEDED.into_iter().chain(NOT_NEEDED) {
        // The sidecar's own pod, when doctor runs in it: a Role may name just that pod.
        let name = if NEEDED.contains(&verb) {
            pod.clone()
        } else {
            None
        };
        match may(client, limit, &namespace, verb, name).await {
            Ok(allowed) => {
                access.insert(verb.to_owned(), allowed);
            }
            Err(unreadable) => {
                access_failure = Some(unreadable.message);
                break;
            }
        }
    }
    let create_events = if config.events {
        let review = crate::api::access_review("create", "events", &namespace, None);
        Some(ask(client, limit, review).await.map_err(|e| e.message))
    } else {
        None
    };
    Facts {
        namespace,
        label: config.keys.label.clone(),
        selector: config.selector.clone(),
        budgets,
        pods,
        create_events,
        access: match access_failure {
            Some(why) => Err(why),
            None => Ok(access),
        },
    }
}

/// Asks the API server whether the identity may `verb` pods (a SelfSubjectAccessReview).
async fn may(
    client: &kube::Client,
    limit: Duration,
    namespace: &str,
    verb: &str,
    name: Option<String>,
) -> Result<bool, Unreadable> {
    let review = crate::api::pod_access_review(verb, namespace, name.as_deref());
    ask(client, limit, review).await
}

/// Sends one SelfSubjectAccessReview: whether the identity is allowed.
async fn ask(
    client: &kube::Client,
    limit: Duration,
    review: SelfSubjectAccessReview,
) -> Result<bool, Unreadable> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = limited(limit, api.create(&PostParams::default(), &review)).await?;
    Ok(answer.status.is_some_and(|status| status.allowed))
}

async fn limited<T>(
    limit: Duration,
    call: impl Future<Output = kube::Result<T>>,
) -> Result<T, Unreadable> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(kube::Error::Api(status))) => Err(Unreadable {
            forbidden: status.code == 403,
            message: if status.message.is_empty() {
                format!("{} {}", status.code, status.reason)
            } else {
                status.message.clone()
            },
        }),
        Ok(Err(other)) => Err(Unreadable {
            forbidden: false,
            message: crate::api::error_chain(&other),
        }),
        Err(_) => Err(Unreadable {
            forbidden: false,
            message: format!("no answer within {}", humantime::format_duration(limit)),
        }),
    }
}

/// The report as text: one line per check.
pub fn text_report(facts: &Facts, checks: &[Check]) -> String {
    let mut out = format!(
        "doctor: namespace {}, label {}\n",
        facts.namespace, facts.label
    );
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        out.push_str(&format!(
            "{:<8} {:<width$}  {}\n",
            c.status.word(),
            c.name,
            c.message
        ));
    }
    let (problems, warnings) = tally(checks);
    let plural = |n: usize, word: &str| {
        if n == 1 {
            format!("1 {word}")
        } else {
            format!("{n} {word}s")
        }
    };
    out.push_str(&format!(
        "{}, {}\n",
        plural(problems, "problem"),
        plural(warnings, "warning")
    ));
    out
}

/// The report as one JSON object.
pub fn json_report(facts: &Facts, checks: &[Check]) -> serde_json::Value {
    let (problems, warnings) = tally(checks);
    serde_json::json!({
        "namespace": facts.namespace,
        "label": facts.label,
        "problems": problems,
        "warnings": warnings,
        "checks": checks,
    })
}

fn tally(checks: &[Check]) -> (usize, usize) {
    let count = |status| checks.iter().filter(|c| c.status == status).count();
    (count(Status::Problem), count(Status::Warning))
}

/// Runs `doctor`: exit status 0 when no check found a problem, 1 when one did, 2 when the
/// connection settings are unusable.
pub fn run(config: &Config, output: Output) -> ExitCode {
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
    let facts = runtime.block_on(async {
        let client = crate::api::connect(&config.kube).await?;
        Ok::<_, crate::Error>(gather(&client, config).await)
    });
    let facts = match facts {
        Ok(facts) => facts,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let checks = diagnose(&facts);
    match output {
        Output::Text => print!("{}", text_report(&facts, &checks)),
        Output::Json => println!("{:#}", json_report(&facts, &checks)),
    }
    if checks.iter().any(|c| c.status == Status::Problem) {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(text: &str) -> Selector {
        Selector::parse(text).expect("a selector")
    }

    fn protecting(name: &str, min_available: IntOrString) -> Budget {
        Budget {
            name: name.to_owned(),
            selector: Some(selector("app=worker,active-jobs")),
            on_label: true,
            mentions_label: false,
            min_available: Some(min_available),
            max_unavailable: None,
            unhealthy_pod_eviction_policy: None,
        }
    }

    fn pod(name: &str, labels: &[(&str, &str)]) -> PodLabels {
        PodLabels {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn facts(budgets: Vec<Budget>, pods: Vec<PodLabels>) -> Facts {
        Facts {
            namespace: "jobs".to_owned(),
            label: "active-jobs".to_owned(),
            selector: None,
            budgets: Ok(budgets),
            pods: Ok(pods),
            access: Ok(NEEDED.iter().map(|v| ((*v).to_owned(), true)).collect()),
            create_events: None,
        }
    }

    fn finding<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} in {checks:?}"))
    }

    #[test]
    fn a_budget_protects_busy_pods_only_with_exists_on_the_label() {
        use serde_json::Value;
        let pdb = |expressions: Value| -> PodDisruptionBudget {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "b"},
                "spec": {"minAvailable": 9999, "selector": {"matchExpressions": expressions}},
            }))
            .expect("a budget")
        };
        let exists = Budget::new(
            &pdb(serde_json::json!([{"key": "active-jobs", "operator": "Exists"}])),
            "active-jobs",
        );
        assert!(exists.on_label && !exists.mentions_label);
        let one = Budget::new(
            &pdb(serde_json::json!([{"key": "active-jobs", "operator": "In", "values": ["1"]}])),
            "active-jobs",
        );
        assert!(!one.on_label && one.mentions_label);
        let other = Budget::new(&pdb(serde_json::json!([])), "active-jobs");
        assert!(!other.on_label && !other.mentions_label);
        assert_eq!(
            other.selector,
            Some(Selector::default()),
            "selects every pod"
        );
    }

    #[test]
    fn two_selectors_share_a_pod_unless_a_key_rules_it_out() {
        let busy = selector("app=worker,active-jobs");
        assert_eq!(
            common_pod(&busy, &selector("app=worker"), "active-jobs").as_deref(),
            Some("active-jobs=1,app=worker")
        );
        assert_eq!(common_pod(&busy, &selector("app=db"), "active-jobs"), None);
        assert_eq!(
            common_pod(&busy, &selector("!active-jobs"), "active-jobs"),
            None
        );
        assert_eq!(
            common_pod(&busy, &selector("app notin (worker)"), "active-jobs"),
            None
        );
        assert_eq!(
            common_pod(&busy, &selector("tier in (a,b)"), "active-jobs").as_deref(),
            Some("active-jobs=1,app=worker,tier=a")
        );
        assert_eq!(
            common_pod(&Selector::default(), &Selector::default(), "active-jobs").as_deref(),
            Some("anything")
        );
    }

    #[test]
    fn a_small_integer_min_available_warns_when_more_pods_can_be_busy() {
        let pods = vec![
            pod("w1", &[("app", "worker")]),
            pod("w2", &[("app", "worker")]),
            pod("w3", &[("app", "worker")]),
            pod("db", &[("app", "db")]),
        ];
        let checks = diagnose(&facts(
            vec![protecting("busy", IntOrString::Int(2))],
            pods.clone(),
        ));
        let check = finding(&checks, MIN_AVAILABLE);
        assert_eq!(check.status, Status::Warning, "{check:?}");
        assert!(check.message.contains("3 pods can be busy"), "{check:?}");
        let checks = diagnose(&facts(
            vec![protecting("busy", IntOrString::Int(3))],
            pods.clone(),
        ));
        assert_eq!(finding(&checks, MIN_AVAILABLE).status, Status::Ok);
        let checks = diagnose(&facts(vec![protecting("busy", IntOrString::Int(0))], pods));
        assert_eq!(finding(&checks, MIN_AVAILABLE).status, Status::Problem);
    }

    #[test]
    fn the_label_selector_limits_the_pods_that_can_become_busy() {
        let mut facts = facts(
            vec![
                protecting("busy", IntOrString::Int(9999)),
                Budget {
                    name: "canaries".to_owned(),
                    selector: Some(selector("track=canary")),
                    on_label: false,
                    mentions_label: false,
                    min_available: Some(IntOrString::Int(1)),
                    max_unavailable: None,
                    unhealthy_pod_eviction_policy: None,
                },
            ],
            vec![pod("w1", &[("app", "worker"), ("track", "canary")])],
        );
        assert_eq!(finding(&diagnose(&facts), OVERLAP).status, Status::Problem);
        facts.selector = Some(selector("track!=canary"));
        let checks = diagnose(&facts);
        let check = finding(&checks, OVERLAP);
        assert_eq!(
            check.status,
            Status::Warning,
            "never counted, so never busy: {check:?}"
        );
    }

    #[test]
    fn several_budgets_report_the_worst_finding() {
        let mut percent = protecting("b", IntOrString::String("50%".to_owned()));
        percent.selector = Some(selector("app=other,active-jobs"));
        let checks = diagnose(&facts(
            vec![protecting("a", IntOrString::Int(9999)), percent],
            Vec::new(),
        ));
        let check = finding(&checks, MIN_AVAILABLE);
        assert_eq!(check.status, Status::Problem);
        assert!(
            check.message.starts_with("b sets minAvailable: 50%"),
            "{check:?}"
        );
        assert!(!check.message.contains("a sets"), "{check:?}");
    }

    #[test]
    fn the_events_right_is_checked_only_with_events_and_missing_it_is_a_warning() {
        let without = diagnose(&facts(Vec::new(), Vec::new()));
        assert!(without.iter().all(|c| c.name != EVENTS), "{without:?}");
        for (answer, status, words) in [
            (Ok(true), Status::Ok, "may create events"),
            (Ok(false), Status::Warning, "may not create events"),
            (Err("timeout".to_owned()), Status::Warning, "not checked"),
        ] {
            let facts = Facts {
                create_events: Some(answer),
                ..facts(Vec::new(), Vec::new())
            };
            let checks = diagnose(&facts);
            let events = finding(&checks, EVENTS);
            assert_eq!(events.status, status, "{events:?}");
            assert!(events.message.contains(words), "{events:?}");
        }
    }

    #[test]
    fn an_unreachable_api_server_is_a_problem_not_a_skipped_check() {
        let unreachable = Unreadable {
            forbidden: false,
            message: "connection refused".to_owned(),
        };
        let facts = Facts {
            budgets: Err(unreachable.clone()),
            pods: Err(unreachable),
            access: Err("connection refused".to_owned()),
            ..facts(Vec::new(), Vec::new())
        };
        let checks = diagnose(&facts);
        assert!(
            checks
                .iter()
                .filter(|c| c.name != LEAST_PRIVILEGE)
                .all(|c| c.status == Status::Problem),
            "{checks:?}"
        );
    }
}

#[cfg(test)]
mod flag_tests {
    use crate::cli::{self, Command, DoctorArgs, Output};

    fn doctor(args: &[&str]) -> Result<DoctorArgs, String> {
        let mut all = vec!["doctor".to_owned()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let normalized = cli::normalize(&all)?;
        match cli::parse("pod-webhook-tracker", &normalized) {
            Ok(cli) => match cli.command {
                Command::Doctor(args) => Ok(args),
                other => Err(format!("not doctor: {other:?}")),
            },
            Err(exit) => Err(exit.output),
        }
    }

    #[test]
    fn doctor_takes_serves_flags_and_output_in_any_order() {
        let args = doctor(&[
            "-njobs",
            "--output=json",
            "--label",
            "example.com/busy",
            "--kube-insecure-skip-tls-verify",
            "--label-selector=app=worker",
        ])
        .expect("parses");
        assert_eq!(args.output, Output::Json);
        assert_eq!(args.serve.kube_namespace.as_deref(), Some("jobs"));
        assert_eq!(args.serve.label, "example.com/busy");
        assert!(args.serve.kube_insecure_skip_tls_verify);
        assert_eq!(args.serve.label_selector.as_deref(), Some("app=worker"));
        assert_eq!(doctor(&[]).expect("parses").output, Output::Text);
    }

    #[test]
    fn a_value_that_looks_like_output_belongs_to_its_flag() {
        let args = doctor(&["--label-selector", "--output"]).expect("parses");
        assert_eq!(args.serve.label_selector.as_deref(), Some("--output"));
        assert_eq!(args.output, Output::Text);
    }

    #[test]
    fn bad_doctor_flags_are_refused() {
        let error = doctor(&["--output", "yaml"]).expect_err("refused");
        assert!(error.contains("expected text or json"), "{error}");
        assert!(doctor(&["--output"]).is_err());
        assert!(doctor(&["--no-such-flag"]).is_err());
    }

    #[test]
    fn completions_know_doctor_and_run_flags() {
        let script = cli::completion_script("bash", "pod-webhook-tracker").expect("generated");
        for word in ["doctor", "--output", "run", "--run-unprotected", "install"] {
            assert!(script.contains(word), "{word}");
        }
    }
}
