//! The cell's hybrid logical clock.
//!
//! Every record gets an HLC stamp at its origin; receivers advance their clock past the stamps
//! they apply, so stamps order causally across regions even when wall clocks disagree. The clock
//! is `uhlc` (maintained, lock-free reads through `&self`, pluggable physical clock), wrapped so
//! that the rest of the cell sees plain `u64` stamps and a physical time in milliseconds.

use std::time::Duration;

use uhlc::{HLC, HLCBuilder, NTP64, Timestamp};

/// A hybrid logical clock shared by the writer and everything that stamps records.
pub struct Hlc {
    inner: HLC,
}

impl std::fmt::Debug for Hlc {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Hlc").finish_non_exhaustive()
    }
}

/// Milliseconds since the UNIX epoch of an NTP64 stamp's physical part.
pub fn stamp_ms(stamp: u64) -> u64 {
    let duration = NTP64(stamp).to_duration();
    duration.as_millis() as u64
}

/// The NTP64 stamp of a wall time in milliseconds since the UNIX epoch (logical counter zero).
pub fn ms_to_stamp(ms: u64) -> u64 {
    NTP64::from(Duration::from_millis(ms)).0
}

impl Hlc {
    /// A clock on the system wall clock; remote stamps more than `max_delta` ahead of it are
    /// refused by [`Hlc::observe`].
    pub fn system(max_delta: Duration) -> Self {
        Hlc {
            inner: HLCBuilder::new().with_max_delta(max_delta).build(),
        }
    }

    /// A clock on a given physical clock (tests and clock-skew injection).
    pub fn with_physical_clock(clock: fn() -> NTP64, max_delta: Duration) -> Self {
        Hlc {
            inner: HLCBuilder::new()
                .with_clock(clock)
                .with_max_delta(max_delta)
                .build(),
        }
    }

    /// A new stamp, greater than every stamp issued or observed before.
    pub fn now(&self) -> u64 {
        self.inner.new_timestamp().get_time().0
    }

    /// Advances the clock past a stamp received from elsewhere. Fails when the stamp is further
    /// ahead of the local physical clock than the configured maximum delta.
    pub fn observe(&self, stamp: u64) -> Result<(), uhlc::ExceedingDeltaError> {
        let remote = Timestamp::new(NTP64(stamp), *self.inner.get_id());
        self.inner.update_with_timestamp(&remote)
    }
}
