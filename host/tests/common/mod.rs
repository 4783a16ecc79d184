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

// ---- Helpers added for the abi_exerciser / bad_modules tests (append-only). ----

/// Publishes fixture `name` with an explicit config (fresh database).
pub fn publish_with(name: &str, config: HostConfig) -> (ModuleHost, Arc<Database>) {
    let db = Arc::new(Database::new());
    let (host, report) =
        ModuleHost::publish(engine(), Arc::clone(&db), None, &fixture(name), OWNER, config).expect("publish");
    assert!(report.created);
    (host, db)
}

/// The config `publish` uses.
pub fn test_config() -> HostConfig {
    HostConfig { fuel_per_call: 200_000_000, database_identity: [9; 32] }
}

/// Calls `reducer` as `who` with SATS-JSON arguments; the call must be accepted.
pub fn call_as(host: &mut ModuleHost, who: &CallerInfo, reducer: &str, json: &str) -> ReducerOutcome {
    host.call_reducer(reducer, who, ReducerArgs::Json(json.into()))
        .unwrap_or_else(|e| panic!("call of {reducer}({json}) refused: {e}"))
}

/// Calls a reducer and asserts it committed.
pub fn call_ok(host: &mut ModuleHost, reducer: &str, json: &str) -> ReducerOutcome {
    let out = call(host, reducer, json);
    assert!(out.is_committed(), "{reducer}({json}) did not commit: {:?}", out.status);
    out
}

/// Rows of `table`, sorted (engine order is not part of the contract).
pub fn sorted_rows(db: &Database, table: &str) -> Vec<Row> {
    let mut r = rows(db, table);
    r.sort();
    r
}

/// Every table's name, sorted rows and next sequence values: equal states mean nothing
/// observable changed (rows, and the ids the next inserts will get).
pub fn db_state(db: &Database) -> Vec<(String, Vec<Row>, Vec<Option<i128>>)> {
    let snap = db.snapshot();
    let mut out = Vec::new();
    for id in snap.table_ids() {
        let view = snap.table(id).unwrap();
        let mut rows: Vec<Row> = view.scan().map(|(_, r)| r).collect();
        rows.sort();
        out.push((view.schema().name().to_string(), rows, view.sequence_next().to_vec()));
    }
    out
}

/// Every log record of the host.
pub fn log_records(host: &ModuleHost) -> Vec<lightcone_host::logs::LogRecord> {
    host.logs().tail(None)
}

/// Log records appended after the first `skip`.
pub fn log_messages_since(host: &ModuleHost, skip: usize) -> Vec<String> {
    host.logs().tail(None).into_iter().skip(skip).map(|r| r.message).collect()
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    lightcone_host::logs::now_micros()
}

/// Little-endian bytes of a U256-valued column as `lightcone_mvcc::Value`.
pub fn u256_value(bytes: [u8; 32]) -> lightcone_mvcc::Value {
    lightcone_mvcc::Value::U256(lightcone_mvcc::U256::from_le_bytes(bytes))
}

/// BSATN of a `String`.
pub fn bsatn_str(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}
