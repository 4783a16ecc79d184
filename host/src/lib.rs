//! Lightcone's host: the wasmtime runtime speaking the SpacetimeDB module ABI, the HTTP and
//! WebSocket server, and the `lightcone` command-line tool.
//!
//! Owns: everything a user or a module touches directly. Storage, planning and delta
//! evaluation live in the crates below it.
//!
//! Status: not yet implemented — filled by the wasm-host and server issues.
