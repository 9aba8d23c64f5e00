//! Clock skew injection: an offset on the region's wall clock as its cell sees it (the HLC that
//! stamps records, the broker's timers and invisibility), so a drill can run one region ahead
//! of or behind the others and check that ordering, deduplication and delivery still hold.
//!
//! The HLC takes a plain `fn` as its physical clock, so the offset is process-wide: it is for
//! `meridian start` (one region per process) and is refused once set to another value.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_cell::messaging::Clock;

static OFFSET_MS: AtomicI64 = AtomicI64::new(0);
static SET: AtomicBool = AtomicBool::new(false);

/// Largest offset accepted either way: a day.
pub(crate) const MAX_CLOCK_OFFSET_MS: i64 = 86_400_000;

/// Sets this process's clock offset; fails if it is out of range or another one was set.
pub(crate) fn set_offset_ms(offset_ms: i64) -> anyhow::Result<()> {
    anyhow::ensure!(
        offset_ms.abs() <= MAX_CLOCK_OFFSET_MS,
        "--clock-offset-ms {offset_ms}: at most {MAX_CLOCK_OFFSET_MS} either way"
    );
    if SET.swap(true, Ordering::SeqCst) && OFFSET_MS.load(Ordering::SeqCst) != offset_ms {
        anyhow::bail!("a clock offset is already set in this process");
    }
    OFFSET_MS.store(offset_ms, Ordering::SeqCst);
    Ok(())
}

/// Milliseconds since the Unix epoch on the skewed clock.
fn skewed_now_ms() -> u64 {
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64);
    (real + OFFSET_MS.load(Ordering::Relaxed)).max(0) as u64
}

/// The HLC's physical clock with the offset applied.
pub(crate) fn skewed_ntp64() -> uhlc::NTP64 {
    uhlc::NTP64::from(Duration::from_millis(skewed_now_ms()))
}

/// The broker's clock with the offset applied.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SkewedClock;

impl Clock for SkewedClock {
    fn now_ms(&self) -> u64 {
        skewed_now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_offsets_are_refused() {
        assert!(set_offset_ms(MAX_CLOCK_OFFSET_MS + 1).is_err());
    }
}
