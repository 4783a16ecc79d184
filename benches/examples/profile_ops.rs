//! Runs one Lightcone workload in a loop, for profilers (`perf record`, callgrind).
//!
//! `cargo run --release -p lightcone-benches --example profile_ops -- <insert|point|range|scan|commit>`

use lightcone_benches::{LcTable, Rng};

const ROWS: u32 = 1_000_000;

fn main() {
    let op = std::env::args().nth(1).unwrap_or_default();
    let mut rng = Rng::new(9);
    let mut sink = 0i64;
    match op.as_str() {
        "insert" => {
            for _ in 0..5 {
                sink += LcTable::build(ROWS).table as i64;
            }
        }
        "point" | "range" | "scan" => {
            let lc = LcTable::build(ROWS);
            let snap = lc.db.snapshot();
            for _ in 0..3_000_000 / if op == "point" { 1 } else { 1000 } {
                let k = rng.key(ROWS - 1000);
                sink += match op.as_str() {
                    "point" => lc.point_lookup(&snap, k).unwrap_or(0) as i64,
                    "range" => lc.range_sum(&snap, k, k + 1000),
                    _ => lc.column_sum(&snap),
                };
            }
        }
        "commit" => {
            let lc = LcTable::build(ROWS);
            for id in ROWS + 1..ROWS + 1_000_000 {
                lc.commit_one(id);
            }
        }
        _ => {
            eprintln!("usage: profile_ops <insert|point|range|scan|commit>");
            std::process::exit(2);
        }
    }
    println!("{sink}");
}
