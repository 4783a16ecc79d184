//! Lightcone's incremental view maintenance: subscriptions and their per-commit deltas.
//!
//! Owns: the subscription registry ([`Registry`]: clients, query sets, shared compiled
//! queries), the checks that a query is a valid subscription (whole rows of one table; private
//! tables only for the owner), row-level security (RLS) for non-owners, initial rows, and the
//! per-commit evaluation that turns a [`TxDelta`](lightcone_mvcc::TxDelta) into per-query
//! deltas fanned out to subscribers ([`TxUpdates`]).
//!
//! Does not own: SQL parsing, binding and planning (`lightcone-query-planner`: we consume its
//! [`LogicalPlan`](lightcone_query_planner::LogicalPlan) and compile it into our own form), the
//! tables and deltas (`lightcone-mvcc`), the wire protocol, encoding, sending, or deciding which
//! snapshot matches which commit (the host).
//!
//! # Model
//! A subscription query is `SELECT * FROM t [WHERE p]` or `SELECT t.* FROM t JOIN u ON … [JOIN
//! v ON …] [WHERE p]`; its result is the multiset of `t` rows over all joined tuples (a row can
//! appear several times; clients keep reference counts). Anything else is refused with
//! [`EvalError::UnsupportedShape`].
//!
//! # Sharing
//! Each query text is normalized (whitespace) and compiled once into a template; a template
//! with its parameters fixed — the `:sender` value if the query uses it, and for non-owners the
//! RLS filters of every table it reads folded into that table's filter (with their own
//! `:sender`) — is a shared query. Identical subscriptions from any number of clients share
//! it, and [`Registry::eval`] computes each shared query's delta once ([`QueryDelta`], behind an
//! `Arc`), then lists which (client, query set) receives which delta ([`TxUpdates::entries`]).
//! RLS filters that use `:sender` make a query per identity; ones that do not are shared by all
//! non-owners. RLS is folded into the query rather than applied to its output because a join's
//! hidden row on a non-projected table must not make a projected row appear; for a
//! single-table query the folded filter costs one extra predicate per changed row, and an
//! `owner = :sender` filter even lands in the subscription index.
//!
//! # Access
//! A table whose [`TableDef::public`](lightcone_mvcc::TableDef) flag is off is private: a
//! non-owner query naming it fails with [`EvalError::PrivateTable`] ("`t` is not a valid
//! table"). RLS filters ([`Registry::add_rls_filter`]) are registered before the subscriptions
//! that read their table.
//!
//! # Limits
//! At most 8 joined tables per subscription; the same query twice in one query set counts
//! once; `WHERE` conditions are those the planner binds (comparisons of a column with a literal
//! or `:sender`, `AND`/`OR`/`NOT`) — newer planner forms are refused as unsupported until
//! this crate learns them.
//!
//! # Evaluation
//! Only queries reading a changed table run. Single-table queries whose filter has a
//! top-level `col = literal` conjunct sit in a subscription index (table, column, value), so a
//! changed row is tested only against the queries it can match (plus those without such a
//! conjunct). Join queries apply the standard delta rules (see `eval.rs`: each joined tuple
//! counted once, old states derived from the new snapshot and the delta), probing indexes on
//! join columns where they exist.
//!
//! # Consistency contract
//! [`Registry::subscribe`] computes initial rows on the snapshot it is given; the host must
//! pass the state the next [`Registry::eval`] continues from (the latest evaluated commit), so
//! initial rows + every later delta = the query's current result.

mod compile;
mod error;
mod eval;
mod registry;

pub use error::EvalError;
pub use registry::{
    ClientAuth, ClientId, ClientUpdate, InitialRows, QueryDelta, QueryFailure, QuerySetId, Registry,
    TableRows, TxUpdates, UpdateEntry,
};
