//! DML (`INSERT`, `UPDATE`, `DELETE`) and statement batches, run inside a caller-supplied
//! [`WriteTx`].
//!
//! Failure: a statement that fails is undone as far as the engine allows (rows it inserted are
//! deleted, rows it deleted are re-inserted), but sequence counters it advanced stay advanced,
//! rows may come back under new row ids, and earlier statements of a batch stay applied. There
//! are no savepoints: **on any error the caller must roll the transaction back.**

use std::collections::HashSet;

use lightcone_mvcc::{ColId, MvccError, ReadTx, Row, RowId, TableId, Value, WriteTx};
use sqlparser::ast::{
    AssignmentTarget, Delete, FromTable, Insert, ObjectName, SetExpr, Statement, TableObject, TableWithJoins,
};

use crate::error::PlanError;
use crate::exec::{execute_bound, fetch_with_ids, resolve, Params, QueryResult};
use crate::logical::{
    bind_operand, bind_pred, bind_relation, bind_statement, parse, scan_of, single_name, strip, unsupported,
    ColumnRef, LogicalPlan, Operand, Predicate, Rel, Scope,
};
use crate::physical::plan_physical;

/// What a DML statement changed. An `UPDATE` counts each matched row once in `rows_updated`
/// (it is stored as a delete plus an insert, which are not counted separately).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DmlStats {
    pub rows_inserted: u64,
    pub rows_deleted: u64,
    pub rows_updated: u64,
}

/// The outcome of one statement of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementResult {
    /// A `SELECT` (or `EXPLAIN`): its rows, as seen inside the transaction.
    Rows(QueryResult),
    /// An `INSERT`, `UPDATE` or `DELETE`.
    Dml(DmlStats),
}

/// A bound DML statement. `text` is the statement as sqlparser prints it, quoted in errors.
enum Dml {
    /// Full rows in column order; omitted auto-increment columns hold their type's zero.
    Insert {
        table: TableId,
        rows: Vec<Vec<Operand>>,
        text: String,
    },
    Update {
        table: TableId,
        target: LogicalPlan,
        set: Vec<(ColId, Operand)>,
        text: String,
    },
    Delete {
        table: TableId,
        target: LogicalPlan,
    },
}

/// Runs every `;`-separated statement of `sql` in order inside `tx`, each seeing the writes
/// of the ones before; one result per statement. Stops at the first error: then the caller
/// must roll `tx` back (see the module docs).
pub fn execute_batch(
    tx: &mut WriteTx<'_>,
    sql: &str,
    params: &Params,
) -> Result<Vec<StatementResult>, PlanError> {
    let stmts = parse(sql)?;
    if stmts.is_empty() {
        return Err(PlanError::Syntax(format!("empty statement `{sql}`")));
    }
    stmts.iter().map(|s| run_statement(tx, s, params)).collect()
}

/// Runs exactly one statement — a query (seeing `tx`'s own writes) or DML — inside `tx`.
/// On error the caller must roll `tx` back.
pub fn execute_statement(
    tx: &mut WriteTx<'_>,
    sql: &str,
    params: &Params,
) -> Result<StatementResult, PlanError> {
    let stmts = parse(sql)?;
    match stmts.as_slice() {
        [s] => run_statement(tx, s, params),
        [] => Err(PlanError::Syntax(format!("empty statement `{sql}`"))),
        _ => Err(unsupported(format!("multiple statements: {sql} (use execute_batch)"))),
    }
}

/// Runs exactly one `INSERT`, `UPDATE` or `DELETE` inside `tx`. On error the caller must roll
/// `tx` back.
pub fn execute_dml(tx: &mut WriteTx<'_>, sql: &str, params: &Params) -> Result<DmlStats, PlanError> {
    let stmts = parse(sql)?;
    let stmt = match stmts.as_slice() {
        [s] => s,
        [] => return Err(PlanError::Syntax(format!("empty statement `{sql}`"))),
        _ => return Err(unsupported(format!("multiple statements: {sql} (use execute_batch)"))),
    };
    match bind_dml(tx, stmt)? {
        Some(dml) => run_dml(tx, &dml, params),
        None => Err(PlanError::WrongStatementKind {
            statement: stmt.to_string(),
            reason: "not INSERT, UPDATE or DELETE (use execute_statement for queries)".into(),
        }),
    }
}

fn run_statement(
    tx: &mut WriteTx<'_>,
    stmt: &Statement,
    params: &Params,
) -> Result<StatementResult, PlanError> {
    match bind_dml(tx, stmt)? {
        Some(dml) => run_dml(tx, &dml, params).map(StatementResult::Dml),
        None => {
            let bound = bind_statement(tx, stmt)?;
            execute_bound(tx, &bound, params).map(StatementResult::Rows)
        }
    }
}

/// Binds a DML statement; `None` if `stmt` is not DML.
fn bind_dml(tx: &impl ReadTx, stmt: &Statement) -> Result<Option<Dml>, PlanError> {
    Ok(Some(match stmt {
        Statement::Insert(ins) => bind_insert(tx, ins)?,
        Statement::Update {
            table,
            assignments,
            from: None,
            selection,
            returning: None,
            or: None,
            limit: None,
        } => {
            let rel = bind_target(tx, table, stmt)?;
            let scope = Scope { rels: vec![rel] };
            let rel = &scope.rels[0];
            let text = stmt.to_string();
            let mut set: Vec<(ColId, Operand)> = Vec::new();
            for a in assignments {
                let col = match &a.target {
                    AssignmentTarget::ColumnName(name) => assigned_column(rel, name, stmt)?,
                    AssignmentTarget::Tuple(_) => return Err(unsupported(a)),
                };
                if set.iter().any(|(c, _)| *c == col.col) {
                    return Err(PlanError::DuplicateColumn { column: col.name, statement: text });
                }
                set.push((col.col, bind_operand(&col, strip(&a.value))?));
            }
            let pred = selection.as_ref().map(|w| bind_pred(&scope, w)).transpose()?;
            Dml::Update { table: rel.schema.id, target: target_plan(rel, pred), set, text }
        }
        Statement::Delete(Delete {
            tables,
            from: FromTable::WithFromKeyword(from),
            using: None,
            selection,
            returning: None,
            order_by,
            limit: None,
        }) if tables.is_empty() && order_by.is_empty() => {
            let [table] = from.as_slice() else { return Err(unsupported(stmt)) };
            let rel = bind_target(tx, table, stmt)?;
            let scope = Scope { rels: vec![rel] };
            let rel = &scope.rels[0];
            let pred = selection.as_ref().map(|w| bind_pred(&scope, w)).transpose()?;
            Dml::Delete { table: rel.schema.id, target: target_plan(rel, pred) }
        }
        Statement::Update { .. } | Statement::Delete(_) => return Err(unsupported(stmt)),
        _ => return Ok(None),
    }))
}

/// The single table an `UPDATE` or `DELETE` writes (an alias is allowed, joins are not).
fn bind_target<'a>(tx: &'a impl ReadTx, t: &TableWithJoins, stmt: &Statement) -> Result<Rel<'a>, PlanError> {
    if !t.joins.is_empty() {
        return Err(unsupported(format!("{stmt} (joins in DML)")));
    }
    bind_relation(tx, &t.relation)
}

/// `SET c = …` or `SET t.c = …`.
fn assigned_column(rel: &Rel<'_>, name: &ObjectName, stmt: &Statement) -> Result<ColumnRef, PlanError> {
    let parts: Vec<_> = name.0.iter().map(|p| p.as_ident()).collect();
    match parts.as_slice() {
        [Some(c)] => rel.column(c),
        [Some(q), Some(c)] if rel.matches(q) => rel.column(c),
        [Some(q), Some(_)] => Err(PlanError::UnknownTable(format!("{q}` in `{stmt}"))),
        _ => Err(unsupported(name)),
    }
}

/// The rows a `WHERE` selects, as a plan the physical planner can pick an index for.
fn target_plan(rel: &Rel<'_>, pred: Option<Predicate>) -> LogicalPlan {
    let scan = scan_of(rel);
    let input = match pred {
        Some(pred) => LogicalPlan::Select { input: Box::new(scan), pred },
        None => scan,
    };
    LogicalPlan::Project { input: Box::new(input), columns: Vec::new() }
}

fn bind_insert(tx: &impl ReadTx, ins: &Insert) -> Result<Dml, PlanError> {
    let text = ins.to_string();
    let plain = ins.or.is_none()
        && !ins.ignore
        && ins.table_alias.is_none()
        && !ins.overwrite
        && ins.assignments.is_empty()
        && ins.partitioned.is_none()
        && ins.after_columns.is_empty()
        && ins.on.is_none()
        && ins.returning.is_none()
        && !ins.replace_into
        && ins.priority.is_none()
        && ins.insert_alias.is_none()
        && ins.settings.is_none()
        && ins.format_clause.is_none();
    if !plain {
        return Err(unsupported(&text));
    }
    let TableObject::TableName(name) = &ins.table else { return Err(unsupported(&text)) };
    let ident = single_name(name)?;
    let table = match tx.table_id(&ident.value) {
        Ok(id) => id,
        Err(MvccError::NoSuchTableName(n)) => return Err(PlanError::UnknownTable(n)),
        Err(e) => return Err(e.into()),
    };
    let schema = tx.table(table)?.schema();
    let rel = Rel { schema, qualifier: ident.value.clone() };
    let ncols = schema.def.columns.len();
    // Target columns, in the order values are given.
    let targets: Vec<ColumnRef> = if ins.columns.is_empty() {
        (0..ncols).map(|i| rel.col_ref(i)).collect()
    } else {
        let mut v: Vec<ColumnRef> = Vec::new();
        for c in &ins.columns {
            let col = rel.column(c)?;
            if v.iter().any(|o| o.col == col.col) {
                return Err(PlanError::DuplicateColumn { column: col.name, statement: text });
            }
            v.push(col);
        }
        v
    };
    // Omitted columns: the type's zero (which the engine replaces with the sequence's next
    // value) for auto-increment columns, an error otherwise.
    let mut defaults: Vec<Option<Operand>> = vec![None; ncols];
    for (i, (col, default)) in schema.def.columns.iter().zip(defaults.iter_mut()).enumerate() {
        if targets.iter().any(|t| t.col as usize == i) {
            continue;
        }
        let zero = schema
            .def
            .sequences
            .iter()
            .any(|s| s.column as usize == i)
            .then(|| Value::integer_of_type(col.ty, 0))
            .flatten();
        match zero {
            Some(z) => *default = Some(Operand::Literal(z)),
            None => {
                return Err(PlanError::MissingValue {
                    column: col.name.clone(),
                    table: schema.name().to_string(),
                    statement: text,
                })
            }
        }
    }
    let q = match &ins.source {
        Some(q) => q,
        None => return Err(unsupported(&text)),
    };
    let values = match q.body.as_ref() {
        SetExpr::Values(v)
            if q.with.is_none()
                && q.order_by.is_none()
                && q.limit_clause.is_none()
                && q.fetch.is_none()
                && !v.explicit_row =>
        {
            v
        }
        _ => return Err(unsupported(format!("{text} (only INSERT … VALUES)"))),
    };
    let mut rows = Vec::with_capacity(values.rows.len());
    for r in &values.rows {
        if r.len() != targets.len() {
            let shown: Vec<String> = r.iter().map(|e| e.to_string()).collect();
            return Err(PlanError::ValuesArity {
                row: format!("({})", shown.join(", ")),
                expected: targets.len(),
                got: r.len(),
            });
        }
        let mut row = defaults.clone();
        for (col, e) in targets.iter().zip(r) {
            row[col.col as usize] = Some(bind_operand(col, strip(e))?);
        }
        // Every column is either a target (filled above) or has a default (else we returned
        // above), so this never fails; it is checked rather than assumed all the same.
        let row: Option<Vec<Operand>> = row.into_iter().collect();
        rows.push(row.ok_or_else(|| unsupported(format!("{text} (a column without a value)")))?);
    }
    Ok(Dml::Insert { table, rows, text })
}

/// Maps an engine error of a write by statement `text` to a planner error.
fn write_error(e: MvccError, text: &str) -> PlanError {
    match e {
        MvccError::UniqueViolation { table, index, key } => {
            PlanError::UniqueViolation { table, index, key, statement: text.to_string() }
        }
        e => PlanError::Engine(e),
    }
}

/// The writes of one statement so far, to undo them if a later one fails.
#[derive(Default)]
struct Undo {
    inserted: Vec<RowId>,
    deleted: Vec<Row>,
}

impl Undo {
    /// Best effort: the statement's inserts are deleted and its deletes re-inserted. Errors
    /// here are ignored; the caller is told to roll back anyway.
    fn undo(self, tx: &mut WriteTx<'_>, table: TableId) {
        for rid in self.inserted.into_iter().rev() {
            let _ = tx.delete(table, rid);
        }
        for row in self.deleted {
            let _ = tx.insert(table, row);
        }
    }
}

fn run_dml(tx: &mut WriteTx<'_>, dml: &Dml, params: &Params) -> Result<DmlStats, PlanError> {
    let sender = params.sender;
    match dml {
        Dml::Insert { table, rows, text } => {
            if sender.is_none() && rows.iter().flatten().any(|o| *o == Operand::Sender) {
                return Err(PlanError::MissingSender);
            }
            let rows = rows
                .iter()
                .map(|r| r.iter().map(|o| resolve(o, sender)).collect::<Result<Row, _>>())
                .collect::<Result<Vec<_>, _>>()?;
            let mut undo = Undo::default();
            for row in rows {
                match tx.insert(*table, row) {
                    Ok((rid, _)) => undo.inserted.push(rid),
                    Err(e) => {
                        undo.undo(tx, *table);
                        return Err(write_error(e, text));
                    }
                }
            }
            Ok(DmlStats { rows_inserted: undo.inserted.len() as u64, ..DmlStats::default() })
        }
        Dml::Delete { table, target } => {
            let targets = select_targets(tx, target, params)?;
            let mut n = 0;
            for (rid, _) in targets {
                if tx.delete(*table, rid)?.is_some() {
                    n += 1;
                }
            }
            Ok(DmlStats { rows_deleted: n, ..DmlStats::default() })
        }
        Dml::Update { table, target, set, text } => {
            if sender.is_none() && set.iter().any(|(_, o)| *o == Operand::Sender) {
                return Err(PlanError::MissingSender);
            }
            let set = set
                .iter()
                .map(|(c, o)| Ok((*c as usize, resolve(o, sender)?)))
                .collect::<Result<Vec<_>, PlanError>>()?;
            let targets = select_targets(tx, target, params)?;
            // All matched rows are removed first, then all new versions inserted: a new version
            // never collides with an old version of another matched row, a changed primary key
            // works, and no row is visited twice.
            let mut undo = Undo::default();
            let mut new_rows = Vec::with_capacity(targets.len());
            for (rid, old) in targets {
                let mut new = old;
                for (c, v) in &set {
                    if let Some(slot) = new.get_mut(*c) {
                        *slot = v.clone();
                    }
                }
                new_rows.push(new);
                match tx.delete(*table, rid) {
                    Ok(Some(old)) => undo.deleted.push(old),
                    Ok(None) => {
                        new_rows.pop();
                    }
                    Err(e) => {
                        undo.undo(tx, *table);
                        return Err(e.into());
                    }
                }
            }
            let updated = new_rows.len() as u64;
            for row in new_rows {
                match tx.insert(*table, row) {
                    Ok((rid, _)) => undo.inserted.push(rid),
                    Err(e) => {
                        undo.undo(tx, *table);
                        return Err(write_error(e, text));
                    }
                }
            }
            Ok(DmlStats { rows_updated: updated, ..DmlStats::default() })
        }
    }
}

/// The (row id, row) pairs a DML `WHERE` selects, collected before any write.
fn select_targets(
    tx: &WriteTx<'_>,
    target: &LogicalPlan,
    params: &Params,
) -> Result<Vec<(RowId, Row)>, PlanError> {
    let plan = plan_physical(target, tx)?;
    if plan.uses_sender() && params.sender.is_none() {
        return Err(PlanError::MissingSender);
    }
    let view = tx.table(plan.first.table)?;
    let mut seen = HashSet::new();
    // Index scans yield each row once; the set guards the row count against duplicates anyway.
    Ok(fetch_with_ids(view, &plan.first, params.sender)?.filter(|(rid, _)| seen.insert(*rid)).collect())
}
