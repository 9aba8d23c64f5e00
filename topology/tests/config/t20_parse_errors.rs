//! Errors found while parsing: TOML syntax, unknown fields, types, malformed names and endpoints.
//! Each keeps the field path and the TOML line and column.

use meridian_topology::ConfigError;

use crate::support::{THREE_HOSTS_TOML, assert_names_field, edit, unparsable};

/// Line and column of a parse error; panics for any other kind.
fn position(error: &ConfigError) -> (usize, usize) {
    match error {
        ConfigError::Parse {
            line: Some(line),
            column: Some(column),
            ..
        } => (*line, *column),
        other => panic!("expected a positioned parse error, got {other:?}"),
    }
}

/// 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn syntax_error_has_a_position_but_no_field() {
    let text = edit(THREE_HOSTS_TOML, "latency_ms = 38", "latency_ms = = 38");
    let error = unparsable(&text);
    assert_eq!(error.field_path(), None);
    let (line, _) = position(&error);
    assert_eq!(line, line_of(&text, "latency_ms = = 38"));
    assert!(
        error
            .to_string()
            .starts_with(&format!("invalid TOML at line {line}, column ")),
        "{error}"
    );
}

#[test]
fn unknown_region_field_is_refused_with_its_position() {
    let text = edit(
        THREE_HOSTS_TOML,
        "grpc = \"10.20.0.10:8081\"",
        "grcp = \"10.20.0.10:8081\"",
    );
    let error = unparsable(&text);
    assert_names_field(&error, "regions[1].grcp");
    assert!(
        error.to_string().contains("unknown field `grcp`"),
        "{error}"
    );
    assert_eq!(position(&error), (line_of(&text, "grcp ="), 1));
}

#[test]
fn unknown_top_level_section_is_refused() {
    let text = format!("{THREE_HOSTS_TOML}\n[replication]\nwindow = 4\n");
    let error = unparsable(&text);
    assert_names_field(&error, "replication");
    assert!(
        error.to_string().contains("unknown field `replication`"),
        "{error}"
    );
}

#[test]
fn unknown_fields_in_every_section_are_refused() {
    let cases = [
        (
            "region = \"us-east\"",
            "region = \"us-east\"\nrole = \"cell\"",
            "node.role",
        ),
        (
            "latency_ms = 95",
            "latency_ms = 95\njitter_ms = 3",
            "links[2].jitter_ms",
        ),
        (
            "durability = \"sync\"",
            "durability = \"sync\"\nfsync = true",
            "cell.fsync",
        ),
        (
            "election_timeout_min_ms = 1200",
            "election_timeout_min_ms = 1200\nelection_ms = 1",
            "meta.election_ms",
        ),
        (
            "key = \"/etc/meridian/tls/node.key\"",
            "key = \"/etc/meridian/tls/node.key\"\npassword = \"x\"",
            "tls.password",
        ),
        (
            "admin_token = { env = \"MERIDIAN_ADMIN_TOKEN\" }",
            "admin_token = { env = \"MERIDIAN_ADMIN_TOKEN\" }\nadmin_password = \"hunter2\"",
            "auth.admin_password",
        ),
    ];
    for (from, to, path) in cases {
        let error = unparsable(&edit(THREE_HOSTS_TOML, from, to));
        assert_names_field(&error, path);
        position(&error);
    }
}

#[test]
fn invalid_region_name_is_refused_at_its_field() {
    let text = edit(THREE_HOSTS_TOML, "name = \"eu-west\"", "name = \"EU-West\"");
    let error = unparsable(&text);
    assert_names_field(&error, "regions[1].name");
    let message = error.to_string();
    assert!(
        message.contains("invalid region name \"EU-West\""),
        "{message}"
    );
    assert!(message.contains("lowercase letters"), "{message}");
    assert_eq!(position(&error).0, line_of(&text, "EU-West"));
}

#[test]
fn invalid_region_references_are_refused_at_their_field() {
    let error = unparsable(&edit(
        THREE_HOSTS_TOML,
        "region = \"us-east\"",
        "region = \"US\"",
    ));
    assert_names_field(&error, "node.region");
    let error = unparsable(&edit(
        THREE_HOSTS_TOML,
        "to = \"ap-south\"\nlatency_ms = 95",
        "to = \"ap south\"\nlatency_ms = 95",
    ));
    assert_names_field(&error, "links[2].to");
}

#[test]
fn malformed_endpoints_are_refused_at_their_field() {
    let cases = [
        (
            "meta = \"10.20.0.10:9101\"",
            "meta = \"10.20.0.10\"",
            "regions[1].meta",
            "the port is missing",
        ),
        (
            "grpc = \"10.10.0.10:8081\"",
            "grpc = \"10.10.0.10:0\"",
            "regions[0].grpc",
            "port 0",
        ),
        (
            "metrics = \"10.30.0.10:9301\"",
            "metrics = \"0.0.0.0:9301\"",
            "regions[2].metrics",
            "unspecified",
        ),
        (
            "replication = \"10.30.0.10:9201\"",
            "replication = \"10.30.0.10:99999\"",
            "regions[2].replication",
            "1 to 65535",
        ),
    ];
    for (from, to, path, reason) in cases {
        let error = unparsable(&edit(THREE_HOSTS_TOML, from, to));
        assert_names_field(&error, path);
        assert!(error.to_string().contains(reason), "{error}");
    }
}

#[test]
fn negative_and_mistyped_numbers_are_refused() {
    let cases = [
        ("latency_ms = 38", "latency_ms = -38", "links[0].latency_ms"),
        (
            "latency_ms = 38",
            "latency_ms = \"38\"",
            "links[0].latency_ms",
        ),
        (
            "segment_size_bytes = 1073741824",
            "segment_size_bytes = -1",
            "cell.segment_size_bytes",
        ),
        (
            "retention_max_age_s = 604800",
            "retention_max_age_s = 6.5",
            "cell.retention_max_age_s",
        ),
        (
            "election_timeout_min_ms = 1200",
            "election_timeout_min_ms = -1200",
            "meta.election_timeout_min_ms",
        ),
    ];
    for (from, to, path) in cases {
        let error = unparsable(&edit(THREE_HOSTS_TOML, from, to));
        assert_names_field(&error, path);
    }
}

#[test]
fn unknown_enum_values_are_refused() {
    let error = unparsable(&edit(
        THREE_HOSTS_TOML,
        "durability = \"sync\"",
        "durability = \"fsync\"",
    ));
    assert_names_field(&error, "cell.durability");
    assert!(
        error.to_string().contains("`sync`, `async`") || error.to_string().contains("sync"),
        "{error}"
    );

    let error = unparsable(&edit(
        THREE_HOSTS_TOML,
        "roles = [\"combined\"]",
        "roles = [\"cell\", \"broker\"]",
    ));
    assert_names_field(&error, "node.roles[1]");

    let error = unparsable(&edit(
        THREE_HOSTS_TOML,
        "admin_token = { env = \"MERIDIAN_ADMIN_TOKEN\" }",
        "admin_token = { value = \"hunter2\" }",
    ));
    assert_names_field(&error, "auth.admin_token.value");
    assert!(
        error.to_string().contains("expected `env` or `file`"),
        "{error}"
    );

    for both_or_none in ["{ env = \"TOKEN\", file = \"/etc/token\" }", "{}"] {
        let error = unparsable(&edit(
            THREE_HOSTS_TOML,
            "admin_token = { env = \"MERIDIAN_ADMIN_TOKEN\" }",
            &format!("admin_token = {both_or_none}"),
        ));
        assert_names_field(&error, "auth.admin_token");
        assert!(
            error
                .to_string()
                .contains("give exactly one of `env` or `file`"),
            "{error}"
        );
    }
}

#[test]
fn missing_required_fields_are_named() {
    let error = unparsable(&edit(THREE_HOSTS_TOML, "zone = \"eu-west-1b\"\n", ""));
    assert_names_field(&error, "regions[1]");
    assert!(
        error.to_string().contains("missing field `zone`"),
        "{error}"
    );

    let error = unparsable("[cell]\ndurability = \"async\"\n");
    assert!(
        error.to_string().contains("missing field `regions`"),
        "{error}"
    );
}
