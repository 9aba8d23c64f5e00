//! Evaluation of SQL92 filters with SQL's three-valued logic.
//!
//! A missing property, or a property whose text cannot be read as the type it is compared with,
//! makes a test *unknown* (`None`); `NOT unknown` is unknown and only a `Some(true)` result
//! delivers the message. This is what RocketMQ does, and it means `a <> 1` does not select
//! messages that lack `a`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::ast::{CompareOp, Expr, Literal, Operand, StringMatch};

/// The property name under which SQL filters see a message's tag.
pub(super) const TAGS_PROPERTY: &str = "TAGS";

/// A value during evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'a> {
    /// Property text: its type is decided by what it is compared with.
    Text(&'a str),
    Literal(&'a Literal),
}

/// Where property values come from while evaluating against one message.
struct Lookup<'a> {
    tags: &'a str,
    properties: &'a BTreeMap<String, String>,
}

impl<'a> Lookup<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        match self.properties.get(name) {
            Some(value) => Some(value.as_str()),
            None if name == TAGS_PROPERTY && !self.tags.is_empty() => Some(self.tags),
            None => None,
        }
    }
}

/// The result of evaluating `expr` against one message.
pub(super) fn evaluate(
    expr: &Expr,
    tags: &str,
    properties: &BTreeMap<String, String>,
) -> Option<bool> {
    eval(expr, &Lookup { tags, properties })
}

fn eval<'a>(expr: &'a Expr, lookup: &Lookup<'a>) -> Option<bool> {
    match expr {
        Expr::And(left, right) => match (eval(left, lookup), eval(right, lookup)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Expr::Or(left, right) => match (eval(left, lookup), eval(right, lookup)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Expr::Not(inner) => eval(inner, lookup).map(|value| !value),
        Expr::Constant(value) => Some(*value),
        Expr::Compare { left, op, right } => {
            let left = operand(left, lookup)?;
            let right = operand(right, lookup)?;
            compare(&left, *op, &right)
        }
        Expr::Between {
            operand: tested,
            low,
            high,
            negated,
        } => {
            let value = operand(tested, lookup)?;
            let above = compare(&value, CompareOp::Ge, &Value::Literal(low))?;
            let below = compare(&value, CompareOp::Le, &Value::Literal(high))?;
            Some((above && below) != *negated)
        }
        Expr::In {
            operand: tested,
            list,
            negated,
        } => {
            let value = operand(tested, lookup)?;
            let mut unknown = false;
            for candidate in list {
                match compare(&value, CompareOp::Eq, &Value::Literal(candidate)) {
                    Some(true) => return Some(!*negated),
                    Some(false) => {}
                    None => unknown = true,
                }
            }
            if unknown { None } else { Some(*negated) }
        }
        Expr::IsNull { property, negated } => Some(lookup.get(property).is_none() != *negated),
        Expr::StringMatch {
            property,
            kind,
            pattern,
            negated,
        } => {
            let text = lookup.get(property)?;
            let found = match kind {
                StringMatch::Contains => text.contains(pattern.as_str()),
                StringMatch::StartsWith => text.starts_with(pattern.as_str()),
                StringMatch::EndsWith => text.ends_with(pattern.as_str()),
            };
            Some(found != *negated)
        }
    }
}

fn operand<'a>(operand: &'a Operand, lookup: &Lookup<'a>) -> Option<Value<'a>> {
    match operand {
        Operand::Property(name) => lookup.get(name).map(Value::Text),
        Operand::Literal(literal) => Some(Value::Literal(literal)),
    }
}

/// A value read as a number, if it is one.
#[derive(Debug, Clone, Copy)]
enum Number {
    Int(i64),
    Float(f64),
}

fn as_number(value: &Value<'_>) -> Option<Number> {
    match *value {
        Value::Text(text) => {
            let text = text.trim();
            text.parse::<i64>().map(Number::Int).ok().or_else(|| {
                text.parse::<f64>()
                    .ok()
                    .filter(|value| value.is_finite())
                    .map(Number::Float)
            })
        }
        Value::Literal(Literal::Int(value)) => Some(Number::Int(*value)),
        Value::Literal(Literal::Float(value)) => Some(Number::Float(*value)),
        Value::Literal(_) => None,
    }
}

fn as_bool(value: &Value<'_>) -> Option<bool> {
    match *value {
        Value::Text(text) if text.eq_ignore_ascii_case("true") => Some(true),
        Value::Text(text) if text.eq_ignore_ascii_case("false") => Some(false),
        Value::Literal(Literal::Bool(value)) => Some(*value),
        _ => None,
    }
}

fn as_text<'a>(value: &Value<'a>) -> Option<&'a str> {
    match *value {
        Value::Text(text) => Some(text),
        Value::Literal(literal) => match literal {
            Literal::Str(text) => Some(text.as_str()),
            _ => None,
        },
    }
}

fn is_numeric_literal(value: &Value<'_>) -> bool {
    matches!(value, Value::Literal(Literal::Int(_) | Literal::Float(_)))
}

fn is_bool_literal(value: &Value<'_>) -> bool {
    matches!(value, Value::Literal(Literal::Bool(_)))
}

/// Compares two values. The type comes from whichever side is a typed literal: a number literal
/// makes a numeric comparison, a boolean literal a boolean one, otherwise both are text and only
/// `=` and `<>` are defined (ordering strings is unknown, as in RocketMQ).
fn compare(left: &Value<'_>, op: CompareOp, right: &Value<'_>) -> Option<bool> {
    let ordering = if is_numeric_literal(left) || is_numeric_literal(right) {
        compare_numbers(as_number(left)?, as_number(right)?)?
    } else if is_bool_literal(left) || is_bool_literal(right) {
        let (left, right) = (as_bool(left)?, as_bool(right)?);
        if !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return None;
        }
        left.cmp(&right)
    } else {
        let (left, right) = (as_text(left)?, as_text(right)?);
        if !matches!(op, CompareOp::Eq | CompareOp::Ne) {
            return None;
        }
        left.cmp(right)
    };
    Some(match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
    })
}

fn compare_numbers(left: Number, right: Number) -> Option<Ordering> {
    match (left, right) {
        (Number::Int(left), Number::Int(right)) => Some(left.cmp(&right)),
        (Number::Int(left), Number::Float(right)) => (left as f64).partial_cmp(&right),
        (Number::Float(left), Number::Int(right)) => left.partial_cmp(&(right as f64)),
        (Number::Float(left), Number::Float(right)) => left.partial_cmp(&right),
    }
}
