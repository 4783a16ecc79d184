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
