//! Physical planning: access-path choice per table (full scan, index seek or index range),
//! `WHERE` pushdown to single tables, and a join method per join step (index nested-loop join
//! when the inner table has an index led by the join columns, else a hash join).

use std::ops::Bound;

use lightcone_mvcc::{IndexId, ReadTx, TableId, TableSchema};

use crate::error::PlanError;
use crate::logical::{CmpOp, ColumnRef, LogicalPlan, Operand, Predicate, SortKey};

/// How rows are fetched from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessPath {
    FullScan,
    /// Rows whose key (or, for B+tree indexes, key prefix) equals `key`.
    IndexSeek {
        index: IndexId,
        index_name: String,
        columns: Vec<ColumnRef>,
        key: Vec<Operand>,
    },
    /// Rows whose leading index columns equal `prefix` (pairs of column and value, in index
    /// order; possibly empty) and whose next index column, `column`, lies within the bounds
    /// (B+tree indexes only). E.g. `a = 1 AND b > 5` on an index over `(a, b)`.
    IndexRange {
        index: IndexId,
        index_name: String,
        prefix: Vec<(ColumnRef, Operand)>,
        column: ColumnRef,
        lo: Bound<Operand>,
        hi: Bound<Operand>,
    },
    /// No rows are read: the count of the whole table is its row count (`COUNT(*)` with no
    /// `WHERE` and no join), an O(1) lookup.
    RowCount,
}

impl AccessPath {
    fn uses_sender(&self) -> bool {
        match self {
            AccessPath::FullScan | AccessPath::RowCount => false,
            AccessPath::IndexSeek { key, .. } => key.contains(&Operand::Sender),
            AccessPath::IndexRange { prefix, lo, hi, .. } => {
                let b = |b: &Bound<Operand>| {
                    matches!(b, Bound::Included(Operand::Sender) | Bound::Excluded(Operand::Sender))
                };
                b(lo) || b(hi) || prefix.iter().any(|(_, o)| *o == Operand::Sender)
            }
        }
    }
}

/// What the query returns per result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Columns(Vec<ColumnRef>),
    /// A single `u64` column with this name counting the rows.
    Count(String),
}

/// Reading one table instance: fetch via `access`, keep rows passing `filter` (which only
/// references this table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableAccess {
    pub table: TableId,
    pub table_name: String,
    pub alias: String,
    pub access: AccessPath,
    pub filter: Option<Predicate>,
}

/// How a join step finds the inner rows matching an outer row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinMethod {
    /// Index nested-loop join: per outer row, seek `index` on the inner table with the outer
    /// values of `key` (pairs of outer column, inner index column, in index-column order). The
    /// inner table's `access` is unused; its `filter` holds all its pushed-down predicates.
    IndexJoin { index: IndexId, index_name: String, key: Vec<(ColumnRef, ColumnRef)> },
    /// Fetch the inner table via its access path, then hash the smaller side on the join key.
    HashJoin,
}

/// Joining one more table to the rows produced so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinStep {
    pub inner: TableAccess,
    /// Equalities (outer column, inner column) every joined pair satisfies.
    pub on: Vec<(ColumnRef, ColumnRef)>,
    pub method: JoinMethod,
}

/// An executable plan: read `first`, join each of `joins` in order (left-deep, `FROM` order;
/// a joined row is the concatenation of the tables' rows), keep rows passing `filter` (the
/// predicates spanning tables), sort by `order_by`, produce `output`, keep at most `limit`
/// result rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalPlan {
    pub first: TableAccess,
    pub joins: Vec<JoinStep>,
    pub filter: Option<Predicate>,
    pub order_by: Vec<SortKey>,
    pub output: Output,
    pub limit: Option<u64>,
}

impl PhysicalPlan {
    pub fn uses_sender(&self) -> bool {
        let table =
            |t: &TableAccess| t.access.uses_sender() || t.filter.as_ref().is_some_and(Predicate::uses_sender);
        table(&self.first)
            || self.joins.iter().any(|j| table(&j.inner))
            || self.filter.as_ref().is_some_and(Predicate::uses_sender)
    }

    /// The table instances read, in `FROM` order.
    pub fn tables(&self) -> impl Iterator<Item = &TableAccess> {
        std::iter::once(&self.first).chain(self.joins.iter().map(|j| &j.inner))
    }
}

fn shape(p: &LogicalPlan) -> PlanError {
    PlanError::Unsupported(format!("plan shape {p:?}"))
}

/// Flattens a left-deep join tree into (table, name, alias) in order plus each step's `on`.
#[allow(clippy::type_complexity)]
fn flatten(
    p: &LogicalPlan,
    scans: &mut Vec<(TableId, String, String)>,
    ons: &mut Vec<Vec<(ColumnRef, ColumnRef)>>,
) -> Result<(), PlanError> {
    match p {
        LogicalPlan::Scan { table, name, alias } => {
            scans.push((*table, name.clone(), alias.clone()));
            Ok(())
        }
        LogicalPlan::Join { left, right, on } => {
            flatten(left, scans, ons)?;
            match right.as_ref() {
                LogicalPlan::Scan { table, name, alias } => scans.push((*table, name.clone(), alias.clone())),
                other => return Err(shape(other)),
            }
            ons.push(on.clone());
            Ok(())
        }
        other => Err(shape(other)),
    }
}

fn and_all(preds: Vec<Predicate>) -> Option<Predicate> {
    preds.into_iter().reduce(|a, b| Predicate::And(Box::new(a), Box::new(b)))
}

/// Chooses access paths and join methods for `plan`, reading schemas from `tx`.
pub fn plan_physical(plan: &LogicalPlan, tx: &impl ReadTx) -> Result<PhysicalPlan, PlanError> {
    let (limit, rest) = match plan {
        LogicalPlan::Limit { input, n } => (Some(*n), input.as_ref()),
        p => (None, p),
    };
    let (output, rest) = match rest {
        LogicalPlan::Project { input, columns } => (Output::Columns(columns.clone()), input.as_ref()),
        LogicalPlan::Count { input, name } => (Output::Count(name.clone()), input.as_ref()),
        other => return Err(shape(other)),
    };
    let (order_by, rest) = match rest {
        LogicalPlan::Sort { input, keys } => (keys.clone(), input.as_ref()),
        p => (Vec::new(), p),
    };
    let (pred, rest) = match rest {
        LogicalPlan::Select { input, pred } => (Some(pred), input.as_ref()),
        p => (None, p),
    };
    let mut scans = Vec::new();
    let mut ons = Vec::new();
    flatten(rest, &mut scans, &mut ons)?;

    // Pushdown: conjuncts over one table go to that table (a column-to-column comparison
    // within one instance included); an equality between columns of two instances becomes a
    // condition of the join step that brings in the later one (so `FROM a JOIN b ON … WHERE
    // a.x = b.y` and a would-be cross product both use it as a join key); the rest run after
    // the joins.
    let mut pushed: Vec<Vec<Predicate>> = vec![Vec::new(); scans.len()];
    let mut post = Vec::new();
    let position = |alias: &str| scans.iter().position(|s| s.2 == alias);
    for c in pred.map(Predicate::conjuncts).unwrap_or_default() {
        if let Predicate::Cmp { col, op: CmpOp::Eq, rhs: Operand::Column(other) } = c {
            if let (Some(a), Some(b)) = (position(&col.alias), position(&other.alias)) {
                if a != b && col.ty == other.ty {
                    let (outer, inner, step) = if a < b { (col, other, b) } else { (other, col, a) };
                    // `step >= 1` because it is the larger of two distinct positions.
                    let on = &mut ons[step - 1];
                    if !on.iter().any(|(o, i)| o == outer && i == inner) {
                        on.push((outer.clone(), inner.clone()));
                    }
                    continue;
                }
            }
        }
        match c.aliases().as_slice() {
            [a] => match scans.iter().position(|s| s.2 == *a) {
                Some(i) => pushed[i].push(c.clone()),
                None => post.push(c.clone()),
            },
            _ => post.push(c.clone()),
        }
    }
    let mut accesses = Vec::new();
    for ((table, table_name, alias), preds) in scans.into_iter().zip(pushed) {
        let view = tx.table(table)?;
        let (access, filter) = match and_all(preds) {
            None => (AccessPath::FullScan, None),
            Some(p) => choose_access(&p, view.schema()),
        };
        accesses.push((TableAccess { table, table_name, alias, access, filter }, view.schema()));
    }
    let mut it = accesses.into_iter();
    let Some((first, _)) = it.next() else { return Err(shape(rest)) };
    let mut joins = Vec::new();
    for ((mut inner, schema), on) in it.zip(ons) {
        let method = match choose_join_index(&on, schema) {
            Some(method) => {
                // The seek replaces the inner access path: all pushed predicates become the filter.
                let mut preds: Vec<Predicate> = Vec::new();
                if let AccessPath::IndexSeek { columns, key, .. } = &inner.access {
                    for (c, k) in columns.iter().zip(key) {
                        preds.push(Predicate::Cmp { col: c.clone(), op: CmpOp::Eq, rhs: k.clone() });
                    }
                }
                if let AccessPath::IndexRange { prefix, column, lo, hi, .. } = &inner.access {
                    for (c, k) in prefix {
                        preds.push(Predicate::Cmp { col: c.clone(), op: CmpOp::Eq, rhs: k.clone() });
                    }
                    for (b, incl, excl) in [(lo, CmpOp::Ge, CmpOp::Gt), (hi, CmpOp::Le, CmpOp::Lt)] {
                        match b {
                            Bound::Included(o) => {
                                preds.push(Predicate::Cmp { col: column.clone(), op: incl, rhs: o.clone() })
                            }
                            Bound::Excluded(o) => {
                                preds.push(Predicate::Cmp { col: column.clone(), op: excl, rhs: o.clone() })
                            }
                            Bound::Unbounded => {}
                        }
                    }
                }
                preds.extend(inner.filter.take());
                inner.access = AccessPath::FullScan;
                inner.filter = and_all(preds);
                method
            }
            None => JoinMethod::HashJoin,
        };
        joins.push(JoinStep { inner, on, method });
    }
    let mut first = first;
    if joins.is_empty() && post.is_empty() && first.filter.is_none() && first.access == AccessPath::FullScan {
        if let Output::Count(_) = output {
            first.access = AccessPath::RowCount;
        }
    }
    Ok(PhysicalPlan { first, joins, filter: and_all(post), order_by, output, limit })
}

/// The best index on the inner table whose leading columns are all join columns: the most
/// key columns covered, then unique. Hash indexes must be covered entirely.
fn choose_join_index(on: &[(ColumnRef, ColumnRef)], schema: &TableSchema) -> Option<JoinMethod> {
    let mut best: Option<((usize, bool), JoinMethod)> = None;
    for (pos, idx) in schema.def.indexes.iter().enumerate() {
        let Some(&index) = schema.index_ids.get(pos) else { continue };
        let mut key = Vec::new();
        for &c in &idx.columns {
            match on.iter().find(|(_, inner)| inner.col == c) {
                Some(pair) => key.push(pair.clone()),
                None => break,
            }
        }
        let full = key.len() == idx.columns.len();
        if key.is_empty() || !(full || idx.algorithm.supports_range()) {
            continue;
        }
        let rank = (key.len(), idx.unique && full);
        if best.as_ref().is_none_or(|b| rank > b.0) {
            best = Some((rank, JoinMethod::IndexJoin { index, index_name: idx.name.clone(), key }));
        }
    }
    best.map(|b| b.1)
}

/// Ranking of a candidate index: higher is better.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// 2 = full-key equality, 1 = key-prefix equality (maybe followed by a range on the next
    /// column), 0 = range on the first column.
    class: u8,
    unique: bool,
    eq_len: usize,
    /// Whether a range on the column after the equality prefix narrows the scan too.
    range: bool,
    primary: bool,
}

fn choose_access(pred: &Predicate, schema: &TableSchema) -> (AccessPath, Option<Predicate>) {
    let conj = pred.conjuncts();
    // Conjuncts usable as index bounds compare a column with a literal or `:sender`.
    let cmp_on = |col: u16, want: &dyn Fn(CmpOp) -> bool| -> Option<usize> {
        conj.iter().position(|p| {
            matches!(p, Predicate::Cmp { col: c, op, rhs }
                if c.col == col && want(*op) && !matches!(rhs, Operand::Column(_)))
        })
    };
    let mut best: Option<(Rank, AccessPath, Vec<usize>)> = None;
    for (pos, idx) in schema.def.indexes.iter().enumerate() {
        let Some(&index) = schema.index_ids.get(pos) else { continue };
        let primary = schema.def.primary_key.is_some_and(|pk| idx.columns == [pk]);
        let mut used = Vec::new();
        for &c in &idx.columns {
            match cmp_on(c, &|op| op == CmpOp::Eq) {
                Some(i) => used.push(i),
                None => break,
            }
        }
        let eq_len = used.len();
        let full = eq_len == idx.columns.len();
        let mut prefix = Vec::new();
        for &i in &used {
            if let Predicate::Cmp { col, rhs, .. } = conj[i] {
                prefix.push((col.clone(), rhs.clone()));
            }
        }
        // A range on the column after the equality prefix (B+tree indexes only).
        let range = match idx.columns.get(eq_len) {
            Some(&next) if idx.algorithm.supports_range() => {
                let lo_i = cmp_on(next, &|op| matches!(op, CmpOp::Gt | CmpOp::Ge));
                let hi_i = cmp_on(next, &|op| matches!(op, CmpOp::Lt | CmpOp::Le));
                let bound = |i: Option<usize>| -> (Bound<Operand>, Option<ColumnRef>) {
                    match i.map(|i| conj[i]) {
                        Some(Predicate::Cmp { col, op, rhs }) => {
                            let b = match op {
                                CmpOp::Ge | CmpOp::Le => Bound::Included(rhs.clone()),
                                _ => Bound::Excluded(rhs.clone()),
                            };
                            (b, Some(col.clone()))
                        }
                        _ => (Bound::Unbounded, None),
                    }
                };
                let (lo, lc) = bound(lo_i);
                let (hi, hc) = bound(hi_i);
                lc.or(hc).map(|column| (column, lo, hi, lo_i.into_iter().chain(hi_i)))
            }
            _ => None,
        };
        let candidate = if full {
            let rank = Rank { class: 2, unique: idx.unique, eq_len, range: false, primary };
            let (columns, key) = prefix.into_iter().unzip();
            Some((rank, AccessPath::IndexSeek { index, index_name: idx.name.clone(), columns, key }, used))
        } else if let Some((column, lo, hi, range_used)) = range {
            let class = if eq_len > 0 { 1 } else { 0 };
            let rank = Rank { class, unique: false, eq_len, range: true, primary };
            used.extend(range_used);
            let path = AccessPath::IndexRange { index, index_name: idx.name.clone(), prefix, column, lo, hi };
            Some((rank, path, used))
        } else if eq_len > 0 && idx.algorithm.supports_range() {
            let rank = Rank { class: 1, unique: false, eq_len, range: false, primary };
            let (columns, key) = prefix.into_iter().unzip();
            Some((rank, AccessPath::IndexSeek { index, index_name: idx.name.clone(), columns, key }, used))
        } else {
            None
        };
        if let Some(c) = candidate {
            if best.as_ref().is_none_or(|b| c.0 > b.0) {
                best = Some(c);
            }
        }
    }
    match best {
        None => (AccessPath::FullScan, Some(pred.clone())),
        Some((_, path, used)) => {
            let rest: Vec<Predicate> = conj
                .iter()
                .enumerate()
                .filter(|(i, _)| !used.contains(i))
                .map(|(_, p)| (*p).clone())
                .collect();
            (path, and_all(rest))
        }
    }
}
