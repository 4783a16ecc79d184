//! The evaluator's typed errors. Messages quote the offending query.

use lightcone_mvcc::MvccError;
use lightcone_query_planner::PlanError;

use crate::{ClientId, QuerySetId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The planner could not parse or bind the query.
    #[error("{source} (in `{query}`)")]
    Plan {
        query: String,
        #[source]
        source: PlanError,
    },
    /// A valid query that is not a subscription: it must return whole rows of one table.
    #[error(
        "subscriptions must return whole rows of one table (`SELECT * FROM t [WHERE …]` or \
         `SELECT t.* FROM t JOIN u ON … [WHERE …]`), not {what}: `{query}`"
    )]
    UnsupportedShape { query: String, what: String },
    /// A non-owner named a private table (worded as upstream, revealing nothing).
    #[error("`{table}` is not a valid table (in `{query}`)")]
    PrivateTable { table: String, query: String },
    #[error("unknown client {0}")]
    UnknownClient(ClientId),
    #[error("client {client} has no query set {query_set}")]
    UnknownQuerySet { client: ClientId, query_set: QuerySetId },
    #[error("client {client} already has query set {query_set}")]
    QuerySetInUse { client: ClientId, query_set: QuerySetId },
    /// A row-level-security filter must be `SELECT * FROM t [WHERE …]` over one table.
    #[error("row-level security filters must be `SELECT * FROM t WHERE …` over one table: `{sql}`")]
    InvalidRlsFilter { sql: String },
    /// Filters are fixed while non-owner subscriptions read the table: their rows were
    /// computed under the old filters.
    #[error("cannot change the row-level security of `{table}` while non-owner subscriptions read it")]
    RlsInUse { table: String },
    /// The engine refused a read (a table or index missing from the snapshot).
    #[error("engine error while evaluating `{query}`: {source}")]
    Engine {
        query: String,
        #[source]
        source: MvccError,
    },
}
