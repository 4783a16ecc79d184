//! SQL query benchmarks: each query through Lightcone's planner (`execute`: parse, bind, plan
//! and run from SQL text on a snapshot) and through in-memory SQLite (a cached prepared
//! statement, so SQLite does not re-parse) in the same run, then a table of medians and
//! speed-ups.
//!
//! Run: `cargo bench -p lightcone-benches --bench planner`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::Criterion;
use lightcone_benches::{print_ratio_table, Rng};
use lightcone_mvcc::{ColumnDef, ColumnType, Database, IndexDef, TableDef, Value};
use lightcone_query_planner::{execute, Params};
use rusqlite::Connection;

/// The `lightcone` server binary's allocator, so the numbers are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROWS: u32 = 1_000_000;
const RANGE_ROWS: u32 = 1_000;
/// Join tables: `a` has A rows; `b` and `c` have B rows each, `b.aid` and `c.bid` spread evenly.
const A: u32 = 1_000;
const B: u32 = 10_000;
/// Joins start from `a.id < OUTER` (100 rows of `a`, 1000 of `b`, 1000 of `c`).
const OUTER: u32 = 100;

const GROUPS: &[&str] = &[
    "point_query_pk",
    "range_query_1k_rows",
    "join2_indexed",
    "join2_no_index",
    "join3_indexed",
    "join3_no_index",
    "count_star_1m",
];

/// `t(id u32 pk, v i32)` with `ROWS` rows in both engines.
fn big_table() -> (Database, Connection) {
    let db = Database::new();
    let mut tx = db.begin();
    let def =
        TableDef::new("t", vec![ColumnDef::new("id", ColumnType::U32), ColumnDef::new("v", ColumnType::I32)])
            .with_primary_key(0);
    let t = tx.create_table(def).expect("fresh database");
    for id in 1..=ROWS {
        tx.insert(t, vec![Value::U32(id), Value::I32(id as i32 % 1000)]).expect("unique ids");
    }
    tx.commit();
    let conn = Connection::open_in_memory().expect("sqlite");
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER); BEGIN").expect("sqlite");
    {
        let mut ins = conn.prepare("INSERT INTO t VALUES (?1, ?2)").expect("sqlite");
        for id in 1..=ROWS {
            ins.execute(rusqlite::params![id, id as i32 % 1000]).expect("sqlite");
        }
    }
    conn.execute_batch("COMMIT").expect("sqlite");
    (db, conn)
}

/// `a(id pk, x)`, `b(id pk, aid, y)`, `c(id pk, bid, z)`; with `indexed`, btree indexes on
/// `b.aid` and `c.bid` (the join columns of the inner tables).
fn join_tables(indexed: bool) -> (Database, Connection) {
    let db = Database::new();
    let mut tx = db.begin();
    let cols = |names: &[&str]| names.iter().map(|n| ColumnDef::new(*n, ColumnType::U32)).collect::<Vec<_>>();
    let a = tx.create_table(TableDef::new("a", cols(&["id", "x"])).with_primary_key(0)).expect("fresh");
    let mut bdef = TableDef::new("b", cols(&["id", "aid", "y"])).with_primary_key(0);
    let mut cdef = TableDef::new("c", cols(&["id", "bid", "z"])).with_primary_key(0);
    if indexed {
        bdef = bdef.with_index(IndexDef::btree(vec![1], false));
        cdef = cdef.with_index(IndexDef::btree(vec![1], false));
    }
    let b = tx.create_table(bdef).expect("fresh");
    let c = tx.create_table(cdef).expect("fresh");
    let conn = Connection::open_in_memory().expect("sqlite");
    conn.execute_batch(
        "CREATE TABLE a (id INTEGER PRIMARY KEY, x INTEGER);
         CREATE TABLE b (id INTEGER PRIMARY KEY, aid INTEGER, y INTEGER);
         CREATE TABLE c (id INTEGER PRIMARY KEY, bid INTEGER, z INTEGER); BEGIN",
    )
    .expect("sqlite");
    if indexed {
        conn.execute_batch("CREATE INDEX b_aid ON b (aid); CREATE INDEX c_bid ON c (bid)").expect("sqlite");
    }
    for id in 0..A {
        tx.insert(a, vec![Value::U32(id), Value::U32(id % 7)]).expect("unique");
        conn.execute("INSERT INTO a VALUES (?1, ?2)", rusqlite::params![id, id % 7]).expect("sqlite");
    }
    for id in 0..B {
        let row = [id, id % A, id % 13];
        tx.insert(b, row.iter().map(|&v| Value::U32(v)).collect()).expect("unique");
        conn.execute("INSERT INTO b VALUES (?1, ?2, ?3)", rusqlite::params![row[0], row[1], row[2]])
            .expect("sqlite");
        let row = [id, (id * 7919) % B, id % 11];
        tx.insert(c, row.iter().map(|&v| Value::U32(v)).collect()).expect("unique");
        conn.execute("INSERT INTO c VALUES (?1, ?2, ?3)", rusqlite::params![row[0], row[1], row[2]])
            .expect("sqlite");
    }
    tx.commit();
    conn.execute_batch("COMMIT; ANALYZE").expect("sqlite");
    (db, conn)
}

/// Rows of a Lightcone query (panics on error: the benchmark's queries are fixed and valid).
fn lc_rows(db: &Database, sql: &str) -> usize {
    execute(&db.snapshot(), sql, &Params::default()).unwrap_or_else(|e| panic!("{sql}: {e}")).rows.len()
}

fn sq_rows(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> usize {
    let mut stmt = conn.prepare_cached(sql).expect("valid SQL");
    let mut rows = stmt.query(params).expect("valid SQL");
    let mut n = 0;
    while rows.next().expect("sqlite").is_some() {
        n += 1;
    }
    n
}

fn single_table(c: &mut Criterion) {
    let (db, conn) = big_table();
    let mut rng = Rng::new(7);

    let mut g = c.benchmark_group("point_query_pk");
    g.bench_function("lightcone", |b| {
        b.iter(|| black_box(lc_rows(&db, &format!("SELECT * FROM t WHERE id = {}", rng.key(ROWS)))))
    });
    g.bench_function("sqlite", |b| {
        b.iter(|| black_box(sq_rows(&conn, "SELECT * FROM t WHERE id = ?1", [rng.key(ROWS)])))
    });
    g.finish();

    let mut g = c.benchmark_group("range_query_1k_rows");
    g.bench_function("lightcone", |b| {
        b.iter(|| {
            let lo = rng.key(ROWS - RANGE_ROWS);
            let sql = format!("SELECT id, v FROM t WHERE id >= {lo} AND id < {}", lo + RANGE_ROWS);
            black_box(lc_rows(&db, &sql))
        })
    });
    g.bench_function("sqlite", |b| {
        b.iter(|| {
            let lo = rng.key(ROWS - RANGE_ROWS);
            black_box(sq_rows(&conn, "SELECT id, v FROM t WHERE id >= ?1 AND id < ?2", [lo, lo + RANGE_ROWS]))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("count_star_1m");
    let sql = "SELECT COUNT(*) FROM t";
    g.bench_function("lightcone", |b| b.iter(|| black_box(lc_rows(&db, sql))));
    g.bench_function("sqlite", |b| b.iter(|| black_box(sq_rows(&conn, sql, []))));
    g.finish();
}

fn joins(c: &mut Criterion) {
    let join2 = format!("SELECT a.id, b.id FROM a JOIN b ON a.id = b.aid WHERE a.id < {OUTER}");
    let join3 = format!(
        "SELECT a.id, b.id, c.id FROM a JOIN b ON a.id = b.aid JOIN c ON b.id = c.bid WHERE a.id < {OUTER}"
    );
    for indexed in [true, false] {
        let (db, conn) = join_tables(indexed);
        let suffix = if indexed { "indexed" } else { "no_index" };
        // Both engines must agree on the answer before they are timed.
        for sql in [&join2, &join3] {
            assert_eq!(lc_rows(&db, sql), sq_rows(&conn, sql, []), "{sql}");
        }
        for (name, sql) in [("join2", &join2), ("join3", &join3)] {
            let mut g = c.benchmark_group(format!("{name}_{suffix}"));
            g.bench_function("lightcone", |b| b.iter(|| black_box(lc_rows(&db, sql))));
            g.bench_function("sqlite", |b| b.iter(|| black_box(sq_rows(&conn, sql, []))));
            g.finish();
        }
    }
}

fn criterion_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("criterion")
}

fn main() {
    let dir = criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    single_table(&mut c);
    joins(&mut c);
    c.final_summary();
    print_ratio_table(&dir, GROUPS);
}
