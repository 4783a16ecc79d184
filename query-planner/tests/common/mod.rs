//! Shared fixtures: a `person` table with a primary key, a btree index, a hash index and an
//! identity column; the chat tables; a deterministic generator for differential tests.

#![allow(dead_code)]

use lightcone_mvcc::{ColumnDef, ColumnType, Database, IndexAlgorithm, IndexDef, TableDef, Value, U256};

pub fn people() -> Database {
    let db = Database::new();
    let mut tx = db.begin();
    let def = TableDef::new(
        "person",
        vec![
            ColumnDef::new("id", ColumnType::U64),
            ColumnDef::new("name", ColumnType::String),
            ColumnDef::new("age", ColumnType::U32),
            ColumnDef::new("city", ColumnType::U8),
            ColumnDef::new("owner", ColumnType::U256),
            ColumnDef::new("score", ColumnType::I16),
            ColumnDef::new("Tag", ColumnType::U8),
            ColumnDef::new("TAG", ColumnType::U8),
        ],
    )
    .with_primary_key(0)
    .with_index(IndexDef::btree(vec![2], false))
    .with_index(IndexDef {
        name: String::new(),
        columns: vec![3],
        unique: false,
        algorithm: IndexAlgorithm::Hash,
    })
    .with_index(IndexDef::btree(vec![5, 2], false))
    .with_index(IndexDef::btree(vec![4], false));
    let t = tx.create_table(def).unwrap();
    for i in 0..20u64 {
        tx.insert(
            t,
            vec![
                Value::U64(i),
                Value::String(format!("p{i}").into()),
                Value::U32((i * 7 % 50) as u32),
                Value::U8((i % 3) as u8),
                Value::U256(U256::from_u128((i % 4) as u128)),
                Value::I16(i as i16 - 10),
                Value::U8(0),
                Value::U8(1),
            ],
        )
        .unwrap();
    }
    tx.commit();
    db
}

/// `user(identity pk, name, city)`, `message(id pk, sender btree-indexed, room, body)` and
/// `room(id, title)` with no indexes.
pub fn chat() -> Database {
    let db = Database::new();
    let mut tx = db.begin();
    let user = tx
        .create_table(
            TableDef::new(
                "user",
                vec![
                    ColumnDef::new("identity", ColumnType::U256),
                    ColumnDef::new("name", ColumnType::String),
                    ColumnDef::new("city", ColumnType::U8),
                ],
            )
            .with_primary_key(0),
        )
        .unwrap();
    let message = tx
        .create_table(
            TableDef::new(
                "message",
                vec![
                    ColumnDef::new("id", ColumnType::U64),
                    ColumnDef::new("sender", ColumnType::U256),
                    ColumnDef::new("room", ColumnType::U32),
                    ColumnDef::new("body", ColumnType::String),
                ],
            )
            .with_primary_key(0)
            .with_index(IndexDef::btree(vec![1], false)),
        )
        .unwrap();
    let room = tx
        .create_table(TableDef::new(
            "room",
            vec![ColumnDef::new("id", ColumnType::U32), ColumnDef::new("title", ColumnType::String)],
        ))
        .unwrap();
    for i in 0..4u128 {
        let row = vec![
            Value::U256(U256::from_u128(i)),
            Value::String(format!("u{i}").into()),
            Value::U8(i as u8 % 2),
        ];
        tx.insert(user, row).unwrap();
    }
    for r in 0..3u32 {
        tx.insert(room, vec![Value::U32(r), Value::String(format!("r{r}").into())]).unwrap();
    }
    // 10 messages; sender 4 does not exist; room 3 does not exist.
    for i in 0..10u64 {
        let row = vec![
            Value::U64(i),
            Value::U256(U256::from_u128((i % 5) as u128)),
            Value::U32((i % 4) as u32),
            Value::String(format!("m{i}").into()),
        ];
        tx.insert(message, row).unwrap();
    }
    tx.commit();
    db
}

/// Deterministic xorshift generator for table contents.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One result cell as both engines can report it (integers widened to i64).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cell {
    I(i64),
    S(String),
}

/// SQLite's rows for `sql`, in its order.
pub fn sqlite_rows(conn: &rusqlite::Connection, sql: &str) -> Vec<Vec<Cell>> {
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Integer(v) => Cell::I(v),
                    rusqlite::types::ValueRef::Text(t) => Cell::S(String::from_utf8_lossy(t).into_owned()),
                    other => panic!("unexpected sqlite value {other:?}"),
                })
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Lightcone's rows for `sql`, in its order.
pub fn lightcone_rows(db: &Database, sql: &str) -> Vec<Vec<Cell>> {
    let res =
        lightcone_query_planner::execute(&db.snapshot(), sql, &lightcone_query_planner::Params::default())
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    res.rows
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| match v {
                    Value::String(s) => Cell::S(s.into()),
                    v => Cell::I(v.as_i128().expect("integer") as i64),
                })
                .collect()
        })
        .collect()
}

/// Queries per differential test: `LIGHTCONE_SQL_CASES`, default 2,000 — thousands in CI (the
/// runs take seconds), more for soak runs.
pub fn sql_cases() -> u32 {
    std::env::var("LIGHTCONE_SQL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}
