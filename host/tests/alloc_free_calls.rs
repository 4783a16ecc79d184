//! Allocations per call once warm. The host's call path allocates nothing; the one remaining
//! allocation of an empty reducer call is the engine publishing the committed version
//! (`Arc::new` in `mvcc`'s commit), so the bound is 1 (own test binary: it installs a
//! counting allocator).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use lightcone_host::{CallerInfo, ReducerArgs};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn an_empty_reducer_call_allocates_at_most_once() {
    let (mut host, _db) = common::publish("bench_module");
    let caller = CallerInfo::default();
    for _ in 0..1_000 {
        assert!(host.call_reducer("noop", &caller, ReducerArgs::Bsatn(Vec::new())).unwrap().is_committed());
    }
    const CALLS: u64 = 10_000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..CALLS {
        let out = host.call_reducer("noop", &caller, ReducerArgs::Bsatn(Vec::new())).unwrap();
        assert!(out.is_committed());
    }
    let per_call = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / CALLS as f64;
    assert!(
        per_call <= 1.0,
        "{per_call} allocations per empty reducer call (bound: 1, the published version)"
    );
}
