//! `EXPLAIN` text: one operator per line, in pipeline order (access path first).

use std::fmt::Write;
use std::ops::Bound;

use lightcone_mvcc::{ReadTx, Value};

use crate::error::PlanError;
use crate::logical::{bind, Operand, Predicate};
use crate::physical::{plan_physical, AccessPath, Output, PhysicalPlan};

/// The plan `sql` (with or without a leading `EXPLAIN`) would run, as text, e.g.
/// `IndexSeek person_id_idx_btree (id = 5)` / `Filter (age > 3)` / `Limit 10` / `Project id, name`.
pub fn explain(tx: &impl ReadTx, sql: &str) -> Result<String, PlanError> {
    let bound = bind(tx, sql)?;
    let view = tx.table(bound.plan.table())?;
    Ok(render(&plan_physical(&bound.plan, view.schema())?))
}

pub(crate) fn render(plan: &PhysicalPlan) -> String {
    let mut s = String::new();
    match &plan.access {
        AccessPath::FullScan => {
            let _ = writeln!(s, "FullScan {}", plan.table_name);
        }
        AccessPath::IndexSeek { index_name, columns, key, .. } => {
            let parts: Vec<String> =
                columns.iter().zip(key).map(|(c, k)| format!("{} = {}", c.name, operand(k))).collect();
            let _ = writeln!(s, "IndexSeek {index_name} ({})", parts.join(" AND "));
        }
        AccessPath::IndexRange { index_name, column, lo, hi, .. } => {
            let mut parts = Vec::new();
            match lo {
                Bound::Included(o) => parts.push(format!("{} >= {}", column.name, operand(o))),
                Bound::Excluded(o) => parts.push(format!("{} > {}", column.name, operand(o))),
                Bound::Unbounded => {}
            }
            match hi {
                Bound::Included(o) => parts.push(format!("{} <= {}", column.name, operand(o))),
                Bound::Excluded(o) => parts.push(format!("{} < {}", column.name, operand(o))),
                Bound::Unbounded => {}
            }
            let _ = writeln!(s, "IndexRange {index_name} ({})", parts.join(" AND "));
        }
    }
    if let Some(f) = &plan.filter {
        let _ = writeln!(s, "Filter ({})", predicate(f));
    }
    match &plan.output {
        Output::Columns(cols) => {
            if let Some(n) = plan.limit {
                let _ = writeln!(s, "Limit {n}");
            }
            let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
            let _ = writeln!(s, "Project {}", names.join(", "));
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

fn operand(o: &Operand) -> String {
    match o {
        Operand::Sender => ":sender".into(),
        Operand::Literal(Value::String(v)) => format!("'{}'", v.replace('\'', "''")),
        Operand::Literal(v) => v.to_string(),
    }
}

fn predicate(p: &Predicate) -> String {
    match p {
        Predicate::Cmp { col, op, rhs } => format!("{} {} {}", col.name, op.symbol(), operand(rhs)),
        Predicate::And(l, r) => format!("{} AND {}", paren(l), paren(r)),
        Predicate::Or(l, r) => format!("{} OR {}", paren(l), paren(r)),
        Predicate::Not(x) => format!("NOT {}", paren(x)),
    }
}

fn paren(p: &Predicate) -> String {
    match p {
        Predicate::Cmp { .. } => predicate(p),
        _ => format!("({})", predicate(p)),
    }
}
