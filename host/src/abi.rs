//! The host functions a SpacetimeDB 2.x module imports (`spacetime_10.0` … `spacetime_10.5`),
//! over the call's engine transaction. Facts: `../shared/SPEC.md` §1 and the Apache-2.0
//! `spacetimedb-bindings-sys` doc comments.
//!
//! Conventions: a status return is `0` or an errno from [`errno`]; `out` pointers are written
//! only on success; a pointer outside linear memory traps the guest (the call fails and rolls
//! back with a message naming the function).

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use lightcone_mvcc::{
    IndexAlgorithm, IndexId, MvccError, ReadTx, Row, RowId, TableId, TxDelta, Value, WriteTx,
};
use lightcone_wal::{CommitLog, Ticket};
use wasmtime::format_err as anyhow;
use wasmtime::{Caller, Linker, Memory};

use crate::codec::{decode_column, CodecError, Reader, RowCodec};
use crate::logs::{LogLevel, ModuleLogs};
use crate::module_def::ModuleSpec;
use crate::tx_slot::TxSlot;

/// The ABI's error numbers (`spacetimedb-primitives` errno.rs).
pub mod errno {
    pub const HOST_CALL_FAILURE: u32 = 1;
    pub const NOT_IN_TRANSACTION: u32 = 2;
    pub const BSATN_DECODE_ERROR: u32 = 3;
    pub const NO_SUCH_TABLE: u32 = 4;
    pub const NO_SUCH_INDEX: u32 = 5;
    pub const NO_SUCH_ITER: u32 = 6;
    pub const NO_SUCH_CONSOLE_TIMER: u32 = 7;
    pub const NO_SUCH_BYTES: u32 = 8;
    pub const WRONG_INDEX_ALGO: u32 = 10;
    pub const BUFFER_TOO_SMALL: u32 = 11;
    pub const UNIQUE_ALREADY_EXISTS: u32 = 12;
    pub const INDEX_NOT_UNIQUE: u32 = 14;
    pub const NO_SUCH_ROW: u32 = 15;
    pub const SCHEDULE_AT_DELAY_TOO_LONG: u32 = 13;
    pub const AUTO_INC_OVERFLOW: u32 = 16;
    pub const WOULD_BLOCK_TRANSACTION: u32 = 17;
    pub const TRANSACTION_NOT_ANONYMOUS: u32 = 18;
    pub const HTTP_ERROR: u32 = 21;
}

/// `-1` from the iterator/source calls: exhausted (and destroyed).
const EXHAUSTED: i32 = -1;

type Res<T> = wasmtime::Result<T>;

/// Engine ids of a module's tables and indexes, resolved once per published module.
pub struct Catalog {
    pub spec: Arc<ModuleSpec>,
    by_name: HashMap<String, usize>,
    pub engine_ids: Vec<TableId>,
    by_engine: HashMap<TableId, usize>,
    index_by_name: HashMap<String, IndexId>,
    indexes: HashMap<IndexId, IndexInfo>,
}

#[derive(Debug, Clone)]
struct IndexInfo {
    table: usize,
    columns: Vec<u16>,
    algorithm: IndexAlgorithm,
    unique: bool,
}

impl Catalog {
    /// Resolves `spec`'s tables (which must exist in `tx`) to engine ids.
    pub fn resolve(spec: Arc<ModuleSpec>, tx: &impl ReadTx) -> Result<Catalog, MvccError> {
        let mut c = Catalog {
            spec: Arc::clone(&spec),
            by_name: HashMap::new(),
            engine_ids: Vec::new(),
            by_engine: HashMap::new(),
            index_by_name: HashMap::new(),
            indexes: HashMap::new(),
        };
        for (i, t) in spec.tables.iter().enumerate() {
            let id = tx.table_id(&t.name)?;
            c.engine_ids.push(id);
            c.by_engine.insert(id, i);
            c.by_name.insert(t.name.clone(), i);
            c.by_name.insert(t.source_name.clone(), i);
            let view = tx.table(id)?;
            for ix in &t.indexes {
                let index_id = view
                    .schema()
                    .index_id_by_name(&ix.source_name)
                    .ok_or_else(|| MvccError::NoSuchTableName(format!("index {}", ix.source_name)))?;
                c.index_by_name.insert(ix.source_name.clone(), index_id);
                c.indexes.insert(
                    index_id,
                    IndexInfo {
                        table: i,
                        columns: ix.columns.clone(),
                        algorithm: ix.algorithm,
                        unique: ix.unique,
                    },
                );
            }
        }
        Ok(c)
    }

    pub fn table_index(&self, engine_id: TableId) -> Option<usize> {
        self.by_engine.get(&engine_id).copied()
    }

    pub fn codec(&self, table: usize) -> &RowCodec {
        &self.spec.tables[table].codec
    }
}

/// Per-call handles (iterators, byte sources/sinks, timers): ids start at 1 (0 = invalid).
pub struct Handles<T> {
    slots: Vec<Option<T>>,
}

impl<T> Default for Handles<T> {
    fn default() -> Self {
        Handles { slots: Vec::new() }
    }
}

impl<T> Handles<T> {
    pub fn insert(&mut self, v: T) -> u32 {
        if let Some(i) = self.slots.iter().position(Option::is_none) {
            self.slots[i] = Some(v);
            return i as u32 + 1;
        }
        self.slots.push(Some(v));
        self.slots.len() as u32
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.slots.get_mut((id as usize).checked_sub(1)?)?.as_mut()
    }

    pub fn remove(&mut self, id: u32) -> Option<T> {
        self.slots.get_mut((id as usize).checked_sub(1)?)?.take()
    }

    pub fn clear(&mut self) {
        self.slots.clear();
    }
}

/// Encoded rows an iterator hands out, whole rows at a time.
#[derive(Default)]
pub struct RowIter {
    data: Vec<u8>,
    /// End offset of each row in `data`.
    ends: Vec<u32>,
    next: usize,
}

impl RowIter {
    fn push_row(&mut self, codec: &RowCodec, row: &Row) {
        codec.encode_row(row, &mut self.data);
        self.ends.push(self.data.len() as u32);
    }
}

/// The open row iterators of a call. The buffers of a finished iterator are kept for the next
/// one: a reducer's `find` opens one per lookup, and two allocations per lookup showed in the
/// transfer workload's profile.
#[derive(Default)]
pub struct RowIters {
    open: Handles<RowIter>,
    spare: Option<RowIter>,
}

/// A finished iterator's buffers are kept only up to this size, so one big scan does not pin
/// its memory for the instance's lifetime.
const MAX_SPARE_ITER_BYTES: usize = 64 << 10;

impl RowIters {
    /// An empty iterator to fill, then [`RowIters::insert`].
    fn empty(&mut self) -> RowIter {
        self.spare.take().unwrap_or_default()
    }

    fn filled(&mut self, codec: &RowCodec, rows: impl Iterator<Item = Row>) -> RowIter {
        let mut it = self.empty();
        for row in rows {
            it.push_row(codec, &row);
        }
        it
    }

    fn insert(&mut self, it: RowIter) -> u32 {
        self.open.insert(it)
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut RowIter> {
        self.open.get_mut(id)
    }

    /// Closes an iterator; false if `id` is not open.
    fn close(&mut self, id: u32) -> bool {
        let Some(mut it) = self.open.remove(id) else { return false };
        if it.data.capacity() + it.ends.capacity() * std::mem::size_of::<u32>() <= MAX_SPARE_ITER_BYTES {
            it.data.clear();
            it.ends.clear();
            it.next = 0;
            self.spare = Some(it);
        }
        true
    }

    fn clear(&mut self) {
        self.open.clear();
    }
}

/// Bytes the guest reads (reducer arguments, JWT payloads).
pub struct Source {
    pub data: Vec<u8>,
    pub pos: usize,
}

/// Who is calling and when: what `__call_reducer__` was told.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub sender: [u8; 32],
    pub connection_id: [u8; 16],
    pub timestamp_micros: i64,
    /// The caller's JWT payload (JSON), for `get_jwt`.
    pub jwt_payload: Option<Arc<str>>,
}

/// The store data of a module instance.
pub struct HostState {
    pub slot: TxSlot,
    pub catalog: Option<Arc<Catalog>>,
    pub memory: Option<Memory>,
    pub iters: RowIters,
    pub sources: Handles<Source>,
    pub sinks: Handles<Vec<u8>>,
    pub timers: Handles<(String, Instant)>,
    pub call: CallContext,
    pub module_identity: [u8; 32],
    pub logs: Arc<ModuleLogs>,
    /// `volatile_nonatomic_schedule_immediate` requests: run after the current call.
    pub scheduled_immediate: Vec<(String, Vec<u8>)>,
    pub limits: wasmtime::StoreLimits,
    /// The message of the last level-101 (panic) log line of the current call.
    pub last_panic: Option<String>,
    pub procedure_env: ProcedureEnv,
    /// True while `__call_procedure__` runs (the `procedure_*` imports need it).
    pub in_procedure: bool,
    /// The open transaction was begun by `procedure_start_mut_tx` (not by a reducer call).
    pub anonymous_tx: bool,
    /// Commits made by the running procedure's own transactions, in order.
    pub procedure_commits: Vec<ProcedureCommit>,
    /// Set while a view runs: the tables (indexes into the spec) it has read so far. Writes
    /// are refused meanwhile.
    pub view_reads: Option<std::collections::BTreeSet<usize>>,
    /// The write turn of the procedure transaction open on a gated instance.
    pub tx_turn: Option<TxTurn>,
}

/// What a procedure's own transactions commit into; kept across instance renewals.
#[derive(Clone, Default)]
pub struct ProcedureEnv {
    pub log: Option<Arc<CommitLog>>,
    /// Told about every non-empty commit of a procedure's transaction right after it, before
    /// the procedure goes on (the server broadcasts it to subscribers there).
    pub on_commit: Option<CommitObserver>,
    /// Set on an instance running procedures beside the database's thread: every transaction
    /// a procedure opens first asks the database thread for its turn (see [`TxTurn`]).
    pub gate: Option<TxGate>,
}

/// Asks the database thread for the next write turn; blocks until granted.
pub type TxGate = Arc<dyn Fn() -> Result<TxTurn, String> + Send + Sync>;

/// What the database thread learns when a procedure's transaction ends: the commit (delta
/// and durability ticket), or `None` if it rolled back.
pub type TurnEnd = Option<(Arc<TxDelta>, Option<Ticket>)>;

/// A write turn granted by the database thread, which waits (runs nothing else) until the
/// procedure's transaction ends, then handles the commit in order with its own: schedules,
/// view refresh, subscribers. Dropping an unfinished turn (a trap inside the transaction)
/// reports a rollback, so the database thread never waits forever.
pub struct TxTurn {
    done: Option<std::sync::mpsc::SyncSender<TurnEnd>>,
    /// Signalled by the database thread once it has announced a commit.
    announced: std::sync::mpsc::Receiver<()>,
}

impl TxTurn {
    pub fn new(
        done: std::sync::mpsc::SyncSender<TurnEnd>,
        announced: std::sync::mpsc::Receiver<()>,
    ) -> TxTurn {
        TxTurn { done: Some(done), announced }
    }

    /// Ends the turn with the transaction's commit, or `None` for a rollback. A commit returns
    /// only once the database thread has announced it (and the view refresh it caused), so
    /// the procedure's caller hears back after the subscribers saw its commits.
    pub fn finish(mut self, end: TurnEnd) {
        let Some(done) = self.done.take() else { return };
        let wait = end.is_some();
        if done.send(end).is_ok() && wait {
            let _ = self.announced.recv();
        }
    }
}

impl Drop for TxTurn {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(None);
        }
    }
}

/// Called with every commit a procedure's own transaction makes, right after it.
pub type CommitObserver = Arc<dyn Fn(&Arc<TxDelta>) + Send + Sync>;

/// One commit made by `procedure_commit_mut_tx`.
pub struct ProcedureCommit {
    pub delta: Arc<TxDelta>,
    /// Durability ticket when a commit log is attached and the commit changed data.
    pub ticket: Option<Ticket>,
}

impl HostState {
    /// Forgets every per-call handle.
    pub fn end_call(&mut self) {
        self.iters.clear();
        self.sources.clear();
        self.sinks.clear();
        self.timers.clear();
        self.call.jwt_payload = None;
    }
}

fn mem_state<'a>(caller: &'a mut Caller<'_, HostState>) -> (&'a mut [u8], &'a mut HostState) {
    // Invariant: `memory` is set right after instantiation, before any guest code runs.
    let memory = caller.data().memory.expect("guest memory is set after instantiation");
    memory.data_and_store_mut(caller)
}

fn span(mem_len: usize, ptr: u32, len: u32, what: &str) -> Res<std::ops::Range<usize>> {
    let start = ptr as usize;
    match start.checked_add(len as usize) {
        Some(end) if end <= mem_len => Ok(start..end),
        _ => Err(anyhow!(
            "{what}: pointer {ptr:#x} + {len} bytes is outside the module's memory ({mem_len} bytes)"
        )),
    }
}

fn read<'m>(mem: &'m [u8], ptr: u32, len: u32, what: &str) -> Res<&'m [u8]> {
    Ok(&mem[span(mem.len(), ptr, len, what)?])
}

fn read_u32(mem: &[u8], ptr: u32, what: &str) -> Res<u32> {
    let b = read(mem, ptr, 4, what)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn write(mem: &mut [u8], ptr: u32, bytes: &[u8], what: &str) -> Res<()> {
    let r = span(mem.len(), ptr, bytes.len() as u32, what)?;
    mem[r].copy_from_slice(bytes);
    Ok(())
}

fn read_str(mem: &[u8], ptr: u32, len: u32, what: &str) -> Res<String> {
    Ok(String::from_utf8_lossy(read(mem, ptr, len, what)?).into_owned())
}

/// The ABI errno for an engine error, or a trap for failures the ABI has no number for.
fn engine_errno(e: MvccError) -> Res<u32> {
    use MvccError::*;
    Ok(match e {
        UniqueViolation { .. } => errno::UNIQUE_ALREADY_EXISTS,
        NoSuchTable(_) | NoSuchTableName(_) => errno::NO_SUCH_TABLE,
        NoSuchIndex(_) => errno::NO_SUCH_INDEX,
        IndexNotUnique { .. } => errno::INDEX_NOT_UNIQUE,
        NoSuchRow { .. } => errno::NO_SUCH_ROW,
        SequenceExhausted { .. } => errno::AUTO_INC_OVERFLOW,
        WrongIndexAlgo { .. } => errno::WRONG_INDEX_ALGO,
        TypeMismatch { .. } | WrongArity { .. } | KeyArity { .. } => errno::BSATN_DECODE_ERROR,
        other => return Err(anyhow!("{other}")),
    })
}

/// `Ok(errno)` for a decode failure, logged so the module author can see what was wrong.
fn decode_errno(state: &HostState, what: &str, e: CodecError) -> u32 {
    state.logs.host(LogLevel::Warn, format!("{what}: {e}"));
    errno::BSATN_DECODE_ERROR
}

macro_rules! tx_or_errno {
    ($state:expr) => {
        match $state.slot.get() {
            Some(tx) => tx,
            None => return Ok(errno::NOT_IN_TRANSACTION),
        }
    };
}

macro_rules! try_errno {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return Ok(code),
        }
    };
}

fn catalog(state: &HostState) -> Arc<Catalog> {
    // Invariant: the catalog is installed before any reducer (or lifecycle) call.
    Arc::clone(state.catalog.as_ref().expect("catalog is installed before calls"))
}

/// Checks and records an access to table `t` by the running guest code: a view may only read
/// (what it reads becomes its read set: the host re-runs it when one of those tables
/// changes); nothing but the host may write a view's table.
fn access(state: &mut HostState, cat: &Catalog, t: usize, write: bool) -> Res<()> {
    let table = &cat.spec.tables[t];
    match &mut state.view_reads {
        Some(_) if write => {
            Err(anyhow!("views are read-only: a view tried to change table `{}`", table.name))
        }
        // Views are refreshed in no particular order, so another view's rows may be stale.
        Some(_) if table.view.is_some() => {
            Err(anyhow!("a view may read tables, not other views (`{}` is one)", table.name))
        }
        Some(reads) => {
            reads.insert(t);
            Ok(())
        }
        None if write && table.view.is_some() => {
            Err(anyhow!("table `{}` holds a view's results; only the host writes it", table.name))
        }
        None => Ok(()),
    }
}

fn table_of(cat: &Catalog, table_id: u32) -> Result<usize, u32> {
    cat.table_index(table_id).ok_or(errno::NO_SUCH_TABLE)
}

fn index_of(cat: &Catalog, index_id: u32) -> Result<&IndexInfo, u32> {
    cat.indexes.get(&index_id).ok_or(errno::NO_SUCH_INDEX)
}

/// `SCHEDULE_AT_DELAY_TOO_LONG` when `row` belongs to a scheduled table and asks for a time
/// further away than [`MAX_SCHEDULE_DELAY_MICROS`](crate::module_host::MAX_SCHEDULE_DELAY_MICROS).
fn schedule_delay_errno(cat: &Catalog, t: usize, row: &Row, now: i64) -> Option<u32> {
    use crate::module_host::{schedule_at, ScheduleAt, MAX_SCHEDULE_DELAY_MICROS};
    let sched = cat.spec.schedules.iter().find(|s| s.table == t)?;
    let delay = match schedule_at(&row[sched.at_column as usize])? {
        ScheduleAt::Time(at) => at.saturating_sub(now),
        ScheduleAt::Interval(d) => d,
    };
    (delay > MAX_SCHEDULE_DELAY_MICROS).then_some(errno::SCHEDULE_AT_DELAY_TOO_LONG)
}

/// Inserts with set semantics: a row identical to one already present is a no-op.
fn insert_row(tx: &mut WriteTx<'_>, cat: &Catalog, t: usize, row: Row) -> Result<Row, MvccError> {
    let table_id = cat.engine_ids[t];
    match tx.insert(table_id, row.clone()) {
        Ok((_, stored)) => Ok(stored),
        Err(e @ MvccError::UniqueViolation { .. }) => {
            for ix in cat.spec.tables[t].indexes.iter().filter(|i| i.unique) {
                let key: Vec<Value> = ix.columns.iter().map(|&c| row[c as usize].clone()).collect();
                let index_id = cat.index_by_name[&ix.source_name];
                let view = tx.table(table_id)?;
                if let Some(rid) = view.unique_lookup(index_id, &key)? {
                    if view.get(rid).as_ref() == Some(&row) {
                        return Ok(row);
                    }
                }
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// The sequence columns' values of `row`, BSATN-encoded back to back (the insert write-back).
fn generated_columns(cat: &Catalog, t: usize, row: &Row) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cat.spec.tables[t].sequence_columns() {
        crate::codec::encode_value(&row[c as usize], &mut out);
    }
    out
}

/// Low and high engine bounds of an index scan.
type KeyBounds = (Bound<Vec<Value>>, Bound<Vec<Value>>);

/// Decodes the range-scan arguments into engine bounds over the index's columns.
fn decode_range(
    cat: &Catalog,
    info: &IndexInfo,
    prefix: &[u8],
    prefix_elems: u32,
    rstart: &[u8],
    rend: &[u8],
) -> Result<KeyBounds, CodecError> {
    let codec = cat.codec(info.table);
    let n = prefix_elems as usize;
    if n > info.columns.len() {
        return Err(CodecError::Invalid {
            at: 0,
            reason: format!("prefix of {n} columns for an index of {}", info.columns.len()),
        });
    }
    let mut r = Reader::new(prefix);
    let prefix_values = codec.decode_values(&info.columns[..n], &mut r)?;
    r.finish("index scan prefix")?;
    if n == info.columns.len() {
        return Ok((Bound::Included(prefix_values.clone()), Bound::Included(prefix_values)));
    }
    let (_, col_codec) = &codec.columns[info.columns[n] as usize];
    let bound = |bytes: &[u8], what: &str| -> Result<Bound<Vec<Value>>, CodecError> {
        let mut r = Reader::new(bytes);
        let at = r.pos;
        let b = match r.u8(what)? {
            tag @ (0 | 1) => {
                let mut key = prefix_values.clone();
                key.push(decode_column(col_codec, &codec.typespace, &mut r)?);
                if tag == 0 {
                    Bound::Included(key)
                } else {
                    Bound::Excluded(key)
                }
            }
            2 if prefix_values.is_empty() => Bound::Unbounded,
            2 => Bound::Included(prefix_values.clone()),
            t => return Err(CodecError::Invalid { at, reason: format!("Bound tag {t} ({what})") }),
        };
        r.finish(what)?;
        Ok(b)
    };
    Ok((bound(rstart, "range start")?, bound(rend, "range end")?))
}

fn bound_ref(b: &Bound<Vec<Value>>) -> Bound<&[Value]> {
    b.as_ref().map(Vec::as_slice)
}

/// Row ids in an index range (or point, when both bounds are the same full key).
fn scan_index(
    tx: &WriteTx<'_>,
    cat: &Catalog,
    index_id: IndexId,
    info: &IndexInfo,
    lo: &Bound<Vec<Value>>,
    hi: &Bound<Vec<Value>>,
) -> Result<Vec<RowId>, MvccError> {
    let view = tx.table(cat.engine_ids[info.table])?;
    let full_point = matches!((lo, hi), (Bound::Included(a), Bound::Included(b))
        if a == b && a.len() == info.columns.len());
    let scan = if full_point && !info.algorithm.supports_range() {
        let Bound::Included(key) = lo else { unreachable!("checked above") };
        view.index_seek(index_id, key)?
    } else {
        view.index_range(index_id, bound_ref(lo), bound_ref(hi))?
    };
    Ok(scan.collect())
}

fn rows_of(tx: &WriteTx<'_>, table: TableId, rids: &[RowId]) -> Result<Vec<Row>, MvccError> {
    let view = tx.table(table)?;
    // Invariant: ids come from an index of the same transaction state, so every row exists.
    Ok(rids.iter().map(|&r| view.get(r).expect("indexed row exists")).collect())
}

fn delete_rids(tx: &mut WriteTx<'_>, table: TableId, rids: &[RowId]) -> Result<u32, MvccError> {
    let mut n = 0;
    for &rid in rids {
        if tx.delete(table, rid)?.is_some() {
            n += 1;
        }
    }
    Ok(n)
}

/// Registers every host function of the module ABI on `linker`.
pub fn link(linker: &mut Linker<HostState>) -> Res<()> {
    const M0: &str = "spacetime_10.0";

    linker.func_wrap(
        M0,
        "table_id_from_name",
        |mut c: Caller<'_, HostState>, ptr: u32, len: u32, out: u32| {
            let (mem, state) = mem_state(&mut c);
            let name = read_str(mem, ptr, len, "table_id_from_name")?;
            if !state.slot.is_open() {
                return Ok(errno::NOT_IN_TRANSACTION);
            }
            let cat = catalog(state);
            match cat.by_name.get(&name) {
                Some(&t) => {
                    write(mem, out, &cat.engine_ids[t].to_le_bytes(), "table_id_from_name out")?;
                    Ok(0)
                }
                None => Ok(errno::NO_SUCH_TABLE),
            }
        },
    )?;

    linker.func_wrap(
        M0,
        "index_id_from_name",
        |mut c: Caller<'_, HostState>, ptr: u32, len: u32, out: u32| {
            let (mem, state) = mem_state(&mut c);
            let name = read_str(mem, ptr, len, "index_id_from_name")?;
            if !state.slot.is_open() {
                return Ok(errno::NOT_IN_TRANSACTION);
            }
            match catalog(state).index_by_name.get(&name) {
                Some(&id) => {
                    write(mem, out, &id.to_le_bytes(), "index_id_from_name out")?;
                    Ok(0)
                }
                None => Ok(errno::NO_SUCH_INDEX),
            }
        },
    )?;

    linker.func_wrap(
        M0,
        "datastore_table_row_count",
        |mut c: Caller<'_, HostState>, table_id: u32, out: u32| {
            let (mem, state) = mem_state(&mut c);
            let cat = catalog(state);
            let t = try_errno!(table_of(&cat, table_id));
            access(state, &cat, t, false)?;
            let tx = tx_or_errno!(state);
            let n = tx.table(cat.engine_ids[t]).map_err(|e| anyhow!("{e}"))?.row_count();
            write(mem, out, &n.to_le_bytes(), "datastore_table_row_count out")?;
            Ok(0)
        },
    )?;

    linker.func_wrap(
        M0,
        "datastore_table_scan_bsatn",
        |mut c: Caller<'_, HostState>, table_id: u32, out: u32| {
            let (mem, state) = mem_state(&mut c);
            let cat = catalog(state);
            let t = try_errno!(table_of(&cat, table_id));
            access(state, &cat, t, false)?;
            let tx = tx_or_errno!(state);
            let view = tx.table(cat.engine_ids[t]).map_err(|e| anyhow!("{e}"))?;
            let it = state.iters.filled(cat.codec(t), view.scan().map(|(_, row)| row));
            let id = state.iters.insert(it);
            write(mem, out, &id.to_le_bytes(), "datastore_table_scan_bsatn out")?;
            Ok(0)
        },
    )?;

    for (module, name, delete) in [
        (M0, "datastore_index_scan_range_bsatn", false),
        (M0, "datastore_btree_scan_bsatn", false),
        (M0, "datastore_delete_by_index_scan_range_bsatn", true),
        (M0, "datastore_delete_by_btree_scan_bsatn", true),
    ] {
        linker.func_wrap(
            module,
            name,
            move |mut c: Caller<'_, HostState>,
                  index_id: u32,
                  prefix_ptr: u32,
                  prefix_len: u32,
                  prefix_elems: u32,
                  rstart_ptr: u32,
                  rstart_len: u32,
                  rend_ptr: u32,
                  rend_len: u32,
                  out: u32| {
                let (mem, state) = mem_state(&mut c);
                let prefix = read(mem, prefix_ptr, prefix_len, name)?;
                let rstart = read(mem, rstart_ptr, rstart_len, name)?;
                let rend = read(mem, rend_ptr, rend_len, name)?;
                let cat = catalog(state);
                let info = try_errno!(index_of(&cat, index_id)).clone();
                access(state, &cat, info.table, delete)?;
                let (lo, hi) = match decode_range(&cat, &info, prefix, prefix_elems & 0xffff, rstart, rend) {
                    Ok(b) => b,
                    Err(e) => return Ok(decode_errno(state, name, e)),
                };
                let table_id = cat.engine_ids[info.table];
                let tx = tx_or_errno!(state);
                let rids = match scan_index(tx, &cat, index_id, &info, &lo, &hi) {
                    Ok(r) => r,
                    Err(e) => return engine_errno(e),
                };
                if delete {
                    let n = delete_rids(tx, table_id, &rids).or_else(|e| engine_errno(e).map(|_| 0))?;
                    write(mem, out, &n.to_le_bytes(), name)?;
                } else {
                    let rows = rows_of(tx, table_id, &rids).map_err(|e| anyhow!("{e}"))?;
                    let it = state.iters.filled(cat.codec(info.table), rows.into_iter());
                    let id = state.iters.insert(it);
                    write(mem, out, &id.to_le_bytes(), name)?;
                }
                Ok(0u32)
            },
        )?;
    }

    for (name, delete) in
        [("datastore_index_scan_point_bsatn", false), ("datastore_delete_by_index_scan_point_bsatn", true)]
    {
        linker.func_wrap(
            "spacetime_10.4",
            name,
            move |mut c: Caller<'_, HostState>, index_id: u32, point_ptr: u32, point_len: u32, out: u32| {
                let (mem, state) = mem_state(&mut c);
                let point = read(mem, point_ptr, point_len, name)?;
                let cat = catalog(state);
                let info = try_errno!(index_of(&cat, index_id));
                access(state, &cat, info.table, delete)?;
                let codec = cat.codec(info.table);
                let mut r = Reader::new(point);
                let key = match codec
                    .decode_values(&info.columns, &mut r)
                    .and_then(|k| r.finish("point").map(|_| k))
                {
                    Ok(k) => k,
                    Err(e) => return Ok(decode_errno(state, name, e)),
                };
                let table_id = cat.engine_ids[info.table];
                let tx = tx_or_errno!(state);
                let view = match tx.table(table_id) {
                    Ok(v) => v,
                    Err(e) => return engine_errno(e),
                };
                let scan = match view.index_seek(index_id, &key) {
                    Ok(scan) => scan,
                    Err(e) => return engine_errno(e),
                };
                if delete {
                    let rids: Vec<RowId> = scan.collect();
                    let n = delete_rids(tx, table_id, &rids).map_err(|e| anyhow!("{e}"))?;
                    write(mem, out, &n.to_le_bytes(), name)?;
                    return Ok(0u32);
                }
                // Rows are encoded straight from the scan: a point lookup yields at most one
                // row in a unique index, and no list of ids or rows is built for it.
                let mut it = state.iters.empty();
                for rid in scan {
                    // Invariant: the id comes from an index of the same state, so the row exists.
                    it.push_row(codec, &view.get(rid).expect("indexed row exists"));
                }
                let id = state.iters.insert(it);
                write(mem, out, &id.to_le_bytes(), name)?;
                Ok(0u32)
            },
        )?;
    }

    linker.func_wrap(
        M0,
        "datastore_delete_all_by_eq_bsatn",
        |mut c: Caller<'_, HostState>, table_id: u32, rel_ptr: u32, rel_len: u32, out: u32| {
            let (mem, state) = mem_state(&mut c);
            let rel = read(mem, rel_ptr, rel_len, "datastore_delete_all_by_eq_bsatn")?;
            let cat = catalog(state);
            let t = try_errno!(table_of(&cat, table_id));
            access(state, &cat, t, true)?;
            let codec = cat.codec(t);
            let mut r = Reader::new(rel);
            let rows = (|| {
                let n = r.u32("row count")?;
                let rows = (0..n).map(|_| codec.decode_row_from(&mut r)).collect::<Result<Vec<_>, _>>()?;
                r.finish("rows to delete")?;
                Ok(rows)
            })();
            let rows: Vec<Row> = match rows {
                Ok(rows) => rows,
                Err(e) => return Ok(decode_errno(state, "datastore_delete_all_by_eq_bsatn", e)),
            };
            let tx = tx_or_errno!(state);
            let n = delete_equal_rows(tx, &cat, t, &rows).map_err(|e| anyhow!("{e}"))?;
            write(mem, out, &n.to_le_bytes(), "datastore_delete_all_by_eq_bsatn out")?;
            Ok(0u32)
        },
    )?;

    linker.func_wrap(
        "spacetime_10.5",
        "datastore_clear",
        |mut c: Caller<'_, HostState>, table_id: u32, out: u32| {
            let (mem, state) = mem_state(&mut c);
            let cat = catalog(state);
            let t = try_errno!(table_of(&cat, table_id));
            access(state, &cat, t, true)?;
            let engine_id = cat.engine_ids[t];
            let tx = tx_or_errno!(state);
            let rids: Vec<RowId> = tx.table(engine_id).map_err(|e| anyhow!("{e}"))?.row_ids().collect();
            let n = delete_rids(tx, engine_id, &rids).map_err(|e| anyhow!("{e}"))? as u64;
            write(mem, out, &n.to_le_bytes(), "datastore_clear out")?;
            Ok(0u32)
        },
    )?;

    linker.func_wrap(
        M0,
        "row_iter_bsatn_advance",
        |mut c: Caller<'_, HostState>, iter: u32, buf_ptr: u32, len_ptr: u32| {
            let (mem, state) = mem_state(&mut c);
            let capacity = read_u32(mem, len_ptr, "row_iter_bsatn_advance buffer length")?;
            span(mem.len(), buf_ptr, capacity, "row_iter_bsatn_advance buffer")?;
            let Some(it) = state.iters.get_mut(iter) else { return Ok(errno::NO_SUCH_ITER as i32) };
            let start = if it.next == 0 { 0 } else { it.ends[it.next - 1] as usize };
            let mut end = start;
            let mut next = it.next;
            while next < it.ends.len() && it.ends[next] as usize - start <= capacity as usize {
                end = it.ends[next] as usize;
                next += 1;
            }
            if next == it.next && next < it.ends.len() {
                let needed = it.ends[next] - start as u32;
                write(mem, len_ptr, &needed.to_le_bytes(), "row_iter_bsatn_advance")?;
                return Ok(errno::BUFFER_TOO_SMALL as i32);
            }
            write(mem, buf_ptr, &it.data[start..end], "row_iter_bsatn_advance buffer")?;
            write(mem, len_ptr, &((end - start) as u32).to_le_bytes(), "row_iter_bsatn_advance")?;
            it.next = next;
            if next == it.ends.len() {
                state.iters.close(iter);
                return Ok(EXHAUSTED);
            }
            Ok(0)
        },
    )?;

    linker.func_wrap(M0, "row_iter_bsatn_close", |mut c: Caller<'_, HostState>, iter: u32| {
        Ok(if c.data_mut().iters.close(iter) { 0u32 } else { errno::NO_SUCH_ITER })
    })?;

    linker.func_wrap(
        M0,
        "datastore_insert_bsatn",
        |mut c: Caller<'_, HostState>, table_id: u32, row_ptr: u32, len_ptr: u32| {
            let (mem, state) = mem_state(&mut c);
            let len = read_u32(mem, len_ptr, "datastore_insert_bsatn row length")?;
            let bytes = read(mem, row_ptr, len, "datastore_insert_bsatn row")?;
            let cat = catalog(state);
            let t = try_errno!(table_of(&cat, table_id));
            access(state, &cat, t, true)?;
            let row = match cat.codec(t).decode_row(bytes) {
                Ok(r) => r,
                Err(e) => return Ok(decode_errno(state, "datastore_insert_bsatn", e)),
            };
            if let Some(code) = schedule_delay_errno(&cat, t, &row, state.call.timestamp_micros) {
                return Ok(code);
            }
            let tx = tx_or_errno!(state);
            let stored = match insert_row(tx, &cat, t, row) {
                Ok(r) => r,
                Err(e) => return engine_errno(e),
            };
            let generated = generated_columns(&cat, t, &stored);
            write(mem, row_ptr, &generated, "datastore_insert_bsatn write-back")?;
            write(
                mem,
                len_ptr,
                &(generated.len() as u32).to_le_bytes(),
                "datastore_insert_bsatn write-back",
            )?;
            Ok(0u32)
        },
    )?;

    linker.func_wrap(
        M0,
        "datastore_update_bsatn",
        |mut c: Caller<'_, HostState>, table_id: u32, index_id: u32, row_ptr: u32, len_ptr: u32| {
            let (mem, state) = mem_state(&mut c);
            let len = read_u32(mem, len_ptr, "datastore_update_bsatn row length")?;
            let bytes = read(mem, row_ptr, len, "datastore_update_bsatn row")?;
            let cat = catalog(state);
            let t = try_errno!(table_of(&cat, table_id));
            access(state, &cat, t, true)?;
            let info = try_errno!(index_of(&cat, index_id));
            if info.table != t {
                return Ok(errno::NO_SUCH_INDEX);
            }
            if !info.unique {
                return Ok(errno::INDEX_NOT_UNIQUE);
            }
            let row = match cat.codec(t).decode_row(bytes) {
                Ok(r) => r,
                Err(e) => return Ok(decode_errno(state, "datastore_update_bsatn", e)),
            };
            if let Some(code) = schedule_delay_errno(&cat, t, &row, state.call.timestamp_micros) {
                return Ok(code);
            }
            let tx = tx_or_errno!(state);
            let stored = match tx.update_by_unique(index_id, row) {
                Ok((_, r)) => r,
                Err(e) => return engine_errno(e),
            };
            let generated = generated_columns(&cat, t, &stored);
            write(mem, row_ptr, &generated, "datastore_update_bsatn write-back")?;
            write(
                mem,
                len_ptr,
                &(generated.len() as u32).to_le_bytes(),
                "datastore_update_bsatn write-back",
            )?;
            Ok(0u32)
        },
    )?;

    linker.func_wrap(
        M0,
        "volatile_nonatomic_schedule_immediate",
        |mut c: Caller<'_, HostState>, name_ptr: u32, name_len: u32, args_ptr: u32, args_len: u32| {
            let (mem, state) = mem_state(&mut c);
            let name = read_str(mem, name_ptr, name_len, "volatile_nonatomic_schedule_immediate")?;
            let args = read(mem, args_ptr, args_len, "volatile_nonatomic_schedule_immediate")?.to_vec();
            state.scheduled_immediate.push((name, args));
            Ok(())
        },
    )?;

    linker.func_wrap(
        M0,
        "bytes_sink_write",
        |mut c: Caller<'_, HostState>, sink: u32, buf_ptr: u32, len_ptr: u32| {
            let (mem, state) = mem_state(&mut c);
            let len = read_u32(mem, len_ptr, "bytes_sink_write length")?;
            let bytes = read(mem, buf_ptr, len, "bytes_sink_write buffer")?;
            let Some(out) = state.sinks.get_mut(sink) else { return Ok(errno::NO_SUCH_BYTES) };
            out.extend_from_slice(bytes);
            Ok(0u32)
        },
    )?;

    linker.func_wrap(
        M0,
        "bytes_source_read",
        |mut c: Caller<'_, HostState>, source: u32, buf_ptr: u32, len_ptr: u32| {
            let (mem, state) = mem_state(&mut c);
            let capacity = read_u32(mem, len_ptr, "bytes_source_read length")?;
            span(mem.len(), buf_ptr, capacity, "bytes_source_read buffer")?;
            let Some(src) = state.sources.get_mut(source) else { return Ok(errno::NO_SUCH_BYTES as i32) };
            let n = (src.data.len() - src.pos).min(capacity as usize);
            let chunk = src.pos..src.pos + n;
            src.pos += n;
            let done = src.pos == src.data.len();
            write(mem, buf_ptr, &src.data[chunk], "bytes_source_read buffer")?;
            write(mem, len_ptr, &(n as u32).to_le_bytes(), "bytes_source_read length")?;
            if done {
                state.sources.remove(source);
                return Ok(EXHAUSTED);
            }
            Ok(0)
        },
    )?;

    linker.func_wrap(
        "spacetime_10.1",
        "bytes_source_remaining_length",
        |mut c: Caller<'_, HostState>, source: u32, out: u32| {
            let (mem, state) = mem_state(&mut c);
            let Some(src) = state.sources.get_mut(source) else { return Ok(errno::NO_SUCH_BYTES as i32) };
            let remaining = (src.data.len() - src.pos) as u32;
            write(mem, out, &remaining.to_le_bytes(), "bytes_source_remaining_length out")?;
            Ok(0)
        },
    )?;

    linker.func_wrap(
        M0,
        "console_log",
        |mut c: Caller<'_, HostState>,
         level: u32,
         target_ptr: u32,
         target_len: u32,
         file_ptr: u32,
         file_len: u32,
         line: u32,
         msg_ptr: u32,
         msg_len: u32| {
            let (mem, state) = mem_state(&mut c);
            let opt = |ptr: u32, len: u32, what: &str| -> Res<Option<String>> {
                if ptr == 0 {
                    Ok(None)
                } else {
                    read_str(mem, ptr, len, what).map(Some)
                }
            };
            let target = opt(target_ptr, target_len, "console_log target")?;
            let filename = opt(file_ptr, file_len, "console_log filename")?;
            let message = read_str(mem, msg_ptr, msg_len, "console_log message")?;
            let line = (line != u32::MAX).then_some(line);
            if level == 101 {
                state.last_panic = Some(message.clone());
            }
            state.logs.push(LogLevel::from_abi(level), target, filename, line, message);
            Ok(())
        },
    )?;

    linker.func_wrap(
        M0,
        "console_timer_start",
        |mut c: Caller<'_, HostState>, name_ptr: u32, name_len: u32| {
            let (mem, state) = mem_state(&mut c);
            let name = read_str(mem, name_ptr, name_len, "console_timer_start")?;
            Ok(state.timers.insert((name, Instant::now())))
        },
    )?;

    linker.func_wrap(M0, "console_timer_end", |mut c: Caller<'_, HostState>, timer: u32| {
        let state = c.data_mut();
        let Some((name, start)) = state.timers.remove(timer) else { return Ok(errno::NO_SUCH_CONSOLE_TIMER) };
        state.logs.push(
            LogLevel::Info,
            None,
            None,
            None,
            format!("Timing span {name:?}: {:?}", start.elapsed()),
        );
        Ok(0u32)
    })?;

    linker.func_wrap(M0, "identity", |mut c: Caller<'_, HostState>, out: u32| {
        let (mem, state) = mem_state(&mut c);
        let id = state.module_identity;
        write(mem, out, &id, "identity out")
    })?;

    linker.func_wrap(
        "spacetime_10.2",
        "get_jwt",
        |mut c: Caller<'_, HostState>, conn_ptr: u32, out: u32| {
            let (mem, state) = mem_state(&mut c);
            let conn = read(mem, conn_ptr, 16, "get_jwt connection id")?;
            if !state.slot.is_open() {
                return Ok(errno::NOT_IN_TRANSACTION);
            }
            let handle = match &state.call.jwt_payload {
                Some(jwt) if conn == state.call.connection_id && conn != [0u8; 16] => {
                    let data = jwt.as_bytes().to_vec();
                    state.sources.insert(Source { data, pos: 0 })
                }
                _ => 0,
            };
            write(mem, out, &handle.to_le_bytes(), "get_jwt out")?;
            Ok(0u32)
        },
    )?;

    // Procedures: run outside any transaction and may open their own (`with_tx`), sleep, or
    // make HTTP requests. A database runs its procedures one at a time (beside its reducers),
    // so blocking calls are capped.
    const M3: &str = "spacetime_10.3";
    linker.func_wrap(M3, "procedure_sleep_until", |c: Caller<'_, HostState>, wake_at: i64| -> Res<i64> {
        outside_tx_in_procedure(c.data(), "procedure_sleep_until")?;
        let wait = wake_at.saturating_sub(crate::logs::now_micros());
        if wait > 0 {
            let wait = std::time::Duration::from_micros(wait as u64);
            if wait > crate::procedure_http::MAX_PROCEDURE_BLOCKING {
                return Err(anyhow!(
                    "procedure_sleep_until: {wait:?} is longer than Lightcone lets a procedure block \
                     ({:?}): a database runs its procedures one at a time",
                    crate::procedure_http::MAX_PROCEDURE_BLOCKING
                ));
            }
            std::thread::sleep(wait);
        }
        Ok(crate::logs::now_micros())
    })?;
    linker.func_wrap(M3, "procedure_start_mut_tx", |mut c: Caller<'_, HostState>, out: u32| -> Res<u32> {
        let (mem, state) = mem_state(&mut c);
        span(mem.len(), out, 8, "procedure_start_mut_tx out")?;
        if state.slot.is_open() {
            return Ok(errno::WOULD_BLOCK_TRANSACTION);
        }
        if !state.in_procedure {
            return Err(anyhow!("procedure_start_mut_tx called outside a procedure"));
        }
        if let Some(gate) = state.procedure_env.gate.clone() {
            state.tx_turn = Some(gate().map_err(|e| anyhow!("procedure_start_mut_tx: {e}"))?);
        }
        state.slot.begin();
        state.anonymous_tx = true;
        write(mem, out, &crate::logs::now_micros().to_le_bytes(), "procedure_start_mut_tx out")?;
        Ok(0u32)
    })?;
    linker.func_wrap(M3, "procedure_commit_mut_tx", |mut c: Caller<'_, HostState>| -> Res<u32> {
        let state = c.data_mut();
        if !state.anonymous_tx {
            return Ok(errno::TRANSACTION_NOT_ANONYMOUS);
        }
        state.anonymous_tx = false;
        let log = state.procedure_env.log.clone();
        let turn = state.tx_turn.take();
        // Invariant: `anonymous_tx` is set only together with an open slot.
        let tx = state.slot.take().expect("an anonymous transaction is open");
        let (delta, appended) = tx.commit_with(|d| match (&log, d.is_empty()) {
            (Some(log), false) => log.append(d).map(Some),
            _ => Ok(None),
        });
        let delta = Arc::new(delta);
        if let Some(turn) = turn {
            // The commit is visible whether or not the log took it: the database thread
            // announces it, in order with its own commits, before this procedure goes on.
            let ticket = appended.as_ref().ok().copied().flatten();
            turn.finish((!delta.is_empty()).then(|| (Arc::clone(&delta), ticket)));
        }
        // A log that cannot take the commit is a host failure the procedure cannot handle, so
        // it ends (as a reducer's call fails in the same case).
        let ticket =
            appended.map_err(|e| anyhow!("procedure_commit_mut_tx: commit log append failed: {e}"))?;
        if state.procedure_env.gate.is_some() {
            // Announced through the turn above.
        } else if !delta.is_empty() {
            if let Some(on_commit) = state.procedure_env.on_commit.clone() {
                on_commit(&delta);
            }
        }
        state.procedure_commits.push(ProcedureCommit { delta, ticket });
        Ok(0)
    })?;
    linker.func_wrap(M3, "procedure_abort_mut_tx", |mut c: Caller<'_, HostState>| -> Res<u32> {
        let state = c.data_mut();
        if !state.anonymous_tx {
            return Ok(errno::TRANSACTION_NOT_ANONYMOUS);
        }
        state.anonymous_tx = false;
        drop(state.slot.take());
        drop(state.tx_turn.take());
        Ok(0)
    })?;
    linker.func_wrap(
        M3,
        "procedure_http_request",
        |mut c: Caller<'_, HostState>,
         req_ptr: u32,
         req_len: u32,
         body_ptr: u32,
         body_len: u32,
         out: u32|
         -> Res<u32> {
            let (mem, state) = mem_state(&mut c);
            let request = read(mem, req_ptr, req_len, "procedure_http_request request")?;
            let body = read(mem, body_ptr, body_len, "procedure_http_request body")?.to_vec();
            span(mem.len(), out, 8, "procedure_http_request out")?;
            if state.slot.is_open() {
                return Ok(errno::WOULD_BLOCK_TRANSACTION);
            }
            outside_tx_in_procedure(state, "procedure_http_request")?;
            let Ok(request) = spacetimedb_sats::bsatn::from_slice::<spacetimedb_lib::http::Request>(request)
            else {
                return Ok(errno::BSATN_DECODE_ERROR);
            };
            let (status, first, second) = match crate::procedure_http::perform(request, &body) {
                Ok((response, data)) => {
                    let head = spacetimedb_sats::bsatn::to_vec(&response)
                        .map_err(|e| anyhow!("procedure_http_request: encoding the response: {e}"))?;
                    (0, head, Some(data))
                }
                Err(message) => {
                    let encoded = spacetimedb_sats::bsatn::to_vec(&message)
                        .map_err(|e| anyhow!("procedure_http_request: encoding the error: {e}"))?;
                    (errno::HTTP_ERROR, encoded, None)
                }
            };
            let mut handles = state.sources.insert(Source { data: first, pos: 0 }).to_le_bytes().to_vec();
            if let Some(data) = second {
                handles.extend(state.sources.insert(Source { data, pos: 0 }).to_le_bytes());
            }
            write(mem, out, &handles, "procedure_http_request out")?;
            Ok(status)
        },
    )?;
    Ok(())
}

/// Traps unless a procedure is running with no transaction open (sleeping or waiting on the
/// network inside a transaction would hold the writer).
fn outside_tx_in_procedure(state: &HostState, what: &str) -> Res<()> {
    if !state.in_procedure {
        return Err(anyhow!("{what} called outside a procedure"));
    }
    if state.slot.is_open() {
        return Err(anyhow!("{what} called while a transaction is open"));
    }
    Ok(())
}

/// Deletes every row equal to one of `rows`; returns how many were deleted.
fn delete_equal_rows(tx: &mut WriteTx<'_>, cat: &Catalog, t: usize, rows: &[Row]) -> Result<u32, MvccError> {
    let table_id = cat.engine_ids[t];
    let spec = &cat.spec.tables[t];
    // Find candidates through an index when there is one (unique first), else by scanning.
    let index = spec.indexes.iter().find(|i| i.unique).or_else(|| spec.indexes.first());
    let mut n = 0;
    match index {
        Some(ix) => {
            let index_id = cat.index_by_name[&ix.source_name];
            for row in rows {
                let key: Vec<Value> = ix.columns.iter().map(|&c| row[c as usize].clone()).collect();
                let view = tx.table(table_id)?;
                let found = view.index_seek(index_id, &key)?.find(|&rid| view.get(rid).as_ref() == Some(row));
                if let Some(rid) = found {
                    n += u32::from(tx.delete(table_id, rid)?.is_some());
                }
            }
        }
        None => {
            let view = tx.table(table_id)?;
            let mut wanted: HashMap<&Row, usize> = HashMap::new();
            for r in rows {
                *wanted.entry(r).or_default() += 1;
            }
            let mut victims = Vec::new();
            for (rid, row) in view.scan() {
                if let Some(k) = wanted.get_mut(&row) {
                    if *k > 0 {
                        *k -= 1;
                        victims.push(rid);
                    }
                }
            }
            n = delete_rids(tx, table_id, &victims)?;
        }
    }
    Ok(n)
}
