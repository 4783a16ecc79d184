//! The commit log writer: opening (recovery), group commit, segment rotation.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lightcone_mvcc::{Database, TxDelta};

use crate::backend::{open_backend, BackendChoice, BackendKind, SegmentIo};
use crate::codec::encode_delta;
use crate::frame::{encode_frame, MAX_PAYLOAD_BYTES};
use crate::read::{replay_into, ReplayProgress, ReplayStats};
use crate::segment::{list_segments, segment_file_name, segment_header, SEGMENT_HEADER_BYTES};
use crate::WalError;

/// Longest a batch waits for more records before its sync (see `disk_loop`).
const MAX_GATHER: Duration = Duration::from_micros(500);

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
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            durability: Durability::Fsync,
            backend: BackendChoice::Auto,
            segment_bytes_max: 64 << 20,
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

struct Queue {
    /// Encoded records not yet handed to the disk thread.
    pending: Vec<u8>,
    /// (tx offset, end position in `pending`) per pending record, for segment rotation.
    records: Vec<(u64, usize)>,
    last_appended: u64,
    /// Every transaction at or below this offset is durable (or written, in `None` mode).
    durable: u64,
    /// Every transaction at or below this offset is written and synced (equals `durable` in
    /// `Fsync` mode; in `None` mode it moves only when `flush` asks for a sync).
    synced: u64,
    /// `flush` in `None` mode asks the disk thread to sync the tail.
    sync_requested: bool,
    failed: Option<String>,
    closing: bool,
    /// `append` wakes the disk thread once this many records are queued: 1 when idle, more
    /// while it gathers a batch (see `disk_loop`).
    wake_at_records: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the disk thread.
    work: Condvar,
    /// Wakes committers waiting for durability.
    done: Condvar,
}

fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // The queue is plain data updated in single steps; a panic elsewhere cannot tear it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The commit log of one database directory.
pub struct CommitLog {
    shared: Arc<Shared>,
    durability: Durability,
    disk_thread: Option<JoinHandle<()>>,
    backend: BackendKind,
}

/// The segment being appended to.
struct Tail {
    dir: PathBuf,
    io: Box<dyn SegmentIo>,
    bytes: u64,
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
                "commit log ends in a torn record; truncating it"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(&torn.segment)
                .map_err(|e| WalError::io(&torn.segment, e))?;
            f.set_len(torn.valid_bytes).map_err(|e| WalError::io(&torn.segment, e))?;
            f.sync_all().map_err(|e| WalError::io(&torn.segment, e))?;
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
        let tail = Tail::open_last(dir, &options)?;
        let backend = tail.as_ref().map_or(
            if options.backend == BackendChoice::Pwrite { BackendKind::Pwrite } else { probe_backend(dir) },
            |t| t.1,
        );
        tracing::info!(?backend, dir = %dir.display(), "commit log open");
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                records: Vec::new(),
                last_appended: last,
                durable: last,
                synced: last,
                sync_requested: false,
                failed: None,
                closing: false,
                wake_at_records: 1,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let durability = options.durability;
        let dir_owned = dir.to_path_buf();
        let mut tail = tail.map(|t| t.0);
        let disk_thread = std::thread::Builder::new()
            .name("lightcone-wal".into())
            .spawn(move || disk_loop(&thread_shared, &mut tail, &dir_owned, &options))
            .map_err(|e| WalError::io(dir, e))?;
        let log = CommitLog { shared, durability, disk_thread: Some(disk_thread), backend };
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
        let mut payload = Vec::new();
        encode_delta(&mut payload, delta);
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(WalError::RecordTooLarge { bytes: payload.len(), max: MAX_PAYLOAD_BYTES });
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
        encode_frame(&mut q.pending, delta.tx_offset, now_micros(), &payload);
        let end = q.pending.len();
        q.records.push((delta.tx_offset, end));
        q.last_appended = delta.tx_offset;
        let wake = q.records.len() >= q.wake_at_records;
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
        lock(&self.shared.queue).closing = true;
        self.shared.work.notify_one();
        if let Some(t) = self.disk_thread.take() {
            let _ = t.join();
        }
    }
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

impl Tail {
    /// The last segment, opened for appending after its last valid record.
    fn open_last(dir: &Path, options: &LogOptions) -> Result<Option<(Tail, BackendKind)>, WalError> {
        let Some((_, path)) = list_segments(dir)?.pop() else { return Ok(None) };
        let file =
            OpenOptions::new().read(true).write(true).open(&path).map_err(|e| WalError::io(&path, e))?;
        let bytes = file.metadata().map_err(|e| WalError::io(&path, e))?.len();
        let (io, kind) = open_backend(file, options.backend);
        Ok(Some((Tail { dir: dir.to_path_buf(), io, bytes }, kind)))
    }

    /// Starts a new segment whose first record is `first_offset`.
    fn create(dir: &Path, first_offset: u64, options: &LogOptions) -> Result<Tail, WalError> {
        let path = dir.join(segment_file_name(first_offset));
        let file: File = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| WalError::io(&path, e))?;
        let (mut io, _) = open_backend(file, options.backend);
        io.write_at(&segment_header(first_offset), 0, true).map_err(|e| WalError::io(&path, e))?;
        // The new file's directory entry must be durable too.
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| WalError::io(dir, e))?;
        Ok(Tail { dir: dir.to_path_buf(), io, bytes: SEGMENT_HEADER_BYTES as u64 })
    }
}

/// The disk thread: takes everything queued, writes it (rotating segments at record
/// boundaries), syncs once for the whole batch, then answers every waiter in the batch.
///
/// Gathering: right after a sync, callers answered by it start their next transactions one by
/// one; syncing the first of them alone would split the next group in two. So when the last
/// batch held several records (evidence of concurrent callers), the thread waits — at most half
/// the last sync's duration, capped at [`MAX_GATHER`] — for as many records as last time. With a
/// single caller nothing waits, so its latency is unchanged.
fn disk_loop(shared: &Shared, tail: &mut Option<Tail>, dir: &Path, options: &LogOptions) {
    let sync = options.durability == Durability::Fsync;
    let mut batch = Vec::new();
    let mut last_batch_records = 0usize;
    let mut last_sync = Duration::ZERO;
    loop {
        let (records, last, sync_now) = {
            let mut q = lock(&shared.queue);
            while q.pending.is_empty() && !q.closing && !q.sync_requested {
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.pending.is_empty() && q.sync_requested {
                // `None` mode flush with everything already written: sync the tail.
                q.sync_requested = false;
                let written = q.durable;
                drop(q);
                let result =
                    tail.as_mut().map_or(Ok(()), |t| t.io.sync().map_err(|e| WalError::io(&t.dir, e)));
                finish_batch(shared, result, written, written);
                continue;
            }
            if q.pending.is_empty() {
                return; // closing, nothing left
            }
            if sync && last_batch_records > 1 && q.records.len() < last_batch_records {
                let deadline = Instant::now() + (last_sync / 2).min(MAX_GATHER);
                q.wake_at_records = last_batch_records;
                while q.records.len() < last_batch_records && !q.closing {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    q = shared.work.wait_timeout(q, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
                }
                q.wake_at_records = 1;
            }
            std::mem::swap(&mut batch, &mut q.pending);
            let sync_now = sync || std::mem::take(&mut q.sync_requested);
            (std::mem::take(&mut q.records), q.last_appended, sync_now)
        };
        let started = Instant::now();
        let result = write_batch(tail, dir, options, &batch, &records, sync_now);
        last_sync = started.elapsed();
        last_batch_records = records.len();
        batch.clear();
        let synced = if sync_now { last } else { lock(&shared.queue).synced };
        finish_batch(shared, result, last, synced);
    }
}

/// Records the outcome of a write (and sync) and answers the waiters.
fn finish_batch(shared: &Shared, result: Result<(), WalError>, written: u64, synced: u64) {
    let mut q = lock(&shared.queue);
    match result {
        Ok(()) => {
            q.durable = q.durable.max(written);
            q.synced = q.synced.max(synced);
        }
        Err(e) => {
            tracing::error!("commit log write failed; the log is now read-only: {e}");
            q.failed = Some(e.to_string());
        }
    }
    drop(q);
    shared.done.notify_all();
}

fn write_batch(
    tail: &mut Option<Tail>,
    dir: &Path,
    options: &LogOptions,
    batch: &[u8],
    records: &[(u64, usize)],
    sync: bool,
) -> Result<(), WalError> {
    let max = options.segment_bytes_max;
    let (mut start, mut next) = (0usize, 0usize);
    while next < records.len() {
        let (first_offset, first_end) = records[next];
        // A segment that already holds records is closed once the next one would overflow it;
        // a record bigger than a whole segment still gets written, alone in its own segment.
        let rotate = tail.as_ref().is_none_or(|t| {
            t.bytes > SEGMENT_HEADER_BYTES as u64 && t.bytes + (first_end - start) as u64 > max
        });
        if rotate {
            if let Some(old) = tail.as_mut() {
                old.io.sync().map_err(|e| WalError::io(&old.dir, e))?;
            }
            *tail = Some(Tail::create(dir, first_offset, options)?);
        }
        // Invariant: created just above if it was missing.
        let t = tail.as_mut().expect("a tail segment exists");
        let mut until = next + 1;
        while until < records.len() && t.bytes + (records[until].1 - start) as u64 <= max {
            until += 1;
        }
        let end = records[until - 1].1;
        t.io.write_at(&batch[start..end], t.bytes, sync).map_err(|e| WalError::io(&t.dir, e))?;
        t.bytes += (end - start) as u64;
        (start, next) = (end, until);
    }
    debug_assert_eq!(start, batch.len(), "every queued byte belongs to a record");
    Ok(())
}
