//! Did every caller get its own serial count? Checks that the answers of concurrent
//! increments and decrements on one pod could have come from running the calls one after
//! another, starting from a known count.
//!
//! Each answered call is one step of a walk: an increment answering `v` went `v-1 → v`, a
//! decrement answering `v` went `v+1 → v`. The answers fit a serial order exactly when these
//! steps form one directed path from the start count to the end count: across each edge
//! `v-1 ↔ v` the upward steps minus the downward steps are 1 between start and end (going up),
//! -1 (going down), 0 elsewhere, and the edges used are contiguous and reach the start.
//! Two callers given the same count for an increment, a lost update or a count skipped all
//! break one of these.

use std::collections::BTreeMap;

/// One answered call: `+1` or `-1`, and the count it answered.
pub(crate) type Answer = (i64, i64);

/// Checks the answers; returns the final count (start + the sum of the steps) or what is wrong.
pub(crate) fn check(start: i64, answers: &[Answer]) -> Result<i64, String> {
    let end = start + answers.iter().map(|(delta, _)| delta).sum::<i64>();
    // edge v joins v-1 and v: (up steps, down steps).
    let mut edges: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for &(delta, count) in answers {
        match delta {
            1 => edges.entry(count).or_default().0 += 1,
            -1 => edges.entry(count + 1).or_default().1 += 1,
            other => return Err(format!("a step of {other} is neither +1 nor -1")),
        }
    }
    let (low, high) = (start.min(end), start.max(end));
    for v in low + 1..=high {
        edges.entry(v).or_default();
    }
    for (&v, &(up, down)) in &edges {
        let expected = if start < v && v <= end {
            1
        } else if end < v && v <= start {
            -1
        } else {
            0
        };
        if up - down != expected {
            return Err(format!(
                "{up} increment(s) answered {v} but {down} decrement(s) answered {}: \
                 no serial order gives these answers",
                v - 1
            ));
        }
    }
    if let (Some((&first, _)), Some((&last, _))) = (edges.first_key_value(), edges.last_key_value())
    {
        if (first..=last).any(|v| !edges.contains_key(&v)) {
            return Err("the answered counts are not contiguous".into());
        }
        if start < first - 1 || start > last {
            return Err(format!("no answer starts from the count {start}"));
        }
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_answers_pass() {
        // 1 → 2 → 3 → 2 → 3 → 2 → 1
        let answers = [(1, 2), (1, 3), (-1, 2), (1, 3), (-1, 2), (-1, 1)];
        assert_eq!(check(1, &answers), Ok(1));
        // any order of the same answers is fine: they are checked as a set
        let mut reversed = answers;
        reversed.reverse();
        assert_eq!(check(1, &reversed), Ok(1));
        assert_eq!(check(0, &[]), Ok(0));
        assert_eq!(check(5, &[(1, 6), (1, 7)]), Ok(7));
        assert_eq!(check(5, &[(-1, 4), (-1, 3)]), Ok(3));
    }

    #[test]
    fn duplicated_or_lost_counts_fail() {
        // Two increments both answered 2: a lost update.
        assert!(check(1, &[(1, 2), (1, 2)]).is_err());
        // An increment skipped a count.
        assert!(check(1, &[(1, 3)]).is_err());
        // Answers far from the start.
        assert!(check(1, &[(1, 9), (-1, 8)]).is_err());
        // A gap between two groups of answers.
        assert!(check(1, &[(1, 2), (-1, 1), (1, 5), (-1, 4)]).is_err());
    }
}
