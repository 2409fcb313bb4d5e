//! Generated input against every parser of the crate: label keys and values, object names and
//! selectors. Nothing panics, every answer is a value or an error with a message, and what is
//! accepted round-trips.

use std::collections::BTreeMap;

use kube_labels::{
    Selector, validate_dns1123_label, validate_dns1123_subdomain, validate_label_key,
    validate_label_value,
};
use proptest::prelude::*;

/// Text shaped like selectors: keys, operators, sets, commas, spaces and the odd stray byte.
fn selector_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z0-9]([a-z0-9.-]{0,8}[a-z0-9])?",
        "[a-z]{1,5}\\.[a-z]{2,3}/[a-z]{1,6}",
        Just("=".to_owned()),
        Just("==".to_owned()),
        Just("!=".to_owned()),
        Just("!".to_owned()),
        Just(" in ".to_owned()),
        Just(" notin ".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just(",".to_owned()),
        Just(" ".to_owned()),
        "\\PC{0,3}",
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    #[test]
    fn any_text_is_a_valid_key_value_and_name_or_an_explained_refusal(text in "\\PC{0,300}|[a-z0-9./-]{0,300}") {
        for outcome in [
            validate_label_key(&text),
            validate_label_value(&text),
            validate_dns1123_label(&text),
            validate_dns1123_subdomain(&text),
        ] {
            if let Err(problems) = outcome {
                prop_assert!(!problems.is_empty());
                prop_assert!(problems.iter().all(|problem| !problem.is_empty()));
            }
        }
    }

    #[test]
    fn a_selector_parses_or_is_refused_with_a_message_and_what_parses_prints_back(text in selector_like()) {
        match Selector::parse(&text) {
            Ok(selector) => {
                let printed = selector.to_string();
                let again = Selector::parse(&printed);
                prop_assert!(again.is_ok(), "{text:?} printed as {printed:?}: {again:?}");
                let labels = BTreeMap::from([("app".to_owned(), "worker".to_owned())]);
                prop_assert_eq!(
                    again.map(|s| s.matches(&labels)).ok(),
                    Some(selector.matches(&labels))
                );
            }
            Err(error) => prop_assert!(!error.to_string().is_empty()),
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_selector_parser(text in "\\PC{0,200}") {
        let _ = Selector::parse(&text).map(|selector| selector.to_string());
    }
}
