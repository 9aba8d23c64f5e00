//! Shared helpers: fixtures and the assertion that an error names its field.

use std::path::Path;

use meridian_topology::{ConfigError, FabricConfig};

/// The three-host example that `docs/configuration.md` also shows.
pub(crate) const THREE_HOSTS_TOML: &str = include_str!("../../testdata/three-hosts.toml");

/// The dev fabric with data directories under a fixed, never-touched path.
pub(crate) fn dev() -> FabricConfig {
    FabricConfig::dev_default(Path::new("/nonexistent/meridian-dev"))
}

/// The three-host example, parsed.
pub(crate) fn three_hosts() -> FabricConfig {
    FabricConfig::from_toml_str(THREE_HOSTS_TOML).unwrap()
}

/// Validates `config`, which must fail, and returns the error.
pub(crate) fn invalid(config: FabricConfig) -> ConfigError {
    match config.validate() {
        Ok(fabric) => panic!("expected a validation error, got {fabric:?}"),
        Err(error) => error,
    }
}

/// Parses `text`, which must fail, and returns the error.
pub(crate) fn unparsable(text: &str) -> ConfigError {
    match FabricConfig::from_toml_str(text) {
        Ok(config) => panic!("expected a parse error, got {config:?}"),
        Err(error) => error,
    }
}

/// Asserts that `error` is about `path`: the path is reported and the message starts with it.
pub(crate) fn assert_names_field(error: &ConfigError, path: &str) {
    let message = error.to_string();
    assert_eq!(error.field_path(), Some(path), "message: {message}");
    assert!(
        message.starts_with(&format!("{path}: ")),
        "message does not start with {path:?}: {message}"
    );
}

/// Replaces exactly one occurrence of `from` in `text`, so a fixture edit cannot silently miss.
pub(crate) fn edit(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    text.replacen(from, to, 1)
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
