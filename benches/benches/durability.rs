//! Durability benchmarks (a load generator, not criterion: throughput under concurrency):
//! - durable 1-row insert transactions/s with 1, 8 and 64 concurrent committers, group commit,
//!   the default direct-I/O writer + flusher vs the page-cache workers with io_uring and with
//!   pwrite+fdatasync, and SQLite in WAL mode with `synchronous=FULL` (one
//!   transaction per insert) in the same run;
//! - DESIGN §7's row: a reducer inserting one row through the wasm host, `fsync`, 1/8/64
//!   callers in flight (needs `scripts/build-fixtures.sh`; skipped with a note otherwise);
//! - replay rows/s and restart time of a 10M-row log.
//!
//! Run: `cargo bench -p lightcone-benches --bench durability`
//! (`LIGHTCONE_BENCH_SECS` per configuration, default 3; `LIGHTCONE_REPLAY_ROWS`, default 10M;
//! data goes to `LIGHTCONE_BENCH_DIR` or the system temp dir; `LIGHTCONE_BENCH_ONLY=pipelined`
//! stops after the first table, `=threads` runs only the second, `=restart` only the restart.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lightcone_mvcc::{ColumnDef, ColumnType, Database, TableDef, TableId, Value};
use lightcone_snapshot::{compact_log, open_data_dir, write_snapshot};
use lightcone_wal::{BackendChoice, CommitLog, Durability, LogOptions};

/// The `lightcone` server binary's allocator, so the numbers are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn bench_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("LIGHTCONE_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = root.join(format!("lightcone-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn table_def() -> TableDef {
    TableDef::new("t", vec![ColumnDef::new("id", ColumnType::U64), ColumnDef::new("v", ColumnType::I64)])
        .with_primary_key(0)
}

fn create(db: &Database, log: &CommitLog) -> TableId {
    let mut tx = db.begin();
    let t = tx.create_table(table_def()).expect("fresh database");
    let (_, ticket) = tx.commit_with(|d| log.append(d));
    log.wait(ticket.expect("log accepts")).expect("durable");
    t
}

/// The log's three write paths in `Fsync` mode.
#[derive(Clone, Copy)]
enum LogPath {
    /// The default: two disk threads, one writing (`O_DIRECT`) while the other syncs.
    Direct,
    /// Two disk workers writing through the page cache, each write and sync linked in io_uring.
    PageCacheUring,
    /// The same with `pwrite` + `fdatasync`.
    PageCachePwrite,
}

impl LogPath {
    const ALL: [LogPath; 3] = [LogPath::Direct, LogPath::PageCacheUring, LogPath::PageCachePwrite];

    fn options(self) -> LogOptions {
        let (backend, direct_io) = match self {
            LogPath::Direct => (BackendChoice::Auto, true),
            LogPath::PageCacheUring => (BackendChoice::Auto, false),
            LogPath::PageCachePwrite => (BackendChoice::Pwrite, false),
        };
        LogOptions { durability: Durability::Fsync, backend, direct_io, ..LogOptions::default() }
    }
}

/// A throughput cell, marked when the log fell back to another path than the column's.
fn cell(tps: f64, kind: lightcone_wal::BackendKind, path: LogPath) -> String {
    use lightcone_wal::BackendKind;
    let expected = match path {
        LogPath::Direct => BackendKind::DirectPwrite,
        LogPath::PageCacheUring => BackendKind::IoUring,
        LogPath::PageCachePwrite => BackendKind::Pwrite,
    };
    if kind == expected {
        format!("{tps:.0}")
    } else {
        format!("{tps:.0} ({kind:?})")
    }
}

/// Durable 1-row transactions per second with `committers` threads.
fn lightcone_tps(path: LogPath, committers: u64, secs: u64) -> (f64, lightcone_wal::BackendKind) {
    let dir = bench_dir("tps");
    let db = Database::new();
    let options = path.options();
    let (log, _) = CommitLog::open(&dir, &db, options, |_| {}).expect("open log");
    let table = create(&db, &log);
    let done = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in 0..committers {
            let (db, log, done) = (&db, &log, &done);
            s.spawn(move || {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    i += 1;
                    let mut tx = db.begin();
                    tx.insert(table, vec![Value::U64(c << 40 | i), Value::I64(i as i64)]).expect("fresh id");
                    let (_, ticket) = tx.commit_with(|d| log.append(d));
                    log.wait(ticket.expect("log accepts")).expect("durable");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let tps = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    let kind = log.backend();
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
    (tps, kind)
}

/// Runs `commit(i)` for i = 1, 2, … back to back for `secs` on this thread while up to
/// `in_flight` callers wait for their commit's ticket to become durable, and returns the
/// callers answered (durable) per second. When every caller waits, the oldest is waited for;
/// group commit then answers many at once.
fn answered_per_second(
    log: &CommitLog,
    in_flight: u64,
    secs: u64,
    mut commit: impl FnMut(u64) -> lightcone_wal::Ticket,
) -> f64 {
    let mut pending = std::collections::VecDeque::new();
    let mut answered = 0u64;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut i = 0u64;
    while Instant::now() < deadline {
        if pending.len() as u64 == in_flight {
            let oldest = pending.pop_front().expect("in_flight > 0");
            log.wait(oldest).expect("durable");
            answered += 1;
            while pending.front().is_some_and(|t: &lightcone_wal::Ticket| t.0 <= log.durable_offset()) {
                pending.pop_front();
                answered += 1;
            }
        }
        i += 1;
        pending.push_back(commit(i));
    }
    answered as f64 / start.elapsed().as_secs_f64()
}

/// Durable 1-row transactions per second as the server runs them: one database thread executes
/// transactions back to back (reducers are serialised anyway) while up to `in_flight` callers
/// wait for their commit to become durable; a caller is answered once its transaction is
/// fdatasync'd. No OS thread per caller, so 2 cores are not spent on context switches.
fn lightcone_pipelined_tps(path: LogPath, in_flight: u64, secs: u64) -> (f64, lightcone_wal::BackendKind) {
    let dir = bench_dir("pipelined");
    let db = Database::new();
    let options = path.options();
    let (log, _) = CommitLog::open(&dir, &db, options, |_| {}).expect("open log");
    let table = create(&db, &log);
    let tps = answered_per_second(&log, in_flight, secs, |i| {
        let mut tx = db.begin();
        tx.insert(table, vec![Value::U64(i), Value::I64(i as i64)]).expect("fresh id");
        let (_, ticket) = tx.commit_with(|d| log.append(d));
        ticket.expect("log accepts")
    });
    let kind = log.backend();
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
    (tps, kind)
}

/// The `bench_module` fixture (built with the official `spacetimedb` crate by
/// `scripts/build-fixtures.sh`), if it has been built.
fn bench_module() -> Option<Vec<u8>> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures/wasm/bench_module.wasm"))
        .ok()
}

/// DESIGN §7's row as the server runs it: a reducer inserting one row (`bench_module`'s
/// `insert_one`, through the wasm host) with `fsync` durability and group commit, called back
/// to back on one database thread while up to `in_flight` callers wait for their commit to be
/// durable — the pipelined shape above with the module in the loop (no network).
fn reducer_pipelined_tps(program: &[u8], in_flight: u64, secs: u64) -> (f64, lightcone_wal::BackendKind) {
    use lightcone_host::{CallerInfo, HostConfig, ModuleHost, ReducerArgs, WasmEngine};
    use std::sync::Arc;
    let dir = bench_dir("reducer");
    let db = Arc::new(Database::new());
    let (log, _) = CommitLog::open(&dir, &db, LogOptions::default(), |_| {}).expect("open log");
    let log = Arc::new(log);
    let engine = WasmEngine::new().expect("wasm engine");
    let (mut host, _) = ModuleHost::publish(
        &engine,
        Arc::clone(&db),
        Some(Arc::clone(&log)),
        program,
        [1; 32],
        HostConfig::default(),
    )
    .expect("publish bench_module");
    let caller = CallerInfo::default();
    let tps = answered_per_second(&log, in_flight, secs, |i| {
        let mut args = i.to_le_bytes().to_vec();
        args.extend_from_slice(&7i64.to_le_bytes());
        let outcome = host.call_reducer("insert_one", &caller, ReducerArgs::Bsatn(args)).expect("call");
        assert!(outcome.is_committed(), "{:?}", outcome.error());
        outcome.ticket.expect("a committed insert has a ticket")
    });
    let kind = log.backend();
    drop(host);
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
    (tps, kind)
}

/// The same workload on SQLite: WAL journal, synchronous=FULL, one transaction per insert,
/// each committer on its own connection (SQLite serialises writers itself).
fn sqlite_tps(committers: u64, secs: u64) -> f64 {
    let dir = bench_dir("sqlite");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("bench.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("open sqlite");
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER);",
        )
        .expect("setup");
    }
    let done = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in 0..committers {
            let (path, done) = (&path, &done);
            s.spawn(move || {
                let conn = rusqlite::Connection::open(path).expect("open sqlite");
                conn.execute_batch("PRAGMA synchronous=FULL;").expect("pragma");
                conn.busy_timeout(Duration::from_secs(30)).expect("busy timeout");
                let mut insert = conn.prepare("INSERT INTO t (id, v) VALUES (?1, ?2)").expect("prepare");
                let mut i = 0i64;
                while Instant::now() < deadline {
                    i += 1;
                    // Autocommit: one durable transaction per insert.
                    insert.execute(((c as i64) << 40 | i, i)).expect("insert");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let tps = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    tps
}

/// Writes a data directory whose log holds `rows` rows (10k rows per transaction).
fn write_replay_log(rows: u64) -> PathBuf {
    let dir = bench_dir("replay");
    let db = Database::new();
    let options = LogOptions { durability: Durability::None, ..LogOptions::default() };
    let (log, _) = CommitLog::open(&dir.join("log"), &db, options, |_| {}).expect("open log");
    let table = create(&db, &log);
    let per_tx = 10_000;
    let mut next = 0u64;
    while next < rows {
        let mut tx = db.begin();
        for _ in 0..per_tx.min(rows - next) {
            next += 1;
            tx.insert(table, vec![Value::U64(next), Value::I64(next as i64 * 3)]).expect("fresh id");
        }
        let (_, ticket) = tx.commit_with(|d| log.append(d));
        log.wait(ticket.expect("log accepts")).expect("written");
    }
    log.flush().expect("flush");
    dir
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map_or(0, |entries| entries.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

/// One table: each write path and SQLite at 1, 8 and 64 callers (`label` names them), measured
/// by `run(path, callers, secs)`.
fn print_table(label: &str, secs: u64, run: fn(LogPath, u64, u64) -> (f64, lightcone_wal::BackendKind)) {
    println!(
        "{label:<12} {:>16} {:>16} {:>16} {:>16} {:>12}",
        "direct (default)", "cache io_uring", "cache pwrite", "sqlite WAL FULL", "direct/sqlite"
    );
    for callers in [1u64, 8, 64] {
        let cells: Vec<(f64, String)> = LogPath::ALL
            .iter()
            .map(|&path| {
                let (tps, kind) = run(path, callers, secs);
                (tps, cell(tps, kind, path))
            })
            .collect();
        let sqlite = sqlite_tps(callers, secs);
        println!(
            "{callers:<12} {:>16} {:>16} {:>16} {sqlite:>16.0} {:>11.1}x",
            cells[0].1,
            cells[1].1,
            cells[2].1,
            cells[0].0 / sqlite.max(1e-9)
        );
    }
}

fn main() {
    // `cargo test --benches` runs bench targets with no `--bench` flag: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = if quick { 1 } else { env_u64("LIGHTCONE_BENCH_SECS", 3) };
    let replay_rows = if quick { 100_000 } else { env_u64("LIGHTCONE_REPLAY_ROWS", 10_000_000) };

    // LIGHTCONE_BENCH_ONLY=pipelined: only the server-shape table; =threads: only the thread per
    // committer table; =restart: only the restart.
    let only = std::env::var("LIGHTCONE_BENCH_ONLY").unwrap_or_default();
    if only != "restart" {
        println!(
            "durable 1-row insert transactions per second ({secs} s each; fdatasync before each answer)"
        );
        if only != "threads" {
            println!("\nserver shape: one database thread, N callers in flight");
            print_table("in flight", secs, lightcone_pipelined_tps);
            println!("\nDESIGN §7's row: a reducer inserting one row (wasm host, fsync, default log), N callers in flight");
            match bench_module() {
                Some(program) => {
                    println!(
                        "{:<12} {:>16} {:>16} {:>12}",
                        "in flight", "reducer tx/s", "sqlite WAL FULL", "ratio"
                    );
                    for callers in [1u64, 8, 64] {
                        let (tps, kind) = reducer_pipelined_tps(&program, callers, secs);
                        let sqlite = sqlite_tps(callers, secs);
                        println!(
                            "{callers:<12} {:>16} {sqlite:>16.0} {:>11.1}x",
                            cell(tps, kind, LogPath::Direct),
                            tps / sqlite.max(1e-9)
                        );
                    }
                }
                None => println!(
                    "skipped: the bench_module fixture is not built (bash scripts/build-fixtures.sh)"
                ),
            }
        }
        if only == "pipelined" {
            return;
        }
        println!("\nthread per committer (each blocks on its own commit)");
        print_table("committers", secs, lightcone_tps);
        if only == "threads" {
            return;
        }
    }

    println!("\nrestart of a {replay_rows}-row database (10k rows per transaction)");
    let dir = write_replay_log(replay_rows);
    let (db, log, report) = open_data_dir(&dir, LogOptions::default(), |_| {}).expect("reopen");
    let stats = &report.log.replay;
    println!(
        "from the log alone: log {:.0} MiB in {} segments; restart {:.2} s; replay {:.2} M rows/s",
        dir_bytes(&dir.join("log")) as f64 / (1 << 20) as f64,
        stats.scan.segments,
        report.elapsed.as_secs_f64(),
        stats.rows_per_second() / 1e6,
    );
    let start = Instant::now();
    let info = write_snapshot(&dir, &db.snapshot()).expect("snapshot");
    let wrote = start.elapsed();
    compact_log(&dir, info.tx_offset).expect("compact");
    drop((db, log));
    let (_db, log, report) =
        open_data_dir(&dir, LogOptions::default(), |_| {}).expect("reopen from snapshot");
    println!(
        "from a snapshot: written in {:.2} s ({:.0} MiB); restart {:.2} s (snapshot load + index bulk build {:.2} s)",
        wrote.as_secs_f64(),
        info.bytes as f64 / (1 << 20) as f64,
        report.elapsed.as_secs_f64(),
        report.snapshot_load.as_secs_f64()
    );
    drop(log);
    let _ = std::fs::remove_dir_all(&dir);
}
