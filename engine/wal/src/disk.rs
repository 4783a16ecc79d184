//! The disk side of the commit log: the queue committers append to, and the disk workers that
//! write it to the current segment, sync it and answer the waiters.
//!
//! `Fsync` mode uses the direct-I/O threads of [`direct`] where the file system takes
//! `O_DIRECT`; the page-cache workers below serve `None` mode, and `Fsync` mode otherwise.
//!
//! **Two syncs in flight** ([`SYNC_WORKERS`]). On the disks we measured, one write + fdatasync
//! takes 110–210 µs whatever its size, and the database thread needs ~1.5 µs per transaction.
//! With one sync at a time, a group of committers is answered, produces its next transactions
//! and waits for the next sync in lock step, and the sync time bounds throughput. So in `Fsync`
//! mode two workers each take "everything queued", write it at the position reserved for it
//! and sync: one group is produced while the other syncs.
//!
//! Two rules keep the log a prefix on disk whatever a crash or a power cut drops:
//! - **A batch's write, and so its sync, starts only after every earlier batch's write has
//!   completed** (`Queue::writing`). fdatasync covers what was written before it started, so
//!   a synced batch implies every earlier one is on disk; and since writes complete in order,
//!   a process killed mid-write leaves at most its last write torn, at the tail — never a hole
//!   followed by a later batch's records (which recovery would rightly refuse as damage before
//!   the tail). A batch taken while an earlier write is still running waits for it (a page
//!   cache copy: microseconds), then its write and sync go down together (linked, with
//!   io_uring) while the earlier batch's sync is still in flight.
//! - **A transaction counts as durable only when every batch before it is synced too**
//!   (`Queue::finished` holds batches synced out of order), so no caller is answered early.
//!
//! **Preallocation.** Syncing into zeroed space already on disk flushes data only, not a new
//! file size and block allocation (measured: ~135 µs instead of ~210 µs on this project's
//! ext4 VM), so the workers keep zeroed, synced space ahead of the write position. Readers treat
//! trailing zeros as the end of a segment's data; a segment is cut to its data when closed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

mod direct;

pub(crate) use direct::{direct_io_supported, disk_thread as direct_disk_thread};

use crate::backend::{open_backend, BackendChoice, SegmentIo};
use crate::frame::{write_mark, write_seal, MARK_BYTES, SEAL_BYTES};
use crate::log::{Durability, LogOptions};
use crate::segment::{segment_file_name, segment_header, SEGMENT_HEADER_BYTES};
use crate::WalError;

/// `None` mode: longest a record waits to be written, and the queued bytes that are written
/// at once (see [`gather_unsynced`]). A process crash may lose what waits — `None` mode
/// acknowledges before writing anyway.
const UNSYNCED_WRITE_INTERVAL: Duration = Duration::from_millis(1);
const UNSYNCED_WRITE_BYTES: usize = 256 << 10;
/// Longest a worker waits for more records before its batch (see [`gather`]).
const MAX_GATHER: Duration = Duration::from_micros(500);
/// Disk workers in `Fsync` mode (syncs in flight at once). `None` mode writes with one.
/// Three measured worse than two: concurrent syncs slow each other down on the disks we have.
pub(crate) const SYNC_WORKERS: usize = 2;
/// Zeroed, synced space kept ahead of the write position, growing with the segment from the
/// first bound to the second.
const PREALLOCATE_MIN_BYTES: u64 = 64 << 10;
const PREALLOCATE_MAX_BYTES: u64 = 4 << 20;
/// Source of the zeros written ahead.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

pub(crate) struct Queue {
    /// Encoded records not yet taken by a worker, after a slot for the durability mark the
    /// batch will start with (empty, or starting with that slot: see [`Queue::start_record`]).
    pub pending: Vec<u8>,
    /// (tx offset, end position in `pending`) per pending record.
    pub records: Vec<(u64, usize)>,
    pub last_appended: u64,
    /// Every transaction at or below this offset is durable (or written, in `None` mode).
    pub durable: u64,
    /// Direct-I/O path: every transaction at or below this offset is written (the flusher's
    /// next sync makes it durable).
    written: u64,
    /// Direct-I/O path: a write (with `direct`, taken out) or a sync is running.
    direct_writing: bool,
    direct_syncing: bool,
    /// Direct-I/O path: the handle writes go through, when no write holds it.
    direct: Option<direct::DirectFile>,
    /// Every transaction at or below this offset is written and synced (equals `durable` in
    /// `Fsync` mode; in `None` mode it moves only when `flush` asks for a sync).
    pub synced: u64,
    /// `flush` in `None` mode asks a worker to sync the tail.
    pub sync_requested: bool,
    pub failed: Option<String>,
    pub closing: bool,
    /// `append` wakes a worker once this many records are queued: 1 when idle, more while a
    /// worker gathers a batch.
    pub wake_at_records: usize,
    /// Workers waiting on `Shared::work`. `append` notifies only when one is: a notify is a
    /// futex system call even with nobody to wake, and it ran on every commit.
    pub idle_workers: usize,
    /// Of those, how many an `append` already notified and have not woken yet: notifying them
    /// again is a wasted system call, and under load it was one on nearly every commit
    /// (appends run faster than a notified worker gets a core).
    pub wakes_pending: usize,
    /// The segment being appended to (`None` before the first record of a new log).
    segment: Option<Segment>,
    /// Batches taken by workers and not yet finished.
    batches_in_flight: usize,
    /// A worker is closing the segment and creating the next: nobody takes a batch meanwhile.
    rotating: bool,
    /// A worker is zeroing the segment from here on: batches are taken only below it.
    preallocating: Option<u64>,
    /// Batches (first → last tx offset) finished while an earlier one was still in flight.
    finished: BTreeMap<u64, u64>,
    /// First tx offsets of the batches whose write has not completed (nor failed) yet.
    writing: BTreeSet<u64>,
}

impl Queue {
    /// An idle worker woke (notified, timed out or spuriously). Any wake settles one pending
    /// notify: undercounting only costs a spare notify, and overcounting cannot happen, since
    /// a notified worker always wakes and calls this.
    fn woke(&mut self) {
        self.idle_workers -= 1;
        self.wakes_pending = self.wakes_pending.saturating_sub(1);
    }

    /// Call before encoding a record into `pending`: a batch starts with a slot for its
    /// durability mark, filled in when a worker takes it (see [`crate::frame`]).
    pub fn start_record(&mut self) {
        if self.pending.is_empty() {
            self.pending.extend_from_slice(&[0; MARK_BYTES]);
        }
    }
}

/// The shared state of the segment being appended to. Each worker opens its own backend on a
/// clone of `file` (an io_uring ring is not shared between threads).
struct Segment {
    file: File,
    /// The segment's first tx offset: workers holding a handle on another reopen.
    generation: u64,
    /// Reserved up to here: header, written records, and batches being written.
    bytes: u64,
    /// File length: zeros from `bytes` up to here are written and synced.
    prepared: u64,
    preallocation_failed: bool,
}

pub(crate) struct Shared {
    pub queue: Mutex<Queue>,
    /// Wakes the workers.
    pub work: Condvar,
    /// Wakes committers waiting for durability.
    pub done: Condvar,
    /// Wakes a worker whose sync waits for an earlier batch's write (see `Queue::writing`).
    written: Condvar,
}

pub(crate) fn lock(m: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // The queue is plain data updated in single steps; a panic elsewhere cannot tear it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// `segment`: the last segment's file, first offset, data bytes and file length.
    pub fn new(last: u64, segment: Option<(File, u64, u64, u64)>) -> Shared {
        Shared {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                records: Vec::new(),
                last_appended: last,
                durable: last,
                written: last,
                direct_writing: false,
                direct_syncing: false,
                direct: None,
                synced: last,
                sync_requested: false,
                failed: None,
                closing: false,
                wake_at_records: 1,
                idle_workers: 0,
                wakes_pending: 0,
                segment: segment.map(|(file, generation, bytes, len)| Segment {
                    file,
                    generation,
                    bytes,
                    prepared: len,
                    preallocation_failed: false,
                }),
                batches_in_flight: 0,
                rotating: false,
                preallocating: None,
                finished: BTreeMap::new(),
                writing: BTreeSet::new(),
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            written: Condvar::new(),
        }
    }

    fn wait_work<'a>(&self, mut q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        q.idle_workers += 1;
        let mut q = self.work.wait(q).unwrap_or_else(|p| p.into_inner());
        q.woke();
        q
    }

    /// The batch starting at `first` is written (or its write failed): later syncs may start.
    fn mark_written(&self, first: u64) {
        let mut q = lock(&self.queue);
        if q.writing.remove(&first) {
            drop(q);
            self.written.notify_all();
        }
    }

    /// Waits until every batch before the one starting at `first` is written.
    fn wait_earlier_writes(&self, first: u64) {
        let mut q = lock(&self.queue);
        while q.writing.first().is_some_and(|&earliest| earliest < first) {
            q = self.written.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// What a worker decided to do next, with the queue lock released.
enum Job {
    /// `behind_earlier_write`: an earlier batch was still being written when this one was
    /// taken, so this one's write (and sync) must wait for it.
    Write {
        batch: Vec<u8>,
        at: u64,
        first: u64,
        last: u64,
        generation: u64,
        file: NewHandle,
        behind_earlier_write: bool,
    },
    Rotate {
        first_offset: u64,
        old: Option<OldSegment>,
    },
    Preallocate {
        from: u64,
        to: u64,
        generation: u64,
        file: NewHandle,
    },
    SyncTail {
        written: u64,
        generation: u64,
        file: NewHandle,
    },
    Exit,
}

/// One disk worker's loop (see the module docs).
pub(crate) fn worker(shared: &Shared, dir: &Path, options: &LogOptions) {
    let fsync = options.durability == Durability::Fsync;
    let mut io: Option<(u64, Box<dyn SegmentIo>)> = None;
    let mut spare = Vec::new();
    let mut last_batch_records = 0usize;
    let mut last_sync = Duration::ZERO;
    let mut last_write = Instant::now();
    loop {
        let have = io.as_ref().map(|(generation, _)| *generation);
        let job = next_job(shared, options, &mut spare, have, last_batch_records, last_sync, last_write);
        match job {
            Job::Exit => return,
            Job::Write { mut batch, at, first, last, generation, file, behind_earlier_write } => {
                let started = Instant::now();
                let result = segment_io(&mut io, generation, file, options.backend)
                    .and_then(|io| {
                        if !fsync {
                            // A `flush` in `None` mode is answered by a sync of the tail once
                            // everything queued is written (`Job::SyncTail`), not by a batch:
                            // the queue may span a rotation.
                            io.write_at(&batch, at)
                        } else {
                            if behind_earlier_write {
                                // Writes land in order: a crash (even a SIGKILL, which keeps
                                // the page cache) can then tear only the last one, at the
                                // tail, never leave a hole before a later batch's records.
                                shared.wait_earlier_writes(first);
                            }
                            io.write_and_sync(&batch, at, &mut || shared.mark_written(first))
                        }
                    })
                    .map_err(|e| WalError::io(dir, e));
                // A failed write must not hold later syncs back (the log fails as a whole).
                shared.mark_written(first);
                last_sync = started.elapsed();
                last_write = Instant::now();
                last_batch_records = (last - first + 1) as usize;
                batch.clear();
                spare = batch;
                let mut q = lock(&shared.queue);
                q.batches_in_flight -= 1;
                match result {
                    Ok(()) => {
                        q.finished.insert(first, last);
                        loop {
                            let next = q.durable + 1;
                            let Some(end) = q.finished.remove(&next) else { break };
                            q.durable = end;
                        }
                        if fsync {
                            q.synced = q.durable;
                        }
                    }
                    Err(e) => fail(&mut q, e),
                }
                drop(q);
                shared.done.notify_all();
                shared.work.notify_all();
            }
            Job::Rotate { first_offset, old } => rotate_and_install(shared, dir, first_offset, old, options),
            Job::Preallocate { from, to, generation, file } => {
                let mut synced = Ok(());
                let zeroed = segment_io(&mut io, generation, file, options.backend).and_then(|io| {
                    let mut at = from;
                    while at < to {
                        let n = (to - at).min(ZEROS.len() as u64) as usize;
                        io.write_at(&ZEROS[..n], at)?;
                        at += n as u64;
                    }
                    synced = io.sync();
                    Ok(())
                });
                let mut q = lock(&shared.queue);
                q.preallocating = None;
                if let Err(e) = synced {
                    // The sync also covers other batches' completed writes: its failure is the
                    // log's (a later successful fdatasync may not report lost writeback again).
                    fail(&mut q, WalError::io(dir, e));
                } else if let Some(segment) = q.segment.as_mut().filter(|s| s.generation == generation) {
                    match zeroed {
                        Ok(()) => segment.prepared = to,
                        Err(e) => {
                            tracing::warn!(
                                dir = %dir.display(),
                                "commit log preallocation failed, appending without it: {e}"
                            );
                            segment.preallocation_failed = true;
                        }
                    }
                }
                drop(q);
                shared.done.notify_all();
                shared.work.notify_all();
            }
            Job::SyncTail { written, generation, file } => {
                let result = segment_io(&mut io, generation, file, options.backend)
                    .and_then(|io| io.sync())
                    .map_err(|e| WalError::io(dir, e));
                let mut q = lock(&shared.queue);
                q.batches_in_flight -= 1;
                match result {
                    Ok(()) => q.synced = q.synced.max(written),
                    Err(e) => fail(&mut q, e),
                }
                drop(q);
                shared.done.notify_all();
                shared.work.notify_all();
            }
        }
    }
}

fn fail(q: &mut Queue, e: WalError) {
    tracing::error!("commit log write failed; the log is now read-only: {e}");
    q.failed.get_or_insert_with(|| e.to_string());
}

/// This worker's backend for the current segment, reopened after a rotation.
fn segment_io(
    io: &mut Option<(u64, Box<dyn SegmentIo>)>,
    generation: u64,
    file: NewHandle,
    backend: BackendChoice,
) -> std::io::Result<&mut Box<dyn SegmentIo>> {
    if let Some(file) = file {
        *io = Some((generation, open_backend(file?, backend).0));
    }
    match io {
        Some((g, io)) if *g == generation => Ok(io),
        _ => Err(std::io::Error::other("disk worker has no handle on the current segment")),
    }
}

/// At a clean close (workers stopped, everything synced): a last durability mark after the
/// data, covering every record, so recovery tells damage anywhere in the log from a lost
/// unsynced write (batch marks cover only what was synced before each batch was taken).
pub(crate) fn write_closing_mark(shared: &Shared) -> Result<(), WalError> {
    use std::os::unix::fs::FileExt;
    let mut q = lock(&shared.queue);
    if q.failed.is_some() || q.synced < q.last_appended || !q.records.is_empty() {
        return Ok(());
    }
    let synced = q.synced;
    let Some(segment) = q.segment.as_mut() else { return Ok(()) };
    if segment.bytes <= SEGMENT_HEADER_BYTES as u64 {
        return Ok(()); // no records in this segment: nothing to cover
    }
    let mut mark = [0u8; MARK_BYTES];
    write_mark(&mut mark, synced);
    let mut before = [0u8; MARK_BYTES];
    if segment.file.read_exact_at(&mut before, segment.bytes - MARK_BYTES as u64).is_ok() && before == mark {
        return Ok(()); // closed before with nothing appended since: already covered
    }
    segment
        .file
        .write_all_at(&mark, segment.bytes)
        .and_then(|()| segment.file.sync_data())
        .map_err(|e| WalError::io(Path::new(&segment_file_name(segment.generation)), e))?;
    segment.bytes += MARK_BYTES as u64;
    Ok(())
}

/// Decides this worker's next job under the queue lock, waiting while there is none.
/// `have` is the segment generation this worker already has a handle on.
fn next_job(
    shared: &Shared,
    options: &LogOptions,
    spare: &mut Vec<u8>,
    have: Option<u64>,
    last_batch_records: usize,
    last_sync: Duration,
    last_write: Instant,
) -> Job {
    let fsync = options.durability == Durability::Fsync;
    let mut q = lock(&shared.queue);
    loop {
        if q.failed.is_some() || q.rotating {
            // After a failure nothing more is written: wait for the shutdown.
            if q.failed.is_some() && q.closing && q.batches_in_flight == 0 {
                return Job::Exit;
            }
            q = shared.wait_work(q);
            continue;
        }
        if let Some((first_offset, first_end)) = q.records.first().copied() {
            let needs_new_segment = q.segment.as_ref().is_none_or(|s| {
                s.bytes > SEGMENT_HEADER_BYTES as u64
                    && s.bytes + first_end as u64 > options.segment_bytes_max
            });
            if needs_new_segment {
                if q.batches_in_flight > 0 || q.preallocating.is_some() {
                    q = shared.wait_work(q); // the old segment is still being written
                    continue;
                }
                q.rotating = true;
                let old = q.segment.take().map(Segment::into_old);
                return Job::Rotate { first_offset, old };
            }
            if fsync && q.preallocating.is_none() {
                if let Some(job) = preallocation_job(&mut q, options, have) {
                    return job;
                }
            }
            q = if fsync {
                gather(shared, q, last_batch_records, last_sync)
            } else {
                gather_unsynced(shared, q, last_write)
            };
            if q.rotating || q.records.is_empty() {
                continue;
            }
            if let Some(job) = take_batch(&mut q, options, spare, have) {
                return job;
            }
            q = shared.wait_work(q); // nothing fits before the space being zeroed
            continue;
        }
        if q.sync_requested && q.batches_in_flight == 0 {
            q.sync_requested = false;
            let written = q.durable;
            let Some(segment) = q.segment.as_ref() else {
                q.synced = q.synced.max(written);
                shared.done.notify_all();
                continue;
            };
            let generation = segment.generation;
            let file = clone_if_needed(segment, have);
            q.batches_in_flight += 1;
            return Job::SyncTail { written, generation, file };
        }
        if q.closing && q.batches_in_flight == 0 {
            return Job::Exit;
        }
        q = shared.wait_work(q);
    }
}

/// What a job brings a worker whose handle on the segment is from an older generation (or
/// missing): a new handle, or why duplicating one failed (the job then fails with that
/// error). `None`: the worker's own handle is current.
pub(crate) type NewHandle = Option<std::io::Result<File>>;

/// A handle on the segment for a worker whose own is from an older generation (or missing).
fn clone_if_needed(segment: &Segment, have: Option<u64>) -> NewHandle {
    if have == Some(segment.generation) {
        return None;
    }
    Some(segment.file.try_clone().map_err(|e| {
        std::io::Error::new(e.kind(), format!("duplicating the segment's file handle failed: {e}"))
    }))
}

/// Gathering: right after a sync, the callers it answered start their next transactions one
/// by one; syncing the first of them alone would split the next group. So when this worker's
/// last batch held several records (evidence of concurrent callers), it waits — at most half
/// its last sync's duration, capped at [`MAX_GATHER`] — for as many records as last time.
/// With a single caller nothing waits, so its latency is unchanged.
fn gather<'a>(
    shared: &'a Shared,
    q: MutexGuard<'a, Queue>,
    last_batch_records: usize,
    last_sync: Duration,
) -> MutexGuard<'a, Queue> {
    if last_batch_records <= 1 || q.records.len() >= last_batch_records {
        return q;
    }
    let deadline = Instant::now() + (last_sync / 2).min(MAX_GATHER);
    wait_for_batch(shared, q, deadline, last_batch_records, |q| q.records.len() >= last_batch_records)
}

/// In `None` mode nobody waits for the disk, so writes are batched: at most one per
/// [`UNSYNCED_WRITE_INTERVAL`] unless [`UNSYNCED_WRITE_BYTES`] are queued (or a `flush`, a
/// rotation or the shutdown wants them). Writing every few records cost a disk worker and an
/// io_uring worker ~35% of a core under load, taken from the database thread.
fn gather_unsynced<'a>(
    shared: &'a Shared,
    q: MutexGuard<'a, Queue>,
    last_write: Instant,
) -> MutexGuard<'a, Queue> {
    let deadline = last_write + UNSYNCED_WRITE_INTERVAL;
    // Appends do not wake this wait; its deadline does (or a flush / the shutdown).
    wait_for_batch(shared, q, deadline, usize::MAX, |q| {
        q.pending.len() >= UNSYNCED_WRITE_BYTES || q.sync_requested
    })
}

/// Waits until `enough`, the deadline, a rotation or the shutdown; meanwhile `append` wakes
/// this worker only once `wake_at_records` records are queued.
fn wait_for_batch<'a>(
    shared: &'a Shared,
    mut q: MutexGuard<'a, Queue>,
    deadline: Instant,
    wake_at_records: usize,
    enough: impl Fn(&Queue) -> bool,
) -> MutexGuard<'a, Queue> {
    q.wake_at_records = wake_at_records;
    while !enough(&q) && !q.closing && !q.rotating {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        q.idle_workers += 1;
        q = shared.work.wait_timeout(q, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        q.woke();
    }
    q.wake_at_records = 1;
    q
}

/// Takes the queued records that fit in the current segment (and before space still being
/// zeroed), reserving their place in it. `None` if not even the first one fits yet.
fn take_batch(q: &mut Queue, options: &LogOptions, spare: &mut Vec<u8>, have: Option<u64>) -> Option<Job> {
    // Invariant: the caller checked that a segment exists and the first record goes into it.
    let segment = q.segment.as_ref().expect("a segment to write to");
    let limit = q.preallocating.unwrap_or(u64::MAX);
    let room = options.segment_bytes_max.min(limit).saturating_sub(segment.bytes);
    // Outside preallocation the first record always goes in (a record bigger than a segment
    // gets one of its own).
    let mut count = usize::from(q.preallocating.is_none());
    while count < q.records.len() && q.records[count].1 as u64 <= room {
        count += 1;
    }
    if count == 0 {
        return None;
    }
    let end = q.records[count - 1].1;
    let (first, last) = (q.records[0].0, q.records[count - 1].0);
    let mut batch = if count == q.records.len() {
        q.records.clear();
        std::mem::replace(&mut q.pending, std::mem::take(spare))
    } else {
        // The rest becomes the next batch: it needs a mark slot of its own.
        let mut rest = Vec::with_capacity(MARK_BYTES + q.pending.len() - end);
        rest.extend_from_slice(&[0; MARK_BYTES]);
        rest.extend_from_slice(&q.pending[end..]);
        q.pending.truncate(end);
        q.records.drain(..count);
        for r in q.records.iter_mut() {
            r.1 = r.1 - end + MARK_BYTES;
        }
        std::mem::replace(&mut q.pending, rest)
    };
    // What is synced now stays synced: the mark is true whenever this batch reaches the disk.
    write_mark(&mut batch[..MARK_BYTES], q.synced);
    let segment = q.segment.as_mut().expect("checked above");
    let at = segment.bytes;
    segment.bytes += batch.len() as u64;
    let generation = segment.generation;
    let file = clone_if_needed(segment, have);
    q.batches_in_flight += 1;
    let behind_earlier_write = !q.writing.is_empty();
    q.writing.insert(first);
    Some(Job::Write { batch, at, first, last, generation, file, behind_earlier_write })
}

/// Zero-fills ahead of the write position when less than half a chunk is left. Other workers
/// keep writing below the zeroed range meanwhile.
fn preallocation_job(q: &mut Queue, options: &LogOptions, have: Option<u64>) -> Option<Job> {
    let segment = q.segment.as_ref()?;
    if segment.preallocation_failed {
        return None;
    }
    let chunk = segment.bytes.clamp(PREALLOCATE_MIN_BYTES, PREALLOCATE_MAX_BYTES);
    if segment.prepared > segment.bytes && segment.prepared - segment.bytes >= chunk / 2 {
        return None;
    }
    let from = segment.prepared.max(segment.bytes);
    let to = (segment.bytes + chunk).min(options.segment_bytes_max);
    if to <= from {
        return None;
    }
    let generation = segment.generation;
    let file = clone_if_needed(segment, have);
    q.preallocating = Some(from);
    Some(Job::Preallocate { from, to, generation, file })
}

/// The segment a rotation closes.
pub(crate) struct OldSegment {
    generation: u64,
    /// Its data: header, marks and whole records.
    bytes: u64,
    file: File,
}

impl Segment {
    /// What a rotation needs of the segment it closes.
    fn into_old(self) -> OldSegment {
        OldSegment { generation: self.generation, bytes: self.bytes, file: self.file }
    }
}

/// A rotation job, in either write path: [`rotate`], then the new segment becomes the one
/// appended to (or the log fails), and waiting workers and committers are woken.
fn rotate_and_install(
    shared: &Shared,
    dir: &Path,
    first_offset: u64,
    old: Option<OldSegment>,
    options: &LogOptions,
) {
    let result = rotate(dir, first_offset, old, options);
    let mut q = lock(&shared.queue);
    q.rotating = false;
    match result {
        Ok(file) => {
            let header = SEGMENT_HEADER_BYTES as u64;
            q.segment = Some(Segment {
                file,
                generation: first_offset,
                bytes: header,
                prepared: header,
                preallocation_failed: false,
            });
        }
        Err(e) => fail(&mut q, e),
    }
    drop(q);
    shared.done.notify_all();
    shared.work.notify_all();
}

/// Closes the old segment (cut to its data, synced), creates the next one, durable in its
/// directory before any record goes in, then seals the old one: a seal says the next segment
/// exists, so recovery can tell a lost last segment from a log that ends there.
fn rotate(
    dir: &Path,
    first_offset: u64,
    old: Option<OldSegment>,
    options: &LogOptions,
) -> Result<File, WalError> {
    if let Some(old) = &old {
        old.file.set_len(old.bytes).and_then(|()| old.file.sync_all()).map_err(|e| WalError::io(dir, e))?;
    }
    let path: PathBuf = dir.join(segment_file_name(first_offset));
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| WalError::io(&path, e))?;
    let (mut io, _) = open_backend(file.try_clone().map_err(|e| WalError::io(&path, e))?, options.backend);
    io.write_and_sync(&segment_header(first_offset), 0, &mut || {}).map_err(|e| WalError::io(&path, e))?;
    // The new file's directory entry must be durable too.
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| WalError::io(dir, e))?;
    if let Some(old) = old {
        seal(dir, &old, first_offset)?;
    }
    Ok(file)
}

/// Writes the seal after the old segment's data and syncs it, through the handle the queue
/// kept (opened without `O_DIRECT`, so a 16-byte write is fine). Not by path: compaction may
/// unlink the old segment once the new one's name shows its records are all in a snapshot.
fn seal(dir: &Path, old: &OldSegment, next_first: u64) -> Result<(), WalError> {
    use std::os::unix::fs::FileExt;
    let mut seal = [0u8; SEAL_BYTES];
    write_seal(&mut seal, next_first);
    old.file
        .write_all_at(&seal, old.bytes)
        .and_then(|()| old.file.sync_data())
        .map_err(|e| WalError::io(&dir.join(segment_file_name(old.generation)), e))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    // Proves a rotation seals the old segment with the next one's first offset, and does so
    // through the handle it holds: compaction may unlink the old segment's file meanwhile (its
    // records are all in a snapshot once the new segment's name says so), which must not fail
    // the rotation and with it the log.
    #[test]
    fn rotation_seals_the_old_segment_even_once_it_is_unlinked() {
        use crate::frame::decode_seal;
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions::default();
        let header = SEGMENT_HEADER_BYTES as u64;
        let first = rotate(dir.path(), 1, None, &options).unwrap();
        let second =
            rotate(dir.path(), 1, Some(OldSegment { generation: 1, bytes: header, file: first }), &options);
        assert!(second.is_err(), "a segment name is never reused");
        let first =
            OpenOptions::new().read(true).write(true).open(dir.path().join(segment_file_name(1))).unwrap();
        let second =
            rotate(dir.path(), 5, Some(OldSegment { generation: 1, bytes: header, file: first }), &options)
                .unwrap();
        let sealed = std::fs::read(dir.path().join(segment_file_name(1))).unwrap();
        assert_eq!(sealed.len() as u64, header + SEAL_BYTES as u64);
        assert_eq!(decode_seal(&sealed[header as usize..]), Ok(5));

        std::fs::remove_file(dir.path().join(segment_file_name(5))).unwrap();
        rotate(dir.path(), 9, Some(OldSegment { generation: 5, bytes: header, file: second }), &options)
            .expect("sealing an unlinked segment is harmless");
        assert!(dir.path().join(segment_file_name(9)).exists());
    }

    fn queue_record(q: &mut Queue, offset: u64, bytes: &[u8]) {
        q.start_record();
        q.pending.extend_from_slice(bytes);
        let end = q.pending.len();
        q.records.push((offset, end));
    }

    // Proves a batch taken while an earlier one is still being written is told to write (and
    // sync) only after it, and that one taken with no write in flight is not.
    #[test]
    fn a_batch_taken_during_an_earlier_write_syncs_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("segment")).unwrap();
        let header = SEGMENT_HEADER_BYTES as u64;
        let shared = Shared::new(0, Some((file, 1, header, header)));
        let options = LogOptions::default();
        let mut spare = Vec::new();
        let mut take = |offset: u64| {
            let mut q = lock(&shared.queue);
            queue_record(&mut q, offset, b"record");
            match take_batch(&mut q, &options, &mut spare, Some(1)) {
                Some(Job::Write { first, behind_earlier_write, .. }) => (first, behind_earlier_write),
                _ => panic!("expected a write job"),
            }
        };
        assert_eq!(take(1), (1, false), "nothing else is being written");
        assert_eq!(take(2), (2, true), "batch 1 is still being written");
        shared.mark_written(1);
        shared.mark_written(2);
        assert_eq!(take(3), (3, false), "every earlier write completed");
    }

    // Proves a sync waits for every earlier batch's write, and for no later one.
    #[test]
    fn a_sync_waits_for_earlier_writes_only() {
        let shared = Shared::new(0, None);
        lock(&shared.queue).writing.extend([5, 20]);
        shared.wait_earlier_writes(5); // nothing before batch 5: returns at once
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                shared.wait_earlier_writes(10);
                tx.send(()).unwrap();
            });
            assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "batch 5 is not written yet");
            shared.mark_written(5);
            rx.recv_timeout(Duration::from_secs(10))
                .expect("released once batch 5 is written; batch 20 comes later");
        });
    }
}
