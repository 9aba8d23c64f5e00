//! Protocol statuses: every outcome goes out as a `Status` whose code the calling client can
//! decode (CONFORMANCE S1, S2).

use meridian_proto::codes::code_for_client;
use meridian_proto::rocketmq::v2::{Code, Language, Status};

use crate::messaging::MessagingError;

/// An outcome that is not OK, before it is shaped for a particular client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }

    /// The status for a client speaking `language`: codes it cannot decode are replaced by
    /// their class (RS 5.0.0 panics on unknown codes).
    pub(crate) fn to_status(&self, language: Language) -> Status {
        Status {
            code: code_for_client(self.code, language) as i32,
            message: self.message.clone(),
        }
    }
}

impl From<&MessagingError> for Refusal {
    fn from(error: &MessagingError) -> Self {
        let code = i32::try_from(error.rocketmq_code())
            .ok()
            .and_then(|value| Code::try_from(value).ok())
            .filter(|code| *code != Code::Unspecified)
            .unwrap_or(Code::InternalError);
        if code == Code::InternalError {
            tracing::warn!(%error, "request failed inside the cell");
        }
        Refusal::new(code, error.to_string())
    }
}

impl From<MessagingError> for Refusal {
    fn from(error: MessagingError) -> Self {
        Refusal::from(&error)
    }
}

/// The OK status.
pub(crate) fn ok() -> Status {
    Status {
        code: Code::Ok as i32,
        message: "OK".to_string(),
    }
}

/// The status of `result` for a client speaking `language`.
pub(crate) fn of<T>(result: &Result<T, Refusal>, language: Language) -> Status {
    match result {
        Ok(_) => ok(),
        Err(refusal) => refusal.to_status(language),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_unknown_to_rust_clients_are_replaced_by_their_class() {
        let refusal = Refusal::new(Code::MessageBodyEmpty, "message body is empty");
        assert_eq!(
            refusal.to_status(Language::Rust).code,
            Code::BadRequest as i32
        );
        assert_eq!(
            refusal.to_status(Language::Python).code,
            Code::MessageBodyEmpty as i32
        );
        assert_eq!(refusal.to_status(Language::Rust).message, refusal.message);
    }

    #[test]
    fn messaging_errors_keep_their_protocol_code_and_message() {
        let error = MessagingError::TopicNotFound {
            topic: "orders".to_string(),
        };
        let refusal = Refusal::from(&error);
        assert_eq!(refusal.code, Code::TopicNotFound);
        assert!(refusal.message.contains("orders"), "{}", refusal.message);
        let stale = MessagingError::StaleReceiptHandle { current_attempt: 3 };
        assert_eq!(Refusal::from(&stale).code, Code::InvalidReceiptHandle);
    }

    #[test]
    fn ok_is_never_unspecified() {
        assert_eq!(ok().code, Code::Ok as i32);
        assert_eq!(of(&Ok::<(), Refusal>(()), Language::Rust).code, 20000);
    }
}
