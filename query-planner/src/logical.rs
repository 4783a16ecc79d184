//! Binding: SQL text → [`LogicalPlan`] with resolved columns and literals typed to their column.

use lightcone_mvcc::{ColId, ColumnType, MvccError, ReadTx, TableId, TableSchema, Value, I256, U256};
use sqlparser::ast::{
    AccessExpr, BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident,
    JoinConstraint, JoinOperator, LimitClause, ObjectName, OrderBy, OrderByKind, Query, Select, SelectItem,
    SelectItemQualifiedWildcardKind, SetExpr, Statement, TableFactor, UnaryOperator, Value as SqlValue,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::error::PlanError;

/// A column of a base table instance, resolved by the binder. `alias` names the table
/// instance (its `AS` alias, else the table name) and is unique within a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRef {
    pub table: TableId,
    pub alias: String,
    pub col: ColId,
    pub name: String,
    pub ty: ColumnType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator with its operands swapped (`5 < x` ≡ `x > 5`).
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            op => op,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// Whether `ord` (left compared with right) satisfies the operator.
    pub fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
            CmpOp::Gt => ord == Greater,
            CmpOp::Ge => ord != Less,
        }
    }
}

/// The right-hand side of a comparison: a literal of the column's type, the caller's
/// identity (`:sender`, a `U256`, supplied at execution), or another column of the same type
/// (of the same table instance or of another one in scope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Literal(Value),
    Sender,
    Column(ColumnRef),
}

/// A boolean condition over one row. Comparisons are normalised to `column op operand`.
///
/// Evaluate it with [`Predicate::eval`], which is what the planner's executor uses too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predicate {
    Cmp { col: ColumnRef, op: CmpOp, rhs: Operand },
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
    Not(Box<Predicate>),
}

impl Predicate {
    /// The top-level conjuncts (`a AND (b AND c)` → `[a, b, c]`).
    pub fn conjuncts(&self) -> Vec<&Predicate> {
        match self {
            Predicate::And(l, r) => {
                let mut v = l.conjuncts();
                v.extend(r.conjuncts());
                v
            }
            p => vec![p],
        }
    }

    /// The table instances (aliases) the predicate references, deduplicated.
    pub fn aliases(&self) -> Vec<&str> {
        let mut v: Vec<&str> = match self {
            Predicate::Cmp { col, rhs: Operand::Column(r), .. } => vec![col.alias.as_str(), r.alias.as_str()],
            Predicate::Cmp { col, .. } => vec![col.alias.as_str()],
            Predicate::And(l, r) | Predicate::Or(l, r) => {
                let mut v = l.aliases();
                v.extend(r.aliases());
                v
            }
            Predicate::Not(p) => p.aliases(),
        };
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether evaluating this predicate needs the `:sender` value.
    pub fn uses_sender(&self) -> bool {
        match self {
            Predicate::Cmp { rhs, .. } => *rhs == Operand::Sender,
            Predicate::And(l, r) | Predicate::Or(l, r) => l.uses_sender() || r.uses_sender(),
            Predicate::Not(p) => p.uses_sender(),
        }
    }

    /// Evaluates the predicate on one row. `lookup` gives a column's value in the row (columns
    /// are those the predicate was bound with; the caller maps them to its row layout);
    /// `sender` is the `:sender` value (a `Value::U256`). A comparison whose operands are not
    /// both available (`lookup` answers `None`, or `:sender` without a sender) is false —
    /// callers that require a sender should check [`Predicate::uses_sender`] first.
    /// Values compare by [`Value`]'s `Ord` (bound predicates only compare equal types).
    ///
    /// ```
    /// use lightcone_mvcc::{ColumnType, Value};
    /// use lightcone_query_planner::{CmpOp, ColumnRef, Operand, Predicate};
    ///
    /// let col = |col: u16, name: &str| ColumnRef {
    ///     table: 0, alias: "t".into(), col, name: name.into(), ty: ColumnType::U32,
    /// };
    /// let p = Predicate::Cmp { col: col(0, "x"), op: CmpOp::Lt, rhs: Operand::Column(col(1, "y")) };
    /// let row = [Value::U32(1), Value::U32(2)];
    /// assert!(p.eval(&|c: &ColumnRef| row.get(c.col as usize), None));
    /// ```
    pub fn eval<'a>(
        &self,
        lookup: &impl Fn(&ColumnRef) -> Option<&'a Value>,
        sender: Option<&'a Value>,
    ) -> bool {
        match self {
            Predicate::Cmp { col, op, rhs } => {
                let l = lookup(col);
                match (l, rhs) {
                    (Some(l), Operand::Literal(r)) => op.holds(l.cmp(r)),
                    (Some(l), Operand::Sender) => sender.is_some_and(|r| op.holds(l.cmp(r))),
                    (Some(l), Operand::Column(c)) => lookup(c).is_some_and(|r| op.holds(l.cmp(r))),
                    (None, _) => false,
                }
            }
            Predicate::And(l, r) => l.eval(lookup, sender) && r.eval(lookup, sender),
            Predicate::Or(l, r) => l.eval(lookup, sender) || r.eval(lookup, sender),
            Predicate::Not(x) => !x.eval(lookup, sender),
        }
    }

    /// `self` with every column reference (both sides of comparisons) replaced by `f`'s answer.
    pub fn map_columns<E>(&self, f: &impl Fn(&ColumnRef) -> Result<ColumnRef, E>) -> Result<Predicate, E> {
        Ok(match self {
            Predicate::Cmp { col, op, rhs } => Predicate::Cmp {
                col: f(col)?,
                op: *op,
                rhs: match rhs {
                    Operand::Column(c) => Operand::Column(f(c)?),
                    other => other.clone(),
                },
            },
            Predicate::And(l, r) => Predicate::And(Box::new(l.map_columns(f)?), Box::new(r.map_columns(f)?)),
            Predicate::Or(l, r) => Predicate::Or(Box::new(l.map_columns(f)?), Box::new(r.map_columns(f)?)),
            Predicate::Not(x) => Predicate::Not(Box::new(x.map_columns(f)?)),
        })
    }
}

/// One `ORDER BY` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub col: ColumnRef,
    pub desc: bool,
}

/// A relational plan over base tables: what a query means, independent of access paths.
/// An incremental evaluator can differentiate it: `Select`, `Project` and `Join` over `Scan`s
/// with column references.
///
/// Shape produced by [`bind`]: `[Limit] (Project | Count) [Sort] [Select] from`, where `from` is
/// a `Scan` or a left-deep tree of `Join`s whose right inputs are `Scan`s (in `FROM` order).
/// A joined row is the concatenation of its tables' rows, in `FROM` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogicalPlan {
    /// Every row of a table; `alias` is the instance name columns refer to.
    Scan { table: TableId, name: String, alias: String },
    /// Inner equi-join: pairs of `left` and `right` rows where every `(l, r)` in `on` has
    /// equal values (`l` from `left`, `r` from `right`; an empty `on` is a cross product).
    Join { left: Box<LogicalPlan>, right: Box<LogicalPlan>, on: Vec<(ColumnRef, ColumnRef)> },
    /// The input's rows satisfying `pred`.
    Select { input: Box<LogicalPlan>, pred: Predicate },
    /// The listed columns of each input row.
    Project { input: Box<LogicalPlan>, columns: Vec<ColumnRef> },
    /// One row holding the number of input rows (a `u64` column named `name`).
    Count { input: Box<LogicalPlan>, name: String },
    /// The input's rows ordered by `keys` (first key most significant; ties keep input order).
    Sort { input: Box<LogicalPlan>, keys: Vec<SortKey> },
    /// At most `n` input rows.
    Limit { input: Box<LogicalPlan>, n: u64 },
}

impl LogicalPlan {
    /// The base tables this plan reads, in `FROM` order (a table joined twice appears twice).
    pub fn tables(&self) -> Vec<TableId> {
        match self {
            LogicalPlan::Scan { table, .. } => vec![*table],
            LogicalPlan::Join { left, right, .. } => {
                let mut v = left.tables();
                v.extend(right.tables());
                v
            }
            LogicalPlan::Select { input, .. }
            | LogicalPlan::Project { input, .. }
            | LogicalPlan::Count { input, .. }
            | LogicalPlan::Sort { input, .. }
            | LogicalPlan::Limit { input, .. } => input.tables(),
        }
    }
}

/// A bound statement: a query, or `EXPLAIN` of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundStatement {
    pub plan: LogicalPlan,
    pub explain: bool,
}

pub(crate) fn unsupported(what: impl std::fmt::Display) -> PlanError {
    PlanError::Unsupported(what.to_string())
}

/// Parses `sql` into its statements (separated by `;`).
pub(crate) fn parse(sql: &str) -> Result<Vec<Statement>, PlanError> {
    Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| PlanError::Syntax(e.to_string()))
}

/// Whether `sql` parses and any of its statements writes (INSERT, UPDATE or DELETE): for
/// refusing writes to callers who may only read, whatever else the batch holds.
pub fn writes(sql: &str) -> bool {
    parse(sql).is_ok_and(|stmts| {
        stmts
            .iter()
            .any(|s| matches!(s, Statement::Insert(_) | Statement::Update { .. } | Statement::Delete(_)))
    })
}

/// Parses and binds one statement against the catalog visible in `tx`.
pub fn bind(tx: &impl ReadTx, sql: &str) -> Result<BoundStatement, PlanError> {
    let stmts = parse(sql)?;
    let stmt = match stmts.as_slice() {
        [s] => s,
        [] => return Err(PlanError::Syntax(format!("empty statement `{sql}`"))),
        _ => return Err(unsupported(format!("multiple statements: {sql}"))),
    };
    bind_statement(tx, stmt)
}

/// Binds one parsed query (or `EXPLAIN` of one).
pub(crate) fn bind_statement(tx: &impl ReadTx, stmt: &Statement) -> Result<BoundStatement, PlanError> {
    match stmt {
        Statement::Query(q) => Ok(BoundStatement { plan: bind_query(tx, q)?, explain: false }),
        Statement::Explain { statement, analyze: false, .. } => match statement.as_ref() {
            Statement::Query(q) => Ok(BoundStatement { plan: bind_query(tx, q)?, explain: true }),
            other => Err(unsupported(other)),
        },
        Statement::Insert(_) | Statement::Update { .. } | Statement::Delete(_) => {
            Err(PlanError::WrongStatementKind {
                statement: stmt.to_string(),
                reason: "DML needs a write transaction (use execute_statement or execute_batch)".into(),
            })
        }
        other => Err(unsupported(other)),
    }
}

fn bind_query(tx: &impl ReadTx, q: &Query) -> Result<LogicalPlan, PlanError> {
    if let Some(w) = &q.with {
        return Err(unsupported(w));
    }
    if let Some(f) = &q.fetch {
        return Err(unsupported(f));
    }
    if !q.locks.is_empty() || q.for_clause.is_some() || q.settings.is_some() || q.format_clause.is_some() {
        return Err(unsupported(q));
    }
    if !q.pipe_operators.is_empty() {
        return Err(unsupported(q));
    }
    let select = match q.body.as_ref() {
        SetExpr::Select(s) => s,
        other => return Err(unsupported(other)),
    };
    let plan = bind_select(tx, select, q.order_by.as_ref())?;
    let limit = match &q.limit_clause {
        None => None,
        Some(LimitClause::LimitOffset { limit, offset: None, limit_by }) if limit_by.is_empty() => {
            limit.as_ref().map(bind_limit).transpose()?
        }
        Some(other) => return Err(unsupported(other)),
    };
    Ok(match limit {
        Some(n) => LogicalPlan::Limit { input: Box::new(plan), n },
        None => plan,
    })
}

fn bind_limit(e: &Expr) -> Result<u64, PlanError> {
    match e {
        Expr::Value(v) => match &v.value {
            SqlValue::Number(s, _) => s.parse::<u64>().map_err(|_| PlanError::TypeMismatch {
                literal: e.to_string(),
                column: "LIMIT".into(),
                ty: ColumnType::U64,
            }),
            _ => Err(PlanError::TypeMismatch {
                literal: e.to_string(),
                column: "LIMIT".into(),
                ty: ColumnType::U64,
            }),
        },
        _ => Err(unsupported(format!("LIMIT {e}"))),
    }
}

/// One table instance in scope: its schema and the name it may be qualified by.
pub(crate) struct Rel<'a> {
    pub(crate) schema: &'a TableSchema,
    pub(crate) qualifier: String,
}

impl Rel<'_> {
    pub(crate) fn matches(&self, q: &Ident) -> bool {
        if q.quote_style.is_some() {
            q.value == self.qualifier
        } else {
            q.value.eq_ignore_ascii_case(&self.qualifier)
        }
    }

    pub(crate) fn column(&self, ident: &Ident) -> Result<ColumnRef, PlanError> {
        let cols = &self.schema.def.columns;
        let found = match cols.iter().position(|c| c.name == ident.value) {
            Some(i) => i,
            None if ident.quote_style.is_none() => {
                let hits: Vec<usize> =
                    (0..cols.len()).filter(|&i| cols[i].name.eq_ignore_ascii_case(&ident.value)).collect();
                match hits.as_slice() {
                    [i] => *i,
                    [] => return Err(self.unknown(ident)),
                    many => {
                        return Err(PlanError::AmbiguousColumn {
                            column: ident.value.clone(),
                            candidates: many.iter().map(|&i| cols[i].name.clone()).collect(),
                        })
                    }
                }
            }
            None => return Err(self.unknown(ident)),
        };
        Ok(self.col_ref(found))
    }

    pub(crate) fn col_ref(&self, i: usize) -> ColumnRef {
        let c = &self.schema.def.columns[i];
        ColumnRef {
            table: self.schema.id,
            alias: self.qualifier.clone(),
            col: i as ColId,
            name: c.name.clone(),
            ty: c.ty,
        }
    }

    fn unknown(&self, ident: &Ident) -> PlanError {
        PlanError::UnknownColumn { column: ident.value.clone(), table: self.schema.name().to_string() }
    }

    fn all_columns(&self) -> Vec<ColumnRef> {
        (0..self.schema.def.columns.len()).map(|i| self.col_ref(i)).collect()
    }
}

/// The table instances in scope, in `FROM` order.
pub(crate) struct Scope<'a> {
    pub(crate) rels: Vec<Rel<'a>>,
}

impl Scope<'_> {
    fn rel(&self, q: &Ident, whole: &dyn std::fmt::Display) -> Result<&Rel<'_>, PlanError> {
        let hits: Vec<&Rel<'_>> = self.rels.iter().filter(|r| r.matches(q)).collect();
        match hits.as_slice() {
            [r] => Ok(r),
            // Qualifiers are unique case-sensitively; prefer the exact spelling.
            many if !many.is_empty() => many
                .iter()
                .find(|r| r.qualifier == q.value)
                .copied()
                .ok_or_else(|| unsupported(format!("{whole} (ambiguous table name `{q}`)"))),
            _ => Err(PlanError::UnknownTable(format!("{q}` in `{whole}"))),
        }
    }

    fn column(&self, ident: &Ident) -> Result<ColumnRef, PlanError> {
        if let [rel] = self.rels.as_slice() {
            return rel.column(ident);
        }
        let mut hits = Vec::new();
        for rel in &self.rels {
            match rel.column(ident) {
                Ok(c) => hits.push(c),
                Err(PlanError::UnknownColumn { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        match hits.len() {
            1 => Ok(hits.remove(0)),
            0 => Err(PlanError::UnknownColumn {
                column: ident.value.clone(),
                table: self.rels.iter().map(|r| r.qualifier.as_str()).collect::<Vec<_>>().join(", "),
            }),
            _ => Err(PlanError::AmbiguousColumn {
                column: ident.value.clone(),
                candidates: hits.iter().map(|c| format!("{}.{}", c.alias, c.name)).collect(),
            }),
        }
    }

    /// A column reference expression: `col` or `qualifier.col`.
    fn column_expr(&self, e: &Expr) -> Result<Option<ColumnRef>, PlanError> {
        match column_path(e).as_deref() {
            None => Ok(None),
            Some([id]) => Ok(Some(self.column(id)?)),
            Some([q, c]) => Ok(Some(self.rel(q, e)?.column(c)?)),
            Some(_) => Err(unsupported(e)),
        }
    }
}

/// The identifiers of a (possibly qualified) column reference. Keyword-like names such as
/// `user` parse as argument-less functions (`user.x` as a field access on one).
fn column_path(e: &Expr) -> Option<Vec<Ident>> {
    match e {
        Expr::Identifier(id) => Some(vec![id.clone()]),
        Expr::CompoundIdentifier(parts) => Some(parts.clone()),
        Expr::Function(f)
            if matches!(f.args, FunctionArguments::None)
                && matches!(f.parameters, FunctionArguments::None)
                && f.filter.is_none()
                && f.null_treatment.is_none()
                && f.over.is_none()
                && f.within_group.is_empty()
                && !f.uses_odbc_syntax =>
        {
            match f.name.0.as_slice() {
                [p] => p.as_ident().map(|i| vec![i.clone()]),
                _ => None,
            }
        }
        Expr::CompoundFieldAccess { root, access_chain } => {
            let mut path = column_path(root)?;
            for a in access_chain {
                match a {
                    AccessExpr::Dot(Expr::Identifier(id)) => path.push(id.clone()),
                    _ => return None,
                }
            }
            Some(path)
        }
        _ => None,
    }
}

pub(crate) fn single_name(name: &ObjectName) -> Result<&Ident, PlanError> {
    match name.0.as_slice() {
        [part] => part.as_ident().ok_or_else(|| unsupported(name)),
        _ => Err(unsupported(name)),
    }
}

/// Resolves a `FROM` item to a table instance in scope.
pub(crate) fn bind_relation<'a>(tx: &'a impl ReadTx, factor: &TableFactor) -> Result<Rel<'a>, PlanError> {
    let (name, alias) = match factor {
        TableFactor::Table {
            name,
            alias,
            args: None,
            with_hints,
            version: None,
            partitions,
            json_path: None,
            sample: None,
            index_hints,
            ..
        } if with_hints.is_empty() && partitions.is_empty() && index_hints.is_empty() => (name, alias),
        other => return Err(unsupported(other)),
    };
    let table_ident = single_name(name)?;
    let table_id = match tx.table_id(&table_ident.value) {
        Ok(id) => id,
        Err(MvccError::NoSuchTableName(n)) => return Err(PlanError::UnknownTable(n)),
        Err(e) => return Err(e.into()),
    };
    let schema = tx.table(table_id)?.schema();
    let qualifier = match alias {
        Some(a) if !a.columns.is_empty() => return Err(unsupported(a)),
        Some(a) => a.name.value.clone(),
        None => table_ident.value.clone(),
    };
    Ok(Rel { schema, qualifier })
}

pub(crate) fn scan_of(rel: &Rel<'_>) -> LogicalPlan {
    LogicalPlan::Scan {
        table: rel.schema.id,
        name: rel.schema.name().to_string(),
        alias: rel.qualifier.clone(),
    }
}

/// Binds an `ON` condition: a conjunction of `column = column` between two different tables.
/// Returns the pairs as (earlier table's column, later table's column), by `FROM` position.
fn bind_on(
    scope: &Scope<'_>,
    e: &Expr,
    out: &mut Vec<(usize, ColumnRef, ColumnRef)>,
) -> Result<(), PlanError> {
    match e {
        Expr::Nested(inner) => bind_on(scope, inner, out),
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            bind_on(scope, left, out)?;
            bind_on(scope, right, out)
        }
        Expr::BinaryOp { left, op: BinaryOperator::Eq, right } => {
            let (Some(l), Some(r)) = (scope.column_expr(strip(left))?, scope.column_expr(strip(right))?)
            else {
                return Err(unsupported(format!("ON {e} (only column = column equalities)")));
            };
            let pos = |c: &ColumnRef| scope.rels.iter().position(|r| r.qualifier == c.alias).unwrap_or(0);
            let (lp, rp) = (pos(&l), pos(&r));
            if lp == rp {
                return Err(unsupported(format!("ON {e} (both columns are from `{}`)", l.alias)));
            }
            if l.ty != r.ty {
                return Err(unsupported(format!(
                    "ON {e} (columns of different types {} and {})",
                    l.ty, r.ty
                )));
            }
            if lp < rp {
                out.push((rp, l, r));
            } else {
                out.push((lp, r, l));
            }
            Ok(())
        }
        _ => Err(unsupported(format!("ON {e} (only column = column equalities)"))),
    }
}

fn bind_select(tx: &impl ReadTx, s: &Select, order_by: Option<&OrderBy>) -> Result<LogicalPlan, PlanError> {
    if let Some(d) = &s.distinct {
        return Err(unsupported(d));
    }
    if let Some(t) = &s.top {
        return Err(unsupported(t));
    }
    if let Some(i) = &s.into {
        return Err(unsupported(i));
    }
    if let Some(e) = &s.exclude {
        return Err(unsupported(e));
    }
    match &s.group_by {
        GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty() => {}
        g => return Err(unsupported(g)),
    }
    if let Some(h) = &s.having {
        return Err(unsupported(format!("HAVING {h}")));
    }
    if let Some(p) = &s.prewhere {
        return Err(unsupported(format!("PREWHERE {p}")));
    }
    if let Some(q) = &s.qualify {
        return Err(unsupported(format!("QUALIFY {q}")));
    }
    if !s.lateral_views.is_empty()
        || !s.cluster_by.is_empty()
        || !s.distribute_by.is_empty()
        || !s.sort_by.is_empty()
        || !s.named_window.is_empty()
        || s.connect_by.is_some()
        || s.value_table_mode.is_some()
    {
        return Err(unsupported(s));
    }
    let from = match s.from.as_slice() {
        [] => return Err(unsupported(format!("{s} (a SELECT without FROM)"))),
        [one] => one,
        many => {
            let names: Vec<String> = many.iter().map(|t| t.to_string()).collect();
            return Err(unsupported(format!("FROM {} (comma joins; use JOIN … ON)", names.join(", "))));
        }
    };
    let mut scope = Scope { rels: vec![bind_relation(tx, &from.relation)?] };
    let mut plan = scan_of(&scope.rels[0]);
    // ON pairs, by the FROM position of their later table.
    let mut pairs: Vec<(usize, ColumnRef, ColumnRef)> = Vec::new();
    for join in &from.joins {
        let on = match &join.join_operator {
            JoinOperator::Join(JoinConstraint::On(e)) | JoinOperator::Inner(JoinConstraint::On(e))
                if !join.global =>
            {
                e
            }
            _ => return Err(unsupported(format!("{join} (only [INNER] JOIN … ON)"))),
        };
        let rel = bind_relation(tx, &join.relation)?;
        if scope.rels.iter().any(|r| r.qualifier.eq_ignore_ascii_case(&rel.qualifier)) {
            return Err(unsupported(format!(
                "{join} (table name `{}` used twice; add an alias)",
                rel.qualifier
            )));
        }
        scope.rels.push(rel);
        bind_on(&scope, on, &mut pairs)?;
    }
    for (i, rel) in scope.rels.iter().enumerate().skip(1) {
        let on = pairs.iter().filter(|p| p.0 == i).map(|(_, l, r)| (l.clone(), r.clone())).collect();
        plan = LogicalPlan::Join { left: Box::new(plan), right: Box::new(scan_of(rel)), on };
    }
    if let Some(w) = &s.selection {
        plan = LogicalPlan::Select { input: Box::new(plan), pred: bind_pred(&scope, w)? };
    }
    if let Some(o) = order_by {
        let keys = bind_order_by(&scope, o)?;
        if !keys.is_empty() {
            plan = LogicalPlan::Sort { input: Box::new(plan), keys };
        }
    }
    bind_projection(&scope, &s.projection, plan)
}

fn bind_order_by(scope: &Scope<'_>, o: &OrderBy) -> Result<Vec<SortKey>, PlanError> {
    let exprs = match (&o.kind, &o.interpolate) {
        (OrderByKind::Expressions(e), None) => e,
        _ => return Err(unsupported(o)),
    };
    exprs
        .iter()
        .map(|item| {
            if item.with_fill.is_some() || item.options.nulls_first.is_some() {
                return Err(unsupported(format!("ORDER BY {item}")));
            }
            match scope.column_expr(strip(&item.expr))? {
                Some(col) => Ok(SortKey { col, desc: item.options.asc == Some(false) }),
                None => Err(unsupported(format!("ORDER BY {item} (only columns)"))),
            }
        })
        .collect()
}

fn bind_projection(
    scope: &Scope<'_>,
    items: &[SelectItem],
    input: LogicalPlan,
) -> Result<LogicalPlan, PlanError> {
    // COUNT(*) must be the only item.
    if let [item] = items {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (Some(e), None),
            SelectItem::ExprWithAlias { expr, alias } => (Some(expr), Some(alias)),
            _ => (None, None),
        };
        if let Some(Expr::Function(f)) = expr {
            if !is_count_star(f) {
                return Err(unsupported(f));
            }
            let name = alias.map_or_else(|| "count".to_string(), |a| a.value.clone());
            return Ok(LogicalPlan::Count { input: Box::new(input), name });
        }
    }
    let mut columns = Vec::new();
    for item in items {
        match item {
            SelectItem::Wildcard(opts) => {
                if opts.to_string().trim().is_empty() {
                    columns.extend(scope.rels.iter().flat_map(Rel::all_columns));
                } else {
                    return Err(unsupported(item));
                }
            }
            SelectItem::QualifiedWildcard(kind, opts) => {
                if !opts.to_string().trim().is_empty() {
                    return Err(unsupported(item));
                }
                match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(n) => {
                        let q = single_name(n)?;
                        columns.extend(scope.rel(q, item)?.all_columns());
                    }
                    SelectItemQualifiedWildcardKind::Expr(_) => return Err(unsupported(item)),
                }
            }
            SelectItem::UnnamedExpr(e) => match scope.column_expr(e)? {
                Some(c) => columns.push(c),
                None => return Err(unsupported(e)),
            },
            SelectItem::ExprWithAlias { .. } => return Err(unsupported(format!("{item} (column aliases)"))),
        }
    }
    Ok(LogicalPlan::Project { input: Box::new(input), columns })
}

fn is_count_star(f: &sqlparser::ast::Function) -> bool {
    let name_ok = matches!(f.name.0.as_slice(), [p] if p.as_ident().is_some_and(|i| i.value.eq_ignore_ascii_case("count")));
    let args_ok = match &f.args {
        FunctionArguments::List(l) => {
            l.duplicate_treatment.is_none()
                && l.clauses.is_empty()
                && matches!(l.args.as_slice(), [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)])
        }
        _ => false,
    };
    name_ok
        && args_ok
        && matches!(f.parameters, FunctionArguments::None)
        && f.filter.is_none()
        && f.null_treatment.is_none()
        && f.over.is_none()
        && f.within_group.is_empty()
        && !f.uses_odbc_syntax
}

pub(crate) fn bind_pred(scope: &Scope<'_>, e: &Expr) -> Result<Predicate, PlanError> {
    match e {
        Expr::Nested(inner) => bind_pred(scope, inner),
        Expr::UnaryOp { op: UnaryOperator::Not, expr } => {
            Ok(Predicate::Not(Box::new(bind_pred(scope, expr)?)))
        }
        Expr::BinaryOp { left, op: BinaryOperator::And, right } => {
            Ok(Predicate::And(Box::new(bind_pred(scope, left)?), Box::new(bind_pred(scope, right)?)))
        }
        Expr::BinaryOp { left, op: BinaryOperator::Or, right } => {
            Ok(Predicate::Or(Box::new(bind_pred(scope, left)?), Box::new(bind_pred(scope, right)?)))
        }
        Expr::BinaryOp { left, op, right } => {
            let op = match op {
                BinaryOperator::Eq => CmpOp::Eq,
                BinaryOperator::NotEq => CmpOp::Ne,
                BinaryOperator::Lt => CmpOp::Lt,
                BinaryOperator::LtEq => CmpOp::Le,
                BinaryOperator::Gt => CmpOp::Gt,
                BinaryOperator::GtEq => CmpOp::Ge,
                _ => return Err(unsupported(e)),
            };
            let l = scope.column_expr(strip(left))?;
            let r = scope.column_expr(strip(right))?;
            match (l, r) {
                (Some(col), None) => {
                    let rhs = bind_operand(&col, strip(right))?;
                    Ok(Predicate::Cmp { col, op, rhs })
                }
                (None, Some(col)) => {
                    let rhs = bind_operand(&col, strip(left))?;
                    Ok(Predicate::Cmp { col, op: op.flip(), rhs })
                }
                (Some(col), Some(other)) => {
                    if col.ty != other.ty {
                        return Err(PlanError::TypeMismatch {
                            literal: format!("{} ({})", strip(right), other.ty),
                            column: col.name.clone(),
                            ty: col.ty,
                        });
                    }
                    Ok(Predicate::Cmp { col, op, rhs: Operand::Column(other) })
                }
                (None, None) => Err(unsupported(format!("{e} (comparison without a column)"))),
            }
        }
        _ => Err(unsupported(e)),
    }
}

pub(crate) fn strip(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => strip(inner),
        e => e,
    }
}

/// Types a literal (or `:sender`) as a value of `col`'s type.
pub(crate) fn bind_operand(col: &ColumnRef, e: &Expr) -> Result<Operand, PlanError> {
    let mismatch =
        || PlanError::TypeMismatch { literal: e.to_string(), column: col.name.clone(), ty: col.ty };
    let (neg, v) = match e {
        Expr::Value(v) => (false, &v.value),
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match strip(expr) {
            Expr::Value(v) if matches!(v.value, SqlValue::Number(..)) => (true, &v.value),
            _ => return Err(unsupported(e)),
        },
        Expr::UnaryOp { op: UnaryOperator::Plus, expr } => match strip(expr) {
            Expr::Value(v) if matches!(v.value, SqlValue::Number(..)) => (false, &v.value),
            _ => return Err(unsupported(e)),
        },
        _ => return Err(unsupported(e)),
    };
    let value = match v {
        SqlValue::Number(s, _) => {
            if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                int_value(col.ty, parse_hex(hex).ok_or_else(mismatch)?, neg)
            } else if col.ty.is_integer() {
                let mag = s.parse::<u128>().ok().map(U256::from_u128);
                int_value(col.ty, mag.ok_or_else(mismatch)?, neg)
            } else {
                let f = s.parse::<f64>().ok().map(|f| if neg { -f } else { f });
                match (col.ty, f) {
                    (ColumnType::F64, Some(f)) => Some(Value::F64(f)),
                    (ColumnType::F32, Some(f)) if f.is_finite() && (f as f32).is_finite() => {
                        Some(Value::F32(f as f32))
                    }
                    _ => None,
                }
            }
        }
        SqlValue::HexStringLiteral(hex) if !neg => match col.ty {
            ColumnType::Bytes => parse_bytes(hex).map(|b| Value::Bytes(b.into())),
            ty if ty.is_integer() => int_value(ty, parse_hex(hex).ok_or_else(mismatch)?, false),
            _ => None,
        },
        SqlValue::SingleQuotedString(s) if col.ty == ColumnType::String => {
            Some(Value::String(s.as_str().into()))
        }
        SqlValue::Boolean(b) if col.ty == ColumnType::Bool => Some(Value::Bool(*b)),
        SqlValue::Placeholder(p) if p == ":sender" => {
            return if col.ty == ColumnType::U256 { Ok(Operand::Sender) } else { Err(mismatch()) };
        }
        SqlValue::Placeholder(_) | SqlValue::Null => return Err(unsupported(e)),
        _ => None,
    };
    value.map(Operand::Literal).ok_or_else(mismatch)
}

/// Up to 64 hex digits as a 256-bit magnitude.
fn parse_hex(hex: &str) -> Option<U256> {
    let digits: String = hex.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || digits.len() > 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let split = digits.len().saturating_sub(32);
    let hi = if split == 0 { 0 } else { u128::from_str_radix(&digits[..split], 16).ok()? };
    let lo = u128::from_str_radix(&digits[split..], 16).ok()?;
    Some(U256 { lo, hi })
}

fn parse_bytes(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect()
}

/// `±mag` as a value of integer type `ty`, if it fits.
fn int_value(ty: ColumnType, mag: U256, neg: bool) -> Option<Value> {
    let zero = mag == U256::ZERO;
    match ty {
        ColumnType::U256 if !neg || zero => Some(Value::U256(mag)),
        ColumnType::U128 if mag.hi == 0 && (!neg || zero) => Some(Value::U128(mag.lo)),
        ColumnType::I256 if mag.hi == 0 => {
            // Magnitudes up to 2^127 (i128's range); wider I256 literals are not supported yet.
            let v = small_signed(mag.lo, neg)?;
            Some(Value::I256(I256::from_i128(v)))
        }
        _ if mag.hi == 0 && ty.is_integer() => Value::integer_of_type(ty, small_signed(mag.lo, neg)?),
        _ => None,
    }
}

fn small_signed(mag: u128, neg: bool) -> Option<i128> {
    if neg {
        if mag == 1u128 << 127 {
            Some(i128::MIN)
        } else {
            i128::try_from(mag).ok().map(|m| -m)
        }
    } else {
        i128::try_from(mag).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves `writes` finds a write anywhere in a batch, and says no for reads and for text
    // that does not parse.
    #[test]
    fn writes_finds_a_write_anywhere_in_a_batch() {
        assert!(writes("DELETE FROM t"));
        assert!(writes("INSERT INTO t (a) VALUES (1)"));
        assert!(writes("SELECT * FROM t; UPDATE t SET a = 1"));
        assert!(!writes("SELECT * FROM t"));
        assert!(!writes("SELECT * FROM t; SELECT 1"));
        assert!(!writes("DELETE FROM"));
    }

    // Proves integer literals convert to every integer width with exact range checks,
    // including u128-sized magnitudes, i128::MIN and 64-digit hex identities.
    #[test]
    fn integer_literal_ranges() {
        let m = |v: u128| U256::from_u128(v);
        assert_eq!(int_value(ColumnType::U8, m(255), false), Some(Value::U8(255)));
        assert_eq!(int_value(ColumnType::U8, m(256), false), None);
        assert_eq!(int_value(ColumnType::U8, m(1), true), None);
        assert_eq!(int_value(ColumnType::U8, m(0), true), Some(Value::U8(0)));
        assert_eq!(int_value(ColumnType::I8, m(128), true), Some(Value::I8(-128)));
        assert_eq!(int_value(ColumnType::I8, m(128), false), None);
        assert_eq!(int_value(ColumnType::U64, m(u64::MAX as u128), false), Some(Value::U64(u64::MAX)));
        assert_eq!(int_value(ColumnType::U128, m(u128::MAX), false), Some(Value::U128(u128::MAX)));
        assert_eq!(int_value(ColumnType::I128, m(1 << 127), true), Some(Value::I128(i128::MIN)));
        assert_eq!(int_value(ColumnType::I128, m(1 << 127), false), None);
        assert_eq!(int_value(ColumnType::String, m(1), false), None);
        let max = parse_hex(&"f".repeat(64)).unwrap();
        assert_eq!(max, U256::MAX);
        assert_eq!(int_value(ColumnType::U256, max, false), Some(Value::U256(U256::MAX)));
        assert_eq!(int_value(ColumnType::U128, max, false), None);
        assert_eq!(parse_hex(&"f".repeat(65)), None);
        assert_eq!(parse_hex(""), None);
        assert_eq!(parse_bytes("0aff"), Some(vec![10, 255]));
        assert_eq!(parse_bytes("0af"), None);
    }
}
