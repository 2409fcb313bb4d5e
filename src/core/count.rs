//! The counting rules: label value ⇄ count, and how one increment or decrement changes a count.
//!
//! Pure logic, no I/O: everything here is unit-tested exhaustively.

use std::fmt;

/// One webhook call's change to a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// A job started.
    Increment,
    /// A job ended (success or failure).
    Decrement,
}

impl fmt::Display for Delta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Delta::Increment => "increment",
            Delta::Decrement => "decrement",
        })
    }
}

/// How counts behave at and below zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Let a decrement take the count below zero (otherwise it stops at 0).
    pub allow_negative: bool,
    /// Remove the label at 0 (otherwise the label holds `0`).
    pub remove_on_zero: bool,
}

/// Prefix of a negative count in a label value.
///
/// The API server rejects `-1` as a label value (a value must start with an alphanumeric
/// character), so `-3` is stored as `neg3`; `neg` reads well in `kubectl get pods -L`.
pub const NEGATIVE_PREFIX: &str = "neg";

/// Why a label value could not be read as a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotACount;

/// Why a change could not be applied: the count would leave the 64-bit range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// Reads a label value as a count: absent is 0, `7` is 7, `neg7` is -7.
///
/// Anything else (`abc`, `-7`, `+7`, `7.0`, empty, out of 64-bit range) is not a count.
pub fn decode(value: Option<&str>) -> Result<i64, NotACount> {
    let Some(value) = value else { return Ok(0) };
    let (negative, digits) = match value.strip_prefix(NEGATIVE_PREFIX) {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NotACount);
    }
    // Parse with the sign attached so that i64::MIN (whose magnitude has no positive i64) reads back.
    let signed = if negative {
        format!("-{digits}")
    } else {
        digits.to_owned()
    };
    signed.parse::<i64>().map_err(|_| NotACount)
}

/// Writes a count as a label value that the API server accepts (see [`NEGATIVE_PREFIX`]).
pub fn encode(count: i64) -> String {
    if count < 0 {
        format!("{NEGATIVE_PREFIX}{}", count.unsigned_abs())
    } else {
        count.to_string()
    }
}

/// Applies one change to a count under the policy.
///
/// Without `allow_negative` a decrement at (or below) zero leaves the count unchanged, so a job
/// that decrements twice cannot push an idle pod into debt.
pub fn apply(count: i64, delta: Delta, policy: Policy) -> Result<i64, Overflow> {
    match delta {
        Delta::Increment => count.checked_add(1).ok_or(Overflow),
        Delta::Decrement if !policy.allow_negative && count <= 0 => Ok(count),
        Delta::Decrement => count.checked_sub(1).ok_or(Overflow),
    }
}

/// The label value that represents a count: `None` means "no label".
pub fn label_for(count: i64, policy: Policy) -> Option<String> {
    if count == 0 && policy.remove_on_zero {
        None
    } else {
        Some(encode(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Policy = Policy {
        allow_negative: false,
        remove_on_zero: true,
    };
    const NEGATIVE: Policy = Policy {
        allow_negative: true,
        remove_on_zero: true,
    };
    const KEEP_ZERO: Policy = Policy {
        allow_negative: false,
        remove_on_zero: false,
    };

    #[test]
    fn an_absent_label_counts_as_zero() {
        assert_eq!(decode(None), Ok(0));
    }

    #[test]
    fn plain_digits_read_as_the_count() {
        assert_eq!(decode(Some("0")), Ok(0));
        assert_eq!(decode(Some("3")), Ok(3));
        assert_eq!(decode(Some("007")), Ok(7));
        assert_eq!(decode(Some("9223372036854775807")), Ok(i64::MAX));
    }

    #[test]
    fn negative_counts_read_back_from_their_encoding() {
        assert_eq!(decode(Some("neg1")), Ok(-1));
        assert_eq!(decode(Some("neg42")), Ok(-42));
        assert_eq!(decode(Some("neg9223372036854775808")), Ok(i64::MIN));
    }

    #[test]
    fn values_that_are_not_counts_are_refused() {
        for value in [
            "abc",
            "",
            "-1",
            "+1",
            "1.0",
            " 1",
            "neg",
            "neg-1",
            "NEG1",
            "1e3",
            "9223372036854775808",
        ] {
            assert_eq!(decode(Some(value)), Err(NotACount), "{value:?}");
        }
    }

    #[test]
    fn encoding_round_trips_over_the_whole_range() {
        for count in [
            i64::MIN,
            i64::MIN + 1,
            -1000,
            -1,
            0,
            1,
            1000,
            i64::MAX - 1,
            i64::MAX,
        ] {
            assert_eq!(decode(Some(&encode(count))), Ok(count), "{count}");
        }
    }

    #[test]
    fn every_encoded_count_is_a_valid_label_value() {
        for count in [i64::MIN, -1, 0, 1, i64::MAX] {
            let value = encode(count);
            assert_eq!(kube_labels::validate_label_value(&value), Ok(()), "{value}");
        }
    }

    #[test]
    fn increment_adds_one() {
        assert_eq!(apply(0, Delta::Increment, DEFAULT), Ok(1));
        assert_eq!(apply(-5, Delta::Increment, NEGATIVE), Ok(-4));
    }

    #[test]
    fn decrement_stops_at_zero_without_allow_negative() {
        assert_eq!(apply(2, Delta::Decrement, DEFAULT), Ok(1));
        assert_eq!(apply(1, Delta::Decrement, DEFAULT), Ok(0));
        assert_eq!(apply(0, Delta::Decrement, DEFAULT), Ok(0));
    }

    #[test]
    fn decrement_goes_below_zero_with_allow_negative() {
        assert_eq!(apply(0, Delta::Decrement, NEGATIVE), Ok(-1));
        assert_eq!(apply(-1, Delta::Decrement, NEGATIVE), Ok(-2));
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert_eq!(apply(i64::MAX, Delta::Increment, DEFAULT), Err(Overflow));
        assert_eq!(apply(i64::MIN, Delta::Decrement, NEGATIVE), Err(Overflow));
    }

    #[test]
    fn zero_removes_the_label_by_default() {
        assert_eq!(label_for(0, DEFAULT), None);
        assert_eq!(label_for(1, DEFAULT), Some("1".to_owned()));
    }

    #[test]
    fn zero_is_written_when_remove_on_zero_is_off() {
        assert_eq!(label_for(0, KEEP_ZERO), Some("0".to_owned()));
    }

    #[test]
    fn negative_counts_are_written_in_their_encoding() {
        assert_eq!(label_for(-3, NEGATIVE), Some("neg3".to_owned()));
    }

    proptest::proptest! {
        #[test]
        fn any_label_value_is_a_count_that_round_trips_or_not_a_count(value in "(neg)?[0-9]{0,25}|\\PC{0,30}") {
            if let Ok(count) = decode(Some(&value)) {
                proptest::prop_assert_eq!(decode(Some(&encode(count))), Ok(count));
                proptest::prop_assert!(kube_labels::validate_label_value(&encode(count)).is_ok());
            }
        }

        #[test]
        fn every_count_encodes_to_a_value_the_api_server_accepts(count in proptest::num::i64::ANY) {
            let value = encode(count);
            proptest::prop_assert!(kube_labels::validate_label_value(&value).is_ok(), "{value}");
            proptest::prop_assert_eq!(decode(Some(&value)), Ok(count));
        }
    }
}
