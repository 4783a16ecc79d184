//! Procedures of the abi-exerciser fixture (`host/fixtures/README.md`, "Procedures"): return
//! values, their own transactions (commit, abort, trap inside one), sleeping, HTTP requests,
//! scheduled procedures, and the errors around them.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use lightcone_host::logs::now_micros;
use lightcone_host::{HostError, ModuleHost, ProcedureOutcome, ReducerArgs};
use lightcone_mvcc::{TxDelta, Value};

fn procedure(host: &mut ModuleHost, name: &str, json: &str) -> ProcedureOutcome {
    host.call_procedure(name, &caller(1), ReducerArgs::Json(json.into())).expect("call accepted")
}

fn returned(outcome: &ProcedureOutcome) -> &[u8] {
    outcome.result.as_deref().unwrap_or_else(|e| panic!("procedure `{}` failed: {e}", outcome.procedure))
}

fn bsatn_string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

fn events_of_kind(db: &lightcone_mvcc::Database, kind: &str) -> Vec<lightcone_mvcc::Row> {
    rows(db, "event_log").into_iter().filter(|r| r[1] == Value::String(kind.into())).collect()
}

#[test]
fn a_procedure_returns_its_value_as_bsatn() {
    let (mut host, _db) = publish("abi_exerciser");
    let out = procedure(&mut host, "proc_add", "[5, 7]");
    assert_eq!(returned(&out), 12u32.to_le_bytes());
    assert!(out.commits.is_empty() && out.ticket.is_none());
    let out = procedure(&mut host, "proc_add", r#"{"a": 4294967295, "b": 2}"#);
    assert_eq!(returned(&out), 1u32.to_le_bytes(), "wrapping add, named arguments");
}

#[test]
fn a_procedure_transaction_commits_and_is_announced_as_it_happens() {
    let (mut host, db) = publish("abi_exerciser");
    let seen: Arc<Mutex<Vec<Arc<TxDelta>>>> = Arc::default();
    let seen2 = Arc::clone(&seen);
    host.set_commit_observer(Arc::new(move |d: &Arc<TxDelta>| seen2.lock().unwrap().push(Arc::clone(d))));
    let before = now_micros();
    let out = procedure(&mut host, "proc_with_tx", r#"["written by a procedure"]"#);
    let id = u64::from_le_bytes(returned(&out).try_into().expect("a u64"));
    let rows = events_of_kind(&db, "proc_with_tx");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][0], Value::U64(id));
    assert_eq!(rows[0][2], Value::String("written by a procedure".into()));
    assert_eq!(rows[0][3], Value::U256(lightcone_mvcc::U256::from_le_bytes(caller(1).identity)));
    // The tx timestamp is the host's clock at procedure_start_mut_tx.
    let Value::I64(at) = rows[0][4] else { panic!("timestamp column: {:?}", rows[0][4]) };
    assert!(at >= before && at <= now_micros(), "{at} not in [{before}, now]");
    assert_eq!(out.commits.len(), 1);
    assert_eq!(out.commits[0].tables.len(), 1);
    assert_eq!(out.commits[0].tables[0].inserts, rows);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "the observer saw the commit");
    assert!(Arc::ptr_eq(&seen[0], &out.commits[0]));
}

#[test]
fn an_aborted_procedure_transaction_leaves_nothing() {
    let (mut host, db) = publish("abi_exerciser");
    let out = procedure(&mut host, "proc_tx_abort", r#"["never kept"]"#);
    assert_eq!(returned(&out), bsatn_string("aborted on purpose"));
    assert!(out.commits.is_empty());
    assert!(events_of_kind(&db, "proc_tx_abort").is_empty());
    // The writer is free again: a reducer commits right after.
    let r = call(&mut host, "insert_item", r#"["after-abort", 1, 0, "x", 0]"#);
    assert!(r.is_committed(), "{:?}", r.status);
}

#[test]
fn a_panicking_procedure_fails_with_its_message_and_the_module_recovers() {
    let (mut host, _db) = publish("abi_exerciser");
    let out = procedure(&mut host, "proc_panic", "[]");
    let err = out.result.expect_err("a panic is a failure");
    assert!(err.contains("deliberate procedure panic"), "{err}");
    assert!(log_messages(&host).iter().any(|m| m.contains("procedure `proc_panic` trapped")));
    let out = procedure(&mut host, "proc_add", "[1, 2]");
    assert_eq!(returned(&out), 3u32.to_le_bytes(), "a fresh instance answers after the trap");
}

#[test]
fn sleeping_waits_and_returns_the_new_time_but_long_sleeps_are_refused() {
    let (mut host, _db) = publish("abi_exerciser");
    let start = Instant::now();
    let out = procedure(&mut host, "proc_sleep", "[30000]");
    assert!(start.elapsed() >= Duration::from_millis(30), "slept only {:?}", start.elapsed());
    let woke = i64::from_le_bytes(returned(&out).try_into().expect("a Timestamp"));
    assert!(woke >= out.timestamp_micros + 30_000, "woke at {woke}, called at {}", out.timestamp_micros);
    // A sleep longer than the cap would stall the database: the procedure fails at once.
    let start = Instant::now();
    let out = procedure(&mut host, "proc_sleep", "[3600000000]");
    let err = out.result.expect_err("an hour-long sleep is refused");
    assert!(err.contains("procedure_sleep_until") && err.contains("longer than"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// Serves one HTTP request with `reply` on a fresh port; returns the URL and the request seen.
fn one_shot_server(reply: &'static str) -> (String, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hello", listener.local_addr().unwrap());
    let seen = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(reply.as_bytes()).unwrap();
        String::from_utf8_lossy(&got).into_owned()
    });
    (url, seen)
}

#[test]
fn http_requests_from_a_procedure_get_answers_and_errors() {
    let (mut host, _db) = publish("abi_exerciser");
    let (url, seen) = one_shot_server("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello");
    let out = procedure(&mut host, "proc_http_get", &format!("[\"{url}\"]"));
    assert_eq!(returned(&out), bsatn_string("200 hello"));
    assert!(seen.join().unwrap().starts_with("GET /hello HTTP/1.1"));
    let (url, _seen) = one_shot_server("HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope");
    let out = procedure(&mut host, "proc_http_get", &format!("[\"{url}\"]"));
    assert_eq!(returned(&out), bsatn_string("404 nope"), "any status is a response");
    // Nothing listens on a port just released: the guest gets HTTP_ERROR with a message.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = procedure(&mut host, "proc_http_get", &format!("[\"http://127.0.0.1:{port}/\"]"));
    let text = String::from_utf8_lossy(returned(&out)).into_owned();
    assert!(text.contains("error: ") && text.contains(&format!("127.0.0.1:{port}")), "{text}");
}

#[test]
fn a_scheduled_procedure_runs_with_its_row_and_the_row_goes() {
    let (mut host, db) = publish("abi_exerciser");
    let out = procedure(&mut host, "proc_schedule_once", r#"["later", 1000]"#);
    let id = u64::from_le_bytes(returned(&out).try_into().expect("a u64"));
    assert_eq!(rows(&db, "proc_schedule").len(), 1);
    let due = host.next_scheduled().expect("the row is armed");
    assert!(due <= now_micros() + 1000);
    std::thread::sleep(Duration::from_millis(2));
    host.run_due(now_micros());
    let ran = events_of_kind(&db, "proc_scheduled");
    assert_eq!(ran.len(), 1, "ran once");
    assert_eq!(ran[0][2], Value::String("later".into()));
    assert!(rows(&db, "proc_schedule").is_empty(), "one-shot row {id} deleted");
    assert_eq!(host.next_scheduled(), None);
}

#[test]
fn unknown_procedures_and_bad_arguments_are_refused_before_running() {
    let (mut host, db) = publish("abi_exerciser");
    let err = host.call_procedure("no_such_proc", &caller(1), ReducerArgs::Json("[]".into())).unwrap_err();
    assert_eq!(err, HostError::NoSuchProcedure("no_such_proc".into()));
    let err =
        host.call_procedure("proc_add", &caller(1), ReducerArgs::Json(r#"["x", 1]"#.into())).unwrap_err();
    assert!(matches!(&err, HostError::InvalidArguments { reducer, .. } if reducer == "proc_add"), "{err:?}");
    let err = host.call_procedure("proc_add", &caller(1), ReducerArgs::Bsatn(vec![1, 2, 3])).unwrap_err();
    assert!(matches!(err, HostError::InvalidArguments { .. }), "{err:?}");
    // A reducer name is not a procedure, and the other way round.
    assert!(matches!(
        host.call_procedure("insert_item", &caller(1), ReducerArgs::Json("[]".into())),
        Err(HostError::NoSuchProcedure(_))
    ));
    assert!(matches!(
        host.call_reducer("proc_add", &caller(1), ReducerArgs::Json("[1, 2]".into())),
        Err(HostError::NoSuchReducer(_))
    ));
    assert!(events_of_kind(&db, "proc_with_tx").is_empty());
}
