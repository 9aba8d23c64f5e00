//! Write leases: a region stops taking writes it might lose to a failover before any other
//! region may be promoted in its place.
//!
//! The holder renews its lease with a *linearizable* exchange with meta (a read-index read the
//! meta leader confirms with a quorum; a plain heartbeat acknowledgement would not do, since a
//! deposed leader may still answer): a renewal sent at `sent_ms` (holder's clock) keeps the
//! lease until `sent_ms + write_lease_ms`. Meta records heartbeats at its own clock when they
//! arrive, never before they were sent; the fabric may promote another region only after
//! `last_heartbeat_ms + write_lease_ms + max_clock_skew_ms` (meta's clock). The margin covers
//! the offset between meta nodes' wall clocks (a new meta leader judges a heartbeat an old one
//! recorded) and the holder's clock running slow over the lease; with those bounded, the
//! holder's last possible write comes before the first promoted write (property-tested below).

use serde::{Deserialize, Serialize};

/// Lease length from a confirmed renewal, ms.
pub const DEFAULT_WRITE_LEASE_MS: u64 = 1_000;
/// Bound on clock offset between meta nodes plus holder clock drift over a lease, ms.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 250;

/// Lease settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasePolicy {
    /// Lease length from a confirmed renewal's send time, ms.
    pub write_lease_ms: u64,
    /// Safety margin for clocks, ms.
    pub max_clock_skew_ms: u64,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        LeasePolicy {
            write_lease_ms: DEFAULT_WRITE_LEASE_MS,
            max_clock_skew_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
        }
    }
}

impl LeasePolicy {
    /// When the fabric may promote another region in place of one whose latest heartbeat meta
    /// recorded at `last_heartbeat_ms` (meta's clock).
    pub fn promotion_allowed_at_ms(&self, last_heartbeat_ms: u64) -> u64 {
        last_heartbeat_ms
            .saturating_add(self.write_lease_ms)
            .saturating_add(self.max_clock_skew_ms)
    }
}

/// The holder's side: the lease as its confirmed renewals extend it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteLease {
    valid_until_ms: u64,
}

impl WriteLease {
    /// A renewal sent at `sent_ms` was confirmed by a meta quorum.
    pub fn confirmed(&mut self, policy: &LeasePolicy, sent_ms: u64) {
        self.valid_until_ms = self
            .valid_until_ms
            .max(sent_ms.saturating_add(policy.write_lease_ms));
    }

    /// Whether writes that a failover could take over may be acknowledged at `now_ms`.
    pub fn is_valid(&self, now_ms: u64) -> bool {
        now_ms < self.valid_until_ms
    }

    /// When the lease runs out (holder's clock).
    pub fn valid_until_ms(&self) -> u64 {
        self.valid_until_ms
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_lease_runs_from_the_send_time_of_its_latest_confirmed_renewal() {
        let policy = LeasePolicy::default();
        let mut lease = WriteLease::default();
        assert!(!lease.is_valid(0), "no lease before the first renewal");
        lease.confirmed(&policy, 5_000);
        assert!(lease.is_valid(5_999));
        assert!(!lease.is_valid(6_000));
        // A late confirmation of an older renewal never shortens it.
        lease.confirmed(&policy, 4_000);
        assert_eq!(lease.valid_until_ms(), 6_000);
        assert_eq!(policy.promotion_allowed_at_ms(5_100), 6_350);
    }

    proptest! {
        /// Whatever the renewals, delays and clock offsets: with every meta node's clock within
        /// half the margin of true time, the holder's last moment of validity (real time) is
        /// never after the first moment any meta node allows a promotion (real time). The
        /// holder's own offset is unbounded: it only measures durations on its clock.
        #[test]
        fn the_holder_stops_before_any_promotion(
            sends in proptest::collection::vec(0u64..100_000, 1..20),
            delays in proptest::collection::vec(0u64..5_000, 20),
            recorder_offset in -125i64..=125,
            judge_offset in -125i64..=125,
            holder_offset in 0i64..100_000,
        ) {
            let policy = LeasePolicy::default();
            let mut lease = WriteLease::default();
            let mut last_recorded = 0u64;
            for (index, real_send) in sends.iter().enumerate() {
                lease.confirmed(&policy, (*real_send as i64 + holder_offset) as u64);
                let real_arrival = *real_send + delays[index % delays.len()];
                last_recorded =
                    last_recorded.max((real_arrival as i64 + recorder_offset).max(0) as u64);
            }
            let holder_valid_until_real = lease.valid_until_ms() as i64 - holder_offset;
            let promotion_real =
                policy.promotion_allowed_at_ms(last_recorded) as i64 - judge_offset;
            prop_assert!(
                holder_valid_until_real <= promotion_real,
                "holder valid until {holder_valid_until_real}, promotion at {promotion_real}"
            );
        }
    }
}
