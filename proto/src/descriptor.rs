//! The `FileDescriptorSet` that `build.rs` compiled from our `.proto` files, embedded as bytes.
//!
//! Useful for gRPC reflection and for tests that check the service shape against the protocol
//! research (RPC names, streaming kinds, field numbers) without trusting generated Rust code.

use crate::ProtoError;

/// Protobuf encoding of the compiled `FileDescriptorSet`, including the imported
/// `google/protobuf/*.proto` files.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/rocketmq_v2_descriptor.bin"));

/// Fully qualified protobuf package of every type in this protocol.
pub const PACKAGE: &str = "apache.rocketmq.v2";

/// Fully qualified gRPC service name; request paths are `/<SERVICE_NAME>/<Rpc>`.
pub const SERVICE_NAME: &str = crate::rocketmq::v2::messaging_service_server::SERVICE_NAME;

/// Decodes [`FILE_DESCRIPTOR_SET`].
pub fn file_descriptor_set() -> Result<prost_types::FileDescriptorSet, ProtoError> {
    Ok(prost::Message::decode(FILE_DESCRIPTOR_SET)?)
}

/// The gRPC request path of `rpc` (e.g. `QueryRoute`), as seen in server logs and metrics.
pub fn method_path(rpc: &str) -> String {
    format!("/{SERVICE_NAME}/{rpc}")
}
