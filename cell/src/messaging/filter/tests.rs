//! Filter tests: tag expressions, SQL92 parsing and errors, three-valued evaluation, and a
//! property test that the parser never panics.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn sql(expression: &str) -> Filter {
    Filter::parse(FilterKind::Sql92, expression).unwrap()
}

fn sql_error(expression: &str) -> (usize, String, String) {
    match Filter::parse(FilterKind::Sql92, expression).unwrap_err() {
        FilterError::Syntax {
            position,
            expected,
            found,
            ..
        } => (position, expected, found),
        other => panic!("expected a syntax error for {expression:?}, got {other:?}"),
    }
}

#[test]
fn tag_star_and_empty_match_everything() {
    for expression in ["*", "", "  * "] {
        let filter = Filter::parse(FilterKind::Tag, expression).unwrap();
        assert!(filter.matches("TagA", &BTreeMap::new()));
        assert!(
            filter.matches("", &BTreeMap::new()),
            "untagged messages pass `{expression}`"
        );
    }
}

#[test]
fn tag_alternatives_match_exactly() {
    let filter = Filter::parse(FilterKind::Tag, "TagA || TagB").unwrap();
    assert_eq!(
        filter,
        Filter::Tag(TagFilter::AnyOf(vec!["TagA".into(), "TagB".into()]))
    );
    assert!(filter.matches("TagA", &BTreeMap::new()));
    assert!(filter.matches("TagB", &BTreeMap::new()));
    assert!(!filter.matches("TagC", &BTreeMap::new()));
    assert!(
        !filter.matches("taga", &BTreeMap::new()),
        "tags are case-sensitive"
    );
    assert!(
        !filter.matches("", &BTreeMap::new()),
        "untagged messages do not pass a tag list"
    );
}

#[test]
fn tag_errors_name_the_position() {
    let error = TagFilter::parse("A || || B").unwrap_err();
    assert_eq!(
        error,
        FilterError::Syntax {
            kind: "tag",
            position: 5,
            expected: "a tag".into(),
            found: "an empty alternative".into()
        }
    );
    assert!(matches!(
        TagFilter::parse("A ||").unwrap_err(),
        FilterError::Syntax { position: 4, .. }
    ));
    assert!(matches!(
        TagFilter::parse("A || *").unwrap_err(),
        FilterError::Syntax { position: 5, .. }
    ));
    assert!(matches!(
        TagFilter::parse("A | B").unwrap_err(),
        FilterError::Syntax { position: 2, .. }
    ));
}

#[test]
fn sql_comparisons_on_numbers() {
    let message = props(&[("a", "5"), ("price", "12.5"), ("big", "9007199254740993")]);
    for (expression, expected) in [
        ("a = 5", true),
        ("a <> 5", false),
        ("a != 4", true),
        ("a > 4", true),
        ("a >= 5", true),
        ("a < 5", false),
        ("a <= 5", true),
        ("5 = a", true),
        ("price > 12", true),
        ("price < 12.75", true),
        ("a = 5.0", true),
        ("big = 9007199254740993", true),
        ("big = 9007199254740992", false),
        ("a > -1", true),
        ("a = 5L", true),
        ("a = 5e0", true),
    ] {
        assert_eq!(
            sql(expression).matches("", &message),
            expected,
            "{expression}"
        );
    }
}

#[test]
fn sql_strings_booleans_and_tags() {
    let message = props(&[("region", "eu-west"), ("flag", "TRUE"), ("quote", "it's")]);
    for (expression, expected) in [
        ("region = 'eu-west'", true),
        ("region <> 'eu-west'", false),
        ("region = 'EU-WEST'", false),
        ("region > 'a'", false),
        ("flag = TRUE", true),
        ("flag = false", false),
        ("quote = 'it''s'", true),
        ("TAGS = 'TagA'", true),
        ("TAGS IN ('TagB', 'TagA')", true),
        ("region CONTAINS 'west'", true),
        ("region STARTSWITH 'eu'", true),
        ("region ENDSWITH 'east'", false),
        ("region NOT ENDSWITH 'east'", true),
        ("TRUE", true),
        ("FALSE OR region = 'eu-west'", true),
    ] {
        assert_eq!(
            sql(expression).matches("TagA", &message),
            expected,
            "{expression}"
        );
    }
}

#[test]
fn sql_between_in_and_null() {
    let message = props(&[("a", "3"), ("color", "red")]);
    for (expression, expected) in [
        ("a BETWEEN 1 AND 3", true),
        ("a BETWEEN 4 AND 9", false),
        ("a NOT BETWEEN 4 AND 9", true),
        ("a IN (1, 2, 3)", true),
        ("a NOT IN (1, 2, 3)", false),
        ("color IN ('red', 'blue')", true),
        ("color NOT IN ('red', 'blue')", false),
        ("missing IS NULL", true),
        ("missing IS NOT NULL", false),
        ("color IS NOT NULL", true),
    ] {
        assert_eq!(
            sql(expression).matches("", &message),
            expected,
            "{expression}"
        );
    }
}

#[test]
fn sql_three_valued_logic_on_missing_or_mistyped_properties() {
    let message = props(&[("a", "not-a-number"), ("b", "1")]);
    for (expression, expected) in [
        // Unknown never delivers, and NOT unknown stays unknown.
        ("missing = 1", false),
        ("missing <> 1", false),
        ("NOT (missing = 1)", false),
        ("a > 1", false),
        ("NOT a > 1", false),
        // Unknown OR true is true; unknown AND false is false, so NOT of it is true.
        ("missing = 1 OR b = 1", true),
        ("NOT (missing = 1 AND b = 2)", true),
        ("missing IN (1, 2)", false),
        ("missing BETWEEN 1 AND 2", false),
    ] {
        assert_eq!(
            sql(expression).matches("", &message),
            expected,
            "{expression}"
        );
    }
}

#[test]
fn sql_precedence_and_keywords_are_case_insensitive() {
    // AND binds tighter than OR: true OR (false AND false).
    let message = props(&[("a", "1"), ("b", "2")]);
    assert!(sql("a = 1 or b = 9 and a = 9").matches("", &message));
    assert!(!sql("(a = 1 OR b = 9) AND a = 9").matches("", &message));
    assert!(sql("not a = 2 And B is null").matches("", &message));
}

#[test]
fn sql_parse_errors_give_position_expected_and_found() {
    let (position, expected, found) = sql_error("a = ");
    assert_eq!(position, 4);
    assert!(expected.contains("literal"), "{expected}");
    assert_eq!(found, "end of expression");

    let (position, expected, found) = sql_error("a = 1 b = 2");
    assert_eq!(
        (position, expected.as_str(), found.as_str()),
        (6, "AND, OR or end of expression", "identifier `b`")
    );

    let (position, _, found) = sql_error("(a = 1");
    assert_eq!((position, found.as_str()), (6, "end of expression"));

    let (position, expected, _) = sql_error("a BETWEEN 1 OR 2");
    assert_eq!((position, expected.as_str()), (12, "AND"));

    let (position, expected, _) = sql_error("a IN (1 2)");
    assert_eq!(
        (position, expected.as_str()),
        (8, "`,` or `)` in the IN list")
    );

    let (position, expected, _) = sql_error("a IS 5");
    assert_eq!((position, expected.as_str()), (5, "NULL"));

    let (position, _, found) = sql_error("a = 'open");
    assert_eq!(position, 9);
    assert!(found.contains("string opened at byte 4"), "{found}");

    let (position, _, found) = sql_error("a # 1");
    assert_eq!((position, found.as_str()), (2, "character '#'"));

    let (position, expected, _) = sql_error("a");
    assert_eq!(position, 1);
    assert!(expected.starts_with("a comparison operator"), "{expected}");

    let (_, expected, _) = sql_error("a = 99999999999999999999");
    assert_eq!(expected, "an integer within 64 bits");

    let (position, expected, _) = sql_error("5 IS NULL");
    assert_eq!(
        (position, expected.as_str()),
        (9, "a property name before IS NULL")
    );

    let message = Filter::parse(FilterKind::Sql92, "a = ")
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "invalid SQL92 filter expression at byte 4: expected a property name, literal, `(`, NOT, TRUE or FALSE, found end of expression"
    );
}

#[test]
fn limits_on_length_and_depth() {
    let deep = format!(
        "{}a = 1{}",
        "(".repeat(MAX_FILTER_NESTING_DEPTH + 1),
        ")".repeat(MAX_FILTER_NESTING_DEPTH + 1)
    );
    assert!(matches!(
        Filter::parse(FilterKind::Sql92, &deep),
        Err(FilterError::TooDeep { .. })
    ));
    let fits = format!(
        "{}a = 1{}",
        "(".repeat(MAX_FILTER_NESTING_DEPTH),
        ")".repeat(MAX_FILTER_NESTING_DEPTH)
    );
    assert!(sql(&fits).matches("", &props(&[("a", "1")])));
    let nots = format!("{}a = 1", "NOT ".repeat(MAX_FILTER_NESTING_DEPTH + 1));
    assert!(matches!(
        Filter::parse(FilterKind::Sql92, &nots),
        Err(FilterError::TooDeep { .. })
    ));
    let long = "a".repeat(MAX_FILTER_EXPRESSION_BYTES + 1);
    assert!(matches!(
        Filter::parse(FilterKind::Tag, &long),
        Err(FilterError::TooLong { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_arbitrary_text(input in "\\PC{0,80}") {
        let _ = Filter::parse(FilterKind::Sql92, &input);
        let _ = Filter::parse(FilterKind::Tag, &input);
    }

    #[test]
    fn parser_never_panics_on_token_soup(
        tokens in proptest::collection::vec(
            proptest::sample::select(vec![
                "a", "b", "TAGS", "=", "<>", "<", ">=", "!", "(", ")", ",", "'x'", "'", "1", "-2.5", "1e", ".",
                "AND", "OR", "NOT", "BETWEEN", "IN", "IS", "NULL", "TRUE", "FALSE", "CONTAINS", "é", "5L",
            ]),
            0..24,
        )
    ) {
        let input = tokens.join(" ");
        if let Ok(filter) = Filter::parse(FilterKind::Sql92, &input) {
            // Whatever parses must evaluate without panicking.
            let _ = filter.matches("TagA", &props(&[("a", "1"), ("b", "x")]));
        }
    }
}
