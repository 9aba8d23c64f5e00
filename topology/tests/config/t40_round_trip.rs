//! Writing a configuration as TOML and reading it back gives the same configuration.

use meridian_topology::{CellConfig, FabricConfig, MetaConfig};
use proptest::prelude::*;

use crate::strategies::fabric_config;
use crate::support::{dev, three_hosts};

fn round_trip(config: &FabricConfig) -> FabricConfig {
    let text = config.to_toml_string().unwrap();
    FabricConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"))
}

#[test]
fn dev_fabric_round_trips() {
    let config = dev();
    assert_eq!(round_trip(&config), config);
}

#[test]
fn three_host_example_round_trips_and_still_validates() {
    let config = three_hosts();
    let back = round_trip(&config);
    assert_eq!(back, config);
    back.validate().unwrap();
}

#[test]
fn defaults_are_not_written_as_explicit_meta_values() {
    // Unset meta fields must stay unset, or a round trip would freeze derived values into the file.
    let text = dev().to_toml_string().unwrap();
    assert!(!text.contains("heartbeat_interval_ms"), "{text}");
    assert_eq!(round_trip(&dev()).meta, MetaConfig::default());
}

#[test]
fn minimal_file_gets_every_default() {
    let text = "[[regions]]\nname = \"solo\"\nzone = \"lab\"\ngrpc = \"[::1]:8081\"\nmeta = \"[::1]:9101\"\nreplication = \"[::1]:9201\"\nmetrics = \"[::1]:9301\"\n";
    let config = FabricConfig::from_toml_str(text).unwrap();
    assert_eq!(config.cell, CellConfig::default());
    assert_eq!(config.meta, MetaConfig::default());
    assert!(
        config.links.is_empty()
            && config.node.is_none()
            && config.tls.is_none()
            && config.auth.is_none()
    );
    assert_eq!(round_trip(&config), config);
    let fabric = config.validate().unwrap();
    assert_eq!(fabric.meta_timeouts().heartbeat_interval_ms, 50);
    assert_eq!(fabric.meta_timeouts().election_timeout_min_ms, 300);
}

proptest! {
    #![proptest_config(crate::support::proptest_config(256))]

    #[test]
    fn any_configuration_round_trips(config in fabric_config()) {
        let text = config.to_toml_string().unwrap();
        let back = FabricConfig::from_toml_str(&text);
        prop_assert!(back.is_ok(), "{:?}\n---\n{}", back, text);
        prop_assert_eq!(back.unwrap(), config);
    }
}

#[test]
fn largest_numbers_round_trip() {
    let mut config = dev();
    config.cell.retention_max_total_bytes = Some(u64::MAX);
    config.meta.election_timeout_max_ms = Some(u64::MAX);
    assert_eq!(round_trip(&config), config);
}
