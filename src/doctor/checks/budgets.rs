//! The budget checks: one exists, protects busy pods, allows evicting idle ones, does not overlap
//! another, and lets unhealthy pods go.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_labels::{Requirement, Selector};

use super::*;
use crate::doctor::facts::*;

pub(crate) fn budget_exists(facts: &Facts, budgets: &[Budget], protecting: &[&Budget]) -> Check {
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

pub(crate) fn min_available(protecting: &[&Budget], busy: Option<&[PodLabels]>) -> Check {
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

pub(crate) fn int_or_string(value: &IntOrString) -> String {
    match value {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

pub(crate) fn overlap(
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
pub(crate) fn common_pod(a: &Selector, b: &Selector, label: &str) -> Option<String> {
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

pub(crate) fn unhealthy_policy(protecting: &[&Budget]) -> Check {
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
