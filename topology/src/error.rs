//! `ConfigError`: every way a fabric configuration can be unreadable or invalid.
//!
//! Each message starts with the path of the offending field (`regions[1].name`, `links[0].to`,
//! `cell.segment_size_bytes`) and ends with what to do about it, so an operator can fix the file from the
//! message alone.

use std::fmt;
use std::path::PathBuf;

use crate::region::RegionName;

/// A fabric configuration that could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not valid TOML or does not fit the configuration schema: a syntax error, an unknown
    /// field (they are refused, to catch typos), a wrong type, a missing field, or a malformed region
    /// name or endpoint.
    #[error("{}", parse_message(path, *line, *column, message))]
    Parse {
        /// Field path, e.g. `regions[0].grpc`; empty when the error is in the TOML syntax itself.
        path: String,
        /// 1-based line in the TOML text, when the parser reported a position.
        line: Option<usize>,
        /// 1-based column (in characters) in the TOML text, when the parser reported a position.
        column: Option<usize>,
        /// The parser's message, without position.
        message: String,
        /// The TOML parser's error (boxed: it is large and errors are rare).
        #[source]
        source: Box<toml::de::Error>,
    },

    /// The configuration could not be written as TOML.
    #[error("cannot write configuration as TOML: {source}")]
    Serialize {
        /// The TOML writer's error.
        #[source]
        source: toml::ser::Error,
    },

    /// A required list is empty or a list is longer than its limit.
    #[error("{path}: {count} entries; {fix}")]
    Count {
        /// Field path of the list.
        path: String,
        /// How many entries it has.
        count: usize,
        /// What is allowed.
        fix: String,
    },

    /// Two regions have the same name.
    #[error("{path}: duplicate region \"{name}\" (also {first_path}); region names must be unique")]
    DuplicateRegion {
        /// Field path of the second occurrence.
        path: String,
        /// The repeated name.
        name: RegionName,
        /// Field path of the first occurrence.
        first_path: String,
    },

    /// A field names a region that is not in `regions`.
    #[error("{path}: unknown region \"{name}\"; known regions: {}", join(known))]
    UnknownRegion {
        /// Field path of the reference.
        path: String,
        /// The name that was not found.
        name: RegionName,
        /// The configured regions, in file order.
        known: Vec<RegionName>,
    },

    /// A text field is empty or malformed (zone, path, environment variable name).
    #[error("{path}: invalid value {value:?}: {fix}")]
    InvalidText {
        /// Field path.
        path: String,
        /// The rejected value.
        value: String,
        /// The rule it breaks and what to write instead.
        fix: &'static str,
    },

    /// Two endpoints in the fabric use the same `host:port`.
    #[error(
        "{path}: {endpoint} is already used by {other_path}; every endpoint needs its own host:port"
    )]
    EndpointClash {
        /// Field path of the later endpoint.
        path: String,
        /// The shared address.
        endpoint: String,
        /// Field path of the earlier endpoint.
        other_path: String,
    },

    /// Two regions on the same machine share a data directory.
    #[error(
        "{path}: data directory {} is already used by {other_path} on the same host; give each region its own data_dir",
        dir.display()
    )]
    DataDirClash {
        /// Field path of the later directory.
        path: String,
        /// The shared directory.
        dir: PathBuf,
        /// Field path of the earlier directory.
        other_path: String,
    },

    /// A link joins a region to itself.
    #[error(
        "{path}: link from \"{region}\" to itself; a link joins two different regions (latency within a region is taken as 0)"
    )]
    SelfLink {
        /// Field path of the link's `to`.
        path: String,
        /// The region named on both ends.
        region: RegionName,
    },

    /// Two links join the same pair of regions.
    #[error(
        "{path}: second link between \"{a}\" and \"{b}\" (first is {first_path}); keep one and use reverse_latency_ms for an asymmetric pair"
    )]
    DuplicateLink {
        /// Field path of the second link.
        path: String,
        /// One end.
        a: RegionName,
        /// The other end.
        b: RegionName,
        /// Field path of the first link.
        first_path: String,
    },

    /// A pair of regions has no link, so nearest-region routing could not rank it.
    #[error(
        "{path}: no latency between \"{a}\" and \"{b}\"; add a [[links]] entry with from = \"{a}\", to = \"{b}\" and latency_ms = <one-way ms>"
    )]
    MissingLink {
        /// Always `links`.
        path: String,
        /// One end.
        a: RegionName,
        /// The other end.
        b: RegionName,
    },

    /// A number is outside its allowed range.
    #[error("{path}: {value} {unit} is out of range; use {min}..={max} {unit}")]
    OutOfRange {
        /// Field path.
        path: String,
        /// The rejected value.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
        /// Unit of all three numbers (`ms`, `bytes`, ...).
        unit: &'static str,
    },

    /// A number is in range on its own but breaks a rule relating it to another value.
    #[error("{path}: {value} {unit} must be {relation} {bound} {unit} ({bound_from}); {why}")]
    Relation {
        /// Field path.
        path: String,
        /// The value of the field (possibly derived, see `bound_from` of the message).
        value: u64,
        /// `at least`, `greater than`, `at most`.
        relation: &'static str,
        /// The bound it must respect.
        bound: u64,
        /// Where the bound comes from, e.g. `2 x meta.heartbeat_interval_ms`.
        bound_from: String,
        /// Unit of value and bound.
        unit: &'static str,
        /// Why the rule exists, and what to change.
        why: &'static str,
    },

    /// The node roles list is empty, repeats a role, or mixes `combined` with other roles.
    #[error(
        "{path}: {problem}; list any of \"meta\", \"cell\", \"router\", or just \"combined\" for all three"
    )]
    Roles {
        /// Field path of the list or the offending entry.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

impl ConfigError {
    /// The path of the field the error is about (`regions[1].name`), if it is about one field; `None` for
    /// a failure to write TOML and for TOML syntax errors.
    pub fn field_path(&self) -> Option<&str> {
        match self {
            Self::Serialize { .. } => None,
            Self::Parse { path, .. } if path.is_empty() => None,
            Self::Parse { path, .. }
            | Self::Count { path, .. }
            | Self::DuplicateRegion { path, .. }
            | Self::UnknownRegion { path, .. }
            | Self::InvalidText { path, .. }
            | Self::EndpointClash { path, .. }
            | Self::DataDirClash { path, .. }
            | Self::SelfLink { path, .. }
            | Self::DuplicateLink { path, .. }
            | Self::MissingLink { path, .. }
            | Self::OutOfRange { path, .. }
            | Self::Relation { path, .. }
            | Self::Roles { path, .. } => Some(path),
        }
    }

    /// Wraps a TOML error with the field path tracked during deserialization and the position computed
    /// from the error's byte span in `text`.
    pub(crate) fn from_toml(text: &str, path: String, source: toml::de::Error) -> Self {
        // An empty serde path prints as "."; keep it empty so the message does not start with a dot.
        let path = if path == "." { String::new() } else { path };
        let (line, column) = match source.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        Self::Parse {
            path,
            line,
            column,
            message: source.message().trim_end().to_owned(),
            source: Box::new(source),
        }
    }
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    // Back off to a character boundary so slicing cannot panic on a span inside a multi-byte char.
    let offset = (0..=offset)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn parse_message(path: &str, line: Option<usize>, column: Option<usize>, message: &str) -> String {
    let position = match (line, column) {
        (Some(line), Some(column)) => format!("line {line}, column {column}"),
        _ => String::new(),
    };
    match (path.is_empty(), position.is_empty()) {
        (true, true) => format!("invalid TOML: {message}"),
        (true, false) => format!("invalid TOML at {position}: {message}"),
        (false, true) => format!("{path}: {message}"),
        (false, false) => format!("{path}: {message} (TOML {position})"),
    }
}

fn join(names: &[RegionName]) -> Join<'_> {
    Join(names)
}

/// Displays region names comma-separated without allocating a joined string up front.
struct Join<'a>(&'a [RegionName]);

impl fmt::Display for Join<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        for (index, name) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn line_column_counts_from_one_in_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'é' is two bytes; the '=' after "bé " is the 4th character of line 2.
        assert_eq!(line_column(text, 10), (2, 4));
        // Inside the multi-byte character: backs off to its start.
        assert_eq!(line_column(text, 8), (2, 2));
        assert_eq!(line_column(text, 999), (3, 1));
    }
}
