//! Lightcone's benchmark workloads, each paired with the same work on SQLite, plus the
//! helpers that report memory and Lightcone/SQLite ratios.
//!
//! Owns: workload definitions shared by the criterion benches (`benches/`) and the
//! `engine-demo` binary; a counting allocator for bytes-per-row measurements; the ratio report.
//! Does not own: anything the product runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};

use lightcone_mvcc::{ColumnDef, ColumnType, Database, IndexId, ReadTx, TableDef, TableId, Value};

/// A global allocator that counts live heap bytes, so a bench can report bytes per row.
/// Install it in a bench binary with `#[global_allocator]`.
pub struct CountingAlloc;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

impl CountingAlloc {
    /// Heap bytes currently allocated through this allocator.
    pub fn live_bytes() -> isize {
        LIVE_BYTES.load(Ordering::Relaxed)
    }
}

// SAFETY: defers every call to `System` with the caller's arguments unchanged; only adds
// bookkeeping of sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout (via `alloc`/`realloc` above).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// A cheap deterministic generator for keys (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `1..=n`.
    pub fn key(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32 + 1
    }
}

/// The `{id u32 primary key, v i32}` table in Lightcone.
pub struct LcTable {
    pub db: Database,
    pub table: TableId,
    pub pk: IndexId,
}

fn value_for(id: u32) -> i32 {
    (id as i32).wrapping_mul(7) - 3
}

/// `{id u32 primary key, v i32}`.
pub fn table_def() -> TableDef {
    TableDef::new("t", vec![ColumnDef::new("id", ColumnType::U32), ColumnDef::new("v", ColumnType::I32)])
        .with_primary_key(0)
}

impl LcTable {
    pub fn create() -> LcTable {
        let db = Database::new();
        let mut tx = db.begin();
        let def = table_def();
        // Invariant: a fresh database accepts this fixed, valid definition.
        let table = tx.create_table(def).expect("valid table definition");
        let pk = tx.table(table).expect("just created").schema().index_ids[0];
        tx.commit();
        LcTable { db, table, pk }
    }

    /// Inserts ids `1..=n` in one transaction.
    pub fn build(n: u32) -> LcTable {
        let t = LcTable::create();
        let mut tx = t.db.begin();
        for id in 1..=n {
            tx.insert(t.table, vec![Value::U32(id), Value::I32(value_for(id))]).expect("fresh ids");
        }
        tx.commit();
        t
    }

    pub fn point_lookup(&self, snapshot: &lightcone_mvcc::Snapshot, id: u32) -> Option<i32> {
        let view = snapshot.table(self.table).ok()?;
        let rid = view.unique_lookup(self.pk, &[Value::U32(id)]).ok()??;
        match view.get_value(rid, 1)? {
            Value::I32(v) => Some(v),
            _ => None,
        }
    }

    /// Sum of `v` for ids in `lo..hi`, through the primary-key index.
    pub fn range_sum(&self, snapshot: &lightcone_mvcc::Snapshot, lo: u32, hi: u32) -> i64 {
        let Ok(view) = snapshot.table(self.table) else { return 0 };
        let (lo, hi) = ([Value::U32(lo)], [Value::U32(hi)]);
        let Ok(scan) = view.index_range(self.pk, Bound::Included(&lo), Bound::Excluded(&hi)) else {
            return 0;
        };
        scan.filter_map(|rid| match view.get_value(rid, 1) {
            Some(Value::I32(v)) => Some(v as i64),
            _ => None,
        })
        .sum()
    }

    /// Sum of the whole `v` column, column-at-a-time over typed page slices.
    pub fn column_sum(&self, snapshot: &lightcone_mvcc::Snapshot) -> i64 {
        let Ok(view) = snapshot.table(self.table) else { return 0 };
        let layout = view.layout();
        let mut sum = 0i64;
        for (_, page) in view.pages() {
            let Ok(values) = page.column::<i32>(layout, 1) else { return 0 };
            for (w, &word) in page.occupancy(layout).iter().enumerate() {
                let chunk = &values[w * 64..(w * 64 + 64).min(values.len())];
                if word == u64::MAX {
                    sum += chunk.iter().map(|&v| v as i64).sum::<i64>();
                } else {
                    let mut bits = word;
                    while bits != 0 {
                        sum += chunk[bits.trailing_zeros() as usize] as i64;
                        bits &= bits - 1;
                    }
                }
            }
        }
        sum
    }

    /// One transaction inserting one row.
    pub fn commit_one(&self, id: u32) {
        let mut tx = self.db.begin();
        tx.insert(self.table, vec![Value::U32(id), Value::I32(value_for(id))]).expect("fresh id");
        tx.commit();
    }
}

/// The same table in an in-memory SQLite database (`INTEGER PRIMARY KEY`, SQLite's fastest key).
pub struct SqliteTable {
    pub conn: rusqlite::Connection,
}

impl SqliteTable {
    pub fn create() -> SqliteTable {
        let conn = rusqlite::Connection::open_in_memory().expect("in-memory sqlite");
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);").expect("create");
        SqliteTable { conn }
    }

    pub fn build(n: u32) -> SqliteTable {
        let mut t = SqliteTable::create();
        let tx = t.conn.transaction().expect("begin");
        {
            let mut insert = tx.prepare("INSERT INTO t (id, v) VALUES (?1, ?2)").expect("prepare");
            for id in 1..=n {
                insert.execute((id, value_for(id))).expect("insert");
            }
        }
        tx.commit().expect("commit");
        t
    }

    pub fn point_lookup(&self, id: u32) -> Option<i32> {
        let mut stmt = self.conn.prepare_cached("SELECT v FROM t WHERE id = ?1").ok()?;
        stmt.query_row([id], |r| r.get(0)).ok()
    }

    pub fn range_sum(&self, lo: u32, hi: u32) -> i64 {
        let mut stmt =
            self.conn.prepare_cached("SELECT v FROM t WHERE id >= ?1 AND id < ?2").expect("prepare");
        let rows = stmt.query_map([lo, hi], |r| r.get::<_, i64>(0)).expect("query");
        rows.map(|r| r.unwrap_or(0)).sum()
    }

    pub fn column_sum(&self) -> i64 {
        self.conn.query_row("SELECT SUM(v) FROM t", [], |r| r.get(0)).expect("sum")
    }

    pub fn commit_one(&self, id: u32) {
        self.conn.prepare_cached("BEGIN").and_then(|mut s| s.execute([])).expect("begin");
        self.conn
            .prepare_cached("INSERT INTO t (id, v) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute((id, value_for(id))))
            .expect("insert");
        self.conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).expect("commit");
    }
}

/// Median time of one criterion benchmark, in nanoseconds, read from its saved estimates.
pub fn criterion_median_ns(criterion_dir: &Path, group: &str, function: &str) -> Option<f64> {
    let path = criterion_dir.join(group).join(function).join("new").join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Formats nanoseconds with a sensible unit.
pub fn format_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Prints one line per group: Lightcone median, SQLite median and the speed-up.
pub fn print_ratio_table(criterion_dir: &Path, groups: &[&str]) {
    println!();
    println!("{:<28} {:>12} {:>12} {:>10}", "operation", "lightcone", "sqlite", "speed-up");
    for group in groups {
        let lc = criterion_median_ns(criterion_dir, group, "lightcone");
        let sq = criterion_median_ns(criterion_dir, group, "sqlite");
        match (lc, sq) {
            (Some(lc), Some(sq)) => {
                println!("{group:<28} {:>12} {:>12} {:>9.1}x", format_ns(lc), format_ns(sq), sq / lc)
            }
            _ => println!("{group:<28} (no estimates: run with `cargo bench`)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves both engines hold the same data and the workloads compute the same answers,
    // so the benchmark compares like with like.
    #[test]
    fn workloads_agree_with_sqlite() {
        let n = 5000;
        let lc = LcTable::build(n);
        let sq = SqliteTable::build(n);
        let snap = lc.db.snapshot();
        let mut rng = Rng::new(7);
        for _ in 0..200 {
            let k = rng.key(n);
            assert_eq!(lc.point_lookup(&snap, k), sq.point_lookup(k));
            assert_eq!(lc.range_sum(&snap, k, k + 100), sq.range_sum(k, k + 100));
        }
        assert_eq!(lc.point_lookup(&snap, n + 1), None);
        assert_eq!(lc.column_sum(&snap), sq.column_sum());
        lc.commit_one(n + 1);
        sq.commit_one(n + 1);
        let snap = lc.db.snapshot();
        assert_eq!(lc.column_sum(&snap), sq.column_sum());
        assert_eq!(lc.point_lookup(&snap, n + 1), sq.point_lookup(n + 1));
    }
}
