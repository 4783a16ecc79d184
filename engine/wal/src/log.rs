//! The commit log's public face: opening (recovery), appending in commit order, waiting for
//! durability, flushing. The writing itself is in `disk.rs`.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use lightcone_mvcc::{Database, TxDelta};

use crate::backend::{open_backend, BackendChoice, BackendKind};
use crate::codec::encode_delta;
use crate::disk::{
    direct_disk_thread, direct_io_supported, lock, worker, write_closing_mark, Queue, Shared, SYNC_WORKERS,
};
use crate::frame::{encode_frame_with, MAX_PAYLOAD_BYTES};
use crate::read::{replay_into, ReplayProgress, ReplayStats};
use crate::segment::{list_segments, parse_header, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC};
use crate::WalError;

/// When a committer is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After its transaction is on disk and fdatasync'd (group commit shares one sync).
    #[default]
    Fsync,
    /// At once; the log is written in the background without syncing (survives a process
    /// crash, not a power cut).
    None,
}

#[derive(Debug, Clone)]
pub struct LogOptions {
    pub durability: Durability,
    pub backend: BackendChoice,
    /// A new segment starts once the current one would grow past this.
    pub segment_bytes_max: u64,
    /// In `Fsync` mode, write through `O_DIRECT` with a separate flusher thread where the
    /// file system allows it (see `disk/direct.rs`); otherwise, or if `false`, two disk
    /// workers each write through the page cache and sync.
    pub direct_io: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            durability: Durability::Fsync,
            backend: BackendChoice::Auto,
            segment_bytes_max: 64 << 20,
            direct_io: true,
        }
    }
}

/// Identifies an appended transaction, for [`CommitLog::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// What opening the log recovered.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub replay: ReplayStats,
    pub backend: BackendKind,
}

/// The commit log of one database directory.
pub struct CommitLog {
    shared: Arc<Shared>,
    durability: Durability,
    disk_workers: Vec<JoinHandle<()>>,
    backend: BackendKind,
}

impl CommitLog {
    /// Opens (creating if needed) the log in `dir`: replays it into `db` (which must be empty or
    /// restored from a snapshot at or below the log's start), truncates a torn tail — logged with
    /// segment and offset — and starts the disk thread.
    pub fn open(
        dir: &Path,
        db: &Database,
        options: LogOptions,
        progress: impl FnMut(ReplayProgress),
    ) -> Result<(CommitLog, Recovery), WalError> {
        std::fs::create_dir_all(dir).map_err(|e| WalError::io(dir, e))?;
        let replay = replay_into(dir, db, None, progress)?;
        if let Some(torn) = &replay.scan.torn_tail {
            tracing::warn!(
                segment = %torn.segment.display(),
                offset = torn.valid_bytes,
                dropped_bytes = torn.file_bytes - torn.valid_bytes,
                unsynced_records_after_it = torn.records_after,
                "commit log ends in a torn or lost write; truncating it"
            );
            if torn.valid_bytes < SEGMENT_HEADER_BYTES as u64 {
                // Its creation was cut short: it never held a record. Appending resumes in the
                // segment before it, which rotates again when full.
                std::fs::remove_file(&torn.segment).map_err(|e| WalError::io(&torn.segment, e))?;
                File::open(dir).and_then(|d| d.sync_all()).map_err(|e| WalError::io(dir, e))?;
            } else {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&torn.segment)
                    .map_err(|e| WalError::io(&torn.segment, e))?;
                f.set_len(torn.valid_bytes).map_err(|e| WalError::io(&torn.segment, e))?;
                f.sync_all().map_err(|e| WalError::io(&torn.segment, e))?;
            }
        }
        let log_last = replay.scan.last_offset.unwrap_or(0);
        let db_offset = lightcone_mvcc::ReadTx::tx_offset(&db.snapshot());
        if db_offset > log_last && replay.scan.segments > 0 {
            // The database came from a snapshot newer than the log's end (the log lagged it, as
            // it may with `Durability::None`): every segment is covered, and appending after
            // them would leave a gap. Remove them.
            tracing::warn!(
                log_last,
                db_offset,
                "commit log ends before the restored state; removing covered segments"
            );
            for (_, path) in list_segments(dir)? {
                std::fs::remove_file(&path).map_err(|e| WalError::io(&path, e))?;
            }
        }
        let last = log_last.max(db_offset);
        let tail = match list_segments(dir)?.pop() {
            Some((first, path)) => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| WalError::io(&path, e))?;
                let len = file.metadata().map_err(|e| WalError::io(&path, e))?.len();
                upgrade_segment_format(&file, &path)?;
                // A process crash leaves the tail in the page cache, unsynced, yet replayed:
                // sync it now, or the first new batch's durability mark (which says every
                // record so far is durable) could be on disk before those records.
                file.sync_data().map_err(|e| WalError::io(&path, e))?;
                // Appending resumes after the last whole record; zeros after it are space the
                // writer had preallocated.
                let data = replay.scan.last_segment_data_bytes.max(SEGMENT_HEADER_BYTES as u64);
                debug_assert!(data <= len, "the scan found more data than the file holds");
                Some((file, first, data, len))
            }
            None => None,
        };
        let durability = options.durability;
        let direct = durability == Durability::Fsync && options.direct_io && direct_io_supported(dir);
        let backend = if direct {
            BackendKind::DirectPwrite
        } else if options.backend == BackendChoice::Pwrite {
            BackendKind::Pwrite
        } else {
            probe_backend(dir)
        };
        tracing::info!(?backend, dir = %dir.display(), "commit log open");
        let shared = Arc::new(Shared::new(last, tail));
        let workers = match (direct, durability) {
            (true, _) => 2, // one writes while the other syncs
            (false, Durability::Fsync) => SYNC_WORKERS,
            (false, Durability::None) => 1,
        };
        let mut disk_workers = Vec::with_capacity(workers);
        for i in 0..workers {
            let (mine, dir_owned, options) = (Arc::clone(&shared), dir.to_path_buf(), options.clone());
            let run: fn(&Shared, &Path, &LogOptions) = if direct { direct_disk_thread } else { worker };
            let spawned = std::thread::Builder::new()
                .name(format!("lightcone-wal-{i}"))
                .spawn(move || run(&mine, &dir_owned, &options));
            match spawned {
                Ok(handle) => disk_workers.push(handle),
                Err(e) => {
                    stop_workers(&shared, disk_workers);
                    return Err(WalError::io(dir, e));
                }
            }
        }
        let log = CommitLog { shared, durability, disk_workers, backend };
        Ok((log, Recovery { replay, backend }))
    }

    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// Queues a committed transaction. Call in commit order — from `WriteTx::commit_with`, which
    /// runs while the writer lock is held. Empty deltas are not logged.
    pub fn append(&self, delta: &TxDelta) -> Result<Ticket, WalError> {
        if delta.is_empty() {
            return Ok(Ticket(lock(&self.shared.queue).last_appended));
        }
        let mut q = lock(&self.shared.queue);
        if let Some(failed) = &q.failed {
            return Err(WalError::Failed(failed.clone()));
        }
        if q.closing {
            return Err(WalError::Closed);
        }
        if delta.tx_offset != q.last_appended + 1 {
            return Err(WalError::OutOfOrder { expected: q.last_appended + 1, got: delta.tx_offset });
        }
        q.start_record();
        // Encoded in place: no buffer per transaction. The writer lock serialises appends
        // anyway, so encoding under the queue lock only delays the disk workers' next take.
        encode_frame_with(&mut q.pending, delta.tx_offset, now_micros(), |out| encode_delta(out, delta))
            .map_err(|bytes| WalError::RecordTooLarge { bytes, max: MAX_PAYLOAD_BYTES })?;
        let end = q.pending.len();
        q.records.push((delta.tx_offset, end));
        q.last_appended = delta.tx_offset;
        let wake = q.idle_workers > q.wakes_pending && q.records.len() >= q.wake_at_records;
        if wake {
            q.wakes_pending += 1;
        }
        drop(q);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(Ticket(delta.tx_offset))
    }

    /// Returns once the ticket's transaction is durable (`Fsync`), or at once (`None`).
    pub fn wait(&self, ticket: Ticket) -> Result<(), WalError> {
        if self.durability == Durability::None {
            return lock(&self.shared.queue).failed.clone().map_or(Ok(()), |f| Err(WalError::Failed(f)));
        }
        self.wait_durable(ticket.0)
    }

    fn wait_durable(&self, offset: u64) -> Result<(), WalError> {
        self.wait_until(|q| q.durable >= offset)
    }

    fn wait_until(&self, done: impl Fn(&Queue) -> bool) -> Result<(), WalError> {
        let mut q = lock(&self.shared.queue);
        loop {
            if let Some(failed) = &q.failed {
                return Err(WalError::Failed(failed.clone()));
            }
            if done(&q) {
                return Ok(());
            }
            q = self.shared.done.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Makes everything appended so far durable (written and synced), whatever the mode.
    pub fn flush(&self) -> Result<(), WalError> {
        let last = {
            let mut q = lock(&self.shared.queue);
            if q.synced < q.last_appended {
                q.sync_requested = true;
            }
            q.last_appended
        };
        self.shared.work.notify_one();
        self.wait_until(|q| q.synced >= last)
    }

    /// The mode this log was opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Offset of the last durable transaction.
    pub fn durable_offset(&self) -> u64 {
        lock(&self.shared.queue).durable
    }
}

impl Drop for CommitLog {
    fn drop(&mut self) {
        // Graceful shutdown: everything appended reaches the disk (and is synced) first.
        if let Err(e) = self.flush() {
            tracing::error!("commit log flush at shutdown failed: {e}");
        }
        stop_workers(&self.shared, std::mem::take(&mut self.disk_workers));
        if let Err(e) = write_closing_mark(&self.shared) {
            tracing::warn!("commit log: writing the closing durability mark failed: {e}");
        }
    }
}

fn stop_workers(shared: &Shared, workers: Vec<JoinHandle<()>>) {
    lock(&shared.queue).closing = true;
    shared.work.notify_all();
    for worker in workers {
        let _ = worker.join();
    }
}

/// New batches carry durability marks and a rotation seals the segment, which a format-1 or
/// -2 segment may not hold: the last segment, which appending continues, is relabelled the
/// current format (a superset of both) first.
fn upgrade_segment_format(file: &std::fs::File, path: &Path) -> Result<(), WalError> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    file.read_exact_at(&mut header, 0).map_err(|e| WalError::io(path, e))?;
    if !parse_header(path, &header)?.has_seals {
        tracing::info!(segment = %path.display(), "relabelling the last log segment as format 3");
        file.write_all_at(&SEGMENT_MAGIC, 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| WalError::io(path, e))?;
    }
    Ok(())
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Which backend a fresh segment would get (for the report before the first write).
fn probe_backend(dir: &Path) -> BackendKind {
    let probe = dir.join(".backend-probe");
    let kind = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&probe)
        .map(|f| open_backend(f, BackendChoice::Auto).1)
        .unwrap_or(BackendKind::Pwrite);
    let _ = std::fs::remove_file(&probe);
    kind
}
