//! Lightcone's write-ahead commit log.
//!
//! Owns: the segmented on-disk log written from each commit's `TxDelta`, record framing
//! (length, crc32c, tx offset, timestamp), the io_uring and portable `pwrite`/`fdatasync`
//! backends, group commit and replay.
//!
//! Does not own: in-memory tables or transactions (`lightcone-mvcc`), snapshots
//! (`lightcone-snapshot`).
//!
//! Status: not yet implemented — filled by the durability issue.
