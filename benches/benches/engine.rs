//! Engine benchmarks: each operation on Lightcone and on in-memory SQLite in the same run,
//! then a table of medians and speed-ups, and the memory per row of a 1M-row table.
//!
//! Run: `cargo bench -p lightcone-benches --bench engine`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion};
use lightcone_benches::{
    criterion_median_ns, format_ns, print_ratio_table, CountingAlloc, LcTable, Rng, SqliteTable,
};
use lightcone_mvcc::ReadTx;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const ROWS: u32 = 1_000_000;
const RANGE_ROWS: u32 = 1_000;
const GROUPS: &[&str] =
    &["insert_1m_rows", "point_lookup_pk", "range_scan_1k_rows", "full_column_scan_1m", "commit_1_row_tx"];

fn insert_1m(c: &mut Criterion) {
    let mut g = c.benchmark_group("insert_1m_rows");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    g.bench_function("lightcone", |b| b.iter_with_large_drop(|| LcTable::build(ROWS)));
    g.bench_function("sqlite", |b| b.iter_with_large_drop(|| SqliteTable::build(ROWS)));
    g.finish();
}

fn reads(c: &mut Criterion, lc: &LcTable, sq: &SqliteTable) {
    let snapshot = lc.db.snapshot();
    let mut g = c.benchmark_group("point_lookup_pk");
    let mut rng = Rng::new(1);
    g.bench_function("lightcone", |b| b.iter(|| black_box(lc.point_lookup(&snapshot, rng.key(ROWS)))));
    g.bench_function("sqlite", |b| b.iter(|| black_box(sq.point_lookup(rng.key(ROWS)))));
    g.finish();

    let mut g = c.benchmark_group("range_scan_1k_rows");
    g.bench_function("lightcone", |b| {
        b.iter(|| {
            let lo = rng.key(ROWS - RANGE_ROWS);
            black_box(lc.range_sum(&snapshot, lo, lo + RANGE_ROWS))
        })
    });
    g.bench_function("sqlite", |b| {
        b.iter(|| {
            let lo = rng.key(ROWS - RANGE_ROWS);
            black_box(sq.range_sum(lo, lo + RANGE_ROWS))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("full_column_scan_1m");
    g.bench_function("lightcone", |b| b.iter(|| black_box(lc.column_sum(&snapshot))));
    g.bench_function("sqlite", |b| b.iter(|| black_box(sq.column_sum())));
    g.finish();
}

/// Benchmarks `commit` with ids counting up from `*next`, so each iteration inserts a fresh row.
fn bench_fresh_ids(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, next: &mut u32, commit: impl Fn(u32)) {
    g.bench_function(name, |b| {
        b.iter_batched(
            || {
                *next += 1;
                *next
            },
            &commit,
            BatchSize::SmallInput,
        )
    });
}

fn commit_one(c: &mut Criterion) {
    // Fresh 1M-row tables so every iteration inserts a new id into a full-size table.
    let mut g = c.benchmark_group("commit_1_row_tx");
    let lc = LcTable::build(ROWS);
    let mut next = ROWS;
    bench_fresh_ids(&mut g, "lightcone", &mut next, |id| lc.commit_one(id));
    // The same with a snapshot held for the whole run, as a long SQL query or subscription
    // scan would: the design allows a long reader to cost the writer at most 20%.
    let reader = lc.db.snapshot();
    let reader_rows = reader.table(lc.table).map(|t| t.row_count()).ok();
    bench_fresh_ids(&mut g, "lightcone_with_long_reader", &mut next, |id| lc.commit_one(id));
    assert_eq!(reader.table(lc.table).map(|t| t.row_count()).ok(), reader_rows, "the reader's version moved");
    drop(reader);
    drop(lc);
    let sq = SqliteTable::build(ROWS);
    let mut next = ROWS;
    bench_fresh_ids(&mut g, "sqlite", &mut next, |id| sq.commit_one(id));
    g.finish();
}

/// Live heap bytes per row of a 1M-row `{u32 pk, i32}` table, counted by the allocator,
/// and the same for SQLite from its page count.
fn report_memory() {
    let before = CountingAlloc::live_bytes();
    let lc = LcTable::build(ROWS);
    let lc_bytes = CountingAlloc::live_bytes() - before;
    let estimate = lc.db.snapshot().table(lc.table).map(|t| t.memory_bytes()).unwrap_or(0);
    let sq = SqliteTable::build(ROWS);
    let pages: i64 = sq.conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap_or(0);
    let page_size: i64 = sq.conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap_or(0);
    println!(
        "memory, 1M rows of {{u32 pk, i32}} incl. pk index: lightcone {:.1} B/row (allocator), {:.1} B/row \
         (structure estimate); sqlite {:.1} B/row (pages); target <= 32",
        lc_bytes as f64 / ROWS as f64,
        estimate as f64 / ROWS as f64,
        (pages * page_size) as f64 / ROWS as f64
    );
}

fn criterion_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("criterion")
}

fn main() {
    let dir = criterion_dir();
    let mut c = Criterion::default().output_directory(&dir).configure_from_args();
    report_memory();
    insert_1m(&mut c);
    {
        let lc = LcTable::build(ROWS);
        let sq = SqliteTable::build(ROWS);
        reads(&mut c, &lc, &sq);
    }
    commit_one(&mut c);
    c.final_summary();
    print_ratio_table(&dir, GROUPS);
    let plain = criterion_median_ns(&dir, "commit_1_row_tx", "lightcone");
    let with_reader = criterion_median_ns(&dir, "commit_1_row_tx", "lightcone_with_long_reader");
    if let (Some(plain), Some(with_reader)) = (plain, with_reader) {
        println!(
            "commit_1_row_tx with a long reader: {} ({:+.0}% vs no reader; design limit +20%)",
            format_ns(with_reader),
            (with_reader / plain - 1.0) * 100.0
        );
    }
}
