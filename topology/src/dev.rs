//! The embedded dev fabric: three regions on 127.0.0.1-3 with realistic latencies (see `dev.toml`).

use std::path::Path;

use crate::config::FabricConfig;

/// The dev fabric as TOML, exactly as embedded: no `[node]` section and no `data_dir`.
pub const DEV_TOML: &str = include_str!("dev.toml");

impl FabricConfig {
    /// The dev fabric (`us-east`, `eu-west`, `ap-south` on 127.0.0.1, .2, .3; see [`DEV_TOML`]) with each
    /// region's `data_dir` set to `base_dir/<region name>`. Call [`validate`](Self::validate) on it like
    /// on any other configuration.
    pub fn dev_default(base_dir: &Path) -> Self {
        // DEV_TOML is compiled in and a unit test parses and validates it, so this cannot fail at run
        // time; no user input reaches it.
        #[allow(clippy::expect_used)]
        let mut config =
            Self::from_toml_str(DEV_TOML).expect("embedded dev.toml parses (checked by tests)");
        for region in &mut config.regions {
            region.data_dir = Some(base_dir.join(region.name.as_str()));
        }
        config
    }
}
