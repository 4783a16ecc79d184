//! `lightcone replay`: the real binary over real logs.

use std::path::Path;
use std::process::Command;

use lightcone_mvcc::{ColumnDef, ColumnType, Database, TableDef, Value};
use lightcone_wal::{CommitLog, LogOptions};

/// Writes a log under `<dir>/log`: one table created at tx 1, then tx k (k ≥ 2) inserts k rows.
fn write_log(dir: &Path, txs: u64) {
    let db = Database::new();
    let options = LogOptions { segment_bytes_max: 4096, ..LogOptions::default() };
    let (log, _) = CommitLog::open(&dir.join("log"), &db, options, |_| {}).unwrap();
    let mut tx = db.begin();
    let def = TableDef::new(
        "scores",
        vec![ColumnDef::new("id", ColumnType::U64), ColumnDef::new("who", ColumnType::String)],
    )
    .with_primary_key(0)
    .with_auto_inc(0);
    let t = tx.create_table(def).unwrap();
    let (_, ticket) = tx.commit_with(|d| log.append(d));
    log.wait(ticket.unwrap()).unwrap();
    for k in 2..=txs {
        let mut tx = db.begin();
        for _ in 0..k {
            tx.insert(t, vec![Value::U64(0), Value::String(format!("player {k}").into())]).unwrap();
        }
        let (_, ticket) = tx.commit_with(|d| log.append(d));
        log.wait(ticket.unwrap()).unwrap();
    }
}

fn lightcone(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lightcone")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// Proves replay verifies and reports tables, row counts, offsets and speed, and `--until`
// stops at a point in time.
#[test]
fn replay_reports_tables_and_stops_at_until() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 40);
    let path = dir.path().to_str().unwrap();
    let (ok, out, err) = lightcone(&["replay", path]);
    assert!(ok, "{err}");
    let rows: u64 = (2..=40).sum();
    assert!(out.contains(&format!("scores  {rows} rows")), "{out}");
    assert!(out.contains("tx offsets: 1..=40"), "{out}");
    assert!(out.contains("replayed 40 transactions to tx 40"), "{out}");
    assert!(out.contains("rows/s"), "{out}");

    let (ok, out, _) = lightcone(&["replay", path, "--until", "5"]);
    assert!(ok);
    assert!(out.contains(&format!("scores  {} rows", 2 + 3 + 4 + 5)), "{out}");
    assert!(out.contains("replayed 5 transactions to tx 5"), "{out}");
}

// Proves the progress the CLI's bar shows: one report per applied transaction, counting up
// to a total that matches what is applied, with or without `--until`.
#[test]
fn replay_reports_progress_up_to_its_total() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 40);
    for (until, applied) in [(None, 40), (Some(7), 7)] {
        let mut seen = Vec::new();
        let report =
            lightcone_host::replay::run_replay(dir.path(), until, |done, total| seen.push((done, total)))
                .unwrap();
        assert_eq!(report.replay.applied, applied);
        let expected: Vec<(u64, u64)> = (1..=applied).map(|done| (done, applied)).collect();
        assert_eq!(seen, expected, "until {until:?}");
    }
}

// Proves a lost last segment fails the replay, naming the segment that is missing, instead of
// reporting a shorter log.
#[test]
fn replay_reports_a_missing_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 40);
    let segments = lightcone_wal::segment::list_segments(&dir.path().join("log")).unwrap();
    assert!(segments.len() >= 3);
    let last = &segments.last().unwrap().1;
    std::fs::remove_file(last).unwrap();
    let (ok, out, err) = lightcone(&["replay", dir.path().to_str().unwrap()]);
    assert!(!ok, "{out}");
    let name = last.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name) && err.contains("missing"), "{err}");
}

// Proves damage is reported with the file and offset and a failing exit status, a torn tail is
// reported without changing the file, and a missing directory is a clear error.
#[test]
fn replay_reports_damage() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 40);
    let log = dir.path().join("log");
    let segments = lightcone_wal::segment::list_segments(&log).unwrap();
    assert!(segments.len() >= 3);

    let last = &segments.last().unwrap().1;
    // Cut into the last record (the segment's file goes on with preallocated zeros after it).
    let mut data_end = 0;
    lightcone_wal::scan(&log, |segment, at, frame| {
        if segment == last.as_path() {
            data_end = at + frame.encoded_len() as u64;
        }
        Ok(std::ops::ControlFlow::Continue(()))
    })
    .unwrap();
    let len = data_end - 3;
    std::fs::OpenOptions::new().write(true).open(last).unwrap().set_len(len).unwrap();
    let (ok, out, err) = lightcone(&["replay", dir.path().to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("torn tail"), "{out}");
    assert_eq!(std::fs::metadata(last).unwrap().len(), len, "replay must not modify the log");

    let middle = &segments[1].1;
    let mut bytes = std::fs::read(middle).unwrap();
    bytes[30] ^= 0xFF;
    std::fs::write(middle, &bytes).unwrap();
    let (ok, _, err) = lightcone(&["replay", dir.path().to_str().unwrap()]);
    assert!(!ok);
    let name = middle.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(name) && err.contains("corrupt"), "{err}");

    let (ok, _, err) = lightcone(&["replay", "/definitely/not/here"]);
    assert!(!ok);
    assert!(err.contains("is not a directory"), "{err}");
}

// Proves replay verifies snapshots, starts from the newest one at or before `--until`, and
// reports a damaged snapshot by file.
#[test]
fn replay_uses_and_verifies_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 30);
    let db = Database::new();
    let (log, _) = CommitLog::open(&dir.path().join("log"), &db, LogOptions::default(), |_| {}).unwrap();
    let info = lightcone_snapshot::write_snapshot(dir.path(), &db.snapshot()).unwrap();
    drop(log);
    let path = dir.path().to_str().unwrap();
    let (ok, out, err) = lightcone(&["replay", path]);
    assert!(ok, "{err}");
    assert!(out.contains("snapshots verified: 30"), "{out}");
    assert!(out.contains("starting from the snapshot at tx 30"), "{out}");
    assert!(out.contains(&format!("scores  {} rows", (2..=30).sum::<u64>())), "{out}");
    let (ok, out, _) = lightcone(&["replay", path, "--until", "4"]);
    assert!(ok);
    assert!(!out.contains("starting from"), "{out}");
    assert!(out.contains("scores  9 rows"), "{out}");

    let catalog = info.dir.join("catalog.bin");
    let mut bytes = std::fs::read(&catalog).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&catalog, &bytes).unwrap();
    let (ok, _, err) = lightcone(&["replay", path]);
    assert!(!ok);
    assert!(err.contains("catalog.bin"), "{err}");
}

// Proves a segment whose creation a crash cut short (part of its header, no records) is
// reported as such, read-only, and the log before it replays whole.
#[test]
fn replay_reports_a_segment_cut_short_while_created() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 40);
    let log = dir.path().join("log");
    let stub = log.join(lightcone_wal::segment::segment_file_name(41));
    std::fs::write(&stub, &lightcone_wal::segment::segment_header(41)[..5]).unwrap();
    let (ok, out, err) = lightcone(&["replay", dir.path().to_str().unwrap()]);
    assert!(ok, "{err}");
    let name = stub.file_name().unwrap().to_str().unwrap();
    assert!(out.contains(name) && out.contains("was being created"), "{out}");
    assert!(out.contains("replayed 40 transactions to tx 40"), "{out}");
    assert_eq!(std::fs::read(&stub).unwrap().len(), 5, "replay must not modify the log");
}
