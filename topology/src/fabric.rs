//! `Fabric`: a configuration that passed validation, with what is derived from it.

use crate::config::{FabricConfig, MetaTimeouts, NodeConfig, RegionConfig};
use crate::error::ConfigError;
use crate::latency::LatencyMap;

/// A validated fabric configuration with its latency map and effective meta timeouts.
///
/// The only way to get one is [`FabricConfig::validate`] (or the shortcuts here), so code that holds a
/// `Fabric` can rely on every rule of `docs/configuration.md`: region names unique, every link known and
/// complete, endpoints distinct, sizes in range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fabric {
    config: FabricConfig,
    latency: LatencyMap,
    meta_timeouts: MetaTimeouts,
}

impl Fabric {
    /// Assembles a fabric from parts that `validate` has already checked.
    pub(crate) fn from_parts(
        config: FabricConfig,
        latency: LatencyMap,
        meta_timeouts: MetaTimeouts,
    ) -> Self {
        Self {
            config,
            latency,
            meta_timeouts,
        }
    }

    /// Parses and validates TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        FabricConfig::from_toml_str(text)?.validate()
    }

    /// The configuration as written (explicit values only; see [`meta_timeouts`](Self::meta_timeouts)
    /// for the effective Raft timing).
    pub fn config(&self) -> &FabricConfig {
        &self.config
    }

    /// Gives the configuration back, e.g. to change it and validate again.
    pub fn into_config(self) -> FabricConfig {
        self.config
    }

    /// Latency between the regions.
    pub fn latency(&self) -> &LatencyMap {
        &self.latency
    }

    /// The Raft timing the meta group must use: explicit `[meta]` values, derived ones elsewhere.
    pub fn meta_timeouts(&self) -> MetaTimeouts {
        self.meta_timeouts
    }

    /// The configuration of region `name`, if it exists.
    pub fn region(&self, name: impl AsRef<str>) -> Option<&RegionConfig> {
        let name = name.as_ref();
        self.config.regions.iter().find(|r| r.name.as_str() == name)
    }

    /// The `[node]` section, if present.
    pub fn node(&self) -> Option<&NodeConfig> {
        self.config.node.as_ref()
    }

    /// The region this process serves (`node.region`), if the file has a `[node]` section. Validation
    /// guarantees the region exists.
    pub fn local_region(&self) -> Option<&RegionConfig> {
        self.node().and_then(|node| self.region(&node.region))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Other crates keep a `Fabric` in shared state and pass `ConfigError` through `anyhow` in the
    /// binary; both need to cross threads.
    #[test]
    fn fabric_and_error_are_send_sync_static() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Fabric>();
        assert_send_sync::<ConfigError>();
    }
}
