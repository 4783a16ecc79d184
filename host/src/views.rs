//! Views: read-only module functions whose results clients read like tables.
//!
//! Each view's rows live in an engine table named after the view (see
//! [`ViewSpec`](crate::module_def::ViewSpec)), written only by the host: inside every write
//! transaction, just before it commits, [`ViewStates::refresh`] re-runs each view that read a
//! table the transaction changed and replaces the view's rows with the new result. The view's
//! rows therefore change in the same commit as the data they derive from — one delta, one log
//! record — and SQL, subscriptions, RLS and replay need nothing view-specific.
//!
//! * **Read sets.** A view's run records the tables it reads (the ABI notes every scan); it is
//!   re-run only when the transaction wrote one of them. A view that has not run yet (after
//!   publish or a restart) runs on the next commit.
//! * **Anonymous views** have one result, materialized as it is.
//! * **Sender-bound views** (`ViewContext`, which knows `ctx.sender`) have a result per
//!   identity. Their table carries a hidden leading sender column; the host materializes the
//!   rows only for identities that read the view ([`ViewStates::acquire`]) and drops them when
//!   the last such reader leaves ([`ViewStates::release`]). Readers see only their own rows:
//!   the server installs a `sender = :sender` filter for every reader, the owner included.
//! * **Results** are a `ViewResultHeader` followed by the rows (`RowData`), or a query
//!   (`RawSql`: what the query-builder views return), which the host runs with the planner on
//!   the same transaction. A result is a set: duplicate rows are kept once.
//! * **Failures** (a panic, a result that does not decode, an unsupported query) are logged to
//!   the module's log and leave the view's previous rows in place; the transaction commits.
//!   The view is tried again when a table it read before failing changes.
//! * **Views read tables, not views**: a view's read of another view's table is refused (the
//!   host refreshes views in no particular order, so it could see stale rows).

use std::collections::{BTreeMap, BTreeSet};

use lightcone_mvcc::{ReadTx, Row, TableId, Value, WriteTx, U256};
use lightcone_query_planner::{bind, execute, Params};

use crate::abi::Catalog;
use crate::codec::{CodecError, Reader};
use crate::logs::{LogLevel, ModuleLogs};
use crate::module_def::{view_sender_index, ModuleSpec, ViewSpec};
use crate::runtime::{GuestFailure, Instance, ViewRun};

/// Why one run of a view produced no usable result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("view `{view}` panicked: {message}")]
    Panicked { view: String, message: String },
    #[error("view `{view}` ran out of energy")]
    OutOfEnergy { view: String },
    #[error("view `{view}` returned an unknown result code {code}")]
    BadCode { view: String, code: i32 },
    #[error("the result of view `{view}` does not decode: {detail}")]
    BadResult { view: String, detail: String },
    #[error("the query returned by view `{view}` ({sql}) failed: {detail}")]
    BadQuery { view: String, sql: String, detail: String },
}

/// What the host keeps per view between transactions.
#[derive(Debug, Default)]
struct ViewState {
    /// Anonymous views: the read set of the last successful run (`None`: run next commit).
    reads: Option<BTreeSet<usize>>,
    /// Sender-bound views: per materialized identity, how many readers hold it and the read
    /// set of its last run.
    senders: BTreeMap<[u8; 32], SenderState>,
}

#[derive(Debug, Default)]
struct SenderState {
    holders: usize,
    reads: Option<BTreeSet<usize>>,
}

/// The views of one module and what the host knows about their last runs.
#[derive(Debug, Default)]
pub struct ViewStates {
    views: Vec<ViewState>,
}

/// Who reads which sender-bound views, by view name: what a module update hands from one
/// version to the next ([`ViewStates::readers`], [`ViewStates::adopt`]) so that clients it
/// keeps connected keep their views, recomputed by the new version — as upstream re-evaluates
/// subscribed views after an update that keeps its clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewReaders(Vec<(String, [u8; 32], usize)>);

impl ViewReaders {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a refresh needs from its host, borrowed for the duration.
pub struct RefreshEnv<'a> {
    pub spec: &'a ModuleSpec,
    pub catalog: &'a Catalog,
    pub logs: &'a ModuleLogs,
    pub fuel: u64,
}

impl ViewStates {
    pub fn new(spec: &ModuleSpec) -> ViewStates {
        ViewStates { views: spec.views.iter().map(|_| ViewState::default()).collect() }
    }

    /// Every (view, identity) materialized, with its number of readers.
    pub fn readers(&self, spec: &ModuleSpec) -> ViewReaders {
        let mut out = Vec::new();
        for (view, state) in spec.views.iter().zip(&self.views) {
            for (sender, s) in &state.senders {
                out.push((view.name.clone(), *sender, s.holders));
            }
        }
        ViewReaders(out)
    }

    /// Takes over `readers` (from the version this one updates) for this version's
    /// sender-bound views of the same names; the next refresh runs each of them, as views that
    /// have not run yet. Readers of views this version lacks or made anonymous are dropped:
    /// such an update disconnects the clients anyway (`update_keeps_clients`).
    pub fn adopt(&mut self, spec: &ModuleSpec, readers: ViewReaders) {
        for (name, sender, holders) in readers.0 {
            let Some(i) = spec.views.iter().position(|v| v.name == name && !v.anonymous) else { continue };
            let state = self.views[i].senders.entry(sender).or_default();
            state.holders += holders;
            state.reads = None;
        }
    }

    /// The identities sender-bound view `view` is materialized for, with their readers.
    pub fn readers_of(&self, view: usize) -> impl Iterator<Item = ([u8; 32], usize)> + '_ {
        self.views.get(view).into_iter().flat_map(|v| v.senders.iter().map(|(s, st)| (*s, st.holders)))
    }

    /// Whether view `view` (index into the spec's views) is materialized for `sender`.
    pub fn is_materialized(&self, view: usize, sender: &[u8; 32]) -> bool {
        self.views.get(view).is_some_and(|v| v.senders.contains_key(sender))
    }

    /// Registers one more reader of sender-bound view `view` for `sender`. Returns true when
    /// this is the first one: the caller must then materialize the rows
    /// ([`ViewStates::materialize`]) in a transaction before the reader reads.
    pub fn acquire(&mut self, view: usize, sender: [u8; 32]) -> bool {
        let state = self.views[view].senders.entry(sender).or_default();
        state.holders += 1;
        state.holders == 1
    }

    /// Drops one reader of `view` for `sender`. Returns true when it was the last one: the
    /// caller should then delete that identity's rows ([`ViewStates::clear_sender`]).
    pub fn release(&mut self, view: usize, sender: [u8; 32]) -> bool {
        let senders = &mut self.views[view].senders;
        let Some(state) = senders.get_mut(&sender) else { return false };
        state.holders = state.holders.saturating_sub(1);
        if state.holders == 0 {
            senders.remove(&sender);
            return true;
        }
        false
    }

    /// Runs sender-bound view `view` for `sender` now and writes its rows in `instance`'s open
    /// transaction.
    pub fn materialize(
        &mut self,
        env: &RefreshEnv<'_>,
        instance: &mut Option<Instance>,
        view: usize,
        sender: [u8; 32],
    ) {
        let reads = run_and_store(env, instance, &env.spec.views[view], Some(sender));
        if let Some(state) = self.views[view].senders.get_mut(&sender) {
            state.reads = reads;
        }
    }

    /// Deletes `sender`'s rows of sender-bound view `view` in `tx`.
    pub fn clear_sender(env: &RefreshEnv<'_>, tx: &mut WriteTx<'_>, view: usize, sender: [u8; 32]) {
        let spec_view = &env.spec.views[view];
        if let Err(e) = replace_rows(env, tx, spec_view, Some(sender), BTreeSet::new()) {
            env.logs.host(LogLevel::Error, format!("clearing view `{}`: {e}", spec_view.name));
        }
    }

    /// Before the commit of `instance`'s open transaction: re-runs every view (and every
    /// materialized identity of a sender-bound view) whose read set the transaction wrote,
    /// or that has not run yet, and replaces its rows.
    /// `also_changed` lists tables (spec indexes) changed by earlier commits that views have
    /// not seen yet (a procedure's own transactions).
    pub fn refresh(
        &mut self,
        env: &RefreshEnv<'_>,
        instance: &mut Option<Instance>,
        also_changed: &BTreeSet<usize>,
    ) {
        if env.spec.views.is_empty() {
            return;
        }
        let touched: BTreeSet<usize> = {
            let Some(tx) = instance.as_mut().and_then(|i| i.state().slot.get()) else { return };
            tx.touched_tables()
                .filter_map(|id| env.catalog.table_index(id))
                .chain(also_changed.iter().copied())
                .filter(|&t| env.spec.tables[t].view.is_none())
                .collect()
        };
        let stale = |reads: &Option<BTreeSet<usize>>| match reads {
            None => true,
            Some(r) => !r.is_disjoint(&touched),
        };
        for (i, view) in env.spec.views.iter().enumerate() {
            if view.anonymous {
                if stale(&self.views[i].reads) {
                    self.views[i].reads = run_and_store(env, instance, view, None);
                }
                continue;
            }
            let due: Vec<[u8; 32]> =
                self.views[i].senders.iter().filter(|(_, s)| stale(&s.reads)).map(|(id, _)| *id).collect();
            for sender in due {
                let reads = run_and_store(env, instance, view, Some(sender));
                if let Some(state) = self.views[i].senders.get_mut(&sender) {
                    state.reads = reads;
                }
            }
        }
    }
}

/// Runs `view` (for `sender` if sender-bound) and replaces its rows in the open transaction.
/// Returns the run's read set (`None`: run again next commit, when it could not run at all).
fn run_and_store(
    env: &RefreshEnv<'_>,
    instance: &mut Option<Instance>,
    view: &ViewSpec,
    sender: Option<[u8; 32]>,
) -> Option<BTreeSet<usize>> {
    // A view that trapped leaves the instance broken: the next run gets a fresh one (the open
    // transaction moves over with its slot).
    if instance.as_ref().is_some_and(Instance::is_broken) {
        let broken = instance.take()?;
        match broken.renew() {
            Ok(fresh) => *instance = Some(fresh),
            Err(e) => {
                env.logs.host(LogLevel::Error, format!("cannot renew the module instance for views: {e}"));
                return None;
            }
        }
    }
    let instance = instance.as_mut()?;
    // What the run read, kept on failure too: a failure is as deterministic as a success, so
    // the view is retried only when one of those tables changes (not on every commit).
    let mut reads_seen: Option<BTreeSet<usize>> = None;
    let outcome = (|| {
        let (run, _fuel) = instance.call_view(view.index, sender, env.fuel);
        let run = run.map_err(|(f, reads)| {
            reads_seen = Some(reads);
            match f {
                GuestFailure::Trap(message) => ViewError::Panicked { view: view.name.clone(), message },
                GuestFailure::OutOfFuel => ViewError::OutOfEnergy { view: view.name.clone() },
            }
        })?;
        reads_seen = Some(run.reads.clone());
        let tx = instance.state().slot.get().ok_or_else(|| ViewError::BadResult {
            view: view.name.clone(),
            detail: "no transaction is open".into(),
        })?;
        let (rows, reads) = result_rows(env, tx, view, sender, run)?;
        replace_rows(env, tx, view, sender, rows)?;
        Ok::<_, ViewError>(reads)
    })();
    match outcome {
        Ok(reads) => Some(reads),
        Err(e) => {
            env.logs.host(LogLevel::Error, e.to_string());
            reads_seen
        }
    }
}

/// The engine rows (hidden sender first for sender-bound views) a run returned, and the
/// tables its result depends on.
fn result_rows(
    env: &RefreshEnv<'_>,
    tx: &WriteTx<'_>,
    view: &ViewSpec,
    sender: Option<[u8; 32]>,
    run: ViewRun,
) -> Result<(BTreeSet<Row>, BTreeSet<usize>), ViewError> {
    let bad = |detail: String| ViewError::BadResult { view: view.name.clone(), detail };
    let table = &env.spec.tables[view.table];
    let prefix: Option<Value> = sender.map(|s| Value::U256(U256::from_le_bytes(s)));
    let mut r = Reader::new(&run.output);
    match run.code {
        0 => {}
        2 => match r.u8("view result header").map_err(|e| bad(e.to_string()))? {
            0 => {}
            1 => {
                let len = r.u32("query length").map_err(|e| bad(e.to_string()))? as usize;
                let sql = r.take(len, "query").map_err(|e| bad(e.to_string()))?;
                let sql = std::str::from_utf8(sql).map_err(|_| bad("the query is not UTF-8".into()))?;
                r.finish("view query").map_err(|e| bad(e.to_string()))?;
                let (rows, reads) = query_rows(env, tx, view, sender, sql)?;
                return Ok((rows, run.reads.into_iter().chain(reads).collect()));
            }
            tag => return Err(bad(format!("unknown result header tag {tag}"))),
        },
        code => return Err(ViewError::BadCode { view: view.name.clone(), code }),
    }
    let rows = (|| {
        let n = r.u32("row count")?;
        let mut rows = BTreeSet::new();
        for _ in 0..n {
            let row = table.codec.decode_row_from(&mut r)?;
            rows.insert(prefix.iter().cloned().chain(row).collect::<Row>());
        }
        r.finish("view rows")?;
        Ok::<_, CodecError>(rows)
    })()
    .map_err(|e| bad(e.to_string()))?;
    Ok((rows, run.reads))
}

/// Runs the query a query-builder view returned; its rows must have the view's columns.
fn query_rows(
    env: &RefreshEnv<'_>,
    tx: &WriteTx<'_>,
    view: &ViewSpec,
    sender: Option<[u8; 32]>,
    sql: &str,
) -> Result<(BTreeSet<Row>, BTreeSet<usize>), ViewError> {
    let bad = |detail: String| ViewError::BadQuery { view: view.name.clone(), sql: sql.to_string(), detail };
    let bound = bind(tx, sql).map_err(|e| bad(e.to_string()))?;
    if bound.explain {
        return Err(bad("a view's query may not be EXPLAIN".into()));
    }
    let reads: BTreeSet<usize> =
        bound.plan.tables().into_iter().filter_map(|id: TableId| env.catalog.table_index(id)).collect();
    if reads.iter().any(|&t| env.spec.tables[t].view.is_some()) {
        return Err(bad("a view's query may not read another view".into()));
    }
    let params = Params { sender: sender.map(U256::from_le_bytes) };
    let result = execute(tx, sql, &params).map_err(|e| bad(e.to_string()))?;
    let table = &env.spec.tables[view.table];
    let expected: Vec<_> = table.codec.columns.iter().map(|(_, c)| c.engine_type()).collect();
    let got: Vec<_> = result.columns.iter().map(|(_, ty)| *ty).collect();
    if got != expected {
        return Err(bad(format!("it returns columns {got:?}, the view's row type has {expected:?}")));
    }
    let prefix: Option<Value> = sender.map(|s| Value::U256(U256::from_le_bytes(s)));
    let rows = result.rows.into_iter().map(|row| prefix.iter().cloned().chain(row).collect()).collect();
    Ok((rows, reads))
}

/// Makes the view's rows (`sender`'s rows for a sender-bound view) equal to `rows`, touching
/// only rows that differ.
fn replace_rows(
    env: &RefreshEnv<'_>,
    tx: &mut WriteTx<'_>,
    view: &ViewSpec,
    sender: Option<[u8; 32]>,
    mut rows: BTreeSet<Row>,
) -> Result<(), ViewError> {
    let failed = |e: lightcone_mvcc::MvccError| ViewError::BadResult {
        view: view.name.clone(),
        detail: e.to_string(),
    };
    let table_id = env.catalog.engine_ids[view.table];
    let owner: Option<Value> = sender.map(|s| Value::U256(U256::from_le_bytes(s)));
    let mut gone = Vec::new();
    let current = tx.table(table_id).map_err(failed)?;
    let rids: Vec<_> = match &owner {
        None => current.row_ids().collect(),
        Some(o) => {
            let index =
                current.schema().index_id_by_name(&view_sender_index(&view.name)).ok_or_else(|| {
                    ViewError::BadResult {
                        view: view.name.clone(),
                        detail: "the sender index is missing".into(),
                    }
                })?;
            current.index_seek(index, std::slice::from_ref(o)).map_err(failed)?.collect()
        }
    };
    for rid in rids {
        let Some(row) = current.get(rid) else { continue };
        if !rows.remove(&row) {
            gone.push(rid);
        }
    }
    // Any failure (a row over the size limits) undoes what this call did: the view keeps its
    // previous rows rather than half of each.
    let mut deleted: Vec<Row> = Vec::new();
    let mut inserted = Vec::new();
    let result = (|| {
        for rid in gone {
            if let Some(row) = tx.delete(table_id, rid)? {
                deleted.push(row);
            }
        }
        for row in rows {
            inserted.push(tx.insert(table_id, row)?.0);
        }
        Ok(())
    })();
    result.map_err(|e| {
        for rid in inserted {
            let _ = tx.delete(table_id, rid);
        }
        for row in deleted {
            let _ = tx.insert(table_id, row);
        }
        failed(e)
    })
}
