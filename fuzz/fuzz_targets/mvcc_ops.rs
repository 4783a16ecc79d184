//! Model-based fuzzing of the transactional store (redb's shape): random transactions of
//! inserts, deletes, updates and range reads, each committed or rolled back, run against the
//! engine and a `BTreeMap` reference at once; every read is compared, snapshots included.
//!
//! Run: `cargo +nightly fuzz run mvcc_ops` from `fuzz/`.
#![no_main]

use std::collections::BTreeMap;
use std::ops::Bound;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use lightcone_mvcc::{ColumnDef, ColumnType, Database, MvccError, ReadTx, TableDef, Value};

#[derive(Arbitrary, Debug)]
enum Op {
    Insert { key: u16, text: Vec<u8> },
    Delete { key: u16 },
    Update { key: u16, text: Vec<u8> },
    Range { lo: u16, hi: u16, reverse: bool },
}

#[derive(Arbitrary, Debug)]
struct Tx {
    ops: Vec<Op>,
    commit: bool,
    snapshot_before: bool,
}

fn row(key: u16, text: &[u8]) -> Vec<Value> {
    vec![Value::U16(key), Value::Bytes(text.into())]
}

fuzz_target!(|txs: Vec<Tx>| {
    let db = Database::new();
    let mut tx = db.begin();
    let def = TableDef::new("t", vec![ColumnDef::new("k", ColumnType::U16), ColumnDef::new("v", ColumnType::Bytes)])
        .with_primary_key(0);
    let table = tx.create_table(def).unwrap();
    let pk = tx.index_id("t_k_idx_btree").unwrap();
    tx.commit();
    let mut committed: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
    let mut snapshots = Vec::new();
    for t in txs {
        if t.snapshot_before {
            snapshots.push((db.snapshot(), committed.clone()));
        }
        let mut model = committed.clone();
        let mut tx = db.begin();
        for op in t.ops {
            match op {
                Op::Insert { key, text } => {
                    let r = tx.insert(table, row(key, &text));
                    if model.contains_key(&key) {
                        assert!(matches!(r, Err(MvccError::UniqueViolation { .. })));
                    } else {
                        r.unwrap();
                        model.insert(key, text);
                    }
                }
                Op::Delete { key } => {
                    let got = tx.delete_by_unique(pk, &[Value::U16(key)]).unwrap();
                    assert_eq!(got, model.remove(&key).map(|v| row(key, &v)));
                }
                Op::Update { key, text } => {
                    let r = tx.update_by_unique(pk, row(key, &text));
                    if model.contains_key(&key) {
                        r.unwrap();
                        model.insert(key, text);
                    } else {
                        assert!(matches!(r, Err(MvccError::NoSuchRow { .. })));
                    }
                }
                Op::Range { lo, hi, reverse } => {
                    let (lo, hi) = (lo.min(hi), lo.max(hi));
                    let view = tx.table(table).unwrap();
                    let (l, h) = ([Value::U16(lo)], [Value::U16(hi)]);
                    let scan = view.index_range(pk, Bound::Included(&l), Bound::Excluded(&h)).unwrap();
                    let mut want: Vec<_> = model.range(lo..hi).map(|(k, v)| row(*k, v)).collect();
                    let got: Vec<_> = if reverse {
                        want.reverse();
                        scan.rev().map(|r| view.get(r).unwrap()).collect()
                    } else {
                        scan.map(|r| view.get(r).unwrap()).collect()
                    };
                    assert_eq!(got, want);
                }
            }
        }
        if t.commit {
            tx.commit();
            committed = model;
        } else {
            tx.rollback();
        }
    }
    for (snapshot, at) in snapshots {
        let rows: Vec<_> = snapshot.table(table).unwrap().scan().map(|(_, r)| r).collect::<Vec<_>>();
        let mut rows = rows;
        rows.sort();
        let want: Vec<_> = at.iter().map(|(k, v)| row(*k, v)).collect();
        assert_eq!(rows, want);
    }
});
