//! Lightcone's host: the wasmtime runtime speaking the SpacetimeDB module ABI, the HTTP and
//! WebSocket server, and the `lightcone` command-line tool.
//!
//! Owns: everything a user or a module touches directly. Storage, planning and delta
//! evaluation live in the crates below it.
//!
//! Status: the CLI has its `replay` command (log verification and point-in-time replay); the
//! wasm runtime and the server are filled by the wasm-host and server issues.

pub mod replay;
