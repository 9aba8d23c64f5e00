//! The embedded dev fabric and the documented three-host example parse, validate and mean what they
//! say.

use std::collections::BTreeSet;
use std::path::Path;

use meridian_topology::{
    DEV_TOML, Durability, Fabric, FabricConfig, MetaTimeouts, RegionName, Role,
};

use crate::support::{THREE_HOSTS_TOML, dev, three_hosts};

fn names(list: &[&str]) -> BTreeSet<RegionName> {
    list.iter().map(|n| RegionName::new(*n).unwrap()).collect()
}

#[test]
fn dev_fabric_has_three_loopback_regions_with_distinct_ports() {
    let fabric = dev().validate().unwrap();
    let regions = &fabric.config().regions;
    let summary: Vec<(&str, &str, String, String)> = regions
        .iter()
        .map(|r| {
            let ports: Vec<String> = r
                .endpoints()
                .iter()
                .map(|(_, e)| e.port().to_string())
                .collect();
            (
                r.name.as_str(),
                r.grpc.host(),
                ports.join(","),
                r.data_dir.as_ref().unwrap().display().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "us-east",
                "127.0.0.1",
                "8081,9101,9201,9301".to_owned(),
                "/nonexistent/meridian-dev/us-east".to_owned()
            ),
            (
                "eu-west",
                "127.0.0.2",
                "8082,9102,9202,9302".to_owned(),
                "/nonexistent/meridian-dev/eu-west".to_owned()
            ),
            (
                "ap-south",
                "127.0.0.3",
                "8083,9103,9203,9303".to_owned(),
                "/nonexistent/meridian-dev/ap-south".to_owned()
            ),
        ]
    );
    for region in regions {
        for (_, endpoint) in region.endpoints() {
            assert!(endpoint.is_loopback(), "{endpoint}");
            assert_eq!(endpoint.host(), region.grpc.host(), "one host per region");
        }
    }
    // No [node] in the dev fabric: `meridian dev` runs every region itself.
    assert!(fabric.node().is_none());
    assert!(fabric.local_region().is_none());
    assert!(fabric.config().tls.is_none() && fabric.config().auth.is_none());
}

#[test]
fn dev_fabric_latencies_and_derived_meta_timeouts() {
    let fabric = dev().validate().unwrap();
    let latency = fabric.latency();
    assert_eq!(latency.one_way_ms("us-east", "eu-west"), Some(38));
    assert_eq!(latency.one_way_ms("eu-west", "us-east"), Some(38));
    assert_eq!(latency.one_way_ms("eu-west", "ap-south"), Some(60));
    assert_eq!(latency.one_way_ms("ap-south", "us-east"), Some(95));
    assert_eq!(latency.rtt_ms("us-east", "ap-south"), Some(190));
    assert_eq!(latency.max_rtt_ms(), 190);
    assert_eq!(
        fabric.meta_timeouts(),
        MetaTimeouts {
            heartbeat_interval_ms: 190,
            election_timeout_min_ms: 950,
            election_timeout_max_ms: 1900,
        }
    );
    let cell = &fabric.config().cell;
    assert_eq!(cell.durability, Durability::Sync);
    assert_eq!(cell.segment_size_bytes, 64 << 20);
    assert_eq!(cell.retention_max_total_bytes, Some(1 << 30));
    // Left at the defaults.
    assert_eq!(cell.group_commit_max_bytes, 4 << 20);
    assert_eq!(cell.group_commit_max_wait_us, 0);
}

#[test]
fn dev_fabric_nearest_healthy_region_follows_the_latencies() {
    let fabric = dev().validate().unwrap();
    let latency = fabric.latency();
    let all = names(&["us-east", "eu-west", "ap-south"]);
    for region in &all {
        assert_eq!(
            latency.nearest_healthy(region, &all),
            Some(region),
            "own region first"
        );
    }
    let without_us = names(&["eu-west", "ap-south"]);
    assert_eq!(
        latency
            .nearest_healthy("us-east", &without_us)
            .unwrap()
            .as_str(),
        "eu-west"
    );
    let without_eu = names(&["us-east", "ap-south"]);
    // From eu-west: us-east is 76 ms away, ap-south 120 ms.
    assert_eq!(
        latency
            .nearest_healthy("eu-west", &without_eu)
            .unwrap()
            .as_str(),
        "us-east"
    );
    let only_ap = names(&["ap-south"]);
    assert_eq!(
        latency
            .nearest_healthy("us-east", &only_ap)
            .unwrap()
            .as_str(),
        "ap-south"
    );
    assert_eq!(latency.nearest_healthy("us-east", &BTreeSet::new()), None);
    assert_eq!(latency.nearest_healthy("mars", &all), None);
    let order: Vec<&str> = latency
        .by_proximity("ap-south")
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(order, ["ap-south", "eu-west", "us-east"]);
}

#[test]
fn dev_toml_is_what_dev_default_parses() {
    let mut parsed = FabricConfig::from_toml_str(DEV_TOML).unwrap();
    for region in &mut parsed.regions {
        assert_eq!(
            region.data_dir, None,
            "DEV_TOML leaves data_dir to dev_default"
        );
        region.data_dir = Some(Path::new("/nonexistent/meridian-dev").join(region.name.as_str()));
    }
    assert_eq!(parsed, dev());
}

#[test]
fn three_host_example_validates_with_its_node_and_overrides() {
    let fabric = Fabric::from_toml_str(THREE_HOSTS_TOML).unwrap();
    let node = fabric.node().unwrap();
    assert_eq!(node.region.as_str(), "us-east");
    assert!(node.runs(Role::Meta) && node.runs(Role::Cell) && node.runs(Role::Router));
    assert_eq!(
        fabric.local_region().unwrap().grpc.to_string(),
        "10.10.0.10:8081"
    );
    assert_eq!(fabric.latency().one_way_ms("ap-south", "eu-west"), Some(64));
    assert_eq!(fabric.latency().one_way_ms("eu-west", "ap-south"), Some(60));
    assert_eq!(
        fabric.meta_timeouts(),
        MetaTimeouts {
            heartbeat_interval_ms: 190,
            election_timeout_min_ms: 1200,
            election_timeout_max_ms: 2400,
        }
    );
    // What docs/configuration.md says about the example.
    let order = |from: &str| -> Vec<String> {
        fabric
            .latency()
            .by_proximity(from)
            .iter()
            .map(|r| r.to_string())
            .collect()
    };
    assert_eq!(order("us-east"), ["us-east", "eu-west", "ap-south"]);
    assert_eq!(order("ap-south"), ["ap-south", "eu-west", "us-east"]);
    assert_eq!(fabric.latency().rtt_ms("ap-south", "eu-west"), Some(124));
    // The same data_dir on three different hosts is accepted.
    assert!(
        three_hosts()
            .regions
            .iter()
            .all(|r| r.data_dir.as_deref() == Some(Path::new("/var/lib/meridian")))
    );
}

#[test]
fn docs_show_the_tested_three_host_example_verbatim() {
    // Included at compile time: a path baked in at compile time can point into another
    // checkout when a compiler cache hands back an object built there.
    let doc = include_str!("../../../docs/configuration.md");
    assert!(
        doc.contains(&format!("```toml\n{THREE_HOSTS_TOML}```")),
        "docs/configuration.md must contain testdata/three-hosts.toml as a ```toml block"
    );
}

#[test]
fn node_roles_expand_combined_only() {
    let mut config = three_hosts();
    let node = config.node.as_mut().unwrap();
    node.roles = vec![Role::Meta, Role::Router];
    assert!(node.runs(Role::Meta) && node.runs(Role::Router));
    assert!(!node.runs(Role::Cell) && !node.runs(Role::Combined));
    config.validate().unwrap();
}

#[test]
fn roles_default_to_combined() {
    let text = THREE_HOSTS_TOML.replace("roles = [\"combined\"]\n", "");
    let config = FabricConfig::from_toml_str(&text).unwrap();
    assert_eq!(config.node.unwrap().roles, [Role::Combined]);
}
