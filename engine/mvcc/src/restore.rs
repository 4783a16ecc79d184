//! Building a database directly from table images (snapshot restore): rows are packed into
//! pages in order and every index is bulk-built from sorted entries, instead of going through
//! one insert per row.

use std::sync::Arc;

use lightcone_btree_index::{BTree, BTreeError};
use lightcone_page::{Page, PageLayout, Row, RowId};

use crate::error::MvccError;
use crate::schema::{IndexId, TableId, TableSchema, MAX_COLUMNS, MAX_INDEXES_PER_TABLE, MAX_TABLES};
use crate::table::TableState;
use crate::tx::{Database, DbState};

/// What building the table's indexes and sequences relies on: every column they name exists
/// (and a sequence's is an integer). A definition that went through `create_table` holds; one
/// read from a damaged or crafted image may not, and must be refused rather than panic.
fn check_column_references(schema: &TableSchema) -> Result<(), String> {
    let def = &schema.def;
    // The primary key's own index is not counted against the limit (see `create_table`).
    if def.columns.len() > MAX_COLUMNS || def.indexes.len() > MAX_INDEXES_PER_TABLE + 1 {
        return Err(format!(
            "{} columns and {} indexes exceed the limits",
            def.columns.len(),
            def.indexes.len()
        ));
    }
    let column = |c: u16| def.columns.get(c as usize);
    if let Some(pk) = def.primary_key.filter(|&pk| column(pk).is_none()) {
        return Err(format!("primary key column {pk} does not exist"));
    }
    for (i, idx) in def.indexes.iter().enumerate() {
        if idx.columns.is_empty() {
            return Err(format!("index {i} has no columns"));
        }
        if let Some(c) = idx.columns.iter().find(|&&c| column(c).is_none()) {
            return Err(format!("index {i} names missing column {c}"));
        }
    }
    for seq in &def.sequences {
        match column(seq.column) {
            Some(col) if col.ty.is_integer() => {}
            _ => return Err(format!("sequence on missing or non-integer column {}", seq.column)),
        }
    }
    Ok(())
}

/// Assembles a [`Database`] table by table. Tables must come in ascending id order; ids
/// missing in between are those of dropped tables and stay unused.
pub struct Restorer {
    state: DbState,
}

impl Restorer {
    /// A database whose last committed transaction is `tx_offset`.
    pub fn new(tx_offset: u64) -> Restorer {
        let mut state = DbState::default();
        state.set_tx_offset(tx_offset);
        Restorer { state }
    }

    /// Starts table `schema.id` with its sequence counters; add its rows with
    /// [`TableRestorer::push`], then [`TableRestorer::finish`] it.
    pub fn begin_table(
        &mut self,
        schema: TableSchema,
        sequence_next: Vec<Option<i128>>,
    ) -> Result<TableRestorer<'_>, MvccError> {
        let invalid = |reason: String| MvccError::InvalidSchema { table: schema.def.name.clone(), reason };
        if (schema.id as usize) < self.state.table_count() || schema.id as usize >= MAX_TABLES {
            return Err(invalid(format!(
                "table id {} out of order (expected at least {}, below {MAX_TABLES})",
                schema.id,
                self.state.table_count()
            )));
        }
        if schema.index_ids.len() != schema.def.indexes.len()
            || sequence_next.len() != schema.def.sequences.len()
        {
            return Err(invalid("index ids or sequence counters do not match the definition".into()));
        }
        check_column_references(&schema).map_err(invalid)?;
        let layout = PageLayout::new(&schema.def.column_types()).map_err(|e| invalid(e.to_string()))?;
        let mut table = TableState::new(schema, layout);
        table.seq_next = sequence_next;
        let entries = table
            .indexes
            .iter()
            .map(|t| match t.key_width() {
                Some(w) if w <= 16 => IndexEntries::Packed { width: w, entries: Vec::new() },
                _ => IndexEntries::Bytes(Vec::new()),
            })
            .collect();
        Ok(TableRestorer { parent: self, table, entries, key: Vec::new() })
    }

    /// Sets the ids the next created table and index get (see [`crate::ReadTx::next_ids`]):
    /// a restored database must not hand out the ids of tables dropped before the snapshot.
    /// Call after the last table; ids below those already restored are refused.
    pub fn reserve_ids(&mut self, next_table: TableId, next_index: IndexId) -> Result<(), MvccError> {
        if (next_table as usize) < self.state.table_count() || next_table as usize > MAX_TABLES {
            return Err(MvccError::ReplayMismatch(format!(
                "next table id {next_table} is below the restored tables' ({}) or over {MAX_TABLES}",
                self.state.table_count()
            )));
        }
        self.state.reserve_ids(next_table, next_index);
        Ok(())
    }

    /// The finished database.
    pub fn finish(self) -> Database {
        Database::from_state(self.state)
    }
}

/// One table being restored.
pub struct TableRestorer<'r> {
    parent: &'r mut Restorer,
    table: TableState,
    /// Per index: (encoded key, row id), sorted and bulk-built at `finish`.
    entries: Vec<IndexEntries>,
    /// Scratch for encoding one key.
    key: Vec<u8>,
}

/// Index entries collected for a bulk build. Keys of at most 16 bytes (every fixed-width key
/// over integer columns) are packed into a `u128` — no allocation per row, cheap sorting.
enum IndexEntries {
    /// Key bytes left-aligned in a big-endian `u128`, so integer order is byte order.
    Packed {
        width: usize,
        entries: Vec<(u128, u64)>,
    },
    Bytes(Vec<(Vec<u8>, u64)>),
}

impl IndexEntries {
    fn push(&mut self, key: &[u8], rid: u64) {
        match self {
            IndexEntries::Packed { width, entries } => {
                debug_assert_eq!(key.len(), *width);
                let mut packed = [0u8; 16];
                packed[..key.len()].copy_from_slice(key);
                entries.push((u128::from_be_bytes(packed), rid));
            }
            IndexEntries::Bytes(entries) => entries.push((key.to_vec(), rid)),
        }
    }

    fn build(self, unique: bool, width: Option<usize>) -> Result<BTree, BTreeError> {
        match self {
            IndexEntries::Packed { width: w, mut entries } => {
                entries.sort_unstable();
                let keys = entries
                    .into_iter()
                    .map(move |(k, rid)| (KeyPrefix { bytes: k.to_be_bytes(), len: w }, rid));
                BTree::bulk_build(unique, width, keys)
            }
            IndexEntries::Bytes(mut entries) => {
                entries.sort_unstable();
                BTree::bulk_build(unique, width, entries)
            }
        }
    }
}

/// A key of up to 16 bytes, by value.
struct KeyPrefix {
    bytes: [u8; 16],
    len: usize,
}

impl AsRef<[u8]> for KeyPrefix {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl TableRestorer<'_> {
    /// Appends a row (stored as given: no sequence filling).
    pub fn push(&mut self, row: Row) -> Result<(), MvccError> {
        self.table.check_row_as_is(&row)?;
        let layout = Arc::clone(&self.table.layout);
        let last = self.table.pages.len().checked_sub(1);
        let fits = last.and_then(|p| self.table.pages.get(p)).is_some_and(|page| page.can_fit(&layout, &row));
        if !fits {
            self.table.pages.push(Page::new());
        }
        let page_no = self.table.pages.len() - 1;
        // Invariant: the last page exists (pushed above if needed) and fits the row (a new,
        // empty page fits any row that passed `check_row_as_is`).
        let page = self.table.pages.get_mut(page_no).expect("last page exists");
        let slot = page.insert(&layout, &row).map_err(|e| self.table.page_error(e))?;
        let rid = RowId::new(page_no as u32, slot);
        for (i, entries) in self.entries.iter_mut().enumerate() {
            self.key.clear();
            self.table.encode_index_key(i, &row, &mut self.key);
            entries.push(&self.key, rid.to_u64());
        }
        self.table.rows += 1;
        Ok(())
    }

    /// Bulk-builds the indexes and adds the table to the database. A duplicate key in a unique
    /// index is refused.
    pub fn finish(mut self) -> Result<(), MvccError> {
        for (i, entries) in std::mem::take(&mut self.entries).into_iter().enumerate() {
            let def = &self.table.schema.def.indexes[i];
            let width = self.table.indexes[i].key_width();
            self.table.indexes[i] =
                entries.build(def.unique, width).map_err(|e| MvccError::InvalidSchema {
                    table: self.table.schema.name().to_string(),
                    reason: format!("index `{}` cannot be rebuilt: {e}", def.name),
                })?;
        }
        let id = self.table.schema.id;
        self.parent.state.reserve_ids(id, 0);
        self.parent.state.push_table(self.table);
        Ok(())
    }
}
