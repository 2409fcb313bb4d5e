//! Label selectors: parsed form, canonical text and matching, like apimachinery's `labels.Selector`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::requirement::{Requirement, SelectorError};

/// A parsed label selector (equality- and set-based), like apimachinery's `labels.Selector`.
///
/// Requirements are kept sorted by key (stably), as apimachinery's parser sorts them, so two
/// selectors that differ only in the order they were written compare equal and print the same.
/// The default selector has no requirements and matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses selector text with apimachinery's grammar (`key`, `!key`, `key=value`,
    /// `key==value`, `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`, `key>n`, `key<n`,
    /// separated by commas, with optional whitespace). `""` parses to the empty selector.
    ///
    /// Keys and values are validated; errors carry apimachinery's exact message, e.g.
    /// `unable to parse requirement: found '', expected: ',' or ')'`.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        crate::parser::parse(text).map(Selector::from_requirements)
    }

    /// A selector made of these requirements (sorted by key, like a parsed one).
    pub fn from_requirements(requirements: impl IntoIterator<Item = Requirement>) -> Selector {
        let mut requirements: Vec<Requirement> = requirements.into_iter().collect();
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Selector { requirements }
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True if the selector has no requirements, so it matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Keys the selector looks at, each once, in order of first appearance in
    /// [`Selector::requirements`] (so sorted).
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for requirement in &self.requirements {
            if !keys.contains(&requirement.key.as_str()) {
                keys.push(&requirement.key);
            }
        }
        keys
    }

    /// True if the labels satisfy every requirement. `label` yields the value of a key, or
    /// `None` if the label is absent.
    pub fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| r.matches_with(&label))
    }

    /// Convenience over a map (k8s-openapi uses `BTreeMap<String, String>` for labels).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|key| labels.get(key).map(String::as_str))
    }
}

/// Canonical text, like apimachinery's `String()`: requirements joined by `,` in key order,
/// e.g. `app=worker,!blocked,tier notin (web)`. Parsing it gives back an equal selector.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

/// Same as [`Selector::parse`].
impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Selector, SelectorError> {
        Selector::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requirement::Operator;

    const VALUE_REGEX_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
    const NAME_PART_REGEX_MESSAGE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

    fn parsed(text: &str) -> Selector {
        match Selector::parse(text) {
            Ok(selector) => selector,
            Err(error) => panic!("{text:?} should parse, got: {error}"),
        }
    }

    fn error_of(text: &str) -> String {
        match Selector::parse(text) {
            Ok(selector) => panic!("{text:?} should not parse, got: {selector:?}"),
            Err(error) => error.to_string(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn requirement(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.to_string(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn the_empty_string_parses_to_the_empty_selector_which_matches_everything() {
        let selector = parsed("");
        assert!(selector.is_empty());
        assert_eq!(selector, Selector::default());
        assert!(selector.matches(&labels(&[])));
        assert!(selector.matches(&labels(&[("app", "worker")])));
        assert_eq!(selector.to_string(), "");
    }

    #[test]
    fn a_selector_of_only_whitespace_is_empty() {
        assert!(parsed(" \t\r\n ").is_empty());
    }

    #[test]
    fn every_operator_is_parsed_into_its_requirement() {
        let cases = [
            ("a=b", requirement("a", Operator::Equals, &["b"])),
            ("a==b", requirement("a", Operator::DoubleEquals, &["b"])),
            ("a!=b", requirement("a", Operator::NotEquals, &["b"])),
            ("a in (c,b)", requirement("a", Operator::In, &["b", "c"])),
            ("a notin (b)", requirement("a", Operator::NotIn, &["b"])),
            ("a", requirement("a", Operator::Exists, &[])),
            ("!a", requirement("a", Operator::DoesNotExist, &[])),
            ("a>5", requirement("a", Operator::GreaterThan, &["5"])),
            ("a<5", requirement("a", Operator::LessThan, &["5"])),
        ];
        for (text, expected) in cases {
            assert_eq!(parsed(text).requirements(), [expected], "{text}");
        }
    }

    #[test]
    fn equality_needs_the_key_present_with_that_value() {
        for text in ["app=worker", "app==worker"] {
            let selector = parsed(text);
            assert!(selector.matches(&labels(&[("app", "worker")])), "{text}");
            assert!(!selector.matches(&labels(&[("app", "web")])), "{text}");
            assert!(!selector.matches(&labels(&[])), "{text}");
        }
    }

    #[test]
    fn not_equals_matches_another_value_or_an_absent_key() {
        let selector = parsed("app!=worker");
        assert!(!selector.matches(&labels(&[("app", "worker")])));
        assert!(selector.matches(&labels(&[("app", "web")])));
        assert!(selector.matches(&labels(&[])));
    }

    #[test]
    fn in_needs_the_key_present_with_a_listed_value() {
        let selector = parsed("tier in (web,api)");
        assert!(selector.matches(&labels(&[("tier", "web")])));
        assert!(selector.matches(&labels(&[("tier", "api")])));
        assert!(!selector.matches(&labels(&[("tier", "db")])));
        assert!(!selector.matches(&labels(&[])));
    }

    #[test]
    fn notin_matches_an_unlisted_value_or_an_absent_key() {
        let selector = parsed("tier notin (web,api)");
        assert!(!selector.matches(&labels(&[("tier", "web")])));
        assert!(selector.matches(&labels(&[("tier", "db")])));
        assert!(selector.matches(&labels(&[])));
    }

    #[test]
    fn a_bare_key_needs_the_label_present_with_any_value() {
        let selector = parsed("example.com/active-jobs");
        assert!(selector.matches(&labels(&[("example.com/active-jobs", "0")])));
        assert!(selector.matches(&labels(&[("example.com/active-jobs", "")])));
        assert!(!selector.matches(&labels(&[("active-jobs", "1")])));
    }

    #[test]
    fn a_negated_key_needs_the_label_absent() {
        let selector = parsed("!blocked");
        assert!(selector.matches(&labels(&[("app", "worker")])));
        assert!(!selector.matches(&labels(&[("blocked", "")])));
    }

    #[test]
    fn greater_and_less_than_compare_present_integer_labels() {
        let greater = parsed("jobs>2");
        assert!(greater.matches(&labels(&[("jobs", "3")])));
        assert!(!greater.matches(&labels(&[("jobs", "2")])));
        assert!(!greater.matches(&labels(&[("jobs", "many")])));
        assert!(!greater.matches(&labels(&[])));
        let less = parsed("jobs<2");
        assert!(less.matches(&labels(&[("jobs", "1")])));
        assert!(!less.matches(&labels(&[("jobs", "2")])));
        assert!(!less.matches(&labels(&[])));
    }

    #[test]
    fn every_requirement_must_match() {
        let selector = parsed("app=worker,tier notin (web),!blocked");
        assert!(selector.matches(&labels(&[("app", "worker"), ("tier", "db")])));
        assert!(!selector.matches(&labels(&[("app", "worker"), ("tier", "web")])));
        assert!(!selector.matches(&labels(&[("app", "worker"), ("blocked", "yes")])));
        assert!(!selector.matches(&labels(&[("tier", "db")])));
    }

    #[test]
    fn matches_with_takes_any_label_lookup() {
        let selector = parsed("app=worker,!blocked");
        assert!(selector.matches_with(|key| (key == "app").then_some("worker")));
        assert!(!selector.matches_with(|key| Some(if key == "app" { "worker" } else { "x" })));
        assert!(!selector.matches_with(|_| None));
    }

    #[test]
    fn an_empty_value_after_equals_selects_labels_with_an_empty_value() {
        let selector = parsed("key=");
        assert_eq!(
            selector.requirements(),
            [requirement("key", Operator::Equals, &[""])]
        );
        assert!(selector.matches(&labels(&[("key", "")])));
        assert!(!selector.matches(&labels(&[("key", "x")])));
        assert!(!selector.matches(&labels(&[])));
        assert_eq!(
            parsed("a=,b").requirements(),
            [
                requirement("a", Operator::Equals, &[""]),
                requirement("b", Operator::Exists, &[])
            ]
        );
    }

    #[test]
    fn empty_parentheses_and_empty_list_items_mean_the_empty_value() {
        assert_eq!(parsed("a in ()").requirements()[0].values, [""]);
        assert_eq!(parsed("a in (,b)").requirements()[0].values, ["", "b"]);
        assert_eq!(parsed("a in (b,)").requirements()[0].values, ["", "b"]);
        assert_eq!(
            parsed("a in (b,,c)").requirements()[0].values,
            ["", "b", "c"]
        );
    }

    #[test]
    fn repeated_values_are_kept_once() {
        assert_eq!(parsed("a in (x,y,x)").requirements()[0].values, ["x", "y"]);
    }

    #[test]
    fn whitespace_around_tokens_is_ignored() {
        let tight = parsed("app=worker,tier notin (web,api),!blocked,x!=y,z==w,big>1");
        for text in [
            "  app = worker , tier notin ( web , api ) , ! blocked , x != y , z == w , big > 1 ",
            "app\t=\tworker,\ntier\r\nnotin(web,api),!blocked,x!=y,z==w,big>1",
            "app=worker ,tier  notin  (api,web) ,!blocked,x !=y,z== w,big >1",
        ] {
            assert_eq!(parsed(text), tight, "{text:?}");
        }
    }

    #[test]
    fn requirements_are_sorted_by_key_like_apimachinery() {
        let selector = parsed("tier notin (web),app=worker,!blocked");
        let keys: Vec<&str> = selector
            .requirements()
            .iter()
            .map(|r| r.key.as_str())
            .collect();
        assert_eq!(keys, ["app", "blocked", "tier"]);
        assert_eq!(selector, parsed("app=worker,!blocked,tier notin (web)"));
    }

    #[test]
    fn keys_are_listed_once_each() {
        let selector = parsed("b!=1,a=1,!c,b!=2");
        assert_eq!(selector.keys(), ["a", "b", "c"]);
        assert!(parsed("").keys().is_empty());
    }

    #[test]
    fn display_writes_apimachinery_canonical_text() {
        let cases = [
            (
                "app=worker,tier notin (web),!blocked",
                "app=worker,!blocked,tier notin (web)",
            ),
            (" a == b ", "a==b"),
            ("a!=b", "a!=b"),
            ("a in (z, y, x)", "a in (x,y,z)"),
            ("a in ()", "a in ()"),
            ("a in (b,)", "a in (,b)"),
            ("a", "a"),
            ("a=", "a="),
            ("a > 10", "a>10"),
            ("a < 3", "a<3"),
        ];
        for (text, canonical) in cases {
            assert_eq!(parsed(text).to_string(), canonical, "{text:?}");
        }
    }

    #[test]
    fn display_output_parses_back_to_the_same_selector() {
        for text in [
            "",
            "app=worker,tier notin (web),!blocked",
            "example.com/active-jobs!=0,example.com/active-jobs",
            "a in (,b,c),d notin (),e==f,g=,h>1,i<2",
            "in in (in,notin),notin=in",
        ] {
            let selector = parsed(text);
            assert_eq!(parsed(&selector.to_string()), selector, "{text:?}");
        }
    }

    #[test]
    fn every_short_selector_that_parses_round_trips_and_nothing_panics() {
        // Every string of up to four characters over the selector's special characters.
        let alphabet = ['a', '1', '-', '=', '!', '(', ')', ',', ' ', '>', '<', '\0'];
        let mut texts = vec![String::new()];
        let mut parsed_count = 0;
        for _ in 0..4 {
            texts = texts
                .iter()
                .flat_map(|text| alphabet.iter().map(move |c| format!("{text}{c}")))
                .collect();
            for text in &texts {
                if let Ok(selector) = Selector::parse(text) {
                    parsed_count += 1;
                    assert_eq!(parsed(&selector.to_string()), selector, "{text:?}");
                }
            }
        }
        assert!(parsed_count > 100, "only {parsed_count} parsed");
    }

    #[test]
    fn an_unclosed_value_list_gets_the_apiserver_message() {
        assert_eq!(
            error_of("app in (worker"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
    }

    #[test]
    fn malformed_selectors_get_apimachinery_messages() {
        let cases = [
            (
                "app worker",
                "unable to parse requirement: found 'worker', expected: '=', '!=', '==', 'in', notin'",
            ),
            (
                "app in worker",
                "unable to parse requirement: found 'worker' expected: '('",
            ),
            (
                "app in (",
                "unable to parse requirement: found '', expected: ',', ')' or identifier",
            ),
            (
                "app in (a b)",
                "unable to parse requirement: found 'b', expected: ',' or ')'",
            ),
            (
                "app in (=)",
                "unable to parse requirement: found '=', expected: ',', ')' or identifier",
            ),
            (
                "app in (a,=)",
                "unable to parse requirement: found '=', expected: ',', or identifier",
            ),
            (
                "app=(",
                "unable to parse requirement: found '(', expected: identifier",
            ),
            (
                "!",
                "unable to parse requirement: found '', expected: identifier",
            ),
            (
                "!=a",
                "found '!=', expected: !, identifier, or 'end of string'",
            ),
            ("app=a b", "found 'b', expected: ',' or 'end of string'"),
            ("!app=a", "found '=', expected: ',' or 'end of string'"),
            ("app=worker,", "found '', expected: identifier after ','"),
            ("app,,b", "found ',', expected: identifier after ','"),
            (
                ",app",
                "found ',', expected: !, identifier, or 'end of string'",
            ),
            (
                "(app)",
                "found '(', expected: !, identifier, or 'end of string'",
            ),
        ];
        for (text, message) in cases {
            assert_eq!(error_of(text), message, "{text:?}");
        }
    }

    #[test]
    fn an_invalid_key_in_a_selector_is_a_parse_error() {
        assert_eq!(
            error_of("-app=worker"),
            format!(
                "unable to parse requirement: invalid label key \"-app\": {NAME_PART_REGEX_MESSAGE}"
            )
        );
        assert_eq!(
            error_of("a/b/c"),
            "unable to parse requirement: invalid label key \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        );
    }

    #[test]
    fn several_key_problems_are_joined_with_semicolons() {
        assert_eq!(
            error_of("Bad/"),
            format!(
                "unable to parse requirement: invalid label key \"Bad/\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'); name part must be non-empty; {NAME_PART_REGEX_MESSAGE}"
            )
        );
    }

    #[test]
    fn an_invalid_value_in_a_selector_is_a_parse_error() {
        assert_eq!(
            error_of("app=-1"),
            format!(
                "unable to parse requirement: invalid label value: \"-1\": at key: \"app\": {VALUE_REGEX_MESSAGE}"
            )
        );
        assert_eq!(
            error_of(&format!("app in (ok,{})", "v".repeat(64))),
            format!(
                "unable to parse requirement: invalid label value: \"{}\": at key: \"app\": must be no more than 63 characters",
                "v".repeat(64)
            )
        );
    }

    #[test]
    fn the_first_invalid_value_in_sorted_order_is_reported() {
        let message = error_of("app notin (z@,a?)");
        assert!(
            message.starts_with(
                "unable to parse requirement: invalid label value: \"a?\": at key: \"app\": "
            ),
            "{message}"
        );
    }

    #[test]
    fn keys_and_values_with_special_characters_are_quoted_like_go() {
        assert_eq!(
            error_of("app=\"x\""),
            format!(
                "unable to parse requirement: invalid label value: \"\\\"x\\\"\": at key: \"app\": {VALUE_REGEX_MESSAGE}"
            )
        );
    }

    #[test]
    fn comparison_operators_need_an_integer() {
        assert_eq!(
            error_of("jobs>many"),
            "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert_eq!(
            error_of("jobs<"),
            "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer"
        );
        assert_eq!(
            error_of("jobs>-1"),
            format!(
                "unable to parse requirement: invalid label value: \"-1\": at key: \"jobs\": {VALUE_REGEX_MESSAGE}"
            )
        );
    }

    #[test]
    fn from_str_parses_like_parse() {
        let selector: Result<Selector, SelectorError> = "app=worker".parse();
        assert_eq!(selector, Selector::parse("app=worker"));
        let error: Result<Selector, SelectorError> = "app in (worker".parse();
        assert_eq!(
            error.map_err(|e| e.message().to_string()),
            Err("unable to parse requirement: found '', expected: ',' or ')'".to_string())
        );
    }

    #[test]
    fn selector_errors_are_standard_errors() {
        let error: Box<dyn std::error::Error> = match Selector::parse("!") {
            Ok(_) => panic!("\"!\" should not parse"),
            Err(error) => Box::new(error),
        };
        assert_eq!(
            error.to_string(),
            "unable to parse requirement: found '', expected: identifier"
        );
    }

    #[test]
    fn new_requirements_are_checked_like_new_requirement() {
        let message = |key: &str, operator, values: &[&str]| {
            Requirement::new(
                key,
                operator,
                values.iter().map(|v| v.to_string()).collect(),
            )
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            message("a", Operator::In, &[]),
            Err("for 'in', 'notin' operators, values set can't be empty".to_string())
        );
        assert_eq!(
            message("a", Operator::Equals, &["x", "y"]),
            Err("exact-match compatibility requires one single value".to_string())
        );
        assert_eq!(
            message("a", Operator::Exists, &["x"]),
            Err("values set must be empty for exists and does not exist".to_string())
        );
        assert_eq!(
            message("a", Operator::LessThan, &[]),
            Err("for 'Gt', 'Lt' operators, exactly one value is required".to_string())
        );
        assert_eq!(
            message("a b", Operator::Exists, &[]),
            Err(format!(
                "invalid label key \"a b\": {NAME_PART_REGEX_MESSAGE}"
            ))
        );
        assert_eq!(
            message("a", Operator::NotIn, &["y", "x", "y"]),
            Ok(requirement("a", Operator::NotIn, &["x", "y"]))
        );
    }

    #[test]
    fn selectors_built_from_requirements_are_sorted_and_print_canonically() {
        let selector = Selector::from_requirements([
            requirement("tier", Operator::NotIn, &["web"]),
            requirement("app", Operator::Equals, &["worker"]),
        ]);
        assert_eq!(selector.to_string(), "app=worker,tier notin (web)");
        assert_eq!(selector, parsed("tier notin (web),app=worker"));
    }

    #[test]
    fn operators_have_apimachinery_names() {
        let names: Vec<&str> = [
            Operator::Equals,
            Operator::DoubleEquals,
            Operator::NotEquals,
            Operator::In,
            Operator::NotIn,
            Operator::Exists,
            Operator::DoesNotExist,
            Operator::GreaterThan,
            Operator::LessThan,
        ]
        .into_iter()
        .map(Operator::as_str)
        .collect();
        assert_eq!(
            names,
            ["=", "==", "!=", "in", "notin", "exists", "!", "gt", "lt"]
        );
    }
}
