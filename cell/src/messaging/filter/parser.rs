//! Recursive-descent parser of SQL92 filter expressions.
//!
//! Grammar (keywords case-insensitive):
//!
//! ```text
//! expr      := and ( OR and )*
//! and       := unary ( AND unary )*
//! unary     := NOT unary | primary
//! primary   := '(' expr ')' | TRUE | FALSE | operand predicate
//! predicate := cmp_op operand
//!            | [NOT] BETWEEN literal AND literal
//!            | [NOT] IN '(' literal ( ',' literal )* ')'
//!            | [NOT] (CONTAINS | STARTSWITH | ENDSWITH) string
//!            | IS [NOT] NULL
//! operand   := identifier | literal
//! ```

use super::ast::{CompareOp, Expr, Literal, Operand, StringMatch};
use super::lexer::{Keyword, Token, tokenize};
use super::{FilterError, MAX_FILTER_NESTING_DEPTH};

/// Parses a whole expression.
pub(super) fn parse(input: &str) -> Result<Expr, FilterError> {
    let tokens = tokenize(input)?;
    let mut parser = Parser {
        tokens,
        at: 0,
        depth: 0,
    };
    let expr = parser.expr()?;
    parser.expect_eof()?;
    Ok(expr)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens
            .get(self.at)
            .map_or(&Token::Eof, |(_, token)| token)
    }

    fn position(&self) -> usize {
        self.tokens
            .get(self.at)
            .or(self.tokens.last())
            .map_or(0, |(position, _)| *position)
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if self.at < self.tokens.len() {
            self.at += 1;
        }
        token
    }

    fn error(&self, expected: &str) -> FilterError {
        FilterError::Syntax {
            kind: "SQL92",
            position: self.position(),
            expected: expected.to_string(),
            found: self.peek().describe(),
        }
    }

    fn eat_keyword(&mut self, keyword: Keyword) -> bool {
        if *self.peek() == Token::Keyword(keyword) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, keyword: Keyword) -> Result<(), FilterError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(self.error(keyword.name()))
        }
    }

    fn expect_eof(&self) -> Result<(), FilterError> {
        if *self.peek() == Token::Eof {
            Ok(())
        } else {
            Err(self.error("AND, OR or end of expression"))
        }
    }

    /// Counts one level of nesting, refusing input nested beyond the limit.
    fn enter(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_FILTER_NESTING_DEPTH {
            return Err(FilterError::TooDeep {
                position: self.position(),
                max_depth: MAX_FILTER_NESTING_DEPTH,
            });
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.eat_keyword(Keyword::Or) {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.eat_keyword(Keyword::And) {
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.eat_keyword(Keyword::Not) {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        match self.peek() {
            Token::LParen => {
                self.enter()?;
                self.at += 1;
                let inner = self.expr()?;
                if *self.peek() != Token::RParen {
                    return Err(self.error("`)`"));
                }
                self.at += 1;
                self.depth -= 1;
                Ok(inner)
            }
            Token::Keyword(Keyword::True) | Token::Keyword(Keyword::False)
                if !self.next_is_comparison_operator() =>
            {
                let value = self.advance() == Token::Keyword(Keyword::True);
                Ok(Expr::Constant(value))
            }
            _ => {
                let operand = self.operand()?;
                self.predicate(operand)
            }
        }
    }

    fn next_is_comparison_operator(&self) -> bool {
        matches!(self.tokens.get(self.at + 1), Some((_, Token::Op(_))))
    }

    fn operand(&mut self) -> Result<Operand, FilterError> {
        match self.peek() {
            Token::Ident(_) => match self.advance() {
                Token::Ident(name) => Ok(Operand::Property(name)),
                _ => Err(self.error("an identifier")),
            },
            _ => Ok(Operand::Literal(
                self.literal("a property name, literal, `(`, NOT, TRUE or FALSE")?,
            )),
        }
    }

    fn literal(&mut self, expected: &str) -> Result<Literal, FilterError> {
        let literal = match self.peek() {
            Token::Str(text) => Literal::Str(text.clone()),
            Token::Int(value) => Literal::Int(*value),
            Token::Float(value) => Literal::Float(*value),
            Token::Keyword(Keyword::True) => Literal::Bool(true),
            Token::Keyword(Keyword::False) => Literal::Bool(false),
            _ => return Err(self.error(expected)),
        };
        self.at += 1;
        Ok(literal)
    }

    fn predicate(&mut self, operand: Operand) -> Result<Expr, FilterError> {
        if let Token::Op(op) = self.peek() {
            let op = match *op {
                "=" => CompareOp::Eq,
                "<>" => CompareOp::Ne,
                "<" => CompareOp::Lt,
                "<=" => CompareOp::Le,
                ">" => CompareOp::Gt,
                _ => CompareOp::Ge,
            };
            self.at += 1;
            let right = self.operand()?;
            return Ok(Expr::Compare {
                left: operand,
                op,
                right,
            });
        }
        if self.eat_keyword(Keyword::Is) {
            let negated = self.eat_keyword(Keyword::Not);
            self.expect_keyword(Keyword::Null)?;
            let property = self.property_of(operand, "IS NULL")?;
            return Ok(Expr::IsNull { property, negated });
        }
        let negated = self.eat_keyword(Keyword::Not);
        match self.peek() {
            Token::Keyword(Keyword::Between) => {
                self.at += 1;
                let low = self.literal("the lower bound of BETWEEN")?;
                self.expect_keyword(Keyword::And)?;
                let high = self.literal("the upper bound of BETWEEN")?;
                Ok(Expr::Between {
                    operand,
                    low,
                    high,
                    negated,
                })
            }
            Token::Keyword(Keyword::In) => {
                self.at += 1;
                if *self.peek() != Token::LParen {
                    return Err(self.error("`(` after IN"));
                }
                self.at += 1;
                let mut list = vec![self.literal("a literal in the IN list")?];
                while *self.peek() == Token::Comma {
                    self.at += 1;
                    list.push(self.literal("a literal in the IN list")?);
                }
                if *self.peek() != Token::RParen {
                    return Err(self.error("`,` or `)` in the IN list"));
                }
                self.at += 1;
                Ok(Expr::In {
                    operand,
                    list,
                    negated,
                })
            }
            Token::Keyword(
                keyword @ (Keyword::Contains | Keyword::StartsWith | Keyword::EndsWith),
            ) => {
                let kind = match keyword {
                    Keyword::Contains => StringMatch::Contains,
                    Keyword::StartsWith => StringMatch::StartsWith,
                    _ => StringMatch::EndsWith,
                };
                let name = keyword.name();
                self.at += 1;
                let pattern = match self.literal(&format!("a string after {name}"))? {
                    Literal::Str(text) => text,
                    _ => {
                        self.at -= 1;
                        return Err(self.error(&format!("a string after {name}")));
                    }
                };
                let property = self.property_of(operand, name)?;
                Ok(Expr::StringMatch {
                    property,
                    kind,
                    pattern,
                    negated,
                })
            }
            _ if negated => {
                Err(self.error("BETWEEN, IN, CONTAINS, STARTSWITH or ENDSWITH after NOT"))
            }
            _ => Err(self
                .error("a comparison operator, IS, BETWEEN, IN, CONTAINS, STARTSWITH or ENDSWITH")),
        }
    }

    /// The property a test applies to; these tests make no sense on a literal.
    fn property_of(&self, operand: Operand, test: &str) -> Result<String, FilterError> {
        match operand {
            Operand::Property(name) => Ok(name),
            Operand::Literal(_) => Err(FilterError::Syntax {
                kind: "SQL92",
                position: self.position(),
                expected: format!("a property name before {test}"),
                found: "a literal".to_string(),
            }),
        }
    }
}
