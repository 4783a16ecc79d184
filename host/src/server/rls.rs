//! Row-level security for other identities' reads: the module's `client_visibility_filter`s,
//! installed in a subscription registry so every table a query reads is seen through them.
//! One place for subscriptions, one-off queries and `/sql`.

use lightcone_incremental_eval::{ClientAuth, ClientId, EvalError, Registry, TableRows};
use lightcone_mvcc::Snapshot;

use crate::module_def::ModuleSpec;

/// A subscription registry with the module's row-level security filters installed.
pub fn registry(spec: &ModuleSpec, snapshot: &Snapshot) -> Result<Registry, String> {
    let mut reg = Registry::new();
    for sql in &spec.row_level_security {
        reg.add_rls_filter(snapshot, sql).map_err(|e| e.to_string())?;
    }
    Ok(reg)
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
