//! One condition of a label selector (key, operator, values), its canonical text, matching,
//! and the error every selector problem is reported with.

use std::fmt;

use crate::quote::go_quote;
use crate::validation::{validate_label_key, validate_label_value};

/// One condition of a selector: a key, an operator and the values it compares with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key, e.g. `example.com/active-jobs`.
    pub key: String,
    /// How the label's value is compared with `values`.
    pub operator: Operator,
    /// Sorted and without duplicates when made by the parser or [`Requirement::new`]:
    /// exactly one for `=`, `==`, `!=`, `>` and `<`, at least one for `in` and `notin`
    /// (possibly the empty string), none for `Exists` and `DoesNotExist`.
    pub values: Vec<String>,
}

/// A selector operator, like apimachinery's `selection.Operator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value`: the label is present with that value.
    Equals,
    /// `key==value`: same as [`Operator::Equals`].
    DoubleEquals,
    /// `key!=value`: the label is absent or has another value.
    NotEquals,
    /// `key in (v1,v2)`: the label is present with one of the values.
    In,
    /// `key notin (v1,v2)`: the label is absent or has none of the values.
    NotIn,
    /// `key`: the label is present.
    Exists,
    /// `!key`: the label is absent.
    DoesNotExist,
    /// `key>n`: the label is present and, as a 64-bit integer, greater than `n`.
    GreaterThan,
    /// `key<n`: the label is present and, as a 64-bit integer, less than `n`.
    LessThan,
}

impl Operator {
    /// apimachinery's name for the operator (`selection.Operator`): `=`, `==`, `!=`, `in`,
    /// `notin`, `exists`, `!`, `gt` or `lt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// Why selector text or a requirement was refused; displays as apimachinery's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    message: String,
}

impl SelectorError {
    pub(crate) fn new(message: String) -> SelectorError {
        SelectorError { message }
    }

    /// The message, e.g. `unable to parse requirement: found '', expected: ',' or ')'`.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SelectorError {}

/// apimachinery's `validateLabelKey` message for a key inside a selector.
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    validate_label_key(key)
        .map_err(|errors| format!("invalid label key {}: {}", go_quote(key), errors.join("; ")))
}

/// apimachinery's `validateLabelValue` message for a value inside a selector.
fn check_value(key: &str, value: &str) -> Result<(), String> {
    validate_label_value(value).map_err(|errors| {
        format!(
            "invalid label value: {}: at key: {}: {}",
            go_quote(value),
            go_quote(key),
            errors.join("; ")
        )
    })
}

impl Requirement {
    /// Builds a checked requirement, like apimachinery's `NewRequirement`: the key and values
    /// must be valid and their number must suit the operator. The values are sorted and
    /// de-duplicated, since a requirement holds a set. The error message has no
    /// "unable to parse requirement: " prefix (only the parser adds that).
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Requirement, SelectorError> {
        let key = key.into();
        check_key(&key).map_err(SelectorError::new)?;
        let count_problem = match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                Some("for 'in', 'notin' operators, values set can't be empty")
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                Some("exact-match compatibility requires one single value")
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                Some("values set must be empty for exists and does not exist")
            }
            Operator::GreaterThan | Operator::LessThan if values.len() != 1 => {
                Some("for 'Gt', 'Lt' operators, exactly one value is required")
            }
            Operator::GreaterThan | Operator::LessThan
                if values.iter().any(|v| v.parse::<i64>().is_err()) =>
            {
                Some("for 'Gt', 'Lt' operators, the value must be an integer")
            }
            _ => None,
        };
        if let Some(problem) = count_problem {
            return Err(SelectorError::new(problem.to_string()));
        }
        // Checked in the order given, like Go; the parser passes them sorted already.
        for value in &values {
            check_value(&key, value).map_err(SelectorError::new)?;
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    /// True if the labels satisfy this requirement. `label` yields the value of a key, or
    /// `None` if the label is absent.
    pub fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        let has_value = |value: &str| self.values.iter().any(|v| v == value);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                label(&self.key).is_some_and(has_value)
            }
            // Absent labels satisfy negative requirements, as in Kubernetes.
            Operator::NotIn | Operator::NotEquals => !label(&self.key).is_some_and(has_value),
            Operator::Exists => label(&self.key).is_some(),
            Operator::DoesNotExist => label(&self.key).is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(Ok(actual)) = label(&self.key).map(str::parse::<i64>) else {
                    return false;
                };
                let [limit] = self.values.as_slice() else {
                    return false;
                };
                match limit.parse::<i64>() {
                    Ok(limit) if self.operator == Operator::GreaterThan => actual > limit,
                    Ok(limit) => actual < limit,
                    Err(_) => false,
                }
            }
        }
    }
}

/// Canonical text, like apimachinery's `Requirement.String()`: `key=v`, `key==v`, `key!=v`,
/// `key in (a,b)`, `key notin (a,b)`, `key`, `!key`, `key>n`, `key<n`, values sorted.
impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let (before, after) = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => ("=", ""),
            Operator::DoubleEquals => ("==", ""),
            Operator::NotEquals => ("!=", ""),
            Operator::GreaterThan => (">", ""),
            Operator::LessThan => ("<", ""),
            Operator::In => (" in (", ")"),
            Operator::NotIn => (" notin (", ")"),
        };
        f.write_str(before)?;
        // Sorted here too, in case the public fields were filled in by hand.
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        f.write_str(&values.join(","))?;
        f.write_str(after)
    }
}
