//! The server over real sockets: HTTP routes, owner checks, the WebSocket protocol with two
//! clients, private tables, bad input.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::fixture;
use lightcone_host::server::{bind, serve, ServerOptions};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

struct Server {
    url: String,
    /// Dropping it (or [`Server::shut_down`]) starts a graceful shutdown.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Shuts the server down gracefully and waits until `serve` has returned.
    fn shut_down(&mut self) {
        let _ = self.stop.take().expect("running").send(());
        self.thread.take().expect("running").join().expect("server thread");
    }
}

fn start() -> Server {
    start_with(lightcone_wal::Durability::Fsync)
}

fn start_with(durability: lightcone_wal::Durability) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve_dir(dir.path(), durability);
    server._dir = Some(dir);
    server
}

/// Serves `dir` on a port of its own.
fn serve_dir(dir: &std::path::Path, durability: lightcone_wal::Durability) -> Server {
    let options = ServerOptions {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        durability,
    };
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let (listener, state) = bind(&options).await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            serve(listener, state, async move {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
        });
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(30)).expect("server started");
    Server { url: format!("http://{addr}"), stop: Some(stop_tx), thread: Some(thread), _dir: None }
}

struct Http {
    agent: ureq::Agent,
}

struct Reply {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
}

impl Http {
    fn new() -> Http {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        Http { agent }
    }

    fn req(&self, method: &str, url: &str, token: Option<&str>, ctype: Option<&str>, body: Vec<u8>) -> Reply {
        let mut b = ureq::http::Request::builder().method(method).uri(url);
        if let Some(t) = token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(c) = ctype {
            b = b.header("Content-Type", c);
        }
        let mut resp = self.agent.run(b.body(body).unwrap()).expect("request");
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Reply { status, body, headers }
    }
}

fn new_identity(http: &Http, s: &Server) -> (String, String) {
    let r = http.req("POST", &format!("{}/v1/identity", s.url), None, None, vec![]);
    assert_eq!(r.status, 200, "{}", r.body);
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    (j["identity"].as_str().unwrap().to_string(), j["token"].as_str().unwrap().to_string())
}

fn publish(http: &Http, s: &Server, name: &str, token: &str, wasm: &str) -> Reply {
    http.req(
        "PUT",
        &format!("{}/v1/database/{name}", s.url),
        Some(token),
        Some("application/wasm"),
        fixture(wasm),
    )
}

fn pre_publish(http: &Http, s: &Server, name: &str, token: &str, wasm: &str) -> Reply {
    let url = format!("{}/v1/database/{name}/pre_publish", s.url);
    http.req("POST", &url, Some(token), Some("application/wasm"), fixture(wasm))
}

/// Publishes an update that disconnects clients, acknowledged as the `spacetime` CLI does it:
/// the token from `pre_publish`, passed back with `policy=BreakClients`.
fn publish_breaking(http: &Http, s: &Server, name: &str, token: &str, wasm: &str) -> Reply {
    let plan = pre_publish(http, s, name, token, wasm);
    assert_eq!(plan.status, 200, "{}", plan.body);
    let plan: serde_json::Value = serde_json::from_str(&plan.body).unwrap();
    assert_eq!(plan["AutoMigrate"]["break_clients"], true, "{plan}");
    let migration = plan["AutoMigrate"]["token"].as_str().unwrap().to_string();
    http.req(
        "PUT",
        &format!("{}/v1/database/{name}?policy=BreakClients&token={migration}", s.url),
        Some(token),
        Some("application/wasm"),
        fixture(wasm),
    )
}

fn call(http: &Http, s: &Server, db: &str, reducer: &str, token: Option<&str>, args: &str) -> Reply {
    let url = format!("{}/v1/database/{db}/call/{reducer}", s.url);
    http.req("POST", &url, token, Some("application/json"), args.as_bytes().to_vec())
}

fn sql(http: &Http, s: &Server, db: &str, token: &str, q: &str) -> Reply {
    http.req("POST", &format!("{}/v1/database/{db}/sql", s.url), Some(token), Some("text/plain"), q.into())
}

#[test]
fn http_routes_owner_checks_and_errors() {
    let s = start();
    let http = Http::new();
    assert_eq!(http.req("GET", &format!("{}/v1/ping", s.url), None, None, vec![]).status, 200);
    let (owner_id, owner) = new_identity(&http, &s);
    let (_, other) = new_identity(&http, &s);
    let r = publish(&http, &s, "chat", &owner, "quickstart_chat");
    assert_eq!(r.status, 200, "{}", r.body);
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(j["Success"]["op"], "created");
    assert_eq!(j["Success"]["domain"], "chat");

    // Calls: anonymous callers get a minted identity in the response headers.
    let r = call(&http, &s, "chat", "send_message", None, r#"["hi"]"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.iter().any(|(k, v)| k == "spacetime-identity" && v.starts_with("c200")));
    assert!(r.headers.iter().any(|(k, _)| k == "spacetime-energy-used"));
    let r = call(&http, &s, "chat", "send_message", Some(&other), r#"[""]"#);
    assert_eq!(r.status, 530);
    assert_eq!(r.body, "Messages must not be empty");
    assert_eq!(call(&http, &s, "chat", "nope", Some(&other), "[]").status, 404);
    assert_eq!(call(&http, &s, "nodb", "send_message", Some(&other), "[]").status, 404);
    let r = call(&http, &s, "chat", "send_message", Some(&other), "[1, 2]");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("invalid arguments"), "{}", r.body);
    let url = format!("{}/v1/database/chat/call/send_message", s.url);
    assert_eq!(http.req("POST", &url, Some(&other), Some("text/plain"), b"[\"x\"]".to_vec()).status, 415);
    assert_eq!(call(&http, &s, "chat", "send_message", Some("not.a.token"), "[\"x\"]").status, 401);

    // SQL: rows as SATS-JSON; DML only for the owner.
    let r = sql(&http, &s, "chat", &other, "SELECT text FROM message");
    assert_eq!(r.status, 200, "{}", r.body);
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(j[0]["rows"], serde_json::json!([["hi"]]));
    let r = sql(&http, &s, "chat", &other, "DELETE FROM message");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("only the database owner"), "{}", r.body);
    let r = sql(&http, &s, "chat", &other, "INSERT INTO message (sender, sent, text) VALUES (0, 0, 'x')");
    assert_eq!(r.status, 403, "{}", r.body);
    let r = sql(&http, &s, "chat", &other, "SELECT * FROM message; DELETE FROM message");
    assert_eq!(r.status, 403, "{}", r.body);
    let r = sql(&http, &s, "chat", &owner, "DELETE FROM message; SELECT COUNT(*) AS n FROM message");
    assert_eq!(r.status, 200, "{}", r.body);
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(j[0]["stats"]["rows_deleted"], 1);
    assert_eq!(j[1]["rows"], serde_json::json!([[0]]));
    assert_eq!(sql(&http, &s, "chat", &owner, "SELECT * FROM nope").status, 400);

    // Logs and publish-over are the owner's.
    let logs = format!("{}/v1/database/chat/logs?num_lines=100", s.url);
    assert_eq!(http.req("GET", &logs, Some(&other), None, vec![]).status, 403);
    let r = http.req("GET", &logs, Some(&owner), None, vec![]);
    assert!(r.body.lines().any(|l| l.contains("\"message\":\"hi\"")), "{}", r.body);
    assert_eq!(publish(&http, &s, "chat", &other, "quickstart_chat").status, 403);
    let r = publish(&http, &s, "chat", &owner, "quickstart_chat");
    assert!(r.body.contains("\"updated\""), "{}", r.body);
    // An incompatible update is refused and the old module keeps serving.
    let r = publish(&http, &s, "chat", &owner, "abi_exerciser");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("not compatible"), "{}", r.body);
    assert_eq!(call(&http, &s, "chat", "send_message", Some(&other), r#"["still here"]"#).status, 200);

    let r = http.req("GET", &format!("{}/v1/identity/{owner_id}/databases", s.url), None, None, vec![]);
    assert!(r.body.contains("c200"), "{}", r.body);
    // Database info and identity, by name; the caller's identity checks; the signing key.
    let r = http.req("GET", &format!("{}/v1/database/chat", s.url), None, None, vec![]);
    assert_eq!(r.status, 200, "{}", r.body);
    let info: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(info["owner_identity"], owner_id.as_str(), "{info}");
    let db_id = info["database_identity"].as_str().expect("database identity").to_string();
    assert!(db_id.len() == 64 && db_id != owner_id, "{info}");
    assert_eq!(info["initial_program"].as_str().map(str::len), Some(64), "a blake3 hash: {info}");
    let r = http.req("GET", &format!("{}/v1/database/chat/identity", s.url), None, None, vec![]);
    assert_eq!((r.status, r.body.as_str()), (200, db_id.as_str()));
    assert_eq!(http.req("GET", &format!("{}/v1/database/{db_id}", s.url), None, None, vec![]).status, 200);
    assert_eq!(http.req("GET", &format!("{}/v1/database/nope", s.url), None, None, vec![]).status, 404);
    let verify = format!("{}/v1/identity/{owner_id}/verify", s.url);
    assert_eq!(http.req("GET", &verify, Some(&owner), None, vec![]).status, 204);
    assert_eq!(http.req("GET", &verify, Some(&other), None, vec![]).status, 400);
    assert_eq!(http.req("GET", &verify, None, None, vec![]).status, 401);
    let r = http.req("GET", &format!("{}/v1/identity/public-key", s.url), None, None, vec![]);
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("-----BEGIN PUBLIC KEY-----"), "{}", r.body);
    let r = http.req("GET", &format!("{}/v1/database/chat/schema?version=10", s.url), None, None, vec![]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("send_message"));
    // The V9 shape older `spacetime` CLIs ask for; unknown versions are refused by name.
    let r = http.req("GET", &format!("{}/v1/database/chat/schema?version=9", s.url), None, None, vec![]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"lifecycle\"") && r.body.contains("send_message"), "{}", r.body);
    let r = http.req("GET", &format!("{}/v1/database/chat/schema?version=8", s.url), None, None, vec![]);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("version 8"), "{}", r.body);

    let del = format!("{}/v1/database/chat", s.url);
    assert_eq!(http.req("DELETE", &del, Some(&other), None, vec![]).status, 403);
    assert_eq!(http.req("DELETE", &del, Some(&owner), None, vec![]).status, 200);
    assert_eq!(call(&http, &s, "chat", "send_message", Some(&owner), r#"["x"]"#).status, 404);
}

#[test]
fn private_tables_do_not_exist_for_others() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    let (_, other) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "ex", &owner, "abi_exerciser").status, 200);
    assert_eq!(call(&http, &s, "ex", "set_config", Some(&owner), r#"["k", "secret"]"#).status, 200);
    let r = sql(&http, &s, "ex", &other, "SELECT * FROM config");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("`config` is not a valid table"), "{}", r.body);
    let r = sql(&http, &s, "ex", &owner, "SELECT * FROM config");
    assert!(r.body.contains("secret"), "{}", r.body);
}

// --- WebSocket ---

type Ws = WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn connect(s: &Server, db: &str, token: Option<&str>, protocol: &str) -> Result<Ws, tungstenite::Error> {
    let url = format!("{}/v1/database/{db}/subscribe?compression=None", s.url.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    if let Some(t) = token {
        req.headers_mut().insert("Authorization", format!("Bearer {t}").parse().unwrap());
    }
    let (ws, _) = tungstenite::connect(req)?;
    ws.get_ref();
    Ok(ws)
}

fn set_timeout(ws: &Ws) {
    if let tungstenite::stream::MaybeTlsStream::Plain(t) = ws.get_ref() {
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
}

/// Connects, sets the read timeout and takes the `InitialConnection` every session starts with.
fn connect_ready(s: &Server, db: &str, token: Option<&str>, protocol: &str) -> Ws {
    let mut ws = connect(s, db, token, protocol).unwrap();
    set_timeout(&ws);
    assert_eq!(next(&mut ws)[0], 0, "InitialConnection first");
    ws
}

/// Reads the next server message (after the compression byte).
fn next(ws: &mut Ws) -> Vec<u8> {
    loop {
        match ws.read().expect("server message") {
            Message::Binary(b) => {
                assert_eq!(b[0], 0, "uncompressed");
                return b[1..].to_vec();
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn str_bsatn(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

fn subscribe_msg(request_id: u32, qs: u32, queries: &[&str]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&request_id.to_le_bytes());
    v.extend_from_slice(&qs.to_le_bytes());
    v.extend_from_slice(&(queries.len() as u32).to_le_bytes());
    for q in queries {
        v.extend_from_slice(&str_bsatn(q));
    }
    v
}

fn call_msg(request_id: u32, reducer: &str, args: &[u8]) -> Vec<u8> {
    let mut v = vec![3u8];
    v.extend_from_slice(&request_id.to_le_bytes());
    v.push(0);
    v.extend_from_slice(&str_bsatn(reducer));
    v.extend_from_slice(&(args.len() as u32).to_le_bytes());
    v.extend_from_slice(args);
    v
}

/// Reads until the server closes the connection: the close frame's reason (or the read
/// error, if the connection ended without one).
fn close_reason(ws: &mut Ws) -> String {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            Ok(_) => continue,
            Err(e) => return e.to_string(),
        }
    }
}

/// Reads until the server closes the connection with a close frame and returns it; panics
/// with `what` if the connection ends without one.
fn expect_close(ws: &mut Ws, what: &str) -> tungstenite::protocol::CloseFrame {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return f,
            Ok(Message::Close(None)) => panic!("{what}: a close without a frame"),
            Ok(_) => continue,
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn websocket_clients_see_each_others_commits() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "chat", &owner, "quickstart_chat").status, 200);

    let mut a = connect(&s, "chat", None, "v2.bsatn.spacetimedb").unwrap();
    set_timeout(&a);
    let hello = next(&mut a);
    assert_eq!(hello[0], 0, "InitialConnection first");
    a.send(Message::Binary(subscribe_msg(1, 10, &["SELECT * FROM message"]).into())).unwrap();
    let applied = next(&mut a);
    assert_eq!(applied[0], 1, "SubscribeApplied");
    assert_eq!(&applied[1..9], &[1, 0, 0, 0, 10, 0, 0, 0]);

    let mut b = connect_ready(&s, "chat", Some(&owner), "v3.bsatn.spacetimedb, v2.bsatn.spacetimedb");
    b.send(Message::Binary(call_msg(5, "send_message", &str_bsatn("from b")).into())).unwrap();
    let result = next(&mut b);
    assert_eq!(result[0], 6, "ReducerResult");
    assert_eq!(&result[1..5], &5u32.to_le_bytes());
    assert_eq!(result[13], 1, "OkEmpty: b subscribes to nothing");

    let update = next(&mut a);
    assert_eq!(update[0], 4, "TransactionUpdate to a");
    assert!(contains(&update, b"from b"));
    assert!(contains(&update, b"message"));

    // A failing call: Err with the reducer's text as a BSATN string.
    b.send(Message::Binary(call_msg(6, "send_message", &str_bsatn("")).into())).unwrap();
    let result = next(&mut b);
    assert_eq!(result[13], 2);
    assert!(contains(&result, b"Messages must not be empty"));

    // The caller's own update rides in its ReducerResult.
    a.send(Message::Binary(call_msg(7, "send_message", &str_bsatn("from a")).into())).unwrap();
    let result = next(&mut a);
    assert_eq!(result[0], 6);
    assert_eq!(result[13], 0, "Ok with a transaction update");
    assert!(contains(&result, b"from a"));

    // A bad subscription answers SubscriptionError; the connection stays.
    a.send(Message::Binary(subscribe_msg(2, 11, &["SELECT * FROM nope"]).into())).unwrap();
    let e = next(&mut a);
    assert_eq!(e[0], 3);

    // Garbage closes the connection with a reason.
    a.send(Message::Binary(vec![42, 1, 2].into())).unwrap();
    let f = expect_close(&mut a, "no close frame for garbage");
    assert_eq!(f.code, CloseCode::Invalid);
    assert!(f.reason.contains("malformed"), "{}", f.reason);

    // No supported subprotocol: refused before the upgrade.
    assert!(connect(&s, "chat", None, "v1.json.spacetimedb").is_err());
}

/// The `rls` database (the abi-exerciser's unstable build, whose `caller_info` rows are
/// filtered to their caller) with one `whoami` row by alice and two by bob.
struct RlsDb {
    owner: String,
    alice_id: String,
    alice: String,
    bob: String,
}

fn publish_rls_db(http: &Http, s: &Server) -> RlsDb {
    let (_, owner) = new_identity(http, s);
    let (alice_id, alice) = new_identity(http, s);
    let (_, bob) = new_identity(http, s);
    assert_eq!(publish(http, s, "rls", &owner, "abi_exerciser_unstable").status, 200);
    for t in [&alice, &bob, &bob] {
        assert_eq!(call(http, s, "rls", "whoami", Some(t), "[]").status, 200);
    }
    RlsDb { owner, alice_id, alice, bob }
}

#[test]
fn row_level_security_applies_to_sql_for_other_identities() {
    let s = start();
    let http = Http::new();
    let RlsDb { owner, alice_id, alice, bob } = publish_rls_db(&http, &s);
    let count = |token: &str, q: &str| -> (u16, usize, String) {
        let r = sql(&http, &s, "rls", token, q);
        let n = serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|j| j[0]["rows"].as_array().map(|a| a.len()))
            .unwrap_or(0);
        (r.status, n, r.body)
    };
    // Each identity sees only its own rows; the owner sees all.
    let (status, n, body) = count(&alice, "SELECT * FROM caller_info");
    assert_eq!((status, n), (200, 1), "{body}");
    assert!(body.contains(&alice_id), "alice sees her own row: {body}");
    assert_eq!(count(&bob, "SELECT * FROM caller_info").1, 2);
    assert_eq!(count(&owner, "SELECT * FROM caller_info").1, 3);
    // Shapes that cannot be filtered exactly are refused, not leaked.
    let (status, _, body) = count(&alice, "SELECT COUNT(*) AS n FROM caller_info");
    assert_eq!(status, 400);
    assert!(body.contains("row-level security"), "{body}");
    // Tables without a filter are unaffected.
    assert_eq!(count(&alice, "SELECT * FROM item").0, 200);
}

#[test]
fn one_off_queries_respect_row_level_security() {
    let s = start();
    let http = Http::new();
    let RlsDb { owner, alice, bob, .. } = publish_rls_db(&http, &s);
    let one_off = |token: &str, q: &str| -> Vec<u8> {
        let mut ws = connect_ready(&s, "rls", Some(token), "v2.bsatn.spacetimedb");
        let mut m = vec![2u8];
        m.extend_from_slice(&9u32.to_le_bytes());
        m.extend_from_slice(&str_bsatn(q));
        ws.send(Message::Binary(m.into())).unwrap();
        let r = next(&mut ws);
        assert_eq!(r[0], 5, "OneOffQueryResult");
        r
    };
    // Row count of the result's single table: the RowOffsets list length, or data / fixed size.
    let rows = |r: &[u8]| -> usize {
        assert_eq!(r[5], 0, "Ok: {}", String::from_utf8_lossy(r));
        let name_len = u32::from_le_bytes(r[10..14].try_into().unwrap()) as usize;
        let hint = &r[14 + name_len..];
        match hint[0] {
            1 => u32::from_le_bytes(hint[1..5].try_into().unwrap()) as usize,
            _ => {
                let size = u16::from_le_bytes(hint[1..3].try_into().unwrap()) as usize;
                u32::from_le_bytes(hint[3..7].try_into().unwrap()) as usize / size.max(1)
            }
        }
    };
    assert_eq!(rows(&one_off(&alice, "SELECT * FROM caller_info")), 1);
    assert_eq!(rows(&one_off(&bob, "SELECT * FROM caller_info")), 2);
    assert_eq!(rows(&one_off(&owner, "SELECT * FROM caller_info")), 3);
    let refused = one_off(&alice, "SELECT COUNT(*) AS n FROM caller_info");
    assert_eq!(refused[5], 1, "Err for a shape RLS cannot filter");
}

/// Occurrences of `needle` in `hay`.
fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

// Proves a subscription that starts while commits stream in (and nobody else is subscribed,
// so the hub keeps no state of its own) sees every row exactly once: in its initial rows or in
// one later update, never both, never neither.
#[test]
fn a_subscription_started_mid_stream_sees_each_commit_once() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "chat", &owner, "quickstart_chat").status, 200);
    let mut writer = connect_ready(&s, "chat", Some(&owner), "v2.bsatn.spacetimedb");
    let mut reader = connect_ready(&s, "chat", None, "v2.bsatn.spacetimedb");

    const CALLS: u32 = 400;
    let text = |i: u32| format!("mid-stream-{i:05}");
    for i in 0..CALLS {
        writer.send(Message::Binary(call_msg(i, "send_message", &str_bsatn(&text(i))).into())).unwrap();
        if i == CALLS / 2 {
            reader.send(Message::Binary(subscribe_msg(1, 1, &["SELECT * FROM message"]).into())).unwrap();
        }
    }
    for _ in 0..CALLS {
        let result = next(&mut writer);
        assert_eq!(result[0], 6, "ReducerResult");
    }
    let mut seen = vec![0usize; CALLS as usize];
    let mut applied = false;
    while seen.contains(&0) {
        let msg = next(&mut reader);
        match msg[0] {
            1 => applied = true,
            4 => assert!(applied, "an update before SubscribeApplied"),
            other => panic!("unexpected message tag {other}"),
        }
        for (i, n) in seen.iter_mut().enumerate() {
            *n += count(&msg, text(i as u32).as_bytes());
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "rows seen more than once: {:?}", {
        seen.iter().enumerate().filter(|(_, &n)| n > 1).map(|(i, _)| i).collect::<Vec<_>>()
    });
}

// Proves a client's answers come back in the order of its calls even when some wait for an
// fsync and others (a failing reducer: nothing to make durable) could be answered at once.
#[test]
fn pipelined_answers_keep_call_order() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "chat", &owner, "quickstart_chat").status, 200);
    let mut ws = connect_ready(&s, "chat", Some(&owner), "v2.bsatn.spacetimedb");
    const CALLS: u32 = 300;
    for i in 0..CALLS {
        let msg = if i % 3 == 2 {
            call_msg(i, "set_name", &str_bsatn("")) // fails: names must not be empty
        } else {
            call_msg(i, "send_message", &str_bsatn(&format!("in order {i}")))
        };
        ws.send(Message::Binary(msg.into())).unwrap();
    }
    for i in 0..CALLS {
        let result = next(&mut ws);
        assert_eq!(result[0], 6, "ReducerResult");
        let request_id = u32::from_le_bytes(result[1..5].try_into().unwrap());
        assert_eq!(request_id, i, "answers out of call order");
        let status = result[13];
        assert_eq!(status == 2, i % 3 == 2, "call {i}: status {status}");
    }
}

/// The `message` rows in a server message whose text starts with `prefix`: (text, `sent`
/// timestamp), in the order they appear. A row is `sender: Identity, sent: Timestamp,
/// text: String`, so the timestamp sits just before the text's length prefix.
fn sent_messages(msg: &[u8], prefix: &[u8]) -> Vec<(String, i64)> {
    let mut rows = Vec::new();
    let mut at = 12;
    while let Some(p) = msg[at..].windows(prefix.len()).position(|w| w == prefix).map(|p| p + at) {
        let len = u32::from_le_bytes(msg[p - 4..p].try_into().unwrap()) as usize;
        let sent = i64::from_le_bytes(msg[p - 12..p - 4].try_into().unwrap());
        rows.push((String::from_utf8(msg[p..p + len].to_vec()).unwrap(), sent));
        at = p + len;
    }
    rows
}

// Proves a subscribed caller sees every commit in commit order, its own (inside its
// `ReducerResult`) and other clients' (in `TransactionUpdate`s) alike: its answer for one
// commit, which waits for that commit's fsync, never comes after another client's later
// commit. Reducer timestamps follow commit order (one database thread), so the `sent` times
// of the rows a client receives must never go backwards. In both durability modes (without
// fsyncs, answers are still handed to the notifier thread under load).
#[test]
fn a_subscribed_caller_sees_its_own_and_others_commits_in_commit_order() {
    for durability in [lightcone_wal::Durability::Fsync, lightcone_wal::Durability::None] {
        commits_arrive_in_commit_order(durability);
    }
}

fn commits_arrive_in_commit_order(durability: lightcone_wal::Durability) {
    let s = start_with(durability);
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "chat", &owner, "quickstart_chat").status, 200);
    const CALLS: u32 = 300;
    let clients: Vec<Ws> = (0..2)
        .map(|_| {
            let mut ws = connect_ready(&s, "chat", None, "v2.bsatn.spacetimedb");
            ws.send(Message::Binary(subscribe_msg(1, 1, &["SELECT * FROM message"]).into())).unwrap();
            assert_eq!(next(&mut ws)[0], 1, "SubscribeApplied");
            ws
        })
        .collect();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let runs: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut ws)| {
            let barrier = std::sync::Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..CALLS {
                    let text = format!("order-{c}-{i:04}");
                    ws.send(Message::Binary(call_msg(i, "send_message", &str_bsatn(&text)).into())).unwrap();
                }
                let mut seen: Vec<(String, i64)> = Vec::new();
                let mut answers = 0;
                while seen.len() < 2 * CALLS as usize || answers < CALLS {
                    let msg = next(&mut ws);
                    match msg[0] {
                        6 => {
                            answers += 1;
                            assert_eq!(msg[13], 0, "Ok with the caller's own update");
                        }
                        4 => {}
                        other => panic!("unexpected message tag {other}"),
                    }
                    seen.extend(sent_messages(&msg, b"order-"));
                }
                assert_eq!(seen.len(), 2 * CALLS as usize, "each commit seen once");
                for pair in seen.windows(2) {
                    assert!(
                        pair[0].1 <= pair[1].1,
                        "client {c} saw {} (sent {}) after {} (sent {}): a later commit came first",
                        pair[1].0,
                        pair[1].1,
                        pair[0].0,
                        pair[0].1
                    );
                }
            })
        })
        .collect();
    for run in runs {
        run.join().expect("client saw every commit in order");
    }
}

fn call_procedure_msg(request_id: u32, procedure: &str, args: &[u8]) -> Vec<u8> {
    let mut v = call_msg(request_id, procedure, args);
    v[0] = 4; // CallProcedure has CallReducer's layout
    v
}

#[test]
fn procedures_answer_over_http_and_websocket_and_their_commits_reach_subscribers() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "ex", &owner, "abi_exerciser").status, 200);

    // HTTP: a name that is no reducer falls back to the procedure; 200 + its JSON value.
    let r = call(&http, &s, "ex", "proc_add", Some(&owner), "[40, 2]");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "42");
    assert!(r.headers.iter().any(|(k, _)| k == "spacetime-execution-duration-micros"));
    let r = call(&http, &s, "ex", "proc_tx_abort", Some(&owner), r#"["x"]"#);
    assert_eq!((r.status, r.body.as_str()), (200, "\"aborted on purpose\""));
    let r = call(&http, &s, "ex", "proc_panic", Some(&owner), "[]");
    assert_eq!(r.status, 530);
    assert!(r.body.contains("deliberate procedure panic"), "{}", r.body);
    let r = call(&http, &s, "ex", "proc_add", Some(&owner), r#"["forty", 2]"#);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("invalid arguments"), "{}", r.body);

    // WebSocket: a subscriber sees the procedure's commit; the caller gets ProcedureResult.
    let mut watcher = connect_ready(&s, "ex", None, "v2.bsatn.spacetimedb");
    watcher.send(Message::Binary(subscribe_msg(1, 1, &["SELECT * FROM event_log"]).into())).unwrap();
    assert_eq!(next(&mut watcher)[0], 1, "SubscribeApplied");
    let mut caller = connect_ready(&s, "ex", Some(&owner), "v2.bsatn.spacetimedb");
    caller.send(Message::Binary(call_procedure_msg(9, "proc_with_tx", &str_bsatn("via ws")).into())).unwrap();
    let result = next(&mut caller);
    assert_eq!(result[0], 7, "ProcedureResult");
    assert_eq!(result[1], 0, "Returned");
    // Returned(bytes: u32 length + a u64 event id), timestamp, duration, request id.
    assert_eq!(&result[2..6], &8u32.to_le_bytes());
    let event_id = u64::from_le_bytes(result[6..14].try_into().unwrap());
    assert_eq!(&result[30..34], &9u32.to_le_bytes(), "request id last");
    assert_eq!(result.len(), 34);
    let update = next(&mut watcher);
    assert_eq!(update[0], 4, "TransactionUpdate to the subscriber");
    assert!(contains(&update, b"via ws") && contains(&update, &event_id.to_le_bytes()));

    // Failures come back as InternalError with the message; the session stays usable.
    caller.send(Message::Binary(call_procedure_msg(10, "proc_panic", &[]).into())).unwrap();
    let result = next(&mut caller);
    assert_eq!(&result[..2], &[7, 1], "ProcedureResult InternalError");
    assert!(contains(&result, b"deliberate procedure panic"));
    caller.send(Message::Binary(call_procedure_msg(11, "no_such_proc", &[]).into())).unwrap();
    let result = next(&mut caller);
    assert_eq!(&result[..2], &[7, 1]);
    assert!(contains(&result, b"no such procedure `no_such_proc`"));
    caller
        .send(Message::Binary(call_procedure_msg(12, "proc_add", &[1, 0, 0, 0, 2, 0, 0, 0]).into()))
        .unwrap();
    let result = next(&mut caller);
    assert_eq!(&result[..6], &[7, 0, 4, 0, 0, 0]);
    assert_eq!(&result[6..10], &3u32.to_le_bytes());
}

// Proves a subscribed caller of a procedure receives the updates of the procedure's own
// commit before its `ProcedureResult` (the procedure thread answers; the updates go out on the
// database's ordered path once durable), call after call.
#[test]
fn a_procedure_answers_after_the_updates_of_its_own_commits() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "pord", &owner, "abi_exerciser").status, 200);
    let mut caller = connect_ready(&s, "pord", Some(&owner), "v2.bsatn.spacetimedb");
    caller.send(Message::Binary(subscribe_msg(1, 1, &["SELECT * FROM event_log"]).into())).unwrap();
    assert_eq!(next(&mut caller)[0], 1, "SubscribeApplied");
    for i in 0..40u32 {
        let text = format!("ordered-proc-{i:03}");
        caller
            .send(Message::Binary(call_procedure_msg(i, "proc_with_tx", &str_bsatn(&text)).into()))
            .unwrap();
        let mut seen_update = false;
        loop {
            let msg = next(&mut caller);
            match msg[0] {
                4 => seen_update |= contains(&msg, text.as_bytes()),
                7 => {
                    assert!(seen_update, "call {i}: ProcedureResult before the update of its own commit");
                    break;
                }
                other => panic!("unexpected message tag {other}"),
            }
        }
    }
}

/// An identity's little-endian bytes (the BSATN form) from its hex (big-endian) form.
fn identity_le(hex_be: &str) -> Vec<u8> {
    let mut b = hex::decode(hex_be).unwrap();
    b.reverse();
    b
}

// Proves views are served like tables: a sender-bound view gives each subscriber (and each
// SQL or one-off reader, the owner included) only its own row; an anonymous view's rows
// change for subscribers in the commit that changes its inputs; SQL cannot write a view.
#[test]
fn views_are_served_per_reader_over_websocket_and_sql() {
    let s = start();
    let http = Http::new();
    let (owner_id, owner) = new_identity(&http, &s);
    let (alice_id, alice) = new_identity(&http, &s);
    let (bob_id, bob) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "vw", &owner, "abi_exerciser").status, 200);
    let (alice_le, bob_le) = (identity_le(&alice_id), identity_le(&bob_id));

    let mut a = connect_ready(&s, "vw", Some(&alice), "v2.bsatn.spacetimedb");
    let q = ["SELECT * FROM my_identity", "SELECT * FROM high_score_items"];
    a.send(Message::Binary(subscribe_msg(1, 1, &q).into())).unwrap();
    let applied = next(&mut a);
    assert_eq!(applied[0], 1, "SubscribeApplied: {}", String::from_utf8_lossy(&applied));
    assert!(contains(&applied, &alice_le), "alice's own row");
    let mut b = connect_ready(&s, "vw", Some(&bob), "v2.bsatn.spacetimedb");
    b.send(Message::Binary(subscribe_msg(1, 1, &["SELECT * FROM my_identity"]).into())).unwrap();
    let applied = next(&mut b);
    assert_eq!(applied[0], 1);
    assert!(contains(&applied, &bob_le) && !contains(&applied, &alice_le), "bob sees only his row");

    // An anonymous view's change reaches alice's subscription. It is her first message since
    // bob's subscription materialized bob's row: that commit sent her nothing.
    assert_eq!(call(&http, &s, "vw", "seed_items", Some(&owner), "[8]").status, 200);
    let update = next(&mut a);
    assert_eq!(update[0], 4, "TransactionUpdate");
    assert!(contains(&update, b"high_score_items") && contains(&update, b"item-7"));
    assert!(!contains(&update, &bob_le), "bob's view row is not alice's business");

    // SQL: each reader, the owner included, gets its own row of the sender-bound view.
    for (token, id) in [(&alice, &alice_id), (&bob, &bob_id), (&owner, &owner_id)] {
        let r = sql(&http, &s, "vw", token, "SELECT * FROM my_identity");
        assert_eq!(r.status, 200, "{}", r.body);
        let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(j[0]["rows"].as_array().unwrap().len(), 1, "{}", r.body);
        assert!(r.body.contains(id.as_str()), "{}", r.body);
        assert!(!r.body.contains("__sender__"), "the hidden column stays hidden: {}", r.body);
    }
    let r = sql(&http, &s, "vw", &alice, "SELECT * FROM high_score_items");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()[0]["rows"].as_array().unwrap().len(),
        3
    );
    let r = sql(&http, &s, "vw", &owner, "DELETE FROM high_score_items");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("is a view"), "{}", r.body);
    // Several statements cannot be filtered per reader: refused, not answered with all rows.
    let r = sql(&http, &s, "vw", &owner, "SELECT * FROM my_identity; SELECT * FROM item");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("sender-bound view"), "{}", r.body);

    // A one-off query over WebSocket: the asker's row only.
    let mut m = vec![2u8];
    m.extend_from_slice(&9u32.to_le_bytes());
    m.extend_from_slice(&str_bsatn("SELECT * FROM my_identity"));
    b.send(Message::Binary(m.into())).unwrap();
    let r = next(&mut b);
    assert_eq!((r[0], r[5]), (5, 0), "OneOffQueryResult Ok: {}", String::from_utf8_lossy(&r));
    assert!(contains(&r, &bob_le) && !contains(&r, &alice_le));
}

// Proves a module update that adds row-level security cannot be bypassed through the
// subscription hub made for the old version: its clients are asked to reconnect, and new
// subscriptions see only what the new filter allows.
#[test]
fn a_module_update_retires_the_old_subscription_filters() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    let (alice_id, alice) = new_identity(&http, &s);
    let (bob_id, bob) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "upd", &owner, "abi_exerciser").status, 200);
    for t in [&alice, &bob] {
        assert_eq!(call(&http, &s, "upd", "whoami", Some(t), "[]").status, 200);
    }
    let (alice_le, bob_le) = (identity_le(&alice_id), identity_le(&bob_id));
    let mut a = connect_ready(&s, "upd", Some(&alice), "v2.bsatn.spacetimedb");
    a.send(Message::Binary(subscribe_msg(1, 1, &["SELECT * FROM caller_info"]).into())).unwrap();
    let applied = next(&mut a);
    assert!(contains(&applied, &alice_le) && contains(&applied, &bob_le), "no RLS yet: both rows");

    // The update adds `SELECT * FROM caller_info WHERE sender = :sender` for other identities.
    let r = publish_breaking(&http, &s, "upd", &owner, "abi_exerciser_unstable");
    assert_eq!(r.status, 200, "{}", r.body);
    // The next commit closes Alice's session of the old hub with a reason to reconnect (no
    // new subscription needed to notice the update).
    assert_eq!(call(&http, &s, "upd", "whoami", Some(&alice), "[]").status, 200);
    let closed = close_reason(&mut a);
    assert!(closed.contains("module was updated"), "{closed}");
    let mut b = connect_ready(&s, "upd", Some(&bob), "v2.bsatn.spacetimedb");
    b.send(Message::Binary(subscribe_msg(1, 1, &["SELECT * FROM caller_info"]).into())).unwrap();
    let applied = next(&mut b);
    assert_eq!(applied[0], 1, "SubscribeApplied: {}", String::from_utf8_lossy(&applied));
    assert!(contains(&applied, &bob_le) && !contains(&applied, &alice_le), "the new filter applies");
}

// Proves an update that would disconnect every client is refused unless the publisher
// acknowledges it with the token `pre_publish` gave for that update (as upstream's
// `MigrationPolicy`), leaving the running version and its clients untouched; and that
// `pre_publish` plans without changing anything: 404 for a new database, 403 for others, the
// reason for an update that cannot keep the data.
#[test]
fn a_client_breaking_update_needs_the_pre_publish_token() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    let (_, other) = new_identity(&http, &s);
    assert_eq!(pre_publish(&http, &s, "brk", &owner, "abi_exerciser").status, 404, "not created yet");
    let url = format!("{}/v1/database/brk/pre_publish", s.url);
    let anonymous = http.req("POST", &url, None, Some("application/wasm"), fixture("abi_exerciser"));
    assert_eq!(anonymous.status, 404, "a new database, whoever asks: {}", anonymous.body);
    assert_eq!(publish(&http, &s, "brk", &owner, "abi_exerciser").status, 200);
    let mut a = connect_ready(&s, "brk", Some(&owner), "v2.bsatn.spacetimedb");
    a.send(Message::Binary(subscribe_msg(1, 1, &["SELECT * FROM caller_info"]).into())).unwrap();
    assert_eq!(next(&mut a)[0], 1, "SubscribeApplied");

    assert_eq!(pre_publish(&http, &s, "brk", &other, "abi_exerciser_unstable").status, 403);
    let manual = pre_publish(&http, &s, "brk", &owner, "quickstart_chat");
    let manual: serde_json::Value = serde_json::from_str(&manual.body).unwrap();
    assert!(manual["ManualMigrate"]["reason"].as_str().unwrap().contains("removed"), "{manual}");

    let refused = publish(&http, &s, "brk", &owner, "abi_exerciser_unstable");
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("disconnect every client"), "{}", refused.body);
    let url = format!("{}/v1/database/brk?policy=BreakClients&token=0x1234", s.url);
    let forged =
        http.req("PUT", &url, Some(&owner), Some("application/wasm"), fixture("abi_exerciser_unstable"));
    assert_eq!(forged.status, 400, "{}", forged.body);
    assert!(forged.body.contains("token"), "{}", forged.body);
    // Still the old version, its client still subscribed: a commit reaches it.
    assert_eq!(call(&http, &s, "brk", "whoami", Some(&owner), "[]").status, 200);
    assert_eq!(next(&mut a)[0], 4, "TransactionUpdate, not a close");

    let r = publish_breaking(&http, &s, "brk", &owner, "abi_exerciser_unstable");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(call(&http, &s, "brk", "whoami", Some(&owner), "[]").status, 200);
    assert!(close_reason(&mut a).contains("module was updated"));
}

// Proves an update that keeps the schema and the filters keeps clients connected, as
// upstream's: the session's subscription goes on delivering, and its calls reach the new
// version of the module.
#[test]
fn a_module_update_that_keeps_the_schema_keeps_clients_connected() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "keep", &owner, "quickstart_chat").status, 200);
    let mut a = connect_ready(&s, "keep", None, "v2.bsatn.spacetimedb");
    a.send(Message::Binary(subscribe_msg(1, 1, &["SELECT * FROM message"]).into())).unwrap();
    assert_eq!(next(&mut a)[0], 1, "SubscribeApplied");

    let r = publish(&http, &s, "keep", &owner, "quickstart_chat");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(call(&http, &s, "keep", "send_message", Some(&owner), r#"["after the update"]"#).status, 200);
    let update = next(&mut a);
    assert_eq!(update[0], 4, "TransactionUpdate, not a close: {}", String::from_utf8_lossy(&update));
    assert!(contains(&update, b"after the update"));

    a.send(Message::Binary(call_msg(2, "send_message", &str_bsatn("a's call, new version")).into())).unwrap();
    let result = next(&mut a);
    assert_eq!(result[0], 6, "ReducerResult");
    assert_eq!(result[13], 0, "Ok with the caller's update: {}", String::from_utf8_lossy(&result));
    assert!(contains(&result, b"a's call, new version"));
}

// Proves calls a client makes while a module update swaps versions are held for the new
// version and run there, in order, instead of failing with "the database is shut down".
#[test]
fn calls_during_a_module_update_wait_for_the_new_version() {
    let s = start();
    let http = Http::new();
    let (owner_id, owner) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "hold", &owner, "quickstart_chat").status, 200);
    let mut a = connect_ready(&s, "hold", None, "v2.bsatn.spacetimedb");
    let done = std::sync::atomic::AtomicBool::new(false);
    let mut sent = 0u32;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for _ in 0..3 {
                let r = publish(&Http::new(), &s, "hold", &owner, "quickstart_chat");
                assert_eq!(r.status, 200, "{}", r.body);
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        });
        // And over HTTP, one call at a time.
        scope.spawn(|| {
            let http = Http::new();
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                n += 1;
                let r = call(&http, &s, "hold", "send_message", Some(&owner), &format!(r#"["http {n}"]"#));
                assert_eq!(r.status, 200, "HTTP call {n}: {}", r.body);
            }
        });
        // Pipelined rounds of calls until every update is done, and one round after.
        let mut last_round = false;
        while !last_round {
            last_round = done.load(std::sync::atomic::Ordering::Acquire);
            let first = sent;
            for _ in 0..100 {
                sent += 1;
                let text = str_bsatn(&format!("held {sent:05}"));
                a.send(Message::Binary(call_msg(sent, "send_message", &text).into())).unwrap();
            }
            for expected in first + 1..=sent {
                let result = next(&mut a);
                assert_eq!(result[0], 6, "ReducerResult: {}", String::from_utf8_lossy(&result));
                let request_id = u32::from_le_bytes(result[1..5].try_into().unwrap());
                assert_eq!(request_id, expected, "answers in call order");
                assert!(
                    result[13] <= 1,
                    "call {expected} failed (Ok=0, OkEmpty=1): {:?}",
                    String::from_utf8_lossy(&result)
                );
            }
        }
    });
    let r = sql(&http, &s, "hold", &owner, "SELECT * FROM message");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body.matches("held ").count(), sent as usize, "every held call ran once");
    // HTTP calls that straddled an update still ran `client_disconnected` after connecting:
    // the owner is known, and not left online.
    let users = sql(&http, &s, "hold", &owner, "SELECT * FROM user");
    assert!(users.body.contains(owner_id.trim_start_matches("0x")), "{}", users.body);
    let online = sql(&http, &s, "hold", &owner, "SELECT * FROM user WHERE online = true");
    assert_eq!(online.status, 200, "{}", online.body);
    assert!(!online.body.contains(owner_id.trim_start_matches("0x")), "left online: {}", online.body);
}

// Proves deleting a database closes its WebSocket clients with a reason, rather than leave
// them waiting for updates that will never come.
#[test]
fn deleting_a_database_closes_its_clients() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "gone", &owner, "quickstart_chat").status, 200);
    let mut a = connect_ready(&s, "gone", None, "v2.bsatn.spacetimedb");
    a.send(Message::Binary(subscribe_msg(1, 1, &["SELECT * FROM message"]).into())).unwrap();
    assert_eq!(next(&mut a)[0], 1, "SubscribeApplied");
    let r = http.req("DELETE", &format!("{}/v1/database/gone", s.url), Some(&owner), None, vec![]);
    assert_eq!(r.status, 200, "{}", r.body);
    let closed = close_reason(&mut a);
    assert!(closed.contains("stopped or deleted"), "{closed}");
}

// Proves a module update that keeps the schema keeps clients that read sender-bound views
// connected, as upstream re-evaluates subscribed views (it used to disconnect every client):
// the publish needs no acknowledgement, the session goes on receiving updates, and its view
// rows are still its own after the update — dropped on unsubscribe, materialized again on a
// new subscription.
#[test]
fn a_module_update_keeps_readers_of_sender_bound_views_connected() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    let (alice_id, alice) = new_identity(&http, &s);
    let alice_le = identity_le(&alice_id);
    assert_eq!(publish(&http, &s, "vk", &owner, "abi_exerciser").status, 200);
    let mut a = connect_ready(&s, "vk", Some(&alice), "v2.bsatn.spacetimedb");
    let q = ["SELECT * FROM my_identity", "SELECT * FROM high_score_items"];
    a.send(Message::Binary(subscribe_msg(1, 1, &q).into())).unwrap();
    let applied = next(&mut a);
    assert_eq!(applied[0], 1, "SubscribeApplied: {}", String::from_utf8_lossy(&applied));
    assert!(contains(&applied, &alice_le));

    let plan = pre_publish(&http, &s, "vk", &owner, "abi_exerciser");
    let plan: serde_json::Value = serde_json::from_str(&plan.body).unwrap();
    assert_eq!(plan["AutoMigrate"]["break_clients"], false, "{plan}");
    let r = publish(&http, &s, "vk", &owner, "abi_exerciser");
    assert_eq!(r.status, 200, "no acknowledgement needed: {}", r.body);

    assert_eq!(call(&http, &s, "vk", "seed_items", Some(&owner), "[8]").status, 200);
    let update = next(&mut a);
    assert_eq!(update[0], 4, "TransactionUpdate, not a close: {}", String::from_utf8_lossy(&update));
    assert!(contains(&update, b"high_score_items") && contains(&update, b"item-7"));

    // Unsubscribe with the dropped rows: alice's view row is still there, and hers.
    let mut m = vec![1u8];
    m.extend_from_slice(&2u32.to_le_bytes());
    m.extend_from_slice(&1u32.to_le_bytes());
    m.push(1);
    a.send(Message::Binary(m.into())).unwrap();
    let dropped = next(&mut a);
    assert_eq!(dropped[0], 2, "UnsubscribeApplied: {}", String::from_utf8_lossy(&dropped));
    assert!(contains(&dropped, &alice_le), "her row, kept across the update");
    a.send(Message::Binary(subscribe_msg(3, 2, &["SELECT * FROM my_identity"]).into())).unwrap();
    let applied = next(&mut a);
    assert_eq!(applied[0], 1, "SubscribeApplied: {}", String::from_utf8_lossy(&applied));
    assert!(contains(&applied, &alice_le));
}

/// Procedure calls sent before the update in `queued_procedure_calls_*`: more sleepers than
/// procedure threads, then request 100 (`procedure` with `args`), so the last ones wait in the
/// queue. The update's planning takes ~1 s here before it stops the running version; the first
/// sleepers outlast that, and it waits for them.
const QUEUED_SLEEPERS: u32 = 5;
const QUEUED_SLEEP: Duration = Duration::from_secs(6);

/// Sends [`QUEUED_SLEEPERS`] sleepers and then `procedure(args)` as request 100 on `c`, runs
/// `update` (a publish, which must succeed), and checks that it did not wait for a second
/// round of sleepers on the old version: it stopped after the first, handing the rest over.
fn update_behind_queued_calls(c: &mut Ws, procedure: &str, args: &[u8], update: impl FnOnce() -> Reply) {
    let sent = std::time::Instant::now();
    for id in 1..=QUEUED_SLEEPERS {
        let micros = (QUEUED_SLEEP.as_micros() as i64).to_le_bytes();
        c.send(Message::Binary(call_procedure_msg(id, "proc_sleep", &micros).into())).unwrap();
    }
    c.send(Message::Binary(call_procedure_msg(100, procedure, args).into())).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = update();
    assert_eq!(r.status, 200, "{}", r.body);
    let updated = sent.elapsed();
    assert!(
        updated < QUEUED_SLEEP * 2 - Duration::from_millis(1500),
        "the update took {updated:?}: nothing handed over?"
    );
}

// Proves procedure calls a client queued but the module had not started when an update began
// run on the new version instead of failing: with every procedure thread asleep, a queued
// call waits through the update and is answered by the next version.
#[test]
fn queued_procedure_calls_run_on_the_next_version_after_an_update() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "pq", &owner, "abi_exerciser").status, 200);
    let mut c = connect_ready(&s, "pq", Some(&owner), "v2.bsatn.spacetimedb");
    let add: Vec<u8> = [2u32.to_le_bytes(), 3u32.to_le_bytes()].concat();
    update_behind_queued_calls(&mut c, "proc_add", &add, || {
        publish(&http, &s, "pq", &owner, "abi_exerciser")
    });

    let mut answered = std::collections::BTreeMap::new();
    for _ in 0..=QUEUED_SLEEPERS {
        let result = next(&mut c);
        assert_eq!(result[0], 7, "ProcedureResult: {}", String::from_utf8_lossy(&result));
        let id = u32::from_le_bytes(result[result.len() - 4..].try_into().unwrap());
        assert_eq!(result[1], 0, "call {id} returned, not failed: {}", String::from_utf8_lossy(&result));
        answered.insert(id, result);
    }
    assert_eq!(answered.len() as u32, QUEUED_SLEEPERS + 1);
    assert_eq!(&answered[&100][2..10], &[4, 0, 0, 0, 5, 0, 0, 0], "proc_add(2, 3) = 5");
}

// Proves procedure calls queued but not started when a client-breaking update stops the
// running version do not run on the new one (their clients are disconnected by it): the
// update hands them back and refuses them, so a queued journaling call leaves no row.
#[test]
fn queued_procedure_calls_do_not_run_after_a_client_breaking_update() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "pb", &owner, "abi_exerciser").status, 200);
    let mut c = connect_ready(&s, "pb", Some(&owner), "v2.bsatn.spacetimedb");
    let journal = str_bsatn("queued before the update");
    update_behind_queued_calls(&mut c, "proc_with_tx", &journal, || {
        publish_breaking(&http, &s, "pb", &owner, "abi_exerciser_unstable")
    });

    // Had the new version run it, the row would be there by now (the call takes milliseconds).
    std::thread::sleep(Duration::from_millis(500));
    let rows = sql(&http, &s, "pb", &owner, "SELECT * FROM event_log");
    assert_eq!(rows.status, 200, "{}", rows.body);
    assert!(!rows.body.contains("queued before the update"), "ran after the update: {}", rows.body);
}

// Bad input on one WebSocket closes that connection with a code and reason saying why — a
// message over the size limit (1009; only its header is sent, as the server refuses it from
// the header), a text frame (1003) — or refuses the upgrade (a bad token, an unknown
// database); a subscribed client on the same database is unaffected throughout.
#[test]
fn bad_websocket_input_closes_only_that_connection() {
    let s = start();
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "chat", &owner, "quickstart_chat").status, 200);
    let mut reader = connect_ready(&s, "chat", None, "v2.bsatn.spacetimedb");
    reader.send(Message::Binary(subscribe_msg(1, 1, &["SELECT * FROM message"]).into())).unwrap();
    assert_eq!(next(&mut reader)[0], 1, "SubscribeApplied");

    let mut big = connect_ready(&s, "chat", None, "v2.bsatn.spacetimedb");
    let mut header = vec![0x82u8, 0x80 | 127];
    header.extend_from_slice(&(33u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]); // the mask every client frame carries
    match big.get_mut() {
        tungstenite::stream::MaybeTlsStream::Plain(t) => std::io::Write::write_all(t, &header).unwrap(),
        _ => unreachable!("plain TCP"),
    }
    let f = expect_close(&mut big, "no close frame for an oversized message");
    assert_eq!(f.code, CloseCode::Size);
    assert!(f.reason.contains("too big"), "{}", f.reason);

    // A 20 MiB message in one frame is within the limit (tungstenite's default frame limit is
    // 16 MiB): it is read whole and refused as malformed, not as too big.
    let mut large = connect_ready(&s, "chat", None, "v2.bsatn.spacetimedb");
    let mut garbage = vec![0u8; 20 << 20];
    garbage[0] = 42;
    large.send(Message::Binary(garbage.into())).unwrap();
    let closed = expect_close(&mut large, "no close frame for a malformed 20 MiB message");
    assert_eq!(closed.code, CloseCode::Invalid);

    let mut text = connect_ready(&s, "chat", None, "v2.bsatn.spacetimedb");
    text.send(Message::Text("{}".into())).unwrap();
    let closed = expect_close(&mut text, "no close frame for a text frame");
    assert_eq!(closed.code, CloseCode::Unsupported);

    match connect(&s, "chat", Some("not.a.token"), "v2.bsatn.spacetimedb") {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("a bad token must be refused with 401: {:?}", other.map(|_| ())),
    }
    match connect(&s, "nope", None, "v2.bsatn.spacetimedb") {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("an unknown database must be refused with 404: {:?}", other.map(|_| ())),
    }

    // The subscribed client still gets every update.
    assert_eq!(call(&http, &s, "chat", "send_message", Some(&owner), r#"["still here"]"#).status, 200);
    let update = next(&mut reader);
    assert_eq!(update[0], 4, "TransactionUpdate");
    assert!(contains(&update, b"still here"));
}

// A graceful shutdown ends a followed log (a reply that never ends by itself) instead of
// waiting for it, closes WebSocket clients with a reason, and flushes the log: rows
// committed with durability `none` are there after a restart on the same directory.
#[test]
fn a_graceful_shutdown_ends_followed_logs_and_keeps_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve_dir(dir.path(), lightcone_wal::Durability::None);
    let http = Http::new();
    let (_, owner) = new_identity(&http, &s);
    assert_eq!(publish(&http, &s, "chat", &owner, "quickstart_chat").status, 200);
    for i in 0..20 {
        let r = call(&http, &s, "chat", "send_message", Some(&owner), &format!(r#"["kept {i}"]"#));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Follow the log over a raw socket: its first chunk (the last 100 lines) proves the stream
    // is open before the shutdown starts.
    let mut follow = TcpStream::connect(s.url.trim_start_matches("http://")).unwrap();
    follow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let request = format!(
        "GET /v1/database/chat/logs?follow=true&num_lines=100 HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {owner}\r\nConnection: close\r\n\r\n"
    );
    std::io::Write::write_all(&mut follow, request.as_bytes()).unwrap();
    let mut seen = Vec::new();
    while !contains(&seen, b"kept 19") {
        let mut buf = [0u8; 65536];
        let n = std::io::Read::read(&mut follow, &mut buf).expect("the followed log");
        assert!(n > 0, "the followed log ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));
    let mut ws = connect_ready(&s, "chat", None, "v2.bsatn.spacetimedb");

    let stopping = std::time::Instant::now();
    s.shut_down();
    let took = stopping.elapsed();
    assert!(
        took < lightcone_host::server::SHUTDOWN_GRACE - Duration::from_secs(1),
        "the shutdown waited {took:?} (for the followed log?)"
    );
    std::io::Read::read_to_end(&mut follow, &mut seen).expect("the followed log ends");
    assert!(close_reason(&mut ws).contains("stopped"));

    let s = serve_dir(dir.path(), lightcone_wal::Durability::None);
    let r = sql(&http, &s, "chat", &owner, "SELECT COUNT(*) AS n FROM message");
    assert_eq!(r.status, 200, "{}", r.body);
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(j[0]["rows"], serde_json::json!([[20]]));
}
