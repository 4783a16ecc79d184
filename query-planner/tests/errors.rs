//! One test per error kind: the variant, and that the message quotes the offending text.

mod common;

use lightcone_query_planner::{execute, Params, PlanError};

fn run(sql: &str) -> Result<lightcone_query_planner::QueryResult, PlanError> {
    execute(&common::people().snapshot(), sql, &Params::default())
}

// Proves a syntax error carries sqlparser's message.
#[test]
fn syntax_error() {
    let e = run("SELECT * FROM person WHERE").unwrap_err();
    assert!(matches!(e, PlanError::Syntax(_)), "{e:?}");
    assert!(e.to_string().contains("Expected"), "{e}");
    let e = run("SELEC * FROM person").unwrap_err();
    assert!(e.to_string().contains("SELEC"), "{e}");
}

// Proves an unknown table (or qualifier) is reported by name.
#[test]
fn unknown_table() {
    let e = run("SELECT * FROM nobody").unwrap_err();
    assert_eq!(e, PlanError::UnknownTable("nobody".into()));
    assert!(e.to_string().contains("`nobody`"), "{e}");
    let e = run("SELECT x.id FROM person AS p").unwrap_err();
    assert!(matches!(e, PlanError::UnknownTable(_)) && e.to_string().contains("x.id"), "{e}");
}

// Proves an unknown column is reported with its name, in projections and predicates.
#[test]
fn unknown_column() {
    for sql in ["SELECT nope FROM person", "SELECT * FROM person WHERE nope = 1"] {
        let e = run(sql).unwrap_err();
        assert!(matches!(e, PlanError::UnknownColumn { .. }), "{e:?}");
        assert!(e.to_string().contains("`nope`"), "{e}");
    }
}

// Proves an unquoted name matching several columns case-insensitively is ambiguous, while a
// quoted name picks the exact column.
#[test]
fn ambiguous_column() {
    let e = run("SELECT tag FROM person").unwrap_err();
    assert!(matches!(e, PlanError::AmbiguousColumn { .. }), "{e:?}");
    assert!(e.to_string().contains("`tag`"), "{e}");
    assert_eq!(run("SELECT \"Tag\" FROM person").unwrap().rows.len(), 20);
    // A unique case-insensitive match is fine.
    assert_eq!(run("SELECT AGE FROM person WHERE ID = 3").unwrap().rows.len(), 1);
}

// Proves literals that do not fit the column's type are type mismatches quoting the literal.
#[test]
fn type_mismatch() {
    for (sql, lit) in [
        ("SELECT * FROM person WHERE age = 'abc'", "'abc'"),
        ("SELECT * FROM person WHERE city = 256", "256"),
        ("SELECT * FROM person WHERE age = -1", "-1"),
        ("SELECT * FROM person WHERE name = 5", "5"),
        ("SELECT * FROM person WHERE age < 1.5", "1.5"),
        ("SELECT * FROM person WHERE age = :sender", ":sender"),
        ("SELECT * FROM person LIMIT 'x'", "'x'"),
        // Column-to-column comparisons need equal types.
        ("SELECT * FROM person WHERE age = name", "name (string)"),
        ("SELECT * FROM person WHERE city < score", "score (i16)"),
    ] {
        let e = run(sql).unwrap_err();
        assert!(matches!(e, PlanError::TypeMismatch { .. }), "{sql}: {e:?}");
        assert!(e.to_string().contains(&format!("`{lit}`")), "{sql}: {e}");
    }
}

// Proves DML on a read-only snapshot is refused as needing a write transaction, quoting it.
#[test]
fn dml_on_snapshot() {
    for (sql, quoted) in [
        ("INSERT INTO person VALUES (1)", "INSERT INTO person"),
        ("UPDATE person SET age = 1", "UPDATE person SET age = 1"),
        ("DELETE FROM person", "DELETE FROM person"),
    ] {
        let e = run(sql).unwrap_err();
        assert!(matches!(e, PlanError::WrongStatementKind { .. }), "{sql}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(quoted) && msg.contains("write transaction"), "{sql}: {msg}");
    }
}

// Proves outer/comma joins, subqueries, GROUP BY, ORDER BY expressions and other functions
// are refused as "not supported yet", quoting the construct.
#[test]
fn unsupported_constructs() {
    for (sql, quoted) in [
        ("SELECT * FROM person LEFT JOIN person AS q ON person.id = q.id", "LEFT JOIN"),
        ("SELECT * FROM person, person", "person, person"),
        ("SELECT * FROM person WHERE id IN (SELECT id FROM person)", "IN (SELECT"),
        ("SELECT * FROM (SELECT * FROM person)", "(SELECT * FROM person)"),
        ("SELECT age FROM person GROUP BY age", "GROUP BY age"),
        ("SELECT * FROM person ORDER BY age + 1", "ORDER BY age + 1"),
        ("SELECT MAX(age) FROM person", "MAX(age)"),
        ("SELECT COUNT(age) FROM person", "COUNT(age)"),
        ("SELECT * FROM person WHERE age BETWEEN 1 AND 2", "age BETWEEN 1 AND 2"),
        ("SELECT * FROM person LIMIT 1 OFFSET 2", "OFFSET 2"),
        ("SELECT DISTINCT age FROM person", "DISTINCT"),
        ("SELECT * FROM person WHERE age + 1 = 2", "age + 1"),
    ] {
        let e = run(sql).unwrap_err();
        assert!(matches!(e, PlanError::Unsupported(_)), "{sql}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(quoted) && msg.contains("not supported yet"), "{sql}: {msg}");
    }
}

// Proves a query using `:sender` fails without a sender value and filters by it with one.
#[test]
fn missing_sender() {
    let db = common::people();
    let sql = "SELECT id FROM person WHERE owner = :sender";
    let e = execute(&db.snapshot(), sql, &Params::default()).unwrap_err();
    assert_eq!(e, PlanError::MissingSender);
    assert!(e.to_string().contains(":sender"), "{e}");
    let p = Params { sender: Some(lightcone_mvcc::U256::from_u128(2)) };
    assert_eq!(execute(&db.snapshot(), sql, &p).unwrap().rows.len(), 5);
}

// Proves assorted hostile inputs return errors rather than panicking.
#[test]
fn no_panics_on_odd_input() {
    for sql in [
        "",
        ";",
        "SELECT",
        "SELECT * FROM person; SELECT * FROM person",
        "SELECT * FROM person WHERE id = 99999999999999999999999999999999999999999999",
        "SELECT * FROM person WHERE owner = 0x",
        "SELECT * FROM person WHERE owner = 0x1234567890123456789012345678901234567890123456789012345678901234567",
        "SELECT * FROM person WHERE score = -170141183460469231731687303715884105728",
        "SELECT * FROM person WHERE id = NULL",
        "SELECT * FROM person WHERE id = ?",
        "SELECT * FROM person LIMIT -1",
        "EXPLAIN ANALYZE SELECT * FROM person",
        "SELECT 1",
        "SELECT * FROM a.b.c",
    ] {
        assert!(run(sql).is_err(), "{sql}");
    }
}
