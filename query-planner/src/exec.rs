//! Execution of a [`PhysicalPlan`] on a snapshot (or any [`ReadTx`]).

use std::ops::Bound;

use lightcone_mvcc::{ColumnType, ReadTx, Row, Value, U256};

use crate::error::PlanError;
use crate::logical::{bind, Operand, Predicate};
use crate::physical::{plan_physical, AccessPath, Output, PhysicalPlan};

/// Values a query may reference that are supplied by the caller at execution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// The caller's identity, bound to `:sender`.
    pub sender: Option<U256>,
}

/// A query's answer. `EXPLAIN` answers with one `plan` string column, one row per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryResult {
    pub columns: Vec<(String, ColumnType)>,
    pub rows: Vec<Row>,
}

/// Parses, binds, plans and runs `sql` on `tx` (typically a [`Snapshot`](lightcone_mvcc::Snapshot)).
pub fn execute(tx: &impl ReadTx, sql: &str, params: &Params) -> Result<QueryResult, PlanError> {
    let bound = bind(tx, sql)?;
    let view = tx.table(bound.plan.table())?;
    let plan = plan_physical(&bound.plan, view.schema())?;
    if bound.explain {
        let rows = crate::explain::render(&plan).lines().map(|l| vec![Value::String(l.into())]).collect();
        return Ok(QueryResult { columns: vec![("plan".into(), ColumnType::String)], rows });
    }
    execute_plan(tx, &plan, params)
}

fn resolve(op: &Operand, sender: Option<U256>) -> Result<Value, PlanError> {
    match op {
        Operand::Literal(v) => Ok(v.clone()),
        Operand::Sender => sender.map(Value::U256).ok_or(PlanError::MissingSender),
    }
}

fn resolve_bound(b: &Bound<Operand>, sender: Option<U256>) -> Result<Bound<Vec<Value>>, PlanError> {
    Ok(match b {
        Bound::Included(o) => Bound::Included(vec![resolve(o, sender)?]),
        Bound::Excluded(o) => Bound::Excluded(vec![resolve(o, sender)?]),
        Bound::Unbounded => Bound::Unbounded,
    })
}

/// Predicate with `:sender` substituted, so evaluation cannot fail.
fn substitute(p: &Predicate, sender: Option<U256>) -> Result<Predicate, PlanError> {
    Ok(match p {
        Predicate::Cmp { col, op, rhs } => {
            Predicate::Cmp { col: col.clone(), op: *op, rhs: Operand::Literal(resolve(rhs, sender)?) }
        }
        Predicate::And(l, r) => {
            Predicate::And(Box::new(substitute(l, sender)?), Box::new(substitute(r, sender)?))
        }
        Predicate::Or(l, r) => {
            Predicate::Or(Box::new(substitute(l, sender)?), Box::new(substitute(r, sender)?))
        }
        Predicate::Not(x) => Predicate::Not(Box::new(substitute(x, sender)?)),
    })
}

/// Evaluates a predicate on a row (`:sender` must already be substituted; if not, it is false).
pub(crate) fn eval(p: &Predicate, row: &Row) -> bool {
    match p {
        Predicate::Cmp { col, op, rhs: Operand::Literal(v) } => {
            row.get(col.col as usize).is_some_and(|x| op.holds(x.cmp(v)))
        }
        Predicate::Cmp { .. } => false,
        Predicate::And(l, r) => eval(l, row) && eval(r, row),
        Predicate::Or(l, r) => eval(l, row) || eval(r, row),
        Predicate::Not(x) => !eval(x, row),
    }
}

/// Runs an already planned query.
pub fn execute_plan(
    tx: &impl ReadTx,
    plan: &PhysicalPlan,
    params: &Params,
) -> Result<QueryResult, PlanError> {
    if plan.uses_sender() && params.sender.is_none() {
        return Err(PlanError::MissingSender);
    }
    let sender = params.sender;
    let view = tx.table(plan.table)?;
    let filter = plan.filter.as_ref().map(|f| substitute(f, sender)).transpose()?;
    let rows: Box<dyn Iterator<Item = Row> + '_> = match &plan.access {
        AccessPath::FullScan => Box::new(view.scan().map(|(_, r)| r)),
        AccessPath::IndexSeek { index, key, .. } => {
            let key = key.iter().map(|k| resolve(k, sender)).collect::<Result<Vec<_>, _>>()?;
            Box::new(view.index_seek(*index, &key)?.filter_map(move |rid| view.get(rid)))
        }
        AccessPath::IndexRange { index, lo, hi, .. } => {
            let lo = resolve_bound(lo, sender)?;
            let hi = resolve_bound(hi, sender)?;
            let scan = view.index_range(*index, as_slice_bound(&lo), as_slice_bound(&hi))?;
            Box::new(scan.filter_map(move |rid| view.get(rid)))
        }
    };
    let mut rows = rows.filter(|r| filter.as_ref().is_none_or(|f| eval(f, r)));
    let limit = plan.limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    match &plan.output {
        Output::Columns(cols) => {
            let columns = cols.iter().map(|c| (c.name.clone(), c.ty)).collect();
            let out = rows
                .by_ref()
                .take(limit)
                .map(|r| {
                    cols.iter()
                        .map(|c| r.get(c.col as usize).cloned().unwrap_or(Value::Bool(false)))
                        .collect()
                })
                .collect();
            Ok(QueryResult { columns, rows: out })
        }
        Output::Count(name) => {
            let n = rows.count() as u64;
            let rows = if limit == 0 { vec![] } else { vec![vec![Value::U64(n)]] };
            Ok(QueryResult { columns: vec![(name.clone(), ColumnType::U64)], rows })
        }
    }
}

fn as_slice_bound(b: &Bound<Vec<Value>>) -> Bound<&[Value]> {
    b.as_ref().map(Vec::as_slice)
}
