//! Proptest strategies for whole configurations.

use std::path::PathBuf;

use meridian_topology::{
    AuthConfig, CellConfig, Durability, Endpoint, FabricConfig, LinkConfig, MetaConfig, NodeConfig,
    RegionConfig, RegionName, Role, SecretRef, TlsConfig,
};
use proptest::prelude::*;

fn region_name() -> impl Strategy<Value = RegionName> {
    "[a-z0-9-]{1,32}".prop_map(|s| RegionName::new(s).unwrap())
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    let host = prop_oneof![
        (1u8..=254, 0u8..=255).prop_map(|(a, b)| format!("10.{a}.{b}.1")),
        "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,10}){0,2}",
        (1u16..=0xffff).prop_map(|x| format!("fd00::{x:x}")),
    ];
    (host, 1u16..=u16::MAX).prop_map(|(h, p)| Endpoint::new(h, p).unwrap())
}

fn region() -> impl Strategy<Value = RegionConfig> {
    (
        region_name(),
        "[a-z0-9._-]{1,64}",
        [endpoint(), endpoint(), endpoint(), endpoint()],
        proptest::option::of("/[a-z]{1,8}(/[a-z0-9 _.-]{1,8}){0,3}"),
    )
        .prop_map(
            |(name, zone, [grpc, meta, replication, metrics], dir)| RegionConfig {
                name,
                zone,
                grpc,
                meta,
                replication,
                metrics,
                data_dir: dir.map(PathBuf::from),
            },
        )
}

fn link() -> impl Strategy<Value = LinkConfig> {
    (
        region_name(),
        region_name(),
        0u64..10_000,
        proptest::option::of(0u64..10_000),
    )
        .prop_map(|(from, to, latency_ms, reverse_latency_ms)| LinkConfig {
            from,
            to,
            latency_ms,
            reverse_latency_ms,
        })
}

fn cell() -> impl Strategy<Value = CellConfig> {
    // The toml crate carries the full u64 range, beyond the i64 of the TOML spec.
    let n = any::<u64>;
    let total = proptest::option::of(any::<u64>());
    (any::<bool>(), [n(), n(), n(), n(), n()], total).prop_map(|(sync, [a, b, c, d, e], f)| {
        CellConfig {
            durability: if sync {
                Durability::Sync
            } else {
                Durability::Async
            },
            segment_size_bytes: a,
            group_commit_max_wait_us: b,
            group_commit_max_bytes: c,
            async_flush_interval_ms: d,
            retention_max_age_s: e,
            retention_max_total_bytes: f,
        }
    })
}

fn roles() -> impl Strategy<Value = Vec<Role>> {
    proptest::collection::vec(
        prop_oneof![
            Just(Role::Meta),
            Just(Role::Cell),
            Just(Role::Router),
            Just(Role::Combined)
        ],
        0..4,
    )
}

/// Shape-valid but not necessarily rule-valid configurations: the TOML mapping must be lossless for
/// anything the types can hold, including values validation would refuse.
pub(crate) fn fabric_config() -> impl Strategy<Value = FabricConfig> {
    let meta = proptest::option::weighted(0.5, any::<u64>());
    (
        proptest::option::of((region_name(), roles())),
        proptest::collection::vec(region(), 0..4),
        proptest::collection::vec(link(), 0..4),
        cell(),
        (meta.clone(), meta.clone(), meta),
        proptest::option::of(("/[a-z]{1,8}", "[a-z]{1,8}\\.pem", "[a-z]{1,8}\\.key")),
        proptest::option::of(prop_oneof![
            "[A-Z_]{1,16}".prop_map(SecretRef::Env),
            "/[a-z]{1,16}".prop_map(|p| SecretRef::File(p.into())),
        ]),
    )
        .prop_map(
            |(node, regions, links, cell, (h, min, max), tls, auth)| FabricConfig {
                node: node.map(|(region, roles)| NodeConfig { region, roles }),
                regions,
                links,
                cell,
                meta: MetaConfig {
                    heartbeat_interval_ms: h,
                    election_timeout_min_ms: min,
                    election_timeout_max_ms: max,
                },
                tls: tls.map(|(ca, cert, key)| TlsConfig {
                    ca_cert: ca.into(),
                    cert: cert.into(),
                    key: key.into(),
                }),
                auth: auth.map(|admin_token| AuthConfig { admin_token }),
            },
        )
}
