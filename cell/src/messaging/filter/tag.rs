//! Tag expressions: `*` (everything) or tags joined by `||`.

use super::FilterError;

/// A parsed tag expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFilter {
    /// `*` or an empty expression: every message, tagged or not.
    All,
    /// Messages whose tag is one of these (compared exactly, case-sensitive).
    AnyOf(Vec<String>),
}

impl TagFilter {
    /// Parses `*`, `TagA`, or `TagA || TagB || ...`. Whitespace around tags is ignored; an empty
    /// alternative (`A || || B`, a trailing `||`) is refused because it usually hides a typo.
    pub fn parse(expression: &str) -> Result<Self, FilterError> {
        let trimmed = expression.trim();
        if trimmed.is_empty() || trimmed == "*" {
            return Ok(TagFilter::All);
        }
        let mut tags = Vec::new();
        let mut start = 0usize;
        for part in expression.split("||") {
            let tag = part.trim();
            let leading = part.len() - part.trim_start().len();
            if tag.is_empty() {
                return Err(syntax(start + leading, "a tag", "an empty alternative"));
            }
            if tag == "*" {
                return Err(syntax(
                    start + leading,
                    "a tag",
                    "`*` combined with other tags",
                ));
            }
            if let Some(bad) = tag
                .char_indices()
                .find(|(_, ch)| ch.is_control() || *ch == '|')
            {
                return Err(syntax(
                    start + leading + bad.0,
                    "a tag character",
                    &format!("{:?}", bad.1),
                ));
            }
            if !tags.iter().any(|known: &String| known == tag) {
                tags.push(tag.to_string());
            }
            start += part.len() + 2;
        }
        Ok(TagFilter::AnyOf(tags))
    }

    /// Whether a message with this tag (empty for none) passes.
    pub fn matches(&self, tag: &str) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::AnyOf(tags) => !tag.is_empty() && tags.iter().any(|wanted| wanted == tag),
        }
    }
}

fn syntax(position: usize, expected: &str, found: &str) -> FilterError {
    FilterError::Syntax {
        kind: "tag",
        position,
        expected: expected.to_string(),
        found: found.to_string(),
    }
}
