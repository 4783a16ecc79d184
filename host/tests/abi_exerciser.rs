//! The ABI exerciser module (built with the official `spacetimedb` 2.10 crate) on the host:
//! every column type, every datastore import, rollback, panics, fuel, logs, the call context,
//! scheduled reducers and the module definition. `host/fixtures/README.md` describes the module.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lightcone_host::logs::LogLevel;
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
    let tags = MIN_JSON.replace(r#""id": 5"#, r#""id": 7"#).replace(
        r#""a_shape": {"Empty": []}"#,
        r#""a_shape": {"Tags": ["x", "yz"]}"#,
    );
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
