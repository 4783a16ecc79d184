//! Lightcone's point-in-time snapshots, and opening a data directory.
//!
//! Owns: writing a consistent snapshot of every table from an MVCC snapshot (the writer keeps
//! going meanwhile), blake3 hashes per file, an atomic manifest (written last; the directory is
//! renamed into place), verification, restore (newest snapshot, indexes bulk-built, then the
//! commit log's tail replayed: [`open_data_dir`]) and compaction of log segments the newest
//! snapshot covers.
//!
//! Layout of a data directory:
//! ```text
//! <data>/log/<first tx offset>.wal          commit log segments (lightcone-wal)
//! <data>/snapshots/<tx offset>/MANIFEST     files, sizes, blake3 hashes, the manifest's own hash
//! <data>/snapshots/<tx offset>/catalog.bin  schemas, sequence counters, row counts
//! <data>/snapshots/<tx offset>/table-<id>.rows
//! ```
//!
//! Outcomes: a snapshot directory still named `*.tmp` was never finished and is ignored (and
//! removed); a finished snapshot whose files do not match their hashes is an error naming the
//! file — never silently skipped, since the log it covered may have been compacted away.
//!
//! Does not own: the log format (`lightcone-wal`) or live transactions (`lightcone-mvcc`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lightcone_mvcc::{Database, IndexId, ReadTx, Restorer, Snapshot, TableId};
use lightcone_wal::codec::{
    decode_row_prefix, decode_schema_prefix, decode_sequence_counters_prefix, encode_row, encode_schema,
    encode_sequence_counters, DecodeError,
};
use lightcone_wal::{CommitLog, LogOptions, Recovery, ReplayProgress, WalError};

const MANIFEST: &str = "MANIFEST";
const CATALOG: &str = "catalog.bin";
/// Header of a snapshot with a `next_ids` line: written when a dropped table left ids that a
/// restore must keep unused.
const MANIFEST_HEADER: &str = "lightcone-snapshot 2";
/// Header of a snapshot without one (table ids without gaps): what every snapshot was before
/// tables could be dropped, and still written when no id needs keeping, so older binaries
/// read it.
const MANIFEST_HEADER_V1: &str = "lightcone-snapshot 1";
/// Snapshots kept after a new one is written (the newest and one before it).
pub const SNAPSHOTS_KEPT: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("snapshot file {file} is corrupt: {reason}")]
    Corrupt { file: PathBuf, reason: String },
    #[error("snapshot file {file} at byte {offset}: {source}")]
    Decode { file: PathBuf, offset: usize, source: DecodeError },
    #[error("snapshot {dir} cannot be restored: {source}")]
    Restore { dir: PathBuf, source: lightcone_mvcc::MvccError },
    #[error(transparent)]
    Wal(#[from] WalError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io { path: path.to_path_buf(), source }
}

pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

pub fn snapshots_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// A finished snapshot on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub dir: PathBuf,
    pub tx_offset: u64,
    pub bytes: u64,
    pub rows: u64,
}

/// Finished snapshots in `data_dir`, oldest first.
pub fn list_snapshots(data_dir: &Path) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
    let dir = snapshots_dir(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(&dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(offset) = name.parse::<u64>() {
                found.push((offset, entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Writes a snapshot of `snapshot` (an MVCC snapshot: the writer is not held up) into
/// `data_dir`, then deletes older snapshots beyond [`SNAPSHOTS_KEPT`].
pub fn write_snapshot(data_dir: &Path, snapshot: &Snapshot) -> Result<SnapshotInfo, SnapshotError> {
    let offset = snapshot.tx_offset();
    let parent = snapshots_dir(data_dir);
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let name = format!("{offset:020}");
    let final_dir = parent.join(&name);
    if final_dir.exists() {
        // Already written at this offset (nothing committed since).
        return Ok(SnapshotInfo { dir: final_dir, tx_offset: offset, bytes: 0, rows: 0 });
    }
    let tmp = parent.join(format!("{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;

    let ids = snapshot.table_ids();
    // Version 1 while no table was ever dropped (so older binaries still read the snapshot);
    // version 2, with the next ids, once there are ids a restore must keep unused.
    let (next_table, next_index) = snapshot.next_ids();
    let derived_next_index = ids
        .iter()
        .filter_map(|&id| snapshot.table(id).ok()?.schema().index_ids.iter().max().map(|i| i + 1))
        .max()
        .unwrap_or(0);
    let gapless = ids.iter().enumerate().all(|(i, &id)| i as TableId == id)
        && next_table as usize == ids.len()
        && next_index == derived_next_index;
    let mut manifest = if gapless {
        format!("{MANIFEST_HEADER_V1}\ntx_offset {offset}\n")
    } else {
        format!("{MANIFEST_HEADER}\ntx_offset {offset}\nnext_ids {next_table} {next_index}\n")
    };
    let mut catalog = Vec::new();
    catalog.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    let (mut bytes, mut rows) = (0u64, 0u64);
    for &id in &ids {
        let view =
            snapshot.table(id).map_err(|source| SnapshotError::Restore { dir: tmp.clone(), source })?;
        encode_schema(&mut catalog, view.schema());
        encode_sequence_counters(&mut catalog, view.sequence_next());
        catalog.extend_from_slice(&view.row_count().to_le_bytes());
        let file_name = format!("table-{id}.rows");
        let mut out = HashingWriter::create(&tmp.join(&file_name))?;
        let mut buf = Vec::with_capacity(64 << 10);
        for (_, row) in view.scan() {
            encode_row(&mut buf, &row);
            if buf.len() >= 60 << 10 {
                out.write(&buf)?;
                buf.clear();
            }
            rows += 1;
        }
        out.write(&buf)?;
        let (len, hash) = out.finish()?;
        bytes += len;
        manifest.push_str(&format!("file {file_name} {len} {hash}\n"));
    }
    let mut out = HashingWriter::create(&tmp.join(CATALOG))?;
    out.write(&catalog)?;
    let (len, hash) = out.finish()?;
    bytes += len;
    manifest.push_str(&format!("file {CATALOG} {len} {hash}\n"));
    let own = blake3::hash(manifest.as_bytes()).to_hex();
    manifest.push_str(&format!("manifest {own}\n"));
    let mut out = HashingWriter::create(&tmp.join(MANIFEST))?;
    out.write(manifest.as_bytes())?;
    out.finish()?;
    sync_dir(&tmp)?;
    // Atomic publication: the directory appears under its final name only when complete.
    std::fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
    sync_dir(&parent)?;
    let info = SnapshotInfo { dir: final_dir, tx_offset: offset, bytes, rows };
    let all = list_snapshots(data_dir)?;
    for (_, old) in all.iter().take(all.len().saturating_sub(SNAPSHOTS_KEPT)) {
        std::fs::remove_dir_all(old).map_err(io(old))?;
    }
    Ok(info)
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// A file written through a buffer while its blake3 hash is computed.
struct HashingWriter {
    path: PathBuf,
    out: BufWriter<File>,
    hasher: blake3::Hasher,
    len: u64,
}

impl HashingWriter {
    fn create(path: &Path) -> Result<HashingWriter, SnapshotError> {
        let file = File::create(path).map_err(io(path))?;
        Ok(HashingWriter {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            hasher: blake3::Hasher::new(),
            len: 0,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        self.out.write_all(bytes).map_err(io(&self.path))
    }

    /// Flushes and fsyncs; returns the length and hex hash.
    fn finish(self) -> Result<(u64, String), SnapshotError> {
        let file = self.out.into_inner().map_err(|e| io(&self.path)(e.into_error()))?;
        file.sync_all().map_err(io(&self.path))?;
        Ok((self.len, self.hasher.finalize().to_hex().to_string()))
    }
}

/// One file a manifest lists.
struct ManifestEntry {
    name: String,
    len: u64,
    blake3_hex: String,
}

/// What a manifest says.
struct Manifest {
    tx_offset: u64,
    /// The next table and index ids (absent in version-1 manifests).
    next_ids: Option<(TableId, IndexId)>,
    files: Vec<ManifestEntry>,
}

/// Reads and checks a snapshot's manifest.
fn read_manifest(dir: &Path) -> Result<Manifest, SnapshotError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let corrupt = |reason: &str| SnapshotError::Corrupt { file: path.clone(), reason: reason.to_string() };
    let (body, own) = text.trim_end_matches('\n').rsplit_once('\n').ok_or_else(|| corrupt("truncated"))?;
    let own = own.strip_prefix("manifest ").ok_or_else(|| corrupt("missing its own hash"))?;
    if blake3::hash(format!("{body}\n").as_bytes()).to_hex().as_str() != own {
        return Err(corrupt("hash does not match its contents"));
    }
    let mut lines = body.lines();
    let version = match lines.next() {
        Some(MANIFEST_HEADER) => 2,
        Some(MANIFEST_HEADER_V1) => 1,
        _ => return Err(corrupt("unknown header")),
    };
    let offset = lines
        .next()
        .and_then(|l| l.strip_prefix("tx_offset "))
        .and_then(|o| o.parse().ok())
        .ok_or_else(|| corrupt("missing tx_offset"))?;
    let next_ids = if version >= 2 {
        let ids = lines
            .next()
            .and_then(|l| l.strip_prefix("next_ids "))
            .and_then(|l| l.split_once(' '))
            .and_then(|(t, i)| Some((t.parse().ok()?, i.parse().ok()?)))
            .ok_or_else(|| corrupt("missing next_ids"))?;
        Some(ids)
    } else {
        None
    };
    let mut files = Vec::new();
    for line in lines {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["file", name, len, hash] if !name.contains('/') && !name.contains("..") => {
                let len = len.parse().map_err(|_| corrupt("bad file size"))?;
                files.push(ManifestEntry { name: name.to_string(), len, blake3_hex: hash.to_string() });
            }
            _ => return Err(corrupt("unreadable line")),
        }
    }
    Ok(Manifest { tx_offset: offset, next_ids, files })
}

/// Checks every file of a snapshot against its manifest (size and blake3).
pub fn verify_snapshot(dir: &Path) -> Result<u64, SnapshotError> {
    verify_files(dir).map(|m| m.tx_offset)
}

/// [`verify_snapshot`], returning the whole manifest.
fn verify_files(dir: &Path) -> Result<Manifest, SnapshotError> {
    let manifest = read_manifest(dir)?;
    for ManifestEntry { name, len, blake3_hex: hash } in &manifest.files {
        let (len, path) = (*len, dir.join(name));
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        if bytes.len() as u64 != len {
            return Err(SnapshotError::Corrupt {
                file: path,
                reason: format!("{} bytes, manifest says {len}", bytes.len()),
            });
        }
        if blake3::hash(&bytes).to_hex().as_str() != hash {
            return Err(SnapshotError::Corrupt {
                file: path,
                reason: "blake3 hash does not match the manifest".into(),
            });
        }
    }
    Ok(manifest)
}

/// Loads a verified snapshot into a new database (indexes bulk-built).
pub fn load_snapshot(dir: &Path) -> Result<Database, SnapshotError> {
    let manifest = verify_files(dir)?;
    let offset = manifest.tx_offset;
    let catalog_path = dir.join(CATALOG);
    let catalog = std::fs::read(&catalog_path).map_err(io(&catalog_path))?;
    let decode = |file: &Path, offset: usize| {
        let file = file.to_path_buf();
        move |source| SnapshotError::Decode { file, offset, source }
    };
    let short =
        |file: &Path| SnapshotError::Corrupt { file: file.to_path_buf(), reason: "ends early".into() };
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], SnapshotError> {
        let s = catalog.get(*pos..*pos + n).ok_or_else(|| short(&catalog_path))?;
        *pos += n;
        Ok(s)
    };
    let count = u32::from_le_bytes(take(&mut pos, 4)?.try_into().map_err(|_| short(&catalog_path))?);
    let mut restorer = Restorer::new(offset);
    let restore_err = |source| SnapshotError::Restore { dir: dir.to_path_buf(), source };
    for index in 0..count as usize {
        let (schema, used) = decode_schema_prefix(&catalog[pos..]).map_err(decode(&catalog_path, pos))?;
        pos += used;
        let (seqs, used) =
            decode_sequence_counters_prefix(&catalog[pos..]).map_err(decode(&catalog_path, pos))?;
        pos += used;
        let rows = u64::from_le_bytes(take(&mut pos, 8)?.try_into().map_err(|_| short(&catalog_path))?);
        if manifest.next_ids.is_none() && schema.id as usize != index {
            // A version-1 snapshot predates dropped tables: its ids have no gaps.
            return Err(SnapshotError::Corrupt {
                file: catalog_path,
                reason: format!("table id {} out of order (expected {index})", schema.id),
            });
        }
        let rows_path = dir.join(format!("table-{}.rows", schema.id));
        let data = std::fs::read(&rows_path).map_err(io(&rows_path))?;
        let mut table = restorer.begin_table(schema, seqs).map_err(restore_err)?;
        let mut at = 0usize;
        for _ in 0..rows {
            let (row, used) = decode_row_prefix(&data[at..]).map_err(decode(&rows_path, at))?;
            at += used;
            table.push(row).map_err(restore_err)?;
        }
        if at != data.len() {
            return Err(SnapshotError::Corrupt {
                file: rows_path,
                reason: "more rows than the catalog says".into(),
            });
        }
        table.finish().map_err(restore_err)?;
    }
    if let Some((next_table, next_index)) = manifest.next_ids {
        restorer.reserve_ids(next_table, next_index).map_err(restore_err)?;
    }
    Ok(restorer.finish())
}

/// Deletes commit-log segments holding only transactions at or below `tx_offset` (covered by a
/// snapshot). Returns how many were deleted. The segment holding `tx_offset + 1` stays.
pub fn compact_log(data_dir: &Path, tx_offset: u64) -> Result<usize, SnapshotError> {
    let dir = log_dir(data_dir);
    let segments = lightcone_wal::segment::list_segments(&dir)?;
    let mut deleted = 0;
    for pair in segments.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first <= tx_offset + 1 {
            std::fs::remove_file(path).map_err(io(path))?;
            deleted += 1;
        }
    }
    if deleted > 0 {
        sync_dir(&dir)?;
    }
    Ok(deleted)
}

/// What opening a data directory did.
#[derive(Debug)]
pub struct OpenReport {
    /// The snapshot restored from, if any.
    pub snapshot: Option<(u64, PathBuf)>,
    pub snapshot_load: Duration,
    pub log: Recovery,
    pub elapsed: Duration,
}

/// Opens a data directory: the newest snapshot (verified) plus the commit log after it.
/// Unfinished snapshot directories (`*.tmp`) are removed.
pub fn open_data_dir(
    data_dir: &Path,
    options: LogOptions,
    progress: impl FnMut(ReplayProgress),
) -> Result<(Database, CommitLog, OpenReport), SnapshotError> {
    let start = Instant::now();
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    if let Ok(entries) = std::fs::read_dir(snapshots_dir(data_dir)) {
        for entry in entries.flatten() {
            if entry.file_name().to_str().is_some_and(|n| n.ends_with(".tmp")) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let newest = list_snapshots(data_dir)?.pop();
    let db = match &newest {
        Some((_, dir)) => load_snapshot(dir)?,
        None => Database::new(),
    };
    let snapshot_load = start.elapsed();
    let (log, recovery) = CommitLog::open(&log_dir(data_dir), &db, options, progress)?;
    Ok((db, log, OpenReport { snapshot: newest, snapshot_load, log: recovery, elapsed: start.elapsed() }))
}
