//! The WebSocket endpoint (SPEC §6) and each database's subscription hub: subscriptions are
//! evaluated once per commit on the database thread (so updates go out in commit order),
//! each shared query delta is encoded once, and every affected client gets one
//! `TransactionUpdate`; the caller of a reducer gets its update inside `ReducerResult`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use lightcone_incremental_eval::{ClientAuth, ClientId, QueryDelta, Registry as SubRegistry, TableRows};
use lightcone_mvcc::{ReadTx, Row, Snapshot, U256};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::http::{authenticate, caller_info, AppState};
use super::protocol::{self, ClientMessage, ReducerResultKind, W};
use super::registry::{HeldViews, HostedDb, UPDATE_WAIT};
use crate::codec::encode_value;
use crate::module_def::ModuleSpec;
use crate::module_host::{CallerInfo, ReducerArgs, ReducerStatus};
use crate::worker::{CommitEvent, CommitsHeld, Delivery, HookOutput, RefusedCall};

/// Messages queued for one client before it counts as too slow and is disconnected.
pub const MAX_QUEUED_MESSAGES: usize = 16 * 1024;
/// Bytes queued for one client before it counts as too slow and is disconnected: the
/// message bound alone would let a client that never reads pile up gigabytes of large
/// updates. One message counts at most [`MAX_CHARGE_PER_MESSAGE`], so a few large replies
/// (big initial subscriptions or one-off queries) queued together do not disconnect a client
/// that reads. The memory actually held is therefore up to this plus what (at most four)
/// messages larger than the charge cap exceed it by.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Most one message counts toward [`MAX_QUEUED_BYTES`].
pub const MAX_CHARGE_PER_MESSAGE: usize = MAX_QUEUED_BYTES / 4;
/// Most queued messages written to a socket before one flush.
const MAX_FRAMES_PER_WRITE: usize = 256;
/// Subprotocols, in the order of preference.
const PROTOCOLS: [&str; 2] = ["v3.bsatn.spacetimedb", "v2.bsatn.spacetimedb"];

struct ClientEntry {
    out: Outbox,
    connection_id: [u8; 16],
}

/// Disconnects a client from outside its session (its queue may be full, so a message
/// could not get through).
#[derive(Default)]
struct Kick {
    notify: tokio::sync::Notify,
    reason: Mutex<Option<String>>,
    /// Set by the first kick: nothing more is queued for the client (after a dropped update,
    /// a later one would leave its cache wrong).
    kicked: std::sync::atomic::AtomicBool,
}

impl Kick {
    fn kick(&self, reason: &str) {
        self.kicked.store(true, Ordering::Release);
        self.reason.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| reason.to_string());
        self.notify.notify_one();
    }

    fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }
}

/// A frame the client does not take within this long ends the connection.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The WebSocket sessions still running. A graceful shutdown waits (briefly) for them to end
/// after the databases stopped, so each client gets its close frame before the runtime goes.
#[derive(Debug)]
pub struct LiveSessions(tokio::sync::watch::Sender<usize>);

/// Counts one session as live until dropped.
pub struct LiveSession<'a>(&'a LiveSessions);

impl Default for LiveSessions {
    fn default() -> LiveSessions {
        LiveSessions(tokio::sync::watch::Sender::new(0))
    }
}

impl LiveSessions {
    fn enter(&self) -> LiveSession<'_> {
        self.0.send_modify(|n| *n += 1);
        LiveSession(self)
    }

    /// Waits until no session is live, for at most `limit`; whether none is.
    pub async fn ended(&self, limit: std::time::Duration) -> bool {
        let mut count = self.0.subscribe();
        let ended = tokio::time::timeout(limit, count.wait_for(|&n| n == 0)).await.is_ok();
        ended
    }
}

impl Drop for LiveSession<'_> {
    fn drop(&mut self) {
        self.0 .0.send_modify(|n| *n -= 1);
    }
}

/// Close reason for a client whose outgoing queue went over a bound.
fn too_slow() -> String {
    format!("client too slow: over {MAX_QUEUED_MESSAGES} messages or {} MiB queued", MAX_QUEUED_BYTES >> 20)
}

/// One client's outgoing queue of framed messages, bounded both in messages and in bytes
/// ([`MAX_QUEUED_MESSAGES`], [`MAX_QUEUED_BYTES`]). Producers (the database thread, the
/// durability notifier, the session) never wait on it: a client over either bound is
/// disconnected instead, so a client that does not read cannot stall anyone.
#[derive(Clone)]
struct Outbox {
    frames: mpsc::Sender<Vec<u8>>,
    /// Bytes of the frames in `frames`, taken off by [`OutboxReceiver`].
    queued_bytes: Arc<AtomicUsize>,
    kick: Arc<Kick>,
}

/// The session's end of an [`Outbox`].
struct OutboxReceiver {
    frames: mpsc::Receiver<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Outbox {
    fn new(kick: Arc<Kick>) -> (Outbox, OutboxReceiver) {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_MESSAGES);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let receiver = OutboxReceiver { frames: rx, queued_bytes: Arc::clone(&queued_bytes) };
        (Outbox { frames: tx, queued_bytes, kick }, receiver)
    }

    /// Frames and queues one message.
    fn send(&self, message: &[u8]) {
        self.push(protocol::frame(message));
    }

    /// Queues a framed message. Nothing more is queued for a client being disconnected
    /// (after a dropped update, a later one would leave its cache wrong).
    fn push(&self, frame: Vec<u8>) {
        if self.kick.is_kicked() {
            return;
        }
        let charge = charge_of(&frame);
        let before = self.queued_bytes.fetch_add(charge, Ordering::AcqRel);
        if before + charge > MAX_QUEUED_BYTES || self.frames.try_send(frame).is_err() {
            self.queued_bytes.fetch_sub(charge, Ordering::AcqRel);
            self.kick.kick(&too_slow());
        }
    }

    fn kick(&self, reason: &str) {
        self.kick.kick(reason);
    }

    fn is_kicked(&self) -> bool {
        self.kick.is_kicked()
    }
}

impl OutboxReceiver {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        let frame = self.frames.recv().await?;
        Some(self.took(frame))
    }

    fn try_recv(&mut self) -> Result<Vec<u8>, mpsc::error::TryRecvError> {
        self.frames.try_recv().map(|f| self.took(f))
    }

    fn took(&self, frame: Vec<u8>) -> Vec<u8> {
        self.queued_bytes.fetch_sub(charge_of(&frame), Ordering::AcqRel);
        frame
    }
}

/// What a queued frame counts toward [`MAX_QUEUED_BYTES`].
fn charge_of(frame: &[u8]) -> usize {
    frame.len().min(MAX_CHARGE_PER_MESSAGE)
}

struct HubInner {
    subs: SubRegistry,
    /// Offset of the last commit evaluated: every subscription has seen the database up to it.
    last_offset: u64,
    /// The state at `last_offset`, kept only while someone is subscribed (an unsubscribe's
    /// dropped rows are those the client holds). Holding a version makes the next transaction
    /// copy what it writes instead of writing in place, so with no subscriptions it is dropped.
    last: Option<Snapshot>,
    /// Query sets that started from a state newer than `last_offset` (taken while `last` was
    /// not kept), with that state: commits up to it are already in their initial rows, and it
    /// is what the client holds until evaluation catches up (a moment: those commits' hooks
    /// are waiting for this lock).
    starts: HashMap<(ClientId, u32), Snapshot>,
    clients: HashMap<ClientId, ClientEntry>,
    /// The module version whose codecs encode rows: the one that made the last commit.
    spec: Arc<ModuleSpec>,
    /// [`CommitHooks::client_epoch`](crate::worker::CommitHooks::client_epoch) when the hub
    /// was made: the registry's RLS and view filters and its queries' tables hold for every
    /// version published since, until an update that breaks clients. Then the hub is replaced
    /// and its clients asked to reconnect (filters cannot be swapped under live subscriptions).
    epoch: u64,
    /// Why the hub was retired (an update broke its clients, the database stopped): it
    /// serves nobody from then on.
    retired: Option<String>,
}

impl HubInner {
    /// The state a new subscription starts from, consistent with the commits evaluated so far.
    fn start_state(
        &mut self,
        handle: &crate::worker::DatabaseHandle,
        client: ClientId,
        query_set: u32,
    ) -> Snapshot {
        if let Some(last) = &self.last {
            return last.clone();
        }
        // Commits are published before their evaluation runs (which needs this lock), so the
        // latest state is at or after `last_offset`; whatever lies between is skipped for this
        // query set when it is evaluated.
        let snapshot = handle.snapshot();
        debug_assert!(snapshot.tx_offset() >= self.last_offset, "a published commit went unevaluated");
        if snapshot.tx_offset() > self.last_offset {
            self.starts.insert((client, query_set), snapshot.clone());
        } else {
            self.last = Some(snapshot.clone());
        }
        snapshot
    }

    /// The state a client's query set holds now (for its dropped rows on unsubscribe).
    fn held_state(
        &self,
        handle: &crate::worker::DatabaseHandle,
        client: ClientId,
        query_set: u32,
    ) -> Snapshot {
        match (self.starts.get(&(client, query_set)), &self.last) {
            (Some(start), _) => start.clone(),
            (None, Some(last)) => last.clone(),
            // Not subscribed at all: the unsubscribe fails before reading any rows.
            (None, None) => handle.snapshot(),
        }
    }
}

/// One database's subscriptions.
pub struct Hub {
    inner: Mutex<HubInner>,
    db: Arc<HostedDb>,
    next_client: AtomicU64,
    /// Its commit and retire hooks, unregistered when the hub goes (a retired hub is
    /// dropped once its last session ends).
    hooks: Mutex<Vec<crate::worker::HookId>>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        for id in self.hooks.get_mut().unwrap_or_else(|p| p.into_inner()).drain(..) {
            self.db.hooks.remove(id);
        }
    }
}

/// What a session's ordered message task works through.
enum Inbound {
    Message(ClientMessage),
    /// A call the socket task queued directly and the database refused (a module update).
    Refused(RefusedCall),
}

/// Close reason for the clients of a hub replaced by a module update.
const MODULE_UPDATED: &str = "the module was updated: reconnect";

impl HubInner {
    /// Whether this hub suits the module versions published since it was made: none broke
    /// clients ([`crate::module_host::update_keeps_clients`]). After one that did, every
    /// client is asked to reconnect (to a hub made for the new version) and this says no.
    fn follow_update(&mut self, client_epoch: u64) -> bool {
        if self.retired.is_none() && client_epoch != self.epoch {
            self.retire(MODULE_UPDATED);
        }
        self.retired.is_none()
    }

    /// Closes every client with `reason`; the hub serves nobody from then on.
    fn retire(&mut self, reason: &str) {
        if self.retired.is_some() {
            return;
        }
        for client in self.clients.values() {
            client.out.kick(reason);
        }
        self.retired = Some(reason.to_string());
    }
}

fn spec_of(db: &HostedDb) -> Option<Arc<ModuleSpec>> {
    db.handle().map(|h| Arc::clone(h.spec()))
}

/// Rows of one table, encoded back to back with their end offsets.
fn encode_rows(spec: &ModuleSpec, table: &str, rows: &[Row]) -> (Vec<u8>, Vec<usize>) {
    let mut data = Vec::new();
    let mut ends = Vec::with_capacity(rows.len());
    let codec = spec.table_by_name(table).map(|t| &t.codec);
    for row in rows {
        match codec {
            Some(c) => c.encode_row(row, &mut data),
            None => row.iter().for_each(|v| encode_value(v, &mut data)),
        }
        ends.push(data.len());
    }
    (data, ends)
}

fn encode_tables(spec: &ModuleSpec, tables: &[TableRows]) -> Vec<protocol::EncodedTable> {
    tables
        .iter()
        .map(|t| {
            let (d, e) = encode_rows(spec, &t.table_name, &t.rows);
            (t.table_name.clone(), d, e)
        })
        .collect()
}

/// `TableUpdateRows::PersistentTable{inserts, deletes}` of one shared delta.
fn encode_delta_rows(spec: &ModuleSpec, d: &QueryDelta) -> Vec<u8> {
    let mut w = W::new();
    w.u8(0);
    let (data, ends) = encode_rows(spec, &d.table_name, &d.inserts);
    protocol::row_list(&mut w, &data, &ends);
    let (data, ends) = encode_rows(spec, &d.table_name, &d.deletes);
    protocol::row_list(&mut w, &data, &ends);
    w.0
}

impl Hub {
    fn new(db: Arc<HostedDb>) -> Result<Arc<Hub>, String> {
        // Read before the module: an update in between then retires this hub at once, rather
        // than leave it with filters of the version before.
        let epoch = db.hooks.client_epoch();
        let handle = db.handle().ok_or("the database is being updated")?;
        let now = handle.snapshot();
        let spec = Arc::clone(handle.spec());
        let subs = super::rls::registry(&spec, &now)?;
        let inner = HubInner {
            subs,
            last_offset: now.tx_offset(),
            last: None,
            starts: HashMap::new(),
            clients: HashMap::new(),
            spec,
            epoch,
            retired: None,
        };
        drop(now);
        let hub = Arc::new(Hub {
            inner: Mutex::new(inner),
            db: Arc::clone(&db),
            next_client: AtomicU64::new(1),
            hooks: Mutex::default(),
        });
        let weak = Arc::downgrade(&hub);
        let on_commit = db.hooks.add(Arc::new(move |event: &CommitEvent| {
            weak.upgrade().map(|h| h.on_commit(event)).unwrap_or_default()
        }));
        let weak = Arc::downgrade(&hub);
        let on_retire = db.hooks.on_retire(Arc::new(move |reason: &str| {
            if let Some(h) = weak.upgrade() {
                h.lock().retire(reason);
            }
        }));
        hub.hooks.lock().unwrap_or_else(|p| p.into_inner()).extend([on_commit, on_retire]);
        Ok(hub)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs on the database thread after each commit: evaluates the subscriptions and returns
    /// the caller's update and the sending of everyone else's (which the database thread runs
    /// in commit order with the callers' answers, once the commit is durable).
    fn on_commit(&self, event: &CommitEvent) -> HookOutput {
        let mut inner = self.lock();
        if !inner.follow_update(event.client_epoch) {
            // The module was updated under these clients in a way that breaks them (their
            // queries may name a reshaped view; filters changed): they reconnect.
            return HookOutput::default();
        }
        if !Arc::ptr_eq(&inner.spec, &event.spec) {
            inner.spec = Arc::clone(&event.spec);
        }
        let offset = event.after.tx_offset();
        if offset <= inner.last_offset {
            return HookOutput::default(); // already part of the state subscriptions started from
        }
        let updates = inner.subs.eval(&event.after, &event.delta);
        inner.last_offset = offset;
        inner.last = (inner.subs.client_count() > 0).then(|| event.after.clone());
        if updates.is_empty() {
            inner.starts.retain(|_, start| start.tx_offset() > offset);
            return HookOutput::default();
        }
        let spec = Arc::clone(&inner.spec);
        let encoded: Vec<Vec<u8>> = updates.deltas.iter().map(|d| encode_delta_rows(&spec, d)).collect();
        let caller_conn = event.caller.as_ref().map(|c| c.connection_id).filter(|c| *c != [0; 16]);
        let mut caller_update = None;
        let mut frames = Vec::new();
        let mut kicked = Vec::new();
        for cu in updates.clients() {
            let Some(client) = inner.clients.get(&cu.client) else { continue };
            if client.out.is_kicked() {
                kicked.push(cu.client);
                continue;
            }
            let mut w = W::new();
            let mut sets = cu.query_sets();
            sets.retain(|(qs, _)| inner.starts.get(&(cu.client, *qs)).is_none_or(|s| s.tx_offset() < offset));
            if sets.is_empty() {
                continue;
            }
            w.u32(sets.len() as u32);
            for (qs, deltas) in sets {
                w.u32(qs);
                // One TableUpdate per table, holding each shared delta's rows.
                let mut by_table: Vec<(&str, Vec<usize>)> = Vec::new();
                for d in deltas {
                    let idx = updates.deltas.iter().position(|x| Arc::ptr_eq(x, d)).unwrap_or(0);
                    match by_table.iter_mut().find(|(t, _)| *t == d.table_name) {
                        Some((_, v)) => v.push(idx),
                        None => by_table.push((&d.table_name, vec![idx])),
                    }
                }
                w.u32(by_table.len() as u32);
                for (table, idxs) in by_table {
                    w.str(table).u32(idxs.len() as u32);
                    for i in idxs {
                        w.raw(&encoded[i]);
                    }
                }
            }
            if Some(client.connection_id) == caller_conn {
                caller_update = Some(Arc::from(w.0.into_boxed_slice()));
                continue;
            }
            let mut msg = vec![4u8];
            msg.extend_from_slice(&w.0);
            frames.push((client.out.clone(), protocol::frame(&msg)));
        }
        for c in kicked {
            // Its session is ending; stop evaluating for it now.
            inner.clients.remove(&c);
            inner.subs.remove_client(c);
        }
        inner.starts.retain(|_, start| start.tx_offset() > offset);
        let deliver = (!frames.is_empty()).then(|| -> Delivery {
            Box::new(move |durable: Result<(), &crate::HostError>| {
                for (out, frame) in frames {
                    match durable {
                        // A client over its queue's bounds is too slow: its session ends and
                        // leaves the hub.
                        Ok(()) => out.push(frame),
                        Err(e) => out.kick(&durability_lost(e)),
                    }
                }
            })
        });
        HookOutput { caller_update, deliver }
    }
}

/// The hub of a database, created on first use.
fn hub_for(db: &Arc<HostedDb>) -> Result<Arc<Hub>, String> {
    static HUBS: std::sync::OnceLock<Mutex<HashMap<usize, Arc<Hub>>>> = std::sync::OnceLock::new();
    let hubs = HUBS.get_or_init(Mutex::default);
    let mut hubs = hubs.lock().unwrap_or_else(|p| p.into_inner());
    // Keyed by the HostedDb's address: a re-created database gets a fresh hub.
    let key = Arc::as_ptr(db) as usize;
    hubs.retain(|_, h| Arc::strong_count(&h.db) > 1 || Arc::ptr_eq(&h.db, db));
    if let Some(h) = hubs.get(&key) {
        if h.lock().follow_update(db.hooks.client_epoch()) {
            return Ok(Arc::clone(h));
        }
        hubs.remove(&key);
    }
    let hub = Hub::new(Arc::clone(db))?;
    hubs.insert(key, Arc::clone(&hub));
    Ok(hub)
}

#[derive(Debug, Deserialize, Default)]
pub struct WsQuery {
    pub token: Option<String>,
    pub connection_id: Option<String>,
    pub compression: Option<String>,
    pub light: Option<bool>,
    pub confirmed: Option<bool>,
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into()).into_response()
}

/// `GET /v1/database/:db/subscribe`.
pub async fn subscribe(
    State(s): State<Arc<AppState>>,
    Path(db): Path<String>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let offered = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect::<Vec<_>>();
    let Some(protocol) = PROTOCOLS.iter().find(|p| offered.iter().any(|o| o == *p)) else {
        return err(
            StatusCode::BAD_REQUEST,
            format!("no supported subprotocol in {offered:?}: Lightcone speaks {}", PROTOCOLS.join(", ")),
        );
    };
    let v3 = protocol.starts_with("v3");
    let caller = match authenticate(&s, &headers, q.token.as_deref()) {
        Ok(Some(v)) => v,
        Ok(None) => match s.keys.mint_anonymous() {
            Ok(v) => v,
            Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        Err(r) => return r,
    };
    let connection_id: [u8; 16] = match q.connection_id.as_deref() {
        None => {
            let mut c = [0u8; 16];
            while c == [0; 16] {
                let _ = getrandom::getrandom(&mut c);
            }
            c
        }
        Some(hexs) => match hex::decode(hexs).ok().and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            Some(z) if z == [0u8; 16] => {
                return err(StatusCode::BAD_REQUEST, "connection_id must not be zero")
            }
            Some(mut be) => {
                be.reverse(); // query form is big-endian; the ABI form little-endian
                be
            }
            None => return err(StatusCode::BAD_REQUEST, "connection_id must be 32 hex digits"),
        },
    };
    let Some(hosted) = s.registry.resolve(&db) else {
        return err(StatusCode::NOT_FOUND, format!("no such database: `{db}`"));
    };
    let Some(handle) = hosted.handle() else {
        return err(StatusCode::SERVICE_UNAVAILABLE, "the database is being updated");
    };
    let hub = match hub_for(&hosted) {
        Ok(h) => h,
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let info = caller_info(&caller, connection_id);
    let connect_info = info.clone();
    let handle2 = Arc::clone(&handle);
    let connected = tokio::task::spawn_blocking(move || handle2.client_connected(&connect_info)).await;
    match connected {
        Ok(Ok(Some(o))) if !o.is_committed() => {
            return err(
                StatusCode::FORBIDDEN,
                format!("the module refused the connection: {}", o.error().unwrap_or_default()),
            )
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    let is_owner = caller.identity == hosted.owner();
    let token = caller.token.clone();
    ws.protocols(PROTOCOLS)
        .max_message_size(protocol::MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(protocol::MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            let _live = s.sessions.enter();
            let session = Session {
                hub,
                handle: Mutex::new(handle),
                info,
                is_owner,
                v3,
                kick: Arc::default(),
                views: Mutex::new(Some(HashMap::new())),
            };
            session.run(socket, token).await;
        })
}

struct Session {
    hub: Arc<Hub>,
    /// The running module's handle, as last seen (see [`Session::handle`]).
    handle: Mutex<Arc<crate::worker::DatabaseHandle>>,
    info: CallerInfo,
    is_owner: bool,
    v3: bool,
    kick: Arc<Kick>,
    /// The sender-bound views each query set holds materialized for this identity; `None`
    /// once the session closed (a subscribe finishing after that releases at once).
    views: Mutex<Option<HashMap<u32, HeldViews>>>,
}

impl Session {
    /// The running module's handle: after an update that kept this client connected, the new
    /// version's. (During the update itself the old one refuses calls with an error.)
    fn handle(&self) -> Arc<crate::worker::DatabaseHandle> {
        let mut handle = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        if handle.is_stopped() {
            if let Some(current) = self.hub.db.handle() {
                *handle = current;
            }
        }
        Arc::clone(&handle)
    }

    /// Releases sender-bound views this session held (see [`HeldViews`]); blocks while an
    /// update is between two versions, so only for blocking threads.
    fn release_held(&self, views: HeldViews) {
        self.hub.db.release_views(self.info.identity, views);
    }

    /// [`Session::handle`], waiting (up to `limit`) while a module update is between two
    /// versions: blocks, so only for blocking threads.
    fn settled_handle(&self, limit: std::time::Duration) -> Arc<crate::worker::DatabaseHandle> {
        let _ = self.hub.db.running_handle(limit);
        self.handle()
    }

    /// The running module's spec, waiting (up to [`UPDATE_WAIT`]) while a module update swaps
    /// versions: blocks, so only for blocking threads.
    fn settled_spec(&self) -> Option<Arc<ModuleSpec>> {
        let _ = self.hub.db.running_handle(UPDATE_WAIT);
        spec_of(&self.hub.db)
    }

    fn auth(&self) -> ClientAuth {
        ClientAuth { sender: U256::from_le_bytes(self.info.identity), is_owner: self.is_owner }
    }

    async fn run(self, mut socket: WebSocket, token: String) {
        let client = ClientId(self.hub.next_client.fetch_add(1, Ordering::Relaxed));
        let (out_tx, mut out_rx) = Outbox::new(Arc::clone(&self.kick));
        {
            let mut inner = self.hub.lock();
            if let Some(reason) = &inner.retired {
                // Retired between `hub_for` and here: this client goes too.
                self.kick.kick(reason);
            }
            inner
                .clients
                .insert(client, ClientEntry { out: out_tx.clone(), connection_id: self.info.connection_id });
        }
        let hello = protocol::initial_connection(&self.info.identity, &self.info.connection_id, &token);
        out_tx.send(&hello);
        let session = Arc::new(self);
        // A client's messages are handled one at a time, in the order they arrived (as upstream
        // does): two reducer calls sent back to back run in that order.
        // Messages other than calls are answered on blocking threads, one at a time, by a
        // worker task. A call arriving while that queue is empty goes to the database thread
        // straight from this task (the common case, and one task hop fewer); otherwise it
        // queues behind the messages before it.
        let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(MAX_QUEUED_MESSAGES);
        let queued = Arc::new(AtomicUsize::new(0));
        let worker = {
            let (s, tx, queued) = (Arc::clone(&session), out_tx.clone(), Arc::clone(&queued));
            tokio::spawn(async move {
                while let Some(m) = in_rx.recv().await {
                    match m {
                        Inbound::Message(m) => Arc::clone(&s).handle_message(client, m, tx.clone()).await,
                        Inbound::Refused(call) => s.requeue(call).await,
                    }
                    queued.fetch_sub(1, Ordering::AcqRel);
                }
            })
        };
        loop {
            tokio::select! {
                biased;
                _ = session.kick.notify.notified() => {
                    let reason = session.kick.reason.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
                    close_with(&mut socket, 1008, reason).await;
                    break;
                }
                out = out_rx.recv() => match out {
                    Some(first) => {
                        if !send_queued(&mut socket, first, &mut out_rx).await {
                            break;
                        }
                    }
                    None => break,
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Binary(b))) => {
                        match protocol::decode_client_messages(&b, session.v3) {
                            Ok(msgs) => {
                                let mut direct_calls = 0;
                                for m in msgs {
                                    let m = match m {
                                        ClientMessage::CallReducer { request_id, reducer, args }
                                            if queued.load(Ordering::Acquire) == 0 =>
                                        {
                                            match session.call(request_id, &reducer, args, &out_tx) {
                                                Ok(()) => {
                                                    direct_calls += 1;
                                                    continue;
                                                }
                                                // Held for the next module version, in order.
                                                Err(refused) => Inbound::Refused(refused),
                                            }
                                        }
                                        other => Inbound::Message(other),
                                    };
                                    queued.fetch_add(1, Ordering::AcqRel);
                                    if in_tx.send(m).await.is_err() {
                                        break;
                                    }
                                }
                                // One call, first in the database's queue, no fsync to wait for:
                                // its answer comes within microseconds. Waiting for it here
                                // saves waking this task (and a runtime thread) for it.
                                if direct_calls == 1 && session.handle().answers_promptly() {
                                    if let Some(first) = spin_for(&mut out_rx, REPLY_SPIN) {
                                        if !send_queued(&mut socket, first, &mut out_rx).await {
                                            break;
                                        }
                                    }
                                }
                            }
                            Err(e) => {
                                let reason = format!("malformed message: {e}");
                                let reason: String = reason.chars().take(120).collect();
                                close_with(&mut socket, 1007, reason).await;
                                break;
                            }
                        }
                    }
                    Some(Ok(Message::Text(_))) => {
                        let reason = "text frames are not supported: use a BSATN subprotocol";
                        close_with(&mut socket, 1003, reason.into()).await;
                        break;
                    }
                    Some(Err(e)) => {
                        // Over the size limit is the one read error the client can still be
                        // told about (the socket itself is fine).
                        if let Some(reason) = oversized(e) {
                            close_with(&mut socket, 1009, reason).await;
                        }
                        break;
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => {} // ping/pong handled by axum
                },
            }
        }
        worker.abort();
        {
            let mut inner = session.hub.lock();
            inner.clients.remove(&client);
            inner.subs.remove_client(client);
        }
        let held: Vec<HeldViews> = session
            .views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .into_iter()
            .flat_map(|m| m.into_values())
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for views in held {
                session.release_held(views);
            }
            // A client closed by a module update disconnects from the version that follows.
            let handle = session.settled_handle(UPDATE_WAIT);
            handle.client_disconnected(&session.info)
        })
        .await;
    }

    async fn handle_message(self: Arc<Self>, client: ClientId, msg: ClientMessage, out: Outbox) {
        let queued = match msg {
            ClientMessage::CallReducer { request_id, reducer, args } => {
                self.call(request_id, &reducer, args, &out)
            }
            ClientMessage::CallProcedure { request_id, procedure, args } => {
                self.call_procedure(request_id, &procedure, args, &out)
            }
            msg => {
                let (s, out2) = (Arc::clone(&self), out.clone());
                let reply = tokio::task::spawn_blocking(move || s.answer(client, msg, &out2)).await;
                if let Ok(Some(bytes)) = reply {
                    out.send(&bytes);
                }
                return;
            }
        };
        if let Err(refused) = queued {
            // The module is being updated: hold the call for the next version, as upstream
            // does. This session reads its next message only after, so calls keep their order.
            self.requeue(refused).await;
        }
    }

    /// Queues a call the database refused (its module version is shutting down) on the next
    /// version once that one runs — or answers it with the error if the database stopped for
    /// good, this client's connection is closing for the update, or no version came up in
    /// [`UPDATE_WAIT`].
    async fn requeue(&self, mut refused: RefusedCall) {
        let start = std::time::Instant::now();
        loop {
            let handle = self.handle();
            if !handle.is_stopped() {
                if !self.hub.lock().follow_update(self.hub.db.hooks.client_epoch()) {
                    // The update closes this client: its calls must not run on the new version.
                    return refused.refuse();
                }
                match refused.requeue(&handle) {
                    Ok(()) => return,
                    Err(again) => refused = again, // already stopping again: wait for the next
                }
            }
            if self.hub.db.is_stopped() || start.elapsed() >= UPDATE_WAIT {
                return refused.refuse();
            }
            let _ = self.hub.db.running_handle_async(UPDATE_WAIT.saturating_sub(start.elapsed())).await;
        }
    }

    /// Queues a reply built from the state at `tx_offset` once that state is durable, behind
    /// every update of the commits up to it and ahead of later ones (see
    /// `DatabaseHandle::hold_commits`).
    fn send_after(&self, held: &CommitsHeld<'_>, tx_offset: u64, out: &Outbox, reply: Vec<u8>) {
        let out = out.clone();
        held.send_after(
            tx_offset,
            Box::new(move |durable| match durable {
                Ok(()) => out.send(&reply),
                Err(e) => out.kick(&durability_lost(e)),
            }),
        );
    }

    /// Queues a reducer call on the database thread (in arrival order). Its result goes onto
    /// the client's outgoing queue from the database thread itself (or the durability
    /// notifier's) once durable, so a client can pipeline calls.
    /// A call refused because the module is being updated comes back (see [`Session::requeue`]).
    fn call(&self, request_id: u32, reducer: &str, args: Vec<u8>, out: &Outbox) -> Result<(), RefusedCall> {
        let out = out.clone();
        let reply: crate::worker::AsyncReply = Box::new(move |outcome| {
            out.send(&reducer_result_message(request_id, outcome));
        });
        self.handle().try_call_reducer_then(reducer, &self.info, ReducerArgs::Bsatn(args), reply)
    }

    /// Queues a procedure call on the database thread, like [`Session::call`]; its
    /// `ProcedureResult` follows the updates of the commits it made.
    fn call_procedure(
        &self,
        request_id: u32,
        procedure: &str,
        args: Vec<u8>,
        out: &Outbox,
    ) -> Result<(), RefusedCall> {
        let out = out.clone();
        let reply: crate::worker::ProcedureReply = Box::new(move |outcome| {
            let message = match outcome {
                Ok(o) => protocol::procedure_result(
                    request_id,
                    o.timestamp_micros,
                    o.duration.as_micros() as i64,
                    o.result.as_deref().map_err(String::as_str),
                ),
                Err(e) => {
                    protocol::procedure_result(request_id, crate::logs::now_micros(), 0, Err(&e.to_string()))
                }
            };
            out.send(&message);
        });
        self.handle().try_call_procedure_then(procedure, &self.info, ReducerArgs::Bsatn(args), reply)
    }

    /// The reply to one client message (on a blocking thread), or `None` if it was already
    /// queued on `out`.
    fn answer(&self, client: ClientId, msg: ClientMessage, out: &Outbox) -> Option<Vec<u8>> {
        let Some(spec) = self.settled_spec() else {
            // Still between two versions of the module after waiting (a stopped database's
            // clients are closed).
            const UNAVAILABLE: &str = "the database is being updated: try again";
            return match msg {
                ClientMessage::Subscribe { request_id, query_set_id, .. }
                | ClientMessage::Unsubscribe { request_id, query_set_id, .. } => {
                    Some(protocol::subscription_error(Some(request_id), query_set_id, UNAVAILABLE))
                }
                ClientMessage::OneOffQuery { request_id, .. } => {
                    Some(protocol::one_off_result(request_id, Err(UNAVAILABLE)))
                }
                ClientMessage::CallReducer { .. } | ClientMessage::CallProcedure { .. } => None,
            };
        };
        let handle = self.handle();
        match msg {
            ClientMessage::Subscribe { request_id, query_set_id, queries } => {
                if !self.hub.lock().follow_update(self.hub.db.hooks.client_epoch()) {
                    // Filters of an old module version: refuse, and have the client reconnect.
                    return Some(protocol::subscription_error(
                        Some(request_id),
                        query_set_id,
                        MODULE_UPDATED,
                    ));
                }
                let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
                // Sender-bound views are materialized for this identity first (a commit of
                // its own, evaluated before the hub lock is taken here).
                let indexes = super::rls::sender_bound_views(&spec, &handle.snapshot(), &refs);
                let views = match self.hub.db.acquire_views(&handle, self.info.identity, indexes) {
                    Ok(views) => views,
                    Err(e) => {
                        return Some(protocol::subscription_error(
                            Some(request_id),
                            query_set_id,
                            &e.to_string(),
                        ))
                    }
                };
                // Commits wait while the initial rows are computed and their reply queued: it
                // goes out behind every update of the state it starts from, ahead of the next.
                let commits = handle.hold_commits();
                let mut inner = self.hub.lock();
                let start = inner.start_state(&handle, client, query_set_id);
                // Views added by a module update since the hub was made need their filters too.
                let filtered = super::rls::add_view_filters(&mut inner.subs, &spec, &start);
                let subscribed = filtered.map_err(|e| e.to_string()).and_then(|()| {
                    inner
                        .subs
                        .subscribe(&start, client, query_set_id, &refs, &self.auth())
                        .map_err(|e| e.to_string())
                });
                let reply = match subscribed {
                    Ok(rows) => {
                        let mut held = self.views.lock().unwrap_or_else(|p| p.into_inner());
                        match held.as_mut() {
                            Some(held) => {
                                held.insert(query_set_id, views);
                            }
                            None => {
                                // The session closed meanwhile: undo, nobody is listening.
                                drop(held);
                                inner.subs.remove_client(client);
                                drop((inner, commits));
                                self.release_held(views);
                                return None;
                            }
                        }
                        let tables = encode_tables(&spec, &rows);
                        (start.tx_offset(), protocol::subscribe_applied(request_id, query_set_id, &tables))
                    }
                    Err(e) => {
                        inner.starts.remove(&(client, query_set_id));
                        drop((inner, commits));
                        self.release_held(views);
                        let reply =
                            protocol::subscription_error(Some(request_id), query_set_id, &e.to_string());
                        out.send(&reply);
                        return None;
                    }
                };
                let (at, reply) = reply;
                self.send_after(&commits, at, out, reply);
                None
            }
            ClientMessage::Unsubscribe { request_id, query_set_id, send_dropped_rows } => {
                let commits = handle.hold_commits();
                let mut inner = self.hub.lock();
                let held = inner.held_state(&handle, client, query_set_id);
                let snapshot = send_dropped_rows.then_some(&held);
                match inner.subs.unsubscribe(snapshot, client, query_set_id) {
                    Ok(rows) => {
                        inner.starts.remove(&(client, query_set_id));
                        let t = encode_tables(&spec, &rows);
                        let reply = protocol::unsubscribe_applied(
                            request_id,
                            query_set_id,
                            send_dropped_rows.then_some(&t[..]),
                        );
                        // After the updates this query set still had coming (the dropped rows
                        // are the state they lead to).
                        self.send_after(&commits, held.tx_offset(), out, reply);
                    }
                    Err(e) => out.send(&protocol::subscription_error(
                        Some(request_id),
                        query_set_id,
                        &e.to_string(),
                    )),
                }
                drop((inner, commits));
                let held = self
                    .views
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_mut()
                    .and_then(|m| m.remove(&query_set_id));
                if let Some(views) = held {
                    self.release_held(views);
                }
                None
            }
            ClientMessage::OneOffQuery { request_id, query } => {
                let views = super::rls::sender_bound_views(&spec, &handle.snapshot(), &[&query]);
                let sender_bound = !views.is_empty();
                let (at, result) = match self.hub.db.acquire_views(&handle, self.info.identity, views) {
                    Ok(held) => {
                        let snapshot = handle.snapshot();
                        let result = one_off(&snapshot, &spec, &query, &self.auth(), sender_bound);
                        self.release_held(held);
                        (Some(snapshot.tx_offset()), result)
                    }
                    Err(e) => (None, Err(e.to_string())),
                };
                let reply = match result {
                    Ok(t) => protocol::one_off_result(request_id, Ok(&t)),
                    Err(e) => protocol::one_off_result(request_id, Err(&e)),
                };
                match at {
                    // Like an update of that state: once it is durable, behind the updates
                    // that lead to it.
                    Some(at) => {
                        let commits = handle.hold_commits();
                        self.send_after(&commits, at, out, reply);
                        None
                    }
                    None => Some(reply),
                }
            }
            // Invariant: `handle_message` answers calls itself (asynchronously, pipelined) and
            // never passes them here.
            ClientMessage::CallReducer { .. } | ClientMessage::CallProcedure { .. } => {
                unreachable!("calls are answered by handle_message")
            }
        }
    }
}

/// Longest a session busy-waits for the answer to a call it just sent (see `answers_promptly`).
/// Sleeping and being woken for it costs ~15 µs per wake-up on the 2-core VM; an empty
/// reducer answers in under 1 µs once the database thread has it.
const REPLY_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// The next queued message, if one arrives within `limit` (busy-waiting).
fn spin_for(out_rx: &mut OutboxReceiver, limit: std::time::Duration) -> Option<Vec<u8>> {
    let start = std::time::Instant::now();
    loop {
        match out_rx.try_recv() {
            Ok(m) => return Some(m),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) if start.elapsed() >= limit => return None,
            Err(mpsc::error::TryRecvError::Empty) => std::hint::spin_loop(),
        }
    }
}

/// Writes `first` and everything else already queued in one flush (pipelined calls' results
/// then cost one syscall per batch, not per message). False if the client is gone or stuck.
async fn send_queued(socket: &mut WebSocket, first: Vec<u8>, out_rx: &mut OutboxReceiver) -> bool {
    let send_batch = async {
        let mut next = Some(first);
        let mut batched = 0;
        while let Some(f) = next {
            socket.feed(Message::Binary(f.into())).await?;
            batched += 1;
            next = if batched < MAX_FRAMES_PER_WRITE { out_rx.try_recv().ok() } else { None };
        }
        socket.flush().await
    };
    matches!(tokio::time::timeout(SEND_TIMEOUT, send_batch).await, Ok(Ok(())))
}

/// Longest a session waits to hand a client its close frame (a client that does not read
/// must not hold the session open).
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends a close frame with `code` and `reason`, waiting at most [`CLOSE_TIMEOUT`].
async fn close_with(socket: &mut WebSocket, code: u16, reason: String) {
    let close = Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(close)).await;
}

/// The close reason for a read error that is a message over
/// [`protocol::MAX_CLIENT_MESSAGE_BYTES`], if it is one.
fn oversized(e: axum::Error) -> Option<String> {
    match e.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(c)) => Some(format!("message too big: {c}")),
        _ => None,
    }
}

/// Close reason when a commit a client would be told about could not be made durable.
fn durability_lost(e: &crate::HostError) -> String {
    format!("the database could not make a commit durable: {e}")
}

/// The `ReducerResult` for a call's outcome.
fn reducer_result_message(
    request_id: u32,
    outcome: Result<crate::ReducerOutcome, crate::HostError>,
) -> Vec<u8> {
    match outcome {
        Err(e) => protocol::reducer_result(
            request_id,
            crate::logs::now_micros(),
            ReducerResultKind::InternalError(&e.to_string()),
        ),
        Ok(o) => {
            let kind = match &o.status {
                ReducerStatus::Committed => match &o.caller_update {
                    Some(u) => ReducerResultKind::Ok(u),
                    None => ReducerResultKind::OkEmpty,
                },
                ReducerStatus::Failed(m) => ReducerResultKind::Err(m),
                ReducerStatus::Panicked(m) => ReducerResultKind::InternalError(m),
                ReducerStatus::OutOfEnergy => {
                    ReducerResultKind::InternalError("Module energy budget exhausted.")
                }
            };
            protocol::reducer_result(request_id, o.timestamp_micros, kind)
        }
    }
}

/// A one-off query: the rows of a SELECT, grouped under the table it reads (private tables
/// invisible to non-owners).
fn one_off(
    snapshot: &Snapshot,
    spec: &ModuleSpec,
    sql: &str,
    auth: &ClientAuth,
    reads_sender_views: bool,
) -> Result<Vec<protocol::EncodedTable>, String> {
    let bound = lightcone_query_planner::bind(snapshot, sql).map_err(|e| e.to_string())?;
    let mut table_name = String::new();
    for t in bound.plan.tables() {
        let name = snapshot.table(t).map(|v| v.schema().name().to_string()).unwrap_or_default();
        if !auth.is_owner && !spec.table_by_name(&name).is_some_and(|t| t.public) {
            return Err(format!("`{name}` is not a valid table"));
        }
        if table_name.is_empty() {
            table_name = name;
        }
    }
    if reads_sender_views || (!auth.is_owner && !spec.row_level_security.is_empty()) {
        // Other identities see every table through its row-level security filters, and
        // everybody sees only their own rows of a sender-bound view: evaluate the query like
        // a subscription (whole-row shapes only; others are refused).
        let tables = super::rls::visible_rows(spec, snapshot, sql, auth)?;
        let rows: Vec<Row> = tables.into_iter().flat_map(|t| t.rows).collect();
        let (data, ends) = encode_rows(spec, &table_name, &rows);
        return Ok(vec![(table_name, data, ends)]);
    }
    let params = lightcone_query_planner::Params { sender: Some(auth.sender) };
    let result = lightcone_query_planner::execute(snapshot, sql, &params).map_err(|e| e.to_string())?;
    let (data, ends) = encode_rows(spec, "", &result.rows);
    Ok(vec![(table_name, data, ends)])
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    // Proves the reply spin hands over a message queued while it waits, gives up after its
    // limit when nothing comes, and stops at once when the queue's senders are gone.
    #[test]
    fn spin_for_waits_only_as_long_as_allowed() {
        let (tx, mut rx) = Outbox::new(Arc::default());
        let sender = std::thread::spawn({
            let tx = tx.clone();
            move || {
                std::thread::sleep(Duration::from_millis(5));
                tx.push(vec![7]);
            }
        });
        let got = spin_for(&mut rx, Duration::from_secs(10));
        assert_eq!(got, Some(vec![7]));
        sender.join().unwrap();

        let start = Instant::now();
        assert!(spin_for(&mut rx, Duration::from_millis(20)).is_none());
        assert!(start.elapsed() >= Duration::from_millis(20));

        drop(tx);
        let start = Instant::now();
        assert!(spin_for(&mut rx, Duration::from_secs(10)).is_none());
        assert!(start.elapsed() < Duration::from_secs(5), "a closed queue ends the wait");
    }

    // Proves the byte bound: a backlog over MAX_QUEUED_BYTES disconnects the client with the
    // too-slow reason (well before the message bound), large messages count at most
    // MAX_CHARGE_PER_MESSAGE each (a few queued together, and a small one after them, are
    // fine), and bytes the session takes off make room again.
    #[test]
    fn an_outbox_is_bounded_in_bytes() {
        let kick = Arc::new(Kick::default());
        let (out, mut rx) = Outbox::new(Arc::clone(&kick));
        for _ in 0..3 {
            out.push(vec![0; MAX_QUEUED_BYTES + 10]);
        }
        out.push(vec![0; 100]);
        assert!(!kick.is_kicked(), "three large replies and an update are not a backlog");
        let sizes: Vec<usize> = std::iter::from_fn(|| rx.try_recv().ok()).map(|f| f.len()).collect();
        assert_eq!(sizes, [MAX_QUEUED_BYTES + 10, MAX_QUEUED_BYTES + 10, MAX_QUEUED_BYTES + 10, 100]);

        let chunk = MAX_CHARGE_PER_MESSAGE;
        for _ in 0..MAX_QUEUED_BYTES / chunk {
            out.push(vec![0; chunk]);
        }
        assert!(!kick.is_kicked(), "exactly at the bound is allowed");
        assert_eq!(rx.try_recv().map(|f| f.len()), Ok(chunk));
        out.push(vec![0; chunk]);
        assert!(!kick.is_kicked(), "taking a frame off makes room");
        out.push(vec![0; 1]);
        assert!(kick.is_kicked(), "one byte over the bound disconnects");
        let reason = kick.reason.lock().unwrap().clone().unwrap();
        assert!(reason.contains("too slow") && reason.contains("MiB"), "{reason}");
        // Nothing more is queued for a disconnected client.
        out.push(vec![1]);
        let left: Vec<usize> = std::iter::from_fn(|| rx.try_recv().ok()).map(|f| f.len()).collect();
        assert_eq!(left, vec![chunk; MAX_QUEUED_BYTES / chunk]);
    }
}
