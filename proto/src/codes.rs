//! Status codes (`apache.rocketmq.v2.Code`): their classes, and which codes each official
//! client can receive without failing.
//!
//! Why this matters: the Rust client `rocketmq` 5.0.0 turns the number in `Status.code` into
//! its own `Code` enum with an `unwrap()`, so any value missing from its copy of the enum
//! panics the client. Its enum lacks six codes that newer protocol revisions (and the Python
//! client 5.1.2) have. The lists below were checked by comparing our compiled descriptor with
//! the Rust crate's generated `apache.rocketmq.v2.rs` and the Python package's
//! `definition_pb2` descriptor.

use crate::ProtoError;
use crate::rocketmq::v2::{Code, Language, Status};

/// Codes defined by the current protocol that the Rust client 5.0.0 does not know.
///
/// Sending any of these to that client panics it (`Code::from_i32(..).unwrap()`).
pub const UNKNOWN_TO_RUST_5_0_0: [Code; 6] = [
    Code::IllegalOffset,
    Code::IllegalLiteTopic,
    Code::OffsetNotFound,
    Code::MessageBodyEmpty,
    Code::LiteTopicQuotaExceeded,
    Code::LiteSubscriptionQuotaExceeded,
];

/// Family of a code, after the HTTP-like hundreds of its number (`40402` is in `404`).
///
/// The Python client raises one exception type per family, roughly; the Rust client only
/// distinguishes OK from everything else (and MESSAGE_NOT_FOUND on receive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeClass {
    /// `0`: never send it; the Python client rejects the response as illegal.
    Unspecified,
    /// `200xx`: OK.
    Ok,
    /// `300xx`: per-entry results differ. The Python client treats it as success, the Rust
    /// client as failure, so avoid it for single-entry requests.
    MultipleResults,
    /// `400xx`: malformed request or a format rule broken.
    BadRequest,
    /// `401xx`: missing or wrong credentials.
    Unauthorized,
    /// `402xx`: account suspended.
    PaymentRequired,
    /// `403xx`: authenticated but not allowed.
    Forbidden,
    /// `404xx`: something named in the request does not exist.
    NotFound,
    /// `408xx`.
    RequestTimeout,
    /// `413xx`: body or request too large (or, newer, empty).
    PayloadTooLarge,
    /// `428xx`.
    PreconditionFailed,
    /// `429xx`: throttled; the Python producer stops retrying.
    TooManyRequests,
    /// `431xx`: headers or message properties too large.
    HeaderFieldsTooLarge,
    /// `500xx`.
    InternalError,
    /// `501xx`.
    NotImplemented,
    /// `504xx`: the server timed out waiting for its own upstream (storage, replicas).
    ProxyTimeout,
    /// `505xx`.
    Unsupported,
    /// `600xx`: reported by a client about its own consumption.
    ConsumeFailed,
}

impl CodeClass {
    /// The family `code` belongs to.
    ///
    /// Written as an exhaustive match so that a code added to the `.proto` cannot compile
    /// until someone decides its class (and its fallback in [`code_for_client`]).
    pub fn of(code: Code) -> Self {
        match code {
            Code::Unspecified => Self::Unspecified,
            Code::Ok => Self::Ok,
            Code::MultipleResults => Self::MultipleResults,
            Code::BadRequest
            | Code::IllegalAccessPoint
            | Code::IllegalTopic
            | Code::IllegalConsumerGroup
            | Code::IllegalMessageTag
            | Code::IllegalMessageKey
            | Code::IllegalMessageGroup
            | Code::IllegalMessagePropertyKey
            | Code::InvalidTransactionId
            | Code::IllegalMessageId
            | Code::IllegalFilterExpression
            | Code::IllegalInvisibleTime
            | Code::IllegalDeliveryTime
            | Code::InvalidReceiptHandle
            | Code::MessagePropertyConflictWithType
            | Code::UnrecognizedClientType
            | Code::MessageCorrupted
            | Code::ClientIdRequired
            | Code::IllegalPollingTime
            | Code::IllegalOffset
            | Code::IllegalLiteTopic => Self::BadRequest,
            Code::Unauthorized => Self::Unauthorized,
            Code::PaymentRequired => Self::PaymentRequired,
            Code::Forbidden => Self::Forbidden,
            Code::NotFound
            | Code::MessageNotFound
            | Code::TopicNotFound
            | Code::ConsumerGroupNotFound
            | Code::OffsetNotFound => Self::NotFound,
            Code::RequestTimeout => Self::RequestTimeout,
            Code::PayloadTooLarge | Code::MessageBodyTooLarge | Code::MessageBodyEmpty => {
                Self::PayloadTooLarge
            }
            Code::PreconditionFailed => Self::PreconditionFailed,
            Code::TooManyRequests
            | Code::LiteTopicQuotaExceeded
            | Code::LiteSubscriptionQuotaExceeded => Self::TooManyRequests,
            Code::RequestHeaderFieldsTooLarge | Code::MessagePropertiesTooLarge => {
                Self::HeaderFieldsTooLarge
            }
            Code::InternalError | Code::InternalServerError | Code::HaNotAvailable => {
                Self::InternalError
            }
            Code::NotImplemented => Self::NotImplemented,
            Code::ProxyTimeout | Code::MasterPersistenceTimeout | Code::SlavePersistenceTimeout => {
                Self::ProxyTimeout
            }
            Code::Unsupported | Code::VersionUnsupported | Code::VerifyFifoMessageUnsupported => {
                Self::Unsupported
            }
            Code::FailedToConsumeMessage => Self::ConsumeFailed,
        }
    }
}

/// Whether the Rust client 5.0.0 can decode `code` (it panics on the others).
pub fn is_known_to_rust_5_0_0(code: Code) -> bool {
    !UNKNOWN_TO_RUST_5_0_0.contains(&code)
}

/// Whether every official client we checked (Rust 5.0.0 and Python 5.1.2) can decode `code`.
///
/// Python 5.1.2 knows every value of our `Code` enum, so this is the Rust 5.0.0 set.
pub fn is_known_to_clients(code: Code) -> bool {
    is_known_to_rust_5_0_0(code)
}

/// Whether a client that announced `language` (the `x-mq-language` header) can decode `code`.
///
/// Only Python 5.1.2 was checked to know the newer codes. Every other language, including an
/// absent or unrecognised header, is held to the older set, because an older client may
/// react to an unknown value as badly as the Rust one does.
pub fn is_known_to(code: Code, language: Language) -> bool {
    match language {
        Language::Python => true,
        _ => is_known_to_clients(code),
    }
}

/// The code to actually send to a client that announced `language`: `code` itself when the
/// client knows it, else the nearest older code of the same meaning.
///
/// Fallbacks: a missing body is a bad request (not "too large"), an unknown offset is
/// "not found", lite-topic quotas are throttling, and the newer format errors are plain bad
/// requests.
pub fn code_for_client(code: Code, language: Language) -> Code {
    if is_known_to(code, language) {
        return code;
    }
    match code {
        Code::IllegalOffset | Code::IllegalLiteTopic | Code::MessageBodyEmpty => Code::BadRequest,
        Code::OffsetNotFound => Code::NotFound,
        Code::LiteTopicQuotaExceeded | Code::LiteSubscriptionQuotaExceeded => Code::TooManyRequests,
        // Unreachable while UNKNOWN_TO_RUST_5_0_0 lists exactly the arms above; a generic
        // server error is the safe answer should the lists ever drift apart.
        _ => Code::InternalError,
    }
}

/// Converts a status code number from the wire into a [`Code`].
pub fn code_from_wire(value: i32) -> Result<Code, ProtoError> {
    Code::try_from(value).map_err(|source| ProtoError::UnknownCode { value, source })
}

impl Status {
    /// A status with `code` and a human-readable `message`.
    pub fn with_code(code: Code, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            message: message.into(),
        }
    }

    /// `OK` with the conventional message the reference server uses.
    pub fn ok() -> Self {
        Self::with_code(Code::Ok, "OK")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every value of the enum with its number, from the research note's table. Kept
    /// independent of the generated code so a renumbered `.proto` value fails here.
    const NOTE_TABLE: [(Code, i32); 53] = [
        (Code::Unspecified, 0),
        (Code::Ok, 20000),
        (Code::MultipleResults, 30000),
        (Code::BadRequest, 40000),
        (Code::IllegalAccessPoint, 40001),
        (Code::IllegalTopic, 40002),
        (Code::IllegalConsumerGroup, 40003),
        (Code::IllegalMessageTag, 40004),
        (Code::IllegalMessageKey, 40005),
        (Code::IllegalMessageGroup, 40006),
        (Code::IllegalMessagePropertyKey, 40007),
        (Code::InvalidTransactionId, 40008),
        (Code::IllegalMessageId, 40009),
        (Code::IllegalFilterExpression, 40010),
        (Code::IllegalInvisibleTime, 40011),
        (Code::IllegalDeliveryTime, 40012),
        (Code::InvalidReceiptHandle, 40013),
        (Code::MessagePropertyConflictWithType, 40014),
        (Code::UnrecognizedClientType, 40015),
        (Code::MessageCorrupted, 40016),
        (Code::ClientIdRequired, 40017),
        (Code::IllegalPollingTime, 40018),
        (Code::IllegalOffset, 40019),
        (Code::IllegalLiteTopic, 40020),
        (Code::Unauthorized, 40100),
        (Code::PaymentRequired, 40200),
        (Code::Forbidden, 40300),
        (Code::NotFound, 40400),
        (Code::MessageNotFound, 40401),
        (Code::TopicNotFound, 40402),
        (Code::ConsumerGroupNotFound, 40403),
        (Code::OffsetNotFound, 40404),
        (Code::RequestTimeout, 40800),
        (Code::PayloadTooLarge, 41300),
        (Code::MessageBodyTooLarge, 41301),
        (Code::MessageBodyEmpty, 41302),
        (Code::PreconditionFailed, 42800),
        (Code::TooManyRequests, 42900),
        (Code::LiteTopicQuotaExceeded, 42901),
        (Code::LiteSubscriptionQuotaExceeded, 42902),
        (Code::RequestHeaderFieldsTooLarge, 43100),
        (Code::MessagePropertiesTooLarge, 43101),
        (Code::InternalError, 50000),
        (Code::InternalServerError, 50001),
        (Code::HaNotAvailable, 50002),
        (Code::NotImplemented, 50100),
        (Code::ProxyTimeout, 50400),
        (Code::MasterPersistenceTimeout, 50401),
        (Code::SlavePersistenceTimeout, 50402),
        (Code::Unsupported, 50500),
        (Code::VersionUnsupported, 50501),
        (Code::VerifyFifoMessageUnsupported, 50502),
        (Code::FailedToConsumeMessage, 60000),
    ];

    #[test]
    fn code_numbers_match_the_research_table() {
        for (code, number) in NOTE_TABLE {
            assert_eq!(code as i32, number, "{code:?}");
            assert_eq!(code_from_wire(number).unwrap(), code);
        }
    }

    #[test]
    fn class_follows_the_hundreds_of_the_number() {
        // Cross-checks the hand-written match against the numeric scheme it encodes.
        for (code, number) in NOTE_TABLE {
            let expected = match number / 100 {
                0 => CodeClass::Unspecified,
                200 => CodeClass::Ok,
                300 => CodeClass::MultipleResults,
                400 => CodeClass::BadRequest,
                401 => CodeClass::Unauthorized,
                402 => CodeClass::PaymentRequired,
                403 => CodeClass::Forbidden,
                404 => CodeClass::NotFound,
                408 => CodeClass::RequestTimeout,
                413 => CodeClass::PayloadTooLarge,
                428 => CodeClass::PreconditionFailed,
                429 => CodeClass::TooManyRequests,
                431 => CodeClass::HeaderFieldsTooLarge,
                500 => CodeClass::InternalError,
                501 => CodeClass::NotImplemented,
                504 => CodeClass::ProxyTimeout,
                505 => CodeClass::Unsupported,
                600 => CodeClass::ConsumeFailed,
                other => panic!("no class for family {other}"),
            };
            assert_eq!(CodeClass::of(code), expected, "{code:?}");
        }
    }

    #[test]
    fn rust_client_lacks_exactly_the_six_newer_codes() {
        let unknown: Vec<i32> = NOTE_TABLE
            .iter()
            .filter(|(code, _)| !is_known_to_rust_5_0_0(*code))
            .map(|(_, number)| *number)
            .collect();
        assert_eq!(unknown, [40019, 40020, 40404, 41302, 42901, 42902]);
    }

    #[test]
    fn every_code_sent_to_a_rust_client_is_one_it_knows() {
        for (code, _) in NOTE_TABLE {
            let sent = code_for_client(code, Language::Rust);
            assert!(is_known_to_rust_5_0_0(sent), "{code:?} -> {sent:?}");
            if is_known_to_rust_5_0_0(code) {
                assert_eq!(sent, code, "known codes pass through unchanged");
            } else {
                assert_ne!(sent, Code::InternalError, "{code:?} needs a real fallback");
            }
        }
    }

    #[test]
    fn fallbacks_keep_the_meaning() {
        assert_eq!(
            code_for_client(Code::MessageBodyEmpty, Language::Rust),
            Code::BadRequest
        );
        assert_eq!(
            code_for_client(Code::OffsetNotFound, Language::Rust),
            Code::NotFound
        );
        assert_eq!(
            code_for_client(Code::LiteTopicQuotaExceeded, Language::Golang),
            Code::TooManyRequests
        );
        // Python knows the newer codes and gets them verbatim.
        assert_eq!(
            code_for_client(Code::MessageBodyEmpty, Language::Python),
            Code::MessageBodyEmpty
        );
        // Unknown or missing language: the conservative set.
        assert_eq!(
            code_for_client(Code::IllegalOffset, Language::Unspecified),
            Code::BadRequest
        );
    }

    #[test]
    fn unknown_wire_number_is_an_error_not_a_panic() {
        let err = code_from_wire(40099).unwrap_err();
        assert!(matches!(err, ProtoError::UnknownCode { value: 40099, .. }));
        assert!(err.to_string().contains("40099"));
    }

    #[test]
    fn status_helpers_set_code_and_message() {
        let ok = Status::ok();
        assert_eq!(ok.code(), Code::Ok);
        let bad = Status::with_code(Code::TopicNotFound, "no topic t1");
        assert_eq!(bad.code, 40402);
        assert_eq!(bad.message, "no topic t1");
    }
}
