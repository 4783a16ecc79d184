//! The errors of table and transaction operations.

use lightcone_page::ColumnType;

use crate::schema::{IndexAlgorithm, IndexId, TableId};

/// What can go wrong in a transaction. Every variant leaves the transaction usable: the
/// failed operation changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    #[error("no table with id {0}")]
    NoSuchTable(TableId),
    #[error("no table named `{0}`")]
    NoSuchTableName(String),
    #[error("no index with id {0}")]
    NoSuchIndex(IndexId),
    #[error("a table named `{0}` already exists")]
    TableExists(String),
    #[error("an index named `{0}` already exists")]
    IndexExists(String),
    #[error("invalid definition of table `{table}`: {reason}")]
    InvalidSchema { table: String, reason: String },
    #[error("row for table `{table}` has {got} values; the table has {expected} columns")]
    WrongArity { table: String, expected: usize, got: usize },
    #[error("column `{table}.{column}` is {expected}, got a {got} value")]
    TypeMismatch { table: String, column: String, expected: ColumnType, got: ColumnType },
    #[error("value for `{table}.{column}` is {bytes} bytes; the limit is {max}")]
    ValueTooLarge { table: String, column: String, bytes: usize, max: usize },
    #[error("row for table `{table}` is {bytes} bytes; the limit is {max}")]
    RowTooLarge { table: String, bytes: usize, max: usize },
    #[error("duplicate key {key} in unique index `{index}` of table `{table}`")]
    UniqueViolation { table: String, index: String, key: String },
    #[error("key for index `{index}` of table `{table}` is {bytes} bytes encoded; the limit is {max}")]
    KeyTooLarge { table: String, index: String, bytes: usize, max: usize },
    #[error("sequence on `{table}.{column}` is exhausted")]
    SequenceExhausted { table: String, column: String },
    #[error("index `{index}` is not unique")]
    IndexNotUnique { index: String },
    #[error("index `{index}` is a {algorithm:?} index, which supports point lookups only")]
    WrongIndexAlgo { index: String, algorithm: IndexAlgorithm },
    #[error("index `{index}` has {expected} columns; the key has {got} values")]
    KeyArity { index: String, expected: usize, got: usize },
    #[error("no row in `{table}` has key {key} in index `{index}`")]
    NoSuchRow { table: String, index: String, key: String },
    #[error("log replay: {0}")]
    ReplayMismatch(String),
    #[error("table `{table}` reached its limit of {max} pages")]
    TooManyPages { table: String, max: usize },
}
