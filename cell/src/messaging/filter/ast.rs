//! The syntax tree of SQL92 filter expressions.

/// A boolean expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Both sides hold.
    And(Box<Expr>, Box<Expr>),
    /// Either side holds.
    Or(Box<Expr>, Box<Expr>),
    /// The inner expression does not hold (unknown stays unknown).
    Not(Box<Expr>),
    /// `TRUE` or `FALSE`.
    Constant(bool),
    /// `left op right`.
    Compare {
        /// Left operand.
        left: Operand,
        /// Operator.
        op: CompareOp,
        /// Right operand.
        right: Operand,
    },
    /// `operand [NOT] BETWEEN low AND high` (inclusive).
    Between {
        /// Tested value.
        operand: Operand,
        /// Lower bound.
        low: Literal,
        /// Upper bound.
        high: Literal,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// `operand [NOT] IN (a, b, ...)`.
    In {
        /// Tested value.
        operand: Operand,
        /// Candidates.
        list: Vec<Literal>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `property IS [NOT] NULL`.
    IsNull {
        /// Property name.
        property: String,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `property [NOT] CONTAINS|STARTSWITH|ENDSWITH 'text'` (RocketMQ 5 extensions).
    StringMatch {
        /// Property name.
        property: String,
        /// Which test.
        kind: StringMatch,
        /// The text looked for.
        pattern: String,
        /// Negated form.
        negated: bool,
    },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `<>` or `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A string test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMatch {
    /// Substring.
    Contains,
    /// Prefix.
    StartsWith,
    /// Suffix.
    EndsWith,
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// A user property (or `TAGS`), looked up per message.
    Property(String),
    /// A constant.
    Literal(Literal),
}

/// A constant value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `'text'` (a doubled quote `''` stands for one quote).
    Str(String),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A decimal or exponent number.
    Float(f64),
    /// `TRUE` or `FALSE`.
    Bool(bool),
}
