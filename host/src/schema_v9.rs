//! The module definition in the older V9 shape, for clients that only read that one: the
//! official `spacetime` CLI before 2.8 (and 1.x) fetches `schema?version=9` for `call`,
//! `describe` and `subscribe`. Built from the module's own V10 definition with the
//! Apache-2.0 `spacetimedb-lib` types, using the canonical names the server serves (the names
//! SQL, subscriptions and calls use), with lifecycle and schedules folded back into reducers
//! and tables as V9 has them.
//!
//! Not carried over: views (V9's view export differs; the CLI only lists them) and a 2.x
//! reducer's return types and visibility (V9 has neither).

use spacetimedb_lib::db::raw_def::v10::RawModuleDefV10;
use spacetimedb_lib::db::raw_def::v9::{
    RawColumnDefaultValueV9, RawConstraintDefV9, RawIndexDefV9, RawMiscModuleExportV9, RawModuleDefV9,
    RawProcedureDefV9, RawReducerDefV9, RawScheduleDefV9, RawScopedTypeNameV9, RawSequenceDefV9,
    RawTableDefV9, RawTypeDefV9,
};
use spacetimedb_lib::RawModuleDef;

use crate::module_def::ModuleSpec;

/// The V9 definition of a module whose stored definition is V10.
pub fn raw_def_v9(spec: &ModuleSpec) -> Result<RawModuleDefV9, String> {
    let def: RawModuleDefV10 = match spacetimedb_sats::bsatn::from_slice::<RawModuleDef>(&spec.raw) {
        Ok(RawModuleDef::V10(def)) => def,
        Ok(_) => return Err("the stored module definition is not V10".into()),
        Err(e) => return Err(format!("the stored module definition does not decode: {e}")),
    };
    let raw_tables = def.tables().map(Vec::as_slice).unwrap_or_default();
    let raw_reducers = def.reducers().map(Vec::as_slice).unwrap_or_default();
    // Invariant: `ModuleSpec` was built from this very definition, one entry per table and
    // per reducer, in definition order (the views' tables follow the module's tables).
    let module_tables = spec.tables.iter().filter(|t| t.view.is_none()).count();
    if raw_tables.len() != module_tables || raw_reducers.len() != spec.reducers.len() {
        return Err("the stored module definition does not match the running module".into());
    }
    let reducer_name = |source: &str| -> String {
        raw_reducers
            .iter()
            .position(|r| &*r.source_name == source)
            .map_or_else(|| source.to_string(), |i| spec.reducers[i].name.clone())
    };

    let mut tables = Vec::with_capacity(raw_tables.len());
    let mut misc_exports = Vec::new();
    for (raw, table) in raw_tables.iter().zip(&spec.tables) {
        let schedule = def
            .schedules()
            .into_iter()
            .flatten()
            .find(|s| *s.table_name == *raw.source_name || *s.table_name == *table.name)
            .map(|s| RawScheduleDefV9 {
                name: s.source_name.clone(),
                reducer_name: reducer_name(&s.function_name).into(),
                scheduled_at_column: s.schedule_at_col,
            });
        tables.push(RawTableDefV9 {
            name: table.name.clone().into(),
            product_type_ref: raw.product_type_ref,
            primary_key: raw.primary_key.clone(),
            indexes: raw
                .indexes
                .iter()
                .map(|i| RawIndexDefV9 {
                    name: i.source_name.clone(),
                    accessor_name: i.accessor_name.clone(),
                    algorithm: i.algorithm.clone(),
                })
                .collect(),
            constraints: raw
                .constraints
                .iter()
                .map(|c| RawConstraintDefV9 { name: c.source_name.clone(), data: c.data.clone() })
                .collect(),
            sequences: raw
                .sequences
                .iter()
                .map(|s| RawSequenceDefV9 {
                    name: s.source_name.clone(),
                    column: s.column,
                    start: s.start,
                    min_value: s.min_value,
                    max_value: s.max_value,
                    increment: s.increment,
                })
                .collect(),
            schedule,
            table_type: raw.table_type,
            table_access: raw.table_access,
        });
        for d in &raw.default_values {
            misc_exports.push(RawMiscModuleExportV9::ColumnDefaultValue(RawColumnDefaultValueV9 {
                table: table.name.clone().into(),
                col_id: d.col_id,
                value: d.value.clone(),
            }));
        }
    }

    let reducers = raw_reducers
        .iter()
        .zip(&spec.reducers)
        .map(|(raw, reducer)| RawReducerDefV9 {
            name: reducer.name.clone().into(),
            params: raw.params.clone(),
            lifecycle: def
                .lifecycle_reducers()
                .into_iter()
                .flatten()
                .find(|l| *l.function_name == *raw.source_name)
                .map(|l| l.lifecycle_spec),
        })
        .collect();

    for p in def.procedures().into_iter().flatten() {
        misc_exports.push(RawMiscModuleExportV9::Procedure(RawProcedureDefV9 {
            name: p.source_name.clone(),
            params: p.params.clone(),
            return_type: p.return_type.clone(),
        }));
    }

    let types = def
        .types()
        .into_iter()
        .flatten()
        .map(|t| RawTypeDefV9 {
            name: RawScopedTypeNameV9 {
                scope: t.source_name.scope.clone(),
                name: t.source_name.source_name.clone(),
            },
            ty: t.ty,
            custom_ordering: t.custom_ordering,
        })
        .collect();

    Ok(RawModuleDefV9 {
        typespace: def.typespace().cloned().unwrap_or_default(),
        tables,
        reducers,
        types,
        misc_exports,
        row_level_security: def.row_level_security().cloned().unwrap_or_default(),
    })
}
