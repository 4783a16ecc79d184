//! From SQL to evaluable subscription queries.
//!
//! A [`Template`] is a bound subscription query in our own compact form (relations, join
//! edges, per-relation filters, a residual filter, the projected relation), compiled once per
//! normalized SQL text. A [`Query`] is a template with its parameters fixed — `:sender`
//! substituted and, for non-owners, each relation's row-level-security filter folded into its
//! filter — plus the access paths (index probes) chosen against the catalog. Queries are what
//! clients share.

use lightcone_mvcc::{IndexAlgorithm, IndexId, ReadTx, TableId, TableSchema, Value, U256};
use lightcone_query_planner::{bind, CmpOp, LogicalPlan, Operand, Predicate};

use crate::error::EvalError;

/// Most tables one subscription may join (join tuples are stored inline).
pub(crate) const MAX_RELATIONS: usize = 8;

/// Right-hand side of a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rhs {
    Lit(Value),
    /// Resolved to a literal when a [`Query`] is built; unresolved it compares false.
    Sender,
    /// Another column (of the same relation or another one).
    Col {
        rel: usize,
        col: usize,
    },
}

/// A boolean condition over a tuple of rows (one per relation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    Cmp { rel: usize, col: usize, op: CmpOp, rhs: Rhs },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Const(bool),
}

impl Expr {
    /// Evaluates with `get(rel, col)` giving the column values.
    pub(crate) fn eval<'v, F: Fn(usize, usize) -> Option<&'v Value>>(&self, get: &F) -> bool {
        match self {
            Expr::Cmp { rel, col, op, rhs: Rhs::Lit(v) } => {
                get(*rel, *col).is_some_and(|x| op.holds(x.cmp(v)))
            }
            Expr::Cmp { rel, col, op, rhs: Rhs::Col { rel: r2, col: c2 } } => {
                match (get(*rel, *col), get(*r2, *c2)) {
                    (Some(l), Some(r)) => op.holds(l.cmp(r)),
                    _ => false,
                }
            }
            Expr::Cmp { rhs: Rhs::Sender, .. } => false,
            Expr::And(l, r) => l.eval(get) && r.eval(get),
            Expr::Or(l, r) => l.eval(get) || r.eval(get),
            Expr::Not(x) => !x.eval(get),
            Expr::Const(b) => *b,
        }
    }

    /// Evaluates over one row (every column reference is taken from `row`).
    pub(crate) fn eval_row(&self, row: &[Value]) -> bool {
        self.eval(&|_, col| row.get(col))
    }

    pub(crate) fn uses_sender(&self) -> bool {
        match self {
            Expr::Cmp { rhs, .. } => *rhs == Rhs::Sender,
            Expr::And(l, r) | Expr::Or(l, r) => l.uses_sender() || r.uses_sender(),
            Expr::Not(x) => x.uses_sender(),
            Expr::Const(_) => false,
        }
    }

    /// The relations referenced.
    fn rels(&self, out: &mut Vec<usize>) {
        match self {
            Expr::Cmp { rel, rhs, .. } => {
                let other = match rhs {
                    Rhs::Col { rel, .. } => Some(rel),
                    _ => None,
                };
                for r in std::iter::once(rel).chain(other) {
                    if !out.contains(r) {
                        out.push(*r)
                    }
                }
            }
            Expr::And(l, r) | Expr::Or(l, r) => {
                l.rels(out);
                r.rels(out);
            }
            Expr::Not(x) => x.rels(out),
            Expr::Const(_) => {}
        }
    }

    fn conjuncts(self, out: &mut Vec<Expr>) {
        match self {
            Expr::And(l, r) => {
                l.conjuncts(out);
                r.conjuncts(out);
            }
            e => out.push(e),
        }
    }

    /// `:sender` replaced by `sender`; every reference re-pointed to relation `rel` if given.
    fn resolve(&self, sender: U256, rel: Option<usize>) -> Expr {
        match self {
            Expr::Cmp { rel: r, col, op, rhs } => Expr::Cmp {
                rel: rel.unwrap_or(*r),
                col: *col,
                op: *op,
                rhs: match rhs {
                    Rhs::Sender => Rhs::Lit(Value::U256(sender)),
                    Rhs::Col { rel: r2, col: c2 } => Rhs::Col { rel: rel.unwrap_or(*r2), col: *c2 },
                    lit => lit.clone(),
                },
            },
            Expr::And(l, r) => Expr::And(Box::new(l.resolve(sender, rel)), Box::new(r.resolve(sender, rel))),
            Expr::Or(l, r) => Expr::Or(Box::new(l.resolve(sender, rel)), Box::new(r.resolve(sender, rel))),
            Expr::Not(x) => Expr::Not(Box::new(x.resolve(sender, rel))),
            Expr::Const(b) => Expr::Const(*b),
        }
    }

    /// A top-level conjunct `col = literal`, if any.
    fn eq_conjunct(&self) -> Option<(usize, &Value)> {
        match self {
            Expr::Cmp { col, op: CmpOp::Eq, rhs: Rhs::Lit(v), .. } => Some((*col, v)),
            Expr::And(l, r) => l.eq_conjunct().or_else(|| r.eq_conjunct()),
            _ => None,
        }
    }
}

fn and_all(parts: Vec<Expr>) -> Option<Expr> {
    parts.into_iter().reduce(|a, b| Expr::And(Box::new(a), Box::new(b)))
}

fn or_all(parts: Vec<Expr>) -> Option<Expr> {
    parts.into_iter().reduce(|a, b| Expr::Or(Box::new(a), Box::new(b)))
}

/// One table instance of a query, in `FROM` order.
#[derive(Debug, Clone)]
pub(crate) struct Rel {
    pub(crate) table: TableId,
    pub(crate) name: String,
    pub(crate) public: bool,
}

/// An equi-join condition `rels[a].a_col = rels[b].b_col`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Edge {
    pub(crate) a: usize,
    pub(crate) a_col: usize,
    pub(crate) b: usize,
    pub(crate) b_col: usize,
}

/// A bound subscription query, before parameters.
#[derive(Debug)]
pub(crate) struct Template {
    pub(crate) sql: String,
    pub(crate) rels: Vec<Rel>,
    pub(crate) edges: Vec<Edge>,
    /// Conjuncts of `WHERE` that read one relation only, per relation.
    pub(crate) local: Vec<Option<Expr>>,
    /// The remaining conjuncts (several relations).
    pub(crate) residual: Option<Expr>,
    pub(crate) proj: usize,
    pub(crate) uses_sender: bool,
}

/// Collapses whitespace outside quotes, trims, drops trailing `;`. Identical queries written
/// with different spacing share one compiled plan.
pub(crate) fn normalize(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut pending_space = false;
    for c in sql.chars() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c.is_whitespace() => pending_space = true,
            None => {
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                if c == '\'' || c == '"' || c == '`' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    while quote.is_none() && out.ends_with(';') {
        out.pop();
        while out.ends_with(' ') {
            out.pop();
        }
    }
    out
}

fn shape(query: &str, what: impl Into<String>) -> EvalError {
    EvalError::UnsupportedShape { query: query.to_string(), what: what.into() }
}

fn engine(query: &str) -> impl Fn(lightcone_mvcc::MvccError) -> EvalError + '_ {
    move |source| EvalError::Engine { query: query.to_string(), source }
}

/// Flattens a left-deep join tree into relations (with aliases) and edges.
fn flatten(
    plan: &LogicalPlan,
    rels: &mut Vec<(Rel, String)>,
    on: &mut Vec<(String, usize, String, usize)>,
    tx: &impl ReadTx,
    sql: &str,
) -> Result<(), EvalError> {
    match plan {
        LogicalPlan::Scan { table, name, alias } => {
            let public = tx.table(*table).map_err(engine(sql))?.schema().def.public;
            rels.push((Rel { table: *table, name: name.clone(), public }, alias.clone()));
            Ok(())
        }
        LogicalPlan::Join { left, right, on: pairs } => {
            flatten(left, rels, on, tx, sql)?;
            flatten(right, rels, on, tx, sql)?;
            for (l, r) in pairs {
                on.push((l.alias.clone(), l.col as usize, r.alias.clone(), r.col as usize));
            }
            Ok(())
        }
        _ => Err(shape(sql, "a nested query")),
    }
}

/// Converts a planner predicate, mapping aliases to relation positions.
fn convert(p: &Predicate, aliases: &[String], sql: &str) -> Result<Expr, EvalError> {
    // The planner is being extended (column operands, more predicate forms); anything not
    // listed here is refused as unsupported instead of being misread.
    #[allow(unreachable_patterns)]
    match p {
        Predicate::Cmp { col, op, rhs } => {
            let rel_of = |alias: &str| {
                aliases
                    .iter()
                    .position(|a| a == alias)
                    .ok_or_else(|| shape(sql, format!("a reference to `{alias}` outside the query")))
            };
            let rel = rel_of(&col.alias)?;
            #[allow(unreachable_patterns)]
            let rhs = match rhs {
                Operand::Literal(v) => Rhs::Lit(v.clone()),
                Operand::Sender => Rhs::Sender,
                Operand::Column(c) => Rhs::Col { rel: rel_of(&c.alias)?, col: c.col as usize },
                _ => return Err(shape(sql, "a comparison this evaluator does not support yet")),
            };
            Ok(Expr::Cmp { rel, col: col.col as usize, op: *op, rhs })
        }
        Predicate::And(l, r) => {
            Ok(Expr::And(Box::new(convert(l, aliases, sql)?), Box::new(convert(r, aliases, sql)?)))
        }
        Predicate::Or(l, r) => {
            Ok(Expr::Or(Box::new(convert(l, aliases, sql)?), Box::new(convert(r, aliases, sql)?)))
        }
        Predicate::Not(x) => Ok(Expr::Not(Box::new(convert(x, aliases, sql)?))),
        _ => Err(shape(sql, "a condition this evaluator does not support yet")),
    }
}

/// Binds `sql` (already normalized) and checks it is a subscription query.
pub(crate) fn compile(tx: &impl ReadTx, sql: &str) -> Result<Template, EvalError> {
    let bound = bind(tx, sql).map_err(|source| EvalError::Plan { query: sql.to_string(), source })?;
    if bound.explain {
        return Err(shape(sql, "EXPLAIN"));
    }
    let (input, columns) = match &bound.plan {
        LogicalPlan::Project { input, columns } => (input.as_ref(), columns),
        LogicalPlan::Count { .. } => return Err(shape(sql, "COUNT(*)")),
        LogicalPlan::Limit { .. } => return Err(shape(sql, "LIMIT")),
        _ => return Err(shape(sql, "this query form")),
    };
    let (from, pred) = match input {
        LogicalPlan::Select { input, pred } => (input.as_ref(), Some(pred)),
        LogicalPlan::Sort { .. } => return Err(shape(sql, "ORDER BY")),
        other => (other, None),
    };
    if matches!(from, LogicalPlan::Sort { .. } | LogicalPlan::Select { .. }) {
        return Err(shape(sql, "ORDER BY"));
    }
    let mut named = Vec::new();
    let mut on = Vec::new();
    flatten(from, &mut named, &mut on, tx, sql)?;
    if named.len() > MAX_RELATIONS {
        return Err(shape(sql, format!("a join of more than {MAX_RELATIONS} tables")));
    }
    let aliases: Vec<String> = named.iter().map(|(_, a)| a.clone()).collect();
    let rels: Vec<Rel> = named.into_iter().map(|(r, _)| r).collect();
    let pos = |alias: &str| {
        aliases.iter().position(|a| a == alias).ok_or_else(|| shape(sql, format!("unknown alias `{alias}`")))
    };

    // The projection must be every column of one relation, in order.
    let proj_alias = columns.first().map(|c| c.alias.clone()).unwrap_or_default();
    let proj = pos(&proj_alias)?;
    let width = tx.table(rels[proj].table).map_err(engine(sql))?.schema().def.columns.len();
    let whole = columns.len() == width
        && columns.iter().enumerate().all(|(i, c)| c.alias == proj_alias && c.col as usize == i);
    if !whole {
        let what = if columns.iter().any(|c| c.alias != proj_alias) {
            "columns of several tables (use `SELECT t.* FROM t JOIN …`)"
        } else {
            "a column list"
        };
        return Err(shape(sql, what));
    }

    let mut edges = Vec::new();
    for (la, lc, ra, rc) in on {
        edges.push(Edge { a: pos(&la)?, a_col: lc, b: pos(&ra)?, b_col: rc });
    }
    let mut local: Vec<Vec<Expr>> = vec![Vec::new(); rels.len()];
    let mut residual = Vec::new();
    let mut uses_sender = false;
    if let Some(pred) = pred {
        let expr = convert(pred, &aliases, sql)?;
        uses_sender = expr.uses_sender();
        let mut conjuncts = Vec::new();
        expr.conjuncts(&mut conjuncts);
        for c in conjuncts {
            let mut rs = Vec::new();
            c.rels(&mut rs);
            match rs.as_slice() {
                [r] => local[*r].push(c),
                _ => residual.push(c),
            }
        }
    }
    Ok(Template {
        sql: sql.to_string(),
        rels,
        edges,
        local: local.into_iter().map(and_all).collect(),
        residual: and_all(residual),
        proj,
        uses_sender,
    })
}

/// Compiles a row-level-security filter `SELECT * FROM t [WHERE pred]`: (table, filter over
/// one row).
pub(crate) fn compile_rls(tx: &impl ReadTx, sql: &str) -> Result<(TableId, Expr), EvalError> {
    let t = compile(tx, &normalize(sql))?;
    if t.rels.len() != 1 {
        return Err(EvalError::InvalidRlsFilter { sql: sql.to_string() });
    }
    Ok((t.rels[0].table, t.local.into_iter().next().flatten().unwrap_or(Expr::Const(true))))
}

/// A usable point-lookup index per column: an index whose first column it is (B+tree indexes
/// take a one-column prefix; hash/direct ones must be single-column).
fn probe_indexes(schema: &TableSchema) -> Vec<Option<(IndexId, bool)>> {
    let mut out: Vec<Option<(IndexId, bool)>> = vec![None; schema.def.columns.len()];
    for (def, &id) in schema.def.indexes.iter().zip(&schema.index_ids) {
        let single = def.columns.len() == 1;
        let usable = single || def.algorithm == IndexAlgorithm::BTree;
        if let Some(slot) = def.columns.first().and_then(|&c| out.get_mut(c as usize)) {
            // Prefer a unique single-column index, then any single-column one.
            let better = match slot {
                None => true,
                Some((_, unique)) => !*unique && single,
            };
            if usable && better {
                *slot = Some((id, single && def.unique));
            }
        }
    }
    out
}

/// One step of extending partial join tuples by relation `rel`.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub(crate) rel: usize,
    /// Equalities with already-bound relations: (column of `rel`, bound relation, its column).
    pub(crate) keys: Vec<(usize, usize, usize)>,
    /// An index on `keys[0].0`, if there is one, and whether it is unique on that column
    /// alone (a point lookup then needs one descent).
    pub(crate) index: Option<(IndexId, bool)>,
}

/// A query with its parameters fixed: what clients share and what `eval` runs.
#[derive(Debug)]
pub(crate) struct Query {
    pub(crate) sql: String,
    pub(crate) rels: Vec<Rel>,
    /// Filter per relation (its `WHERE` conjuncts and its RLS view); references point at
    /// the relation itself and are evaluated on its row.
    pub(crate) local: Vec<Option<Expr>>,
    pub(crate) residual: Option<Expr>,
    pub(crate) proj: usize,
    /// For each starting relation, the order in which the others are joined in.
    pub(crate) plans: Vec<Vec<Step>>,
    /// A top-level `col = literal` conjunct of each relation's filter, with an index on that
    /// column if there is one.
    pub(crate) eq: Vec<Option<(usize, Value, Option<IndexId>)>>,
}

impl Query {
    pub(crate) fn is_single(&self) -> bool {
        self.rels.len() == 1
    }

    pub(crate) fn passes(&self, rel: usize, row: &[Value]) -> bool {
        self.local[rel].as_ref().is_none_or(|f| f.eval_row(row))
    }
}

/// Fixes a template's parameters. `rls`: per relation, the OR of its table's row-level
/// filters (`None` = unrestricted).
pub(crate) fn instantiate(
    t: &Template,
    tx: &impl ReadTx,
    sender: U256,
    rls: &[Option<Vec<Expr>>],
    mandatory: &[Option<Vec<Expr>>],
) -> Result<Query, EvalError> {
    let mut local = Vec::with_capacity(t.rels.len());
    for (i, f) in t.local.iter().enumerate() {
        let mut parts: Vec<Expr> = f.iter().map(|e| e.resolve(sender, Some(i))).collect();
        if let Some(Some(filters)) = mandatory.get(i) {
            // Mandatory filters come first: `sender = :sender` then lands in the subscription index.
            let all: Vec<Expr> = filters.iter().map(|e| e.resolve(sender, Some(i))).collect();
            parts.splice(0..0, all);
        }
        if let Some(Some(filters)) = rls.get(i) {
            let any = or_all(filters.iter().map(|e| e.resolve(sender, Some(i))).collect());
            // An empty filter list never happens (tables without filters are unrestricted);
            // treat it as unrestricted too.
            parts.extend(any);
        }
        local.push(and_all(parts));
    }
    let residual = t.residual.as_ref().map(|e| e.resolve(sender, None));
    let mut probe = Vec::with_capacity(t.rels.len());
    for r in &t.rels {
        probe.push(probe_indexes(tx.table(r.table).map_err(engine(&t.sql))?.schema()));
    }
    let eq = local
        .iter()
        .enumerate()
        .map(|(i, f)| {
            f.as_ref()
                .and_then(|f| f.eq_conjunct())
                .map(|(col, v)| (col, v.clone(), probe[i].get(col).copied().flatten().map(|(id, _)| id)))
        })
        .collect();
    let plans = (0..t.rels.len()).map(|start| join_order(t, &probe, start)).collect();
    Ok(Query { sql: t.sql.clone(), rels: t.rels.clone(), local, residual, proj: t.proj, plans, eq })
}

/// Greedy join order from `start`: next a relation connected to the bound ones through an
/// indexed column, else any connected one, else (cross product) any.
fn join_order(t: &Template, probe: &[Vec<Option<(IndexId, bool)>>], start: usize) -> Vec<Step> {
    let n = t.rels.len();
    let mut bound = vec![false; n];
    bound[start] = true;
    let mut steps = Vec::new();
    for _ in 1..n {
        let mut best: Option<(u8, Step)> = None;
        for rel in (0..n).filter(|&r| !bound[r]) {
            let mut keys = Vec::new();
            for e in &t.edges {
                if e.a == rel && bound[e.b] {
                    keys.push((e.a_col, e.b, e.b_col));
                } else if e.b == rel && bound[e.a] {
                    keys.push((e.b_col, e.a, e.a_col));
                }
            }
            let probe_of = |c: usize| probe[rel].get(c).copied().flatten();
            if let Some(k) = keys.iter().position(|(c, _, _)| probe_of(*c).is_some()) {
                keys.swap(0, k);
            }
            let index = keys.first().and_then(|(c, _, _)| probe_of(*c));
            let score = match (index.is_some(), keys.is_empty()) {
                (true, _) => 2,
                (false, false) => 1,
                (false, true) => 0,
            };
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, Step { rel, keys, index }));
            }
        }
        // Invariant: the loop runs n-1 times and each time at least one relation is unbound.
        let (_, step) = best.expect("an unbound relation remains");
        bound[step.rel] = true;
        steps.push(step);
    }
    steps
}
