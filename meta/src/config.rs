//! Node configuration. Raft timers derive from the expected inter-region round trip so one
//! knob tunes a WAN deployment.
//!
//! Derivation (all in milliseconds, `rtt` = `expected_rtt_ms`):
//! - heartbeat interval = max(100, 2 × rtt). openraft also uses the heartbeat interval as the
//!   deadline of every AppendEntries, vote and read-index round, so it must cover one round
//!   trip plus a synced log append with room to spare; 2 × rtt does.
//! - election timeout min = max(4 × heartbeat, heartbeat + 3 × rtt): several heartbeats may be
//!   lost before a follower starts an election, and a slow heartbeat is never mistaken for a
//!   dead leader.
//! - election timeout max = 1.4 × min, to spread candidates apart.
//!
//! The election timeout here is what a follower actually waits after it last heard from a live
//! leader before it campaigns: a time drawn from `[min, max)`. openraft 0.9 makes that wait
//! its leader lease (its `election_timeout_max`) plus a draw from its own
//! `[election_timeout_min, election_timeout_max)`, so the two are translated: openraft max =
//! our max / 2 and openraft min = our min − our max / 2 (a candidate whose election failed
//! retries after a draw from that smaller range). Handing our values to openraft unchanged
//! would make the real wait 1.5 to 2 times the configured one: an earlier version measured
//! 1.2-1.6 s to elect with a configured 400..800 ms.
//!
//! Defaults: rtt = 0 (one data centre, tests): heartbeat 100, election 400..560. rtt = 100
//! (50 ms one way): heartbeat 200, election 800..1120. rtt = 200: 400, 1600..2240.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::NodeError;
use crate::raft_types::NodeId;
use crate::state::Limits;

/// Configuration of one meta node.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    pub node_id: NodeId,
    /// Expected round trip between the farthest meta nodes.
    pub expected_rtt_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Deadline of one Raft RPC to a peer (append, vote); snapshots get `snapshot_timeout_ms`.
    pub raft_rpc_timeout_ms: u64,
    pub snapshot_timeout_ms: u64,
    /// Build a snapshot once this many entries were applied since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log after a snapshot, so slightly lagging followers catch up from
    /// the log rather than by snapshot.
    pub log_entries_kept_after_snapshot: u64,
    /// Changes retained for watch resumption.
    pub change_log_capacity_revisions: usize,
    /// Deadline of a write forwarded to the leader, and of a linearizable read.
    pub request_timeout_ms: u64,
    /// Changes sent per watch message batch before yielding.
    pub watch_batch_changes_max: usize,
    /// Concurrent watch streams one node serves.
    pub watchers_max: usize,
    /// Cell heartbeats are flushed as one Raft write this often...
    pub heartbeat_flush_interval_ms: u64,
    /// ...or sooner, once this many distinct cells are pending.
    pub heartbeat_batch_cells_max: usize,
    pub limits: Limits,
    /// Peer address → the address this node dials instead (a fault proxy in drills). The
    /// membership keeps the peer's own address; only this node's outgoing Raft and forwarding
    /// connections go through the replacement, which must be on the peer's host address so its
    /// TLS name still matches.
    pub dial_via: BTreeMap<String, String>,
}

impl MetaConfig {
    /// A configuration with every timer derived from `expected_rtt_ms`.
    pub fn new(node_id: NodeId, expected_rtt_ms: u64) -> Self {
        let heartbeat_interval_ms = (2 * expected_rtt_ms).max(100);
        let election_timeout_min_ms =
            (4 * heartbeat_interval_ms).max(heartbeat_interval_ms + 3 * expected_rtt_ms);
        Self {
            node_id,
            expected_rtt_ms,
            heartbeat_interval_ms,
            election_timeout_min_ms,
            election_timeout_max_ms: election_timeout_min_ms * 7 / 5,
            raft_rpc_timeout_ms: (election_timeout_min_ms / 2).max(2 * expected_rtt_ms),
            snapshot_timeout_ms: 10_000 + 10 * expected_rtt_ms,
            snapshot_every_entries: 5_000,
            log_entries_kept_after_snapshot: 1_000,
            change_log_capacity_revisions: 10_000,
            request_timeout_ms: 5_000 + 4 * expected_rtt_ms,
            watch_batch_changes_max: 256,
            watchers_max: 1_024,
            heartbeat_flush_interval_ms: 1_000,
            heartbeat_batch_cells_max: 1_024,
            limits: Limits::default(),
            dial_via: BTreeMap::new(),
        }
    }

    /// Checks the relations openraft and the watch window rely on.
    pub fn validate(&self) -> Result<(), NodeError> {
        let fail = |field: &'static str, reason: String| Err(NodeError::Config { field, reason });
        if self.heartbeat_interval_ms == 0 {
            return fail("heartbeat_interval_ms", "must be positive".into());
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms {
            return fail(
                "election_timeout_min_ms",
                format!(
                    "{} must exceed heartbeat_interval_ms {}",
                    self.election_timeout_min_ms, self.heartbeat_interval_ms
                ),
            );
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return fail(
                "election_timeout_max_ms",
                format!(
                    "{} must exceed election_timeout_min_ms {}",
                    self.election_timeout_max_ms, self.election_timeout_min_ms
                ),
            );
        }
        let (openraft_min, openraft_max) = self.openraft_election_timeouts_ms();
        if openraft_min <= self.heartbeat_interval_ms || openraft_min >= openraft_max {
            return fail(
                "election_timeout_max_ms",
                format!(
                    "{}..{} leaves openraft {openraft_min}..{openraft_max}: min - max / 2 must \
                     exceed heartbeat_interval_ms {} and max must stay under 2 x min",
                    self.election_timeout_min_ms,
                    self.election_timeout_max_ms,
                    self.heartbeat_interval_ms
                ),
            );
        }
        if self.change_log_capacity_revisions == 0 {
            return fail("change_log_capacity_revisions", "must be positive".into());
        }
        if self.heartbeat_batch_cells_max == 0
            || self.heartbeat_batch_cells_max > self.limits.heartbeat_batch_cells_max
        {
            return fail(
                "heartbeat_batch_cells_max",
                format!("must be in 1..={}", self.limits.heartbeat_batch_cells_max),
            );
        }
        Ok(())
    }

    /// openraft's (lease-based) timers for our election window; see the module docs.
    fn openraft_election_timeouts_ms(&self) -> (u64, u64) {
        let max = self.election_timeout_max_ms / 2;
        (self.election_timeout_min_ms.saturating_sub(max), max)
    }

    pub(crate) fn raft_config(&self) -> Result<openraft::Config, NodeError> {
        let (election_timeout_min, election_timeout_max) = self.openraft_election_timeouts_ms();
        let config = openraft::Config {
            cluster_name: "meridian-meta".to_string(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min,
            election_timeout_max,
            install_snapshot_timeout: self.snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.log_entries_kept_after_snapshot,
            ..Default::default()
        };
        config.validate().map_err(|error| NodeError::Config {
            field: "raft",
            reason: error.to_string(),
        })
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_timers_validate_and_translate_to_openraft_lease_plus_timeout() {
        for (rtt, heartbeat, min, max) in [
            (0, 100, 400, 560),
            (100, 200, 800, 1_120),
            (200, 400, 1_600, 2_240),
        ] {
            let config = MetaConfig::new(1, rtt);
            config.validate().expect("defaults are valid");
            assert_eq!(
                (
                    config.heartbeat_interval_ms,
                    config.election_timeout_min_ms,
                    config.election_timeout_max_ms
                ),
                (heartbeat, min, max)
            );
            let raft = config
                .raft_config()
                .expect("openraft accepts the translation");
            // A follower waits openraft's lease (its max) plus a draw from its range: exactly
            // our [min, max).
            assert_eq!(raft.election_timeout_max + raft.election_timeout_min, min);
            assert_eq!(2 * raft.election_timeout_max, max);
        }
    }

    #[test]
    fn an_election_window_openraft_cannot_express_is_refused() {
        let mut config = MetaConfig::new(1, 0);
        config.election_timeout_max_ms = 2 * config.election_timeout_min_ms;
        let error = config.validate().expect_err("openraft min would be 0");
        assert!(
            error.to_string().contains("election_timeout_max_ms"),
            "{error}"
        );
    }
}
