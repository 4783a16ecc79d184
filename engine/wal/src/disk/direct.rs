//! `Fsync` mode with direct I/O: two disk threads, each doing whatever is next — **the write**
//! of everything queued (one at a time, through an `O_DIRECT` handle, so the data reaches the
//! device's cache at once and no page-cache writeback is left for the sync) or **the sync**
//! (one at a time: fdatasync makes durable every write that completed before it started).
//! A lone transaction is written and synced by one thread with no hand-off; under load one
//! thread writes the next batch while the other syncs the last, so a transaction waits for at
//! most one write and the sync after it rather than a whole write + sync in progress and then
//! its own (the page-cache path in `disk.rs`). Measured in the README's durability section.
//!
//! Direct I/O needs offsets, lengths and buffers aligned to [`DIRECT_ALIGN`]. Batches are not,
//! so each write starts at the block holding the end of the previous one and rewrites that
//! block's bytes unchanged (the writer keeps them: `DirectFile::tail`), then pads the last
//! block with zeros — which readers take for the end of the data, as with preallocated space.
//! Rewriting identical bytes relies on the device writing a sector whole or not at all, as
//! PostgreSQL's WAL does. Only the writer writes, one write at a time, so no two writes touch
//! the same block at once and writes complete in log order: a SIGKILL tears at most the last.
//! A power cut may drop any unsynced write, in any order; the durability marks tell that from
//! damage (see `crate::frame`).

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::{
    clone_if_needed, fail, lock, rotate_and_install, segment_io, take_batch, Job, NewHandle, Queue, Segment,
    Shared, PREALLOCATE_MAX_BYTES, PREALLOCATE_MIN_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::backend::{open_backend, BackendChoice, SegmentIo};
use crate::log::LogOptions;
use crate::segment::segment_file_name;
use crate::WalError;

/// Alignment of direct writes: the file system block (4 KiB on ext4/xfs). Smaller
/// sector-aligned writes are allowed, but unaligned to the block, ext4 serialises them.
pub(crate) const DIRECT_ALIGN: usize = 4096;

fn align_down(x: u64) -> u64 {
    x & !(DIRECT_ALIGN as u64 - 1)
}

fn align_up(x: u64) -> u64 {
    align_down(x + DIRECT_ALIGN as u64 - 1)
}

/// Whether files in `dir` can be written with `O_DIRECT` (tmpfs on older kernels and some
/// FUSE mounts refuse it; the two-worker path then serves `Fsync` mode).
pub(crate) fn direct_io_supported(dir: &Path) -> bool {
    let probe = dir.join(".direct-probe");
    let result = open_direct(&probe, true).and_then(|file| {
        use std::os::unix::fs::FileExt;
        let mut buf = AlignedBuf::default();
        file.write_all_at(buf.zeroed(DIRECT_ALIGN)?, 0)
    });
    let _ = std::fs::remove_file(&probe);
    if let Err(e) = &result {
        tracing::info!(dir = %dir.display(), "direct I/O unavailable ({e}); syncs go through the page cache");
    }
    result.is_ok()
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path, create: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().read(true).write(true).create(create).custom_flags(libc::O_DIRECT).open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path, _create: bool) -> std::io::Result<File> {
    Err(std::io::Error::other("O_DIRECT is used on Linux only"))
}

/// A reusable buffer whose slices start on a [`DIRECT_ALIGN`] boundary, as direct I/O needs.
#[derive(Default)]
struct AlignedBuf {
    raw: Vec<u8>,
}

impl AlignedBuf {
    /// `len` bytes (a multiple of [`DIRECT_ALIGN`]) starting on an aligned address; their
    /// content is whatever the last user left.
    fn slice(&mut self, len: usize) -> std::io::Result<&mut [u8]> {
        debug_assert_eq!(len % DIRECT_ALIGN, 0);
        if self.raw.len() < len + DIRECT_ALIGN {
            self.raw = vec![0; (len + DIRECT_ALIGN).next_power_of_two()];
        }
        let start = self.raw.as_ptr().align_offset(DIRECT_ALIGN);
        if start > DIRECT_ALIGN {
            // `align_offset` may decline for exotic pointers; a heap address never does this.
            return Err(std::io::Error::other("cannot align a direct I/O buffer"));
        }
        Ok(&mut self.raw[start..start + len])
    }

    /// Lets go of a buffer grown for an unusually large batch.
    fn trim(&mut self) {
        const RETAINED_BYTES: usize = 1 << 20;
        if self.raw.len() > RETAINED_BYTES {
            self.raw = Vec::new();
        }
    }

    fn zeroed(&mut self, len: usize) -> std::io::Result<&mut [u8]> {
        let slice = self.slice(len)?;
        slice.fill(0);
        Ok(slice)
    }
}

/// The direct handle on one segment, with the bytes every next write starts by rewriting.
/// One write at a time holds it (taken out of `Queue::direct`).
pub(super) struct DirectFile {
    generation: u64,
    io: Box<dyn SegmentIo>,
    /// The data bytes of the block holding the current end of the data: from
    /// `align_down(end)` to `end`. Every write starts by rewriting them.
    tail: Vec<u8>,
    /// End of the data written through this handle (`None` until the tail is loaded).
    end: Option<u64>,
    /// A buffered handle on the same file, to load the tail block from.
    reader: File,
}

impl DirectFile {
    fn open(dir: &Path, generation: u64, reader: File) -> std::io::Result<DirectFile> {
        let file = open_direct(&dir.join(segment_file_name(generation)), false)?;
        // Plain pwrite: io_uring measured 20–30% slower here (its writes and syncs were handed
        // to kernel worker threads), and this thread blocks on each write anyway.
        let io = open_backend(file, BackendChoice::Pwrite).0;
        Ok(DirectFile { generation, io, tail: Vec::new(), end: None, reader })
    }

    /// Loads the block holding `end` (when the handle is new, or after a write failed).
    fn load_tail(&mut self, end: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let base = align_down(end);
        self.tail.clear();
        self.tail.resize((end - base) as usize, 0);
        // Read through the buffered handle: a direct read would need an aligned buffer too,
        // and the page cache holds nothing stale (direct writes invalidate what they cover).
        self.reader.read_exact_at(&mut self.tail, base)?;
        self.end = Some(end);
        Ok(())
    }

    /// Writes `batch` at `at` (the current end of the data).
    fn append(&mut self, batch: &[u8], at: u64, buf: &mut AlignedBuf) -> std::io::Result<()> {
        if self.end != Some(at) {
            self.load_tail(at)?;
        }
        let base = align_down(at);
        let end = at + batch.len() as u64;
        let len = (align_up(end) - base) as usize;
        let out = buf.slice(len)?;
        let (tail, rest) = out.split_at_mut(self.tail.len());
        tail.copy_from_slice(&self.tail);
        let (data, pad) = rest.split_at_mut(batch.len());
        data.copy_from_slice(batch);
        pad.fill(0);
        self.end = None; // until the write is known to have completed
        self.io.write_at(out, base)?;
        let new_base = align_down(end);
        self.tail.clear();
        self.tail.extend_from_slice(&out[(new_base - base) as usize..(end - base) as usize]);
        self.end = Some(end);
        Ok(())
    }
}

/// Zeroes `[from, to)` (both aligned) through a direct handle of its own, so writes below
/// `from` go on meanwhile. The zeros are synced by the caller.
fn write_zeros(
    dir: &Path,
    generation: u64,
    from: u64,
    to: u64,
    buf: &mut AlignedBuf,
) -> std::io::Result<File> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 256 << 10;
    let file = open_direct(&dir.join(segment_file_name(generation)), false)?;
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK) as usize;
        file.write_all_at(buf.zeroed(n)?, at)?;
        at += n as u64;
    }
    Ok(file)
}

/// What a disk thread does next (decided under the queue lock, done without it).
enum Step {
    /// Write a batch (`Job::Write`) with the shared direct handle, taken out of the queue.
    Write(Job, Option<DirectFile>),
    /// Zero space ahead (`Job::Preallocate`) while writes go on below it.
    Preallocate(Job),
    Rotate(Job),
    /// fdatasync, making every transaction up to `target` durable.
    Sync {
        target: u64,
        generation: u64,
        file: NewHandle,
    },
    Exit,
}

/// One of the two disk threads (see the module docs): each does whatever is next — the write
/// (one at a time) or the sync (one at a time) — so after a lone write the same thread syncs
/// it with no hand-off, and under load one thread writes while the other syncs.
pub(crate) fn disk_thread(shared: &Shared, dir: &Path, options: &LogOptions) {
    let mut buf = AlignedBuf::default();
    let mut spare = Vec::new();
    let mut sync_io: Option<(u64, Box<dyn SegmentIo>)> = None;
    loop {
        let sync_have = sync_io.as_ref().map(|(generation, _)| *generation);
        match next_step(shared, options, &mut spare, sync_have) {
            Step::Exit => return,
            Step::Rotate(Job::Rotate { first_offset, old }) => {
                rotate_and_install(shared, dir, first_offset, old, options)
            }
            Step::Preallocate(Job::Preallocate { from, to, generation, .. }) => {
                let zeroed = write_zeros(dir, generation, from, to, &mut buf);
                // The sync also covers data writes completed before it: its failure is the
                // log's (a later successful fdatasync may not report lost writeback again).
                let synced = zeroed.as_ref().map(|f| f.sync_data());
                let mut q = lock(&shared.queue);
                q.preallocating = None;
                match synced {
                    Ok(Ok(())) => {
                        if let Some(segment) = q.segment.as_mut().filter(|s| s.generation == generation) {
                            segment.prepared = segment.prepared.max(to);
                        }
                    }
                    Ok(Err(e)) => fail(&mut q, WalError::io(dir, e)),
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), "commit log preallocation failed, appending without it: {e}");
                        if let Some(segment) = q.segment.as_mut().filter(|s| s.generation == generation) {
                            segment.preallocation_failed = true;
                        }
                    }
                }
                drop(q);
                shared.done.notify_all();
                shared.work.notify_all(); // a batch may wait for room beyond the zeroed range
            }
            Step::Write(Job::Write { mut batch, at, first, last, generation, file, .. }, mut direct) => {
                let result = handle(&mut direct, dir, generation, file)
                    .and_then(|d| d.append(&batch, at, &mut buf))
                    .map_err(|e| WalError::io(dir, e));
                buf.trim();
                batch.clear();
                spare = batch;
                let mut q = lock(&shared.queue);
                q.batches_in_flight -= 1;
                q.writing.remove(&first);
                q.direct_writing = false;
                q.direct = direct;
                match result {
                    Ok(()) => q.written = last,
                    Err(e) => {
                        fail(&mut q, e);
                        drop(q);
                        shared.done.notify_all();
                        shared.work.notify_all();
                    }
                }
            }
            Step::Sync { target, generation, file } => {
                // A plain fdatasync: an io_uring one runs on a kernel worker thread, one more hop.
                let result = segment_io(&mut sync_io, generation, file, BackendChoice::Pwrite)
                    .and_then(|io| io.sync())
                    .map_err(|e| WalError::io(dir, e));
                let mut q = lock(&shared.queue);
                q.direct_syncing = false;
                match result {
                    Ok(()) => {
                        q.durable = q.durable.max(target);
                        q.synced = q.synced.max(target);
                    }
                    Err(e) => fail(&mut q, e),
                }
                drop(q);
                shared.done.notify_all();
            }
            Step::Rotate(_) | Step::Preallocate(_) | Step::Write(..) => {
                unreachable!("steps carry the job they are named after")
            }
        }
    }
}

/// The direct handle on segment `generation`, opened when a job brings a buffered handle on a
/// segment the handle is not for (see `clone_if_needed`).
fn handle<'a>(
    direct: &'a mut Option<DirectFile>,
    dir: &Path,
    generation: u64,
    reader: NewHandle,
) -> std::io::Result<&'a mut DirectFile> {
    if let Some(reader) = reader {
        *direct = Some(DirectFile::open(dir, generation, reader?)?);
    }
    match direct {
        Some(d) if d.generation == generation => Ok(d),
        _ => Err(std::io::Error::other("the log writer has no handle on the current segment")),
    }
}

/// The next step under the queue lock, waiting while there is none. `sync_have` is the
/// segment generation this thread's sync handle is for.
fn next_step(shared: &Shared, options: &LogOptions, spare: &mut Vec<u8>, sync_have: Option<u64>) -> Step {
    let mut q = lock(&shared.queue);
    loop {
        let in_flight = q.direct_writing || q.direct_syncing || q.preallocating.is_some();
        if q.failed.is_some() {
            if q.closing && !in_flight {
                drop(q);
                shared.work.notify_all(); // the other thread may wait for this one's step
                return Step::Exit;
            }
            q = shared.wait_work(q);
            continue;
        }
        if q.rotating {
            q = shared.wait_work(q); // the other thread is closing the segment
            continue;
        }
        let sync_wanted = q.written > q.durable && !q.direct_syncing;
        let write_wanted = !q.direct_writing && !q.records.is_empty();
        if sync_wanted {
            // The sync first: the transactions it covers were queued earliest. The other
            // thread, if idle, writes meanwhile.
            let other_idle = q.idle_workers > 0;
            let step = take_sync(&mut q, sync_have);
            drop(q);
            if write_wanted && other_idle {
                shared.work.notify_one();
            }
            return step;
        }
        if let Some((first_offset, first_end)) = q.records.first().copied().filter(|_| !q.direct_writing) {
            let needs_new_segment = q.segment.as_ref().is_none_or(|s| {
                s.bytes > SEGMENT_HEADER_BYTES as u64
                    && s.bytes + first_end as u64 > options.segment_bytes_max
            });
            if needs_new_segment {
                if q.direct_syncing || q.durable < q.written || q.preallocating.is_some() {
                    // The old segment is still being synced or zeroed; rotate once it is not.
                    q = shared.wait_work(q);
                    continue;
                }
                q.rotating = true;
                q.direct = None;
                let old = q.segment.take().map(Segment::into_old);
                return Step::Rotate(Job::Rotate { first_offset, old });
            }
            if let Some(job) = preallocation_job(&mut q, options) {
                let other_idle = q.idle_workers > 0;
                drop(q);
                if other_idle {
                    shared.work.notify_one(); // the other thread writes below the zeroed range
                }
                return Step::Preallocate(job);
            }
            let have = q.direct.as_ref().map(|d| d.generation);
            if let Some(job) = take_batch(&mut q, options, spare, have) {
                q.direct_writing = true;
                let direct = q.direct.take();
                return Step::Write(job, direct);
            }
        }
        // Everything written gets synced without being asked: a `flush` needs nothing more.
        q.sync_requested = false;
        if q.closing && !in_flight && q.records.is_empty() {
            drop(q);
            shared.work.notify_all(); // the other thread may wait for this one's step
            return Step::Exit;
        }
        q = shared.wait_work(q);
    }
}

fn take_sync(q: &mut Queue, sync_have: Option<u64>) -> Step {
    // Invariant: batches are written only into a segment, and it is rotated only once
    // everything written in it is durable.
    let segment = q.segment.as_ref().expect("a written batch's segment");
    q.direct_syncing = true;
    Step::Sync {
        target: q.written,
        generation: segment.generation,
        file: clone_if_needed(segment, sync_have),
    }
}

/// Zeroes aligned space ahead of the data when less than half a chunk is left; batches are
/// taken only below it meanwhile (see `take_batch`).
fn preallocation_job(q: &mut Queue, options: &LogOptions) -> Option<Job> {
    let segment = q.segment.as_ref()?;
    // Not while closing: zeroing ahead of a log about to close only delays the shutdown.
    if segment.preallocation_failed || q.preallocating.is_some() || q.closing {
        return None;
    }
    let chunk = segment.bytes.clamp(PREALLOCATE_MIN_BYTES, PREALLOCATE_MAX_BYTES);
    if segment.prepared > segment.bytes && segment.prepared - segment.bytes >= chunk / 2 {
        return None;
    }
    let from = align_up(segment.prepared.max(segment.bytes));
    let to = align_up((segment.bytes + chunk).min(options.segment_bytes_max));
    if to <= from {
        return None;
    }
    let generation = segment.generation;
    q.preallocating = Some(from);
    Some(Job::Preallocate { from, to, generation, file: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves batches of any size written at unaligned ends leave the file holding exactly
    // their concatenation: each write's rewrite of the shared tail block keeps the earlier
    // bytes, its padding is zeros, and a new handle (a reopened log) picks up the tail from
    // the file.
    #[test]
    fn unaligned_batches_concatenate_through_aligned_direct_writes() {
        // Beside the test binary, under `target/`: the system temp dir may be a tmpfs that
        // refuses O_DIRECT.
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        if !direct_io_supported(dir.path()) {
            assert!(
                std::env::var_os("LIGHTCONE_REQUIRE_DIRECT_IO").is_none(),
                "LIGHTCONE_REQUIRE_DIRECT_IO is set, but {} refuses O_DIRECT",
                dir.path().display()
            );
            println!("SKIPPED: {} refuses O_DIRECT", dir.path().display());
            return;
        }
        let path = dir.path().join(segment_file_name(1));
        let header = b"0123456789";
        std::fs::write(&path, header).unwrap();
        let reader = || File::open(&path).unwrap();
        let mut direct = DirectFile::open(dir.path(), 1, reader()).unwrap();
        let mut buf = AlignedBuf::default();
        let mut expected = header.to_vec();
        let mut x = 7u64;
        for round in 0..60 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Sizes from 1 byte to past two blocks, so writes start and end anywhere.
            let len = 1 + (x >> 33) as usize % (2 * DIRECT_ALIGN + 100);
            let batch: Vec<u8> = (0..len).map(|i| (round * 31 + i) as u8 | 1).collect();
            if round == 30 {
                direct = DirectFile::open(dir.path(), 1, reader()).unwrap(); // as after a reopen
            }
            direct.append(&batch, expected.len() as u64, &mut buf).unwrap();
            expected.extend_from_slice(&batch);
        }
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len() as u64, align_up(expected.len() as u64), "writes are whole blocks");
        assert_eq!(&on_disk[..expected.len()], &expected[..], "every batch's bytes, in order");
        assert!(on_disk[expected.len()..].iter().all(|&b| b == 0), "the padding is zeros");
    }

    // Proves batches taken while space is being zeroed end, padding included, below it.
    #[test]
    fn batches_taken_during_preallocation_stay_below_the_zeroed_range() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("segment")).unwrap();
        let header = SEGMENT_HEADER_BYTES as u64;
        let shared = Shared::new(0, Some((file, 1, header, header)));
        let options = LogOptions::default();
        let mut q = lock(&shared.queue);
        let Some(Job::Preallocate { from, .. }) = preallocation_job(&mut q, &options) else {
            panic!("an empty segment needs zeroed space");
        };
        assert!(preallocation_job(&mut q, &options).is_none(), "one preallocation at a time");
        let mut spare = Vec::new();
        let mut offset = 0;
        let mut reached = header;
        while let Some(job) = {
            offset += 1;
            q.start_record();
            q.pending.extend_from_slice(&[7; 300]);
            let end = q.pending.len();
            q.records.push((offset, end));
            take_batch(&mut q, &options, &mut spare, Some(1))
        } {
            let Job::Write { batch, at, .. } = job else { panic!("a write job") };
            reached = at + batch.len() as u64;
            assert!(align_up(reached) <= from, "a direct write would touch the zeroed range");
        }
        assert!(reached > header, "batches were taken below the zeroed range");
        assert!(!q.records.is_empty(), "the record that does not fit waits for the zeros");
    }

    // Proves the buffer handed to direct I/O is aligned and sized as asked, whatever it held.
    #[test]
    fn aligned_buffer_slices_start_on_a_block() {
        let mut buf = AlignedBuf::default();
        for len in [DIRECT_ALIGN, 3 * DIRECT_ALIGN, DIRECT_ALIGN, 300 * DIRECT_ALIGN] {
            let slice = buf.zeroed(len).unwrap();
            assert_eq!(slice.len(), len);
            assert_eq!(slice.as_ptr() as usize % DIRECT_ALIGN, 0);
            assert!(slice.iter().all(|&b| b == 0), "zeroed over what the last user left");
            slice.fill(0xAA);
            buf.trim();
        }
    }
}
