//! Validation of label keys, label values and object names, with apimachinery's messages.
//!
//! These are hand-written equivalents of the regular expressions in
//! `k8s.io/apimachinery/pkg/util/validation` (as of Kubernetes v1.19). The messages are
//! built exactly the way apimachinery builds them, so they can be shown to users or sent
//! back in an API error unchanged.

/// Maximum length of a label value, in bytes.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;
/// Maximum length of the name part of a label key (after the optional `prefix/`), in bytes.
pub const LABEL_KEY_NAME_MAX_LENGTH: usize = 63;
/// Maximum length of a DNS-1123 label such as a namespace name, in bytes.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Maximum length of a DNS-1123 subdomain such as a pod name or a label key prefix, in bytes.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/// Checks a label key (optional DNS-subdomain prefix + '/' + name part), like apimachinery's
/// `IsQualifiedName`.
///
/// `Err` holds the Kubernetes messages, one per problem, in apimachinery's order, e.g.
/// `name part must consist of alphanumeric characters, ...`.
pub fn validate_label_key(key: &str) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let mut parts = key.split('/');
    let first = parts.next().unwrap_or_default();
    let (prefix, name) = match (parts.next(), parts.next()) {
        (None, _) => (None, first),
        (Some(name), None) => (Some(first), name),
        // apimachinery gives up on the parts and reports only this one message.
        (Some(_), Some(_)) => {
            return Err(vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )]);
        }
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errors.push(format!("prefix part {}", empty_error()));
        } else if let Err(messages) = validate_dns1123_subdomain(prefix) {
            errors.extend(messages.into_iter().map(|m| format!("prefix part {m}")));
        }
    }
    if name.is_empty() {
        errors.push(format!("name part {}", empty_error()));
    } else if name.len() > LABEL_KEY_NAME_MAX_LENGTH {
        errors.push(format!(
            "name part {}",
            max_len_error(LABEL_KEY_NAME_MAX_LENGTH)
        ));
    }
    // Checked even when empty, so an empty name gets both messages, as in apimachinery.
    if !is_qualified_name_part(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    into_result(errors)
}

/// Checks a label value like apimachinery's `IsValidLabelValue`: it may be empty, is at most
/// 63 bytes, and otherwise matches `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`.
pub fn validate_label_value(value: &str) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errors.push(max_len_error(LABEL_VALUE_MAX_LENGTH));
    }
    if !(value.is_empty() || is_qualified_name_part(value)) {
        errors.push(regex_error(
            LABEL_VALUE_ERR_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    into_result(errors)
}

/// Checks an object name such as a pod name: a DNS-1123 subdomain (lowercase alphanumerics,
/// '-' and '.', at most 253 bytes), like apimachinery's `IsDNS1123Subdomain`.
pub fn validate_dns1123_subdomain(name: &str) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if name.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !is_dns1123_subdomain(name) {
        errors.push(regex_error(
            DNS1123_SUBDOMAIN_ERR_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    into_result(errors)
}

/// Checks a namespace name: a DNS-1123 label (lowercase alphanumerics and '-', at most 63
/// bytes), like apimachinery's `IsDNS1123Label`.
pub fn validate_dns1123_label(name: &str) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if name.len() > DNS1123_LABEL_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !is_dns1123_label(name) {
        errors.push(regex_error(
            DNS1123_LABEL_ERR_MSG,
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    into_result(errors)
}

fn into_result(errors: Vec<String>) -> Result<(), Vec<String>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// apimachinery's `EmptyError`.
fn empty_error() -> &'static str {
    "must be non-empty"
}

/// apimachinery's `MaxLenError`.
fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// apimachinery's `RegexError`. Its odd "'x',  or 'y', " spacing is reproduced on purpose:
/// clients compare these strings.
fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let mut text = String::from(message);
    if examples.is_empty() {
        text.push_str(&format!(" (regex used for validation is '{format}')"));
        return text;
    }
    text.push_str(" (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            text.push_str(" or ");
        }
        text.push_str(&format!("'{example}', "));
    }
    text.push_str(&format!("regex used for validation is '{format}')"));
    text
}

/// Matches `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`.
fn is_qualified_name_part(text: &str) -> bool {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Matches `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`.
fn is_dns1123_label(text: &str) -> bool {
    let is_end = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            is_end(first) && is_end(last) && bytes.iter().all(|b| is_end(b) || *b == b'-')
        }
        _ => false,
    }
}

/// Matches the DNS-1123 subdomain regex: DNS-1123 labels joined by single dots.
fn is_dns1123_subdomain(text: &str) -> bool {
    text.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE_REGEX_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
    const NAME_PART_REGEX_MESSAGE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    const SUBDOMAIN_REGEX_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    const LABEL_REGEX_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

    /// A valid DNS-1123 subdomain of exactly `length` bytes (for length >= 1).
    fn subdomain_of_length(length: usize) -> String {
        // Dots every 50 characters keep each DNS label short; dots never land at either end.
        (0..length)
            .map(|i| {
                if i % 50 == 49 && i + 1 < length {
                    '.'
                } else {
                    'a'
                }
            })
            .collect()
    }

    #[test]
    fn ordinary_label_values_are_valid() {
        for value in ["0", "3", "worker", "My_Value-1.2", "a"] {
            assert_eq!(validate_label_value(value), Ok(()), "{value}");
        }
    }

    #[test]
    fn the_empty_string_is_a_valid_label_value() {
        assert_eq!(validate_label_value(""), Ok(()));
    }

    #[test]
    fn negative_numbers_are_not_valid_label_values() {
        assert_eq!(
            validate_label_value("-1"),
            Err(vec![VALUE_REGEX_MESSAGE.to_string()])
        );
    }

    #[test]
    fn a_label_value_with_a_bad_character_gets_the_apiserver_message() {
        assert_eq!(
            validate_label_value("two words"),
            Err(vec![VALUE_REGEX_MESSAGE.to_string()])
        );
        assert_eq!(
            validate_label_value("ünïcode"),
            Err(vec![VALUE_REGEX_MESSAGE.to_string()])
        );
    }

    #[test]
    fn a_label_value_may_not_end_with_punctuation() {
        for value in ["abc.", "abc_", "abc-", ".abc", "_abc"] {
            assert_eq!(
                validate_label_value(value),
                Err(vec![VALUE_REGEX_MESSAGE.to_string()]),
                "{value}"
            );
        }
    }

    #[test]
    fn a_label_value_of_63_characters_is_valid_and_64_is_too_long() {
        assert_eq!(validate_label_value(&"a".repeat(63)), Ok(()));
        assert_eq!(
            validate_label_value(&"a".repeat(64)),
            Err(vec!["must be no more than 63 characters".to_string()])
        );
    }

    #[test]
    fn a_long_label_value_with_bad_characters_gets_both_messages_in_order() {
        assert_eq!(
            validate_label_value(&format!("{}!", "a".repeat(63))),
            Err(vec![
                "must be no more than 63 characters".to_string(),
                VALUE_REGEX_MESSAGE.to_string()
            ])
        );
    }

    #[test]
    fn plain_and_prefixed_label_keys_are_valid() {
        for key in [
            "active-jobs",
            "example.com/active-jobs",
            "app.kubernetes.io/name",
            "A_b.C-9",
            "9",
        ] {
            assert_eq!(validate_label_key(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn a_label_key_name_part_with_a_bad_character_gets_the_apiserver_message() {
        assert_eq!(
            validate_label_key("active jobs"),
            Err(vec![NAME_PART_REGEX_MESSAGE.to_string()])
        );
        assert_eq!(
            validate_label_key("example.com/-jobs"),
            Err(vec![NAME_PART_REGEX_MESSAGE.to_string()])
        );
    }

    #[test]
    fn an_empty_label_key_is_reported_as_empty_and_as_not_matching() {
        assert_eq!(
            validate_label_key(""),
            Err(vec![
                "name part must be non-empty".to_string(),
                NAME_PART_REGEX_MESSAGE.to_string()
            ])
        );
    }

    #[test]
    fn a_label_key_with_an_empty_name_after_the_prefix_is_invalid() {
        assert_eq!(
            validate_label_key("example.com/"),
            Err(vec![
                "name part must be non-empty".to_string(),
                NAME_PART_REGEX_MESSAGE.to_string()
            ])
        );
    }

    #[test]
    fn a_label_key_name_part_of_63_characters_is_valid_and_64_is_too_long() {
        assert_eq!(validate_label_key(&"k".repeat(63)), Ok(()));
        assert_eq!(
            validate_label_key(&"k".repeat(64)),
            Err(vec![
                "name part must be no more than 63 characters".to_string()
            ])
        );
    }

    #[test]
    fn the_name_part_limit_does_not_count_the_prefix() {
        let key = format!("{}/{}", subdomain_of_length(253), "k".repeat(63));
        assert_eq!(key.len(), 253 + 1 + 63);
        assert_eq!(validate_label_key(&key), Ok(()));
    }

    #[test]
    fn a_label_key_prefix_of_253_characters_is_valid_and_254_is_too_long() {
        assert_eq!(
            validate_label_key(&format!("{}/jobs", subdomain_of_length(253))),
            Ok(())
        );
        assert_eq!(
            validate_label_key(&format!("{}/jobs", subdomain_of_length(254))),
            Err(vec![
                "prefix part must be no more than 253 characters".to_string()
            ])
        );
    }

    #[test]
    fn a_label_key_prefix_must_be_a_lowercase_dns_subdomain() {
        let expected = vec![format!("prefix part {SUBDOMAIN_REGEX_MESSAGE}")];
        assert_eq!(
            validate_label_key("Example.com/jobs"),
            Err(expected.clone())
        );
        assert_eq!(validate_label_key("example_com/jobs"), Err(expected));
    }

    #[test]
    fn a_label_key_with_an_empty_prefix_is_invalid() {
        assert_eq!(
            validate_label_key("/jobs"),
            Err(vec!["prefix part must be non-empty".to_string()])
        );
    }

    #[test]
    fn a_bad_prefix_and_a_bad_name_are_both_reported() {
        assert_eq!(
            validate_label_key("Bad/-name"),
            Err(vec![
                format!("prefix part {SUBDOMAIN_REGEX_MESSAGE}"),
                NAME_PART_REGEX_MESSAGE.to_string()
            ])
        );
    }

    #[test]
    fn a_label_key_with_two_slashes_gets_only_the_qualified_name_message() {
        let expected = "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";
        assert_eq!(validate_label_key("a/b/c"), Err(vec![expected.to_string()]));
        assert_eq!(validate_label_key("//"), Err(vec![expected.to_string()]));
    }

    #[test]
    fn pod_names_are_valid_dns_subdomains() {
        for name in ["worker-7d9f8b6c5-x2x9z", "a", "0", "a.b-c.d"] {
            assert_eq!(validate_dns1123_subdomain(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn uppercase_underscores_and_empty_parts_are_not_valid_dns_subdomains() {
        for name in [
            "Worker", "work_er", "", ".a", "a.", "a..b", "-a", "a-", "a.-b", "pod/x",
        ] {
            assert_eq!(
                validate_dns1123_subdomain(name),
                Err(vec![SUBDOMAIN_REGEX_MESSAGE.to_string()]),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_dns_subdomain_of_253_characters_is_valid_and_254_is_too_long() {
        assert_eq!(
            validate_dns1123_subdomain(&subdomain_of_length(253)),
            Ok(())
        );
        assert_eq!(
            validate_dns1123_subdomain(&subdomain_of_length(254)),
            Err(vec!["must be no more than 253 characters".to_string()])
        );
    }

    #[test]
    fn namespace_names_are_valid_dns_labels() {
        for name in ["default", "kube-system", "123-abc", "x"] {
            assert_eq!(validate_dns1123_label(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn dots_uppercase_and_edge_dashes_are_not_valid_dns_labels() {
        for name in ["a.b", "Default", "-a", "a-", "", "a_b"] {
            assert_eq!(
                validate_dns1123_label(name),
                Err(vec![LABEL_REGEX_MESSAGE.to_string()]),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_dns_label_of_63_characters_is_valid_and_64_is_too_long() {
        assert_eq!(validate_dns1123_label(&"n".repeat(63)), Ok(()));
        assert_eq!(
            validate_dns1123_label(&"n".repeat(64)),
            Err(vec!["must be no more than 63 characters".to_string()])
        );
    }

    #[test]
    fn lengths_are_counted_in_bytes_like_go() {
        // 32 two-byte characters: 64 bytes, so both the length and the regex fail.
        assert_eq!(
            validate_dns1123_label(&"é".repeat(32)),
            Err(vec![
                "must be no more than 63 characters".to_string(),
                LABEL_REGEX_MESSAGE.to_string()
            ])
        );
    }
}
