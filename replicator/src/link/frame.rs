//! Frames of the link protocol and their wire encoding.
//!
//! # Frame format (protocol version 1)
//!
//! All integers are little-endian.
//!
//! | bytes | field | meaning |
//! |---|---|---|
//! | 4 | `len` | bytes after the CRC field: the version byte, the kind byte and the body |
//! | 4 | `crc32c` | CRC32C (Castagnoli) of those `len` bytes |
//! | 1 | `version` | [`PROTOCOL_VERSION`] |
//! | 1 | `kind` | which [`Frame`] (see [`Frame::kind_byte`]) |
//! | … | body | the frame's fields, in declaration order |
//!
//! Strings carry a length prefix: one byte for region names (at most [`MAX_REGION_BYTES`]), two
//! bytes for message ids and refusal messages. Lists carry a count first. A batch entry is its
//! origin position and HLC stamp, its message id, and the record as the origin's log frames it
//! (`meridian_cell::storage::record`), which keeps its own CRC and version.
//!
//! The decoder checks the length against [`Limits::max_frame_bytes`] before it looks at (or
//! allocates for) anything else, then the CRC, then parses every field with bounds checks and
//! refuses trailing bytes. It never panics and never allocates more than the declared frame
//! length, whatever bytes it is given (see the proptests and the fuzz target).

/// The protocol version this build speaks; carried in every frame and in [`Frame::Hello`].
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes before the versioned part of a frame: length and CRC.
pub const FRAME_HEADER_BYTES: usize = 8;
/// The smallest possible `len`: version and kind bytes.
pub const MIN_FRAME_LEN: usize = 2;
/// The largest `max_frame_bytes` a link may be configured with.
pub const MAX_FRAME_BYTES_CEILING: usize = 128 << 20;
/// The default frame limit: one record of the largest size the log accepts (64 MiB) plus room
/// for the entry and batch headers.
pub const DEFAULT_MAX_FRAME_BYTES: usize = (64 << 20) + (1 << 20);
/// Longest region name on the wire (the storage accepts the same).
pub const MAX_REGION_BYTES: usize = 64;
/// Longest message id on the wire.
pub const MAX_MESSAGE_ID_BYTES: usize = u16::MAX as usize;
/// Longest refusal message.
pub const MAX_REASON_BYTES: usize = 1024;
/// Most origin positions in one [`Frame::Resume`].
pub const MAX_RESUME_POSITIONS: usize = 1024;
/// The largest `max_batch_entries` a link may be configured with.
pub const MAX_BATCH_ENTRIES_CEILING: usize = 1 << 20;

/// Bytes of one batch entry on the wire besides its message id and payload: position, HLC,
/// id length and payload length.
pub const ENTRY_OVERHEAD_BYTES: usize = 8 + 8 + 2 + 4;
/// Bytes of a batch frame besides its entries: header, version, kind, start, end and count.
pub const BATCH_OVERHEAD_BYTES: usize = FRAME_HEADER_BYTES + 2 + 8 + 8 + 4;

/// Hard limits a decoder enforces; both sides of a link use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted or produced, header included.
    pub max_frame_bytes: usize,
    /// Most entries in one batch.
    pub max_batch_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_batch_entries: 8192,
        }
    }
}

impl Limits {
    /// Checks the limits against their ceilings.
    pub fn validate(&self) -> Result<(), FrameError> {
        if !(FRAME_HEADER_BYTES + MIN_FRAME_LEN + 64..=MAX_FRAME_BYTES_CEILING)
            .contains(&self.max_frame_bytes)
        {
            return Err(FrameError::BadLimit {
                field: "max_frame_bytes",
                value: self.max_frame_bytes,
                max: MAX_FRAME_BYTES_CEILING,
            });
        }
        if !(1..=MAX_BATCH_ENTRIES_CEILING).contains(&self.max_batch_entries) {
            return Err(FrameError::BadLimit {
                field: "max_batch_entries",
                value: self.max_batch_entries,
                max: MAX_BATCH_ENTRIES_CEILING,
            });
        }
        Ok(())
    }
}

/// Why bytes are not a valid frame, or why a frame cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared length exceeds the link's limit.
    #[error("frame declares {len} bytes; this link accepts at most {max}")]
    TooLarge {
        /// Declared frame length, header included.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The declared length cannot hold a version and a kind byte.
    #[error("frame declares {len} bytes after its header; at least {MIN_FRAME_LEN} are needed")]
    TooSmall {
        /// Declared length.
        len: usize,
    },
    /// The CRC does not match.
    #[error("frame CRC mismatch: stored {stored:#010x}, computed {actual:#010x}")]
    BadCrc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        actual: u32,
    },
    /// A protocol version this build does not speak.
    #[error("frame has protocol version {0}; this build speaks version {PROTOCOL_VERSION}")]
    UnknownVersion(u8),
    /// An unknown frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The frame ends inside a field.
    #[error("frame ends inside field {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// Bytes left after the last field.
    #[error("{0} unexpected bytes after the last field of the frame")]
    TrailingBytes(usize),
    /// A text field is not UTF-8.
    #[error("field {field} is not valid UTF-8")]
    NotUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A field is longer than the protocol allows.
    #[error("field {field} is {len} bytes long; at most {max} are allowed")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list holds more items than allowed.
    #[error("{field} holds {count} items; at most {max} are allowed")]
    TooManyItems {
        /// The list.
        field: &'static str,
        /// How many it holds.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A batch whose positions are out of order or outside its range.
    #[error("malformed batch: {detail}")]
    BadBatch {
        /// What is wrong.
        detail: &'static str,
    },
    /// A limit is out of range.
    #[error("{field} is {value}; it must be between 1 and {max}")]
    BadLimit {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: usize,
        /// The ceiling.
        max: usize,
    },
}

/// One replicated record in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The record's log position in its origin region.
    pub position: u64,
    /// Its HLC stamp at the origin.
    pub hlc: u64,
    /// Its message id (the receiver deduplicates by it).
    pub message_id: String,
    /// The record as the origin's log frames it.
    pub payload: Vec<u8>,
}

impl Entry {
    /// Bytes this entry takes in a batch frame; flow-control credit is counted in these.
    pub fn wire_len(&self) -> usize {
        ENTRY_OVERHEAD_BYTES + self.message_id.len() + self.payload.len()
    }
}

/// Why a side refuses or ends a link, as sent in [`Frame::Refuse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseCode {
    /// The Hello named another region as destination, or the source is this region.
    WrongRegion,
    /// The peer speaks another protocol version.
    VersionMismatch,
    /// The peer broke the protocol (sequence gap, window exceeded, unexpected frame).
    ProtocolViolation,
    /// A newer link from the same source replaced this one.
    Superseded,
    /// The side is shutting down.
    ShuttingDown,
    /// Applying or reading failed on this side.
    LocalFailure,
    /// The region named in Hello is not one the peer's certificate is issued for.
    IdentityMismatch,
    /// A code this build does not know.
    Other(u16),
}

impl RefuseCode {
    fn to_u16(self) -> u16 {
        match self {
            RefuseCode::WrongRegion => 1,
            RefuseCode::VersionMismatch => 2,
            RefuseCode::ProtocolViolation => 3,
            RefuseCode::Superseded => 4,
            RefuseCode::ShuttingDown => 5,
            RefuseCode::LocalFailure => 6,
            RefuseCode::IdentityMismatch => 7,
            RefuseCode::Other(code) => code,
        }
    }

    fn from_u16(code: u16) -> Self {
        match code {
            1 => RefuseCode::WrongRegion,
            2 => RefuseCode::VersionMismatch,
            3 => RefuseCode::ProtocolViolation,
            4 => RefuseCode::Superseded,
            5 => RefuseCode::ShuttingDown,
            6 => RefuseCode::LocalFailure,
            7 => RefuseCode::IdentityMismatch,
            other => RefuseCode::Other(other),
        }
    }
}

/// A message of the link protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// First frame from the sender.
    Hello {
        /// Chosen by the sender per connection; names the link in logs on both sides.
        link_id: u64,
        /// The sending region (whose records the link carries).
        source_region: String,
        /// The region the sender believes it reached.
        destination_region: String,
        /// The sender's protocol version.
        protocol_version: u8,
    },
    /// The receiver's answer to Hello: per origin region, the origin log position up to which it
    /// has applied everything (0: nothing yet).
    Resume {
        /// (origin region, position) pairs.
        positions: Vec<(String, u64)>,
    },
    /// Records of the origin log range `[start, end)` that the link forwards (the range may hold
    /// records that are not forwarded, see the relay rule in `link`).
    Batch {
        /// Origin log position where the range starts; equals the previous batch's `end`.
        start: u64,
        /// Origin log position after the range.
        end: u64,
        /// The forwarded records of the range, in log order.
        entries: Vec<Entry>,
    },
    /// The receiver's progress and the credit it grants.
    Ack {
        /// Everything before this origin position is applied (stored per the receiving cell's
        /// durability mode).
        applied_through: u64,
        /// Most entry bytes ([`Entry::wire_len`]) the sender may have unacknowledged.
        window_bytes: u64,
        /// Most entries the sender may have unacknowledged.
        window_entries: u32,
    },
    /// Keep-alive; answered with a Pong carrying the same nonce.
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Answer to a Ping.
    Pong {
        /// The Ping's nonce.
        nonce: u64,
    },
    /// Asks for the digest of the records of `origin_region` with origin positions in
    /// `[start, end)`.
    DigestRequest {
        /// Whose records.
        origin_region: String,
        /// First origin position.
        start: u64,
        /// Origin position after the range.
        end: u64,
    },
    /// The digest of a range, as the answering side stores it.
    DigestAnswer {
        /// Whose records.
        origin_region: String,
        /// First origin position.
        start: u64,
        /// Origin position after the range.
        end: u64,
        /// Records found in the range.
        count: u64,
        /// Their digest (see `digest::RangeDigest`).
        digest: u64,
    },
    /// The side ends the link, saying why.
    Refuse {
        /// Machine-readable reason.
        code: RefuseCode,
        /// Human-readable detail.
        message: String,
    },
}

const KIND_HELLO: u8 = 1;
const KIND_RESUME: u8 = 2;
const KIND_BATCH: u8 = 3;
const KIND_ACK: u8 = 4;
const KIND_PING: u8 = 5;
const KIND_PONG: u8 = 6;
const KIND_DIGEST_REQUEST: u8 = 7;
const KIND_DIGEST_ANSWER: u8 = 8;
const KIND_REFUSE: u8 = 9;

impl Frame {
    /// The kind byte on the wire.
    pub fn kind_byte(&self) -> u8 {
        match self {
            Frame::Hello { .. } => KIND_HELLO,
            Frame::Resume { .. } => KIND_RESUME,
            Frame::Batch { .. } => KIND_BATCH,
            Frame::Ack { .. } => KIND_ACK,
            Frame::Ping { .. } => KIND_PING,
            Frame::Pong { .. } => KIND_PONG,
            Frame::DigestRequest { .. } => KIND_DIGEST_REQUEST,
            Frame::DigestAnswer { .. } => KIND_DIGEST_ANSWER,
            Frame::Refuse { .. } => KIND_REFUSE,
        }
    }

    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Resume { .. } => "resume",
            Frame::Batch { .. } => "batch",
            Frame::Ack { .. } => "ack",
            Frame::Ping { .. } => "ping",
            Frame::Pong { .. } => "pong",
            Frame::DigestRequest { .. } => "digest-request",
            Frame::DigestAnswer { .. } => "digest-answer",
            Frame::Refuse { .. } => "refuse",
        }
    }

    /// Encodes the frame, refusing anything the decoder on the other side would refuse.
    pub fn encode(&self, limits: &Limits) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
        out.push(PROTOCOL_VERSION);
        out.push(self.kind_byte());
        match self {
            Frame::Hello {
                link_id,
                source_region,
                destination_region,
                protocol_version,
            } => {
                out.extend_from_slice(&link_id.to_le_bytes());
                out.push(*protocol_version);
                put_region(&mut out, "source_region", source_region)?;
                put_region(&mut out, "destination_region", destination_region)?;
            }
            Frame::Resume { positions } => {
                check_count("resume positions", positions.len(), MAX_RESUME_POSITIONS)?;
                out.extend_from_slice(&(positions.len() as u16).to_le_bytes());
                for (region, position) in positions {
                    put_region(&mut out, "resume region", region)?;
                    out.extend_from_slice(&position.to_le_bytes());
                }
            }
            Frame::Batch {
                start,
                end,
                entries,
            } => {
                check_count("batch entries", entries.len(), limits.max_batch_entries)?;
                check_batch_positions(*start, *end, entries.iter().map(|entry| entry.position))?;
                let body: usize = entries.iter().map(Entry::wire_len).sum();
                let total = BATCH_OVERHEAD_BYTES.saturating_add(body);
                if total > limits.max_frame_bytes {
                    return Err(FrameError::TooLarge {
                        len: total,
                        max: limits.max_frame_bytes,
                    });
                }
                out.reserve(total);
                out.extend_from_slice(&start.to_le_bytes());
                out.extend_from_slice(&end.to_le_bytes());
                out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
                for entry in entries {
                    out.extend_from_slice(&entry.position.to_le_bytes());
                    out.extend_from_slice(&entry.hlc.to_le_bytes());
                    put_u16_string(
                        &mut out,
                        "message_id",
                        &entry.message_id,
                        MAX_MESSAGE_ID_BYTES,
                    )?;
                    let len = u32::try_from(entry.payload.len()).map_err(|_| {
                        FrameError::FieldTooLong {
                            field: "payload",
                            len: entry.payload.len(),
                            max: u32::MAX as usize,
                        }
                    })?;
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(&entry.payload);
                }
            }
            Frame::Ack {
                applied_through,
                window_bytes,
                window_entries,
            } => {
                out.extend_from_slice(&applied_through.to_le_bytes());
                out.extend_from_slice(&window_bytes.to_le_bytes());
                out.extend_from_slice(&window_entries.to_le_bytes());
            }
            Frame::Ping { nonce } | Frame::Pong { nonce } => {
                out.extend_from_slice(&nonce.to_le_bytes());
            }
            Frame::DigestRequest {
                origin_region,
                start,
                end,
            } => {
                put_region(&mut out, "origin_region", origin_region)?;
                out.extend_from_slice(&start.to_le_bytes());
                out.extend_from_slice(&end.to_le_bytes());
            }
            Frame::DigestAnswer {
                origin_region,
                start,
                end,
                count,
                digest,
            } => {
                put_region(&mut out, "origin_region", origin_region)?;
                for value in [start, end, count, digest] {
                    out.extend_from_slice(&value.to_le_bytes());
                }
            }
            Frame::Refuse { code, message } => {
                out.extend_from_slice(&code.to_u16().to_le_bytes());
                put_u16_string(&mut out, "message", message, MAX_REASON_BYTES)?;
            }
        }
        if out.len() > limits.max_frame_bytes {
            return Err(FrameError::TooLarge {
                len: out.len(),
                max: limits.max_frame_bytes,
            });
        }
        let len = (out.len() - FRAME_HEADER_BYTES) as u32;
        let crc = crc32c::crc32c(&out[FRAME_HEADER_BYTES..]);
        out[..4].copy_from_slice(&len.to_le_bytes());
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }
}

/// Reads the header at the start of `bytes` and returns the whole frame's length (header
/// included), or `None` while fewer than [`FRAME_HEADER_BYTES`] bytes are there. Checks the
/// length against the limits, so a reader may allocate the returned size.
pub fn frame_len(bytes: &[u8], limits: &Limits) -> Result<Option<usize>, FrameError> {
    let Some(header) = bytes.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len < MIN_FRAME_LEN {
        return Err(FrameError::TooSmall { len });
    }
    let total = len.saturating_add(FRAME_HEADER_BYTES);
    if total > limits.max_frame_bytes {
        return Err(FrameError::TooLarge {
            len: total,
            max: limits.max_frame_bytes,
        });
    }
    Ok(Some(total))
}

/// Decodes the frame at the start of `bytes`. Returns the frame and the bytes it took, or
/// `None` if `bytes` ends before the frame does.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(total) = frame_len(bytes, limits)? else {
        return Ok(None);
    };
    let Some(frame_bytes) = bytes.get(..total) else {
        return Ok(None);
    };
    let stored = u32::from_le_bytes([
        frame_bytes[4],
        frame_bytes[5],
        frame_bytes[6],
        frame_bytes[7],
    ]);
    let body = &frame_bytes[FRAME_HEADER_BYTES..];
    let actual = crc32c::crc32c(body);
    if stored != actual {
        return Err(FrameError::BadCrc { stored, actual });
    }
    let mut reader = Reader { bytes: body };
    let version = reader.u8("version")?;
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnknownVersion(version));
    }
    let kind = reader.u8("kind")?;
    let frame = match kind {
        KIND_HELLO => Frame::Hello {
            link_id: reader.u64("link_id")?,
            protocol_version: reader.u8("protocol_version")?,
            source_region: reader.region("source_region")?,
            destination_region: reader.region("destination_region")?,
        },
        KIND_RESUME => {
            let count = reader.u16("resume count")? as usize;
            check_count("resume positions", count, MAX_RESUME_POSITIONS)?;
            let mut positions = Vec::with_capacity(count);
            for _ in 0..count {
                let region = reader.region("resume region")?;
                positions.push((region, reader.u64("resume position")?));
            }
            Frame::Resume { positions }
        }
        KIND_BATCH => {
            let start = reader.u64("batch start")?;
            let end = reader.u64("batch end")?;
            let count = reader.u32("batch count")? as usize;
            check_count("batch entries", count, limits.max_batch_entries)?;
            // Every entry takes at least its fixed overhead, so a count the remaining bytes
            // cannot hold is refused before anything is allocated for it.
            if count.saturating_mul(ENTRY_OVERHEAD_BYTES) > reader.bytes.len() {
                return Err(FrameError::Truncated {
                    field: "batch entries",
                });
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let position = reader.u64("entry position")?;
                let hlc = reader.u64("entry hlc")?;
                let message_id = reader.u16_string("message_id")?;
                let len = reader.u32("payload length")? as usize;
                let payload = reader.take(len, "payload")?.to_vec();
                entries.push(Entry {
                    position,
                    hlc,
                    message_id,
                    payload,
                });
            }
            check_batch_positions(start, end, entries.iter().map(|entry| entry.position))?;
            Frame::Batch {
                start,
                end,
                entries,
            }
        }
        KIND_ACK => Frame::Ack {
            applied_through: reader.u64("applied_through")?,
            window_bytes: reader.u64("window_bytes")?,
            window_entries: reader.u32("window_entries")?,
        },
        KIND_PING => Frame::Ping {
            nonce: reader.u64("nonce")?,
        },
        KIND_PONG => Frame::Pong {
            nonce: reader.u64("nonce")?,
        },
        KIND_DIGEST_REQUEST => Frame::DigestRequest {
            origin_region: reader.region("origin_region")?,
            start: reader.u64("digest start")?,
            end: reader.u64("digest end")?,
        },
        KIND_DIGEST_ANSWER => Frame::DigestAnswer {
            origin_region: reader.region("origin_region")?,
            start: reader.u64("digest start")?,
            end: reader.u64("digest end")?,
            count: reader.u64("digest count")?,
            digest: reader.u64("digest")?,
        },
        KIND_REFUSE => Frame::Refuse {
            code: RefuseCode::from_u16(reader.u16("refuse code")?),
            message: reader.u16_string("message")?,
        },
        other => return Err(FrameError::UnknownKind(other)),
    };
    if !reader.bytes.is_empty() {
        return Err(FrameError::TrailingBytes(reader.bytes.len()));
    }
    if let Frame::Refuse { message, .. } = &frame
        && message.len() > MAX_REASON_BYTES
    {
        return Err(FrameError::FieldTooLong {
            field: "message",
            len: message.len(),
            max: MAX_REASON_BYTES,
        });
    }
    Ok(Some((frame, total)))
}

fn check_count(field: &'static str, count: usize, max: usize) -> Result<(), FrameError> {
    if count > max {
        return Err(FrameError::TooManyItems { field, count, max });
    }
    Ok(())
}

/// A batch covers `[start, end)` and its entries lie inside it in strictly increasing order.
fn check_batch_positions(
    start: u64,
    end: u64,
    positions: impl Iterator<Item = u64>,
) -> Result<(), FrameError> {
    if start > end {
        return Err(FrameError::BadBatch {
            detail: "start is after end",
        });
    }
    let mut previous: Option<u64> = None;
    for position in positions {
        if position < start || position >= end {
            return Err(FrameError::BadBatch {
                detail: "entry position outside the batch range",
            });
        }
        if previous.is_some_and(|before| before >= position) {
            return Err(FrameError::BadBatch {
                detail: "entry positions not strictly increasing",
            });
        }
        previous = Some(position);
    }
    Ok(())
}

fn put_region(out: &mut Vec<u8>, field: &'static str, value: &str) -> Result<(), FrameError> {
    if value.len() > MAX_REGION_BYTES {
        return Err(FrameError::FieldTooLong {
            field,
            len: value.len(),
            max: MAX_REGION_BYTES,
        });
    }
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

fn put_u16_string(
    out: &mut Vec<u8>,
    field: &'static str,
    value: &str,
    max: usize,
) -> Result<(), FrameError> {
    if value.len() > max {
        return Err(FrameError::FieldTooLong {
            field,
            len: value.len(),
            max,
        });
    }
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], FrameError> {
        if self.bytes.len() < len {
            return Err(FrameError::Truncated { field });
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FrameError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, FrameError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    fn string(&mut self, len: usize, field: &'static str) -> Result<String, FrameError> {
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| FrameError::NotUtf8 { field })
    }

    fn region(&mut self, field: &'static str) -> Result<String, FrameError> {
        let len = self.u8(field)? as usize;
        if len > MAX_REGION_BYTES {
            return Err(FrameError::FieldTooLong {
                field,
                len,
                max: MAX_REGION_BYTES,
            });
        }
        self.string(len, field)
    }

    fn u16_string(&mut self, field: &'static str) -> Result<String, FrameError> {
        let len = self.u16(field)? as usize;
        self.string(len, field)
    }
}

#[cfg(test)]
#[path = "frame_test.rs"]
mod tests;
