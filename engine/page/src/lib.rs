//! Lightcone's storage unit: fixed-size columnar (PAX) pages, the engine's value types and
//! row ids.
//!
//! Owns: [`ColumnType`] and [`Value`] (the engine's compact types — bool, u8..u256, i8..i256,
//! f32, f64, string, bytes and opaque BSATN), [`PageLayout`] (where each column lives in a page),
//! [`Page`] (column arrays readable as typed slices, a var-len heap, overflow for big values,
//! an occupancy bitmap as the free-slot map) and [`RowId`] = (page, slot).
//!
//! Does not own: which pages make up a table, indexes, transactions or versions
//! (`lightcone-mvcc`), nor any wire format (BSATN lives in the host).
//!
//! ```
//! use lightcone_page::{ColumnType, Page, PageLayout, Value};
//! let layout = PageLayout::new(&[ColumnType::U32, ColumnType::String]).unwrap();
//! let mut page = Page::new();
//! let row = vec![Value::U32(7), Value::String("hi".into())];
//! layout.check_row(&row).unwrap();
//! let slot = page.insert(&layout, &row).unwrap();
//! assert_eq!(page.read_row(&layout, slot), Some(row));
//! assert_eq!(page.column::<u32>(&layout, 0).unwrap()[slot as usize], 7);
//! ```

mod page;
mod value;

pub use page::{
    Page, PageLayout, RowId, MAX_ROW_BYTES, MAX_SLOTS_PER_PAGE, MAX_VALUE_BYTES, OVERFLOW_THRESHOLD_BYTES,
    PAGE_BYTES,
};
pub use value::{ColumnType, Row, Value, I256, U256, VAR_REF_BYTES};

/// What can go wrong storing or reading a row in a page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("row has {got} values but the table has {expected} columns")]
    WrongArity { expected: usize, got: usize },
    #[error("column {column} expects a {expected} value, got {got}")]
    TypeMismatch { column: usize, expected: ColumnType, got: ColumnType },
    #[error("value in column {column} is {bytes} bytes; the limit is {max}")]
    ValueTooLarge { column: usize, bytes: usize, max: usize },
    #[error("row is {bytes} bytes; the limit is {max}")]
    RowTooLarge { bytes: usize, max: usize },
    #[error("fixed-width part of a row is {bytes} bytes; a page holds at most {max}")]
    FixedRowTooWide { bytes: usize, max: usize },
    #[error("no column {column}; the table has {columns}")]
    NoSuchColumn { column: usize, columns: usize },
    #[error("column {column} ({ty}) cannot be read as {requested_bytes}-byte elements")]
    ColumnWidthMismatch { column: usize, ty: ColumnType, requested_bytes: usize },
    /// Not a user error: the caller should try another page.
    #[error("page is full")]
    PageFull,
}
