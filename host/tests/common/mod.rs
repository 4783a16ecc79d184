//! Shared helpers for the host's integration tests: the fixture modules built by
//! `scripts/build-fixtures.sh` (which `scripts/test.sh` runs before the tests).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use lightcone_host::{CallerInfo, HostConfig, ModuleHost, ReducerArgs, ReducerOutcome, WasmEngine};
use lightcone_mvcc::{Database, ReadTx, Row};

pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/fixtures/wasm")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "fixture {} is missing ({e}): run scripts/build-fixtures.sh (scripts/test.sh does)",
            path.display()
        )
    })
}

pub fn engine() -> &'static WasmEngine {
    static ENGINE: OnceLock<WasmEngine> = OnceLock::new();
    ENGINE.get_or_init(|| WasmEngine::new().expect("wasm engine"))
}

pub const OWNER: [u8; 32] = [7; 32];

pub fn caller(byte: u8) -> CallerInfo {
    CallerInfo { identity: [byte; 32], connection_id: [byte; 16], jwt_payload: None }
}

pub fn publish(name: &str) -> (ModuleHost, Arc<Database>) {
    let db = Arc::new(Database::new());
    let config = HostConfig { fuel_per_call: 200_000_000, database_identity: [9; 32] };
    let (host, report) =
        ModuleHost::publish(engine(), Arc::clone(&db), None, &fixture(name), OWNER, config).expect("publish");
    assert!(report.created);
    (host, db)
}

pub fn call(host: &mut ModuleHost, reducer: &str, json: &str) -> ReducerOutcome {
    host.call_reducer(reducer, &caller(1), ReducerArgs::Json(json.into())).expect("call accepted")
}

pub fn rows(db: &Database, table: &str) -> Vec<Row> {
    let snap = db.snapshot();
    let id = snap.table_id(table).expect("table exists");
    snap.table(id).unwrap().scan().map(|(_, r)| r).collect()
}

pub fn log_messages(host: &ModuleHost) -> Vec<String> {
    host.logs().tail(None).into_iter().map(|r| r.message).collect()
}
