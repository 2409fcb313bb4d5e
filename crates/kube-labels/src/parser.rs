//! The label selector lexer and parser, a port of the one in apimachinery's `labels/selector.go`.
//!
//! It is ported construct by construct rather than rewritten, because callers compare the
//! error messages with the API server's and those depend on the exact order in which the
//! Go code looks at tokens (including its quirks, such as `in ()` meaning the empty value).

use std::collections::BTreeSet;

use crate::requirement::{Operator, Requirement, SelectorError};

/// A lexer token, as in apimachinery's `Token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// apimachinery's `string2token`: the literal of every token except identifiers.
fn token_for_literal(literal: &[u8]) -> Option<Token> {
    Some(match literal {
        b")" => Token::ClosedPar,
        b"," => Token::Comma,
        b"!" => Token::DoesNotExist,
        b"==" => Token::DoubleEquals,
        b"=" => Token::Equals,
        b">" => Token::GreaterThan,
        b"in" => Token::In,
        b"<" => Token::LessThan,
        b"!=" => Token::NotEquals,
        b"notin" => Token::NotIn,
        b"(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(byte: u8) -> bool {
    matches!(byte, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// A token with its literal text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScannedItem {
    token: Token,
    literal: String,
}

/// Works on bytes like the Go lexer. Every byte it splits on is ASCII, so the pieces of a
/// `&str` it produces are valid UTF-8.
struct Lexer<'a> {
    text: &'a [u8],
    position: usize,
}

impl Lexer<'_> {
    /// Returns the next byte, or 0 at the end. Like Go, a NUL byte in the input also reads as 0.
    fn read(&mut self) -> u8 {
        match self.text.get(self.position) {
            Some(&byte) => {
                // Below the text's length, so far from usize::MAX.
                self.position = self.position.saturating_add(1);
                byte
            }
            None => 0,
        }
    }

    /// Only called right after a `read` that returned a non-zero byte, so it never underflows.
    fn unread(&mut self) {
        self.position = self.position.saturating_sub(1);
    }

    fn scan_id_or_keyword(&mut self) -> ScannedItem {
        let mut buffer = Vec::new();
        loop {
            let byte = self.read();
            if byte == 0 {
                break;
            }
            if is_special_symbol(byte) || is_whitespace(byte) {
                self.unread();
                break;
            }
            buffer.push(byte);
        }
        let token = match token_for_literal(&buffer) {
            Some(keyword) => keyword,
            None => Token::Identifier,
        };
        ScannedItem {
            token,
            literal: String::from_utf8_lossy(&buffer).into_owned(),
        }
    }

    /// Reads the longest run of special symbols that is still a token ("!=", "==", ...).
    fn scan_special_symbol(&mut self) -> ScannedItem {
        let mut last: Option<ScannedItem> = None;
        let mut buffer = Vec::new();
        loop {
            let byte = self.read();
            if byte == 0 {
                break;
            }
            if !is_special_symbol(byte) {
                self.unread();
                break;
            }
            buffer.push(byte);
            if let Some(token) = token_for_literal(&buffer) {
                last = Some(ScannedItem {
                    token,
                    literal: String::from_utf8_lossy(&buffer).into_owned(),
                });
            } else if last.is_some() {
                self.unread();
                break;
            }
        }
        // Unreachable in practice (every special symbol is a token on its own), kept as in Go.
        last.unwrap_or_else(|| ScannedItem {
            token: Token::Error,
            literal: format!(
                "error expected: keyword found '{}'",
                String::from_utf8_lossy(&buffer)
            ),
        })
    }

    fn lex(&mut self) -> ScannedItem {
        let mut byte = self.read();
        while is_whitespace(byte) {
            byte = self.read();
        }
        if byte == 0 {
            return ScannedItem {
                token: Token::EndOfString,
                literal: String::new(),
            };
        }
        self.unread();
        if is_special_symbol(byte) {
            self.scan_special_symbol()
        } else {
            self.scan_id_or_keyword()
        }
    }
}

/// Whether `in`/`notin` are operators (after a key) or ordinary identifiers (anywhere else,
/// so that `in in (in)` works).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<ScannedItem>,
    position: usize,
}

/// Returned in place of reading past the end, which the grammar never does anyway.
const END: (Token, &str) = (Token::EndOfString, "");

impl Parser {
    fn new(text: &str) -> Parser {
        let mut lexer = Lexer {
            text: text.as_bytes(),
            position: 0,
        };
        let mut items = Vec::new();
        loop {
            let item = lexer.lex();
            let done = item.token == Token::EndOfString;
            items.push(item);
            if done {
                break;
            }
        }
        Parser { items, position: 0 }
    }

    fn lookahead(&self, context: Context) -> (Token, &str) {
        match self.items.get(self.position) {
            Some(item) => (in_context(item.token, context), item.literal.as_str()),
            None => END,
        }
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let item = self.items.get(self.position);
        self.position = self.position.saturating_add(1);
        match item {
            Some(item) => (in_context(item.token, context), item.literal.clone()),
            None => (END.0, END.1.to_string()),
        }
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    let requirement = self.parse_requirement().map_err(|message| {
                        SelectorError::new(format!("unable to parse requirement: {message}"))
                    })?;
                    requirements.push(requirement);
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, next_literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(SelectorError::new(format!(
                                    "found '{next_literal}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(SelectorError::new(format!(
                                "found '{literal}', expected: ',' or 'end of string'"
                            )));
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(SelectorError::new(format!(
                        "found '{literal}', expected: !, identifier, or 'end of string'"
                    )));
                }
            }
        }
    }

    /// Errors are plain messages here: [`Parser::parse`] adds the "unable to parse
    /// requirement: " prefix, as apimachinery does.
    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(operator) = inferred {
            return Requirement::new(key, operator, Vec::new()).map_err(|e| e.message().into());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        // A BTreeSet gives the sorted, de-duplicated list that Go's `sets.String.List()` gives.
        Requirement::new(key, operator, values.into_iter().collect())
            .map_err(|e| e.message().into())
    }

    /// Returns the key, and the operator when it is already known (`!key` or a bare `key`).
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut operator = None;
        let (mut token, mut literal) = self.consume(Context::Values);
        if token == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (token, literal) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        crate::requirement::check_key(&literal)?;
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::EndOfString || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        // Like Go, `!key` followed by anything else still becomes DoesNotExist here and the
        // leftover token is reported by `parse`.
        Ok((literal, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (token, literal) = self.consume(Context::KeyAndOperator);
        Ok(match token {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            // The missing quote before notin is in the original message too.
            _ => {
                return Err(format!(
                    "found '{literal}', expected: '=', '!=', '==', 'in', notin'"
                ));
            }
        })
    }

    /// Parses `(v1,v2,...)`.
    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(format!("found '{literal}' expected: '('"));
        }
        let (token, literal) = self.lookahead(Context::Values);
        let literal = literal.to_string();
        match token {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let (token, _) = self.consume(Context::Values);
                if token != Token::ClosedPar {
                    return Err(format!("found '{literal}', expected: ')'"));
                }
                Ok(values)
            }
            // "()" is the set holding only the empty value.
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!(
                "found '{literal}', expected: ',', ')' or identifier"
            )),
        }
    }

    /// Parses a comma-separated list of possibly empty values, stopping before the ')'.
    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut values = BTreeSet::new();
        loop {
            let (token, literal) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    values.insert(literal);
                    let (next, next_literal) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{next_literal}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    // "(," starts with an empty value.
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    let (next, _) = self.lookahead(Context::Values);
                    if next == Token::ClosedPar {
                        // ",)" ends with an empty value.
                        values.insert(String::new());
                        return Ok(values);
                    }
                    if next == Token::Comma {
                        // ",," has an empty value between (v1.19 also skips the second comma).
                        self.consume(Context::Values);
                        values.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{literal}', expected: ',', or identifier")),
            }
        }
    }

    /// Parses the single value after `=`, `==`, `!=`, `>` or `<`; nothing there means "".
    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (token, _) = self.lookahead(Context::Values);
        if token == Token::EndOfString || token == Token::Comma {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (token, literal) = self.consume(Context::Values);
        if token == Token::Identifier {
            return Ok(BTreeSet::from([literal]));
        }
        Err(format!("found '{literal}', expected: identifier"))
    }
}

fn in_context(token: Token, context: Context) -> Token {
    match (token, context) {
        (Token::In | Token::NotIn, Context::Values) => Token::Identifier,
        _ => token,
    }
}

/// Parses selector text into requirements in the order written (the caller sorts them).
pub(crate) fn parse(text: &str) -> Result<Vec<Requirement>, SelectorError> {
    Parser::new(text).parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<(Token, String)> {
        Parser::new(text)
            .items
            .into_iter()
            .map(|item| (item.token, item.literal))
            .collect()
    }

    #[test]
    fn the_lexer_splits_operators_from_identifiers_without_spaces() {
        use Token::*;
        let expected = [
            (Identifier, "a"),
            (NotEquals, "!="),
            (Identifier, "b"),
            (Comma, ","),
            (DoesNotExist, "!"),
            (Identifier, "c"),
            (Comma, ","),
            (Identifier, "d"),
            (DoubleEquals, "=="),
            (Identifier, "e"),
            (EndOfString, ""),
        ];
        let expected: Vec<_> = expected.iter().map(|(t, l)| (*t, l.to_string())).collect();
        assert_eq!(tokens("a!=b,!c,d==e"), expected);
    }

    #[test]
    fn the_lexer_recognises_keywords_and_skips_every_kind_of_whitespace() {
        use Token::*;
        let found: Vec<Token> = tokens(" x\tnotin\r\n( in ) ")
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(
            found,
            [Identifier, NotIn, OpenPar, In, ClosedPar, EndOfString]
        );
    }

    #[test]
    fn the_lexer_takes_the_longest_operator_and_leaves_the_rest() {
        use Token::*;
        let found: Vec<(Token, String)> = tokens("a!==b");
        assert_eq!(found[1], (NotEquals, "!=".to_string()));
        assert_eq!(found[2], (Equals, "=".to_string()));
    }

    #[test]
    fn in_and_notin_are_identifiers_outside_the_operator_position() {
        let requirements = parse("in in (in,notin)").unwrap_or_default();
        assert_eq!(requirements.len(), 1);
        assert_eq!(requirements[0].key, "in");
        assert_eq!(requirements[0].values, ["in", "notin"]);
    }
}
