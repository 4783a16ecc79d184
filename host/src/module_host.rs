//! One database's module: publishing (schema creation or compatible update, `init`), reducer
//! calls as engine transactions, lifecycle reducers, scheduled reducers, and the commit log.
//!
//! A [`ModuleHost`] is single-threaded (its wasm store is not `Send`): the server runs one per
//! database on that database's thread, which also serializes reducers (one writer).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lightcone_mvcc::{
    ColumnDef, ColumnType, Database, ReadTx, Row, Snapshot, TableDef, TxDelta, Value, WriteTx, U256,
};
use lightcone_wal::{CommitLog, Ticket};
use spacetimedb_sats::{AlgebraicType, Typespace};

pub use crate::abi::CommitObserver;
use crate::abi::{CallContext, Catalog, ProcedureCommit, ProcedureEnv};
use crate::codec::{resolve, skip_value, Reader};
use crate::logs::{now_micros, LogLevel, ModuleLogs};
use crate::module_def::{decode_module_def, ModuleSpec, ScheduledFunction, TableSpec};
use crate::runtime::{CompiledModule, GuestFailure, GuestOutcome, Instance, WasmEngine};
use crate::tx_slot::TxSlot;
use crate::views::{RefreshEnv, ViewReaders, ViewStates};
use crate::HostError;

/// The system table holding the published program and its definition.
pub const MODULE_TABLE: &str = "st_module";
/// Fuel (≈ wasm instructions) one reducer call may burn by default.
pub const DEFAULT_FUEL_PER_CALL: u64 = 2_000_000_000;
/// A scheduled time further than this in the future is refused (SCHEDULE_AT_DELAY_TOO_LONG).
pub const MAX_SCHEDULE_DELAY_MICROS: i64 = 10 * 365 * 24 * 3600 * 1_000_000;

/// Settings of one database's host.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub fuel_per_call: u64,
    /// The database's identity (what the `identity` import returns), 32 bytes little-endian.
    pub database_identity: [u8; 32],
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig { fuel_per_call: DEFAULT_FUEL_PER_CALL, database_identity: [0; 32] }
    }
}

/// Who calls a reducer.
#[derive(Debug, Clone, Default)]
pub struct CallerInfo {
    /// Identity, 32 bytes little-endian (the ABI form).
    pub identity: [u8; 32],
    /// ConnectionId, 16 bytes little-endian; all zero = none.
    pub connection_id: [u8; 16],
    /// The JWT payload of the caller's token, for `get_jwt`.
    pub jwt_payload: Option<Arc<str>>,
}

impl CallerInfo {
    /// What the guest is told about this caller for a call at `timestamp_micros`.
    fn context(&self, timestamp_micros: i64) -> CallContext {
        CallContext {
            sender: self.identity,
            connection_id: self.connection_id,
            timestamp_micros,
            jwt_payload: self.jwt_payload.clone(),
        }
    }
}

/// Reducer arguments as received.
#[derive(Debug, Clone)]
pub enum ReducerArgs {
    /// BSATN of the parameter product.
    Bsatn(Vec<u8>),
    /// SATS-JSON: an array of positional arguments (or an object keyed by parameter name).
    Json(String),
}

/// How a reducer call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReducerStatus {
    Committed,
    /// The reducer returned `Err(message)`; rolled back.
    Failed(String),
    /// Panic or trap; rolled back.
    Panicked(String),
    /// The fuel budget ran out; rolled back.
    OutOfEnergy,
}

/// The result of one reducer call.
#[derive(Debug, Clone)]
pub struct ReducerOutcome {
    pub reducer: Arc<str>,
    pub status: ReducerStatus,
    pub energy_used: u64,
    pub duration: Duration,
    pub timestamp_micros: i64,
    /// The committed changes (empty unless committed).
    pub delta: Arc<TxDelta>,
    /// Durability ticket of the commit when a commit log is attached and the tx changed data.
    pub ticket: Option<Ticket>,
    /// The caller's own subscription update for this commit, encoded by the server's commit
    /// hook (see [`crate::worker::CommitHook`]); `None` outside the server.
    pub caller_update: Option<Arc<[u8]>>,
}

impl ReducerOutcome {
    pub fn is_committed(&self) -> bool {
        self.status == ReducerStatus::Committed
    }

    /// The error text for a failed call.
    pub fn error(&self) -> Option<String> {
        match &self.status {
            ReducerStatus::Committed => None,
            ReducerStatus::Failed(m) | ReducerStatus::Panicked(m) => Some(m.clone()),
            ReducerStatus::OutOfEnergy => Some("Module energy budget exhausted.".into()),
        }
    }
}

/// The result of one procedure call.
#[derive(Debug, Clone)]
pub struct ProcedureOutcome {
    pub procedure: Arc<str>,
    /// BSATN of the returned value, or why the procedure failed (panic, trap, out of energy).
    pub result: Result<Vec<u8>, String>,
    pub energy_used: u64,
    pub duration: Duration,
    pub timestamp_micros: i64,
    /// What the procedure's own transactions committed, in order (each already announced to
    /// the commit observer, see [`ModuleHost::set_commit_observer`]).
    pub commits: Vec<Arc<TxDelta>>,
    /// The last durability ticket among those commits: the caller is answered once it is durable.
    pub ticket: Option<Ticket>,
    /// The module version that ran it: its return type types `result` (a call queued during
    /// a module update may run on the next version).
    pub spec: Arc<ModuleSpec>,
}

/// Runs procedure `id` on `instance` (outside any transaction) and collects the commits its
/// own transactions made; the outcome's `commits`/`ticket` are left for the caller to fill.
#[allow(clippy::too_many_arguments)]
fn invoke_procedure(
    instance: &mut Instance,
    spec: &Arc<ModuleSpec>,
    logs: &ModuleLogs,
    fuel: u64,
    id: usize,
    caller: &CallerInfo,
    args: Vec<u8>,
    ts: i64,
) -> (ProcedureOutcome, Vec<ProcedureCommit>) {
    let start = Instant::now();
    let (outcome, energy_used) = instance.call_procedure(id as u32, caller.context(ts), args, fuel);
    let commits: Vec<ProcedureCommit> = std::mem::take(&mut instance.state().procedure_commits);
    let name = &spec.procedures[id].name;
    let result = outcome.map_err(|failure| match failure {
        GuestFailure::OutOfFuel => {
            logs.host(LogLevel::Error, format!("procedure `{name}` ran out of energy ({energy_used} fuel)"));
            "Module energy budget exhausted.".to_string()
        }
        GuestFailure::Trap(m) => {
            logs.host(LogLevel::Error, format!("procedure `{name}` trapped: {m}"));
            m
        }
    });
    let outcome = ProcedureOutcome {
        procedure: Arc::from(name.as_str()),
        result,
        energy_used,
        duration: start.elapsed(),
        timestamp_micros: ts,
        commits: Vec::new(),
        ticket: None,
        spec: Arc::clone(spec),
    };
    (outcome, commits)
}

/// Checks (JSON: converts) arguments against a function's parameters; returns their BSATN.
pub fn encode_args(
    spec: &ModuleSpec,
    function: &str,
    params: &spacetimedb_sats::ProductType,
    args: ReducerArgs,
) -> Result<Vec<u8>, HostError> {
    let ts = &spec.typespace;
    let invalid = |reason: String| HostError::InvalidArguments { reducer: function.to_string(), reason };
    let bytes = match args {
        ReducerArgs::Bsatn(b) => b,
        ReducerArgs::Json(json) => crate::json::json_to_bsatn(&json, params, ts).map_err(invalid)?,
    };
    let mut r = Reader::new(&bytes);
    params
        .elements
        .iter()
        .try_for_each(|e| skip_value(&e.algebraic_type, ts, &mut r, 0))
        .and_then(|_| r.finish("arguments"))
        .map_err(|e| invalid(e.to_string()))?;
    Ok(bytes)
}

/// Everything a procedure thread needs, gathered on the database thread (all `Send`).
#[derive(Clone)]
pub struct ProcedureSeed {
    module: crate::runtime::CompiledModule,
    spec: Arc<ModuleSpec>,
    catalog: Arc<Catalog>,
    db: Arc<Database>,
    log: Option<Arc<CommitLog>>,
    logs: Arc<ModuleLogs>,
    config: HostConfig,
}

impl ProcedureSeed {
    /// The module's log.
    pub fn logs(&self) -> &Arc<ModuleLogs> {
        &self.logs
    }

    /// Instantiates the module for running procedures beside the database thread: each
    /// transaction a procedure opens first gets its turn from `gate` (the database thread,
    /// which then handles the commit in order with its own).
    pub fn start(self, gate: crate::abi::TxGate) -> Result<ProcedureHost, HostError> {
        let slot = TxSlot::new(Arc::clone(&self.db));
        let (mut instance, _) =
            Instance::new(&self.module, slot, self.config.database_identity, Arc::clone(&self.logs))?;
        instance.state().catalog = Some(Arc::clone(&self.catalog));
        instance.state().procedure_env =
            ProcedureEnv { log: self.log.clone(), on_commit: None, gate: Some(gate) };
        Ok(ProcedureHost { instance: Some(instance), seed: self })
    }
}

/// Runs procedures on an instance of its own, on a thread of its own (the server runs several),
/// so that a procedure sleeping or waiting for an HTTP answer does not hold up the database's
/// reducers.
/// Only its transactions (`with_tx`) take turns with the database thread.
pub struct ProcedureHost {
    instance: Option<Instance>,
    seed: ProcedureSeed,
}

impl ProcedureHost {
    /// Calls a client-callable procedure by name; `commits`/`ticket` of the outcome list its
    /// own transactions' commits (the database thread announced them).
    pub fn call_procedure(
        &mut self,
        name: &str,
        caller: &CallerInfo,
        args: ReducerArgs,
    ) -> Result<ProcedureOutcome, HostError> {
        let spec = Arc::clone(&self.seed.spec);
        let id = spec.procedure_id(name).ok_or_else(|| HostError::NoSuchProcedure(name.to_string()))?;
        let procedure = &spec.procedures[id];
        if !procedure.client_callable {
            return Err(HostError::NotCallable(name.to_string()));
        }
        let args = encode_args(&spec, &procedure.name, &procedure.params, args)?;
        self.call_procedure_id(id, caller, args)
    }

    /// Runs procedure `id` with BSATN arguments already checked (a scheduled procedure's row).
    pub fn call_procedure_id(
        &mut self,
        id: usize,
        caller: &CallerInfo,
        args: Vec<u8>,
    ) -> Result<ProcedureOutcome, HostError> {
        let spec = Arc::clone(&self.seed.spec);
        if id >= spec.procedures.len() {
            return Err(HostError::Runtime(format!("no procedure #{id}")));
        }
        if self.instance.as_ref().is_some_and(Instance::is_broken) {
            // Invariant: checked just above.
            let broken = self.instance.take().expect("instance present");
            self.instance = Some(broken.renew()?);
        }
        let instance = self
            .instance
            .as_mut()
            .ok_or_else(|| HostError::Runtime("the procedure instance is gone".into()))?;
        let logs = Arc::clone(&self.seed.logs);
        let (mut outcome, commits) = invoke_procedure(
            instance,
            &spec,
            &logs,
            self.seed.config.fuel_per_call,
            id,
            caller,
            args,
            now_micros(),
        );
        outcome.ticket = commits.iter().filter_map(|c| c.ticket).max();
        outcome.commits = commits.into_iter().filter(|c| !c.delta.is_empty()).map(|c| c.delta).collect();
        Ok(outcome)
    }

    /// The `schedule_immediate` calls the procedures made since the last call (for the
    /// database thread to run).
    pub fn take_immediate_calls(&mut self) -> Vec<(String, Vec<u8>)> {
        self.instance.as_mut().map(|i| std::mem::take(&mut i.state().scheduled_immediate)).unwrap_or_default()
    }

    /// Blocks until `outcome`'s commits are durable (no-op without a log or a commit).
    pub fn wait_durable(&self, outcome: &ProcedureOutcome) -> Result<(), HostError> {
        match (&self.seed.log, outcome.ticket) {
            (Some(log), Some(t)) => log.wait(t).map_err(|e| HostError::Durability(e.to_string())),
            _ => Ok(()),
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// True on the first publish (tables created, `init` run).
    pub created: bool,
    /// Tables created by this publish.
    pub tables_created: Vec<String>,
    /// Whether clients connected to the previous version can go on (see
    /// [`update_keeps_clients`]); true on the first publish.
    pub keeps_clients: bool,
}

/// One armed schedule: `(due, schedule index, row id value)`.
type Due = (i64, usize, Value);

#[derive(Default)]
struct Scheduler {
    queue: BTreeSet<Due>,
    by_row: BTreeMap<(usize, Value), i64>,
    /// Interval-scheduled procedures dispatched to another thread, by row.
    running: BTreeMap<(usize, Value), RunningFlag>,
}

impl Scheduler {
    fn arm(&mut self, schedule: usize, id: Value, due: i64) {
        self.cancel(schedule, &id);
        self.queue.insert((due, schedule, id.clone()));
        self.by_row.insert((schedule, id), due);
    }

    fn cancel(&mut self, schedule: usize, id: &Value) {
        if let Some(due) = self.by_row.remove(&(schedule, id.clone())) {
            self.queue.remove(&(due, schedule, id.clone()));
        }
    }
}

/// `ScheduleAt` as stored: BSATN sum 0 Interval(µs) | 1 Time(µs since epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScheduleAt {
    Interval(i64),
    Time(i64),
}

pub(crate) fn schedule_at(v: &Value) -> Option<ScheduleAt> {
    let Value::Bsatn(b) = v else { return None };
    if b.len() != 9 {
        return None;
    }
    let micros = i64::from_le_bytes(b[1..9].try_into().ok()?);
    match b[0] {
        0 => Some(ScheduleAt::Interval(micros)),
        1 => Some(ScheduleAt::Time(micros)),
        _ => None,
    }
}

/// A database's module, ready for calls.
pub struct ModuleHost {
    instance: Option<Instance>,
    spec: Arc<ModuleSpec>,
    catalog: Arc<Catalog>,
    db: Arc<Database>,
    log: Option<Arc<CommitLog>>,
    logs: Arc<ModuleLogs>,
    config: HostConfig,
    scheduler: Scheduler,
    /// Reducer names by id, shared into every outcome (no allocation per call).
    names: Vec<Arc<str>>,
    views: ViewStates,
    /// Where scheduled procedures go when a procedure thread runs them (else they run here).
    procedure_dispatch: Option<ProcedureDispatch>,
    /// `schedule_immediate` calls wait for [`ModuleHost::run_immediate_calls`] instead of
    /// running right after the call that asked (so a caller can announce that call's commit
    /// first).
    defer_immediate: bool,
    /// Commits made while publishing or opening, with the state right after each, for
    /// whoever announces commits ([`ModuleHost::take_startup_commits`]).
    startup_commits: Vec<(Arc<TxDelta>, Snapshot)>,
}

/// Hands a scheduled procedure (id, caller, BSATN arguments) to the threads running
/// procedures; the flag is cleared once that run has ended (however it ended).
pub type ProcedureDispatch = Box<dyn FnMut(usize, CallerInfo, Vec<u8>, RunningFlag)>;

/// Set while a dispatched run of an interval-scheduled procedure has not ended: the next run
/// of the same row is skipped rather than queued behind it, so a procedure slower than its
/// interval cannot pile up runs (each interval it is due, at most one run is in flight).
#[derive(Clone, Default)]
pub struct RunningFlag(Arc<(std::sync::atomic::AtomicBool, std::sync::atomic::AtomicBool)>);

impl RunningFlag {
    fn start(&self) {
        self.0 .1.store(false, std::sync::atomic::Ordering::Relaxed);
        self.0 .0.store(true, std::sync::atomic::Ordering::Release);
    }

    fn is_running(&self) -> bool {
        self.0 .0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records a skipped run; true for the first one since the run started (warned once,
    /// not every interval).
    fn first_skip(&self) -> bool {
        !self.0 .1.swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// The run has ended.
    pub fn finish(&self) {
        self.0 .0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// The delta of a transaction that changed nothing, shared (no allocation per call).
fn empty_delta() -> Arc<TxDelta> {
    static EMPTY: std::sync::OnceLock<Arc<TxDelta>> = std::sync::OnceLock::new();
    Arc::clone(EMPTY.get_or_init(|| Arc::new(TxDelta::default())))
}

/// A program instantiated on a database and described.
struct Instantiated {
    instance: Instance,
    /// The definition bytes `__describe_module__` wrote.
    def_bytes: Vec<u8>,
    spec: Arc<ModuleSpec>,
    logs: Arc<ModuleLogs>,
}

/// Compiles `program`, instantiates it on `db` (preinit + describe) and decodes its definition.
fn instantiate(
    engine: &WasmEngine,
    db: &Arc<Database>,
    program: &[u8],
    config: &HostConfig,
) -> Result<Instantiated, HostError> {
    instantiate_compiled(&engine.compile(program)?, db, config)
}

/// [`instantiate`] for a program compiled already.
fn instantiate_compiled(
    compiled: &CompiledModule,
    db: &Arc<Database>,
    config: &HostConfig,
) -> Result<Instantiated, HostError> {
    let logs = Arc::new(ModuleLogs::new());
    let (instance, def_bytes) =
        Instance::new(compiled, TxSlot::new(Arc::clone(db)), config.database_identity, Arc::clone(&logs))?;
    let spec = Arc::new(decode_module_def(&def_bytes)?);
    Ok(Instantiated { instance, def_bytes, spec, logs })
}

fn reducer_names(spec: &ModuleSpec) -> Vec<Arc<str>> {
    spec.reducers.iter().map(|r| Arc::from(r.name.as_str())).collect()
}

fn module_table_def() -> TableDef {
    TableDef::new(
        MODULE_TABLE,
        vec![
            ColumnDef::new("id", ColumnType::U32),
            ColumnDef::new("program", ColumnType::Bytes),
            ColumnDef::new("module_def", ColumnType::Bytes),
            ColumnDef::new("owner", ColumnType::U256),
            ColumnDef::new("published_at", ColumnType::I64),
        ],
    )
    .with_primary_key(0)
}

/// The stored program of a database, if one was published.
pub struct StoredProgram {
    pub program: Vec<u8>,
    pub module_def: Vec<u8>,
    pub owner: [u8; 32],
    pub published_at_micros: i64,
}

/// Reads the published program from a database.
pub fn stored_program(tx: &impl ReadTx) -> Option<StoredProgram> {
    let id = tx.table_id(MODULE_TABLE).ok()?;
    let (_, row) = tx.table(id).ok()?.scan().next()?;
    match row.as_slice() {
        [_, Value::Bytes(p), Value::Bytes(d), Value::U256(o), Value::I64(at)] => Some(StoredProgram {
            program: p.to_vec(),
            module_def: d.to_vec(),
            owner: o.to_le_bytes(),
            published_at_micros: *at,
        }),
        _ => None,
    }
}

fn types_equal(a: &AlgebraicType, ta: &Typespace, b: &AlgebraicType, tb: &Typespace, depth: usize) -> bool {
    if depth > 64 {
        return true; // recursive types that matched this far
    }
    let (Ok(a), Ok(b)) = (resolve(a, ta), resolve(b, tb)) else { return false };
    match (a, b) {
        (AlgebraicType::Product(x), AlgebraicType::Product(y)) => {
            x.elements.len() == y.elements.len()
                && x.elements.iter().zip(y.elements.iter()).all(|(e, f)| {
                    e.name == f.name && types_equal(&e.algebraic_type, ta, &f.algebraic_type, tb, depth + 1)
                })
        }
        (AlgebraicType::Sum(x), AlgebraicType::Sum(y)) => {
            x.variants.len() == y.variants.len()
                && x.variants.iter().zip(y.variants.iter()).all(|(e, f)| {
                    e.name == f.name && types_equal(&e.algebraic_type, ta, &f.algebraic_type, tb, depth + 1)
                })
        }
        (AlgebraicType::Array(x), AlgebraicType::Array(y)) => {
            types_equal(&x.elem_ty, ta, &y.elem_ty, tb, depth + 1)
        }
        (x, y) => x == y,
    }
}

/// What publishing a new version over an old one changes in the engine's catalog.
#[derive(Debug, Default, PartialEq)]
struct Migration {
    /// Engine tables to drop, by name: views the new version removed, views whose row type
    /// changed (recreated), views that became tables.
    drop: Vec<String>,
    /// Indexes into the new spec's tables of tables to create (after the drops).
    create: Vec<usize>,
}

/// Checks that `new` can take over data written under `old` and plans the catalog changes.
/// Tables keep their data, so their shape may not change; a view's rows are derived data (the
/// new version recomputes them), so a view may be removed, reshaped or turned into a table —
/// as SpacetimeDB's auto-migration allows.
fn plan_migration(old: &ModuleSpec, new: &ModuleSpec) -> Result<Migration, HostError> {
    let mut problems = Vec::new();
    let mut plan = Migration::default();
    for ot in &old.tables {
        let Some(nt) = new.table_by_name(&ot.name) else {
            match ot.view {
                Some(_) => plan.drop.push(ot.name.clone()),
                None => problems.push(format!("table `{}` was removed", ot.name)),
            }
            continue;
        };
        if ot.view.is_some() {
            if nt.view.is_none() || !shape_changes(ot, old, nt, new).is_empty() {
                plan.drop.push(ot.name.clone());
            }
            continue;
        }
        if nt.view.is_some() {
            problems.push(format!("table `{}` became a view (tables cannot be removed)", ot.name));
            continue;
        }
        problems.extend(shape_changes(ot, old, nt, new));
    }
    if !problems.is_empty() {
        return Err(HostError::IncompatibleSchema(problems.join("; ")));
    }
    plan.create = (0..new.tables.len())
        .filter(|&i| {
            let name = &new.tables[i].name;
            old.table_by_name(name).is_none() || plan.drop.contains(name)
        })
        .collect();
    Ok(plan)
}

/// Whether clients connected under version `old` can go on under `new` (its update was
/// published over `old`'s data): every table and view they may have subscribed to keeps its
/// engine table and shape, and what each identity may see is filtered the same way (same
/// row-level security). Views are recomputed by the new version in the update's commit — the
/// sender-bound ones for the readers it takes over ([`ViewStates::adopt`]) — as upstream
/// re-evaluates subscribed views. Otherwise clients are asked to reconnect, as upstream does
/// for updates that break clients.
pub fn update_keeps_clients(old: &ModuleSpec, new: &ModuleSpec) -> bool {
    same_row_level_security(old, new) && plan_migration(old, new).is_ok_and(|plan| plan.drop.is_empty())
}

/// Whether two versions filter rows with the same row-level security (in any order).
fn same_row_level_security(old: &ModuleSpec, new: &ModuleSpec) -> bool {
    fn sorted(spec: &ModuleSpec) -> Vec<&String> {
        let mut rls: Vec<&String> = spec.row_level_security.iter().collect();
        rls.sort();
        rls
    }
    sorted(old) == sorted(new)
}

/// Refuses a program over the largest value a row may hold (it is stored in `st_module`).
fn check_program_size(program: &[u8]) -> Result<(), HostError> {
    if program.len() > lightcone_mvcc::MAX_VALUE_BYTES {
        return Err(HostError::ProgramTooLarge {
            bytes: program.len(),
            max: lightcone_mvcc::MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// What publishing a new version over a database's current one would do (the pre-publish
/// check, as upstream's `pre_publish`): the steps, and whether it breaks connected clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdatePlan {
    pub steps: Vec<String>,
    /// Clients connected under the old version will be disconnected (see
    /// [`update_keeps_clients`]).
    pub breaks_clients: bool,
    /// blake3 of the old and the new program.
    pub old_program_hash: [u8; 32],
    pub new_program_hash: [u8; 32],
}

impl UpdatePlan {
    /// The plan as lines of text for the publisher.
    pub fn describe(&self) -> String {
        let mut out = String::from("Planned update:\n");
        if self.steps.is_empty() {
            out.push_str("- no schema changes\n");
        }
        for step in &self.steps {
            out.push_str(&format!("- {step}\n"));
        }
        out
    }
}

/// Plans publishing `program` over the program stored in `db`, changing nothing: `Ok(None)`
/// if no program is stored yet, `Err(HostError::IncompatibleSchema)` if the data could not be
/// kept (a manual migration, or deleting the data, is needed).
pub fn plan_update(
    engine: &WasmEngine,
    db: &Arc<Database>,
    program: &[u8],
    config: &HostConfig,
) -> Result<Option<UpdatePlan>, HostError> {
    Ok(prepare_update(engine, db, program, config)?.map(|(plan, _)| plan))
}

/// [`plan_update`], also giving back `program` compiled, for [`Start::PublishCompiled`]: a
/// server plans an update before stopping the running version, and compiling only then would
/// hold every call for the compilation (0.1–0.5 s for the test modules; more for big ones).
///
/// [`Start::PublishCompiled`]: crate::worker::Start::PublishCompiled
pub fn prepare_update(
    engine: &WasmEngine,
    db: &Arc<Database>,
    program: &[u8],
    config: &HostConfig,
) -> Result<Option<(UpdatePlan, CompiledModule)>, HostError> {
    let Some(stored) = stored_program(&db.snapshot()) else { return Ok(None) };
    check_program_size(program)?;
    let compiled = engine.compile(program)?;
    let new = instantiate_compiled(&compiled, db, config)?.spec;
    let old = decode_module_def(&stored.module_def)?;
    let migration = plan_migration(&old, &new)?;
    let kind = |spec: &ModuleSpec, name: &str| {
        if spec.table_by_name(name).is_some_and(|t| t.view.is_some()) {
            "view"
        } else {
            "table"
        }
    };
    let mut steps = Vec::new();
    for name in &migration.drop {
        match new.table_by_name(name) {
            Some(_) => steps.push(format!("recreate view `{name}` (its rows are recomputed)")),
            None => steps.push(format!("remove view `{name}`")),
        }
    }
    for &i in &migration.create {
        let name = &new.tables[i].name;
        if !migration.drop.contains(name) {
            steps.push(format!("create {} `{name}`", kind(&new, name)));
        }
    }
    if !same_row_level_security(&old, &new) {
        steps.push("change the row-level security filters".into());
    }
    let breaks_clients = !update_keeps_clients(&old, &new);
    if breaks_clients {
        steps.push("disconnect all clients (they must reconnect)".into());
    }
    let plan = UpdatePlan {
        steps,
        breaks_clients,
        old_program_hash: *blake3::hash(&stored.program).as_bytes(),
        new_program_hash: *blake3::hash(program).as_bytes(),
    };
    Ok(Some((plan, compiled)))
}

/// How version `new` of a table stores its rows differently from version `old`: columns
/// (names, engine types and full types), indexes, constraints, sequences and visibility. Empty
/// if the same.
fn shape_changes(ot: &TableSpec, old: &ModuleSpec, nt: &TableSpec, new: &ModuleSpec) -> Vec<String> {
    let mut changes = Vec::new();
    let (od, nd) = (ot.engine_def(), nt.engine_def());
    if od.columns != nd.columns {
        changes.push(format!("the columns of table `{}` changed", ot.name));
    } else {
        for ((name, a), (_, b)) in ot.columns.iter().zip(&nt.columns) {
            if !types_equal(a, &old.typespace, b, &new.typespace, 0) {
                changes.push(format!("the type of column `{}.{name}` changed", ot.name));
            }
        }
    }
    if od.indexes != nd.indexes || od.primary_key != nd.primary_key {
        changes.push(format!("the indexes or constraints of table `{}` changed", ot.name));
    }
    if od.sequences != nd.sequences {
        changes.push(format!("the sequences of table `{}` changed", ot.name));
    }
    if od.public != nd.public {
        changes.push(format!("table `{}` changed between public and private", ot.name));
    }
    changes
}

fn engine_err(e: lightcone_mvcc::MvccError) -> HostError {
    HostError::Engine(e.to_string())
}

impl ModuleHost {
    /// Publishes `program` to `db`: on an empty database creates the module's tables and runs
    /// `init` — all in one transaction, so a failing `init` leaves nothing behind. On a
    /// database with a program already, checks the schema is compatible, creates new tables
    /// and keeps the data (no `init`). The commit is durable when this returns (if a log is
    /// attached).
    pub fn publish(
        engine: &WasmEngine,
        db: Arc<Database>,
        log: Option<Arc<CommitLog>>,
        program: &[u8],
        owner: [u8; 32],
        config: HostConfig,
    ) -> Result<(ModuleHost, PublishReport), HostError> {
        Self::publish_compiled(engine, db, log, program, None, ViewReaders::default(), owner, config)
    }

    /// [`ModuleHost::publish`] with `program` compiled already, if `compiled` is given (by
    /// [`prepare_update`], from these same bytes). An update that keeps clients connected
    /// takes over `readers`, the previous version's readers of sender-bound views
    /// ([`ModuleHost::view_readers`]): their rows are recomputed by this version in the
    /// update's commit, and the clients' later releases find them here.
    #[allow(clippy::too_many_arguments)] // one call site each, all of it needed
    pub(crate) fn publish_compiled(
        engine: &WasmEngine,
        db: Arc<Database>,
        log: Option<Arc<CommitLog>>,
        program: &[u8],
        compiled: Option<&CompiledModule>,
        readers: ViewReaders,
        owner: [u8; 32],
        config: HostConfig,
    ) -> Result<(ModuleHost, PublishReport), HostError> {
        check_program_size(program)?;
        let Instantiated { mut instance, def_bytes, spec, logs } = match compiled {
            Some(compiled) => instantiate_compiled(compiled, &db, &config)?,
            None => instantiate(engine, &db, program, &config)?,
        };
        let old = stored_program(&db.snapshot());
        let state = instance.state();
        state.slot.begin();
        // Invariant: begun just above.
        let tx = state.slot.get().expect("transaction open");
        let (created, plan, keeps_clients) = match &old {
            None => (true, Migration { drop: Vec::new(), create: (0..spec.tables.len()).collect() }, true),
            Some(old) => {
                let old = decode_module_def(&old.module_def)?;
                (false, plan_migration(&old, &spec)?, update_keeps_clients(&old, &spec))
            }
        };
        // Versions before tables could be dropped left a removed view's (emptied) table in
        // place: one in the way of a table to create goes now.
        let leftovers: Vec<String> = plan
            .create
            .iter()
            .map(|&i| &spec.tables[i].name)
            .filter(|name| !name.starts_with("st_") && !plan.drop.contains(name) && tx.table_id(name).is_ok())
            .cloned()
            .collect();
        for name in &leftovers {
            // Only an emptied view table can be left over; anything holding rows is refused
            // rather than dropped with its data.
            let id = tx.table_id(name).map_err(engine_err)?;
            if tx.table(id).map_err(engine_err)?.row_count() > 0 {
                return Err(HostError::IncompatibleSchema(format!(
                    "table `{name}` exists with rows but is not part of the published module"
                )));
            }
        }
        let drop: Vec<String> = plan.drop.iter().cloned().chain(leftovers).collect();
        for name in &drop {
            let id = tx.table_id(name).map_err(engine_err)?;
            tx.drop_table(id).map_err(engine_err)?;
        }
        let mut tables_created = Vec::new();
        for &i in &plan.create {
            let t = &spec.tables[i];
            tx.create_table(t.engine_def()).map_err(engine_err)?;
            tables_created.push(t.name.clone());
        }
        write_program_row(tx, program, &def_bytes, owner, created).map_err(engine_err)?;
        let catalog = Arc::new(Catalog::resolve(Arc::clone(&spec), &*tx).map_err(engine_err)?);
        let mut host = ModuleHost::assemble(instance, Arc::clone(&spec), catalog, db, log, logs, config);
        if !created && keeps_clients {
            host.views.adopt(&spec, readers);
        }
        for name in &drop {
            host.logs.host(LogLevel::Info, format!("Dropping the table of view `{name}`"));
        }
        for name in &tables_created {
            host.logs.host(LogLevel::Info, format!("Creating table `{name}`"));
        }
        if let (true, Some(init)) = (created, spec.init) {
            let caller = CallerInfo { identity: owner, ..CallerInfo::default() };
            let outcome = host.run_in_open_tx(init, &caller, Vec::new(), now_micros());
            if let Some(err) = outcome {
                host.rollback();
                return Err(HostError::InitFailed(err));
            }
        }
        let (delta, ticket) = host.commit()?;
        if let (Some(log), Some(t)) = (&host.log, ticket) {
            log.wait(t).map_err(|e| HostError::Durability(e.to_string()))?;
        }
        host.logs.host(LogLevel::Info, if created { "Database initialized" } else { "Database updated" });
        host.note_startup_commit(delta);
        host.arm_all_schedules();
        if !created {
            // Rows of readers this version did not take over (an update that disconnects
            // every client) go.
            host.clear_sender_bound_views()?;
        }
        Ok((host, PublishReport { created, tables_created, keeps_clients }))
    }

    /// Opens the program already published in `db` (after a restart): no `init`; scheduled
    /// rows are re-armed.
    pub fn open(
        engine: &WasmEngine,
        db: Arc<Database>,
        log: Option<Arc<CommitLog>>,
        config: HostConfig,
    ) -> Result<ModuleHost, HostError> {
        let snapshot = db.snapshot();
        let stored = stored_program(&snapshot).ok_or(HostError::NoProgram)?;
        let Instantiated { instance, spec, logs, .. } = instantiate(engine, &db, &stored.program, &config)?;
        let catalog = Arc::new(Catalog::resolve(Arc::clone(&spec), &snapshot).map_err(engine_err)?);
        drop(snapshot);
        let mut host = ModuleHost::assemble(instance, spec, catalog, db, log, logs, config);
        host.arm_all_schedules();
        host.clear_sender_bound_views()?;
        Ok(host)
    }

    /// Deletes the rows of sender-bound views that no reader holds: after a restart, none
    /// (each is recomputed when its identity reads it again); after an update, those of
    /// readers it did not take over from the previous version.
    fn clear_sender_bound_views(&mut self) -> Result<(), HostError> {
        let sender_bound: Vec<(usize, lightcone_mvcc::TableId)> = self
            .spec
            .views
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.anonymous)
            .map(|(i, v)| (i, self.catalog.engine_ids[v.table]))
            .collect();
        let snapshot = self.db.snapshot();
        if sender_bound.iter().all(|&(_, t)| snapshot.table(t).map_or(true, |v| v.row_count() == 0)) {
            return Ok(());
        }
        drop(snapshot);
        // Kept: the (table, identity) pairs materialized for a reader.
        let mut held = BTreeSet::new();
        for &(i, t) in &sender_bound {
            for (sender, _) in self.views.readers_of(i) {
                held.insert((t, sender));
            }
        }
        self.write(move |tx| {
            for (_, t) in sender_bound {
                let table = tx.table(t).map_err(|e| e.to_string())?;
                // The hidden leading column holds the identity the row was computed for.
                let stale: Vec<_> = table
                    .row_ids()
                    .filter(|&rid| {
                        let sender = table.get(rid).and_then(|row| match row.first() {
                            Some(Value::U256(s)) => Some(s.to_le_bytes()),
                            _ => None,
                        });
                        sender.is_none_or(|s| !held.contains(&(t, s)))
                    })
                    .collect();
                for rid in stale {
                    tx.delete(t, rid).map_err(|e| e.to_string())?;
                }
            }
            Ok(())
        })
        .map(|(delta, _)| self.note_startup_commit(delta))
    }

    /// The readers of this version's sender-bound views, for the version that updates it.
    pub fn view_readers(&self) -> ViewReaders {
        self.views.readers(&self.spec)
    }

    fn note_startup_commit(&mut self, delta: Arc<TxDelta>) {
        if !delta.is_empty() {
            // On the thread that commits, so the latest state is the one right after it.
            let after = self.db.snapshot();
            self.startup_commits.push((delta, after));
        }
    }

    /// The commits publishing or opening made (views recomputed by a new version, cleared
    /// sender-bound views), each with the state right after it, in commit order: subscribers
    /// that go on across an update must hear of them. Taken once.
    pub fn take_startup_commits(&mut self) -> Vec<(Arc<TxDelta>, Snapshot)> {
        std::mem::take(&mut self.startup_commits)
    }

    fn assemble(
        mut instance: Instance,
        spec: Arc<ModuleSpec>,
        catalog: Arc<Catalog>,
        db: Arc<Database>,
        log: Option<Arc<CommitLog>>,
        logs: Arc<ModuleLogs>,
        config: HostConfig,
    ) -> ModuleHost {
        instance.state().catalog = Some(Arc::clone(&catalog));
        instance.state().procedure_env = ProcedureEnv { log: log.clone(), on_commit: None, gate: None };
        let names = reducer_names(&spec);
        let views = ViewStates::new(&spec);
        ModuleHost {
            instance: Some(instance),
            spec,
            catalog,
            db,
            log,
            logs,
            config,
            scheduler: Scheduler::default(),
            names,
            views,
            procedure_dispatch: None,
            defer_immediate: false,
            startup_commits: Vec::new(),
        }
    }

    pub fn spec(&self) -> &Arc<ModuleSpec> {
        &self.spec
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    pub fn logs(&self) -> &Arc<ModuleLogs> {
        &self.logs
    }

    pub fn commit_log(&self) -> Option<&Arc<CommitLog>> {
        self.log.as_ref()
    }

    /// Blocks until `outcome`'s commit is durable (no-op without a log or a change).
    pub fn wait_durable(&self, outcome: &ReducerOutcome) -> Result<(), HostError> {
        match (&self.log, outcome.ticket) {
            (Some(log), Some(t)) => log.wait(t).map_err(|e| HostError::Durability(e.to_string())),
            _ => Ok(()),
        }
    }

    /// Encodes call arguments as the BSATN product of `function`'s `params`, checking them.
    pub fn encode_args(
        &self,
        function: &str,
        params: &spacetimedb_sats::ProductType,
        args: ReducerArgs,
    ) -> Result<Vec<u8>, HostError> {
        encode_args(&self.spec, function, params, args)
    }

    /// Tells `observer` about every commit of a procedure's own transaction, right after it
    /// and before the procedure goes on (the database thread broadcasts it from there).
    pub fn set_commit_observer(&mut self, observer: CommitObserver) {
        if let Some(instance) = self.instance.as_mut() {
            instance.state().procedure_env.on_commit = Some(observer);
        }
    }

    /// Runs `f` in a write transaction of its own (SQL DML, admin changes): commits on `Ok`,
    /// rolls back on `Err`. Scheduled rows it inserts or deletes are (dis)armed as for reducers.
    pub fn write(
        &mut self,
        f: impl FnOnce(&mut WriteTx<'_>) -> Result<(), String>,
    ) -> Result<(Arc<TxDelta>, Option<Ticket>), HostError> {
        self.instance()?;
        self.slot().begin();
        // Invariant: begun just above.
        let tx = self.slot().get().expect("transaction open");
        match f(tx) {
            Ok(()) => self.commit(),
            Err(e) => {
                self.rollback();
                Err(HostError::WriteFailed(e))
            }
        }
    }

    /// Calls a client-callable reducer by name in its own transaction.
    pub fn call_reducer(
        &mut self,
        name: &str,
        caller: &CallerInfo,
        args: ReducerArgs,
    ) -> Result<ReducerOutcome, HostError> {
        let spec = Arc::clone(&self.spec);
        let id = spec.reducer_id(name).ok_or_else(|| HostError::NoSuchReducer(name.to_string()))?;
        let reducer = &spec.reducers[id];
        if !reducer.client_callable {
            return Err(HostError::NotCallable(name.to_string()));
        }
        let args = self.encode_args(&reducer.name, &reducer.params, args)?;
        self.run_reducer(id, caller, args, now_micros())
    }

    /// Calls a client-callable procedure by name. It runs outside any transaction; each
    /// transaction it opens itself commits as it goes (see [`ProcedureOutcome::commits`]).
    pub fn call_procedure(
        &mut self,
        name: &str,
        caller: &CallerInfo,
        args: ReducerArgs,
    ) -> Result<ProcedureOutcome, HostError> {
        let spec = Arc::clone(&self.spec);
        let id = spec.procedure_id(name).ok_or_else(|| HostError::NoSuchProcedure(name.to_string()))?;
        let procedure = &spec.procedures[id];
        if !procedure.client_callable {
            return Err(HostError::NotCallable(name.to_string()));
        }
        let args = self.encode_args(&procedure.name, &procedure.params, args)?;
        self.run_procedure(id, caller, args, now_micros())
    }

    fn run_procedure(
        &mut self,
        id: usize,
        caller: &CallerInfo,
        args: Vec<u8>,
        ts: i64,
    ) -> Result<ProcedureOutcome, HostError> {
        let spec = Arc::clone(&self.spec);
        let (fuel, logs) = (self.config.fuel_per_call, Arc::clone(&self.logs));
        let (mut outcome, commits) =
            invoke_procedure(self.instance()?, &spec, &logs, fuel, id, caller, args, ts);
        let mut commits = commits;
        if let Some(refresh) = self.refresh_views_after(&commits, true)? {
            commits.push(refresh);
        }
        for c in &commits {
            self.after_commit(&c.delta);
        }
        outcome.ticket = commits.iter().filter_map(|c| c.ticket).max();
        outcome.commits = commits.into_iter().filter(|c| !c.delta.is_empty()).map(|c| c.delta).collect();
        self.run_scheduled_immediate();
        Ok(outcome)
    }

    /// What a thread running procedures beside this one needs (`None` if the module has no
    /// procedures). See [`ProcedureHost`].
    pub fn procedure_seed(&mut self) -> Option<ProcedureSeed> {
        if self.spec.procedures.is_empty() {
            return None;
        }
        Some(ProcedureSeed {
            module: self.instance.as_ref()?.compiled().clone(),
            spec: Arc::clone(&self.spec),
            catalog: Arc::clone(&self.catalog),
            db: Arc::clone(&self.db),
            log: self.log.clone(),
            logs: Arc::clone(&self.logs),
            config: self.config.clone(),
        })
    }

    /// Sends scheduled procedures to `dispatch` (a procedure thread) instead of running them on
    /// this host's instance.
    pub fn set_procedure_dispatch(&mut self, dispatch: ProcedureDispatch) {
        self.procedure_dispatch = Some(dispatch);
    }

    /// Handles a commit a procedure made on another instance (see [`ProcedureHost`]), in commit
    /// order with this host's own: arms schedules and refreshes the views it affects (in a
    /// commit of its own, returned when there was one).
    pub fn absorb_procedure_commit(
        &mut self,
        delta: Arc<TxDelta>,
        ticket: Option<Ticket>,
    ) -> Result<Option<Arc<TxDelta>>, HostError> {
        self.after_commit(&delta);
        let refresh = self.refresh_views_after(&[ProcedureCommit { delta, ticket }], false)?;
        Ok(refresh.map(|c| {
            self.after_commit(&c.delta);
            c.delta
        }))
    }

    /// After commits made outside the host's own transactions (a procedure's), refreshes the
    /// views they affect in a transaction of its own. `None` when nothing needed it. With
    /// `announce`, the commit observer hears of it (callers that announce commits themselves,
    /// like the database thread after a procedure's turn, pass false).
    fn refresh_views_after(
        &mut self,
        commits: &[ProcedureCommit],
        announce: bool,
    ) -> Result<Option<ProcedureCommit>, HostError> {
        let changed: BTreeSet<usize> = commits
            .iter()
            .flat_map(|c| c.delta.tables.iter())
            .filter_map(|td| self.catalog.table_index(td.table_id))
            .collect();
        if self.spec.views.is_empty() || changed.is_empty() {
            return Ok(None);
        }
        self.instance()?;
        self.slot().begin();
        self.refresh_views(&changed);
        let (delta, ticket) = self.commit()?;
        if delta.is_empty() {
            return Ok(None);
        }
        // Announced like the procedure's own commits (subscribers see it right after them).
        if let Some(observer) = self.slot_state().procedure_env.on_commit.clone().filter(|_| announce) {
            observer(&delta);
        }
        Ok(Some(ProcedureCommit { delta, ticket }))
    }

    /// Registers `sender` as a reader of the sender-bound views `views` (indexes into the
    /// spec's views); the first reader of a (view, identity) gets its rows materialized, in one
    /// transaction for all of them. Returns that transaction's delta (empty if nothing new).
    pub fn acquire_views(
        &mut self,
        sender: [u8; 32],
        views: &[usize],
    ) -> Result<(Arc<TxDelta>, Option<Ticket>), HostError> {
        let fresh: Vec<usize> = views
            .iter()
            .copied()
            .filter(|&v| self.spec.views.get(v).is_some_and(|s| !s.anonymous))
            .filter(|&v| self.views.acquire(v, sender))
            .collect();
        if fresh.is_empty() {
            return Ok((empty_delta(), None));
        }
        let result = self.in_view_tx(|env, views, instance| {
            for &v in &fresh {
                views.materialize(env, instance, v, sender);
            }
        });
        if result.is_err() {
            // Not materialized: the caller is told, and holds nothing.
            for v in fresh {
                self.views.release(v, sender);
            }
        }
        result
    }

    /// Drops one reader of each of `views` for `sender` (pairs [`ModuleHost::acquire_views`]);
    /// the last reader's leaving deletes that identity's rows, in one transaction.
    pub fn release_views(
        &mut self,
        sender: [u8; 32],
        views: &[usize],
    ) -> Result<(Arc<TxDelta>, Option<Ticket>), HostError> {
        let last: Vec<usize> = views
            .iter()
            .copied()
            .filter(|&v| self.spec.views.get(v).is_some_and(|s| !s.anonymous))
            .filter(|&v| self.views.release(v, sender))
            .collect();
        if last.is_empty() {
            return Ok((empty_delta(), None));
        }
        self.in_view_tx(|env, _, instance| {
            if let Some(tx) = instance.as_mut().and_then(|i| i.state().slot.get()) {
                for v in last {
                    ViewStates::clear_sender(env, tx, v, sender);
                }
            }
        })
    }

    /// Runs `f` on the views' state in a transaction of its own, then commits it (views
    /// affected by what `f` wrote are refreshed as for any commit).
    fn in_view_tx(
        &mut self,
        f: impl FnOnce(&RefreshEnv<'_>, &mut ViewStates, &mut Option<Instance>),
    ) -> Result<(Arc<TxDelta>, Option<Ticket>), HostError> {
        self.instance()?;
        self.slot().begin();
        let env = RefreshEnv {
            spec: &self.spec,
            catalog: &self.catalog,
            logs: &self.logs,
            fuel: self.config.fuel_per_call,
        };
        f(&env, &mut self.views, &mut self.instance);
        self.commit()
    }

    /// Runs the `client_connected` lifecycle reducer (an `Err` means: refuse the client).
    pub fn client_connected(&mut self, caller: &CallerInfo) -> Result<Option<ReducerOutcome>, HostError> {
        match self.spec.client_connected {
            Some(id) => self.run_reducer(id, caller, Vec::new(), now_micros()).map(Some),
            None => Ok(None),
        }
    }

    /// Runs the `client_disconnected` lifecycle reducer.
    pub fn client_disconnected(&mut self, caller: &CallerInfo) -> Result<Option<ReducerOutcome>, HostError> {
        match self.spec.client_disconnected {
            Some(id) => self.run_reducer(id, caller, Vec::new(), now_micros()).map(Some),
            None => Ok(None),
        }
    }

    fn instance(&mut self) -> Result<&mut Instance, HostError> {
        if self.instance.as_ref().is_some_and(Instance::is_broken) {
            // Invariant: checked just above.
            let broken = self.instance.take().expect("instance present");
            self.instance = Some(broken.renew()?);
        }
        self.instance.as_mut().ok_or_else(|| HostError::Runtime("the module instance is gone".into()))
    }

    /// Runs reducer `id` in the already-open transaction; returns the error text on failure
    /// (the caller rolls back).
    fn run_in_open_tx(&mut self, id: usize, caller: &CallerInfo, args: Vec<u8>, ts: i64) -> Option<String> {
        self.run_guest(id, caller, args, ts).0
    }

    fn run_guest(
        &mut self,
        id: usize,
        caller: &CallerInfo,
        args: Vec<u8>,
        ts: i64,
    ) -> (Option<String>, ReducerStatus, u64) {
        let fuel = self.config.fuel_per_call;
        let ctx = caller.context(ts);
        let instance = match self.instance() {
            Ok(i) => i,
            Err(e) => return (Some(e.to_string()), ReducerStatus::Panicked(e.to_string()), 0),
        };
        let (outcome, used) = instance.call_reducer(id as u32, ctx, args, fuel);
        let name = &self.spec.reducers[id].name;
        let status = match outcome {
            GuestOutcome::Ok => ReducerStatus::Committed,
            GuestOutcome::Err(m) => ReducerStatus::Failed(m),
            GuestOutcome::Trap(m) => {
                self.logs.host(LogLevel::Error, format!("reducer `{name}` trapped: {m}"));
                ReducerStatus::Panicked(m)
            }
            GuestOutcome::OutOfFuel => {
                self.logs.host(LogLevel::Error, format!("reducer `{name}` ran out of energy ({used} fuel)"));
                ReducerStatus::OutOfEnergy
            }
        };
        let err = match &status {
            ReducerStatus::Committed => None,
            ReducerStatus::Failed(m) | ReducerStatus::Panicked(m) => Some(m.clone()),
            ReducerStatus::OutOfEnergy => Some("Module energy budget exhausted.".into()),
        };
        (err, status, used)
    }

    fn slot(&mut self) -> &mut TxSlot {
        &mut self.slot_state().slot
    }

    fn slot_state(&mut self) -> &mut crate::abi::HostState {
        // Invariant: the instance is only absent transiently inside `instance()`.
        self.instance.as_mut().expect("instance present").state()
    }

    fn rollback(&mut self) {
        drop(self.slot().take());
    }

    /// Re-runs the views whose inputs the open transaction (or `also_changed`) changed and
    /// writes their new rows into it.
    fn refresh_views(&mut self, also_changed: &BTreeSet<usize>) {
        if self.spec.views.is_empty() {
            return;
        }
        let env = RefreshEnv {
            spec: &self.spec,
            catalog: &self.catalog,
            logs: &self.logs,
            fuel: self.config.fuel_per_call,
        };
        self.views.refresh(&env, &mut self.instance, also_changed);
    }

    /// Commits the open transaction (after refreshing the views it affects), appending it to
    /// the commit log under the writer lock.
    fn commit(&mut self) -> Result<(Arc<TxDelta>, Option<Ticket>), HostError> {
        self.refresh_views(&BTreeSet::new());
        let log = self.log.clone();
        let tx: WriteTx<'_> =
            self.instance.as_mut().and_then(|i| i.state().slot.take()).ok_or_else(|| {
                HostError::Runtime("the transaction was lost with the module instance".into())
            })?;
        let (delta, appended) = tx.commit_with(|d| match (&log, d.is_empty()) {
            (Some(log), false) => log.append(d).map(Some),
            _ => Ok(None),
        });
        let ticket = appended.map_err(|e| {
            self.logs.host(LogLevel::Error, format!("commit log append failed: {e}"));
            HostError::Durability(e.to_string())
        })?;
        let delta = if delta.is_empty() { empty_delta() } else { Arc::new(delta) };
        self.after_commit(&delta);
        Ok((delta, ticket))
    }

    /// Runs reducer `id` in a new transaction.
    fn run_reducer(
        &mut self,
        id: usize,
        caller: &CallerInfo,
        args: Vec<u8>,
        ts: i64,
    ) -> Result<ReducerOutcome, HostError> {
        let start = Instant::now();
        self.instance()?;
        self.slot().begin();
        let (_, status, energy_used) = self.run_guest(id, caller, args, ts);
        let (delta, ticket) = if status == ReducerStatus::Committed {
            self.commit()?
        } else {
            self.rollback();
            (empty_delta(), None)
        };
        let outcome = ReducerOutcome {
            reducer: Arc::clone(&self.names[id]),
            status,
            energy_used,
            duration: start.elapsed(),
            timestamp_micros: ts,
            delta,
            ticket,
            caller_update: None,
        };
        self.run_scheduled_immediate();
        Ok(outcome)
    }

    /// Makes `schedule_immediate` calls wait for [`ModuleHost::run_immediate_calls`].
    pub fn defer_immediate_calls(&mut self) {
        self.defer_immediate = true;
    }

    /// Queues `schedule_immediate` calls made elsewhere (a procedure thread's instance).
    pub fn queue_immediate_calls(&mut self, calls: Vec<(String, Vec<u8>)>) {
        if let Some(instance) = self.instance.as_mut() {
            instance.state().scheduled_immediate.extend(calls);
        }
    }

    /// Runs the queued `schedule_immediate` calls, each in its own transaction, handing each
    /// outcome to `each` right after its commit (calls they queue wait for the next round).
    /// Returns how many ran.
    pub fn run_immediate_calls(&mut self, mut each: impl FnMut(ReducerOutcome)) -> usize {
        let Some(instance) = self.instance.as_mut() else { return 0 };
        let queued = std::mem::take(&mut instance.state().scheduled_immediate);
        let ran = queued.len();
        for (name, args) in queued {
            let caller = CallerInfo { identity: self.config.database_identity, ..CallerInfo::default() };
            match self.spec.reducer_id(&name) {
                Some(id) => match self.run_reducer(id, &caller, args, now_micros()) {
                    Ok(o) => each(o),
                    Err(e) => {
                        self.logs.host(LogLevel::Error, format!("immediate call of `{name}` failed: {e}"))
                    }
                },
                None => self.logs.host(LogLevel::Error, format!("schedule_immediate: no reducer `{name}`")),
            }
        }
        ran
    }

    fn run_scheduled_immediate(&mut self) {
        if self.defer_immediate {
            return;
        }
        let Some(instance) = self.instance.as_mut() else { return };
        let queued = std::mem::take(&mut instance.state().scheduled_immediate);
        for (name, args) in queued {
            let caller = CallerInfo { identity: self.config.database_identity, ..CallerInfo::default() };
            match self.spec.reducer_id(&name) {
                Some(id) => {
                    if let Err(e) = self.run_reducer(id, &caller, args, now_micros()) {
                        self.logs.host(LogLevel::Error, format!("immediate call of `{name}` failed: {e}"));
                    }
                }
                None => self.logs.host(LogLevel::Error, format!("schedule_immediate: no reducer `{name}`")),
            }
        }
    }

    /// Updates the armed schedules from a commit's inserts and deletes.
    fn after_commit(&mut self, delta: &TxDelta) {
        for td in &delta.tables {
            let Some(t) = self.catalog.table_index(td.table_id) else { continue };
            let spec = Arc::clone(&self.spec);
            for (s, sched) in spec.schedules.iter().enumerate().filter(|(_, s)| s.table == t) {
                for row in &td.deletes {
                    self.scheduler.cancel(s, &row[sched.id_column as usize]);
                }
                for row in &td.inserts {
                    self.arm_row(s, row, now_micros());
                }
            }
        }
    }

    fn arm_row(&mut self, schedule: usize, row: &Row, now: i64) {
        let sched = &self.spec.schedules[schedule];
        let id = row[sched.id_column as usize].clone();
        match schedule_at(&row[sched.at_column as usize]) {
            Some(ScheduleAt::Time(t)) => self.scheduler.arm(schedule, id, t),
            Some(ScheduleAt::Interval(d)) => self.scheduler.arm(schedule, id, now.saturating_add(d.max(0))),
            None => self.logs.host(LogLevel::Error, "scheduled row with an unreadable ScheduleAt; ignored"),
        }
    }

    fn arm_all_schedules(&mut self) {
        let snapshot = self.db.snapshot();
        let now = now_micros();
        for s in 0..self.spec.schedules.len() {
            let table = self.catalog.engine_ids[self.spec.schedules[s].table];
            let rows: Vec<Row> = match snapshot.table(table) {
                Ok(view) => view.scan().map(|(_, r)| r).collect(),
                Err(_) => continue,
            };
            for row in rows {
                self.arm_row(s, &row, now);
            }
        }
    }

    /// When the next scheduled reducer is due (µs since the epoch), if any.
    pub fn next_scheduled(&self) -> Option<i64> {
        self.scheduler.queue.first().map(|(due, _, _)| *due)
    }

    /// Runs every scheduled reducer due at `now` (µs since the epoch). A one-shot row is
    /// deleted in the same transaction as its reducer; an interval row is re-armed.
    pub fn run_due(&mut self, now: i64) -> Vec<ReducerOutcome> {
        let mut outcomes = Vec::new();
        self.run_due_with(now, |o| outcomes.push(o));
        outcomes
    }

    /// [`ModuleHost::run_due`], handing each outcome to `each` right after its commit — before
    /// the next scheduled call commits (the database thread announces it there, in order).
    pub fn run_due_with(&mut self, now: i64, mut each: impl FnMut(ReducerOutcome)) {
        while let Some((due, s, id)) = self.scheduler.queue.first().cloned() {
            if due > now {
                break;
            }
            self.scheduler.cancel(s, &id);
            match self.run_scheduled(s, &id, due) {
                Ok(Some(o)) => each(o),
                Ok(None) => {}
                Err(e) => self.logs.host(LogLevel::Error, format!("scheduled call failed: {e}")),
            }
        }
    }

    fn run_scheduled(&mut self, s: usize, id: &Value, due: i64) -> Result<Option<ReducerOutcome>, HostError> {
        let sched = self.spec.schedules[s].clone();
        let table = self.catalog.engine_ids[sched.table];
        let index = self.spec.tables[sched.table]
            .indexes
            .iter()
            .find(|i| i.unique && i.columns == [sched.id_column])
            .map(|i| i.source_name.clone());
        let start = Instant::now();
        self.instance()?;
        self.slot().begin();
        // Invariant: begun just above.
        let tx = self.slot().get().expect("transaction open");
        let index_id = index.and_then(|n| tx.table(table).ok()?.schema().index_id_by_name(&n));
        let found = index_id.and_then(|ix| {
            let view = tx.table(table).ok()?;
            let rid = view.unique_lookup(ix, std::slice::from_ref(id)).ok()??;
            Some((rid, view.get(rid)?))
        });
        let Some((rid, row)) = found else {
            self.rollback(); // the row is gone: nothing to run
            return Ok(None);
        };
        let at = schedule_at(&row[sched.at_column as usize]);
        if let Some(ScheduleAt::Time(_)) = at {
            // Invariant: the row was found in this transaction just above.
            self.slot().get().expect("transaction open").delete(table, rid).map_err(engine_err)?;
        }
        let mut args = Vec::new();
        self.catalog.codec(sched.table).encode_row(&row, &mut args);
        let caller = CallerInfo { identity: self.config.database_identity, ..CallerInfo::default() };
        let ts = now_micros();
        let reducer = match sched.function {
            ScheduledFunction::Reducer(r) => Some(r),
            ScheduledFunction::Procedure(p) => {
                // A procedure runs outside any transaction: the one-shot row's deletion
                // commits first, on its own, and is announced like the procedure's commits.
                let (delta, _) = self.commit()?;
                if !delta.is_empty() {
                    if let Some(observer) = self.slot_state().procedure_env.on_commit.clone() {
                        observer(&delta);
                    }
                }
                match self.procedure_dispatch.as_mut() {
                    Some(dispatch) => {
                        let flag = match at {
                            Some(ScheduleAt::Interval(_)) => {
                                let key = (s, id.clone());
                                // Flags of rows no longer scheduled and not running go (rows
                                // deleted by reducers are only taken off the queue).
                                let Scheduler { by_row, running, .. } = &mut self.scheduler;
                                running.retain(|k, f| *k == key || f.is_running() || by_row.contains_key(k));
                                running.entry(key).or_default().clone()
                            }
                            _ => RunningFlag::default(),
                        };
                        if flag.is_running() {
                            if flag.first_skip() {
                                self.logs.host(
                                    LogLevel::Warn,
                                    format!(
                                        "scheduled procedure `{}` is still running from its last \
                                         interval: runs due meanwhile are skipped",
                                        self.spec.procedures[p].name
                                    ),
                                );
                            }
                        } else {
                            flag.start();
                            dispatch(p, caller.clone(), std::mem::take(&mut args), flag);
                        }
                    }
                    None => {
                        self.run_procedure(p, &caller, std::mem::take(&mut args), ts)?;
                    }
                }
                None
            }
        };
        let (status, energy_used, delta, ticket) = match reducer {
            Some(r) => {
                let (_, status, energy_used) = self.run_guest(r, &caller, std::mem::take(&mut args), ts);
                let (delta, ticket) = if status == ReducerStatus::Committed {
                    self.commit()?
                } else {
                    self.rollback();
                    (empty_delta(), None)
                };
                (status, energy_used, delta, ticket)
            }
            None => (ReducerStatus::Committed, 0, empty_delta(), None),
        };
        // An interval row that still exists runs again one interval after this run was due.
        if let Some(ScheduleAt::Interval(d)) = at {
            let still_there = self
                .db
                .try_snapshot()
                .and_then(|snap| {
                    Some(
                        snap.table(table)
                            .ok()?
                            .unique_lookup(index_id?, std::slice::from_ref(id))
                            .ok()?
                            .is_some(),
                    )
                })
                .unwrap_or(false);
            if still_there && !self.scheduler.by_row.contains_key(&(s, id.clone())) {
                self.scheduler.arm(s, id.clone(), due.saturating_add(d.max(1)));
            }
        }
        let Some(reducer) = reducer else { return Ok(None) };
        Ok(Some(ReducerOutcome {
            reducer: Arc::clone(&self.names[reducer]),
            status,
            energy_used,
            duration: start.elapsed(),
            timestamp_micros: ts,
            delta,
            ticket,
            caller_update: None,
        }))
    }
}

fn write_program_row(
    tx: &mut WriteTx<'_>,
    program: &[u8],
    def: &[u8],
    owner: [u8; 32],
    create: bool,
) -> Result<(), lightcone_mvcc::MvccError> {
    let table = if create { tx.create_table(module_table_def())? } else { tx.table_id(MODULE_TABLE)? };
    let rids: Vec<_> = tx.table(table)?.row_ids().collect();
    for rid in rids {
        tx.delete(table, rid)?;
    }
    tx.insert(
        table,
        vec![
            Value::U32(0),
            Value::Bytes(program.into()),
            Value::Bytes(def.into()),
            Value::U256(U256::from_le_bytes(owner)),
            Value::I64(now_micros()),
        ],
    )?;
    Ok(())
}
