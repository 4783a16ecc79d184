//! DML inside a write transaction: INSERT / UPDATE / DELETE results and statistics, batches
//! that read their own writes, and one test per DML error kind.

mod common;

use lightcone_mvcc::{ColumnDef, ColumnType, Database, IndexDef, TableDef, Value, WriteTx, U256};
use lightcone_query_planner::{
    execute, execute_batch, execute_dml, execute_statement, DmlStats, Params, PlanError, StatementResult,
};

/// `item(id u64 auto-inc pk, name string, qty i32, owner u256)` with a unique index on `name`.
fn items() -> Database {
    let db = Database::new();
    let mut tx = db.begin();
    let def = TableDef::new(
        "item",
        vec![
            ColumnDef::new("id", ColumnType::U64),
            ColumnDef::new("name", ColumnType::String),
            ColumnDef::new("qty", ColumnType::I32),
            ColumnDef::new("owner", ColumnType::U256),
        ],
    )
    .with_primary_key(0)
    .with_auto_inc(0)
    .with_index(IndexDef::btree(vec![1], true));
    tx.create_table(def).unwrap();
    tx.commit();
    db
}

fn dml(tx: &mut WriteTx<'_>, sql: &str) -> DmlStats {
    execute_dml(tx, sql, &Params::default()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn rows(tx: &WriteTx<'_>, sql: &str) -> Vec<Vec<Value>> {
    let mut r = execute(tx, sql, &Params::default()).unwrap_or_else(|e| panic!("{sql}: {e}")).rows;
    r.sort();
    r
}

fn count(tx: &WriteTx<'_>, sql: &str) -> u64 {
    match rows(tx, sql).as_slice() {
        [row] => row[0].as_i128().unwrap() as u64,
        other => panic!("{sql}: {other:?}"),
    }
}

fn ins(n: u64) -> DmlStats {
    DmlStats { rows_inserted: n, ..DmlStats::default() }
}

// Proves INSERT fills an omitted auto-increment column from its sequence (and an explicit 0
// too), honours column lists in any order, and counts multi-row inserts.
#[test]
fn insert_with_sequence_and_column_list() {
    let db = items();
    let mut tx = db.begin();
    assert_eq!(dml(&mut tx, "INSERT INTO item (name, qty, owner) VALUES ('a', 1, 0), ('b', -2, 7)"), ins(2));
    assert_eq!(dml(&mut tx, "INSERT INTO item (qty, owner, name) VALUES (5, 1, 'c')"), ins(1));
    assert_eq!(dml(&mut tx, "INSERT INTO item VALUES (0, 'd', 0, 0), (100, 'e', 0, 0)"), ins(2));
    let got = rows(&tx, "SELECT id, name, qty FROM item");
    let want: Vec<Vec<Value>> = [(1, "a", 1), (2, "b", -2), (3, "c", 5), (4, "d", 0), (100, "e", 0)]
        .iter()
        .map(|&(id, n, q)| vec![Value::U64(id), Value::String(n.into()), Value::I32(q)])
        .collect();
    assert_eq!(got, want);
    tx.commit();
    assert_eq!(
        execute(&db.snapshot(), "SELECT COUNT(*) FROM item", &Params::default()).unwrap().rows[0][0],
        Value::U64(5)
    );
}

// Proves `:sender` can be inserted and is required when used.
#[test]
fn insert_sender() {
    let db = items();
    let mut tx = db.begin();
    let sql = "INSERT INTO item (name, qty, owner) VALUES ('a', 1, :sender)";
    assert_eq!(execute_dml(&mut tx, sql, &Params::default()).unwrap_err(), PlanError::MissingSender);
    let p = Params { sender: Some(U256::from_u128(42)) };
    assert_eq!(execute_dml(&mut tx, sql, &p).unwrap(), ins(1));
    assert_eq!(rows(&tx, "SELECT owner FROM item"), vec![vec![Value::U256(U256::from_u128(42))]]);
}

// Proves UPDATE rewrites matched rows only, counts each once (even when the new value still
// matches the WHERE, or the index used to find rows is the one being changed), and can change
// the primary key.
#[test]
fn update_counts_once_and_changes_primary_key() {
    let db = common::people();
    let mut tx = db.begin();
    let matched = count(&tx, "SELECT COUNT(*) FROM person WHERE age > 10");
    assert!(matched > 1);
    let st = dml(&mut tx, "UPDATE person SET age = 11 WHERE age > 10");
    assert_eq!(st, DmlStats { rows_updated: matched, ..DmlStats::default() });
    assert_eq!(
        count(&tx, "SELECT COUNT(*) FROM person WHERE age = 11"),
        matched + count(&tx, "SELECT COUNT(*) FROM person WHERE age = 11 AND age <= 10")
    );
    assert_eq!(count(&tx, "SELECT COUNT(*) FROM person"), 20);
    // Primary key change, found through the primary-key index itself.
    let before = rows(&tx, "SELECT name, age FROM person WHERE id = 3");
    assert_eq!(dml(&mut tx, "UPDATE person SET id = 1000 WHERE id = 3").rows_updated, 1);
    assert!(rows(&tx, "SELECT * FROM person WHERE id = 3").is_empty());
    assert_eq!(rows(&tx, "SELECT name, age FROM person WHERE id = 1000"), before);
    // Several columns, nothing matched.
    assert_eq!(dml(&mut tx, "UPDATE person AS p SET p.name = 'z', city = 2 WHERE id = 999").rows_updated, 0);
    assert_eq!(count(&tx, "SELECT COUNT(*) FROM person"), 20);
}

// Proves DELETE removes exactly the matched rows and DELETE without WHERE empties the table.
#[test]
fn delete_rows() {
    let db = common::people();
    let mut tx = db.begin();
    let matched = count(&tx, "SELECT COUNT(*) FROM person WHERE city = 1 OR score < -5");
    let st = dml(&mut tx, "DELETE FROM person WHERE city = 1 OR score < -5");
    assert_eq!(st, DmlStats { rows_deleted: matched, ..DmlStats::default() });
    assert_eq!(count(&tx, "SELECT COUNT(*) FROM person"), 20 - matched);
    assert_eq!(count(&tx, "SELECT COUNT(*) FROM person WHERE city = 1"), 0);
    assert_eq!(dml(&mut tx, "DELETE FROM person").rows_deleted, 20 - matched);
    assert_eq!(count(&tx, "SELECT COUNT(*) FROM person"), 0);
    tx.rollback();
    assert_eq!(
        execute(&db.snapshot(), "SELECT COUNT(*) FROM person", &Params::default()).unwrap().rows[0][0],
        Value::U64(20)
    );
}

// Proves a batch runs statements in order, one result each, reads seeing earlier writes.
#[test]
fn batch_reads_own_writes() {
    let db = items();
    let mut tx = db.begin();
    let out = execute_batch(
        &mut tx,
        "INSERT INTO item (name, qty, owner) VALUES ('a', 1, 0), ('b', 2, 0); \
         SELECT COUNT(*) FROM item; UPDATE item SET qty = 9 WHERE name = 'b'; \
         DELETE FROM item WHERE qty = 1; SELECT name, qty FROM item",
        &Params::default(),
    )
    .unwrap();
    assert_eq!(out.len(), 5);
    assert_eq!(out[0], StatementResult::Dml(ins(2)));
    match &out[1] {
        StatementResult::Rows(r) => assert_eq!(r.rows, vec![vec![Value::U64(2)]]),
        other => panic!("{other:?}"),
    }
    assert_eq!(out[2], StatementResult::Dml(DmlStats { rows_updated: 1, ..DmlStats::default() }));
    assert_eq!(out[3], StatementResult::Dml(DmlStats { rows_deleted: 1, ..DmlStats::default() }));
    match &out[4] {
        StatementResult::Rows(r) => assert_eq!(r.rows, vec![vec![Value::String("b".into()), Value::I32(9)]]),
        other => panic!("{other:?}"),
    }
    // A single statement through execute_statement, and EXPLAIN inside a transaction.
    match execute_statement(&mut tx, "EXPLAIN SELECT * FROM item WHERE id = 2", &Params::default()).unwrap() {
        StatementResult::Rows(r) => {
            assert_eq!(r.rows[0][0], Value::String("IndexSeek item_id_idx_btree (id = 2)".into()))
        }
        other => panic!("{other:?}"),
    }
}

// Proves an omitted column without a sequence is a MissingValue error naming it.
#[test]
fn error_missing_value() {
    let db = items();
    let mut tx = db.begin();
    let e = execute_dml(&mut tx, "INSERT INTO item (name, owner) VALUES ('a', 0)", &Params::default())
        .unwrap_err();
    assert!(matches!(&e, PlanError::MissingValue { column, .. } if column == "qty"), "{e:?}");
    assert!(e.to_string().contains("`qty`") && e.to_string().contains("INSERT INTO item"), "{e}");
}

// Proves a column named twice (INSERT list or UPDATE SET) is a DuplicateColumn error.
#[test]
fn error_duplicate_column() {
    let db = items();
    let mut tx = db.begin();
    for sql in [
        "INSERT INTO item (name, qty, name, owner) VALUES ('a', 1, 'b', 0)",
        "UPDATE item SET qty = 1, QTY = 2",
    ] {
        let e = execute_dml(&mut tx, sql, &Params::default()).unwrap_err();
        assert!(matches!(&e, PlanError::DuplicateColumn { .. }), "{sql}: {e:?}");
        assert!(e.to_string().contains("more than once"), "{e}");
    }
}

// Proves a VALUES row with the wrong number of values is a ValuesArity error quoting the row.
#[test]
fn error_values_arity() {
    let db = items();
    let mut tx = db.begin();
    let e = execute_dml(
        &mut tx,
        "INSERT INTO item (name, qty, owner) VALUES ('a', 1, 0), ('b', 2)",
        &Params::default(),
    )
    .unwrap_err();
    assert_eq!(e, PlanError::ValuesArity { row: "('b', 2)".into(), expected: 3, got: 2 });
    assert!(e.to_string().contains("`('b', 2)`"), "{e}");
    assert_eq!(count(&tx, "SELECT COUNT(*) FROM item"), 0);
}

// Proves unique-key violations by INSERT and UPDATE are UniqueViolation errors quoting the
// statement and key, and that the failed statement's own writes are undone.
#[test]
fn error_unique_violation() {
    let db = common::people();
    let mut tx = db.begin();
    let before = rows(&tx, "SELECT * FROM person");
    let e = execute_dml(
        &mut tx,
        "INSERT INTO person VALUES (50, 'n', 1, 1, 0, 1, 0, 0), (5, 'n', 1, 1, 0, 1, 0, 0)",
        &Params::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, PlanError::UniqueViolation { index, .. } if index == "person_id_idx_btree"),
        "{e:?}"
    );
    assert!(e.to_string().contains("INSERT INTO person") && e.to_string().contains('5'), "{e}");
    assert_eq!(rows(&tx, "SELECT * FROM person"), before);
    let e = execute_dml(&mut tx, "UPDATE person SET id = 7 WHERE city = 0", &Params::default()).unwrap_err();
    assert!(matches!(&e, PlanError::UniqueViolation { .. }), "{e:?}");
    assert!(e.to_string().contains("UPDATE person SET id = 7"), "{e}");
    assert_eq!(rows(&tx, "SELECT * FROM person"), before);
}

// Proves badly typed INSERT values and SET values are TypeMismatch errors quoting the literal.
#[test]
fn error_dml_type_mismatch() {
    let db = items();
    let mut tx = db.begin();
    for (sql, lit) in [
        ("INSERT INTO item (name, qty, owner) VALUES (1, 1, 0)", "1"),
        ("INSERT INTO item (name, qty, owner) VALUES ('a', 'x', 0)", "'x'"),
        ("INSERT INTO item (name, qty, owner) VALUES ('a', 3000000000, 0)", "3000000000"),
        ("UPDATE item SET qty = 1.5", "1.5"),
        ("UPDATE item SET name = 'a' WHERE qty = 'a'", "'a'"),
    ] {
        let e = execute_dml(&mut tx, sql, &Params::default()).unwrap_err();
        assert!(matches!(&e, PlanError::TypeMismatch { .. }), "{sql}: {e:?}");
        assert!(e.to_string().contains(&format!("`{lit}`")), "{sql}: {e}");
    }
}

// Proves execute_dml refuses a query, and DML forms outside the grammar are Unsupported.
#[test]
fn error_wrong_kind_and_unsupported_dml() {
    let db = items();
    let mut tx = db.begin();
    let e = execute_dml(&mut tx, "SELECT * FROM item", &Params::default()).unwrap_err();
    assert!(matches!(&e, PlanError::WrongStatementKind { .. }), "{e:?}");
    assert!(e.to_string().contains("SELECT * FROM item"), "{e}");
    for sql in [
        "INSERT INTO item (name, qty, owner) SELECT name, qty, owner FROM item",
        "UPDATE item SET qty = qty + 1",
        "DELETE FROM item WHERE id IN (SELECT id FROM item)",
        "INSERT INTO item (name, qty, owner) VALUES ('a', 1, 0) RETURNING id",
        "UPDATE item SET (qty, name) = (1, 'a')",
    ] {
        let e = execute_dml(&mut tx, sql, &Params::default()).unwrap_err();
        assert!(matches!(&e, PlanError::Unsupported(_)), "{sql}: {e:?}");
    }
    for sql in [
        "",
        ";",
        "INSERT INTO",
        "INSERT INTO nope VALUES (1)",
        "UPDATE item SET nope = 1",
        "DELETE FROM item WHERE",
    ] {
        assert!(execute_batch(&mut tx, sql, &Params::default()).is_err(), "{sql}");
    }
}
