//! Random fabrics for property tests, built through the public configuration API.

use std::collections::BTreeSet;

use meridian_topology::{Endpoint, Fabric, FabricConfig, LinkConfig, RegionConfig, RegionName};
use proptest::prelude::*;

/// Up to this many regions in a generated fabric.
pub(crate) const REGIONS_MAX: usize = 7;

/// A region name from a small alphabet so that names collide with the fixed ones in tests.
pub(crate) fn region_name() -> impl Strategy<Value = RegionName> {
    "[a-e][a-z0-9-]{0,6}".prop_map(|s| RegionName::new(s).unwrap())
}

/// 1 to `REGIONS_MAX` distinct region names.
pub(crate) fn region_names() -> impl Strategy<Value = BTreeSet<RegionName>> {
    proptest::collection::btree_set(region_name(), 1..=REGIONS_MAX)
}

/// A validated fabric over `names` with one-way latencies drawn from `latencies` (asymmetric when the
/// reverse is `Some`), one link per pair.
pub(crate) fn fabric(names: &BTreeSet<RegionName>, latencies: &[(u64, Option<u64>)]) -> Fabric {
    let names: Vec<&RegionName> = names.iter().collect();
    let regions = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let at = |port: u16| Endpoint::new(format!("10.0.0.{}", i + 1), port).unwrap();
            RegionConfig {
                name: (*name).clone(),
                zone: format!("{name}-a"),
                grpc: at(8081),
                meta: at(9101),
                replication: at(9201),
                metrics: at(9301),
                data_dir: None,
            }
        })
        .collect();
    let mut links = Vec::new();
    let mut draws = latencies.iter().cycle();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            let (latency_ms, reverse_latency_ms) = *draws.next().unwrap();
            links.push(LinkConfig {
                from: (*a).clone(),
                to: (*b).clone(),
                latency_ms,
                reverse_latency_ms,
            });
        }
    }
    let config = FabricConfig {
        node: None,
        regions,
        links,
        cell: Default::default(),
        meta: Default::default(),
        tls: None,
        auth: None,
    };
    config.validate().unwrap()
}

/// Latency draws: small values so that equal round trips (ties) are common.
pub(crate) fn latencies() -> impl Strategy<Value = Vec<(u64, Option<u64>)>> {
    proptest::collection::vec(
        (1u64..=6, proptest::option::of(1u64..=6)),
        1..=REGIONS_MAX * REGIONS_MAX,
    )
}

/// A subset of `names` chosen by a bit mask.
pub(crate) fn subset(names: &BTreeSet<RegionName>, mask: u32) -> BTreeSet<RegionName> {
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| n.clone())
        .collect()
}

/// Proptest settings: `cases` cases from a fixed seed, so every run (and CI) checks the same inputs and
/// a failure reproduces; set `PROPTEST_RNG_SEED=<n>` to explore other inputs. No regression files are
/// written into the source tree.
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let base = Config::default();
    let rng_seed = match base.rng_seed {
        // "MERIDIAN" in ASCII.
        RngSeed::Random => RngSeed::Fixed(0x4d45_5249_4449_414e),
        chosen => chosen,
    };
    Config {
        cases,
        rng_seed,
        failure_persistence: None,
        ..base
    }
}
