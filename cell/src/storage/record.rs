//! Log records and their on-disk framing.
//!
//! # Frame format (version 1)
//!
//! Every record in a segment file is one frame. All integers are little-endian.
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 4 | `payload_len` | length of everything after the CRC: the version byte plus the payload |
//! | 4 | `crc32c` | CRC32C (Castagnoli) of those `payload_len` bytes |
//! | 1 | `version` | record format version, currently [`FORMAT_VERSION`] |
//! | … | payload | the record, laid out as below |
//!
//! Payload (version 1): fixed-size fields first so that the indexer can read them without
//! parsing strings, then length-prefixed fields.
//!
//! | bytes | field |
//! |---|---|
//! | 1 | kind ([`RecordKind`]) |
//! | 1 | message type ([`MessageType`]) |
//! | 4 | flags (reserved, 0) |
//! | 4 | queue id |
//! | 8 | queue offset |
//! | 8 | born timestamp, ms since the UNIX epoch (producer clock) |
//! | 8 | store timestamp in this log, ms since the UNIX epoch (from this cell's HLC) |
//! | 8 | hybrid-logical-clock stamp given at the origin (NTP64: 32 bits seconds, 32 bits fraction) |
//! | 8 | origin offset: the record's log position in its origin region |
//! | 8 | delivery timestamp, ms (0 = deliver at once) |
//! | 8 | reserved (0) |
//! | 2+n | message id (UTF-8) |
//! | 2+n | topic (UTF-8) |
//! | 2+n | origin region (UTF-8) |
//! | 2+n | tags (UTF-8, empty = none) |
//! | 2+n | message group (UTF-8, empty = none) |
//! | 2 | key count, then per key 2+n (UTF-8) |
//! | 2 | property count, then per property 2+n key and 4+n value (UTF-8) |
//! | 4+n | body |
//!
//! A frame is valid when its length is within [`MIN_PAYLOAD_BYTES`, `MAX_PAYLOAD_BYTES`], its CRC
//! matches, its version is known and its payload parses exactly (no bytes left over). Anything else
//! is either a torn tail (the last thing in the active segment) or corruption; recovery decides
//! which (see `recovery.rs`).

use std::collections::BTreeMap;

use crate::error::CodecError;

/// The current record format version.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of frame header before the version byte: payload length and CRC.
pub const FRAME_HEADER_BYTES: usize = 8;
/// The smallest possible payload (version byte, fixed fields, empty variable fields).
pub const MIN_PAYLOAD_BYTES: usize = 1 + FIXED_FIELDS_BYTES + 5 * 2 + 2 + 2 + 4;
/// The largest payload a frame may declare. Larger lengths are treated as corruption, so a garbage
/// length can never make the reader allocate gigabytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;
/// Length limit of the short string fields (message id, topic, region, tags, group, keys).
pub const MAX_SHORT_STRING_BYTES: usize = u16::MAX as usize;
/// Limit on the number of keys and of properties in one record.
pub const MAX_LIST_ITEMS: usize = u16::MAX as usize;

const FIXED_FIELDS_BYTES: usize = 1 + 1 + 4 + 4 + 8 * 7;

/// What a record carries. Only messages exist today; the byte leaves room for consumer-state
/// records that replication will ship in the same log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A message produced by a client or replicated from another region.
    Message,
}

impl RecordKind {
    fn to_byte(self) -> u8 {
        match self {
            RecordKind::Message => 1,
        }
    }

    fn from_byte(byte: u8) -> Result<Self, CodecError> {
        match byte {
            1 => Ok(RecordKind::Message),
            other => Err(CodecError::UnknownRecordKind(other)),
        }
    }
}

/// The RocketMQ 5 message type a message was sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageType {
    /// Plain message.
    #[default]
    Normal,
    /// Ordered within its message group.
    Fifo,
    /// Delivered at a given time.
    Delay,
    /// Part of a transaction.
    Transaction,
}

impl MessageType {
    fn to_byte(self) -> u8 {
        match self {
            MessageType::Normal => 0,
            MessageType::Fifo => 1,
            MessageType::Delay => 2,
            MessageType::Transaction => 3,
        }
    }

    fn from_byte(byte: u8) -> Result<Self, CodecError> {
        match byte {
            0 => Ok(MessageType::Normal),
            1 => Ok(MessageType::Fifo),
            2 => Ok(MessageType::Delay),
            3 => Ok(MessageType::Transaction),
            other => Err(CodecError::UnknownMessageType(other)),
        }
    }
}

/// Where a record came from. Local appends have the local region and their own log position;
/// replicated records keep the values of their origin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// Region that first stored the record.
    pub region: String,
    /// The record's log position in that region.
    pub offset: u64,
}

/// A message as the caller hands it to the log: everything except what the log assigns
/// (queue offset, store timestamp, HLC stamp and, for local records, the origin).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewRecord {
    /// Globally unique message id (client-assigned in RocketMQ 5).
    pub message_id: String,
    /// Topic name.
    pub topic: String,
    /// Queue within the topic.
    pub queue_id: u32,
    /// Message type the producer declared.
    pub message_type: MessageType,
    /// Tag used by tag filters; empty for none.
    pub tags: String,
    /// Business keys, indexed for query by key.
    pub keys: Vec<String>,
    /// FIFO message group; empty for none.
    pub message_group: String,
    /// User properties.
    pub properties: BTreeMap<String, String>,
    /// Payload.
    pub body: Vec<u8>,
    /// Producer-side creation time, ms since the UNIX epoch.
    pub born_timestamp_ms: u64,
    /// Requested delivery time for delay messages, ms since the UNIX epoch; 0 for none.
    pub delivery_timestamp_ms: u64,
    /// Set for records replicated from another region: their origin and HLC stamp are kept.
    pub replicated: Option<ReplicatedFrom>,
}

/// Origin data a replicated record keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatedFrom {
    /// Where the record was first stored.
    pub origin: Origin,
    /// Its HLC stamp at the origin.
    pub hlc: u64,
}

/// A stored record, as read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What the record carries.
    pub kind: RecordKind,
    /// Globally unique message id.
    pub message_id: String,
    /// Topic name.
    pub topic: String,
    /// Queue within the topic.
    pub queue_id: u32,
    /// Offset within the queue, assigned by the log at append.
    pub queue_offset: u64,
    /// Message type the producer declared.
    pub message_type: MessageType,
    /// Tag; empty for none.
    pub tags: String,
    /// Business keys.
    pub keys: Vec<String>,
    /// FIFO message group; empty for none.
    pub message_group: String,
    /// User properties.
    pub properties: BTreeMap<String, String>,
    /// Payload.
    pub body: Vec<u8>,
    /// Producer-side creation time, ms.
    pub born_timestamp_ms: u64,
    /// Time the record was stored in this log, ms, from this cell's HLC (for local records the
    /// physical part of `hlc`; for replicated records the time they arrived here).
    pub store_timestamp_ms: u64,
    /// Hybrid-logical-clock stamp (NTP64 encoding) given at the origin.
    pub hlc: u64,
    /// Delivery time for delay messages, ms; 0 for none.
    pub delivery_timestamp_ms: u64,
    /// Where the record was first stored.
    pub origin: Origin,
}

impl Record {
    /// Bytes this record occupies in the log, frame header included.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_BYTES + self.payload_len()
    }

    fn payload_len(&self) -> usize {
        1 + FIXED_FIELDS_BYTES
            + 2 * 5
            + self.message_id.len()
            + self.topic.len()
            + self.origin.region.len()
            + self.tags.len()
            + self.message_group.len()
            + 2
            + self.keys.iter().map(|key| 2 + key.len()).sum::<usize>()
            + 2
            + self
                .properties
                .iter()
                .map(|(key, value)| 2 + key.len() + 4 + value.len())
                .sum::<usize>()
            + 4
            + self.body.len()
    }

    /// Checks the limits the frame format imposes, so that `encode_into` cannot fail later.
    pub fn check_encodable(&self) -> Result<(), CodecError> {
        let short_fields = [
            ("message id", &self.message_id),
            ("topic", &self.topic),
            ("origin region", &self.origin.region),
            ("tags", &self.tags),
            ("message group", &self.message_group),
        ];
        for (field, value) in short_fields {
            if value.len() > MAX_SHORT_STRING_BYTES {
                return Err(CodecError::FieldTooLong {
                    field,
                    len: value.len(),
                    max: MAX_SHORT_STRING_BYTES,
                });
            }
        }
        if self.keys.len() > MAX_LIST_ITEMS || self.properties.len() > MAX_LIST_ITEMS {
            return Err(CodecError::TooManyItems {
                max: MAX_LIST_ITEMS,
            });
        }
        for key in &self.keys {
            if key.len() > MAX_SHORT_STRING_BYTES {
                return Err(CodecError::FieldTooLong {
                    field: "key",
                    len: key.len(),
                    max: MAX_SHORT_STRING_BYTES,
                });
            }
        }
        for name in self.properties.keys() {
            if name.len() > MAX_SHORT_STRING_BYTES {
                return Err(CodecError::FieldTooLong {
                    field: "property name",
                    len: name.len(),
                    max: MAX_SHORT_STRING_BYTES,
                });
            }
        }
        let payload = self.payload_len();
        if payload > MAX_PAYLOAD_BYTES {
            return Err(CodecError::RecordTooLarge {
                len: payload,
                max: MAX_PAYLOAD_BYTES,
            });
        }
        Ok(())
    }

    /// Appends this record's frame to `out`. The caller must have called `check_encodable`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let payload_len = self.payload_len();
        out.reserve(FRAME_HEADER_BYTES + payload_len);
        out.extend_from_slice(&(payload_len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]); // CRC, filled in below.
        out.push(FORMAT_VERSION);
        out.push(self.kind.to_byte());
        out.push(self.message_type.to_byte());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.queue_id.to_le_bytes());
        for value in [
            self.queue_offset,
            self.born_timestamp_ms,
            self.store_timestamp_ms,
            self.hlc,
            self.origin.offset,
            self.delivery_timestamp_ms,
        ] {
            out.extend_from_slice(&value.to_le_bytes());
        }
        // Seven u64 fields are accounted for in FIXED_FIELDS_BYTES; the seventh is reserved so the
        // fixed block stays 8-byte aligned for future fields.
        out.extend_from_slice(&0u64.to_le_bytes());
        for value in [
            &self.message_id,
            &self.topic,
            &self.origin.region,
            &self.tags,
            &self.message_group,
        ] {
            put_short(out, value);
        }
        out.extend_from_slice(&(self.keys.len() as u16).to_le_bytes());
        for key in &self.keys {
            put_short(out, key);
        }
        out.extend_from_slice(&(self.properties.len() as u16).to_le_bytes());
        for (name, value) in &self.properties {
            put_short(out, name);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.body);
        debug_assert_eq!(
            out.len() - start,
            FRAME_HEADER_BYTES + payload_len,
            "payload_len out of sync with encode"
        );
        let crc = crc32c::crc32c(&out[start + FRAME_HEADER_BYTES..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// Encodes into a fresh buffer.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        self.check_encodable()?;
        let mut out = Vec::with_capacity(self.frame_len());
        self.encode_into(&mut out);
        Ok(out)
    }
}

fn put_short(out: &mut Vec<u8>, value: &str) {
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// The result of looking at the bytes where a frame should start.
#[derive(Debug)]
pub enum FrameCheck {
    /// A complete, valid frame of `frame_len` bytes.
    Valid { frame_len: usize },
    /// Fewer bytes than the header or the declared length: the frame may continue past the end
    /// of what was given.
    Incomplete,
    /// The bytes are not a valid frame.
    Invalid(CodecError),
}

/// Checks the frame starting at `bytes[0]` without decoding its fields beyond the CRC.
pub fn check_frame(bytes: &[u8]) -> FrameCheck {
    let Some(header) = bytes.get(..FRAME_HEADER_BYTES) else {
        return FrameCheck::Incomplete;
    };
    let payload_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if !(MIN_PAYLOAD_BYTES..=MAX_PAYLOAD_BYTES).contains(&payload_len) {
        return FrameCheck::Invalid(CodecError::BadLength(payload_len));
    }
    let Some(payload) = bytes.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + payload_len) else {
        return FrameCheck::Incomplete;
    };
    let stored_crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let actual_crc = crc32c::crc32c(payload);
    if stored_crc != actual_crc {
        return FrameCheck::Invalid(CodecError::BadCrc {
            stored: stored_crc,
            actual: actual_crc,
        });
    }
    if payload[0] != FORMAT_VERSION {
        return FrameCheck::Invalid(CodecError::UnknownVersion(payload[0]));
    }
    FrameCheck::Valid {
        frame_len: FRAME_HEADER_BYTES + payload_len,
    }
}

/// Decodes one frame starting at `bytes[0]`; returns the record and the frame's length.
pub fn decode_frame(bytes: &[u8]) -> Result<(Record, usize), CodecError> {
    match check_frame(bytes) {
        FrameCheck::Valid { frame_len } => {
            let record = decode_payload(&bytes[FRAME_HEADER_BYTES + 1..frame_len])?;
            Ok((record, frame_len))
        }
        FrameCheck::Incomplete => Err(CodecError::Truncated),
        FrameCheck::Invalid(error) => Err(error),
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        if self.bytes.len() < len {
            return Err(CodecError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        let mut array = [0u8; 8];
        array.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(array))
    }

    fn short_string(&mut self, field: &'static str) -> Result<String, CodecError> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::NotUtf8 { field })
    }

    fn long_string(&mut self, field: &'static str) -> Result<String, CodecError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::NotUtf8 { field })
    }
}

/// Decodes a version-1 payload (without the version byte).
fn decode_payload(payload: &[u8]) -> Result<Record, CodecError> {
    let mut cursor = Cursor { bytes: payload };
    let kind = RecordKind::from_byte(cursor.u8()?)?;
    let message_type = MessageType::from_byte(cursor.u8()?)?;
    let _flags = cursor.u32()?;
    let queue_id = cursor.u32()?;
    let queue_offset = cursor.u64()?;
    let born_timestamp_ms = cursor.u64()?;
    let store_timestamp_ms = cursor.u64()?;
    let hlc = cursor.u64()?;
    let origin_offset = cursor.u64()?;
    let delivery_timestamp_ms = cursor.u64()?;
    let _reserved = cursor.u64()?;
    let message_id = cursor.short_string("message id")?;
    let topic = cursor.short_string("topic")?;
    let origin_region = cursor.short_string("origin region")?;
    let tags = cursor.short_string("tags")?;
    let message_group = cursor.short_string("message group")?;
    let key_count = cursor.u16()? as usize;
    let mut keys = Vec::with_capacity(key_count.min(64));
    for _ in 0..key_count {
        keys.push(cursor.short_string("key")?);
    }
    let property_count = cursor.u16()? as usize;
    let mut properties = BTreeMap::new();
    for _ in 0..property_count {
        let name = cursor.short_string("property name")?;
        let value = cursor.long_string("property value")?;
        properties.insert(name, value);
    }
    let body_len = cursor.u32()? as usize;
    let body = cursor.take(body_len)?.to_vec();
    if !cursor.bytes.is_empty() {
        return Err(CodecError::TrailingBytes(cursor.bytes.len()));
    }
    Ok(Record {
        kind,
        message_id,
        topic,
        queue_id,
        queue_offset,
        message_type,
        tags,
        keys,
        message_group,
        properties,
        body,
        born_timestamp_ms,
        store_timestamp_ms,
        hlc,
        delivery_timestamp_ms,
        origin: Origin {
            region: origin_region,
            offset: origin_offset,
        },
    })
}

#[cfg(test)]
#[path = "record_test.rs"]
mod tests;
