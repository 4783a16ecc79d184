//! A module's definition: decoded from the BSATN `RawModuleDef` its `__describe_module__`
//! writes, validated, and turned into what the host needs — engine table definitions with
//! their row codecs, reducers by id, lifecycle reducers, schedules and RLS filters.

use std::collections::HashMap;
use std::sync::Arc;

use heck::ToSnakeCase;
use lightcone_mvcc::{integer_max, ColumnDef, ColumnType, IndexAlgorithm, IndexDef, SequenceDef, TableDef};
use spacetimedb_lib::db::raw_def::v10::{
    CaseConversionPolicy, ExplicitNameEntry, FunctionVisibility, RawModuleDefV10, RawModuleDefV10Section,
    RawTableDefV10,
};
use spacetimedb_lib::db::raw_def::v9::{Lifecycle, RawConstraintDataV9, RawIndexAlgorithm, TableAccess};
use spacetimedb_sats::{bsatn, AlgebraicType, ProductType, Typespace};

use crate::codec::{column_codec, resolve, CodecError, ColumnCodec, RowCodec};

/// Why a module's definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefError {
    #[error("the module definition does not decode: {0}")]
    Decode(String),
    #[error("the module definition is version {0}; Lightcone runs modules built with the 2.x `spacetimedb` crate (definition V10)")]
    UnsupportedVersion(&'static str),
    #[error("the module uses {0}, which Lightcone does not support yet")]
    Unsupported(String),
    #[error("invalid module definition: {0}")]
    Invalid(String),
}

/// One index of a table, as the module declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    /// The name the guest looks the index up by (`index_id_from_name`).
    pub source_name: String,
    pub columns: Vec<u16>,
    pub algorithm: IndexAlgorithm,
    pub unique: bool,
}

/// One table of the module.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// The name the guest uses (`table_id_from_name`).
    pub source_name: String,
    /// The canonical name: what SQL and clients use, and the engine table's name.
    pub name: String,
    pub columns: Vec<(String, AlgebraicType)>,
    pub codec: RowCodec,
    pub primary_key: Option<u16>,
    pub indexes: Vec<IndexSpec>,
    pub sequences: Vec<SequenceDef>,
    pub public: bool,
    /// Set for the table that materializes a view: index into [`ModuleSpec::views`]. Only the
    /// host writes such a table (from the view function's results); SQL and subscriptions
    /// read it like any table.
    pub view: Option<usize>,
}

impl TableSpec {
    /// The engine definition of this table.
    pub fn engine_def(&self) -> TableDef {
        let hidden = (self.codec.hidden_sender).then(|| ColumnDef::new(VIEW_SENDER_COLUMN, ColumnType::U256));
        let columns = hidden
            .into_iter()
            .chain(self.codec.columns.iter().map(|(name, c)| ColumnDef::new(name.clone(), c.engine_type())))
            .collect();
        let mut def = TableDef::new(self.name.clone(), columns);
        def.indexes = self
            .indexes
            .iter()
            .map(|i| IndexDef {
                name: i.source_name.clone(),
                columns: i.columns.clone(),
                unique: i.unique,
                algorithm: i.algorithm,
            })
            .collect();
        if self.codec.hidden_sender {
            // Every read and refresh of a sender-bound view's table is by sender.
            def.indexes.push(IndexDef {
                name: view_sender_index(&self.name),
                columns: vec![0],
                unique: false,
                algorithm: IndexAlgorithm::BTree,
            });
        }
        def.primary_key = self.primary_key;
        def.sequences = self.sequences.clone();
        def.public = self.public;
        def
    }

    /// Column ids with a sequence, ascending (the insert write-back order).
    pub fn sequence_columns(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self.sequences.iter().map(|s| s.column).collect();
        v.sort_unstable();
        v
    }
}

/// One reducer; its id is its position in [`ModuleSpec::reducers`].
#[derive(Debug, Clone)]
pub struct ReducerSpec {
    pub name: String,
    pub params: ProductType,
    pub client_callable: bool,
}

/// One procedure: runs outside any transaction, may open its own (`with_tx`) and make HTTP
/// requests, and returns a value. Its id is its position in [`ModuleSpec::procedures`].
#[derive(Debug, Clone)]
pub struct ProcedureSpec {
    pub name: String,
    pub params: ProductType,
    pub return_type: AlgebraicType,
    pub client_callable: bool,
}

/// The name of the hidden leading column of a sender-bound view's table: whose rows they are.
/// Clients never see it (the row codec skips it); every read of the table is filtered on it.
pub const VIEW_SENDER_COLUMN: &str = "__sender__";

/// The name of the index on a sender-bound view table's hidden sender column.
pub fn view_sender_index(view: &str) -> String {
    format!("{view}_{VIEW_SENDER_COLUMN}_idx_btree")
}

/// One view: a read-only function whose result rows the host materializes in a table of the
/// same name (see `views.rs`).
#[derive(Debug, Clone)]
pub struct ViewSpec {
    /// The canonical name: SQL and clients use it, and it names the table.
    pub name: String,
    /// The id passed to `__call_view__` (sender-bound) or `__call_view_anon__` (anonymous):
    /// the view's position among the views of its kind.
    pub index: u32,
    /// An anonymous view computes one result for everybody; a sender-bound one computes a
    /// result per caller identity, materialized only for identities that read it.
    pub anonymous: bool,
    /// Index into [`ModuleSpec::tables`] of the table holding the results.
    pub table: usize,
}

/// What a scheduled row triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduledFunction {
    /// Index into [`ModuleSpec::reducers`].
    Reducer(usize),
    /// Index into [`ModuleSpec::procedures`].
    Procedure(usize),
}

/// A scheduled table and the function its rows trigger.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// Index into [`ModuleSpec::tables`].
    pub table: usize,
    pub at_column: u16,
    /// The column holding the row's id (the table's primary key).
    pub id_column: u16,
    pub function: ScheduledFunction,
}

/// Everything the host needs from a module definition.
#[derive(Debug, Clone)]
pub struct ModuleSpec {
    pub typespace: Arc<Typespace>,
    pub tables: Vec<TableSpec>,
    pub reducers: Vec<ReducerSpec>,
    pub init: Option<usize>,
    pub client_connected: Option<usize>,
    pub client_disconnected: Option<usize>,
    pub schedules: Vec<ScheduleSpec>,
    pub row_level_security: Vec<String>,
    pub procedures: Vec<ProcedureSpec>,
    pub views: Vec<ViewSpec>,
    /// The BSATN the module described itself with (stored with the program).
    pub raw: Vec<u8>,
}

impl ModuleSpec {
    pub fn reducer_id(&self, name: &str) -> Option<usize> {
        self.reducers.iter().position(|r| r.name == name)
    }

    pub fn procedure_id(&self, name: &str) -> Option<usize> {
        self.procedures.iter().position(|p| p.name == name)
    }

    pub fn table_by_name(&self, name: &str) -> Option<&TableSpec> {
        self.tables.iter().find(|t| t.name == name)
    }
}

const SECTION_NAMES: [&str; 17] = [
    "Typespace",
    "Types",
    "Tables",
    "Reducers",
    "Procedures",
    "Views",
    "Schedules",
    "LifeCycleReducers",
    "RowLevelSecurity",
    "CaseConversionPolicy",
    "ExplicitNames",
    "HttpHandlers",
    "HttpRoutes",
    "ViewPrimaryKeys",
    "Submodules",
    "Environment",
    "Outboxes",
];

/// Decodes the V10 sections one at a time, so a section this host does not know is reported
/// by name instead of as an opaque decode failure.
fn decode_sections(bytes: &[u8]) -> Result<Vec<RawModuleDefV10Section>, DefError> {
    let mut rest: &[u8] = bytes;
    let version = *rest.first().ok_or_else(|| DefError::Decode("empty module definition".into()))?;
    match version {
        0 => return Err(DefError::UnsupportedVersion("V8")),
        1 => return Err(DefError::UnsupportedVersion("V9")),
        2 => {}
        t => return Err(DefError::Decode(format!("unknown module definition version tag {t}"))),
    }
    rest = &rest[1..];
    if rest.len() < 4 {
        return Err(DefError::Decode("truncated section count".into()));
    }
    let count = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
    rest = &rest[4..];
    let mut sections = Vec::new();
    for i in 0..count {
        let tag =
            *rest.first().ok_or_else(|| DefError::Decode(format!("section {i} of {count} is missing")))?;
        let name = SECTION_NAMES.get(tag as usize).copied().unwrap_or("an unknown section");
        if tag == 15 {
            // Environment (crate 2.14): Vec<{name, ty, optional}>; only an empty one is fine.
            let mut r: &[u8] = &rest[1..];
            let n: u32 =
                bsatn::from_reader(&mut r).map_err(|e| DefError::Decode(format!("section {name}: {e}")))?;
            if n != 0 {
                return Err(DefError::Unsupported("environment variables (section `Environment`)".into()));
            }
            rest = r;
            continue;
        }
        if tag as usize >= 15 {
            return Err(DefError::Unsupported(format!("section `{name}` (tag {tag})")));
        }
        let section: RawModuleDefV10Section = bsatn::from_reader(&mut rest)
            .map_err(|e| DefError::Decode(format!("section {name} (tag {tag}): {e}")))?;
        sections.push(section);
    }
    if !rest.is_empty() {
        return Err(DefError::Decode(format!("{} trailing bytes after the sections", rest.len())));
    }
    Ok(sections)
}

fn invalid(msg: impl Into<String>) -> DefError {
    DefError::Invalid(msg.into())
}

fn codec_err(table: &str, e: CodecError) -> DefError {
    invalid(format!("table `{table}`: {e}"))
}

/// Decodes and validates a module definition.
pub fn decode_module_def(bytes: &[u8]) -> Result<ModuleSpec, DefError> {
    let sections = decode_sections(bytes)?;
    let def = RawModuleDefV10 { sections };
    let typespace = Arc::new(def.typespace().cloned().unwrap_or_default());
    let snake = matches!(def.case_conversion_policy(), CaseConversionPolicy::SnakeCase);
    let mut explicit_tables: HashMap<String, String> = HashMap::new();
    let mut explicit_functions: HashMap<String, String> = HashMap::new();
    if let Some(names) = def.explicit_names() {
        for entry in names.clone().into_entries() {
            match entry {
                ExplicitNameEntry::Table(m) => {
                    explicit_tables.insert(m.source_name.to_string(), m.canonical_name.to_string());
                }
                ExplicitNameEntry::Function(m) => {
                    explicit_functions.insert(m.source_name.to_string(), m.canonical_name.to_string());
                }
                // Index names are only looked up by the guest, by source name.
                ExplicitNameEntry::Index(_) => {}
                _ => return Err(DefError::Unsupported("an explicit-name entry kind newer than 2.10".into())),
            }
        }
    }
    let canonical = |source: &str, explicit: &HashMap<String, String>| -> String {
        explicit.get(source).cloned().unwrap_or_else(|| {
            if snake {
                source.to_snake_case()
            } else {
                source.to_string()
            }
        })
    };
    if def.submodules().is_some_and(|s| !s.is_empty()) {
        return Err(DefError::Unsupported("submodules".into()));
    }
    if def.http_handlers().is_some_and(|s| !s.is_empty()) {
        return Err(DefError::Unsupported("HTTP handlers".into()));
    }

    let mut tables = Vec::new();
    for t in def.tables().map(|v| v.as_slice()).unwrap_or_default() {
        tables.push(table_spec(t, &typespace, canonical(&t.source_name, &explicit_tables))?);
    }
    let mut views = Vec::new();
    for v in def.views().map(|v| v.as_slice()).unwrap_or_default() {
        let name = explicit_functions
            .get(&*v.source_name)
            .or_else(|| explicit_tables.get(&*v.source_name))
            .cloned()
            .unwrap_or_else(|| canonical(&v.source_name, &HashMap::new()));
        if !v.params.elements.is_empty() {
            return Err(DefError::Unsupported(format!("parameters on view `{name}`")));
        }
        let table =
            view_table_spec(&v.source_name, &name, &v.return_type, &typespace, v.is_anonymous, v.is_public)?;
        views.push(ViewSpec { name, index: v.index, anonymous: v.is_anonymous, table: tables.len() });
        tables.push(TableSpec { view: Some(views.len() - 1), ..table });
    }
    for kind in [true, false] {
        let mut ids: Vec<u32> = views.iter().filter(|v| v.anonymous == kind).map(|v| v.index).collect();
        ids.sort_unstable();
        if ids.iter().enumerate().any(|(i, &id)| id as usize != i) {
            return Err(invalid(format!(
                "the {} views' indexes {ids:?} are not 0, 1, 2, …",
                if kind { "anonymous" } else { "sender-bound" }
            )));
        }
    }
    let mut seen = HashMap::new();
    for (i, t) in tables.iter().enumerate() {
        if t.name.starts_with("st_") {
            return Err(invalid(format!("table name `{}`: names starting with `st_` are reserved", t.name)));
        }
        if let Some(j) = seen.insert(t.name.clone(), i) {
            return Err(invalid(format!("two tables are named `{}` (#{j} and #{i})", t.name)));
        }
    }

    let mut reducers = Vec::new();
    for r in def.reducers().map(|v| v.as_slice()).unwrap_or_default() {
        reducers.push(ReducerSpec {
            name: canonical(&r.source_name, &explicit_functions),
            params: r.params.clone(),
            client_callable: matches!(r.visibility, FunctionVisibility::ClientCallable),
        });
    }
    let mut procedures = Vec::new();
    for p in def.procedures().map(|v| v.as_slice()).unwrap_or_default() {
        procedures.push(ProcedureSpec {
            name: canonical(&p.source_name, &explicit_functions),
            params: p.params.clone(),
            return_type: p.return_type.clone(),
            client_callable: matches!(p.visibility, FunctionVisibility::ClientCallable),
        });
    }
    let reducer_by_source: HashMap<String, usize> = def
        .reducers()
        .map(|v| v.iter().enumerate().map(|(i, r)| (r.source_name.to_string(), i)).collect())
        .unwrap_or_default();
    let find_reducer = |name: &str, what: &str| -> Result<usize, DefError> {
        reducer_by_source
            .get(name)
            .copied()
            .or_else(|| reducers.iter().position(|r| r.name == name))
            .ok_or_else(|| invalid(format!("{what} names reducer `{name}`, which does not exist")))
    };

    let (mut init, mut client_connected, mut client_disconnected) = (None, None, None);
    for l in def.lifecycle_reducers().map(|v| v.as_slice()).unwrap_or_default() {
        let id = find_reducer(&l.function_name, "a lifecycle entry")?;
        let slot = match l.lifecycle_spec {
            Lifecycle::Init => &mut init,
            Lifecycle::OnConnect => &mut client_connected,
            Lifecycle::OnDisconnect => &mut client_disconnected,
            _ => return Err(DefError::Unsupported(format!("lifecycle {:?}", l.lifecycle_spec))),
        };
        if slot.replace(id).is_some() {
            return Err(invalid(format!("two reducers for lifecycle {:?}", l.lifecycle_spec)));
        }
    }

    let mut schedules = Vec::new();
    for s in def.schedules().map(|v| v.as_slice()).unwrap_or_default() {
        let table = tables
            .iter()
            .position(|t| t.source_name == *s.table_name || t.name == *s.table_name)
            .ok_or_else(|| invalid(format!("schedule for unknown table `{}`", s.table_name)))?;
        let procedure =
            def.procedures().and_then(|ps| ps.iter().position(|p| p.source_name == s.function_name));
        let function = match (find_reducer(&s.function_name, "a schedule"), procedure) {
            (Ok(r), _) => ScheduledFunction::Reducer(r),
            (Err(_), Some(p)) => ScheduledFunction::Procedure(p),
            (Err(e), None) => return Err(e),
        };
        let t = &tables[table];
        let id_column = t
            .primary_key
            .ok_or_else(|| invalid(format!("scheduled table `{}` has no primary key", t.name)))?;
        if s.schedule_at_col.0 as usize >= t.columns.len() {
            return Err(invalid(format!(
                "schedule column {} out of range in `{}`",
                s.schedule_at_col.0, t.name
            )));
        }
        schedules.push(ScheduleSpec { table, at_column: s.schedule_at_col.0, id_column, function });
    }

    Ok(ModuleSpec {
        typespace,
        tables,
        reducers,
        init,
        client_connected,
        client_disconnected,
        schedules,
        row_level_security: def
            .row_level_security()
            .map(|v| v.iter().map(|r| r.sql.to_string()).collect())
            .unwrap_or_default(),
        procedures,
        views,
        raw: bytes.to_vec(),
    })
}

/// The table materializing a view: its columns are the fields of the row type `T` of the
/// view's `Vec<T>` / `Option<T>` / `T` return type; no keys or indexes (a view's rows are
/// replaced wholesale by the host). Sender-bound views get a hidden leading sender column.
fn view_table_spec(
    source_name: &str,
    name: &str,
    return_type: &AlgebraicType,
    ts: &Arc<Typespace>,
    anonymous: bool,
    public: bool,
) -> Result<TableSpec, DefError> {
    let err = |e: CodecError| invalid(format!("view `{source_name}`: {e}"));
    let ret = resolve(return_type, ts).map_err(err)?;
    // A view returning a query (`impl Query<T>`) declares `{__query__: T}`.
    let ret = match ret {
        AlgebraicType::Product(p)
            if p.elements.len() == 1 && p.elements[0].name.as_deref() == Some("__query__") =>
        {
            resolve(&p.elements[0].algebraic_type, ts).map_err(err)?
        }
        other => other,
    };
    let row_ty = match ret {
        AlgebraicType::Array(a) => &*a.elem_ty,
        AlgebraicType::Sum(s) if s.as_option().is_some() => s.as_option().expect("checked just above"),
        other => other,
    };
    let AlgebraicType::Product(row_ty) = resolve(row_ty, ts).map_err(err)? else {
        return Err(invalid(format!("view `{source_name}`: the row type is not a product")));
    };
    let mut columns = Vec::new();
    let mut codecs = Vec::new();
    for (i, e) in row_ty.elements.iter().enumerate() {
        let col_name = e.name.as_deref().map(str::to_string).unwrap_or_else(|| format!("col_{i}"));
        if col_name == VIEW_SENDER_COLUMN {
            return Err(invalid(format!("view `{source_name}`: the column name `{col_name}` is reserved")));
        }
        codecs.push((col_name.clone(), column_codec(&e.algebraic_type, ts).map_err(err)?));
        columns.push((col_name, e.algebraic_type.clone()));
    }
    let codec = RowCodec {
        table: name.to_string(),
        columns: codecs,
        typespace: Arc::clone(ts),
        hidden_sender: !anonymous,
    };
    Ok(TableSpec {
        source_name: source_name.to_string(),
        name: name.to_string(),
        columns,
        codec,
        primary_key: None,
        indexes: Vec::new(),
        sequences: Vec::new(),
        public,
        view: None,
    })
}

fn table_spec(t: &RawTableDefV10, ts: &Arc<Typespace>, name: String) -> Result<TableSpec, DefError> {
    let source_name = t.source_name.to_string();
    if t.is_event {
        return Err(DefError::Unsupported(format!("event table `{source_name}`")));
    }
    let row_ty = ts.types.get(t.product_type_ref.0 as usize).ok_or_else(|| {
        invalid(format!("table `{source_name}` refers to missing type {}", t.product_type_ref.0))
    })?;
    let AlgebraicType::Product(row_ty) = resolve(row_ty, ts).map_err(|e| codec_err(&source_name, e))? else {
        return Err(invalid(format!("table `{source_name}`: the row type is not a product")));
    };
    let mut columns = Vec::new();
    let mut codecs = Vec::new();
    for (i, e) in row_ty.elements.iter().enumerate() {
        let col_name = e.name.as_deref().map(str::to_string).unwrap_or_else(|| format!("col_{i}"));
        let codec = column_codec(&e.algebraic_type, ts).map_err(|e| codec_err(&source_name, e))?;
        codecs.push((col_name.clone(), codec));
        columns.push((col_name, e.algebraic_type.clone()));
    }
    let ncols = columns.len();
    let check_cols = |cols: &[u16], what: &str| -> Result<(), DefError> {
        match cols.iter().find(|&&c| c as usize >= ncols) {
            Some(c) => Err(invalid(format!("table `{source_name}`: {what} names column {c}, out of range"))),
            None if cols.is_empty() => Err(invalid(format!("table `{source_name}`: {what} has no columns"))),
            None => Ok(()),
        }
    };
    let mut indexes = Vec::new();
    for (i, ix) in t.indexes.iter().enumerate() {
        let (columns, algorithm) = match &ix.algorithm {
            RawIndexAlgorithm::BTree { columns } => {
                (columns.iter().map(|c| c.0).collect(), IndexAlgorithm::BTree)
            }
            RawIndexAlgorithm::Hash { columns } => {
                (columns.iter().map(|c| c.0).collect(), IndexAlgorithm::Hash)
            }
            RawIndexAlgorithm::Direct { column } => (vec![column.0], IndexAlgorithm::Direct),
            _ => {
                return Err(DefError::Unsupported(format!(
                    "index algorithm of index #{i} of `{source_name}`"
                )))
            }
        };
        let columns: Vec<u16> = columns;
        check_cols(&columns, "an index")?;
        let suffix = match algorithm {
            IndexAlgorithm::BTree => "btree",
            IndexAlgorithm::Hash => "hash",
            IndexAlgorithm::Direct => "direct",
        };
        let generated = || {
            let cols: Vec<&str> = columns.iter().map(|&c| codecs[c as usize].0.as_str()).collect();
            format!("{source_name}_{}_idx_{suffix}", cols.join("_"))
        };
        let index_name = ix.source_name.as_deref().map(str::to_string).unwrap_or_else(generated);
        indexes.push(IndexSpec { source_name: index_name, columns, algorithm, unique: false });
    }
    let mut unique_sets: Vec<Vec<u16>> = Vec::new();
    for c in &t.constraints {
        match &c.data {
            RawConstraintDataV9::Unique(u) => {
                let cols: Vec<u16> = u.columns.iter().map(|c| c.0).collect();
                check_cols(&cols, "a unique constraint")?;
                unique_sets.push(cols);
            }
            _ => return Err(DefError::Unsupported(format!("a constraint kind on `{source_name}`"))),
        }
    }
    let pk: Vec<u16> = t.primary_key.iter().map(|c| c.0).collect();
    let primary_key = match pk.as_slice() {
        [] => None,
        [c] => {
            check_cols(&pk, "the primary key")?;
            if !unique_sets.contains(&pk) {
                unique_sets.push(pk.clone());
            }
            Some(*c)
        }
        _ => return Err(DefError::Unsupported(format!("a multi-column primary key on `{source_name}`"))),
    };
    for cols in unique_sets {
        match indexes.iter_mut().find(|i| i.columns == cols) {
            Some(ix) => ix.unique = true,
            None => {
                let names: Vec<&str> = cols.iter().map(|&c| codecs[c as usize].0.as_str()).collect();
                indexes.push(IndexSpec {
                    source_name: format!("{source_name}_{}_key", names.join("_")),
                    columns: cols,
                    algorithm: IndexAlgorithm::BTree,
                    unique: true,
                });
            }
        }
    }
    let mut sequences = Vec::new();
    for s in &t.sequences {
        let col = s.column.0;
        check_cols(&[col], "a sequence")?;
        let ty = codecs[col as usize].1.engine_type();
        if !ty.is_integer() || matches!(codecs[col as usize].1, ColumnCodec::Opaque(_)) {
            return Err(invalid(format!("table `{source_name}`: sequence on non-integer column {col}")));
        }
        let type_max = integer_max(ty);
        let min = s.min_value.unwrap_or(1);
        let max = s.max_value.unwrap_or(type_max).min(type_max);
        let increment = s.increment;
        if increment == 0 || min > max {
            return Err(invalid(format!(
                "table `{source_name}`: sequence on column {col} has an empty range"
            )));
        }
        let start = s.start.unwrap_or(if increment > 0 { min } else { max });
        sequences.push(SequenceDef { column: col, start, increment, min, max });
    }
    let codec =
        RowCodec { table: name.clone(), columns: codecs, typespace: Arc::clone(ts), hidden_sender: false };
    Ok(TableSpec {
        source_name,
        name,
        columns,
        codec,
        primary_key,
        indexes,
        sequences,
        public: matches!(t.table_access, TableAccess::Public),
        view: None,
    })
}
