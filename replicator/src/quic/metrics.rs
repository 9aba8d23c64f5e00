//! Figures of each outbound link, kept in atomics the link task updates and anyone may read.
//!
//! The names are the Prometheus series the binary exports (`meridian_replication_…{link}`,
//! with `link` as `origin->destination`); [`render_prometheus`] writes them in the text
//! exposition format. The `metrics` facade crate is not a dependency of the workspace yet, so the
//! binary appends this text to its own exposition rather than going through a recorder.
//!
//! - `lag_bytes`: origin log bytes between what the destination acknowledged and the log's
//!   visible end (skipped and filtered records included: it is how far behind the link is in
//!   the log).
//! - `lag_messages`: entries shipped and not yet acknowledged (records the link has not read
//!   yet are not counted; `lag_bytes` covers them).
//! - `lag_ms`: now (wall clock) minus the HLC physical time of the oldest shipped, unacknowledged
//!   entry; 0 when nothing is in flight.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::link::verify::Mismatch;

/// The live figures of one outbound link.
#[derive(Debug, Default)]
pub struct LinkMetrics {
    /// `origin->destination`.
    pub link: String,
    /// See the module doc.
    pub lag_messages: AtomicU64,
    /// See the module doc.
    pub lag_bytes: AtomicU64,
    /// See the module doc.
    pub lag_ms: AtomicU64,
    /// Entries shipped (sent in batches; resent ones counted again).
    pub shipped_messages_total: AtomicU64,
    /// Entry bytes shipped.
    pub shipped_bytes_total: AtomicU64,
    /// Connection attempts after the first.
    pub reconnects_total: AtomicU64,
    /// The verification loop's "verified up to" origin position.
    pub verified_up_to: AtomicU64,
    /// Damaged ranges reported by the verification loop.
    pub verify_mismatches_total: AtomicU64,
    /// The most recent damaged range reported.
    pub last_mismatch: Mutex<Option<Mismatch>>,
}

/// A copy of a link's figures at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMetricsSnapshot {
    /// `origin->destination`.
    pub link: String,
    /// See [`LinkMetrics`].
    pub lag_messages: u64,
    /// See [`LinkMetrics`].
    pub lag_bytes: u64,
    /// See [`LinkMetrics`].
    pub lag_ms: u64,
    /// See [`LinkMetrics`].
    pub shipped_messages_total: u64,
    /// See [`LinkMetrics`].
    pub shipped_bytes_total: u64,
    /// See [`LinkMetrics`].
    pub reconnects_total: u64,
    /// See [`LinkMetrics`].
    pub verified_up_to: u64,
    /// See [`LinkMetrics`].
    pub verify_mismatches_total: u64,
    /// See [`LinkMetrics`].
    pub last_mismatch: Option<Mismatch>,
}

impl LinkMetrics {
    pub(super) fn new(link: String) -> Self {
        LinkMetrics {
            link,
            ..LinkMetrics::default()
        }
    }

    /// The figures now.
    pub fn snapshot(&self) -> LinkMetricsSnapshot {
        let get = |value: &AtomicU64| value.load(Ordering::Relaxed);
        LinkMetricsSnapshot {
            link: self.link.clone(),
            lag_messages: get(&self.lag_messages),
            lag_bytes: get(&self.lag_bytes),
            lag_ms: get(&self.lag_ms),
            shipped_messages_total: get(&self.shipped_messages_total),
            shipped_bytes_total: get(&self.shipped_bytes_total),
            reconnects_total: get(&self.reconnects_total),
            verified_up_to: get(&self.verified_up_to),
            verify_mismatches_total: get(&self.verify_mismatches_total),
            last_mismatch: *self.last_mismatch.lock(),
        }
    }
}

/// Milliseconds of the physical part of an HLC stamp (NTP64: seconds in the upper 32 bits,
/// the fraction in the lower 32).
pub fn hlc_physical_ms(hlc: u64) -> u64 {
    (hlc >> 32) * 1_000 + (((hlc & 0xffff_ffff) * 1_000) >> 32)
}

/// One exported series: its name after `meridian_replication_`, its type, and its value.
type Series = (&'static str, &'static str, fn(&LinkMetricsSnapshot) -> u64);

/// The links' figures in the Prometheus text exposition format.
pub fn render_prometheus(links: &[LinkMetricsSnapshot]) -> String {
    let series: [Series; 8] = [
        ("lag_messages", "gauge", |s| s.lag_messages),
        ("lag_bytes", "gauge", |s| s.lag_bytes),
        ("lag_ms", "gauge", |s| s.lag_ms),
        ("shipped_messages_total", "counter", |s| {
            s.shipped_messages_total
        }),
        ("shipped_bytes_total", "counter", |s| s.shipped_bytes_total),
        ("reconnects_total", "counter", |s| s.reconnects_total),
        ("verified_up_to", "gauge", |s| s.verified_up_to),
        ("verify_mismatches_total", "counter", |s| {
            s.verify_mismatches_total
        }),
    ];
    let mut out = String::new();
    for (name, kind, value) in series {
        let _ = writeln!(out, "# TYPE meridian_replication_{name} {kind}");
        for link in links {
            let label = link.link.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "meridian_replication_{name}{{link=\"{label}\"}} {}",
                value(link)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_stamps_convert_to_milliseconds() {
        let stamp = (1_700_000_000u64 << 32) | (1u64 << 31);
        assert_eq!(hlc_physical_ms(stamp), 1_700_000_000_500);
    }

    #[test]
    fn the_exposition_names_every_series_per_link() {
        let metrics = LinkMetrics::new("eu->us".into());
        metrics.lag_bytes.store(42, Ordering::Relaxed);
        let text = render_prometheus(&[metrics.snapshot()]);
        assert!(text.contains("meridian_replication_lag_bytes{link=\"eu->us\"} 42\n"));
        assert!(text.contains("# TYPE meridian_replication_verify_mismatches_total counter\n"));
        assert_eq!(text.lines().count(), 16);
    }
}
