//! Crash tests: a child process commits under load and is killed with SIGKILL at a random
//! moment; after reopening, every transaction it acknowledged is present and no transaction is
//! half-applied. (A SIGKILL keeps the page cache, so this checks the log's framing, recovery and
//! ordering; power loss is the `powerloss` tool's job.)
//!
//! `LIGHTCONE_CRASH_CYCLES` sets the number of kill/reopen cycles (default 20).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lightcone_mvcc::{ColumnDef, ColumnType, Database, ReadTx, TableDef, Value};
use lightcone_wal::{CommitLog, LogOptions};

const CHILD_DIR_ENV: &str = "LIGHTCONE_CRASH_CHILD_DIR";
const CHILD_BASE_ENV: &str = "LIGHTCONE_CRASH_CHILD_BASE";
const COMMITTERS: u64 = 4;

fn open(dir: &Path) -> (Database, CommitLog) {
    let db = Database::new();
    let (log, _) = CommitLog::open(dir, &db, LogOptions::default(), |_| {}).expect("log opens after a crash");
    (db, log)
}

/// Not a test on its own: the body of the child process (returns at once unless spawned by
/// the crash test). Each transaction inserts two rows of one group; it prints `ack <group>`
/// once the commit log says the transaction is durable.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else { return };
    let base: u64 = std::env::var(CHILD_BASE_ENV).ok().and_then(|b| b.parse().ok()).unwrap_or(0);
    let (db, log) = open(Path::new(&dir));
    let table = match db.snapshot().table_id("pairs") {
        Ok(t) => t,
        Err(_) => {
            let mut tx = db.begin();
            let def = TableDef::new(
                "pairs",
                vec![ColumnDef::new("k", ColumnType::U64), ColumnDef::new("group", ColumnType::U64)],
            )
            .with_primary_key(0);
            let t = tx.create_table(def).unwrap();
            let (_, ticket) = tx.commit_with(|d| log.append(d));
            log.wait(ticket.unwrap()).unwrap();
            t
        }
    };
    let stdout = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for c in 0..COMMITTERS {
            let (db, log, stdout) = (&db, &log, &stdout);
            s.spawn(move || {
                for i in 0.. {
                    let group = base + c * 10_000_000 + i;
                    let mut tx = db.begin();
                    tx.insert(table, vec![Value::U64(group * 2), Value::U64(group)]).unwrap();
                    tx.insert(table, vec![Value::U64(group * 2 + 1), Value::U64(group)]).unwrap();
                    let (_, ticket) = tx.commit_with(|d| log.append(d));
                    log.wait(ticket.unwrap()).unwrap();
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "ack {group}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

// Proves that across repeated SIGKILLs under concurrent commits, every acknowledged
// transaction survives and every surviving transaction is whole.
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
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acked = BTreeSet::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(group) = line.strip_prefix("ack ").and_then(|g| g.parse::<u64>().ok()) {
                    acked.insert(group);
                }
            }
            acked
        });
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(150 + x % 350));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        assert!(!acked.is_empty() || cycle > 0, "the child never acknowledged a commit");
        acked_total += acked.len();

        let (db, log) = open(dir.path());
        let snapshot = db.snapshot();
        let table = snapshot.table_id("pairs").expect("the table's creation was acknowledged");
        let mut groups: BTreeMap<u64, usize> = BTreeMap::new();
        for (_, row) in snapshot.table(table).unwrap().scan() {
            if let Value::U64(g) = row[1] {
                *groups.entry(g).or_default() += 1;
            }
        }
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
