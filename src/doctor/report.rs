//! `doctor`'s output: the checks as text lines or as JSON.

use super::checks::*;
use super::facts::*;

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

pub(crate) fn tally(checks: &[Check]) -> (usize, usize) {
    let count = |status| checks.iter().filter(|c| c.status == status).count();
    (count(Status::Problem), count(Status::Warning))
}
