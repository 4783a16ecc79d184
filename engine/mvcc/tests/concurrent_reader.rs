//! A reader iterating snapshots on other threads while the writer commits 100k transactions
//! sees exactly its snapshot's version every time.

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lightcone_mvcc::{ColumnDef, ColumnType, Database, ReadTx, Snapshot, TableDef, TableId, Value};

const COMMITS: u64 = 100_000;
const WINDOW: u64 = 50;

/// After commit `n` (tx i inserts row i, deletes row i-WINDOW and doubles row i-1's value),
/// the table holds ids max(1, n-WINDOW+1)..=n with value 2·id, except the newest at 1·id.
fn expected_rows(n: u64) -> Vec<(u64, u64)> {
    let first = n.saturating_sub(WINDOW - 1).max(1);
    (first..=n).map(|id| (id, if id == n { id } else { 2 * id })).collect()
}

fn rows_of(snapshot: &Snapshot, table: TableId, pk: u32) -> Vec<(u64, u64)> {
    let view = snapshot.table(table).unwrap();
    let as_pair = |row: Vec<Value>| match (&row[0], &row[1]) {
        (Value::U64(a), Value::U64(b)) => (*a, *b),
        other => panic!("unexpected row {other:?}"),
    };
    let mut scanned: Vec<(u64, u64)> = view.scan().map(|(_, r)| as_pair(r)).collect();
    scanned.sort_unstable();
    let indexed: Vec<(u64, u64)> = view
        .index_range(pk, Bound::Unbounded, Bound::Unbounded)
        .unwrap()
        .map(|rid| as_pair(view.get(rid).unwrap()))
        .collect();
    assert_eq!(scanned, indexed, "table scan and pk index disagree within one snapshot");
    scanned
}

// Proves snapshot isolation under a committing writer: no reader ever sees a partial
// transaction or a version other than the one it took, including one held for the whole run.
#[test]
fn readers_see_exactly_their_snapshot_during_100k_commits() {
    let db = Arc::new(Database::new());
    let mut tx = db.begin();
    let def =
        TableDef::new("t", vec![ColumnDef::new("id", ColumnType::U64), ColumnDef::new("v", ColumnType::U64)])
            .with_primary_key(0);
    let table = tx.create_table(def).unwrap();
    let pk = tx.table(table).unwrap().schema().index_ids[0];
    tx.commit();

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (db, done) = (Arc::clone(&db), Arc::clone(&done));
            std::thread::spawn(move || {
                let long_lived = db.snapshot();
                let long_lived_rows = rows_of(&long_lived, table, pk);
                let mut checks = 0u64;
                while !done.load(Ordering::Acquire) {
                    let snapshot = db.snapshot();
                    let n = snapshot.tx_offset() - 1; // offset 1 created the table
                    assert_eq!(rows_of(&snapshot, table, pk), expected_rows(n), "snapshot at commit {n}");
                    assert_eq!(
                        rows_of(&long_lived, table, pk),
                        long_lived_rows,
                        "long-lived snapshot changed"
                    );
                    checks += 1;
                }
                checks
            })
        })
        .collect();

    for i in 1..=COMMITS {
        let mut tx = db.begin();
        tx.insert(table, vec![Value::U64(i), Value::U64(i)]).unwrap();
        if i > WINDOW {
            assert!(tx.delete_by_unique(pk, &[Value::U64(i - WINDOW)]).unwrap().is_some());
        }
        if i > 1 {
            tx.update_by_unique(pk, vec![Value::U64(i - 1), Value::U64(2 * (i - 1))]).unwrap();
        }
        let delta = tx.commit();
        assert_eq!(delta.tx_offset, i + 1);
    }
    done.store(true, Ordering::Release);
    for r in readers {
        let checks = r.join().unwrap();
        assert!(checks > 0, "a reader never ran");
    }
    assert_eq!(rows_of(&db.snapshot(), table, pk), expected_rows(COMMITS));
}

// Proves a snapshot held across many small transactions on a large (multi-level) table keeps
// its version, whichever mode (lent or copy-on-write) each transaction runs in.
#[test]
fn held_snapshot_survives_commits_on_a_large_table() {
    let db = Database::new();
    let mut tx = db.begin();
    let def =
        TableDef::new("t", vec![ColumnDef::new("id", ColumnType::U64), ColumnDef::new("v", ColumnType::U64)])
            .with_primary_key(0);
    let table = tx.create_table(def).unwrap();
    for i in 0..200_000u64 {
        tx.insert(table, vec![Value::U64(i), Value::U64(i)]).unwrap();
    }
    tx.commit();
    for i in 200_000..200_010u64 {
        let mut tx = db.begin();
        tx.insert(table, vec![Value::U64(i), Value::U64(i)]).unwrap();
        tx.commit();
    }
    let held = db.snapshot();
    let rows = held.table(table).unwrap().row_count();
    for i in 300_000..300_100u64 {
        let mut tx = db.begin();
        tx.insert(table, vec![Value::U64(i), Value::U64(i)]).unwrap();
        tx.commit();
        assert_eq!(held.table(table).unwrap().row_count(), rows, "after commit {i}");
    }
    assert_eq!(held.table(table).unwrap().scan().count() as u64, rows);
}
