//! Fuzzes the SQL front end: any text is planned and run against a small table; the result is
//! rows or a typed error, never a panic.
//!
//! Run: `cargo +nightly fuzz run sql` from `fuzz/`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lightcone_mvcc::{ColumnDef, ColumnType, Database, IndexDef, TableDef, Value, U256};
use lightcone_query_planner::{execute, Params};

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
        .with_index(IndexDef::btree(vec![2], false));
        let t = tx.create_table(def).unwrap();
        for i in 0..50u64 {
            let row = vec![
                Value::U64(i),
                Value::String(format!("p{i}").into()),
                Value::I32(i as i32 % 7 - 3),
                Value::U256(U256::from_u128(i as u128)),
            ];
            tx.insert(t, row).unwrap();
        }
        tx.commit();
        db
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(sql) = std::str::from_utf8(data) {
        let params = Params { sender: Some(U256::from_u128(3)) };
        let _ = execute(&db().snapshot(), sql, &params);
    }
});
