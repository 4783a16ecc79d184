//! Differential test against SQLite: random single-table WHERE queries must return the same
//! multiset of rows (and the same COUNT(*)) in Lightcone and in SQLite.

mod common;

use common::{Cell, Rng};
use lightcone_mvcc::{ColumnDef, ColumnType, Database, IndexAlgorithm, IndexDef, TableDef, Value};
use lightcone_query_planner::explain;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const ROWS: u32 = 400;
const STRINGS: [&str; 5] = ["", "x", "y", "xy", "z"];

fn build() -> (Database, rusqlite::Connection) {
    let db = Database::new();
    let mut tx = db.begin();
    let def = TableDef::new(
        "t",
        vec![
            ColumnDef::new("id", ColumnType::U32),
            ColumnDef::new("a", ColumnType::I32),
            ColumnDef::new("b", ColumnType::U8),
            ColumnDef::new("c", ColumnType::U16),
            ColumnDef::new("d", ColumnType::I64),
            ColumnDef::new("s", ColumnType::String),
        ],
    )
    .with_primary_key(0)
    .with_index(IndexDef::btree(vec![1], false))
    .with_index(IndexDef {
        name: String::new(),
        columns: vec![2],
        unique: false,
        algorithm: IndexAlgorithm::Hash,
    })
    .with_index(IndexDef::btree(vec![3, 4], false));
    let t = tx.create_table(def).unwrap();
    let sql = rusqlite::Connection::open_in_memory().unwrap();
    sql.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER, c INTEGER, d INTEGER, s TEXT)",
    )
    .unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for id in 0..ROWS {
        let a = rng.below(11) as i32 - 5;
        let b = rng.below(10) as u8;
        let c = rng.below(10) as u16;
        let d = rng.below(7) as i64 - 3;
        let s = STRINGS[rng.below(STRINGS.len() as u64) as usize];
        let row = vec![
            Value::U32(id),
            Value::I32(a),
            Value::U8(b),
            Value::U16(c),
            Value::I64(d),
            Value::String(s.into()),
        ];
        tx.insert(t, row).unwrap();
        sql.execute("INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6)", rusqlite::params![id, a, b, c, d, s])
            .unwrap();
    }
    tx.commit();
    (db, sql)
}

/// A literal that fits the column's type.
fn comparison() -> impl Strategy<Value = String> {
    let op = prop::sample::select(vec!["=", "<>", "!=", "<", "<=", ">", ">="]);
    let operand = prop_oneof![
        (0..ROWS as i64 + 5).prop_map(|v| ("id", v.to_string())),
        (-7i64..8).prop_map(|v| ("a", v.to_string())),
        (0i64..12).prop_map(|v| ("b", v.to_string())),
        (0i64..12).prop_map(|v| ("c", v.to_string())),
        (-5i64..6).prop_map(|v| ("d", v.to_string())),
        prop::sample::select(STRINGS.to_vec()).prop_map(|v| ("s", format!("'{v}'"))),
    ];
    (operand, op, any::<bool>()).prop_map(|((col, lit), op, flip)| {
        if flip {
            format!("{lit} {op} {col}")
        } else {
            format!("{col} {op} {lit}")
        }
    })
}

fn predicate() -> impl Strategy<Value = String> {
    comparison().prop_recursive(4, 16, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(l, r)| format!("{l} AND {r}")),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| format!("({l}) OR ({r})")),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| format!("{l} OR {r}")),
            inner.clone().prop_map(|p| format!("NOT ({p})")),
            inner.prop_map(|p| format!("({p})")),
        ]
    })
}

/// Predicates, with conjunctions at the top weighted up so that index paths get exercised.
fn query_predicate() -> impl Strategy<Value = String> {
    prop_oneof![
        predicate(),
        (comparison(), predicate()).prop_map(|(c, p)| format!("{c} AND ({p})")),
        prop::collection::vec(comparison(), 1..4).prop_map(|v| v.join(" AND ")),
    ]
}

fn sqlite_rows(conn: &rusqlite::Connection, sql: &str) -> Vec<Vec<Cell>> {
    let mut rows = common::sqlite_rows(conn, sql);
    rows.sort();
    rows
}

fn lightcone_rows(db: &Database, sql: &str) -> Vec<Vec<Cell>> {
    let mut rows = common::lightcone_rows(db, sql);
    rows.sort();
    rows
}

// Proves random WHERE queries (comparisons, AND/OR/NOT, parentheses, literals on either side,
// over primary-key, btree, hash, composite-index and unindexed columns) return the same row
// multisets and COUNT(*) as SQLite. Scale with LIGHTCONE_SQL_CASES (default 2000).
#[test]
fn matches_sqlite() {
    let (db, conn) = build();
    let cases = common::sql_cases();
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let index_paths = std::cell::Cell::new(0u32);
    runner
        .run(&query_predicate(), |pred| {
            let select = format!("SELECT * FROM t WHERE {pred}");
            let lc = lightcone_rows(&db, &select);
            let sq = sqlite_rows(&conn, &select);
            prop_assert_eq!(
                &lc,
                &sq,
                "rows differ for {}\nplan:\n{}",
                select,
                explain(&db.snapshot(), &select).unwrap()
            );
            let count = format!("SELECT COUNT(*) FROM t WHERE {pred}");
            prop_assert_eq!(
                lightcone_rows(&db, &count),
                sqlite_rows(&conn, &count),
                "count differs for {}",
                count
            );
            if explain(&db.snapshot(), &select).unwrap().starts_with("Index") {
                index_paths.set(index_paths.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    // The grammar must actually exercise index access paths, not only full scans.
    let used = index_paths.get();
    assert!(cases < 50 || used > cases / 10, "only {used} of {cases} queries used an index");
}
