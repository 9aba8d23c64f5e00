//! Tokens of SQL92 filter expressions, each with its byte position for error messages.

use super::FilterError;

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Keyword(Keyword),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
    Eof,
}

/// Reserved words (matched case-insensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keyword {
    And,
    Or,
    Not,
    Between,
    In,
    Is,
    Null,
    True,
    False,
    Contains,
    StartsWith,
    EndsWith,
}

impl Keyword {
    fn from_word(word: &str) -> Option<Self> {
        let keyword = match word.to_ascii_uppercase().as_str() {
            "AND" => Keyword::And,
            "OR" => Keyword::Or,
            "NOT" => Keyword::Not,
            "BETWEEN" => Keyword::Between,
            "IN" => Keyword::In,
            "IS" => Keyword::Is,
            "NULL" => Keyword::Null,
            "TRUE" => Keyword::True,
            "FALSE" => Keyword::False,
            "CONTAINS" => Keyword::Contains,
            "STARTSWITH" => Keyword::StartsWith,
            "ENDSWITH" => Keyword::EndsWith,
            _ => return None,
        };
        Some(keyword)
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Keyword::And => "AND",
            Keyword::Or => "OR",
            Keyword::Not => "NOT",
            Keyword::Between => "BETWEEN",
            Keyword::In => "IN",
            Keyword::Is => "IS",
            Keyword::Null => "NULL",
            Keyword::True => "TRUE",
            Keyword::False => "FALSE",
            Keyword::Contains => "CONTAINS",
            Keyword::StartsWith => "STARTSWITH",
            Keyword::EndsWith => "ENDSWITH",
        }
    }
}

impl Token {
    /// How the token reads in an error message.
    pub(super) fn describe(&self) -> String {
        match self {
            Token::Ident(name) => format!("identifier `{name}`"),
            Token::Str(text) => format!("string '{text}'"),
            Token::Int(value) => format!("number {value}"),
            Token::Float(value) => format!("number {value}"),
            Token::Keyword(keyword) => format!("keyword {}", keyword.name()),
            Token::Op(op) => format!("`{op}`"),
            Token::LParen => "`(`".to_string(),
            Token::RParen => "`)`".to_string(),
            Token::Comma => "`,`".to_string(),
            Token::Eof => "end of expression".to_string(),
        }
    }
}

fn syntax(position: usize, expected: &str, found: String) -> FilterError {
    FilterError::Syntax {
        kind: "SQL92",
        position,
        expected: expected.to_string(),
        found,
    }
}

/// Splits an expression into tokens, ending with [`Token::Eof`] at the expression's length.
pub(super) fn tokenize(input: &str) -> Result<Vec<(usize, Token)>, FilterError> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let byte = bytes[at];
        if byte.is_ascii_whitespace() {
            at += 1;
            continue;
        }
        let start = at;
        let token = match byte {
            b'(' => {
                at += 1;
                Token::LParen
            }
            b')' => {
                at += 1;
                Token::RParen
            }
            b',' => {
                at += 1;
                Token::Comma
            }
            b'=' => {
                at += 1;
                Token::Op("=")
            }
            b'<' | b'>' | b'!' => {
                let next = bytes.get(at + 1).copied();
                let (op, len) = match (byte, next) {
                    (b'<', Some(b'>')) => ("<>", 2),
                    (b'<', Some(b'=')) => ("<=", 2),
                    (b'<', _) => ("<", 1),
                    (b'>', Some(b'=')) => (">=", 2),
                    (b'>', _) => (">", 1),
                    (b'!', Some(b'=')) => ("<>", 2),
                    _ => {
                        return Err(syntax(
                            at,
                            "an operator",
                            "`!` not followed by `=`".to_string(),
                        ));
                    }
                };
                at += len;
                Token::Op(op)
            }
            b'\'' => {
                let (text, end) = string_literal(input, at)?;
                at = end;
                Token::Str(text)
            }
            b'0'..=b'9' | b'.' => {
                let (token, end) = number(input, at)?;
                at = end;
                token
            }
            b'-' if bytes
                .get(at + 1)
                .is_some_and(|next| next.is_ascii_digit() || *next == b'.') =>
            {
                let (token, end) = number(input, at)?;
                at = end;
                token
            }
            _ if byte.is_ascii_alphabetic() || byte == b'_' || byte == b'$' => {
                let end = input[at..]
                    .find(|ch: char| {
                        !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '$' || ch == '.')
                    })
                    .map_or(input.len(), |len| at + len);
                let word = &input[at..end];
                at = end;
                match Keyword::from_word(word) {
                    Some(keyword) => Token::Keyword(keyword),
                    None => Token::Ident(word.to_string()),
                }
            }
            _ => {
                let found = input[at..]
                    .chars()
                    .next()
                    .map_or_else(String::new, |ch| format!("character {ch:?}"));
                return Err(syntax(
                    at,
                    "an identifier, literal, operator or parenthesis",
                    found,
                ));
            }
        };
        tokens.push((start, token));
    }
    tokens.push((input.len(), Token::Eof));
    Ok(tokens)
}

/// A quoted string starting at `start` (the opening quote); returns the text and the byte after
/// the closing quote.
fn string_literal(input: &str, start: usize) -> Result<(String, usize), FilterError> {
    let mut text = String::new();
    let mut chars = input[start + 1..].char_indices().peekable();
    while let Some((offset, ch)) = chars.next() {
        if ch == '\'' {
            if chars.peek().is_some_and(|(_, next)| *next == '\'') {
                chars.next();
                text.push('\'');
                continue;
            }
            return Ok((text, start + 1 + offset + 1));
        }
        text.push(ch);
    }
    Err(syntax(
        input.len(),
        "a closing `'`",
        format!("end of expression (string opened at byte {start})"),
    ))
}

/// A number starting at `start`: an optional minus, digits, an optional fraction and exponent.
/// A trailing `L` (Java long suffix, accepted by RocketMQ) is allowed on integers.
fn number(input: &str, start: usize) -> Result<(Token, usize), FilterError> {
    let bytes = input.as_bytes();
    let mut at = start;
    if bytes.get(at) == Some(&b'-') {
        at += 1;
    }
    let mut is_float = false;
    let mut digits = 0usize;
    while let Some(byte) = bytes.get(at) {
        match byte {
            b'0'..=b'9' => digits += 1,
            b'.' if !is_float => is_float = true,
            _ => break,
        }
        at += 1;
    }
    if digits == 0 {
        return Err(syntax(
            start,
            "a number",
            format!("{:?}", &input[start..at]),
        ));
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        let mut exponent_end = at + 1;
        if matches!(bytes.get(exponent_end), Some(b'+' | b'-')) {
            exponent_end += 1;
        }
        let exponent_digits = bytes[exponent_end.min(bytes.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if exponent_digits == 0 {
            return Err(syntax(
                at,
                "exponent digits",
                format!("{:?}", &input[start..exponent_end.min(input.len())]),
            ));
        }
        at = exponent_end + exponent_digits;
        is_float = true;
    }
    let text = &input[start..at];
    if !is_float && matches!(bytes.get(at), Some(b'L' | b'l')) {
        at += 1;
    }
    if bytes
        .get(at)
        .is_some_and(|byte| byte.is_ascii_alphanumeric() || *byte == b'_')
    {
        return Err(syntax(
            at,
            "an operator or whitespace after a number",
            format!("{:?}", &input[start..=at]),
        ));
    }
    let token = if is_float {
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() => Token::Float(value),
            _ => return Err(syntax(start, "a finite number", format!("{text:?}"))),
        }
    } else {
        match text.parse::<i64>() {
            Ok(value) => Token::Int(value),
            Err(_) => {
                return Err(syntax(
                    start,
                    "an integer within 64 bits",
                    format!("{text:?}"),
                ));
            }
        }
    };
    Ok((token, at))
}
