//! A PodDisruptionBudget's selector as a label selector: which pods a budget holds, for `doctor`
//! and `busy` alike.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube_labels::{Operator, Requirement, Selector};

/// A policy/v1 selector as a [`Selector`] (an empty one selects every pod of the namespace, as
/// policy/v1 says); `None` for an operator the API does not know or a requirement it would
/// refuse.
pub fn selector_of(selector: &LabelSelector) -> Option<Selector> {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_readmes_budget_selects_workers_only_while_they_carry_the_label() {
        let selector = selector_of(&LabelSelector {
            match_labels: Some(labels(&[("app", "worker")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "active-jobs".to_owned(),
                operator: "Exists".to_owned(),
                values: None,
            }]),
        })
        .expect("a selector");
        assert!(selector.matches(&labels(&[("app", "worker"), ("active-jobs", "2")])));
        assert!(!selector.matches(&labels(&[("app", "worker")])));
        assert!(!selector.matches(&labels(&[("app", "db"), ("active-jobs", "2")])));
    }

    #[test]
    fn an_empty_selector_selects_every_pod_and_an_unknown_operator_none() {
        let every = selector_of(&LabelSelector::default()).expect("a selector");
        assert!(every.matches(&labels(&[])));
        let unknown = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".to_owned(),
                operator: "Near".to_owned(),
                values: None,
            }]),
            ..LabelSelector::default()
        };
        assert!(selector_of(&unknown).is_none());
    }
}
