//! Who is on the other end of an inbound link: the region a sender names in its Hello must be
//! one its certificate is issued for.
//!
//! TLS alone only proves that the peer holds *some* certificate of the fabric CA; without this
//! check any node of the fabric could claim to be any region and write into that region's
//! replicated range (and move its checkpoint). Node certificates carry their names as subject
//! alternative names (`meridian_pki::DevCa::issue` puts the region there), so the check is the
//! same name match a client does for a server, done here with webpki on the certificate rustls
//! has already verified against the CA.

use rustls::pki_types::{CertificateDer, ServerName};

/// Checks that the certificate `connection`'s peer presented is issued for `region`.
pub(super) fn check_peer_region(
    connection: &quinn::Connection,
    region: &str,
) -> Result<(), String> {
    let identity = connection
        .peer_identity()
        .ok_or_else(|| "the peer presented no certificate".to_string())?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "the peer's identity is not an X.509 certificate chain".to_string())?;
    let leaf = chain
        .first()
        .ok_or_else(|| "the peer presented an empty certificate chain".to_string())?;
    certificate_names_region(leaf, region)
}

/// Whether `certificate` is issued for `region` (as a DNS subject alternative name).
pub fn certificate_names_region(
    certificate: &CertificateDer<'_>,
    region: &str,
) -> Result<(), String> {
    let name = ServerName::try_from(region).map_err(|error| {
        format!("region {region:?} is not a name a certificate can carry: {error}")
    })?;
    let parsed = webpki::EndEntityCert::try_from(certificate)
        .map_err(|error| format!("the peer's certificate does not parse: {error}"))?;
    parsed
        .verify_is_valid_for_subject_name(&name)
        .map_err(|error| {
            format!("the peer's certificate is not issued for region {region:?} ({error})")
        })
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;

    fn leaf(names: &[&str]) -> CertificateDer<'static> {
        let ca = meridian_pki::DevCa::generate("identity test CA").expect("CA");
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let identity = ca.issue("node", &names).expect("issue");
        CertificateDer::from_pem_slice(identity.cert_chain_pem.as_bytes()).expect("PEM")
    }

    #[test]
    fn a_certificate_names_only_its_own_regions() {
        let cert = leaf(&["eu", "127.0.0.2"]);
        assert!(certificate_names_region(&cert, "eu").is_ok());
        let refused = certificate_names_region(&cert, "us").expect_err("us refused");
        assert!(
            refused.contains("not issued for region \"us\""),
            "{refused}"
        );
        let bad = certificate_names_region(&cert, "no spaces allowed").expect_err("bad name");
        assert!(bad.contains("not a name"), "{bad}");
    }
}
