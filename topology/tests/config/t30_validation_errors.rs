//! Every validation rule, broken one at a time on an otherwise valid configuration. Each test checks the
//! error kind, that the message starts with the exact field path, and that it says what to do.

use std::path::PathBuf;

use meridian_topology::{
    ConfigError, Endpoint, LinkConfig, MetaConfig, RegionName, Role, SecretRef, limits,
};

use crate::support::{assert_names_field, dev, invalid, three_hosts};

fn name(s: &str) -> RegionName {
    RegionName::new(s).unwrap()
}

fn endpoint(s: &str) -> Endpoint {
    s.parse().unwrap()
}

#[test]
fn duplicate_region_names_the_second_occurrence() {
    let mut config = dev();
    config.regions[2].name = name("eu-west");
    let error = invalid(config);
    assert!(
        matches!(error, ConfigError::DuplicateRegion { .. }),
        "{error:?}"
    );
    assert_names_field(&error, "regions[2].name");
    assert_eq!(
        error.to_string(),
        "regions[2].name: duplicate region \"eu-west\" (also regions[1].name); region names must be unique"
    );
}

#[test]
fn unknown_link_region_lists_the_known_ones() {
    let mut config = dev();
    config.links[0].to = name("eu-wset");
    let error = invalid(config);
    assert!(
        matches!(error, ConfigError::UnknownRegion { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "links[0].to: unknown region \"eu-wset\"; known regions: us-east, eu-west, ap-south"
    );

    let mut config = dev();
    config.links[2].from = name("us-west");
    assert_names_field(&invalid(config), "links[2].from");
}

#[test]
fn unknown_node_region_is_refused() {
    let mut config = three_hosts();
    config.node.as_mut().unwrap().region = name("eu-central");
    let error = invalid(config);
    assert!(
        matches!(error, ConfigError::UnknownRegion { .. }),
        "{error:?}"
    );
    assert_names_field(&error, "node.region");
    assert!(
        error
            .to_string()
            .contains("known regions: us-east, eu-west, ap-south"),
        "{error}"
    );
}

#[test]
fn region_count_must_be_in_range() {
    let mut config = dev();
    config.regions.clear();
    config.links.clear();
    let error = invalid(config);
    assert!(
        matches!(error, ConfigError::Count { count: 0, .. }),
        "{error:?}"
    );
    assert_names_field(&error, "regions");
    assert!(
        error
            .to_string()
            .contains("configure 1 to 16 [[regions]] tables"),
        "{error}"
    );

    let mut config = dev();
    let template = config.regions[0].clone();
    config.regions.clear();
    for i in 0..=limits::REGIONS_MAX {
        let mut region = template.clone();
        region.name = name(&format!("r{i}"));
        region.grpc = endpoint(&format!("10.0.{i}.1:8081"));
        region.meta = endpoint(&format!("10.0.{i}.1:9101"));
        region.replication = endpoint(&format!("10.0.{i}.1:9201"));
        region.metrics = endpoint(&format!("10.0.{i}.1:9301"));
        config.regions.push(region);
    }
    let error = invalid(config);
    assert!(
        matches!(error, ConfigError::Count { count: 17, .. }),
        "{error:?}"
    );
    assert_names_field(&error, "regions");
}

#[test]
fn zone_must_be_a_plain_label() {
    for bad in ["", "us east 1a", "zone/1", &"z".repeat(65)] {
        let mut config = dev();
        config.regions[2].zone = bad.to_owned();
        let error = invalid(config);
        assert!(
            matches!(error, ConfigError::InvalidText { .. }),
            "{error:?}"
        );
        assert_names_field(&error, "regions[2].zone");
        assert!(error.to_string().contains("e.g. \"us-east-1a\""), "{error}");
    }
}

#[test]
fn endpoint_clash_between_regions_names_both_fields() {
    let mut config = dev();
    config.regions[1].meta = config.regions[0].grpc.clone();
    let error = invalid(config);
    assert!(
        matches!(error, ConfigError::EndpointClash { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "regions[1].meta: 127.0.0.1:8081 is already used by regions[0].grpc; every endpoint needs its own host:port"
    );
}

#[test]
fn endpoint_clash_within_a_region_and_across_protocols_is_refused() {
    let mut config = three_hosts();
    // The replication endpoint is UDP and metrics TCP, but one host:port per endpoint keeps firewall
    // rules and dashboards unambiguous.
    config.regions[2].metrics = config.regions[2].replication.clone();
    let error = invalid(config);
    assert_names_field(&error, "regions[2].metrics");
    assert!(
        error.to_string().contains("regions[2].replication"),
        "{error}"
    );

    // Host names compare case-insensitively.
    let mut config = three_hosts();
    config.regions[0].grpc = endpoint("Cell.Example:8081");
    config.regions[1].grpc = endpoint("cell.example:8081");
    assert_names_field(&invalid(config), "regions[1].grpc");
}

#[test]
fn same_port_on_different_hosts_is_fine() {
    // The three-host example uses 8081 etc. on every host.
    three_hosts().validate().unwrap();
}

#[test]
fn data_dir_clash_on_one_machine_is_refused() {
    let mut config = dev();
    config.regions[2].data_dir = config.regions[0].data_dir.clone();
    let error = invalid(config);
    assert!(
        matches!(error, ConfigError::DataDirClash { .. }),
        "{error:?}"
    );
    assert_names_field(&error, "regions[2].data_dir");
    assert!(error.to_string().contains("regions[0].data_dir"), "{error}");
    assert!(
        error
            .to_string()
            .contains("give each region its own data_dir"),
        "{error}"
    );

    let mut config = dev();
    config.regions[1].data_dir = Some(PathBuf::new());
    let error = invalid(config);
    assert!(
        matches!(error, ConfigError::InvalidText { .. }),
        "{error:?}"
    );
    assert_names_field(&error, "regions[1].data_dir");
}

#[test]
fn self_link_is_refused() {
    let mut config = dev();
    config.links[1].to = config.links[1].from.clone();
    let error = invalid(config);
    assert!(matches!(error, ConfigError::SelfLink { .. }), "{error:?}");
    assert_names_field(&error, "links[1].to");
    assert!(
        error
            .to_string()
            .contains("link from \"eu-west\" to itself"),
        "{error}"
    );
}

#[test]
fn duplicate_link_in_either_direction_is_refused() {
    let mut config = dev();
    config.links.push(LinkConfig {
        from: name("eu-west"),
        to: name("us-east"),
        latency_ms: 40,
        reverse_latency_ms: None,
    });
    let error = invalid(config);
    assert!(
        matches!(error, ConfigError::DuplicateLink { .. }),
        "{error:?}"
    );
    assert_names_field(&error, "links[3]");
    assert!(error.to_string().contains("(first is links[0])"), "{error}");
    assert!(error.to_string().contains("reverse_latency_ms"), "{error}");
}

#[test]
fn missing_link_names_the_pair_and_the_entry_to_add() {
    let mut config = dev();
    config.links.remove(1);
    let error = invalid(config);
    assert!(
        matches!(error, ConfigError::MissingLink { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "links: no latency between \"eu-west\" and \"ap-south\"; add a [[links]] entry with from = \"eu-west\", to = \"ap-south\" and latency_ms = <one-way ms>"
    );
}

#[test]
fn link_latency_must_be_in_range() {
    for (latency, reverse, path) in [
        (0, None, "links[0].latency_ms"),
        (5_001, None, "links[0].latency_ms"),
        (38, Some(0), "links[0].reverse_latency_ms"),
        (38, Some(60_000), "links[0].reverse_latency_ms"),
    ] {
        let mut config = dev();
        config.links[0].latency_ms = latency;
        config.links[0].reverse_latency_ms = reverse;
        let error = invalid(config);
        assert!(matches!(error, ConfigError::OutOfRange { .. }), "{error:?}");
        assert_names_field(&error, path);
        assert!(error.to_string().ends_with("use 1..=5000 ms"), "{error}");
    }
}

#[test]
fn cell_sizes_and_intervals_must_be_in_range() {
    type Edit = fn(&mut meridian_topology::CellConfig);
    let cases: [(Edit, &str, &str); 8] = [
        (
            |c| c.segment_size_bytes = 0,
            "cell.segment_size_bytes",
            "use 1048576..=68719476736 bytes",
        ),
        (
            |c| c.segment_size_bytes = 1 << 40,
            "cell.segment_size_bytes",
            "use 1048576..=68719476736 bytes",
        ),
        (
            |c| c.group_commit_max_wait_us = 100_001,
            "cell.group_commit_max_wait_us",
            "use 0..=100000 us",
        ),
        (
            |c| c.group_commit_max_bytes = 0,
            "cell.group_commit_max_bytes",
            "use 4096..=67108864 bytes",
        ),
        (
            |c| c.async_flush_interval_ms = 0,
            "cell.async_flush_interval_ms",
            "use 1..=60000 ms",
        ),
        (
            |c| c.retention_max_age_s = 0,
            "cell.retention_max_age_s",
            "use 1..=315360000 s",
        ),
        (
            |c| c.retention_max_total_bytes = Some(0),
            "cell.retention_max_total_bytes",
            "use 1..=1125899906842624 bytes",
        ),
        (
            |c| c.retention_max_total_bytes = Some(u64::MAX),
            "cell.retention_max_total_bytes",
            "use 1..=1125899906842624 bytes",
        ),
    ];
    for (edit, path, fix) in cases {
        let mut config = dev();
        edit(&mut config.cell);
        let error = invalid(config);
        assert!(matches!(error, ConfigError::OutOfRange { .. }), "{error:?}");
        assert_names_field(&error, path);
        assert!(error.to_string().ends_with(fix), "{error}");
    }
}

#[test]
fn cell_fields_must_agree_with_the_segment_size() {
    let mut config = dev();
    config.cell.segment_size_bytes = 4 << 20;
    config.cell.group_commit_max_bytes = 8 << 20;
    let error = invalid(config);
    assert!(matches!(error, ConfigError::Relation { .. }), "{error:?}");
    assert_names_field(&error, "cell.group_commit_max_bytes");
    assert!(
        error
            .to_string()
            .contains("8388608 bytes must be at most 4194304 bytes (cell.segment_size_bytes)"),
        "{error}"
    );

    let mut config = dev();
    config.cell.retention_max_total_bytes = Some(config.cell.segment_size_bytes);
    let error = invalid(config);
    assert_names_field(&error, "cell.retention_max_total_bytes");
    assert!(
        error.to_string().contains("(2 x cell.segment_size_bytes)"),
        "{error}"
    );
}

#[test]
fn meta_timeouts_must_be_in_range() {
    let cases = [
        (Some(0), None, None, "meta.heartbeat_interval_ms"),
        (Some(10_001), None, None, "meta.heartbeat_interval_ms"),
        (None, Some(0), None, "meta.election_timeout_min_ms"),
        (None, None, Some(120_001), "meta.election_timeout_max_ms"),
    ];
    for (heartbeat, min, max, path) in cases {
        let mut config = dev();
        config.meta = MetaConfig {
            heartbeat_interval_ms: heartbeat,
            election_timeout_min_ms: min,
            election_timeout_max_ms: max,
        };
        let error = invalid(config);
        assert!(matches!(error, ConfigError::OutOfRange { .. }), "{error:?}");
        assert_names_field(&error, path);
    }
}

#[test]
fn election_timeout_must_cover_two_heartbeats() {
    let mut config = dev();
    config.meta.heartbeat_interval_ms = Some(600);
    config.meta.election_timeout_min_ms = Some(1000);
    let error = invalid(config);
    assert!(matches!(error, ConfigError::Relation { .. }), "{error:?}");
    assert_names_field(&error, "meta.election_timeout_min_ms");
    assert!(
        error
            .to_string()
            .contains("1000 ms must be at least 1200 ms (2 x meta.heartbeat_interval_ms)"),
        "{error}"
    );
    // With the heartbeat derived (190 ms in the dev fabric) the message says so.
    let mut config = dev();
    config.meta.election_timeout_min_ms = Some(350);
    let error = invalid(config);
    assert!(
        error
            .to_string()
            .contains("(2 x meta.heartbeat_interval_ms, derived)"),
        "{error}"
    );
}

#[test]
fn election_timeout_must_exceed_the_largest_round_trip() {
    let mut config = dev();
    config.meta.heartbeat_interval_ms = Some(50);
    config.meta.election_timeout_min_ms = Some(150);
    let error = invalid(config);
    assert_names_field(&error, "meta.election_timeout_min_ms");
    assert!(
        error.to_string().contains(
            "150 ms must be greater than 190 ms (largest round trip, ap-south <-> us-east)"
        ),
        "{error}"
    );
}

#[test]
fn election_timeout_range_must_not_be_empty() {
    let mut config = dev();
    config.meta.election_timeout_max_ms = Some(500);
    let error = invalid(config);
    assert!(matches!(error, ConfigError::Relation { .. }), "{error:?}");
    assert_names_field(&error, "meta.election_timeout_max_ms");
    assert!(
        error
            .to_string()
            .contains("500 ms must be greater than 950 ms (meta.election_timeout_min_ms, derived)"),
        "{error}"
    );
}

#[test]
fn node_roles_must_be_a_clean_list() {
    let cases = [
        (vec![], "node.roles", "no role listed"),
        (
            vec![Role::Cell, Role::Meta, Role::Cell],
            "node.roles[2]",
            "\"cell\" is listed twice",
        ),
        (
            vec![Role::Meta, Role::Combined],
            "node.roles[1]",
            "cannot be mixed",
        ),
    ];
    for (roles, path, problem) in cases {
        let mut config = three_hosts();
        config.node.as_mut().unwrap().roles = roles;
        let error = invalid(config);
        assert!(matches!(error, ConfigError::Roles { .. }), "{error:?}");
        assert_names_field(&error, path);
        assert!(error.to_string().contains(problem), "{error}");
    }
}

#[test]
fn tls_paths_must_not_be_empty() {
    let mut config = three_hosts();
    config.tls.as_mut().unwrap().key = PathBuf::new();
    let error = invalid(config);
    assert!(
        matches!(error, ConfigError::InvalidText { .. }),
        "{error:?}"
    );
    assert_names_field(&error, "tls.key");
    let mut config = three_hosts();
    config.tls.as_mut().unwrap().ca_cert = PathBuf::new();
    assert_names_field(&invalid(config), "tls.ca_cert");
}

#[test]
fn admin_token_reference_must_be_well_formed() {
    for bad in ["", "1TOKEN", "MERIDIAN-TOKEN", "TOKEN VALUE"] {
        let mut config = three_hosts();
        config.auth.as_mut().unwrap().admin_token = SecretRef::Env(bad.to_owned());
        let error = invalid(config);
        assert!(
            matches!(error, ConfigError::InvalidText { .. }),
            "{error:?}"
        );
        assert_names_field(&error, "auth.admin_token.env");
    }
    let mut config = three_hosts();
    config.auth.as_mut().unwrap().admin_token = SecretRef::File(PathBuf::new());
    assert_names_field(&invalid(config), "auth.admin_token.file");

    let mut config = three_hosts();
    config.auth.as_mut().unwrap().admin_token =
        SecretRef::File("/run/secrets/meridian-admin".into());
    config.validate().unwrap();
}

#[test]
fn first_broken_rule_wins_in_a_fixed_order() {
    // Two problems: a duplicate region and an unknown link end. Regions are checked first.
    let mut config = dev();
    config.regions[1].name = name("us-east");
    config.links[0].to = name("nowhere");
    assert_names_field(&invalid(config), "regions[1].name");
}
