//! Row-level security for other identities' reads: the module's `client_visibility_filter`s,
//! installed in a subscription registry so every table a query reads is seen through them.
//! One place for subscriptions, one-off queries and `/sql`. Sender-bound views are filtered
//! here too: each reader sees only the rows computed for its identity.

use lightcone_incremental_eval::{ClientAuth, ClientId, EvalError, Registry, TableRows};
use lightcone_mvcc::{ReadTx, Snapshot};

use crate::module_def::{ModuleSpec, VIEW_SENDER_COLUMN};

/// A subscription registry with the module's row-level security filters installed, and every
/// sender-bound view's table filtered to its reader's own rows (the owner included).
pub fn registry(spec: &ModuleSpec, snapshot: &Snapshot) -> Result<Registry, String> {
    let mut reg = Registry::new();
    for sql in &spec.row_level_security {
        reg.add_rls_filter(snapshot, sql).map_err(|e| e.to_string())?;
    }
    add_view_filters(&mut reg, spec, snapshot)?;
    Ok(reg)
}

/// Installs the per-reader filter of every sender-bound view that has none yet (a registry
/// outlives module updates, which may add views).
pub fn add_view_filters(reg: &mut Registry, spec: &ModuleSpec, snapshot: &Snapshot) -> Result<(), String> {
    for view in spec.views.iter().filter(|v| !v.anonymous) {
        let table = snapshot.table_id(&view.name).map_err(|e| e.to_string())?;
        if reg.has_mandatory_filter(table) {
            continue;
        }
        let sql = format!("SELECT * FROM \"{}\" WHERE {VIEW_SENDER_COLUMN} = :sender", view.name);
        reg.add_mandatory_filter(snapshot, &sql).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A sender-bound view whose name appears as a word in `sql` (case-insensitive). For SQL that
/// does not bind as one query (several statements, DML), where reads cannot be resolved: such
/// a text is refused rather than risk showing one identity another's rows.
pub fn mentioned_sender_bound_view<'s>(spec: &'s ModuleSpec, sql: &str) -> Option<&'s str> {
    let words: Vec<String> = sql
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    spec.views
        .iter()
        .filter(|v| !v.anonymous)
        .find(|v| words.iter().any(|w| *w == v.name.to_lowercase()))
        .map(|v| v.name.as_str())
}

/// The sender-bound views (indexes into the spec's views) that `queries` read. Queries that do
/// not bind (DML, errors) read none here; they fail or run elsewhere.
pub fn sender_bound_views(spec: &ModuleSpec, snapshot: &Snapshot, queries: &[&str]) -> Vec<usize> {
    let mut out = Vec::new();
    if spec.views.iter().all(|v| v.anonymous) {
        return out;
    }
    for sql in queries {
        let Ok(bound) = lightcone_query_planner::bind(snapshot, sql) else { continue };
        for id in bound.plan.tables() {
            let Ok(table) = snapshot.table(id) else { continue };
            let name = table.schema().name();
            if let Some(v) = spec.views.iter().position(|v| !v.anonymous && v.name == name) {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
    }
    out
}

/// The rows `auth` may see for `sql`, evaluated like a subscription. Only whole-row shapes can
/// be filtered exactly; anything else (projections, COUNT) is refused rather than leaked.
pub fn visible_rows(
    spec: &ModuleSpec,
    snapshot: &Snapshot,
    sql: &str,
    auth: &ClientAuth,
) -> Result<Vec<TableRows>, String> {
    registry(spec, snapshot)?.subscribe(snapshot, ClientId(0), 0, &[sql], auth).map_err(|e| match e {
        EvalError::UnsupportedShape { .. } => "this database has row-level security: other identities may only \
                                               run queries that return whole rows of one table (`SELECT * FROM \
                                               t …` or `SELECT t.* FROM t JOIN …`)"
            .to_string(),
        e => e.to_string(),
    })
}
