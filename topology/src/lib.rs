//! Meridian's topology: what regions, zones, cells and links make up a fabric, how far apart they are,
//! and which region owns what.
//!
//! **Owns**
//! - the fabric configuration format ([`FabricConfig`], TOML, documented in `docs/configuration.md`), its
//!   parsing and validation ([`ConfigError`] names the field path and the fix), and the embedded dev
//!   fabric ([`FabricConfig::dev_default`], [`DEV_TOML`]);
//! - the validated view every other crate works from ([`Fabric`]): the [`LatencyMap`] between regions,
//!   nearest-healthy-region choice, and the meta group's Raft timing derived from the slowest link
//!   ([`MetaTimeouts`]);
//! - placement of FIFO message groups on regions ([`rendezvous_owner`], [`GroupPlacement`]) over a
//!   frozen, process-independent hash ([`stable_hash64`]).
//!
//! **Depends on** serde, toml, serde_path_to_error (field paths in parse errors) and thiserror only.
//!
//! **Must not touch** tokio, RocksDB, sockets, files or any other IO: this is pure, deterministic code
//! that the `meridian` binary, router, sdk, replicator, meta and chaos all link, including clients.
//! Callers read the configuration file themselves and pass its text to [`Fabric::from_toml_str`]. Storage
//! settings are plain data here; the cell crate maps them to its own types.
//! Health is an input ("these regions are healthy"), never something this crate measures.
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeSet;
//! use std::path::Path;
//!
//! use meridian_topology::{FabricConfig, RegionName, rendezvous_owner};
//!
//! let fabric = FabricConfig::dev_default(Path::new("/var/tmp/meridian-dev")).validate()?;
//!
//! // us-east is down: its clients go to the nearest healthy region.
//! let healthy: BTreeSet<RegionName> = ["eu-west".parse()?, "ap-south".parse()?].into();
//! let nearest = fabric.latency().nearest_healthy("us-east", &healthy);
//! assert_eq!(nearest.map(RegionName::as_str), Some("eu-west"));
//!
//! // Every router computes the same owner for a FIFO message group from the same health view.
//! let owner = rendezvous_owner("orders", "customer-42", &healthy);
//! assert!(owner.is_some_and(|region| healthy.contains(region)));
//!
//! // Raft timing derived from the slowest link (us-east <-> ap-south, 190 ms round trip).
//! let timeouts = fabric.meta_timeouts();
//! assert_eq!((timeouts.heartbeat_interval_ms, timeouts.election_timeout_min_ms), (190, 950));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod dev;
mod error;
mod fabric;
mod hash;
mod latency;
mod placement;
mod region;
mod validate;

pub use config::limits;
pub use config::{
    AuthConfig, CellConfig, Durability, FabricConfig, LinkConfig, MetaConfig, MetaTimeouts,
    NodeConfig, RegionConfig, Role, SecretRef, TlsConfig,
};
pub use dev::DEV_TOML;
pub use error::ConfigError;
pub use fabric::Fabric;
pub use hash::stable_hash64;
pub use latency::LatencyMap;
pub use placement::{GroupPlacement, owner_weight, rendezvous_owner};
pub use region::{Endpoint, EndpointError, REGION_NAME_LEN_MAX, RegionName, RegionNameError};
