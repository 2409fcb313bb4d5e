//! What the tracker may do to its own pod.

#[allow(unused_imports)]
use crate::prelude::*;

#[test]
fn the_tracker_may_set_the_count_and_its_write_record_on_its_own_pod() {
    assert_allowed(decide(&update(
        tracker(),
        &idle(),
        &busy("1", "1f3a9c2e-1"),
    )));
}
#[test]
fn the_tracker_may_record_its_jobs_and_set_and_restore_the_busy_annotations() {
    let labels = [("app.kubernetes.io/name", "worker"), (LABEL, "1")];
    let before = pod(
        POD,
        &[("app.kubernetes.io/name", "worker")],
        &[(DELETION_COST, "-5")],
    );
    let jobs = r#"{"v":1,"jobs":{"build-42":{"s":1718000000,"d":1718021600}},"saved":{"controller.kubernetes.io/pod-deletion-cost":"-5"}}"#;
    let busy = pod(
        POD,
        &labels,
        &[
            (WRITES, "a-1"),
            (JOBS, jobs),
            (KARPENTER, "true"),
            (DELETION_COST, "10000"),
        ],
    );
    assert_allowed(decide(&update(tracker(), &before, &busy)));
    let idle_again = pod(
        POD,
        &[("app.kubernetes.io/name", "worker")],
        &[(WRITES, "a-1 a-2"), (DELETION_COST, "-5")],
    );
    assert_allowed(decide(&update(tracker(), &busy, &idle_again)));
}
#[test]
fn the_tracker_may_change_the_count_and_append_write_ids() {
    let before = busy("1", "1f3a9c2e-1");
    let after = busy("2", "1f3a9c2e-1 1f3a9c2e-2");
    assert_allowed(decide(&update(tracker(), &before, &after)));
    let negative = busy("neg1", "1f3a9c2e-1 1f3a9c2e-2 1f3a9c2e-3");
    assert_allowed(decide(&update(tracker(), &after, &negative)));
}
#[test]
fn the_tracker_may_remove_the_label_at_zero_even_when_it_was_the_only_label() {
    // Removing the last label leaves no labels at all: the API server then shows none.
    let before = pod(POD, &[(LABEL, "1")], &[(WRITES, "1f3a9c2e-1")]);
    let after = pod(POD, &[], &[(WRITES, "1f3a9c2e-1 1f3a9c2e-2")]);
    assert!(json_of(&after).pointer("/metadata/labels").is_none());
    assert_allowed(decide(&update(tracker(), &before, &after)));

    let after_on_labelled_pod = pod(
        POD,
        &[("app.kubernetes.io/name", "worker")],
        &[(WRITES, "1f3a9c2e-1 1f3a9c2e-2")],
    );
    let before = busy("1", "1f3a9c2e-1");
    assert_allowed(decide(&update(tracker(), &before, &after_on_labelled_pod)));
}
#[test]
fn the_tracker_may_write_to_a_pod_that_had_no_labels_or_annotations() {
    let bare = pod(POD, &[], &[]);
    let counted = pod(POD, &[(LABEL, "1")], &[(WRITES, "a-1")]);
    assert_allowed(decide(&update(tracker(), &bare, &counted)));
    // A write that changes nothing (a retried guard) is fine too.
    assert_allowed(decide(&update(tracker(), &bare, &bare)));
}
#[test]
fn listing_another_label_lets_the_tracker_change_it_as_the_readme_describes() {
    // The documented extension: replace /spec/variables/0/expression (allowedLabels).
    let before = pod(POD, &[("example.com/active-jobs", "1")], &[]);
    let after = pod(POD, &[("example.com/active-jobs", "2")], &[]);
    let admission = update(tracker(), &before, &after);
    assert_denied(decide(&admission), &["example.com/active-jobs"]);

    let mut extended = spec();
    let variables = extended.variables.as_mut().expect("variables");
    assert_eq!(variables[0].name, "allowedLabels");
    variables[0].expression = "['active-jobs', 'example.com/active-jobs']".to_owned();
    assert_allowed(compile(extended).decide(&admission));
}

// ---- What the policy refuses -----------------------------------------------------------------
#[test]
fn listing_the_account_of_injected_pods_holds_it_to_the_same_rules() {
    // The documented extension for injected trackers: list their pods' account in
    // /spec/matchConditions/0/expression.
    let workers =
        |pod: &str| service_account(NAMESPACE, "batch-workers", Some(&[(POD_NAME_EXTRA, pod)]));
    let own = update(workers(POD), &idle(), &busy("1", "a-1"));
    let other = update(workers("worker-8"), &idle(), &busy("1", "a-1"));
    assert_eq!(
        decide(&own),
        Decision::NotMatched,
        "not listed: not matched"
    );

    let mut extended = spec();
    let conditions = extended
        .match_conditions
        .as_mut()
        .expect("match conditions");
    assert_eq!(conditions[0].name, "from-a-tracker-account");
    assert!(conditions[0].expression.contains("['job-tracker']"));
    conditions[0].expression = conditions[0]
        .expression
        .replace("['job-tracker']", "['job-tracker', 'batch-workers']");
    let extended = compile(extended);
    assert_allowed(extended.decide(&own));
    assert_denied(
        extended.decide(&other),
        &["batch-workers of pod worker-8 may change only its own pod, not pod worker-7"],
    );
    // The job-tracker accounts stay matched.
    assert_allowed(extended.decide(&update(tracker(), &idle(), &busy("1", "a-1"))));
}
