//! The rules a parsed `FabricConfig` must meet, each reported with its field path and a fix.
//!
//! Regions are checked first because every other section refers to them; then `node`, `links`,
//! `cell`, `meta`, `tls` and `auth`. The first broken rule is returned, so the order is deterministic.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::limits::{
    ASYNC_FLUSH_INTERVAL_MS_MAX, ELECTION_TIMEOUT_MS_MAX, GROUP_COMMIT_BYTES_MAX,
    GROUP_COMMIT_BYTES_MIN, GROUP_COMMIT_WAIT_US_MAX, HEARTBEAT_INTERVAL_MS_MAX, REGIONS_MAX,
    RETENTION_AGE_S_MAX, RETENTION_BYTES_MAX, SEGMENT_SIZE_BYTES_MAX, SEGMENT_SIZE_BYTES_MIN,
};
use crate::config::{
    AuthConfig, CellConfig, FabricConfig, MetaConfig, MetaTimeouts, NodeConfig, Role, SecretRef,
    TlsConfig,
};
use crate::error::ConfigError;
use crate::fabric::Fabric;
use crate::latency::LatencyMap;
use crate::region::RegionName;

/// Longest zone label accepted, in characters.
const ZONE_LEN_MAX: usize = 64;
/// Longest environment variable name accepted for a secret reference, in bytes.
const ENV_NAME_LEN_MAX: usize = 255;

/// Runs every check and derives the latency map and meta timeouts.
pub(crate) fn validate(config: FabricConfig) -> Result<Fabric, ConfigError> {
    check_regions(&config)?;
    let names = config.region_names();
    if let Some(node) = &config.node {
        check_node(node, &names)?;
    }
    let latency = LatencyMap::build(&names, &config.links)?;
    check_cell(&config.cell)?;
    let meta_timeouts = check_meta(&config.meta, &latency)?;
    if let Some(tls) = &config.tls {
        check_tls(tls)?;
    }
    if let Some(auth) = &config.auth {
        check_auth(auth)?;
    }
    Ok(Fabric::from_parts(config, latency, meta_timeouts))
}

fn check_regions(config: &FabricConfig) -> Result<(), ConfigError> {
    let count = config.regions.len();
    if count == 0 || count > REGIONS_MAX {
        return Err(ConfigError::Count {
            path: "regions".to_owned(),
            count,
            fix: format!("configure 1 to {REGIONS_MAX} [[regions]] tables"),
        });
    }
    let mut names: BTreeMap<&RegionName, usize> = BTreeMap::new();
    // Endpoint key (lowercased host, port) -> path of its first use.
    let mut endpoints: BTreeMap<(String, u16), String> = BTreeMap::new();
    // (machine, data_dir) -> path of its first use.
    let mut data_dirs: BTreeMap<(String, &Path), String> = BTreeMap::new();
    for (index, region) in config.regions.iter().enumerate() {
        let path = format!("regions[{index}]");
        if let Some(first) = names.insert(&region.name, index) {
            return Err(ConfigError::DuplicateRegion {
                path: format!("{path}.name"),
                name: region.name.clone(),
                first_path: format!("regions[{first}].name"),
            });
        }
        check_zone(&format!("{path}.zone"), &region.zone)?;
        for (field, endpoint) in region.endpoints() {
            let key = (endpoint.host().to_ascii_lowercase(), endpoint.port());
            let field_path = format!("{path}.{field}");
            if let Some(other_path) = endpoints.get(&key) {
                return Err(ConfigError::EndpointClash {
                    path: field_path,
                    endpoint: endpoint.to_string(),
                    other_path: other_path.clone(),
                });
            }
            endpoints.insert(key, field_path);
        }
        if let Some(dir) = &region.data_dir {
            let dir_path = format!("{path}.data_dir");
            check_file_path(&dir_path, dir)?;
            // Regions on different machines may use the same directory; on one machine (all of
            // loopback counts as one) they would share and corrupt the same files.
            let machine = if region.grpc.is_loopback() {
                "loopback".to_owned()
            } else {
                region.grpc.host().to_ascii_lowercase()
            };
            if let Some(other_path) = data_dirs.get(&(machine.clone(), dir.as_path())) {
                return Err(ConfigError::DataDirClash {
                    path: dir_path,
                    dir: dir.clone(),
                    other_path: other_path.clone(),
                });
            }
            data_dirs.insert((machine, dir.as_path()), dir_path);
        }
    }
    Ok(())
}

fn check_zone(path: &str, zone: &str) -> Result<(), ConfigError> {
    let ok = !zone.is_empty()
        && zone.chars().count() <= ZONE_LEN_MAX
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InvalidText {
            path: path.to_owned(),
            value: zone.to_owned(),
            fix: "a zone is 1 to 64 ASCII letters, digits, '-', '_' or '.', e.g. \"us-east-1a\"",
        })
    }
}

fn check_file_path(path: &str, file: &Path) -> Result<(), ConfigError> {
    if file.as_os_str().is_empty() {
        Err(ConfigError::InvalidText {
            path: path.to_owned(),
            value: String::new(),
            fix: "the path is empty; give a file or directory path, or leave the field out where it is optional",
        })
    } else {
        Ok(())
    }
}

fn check_node(node: &NodeConfig, names: &[RegionName]) -> Result<(), ConfigError> {
    if !names.contains(&node.region) {
        return Err(ConfigError::UnknownRegion {
            path: "node.region".to_owned(),
            name: node.region.clone(),
            known: names.to_vec(),
        });
    }
    if node.roles.is_empty() {
        return Err(ConfigError::Roles {
            path: "node.roles".to_owned(),
            problem: "no role listed".to_owned(),
        });
    }
    for (index, role) in node.roles.iter().enumerate() {
        let path = format!("node.roles[{index}]");
        if node.roles[..index].contains(role) {
            return Err(ConfigError::Roles {
                path,
                problem: format!("{} is listed twice", role_name(*role)),
            });
        }
        if node.roles.len() > 1 && *role == Role::Combined {
            return Err(ConfigError::Roles {
                path,
                problem: "\"combined\" already means meta, cell and router and cannot be mixed with other roles".to_owned(),
            });
        }
    }
    Ok(())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Meta => "\"meta\"",
        Role::Cell => "\"cell\"",
        Role::Router => "\"router\"",
        Role::Combined => "\"combined\"",
    }
}

fn check_range(
    path: &str,
    value: u64,
    min: u64,
    max: u64,
    unit: &'static str,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            path: path.to_owned(),
            value,
            min,
            max,
            unit,
        })
    }
}

fn check_cell(cell: &CellConfig) -> Result<(), ConfigError> {
    let segment = cell.segment_size_bytes;
    check_range(
        "cell.segment_size_bytes",
        segment,
        SEGMENT_SIZE_BYTES_MIN,
        SEGMENT_SIZE_BYTES_MAX,
        "bytes",
    )?;
    check_range(
        "cell.group_commit_max_wait_us",
        cell.group_commit_max_wait_us,
        0,
        GROUP_COMMIT_WAIT_US_MAX,
        "us",
    )?;
    check_range(
        "cell.group_commit_max_bytes",
        cell.group_commit_max_bytes,
        GROUP_COMMIT_BYTES_MIN,
        GROUP_COMMIT_BYTES_MAX,
        "bytes",
    )?;
    if cell.group_commit_max_bytes > segment {
        return Err(ConfigError::Relation {
            path: "cell.group_commit_max_bytes".to_owned(),
            value: cell.group_commit_max_bytes,
            relation: "at most",
            bound: segment,
            bound_from: "cell.segment_size_bytes".to_owned(),
            unit: "bytes",
            why: "a commit batch is written into one segment; lower group_commit_max_bytes or raise segment_size_bytes",
        });
    }
    check_range(
        "cell.async_flush_interval_ms",
        cell.async_flush_interval_ms,
        1,
        ASYNC_FLUSH_INTERVAL_MS_MAX,
        "ms",
    )?;
    check_range(
        "cell.retention_max_age_s",
        cell.retention_max_age_s,
        1,
        RETENTION_AGE_S_MAX,
        "s",
    )?;
    let Some(retention_max_total_bytes) = cell.retention_max_total_bytes else {
        return Ok(());
    };
    check_range(
        "cell.retention_max_total_bytes",
        retention_max_total_bytes,
        1,
        RETENTION_BYTES_MAX,
        "bytes",
    )?;
    let two_segments = segment.saturating_mul(2);
    if retention_max_total_bytes < two_segments {
        return Err(ConfigError::Relation {
            path: "cell.retention_max_total_bytes".to_owned(),
            value: retention_max_total_bytes,
            relation: "at least",
            bound: two_segments,
            bound_from: "2 x cell.segment_size_bytes".to_owned(),
            unit: "bytes",
            why: "retention deletes whole sealed segments and never the active one, so a smaller budget could never be met; raise it or lower segment_size_bytes",
        });
    }
    Ok(())
}

/// Names a meta field for a message, noting when its value was derived rather than written.
fn meta_field(field: &str, explicit: Option<u64>) -> String {
    match explicit {
        Some(_) => format!("meta.{field}"),
        None => format!("meta.{field}, derived"),
    }
}

fn check_meta(meta: &MetaConfig, latency: &LatencyMap) -> Result<MetaTimeouts, ConfigError> {
    let max_rtt_ms = latency.max_rtt_ms();
    let t = MetaTimeouts::derive(max_rtt_ms, meta);
    check_range(
        "meta.heartbeat_interval_ms",
        t.heartbeat_interval_ms,
        1,
        HEARTBEAT_INTERVAL_MS_MAX,
        "ms",
    )?;
    check_range(
        "meta.election_timeout_min_ms",
        t.election_timeout_min_ms,
        1,
        ELECTION_TIMEOUT_MS_MAX,
        "ms",
    )?;
    check_range(
        "meta.election_timeout_max_ms",
        t.election_timeout_max_ms,
        1,
        ELECTION_TIMEOUT_MS_MAX,
        "ms",
    )?;
    let two_heartbeats = t.heartbeat_interval_ms.saturating_mul(2);
    if t.election_timeout_min_ms < two_heartbeats {
        return Err(ConfigError::Relation {
            path: "meta.election_timeout_min_ms".to_owned(),
            value: t.election_timeout_min_ms,
            relation: "at least",
            bound: two_heartbeats,
            bound_from: format!(
                "2 x {}",
                meta_field("heartbeat_interval_ms", meta.heartbeat_interval_ms)
            ),
            unit: "ms",
            why: "one late heartbeat must not start an election; raise the election timeout or lower the heartbeat interval",
        });
    }
    if let Some((rtt, a, b)) = latency.max_rtt()
        && t.election_timeout_min_ms <= rtt
    {
        return Err(ConfigError::Relation {
            path: "meta.election_timeout_min_ms".to_owned(),
            value: t.election_timeout_min_ms,
            relation: "greater than",
            bound: rtt,
            bound_from: format!("largest round trip, {a} <-> {b}"),
            unit: "ms",
            why: "a vote request and its answer must fit in the election timeout or no election can finish; raise it or leave it out to derive it",
        });
    }
    if t.election_timeout_max_ms <= t.election_timeout_min_ms {
        return Err(ConfigError::Relation {
            path: "meta.election_timeout_max_ms".to_owned(),
            value: t.election_timeout_max_ms,
            relation: "greater than",
            bound: t.election_timeout_min_ms,
            bound_from: meta_field("election_timeout_min_ms", meta.election_timeout_min_ms),
            unit: "ms",
            why: "Raft draws each timeout from [min, max) so that candidates rarely collide; widen the range",
        });
    }
    Ok(t)
}

fn check_tls(tls: &TlsConfig) -> Result<(), ConfigError> {
    check_file_path("tls.ca_cert", &tls.ca_cert)?;
    check_file_path("tls.cert", &tls.cert)?;
    check_file_path("tls.key", &tls.key)
}

fn check_auth(auth: &AuthConfig) -> Result<(), ConfigError> {
    match &auth.admin_token {
        SecretRef::File(file) => check_file_path("auth.admin_token.file", file),
        SecretRef::Env(name) => {
            let mut chars = name.chars();
            let ok = name.len() <= ENV_NAME_LEN_MAX
                && chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if ok {
                Ok(())
            } else {
                Err(ConfigError::InvalidText {
                    path: "auth.admin_token.env".to_owned(),
                    value: name.clone(),
                    fix: "an environment variable name is ASCII letters, digits and '_', not starting with a digit, e.g. \"MERIDIAN_ADMIN_TOKEN\"",
                })
            }
        }
    }
}
