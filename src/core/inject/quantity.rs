//! Kubernetes resource quantities (`5m`, `8Mi`, `1.5G`, `2e3`) as the API server accepts them
//! for requests and limits: checked before they are written into a pod, so that a bad value is
//! a clear warning from the injector and not a pod creation refused later for reasons the
//! creator cannot see.

/// The longest quantity accepted (the API server's limit is far above any sane value).
pub const MAX_QUANTITY: usize = 32;

const SUFFIXES: &[(&str, f64)] = &[
    ("Ki", 1024.0),
    ("Mi", 1_048_576.0),
    ("Gi", 1_073_741_824.0),
    ("Ti", 1_099_511_627_776.0),
    ("Pi", 1_125_899_906_842_624.0),
    ("Ei", 1_152_921_504_606_846_976.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
];

/// The value of a non-negative quantity (approximate: for comparing a request with a limit),
/// or why it is not one.
pub fn parse(text: &str) -> Result<f64, String> {
    let refuse = |why: &str| Err(format!("{text:?} is not a resource quantity: {why}"));
    if text.is_empty() {
        return refuse("empty; expected for example 5m, 8Mi or 0.5");
    }
    if text.len() > MAX_QUANTITY {
        return refuse(&format!("longer than {MAX_QUANTITY} characters"));
    }
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let mut parts = number.split('.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    if parts.next().is_some() {
        return refuse("more than one decimal point");
    }
    if whole.is_empty() && fraction.is_none_or(str::is_empty) {
        return refuse("no digits before its unit");
    }
    let Ok(value) = number.parse::<f64>() else {
        return refuse("not a number");
    };
    let multiplier = if suffix.is_empty() {
        1.0
    } else if let Some(exponent) = suffix.strip_prefix(['e', 'E']) {
        let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return refuse("a bad exponent");
        }
        let Ok(exponent) = exponent.parse::<i32>() else {
            return refuse("a bad exponent");
        };
        10f64.powi(exponent)
    } else if let Some((_, multiplier)) = SUFFIXES.iter().find(|(unit, _)| *unit == suffix) {
        *multiplier
    } else {
        return refuse(&format!(
            "unknown unit {suffix:?} (units: Ki Mi Gi Ti Pi Ei, n u m k M G T P E)"
        ));
    };
    Ok(value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantities_the_api_server_accepts_are_read_with_their_unit() {
        assert_eq!(parse("5m"), Ok(0.005));
        assert_eq!(parse("8Mi"), Ok(8.0 * 1_048_576.0));
        assert_eq!(parse("1.5G"), Ok(1.5e9));
        assert_eq!(parse("2e3"), Ok(2000.0));
        assert_eq!(parse(".5"), Ok(0.5));
        assert_eq!(parse("100"), Ok(100.0));
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        for (text, why) in [
            ("", "empty"),
            ("Mi", "no digits"),
            ("-1", "no digits"),
            ("1..2", "decimal point"),
            ("8MB", "unknown unit"),
            ("1e", "exponent"),
            ("1e99999", "exponent"),
            ("8 Mi", "unknown unit"),
            ("111111111111111111111111111111111", "longer"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    proptest! {
        #[test]
        fn any_text_is_a_finite_non_negative_quantity_or_refused(text in "\\PC{0,40}") {
            if let Ok(value) = parse(&text) {
                prop_assert!(value.is_finite() && value >= 0.0, "{text}: {value}");
                prop_assert!(text.len() <= MAX_QUANTITY);
            }
        }

        #[test]
        fn numbers_with_any_unit_are_accepted(
            number in "[0-9]{1,6}(\\.[0-9]{1,3})?",
            unit in prop::sample::select(vec!["", "m", "Ki", "Mi", "Gi", "k", "M", "G"]),
        ) {
            let text = format!("{number}{unit}");
            prop_assert!(parse(&text).is_ok(), "{}", text);
        }
    }
}
