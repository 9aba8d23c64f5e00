//! Consumer-side message filters: RocketMQ tag expressions and the SQL92 subset over properties.
//!
//! A filter decides whether one message is delivered to one consumer group; a message that does
//! not match is skipped for that group only. Parsing happens once, when a subscription is made,
//! so that a bad expression is refused with a precise error instead of silently matching nothing.
//! Everything here is pure: no storage, no clock.

mod ast;
mod eval;
mod lexer;
mod parser;
mod tag;

use std::collections::BTreeMap;

pub use ast::{CompareOp, Expr, Literal, Operand, StringMatch};
pub use tag::TagFilter;

/// The longest filter expression accepted, in bytes. Long expressions are almost always generated
/// by mistake and cost CPU on every message.
pub const MAX_FILTER_EXPRESSION_BYTES: usize = 16 * 1024;
/// The deepest nesting of parentheses and `NOT`s the SQL parser follows; deeper input is refused
/// so that a hostile expression cannot overflow the parser's stack.
pub const MAX_FILTER_NESTING_DEPTH: usize = 64;

/// An expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The expression is not valid; `position` is the byte offset of the offending token.
    #[error(
        "invalid {kind} filter expression at byte {position}: expected {expected}, found {found}"
    )]
    Syntax {
        /// `tag` or `SQL92`.
        kind: &'static str,
        /// Byte offset into the expression.
        position: usize,
        /// What the parser could have accepted there.
        expected: String,
        /// What it found instead.
        found: String,
    },
    /// The expression is longer than [`MAX_FILTER_EXPRESSION_BYTES`].
    #[error("filter expression is {len_bytes} bytes; at most {max_bytes} bytes are allowed")]
    TooLong {
        /// Its length.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// Parentheses or `NOT`s nest deeper than [`MAX_FILTER_NESTING_DEPTH`].
    #[error("filter expression nests deeper than {max_depth} levels at byte {position}")]
    TooDeep {
        /// Byte offset where the limit was hit.
        position: usize,
        /// The limit.
        max_depth: usize,
    },
}

/// The expression language a subscription uses, as RocketMQ names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    /// `*` or `TagA || TagB`.
    Tag,
    /// SQL92 conditions over user properties.
    Sql92,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Tag expression.
    Tag(TagFilter),
    /// SQL92 expression.
    Sql(Expr),
}

impl Filter {
    /// A filter that matches every message.
    pub fn all() -> Self {
        Filter::Tag(TagFilter::All)
    }

    /// Parses an expression of the given kind.
    pub fn parse(kind: FilterKind, expression: &str) -> Result<Self, FilterError> {
        if expression.len() > MAX_FILTER_EXPRESSION_BYTES {
            return Err(FilterError::TooLong {
                len_bytes: expression.len(),
                max_bytes: MAX_FILTER_EXPRESSION_BYTES,
            });
        }
        match kind {
            FilterKind::Tag => Ok(Filter::Tag(TagFilter::parse(expression)?)),
            FilterKind::Sql92 => Ok(Filter::Sql(parser::parse(expression)?)),
        }
    }

    /// Whether a message with these tags and properties passes. In SQL, the message's tag is
    /// visible as the property `TAGS` unless the message sets a property of that name itself.
    pub fn matches(&self, tags: &str, properties: &BTreeMap<String, String>) -> bool {
        match self {
            Filter::Tag(filter) => filter.matches(tags),
            Filter::Sql(expr) => eval::evaluate(expr, tags, properties) == Some(true),
        }
    }
}

#[cfg(test)]
mod tests;
