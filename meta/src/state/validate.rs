//! Input rules shared by the commands: names, topic policies, retry policies, and the limits
//! that keep every stored collection bounded.

use serde::{Deserialize, Serialize};

use super::State;
use super::model::{
    ConsumerGroup, RegionStatus, ReplicationMode, RetryPolicy, TopicSpec, Topology,
};
use crate::error::MetaError;

/// Bounds on what one command may carry. Part of the replicated state so every replica
/// enforces the same limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub name_bytes_max: usize,
    pub endpoints_per_object_max: usize,
    pub queue_count_max: u32,
    pub regions_per_topic_max: usize,
    /// Sync-quorum replication needs a majority of at least two regions to mean anything.
    pub sync_quorum_regions_min: usize,
    pub topics_per_group_max: usize,
    pub permissions_per_user_max: usize,
    pub retry_attempts_max: u32,
    pub retry_backoff_ms_max: u64,
    pub heartbeat_batch_cells_max: usize,
    pub message_group_lease_ms_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            name_bytes_max: 128,
            endpoints_per_object_max: 16,
            queue_count_max: 1024,
            regions_per_topic_max: 32,
            sync_quorum_regions_min: 2,
            topics_per_group_max: 256,
            permissions_per_user_max: 256,
            retry_attempts_max: 64,
            retry_backoff_ms_max: 24 * 60 * 60 * 1000,
            heartbeat_batch_cells_max: 4096,
            message_group_lease_ms_max: 10 * 60 * 1000,
        }
    }
}

impl Limits {
    /// Names are ASCII letters, digits and `. _ - %` (RocketMQ's retry topics use `%`).
    pub(super) fn check_name(&self, kind: &str, name: &str) -> Result<(), MetaError> {
        let reason = if name.is_empty() {
            Some("empty".to_string())
        } else if name.len() > self.name_bytes_max {
            Some(format!("longer than {} bytes", self.name_bytes_max))
        } else {
            let bad = name
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || "._-%".contains(*c)));
            bad.map(|bad| format!("character {bad:?} not allowed"))
        };
        reason.map_or(Ok(()), |reason| {
            Err(MetaError::InvalidName {
                kind: kind.to_string(),
                name: name.to_string(),
                reason,
            })
        })
    }

    pub(super) fn check_count(
        &self,
        what: &str,
        count: usize,
        max: usize,
    ) -> Result<(), MetaError> {
        if count > max {
            return Err(MetaError::LimitExceeded {
                what: what.to_string(),
                count,
                max,
            });
        }
        Ok(())
    }

    pub(super) fn check_endpoints(
        &self,
        what: &str,
        endpoints: &[String],
    ) -> Result<(), MetaError> {
        self.check_count(
            &format!("endpoints of {what}"),
            endpoints.len(),
            self.endpoints_per_object_max,
        )
    }
}

impl State {
    /// Checks a topic spec against the policy rules and the current regions.
    pub(super) fn check_topic_spec(&self, spec: &TopicSpec) -> Result<(), MetaError> {
        let limits = &self.limits;
        limits.check_name("topic", &spec.name)?;
        if spec.queue_count == 0 || spec.queue_count > limits.queue_count_max {
            return Err(MetaError::QueueCountOutOfRange {
                topic: spec.name.clone(),
                queue_count: spec.queue_count,
                max: limits.queue_count_max,
            });
        }
        if spec.regions.is_empty() {
            return Err(MetaError::TopicWithoutRegions {
                topic: spec.name.clone(),
            });
        }
        limits.check_count(
            &format!("regions of topic `{}`", spec.name),
            spec.regions.len(),
            limits.regions_per_topic_max,
        )?;
        if let Some(missing) = spec
            .regions
            .iter()
            .find(|region| !self.regions.contains_key(*region))
        {
            return Err(MetaError::RegionNotFound {
                region: missing.clone(),
            });
        }
        if spec.replication == ReplicationMode::SyncQuorum
            && spec.regions.len() < limits.sync_quorum_regions_min
        {
            return Err(MetaError::SyncQuorumTooFewRegions {
                topic: spec.name.clone(),
                count: spec.regions.len(),
                min: limits.sync_quorum_regions_min,
            });
        }
        if let Topology::ActiveStandby { home } = &spec.topology
            && !spec.regions.contains(home)
        {
            return Err(MetaError::HomeNotAmongRegions {
                topic: spec.name.clone(),
                home: home.clone(),
            });
        }
        Ok(())
    }

    /// A region may become (or stay chosen as) a home only while it is active.
    pub(super) fn check_home_active(&self, home: &str) -> Result<(), MetaError> {
        match self.regions.get(home) {
            None => Err(MetaError::RegionNotFound {
                region: home.to_string(),
            }),
            Some(region) if region.status != RegionStatus::Active => {
                Err(MetaError::RegionNotActive {
                    region: home.to_string(),
                    status: format!("{:?}", region.status).to_lowercase(),
                })
            }
            Some(_) => Ok(()),
        }
    }

    pub(super) fn check_consumer_group(&self, group: &ConsumerGroup) -> Result<(), MetaError> {
        let limits = &self.limits;
        limits.check_name("consumer group", &group.name)?;
        limits.check_count(
            &format!("topics of consumer group `{}`", group.name),
            group.topics.len(),
            limits.topics_per_group_max,
        )?;
        if let Some(missing) = group
            .topics
            .iter()
            .find(|topic| !self.topics.contains_key(*topic))
        {
            return Err(MetaError::TopicNotFound {
                topic: missing.clone(),
            });
        }
        check_retry_policy(limits, &group.name, &group.retry)
    }
}

fn check_retry_policy(limits: &Limits, group: &str, retry: &RetryPolicy) -> Result<(), MetaError> {
    let reason = if retry.max_attempts == 0 {
        Some("max_attempts must be at least 1".to_string())
    } else if retry.max_attempts > limits.retry_attempts_max {
        Some(format!(
            "max_attempts {} exceeds {}",
            retry.max_attempts, limits.retry_attempts_max
        ))
    } else if retry.initial_backoff_ms > retry.max_backoff_ms {
        Some(format!(
            "initial_backoff_ms {} exceeds max_backoff_ms {}",
            retry.initial_backoff_ms, retry.max_backoff_ms
        ))
    } else if retry.max_backoff_ms > limits.retry_backoff_ms_max {
        Some(format!(
            "max_backoff_ms {} exceeds {}",
            retry.max_backoff_ms, limits.retry_backoff_ms_max
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(MetaError::InvalidRetryPolicy {
            group: group.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}
