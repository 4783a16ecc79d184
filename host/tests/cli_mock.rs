//! The `lightcone` CLI's client commands against a tiny mock HTTP server: what each command
//! sends (paths, bodies, headers, the stored token) and how it prints the answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Handler = dyn Fn(&Req) -> (u16, String) + Send + Sync;

/// A one-request-per-connection HTTP/1.1 server recording what it receives.
struct Mock {
    port: u16,
    requests: Arc<Mutex<Vec<Req>>>,
}

impl Mock {
    fn start(handler: impl Fn(&Req) -> (u16, String) + Send + Sync + 'static) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let recorded = Arc::clone(&recorded);
                let handler = Arc::clone(&handler);
                std::thread::spawn(move || serve(stream, &recorded, &*handler));
            }
        });
        Mock { port, requests }
    }

    fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }

    fn find(&self, method: &str, path_prefix: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.starts_with(path_prefix))
            .collect()
    }
}

fn serve(stream: TcpStream, recorded: &Mutex<Vec<Req>>, handler: &Handler) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let req = Req { method, path, headers, body };
    let (status, text) = handler(&req);
    recorded.lock().unwrap().push(req);
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJoZXhfaWRlbnRpdHkiOiJjMjAwYWIifQ.sig";

/// Answers `POST /v1/identity`, 404 for schemas, and `rest` for everything else.
fn with_identity(rest: impl Fn(&Req) -> (u16, String) + Send + Sync + 'static) -> Mock {
    Mock::start(move |r| {
        if r.method == "POST" && r.path == "/v1/identity" {
            (200, format!(r#"{{"identity":"c200ab","token":"{TOKEN}"}}"#))
        } else if r.path.contains("/schema") {
            (404, "no such database".into())
        } else {
            rest(r)
        }
    })
}

fn lightcone(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lightcone"))
        .args(args)
        .env("LIGHTCONE_CLI_CONFIG", config.join("cli.json"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// Proves `call` sends one JSON array built from its words (both the word-per-argument form and
// the single-array form), as JSON, with the server-issued token it stored on first use.
#[test]
fn call_builds_the_argument_array_and_sends_the_stored_token() {
    let dir = tempfile::tempdir().unwrap();
    let mock = with_identity(|_| (200, String::new()));
    let s = mock.server();
    let (ok, _, err) = lightcone(dir.path(), &["call", "-s", &s, "chat", "send_message", "Hello, World!"]);
    assert!(ok, "{err}");
    let (ok, _, err) =
        lightcone(dir.path(), &["call", "-s", &s, "chat", "send_message", r#"["Hello, World!"]"#]);
    assert!(ok, "{err}");
    let (ok, _, err) = lightcone(dir.path(), &["call", "-s", &s, "chat", "add", "1", "two", "-3"]);
    assert!(ok, "{err}");
    let calls = mock.find("POST", "/v1/database/chat/call/");
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].path, "/v1/database/chat/call/send_message");
    assert_eq!(calls[0].body_text(), r#"["Hello, World!"]"#);
    assert_eq!(calls[1].body_text(), r#"["Hello, World!"]"#);
    assert_eq!(calls[2].body_text(), r#"[1,"two",-3]"#);
    for c in &calls {
        assert_eq!(c.header("content-type"), Some("application/json"));
        assert_eq!(c.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    }
    assert_eq!(mock.find("POST", "/v1/identity").len(), 1, "the token is obtained once and reused");
    let config = std::fs::read_to_string(dir.path().join("cli.json")).unwrap();
    assert!(config.contains(TOKEN), "{config}");

    let (ok, _, err) = lightcone(dir.path(), &["call", "--anonymous", "-s", &s, "chat", "send_message", "x"]);
    assert!(ok, "{err}");
    let last = mock.find("POST", "/v1/database/chat/call/").pop().unwrap();
    assert_eq!(last.header("authorization"), None);
}

// Proves a reducer's error text is printed and the exit status is non-zero.
#[test]
fn call_failure_prints_the_servers_text() {
    let dir = tempfile::tempdir().unwrap();
    let mock = with_identity(|_| (530, "Names must not be empty".into()));
    let (ok, out, err) =
        lightcone(dir.path(), &["call", "-s", &mock.server(), "chat", "set_name", r#"[""]"#]);
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("error: Names must not be empty"), "{err}");
}

// Proves `sql` posts the query text and prints a psql-style table; `--json` prints the answer.
#[test]
fn sql_prints_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let answer = r#"[{"schema":{"elements":[{"name":{"some":"sender"},"algebraic_type":{"Product":{"elements":[{"name":{"some":"__identity__"},"algebraic_type":{"U256":[]}}]}}},{"name":{"some":"sent"},"algebraic_type":{"Product":{"elements":[{"name":{"some":"__timestamp_micros_since_unix_epoch__"},"algebraic_type":{"I64":[]}}]}}},{"name":{"some":"text"},"algebraic_type":{"String":[]}}]},"rows":[[["0xc200000000000000000000000000000000000000000000000000000000000001"],[0],"Hello, World!"]],"total_duration_micros":3,"stats":{"rows_inserted":0,"rows_deleted":0,"rows_updated":0}}]"#;
    let mock = with_identity(move |_| (200, answer.to_owned()));
    let (ok, out, err) =
        lightcone(dir.path(), &["sql", "-s", &mock.server(), "chat", "SELECT * FROM message"]);
    assert!(ok, "{err}");
    let sent = mock.find("POST", "/v1/database/chat/sql");
    assert_eq!(sent[0].body_text(), "SELECT * FROM message");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(" sender ") && lines[0].contains("| sent ") && lines[0].contains("| text"),
        "{out}"
    );
    assert!(lines[1].starts_with("----") && lines[1].contains('+'), "{out}");
    assert!(lines[2].contains(&format!("0xc2{}1 ", "0".repeat(61))), "{out}");
    assert!(lines[2].contains("1970-01-01T00:00:00+00:00"), "{out}");
    assert!(lines[2].contains("\"Hello, World!\""), "{out}");

    let (ok, out, _) = lightcone(dir.path(), &["sql", "-s", &mock.server(), "chat", "SELECT 1", "--json"]);
    assert!(ok);
    assert_eq!(out.trim(), answer);
}

// Proves `logs` asks for the lines and prints them as text (or raw JSON with --format json).
#[test]
fn logs_print_text_lines() {
    let dir = tempfile::tempdir().unwrap();
    let line = r#"{"ts":1795394632821527,"level":"Info","target":"quickstart_chat","filename":"src/lib.rs","line_number":49,"message":"Hello, World!"}"#;
    let mock = with_identity(move |_| (200, format!("{line}\n")));
    let (ok, out, err) = lightcone(dir.path(), &["logs", "-s", &mock.server(), "chat", "-n", "5"]);
    assert!(ok, "{err}");
    assert_eq!(out, "2026-11-23T00:43:52.821527Z  INFO: src/lib.rs:49: Hello, World!\n");
    let sent = mock.find("GET", "/v1/database/chat/logs");
    assert!(
        sent[0].path.contains("num_lines=5") && sent[0].path.contains("follow=false"),
        "{}",
        sent[0].path
    );
    let (ok, out, _) = lightcone(dir.path(), &["logs", "-s", &mock.server(), "chat", "--format", "json"]);
    assert!(ok);
    assert_eq!(out.trim(), line);
}

// Proves `publish -b` uploads the wasm bytes with PUT (and `?clear=true` for -c) and prints
// the outcome.
#[test]
fn publish_uploads_the_wasm() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("m.wasm");
    std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
    let mock = with_identity(|r| {
        if r.path.ends_with("/pre_publish") {
            return (404, "no such database".into()); // a new database: no plan to check
        }
        let op = if r.path.contains("clear=true") { "updated" } else { "created" };
        (200, format!(r#"{{"Success":{{"domain":"chat","database_identity":"c200cd","op":"{op}"}}}}"#))
    });
    let w = wasm.to_str().unwrap();
    let (ok, out, err) = lightcone(dir.path(), &["publish", "-s", &mock.server(), "-b", w, "chat"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "Created new database with name: chat, identity: c200cd");
    let put = &mock.find("PUT", "/v1/database/chat")[0];
    assert_eq!(put.path, "/v1/database/chat");
    assert_eq!(put.header("content-type"), Some("application/wasm"));
    assert_eq!(put.body, b"\0asm\x01\0\0\0");

    let (ok, out, err) =
        lightcone(dir.path(), &["publish", "-s", &mock.server(), "-b", w, "chat", "-c", "-y"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "Updated database with name: chat, identity: c200cd");
    assert_eq!(mock.find("PUT", "/v1/database/chat")[1].path, "/v1/database/chat?clear=true");

    let not_wasm = dir.path().join("x.wasm");
    std::fs::write(&not_wasm, b"hello").unwrap();
    let (ok, _, err) =
        lightcone(dir.path(), &["publish", "-s", &mock.server(), "-b", not_wasm.to_str().unwrap(), "chat"]);
    assert!(!ok);
    assert!(err.contains("is not a wasm module"), "{err}");
}

// Proves `publish` over an existing database asks the server for the update's plan first:
// it prints the plan, refuses to break clients unless told to (`--break-clients` or `-y`),
// then passes the migration token back; an update that cannot keep the data is refused with
// the server's reason, and nothing is uploaded.
#[test]
fn publish_checks_an_update_before_uploading_it() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("m.wasm");
    std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
    let w = wasm.to_str().unwrap();
    let plan = r#"{"AutoMigrate":{"migrate_plan":"Planned update:\n- disconnect all clients (they must reconnect)\n","break_clients":true,"token":"0x1f00ab","major_version_upgrade":false}}"#;
    let mock = with_identity(move |r| {
        if r.path.ends_with("/pre_publish") {
            return (200, plan.to_string());
        }
        (200, r#"{"Success":{"domain":"chat","database_identity":"c200cd","op":"updated"}}"#.into())
    });
    let (ok, _, err) = lightcone(dir.path(), &["publish", "-s", &mock.server(), "-b", w, "chat"]);
    assert!(!ok, "breaking clients needs a yes");
    assert!(err.contains("disconnect all clients") && err.contains("BREAK existing clients"), "{err}");
    assert!(err.contains("--break-clients"), "{err}");
    assert!(mock.find("PUT", "/v1/database/chat").is_empty(), "nothing uploaded");
    let pre = &mock.find("POST", "/v1/database/chat/pre_publish")[0];
    assert_eq!(pre.body, b"\0asm\x01\0\0\0", "the plan is made for the program to publish");

    for flag in ["--break-clients", "-y"] {
        let (ok, out, err) = lightcone(dir.path(), &["publish", "-s", &mock.server(), "-b", w, "chat", flag]);
        assert!(ok, "{flag}: {err}");
        assert_eq!(out.trim(), "Updated database with name: chat, identity: c200cd");
    }
    for put in mock.find("PUT", "/v1/database/chat") {
        assert_eq!(put.path, "/v1/database/chat?policy=BreakClients&token=0x1f00ab");
    }

    let manual = with_identity(|r| {
        if r.path.ends_with("/pre_publish") {
            return (
                200,
                r#"{"ManualMigrate":{"reason":"table `message` was removed","major_version_upgrade":false}}"#
                    .into(),
            );
        }
        (500, "must not be reached".into())
    });
    let (ok, _, err) = lightcone(dir.path(), &["publish", "-s", &manual.server(), "-b", w, "chat", "-y"]);
    assert!(!ok);
    assert!(err.contains("table `message` was removed") && err.contains("--delete-data"), "{err}");
    assert!(manual.find("PUT", "/v1/database/chat").is_empty());
}

// Proves a server nobody listens on gives the `lightcone start` hint, and a bad -s is refused.
#[test]
fn unreachable_and_unknown_servers_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s = format!("127.0.0.1:{port}");
    let (ok, _, err) = lightcone(dir.path(), &["sql", "-s", &s, "chat", "SELECT 1"]);
    assert!(!ok);
    assert!(
        err.contains(&format!("error: cannot reach the Lightcone server at http://{s}"))
            && err.contains("`lightcone start`"),
        "{err}"
    );
    let (ok, _, err) = lightcone(dir.path(), &["sql", "-s", "nosuchnick", "chat", "SELECT 1"]);
    assert!(!ok);
    assert!(err.contains("unknown server `nosuchnick`"), "{err}");
}

// Proves `server add` makes a nickname usable with -s, and `logout` forgets the token.
#[test]
fn server_nicknames_and_logout() {
    let dir = tempfile::tempdir().unwrap();
    let mock = with_identity(|_| (200, "[]".into()));
    let url = format!("http://{}", mock.server());
    let (ok, _, err) = lightcone(dir.path(), &["server", "add", &url, "--name", "mock"]);
    assert!(ok, "{err}");
    let (ok, out, _) = lightcone(dir.path(), &["server", "list"]);
    assert!(ok && out.contains("mock") && out.contains(&url), "{out}");
    let (ok, out, err) = lightcone(dir.path(), &["sql", "-s", "mock", "chat", "INSERT INTO t VALUES (1)"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "OK");
    let (ok, out, _) = lightcone(dir.path(), &["identity", "-s", "mock"]);
    assert!(ok);
    assert_eq!(out.trim(), "c200ab");
    let (ok, _, _) = lightcone(dir.path(), &["logout"]);
    assert!(ok);
    let config = std::fs::read_to_string(dir.path().join("cli.json")).unwrap();
    assert!(!config.contains(TOKEN), "{config}");
}

/// SATS-JSON of a V10 module with one public table `message(id: u32, text: String)`.
fn message_schema_json() -> String {
    use spacetimedb_lib::db::raw_def::v10::{RawModuleDefV10, RawModuleDefV10Section, RawTableDefV10};
    use spacetimedb_lib::db::raw_def::v9::{TableAccess, TableType};
    use spacetimedb_sats::{AlgebraicType, AlgebraicTypeRef, ProductType, Typespace};
    let row = ProductType::from([("id", AlgebraicType::U32), ("text", AlgebraicType::String)]);
    let table = RawTableDefV10 {
        source_name: "message".into(),
        product_type_ref: AlgebraicTypeRef(0),
        primary_key: std::iter::empty::<u16>().collect(),
        indexes: vec![],
        constraints: vec![],
        sequences: vec![],
        table_type: TableType::User,
        table_access: TableAccess::Public,
        default_values: vec![],
        is_event: false,
    };
    let def = RawModuleDefV10 {
        sections: vec![
            RawModuleDefV10Section::Typespace(Typespace::new(vec![AlgebraicType::Product(row)])),
            RawModuleDefV10Section::Tables(vec![table]),
        ],
    };
    serde_json::to_string(&spacetimedb_sats::serde::SerdeWrapper(&def)).unwrap()
}

/// BSATN of a `message` row.
fn message_row(id: u32, text: &str) -> Vec<u8> {
    let mut b = id.to_le_bytes().to_vec();
    b.extend_from_slice(&(text.len() as u32).to_le_bytes());
    b.extend_from_slice(text.as_bytes());
    b
}

/// A `BsatnRowList` with offsets.
fn row_list(rows: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    let mut off = 0u64;
    for r in rows {
        out.extend_from_slice(&off.to_le_bytes());
        off += r.len() as u64;
    }
    let data = rows.concat();
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

fn string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u32).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

/// Serves the schema over HTTP and a scripted v2 BSATN subscription over WebSocket; returns the
/// port and the subscribe message the client sent.
fn subscription_server() -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    use tungstenite::handshake::server::{Request, Response};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    let schema = message_schema_json();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            // The request line may arrive in pieces: peek until it is whole.
            let mut peek = [0u8; 512];
            let mut n = 0;
            for _ in 0..1000 {
                n = stream.peek(&mut peek).unwrap_or(0);
                if n == 0 || n == peek.len() || peek[..n].windows(2).any(|w| w == b"\r\n") {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let head = String::from_utf8_lossy(&peek[..n]).into_owned();
            if !head.contains("/subscribe") {
                let schema = schema.clone();
                let recorded = Mutex::new(Vec::new());
                serve(stream, &recorded, &move |r: &Req| {
                    if r.path == "/v1/identity" {
                        (200, format!(r#"{{"identity":"c200ab","token":"{TOKEN}"}}"#))
                    } else if r.path.contains("/schema?version=10") {
                        (200, schema.clone())
                    } else {
                        (404, "not found".into())
                    }
                });
                continue;
            }
            let tx = tx.clone();
            std::thread::spawn(move || {
                #[allow(clippy::result_large_err)] // tungstenite's callback signature
                let callback = |req: &Request, mut resp: Response| {
                    let offered = req.headers().get("sec-websocket-protocol").cloned();
                    assert_eq!(offered.as_ref().and_then(|v| v.to_str().ok()), Some("v2.bsatn.spacetimedb"));
                    assert!(req.uri().query().unwrap_or("").contains("compression=None"));
                    resp.headers_mut().insert("sec-websocket-protocol", offered.unwrap());
                    Ok(resp)
                };
                let mut ws = tungstenite::accept_hdr(stream, callback).unwrap();
                let send = |ws: &mut tungstenite::WebSocket<TcpStream>, msg: Vec<u8>| {
                    let mut frame = vec![0u8]; // no compression
                    frame.extend(msg);
                    ws.send(tungstenite::Message::binary(frame)).unwrap();
                };
                // InitialConnection{identity, connection_id, token}
                let mut m = vec![0u8];
                m.extend([1u8; 32]);
                m.extend([2u8; 16]);
                m.extend(string(TOKEN));
                send(&mut ws, m);
                let sub = loop {
                    if let tungstenite::Message::Binary(b) = ws.read().unwrap() {
                        break b.to_vec();
                    }
                };
                let query_set = u32::from_le_bytes(sub[5..9].try_into().unwrap());
                tx.send(sub).unwrap();
                // SubscribeApplied{request_id, query_set_id, rows: [{table, rows}]}
                let mut m = vec![1u8];
                m.extend(1u32.to_le_bytes());
                m.extend(query_set.to_le_bytes());
                m.extend(1u32.to_le_bytes());
                m.extend(string("message"));
                m.extend(row_list(&[message_row(1, "Hello, World!")]));
                send(&mut ws, m);
                // Two TransactionUpdates: an insert, then an update (delete + insert).
                for (ins, del) in [
                    (message_row(2, "second"), None),
                    (message_row(2, "edited"), Some(message_row(2, "second"))),
                ] {
                    let mut m = vec![4u8];
                    m.extend(1u32.to_le_bytes());
                    m.extend(query_set.to_le_bytes());
                    m.extend(1u32.to_le_bytes());
                    m.extend(string("message"));
                    m.extend(1u32.to_le_bytes());
                    m.push(0); // PersistentTable{inserts, deletes}
                    m.extend(row_list(&[ins]));
                    m.extend(row_list(&del.into_iter().collect::<Vec<_>>()));
                    send(&mut ws, m);
                }
                // Keep the connection open until the client closes it.
                while ws.read().is_ok() {}
            });
        }
    });
    (port, rx)
}

// Proves `subscribe` speaks v2 BSATN: it sends `Subscribe` with the queries, prints the initial
// rows with --print-initial-update, then one JSON line per transaction, and stops after -n.
#[test]
fn subscribe_prints_updates_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (port, subscribed) = subscription_server();
    let s = format!("127.0.0.1:{port}");
    let args = [
        "subscribe",
        "-s",
        &s,
        "chat",
        "SELECT * FROM message",
        "--print-initial-update",
        "-n",
        "2",
        "-t",
        "20",
    ];
    let (ok, out, err) = lightcone(dir.path(), &args);
    assert!(ok, "{err}");
    let sub = subscribed.recv().unwrap();
    assert_eq!(sub[0], 0, "ClientMessage::Subscribe");
    assert!(sub.ends_with(b"SELECT * FROM message"));
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        lines,
        vec![
            serde_json::json!({"message": {"deletes": [], "inserts": [{"id": 1, "text": "Hello, World!"}]}}),
            serde_json::json!({"message": {"deletes": [], "inserts": [{"id": 2, "text": "second"}]}}),
            serde_json::json!({"message": {"deletes": [{"id": 2, "text": "second"}], "inserts": [{"id": 2, "text": "edited"}]}}),
        ],
        "{out}"
    );

    // Without --print-initial-update and with -n 1, only the first transaction is printed.
    let (port, _subscribed) = subscription_server();
    let s = format!("127.0.0.1:{port}");
    let (ok, out, err) =
        lightcone(dir.path(), &["subscribe", "-s", &s, "chat", "SELECT * FROM message", "-n", "1"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("\"second\""), "{out}");
}

// Proves `publish` without -b in a directory with no cargo project says what to do.
#[test]
fn publish_without_a_project_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (ok, _, err) = lightcone(dir.path(), &["publish", "-p", empty.to_str().unwrap(), "chat"]);
    assert!(!ok);
    assert!(err.contains("has no Cargo.toml") && err.contains("-b FILE.wasm"), "{err}");
}
