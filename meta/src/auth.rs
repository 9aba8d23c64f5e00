//! Credentials on meta's ports. Interim scheme until mutual TLS lands: every call carries a
//! bearer token in gRPC metadata, checked in constant time.
//!
//! - `x-meridian-peer-token`: meta nodes and cells (Raft traffic, forwarding, heartbeats,
//!   reads, watches, FIFO message-group claims).
//! - `authorization: Bearer <admin token>`: admin writes and membership changes.
//!
//! A call without a valid token gets `UNAUTHENTICATED` (or `PERMISSION_DENIED` when a peer
//! token is used for an admin operation) and nothing else. Tokens travel in clear text until
//! TLS is enabled; see the crate docs for that gap.

use tonic::metadata::{MetadataMap, MetadataValue};

pub(crate) const PEER_TOKEN_HEADER: &str = "x-meridian-peer-token";
pub(crate) const ADMIN_HEADER: &str = "authorization";

/// The shared secrets of one cluster.
#[derive(Clone)]
pub struct Credentials {
    pub peer_token: String,
    pub admin_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { .. }")
    }
}

/// A token that cannot go into gRPC metadata (not visible ASCII).
#[derive(Debug, thiserror::Error)]
#[error("credential is not valid gRPC metadata")]
pub struct BadToken;

pub(crate) fn attach_peer_token<T>(
    request: &mut tonic::Request<T>,
    token: &str,
) -> Result<(), BadToken> {
    let value: MetadataValue<_> = token.parse().map_err(|_| BadToken)?;
    request.metadata_mut().insert(PEER_TOKEN_HEADER, value);
    Ok(())
}

pub(crate) fn attach_admin_token<T>(
    request: &mut tonic::Request<T>,
    token: &str,
) -> Result<(), BadToken> {
    let value: MetadataValue<_> = format!("Bearer {token}").parse().map_err(|_| BadToken)?;
    request.metadata_mut().insert(ADMIN_HEADER, value);
    Ok(())
}

/// Compares without an early exit, so timing does not reveal the matching prefix length.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    given
        .iter()
        .zip(expected)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

impl Credentials {
    pub(crate) fn is_admin(&self, metadata: &MetadataMap) -> bool {
        let Some(value) = metadata.get(ADMIN_HEADER) else {
            return false;
        };
        let Some(token) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return false;
        };
        same_secret(token, self.admin_token.as_bytes())
    }

    pub(crate) fn is_peer(&self, metadata: &MetadataMap) -> bool {
        metadata
            .get(PEER_TOKEN_HEADER)
            .is_some_and(|value| same_secret(value.as_bytes(), self.peer_token.as_bytes()))
    }

    /// Peers and admins may use the node-facing API.
    pub(crate) fn require_peer_or_admin(
        &self,
        metadata: &MetadataMap,
    ) -> Result<(), tonic::Status> {
        if self.is_peer(metadata) || self.is_admin(metadata) {
            return Ok(());
        }
        Err(tonic::Status::unauthenticated(
            "meta requires a peer or admin credential",
        ))
    }

    pub(crate) fn require_peer(&self, metadata: &MetadataMap) -> Result<(), tonic::Status> {
        if self.is_peer(metadata) {
            return Ok(());
        }
        Err(tonic::Status::unauthenticated(
            "raft traffic requires the cluster peer credential",
        ))
    }

    pub(crate) fn require_admin(&self, metadata: &MetadataMap) -> Result<(), tonic::Status> {
        if self.is_admin(metadata) {
            return Ok(());
        }
        if self.is_peer(metadata) {
            return Err(tonic::Status::permission_denied(
                "this operation requires the admin credential",
            ));
        }
        Err(tonic::Status::unauthenticated(
            "this operation requires the admin credential",
        ))
    }
}
