//! Properties of validation over random configurations: every rejection names a field, and every
//! accepted configuration meets each documented rule (restated here independently of `validate`).

use std::collections::BTreeSet;

use meridian_topology::{Fabric, FabricConfig, RegionName, Role, limits};
use proptest::prelude::*;

use crate::strategies::fabric_config;
use crate::support::{THREE_HOSTS_TOML, three_hosts};

/// Checks the documented rules on a configuration `validate` accepted.
fn assert_fabric_invariants(fabric: &Fabric) {
    let config = fabric.config();
    let names: Vec<&RegionName> = config.regions.iter().map(|r| &r.name).collect();
    let unique: BTreeSet<&RegionName> = names.iter().copied().collect();
    assert!((1..=limits::REGIONS_MAX).contains(&names.len()));
    assert_eq!(unique.len(), names.len(), "region names unique");

    let mut endpoints = BTreeSet::new();
    for region in &config.regions {
        for (_, endpoint) in region.endpoints() {
            let key = (endpoint.host().to_ascii_lowercase(), endpoint.port());
            assert!(endpoints.insert(key), "endpoint {endpoint} used twice");
            assert_ne!(endpoint.port(), 0);
        }
    }

    let latency = fabric.latency();
    let mut max_rtt = 0;
    for a in &names {
        for b in &names {
            let rtt = latency.rtt_ms(a, b).expect("every pair has a latency");
            if a == b {
                assert_eq!(rtt, 0);
            } else {
                assert!((2..=2 * limits::LINK_LATENCY_MS_MAX).contains(&rtt));
            }
            max_rtt = max_rtt.max(rtt);
        }
    }

    let cell = &config.cell;
    assert!(
        (limits::SEGMENT_SIZE_BYTES_MIN..=limits::SEGMENT_SIZE_BYTES_MAX)
            .contains(&cell.segment_size_bytes)
    );
    assert!(cell.group_commit_max_bytes >= limits::GROUP_COMMIT_BYTES_MIN);
    assert!(
        cell.group_commit_max_bytes <= cell.segment_size_bytes.min(limits::GROUP_COMMIT_BYTES_MAX)
    );
    assert!(cell.group_commit_max_wait_us <= limits::GROUP_COMMIT_WAIT_US_MAX);
    assert!((1..=limits::ASYNC_FLUSH_INTERVAL_MS_MAX).contains(&cell.async_flush_interval_ms));
    assert!((1..=limits::RETENTION_AGE_S_MAX).contains(&cell.retention_max_age_s));
    if let Some(total) = cell.retention_max_total_bytes {
        assert!(total >= 2 * cell.segment_size_bytes);
        assert!(total <= limits::RETENTION_BYTES_MAX);
    }

    let t = fabric.meta_timeouts();
    assert!((1..=limits::HEARTBEAT_INTERVAL_MS_MAX).contains(&t.heartbeat_interval_ms));
    assert!(t.election_timeout_min_ms >= 2 * t.heartbeat_interval_ms);
    assert!(t.election_timeout_min_ms > max_rtt);
    assert!(t.election_timeout_max_ms > t.election_timeout_min_ms);
    assert!(t.election_timeout_max_ms <= limits::ELECTION_TIMEOUT_MS_MAX);
    for (explicit, effective) in [
        (config.meta.heartbeat_interval_ms, t.heartbeat_interval_ms),
        (
            config.meta.election_timeout_min_ms,
            t.election_timeout_min_ms,
        ),
        (
            config.meta.election_timeout_max_ms,
            t.election_timeout_max_ms,
        ),
    ] {
        if let Some(explicit) = explicit {
            assert_eq!(explicit, effective, "explicit values are kept");
        }
    }

    if let Some(node) = &config.node {
        assert!(names.contains(&&node.region));
        assert!(!node.roles.is_empty());
        assert!(node.roles.len() == 1 || !node.roles.contains(&Role::Combined));
        let roles: BTreeSet<&Role> = node.roles.iter().collect();
        assert_eq!(roles.len(), node.roles.len());
    }
    assert_eq!(fabric.local_region().is_some(), config.node.is_some());
}

/// Checks the outcome of validating any configuration.
fn check_outcome(config: FabricConfig) -> Result<(), TestCaseError> {
    match config.validate() {
        Ok(fabric) => assert_fabric_invariants(&fabric),
        Err(error) => {
            let message = error.to_string();
            let path = error.field_path();
            prop_assert!(
                path.is_some(),
                "validation error without a field: {}",
                message
            );
            let path = path.unwrap_or_default();
            prop_assert!(message.starts_with(&format!("{path}: ")), "{}", message);
        }
    }
    Ok(())
}

/// Numbers near the boundaries of the documented ranges, plus anything.
fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..=4,
        40u64..=400,
        900u64..=5_001,
        9_999u64..=10_001,
        (1u64 << 20) - 2..=(1 << 20) + 2,
        Just(1u64 << 30),
        (64u64 << 30) - 1..=(64 << 30) + 1,
        119_999u64..=120_001,
        any::<u64>(),
    ]
}

/// One small change to a valid configuration.
#[derive(Debug, Clone)]
enum Mutation {
    Latency(usize, u64),
    ReverseLatency(usize, Option<u64>),
    LinkEnd(usize, bool, usize),
    DropLink(usize),
    RegionName(usize, usize),
    Port(usize, usize, u16),
    SharedDataDir(usize, usize),
    Cell(usize, u64),
    Meta(usize, Option<u64>),
    NodeRegion(usize),
    Roles(Vec<Role>),
}

const NAMES: [&str; 5] = ["us-east", "eu-west", "ap-south", "eu-wset", "mars"];

fn mutation() -> impl Strategy<Value = Mutation> {
    let role = prop_oneof![
        Just(Role::Meta),
        Just(Role::Cell),
        Just(Role::Router),
        Just(Role::Combined)
    ];
    prop_oneof![
        (0..3usize, interesting_u64()).prop_map(|(i, v)| Mutation::Latency(i, v)),
        (0..3usize, proptest::option::of(interesting_u64()))
            .prop_map(|(i, v)| Mutation::ReverseLatency(i, v)),
        (0..3usize, any::<bool>(), 0..NAMES.len())
            .prop_map(|(i, to, n)| Mutation::LinkEnd(i, to, n)),
        (0..3usize).prop_map(Mutation::DropLink),
        (0..3usize, 0..NAMES.len()).prop_map(|(i, n)| Mutation::RegionName(i, n)),
        (
            0..3usize,
            0..4usize,
            prop_oneof![
                Just(8081u16),
                Just(9101u16),
                Just(9201u16),
                Just(9301u16),
                1u16..=u16::MAX
            ]
        )
            .prop_map(|(i, f, p)| Mutation::Port(i, f, p)),
        (0..3usize, 0..3usize).prop_map(|(a, b)| Mutation::SharedDataDir(a, b)),
        (0..8usize, interesting_u64()).prop_map(|(f, v)| Mutation::Cell(f, v)),
        (0..3usize, proptest::option::of(interesting_u64()))
            .prop_map(|(f, v)| Mutation::Meta(f, v)),
        (0..NAMES.len()).prop_map(Mutation::NodeRegion),
        proptest::collection::vec(role, 0..4).prop_map(Mutation::Roles),
    ]
}

fn link_mut(config: &mut FabricConfig, index: usize) -> Option<&mut meridian_topology::LinkConfig> {
    let len = config.links.len();
    config.links.get_mut(index % len.max(1))
}

fn apply(config: &mut FabricConfig, mutation: &Mutation) {
    let name = |n: usize| RegionName::new(NAMES[n]).unwrap();
    match mutation {
        // Link indexes wrap because an earlier mutation may have dropped a link.
        Mutation::Latency(i, v) => {
            if let Some(link) = link_mut(config, *i) {
                link.latency_ms = *v;
            }
        }
        Mutation::ReverseLatency(i, v) => {
            if let Some(link) = link_mut(config, *i) {
                link.reverse_latency_ms = *v;
            }
        }
        Mutation::LinkEnd(i, to, n) => {
            if let Some(link) = link_mut(config, *i) {
                if *to {
                    link.to = name(*n)
                } else {
                    link.from = name(*n)
                }
            }
        }
        Mutation::DropLink(i) => {
            if !config.links.is_empty() {
                let len = config.links.len();
                config.links.remove(*i % len);
            }
        }
        Mutation::RegionName(i, n) => config.regions[*i].name = name(*n),
        Mutation::Port(i, f, p) => {
            let region = &mut config.regions[*i];
            let endpoint = match f {
                0 => &mut region.grpc,
                1 => &mut region.meta,
                2 => &mut region.replication,
                _ => &mut region.metrics,
            };
            *endpoint = meridian_topology::Endpoint::new(endpoint.host(), *p).unwrap();
        }
        Mutation::SharedDataDir(a, b) => {
            // Put region b on region a's host and data_dir: a clash unless a == b.
            let (grpc, dir) = (
                config.regions[*a].grpc.clone(),
                config.regions[*a].data_dir.clone(),
            );
            let target = &mut config.regions[*b];
            target.grpc =
                meridian_topology::Endpoint::new(grpc.host(), 18_000 + *b as u16).unwrap();
            target.data_dir = dir;
        }
        Mutation::Cell(f, v) => {
            let cell = &mut config.cell;
            let field = match f {
                0 => &mut cell.segment_size_bytes,
                1 => &mut cell.group_commit_max_wait_us,
                2 => &mut cell.group_commit_max_bytes,
                3 => &mut cell.async_flush_interval_ms,
                4 => &mut cell.retention_max_age_s,
                5 => {
                    cell.retention_max_total_bytes = None;
                    return;
                }
                _ => {
                    cell.retention_max_total_bytes = Some(*v);
                    return;
                }
            };
            *field = *v;
        }
        Mutation::Meta(f, v) => {
            let meta = &mut config.meta;
            match f {
                0 => meta.heartbeat_interval_ms = *v,
                1 => meta.election_timeout_min_ms = *v,
                _ => meta.election_timeout_max_ms = *v,
            }
        }
        Mutation::NodeRegion(n) => config.node.as_mut().unwrap().region = name(*n),
        Mutation::Roles(roles) => config.node.as_mut().unwrap().roles = roles.clone(),
    }
}

proptest! {
    #![proptest_config(crate::support::proptest_config(1024))]

    /// Arbitrary shape-valid configurations: mostly rejected, always with a field path.
    #[test]
    fn any_configuration_is_accepted_soundly_or_rejected_with_a_field(config in fabric_config()) {
        check_outcome(config)?;
    }

    /// One to three small changes to the valid example: both outcomes are common here.
    #[test]
    fn near_valid_configurations_are_judged_by_the_documented_rules(
        mutations in proptest::collection::vec(mutation(), 1..=3),
    ) {
        let mut config = three_hosts();
        for m in &mutations {
            apply(&mut config, m);
        }
        check_outcome(config)?;
    }

    /// Random damage to the TOML text never panics, and every parse error says where it is.
    #[test]
    fn damaged_text_is_reported_with_a_place(
        cut in any::<prop::sample::Index>(),
        len in 0usize..40,
        insert in "[ -~\n]{0,8}",
    ) {
        let text = THREE_HOSTS_TOML;
        let start = cut.index(text.len());
        let end = (start + len).min(text.len());
        let damaged = format!("{}{}{}", &text[..start], insert, &text[end..]);
        match FabricConfig::from_toml_str(&damaged) {
            Ok(config) => check_outcome(config)?,
            Err(error) => {
                let has_place = error.field_path().is_some()
                    || matches!(error, meridian_topology::ConfigError::Parse { line: Some(_), .. });
                prop_assert!(has_place, "{}", error);
            }
        }
    }
}

/// Guards the property above against being vacuous: with a fixed seed, a fair share of the mutated
/// configurations must pass validation and a fair share must fail.
#[test]
fn near_valid_generator_produces_both_outcomes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = proptest::collection::vec(mutation(), 1..=3);
    let samples = 500;
    let mut accepted = 0;
    for _ in 0..samples {
        let mutations = strategy.new_tree(&mut runner).unwrap().current();
        let mut config = three_hosts();
        for m in &mutations {
            apply(&mut config, m);
        }
        if config.validate().is_ok() {
            accepted += 1;
        }
    }
    assert!(
        (samples / 10..=samples * 9 / 10).contains(&accepted),
        "{accepted} of {samples} accepted"
    );
}
