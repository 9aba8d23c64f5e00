//! Request-signature authentication and per-user permissions (CONFORMANCE §3).
//!
//! The official clients sign the raw `x-mq-date-time` header value with HMAC-SHA1 keyed by the
//! secret key and send `authorization: MQv2-HMAC-SHA1 Credential=<AK>, SignedHeaders=...,
//! Signature=<hex>`. No clock-skew check: the Python client sends local time marked `Z` (A2).

use std::collections::HashMap;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use meridian_proto::metadata::{AUTHORIZATION, Authorization, DATE_TIME};
use meridian_proto::rocketmq::v2::Code;
use sha1::Sha1;
use tonic::metadata::MetadataMap;

use super::status::Refusal;

/// Pattern that grants a permission on every topic or group.
pub(crate) const ANY: &str = "*";

/// Users allowed on a secured cell.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The users; access keys must be unique.
    pub users: Vec<UserCredential>,
}

/// One user: its key pair and what it may do.
#[derive(Clone)]
pub struct UserCredential {
    /// Access key (`Credential=` in the header).
    pub access_key: String,
    /// Secret key the signature is keyed with.
    pub secret_key: String,
    /// Topics the user may send to (and end transactions on); `*` for all.
    pub publish_topics: Vec<String>,
    /// Consumer groups the user may consume as; `*` for all.
    pub subscribe_groups: Vec<String>,
}

impl std::fmt::Debug for UserCredential {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        formatter
            .debug_struct("UserCredential")
            .field("access_key", &self.access_key)
            .field("publish_topics", &self.publish_topics)
            .field("subscribe_groups", &self.subscribe_groups)
            .finish_non_exhaustive()
    }
}

impl AuthConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for user in &self.users {
            if user.access_key.trim().is_empty() || user.secret_key.is_empty() {
                return Err("every user needs a non-blank access key and a secret key".into());
            }
            if !seen.insert(user.access_key.as_str()) {
                return Err(format!("access key {:?} appears twice", user.access_key));
            }
        }
        Ok(())
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    /// The cell is not secured: everything is allowed.
    Open,
    /// An authenticated user.
    User(Arc<UserCredential>),
}

impl Principal {
    pub(crate) fn may_publish(&self, topic: &str) -> Result<(), Refusal> {
        match self {
            Principal::Open => Ok(()),
            Principal::User(user) if grants(&user.publish_topics, topic) => Ok(()),
            Principal::User(user) => Err(Refusal::new(
                Code::Forbidden,
                format!(
                    "access key {} may not publish to topic {topic}",
                    user.access_key
                ),
            )),
        }
    }

    pub(crate) fn may_subscribe(&self, group: &str) -> Result<(), Refusal> {
        match self {
            Principal::Open => Ok(()),
            Principal::User(user) if grants(&user.subscribe_groups, group) => Ok(()),
            Principal::User(user) => Err(Refusal::new(
                Code::Forbidden,
                format!(
                    "access key {} may not consume as group {group}",
                    user.access_key
                ),
            )),
        }
    }
}

fn grants(patterns: &[String], name: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| pattern == ANY || pattern == name)
}

/// Checks request signatures against the configured users.
#[derive(Debug, Clone, Default)]
pub(crate) struct Authenticator {
    /// `None`: authentication is off.
    users: Option<HashMap<String, Arc<UserCredential>>>,
}

impl Authenticator {
    pub(crate) fn new(config: Option<&AuthConfig>) -> Self {
        Authenticator {
            users: config.map(|config| {
                config
                    .users
                    .iter()
                    .map(|user| (user.access_key.clone(), Arc::new(user.clone())))
                    .collect()
            }),
        }
    }

    /// The caller of a request with these headers, or `UNAUTHORIZED`.
    pub(crate) fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, Refusal> {
        let Some(users) = &self.users else {
            return Ok(Principal::Open);
        };
        let unauthorized = |reason: &str| Refusal::new(Code::Unauthorized, reason.to_string());
        let header = metadata
            .get(AUTHORIZATION)
            .ok_or_else(|| unauthorized("this cell requires an access key and a signature"))?
            .to_str()
            .map_err(|_| unauthorized("the authorization header is not ASCII"))?;
        let authorization = Authorization::parse(header)
            .map_err(|error| unauthorized(&format!("malformed authorization header: {error}")))?;
        let user = users
            .get(&authorization.access_key)
            .ok_or_else(|| unauthorized("unknown access key"))?;
        let date_time = metadata
            .get(DATE_TIME)
            .ok_or_else(|| unauthorized("the signed x-mq-date-time header is missing"))?
            .as_bytes();
        let mut mac = Hmac::<Sha1>::new_from_slice(user.secret_key.as_bytes())
            .map_err(|_| unauthorized("unusable secret key"))?;
        mac.update(date_time);
        // verify_slice compares in constant time (A1).
        mac.verify_slice(&authorization.signature)
            .map_err(|_| unauthorized("signature does not match the access key's secret"))?;
        Ok(Principal::User(Arc::clone(user)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn user(publish: &[&str], subscribe: &[&str]) -> UserCredential {
        UserCredential {
            access_key: "AK1".to_string(),
            secret_key: "secret".to_string(),
            publish_topics: publish.iter().map(|s| s.to_string()).collect(),
            subscribe_groups: subscribe.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn signed(access_key: &str, secret: &str, date_time: &str) -> MetadataMap {
        let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(date_time.as_bytes());
        let signature = mac.finalize().into_bytes();
        let mut metadata = MetadataMap::new();
        metadata.insert(DATE_TIME, date_time.parse().unwrap());
        metadata.insert(
            AUTHORIZATION,
            Authorization::render(access_key, &signature)
                .parse()
                .unwrap(),
        );
        metadata
    }

    fn authenticator() -> Authenticator {
        Authenticator::new(Some(&AuthConfig {
            users: vec![user(&["orders"], &["*"])],
        }))
    }

    #[test]
    fn right_signature_is_accepted_with_the_users_permissions() {
        let principal = authenticator()
            .authenticate(&signed("AK1", "secret", "20261123T015254Z"))
            .unwrap();
        principal.may_publish("orders").unwrap();
        principal.may_subscribe("any-group").unwrap();
        let refused = principal.may_publish("payments").unwrap_err();
        assert_eq!(refused.code, Code::Forbidden);
        assert!(refused.message.contains("payments"));
    }

    #[test]
    fn wrong_secret_unknown_key_and_missing_header_are_unauthorized() {
        let auth = authenticator();
        for metadata in [
            signed("AK1", "wrong", "2026-11-23T01:54:08.755462484Z"),
            signed("AK2", "secret", "2026-11-23T01:54:08.755462484Z"),
            MetadataMap::new(),
        ] {
            let refused = auth.authenticate(&metadata).unwrap_err();
            assert_eq!(refused.code, Code::Unauthorized, "{}", refused.message);
        }
    }

    #[test]
    fn signature_over_another_date_is_refused() {
        let mut metadata = signed("AK1", "secret", "20261123T015254Z");
        metadata.insert(DATE_TIME, "20261123T015255Z".parse().unwrap());
        let refused = authenticator().authenticate(&metadata).unwrap_err();
        assert_eq!(refused.code, Code::Unauthorized);
    }

    #[test]
    fn open_cell_ignores_the_header() {
        let principal = Authenticator::new(None)
            .authenticate(&signed("", "", "20261123T015254Z"))
            .unwrap();
        assert!(matches!(principal, Principal::Open));
        principal.may_publish("anything").unwrap();
    }

    #[test]
    fn duplicate_access_keys_are_a_config_error() {
        let config = AuthConfig {
            users: vec![user(&[], &[]), user(&[], &[])],
        };
        assert!(config.validate().unwrap_err().contains("AK1"));
    }
}
