//! Differential test against SQLite for joins: random 2- and 3-way inner equi-joins (including
//! self-joins) over three tables with indexed and unindexed join columns, with random
//! single-table and cross-table WHERE predicates, compared as row multisets and COUNT(*); and
//! ORDER BY over all tables' primary keys (a total order) with LIMIT, compared as lists.

mod common;

use common::{lightcone_rows, sqlite_rows, Cell, Rng};
use lightcone_mvcc::{ColumnDef, ColumnType, Database, IndexAlgorithm, IndexDef, TableDef, Value};
use lightcone_query_planner::explain;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const STRINGS: [&str; 4] = ["", "x", "y", "xy"];

#[derive(Clone, Copy)]
enum Kind {
    /// Integers in `lo..hi`; `group` 0 = I32 join columns, 1 = U8 join columns, 2 = not joinable.
    Int {
        lo: i64,
        hi: i64,
        group: u8,
    },
    Str,
}

struct Table {
    name: &'static str,
    rows: u32,
    cols: &'static [(&'static str, Kind)],
}

const fn int(lo: i64, hi: i64, group: u8) -> Kind {
    Kind::Int { lo, hi, group }
}

/// `a.x` btree-indexed; `b.z` hash-indexed; `c.(y, id)` composite btree; the rest unindexed.
const TABLES: [Table; 3] = [
    Table {
        name: "a",
        rows: 60,
        cols: &[("id", int(0, 60, 2)), ("x", int(-3, 4, 0)), ("y", int(0, 6, 1)), ("s", Kind::Str)],
    },
    Table {
        name: "b",
        rows: 80,
        cols: &[("id", int(0, 80, 2)), ("x", int(-3, 4, 0)), ("z", int(0, 6, 1)), ("w", int(-3, 4, 0))],
    },
    Table {
        name: "c",
        rows: 40,
        cols: &[("id", int(0, 40, 2)), ("z", int(0, 6, 1)), ("y", int(0, 6, 1)), ("v", int(-3, 4, 0))],
    },
];

fn column_type(name: &str) -> ColumnType {
    match name {
        "id" => ColumnType::U32,
        "x" | "w" | "v" => ColumnType::I32,
        "y" | "z" => ColumnType::U8,
        _ => ColumnType::String,
    }
}

fn value(ty: ColumnType, v: i64) -> Value {
    match ty {
        ColumnType::U32 => Value::U32(v as u32),
        ColumnType::I32 => Value::I32(v as i32),
        _ => Value::U8(v as u8),
    }
}

fn build() -> (Database, rusqlite::Connection) {
    let db = Database::new();
    let mut tx = db.begin();
    let sql = rusqlite::Connection::open_in_memory().unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for (ti, t) in TABLES.iter().enumerate() {
        let cols = t.cols.iter().map(|(n, _)| ColumnDef::new(*n, column_type(n))).collect();
        let mut def = TableDef::new(t.name, cols).with_primary_key(0);
        def = match ti {
            0 => def.with_index(IndexDef::btree(vec![1], false)),
            1 => def.with_index(IndexDef {
                name: String::new(),
                columns: vec![2],
                unique: false,
                algorithm: IndexAlgorithm::Hash,
            }),
            _ => def.with_index(IndexDef::btree(vec![2, 0], false)),
        };
        let id = tx.create_table(def).unwrap();
        let decl: Vec<String> = t
            .cols
            .iter()
            .map(|(n, k)| match (n, k) {
                (&"id", _) => "id INTEGER PRIMARY KEY".to_string(),
                (n, Kind::Str) => format!("{n} TEXT"),
                (n, _) => format!("{n} INTEGER"),
            })
            .collect();
        sql.execute_batch(&format!("CREATE TABLE {} ({})", t.name, decl.join(", "))).unwrap();
        for row_id in 0..t.rows {
            let mut row = Vec::new();
            let mut cells: Vec<rusqlite::types::Value> = Vec::new();
            for (n, k) in t.cols {
                match k {
                    _ if *n == "id" => {
                        row.push(Value::U32(row_id));
                        cells.push(rusqlite::types::Value::Integer(row_id.into()));
                    }
                    Kind::Int { lo, hi, .. } => {
                        let v = lo + rng.below((hi - lo) as u64) as i64;
                        row.push(value(column_type(n), v));
                        cells.push(rusqlite::types::Value::Integer(v));
                    }
                    Kind::Str => {
                        let s = STRINGS[rng.below(STRINGS.len() as u64) as usize];
                        row.push(Value::String(s.into()));
                        cells.push(rusqlite::types::Value::Text(s.into()));
                    }
                }
            }
            tx.insert(id, row).unwrap();
            let marks: Vec<String> = (1..=cells.len()).map(|i| format!("?{i}")).collect();
            sql.execute(
                &format!("INSERT INTO {} VALUES ({})", t.name, marks.join(", ")),
                rusqlite::params_from_iter(cells),
            )
            .unwrap();
        }
    }
    tx.commit();
    (db, sql)
}

const ALIASES: [&str; 3] = ["p", "q", "r"];
const OPS: [&str; 6] = ["=", "<>", "<", "<=", ">", ">="];

/// `alias.col op literal` over one of the query's table instances.
fn comparison(tables: Vec<usize>) -> impl Strategy<Value = String> + Clone {
    (any::<Index>(), any::<Index>(), any::<Index>(), any::<Index>(), any::<bool>()).prop_map(
        move |(pos, col, op, lit, flip)| {
            let pos = pos.index(tables.len());
            let t = &TABLES[tables[pos]];
            let (name, kind) = t.cols[col.index(t.cols.len())];
            let lit = match kind {
                Kind::Int { lo, hi, .. } => {
                    // One past each end, except below zero for unsigned columns.
                    let start = if lo == 0 { 0 } else { lo - 1 };
                    (start + lit.index((hi - start + 1) as usize) as i64).to_string()
                }
                Kind::Str => format!("'{}'", STRINGS[lit.index(STRINGS.len())]),
            };
            let op = OPS[op.index(OPS.len())];
            let col = format!("{}.{name}", ALIASES[pos]);
            if flip {
                format!("{lit} {op} {col}")
            } else {
                format!("{col} {op} {lit}")
            }
        },
    )
}

/// `alias.col op alias.col` between two same-typed columns of any instances in the query (the
/// same instance included): an equality across instances becomes a join key, the rest filters.
fn column_comparison(tables: Vec<usize>) -> impl Strategy<Value = String> + Clone {
    (0..3u8, any::<Index>(), any::<Index>(), any::<Index>(), any::<Index>(), any::<Index>()).prop_map(
        move |(group, p1, c1, p2, c2, op)| {
            let (p1, p2) = (p1.index(tables.len()), p2.index(tables.len()));
            let op = OPS[op.index(OPS.len())];
            format!("{} {op} {}", join_col(&tables, p1, group, c1), join_col(&tables, p2, group, c2))
        },
    )
}

fn predicate(tables: Vec<usize>) -> impl Strategy<Value = String> {
    let leaf = prop_oneof![3 => comparison(tables.clone()), 1 => column_comparison(tables)];
    prop_oneof![
        3 => prop::collection::vec(leaf.clone(), 1..4).prop_map(|v| v.join(" AND ")),
        2 => (leaf.clone(), leaf.clone(), leaf.clone()).prop_map(|(a, b, c)| format!("{a} AND ({b} OR {c})")),
        1 => (leaf.clone(), leaf.clone()).prop_map(|(a, b)| format!("NOT ({a} AND {b})")),
        1 => leaf,
    ]
}

/// `alias.col` of group `g` in the table at FROM position `pos`, chosen by `pick`.
fn join_col(tables: &[usize], pos: usize, group: u8, pick: Index) -> String {
    let cols: Vec<&str> = TABLES[tables[pos]]
        .cols
        .iter()
        .filter(|(_, k)| matches!(k, Kind::Int { group: g, .. } if *g == group))
        .map(|(n, _)| *n)
        .collect();
    format!("{}.{}", ALIASES[pos], cols[pick.index(cols.len())])
}

#[derive(Debug, Clone)]
struct Query {
    from: String,
    aliases: usize,
    pred: Option<String>,
    desc: Vec<bool>,
    limit: Option<u32>,
}

fn query() -> impl Strategy<Value = Query> {
    prop::collection::vec(0..3usize, 2..=3).prop_flat_map(|tables| {
        let n = tables.len();
        let ons = prop::collection::vec(
            prop::collection::vec((any::<Index>(), any::<bool>(), any::<Index>(), any::<Index>()), 1..3),
            n - 1,
        );
        let t2 = tables.clone();
        (
            Just(tables.clone()),
            ons,
            prop::option::weighted(0.8, predicate(t2)),
            prop::collection::vec(any::<bool>(), n),
            prop::option::of(0..30u32),
        )
            .prop_map(|(tables, ons, pred, desc, limit)| {
                let mut from = format!("{} AS p", TABLES[tables[0]].name);
                for (j, pairs) in ons.iter().enumerate() {
                    let j = j + 1;
                    let conds: Vec<String> = pairs
                        .iter()
                        .map(|(other, g, pl, pr)| {
                            let g = u8::from(*g);
                            let other = other.index(j);
                            format!("{} = {}", join_col(&tables, other, g, *pl), join_col(&tables, j, g, *pr))
                        })
                        .collect();
                    from += &format!(
                        " JOIN {} AS {} ON {}",
                        TABLES[tables[j]].name,
                        ALIASES[j],
                        conds.join(" AND ")
                    );
                }
                Query { from, aliases: tables.len(), pred, desc, limit }
            })
    })
}

fn sorted(mut v: Vec<Vec<Cell>>) -> Vec<Vec<Cell>> {
    v.sort();
    v
}

// Proves random 2- and 3-way equi-joins (self-joins, index and hash joins, single- and
// cross-table WHERE) match SQLite as multisets and by COUNT(*), and ORDER BY over all primary
// keys with LIMIT matches as ordered lists. Scale with LIGHTCONE_SQL_CASES (default 2000).
#[test]
fn joins_match_sqlite() {
    let (db, conn) = build();
    let cases = common::sql_cases();
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let (index_joins, hash_joins, nonempty) =
        (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    runner
        .run(&query(), |q| {
            let where_ = q.pred.as_ref().map_or(String::new(), |p| format!(" WHERE {p}"));
            let select = format!("SELECT * FROM {}{where_}", q.from);
            let plan = explain(&db.snapshot(), &select).unwrap();
            let lc = sorted(lightcone_rows(&db, &select));
            prop_assert_eq!(
                &lc,
                &sorted(sqlite_rows(&conn, &select)),
                "rows differ for {}\nplan:\n{}",
                select,
                plan
            );
            if !lc.is_empty() {
                nonempty.set(nonempty.get() + 1);
            }
            index_joins.set(index_joins.get() + plan.matches("IndexJoin").count() as u32);
            hash_joins.set(hash_joins.get() + plan.matches("HashJoin").count() as u32);
            let count = format!("SELECT COUNT(*) FROM {}{where_}", q.from);
            prop_assert_eq!(
                lightcone_rows(&db, &count),
                sqlite_rows(&conn, &count),
                "count differs for {}",
                count
            );
            let keys: Vec<String> = (0..q.aliases)
                .map(|i| format!("{}.id {}", ALIASES[i], if q.desc[i] { "DESC" } else { "ASC" }))
                .collect();
            let limit = q.limit.map_or(String::new(), |n| format!(" LIMIT {n}"));
            let ordered = format!("SELECT * FROM {}{where_} ORDER BY {}{limit}", q.from, keys.join(", "));
            prop_assert_eq!(
                lightcone_rows(&db, &ordered),
                sqlite_rows(&conn, &ordered),
                "ordered rows differ for {}",
                ordered
            );
            Ok(())
        })
        .unwrap();
    // The generator must exercise both join methods and produce non-empty results.
    let (i, h, n) = (index_joins.get(), hash_joins.get(), nonempty.get());
    assert!(
        cases < 50 || (i > cases / 10 && h > cases / 10 && n > cases / 4),
        "index {i}, hash {h}, nonempty {n}"
    );
}
