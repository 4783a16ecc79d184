//! The database thread with a real commit log: durable calls, commit events, restart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use lightcone_host::{DatabaseHandle, HostConfig, ReducerArgs, Start};
use lightcone_mvcc::ReadTx;
use lightcone_wal::LogOptions;

fn start(dir: &std::path::Path, start: Start) -> Arc<DatabaseHandle> {
    let (db, log, _) =
        lightcone_snapshot::open_data_dir(dir, LogOptions::default(), |_| {}).expect("open data dir");
    let engine = Arc::new(lightcone_host::WasmEngine::new().unwrap());
    DatabaseHandle::start(engine, Arc::new(db), Some(Arc::new(log)), HostConfig::default(), start)
        .expect("start")
        .0
}

#[test]
fn durable_calls_survive_a_restart_and_commits_are_announced() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), Start::Publish { program: fixture("quickstart_chat"), owner: OWNER });
    let commits = handle.commits();
    let me = caller(5);
    handle.client_connected(&me).unwrap();
    let out =
        handle.call_reducer("send_message", &me, ReducerArgs::Json(r#"["persist me"]"#.into())).unwrap();
    assert!(out.is_committed());
    let failed = handle.call_reducer("send_message", &me, ReducerArgs::Json(r#"[""]"#.into())).unwrap();
    assert!(!failed.is_committed());
    // Two commits announced (connect, send_message); the failed call none.
    let first = commits.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(first.reducer.as_deref(), Some("identity_connected"));
    let second = commits.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(second.reducer.as_deref(), Some("send_message"));
    assert_eq!(second.after.tx_offset(), second.delta.tx_offset);
    assert!(commits.recv_timeout(Duration::from_millis(200)).is_err());
    handle.shutdown();
    drop(handle);

    let handle = start(dir.path(), Start::Open);
    assert_eq!(rows(handle.database(), "message").len(), 1);
    assert_eq!(rows(handle.database(), "user").len(), 1);
    let out =
        handle.call_reducer("send_message", &me, ReducerArgs::Json(r#"["after restart"]"#.into())).unwrap();
    assert!(out.is_committed());
    assert_eq!(rows(handle.database(), "message").len(), 2);
}

#[test]
fn concurrent_callers_are_serialized() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), Start::Publish { program: fixture("quickstart_chat"), owner: OWNER });
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let h = Arc::clone(&handle);
            std::thread::spawn(move || {
                for i in 0..20 {
                    let args = ReducerArgs::Json(format!(r#"["t{t} m{i}"]"#));
                    assert!(h.call_reducer("send_message", &caller(t as u8), args).unwrap().is_committed());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(rows(handle.database(), "message").len(), 160);
}
