//! Checks the least-privilege policy in `manifests/policy/` by running it.
//!
//! The ValidatingAdmissionPolicy is read from its YAML into the `k8s-openapi` types, and every
//! CEL expression in it (match conditions, variables, validations and their messages) is
//! evaluated with the `cel` crate the way the API server does for an admission request:
//! `matchConstraints` first, then the match conditions (any false: not matched; an error:
//! denied, as `failurePolicy: Fail` says), then the variables in order, then each validation
//! (false or an error: denied, with the message of the first refusal shown to the caller).
//!
//! The inputs are built as the API server presents them to CEL: `request` is an
//! AdmissionRequest as JSON, where empty fields are left out (`userInfo.extra` of a token
//! with no extras, `subResource` of the pod itself); `object` and `oldObject` are pods
//! serialized from the `k8s-openapi` types, with integers as CEL `int`. No variable the API
//! server would not provide is defined, so an expression with a wrong field path or name
//! fails here as it would in the cluster.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, LazyLock};

use cel::{Context, Env, Program, Value as Cel};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicySpec,
};
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::{
    Container, EphemeralContainer, Pod, PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The label that holds the count (the program's default `--label`) and its write record.
const LABEL: &str = "active-jobs";
const WRITES: &str = "active-jobs-writes";
/// The running jobs (`<label>-jobs`) and the annotations the sidecar manifests set while busy.
const JOBS: &str = "active-jobs-jobs";
const KARPENTER: &str = "karpenter.sh/do-not-disrupt";
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// The allowed annotations as the denial message lists them.
const ALLOWED_ANNOTATIONS: &str = "active-jobs-writes, active-jobs-jobs, \
    karpenter.sh/do-not-disrupt, controller.kubernetes.io/pod-deletion-cost";
/// The namespace and pod of the samples.
const NAMESPACE: &str = "jobs";
const POD: &str = "worker-7";
/// The user extra naming the pod a bound service account token belongs to.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// The functions the policy may call: those of Kubernetes 1.30's CEL environment (the CEL
/// standard library, and `ext.Strings` for `join`) that this test can evaluate. Kubernetes'
/// own libraries (lists, regex, URLs, quantity, IP, CIDR, format, authorizer) and optional
/// types are not in the `cel` crate, so the policy uses none of them. The macros (`has`,
/// `filter`) are standard in both and expanded when compiling.
const KUBERNETES_FUNCTIONS: [&str; 4] = ["startsWith", "endsWith", "size", "join"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read_yaml<T: DeserializeOwned>(file: &str) -> T {
    let text = std::fs::read_to_string(root().join(file))
        .unwrap_or_else(|error| panic!("cannot read {file}: {error}"));
    let value: Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|error| panic!("{file} is not valid YAML: {error}"));
    serde_json::from_value(value).unwrap_or_else(|error| panic!("{file}: {error}"))
}

static POLICY: LazyLock<ValidatingAdmissionPolicy> =
    LazyLock::new(|| read_yaml("manifests/policy/policy.yaml"));
static BINDING: LazyLock<ValidatingAdmissionPolicyBinding> =
    LazyLock::new(|| read_yaml("manifests/policy/binding.yaml"));

fn spec() -> ValidatingAdmissionPolicySpec {
    POLICY.spec.clone().expect("the policy has a spec")
}

// ---- The evaluator ------------------------------------------------------------------------

/// The CEL environment: the standard library and the strings extension.
fn env() -> Arc<Env> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)
        .expect("the strings extension");
    Arc::new(env)
}

struct Validation {
    source: String,
    expression: Program,
    message_expression: Option<Program>,
    message: Option<String>,
}

/// A policy with every expression compiled.
struct Compiled {
    spec: ValidatingAdmissionPolicySpec,
    env: Arc<Env>,
    match_conditions: Vec<(String, Program)>,
    variables: Vec<(String, Program)>,
    validations: Vec<Validation>,
}

fn compile_one(env: &Env, what: &str, source: &str) -> Program {
    env.compile(source)
        .unwrap_or_else(|error| panic!("{what} does not compile: {error:?}\n{source}"))
}

fn compile(spec: ValidatingAdmissionPolicySpec) -> Compiled {
    let env = env();
    let match_conditions = spec
        .match_conditions
        .iter()
        .flatten()
        .map(|c| {
            let what = format!("match condition {}", c.name);
            (c.name.clone(), compile_one(&env, &what, &c.expression))
        })
        .collect();
    let variables = spec
        .variables
        .iter()
        .flatten()
        .map(|v| {
            let what = format!("variable {}", v.name);
            (v.name.clone(), compile_one(&env, &what, &v.expression))
        })
        .collect();
    let validations = spec
        .validations
        .iter()
        .flatten()
        .map(|v| Validation {
            source: v.expression.clone(),
            expression: compile_one(&env, "validation", &v.expression),
            message_expression: v
                .message_expression
                .as_ref()
                .map(|m| compile_one(&env, "messageExpression", m)),
            message: v.message.clone(),
        })
        .collect();
    Compiled {
        spec,
        env,
        match_conditions,
        variables,
        validations,
    }
}

/// A JSON value as the API server hands it to CEL (unstructured: integers are `int`).
fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(int) => Cel::Int(int),
            None => Cel::Float(n.as_f64().expect("a number")),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => Cel::from(
            map.iter()
                .map(|(key, value)| (key.clone(), to_cel(value)))
                .collect::<HashMap<String, Cel>>(),
        ),
    }
}

/// One admission request: what the API server evaluates the policy on.
#[derive(Clone)]
struct Admission {
    request: Value,
    object: Value,
    old_object: Value,
}

/// Why a change was refused: a validation that was false, or an expression that failed.
#[derive(Debug, Clone, PartialEq)]
struct Refusal {
    message: String,
    error: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Decision {
    /// The policy does not apply to the request.
    NotMatched,
    Allowed,
    /// Refused; the caller sees the first message.
    Denied(Vec<Refusal>),
}

impl Compiled {
    /// A context with what the API server provides: `request`, `object`, `oldObject`, and
    /// `variables` (for the variables and validations, not the match conditions).
    fn context(
        &self,
        admission: &Admission,
        variables: Option<&HashMap<String, Cel>>,
    ) -> Context<'_, '_> {
        let mut context = Context::with_env(Arc::clone(&self.env));
        context.add_variable_from_value("request", to_cel(&admission.request));
        context.add_variable_from_value("object", to_cel(&admission.object));
        context.add_variable_from_value("oldObject", to_cel(&admission.old_object));
        if let Some(variables) = variables {
            context.add_variable_from_value("variables", Cel::from(variables.clone()));
        }
        context
    }

    fn constraints_match(&self, admission: &Admission) -> bool {
        let constraints = self
            .spec
            .match_constraints
            .as_ref()
            .expect("matchConstraints");
        let request = &admission.request;
        let field = |pointer: &str| {
            request
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let (operation, group, version) = (
            field("/operation"),
            field("/resource/group"),
            field("/resource/version"),
        );
        let (resource, sub) = (field("/resource/resource"), field("/subResource"));
        let listed = |list: &Option<Vec<String>>, value: &str| {
            list.iter()
                .flatten()
                .any(|item| item == "*" || item == value)
        };
        // Kubernetes' rule: `pods` is the resource itself, `pods/*` its subresources, `*/*` all.
        let resource_listed = |list: &Option<Vec<String>>| {
            list.iter().flatten().any(|item| {
                let (r, s) = item.split_once('/').unwrap_or((item, ""));
                (r == "*" || r == resource) && (s == sub || (s == "*" && !sub.is_empty()))
            })
        };
        let rule_matches =
            |rule: &k8s_openapi::api::admissionregistration::v1::NamedRuleWithOperations| {
                listed(&rule.operations, operation)
                    && listed(&rule.api_groups, group)
                    && listed(&rule.api_versions, version)
                    && resource_listed(&rule.resources)
            };
        constraints
            .resource_rules
            .iter()
            .flatten()
            .any(rule_matches)
            && !constraints
                .exclude_resource_rules
                .iter()
                .flatten()
                .any(rule_matches)
    }

    fn decide(&self, admission: &Admission) -> Decision {
        if !self.constraints_match(admission) {
            return Decision::NotMatched;
        }
        let fails_closed = self.spec.failure_policy.as_deref() == Some("Fail");

        // Match conditions: any false skips the policy, even if another one failed.
        let context = self.context(admission, None);
        let mut errors = Vec::new();
        for (name, program) in &self.match_conditions {
            match program.execute(&context) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => return Decision::NotMatched,
                other => errors.push(Refusal {
                    message: format!("match condition {name}: {other:?}"),
                    error: true,
                }),
            }
        }
        if !errors.is_empty() {
            return if fails_closed {
                Decision::Denied(errors)
            } else {
                Decision::NotMatched
            };
        }

        // Variables in order; one that fails is left out, so using it fails too (the API
        // server evaluates them lazily, with the same outcome).
        let mut variables = HashMap::new();
        for (name, program) in &self.variables {
            let context = self.context(admission, Some(&variables));
            if let Ok(value) = program.execute(&context) {
                variables.insert(name.clone(), value);
            }
        }

        let context = self.context(admission, Some(&variables));
        let mut refusals = Vec::new();
        for validation in &self.validations {
            match validation.expression.execute(&context) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => {
                    let message = validation
                        .message_expression
                        .as_ref()
                        .map(|program| program.execute(&context));
                    let message = match message {
                        Some(Ok(Cel::String(text))) if !text.is_empty() => text.to_string(),
                        Some(other) => {
                            refusals.push(Refusal {
                                message: format!(
                                    "messageExpression of {}: {other:?}",
                                    validation.source
                                ),
                                error: true,
                            });
                            continue;
                        }
                        None => validation
                            .message
                            .clone()
                            .unwrap_or_else(|| format!("failed expression: {}", validation.source)),
                    };
                    refusals.push(Refusal {
                        message,
                        error: false,
                    });
                }
                other => refusals.push(Refusal {
                    message: format!("{}: {other:?}", validation.source),
                    error: true,
                }),
            }
        }
        if refusals.is_empty() {
            Decision::Allowed
        } else if fails_closed || refusals.iter().any(|r| !r.error) {
            Decision::Denied(refusals)
        } else {
            Decision::Allowed
        }
    }
}

fn decide(admission: &Admission) -> Decision {
    compile(spec()).decide(admission)
}

#[track_caller]
fn assert_allowed(decision: Decision) {
    assert_eq!(decision, Decision::Allowed);
}

/// Refused by a validation (not by an expression that failed), and the message the caller
/// sees names every fragment.
#[track_caller]
fn assert_denied(decision: Decision, fragments: &[&str]) {
    let Decision::Denied(refusals) = decision else {
        panic!("expected a refusal naming {fragments:?}, got {decision:?}");
    };
    assert!(
        refusals.iter().all(|r| !r.error),
        "an expression failed: {refusals:#?}"
    );
    let shown = &refusals[0].message;
    for fragment in fragments {
        assert!(
            shown.contains(fragment),
            "{shown:?} does not name {fragment:?}"
        );
    }
}

// ---- Samples, as the API server presents them ----------------------------------------------

fn map(entries: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    // Go leaves an empty map out of the JSON, and so out of CEL's view.
    (!entries.is_empty()).then(|| {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    })
}

/// A running worker pod of a Job, with the tracker sidecar.
fn pod(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            generate_name: Some("worker-".to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            uid: Some(format!("{name}-uid")),
            resource_version: Some("4711".to_owned()),
            labels: map(labels),
            annotations: map(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".to_owned(),
                kind: "Job".to_owned(),
                name: "worker".to_owned(),
                uid: "job-uid".to_owned(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            finalizers: Some(vec!["batch.kubernetes.io/job-tracking".to_owned()]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some("job-tracker".to_owned()),
            automount_service_account_token: Some(false),
            node_name: Some("node-1".to_owned()),
            restart_policy: Some("Never".to_owned()),
            termination_grace_period_seconds: Some(600),
            init_containers: Some(vec![Container {
                name: "tracker".to_owned(),
                image: Some("ghcr.io/pod-webhook-tracker/pod-webhook-tracker:v0.1.0".to_owned()),
                restart_policy: Some("Always".to_owned()),
                ..Container::default()
            }]),
            containers: vec![Container {
                name: "job".to_owned(),
                image: Some("busybox:1.37".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: Some("10.0.0.7".to_owned()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: "True".to_owned(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

fn json_of(pod: &Pod) -> Value {
    serde_json::to_value(pod).expect("a pod serializes")
}

/// The user of a bound service account token, as the API server authenticates it.
fn service_account(namespace: &str, name: &str, extra: Option<&[(&str, &str)]>) -> UserInfo {
    UserInfo {
        username: Some(format!("system:serviceaccount:{namespace}:{name}")),
        uid: Some(format!("{name}-sa-uid")),
        groups: Some(vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_owned(),
        ]),
        extra: extra.map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                .collect()
        }),
    }
}

/// The tracker's token: bound to its pod (Kubernetes 1.30+ adds the pod and node).
fn tracker_of(namespace: &str, pod: &str) -> UserInfo {
    let pod_uid = format!("{pod}-uid");
    service_account(
        namespace,
        "job-tracker",
        Some(&[
            ("authentication.kubernetes.io/credential-id", "JTI=0b5c6a7e"),
            ("authentication.kubernetes.io/node-name", "node-1"),
            ("authentication.kubernetes.io/node-uid", "node-1-uid"),
            (POD_NAME_EXTRA, pod),
            ("authentication.kubernetes.io/pod-uid", &pod_uid),
        ]),
    )
}

/// An UPDATE of `old` into `new` (a patch arrives as one), by `user`.
fn update(user: UserInfo, old: &Pod, new: &Pod) -> Admission {
    let name = new.metadata.name.clone().expect("a name");
    let namespace = new.metadata.namespace.clone().expect("a namespace");
    let pods = json!({"group": "", "version": "v1", "resource": "pods"});
    let kind = json!({"group": "", "version": "v1", "kind": "Pod"});
    Admission {
        request: json!({
            "uid": "7d0c3f0e-2b1a-4c55-9a43-5b1f0c2d9e11",
            "kind": kind,
            "resource": pods,
            "requestKind": kind,
            "requestResource": pods,
            "name": name,
            "namespace": namespace,
            "operation": "UPDATE",
            "userInfo": serde_json::to_value(user).expect("user info serializes"),
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "PatchOptions"},
            "dryRun": false,
        }),
        object: json_of(new),
        old_object: json_of(old),
    }
}

/// The same request on a subresource of the pod.
fn on_subresource(mut admission: Admission, sub: &str) -> Admission {
    admission.request["subResource"] = json!(sub);
    admission.request["requestSubResource"] = json!(sub);
    admission
}

fn tracker() -> UserInfo {
    tracker_of(NAMESPACE, POD)
}

fn idle() -> Pod {
    pod(POD, &[("app.kubernetes.io/name", "worker")], &[])
}

fn busy(count: &str, writes: &str) -> Pod {
    pod(
        POD,
        &[("app.kubernetes.io/name", "worker"), (LABEL, count)],
        &[(WRITES, writes)],
    )
}

// ---- What the policy allows ------------------------------------------------------------------

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
fn the_tracker_may_not_change_another_pod() {
    let other = |labels: &[(&str, &str)]| pod("worker-8", labels, &[]);
    let admission = update(
        tracker(),
        &other(&[("app.kubernetes.io/name", "worker")]),
        &other(&[("app.kubernetes.io/name", "worker"), (LABEL, "1")]),
    );
    assert_denied(
        decide(&admission),
        &[
            "system:serviceaccount:jobs:job-tracker of pod worker-7",
            "may change only its own pod, not pod worker-8",
        ],
    );
}

#[test]
fn a_job_tracker_of_another_namespace_may_not_change_pods_here() {
    let admission = update(tracker_of("elsewhere", POD), &idle(), &busy("1", "a-1"));
    assert_denied(
        decide(&admission),
        &[
            "system:serviceaccount:elsewhere:job-tracker",
            "own namespace only, not of jobs",
        ],
    );
}

#[test]
fn a_token_bound_to_no_pod_may_change_no_pod() {
    // A token of a Secret or of the TokenRequest API without a pod: no pod-name extra.
    let unbound = service_account(
        NAMESPACE,
        "job-tracker",
        Some(&[("authentication.kubernetes.io/credential-id", "JTI=1")]),
    );
    let no_extra_at_all = service_account(NAMESPACE, "job-tracker", None);
    for user in [unbound, no_extra_at_all] {
        let admission = update(user, &idle(), &busy("1", "a-1"));
        assert_denied(
            decide(&admission),
            &[
                "job-tracker may change only the pod its token is bound to",
                "bound to no pod",
            ],
        );
    }
}

#[test]
fn the_tracker_may_not_add_change_or_remove_another_label() {
    let cases = [
        // Added: e.g. to make its pod match another budget or Service.
        (
            busy("1", "a-1"),
            pod(
                POD,
                &[
                    ("app.kubernetes.io/name", "worker"),
                    (LABEL, "1"),
                    ("role", "db"),
                ],
                &[(WRITES, "a-1")],
            ),
            "role",
        ),
        // Changed.
        (
            busy("1", "a-1"),
            pod(
                POD,
                &[("app.kubernetes.io/name", "db"), (LABEL, "1")],
                &[(WRITES, "a-1")],
            ),
            "app.kubernetes.io/name",
        ),
        // Removed: e.g. to leave the budget's selection.
        (
            busy("1", "a-1"),
            pod(POD, &[(LABEL, "1")], &[(WRITES, "a-1")]),
            "app.kubernetes.io/name",
        ),
    ];
    for (before, after, key) in cases {
        let admission = update(tracker(), &before, &after);
        assert_denied(
            decide(&admission),
            &[
                "may change only the labels active-jobs of pod worker-7",
                &format!("not {key}"),
            ],
        );
    }
}

#[test]
fn the_tracker_may_not_add_change_or_remove_an_unrelated_annotation() {
    let labels = [("app.kubernetes.io/name", "worker"), (LABEL, "1")];
    let before = pod(POD, &labels, &[(WRITES, "a-1"), ("owner", "team-a")]);
    let cases = [
        (
            pod(
                POD,
                &labels,
                &[
                    (WRITES, "a-1"),
                    ("owner", "team-a"),
                    ("cluster-autoscaler.kubernetes.io/safe-to-evict", "true"),
                ],
            ),
            "cluster-autoscaler.kubernetes.io/safe-to-evict",
        ),
        (
            pod(POD, &labels, &[(WRITES, "a-1"), ("owner", "team-b")]),
            "owner",
        ),
        (pod(POD, &labels, &[(WRITES, "a-1")]), "owner"),
    ];
    for (after, key) in cases {
        let admission = update(tracker(), &before, &after);
        assert_denied(
            decide(&admission),
            &[
                &format!("may change only the annotations {ALLOWED_ANNOTATIONS} of pod worker-7"),
                &format!("not {key}"),
            ],
        );
    }
}

#[test]
fn the_tracker_may_not_change_the_spec_owner_references_or_finalizers() {
    let before = busy("1", "a-1");

    let mut image = before.clone();
    image.spec.as_mut().expect("spec").containers[0].image = Some("evil:latest".to_owned());
    assert_denied(
        decide(&update(tracker(), &before, &image)),
        &["may not change the spec of pod worker-7"],
    );

    let mut orphaned = before.clone();
    orphaned.metadata.owner_references = None;
    let mut pinned = before.clone();
    pinned.metadata.finalizers = Some(vec![
        "batch.kubernetes.io/job-tracking".to_owned(),
        "example.com/never".to_owned(),
    ]);
    for after in [orphaned, pinned] {
        assert_denied(
            decide(&update(tracker(), &before, &after)),
            &["may not change the owner references or finalizers of pod worker-7"],
        );
    }
}

#[test]
fn the_tracker_may_not_touch_a_subresource_of_its_own_pod() {
    let before = busy("1", "a-1");
    let mut not_ready = before.clone();
    not_ready.status.as_mut().expect("status").conditions = None;
    let status = on_subresource(update(tracker(), &before, &not_ready), "status");
    assert_denied(
        decide(&status),
        &["may not change pods/status of pod worker-7"],
    );

    let mut debug = before.clone();
    debug.spec.as_mut().expect("spec").ephemeral_containers = Some(vec![EphemeralContainer {
        name: "debugger".to_owned(),
        image: Some("busybox".to_owned()),
        ..EphemeralContainer::default()
    }]);
    let ephemeral = on_subresource(update(tracker(), &before, &debug), "ephemeralcontainers");
    assert_denied(
        decide(&ephemeral),
        &["may not change pods/ephemeralcontainers of pod worker-7"],
    );
}

// ---- Whom the policy applies to --------------------------------------------------------------

#[test]
fn requests_of_other_users_and_service_accounts_are_not_matched() {
    // Everything the tracker may not do, done by others: the policy stays out of the way.
    let before = busy("1", "a-1");
    let after = pod(POD, &[("app.kubernetes.io/name", "db")], &[("owner", "x")]);
    let admin = UserInfo {
        username: Some("kubernetes-admin".to_owned()),
        groups: Some(vec![
            "system:masters".to_owned(),
            "system:authenticated".to_owned(),
        ]),
        ..UserInfo::default()
    };
    let kubelet = UserInfo {
        username: Some("system:node:node-1".to_owned()),
        groups: Some(vec![
            "system:nodes".to_owned(),
            "system:authenticated".to_owned(),
        ]),
        ..UserInfo::default()
    };
    let others = [
        admin,
        kubelet,
        service_account(NAMESPACE, "default", Some(&[(POD_NAME_EXTRA, "worker-8")])),
        service_account(NAMESPACE, "my-job-tracker", Some(&[(POD_NAME_EXTRA, POD)])),
        service_account(NAMESPACE, "job-tracker-2", Some(&[(POD_NAME_EXTRA, POD)])),
        service_account("kube-system", "job-controller", None),
    ];
    for user in others {
        let who = user.username.clone();
        let admission = update(user, &before, &after);
        assert_eq!(decide(&admission), Decision::NotMatched, "{who:?}");
    }
    // The same change by the tracker is refused, so the samples do reach the validations.
    assert!(matches!(
        decide(&update(tracker(), &before, &after)),
        Decision::Denied(_)
    ));
}

#[test]
fn only_updates_of_pods_are_matched() {
    let mut admission = update(tracker(), &idle(), &busy("1", "a-1"));
    assert_eq!(decide(&admission), Decision::Allowed);
    for operation in ["CREATE", "DELETE", "CONNECT"] {
        admission.request["operation"] = json!(operation);
        assert_eq!(decide(&admission), Decision::NotMatched, "{operation}");
    }
    admission.request["operation"] = json!("UPDATE");
    admission.request["resource"] = json!({"group": "", "version": "v1", "resource": "configmaps"});
    assert_eq!(decide(&admission), Decision::NotMatched);
    admission.request["resource"] = json!({"group": "apps", "version": "v1", "resource": "pods"});
    assert_eq!(decide(&admission), Decision::NotMatched);
}

// ---- The policy's form -----------------------------------------------------------------------

#[test]
fn the_policy_fails_closed_and_its_binding_denies_everywhere() {
    let spec = spec();
    assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
    assert!(
        spec.param_kind.is_none(),
        "no params: nothing to find or miss"
    );
    assert!(
        spec.audit_annotations.is_none(),
        "every expression is evaluated here"
    );
    let constraints = spec.match_constraints.expect("matchConstraints");
    for rule in constraints.resource_rules.iter().flatten() {
        // Not modelled by this test's matcher: none of them is set.
        assert!(
            rule.resource_names.is_none() && rule.scope.is_none(),
            "{rule:?}"
        );
    }
    assert!(constraints.exclude_resource_rules.is_none());
    assert!(
        constraints
            .namespace_selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_none() && s.match_expressions.is_none())
    );
    assert!(
        constraints
            .object_selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_none() && s.match_expressions.is_none())
    );

    let binding = BINDING.spec.clone();
    assert_eq!(Some(&binding.policy_name), POLICY.metadata.name.as_ref());
    assert_eq!(binding.validation_actions, ["Deny"]);
    assert!(binding.match_resources.is_none(), "every namespace");
    assert!(binding.param_ref.is_none());
    for validation in spec.validations.iter().flatten() {
        assert_eq!(
            validation.reason.as_deref(),
            Some("Forbidden"),
            "{}",
            validation.expression
        );
        assert!(
            validation.message_expression.is_some(),
            "{}",
            validation.expression
        );
    }
}

#[test]
fn the_allowed_keys_are_the_programs_defaults_and_come_first() {
    // The README's overlay replaces /spec/variables/0 and /spec/variables/1.
    let compiled = compile(spec());
    let names: Vec<&str> = compiled.variables.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..2], ["allowedLabels", "allowedAnnotations"]);
    assert_eq!(strings_of(&compiled, "allowedLabels"), [LABEL]);
    assert_eq!(
        strings_of(&compiled, "allowedAnnotations"),
        [WRITES, JOBS, KARPENTER, DELETION_COST]
    );
    assert_eq!(WRITES, format!("{LABEL}-writes"));
    assert_eq!(JOBS, format!("{LABEL}-jobs"));
}

/// The values of a variable that evaluates to a list of strings on any request.
fn strings_of(compiled: &Compiled, name: &str) -> Vec<String> {
    let admission = update(tracker(), &idle(), &idle());
    let context = compiled.context(&admission, Some(&HashMap::new()));
    let (_, program) = compiled
        .variables
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no variable {name}"));
    match program.execute(&context) {
        Ok(Cel::List(items)) => items
            .iter()
            .map(|item| match item {
                Cel::String(text) => text.to_string(),
                other => panic!("{name} holds {other:?}"),
            })
            .collect(),
        other => panic!("{name} is {other:?}"),
    }
}

/// Every YAML document under `dir`.
fn yaml_documents(dir: &Path, out: &mut Vec<(String, Value)>) {
    for entry in std::fs::read_dir(root().join(dir)).expect("a directory") {
        let entry = entry.expect("an entry");
        let path = dir.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            yaml_documents(&path, out);
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            let text = std::fs::read_to_string(root().join(&path)).expect("readable");
            let options = serde_saphyr::options! { legacy_octal_numbers: true };
            let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(&text, options)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            out.extend(
                docs.into_iter()
                    .map(|doc| (path.display().to_string(), doc)),
            );
        }
    }
}

#[test]
fn every_job_tracker_in_the_manifests_writes_only_keys_the_policy_allows() {
    let compiled = compile(spec());
    let labels = strings_of(&compiled, "allowedLabels");
    let annotations = strings_of(&compiled, "allowedAnnotations");
    let mut docs = Vec::new();
    for dir in ["manifests", "examples"] {
        yaml_documents(Path::new(dir), &mut docs);
    }
    let mut trackers = 0;
    for (file, doc) in &docs {
        let Some(pod) = doc.pointer("/spec/template/spec") else {
            continue;
        };
        if pod["serviceAccountName"] != "job-tracker" {
            continue;
        }
        let containers = ["initContainers", "containers"]
            .iter()
            .filter_map(|field| pod[field].as_array())
            .flatten();
        for container in containers {
            let image = container["image"].as_str().unwrap_or_default();
            if !image.starts_with("ghcr.io/pod-webhook-tracker/pod-webhook-tracker:") {
                continue;
            }
            let args: Vec<&str> = container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let label = args
                .iter()
                .enumerate()
                .find_map(|(i, arg)| match arg.strip_prefix("--label") {
                    Some(rest) if rest.starts_with('=') => Some(rest[1..].to_owned()),
                    Some("") => args.get(i + 1).map(|next| (*next).to_owned()),
                    _ => None,
                })
                .unwrap_or_else(|| LABEL.to_owned());
            assert!(
                labels.contains(&label),
                "{file}: label {label} not in {labels:?}"
            );
            for own in [format!("{label}-writes"), format!("{label}-jobs")] {
                assert!(
                    annotations.contains(&own),
                    "{file}: annotation {own} not in {annotations:?}"
                );
            }
            let deletion_cost = args
                .iter()
                .any(|arg| arg.starts_with("--pod-deletion-cost"));
            assert!(
                !deletion_cost || annotations.iter().any(|allowed| allowed == DELETION_COST),
                "{file}: --pod-deletion-cost sets {DELETION_COST}, not in {annotations:?}"
            );
            // Annotations a tracker is told to set while busy (autoscaler hints).
            let hints = args.iter().enumerate().filter_map(|(i, arg)| {
                match arg.strip_prefix("--active-annotation") {
                    Some(rest) if rest.starts_with('=') => Some(&rest[1..]),
                    Some("") => args.get(i + 1).copied(),
                    _ => None,
                }
            });
            for hint in hints {
                let key = hint.split_once('=').map_or(hint, |(key, _)| key);
                assert!(
                    annotations.iter().any(|allowed| allowed == key),
                    "{file}: --active-annotation {key} not in {annotations:?}"
                );
            }
            trackers += 1;
        }
    }
    assert!(
        trackers >= 3,
        "expected the sidecar Job, Deployment and FileFlows nodes"
    );
}

#[test]
fn every_expression_uses_only_what_kubernetes_provides() {
    let spec = spec();
    let env = env();
    let mut sources: Vec<String> = Vec::new();
    sources.extend(
        spec.match_conditions
            .iter()
            .flatten()
            .map(|c| c.expression.clone()),
    );
    sources.extend(
        spec.variables
            .iter()
            .flatten()
            .map(|v| v.expression.clone()),
    );
    for validation in spec.validations.iter().flatten() {
        sources.push(validation.expression.clone());
        sources.extend(validation.message_expression.clone());
    }
    assert!(sources.len() >= 15, "only {} expressions", sources.len());
    for source in &sources {
        let program = compile_one(&env, "expression", source);
        let references = program.references();
        for function in references.functions() {
            // Operators are named like _&&_, @in, !_ and are standard.
            let operator =
                function.starts_with('_') || function.starts_with('@') || function.starts_with('!');
            assert!(
                operator || KUBERNETES_FUNCTIONS.contains(&function),
                "{function} is not known to be in Kubernetes 1.30's CEL: {source}"
            );
        }
        for variable in references.variables() {
            // Comprehension variables (k) are bound by the macros.
            assert!(
                ["request", "object", "oldObject", "variables", "k"].contains(&variable),
                "{variable} is not provided: {source}"
            );
        }
        assert!(
            !source.contains(".?") && !source.contains("[?"),
            "no optional syntax: {source}"
        );
    }
}

#[test]
fn a_wrong_field_path_in_the_policy_would_fail_these_tests() {
    // The harness is strict: a misspelled path does not pass silently.
    let allowed = update(tracker(), &idle(), &busy("1", "a-1"));
    let changed_app = update(
        tracker(),
        &busy("1", "a-1"),
        &pod(
            POD,
            &[("app.kubernetes.io/name", "db"), (LABEL, "1")],
            &[(WRITES, "a-1")],
        ),
    );
    let misspell = |from: &str, to: &str| {
        let mut spec = spec();
        let text = serde_json::to_string(&spec).expect("serializes");
        assert!(text.contains(from), "{from} is not in the policy");
        spec = serde_json::from_str(&text.replace(from, to)).expect("deserializes");
        compile(spec)
    };
    // A path outside has(): the evaluation fails, and the change is refused.
    let broken = misspell("[object.metadata.name]", "[object.metadata.nam]");
    assert!(matches!(broken.decide(&allowed), Decision::Denied(r) if r.iter().any(|r| r.error)));
    // A path inside has(): the labels look empty, so the allowed change looks like a removal.
    let broken = misspell(
        "has(oldObject.metadata.labels)",
        "has(oldObject.metadata.label)",
    );
    assert!(matches!(broken.decide(&allowed), Decision::Denied(_)));
    // The extra's key.
    let broken = misspell(POD_NAME_EXTRA, "authentication.kubernetes.io/podname");
    assert!(matches!(broken.decide(&allowed), Decision::Denied(_)));
    // And the unbroken policy tells the two apart.
    assert_allowed(decide(&allowed));
    assert_denied(decide(&changed_app), &["app.kubernetes.io/name"]);
}
