//! Evaluating one [`Query`]: its full result on a snapshot, and its change for one commit.
//!
//! # Join deltas
//! For relations `R1 … Rk` (a table joined twice is two relations) with old states `Ri` and
//! new states `Ri' = Ri + ΔRi` (signed multisets: inserts +1, deletes −1),
//!
//! ```text
//! Δ(R1 ⋈ … ⋈ Rk) = Σi  R1' ⋈ … ⋈ R(i-1)' ⋈ ΔRi ⋈ R(i+1) ⋈ … ⋈ Rk
//! ```
//!
//! (telescoping: term `i` is `R1'…Ri'R(i+1)…Rk − R1'…R(i-1)'Ri…Rk`), so every joined tuple is
//! counted exactly once, self-joins included. Term `i` starts from `ΔRi` (after its
//! relation's filter; a term whose delta filters to nothing is skipped) and extends to the
//! other relations in a precomputed order. We only have the new snapshot, so an old state is
//! read as the snapshot's rows (+1) plus the table's deletes (+1) and inserts (−1). Each
//! extension probes an index on a join column when there is one, else hashes a scan. Tuple
//! weights multiply; the projected rows' weights are summed, and the non-zero sums are the
//! result's inserts (positive) and deletes (negative).

use std::ops::Deref;
use std::rc::Rc;

use ahash::AHashMap;
use lightcone_mvcc::{MvccError, ReadTx, Row, TableDelta, TableId, TableView, TxDelta, Value};

use crate::compile::{Query, Step, MAX_RELATIONS};

/// Which state of a relation a join term reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// After the commit: the snapshot.
    New,
    /// Before the commit: snapshot − inserts + deletes.
    Old,
    /// The change itself: inserts − deletes.
    Delta,
}

/// A row of a join tuple: borrowed from the transaction's delta or read from the snapshot.
#[derive(Clone)]
enum RowRef<'a> {
    Borrowed(&'a Row),
    Owned(Rc<Row>),
}

impl Deref for RowRef<'_> {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        match self {
            RowRef::Borrowed(r) => r,
            RowRef::Owned(r) => r,
        }
    }
}

/// A partial join tuple (one slot per relation, inline: no allocation per tuple) and its
/// signed multiplicity.
struct Tuple<'a> {
    rows: [Option<RowRef<'a>>; MAX_RELATIONS],
    weight: i64,
}

impl<'a> Tuple<'a> {
    fn new(rel: usize, row: RowRef<'a>, weight: i64) -> Tuple<'a> {
        let mut rows: [Option<RowRef<'a>>; MAX_RELATIONS] = Default::default();
        // `rel` < MAX_RELATIONS: queries with more relations are refused when compiled.
        if let Some(slot) = rows.get_mut(rel) {
            *slot = Some(row);
        }
        Tuple { rows, weight }
    }

    fn value(&self, rel: usize, col: usize) -> Option<&Value> {
        self.rows.get(rel)?.as_ref()?.get(col)
    }

    fn with(&self, rel: usize, row: RowRef<'a>, weight: i64) -> Tuple<'a> {
        let mut rows = self.rows.clone();
        if let Some(slot) = rows.get_mut(rel) {
            *slot = Some(row);
        }
        Tuple { rows, weight: self.weight * weight }
    }
}

/// The change of a table in `delta`, if any (tables are sorted by id).
pub(crate) fn table_delta(delta: &TxDelta, table: TableId) -> Option<&TableDelta> {
    delta.tables.binary_search_by_key(&table, |t| t.table_id).ok().map(|i| &delta.tables[i])
}

/// The delta part of relation `rel` in `mode` (nothing for `New`), filtered.
fn delta_rows<'a>(q: &Query, rel: usize, mode: Mode, delta: &'a TxDelta) -> Vec<(RowRef<'a>, i64)> {
    let (ins, del) = match mode {
        Mode::New => return Vec::new(),
        Mode::Old => (-1, 1),
        Mode::Delta => (1, -1),
    };
    let Some(td) = table_delta(delta, q.rels[rel].table) else { return Vec::new() };
    let inserts = td.inserts.iter().map(|r| (r, ins));
    let deletes = td.deletes.iter().map(|r| (r, del));
    inserts.chain(deletes).filter(|(r, _)| q.passes(rel, r)).map(|(r, w)| (RowRef::Borrowed(r), w)).collect()
}

/// Whether `row` (for `step.rel`) satisfies every join key against tuple `t`.
fn keys_match(step: &Step, t: &Tuple<'_>, row: &[Value]) -> bool {
    step.keys.iter().all(|&(c, br, bc)| row.get(c).is_some_and(|v| t.value(br, bc) == Some(v)))
}

/// Extends every tuple with each of `rows` that joins with it (hashing `rows` on the first
/// key; a cross product when the step has no key).
fn hash_join<'a>(tuples: &[Tuple<'a>], rows: Vec<(RowRef<'a>, i64)>, step: &Step, out: &mut Vec<Tuple<'a>>) {
    if rows.is_empty() {
        return;
    }
    let Some(&(c0, br, bc)) = step.keys.first() else {
        for t in tuples {
            for (r, w) in &rows {
                out.push(t.with(step.rel, r.clone(), *w));
            }
        }
        return;
    };
    let mut by_key: AHashMap<&Value, Vec<usize>> = AHashMap::new();
    for (i, (r, _)) in rows.iter().enumerate() {
        if let Some(v) = r.get(c0) {
            by_key.entry(v).or_default().push(i);
        }
    }
    for t in tuples {
        let Some(hits) = t.value(br, bc).and_then(|v| by_key.get(v)) else { continue };
        for &i in hits {
            let (r, w) = &rows[i];
            if keys_match(step, t, r) {
                out.push(t.with(step.rel, r.clone(), *w));
            }
        }
    }
}

/// Extends every tuple by relation `step.rel` read in `mode`.
fn extend<'a>(
    q: &Query,
    view: &TableView<'_>,
    delta: &'a TxDelta,
    tuples: Vec<Tuple<'a>>,
    step: &Step,
    mode: Mode,
) -> Result<Vec<Tuple<'a>>, MvccError> {
    let rel = step.rel;
    let mut out = Vec::new();
    if mode != Mode::Delta {
        match (step.index, step.keys.first()) {
            (Some((index, unique)), Some(&(_, br, bc))) => {
                let mut push = |t: &Tuple<'a>, row: Row| {
                    if q.passes(rel, &row) && keys_match(step, t, &row) {
                        out.push(t.with(rel, RowRef::Owned(Rc::new(row)), 1));
                    }
                };
                for t in &tuples {
                    let Some(key) = t.value(br, bc) else { continue };
                    let key = std::slice::from_ref(key);
                    if unique {
                        // One descent instead of a range's two.
                        if let Some(row) = view.unique_lookup(index, key)?.and_then(|rid| view.get(rid)) {
                            push(t, row);
                        }
                    } else {
                        for rid in view.index_seek(index, key)? {
                            if let Some(row) = view.get(rid) {
                                push(t, row);
                            }
                        }
                    }
                }
            }
            _ => {
                let rows: Vec<(RowRef<'a>, i64)> = view
                    .scan()
                    .filter(|(_, r)| q.passes(rel, r))
                    .map(|(_, r)| (RowRef::Owned(Rc::new(r)), 1))
                    .collect();
                hash_join(&tuples, rows, step, &mut out);
            }
        }
    }
    if mode != Mode::New {
        hash_join(&tuples, delta_rows(q, rel, mode, delta), step, &mut out);
    }
    Ok(out)
}

/// Runs the join from `start` (whose tuples are given) through the query's join order for
/// that start, with relation `j` read in `modes[j]`; hands each result's projected row and
/// weight to `emit`.
fn run<'a>(
    q: &Query,
    tx: &impl ReadTx,
    delta: &'a TxDelta,
    start: usize,
    mut tuples: Vec<Tuple<'a>>,
    modes: &[Mode],
    emit: &mut impl FnMut(&[Value], i64),
) -> Result<(), MvccError> {
    for step in &q.plans[start] {
        if tuples.is_empty() {
            return Ok(());
        }
        let view = tx.table(q.rels[step.rel].table)?;
        tuples = extend(q, &view, delta, tuples, step, modes[step.rel])?;
    }
    for t in tuples {
        if q.residual.as_ref().is_none_or(|f| f.eval(&|rel, col| t.value(rel, col))) {
            if let Some(Some(row)) = t.rows.get(q.proj) {
                emit(row, t.weight);
            }
        }
    }
    Ok(())
}

/// The query's change for one commit, `after` being the state right after it: (inserts,
/// deletes) of the projected table, as multisets.
pub(crate) fn query_delta(
    q: &Query,
    after: &impl ReadTx,
    delta: &TxDelta,
) -> Result<(Vec<Row>, Vec<Row>), MvccError> {
    let k = q.rels.len();
    if q.is_single() {
        let rows = delta_rows(q, 0, Mode::Delta, delta);
        let mut ins = Vec::new();
        let mut del = Vec::new();
        for (r, w) in rows {
            if w > 0 { &mut ins } else { &mut del }.push(r.to_vec());
        }
        return Ok((ins, del));
    }
    let mut starts: Vec<Vec<(RowRef<'_>, i64)>> =
        (0..k).map(|i| delta_rows(q, i, Mode::Delta, delta)).collect();
    let changed: Vec<usize> = (0..k).filter(|&i| !starts[i].is_empty()).collect();
    if let [only] = changed[..] {
        if only == q.proj {
            // Only the projected relation changed: every output tuple's projected row is one of
            // its delta rows with that row's sign, and a table's inserts and deletes never share
            // a row (TxDelta cancels those), so nothing can cancel: no netting needed.
            return project_direct(q, after, delta, only, std::mem::take(&mut starts[only]));
        }
    }
    let mut acc: AHashMap<Row, i64> = AHashMap::new();
    let mut modes = vec![Mode::New; k];
    for (i, start) in starts.into_iter().enumerate() {
        if start.is_empty() {
            continue;
        }
        for (j, m) in modes.iter_mut().enumerate() {
            *m = match j.cmp(&i) {
                std::cmp::Ordering::Less => Mode::New,
                std::cmp::Ordering::Equal => Mode::Delta,
                std::cmp::Ordering::Greater => Mode::Old,
            };
        }
        let tuples = start.into_iter().map(|(r, w)| Tuple::new(i, r, w)).collect();
        run(q, after, delta, i, tuples, &modes, &mut |row, w| *acc.entry(row.to_vec()).or_default() += w)?;
    }
    Ok(split(acc))
}

/// [`query_delta`] when only relation `i`, the projected one, changed: each result tuple's
/// projected row is its delta row, emitted with that row's sign (the other relations are
/// unchanged, so their weights are +1).
fn project_direct<'a>(
    q: &Query,
    after: &impl ReadTx,
    delta: &'a TxDelta,
    i: usize,
    start: Vec<(RowRef<'a>, i64)>,
) -> Result<(Vec<Row>, Vec<Row>), MvccError> {
    let mut modes = vec![Mode::New; q.rels.len()];
    for m in modes.iter_mut().skip(i + 1) {
        *m = Mode::Old;
    }
    modes[i] = Mode::Delta;
    let tuples = start.into_iter().map(|(r, w)| Tuple::new(i, r, w)).collect();
    let mut ins = Vec::new();
    let mut del = Vec::new();
    run(q, after, delta, i, tuples, &modes, &mut |row, w| {
        if w > 0 { &mut ins } else { &mut del }.push(row.to_vec())
    })?;
    Ok((ins, del))
}

/// Signed multiplicities → (inserts, deletes), each row repeated by its count.
fn split(acc: AHashMap<Row, i64>) -> (Vec<Row>, Vec<Row>) {
    let mut ins = Vec::new();
    let mut del = Vec::new();
    for (row, n) in acc {
        let list = if n > 0 { &mut ins } else { &mut del };
        for _ in 1..n.unsigned_abs() {
            list.push(row.clone());
        }
        if n != 0 {
            list.push(row);
        }
    }
    (ins, del)
}

/// The query's full result on `tx`, as a multiset of projected rows.
pub(crate) fn query_rows(q: &Query, tx: &impl ReadTx) -> Result<Vec<Row>, MvccError> {
    // Start from a relation that an index narrows down, if any.
    let start = (0..q.rels.len()).find(|&r| matches!(q.eq[r], Some((_, _, Some(_))))).unwrap_or(0);
    let view = tx.table(q.rels[start].table)?;
    let rows: Vec<Row> = match &q.eq[start] {
        Some((_, key, Some(index))) => {
            let mut rows = Vec::new();
            for rid in view.index_seek(*index, std::slice::from_ref(key))? {
                if let Some(r) = view.get(rid) {
                    rows.push(r);
                }
            }
            rows.retain(|r| q.passes(start, r));
            rows
        }
        _ => view.scan().map(|(_, r)| r).filter(|r| q.passes(start, r)).collect(),
    };
    if q.is_single() {
        return Ok(rows);
    }
    let k = q.rels.len();
    let tuples = rows.into_iter().map(|r| Tuple::new(start, RowRef::Owned(Rc::new(r)), 1)).collect();
    let none = TxDelta::default();
    let mut out = Vec::new();
    run(q, tx, &none, start, tuples, &vec![Mode::New; k], &mut |row, _| out.push(row.to_vec()))?;
    Ok(out)
}
