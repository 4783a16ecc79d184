//! Table definitions as the catalog stores them.

use lightcone_page::ColumnType;

/// Identifies a table for the life of the database.
pub type TableId = u32;
/// Identifies an index across the whole database (module ABI index ids are global).
pub type IndexId = u32;
/// A column's position in its table.
pub type ColId = u16;

/// Most columns a table may have.
pub const MAX_COLUMNS: usize = 4096;
/// Most indexes one table may have besides its primary key's own index.
pub const MAX_INDEXES_PER_TABLE: usize = 256;
/// Most tables a database may have.
pub const MAX_TABLES: usize = 1 << 20;
/// Longest table, column or index name, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: ColumnType,
}

impl ColumnDef {
    pub fn new(name: impl Into<String>, ty: ColumnType) -> ColumnDef {
        ColumnDef { name: name.into(), ty }
    }
}

/// How a module declared an index. All are served by the engine's B+tree; `Hash` and
/// `Direct` indexes answer point lookups only (a range scan on them is an error, as upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexAlgorithm {
    BTree,
    Hash,
    Direct,
}

impl IndexAlgorithm {
    pub fn supports_range(self) -> bool {
        self == IndexAlgorithm::BTree
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    /// Empty = generated as `{table}_{col1}_{col2}…_idx_{algorithm}` (SpacetimeDB's convention).
    pub name: String,
    pub columns: Vec<ColId>,
    /// A unique index is how a unique constraint (and a primary key) is enforced.
    pub unique: bool,
    pub algorithm: IndexAlgorithm,
}

impl IndexDef {
    pub fn btree(columns: impl Into<Vec<ColId>>, unique: bool) -> IndexDef {
        IndexDef { name: String::new(), columns: columns.into(), unique, algorithm: IndexAlgorithm::BTree }
    }
}

/// An auto-increment sequence on an integer column: inserting the type's zero in that
/// column stores the sequence's next value instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceDef {
    pub column: ColId,
    pub start: i128,
    pub increment: i128,
    pub min: i128,
    pub max: i128,
}

impl SequenceDef {
    /// 1, 2, 3, … up to the column type's maximum (capped to what `i128` holds).
    pub fn auto_inc(column: ColId, ty: ColumnType) -> SequenceDef {
        SequenceDef { column, start: 1, increment: 1, min: 1, max: integer_max(ty) }
    }
}

/// The largest value of an integer column type that a sequence can produce.
pub fn integer_max(ty: ColumnType) -> i128 {
    match ty {
        ColumnType::U8 => u8::MAX as i128,
        ColumnType::U16 => u16::MAX as i128,
        ColumnType::U32 => u32::MAX as i128,
        ColumnType::U64 => u64::MAX as i128,
        ColumnType::I8 => i8::MAX as i128,
        ColumnType::I16 => i16::MAX as i128,
        ColumnType::I32 => i32::MAX as i128,
        ColumnType::I64 => i64::MAX as i128,
        _ => i128::MAX,
    }
}

/// What a caller asks for when creating a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<ColumnDef>,
    pub indexes: Vec<IndexDef>,
    /// Must be covered by a unique index on exactly this column; one is added if missing.
    pub primary_key: Option<ColId>,
    pub sequences: Vec<SequenceDef>,
    /// Private tables are visible only to the database owner (enforced above the engine).
    pub public: bool,
}

impl TableDef {
    pub fn new(name: impl Into<String>, columns: Vec<ColumnDef>) -> TableDef {
        TableDef {
            name: name.into(),
            columns,
            indexes: Vec::new(),
            primary_key: None,
            sequences: Vec::new(),
            public: true,
        }
    }

    pub fn with_index(mut self, index: IndexDef) -> TableDef {
        self.indexes.push(index);
        self
    }

    pub fn with_primary_key(mut self, column: ColId) -> TableDef {
        self.primary_key = Some(column);
        self
    }

    /// Adds an auto-increment sequence on `column` (which must be an integer column).
    pub fn with_auto_inc(mut self, column: ColId) -> TableDef {
        let ty = self.columns.get(column as usize).map(|c| c.ty).unwrap_or(ColumnType::U64);
        self.sequences.push(SequenceDef::auto_inc(column, ty));
        self
    }

    pub fn column_types(&self) -> Vec<ColumnType> {
        self.columns.iter().map(|c| c.ty).collect()
    }
}

/// A table as the catalog knows it: the definition (with generated index names filled in and
/// the primary-key index added) plus the ids assigned to the table and its indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub id: TableId,
    pub def: TableDef,
    /// `index_ids[i]` is the id of `def.indexes[i]`.
    pub index_ids: Vec<IndexId>,
}

impl TableSchema {
    pub fn name(&self) -> &str {
        &self.def.name
    }

    pub fn column_name(&self, col: usize) -> &str {
        self.def.columns.get(col).map_or("?", |c| c.name.as_str())
    }

    pub fn column_index(&self, name: &str) -> Option<ColId> {
        self.def.columns.iter().position(|c| c.name == name).map(|i| i as ColId)
    }

    /// Position of an index within this table.
    pub fn index_position(&self, index: IndexId) -> Option<usize> {
        self.index_ids.iter().position(|&id| id == index)
    }

    pub fn index_id_by_name(&self, name: &str) -> Option<IndexId> {
        self.def.indexes.iter().position(|i| i.name == name).map(|p| self.index_ids[p])
    }
}
