//! Snapshots end to end: write while the writer runs, restore + log tail, compaction, damage.

use std::path::Path;

use lightcone_mvcc::{ColumnDef, ColumnType, Database, IndexDef, ReadTx, Row, TableDef, TableId, Value};
use lightcone_snapshot::{
    compact_log, list_snapshots, load_snapshot, open_data_dir, write_snapshot, SnapshotError,
};
use lightcone_wal::{CommitLog, LogOptions};

fn options() -> LogOptions {
    LogOptions { segment_bytes_max: 8192, ..LogOptions::default() }
}

fn open(dir: &Path) -> (Database, CommitLog, lightcone_snapshot::OpenReport) {
    open_data_dir(dir, options(), |_| {}).unwrap()
}

fn setup(db: &Database, log: &CommitLog) -> TableId {
    let mut tx = db.begin();
    let def = TableDef::new(
        "item",
        vec![
            ColumnDef::new("id", ColumnType::U64),
            ColumnDef::new("name", ColumnType::String),
            ColumnDef::new("qty", ColumnType::I32),
        ],
    )
    .with_primary_key(0)
    .with_auto_inc(0)
    .with_index(IndexDef::btree(vec![2], false));
    let t = tx.create_table(def).unwrap();
    let (_, ticket) = tx.commit_with(|d| log.append(d));
    log.wait(ticket.unwrap()).unwrap();
    t
}

/// Transaction i inserts item i and deletes item i-5 (so deletes reach the snapshot too).
fn commit(db: &Database, log: &CommitLog, t: TableId, i: u64) {
    let pk = db.snapshot().index_id("item_id_idx_btree").unwrap();
    let mut tx = db.begin();
    tx.insert(t, vec![Value::U64(0), Value::String(format!("item {i}").into()), Value::I32(i as i32 % 10)])
        .unwrap();
    if i > 5 {
        tx.delete_by_unique(pk, &[Value::U64(i - 5)]).unwrap();
    }
    let (_, ticket) = tx.commit_with(|d| log.append(d));
    log.wait(ticket.unwrap()).unwrap();
}

fn rows(db: &Database, t: TableId) -> Vec<Row> {
    let mut rows: Vec<Row> = db.snapshot().table(t).unwrap().scan().map(|(_, r)| r).collect();
    rows.sort();
    rows
}

// Proves reopening restores the newest snapshot and replays only the log after it, giving the
// same rows, indexes, sequences and offset; and that compaction keeps that true.
#[test]
fn restore_is_snapshot_plus_log_tail_and_survives_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (db, log, report) = open(dir.path());
    assert!(report.snapshot.is_none());
    let t = setup(&db, &log);
    for i in 1..=200 {
        commit(&db, &log, t, i);
    }
    let info = write_snapshot(dir.path(), &db.snapshot()).unwrap();
    assert_eq!(
        manifest_header(&info.dir),
        "lightcone-snapshot 1",
        "no table dropped: readable by older binaries"
    );
    assert_eq!(info.tx_offset, 201);
    assert_eq!(info.rows, 5);
    for i in 201..=230 {
        commit(&db, &log, t, i);
    }
    let expected = rows(&db, t);
    drop(log);

    let (db2, log2, report) = open(dir.path());
    assert_eq!(report.snapshot.as_ref().map(|s| s.0), Some(201));
    assert_eq!(report.log.replay.applied, 30, "only the tail after the snapshot is replayed");
    assert_eq!(rows(&db2, t), expected);
    assert_eq!(db2.snapshot().tx_offset(), 231);
    let by_qty = db2.snapshot().index_id("item_qty_idx_btree").unwrap();
    assert_eq!(db2.snapshot().table(t).unwrap().index_seek(by_qty, &[Value::I32(7)]).unwrap().count(), 1);

    let before = lightcone_wal::segment::list_segments(&dir.path().join("log")).unwrap().len();
    let deleted = compact_log(dir.path(), 201).unwrap();
    assert!(deleted > 0 && deleted < before, "deleted {deleted} of {before}");
    commit(&db2, &log2, t, 231);
    let expected = rows(&db2, t);
    drop(log2);
    let (db3, _log3, _) = open(dir.path());
    assert_eq!(rows(&db3, t), expected);
    let mut tx = db3.begin();
    let (_, row) = tx.insert(t, vec![Value::U64(0), Value::String("next".into()), Value::I32(0)]).unwrap();
    assert_eq!(row[0], Value::U64(232), "sequence restored");
}

// Proves a snapshot written while the writer keeps committing holds exactly one version.
#[test]
fn snapshot_during_writes_is_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let (db, log, _) = open(dir.path());
    let t = setup(&db, &log);
    for i in 1..=2000 {
        commit(&db, &log, t, i);
    }
    let snapshot = db.snapshot();
    let expected = {
        let mut r: Vec<Row> = snapshot.table(t).unwrap().scan().map(|(_, r)| r).collect();
        r.sort();
        r
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 2001..=2500 {
                commit(&db, &log, t, i);
            }
        });
        let info = write_snapshot(dir.path(), &snapshot).unwrap();
        let loaded = load_snapshot(&info.dir).unwrap();
        assert_eq!(rows(&loaded, t), expected);
        assert_eq!(loaded.snapshot().tx_offset(), snapshot.tx_offset());
    });
}

// Proves a damaged snapshot file is an error naming it, an unfinished snapshot is ignored, and
// a log that ends before the snapshot (it lagged) is handled.
#[test]
fn damaged_unfinished_and_ahead_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let (db, log, _) = open(dir.path());
    let t = setup(&db, &log);
    for i in 1..=50 {
        commit(&db, &log, t, i);
    }
    let info = write_snapshot(dir.path(), &db.snapshot()).unwrap();
    drop(log);

    // An unfinished snapshot directory (a crash while writing) is ignored and removed.
    let tmp = dir.path().join("snapshots").join(format!("{:020}.tmp", 999));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("catalog.bin"), b"half").unwrap();
    let (db2, log2, report) = open(dir.path());
    assert_eq!(report.snapshot.map(|s| s.0), Some(51));
    assert!(!tmp.exists());
    assert_eq!(rows(&db2, t), rows(&db, t));
    drop(log2);

    // A flipped byte in a table file.
    let file = info.dir.join(format!("table-{t}.rows"));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[3] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    match open_data_dir(dir.path(), options(), |_| {}) {
        Err(SnapshotError::Corrupt { file: f, .. }) => assert_eq!(f, file),
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
    bytes[3] ^= 1;
    std::fs::write(&file, &bytes).unwrap();

    // A damaged manifest.
    let manifest = info.dir.join("MANIFEST");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("tx_offset 51", "tx_offset 52")).unwrap();
    assert!(matches!(open_data_dir(dir.path(), options(), |_| {}), Err(SnapshotError::Corrupt { .. })));
    std::fs::write(&manifest, text).unwrap();

    // The log lost its last records (it lagged the snapshot): the snapshot covers them, the
    // covered segments go, and the database carries on and reopens.
    let segments = lightcone_wal::segment::list_segments(&dir.path().join("log")).unwrap();
    for (_, path) in &segments {
        std::fs::remove_file(path).unwrap();
    }
    std::fs::write(
        dir.path().join("log").join(lightcone_wal::segment::segment_file_name(1)),
        lightcone_wal::segment::segment_header(1),
    )
    .unwrap();
    let (db3, log3, _) = open(dir.path());
    assert_eq!(db3.snapshot().tx_offset(), 51);
    commit(&db3, &log3, t, 51);
    let expected = rows(&db3, t);
    drop(log3);
    let (db4, _log4, _) = open(dir.path());
    assert_eq!(rows(&db4, t), expected);
    assert_eq!(list_snapshots(dir.path()).unwrap().len(), 1);
}

fn manifest_header(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("MANIFEST")).unwrap().lines().next().unwrap().to_string()
}

fn commit_logged(log: &CommitLog, tx: lightcone_mvcc::WriteTx<'_>) {
    let (_, ticket) = tx.commit_with(|d| log.append(d));
    log.wait(ticket.unwrap()).unwrap();
}

// Proves dropped tables survive the whole durability path: a drop (and a create reusing the
// name) replays from the log, a snapshot taken after the drop restores with the same ids, and
// tables created after the snapshot (in the log tail) get the ids they got originally — both
// from snapshot + tail and from the log alone.
#[test]
fn dropped_tables_through_log_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let def = |name: &str| {
        TableDef::new(name, vec![ColumnDef::new("id", ColumnType::U64), ColumnDef::new("v", ColumnType::I32)])
            .with_primary_key(0)
    };
    let (kept, recreated, late);
    let before_drop_ids;
    {
        let (db, log, _) = open(dir.path());
        let mut tx = db.begin();
        let gone = tx.create_table(def("gone")).unwrap();
        kept = tx.create_table(def("kept")).unwrap();
        let last = tx.create_table(def("last")).unwrap();
        tx.insert(gone, vec![Value::U64(1), Value::I32(1)]).unwrap();
        tx.insert(kept, vec![Value::U64(2), Value::I32(2)]).unwrap();
        commit_logged(&log, tx);
        before_drop_ids = db.snapshot().next_ids();
        let mut tx = db.begin();
        tx.drop_table(gone).unwrap();
        tx.drop_table(last).unwrap();
        recreated = tx.create_table(def("gone")).unwrap();
        tx.insert(recreated, vec![Value::U64(3), Value::I32(3)]).unwrap();
        commit_logged(&log, tx);
        // `gone` and `last` left gaps below `recreated`: a version-2 manifest.
        let info = write_snapshot(dir.path(), &db.snapshot()).unwrap();
        assert_eq!(manifest_header(&info.dir), "lightcone-snapshot 2");
        let mut tx = db.begin();
        let scratch = tx.create_table(def("scratch")).unwrap();
        commit_logged(&log, tx);
        let mut tx = db.begin();
        tx.drop_table(scratch).unwrap();
        commit_logged(&log, tx);
        // The snapshot: `scratch` (the highest id) is dropped, so only the manifest knows its
        // id is used up.
        let info = write_snapshot(dir.path(), &db.snapshot()).unwrap();
        assert_eq!(manifest_header(&info.dir), "lightcone-snapshot 2");
        let mut tx = db.begin();
        late = tx.create_table(def("late")).unwrap();
        tx.insert(late, vec![Value::U64(4), Value::I32(4)]).unwrap();
        commit_logged(&log, tx);
    }
    assert_eq!(recreated, before_drop_ids.0);
    assert_eq!(late, recreated + 2, "`scratch` took the id in between");
    let check = |db: &Database| {
        let snap = db.snapshot();
        assert_eq!(snap.table_ids(), vec![kept, recreated, late]);
        assert_eq!(snap.table_id("gone").unwrap(), recreated);
        assert_eq!(rows(db, recreated), vec![vec![Value::U64(3), Value::I32(3)]]);
        assert_eq!(rows(db, late), vec![vec![Value::U64(4), Value::I32(4)]]);
        assert_eq!(snap.next_ids().0, late + 1);
    };
    let (db, _log, report) = open(dir.path());
    assert!(report.snapshot.is_some(), "restored from the snapshot");
    check(&db);
    drop((db, _log));
    // The log alone (snapshot removed) gives the same database.
    for (_, dir) in list_snapshots(dir.path()).unwrap() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    let (db, _log, report) = open(dir.path());
    assert!(report.snapshot.is_none());
    check(&db);
}
