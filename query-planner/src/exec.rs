//! Execution of a [`PhysicalPlan`] on a snapshot (or any [`ReadTx`]).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::ops::Bound;

use lightcone_mvcc::{ColId, ColumnType, ReadTx, Row, RowId, TableView, Value, U256};

use crate::error::PlanError;
use crate::logical::{bind, BoundStatement, ColumnRef, Operand, Predicate};
use crate::physical::{plan_physical, AccessPath, JoinMethod, JoinStep, Output, PhysicalPlan, TableAccess};

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
    execute_bound(tx, &bound, params)
}

/// Plans and runs (or explains) a bound query.
pub(crate) fn execute_bound(
    tx: &impl ReadTx,
    bound: &BoundStatement,
    params: &Params,
) -> Result<QueryResult, PlanError> {
    let plan = plan_physical(&bound.plan, tx)?;
    if bound.explain {
        let rows = crate::explain::render(&plan).lines().map(|l| vec![Value::String(l.into())]).collect();
        return Ok(QueryResult { columns: vec![("plan".into(), ColumnType::String)], rows });
    }
    execute_plan(tx, &plan, params)
}

/// The value of an index-key operand (a literal or `:sender`; access paths never hold columns).
pub(crate) fn resolve(op: &Operand, sender: Option<U256>) -> Result<Value, PlanError> {
    match op {
        Operand::Literal(v) => Ok(v.clone()),
        Operand::Sender => sender.map(Value::U256).ok_or(PlanError::MissingSender),
        Operand::Column(c) => {
            Err(PlanError::Unsupported(format!("column `{}.{}` as an index key", c.alias, c.name)))
        }
    }
}

/// A key bound: the equality prefix followed by the bound's value. An unbounded side of a
/// prefix range is the prefix itself, included (every key starting with it).
fn resolve_bound(
    prefix: &[Value],
    b: &Bound<Operand>,
    sender: Option<U256>,
) -> Result<Bound<Vec<Value>>, PlanError> {
    let key = |o: &Operand| -> Result<Vec<Value>, PlanError> {
        let mut k = prefix.to_vec();
        k.push(resolve(o, sender)?);
        Ok(k)
    };
    Ok(match b {
        Bound::Included(o) => Bound::Included(key(o)?),
        Bound::Excluded(o) => Bound::Excluded(key(o)?),
        Bound::Unbounded if prefix.is_empty() => Bound::Unbounded,
        Bound::Unbounded => Bound::Included(prefix.to_vec()),
    })
}

/// Evaluates `p` on a row whose column positions are those of `p`'s column references.
fn eval_row(p: &Predicate, row: &Row, sender: Option<&Value>) -> bool {
    p.eval(&|c: &ColumnRef| row.get(c.col as usize), sender)
}

/// Where each table instance's columns start in a joined row.
struct Layout(Vec<(String, usize)>);

impl Layout {
    fn pos(&self, c: &ColumnRef) -> Result<usize, PlanError> {
        self.0.iter().find(|(a, _)| *a == c.alias).map(|(_, off)| off + c.col as usize).ok_or_else(|| {
            PlanError::Unsupported(format!("column `{}.{}` outside the query", c.alias, c.name))
        })
    }

    /// `p` with columns renumbered to joined-row positions.
    fn remap(&self, p: &Predicate) -> Result<Predicate, PlanError> {
        p.map_columns(&|col: &ColumnRef| {
            let pos = self.pos(col)?;
            let col_id = ColId::try_from(pos).map_err(|_| {
                PlanError::Unsupported(format!("joined rows wider than {} columns", ColId::MAX))
            })?;
            Ok(ColumnRef { col: col_id, ..col.clone() })
        })
    }
}

/// The rows of one table instance via its access path and filter (local column positions).
fn fetch<'a>(
    view: TableView<'a>,
    t: &TableAccess,
    sender: Option<U256>,
) -> Result<Box<dyn Iterator<Item = Row> + 'a>, PlanError> {
    Ok(Box::new(fetch_with_ids(view, t, sender)?.map(|(_, r)| r)))
}

/// [`fetch`] with each row's id.
pub(crate) fn fetch_with_ids<'a>(
    view: TableView<'a>,
    t: &TableAccess,
    sender: Option<U256>,
) -> Result<Box<dyn Iterator<Item = (RowId, Row)> + 'a>, PlanError> {
    let filter = t.filter.clone();
    let sender_value = sender.map(Value::U256);
    let get = move |rid: RowId| view.get(rid).map(|r| (rid, r));
    let rows: Box<dyn Iterator<Item = (RowId, Row)> + 'a> = match &t.access {
        // `RowCount` is answered without reading rows by `execute_plan`; anywhere else it
        // reads like a full scan.
        AccessPath::FullScan | AccessPath::RowCount => Box::new(view.scan()),
        AccessPath::IndexSeek { index, key, .. } => {
            let key = key.iter().map(|k| resolve(k, sender)).collect::<Result<Vec<_>, _>>()?;
            Box::new(view.index_seek(*index, &key)?.filter_map(get))
        }
        AccessPath::IndexRange { index, prefix, lo, hi, .. } => {
            let prefix = prefix.iter().map(|(_, k)| resolve(k, sender)).collect::<Result<Vec<_>, _>>()?;
            let lo = resolve_bound(&prefix, lo, sender)?;
            let hi = resolve_bound(&prefix, hi, sender)?;
            let scan = view.index_range(*index, as_slice_bound(&lo), as_slice_bound(&hi))?;
            Box::new(scan.filter_map(get))
        }
    };
    Ok(Box::new(
        rows.filter(move |(_, r)| filter.as_ref().is_none_or(|f| eval_row(f, r, sender_value.as_ref()))),
    ))
}

fn key_of(row: &Row, positions: &[usize]) -> Option<Vec<Value>> {
    positions.iter().map(|&p| row.get(p).cloned()).collect()
}

fn concat(outer: &Row, inner: &Row) -> Row {
    let mut r = Vec::with_capacity(outer.len() + inner.len());
    r.extend(outer.iter().cloned());
    r.extend(inner.iter().cloned());
    r
}

/// Joins `outer` (joined rows laid out by `layout`) with the step's inner table.
fn join_step(
    tx: &impl ReadTx,
    outer: Vec<Row>,
    step: &JoinStep,
    layout: &Layout,
    sender: Option<U256>,
) -> Result<Vec<Row>, PlanError> {
    let view = tx.table(step.inner.table)?;
    let outer_pos = step.on.iter().map(|(o, _)| layout.pos(o)).collect::<Result<Vec<_>, _>>()?;
    let inner_pos: Vec<usize> = step.on.iter().map(|(_, i)| i.col as usize).collect();
    let mut out = Vec::new();
    match &step.method {
        JoinMethod::IndexJoin { index, key, .. } => {
            let filter = step.inner.filter.as_ref();
            let sender_value = sender.map(Value::U256);
            let key_pos = key.iter().map(|(o, _)| layout.pos(o)).collect::<Result<Vec<_>, _>>()?;
            for o in &outer {
                let (Some(k), Some(ok)) = (key_of(o, &key_pos), key_of(o, &outer_pos)) else { continue };
                for rid in view.index_seek(*index, &k)? {
                    let Some(i) = view.get(rid) else { continue };
                    if filter.is_none_or(|f| eval_row(f, &i, sender_value.as_ref()))
                        && key_of(&i, &inner_pos).as_ref() == Some(&ok)
                    {
                        out.push(concat(o, &i));
                    }
                }
            }
        }
        JoinMethod::HashJoin => {
            let inner: Vec<Row> = fetch(view, &step.inner, sender)?.collect();
            if inner.len() <= outer.len() {
                let mut table: HashMap<Vec<Value>, Vec<usize>> = HashMap::new();
                for (n, i) in inner.iter().enumerate() {
                    if let Some(k) = key_of(i, &inner_pos) {
                        table.entry(k).or_default().push(n);
                    }
                }
                for o in &outer {
                    for &n in key_of(o, &outer_pos).and_then(|k| table.get(&k)).into_iter().flatten() {
                        out.push(concat(o, &inner[n]));
                    }
                }
            } else {
                let mut table: HashMap<Vec<Value>, Vec<usize>> = HashMap::new();
                for (n, o) in outer.iter().enumerate() {
                    if let Some(k) = key_of(o, &outer_pos) {
                        table.entry(k).or_default().push(n);
                    }
                }
                for i in &inner {
                    for &n in key_of(i, &inner_pos).and_then(|k| table.get(&k)).into_iter().flatten() {
                        out.push(concat(&outer[n], i));
                    }
                }
            }
        }
    }
    Ok(out)
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
    let mut layout = Layout(Vec::new());
    let mut width = 0;
    for t in plan.tables() {
        layout.0.push((t.alias.clone(), width));
        width += tx.table(t.table)?.schema().def.columns.len();
    }
    if let (AccessPath::RowCount, Output::Count(name), true, None) =
        (&plan.first.access, &plan.output, plan.joins.is_empty(), &plan.filter)
    {
        if plan.first.filter.is_none() {
            let n = tx.table(plan.first.table)?.row_count();
            let rows = if plan.limit == Some(0) { vec![] } else { vec![vec![Value::U64(n)]] };
            return Ok(QueryResult { columns: vec![(name.clone(), ColumnType::U64)], rows });
        }
    }
    let first = fetch(tx.table(plan.first.table)?, &plan.first, sender)?;
    let mut rows: Box<dyn Iterator<Item = Row> + '_> = if plan.joins.is_empty() {
        first
    } else {
        let mut joined: Vec<Row> = first.collect();
        for step in &plan.joins {
            joined = join_step(tx, joined, step, &layout, sender)?;
        }
        Box::new(joined.into_iter())
    };
    if let Some(f) = &plan.filter {
        let f = layout.remap(f)?;
        let sender_value = sender.map(Value::U256);
        rows = Box::new(rows.filter(move |r| eval_row(&f, r, sender_value.as_ref())));
    }
    if !plan.order_by.is_empty() {
        let keys = plan
            .order_by
            .iter()
            .map(|k| Ok((layout.pos(&k.col)?, k.desc)))
            .collect::<Result<Vec<_>, PlanError>>()?;
        let mut sorted: Vec<Row> = rows.collect();
        sorted.sort_by(|a, b| {
            keys.iter()
                .map(|&(p, desc)| {
                    let ord = a.get(p).cmp(&b.get(p));
                    if desc {
                        ord.reverse()
                    } else {
                        ord
                    }
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
        rows = Box::new(sorted.into_iter());
    }
    let limit = plan.limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    match &plan.output {
        Output::Columns(cols) => {
            let columns = cols.iter().map(|c| (c.name.clone(), c.ty)).collect();
            let pos = cols.iter().map(|c| layout.pos(c)).collect::<Result<Vec<_>, _>>()?;
            let out = rows
                .take(limit)
                .map(|r| pos.iter().map(|&p| r.get(p).cloned().unwrap_or(Value::Bool(false))).collect())
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
