//! The evaluator's correctness guarantee: for random schemas, subscriptions (filters, 2- and
//! 3-way equi-joins, self-joins, any projected table, `:sender`, column-to-column comparisons),
//! row-level security, and
//! random transaction streams committed through `lightcone_mvcc::Database`, every client's
//! initial rows plus all deltas it received equal — after every commit — the query recomputed
//! from scratch by `lightcone_query_planner::execute` on the new snapshot (with the client's
//! RLS views applied by filtering the joined rows here).
//!
//! Cases: `PROPTEST_CASES` (default 256).

use std::collections::BTreeMap;

use lightcone_incremental_eval::{ClientAuth, ClientId, QuerySetId, Registry};
use lightcone_mvcc::{
    ColumnDef, ColumnType, Database, IndexDef, ReadTx, Row, Snapshot, TableDef, TableId, Value, U256,
};
use lightcone_query_planner::{execute, Params};
use proptest::prelude::*;

const COLS: [&str; 4] = ["a", "b", "c", "o"];
const WIDTH: usize = 4;

#[derive(Debug, Clone)]
struct TableSpec {
    /// 0 none, 1 non-unique B+tree, 2 unique.
    index_a: u8,
    index_b: bool,
    index_ca: bool,
    /// Which RLS filters apply (indices into `RLS`).
    rls: Vec<usize>,
}

/// RLS filters as SQL (for `t`) and as the row test the expected result applies.
const RLS: [&str; 3] = ["o = :sender", "a < 2", "b = 1 OR c = 3"];

fn rls_holds(which: usize, row: &[Value], sender: u128) -> bool {
    let n = |i: usize| match &row[i] {
        Value::U32(v) => *v,
        _ => u32::MAX,
    };
    match which {
        0 => row[3] == Value::U256(U256::from_u128(sender)),
        1 => n(0) < 2,
        _ => n(1) == 1 || n(2) == 3,
    }
}

#[derive(Debug, Clone)]
enum Pred {
    Cmp {
        rel: usize,
        col: usize,
        op: usize,
        lit: u32,
    },
    Sender {
        rel: usize,
        eq: bool,
    },
    /// Column-to-column comparison (same relation or two).
    Cols {
        rel: usize,
        col: usize,
        op: usize,
        rel2: usize,
        col2: usize,
    },
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Not(Box<Pred>),
}

const OPS: [&str; 6] = ["=", "<>", "<", "<=", ">", ">="];

impl Pred {
    fn sql(&self) -> String {
        match self {
            Pred::Cmp { rel, col, op, lit } => format!("r{rel}.{} {} {lit}", COLS[*col], OPS[*op]),
            Pred::Sender { rel, eq } => format!("r{rel}.o {} :sender", if *eq { "=" } else { "<>" }),
            Pred::Cols { rel, col, op, rel2, col2 } => {
                format!("r{rel}.{} {} r{rel2}.{}", COLS[*col], OPS[*op], COLS[*col2])
            }
            Pred::And(l, r) => format!("({} AND {})", l.sql(), r.sql()),
            Pred::Or(l, r) => format!("({} OR {})", l.sql(), r.sql()),
            Pred::Not(x) => format!("NOT ({})", x.sql()),
        }
    }
}

#[derive(Debug, Clone)]
struct QuerySpec {
    /// Table of each relation (repeats make self-joins).
    rels: Vec<usize>,
    /// For relation k ≥ 1: (its column, earlier relation, that relation's column).
    on: Vec<(usize, usize, usize)>,
    pred: Option<Pred>,
    proj: usize,
}

impl QuerySpec {
    fn tail_sql(&self) -> String {
        let mut s = format!("FROM t{} AS r0", self.rels[0]);
        for (k, &(c, j, cj)) in self.on.iter().enumerate() {
            let k = k + 1;
            s += &format!(" JOIN t{} AS r{k} ON r{k}.{} = r{j}.{}", self.rels[k], COLS[c], COLS[cj]);
        }
        if let Some(p) = &self.pred {
            s += &format!(" WHERE {}", p.sql());
        }
        s
    }

    fn sql(&self) -> String {
        if self.rels.len() == 1 {
            format!("SELECT * {}", self.tail_sql())
        } else {
            format!("SELECT r{}.* {}", self.proj, self.tail_sql())
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert {
        t: usize,
        vals: [u32; 3],
        owner: u8,
    },
    Delete {
        t: usize,
        k: usize,
    },
    Update {
        t: usize,
        k: usize,
        vals: [u32; 3],
        owner: u8,
    },
    /// Delete a row and insert it back unchanged (cancels in the delta).
    Reinsert {
        t: usize,
        k: usize,
    },
}

#[derive(Debug, Clone)]
enum Action {
    Commit(Vec<Op>),
    Subscribe { client: usize, queries: Vec<QuerySpec> },
    Unsubscribe { pick: usize },
}

fn pred(rels: usize) -> impl Strategy<Value = Pred> {
    let leaf = prop_oneof![
        4 => (0..rels, 0..3usize, 0..6usize, 0..5u32).prop_map(|(rel, col, op, lit)| Pred::Cmp { rel, col, op, lit }),
        1 => (0..rels, any::<bool>()).prop_map(|(rel, eq)| Pred::Sender { rel, eq }),
        1 => (0..rels, 0..3usize, 0..6usize, 0..rels, 0..3usize)
            .prop_map(|(rel, col, op, rel2, col2)| Pred::Cols { rel, col, op, rel2, col2 }),
    ];
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Pred::And(Box::new(l), Box::new(r))),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Pred::Or(Box::new(l), Box::new(r))),
            inner.prop_map(|x| Pred::Not(Box::new(x))),
        ]
    })
}

fn query(tables: usize) -> impl Strategy<Value = QuerySpec> {
    prop_oneof![2 => Just(1usize), 2 => Just(2usize), 1 => Just(3usize)].prop_flat_map(move |n| {
        let on = (1..n).map(|k| (0..3usize, 0..k, 0..3usize)).collect::<Vec<_>>();
        (proptest::collection::vec(0..tables, n), on, proptest::option::weighted(0.8, pred(n)), 0..n)
            .prop_map(|(rels, on, pred, proj)| QuerySpec { rels, on, pred, proj })
    })
}

fn op(tables: usize) -> impl Strategy<Value = Op> {
    let vals = [0..5u32, 0..5u32, 0..5u32];
    prop_oneof![
        4 => (0..tables, vals.clone(), 1..4u8).prop_map(|(t, vals, owner)| Op::Insert { t, vals, owner }),
        2 => (0..tables, any::<usize>()).prop_map(|(t, k)| Op::Delete { t, k }),
        2 => (0..tables, any::<usize>(), vals, 1..4u8).prop_map(|(t, k, vals, owner)| Op::Update { t, k, vals, owner }),
        1 => (0..tables, any::<usize>()).prop_map(|(t, k)| Op::Reinsert { t, k }),
    ]
}

fn table_spec() -> impl Strategy<Value = TableSpec> {
    let rls = prop_oneof![
        2 => Just(vec![]),
        2 => Just(vec![0]),
        1 => Just(vec![1]),
        1 => Just(vec![0, 2]),
    ];
    (0..3u8, any::<bool>(), any::<bool>(), rls).prop_map(|(index_a, index_b, index_ca, rls)| TableSpec {
        index_a,
        index_b,
        index_ca,
        rls,
    })
}

fn scenario() -> impl Strategy<Value = (Vec<TableSpec>, Vec<Action>)> {
    proptest::collection::vec(table_spec(), 2..=3).prop_flat_map(|tables| {
        let n = tables.len();
        let action = prop_oneof![
            6 => proptest::collection::vec(op(n), 1..8).prop_map(Action::Commit),
            2 => (0..4usize, proptest::collection::vec(query(n), 1..4))
                .prop_map(|(client, queries)| Action::Subscribe { client, queries }),
            1 => any::<usize>().prop_map(|pick| Action::Unsubscribe { pick }),
        ];
        (Just(tables), proptest::collection::vec(action, 8..40))
    })
}

/// Client `c`: 0 is the owner (identity 1), 1..=3 are users with identity `c`.
fn auth(c: usize) -> ClientAuth {
    ClientAuth { sender: U256::from_u128(c.max(1) as u128), is_owner: c == 0 }
}

fn create(tables: &[TableSpec]) -> (Database, Vec<TableId>) {
    let db = Database::new();
    let mut tx = db.begin();
    let mut ids = Vec::new();
    for (i, spec) in tables.iter().enumerate() {
        let mut def = TableDef::new(
            format!("t{i}"),
            vec![
                ColumnDef::new("a", ColumnType::U32),
                ColumnDef::new("b", ColumnType::U32),
                ColumnDef::new("c", ColumnType::U32),
                ColumnDef::new("o", ColumnType::U256),
            ],
        );
        match spec.index_a {
            1 => def = def.with_index(IndexDef::btree([0], false)),
            2 => def = def.with_index(IndexDef::btree([0], true)),
            _ => {}
        }
        if spec.index_b {
            def = def.with_index(IndexDef::btree([1], false));
        }
        if spec.index_ca {
            def = def.with_index(IndexDef::btree([2, 0], false));
        }
        ids.push(tx.create_table(def).unwrap());
    }
    tx.commit();
    (db, ids)
}

fn row(vals: [u32; 3], owner: u8) -> Row {
    vec![
        Value::U32(vals[0]),
        Value::U32(vals[1]),
        Value::U32(vals[2]),
        Value::U256(U256::from_u128(owner as u128)),
    ]
}

type Multiset = BTreeMap<(TableId, Row), i64>;

/// The query set's rows recomputed from scratch: `SELECT *` over the join via the planner,
/// then each relation's RLS view (non-owners), then the projected relation's slice.
fn expected(
    snap: &Snapshot,
    tables: &[TableSpec],
    ids: &[TableId],
    client: usize,
    queries: &[QuerySpec],
) -> Multiset {
    let mut out = Multiset::new();
    let auth = auth(client);
    let sender = auth.sender.lo;
    let mut seen = Vec::new();
    for q in queries {
        let sql = q.sql();
        if seen.contains(&sql) {
            continue; // a set counts the same query once
        }
        seen.push(sql);
        let all = format!("SELECT * {}", q.tail_sql());
        let res = execute(snap, &all, &Params { sender: Some(auth.sender) }).unwrap();
        for r in res.rows {
            let visible = auth.is_owner
                || q.rels.iter().enumerate().all(|(k, &t)| {
                    let slice = &r[k * WIDTH..(k + 1) * WIDTH];
                    tables[t].rls.is_empty() || tables[t].rls.iter().any(|&f| rls_holds(f, slice, sender))
                });
            if visible {
                let p = q.proj;
                let key = (ids[q.rels[p]], r[p * WIDTH..(p + 1) * WIDTH].to_vec());
                *out.entry(key).or_default() += 1;
            }
        }
    }
    out
}

fn apply(tx: &mut lightcone_mvcc::WriteTx<'_>, ids: &[TableId], op: &Op) {
    let nth = |tx: &lightcone_mvcc::WriteTx<'_>, t: TableId, k: usize| {
        let view = tx.table(t).unwrap();
        let n = view.row_count() as usize;
        if n == 0 {
            None
        } else {
            view.row_ids().nth(k % n)
        }
    };
    match *op {
        Op::Insert { t, vals, owner } => {
            let _ = tx.insert(ids[t], row(vals, owner)); // unique violations are fine
        }
        Op::Delete { t, k } => {
            if let Some(rid) = nth(tx, ids[t], k) {
                tx.delete(ids[t], rid).unwrap();
            }
        }
        Op::Update { t, k, vals, owner } => {
            if let Some(rid) = nth(tx, ids[t], k) {
                let old = tx.delete(ids[t], rid).unwrap().unwrap();
                if tx.insert(ids[t], row(vals, owner)).is_err() {
                    tx.insert(ids[t], old).unwrap();
                }
            }
        }
        Op::Reinsert { t, k } => {
            if let Some(rid) = nth(tx, ids[t], k) {
                let old = tx.delete(ids[t], rid).unwrap().unwrap();
                tx.insert(ids[t], old).unwrap();
            }
        }
    }
}

struct Sub {
    client: usize,
    query_set: QuerySetId,
    queries: Vec<QuerySpec>,
    model: Multiset,
}

fn add(model: &mut Multiset, table: TableId, rows: &[Row], sign: i64) {
    for r in rows {
        let e = model.entry((table, r.clone())).or_default();
        *e += sign;
        if *e == 0 {
            model.remove(&(table, r.clone()));
        }
    }
}

fn run(tables: Vec<TableSpec>, actions: Vec<Action>) -> Result<(), TestCaseError> {
    let (db, ids) = create(&tables);
    let mut reg = Registry::new();
    for (t, spec) in tables.iter().enumerate() {
        for &f in &spec.rls {
            reg.add_rls_filter(&db.snapshot(), &format!("SELECT * FROM t{t} WHERE {}", RLS[f])).unwrap();
        }
    }
    let mut subs: Vec<Sub> = Vec::new();
    let mut next_qs: QuerySetId = 0;
    for action in &actions {
        match action {
            Action::Subscribe { client, queries } => {
                let sqls: Vec<String> = queries.iter().map(QuerySpec::sql).collect();
                let refs: Vec<&str> = sqls.iter().map(String::as_str).collect();
                next_qs += 1;
                let init =
                    reg.subscribe(&db.snapshot(), ClientId(*client as u64), next_qs, &refs, &auth(*client));
                let init = match init {
                    Ok(i) => i,
                    Err(e) => return Err(TestCaseError::fail(format!("subscribe {sqls:?}: {e}"))),
                };
                let mut model = Multiset::new();
                for t in &init {
                    add(&mut model, t.table_id, &t.rows, 1);
                }
                subs.push(Sub { client: *client, query_set: next_qs, queries: queries.clone(), model });
            }
            Action::Unsubscribe { pick } => {
                if subs.is_empty() {
                    continue;
                }
                let s = subs.remove(pick % subs.len());
                let dropped =
                    reg.unsubscribe(Some(&db.snapshot()), ClientId(s.client as u64), s.query_set).unwrap();
                let mut m = Multiset::new();
                for t in &dropped {
                    add(&mut m, t.table_id, &t.rows, 1);
                }
                prop_assert_eq!(m, s.model, "dropped rows = the client's rows");
            }
            Action::Commit(ops) => {
                let mut tx = db.begin();
                for op in ops {
                    apply(&mut tx, &ids, op);
                }
                let delta = tx.commit();
                let snap = db.snapshot();
                let up = reg.eval(&snap, &delta);
                prop_assert!(up.failures.is_empty(), "{:?}", up.failures);
                for c in up.clients() {
                    for (qs, deltas) in c.query_sets() {
                        let s = subs
                            .iter_mut()
                            .find(|s| s.client as u64 == c.client.0 && s.query_set == qs)
                            .ok_or_else(|| TestCaseError::fail("update for an unknown subscription"))?;
                        for d in deltas {
                            prop_assert!(!d.inserts.is_empty() || !d.deletes.is_empty(), "empty delta sent");
                            add(&mut s.model, d.table_id, &d.deletes, -1);
                            add(&mut s.model, d.table_id, &d.inserts, 1);
                        }
                    }
                }
                for s in &subs {
                    prop_assert!(s.model.values().all(|&n| n > 0), "negative count: {:?}", s.model);
                    let want = expected(&snap, &tables, &ids, s.client, &s.queries);
                    prop_assert_eq!(
                        &s.model,
                        &want,
                        "client {} queries {:?}",
                        s.client,
                        s.queries.iter().map(QuerySpec::sql).collect::<Vec<_>>()
                    );
                }
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    // Proves initial rows + deltas == recomputation after every commit, for every client.
    #[test]
    fn deltas_match_recomputation((tables, actions) in scenario()) {
        run(tables, actions)?;
    }
}
