//! Access-path choice: turns a [`LogicalPlan`] into a [`PhysicalPlan`] that reads a table via
//! a full scan, an index seek or an index range.

use std::ops::Bound;

use lightcone_mvcc::{IndexId, TableId, TableSchema};

use crate::error::PlanError;
use crate::logical::{CmpOp, ColumnRef, LogicalPlan, Operand, Predicate};

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
    /// Rows whose first index column lies within the bounds (B+tree indexes only).
    IndexRange {
        index: IndexId,
        index_name: String,
        column: ColumnRef,
        lo: Bound<Operand>,
        hi: Bound<Operand>,
    },
}

/// What the query returns per fetched row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Columns(Vec<ColumnRef>),
    /// A single `u64` column with this name counting the rows.
    Count(String),
}

/// An executable single-table plan: fetch via `access`, keep rows passing `filter`,
/// produce `output`, keep at most `limit` result rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalPlan {
    pub table: TableId,
    pub table_name: String,
    pub access: AccessPath,
    pub filter: Option<Predicate>,
    pub output: Output,
    pub limit: Option<u64>,
}

impl PhysicalPlan {
    pub fn uses_sender(&self) -> bool {
        let in_access = match &self.access {
            AccessPath::FullScan => false,
            AccessPath::IndexSeek { key, .. } => key.contains(&Operand::Sender),
            AccessPath::IndexRange { lo, hi, .. } => {
                let b = |b: &Bound<Operand>| {
                    matches!(b, Bound::Included(Operand::Sender) | Bound::Excluded(Operand::Sender))
                };
                b(lo) || b(hi)
            }
        };
        in_access || self.filter.as_ref().is_some_and(Predicate::uses_sender)
    }
}

/// Chooses an access path for `plan` on the table described by `schema`.
pub fn plan_physical(plan: &LogicalPlan, schema: &TableSchema) -> Result<PhysicalPlan, PlanError> {
    let (limit, rest) = match plan {
        LogicalPlan::Limit { input, n } => (Some(*n), input.as_ref()),
        p => (None, p),
    };
    let (output, rest) = match rest {
        LogicalPlan::Project { input, columns } => (Output::Columns(columns.clone()), input.as_ref()),
        LogicalPlan::Count { input, name } => (Output::Count(name.clone()), input.as_ref()),
        other => return Err(PlanError::Unsupported(format!("plan shape {other:?}"))),
    };
    let (pred, rest) = match rest {
        LogicalPlan::Select { input, pred } => (Some(pred), input.as_ref()),
        p => (None, p),
    };
    let (table, table_name) = match rest {
        LogicalPlan::Scan { table, name } => (*table, name.clone()),
        other => return Err(PlanError::Unsupported(format!("plan shape {other:?}"))),
    };
    let (access, filter) = match pred {
        None => (AccessPath::FullScan, None),
        Some(p) => choose_access(p, schema),
    };
    Ok(PhysicalPlan { table, table_name, access, filter, output, limit })
}

/// Ranking of a candidate index: higher is better.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// 2 = full-key equality, 1 = key-prefix equality, 0 = range on the first column.
    class: u8,
    unique: bool,
    eq_len: usize,
    primary: bool,
}

fn choose_access(pred: &Predicate, schema: &TableSchema) -> (AccessPath, Option<Predicate>) {
    let conj = pred.conjuncts();
    let cmp_on = |col: u16, want: &dyn Fn(CmpOp) -> bool| -> Option<usize> {
        conj.iter().position(|p| matches!(p, Predicate::Cmp { col: c, op, .. } if c.col == col && want(*op)))
    };
    let mut best: Option<(Rank, AccessPath, Vec<usize>)> = None;
    for (pos, idx) in schema.def.indexes.iter().enumerate() {
        let (Some(&index), Some(&first)) = (schema.index_ids.get(pos), idx.columns.first()) else { continue };
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
        let candidate = if eq_len > 0 && (full || idx.algorithm.supports_range()) {
            let mut columns = Vec::new();
            let mut key = Vec::new();
            for &i in &used {
                if let Predicate::Cmp { col, rhs, .. } = conj[i] {
                    columns.push(col.clone());
                    key.push(rhs.clone());
                }
            }
            let rank = Rank { class: if full { 2 } else { 1 }, unique: idx.unique && full, eq_len, primary };
            Some((rank, AccessPath::IndexSeek { index, index_name: idx.name.clone(), columns, key }, used))
        } else if idx.algorithm.supports_range() {
            let lo_i = cmp_on(first, &|op| matches!(op, CmpOp::Gt | CmpOp::Ge));
            let hi_i = cmp_on(first, &|op| matches!(op, CmpOp::Lt | CmpOp::Le));
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
            match lc.or(hc) {
                Some(column) => {
                    let used: Vec<usize> = lo_i.into_iter().chain(hi_i).collect();
                    let rank = Rank { class: 0, unique: idx.unique, eq_len: 0, primary };
                    let path = AccessPath::IndexRange { index, index_name: idx.name.clone(), column, lo, hi };
                    Some((rank, path, used))
                }
                None => None,
            }
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
            let filter = rest.into_iter().reduce(|a, b| Predicate::And(Box::new(a), Box::new(b)));
            (path, filter)
        }
    }
}
