//! Certificates of the dev fabric's replication links: one dev CA and one node identity per
//! region under `DATA_DIR/pki/<region>/` (`cert.pem`, `key.pem`, `ca.pem`).
//!
//! The first run generates them; a restart loads them, so the regions keep trusting each other
//! across restarts. The CA's private key is never written (the dev CA lives in memory only):
//! when an identity is missing the whole set is issued again from a new CA, since a lone new
//! certificate could not be signed by the old CA. Loaded identities must all trust the same CA.
//!
//! The meta admin token of the dev fabric lives beside them in `DATA_DIR/pki/admin-token`
//! (generated on the first run, 32 random bytes in hex); the CLI reads it from there.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use meridian_pki::{CA_FILE, CERT_FILE, DevCa, KEY_FILE, NodeIdentity};

/// One region's name and the address its replicator listens on (its certificate names both).
pub(crate) struct RegionHost {
    pub(crate) name: String,
    pub(crate) ip: IpAddr,
}

/// Directory of a region's identity.
pub(crate) fn identity_dir(data_dir: &Path, region: &str) -> PathBuf {
    data_dir.join("pki").join(region)
}

/// File holding the dev fabric's meta admin token.
pub(crate) const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Loads the dev admin token, or generates and writes one on the first run.
pub(crate) fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("pki").join(ADMIN_TOKEN_FILE);
    if path.is_file() {
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the admin token {}", path.display()))?;
        let token = token.trim().to_string();
        if token.is_empty() {
            bail!(
                "the admin token file {} is empty; delete it to issue a new one",
                path.display()
            );
        }
        return Ok(token);
    }
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, format!("{token}\n"))
        .with_context(|| format!("writing the admin token {}", path.display()))?;
    Ok(token)
}

/// Loads every region's identity, or issues a new set when any is missing. Returns them in the
/// order of `regions`, and whether they were generated now.
pub(crate) fn identities(
    data_dir: &Path,
    regions: &[RegionHost],
) -> anyhow::Result<(Vec<NodeIdentity>, bool)> {
    let complete = regions.iter().all(|region| {
        let dir = identity_dir(data_dir, &region.name);
        [CERT_FILE, KEY_FILE, CA_FILE]
            .iter()
            .all(|file| dir.join(file).is_file())
    });
    if complete {
        let mut loaded = Vec::with_capacity(regions.len());
        for region in regions {
            let dir = identity_dir(data_dir, &region.name);
            let identity = NodeIdentity::load(
                &dir.join(CERT_FILE),
                &dir.join(KEY_FILE),
                &dir.join(CA_FILE),
            )
            .with_context(|| {
                format!(
                    "loading the certificate of region {} from {}; delete {} to issue new ones",
                    region.name,
                    dir.display(),
                    data_dir.join("pki").display()
                )
            })?;
            loaded.push(identity);
        }
        if loaded
            .windows(2)
            .any(|pair| pair[0].ca_pem != pair[1].ca_pem)
        {
            bail!(
                "the regions' certificates under {} trust different CAs; delete that directory \
                 to issue a consistent set",
                data_dir.join("pki").display()
            );
        }
        return Ok((loaded, false));
    }
    let ca = DevCa::generate("meridian dev CA").context("generating the dev CA")?;
    let mut issued = Vec::with_capacity(regions.len());
    for region in regions {
        let identity = ca
            .issue(&region.name, &[region.name.clone(), region.ip.to_string()])
            .with_context(|| format!("issuing the certificate of region {}", region.name))?;
        let dir = identity_dir(data_dir, &region.name);
        identity.write_to(&dir).with_context(|| {
            format!(
                "writing the certificate of {} to {}",
                region.name,
                dir.display()
            )
        })?;
        issued.push(identity);
    }
    Ok((issued, true))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hosts() -> Vec<RegionHost> {
        vec![
            RegionHost {
                name: "a".into(),
                ip: "127.0.0.1".parse().unwrap(),
            },
            RegionHost {
                name: "b".into(),
                ip: "127.0.0.2".parse().unwrap(),
            },
        ]
    }

    #[test]
    fn first_run_issues_and_restart_loads_the_same_identities() {
        let dir = tempfile::tempdir().unwrap();
        let (first, generated) = identities(dir.path(), &hosts()).unwrap();
        assert!(generated);
        assert_eq!(first[0].ca_pem, first[1].ca_pem);
        let (second, generated) = identities(dir.path(), &hosts()).unwrap();
        assert!(!generated);
        assert_eq!(first[0].cert_chain_pem, second[0].cert_chain_pem);
        assert_eq!(first[1].key_pem, second[1].key_pem);
    }

    #[test]
    fn the_admin_token_is_generated_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = admin_token(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(admin_token(dir.path()).unwrap(), first);
    }

    #[test]
    fn a_missing_identity_reissues_the_whole_set_from_a_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = identities(dir.path(), &hosts()).unwrap();
        std::fs::remove_file(identity_dir(dir.path(), "b").join(KEY_FILE)).unwrap();
        let (second, generated) = identities(dir.path(), &hosts()).unwrap();
        assert!(generated);
        assert_ne!(first[0].ca_pem, second[0].ca_pem);
        assert_eq!(second[0].ca_pem, second[1].ca_pem);
    }
}
