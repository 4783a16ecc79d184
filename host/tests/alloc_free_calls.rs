//! Allocations per call once warm: an empty reducer call allocates nothing at all — host call
//! path, engine transaction and commit included (own test binary: it installs a counting
//! allocator).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use lightcone_host::{CallerInfo, ReducerArgs};

struct Counting;

thread_local! {
    // Per thread, so tests running side by side do not count each other's allocations
    // (const-initialized: reading it never allocates).
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_allocation() {
    // `try_with`: the slot is gone while a thread's locals are being destroyed.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn an_empty_reducer_call_allocates_nothing() {
    let (mut host, _db) = common::publish("bench_module");
    let caller = CallerInfo::default();
    for _ in 0..1_000 {
        assert!(host.call_reducer("noop", &caller, ReducerArgs::Bsatn(Vec::new())).unwrap().is_committed());
    }
    const CALLS: u64 = 10_000;
    let before = allocations();
    for _ in 0..CALLS {
        let out = host.call_reducer("noop", &caller, ReducerArgs::Bsatn(Vec::new())).unwrap();
        assert!(out.is_committed());
    }
    let per_call = (allocations() - before) as f64 / CALLS as f64;
    assert!(per_call == 0.0, "{per_call} allocations per empty reducer call (expected none)");
}

#[test]
fn a_one_row_insert_allocates_a_bounded_few_times() {
    let (mut host, _db) = common::publish("bench_module");
    let caller = CallerInfo::default();
    let args = |id: u64| {
        let mut bytes = id.to_le_bytes().to_vec();
        bytes.extend_from_slice(&7i64.to_le_bytes());
        ReducerArgs::Bsatn(bytes)
    };
    for id in 0..1_000 {
        assert!(host.call_reducer("insert_one", &caller, args(id)).unwrap().is_committed());
    }
    const CALLS: u64 = 10_000;
    let prepared: Vec<ReducerArgs> = (1_000..1_000 + CALLS).map(args).collect();
    let before = allocations();
    for a in prepared {
        let out = host.call_reducer("insert_one", &caller, a).unwrap();
        assert!(out.is_committed());
    }
    let per_call = (allocations() - before) as f64 / CALLS as f64;
    eprintln!("{per_call} allocations per one-row insert call");
    // Measured 12: the decoded row, the transaction's change log for the table, and the commit's
    // delta (row list, table entry, the `Arc` handed to subscribers). A regression guard, not a
    // target.
    assert!(per_call <= 16.0, "{per_call} allocations per one-row insert call (measured 12)");
}

/// Calls `reducer` 1k times to warm up, then `CALLS` times, and returns allocations per call.
fn allocations_per_call(
    host: &mut lightcone_host::ModuleHost,
    reducer: &str,
    args: impl Fn(u64) -> ReducerArgs,
) -> f64 {
    let caller = CallerInfo::default();
    for i in 0..1_000 {
        assert!(host.call_reducer(reducer, &caller, args(i)).unwrap().is_committed());
    }
    const CALLS: u64 = 10_000;
    let prepared: Vec<ReducerArgs> = (1_000..1_000 + CALLS).map(&args).collect();
    let before = allocations();
    for a in prepared {
        assert!(host.call_reducer(reducer, &caller, a).unwrap().is_committed());
    }
    (allocations() - before) as f64 / CALLS as f64
}

#[test]
fn a_primary_key_lookup_allocates_a_bounded_few_times() {
    let (mut host, _db) = common::publish("bench_module");
    let seed = |_| {
        let mut bytes = 0u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&100u32.to_le_bytes());
        ReducerArgs::Bsatn(bytes)
    };
    let caller = CallerInfo::default();
    assert!(host.call_reducer("insert_many", &caller, seed(0)).unwrap().is_committed());
    let per_call = allocations_per_call(&mut host, "find_by_pk", |i| {
        ReducerArgs::Bsatn((i % 100).to_le_bytes().to_vec())
    });
    eprintln!("{per_call} allocations per primary-key lookup call");
    // Measured 3: the decoded key, the engine's encoded key and the row read back. (It was 9
    // while the lookup built an id list, a row list and a fresh iterator, and cloned the
    // index's description.) A regression guard, not a target.
    assert!(per_call <= 5.0, "{per_call} allocations per primary-key lookup call (measured 3)");
}

#[test]
fn a_transfer_allocates_a_bounded_few_times() {
    let (mut host, _db) = common::publish("bench_module");
    let caller = CallerInfo::default();
    let mut seed = 1_000u32.to_le_bytes().to_vec();
    seed.extend_from_slice(&1_000_000i64.to_le_bytes());
    assert!(host.call_reducer("seed_accounts", &caller, ReducerArgs::Bsatn(seed)).unwrap().is_committed());
    let per_call = allocations_per_call(&mut host, "transfer", |i| {
        let from = (i * 7 % 1_000) as u32;
        let mut bytes = from.to_le_bytes().to_vec();
        bytes.extend_from_slice(&((from + 1) % 1_000).to_le_bytes());
        bytes.extend_from_slice(&1i64.to_le_bytes());
        ReducerArgs::Bsatn(bytes)
    });
    eprintln!("{per_call} allocations per transfer call");
    // Measured 36 (50 before lookups stopped building lists, 38 before updates stopped cloning
    // the key out of the row): two lookups, two updates (decoded row, encoded key, old row kept
    // for undo) and the commit's delta. A regression guard.
    assert!(per_call <= 40.0, "{per_call} allocations per transfer call (measured 36)");
}
