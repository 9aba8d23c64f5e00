//! Real TLS handshakes over loopback TCP sockets: rustls' blocking connections on std sockets,
//! the server in a thread. Each case sends one request and one reply, so a handshake that
//! "succeeds" on one side while the peer refused it (TLS 1.3 reports a refused client
//! certificate only after the client finished) still fails the exchange.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection, StreamOwned};

use super::*;

const ALPN: &[u8] = b"meridian-test";
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn node(ca: &DevCa, name: &str) -> NodeIdentity {
    ca.issue(name, &["127.0.0.1".to_string(), format!("{name}.meridian")])
        .expect("issue")
}

/// What each side saw: the server's received request, the client's received reply.
struct Exchange {
    server: Result<String, String>,
    client: Result<String, String>,
}

fn exchange(server_identity: &NodeIdentity, client_identity: &NodeIdentity) -> Exchange {
    let server_config = Arc::new(
        server_identity
            .rustls_server_config(&[ALPN.to_vec()])
            .expect("server config"),
    );
    let client_config = Arc::new(
        client_identity
            .rustls_client_config(&[ALPN.to_vec()])
            .expect("client config"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || -> Result<String, String> {
        let (tcp, _) = listener.accept().map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let connection = ServerConnection::new(server_config).map_err(|e| e.to_string())?;
        let mut tls = StreamOwned::new(connection, tcp);
        let mut request = [0u8; 4];
        tls.read_exact(&mut request).map_err(|e| e.to_string())?;
        if tls.conn.alpn_protocol() != Some(ALPN) {
            return Err("ALPN not negotiated".into());
        }
        tls.write_all(b"pong").map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())?;
        tls.conn.send_close_notify();
        let _ = tls.flush();
        Ok(String::from_utf8_lossy(&request).into_owned())
    });
    let client = (|| -> Result<String, String> {
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let connection = ClientConnection::new(client_config, name).map_err(|e| e.to_string())?;
        let mut tls = StreamOwned::new(connection, tcp);
        tls.write_all(b"ping").map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())?;
        let mut reply = [0u8; 4];
        tls.read_exact(&mut reply).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    })();
    Exchange {
        server: server.join().expect("server thread"),
        client,
    }
}

#[test]
fn same_ca_certificates_complete_a_mutual_handshake() {
    let ca = DevCa::generate("meridian test CA").unwrap();
    let outcome = exchange(&node(&ca, "meta-1"), &node(&ca, "meta-2"));
    assert_eq!(outcome.server.as_deref(), Ok("ping"));
    assert_eq!(outcome.client.as_deref(), Ok("pong"));
}

#[test]
fn a_client_certificate_from_a_foreign_ca_is_refused() {
    let ca = DevCa::generate("meridian test CA").unwrap();
    let foreign = DevCa::generate("someone else's CA").unwrap();
    // The intruder trusts our CA (it knows whom it is calling) but its own certificate was
    // signed elsewhere.
    let mut intruder = node(&foreign, "intruder");
    intruder.ca_pem = ca.cert_pem();
    let outcome = exchange(&node(&ca, "meta-1"), &intruder);
    let server_error = outcome
        .server
        .expect_err("server accepted a foreign client");
    assert!(
        server_error.contains("UnknownIssuer") || server_error.contains("certificate"),
        "unexpected server error: {server_error}"
    );
    assert!(
        outcome.client.is_err(),
        "client got a reply: {:?}",
        outcome.client
    );
}

#[test]
fn a_server_certificate_from_a_foreign_ca_is_refused() {
    let ca = DevCa::generate("meridian test CA").unwrap();
    let foreign = DevCa::generate("someone else's CA").unwrap();
    let mut impostor = node(&foreign, "impostor");
    impostor.ca_pem = ca.cert_pem();
    let outcome = exchange(&impostor, &node(&ca, "meta-1"));
    let client_error = outcome
        .client
        .expect_err("client accepted a foreign server");
    assert!(
        client_error.contains("UnknownIssuer") || client_error.contains("certificate"),
        "unexpected client error: {client_error}"
    );
    assert!(
        outcome.server.is_err(),
        "server got a request: {:?}",
        outcome.server
    );
}

#[test]
fn a_certificate_not_valid_for_the_dialled_address_is_refused() {
    let ca = DevCa::generate("meridian test CA").unwrap();
    let elsewhere = ca
        .issue("meta-9", &["127.0.0.9".to_string()])
        .expect("issue");
    let outcome = exchange(&elsewhere, &node(&ca, "meta-1"));
    let client_error = outcome
        .client
        .expect_err("client accepted a cert for another IP");
    assert!(
        client_error.contains("NotValidForName") || client_error.contains("certificate"),
        "unexpected client error: {client_error}"
    );
}

#[test]
fn identity_round_trips_through_files_and_bad_files_are_named() {
    let ca = DevCa::generate("meridian test CA").unwrap();
    let identity = node(&ca, "meta-1");
    let dir = tempfile::tempdir().unwrap();
    identity.write_to(dir.path()).unwrap();
    let loaded = NodeIdentity::load(
        &dir.path().join(CERT_FILE),
        &dir.path().join(KEY_FILE),
        &dir.path().join(CA_FILE),
    )
    .unwrap();
    assert_eq!(loaded.cert_chain_pem, identity.cert_chain_pem);
    assert_eq!(loaded.key_pem, identity.key_pem);
    assert_eq!(loaded.ca_pem, ca.cert_pem());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key file readable by others: {mode:o}");
    }

    let missing = dir.path().join("absent.pem");
    let error = NodeIdentity::load(
        &missing,
        &dir.path().join(KEY_FILE),
        &dir.path().join(CA_FILE),
    )
    .unwrap_err();
    assert!(error.to_string().contains("absent.pem"), "{error}");

    // A key where the certificate should be: refused at load, naming the file.
    let error = NodeIdentity::load(
        &dir.path().join(KEY_FILE),
        &dir.path().join(KEY_FILE),
        &dir.path().join(CA_FILE),
    )
    .unwrap_err();
    assert!(
        matches!(&error, PkiError::Pem { what, .. } if what.ends_with(KEY_FILE)),
        "{error:?}"
    );
    let error = NodeIdentity::load(
        &dir.path().join(CERT_FILE),
        &dir.path().join(CERT_FILE),
        &dir.path().join(CA_FILE),
    )
    .unwrap_err();
    assert!(
        matches!(&error, PkiError::Pem { what, .. } if what.ends_with(CERT_FILE)),
        "{error:?}"
    );
}
