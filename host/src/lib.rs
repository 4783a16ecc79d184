//! Lightcone's host: the wasmtime runtime speaking the SpacetimeDB module ABI, the HTTP and
//! WebSocket server, and the `lightcone` command-line tool.
//!
//! Owns: everything a user or a module touches directly — loading modules
//! ([`runtime`]), the ABI's host functions ([`abi`], [`wasi`]), module definitions
//! ([`module_def`]), BSATN ⇄ engine rows ([`codec`]), reducer calls as transactions with
//! lifecycle and scheduled reducers ([`module_host`]), module logs ([`logs`]), each database's
//! thread ([`worker`]), the server ([`server`]: data directory registry, identities and tokens,
//! the `/v1` HTTP routes, the WebSocket protocol and its subscription hub) and the CLI
//! ([`cli`], `replay`). Storage, planning and delta evaluation live in the crates below it.
//!
//! Does not own: the engine's data structures, SQL planning, delta computation (it wires
//! `lightcone-incremental-eval` to commits and sockets).

pub mod abi;
pub mod cli;
pub mod codec;
pub mod json;
pub mod logs;
pub mod module_def;
pub mod module_host;
pub mod procedure_http;
pub mod replay;
pub mod runtime;
pub mod schema_v9;
pub mod server;
mod tx_slot;
pub mod views;
pub mod wasi;
pub mod worker;

pub use module_def::DefError;
pub use module_host::{
    CallerInfo, HostConfig, ModuleHost, ProcedureOutcome, PublishReport, ReducerArgs, ReducerOutcome,
    ReducerStatus,
};
pub use runtime::WasmEngine;
pub use worker::{CommitEvent, CommitHook, CommitHooks, DatabaseHandle, Delivery, HookId, HookOutput, Start};

/// What can go wrong hosting a module. Failures *inside* a reducer (its `Err`, a panic, a trap,
/// running out of fuel) are not errors of this type: they are a [`ReducerStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("not a wasm module: {0}")]
    NotWasm(String),
    #[error("the wasm module does not export `{0}`; is it built with the `spacetimedb` crate?")]
    MissingExport(String),
    #[error("the module imports `{0}`, which Lightcone does not provide")]
    UnknownImport(String),
    #[error("instantiating the module failed: {0}")]
    Instantiate(String),
    #[error(transparent)]
    Definition(#[from] DefError),
    #[error("the program is {bytes} bytes; the limit is {max}")]
    ProgramTooLarge { bytes: usize, max: usize },
    #[error("the new module is not compatible with the data already in the database: {0}")]
    IncompatibleSchema(String),
    #[error("the `init` reducer failed: {0}")]
    InitFailed(String),
    #[error("no program has been published to this database")]
    NoProgram,
    #[error("no such reducer `{0}`")]
    NoSuchReducer(String),
    #[error("no such procedure `{0}`")]
    NoSuchProcedure(String),
    /// A private reducer or procedure (lifecycle, scheduled-only).
    #[error("`{0}` cannot be called by clients")]
    NotCallable(String),
    /// Arguments that do not fit the reducer's (or procedure's) parameters.
    #[error("invalid arguments for `{reducer}`: {reason}")]
    InvalidArguments { reducer: String, reason: String },
    #[error("{0}")]
    WriteFailed(String),
    #[error("engine: {0}")]
    Engine(String),
    #[error("commit log: {0}")]
    Durability(String),
    #[error("wasm runtime: {0}")]
    Runtime(String),
    /// The call was refused, unrun: this version of the module is shutting down (a module
    /// update swaps versions, or the database stopped).
    #[error("the database is shut down")]
    ShutDown,
}
