//! Segment files: a 16-byte header (magic, first tx offset) followed by records.
//!
//! Format versions: 1 holds records only; 2 (written since session 10) also holds a durability
//! mark at the start of every batch; 3 (written since session 14, 2026-11-24) may end in a
//! seal once the next segment exists (see [`crate::frame`]). All three are read; a binary reading only 1 and
//! 2 refuses a format-3 segment by its header instead of taking its seal for corruption.

use std::path::{Path, PathBuf};

use crate::WalError;

/// Identifies a Lightcone log segment of the format version written now (3).
pub const SEGMENT_MAGIC: [u8; 8] = *b"LCWAL03\n";
/// Version 2: durability marks, no seals.
const SEGMENT_MAGIC_V2: [u8; 8] = *b"LCWAL02\n";
/// Version 1: records without durability marks.
const SEGMENT_MAGIC_V1: [u8; 8] = *b"LCWAL01\n";
/// What every version's magic starts with.
const MAGIC_PREFIX: &[u8] = b"LCWAL";
/// Magic plus the first tx offset.
pub const SEGMENT_HEADER_BYTES: usize = 16;
const SUFFIX: &str = ".wal";

/// The file name of the segment whose first record has `first_offset`.
pub fn segment_file_name(first_offset: u64) -> String {
    format!("{first_offset:020}{SUFFIX}")
}

pub fn segment_header(first_offset: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..].copy_from_slice(&first_offset.to_le_bytes());
    h
}

/// What a segment's header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_offset: u64,
    /// Format version 2 and later: batches start with durability marks.
    pub has_marks: bool,
    /// Format version 3: the segment may end in a seal.
    pub has_seals: bool,
}

pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<SegmentHeader, WalError> {
    let (has_marks, has_seals) = match bytes.get(..8) {
        Some(magic) if magic == SEGMENT_MAGIC => (true, true),
        Some(magic) if magic == SEGMENT_MAGIC_V2 => (true, false),
        Some(magic) if magic == SEGMENT_MAGIC_V1 => (false, false),
        Some(magic) if magic.starts_with(MAGIC_PREFIX) => {
            return Err(WalError::UnsupportedFormat {
                segment: path.to_path_buf(),
                magic: String::from_utf8_lossy(magic).trim_end().to_string(),
            })
        }
        _ => return Err(WalError::BadSegmentHeader { segment: path.to_path_buf() }),
    };
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(WalError::BadSegmentHeader { segment: path.to_path_buf() });
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[8..16]);
    Ok(SegmentHeader { first_offset: u64::from_le_bytes(first), has_marks, has_seals })
}

/// The segments in `dir`, ordered by the first offset in their names. Other files are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(WalError::io(dir, e)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SUFFIX) else { continue };
        if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(first) = stem.parse::<u64>() {
                segments.push((first, entry.path()));
            }
        }
    }
    segments.sort();
    Ok(segments)
}
