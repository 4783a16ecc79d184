//! A database's schema as the CLI needs it (`describe`, `subscribe`, `call`): fetched as SATS-JSON
//! of `RawModuleDefV10` (falling back to V9) and reduced to tables, reducers and type names.

use std::collections::HashMap;

use heck::ToSnakeCase;
use spacetimedb_lib::db::raw_def::v10::{
    CaseConversionPolicy, ExplicitNameEntry, FunctionVisibility, RawModuleDefV10,
};
use spacetimedb_lib::db::raw_def::v9::{
    Lifecycle, RawConstraintDataV9, RawIndexAlgorithm, RawMiscModuleExportV9, RawModuleDefV9, TableAccess,
};
use spacetimedb_sats::{AlgebraicType, ProductType, Typespace};

use super::client::{encode_segment, Client};
use super::error::CliError;

/// A table: its canonical name (what SQL and subscriptions use) and its row type.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    pub source_name: String,
    /// The row type: a product with named columns (element types may be `Ref`s).
    pub columns: ProductType,
    pub public: bool,
    pub primary_key: Vec<u16>,
    pub unique: Vec<Vec<u16>>,
    pub indexes: Vec<(String, Vec<u16>)>,
    pub auto_inc: Vec<u16>,
    pub is_event: bool,
}

/// A reducer (or procedure) and who may call it.
#[derive(Debug, Clone)]
pub struct ReducerInfo {
    pub name: String,
    pub params: ProductType,
    pub callable: bool,
    pub lifecycle: Option<&'static str>,
}

/// What the CLI knows of a module.
#[derive(Debug, Clone, Default)]
pub struct SchemaInfo {
    pub typespace: Typespace,
    pub tables: Vec<TableInfo>,
    pub reducers: Vec<ReducerInfo>,
    pub procedures: Vec<ReducerInfo>,
    pub views: Vec<String>,
    /// Names of typespace entries that have one (user-defined types).
    pub type_names: HashMap<u32, String>,
}

impl SchemaInfo {
    /// A table by canonical or source name.
    pub fn table(&self, name: &str) -> Option<&TableInfo> {
        self.tables
            .iter()
            .find(|t| t.name == name)
            .or_else(|| self.tables.iter().find(|t| t.source_name == name))
    }

    pub fn reducer(&self, name: &str) -> Option<&ReducerInfo> {
        self.reducers.iter().find(|r| r.name == name)
    }

    /// A reducer, or else a procedure, of that name (what `call` reaches).
    pub fn function(&self, name: &str) -> Option<&ReducerInfo> {
        self.reducer(name).or_else(|| self.procedures.iter().find(|p| p.name == name))
    }

    /// Decodes SATS-JSON of `RawModuleDefV10` or `RawModuleDefV9`.
    pub fn from_json(value: &serde_json::Value) -> Result<SchemaInfo, CliError> {
        let v10: Result<RawModuleDefV10, serde_json::Error> =
            spacetimedb_sats::de::serde::deserialize_from(value);
        match v10 {
            Ok(def) => Ok(from_v10(&def)),
            Err(e10) => {
                let v9: Result<RawModuleDefV9, serde_json::Error> =
                    spacetimedb_sats::de::serde::deserialize_from(value);
                v9.map(|def| from_v9(&def)).map_err(|e9| {
                    CliError::BadResponse(format!("schema: not a V10 ({e10}) nor a V9 ({e9}) module"))
                })
            }
        }
    }
}

/// `GET /v1/database/:db/schema?version=10` (then `version=9`): the raw JSON and its reading.
pub fn fetch_schema(client: &Client, db: &str) -> Result<(serde_json::Value, SchemaInfo), CliError> {
    let path = |v: u8| format!("/database/{}/schema?version={v}", encode_segment(db));
    let json = match client.json("GET", &path(10), None) {
        Ok(j) => j,
        Err(CliError::Http { status: 400 | 422, .. }) => client.json("GET", &path(9), None)?,
        Err(e) => return Err(e),
    };
    let info = SchemaInfo::from_json(&json)?;
    Ok((json, info))
}

fn columns_of(ts: &Typespace, r: u32) -> ProductType {
    match ts.types.get(r as usize) {
        Some(AlgebraicType::Product(p)) => p.clone(),
        _ => ProductType::unit(),
    }
}

fn lifecycle_name(l: &Lifecycle) -> &'static str {
    match l {
        Lifecycle::Init => "init",
        Lifecycle::OnConnect => "client_connected",
        Lifecycle::OnDisconnect => "client_disconnected",
        #[allow(unreachable_patterns)]
        _ => "lifecycle",
    }
}

fn index_columns(a: &RawIndexAlgorithm) -> (&'static str, Vec<u16>) {
    match a {
        RawIndexAlgorithm::BTree { columns } => ("btree", columns.iter().map(|c| c.0).collect()),
        RawIndexAlgorithm::Hash { columns } => ("hash", columns.iter().map(|c| c.0).collect()),
        RawIndexAlgorithm::Direct { column } => ("direct", vec![column.0]),
        #[allow(unreachable_patterns)]
        _ => ("index", Vec::new()),
    }
}

/// Reads a V10 definition, with canonical (case-converted or explicit) names.
pub fn from_v10(def: &RawModuleDefV10) -> SchemaInfo {
    let typespace = def.typespace().cloned().unwrap_or_default();
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
                _ => {}
            }
        }
    }
    let canonical = |source: &str, explicit: &HashMap<String, String>| -> String {
        explicit.get(source).cloned().unwrap_or_else(|| {
            if snake {
                source.to_snake_case()
            } else {
                source.to_owned()
            }
        })
    };
    let tables = def
        .tables()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    let columns = columns_of(&typespace, t.product_type_ref.0);
                    TableInfo {
                        name: canonical(&t.source_name, &explicit_tables),
                        source_name: t.source_name.to_string(),
                        columns,
                        public: matches!(t.table_access, TableAccess::Public),
                        primary_key: t.primary_key.iter().map(|c| c.0).collect(),
                        unique: t
                            .constraints
                            .iter()
                            .map(|c| match &c.data {
                                RawConstraintDataV9::Unique(u) => u.columns.iter().map(|c| c.0).collect(),
                                #[allow(unreachable_patterns)]
                                _ => Vec::new(),
                            })
                            .collect(),
                        indexes: t
                            .indexes
                            .iter()
                            .map(|i| {
                                let (kind, cols) = index_columns(&i.algorithm);
                                (kind.to_owned(), cols)
                            })
                            .collect(),
                        auto_inc: t.sequences.iter().map(|s| s.column.0).collect(),
                        is_event: t.is_event,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let lifecycles: HashMap<String, &'static str> = def
        .lifecycle_reducers()
        .map(|ls| {
            ls.iter().map(|l| (l.function_name.to_string(), lifecycle_name(&l.lifecycle_spec))).collect()
        })
        .unwrap_or_default();
    let reducers = def
        .reducers()
        .map(|rs| {
            rs.iter()
                .map(|r| ReducerInfo {
                    name: canonical(&r.source_name, &explicit_functions),
                    params: r.params.clone(),
                    callable: matches!(r.visibility, FunctionVisibility::ClientCallable),
                    lifecycle: lifecycles.get(&*r.source_name).copied(),
                })
                .collect()
        })
        .unwrap_or_default();
    let procedures = def
        .procedures()
        .map(|ps| {
            ps.iter()
                .map(|p| ReducerInfo {
                    name: canonical(&p.source_name, &explicit_functions),
                    params: p.params.clone(),
                    callable: matches!(p.visibility, FunctionVisibility::ClientCallable),
                    lifecycle: None,
                })
                .collect()
        })
        .unwrap_or_default();
    let views = def
        .views()
        .map(|vs| vs.iter().map(|v| canonical(&v.source_name, &explicit_functions)).collect())
        .unwrap_or_default();
    let type_names = def
        .types()
        .map(|ts| ts.iter().map(|t| (t.ty.0, t.source_name.source_name.to_string())).collect())
        .unwrap_or_default();
    SchemaInfo { typespace, tables, reducers, procedures, views, type_names }
}

/// Reads a V9 definition (names are already canonical).
pub fn from_v9(def: &RawModuleDefV9) -> SchemaInfo {
    let typespace = def.typespace.clone();
    let tables = def
        .tables
        .iter()
        .map(|t| TableInfo {
            name: t.name.to_string(),
            source_name: t.name.to_string(),
            columns: columns_of(&typespace, t.product_type_ref.0),
            public: matches!(t.table_access, TableAccess::Public),
            primary_key: t.primary_key.iter().map(|c| c.0).collect(),
            unique: t
                .constraints
                .iter()
                .map(|c| match &c.data {
                    RawConstraintDataV9::Unique(u) => u.columns.iter().map(|c| c.0).collect(),
                    #[allow(unreachable_patterns)]
                    _ => Vec::new(),
                })
                .collect(),
            indexes: t
                .indexes
                .iter()
                .map(|i| {
                    let (kind, cols) = index_columns(&i.algorithm);
                    (kind.to_owned(), cols)
                })
                .collect(),
            auto_inc: t.sequences.iter().map(|s| s.column.0).collect(),
            is_event: false,
        })
        .collect();
    let reducers = def
        .reducers
        .iter()
        .map(|r| ReducerInfo {
            name: r.name.to_string(),
            params: r.params.clone(),
            callable: r.lifecycle.is_none(),
            lifecycle: r.lifecycle.as_ref().map(lifecycle_name),
        })
        .collect();
    let mut procedures = Vec::new();
    let mut views = Vec::new();
    for m in &def.misc_exports {
        match m {
            RawMiscModuleExportV9::Procedure(p) => procedures.push(ReducerInfo {
                name: p.name.to_string(),
                params: p.params.clone(),
                callable: true,
                lifecycle: None,
            }),
            RawMiscModuleExportV9::View(v) => views.push(v.name.to_string()),
            _ => {}
        }
    }
    let type_names = def.types.iter().map(|t| (t.ty.0, t.name.name.to_string())).collect();
    SchemaInfo { typespace, tables, reducers, procedures, views, type_names }
}

/// A type as a Rust-like name: `u32`, `String`, `Identity`, `Option<String>`, `Vec<u8>`, a
/// user type's name, `(a: u8, b: String)`.
pub fn type_name(ty: &AlgebraicType, schema: &SchemaInfo) -> String {
    type_name_depth(ty, schema, 0)
}

fn type_name_depth(ty: &AlgebraicType, schema: &SchemaInfo, depth: usize) -> String {
    if depth > 16 {
        return "…".into();
    }
    let inner = |t: &AlgebraicType| type_name_depth(t, schema, depth + 1);
    if ty.is_identity() {
        return "Identity".into();
    }
    if ty.is_connection_id() {
        return "ConnectionId".into();
    }
    if ty.is_timestamp() {
        return "Timestamp".into();
    }
    if ty.is_time_duration() {
        return "TimeDuration".into();
    }
    if ty.is_schedule_at() {
        return "ScheduleAt".into();
    }
    if let Some(t) = ty.as_option() {
        return format!("Option<{}>", inner(t));
    }
    match ty {
        AlgebraicType::Ref(r) => match schema.type_names.get(&r.0) {
            Some(n) => n.clone(),
            None => match schema.typespace.types.get(r.0 as usize) {
                Some(t) => inner(t),
                None => format!("Ref({})", r.0),
            },
        },
        AlgebraicType::Sum(s) => {
            let vs: Vec<String> = s
                .variants
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let name = v.name.as_deref().map(str::to_owned).unwrap_or_else(|| format!("{i}"));
                    if v.algebraic_type.is_unit() {
                        name
                    } else {
                        format!("{name}({})", inner(&v.algebraic_type))
                    }
                })
                .collect();
            format!("enum {{ {} }}", vs.join(", "))
        }
        AlgebraicType::Product(p) => format!("({})", params_list_depth(p, schema, depth + 1)),
        AlgebraicType::Array(a) => format!("Vec<{}>", inner(&a.elem_ty)),
        AlgebraicType::String => "String".into(),
        AlgebraicType::Bool => "bool".into(),
        AlgebraicType::I8 => "i8".into(),
        AlgebraicType::U8 => "u8".into(),
        AlgebraicType::I16 => "i16".into(),
        AlgebraicType::U16 => "u16".into(),
        AlgebraicType::I32 => "i32".into(),
        AlgebraicType::U32 => "u32".into(),
        AlgebraicType::I64 => "i64".into(),
        AlgebraicType::U64 => "u64".into(),
        AlgebraicType::I128 => "i128".into(),
        AlgebraicType::U128 => "u128".into(),
        AlgebraicType::I256 => "i256".into(),
        AlgebraicType::U256 => "u256".into(),
        AlgebraicType::F32 => "f32".into(),
        AlgebraicType::F64 => "f64".into(),
    }
}

/// `name: type, …` for a product (reducer parameters, nested products).
pub fn params_list(p: &ProductType, schema: &SchemaInfo) -> String {
    params_list_depth(p, schema, 0)
}

fn params_list_depth(p: &ProductType, schema: &SchemaInfo, depth: usize) -> String {
    p.elements
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let name = e.name.as_deref().map(str::to_owned).unwrap_or_else(|| format!("{i}"));
            format!("{name}: {}", type_name_depth(&e.algebraic_type, schema, depth))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `lightcone describe`'s text: tables with columns, types, keys and access; then reducers.
pub fn render_describe(db: &str, schema: &SchemaInfo) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Database `{db}`");
    let _ = writeln!(out);
    let _ = writeln!(out, "Tables ({}):", schema.tables.len());
    for t in &schema.tables {
        let access = if t.public { "public" } else { "private" };
        let event = if t.is_event { ", event" } else { "" };
        let _ = writeln!(out, "  {} ({access}{event})", t.name);
        let col_name = |c: u16| {
            t.columns
                .elements
                .get(c as usize)
                .and_then(|e| e.name.as_deref().map(str::to_owned))
                .unwrap_or_else(|| format!("{c}"))
        };
        let rows: Vec<Vec<String>> = t
            .columns
            .elements
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let i = i as u16;
                let mut attrs = Vec::new();
                if t.primary_key.contains(&i) {
                    attrs.push("primary key");
                }
                if t.unique.iter().any(|u| u == &[i]) && !t.primary_key.contains(&i) {
                    attrs.push("unique");
                }
                if t.auto_inc.contains(&i) {
                    attrs.push("auto_inc");
                }
                if t.indexes.iter().any(|(_, cols)| cols.first() == Some(&i)) {
                    attrs.push("indexed");
                }
                vec![col_name(i), type_name(&e.algebraic_type, schema), attrs.join(", ")]
            })
            .collect();
        let table = super::sql::psql_table(&["column".into(), "type".into(), "constraints".into()], &rows);
        for line in table.lines() {
            let _ = writeln!(out, "    {}", line.trim_end());
        }
        for (kind, cols) in t.indexes.iter().filter(|(_, cols)| cols.len() > 1) {
            let names: Vec<String> = cols.iter().map(|&c| col_name(c)).collect();
            let _ = writeln!(out, "    index ({kind}) on ({})", names.join(", "));
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "Reducers ({}):", schema.reducers.len());
    for r in &schema.reducers {
        let note = match (r.lifecycle, r.callable) {
            (Some(l), _) => format!("  [{l}]"),
            (None, false) => "  [private]".to_owned(),
            (None, true) => String::new(),
        };
        let _ = writeln!(out, "  {}({}){note}", r.name, params_list(&r.params, schema));
    }
    if !schema.procedures.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Procedures:");
        for p in &schema.procedures {
            let note = if p.callable { "" } else { "  [private]" };
            let _ = writeln!(out, "  {}({}){note}", p.name, params_list(&p.params, schema));
        }
    }
    if !schema.views.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Views: {}", schema.views.join(", "));
    }
    out
}
