//! Forwarding a send to the region that must take it.
//!
//! When the router says another region takes a topic's writes (an active-standby topic homed
//! elsewhere, a FIFO message group owned elsewhere), an official client that knows nothing of
//! regions would otherwise get a refusal it cannot act on. The front forwards the untouched
//! request to that region's cell instead, with the caller's own RocketMQ headers (so the home
//! authenticates and authorizes the caller, and answers in codes the caller's language knows)
//! and relays the answer. One hop at most: a forwarded request carries
//! [`FORWARDED_FROM_HEADER`], and a cell never forwards such a request again, it refuses.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use meridian_proto::rocketmq::v2 as pb;
use meridian_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use parking_lot::RwLock;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use super::GrpcError;

/// Set on a forwarded request: the region that forwarded it.
pub const FORWARDED_FROM_HEADER: &str = "x-meridian-forwarded-from";

/// What a forward returns.
pub type ForwardFuture<'a> =
    Pin<Box<dyn Future<Output = Result<pb::SendMessageResponse, tonic::Status>> + Send + 'a>>;

/// Where a route query should send clients instead of this cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRedirect {
    /// The serving cell's broker name.
    pub broker_name: String,
    /// Its RocketMQ endpoint.
    pub endpoint: std::net::SocketAddr,
}

/// Answers, per topic, whether clients asking this cell for a route should be sent to another
/// region's cell (this region is fenced or drained, say); `None` keeps them here.
pub trait RouteAdvisor: Send + Sync + fmt::Debug {
    /// Must not block: it runs on every route query.
    fn redirect(&self, topic: &str) -> Option<RouteRedirect>;
}

/// Sends a `SendMessage` request to another region's cell.
pub trait SendForwarder: Send + Sync + fmt::Debug {
    /// Forwards `request` (with `metadata`, already carrying [`FORWARDED_FROM_HEADER`]) to
    /// `region`'s cell.
    fn forward<'a>(
        &'a self,
        region: &'a str,
        metadata: MetadataMap,
        request: pb::SendMessageRequest,
    ) -> ForwardFuture<'a>;
}

/// Forwards over plain-text gRPC to each region's RocketMQ endpoint (one lazily connected
/// HTTP/2 channel per region, reused).
pub struct GrpcForwarder {
    channels: RwLock<HashMap<String, Channel>>,
    forward_timeout_ms: u64,
}

impl fmt::Debug for GrpcForwarder {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("GrpcForwarder")
            .field("regions", &self.channels.read().keys().collect::<Vec<_>>())
            .field("forward_timeout_ms", &self.forward_timeout_ms)
            .finish()
    }
}

impl GrpcForwarder {
    /// A forwarder to the given `(region, host:port)` endpoints; a forward waits at most
    /// `forward_timeout_ms` for the answer.
    pub fn new(
        endpoints: impl IntoIterator<Item = (String, String)>,
        forward_timeout_ms: u64,
    ) -> Result<Self, GrpcError> {
        if forward_timeout_ms == 0 {
            return Err(GrpcError::InvalidConfig {
                field: "forward_timeout_ms",
                reason: "must be positive".to_string(),
            });
        }
        let forwarder = GrpcForwarder {
            channels: RwLock::new(HashMap::new()),
            forward_timeout_ms,
        };
        for (region, endpoint) in endpoints {
            forwarder.set_endpoint(&region, &endpoint)?;
        }
        Ok(forwarder)
    }

    /// Sets (or replaces) a region's endpoint, `host:port`.
    pub fn set_endpoint(&self, region: &str, endpoint: &str) -> Result<(), GrpcError> {
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|error| GrpcError::InvalidConfig {
                field: "forward endpoint",
                reason: format!("{region}: {endpoint:?}: {error}"),
            })?
            .connect_timeout(Duration::from_millis(self.forward_timeout_ms))
            .timeout(Duration::from_millis(self.forward_timeout_ms))
            .connect_lazy();
        self.channels.write().insert(region.to_string(), channel);
        Ok(())
    }
}

impl SendForwarder for GrpcForwarder {
    fn forward<'a>(
        &'a self,
        region: &'a str,
        metadata: MetadataMap,
        request: pb::SendMessageRequest,
    ) -> ForwardFuture<'a> {
        let channel = self.channels.read().get(region).cloned();
        Box::pin(async move {
            let channel = channel.ok_or_else(|| {
                tonic::Status::unavailable(format!("no endpoint known for region {region:?}"))
            })?;
            let mut outgoing = tonic::Request::new(request);
            *outgoing.metadata_mut() = metadata;
            let mut client = MessagingServiceClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
            client
                .send_message(outgoing)
                .await
                .map(tonic::Response::into_inner)
        })
    }
}

/// The caller's headers that travel with a forwarded request: the RocketMQ ones (`x-mq-*`,
/// the signature in `authorization`), not HTTP/2 or gRPC transport headers.
pub(crate) fn forwarded_metadata(
    incoming: &MetadataMap,
    from_region: &str,
) -> Result<MetadataMap, tonic::Status> {
    let mut metadata = MetadataMap::new();
    for entry in incoming.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry {
            let name = key.as_str();
            if name.starts_with("x-mq-") || name == "authorization" {
                metadata.append(key.clone(), value.clone());
            }
        }
    }
    let from = from_region
        .parse()
        .map_err(|_| tonic::Status::internal("region name is not a valid header value"))?;
    metadata.insert(FORWARDED_FROM_HEADER, from);
    Ok(metadata)
}
