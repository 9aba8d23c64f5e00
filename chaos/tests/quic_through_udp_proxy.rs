//! A real QUIC connection (quinn, as the replicator uses) through the UDP proxy: the handshake
//! completes, the path RTT reflects the injected latency, data survives loss intact, and a
//! connection stalled by a blackhole carries on after the heal.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_chaos::{LinkFaults, UdpProxy, UdpProxyConfig};
use quinn::{ClientConfig, Endpoint, ServerConfig};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::net::UdpSocket;

fn server_endpoint() -> (Endpoint, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = CertificateDer::from(certified.cert);
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let config = ServerConfig::with_single_cert(vec![cert.clone()], key.into()).unwrap();
    let endpoint = Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    (endpoint, cert)
}

/// Accepts connections and echoes every bidirectional stream until the endpoint closes.
fn spawn_echo(endpoint: Endpoint) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(connection) = incoming.await else {
                    return;
                };
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    tokio::spawn(async move {
                        let Ok(data) = recv.read_to_end(16 * 1024 * 1024).await else {
                            return;
                        };
                        let _ = send.write_all(&data).await;
                        let _ = send.finish();
                        let _ = send.stopped().await;
                    });
                }
            });
        }
    })
}

async fn echo_over(connection: &quinn::Connection, payload: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(payload).await.unwrap();
    send.finish().unwrap();
    recv.read_to_end(16 * 1024 * 1024).await.unwrap()
}

fn client_endpoint(cert: CertificateDer<'static>) -> Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut endpoint = Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint
        .set_default_client_config(ClientConfig::with_root_certificates(Arc::new(roots)).unwrap());
    endpoint
}

#[tokio::test]
async fn quic_connection_survives_latency_loss_and_a_healed_blackhole() {
    let (server, cert) = server_endpoint();
    let server_addr: SocketAddr = server.local_addr().unwrap();
    let echo = spawn_echo(server.clone());

    let mut config = UdpProxyConfig::new(server_addr);
    config.faults = LinkFaults {
        latency_ms: 20,
        loss_percent: 5.0,
        ..LinkFaults::default()
    };
    config.seed = 2026;
    let proxy = UdpProxy::spawn(UdpSocket::bind("127.0.0.1:0").await.unwrap(), config).unwrap();
    let control = proxy.control();

    let client = client_endpoint(cert);
    let test = async {
        let connection = client
            .connect(proxy.local_addr(), "localhost")
            .unwrap()
            .await
            .unwrap();
        assert!(
            connection.rtt() >= Duration::from_millis(40),
            "rtt {:?}",
            connection.rtt()
        );
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        assert!(echo_over(&connection, &payload).await == payload);
        let stats = control.stats();
        assert!(stats.upstream.dropped_loss + stats.downstream.dropped_loss > 0);

        // Blackhole for longer than a few PTOs (but under the 30 s idle timeout), then heal.
        control
            .set_faults(LinkFaults {
                blackhole: true,
                ..LinkFaults::default()
            })
            .unwrap();
        let during = tokio::spawn({
            let connection = connection.clone();
            async move { echo_over(&connection, b"held during the partition").await }
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!during.is_finished());
        assert!(control.stats().upstream.dropped_partition > 0);
        control.heal();
        assert_eq!(during.await.unwrap(), b"held during the partition");
        connection.close(0u32.into(), b"done");
    };
    tokio::time::timeout(Duration::from_secs(30), test)
        .await
        .unwrap();
    client.wait_idle().await;
    server.close(0u32.into(), b"done");
    echo.abort();
}
