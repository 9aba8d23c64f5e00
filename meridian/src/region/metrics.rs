//! The Prometheus endpoint of each region (`GET /metrics`, text format 0.0.4): storage and
//! broker gauges of the region's cell, its replicator's link counters
//! (`meridian_replication_*`) with the position applied from each origin region, and the
//! state of its meta node and meta agent (`meridian_meta_*`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use meridian_cell::grpc::{FrontStats, ReplicationStatus};
use meridian_cell::messaging::Broker;
use meridian_cell::storage::Storage;
use meridian_meta::MetaNode;
use meridian_replicator::quic::metrics::render_prometheus;
use meridian_replicator::quic::{LinkStats, Replicator, load_checkpoint};
use meridian_router::Health;
use tokio::sync::watch;

use super::AgentStatus;
use super::routing::{RegionRouter, RouterStats};

/// What one region's metrics endpoint reads.
#[derive(Clone)]
pub(crate) struct RegionMetrics {
    pub(crate) region: String,
    /// The RocketMQ front's requests, latencies and messages.
    pub(crate) front: Arc<FrontStats>,
    /// The region's router: health of every region, lease, failover events.
    pub(crate) router: Arc<RegionRouter>,
    pub(crate) storage: Arc<Storage>,
    pub(crate) broker: Arc<Broker>,
    pub(crate) replicator: Arc<Replicator>,
    pub(crate) meta: MetaNode,
    pub(crate) agent: watch::Receiver<AgentStatus>,
    /// The other regions, whose records this one receives.
    pub(crate) origins: Vec<String>,
}

/// The replicator's counters, by name without the metric prefix.
pub(crate) fn link_counters(stats: &LinkStats) -> Vec<(&'static str, &'static str, u64)> {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    vec![
        (
            "applied_records",
            "Records appended from inbound links.",
            load(&stats.applied_records),
        ),
        (
            "duplicates_dropped",
            "Received records dropped because their message id was already stored.",
            load(&stats.duplicates_dropped),
        ),
        (
            "sent_records",
            "Entries sent on outbound links.",
            load(&stats.sent_records),
        ),
        (
            "inbound_sessions",
            "Inbound link sessions that reached streaming.",
            load(&stats.inbound_sessions),
        ),
        (
            "outbound_sessions",
            "Outbound link sessions started.",
            load(&stats.outbound_sessions),
        ),
        (
            "outbound_failures",
            "Outbound connection attempts or sessions that failed.",
            load(&stats.outbound_failures),
        ),
    ]
}

impl RegionMetrics {
    /// Replication progress for the admin API's RegionStatus.
    pub(crate) fn replication_status(&self) -> ReplicationStatus {
        ReplicationStatus {
            origins: self.applied_through(),
            counters: link_counters(self.replicator.stats())
                .into_iter()
                .map(|(name, _, value)| (name.to_string(), value))
                .collect(),
            meta_applied_revision: self.agent.borrow().applied_revision,
        }
    }

    /// Position of each origin's log this region holds; an unreadable checkpoint is left out
    /// (and logged) rather than failing the whole report.
    fn applied_through(&self) -> Vec<(String, u64)> {
        self.origins
            .iter()
            .filter_map(|origin| match load_checkpoint(&self.storage, origin) {
                Ok(position) => Some((origin.clone(), position)),
                Err(error) => {
                    tracing::warn!(%origin, %error, "replication checkpoint unreadable");
                    None
                }
            })
            .collect()
    }

    /// The meta node's and the meta agent's series: name, kind, help, value.
    fn meta_series(&self) -> [(&'static str, &'static str, &'static str, u64); 6] {
        let leader = self.meta.leader().map(|(id, _)| id);
        let agent = self.agent.borrow().clone();
        [
            (
                "meridian_meta_leader_known",
                "gauge",
                "1 when this region's meta node knows a leader.",
                u64::from(leader.is_some()),
            ),
            (
                "meridian_meta_is_leader",
                "gauge",
                "1 when this region's meta node leads the meta group.",
                u64::from(leader == Some(self.meta.id())),
            ),
            (
                "meridian_meta_agent_registered",
                "gauge",
                "1 once the region and its cell are recorded in meta.",
                u64::from(agent.registered),
            ),
            (
                "meridian_meta_agent_applied_revision",
                "gauge",
                "Meta revision whose topics and groups the cell holds.",
                agent.applied_revision,
            ),
            (
                "meridian_meta_agent_topics",
                "gauge",
                "Topics of this region per meta that the cell holds.",
                agent.topics.len() as u64,
            ),
            (
                "meridian_meta_agent_heartbeats_accepted_total",
                "counter",
                "Cell heartbeats meta accepted.",
                agent.heartbeats_accepted,
            ),
        ]
    }

    fn render(&self) -> String {
        let storage = &self.storage;
        let broker = &self.broker;
        let region = &self.region;
        let counters = storage.counters();
        let (start, end) = storage.log_range();
        let mut out = String::new();
        for (name, kind, help, value) in [
            (
                "meridian_storage_appended_records_total",
                "counter",
                "Records appended to the commit log.",
                counters.appended_records.load(Ordering::Relaxed),
            ),
            (
                "meridian_storage_appended_bytes_total",
                "counter",
                "Bytes appended to the commit log.",
                counters.appended_bytes.load(Ordering::Relaxed),
            ),
            (
                "meridian_storage_fsync_total",
                "counter",
                "fsync calls on segment files.",
                counters.fsync_calls.load(Ordering::Relaxed),
            ),
            (
                "meridian_storage_write_calls_total",
                "counter",
                "write calls on segment files.",
                counters.write_calls.load(Ordering::Relaxed),
            ),
            (
                "meridian_storage_log_bytes",
                "gauge",
                "Bytes retained in the commit log.",
                end - start,
            ),
            (
                "meridian_storage_log_end_position",
                "gauge",
                "Log position the next record gets.",
                end,
            ),
            (
                "meridian_broker_waiting_polls",
                "gauge",
                "Receives and pulls waiting in a long poll.",
                broker.waiting_polls(),
            ),
            (
                "meridian_broker_pending_timers",
                "gauge",
                "Delay messages waiting for their delivery time.",
                broker.pending_timers() as u64,
            ),
            (
                "meridian_broker_open_transactions",
                "gauge",
                "Half messages waiting for commit or rollback.",
                broker.open_transactions() as u64,
            ),
        ]
        .into_iter()
        .chain(self.meta_series())
        {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{region=\"{region}\"}} {value}\n"
            ));
        }
        for (name, help, value) in link_counters(self.replicator.stats()) {
            let name = format!("meridian_replication_{name}_total");
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{region=\"{region}\"}} {value}\n"
            ));
        }
        let name = "meridian_replication_applied_through_position";
        out.push_str(&format!(
            "# HELP {name} Position of the origin region's log this region holds.\n# TYPE {name} gauge\n"
        ));
        for (origin, position) in self.applied_through() {
            out.push_str(&format!(
                "{name}{{region=\"{region}\",origin=\"{origin}\"}} {position}\n"
            ));
        }
        // Per outbound link (`region->peer`): lag in messages, bytes and milliseconds, shipped
        // totals, reconnects and verification.
        out.push_str(&render_prometheus(&self.replicator.link_metrics()));
        out.push_str(&self.front.render_prometheus(region));
        self.render_router(region, &mut out);
        out
    }

    /// Health of every region as this one sees it (0 healthy, 1 suspect, 2 failed), the write
    /// lease, refused writes and failover events.
    fn render_router(&self, region: &str, out: &mut String) {
        let stats = &self.router.stats;
        let name = "meridian_region_health";
        out.push_str(&format!(
            "# HELP {name} Health of each region from its heartbeats in meta, as this region sees it: 0 healthy, 1 suspect, 2 failed.\n# TYPE {name} gauge\n"
        ));
        for (peer, health) in stats.health.lock().iter() {
            let value = match health {
                Health::Healthy => 0,
                Health::Suspect => 1,
                Health::Failed => 2,
            };
            out.push_str(&format!(
                "{name}{{region=\"{region}\",peer=\"{peer}\"}} {value}\n"
            ));
        }
        let name = "meridian_write_lease_valid";
        out.push_str(&format!(
            "# HELP {name} 1 while this region holds a write lease confirmed by a meta quorum.\n# TYPE {name} gauge\n{name}{{region=\"{region}\"}} {}\n",
            u8::from(self.router.holds_lease())
        ));
        let name = "meridian_refused_writes_total";
        out.push_str(&format!(
            "# HELP {name} Writes the region's gate refused, by reason.\n# TYPE {name} counter\n"
        ));
        for (label, counter) in RouterStats::REFUSAL_LABELS
            .iter()
            .zip(stats.refused_writes.iter())
        {
            out.push_str(&format!(
                "{name}{{region=\"{region}\",reason=\"{label}\"}} {}\n",
                counter.load(Ordering::Relaxed)
            ));
        }
        for (name, help, counter) in [
            (
                "meridian_failover_home_moves_total",
                "Topic homes this region moved away from a failed region as meta leader.",
                &stats.home_moves_written,
            ),
            (
                "meridian_failover_adoptions_total",
                "Failed regions whose delay messages and open transactions this region adopted.",
                &stats.adoptions,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{region=\"{region}\"}} {}\n",
                counter.load(Ordering::Relaxed)
            ));
        }
    }
}

/// Serves `GET /metrics` until the task is aborted.
pub(crate) async fn serve(listener: tokio::net::TcpListener, metrics: RegionMetrics) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "metrics endpoint stopped");
    }
}
