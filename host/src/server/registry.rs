//! The databases of one data directory: `<root>/databases/<identity hex>/` holds `meta.json`
//! (name, identity, owner) and the engine's data (`data/log`, `data/snapshots`). Opening the
//! registry restarts every database; publish, update and delete go through here.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lightcone_mvcc::Database;
use lightcone_wal::{CommitLog, Durability, LogOptions};
use serde::{Deserialize, Serialize};

use super::auth::Identity;
use crate::module_host::{HostConfig, PublishReport};
use crate::runtime::WasmEngine;
use crate::worker::{DatabaseHandle, RefusedCall, Start};
use crate::HostError;

/// A database name: what `publish <name>` accepts.
pub const MAX_NAME_BYTES: usize = 64;
/// A database is snapshotted (and its log compacted) once this many transactions committed
/// since its last snapshot, so restart time stays bounded. Override: the environment variable
/// `LIGHTCONE_SNAPSHOT_EVERY_TXS`.
pub const SNAPSHOT_EVERY_TXS: u64 = 100_000;
/// How often the snapshot policy is checked. Override: `LIGHTCONE_SNAPSHOT_CHECK_MS`.
pub const SNAPSHOT_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DbMeta {
    pub name: Option<String>,
    /// Big-endian hex.
    pub identity: String,
    pub owner: String,
    pub created_at_micros: i64,
}

/// Sender-bound views held materialized for a reader ([`HostedDb::acquire_views`]): the
/// client epoch ([`CommitHooks::client_epoch`]) they were acquired in and the views' names. An
/// update that keeps clients connected hands its readers to the next version, which they are
/// then released on; one that disconnects them starts the next version with none and bumps
/// the epoch, so views held before it are released nowhere.
///
/// [`CommitHooks::client_epoch`]: crate::worker::CommitHooks::client_epoch
#[derive(Debug, Clone, Default)]
pub struct HeldViews {
    epoch: u64,
    names: Vec<String>,
}

/// Longest a call, query or closing session waits for a module update in progress to bring
/// up the next version.
pub const UPDATE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a caller waiting through an update looks again without being woken (a version
/// that stops while installed signals nothing).
const SWAP_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// One running database.
pub struct HostedDb {
    pub meta: DbMeta,
    pub dir: PathBuf,
    db: Arc<Database>,
    log: Arc<CommitLog>,
    handle: Mutex<Option<Arc<DatabaseHandle>>>,
    /// Signalled when a version is installed in `handle` or the database stops, for callers
    /// waiting through an update: blocking ones on the condvar (with `handle`'s lock), async
    /// ones on the `Notify`.
    swapped: (std::sync::Condvar, tokio::sync::Notify),
    /// Commit hooks (subscriptions), kept across module updates.
    pub hooks: Arc<crate::worker::CommitHooks>,
    stopped: std::sync::atomic::AtomicBool,
}

impl HostedDb {
    /// The running module's handle (absent only while an update swaps it).
    pub fn handle(&self) -> Option<Arc<DatabaseHandle>> {
        self.handle.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn identity(&self) -> Identity {
        // Invariant: meta.identity is written by this module from an Identity.
        Identity::from_hex(&self.meta.identity).expect("stored identity is valid hex")
    }

    pub fn owner(&self) -> Identity {
        Identity::from_hex(&self.meta.owner).expect("stored owner is valid hex")
    }

    /// A running module version's handle, waiting (up to `limit`) while a module update swaps
    /// versions: blocks, so only for blocking threads. `None` if the database stopped for good
    /// or no version came up in time.
    pub fn running_handle(&self, limit: std::time::Duration) -> Option<Arc<DatabaseHandle>> {
        let start = std::time::Instant::now();
        let mut handle = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Stopped for good first: while a deleted database's handle shuts down it is not
            // marked stopped yet, and handing it out again would spin a caller it refuses.
            if self.is_stopped() || start.elapsed() >= limit {
                return None;
            }
            match handle.as_ref() {
                Some(h) if !h.is_stopped() => return Some(Arc::clone(h)),
                _ => {
                    // Woken when the next version is installed; the bound covers a handle
                    // that stops while installed, which signals nothing here.
                    let wait = limit.saturating_sub(start.elapsed()).min(SWAP_CHECK_INTERVAL);
                    handle = self.swapped.0.wait_timeout(handle, wait).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
    }

    /// [`HostedDb::running_handle`] for async callers: waits without blocking a thread.
    pub async fn running_handle_async(&self, limit: std::time::Duration) -> Option<Arc<DatabaseHandle>> {
        let start = std::time::Instant::now();
        loop {
            // Registered before the check, so an installation right after it still wakes us.
            let swapped = self.swapped.1.notified();
            if self.is_stopped() || start.elapsed() >= limit {
                return None;
            }
            match self.handle() {
                Some(h) if !h.is_stopped() => return Some(h),
                _ => {
                    let wait = limit.saturating_sub(start.elapsed()).min(SWAP_CHECK_INTERVAL);
                    let _ = tokio::time::timeout(wait, swapped).await;
                }
            }
        }
    }

    /// Materializes sender-bound views `views` (indexes into `handle`'s spec) for `identity` on
    /// `handle`; what comes back is released with [`HostedDb::release_views`].
    pub fn acquire_views(
        &self,
        handle: &DatabaseHandle,
        identity: [u8; 32],
        views: Vec<usize>,
    ) -> Result<HeldViews, HostError> {
        // Read before acquiring: a version that bumps the epoch does so before it runs, so
        // this is the epoch of `handle` or an older one (see `release_views`).
        let epoch = self.hooks.client_epoch();
        let names =
            views.iter().filter_map(|&v| handle.spec().views.get(v)).map(|v| v.name.clone()).collect();
        handle.acquire_views(identity, views)?;
        Ok(HeldViews { epoch, names })
    }

    /// Releases views [`HostedDb::acquire_views`] materialized, on the running version: the
    /// one they were acquired on, or the next, which took over its readers — unless an update
    /// since disconnected clients (the next version then never had them). Waits while an
    /// update is between two versions (blocks, so only for blocking threads); gives up if the
    /// database stopped or no version came up within [`UPDATE_WAIT`].
    pub fn release_views(&self, identity: [u8; 32], held: HeldViews) {
        if held.names.is_empty() {
            return;
        }
        let start = std::time::Instant::now();
        loop {
            let Some(handle) = self.running_handle(UPDATE_WAIT.saturating_sub(start.elapsed())) else {
                return;
            };
            // After the handle: a version that bumped the epoch did so before it ran.
            if self.hooks.client_epoch() != held.epoch {
                return;
            }
            // By name: the views' positions may differ between versions.
            let views = held
                .names
                .iter()
                .filter_map(|n| handle.spec().views.iter().position(|v| &v.name == n))
                .collect();
            match handle.release_views(identity, views) {
                // Stopped meanwhile (it is not handed out again): the next version has them.
                Err(HostError::ShutDown) => continue,
                _ => return,
            }
        }
    }

    /// Installs the running version and wakes the callers waiting for one.
    fn install(&self, handle: Option<Arc<DatabaseHandle>>) {
        *self.handle.lock().unwrap_or_else(|p| p.into_inner()) = handle;
        self.swapped.0.notify_all();
        self.swapped.1.notify_waiters();
    }

    /// Whether the database was stopped (deleted, or the server is shutting down).
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn stop(&self) {
        self.stopped.store(true, std::sync::atomic::Ordering::Relaxed);
        // Not under the lock: the shutdown waits for the database thread's queued jobs, whose
        // commits run the hooks, and the subscription hub's looks the module up here (holding
        // the lock deadlocked a server shutting down under load). Nor taken out first, or the
        // hub would take those commits for a module update and ask its clients to reconnect.
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(h) = handle {
            h.shutdown();
        }
        self.install(None); // waiters see `stopped` and give up
                            // Its clients would wait for ever otherwise: no commit will tell them.
        self.hooks.retire_clients("the database was stopped or deleted");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("database `{0}` belongs to another identity")]
    PermissionDenied(String),
    #[error("no database named `{0}`")]
    NotFound(String),
    #[error("invalid database name `{0}`: use 1-64 characters of a-z, 0-9, `-` and `_`")]
    BadName(String),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{0}")]
    Io(String),
    /// The update would disconnect every client and the publisher did not acknowledge it
    /// (upstream's `MigrationPolicyError`).
    #[error("{0}")]
    BreaksClients(String),
}

/// Whether a publish may disconnect clients (upstream's `MigrationPolicy`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MigrationPolicy {
    /// Refuse an update that would disconnect clients.
    #[default]
    Compatible,
    /// Allow it: the token from [`Registry::pre_publish`] for this exact update.
    BreakClients(String),
}

/// What [`Registry::pre_publish`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrePublish {
    /// The update keeps the data. `token` acknowledges it when it breaks clients.
    Auto { plan: crate::module_host::UpdatePlan, token: String },
    /// The data cannot be kept: why.
    Manual { reason: String },
}

/// Acknowledges one update (database, old program, new program): a safeguard against
/// publishing a client-breaking change unawares, not a secret. Shaped like upstream's, a
/// `0x`-hex u256 with no leading zero, so the official CLI passes it back unchanged.
fn migration_token(database: &str, plan: &crate::module_host::UpdatePlan) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"lightcone migration token\0");
    h.update(database.as_bytes());
    h.update(&plan.old_program_hash);
    h.update(&plan.new_program_hash);
    let mut bytes = *h.finalize().as_bytes();
    bytes[0] |= 0x10; // a leading digit that is never 0
    format!("0x{}", hex::encode(bytes))
}

/// Tokens compared as the numbers they are (`0x` and leading zeros aside).
fn same_token(a: &str, b: &str) -> bool {
    let norm = |t: &str| t.trim().trim_start_matches("0x").trim_start_matches('0').to_ascii_lowercase();
    norm(a) == norm(b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOp {
    Created,
    Updated,
}

pub struct Registry {
    root: PathBuf,
    engine: Arc<WasmEngine>,
    durability: Durability,
    dbs: Mutex<HashMap<String, Arc<HostedDb>>>,
    names: Mutex<HashMap<String, String>>,
    /// Publishes, updates and deletes one at a time. True once the server shut down: nothing
    /// is published after that (a database created then would never be stopped or flushed).
    admin: Mutex<bool>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Io(format!("{}: {e}", path.display()))
}

fn write_meta(dir: &Path, meta: &DbMeta) -> Result<(), RegistryError> {
    let path = dir.join("meta.json");
    let tmp = dir.join("meta.json.tmp");
    // Invariant: DbMeta always serializes.
    let text = serde_json::to_vec_pretty(meta).expect("meta serializes");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(&text).and_then(|_| f.sync_all()).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))
}

/// Snapshots a database in the background whenever [`SNAPSHOT_EVERY_TXS`] transactions have
/// committed since the last snapshot, then drops the log segments it covers.
fn spawn_snapshotter(db: std::sync::Weak<HostedDb>) {
    let every = env_u64("LIGHTCONE_SNAPSHOT_EVERY_TXS").unwrap_or(SNAPSHOT_EVERY_TXS).max(1);
    let interval = env_u64("LIGHTCONE_SNAPSHOT_CHECK_MS")
        .map(std::time::Duration::from_millis)
        .unwrap_or(SNAPSHOT_CHECK_INTERVAL);
    let spawned = std::thread::Builder::new().name("lightcone-snapshot".into()).spawn(move || {
        let mut last = None;
        loop {
            std::thread::sleep(interval);
            let Some(db) = db.upgrade() else { return };
            if db.stopped.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let data = db.dir.join("data");
            let base = *last.get_or_insert_with(|| {
                lightcone_snapshot::list_snapshots(&data)
                    .ok()
                    .and_then(|v| v.last().map(|(o, _)| *o))
                    .unwrap_or(0)
            });
            let Some(snapshot) = db.db.try_snapshot() else { continue };
            let offset = lightcone_mvcc::ReadTx::tx_offset(&snapshot);
            if offset < base + every {
                continue;
            }
            // The log first: a snapshot never gets ahead of what the log holds durably.
            if let Err(e) = db.log.flush() {
                tracing::error!("snapshot of {}: log flush failed: {e}", db.meta.identity);
                continue;
            }
            match lightcone_snapshot::write_snapshot(&data, &snapshot) {
                Ok(info) => {
                    last = Some(info.tx_offset);
                    match lightcone_snapshot::compact_log(&data, info.tx_offset) {
                        Ok(n) => tracing::info!(
                            "database {}: snapshot at tx {} ({} rows), {n} log segments compacted",
                            db.meta.identity,
                            info.tx_offset,
                            info.rows
                        ),
                        Err(e) => {
                            tracing::error!("database {}: log compaction failed: {e}", db.meta.identity)
                        }
                    }
                }
                Err(e) => tracing::error!("database {}: snapshot failed: {e}", db.meta.identity),
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the snapshot thread: {e}");
    }
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !(name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Registry {
    /// Opens every database under `root` and starts its module.
    pub fn open(
        root: &Path,
        engine: Arc<WasmEngine>,
        durability: Durability,
    ) -> Result<Registry, RegistryError> {
        let dir = root.join("databases");
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let reg = Registry {
            root: root.to_path_buf(),
            engine,
            durability,
            dbs: Mutex::default(),
            names: Mutex::default(),
            admin: Mutex::default(),
        };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| io_err(&dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("meta.json").exists())
            .collect();
        entries.sort();
        for db_dir in entries {
            let meta_path = db_dir.join("meta.json");
            let text = std::fs::read(&meta_path).map_err(|e| io_err(&meta_path, e))?;
            let meta: DbMeta = serde_json::from_slice(&text).map_err(|e| io_err(&meta_path, e))?;
            tracing::info!("opening database {} ({})", meta.name.as_deref().unwrap_or("-"), meta.identity);
            let hosted = reg.start_db(meta, &db_dir, Start::Open)?.0;
            reg.insert(hosted);
        }
        Ok(reg)
    }

    fn insert(&self, hosted: Arc<HostedDb>) {
        if let Some(name) = &hosted.meta.name {
            self.names
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone(), hosted.meta.identity.clone());
        }
        self.dbs.lock().unwrap_or_else(|p| p.into_inner()).insert(hosted.meta.identity.clone(), hosted);
    }

    fn config(meta: &DbMeta) -> HostConfig {
        // Invariant: meta.identity is valid hex (written by this module).
        let id = Identity::from_hex(&meta.identity).expect("valid identity");
        HostConfig { database_identity: id.to_le(), ..HostConfig::default() }
    }

    fn start_db(
        &self,
        meta: DbMeta,
        dir: &Path,
        start: Start,
    ) -> Result<(Arc<HostedDb>, Option<PublishReport>), RegistryError> {
        let data = dir.join("data");
        let options = LogOptions { durability: self.durability, ..LogOptions::default() };
        let (db, log, report) = lightcone_snapshot::open_data_dir(&data, options, |_| {})
            .map_err(|e| RegistryError::Io(format!("{}: {e}", data.display())))?;
        tracing::info!("database {}: recovered in {:?}", meta.identity, report.elapsed);
        let (db, log) = (Arc::new(db), Arc::new(log));
        let config = Self::config(&meta);
        let hooks: Arc<crate::worker::CommitHooks> = Arc::default();
        let (handle, report) = DatabaseHandle::start_with_hooks(
            Arc::clone(&self.engine),
            Arc::clone(&db),
            Some(Arc::clone(&log)),
            config,
            start,
            Arc::clone(&hooks),
        )?;
        let hosted = Arc::new(HostedDb {
            meta,
            dir: dir.to_path_buf(),
            db,
            log,
            handle: Mutex::new(Some(handle)),
            swapped: Default::default(),
            hooks,
            stopped: Default::default(),
        });
        spawn_snapshotter(Arc::downgrade(&hosted));
        Ok((hosted, report))
    }

    /// A database by name or identity hex.
    pub fn resolve(&self, name_or_identity: &str) -> Option<Arc<HostedDb>> {
        let key = name_or_identity.strip_prefix("0x").unwrap_or(name_or_identity).to_ascii_lowercase();
        let id = self
            .names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name_or_identity)
            .cloned()
            .unwrap_or(key);
        self.dbs.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    /// Identities (hex) of the databases `owner` owns.
    pub fn owned_by(&self, owner: Identity) -> Vec<String> {
        let hex = owner.to_hex();
        let mut v: Vec<String> = self
            .dbs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|d| d.meta.owner == hex)
            .map(|d| d.meta.identity.clone())
            .collect();
        v.sort();
        v
    }

    /// Creates (or, for its owner, updates) a database. `clear` wipes the data first. An
    /// update that would disconnect clients is refused (see [`Registry::publish_with`]).
    pub fn publish(
        &self,
        name: Option<&str>,
        program: Vec<u8>,
        caller: Identity,
        clear: bool,
    ) -> Result<(Arc<HostedDb>, PublishOp), RegistryError> {
        self.publish_with(name, program, caller, clear, &MigrationPolicy::Compatible)
    }

    /// What publishing `program` over the database `name` would do, changing nothing (the
    /// owner's check before an update, as upstream's `pre_publish`).
    pub fn pre_publish(
        &self,
        name: &str,
        program: &[u8],
        caller: Identity,
    ) -> Result<PrePublish, RegistryError> {
        let db = self.resolve(name).ok_or_else(|| RegistryError::NotFound(name.to_string()))?;
        if db.meta.owner != caller.to_hex() {
            return Err(RegistryError::PermissionDenied(name.to_string()));
        }
        match crate::module_host::plan_update(&self.engine, &db.db, program, &Self::config(&db.meta)) {
            Ok(Some(plan)) => Ok(PrePublish::Auto { token: migration_token(&db.meta.identity, &plan), plan }),
            Ok(None) => Err(RegistryError::NotFound(name.to_string())),
            Err(HostError::IncompatibleSchema(reason)) => Ok(PrePublish::Manual { reason }),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Registry::publish`] under `policy`: an update that would disconnect every client
    /// goes ahead only with [`MigrationPolicy::BreakClients`] and the token
    /// [`Registry::pre_publish`] gave for it. The update is planned before the running
    /// version stops, so a refused one (incompatible, not acknowledged, not a module) leaves
    /// it running untouched.
    pub fn publish_with(
        &self,
        name: Option<&str>,
        program: Vec<u8>,
        caller: Identity,
        clear: bool,
        policy: &MigrationPolicy,
    ) -> Result<(Arc<HostedDb>, PublishOp), RegistryError> {
        let shut_down = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        if *shut_down {
            return Err(RegistryError::Host(HostError::ShutDown));
        }
        if let Some(n) = name {
            if !valid_name(n) && Identity::from_hex(n).is_none() {
                return Err(RegistryError::BadName(n.to_string()));
            }
        }
        let existing = name.and_then(|n| self.resolve(n));
        match existing {
            Some(db) if db.meta.owner != caller.to_hex() => {
                Err(RegistryError::PermissionDenied(name.unwrap_or_default().to_string()))
            }
            // The server is shutting down (a deleted database no longer resolves).
            Some(db) if db.is_stopped() => Err(RegistryError::Host(HostError::ShutDown)),
            Some(db) if clear => {
                self.remove(&db)?;
                let meta = DbMeta { created_at_micros: crate::logs::now_micros(), ..db.meta.clone() };
                let hosted = self.create(meta, program)?;
                Ok((hosted, PublishOp::Updated))
            }
            Some(db) => {
                let config = Self::config(&db.meta);
                let prepared = crate::module_host::prepare_update(&self.engine, &db.db, &program, &config)?;
                if let Some((plan, _)) = &prepared {
                    let acknowledged = match policy {
                        MigrationPolicy::Compatible => false,
                        MigrationPolicy::BreakClients(token) => {
                            if !same_token(token, &migration_token(&db.meta.identity, plan)) {
                                return Err(RegistryError::BreaksClients(
                                    "the migration token is invalid or does not match this update \
                                     (ask pre_publish again)"
                                        .into(),
                                ));
                            }
                            true
                        }
                    };
                    if plan.breaks_clients && !acknowledged {
                        return Err(RegistryError::BreaksClients(format!(
                            "this update would disconnect every client, which was not acknowledged: \
                             publish with policy=BreakClients and the token from pre_publish \
                             (`lightcone publish --break-clients`)\n{}",
                            plan.describe()
                        )));
                    }
                }
                // Stop the module, publish the new program (compiled above) over the same data;
                // on refusal put the old one back. Calls wait meanwhile.
                let held_from = std::time::Instant::now();
                let old = db.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
                // Client procedure calls the old version had not started yet run on the new one
                // (scheduled ones are refused: the new version re-arms its schedules).
                let (unstarted, readers) = match old {
                    Some(h) => (h.shutdown_for_update(), h.take_view_readers()),
                    None => Default::default(),
                };
                let owner = caller.to_le();
                let start = match prepared {
                    Some((_, compiled)) => Start::PublishCompiled { program, compiled, readers, owner },
                    None => Start::Publish { program, owner },
                };
                let started = DatabaseHandle::start_with_hooks(
                    Arc::clone(&self.engine),
                    Arc::clone(&db.db),
                    Some(Arc::clone(&db.log)),
                    config.clone(),
                    start,
                    Arc::clone(&db.hooks),
                );
                let result = match started {
                    Ok((handle, report)) => {
                        // Not for clients the update disconnects: their calls must not run on
                        // a version they never saw (a caller over HTTP retries by itself).
                        let keeps_clients = report.is_some_and(|r| r.keeps_clients);
                        for call in unstarted {
                            match keeps_clients {
                                true => call.requeue(&handle).unwrap_or_else(RefusedCall::refuse),
                                false => call.refuse(),
                            }
                        }
                        db.install(Some(handle));
                        tracing::info!(
                            database = %db.meta.identity,
                            held_ms = held_from.elapsed().as_secs_f64() * 1e3,
                            "module updated; calls were held while the versions swapped"
                        );
                        Ok((Arc::clone(&db), PublishOp::Updated))
                    }
                    Err(e) => {
                        // The old version reopens: it clears the sender-bound views clients
                        // held, and a publish that failed after committing may have changed
                        // what they see. They reconnect.
                        unstarted.into_iter().for_each(RefusedCall::refuse);
                        db.hooks.retire_clients("the module update failed: reconnect");
                        let (handle, _) = DatabaseHandle::start_with_hooks(
                            Arc::clone(&self.engine),
                            Arc::clone(&db.db),
                            Some(Arc::clone(&db.log)),
                            config,
                            Start::Open,
                            Arc::clone(&db.hooks),
                        )?;
                        db.install(Some(handle));
                        Err(e.into())
                    }
                };
                result
            }
            None => {
                let identity = match name {
                    Some(n) => Identity::from_claims("lightcone-database", n),
                    None => {
                        let mut raw = [0u8; 16];
                        getrandom::getrandom(&mut raw).map_err(|e| RegistryError::Io(e.to_string()))?;
                        Identity::from_claims("lightcone-database", &hex::encode(raw))
                    }
                };
                let meta = DbMeta {
                    name: name.filter(|n| valid_name(n)).map(str::to_string),
                    identity: identity.to_hex(),
                    owner: caller.to_hex(),
                    created_at_micros: crate::logs::now_micros(),
                };
                Ok((self.create(meta, program)?, PublishOp::Created))
            }
        }
    }

    fn create(&self, meta: DbMeta, program: Vec<u8>) -> Result<Arc<HostedDb>, RegistryError> {
        let dir = self.root.join("databases").join(&meta.identity);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let owner = Identity::from_hex(&meta.owner).expect("valid owner").to_le();
        match self.start_db(meta.clone(), &dir, Start::Publish { program, owner }) {
            Ok((hosted, _)) => {
                write_meta(&dir, &meta)?;
                self.insert(Arc::clone(&hosted));
                Ok(hosted)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn remove(&self, db: &Arc<HostedDb>) -> Result<(), RegistryError> {
        db.stop();
        let _ = db.log.flush();
        self.dbs.lock().unwrap_or_else(|p| p.into_inner()).remove(&db.meta.identity);
        if let Some(n) = &db.meta.name {
            self.names.lock().unwrap_or_else(|p| p.into_inner()).remove(n);
        }
        // meta.json goes first, so a crash midway never leaves a half database that reopens.
        let meta = db.dir.join("meta.json");
        if meta.exists() {
            std::fs::remove_file(&meta).map_err(|e| io_err(&meta, e))?;
        }
        std::fs::remove_dir_all(&db.dir).map_err(|e| io_err(&db.dir, e))
    }

    /// Deletes a database (owner only).
    pub fn delete(&self, name_or_identity: &str, caller: Identity) -> Result<(), RegistryError> {
        let _admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let db =
            self.resolve(name_or_identity).ok_or_else(|| RegistryError::NotFound(name_or_identity.into()))?;
        if db.owner() != caller {
            return Err(RegistryError::PermissionDenied(name_or_identity.into()));
        }
        self.remove(&db)
    }

    /// Stops every module and flushes every log (graceful shutdown).
    pub fn shutdown(&self) {
        // After a publish in progress: it could otherwise install a version into a database
        // stopped meanwhile, which nothing would stop or flush.
        let mut shut_down = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        *shut_down = true;
        let dbs: Vec<Arc<HostedDb>> =
            self.dbs.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for db in dbs {
            db.stop();
            let _ = db.log.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::{CallerInfo, ReducerArgs};

    fn fixture(name: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/fixtures/wasm")
            .join(format!("{name}.wasm"));
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-fixtures.sh", path.display()))
    }

    // A graceful shutdown waits for the jobs still queued on the database thread; their commits
    // run the commit hooks, and a hook that looks the module up (as the subscription hub does
    // on every commit) must not wait for the shutdown in turn, and must still find the module
    // (else the hub takes the commit for a module update and asks its clients to reconnect).
    #[test]
    fn shutdown_under_load_neither_deadlocks_nor_hides_the_module_from_hooks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Arc::new(WasmEngine::new().expect("wasm engine"));
        let reg = Registry::open(dir.path(), engine, Durability::None).expect("open registry");
        let owner = Identity::from_claims("lightcone-test", "owner");
        let (db, _) = reg.publish(Some("bench"), fixture("bench_module"), owner, false).expect("publish");
        let lookups = Arc::new(AtomicUsize::new(0));
        {
            // Weak: the hooks live in the database they look up.
            let (weak, lookups) = (Arc::downgrade(&db), Arc::clone(&lookups));
            db.hooks.add(Arc::new(move |_| {
                if let Some(db) = weak.upgrade() {
                    // The first commit waits for the shutdown to begin, so the calls still
                    // queued behind it commit during the shutdown, whatever the timing.
                    let waiting = std::time::Instant::now();
                    while lookups.load(Ordering::Relaxed) == 0
                        && !db.stopped.load(Ordering::Relaxed)
                        && waiting.elapsed() < Duration::from_secs(20)
                    {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    assert!(db.handle().is_some(), "the module is gone while its commits still run");
                    lookups.fetch_add(1, Ordering::Relaxed);
                }
                crate::worker::HookOutput::default()
            }));
        }
        let handle = db.handle().expect("running");
        for i in 0..5_000u64 {
            let mut args = i.to_le_bytes().to_vec();
            args.extend_from_slice(&1i64.to_le_bytes());
            handle.call_reducer_then("insert_one", &CallerInfo::default(), ReducerArgs::Bsatn(args), |_| {});
        }
        drop(handle);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            reg.shutdown();
            let _ = done_tx.send(());
        });
        assert!(done_rx.recv_timeout(Duration::from_secs(60)).is_ok(), "the shutdown deadlocked");
        assert!(lookups.load(Ordering::Relaxed) > 1, "no commit ran the hook during the shutdown");
    }

    // After a shutdown nothing is published: a new database would never be stopped or flushed,
    // and an existing one is stopped.
    #[test]
    fn a_registry_that_shut_down_refuses_publishes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Arc::new(WasmEngine::new().expect("wasm engine"));
        let reg = Registry::open(dir.path(), engine, Durability::None).expect("open registry");
        let owner = Identity::from_claims("lightcone-test", "owner");
        reg.publish(Some("one"), fixture("bench_module"), owner, false).expect("publish");
        reg.shutdown();
        for name in ["one", "two"] {
            let refused = reg.publish(Some(name), fixture("bench_module"), owner, false);
            assert!(
                matches!(refused, Err(RegistryError::Host(HostError::ShutDown))),
                "{name}: {:?}",
                refused.map(|_| ())
            );
        }
        assert!(reg.resolve("two").is_none());
    }
}
