//! How bytes reach the disk: an io_uring backend (write and fdatasync submitted together as a
//! linked pair) and a portable `pwrite` + `fdatasync` fallback, behind one trait. The choice
//! is made at runtime: io_uring may be refused by a kernel or sandbox, which is not fatal.

use std::fs::File;
use std::io;

/// A segment file opened for appending at known offsets.
pub trait SegmentIo: Send {
    /// Writes all of `buf` at `offset` (not synced).
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes everything written so far durable (fdatasync).
    fn sync(&mut self) -> io::Result<()>;
    /// Writes all of `buf` at `offset` and makes it durable, calling `written` once the write
    /// has completed and before the sync has (a later batch's sync may start from then on).
    /// `written` is not called if the write fails.
    fn write_and_sync(&mut self, buf: &[u8], offset: u64, written: &mut dyn FnMut()) -> io::Result<()> {
        self.write_at(buf, offset)?;
        written();
        self.sync()
    }
}

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// io_uring if the kernel allows it, else the fallback.
    #[default]
    Auto,
    /// Always `pwrite` + `fdatasync`.
    Pwrite,
}

/// The backend actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    IoUring,
    Pwrite,
    /// `Fsync` mode's direct-I/O path: two disk threads, each doing the next step — the
    /// `O_DIRECT` write of what is queued or the fdatasync of what is written, one of each at a
    /// time — with plain system calls (see `LogOptions::direct_io`).
    DirectPwrite,
}

/// Opens the backend for `file`: io_uring when `choice` allows and the kernel agrees.
pub fn open_backend(file: File, choice: BackendChoice) -> (Box<dyn SegmentIo>, BackendKind) {
    #[cfg(target_os = "linux")]
    if choice == BackendChoice::Auto {
        match uring::UringFile::new(file.try_clone()) {
            Ok(f) => return (Box::new(f), BackendKind::IoUring),
            Err(e) => tracing::info!("io_uring unavailable ({e}); using pwrite + fdatasync"),
        }
    }
    (Box::new(PwriteFile { file }), BackendKind::Pwrite)
}

/// The portable backend.
pub struct PwriteFile {
    file: File,
}

impl SegmentIo for PwriteFile {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(buf, offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(target_os = "linux")]
mod uring {
    use std::fs::File;
    use std::io;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use io_uring::register::Probe;
    use io_uring::{opcode, squeue, types, IoUring};

    use super::SegmentIo;

    /// Entries in the ring: one write and one fsync per submission.
    const RING_ENTRIES: u32 = 8;
    const WRITE: u64 = 1;
    const FSYNC: u64 = 2;
    /// How long to pause before retrying `io_uring_enter` after EAGAIN/EBUSY, and between polls
    /// of the completion queue while waiting out entries after a failed `io_uring_enter`.
    const PAUSE: Duration = Duration::from_millis(1);

    pub struct UringFile {
        file: File,
        ring: IoUring,
        /// Set when `io_uring_enter` failed and left entries we pushed in the submission queue,
        /// not consumed by the kernel. They point at a buffer that is freed once our call
        /// returns, and the kernel would consume them with the next `io_uring_enter` (we do not
        /// use SQPOLL, so nothing else consumes them); the crate cannot take entries back out of
        /// the queue, so the ring must never be entered again: every later call fails.
        poisoned: bool,
    }

    impl UringFile {
        pub fn new(file: io::Result<File>) -> io::Result<UringFile> {
            let file = file?;
            let ring = IoUring::new(RING_ENTRIES)?;
            // Before Linux 5.6 a ring can be created and fsync works, but IORING_OP_WRITE does not.
            probe_ops(&ring)?;
            let mut f = UringFile { file, ring, poisoned: false };
            // Also run one fsync: some sandboxes create rings but refuse operations.
            f.sync()?;
            Ok(f)
        }

        /// Pushes `entries`, submits them, and waits until each has completed, passing each
        /// completion's user data and result to `on_cqe` as it arrives.
        ///
        /// Whatever happens, this returns (or unwinds) only once none of `entries` is in the
        /// kernel's hands, and none can be handed to it later: see [`InFlight`]. EINTR, EAGAIN
        /// and EBUSY from `io_uring_enter` are retried; any other error is returned after that
        /// wait.
        ///
        /// # Safety
        ///
        /// Every buffer an entry points at must stay valid until this returns or unwinds.
        unsafe fn run(
            &mut self,
            entries: &[squeue::Entry],
            on_cqe: &mut dyn FnMut(u64, i32),
        ) -> io::Result<()> {
            if self.poisoned {
                return Err(io::Error::other(
                    "io_uring backend unusable: a failed submission left entries in its queue",
                ));
            }
            let mut flight = InFlight { ring: &mut self.ring, poisoned: &mut self.poisoned, outstanding: 0 };
            // Every call before this one left the queue empty (or poisoned us).
            debug_assert!(flight.ring.submission().is_empty());
            // SAFETY: the caller keeps the buffers valid until we return or unwind, and from
            // the push on `flight` counts the entries, so that every way out of this function
            // (return or unwind) first waits, in `InFlight::drop`, for those the kernel took
            // and poisons the ring if it left any queued. `push_multiple` pushes all or none.
            unsafe { flight.ring.submission().push_multiple(entries) }
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            flight.outstanding = entries.len();
            while flight.outstanding > 0 {
                if let Err(e) = flight.ring.submit_and_wait(1) {
                    match e.raw_os_error() {
                        Some(libc::EINTR) => {}
                        // Kernel out of request memory, or completions to flush: reaped below.
                        Some(libc::EAGAIN | libc::EBUSY) => std::thread::sleep(PAUSE),
                        _ => return Err(e),
                    }
                }
                flight.reap(on_cqe);
            }
            Ok(())
        }

        /// Submits a write (and, if `sync`, an fdatasync linked after it) and waits for both,
        /// calling `on_write` with the write's result as soon as it completes.
        /// Returns the bytes written.
        fn submit(
            &mut self,
            buf: &[u8],
            offset: u64,
            sync: bool,
            on_write: &mut dyn FnMut(usize),
        ) -> io::Result<usize> {
            let fd = types::Fd(self.file.as_raw_fd());
            // The kernel reads at most `len` <= `buf.len()` bytes from `buf`.
            let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
            let write = opcode::Write::new(fd, buf.as_ptr(), len).offset(offset).build().user_data(WRITE);
            let write = if sync { write.flags(squeue::Flags::IO_LINK) } else { write };
            let fsync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(FSYNC);
            let entries = [write, fsync];
            let entries = if sync { &entries[..] } else { &entries[..1] };
            let mut written = None;
            let mut write_error = None;
            let mut sync_result = Ok(());
            // SAFETY: the write entry points at `buf[..len]`, and `buf` is borrowed for the whole
            // of this call, which outlasts `run`; the fsync entry points at no memory.
            unsafe {
                self.run(entries, &mut |user_data, result| match user_data {
                    WRITE if result < 0 => write_error = Some(io::Error::from_raw_os_error(-result)),
                    WRITE => {
                        written = Some(result as usize);
                        on_write(result as usize);
                    }
                    // A short write cancels the linked fsync (-ECANCELED); the caller retries.
                    FSYNC if result < 0 && -result != libc::ECANCELED => {
                        sync_result = Err(io::Error::from_raw_os_error(-result))
                    }
                    _ => {}
                })?;
            }
            if let Some(e) = write_error {
                return Err(e);
            }
            sync_result?;
            written.ok_or_else(|| io::Error::other("io_uring write completion missing"))
        }

        /// Writes all of `buf`, syncing with the last piece if `sync`.
        fn write_all(
            &mut self,
            mut buf: &[u8],
            mut offset: u64,
            sync: bool,
            written: &mut dyn FnMut(),
        ) -> io::Result<()> {
            while !buf.is_empty() {
                let remaining = buf.len();
                // The fsync linked to a short write is cancelled; the next round syncs.
                let n = self.submit(buf, offset, sync, &mut |n| {
                    if n >= remaining {
                        written();
                    }
                })?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "io_uring wrote nothing"));
                }
                buf = &buf[n.min(buf.len())..];
                offset += n as u64;
            }
            Ok(())
        }
    }

    /// Asks the kernel (IORING_REGISTER_PROBE) whether it supports the operations we submit.
    fn probe_ops(ring: &IoUring) -> io::Result<()> {
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot probe io_uring operations (IORING_REGISTER_PROBE needs Linux 5.6): {e}"),
            )
        })?;
        check_ops(probe.is_supported(opcode::Write::CODE), probe.is_supported(opcode::Fsync::CODE))
    }

    /// Refuses io_uring unless the kernel supports both operations, naming those it lacks.
    fn check_ops(write: bool, fsync: bool) -> io::Result<()> {
        let missing = match (write, fsync) {
            (true, true) => return Ok(()),
            (false, true) => "IORING_OP_WRITE",
            (true, false) => "IORING_OP_FSYNC",
            (false, false) => "IORING_OP_WRITE and IORING_OP_FSYNC",
        };
        Err(io::Error::new(io::ErrorKind::Unsupported, format!("kernel does not support {missing}")))
    }

    /// The entries one `run` call pushed and has not yet seen complete.
    ///
    /// Dropping it with entries outstanding (an error return or a panic in `on_cqe`) blocks
    /// until none is in the kernel's hands, so the caller's buffers cannot be freed while the
    /// kernel may still read them.
    struct InFlight<'a> {
        ring: &'a mut IoUring,
        poisoned: &'a mut bool,
        outstanding: usize,
    }

    impl InFlight<'_> {
        /// Takes the completions already posted, counting each before passing it on.
        fn reap(&mut self, on_cqe: &mut dyn FnMut(u64, i32)) {
            for cqe in self.ring.completion() {
                self.outstanding -= 1;
                on_cqe(cqe.user_data(), cqe.result());
            }
        }
    }

    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            if self.outstanding == 0 {
                return;
            }
            // Entries still queued were never handed to the kernel, and without SQPOLL only an
            // `io_uring_enter` hands them over: poisoning makes sure none ever happens again.
            let unsubmitted = self.ring.submission().len();
            if unsubmitted > 0 {
                *self.poisoned = true;
            }
            // The rest are in flight. Their completions are posted to the shared completion
            // queue without our `io_uring_enter`; the sleep is a system call, so kernel task
            // work queued for this thread to post a completion runs when it returns. We wait
            // indefinitely: returning earlier would let the kernel use a freed buffer.
            while self.outstanding > unsubmitted {
                let before = self.outstanding;
                self.reap(&mut |_, _| {});
                if self.outstanding == before {
                    std::thread::sleep(PAUSE);
                }
            }
        }
    }

    impl SegmentIo for UringFile {
        fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.write_all(buf, offset, false, &mut || {})
        }

        /// The write and its fdatasync go to the kernel in one submission, linked.
        fn write_and_sync(&mut self, buf: &[u8], offset: u64, written: &mut dyn FnMut()) -> io::Result<()> {
            self.write_all(buf, offset, true, written)
        }

        fn sync(&mut self) -> io::Result<()> {
            let fd = types::Fd(self.file.as_raw_fd());
            let fsync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(FSYNC);
            let mut result = Ok(());
            // SAFETY: the entry points at no memory, only at the file descriptor.
            unsafe {
                self.run(&[fsync], &mut |_, res| {
                    if res < 0 {
                        result = Err(io::Error::from_raw_os_error(-res));
                    }
                })?;
            }
            result
        }
    }

    #[cfg(test)]
    mod tests {
        use std::time::Instant;

        use super::*;
        use crate::backend::{open_backend, BackendChoice, BackendKind};

        /// A `UringFile` on a fresh file, or `None` (said on stderr) if this sandbox refuses
        /// io_uring rings altogether.
        fn uring_file(dir: &tempfile::TempDir) -> Option<(UringFile, std::path::PathBuf)> {
            let path = dir.path().join("segment");
            let file =
                std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path);
            if let Err(e) = IoUring::new(RING_ENTRIES) {
                eprintln!("io_uring refused here ({e}); only the fallback is testable");
                return None;
            }
            Some((UringFile::new(file).expect("io_uring usable on this kernel"), path))
        }

        // Proves the refusal path names each missing operation and accepts only both present.
        #[test]
        fn check_ops_refuses_missing_operations() {
            check_ops(true, true).unwrap();
            for (write, fsync, expect) in [
                (false, true, "IORING_OP_WRITE"),
                (true, false, "IORING_OP_FSYNC"),
                (false, false, "IORING_OP_WRITE and IORING_OP_FSYNC"),
            ] {
                let e = check_ops(write, fsync).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::Unsupported);
                assert!(e.to_string().ends_with(expect), "{write} {fsync}: {e}");
            }
        }

        // Proves the kernel probe passes on this (Linux >= 5.6) kernel, or, where rings are
        // refused outright, that the backend falls back instead of failing.
        #[test]
        fn probe_accepts_this_kernel() {
            match IoUring::new(RING_ENTRIES) {
                Ok(ring) => probe_ops(&ring).expect("kernel supports write and fsync"),
                Err(e) => {
                    eprintln!("io_uring refused here ({e}); checking the fallback");
                    let dir = tempfile::tempdir().unwrap();
                    let file = File::create(dir.path().join("f")).unwrap();
                    assert_eq!(open_backend(file, BackendChoice::Auto).1, BackendKind::Pwrite);
                }
            }
        }

        // Proves a poisoned file refuses every operation and writes nothing.
        #[test]
        fn poisoned_file_refuses_use() {
            let dir = tempfile::tempdir().unwrap();
            let Some((mut f, path)) = uring_file(&dir) else { return };
            f.write_at(b"ok", 0).unwrap();
            f.poisoned = true;
            assert!(f.write_at(b"bad", 0).is_err());
            let mut written = false;
            assert!(f.write_and_sync(b"bad", 0, &mut || written = true).is_err());
            assert!(!written);
            assert!(f.sync().is_err());
            assert_eq!(std::fs::read(&path).unwrap(), b"ok");
        }

        // Proves that abandoning an entry the kernel never consumed poisons the file.
        #[test]
        fn abandoned_unsubmitted_entry_poisons() {
            let dir = tempfile::tempdir().unwrap();
            let Some((mut f, _)) = uring_file(&dir) else { return };
            let nop = opcode::Nop::new().build().user_data(99);
            // SAFETY: a no-op entry points at no memory.
            unsafe { f.ring.submission().push(&nop).unwrap() };
            drop(InFlight { ring: &mut f.ring, poisoned: &mut f.poisoned, outstanding: 1 });
            assert!(f.poisoned);
            assert!(f.write_at(b"x", 0).is_err());
        }

        // Proves that abandoning an entry in flight waits for its completion (which needs no
        // `io_uring_enter` from us) and leaves the file usable.
        #[test]
        fn abandoned_in_flight_entry_is_waited_for() {
            let dir = tempfile::tempdir().unwrap();
            let Some((mut f, path)) = uring_file(&dir) else { return };
            let delay = Duration::from_millis(50);
            let ts = types::Timespec::from(delay);
            let timeout = opcode::Timeout::new(&ts).build().user_data(99);
            // SAFETY: `ts` outlives the `InFlight` dropped below, which waits for the timeout.
            unsafe { f.ring.submission().push(&timeout).unwrap() };
            let start = Instant::now();
            assert_eq!(f.ring.submit().unwrap(), 1);
            drop(InFlight { ring: &mut f.ring, poisoned: &mut f.poisoned, outstanding: 1 });
            assert!(start.elapsed() >= delay - Duration::from_millis(5), "{:?}", start.elapsed());
            assert!(!f.poisoned);
            assert!(f.ring.completion().is_empty());
            let mut written = 0;
            f.write_and_sync(b"still fine", 0, &mut || written += 1).unwrap();
            assert_eq!(written, 1);
            assert_eq!(std::fs::read(&path).unwrap(), b"still fine");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves both backends write at the given offsets and the data reads back.
    #[test]
    fn backends_write_at_offsets() {
        let dir = tempfile::tempdir().unwrap();
        for choice in [BackendChoice::Auto, BackendChoice::Pwrite] {
            let path = dir.path().join(format!("{choice:?}"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let (mut io, kind) = open_backend(file, choice);
            if choice == BackendChoice::Pwrite {
                assert_eq!(kind, BackendKind::Pwrite);
            }
            let mut written = 0;
            io.write_and_sync(b"hello ", 0, &mut || written += 1).unwrap();
            assert_eq!(written, 1, "{kind:?} reports the write once");
            io.write_at(b"world", 6).unwrap();
            io.sync().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"hello world", "{kind:?}");
        }
    }
}
