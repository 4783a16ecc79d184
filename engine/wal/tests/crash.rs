//! Crash tests: a child process commits under load and is killed with SIGKILL at a random
//! moment; after reopening, every transaction it acknowledged is present and no transaction is
//! half-applied. (A SIGKILL keeps the page cache, so this checks the log's framing, recovery and
//! ordering; power loss is the `powerloss` tool's job.)
//!
//! `LIGHTCONE_CRASH_CYCLES` sets the number of kill/reopen cycles (default 20).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lightcone_mvcc::{Database, ReadTx};
use lightcone_wal::{CommitLog, LogOptions};

const CHILD_DIR_ENV: &str = "LIGHTCONE_CRASH_CHILD_DIR";
const CHILD_BASE_ENV: &str = "LIGHTCONE_CRASH_CHILD_BASE";
/// `0` makes the child use the page-cache write path instead of direct I/O.
const CHILD_DIRECT_ENV: &str = "LIGHTCONE_CRASH_CHILD_DIRECT";
/// The child's `segment_bytes_max`: small in some cycles, so kills land during rotations too.
const CHILD_SEGMENT_ENV: &str = "LIGHTCONE_CRASH_CHILD_SEGMENT";
/// Segments of this size rotate many times a second under the child's load.
const SMALL_SEGMENT_BYTES: u64 = 64 << 10;

fn open(dir: &Path) -> (Database, CommitLog) {
    let db = Database::new();
    let (log, _) = CommitLog::open(dir, &db, LogOptions::default(), |_| {}).expect("log opens after a crash");
    (db, log)
}

/// Not a test on its own: the body of the child process (returns at once unless spawned by
/// the crash test); see [`common::commit_pairs_forever`].
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else { return };
    let base: u64 = std::env::var(CHILD_BASE_ENV).ok().and_then(|b| b.parse().ok()).unwrap_or(0);
    let direct_io = std::env::var(CHILD_DIRECT_ENV).as_deref() != Ok("0");
    let segment_bytes_max = std::env::var(CHILD_SEGMENT_ENV)
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(LogOptions::default().segment_bytes_max);
    common::commit_pairs_forever(
        Path::new(&dir),
        base,
        LogOptions { direct_io, segment_bytes_max, ..LogOptions::default() },
        |_| {},
    );
}

// Proves that across repeated SIGKILLs under concurrent commits, every acknowledged
// transaction survives and every surviving transaction is whole. Every cycle waits for the
// child's first acknowledgement before its random delay, so each kill lands while commits
// (not the child's own recovery) are under way; half the cycles use small segments, so kills
// also land during segment rotations.
#[test]
fn sigkill_during_commits_loses_no_acknowledged_transaction() {
    let cycles: u64 = std::env::var("LIGHTCONE_CRASH_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked_total = 0usize;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .env(CHILD_BASE_ENV, ((cycle + 1) * 1_000_000_000).to_string())
            .env(CHILD_DIRECT_ENV, if cycle % 2 == 0 { "1" } else { "0" }) // both write paths
            .env(CHILD_SEGMENT_ENV, if cycle % 4 >= 2 { SMALL_SEGMENT_BYTES } else { 64 << 20 }.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (acks, acked_groups) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(group) = line.strip_prefix("ack ").and_then(|g| g.parse::<u64>().ok()) {
                    let _ = acks.send(group);
                }
            }
        });
        let first = acked_groups.recv_timeout(Duration::from_secs(60));
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if first.is_ok() {
            std::thread::sleep(Duration::from_millis(20 + x % 400));
        }
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        reader.join().unwrap();
        let acked: BTreeSet<u64> = first.iter().copied().chain(acked_groups.try_iter()).collect();
        assert!(!acked.is_empty(), "cycle {cycle}: the child acknowledged no commit within 60 s");
        acked_total += acked.len();

        let (db, log) = open(dir.path());
        let snapshot = db.snapshot();
        let table = snapshot.table_id("pairs").expect("the table's creation was acknowledged");
        let groups = common::group_sizes(&snapshot, table);
        for group in &acked {
            assert_eq!(groups.get(group), Some(&2), "cycle {cycle}: acknowledged group {group} lost or torn");
        }
        if let Some((g, n)) = groups.iter().find(|(_, &n)| n != 2) {
            panic!("cycle {cycle}: group {g} half-applied ({n} of 2 rows)");
        }
        drop(log);
    }
    assert!(acked_total > 0);
}
