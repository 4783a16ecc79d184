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
//! `SELECT * | col, … | t.* | t.col FROM from [WHERE pred] [ORDER BY col [ASC|DESC], …] [LIMIT n]`
//! and `SELECT COUNT(*) [AS name] FROM from [WHERE pred] [ORDER BY …] [LIMIT n]`, optionally
//! prefixed by `EXPLAIN`.
//! - `from` is `t [AS a]` followed by any number of `[INNER] JOIN u [AS b] ON on` (inner
//!   equi-joins). `on` is a conjunction of `column = column` equalities between two different
//!   tables in scope whose columns have the same type. A table used twice needs an alias.
//!   `SELECT *` lists all columns of all tables in `FROM` order; an unqualified column must be
//!   unique across the joined tables ([`PlanError::AmbiguousColumn`] otherwise).
//! - `pred` compares a column with a literal or `:sender` (`= <> != < <= > >=`, either side),
//!   combined with `AND`, `OR`, `NOT` and parentheses. Conjuncts over one table are pushed down
//!   to that table (so its indexes are used); the rest are applied after the joins.
//! - Joins run left-deep in `FROM` order: an index nested-loop join when the inner table has an
//!   index whose leading columns are join columns, else a hash join built on the smaller side.
//! - `ORDER BY` sorts (by [`Value`](lightcone_mvcc::Value)'s `Ord`) before `LIMIT`.
//!
//! Anything else (outer/cross/comma joins, column-to-column comparisons in `WHERE`, expressions
//! in `ORDER BY`, `OFFSET`, …) is a [`PlanError::Unsupported`].
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

mod dml;
mod error;
mod exec;
mod explain;
mod logical;
mod physical;

pub use dml::{execute_batch, execute_dml, execute_statement, DmlStats, StatementResult};
pub use error::PlanError;
pub use exec::{execute, execute_plan, Params, QueryResult};
pub use explain::explain;
pub use logical::{bind, BoundStatement, CmpOp, ColumnRef, LogicalPlan, Operand, Predicate, SortKey};
pub use physical::{plan_physical, AccessPath, JoinMethod, JoinStep, Output, PhysicalPlan, TableAccess};
