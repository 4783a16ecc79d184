//! Lightcone's transactional table store: the catalog, tables and MVCC transactions.
//!
//! Owns: the catalog ([`TableDef`] → [`TableSchema`]: columns, indexes, unique constraints,
//! primary key, auto-increment sequences), table contents (pages from `lightcone-page`, indexes
//! from `lightcone-btree-index`), and transactions — one [`WriteTx`] at a time, any number of
//! [`Snapshot`]s — and the [`TxDelta`] every commit yields.
//!
//! Does not own: durability (`lightcone-wal`, `lightcone-snapshot` consume [`TxDelta`]s), SQL,
//! or wire formats.
//!
//! # Versioning
//! Every committed version is an immutable tree of `Arc`s: database → tables → a radix vector
//! of pages, and B+tree nodes. A write transaction starts from the latest version and changes it
//! with `Arc::make_mut`, so it copies exactly the nodes and pages it touches that are still
//! shared with a published version; commit publishes the new root with one pointer swap.
//! Consequences: a snapshot is O(1) and never blocks the writer; readers never see a partial
//! transaction; rollback is dropping the working copy, which restores rows, indexes and sequences
//! exactly.

mod error;
mod pvec;
mod restore;
mod schema;
mod table;
mod tx;

pub use error::MvccError;
/// Longest encoded index key (see `lightcone_btree_index::key`).
pub use lightcone_btree_index::MAX_KEY_BYTES as MAX_INDEX_KEY_BYTES;
pub use lightcone_page::{ColumnType, Row, RowId, Value, I256, MAX_ROW_BYTES, MAX_VALUE_BYTES, U256};
pub use restore::{Restorer, TableRestorer};
pub use schema::{
    integer_max, ColId, ColumnDef, IndexAlgorithm, IndexDef, IndexId, SequenceDef, TableDef, TableId,
    TableSchema, MAX_COLUMNS, MAX_INDEXES_PER_TABLE, MAX_NAME_BYTES, MAX_TABLES,
};
pub use table::{IndexScan, TableView, MAX_PAGES_PER_TABLE};
pub use tx::{Database, ReadTx, SequenceUpdate, Snapshot, TableDelta, TxDelta, WriteTx};
