//! Selective replication, sans IO: which records of the origin log a link ships to its
//! destination (data residency: a topic's records that do not match the destination's filter
//! stay home).
//!
//! A filter is per destination and per topic: a tag expression or a SQL92 expression, parsed
//! and evaluated by the cell's own filter code (`meridian_cell::messaging::Filter`) so that
//! replication and subscriptions agree on what an expression means. Topics without a filter
//! ship everything.
//!
//! **System and dead-letter topics always ship**: consumer state (acknowledgements, offsets)
//! travels as records of `%SYS%` topics and dead letters as records of `%DLQ%` topics, and a
//! destination that misses them would redeliver or lose track of what was consumed. The one
//! exception is a system record that wraps a user message (a pending delay message or a
//! transaction's half message, which carry their real topic in a property): it is judged by the
//! filter of its real topic, otherwise a delay message would carry a filtered message abroad.
//!
//! Skipping records leaves gaps in the origin positions a destination receives. The link copes
//! by construction: a batch covers a position range `[start, end)` whatever it carries (the
//! relay rule skips records the same way), the receiver checks only that batches are
//! contiguous, and range digests on both sides count only records the filter ships (the origin
//! applies [`DestinationFilter::ships`] to its side of the comparison). Changing a destination's
//! filter therefore changes the digest of ranges replicated under the old one; the verification
//! loop would report them, which is why a filter change should start from a fresh
//! "verified up to" (not automated in this version).

use std::collections::{BTreeMap, HashMap};

use meridian_cell::messaging::names::{DLQ_TOPIC_PREFIX, SYSTEM_TOPIC_PREFIX};
use meridian_cell::messaging::{Filter, FilterError, FilterKind};
use meridian_cell::storage::Record;

/// The property in which the cell keeps the real topic of a message parked in a system topic
/// (`%SYS%TIMER`, `%SYS%HALF`). Must equal `PROP_REAL_TOPIC` in `cell::messaging::message`
/// (crate-private there); `a_delay_message_is_judged_by_its_real_topic` pins the behaviour.
pub const REAL_TOPIC_PROPERTY: &str = "__MERIDIAN_REAL_TOPIC";

/// One topic's filter towards one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicFilter {
    /// The topic.
    pub topic: String,
    /// What of it ships.
    pub filter: Filter,
}

impl TopicFilter {
    /// Parses `expression` as a tag (`TagA || TagB`, `*`) or SQL92 expression for `topic`.
    pub fn parse(
        topic: impl Into<String>,
        kind: FilterKind,
        expression: &str,
    ) -> Result<Self, FilterError> {
        Ok(TopicFilter {
            topic: topic.into(),
            filter: Filter::parse(kind, expression)?,
        })
    }
}

/// Everything a link to one destination ships: one optional filter per topic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DestinationFilter {
    by_topic: HashMap<String, Filter>,
}

impl DestinationFilter {
    /// Ships everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// From per-topic filters; a later filter of the same topic replaces an earlier one.
    pub fn new(filters: impl IntoIterator<Item = TopicFilter>) -> Self {
        DestinationFilter {
            by_topic: filters
                .into_iter()
                .map(|filter| (filter.topic, filter.filter))
                .collect(),
        }
    }

    /// Whether no topic is filtered.
    pub fn is_all(&self) -> bool {
        self.by_topic.is_empty()
    }

    /// Whether a record of `topic` with these tags and properties goes to the destination.
    pub fn ships_message(
        &self,
        topic: &str,
        tags: &str,
        properties: &BTreeMap<String, String>,
    ) -> bool {
        if self.by_topic.is_empty() {
            return true;
        }
        let topic = if topic.starts_with(SYSTEM_TOPIC_PREFIX) || topic.starts_with(DLQ_TOPIC_PREFIX)
        {
            match properties.get(REAL_TOPIC_PROPERTY) {
                Some(real) => real.as_str(),
                None => return true,
            }
        } else {
            topic
        };
        self.by_topic
            .get(topic)
            .is_none_or(|filter| filter.matches(tags, properties))
    }

    /// Whether `record` goes to the destination.
    pub fn ships(&self, record: &Record) -> bool {
        self.ships_message(&record.topic, &record.tags, &record.properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn filter() -> DestinationFilter {
        DestinationFilter::new([
            TopicFilter::parse("orders", FilterKind::Tag, "eu || shared").expect("tag filter"),
            TopicFilter::parse("payments", FilterKind::Sql92, "amount > 100").expect("sql filter"),
        ])
    }

    #[test]
    fn tag_and_sql_filters_decide_per_topic() {
        let filter = filter();
        let none = props(&[]);
        assert!(filter.ships_message("orders", "eu", &none));
        assert!(filter.ships_message("orders", "shared", &none));
        assert!(!filter.ships_message("orders", "us", &none));
        assert!(!filter.ships_message("orders", "", &none));
        assert!(filter.ships_message("payments", "", &props(&[("amount", "250")])));
        assert!(!filter.ships_message("payments", "", &props(&[("amount", "50")])));
        // A missing property makes the SQL condition unknown, which does not match.
        assert!(!filter.ships_message("payments", "", &none));
        // Topics without a filter ship everything.
        assert!(filter.ships_message("audit", "anything", &none));
        assert!(DestinationFilter::all().ships_message("orders", "us", &none));
    }

    #[test]
    fn system_and_dead_letter_topics_always_ship() {
        let filter = DestinationFilter::new([
            TopicFilter::parse("%SYS%ACK", FilterKind::Tag, "never").expect("tag filter"),
            TopicFilter::parse("%DLQ%group", FilterKind::Tag, "never").expect("tag filter"),
            TopicFilter::parse("orders", FilterKind::Tag, "eu").expect("tag filter"),
        ]);
        let none = props(&[]);
        assert!(filter.ships_message("%SYS%ACK", "us", &none));
        assert!(filter.ships_message("%DLQ%group", "us", &none));
        assert!(filter.ships_message("%SYS%OFFSETS", "", &none));
    }

    #[test]
    fn a_delay_message_is_judged_by_its_real_topic() {
        let filter = filter();
        let parked = |tags| {
            filter.ships_message(
                "%SYS%TIMER",
                tags,
                &props(&[(REAL_TOPIC_PROPERTY, "orders")]),
            )
        };
        assert!(parked("eu"));
        assert!(!parked("us"));
    }
}
