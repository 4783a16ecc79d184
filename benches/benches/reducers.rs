//! Reducer-call benchmarks: the `bench_module` fixture (built with the official `spacetimedb`
//! crate by `scripts/build-fixtures.sh`) called in-process, no durability. SQLite does the
//! closest equivalent work in the same run (a one-row insert transaction; a pk lookup), so the
//! ratio says what running logic inside the database costs or saves.
//!
//! Run: `bash scripts/build-fixtures.sh && cargo bench -p lightcone-benches --bench reducers`
//! Prints criterion medians, then p50/p99 of single calls timed one by one (DESIGN §7 target:
//! trivial reducer p50 ≤ 1.5 µs, p99 ≤ 5 µs).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use lightcone_benches::{format_ns, print_ratio_table, SqliteTable};
use lightcone_host::{CallerInfo, HostConfig, ModuleHost, ReducerArgs, WasmEngine};
use lightcone_mvcc::Database;

/// The `lightcone` server binary's allocator, so the numbers are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GROUPS: &[&str] =
    &["empty_reducer", "insert_1_row_reducer", "insert_100_rows_reducer", "filter_by_pk_reducer"];

fn fixture() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures/wasm/bench_module.wasm");
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-fixtures.sh first", path.display()))
}

fn host(engine: &WasmEngine) -> ModuleHost {
    let db = Arc::new(Database::new());
    ModuleHost::publish(engine, db, None, &fixture(), [1; 32], HostConfig::default()).expect("publish").0
}

fn args_u64_i64(a: u64, b: i64) -> ReducerArgs {
    let mut v = a.to_le_bytes().to_vec();
    v.extend_from_slice(&b.to_le_bytes());
    ReducerArgs::Bsatn(v)
}

fn call(h: &mut ModuleHost, name: &str, args: ReducerArgs) {
    let out = h.call_reducer(name, &CallerInfo::default(), args).expect("call");
    debug_assert!(out.is_committed(), "{:?}", out.error());
    black_box(out);
}

fn percentiles(label: &str, mut f: impl FnMut(u64)) {
    const N: u64 = 100_000;
    for i in 0..10_000 {
        f(i);
    }
    let mut times: Vec<u64> = (0..N)
        .map(|i| {
            let t = Instant::now();
            f(10_000 + i);
            t.elapsed().as_nanos() as u64
        })
        .collect();
    times.sort_unstable();
    let p = |q: f64| times[((N as f64 * q) as usize).min(times.len() - 1)] as f64;
    println!("{label:<28} p50 {:>10}   p99 {:>10}", format_ns(p(0.50)), format_ns(p(0.99)));
}

fn main() {
    let engine = WasmEngine::new().expect("engine");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("criterion");
    let mut c = Criterion::default()
        .output_directory(&dir)
        .configure_from_args()
        .measurement_time(Duration::from_secs(4));

    let mut h = host(&engine);
    let sq = SqliteTable::create();
    let mut g = c.benchmark_group("empty_reducer");
    g.bench_function("lightcone", |b| b.iter(|| call(&mut h, "noop", ReducerArgs::Bsatn(Vec::new()))));
    g.finish();

    let mut next = 0u64;
    let mut g = c.benchmark_group("insert_1_row_reducer");
    g.bench_function("lightcone", |b| {
        b.iter(|| {
            next += 1;
            call(&mut h, "insert_one", args_u64_i64(next, 7))
        })
    });
    let mut sq_next = 0u32;
    g.bench_function("sqlite", |b| {
        b.iter(|| {
            sq_next += 1;
            sq.commit_one(sq_next)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("insert_100_rows_reducer");
    let mut start = 1u64 << 40;
    g.bench_function("lightcone", |b| {
        b.iter(|| {
            let mut v = start.to_le_bytes().to_vec();
            v.extend_from_slice(&100u32.to_le_bytes());
            start += 100;
            call(&mut h, "insert_many", ReducerArgs::Bsatn(v))
        })
    });
    g.finish();

    let rows = next.max(1);
    let mut k = 0u64;
    let mut g = c.benchmark_group("filter_by_pk_reducer");
    g.bench_function("lightcone", |b| {
        b.iter(|| {
            k = k % rows + 1;
            call(&mut h, "find_by_pk", ReducerArgs::Bsatn(k.to_le_bytes().to_vec()))
        })
    });
    let sq_rows = sq_next.max(1);
    let mut j = 0u32;
    g.bench_function("sqlite", |b| {
        b.iter(|| {
            j = j % sq_rows + 1;
            black_box(sq.point_lookup(j))
        })
    });
    g.finish();

    c.final_summary();
    print_ratio_table(&dir, GROUPS);
    println!("\nsingle calls, timed one by one (100k each, after 10k warm-up):");
    let mut h = host(&engine);
    percentiles("empty_reducer", |_| call(&mut h, "noop", ReducerArgs::Bsatn(Vec::new())));
    percentiles("insert_1_row_reducer", |i| call(&mut h, "insert_one", args_u64_i64(i, 1)));
    percentiles("filter_by_pk_reducer", |i| {
        call(&mut h, "find_by_pk", ReducerArgs::Bsatn((i % 100_000 + 1).to_le_bytes().to_vec()))
    });
    // The transfer workload's reducer (`loadgen` runs it over WebSocket): what one transaction
    // costs the database thread before any server or durability work.
    const ACCOUNTS: u32 = 100_000;
    let mut seed = ACCOUNTS.to_le_bytes().to_vec();
    seed.extend_from_slice(&1_000_000_000i64.to_le_bytes());
    call(&mut h, "seed_accounts", ReducerArgs::Bsatn(seed));
    percentiles("transfer_reducer", |i| {
        // Distinct pseudo-random accounts (a multiplicative hash of the call number).
        let from = (i.wrapping_mul(0x9E37_79B9) % u64::from(ACCOUNTS)) as u32;
        let to = (from + 1 + (i % 97) as u32) % ACCOUNTS;
        let mut v = from.to_le_bytes().to_vec();
        v.extend_from_slice(&to.to_le_bytes());
        v.extend_from_slice(&1i64.to_le_bytes());
        call(&mut h, "transfer", ReducerArgs::Bsatn(v))
    });
}
