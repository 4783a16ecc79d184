//! Lightcone's SQL query planner.
//!
//! Owns: parsing SpacetimeDB-style SQL with `sqlparser`, binding names against the catalog
//! (resolved columns, literals typed to their column), logical plans ([`LogicalPlan`]),
//! physical plans with index selection ([`PhysicalPlan`]), `EXPLAIN` text, and executing plans
//! on an MVCC [`Snapshot`](lightcone_mvcc::Snapshot).
//!
//! Does not own: subscriptions and their deltas (`lightcone-incremental-eval`, which consumes
//! the public [`LogicalPlan`]) or authorization (the server/host decides who may run what).
//!
//! # Supported (this increment)
//! Single-table queries only:
//! `SELECT * | col, … | t.* | t.col FROM t [AS a] [WHERE pred] [LIMIT n]` and
//! `SELECT COUNT(*) [AS name] FROM t [WHERE pred] [LIMIT n]`, optionally prefixed by `EXPLAIN`.
//! `pred` compares a column with a literal or `:sender` (`= <> != < <= > >=`, either side),
//! combined with `AND`, `OR`, `NOT` and parentheses. Anything else is a
//! [`PlanError::Unsupported`].
//!
//! ```
//! use lightcone_mvcc::{ColumnDef, ColumnType, Database, TableDef, Value};
//! use lightcone_query_planner::{execute, Params};
//!
//! let db = Database::new();
//! let mut tx = db.begin();
//! let t = tx.create_table(TableDef::new("t", vec![ColumnDef::new("x", ColumnType::U32)])).unwrap();
//! tx.insert(t, vec![Value::U32(7)]).unwrap();
//! tx.commit();
//! let out = execute(&db.snapshot(), "SELECT x FROM t WHERE x > 3", &Params::default()).unwrap();
//! assert_eq!(out.rows, vec![vec![Value::U32(7)]]);
//! ```

mod error;
mod exec;
mod explain;
mod logical;
mod physical;

pub use error::PlanError;
pub use exec::{execute, execute_plan, Params, QueryResult};
pub use explain::explain;
pub use logical::{bind, BoundStatement, CmpOp, ColumnRef, LogicalPlan, Operand, Predicate};
pub use physical::{plan_physical, AccessPath, Output, PhysicalPlan};
