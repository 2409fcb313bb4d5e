//! The policy as the API server would run it: its CEL expressions compiled with the `cel` crate,
//! and a decision for one admission request.

#[allow(unused_imports)]
use crate::prelude::*;

/// The functions the policy may call: those of Kubernetes 1.30's CEL environment (the CEL
/// standard library, and `ext.Strings` for `join`) that this test can evaluate. Kubernetes'
/// own libraries (lists, regex, URLs, quantity, IP, CIDR, format, authorizer) and optional
/// types are not in the `cel` crate, so the policy uses none of them. The macros (`has`,
/// `filter`) are standard in both and expanded when compiling.
pub(crate) const KUBERNETES_FUNCTIONS: [&str; 4] = ["startsWith", "endsWith", "size", "join"];
pub(crate) static POLICY: LazyLock<ValidatingAdmissionPolicy> =
    LazyLock::new(|| read_yaml("manifests/policy/policy.yaml"));
pub(crate) static BINDING: LazyLock<ValidatingAdmissionPolicyBinding> =
    LazyLock::new(|| read_yaml("manifests/policy/binding.yaml"));
pub(crate) fn spec() -> ValidatingAdmissionPolicySpec {
    POLICY.spec.clone().expect("the policy has a spec")
}

// ---- The evaluator ------------------------------------------------------------------------
/// The CEL environment: the standard library and the strings extension.
pub(crate) fn env() -> Arc<Env> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)
        .expect("the strings extension");
    Arc::new(env)
}
pub(crate) struct Validation {
    pub(crate) source: String,
    pub(crate) expression: Program,
    pub(crate) message_expression: Option<Program>,
    pub(crate) message: Option<String>,
}
/// A policy with every expression compiled.
pub(crate) struct Compiled {
    pub(crate) spec: ValidatingAdmissionPolicySpec,
    pub(crate) env: Arc<Env>,
    pub(crate) match_conditions: Vec<(String, Program)>,
    pub(crate) variables: Vec<(String, Program)>,
    pub(crate) validations: Vec<Validation>,
}
pub(crate) fn compile_one(env: &Env, what: &str, source: &str) -> Program {
    env.compile(source)
        .unwrap_or_else(|error| panic!("{what} does not compile: {error:?}\n{source}"))
}
pub(crate) fn compile(spec: ValidatingAdmissionPolicySpec) -> Compiled {
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
pub(crate) fn to_cel(value: &Value) -> Cel {
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
pub(crate) struct Admission {
    pub(crate) request: Value,
    pub(crate) object: Value,
    pub(crate) old_object: Value,
}
/// Why a change was refused: a validation that was false, or an expression that failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) message: String,
    pub(crate) error: bool,
}
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// The policy does not apply to the request.
    NotMatched,
    Allowed,
    /// Refused; the caller sees the first message.
    Denied(Vec<Refusal>),
}
impl Compiled {
    /// A context with what the API server provides: `request`, `object`, `oldObject`, and
    /// `variables` (for the variables and validations, not the match conditions).
    pub(crate) fn context(
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

    pub(crate) fn constraints_match(&self, admission: &Admission) -> bool {
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

    pub(crate) fn decide(&self, admission: &Admission) -> Decision {
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
pub(crate) fn decide(admission: &Admission) -> Decision {
    compile(spec()).decide(admission)
}
#[track_caller]
pub(crate) fn assert_allowed(decision: Decision) {
    assert_eq!(decision, Decision::Allowed);
}
/// Refused by a validation (not by an expression that failed), and the message the caller
/// sees names every fragment.
#[track_caller]
pub(crate) fn assert_denied(decision: Decision, fragments: &[&str]) {
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
