//! A client that never reads is disconnected with a reason once its queue is full — in
//! messages or in bytes; the database and other clients carry on.

mod common;

use std::time::{Duration, Instant};

use lightcone_host::server::{bind, serve, ServerOptions};
use lightcone_host::{CallerInfo, ReducerArgs};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

#[test]
fn a_client_that_never_reads_is_disconnected() {
    let (_dir, _rt, addr, db) = chat_server();

    let mut slow = subscribe_to_messages(addr);
    // Let the subscription apply, then stop reading.
    std::thread::sleep(Duration::from_millis(300));

    let h = db.handle().unwrap();
    let text = "x".repeat(2000);
    let start = Instant::now();
    let mut calls = 0;
    // Enough updates to fill the socket buffers and the per-client queue many times over.
    while calls < 40_000 && start.elapsed() < Duration::from_secs(90) {
        let args = ReducerArgs::Json(format!(r#"["{text}{calls}"]"#));
        assert!(h.call_reducer("send_message", &CallerInfo::default(), args).unwrap().is_committed());
        calls += 1;
    }
    // The slow client's stream ends with a close frame that says why.
    if let tungstenite::stream::MaybeTlsStream::Plain(t) = slow.get_ref() {
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let reason = loop {
        match slow.read() {
            Ok(Message::Close(Some(f))) => break f.reason.to_string(),
            Ok(Message::Close(None)) => break String::new(),
            Ok(_) => continue,
            Err(e) => break format!("error: {e}"),
        }
    };
    assert!(reason.contains("too slow"), "close reason: {reason:?} after {calls} calls");
    // The database kept going.
    let out =
        h.call_reducer("send_message", &CallerInfo::default(), ReducerArgs::Json(r#"["after"]"#.into()));
    assert!(out.unwrap().is_committed());
}

/// A server (durability `none`) on a free port with quickstart-chat published as `chat`: its
/// data directory and runtime (keep both alive), address and database.
fn chat_server() -> (
    tempfile::TempDir,
    tokio::runtime::Runtime,
    std::net::SocketAddr,
    std::sync::Arc<lightcone_host::server::registry::HostedDb>,
) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let options = ServerOptions {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        durability: lightcone_wal::Durability::None,
    };
    let (listener, state) = rt.block_on(bind(&options)).unwrap();
    let addr = listener.local_addr().unwrap();
    let owner = lightcone_host::server::auth::Identity([3; 32]);
    let (db, _) =
        state.registry.publish(Some("chat"), common::fixture("quickstart_chat"), owner, false).unwrap();
    rt.spawn(serve(listener, state, std::future::pending()));
    (dir, rt, addr, db)
}

/// Connects to `chat` over v2 BSATN and subscribes to `SELECT * FROM message`.
fn subscribe_to_messages(
    addr: std::net::SocketAddr,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>> {
    let mut req = format!("ws://{addr}/v1/database/chat/subscribe").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "v2.bsatn.spacetimedb".parse().unwrap());
    let (mut ws, _) = tungstenite::connect(req).unwrap();
    let q = "SELECT * FROM message";
    let mut sub = vec![0u8, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0];
    sub.extend_from_slice(&(q.len() as u32).to_le_bytes());
    sub.extend_from_slice(q.as_bytes());
    ws.send(Message::Binary(sub.into())).unwrap();
    ws
}

// Large updates fill a client's queue in bytes long before its message bound: 1,500 updates
// of 100 kB (well under MAX_QUEUED_MESSAGES, ~2x MAX_QUEUED_BYTES) disconnect a client that
// never reads, while a client that reads gets every one of them and stays connected.
#[test]
fn a_client_that_never_reads_large_updates_is_disconnected_by_bytes() {
    use lightcone_host::server::ws::{MAX_QUEUED_BYTES, MAX_QUEUED_MESSAGES};
    const CALLS: usize = 1_500;
    const TEXT_BYTES: usize = 100_000;
    const { assert!(CALLS < MAX_QUEUED_MESSAGES / 4 && CALLS * TEXT_BYTES > 2 * MAX_QUEUED_BYTES) };

    let (_dir, _rt, addr, db) = chat_server();

    let mut slow = subscribe_to_messages(addr);
    let mut reader = subscribe_to_messages(addr);
    // Both subscriptions apply (InitialConnection, then SubscribeApplied), then the slow
    // client stops reading.
    for ws in [&mut slow, &mut reader] {
        if let tungstenite::stream::MaybeTlsStream::Plain(t) = ws.get_ref() {
            t.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        for expected in [0u8, 1] {
            match ws.read() {
                Ok(Message::Binary(b)) => assert_eq!(b.get(1), Some(&expected), "server message kind"),
                other => panic!("expected server message {expected}: {other:?}"),
            }
        }
    }
    let reading = std::thread::spawn(move || {
        // Counts the updates carrying a message, up to the one sent last.
        let mut updates = 0;
        loop {
            match reader.read() {
                Ok(Message::Binary(b)) if b.len() > TEXT_BYTES => updates += 1,
                Ok(Message::Binary(b)) if b.windows(5).any(|w| w == b"after") => return Ok(updates),
                Ok(Message::Close(f)) => return Err(format!("the reading client was closed: {f:?}")),
                Ok(_) => {}
                Err(e) => return Err(format!("the reading client failed: {e}")),
            }
        }
    });

    let h = db.handle().unwrap();
    let text = "y".repeat(TEXT_BYTES);
    for call in 0..CALLS {
        let args = ReducerArgs::Json(format!(r#"["{text}{call}"]"#));
        assert!(h.call_reducer("send_message", &CallerInfo::default(), args).unwrap().is_committed());
    }
    let out =
        h.call_reducer("send_message", &CallerInfo::default(), ReducerArgs::Json(r#"["after"]"#.into()));
    assert!(out.unwrap().is_committed());

    if let tungstenite::stream::MaybeTlsStream::Plain(t) = slow.get_ref() {
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let reason = loop {
        match slow.read() {
            Ok(Message::Close(Some(f))) => break f.reason.to_string(),
            Ok(Message::Close(None)) => break String::new(),
            Ok(_) => continue,
            Err(e) => break format!("error: {e}"),
        }
    };
    assert!(reason.contains("too slow"), "close reason: {reason:?}");
    assert_eq!(reading.join().unwrap(), Ok(CALLS), "the reading client gets every update");
}
