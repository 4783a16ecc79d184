//! State-machine test of the catalog against a reference model: random creates, drops (names
//! reused), inserts, commits and rollbacks. After every commit or rollback the database must
//! equal the model; at the end, replaying every delta into a fresh database and restoring from
//! table images must both give the same tables, rows and next ids.

use std::collections::{BTreeMap, BTreeSet};

use lightcone_mvcc::{
    ColumnDef, ColumnType, Database, MvccError, ReadTx, Restorer, TableDef, TxDelta, Value,
};
use proptest::prelude::*;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// Table name → the keys of its rows.
type Model = BTreeMap<String, BTreeSet<u32>>;

#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Drop(usize),
    Insert(usize, u32),
    Commit,
    Rollback,
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    prop_oneof![
        2 => name.clone().prop_map(Op::Create),
        2 => name.clone().prop_map(Op::Drop),
        4 => (name, 0u32..6).prop_map(|(n, k)| Op::Insert(n, k)),
        2 => Just(Op::Commit),
        1 => Just(Op::Rollback),
    ]
}

fn def(name: &str) -> TableDef {
    TableDef::new(name, vec![ColumnDef::new("k", ColumnType::U32), ColumnDef::new("v", ColumnType::I64)])
        .with_primary_key(0)
}

/// What the database holds, in the model's shape.
fn state_of(view: &impl ReadTx) -> Model {
    let mut state = Model::new();
    for id in view.table_ids() {
        let table = view.table(id).unwrap();
        let keys = table
            .scan()
            .map(|(_, row)| match row[0] {
                Value::U32(k) => k,
                ref other => panic!("key column holds {other:?}"),
            })
            .collect();
        state.insert(table.schema().name().to_string(), keys);
    }
    state
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let db = Database::new();
    let mut deltas: Vec<TxDelta> = Vec::new();
    let mut committed = Model::new();
    let mut model = committed.clone();
    let mut created_here: BTreeSet<String> = BTreeSet::new();
    let mut tx = db.begin();
    for op in ops {
        match op {
            Op::Create(n) => {
                let name = NAMES[n];
                let result = tx.create_table(def(name));
                if model.contains_key(name) {
                    prop_assert!(matches!(result, Err(MvccError::TableExists(_))), "{result:?}");
                } else {
                    prop_assert!(result.is_ok(), "{result:?}");
                    model.insert(name.to_string(), BTreeSet::new());
                    created_here.insert(name.to_string());
                }
            }
            Op::Drop(n) => {
                let name = NAMES[n];
                match tx.table_id(name) {
                    Err(_) => prop_assert!(!model.contains_key(name)),
                    Ok(id) => {
                        let result = tx.drop_table(id);
                        if created_here.contains(name) {
                            prop_assert!(
                                matches!(result, Err(MvccError::InvalidSchema { .. })),
                                "{result:?}"
                            );
                        } else {
                            prop_assert!(result.is_ok(), "{result:?}");
                            model.remove(name);
                        }
                    }
                }
            }
            Op::Insert(n, key) => {
                let name = NAMES[n];
                let Ok(id) = tx.table_id(name) else {
                    prop_assert!(!model.contains_key(name));
                    continue;
                };
                let result = tx.insert(id, vec![Value::U32(key), Value::I64(key as i64)]);
                // Invariant of the model: a table the transaction can name is in the model.
                let keys = model.get_mut(name).expect("model has the table");
                if keys.insert(key) {
                    prop_assert!(result.is_ok(), "{result:?}");
                } else {
                    prop_assert!(matches!(result, Err(MvccError::UniqueViolation { .. })), "{result:?}");
                }
            }
            Op::Commit => {
                let delta = tx.commit();
                if !delta.is_empty() {
                    deltas.push(delta);
                }
                committed = model.clone();
                created_here.clear();
                prop_assert_eq!(state_of(&db.snapshot()), committed.clone());
                tx = db.begin();
            }
            Op::Rollback => {
                tx.rollback();
                model = committed.clone();
                created_here.clear();
                prop_assert_eq!(state_of(&db.snapshot()), committed.clone());
                tx = db.begin();
            }
        }
        prop_assert_eq!(state_of(&tx), model.clone(), "the open transaction reads its own changes");
    }
    drop(tx);
    let original = db.snapshot();
    prop_assert_eq!(state_of(&original), committed.clone());

    // Replay: the same tables under the same ids, and the same ids for what comes next.
    let replica = Database::new();
    for delta in &deltas {
        let mut rtx = replica.begin();
        rtx.apply_delta(delta).map_err(|e| TestCaseError::fail(format!("replay: {e}")))?;
        rtx.commit_replayed(delta.tx_offset).map_err(|e| TestCaseError::fail(format!("replay: {e}")))?;
    }
    let replayed = replica.snapshot();
    prop_assert_eq!(state_of(&replayed), committed.clone());
    prop_assert_eq!(replayed.table_ids(), original.table_ids());
    prop_assert_eq!(replayed.next_ids(), original.next_ids());

    // Restore from images: the same, once the next ids are reserved.
    let mut restorer = Restorer::new(original.tx_offset());
    for id in original.table_ids() {
        let view = original.table(id).unwrap();
        let mut table = restorer.begin_table(view.schema().clone(), view.sequence_next().to_vec()).unwrap();
        for (_, row) in view.scan() {
            table.push(row).unwrap();
        }
        table.finish().unwrap();
    }
    let (next_table, next_index) = original.next_ids();
    restorer.reserve_ids(next_table, next_index).unwrap();
    let restored = restorer.finish().snapshot();
    prop_assert_eq!(state_of(&restored), committed);
    prop_assert_eq!(restored.table_ids(), original.table_ids());
    prop_assert_eq!(restored.next_ids(), original.next_ids());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    // Proves creates, drops (with names reused), inserts, commits and rollbacks keep the
    // database equal to the model, and that replay and restore rebuild it with the same ids.
    #[test]
    fn catalog_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops)?;
    }
}
