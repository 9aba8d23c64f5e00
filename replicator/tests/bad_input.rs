//! Garbage on a replication link: a peer with a valid certificate that sends random bytes, a
//! frame header announcing an absurd length, or a well-formed frame of the wrong kind gets its
//! link closed, while the replicator keeps serving honest peers and loses nothing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Cell, init_tracing, wait_for_records};
use meridian_cell::Durability;
use meridian_pki::{DevCa, NodeIdentity};
use meridian_replicator::link::frame::{self, Frame, Limits};
use meridian_replicator::quic::ALPN;
use quinn::crypto::rustls::QuicClientConfig;
use rand::{Rng, SeedableRng};

/// Upper bound on waiting for the receiver to close a bad link; reaching it fails the test.
const CLOSE_LIMIT: Duration = Duration::from_secs(30);

/// Opens a link to `target` as `identity` and writes `bytes` on its stream; returns what the
/// receiver sent back before it closed the stream.
async fn send_raw(identity: &NodeIdentity, target: &Cell, bytes: &[u8]) -> Vec<u8> {
    let tls = identity
        .rustls_client_config(&[ALPN.to_vec()])
        .expect("client TLS");
    let quic = QuicClientConfig::try_from(tls).expect("QUIC client config");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let connection = endpoint
        .connect(target.addr, &target.region)
        .expect("connect")
        .await
        .expect("handshake with a certificate of the same CA");
    let (mut send, mut recv) = connection.open_bi().await.expect("open stream");
    // The receiver may close the stream before taking all of it; that is an answer too.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let answer = tokio::time::timeout(CLOSE_LIMIT, recv.read_to_end(1 << 20))
        .await
        .expect("the receiver closes a link that sent garbage");
    connection.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    answer.unwrap_or_default()
}

/// If the receiver answered, its answer is a well-formed refusal; never anything else.
fn assert_refusal_or_nothing(answer: &[u8], case: &str) {
    if answer.is_empty() {
        return;
    }
    let limits = Limits::default();
    let mut rest = answer;
    while let Some((frame, used)) = frame::decode(rest, &limits).expect("the answer decodes") {
        assert!(
            matches!(frame, Frame::Refuse { .. }),
            "{case}: the receiver answered garbage with {frame:?}"
        );
        rest = &rest[used..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_streams_are_closed_and_honest_links_keep_working() {
    init_tracing();
    let ca = DevCa::generate("meridian test CA").expect("CA");
    let mut target = Cell::new(&ca, "eu", "127.0.0.41", Durability::Sync);
    target.bind().await;
    let attacker = ca
        .issue("us", &["us".to_string(), "127.0.0.1".to_string()])
        .expect("certificate");

    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6a72);
    let mut random = vec![0u8; 64 << 10];
    rng.fill(&mut random[..]);
    let answer = send_raw(&attacker, &target, &random).await;
    assert_refusal_or_nothing(&answer, "random bytes");

    // A header that announces 4 GiB: refused from the header alone, nothing allocated for it.
    let mut absurd = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    absurd.extend_from_slice(&[1, 1, 0, 0]);
    let answer = send_raw(&attacker, &target, &absurd).await;
    assert_refusal_or_nothing(&answer, "absurd length");

    // A well-formed frame that only a receiver may send, as the first frame of a link.
    let wrong = Frame::Refuse {
        code: meridian_replicator::link::RefuseCode::LocalFailure,
        message: "not a hello".to_string(),
    }
    .encode(&Limits::default())
    .expect("encode");
    let answer = send_raw(&attacker, &target, &wrong).await;
    assert_refusal_or_nothing(&answer, "wrong first frame");

    // The replicator still serves an honest peer, and nothing of the garbage was stored.
    let mut honest = Cell::new(&ca, "ap", "127.0.0.42", Durability::Sync);
    let peer = target.peer();
    honest.bind().await;
    honest.replicator().add_peer(peer).expect("add the peer");
    honest.produce("after-garbage", 50).await;
    wait_for_records(&target, "ap", 50).await;
    assert_eq!(
        target.records().len(),
        50,
        "only the honest peer's records are stored"
    );
    honest.shutdown_replicator().await;
    target.shutdown_replicator().await;
}
