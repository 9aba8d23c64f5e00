//! The cell's RocketMQ 5 gRPC front: `apache.rocketmq.v2.MessagingService` over tonic, so that
//! the official RocketMQ 5 clients produce and consume against a cell with only the endpoint
//! changed.
//!
//! **Owns** the translation between protocol messages and [`crate::messaging`] calls, client
//! sessions (settings and Telemetry streams per `x-mq-client-id`), transaction check-backs
//! delivered through Telemetry, request-signature authentication and per-user permissions, and
//! the plain-text and TLS listeners.
//!
//! **Depends on** [`crate::messaging::Broker`] for every semantic decision and on
//! `meridian-proto` for the wire types and the rules in its `CONFORMANCE.md` (the checklist ids
//! such as `R1` or `M3` in comments refer to it).
//!
//! **Must not touch** storage directly, other regions or routing policy: routes name this
//! cell's own endpoint until the router makes them regional.

mod admin;
mod auth;
mod autocreate;
mod consume;
mod convert;
mod forward;
mod receive;
mod service;
mod session;
pub mod stats;
mod status;
mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;

use meridian_proto::admin::v1::admin_server::AdminServer;
use meridian_proto::rocketmq::v2::messaging_service_server::MessagingServiceServer;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

use crate::messaging::Broker;

pub use admin::{AdminConfig, ReplicationStatus, ReplicationStatusSource};
pub use auth::{AuthConfig, UserCredential};
pub use forward::{
    FORWARDED_FROM_HEADER, ForwardFuture, GrpcForwarder, RouteAdvisor, RouteRedirect, SendForwarder,
};
pub use stats::{FrontStats, Rpc};

/// Settings of the gRPC front.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// The address routes tell clients to dial. `None`: echo the endpoint the client dialled,
    /// or the listener's own address when the client sent none.
    pub advertised_endpoint: Option<SocketAddr>,
    /// The broker name in routes.
    pub broker_name: String,
    /// Request-signature authentication; `None` accepts every request (the `authorization`
    /// header is then ignored, CONFORMANCE A3).
    pub auth: Option<AuthConfig>,
    /// Serve TLS with this certificate instead of plain HTTP/2.
    pub tls: Option<TlsPem>,
    /// Largest inbound gRPC message, bytes (T4: above tonic's 4 MiB so that a maximal body fits).
    pub max_decoding_message_bytes: usize,
    /// Invisible duration for receives that send none (auto-renewing clients, R7).
    pub default_invisible_duration_ms: u64,
    /// Shortest and longest long poll granted, ms (R4).
    pub min_long_polling_ms: u64,
    /// See `min_long_polling_ms`.
    pub max_long_polling_ms: u64,
    /// Time kept free before the client's deadline so the final items arrive in time, ms.
    pub long_polling_reserve_ms: u64,
    /// Commands queued per Telemetry stream before new ones are dropped (the client is slow).
    pub max_telemetry_queue_commands: usize,
    /// Clients with sessions (settings or Telemetry streams) at once.
    pub max_client_sessions: usize,
    /// Telemetry streams one client may hold open at once.
    pub max_streams_per_client: usize,
    /// Development convenience (RocketMQ's `autoCreateTopicEnable`): a route query, send or
    /// receive naming an unknown topic creates it as NORMAL with this many queues, and a
    /// receive or heartbeat naming an unknown consumer group creates it (not FIFO). `None`:
    /// unknown topics and groups are refused, as in production.
    pub auto_create_topics: Option<u32>,
    /// Also serve Meridian's admin API (`meridian.admin.v1.Admin`) on this port. It has no
    /// authentication yet, so it cannot be combined with `auth`.
    pub admin: Option<AdminConfig>,
    /// Forwards a send whose messages the write gate gives to another region (active-standby
    /// home, FIFO group owner) to that region's cell; `None` refuses such a send instead.
    pub forwarder: Option<Arc<dyn SendForwarder>>,
    /// Sends route queries to another region's cell when it says so (the router's view of
    /// which region serves a client whose own region cannot); `None` always answers this cell.
    pub route_advisor: Option<Arc<dyn RouteAdvisor>>,
    /// Where the front counts its requests, latencies and messages (the region's `/metrics`
    /// reads the same handle).
    pub stats: Arc<FrontStats>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            advertised_endpoint: None,
            broker_name: "meridian-cell".to_string(),
            auth: None,
            tls: None,
            max_decoding_message_bytes: 16 << 20,
            default_invisible_duration_ms: 60_000,
            min_long_polling_ms: 5_000,
            max_long_polling_ms: 20_000,
            long_polling_reserve_ms: 1_000,
            max_telemetry_queue_commands: 64,
            max_client_sessions: 10_000,
            max_streams_per_client: 16,
            auto_create_topics: None,
            admin: None,
            forwarder: None,
            route_advisor: None,
            stats: Arc::new(FrontStats::default()),
        }
    }
}

/// A server certificate chain and its private key, PEM-encoded.
#[derive(Clone)]
pub struct TlsPem {
    /// Certificate chain, leaf first.
    pub cert_chain_pem: String,
    /// PKCS#8, PKCS#1 or SEC1 private key.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        formatter
            .debug_struct("TlsPem")
            .field("cert_chain_pem_bytes", &self.cert_chain_pem.len())
            .finish_non_exhaustive()
    }
}

/// Errors of the gRPC front.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The TLS certificate or key was refused.
    #[error("TLS configuration refused: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The listener has no local address.
    #[error("listener address unavailable: {0}")]
    ListenerAddress(#[source] std::io::Error),
    /// The server stopped with an error.
    #[error("gRPC server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// A configuration value is unusable.
    #[error("gRPC configuration field `{field}` is invalid: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Serves the RocketMQ protocol for `broker` on `listener` until `shutdown` turns true. Also
/// forwards the broker's transaction checks to producers' Telemetry streams.
pub async fn serve(
    broker: Arc<Broker>,
    listener: tokio::net::TcpListener,
    config: GrpcConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), GrpcError> {
    let local_addr = listener.local_addr().map_err(GrpcError::ListenerAddress)?;
    validate(&config)?;
    let tls = config.tls.clone();
    let max_decoding = config.max_decoding_message_bytes;
    let admin = config.admin.clone().map(|admin_config| {
        AdminServer::new(admin::AdminService::new(
            Arc::clone(&broker),
            config.broker_name.clone(),
            admin_config,
        ))
    });
    let service = service::CellService::new(broker, config, local_addr)?;
    let checks = tokio::spawn(service.clone().forward_transaction_checks(shutdown.clone()));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        let identity = tonic::transport::Identity::from_pem(tls.cert_chain_pem, tls.key_pem);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(GrpcError::Tls)?;
    }
    tracing::info!(%local_addr, "RocketMQ gRPC front listening");
    // Nagle's algorithm would hold small responses back until the client's delayed ACK (tens
    // of ms); every reply here is a complete message, so send it at once.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY not set on an accepted connection");
            }
        })
    });
    let result = builder
        .add_service(MessagingServiceServer::new(service).max_decoding_message_size(max_decoding))
        .add_optional_service(admin)
        .serve_with_incoming_shutdown(incoming, async move {
            // Ends on `true` or when the sender is gone.
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(GrpcError::Serve);
    checks.abort();
    result
}

fn validate(config: &GrpcConfig) -> Result<(), GrpcError> {
    let invalid = |field, reason: &str| GrpcError::InvalidConfig {
        field,
        reason: reason.to_string(),
    };
    if config.min_long_polling_ms == 0 || config.min_long_polling_ms > config.max_long_polling_ms {
        return Err(invalid(
            "min_long_polling_ms",
            "must be positive and at most max_long_polling_ms",
        ));
    }
    if config.max_telemetry_queue_commands == 0 {
        return Err(invalid("max_telemetry_queue_commands", "must be positive"));
    }
    if config.max_client_sessions == 0 || config.max_streams_per_client == 0 {
        return Err(invalid(
            "max_client_sessions",
            "sessions and streams per client must be positive",
        ));
    }
    if config.broker_name.trim().is_empty() {
        return Err(invalid("broker_name", "must not be blank"));
    }
    if config.auto_create_topics == Some(0) {
        return Err(invalid(
            "auto_create_topics",
            "the queue count must be positive; use None to turn auto-creation off",
        ));
    }
    if config.admin.is_some() && config.auth.is_some() {
        return Err(invalid(
            "admin",
            "the admin API has no authentication yet; leave it off on a cell with auth",
        ));
    }
    if let Some(auth) = &config.auth {
        auth.validate()
            .map_err(|reason| invalid("auth", reason.as_str()))?;
    }
    Ok(())
}
