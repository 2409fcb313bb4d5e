//! Go's `%q` string quoting, so that error messages quote keys and values as apimachinery does.

/// Quotes `text` the way Go's `strconv.Quote` (and so `fmt`'s `%q`) does.
///
/// Go keeps printable characters as they are and escapes the rest. Deciding "printable"
/// exactly needs Unicode tables; this keeps every non-ASCII character except controls,
/// non-ASCII spaces, format characters and private-use characters, which covers anything a
/// label selector is realistically going to contain (unassigned code points are the only
/// difference, and Go escapes those).
pub fn go_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len().saturating_add(2));
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            c if is_go_printable(c) => quoted.push(c),
            c if c < ' ' || c == '\u{7f}' => quoted.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    quoted.push('"');
    quoted
}

/// An approximation of Go's `unicode.IsPrint` (see [`go_quote`]).
fn is_go_printable(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    let code = c as u32;
    let is_format = matches!(
        code,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xE0001
            | 0xE0020..=0xE007F
    );
    let is_private_use = matches!(code, 0xE000..=0xF8FF | 0xF0000..=0x10FFFF);
    !(c.is_control() || c.is_whitespace() || is_format || is_private_use)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_only_wrapped_in_double_quotes() {
        assert_eq!(go_quote("app"), "\"app\"");
        assert_eq!(go_quote(""), "\"\"");
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(go_quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn control_characters_use_go_escapes() {
        assert_eq!(go_quote("a\tb\nc\u{1}\u{7f}"), "\"a\\tb\\nc\\x01\\x7f\"");
    }

    #[test]
    fn printable_unicode_is_kept_and_invisible_unicode_is_escaped() {
        assert_eq!(go_quote("héllo"), "\"héllo\"");
        assert_eq!(go_quote("a\u{a0}b"), "\"a\\u00a0b\"");
        assert_eq!(go_quote("\u{feff}"), "\"\\ufeff\"");
        assert_eq!(go_quote("\u{f0000}"), "\"\\U000f0000\"");
    }
}
