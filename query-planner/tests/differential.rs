//! Differential test against SQLite: random single-table WHERE queries must return the same
//! multiset of rows (and the same COUNT(*)) in Lightcone and in SQLite.

mod common;

use common::{Cell, Rng};
use lightcone_mvcc::{ColumnDef, ColumnType, Database, IndexAlgorithm, IndexDef, TableDef, Value};
use lightcone_query_planner::{execute_dml, explain, Params, PlanError};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const ROWS: u32 = 400;
const STRINGS: [&str; 5] = ["", "x", "y", "xy", "z"];

fn build() -> (Database, rusqlite::Connection) {
    build_rows(ROWS)
}

/// `t(id pk, a btree, b hash, c, d, s, e, f)` with indexes on `(c, d)` and `(a, e)`; `e` has
/// `a`'s type and `f` has `b`'s, for column-to-column comparisons.
fn build_rows(rows: u32) -> (Database, rusqlite::Connection) {
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
            ColumnDef::new("e", ColumnType::I32),
            ColumnDef::new("f", ColumnType::U8),
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
    .with_index(IndexDef::btree(vec![3, 4], false))
    .with_index(IndexDef::btree(vec![1, 6], false));
    let t = tx.create_table(def).unwrap();
    let sql = rusqlite::Connection::open_in_memory().unwrap();
    sql.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER, b INTEGER, c INTEGER, d INTEGER, s TEXT, \
         e INTEGER, f INTEGER)",
    )
    .unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for id in 0..rows {
        let a = rng.below(11) as i32 - 5;
        let b = rng.below(10) as u8;
        let c = rng.below(10) as u16;
        let d = rng.below(7) as i64 - 3;
        let s = STRINGS[rng.below(STRINGS.len() as u64) as usize];
        let e = rng.below(11) as i32 - 5;
        let f = rng.below(10) as u8;
        let row = vec![
            Value::U32(id),
            Value::I32(a),
            Value::U8(b),
            Value::U16(c),
            Value::I64(d),
            Value::String(s.into()),
            Value::I32(e),
            Value::U8(f),
        ];
        tx.insert(t, row).unwrap();
        sql.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![id, a, b, c, d, s, e, f],
        )
        .unwrap();
    }
    tx.commit();
    (db, sql)
}

/// A comparison: mostly `column op literal`, sometimes between two columns of one type
/// (`a`/`e` are I32, `b`/`f` are U8, or a column with itself), sometimes an equality prefix
/// plus a range on a composite index (`c = … AND d > …`, `a = … AND e <= …`).
fn comparison() -> impl Strategy<Value = String> {
    let op = prop::sample::select(vec!["=", "<>", "!=", "<", "<=", ">", ">="]);
    let pairs =
        prop::sample::select(vec![("a", "e"), ("e", "a"), ("b", "f"), ("f", "b"), ("d", "d"), ("s", "s")]);
    let range_op = prop::sample::select(vec!["<", "<=", ">", ">="]);
    prop_oneof![
        6 => literal_comparison(),
        2 => (pairs, op).prop_map(|((l, r), op)| format!("{l} {op} {r}")),
        1 => (0i64..12, range_op.clone(), -5i64..6).prop_map(|(c, op, d)| format!("c = {c} AND d {op} {d}")),
        1 => (-6i64..7, range_op.clone(), -6i64..7, range_op, -6i64..7).prop_map(|(a, o1, e1, o2, e2)| {
            format!("a = {a} AND e {o1} {e1} AND {e2} {o2} e")
        }),
    ]
}

/// A literal that fits the column's type.
fn literal_comparison() -> impl Strategy<Value = String> {
    let op = prop::sample::select(vec!["=", "<>", "!=", "<", "<=", ">", ">="]);
    let operand = prop_oneof![
        (0..ROWS as i64 + 5).prop_map(|v| ("id", v.to_string())),
        (-7i64..8).prop_map(|v| ("a", v.to_string())),
        (0i64..12).prop_map(|v| ("b", v.to_string())),
        (0i64..12).prop_map(|v| ("c", v.to_string())),
        (-5i64..6).prop_map(|v| ("d", v.to_string())),
        prop::sample::select(STRINGS.to_vec()).prop_map(|v| ("s", format!("'{v}'"))),
        (-7i64..8).prop_map(|v| ("e", v.to_string())),
        (0i64..12).prop_map(|v| ("f", v.to_string())),
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
    let prefix_ranges = std::cell::Cell::new(0u32);
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
            let plan = explain(&db.snapshot(), &select).unwrap();
            if plan.starts_with("Index") {
                index_paths.set(index_paths.get() + 1);
            }
            if plan.lines().next().is_some_and(|l| l.starts_with("IndexRange") && l.contains(" = ")) {
                prefix_ranges.set(prefix_ranges.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    // The grammar must actually exercise index access paths, not only full scans.
    let used = index_paths.get();
    assert!(cases < 50 || used > cases / 10, "only {used} of {cases} queries used an index");
    let prefix = prefix_ranges.get();
    assert!(cases < 50 || prefix > cases / 50, "only {prefix} of {cases} queries used an eq-prefix range");
}

/// A random INSERT (1–3 rows; ids collide with existing rows now and then), UPDATE (1–2
/// literal assignments, the primary key included, with a random WHERE) or DELETE.
fn dml_statement() -> impl Strategy<Value = String> {
    let row = (
        0..DML_ROWS + 20,
        -5i64..6,
        0u8..10,
        0u16..10,
        -3i64..4,
        prop::sample::select(STRINGS.to_vec()),
        -5i64..6,
        0u8..10,
    )
        .prop_map(|(id, a, b, c, d, s, e, f)| format!("({id}, {a}, {b}, {c}, {d}, '{s}', {e}, {f})"));
    let assignment = prop_oneof![
        (0..DML_ROWS + 20).prop_map(|v| format!("id = {v}")),
        (-5i64..6).prop_map(|v| format!("a = {v}")),
        (0u8..10).prop_map(|v| format!("b = {v}")),
        (0u16..10).prop_map(|v| format!("c = {v}")),
        (-3i64..4).prop_map(|v| format!("d = {v}")),
        prop::sample::select(STRINGS.to_vec()).prop_map(|v| format!("s = '{v}'")),
        (-5i64..6).prop_map(|v| format!("e = {v}")),
    ];
    prop_oneof![
        2 => prop::collection::vec(row, 1..4).prop_map(|rows| format!("INSERT INTO t VALUES {}", rows.join(", "))),
        1 => (0..DML_ROWS + 20, -5i64..6).prop_map(|(id, a)| format!("INSERT INTO t (a, id, b, c, d, s, e, f) VALUES ({a}, {id}, 1, 2, 3, 'x', 0, 0)")),
        3 => (prop::collection::vec(assignment, 1..3), prop::option::weighted(0.9, query_predicate())).prop_map(|(set, pred)| {
            // The same column twice is an error in Lightcone but not in SQLite; keep the first.
            let mut seen = Vec::new();
            let set: Vec<String> = set.into_iter().filter(|a| {
                let col = a.split(' ').next().unwrap_or_default().to_string();
                let fresh = !seen.contains(&col);
                seen.push(col);
                fresh
            }).collect();
            match pred {
                Some(p) => format!("UPDATE t SET {} WHERE {p}", set.join(", ")),
                None => format!("UPDATE t SET {}", set.join(", ")),
            }
        }),
        2 => prop::option::weighted(0.95, query_predicate()).prop_map(|pred| match pred {
            Some(p) => format!("DELETE FROM t WHERE {p}"),
            None => "DELETE FROM t".to_string(),
        }),
    ]
}

const DML_ROWS: u32 = 60;

// Proves random sequences of INSERT / UPDATE / DELETE leave the same table contents (as a
// multiset) as in SQLite, with the same success/failure per statement (unique-key collisions
// fail in both) and the same changed-row counts. Each Lightcone statement runs in its own
// transaction, committed on success and rolled back on error (SQLite statements are atomic).
// Scale with LIGHTCONE_SQL_CASES (default 2000 statements).
#[test]
fn dml_matches_sqlite() {
    let cases = (common::sql_cases() / 8).max(1);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let (failures, changes) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u64));
    runner
        .run(&prop::collection::vec(dml_statement(), 1..9), |stmts| {
            let (db, conn) = build_rows(DML_ROWS);
            for sql in &stmts {
                let mut tx = db.begin();
                let lc = execute_dml(&mut tx, sql, &Params::default());
                let sq = conn.execute(sql, []);
                match (&lc, &sq) {
                    (Ok(st), Ok(n)) => {
                        tx.commit();
                        let changed = st.rows_inserted + st.rows_deleted + st.rows_updated;
                        prop_assert_eq!(changed, *n as u64, "changed rows differ for {}", sql);
                        changes.set(changes.get() + changed);
                    }
                    (Err(e), Err(_)) => {
                        tx.rollback();
                        prop_assert!(matches!(e, PlanError::UniqueViolation { .. }), "{}: {:?}", sql, e);
                        failures.set(failures.get() + 1);
                    }
                    _ => prop_assert!(false, "{}: lightcone {:?}, sqlite {:?}", sql, lc, sq),
                }
                let all = "SELECT * FROM t";
                prop_assert_eq!(
                    lightcone_rows(&db, all),
                    sqlite_rows(&conn, all),
                    "contents differ after {}",
                    sql
                );
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "{cases} DML sequences: {} rows changed, {} statements failed in both",
        changes.get(),
        failures.get()
    );
    // Both outcomes must actually occur.
    assert!(cases < 50 || failures.get() > 0, "no statement failed");
    assert!(cases < 50 || changes.get() > u64::from(cases), "only {} rows changed", changes.get());
}
