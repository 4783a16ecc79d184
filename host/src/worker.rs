//! A database's thread: owns its [`ModuleHost`] (whose wasm store is not `Send`), runs every
//! reducer, lifecycle call, SQL write and scheduled reducer in order (one writer), and tells
//! listeners about every commit. Callers on any thread use the [`DatabaseHandle`]; they wait
//! for durability themselves, so the thread moves on to the next call while the commit log
//! syncs (group commit).
//!
//! Procedures (client-called and scheduled) run on a second thread with an instance of their own
//! ([`crate::module_host::ProcedureHost`]), so one sleeping or waiting for an HTTP answer
//! holds up no reducer; when one opens a transaction it asks the database thread for the turn
//! (`Job::ProcedureTurn`), which waits for that transaction to end and then announces its
//! commit in order with its own (schedules, view refresh, subscribers).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lightcone_mvcc::{Database, Snapshot, TxDelta};
use lightcone_wal::CommitLog;

use crate::abi::{TxGate, TxTurn};
use crate::logs::{now_micros, ModuleLogs};
use crate::module_def::ModuleSpec;
use crate::module_host::{
    CallerInfo, HostConfig, ModuleHost, ProcedureOutcome, ProcedureSeed, PublishReport, ReducerArgs,
    ReducerOutcome, RunningFlag,
};
use crate::runtime::WasmEngine;
use crate::views::ViewReaders;
use crate::HostError;

/// One commit, as listeners (subscriptions) see it: the delta and the state right after it.
#[derive(Clone)]
pub struct CommitEvent {
    pub delta: Arc<TxDelta>,
    pub after: Snapshot,
    /// The reducer that committed, and who called it (None for SQL writes).
    pub reducer: Option<Arc<str>>,
    pub caller: Option<CallerInfo>,
    /// The module version that committed.
    pub spec: Arc<ModuleSpec>,
    /// [`CommitHooks::client_epoch`] when it committed.
    pub client_epoch: u64,
}

type Reply<T> = SyncSender<Result<T, HostError>>;

/// Runs on the database thread after every commit, in commit order (the subscription hub
/// evaluates here). What it hands back goes out in commit order with the callers' answers.
pub type CommitHook = Arc<dyn Fn(&CommitEvent) -> HookOutput + Send + Sync>;

/// What a commit hook hands back.
#[derive(Default)]
pub struct HookOutput {
    /// The caller's own encoded update; it comes back in [`ReducerOutcome::caller_update`].
    pub caller_update: Option<Arc<[u8]>>,
    /// Sends the commit's updates to everyone else. It runs once the commit is durable (in
    /// `fsync` mode: clients only ever see durable state, as upstream's confirmed reads) and
    /// after everything of earlier commits, callers' answers included, went out: on the
    /// database thread, or on the durability notifier's. It gets the error if the commit could
    /// not be made durable. Must be quick and must not block.
    pub deliver: Option<Delivery>,
}

/// See [`HookOutput::deliver`].
pub type Delivery = Box<dyn FnOnce(Result<(), &HostError>) + Send>;

/// What one database's commits flow to, across module updates (each new handle gets it): the
/// commit hooks, and the one ordered path their output and the callers' answers take.
#[derive(Default)]
pub struct CommitHooks {
    /// Replaced, not mutated, when hooks come or go: a commit takes the list without copying.
    hooks: Mutex<Arc<Vec<(HookId, CommitHook)>>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Started by the first handle (it needs the log).
    outgoing: std::sync::OnceLock<Notifier>,
    /// Updates published so far that broke clients (see
    /// [`crate::module_host::update_keeps_clients`]), and other ends of what clients were
    /// served (a failed update, a stopped database).
    client_epoch: std::sync::atomic::AtomicU64,
    /// Told (with a reason) when clients must go: see [`CommitHooks::retire_clients`].
    on_retire: Mutex<Vec<(HookId, RetireHook)>>,
}

/// See [`CommitHooks::on_retire`].
pub type RetireHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Names a registered hook, for [`CommitHooks::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookId(u64);

impl CommitHooks {
    pub fn add(&self, hook: CommitHook) -> HookId {
        let id = HookId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        let mut list = Vec::clone(&hooks);
        list.push((id, hook));
        *hooks = Arc::new(list);
        id
    }

    /// Unregisters a commit or retire hook (its owner is gone).
    pub fn remove(&self, id: HookId) {
        let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        if hooks.iter().any(|(h, _)| *h == id) {
            *hooks = Arc::new(hooks.iter().filter(|(h, _)| *h != id).cloned().collect());
        }
        drop(hooks);
        self.on_retire.lock().unwrap_or_else(|p| p.into_inner()).retain(|(h, _)| *h != id);
    }

    /// How many published updates so far broke clients: a subscription made under an earlier
    /// count cannot go on (its tables or filters may be gone), one made under this count can,
    /// whatever version runs now.
    pub fn client_epoch(&self) -> u64 {
        self.client_epoch.load(Ordering::Acquire)
    }

    /// Registers what [`CommitHooks::retire_clients`] calls.
    pub fn on_retire(&self, hook: RetireHook) -> HookId {
        let id = HookId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.on_retire.lock().unwrap_or_else(|p| p.into_inner()).push((id, hook));
        id
    }

    /// Ends what clients are served now: bumps the client epoch and tells the retire hooks
    /// why (a failed update, whose fallback recomputes state they hold; a stopped database).
    pub fn retire_clients(&self, reason: &str) {
        self.client_epoch.fetch_add(1, Ordering::AcqRel);
        let hooks: Vec<RetireHook> = self
            .on_retire
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, h)| Arc::clone(h))
            .collect();
        for hook in hooks {
            hook(reason);
        }
    }

    fn outgoing(&self, log: Option<Arc<CommitLog>>) -> Notifier {
        self.outgoing.get_or_init(|| spawn_notifier(log)).clone()
    }

    /// Runs every hook: the caller's update (if a hook made one) and the deliveries.
    fn run(&self, event: &CommitEvent) -> (Option<Arc<[u8]>>, Vec<Delivery>) {
        let hooks = Arc::clone(&self.hooks.lock().unwrap_or_else(|p| p.into_inner()));
        let mut caller_update = None;
        let mut deliveries = Vec::new();
        for (_, h) in hooks.iter() {
            let out = h(event);
            if out.caller_update.is_some() {
                caller_update = out.caller_update;
            }
            deliveries.extend(out.deliver);
        }
        (caller_update, deliveries)
    }
}

/// Work for the database thread.
type WriteFn = Box<dyn FnOnce(&mut lightcone_mvcc::WriteTx<'_>) -> Result<(), String> + Send>;

/// Where an asynchronous call's outcome goes, once durable: called on the database thread
/// (or on the durability notifier's), so it must be quick and must not block.
pub type AsyncReply = Box<dyn FnOnce(Result<ReducerOutcome, HostError>) + Send>;

/// Where a procedure call's outcome goes, once its commits are durable (as [`AsyncReply`]).
pub type ProcedureReply = Box<dyn FnOnce(Result<ProcedureOutcome, HostError>) + Send>;

enum Job {
    Call {
        reducer: String,
        caller: CallerInfo,
        args: ReducerArgs,
        reply: Reply<ReducerOutcome>,
    },
    CallAsync {
        reducer: String,
        caller: CallerInfo,
        args: ReducerArgs,
        reply: AsyncReply,
    },
    CallProcedure {
        procedure: String,
        caller: CallerInfo,
        args: ReducerArgs,
        reply: ProcedureReply,
    },
    Connected {
        caller: CallerInfo,
        reply: Reply<Option<ReducerOutcome>>,
    },
    Disconnected {
        caller: CallerInfo,
        reply: Reply<Option<ReducerOutcome>>,
    },
    Write {
        f: WriteFn,
        reply: Reply<(Arc<TxDelta>, Option<lightcone_wal::Ticket>)>,
    },
    /// A procedure on the procedure thread wants to open a transaction: grant it the turn and
    /// wait (running nothing else) until it commits or rolls back.
    ProcedureTurn {
        grant: SyncSender<TxTurn>,
    },
    /// `schedule_immediate` calls a procedure made, to run here.
    Immediate {
        calls: Vec<(String, Vec<u8>)>,
    },
    /// Acquire (`true`) or release sender-bound views for an identity.
    Views {
        sender: [u8; 32],
        views: Vec<usize>,
        acquire: bool,
        reply: Reply<Arc<TxDelta>>,
    },
    Shutdown,
}

/// A client's reducer or procedure call that a database refused, unanswered, because it is
/// shutting down — for a module update, between two versions, or for good. A server queues it
/// again on the next version ([`RefusedCall::requeue`]), as upstream holds calls during an
/// update, or answers it with the error ([`RefusedCall::refuse`]).
// Boxed: a refusal is rare, and `Result<(), RefusedCall>` stays small on every call's path.
pub struct RefusedCall(Box<RefusedJob>);

enum RefusedJob {
    /// `Job::CallAsync` or `Job::CallProcedure`.
    Job(Job),
    /// A client's procedure call for the procedure threads.
    Procedure(ProcedureJob),
}

impl RefusedCall {
    /// Queues the call on `on` (the next version), or gives it back if that one refuses too.
    pub fn requeue(self, on: &DatabaseHandle) -> Result<(), RefusedCall> {
        match *self.0 {
            RefusedJob::Job(Job::CallAsync { reducer, caller, args, reply }) => {
                on.try_call_reducer_then(&reducer, &caller, args, reply)
            }
            RefusedJob::Job(Job::CallProcedure { procedure, caller, args, reply })
            | RefusedJob::Procedure(ProcedureJob {
                target: ProcedureTarget::Call { procedure, args },
                caller,
                reply,
            }) => on.try_call_procedure_then(&procedure, &caller, args, reply),
            other => Err(RefusedCall(Box::new(other))),
        }
    }

    /// Answers the call with "the database is shut down".
    pub fn refuse(self) {
        let error = || HostError::ShutDown;
        match *self.0 {
            RefusedJob::Job(Job::CallAsync { reply, .. }) => reply(Err(error())),
            RefusedJob::Job(Job::CallProcedure { reply, .. })
            | RefusedJob::Procedure(ProcedureJob { reply, .. }) => reply(Err(error())),
            // Invariant: only the two calls above are ever wrapped (see the `try_call_*` methods).
            RefusedJob::Job(_) => debug_assert!(false, "a refused call holds a call"),
        }
    }
}

/// A handle on a running database. Cheap to share (`Arc`) between server tasks.
pub struct DatabaseHandle {
    /// Runs client-called procedures beside the database thread (modules with procedures).
    procedures: Option<ProcedureThread>,
    jobs: Mutex<Sender<Job>>,
    /// Jobs sent and not yet taken by the database thread.
    queued_jobs: Arc<AtomicUsize>,
    db: Arc<Database>,
    log: Option<Arc<CommitLog>>,
    logs: Arc<ModuleLogs>,
    spec: Arc<ModuleSpec>,
    listeners: Arc<Mutex<Vec<Sender<CommitEvent>>>>,
    hooks: Arc<CommitHooks>,
    /// Sends answers and updates in commit order (shared with the database thread).
    outgoing: Notifier,
    stopped: std::sync::atomic::AtomicBool,
    thread: Mutex<Option<JoinHandle<ViewReaders>>>,
    /// What the thread left when it ended (see [`DatabaseHandle::take_view_readers`]).
    left_readers: Mutex<ViewReaders>,
}

/// How to start the module on the thread.
pub enum Start {
    /// Publish this program (first publish or compatible update).
    Publish { program: Vec<u8>, owner: [u8; 32] },
    /// [`Start::Publish`] with `compiled` made from `program` by
    /// [`prepare_update`](crate::module_host::prepare_update).
    /// An update keeping clients connected takes over `readers`, the sender-bound views' readers
    /// of the version it follows ([`DatabaseHandle::take_view_readers`]).
    PublishCompiled {
        program: Vec<u8>,
        compiled: crate::runtime::CompiledModule,
        readers: ViewReaders,
        owner: [u8; 32],
    },
    /// Open the program already in the database.
    Open,
}

impl DatabaseHandle {
    /// Starts the database thread and the module on it.
    pub fn start(
        engine: Arc<WasmEngine>,
        db: Arc<Database>,
        log: Option<Arc<CommitLog>>,
        config: HostConfig,
        start: Start,
    ) -> Result<(Arc<DatabaseHandle>, Option<PublishReport>), HostError> {
        Self::start_with_hooks(engine, db, log, config, start, Arc::default())
    }

    /// [`DatabaseHandle::start`] with commit hooks shared with an earlier handle.
    pub fn start_with_hooks(
        engine: Arc<WasmEngine>,
        db: Arc<Database>,
        log: Option<Arc<CommitLog>>,
        config: HostConfig,
        start: Start,
        hooks: Arc<CommitHooks>,
    ) -> Result<(Arc<DatabaseHandle>, Option<PublishReport>), HostError> {
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (jobs_tx, jobs_rx) = mpsc::channel();
        let listeners: Arc<Mutex<Vec<Sender<CommitEvent>>>> = Arc::default();
        let queued_jobs = Arc::new(AtomicUsize::new(0));
        let (procs_tx, procs_rx) = mpsc::channel::<Option<ProcedureJob>>();
        let outgoing = hooks.outgoing(log.clone());
        let thread = {
            let procs_tx = procs_tx.clone();
            let outgoing = outgoing.clone();
            let (db, log, listeners) = (Arc::clone(&db), log.clone(), Arc::clone(&listeners));
            let queued = Arc::clone(&queued_jobs);
            let hooks = Arc::clone(&hooks);
            std::thread::Builder::new()
                .name("lightcone-db".into())
                .spawn(move || {
                    let started = match start {
                        Start::Publish { program, owner } => {
                            ModuleHost::publish(&engine, db, log, &program, owner, config)
                                .map(|(h, r)| (h, Some(r)))
                        }
                        Start::PublishCompiled { program, compiled, readers, owner } => {
                            ModuleHost::publish_compiled(
                                &engine,
                                db,
                                log,
                                &program,
                                Some(&compiled),
                                readers,
                                owner,
                                config,
                            )
                            .map(|(h, r)| (h, Some(r)))
                        }
                        Start::Open => ModuleHost::open(&engine, db, log, config).map(|h| (h, None)),
                    };
                    match started {
                        Ok((mut host, report)) => {
                            if report.as_ref().is_some_and(|r| !r.keeps_clients) {
                                // Before this version announces anything: subscriptions made
                                // under the old one stop at its last commit.
                                hooks.client_epoch.fetch_add(1, Ordering::AcqRel);
                            }
                            let seed = host.procedure_seed();
                            if seed.is_some() {
                                let dispatch =
                                    scheduled_procedure_dispatch(procs_tx, Arc::clone(host.logs()));
                                host.set_procedure_dispatch(dispatch);
                            }
                            let info = (Arc::clone(host.logs()), Arc::clone(host.spec()), report, seed);
                            let ready = move || ready_tx.send(Ok(info)).is_ok();
                            run(host, Jobs { rx: jobs_rx, queued }, listeners, hooks, outgoing, ready)
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            ViewReaders::default()
                        }
                    }
                })
                .map_err(|e| HostError::Runtime(format!("cannot start the database thread: {e}")))?
        };
        let (logs, spec, report, seed) = ready_rx
            .recv()
            .map_err(|_| HostError::Runtime("the database thread died while starting".into()))??;
        let procedures = match seed {
            Some(seed) => Some(ProcedureThread::spawn(
                seed,
                (procs_tx, procs_rx),
                jobs_tx.clone(),
                Arc::clone(&queued_jobs),
                outgoing.clone(),
            )?),
            None => None,
        };
        let handle = DatabaseHandle {
            procedures,
            jobs: Mutex::new(jobs_tx),
            queued_jobs,
            db,
            log,
            logs,
            spec,
            listeners,
            hooks,
            outgoing,
            stopped: std::sync::atomic::AtomicBool::new(false),
            thread: Mutex::new(Some(thread)),
            left_readers: Mutex::default(),
        };
        Ok((Arc::new(handle), report))
    }

    fn send<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> Result<T, HostError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.queue(make(tx)).map_err(|_| HostError::ShutDown)?;
        rx.recv().map_err(|_| HostError::Runtime("the database thread stopped".into()))?
    }

    fn wait_durable(&self, ticket: Option<lightcone_wal::Ticket>) -> Result<(), HostError> {
        wait_for(&self.log, ticket)
    }

    /// Calls a reducer; returns once its commit is durable (in the log's durability mode).
    pub fn call_reducer(
        &self,
        reducer: &str,
        caller: &CallerInfo,
        args: ReducerArgs,
    ) -> Result<ReducerOutcome, HostError> {
        let reducer = reducer.to_string();
        let caller = caller.clone();
        let outcome = self.send(|reply| Job::Call { reducer, caller, args, reply })?;
        self.wait_durable(outcome.ticket)?;
        Ok(outcome)
    }

    /// Queues a reducer call without blocking: calls queued from one thread run in queue
    /// order; the receiver gets the outcome once its commit is durable. Many calls can be in
    /// flight (pipelining); one notifier thread waits for the log on behalf of all of them.
    pub fn call_reducer_async(
        &self,
        reducer: &str,
        caller: &CallerInfo,
        args: ReducerArgs,
    ) -> tokio::sync::oneshot::Receiver<Result<ReducerOutcome, HostError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.call_reducer_then(reducer, caller, args, move |outcome| {
            let _ = tx.send(outcome);
        });
        rx
    }

    /// Like [`DatabaseHandle::call_reducer_async`], but hands the outcome to `reply` where it
    /// becomes available — on the database thread, or on the durability notifier's — instead
    /// of through a channel: a server can put the answer straight on the client's outgoing
    /// queue, saving a task wake-up per call. `reply` must be quick and must not block.
    pub fn call_reducer_then(
        &self,
        reducer: &str,
        caller: &CallerInfo,
        args: ReducerArgs,
        reply: impl FnOnce(Result<ReducerOutcome, HostError>) + Send + 'static,
    ) {
        if let Err(refused) = self.try_call_reducer_then(reducer, caller, args, Box::new(reply)) {
            refused.refuse();
        }
    }

    /// [`DatabaseHandle::call_reducer_then`], giving the call back unanswered if this version
    /// of the module is shutting down, so it can be queued on the next one
    /// ([`RefusedCall::requeue`]).
    pub fn try_call_reducer_then(
        &self,
        reducer: &str,
        caller: &CallerInfo,
        args: ReducerArgs,
        reply: AsyncReply,
    ) -> Result<(), RefusedCall> {
        let job = Job::CallAsync { reducer: reducer.to_string(), caller: caller.clone(), args, reply };
        self.queue(job).map_err(|job| RefusedCall(Box::new(RefusedJob::Job(job))))
    }
    /// Queues `job` without waiting for it; gives it back if the database thread is gone.
    // The job comes back only after shutdown; boxing it would cost an allocation per call.
    #[allow(clippy::result_large_err)]
    /// Refused once a shutdown has begun: checked under the lock the shutdown queues
    /// `Job::Shutdown` under, so no job lands behind it (unanswered).
    fn queue(&self, job: Job) -> Result<(), Job> {
        // Sent under the lock rather than on a clone of the sender, which would be one more
        // allocation per call. A poisoned lock only means another sender panicked mid-send.
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if self.stopped.load(Ordering::Acquire) {
            return Err(job);
        }
        self.queued_jobs.fetch_add(1, Ordering::Relaxed);
        jobs.send(job).map_err(|mpsc::SendError(job)| {
            self.queued_jobs.fetch_sub(1, Ordering::Relaxed);
            job
        })
    }

    /// Calls a procedure; `reply` gets the outcome once the commits of the procedure's own
    /// transactions are durable (where and how as for [`DatabaseHandle::call_reducer_then`]).
    /// The procedure runs on a procedure thread (up to [`MAX_PROCEDURE_THREADS`] side by
    /// side, taken in call order): while it sleeps or waits for an HTTP answer, reducers and
    /// other procedures go on; only its transactions take turns with the reducers.
    pub fn call_procedure_then(
        &self,
        procedure: &str,
        caller: &CallerInfo,
        args: ReducerArgs,
        reply: impl FnOnce(Result<ProcedureOutcome, HostError>) + Send + 'static,
    ) {
        if let Err(refused) = self.try_call_procedure_then(procedure, caller, args, Box::new(reply)) {
            refused.refuse();
        }
    }

    /// [`DatabaseHandle::call_procedure_then`], giving the call back unanswered if this
    /// version of the module is shutting down (see [`RefusedCall`]).
    pub fn try_call_procedure_then(
        &self,
        procedure: &str,
        caller: &CallerInfo,
        args: ReducerArgs,
        reply: ProcedureReply,
    ) -> Result<(), RefusedCall> {
        if let Some(p) = &self.procedures {
            let job = ProcedureJob {
                target: ProcedureTarget::Call { procedure: procedure.to_string(), args },
                caller: caller.clone(),
                reply,
            };
            let sender = p.pool.sender.lock().unwrap_or_else(|e| e.into_inner());
            if p.pool.stopping.load(Ordering::Acquire) || self.stopped.load(Ordering::Acquire) {
                return Err(RefusedCall(Box::new(RefusedJob::Procedure(job))));
            }
            return match sender.send(Some(job)) {
                Ok(()) => Ok(()),
                Err(mpsc::SendError(Some(job))) => Err(RefusedCall(Box::new(RefusedJob::Procedure(job)))),
                // Invariant: what was sent is what comes back, and it was `Some`.
                Err(mpsc::SendError(None)) => unreachable!("a refused send gives back the job sent"),
            };
        }
        let job =
            Job::CallProcedure { procedure: procedure.to_string(), caller: caller.clone(), args, reply };
        self.queue(job).map_err(|job| RefusedCall(Box::new(RefusedJob::Job(job))))
    }

    /// Calls a procedure; returns once its commits are durable.
    pub fn call_procedure(
        &self,
        procedure: &str,
        caller: &CallerInfo,
        args: ReducerArgs,
    ) -> Result<ProcedureOutcome, HostError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.call_procedure_then(procedure, caller, args, move |outcome| {
            let _ = tx.send(outcome);
        });
        rx.recv().map_err(|_| HostError::Runtime("the database thread stopped".into()))?
    }

    /// Runs `client_connected` (if the module has one).
    pub fn client_connected(&self, caller: &CallerInfo) -> Result<Option<ReducerOutcome>, HostError> {
        let caller = caller.clone();
        let outcome = self.send(|reply| Job::Connected { caller, reply })?;
        self.wait_durable(outcome.as_ref().and_then(|o| o.ticket))?;
        Ok(outcome)
    }

    /// Runs `client_disconnected` (if the module has one).
    pub fn client_disconnected(&self, caller: &CallerInfo) -> Result<Option<ReducerOutcome>, HostError> {
        let caller = caller.clone();
        let outcome = self.send(|reply| Job::Disconnected { caller, reply })?;
        self.wait_durable(outcome.as_ref().and_then(|o| o.ticket))?;
        Ok(outcome)
    }

    /// Runs `f` in a write transaction on the database thread (e.g. SQL DML): commits if it
    /// returns `Ok`, rolls back otherwise. Returns once the commit is durable.
    pub fn write(
        &self,
        f: impl FnOnce(&mut lightcone_mvcc::WriteTx<'_>) -> Result<(), String> + Send + 'static,
    ) -> Result<Arc<TxDelta>, HostError> {
        let (delta, ticket) = self.send(|reply| Job::Write { f: Box::new(f), reply })?;
        self.wait_durable(ticket)?;
        Ok(delta)
    }

    /// Makes `sender`'s rows of the sender-bound views `views` (indexes into the spec's views)
    /// present before `sender` reads them; pair with [`DatabaseHandle::release_views`]. Returns
    /// once they are committed (visible to snapshots; the rows are derived, so nobody waits for
    /// the disk).
    pub fn acquire_views(&self, sender: [u8; 32], views: Vec<usize>) -> Result<(), HostError> {
        if views.is_empty() {
            return Ok(());
        }
        self.send(|reply| Job::Views { sender, views, acquire: true, reply }).map(drop)
    }

    /// Drops a reader of `views` for `sender`; the last one's leaving deletes those rows.
    pub fn release_views(&self, sender: [u8; 32], views: Vec<usize>) -> Result<(), HostError> {
        if views.is_empty() {
            return Ok(());
        }
        self.send(|reply| Job::Views { sender, views, acquire: false, reply }).map(drop)
    }

    /// Holds back the announcement of further commits until the guard is dropped, so that a
    /// reply built meanwhile from the state the announced commits left (a subscription's
    /// initial rows) goes out after everything they sent and before anything later sends.
    /// Never wait for the database thread while holding it: the thread needs it to announce.
    pub fn hold_commits(&self) -> CommitsHeld<'_> {
        CommitsHeld { _sequence: self.outgoing.sequence(), outgoing: &self.outgoing }
    }

    /// The latest committed state (never blocks the writer for long; see mvcc).
    pub fn snapshot(&self) -> Snapshot {
        self.db.snapshot()
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    pub fn logs(&self) -> &Arc<ModuleLogs> {
        &self.logs
    }

    pub fn spec(&self) -> &Arc<ModuleSpec> {
        &self.spec
    }

    /// The commit hooks (shared with later handles of the same database).
    pub fn hooks(&self) -> &Arc<CommitHooks> {
        &self.hooks
    }

    /// Every later commit is sent to the returned receiver, in commit order.
    pub fn commits(&self) -> Receiver<CommitEvent> {
        let (tx, rx) = mpsc::channel();
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    /// Whether a call sent now is answered as soon as it has run: nothing else is queued
    /// before it and no commit waits for an fsync. (A server may then wait briefly for the
    /// answer instead of going to sleep and being woken for it.)
    pub fn answers_promptly(&self) -> bool {
        self.queued_jobs.load(Ordering::Relaxed) <= 1
            && self.log.as_ref().is_none_or(|l| l.durability() != lightcone_wal::Durability::Fsync)
    }

    /// Whether [`DatabaseHandle::shutdown`] has begun (calls queued after it are refused).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// After [`DatabaseHandle::shutdown`]: who read which sender-bound views when this version
    /// stopped, for the version that follows ([`Start::PublishCompiled`]). Taken once.
    pub fn take_view_readers(&self) -> ViewReaders {
        std::mem::take(&mut *self.left_readers.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Stops the thread after the calls queued before this one, and flushes the log.
    /// Procedure calls queued but not started yet are answered with [`HostError::ShutDown`].
    pub fn shutdown(&self) {
        for call in self.shutdown_for_update() {
            call.refuse();
        }
    }

    /// [`DatabaseHandle::shutdown`], handing back the procedure calls not started yet, to be
    /// queued on the version that follows ([`RefusedCall::requeue`]) or refused. Each must be
    /// one or the other: its caller waits for an answer.
    pub fn shutdown_for_update(&self) -> Vec<RefusedCall> {
        // Procedures first: a running one may still need the database thread for its turn.
        let unstarted = self.procedures.as_ref().map(|p| p.stop()).unwrap_or_default();
        {
            let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            if !self.stopped.swap(true, Ordering::AcqRel) {
                self.queued_jobs.fetch_add(1, Ordering::Relaxed);
                let _ = jobs.send(Job::Shutdown);
            }
        }
        // A second caller waits here (the lock is held while joining) until the thread is gone.
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            if let Ok(readers) = t.join() {
                *self.left_readers.lock().unwrap_or_else(|p| p.into_inner()) = readers;
            }
            if let Some(log) = &self.log {
                let _ = log.flush();
            }
            // Every answer and update of this version is out before a next version (or the
            // process's exit) follows.
            self.outgoing.drain();
        }
        unstarted
    }
}

/// See [`DatabaseHandle::hold_commits`].
pub struct CommitsHeld<'h> {
    _sequence: std::sync::MutexGuard<'h, ()>,
    outgoing: &'h Notifier,
}

impl CommitsHeld<'_> {
    /// Runs `send` once the state at `tx_offset` (announced already) is durable, after
    /// everything the commits announced so far sent and before anything later ones send:
    /// at once when nothing is waiting, else on the durability notifier's thread. `send` gets
    /// the error if the state could not be made durable.
    pub fn send_after(&self, tx_offset: u64, send: Delivery) {
        let ticket = lightcone_wal::Ticket(tx_offset);
        self.outgoing.send_in_order(Some(ticket), false, Pending::Other(ticket, send));
    }
}

impl Drop for DatabaseHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A procedure call queued for the procedure thread.
struct ProcedureJob {
    target: ProcedureTarget,
    caller: CallerInfo,
    reply: ProcedureReply,
}

enum ProcedureTarget {
    /// A client's call, by name (checked and encoded on the procedure thread).
    Call { procedure: String, args: ReducerArgs },
    /// A scheduled procedure, by id, with its row as the BSATN argument.
    Scheduled { id: usize, args: Vec<u8> },
}

/// Most threads running one database's procedures at once (each with a module instance of
/// its own): procedures that sleep or wait for HTTP answers run side by side, as upstream
/// runs them, up to this many.
pub const MAX_PROCEDURE_THREADS: usize = 4;

/// The threads running a database's procedures, beside the database thread, so that one
/// sleeping or waiting for an HTTP answer holds up no reducer. Jobs are taken in arrival
/// order; a thread that takes one while no other thread is free starts another (up to
/// [`MAX_PROCEDURE_THREADS`]), so a waiting procedure holds up the next one only when all
/// are busy. Their transactions take turns with the database thread (`Job::ProcedureTurn`),
/// which announces their commits in order with its own.
struct ProcedureThread {
    pool: Arc<ProcedurePool>,
}

/// The database thread's job queue, as the procedure threads send to it.
struct DbJobs {
    jobs: Mutex<Sender<Job>>,
    /// The database thread's count of jobs sent and not yet taken.
    queued: Arc<AtomicUsize>,
}

impl DbJobs {
    /// Sends `job`; false if the database thread is gone.
    fn send(&self, job: Job) -> bool {
        self.queued.fetch_add(1, Ordering::Relaxed);
        let sent = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).send(job).is_ok();
        if !sent {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }
}

/// What every procedure thread shares.
struct ProcedurePool {
    /// Taken by one free thread at a time. `None` once stopped: sends fail from then on, so
    /// late callers are answered at once.
    jobs: Mutex<Option<Receiver<Option<ProcedureJob>>>>,
    /// Jobs for the threads; `None` asks them to stop (each passes it on to the next).
    sender: Mutex<Sender<Option<ProcedureJob>>>,
    seed: ProcedureSeed,
    gate: TxGate,
    db_jobs: Arc<DbJobs>,
    /// Where answers go: after the updates of the procedure's own commits.
    outgoing: Notifier,
    /// Threads waiting for a job.
    free: AtomicUsize,
    /// Set by [`ProcedureThread::stop`]: each thread ends after its current procedure.
    stopping: std::sync::atomic::AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Jobs a thread took after the stop began, never started (see [`ProcedureThread::stop`]).
    unstarted: Mutex<Vec<ProcedureJob>>,
}

type ProcedureChannel = (Sender<Option<ProcedureJob>>, Receiver<Option<ProcedureJob>>);

impl ProcedureThread {
    fn spawn(
        seed: ProcedureSeed,
        (tx, rx): ProcedureChannel,
        db_jobs: Sender<Job>,
        queued: Arc<AtomicUsize>,
        outgoing: Notifier,
    ) -> Result<ProcedureThread, HostError> {
        let db_jobs = Arc::new(DbJobs { jobs: Mutex::new(db_jobs), queued });
        let gate: TxGate = {
            let db_jobs = Arc::clone(&db_jobs);
            Arc::new(move || {
                let (grant_tx, grant_rx) = mpsc::sync_channel(1);
                if !db_jobs.send(Job::ProcedureTurn { grant: grant_tx }) {
                    return Err("the database is shut down".to_string());
                }
                grant_rx.recv().map_err(|_| "the database is shut down".to_string())
            })
        };
        let pool = Arc::new(ProcedurePool {
            jobs: Mutex::new(Some(rx)),
            sender: Mutex::new(tx),
            seed,
            gate,
            db_jobs,
            outgoing,
            free: AtomicUsize::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            unstarted: Mutex::new(Vec::new()),
        });
        ProcedurePool::add_thread(&pool, true)?;
        Ok(ProcedureThread { pool })
    }

    /// Lets running procedures finish and ends the threads; procedures still queued are handed
    /// back unstarted, for the next version of the module or to be answered with the error.
    /// (Draining the queue instead could take forever: scheduled procedures keep arriving until
    /// the database thread stops, which comes after this.)
    fn stop(&self) -> Vec<RefusedCall> {
        {
            // Under the sender's lock: a call sent after this sees `stopping` and is handed
            // back unrun (see `try_call_procedure_then`), to be queued on the next version.
            let sender = self.pool.sender.lock().unwrap_or_else(|p| p.into_inner());
            self.pool.stopping.store(true, Ordering::Release);
            let _ = sender.send(None);
        }
        // Threads may still start while the first ones finish their jobs: join until none is left.
        loop {
            let Some(t) = self.pool.threads.lock().unwrap_or_else(|p| p.into_inner()).pop() else { break };
            let _ = t.join();
        }
        // Nobody takes jobs any more: hand back the ones still queued now, and drop the
        // receiver so later sends (through a handle someone still holds) fail and are refused
        // at once, rather than leave their callers waiting forever.
        let mut unstarted =
            std::mem::take(&mut *self.pool.unstarted.lock().unwrap_or_else(|p| p.into_inner()));
        let mut jobs = self.pool.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = jobs.take() {
            unstarted.extend(std::iter::from_fn(|| rx.try_recv().ok()).flatten());
        }
        unstarted.into_iter().map(|job| RefusedCall(Box::new(RefusedJob::Procedure(job)))).collect()
    }
}

impl ProcedurePool {
    /// Starts one more procedure thread (with its own module instance). The first one stays
    /// even if its instance fails to start, answering every job with that error; a later one
    /// just ends then.
    fn add_thread(pool: &Arc<ProcedurePool>, first: bool) -> Result<(), HostError> {
        let mut threads = pool.threads.lock().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock, so two threads adding at once cannot pass the limit.
        if threads.len() >= MAX_PROCEDURE_THREADS || pool.stopping.load(Ordering::Acquire) {
            return Ok(());
        }
        let me = Arc::clone(pool);
        let thread = std::thread::Builder::new()
            .name("lightcone-procedures".into())
            .spawn(move || me.run(first))
            .map_err(|e| HostError::Runtime(format!("cannot start a procedure thread: {e}")))?;
        threads.push(thread);
        Ok(())
    }

    fn run(self: Arc<ProcedurePool>, first: bool) {
        let mut host = self.seed.clone().start(Arc::clone(&self.gate));
        if let (Err(e), false) = (&host, first) {
            let message = format!("an extra procedure instance failed to start: {e}");
            self.seed.logs().host(crate::logs::LogLevel::Error, message);
            return;
        }
        loop {
            self.free.fetch_add(1, Ordering::AcqRel);
            let job = match self.jobs.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                Some(rx) => rx.recv(),
                None => Err(mpsc::RecvError),
            };
            let others_free = self.free.fetch_sub(1, Ordering::AcqRel) - 1;
            let job = match job {
                Ok(Some(job)) if !self.stopping.load(Ordering::Acquire) => job,
                stop => {
                    if let Ok(Some(job)) = stop {
                        // Never started: handed back by `stop`, for the next version.
                        self.unstarted.lock().unwrap_or_else(|p| p.into_inner()).push(job);
                    }
                    // Wake the next thread waiting for a job, which stops too.
                    let _ = self.sender.lock().unwrap_or_else(|p| p.into_inner()).send(None);
                    break;
                }
            };
            if others_free == 0 && host.is_ok() {
                // Best effort: without another thread, the next job waits for this one.
                let _ = ProcedurePool::add_thread(&self, false);
            }
            let ProcedureJob { target, caller, reply } = job;
            let outcome = catch_host_panic("the procedure host", || match &mut host {
                Ok(h) => {
                    let outcome = match target {
                        ProcedureTarget::Call { procedure, args } => {
                            h.call_procedure(&procedure, &caller, args)
                        }
                        ProcedureTarget::Scheduled { id, args } => h.call_procedure_id(id, &caller, args),
                    };
                    outcome.and_then(|o| {
                        h.wait_durable(&o)?;
                        Ok(o)
                    })
                }
                Err(e) => Err(HostError::Runtime(format!("the procedure instance failed to start: {e}"))),
            });
            let outcome = outcome.unwrap_or_else(|message| {
                // A bug of ours, not the module's: the caller gets an error rather than no
                // answer, and the thread carries on (it still counts against the limit) with
                // a fresh instance, as the old one may have stopped mid-call.
                self.seed.logs().host(crate::logs::LogLevel::Error, message.clone());
                host = self.seed.clone().start(Arc::clone(&self.gate));
                Err(HostError::Runtime(message))
            });
            // Its commits were announced (their updates passed on) before its turns ended, and
            // it waited for them to be durable: the answer goes after those updates.
            let ticket = outcome.as_ref().ok().and_then(|o| o.ticket);
            let _sequence = self.outgoing.sequence();
            self.outgoing.send_in_order(ticket, false, Pending::Procedure(outcome, reply));
            drop(_sequence);
            if let Ok(h) = &mut host {
                let calls = h.take_immediate_calls();
                if !calls.is_empty() {
                    self.db_jobs.send(Job::Immediate { calls });
                }
            }
        }
    }
}

/// Runs `f`, turning a panic (a bug in the host, never the module's doing: its traps are
/// errors) into an error message.
fn catch_host_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("internal error: {what} panicked ({message})")
    })
}

/// Marks a scheduled procedure's run ended when dropped.
struct FinishOnDrop(RunningFlag);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Sends the database thread's scheduled procedures to the procedure thread; failures are
/// logged (nobody waits for a scheduled procedure's answer).
fn scheduled_procedure_dispatch(
    jobs: Sender<Option<ProcedureJob>>,
    logs: Arc<ModuleLogs>,
) -> crate::module_host::ProcedureDispatch {
    Box::new(move |id, caller, args, running: RunningFlag| {
        let logs2 = Arc::clone(&logs);
        // Cleared when the job goes, answered or not (a panicking procedure thread drops it).
        let running = FinishOnDrop(running);
        let job = ProcedureJob {
            target: ProcedureTarget::Scheduled { id, args },
            caller,
            reply: Box::new(move |outcome| {
                let _running = &running;
                if let Err(e) = outcome {
                    logs2.host(crate::logs::LogLevel::Error, format!("scheduled procedure #{id}: {e}"));
                }
            }),
        };
        if jobs.send(Some(job)).is_err() {
            logs.host(
                crate::logs::LogLevel::Error,
                format!("scheduled procedure #{id}: the procedure thread is gone"),
            );
        }
    })
}

/// What announcing a commit needs (on the database thread).
#[derive(Clone)]
struct Notify {
    db: Arc<Database>,
    listeners: Arc<Mutex<Vec<Sender<CommitEvent>>>>,
    hooks: Arc<CommitHooks>,
    outgoing: Notifier,
    spec: Arc<ModuleSpec>,
    /// Jobs queued for the database thread: while there are more, sending is left to the
    /// notifier thread.
    queued: Arc<AtomicUsize>,
}

impl Notify {
    fn offload(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > 0
    }
}

/// Tells hooks and listeners about a commit and passes its deliveries to the ordered path;
/// returns the caller's update from the hooks. The caller holds [`Notifier::sequence`] (and
/// keeps holding it while it sends the commit's answer).
fn notify(
    n: &Notify,
    outcome: Option<&ReducerOutcome>,
    delta: &Arc<TxDelta>,
    caller: Option<&CallerInfo>,
) -> Option<Arc<[u8]>> {
    if delta.is_empty() {
        return None;
    }
    // On this thread nothing else writes, so the latest snapshot is exactly the state after
    // this commit.
    notify_at(n, outcome, delta, caller, n.db.snapshot())
}

/// [`notify`], with the state right after the commit given.
fn notify_at(
    n: &Notify,
    outcome: Option<&ReducerOutcome>,
    delta: &Arc<TxDelta>,
    caller: Option<&CallerInfo>,
    after: Snapshot,
) -> Option<Arc<[u8]>> {
    if delta.is_empty() {
        return None;
    }
    let event = CommitEvent {
        delta: Arc::clone(delta),
        after,
        reducer: outcome.map(|o| o.reducer.clone()),
        caller: caller.cloned(),
        spec: Arc::clone(&n.spec),
        client_epoch: n.hooks.client_epoch(),
    };
    let (caller_update, deliveries) = n.hooks.run(&event);
    if !deliveries.is_empty() {
        // A non-empty delta is in the log under its own offset (mvcc commits append it).
        let ticket = lightcone_wal::Ticket(delta.tx_offset);
        n.outgoing.send_in_order(Some(ticket), n.offload(), Pending::Deliveries(ticket, deliveries));
    }
    let mut ls = n.listeners.lock().unwrap_or_else(|p| p.into_inner());
    ls.retain(|l| l.send(event.clone()).is_ok());
    caller_update
}

/// Announces a commit nobody waits an answer for, in sequence.
fn announce(n: &Notify, outcome: Option<&ReducerOutcome>, delta: &Arc<TxDelta>) {
    let _sequence = n.outgoing.sequence();
    notify(n, outcome, delta, None);
}

/// Runs the commit hooks for a caller's outcome, keeping the caller's own update in it. The
/// caller holds [`Notifier::sequence`].
fn notify_caller(n: &Notify, outcome: &mut ReducerOutcome, caller: &CallerInfo) {
    let delta = Arc::clone(&outcome.delta);
    outcome.caller_update = notify(n, Some(outcome), &delta, Some(caller));
}

/// Something that goes out after a commit, with where it goes.
enum Pending {
    Reducer(Result<ReducerOutcome, HostError>, AsyncReply),
    Procedure(Result<ProcedureOutcome, HostError>, ProcedureReply),
    /// A commit's updates to subscribers (see [`HookOutput::deliver`]).
    Deliveries(lightcone_wal::Ticket, Vec<Delivery>),
    /// Anything else that must follow the commits before it (see
    /// [`CommitsHeld::send_after`]).
    Other(lightcone_wal::Ticket, Delivery),
}

impl Pending {
    fn ticket(&self) -> Option<lightcone_wal::Ticket> {
        match self {
            Pending::Reducer(o, _) => o.as_ref().ok().and_then(|o| o.ticket),
            Pending::Procedure(o, _) => o.as_ref().ok().and_then(|o| o.ticket),
            Pending::Deliveries(t, _) | Pending::Other(t, _) => Some(*t),
        }
    }

    /// Answers, with `waited`'s error in place of a successful outcome.
    fn answer(self, waited: &Result<(), HostError>) {
        fn merge<T>(waited: &Result<(), HostError>, outcome: Result<T, HostError>) -> Result<T, HostError> {
            match (waited, outcome) {
                (Ok(()), outcome) => outcome,
                (Err(e), Ok(_)) => Err(e.clone()),
                (Err(_), Err(e)) => Err(e),
            }
        }
        match self {
            Pending::Reducer(o, reply) => reply(merge(waited, o)),
            Pending::Procedure(o, reply) => reply(merge(waited, o)),
            Pending::Deliveries(_, deliveries) => {
                for deliver in deliveries {
                    // One failing (a bug) must not cost the other clients their update.
                    if let Err(panic) = catch_host_panic("an update", || deliver(waited.as_ref().copied())) {
                        tracing::error!("{panic}");
                    }
                }
            }
            Pending::Other(_, deliver) => deliver(waited.as_ref().copied()),
        }
    }
}

/// Sends what follows commits — callers' answers, subscribers' updates, subscription replies —
/// in commit order, each once its commit is durable: straight away when nothing is waiting,
/// else on the durability notifier's thread (see [`spawn_notifier`]), which waits for the log
/// and sends in the order things were handed to it. One per database, across module updates.
///
/// Order needs two rules. Whoever passes something on holds [`Notifier::sequence`], and the
/// database thread holds it from announcing a commit until that commit's answer is passed
/// on: so everything of one commit is passed on before anything of the next, and a
/// subscription reply (built under the same lock) sits between the commits it follows and
/// those it precedes. And nothing is sent directly while anything handed over is still
/// waiting, so nothing overtakes it.
#[derive(Clone)]
struct Notifier {
    tx: Sender<Pending>,
    /// Items handed over and not yet sent.
    pending: Arc<AtomicUsize>,
    log: Option<Arc<CommitLog>>,
    sequence: Arc<Mutex<()>>,
}

impl Notifier {
    /// Held while passing things on (see [`Notifier`]).
    fn sequence(&self) -> std::sync::MutexGuard<'_, ()> {
        self.sequence.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether what follows the commit of `ticket` goes through the notifier thread rather than
    /// straight out: when its commit is not yet durable in `fsync` mode, when anything handed
    /// over earlier is still there (so nothing overtakes it), and with `offload` (the database
    /// thread has more jobs queued: sending wakes the receiver's task, which it then need not
    /// pay for).
    fn must_hand_over(&self, ticket: Option<lightcone_wal::Ticket>, offload: bool) -> bool {
        let must_wait = |t: lightcone_wal::Ticket| {
            self.log.as_ref().is_some_and(|l| {
                l.durability() == lightcone_wal::Durability::Fsync && l.durable_offset() < t.0
            })
        };
        offload || self.pending.load(Ordering::Acquire) > 0 || ticket.is_some_and(must_wait)
    }

    /// Sends `item` now if [`Notifier::must_hand_over`] allows, else hands it to the notifier
    /// thread. The caller holds [`Notifier::sequence`].
    fn send_in_order(&self, ticket: Option<lightcone_wal::Ticket>, offload: bool, item: Pending) {
        if self.must_hand_over(ticket, offload) {
            self.hand_over(item);
        } else if let Err(panic) = catch_host_panic("sending an answer", || item.answer(&Ok(()))) {
            // A reply that panics (a bug) must not take the database thread with it.
            tracing::error!("{panic}");
        }
    }

    /// Sends on the notifier thread (after the commit is durable).
    fn hand_over(&self, pending: Pending) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(pending)) = self.tx.send(pending) {
            // The notifier thread is gone (it could not start): wait here instead, so nothing
            // goes out before it is durable.
            let waited = wait_for(&self.log, pending.ticket());
            pending.answer(&waited);
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Returns once everything handed over so far has been sent (bounded: a notifier stuck on
    /// a failing disk does not hold up a shutdown for ever).
    fn drain(&self) {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let marker: Delivery = Box::new(move |_| {
            let _ = done_tx.send(());
        });
        self.hand_over(Pending::Other(lightcone_wal::Ticket(0), marker));
        let _ = done_rx.recv_timeout(Duration::from_secs(30));
    }
}

/// Waits until `ticket`'s commit is durable (at once without a log or a ticket).
fn wait_for(log: &Option<Arc<CommitLog>>, ticket: Option<lightcone_wal::Ticket>) -> Result<(), HostError> {
    match (log, ticket) {
        (Some(log), Some(t)) => log.wait(t).map_err(|e| HostError::Durability(e.to_string())),
        _ => Ok(()),
    }
}

/// A thread that answers asynchronous callers and sends subscribers' updates once their
/// commits are durable: it waits for the newest ticket among everything queued (one wait
/// covers many commits: group commit). Under load it also takes the sending itself off the
/// database thread (see [`Notifier::must_hand_over`]).
fn spawn_notifier(log: Option<Arc<CommitLog>>) -> Notifier {
    let (tx, rx) = mpsc::channel::<Pending>();
    let pending = Arc::new(AtomicUsize::new(0));
    let answered = Arc::clone(&pending);
    let wait_log = log.clone();
    let spawned = std::thread::Builder::new().name("lightcone-durable".into()).spawn(move || {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter());
            let waited = wait_for(&wait_log, batch.iter().filter_map(Pending::ticket).max());
            let count = batch.len();
            for pending in batch {
                // A reply that panics (a bug) must not take every later answer with it.
                if let Err(panic) =
                    catch_host_panic("sending an answer or update", || pending.answer(&waited))
                {
                    tracing::error!("{panic}");
                }
            }
            // Only after everything is out: the database thread may send directly again.
            answered.fetch_sub(count, Ordering::AcqRel);
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the durability notifier: {e}");
    }
    Notifier { tx, pending, log, sequence: Arc::default() }
}

/// How long the database thread keeps looking for its next job before it sleeps. A client
/// waiting for its answer sends the next call one round trip later; sleeping in between costs
/// a futex wake-up on both sides, which on the 2-core VM measured ~60 µs of a 120 µs round
/// trip (100 µs of polling brought an empty call's round trip over WebSocket from 114–128 µs to
/// 50 µs). While it polls it mostly spins and now and then yields the core
/// ([`POLLS_PER_YIELD`]), so other threads still get it.
const IDLE_POLL: Duration = Duration::from_micros(100);

/// The database thread's side of the job queue.
struct Jobs {
    rx: Receiver<Job>,
    queued: Arc<AtomicUsize>,
}

/// Queue polls between two yields of the core while idle-polling.
const POLLS_PER_YIELD: u32 = 32;

/// The next job: polled for [`IDLE_POLL`], then waited for until `timeout`.
fn next_job(jobs: &Jobs, timeout: Duration) -> Result<Job, RecvTimeoutError> {
    let taken = |job| {
        jobs.queued.fetch_sub(1, Ordering::Relaxed);
        Ok(job)
    };
    let polling = Instant::now();
    let mut polls = 0u32;
    while polling.elapsed() < IDLE_POLL.min(timeout) {
        match jobs.rx.try_recv() {
            Ok(job) => return taken(job),
            // Mostly spinning (a yield is a system call, ~1 µs here), yielding now and then
            // so that a thread waiting for this core gets it.
            Err(mpsc::TryRecvError::Empty) => {
                polls += 1;
                if polls.is_multiple_of(POLLS_PER_YIELD) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
        }
    }
    jobs.rx.recv_timeout(timeout.saturating_sub(polling.elapsed())).and_then(taken)
}

fn run(
    mut host: ModuleHost,
    jobs: Jobs,
    listeners: Arc<Mutex<Vec<Sender<CommitEvent>>>>,
    hooks: Arc<CommitHooks>,
    outgoing: Notifier,
    ready: impl FnOnce() -> bool,
) -> ViewReaders {
    let n = Notify {
        db: Arc::clone(host.database()),
        listeners,
        hooks,
        outgoing,
        spec: Arc::clone(host.spec()),
        queued: Arc::clone(&jobs.queued),
    };
    {
        // A procedure's own commits are announced as they happen, like SQL writes.
        let n = n.clone();
        host.set_commit_observer(Arc::new(move |delta: &Arc<TxDelta>| announce(&n, None, delta)));
    }
    host.defer_immediate_calls();
    let outgoing = &n.outgoing;
    // What publishing or opening committed (a new version's recomputed views, cleared
    // sender-bound views) reaches the subscriptions that go on across an update; before the
    // handle is out, so listeners it gets never see them.
    for (delta, after) in host.take_startup_commits() {
        let _sequence = outgoing.sequence();
        notify_at(&n, None, &delta, None, after);
    }
    if !ready() {
        return host.view_readers();
    }
    loop {
        let timeout = match host.next_scheduled() {
            Some(due) => Duration::from_micros(due.saturating_sub(now_micros()).max(0) as u64),
            None => Duration::from_secs(3600),
        };
        let job = match next_job(&jobs, timeout) {
            Ok(job) => Some(job),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return host.view_readers(),
        };
        match job {
            None => {}
            // Who reads which sender-bound views goes to the version that follows, if any.
            Some(Job::Shutdown) => return host.view_readers(),
            Some(Job::Call { reducer, caller, args, reply }) => {
                let mut result = host.call_reducer(&reducer, &caller, args);
                if let Ok(o) = &mut result {
                    let _sequence = outgoing.sequence();
                    notify_caller(&n, o, &caller);
                }
                let _ = reply.send(result);
            }
            Some(Job::CallAsync { reducer, caller, args, reply }) => {
                let mut result = host.call_reducer(&reducer, &caller, args);
                // The commit's updates and its answer are passed on together.
                let _sequence = outgoing.sequence();
                if let Ok(o) = &mut result {
                    notify_caller(&n, o, &caller);
                }
                let ticket = result.as_ref().ok().and_then(|o| o.ticket);
                outgoing.send_in_order(ticket, n.offload(), Pending::Reducer(result, reply));
            }
            Some(Job::CallProcedure { procedure, caller, args, reply }) => {
                // Its commits were announced by the observer as they happened.
                let result = host.call_procedure(&procedure, &caller, args);
                let ticket = result.as_ref().ok().and_then(|o| o.ticket);
                let _sequence = outgoing.sequence();
                outgoing.send_in_order(ticket, n.offload(), Pending::Procedure(result, reply));
            }
            Some(Job::Connected { caller, reply }) => {
                let mut result = host.client_connected(&caller);
                if let Ok(Some(o)) = &mut result {
                    let _sequence = outgoing.sequence();
                    notify_caller(&n, o, &caller);
                }
                let _ = reply.send(result);
            }
            Some(Job::Disconnected { caller, reply }) => {
                let mut result = host.client_disconnected(&caller);
                if let Ok(Some(o)) = &mut result {
                    let _sequence = outgoing.sequence();
                    notify_caller(&n, o, &caller);
                }
                let _ = reply.send(result);
            }
            Some(Job::ProcedureTurn { grant }) => {
                let (done_tx, done_rx) = mpsc::sync_channel(1);
                let (announced_tx, announced_rx) = mpsc::sync_channel(1);
                if grant.send(TxTurn::new(done_tx, announced_rx)).is_ok() {
                    // The procedure's transaction runs now; nothing else writes meanwhile.
                    if let Ok(Some((delta, ticket))) = done_rx.recv() {
                        announce(&n, None, &delta);
                        match host.absorb_procedure_commit(delta, ticket) {
                            Ok(Some(refresh)) => announce(&n, None, &refresh),
                            Ok(None) => {}
                            Err(e) => host.logs().host(
                                crate::logs::LogLevel::Error,
                                format!("after a procedure's commit: {e}"),
                            ),
                        }
                        let _ = announced_tx.send(());
                    }
                }
            }
            Some(Job::Immediate { calls }) => host.queue_immediate_calls(calls),
            Some(Job::Views { sender, views, acquire, reply }) => {
                let result = if acquire {
                    host.acquire_views(sender, &views)
                } else {
                    host.release_views(sender, &views)
                };
                let result = result.map(|(delta, _)| {
                    announce(&n, None, &delta);
                    delta
                });
                let _ = reply.send(result);
            }
            Some(Job::Write { f, reply }) => {
                let result = host.write(f);
                if let Ok((delta, _)) = &result {
                    announce(&n, None, delta);
                }
                let _ = reply.send(result);
            }
        }
        host.run_due_with(now_micros(), |o| announce(&n, Some(&o), &o.delta));
        // `schedule_immediate` calls run after the commit that asked was announced, each
        // announced before the next commits (bounded rounds: a call may queue more).
        for _ in 0..MAX_IMMEDIATE_ROUNDS {
            if host.run_immediate_calls(|o| announce(&n, Some(&o), &o.delta)) == 0 {
                break;
            }
        }
    }
}

/// Rounds of `schedule_immediate` calls run after one job (calls queued by the last round wait
/// for the next job or timer tick).
const MAX_IMMEDIATE_ROUNDS: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    // Proves hooks can be unregistered (a retired subscription hub removes its own), each by
    // its id, from both the commit and the retire lists.
    #[test]
    fn hooks_are_removed_by_id() {
        let hooks = CommitHooks::default();
        let a = hooks.add(Arc::new(|_: &CommitEvent| HookOutput::default()));
        let b = hooks.add(Arc::new(|_: &CommitEvent| HookOutput::default()));
        let retired = Arc::new(AtomicUsize::new(0));
        let r = {
            let retired = Arc::clone(&retired);
            hooks.on_retire(Arc::new(move |_: &str| {
                retired.fetch_add(1, Ordering::Relaxed);
            }))
        };
        let ids = |h: &CommitHooks| h.hooks.lock().unwrap().iter().map(|(id, _)| *id).collect::<Vec<_>>();
        assert_eq!(ids(&hooks), [a, b]);
        hooks.remove(a);
        assert_eq!(ids(&hooks), [b]);
        hooks.retire_clients("first");
        assert_eq!(retired.load(Ordering::Relaxed), 1);
        assert_eq!(hooks.client_epoch(), 1);
        hooks.remove(r);
        hooks.retire_clients("second");
        assert_eq!(retired.load(Ordering::Relaxed), 1, "a removed retire hook is not called");
        assert_eq!(hooks.client_epoch(), 2);
    }

    // Proves a panic in the host's procedure path becomes an error naming it (what the caller
    // then gets instead of a dropped reply), and a normal result passes through untouched.
    #[test]
    fn a_host_panic_becomes_an_error_message() {
        assert_eq!(catch_host_panic("adding", || 7), Ok(7));
        let err =
            catch_host_panic("the procedure host", || -> u32 { panic!("row {} vanished", 3) }).unwrap_err();
        assert!(err.contains("procedure host panicked (row 3 vanished)"), "{err}");
        let err = catch_host_panic("x", || -> u32 { std::panic::panic_any(5u8) }).unwrap_err();
        assert!(err.contains("no message"), "{err}");
    }
}
