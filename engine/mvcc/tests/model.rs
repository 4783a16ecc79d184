//! State-machine test of the transactional table store against a simple reference model:
//! random inserts, deletes, updates, commits, rollbacks and snapshots taken mid-stream.

use std::collections::BTreeMap;
use std::ops::Bound;

use lightcone_mvcc::{
    ColumnDef, ColumnType, Database, IndexDef, MvccError, ReadTx, Row, Snapshot, TableDef, TableId, TxDelta,
    Value,
};
use proptest::prelude::*;

/// The model: id → (group, text), plus the auto-increment counter.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    rows: BTreeMap<u32, (i32, String)>,
    seq_next: u32,
}

impl Model {
    fn row(id: u32, group: i32, text: &str) -> Row {
        vec![Value::U32(id), Value::I32(group), Value::String(text.into())]
    }
    fn all_rows(&self) -> Vec<Row> {
        self.rows.iter().map(|(id, (g, t))| Model::row(*id, *g, t)).collect()
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// id 0 asks the sequence for an id.
    Insert {
        id: u32,
        group: i32,
        text: String,
    },
    Delete {
        id: u32,
    },
    Update {
        id: u32,
        group: i32,
        text: String,
    },
    Commit,
    Rollback,
    Snapshot,
    Range {
        lo: Bound<u32>,
        hi: Bound<u32>,
        reverse: bool,
    },
    SeekGroup {
        group: i32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u32..24;
    let group = -3i32..3;
    let text = prop_oneof![Just(String::new()), "[a-c]{1,3}", "[x]{600,700}"];
    let bound = prop_oneof![
        Just(Bound::Unbounded),
        (0u32..24).prop_map(Bound::Included),
        (0u32..24).prop_map(Bound::Excluded)
    ];
    prop_oneof![
        6 => (id.clone(), group.clone(), text.clone()).prop_map(|(id, group, text)| Op::Insert { id, group, text }),
        3 => id.clone().prop_map(|id| Op::Delete { id }),
        3 => (id, group.clone(), text).prop_map(|(id, group, text)| Op::Update { id, group, text }),
        2 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        1 => Just(Op::Snapshot),
        2 => (bound.clone(), bound, any::<bool>()).prop_map(|(lo, hi, reverse)| Op::Range { lo, hi, reverse }),
        2 => group.prop_map(|group| Op::SeekGroup { group }),
    ]
}

fn table_def() -> TableDef {
    TableDef::new(
        "item",
        vec![
            ColumnDef::new("id", ColumnType::U32),
            ColumnDef::new("group", ColumnType::I32),
            ColumnDef::new("text", ColumnType::String),
        ],
    )
    .with_primary_key(0)
    .with_auto_inc(0)
    .with_index(IndexDef::btree(vec![1], false))
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort();
    rows
}

fn table_rows(view: &impl ReadTx, table: TableId) -> Vec<Row> {
    sorted(view.table(table).unwrap().scan().map(|(_, r)| r).collect())
}

/// The net change between two committed models, as a delta would show it.
fn expected_delta(before: &Model, after: &Model) -> (Vec<Row>, Vec<Row>) {
    let b = before.all_rows();
    let a = after.all_rows();
    let inserts = a.iter().filter(|r| !b.contains(r)).cloned().collect();
    let deletes = b.iter().filter(|r| !a.contains(r)).cloned().collect();
    (sorted(inserts), sorted(deletes))
}

fn check_delta(delta: &TxDelta, table: TableId, before: &Model, after: &Model) -> Result<(), TestCaseError> {
    let (inserts, deletes) = expected_delta(before, after);
    let got = delta.tables.iter().find(|t| t.table_id == table);
    let (gi, gd) = got.map_or((vec![], vec![]), |t| (sorted(t.inserts.clone()), sorted(t.deletes.clone())));
    prop_assert_eq!(gi, inserts, "delta inserts");
    prop_assert_eq!(gd, deletes, "delta deletes");
    Ok(())
}

fn normalized(mut delta: TxDelta) -> TxDelta {
    for t in &mut delta.tables {
        t.inserts.sort();
        t.deletes.sort();
    }
    delta
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let db = Database::new();
    let mut tx = db.begin();
    let table = tx.create_table(table_def()).unwrap();
    let pk = tx.table(table).unwrap().schema().index_ids[1];
    let by_group = tx.table(table).unwrap().schema().index_ids[0];
    let mut deltas = vec![tx.commit()];
    let mut committed = Model { seq_next: 1, ..Model::default() };
    let mut model = committed.clone();
    let mut snapshots: Vec<(Snapshot, Model)> = Vec::new();
    let mut tx = db.begin();
    for op in ops {
        match op {
            Op::Insert { id, group, text } => {
                let result = tx.insert(table, Model::row(id, group, &text));
                let effective = if id == 0 { model.seq_next } else { id };
                if let std::collections::btree_map::Entry::Vacant(slot) = model.rows.entry(effective) {
                    let (rid, row) = result.unwrap();
                    prop_assert_eq!(&row, &Model::row(effective, group, &text));
                    prop_assert_eq!(tx.table(table).unwrap().get(rid), Some(row));
                    slot.insert((group, text));
                    if id == 0 {
                        model.seq_next += 1;
                    }
                } else {
                    prop_assert!(matches!(result, Err(MvccError::UniqueViolation { .. })), "{result:?}");
                }
            }
            Op::Delete { id } => {
                let result = tx.delete_by_unique(pk, &[Value::U32(id)]).unwrap();
                let expected = model.rows.remove(&id).map(|(g, t)| Model::row(id, g, &t));
                prop_assert_eq!(result, expected);
            }
            Op::Update { id, group, text } => {
                let result = tx.update_by_unique(pk, Model::row(id, group, &text));
                if id != 0 && model.rows.contains_key(&id) {
                    prop_assert_eq!(result.unwrap().1, Model::row(id, group, &text));
                    model.rows.insert(id, (group, text));
                } else {
                    prop_assert!(matches!(result, Err(MvccError::NoSuchRow { .. })), "{result:?}");
                }
            }
            Op::Commit => {
                let delta = tx.commit();
                check_delta(&delta, table, &committed, &model)?;
                deltas.push(delta);
                committed = model.clone();
                tx = db.begin();
            }
            Op::Rollback => {
                tx.rollback();
                model = committed.clone();
                tx = db.begin();
                prop_assert_eq!(table_rows(&tx, table), committed.all_rows());
            }
            Op::Snapshot => match db.try_snapshot() {
                // The open transaction works on a copy: the published version is available.
                Some(snapshot) => snapshots.push((snapshot, committed.clone())),
                // The open transaction borrowed the latest version: commit, then snapshot.
                None => {
                    let delta = tx.commit();
                    check_delta(&delta, table, &committed, &model)?;
                    deltas.push(delta);
                    committed = model.clone();
                    snapshots.push((db.snapshot(), committed.clone()));
                    tx = db.begin();
                }
            },
            Op::Range { lo, hi, reverse } => {
                let lo_v = lo.map(|v| [Value::U32(v)]);
                let hi_v = hi.map(|v| [Value::U32(v)]);
                let view = tx.table(table).unwrap();
                let scan = view.index_range(pk, lo_v.as_ref().map(|v| &v[..]), hi_v.as_ref().map(|v| &v[..]));
                let valid = match (lo, hi) {
                    (Bound::Excluded(a), Bound::Excluded(b)) => a < b,
                    (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                        a <= b
                    }
                    _ => true,
                };
                let scan = scan.unwrap();
                if !valid {
                    // An empty or inverted range yields nothing (the model's BTreeMap would panic).
                    prop_assert_eq!(scan.count(), 0);
                    continue;
                }
                let got: Vec<Row> = if reverse {
                    scan.rev().map(|r| view.get(r).unwrap()).collect()
                } else {
                    scan.map(|r| view.get(r).unwrap()).collect()
                };
                let mut expected: Vec<Row> =
                    model.rows.range((lo, hi)).map(|(id, (g, t))| Model::row(*id, *g, t)).collect();
                if reverse {
                    expected.reverse();
                }
                prop_assert_eq!(got, expected);
            }
            Op::SeekGroup { group } => {
                let view = tx.table(table).unwrap();
                let got = sorted(
                    view.index_seek(by_group, &[Value::I32(group)])
                        .unwrap()
                        .map(|r| view.get(r).unwrap())
                        .collect(),
                );
                let expected: Vec<Row> = model
                    .rows
                    .iter()
                    .filter(|(_, (g, _))| *g == group)
                    .map(|(id, (g, t))| Model::row(*id, *g, t))
                    .collect();
                prop_assert_eq!(got, expected);
            }
        }
        prop_assert_eq!(tx.table(table).unwrap().row_count(), model.rows.len() as u64);
    }
    prop_assert_eq!(table_rows(&tx, table), model.all_rows());
    drop(tx);
    // Replaying every commit's delta into a fresh database rebuilds the same state, offsets
    // and sequence counters (what the commit log relies on).
    let replica = Database::new();
    for delta in deltas.iter().filter(|d| !d.is_empty()) {
        let mut rtx = replica.begin();
        rtx.apply_delta(delta).unwrap();
        let replayed = rtx.commit();
        // Row ids (and so the order of rows) may differ in the replica; contents may not.
        prop_assert_eq!(normalized(replayed), normalized(delta.clone()));
    }
    let (a, b) = (db.snapshot(), replica.snapshot());
    prop_assert_eq!(table_rows(&b, table), table_rows(&a, table));
    prop_assert_eq!(b.tx_offset(), a.tx_offset());
    prop_assert_eq!(b.table(table).unwrap().sequence_next(), a.table(table).unwrap().sequence_next());
    // Every snapshot still sees exactly the version it was taken at.
    for (snapshot, at) in &snapshots {
        prop_assert_eq!(table_rows(snapshot, table), at.all_rows());
        let view = snapshot.table(table).unwrap();
        let via_index: Vec<Row> = view
            .index_range(pk, Bound::Unbounded, Bound::Unbounded)
            .unwrap()
            .map(|r| view.get(r).unwrap())
            .collect();
        prop_assert_eq!(via_index, at.all_rows());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256), ..ProptestConfig::default() })]

    // Proves transactions, rollback, snapshots, indexes and deltas agree with the model.
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
        run(ops)?;
    }
}

// Proves the same state machine over a long deterministic stream (deep pages, many commits).
#[test]
fn long_stream_matches_model() {
    let mut ops = Vec::new();
    let mut x: u64 = 12345;
    for _ in 0..5000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let id = ((x >> 33) % 24) as u32;
        let group = ((x >> 20) % 5) as i32 - 2;
        ops.push(match (x >> 40) % 10 {
            0..=3 => Op::Insert { id, group, text: "abc".repeat((x % 5) as usize) },
            4 | 5 => Op::Delete { id },
            6 => Op::Update { id, group, text: String::new() },
            7 => Op::Commit,
            8 => Op::Snapshot,
            _ => Op::Rollback,
        });
    }
    run(ops).unwrap();
}
