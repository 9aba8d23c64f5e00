//! Feeds arbitrary text to the tag and SQL92 filter parsers, as a consumer's subscription
//! could: a filter or an error, never a panic, a stack overflow or unbounded work; a parsed
//! filter evaluates against a message without panicking.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use meridian_cell::messaging::{Filter, FilterKind};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let properties = BTreeMap::from([
        ("a".to_string(), "1".to_string()),
        ("region".to_string(), "eu".to_string()),
        ("TAGS".to_string(), "TagA".to_string()),
    ]);
    for kind in [FilterKind::Tag, FilterKind::Sql92] {
        if let Ok(filter) = Filter::parse(kind, text) {
            let _ = filter.matches("TagA", &properties);
        }
    }
});
