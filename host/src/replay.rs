//! `lightcone replay <data-dir>`: verify a database's commit log and replay it in memory,
//! reporting what it holds. Read-only: a torn tail is reported, not truncated.

use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use lightcone_mvcc::{Database, ReadTx};
use lightcone_wal::segment::SEGMENT_HEADER_BYTES;
use lightcone_wal::{replay_into, scan, ReplayStats, ScanReport, WalError};

/// The log directory of a data directory: `<dir>/log` if present, else `<dir>` itself (a bare
/// log directory).
pub fn log_dir(data_dir: &Path) -> PathBuf {
    let nested = data_dir.join("log");
    if nested.is_dir() {
        nested
    } else {
        data_dir.to_path_buf()
    }
}

/// What a replay found, ready to print.
pub struct ReplayReport {
    /// Every finished snapshot (offset), all verified.
    pub snapshots: Vec<u64>,
    /// The snapshot the replay started from, if any.
    pub base_snapshot: Option<u64>,
    pub verify: ScanReport,
    pub replay: ReplayStats,
    /// (table name, rows) in table-id order.
    pub tables: Vec<(String, u64)>,
    pub tx_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayCommandError {
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{dir}: no commit log segments found")]
    Empty { dir: PathBuf },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Snapshot(#[from] lightcone_snapshot::SnapshotError),
}

/// Verifies every segment and record, then replays up to `until` (inclusive) into a fresh
/// in-memory database. `on_progress(done, total)` is called as records are applied.
pub fn run_replay(
    data_dir: &Path,
    until: Option<u64>,
    mut on_progress: impl FnMut(u64, u64),
) -> Result<ReplayReport, ReplayCommandError> {
    if !data_dir.is_dir() {
        return Err(ReplayCommandError::NotADirectory(data_dir.to_path_buf()));
    }
    let dir = log_dir(data_dir);
    // Pass 1: every snapshot's hashes, and the checksums, framing and offsets of every log
    // record, without applying anything.
    let snapshot_dirs = lightcone_snapshot::list_snapshots(data_dir)?;
    for (_, snapshot) in &snapshot_dirs {
        lightcone_snapshot::verify_snapshot(snapshot)?;
    }
    let verify = scan(&dir, |_, _, _| Ok(ControlFlow::Continue(())))?;
    if verify.segments == 0 && snapshot_dirs.is_empty() {
        return Err(ReplayCommandError::Empty { dir });
    }
    // Start from the newest snapshot at or before the point in time asked for.
    let base = snapshot_dirs.iter().rev().find(|(offset, _)| until.is_none_or(|u| *offset <= u));
    // Records to apply: those after the base snapshot, up to `until`.
    let total = match (verify.first_offset, verify.last_offset) {
        (Some(first), Some(last)) => {
            let start = first.max(base.map_or(0, |(o, _)| o + 1));
            (until.unwrap_or(last).min(last) + 1).saturating_sub(start)
        }
        _ => 0,
    };
    // Pass 2: apply.
    let db = match base {
        Some((_, snapshot)) => lightcone_snapshot::load_snapshot(snapshot)?,
        None => Database::new(),
    };
    let replay = replay_into(&dir, &db, until, |p| on_progress(p.applied, total))?;
    let snapshot = db.snapshot();
    let tables = snapshot
        .table_ids()
        .into_iter()
        .filter_map(|id| snapshot.table(id).ok().map(|t| (t.schema().name().to_string(), t.row_count())))
        .collect();
    Ok(ReplayReport {
        snapshots: snapshot_dirs.iter().map(|(o, _)| *o).collect(),
        base_snapshot: base.map(|(o, _)| *o),
        verify,
        replay,
        tables,
        tx_offset: snapshot.tx_offset(),
    })
}

impl ReplayReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let shown: Vec<String> = self.snapshots.iter().map(|o| o.to_string()).collect();
        let _ = writeln!(
            out,
            "snapshots verified: {}",
            if shown.is_empty() { "none".into() } else { shown.join(", ") }
        );
        if let Some(base) = self.base_snapshot {
            let _ = writeln!(out, "starting from the snapshot at tx {base}");
        }
        let v = &self.verify;
        let _ = writeln!(
            out,
            "segments: {} ({:.1} MiB), records: {}",
            v.segments,
            v.bytes as f64 / (1 << 20) as f64,
            v.records
        );
        match (v.first_offset, v.last_offset) {
            (Some(first), Some(last)) => {
                let _ = writeln!(out, "tx offsets: {first}..={last}");
            }
            _ => {
                let _ = writeln!(out, "tx offsets: none (empty log)");
            }
        }
        if let Some(torn) = v.torn_tail.as_ref().filter(|t| t.valid_bytes < SEGMENT_HEADER_BYTES as u64) {
            let _ = writeln!(
                out,
                "torn tail: {} was being created when the log stopped ({} bytes, no records; opening the database removes it)",
                torn.segment.display(),
                torn.file_bytes,
            );
        } else if let Some(torn) = &v.torn_tail {
            let _ = writeln!(
                out,
                "torn tail: {} from byte {} ({} bytes of an unfinished or lost write{}; opening the database truncates them)",
                torn.segment.display(),
                torn.valid_bytes,
                torn.file_bytes - torn.valid_bytes,
                match torn.records_after {
                    0 => String::new(),
                    n => format!(", then {n} whole records that were never durable"),
                }
            );
        }
        let r = &self.replay;
        let _ = writeln!(
            out,
            "replayed {} transactions to tx {} in {:.2} s: {} rows inserted, {} deleted, {:.0} rows/s",
            r.applied,
            self.tx_offset,
            r.elapsed.as_secs_f64(),
            r.rows_inserted,
            r.rows_deleted,
            r.rows_per_second()
        );
        let _ = writeln!(out, "tables:");
        let width = self.tables.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        for (name, rows) in &self.tables {
            let _ = writeln!(out, "  {name:<width$}  {rows} rows");
        }
        out
    }
}
