//! Meridian pki: the certificates for mutual TLS inside the fabric, and nothing else.
//!
//! **Owns**: a development certificate authority ([`DevCa`]) that issues node certificates,
//! loading a node's certificate, key and CA from PEM files ([`NodeIdentity`]), and the rustls
//! client and server configurations every fabric link uses (meta's Raft and node-facing gRPC,
//! the replicator's QUIC links).
//!
//! **Depends on**: rcgen, rustls. **Must not depend on** any other Meridian crate; it knows
//! nothing about what runs over the connections it secures.
//!
//! Policy, the same on every link: both ends present a certificate signed by the fabric CA and
//! trust that CA only (no system roots); a node certificate carries both the server-auth and
//! client-auth extended key usages, so one identity serves and dials. The crypto provider is
//! always ring, passed explicitly: no process-wide default is read or installed, so a second
//! provider linked into the same binary cannot change what these configurations do.
//!
//! [`DevCa`] is for development, tests and benchmarks: its key lives in memory, and its
//! certificates use rcgen's default validity (far past any deployment). Production issues
//! certificates with its own CA and hands them to [`NodeIdentity::load`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// File names [`NodeIdentity::write_to`] uses inside a directory.
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
pub const CA_FILE: &str = "ca.pem";

/// Everything that can go wrong making, loading or using certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generate {what}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A PEM input held no usable object of the kind expected, or a malformed one.
    #[error("{what}: {reason}")]
    Pem { what: String, reason: String },
    #[error("build the CA trust store")]
    TrustStore(#[source] rustls::Error),
    #[error("build the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("build the TLS configuration")]
    Tls(#[source] rustls::Error),
}

/// A certificate authority generated in memory, for development, tests and benchmarks.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCa { .. }")
    }
}

impl DevCa {
    /// A fresh self-signed CA named `common_name`, with a new key.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let generate = |what| move |source| PkiError::Generate { what, source };
        let key = KeyPair::generate().map_err(generate("CA key"))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(generate("CA parameters"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        // The CA signs node certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params
            .self_signed(&key)
            .map_err(generate("CA certificate"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, which every node trusts.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// Issues a certificate for `node_name` valid for each of `subject_alt_names` (IP
    /// addresses such as `127.0.0.2` become IP SANs, anything else a DNS name), usable both
    /// to serve and to dial.
    pub fn issue(
        &self,
        node_name: &str,
        subject_alt_names: &[String],
    ) -> Result<NodeIdentity, PkiError> {
        let generate = |what| move |source| PkiError::Generate { what, source };
        let key = KeyPair::generate().map_err(generate("node key"))?;
        let mut params = CertificateParams::new(subject_alt_names.to_vec())
            .map_err(generate("node certificate parameters"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, node_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate("node certificate"))?;
        Ok(NodeIdentity {
            cert_chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }
}

/// One node's certificate chain, private key and the CA it trusts, all PEM.
#[derive(Clone)]
pub struct NodeIdentity {
    pub cert_chain_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for NodeIdentity {
    // The private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity").finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Reads the three PEM files and checks that each holds what it should, so a swapped or
    /// empty file is reported by name at start-up rather than as a handshake failure later.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, PkiError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| PkiError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let identity = Self {
            cert_chain_pem: read(cert)?,
            key_pem: read(key)?,
            ca_pem: read(ca)?,
        };
        certificates(&identity.cert_chain_pem, &cert.display().to_string())?;
        private_key(&identity.key_pem, &key.display().to_string())?;
        certificates(&identity.ca_pem, &ca.display().to_string())?;
        Ok(identity)
    }

    /// Writes `cert.pem`, `key.pem` and `ca.pem` into `dir` (created if missing). The key file
    /// is readable by its owner only.
    pub fn write_to(&self, dir: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        for (name, contents) in [
            (CERT_FILE, &self.cert_chain_pem),
            (KEY_FILE, &self.key_pem),
            (CA_FILE, &self.ca_pem),
        ] {
            let path = dir.join(name);
            write_file(&path, contents, name == KEY_FILE)
                .map_err(|source| PkiError::Write { path, source })?;
        }
        Ok(())
    }

    /// A server configuration that presents this node's certificate and accepts only clients
    /// presenting a certificate signed by the CA.
    pub fn rustls_server_config(&self, alpn: &[Vec<u8>]) -> Result<ServerConfig, PkiError> {
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .build()
                .map_err(PkiError::Verifier)?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(PkiError::Tls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                certificates(&self.cert_chain_pem, "node certificate chain")?,
                private_key(&self.key_pem, "node private key")?,
            )
            .map_err(PkiError::Tls)?;
        config.alpn_protocols = alpn.to_vec();
        Ok(config)
    }

    /// A client configuration that presents this node's certificate and trusts only servers
    /// whose certificate the CA signed.
    pub fn rustls_client_config(&self, alpn: &[Vec<u8>]) -> Result<ClientConfig, PkiError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(PkiError::Tls)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(
                certificates(&self.cert_chain_pem, "node certificate chain")?,
                private_key(&self.key_pem, "node private key")?,
            )
            .map_err(PkiError::Tls)?;
        config.alpn_protocols = alpn.to_vec();
        Ok(config)
    }

    fn roots(&self) -> Result<RootCertStore, PkiError> {
        let mut roots = RootCertStore::empty();
        for cert in certificates(&self.ca_pem, "CA certificate")? {
            roots.add(cert).map_err(PkiError::TrustStore)?;
        }
        Ok(roots)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in `pem`; at least one.
fn certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| PkiError::Pem {
            what: what.to_string(),
            reason: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::Pem {
            what: what.to_string(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn private_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|error| PkiError::Pem {
        what: what.to_string(),
        reason: format!("no usable private key: {error}"),
    })
}

fn write_file(path: &Path, contents: &str, private: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests;
