//! Query results and index selection (through EXPLAIN) on the shared `person` fixture.

mod common;

use lightcone_mvcc::{ColumnType, Value, U256};
use lightcone_query_planner::{execute, explain, Params};

fn plan(sql: &str) -> String {
    explain(&common::people().snapshot(), sql).unwrap()
}

fn rows(sql: &str) -> Vec<Vec<Value>> {
    execute(&common::people().snapshot(), sql, &Params::default()).unwrap().rows
}

// Proves primary-key equality uses a seek on the primary-key index and the rest is a filter.
#[test]
fn pk_equality_seeks() {
    let p = plan("SELECT * FROM person WHERE id = 5 AND age > 3");
    assert_eq!(p.lines().next(), Some("IndexSeek person_id_idx_btree (id = 5)"), "{p}");
    assert!(p.contains("Filter (age > 3)"), "{p}");
    // Literal on the left is normalised.
    let p = plan("SELECT * FROM person WHERE 5 = id");
    assert!(p.starts_with("IndexSeek person_id_idx_btree (id = 5)"), "{p}");
}

// Proves a unique full-key seek beats a range and a non-unique seek.
#[test]
fn prefers_unique_index() {
    let p = plan("SELECT * FROM person WHERE age = 14 AND id = 2");
    assert!(p.starts_with("IndexSeek person_id_idx_btree (id = 2)"), "{p}");
    assert!(p.contains("Filter (age = 14)"), "{p}");
}

// Proves a range on a btree column becomes an IndexRange with both bounds.
#[test]
fn btree_range() {
    let p = plan("SELECT name FROM person WHERE age >= 10 AND 20 > age LIMIT 3");
    assert_eq!(p, "IndexRange person_age_idx_btree (age >= 10 AND age < 20)\nLimit 3\nProject name");
}

// Proves a predicate no index can serve (OR, <>) is a full scan plus filter.
#[test]
fn no_usable_index_full_scan() {
    let p = plan("SELECT * FROM person WHERE id = 1 OR age = 2");
    assert!(p.starts_with("FullScan person\nFilter (id = 1 OR age = 2)"), "{p}");
    let p = plan("SELECT * FROM person WHERE NOT (id <> 3)");
    assert!(p.starts_with("FullScan person\nFilter (NOT id <> 3)"), "{p}");
    assert!(plan("SELECT * FROM person").starts_with("FullScan person"));
}

// Proves a hash index serves full-key equality but never a range.
#[test]
fn hash_index_equality_only() {
    let p = plan("SELECT * FROM person WHERE city > 1");
    assert!(p.starts_with("FullScan person\nFilter (city > 1)"), "{p}");
    let p = plan("SELECT * FROM person WHERE city = 1");
    assert!(p.starts_with("IndexSeek person_city_idx_hash (city = 1)"), "{p}");
}

// Proves a btree key prefix is sought with the longest equality prefix.
#[test]
fn composite_prefix_seek() {
    let p = plan("SELECT * FROM person WHERE score = -3");
    assert!(p.starts_with("IndexSeek person_score_age_idx_btree (score = -3)"), "{p}");
    let p = plan("SELECT * FROM person WHERE age = 49 AND score = -3");
    assert!(p.starts_with("IndexSeek person_score_age_idx_btree (score = -3 AND age = 49)"), "{p}");
    assert_eq!(rows("SELECT id FROM person WHERE age = 49 AND score = -3"), vec![vec![Value::U64(7)]]);
}

// Proves results: projections, qualified names, aliases, COUNT(*), LIMIT, EXPLAIN as a query.
#[test]
fn results() {
    assert_eq!(
        rows("SELECT p.id, name FROM person AS p WHERE p.id = 4"),
        vec![vec![Value::U64(4), Value::String("p4".into())]]
    );
    assert_eq!(rows("SELECT person.* FROM person WHERE id = 4")[0].len(), 8);
    assert_eq!(rows("SELECT COUNT(*) FROM person WHERE city = 0"), vec![vec![Value::U64(7)]]);
    assert_eq!(rows("SELECT * FROM person LIMIT 5").len(), 5);
    assert_eq!(rows("SELECT * FROM person WHERE age >= 10 AND age < 20").len(), 4);
    let db = common::people();
    let r = execute(&db.snapshot(), "SELECT count(*) AS n FROM person", &Params::default()).unwrap();
    assert_eq!(r.columns, vec![("n".to_string(), ColumnType::U64)]);
    assert_eq!(r.rows, vec![vec![Value::U64(20)]]);
    let r = execute(&db.snapshot(), "EXPLAIN SELECT * FROM person WHERE id = 1", &Params::default()).unwrap();
    assert_eq!(r.columns, vec![("plan".to_string(), ColumnType::String)]);
    assert_eq!(r.rows[0], vec![Value::String("IndexSeek person_id_idx_btree (id = 1)".into())]);
}

// Proves hex literals, `:sender` and index seeks on identity (U256) columns.
#[test]
fn identity_literals_and_sender() {
    assert_eq!(rows("SELECT id FROM person WHERE owner = 0x3").len(), 5);
    assert_eq!(rows("SELECT id FROM person WHERE owner = X'03'").len(), 5);
    let p = plan("SELECT * FROM person WHERE owner = :sender");
    assert!(p.starts_with("IndexSeek person_owner_idx_btree (owner = :sender)"), "{p}");
    let db = common::people();
    let params = Params { sender: Some(U256::from_u128(1)) };
    let r = execute(&db.snapshot(), "SELECT COUNT(*) FROM person WHERE :sender = owner", &params).unwrap();
    assert_eq!(r.rows, vec![vec![Value::U64(5)]]);
}

// Proves an equality on the leading column of a composite btree index plus a range on the next
// column becomes one prefix IndexRange (beating the single-column range index on `age`), and
// returns the same rows as the same predicate forced through a full-scan filter.
#[test]
fn eq_prefix_plus_range() {
    let sql = "SELECT id FROM person WHERE score = -3 AND age > 5";
    let p = plan(sql);
    assert_eq!(p, "IndexRange person_score_age_idx_btree (score = -3 AND age > 5)\nProject id", "{p}");
    let p = plan("SELECT id FROM person WHERE age <= 40 AND score = -3 AND age >= 2");
    assert!(
        p.starts_with("IndexRange person_score_age_idx_btree (score = -3 AND age >= 2 AND age <= 40)"),
        "{p}"
    );
    for (fast, slow) in [
        (sql, "SELECT id FROM person WHERE NOT (NOT (score = -3 AND age > 5))"),
        (
            "SELECT id FROM person WHERE score = -2 AND age < 30",
            "SELECT id FROM person WHERE NOT (NOT (score = -2 AND age < 30))",
        ),
        (
            "SELECT id FROM person WHERE score = 4 AND age >= 0 AND age <= 49",
            "SELECT id FROM person WHERE NOT (NOT (score = 4))",
        ),
    ] {
        let mut a = rows(fast);
        let mut b = rows(slow);
        a.sort();
        b.sort();
        assert!(!b.is_empty(), "{slow} matches nothing; the comparison would be vacuous");
        assert_eq!(a, b, "{fast}");
    }
}

// Proves column-to-column comparisons within one table are filters (never index bounds) and
// evaluate per row, with the column on either side.
#[test]
fn column_to_column() {
    let p = plan("SELECT id FROM person WHERE city > \"Tag\" AND id = 4");
    assert_eq!(p, "IndexSeek person_id_idx_btree (id = 4)\nFilter (city > Tag)\nProject id", "{p}");
    let got = rows("SELECT id FROM person WHERE city > \"Tag\"");
    let want = rows("SELECT id FROM person WHERE city > 0");
    assert_eq!(got, want);
    assert_eq!(got.len(), 13);
    // Same column on both sides; and `TAG` (1) compared with `city`.
    assert_eq!(rows("SELECT id FROM person WHERE age = age").len(), 20);
    assert_eq!(rows("SELECT id FROM person WHERE age <> age").len(), 0);
    assert_eq!(
        rows("SELECT id FROM person WHERE \"TAG\" = city"),
        rows("SELECT id FROM person WHERE city = 1")
    );
}

// Proves COUNT(*) without WHERE or join is answered from the table's row count (visible in
// EXPLAIN) and agrees with a counted scan; with a WHERE it still scans.
#[test]
fn count_star_uses_row_count() {
    assert_eq!(plan("SELECT COUNT(*) FROM person"), "RowCount person\nCount AS count");
    assert_eq!(rows("SELECT COUNT(*) FROM person"), vec![vec![Value::U64(20)]]);
    assert_eq!(rows("SELECT COUNT(*) FROM person WHERE id >= 0"), vec![vec![Value::U64(20)]]);
    assert!(plan("SELECT COUNT(*) FROM person WHERE id >= 0").starts_with("IndexRange"));
    assert_eq!(rows("SELECT COUNT(*) FROM person LIMIT 0"), Vec::<Vec<Value>>::new());
}
