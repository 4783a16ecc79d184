//! Lightcone's incremental view maintenance.
//!
//! Owns: the subscription registry, query deduplication, per-transaction delta evaluation
//! from each commit's `TxDelta`, and row-level-security filtering.
//!
//! Does not own: SQL parsing and planning (`lightcone-query-planner`) or the wire protocol
//! (the host).
//!
//! Status: not yet implemented — filled by the incremental-evaluator issue.
