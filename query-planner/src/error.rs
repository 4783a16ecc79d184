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
    /// An `INSERT` left out a column that has no auto-increment sequence to fill it.
    #[error("no value for column `{column}` of table `{table}` in `{statement}` (only auto-increment columns may be omitted)")]
    MissingValue { column: String, table: String, statement: String },
    /// A column named twice in an `INSERT` column list or an `UPDATE … SET`.
    #[error("column `{column}` is assigned more than once in `{statement}`")]
    DuplicateColumn { column: String, statement: String },
    /// An `INSERT` row whose number of values differs from the number of target columns.
    #[error("`{row}` has {got} values but {expected} columns are being inserted")]
    ValuesArity { row: String, expected: usize, got: usize },
    /// A row written by `INSERT` or `UPDATE` duplicates a key of a unique index.
    #[error("duplicate key {key} in unique index `{index}` of table `{table}` in `{statement}`")]
    UniqueViolation { table: String, index: String, key: String, statement: String },
    /// A statement the entry point cannot run: DML on a read-only snapshot (use
    /// [`execute_statement`](crate::execute_statement)), or a query given to
    /// [`execute_dml`](crate::execute_dml).
    #[error("`{statement}` cannot run here: {reason}")]
    WrongStatementKind { statement: String, reason: String },
    /// The engine refused an operation (e.g. the table vanished between bind and execute).
    #[error("engine error: {0}")]
    Engine(#[from] MvccError),
}
