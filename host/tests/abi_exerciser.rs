//! The ABI exerciser module (built with the official `spacetimedb` 2.10 crate) on the host:
//! every column type, every datastore import, rollback, panics, fuel, logs, the call context,
//! scheduled reducers and the module definition. `host/fixtures/README.md` describes the module.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lightcone_host::logs::LogLevel;
use lightcone_host::module_def::ScheduledFunction;
use lightcone_host::{CallerInfo, HostError, ModuleHost, ReducerArgs, ReducerStatus};
use lightcone_mvcc::{Value, I256, U256};

const DUP_ITEM: &str = "insertion error on table `item`:duplicate unique column";

fn publish_ex() -> (ModuleHost, std::sync::Arc<lightcone_mvcc::Database>) {
    publish("abi_exerciser")
}

/// The row of `table` whose column `col` equals `key`.
fn row_where(db: &lightcone_mvcc::Database, table: &str, col: usize, key: &Value) -> Vec<Value> {
    rows(db, table)
        .into_iter()
        .find(|r| &r[col] == key)
        .unwrap_or_else(|| panic!("no {table} row with column {col} = {key:?}"))
}

fn item_ids(db: &lightcone_mvcc::Database) -> Vec<u64> {
    let mut ids: Vec<u64> = rows(db, "item")
        .iter()
        .map(|r| match r[0] {
            Value::U64(id) => id,
            ref other => panic!("item id {other:?}"),
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Log messages a call produced (records appended during `f`).
fn logs_of<T>(host: &mut ModuleHost, f: impl FnOnce(&mut ModuleHost) -> T) -> (T, Vec<String>) {
    let before = log_records(host).len();
    let out = f(host);
    (out, log_messages_since(host, before))
}

fn failed(out: &lightcone_host::ReducerOutcome) -> String {
    match &out.status {
        ReducerStatus::Failed(m) => m.clone(),
        other => panic!("{}: expected Failed, got {other:?}", out.reducer),
    }
}

fn panicked(out: &lightcone_host::ReducerOutcome) -> String {
    match &out.status {
        ReducerStatus::Panicked(m) => m.clone(),
        other => panic!("{}: expected Panicked, got {other:?}", out.reducer),
    }
}

fn some(payload: &[u8]) -> Value {
    let mut v = vec![0u8];
    v.extend_from_slice(payload);
    Value::Bsatn(v.into())
}

fn none() -> Value {
    Value::Bsatn(vec![1u8].into())
}

// ---------------------------------------------------------------------------------------------
// 1. Every column type
// ---------------------------------------------------------------------------------------------

#[test]
fn all_types_min_and_max_round_trip() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "insert_all_types_min", "[1]");
    call_ok(&mut host, "check_all_types_min", "[1]");
    let max = call_ok(&mut host, "insert_all_types_max", "[2]");
    let m = failed(&call(&mut host, "check_all_types_min", "[2]"));
    assert!(m.starts_with("all_types row 2 differs from the min sample: AllTypes {"), "{m}");
    assert_eq!(failed(&call(&mut host, "check_all_types_min", "[3]")), "no all_types row with id 3");

    // The engine holds the decoded values.
    let min = row_where(&db, "all_types", 0, &Value::U32(1));
    assert_eq!(min.len(), 28);
    assert_eq!(min[1], Value::U8(0));
    assert_eq!(min[6], Value::U256(U256::ZERO));
    assert_eq!(min[7], Value::I8(i8::MIN));
    assert_eq!(min[11], Value::I128(i128::MIN));
    assert_eq!(min[12], Value::I256(I256::MIN));
    assert_eq!(min[15], Value::Bool(false));
    assert_eq!(min[16], Value::String("".into()));
    assert_eq!(min[17], Value::Bytes(Vec::new().into()));
    assert_eq!(min[18], Value::U256(U256::ZERO), "Identity::ZERO");
    assert_eq!(min[19], Value::U128(0), "ConnectionId::ZERO");
    assert_eq!(min[20], Value::I64(0), "Timestamp::UNIX_EPOCH");
    assert_eq!(min[21], Value::I64(-1), "TimeDuration -1 µs");
    assert_eq!(min[22], Value::U128(0), "Uuid::NIL");
    assert_eq!(min[23], none(), "Option None = tag 1");
    assert_eq!(min[24], Value::Bsatn(vec![0, 0, 0, 0].into()), "empty Vec<String>");
    let mut empty_point = vec![0u8; 8];
    empty_point.extend_from_slice(&bsatn_str(""));
    assert_eq!(min[25], Value::Bsatn(empty_point.into()));
    assert_eq!(min[26], Value::Bsatn(vec![0].into()), "Shape::Empty");
    assert_eq!(min[27], Value::Bsatn(vec![0].into()), "Color::Red");

    let max_row = row_where(&db, "all_types", 0, &Value::U32(2));
    assert_eq!(max_row[1], Value::U8(u8::MAX));
    assert_eq!(max_row[2], Value::U16(u16::MAX));
    assert_eq!(max_row[3], Value::U32(u32::MAX));
    assert_eq!(max_row[4], Value::U64(u64::MAX));
    assert_eq!(max_row[5], Value::U128(u128::MAX));
    assert_eq!(max_row[6], Value::U256(U256::MAX));
    assert_eq!(max_row[8], Value::I16(i16::MAX));
    assert_eq!(max_row[10], Value::I64(i64::MAX));
    assert_eq!(max_row[12], Value::I256(I256::MAX));
    assert_eq!(max_row[13], Value::F32(1.5));
    assert_eq!(max_row[14], Value::F64(-0.25));
    assert_eq!(max_row[15], Value::Bool(true));
    assert_eq!(max_row[16], Value::String("héllo ✓".into()));
    assert_eq!(max_row[17], Value::Bytes(vec![0, 1, 2, 255].into()));
    assert_eq!(max_row[18], u256_value([1; 32]), "caller identity");
    assert_eq!(max_row[19], Value::U128(u128::from_le_bytes([1; 16])), "caller connection id");
    assert_eq!(max_row[20], Value::I64(max.timestamp_micros), "reducer timestamp");
    assert_eq!(max_row[21], Value::I64(1_500_000));
    assert_eq!(max_row[22], Value::U128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef));
    assert_eq!(max_row[23], some(&(-7i32).to_le_bytes()));
    let mut strings = 3u32.to_le_bytes().to_vec();
    for s in ["a", "", "c"] {
        strings.extend_from_slice(&bsatn_str(s));
    }
    assert_eq!(max_row[24], Value::Bsatn(strings.into()));
    let point = |x: i32, y: i32, label: &str| {
        let mut p = x.to_le_bytes().to_vec();
        p.extend_from_slice(&y.to_le_bytes());
        p.extend_from_slice(&bsatn_str(label));
        p
    };
    assert_eq!(max_row[25], Value::Bsatn(point(-1, 2, "p").into()));
    let mut rect = vec![2u8];
    rect.extend_from_slice(&point(3, -4, "r"));
    assert_eq!(max_row[26], Value::Bsatn(rect.into()), "Shape::Rect");
    assert_eq!(max_row[27], Value::Bsatn(vec![2].into()), "Color::Blue");

    // The guest reads every type back (log_all_types decodes the row from the host).
    let (out, logs) = logs_of(&mut host, |h| call(h, "log_all_types", "[2]"));
    assert!(out.is_committed(), "{:?}", out.status);
    let line = logs.iter().find(|l| l.starts_with("AllTypes {")).expect("Debug line");
    for part in [
        "a_u8: 255",
        "a_u64: 18446744073709551615",
        "a_u128: 340282366920938463463374607431768211455",
        "a_i128: 170141183460469231731687303715884105727",
        "a_string: \"héllo ✓\"",
        "a_bytes: [0, 1, 2, 255]",
        "a_option: Some(-7)",
        "a_strings: [\"a\", \"\", \"c\"]",
        "a_point: Point { x: -1, y: 2, label: \"p\" }",
        "a_shape: Rect(Point { x: 3, y: -4, label: \"r\" })",
        "a_color: Blue",
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
    assert_eq!(failed(&call(&mut host, "log_all_types", "[9]")), "no all_types row with id 9");

    // Same id, different content: the crate's `insert` panics.
    let m = panicked(&call(&mut host, "insert_all_types_min", "[2]"));
    assert!(m.contains("insertion error on table `all_types`:duplicate unique column"), "{m}");
    assert_eq!(rows(&db, "all_types").len(), 2);
}

/// The min sample as SATS-JSON (an object keyed by column name).
const MIN_JSON: &str = r#"{
    "id": 5, "a_u8": 0, "a_u16": 0, "a_u32": 0, "a_u64": 0, "a_u128": 0, "a_u256": "0x0",
    "a_i8": -128, "a_i16": -32768, "a_i32": -2147483648, "a_i64": -9223372036854775808,
    "a_i128": -170141183460469231731687303715884105728,
    "a_i256": "-0x8000000000000000000000000000000000000000000000000000000000000000",
    "a_f32": 0.0, "a_f64": 0.0, "a_bool": false, "a_string": "", "a_bytes": "",
    "a_identity": {"__identity__": "0x0000000000000000000000000000000000000000000000000000000000000000"},
    "a_connection_id": {"__connection_id__": 0},
    "a_timestamp": {"__timestamp_micros_since_unix_epoch__": 0},
    "a_duration": {"__time_duration_micros__": -1},
    "a_uuid": {"__uuid__": 0},
    "a_option": {"none": []},
    "a_strings": [],
    "a_point": {"x": 0, "y": 0, "label": ""},
    "a_shape": {"Empty": []},
    "a_color": {"Red": []}
}"#;

#[test]
fn insert_all_types_from_json_object_and_array() {
    let (mut host, db) = publish_ex();
    // Keyed by parameter name, the row as an object keyed by column name.
    let out = call(&mut host, "insert_all_types", &format!(r#"{{"row": {MIN_JSON}}}"#));
    assert!(out.is_committed(), "{:?}", out.status);
    // The guest decodes it back and finds exactly the min sample.
    call_ok(&mut host, "check_all_types_min", "[5]");

    // Positional, the row as a positional array.
    let row = r#"[[6, 255, 65535, 4294967295, 18446744073709551615,
        340282366920938463463374607431768211455,
        "0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        127, 32767, 2147483647, 9223372036854775807, 170141183460469231731687303715884105727,
        "0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        1.5, -0.25, true, "héllo ✓", "000102ff",
        ["0x0000000000000000000000000000000000000000000000000000000000000102"],
        [258], [1700000000000000], [1500000], [66],
        {"some": -7}, ["a", "", "c"], [-1, 2, "p"], {"Rect": [3, -4, "r"]}, {"Blue": []}]]"#;
    let out = call(&mut host, "insert_all_types", row);
    assert!(out.is_committed(), "{:?}", out.status);
    let r = row_where(&db, "all_types", 0, &Value::U32(6));
    assert_eq!(r[1], Value::U8(255));
    assert_eq!(r[5], Value::U128(u128::MAX));
    assert_eq!(r[6], Value::U256(U256::MAX));
    assert_eq!(r[11], Value::I128(i128::MAX));
    assert_eq!(r[12], Value::I256(I256::MAX));
    assert_eq!(r[16], Value::String("héllo ✓".into()));
    assert_eq!(r[17], Value::Bytes(vec![0, 1, 2, 255].into()));
    let mut identity = [0u8; 32];
    identity[0] = 2;
    identity[1] = 1; // 0x…0102 big-endian hex → little-endian bytes 02 01 00 …
    assert_eq!(r[18], u256_value(identity));
    assert_eq!(r[19], Value::U128(258));
    assert_eq!(r[20], Value::I64(1_700_000_000_000_000));
    assert_eq!(r[21], Value::I64(1_500_000));
    assert_eq!(r[22], Value::U128(66));
    assert_eq!(r[23], some(&(-7i32).to_le_bytes()));
    let mut rect = vec![2u8];
    rect.extend_from_slice(&3i32.to_le_bytes());
    rect.extend_from_slice(&(-4i32).to_le_bytes());
    rect.extend_from_slice(&bsatn_str("r"));
    assert_eq!(r[26], Value::Bsatn(rect.into()));
    assert_eq!(r[27], Value::Bsatn(vec![2].into()));
    let (out, logs) = logs_of(&mut host, |h| call(h, "log_all_types", "[6]"));
    assert!(out.is_committed());
    let line = logs.iter().find(|l| l.starts_with("AllTypes {")).expect("Debug line");
    assert!(line.contains("a_shape: Rect(Point { x: 3, y: -4, label: \"r\" })"), "{line}");

    // A sum with a payload of another variant, and an Option<Vec<String>>-like nesting.
    let tags = MIN_JSON
        .replace(r#""id": 5"#, r#""id": 7"#)
        .replace(r#""a_shape": {"Empty": []}"#, r#""a_shape": {"Tags": ["x", "yz"]}"#);
    call_ok(&mut host, "insert_all_types", &format!("[{tags}]"));
    let r = row_where(&db, "all_types", 0, &Value::U32(7));
    let mut shape = vec![3u8];
    shape.extend_from_slice(&2u32.to_le_bytes());
    shape.extend_from_slice(&bsatn_str("x"));
    shape.extend_from_slice(&bsatn_str("yz"));
    assert_eq!(r[26], Value::Bsatn(shape.into()));
}

#[test]
fn many_args_logs_and_journals_its_arguments() {
    let (mut host, db) = publish_ex();
    let args = r#"[340282366920938463463374607431768211455, -5, {"some": "x"}, [1, 2],
        {"x": 1, "y": 2, "label": "l"}, {"Circle": 0.5}, {"Green": []}, true]"#;
    let (out, logs) = logs_of(&mut host, |h| call(h, "many_args", args));
    assert!(out.is_committed(), "{:?}", out.status);
    let detail = r#"340282366920938463463374607431768211455 -5 Some("x") [1, 2] Point { x: 1, y: 2, label: "l" } Circle(0.5) Green true"#;
    assert!(logs.contains(&format!("many_args: {detail}")), "{logs:?}");
    let ev = row_where(&db, "event_log", 1, &Value::String("many_args".into()));
    assert_eq!(ev[2], Value::String(detail.into()));
    assert_eq!(ev[3], u256_value([1; 32]));
    assert_eq!(ev[4], Value::I64(out.timestamp_micros));
    // The same call as BSATN (what the WebSocket API sends) gives the same line.
    let mut b = u128::MAX.to_le_bytes().to_vec();
    b.extend_from_slice(&(-5i64).to_le_bytes());
    b.push(1); // None
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&7i32.to_le_bytes());
    b.extend_from_slice(&8i32.to_le_bytes());
    b.extend_from_slice(&bsatn_str("q"));
    b.push(0); // Shape::Empty
    b.push(0); // Color::Red
    b.push(0); // false
    let (out, logs) =
        logs_of(&mut host, |h| h.call_reducer("many_args", &caller(1), ReducerArgs::Bsatn(b)).unwrap());
    assert!(out.is_committed(), "{:?}", out.status);
    assert!(
        logs.contains(
            &"many_args: 340282366920938463463374607431768211455 -5 None [] Point { x: 7, y: 8, label: \"q\" } Empty Red false"
                .to_string()
        ),
        "{logs:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Sequences, constraints, updates, deletes, scans, iterators
// ---------------------------------------------------------------------------------------------

#[test]
fn auto_inc_ids_are_written_back_and_unique_constraints_hold() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "seed_items", "[10]");
    assert_eq!(item_ids(&db), (1..=10).collect::<Vec<_>>());
    let r = row_where(&db, "item", 0, &Value::U64(4));
    assert_eq!(
        r,
        vec![
            Value::U64(4),
            Value::String("item-3".into()),
            Value::I32(30),
            Value::U32(0),
            Value::String("b3".into()),
            Value::U8(3)
        ]
    );
    // The crate reads the generated id from the insert write-back.
    let (out, logs) = logs_of(&mut host, |h| call(h, "insert_item", r#"["new", 5, 1, "bn", 2]"#));
    assert!(out.is_committed(), "{:?}", out.status);
    assert!(logs.contains(&"inserted item id 11".to_string()), "{logs:?}");

    // Duplicate unique code: try_insert → Err with the crate's text; nothing written.
    let before = db_state(&db);
    let out = call(&mut host, "insert_item", r#"["item-3", 1, 1, "x", 1]"#);
    assert_eq!(out.status, ReducerStatus::Failed(DUP_ITEM.into()));
    assert_eq!(db_state(&db), before);
    // insert → panic with the same text.
    let m = panicked(&call(&mut host, "insert_item_or_panic", r#"["item-3", 1]"#));
    assert!(m.contains(DUP_ITEM), "{m}");
    assert_eq!(db_state(&db), before);
    // Two inserts with the same code in one call: the Err rolls the first back too.
    let (out, logs) = logs_of(&mut host, |h| call(h, "insert_duplicate_code", r#"["dup"]"#));
    assert_eq!(out.status, ReducerStatus::Failed(DUP_ITEM.into()));
    assert!(logs.iter().any(|l| l == "TryInsertError::<item>::UniqueConstraintViolation"), "{logs:?}");
    assert_eq!(db_state(&db), before);
    assert!(!rows(&db, "item").iter().any(|r| r[1] == Value::String("dup".into())));
    // The failed calls consumed no ids.
    let (out, logs) = logs_of(&mut host, |h| call(h, "insert_item_or_panic", r#"["next", 7]"#));
    assert!(out.is_committed(), "{:?} {logs:?}", out.status);
    assert_eq!(row_where(&db, "item", 1, &Value::String("next".into()))[0], Value::U64(12));
    // The unique index still works after the rollbacks: "dup" is free, "next" is taken.
    call_ok(&mut host, "insert_item", r#"["dup", 1, 1, "x", 1]"#);
    assert_eq!(failed(&call(&mut host, "insert_item", r#"["next", 1, 1, "x", 1]"#)), DUP_ITEM);
}

#[test]
fn identical_reinsert_is_a_no_op() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "seed_items", "[3]");
    let before = db_state(&db);
    let out = call(&mut host, "insert_exact_duplicate", "[2]");
    assert!(out.is_committed(), "set semantics: {:?}", out.status);
    assert_eq!(rows(&db, "item").len(), 3);
    assert_eq!(db_state(&db), before);
    assert_eq!(failed(&call(&mut host, "insert_exact_duplicate", "[99]")), "no item with id 99");
}

#[test]
fn updates_by_primary_key() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "seed_items", "[5]");
    let (out, logs) = logs_of(&mut host, |h| call(h, "update_item_score", "[3, 777]"));
    assert!(out.is_committed(), "{:?}", out.status);
    assert!(logs.contains(&"updated item 3 score to 777".to_string()), "{logs:?}");
    let r = row_where(&db, "item", 0, &Value::U64(3));
    assert_eq!(r[2], Value::I32(777));
    assert_eq!(r[1], Value::String("item-2".into()));
    assert_eq!(rows(&db, "item").len(), 5);
    // The score index follows the update (run_queries' point scan on score).
    call_ok(&mut host, "update_item_score", "[4, 30]"); // item-3 keeps score 30
    call_ok(&mut host, "run_queries", "[]");
    let q = row_where(&db, "query_result", 0, &Value::String("score_eq_30".into()));
    assert_eq!(q[2], Value::U64(1));
    assert_eq!(failed(&call(&mut host, "update_item_score", "[99, 1]")), "no item with id 99");

    let before = db_state(&db);
    let m = panicked(&call(&mut host, "update_item_missing", "[99]"));
    assert!(
        m.contains("unexpected update error: The row was not found, e.g., in an update call (error 15)"),
        "{m}"
    );
    let m = panicked(&call(&mut host, "update_item_code", r#"[3, "item-4"]"#));
    assert!(
        m.contains("unexpected update error: Value with given unique identifier already exists (error 12)"),
        "{m}"
    );
    assert_eq!(db_state(&db), before);
    // A code change to a free value is fine.
    call_ok(&mut host, "update_item_code", r#"[3, "renamed"]"#);
    assert_eq!(row_where(&db, "item", 0, &Value::U64(3))[1], Value::String("renamed".into()));
    assert_eq!(failed(&call(&mut host, "update_item_code", r#"[99, "x"]"#)), "no item with id 99");
}

#[test]
fn delete_by_unique_key_and_by_value() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "seed_items", "[10]");
    let (out, logs) = logs_of(&mut host, |h| call(h, "delete_item_by_code", r#"["item-2"]"#));
    assert!(out.is_committed());
    assert!(logs.contains(&"deleted item item-2: true".to_string()), "{logs:?}");
    assert!(!item_ids(&db).contains(&3));
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "delete_item_by_code", r#"["item-2"]"#));
    assert!(logs.contains(&"deleted item item-2: false".to_string()), "{logs:?}");
    assert_eq!(rows(&db, "item").len(), 9);

    let (out, logs) = logs_of(&mut host, |h| call(h, "delete_item_by_value", "[5]"));
    assert!(out.is_committed(), "{:?}", out.status);
    assert!(logs.contains(&"deleted by value: true".to_string()), "{logs:?}");
    assert!(!item_ids(&db).contains(&5));
    assert_eq!(out.delta.tables.iter().map(|t| t.deletes.len()).sum::<usize>(), 1);

    let before = db_state(&db);
    let (out, logs) = logs_of(&mut host, |h| call(h, "delete_item_by_stale_value", "[6]"));
    assert!(out.is_committed(), "{:?}", out.status);
    assert!(logs.contains(&"deleted by value: false".to_string()), "{logs:?}");
    assert_eq!(db_state(&db), before);
    assert_eq!(failed(&call(&mut host, "delete_item_by_value", "[5]")), "no item with id 5");
    assert_eq!(failed(&call(&mut host, "delete_item_by_stale_value", "[5]")), "no item with id 5");
}

#[test]
fn delete_by_btree_range() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "seed_items", "[10]");
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "delete_items_by_score_range", "[20, 50]"));
    assert!(logs.contains(&"deleted 3 items".to_string()), "{logs:?}");
    assert_eq!(item_ids(&db), vec![1, 2, 6, 7, 8, 9, 10]);
    // Empty and inverted ranges delete nothing (and are not errors).
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "delete_items_by_score_range", "[20, 50]"));
    assert!(logs.contains(&"deleted 0 items".to_string()), "{logs:?}");
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "delete_items_by_score_range", "[90, 10]"));
    assert!(logs.contains(&"deleted 0 items".to_string()), "{logs:?}");
    assert_eq!(rows(&db, "item").len(), 7);
}

#[test]
fn delete_by_multi_column_index_prefix() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "seed_items", "[10]");
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "delete_items_by_a", "[1]"));
    assert!(logs.contains(&"deleted 3 items".to_string()), "{logs:?}");
    assert_eq!(item_ids(&db), vec![1, 3, 4, 6, 7, 9, 10]);
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "delete_items_by_a", "[7]"));
    assert!(logs.contains(&"deleted 0 items".to_string()), "{logs:?}");
}

#[test]
fn delete_by_hash_index_point() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "seed_items", "[10]");
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "delete_items_by_tag", "[0]"));
    assert!(logs.contains(&"deleted 3 items".to_string()), "{logs:?}");
    assert_eq!(item_ids(&db), vec![2, 3, 4, 6, 7, 8, 10]);
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "delete_items_by_tag", "[9]"));
    assert!(logs.contains(&"deleted 0 items".to_string()), "{logs:?}");
}

#[test]
fn clear_and_count() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "seed_items", "[10]");
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "count_items", "[]"));
    assert!(logs.contains(&"item count: 10".to_string()), "{logs:?}");
    let (out, logs) = logs_of(&mut host, |h| call_ok(h, "clear_items", "[]"));
    assert!(logs.contains(&"cleared 10 items".to_string()), "{logs:?}");
    // 10 items, and with them the views over `item` (see views.rs): 5 high scores, 3 tag-1 rows.
    assert_eq!(out.delta.tables.iter().map(|t| t.deletes.len()).sum::<usize>(), 10 + 5 + 3);
    assert!(rows(&db, "item").is_empty());
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "count_items", "[]"));
    assert!(logs.contains(&"item count: 0".to_string()), "{logs:?}");
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "clear_items", "[]"));
    assert!(logs.contains(&"cleared 0 items".to_string()), "{logs:?}");
    // Sequences are not reset by a clear.
    call_ok(&mut host, "seed_items", "[1]");
    assert_eq!(item_ids(&db), vec![11]);
}

#[test]
fn direct_index_slot_lookup_and_uniqueness() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "insert_slot", r#"[3, "alice"]"#);
    call_ok(&mut host, "insert_slot", r#"[0, "zero"]"#);
    assert_eq!(
        failed(&call(&mut host, "insert_slot", r#"[3, "bob"]"#)),
        "insertion error on table `slot`:duplicate unique column"
    );
    assert_eq!(rows(&db, "slot").len(), 2);
    for (slot, want) in
        [(3, "slot 3: alice"), (0, "slot 0: zero"), (4, "slot 4: none"), (1000, "slot 1000: none")]
    {
        let (_, logs) = logs_of(&mut host, |h| call_ok(h, "find_slot", &format!("[{slot}]")));
        assert!(logs.contains(&want.to_string()), "{want}: {logs:?}");
    }
}

#[test]
fn run_queries_matches_the_readme() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "seed_items", "[10]");
    let (out, logs) = logs_of(&mut host, |h| call(h, "run_queries", "[]"));
    assert!(out.is_committed(), "{:?} {logs:?}", out.status);
    let all: Vec<u64> = (1..=10).collect();
    let expected: Vec<(&str, Vec<u64>)> = vec![
        ("score_eq_30", vec![4]),
        ("score_from_50", vec![6, 7, 8, 9, 10]),
        ("score_20_to_50", vec![3, 4, 5]),
        ("score_20_to_50_incl", vec![3, 4, 5, 6]),
        ("score_to_20", vec![1, 2]),
        ("score_to_20_incl", vec![1, 2, 3]),
        ("score_excl_10_excl_40", vec![3, 4]),
        ("score_unbounded", all.clone()),
        ("score_empty_range", vec![]),
        ("ab_a_eq_1", vec![2, 5, 8]),
        ("ab_a_eq_1_b_b4_to_b9", vec![5, 8]),
        ("ab_a_eq_2_b_eq_b5", vec![6]),
        ("ab_a_1_to_2_incl", vec![2, 3, 5, 6, 8, 9]),
        ("tag_eq_2", vec![3, 7]),
        ("code_item_3", vec![4]),
        ("id_4", vec![4]),
        ("iter_all", all),
    ];
    let results = rows(&db, "query_result");
    assert_eq!(results.len(), expected.len() + 1, "{results:?}");
    for (name, ids) in &expected {
        let r = row_where(&db, "query_result", 0, &Value::String((*name).into()));
        let mut bytes = (ids.len() as u32).to_le_bytes().to_vec();
        for id in ids {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(r[1], Value::Bsatn(bytes.into()), "{name}: expected ids {ids:?}");
        assert_eq!(r[2], Value::U64(ids.len() as u64), "{name}");
        assert!(logs.contains(&format!("{name}: {ids:?}")), "{name}: {logs:?}");
    }
    let count = row_where(&db, "query_result", 0, &Value::String("count".into()));
    assert_eq!(count[1], Value::Bsatn(vec![0, 0, 0, 0].into()));
    assert_eq!(count[2], Value::U64(10));
    assert!(logs.contains(&"count: 10".to_string()), "{logs:?}");
}

#[test]
fn iterators_grow_the_buffer_for_big_rows() {
    let (mut host, db) = publish_ex();
    for len in [70_000, 100_000, 10, 65_536] {
        call_ok(&mut host, "insert_blob", &format!("[{len}]"));
    }
    let b = row_where(&db, "blob", 0, &Value::U64(1));
    let want: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(b[1], Value::Bytes(want.into()));
    let (out, logs) = logs_of(&mut host, |h| call(h, "sum_blobs", "[]"));
    assert!(out.is_committed(), "{:?} {logs:?}", out.status);
    assert!(logs.contains(&"blobs: 4 rows, 235546 bytes".to_string()), "{logs:?}");
}

#[test]
fn closing_a_live_iterator_early() {
    let (mut host, _db) = publish_ex();
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "first_blob_only", "[]"));
    assert!(logs.contains(&"no blobs".to_string()), "{logs:?}");
    for _ in 0..3 {
        call_ok(&mut host, "insert_blob", "[40000]");
    }
    for _ in 0..3 {
        let (out, logs) = logs_of(&mut host, |h| call(h, "first_blob_only", "[]"));
        assert!(out.is_committed(), "{:?} {logs:?}", out.status);
        assert!(logs.contains(&"first blob: 40000 bytes".to_string()), "{logs:?}");
    }
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "sum_blobs", "[]"));
    assert!(logs.contains(&"blobs: 3 rows, 120000 bytes".to_string()), "{logs:?}");
}

// ---------------------------------------------------------------------------------------------
// 3./4. Rollback, nested calls, panics, fuel
// ---------------------------------------------------------------------------------------------

#[test]
fn failed_calls_leave_rows_indexes_and_sequences_untouched() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "seed_items", "[3]");
    let before = db_state(&db);
    let ev_before = rows(&db, "event_log");
    assert_eq!(ev_before.len(), 1, "the init row");
    assert_eq!(ev_before[0][0], Value::U64(1));

    let out = call(&mut host, "insert_then_err", r#"["e"]"#);
    assert_eq!(out.status, ReducerStatus::Failed("deliberate error after insert".into()));
    assert!(out.delta.tables.is_empty());
    assert_eq!(db_state(&db), before);

    let out = call(&mut host, "insert_then_panic", r#"["p"]"#);
    assert_eq!(panicked(&out), "deliberate panic after insert");
    assert!(out.delta.tables.is_empty());
    assert_eq!(db_state(&db), before);

    let out = call(&mut host, "nested_outer_then_err", r#"["n"]"#);
    assert_eq!(out.status, ReducerStatus::Failed("outer failed after nested call".into()));
    assert_eq!(db_state(&db), before);

    let out = call(&mut host, "infinite_loop", "[]");
    assert_eq!(out.status, ReducerStatus::OutOfEnergy);
    assert_eq!(db_state(&db), before);

    let out = call(&mut host, "insert_duplicate_code", r#"["item-9"]"#);
    assert_eq!(out.status, ReducerStatus::Failed(DUP_ITEM.into()));
    assert_eq!(db_state(&db), before);

    // The next inserts get the ids they would have had if the failed calls never happened.
    let out = call_ok(&mut host, "nested_outer", r#"["both"]"#);
    let ev = sorted_rows(&db, "event_log");
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[1][0], Value::U64(2));
    assert_eq!(ev[1][1], Value::String("nested_outer".into()));
    assert_eq!(ev[2][0], Value::U64(3));
    assert_eq!(ev[2][1], Value::String("nested_inner".into()));
    for r in &ev[1..] {
        assert_eq!(r[2], Value::String("both".into()));
        assert_eq!(r[4], Value::I64(out.timestamp_micros), "one transaction, one timestamp");
    }
    assert_eq!(out.delta.tables.iter().map(|t| t.inserts.len()).sum::<usize>(), 2);
    call_ok(&mut host, "insert_item", r#"["item-9", 1, 1, "x", 1]"#);
    assert_eq!(row_where(&db, "item", 1, &Value::String("item-9".into()))[0], Value::U64(4));
}

#[test]
fn panic_status_and_panic_log_record() {
    let (mut host, db) = publish_ex();
    let before = log_records(&host).len();
    let out = call(&mut host, "insert_then_panic", r#"["x"]"#);
    assert_eq!(out.status, ReducerStatus::Panicked("deliberate panic after insert".into()));
    assert_eq!(out.error().as_deref(), Some("deliberate panic after insert"));
    let recs: Vec<_> = log_records(&host).into_iter().skip(before).collect();
    let p = recs.iter().find(|r| r.level == LogLevel::Panic).expect("a Panic-level record");
    assert_eq!(p.message, "deliberate panic after insert");
    assert_eq!(p.target, None);
    assert_eq!(p.filename.as_deref(), Some("src/lib.rs"));
    assert_eq!(p.line_number, Some(730));
    assert_eq!(rows(&db, "event_log").len(), 1);
    // The host renews the trapped instance: later calls work, and see a consistent heap.
    for i in 0..3 {
        call_ok(&mut host, "insert_item", &format!(r#"["after-{i}", 1, 1, "x", 1]"#));
    }
    assert_eq!(item_ids(&db), vec![1, 2, 3]);
    // A panic inside the crate (insert error) is reported the same way.
    let m = panicked(&call(&mut host, "insert_item_or_panic", r#"["after-0", 1]"#));
    assert!(m.contains(DUP_ITEM), "{m}");
    let last_panic = log_records(&host).into_iter().rev().find(|r| r.level == LogLevel::Panic).unwrap();
    assert!(last_panic.message.contains(DUP_ITEM));
    assert!(last_panic.filename.as_deref().is_some_and(|f| f.ends_with("table.rs")), "{last_panic:?}");
}

#[test]
fn running_out_of_fuel_rolls_back_and_the_host_recovers() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "seed_items", "[2]");
    let before = db_state(&db);
    let started = Instant::now();
    let out = call(&mut host, "infinite_loop", "[]");
    assert_eq!(out.status, ReducerStatus::OutOfEnergy);
    assert!(out.error().is_some());
    assert!(out.energy_used >= test_config().fuel_per_call, "used {}", out.energy_used);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(db_state(&db), before);
    let out = call(&mut host, "insert_item", r#"["after", 1, 1, "x", 1]"#);
    assert!(out.is_committed(), "instance renewed: {:?}", out.status);
    assert_eq!(item_ids(&db), vec![1, 2, 3]);
    assert!(out.energy_used < test_config().fuel_per_call);
    // And again: a second exhaustion on the renewed instance.
    assert_eq!(call(&mut host, "infinite_loop", "[]").status, ReducerStatus::OutOfEnergy);
    call_ok(&mut host, "count_items", "[]");
}

// ---------------------------------------------------------------------------------------------
// 5. Logs
// ---------------------------------------------------------------------------------------------

#[test]
fn log_levels_targets_and_locations() {
    let (mut host, _db) = publish_ex();
    let before = log_records(&host).len();
    call_ok(&mut host, "log_all_levels", "[]");
    let recs: Vec<_> = log_records(&host).into_iter().skip(before).collect();
    let expected = [
        (LogLevel::Error, "abi_exerciser", "log at error", 702),
        (LogLevel::Warn, "abi_exerciser", "log at warn", 703),
        (LogLevel::Info, "abi_exerciser", "log at info", 704),
        (LogLevel::Debug, "abi_exerciser", "log at debug", 705),
        (LogLevel::Trace, "abi_exerciser", "log at trace", 706),
        (LogLevel::Info, "custom_target", "log with a custom target", 707),
    ];
    let got: Vec<_> = recs
        .iter()
        .filter(|r| r.target.as_deref() != Some("lightcone"))
        .map(|r| (r.level, r.target.clone().unwrap_or_default(), r.message.clone(), r.line_number))
        .collect();
    let want: Vec<_> =
        expected.iter().map(|&(l, t, m, n)| (l, t.to_string(), m.to_string(), Some(n))).collect();
    assert_eq!(got, want);
    for r in &recs {
        assert_eq!(r.filename.as_deref(), Some("src/lib.rs"), "{r:?}");
        assert!(r.ts_micros > 0);
    }
    assert!(recs.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn stopwatch_logs_a_timing_line() {
    let (mut host, _db) = publish_ex();
    let before = log_records(&host).len();
    call_ok(&mut host, "stopwatch", "[]");
    let recs: Vec<_> = log_records(&host).into_iter().skip(before).collect();
    let work = recs.iter().position(|r| r.message.starts_with("stopwatch work result ")).expect("debug line");
    assert_eq!(recs[work].level, LogLevel::Debug);
    let timing = recs.iter().position(|r| r.message.contains("abi_stopwatch")).expect("timing line");
    assert!(timing > work, "the timer ends after the work: {recs:?}");
    assert!(
        recs[timing].message.chars().any(|c| c.is_ascii_digit()),
        "elapsed time in {:?}",
        recs[timing].message
    );
}

// ---------------------------------------------------------------------------------------------
// 6. The call context
// ---------------------------------------------------------------------------------------------

fn hex_be(le: &[u8]) -> String {
    le.iter().rev().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn whoami_records_sender_connection_database_and_timestamp() {
    let (mut host, db) = publish_ex();
    let mut identity = [0u8; 32];
    for (i, b) in identity.iter_mut().enumerate() {
        *b = i as u8 + 1;
    }
    let mut conn = [0u8; 16];
    for (i, b) in conn.iter_mut().enumerate() {
        *b = 0xa0 + i as u8;
    }
    let payload = r#"{"iss":"lightcone","sub":"alice"}"#;
    let who = CallerInfo { identity, connection_id: conn, jwt_payload: Some(payload.into()) };
    let (out, logs) = logs_of(&mut host, |h| call_as(h, &who, "whoami", "[]"));
    assert!(out.is_committed(), "{:?}", out.status);
    let r = row_where(&db, "caller_info", 0, &Value::U64(1));
    assert_eq!(r[1], u256_value(identity), "sender");
    assert_eq!(r[2], some(&conn), "connection_id");
    assert_eq!(r[3], u256_value([9; 32]), "database identity = HostConfig.database_identity");
    assert_eq!(r[4], Value::I64(out.timestamp_micros));
    assert_eq!(r[5], Value::Bool(true), "has_jwt");
    assert_eq!(r[6], some(&bsatn_str(payload)));
    let Value::U128(uuid) = r[8] else { panic!("uuid {:?}", r[8]) };
    assert_eq!((uuid >> 76) & 0xf, 4, "a v4 uuid: {uuid:032x}");
    let line = logs.iter().find(|l| l.starts_with("whoami: ")).expect("whoami line");
    assert!(line.starts_with(&format!("whoami: sender={} connection_id=Some(", hex_be(&identity))), "{line}");
    assert!(line.contains(&format!("database={}", hex_be(&[9; 32]))), "{line}");
    assert!(line.ends_with(&format!("jwt=Some({payload:?})")), "{line}");
    let now = now_micros();
    assert!((now - out.timestamp_micros).abs() < 60_000_000, "timestamp is the wall clock");

    // No connection: connection_id None, no JWT even if one is known.
    let anon = CallerInfo { identity: [2; 32], connection_id: [0; 16], jwt_payload: Some(payload.into()) };
    let out2 = call_as(&mut host, &anon, "whoami", "[]");
    assert!(out2.is_committed());
    let r2 = row_where(&db, "caller_info", 0, &Value::U64(2));
    assert_eq!(r2[1], u256_value([2; 32]));
    assert_eq!(r2[2], none());
    assert_eq!(r2[5], Value::Bool(false));
    assert_eq!(r2[6], none());
    assert_eq!(r2[4], Value::I64(out2.timestamp_micros));
    assert!(out2.timestamp_micros >= out.timestamp_micros);
    assert_ne!(r2[7], r[7], "rng seeded from different timestamps");
}

#[test]
fn random_numbers_logs_n_values() {
    let (mut host, _db) = publish_ex();
    let (_, logs) = logs_of(&mut host, |h| call_ok(h, "random_numbers", "[4]"));
    let line = logs.iter().find(|l| l.starts_with("random: [")).expect("random line");
    let values: Vec<u64> =
        line["random: [".len()..line.len() - 1].split(", ").map(|v| v.parse().unwrap()).collect();
    assert_eq!(values.len(), 4, "{line}");
    let (_, logs2) = logs_of(&mut host, |h| call_ok(h, "random_numbers", "[4]"));
    let line2 = logs2.iter().find(|l| l.starts_with("random: [")).unwrap();
    // Different timestamps (µs clock) → different seeds.
    assert_ne!(line, line2);
}

#[test]
fn lifecycle_connect_and_disconnect() {
    let (mut host, db) = publish_ex();
    let who = caller(5);
    let out = host.client_connected(&who).unwrap().expect("on_connect");
    assert!(out.is_committed(), "{:?}", out.status);
    let out = host.client_disconnected(&who).unwrap().expect("on_disconnect");
    assert!(out.is_committed());
    let log = sorted_rows(&db, "connection_log");
    assert_eq!(log.len(), 2);
    assert_eq!(log[0][1], Value::String("connected".into()));
    assert_eq!(log[0][2], u256_value([5; 32]));
    assert_eq!(log[0][3], some(&[5; 16]));
    assert_eq!(log[1][1], Value::String("disconnected".into()));
    // The private config table refuses further connections.
    call_ok(&mut host, "set_config", r#"["refuse_connections", "yes"]"#);
    let cfg = rows(&db, "config");
    assert_eq!(cfg, vec![vec![Value::String("refuse_connections".into()), Value::String("yes".into())]]);
    let out = host.client_connected(&caller(6)).unwrap().unwrap();
    assert_eq!(out.status, ReducerStatus::Failed("connections are refused by config".into()));
    assert_eq!(rows(&db, "connection_log").len(), 2);
    // Upsert: the row is replaced, not duplicated.
    call_ok(&mut host, "set_config", r#"["refuse_connections", "no"]"#);
    assert_eq!(rows(&db, "config").len(), 1);
    assert!(host.client_connected(&caller(6)).unwrap().unwrap().is_committed());
    // Lifecycle reducers are not client-callable.
    for name in ["init", "on_connect", "on_disconnect"] {
        assert_eq!(
            host.call_reducer(name, &caller(1), ReducerArgs::Json("[]".into())).unwrap_err(),
            HostError::NotCallable(name.into())
        );
    }
}

#[test]
fn call_errors_unknown_reducer_bad_arguments_oversized_json() {
    let (mut host, db) = publish_ex();
    let before = db_state(&db);
    let c = caller(1);
    assert_eq!(
        host.call_reducer("no_such_reducer", &c, ReducerArgs::Json("[]".into())).unwrap_err(),
        HostError::NoSuchReducer("no_such_reducer".into())
    );
    for bad in [
        r#"["code", "not a number", 1, "b", 1]"#,
        r#"["code", 1, -1, "b", 1]"#,
        r#"["code", 1, 1, "b", 256]"#,
        r#"["code", 1, 1, "b"]"#,
        r#"{"code": "c", "score": 1}"#,
        r#"["code", 1, 1, "b", 1, 2]"#,
    ] {
        match host.call_reducer("insert_item", &c, ReducerArgs::Json(bad.into())) {
            Err(HostError::InvalidArguments { reducer, .. }) => assert_eq!(reducer, "insert_item"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    // Sum/option shapes are checked too.
    let bad_shape =
        r#"[1, -5, {"some": "x"}, [1], {"x": 1, "y": 2, "label": "l"}, {"Hexagon": 1}, {"Green": []}, true]"#;
    assert!(matches!(
        host.call_reducer("many_args", &c, ReducerArgs::Json(bad_shape.into())),
        Err(HostError::InvalidArguments { .. })
    ));
    // BSATN: truncated, trailing.
    let mut ok = bsatn_str("c");
    ok.extend_from_slice(&1i32.to_le_bytes());
    for bad in [ok[..ok.len() - 1].to_vec(), [ok.clone(), vec![0]].concat()] {
        assert!(matches!(
            host.call_reducer("insert_item_or_panic", &c, ReducerArgs::Bsatn(bad)),
            Err(HostError::InvalidArguments { .. })
        ));
    }
    // many_args with an invalid sum tag for Shape, then with a bool byte of 2.
    let many = |shape_tag: u8, flag: u8| {
        let mut b = 1u128.to_le_bytes().to_vec();
        b.extend_from_slice(&0i64.to_le_bytes());
        b.push(1); // None
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&bsatn_str(""));
        b.extend_from_slice(&[shape_tag, 0, flag]);
        b
    };
    assert!(host.call_reducer("many_args", &c, ReducerArgs::Bsatn(many(0, 1))).unwrap().is_committed());
    for bad in [many(9, 1), many(0, 2)] {
        assert!(matches!(
            host.call_reducer("many_args", &c, ReducerArgs::Bsatn(bad)),
            Err(HostError::InvalidArguments { .. })
        ));
    }
    // Oversized JSON (over json::MAX_JSON_ARGS_BYTES) is refused before decoding.
    let big = format!(r#"["{}", 1, 1, "b", 1]"#, "x".repeat(lightcone_host::json::MAX_JSON_ARGS_BYTES));
    match host.call_reducer("insert_item", &c, ReducerArgs::Json(big)) {
        Err(HostError::InvalidArguments { reason, .. }) => assert!(reason.contains("limit"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rows(&db, "item"), before.iter().find(|t| t.0 == "item").unwrap().1);
    // The host still works.
    call_ok(&mut host, "insert_item", r#"["fine", 1, 1, "b", 1]"#);
}

// ---------------------------------------------------------------------------------------------
// 7. Scheduled reducers
// ---------------------------------------------------------------------------------------------

/// Calls `run_due(now)` every 2 ms for `span`, collecting what ran.
fn pump(host: &mut ModuleHost, span: Duration) -> Vec<lightcone_host::ReducerOutcome> {
    let end = Instant::now() + span;
    let mut ran = Vec::new();
    while Instant::now() < end {
        ran.extend(host.run_due(now_micros()));
        std::thread::sleep(Duration::from_millis(2));
    }
    ran
}

fn tick_rows(db: &lightcone_mvcc::Database) -> Vec<Vec<Value>> {
    sorted_rows(db, "tick_log")
}

/// `ScheduleAt::Time(t)` / `Interval(d)` as stored.
fn schedule_at_value(tag: u8, micros: i64) -> Value {
    let mut b = vec![tag];
    b.extend_from_slice(&micros.to_le_bytes());
    Value::Bsatn(b.into())
}

#[test]
fn one_shot_schedule_runs_once_as_the_database() {
    let (mut host, db) = publish_ex();
    assert_eq!(host.next_scheduled(), None);
    let (out, logs) = logs_of(&mut host, |h| call(h, "schedule_at", r#"["once", 50000]"#));
    assert!(out.is_committed(), "{:?}", out.status);
    assert!(logs.contains(&"scheduled 1".to_string()), "{logs:?}");
    let due = out.timestamp_micros + 50_000;
    let sched = rows(&db, "tick_schedule");
    assert_eq!(sched, vec![vec![Value::U64(1), schedule_at_value(1, due), Value::String("once".into())]]);
    assert_eq!(host.next_scheduled(), Some(due));
    assert!(host.run_due(due - 1).is_empty(), "not due yet");
    assert!(tick_rows(&db).is_empty());

    let mut ran = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ran.is_empty() && Instant::now() < deadline {
        let now = now_micros();
        if now < due {
            std::thread::sleep(Duration::from_micros((due - now) as u64));
        }
        ran.extend(host.run_due(now_micros()));
    }
    ran.extend(pump(&mut host, Duration::from_millis(60)));
    assert_eq!(ran.len(), 1, "{ran:?}");
    let tick = &ran[0];
    assert_eq!(&*tick.reducer, "tick");
    assert!(tick.is_committed(), "{:?}", tick.status);
    assert!(tick.timestamp_micros >= due);
    let log = tick_rows(&db);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0][1], Value::U64(1), "scheduled_id");
    assert_eq!(log[0][2], Value::String("once".into()));
    assert_eq!(log[0][4], Value::Bool(true), "sender_is_database");
    assert_eq!(log[0][5], Value::Bool(false), "has_connection_id");
    assert!(rows(&db, "tick_schedule").is_empty(), "a one-shot row is deleted with its call");
    assert_eq!(host.next_scheduled(), None);
    assert!(log_messages(&host).contains(&"tick 1 once".to_string()));
    // The row delete and the tick_log insert are one transaction.
    let tables: Vec<_> = tick.delta.tables.iter().map(|t| (t.inserts.len(), t.deletes.len())).collect();
    assert_eq!(tables.iter().map(|t| t.0).sum::<usize>(), 1, "{tables:?}");
    assert_eq!(tables.iter().map(|t| t.1).sum::<usize>(), 1, "{tables:?}");
}

#[test]
fn scheduled_reducer_timestamp_matches_the_outcome() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "schedule_at", r#"["ts", 20000]"#);
    let ran = pump(&mut host, Duration::from_millis(80));
    assert_eq!(ran.len(), 1);
    let log = tick_rows(&db);
    assert_eq!(log[0][3], Value::I64(ran[0].timestamp_micros), "ctx.timestamp = outcome.timestamp_micros");
}

#[test]
fn interval_schedule_repeats_until_cancelled() {
    let (mut host, db) = publish_ex();
    let out = call_ok(&mut host, "schedule_interval", r#"["rep", 30000]"#);
    let id = 1u64;
    assert_eq!(
        rows(&db, "tick_schedule"),
        vec![vec![Value::U64(id), schedule_at_value(0, 30_000), Value::String("rep".into())]]
    );
    let first = host.next_scheduled().expect("armed");
    assert!(first >= out.timestamp_micros + 30_000 && first <= now_micros() + 30_000, "{first}");
    let ran = pump(&mut host, Duration::from_millis(160));
    assert!(ran.len() >= 3, "{} ticks in ~160 ms", ran.len());
    assert!(ran.len() <= 6, "{} ticks in ~160 ms", ran.len());
    assert!(ran.iter().all(|o| o.is_committed() && &*o.reducer == "tick"));
    let log = tick_rows(&db);
    assert_eq!(log.len(), ran.len());
    for r in &log {
        assert_eq!(r[1], Value::U64(id));
        assert_eq!(r[2], Value::String("rep".into()));
        assert_eq!(r[4], Value::Bool(true));
    }
    assert_eq!(rows(&db, "tick_schedule").len(), 1, "an interval row stays");
    call_ok(&mut host, "cancel_schedule", &format!("[{id}]"));
    assert_eq!(host.next_scheduled(), None);
    assert!(pump(&mut host, Duration::from_millis(100)).is_empty());
    assert_eq!(tick_rows(&db).len(), log.len());
    assert_eq!(
        call(&mut host, "cancel_schedule", &format!("[{id}]")).status,
        ReducerStatus::Failed(format!("no scheduled tick {id}"))
    );
}

#[test]
fn schedules_are_rearmed_after_reopen() {
    let (mut host, db) = publish_ex();
    let at = call_ok(&mut host, "schedule_at", r#"["later", 150000]"#);
    call_ok(&mut host, "schedule_interval", r#"["rep", 40000]"#);
    let due = at.timestamp_micros + 150_000;
    drop(host);
    let mut host = ModuleHost::open(engine(), std::sync::Arc::clone(&db), None, test_config()).unwrap();
    let next = host.next_scheduled().expect("re-armed");
    assert!(next <= due, "{next} vs {due}");
    let ran = pump(&mut host, Duration::from_millis(260));
    let log = tick_rows(&db);
    assert_eq!(log.len(), ran.len());
    let once = log.iter().filter(|r| r[2] == Value::String("later".into())).count();
    let rep = log.iter().filter(|r| r[2] == Value::String("rep".into())).count();
    assert_eq!(once, 1, "{log:?}");
    assert!(rep >= 3, "{rep} interval ticks");
    let left = rows(&db, "tick_schedule");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0][2], Value::String("rep".into()));
}

#[test]
fn a_schedule_deleted_before_it_is_due_never_runs() {
    let (mut host, db) = publish_ex();
    call_ok(&mut host, "schedule_at", r#"["gone", 60000]"#);
    call_ok(&mut host, "schedule_at", r#"["kept", 60000]"#);
    assert!(host.next_scheduled().is_some());
    call_ok(&mut host, "cancel_schedule", "[1]");
    let ran = pump(&mut host, Duration::from_millis(150));
    assert_eq!(ran.len(), 1, "{ran:?}");
    let log = tick_rows(&db);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0][2], Value::String("kept".into()));
    assert!(rows(&db, "tick_schedule").is_empty());
    assert_eq!(host.next_scheduled(), None);

    // Deleted behind the host's back (another writer): the armed entry finds no row.
    call_ok(&mut host, "schedule_at", r#"["ghost", 30000]"#);
    {
        let mut tx = db.begin();
        let t = lightcone_mvcc::ReadTx::table_id(&tx, "tick_schedule").unwrap();
        let rid = lightcone_mvcc::ReadTx::table(&tx, t).unwrap().row_ids().next().unwrap();
        tx.delete(t, rid).unwrap();
        tx.commit();
    }
    assert!(pump(&mut host, Duration::from_millis(80))
        .iter()
        .all(|o| &*o.reducer != "tick" || !o.is_committed()));
    assert_eq!(tick_rows(&db).len(), 1, "the ghost tick never ran");
}

#[test]
fn schedule_too_far_in_the_future_is_refused() {
    let (mut host, db) = publish_ex();
    let eleven_years = 11i64 * 365 * 24 * 3600 * 1_000_000;
    let out = call(&mut host, "schedule_at", &format!(r#"["far", {eleven_years}]"#));
    let m = panicked(&out);
    assert!(
        m.contains("unexpected insertion error: Specified delay in scheduling row was too long (error 13)"),
        "{m}"
    );
    assert!(rows(&db, "tick_schedule").is_empty());
    assert_eq!(host.next_scheduled(), None);
}

#[test]
fn tick_called_by_a_client_sees_the_client() {
    let (mut host, db) = publish_ex();
    let out = call(
        &mut host,
        "tick",
        r#"[{"scheduled_id": 77, "scheduled_at": {"Interval": {"__time_duration_micros__": 5}}, "label": "manual"}]"#,
    );
    assert!(out.is_committed(), "{:?}", out.status);
    let log = tick_rows(&db);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0][1], Value::U64(77));
    assert_eq!(log[0][3], Value::I64(out.timestamp_micros));
    assert_eq!(log[0][4], Value::Bool(false), "sender_is_database");
    assert_eq!(log[0][5], Value::Bool(true), "has_connection_id");
}

// ---------------------------------------------------------------------------------------------
// 8. Module definition, private tables, RLS, schedule_immediate
// ---------------------------------------------------------------------------------------------

const REDUCERS: [&str; 48] = [
    "allocate_mib",
    "cancel_schedule",
    "check_all_types_min",
    "clear_items",
    "count_items",
    "delete_item_by_code",
    "delete_item_by_stale_value",
    "delete_item_by_value",
    "delete_items_by_a",
    "delete_items_by_score_range",
    "delete_items_by_tag",
    "find_slot",
    "first_blob_only",
    "infinite_loop",
    "init",
    "insert_all_types",
    "insert_all_types_max",
    "insert_all_types_min",
    "insert_blob",
    "insert_duplicate_code",
    "insert_exact_duplicate",
    "insert_item",
    "insert_item_or_panic",
    "insert_slot",
    "insert_then_err",
    "insert_then_panic",
    "log_all_levels",
    "log_all_types",
    "many_args",
    "nested_inner",
    "nested_outer",
    "nested_outer_then_err",
    "on_connect",
    "on_disconnect",
    "proc_schedule_every",
    "random_numbers",
    "run_queries",
    "schedule_at",
    "schedule_interval",
    "seed_items",
    "set_config",
    "stopwatch",
    "sum_blobs",
    "tick",
    "update_item_code",
    "update_item_missing",
    "update_item_score",
    "whoami",
];

#[test]
fn module_spec_matches_the_readme() {
    let (host, db) = publish_ex();
    let spec = host.spec();
    let names: Vec<&str> = spec.reducers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, REDUCERS);
    assert_eq!((spec.init, spec.client_connected, spec.client_disconnected), (Some(14), Some(32), Some(33)));
    for (i, r) in spec.reducers.iter().enumerate() {
        assert_eq!(r.client_callable, ![14, 32, 33].contains(&i), "{}", r.name);
    }
    // 12 tables and the 3 views' tables.
    assert_eq!(spec.tables.len(), 15);
    assert_eq!(spec.tables.iter().filter(|t| t.view.is_some()).count(), 3);
    for t in &spec.tables {
        assert_eq!(t.public, t.name != "config", "{}", t.name);
        let snap = db.snapshot();
        let id = lightcone_mvcc::ReadTx::table_id(&snap, &t.name).unwrap();
        assert_eq!(lightcone_mvcc::ReadTx::table(&snap, id).unwrap().schema().def.public, t.public);
    }
    assert!(spec.row_level_security.is_empty());
    let item = spec.table_by_name("item").unwrap();
    let ix: Vec<(&str, Vec<u16>, bool)> =
        item.indexes.iter().map(|i| (i.source_name.as_str(), i.columns.clone(), i.unique)).collect();
    assert_eq!(
        ix,
        vec![
            ("item_id_idx_btree", vec![0], true),
            ("item_code_idx_btree", vec![1], true),
            ("item_a_b_idx_btree", vec![3, 4], false),
            ("item_score_idx_btree", vec![2], false),
            ("item_tag_idx_hash", vec![5], false),
        ]
    );
    assert_eq!(item.indexes[4].algorithm, lightcone_mvcc::IndexAlgorithm::Hash);
    assert_eq!(item.primary_key, Some(0));
    assert_eq!(item.sequences.len(), 1);
    assert_eq!(item.sequences[0].column, 0);
    let slot = spec.table_by_name("slot").unwrap();
    assert_eq!(slot.primary_key, None);
    assert_eq!(slot.indexes.len(), 1);
    assert_eq!(slot.indexes[0].source_name, "slot_slot_idx_direct");
    assert_eq!(slot.indexes[0].algorithm, lightcone_mvcc::IndexAlgorithm::Direct);
    assert!(slot.indexes[0].unique);
    assert_eq!(spec.schedules.len(), 2);
    let by_table = |name: &str| spec.schedules.iter().find(|s| spec.tables[s.table].name == name).unwrap();
    let s = by_table("tick_schedule");
    assert_eq!((s.at_column, s.id_column, s.function), (1, 0, ScheduledFunction::Reducer(43)));
    let mut procs: Vec<&str> = spec.procedures.iter().map(|p| p.name.as_str()).collect();
    procs.sort();
    assert_eq!(
        procs,
        [
            "proc_add",
            "proc_http_get",
            "proc_panic",
            "proc_schedule_once",
            "proc_scheduled",
            "proc_sleep",
            "proc_tx_abort",
            "proc_with_tx",
            "proc_with_tx_score"
        ]
    );
    let s = by_table("proc_schedule");
    let p = &spec.procedures[spec.procedure_id("proc_scheduled").unwrap()];
    assert_eq!((s.at_column, s.id_column), (1, 0));
    assert_eq!(s.function, ScheduledFunction::Procedure(spec.procedure_id("proc_scheduled").unwrap()));
    assert_eq!(p.params.elements.len(), 1, "a scheduled procedure takes its row");
    assert!(spec.procedures.iter().all(|p| p.client_callable));
    let mut views: Vec<(&str, bool, u32)> =
        spec.views.iter().map(|v| (v.name.as_str(), v.anonymous, v.index)).collect();
    views.sort();
    assert_eq!(views, [("high_score_items", true, 0), ("my_identity", false, 0), ("tag_one_items", true, 1)]);
    for v in &spec.views {
        let t = &spec.tables[v.table];
        assert_eq!(
            (t.name.as_str(), t.view),
            (v.name.as_str(), Some(spec.views.iter().position(|w| w.name == v.name).unwrap()))
        );
    }
}

#[test]
fn unstable_build_has_rls_and_runs_schedule_immediate() {
    let (mut host, db) = publish("abi_exerciser_unstable");
    let spec = host.spec();
    assert_eq!(spec.row_level_security, vec!["SELECT * FROM caller_info WHERE sender = :sender".to_string()]);
    assert!(!spec.table_by_name("config").unwrap().public);
    let names: Vec<&str> = spec.reducers.iter().map(|r| r.name.as_str()).collect();
    // The stable build's 48 + `schedule_immediate` + `note_tag_one_item` (the view migration).
    assert_eq!(names.len(), 50);
    assert!(names.contains(&"note_tag_one_item"));
    assert_eq!(names[39], "schedule_immediate");
    assert_eq!(names[40], "schedule_interval");
    let out = call(&mut host, "schedule_immediate", r#"["soon"]"#);
    assert!(out.is_committed(), "{:?}", out.status);
    // The requested call ran after the call, in its own transaction.
    assert!(out.delta.tables.is_empty(), "schedule_immediate itself writes nothing");
    let ev = sorted_rows(&db, "event_log");
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[1][1], Value::String("nested_inner".into()));
    assert_eq!(ev[1][2], Value::String("soon".into()));
    let Value::I64(at) = ev[1][4] else { panic!() };
    assert!(at >= out.timestamp_micros);
    // The rest of the module works as in the stable build.
    call_ok(&mut host, "seed_items", "[2]");
    assert_eq!(item_ids(&db), vec![1, 2]);
}
