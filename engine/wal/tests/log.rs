//! Commit log end to end: write through group commit, reopen, replay; and what each kind of
//! damage to the files leads to.

use std::path::Path;

use lightcone_mvcc::{ColumnDef, ColumnType, Database, IndexDef, ReadTx, Row, TableDef, TableId, Value};
use lightcone_wal::frame::{decode_seal, SEAL_BYTES};
use lightcone_wal::segment::list_segments;
use lightcone_wal::{BackendChoice, CommitLog, Durability, LogOptions, WalError};
use proptest::prelude::*;

fn options(segment_bytes_max: u64) -> LogOptions {
    LogOptions {
        durability: Durability::Fsync,
        backend: BackendChoice::Auto,
        segment_bytes_max,
        direct_io: true,
    }
}

fn open(dir: &Path, segment_bytes_max: u64) -> (Database, CommitLog) {
    open_with(dir, options(segment_bytes_max))
}

fn open_with(dir: &Path, options: LogOptions) -> (Database, CommitLog) {
    let db = Database::new();
    let (log, _) = CommitLog::open(dir, &db, options, |_| {}).unwrap();
    (db, log)
}

fn create_table(db: &Database, log: &CommitLog) -> TableId {
    let mut tx = db.begin();
    let def = TableDef::new(
        "kv",
        vec![ColumnDef::new("k", ColumnType::U64), ColumnDef::new("v", ColumnType::String)],
    )
    .with_primary_key(0)
    .with_auto_inc(0)
    .with_index(IndexDef::btree(vec![1], false));
    let t = tx.create_table(def).unwrap();
    let (_, ticket) = tx.commit_with(|d| log.append(d));
    log.wait(ticket.unwrap()).unwrap();
    t
}

fn rows(db: &Database, t: TableId) -> Vec<Row> {
    let mut rows: Vec<Row> =
        db.snapshot().table(t).map(|v| v.scan().map(|(_, r)| r).collect()).unwrap_or_default();
    rows.sort();
    rows
}

/// Commits `n` transactions of a few inserts/updates/deletes each.
fn commit_many(db: &Database, log: &CommitLog, t: TableId, n: u64, seed: u64) {
    let pk = db.snapshot().index_id("kv_k_idx_btree").unwrap();
    let mut x = seed;
    for i in 0..n {
        let mut tx = db.begin();
        for _ in 0..3 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let k = (x >> 40) % 50 + 1;
            match (x >> 20) % 3 {
                0 => {
                    let _ = tx.insert(t, vec![Value::U64(0), Value::String(format!("v{i}").into())]);
                }
                1 => {
                    let _ =
                        tx.update_by_unique(pk, vec![Value::U64(k), Value::String(format!("u{i}").into())]);
                }
                _ => {
                    let _ = tx.delete_by_unique(pk, &[Value::U64(k)]);
                }
            }
        }
        let (_, ticket) = tx.commit_with(|d| log.append(d));
        log.wait(ticket.unwrap()).unwrap();
    }
}

/// `threads` threads each commit `each` one-row inserts, waiting for each to be durable.
fn commit_from_threads(db: &Database, log: &CommitLog, t: TableId, threads: u64, each: u64) {
    std::thread::scope(|s| {
        for w in 0..threads {
            s.spawn(move || {
                for i in 0..each {
                    let mut tx = db.begin();
                    tx.insert(t, vec![Value::U64(w * 1000 + i + 1), Value::String("x".into())]).unwrap();
                    let (_, ticket) = tx.commit_with(|d| log.append(d));
                    log.wait(ticket.unwrap()).unwrap();
                }
            });
        }
    });
}

// Proves committed transactions survive a close and reopen, across several segments, with the
// same rows, offsets and sequence state.
#[test]
fn reopen_replays_everything_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = open(dir.path(), 4096);
    eprintln!("commit log backend: {:?}", log.backend());
    let t = create_table(&db, &log);
    commit_many(&db, &log, t, 300, 7);
    let expected = rows(&db, t);
    let offset = db.snapshot().tx_offset();
    drop(log);
    let segments = lightcone_wal::segment::list_segments(dir.path()).unwrap();
    assert!(segments.len() > 3, "only {} segments: rotation did not happen", segments.len());

    let (db2, log2) = open(dir.path(), 4096);
    assert_eq!(rows(&db2, t), expected);
    assert_eq!(db2.snapshot().tx_offset(), offset);
    assert_eq!(
        db2.snapshot().table(t).unwrap().sequence_next(),
        db.snapshot().table(t).unwrap().sequence_next()
    );
    // And it keeps going where it stopped.
    commit_many(&db2, &log2, t, 20, 99);
    let expected2 = rows(&db2, t);
    drop(log2);
    let (db3, _log3) = open(dir.path(), 4096);
    assert_eq!(rows(&db3, t), expected2);
}

// Proves many threads committing at once share syncs (group commit) and every acknowledged
// transaction is in the log.
#[test]
fn concurrent_committers_are_all_durable() {
    for direct_io in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        // Small segments, so the threads also rotate while batches are written and synced.
        let (db, log) = open_with(dir.path(), LogOptions { direct_io, ..options(16 << 10) });
        let t = create_table(&db, &log);
        commit_from_threads(&db, &log, t, 8, 200);
        let expected = rows(&db, t);
        assert_eq!(expected.len(), 1600);
        drop(log);
        assert!(lightcone_wal::segment::list_segments(dir.path()).unwrap().len() > 3, "segments rotated");
        let (db2, _log2) = open(dir.path(), 1 << 20);
        assert_eq!(rows(&db2, t), expected, "direct_io: {direct_io}");
    }
}

/// Writes a log of `n` commits; returns the table's rows as of each logged tx offset.
fn write_log(dir: &Path, n: u64, segment_bytes_max: u64) -> std::collections::BTreeMap<u64, Vec<Row>> {
    let (db, log) = open(dir, segment_bytes_max);
    let t = create_table(&db, &log);
    let mut states = std::collections::BTreeMap::new();
    states.insert(db.snapshot().tx_offset(), rows(&db, t));
    for i in 0..n {
        commit_many(&db, &log, t, 1, i + 1);
        states.insert(db.snapshot().tx_offset(), rows(&db, t));
    }
    states
}

/// Every record of the log in `dir`: its segment and the byte offset where it ends.
fn record_ends(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut ends = Vec::new();
    lightcone_wal::scan(dir, |segment, at, frame| {
        ends.push((segment.to_path_buf(), at + frame.encoded_len() as u64));
        Ok(std::ops::ControlFlow::Continue(()))
    })
    .unwrap();
    ends
}

/// One durability mark or record of a segment, as laid out on disk.
#[derive(Debug, Clone)]
struct Item {
    /// The offset a mark says was durable; `None` for a record.
    mark: Option<u64>,
    /// The record's tx offset (for a mark: the next record's).
    tx: u64,
    start: u64,
    end: u64,
}

/// The marks and records of a segment's bytes, in order, up to the first that does not read.
fn items(segment: &[u8]) -> Vec<Item> {
    use lightcone_wal::frame::{decode_frame, decode_mark, MARK_BYTES};
    let mut items = Vec::new();
    let mut pos = 16usize;
    let mut next = u64::from_le_bytes(segment[8..16].try_into().unwrap());
    loop {
        if let Ok(durable) = decode_mark(&segment[pos..]) {
            items.push(Item {
                mark: Some(durable),
                tx: next,
                start: pos as u64,
                end: (pos + MARK_BYTES) as u64,
            });
            pos += MARK_BYTES;
        } else if let Ok(frame) = decode_frame(&segment[pos..]) {
            let end = pos + frame.encoded_len();
            items.push(Item { mark: None, tx: frame.tx_offset, start: pos as u64, end: end as u64 });
            next = frame.tx_offset + 1;
            pos = end;
        } else {
            return items;
        }
    }
}

/// A segment holding the records of `segment` with durability marks where `marks` says:
/// `(before tx, says durable up to)`. Format version 2 if any mark is given, else 1.
fn relabel(segment: &[u8], marks: &[(u64, u64)]) -> Vec<u8> {
    let mut out = segment[..16].to_vec();
    out[..8].copy_from_slice(if marks.is_empty() { b"LCWAL01\n" } else { b"LCWAL02\n" });
    for item in items(segment).iter().filter(|i| i.mark.is_none()) {
        if let Some(&(_, durable)) = marks.iter().find(|(before, _)| *before == item.tx) {
            let at = out.len();
            out.resize(at + lightcone_wal::frame::MARK_BYTES, 0);
            lightcone_wal::frame::write_mark(&mut out[at..], durable);
        }
        out.extend_from_slice(&segment[item.start as usize..item.end as usize]);
    }
    out
}

/// Where tx `tx`'s record starts and ends in `segment`.
fn record_span(segment: &[u8], tx: u64) -> (usize, usize) {
    let item = items(segment).into_iter().find(|i| i.mark.is_none() && i.tx == tx).unwrap();
    (item.start as usize, item.end as usize)
}

// Proves the writer starts every batch with a durability mark that is true: it names a
// transaction before the batch's first, and marks never go backwards.
#[test]
fn every_batch_starts_with_a_true_durability_mark() {
    for direct_io in [true, false] {
        every_batch_starts_with_a_true_durability_mark_on(direct_io);
    }
}

fn every_batch_starts_with_a_true_durability_mark_on(direct_io: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = open_with(dir.path(), LogOptions { direct_io, ..options(1 << 20) });
    let t = create_table(&db, &log);
    commit_from_threads(&db, &log, t, 8, 100);
    drop(log);
    let segment = lightcone_wal::segment::list_segments(dir.path()).unwrap().pop().unwrap().1;
    let bytes = std::fs::read(&segment).unwrap();
    assert_eq!(&bytes[..8], b"LCWAL03\n");
    let items = items(&bytes);
    assert_eq!(items.iter().filter(|i| i.mark.is_none()).count(), 801);
    assert!(items[0].mark.is_some(), "the first batch starts with a mark");
    let marks: Vec<(u64, u64)> = items.iter().filter_map(|i| i.mark.map(|m| (m, i.tx))).collect();
    assert!(marks.len() < 801, "801 commits from 8 threads made {} batches: no group commit", marks.len());
    for pair in marks.windows(2) {
        assert!(pair[0].0 <= pair[1].0, "marks went backwards: {marks:?}");
    }
    for (durable, before) in marks {
        assert!(durable < before, "a mark says tx {durable} was durable before tx {before} was written");
    }
}

// Proves a power cut that kept a later unsynced write but lost an earlier one (a hole with
// whole records after it) is a lost tail when no durability mark covers the hole: the log is
// cut before it and the database opens at the last transaction before it. With a later mark
// saying the damaged transaction was durable, the same damage is corruption of acknowledged
// data: a typed error naming the byte.
#[test]
fn a_hole_in_the_unsynced_tail_is_cut_off_unless_a_mark_covers_it() {
    let template = tempfile::tempdir().unwrap();
    // tx 1 creates the table; some commits change nothing and are not logged.
    let states = write_log(template.path(), 20, 1 << 20);
    let last = *states.keys().last().unwrap();
    assert!(last >= 13, "only {last} transactions logged");
    let (name, original) = {
        let path = lightcone_wal::segment::list_segments(template.path()).unwrap().pop().unwrap().1;
        (path.file_name().unwrap().to_owned(), std::fs::read(&path).unwrap())
    };
    // Batches as two disk workers lay them out: each of tx 1..=9 synced before the next was
    // taken; then batch {10, 11} taken with 9 durable, and batch {12, ..} taken while {10, 11}
    // was still syncing (mark 9) or after it had synced (mark 11).
    let synced_in_turn: Vec<(u64, u64)> = (1..=10).map(|tx| (tx, tx - 1)).collect();
    for (later_mark, covered) in [(9, false), (11, true)] {
        let mut marks = synced_in_turn.clone();
        marks.push((12, later_mark));
        let mut segment = relabel(&original, &marks);
        // The power cut lost tx 11's page (zeros: the preallocated space shows through).
        let (start, end) = record_span(&segment, 11);
        segment[start..end].fill(0);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(&name), &segment).unwrap();
        let db = Database::new();
        let opened = CommitLog::open(dir.path(), &db, options(1 << 20), |_| {});
        if covered {
            match opened {
                Err(WalError::Corrupt { offset, reason, .. }) => {
                    assert_eq!(offset, start as u64);
                    assert!(reason.contains("says tx 11 was durable"), "{reason}");
                }
                other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
            }
            continue;
        }
        let (log, recovery) = opened.expect("a hole no mark covers is a lost tail");
        let torn = recovery.replay.scan.torn_tail.clone().expect("the hole is reported");
        assert_eq!(torn.valid_bytes, start as u64);
        assert_eq!(torn.records_after, last - 11, "tx 12 and later were whole but never durable");
        assert_eq!(db.snapshot().tx_offset(), 10);
        assert_eq!(rows(&db, 0), states[&10]);
        // The log carries on after tx 10, and reopens to the same state plus the new commit.
        commit_many(&db, &log, 0, 1, 77);
        let (expected, at) = (rows(&db, 0), db.snapshot().tx_offset());
        drop(log);
        let (db2, _log2) = open(dir.path(), 1 << 20);
        assert_eq!(db2.snapshot().tx_offset(), at);
        assert_eq!(rows(&db2, 0), expected);
    }

    // A format-1 segment has no marks to tell: whole records after damage make it corruption.
    let mut old = relabel(&original, &[]);
    let (start, end) = record_span(&old, 11);
    old[start..end].fill(0);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(&name), &old).unwrap();
    match CommitLog::open(dir.path(), &Database::new(), options(1 << 20), |_| {}) {
        Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, start as u64),
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
}

// Proves a clean close leaves a last durability mark covering every record, so damage to the
// last records of a closed log is corruption (an error naming the byte), not a lost write.
#[test]
fn damage_after_a_clean_close_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 10, 1 << 20);
    let path = lightcone_wal::segment::list_segments(dir.path()).unwrap().pop().unwrap().1;
    let closed_once = items(&std::fs::read(&path).unwrap()).len();
    for _ in 0..2 {
        drop(open(dir.path(), 1 << 20)); // nothing appended: no second closing mark
    }
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(items(&bytes).len(), closed_once);
    let all = items(&bytes);
    let closing = all.last().unwrap().clone();
    assert!(closing.mark.is_some(), "the log ends with a mark: {all:?}");
    let last = all.iter().rev().find(|i| i.mark.is_none()).unwrap().clone();
    assert_eq!(closing.mark, Some(last.tx), "the closing mark covers the last record");
    bytes[last.start as usize + 30] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    match CommitLog::open(dir.path(), &Database::new(), options(1 << 20), |_| {}) {
        Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, last.start),
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
}

// Proves a log written before durability marks existed (format 1) opens, and the segment it
// carries on appending to is relabelled the current format (3) so the marks of new batches
// are read.
#[test]
fn a_format_1_log_opens_and_carries_on_as_format_3() {
    let template = tempfile::tempdir().unwrap();
    let states = write_log(template.path(), 8, 1 << 20);
    let last = *states.keys().last().unwrap();
    let path = lightcone_wal::segment::list_segments(template.path()).unwrap().pop().unwrap().1;
    let old = relabel(&std::fs::read(&path).unwrap(), &[]);
    assert!(items(&old).iter().all(|i| i.mark.is_none()));
    let dir = tempfile::tempdir().unwrap();
    let segment = dir.path().join(path.file_name().unwrap());
    std::fs::write(&segment, &old).unwrap();
    let (db, log) = open(dir.path(), 1 << 20);
    assert_eq!(rows(&db, 0), states[&last]);
    commit_many(&db, &log, 0, 3, 5);
    let (expected, at) = (rows(&db, 0), db.snapshot().tx_offset());
    drop(log);
    let bytes = std::fs::read(&segment).unwrap();
    assert_eq!(&bytes[..8], b"LCWAL03\n");
    assert!(items(&bytes).iter().any(|i| i.mark.is_some()), "new batches carry marks");
    let (db2, _log2) = open(dir.path(), 1 << 20);
    assert_eq!(db2.snapshot().tx_offset(), at);
    assert_eq!(rows(&db2, 0), expected);
}

// Proves cutting the last segment anywhere loses only the torn record: reopening truncates it
// and recovers exactly the transactions whose records were whole.
#[test]
fn truncated_tail_recovers_a_prefix() {
    let template = tempfile::tempdir().unwrap();
    let states = write_log(template.path(), 40, 1 << 20);
    let segment = lightcone_wal::segment::list_segments(template.path()).unwrap().pop().unwrap().1;
    let full = std::fs::read(&segment).unwrap();
    // A cut after a whole durability mark or record loses nothing that was there.
    let boundaries: Vec<u64> = std::iter::once(16).chain(items(&full).into_iter().map(|i| i.end)).collect();
    // After the last record the segment holds preallocated zeros; a cut there loses nothing.
    let data_end = *boundaries.last().unwrap();
    assert!(data_end < full.len() as u64, "the writer preallocates ahead of its records");
    assert!(full[data_end as usize..].iter().all(|&b| b == 0));
    let mut x: u64 = 3;
    for _ in 0..30 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        let cut = 16 + (x >> 33) as usize % (full.len() - 16);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(segment.file_name().unwrap()), &full[..cut]).unwrap();
        let db = Database::new();
        let (log, recovery) = CommitLog::open(dir.path(), &db, options(1 << 20), |_| {}).unwrap();
        let applied = recovery.replay.applied as usize;
        let whole = boundaries.iter().copied().filter(|&b| b <= cut as u64).max().unwrap();
        match &recovery.replay.scan.torn_tail {
            None => {
                assert_eq!(whole, (cut as u64).min(data_end), "cut at {cut} inside a record went unnoticed")
            }
            Some(torn) => assert_eq!(torn.valid_bytes, whole, "cut at {cut}"),
        }
        let at = db.snapshot().tx_offset();
        assert_eq!(at, applied as u64);
        if applied > 0 {
            assert_eq!(rows(&db, 0), states[&at], "cut at {cut}");
        }
        // The torn bytes are gone, so the log accepts new transactions after the prefix.
        drop(log);
        let db2 = Database::new();
        let (_log, again) = CommitLog::open(dir.path(), &db2, options(1 << 20), |_| {}).unwrap();
        assert!(again.replay.scan.torn_tail.is_none());
        assert_eq!(again.replay.applied as usize, applied);
    }
}

// Proves damage before the tail is a typed error naming the file and byte — never silent loss.
#[test]
fn corruption_before_the_tail_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 60, 2048);
    let segments = lightcone_wal::segment::list_segments(dir.path()).unwrap();
    assert!(segments.len() >= 3);
    // A flipped byte inside a record of a middle segment.
    let middle = &segments[1].1;
    let mut bytes = std::fs::read(middle).unwrap();
    bytes[40] ^= 0x5A;
    std::fs::write(middle, &bytes).unwrap();
    match CommitLog::open(dir.path(), &Database::new(), options(2048), |_| {}) {
        Err(WalError::Corrupt { segment, offset, .. }) => {
            assert_eq!(&segment, middle);
            assert!(offset <= 40, "offset {offset}");
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
    bytes[40] ^= 0x5A;
    std::fs::write(middle, &bytes).unwrap();

    // A missing middle segment.
    let moved = dir.path().join("moved-away");
    std::fs::rename(middle, &moved).unwrap();
    assert!(matches!(
        CommitLog::open(dir.path(), &Database::new(), options(2048), |_| {}),
        Err(WalError::MissingRecords { .. })
    ));
    std::fs::rename(&moved, middle).unwrap();

    // A bad segment header.
    let first = &segments[0].1;
    let mut head = std::fs::read(first).unwrap();
    head[0] = b'X';
    std::fs::write(first, &head).unwrap();
    assert!(matches!(
        CommitLog::open(dir.path(), &Database::new(), options(2048), |_| {}),
        Err(WalError::BadSegmentHeader { .. })
    ));
    head[0] = b'L';
    std::fs::write(first, &head).unwrap();

    // Corruption in the last (here: only) segment with valid records after it is not a torn
    // tail either.
    let single = tempfile::tempdir().unwrap();
    write_log(single.path(), 30, 1 << 20);
    let only = lightcone_wal::segment::list_segments(single.path()).unwrap().pop().unwrap().1;
    let mut tail = std::fs::read(&only).unwrap();
    tail[30] ^= 0xFF;
    std::fs::write(&only, &tail).unwrap();
    assert!(matches!(
        CommitLog::open(single.path(), &Database::new(), options(1 << 20), |_| {}),
        Err(WalError::Corrupt { offset: 16, .. })
    ));
}

/// Every table of `db` by name, with its schema's shape and its rows (sorted).
fn whole_state(db: &Database) -> Vec<(String, usize, Vec<Row>)> {
    let snapshot = db.snapshot();
    snapshot
        .table_ids()
        .into_iter()
        .map(|id| {
            let view = snapshot.table(id).unwrap();
            let mut rows: Vec<Row> = view.scan().map(|(_, r)| r).collect();
            rows.sort();
            (view.schema().name().to_string(), view.schema().def.indexes.len(), rows)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(32), ..ProptestConfig::default() })]

    // Proves random transaction streams — inserts, deletes, tables created (with rows) and
    // dropped, commits and rollbacks (which must not be logged) — replay from the log to
    // exactly the in-memory state of every table.
    #[test]
    fn log_replay_equals_memory(ops in proptest::collection::vec((0u8..7, 1u64..30, "[a-z]{0,6}"), 1..120),
                                segment in 512u64..8192, pwrite in any::<bool>(), sync in any::<bool>(),
                                direct_io in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let backend = if pwrite { BackendChoice::Pwrite } else { BackendChoice::Auto };
        let durability = if sync { Durability::Fsync } else { Durability::None };
        let (db, log) = open_with(dir.path(), LogOptions { durability, backend, segment_bytes_max: segment, direct_io });
        let t = create_table(&db, &log);
        let pk = db.snapshot().index_id("kv_k_idx_btree").unwrap();
        let mut tx = db.begin();
        let mut created = 0u64;
        for (op, k, v) in ops {
            match op {
                0 => { let _ = tx.insert(t, vec![Value::U64(k), Value::String(v.into())]); }
                1 => { let _ = tx.delete_by_unique(pk, &[Value::U64(k)]); }
                2 => {
                    let (_, ticket) = tx.commit_with(|d| log.append(d));
                    log.wait(ticket.unwrap()).unwrap();
                    tx = db.begin();
                }
                3 => { drop(tx); tx = db.begin(); }
                4 => {
                    // A new table with an index and a first row.
                    created += 1;
                    let def = TableDef::new(
                        format!("extra{created}"),
                        vec![ColumnDef::new("id", ColumnType::U64), ColumnDef::new("tag", ColumnType::String)],
                    )
                    .with_primary_key(0)
                    .with_index(IndexDef::btree(vec![1], false));
                    let extra = tx.create_table(def).unwrap();
                    tx.insert(extra, vec![Value::U64(k), Value::String(v.into())]).unwrap();
                }
                5 => {
                    // A row into the newest extra table still there.
                    let newest = tx.table_ids().into_iter().filter(|&id| id != t).max();
                    if let Some(extra) = newest {
                        let _ = tx.insert(extra, vec![Value::U64(k), Value::String(v.into())]);
                    }
                }
                _ => {
                    // Drop the oldest extra table still there (refused, changing nothing, if this
                    // transaction created it).
                    let oldest = tx.table_ids().into_iter().filter(|&id| id != t).min();
                    if let Some(extra) = oldest {
                        let _ = tx.drop_table(extra);
                    }
                }
            }
        }
        let (_, ticket) = tx.commit_with(|d| log.append(d));
        log.wait(ticket.unwrap()).unwrap();
        let expected = whole_state(&db);
        drop(log);
        let (db2, _log) = open(dir.path(), segment);
        prop_assert_eq!(whole_state(&db2), expected);
        prop_assert_eq!(db2.snapshot().tx_offset(), db.snapshot().tx_offset());
    }
}

// Proves a flush in `None` mode returns once everything is synced even when the queued records
// span several segments (a flush once waited forever when its batch ended at a rotation).
#[test]
fn flush_in_none_mode_covers_a_queue_spanning_segments() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions { durability: Durability::None, segment_bytes_max: 1024, ..options(1024) };
        let (db, log) = open_with(dir.path(), options.clone());
        let t = create_table(&db, &log);
        commit_many(&db, &log, t, 40 + round, round);
        log.flush().unwrap();
        let expected = rows(&db, t);
        drop(log);
        assert!(lightcone_wal::segment::list_segments(dir.path()).unwrap().len() > 2);
        let (db2, _log2) = open_with(dir.path(), options);
        assert_eq!(rows(&db2, t), expected, "round {round}");
    }
}

// Proves the writer preallocates only the segment it appends to: a closed segment is cut to
// its last record (no zeros left in the middle of the log) and then sealed with the next
// segment's first offset, and the open one ends in zeros.
#[test]
fn closed_segments_hold_no_preallocated_space() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 60, 2048);
    let segments = lightcone_wal::segment::list_segments(dir.path()).unwrap();
    assert!(segments.len() >= 3);
    // Later records of a segment overwrite earlier ones: each segment maps to its data end.
    let data_end: std::collections::HashMap<_, _> = record_ends(dir.path()).into_iter().collect();
    for (i, (_, path)) in segments.iter().enumerate() {
        let len = std::fs::metadata(path).unwrap().len();
        if i + 1 < segments.len() {
            assert_eq!(len, data_end[path] + SEAL_BYTES as u64, "{}", path.display());
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(
                decode_seal(&bytes[data_end[path] as usize..]),
                Ok(segments[i + 1].0),
                "{}",
                path.display()
            );
        } else {
            assert!(len > data_end[path], "the open segment is preallocated");
        }
    }
}

// Proves `None` mode still writes without being asked: records reach the segment file (the
// OS's page cache, so a killed process loses nothing written) shortly after their commit,
// though writes are batched in time — and without any flush.
#[test]
fn none_mode_writes_soon_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions { durability: Durability::None, ..options(1 << 20) };
    let (db, log) = open_with(dir.path(), options);
    let t = create_table(&db, &log);
    commit_many(&db, &log, t, 30, 7);
    let last = db.snapshot().tx_offset();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // The newest record's offset, as far as the file on disk shows.
        let written = lightcone_wal::scan(dir.path(), |_, _, _| Ok(std::ops::ControlFlow::Continue(())))
            .ok()
            .and_then(|r| r.last_offset);
        if written == Some(last) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "records not written after 10 s: {written:?} of {last}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(log);
}

// Proves losing a segment at either end of the log is an error, never a shorter log: the
// first one is missing records before the rest; the last one is named by the seal its
// predecessor got when it was created.
#[test]
fn a_lost_first_or_last_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let states = write_log(dir.path(), 60, 2048);
    let segments = list_segments(dir.path()).unwrap();
    assert!(segments.len() >= 3);
    let moved = dir.path().join("moved-away");

    let (last_first, last) = segments.last().unwrap().clone();
    std::fs::rename(&last, &moved).unwrap();
    match CommitLog::open(dir.path(), &Database::new(), options(2048), |_| {}) {
        Err(e @ WalError::MissingSegment { .. }) => {
            let WalError::MissingSegment { ref segment, expected, ref next_segment, .. } = e else {
                unreachable!()
            };
            assert_eq!(segment, &segments[segments.len() - 2].1);
            assert_eq!(expected, last_first);
            assert_eq!(next_segment.as_str(), last.file_name().unwrap().to_str().unwrap());
            assert!(e.to_string().contains(next_segment), "{e}");
        }
        other => panic!("expected MissingSegment, got {:?}", other.map(|_| ())),
    }
    std::fs::rename(&moved, &last).unwrap();

    let first = &segments[0].1;
    std::fs::rename(first, &moved).unwrap();
    match CommitLog::open(dir.path(), &Database::new(), options(2048), |_| {}) {
        Err(WalError::MissingRecords { expected: 1, found, .. }) => assert_eq!(found, segments[1].0),
        other => panic!("expected MissingRecords, got {:?}", other.map(|_| ())),
    }
    std::fs::rename(&moved, first).unwrap();
    let db = Database::new();
    let (_log, recovery) = CommitLog::open(dir.path(), &db, options(2048), |_| {}).unwrap();
    assert_eq!(
        db.snapshot().tx_offset(),
        *states.keys().next_back().unwrap(),
        "put back, the log reads whole"
    );
    assert_eq!(recovery.replay.applied, db.snapshot().tx_offset());
}

// Proves a crash while a segment was being created (before its header was whole, so before
// any record went in and before the previous segment was sealed) is recovered: the cut-short
// file is removed, nothing is lost, and the log carries on through new rotations.
#[test]
fn a_segment_cut_short_while_created_is_removed() {
    let template = tempfile::tempdir().unwrap();
    let states = write_log(template.path(), 60, 2048);
    let segments = list_segments(template.path()).unwrap();
    let (last_first, last) = segments.last().unwrap().clone();
    let header = lightcone_wal::segment::segment_header(last_first);
    let before_last = &segments[segments.len() - 2].1;
    let unsealed = {
        let bytes = std::fs::read(before_last).unwrap();
        bytes[..bytes.len() - SEAL_BYTES].to_vec()
    };
    let mut cuts: Vec<Vec<u8>> = (0..=header.len()).map(|n| header[..n].to_vec()).collect();
    cuts.push(vec![0; header.len()]); // the size reached the disk, the bytes did not
    for (i, cut) in cuts.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        for (_, path) in &segments[..segments.len() - 2] {
            std::fs::copy(path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        std::fs::write(dir.path().join(before_last.file_name().unwrap()), &unsealed).unwrap();
        std::fs::write(dir.path().join(last.file_name().unwrap()), cut).unwrap();
        let db = Database::new();
        let (log, recovery) = CommitLog::open(dir.path(), &db, options(2048), |_| {}).unwrap();
        let expected_tx = last_first - 1;
        assert_eq!(db.snapshot().tx_offset(), expected_tx, "cut {i}");
        assert_eq!(rows(&db, 0), states[&expected_tx], "cut {i}");
        let full_header = cut.len() == header.len() && cut[..] == header[..];
        assert_eq!(recovery.replay.scan.torn_tail.is_some(), !full_header, "cut {i}");
        if !full_header {
            assert!(!dir.path().join(last.file_name().unwrap()).exists(), "cut {i}: the stub is removed");
        }
        // Appending resumes after the last record and rotates again; everything reads back.
        commit_many(&db, &log, 0, 20, 99 + i as u64);
        let expected = rows(&db, 0);
        let at = db.snapshot().tx_offset();
        drop(log);
        let (db2, _log2) = open(dir.path(), 2048);
        assert_eq!(db2.snapshot().tx_offset(), at, "cut {i}");
        assert_eq!(rows(&db2, 0), expected, "cut {i}");
        assert!(list_segments(dir.path()).unwrap().len() > segments.len() - 1, "cut {i}: rotated again");
    }

    // The same stub after a sealed segment is damage, not a cut-short creation: the seal was
    // written only once this segment's header was durable.
    let dir = tempfile::tempdir().unwrap();
    for (_, path) in &segments[..segments.len() - 1] {
        std::fs::copy(path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join(last.file_name().unwrap()), &header[..5]).unwrap();
    match CommitLog::open(dir.path(), &Database::new(), options(2048), |_| {}) {
        Err(WalError::Corrupt { segment, offset: 0, .. }) => {
            assert_eq!(segment.file_name(), last.file_name())
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
    assert!(dir.path().join(last.file_name().unwrap()).exists(), "nothing is removed");

    // The same stub in the middle of the log (a later segment exists) is no torn tail.
    let dir = tempfile::tempdir().unwrap();
    for (_, path) in &segments {
        std::fs::copy(path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join(segments[1].1.file_name().unwrap()), &header[..5]).unwrap();
    assert!(matches!(
        CommitLog::open(dir.path(), &Database::new(), options(2048), |_| {}),
        Err(WalError::BadSegmentHeader { .. })
    ));
}

// Proves that once a log was closed cleanly (every record covered by a durability mark, every
// closed segment sealed), a flipped byte anywhere in its data is either an error or harmless —
// never a log that opens with fewer transactions or other rows.
#[test]
fn random_flips_in_a_closed_log_never_lose_data_silently() {
    let template = tempfile::tempdir().unwrap();
    let states = write_log(template.path(), 60, 2048);
    let (last_tx, final_rows) = states.iter().next_back().map(|(k, v)| (*k, v.clone())).unwrap();
    let segments = list_segments(template.path()).unwrap();
    // Data ends where the scan stops; the open segment's preallocated zeros are after it.
    let data: Vec<(std::path::PathBuf, Vec<u8>)> =
        segments.iter().map(|(_, p)| (p.clone(), std::fs::read(p).unwrap())).collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let (mut errors, mut harmless) = (0, 0);
    for round in 0..60 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (path, bytes) = &data[(x % data.len() as u64) as usize];
        let end = if std::ptr::eq(path, &data.last().unwrap().0) {
            // The last segment's data: up to the closing mark (zeros follow).
            bytes.iter().rposition(|&b| b != 0).unwrap() + 1
        } else {
            bytes.len()
        };
        let at = ((x >> 16) % end as u64) as usize;
        let flip = 1u8 << ((x >> 8) % 8);
        let dir = tempfile::tempdir().unwrap();
        for (p, b) in &data {
            let mut b = b.clone();
            if p == path {
                b[at] ^= flip;
            }
            std::fs::write(dir.path().join(p.file_name().unwrap()), b).unwrap();
        }
        let db = Database::new();
        match CommitLog::open(dir.path(), &db, options(2048), |_| {}) {
            Ok(_) => {
                harmless += 1;
                assert_eq!(
                    db.snapshot().tx_offset(),
                    last_tx,
                    "round {round}: flip at {}:{at}",
                    path.display()
                );
                assert_eq!(rows(&db, 0), final_rows, "round {round}: flip at {}:{at}", path.display());
            }
            Err(
                WalError::Corrupt { .. }
                | WalError::BadSegmentHeader { .. }
                | WalError::MissingRecords { .. }
                | WalError::MissingSegment { .. }
                | WalError::Decode { .. },
            ) => errors += 1,
            Err(e) => panic!("round {round}: flip at {}:{at}: unexpected {e}", path.display()),
        }
    }
    assert!(
        errors > 40,
        "most flips land in records and must be errors ({errors} errors, {harmless} harmless)"
    );
}

// Proves that whatever happens to the files — a segment cut anywhere, bytes overwritten with
// noise, garbage appended, a segment deleted — opening the log never panics, and when it
// succeeds it holds exactly the state after some transaction of the original log — damage can
// end the log early (a torn tail) but never invent, reorder or half-apply a transaction — and
// it takes new commits that read back after another reopen.
#[test]
fn random_damage_opens_to_a_prefix_or_an_error() {
    let template = tempfile::tempdir().unwrap();
    let mut states = write_log(template.path(), 60, 2048);
    states.insert(0, Vec::new()); // an empty log: the state before any transaction
    let segments = list_segments(template.path()).unwrap();
    let data: Vec<(std::path::PathBuf, Vec<u8>)> =
        segments.iter().map(|(_, p)| (p.clone(), std::fs::read(p).unwrap())).collect();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move |bound: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % bound.max(1) as u64) as usize
    };
    let (mut opened, mut refused) = (0, 0);
    for round in 0..200 {
        let victim = next(data.len());
        let mut files: Vec<(std::path::PathBuf, Option<Vec<u8>>)> =
            data.iter().map(|(p, b)| (p.clone(), Some(b.clone()))).collect();
        let bytes = files[victim].1.as_mut().unwrap();
        let how = next(4);
        match how {
            0 => bytes.truncate(next(bytes.len() + 1)),
            1 => {
                let at = next(bytes.len());
                let len = 1 + next(64).min(bytes.len() - at - 1);
                for b in &mut bytes[at..at + len] {
                    *b = next(256) as u8;
                }
            }
            2 => bytes.extend((0..1 + next(100)).map(|_| next(256) as u8)),
            _ => files[victim].1 = None,
        }
        let dir = tempfile::tempdir().unwrap();
        for (p, b) in &files {
            if let Some(b) = b {
                std::fs::write(dir.path().join(p.file_name().unwrap()), b).unwrap();
            }
        }
        let db = Database::new();
        let what = format!("round {round}: damage {how} to segment {victim}");
        match CommitLog::open(dir.path(), &db, options(2048), |_| {}) {
            Ok((log, _)) => {
                opened += 1;
                let at = db.snapshot().tx_offset();
                let state = states.get(&at).unwrap_or_else(|| panic!("{what}: tx {at} was never logged"));
                assert_eq!(&rows(&db, 0), state, "{what}: the state at tx {at} differs");
                // What recovery left must take new commits, through rotations, and read back.
                if at >= 1 {
                    commit_many(&db, &log, 0, 30, round);
                }
                let (expected, now) = (rows(&db, 0), db.snapshot().tx_offset());
                drop(log);
                let again = Database::new();
                let reopened = CommitLog::open(dir.path(), &again, options(2048), |_| {});
                assert!(reopened.is_ok(), "{what}: reopening after new commits: {:?}", reopened.err());
                assert_eq!((again.snapshot().tx_offset(), rows(&again, 0)), (now, expected), "{what}");
            }
            Err(_) => refused += 1,
        }
    }
    assert!(opened > 20 && refused > 20, "both outcomes occur ({opened} opened, {refused} refused)");
}

// Proves a multi-segment log written before seals existed (format 2: closed segments end at
// their last record) opens whole, carries on through rotations (the old segments stay as they
// were, the one appended to becomes format 3 and is sealed when it closes), and reads whole
// again; and that a segment of an unknown later format is refused by name.
#[test]
fn a_format_2_log_without_seals_opens_and_carries_on() {
    let template = tempfile::tempdir().unwrap();
    let states = write_log(template.path(), 60, 2048);
    let last = *states.keys().last().unwrap();
    let segments = list_segments(template.path()).unwrap();
    assert!(segments.len() >= 3);
    let dir = tempfile::tempdir().unwrap();
    for (i, (_, path)) in segments.iter().enumerate() {
        let mut bytes = std::fs::read(path).unwrap();
        if i + 1 < segments.len() {
            bytes.truncate(bytes.len() - SEAL_BYTES);
        }
        bytes[..8].copy_from_slice(b"LCWAL02\n");
        std::fs::write(dir.path().join(path.file_name().unwrap()), bytes).unwrap();
    }
    let (db, log) = open(dir.path(), 2048);
    assert_eq!(db.snapshot().tx_offset(), last);
    assert_eq!(rows(&db, 0), states[&last]);
    commit_many(&db, &log, 0, 40, 7);
    let (expected, at) = (rows(&db, 0), db.snapshot().tx_offset());
    drop(log);
    let now = list_segments(dir.path()).unwrap();
    assert!(now.len() > segments.len(), "rotated since");
    let first_bytes = std::fs::read(&now[0].1).unwrap();
    assert_eq!(&first_bytes[..8], b"LCWAL02\n", "closed format-2 segments are left as they were");
    let continued = std::fs::read(&now[segments.len() - 1].1).unwrap();
    assert_eq!(&continued[..8], b"LCWAL03\n");
    assert_eq!(decode_seal(&continued[continued.len() - SEAL_BYTES..]), Ok(now[segments.len()].0));
    let (db2, _log2) = open(dir.path(), 2048);
    assert_eq!(db2.snapshot().tx_offset(), at);
    assert_eq!(rows(&db2, 0), expected);
    drop(_log2);

    // A newer format is named as such, in the middle of the log or at its end (after a sealed
    // segment, where a damaged header would be corruption).
    for victim in [0, now.len() - 1] {
        let original = std::fs::read(&now[victim].1).unwrap();
        let mut newer = original.clone();
        newer[..8].copy_from_slice(b"LCWAL09\n");
        std::fs::write(&now[victim].1, newer).unwrap();
        match CommitLog::open(dir.path(), &Database::new(), options(2048), |_| {}) {
            Err(e @ WalError::UnsupportedFormat { .. }) => assert!(e.to_string().contains("LCWAL09"), "{e}"),
            other => panic!("segment {victim}: expected UnsupportedFormat, got {:?}", other.map(|_| ())),
        }
        std::fs::write(&now[victim].1, original).unwrap();
    }
}

// Proves the last segment ending in bytes that look like the start of a seal — a record cut
// off after its first bytes (a payload length of 254 mod 256 starts `FE`) — is a torn tail,
// not a lost segment: only a whole seal there says a segment is missing.
#[test]
fn a_cut_record_that_looks_like_a_torn_seal_is_a_torn_tail() {
    let template = tempfile::tempdir().unwrap();
    let states = write_log(template.path(), 60, 2048);
    let last_tx = *states.keys().next_back().unwrap();
    let (last_first, last) = list_segments(template.path()).unwrap().pop().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    let data_end = items(&bytes).last().unwrap().end as usize;
    let mut seal = [0u8; SEAL_BYTES];
    lightcone_wal::frame::write_seal(&mut seal, last_tx + 1);
    for kept in 1..SEAL_BYTES {
        let dir = tempfile::tempdir().unwrap();
        for (_, path) in list_segments(template.path()).unwrap() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        let mut tail = bytes[..data_end].to_vec();
        tail.extend_from_slice(&seal[..kept]);
        std::fs::write(dir.path().join(last.file_name().unwrap()), &tail).unwrap();
        let db = Database::new();
        let (_log, recovery) = CommitLog::open(dir.path(), &db, options(2048), |_| {})
            .unwrap_or_else(|e| panic!("{kept} bytes: {e}"));
        assert_eq!(db.snapshot().tx_offset(), last_tx, "{kept} bytes");
        assert!(recovery.replay.scan.torn_tail.is_some(), "{kept} bytes");
    }
    assert!(last_first <= last_tx);
}

// Proves a power cut during a rotation's seal, which can leave part of the seal (the next
// segment, durable before the seal was begun, holds no record yet), is no corruption: the log
// opens whole and carries on.
#[test]
fn a_torn_seal_is_no_corruption() {
    let template = tempfile::tempdir().unwrap();
    let states = write_log(template.path(), 60, 2048);
    let segments = list_segments(template.path()).unwrap();
    let n = segments.len();
    assert!(n >= 3);
    // The moment of the cut: the last segment was just created (header only), and the one
    // before it was being sealed.
    let (next_first, next_path) = segments[n - 1].clone();
    let sealed = std::fs::read(&segments[n - 2].1).unwrap();
    let data_end = sealed.len() - SEAL_BYTES;
    let header = lightcone_wal::segment::segment_header(next_first);
    for kept in 1..=SEAL_BYTES {
        let mut torn = sealed[..data_end + kept].to_vec();
        if kept > 4 {
            torn[data_end + 2] = 0; // a byte within the written part that did not reach the disk
        }
        let dir = tempfile::tempdir().unwrap();
        for (_, path) in &segments[..n - 2] {
            std::fs::copy(path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        std::fs::write(dir.path().join(segments[n - 2].1.file_name().unwrap()), &torn).unwrap();
        std::fs::write(dir.path().join(next_path.file_name().unwrap()), header).unwrap();
        let db = Database::new();
        let (log, _) = CommitLog::open(dir.path(), &db, options(2048), |_| {})
            .unwrap_or_else(|e| panic!("{kept} seal bytes kept: {e}"));
        let at = next_first - 1;
        assert_eq!(db.snapshot().tx_offset(), at, "{kept} seal bytes kept");
        assert_eq!(rows(&db, 0), states[&at], "{kept} seal bytes kept");
        commit_many(&db, &log, 0, 5, kept as u64);
        let (expected, now) = (rows(&db, 0), db.snapshot().tx_offset());
        drop(log);
        let (db2, _log2) = open(dir.path(), 2048);
        assert_eq!((db2.snapshot().tx_offset(), rows(&db2, 0)), (now, expected), "{kept} seal bytes kept");
        drop(_log2);

        // A torn seal at the very end of the log cannot be told from a cut-off record (see
        // `a_cut_record_that_looks_like_a_torn_seal_is_a_torn_tail`): without the next segment
        // it is a torn tail, and the log ends with the sealed segment's last record.
        let lost_to_rotation = list_segments(dir.path()).unwrap().len() > n;
        std::fs::remove_file(dir.path().join(next_path.file_name().unwrap())).unwrap();
        let db3 = Database::new();
        match CommitLog::open(dir.path(), &db3, options(2048), |_| {}) {
            Err(WalError::MissingRecords { .. }) if lost_to_rotation => {}
            Ok(_) if !lost_to_rotation => {
                assert_eq!(db3.snapshot().tx_offset(), at, "{kept} seal bytes kept")
            }
            other => panic!("{kept} seal bytes kept, next segment gone: {:?}", other.map(|_| ())),
        }
    }
}
