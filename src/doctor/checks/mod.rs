//! The pure checks of `doctor`: each finding's name, status and message, computed from the
//! gathered facts alone.
//!
//! [`budgets`] judges the PodDisruptionBudgets, [`rights`] what the tracker may do.

mod budgets;
pub(crate) mod rights;

use serde::Serialize;

use super::facts::*;
use budgets::*;
use rights::*;

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
/// Check name: with `--authenticate`, the identity may create TokenReviews (only checked then).
pub const TOKEN_REVIEWS: &str = "token-reviews";
/// Check name: the service accounts of pods that opt in to injection may get and patch pods
/// (only checked when there are such pods).
pub const INJECTED: &str = "injected-accounts";

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
    pub(crate) fn word(self) -> &'static str {
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

pub(crate) fn check(name: &'static str, status: Status, message: String) -> Check {
    Check {
        name,
        status,
        message,
    }
}

/// Findings about several budgets as one check: the worst status, with its messages.
pub(crate) fn worst(name: &'static str, findings: Vec<(Status, String)>) -> Check {
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
    checks.extend(token_reviews(facts));
    checks.extend(injected_accounts(facts));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use kube_labels::Selector;

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
            create_token_reviews: None,
            injected: Vec::new(),
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

    #[test]
    fn the_accounts_of_opted_in_pods_need_get_and_patch_on_pods() {
        let account = |name: &str, missing: Result<Vec<String>, String>| InjectedAccount {
            name: name.to_owned(),
            pods: vec![format!("{name}-pod")],
            missing,
        };
        let quiet = diagnose(&facts(Vec::new(), Vec::new()));
        assert!(
            quiet.iter().all(|c| c.name != INJECTED),
            "no opted-in pods, no check"
        );
        for (accounts, status, words) in [
            (
                vec![account("workers", Ok(Vec::new()))],
                Status::Ok,
                "may get and patch pods",
            ),
            (
                vec![
                    account("workers", Ok(Vec::new())),
                    account("default", Ok(vec!["patch".to_owned()])),
                ],
                Status::Problem,
                "service account default of the opted-in pods (default-pod) may not patch pods",
            ),
            (
                vec![account("workers", Err("forbidden".to_owned()))],
                Status::Warning,
                "subjectaccessreviews",
            ),
        ] {
            let facts = Facts {
                injected: accounts,
                ..facts(Vec::new(), Vec::new())
            };
            let checks = diagnose(&facts);
            let found = finding(&checks, INJECTED);
            assert_eq!(found.status, status, "{found:?}");
            assert!(found.message.contains(words), "{found:?}");
        }
    }
}
