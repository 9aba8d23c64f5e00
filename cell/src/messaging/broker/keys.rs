//! Keys of the messaging state in the storage's consumer-offsets column family.
//!
//! The messaging state is read by point lookups (no prefix scans), so everything that must be
//! found again after a restart is under a fixed key (`meta/*`, checkpoints) or under a key
//! computable from metadata (per group, topic and queue) or from an offset (done markers).

pub(crate) const TOPICS_KEY: &[u8] = b"meta/topics";
pub(crate) const GROUPS_KEY: &[u8] = b"meta/groups";
/// Timer-topic offset below which every delay message has been released.
pub(crate) const TIMER_FLOOR_KEY: &[u8] = b"timer/floor";
/// Half-topic offset below which every transaction is resolved.
pub(crate) const TXN_FLOOR_KEY: &[u8] = b"txn/floor";

/// Prefix of the markers of released delay messages, one per timer-topic offset.
pub(crate) const TIMER_DONE_PREFIX: &[u8] = b"timer/done/";
/// Prefix of the markers of ended transactions, one per half-topic offset.
pub(crate) const TXN_DONE_PREFIX: &[u8] = b"txn/done/";

/// The marker key of an internal-topic offset: big-endian, so that the markers below a floor
/// form one key range and can be removed with one range delete.
pub(crate) fn done_key(prefix: &[u8], offset: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

pub(crate) fn pop_key(group: &str, topic: &str, queue_id: u32) -> Vec<u8> {
    format!("pop/{group}/{topic}/{queue_id}").into_bytes()
}

pub(crate) fn offset_key(
    group: &str,
    topic: &str,
    queue_id: u32,
    client_id: Option<&str>,
) -> Vec<u8> {
    match client_id {
        Some(client) => format!("off/{group}/{topic}/{queue_id}/{client}").into_bytes(),
        None => format!("off/{group}/{topic}/{queue_id}").into_bytes(),
    }
}

pub(crate) fn txn_checks_key(message_id: &str) -> Vec<u8> {
    format!("txn/checks/{message_id}").into_bytes()
}

pub(crate) fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let array: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_le_bytes(array))
}
