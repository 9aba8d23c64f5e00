//! Request metadata (gRPC headers) the official clients attach to every call, including the
//! opening request of the Telemetry stream, and the format of their `authorization` header.
//!
//! Only parsing lives here. Verifying a signature (HMAC-SHA1 keyed by the secret key over the
//! exact `x-mq-date-time` value, compared in constant time) needs secrets and a crypto crate,
//! so it belongs to the gRPC layer; see `CONFORMANCE.md`.

use crate::ProtoError;
use crate::rocketmq::v2::Language;

/// Client instance id, e.g. `host@1234#0` (Rust) or `host@1234@0@dn27qycl9g7f` (Python).
/// The only header a server should require; the reference server answers
/// `CLIENT_ID_REQUIRED` when it is blank.
pub const CLIENT_ID: &str = "x-mq-client-id";
/// Client language as the `Language` enum's name, e.g. `RUST`, `PYTHON`, `JAVA`.
pub const LANGUAGE: &str = "x-mq-language";
/// Client library version, e.g. `5.0.0`.
pub const CLIENT_VERSION: &str = "x-mq-client-version";
/// Protocol version (`2.0.0`); sent by the Rust client only.
pub const PROTOCOL_VERSION: &str = "x-mq-protocol-version";
/// Protocol name (`GRPC_V2`); sent by the Python client only.
pub const PROTOCOL: &str = "x-mq-protocol";
/// Request time; the signed string. Its format differs per client (RFC 3339 with nanoseconds
/// from Rust, `%Y%m%dT%H%M%SZ` of *local* time from Python), so never parse it strictly.
pub const DATE_TIME: &str = "x-mq-date-time";
/// Per-call UUID; sent by the Python client only.
pub const REQUEST_ID: &str = "x-mq-request-id";
/// Resource namespace; sent by the Python client only (possibly empty).
pub const NAMESPACE: &str = "x-mq-namespace";
/// Signature header. Rust sends it only with credentials; Python always sends it, with an
/// empty access key when it has none.
pub const AUTHORIZATION: &str = "authorization";

/// Algorithm word that opens the `authorization` value.
pub const SIGNATURE_ALGORITHM: &str = "MQv2-HMAC-SHA1";
/// Key of the access-key item in the `authorization` value.
pub const CREDENTIAL_KEY: &str = "Credential";
/// Key of the signed-header list item in the `authorization` value.
pub const SIGNED_HEADERS_KEY: &str = "SignedHeaders";
/// Key of the hex signature item in the `authorization` value.
pub const SIGNATURE_KEY: &str = "Signature";

/// The client language from an `x-mq-language` value; [`Language::Unspecified`] when absent
/// or unknown, which callers should treat as "assume the oldest client behaviour".
pub fn language_from_header(value: Option<&str>) -> Language {
    value
        .and_then(|text| Language::from_str_name(text.trim()))
        .unwrap_or(Language::Unspecified)
}

/// Parsed `authorization` header:
/// `MQv2-HMAC-SHA1 Credential=<AK>, SignedHeaders=x-mq-date-time, Signature=<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Access key: the `Credential` value up to its first `/` (the reference server accepts
    /// `AK/...` scopes). Empty when the Python client runs without credentials.
    pub access_key: String,
    /// Header names covered by the signature (the clients send only `x-mq-date-time`).
    pub signed_headers: Vec<String>,
    /// Raw HMAC bytes decoded from the hex `Signature` value (any letter case).
    pub signature: Vec<u8>,
}

impl Authorization {
    /// Parses an `authorization` value the way the reference server does: the algorithm word,
    /// one space, then comma-separated `key=value` items in any order, unknown keys ignored.
    pub fn parse(value: &str) -> Result<Self, ProtoError> {
        let (algorithm, items) = value
            .trim()
            .split_once(' ')
            .ok_or(malformed("no space after the algorithm"))?;
        if algorithm != SIGNATURE_ALGORITHM {
            return Err(malformed("algorithm is not MQv2-HMAC-SHA1"));
        }
        let mut credential = None;
        let mut signed_headers = None;
        let mut signature_hex = None;
        for item in items.split(',') {
            let (key, item_value) = item
                .trim()
                .split_once('=')
                .ok_or(malformed("item without '='"))?;
            match key.trim() {
                CREDENTIAL_KEY => credential = Some(item_value.trim()),
                SIGNED_HEADERS_KEY => signed_headers = Some(item_value.trim()),
                SIGNATURE_KEY => signature_hex = Some(item_value.trim()),
                _ => {}
            }
        }
        let credential = credential.ok_or(malformed("no Credential item"))?;
        let access_key = credential.split('/').next().unwrap_or_default().to_owned();
        let signed_headers = signed_headers
            .map(|list| {
                list.split(';')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        let signature = decode_hex(signature_hex.ok_or(malformed("no Signature item"))?)?;
        Ok(Self {
            access_key,
            signed_headers,
            signature,
        })
    }

    /// Renders the header the way both official clients do, for Meridian's own clients and
    /// tests. `signature` is the raw HMAC; it is written as lowercase hex.
    pub fn render(access_key: &str, signature: &[u8]) -> String {
        let mut hex = String::with_capacity(signature.len() * 2);
        for byte in signature {
            hex.push(nibble_to_hex(byte >> 4));
            hex.push(nibble_to_hex(byte & 0x0f));
        }
        format!(
            "{SIGNATURE_ALGORITHM} {CREDENTIAL_KEY}={access_key}, \
             {SIGNED_HEADERS_KEY}={DATE_TIME}, {SIGNATURE_KEY}={hex}"
        )
    }
}

fn malformed(reason: &'static str) -> ProtoError {
    ProtoError::MalformedAuthorization { reason }
}

fn nibble_to_hex(nibble: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(nibble & 0x0f)])
}

fn decode_hex(text: &str) -> Result<Vec<u8>, ProtoError> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(malformed("signature has an odd number of hex digits"));
    }
    digits
        .chunks_exact(2)
        .map(|pair| Ok((hex_value(pair[0])? << 4) | hex_value(pair[1])?))
        .collect()
}

fn hex_value(digit: u8) -> Result<u8, ProtoError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(malformed("signature is not hex")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_the_rust_client_header() {
        // Shape observed from the Rust client 5.0.0 with access key `testak`.
        let value = "MQv2-HMAC-SHA1 Credential=testak, SignedHeaders=x-mq-date-time, \
                     Signature=0a1B2c3D4e5F60718293a4b5c6d7e8f901234567";
        let auth = Authorization::parse(value).unwrap();
        assert_eq!(auth.access_key, "testak");
        assert_eq!(auth.signed_headers, ["x-mq-date-time"]);
        assert_eq!(auth.signature.len(), 20, "HMAC-SHA1 is 20 bytes");
        assert_eq!(&auth.signature[..4], &[0x0a, 0x1b, 0x2c, 0x3d]);
    }

    #[test]
    fn parses_the_python_client_header_without_credentials() {
        // The Python client always sends the header; without credentials Credential is empty.
        let value = "MQv2-HMAC-SHA1 Credential=, SignedHeaders=x-mq-date-time, Signature=00ff";
        let auth = Authorization::parse(value).unwrap();
        assert_eq!(auth.access_key, "");
        assert_eq!(auth.signature, [0x00, 0xff]);
    }

    #[test]
    fn credential_scope_after_slash_is_dropped_and_items_may_be_reordered() {
        let value = "MQv2-HMAC-SHA1 Signature=AB,Credential=ak1/20261123/region,Extra=x";
        let auth = Authorization::parse(value).unwrap();
        assert_eq!(auth.access_key, "ak1");
        assert_eq!(auth.signature, [0xab]);
        assert!(auth.signed_headers.is_empty());
    }

    #[test]
    fn render_then_parse_round_trips() {
        let signature: Vec<u8> = (0u8..20).map(|i| i.wrapping_mul(37)).collect();
        let value = Authorization::render("ak", &signature);
        assert!(value.starts_with("MQv2-HMAC-SHA1 Credential=ak, SignedHeaders=x-mq-date-time"));
        let auth = Authorization::parse(&value).unwrap();
        assert_eq!(auth.signature, signature);
        assert_eq!(auth.access_key, "ak");
    }

    #[test]
    fn malformed_values_are_errors() {
        for value in [
            "",
            "MQv2-HMAC-SHA1",
            "HMAC-SHA256 Credential=a, Signature=00",
            "MQv2-HMAC-SHA1 Credential=a",
            "MQv2-HMAC-SHA1 Signature=00",
            "MQv2-HMAC-SHA1 Credential=a, Signature=0",
            "MQv2-HMAC-SHA1 Credential=a, Signature=zz",
            "MQv2-HMAC-SHA1 Credential=a, garbage",
        ] {
            let err = Authorization::parse(value).unwrap_err();
            assert!(
                matches!(err, ProtoError::MalformedAuthorization { .. }),
                "{value:?}"
            );
        }
    }

    #[test]
    fn language_header_values() {
        assert_eq!(language_from_header(Some("RUST")), Language::Rust);
        assert_eq!(language_from_header(Some("PYTHON")), Language::Python);
        assert_eq!(language_from_header(Some("JAVA")), Language::Java);
        assert_eq!(language_from_header(Some("rust")), Language::Unspecified);
        assert_eq!(language_from_header(Some("COBOL")), Language::Unspecified);
        assert_eq!(language_from_header(None), Language::Unspecified);
    }
}
