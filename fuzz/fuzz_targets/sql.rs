//! Fuzzes the SQL front end: any text is planned and run against a small table, first as a
//! query on a snapshot, then as a batch of statements (DML included) inside a write
//! transaction that is rolled back. The result is rows or a typed error, never a panic; after
//! a successful batch the O(1) row count agrees with a counted scan and with the primary-key
//! index, and after the rollback the table is back to its 50 rows.
//!
//! Run: `cargo +nightly fuzz run sql` from `fuzz/`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lightcone_mvcc::{ColumnDef, ColumnType, Database, IndexDef, ReadTx, TableDef, Value, U256};
use lightcone_query_planner::{execute, execute_batch, Params, QueryResult};

const ROWS: u64 = 50;

fn db() -> &'static Database {
    static DB: OnceLock<Database> = OnceLock::new();
    DB.get_or_init(|| {
        let db = Database::new();
        let mut tx = db.begin();
        let def = TableDef::new(
            "person",
            vec![
                ColumnDef::new("id", ColumnType::U64),
                ColumnDef::new("name", ColumnType::String),
                ColumnDef::new("age", ColumnType::I32),
                ColumnDef::new("owner", ColumnType::U256),
            ],
        )
        .with_primary_key(0)
        .with_index(IndexDef::btree(vec![2], false))
        .with_index(IndexDef::btree(vec![2, 3], false));
        let t = tx.create_table(def).unwrap();
        for i in 0..ROWS {
            let row = vec![
                Value::U64(i),
                Value::String(format!("p{i}").into()),
                Value::I32(i as i32 % 7 - 3),
                Value::U256(U256::from_u128(i as u128)),
            ];
            tx.insert(t, row).unwrap();
        }
        // An auto-increment table for INSERTs that omit the id.
        let item = TableDef::new(
            "item",
            vec![ColumnDef::new("id", ColumnType::U32), ColumnDef::new("name", ColumnType::String)],
        )
        .with_primary_key(0)
        .with_auto_inc(0)
        .with_index(IndexDef::btree(vec![1], true));
        tx.create_table(item).unwrap();
        tx.commit();
        db
    })
}

fn count(res: Result<QueryResult, lightcone_query_planner::PlanError>) -> Option<Value> {
    res.ok().and_then(|r| r.rows.into_iter().next()).and_then(|r| r.into_iter().next())
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let params = Params { sender: Some(U256::from_u128(3)) };
    let db = db();
    let _ = execute(&db.snapshot(), sql, &params);

    let mut tx = db.begin();
    if execute_batch(&mut tx, sql, &params).is_ok() {
        let none = Params::default();
        for table in ["person", "item"] {
            let fast = count(execute(&tx, &format!("SELECT COUNT(*) FROM {table}"), &none));
            let scan = count(execute(
                &tx,
                &format!("SELECT COUNT(*) FROM {table} WHERE NOT (id = 0 AND id = 1)"),
                &none,
            ));
            let pk = tx.table_id(table).ok().and_then(|t| tx.table(t).ok()).and_then(|v| {
                let pos = v.schema().def.indexes.iter().position(|i| i.columns == [0])?;
                v.index_len(*v.schema().index_ids.get(pos)?).ok()
            });
            assert_eq!(fast, scan, "{table}: row count disagrees with a counted scan after {sql:?}");
            assert_eq!(
                fast,
                pk.map(|n| Value::U64(n as u64)),
                "{table}: row count vs pk index after {sql:?}"
            );
        }
    }
    tx.rollback();
    let after = count(execute(&db.snapshot(), "SELECT COUNT(*) FROM person", &Params::default()));
    assert_eq!(after, Some(Value::U64(ROWS)), "rollback did not restore person after {sql:?}");
});
