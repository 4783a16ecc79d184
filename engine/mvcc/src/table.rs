//! One table's versioned state (pages, indexes, sequences) and the read-only view of it.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use lightcone_btree_index::{key, BTree, BTreeError, MAX_KEY_BYTES};
use lightcone_page::{Page, PageError, PageLayout, Row, RowId, Value};

use crate::error::MvccError;
use crate::pvec::PVec;
use crate::schema::{IndexId, TableId, TableSchema};

/// Most pages one table may have (page numbers are `u32`).
pub const MAX_PAGES_PER_TABLE: usize = u32::MAX as usize;
/// Longest key shown in a unique-violation message.
const MAX_KEY_DISPLAY_CHARS: usize = 200;
/// Hinted pages an insert tries before it appends a new page.
const MAX_HINT_PROBES: usize = 4;

/// A table at one version. Cloning is cheap (everything big is shared behind `Arc`), and the
/// writer copies only what it changes while a snapshot still shares it.
#[derive(Clone)]
pub(crate) struct TableState {
    pub(crate) schema: Arc<TableSchema>,
    pub(crate) layout: Arc<PageLayout>,
    pub(crate) pages: PVec<Page>,
    /// Parallel to `schema.def.indexes`.
    pub(crate) indexes: Vec<BTree>,
    /// Next value of each sequence, parallel to `schema.def.sequences`; `None` once the
    /// sequence has stepped past what `i128` holds (it is exhausted).
    pub(crate) seq_next: Vec<Option<i128>>,
    pub(crate) rows: u64,
}

/// Writer-only bookkeeping for one table: pages that may have room. Never shared with readers,
/// so it lives outside the versioned state; every hint is verified before use.
#[derive(Default, Debug, Clone)]
pub(crate) struct FreeHints {
    pub(crate) pages: BTreeSet<u32>,
}

impl TableState {
    pub(crate) fn new(schema: TableSchema, layout: PageLayout) -> TableState {
        let indexes = schema
            .def
            .indexes
            .iter()
            .map(|idx| {
                let types: Vec<_> = idx.columns.iter().map(|&c| schema.def.columns[c as usize].ty).collect();
                BTree::new(idx.unique, key::fixed_key_width(&types))
            })
            .collect();
        let seq_next = schema.def.sequences.iter().map(|s| Some(s.start)).collect();
        TableState {
            schema: Arc::new(schema),
            layout: Arc::new(layout),
            pages: PVec::new(),
            indexes,
            seq_next,
            rows: 0,
        }
    }

    fn name(&self) -> &str {
        self.schema.name()
    }

    pub(crate) fn index_key(&self, index: usize, row: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_index_key(index, row, &mut out);
        out
    }

    pub(crate) fn encode_index_key(&self, index: usize, row: &[Value], out: &mut Vec<u8>) {
        for &col in &self.schema.def.indexes[index].columns {
            key::encode_value(out, &row[col as usize]);
        }
    }

    fn unique_violation(&self, index: usize, row: &[Value]) -> MvccError {
        let idx = &self.schema.def.indexes[index];
        let key: Vec<String> = idx.columns.iter().map(|&c| row[c as usize].to_string()).collect();
        let mut key = format!("({})", key.join(", "));
        if key.len() > MAX_KEY_DISPLAY_CHARS {
            // Keep messages readable: a key can be kilobytes long.
            let cut = (0..=MAX_KEY_DISPLAY_CHARS).rev().find(|&i| key.is_char_boundary(i)).unwrap_or(0);
            key.truncate(cut);
            key.push('…');
        }
        MvccError::UniqueViolation { table: self.name().to_string(), index: idx.name.clone(), key }
    }

    pub(crate) fn page_error(&self, e: PageError) -> MvccError {
        let table = self.name().to_string();
        match e {
            PageError::WrongArity { expected, got } => MvccError::WrongArity { table, expected, got },
            PageError::TypeMismatch { column, expected, got } => MvccError::TypeMismatch {
                column: self.schema.column_name(column).to_string(),
                table,
                expected,
                got,
            },
            PageError::ValueTooLarge { column, bytes, max } => MvccError::ValueTooLarge {
                column: self.schema.column_name(column).to_string(),
                table,
                bytes,
                max,
            },
            PageError::RowTooLarge { bytes, max } | PageError::FixedRowTooWide { bytes, max } => {
                MvccError::RowTooLarge { table, bytes, max }
            }
            other => MvccError::InvalidSchema { table, reason: other.to_string() },
        }
    }

    /// Validates `row` and fills in sequence values (an integer zero in an auto-inc column asks
    /// for the next value). Changes nothing in the table; returns the sequence advances to apply
    /// once the row is stored.
    pub(crate) fn prepare_row(&self, row: &mut Row) -> Result<Vec<(usize, Option<i128>)>, MvccError> {
        self.layout.check_row(row).map_err(|e| self.page_error(e))?;
        let mut advances = Vec::new();
        for (i, seq) in self.schema.def.sequences.iter().enumerate() {
            let col = seq.column as usize;
            if !row[col].is_integer_zero() {
                continue;
            }
            let exhausted = || MvccError::SequenceExhausted {
                table: self.name().to_string(),
                column: self.schema.column_name(col).to_string(),
            };
            let value = self.seq_next[i].filter(|v| (seq.min..=seq.max).contains(v)).ok_or_else(exhausted)?;
            row[col] = Value::integer_of_type(row[col].column_type(), value).ok_or_else(exhausted)?;
            advances.push((i, value.checked_add(seq.increment)));
        }
        self.check_key_sizes(row)?;
        Ok(advances)
    }

    /// Validates a row that is stored exactly as given (log replay: no sequence filling).
    pub(crate) fn check_row_as_is(&self, row: &[Value]) -> Result<(), MvccError> {
        self.layout.check_row(row).map_err(|e| self.page_error(e))?;
        self.check_key_sizes(row)
    }

    /// Only keys over variable-length columns can outgrow the tree's limit.
    fn check_key_sizes(&self, row: &[Value]) -> Result<(), MvccError> {
        for (i, _) in self.indexes.iter().enumerate().filter(|(_, t)| t.key_width().is_none()) {
            let bytes = self.index_key(i, row).len();
            if bytes > MAX_KEY_BYTES {
                return Err(MvccError::KeyTooLarge {
                    table: self.name().to_string(),
                    index: self.schema.def.indexes[i].name.clone(),
                    bytes,
                    max: MAX_KEY_BYTES,
                });
            }
        }
        Ok(())
    }

    /// Fails if `row` would collide in a unique index with any row other than `replacing`.
    pub(crate) fn check_unique(&self, row: &[Value], replacing: Option<RowId>) -> Result<(), MvccError> {
        for (i, tree) in self.indexes.iter().enumerate().filter(|(_, t)| t.is_unique()) {
            if let Some(existing) = tree.get(&self.index_key(i, row)) {
                if Some(RowId::from_u64(existing)) != replacing {
                    return Err(self.unique_violation(i, row));
                }
            }
        }
        Ok(())
    }

    /// Stores a row prepared by [`TableState::prepare_row`] and indexes it. Unique indexes are
    /// checked by the insert itself (one descent per index); on a duplicate everything done so
    /// far is undone, so a failed insert changes nothing visible.
    /// `key` is scratch space for index keys (callers inserting many rows reuse one).
    pub(crate) fn insert_row(
        &mut self,
        row: &[Value],
        advances: Vec<(usize, Option<i128>)>,
        hints: &mut FreeHints,
        dropped_hints: &mut Vec<u32>,
        key: &mut Vec<u8>,
    ) -> Result<RowId, MvccError> {
        let (rid, created_page) = self.store_row(row, hints, dropped_hints)?;
        if let Err(i) = index_row(&self.schema, &mut self.indexes, row, rid, key) {
            let layout = Arc::clone(&self.layout);
            if let Some(page) = self.pages.get_mut(rid.page() as usize) {
                page.delete(&layout, rid.slot());
            }
            if created_page {
                // The page was appended for this row and is empty again.
                self.truncate_pages(rid.page() as usize);
            } else {
                hints.pages.insert(rid.page());
            }
            return Err(self.unique_violation(i, row));
        }
        for (i, next) in advances {
            self.seq_next[i] = next;
        }
        self.rows += 1;
        Ok(rid)
    }

    /// Stores rows exactly as given (log replay), with their index entries, calling `stored`
    /// with each row id. Every row is checked before any is stored. A page is looked up once
    /// for the whole run of rows it takes rather than once per row: each lookup for writing
    /// walks copy-on-write nodes with an atomic test per level, most of a replayed row's cost
    /// otherwise. On a duplicate key the rows stored before it stay (the caller's undo log has
    /// them) and the error is returned.
    pub(crate) fn insert_rows_as_is(
        &mut self,
        rows: &[Row],
        hints: &mut FreeHints,
        dropped_hints: &mut Vec<u32>,
        key: &mut Vec<u8>,
        mut stored: impl FnMut(RowId),
    ) -> Result<(), MvccError> {
        for row in rows {
            self.check_row_as_is(row)?;
        }
        let mut next = 0;
        while next < rows.len() {
            // The first row of a run goes where any insert would (a hinted page or a new one).
            let rid = self.insert_row(&rows[next], Vec::new(), hints, dropped_hints, key)?;
            stored(rid);
            next += 1;
            let page_no = rid.page();
            let TableState { schema, layout, pages, indexes, rows: count, .. } = self;
            // Invariant: `insert_row` just stored a row in this page.
            let page = pages.get_mut(page_no as usize).expect("page of the stored row exists");
            let mut duplicate = None;
            while let Some(row) = rows.get(next).filter(|r| page.can_fit(layout, r)) {
                // Invariant: `can_fit` said yes, and the row passed `check_row_as_is`.
                let slot = page.insert(layout, row).expect("the page fits the row");
                let rid = RowId::new(page_no, slot);
                if let Err(i) = index_row(schema, indexes, row, rid, key) {
                    page.delete(layout, slot);
                    duplicate = Some(i);
                    break;
                }
                *count += 1;
                stored(rid);
                next += 1;
            }
            if !page.has_free_slot(layout) && hints.pages.remove(&page_no) {
                dropped_hints.push(page_no);
            }
            if let Some(i) = duplicate {
                hints.pages.insert(page_no); // the refused row's slot is free again
                return Err(self.unique_violation(i, &rows[next]));
            }
        }
        Ok(())
    }

    /// Puts the row in a page with room (a hinted one, else a new one). Returns its id and
    /// whether the page was created for it.
    fn store_row(
        &mut self,
        row: &[Value],
        hints: &mut FreeHints,
        dropped_hints: &mut Vec<u32>,
    ) -> Result<(RowId, bool), MvccError> {
        let layout = Arc::clone(&self.layout);
        let mut chosen = None;
        let mut stale = Vec::new();
        // Newest hinted pages first. A page without a free slot (or gone after a rollback)
        // loses its hint; one with slots but too little heap for this row keeps it.
        for &p in hints.pages.iter().rev().take(MAX_HINT_PROBES) {
            match self.pages.get(p as usize) {
                Some(page) if page.can_fit(&layout, row) => {
                    chosen = Some(p);
                    break;
                }
                Some(page) if page.has_free_slot(&layout) => {}
                _ => stale.push(p),
            }
        }
        for p in stale {
            hints.pages.remove(&p);
            dropped_hints.push(p);
        }
        let created = chosen.is_none();
        let page_no = match chosen {
            Some(p) => p,
            None => {
                if self.pages.len() >= MAX_PAGES_PER_TABLE {
                    return Err(MvccError::TooManyPages {
                        table: self.name().to_string(),
                        max: MAX_PAGES_PER_TABLE,
                    });
                }
                self.pages.push(Page::new());
                let p = (self.pages.len() - 1) as u32;
                hints.pages.insert(p);
                p
            }
        };
        // Invariant: `page_no` exists and was checked to fit the row (or is a new, empty page,
        // which fits any row that passed `check_row`).
        let page = self.pages.get_mut(page_no as usize).expect("page exists");
        let slot = page.insert(&layout, row).expect("page was checked to fit the row");
        if !page.has_free_slot(&layout) {
            hints.pages.remove(&page_no);
            dropped_hints.push(page_no);
        }
        Ok((RowId::new(page_no, slot), created))
    }

    /// Drops empty pages past `len` (pages appended by a transaction being undone).
    pub(crate) fn truncate_pages(&mut self, len: usize) {
        debug_assert!(self.pages.iter().skip(len).all(|p| p.live_rows() == 0), "truncating live rows");
        self.pages.truncate(len);
    }

    /// Puts `row` back at `rid` (which must be free), with its index entries: undoes a delete.
    pub(crate) fn restore_row(&mut self, rid: RowId, row: &[Value]) {
        let layout = Arc::clone(&self.layout);
        // Invariant: the row was deleted from this page in the transaction being undone, and
        // everything inserted since has been removed, so its slot is free and the page's heap
        // (after compaction) has the room the row had before.
        let page = self.pages.get_mut(rid.page() as usize).expect("page of a deleted row exists");
        let stored = page.insert_at(&layout, rid.slot(), row);
        assert!(stored.is_ok(), "undo could not restore {rid:?}: {stored:?}");
        for i in 0..self.indexes.len() {
            let k = self.index_key(i, row);
            let indexed = self.indexes[i].insert(&k, rid.to_u64());
            debug_assert!(indexed.is_ok(), "undo could not re-index {rid:?}: {indexed:?}");
        }
        self.rows += 1;
    }

    /// Whether rows `a` and `b` have the same key in every index (compared as encoded keys, so
    /// `0.0` and `-0.0` differ as the index sees them).
    pub(crate) fn same_index_keys(&self, a: &[Value], b: &[Value]) -> bool {
        let (mut key_a, mut key_b) = (Vec::new(), Vec::new());
        (0..self.indexes.len()).all(|i| {
            key_a.clear();
            key_b.clear();
            self.encode_index_key(i, a, &mut key_a);
            self.encode_index_key(i, b, &mut key_b);
            key_a == key_b
        })
    }

    /// Overwrites the row at `rid`, which holds `old`, with `row`. Every index key of `row`
    /// must equal `old`'s ([`TableState::same_index_keys`]), so no index changes. False, with
    /// nothing changed, if the page's heap has no room for `row`.
    pub(crate) fn replace_row(&mut self, rid: RowId, old: &[Value], row: &[Value]) -> bool {
        debug_assert!(self.same_index_keys(old, row), "an in-place update must keep every index key");
        let layout = Arc::clone(&self.layout);
        let Some(page) = self.pages.get_mut(rid.page() as usize) else { return false };
        if !page.delete(&layout, rid.slot()) {
            return false;
        }
        if page.insert_at(&layout, rid.slot(), row).is_ok() {
            return true;
        }
        let restored = page.insert_at(&layout, rid.slot(), old);
        // Invariant: `old` was in this slot a moment ago, and deleting it freed its heap bytes.
        assert!(restored.is_ok(), "could not put {rid:?} back after a failed in-place update: {restored:?}");
        false
    }

    /// Removes the row at `rid`, returning it; `None` if there is no such row.
    pub(crate) fn delete(&mut self, rid: RowId, hints: &mut FreeHints) -> Option<Row> {
        let row = self.view().get(rid)?;
        for i in 0..self.indexes.len() {
            let k = self.index_key(i, &row);
            let removed = self.indexes[i].remove(&k, rid.to_u64());
            debug_assert!(removed, "index {i} of `{}` lacked an entry for {rid:?}", self.name());
        }
        let layout = Arc::clone(&self.layout);
        // Invariant: `get` above found the row, so its page exists.
        let page = self.pages.get_mut(rid.page() as usize).expect("page exists");
        let deleted = page.delete(&layout, rid.slot());
        debug_assert!(deleted);
        hints.pages.insert(rid.page());
        self.rows -= 1;
        Some(row)
    }

    pub(crate) fn view(&self) -> TableView<'_> {
        TableView { table: self }
    }
}

/// Adds `row`'s entries (stored at `rid`) to every index of the table `schema` describes, in
/// order. On a duplicate key in index `i` the entries added to the indexes before it are taken
/// out again and `Err(i)` returned: the row is then in no index.
fn index_row(
    schema: &TableSchema,
    indexes: &mut [BTree],
    row: &[Value],
    rid: RowId,
    key: &mut Vec<u8>,
) -> Result<(), usize> {
    let encode = |i: usize, key: &mut Vec<u8>| {
        key.clear();
        for &col in &schema.def.indexes[i].columns {
            key::encode_value(key, &row[col as usize]);
        }
    };
    for i in 0..indexes.len() {
        encode(i, key);
        if let Err(e) = indexes[i].insert(key, rid.to_u64()) {
            // Invariant: keys are encoded from the table's own index definitions (so the width
            // is right) and their size was checked before the row was stored; a non-unique
            // index cannot already hold the new row id. So only a duplicate key can get here.
            debug_assert!(matches!(e, BTreeError::DuplicateKey { .. }), "index insert failed: {e}");
            for (j, tree) in indexes.iter_mut().enumerate().take(i) {
                encode(j, key);
                let undone = tree.remove(key, rid.to_u64());
                debug_assert!(undone);
            }
            return Err(i);
        }
    }
    Ok(())
}

/// A read-only view of one table at one version (from a [`crate::Snapshot`] or a
/// [`crate::WriteTx`], which sees its own writes).
#[derive(Clone, Copy)]
pub struct TableView<'a> {
    table: &'a TableState,
}

impl<'a> TableView<'a> {
    pub fn id(&self) -> TableId {
        self.table.schema.id
    }

    pub fn schema(&self) -> &'a TableSchema {
        &self.table.schema
    }

    pub fn layout(&self) -> &'a PageLayout {
        &self.table.layout
    }

    pub fn row_count(&self) -> u64 {
        self.table.rows
    }

    /// Each sequence's next number, in schema order (`None`: exhausted past `i128`).
    pub fn sequence_next(&self) -> &'a [Option<i128>] {
        &self.table.seq_next
    }

    pub fn page_count(&self) -> usize {
        self.table.pages.len()
    }

    /// Pages with their numbers, for column-at-a-time scans via [`Page::column`] and
    /// [`Page::occupancy`].
    pub fn pages(&self) -> impl Iterator<Item = (u32, &'a Page)> + 'a {
        self.table.pages.iter().enumerate().map(|(i, p)| (i as u32, p))
    }

    pub fn contains(&self, rid: RowId) -> bool {
        self.table
            .pages
            .get(rid.page() as usize)
            .is_some_and(|p| p.is_occupied(&self.table.layout, rid.slot()))
    }

    pub fn get(&self, rid: RowId) -> Option<Row> {
        self.table.pages.get(rid.page() as usize)?.read_row(&self.table.layout, rid.slot())
    }

    /// One value of a row, without materialising the rest.
    pub fn get_value(&self, rid: RowId, col: usize) -> Option<Value> {
        self.table.pages.get(rid.page() as usize)?.read_value(&self.table.layout, rid.slot(), col)
    }

    /// Every row id, in page/slot order.
    pub fn row_ids(&self) -> impl Iterator<Item = RowId> + 'a {
        let layout = &*self.table.layout;
        self.table
            .pages
            .iter()
            .enumerate()
            .flat_map(move |(p, page)| page.occupied_slots(layout).map(move |s| RowId::new(p as u32, s)))
    }

    /// Every row, in page/slot order.
    pub fn scan(&self) -> impl Iterator<Item = (RowId, Row)> + 'a {
        let layout = &*self.table.layout;
        self.table.pages.iter().enumerate().flat_map(move |(p, page)| {
            // Invariant: `occupied_slots` yields only occupied slots, which always read back.
            page.occupied_slots(layout)
                .filter_map(move |s| Some((RowId::new(p as u32, s), page.read_row(layout, s)?)))
        })
    }

    fn index_position(&self, index: IndexId) -> Result<usize, MvccError> {
        self.table.schema.index_position(index).ok_or(MvccError::NoSuchIndex(index))
    }

    /// Encodes a (prefix of a) key for index `pos`, checking arity and types.
    fn encode_prefix(&self, pos: usize, values: &[Value]) -> Result<Vec<u8>, MvccError> {
        let def = &self.table.schema.def.indexes[pos];
        if values.len() > def.columns.len() {
            return Err(MvccError::KeyArity {
                index: def.name.clone(),
                expected: def.columns.len(),
                got: values.len(),
            });
        }
        let mut out = Vec::new();
        for (v, &col) in values.iter().zip(&def.columns) {
            let expected = self.table.schema.def.columns[col as usize].ty;
            if v.column_type() != expected {
                return Err(MvccError::TypeMismatch {
                    table: self.table.schema.name().to_string(),
                    column: self.table.schema.column_name(col as usize).to_string(),
                    expected,
                    got: v.column_type(),
                });
            }
            key::encode_value(&mut out, v);
        }
        Ok(out)
    }

    /// Rows whose key equals `key` — a full key, or (B+tree indexes only) a prefix of the
    /// index's columns.
    pub fn index_seek(&self, index: IndexId, key: &[Value]) -> Result<IndexScan<'a>, MvccError> {
        let pos = self.index_position(index)?;
        let def = &self.table.schema.def.indexes[pos];
        if key.len() < def.columns.len() && !def.algorithm.supports_range() {
            return Err(MvccError::KeyArity {
                index: def.name.clone(),
                expected: def.columns.len(),
                got: key.len(),
            });
        }
        if def.unique && key.len() == def.columns.len() {
            // A point lookup (`find` by primary key): one descent instead of positioning a
            // range's two ends.
            return Ok(IndexScan { inner: Scan::Point(self.unique_lookup(index, key)?) });
        }
        self.range_on(pos, Bound::Included(key), Bound::Included(key))
    }

    /// The row id whose key equals `key` in a unique index.
    pub fn unique_lookup(&self, index: IndexId, key: &[Value]) -> Result<Option<RowId>, MvccError> {
        let pos = self.index_position(index)?;
        let def = &self.table.schema.def.indexes[pos];
        if !def.unique {
            return Err(MvccError::IndexNotUnique { index: def.name.clone() });
        }
        if key.len() != def.columns.len() {
            return Err(MvccError::KeyArity {
                index: def.name.clone(),
                expected: def.columns.len(),
                got: key.len(),
            });
        }
        let k = self.encode_prefix(pos, key)?;
        Ok(self.table.indexes[pos].get(&k).map(RowId::from_u64))
    }

    /// Rows whose key lies within the bounds, in key order (reversible). A bound may give a
    /// prefix of the index's columns: `Included(p)` at the low end starts at the first key
    /// beginning with `p`, at the high end stops after the last one.
    pub fn index_range(
        &self,
        index: IndexId,
        lo: Bound<&[Value]>,
        hi: Bound<&[Value]>,
    ) -> Result<IndexScan<'a>, MvccError> {
        let pos = self.index_position(index)?;
        let def = &self.table.schema.def.indexes[pos];
        if !def.algorithm.supports_range() {
            return Err(MvccError::WrongIndexAlgo { index: def.name.clone(), algorithm: def.algorithm });
        }
        self.range_on(pos, lo, hi)
    }

    fn range_on(
        &self,
        pos: usize,
        lo: Bound<&[Value]>,
        hi: Bound<&[Value]>,
    ) -> Result<IndexScan<'a>, MvccError> {
        let empty = || IndexScan { inner: Scan::Point(None) };
        // Prefix bounds: every key starting with prefix `p` lies in [p, successor(p)).
        let lo = match lo {
            Bound::Unbounded => Bound::Unbounded,
            Bound::Included(v) => Bound::Included(self.encode_prefix(pos, v)?),
            Bound::Excluded(v) => match key::prefix_successor(&self.encode_prefix(pos, v)?) {
                Some(s) => Bound::Included(s),
                None => return Ok(empty()),
            },
        };
        let hi = match hi {
            Bound::Unbounded => Bound::Unbounded,
            Bound::Excluded(v) => Bound::Excluded(self.encode_prefix(pos, v)?),
            Bound::Included(v) => match key::prefix_successor(&self.encode_prefix(pos, v)?) {
                Some(s) => Bound::Excluded(s),
                None => Bound::Unbounded,
            },
        };
        let tree = &self.table.indexes[pos];
        // The tree borrows the bounds only while positioning its cursors.
        let range = tree.range(lo.as_ref().map(Vec::as_slice), hi.as_ref().map(Vec::as_slice));
        Ok(IndexScan { inner: Scan::Range(range) })
    }

    /// Entries in index `index` (for tests and diagnostics).
    pub fn index_len(&self, index: IndexId) -> Result<usize, MvccError> {
        Ok(self.table.indexes[self.index_position(index)?].len())
    }

    /// Heap bytes held by this table's pages and indexes (shared structure counted fully).
    pub fn memory_bytes(&self) -> usize {
        let pages: usize = self.table.pages.iter().map(|p| p.memory_bytes() + 16).sum();
        let indexes: usize = self.table.indexes.iter().map(|t| t.memory_bytes()).sum();
        pages + self.table.pages.node_bytes() + indexes
    }
}

/// Row ids from an index scan, in key order; iterate from either end.
pub struct IndexScan<'a> {
    inner: Scan<'a>,
}

enum Scan<'a> {
    Range(lightcone_btree_index::Range<'a>),
    /// A full key in a unique index: at most one row, found by one descent.
    Point(Option<RowId>),
}

impl Iterator for IndexScan<'_> {
    type Item = RowId;
    fn next(&mut self) -> Option<RowId> {
        match &mut self.inner {
            Scan::Range(r) => r.next().map(|(_, v)| RowId::from_u64(v)),
            Scan::Point(p) => p.take(),
        }
    }
}

impl DoubleEndedIterator for IndexScan<'_> {
    fn next_back(&mut self) -> Option<RowId> {
        match &mut self.inner {
            Scan::Range(r) => r.next_back().map(|(_, v)| RowId::from_u64(v)),
            Scan::Point(p) => p.take(),
        }
    }
}
