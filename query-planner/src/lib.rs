//! Lightcone's SQL query planner.
//!
//! Owns: parsing SpacetimeDB-style SQL with `sqlparser`, binding names against the catalog
//! (resolved columns, literals typed to their column), logical plans ([`LogicalPlan`]),
//! physical plans with index selection ([`PhysicalPlan`]), `EXPLAIN` text, executing queries
//! on an MVCC [`Snapshot`](lightcone_mvcc::Snapshot) (or any [`ReadTx`](lightcone_mvcc::ReadTx)),
//! and running DML inside a caller-supplied [`WriteTx`](lightcone_mvcc::WriteTx).
//!
//! Does not own: subscriptions and their deltas (`lightcone-incremental-eval`, which consumes
//! the public [`LogicalPlan`] and evaluates [`Predicate`]s with [`Predicate::eval`]) or
//! authorization (the server/host decides who may run what).
//!
//! # Entry points
//! - [`execute`] (one query on a snapshot), [`explain`], or [`bind`] + [`plan_physical`] +
//!   [`execute_plan`] for callers that keep plans.
//! - [`execute_statement`] (one query or DML statement in a `WriteTx`; queries see the
//!   transaction's own writes), [`execute_dml`] (one DML statement, returns [`DmlStats`]) and
//!   [`execute_batch`] (`;`-separated statements in order, one [`StatementResult`] each).
//!   **If any of them returns an error, the caller must roll the transaction back**: there are
//!   no savepoints; a failed statement's own row changes are undone, but sequence counters it
//!   advanced are not, and earlier statements of a batch stay applied.
//!
//! # Supported
//! `SELECT * | col, … | t.* | t.col FROM from [WHERE pred] [ORDER BY col [ASC|DESC], …] [LIMIT n]`
//! and `SELECT COUNT(*) [AS name] FROM from [WHERE pred] [ORDER BY …] [LIMIT n]`, optionally
//! prefixed by `EXPLAIN`.
//! - `from` is `t [AS a]` followed by any number of `[INNER] JOIN u [AS b] ON on` (inner
//!   equi-joins). `on` is a conjunction of `column = column` equalities between two different
//!   tables in scope whose columns have the same type. A table used twice needs an alias.
//!   `SELECT *` lists all columns of all tables in `FROM` order; an unqualified column must be
//!   unique across the joined tables ([`PlanError::AmbiguousColumn`] otherwise).
//! - `pred` compares a column with a literal, `:sender` or another column of the same type
//!   ([`Operand`]; `= <> != < <= > >=`, either side), combined with `AND`, `OR`, `NOT` and
//!   parentheses. Conjuncts over one table instance (column-to-column ones included) are
//!   pushed down to that table, so its indexes are used for the literal/`:sender` ones. A
//!   conjunct `a.x = b.y` between two instances becomes a join key of the join step that
//!   brings in the later of the two (so a `JOIN … ON` that would otherwise be a cross product
//!   for that table becomes an equi-join, possibly an index join); other multi-table conjuncts
//!   are applied after the joins.
//! - Index selection per table: a full-key equality seek (unique first), else an equality on a
//!   btree key prefix optionally followed by a range on the next key column (`a = 1 AND b > 5`
//!   on an index `(a, b)` → `IndexRange … (a = 1 AND b > 5)`), else a range on a btree
//!   index's first column, else a full scan; the rest of the conjuncts filter.
//! - `COUNT(*)` with no `WHERE` and no join is answered from the table's row count in O(1)
//!   (`RowCount t` in `EXPLAIN`).
//! - Joins run left-deep in `FROM` order: an index nested-loop join when the inner table has an
//!   index whose leading columns are join columns, else a hash join built on the smaller side.
//! - `ORDER BY` sorts (by [`Value`](lightcone_mvcc::Value)'s `Ord`) before `LIMIT`.
//! - DML (write transactions only):
//!   - `INSERT INTO t [(c1, c2, …)] VALUES (…), (…)`: values are literals or `:sender`. An
//!     omitted column is an error ([`PlanError::MissingValue`]) unless it has an
//!     auto-increment sequence, which then generates it (an explicit `0` there generates too,
//!     as in the engine).
//!   - `UPDATE t [AS a] SET c = literal[, …] [WHERE pred]`: the matched rows are collected
//!     first, then all deleted, then their new versions inserted — so changing the primary key
//!     works, each matched row is counted once in [`DmlStats::rows_updated`], and new versions
//!     never collide with old versions of other matched rows. Setting an auto-increment column
//!     to `0` generates a fresh value (engine semantics).
//!   - `DELETE FROM t [AS a] [WHERE pred]`.
//!
//!   `WHERE` in DML uses the same index selection as queries. Unique-key violations are
//!   [`PlanError::UniqueViolation`] quoting the statement.
//!
//! Anything else (outer/cross/comma joins, expressions and arithmetic, `SET c = other_col`,
//! `INSERT … SELECT`, `RETURNING`, expressions in `ORDER BY`, `OFFSET`, …) is a
//! [`PlanError::Unsupported`]. Errors never panic; each quotes the offending SQL text.
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
pub use logical::{bind, writes, BoundStatement, CmpOp, ColumnRef, LogicalPlan, Operand, Predicate, SortKey};
pub use physical::{plan_physical, AccessPath, JoinMethod, JoinStep, Output, PhysicalPlan, TableAccess};
