//! Region health from heartbeats: healthy, suspect, failed. Sans-IO: fed the time of each
//! region's latest heartbeat and `now_ms`.
//!
//! Defaults and why: cells heartbeat every [`DEFAULT_HEARTBEAT_INTERVAL_MS`] (250 ms); three
//! missed beats make a region suspect (750 ms), six failed (1,500 ms). Promotion elsewhere then
//! waits for the failed region's write lease ([`crate::lease`], 1,000 ms from the last beat meta
//! received plus a drift margin of 250 ms, already inside the 1,500 ms), so a home moves about
//! 1.5 s after the region's last heartbeat and clients redirect within a round trip of the epoch
//! change: inside the 3 s RTO budget with room for a meta write under WAN delay.

use serde::{Deserialize, Serialize};

/// Cell heartbeat period.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 250;
/// Silence after which a region is suspect.
pub const DEFAULT_SUSPECT_AFTER_MS: u64 = 750;
/// Silence after which a region is failed.
pub const DEFAULT_FAILED_AFTER_MS: u64 = 1_500;

/// A region's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Heartbeats arrive.
    Healthy,
    /// Some heartbeats are missing; nothing moves yet.
    Suspect,
    /// Silent long enough: its homes may move once its lease has expired.
    Failed,
}

/// Thresholds of [`health_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthPolicy {
    /// Silence after which a region is suspect, ms.
    pub suspect_after_ms: u64,
    /// Silence after which a region is failed, ms.
    pub failed_after_ms: u64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            suspect_after_ms: DEFAULT_SUSPECT_AFTER_MS,
            failed_after_ms: DEFAULT_FAILED_AFTER_MS,
        }
    }
}

/// The health of a region whose latest heartbeat meta recorded at `last_heartbeat_ms` (0:
/// never), at `now_ms`. A region that never beat is failed: it cannot hold anything.
pub fn health_at(policy: &HealthPolicy, last_heartbeat_ms: u64, now_ms: u64) -> Health {
    if last_heartbeat_ms == 0 {
        return Health::Failed;
    }
    let silence_ms = now_ms.saturating_sub(last_heartbeat_ms);
    if silence_ms >= policy.failed_after_ms {
        Health::Failed
    } else if silence_ms >= policy.suspect_after_ms {
        Health::Suspect
    } else {
        Health::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_turns_a_region_suspect_then_failed() {
        let policy = HealthPolicy::default();
        assert_eq!(health_at(&policy, 10_000, 10_000), Health::Healthy);
        assert_eq!(health_at(&policy, 10_000, 10_749), Health::Healthy);
        assert_eq!(health_at(&policy, 10_000, 10_750), Health::Suspect);
        assert_eq!(health_at(&policy, 10_000, 11_500), Health::Failed);
        assert_eq!(health_at(&policy, 0, 11_500), Health::Failed);
        // A clock behind the heartbeat (meta's leader changed) is not silence.
        assert_eq!(health_at(&policy, 10_000, 9_000), Health::Healthy);
    }
}
