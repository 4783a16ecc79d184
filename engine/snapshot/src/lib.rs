//! Lightcone's point-in-time snapshots.
//!
//! Owns: writing a consistent snapshot of every table from an MVCC snapshot, blake3 hashes
//! per file, the atomic manifest, and restore (newest valid snapshot + WAL tail replay).
//!
//! Does not own: the commit log format (`lightcone-wal`) or live transactions
//! (`lightcone-mvcc`).
//!
//! Status: not yet implemented — filled by the durability issue.
