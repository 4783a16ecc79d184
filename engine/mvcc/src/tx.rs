//! The database handle, write transactions, snapshots and transaction deltas.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::ThreadId;

use ahash::{AHashMap, AHashSet};
use lightcone_btree_index::{key, MAX_KEY_BYTES as MAX_INDEX_KEY_BYTES};
use lightcone_page::{PageLayout, Row, RowId, Value};

use crate::error::MvccError;
use crate::schema::{
    IndexAlgorithm, IndexDef, IndexId, TableDef, TableId, TableSchema, MAX_COLUMNS, MAX_INDEXES_PER_TABLE,
    MAX_NAME_BYTES, MAX_TABLES,
};
use crate::table::{FreeHints, TableState, TableView};

/// One committed version of the whole database. Cloning is O(tables): tables are shared.
#[derive(Clone)]
pub(crate) struct DbState {
    tables: Vec<Option<Arc<TableState>>>,
    table_names: Arc<HashMap<String, TableId>>,
    /// Index id → (table, position of the index in the table).
    index_locations: Arc<HashMap<IndexId, (TableId, usize)>>,
    next_index_id: IndexId,
    /// Offset of the last committed transaction that changed anything (0 = none yet).
    tx_offset: u64,
}

impl Default for DbState {
    /// An empty state. Allocation-free (the empty catalog maps are shared and copied on first
    /// write), because every commit leaves one of these behind in the transaction.
    fn default() -> Self {
        static NAMES: OnceLock<Arc<HashMap<String, TableId>>> = OnceLock::new();
        static LOCATIONS: OnceLock<Arc<HashMap<IndexId, (TableId, usize)>>> = OnceLock::new();
        DbState {
            tables: Vec::new(),
            table_names: Arc::clone(NAMES.get_or_init(Arc::default)),
            index_locations: Arc::clone(LOCATIONS.get_or_init(Arc::default)),
            next_index_id: 0,
            tx_offset: 0,
        }
    }
}

impl DbState {
    pub(crate) fn set_tx_offset(&mut self, tx_offset: u64) {
        self.tx_offset = tx_offset;
    }

    pub(crate) fn table_count(&self) -> usize {
        self.tables.len()
    }

    /// Leaves table ids below `next_table` and index ids below `next_index` unused (ids of
    /// dropped tables, during restore), so later creates get the ids they got originally.
    pub(crate) fn reserve_ids(&mut self, next_table: TableId, next_index: IndexId) {
        while self.tables.len() < next_table as usize {
            self.tables.push(None);
        }
        self.next_index_id = self.next_index_id.max(next_index);
    }

    /// Adds a fully built table (restore), registering its name and index ids.
    pub(crate) fn push_table(&mut self, table: TableState) {
        let id = table.schema.id;
        debug_assert_eq!(id as usize, self.tables.len());
        Arc::make_mut(&mut self.table_names).insert(table.schema.name().to_string(), id);
        let locations = Arc::make_mut(&mut self.index_locations);
        for (pos, &index) in table.schema.index_ids.iter().enumerate() {
            locations.insert(index, (id, pos));
            self.next_index_id = self.next_index_id.max(index.saturating_add(1));
        }
        self.tables.push(Some(Arc::new(table)));
    }

    fn table(&self, id: TableId) -> Result<&TableState, MvccError> {
        self.tables.get(id as usize).and_then(|t| t.as_deref()).ok_or(MvccError::NoSuchTable(id))
    }

    fn table_mut(&mut self, id: TableId) -> Result<&mut TableState, MvccError> {
        self.tables
            .get_mut(id as usize)
            .and_then(|t| t.as_mut())
            .map(Arc::make_mut)
            .ok_or(MvccError::NoSuchTable(id))
    }

    fn table_id(&self, name: &str) -> Result<TableId, MvccError> {
        self.table_names.get(name).copied().ok_or_else(|| MvccError::NoSuchTableName(name.to_string()))
    }

    fn index_location(&self, index: IndexId) -> Result<(TableId, usize), MvccError> {
        self.index_locations.get(&index).copied().ok_or(MvccError::NoSuchIndex(index))
    }

    fn index_id(&self, name: &str) -> Option<IndexId> {
        self.tables.iter().flatten().find_map(|t| t.schema.index_id_by_name(name))
    }
}

/// Read access shared by snapshots and write transactions.
pub trait ReadTx {
    #[doc(hidden)]
    fn state(&self) -> &DbStateRef;

    /// A view of one table.
    fn table(&self, id: TableId) -> Result<TableView<'_>, MvccError> {
        Ok(self.state().0.table(id)?.view())
    }

    fn table_id(&self, name: &str) -> Result<TableId, MvccError> {
        self.state().0.table_id(name)
    }

    /// The table an index belongs to.
    fn index_table(&self, index: IndexId) -> Result<TableId, MvccError> {
        Ok(self.state().0.index_location(index)?.0)
    }

    /// Looks an index up by name across all tables.
    fn index_id(&self, name: &str) -> Option<IndexId> {
        self.state().0.index_id(name)
    }

    /// Ids of all tables, ascending.
    fn table_ids(&self) -> Vec<TableId> {
        self.state()
            .0
            .tables
            .iter()
            .enumerate()
            .filter(|(_, t)| t.is_some())
            .map(|(i, _)| i as TableId)
            .collect()
    }

    /// The ids the next created table and its first index will get. Ids of dropped tables
    /// are never given out again; a snapshot records these so a restore keeps them.
    fn next_ids(&self) -> (TableId, IndexId) {
        let st = &self.state().0;
        (st.tables.len() as TableId, st.next_index_id)
    }

    /// Offset of the last committed transaction visible here.
    fn tx_offset(&self) -> u64 {
        self.state().0.tx_offset
    }
}

/// Opaque wrapper so [`ReadTx`] can reach the state without exposing its type.
#[doc(hidden)]
pub struct DbStateRef(DbState);

/// A consistent, immutable view of the database as of one commit. Holding it never blocks the
/// writer (the writer copies whatever it changes while the snapshot lives). `Send + Sync`:
/// iterate it from any thread.
#[derive(Clone)]
pub struct Snapshot {
    state: Arc<DbStateRef>,
}

impl ReadTx for Snapshot {
    fn state(&self) -> &DbStateRef {
        &self.state
    }
}

/// Writer-side bookkeeping that is not part of any version.
#[derive(Default)]
struct WriterMeta {
    free_hints: AHashMap<TableId, FreeHints>,
}

/// The latest committed version, as readers find it.
struct Published {
    /// `None` while lent to the open write transaction (see [`Database::begin`]).
    state: Option<Arc<DbStateRef>>,
    /// The thread holding the open write transaction (either mode), so a snapshot or a second
    /// `begin` from it fails loudly instead of waiting for itself.
    writer_thread: Option<ThreadId>,
    /// Set when a borrowed state could not be restored (a panic in the middle of an operation
    /// or of its undo): the in-memory state can no longer be trusted; reopen from the log.
    poisoned: bool,
    /// Readers waiting on `Database::returned`. A transaction's end notifies only when there
    /// are any: a notify is a futex system call even with nobody to wake, once per commit.
    waiting_readers: usize,
}

impl Published {
    fn check_usable(&self) {
        assert!(
            !self.poisoned,
            "Database is poisoned: a panic inside a write transaction left its state unrecoverable in \
             memory; reopen the database from its log"
        );
    }
}

/// A database: the catalog and all tables, versioned.
///
/// ```
/// use lightcone_mvcc::{Database, ReadTx, TableDef, ColumnDef, IndexDef};
/// use lightcone_page::{ColumnType, Value};
///
/// let db = Database::new();
/// let before = db.snapshot();
/// let mut tx = db.begin();
/// let def = TableDef::new("person", vec![ColumnDef::new("id", ColumnType::U32), ColumnDef::new("name", ColumnType::String)])
///     .with_primary_key(0)
///     .with_auto_inc(0);
/// let person = tx.create_table(def).unwrap();
/// let (_, row) = tx.insert(person, vec![Value::U32(0), Value::String("Ada".into())]).unwrap();
/// assert_eq!(row[0], Value::U32(1)); // filled in by the sequence
/// let delta = tx.commit();
/// assert_eq!(delta.tables[0].inserts.len(), 1);
/// assert!(before.table(person).is_err()); // the snapshot predates the table
/// assert_eq!(db.snapshot().table(person).unwrap().row_count(), 1);
/// ```
pub struct Database {
    published: Mutex<Published>,
    /// Signalled whenever a lent state is returned.
    returned: Condvar,
    writer: Mutex<WriterMeta>,
}

impl Default for Database {
    fn default() -> Self {
        Database::new()
    }
}

// A panic while holding a lock cannot leave shared state half-written: published versions are
// immutable, a lent state is restored by the transaction's drop (which runs during unwinding),
// and writer hints are verified before use. So poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Database {
    pub fn new() -> Database {
        Database::from_state(DbState::default())
    }

    pub(crate) fn from_state(state: DbState) -> Database {
        Database {
            published: Mutex::new(Published {
                state: Some(Arc::new(DbStateRef(state))),
                writer_thread: None,
                poisoned: false,
                waiting_readers: 0,
            }),
            returned: Condvar::new(),
            writer: Mutex::default(),
        }
    }

    /// The latest committed version: O(1) when no write transaction holds it, otherwise this
    /// waits for that transaction to finish (readers wait for the writer, never the reverse).
    ///
    /// # Panics
    /// If called on the thread that holds the open write transaction (it could wait for
    /// itself; use [`Database::try_snapshot`] there), or if the database is poisoned.
    pub fn snapshot(&self) -> Snapshot {
        let mut published = lock(&self.published);
        assert!(
            published.writer_thread != Some(std::thread::current().id()),
            "Database::snapshot called on the thread holding the write transaction; it could wait \
             for itself (take snapshots before begin() or after commit(), or use try_snapshot)"
        );
        loop {
            published.check_usable();
            if let Some(state) = &published.state {
                return Snapshot { state: Arc::clone(state) };
            }
            published.waiting_readers += 1;
            published = self.returned.wait(published).unwrap_or_else(|poisoned| poisoned.into_inner());
            published.waiting_readers -= 1;
        }
    }

    /// The latest committed version if it is available without waiting: `None` while the open
    /// write transaction has borrowed it, or if the database is poisoned.
    pub fn try_snapshot(&self) -> Option<Snapshot> {
        let published = lock(&self.published);
        if published.poisoned {
            return None;
        }
        published.state.as_ref().map(|state| Snapshot { state: Arc::clone(state) })
    }

    /// Starts the write transaction, waiting while another one is open (one writer at a time).
    /// Dropping the transaction without [`WriteTx::commit`] rolls it back.
    ///
    /// If no snapshot holds the latest version, the transaction borrows it and changes it in
    /// place, keeping an undo log (no copying at all); readers asking for a snapshot meanwhile
    /// wait until it commits or rolls back. Otherwise it works on a copy-on-write clone and
    /// readers are served the published version throughout.
    ///
    /// # Panics
    /// If this thread already holds the write transaction (it would wait for itself), or if
    /// the database is poisoned.
    pub fn begin(&self) -> WriteTx<'_> {
        let me = std::thread::current().id();
        assert!(
            lock(&self.published).writer_thread != Some(me),
            "Database::begin called on a thread that already holds the write transaction"
        );
        let meta = lock(&self.writer);
        let mut published = lock(&self.published);
        published.check_usable();
        published.writer_thread = Some(me);
        // Invariant: only the holder of the writer lock takes the state, and every WriteTx puts
        // it back before releasing that lock.
        let mut current = published.state.take().expect("published state is present between transactions");
        // Lending keeps the very `Arc` (no allocation per transaction): nobody else can reach it
        // while `published.state` is `None`.
        let (state, lent) = if Arc::get_mut(&mut current).is_some() {
            (current, true)
        } else {
            let copy = Arc::new(DbStateRef(current.0.clone()));
            published.state = Some(current);
            (copy, false)
        };
        drop(published);
        let tx_offset_before = state.0.tx_offset;
        WriteTx {
            tx_offset_before,
            db: self,
            meta,
            state,
            lent,
            finished: false,
            in_operation: false,
            logs: AHashMap::new(),
            created: Vec::new(),
            dropped: Vec::new(),
            catalog_before: None,
            dropped_hints: Vec::new(),
        }
    }

    /// Ends the open transaction: publishes `state` (a commit, or a repaired borrowed state),
    /// or marks the database poisoned, and wakes waiting readers either way.
    fn end_transaction(&self, state: Option<Arc<DbStateRef>>, poisoned: bool) {
        let mut published = lock(&self.published);
        if let Some(state) = state {
            published.state = Some(state);
        }
        published.poisoned |= poisoned;
        published.writer_thread = None;
        let wake = published.waiting_readers > 0;
        drop(published);
        if wake {
            self.returned.notify_all();
        }
    }
}

/// What a transaction changed in one table: enough to build the delta and to undo it.
struct TableLog {
    /// Rows that exist now but did not before the transaction.
    inserted: InsertedRows,
    /// Rows that existed before the transaction and are gone, with their contents.
    deleted: AHashMap<RowId, Row>,
    /// Sequence counters before the transaction's first change to this table.
    seq_before: Vec<Option<i128>>,
    /// Page count before that change: undo drops pages appended since.
    pages_before: usize,
}

/// The exact net change of one committed transaction: the single source for the commit log
/// and for subscription deltas.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TxDelta {
    /// Offset of this transaction; 0 if it changed nothing (and so took no offset).
    pub tx_offset: u64,
    /// Tables that existed before this transaction and were dropped by it, ascending. Replay
    /// drops them before creating `created_tables` (a drop may free a name a create reuses);
    /// their row changes are not in `tables`.
    pub dropped_tables: Vec<TableId>,
    /// Tables created by this transaction, with their assigned ids, in creation order.
    pub created_tables: Vec<TableSchema>,
    /// Row changes per table, by ascending table id; tables without changes are absent.
    pub tables: Vec<TableDelta>,
    /// New next-values of sequences this transaction advanced.
    pub sequences: Vec<SequenceUpdate>,
}

impl TableLog {
    fn new(table: &TableState) -> TableLog {
        TableLog {
            inserted: InsertedRows::Appended(Vec::new()),
            deleted: AHashMap::new(),
            seq_before: table.seq_next.clone(),
            pages_before: table.pages.len(),
        }
    }
}

/// The row ids a transaction inserted into one table. Kept as a plain list (cheap pushes for
/// bulk inserts) until the first delete needs membership tests, then as a set.
enum InsertedRows {
    /// Distinct ids: without a delete no slot is reused.
    Appended(Vec<RowId>),
    Set(AHashSet<RowId>),
}

impl InsertedRows {
    fn insert(&mut self, rid: RowId) {
        match self {
            InsertedRows::Appended(v) => v.push(rid),
            InsertedRows::Set(s) => {
                s.insert(rid);
            }
        }
    }

    /// Removes `rid`; true if this transaction had inserted it.
    fn remove(&mut self, rid: &RowId) -> bool {
        self.as_set().remove(rid)
    }

    /// Whether this transaction inserted `rid`.
    fn contains(&mut self, rid: &RowId) -> bool {
        self.as_set().contains(rid)
    }

    /// The ids as a set (converted on the first membership test).
    fn as_set(&mut self) -> &mut AHashSet<RowId> {
        if let InsertedRows::Appended(v) = self {
            *self = InsertedRows::Set(v.drain(..).collect());
        }
        match self {
            InsertedRows::Set(s) => s,
            InsertedRows::Appended(_) => unreachable!("converted to a set above"),
        }
    }

    fn sorted(&self) -> Vec<RowId> {
        let mut ids: Vec<RowId> = match self {
            InsertedRows::Appended(v) => v.clone(),
            InsertedRows::Set(s) => s.iter().copied().collect(),
        };
        ids.sort_unstable();
        ids
    }
}

impl TxDelta {
    pub fn is_empty(&self) -> bool {
        self.dropped_tables.is_empty()
            && self.created_tables.is_empty()
            && self.tables.is_empty()
            && self.sequences.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TableDelta {
    pub table_id: TableId,
    /// Rows present after the transaction and not before, in row-id order.
    pub inserts: Vec<Row>,
    /// Rows present before the transaction and not after, in row-id order.
    /// A row deleted and re-inserted unchanged appears in neither list.
    pub deletes: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceUpdate {
    pub table_id: TableId,
    /// Position of the sequence in the table's schema.
    pub sequence: usize,
    /// `None`: the sequence is exhausted (its next step overflows `i128`).
    pub next: Option<i128>,
}

/// The name and index maps of a catalog (shared `Arc`s: saving them is cheap).
struct CatalogMaps {
    table_names: Arc<HashMap<String, TableId>>,
    index_locations: Arc<HashMap<IndexId, (TableId, usize)>>,
}

/// The one open write transaction. Reads see its own writes. Any operation that returns an
/// error changed nothing, and the transaction stays usable.
pub struct WriteTx<'db> {
    db: &'db Database,
    meta: MutexGuard<'db, WriterMeta>,
    /// Never shared while the transaction is open (see [`WriteTx::st`]).
    state: Arc<DbStateRef>,
    /// True if `state` is the borrowed latest version (changed in place; undo on rollback),
    /// false if it is a copy-on-write clone (rollback just drops it).
    lent: bool,
    finished: bool,
    /// True while a mutating operation runs: if the transaction is dropped with this set, a
    /// panic interrupted the operation and its undo log may be incomplete.
    in_operation: bool,
    /// The state's offset at begin (commit bumps it before `before_publish` runs).
    tx_offset_before: u64,
    logs: AHashMap<TableId, TableLog>,
    created: Vec<TableId>,
    /// Tables dropped by this transaction, in drop order, kept whole for undo.
    dropped: Vec<Arc<TableState>>,
    /// The catalog maps as they were before this transaction's first create or drop (undo
    /// puts them back whole: a drop and a create of the same name can interleave).
    catalog_before: Option<CatalogMaps>,
    /// Free-page hints removed during the transaction, restored if it rolls back.
    dropped_hints: Vec<(TableId, u32)>,
}

impl ReadTx for WriteTx<'_> {
    fn state(&self) -> &DbStateRef {
        &self.state
    }
}

impl WriteTx<'_> {
    fn st(&mut self) -> &mut DbState {
        unshared(&mut self.state)
    }

    /// Moves the state out for publishing, leaving a shared empty placeholder behind.
    fn take_state(&mut self) -> Arc<DbStateRef> {
        static PLACEHOLDER: OnceLock<Arc<DbStateRef>> = OnceLock::new();
        let placeholder = PLACEHOLDER.get_or_init(|| Arc::new(DbStateRef(DbState::default())));
        std::mem::replace(&mut self.state, Arc::clone(placeholder))
    }

    /// Creates a table (visible to others once committed). Returns its id.
    pub fn create_table(&mut self, def: TableDef) -> Result<TableId, MvccError> {
        self.guarded(|tx| tx.create_table_inner(def))
    }

    /// Drops a table: its rows, indexes and name are gone for transactions that start after
    /// the commit (snapshots taken before keep it). Its table id and index ids are never
    /// given out again, so the commit log's ids stay unambiguous. A table cannot be dropped
    /// by the transaction that created it.
    pub fn drop_table(&mut self, table: TableId) -> Result<(), MvccError> {
        self.guarded(|tx| tx.drop_table_inner(table))
    }

    /// Remembers the catalog maps before the first catalog change of the transaction.
    fn save_catalog(&mut self) {
        if self.catalog_before.is_none() {
            self.catalog_before = Some(CatalogMaps {
                table_names: Arc::clone(&self.state.0.table_names),
                index_locations: Arc::clone(&self.state.0.index_locations),
            });
        }
    }

    fn drop_table_inner(&mut self, id: TableId) -> Result<(), MvccError> {
        let table = self.state.0.table(id)?;
        if self.created.contains(&id) {
            // Its ids would be used up without a trace in the delta, and replay would then
            // hand out different ids than the original did.
            return Err(MvccError::InvalidSchema {
                table: table.schema.name().to_string(),
                reason: "a table cannot be dropped by the transaction that created it".into(),
            });
        }
        self.save_catalog();
        let st = self.st();
        // Invariant: checked just above that the slot holds a table.
        let table = st.tables[id as usize].take().expect("table exists");
        Arc::make_mut(&mut st.table_names).remove(table.schema.name());
        let locations = Arc::make_mut(&mut st.index_locations);
        for index in &table.schema.index_ids {
            locations.remove(index);
        }
        self.dropped.push(table);
        Ok(())
    }

    /// Runs a mutating operation with `in_operation` set, so a panic inside it is detected.
    fn guarded<R>(&mut self, op: impl FnOnce(&mut Self) -> R) -> R {
        let outer = std::mem::replace(&mut self.in_operation, true);
        let result = op(self);
        self.in_operation = outer;
        result
    }

    fn create_table_inner(&mut self, def: TableDef) -> Result<TableId, MvccError> {
        let def = self.validate_table_def(def)?;
        let layout = PageLayout::new(&def.column_types())
            .map_err(|e| MvccError::InvalidSchema { table: def.name.clone(), reason: e.to_string() })?;
        self.save_catalog();
        let st = self.st();
        let id = st.tables.len() as TableId;
        let index_ids: Vec<IndexId> = (0..def.indexes.len() as u32).map(|i| st.next_index_id + i).collect();
        st.next_index_id += def.indexes.len() as u32;
        let names = Arc::make_mut(&mut st.table_names);
        names.insert(def.name.clone(), id);
        let locations = Arc::make_mut(&mut st.index_locations);
        for (pos, &index) in index_ids.iter().enumerate() {
            locations.insert(index, (id, pos));
        }
        let schema = TableSchema { id, def, index_ids };
        st.tables.push(Some(Arc::new(TableState::new(schema, layout))));
        self.created.push(id);
        Ok(id)
    }

    fn validate_table_def(&self, mut def: TableDef) -> Result<TableDef, MvccError> {
        let invalid = |reason: String| MvccError::InvalidSchema { table: def.name.clone(), reason };
        if def.name.is_empty() || def.name.len() > MAX_NAME_BYTES {
            return Err(invalid(format!("table names must be 1..={MAX_NAME_BYTES} bytes")));
        }
        if self.state.0.table_names.contains_key(&def.name) {
            return Err(MvccError::TableExists(def.name));
        }
        if self.state.0.tables.len() >= MAX_TABLES {
            return Err(invalid(format!("a database holds at most {MAX_TABLES} tables")));
        }
        // The primary key's own index is not counted: it is added below when missing, and a
        // definition read back from the log or a snapshot already holds it.
        let has_pk_index =
            def.primary_key.is_some_and(|pk| def.indexes.iter().any(|i| i.unique && i.columns == [pk]));
        let counted = def.indexes.len() - usize::from(has_pk_index);
        if counted > MAX_INDEXES_PER_TABLE {
            return Err(invalid(format!(
                "{counted} indexes besides the primary key's; the limit is {MAX_INDEXES_PER_TABLE}"
            )));
        }
        if self.state.0.next_index_id.checked_add(def.indexes.len() as IndexId + 1).is_none() {
            return Err(invalid("the database has run out of index ids".to_string()));
        }
        if def.columns.len() > MAX_COLUMNS {
            return Err(invalid(format!("{} columns; the limit is {MAX_COLUMNS}", def.columns.len())));
        }
        for (i, c) in def.columns.iter().enumerate() {
            if c.name.is_empty() || c.name.len() > MAX_NAME_BYTES {
                return Err(invalid(format!("column {i} has an empty or over-long name")));
            }
            if def.columns[..i].iter().any(|o| o.name == c.name) {
                return Err(invalid(format!("duplicate column name `{}`", c.name)));
            }
        }
        let ncols = def.columns.len();
        if let Some(pk) = def.primary_key {
            if pk as usize >= ncols {
                return Err(invalid(format!("primary key column {pk} does not exist")));
            }
            if !def.indexes.iter().any(|i| i.unique && i.columns == [pk]) {
                def.indexes.push(IndexDef::btree(vec![pk], true));
            }
        }
        for seq in &def.sequences {
            let col = def
                .columns
                .get(seq.column as usize)
                .ok_or_else(|| invalid(format!("sequence on missing column {}", seq.column)))?;
            if !col.ty.is_integer() {
                return Err(invalid(format!("sequence on non-integer column `{}` ({})", col.name, col.ty)));
            }
            if seq.increment == 0 || seq.min > seq.max || seq.start < seq.min || seq.start > seq.max {
                return Err(invalid(format!(
                    "sequence on `{}` has an empty range or zero increment",
                    col.name
                )));
            }
        }
        for (i, idx) in def.indexes.iter_mut().enumerate() {
            if idx.columns.is_empty() {
                return Err(invalid(format!("index {i} has no columns")));
            }
            if let Some(&c) = idx.columns.iter().find(|&&c| c as usize >= ncols) {
                return Err(invalid(format!("index {i} names missing column {c}")));
            }
            let types: Vec<_> = idx.columns.iter().map(|&c| def.columns[c as usize].ty).collect();
            if let Some(width) = key::fixed_key_width(&types).filter(|&w| w > MAX_INDEX_KEY_BYTES) {
                return Err(invalid(format!(
                    "index {i} has {width}-byte keys; the limit is {MAX_INDEX_KEY_BYTES}"
                )));
            }
            if idx.name.is_empty() {
                let cols: Vec<&str> =
                    idx.columns.iter().map(|&c| def.columns[c as usize].name.as_str()).collect();
                let algo = match idx.algorithm {
                    IndexAlgorithm::BTree => "btree",
                    IndexAlgorithm::Hash => "hash",
                    IndexAlgorithm::Direct => "direct",
                };
                idx.name = format!("{}_{}_idx_{algo}", def.name, cols.join("_"));
            }
        }
        for (i, idx) in def.indexes.iter().enumerate() {
            if def.indexes[..i].iter().any(|o| o.name == idx.name)
                || self.state.0.index_id(&idx.name).is_some()
            {
                return Err(MvccError::IndexExists(idx.name.clone()));
            }
        }
        Ok(def)
    }

    /// Inserts a row; returns its id and the row as stored (with sequence values filled in).
    pub fn insert(&mut self, table: TableId, row: Row) -> Result<(RowId, Row), MvccError> {
        self.guarded(|tx| tx.insert_inner(table, row))
    }

    fn insert_inner(&mut self, table: TableId, mut row: Row) -> Result<(RowId, Row), MvccError> {
        let advances = self.state.0.table(table)?.prepare_row(&mut row)?;
        let rid = self.insert_prepared(table, &row, advances)?;
        Ok((rid, row))
    }

    fn insert_prepared(
        &mut self,
        table: TableId,
        row: &[Value],
        advances: Vec<(usize, Option<i128>)>,
    ) -> Result<RowId, MvccError> {
        let hints = self.meta.free_hints.entry(table).or_default();
        let mut dropped = Vec::new();
        let t = unshared(&mut self.state).table_mut(table)?;
        let log = self.logs.entry(table).or_insert_with(|| TableLog::new(t));
        let result = t.insert_row(row, advances, hints, &mut dropped, &mut Vec::new());
        self.dropped_hints.extend(dropped.into_iter().map(|p| (table, p)));
        let rid = result?;
        log.inserted.insert(rid);
        Ok(rid)
    }

    /// Deletes the row at `rid`; returns it, or `None` if there was no such row.
    pub fn delete(&mut self, table: TableId, rid: RowId) -> Result<Option<Row>, MvccError> {
        self.guarded(|tx| tx.delete_inner(table, rid))
    }

    fn delete_inner(&mut self, table: TableId, rid: RowId) -> Result<Option<Row>, MvccError> {
        if !self.state.0.table(table)?.view().contains(rid) {
            return Ok(None);
        }
        let hints = self.meta.free_hints.entry(table).or_default();
        let t = unshared(&mut self.state).table_mut(table)?;
        let log = self.logs.entry(table).or_insert_with(|| TableLog::new(t));
        let row = t.delete(rid, hints);
        if let Some(row) = &row {
            // A row this transaction inserted just disappears; an older one is remembered.
            if !log.inserted.remove(&rid) {
                log.deleted.insert(rid, row.clone());
            }
        }
        Ok(row)
    }

    /// Deletes the row whose key in unique index `index` is `key`; returns it if there was one.
    pub fn delete_by_unique(&mut self, index: IndexId, key: &[Value]) -> Result<Option<Row>, MvccError> {
        let (table, _) = self.state.0.index_location(index)?;
        match self.table(table)?.unique_lookup(index, key)? {
            Some(rid) => self.delete(table, rid),
            None => Ok(None),
        }
    }

    /// Replaces the row that has the same key in unique index `index` as `row`. Sequence
    /// columns holding zero are filled as for an insert. Returns the new row id and row.
    pub fn update_by_unique(&mut self, index: IndexId, row: Row) -> Result<(RowId, Row), MvccError> {
        self.guarded(|tx| tx.update_by_unique_inner(index, row))
    }

    fn update_by_unique_inner(&mut self, index: IndexId, mut row: Row) -> Result<(RowId, Row), MvccError> {
        let (table, pos) = self.state.0.index_location(index)?;
        let t = self.state.0.table(table)?;
        let def = &t.schema.def.indexes[pos];
        if !def.unique {
            return Err(MvccError::IndexNotUnique { index: def.name.clone() });
        }
        t.layout.check_row(&row).map_err(|e| t.page_error(e))?;
        // The key is encoded from the row itself (its types were just checked): no key values
        // are cloned out first.
        let found = t.indexes[pos].get(&t.index_key(pos, &row)).map(RowId::from_u64);
        let Some(old) = found else {
            let shown: Vec<String> = def.columns.iter().map(|&c| row[c as usize].to_string()).collect();
            return Err(MvccError::NoSuchRow {
                table: t.schema.name().to_string(),
                index: def.name.clone(),
                key: format!("({})", shown.join(", ")),
            });
        };
        let advances = t.prepare_row(&mut row)?;
        // The common update changes no indexed column (a balance, a name): then the row is
        // overwritten where it is and no index is touched. Sequence filling may change a key,
        // so that case takes the general path.
        if advances.is_empty() {
            if let Some(old_row) = t.view().get(old).filter(|o| t.same_index_keys(o, &row)) {
                if self.replace_in_place(table, old, old_row, &row)? {
                    return Ok((old, row));
                }
            }
        }
        let t = self.state.0.table(table)?;
        // Validate against every other row first, so a conflict changes nothing.
        t.check_unique(&row, Some(old))?;
        self.delete(table, old)?;
        let rid = self.insert_prepared(table, &row, advances)?;
        Ok((rid, row))
    }

    /// Overwrites the row at `rid` (holding `old_row`) with `row`, whose index keys are the
    /// same. False, with nothing changed, if the page has no heap room for `row`.
    fn replace_in_place(
        &mut self,
        table: TableId,
        rid: RowId,
        old_row: Row,
        row: &[Value],
    ) -> Result<bool, MvccError> {
        let t = unshared(&mut self.state).table_mut(table)?;
        let log = self.logs.entry(table).or_insert_with(|| TableLog::new(t));
        if !t.replace_row(rid, &old_row, row) {
            return Ok(false);
        }
        // Logged as a delete of the old contents and an insert at the same id, exactly as a
        // delete followed by an insert reusing the slot would be: commit reads the new row
        // back, undo deletes it and restores the old one.
        if !log.inserted.contains(&rid) {
            debug_assert!(!log.deleted.contains_key(&rid), "a live row deleted earlier must be re-inserted");
            log.deleted.insert(rid, old_row);
            log.inserted.insert(rid);
        }
        Ok(true)
    }

    /// Re-applies a committed transaction's delta (log replay): creates its tables with the same
    /// ids, deletes its deleted rows (found by content), stores its inserted rows exactly as they
    /// were (no sequence filling) and sets its sequence counters. Committing afterwards yields
    /// the same delta and offset as the original commit when replayed in order. A delta that
    /// does not fit this state is refused with [`MvccError::ReplayMismatch`]; the caller should
    /// drop the transaction then (earlier steps of the delta may have been applied).
    pub fn apply_delta(&mut self, delta: &TxDelta) -> Result<(), MvccError> {
        self.guarded(|tx| tx.apply_delta_inner(delta))
    }

    fn apply_delta_inner(&mut self, delta: &TxDelta) -> Result<(), MvccError> {
        let mismatch = |what: String| MvccError::ReplayMismatch(what);
        for &id in &delta.dropped_tables {
            self.drop_table_inner(id).map_err(|e| mismatch(format!("table {id} cannot be dropped: {e}")))?;
        }
        for schema in &delta.created_tables {
            let id = self.create_table_inner(schema.def.clone())?;
            let created = self.table(id)?.schema();
            if id != schema.id || created.index_ids != schema.index_ids {
                return Err(mismatch(format!(
                    "table `{}` was created as id {} with indexes {:?}, now {id} with {:?}",
                    schema.name(),
                    schema.id,
                    schema.index_ids,
                    created.index_ids
                )));
            }
        }
        for table in &delta.tables {
            for row in &table.deletes {
                let rid = self.find_row(table.table_id, row)?.ok_or_else(|| {
                    mismatch(format!("a row deleted from table {} is not there: {row:?}", table.table_id))
                })?;
                self.delete_inner(table.table_id, rid)?;
            }
            self.insert_replayed(table.table_id, &table.inserts)?;
        }
        for update in &delta.sequences {
            let t = unshared(&mut self.state).table_mut(update.table_id)?;
            if update.sequence >= t.seq_next.len() {
                return Err(mismatch(format!(
                    "table {} has no sequence {}",
                    update.table_id, update.sequence
                )));
            }
            self.logs.entry(update.table_id).or_insert_with(|| TableLog::new(t));
            t.seq_next[update.sequence] = update.next;
        }
        Ok(())
    }

    /// Stores rows exactly as logged (no sequence filling), with the table's bookkeeping looked
    /// up once for all of them and one key buffer: replay applies millions of rows.
    fn insert_replayed(&mut self, table: TableId, rows: &[Row]) -> Result<(), MvccError> {
        if rows.is_empty() {
            return Ok(());
        }
        let hints = self.meta.free_hints.entry(table).or_default();
        let t = unshared(&mut self.state).table_mut(table)?;
        let log = self.logs.entry(table).or_insert_with(|| TableLog::new(t));
        let (mut dropped, mut key) = (Vec::new(), Vec::new());
        let result = t.insert_rows_as_is(rows, hints, &mut dropped, &mut key, |rid| log.inserted.insert(rid));
        self.dropped_hints.extend(dropped.into_iter().map(|p| (table, p)));
        result
    }

    /// A row equal to `row`: found through a unique index when the table has one, else by scan.
    fn find_row(&self, table: TableId, row: &[Value]) -> Result<Option<RowId>, MvccError> {
        let view = self.table(table)?;
        let schema = view.schema();
        if let Some(pos) = schema.def.indexes.iter().position(|i| i.unique) {
            let Some(key) = schema.def.indexes[pos]
                .columns
                .iter()
                .map(|&c| row.get(c as usize).cloned())
                .collect::<Option<Vec<_>>>()
            else {
                return Ok(None);
            };
            let found = view.unique_lookup(schema.index_ids[pos], &key)?;
            return Ok(found.filter(|&rid| view.get(rid).is_some_and(|r| r == row)));
        }
        Ok(view.scan().find(|(_, r)| r == row).map(|(rid, _)| rid))
    }

    /// Commits a transaction rebuilt by [`WriteTx::apply_delta`] as offset `tx_offset` without
    /// building its delta again (the caller has it). `tx_offset` must be past the current one.
    pub fn commit_replayed(mut self, tx_offset: u64) -> Result<(), MvccError> {
        if tx_offset <= self.state.0.tx_offset {
            return Err(MvccError::ReplayMismatch(format!(
                "tx {tx_offset} is not after the database's offset {}",
                self.state.0.tx_offset
            )));
        }
        self.st().tx_offset = tx_offset;
        self.publish();
        Ok(())
    }

    /// The tables this transaction has written so far (inserted into or deleted from), in no
    /// particular order. A table may be listed although its net change is empty (a row
    /// inserted and deleted again): callers use this to skip work, never to build deltas.
    pub fn touched_tables(&self) -> impl Iterator<Item = TableId> + '_ {
        self.logs.keys().copied()
    }

    /// Makes the transaction's changes visible to new snapshots and returns its delta.
    pub fn commit(self) -> TxDelta {
        self.commit_with(|_| ()).0
    }

    /// Commits, calling `before_publish` with the delta while the writer lock is still held —
    /// so calls happen in commit order (this is where the commit log appends) — and before
    /// the new version becomes visible to readers.
    pub fn commit_with<R>(mut self, before_publish: impl FnOnce(&TxDelta) -> R) -> (TxDelta, R) {
        let mut delta = TxDelta::default();
        let st = &self.state.0;
        for &id in &self.created {
            // Invariant: a table cannot be dropped by the transaction that created it.
            delta.created_tables.push((*st.table(id).expect("created table exists").schema).clone());
        }
        delta.dropped_tables = self.dropped.iter().map(|t| t.schema.id).collect();
        delta.dropped_tables.sort_unstable();
        let mut touched: Vec<TableId> = self.logs.keys().copied().collect();
        touched.sort_unstable();
        for id in touched {
            let log = &self.logs[&id];
            let Ok(table) = st.table(id) else { continue };
            let view = table.view();
            let inserted = log.inserted.sorted();
            // Invariant: every logged insert is still live (a delete removes it from the log).
            let mut inserts: Vec<Row> =
                inserted.iter().map(|&r| view.get(r).expect("logged insert is live")).collect();
            let mut deleted: Vec<(&RowId, &Row)> = log.deleted.iter().collect();
            deleted.sort_unstable_by_key(|(r, _)| **r);
            let mut deletes: Vec<Row> = deleted.into_iter().map(|(_, row)| row.clone()).collect();
            cancel_reinserted(&mut inserts, &mut deletes);
            if !inserts.is_empty() || !deletes.is_empty() {
                delta.tables.push(TableDelta { table_id: id, inserts, deletes });
            }
            for (i, (&next, &before)) in table.seq_next.iter().zip(&log.seq_before).enumerate() {
                if next != before {
                    delta.sequences.push(SequenceUpdate { table_id: id, sequence: i, next });
                }
            }
        }
        if !delta.is_empty() {
            self.st().tx_offset += 1;
            delta.tx_offset = self.state.0.tx_offset;
        }
        let result = before_publish(&delta);
        self.publish();
        (delta, result)
    }

    /// Ends a committed transaction: its undo data is forgotten (the writer's hints for
    /// dropped tables too) and its state becomes the published version.
    fn publish(&mut self) {
        self.finished = true;
        self.dropped_hints.clear();
        for table in self.dropped.drain(..) {
            self.meta.free_hints.remove(&table.schema.id);
        }
        self.db.end_transaction(Some(self.take_state()), false);
    }

    /// Discards every change. (Dropping the transaction does the same.)
    pub fn rollback(self) {}

    /// Reverses every change made to a lent state, in place: new rows out, deleted rows back at
    /// their old row ids, sequences and catalog as they were.
    fn undo(&mut self) {
        // Dropped tables come back first, so the row logs below find every table they name.
        for table in self.dropped.drain(..).rev() {
            let slot = &mut unshared(&mut self.state).tables[table.schema.id as usize];
            debug_assert!(slot.is_none(), "undo: dropped table's slot was reused");
            *slot = Some(table);
        }
        let mut logs: Vec<(TableId, TableLog)> = self.logs.drain().collect();
        logs.sort_unstable_by_key(|(id, _)| *id);
        for (id, log) in logs {
            if self.created.contains(&id) {
                continue; // removed whole below
            }
            let hints = self.meta.free_hints.entry(id).or_default();
            // Invariant: a logged table exists (dropped tables were put back above).
            let t = unshared(&mut self.state).table_mut(id).expect("logged table exists");
            for rid in log.inserted.sorted() {
                let removed = t.delete(rid, hints);
                debug_assert!(removed.is_some(), "undo: inserted row {rid:?} is gone");
            }
            for (rid, row) in log.deleted {
                t.restore_row(rid, &row);
            }
            t.seq_next = log.seq_before;
            t.truncate_pages(log.pages_before);
        }
        let st = unshared(&mut self.state);
        st.tx_offset = self.tx_offset_before;
        for &id in self.created.iter().rev() {
            // Invariant: created tables were pushed last, in this order (and any dropped since
            // were put back above).
            let table = st.tables.pop().flatten().expect("created table is last");
            debug_assert_eq!(table.schema.id, id);
            st.next_index_id -= table.schema.index_ids.len() as IndexId;
            self.meta.free_hints.remove(&id);
        }
        self.created.clear();
        if let Some(before) = self.catalog_before.take() {
            st.table_names = before.table_names;
            st.index_locations = before.index_locations;
        }
    }
}

/// The open transaction's state, for writing. (A free function so callers can borrow other
/// fields of the transaction at the same time.)
fn unshared(state: &mut Arc<DbStateRef>) -> &mut DbState {
    // Invariant: a lent state was unique when taken and is unreachable by readers until
    // published; a copy is fresh. The transaction never clones its `Arc`.
    &mut Arc::get_mut(state).expect("the open transaction's state is unshared").0
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Rollback. A copy is just dropped: readers were served the published version all
        // along. A borrowed state is repaired in place and handed back — unless a panic cut an
        // operation short (its undo log may be incomplete) or the undo itself panicked; then the
        // state cannot be trusted and the database is poisoned rather than left to hang readers.
        let state = if !self.lent {
            None
        } else if self.in_operation {
            Some(None)
        } else {
            let undone = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.undo()));
            Some(undone.ok().map(|()| self.take_state()))
        };
        match state {
            None => self.db.end_transaction(None, false),
            Some(Some(repaired)) => self.db.end_transaction(Some(repaired), false),
            Some(None) => self.db.end_transaction(None, true),
        }
        // The base version is back: pages whose hints were dropped because they filled up
        // during the transaction may have room again there.
        for (table, page) in self.dropped_hints.drain(..) {
            self.meta.free_hints.entry(table).or_default().pages.insert(page);
        }
    }
}

/// Removes rows that were deleted and inserted back unchanged in one transaction: the net
/// change for them is nothing.
fn cancel_reinserted(inserts: &mut Vec<Row>, deletes: &mut Vec<Row>) {
    if inserts.is_empty() || deletes.is_empty() {
        return;
    }
    if inserts.len() * deletes.len() <= 64 {
        // A few updated rows (the common reducer): pairwise comparison, no hash maps.
        let mut i = 0;
        while i < inserts.len() {
            match deletes.iter().position(|d| *d == inserts[i]) {
                Some(j) => {
                    inserts.remove(i);
                    deletes.remove(j);
                }
                None => i += 1,
            }
        }
        return;
    }
    let mut deleted: AHashMap<&Row, usize> = AHashMap::new();
    for row in deletes.iter() {
        *deleted.entry(row).or_default() += 1;
    }
    let mut cancelled: AHashMap<Row, usize> = AHashMap::new();
    inserts.retain(|row| match deleted.get_mut(row) {
        Some(n) if *n > 0 => {
            *n -= 1;
            *cancelled.entry(row.clone()).or_default() += 1;
            false
        }
        _ => true,
    });
    deletes.retain(|row| match cancelled.get_mut(row) {
        Some(n) if *n > 0 => {
            *n -= 1;
            false
        }
        _ => true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnDef;
    use lightcone_page::ColumnType;

    // Proves a panic in the middle of an operation on a borrowed state poisons the database:
    // readers waiting for it wake up and fail loudly instead of hanging or seeing a torn state.
    #[test]
    fn panic_mid_operation_poisons_instead_of_hanging() {
        let db = Arc::new(Database::new());
        let mut tx = db.begin();
        tx.create_table(TableDef::new("t", vec![ColumnDef::new("a", ColumnType::U8)])).unwrap();
        tx.commit();
        let waiter = {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(30));
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.snapshot())).is_err()
            })
        };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut tx = db.begin();
            assert!(tx.lent, "no snapshot is held, so the state is borrowed");
            std::thread::sleep(std::time::Duration::from_millis(100));
            tx.guarded(|_| panic!("invariant broken mid-operation"));
        }));
        assert!(outcome.is_err());
        assert!(waiter.join().unwrap(), "the waiting reader must be woken and refused");
        assert!(db.try_snapshot().is_none());
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.begin().rollback())).is_err());
    }

    #[test]
    fn touched_tables_lists_written_tables_only() {
        let db = Database::new();
        let mut tx = db.begin();
        let a = tx.create_table(TableDef::new("a", vec![ColumnDef::new("x", ColumnType::U8)])).unwrap();
        let b = tx.create_table(TableDef::new("b", vec![ColumnDef::new("x", ColumnType::U8)])).unwrap();
        tx.commit();
        let mut tx = db.begin();
        assert_eq!(tx.touched_tables().count(), 0);
        let (rid, _) = tx.insert(b, vec![Value::U8(1)]).unwrap();
        let _ = tx.table(a).unwrap().row_count();
        assert_eq!(tx.touched_tables().collect::<Vec<_>>(), vec![b]);
        tx.delete(b, rid).unwrap();
        assert_eq!(tx.touched_tables().collect::<Vec<_>>(), vec![b], "listed even with no net change");
    }
}
