//! The subscription registry: who subscribed to what, shared compiled queries, the
//! subscription index, and per-commit evaluation with fan-out.

use std::fmt;
use std::sync::Arc;

use ahash::{AHashMap, AHashSet};
use lightcone_mvcc::{ReadTx, Row, Snapshot, TableId, TxDelta, Value, U256};

use crate::compile::{compile, compile_rls, instantiate, normalize, Expr, Query, Template};
use crate::error::EvalError;
use crate::eval::{query_delta, query_rows};

/// A connected client, as the host numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A client's name for one group of queries subscribed (and unsubscribed) together.
pub type QuerySetId = u32;

/// Who a client is: its identity (bound to `:sender`) and whether it owns the database
/// (owners see private tables and bypass row-level security).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAuth {
    pub sender: U256,
    pub is_owner: bool,
}

/// Rows of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRows {
    pub table_id: TableId,
    pub table_name: String,
    pub rows: Vec<Row>,
}

/// The rows of a query set, grouped per table (a multiset: a row may appear several times —
/// through a join, or because overlapping queries of the set both return it).
pub type InitialRows = Vec<TableRows>;

/// One distinct query's change for one commit: computed once, shared by every subscriber
/// (encode it once, send it to each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryDelta {
    pub table_id: TableId,
    pub table_name: String,
    /// The query's text (normalized), for diagnostics.
    pub sql: Arc<str>,
    pub inserts: Vec<Row>,
    pub deletes: Vec<Row>,
}

/// `deltas[delta]` applies to `client`'s query set `query_set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateEntry {
    pub client: ClientId,
    pub query_set: QuerySetId,
    pub delta: usize,
}

/// A query whose evaluation failed (an engine error; its subscribers got nothing for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryFailure {
    pub error: EvalError,
    pub subscribers: Vec<(ClientId, QuerySetId)>,
}

/// Everything one commit changed for subscribers.
#[derive(Debug, Clone, Default)]
pub struct TxUpdates {
    pub tx_offset: u64,
    /// The non-empty deltas of the distinct queries that changed.
    pub deltas: Vec<Arc<QueryDelta>>,
    /// Which delta goes to which client's query set, sorted by (client, query set, delta).
    pub entries: Vec<UpdateEntry>,
    pub failures: Vec<QueryFailure>,
}

/// One client's part of a [`TxUpdates`].
pub struct ClientUpdate<'a> {
    pub client: ClientId,
    entries: &'a [UpdateEntry],
    deltas: &'a [Arc<QueryDelta>],
}

impl<'a> ClientUpdate<'a> {
    /// The client's query sets that changed, each with the shared deltas that apply to it.
    pub fn query_sets(&self) -> Vec<(QuerySetId, Vec<&'a Arc<QueryDelta>>)> {
        let mut out: Vec<(QuerySetId, Vec<&'a Arc<QueryDelta>>)> = Vec::new();
        for e in self.entries {
            let d = &self.deltas[e.delta];
            match out.last_mut() {
                Some((qs, list)) if *qs == e.query_set => list.push(d),
                _ => out.push((e.query_set, vec![d])),
            }
        }
        out
    }
}

impl TxUpdates {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The update of each client with anything to receive, in client order.
    pub fn clients(&self) -> impl Iterator<Item = ClientUpdate<'_>> {
        self.entries.chunk_by(|a, b| a.client == b.client).map(|entries| ClientUpdate {
            client: entries[0].client,
            entries,
            deltas: &self.deltas,
        })
    }
}

/// What identifies a shared query: its text, the `:sender` value if the query (or a
/// row-level filter folded into it) uses one, and whether row-level security was applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct QueryKey {
    sql: String,
    sender: Option<U256>,
    rls: bool,
}

struct Entry {
    key: QueryKey,
    query: Arc<Query>,
    sql: Arc<str>,
    table_name: String,
    /// Sorted; one per (client, query set).
    subscribers: Vec<(ClientId, QuerySetId)>,
}

/// Queries to run when a table changes.
#[derive(Default)]
struct TableSubs {
    /// Single-table queries with a top-level `col = value` conjunct, by column then value.
    eq: Vec<(usize, AHashMap<Value, Vec<usize>>)>,
    /// Other single-table queries.
    other: Vec<usize>,
    /// Join queries reading the table.
    joins: Vec<usize>,
}

impl TableSubs {
    fn is_empty(&self) -> bool {
        self.eq.is_empty() && self.other.is_empty() && self.joins.is_empty()
    }
}

fn remove_item(v: &mut Vec<usize>, x: usize) {
    if let Some(p) = v.iter().position(|&y| y == x) {
        v.swap_remove(p);
    }
}

/// The subscription registry. See the crate docs.
#[derive(Default)]
pub struct Registry {
    /// Normalized SQL → compiled template and the number of entries using it.
    templates: AHashMap<String, (Arc<Template>, usize)>,
    keys: AHashMap<QueryKey, usize>,
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    clients: AHashMap<ClientId, AHashMap<QuerySetId, Vec<usize>>>,
    tables: AHashMap<TableId, TableSubs>,
    /// Row-level-security filters per table (over one row; may use `:sender`).
    rls: AHashMap<TableId, Vec<Expr>>,
    /// Filters every reader of a table is held to, the owner included; all must pass.
    mandatory: AHashMap<TableId, Vec<Expr>>,
}

/// A query of a subscribe call, resolved before anything is registered.
struct Prepared {
    key: QueryKey,
    template: Arc<Template>,
    query: Arc<Query>,
    /// The entry already serving this key, if any.
    existing: Option<usize>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Number of distinct compiled templates (one per normalized query text).
    pub fn template_count(&self) -> usize {
        self.templates.len()
    }

    /// Number of distinct shared queries (template × parameters).
    pub fn query_count(&self) -> usize {
        self.keys.len()
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Adds a row-level-security filter `SELECT * FROM t WHERE pred` (`pred` may use
    /// `:sender`). Non-owners then see only the rows of `t` passing at least one of its filters,
    /// everywhere `t` is read (including the other side of joins). Register filters before
    /// subscriptions (as upstream does at publish): refused while a subscription reads `t`.
    pub fn add_rls_filter(&mut self, tx: &impl ReadTx, sql: &str) -> Result<(), EvalError> {
        let (table, filter) = self.compile_filter(tx, sql)?;
        self.rls.entry(table).or_default().push(filter);
        Ok(())
    }

    /// Compiles a filter `SELECT * FROM t WHERE pred`; refused while a subscription reads `t`
    /// (its queries were built without the filter).
    fn compile_filter(&self, tx: &impl ReadTx, sql: &str) -> Result<(TableId, Expr), EvalError> {
        let (table, filter) = compile_rls(tx, sql)?;
        let in_use = self.entries.iter().flatten().any(|e| e.query.rels.iter().any(|r| r.table == table));
        if in_use {
            let table = tx.table(table).map(|t| t.schema().name().to_string()).unwrap_or_default();
            return Err(EvalError::RlsInUse { table });
        }
        Ok((table, filter))
    }

    /// Adds a filter `SELECT * FROM t WHERE pred` that every reader of `t` is held to, the
    /// owner included, on top of RLS (a sender-bound view's table: `sender = :sender`, so each
    /// client reads only its own rows). Like RLS filters, register before subscriptions.
    pub fn add_mandatory_filter(&mut self, tx: &impl ReadTx, sql: &str) -> Result<(), EvalError> {
        let (table, filter) = self.compile_filter(tx, sql)?;
        self.mandatory.entry(table).or_default().push(filter);
        Ok(())
    }

    /// Whether `table` has a mandatory filter.
    pub fn has_mandatory_filter(&self, table: TableId) -> bool {
        self.mandatory.contains_key(&table)
    }

    /// Subscribes `client`'s query set `query_set` to `queries`, returning their current rows
    /// on `snapshot` grouped per table. `snapshot` must be the state the next
    /// [`Registry::eval`] call continues from. Atomic: on any error nothing is registered.
    pub fn subscribe(
        &mut self,
        snapshot: &impl ReadTx,
        client: ClientId,
        query_set: QuerySetId,
        queries: &[&str],
        auth: &ClientAuth,
    ) -> Result<InitialRows, EvalError> {
        if self.clients.get(&client).is_some_and(|sets| sets.contains_key(&query_set)) {
            return Err(EvalError::QuerySetInUse { client, query_set });
        }
        let mut new_templates: AHashMap<String, Arc<Template>> = AHashMap::new();
        let mut prepared: Vec<Prepared> = Vec::new();
        for sql in queries {
            let norm = normalize(sql);
            let template =
                match self.templates.get(&norm).map(|(t, _)| t).or_else(|| new_templates.get(&norm)) {
                    Some(t) => Arc::clone(t),
                    None => {
                        let t = Arc::new(compile(snapshot, &norm)?);
                        new_templates.insert(norm.clone(), Arc::clone(&t));
                        t
                    }
                };
            if !auth.is_owner {
                if let Some(r) = template.rels.iter().find(|r| !r.public) {
                    return Err(EvalError::PrivateTable { table: r.name.clone(), query: sql.to_string() });
                }
            }
            let rls: Vec<Option<Vec<Expr>>> = template
                .rels
                .iter()
                .map(|r| if auth.is_owner { None } else { self.rls.get(&r.table).cloned() })
                .collect();
            let mandatory: Vec<Option<Vec<Expr>>> =
                template.rels.iter().map(|r| self.mandatory.get(&r.table).cloned()).collect();
            let rls_applied = rls.iter().any(Option::is_some);
            let rls_sender = rls.iter().chain(&mandatory).flatten().flatten().any(Expr::uses_sender);
            let key = QueryKey {
                sql: norm,
                sender: (template.uses_sender || rls_sender).then_some(auth.sender),
                rls: rls_applied,
            };
            if prepared.iter().any(|p| p.key == key) {
                continue; // the same query twice in one set counts once
            }
            let (query, existing) = match self.keys.get(&key) {
                Some(&i) => (Arc::clone(&self.entry(i).query), Some(i)),
                None => (Arc::new(instantiate(&template, snapshot, auth.sender, &rls, &mandatory)?), None),
            };
            prepared.push(Prepared { key, template, query, existing });
        }
        // Initial rows, before anything is registered.
        let mut initial: InitialRows = Vec::new();
        for p in &prepared {
            let rows = query_rows(&p.query, snapshot)
                .map_err(|source| EvalError::Engine { query: p.key.sql.clone(), source })?;
            add_rows(&mut initial, &p.query, rows);
        }
        // Register.
        let mut indices = Vec::with_capacity(prepared.len());
        for p in prepared {
            let i = match p.existing {
                Some(i) => i,
                None => self.add_entry(p.key, p.template, p.query),
            };
            let e = self.entry_mut(i);
            let sub = (client, query_set);
            if let Err(pos) = e.subscribers.binary_search(&sub) {
                e.subscribers.insert(pos, sub);
            }
            indices.push(i);
        }
        self.clients.entry(client).or_default().insert(query_set, indices);
        Ok(initial)
    }

    /// Removes a query set. With `snapshot`, returns the rows the client is dropping (for
    /// upstream's `SendDroppedRows`), computed on it; else an empty list.
    pub fn unsubscribe(
        &mut self,
        snapshot: Option<&Snapshot>,
        client: ClientId,
        query_set: QuerySetId,
    ) -> Result<InitialRows, EvalError> {
        let sets = self.clients.get(&client).ok_or(EvalError::UnknownClient(client))?;
        let indices = sets.get(&query_set).ok_or(EvalError::UnknownQuerySet { client, query_set })?;
        let mut dropped = Vec::new();
        if let Some(tx) = snapshot {
            for &i in indices {
                let q = &self.entry(i).query;
                let rows =
                    query_rows(q, tx).map_err(|source| EvalError::Engine { query: q.sql.clone(), source })?;
                add_rows(&mut dropped, q, rows);
            }
        }
        self.remove_set(client, query_set);
        Ok(dropped)
    }

    /// Removes every query set of a client (a disconnect). Returns whether it had any.
    pub fn remove_client(&mut self, client: ClientId) -> bool {
        let Some(sets) = self.clients.get(&client) else { return false };
        let ids: Vec<QuerySetId> = sets.keys().copied().collect();
        for qs in ids {
            self.remove_set(client, qs);
        }
        true
    }

    fn remove_set(&mut self, client: ClientId, query_set: QuerySetId) {
        let Some(sets) = self.clients.get_mut(&client) else { return };
        let Some(indices) = sets.remove(&query_set) else { return };
        if sets.is_empty() {
            self.clients.remove(&client);
        }
        for i in indices {
            let e = self.entry_mut(i);
            if let Ok(pos) = e.subscribers.binary_search(&(client, query_set)) {
                e.subscribers.remove(pos);
            }
            if e.subscribers.is_empty() {
                self.remove_entry(i);
            }
        }
    }

    fn entry(&self, i: usize) -> &Entry {
        // Invariant: indices held by clients, keys and table lists point at live entries
        // (an entry is removed from all of them before its slot is freed).
        self.entries[i].as_ref().expect("live entry")
    }

    fn entry_mut(&mut self, i: usize) -> &mut Entry {
        // Invariant: as in `entry`.
        self.entries[i].as_mut().expect("live entry")
    }

    fn add_entry(&mut self, key: QueryKey, template: Arc<Template>, query: Arc<Query>) -> usize {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(None);
                self.entries.len() - 1
            }
        };
        self.templates.entry(key.sql.clone()).or_insert_with(|| (template, 0)).1 += 1;
        if query.is_single() {
            let subs = self.tables.entry(query.rels[0].table).or_default();
            match &query.eq[0] {
                Some((col, v, _)) => {
                    let by_col = match subs.eq.iter().position(|(c, _)| c == col) {
                        Some(p) => &mut subs.eq[p].1,
                        None => {
                            subs.eq.push((*col, AHashMap::new()));
                            // Invariant: just pushed.
                            &mut subs.eq.last_mut().expect("just pushed").1
                        }
                    };
                    by_col.entry(v.clone()).or_default().push(i);
                }
                None => subs.other.push(i),
            }
        } else {
            let mut tables: Vec<TableId> = query.rels.iter().map(|r| r.table).collect();
            tables.sort_unstable();
            tables.dedup();
            for t in tables {
                self.tables.entry(t).or_default().joins.push(i);
            }
        }
        let proj = &query.rels[query.proj];
        let table_name = proj.name.clone();
        let sql: Arc<str> = key.sql.as_str().into();
        self.keys.insert(key.clone(), i);
        self.entries[i] = Some(Entry { key, query, sql, table_name, subscribers: Vec::new() });
        i
    }

    fn remove_entry(&mut self, i: usize) {
        let Some(e) = self.entries[i].take() else { return };
        self.keys.remove(&e.key);
        if let Some((_, n)) = self.templates.get_mut(&e.key.sql) {
            *n -= 1;
            if *n == 0 {
                self.templates.remove(&e.key.sql);
            }
        }
        let q = &e.query;
        let mut tables: Vec<TableId> = q.rels.iter().map(|r| r.table).collect();
        tables.sort_unstable();
        tables.dedup();
        for t in tables {
            let Some(subs) = self.tables.get_mut(&t) else { continue };
            if q.is_single() {
                match &q.eq[0] {
                    Some((col, v, _)) => {
                        if let Some(p) = subs.eq.iter().position(|(c, _)| c == col) {
                            let by_col = &mut subs.eq[p].1;
                            if let Some(list) = by_col.get_mut(v) {
                                remove_item(list, i);
                                if list.is_empty() {
                                    by_col.remove(v);
                                }
                            }
                            if by_col.is_empty() {
                                subs.eq.swap_remove(p);
                            }
                        }
                    }
                    None => remove_item(&mut subs.other, i),
                }
            } else {
                remove_item(&mut subs.joins, i);
            }
            if subs.is_empty() {
                self.tables.remove(&t);
            }
        }
        self.free.push(i);
    }

    /// What the commit whose delta is `delta` changes for subscribers; `after` is the state
    /// right after that commit. Only queries reading a changed table run; a changed row of a
    /// single-table query's table is tested only against the queries whose `col = value`
    /// conjunct it matches (and those without one). Each distinct query's delta is computed
    /// once and shared by all its subscribers.
    pub fn eval(&self, after: &impl ReadTx, delta: &TxDelta) -> TxUpdates {
        if delta.tables.is_empty() {
            return TxUpdates { tx_offset: delta.tx_offset, ..TxUpdates::default() };
        }
        debug_assert_eq!(after.tx_offset(), delta.tx_offset, "`after` must be the state right after `delta`");
        // Entry → (inserts, deletes).
        let mut out: AHashMap<usize, (Vec<Row>, Vec<Row>)> = AHashMap::new();
        let mut joins: Vec<usize> = Vec::new();
        for td in &delta.tables {
            let Some(subs) = self.tables.get(&td.table_id) else { continue };
            for (rows, insert) in [(&td.inserts, true), (&td.deletes, false)] {
                for row in rows {
                    let mut dispatch = |i: usize| {
                        if self.entry(i).query.passes(0, row) {
                            let (ins, del) = out.entry(i).or_default();
                            if insert { ins } else { del }.push(row.clone());
                        }
                    };
                    for (col, by_value) in &subs.eq {
                        if let Some(list) = row.get(*col).and_then(|v| by_value.get(v)) {
                            list.iter().for_each(|&i| dispatch(i));
                        }
                    }
                    subs.other.iter().for_each(|&i| dispatch(i));
                }
            }
            joins.extend(&subs.joins);
        }
        let mut failures = Vec::new();
        if !joins.is_empty() {
            let mut seen = AHashSet::new();
            joins.retain(|i| seen.insert(*i));
            for i in joins {
                let e = self.entry(i);
                match query_delta(&e.query, after, delta) {
                    Ok((ins, del)) => {
                        if !ins.is_empty() || !del.is_empty() {
                            out.insert(i, (ins, del));
                        }
                    }
                    Err(source) => failures.push(QueryFailure {
                        error: EvalError::Engine { query: e.key.sql.clone(), source },
                        subscribers: e.subscribers.clone(),
                    }),
                }
            }
        }
        let mut changed: Vec<_> = out.into_iter().collect();
        changed.sort_unstable_by_key(|(i, _)| *i);
        let mut deltas = Vec::with_capacity(changed.len());
        let mut entries = Vec::new();
        for (i, (inserts, deletes)) in changed {
            let e = self.entry(i);
            let d = deltas.len();
            let proj = &e.query.rels[e.query.proj];
            deltas.push(Arc::new(QueryDelta {
                table_id: proj.table,
                table_name: e.table_name.clone(),
                sql: Arc::clone(&e.sql),
                inserts,
                deletes,
            }));
            entries.extend(e.subscribers.iter().map(|&(client, query_set)| UpdateEntry {
                client,
                query_set,
                delta: d,
            }));
        }
        // Already sorted when one query changed (subscribers are kept sorted).
        entries.sort_unstable_by_key(|e| (e.client, e.query_set, e.delta));
        TxUpdates { tx_offset: delta.tx_offset, deltas, entries, failures }
    }
}

fn add_rows(out: &mut InitialRows, q: &Query, rows: Vec<Row>) {
    let proj = &q.rels[q.proj];
    match out.iter_mut().find(|t| t.table_id == proj.table) {
        Some(t) => t.rows.extend(rows),
        None => out.push(TableRows { table_id: proj.table, table_name: proj.name.clone(), rows }),
    }
}
