//! wasmtime: one engine per process, one compiled module per program, and one live instance
//! per database that every call reuses.

use std::sync::Arc;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig, Store,
    StoreLimitsBuilder, Trap, TypedFunc,
};

use crate::abi::{self, CallContext, HostState, Source};
use crate::logs::ModuleLogs;
use crate::tx_slot::TxSlot;
use crate::HostError;

/// Linear memory a module may grow to.
pub const MAX_MODULE_MEMORY_BYTES: usize = 1 << 30;
/// Fuel for describing a module (preinit + `__describe_module__`).
const DESCRIBE_FUEL: u64 = 10_000_000_000;

/// The process-wide wasm engine and the ABI linker.
pub struct WasmEngine {
    engine: Engine,
    linker: Linker<HostState>,
    /// Whether the pooling allocator is in use (it may be refused by the sandbox).
    pub pooling: bool,
}

fn config(pooling: bool) -> Config {
    let mut c = Config::new();
    c.consume_fuel(true);
    c.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if pooling {
        let mut p = PoolingAllocationConfig::default();
        p.total_memories(64)
            .total_tables(64)
            .total_core_instances(64)
            .max_memory_size(MAX_MODULE_MEMORY_BYTES);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

impl WasmEngine {
    /// Builds the engine, preferring the pooling allocator and falling back (with a log line)
    /// to on-demand allocation where the pool's address-space reservation is refused.
    pub fn new() -> Result<WasmEngine, HostError> {
        let (engine, pooling) = match Engine::new(&config(true)) {
            Ok(e) => (e, true),
            Err(e) => {
                tracing::warn!("wasm pooling allocator unavailable ({e}); using on-demand allocation");
                (Engine::new(&config(false)).map_err(|e| HostError::Runtime(e.to_string()))?, false)
            }
        };
        let mut linker = Linker::new(&engine);
        abi::link(&mut linker).map_err(|e| HostError::Runtime(e.to_string()))?;
        crate::wasi::link(&mut linker).map_err(|e| HostError::Runtime(e.to_string()))?;
        Ok(WasmEngine { engine, linker, pooling })
    }

    /// Compiles a program and checks it is a SpacetimeDB module this host can run.
    pub fn compile(&self, wasm: &[u8]) -> Result<CompiledModule, HostError> {
        if !wasm.starts_with(b"\0asm") {
            return Err(HostError::NotWasm("the file does not start with the wasm magic number".into()));
        }
        let module = Module::new(&self.engine, wasm).map_err(|e| HostError::NotWasm(format!("{e:#}")))?;
        for export in ["memory", "__describe_module__", "__call_reducer__"] {
            if module.get_export(export).is_none() {
                return Err(HostError::MissingExport(export.into()));
            }
        }
        for import in module.imports() {
            let known =
                import.module().starts_with("spacetime_") || import.module() == "wasi_snapshot_preview1";
            if !known
                || self.linker.get_by_import(&mut Store::new(&self.engine, dummy_state()), &import).is_none()
            {
                if import.module() == "wasi_snapshot_preview1" {
                    continue; // unknown WASI functions are linked as traps below
                }
                return Err(HostError::UnknownImport(format!("{}::{}", import.module(), import.name())));
            }
        }
        let mut linker = self.linker.clone();
        linker.define_unknown_imports_as_traps(&module).map_err(|e| HostError::Runtime(e.to_string()))?;
        let pre = linker.instantiate_pre(&module).map_err(|e| HostError::Runtime(format!("{e:#}")))?;
        let mut preinits: Vec<String> =
            module.exports().map(|e| e.name().to_string()).filter(|n| n.starts_with("__preinit__")).collect();
        preinits.sort(); // byte order: this order defines reducer ids
        Ok(CompiledModule { pre: Arc::new(pre), preinits, engine: self.engine.clone() })
    }
}

fn dummy_state() -> HostState {
    new_state(TxSlot::new(Arc::new(lightcone_mvcc::Database::new())), [0; 32], Arc::new(ModuleLogs::new()))
}

fn new_state(slot: TxSlot, module_identity: [u8; 32], logs: Arc<ModuleLogs>) -> HostState {
    HostState {
        slot,
        catalog: None,
        memory: None,
        iters: Default::default(),
        sources: Default::default(),
        sinks: Default::default(),
        timers: Default::default(),
        call: CallContext::default(),
        module_identity,
        logs,
        scheduled_immediate: Vec::new(),
        limits: StoreLimitsBuilder::new().memory_size(MAX_MODULE_MEMORY_BYTES).build(),
        last_panic: None,
        procedure_env: Default::default(),
        in_procedure: false,
        anonymous_tx: false,
        procedure_commits: Vec::new(),
        view_reads: None,
        tx_turn: None,
    }
}

/// A compiled program, ready to instantiate cheaply.
#[derive(Clone)]
pub struct CompiledModule {
    pre: Arc<InstancePre<HostState>>,
    preinits: Vec<String>,
    engine: Engine,
}

type CallReducerFn = TypedFunc<(u32, u64, u64, u64, u64, u64, u64, i64, u32, u32), i32>;
type CallViewFn = TypedFunc<(u32, u64, u64, u64, u64, u32, u32), i32>;
type CallViewAnonFn = TypedFunc<(u32, u32, u32), i32>;

/// What one run of a view function produced.
#[derive(Debug)]
pub struct ViewRun {
    /// What the view wrote to its sink (after a `ViewResultHeader` when `code` is 2).
    pub output: Vec<u8>,
    /// The export's return code: 2 = header first, 0 = the legacy bare `Vec<Row>`.
    pub code: i32,
    /// The tables (indexes into the spec) the view read.
    pub reads: std::collections::BTreeSet<usize>,
}

/// How a guest call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestOutcome {
    /// Returned 0.
    Ok,
    /// The reducer returned `Err(message)`.
    Err(String),
    /// A panic or trap (message from the panic hook's log line when there was one).
    Trap(String),
    /// The fuel budget ran out.
    OutOfFuel,
}

/// How a guest call failed outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFailure {
    /// A panic or trap (message from the panic hook's log line when there was one).
    Trap(String),
    /// The fuel budget ran out.
    OutOfFuel,
}

/// A live instance with its store. Not `Send`: it lives on its database's thread.
pub struct Instance {
    store: Store<HostState>,
    call_reducer: CallReducerFn,
    /// `__call_procedure__` has the same signature (its result sink in place of the error sink).
    call_procedure: Option<CallReducerFn>,
    /// The view entry points; modules without views need not export them.
    call_view: Option<CallViewFn>,
    call_view_anon: Option<CallViewAnonFn>,
    module: CompiledModule,
    /// True after a trap: the instance's memory may be inconsistent, so the next call gets a
    /// fresh instance.
    broken: bool,
}

impl Instance {
    /// Instantiates, runs every `__preinit__*` in name order, and returns the instance with the
    /// module definition bytes from `__describe_module__`.
    pub fn new(
        module: &CompiledModule,
        slot: TxSlot,
        module_identity: [u8; 32],
        logs: Arc<ModuleLogs>,
    ) -> Result<(Instance, Vec<u8>), HostError> {
        let mut store = Store::new(&module.engine, new_state(slot, module_identity, logs));
        store.limiter(|s| &mut s.limits);
        store.set_fuel(DESCRIBE_FUEL).map_err(|e| HostError::Runtime(e.to_string()))?;
        let instance =
            module.pre.instantiate(&mut store).map_err(|e| HostError::Instantiate(format!("{e:#}")))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| HostError::MissingExport("memory".into()))?;
        store.data_mut().memory = Some(memory);
        for name in &module.preinits {
            let f = instance
                .get_typed_func::<(), ()>(&mut store, name)
                .map_err(|e| HostError::Instantiate(format!("{name}: {e}")))?;
            f.call(&mut store, ()).map_err(|e| HostError::Instantiate(format!("{name} trapped: {e:#}")))?;
        }
        let describe =
            instance.get_typed_func::<u32, ()>(&mut store, "__describe_module__").map_err(|e| {
                HostError::MissingExport(format!("__describe_module__ with the right signature: {e}"))
            })?;
        let sink = store.data_mut().sinks.insert(Vec::new());
        describe
            .call(&mut store, sink)
            .map_err(|e| HostError::Instantiate(format!("__describe_module__ trapped: {e:#}")))?;
        let def = store.data_mut().sinks.remove(sink).unwrap_or_default();
        store.data_mut().end_call();
        let call_reducer = instance.get_typed_func(&mut store, "__call_reducer__").map_err(|e| {
            HostError::MissingExport(format!("__call_reducer__ with the right signature: {e}"))
        })?;
        // Modules built before procedures existed do not export this.
        let call_procedure = instance.get_typed_func(&mut store, "__call_procedure__").ok();
        let call_view = instance.get_typed_func(&mut store, "__call_view__").ok();
        let call_view_anon = instance.get_typed_func(&mut store, "__call_view_anon__").ok();
        let instance = Instance {
            store,
            call_reducer,
            call_procedure,
            call_view,
            call_view_anon,
            module: module.clone(),
            broken: false,
        };
        Ok((instance, def))
    }

    pub fn state(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    /// The compiled program this instance runs (to instantiate it again elsewhere).
    pub fn compiled(&self) -> &CompiledModule {
        &self.module
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Calls `__call_reducer__` in the transaction open in the state's slot. Returns the
    /// outcome and the fuel used.
    pub fn call_reducer(
        &mut self,
        id: u32,
        ctx: CallContext,
        args: Vec<u8>,
        fuel: u64,
    ) -> (GuestOutcome, u64) {
        let func = self.call_reducer.clone();
        let (result, err, used) = self.invoke(&func, id, ctx, args, fuel);
        let outcome = match result {
            Ok(0) => GuestOutcome::Ok,
            Ok(1) => GuestOutcome::Err(String::from_utf8_lossy(&err).into_owned()),
            Ok(code) => GuestOutcome::Trap(format!("__call_reducer__ returned unexpected code {code}")),
            Err(GuestFailure::Trap(m)) => GuestOutcome::Trap(m),
            Err(GuestFailure::OutOfFuel) => GuestOutcome::OutOfFuel,
        };
        (outcome, used)
    }

    /// Calls `__call_procedure__` (no transaction open: the procedure opens its own). Returns
    /// the outcome — `Ok` carries the BSATN of the return value — and the fuel used.
    pub fn call_procedure(
        &mut self,
        id: u32,
        ctx: CallContext,
        args: Vec<u8>,
        fuel: u64,
    ) -> (Result<Vec<u8>, GuestFailure>, u64) {
        let Some(func) = self.call_procedure.clone() else {
            return (Err(GuestFailure::Trap("the module exports no `__call_procedure__`".into())), 0);
        };
        self.store.data_mut().in_procedure = true;
        let (result, returned, used) = self.invoke(&func, id, ctx, args, fuel);
        let state = self.store.data_mut();
        state.in_procedure = false;
        if state.anonymous_tx {
            // The procedure ended (trapped) inside `with_tx`: its transaction rolls back.
            state.anonymous_tx = false;
            drop(state.slot.take());
        }
        // A turn still held (the transaction rolled back, or its commit failed half-way) is
        // released, so the database thread never waits past the procedure's end.
        drop(state.tx_turn.take());
        let outcome = match result {
            Ok(0) => Ok(returned),
            Ok(code) => {
                Err(GuestFailure::Trap(format!("__call_procedure__ returned unexpected code {code}")))
            }
            Err(failure) => Err(failure),
        };
        (outcome, used)
    }

    /// Runs view `index` (`__call_view__` for a `sender`, `__call_view_anon__` without one) in
    /// the transaction open in the state's slot, read-only. Returns what it produced (on a
    /// failure: with the tables it read until then) and the fuel used.
    pub fn call_view(
        &mut self,
        index: u32,
        sender: Option<[u8; 32]>,
        fuel: u64,
    ) -> (Result<ViewRun, (GuestFailure, std::collections::BTreeSet<usize>)>, u64) {
        let missing = |name: &str| {
            (Err((GuestFailure::Trap(format!("the module exports no `{name}`")), Default::default())), 0)
        };
        let (view, anon) = (self.call_view.clone(), self.call_view_anon.clone());
        match (sender.is_some(), &view, &anon) {
            (true, None, _) => return missing("__call_view__"),
            (false, _, None) => return missing("__call_view_anon__"),
            _ => {}
        }
        if let Err(e) = self.store.set_fuel(fuel) {
            return (Err((GuestFailure::Trap(format!("cannot set fuel: {e}")), Default::default())), 0);
        }
        let state = self.store.data_mut();
        state.last_panic = None;
        state.view_reads = Some(Default::default());
        let sink = state.sinks.insert(Vec::new());
        let result = match sender {
            Some(sender) => {
                // Invariant: checked above.
                let f = view.expect("__call_view__ exported");
                let word = |i: usize| {
                    u64::from_le_bytes(sender[i * 8..i * 8 + 8].try_into().expect("8 of 32 bytes"))
                };
                f.call(&mut self.store, (index, word(0), word(1), word(2), word(3), 0, sink))
            }
            None => {
                // Invariant: checked above.
                let f = anon.expect("__call_view_anon__ exported");
                f.call(&mut self.store, (index, 0, sink))
            }
        };
        let used = fuel.saturating_sub(self.store.get_fuel().unwrap_or(0));
        let state = self.store.data_mut();
        let output = state.sinks.remove(sink).unwrap_or_default();
        let reads = state.view_reads.take().unwrap_or_default();
        let panic = state.last_panic.take();
        state.end_call();
        let result = match result {
            Ok(code) => Ok(ViewRun { output, code, reads }),
            Err(e) => {
                self.broken = true;
                let failure = if e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
                    GuestFailure::OutOfFuel
                } else {
                    GuestFailure::Trap(panic.unwrap_or_else(|| format!("{e:#}")))
                };
                Err((failure, reads))
            }
        };
        (result, used)
    }

    /// Runs one `__call_reducer__`/`__call_procedure__`-shaped export: returns its result (a
    /// trap as the outcome to report), what it wrote to its sink, and the fuel used.
    fn invoke(
        &mut self,
        func: &CallReducerFn,
        id: u32,
        ctx: CallContext,
        args: Vec<u8>,
        fuel: u64,
    ) -> (Result<i32, GuestFailure>, Vec<u8>, u64) {
        let state = self.store.data_mut();
        state.call = ctx;
        state.last_panic = None;
        let sender = state.call.sender;
        let conn = state.call.connection_id;
        let ts = state.call.timestamp_micros;
        let args_handle =
            if args.is_empty() { 0 } else { state.sources.insert(Source { data: args, pos: 0 }) };
        let sink = state.sinks.insert(Vec::new());
        let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let params = (
            id,
            word(&sender, 0),
            word(&sender, 1),
            word(&sender, 2),
            word(&sender, 3),
            word(&conn, 0),
            word(&conn, 1),
            ts,
            args_handle,
            sink,
        );
        if let Err(e) = self.store.set_fuel(fuel) {
            self.store.data_mut().end_call();
            return (Err(GuestFailure::Trap(format!("cannot set fuel: {e}"))), Vec::new(), 0);
        }
        let result = func.call(&mut self.store, params);
        let used = fuel.saturating_sub(self.store.get_fuel().unwrap_or(0));
        let state = self.store.data_mut();
        let written = state.sinks.remove(sink).unwrap_or_default();
        let panic = state.last_panic.take();
        state.end_call();
        let result = result.map_err(|e| {
            self.broken = true;
            if e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
                GuestFailure::OutOfFuel
            } else {
                GuestFailure::Trap(panic.unwrap_or_else(|| format!("{e:#}")))
            }
        });
        (result, written, used)
    }

    /// A fresh instance of the same module with this one's transaction slot and catalog
    /// (used after a trap).
    pub fn renew(self) -> Result<Instance, HostError> {
        let Instance { mut store, module, .. } = self;
        let old = store.data_mut();
        let logs = Arc::clone(&old.logs);
        let identity = old.module_identity;
        let catalog = old.catalog.take();
        let procedure_env = old.procedure_env.clone();
        let slot = std::mem::replace(&mut old.slot, TxSlot::new(Arc::new(lightcone_mvcc::Database::new())));
        drop(store);
        let (mut fresh, _) = Instance::new(&module, slot, identity, logs)?;
        fresh.state().catalog = catalog;
        fresh.state().procedure_env = procedure_env;
        Ok(fresh)
    }
}
