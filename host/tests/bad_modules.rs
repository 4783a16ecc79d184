//! Hand-written wasm modules (WAT) the host must refuse, or run without letting a bad guest
//! corrupt the database: missing exports, unknown imports, garbage definitions, out-of-bounds
//! pointers, invalid rows; and one minimal valid module described by hand.

mod common;

use std::sync::Arc;

use common::*;
use lightcone_host::{DefError, HostConfig, HostError, ModuleHost, ReducerArgs, ReducerStatus};
use lightcone_mvcc::{Database, ReadTx, Value};
use spacetimedb_lib::db::raw_def::v10::RawModuleDefV10Builder;
use spacetimedb_lib::db::raw_def::v9::RawIndexAlgorithm;
use spacetimedb_lib::RawModuleDef;
use spacetimedb_sats::{bsatn, AlgebraicType, ProductType};

fn try_publish(wat_text: &str) -> (Result<ModuleHost, HostError>, Arc<Database>) {
    let wasm = wat::parse_str(wat_text).unwrap_or_else(|e| panic!("bad WAT: {e}\n{wat_text}"));
    let db = Arc::new(Database::new());
    let r = ModuleHost::publish(engine(), Arc::clone(&db), None, &wasm, OWNER, test_config()).map(|(h, _)| h);
    (r, db)
}

fn refused(wat_text: &str) -> HostError {
    let (r, db) = try_publish(wat_text);
    let err = r.err().expect("the module must be refused");
    assert!(db.snapshot().table_ids().is_empty(), "a refused publish writes nothing ({err})");
    err
}

/// `bytes` as a WAT string literal body (every byte escaped).
fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// A `__describe_module__` that writes `def` (placed at offset 16384) to the sink.
fn describe_writing(def: &[u8]) -> String {
    format!(
        r#"
  (data (i32.const 16384) "{bytes}")
  (func (export "__describe_module__") (param $sink i32)
    (i32.store (i32.const 512) (i32.const {len}))
    (drop (call $sink_write (local.get $sink) (i32.const 16384) (i32.const 512))))"#,
        bytes = wat_bytes(def),
        len = def.len()
    )
}

const CALL_REDUCER_STUB: &str = r#"
  (func (export "__call_reducer__")
    (param i32 i64 i64 i64 i64 i64 i64 i64 i32 i32) (result i32)
    (i32.const 0))"#;

const SINK_IMPORT: &str =
    r#"(import "spacetime_10.0" "bytes_sink_write" (func $sink_write (param i32 i32 i32) (result i32)))"#;

/// The definition of the hand-written module: table `thing {id: u64 auto_inc pk, name: String}`
/// and the reducers its `__call_reducer__` implements, in id order.
fn minimal_def() -> Vec<u8> {
    let mut b = RawModuleDefV10Builder::new();
    b.build_table_with_new_type(
        "thing",
        ProductType::from([("id", AlgebraicType::U64), ("name", AlgebraicType::String)]),
        true,
    )
    .with_auto_inc_primary_key(0)
    .with_index_no_accessor_name(RawIndexAlgorithm::BTree { columns: 0.into() }, "thing_id_idx_btree")
    .finish();
    b.add_reducer("add", ProductType::from([("name", AlgebraicType::String)]));
    for name in ["bad_row", "oob_insert", "oob_log", "fail", "trap", "bad_code", "bad_table"] {
        b.add_reducer(name, ProductType::unit());
    }
    bsatn::to_vec(&RawModuleDef::V10(b.finish())).expect("encode the module definition")
}

/// A module that works through the ABI by hand. Reducer ids as in [`minimal_def`]:
/// 0 `add(name)`: inserts `{0, name}`, then logs the insert write-back bytes (the new id);
///   an insert errno becomes `Err("<two digits>")`.
/// 1 `bad_row()`: inserts 3 bytes that are not a `thing` row; `Err(errno)`.
/// 2 `oob_insert()`: `datastore_insert_bsatn` with a row pointer outside memory.
/// 3 `oob_log()`: inserts a valid row, then `console_log` with a message outside memory.
/// 4 `fail()`: `Err("nope")`. 5 `trap()`: `unreachable`. 6 `bad_code()`: returns 7.
/// 7 `bad_table()`: inserts into table id 9999; `Err(errno)`.
fn hand_module(def: &[u8]) -> String {
    format!(
        r#"(module
  (import "spacetime_10.0" "table_id_from_name" (func $table_id (param i32 i32 i32) (result i32)))
  (import "spacetime_10.0" "datastore_insert_bsatn" (func $insert (param i32 i32 i32) (result i32)))
  {SINK_IMPORT}
  (import "spacetime_10.0" "bytes_source_read" (func $src_read (param i32 i32 i32) (result i32)))
  (import "spacetime_10.0" "console_log"
    (func $log (param i32 i32 i32 i32 i32 i32 i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 200) "thing")
  (data (i32.const 220) "nope")
  {describe}
  (func $table (result i32)
    (drop (call $table_id (i32.const 200) (i32.const 5) (i32.const 208)))
    (i32.load (i32.const 208)))
  ;; Err("<errno as two decimal digits>")
  (func $errno_out (param $err i32) (param $code i32) (result i32)
    (i32.store8 (i32.const 300) (i32.add (i32.const 48) (i32.div_u (local.get $code) (i32.const 10))))
    (i32.store8 (i32.const 301) (i32.add (i32.const 48) (i32.rem_u (local.get $code) (i32.const 10))))
    (i32.store (i32.const 304) (i32.const 2))
    (drop (call $sink_write (local.get $err) (i32.const 300) (i32.const 304)))
    (i32.const 1))
  ;; Inserts {{id: 0, name: "x"}}; returns the errno.
  (func $insert_x (result i32)
    (i64.store (i32.const 8192) (i64.const 0))
    (i32.store (i32.const 8200) (i32.const 1))
    (i32.store8 (i32.const 8204) (i32.const 120))
    (i32.store (i32.const 404) (i32.const 13))
    (call $insert (call $table) (i32.const 8192) (i32.const 404)))
  (func (export "__call_reducer__")
    (param $id i32) (param i64 i64 i64 i64 i64 i64 i64) (param $args i32) (param $err i32)
    (result i32)
    (local $e i32)
    (if (i32.eq (local.get $id) (i32.const 0))
      (then
        (i64.store (i32.const 8192) (i64.const 0))
        (i32.store (i32.const 400) (i32.const 1000))
        (drop (call $src_read (local.get $args) (i32.const 8200) (i32.const 400)))
        (i32.store (i32.const 404) (i32.add (i32.const 8) (i32.load (i32.const 400))))
        (local.set $e (call $insert (call $table) (i32.const 8192) (i32.const 404)))
        (if (local.get $e) (then (return (call $errno_out (local.get $err) (local.get $e)))))
        (call $log (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
          (i32.const -1) (i32.const 8192) (i32.load (i32.const 404)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $id) (i32.const 1))
      (then
        (i32.store (i32.const 8192) (i32.const 0x00ffffff))
        (i32.store (i32.const 404) (i32.const 3))
        (return (call $errno_out (local.get $err)
          (call $insert (call $table) (i32.const 8192) (i32.const 404))))))
    (if (i32.eq (local.get $id) (i32.const 2))
      (then
        (i32.store (i32.const 404) (i32.const 16))
        (drop (call $insert (call $table) (i32.const -16) (i32.const 404)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $id) (i32.const 3))
      (then
        (local.set $e (call $insert_x))
        (if (local.get $e) (then (return (call $errno_out (local.get $err) (local.get $e)))))
        (call $log (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
          (i32.const -1) (i32.const 0x7fff0000) (i32.const 10))
        (return (i32.const 0))))
    (if (i32.eq (local.get $id) (i32.const 4))
      (then
        (i32.store (i32.const 304) (i32.const 4))
        (drop (call $sink_write (local.get $err) (i32.const 220) (i32.const 304)))
        (return (i32.const 1))))
    (if (i32.eq (local.get $id) (i32.const 5)) (then unreachable))
    (if (i32.eq (local.get $id) (i32.const 6)) (then (return (i32.const 7))))
    (if (i32.eq (local.get $id) (i32.const 7))
      (then
        (i64.store (i32.const 8192) (i64.const 0))
        (i32.store (i32.const 8200) (i32.const 0))
        (i32.store (i32.const 404) (i32.const 12))
        (return (call $errno_out (local.get $err)
          (call $insert (i32.const 9999) (i32.const 8192) (i32.const 404))))))
    (i32.const 0))
)"#,
        describe = describe_writing(def)
    )
}

fn publish_hand_module() -> (ModuleHost, Arc<Database>) {
    let (r, db) = try_publish(&hand_module(&minimal_def()));
    (r.expect("the hand-written module publishes"), db)
}

fn things(db: &Database) -> Vec<Vec<Value>> {
    sorted_rows(db, "thing")
}

// ---------------------------------------------------------------------------------------------
// Refused at publish
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_call_reducer_is_refused() {
    let err = refused(&format!(
        "(module {SINK_IMPORT} (memory (export \"memory\") 1) {})",
        describe_writing(&minimal_def())
    ));
    assert_eq!(err, HostError::MissingExport("__call_reducer__".into()));
}

#[test]
fn missing_memory_and_describe_are_refused() {
    let err =
        refused(&format!("(module {SINK_IMPORT} (memory 1) {} {CALL_REDUCER_STUB})", describe_writing(&[2])));
    assert_eq!(err, HostError::MissingExport("memory".into()));
    let err = refused(&format!("(module (memory (export \"memory\") 1) {CALL_REDUCER_STUB})"));
    assert_eq!(err, HostError::MissingExport("__describe_module__".into()));
}

#[test]
fn call_reducer_with_the_wrong_signature_is_refused() {
    let wat = format!(
        r#"(module {SINK_IMPORT} (memory (export "memory") 1) {}
  (func (export "__call_reducer__") (param i32) (result i32) (i32.const 0)))"#,
        describe_writing(&minimal_def())
    );
    match refused(&wat) {
        HostError::MissingExport(m) => assert!(m.starts_with("__call_reducer__"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_imports_are_refused() {
    let module = |import: &str| {
        format!(
            "(module {SINK_IMPORT} {import} (memory (export \"memory\") 1) {} {CALL_REDUCER_STUB})",
            describe_writing(&minimal_def())
        )
    };
    let err = refused(&module(r#"(import "spacetime_10.0" "frobnicate" (func (param i32) (result i32)))"#));
    assert_eq!(err, HostError::UnknownImport("spacetime_10.0::frobnicate".into()));
    let err = refused(&module(
        r#"(import "spacetime_10.9" "table_id_from_name" (func (param i32 i32 i32) (result i32)))"#,
    ));
    assert_eq!(err, HostError::UnknownImport("spacetime_10.9::table_id_from_name".into()));
    let err = refused(&module(r#"(import "env" "abort" (func))"#));
    assert_eq!(err, HostError::UnknownImport("env::abort".into()));
}

#[test]
fn a_known_import_with_the_wrong_signature_is_refused() {
    let wat = format!(
        r#"(module {SINK_IMPORT}
  (import "spacetime_10.0" "console_log" (func (param i32)))
  (memory (export "memory") 1) {} {CALL_REDUCER_STUB})"#,
        describe_writing(&minimal_def())
    );
    let err = refused(&wat);
    assert!(!matches!(err, HostError::Definition(_)), "{err:?}");
}

#[test]
fn garbage_module_definitions_are_refused() {
    let module = |def: &[u8]| {
        format!(
            "(module {SINK_IMPORT} (memory (export \"memory\") 1) {} {CALL_REDUCER_STUB})",
            describe_writing(def)
        )
    };
    // Nothing at all, an unknown version tag, random bytes.
    for def in [&b""[..], b"\x07garbage", b"\x02\xff\xff\xff\x7f\x00"] {
        match refused(&module(def)) {
            HostError::Definition(DefError::Decode(_)) => {}
            other => panic!("{def:?}: {other:?}"),
        }
    }
    // V9 and V8 are recognized and refused as such.
    assert_eq!(refused(&module(b"\x01")), HostError::Definition(DefError::UnsupportedVersion("V9")));
    assert_eq!(refused(&module(b"\x00")), HostError::Definition(DefError::UnsupportedVersion("V8")));
    // A valid definition followed by trailing bytes.
    let mut def = minimal_def();
    def.extend_from_slice(b"junk");
    assert!(matches!(refused(&module(&def)), HostError::Definition(DefError::Decode(_))));
    // A valid definition cut short.
    let def = minimal_def();
    assert!(matches!(refused(&module(&def[..def.len() - 3])), HostError::Definition(DefError::Decode(_))));
}

#[test]
fn a_trapping_describe_is_refused() {
    let wat = format!(
        r#"(module (memory (export "memory") 1)
  (func (export "__describe_module__") (param i32) unreachable) {CALL_REDUCER_STUB})"#
    );
    assert!(matches!(refused(&wat), HostError::Instantiate(_)));
}

// ---------------------------------------------------------------------------------------------
// A minimal valid module, written by hand
// ---------------------------------------------------------------------------------------------

#[test]
fn a_minimal_hand_written_module_runs() {
    let (mut host, db) = publish_hand_module();
    let spec = host.spec();
    assert_eq!(spec.tables.len(), 1);
    assert_eq!(spec.tables[0].name, "thing");
    assert_eq!(spec.reducers.len(), 8);
    assert_eq!(spec.reducers[0].name, "add");
    assert_eq!(spec.init, None);
    let before = log_records(&host).len();
    let out = call(&mut host, "add", r#"["alpha"]"#);
    assert!(out.is_committed(), "{:?}", out.status);
    let out = call(&mut host, "add", r#"{"name": "beta"}"#);
    assert!(out.is_committed(), "{:?}", out.status);
    assert_eq!(
        things(&db),
        vec![
            vec![Value::U64(1), Value::String("alpha".into())],
            vec![Value::U64(2), Value::String("beta".into())],
        ]
    );
    // The insert write-back: exactly the generated id, 8 bytes little-endian.
    let logged: Vec<String> = log_messages_since(&host, before);
    let id = |n: u8| String::from_utf8(vec![n, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(logged, vec![id(1), id(2)]);
    // No client, no connection: lifecycle hooks are absent.
    assert!(host.client_connected(&caller(1)).unwrap().is_none());
    // The program is stored; reopening it works.
    drop(host);
    let mut host = ModuleHost::open(engine(), Arc::clone(&db), None, HostConfig::default()).unwrap();
    assert!(call(&mut host, "add", r#"["gamma"]"#).is_committed());
    assert_eq!(things(&db).len(), 3);
}

#[test]
fn invalid_bsatn_row_returns_bsatn_decode_error_to_the_guest() {
    let (mut host, db) = publish_hand_module();
    let before = db_state(&db);
    assert_eq!(call(&mut host, "bad_row", "[]").status, ReducerStatus::Failed("03".into()));
    assert_eq!(db_state(&db), before);
    // An unknown table id is NO_SUCH_TABLE (4).
    assert_eq!(call(&mut host, "bad_table", "[]").status, ReducerStatus::Failed("04".into()));
    assert_eq!(db_state(&db), before);
    assert!(call(&mut host, "add", r#"["ok"]"#).is_committed());
}

#[test]
fn out_of_bounds_pointers_trap_naming_the_function() {
    let (mut host, db) = publish_hand_module();
    assert!(call(&mut host, "add", r#"["keep"]"#).is_committed());
    let before = db_state(&db);
    let m = match call(&mut host, "oob_insert", "[]").status {
        ReducerStatus::Panicked(m) => m,
        other => panic!("{other:?}"),
    };
    assert!(m.contains("datastore_insert_bsatn"), "{m}");
    assert_eq!(db_state(&db), before);
    // console_log after a successful insert: the trap rolls the insert back.
    let m = match call(&mut host, "oob_log", "[]").status {
        ReducerStatus::Panicked(m) => m,
        other => panic!("{other:?}"),
    };
    assert!(m.contains("console_log"), "{m}");
    assert_eq!(db_state(&db), before);
    // The host renewed the instance; the next insert gets the next id.
    assert!(call(&mut host, "add", r#"["next"]"#).is_committed());
    assert_eq!(things(&db)[1], vec![Value::U64(2), Value::String("next".into())]);
}

#[test]
fn err_trap_and_unexpected_return_codes() {
    let (mut host, db) = publish_hand_module();
    let before = db_state(&db);
    assert_eq!(call(&mut host, "fail", "[]").status, ReducerStatus::Failed("nope".into()));
    assert!(matches!(call(&mut host, "trap", "[]").status, ReducerStatus::Panicked(_)));
    match call(&mut host, "bad_code", "[]").status {
        ReducerStatus::Panicked(m) => assert!(m.contains("unexpected code 7"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(db_state(&db), before);
    assert!(call(&mut host, "add", r#"["after"]"#).is_committed());
}

#[test]
fn unknown_reducers_bad_arguments_and_oversized_json() {
    let (mut host, db) = publish_hand_module();
    let c = caller(1);
    assert_eq!(
        host.call_reducer("nope", &c, ReducerArgs::Json("[]".into())).unwrap_err(),
        HostError::NoSuchReducer("nope".into())
    );
    for bad in ["[1]", "[]", r#"["a", "b"]"#, r#"{"nam": "a"}"#, "[null]", "not json"] {
        match host.call_reducer("add", &c, ReducerArgs::Json(bad.into())) {
            Err(HostError::InvalidArguments { reducer, .. }) => assert_eq!(reducer, "add"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    for bad in [vec![], vec![5, 0, 0, 0, b'a'], vec![1, 0, 0, 0, b'a', b'b']] {
        assert!(matches!(
            host.call_reducer("add", &c, ReducerArgs::Bsatn(bad)),
            Err(HostError::InvalidArguments { .. })
        ));
    }
    // A reducer without parameters takes no bytes.
    assert!(matches!(
        host.call_reducer("fail", &c, ReducerArgs::Bsatn(vec![0])),
        Err(HostError::InvalidArguments { .. })
    ));
    let big = format!(r#"["{}"]"#, "y".repeat(lightcone_host::json::MAX_JSON_ARGS_BYTES));
    match host.call_reducer("add", &c, ReducerArgs::Json(big)) {
        Err(HostError::InvalidArguments { reason, .. }) => assert!(reason.contains("limit"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(things(&db).is_empty());
    let snap = db.snapshot();
    assert!(snap.table_id("thing").is_ok());
}
