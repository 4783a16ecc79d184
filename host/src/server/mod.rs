//! The server: SpacetimeDB's `/v1` HTTP API and WebSocket protocol over the databases of one
//! data directory. `lightcone start` runs it.

pub mod auth;
pub mod http;
pub mod protocol;
pub mod registry;
pub mod rls;
pub mod sats_json;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use lightcone_wal::Durability;

use crate::runtime::WasmEngine;

/// Where and how the server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub durability: Durability,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            data_dir: default_data_dir(),
            durability: Durability::Fsync,
        }
    }
}

/// `$XDG_DATA_HOME/lightcone`, else `~/.local/share/lightcone`, else `./lightcone-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("lightcone");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/lightcone"),
        None => PathBuf::from("lightcone-data"),
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error("{0}")]
    Other(String),
}

/// A bound, running server (for tests and embedding).
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: Arc<http::AppState>,
}

/// Opens the data directory (restarting every database) and binds the listener.
pub async fn bind(
    options: &ServerOptions,
) -> Result<(tokio::net::TcpListener, Arc<http::AppState>), ServerError> {
    let data = options.data_dir.clone();
    let durability = options.durability;
    let state = tokio::task::spawn_blocking(move || -> Result<Arc<http::AppState>, ServerError> {
        std::fs::create_dir_all(&data)
            .map_err(|e| ServerError::DataDir { path: data.clone(), reason: e.to_string() })?;
        let keys = auth::Keys::load_or_create(&data.join("keys"))
            .map_err(|reason| ServerError::DataDir { path: data.clone(), reason })?;
        let engine = Arc::new(WasmEngine::new().map_err(|e| ServerError::Other(e.to_string()))?);
        let registry = registry::Registry::open(&data, engine, durability)
            .map_err(|e| ServerError::DataDir { path: data.clone(), reason: e.to_string() })?;
        Ok(Arc::new(http::AppState {
            registry: Arc::new(registry),
            keys: Arc::new(keys),
            closing: tokio::sync::watch::Sender::new(false),
            sessions: ws::LiveSessions::default(),
        }))
    })
    .await
    .map_err(|e| ServerError::Other(e.to_string()))??;
    let listener = match tokio::net::TcpListener::bind(options.listen_addr).await {
        Ok(listener) => listener,
        Err(source) => {
            // The databases are open (their threads run): stop them and flush their logs.
            let registry = Arc::clone(&state.registry);
            let _ = tokio::task::spawn_blocking(move || registry.shutdown()).await;
            return Err(ServerError::Bind { addr: options.listen_addr, source });
        }
    };
    Ok((listener, state))
}

/// Longest a graceful shutdown waits for HTTP requests in progress before it stops the
/// databases anyway: a client that never finishes reading a reply must not keep the server up.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves until `shutdown` resolves, then stops every database and flushes its log.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<http::AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = http::router(Arc::clone(&state));
    // Replies are small and latency-bound: no Nagle delay.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let mut closing = state.closing.subscribe();
    let shutdown = {
        let state = Arc::clone(&state);
        async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in progress, then flushing every log");
            // Ends replies that would never end by themselves (`logs --follow`).
            state.closing.send_replace(true);
        }
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown);
    let result = tokio::select! {
        result = server => result.map_err(|e| ServerError::Other(e.to_string())),
        _ = async {
            let _ = closing.wait_for(|&c| c).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "requests still in progress after the grace period; stopping anyway");
            Ok(())
        }
    };
    let registry = Arc::clone(&state.registry);
    let _ = tokio::task::spawn_blocking(move || registry.shutdown()).await;
    // Stopping the databases closed their clients; let the sessions send the close frames.
    if !state.sessions.ended(SESSION_CLOSE_WAIT).await {
        tracing::warn!("some WebSocket sessions had not closed when the server stopped");
    }
    result
}

/// Longest a shutdown waits for WebSocket sessions to send their close frames.
const SESSION_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs the server until Ctrl-C / SIGTERM, then shuts down gracefully (flushing every log).
pub fn run_blocking(options: ServerOptions) -> Result<(), ServerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServerError::Other(format!("cannot start the async runtime: {e}")))?;
    let served = rt.block_on(async move {
        let (listener, state) = bind(&options).await?;
        let addr = listener.local_addr().map_err(|e| ServerError::Other(e.to_string()))?;
        eprintln!("lightcone listening on http://{addr} (data directory {})", options.data_dir.display());
        serve(listener, state, shutdown_signal()).await?;
        eprintln!("lightcone stopped; every commit log is flushed");
        Ok(())
    });
    // Requests still running past the grace period hold blocking threads that dropping the
    // runtime would wait for without end; the databases are stopped and flushed by now.
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    served
}
