//! `[meta]`: Raft timing of the metadata group, derived from the slowest link unless set explicitly.
//!
//! The meta group spans all regions, so its leader's heartbeats and a candidate's vote requests cross
//! the slowest link. Timeouts tuned for one data centre (tens of ms) would cause constant elections
//! across continents; timeouts far above the link latency slow down failover. Deriving them from the
//! largest round-trip time (RTT) between any two regions keeps both in check:
//!
//! ```text
//! rtt                      = max over region pairs (a, b) of one_way(a -> b) + one_way(b -> a)
//! heartbeat_interval_ms    = max(50, rtt)
//! election_timeout_min_ms  = max(300, 5 * rtt, 3 * heartbeat_interval_ms)
//! election_timeout_max_ms  = 2 * election_timeout_min_ms
//! ```
//!
//! One heartbeat per RTT keeps the leader's traffic proportional to what the link can confirm. Five
//! RTTs before an election lets a follower miss a few heartbeats (a lost packet, a GC pause) without
//! starting one; the `3 * heartbeat` term keeps that true when only the heartbeat is set by hand. The
//! 2x spread of the election timeout is Raft's randomisation range that makes split votes unlikely.
//! The floors (50 ms, 300 ms) matter for a single region or a dev fabric on loopback.

use serde::{Deserialize, Serialize};

/// Floor of the derived heartbeat interval, in milliseconds.
pub const HEARTBEAT_INTERVAL_MS_FLOOR: u64 = 50;
/// Floor of the derived minimum election timeout, in milliseconds.
pub const ELECTION_TIMEOUT_MS_FLOOR: u64 = 300;
/// Largest heartbeat interval accepted, in milliseconds.
pub const HEARTBEAT_INTERVAL_MS_MAX: u64 = 10_000;
/// Largest election timeout accepted, in milliseconds: beyond two minutes, failover is too slow to be
/// useful.
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 120_000;

/// Explicit Raft timing of the meta group (`[meta]`). Each field left out is derived (see the module
/// documentation for the formula).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaConfig {
    /// Leader heartbeat period, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Lower bound of the randomised election timeout, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub election_timeout_min_ms: Option<u64>,
    /// Upper bound of the randomised election timeout, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub election_timeout_max_ms: Option<u64>,
}

/// The Raft timing the meta group runs with: explicit values from [`MetaConfig`] where given, derived
/// values elsewhere. Obtained from a validated [`Fabric`](crate::Fabric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaTimeouts {
    /// Leader heartbeat period, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout, in milliseconds.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout, in milliseconds.
    pub election_timeout_max_ms: u64,
}

impl MetaTimeouts {
    /// Applies the formula of the module documentation to the largest round trip `max_rtt_ms`, keeping
    /// every value `explicit` sets. Does not check the result; validation does.
    pub fn derive(max_rtt_ms: u64, explicit: &MetaConfig) -> Self {
        let heartbeat_interval_ms = explicit
            .heartbeat_interval_ms
            .unwrap_or_else(|| HEARTBEAT_INTERVAL_MS_FLOOR.max(max_rtt_ms));
        let election_timeout_min_ms = explicit.election_timeout_min_ms.unwrap_or_else(|| {
            ELECTION_TIMEOUT_MS_FLOOR
                .max(max_rtt_ms.saturating_mul(5))
                .max(heartbeat_interval_ms.saturating_mul(3))
        });
        let election_timeout_max_ms = explicit
            .election_timeout_max_ms
            .unwrap_or_else(|| election_timeout_min_ms.saturating_mul(2));
        Self {
            heartbeat_interval_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_apply_on_a_fast_fabric() {
        let t = MetaTimeouts::derive(0, &MetaConfig::default());
        assert_eq!(
            t,
            MetaTimeouts {
                heartbeat_interval_ms: 50,
                election_timeout_min_ms: 300,
                election_timeout_max_ms: 600,
            }
        );
    }

    #[test]
    fn slow_links_stretch_every_timeout() {
        // us-east <-> ap-south in the dev fabric: 95 ms each way.
        let t = MetaTimeouts::derive(190, &MetaConfig::default());
        assert_eq!(t.heartbeat_interval_ms, 190);
        assert_eq!(t.election_timeout_min_ms, 950);
        assert_eq!(t.election_timeout_max_ms, 1900);
    }

    #[test]
    fn explicit_values_win_and_the_rest_follow_them() {
        let explicit = MetaConfig {
            heartbeat_interval_ms: Some(500),
            ..MetaConfig::default()
        };
        let t = MetaTimeouts::derive(190, &explicit);
        assert_eq!(t.heartbeat_interval_ms, 500);
        // 3 x heartbeat beats 5 x rtt here.
        assert_eq!(t.election_timeout_min_ms, 1500);
        assert_eq!(t.election_timeout_max_ms, 3000);

        let explicit = MetaConfig {
            heartbeat_interval_ms: Some(100),
            election_timeout_min_ms: Some(2000),
            election_timeout_max_ms: Some(2500),
        };
        let t = MetaTimeouts::derive(190, &explicit);
        assert_eq!(
            (
                t.heartbeat_interval_ms,
                t.election_timeout_min_ms,
                t.election_timeout_max_ms
            ),
            (100, 2000, 2500)
        );
    }
}
