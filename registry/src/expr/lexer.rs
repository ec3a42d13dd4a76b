//! Splits expression text into tokens, each tagged with its 1-based column
//! (counted in characters, so carets line up under non-ASCII text too).

use super::ExprError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum TokenKind {
    /// `name` or `element.name`; keywords are recognised only undotted.
    Ident {
        element: Option<String>,
        name: String,
    },
    And,
    Or,
    Not,
    In,
    /// `OVERLAPS`; the shapes after it (`POINT`, `CIRCLE`) are only
    /// recognised there, so they stay usable as names elsewhere.
    Overlaps,
    True,
    False,
    /// Unsigned decimal digits; the parser applies a leading minus before
    /// converting, so `-9223372036854775808` is representable.
    Int(String),
    Float(f64),
    Str(String),
    Bind(String),
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    LParen,
    RParen,
    Comma,
    DotDot,
    Colon,
    Minus,
    Dot,
    Eof,
}

impl TokenKind {
    /// How a token is named in error messages.
    pub(super) fn describe(&self) -> String {
        match self {
            TokenKind::Ident {
                element: Some(e),
                name,
            } => format!("identifier {e}.{name}"),
            TokenKind::Ident {
                element: None,
                name,
            } => format!("identifier {name}"),
            TokenKind::And => "keyword AND".into(),
            TokenKind::Or => "keyword OR".into(),
            TokenKind::Not => "keyword NOT".into(),
            TokenKind::In => "keyword IN".into(),
            TokenKind::Overlaps => "keyword OVERLAPS".into(),
            TokenKind::True => "keyword TRUE".into(),
            TokenKind::False => "keyword FALSE".into(),
            TokenKind::Int(d) => format!("number {d}"),
            TokenKind::Float(f) => format!("number {f:?}"),
            TokenKind::Str(s) => format!("string {}", quote(s)),
            TokenKind::Bind(b) => format!("bind parameter :{b}"),
            TokenKind::Eq => "'='".into(),
            TokenKind::Ne => "'!='".into(),
            TokenKind::Lt => "'<'".into(),
            TokenKind::Le => "'<='".into(),
            TokenKind::Gt => "'>'".into(),
            TokenKind::Ge => "'>='".into(),
            TokenKind::LParen => "'('".into(),
            TokenKind::RParen => "')'".into(),
            TokenKind::Comma => "','".into(),
            TokenKind::DotDot => "'..'".into(),
            TokenKind::Colon => "':'".into(),
            TokenKind::Minus => "'-'".into(),
            TokenKind::Dot => "'.'".into(),
            TokenKind::Eof => "the end of the expression".into(),
        }
    }
}

/// A string rendered as the user would write it, for messages.
pub(super) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub kind: TokenKind,
    pub column: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Tokenises the whole text; the last token is always `Eof`.
pub(super) fn tokenize(text: &str) -> Result<Vec<Token>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let err = |column: usize, message: String| ExprError::new(text, column, message);
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let (kind, len) = if is_ident_start(c) {
            let (first, end) = read_word(&chars, i);
            // `element.field`: the dot binds only when a name follows, so
            // `2..4` and a stray `x.` are left for other rules to report.
            if chars.get(end) == Some(&'.')
                && chars.get(end + 1).is_some_and(|&c| is_ident_start(c))
            {
                let (second, end2) = read_word(&chars, end + 1);
                (
                    TokenKind::Ident {
                        element: Some(first),
                        name: second,
                    },
                    end2 - i,
                )
            } else {
                let kind = match first.to_ascii_uppercase().as_str() {
                    "AND" => TokenKind::And,
                    "OR" => TokenKind::Or,
                    "NOT" => TokenKind::Not,
                    "IN" => TokenKind::In,
                    "OVERLAPS" => TokenKind::Overlaps,
                    "TRUE" => TokenKind::True,
                    "FALSE" => TokenKind::False,
                    _ => TokenKind::Ident {
                        element: None,
                        name: first,
                    },
                };
                (kind, end - i)
            }
        } else if c.is_ascii_digit() {
            read_number(&chars, i).map_err(|m| err(column, m))?
        } else if c == '\'' || c == '"' {
            read_string(&chars, i).map_err(|m| err(column, m))?
        } else {
            match (c, next) {
                (':', Some(n)) if is_ident_start(n) => {
                    let (name, end) = read_word(&chars, i + 1);
                    (TokenKind::Bind(name), end - i)
                }
                (':', _) => (TokenKind::Colon, 1),
                ('.', Some('.')) => (TokenKind::DotDot, 2),
                ('.', _) => (TokenKind::Dot, 1),
                ('(', _) => (TokenKind::LParen, 1),
                (')', _) => (TokenKind::RParen, 1),
                (',', _) => (TokenKind::Comma, 1),
                ('-', _) => (TokenKind::Minus, 1),
                ('=', _) => (TokenKind::Eq, 1),
                ('!', Some('=')) => (TokenKind::Ne, 2),
                ('<', Some('>')) => (TokenKind::Ne, 2),
                ('<', Some('=')) => (TokenKind::Le, 2),
                ('<', _) => (TokenKind::Lt, 1),
                ('>', Some('=')) => (TokenKind::Ge, 2),
                ('>', _) => (TokenKind::Gt, 1),
                _ => return Err(err(column, format!("unexpected character {c:?}"))),
            }
        };
        tokens.push(Token { kind, column });
        i += len;
    }
    tokens.push(Token {
        kind: TokenKind::Eof,
        column: chars.len() + 1,
    });
    Ok(tokens)
}

fn read_word(chars: &[char], start: usize) -> (String, usize) {
    let mut end = start;
    while end < chars.len() && is_ident_char(chars[end]) {
        end += 1;
    }
    (chars[start..end].iter().collect(), end)
}

fn read_number(chars: &[char], start: usize) -> Result<(TokenKind, usize), String> {
    let digit_at = |i: usize| chars.get(i).is_some_and(|c| c.is_ascii_digit());
    let mut end = start;
    while digit_at(end) {
        end += 1;
    }
    let mut is_float = false;
    // A fraction needs a digit after the dot; otherwise `2..4` would lex as
    // the float `2.` followed by `.4`.
    if chars.get(end) == Some(&'.') && digit_at(end + 1) {
        is_float = true;
        end += 1;
        while digit_at(end) {
            end += 1;
        }
    }
    if matches!(chars.get(end), Some('e' | 'E')) {
        let sign = usize::from(matches!(chars.get(end + 1), Some('+' | '-')));
        if digit_at(end + 1 + sign) {
            is_float = true;
            end += 1 + sign;
            while digit_at(end) {
                end += 1;
            }
        }
    }
    let text: String = chars[start..end].iter().collect();
    if chars.get(end).is_some_and(|&c| is_ident_char(c)) {
        let mut bad_end = end;
        while chars.get(bad_end).is_some_and(|&c| is_ident_char(c)) {
            bad_end += 1;
        }
        let bad: String = chars[start..bad_end].iter().collect();
        return Err(format!("invalid number {bad:?}"));
    }
    if is_float {
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok((TokenKind::Float(v), end - start)),
            _ => Err(format!("number {text} is out of range")),
        }
    } else {
        Ok((TokenKind::Int(text), end - start))
    }
}

fn read_string(chars: &[char], start: usize) -> Result<(TokenKind, usize), String> {
    let quote = chars[start];
    let mut value = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => {
                return Err(format!(
                    "unterminated string (no closing {quote} for the string starting)"
                ))
            }
            Some(&c) if c == quote => {
                if chars.get(i + 1) == Some(&quote) {
                    value.push(quote);
                    i += 2;
                } else {
                    return Ok((TokenKind::Str(value), i + 1 - start));
                }
            }
            Some(&c) => {
                value.push(c);
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        tokenize(text)
            .unwrap()
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn ranges_and_floats_are_told_apart() {
        assert_eq!(
            kinds("2..4 2.5 1e3 0..9:3"),
            vec![
                TokenKind::Int("2".into()),
                TokenKind::DotDot,
                TokenKind::Int("4".into()),
                TokenKind::Float(2.5),
                TokenKind::Float(1000.0),
                TokenKind::Int("0".into()),
                TokenKind::DotDot,
                TokenKind::Int("9".into()),
                TokenKind::Colon,
                TokenKind::Int("3".into()),
                TokenKind::Eof,
            ]
        );
    }

    #[test]
    fn dotted_identifiers_keywords_binds_and_strings() {
        assert_eq!(
            kinds("exposure.exposure_time and NOT in :val 'it''s' \"a\"\"b\" <> <= Overlaps"),
            vec![
                TokenKind::Ident {
                    element: Some("exposure".into()),
                    name: "exposure_time".into()
                },
                TokenKind::And,
                TokenKind::Not,
                TokenKind::In,
                TokenKind::Bind("val".into()),
                TokenKind::Str("it's".into()),
                TokenKind::Str("a\"b".into()),
                TokenKind::Ne,
                TokenKind::Le,
                TokenKind::Overlaps,
                TokenKind::Eof,
            ]
        );
    }

    #[test]
    fn columns_are_one_based_characters() {
        let toks = tokenize("é = 'ü' AND x").unwrap_err();
        assert_eq!(toks.column, 1);
        let toks = tokenize("x = 'ü' AND y").unwrap();
        let cols: Vec<usize> = toks.iter().map(|t| t.column).collect();
        assert_eq!(cols, vec![1, 3, 5, 9, 13, 14]);
    }

    #[test]
    fn bad_numbers_are_rejected() {
        assert_eq!(tokenize("x = 12abc").unwrap_err().column, 5);
        assert!(tokenize("x = 1e999")
            .unwrap_err()
            .message
            .contains("out of range"));
    }
}
