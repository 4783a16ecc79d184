//! The public API's error kinds and documented edge cases, one test per behaviour.

use std::ops::Bound;

use lightcone_mvcc::{
    ColumnDef, ColumnType, Database, IndexAlgorithm, IndexDef, MvccError, ReadTx, SequenceDef, TableDef,
    TableId, Value, MAX_INDEX_KEY_BYTES, MAX_ROW_BYTES,
};

fn people(tx: &mut lightcone_mvcc::WriteTx<'_>) -> TableId {
    let def = TableDef::new(
        "person",
        vec![
            ColumnDef::new("id", ColumnType::U64),
            ColumnDef::new("email", ColumnType::String),
            ColumnDef::new("age", ColumnType::U8),
        ],
    )
    .with_primary_key(0)
    .with_auto_inc(0)
    .with_index(IndexDef::btree(vec![1], true))
    .with_index(IndexDef {
        name: "by_age".into(),
        columns: vec![2],
        unique: false,
        algorithm: IndexAlgorithm::Hash,
    });
    tx.create_table(def).unwrap()
}

fn person(id: u64, email: &str, age: u8) -> Vec<Value> {
    vec![Value::U64(id), Value::String(email.into()), Value::U8(age)]
}

// Proves generated index names follow SpacetimeDB's `{table}_{cols}_idx_{algo}` convention
// and the primary key gets its own unique index.
#[test]
fn index_names_and_primary_key_index() {
    let db = Database::new();
    let mut tx = db.begin();
    let t = people(&mut tx);
    assert!(tx.index_id("person_email_idx_btree").is_some());
    assert!(tx.index_id("person_id_idx_btree").is_some());
    assert!(tx.index_id("by_age").is_some());
    assert_eq!(tx.index_table(tx.index_id("by_age").unwrap()).unwrap(), t);
    assert_eq!(tx.table_id("person").unwrap(), t);
}

// Proves unknown names and ids give typed errors.
#[test]
fn unknown_table_and_index() {
    let db = Database::new();
    let mut tx = db.begin();
    assert_eq!(tx.table(7).err(), Some(MvccError::NoSuchTable(7)));
    assert_eq!(tx.table_id("nope"), Err(MvccError::NoSuchTableName("nope".into())));
    assert_eq!(tx.insert(3, vec![]).err(), Some(MvccError::NoSuchTable(3)));
    assert_eq!(tx.delete_by_unique(99, &[]).err(), Some(MvccError::NoSuchIndex(99)));
    let t = people(&mut tx);
    let view = tx.table(t).unwrap();
    assert_eq!(view.index_seek(1234, &[]).err(), Some(MvccError::NoSuchIndex(1234)));
}

// Proves invalid table definitions are refused with a reason and create nothing.
#[test]
fn invalid_table_definitions() {
    let db = Database::new();
    let mut tx = db.begin();
    people(&mut tx);
    let cols = || vec![ColumnDef::new("a", ColumnType::U32), ColumnDef::new("s", ColumnType::String)];
    let bad = [
        TableDef::new("", cols()),
        TableDef::new("x", cols()).with_primary_key(5),
        TableDef::new("x", cols()).with_auto_inc(1),
        TableDef::new("x", vec![ColumnDef::new("a", ColumnType::U32), ColumnDef::new("a", ColumnType::U8)]),
        TableDef::new("x", cols()).with_index(IndexDef::btree(vec![9], false)),
        TableDef::new("x", cols()).with_index(IndexDef::btree(vec![], false)),
        TableDef::new("x", (0..300).map(|i| ColumnDef::new(format!("w{i}"), ColumnType::U256)).collect()),
        // A fixed-width key wider than the B+tree accepts.
        TableDef::new("x", vec![ColumnDef::new("w", ColumnType::U256)])
            .with_index(IndexDef::btree(vec![0; 200], false)),
        (0..300).fold(TableDef::new("x", cols()), |d, _| d.with_index(IndexDef::btree(vec![0], false))),
    ];
    for def in bad {
        let err = tx.create_table(def.clone()).unwrap_err();
        assert!(matches!(err, MvccError::InvalidSchema { .. }), "{def:?} gave {err:?}");
    }
    assert_eq!(
        tx.create_table(TableDef::new("person", cols())).unwrap_err(),
        MvccError::TableExists("person".into())
    );
    let dup_index = TableDef::new("x", cols()).with_index(IndexDef {
        name: "by_age".into(),
        columns: vec![0],
        unique: false,
        algorithm: IndexAlgorithm::BTree,
    });
    assert_eq!(tx.create_table(dup_index).unwrap_err(), MvccError::IndexExists("by_age".into()));
    assert_eq!(tx.table_ids().len(), 1);
}

// Proves wrong arity, wrong types and oversized rows are refused and leave the tx usable.
#[test]
fn bad_rows_are_refused() {
    let db = Database::new();
    let mut tx = db.begin();
    let t = people(&mut tx);
    assert!(matches!(
        tx.insert(t, vec![Value::U64(1)]),
        Err(MvccError::WrongArity { expected: 3, got: 1, .. })
    ));
    let err = tx.insert(t, vec![Value::U64(1), Value::U32(5), Value::U8(1)]).unwrap_err();
    assert_eq!(
        err,
        MvccError::TypeMismatch {
            table: "person".into(),
            column: "email".into(),
            expected: ColumnType::String,
            got: ColumnType::U32
        }
    );
    let big = "x".repeat(MAX_ROW_BYTES);
    assert!(matches!(tx.insert(t, person(1, &big, 1)), Err(MvccError::ValueTooLarge { .. })));
    assert_eq!(tx.table(t).unwrap().row_count(), 0);
    tx.insert(t, person(0, "ok@x", 1)).unwrap();
    assert_eq!(tx.table(t).unwrap().row_count(), 1);
}

// Proves a unique violation names the index and key and changes nothing — not even the sequence.
#[test]
fn unique_violation_changes_nothing() {
    let db = Database::new();
    let mut tx = db.begin();
    let t = people(&mut tx);
    tx.insert(t, person(0, "a@x", 30)).unwrap();
    let err = tx.insert(t, person(0, "a@x", 31)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "duplicate key (\"a@x\") in unique index `person_email_idx_btree` of table `person`"
    );
    let (_, row) = tx.insert(t, person(0, "b@x", 31)).unwrap();
    assert_eq!(row[0], Value::U64(2), "the failed insert must not consume a sequence value");
    let by_age = tx.index_id("by_age").unwrap();
    assert_eq!(tx.table(t).unwrap().index_len(by_age).unwrap(), 2);
}

// Proves update-by-unique errors: not unique, missing row, and a conflict on another unique index.
#[test]
fn update_errors() {
    let db = Database::new();
    let mut tx = db.begin();
    let t = people(&mut tx);
    let pk = tx.index_id("person_id_idx_btree").unwrap();
    tx.insert(t, person(0, "a@x", 1)).unwrap();
    tx.insert(t, person(0, "b@x", 2)).unwrap();
    let by_age = tx.index_id("by_age").unwrap();
    assert!(matches!(
        tx.update_by_unique(by_age, person(1, "a@x", 1)),
        Err(MvccError::IndexNotUnique { .. })
    ));
    assert!(matches!(tx.update_by_unique(pk, person(9, "z@x", 1)), Err(MvccError::NoSuchRow { .. })));
    assert!(matches!(tx.update_by_unique(pk, person(1, "b@x", 1)), Err(MvccError::UniqueViolation { .. })));
    let rows: Vec<_> = tx.table(t).unwrap().scan().map(|(_, r)| r).collect();
    assert_eq!(rows, vec![person(1, "a@x", 1), person(2, "b@x", 2)]);
    // Updating a row to keep its own unique values is fine.
    tx.update_by_unique(pk, person(1, "a@x", 5)).unwrap();
    assert_eq!(tx.table(t).unwrap().index_seek(by_age, &[Value::U8(5)]).unwrap().count(), 1);
}

// Proves hash indexes serve point lookups but refuse ranges and partial keys; bad keys are typed errors.
#[test]
fn index_access_errors() {
    let db = Database::new();
    let mut tx = db.begin();
    let t = people(&mut tx);
    tx.insert(t, person(0, "a@x", 7)).unwrap();
    let by_age = tx.index_id("by_age").unwrap();
    let pk = tx.index_id("person_id_idx_btree").unwrap();
    let view = tx.table(t).unwrap();
    assert_eq!(view.index_seek(by_age, &[Value::U8(7)]).unwrap().count(), 1);
    assert!(matches!(
        view.index_range(by_age, Bound::Unbounded, Bound::Unbounded),
        Err(MvccError::WrongIndexAlgo { algorithm: IndexAlgorithm::Hash, .. })
    ));
    assert!(matches!(view.index_seek(by_age, &[]), Err(MvccError::KeyArity { expected: 1, got: 0, .. })));
    assert!(matches!(view.index_seek(pk, &[Value::U64(1), Value::U64(2)]), Err(MvccError::KeyArity { .. })));
    assert!(matches!(view.index_seek(pk, &[Value::I64(1)]), Err(MvccError::TypeMismatch { .. })));
}

// Proves a sequence reports exhaustion at its maximum instead of wrapping.
#[test]
fn sequence_exhaustion() {
    let db = Database::new();
    let mut tx = db.begin();
    let mut def = TableDef::new("tiny", vec![ColumnDef::new("id", ColumnType::U8)]).with_primary_key(0);
    def.sequences.push(SequenceDef { column: 0, start: 254, increment: 1, min: 1, max: 255 });
    let t = tx.create_table(def).unwrap();
    assert_eq!(tx.insert(t, vec![Value::U8(0)]).unwrap().1, vec![Value::U8(254)]);
    assert_eq!(tx.insert(t, vec![Value::U8(0)]).unwrap().1, vec![Value::U8(255)]);
    assert!(matches!(tx.insert(t, vec![Value::U8(0)]), Err(MvccError::SequenceExhausted { .. })));
    // An explicit value bypasses the sequence.
    assert!(tx.insert(t, vec![Value::U8(3)]).is_ok());
}

// Proves rollback restores rows, indexes and sequences exactly, and that dropping a tx rolls back.
#[test]
fn rollback_restores_everything() {
    let db = Database::new();
    let mut tx = db.begin();
    let t = people(&mut tx);
    tx.insert(t, person(0, "a@x", 1)).unwrap();
    tx.commit();
    let before: Vec<_> = db.snapshot().table(t).unwrap().scan().collect();

    let mut tx = db.begin();
    let pk = tx.index_id("person_id_idx_btree").unwrap();
    for i in 0..2000 {
        tx.insert(t, person(0, &format!("{i}@y"), 9)).unwrap();
    }
    tx.delete_by_unique(pk, &[Value::U64(1)]).unwrap();
    tx.rollback();

    let mut tx = db.begin();
    let after: Vec<_> = tx.table(t).unwrap().scan().collect();
    assert_eq!(after, before);
    let (_, row) = tx.insert(t, person(0, "b@x", 1)).unwrap();
    assert_eq!(row[0], Value::U64(2), "sequence restored by rollback");
    drop(tx);
    assert_eq!(db.snapshot().table(t).unwrap().row_count(), 1, "dropping a tx rolls it back");
    let by_age = db.snapshot().index_id("by_age").unwrap();
    assert_eq!(db.snapshot().table(t).unwrap().index_seek(by_age, &[Value::U8(9)]).unwrap().count(), 0);
}

// Proves the delta is the net change: insert+delete cancels, delete+identical re-insert cancels,
// and creations and sequence advances are reported.
#[test]
fn delta_is_the_net_change() {
    let db = Database::new();
    let mut tx = db.begin();
    let t = people(&mut tx);
    tx.insert(t, person(0, "keep@x", 1)).unwrap();
    let first = tx.commit();
    assert_eq!(first.tx_offset, 1);
    assert_eq!(first.created_tables.len(), 1);
    assert_eq!(first.created_tables[0].id, t);
    assert_eq!(first.tables[0].inserts, vec![person(1, "keep@x", 1)]);
    assert_eq!(first.sequences.len(), 1);
    assert_eq!(first.sequences[0].next, Some(2));

    let mut tx = db.begin();
    let pk = tx.index_id("person_id_idx_btree").unwrap();
    let (rid, _) = tx.insert(t, person(50, "gone@x", 1)).unwrap();
    tx.delete(t, rid).unwrap();
    let old = tx.delete_by_unique(pk, &[Value::U64(1)]).unwrap().unwrap();
    tx.insert(t, old).unwrap();
    let delta = tx.commit();
    assert!(delta.is_empty(), "{delta:?}");
    assert_eq!(delta.tx_offset, 0, "an empty commit takes no offset");

    let mut tx = db.begin();
    tx.update_by_unique(pk, person(1, "keep@x", 2)).unwrap();
    let delta = tx.commit();
    assert_eq!(delta.tx_offset, 2);
    assert_eq!(delta.tables[0].deletes, vec![person(1, "keep@x", 1)]);
    assert_eq!(delta.tables[0].inserts, vec![person(1, "keep@x", 2)]);
    assert!(delta.sequences.is_empty());
}

// Proves prefix scans and both directions on a multi-column index.
#[test]
fn multi_column_prefix_ranges() {
    let db = Database::new();
    let mut tx = db.begin();
    let def = TableDef::new(
        "pt",
        vec![
            ColumnDef::new("x", ColumnType::I32),
            ColumnDef::new("y", ColumnType::String),
            ColumnDef::new("n", ColumnType::U32),
        ],
    )
    .with_index(IndexDef::btree(vec![0, 1], false));
    let t = tx.create_table(def).unwrap();
    let idx = tx.index_id("pt_x_y_idx_btree").unwrap();
    let mut n = 0;
    for x in -2..=2 {
        for y in ["", "a", "a\0", "b"] {
            tx.insert(t, vec![Value::I32(x), Value::String(y.into()), Value::U32(n)]).unwrap();
            n += 1;
        }
    }
    let view = tx.table(t).unwrap();
    let ns = |rids: Vec<lightcone_mvcc::RowId>| -> Vec<u32> {
        rids.into_iter()
            .map(|r| match view.get_value(r, 2) {
                Some(Value::U32(n)) => n,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let zero = [Value::I32(0)];
    assert_eq!(ns(view.index_seek(idx, &zero).unwrap().collect()), vec![8, 9, 10, 11]);
    assert_eq!(
        ns(view.index_range(idx, Bound::Excluded(&zero), Bound::Unbounded).unwrap().collect()),
        (12..20).collect::<Vec<_>>()
    );
    assert_eq!(
        ns(view.index_range(idx, Bound::Unbounded, Bound::Excluded(&zero)).unwrap().rev().collect()),
        (0..8).rev().collect::<Vec<_>>()
    );
    let lo = [Value::I32(-1), Value::String("a".into())];
    let hi = [Value::I32(1), Value::String("a".into())];
    assert_eq!(
        ns(view.index_range(idx, Bound::Included(&lo), Bound::Included(&hi)).unwrap().collect()),
        (5..=13).collect::<Vec<_>>()
    );
}

// Proves a reader that asks for a snapshot while the writer has borrowed the latest version
// waits and then sees the committed transaction whole, and that the writer's own thread is
// refused instead of deadlocking.
#[test]
fn snapshot_waits_for_a_lent_transaction() {
    let db = std::sync::Arc::new(Database::new());
    let mut tx = db.begin();
    let t = people(&mut tx);
    tx.commit();

    let mut tx = db.begin(); // nobody holds a snapshot: the transaction borrows the state
    assert!(db.try_snapshot().is_none());
    let same_thread = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.snapshot()));
    assert!(same_thread.is_err(), "snapshot on the writer's thread must not wait for itself");
    tx.insert(t, person(0, "a@x", 1)).unwrap();
    let reader = {
        let db = std::sync::Arc::clone(&db);
        std::thread::spawn(move || db.snapshot().table(t).unwrap().row_count())
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!reader.is_finished(), "the reader must wait for the lent state");
    tx.insert(t, person(0, "b@x", 2)).unwrap();
    tx.commit();
    assert_eq!(reader.join().unwrap(), 2, "the reader sees the whole transaction");

    // With a snapshot alive the writer works on a copy, and readers are never made to wait.
    let held = db.snapshot();
    let mut tx = db.begin();
    tx.insert(t, person(0, "c@x", 3)).unwrap();
    assert_eq!(db.try_snapshot().unwrap().table(t).unwrap().row_count(), 2);
    let db2 = std::sync::Arc::clone(&db);
    assert_eq!(std::thread::spawn(move || db2.snapshot().table(t).unwrap().row_count()).join().unwrap(), 2);
    drop(tx);
    assert_eq!(held.table(t).unwrap().row_count(), 2);
    assert_eq!(db.snapshot().table(t).unwrap().row_count(), 2);
}

// Proves an index key over the tree's size limit is a typed error, for insert and update,
// and changes nothing (the update keeps the old row).
#[test]
fn oversized_index_key_is_refused() {
    let db = Database::new();
    let mut tx = db.begin();
    let t = people(&mut tx);
    let pk = tx.index_id("person_id_idx_btree").unwrap();
    let long = "x".repeat(MAX_INDEX_KEY_BYTES + 1);
    assert!(matches!(tx.insert(t, person(0, &long, 1)), Err(MvccError::KeyTooLarge { .. })));
    tx.insert(t, person(0, "a@x", 1)).unwrap();
    assert!(matches!(tx.update_by_unique(pk, person(1, &long, 1)), Err(MvccError::KeyTooLarge { .. })));
    let rows: Vec<_> = tx.table(t).unwrap().scan().map(|(_, r)| r).collect();
    assert_eq!(rows, vec![person(1, "a@x", 1)]);
    let (_, row) = tx.insert(t, person(0, "b@x", 1)).unwrap();
    assert_eq!(row[0], Value::U64(2), "failed inserts consumed no sequence value");
}

// Proves sequences stop with a typed error at the ends of i128, in both directions, instead
// of repeating or wrapping.
#[test]
fn sequence_exhaustion_at_i128_limits() {
    let db = Database::new();
    let mut tx = db.begin();
    for (name, start, increment, min, max, first, second) in [
        ("up", i128::MAX - 1, 1, 1, i128::MAX, i128::MAX - 1, i128::MAX),
        ("down", i128::MIN + 1, -1, i128::MIN, -1, i128::MIN + 1, i128::MIN),
        ("huge_step", 1, i128::MAX - 1, 1, i128::MAX, 1, i128::MAX),
    ] {
        let mut def = TableDef::new(name, vec![ColumnDef::new("id", ColumnType::I128)]);
        def.sequences.push(SequenceDef { column: 0, start, increment, min, max });
        let t = tx.create_table(def).unwrap();
        assert_eq!(tx.insert(t, vec![Value::I128(0)]).unwrap().1, vec![Value::I128(first)], "{name}");
        assert_eq!(tx.insert(t, vec![Value::I128(0)]).unwrap().1, vec![Value::I128(second)], "{name}");
        assert!(
            matches!(tx.insert(t, vec![Value::I128(0)]), Err(MvccError::SequenceExhausted { .. })),
            "{name}"
        );
        assert_eq!(tx.table(t).unwrap().row_count(), 2);
    }
}

// Proves rollback gives back appended pages in both modes (borrowed state and copy), so the
// next row ids do not depend on which mode ran, and a refused insert leaves no empty page.
#[test]
fn rollback_and_refused_inserts_leave_no_pages_behind() {
    let mut next_ids = Vec::new();
    for hold_snapshot in [false, true] {
        let db = Database::new();
        let mut tx = db.begin();
        let t = people(&mut tx);
        tx.insert(t, person(0, "a@x", 1)).unwrap();
        assert!(tx.insert(t, person(0, "a@x", 1)).is_err());
        tx.commit();
        assert_eq!(db.snapshot().table(t).unwrap().page_count(), 1);

        let held = hold_snapshot.then(|| db.snapshot());
        let mut tx = db.begin();
        for i in 0..5000 {
            tx.insert(t, person(0, &format!("{i}@y"), 2)).unwrap();
        }
        assert!(tx.table(t).unwrap().page_count() > 10);
        tx.rollback();
        drop(held);
        assert_eq!(db.snapshot().table(t).unwrap().page_count(), 1, "hold_snapshot={hold_snapshot}");
        let mut tx = db.begin();
        next_ids.push(tx.insert(t, person(0, "b@x", 3)).unwrap().0);
        tx.commit();
    }
    assert_eq!(next_ids[0], next_ids[1], "row ids after rollback differ between modes");

    let db = Database::new();
    let mut tx = db.begin();
    let def = TableDef::new("u", vec![ColumnDef::new("k", ColumnType::U8)]).with_primary_key(0);
    let u = tx.create_table(def).unwrap();
    tx.commit();
    let mut tx = db.begin();
    tx.insert(u, vec![Value::U8(1)]).unwrap();
    tx.commit();
    let mut tx = db.begin();
    let pk = tx.index_id("u_k_idx_btree").unwrap();
    tx.delete_by_unique(pk, &[Value::U8(1)]).unwrap();
    tx.insert(u, vec![Value::U8(2)]).unwrap();
    drop(tx);
    assert_eq!(
        db.snapshot().table(u).unwrap().scan().map(|(_, r)| r).collect::<Vec<_>>(),
        vec![vec![Value::U8(1)]]
    );

    // One row per page: a duplicate needs a fresh page, which must go again with the refusal.
    let mut tx = db.begin();
    let cols = (0..200).map(|i| ColumnDef::new(format!("c{i}"), ColumnType::U256)).collect();
    let wide = tx.create_table(TableDef::new("wide", cols).with_primary_key(0)).unwrap();
    let row = vec![Value::U256(Default::default()); 200];
    tx.insert(wide, row.clone()).unwrap();
    assert!(matches!(tx.insert(wide, row), Err(MvccError::UniqueViolation { .. })));
    assert_eq!(tx.table(wide).unwrap().page_count(), 1);
}

// Proves a unique-violation message stays short even for a huge key.
#[test]
fn unique_violation_message_is_bounded() {
    let db = Database::new();
    let mut tx = db.begin();
    let t = people(&mut tx);
    let long = "é".repeat(1500);
    tx.insert(t, person(0, &long, 1)).unwrap();
    let err = tx.insert(t, person(0, &long, 1)).unwrap_err().to_string();
    assert!(err.len() < 400, "{} chars", err.len());
    assert!(err.contains("person_email_idx_btree") && err.ends_with("of table `person`"), "{err}");
}

// Proves a panic between operations (a reducer bug, say) rolls the transaction back through
// unwinding and leaves the database fully usable; a second begin on the same thread is refused.
#[test]
fn panic_inside_a_transaction_rolls_back() {
    let db = Database::new();
    let mut tx = db.begin();
    let t = people(&mut tx);
    tx.insert(t, person(0, "a@x", 1)).unwrap();
    tx.commit();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut tx = db.begin();
        tx.insert(t, person(0, "b@x", 2)).unwrap();
        panic!("reducer bug");
    }));
    assert!(outcome.is_err());
    assert_eq!(db.snapshot().table(t).unwrap().row_count(), 1);
    let tx = db.begin();
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.begin().rollback()));
    assert!(again.is_err(), "a second begin on the writer's thread must not deadlock");
    drop(tx);
    let mut tx = db.begin();
    assert_eq!(tx.insert(t, person(0, "c@x", 3)).unwrap().1[0], Value::U64(2));
    tx.commit();
}

// Proves replaying deltas works for a table without any unique index (rows found by content,
// duplicates included) and refuses a delta that does not fit the state.
#[test]
fn apply_delta_without_unique_index_and_mismatch() {
    let db = Database::new();
    let mut tx = db.begin();
    let def = TableDef::new(
        "log",
        vec![ColumnDef::new("msg", ColumnType::String), ColumnDef::new("n", ColumnType::I64)],
    );
    let t = tx.create_table(def).unwrap();
    let row = |m: &str, n: i64| vec![Value::String(m.into()), Value::I64(n)];
    for (m, n) in [("a", 1), ("b", 2), ("a", 1), ("c", 3)] {
        tx.insert(t, row(m, n)).unwrap();
    }
    let mut deltas = vec![tx.commit()];
    let mut tx = db.begin();
    let rids: Vec<_> =
        tx.table(t).unwrap().scan().filter(|(_, r)| r == &row("a", 1)).map(|(rid, _)| rid).collect();
    tx.delete(t, rids[0]).unwrap();
    tx.insert(t, row("d", 4)).unwrap();
    deltas.push(tx.commit());

    let replica = Database::new();
    for delta in &deltas {
        let mut rtx = replica.begin();
        rtx.apply_delta(delta).unwrap();
        rtx.commit();
    }
    let rows = |db: &Database| {
        let mut rows: Vec<_> = db.snapshot().table(t).unwrap().scan().map(|(_, r)| r).collect();
        rows.sort();
        rows
    };
    assert_eq!(rows(&replica), rows(&db));
    assert_eq!(rows(&replica).iter().filter(|r| **r == row("a", 1)).count(), 1);

    // The second delta again: its deleted row is no longer there twice over.
    let mut rtx = replica.begin();
    rtx.apply_delta(&deltas[1]).unwrap();
    assert!(matches!(rtx.apply_delta(&deltas[1]), Err(MvccError::ReplayMismatch(_))));
    drop(rtx);
    // And the first again: the table id is taken.
    let mut rtx = replica.begin();
    assert!(rtx.apply_delta(&deltas[0]).is_err());
    drop(rtx);
    assert_eq!(rows(&replica), rows(&db), "refused replays changed nothing after rollback");
}

// Proves a replayed delta that collides on a unique key partway through its inserts (rows
// stored a page-run at a time) is refused, and dropping the transaction leaves the table and
// its indexes as they were: the same delta without the duplicate then applies and reads back
// whole, with no index entry left by the refused row.
#[test]
fn apply_delta_refuses_a_duplicate_inside_a_run_and_rolls_back() {
    let db = Database::new();
    let mut tx = db.begin();
    let t = people(&mut tx);
    for i in 1..=100 {
        tx.insert(t, person(i, &format!("p{i}@x"), 30)).unwrap();
    }
    let first = tx.commit();
    let mut tx = db.begin();
    for i in 101..=150 {
        tx.insert(t, person(i, &format!("p{i}@x"), 31)).unwrap();
    }
    let second = tx.commit();

    let replica = Database::new();
    let mut rtx = replica.begin();
    rtx.apply_delta(&first).unwrap();
    rtx.commit();
    let ids = |db: &Database| {
        let mut ids: Vec<_> = db.snapshot().table(t).unwrap().scan().map(|(_, r)| r[0].clone()).collect();
        ids.sort();
        ids
    };
    let before = ids(&replica);

    // Two bad deltas, each with one extra row 25 rows into the run: an exact copy of an
    // earlier row, and a new email under an id the run already stored (refused by the
    // primary key after the email index took it, which must give the entry back).
    let exact_copy = second.tables[0].inserts[3].clone();
    let same_id = person(120, "new@x", 40);
    for extra in [exact_copy, same_id] {
        let mut bad = second.clone();
        bad.tables[0].inserts.insert(25, extra);
        let mut rtx = replica.begin();
        assert!(matches!(rtx.apply_delta(&bad), Err(MvccError::UniqueViolation { .. })));
        drop(rtx);
        assert_eq!(ids(&replica), before, "the refused delta left rows behind");
    }

    let mut rtx = replica.begin();
    rtx.apply_delta(&second).unwrap();
    rtx.commit();
    assert_eq!(ids(&replica), ids(&db));
    let snap = replica.snapshot();
    let table = snap.table(t).unwrap();
    assert_eq!(table.row_count(), 150);
    let schema = table.schema();
    let index_on =
        |col: u16| schema.index_ids[schema.def.indexes.iter().position(|i| i.columns == [col]).unwrap()];
    assert!(
        table.unique_lookup(index_on(0), &[Value::U64(125)]).unwrap().is_some(),
        "indexed after the rollback"
    );
    let email = |e: &str| table.unique_lookup(index_on(1), &[Value::String(e.into())]).unwrap();
    assert!(email("p125@x").is_some());
    assert!(email("new@x").is_none(), "the refused row's email entry was given back");
}

/// A database holding only table `t` of `snap`, restored from its image (schema, sequence
/// counters and rows) at `snap`'s offset.
fn restore_table(snap: &lightcone_mvcc::Snapshot, t: TableId) -> Database {
    let view = snap.table(t).unwrap();
    let mut restorer = lightcone_mvcc::Restorer::new(snap.tx_offset());
    let mut table = restorer.begin_table(view.schema().clone(), view.sequence_next().to_vec()).unwrap();
    for (_, row) in view.scan() {
        table.push(row).unwrap();
    }
    table.finish().unwrap();
    restorer.finish()
}

// Proves a database restored from table images (rows + schemas + sequence counters + offset)
// reads the same, its bulk-built indexes work, and it carries on where the original stopped;
// a duplicate unique key in an image is refused.
#[test]
fn restore_from_images() {
    let db = Database::new();
    let mut tx = db.begin();
    let t = people(&mut tx);
    for i in 0..3000u64 {
        tx.insert(t, person(0, &format!("{i}@x"), (i % 7) as u8)).unwrap();
    }
    tx.commit();
    let snap = db.snapshot();
    let view = snap.table(t).unwrap();

    let copy = restore_table(&snap, t);

    let rows = |db: &Database| {
        let mut r: Vec<_> = db.snapshot().table(t).unwrap().scan().map(|(_, r)| r).collect();
        r.sort();
        r
    };
    assert_eq!(rows(&copy), rows(&db));
    assert_eq!(copy.snapshot().tx_offset(), snap.tx_offset());
    let by_age = copy.snapshot().index_id("by_age").unwrap();
    assert_eq!(copy.snapshot().table(t).unwrap().index_seek(by_age, &[Value::U8(3)]).unwrap().count(), 429);
    let mut tx = copy.begin();
    assert!(matches!(tx.insert(t, person(0, "5@x", 1)), Err(MvccError::UniqueViolation { .. })));
    assert_eq!(tx.insert(t, person(0, "new@x", 1)).unwrap().1[0], Value::U64(3001));
    assert_eq!(tx.commit().tx_offset, snap.tx_offset() + 1);

    let mut restorer = lightcone_mvcc::Restorer::new(1);
    let mut table = restorer.begin_table(view.schema().clone(), view.sequence_next().to_vec()).unwrap();
    table.push(person(1, "same@x", 1)).unwrap();
    table.push(person(2, "same@x", 1)).unwrap();
    assert!(matches!(table.finish(), Err(MvccError::InvalidSchema { .. })));

    // A damaged or crafted image naming columns that do not exist is refused, not a panic.
    let damaged: [fn(&mut lightcone_mvcc::TableSchema); 4] = [
        |s| s.def.indexes[0].columns = vec![99],
        |s| s.def.indexes[0].columns.clear(),
        |s| s.def.primary_key = Some(42),
        |s| s.def.sequences[0].column = 1, // `email`, a string
    ];
    for (i, damage) in damaged.iter().enumerate() {
        let mut schema = view.schema().clone();
        assert!(!schema.def.sequences.is_empty() && !schema.def.indexes.is_empty());
        damage(&mut schema);
        let mut restorer = lightcone_mvcc::Restorer::new(1);
        match restorer.begin_table(schema, view.sequence_next().to_vec()) {
            Err(MvccError::InvalidSchema { .. }) => {}
            other => panic!("damage {i}: expected InvalidSchema, got {:?}", other.map(|_| ())),
        }
    }
}

// Proves a table at the index limit whose primary key got its own index on top (which
// `create_table` adds after checking the limit) restores: its image is as valid as the table.
#[test]
fn a_table_at_the_index_limit_restores() {
    let db = Database::new();
    let mut tx = db.begin();
    let indexes = (0..lightcone_mvcc::MAX_INDEXES_PER_TABLE).map(|i| {
        let mut idx = IndexDef::btree(vec![1], false);
        idx.name = format!("by_v_{i}");
        idx
    });
    let def = TableDef::new(
        "wide",
        vec![ColumnDef::new("id", ColumnType::U64), ColumnDef::new("v", ColumnType::I64)],
    )
    .with_primary_key(0);
    let def = indexes.fold(def, |def, idx| def.with_index(idx));
    let t = tx.create_table(def).unwrap();
    tx.insert(t, vec![Value::U64(1), Value::I64(-1)]).unwrap();
    tx.commit();
    let snap = db.snapshot();
    let view = snap.table(t).unwrap();
    assert_eq!(view.schema().def.indexes.len(), lightcone_mvcc::MAX_INDEXES_PER_TABLE + 1);
    let copy = restore_table(&snap, t);
    assert_eq!(copy.snapshot().table(t).unwrap().row_count(), 1);

    // The definition as stored (primary key index included) is accepted again, as a replayed
    // log creates it; one more index is over the limit.
    let fresh = Database::new();
    let mut tx = fresh.begin();
    let mut stored = view.schema().def.clone();
    stored.name = "again".into();
    for idx in &mut stored.indexes {
        idx.name = format!("again_{}", idx.name);
    }
    tx.create_table(stored.clone()).unwrap();
    stored.name = "over".into();
    stored.indexes.push(IndexDef::btree(vec![1], false));
    for (i, idx) in stored.indexes.iter_mut().enumerate() {
        idx.name = format!("over_{i}");
    }
    assert!(matches!(tx.create_table(stored), Err(MvccError::InvalidSchema { .. })));
}

// Proves an update that keeps every index key rewrites the row where it is (same row id), is
// still a delete + insert in the delta, and rolls back exactly; and that an update whose new
// contents no longer fit the page's heap still succeeds (the row moves to another page).
#[test]
fn updates_keeping_index_keys_stay_in_place() {
    let db = Database::new();
    let mut tx = db.begin();
    let def = TableDef::new(
        "account",
        vec![
            ColumnDef::new("id", ColumnType::U32),
            ColumnDef::new("note", ColumnType::String),
            ColumnDef::new("balance", ColumnType::I64),
        ],
    )
    .with_primary_key(0);
    let t = tx.create_table(def).unwrap();
    let pk = tx.index_id("account_id_idx_btree").unwrap();
    let account = |id: u32, note: &str, balance: i64| {
        vec![Value::U32(id), Value::String(note.into()), Value::I64(balance)]
    };
    // 400-byte notes stay inline (the overflow threshold is 512) and fill the first page's heap.
    let note = |i: u32| format!("{i:0>400}");
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(tx.insert(t, account(i, &note(i), 100)).unwrap().0);
    }
    tx.commit();
    let before: Vec<_> = db.snapshot().table(t).unwrap().scan().collect();

    let mut tx = db.begin();
    let (rid, row) = tx.update_by_unique(pk, account(0, &note(0), 90)).unwrap();
    assert_eq!(rid, ids[0], "no indexed column changed, so the row keeps its id");
    assert_eq!(row, account(0, &note(0), 90));
    assert_eq!(tx.table(t).unwrap().get(ids[0]), Some(account(0, &note(0), 90)));
    // Grow notes until one no longer fits its page: every update still lands, readable by key.
    let grown = "x".repeat(510);
    let mut moved = false;
    for i in 1..40 {
        let (rid, _) = tx.update_by_unique(pk, account(i, &grown, 7)).unwrap();
        moved |= rid != ids[i as usize];
        let found = tx.table(t).unwrap().unique_lookup(pk, &[Value::U32(i)]).unwrap();
        assert_eq!(found, Some(rid));
        assert_eq!(tx.table(t).unwrap().get(rid), Some(account(i, &grown, 7)));
    }
    assert!(moved, "some grown row must have left its full page");
    tx.rollback();
    let after: Vec<_> = db.snapshot().table(t).unwrap().scan().collect();
    assert_eq!(after, before, "rollback restores every row at its id");

    let mut tx = db.begin();
    tx.update_by_unique(pk, account(1, &note(1), 100)).unwrap(); // identical contents
    tx.update_by_unique(pk, account(2, &note(2), 50)).unwrap();
    tx.update_by_unique(pk, account(2, &note(2), 60)).unwrap(); // twice in one transaction
    let delta = tx.commit();
    assert_eq!(delta.tables.len(), 1);
    assert_eq!(delta.tables[0].deletes, vec![account(2, &note(2), 100)], "the row as it was before");
    assert_eq!(delta.tables[0].inserts, vec![account(2, &note(2), 60)], "the row as it is now");
    assert_eq!(db.snapshot().table(t).unwrap().get(ids[2]), Some(account(2, &note(2), 60)));
}

// Proves a full-key seek on a unique index (the point-lookup path) finds exactly the row, from
// either end, and nothing for an absent key; a seek on a non-unique index still finds them all.
#[test]
fn unique_point_seek() {
    let db = Database::new();
    let mut tx = db.begin();
    let t = people(&mut tx);
    for i in 0..500 {
        tx.insert(t, person(0, &format!("{i}@x"), (i % 3) as u8)).unwrap();
    }
    let pk = tx.index_id("person_id_idx_btree").unwrap();
    let by_age = tx.index_id("by_age").unwrap();
    let table = tx.table(t).unwrap();
    for id in [1u64, 250, 500] {
        let found: Vec<_> = table.index_seek(pk, &[Value::U64(id)]).unwrap().collect();
        assert_eq!(found.len(), 1);
        assert_eq!(table.get(found[0]).unwrap()[0], Value::U64(id));
        let back: Vec<_> = table.index_seek(pk, &[Value::U64(id)]).unwrap().rev().collect();
        assert_eq!(back, found);
    }
    assert_eq!(table.index_seek(pk, &[Value::U64(501)]).unwrap().count(), 0);
    assert_eq!(table.index_seek(by_age, &[Value::U8(1)]).unwrap().count(), 167);
    assert!(matches!(table.index_seek(pk, &[Value::U32(1)]), Err(MvccError::TypeMismatch { .. })));
}

fn small_table(name: &str) -> TableDef {
    TableDef::new(name, vec![ColumnDef::new("id", ColumnType::U32), ColumnDef::new("v", ColumnType::I64)])
        .with_primary_key(0)
}

fn all_rows(db: &Database, t: TableId) -> Vec<Vec<Value>> {
    let mut rows: Vec<_> = db.snapshot().table(t).unwrap().scan().map(|(_, r)| r).collect();
    rows.sort();
    rows
}

// Proves a dropped table is gone for later transactions but not for a snapshot taken before,
// its name can be reused in the same transaction (with new ids, never the old ones), the delta
// lists the drop and none of the dropped table's row changes, and replaying the deltas in order
// rebuilds the same database.
#[test]
fn drop_table_and_reuse_its_name() {
    let db = Database::new();
    let mut tx = db.begin();
    let a = tx.create_table(small_table("a")).unwrap();
    let b = tx.create_table(small_table("b")).unwrap();
    tx.insert(a, vec![Value::U32(1), Value::I64(10)]).unwrap();
    tx.insert(b, vec![Value::U32(2), Value::I64(20)]).unwrap();
    let mut deltas = vec![tx.commit()];
    let before = db.snapshot();
    let (next_table, next_index) = before.next_ids();

    let mut tx = db.begin();
    tx.insert(a, vec![Value::U32(3), Value::I64(30)]).unwrap();
    tx.drop_table(a).unwrap();
    assert!(matches!(tx.drop_table(a), Err(MvccError::NoSuchTable(_))));
    assert!(matches!(tx.table_id("a"), Err(MvccError::NoSuchTableName(_))));
    assert!(tx.index_id("a_id_idx_btree").is_none());
    let def = TableDef::new("a", vec![ColumnDef::new("name", ColumnType::String)]).with_primary_key(0);
    let a2 = tx.create_table(def).unwrap();
    assert_eq!(a2, next_table, "a new table never takes a dropped table's id");
    assert_eq!(tx.table(a2).unwrap().schema().index_ids, vec![next_index]);
    tx.insert(a2, vec![Value::String("x".into())]).unwrap();
    // A table cannot be dropped by the transaction that created it (its ids would be used up
    // without a trace in the delta).
    assert!(matches!(tx.drop_table(a2), Err(MvccError::InvalidSchema { .. })));
    let delta = tx.commit();
    assert_eq!(delta.dropped_tables, vec![a]);
    assert_eq!(delta.created_tables.iter().map(|s| s.id).collect::<Vec<_>>(), vec![a2]);
    assert_eq!(delta.tables.iter().map(|t| t.table_id).collect::<Vec<_>>(), vec![a2]);
    deltas.push(delta);

    let old_rows: Vec<_> = before.table(a).unwrap().scan().map(|(_, r)| r).collect();
    assert_eq!(old_rows, vec![vec![Value::U32(1), Value::I64(10)]], "an older snapshot keeps the table");
    assert!(db.snapshot().table(a).is_err());
    assert_eq!(db.snapshot().table_id("a").unwrap(), a2);
    assert_eq!(db.snapshot().next_ids(), (next_table + 1, next_index + 1));

    let replica = Database::new();
    for delta in &deltas {
        let mut rtx = replica.begin();
        rtx.apply_delta(delta).unwrap();
        rtx.commit_replayed(delta.tx_offset).unwrap();
    }
    assert!(replica.snapshot().table(a).is_err());
    assert_eq!(all_rows(&replica, a2), all_rows(&db, a2));
    assert_eq!(all_rows(&replica, b), all_rows(&db, b));
    // Ids handed out after replay match the original's.
    assert_eq!(replica.snapshot().next_ids(), db.snapshot().next_ids());
}

// Proves rolling back a transaction that dropped tables (one with row changes first) and
// created one under a dropped name restores the catalog, rows and indexes exactly — both when
// the transaction worked in place and when a snapshot forced a copy.
#[test]
fn drop_table_rolls_back() {
    for hold_snapshot in [false, true] {
        let db = Database::new();
        let mut tx = db.begin();
        let a = tx.create_table(small_table("a")).unwrap();
        let b = tx.create_table(small_table("b")).unwrap();
        for i in 0..100 {
            tx.insert(a, vec![Value::U32(i), Value::I64(i as i64)]).unwrap();
        }
        tx.commit();
        let held = hold_snapshot.then(|| db.snapshot());
        let rows_before = all_rows(&db, a);
        let mut tx = db.begin();
        tx.delete_by_unique(tx.table(a).unwrap().schema().index_ids[0], &[Value::U32(5)]).unwrap();
        tx.insert(a, vec![Value::U32(500), Value::I64(0)]).unwrap();
        tx.drop_table(a).unwrap();
        tx.drop_table(b).unwrap();
        tx.create_table(small_table("a")).unwrap();
        tx.rollback();
        drop(held);
        let snap = db.snapshot();
        assert_eq!(snap.table_id("a").unwrap(), a);
        assert_eq!(snap.table_id("b").unwrap(), b);
        assert_eq!(all_rows(&db, a), rows_before);
        let pk = snap.table(a).unwrap().schema().index_ids[0];
        assert!(snap.table(a).unwrap().unique_lookup(pk, &[Value::U32(5)]).unwrap().is_some());
        assert_eq!(snap.index_table(pk).unwrap(), a);
        assert_eq!(snap.next_ids(), (2, 2));
    }
}

// Proves a restore keeps the ids of dropped tables unused: tables after a gap keep their ids
// and the next create gets the id it would have got in the original.
#[test]
fn restore_with_dropped_table_ids() {
    let db = Database::new();
    let mut tx = db.begin();
    let a = tx.create_table(small_table("a")).unwrap();
    let b = tx.create_table(small_table("b")).unwrap();
    let c = tx.create_table(small_table("c")).unwrap();
    tx.insert(b, vec![Value::U32(1), Value::I64(1)]).unwrap();
    tx.commit();
    let mut tx = db.begin();
    tx.drop_table(a).unwrap();
    tx.drop_table(c).unwrap();
    tx.commit();
    let snap = db.snapshot();
    let mut restorer = lightcone_mvcc::Restorer::new(snap.tx_offset());
    for id in snap.table_ids() {
        let view = snap.table(id).unwrap();
        let mut table = restorer.begin_table(view.schema().clone(), view.sequence_next().to_vec()).unwrap();
        for (_, row) in view.scan() {
            table.push(row).unwrap();
        }
        table.finish().unwrap();
    }
    let (next_table, next_index) = snap.next_ids();
    assert!(restorer.reserve_ids(b, 0).is_err(), "ids below a restored table are refused");
    restorer.reserve_ids(next_table, next_index).unwrap();
    let copy = restorer.finish();
    assert_eq!(copy.snapshot().table_ids(), vec![b]);
    assert_eq!(all_rows(&copy, b), all_rows(&db, b));
    let mut tx = copy.begin();
    let d = tx.create_table(small_table("d")).unwrap();
    assert_eq!(d, 3);
    assert_eq!(tx.table(d).unwrap().schema().index_ids, vec![3]);
}
