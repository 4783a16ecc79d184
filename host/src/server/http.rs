//! SpacetimeDB's `/v1` HTTP routes (SPEC §5) over the registry.

// Handlers return a ready `Response` as their error (axum's idiom); its size is irrelevant here.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use lightcone_mvcc::{ReadTx, U256};
use lightcone_query_planner::{Params, StatementResult};
use serde::Deserialize;
use serde_json::json;
use spacetimedb_sats::AlgebraicType;

use super::auth::{Identity, Keys, Verified};
use super::registry::{
    HostedDb, MigrationPolicy, PrePublish, PublishOp, Registry, RegistryError, UPDATE_WAIT,
};
use super::sats_json;
use crate::logs::LogRecord;
use crate::module_host::{CallerInfo, ReducerArgs, ReducerStatus};
use crate::HostError;

/// Largest module program accepted by publish.
pub const MAX_PROGRAM_BYTES: usize = 16 << 20;
/// Largest request body elsewhere (call args, SQL).
pub const MAX_REQUEST_BYTES: usize = 32 << 20;

pub struct AppState {
    pub registry: Arc<Registry>,
    pub keys: Arc<Keys>,
    /// Turns true when a graceful shutdown starts: replies that would otherwise never end
    /// (a followed log) end then, so the shutdown does not wait for them.
    pub closing: tokio::sync::watch::Sender<bool>,
    pub sessions: super::ws::LiveSessions,
}

type S = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/ping", get(|| async { StatusCode::OK }))
        .route("/v1/identity", post(new_identity))
        .route("/v1/identity/public-key", get(public_key))
        .route("/v1/identity/websocket-token", post(websocket_token))
        .route("/v1/identity/{id}/verify", get(verify_identity))
        .route("/v1/identity/{id}/databases", get(databases_of))
        .route("/v1/database", post(publish_unnamed))
        .route("/v1/database/{name}", put(publish_named).get(database_info).delete(delete_database))
        .route("/v1/database/{name}/pre_publish", post(pre_publish))
        .route("/v1/database/{db}/identity", get(database_identity))
        .route("/v1/database/{db}/names", get(database_names))
        .route("/v1/database/{db}/call/{func}", post(call))
        .route("/v1/database/{db}/schema", get(schema))
        .route("/v1/database/{db}/logs", get(logs))
        .route("/v1/database/{db}/sql", post(sql))
        .route("/v1/database/{db}/subscribe", get(super::ws::subscribe))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

#[derive(Debug, Deserialize, Default)]
pub struct TokenQuery {
    pub token: Option<String>,
}

/// The caller from `Authorization: Bearer` (or `?token=`); `Ok(None)` when absent.
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Option<Verified>, Response> {
    let header_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    match header_token.or(query_token) {
        None => Ok(None),
        Some(t) => state
            .keys
            .verify(t)
            .map(Some)
            .map_err(|e| text(StatusCode::UNAUTHORIZED, format!("invalid token: {e}"))),
    }
}

/// The caller, minting a fresh identity for an anonymous request (returned in headers).
fn caller_or_mint(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(Verified, Option<Verified>), Response> {
    match authenticate(state, headers, query_token)? {
        Some(v) => Ok((v, None)),
        None => {
            let v = state.keys.mint_anonymous().map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e))?;
            Ok((v.clone(), Some(v)))
        }
    }
}

fn with_minted(mut resp: Response, minted: Option<Verified>) -> Response {
    if let Some(v) = minted {
        let h = resp.headers_mut();
        if let Ok(id) = HeaderValue::from_str(&v.identity.to_hex()) {
            h.insert("spacetime-identity", id);
        }
        if let Ok(tok) = HeaderValue::from_str(&v.token) {
            h.insert("spacetime-identity-token", tok);
        }
    }
    resp
}

fn no_database(db: &str) -> Response {
    text(StatusCode::NOT_FOUND, format!("no such database: `{db}`"))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}")))
}

async fn new_identity(State(s): S) -> Response {
    match s.keys.mint_anonymous() {
        Ok(v) => Json(json!({"identity": v.identity.to_hex(), "token": v.token})).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn public_key(State(s): S) -> Response {
    ([(header::CONTENT_TYPE, "application/pem-certificate-chain")], s.keys.public_key_pem().to_string())
        .into_response()
}

async fn websocket_token(State(s): S, Query(q): Query<TokenQuery>, headers: HeaderMap) -> Response {
    match authenticate(&s, &headers, q.token.as_deref()) {
        Err(r) => r,
        Ok(None) => text(StatusCode::UNAUTHORIZED, "this route needs an Authorization: Bearer token"),
        Ok(Some(v)) => match s.keys.short_lived(&v) {
            Ok(t) => Json(json!({"token": t.token})).into_response(),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
    }
}

async fn verify_identity(State(s): S, Path(id): Path<String>, headers: HeaderMap) -> Response {
    match authenticate(&s, &headers, None) {
        Err(r) => r,
        Ok(None) => StatusCode::UNAUTHORIZED.into_response(),
        Ok(Some(v)) if Identity::from_hex(&id) == Some(v.identity) => StatusCode::NO_CONTENT.into_response(),
        Ok(Some(_)) => StatusCode::BAD_REQUEST.into_response(),
    }
}

async fn databases_of(State(s): S, Path(id): Path<String>) -> Response {
    match Identity::from_hex(&id) {
        Some(owner) => Json(json!({"identities": s.registry.owned_by(owner)})).into_response(),
        None => text(StatusCode::BAD_REQUEST, format!("`{id}` is not an identity")),
    }
}

#[derive(Debug, Deserialize, Default)]
struct PublishQuery {
    clear: Option<bool>,
    /// The migration token from `pre_publish` (as upstream: the caller authenticates with
    /// the `Authorization` header here).
    token: Option<String>,
    /// `Compatible` (the default) or `BreakClients`.
    policy: Option<String>,
}

async fn publish_unnamed(
    State(s): S,
    Query(q): Query<PublishQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    publish(s, None, q, headers, body).await
}

async fn publish_named(
    State(s): S,
    Path(name): Path<String>,
    Query(q): Query<PublishQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    publish(s, Some(name), q, headers, body).await
}

async fn publish(
    s: Arc<AppState>,
    name: Option<String>,
    q: PublishQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (caller, minted) = match caller_or_mint(&s, &headers, None) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let policy = match (q.policy.as_deref(), q.token) {
        (None | Some("Compatible"), _) => MigrationPolicy::Compatible,
        (Some("BreakClients"), Some(token)) => MigrationPolicy::BreakClients(token),
        (Some("BreakClients"), None) => {
            return text(
                StatusCode::BAD_REQUEST,
                "Migration policy is set to `BreakClients`, but no migration token was provided.",
            )
        }
        (Some(other), _) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("unknown migration policy `{other}`: use `Compatible` or `BreakClients`"),
            )
        }
    };
    if body.len() > MAX_PROGRAM_BYTES {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the program is {} bytes; the limit is {MAX_PROGRAM_BYTES}", body.len()),
        );
    }
    let registry = Arc::clone(&s.registry);
    let clear = q.clear.unwrap_or(false);
    let name2 = name.clone();
    let result = match blocking(move || {
        registry.publish_with(name2.as_deref(), body.to_vec(), caller.identity, clear, &policy)
    })
    .await
    {
        Ok(r) => r,
        Err(r) => return r,
    };
    let resp = match result {
        Ok((db, op)) => Json(json!({"Success": {
            "domain": db.meta.name,
            "database_identity": db.meta.identity,
            "op": if op == PublishOp::Created { "created" } else { "updated" },
        }}))
        .into_response(),
        Err(RegistryError::PermissionDenied(n)) => {
            (StatusCode::FORBIDDEN, Json(json!({"PermissionDenied": {"name": n}}))).into_response()
        }
        Err(RegistryError::BadName(n)) => {
            text(StatusCode::BAD_REQUEST, RegistryError::BadName(n).to_string())
        }
        Err(RegistryError::Host(HostError::ShutDown)) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "publish failed: the server is shutting down")
        }
        Err(RegistryError::Host(e)) => text(StatusCode::BAD_REQUEST, format!("publish failed: {e}")),
        Err(e @ RegistryError::BreaksClients(_)) => {
            text(StatusCode::BAD_REQUEST, format!("publish failed: {e}"))
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("publish failed: {e}")),
    };
    with_minted(resp, minted)
}

/// `POST /v1/database/:name/pre_publish`: what publishing the body (a program) over the
/// database would do, changing nothing — for its owner. 404 for a database that does not
/// exist (the official CLI then publishes a new one).
async fn pre_publish(State(s): S, Path(name): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    // A missing database first, as upstream: the CLI takes 404 for "a new database", whoever
    // asks (an anonymous publish included).
    if s.registry.resolve(&name).is_none() {
        return no_database(&name);
    }
    let caller = match authenticate(&s, &headers, None) {
        Ok(Some(v)) => v,
        Ok(None) => return text(StatusCode::UNAUTHORIZED, "pre_publish needs the owner's token"),
        Err(r) => return r,
    };
    if body.len() > MAX_PROGRAM_BYTES {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the program is {} bytes; the limit is {MAX_PROGRAM_BYTES}", body.len()),
        );
    }
    let registry = Arc::clone(&s.registry);
    let result = match blocking(move || registry.pre_publish(&name, &body, caller.identity)).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match result {
        Ok(PrePublish::Auto { plan, token }) => Json(json!({"AutoMigrate": {
            "migrate_plan": plan.describe(),
            "break_clients": plan.breaks_clients,
            "token": token,
            // Upstream's 1.x -> 2.x upgrade (module definition V9 -> V10): never here, since
            // Lightcone refuses V9 modules, so no database holds one to upgrade from.
            "major_version_upgrade": false,
        }}))
        .into_response(),
        Ok(PrePublish::Manual { reason }) => Json(json!({"ManualMigrate": {
            "reason": reason,
            "major_version_upgrade": false,
        }}))
        .into_response(),
        Err(RegistryError::NotFound(n)) => no_database(&n),
        Err(RegistryError::PermissionDenied(n)) => {
            (StatusCode::FORBIDDEN, Json(json!({"PermissionDenied": {"name": n}}))).into_response()
        }
        Err(RegistryError::Host(e)) => {
            text(StatusCode::BAD_REQUEST, format!("pre-publish check failed: {e}"))
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("pre-publish check failed: {e}")),
    }
}

async fn database_info(State(s): S, Path(db): Path<String>) -> Response {
    let Some(d) = s.registry.resolve(&db) else { return no_database(&db) };
    let program_hash = d
        .handle()
        .and_then(|h| crate::module_host::stored_program(&h.snapshot()))
        .map(|p| blake3::hash(&p.program).to_hex().to_string());
    Json(json!({
        "database_identity": d.meta.identity,
        "owner_identity": d.meta.owner,
        "host_type": "Wasm",
        "initial_program": program_hash,
    }))
    .into_response()
}

async fn database_identity(State(s): S, Path(db): Path<String>) -> Response {
    match s.registry.resolve(&db) {
        Some(d) => text(StatusCode::OK, d.meta.identity.clone()),
        None => no_database(&db),
    }
}

async fn database_names(State(s): S, Path(db): Path<String>) -> Response {
    match s.registry.resolve(&db) {
        Some(d) => Json(json!({"names": d.meta.name.iter().collect::<Vec<_>>()})).into_response(),
        None => no_database(&db),
    }
}

async fn delete_database(
    State(s): S,
    Path(db): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let caller = match authenticate(&s, &headers, q.token.as_deref()) {
        Ok(Some(v)) => v,
        Ok(None) => return text(StatusCode::UNAUTHORIZED, "deleting a database needs the owner's token"),
        Err(r) => return r,
    };
    let registry = Arc::clone(&s.registry);
    let db2 = db.clone();
    match blocking(move || registry.delete(&db2, caller.identity)).await {
        Err(r) => r,
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(RegistryError::NotFound(_))) => no_database(&db),
        Ok(Err(RegistryError::PermissionDenied(_))) => {
            text(StatusCode::FORBIDDEN, format!("only the owner of `{db}` may delete it"))
        }
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn random_connection_id() -> [u8; 16] {
    let mut c = [0u8; 16];
    while c == [0; 16] {
        let _ = getrandom::getrandom(&mut c);
    }
    c
}

pub fn caller_info(v: &Verified, connection_id: [u8; 16]) -> CallerInfo {
    CallerInfo { identity: v.identity.to_le(), connection_id, jwt_payload: Some(v.payload.as_str().into()) }
}

async fn call(
    State(s): S,
    Path((db, func)): Path<(String, String)>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be a JSON array of arguments with Content-Type: application/json",
        );
    }
    let (caller, minted) = match caller_or_mint(&s, &headers, q.token.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(d) = s.registry.resolve(&db) else { return no_database(&db) };
    let Ok(args) = String::from_utf8(body.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "invalid arguments: the body is not UTF-8");
    };
    let info = caller_info(&caller, random_connection_id());
    // Waits for a module update in progress (as upstream holds calls meanwhile).
    let waited = {
        let d = Arc::clone(&d);
        blocking(move || d.running_handle(UPDATE_WAIT)).await
    };
    let handle = match waited {
        Err(r) => return r,
        Ok(None) => {
            return text(StatusCode::SERVICE_UNAVAILABLE, "the database is shut down or still updating")
        }
        Ok(Some(h)) => h,
    };
    // A name that is not a reducer may be a procedure (SPEC §5): 200 + its JSON return value.
    let spec = Arc::clone(handle.spec());
    if spec.reducer_id(&func).is_none() {
        if let Some(id) = spec.procedure_id(&func) {
            let result = blocking(move || {
                connected_during(&d, handle, &info, |handle| {
                    handle.call_procedure(&func, &info, ReducerArgs::Json(args.clone()))
                })
                .map(|(r, _)| {
                    // The version that ran it types the answer: an update may have come between,
                    // and a call it stopped before it started runs on the next version.
                    r.map(|outcome| {
                        let spec = Arc::clone(&outcome.spec);
                        let id = spec.procedure_id(&func).unwrap_or(id);
                        (outcome, spec, id)
                    })
                })
            })
            .await;
            let resp = match result {
                Err(r) => r,
                Ok(Err(e)) => host_error_response(e),
                Ok(Ok(Err(refused))) => refused_response(&refused),
                Ok(Ok(Ok((outcome, spec, id)))) => procedure_response(&spec, id, outcome),
            };
            return with_minted(resp, minted);
        }
    }
    let result = blocking(move || {
        connected_during(&d, handle, &info, |handle| {
            handle.call_reducer(&func, &info, ReducerArgs::Json(args.clone()))
        })
        .map(|(r, _)| r)
    })
    .await;
    let resp = match result {
        Err(r) => r,
        Ok(Err(e)) => host_error_response(e),
        Ok(Ok(Err(refused))) => refused_response(&refused),
        Ok(Ok(Ok(outcome))) => {
            let mut resp = match &outcome.status {
                ReducerStatus::Committed => StatusCode::OK.into_response(),
                ReducerStatus::Failed(m) => {
                    text(StatusCode::from_u16(530).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), m.clone())
                }
                ReducerStatus::Panicked(m) => text(
                    StatusCode::from_u16(530).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    format!("The Wasm instance encountered a fatal error: {m}"),
                ),
                ReducerStatus::OutOfEnergy => {
                    text(StatusCode::PAYMENT_REQUIRED, "Module energy budget exhausted.")
                }
            };
            let h = resp.headers_mut();
            h.insert("spacetime-energy-used", HeaderValue::from(outcome.energy_used));
            h.insert(
                "spacetime-execution-duration-micros",
                HeaderValue::from(outcome.duration.as_micros() as u64),
            );
            resp
        }
    };
    with_minted(resp, minted)
}

/// Runs `call` with the caller counted as connected (SPEC §5): `client_connected` first (its
/// `Err` refuses the call: the inner `Err`), `client_disconnected` after — each once, each on
/// whichever module version runs then (an update may come between them). Also returns the
/// handle of the version that ran `call`.
fn connected_during<T>(
    d: &HostedDb,
    handle: Arc<crate::DatabaseHandle>,
    info: &CallerInfo,
    call: impl Fn(&crate::DatabaseHandle) -> Result<T, HostError>,
) -> Result<(Result<T, String>, Arc<crate::DatabaseHandle>), HostError> {
    let (connected, handle) = on_running_version(d, handle, |h| h.client_connected(info))?;
    if let Some(o) = connected {
        if !o.is_committed() {
            return Ok((Err(o.error().unwrap_or_default()), handle));
        }
    }
    let ran = on_running_version(d, Arc::clone(&handle), call);
    let last = ran.as_ref().map_or(handle, |(_, h)| Arc::clone(h));
    let _ = on_running_version(d, last, |h| h.client_disconnected(info));
    ran.map(|(r, h)| (Ok(r), h))
}

/// Runs `call` on `handle`; if that version of the module refused it, unrun, because a module
/// update is swapping versions, runs it on the next version (within [`UPDATE_WAIT`]). Returns
/// the handle of the version that ran it.
fn on_running_version<T>(
    d: &HostedDb,
    mut handle: Arc<crate::DatabaseHandle>,
    call: impl Fn(&crate::DatabaseHandle) -> Result<T, HostError>,
) -> Result<(T, Arc<crate::DatabaseHandle>), HostError> {
    let start = std::time::Instant::now();
    loop {
        match call(&handle) {
            Err(HostError::ShutDown) => match d.running_handle(UPDATE_WAIT.saturating_sub(start.elapsed())) {
                Some(next) => handle = next,
                None => return Err(HostError::ShutDown),
            },
            other => return other.map(|r| (r, handle)),
        }
    }
}

fn refused_response(refused: &str) -> Response {
    text(StatusCode::FORBIDDEN, format!("the module refused the connection: {refused}"))
}

/// A procedure's answer: 200 + the SATS-JSON of its return value, or 530 + why it failed.
fn procedure_response(
    spec: &crate::module_def::ModuleSpec,
    id: usize,
    outcome: crate::ProcedureOutcome,
) -> Response {
    let mut resp = match &outcome.result {
        Ok(bytes) => {
            let ty = sats_json::resolve_deep(&spec.procedures[id].return_type, &spec.typespace, 0);
            match sats_json::bsatn_json_text(bytes, &ty) {
                Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the procedure's return value does not match its declared type: {e}"),
                ),
            }
        }
        Err(m) => text(
            StatusCode::from_u16(530).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!("The Wasm instance encountered a fatal error: {m}"),
        ),
    };
    let h = resp.headers_mut();
    h.insert("spacetime-energy-used", HeaderValue::from(outcome.energy_used));
    h.insert("spacetime-execution-duration-micros", HeaderValue::from(outcome.duration.as_micros() as u64));
    resp
}

fn host_error_response(e: HostError) -> Response {
    let status = match &e {
        HostError::NoSuchReducer(_) | HostError::NoSuchProcedure(_) => StatusCode::NOT_FOUND,
        HostError::InvalidArguments { .. } | HostError::NotCallable(_) | HostError::WriteFailed(_) => {
            StatusCode::BAD_REQUEST
        }
        HostError::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text(status, e.to_string())
}

#[derive(Debug, Deserialize)]
struct SchemaQuery {
    version: Option<u32>,
}

async fn schema(State(s): S, Path(db): Path<String>, Query(q): Query<SchemaQuery>) -> Response {
    let Some(d) = s.registry.resolve(&db) else { return no_database(&db) };
    let Some(h) = d.handle() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the database is being updated");
    };
    let to_json = |v: Result<serde_json::Value, serde_json::Error>| match v {
        Ok(v) => Json(v).into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match q.version.unwrap_or(10) {
        10 => {}
        // What the `spacetime` CLI before 2.8 asks for.
        9 => {
            return match crate::schema_v9::raw_def_v9(h.spec()) {
                Ok(def) => to_json(serde_json::to_value(
                    spacetimedb_sats::ser::serde::SerializeWrapper::from_ref(&def),
                )),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
            };
        }
        other => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("schema version {other} is not served (versions: 9, 10)"),
            )
        }
    }
    let raw = &h.spec().raw;
    match spacetimedb_sats::bsatn::from_slice::<spacetimedb_lib::RawModuleDef>(raw) {
        Ok(spacetimedb_lib::RawModuleDef::V10(def)) => {
            to_json(serde_json::to_value(spacetimedb_sats::ser::serde::SerializeWrapper::from_ref(&def)))
        }
        _ => text(StatusCode::INTERNAL_SERVER_ERROR, "the module definition could not be re-read"),
    }
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    num_lines: Option<usize>,
    follow: Option<bool>,
    token: Option<String>,
}

pub fn log_json(r: &LogRecord) -> String {
    json!({
        "ts": r.ts_micros,
        "level": r.level.as_str(),
        "target": r.target,
        "filename": r.filename,
        "line_number": r.line_number,
        "message": r.message,
    })
    .to_string()
}

fn owner_or_refuse(
    state: &AppState,
    d: &HostedDb,
    headers: &HeaderMap,
    token: Option<&str>,
    what: &str,
) -> Result<Verified, Response> {
    match authenticate(state, headers, token)? {
        Some(v) if v.identity == d.owner() => Ok(v),
        Some(_) => Err(text(StatusCode::FORBIDDEN, format!("only the database owner may {what}"))),
        None => Err(text(StatusCode::UNAUTHORIZED, format!("{what} needs the owner's token"))),
    }
}

async fn logs(
    State(s): S,
    Path(db): Path<String>,
    Query(q): Query<LogsQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(d) = s.registry.resolve(&db) else { return no_database(&db) };
    if let Err(r) = owner_or_refuse(&s, &d, &headers, q.token.as_deref(), "read the logs") {
        return r;
    }
    let Some(h) = d.handle() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the database is being updated");
    };
    let logs = Arc::clone(h.logs());
    let follow = q.follow.unwrap_or(false);
    let n = q.num_lines.or(if follow { Some(10) } else { None });
    let tail = logs.tail(n);
    let mut next = tail.last().map(|r| r.seq + 1).unwrap_or(0);
    let initial: String = tail.iter().map(|r| log_json(r) + "\n").collect();
    if !follow {
        return ([(header::CONTENT_TYPE, "application/x-ndjson")], initial).into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let closing = s.closing.subscribe();
    std::thread::spawn(move || {
        if tx.blocking_send(Ok(Bytes::from(initial))).is_err() {
            return;
        }
        // A graceful shutdown ends the stream within about a second (the wait below). A
        // client that stopped reading blocks the send instead; the shutdown's grace period
        // bounds that case.
        while !*closing.borrow() {
            let recs = logs.wait_from(next, Duration::from_secs(1));
            if let Some(last) = recs.last() {
                next = last.seq + 1;
            }
            let chunk: String = recs.iter().map(|r| log_json(r) + "\n").collect();
            // An empty chunk doubles as a liveness probe: a gone client ends the thread.
            if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response()
}

async fn sql(
    State(s): S,
    Path(db): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(d) = s.registry.resolve(&db) else { return no_database(&db) };
    let (caller, minted) = match caller_or_mint(&s, &headers, q.token.as_deref()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(h) = d.handle() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the database is being updated");
    };
    let Ok(query) = String::from_utf8(body.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "the SQL is not UTF-8");
    };
    let is_owner = caller.identity == d.owner();
    let sender = U256::from_le_bytes(caller.identity.to_le());
    let start = Instant::now();
    let result = blocking(move || run_sql(&d, &h, &query, sender, is_owner)).await;
    let resp = match result {
        Err(r) => r,
        Ok(Err(e)) => text(e.status, e.message),
        Ok(Ok(results)) => {
            let elapsed = start.elapsed().as_micros() as u64;
            let out: Vec<StatementJson> = results
                .into_iter()
                .map(|mut r| {
                    r.total_duration_micros = elapsed;
                    r
                })
                .collect();
            match serde_json::to_string(&out) {
                Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
    };
    with_minted(resp, minted)
}

/// Column types of a query result: the module's types where a result column comes from a table
/// column of the same name and engine type, else the engine type's SATS type.
fn result_types(
    h: &crate::worker::DatabaseHandle,
    columns: &[(String, lightcone_mvcc::ColumnType)],
) -> Vec<(String, AlgebraicType)> {
    let spec = h.spec();
    columns
        .iter()
        .map(|(name, ty)| {
            let found = spec
                .tables
                .iter()
                .flat_map(|t| t.columns.iter().zip(&t.codec.columns))
                .find(|((n, _), (_, c))| n == name && c.engine_type() == *ty);
            let sats = match found {
                Some(((_, t), _)) => sats_json::resolve_deep(t, &spec.typespace, 0),
                None => sats_json::primitive_type(*ty),
            };
            (name.clone(), sats)
        })
        .collect()
}

fn stats_json(i: u64, d: u64, u: u64) -> serde_json::Value {
    json!({"rows_inserted": i, "rows_deleted": d, "rows_updated": u})
}

/// One statement's answer on `/sql`.
#[derive(serde::Serialize)]
struct StatementJson {
    schema: serde_json::Value,
    rows: Vec<Box<serde_json::value::RawValue>>,
    total_duration_micros: u64,
    stats: serde_json::Value,
}

fn rows_json(
    h: &crate::worker::DatabaseHandle,
    r: &lightcone_query_planner::QueryResult,
) -> Result<StatementJson, String> {
    let types = result_types(h, &r.columns);
    let product = sats_json::product_of(&types);
    let rows = r.rows.iter().map(|row| sats_json::row_json(row, &product)).collect::<Result<Vec<_>, _>>()?;
    Ok(StatementJson {
        schema: sats_json::type_json(&product),
        rows,
        total_duration_micros: 0,
        stats: stats_json(0, 0, 0),
    })
}

/// Private tables do not exist for non-owners.
fn check_visible(h: &crate::worker::DatabaseHandle, sql: &str) -> Result<(), String> {
    let snap = h.snapshot();
    let bound = lightcone_query_planner::bind(&snap, sql).map_err(|e| e.to_string())?;
    for table in bound.plan.tables() {
        let name = snap.table(table).map(|t| t.schema().name().to_string()).unwrap_or_default();
        let public = h.spec().table_by_name(&name).is_some_and(|t| t.public);
        if !public {
            return Err(format!("`{name}` is not a valid table"));
        }
    }
    Ok(())
}

/// A non-owner's query on a module with row-level security: evaluated like a subscription, so
/// every table it reads is seen through its filters. Only whole-row queries can be filtered
/// exactly; anything else (projections, COUNT) is refused rather than risk showing hidden rows.
fn rls_rows(
    h: &crate::worker::DatabaseHandle,
    snapshot: &lightcone_mvcc::Snapshot,
    sql: &str,
    sender: U256,
    is_owner: bool,
) -> Result<StatementJson, String> {
    let auth = lightcone_incremental_eval::ClientAuth { sender, is_owner };
    let tables = super::rls::visible_rows(h.spec(), snapshot, sql, &auth)?;
    let spec = h.spec();
    let Some(t) = tables.first() else {
        let bound = lightcone_query_planner::bind(snapshot, sql).map_err(|e| e.to_string())?;
        let name = bound
            .plan
            .tables()
            .first()
            .and_then(|&id| snapshot.table(id).ok().map(|v| v.schema().name().to_string()))
            .unwrap_or_default();
        return table_rows_json(spec, &name, &[]);
    };
    table_rows_json(spec, &t.table_name, &t.rows)
}

fn table_rows_json(
    spec: &crate::module_def::ModuleSpec,
    table: &str,
    rows: &[lightcone_mvcc::Row],
) -> Result<StatementJson, String> {
    let t = spec.table_by_name(table).ok_or_else(|| format!("`{table}` is not a valid table"))?;
    let types: Vec<(String, AlgebraicType)> = t
        .columns
        .iter()
        .map(|(n, ty)| (n.clone(), sats_json::resolve_deep(ty, &spec.typespace, 0)))
        .collect();
    let product = sats_json::product_of(&types);
    // A sender-bound view's rows start with the hidden sender column.
    let skip = usize::from(t.codec.hidden_sender);
    let rows = rows
        .iter()
        .map(|row| sats_json::row_json(&row[skip.min(row.len())..].to_vec(), &product))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StatementJson {
        schema: sats_json::type_json(&product),
        rows,
        total_duration_micros: 0,
        stats: stats_json(0, 0, 0),
    })
}

/// Why a SQL request failed, with the status to answer it with.
struct SqlError {
    status: StatusCode,
    message: String,
}

impl From<String> for SqlError {
    fn from(message: String) -> SqlError {
        SqlError { status: StatusCode::BAD_REQUEST, message }
    }
}

fn run_sql(
    d: &HostedDb,
    h: &crate::worker::DatabaseHandle,
    sql: &str,
    sender: U256,
    is_owner: bool,
) -> Result<Vec<StatementJson>, SqlError> {
    let params = Params { sender: Some(sender) };
    if !is_owner && lightcone_query_planner::writes(sql) {
        return Err(SqlError {
            status: StatusCode::FORBIDDEN,
            message: "not authorized to run SQL DML statements: only the database owner may change rows"
                .into(),
        });
    }
    let views = super::rls::sender_bound_views(h.spec(), &h.snapshot(), &[sql]);
    if !views.is_empty() {
        // A sender-bound view: computed for the caller first, read through its own rows only.
        if !is_owner {
            check_visible(h, sql)?;
        }
        let identity = sender.to_le_bytes();
        let held = d.acquire_views(h, identity, views).map_err(|e| e.to_string())?;
        let result = rls_rows(h, &h.snapshot(), sql, sender, is_owner);
        // On the next version if an update stopped this one meanwhile: it took the reader over.
        d.release_views(identity, held);
        return Ok(vec![result?]);
    }
    if lightcone_query_planner::bind(&h.snapshot(), sql).is_err() {
        if let Some(view) = super::rls::mentioned_sender_bound_view(h.spec(), sql) {
            return Err(format!(
                "`{view}` is a sender-bound view: read it in a SELECT of its own (each reader sees only \
                 its own rows), and change the tables it reads rather than the view"
            )
            .into());
        }
    }
    if !is_owner {
        // Readers: one SELECT on a snapshot, public tables only, row-level security applied.
        check_visible(h, sql)?;
        let snapshot = h.snapshot();
        if !h.spec().row_level_security.is_empty() {
            return Ok(vec![rls_rows(h, &snapshot, sql, sender, false)?]);
        }
        let r = lightcone_query_planner::execute(&snapshot, sql, &params).map_err(|e| e.to_string())?;
        return Ok(vec![rows_json(h, &r)?]);
    }
    let out: Arc<std::sync::Mutex<Vec<StatementResult>>> = Arc::default();
    let out2 = Arc::clone(&out);
    let sql_owned = sql.to_string();
    let spec = Arc::clone(h.spec());
    h.write(move |tx| {
        let results =
            lightcone_query_planner::execute_batch(tx, &sql_owned, &params).map_err(|e| e.to_string())?;
        for id in tx.touched_tables().collect::<Vec<_>>() {
            let name = tx.table(id).map(|t| t.schema().name().to_string()).unwrap_or_default();
            if spec.table_by_name(&name).is_some_and(|t| t.view.is_some()) {
                return Err(format!(
                    "`{name}` is a view: the module computes its rows; change the tables it reads instead"
                ));
            }
        }
        *out2.lock().unwrap_or_else(|p| p.into_inner()) = results;
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let results = std::mem::take(&mut *out.lock().unwrap_or_else(|p| p.into_inner()));
    results
        .iter()
        .map(|r| match r {
            StatementResult::Rows(q) => rows_json(h, q),
            StatementResult::Dml(st) => Ok(StatementJson {
                schema: json!({"elements": []}),
                rows: Vec::new(),
                total_duration_micros: 0,
                stats: stats_json(st.rows_inserted, st.rows_deleted, st.rows_updated),
            }),
        })
        .collect::<Result<_, String>>()
        .map_err(SqlError::from)
}
