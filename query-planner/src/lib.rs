//! Lightcone's SQL query planner.
//!
//! Owns: parsing SpacetimeDB-style SQL with `sqlparser`, binding names against the catalog,
//! logical plans, physical plans with index selection, and executing them on an MVCC snapshot.
//!
//! Does not own: subscription deltas (`lightcone-incremental-eval`) or authorization (the host).
//!
//! Status: not yet implemented — filled by the query-planner issue.
