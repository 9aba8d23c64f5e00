//! Wire definitions shared by Meridian crates: the Apache RocketMQ 5 gRPC protocol
//! (`apache.rocketmq.v2.MessagingService`) that the official RocketMQ clients speak.
//!
//! Owns:
//! - our own `.proto` files under `proto/apache/rocketmq/v2/`, written from
//!   `shared/research/rocketmq-v2-protocol.md` and cross-checked field by field against the
//!   Rust crate `rocketmq` 5.0.0 and PyPI `rocketmq-python-client` 5.1.2;
//! - the prost messages and the tonic client and server generated from them at build time
//!   (pure Rust via `protox`, no `protoc`), under [`rocketmq::v2`];
//! - Meridian's own admin service (`proto/meridian/admin/v1/admin.proto`, under [`admin::v1`]),
//!   which every cell serves beside the RocketMQ service;
//! - the compiled descriptor set ([`descriptor`]), for tests and gRPC reflection;
//! - small wire-level helpers: status-code classes and which codes each official client can
//!   decode ([`codes`]), request header names and the `authorization` header format
//!   ([`metadata`]).
//!
//! Depends on: `prost`, `prost-types`, `tonic`, `tonic-prost` and `thiserror` only.
//!
//! Must not: depend on any other Meridian crate, perform IO, or hold broker logic (routing,
//! storage, receipt handles, signature verification with secrets). The rules a server must
//! follow so the official clients neither panic nor hang are listed in `CONFORMANCE.md`
//! next to this crate's `Cargo.toml`; the gRPC layer implements them.

pub mod codes;
pub mod descriptor;
mod error;
pub mod metadata;

pub use error::ProtoError;

/// Generated code, laid out like the protobuf package path.
pub mod rocketmq {
    /// `apache.rocketmq.v2`: messages, enums, `messaging_service_client` and
    /// `messaging_service_server`.
    pub mod v2 {
        // Generated code follows prost/tonic conventions, not our lint set.
        #![allow(
            clippy::all,
            clippy::pedantic,
            unreachable_pub,
            missing_docs,
            rustdoc::invalid_html_tags,
            rustdoc::bare_urls
        )]
        tonic::include_proto!("apache.rocketmq.v2");
    }
}

/// Meridian's own admin API (`meridian.admin.v1.Admin`, written for Meridian, not part of
/// RocketMQ): topics, groups and their lag, message query and trace, offset resets and region
/// status. Every cell serves it on its gRPC port; the `meridian` CLI is its client.
pub mod admin {
    /// `meridian.admin.v1`: messages, `admin_client` and `admin_server`.
    pub mod v1 {
        // Generated code follows prost/tonic conventions, not our lint set.
        #![allow(
            clippy::all,
            clippy::pedantic,
            unreachable_pub,
            missing_docs,
            rustdoc::invalid_html_tags,
            rustdoc::bare_urls
        )]
        tonic::include_proto!("meridian.admin.v1");
    }
}
