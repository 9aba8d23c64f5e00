//! The fabric configuration as plain, serde-mapped data: what a TOML file says, before validation.
//!
//! [`FabricConfig::from_toml_str`] checks only the shape (unknown fields,
//! types, region-name and endpoint syntax); [`FabricConfig::validate`] checks everything else and
//! returns a [`Fabric`].

mod cell;
mod meta;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use self::cell::{CellConfig, Durability};
pub use self::meta::{MetaConfig, MetaTimeouts};
use crate::error::ConfigError;
use crate::fabric::Fabric;
use crate::region::{Endpoint, RegionName};

/// The bounds validation enforces, each with its unit in the name; exported for tools that generate
/// configurations and for tests.
pub mod limits {
    pub use super::cell::{
        ASYNC_FLUSH_INTERVAL_MS_MAX, GROUP_COMMIT_BYTES_MAX, GROUP_COMMIT_BYTES_MIN,
        GROUP_COMMIT_WAIT_US_MAX, RETENTION_AGE_S_MAX, RETENTION_BYTES_MAX, SEGMENT_SIZE_BYTES_MAX,
        SEGMENT_SIZE_BYTES_MIN,
    };
    pub use super::meta::{
        ELECTION_TIMEOUT_MS_FLOOR, ELECTION_TIMEOUT_MS_MAX, HEARTBEAT_INTERVAL_MS_FLOOR,
        HEARTBEAT_INTERVAL_MS_MAX,
    };
    /// Most regions a fabric may have: every region replicates to every other, so links grow with the
    /// square of this.
    pub const REGIONS_MAX: usize = 16;
    /// Largest one-way link latency accepted, in milliseconds; larger values are almost always a unit
    /// mistake (microseconds written as milliseconds).
    pub const LINK_LATENCY_MS_MAX: u64 = 5_000;
}

/// The whole configuration of a Meridian fabric: its regions, the latency between them, and the
/// settings shared by all nodes. One file describes the fabric; each process also reads its own
/// `[node]` section from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FabricConfig {
    /// Which region this process serves and which roles it runs; needed by `meridian start`, absent in
    /// a fabric-wide file such as the dev default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeConfig>,
    /// The regions, in the order the operator wrote them. At least one.
    pub regions: Vec<RegionConfig>,
    /// One-way latency between region pairs; every pair of distinct regions needs exactly one link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkConfig>,
    /// Storage settings of every cell.
    #[serde(default)]
    pub cell: CellConfig,
    /// Raft timing of the meta group.
    #[serde(default)]
    pub meta: MetaConfig,
    /// TLS material for gRPC, meta and replication traffic; absent means plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Where the admin credential is found; absent means admin APIs are unauthenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
}

/// One region (`[[regions]]`): its name, zone and the endpoints of its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Unique name, 1 to 32 characters of `a-z`, `0-9`, `-`.
    pub name: RegionName,
    /// Availability zone or site label, e.g. `us-east-1a`; informational (metrics labels, logs).
    pub zone: String,
    /// RocketMQ 5 gRPC endpoint of the region's cell, which clients dial.
    pub grpc: Endpoint,
    /// Raft and meta API endpoint.
    pub meta: Endpoint,
    /// QUIC endpoint (UDP) of cross-region replication.
    pub replication: Endpoint,
    /// HTTP endpoint serving Prometheus metrics and health.
    pub metrics: Endpoint,
    /// Directory for the region's log and metadata on its host; when absent, the process running the
    /// region must be given one another way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl RegionConfig {
    /// The four endpoints with their field names, in a fixed order.
    pub fn endpoints(&self) -> [(&'static str, &Endpoint); 4] {
        [
            ("grpc", &self.grpc),
            ("meta", &self.meta),
            ("replication", &self.replication),
            ("metrics", &self.metrics),
        ]
    }
}

/// One-way latency between two regions (`[[links]]`), used for nearest-region routing and for
/// timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// One end.
    pub from: RegionName,
    /// The other end.
    pub to: RegionName,
    /// One-way latency `from -> to`, in milliseconds; also `to -> from` unless `reverse_latency_ms` is
    /// set. 1 ..= 5000.
    pub latency_ms: u64,
    /// One-way latency `to -> from`, in milliseconds, for an asymmetric pair. 1 ..= 5000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_latency_ms: Option<u64>,
}

/// The process's own place in the fabric (`[node]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The region this process serves; must be one of `regions`.
    pub region: RegionName,
    /// The roles this process runs. Default `["combined"]`.
    #[serde(default = "default_roles")]
    pub roles: Vec<Role>,
}

fn default_roles() -> Vec<Role> {
    vec![Role::Combined]
}

impl NodeConfig {
    /// Whether this node runs `role`; `combined` runs meta, cell and router.
    pub fn runs(&self, role: Role) -> bool {
        self.roles
            .iter()
            .any(|r| *r == role || *r == Role::Combined)
    }
}

/// A service a node process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A voter of the Raft metadata group.
    Meta,
    /// The region's storage cell (RocketMQ gRPC, log, replication).
    Cell,
    /// The routing layer in front of the cells.
    Router,
    /// All three in one process.
    Combined,
}

/// TLS material (`[tls]`): PEM files, read by the process that serves or dials; paths are taken as
/// written (relative paths resolve against the process's working directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate(s) that peers' certificates must chain to.
    pub ca_cert: PathBuf,
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// Authentication of admin APIs (`[auth]`). The configuration names where the secret is, never the
/// secret itself, so the file can be shared and committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Where the admin bearer token is read from.
    pub admin_token: SecretRef,
}

/// A reference to a secret held outside the configuration, written as a table with exactly one key:
/// `{ env = "NAME" }` or `{ file = "/path" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SecretRefTable", into = "SecretRefTable")]
pub enum SecretRef {
    /// The secret is the value of this environment variable.
    Env(String),
    /// The secret is the content of this file, trailing newline removed.
    File(PathBuf),
}

/// The TOML shape of a [`SecretRef`]; a table rather than an enum so that a wrong key gets a message
/// naming the two allowed ones.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRefTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
}

impl TryFrom<SecretRefTable> for SecretRef {
    type Error = &'static str;

    fn try_from(table: SecretRefTable) -> Result<Self, Self::Error> {
        match (table.env, table.file) {
            (Some(name), None) => Ok(Self::Env(name)),
            (None, Some(path)) => Ok(Self::File(path)),
            _ => {
                Err("give exactly one of `env` or `file`, e.g. { env = \"MERIDIAN_ADMIN_TOKEN\" }")
            }
        }
    }
}

impl From<SecretRef> for SecretRefTable {
    fn from(secret: SecretRef) -> Self {
        match secret {
            SecretRef::Env(name) => Self {
                env: Some(name),
                file: None,
            },
            SecretRef::File(path) => Self {
                env: None,
                file: Some(path),
            },
        }
    }
}

impl FabricConfig {
    /// Parses TOML text. Checks the shape only (unknown fields, types, names and endpoints); call
    /// [`validate`](Self::validate) next. Errors carry the field path and the line and column.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        // A syntax error has no field path; a schema error gets the path serde_path_to_error tracked.
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|error| ConfigError::from_toml(text, String::new(), error))?;
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            ConfigError::from_toml(text, path, error.into_inner())
        })
    }

    /// Writes the configuration as TOML that [`from_toml_str`](Self::from_toml_str) reads back to an
    /// equal value.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|source| ConfigError::Serialize { source })
    }

    /// Checks every rule of `docs/configuration.md` and, on success, derives the latency map and the
    /// meta timeouts. Returns the first broken rule: regions first (everything refers to them), then
    /// `node`, `links`, `cell`, `meta`, `tls`, `auth`.
    pub fn validate(self) -> Result<Fabric, ConfigError> {
        crate::validate::validate(self)
    }

    /// The names of the configured regions, in file order.
    pub fn region_names(&self) -> Vec<RegionName> {
        self.regions.iter().map(|r| r.name.clone()).collect()
    }
}
