//! Who may call a meta node, and how the node's own calls prove themselves.
//!
//! Two credentials:
//! - **Peer identity** ([`PeerAuth`]): meta nodes and cells (Raft traffic, forwarding,
//!   heartbeats, reads, watches, FIFO message-group claims).
//!   - [`PeerAuth::MutualTls`], the production setting: both ports speak TLS only, and a
//!     connection exists only after both ends showed a certificate signed by the fabric CA
//!     ([`meridian_pki`]): a caller without one, or with one from another CA, is refused in
//!     the handshake and never reaches a handler. Every caller with a connection is a peer.
//!     The CA is the fabric's trust root: issue its certificates to fabric components only.
//!   - [`PeerAuth::PlaintextToken`], for development and tests, and only when chosen
//!     explicitly: plain-text gRPC, and peers present a shared token in
//!     `x-meridian-peer-token` (checked in constant time). Tokens cross the wire in clear.
//! - **Admin credential**: `authorization: Bearer <admin token>` for admin writes and
//!   membership changes, on top of the peer identity (under mutual TLS an admin tool needs a
//!   CA-signed certificate *and* the token). It is checked in constant time.
//!
//! A handler refuses a call without the credential it needs with `UNAUTHENTICATED` (or
//! `PERMISSION_DENIED` when a peer lacks the admin credential) and nothing else.

use std::sync::Arc;
use std::time::Duration;

use meridian_pki::NodeIdentity;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

pub(crate) const PEER_TOKEN_HEADER: &str = "x-meridian-peer-token";
pub(crate) const ADMIN_HEADER: &str = "authorization";

/// How peers prove who they are; see the module docs.
#[derive(Clone)]
pub enum PeerAuth {
    /// Mutual TLS with certificates from the fabric CA (production).
    MutualTls(Arc<NodeIdentity>),
    /// Plain text with a shared peer token: development and tests only.
    PlaintextToken(String),
}

/// The credentials of one meta node: its peer identity and the cluster's admin token.
#[derive(Clone)]
pub struct Credentials {
    pub peer: PeerAuth,
    pub admin_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peer = match self.peer {
            PeerAuth::MutualTls(_) => "mutual TLS",
            PeerAuth::PlaintextToken(_) => "plaintext token",
        };
        write!(f, "Credentials {{ peer: {peer}, .. }}")
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

/// A gRPC endpoint for `addr` (`host:port`): `https` with this identity's certificate and the
/// fabric CA as the only trust root when `tls` is given, plain `http` otherwise. The server
/// certificate must be valid for `host` (an IP SAN for an IP address). Lazy: nothing is
/// dialled until the first call.
pub fn endpoint(
    addr: &str,
    tls: Option<&NodeIdentity>,
    connect_timeout: Duration,
) -> Result<Endpoint, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{addr}"))?.connect_timeout(connect_timeout);
    if let Some(identity) = tls {
        // No system roots are enabled (tonic's native/webpki root features are off): the
        // fabric CA is the only trust anchor.
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&identity.ca_pem))
            .identity(Identity::from_pem(
                &identity.cert_chain_pem,
                &identity.key_pem,
            ))
            .timeout(connect_timeout);
        endpoint = endpoint.tls_config(config)?;
    }
    Ok(endpoint)
}

/// The server side of mutual TLS: present `identity`, require a client certificate signed by
/// its CA. The handshake is bounded by `handshake_timeout` so a silent client cannot hold a
/// connection slot.
///
/// tonic builds this rustls configuration with the provider rustls' crate features select,
/// and the workspace compiles rustls with ring only, so it is ring as in `meridian_pki`; the
/// client side (`endpoint`) falls back to ring explicitly. `RunningNode::start` checks the
/// certificate, key and CA with `meridian_pki`'s own configurations first.
pub(crate) fn server_tls(identity: &NodeIdentity, handshake_timeout: Duration) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(
            &identity.cert_chain_pem,
            &identity.key_pem,
        ))
        .client_ca_root(Certificate::from_pem(&identity.ca_pem))
        .timeout(handshake_timeout)
}

impl PeerAuth {
    pub(crate) fn tls(&self) -> Option<&NodeIdentity> {
        match self {
            Self::MutualTls(identity) => Some(identity),
            Self::PlaintextToken(_) => None,
        }
    }

    /// Adds what the receiving node checks: nothing under mutual TLS (the connection itself
    /// is the proof), the peer token in plain text.
    pub(crate) fn attach<T>(&self, request: &mut tonic::Request<T>) -> Result<(), BadToken> {
        match self {
            Self::MutualTls(_) => Ok(()),
            Self::PlaintextToken(token) => attach_peer_token(request, token),
        }
    }
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

/// What one call proved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub(crate) peer: bool,
    pub(crate) admin: bool,
}

impl Credentials {
    /// Judges the caller of `request`.
    pub(crate) fn caller<T>(&self, request: &tonic::Request<T>) -> Caller {
        let peer = match &self.peer {
            // The server requires a CA-signed client certificate in the handshake, so a
            // request on a TLS connection carries verified peer certificates. Checking for
            // them still guards against a server accidentally started without TLS.
            PeerAuth::MutualTls(_) => request
                .peer_certs()
                .is_some_and(|certificates| !certificates.is_empty()),
            PeerAuth::PlaintextToken(token) => has_peer_token(request.metadata(), token),
        };
        Caller {
            peer,
            admin: self.is_admin(request.metadata()),
        }
    }

    fn is_admin(&self, metadata: &MetadataMap) -> bool {
        let Some(value) = metadata.get(ADMIN_HEADER) else {
            return false;
        };
        let Some(token) = value.as_bytes().strip_prefix(b"Bearer ") else {
            return false;
        };
        same_secret(token, self.admin_token.as_bytes())
    }
}

fn has_peer_token(metadata: &MetadataMap, token: &str) -> bool {
    metadata
        .get(PEER_TOKEN_HEADER)
        .is_some_and(|value| same_secret(value.as_bytes(), token.as_bytes()))
}

impl Caller {
    /// Peers and admins may use the node-facing API.
    pub(crate) fn require_peer_or_admin(&self) -> Result<(), tonic::Status> {
        if self.peer || self.admin {
            return Ok(());
        }
        Err(tonic::Status::unauthenticated(
            "meta requires a peer or admin credential",
        ))
    }

    pub(crate) fn require_peer(&self) -> Result<(), tonic::Status> {
        if self.peer {
            return Ok(());
        }
        Err(tonic::Status::unauthenticated(
            "raft traffic requires the cluster peer credential",
        ))
    }

    pub(crate) fn require_admin(&self) -> Result<(), tonic::Status> {
        if self.admin {
            return Ok(());
        }
        if self.peer {
            return Err(tonic::Status::permission_denied(
                "this operation requires the admin credential",
            ));
        }
        Err(tonic::Status::unauthenticated(
            "this operation requires the admin credential",
        ))
    }
}
