//! The quickstart chat module (built with the official `spacetimedb` 2.10 crate) on the host.

mod common;

use common::*;
use lightcone_host::{CallerInfo, HostError, ReducerArgs, ReducerStatus};
use lightcone_mvcc::{ReadTx, Value};

#[test]
fn send_message_commits_and_logs() {
    let (mut host, db) = publish("quickstart_chat");
    let out = call(&mut host, "send_message", r#"["Hello, World!"]"#);
    assert_eq!(out.status, ReducerStatus::Committed, "{:?}", out.error());
    assert!(out.energy_used > 0);
    let msgs = rows(&db, "message");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0][2], Value::String("Hello, World!".into()));
    assert_eq!(msgs[0][0], Value::U256(lightcone_mvcc::U256::from_le_bytes([1; 32])));
    assert_eq!(msgs[0][1], Value::I64(out.timestamp_micros));
    assert!(log_messages(&host).iter().any(|m| m == "Hello, World!"));
    assert_eq!(out.delta.tables.len(), 1);
    assert_eq!(out.delta.tables[0].inserts.len(), 1);
}

#[test]
fn validation_errors_roll_back() {
    let (mut host, db) = publish("quickstart_chat");
    let out = call(&mut host, "send_message", r#"[""]"#);
    assert_eq!(out.status, ReducerStatus::Failed("Messages must not be empty".into()));
    assert!(rows(&db, "message").is_empty());
    let out = call(&mut host, "set_name", r#"[""]"#);
    assert_eq!(out.status, ReducerStatus::Failed("Names must not be empty".into()));
    let out = call(&mut host, "set_name", r#"["alice"]"#);
    assert_eq!(out.status, ReducerStatus::Failed("Cannot set name for unknown user".into()));
}

#[test]
fn connect_then_set_name_updates_the_user() {
    let (mut host, db) = publish("quickstart_chat");
    let me = caller(3);
    let connected = host.client_connected(&me).unwrap().expect("module has client_connected");
    assert!(connected.is_committed());
    let out = host.call_reducer("set_name", &me, ReducerArgs::Json(r#"["alice"]"#.into())).unwrap();
    assert!(out.is_committed(), "{:?}", out.error());
    let users = rows(&db, "user");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0][2], Value::Bool(true));
    // name: Option<String> = Some("alice") → tag 0 + string.
    let mut some_alice = vec![0u8, 5, 0, 0, 0];
    some_alice.extend_from_slice(b"alice");
    assert_eq!(users[0][1], Value::Bsatn(some_alice.into()));
    host.client_disconnected(&me).unwrap();
    assert_eq!(rows(&db, "user")[0][2], Value::Bool(false));
}

#[test]
fn lifecycle_reducers_are_not_client_callable_and_unknown_reducers_fail() {
    let (mut host, _db) = publish("quickstart_chat");
    let c = CallerInfo::default();
    assert_eq!(
        host.call_reducer("init", &c, ReducerArgs::Json("[]".into())).unwrap_err(),
        HostError::NotCallable("init".into())
    );
    assert_eq!(
        host.call_reducer("nope", &c, ReducerArgs::Json("[]".into())).unwrap_err(),
        HostError::NoSuchReducer("nope".into())
    );
    for bad in [r#"[]"#, r#"[1]"#, r#"["a", "b"]"#, "{", r#"["x"] trailing"#] {
        match host.call_reducer("send_message", &c, ReducerArgs::Json(bad.into())) {
            Err(HostError::InvalidArguments { reducer, .. }) => assert_eq!(reducer, "send_message"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    match host.call_reducer("send_message", &c, ReducerArgs::Bsatn(vec![9, 0, 0, 0, b'x'])) {
        Err(HostError::InvalidArguments { .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn republish_keeps_data_and_reopen_works() {
    let (mut host, db) = publish("quickstart_chat");
    assert!(call(&mut host, "send_message", r#"["one"]"#).is_committed());
    drop(host);
    let config = lightcone_host::HostConfig::default();
    let (mut host, report) = lightcone_host::ModuleHost::publish(
        engine(),
        std::sync::Arc::clone(&db),
        None,
        &fixture("quickstart_chat"),
        OWNER,
        config.clone(),
    )
    .unwrap();
    assert!(!report.created);
    assert!(report.tables_created.is_empty());
    assert_eq!(rows(&db, "message").len(), 1);
    assert!(call(&mut host, "send_message", r#"["two"]"#).is_committed());
    drop(host);
    let mut host =
        lightcone_host::ModuleHost::open(engine(), std::sync::Arc::clone(&db), None, config).unwrap();
    assert!(call(&mut host, "send_message", r#"["three"]"#).is_committed());
    assert_eq!(rows(&db, "message").len(), 3);
}

#[test]
fn incompatible_republish_is_refused_and_changes_nothing() {
    let (mut host, db) = publish("quickstart_chat");
    assert!(call(&mut host, "send_message", r#"["keep me"]"#).is_committed());
    drop(host);
    let err = lightcone_host::ModuleHost::publish(
        engine(),
        std::sync::Arc::clone(&db),
        None,
        &fixture("abi_exerciser"),
        OWNER,
        lightcone_host::HostConfig::default(),
    )
    .err()
    .expect("refused");
    match err {
        HostError::IncompatibleSchema(m) => assert!(m.contains("table `message` was removed"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rows(&db, "message").len(), 1);
}

#[test]
fn module_built_with_crate_2_14_runs() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/fixtures/wasm/quickstart_chat_2_14.wasm");
    if !path.exists() {
        eprintln!("SKIPPED: {} not built (no nightly toolchain)", path.display());
        return;
    }
    let (mut host, db) = publish("quickstart_chat_2_14");
    assert!(call(&mut host, "send_message", r#"["from 2.14"]"#).is_committed());
    assert_eq!(rows(&db, "message").len(), 1);
}

#[test]
fn bad_programs_are_refused() {
    let db = std::sync::Arc::new(lightcone_mvcc::Database::new());
    let publish = |bytes: &[u8]| {
        lightcone_host::ModuleHost::publish(
            engine(),
            std::sync::Arc::clone(&db),
            None,
            bytes,
            OWNER,
            lightcone_host::HostConfig::default(),
        )
        .err()
        .expect("refused")
    };
    assert!(matches!(publish(b"hello"), HostError::NotWasm(_)));
    assert!(matches!(publish(b"\0asm\x01\0\0\0garbage"), HostError::NotWasm(_)));
    // A valid wasm module without the exports.
    let empty = b"\0asm\x01\0\0\0";
    assert!(matches!(publish(empty), HostError::MissingExport(_)));
    assert!(db.snapshot().table_ids().is_empty());
}
