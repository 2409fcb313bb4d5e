//! What `busy` tells from the pods and budgets it read: each busy pod with its count, its jobs
//! and when they end, the budgets that select it and whether the eviction API would let it go
//! now, and per node what holds it and until when.
//!
//! Pure: the caller passes the time (`now`, Unix seconds).

use std::collections::BTreeMap;

use crate::core::{count, jobs};

use super::objects::{Budget, Pod};

/// One job of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// Its key (`#anon-…` for an anonymous job with a lifetime).
    pub key: String,
    /// When it started (Unix seconds).
    pub started: u64,
    /// When the tracker releases it if nobody ends or renews it; `None`: never.
    pub deadline: Option<u64>,
}

/// When the last of some jobs ends, by their deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// At this time (Unix seconds) at the latest.
    At(u64),
    /// No time is known: a job has no deadline (or runs without a key).
    Never,
    /// The jobs cannot be read.
    Unknown,
}

/// Whether the eviction API would let the pod go now, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// It would be evicted.
    Allowed(String),
    /// It would be refused (429, or 500 for a pod under two budgets).
    Refused(String),
    /// The budgets could not be read.
    Unknown(String),
}

impl Eviction {
    /// The short word of the table.
    pub fn word(&self) -> &'static str {
        match self {
            Eviction::Allowed(_) => "allowed",
            Eviction::Refused(_) => "refused",
            Eviction::Unknown(_) => "unknown",
        }
    }

    /// Why.
    pub fn reason(&self) -> &str {
        match self {
            Eviction::Allowed(why) | Eviction::Refused(why) | Eviction::Unknown(why) => why,
        }
    }
}

/// A busy pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRow {
    /// The pod.
    pub pod: Pod,
    /// The count its label holds, or the label's value when it is not a count.
    pub count: Result<i64, String>,
    /// Its keyed jobs, or why the jobs annotation cannot be read.
    pub jobs: Result<Vec<JobRow>, String>,
    /// Jobs counted without a key (the count beyond the keyed jobs).
    pub anonymous: u64,
    /// When its last job ends.
    pub release: Release,
    /// The budgets that select it; `None`: unknown (they could not be read).
    pub budgets: Option<Vec<Budget>>,
    /// What an eviction would get now.
    pub eviction: Eviction,
}

impl PodRow {
    /// Whether it holds its node: busy, and not finished (the pods of a finished phase do not
    /// stop a drain, whatever their labels say).
    pub fn holds(&self) -> bool {
        !matches!(self.pod.phase.as_str(), "Succeeded" | "Failed")
    }

    /// Its jobs: the count when it can be read, else the keyed jobs that can.
    pub fn job_count(&self) -> u64 {
        match (&self.count, &self.jobs) {
            (Ok(count), _) => u64::try_from(*count).unwrap_or(0),
            (Err(_), Ok(jobs)) => jobs.len() as u64,
            (Err(_), Err(_)) => 0,
        }
    }

    /// What cannot be read on the pod, in words.
    pub fn problems(&self, label: &str, jobs_annotation: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(value) = &self.count {
            problems.push(format!(
                "label {label} holds {value:?}, which is not a count"
            ));
        }
        if let Err(why) = &self.jobs {
            problems.push(format!("annotation {jobs_annotation}: {why}"));
        }
        problems
    }
}

/// What holds one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    /// The node; `None` for pods not scheduled yet.
    pub node: Option<String>,
    /// Its busy pods.
    pub pods: usize,
    /// Their jobs.
    pub jobs: u64,
    /// The earliest deadline of a job there: when the first job is released at the latest.
    pub earliest: Option<u64>,
    /// When the last job there ends, by the deadlines.
    pub latest: Release,
}

/// Everything `busy` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The busy pods, by node, namespace and name.
    pub pods: Vec<PodRow>,
    /// The nodes they hold, by name (unscheduled pods last).
    pub nodes: Vec<NodeRow>,
}

impl Report {
    /// The report of `pods` (any pods: those that are not busy are left out) under `budgets`
    /// (`Err`: why they could not be read); `label` is the tracker's counting label.
    pub fn build<'a>(
        pods: impl IntoIterator<Item = &'a Pod>,
        budgets: Result<&[Budget], &str>,
        label: &str,
    ) -> Report {
        let mut rows: Vec<PodRow> = pods
            .into_iter()
            .filter_map(|pod| pod_row(pod, budgets, label))
            .collect();
        rows.sort_by(|a, b| {
            let order = |row: &PodRow| {
                (
                    row.pod.node.is_none(),
                    row.pod.node.clone(),
                    row.pod.namespace.clone(),
                    row.pod.name.clone(),
                )
            };
            order(a).cmp(&order(b))
        });
        let mut nodes: BTreeMap<(bool, Option<String>), NodeRow> = BTreeMap::new();
        for row in rows.iter().filter(|row| row.holds()) {
            let node = row.pod.node.clone();
            let entry = nodes
                .entry((node.is_none(), node.clone()))
                .or_insert(NodeRow {
                    node,
                    pods: 0,
                    jobs: 0,
                    earliest: None,
                    latest: Release::At(0),
                });
            entry.pods = entry.pods.saturating_add(1);
            entry.jobs = entry.jobs.saturating_add(row.job_count());
            let first = row
                .jobs
                .iter()
                .flatten()
                .filter_map(|job| job.deadline)
                .min();
            entry.earliest = match (entry.earliest, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            entry.latest = match (entry.latest, row.release) {
                (Release::Unknown, _) | (_, Release::Unknown) => Release::Unknown,
                (Release::Never, _) | (_, Release::Never) => Release::Never,
                (Release::At(a), Release::At(b)) => Release::At(a.max(b)),
            };
        }
        Report {
            pods: rows,
            nodes: nodes.into_values().collect(),
        }
    }

    /// Whether a pod still holds its node.
    pub fn holds_any(&self) -> bool {
        self.pods.iter().any(PodRow::holds)
    }
}

/// The row of `pod`, or `None` when it is not busy: its label is absent, or holds a count of
/// zero or below (`--remove-on-zero=false`, `--allow-negative`). A label that is not a count
/// is busy: a budget that selects the label protects the pod all the same.
fn pod_row(pod: &Pod, budgets: Result<&[Budget], &str>, label: &str) -> Option<PodRow> {
    let value = pod.labels.get(label)?;
    let count = count::decode(Some(value)).map_err(|_| value.clone());
    if count.as_ref().is_ok_and(|count| *count <= 0) {
        return None;
    }
    let jobs = match jobs::decode(pod.jobs.as_deref()) {
        Ok(state) => Ok(state
            .jobs
            .into_iter()
            .map(|(key, job)| JobRow {
                key,
                started: job.started,
                deadline: job.deadline,
            })
            .collect::<Vec<_>>()),
        Err(jobs::NotJobs(why)) => Err(why),
    };
    let anonymous = match (&count, &jobs) {
        (Ok(count), Ok(jobs)) => u64::try_from(*count)
            .unwrap_or(0)
            .saturating_sub(jobs.len() as u64),
        _ => 0,
    };
    let release = match &jobs {
        Err(_) => Release::Unknown,
        Ok(_) if count.is_err() => Release::Unknown,
        Ok(jobs) if anonymous > 0 || jobs.iter().any(|job| job.deadline.is_none()) => {
            Release::Never
        }
        Ok(jobs) => jobs
            .iter()
            .filter_map(|job| job.deadline)
            .max()
            .map_or(Release::Never, Release::At),
    };
    let selecting = budgets.map(|budgets| {
        budgets
            .iter()
            .filter(|budget| budget.selects(pod))
            .cloned()
            .collect::<Vec<_>>()
    });
    let eviction = match &selecting {
        Ok(selecting) => eviction(pod, selecting),
        Err(why) => Eviction::Unknown(format!("the budgets could not be read: {why}")),
    };
    Some(PodRow {
        pod: pod.clone(),
        count,
        jobs,
        anonymous,
        release,
        budgets: selecting.ok(),
        eviction,
    })
}

/// What the eviction API (kube-apiserver's `pods/eviction`) would answer now for `pod` under
/// the budgets that select it, in the order it decides.
pub fn eviction(pod: &Pod, budgets: &[Budget]) -> Eviction {
    if matches!(pod.phase.as_str(), "Pending" | "Succeeded" | "Failed") {
        return Eviction::Allowed(format!(
            "a {} pod is evicted whatever its budgets say",
            pod.phase
        ));
    }
    if pod.deleting {
        return Eviction::Allowed("it is being deleted already".to_owned());
    }
    let budget = match budgets {
        [] => return Eviction::Allowed("no budget selects it".to_owned()),
        [budget] => budget,
        several => {
            let names: Vec<&str> = several.iter().map(|b| b.name.as_str()).collect();
            return Eviction::Refused(format!(
                "more than one budget selects it ({}): the eviction API answers 500",
                names.join(", ")
            ));
        }
    };
    let name = &budget.name;
    if !pod.ready {
        if budget.always_allow_unhealthy {
            return Eviction::Allowed(format!(
                "not ready, and {name} lets unhealthy pods go (AlwaysAllow)"
            ));
        }
        if budget.current_healthy >= budget.desired_healthy && budget.desired_healthy > 0 {
            return Eviction::Allowed(format!(
                "not ready, and {name} has the {} healthy pods it needs",
                budget.desired_healthy
            ));
        }
    }
    if budget.observed_generation < budget.generation {
        return Eviction::Refused(format!(
            "{name} is still being processed by the disruption controller"
        ));
    }
    if budget.disruptions_allowed < 0 {
        return Eviction::Refused(format!("{name} allows a negative number of disruptions"));
    }
    if budget.disruptions_allowed == 0 {
        return Eviction::Refused(format!(
            "{name} needs {} healthy pods and has {} (disruptionsAllowed 0)",
            budget.desired_healthy, budget.current_healthy
        ));
    }
    Eviction::Allowed(format!(
        "{name} allows {} disruption{}",
        budget.disruptions_allowed,
        if budget.disruptions_allowed == 1 {
            ""
        } else {
            "s"
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_labels::Selector;

    const LABEL: &str = "active-jobs";
    const JOBS: &str = "active-jobs-jobs";

    fn pod(name: &str, node: Option<&str>, count: Option<&str>, jobs: Option<&str>) -> Pod {
        let mut labels = BTreeMap::from([("app".to_owned(), "runner".to_owned())]);
        if let Some(count) = count {
            labels.insert(LABEL.to_owned(), count.to_owned());
        }
        Pod {
            namespace: "ci".to_owned(),
            name: name.to_owned(),
            node: node.map(str::to_owned),
            phase: "Running".to_owned(),
            ready: true,
            labels,
            jobs: jobs.map(str::to_owned),
            ..Pod::default()
        }
    }

    fn budget(name: &str, allowed: i64) -> Budget {
        Budget {
            namespace: "ci".to_owned(),
            name: name.to_owned(),
            resource_version: "1".to_owned(),
            selector: Some(Selector::parse("app=runner,active-jobs").expect("selector")),
            generation: 1,
            observed_generation: 1,
            disruptions_allowed: allowed,
            current_healthy: 3,
            desired_healthy: 9999,
            always_allow_unhealthy: false,
        }
    }

    fn report(pods: &[Pod], budgets: &[Budget]) -> Report {
        Report::build(pods, Ok(budgets), LABEL)
    }

    #[test]
    fn only_pods_whose_label_holds_a_count_above_zero_or_no_count_are_busy() {
        let pods = [
            pod("idle", Some("a"), None, None),
            pod("zero", Some("a"), Some("0"), None),
            pod("negative", Some("a"), Some("neg2"), None),
            pod("busy", Some("a"), Some("2"), None),
            pod("garbled", Some("a"), Some("lots"), None),
        ];
        let report = report(&pods, &[]);
        let names: Vec<&str> = report.pods.iter().map(|r| r.pod.name.as_str()).collect();
        assert_eq!(names, ["busy", "garbled"]);
        assert_eq!(report.pods[1].count, Err("lots".to_owned()));
        assert_eq!(
            report.pods[1].problems(LABEL, JOBS),
            ["label active-jobs holds \"lots\", which is not a count"]
        );
    }

    #[test]
    fn jobs_come_from_the_annotation_and_the_rest_of_the_count_is_anonymous() {
        let annotation =
            r#"{"v":1,"jobs":{"build-1":{"s":100,"d":400},"build-2":{"s":200,"d":900}}}"#;
        let report = report(&[pod("p", Some("a"), Some("3"), Some(annotation))], &[]);
        let row = &report.pods[0];
        let jobs = row.jobs.as_ref().expect("readable");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].key, "build-1");
        assert_eq!((jobs[0].started, jobs[0].deadline), (100, Some(400)));
        assert_eq!(row.anonymous, 1);
        assert_eq!(
            row.release,
            Release::Never,
            "the anonymous job has no deadline"
        );
        let two = report_of_two(annotation);
        assert_eq!(two.pods[0].release, Release::At(900));
    }

    fn report_of_two(annotation: &str) -> Report {
        report(&[pod("p", Some("a"), Some("2"), Some(annotation))], &[])
    }

    #[test]
    fn a_malformed_jobs_annotation_is_shown_not_fatal() {
        let report = report(&[pod("p", Some("a"), Some("1"), Some("{not json"))], &[]);
        let row = &report.pods[0];
        assert!(row.jobs.is_err());
        assert_eq!(row.release, Release::Unknown);
        let problems = row.problems(LABEL, JOBS);
        assert!(
            problems[0].starts_with("annotation active-jobs-jobs: not the jobs format"),
            "{problems:?}"
        );
        assert_eq!(report.nodes[0].latest, Release::Unknown);
        assert_eq!(report.nodes[0].jobs, 1, "the count still says one job");
    }

    #[test]
    fn nodes_sum_pods_and_jobs_with_the_earliest_and_latest_deadline() {
        let a1 = r#"{"v":1,"jobs":{"x":{"s":100,"d":500}}}"#;
        let a2 = r#"{"v":1,"jobs":{"y":{"s":100,"d":300},"z":{"s":100,"d":700}}}"#;
        let b = r#"{"v":1,"jobs":{"w":{"s":100}}}"#;
        let mut finished = pod("done", Some("b"), Some("1"), None);
        finished.phase = "Succeeded".to_owned();
        let report = report(
            &[
                pod("p2", Some("a"), Some("2"), Some(a2)),
                pod("p1", Some("a"), Some("1"), Some(a1)),
                pod("q", Some("b"), Some("1"), Some(b)),
                pod("pending", None, Some("1"), None),
                finished,
            ],
            &[],
        );
        let order: Vec<&str> = report.pods.iter().map(|r| r.pod.name.as_str()).collect();
        assert_eq!(order, ["p1", "p2", "done", "q", "pending"]);
        assert_eq!(
            report.nodes,
            vec![
                NodeRow {
                    node: Some("a".to_owned()),
                    pods: 2,
                    jobs: 3,
                    earliest: Some(300),
                    latest: Release::At(700),
                },
                NodeRow {
                    node: Some("b".to_owned()),
                    pods: 1,
                    jobs: 1,
                    earliest: None,
                    latest: Release::Never,
                },
                NodeRow {
                    node: None,
                    pods: 1,
                    jobs: 1,
                    earliest: None,
                    latest: Release::Never,
                },
            ],
            "the finished pod holds no node"
        );
    }

    #[test]
    fn an_eviction_follows_the_one_budget_that_selects_the_pod() {
        let busy = pod("p", Some("a"), Some("1"), None);
        assert_eq!(
            eviction(&busy, &[budget("busy", 0)]),
            Eviction::Refused(
                "busy needs 9999 healthy pods and has 3 (disruptionsAllowed 0)".to_owned()
            )
        );
        assert_eq!(
            eviction(&busy, &[budget("busy", 2)]),
            Eviction::Allowed("busy allows 2 disruptions".to_owned())
        );
        assert_eq!(eviction(&busy, &[]).word(), "allowed");
        let two = eviction(&busy, &[budget("a", 5), budget("b", 5)]);
        assert_eq!(two.word(), "refused");
        assert!(two.reason().contains("500"), "{two:?}");
        let mut stale = budget("busy", 5);
        stale.generation = 2;
        assert_eq!(eviction(&busy, &[stale]).word(), "refused");
        let mut negative = budget("busy", -1);
        negative.observed_generation = 1;
        assert_eq!(eviction(&busy, &[negative]).word(), "refused");
    }

    #[test]
    fn pods_the_eviction_api_lets_go_regardless_are_allowed() {
        let mut pending = pod("p", None, Some("1"), None);
        pending.phase = "Pending".to_owned();
        assert_eq!(eviction(&pending, &[budget("busy", 0)]).word(), "allowed");
        let mut deleting = pod("p", Some("a"), Some("1"), None);
        deleting.deleting = true;
        assert_eq!(eviction(&deleting, &[budget("busy", 0)]).word(), "allowed");
        let mut unready = pod("p", Some("a"), Some("1"), None);
        unready.ready = false;
        assert_eq!(eviction(&unready, &[budget("busy", 0)]).word(), "refused");
        let mut always = budget("busy", 0);
        always.always_allow_unhealthy = true;
        assert_eq!(eviction(&unready, &[always]).word(), "allowed");
        let mut healthy_enough = budget("busy", 0);
        healthy_enough.desired_healthy = 2;
        assert_eq!(eviction(&unready, &[healthy_enough]).word(), "allowed");
    }

    #[test]
    fn unreadable_budgets_make_the_eviction_unknown() {
        let report = Report::build(
            &[pod("p", Some("a"), Some("1"), None)],
            Err("forbidden"),
            LABEL,
        );
        assert_eq!(report.pods[0].budgets, None);
        assert_eq!(report.pods[0].eviction.word(), "unknown");
        assert!(report.pods[0].eviction.reason().contains("forbidden"));
    }
}
