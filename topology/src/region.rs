//! Region names and node endpoints: the two value types every other part of the topology refers to.

use std::borrow::Borrow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest region name accepted, in characters. Names travel in every replicated record header and in
/// metric labels, so they are kept short.
pub const REGION_NAME_LEN_MAX: usize = 32;

/// The name of a region, e.g. `us-east`: 1 to 32 characters, each a lowercase ASCII letter, a digit or
/// `-`.
///
/// A `RegionName` is the identity of a region throughout the fabric (links, node section, placement,
/// replication headers), so the rule is checked whenever one is built or deserialized: holding one means
/// the name is well formed, not that the region exists in a given configuration.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionName(String);

/// Why a string is not a valid [`RegionName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid region name {name:?}: {reason}; use 1 to 32 lowercase letters, digits or '-' (e.g. \"eu-west\")"
)]
pub struct RegionNameError {
    /// The rejected input.
    pub name: String,
    /// Which rule it breaks.
    pub reason: &'static str,
}

impl RegionName {
    /// Checks `name` against the naming rule and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, RegionNameError> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.chars().count() > REGION_NAME_LEN_MAX {
            Some("it is longer than 32 characters")
        } else if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            Some("it contains a character other than a-z, 0-9 or '-'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(RegionNameError { name, reason }),
            None => Ok(Self(name)),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RegionName {
    type Err = RegionNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for RegionName {
    type Error = RegionNameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<RegionName> for String {
    fn from(value: RegionName) -> Self {
        value.0
    }
}

impl AsRef<str> for RegionName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

// Lets a `BTreeSet<RegionName>` or `BTreeMap<RegionName, _>` be queried with a `&str`; sound because the
// derived `Ord` of the newtype is the `Ord` of its string.
impl Borrow<str> for RegionName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A `host:port` address at which a node listens and at which other nodes reach it.
///
/// The host is an IP literal (`127.0.0.2`, `[::1]`) or a DNS name (`cell-1.us-east.internal`); names are
/// not resolved here because this crate does no network IO. The unspecified addresses `0.0.0.0` and `::`
/// are refused since no other node could dial them, and port 0 is refused since it is not a fixed port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint {
    host: String,
    port: u16,
}

/// Why a string is not a valid [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid endpoint {input:?}: {reason}; write host:port, e.g. \"10.0.1.10:8081\" or \"[::1]:8081\""
)]
pub struct EndpointError {
    /// The rejected input.
    pub input: String,
    /// Which rule it breaks.
    pub reason: &'static str,
}

/// Longest host name accepted, in bytes (the DNS limit).
const HOST_LEN_MAX: usize = 253;

impl Endpoint {
    /// Builds an endpoint from a host (without brackets) and a port, with the same checks as parsing.
    pub fn new(host: impl Into<String>, port: u16) -> Result<Self, EndpointError> {
        let host = host.into();
        let input = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{host}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        check_host(&host).map_err(|reason| EndpointError {
            input: input.clone(),
            reason,
        })?;
        if port == 0 {
            return Err(EndpointError {
                input,
                reason: "port 0 is not a fixed port",
            });
        }
        Ok(Self { host, port })
    }

    /// The host part, without brackets for IPv6.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address when the host is an IP literal; `None` for a DNS name, which the caller must
    /// resolve itself.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    /// Whether the host is a loopback address (`127.0.0.0/8`, `::1`) or `localhost`. Regions on loopback
    /// share one machine even when their IPs differ, which matters for data directories.
    pub fn is_loopback(&self) -> bool {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => self.host.eq_ignore_ascii_case("localhost"),
        }
    }
}

/// Checks the host part of an endpoint; returns the broken rule.
fn check_host(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("the host is empty");
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        if ip.is_unspecified() {
            return Err("an unspecified address cannot be dialled by other nodes");
        }
        return Ok(());
    }
    if host.len() > HOST_LEN_MAX {
        return Err("the host name is longer than 253 bytes");
    }
    let labels_ok = host.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if labels_ok {
        Ok(())
    } else {
        Err("the host is neither an IP address nor a DNS name")
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| EndpointError {
            input: input.to_owned(),
            reason,
        };
        let (host, port) = if let Some(rest) = input.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| error("an IPv6 host needs the form [addr]:port"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(error("the bracketed host is not an IPv6 address"));
            }
            (host, port)
        } else {
            let (host, port) = input
                .rsplit_once(':')
                .ok_or_else(|| error("the port is missing"))?;
            if host.contains(':') {
                return Err(error("an IPv6 host must be written in brackets"));
            }
            (host, port)
        };
        let port: u16 = port
            .parse()
            .map_err(|_| error("the port is not a number from 1 to 65535"))?;
        Self::new(host, port).map_err(|e| error(e.reason))
    }
}

impl TryFrom<String> for Endpoint {
    type Error = EndpointError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Endpoint> for String {
    fn from(value: Endpoint) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn region_names_follow_the_rule() {
        for good in ["us-east", "a", "eu-west-2", "0", "-", &"x".repeat(32)] {
            assert_eq!(RegionName::new(good).unwrap().as_str(), good);
        }
        let cases = [
            ("", "it is empty"),
            (
                "EU-west",
                "it contains a character other than a-z, 0-9 or '-'",
            ),
            (
                "eu_west",
                "it contains a character other than a-z, 0-9 or '-'",
            ),
            (
                "eu west",
                "it contains a character other than a-z, 0-9 or '-'",
            ),
            ("é", "it contains a character other than a-z, 0-9 or '-'"),
        ];
        for (bad, reason) in cases {
            assert_eq!(RegionName::new(bad).unwrap_err().reason, reason, "{bad:?}");
        }
        let long = "x".repeat(33);
        assert_eq!(
            RegionName::new(long).unwrap_err().reason,
            "it is longer than 32 characters"
        );
    }

    #[test]
    fn region_name_error_says_how_to_fix() {
        let message = RegionName::new("EU").unwrap_err().to_string();
        assert!(message.contains("\"EU\""), "{message}");
        assert!(message.contains("lowercase letters"), "{message}");
    }

    #[test]
    fn endpoints_parse_and_print_back() {
        for text in [
            "127.0.0.1:8081",
            "[::1]:7101",
            "cell-1.us-east.internal:443",
            "localhost:1",
            "10.0.0.1:65535",
        ] {
            let endpoint: Endpoint = text.parse().unwrap();
            assert_eq!(endpoint.to_string(), text);
        }
        let v6: Endpoint = "[::1]:7101".parse().unwrap();
        assert_eq!(v6.host(), "::1");
        assert_eq!(v6.port(), 7101);
        assert_eq!(v6.socket_addr(), Some("[::1]:7101".parse().unwrap()));
        assert_eq!(Endpoint::new("::1", 7101).unwrap(), v6);
        let named: Endpoint = "db.internal:80".parse().unwrap();
        assert_eq!(named.socket_addr(), None);
    }

    #[test]
    fn bad_endpoints_are_refused_with_a_reason() {
        let cases = [
            ("127.0.0.1", "the port is missing"),
            ("127.0.0.1:0", "port 0 is not a fixed port"),
            (
                "127.0.0.1:70000",
                "the port is not a number from 1 to 65535",
            ),
            ("127.0.0.1:-1", "the port is not a number from 1 to 65535"),
            (":8081", "the host is empty"),
            (
                "0.0.0.0:8081",
                "an unspecified address cannot be dialled by other nodes",
            ),
            (
                "[::]:8081",
                "an unspecified address cannot be dialled by other nodes",
            ),
            ("::1:8081", "an IPv6 host must be written in brackets"),
            ("[::1:8081", "an IPv6 host needs the form [addr]:port"),
            ("[host]:8081", "the bracketed host is not an IPv6 address"),
            (
                "under_score:80",
                "the host is neither an IP address nor a DNS name",
            ),
            (
                "a..b:80",
                "the host is neither an IP address nor a DNS name",
            ),
        ];
        for (text, reason) in cases {
            let error = text.parse::<Endpoint>().unwrap_err();
            assert_eq!(error.reason, reason, "{text:?}");
            assert_eq!(error.input, text);
        }
    }

    #[test]
    fn loopback_detection_covers_all_of_127_slash_8() {
        for text in ["127.0.0.1:1", "127.0.0.3:1", "[::1]:1", "LOCALHOST:1"] {
            assert!(text.parse::<Endpoint>().unwrap().is_loopback(), "{text}");
        }
        for text in ["10.0.0.1:1", "example.com:1"] {
            assert!(!text.parse::<Endpoint>().unwrap().is_loopback(), "{text}");
        }
    }
}
