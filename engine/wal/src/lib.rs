//! Lightcone's write-ahead commit log.
//!
//! Owns: the segmented on-disk log written from each commit's [`TxDelta`]; record framing
//! (`[len][crc32c][tx offset][timestamp µs][payload]`, see [`frame`]); the payload encoding
//! ([`codec`]); the io_uring and portable `pwrite`/`fdatasync` backends ([`backend`]); group
//! commit ([`CommitLog`]: one fdatasync answers every transaction queued since the last), with
//! an `O_DIRECT` writer and a back-to-back syncer where the file system allows;
//! recovery (a torn tail is truncated, corruption before it is an error naming file and offset)
//! and replay into a [`lightcone_mvcc::Database`] ([`replay_into`], [`scan`]).
//!
//! Does not own: in-memory tables and transactions (`lightcone-mvcc`), snapshots
//! (`lightcone-snapshot`).
//!
//! Ordering: `CommitLog::append` must see transactions in commit order; call it from
//! `WriteTx::commit_with`, which runs while the writer lock is held, then `CommitLog::wait`
//! outside the lock so many committers share one sync.
//!
//! [`TxDelta`]: lightcone_mvcc::TxDelta

pub mod backend;
pub mod codec;
mod disk;
pub mod frame;
mod log;
mod read;
pub mod segment;

use std::path::{Path, PathBuf};

pub use backend::{BackendChoice, BackendKind};
pub use log::{CommitLog, Durability, LogOptions, Recovery, Ticket};
pub use read::{replay_into, scan, ReplayProgress, ReplayStats, ScanReport, TornTail};

/// What can go wrong reading or writing the log. Every variant names the file (and byte
/// offset) involved where there is one.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{segment}: not a Lightcone log segment (bad header)")]
    BadSegmentHeader { segment: PathBuf },
    #[error("{segment}: log segment format `{magic}` is not one this version reads (1 to 3); was it written by a newer Lightcone?")]
    UnsupportedFormat { segment: PathBuf, magic: String },
    #[error("{segment} at byte {offset}: corrupt log: {reason}")]
    Corrupt { segment: PathBuf, offset: u64, reason: String },
    #[error("{segment}: log records are missing: expected tx {expected}, found tx {found}")]
    MissingRecords { segment: PathBuf, expected: u64, found: u64 },
    #[error(
        "{segment} at byte {offset}: the segment was sealed when the next one, {next_segment} \
         (from tx {expected}), was created, and that segment is missing: the log cannot be \
         read to its end"
    )]
    MissingSegment { segment: PathBuf, offset: u64, expected: u64, next_segment: String },
    #[error("{segment} at byte {offset}: undecodable record: {source}")]
    Decode { segment: PathBuf, offset: u64, source: codec::DecodeError },
    #[error("replaying tx {tx_offset}: {source}")]
    Replay { tx_offset: u64, source: lightcone_mvcc::MvccError },
    #[error("transaction record is {bytes} bytes; the limit is {max}")]
    RecordTooLarge { bytes: usize, max: usize },
    #[error("transactions must be logged in order: expected tx {expected}, got tx {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("the commit log failed earlier and accepts no more writes: {0}")]
    Failed(String),
    #[error("the commit log is closed")]
    Closed,
}

impl WalError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> WalError {
        WalError::Io { path: path.to_path_buf(), source }
    }
}
