//! Reviews as a real API server sends them (recorded), and everything else a client may send.

use super::*;
use proptest::prelude::*;

const RECORDED: &str = include_str!(
    "../../../crates/kube-double/tests/recorded/kube-apiserver-admission-and-tokens.json"
);

fn sidecar() -> Sidecar {
    Sidecar::defaults("tracker:test".to_owned())
}

/// The AdmissionReview the recorded API server sent for the first labelled pod.
fn recorded_review() -> Value {
    let recording: Value = serde_json::from_str(RECORDED).expect("the recording");
    recording["admission"]
        .as_array()
        .expect("entries")
        .iter()
        .find_map(|entry| entry["webhook_saw"].get(0).map(|saw| saw["body"].clone()))
        .expect("a review the webhook saw")
}

fn answered(review: &Value) -> Answer {
    answer(
        review.to_string().as_bytes(),
        &sidecar(),
        UnfitPods::Deny,
        "0.1.0",
    )
    .expect("answered")
}

#[test]
fn the_recorded_review_is_answered_with_its_uid_and_a_base64_json_patch() {
    let review = recorded_review();
    let answer = answered(&review);
    assert_eq!(answer.outcome, Outcome::Injected);
    assert!(!answer.dry_run);
    let response = &answer.body["response"];
    assert_eq!(answer.body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer.body["kind"], "AdmissionReview");
    assert_eq!(response["uid"], review["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON patch");
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("applies to the pod as sent");
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "tracker");
}

#[test]
fn a_dry_run_is_answered_the_same_way() {
    let mut review = recorded_review();
    review["request"]["dryRun"] = json!(true);
    let answer = answered(&review);
    assert!(answer.dry_run);
    assert_eq!(answer.outcome, Outcome::Injected);
    assert_eq!(answer.body["response"]["patchType"], "JSONPatch");
}

#[test]
fn an_unfit_pod_is_denied_or_admitted_with_a_warning_as_configured() {
    let mut review = recorded_review();
    review["request"]["object"]["spec"]["hostNetwork"] = json!(true);
    let denied = answered(&review);
    assert_eq!(denied.outcome, Outcome::Denied);
    assert_eq!(denied.body["response"]["allowed"], false);
    assert_eq!(denied.body["response"]["status"]["code"], 403);
    let message = denied.body["response"]["status"]["message"]
        .as_str()
        .expect("a message");
    assert!(message.contains("hostNetwork"), "{message}");

    let admitted = answer(
        review.to_string().as_bytes(),
        &sidecar(),
        UnfitPods::Admit,
        "0.1.0",
    )
    .expect("answered");
    assert_eq!(admitted.outcome, Outcome::AdmittedUnfit);
    assert_eq!(admitted.body["response"]["allowed"], true);
    assert!(admitted.body["response"].get("patch").is_none());
    let warning = admitted.body["response"]["warnings"][0]
        .as_str()
        .expect("a warning");
    assert!(
        warning.contains("hostNetwork") && warning.contains("without one"),
        "{warning}"
    );
}

#[test]
fn other_operations_and_kinds_are_allowed_unchanged() {
    let mut update = recorded_review();
    update["request"]["operation"] = json!("UPDATE");
    let answer = answered(&update);
    assert_eq!(answer.outcome, Outcome::Ignored);
    assert_eq!(
        answer.body["response"],
        json!({"uid": update["request"]["uid"], "allowed": true})
    );
}

#[test]
fn anything_but_a_v1_review_of_a_pod_is_refused_naming_the_problem() {
    let review = recorded_review();
    let mut cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not JSON"),
        (
            b"\"a string\"".to_vec(),
            "expected an admission.k8s.io/v1 AdmissionReview",
        ),
    ];
    let mut v1beta1 = review.clone();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    cases.push((
        v1beta1.to_string().into_bytes(),
        "admissionReviewVersions: [v1]",
    ));
    let mut no_request = review.clone();
    no_request
        .as_object_mut()
        .expect("an object")
        .remove("request");
    cases.push((no_request.to_string().into_bytes(), "no request"));
    let mut no_uid = review.clone();
    no_uid["request"]["uid"] = json!("");
    cases.push((no_uid.to_string().into_bytes(), "request.uid"));
    let mut not_a_pod = review.clone();
    not_a_pod["request"]["object"]["spec"] = json!("nope");
    cases.push((
        not_a_pod.to_string().into_bytes(),
        "request.object is not a Pod",
    ));
    let mut no_object = review;
    no_object["request"]["object"] = Value::Null;
    cases.push((
        no_object.to_string().into_bytes(),
        "request.object is missing",
    ));
    for (body, expected) in cases {
        let error = answer(&body, &sidecar(), UnfitPods::Deny, "0.1.0").expect_err(expected);
        assert!(error.contains(expected), "{expected}: {error}");
    }
}

proptest! {
    #[test]
    fn any_bytes_are_answered_or_refused_without_a_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(answer) = answer(&body, &sidecar(), UnfitPods::Deny, "0.1.0") {
            prop_assert!(answer.body["response"]["uid"].is_string());
        }
    }

    #[test]
    fn any_change_to_the_recorded_request_is_answered_or_refused_without_a_panic(
        field in prop::sample::select(vec!["uid", "kind", "operation", "object", "dryRun", "namespace"]),
        value in prop_oneof![
            Just(Value::Null), any::<bool>().prop_map(Value::from), any::<i64>().prop_map(Value::from),
            "\\PC{0,40}".prop_map(Value::from), Just(json!({})), Just(json!([1, 2])),
        ],
    ) {
        let mut review = recorded_review();
        review["request"][field] = value;
        if let Ok(answer) = answer(review.to_string().as_bytes(), &sidecar(), UnfitPods::Deny, "0.1.0") {
            prop_assert_eq!(&answer.body["response"]["uid"], &review["request"]["uid"]);
        }
    }
}
