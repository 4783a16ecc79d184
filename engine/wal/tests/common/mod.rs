//! What the crash and power-cut tests share: the committing child and the recovery check.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use lightcone_mvcc::{ColumnDef, ColumnType, Database, ReadTx, Snapshot, TableDef, Value};
use lightcone_wal::{CommitLog, LogOptions};

/// Threads committing in the child.
pub const COMMITTERS: u64 = 4;

/// The child's work: opens the log in `dir`, creates table `pairs` if needed, then commits
/// forever from [`COMMITTERS`] threads. Each transaction inserts the two rows of one group
/// (ids `base + c·10⁷ + i`) and `ack <group>` is printed once the log says it is durable.
/// `on_open` sees the log first (e.g. to report its backend).
pub fn commit_pairs_forever(dir: &Path, base: u64, options: LogOptions, on_open: impl FnOnce(&CommitLog)) {
    let db = Database::new();
    let (log, _) = CommitLog::open(dir, &db, options, |_| {}).expect("the log opens");
    on_open(&log);
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
                    // After a power cut the log fails with EIO and this panics: the child is done.
                    log.wait(ticket.unwrap()).unwrap();
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "ack {group}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

/// Rows per group in table `pairs` of `snapshot` (each committed group must have 2).
pub fn group_sizes(snapshot: &Snapshot, table: lightcone_mvcc::TableId) -> BTreeMap<u64, usize> {
    let mut groups = BTreeMap::new();
    for (_, row) in snapshot.table(table).unwrap().scan() {
        if let Value::U64(g) = row[1] {
            *groups.entry(g).or_default() += 1;
        }
    }
    groups
}
