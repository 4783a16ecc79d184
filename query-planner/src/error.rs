//! The planner's typed errors. Every message quotes the offending SQL text.

use lightcone_mvcc::{ColumnType, MvccError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// sqlparser's own message.
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("unknown table `{0}`")]
    UnknownTable(String),
    #[error("unknown column `{column}` in table `{table}`")]
    UnknownColumn { column: String, table: String },
    /// An unquoted name that matches several columns case-insensitively and none exactly, or
    /// an unqualified name found in more than one joined table.
    #[error("ambiguous column `{column}`: matches {candidates:?}")]
    AmbiguousColumn { column: String, candidates: Vec<String> },
    #[error("type mismatch: `{literal}` is not a valid {ty} value for column `{column}`")]
    TypeMismatch { literal: String, column: String, ty: ColumnType },
    #[error("`{0}` is not supported yet")]
    Unsupported(String),
    #[error("the query uses `:sender` but no sender value was supplied")]
    MissingSender,
    /// The engine refused an operation (e.g. the table vanished between bind and execute).
    #[error("engine error: {0}")]
    Engine(#[from] MvccError),
}
