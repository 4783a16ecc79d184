//! A quick tour of the engine until the server exists: builds a 1M-row table in Lightcone and
//! in SQLite, runs each basic operation on both and prints timings, ratios and memory per row.
//! (The criterion benches in `benches/benches/engine.rs` are the careful measurement.)
//!
//! Run: `cargo run --release -p lightcone-benches --bin engine-demo [-- ROWS]`

use std::time::Instant;

use lightcone_benches::{format_ns, CountingAlloc, LcTable, Rng, SqliteTable};
use lightcone_mvcc::ReadTx;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Runs `f` `reps` times and returns nanoseconds per run.
fn time_per_op(reps: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..reps {
        f();
    }
    start.elapsed().as_nanos() as f64 / reps as f64
}

fn line(name: &str, lc: f64, sq: f64) {
    println!("{name:<26} {:>12} {:>12} {:>9.1}x", format_ns(lc), format_ns(sq), sq / lc);
}

fn main() {
    let rows: u32 = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 1_000_000,
        Some(Ok(n)) if n >= 2_000 => n,
        Some(_) => {
            eprintln!("usage: engine-demo [ROWS]   (ROWS is a whole number >= 2000)");
            std::process::exit(2);
        }
    };
    println!("Lightcone engine demo: {rows} rows of {{id u32 primary key, v i32}}\n");
    println!("{:<26} {:>12} {:>12} {:>10}", "operation", "lightcone", "sqlite", "speed-up");

    let before = CountingAlloc::live_bytes();
    let start = Instant::now();
    let lc = LcTable::build(rows);
    let lc_build = start.elapsed().as_nanos() as f64;
    let lc_bytes = CountingAlloc::live_bytes() - before;
    let start = Instant::now();
    let sq = SqliteTable::build(rows);
    let sq_build = start.elapsed().as_nanos() as f64;
    line("insert all rows (1 tx)", lc_build, sq_build);

    let snapshot = lc.db.snapshot();
    let mut rng = Rng::new(3);
    let mut check = 0i64;
    let lc_point =
        time_per_op(200_000, || check += lc.point_lookup(&snapshot, rng.key(rows)).unwrap_or(0) as i64);
    let sq_point = time_per_op(200_000, || check -= sq.point_lookup(rng.key(rows)).unwrap_or(0) as i64);
    line("point lookup by pk", lc_point, sq_point);

    let lc_range = time_per_op(2_000, || {
        let lo = rng.key(rows - 1000);
        check += lc.range_sum(&snapshot, lo, lo + 1000)
    });
    let sq_range = time_per_op(2_000, || {
        let lo = rng.key(rows - 1000);
        check -= sq.range_sum(lo, lo + 1000)
    });
    line("range scan (1000 rows)", lc_range, sq_range);

    let lc_sum = lc.column_sum(&snapshot);
    assert_eq!(lc_sum, sq.column_sum(), "engines disagree on the column sum");
    let lc_scan = time_per_op(20, || check += lc.column_sum(&snapshot));
    let sq_scan = time_per_op(20, || check -= sq.column_sum());
    line("full column scan (SUM v)", lc_scan, sq_scan);
    drop(snapshot);

    let mut next = rows;
    let lc_commit = time_per_op(50_000, || {
        next += 1;
        lc.commit_one(next)
    });
    let mut next = rows;
    let sq_commit = time_per_op(50_000, || {
        next += 1;
        sq.commit_one(next)
    });
    line("1-row insert transaction", lc_commit, sq_commit);

    let table = lc.db.snapshot().table(lc.table).map(|t| t.row_count()).unwrap_or(0);
    println!(
        "\nmemory: {:.1} bytes/row including the primary-key index (target <= 32); rows now: {table}",
        lc_bytes as f64 / rows as f64
    );
    // Keeps the timed work observable so the optimiser cannot drop it.
    if check == i64::MIN {
        println!("{check}");
    }
}
