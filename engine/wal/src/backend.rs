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

    use io_uring::{opcode, squeue, types, IoUring};

    use super::SegmentIo;

    /// Entries in the ring: one write and one fsync per submission.
    const RING_ENTRIES: u32 = 8;
    const WRITE: u64 = 1;
    const FSYNC: u64 = 2;

    pub struct UringFile {
        file: File,
        ring: IoUring,
    }

    impl UringFile {
        pub fn new(file: io::Result<File>) -> io::Result<UringFile> {
            let file = file?;
            let ring = IoUring::new(RING_ENTRIES)?;
            let mut f = UringFile { file, ring };
            // Probe once: some sandboxes create rings but refuse operations.
            f.sync()?;
            Ok(f)
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
            let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
            let write = opcode::Write::new(fd, buf.as_ptr(), len).offset(offset).build().user_data(WRITE);
            let write = if sync { write.flags(squeue::Flags::IO_LINK) } else { write };
            let fsync = opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build().user_data(FSYNC);
            // SAFETY: the entries point at `buf` and the file descriptor, both of which outlive
            // this call: we wait below for every submitted entry to complete before returning.
            unsafe {
                let mut sq = self.ring.submission();
                sq.push(&write).map_err(|_| io::Error::other("io_uring submission queue full"))?;
                if sync {
                    sq.push(&fsync).map_err(|_| io::Error::other("io_uring submission queue full"))?;
                }
            }
            let mut outstanding = if sync { 2 } else { 1 };
            let mut written = None;
            let mut write_error = None;
            let mut sync_result = Ok(());
            while outstanding > 0 {
                self.ring.submit_and_wait(1)?;
                for cqe in self.ring.completion() {
                    outstanding -= 1;
                    let result = cqe.result();
                    match cqe.user_data() {
                        WRITE if result < 0 => write_error = Some(io::Error::from_raw_os_error(-result)),
                        WRITE => {
                            written = Some(result as usize);
                            on_write(result as usize);
                        }
                        // A short write cancels the linked fsync (-ECANCELED); the caller retries.
                        FSYNC if result < 0 && -result != libc_ecanceled() => {
                            sync_result = Err(io::Error::from_raw_os_error(-result))
                        }
                        _ => {}
                    }
                }
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

    fn libc_ecanceled() -> i32 {
        125 // ECANCELED on Linux
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
            // SAFETY: the entry only names the file descriptor, which outlives the call; we wait
            // for its completion before returning.
            unsafe {
                self.ring
                    .submission()
                    .push(&fsync)
                    .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            }
            self.ring.submit_and_wait(1)?;
            for cqe in self.ring.completion() {
                if cqe.result() < 0 {
                    return Err(io::Error::from_raw_os_error(-cqe.result()));
                }
            }
            Ok(())
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
