//! What the RocketMQ front did, for the region's `/metrics`: requests and failures per RPC, a
//! latency histogram of the calls that answer once (send, ack, change invisible duration, end
//! transaction), and messages produced, delivered and acknowledged.
//!
//! Plain atomics, no global recorder: `meridian dev` runs three cells in one process and each
//! region renders its own figures with its own `region` label.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (Prometheus `le`, the last is `+Inf`).
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The RPCs the front counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// `SendMessage`.
    Send,
    /// `ReceiveMessage` (a long poll: counted, not timed).
    Receive,
    /// `AckMessage`.
    Ack,
    /// `ChangeInvisibleDuration`.
    ChangeInvisibleDuration,
    /// `EndTransaction`.
    EndTransaction,
}

impl Rpc {
    const ALL: [Rpc; 5] = [
        Rpc::Send,
        Rpc::Receive,
        Rpc::Ack,
        Rpc::ChangeInvisibleDuration,
        Rpc::EndTransaction,
    ];

    fn label(self) -> &'static str {
        match self {
            Rpc::Send => "send_message",
            Rpc::Receive => "receive_message",
            Rpc::Ack => "ack_message",
            Rpc::ChangeInvisibleDuration => "change_invisible_duration",
            Rpc::EndTransaction => "end_transaction",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
struct RpcCounters {
    requests: AtomicU64,
    failures: AtomicU64,
    /// One count per bucket of [`LATENCY_BUCKETS_US`] plus `+Inf`, not cumulative.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

/// Counters of one cell's RocketMQ front.
#[derive(Debug, Default)]
pub struct FrontStats {
    rpcs: [RpcCounters; Rpc::ALL.len()],
    produced_messages: AtomicU64,
    delivered_messages: AtomicU64,
    acked_messages: AtomicU64,
    forwarded_sends: AtomicU64,
}

impl FrontStats {
    /// A call answered after `elapsed`; `failed` when its status was not OK.
    pub fn record(&self, rpc: Rpc, elapsed: Duration, failed: bool) {
        let counters = &self.rpcs[rpc.index()];
        counters.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            counters.failures.fetch_add(1, Ordering::Relaxed);
        }
        if rpc == Rpc::Receive {
            return;
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        counters.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        counters.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// Messages stored by a send (not counting forwarded ones).
    pub fn produced(&self, messages: u64) {
        self.produced_messages
            .fetch_add(messages, Ordering::Relaxed);
    }

    /// Messages handed to consumers by a receive.
    pub fn delivered(&self, messages: u64) {
        self.delivered_messages
            .fetch_add(messages, Ordering::Relaxed);
    }

    /// Receipt handles acknowledged.
    pub fn acked(&self, messages: u64) {
        self.acked_messages.fetch_add(messages, Ordering::Relaxed);
    }

    /// A send relayed to the topic's home in another region.
    pub fn forwarded(&self) {
        self.forwarded_sends.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests of `rpc` so far.
    pub fn requests(&self, rpc: Rpc) -> u64 {
        self.rpcs[rpc.index()].requests.load(Ordering::Relaxed)
    }

    /// The figures in the Prometheus text format, every series labelled `region`.
    pub fn render_prometheus(&self, region: &str) -> String {
        let mut out = String::new();
        let region = region.replace('\\', "\\\\").replace('"', "\\\"");
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "meridian_grpc_requests_total",
            "counter",
            "RocketMQ RPCs served, by method.",
        );
        for rpc in Rpc::ALL {
            let value = self.requests(rpc);
            let _ = writeln!(
                out,
                "meridian_grpc_requests_total{{region=\"{region}\",rpc=\"{}\"}} {value}",
                rpc.label()
            );
        }
        family(
            &mut out,
            "meridian_grpc_failures_total",
            "counter",
            "RocketMQ RPCs answered with a status other than OK, by method.",
        );
        for rpc in Rpc::ALL {
            let value = self.rpcs[rpc.index()].failures.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "meridian_grpc_failures_total{{region=\"{region}\",rpc=\"{}\"}} {value}",
                rpc.label()
            );
        }
        family(
            &mut out,
            "meridian_grpc_latency_seconds",
            "histogram",
            "Time from request to answer of the RocketMQ RPCs that answer once.",
        );
        for rpc in Rpc::ALL.into_iter().filter(|rpc| *rpc != Rpc::Receive) {
            let counters = &self.rpcs[rpc.index()];
            let mut cumulative = 0u64;
            for (index, bucket) in counters.buckets.iter().enumerate() {
                cumulative += bucket.load(Ordering::Relaxed);
                let le = LATENCY_BUCKETS_US
                    .get(index)
                    .map_or_else(|| "+Inf".to_string(), |us| format_seconds(*us));
                let _ = writeln!(
                    out,
                    "meridian_grpc_latency_seconds_bucket{{region=\"{region}\",rpc=\"{}\",le=\"{le}\"}} {cumulative}",
                    rpc.label()
                );
            }
            let sum_us = counters.latency_sum_us.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "meridian_grpc_latency_seconds_sum{{region=\"{region}\",rpc=\"{}\"}} {}\nmeridian_grpc_latency_seconds_count{{region=\"{region}\",rpc=\"{}\"}} {cumulative}",
                rpc.label(),
                format_seconds(sum_us),
                rpc.label()
            );
        }
        for (name, help, value) in [
            (
                "meridian_produced_messages_total",
                "Messages stored by sends to this cell.",
                &self.produced_messages,
            ),
            (
                "meridian_delivered_messages_total",
                "Messages handed to consumers by receives.",
                &self.delivered_messages,
            ),
            (
                "meridian_acked_messages_total",
                "Receipt handles acknowledged.",
                &self.acked_messages,
            ),
            (
                "meridian_forwarded_sends_total",
                "Sends relayed to the topic's home in another region.",
                &self.forwarded_sends,
            ),
        ] {
            family(&mut out, name, "counter", help);
            let _ = writeln!(
                out,
                "{name}{{region=\"{region}\"}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// Microseconds as seconds, without float rounding noise (`2500` → `0.0025`).
fn format_seconds(micros: u64) -> String {
    let whole = micros / 1_000_000;
    let fraction = micros % 1_000_000;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_counts_every_call() {
        let stats = FrontStats::default();
        stats.record(Rpc::Send, Duration::from_micros(80), false);
        stats.record(Rpc::Send, Duration::from_micros(700), false);
        stats.record(Rpc::Send, Duration::from_secs(30), true);
        stats.record(Rpc::Receive, Duration::from_secs(20), false);
        stats.produced(2);
        let text = stats.render_prometheus("eu-west");
        let line = |needle: &str| {
            text.lines()
                .find(|line| line.starts_with(needle))
                .unwrap_or_default()
                .to_string()
        };
        assert!(line("meridian_grpc_latency_seconds_bucket{region=\"eu-west\",rpc=\"send_message\",le=\"0.0001\"}").ends_with(" 1"));
        assert!(line("meridian_grpc_latency_seconds_bucket{region=\"eu-west\",rpc=\"send_message\",le=\"0.001\"}").ends_with(" 2"));
        assert!(line("meridian_grpc_latency_seconds_bucket{region=\"eu-west\",rpc=\"send_message\",le=\"10\"}").ends_with(" 2"));
        assert!(line("meridian_grpc_latency_seconds_bucket{region=\"eu-west\",rpc=\"send_message\",le=\"+Inf\"}").ends_with(" 3"));
        assert!(
            line("meridian_grpc_latency_seconds_count{region=\"eu-west\",rpc=\"send_message\"}")
                .ends_with(" 3")
        );
        assert!(
            line("meridian_grpc_latency_seconds_sum{region=\"eu-west\",rpc=\"send_message\"}")
                .ends_with(" 30.00078")
        );
        assert!(
            line("meridian_grpc_failures_total{region=\"eu-west\",rpc=\"send_message\"}")
                .ends_with(" 1")
        );
        assert!(
            line("meridian_grpc_requests_total{region=\"eu-west\",rpc=\"receive_message\"}")
                .ends_with(" 1")
        );
        assert!(!text.contains("rpc=\"receive_message\",le="));
        assert!(line("meridian_produced_messages_total{region=\"eu-west\"}").ends_with(" 2"));
    }

    #[test]
    fn seconds_are_written_exactly() {
        assert_eq!(format_seconds(100), "0.0001");
        assert_eq!(format_seconds(2_500), "0.0025");
        assert_eq!(format_seconds(1_000_000), "1");
        assert_eq!(format_seconds(30_000_780), "30.00078");
    }
}
