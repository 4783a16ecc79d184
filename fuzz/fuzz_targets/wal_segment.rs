//! Fuzzes recovery over whole segment files: any bytes, laid out as one or two segments of a
//! log directory, must scan and replay into a fresh database with a typed error or a report —
//! never a panic, a hang or a wild allocation. The first input byte says where the second
//! segment starts (0: a single segment); the second segment is named after the first
//! segment's last record, so the fuzzer can reach the seal and gap checks.
//!
//! Run: `cargo +nightly fuzz run wal_segment` from `fuzz/`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lightcone_mvcc::Database;
use lightcone_wal::segment::segment_file_name;

/// One log directory per fuzzing process, rewritten for every input.
fn log_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| std::env::temp_dir().join(format!("lightcone-fuzz-wal-segment-{}", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let dir = log_dir();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("temp dir");
    let first_named = rest.get(8..16).map_or(1, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let cut = (split as usize * rest.len() / 256).min(rest.len());
    let (one, two) = if split == 0 { (rest, &[][..]) } else { rest.split_at(cut) };
    std::fs::write(dir.join(segment_file_name(first_named)), one).expect("write segment");
    if !two.is_empty() {
        let second_named = lightcone_wal::scan(dir, |_, _, _| Ok(std::ops::ControlFlow::Continue(())))
            .ok()
            .and_then(|r| r.last_offset)
            .map_or(first_named.wrapping_add(1), |last| last.wrapping_add(1));
        std::fs::write(dir.join(segment_file_name(second_named)), two).expect("write segment");
    }
    let _ = lightcone_wal::replay_into(dir, &Database::new(), None, |_| {});
});
