//! How bytes reach the disk: an io_uring backend (write and fdatasync submitted together as a
//! linked pair) and a portable `pwrite` + `fdatasync` fallback, behind one trait. The choice
//! is made at runtime: io_uring may be refused by a kernel or sandbox, which is not fatal.

use std::fs::File;
use std::io;

/// A segment file opened for appending at known offsets.
pub trait SegmentIo: Send {
    /// Writes all of `buf` at `offset`, then, if `sync`, makes it durable (fdatasync).
    fn write_at(&mut self, buf: &[u8], offset: u64, sync: bool) -> io::Result<()>;
    /// Makes everything written so far durable.
    fn sync(&mut self) -> io::Result<()>;
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
    fn write_at(&mut self, buf: &[u8], offset: u64, sync: bool) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(buf, offset)?;
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
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

        /// Submits a write (and, linked after it, an fdatasync) and waits for both.
        /// Returns the bytes written.
        fn submit(&mut self, buf: &[u8], offset: u64, sync: bool) -> io::Result<usize> {
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
            let wanted = if sync { 2 } else { 1 };
            self.ring.submit_and_wait(wanted)?;
            let mut written = None;
            let mut sync_result = Ok(());
            for cqe in self.ring.completion() {
                let result = cqe.result();
                match cqe.user_data() {
                    WRITE if result < 0 => return Err(io::Error::from_raw_os_error(-result)),
                    WRITE => written = Some(result as usize),
                    // A short write cancels the linked fsync (-ECANCELED); the caller retries.
                    FSYNC if result < 0 && -result != libc_ecanceled() => {
                        sync_result = Err(io::Error::from_raw_os_error(-result))
                    }
                    _ => {}
                }
            }
            sync_result?;
            written.ok_or_else(|| io::Error::other("io_uring write completion missing"))
        }
    }

    fn libc_ecanceled() -> i32 {
        125 // ECANCELED on Linux
    }

    impl SegmentIo for UringFile {
        fn write_at(&mut self, mut buf: &[u8], mut offset: u64, sync: bool) -> io::Result<()> {
            while !buf.is_empty() {
                let n = self.submit(buf, offset, sync)?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "io_uring wrote nothing"));
                }
                buf = &buf[n.min(buf.len())..];
                offset += n as u64;
                if !buf.is_empty() && sync {
                    // The fsync linked to a short write was cancelled; the next round syncs.
                    continue;
                }
            }
            Ok(())
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
            io.write_at(b"hello ", 0, true).unwrap();
            io.write_at(b"world", 6, false).unwrap();
            io.sync().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"hello world", "{kind:?}");
        }
    }
}
