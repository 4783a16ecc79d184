//! The server: SpacetimeDB's `/v1` HTTP API and WebSocket protocol over the databases of one
//! data directory. `lightcone start` runs it.

use std::net::SocketAddr;
use std::path::PathBuf;

use lightcone_wal::Durability;

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

/// Runs the server until Ctrl-C / SIGTERM, then shuts down gracefully (flushing every log).
pub fn run_blocking(options: ServerOptions) -> Result<(), ServerError> {
    let _ = options;
    Err(ServerError::Other("the server is not implemented yet".into()))
}
