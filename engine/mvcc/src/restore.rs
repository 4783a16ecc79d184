//! Building a database directly from table images (snapshot restore): rows are packed into
//! pages in order and every index is bulk-built from sorted entries, instead of going through
//! one insert per row.

use std::sync::Arc;

use lightcone_btree_index::BTree;
use lightcone_page::{Page, PageLayout, Row, RowId};

use crate::error::MvccError;
use crate::schema::TableSchema;
use crate::table::TableState;
use crate::tx::{Database, DbState};

/// Assembles a [`Database`] table by table. Tables must come in id order (0, 1, 2…), as they
/// were created.
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
        if schema.id as usize != self.state.table_count() {
            return Err(invalid(format!(
                "table id {} out of order (expected {})",
                schema.id,
                self.state.table_count()
            )));
        }
        if schema.index_ids.len() != schema.def.indexes.len()
            || sequence_next.len() != schema.def.sequences.len()
        {
            return Err(invalid("index ids or sequence counters do not match the definition".into()));
        }
        let layout = PageLayout::new(&schema.def.column_types()).map_err(|e| invalid(e.to_string()))?;
        let mut table = TableState::new(schema, layout);
        table.seq_next = sequence_next;
        let entries = vec![Vec::new(); table.indexes.len()];
        Ok(TableRestorer { parent: self, table, entries })
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
    entries: Vec<Vec<(Vec<u8>, u64)>>,
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
            entries.push((self.table.index_key(i, &row), rid.to_u64()));
        }
        self.table.rows += 1;
        Ok(())
    }

    /// Bulk-builds the indexes and adds the table to the database. A duplicate key in a unique
    /// index is refused.
    pub fn finish(mut self) -> Result<(), MvccError> {
        for (i, mut entries) in std::mem::take(&mut self.entries).into_iter().enumerate() {
            entries.sort_unstable();
            let def = &self.table.schema.def.indexes[i];
            let width = self.table.indexes[i].key_width();
            self.table.indexes[i] =
                BTree::bulk_build(def.unique, width, entries).map_err(|e| MvccError::InvalidSchema {
                    table: self.table.schema.name().to_string(),
                    reason: format!("index `{}` cannot be rebuilt: {e}", def.name),
                })?;
        }
        self.parent.state.push_table(self.table);
        Ok(())
    }
}
