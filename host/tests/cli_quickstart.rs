//! The quickstart, end to end, with the real binary: `lightcone start` on a temporary data
//! directory and a free port, then `publish`, `call`, `logs`, `sql`, `subscribe`, `describe`, a
//! failing call, and a restart that keeps the data.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/fixtures/wasm")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "fixture {} is missing: run scripts/build-fixtures.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `lightcone start` child, killed on drop.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    fn start(data_dir: &Path, log_dir: &Path, port: u16) -> Server {
        let log =
            log_dir.join(format!("server-{}.log", Instant::now().elapsed().as_nanos() ^ u128::from(port)));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lightcone"))
            .args(["start", "--data-dir", data_dir.to_str().unwrap(), "--listen-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut server = Server { child, port, log };
        server.wait_ready();
        server
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `GET /v1/ping` until it answers 200.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("`lightcone start` exited ({status}) before it was ready:\n{}", self.output());
            }
            if ping(self.port) {
                return;
            }
            if Instant::now() > deadline {
                panic!("`lightcone start` did not answer GET /v1/ping within 60 s:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v1/ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

fn lightcone(config: &Path, args: &[&str]) -> (bool, String, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_lightcone"))
        .args(args)
        .env("LIGHTCONE_CLI_CONFIG", config.join("cli.json"))
        // `publish -p` builds the module with cargo: in the fixtures' target directory, with
        // the flags scripts/build-fixtures.sh uses, so it finds them built already.
        .env("CARGO_TARGET_DIR", root.join("target/fixtures"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `lightcone` with `-s server` appended.
fn lightcone_at(config: &Path, server: &str, args: &[&str]) -> (bool, String, String) {
    let mut full = args.to_vec();
    full.extend(["-s", server]);
    lightcone(config, &full)
}

// Proves the quickstart works through the CLI against the real server — the module built from
// its project directory by `publish --project-path`, as the quickstart does — and the data
// survives the server being killed and started again.
#[test]
fn quickstart_through_the_cli() {
    let project = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/quickstart-chat");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let server = Server::start(&data, tmp.path(), port);
    let s = server.url();
    let cfg = tmp.path();
    let run = |args: &[&str]| lightcone_at(cfg, &s, args);

    let (ok, out, err) = run(&[
        "publish",
        "--project-path",
        project.to_str().unwrap(),
        "--build-options=--locked",
        "quickstart-chat",
    ]);
    assert!(ok, "publish: {err}\nserver:\n{}", server.output());
    assert!(out.contains("Created new database with name: quickstart-chat, identity: c200"), "{out}");
    assert!(err.contains("Building the module"), "build progress: {err}");

    let (ok, _, err) = run(&["call", "quickstart-chat", "send_message", r#"["Hello, World!"]"#]);
    assert!(ok, "call: {err}");
    let (ok, _, err) = run(&["call", "quickstart-chat", "set_name", "Alice"]);
    assert!(ok, "call set_name: {err}");

    let (ok, out, err) = run(&["logs", "quickstart-chat"]);
    assert!(ok, "logs: {err}");
    assert!(out.contains("INFO: ") && out.contains("Hello, World!"), "{out}");

    let (ok, out, err) = run(&["sql", "quickstart-chat", "SELECT * FROM message"]);
    assert!(ok, "sql: {err}");
    assert!(out.lines().next().is_some_and(|h| h.contains("sender") && h.contains("text")), "{out}");
    assert!(out.contains("\"Hello, World!\"") && out.contains("0xc200"), "{out}");

    let (ok, out, err) = run(&["call", "quickstart-chat", "set_name", r#"[""]"#]);
    assert!(!ok, "an empty name must fail: {out}");
    assert!(err.contains("Names must not be empty"), "{err}");

    let (ok, out, err) = run(&["describe", "quickstart-chat"]);
    assert!(ok, "describe: {err}");
    assert!(out.contains("message") && out.contains("send_message(text: String)"), "{out}");

    drop(server);
    let server = Server::start(&data, tmp.path(), port);
    let (ok, out, err) = run(&["sql", "quickstart-chat", "SELECT * FROM message"]);
    assert!(ok, "sql after restart: {err}\nserver:\n{}", server.output());
    assert!(out.contains("\"Hello, World!\""), "{out}");
    // The server logs each database's recovery and which write path its log took.
    let log = server.output();
    assert!(
        log.contains("recovered in") && log.contains("commit log open") && log.contains("backend="),
        "{log}"
    );

    let (ok, out, err) = run(&["list"]);
    assert!(ok, "list: {err}");
    assert!(out.contains("quickstart-chat"), "{out}");
    let (ok, _, err) = run(&["delete", "quickstart-chat"]);
    assert!(ok, "delete: {err}");
    let (ok, _, _) = run(&["sql", "quickstart-chat", "SELECT * FROM message"]);
    assert!(!ok, "the database is deleted");
}

// Proves `subscribe` prints the initial rows (with --print-initial-update) and then one JSON
// line per transaction, keyed by table and column names.
#[test]
fn subscribe_through_the_cli() {
    let wasm = fixture("quickstart_chat");
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), tmp.path(), free_port());
    let s = server.url();
    let cfg = tmp.path();
    let run = |args: &[&str]| lightcone_at(cfg, &s, args);
    let (ok, _, err) = run(&["publish", "-b", wasm.to_str().unwrap(), "quickstart-chat"]);
    assert!(ok, "publish: {err}");
    let (ok, _, err) = run(&["call", "quickstart-chat", "send_message", "Hello, World!"]);
    assert!(ok, "call: {err}");

    // A subscription sees the initial row, then the next message.
    let sub = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lightcone"));
        cmd.args(["subscribe", "quickstart-chat", "SELECT * FROM message", "--print-initial-update"])
            .args(["-n", "1", "-t", "30", "-s", &s])
            .env("LIGHTCONE_CLI_CONFIG", cfg.join("cli.json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, _, err) = run(&["call", "quickstart-chat", "send_message", "second message"]);
    assert!(ok, "call: {err}");
    let out = sub.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "subscribe: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let initial: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(initial["message"]["inserts"][0]["text"], "Hello, World!", "{stdout}");
    let update: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(update["message"]["inserts"][0]["text"], "second message", "{stdout}");
    assert_eq!(update["message"]["deletes"], serde_json::json!([]), "{stdout}");
}

// Proves procedures are reachable through `call` (return value printed as JSON, arguments
// shaped by their parameters), listed by `describe`, and that their own transactions are
// logged: the row survives a restart.
#[test]
fn procedures_through_the_cli() {
    let wasm = fixture("abi_exerciser");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let server = Server::start(&data, tmp.path(), port);
    let s = server.url();
    let cfg = tmp.path();
    let run = |args: &[&str]| lightcone_at(cfg, &s, args);
    let (ok, _, err) = run(&["publish", "-b", wasm.to_str().unwrap(), "ex"]);
    assert!(ok, "publish: {err}\nserver:\n{}", server.output());

    let (ok, out, err) = run(&["call", "ex", "proc_add", "40", "2"]);
    assert!(ok, "call proc_add: {err}");
    assert_eq!(out.trim(), "42");
    let (ok, out, err) = run(&["call", "ex", "proc_with_tx", "kept across restarts"]);
    assert!(ok, "call proc_with_tx: {err}");
    let id: u64 = out.trim().parse().unwrap_or_else(|e| panic!("an event id, got {out:?}: {e}"));
    let (ok, out, err) = run(&["call", "ex", "proc_panic"]);
    assert!(!ok, "a panicking procedure fails: {out}");
    assert!(err.contains("deliberate procedure panic"), "{err}");

    let (ok, out, err) = run(&["describe", "ex"]);
    assert!(ok, "describe: {err}");
    assert!(out.contains("Procedures:") && out.contains("proc_add(a: u32, b: u32)"), "{out}");

    drop(server);
    let server = Server::start(&data, tmp.path(), port);
    let (ok, out, err) = run(&["sql", "ex", "SELECT id, detail FROM event_log WHERE kind = 'proc_with_tx'"]);
    assert!(ok, "sql after restart: {err}\nserver:\n{}", server.output());
    assert!(out.contains("\"kept across restarts\"") && out.contains(&id.to_string()), "{out}");
}
