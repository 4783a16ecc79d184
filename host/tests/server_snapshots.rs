//! The server snapshots busy databases in the background and restarts from the snapshot.
//! (Own test binary: it sets the snapshot policy through the environment.)

mod common;

use std::time::Duration;

use lightcone_host::server::{bind, serve, ServerOptions};
use lightcone_host::{CallerInfo, ReducerArgs};

fn run_server<T>(dir: &std::path::Path, f: impl FnOnce(&lightcone_host::server::http::AppState) -> T) -> T {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let options = ServerOptions {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.to_path_buf(),
            durability: lightcone_wal::Durability::Fsync,
        };
        let (listener, state) = bind(&options).await.unwrap();
        let out = tokio::task::block_in_place(|| f(&state));
        serve(listener, state, async {}).await.unwrap();
        out
    })
}

#[test]
fn busy_databases_are_snapshotted_and_restart_from_the_snapshot() {
    std::env::set_var("LIGHTCONE_SNAPSHOT_EVERY_TXS", "20");
    std::env::set_var("LIGHTCONE_SNAPSHOT_CHECK_MS", "50");
    let dir = tempfile::tempdir().unwrap();
    let owner = lightcone_host::server::auth::Identity([3; 32]);
    run_server(dir.path(), |state| {
        let (db, _) =
            state.registry.publish(Some("chat"), common::fixture("quickstart_chat"), owner, false).unwrap();
        let h = db.handle().unwrap();
        for i in 0..30 {
            let args = ReducerArgs::Json(format!(r#"["m{i}"]"#));
            assert!(h.call_reducer("send_message", &CallerInfo::default(), args).unwrap().is_committed());
        }
        let snaps = db.dir.join("data/snapshots");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::fs::read_dir(&snaps).map(|d| d.count()).unwrap_or(0) == 0 {
            assert!(std::time::Instant::now() < deadline, "no snapshot was written");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    // Restart: the snapshot plus the log tail give every message back.
    run_server(dir.path(), |state| {
        let db = state.registry.resolve("chat").expect("database reopened");
        let rows = common::rows(db.handle().unwrap().database(), "message");
        assert_eq!(rows.len(), 30);
    });
}
