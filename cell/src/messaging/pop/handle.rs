//! Receipt handles: the token a consumer presents to ack or change the invisibility of a message
//! it received.
//!
//! A handle names the queue and offset of the message, the delivery attempt it was issued for, a
//! nonce unique within that queue's consumer state and a scope naming the (group, topic) it was
//! issued for. Only the newest handle of an in-flight message is accepted: redelivery and a change
//! of invisible duration issue a new nonce, which makes every earlier handle stale. The scope
//! matters because nonces are counted per (group, topic, queue): without it, two groups reading
//! the same queue would issue identical handles, and one group's handle would ack the other's
//! message. Handles are opaque text to clients.

use crate::messaging::error::MessagingError;

/// Prefix and version of the text form.
const HANDLE_PREFIX: &str = "m2";
/// Longest handle text accepted before parsing.
pub const MAX_RECEIPT_HANDLE_BYTES: usize = 128;

/// A decoded receipt handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptHandle {
    /// Queue of the message.
    pub queue_id: u32,
    /// Queue offset of the message.
    pub offset: u64,
    /// Delivery attempt this handle was issued for (1 for the first delivery).
    pub attempt: u32,
    /// Unique per issue within the queue's consumer state.
    pub nonce: u64,
    /// Hash of the (group, topic) the handle was issued for.
    pub scope: u32,
}

impl ReceiptHandle {
    /// The text form given to clients.
    pub fn encode(&self) -> String {
        format!(
            "{HANDLE_PREFIX}.{:x}.{:x}.{:x}.{:x}.{:x}",
            self.queue_id, self.offset, self.attempt, self.nonce, self.scope
        )
    }

    /// Parses the text form.
    pub fn decode(text: &str) -> Result<Self, MessagingError> {
        let invalid = |reason| MessagingError::InvalidReceiptHandle {
            handle: text.to_string(),
            reason,
        };
        if text.len() > MAX_RECEIPT_HANDLE_BYTES {
            return Err(invalid("too long"));
        }
        let mut parts = text.split('.');
        if parts.next() != Some(HANDLE_PREFIX) {
            return Err(invalid("not issued by this cell"));
        }
        let mut field = || -> Result<u64, MessagingError> {
            let part = parts.next().ok_or_else(|| invalid("too few fields"))?;
            if part.is_empty() || part.len() > 16 {
                return Err(invalid("malformed field"));
            }
            u64::from_str_radix(part, 16).map_err(|_| invalid("malformed field"))
        };
        let queue_id = u32::try_from(field()?).map_err(|_| invalid("queue id out of range"))?;
        let offset = field()?;
        let attempt = u32::try_from(field()?).map_err(|_| invalid("attempt out of range"))?;
        let nonce = field()?;
        let scope = u32::try_from(field()?).map_err(|_| invalid("scope out of range"))?;
        if parts.next().is_some() {
            return Err(invalid("too many fields"));
        }
        Ok(ReceiptHandle {
            queue_id,
            offset,
            attempt,
            nonce,
            scope,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let handle = ReceiptHandle {
            queue_id: 7,
            offset: u64::MAX,
            attempt: 3,
            nonce: 0xdead_beef,
            scope: u32::MAX,
        };
        assert_eq!(ReceiptHandle::decode(&handle.encode()).unwrap(), handle);
        for bad in [
            "",
            "m1",
            "m1.1.2.3.4",
            "m2.1.2.3.4",
            "m2.1.2.3.4.5.6",
            "m2.x.2.3.4.5",
            "m2.1.2.3.4.",
            "m2.100000000.1.1.1.1",
            "m2.1.1.1.1.100000000",
        ] {
            assert!(
                matches!(
                    ReceiptHandle::decode(bad),
                    Err(MessagingError::InvalidReceiptHandle { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(ReceiptHandle::decode(&"m2.".repeat(100)).is_err());
    }
}
