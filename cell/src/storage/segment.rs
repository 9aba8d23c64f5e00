//! Segment files: the commit log split into files named by the log position of their first byte.
//!
//! Log positions are global byte addresses: a segment whose file is `00000000001073741824.log`
//! holds positions from 1,073,741,824 up to that plus its length, and the next segment starts
//! exactly where it ends. Records never span two segments.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{CodecError, StorageError};
use crate::storage::record::{self, FRAME_HEADER_BYTES, MAX_PAYLOAD_BYTES, Record};

const SEGMENT_SUFFIX: &str = ".log";
/// Bytes read at once when fetching a record whose length is not known yet; most records fit.
const READ_AHEAD_BYTES: usize = 4096;

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Log position of the segment's first byte.
    pub(crate) base: u64,
    /// Path of the file.
    pub(crate) path: PathBuf,
    /// Handle shared by readers (positional reads) and, for the active segment, the writer
    /// (positional writes) and the flusher (fdatasync).
    pub(crate) file: File,
}

/// File name of the segment starting at `base`.
pub(crate) fn segment_file_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

impl Segment {
    /// Opens an existing segment for reading and writing.
    pub(crate) fn open(path: PathBuf, base: u64) -> Result<Self, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|error| StorageError::io("open segment", &path, error))?;
        Ok(Segment { base, path, file })
    }

    /// Creates a new, empty segment and makes its directory entry durable.
    pub(crate) fn create(dir: &Path, base: u64) -> Result<Self, StorageError> {
        let path = dir.join(segment_file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|error| StorageError::io("create segment", &path, error))?;
        sync_dir(dir)?;
        Ok(Segment { base, path, file })
    }

    /// Current length of the file.
    pub(crate) fn file_len(&self) -> Result<u64, StorageError> {
        self.file
            .metadata()
            .map(|metadata| metadata.len())
            .map_err(|error| StorageError::io("stat segment", &self.path, error))
    }

    /// Reads the record whose frame starts at `offset` within this segment.
    pub(crate) fn read_record(&self, offset: u64) -> Result<Record, StorageError> {
        let mut buffer = vec![0u8; READ_AHEAD_BYTES];
        let read = read_at_most(&self.file, &mut buffer, offset)
            .map_err(|error| StorageError::io("read segment", &self.path, error))?;
        buffer.truncate(read);
        let frame_len = declared_frame_len(&buffer)
            .ok_or_else(|| self.corrupt(offset, CodecError::Truncated))?;
        if frame_len > FRAME_HEADER_BYTES + MAX_PAYLOAD_BYTES {
            return Err(self.corrupt(offset, CodecError::BadLength(frame_len)));
        }
        if buffer.len() < frame_len {
            let already = buffer.len();
            buffer.resize(frame_len, 0);
            let more = read_at_most(&self.file, &mut buffer[already..], offset + already as u64)
                .map_err(|error| StorageError::io("read segment", &self.path, error))?;
            buffer.truncate(already + more);
        }
        record::decode_frame(&buffer)
            .map(|(record, _)| record)
            .map_err(|source| self.corrupt(offset, source))
    }

    /// Reads `len` bytes at `offset` (fewer at the end of the file).
    pub(crate) fn read_bytes(&self, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        let mut buffer = vec![0u8; len];
        let read = read_at_most(&self.file, &mut buffer, offset)
            .map_err(|error| StorageError::io("read segment", &self.path, error))?;
        buffer.truncate(read);
        Ok(buffer)
    }

    pub(crate) fn corrupt(&self, offset: u64, source: CodecError) -> StorageError {
        StorageError::Corrupt {
            segment: self.path.clone(),
            offset_in_segment: offset,
            position: self.base + offset,
            source,
        }
    }
}

/// The frame length a header declares, if the header is there.
pub(crate) fn declared_frame_len(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..4)?;
    Some(
        FRAME_HEADER_BYTES
            + u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize,
    )
}

/// Positional read that stops early only at the end of the file.
fn read_at_most(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// fsyncs a directory so that created, renamed or removed entries survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| StorageError::io("fsync directory", dir, error))
}

/// Lists the segment files of `dir` by base position. Files that are not segments are ignored;
/// a file that looks like a segment but has a malformed name is an error.
pub(crate) fn list_segments(dir: &Path) -> Result<BTreeMap<u64, PathBuf>, StorageError> {
    let mut segments = BTreeMap::new();
    let entries =
        std::fs::read_dir(dir).map_err(|error| StorageError::io("list segments in", dir, error))?;
    for entry in entries {
        let entry = entry.map_err(|error| StorageError::io("list segments in", dir, error))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        let base = stem
            .parse::<u64>()
            .map_err(|_| StorageError::SegmentLayout {
                detail: format!("{} is not named by a log position", entry.path().display()),
            })?;
        segments.insert(base, entry.path());
    }
    Ok(segments)
}

/// The open segments, by base position. Readers clone the `Arc` of the segment they need and
/// release the lock before any IO, so they never hold up the writer.
#[derive(Debug, Default)]
pub(crate) struct SegmentMap {
    segments: BTreeMap<u64, Arc<Segment>>,
}

impl SegmentMap {
    pub(crate) fn insert(&mut self, segment: Arc<Segment>) {
        self.segments.insert(segment.base, segment);
    }

    /// The segment holding `position`.
    pub(crate) fn find(&self, position: u64) -> Option<Arc<Segment>> {
        self.segments
            .range(..=position)
            .next_back()
            .map(|(_, segment)| Arc::clone(segment))
    }

    pub(crate) fn remove(&mut self, base: u64) -> Option<Arc<Segment>> {
        self.segments.remove(&base)
    }

    pub(crate) fn all(&self) -> Vec<Arc<Segment>> {
        self.segments.values().cloned().collect()
    }
}
