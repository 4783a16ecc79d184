//! Runs one Lightcone workload in a loop, for profilers (`perf record`, callgrind).
//!
//! `cargo run --release -p lightcone-benches --example profile_ops -- <insert|point|range|scan|commit|replay>`

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
        "replay" => {
            // A 2M-row log (10k rows per transaction), replayed three times.
            let dir = std::env::temp_dir().join(format!("lightcone-profile-replay-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            {
                let db = lightcone_mvcc::Database::new();
                let opts = lightcone_wal::LogOptions {
                    durability: lightcone_wal::Durability::None,
                    ..Default::default()
                };
                let (log, _) = lightcone_wal::CommitLog::open(&dir, &db, opts, |_| {}).expect("open");
                let lc = LcTable { db, table: 0, pk: 0 };
                let mut tx = lc.db.begin();
                let t = tx.create_table(lightcone_benches::table_def()).expect("create");
                tx.commit_with(|d| log.append(d)).1.expect("append");
                for chunk in 0..200u32 {
                    let mut tx = lc.db.begin();
                    for i in 0..10_000u32 {
                        let id = chunk * 10_000 + i + 1;
                        tx.insert(
                            t,
                            vec![lightcone_mvcc::Value::U32(id), lightcone_mvcc::Value::I32(id as i32)],
                        )
                        .expect("insert");
                    }
                    tx.commit_with(|d| log.append(d)).1.expect("append");
                }
                log.flush().expect("flush");
            }
            for _ in 0..3 {
                let db = lightcone_mvcc::Database::new();
                let stats = lightcone_wal::replay_into(&dir, &db, None, |_| {}).expect("replay");
                eprintln!("replay: {:.2} M rows/s", stats.rows_per_second() / 1e6);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        "commit" => {
            let lc = LcTable::build(ROWS);
            for id in ROWS + 1..ROWS + 1_000_000 {
                lc.commit_one(id);
            }
        }
        _ => {
            eprintln!("usage: profile_ops <insert|point|range|scan|commit|replay>");
            std::process::exit(2);
        }
    }
    println!("{sink}");
}
