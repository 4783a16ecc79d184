//! `EXPLAIN` text: one operator per line, in pipeline order (access path first). Join steps
//! follow their outer input; the inner table's access and filter are indented beneath.
//! Columns are qualified by their table instance when the query joins tables.

use std::fmt::Write;
use std::ops::Bound;

use lightcone_mvcc::{ReadTx, Value};

use crate::error::PlanError;
use crate::logical::{bind, ColumnRef, Operand, Predicate};
use crate::physical::{plan_physical, AccessPath, JoinMethod, Output, PhysicalPlan, TableAccess};

/// The plan `sql` (with or without a leading `EXPLAIN`) would run, as text, e.g.
/// `IndexSeek person_id_idx_btree (id = 5)` / `Filter (age > 3)` / `Limit 10` / `Project id, name`,
/// or for a join `FullScan user` / `IndexJoin message_sender_idx_btree (user.identity = message.sender)`.
pub fn explain(tx: &impl ReadTx, sql: &str) -> Result<String, PlanError> {
    let bound = bind(tx, sql)?;
    Ok(render(&plan_physical(&bound.plan, tx)?))
}

struct Names {
    qualified: bool,
}

impl Names {
    fn col(&self, c: &ColumnRef) -> String {
        if self.qualified {
            format!("{}.{}", c.alias, c.name)
        } else {
            c.name.clone()
        }
    }

    fn operand(&self, o: &Operand) -> String {
        match o {
            Operand::Sender => ":sender".into(),
            Operand::Literal(Value::String(v)) => format!("'{}'", v.replace('\'', "''")),
            Operand::Literal(v) => v.to_string(),
            Operand::Column(c) => self.col(c),
        }
    }

    fn pairs(&self, on: &[(ColumnRef, ColumnRef)]) -> String {
        let parts: Vec<String> =
            on.iter().map(|(o, i)| format!("{} = {}", self.col(o), self.col(i))).collect();
        parts.join(" AND ")
    }

    fn predicate(&self, p: &Predicate) -> String {
        match p {
            Predicate::Cmp { col, op, rhs } => {
                format!("{} {} {}", self.col(col), op.symbol(), self.operand(rhs))
            }
            Predicate::And(l, r) => format!("{} AND {}", self.paren(l), self.paren(r)),
            Predicate::Or(l, r) => format!("{} OR {}", self.paren(l), self.paren(r)),
            Predicate::Not(x) => format!("NOT {}", self.paren(x)),
        }
    }

    fn paren(&self, p: &Predicate) -> String {
        match p {
            Predicate::Cmp { .. } => self.predicate(p),
            _ => format!("({})", self.predicate(p)),
        }
    }

    fn access(&self, s: &mut String, t: &TableAccess, indent: &str) {
        match &t.access {
            AccessPath::FullScan => {
                let _ = writeln!(s, "{indent}FullScan {}", self.table(t));
            }
            AccessPath::IndexSeek { index_name, columns, key, .. } => {
                let parts: Vec<String> = columns
                    .iter()
                    .zip(key)
                    .map(|(c, k)| format!("{} = {}", self.col(c), self.operand(k)))
                    .collect();
                let _ = writeln!(s, "{indent}IndexSeek {index_name} ({})", parts.join(" AND "));
            }
            AccessPath::RowCount => {
                let _ = writeln!(s, "{indent}RowCount {}", self.table(t));
            }
            AccessPath::IndexRange { index_name, prefix, column, lo, hi, .. } => {
                let c = self.col(column);
                let mut parts: Vec<String> =
                    prefix.iter().map(|(p, k)| format!("{} = {}", self.col(p), self.operand(k))).collect();
                match lo {
                    Bound::Included(o) => parts.push(format!("{c} >= {}", self.operand(o))),
                    Bound::Excluded(o) => parts.push(format!("{c} > {}", self.operand(o))),
                    Bound::Unbounded => {}
                }
                match hi {
                    Bound::Included(o) => parts.push(format!("{c} <= {}", self.operand(o))),
                    Bound::Excluded(o) => parts.push(format!("{c} < {}", self.operand(o))),
                    Bound::Unbounded => {}
                }
                let _ = writeln!(s, "{indent}IndexRange {index_name} ({})", parts.join(" AND "));
            }
        }
        self.filter(s, t.filter.as_ref(), indent);
    }

    fn table(&self, t: &TableAccess) -> String {
        if self.qualified && t.alias != t.table_name {
            format!("{} AS {}", t.table_name, t.alias)
        } else {
            t.table_name.clone()
        }
    }

    fn filter(&self, s: &mut String, f: Option<&Predicate>, indent: &str) {
        if let Some(f) = f {
            let _ = writeln!(s, "{indent}Filter ({})", self.predicate(f));
        }
    }
}

pub(crate) fn render(plan: &PhysicalPlan) -> String {
    let names = Names { qualified: !plan.joins.is_empty() };
    let mut s = String::new();
    names.access(&mut s, &plan.first, "");
    for step in &plan.joins {
        match &step.method {
            JoinMethod::IndexJoin { index_name, .. } => {
                let _ = writeln!(s, "IndexJoin {index_name} ({})", names.pairs(&step.on));
                names.filter(&mut s, step.inner.filter.as_ref(), "  ");
            }
            JoinMethod::HashJoin => {
                let _ = writeln!(s, "HashJoin ({})", names.pairs(&step.on));
                names.access(&mut s, &step.inner, "  ");
            }
        }
    }
    names.filter(&mut s, plan.filter.as_ref(), "");
    if !plan.order_by.is_empty() {
        let keys: Vec<String> = plan
            .order_by
            .iter()
            .map(|k| format!("{} {}", names.col(&k.col), if k.desc { "DESC" } else { "ASC" }))
            .collect();
        let _ = writeln!(s, "Sort {}", keys.join(", "));
    }
    match &plan.output {
        Output::Columns(cols) => {
            if let Some(n) = plan.limit {
                let _ = writeln!(s, "Limit {n}");
            }
            let cols: Vec<String> = cols.iter().map(|c| names.col(c)).collect();
            let _ = writeln!(s, "Project {}", cols.join(", "));
        }
        Output::Count(name) => {
            let _ = writeln!(s, "Count AS {name}");
            if let Some(n) = plan.limit {
                let _ = writeln!(s, "Limit {n}");
            }
        }
    }
    s.pop();
    s
}
