//! Subscription evaluation benchmarks: the cost of `Registry::eval` per changed row × matching
//! query, for a filter and for a join subscription, with 1, 100 and 10,000 subscribers on the
//! same query, and with 10,000 distinct parameterized queries (`WHERE id = k`) of which a
//! transaction's rows match few. Prints a summary against DESIGN §7's targets.
//!
//! Run: `cargo bench -p lightcone-benches --bench subscriptions`

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::Criterion;
use lightcone_benches::{criterion_median_ns, format_ns};
use lightcone_incremental_eval::{ClientAuth, ClientId, Registry};
use lightcone_mvcc::{
    ColumnDef, ColumnType, Database, IndexDef, ReadTx, Snapshot, TableDef, TableId, TxDelta, Value, U256,
};

/// The `lightcone` server binary's allocator, so the numbers are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rows in each table.
const ROWS: u32 = 100_000;
/// Rows changed by the measured transaction.
const CHANGED: u32 = 100;
const SUBSCRIBERS: [u64; 3] = [1, 100, 10_000];
const PARAM_QUERIES: u32 = 10_000;

/// `t(id u32 pk, uid u32, val u32)` and `u(id u32 pk, flag u32)`; `t.uid` points at `u.id`.
struct Fixture {
    db: Database,
    t: TableId,
    /// The tables before any row: subscribers are registered on it, so setting up 10,000 of
    /// them does not compute 10,000 initial results (only `eval` is measured).
    empty: Snapshot,
}

fn fixture() -> Fixture {
    let db = Database::new();
    let mut tx = db.begin();
    let t = tx
        .create_table(
            TableDef::new(
                "t",
                vec![
                    ColumnDef::new("id", ColumnType::U32),
                    ColumnDef::new("uid", ColumnType::U32),
                    ColumnDef::new("val", ColumnType::U32),
                ],
            )
            .with_primary_key(0)
            .with_index(IndexDef::btree([1], false)),
        )
        .unwrap();
    let u = tx
        .create_table(
            TableDef::new(
                "u",
                vec![ColumnDef::new("id", ColumnType::U32), ColumnDef::new("flag", ColumnType::U32)],
            )
            .with_primary_key(0),
        )
        .unwrap();
    tx.commit();
    let empty = db.snapshot();
    let mut tx = db.begin();
    for i in 0..ROWS {
        tx.insert(t, vec![Value::U32(i), Value::U32(i), Value::U32(i % 100)]).unwrap();
        tx.insert(u, vec![Value::U32(i), Value::U32(1)]).unwrap();
    }
    tx.commit();
    Fixture { db, t, empty }
}

/// Commits an update of `CHANGED` rows of `t` (ids `first..`), moving `val` so the rows stay
/// in the filter's result (`val >= 0`); returns the delta and the state after it.
fn change(f: &Fixture, first: u32, bump: u32) -> (TxDelta, Snapshot) {
    let mut tx = f.db.begin();
    let pk = {
        let view = tx.table(f.t).unwrap();
        let schema = view.schema();
        schema.index_ids[schema.def.indexes.iter().position(|i| i.unique).unwrap()]
    };
    for i in first..first + CHANGED {
        tx.update_by_unique(pk, vec![Value::U32(i), Value::U32(i), Value::U32(1000 + bump)]).unwrap();
    }
    let delta = tx.commit();
    (delta, f.db.snapshot())
}

fn auth(n: u64) -> ClientAuth {
    ClientAuth { sender: U256::from_u128(n as u128), is_owner: false }
}

/// `n` clients on the same query.
fn registry(snap: &Snapshot, sql: &str, n: u64) -> Registry {
    let mut reg = Registry::new();
    for c in 0..n {
        reg.subscribe(snap, ClientId(c), 0, &[sql], &auth(c)).unwrap();
    }
    reg
}

const FILTER: &str = "SELECT * FROM t WHERE val >= 0";
const JOIN: &str = "SELECT t.* FROM t JOIN u ON t.uid = u.id WHERE u.flag = 1";

fn shared(c: &mut Criterion, f: &Fixture, group: &str, sql: &str) {
    let mut g = c.benchmark_group(group);
    for n in SUBSCRIBERS {
        let reg = registry(&f.empty, sql, n);
        // Each changed row is an update: one delete and one insert in the query's delta.
        let (delta, after) = change(f, 1_000, n as u32);
        let check = reg.eval(&after, &delta);
        assert_eq!(check.deltas.len(), 1);
        assert_eq!(check.deltas[0].inserts.len() + check.deltas[0].deletes.len(), 2 * CHANGED as usize);
        assert_eq!(check.entries.len(), n as usize);
        g.bench_function(format!("{n}_subscribers"), |b| b.iter(|| black_box(reg.eval(&after, &delta))));
    }
    g.finish();
}

/// 10,000 queries `WHERE id = k`, each with its own subscriber; the transaction's rows match
/// `CHANGED` of them.
fn parameterized(c: &mut Criterion, f: &Fixture) {
    let mut reg = Registry::new();
    for k in 0..PARAM_QUERIES {
        let sql = format!("SELECT * FROM t WHERE id = {}", k * 10);
        reg.subscribe(&f.empty, ClientId(k as u64), 0, &[sql.as_str()], &auth(k as u64)).unwrap();
    }
    assert_eq!(reg.query_count(), PARAM_QUERIES as usize);
    // Rows 0..CHANGED change: ids divisible by 10 are subscribed (CHANGED / 10 queries match).
    let (delta, after) = change(f, 0, 7);
    let check = reg.eval(&after, &delta);
    assert_eq!(check.deltas.len(), (CHANGED / 10) as usize);
    let mut g = c.benchmark_group("param_10k_queries");
    g.bench_function("eval", |b| b.iter(|| black_box(reg.eval(&after, &delta))));
    g.finish();
}

fn criterion_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("criterion")
}

fn report(dir: &Path) {
    let rows = 2.0 * CHANGED as f64; // a delete and an insert per updated row
    println!();
    println!("per changed row x matching query (each update = 2 delta rows; {CHANGED} updates per tx):");
    for (group, target) in [("filter_subscription", 100.0), ("join_subscription", 400.0)] {
        let one = criterion_median_ns(dir, group, "1_subscribers");
        let many = criterion_median_ns(dir, group, "10000_subscribers");
        let hundred = criterion_median_ns(dir, group, "100_subscribers");
        if let (Some(one), Some(hundred), Some(many)) = (one, hundred, many) {
            println!(
                "  {group:<22} {:>8} per row x query (target <= {target} ns); extra identical \
                 subscriber: {} (100 subs) / {} (10k subs) per delta (target <= 50 ns)",
                format_ns(one / rows),
                format_ns((hundred - one) / 99.0),
                format_ns((many - one) / 9999.0),
            );
        }
    }
    if let Some(p) = criterion_median_ns(dir, "param_10k_queries", "eval") {
        println!(
            "  10k parameterized queries, {} changed rows matching {} queries: {} per tx, {} per changed row",
            rows,
            CHANGED / 10,
            format_ns(p),
            format_ns(p / rows)
        );
    }
}

fn main() {
    let dir = criterion_dir();
    let mut c = Criterion::default().output_directory(&dir).configure_from_args();
    let f = fixture();
    shared(&mut c, &f, "filter_subscription", FILTER);
    shared(&mut c, &f, "join_subscription", JOIN);
    parameterized(&mut c, &f);
    c.final_summary();
    report(&dir);
}
