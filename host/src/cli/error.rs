//! What can go wrong in a client command. `main` prints these as `error: …` and exits non-zero.

use std::path::PathBuf;

/// A client command's failure.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the Lightcone server at {server} — is `lightcone start` running? ({reason})")]
    Unreachable { server: String, reason: String },
    #[error("request to {url} failed: {reason}")]
    Transport { url: String, reason: String },
    /// The server answered with a non-success status; `body` is its text.
    #[error("{}", http_message(*.status, .body))]
    Http { status: u16, body: String },
    #[error("unknown server `{0}`: give a URL (http://host:port), host:port, or a nickname from `lightcone server list`")]
    UnknownServer(String),
    #[error("the server sent a response we cannot read: {0}")]
    BadResponse(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("config file {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("building the module failed: {0}")]
    Build(String),
    #[error("{path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("subscription failed: {0}")]
    Subscription(String),
    #[error("websocket: {0}")]
    WebSocket(String),
    #[error("{0}")]
    Aborted(String),
}

fn http_message(status: u16, body: &str) -> String {
    let body = body.trim();
    let reason = match status {
        400 => "bad request",
        401 => "unauthorized (the stored token was refused; try `lightcone logout` then again)",
        403 => "forbidden",
        404 => "not found",
        402 => "out of energy",
        409 => "conflict",
        500 => "internal server error",
        530 => "the reducer failed",
        _ => "",
    };
    match (body.is_empty(), reason.is_empty()) {
        (false, _) => body.to_owned(),
        (true, false) => format!("the server answered {status} ({reason})"),
        (true, true) => format!("the server answered {status}"),
    }
}

impl CliError {
    /// A `400`/`404`… answer with its body as the message.
    pub fn status(&self) -> Option<u16> {
        match self {
            CliError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}
