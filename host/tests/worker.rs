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

// Proves client-called procedures run beside the database thread: while one sleeps, reducers
// are answered at once; a procedure's transaction still takes its turn — its commit is
// announced in order with the reducers' and the views over what it changed follow in the
// next commit — and it is durable across a restart.
#[test]
fn a_sleeping_procedure_does_not_hold_up_reducers() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), Start::Publish { program: fixture("abi_exerciser"), owner: OWNER });
    let commits = handle.commits();
    let (tx, rx) = std::sync::mpsc::channel();
    let started = std::time::Instant::now();
    handle.call_procedure_then("proc_sleep", &caller(1), ReducerArgs::Json("[1500000]".into()), move |o| {
        let _ = tx.send((o, started.elapsed()));
    });
    std::thread::sleep(Duration::from_millis(100));
    let t = std::time::Instant::now();
    let out = handle.call_reducer("seed_items", &caller(1), ReducerArgs::Json("[8]".into())).unwrap();
    assert!(out.is_committed());
    let reducer_took = t.elapsed();
    assert!(
        reducer_took < Duration::from_millis(1000),
        "a reducer waited {reducer_took:?} for a sleeping procedure"
    );
    let (sleep, slept) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(sleep.unwrap().result.is_ok());
    assert!(slept >= Duration::from_millis(1500));
    assert_eq!(commits.recv_timeout(Duration::from_secs(5)).unwrap().reducer.as_deref(), Some("seed_items"));

    // A procedure's own transaction, then the view refresh it causes, announced in order.
    let (tx, rx) = std::sync::mpsc::channel();
    handle.call_procedure_then(
        "proc_with_tx_score",
        &caller(1),
        ReducerArgs::Json("[1, 75]".into()),
        move |o| {
            let _ = tx.send(o);
        },
    );
    let out = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(out.result.as_deref().unwrap(), [1u8]);
    let names = |e: &lightcone_host::CommitEvent| -> Vec<String> {
        e.delta
            .tables
            .iter()
            .map(|t| e.after.table(t.table_id).unwrap().schema().name().to_string())
            .collect()
    };
    // Both were announced before the procedure answered (no waiting here), each exactly once.
    let first = commits.try_recv().expect("the procedure's commit was announced before its answer");
    assert_eq!(names(&first), ["item"]);
    let second = commits.try_recv().expect("so was the view refresh it caused");
    assert_eq!(names(&second), ["high_score_items"]);
    assert_eq!(second.delta.tx_offset, first.delta.tx_offset + 1);
    assert!(commits.recv_timeout(Duration::from_millis(300)).is_err(), "announced once");
    handle.shutdown();
    drop(handle);

    let handle = start(dir.path(), Start::Open);
    let item_1 =
        rows(handle.database(), "item").into_iter().find(|r| r[0] == lightcone_mvcc::Value::U64(1)).unwrap();
    assert_eq!(item_1[2], lightcone_mvcc::Value::I32(75), "the procedure's commit was logged");
}

// Proves a scheduled procedure handed from the database thread to the procedure thread runs
// when due: it journals its label in its own transaction, the one-shot row is gone, and the
// database keeps answering.
#[test]
fn scheduled_procedures_run_beside_the_database_thread() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), Start::Publish { program: fixture("abi_exerciser"), owner: OWNER });
    let out = handle.call_procedure(
        "proc_schedule_once",
        &caller(1),
        ReducerArgs::Json(r#"["later", 50000]"#.into()),
    );
    assert!(out.unwrap().result.is_ok());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let journaled = |h: &DatabaseHandle| {
        rows(h.database(), "event_log").into_iter().any(|r| {
            r[1] == lightcone_mvcc::Value::String("proc_scheduled".into())
                && r[2] == lightcone_mvcc::Value::String("later".into())
        })
    };
    while !journaled(&handle) {
        assert!(std::time::Instant::now() < deadline, "the scheduled procedure did not run");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(rows(handle.database(), "proc_schedule").is_empty(), "the one-shot row is gone");
    let out = handle.call_reducer("seed_items", &caller(1), ReducerArgs::Json("[1]".into())).unwrap();
    assert!(out.is_committed());
}

// Proves a `schedule_immediate` call under the database thread runs after the call that
// asked, and its commit reaches listeners (it used to commit unannounced, hidden from
// subscribers, when it ran inside the asking call).
#[test]
fn immediate_calls_are_announced_after_the_call_that_asked() {
    let dir = tempfile::tempdir().unwrap();
    let handle =
        start(dir.path(), Start::Publish { program: fixture("abi_exerciser_unstable"), owner: OWNER });
    let commits = handle.commits();
    let out = handle
        .call_reducer("schedule_immediate", &caller(1), ReducerArgs::Json(r#"["soon"]"#.into()))
        .unwrap();
    assert!(out.is_committed());
    let event =
        commits.recv_timeout(Duration::from_secs(5)).expect("the immediate call's commit is announced");
    assert_eq!(event.reducer.as_deref(), Some("nested_inner"));
    let journal: Vec<_> = event.delta.tables.iter().flat_map(|t| t.inserts.iter()).collect();
    assert!(journal.iter().any(|r| r[1] == lightcone_mvcc::Value::String("nested_inner".into())));
    assert_eq!(event.after.tx_offset(), event.delta.tx_offset, "announced with the state right after it");
}

// Proves procedures run side by side, up to MAX_PROCEDURE_THREADS at once: that many sleepers
// end together rather than one after another, and one more waits for a free thread, then runs
// (its transaction committed).
#[test]
fn procedures_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), Start::Publish { program: fixture("abi_exerciser"), owner: OWNER });
    let max = lightcone_host::worker::MAX_PROCEDURE_THREADS;
    let (tx, rx) = std::sync::mpsc::channel();
    // `max` procedures sleeping 2 s each.
    for i in 0..max {
        let tx = tx.clone();
        handle.call_procedure_then(
            "proc_sleep",
            &caller(1),
            ReducerArgs::Json("[2000000]".into()),
            move |o| {
                let _ = tx.send((i, o.map(|o| o.result.is_ok())));
            },
        );
        // Each starts before the next is sent, so each finds every thread busy and adds one.
        std::thread::sleep(Duration::from_millis(150));
    }
    // All threads sleep: one more waits for a free thread...
    let (late_tx, late_rx) = std::sync::mpsc::channel();
    handle.call_procedure_then(
        "proc_with_tx",
        &caller(2),
        ReducerArgs::Json(r#"["late"]"#.into()),
        move |o| {
            let _ = late_tx.send(o.map(|o| o.result.is_ok()));
        },
    );
    assert!(late_rx.recv_timeout(Duration::from_millis(500)).is_err(), "every procedure thread is busy");
    // ...the sleepers end about together (side by side, not one after another)...
    let started = std::time::Instant::now();
    for _ in 0..max {
        let (_, ok) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(ok.unwrap());
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the sleepers ended {:?} apart: they ran one after another",
        started.elapsed()
    );
    // ...and the waiting one runs, its transaction committed.
    assert!(late_rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap());
    let journal = rows(handle.database(), "event_log");
    assert!(journal.iter().any(|r| r[2] == lightcone_mvcc::Value::String("late".into())), "{journal:?}");
}

// Proves an interval-scheduled procedure slower than its interval does not pile up runs: while
// a run is in flight the next ones are skipped (warned once per run), so runs happen one at a time
// — not one queued per interval, which would keep every procedure thread busy with it.
#[test]
fn a_slow_interval_procedure_runs_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), Start::Publish { program: fixture("abi_exerciser"), owner: OWNER });
    // Every 20 ms, a run that sleeps 300 ms.
    let out = handle
        .call_reducer(
            "proc_schedule_every",
            &caller(1),
            ReducerArgs::Json(r#"["sleep:300000", 20000]"#.into()),
        )
        .unwrap();
    assert!(out.is_committed(), "{:?}", out.status);
    std::thread::sleep(Duration::from_millis(1600));
    let runs = rows(handle.database(), "event_log")
        .iter()
        .filter(|r| r[1] == lightcone_mvcc::Value::String("proc_scheduled".into()))
        .count();
    // One at a time: about 1600 / 300 runs. Queued per interval (80 of them) on 4 threads,
    // about 4 times as many would have ended by now.
    assert!((2..=6).contains(&runs), "{runs} runs ended");
    let warned = handle
        .logs()
        .tail(None)
        .into_iter()
        .filter(|r| r.message.contains("is still running from its last interval"))
        .count();
    // Warned once per run that made others wait, not once per skipped interval (~75).
    assert!((1..=runs + 1).contains(&warned), "{warned} warnings for {runs} runs");
}

// Proves a shutdown lets running procedures finish and answers queued ones with an error at
// once, rather than running them or leaving their callers waiting.
#[test]
fn shutdown_finishes_running_procedures_and_refuses_queued_ones() {
    let dir = tempfile::tempdir().unwrap();
    let handle = start(dir.path(), Start::Publish { program: fixture("abi_exerciser"), owner: OWNER });
    let max = lightcone_host::worker::MAX_PROCEDURE_THREADS;
    let (tx, rx) = std::sync::mpsc::channel();
    // `max` running (each started before the next is sent, so each gets a thread), then more
    // queued than there are threads to refuse them one each on their way out.
    let queued = max + 2;
    for i in 0..max + queued {
        let tx = tx.clone();
        let reply = move |o: Result<lightcone_host::ProcedureOutcome, lightcone_host::HostError>| {
            let _ = tx.send((i, o.map(|_| ()).map_err(|e| e.to_string())));
        };
        handle.call_procedure_then("proc_sleep", &caller(1), ReducerArgs::Json("[1500000]".into()), reply);
        if i < max {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    handle.shutdown();
    let mut answers: Vec<(usize, Result<(), String>)> = rx.try_iter().collect();
    answers.sort_by_key(|(i, _)| *i);
    assert_eq!(answers.len(), max + queued, "every caller is answered by the time shutdown returns");
    for (i, answer) in &answers[..max] {
        assert!(answer.is_ok(), "running procedure {i} finished: {answer:?}");
    }
    for (i, answer) in &answers[max..] {
        // Never started: `HostError::ShutDown`, which a server may retry on the next version.
        assert!(answer.as_ref().unwrap_err().contains("shut down"), "queued procedure {i}: {answer:?}");
    }
    // A call through a handle still held after the shutdown is refused at once.
    let (tx, rx) = std::sync::mpsc::channel();
    handle.call_procedure_then("proc_add", &caller(1), ReducerArgs::Json("[1, 2]".into()), move |o| {
        let _ = tx.send(o.map(|_| ()));
    });
    let late = rx.recv_timeout(Duration::from_secs(5)).expect("answered, not left waiting");
    assert!(late.is_err(), "{late:?}");
}

// Proves what commit hooks hand back goes out in commit order with the callers' answers, and
// only once the commit is durable (fsync mode: subscribers never see state a crash could
// take back), while many pipelined calls are in flight.
#[test]
fn hook_deliveries_and_answers_go_out_in_commit_order_once_durable() {
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let (db, log, _) =
        lightcone_snapshot::open_data_dir(dir.path(), LogOptions::default(), |_| {}).expect("open data dir");
    let log = Arc::new(log);
    let engine = Arc::new(lightcone_host::WasmEngine::new().unwrap());
    let program = Start::Publish { program: fixture("quickstart_chat"), owner: OWNER };
    let (handle, _) =
        DatabaseHandle::start(engine, Arc::new(db), Some(Arc::clone(&log)), HostConfig::default(), program)
            .expect("start");
    // (commit offset, durable offset when it went out, whether it was an answer)
    let sent: Arc<Mutex<Vec<(u64, u64, bool)>>> = Arc::default();
    {
        let (sent, log) = (Arc::clone(&sent), Arc::clone(&log));
        handle.hooks().add(Arc::new(move |event: &lightcone_host::CommitEvent| {
            let (sent, log, offset) = (Arc::clone(&sent), Arc::clone(&log), event.delta.tx_offset);
            lightcone_host::HookOutput {
                caller_update: None,
                deliver: Some(Box::new(move |durable| {
                    assert!(durable.is_ok());
                    sent.lock().unwrap().push((offset, log.durable_offset(), false));
                })),
            }
        }));
    }
    // First one call at a time (nothing queued: each commit's delivery could go out at once),
    // then many pipelined.
    const ONE_BY_ONE: usize = 50;
    const CALLS: usize = 500;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for i in 0..ONE_BY_ONE + CALLS {
        let (sent, log, done_tx) = (Arc::clone(&sent), Arc::clone(&log), done_tx.clone());
        let args = ReducerArgs::Json(format!(r#"["ordered {i}"]"#));
        handle.call_reducer_then("send_message", &caller(1), args, move |outcome| {
            let offset = outcome.expect("committed").ticket.expect("logged").0;
            sent.lock().unwrap().push((offset, log.durable_offset(), true));
            let _ = done_tx.send(());
        });
        if i < ONE_BY_ONE {
            done_rx.recv_timeout(Duration::from_secs(30)).expect("call answered");
        }
    }
    for _ in 0..CALLS {
        done_rx.recv_timeout(Duration::from_secs(30)).expect("every call answered");
    }
    let sent = sent.lock().unwrap();
    assert_eq!(sent.len(), 2 * (ONE_BY_ONE + CALLS), "one delivery and one answer per commit");
    for (offset, durable, _) in sent.iter() {
        assert!(durable >= offset, "commit {offset} went out while only {durable} was durable");
    }
    for pair in sent.windows(2) {
        assert!(pair[0].0 <= pair[1].0, "commit {} went out after commit {}", pair[1].0, pair[0].0);
    }
}

// Proves an update that keeps clients connected hands the readers of sender-bound views to
// the next version: their rows are recomputed in the update and stay, unheld rows go, and a
// reader's release on the new version deletes its rows. Without the hand-over the update
// clears them all (what it did before), which this test tells apart.
#[test]
fn a_module_update_hands_view_readers_to_the_next_version() {
    for hand_over in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (db, log, _) =
            lightcone_snapshot::open_data_dir(dir.path(), LogOptions::default(), |_| {}).expect("open");
        let (db, log) = (Arc::new(db), Arc::new(log));
        let engine = Arc::new(lightcone_host::WasmEngine::new().unwrap());
        let config = HostConfig::default();
        let begin = |start: Start| {
            let hooks = Arc::new(lightcone_host::CommitHooks::default());
            DatabaseHandle::start_with_hooks(
                Arc::clone(&engine),
                Arc::clone(&db),
                Some(Arc::clone(&log)),
                config.clone(),
                start,
                hooks,
            )
            .expect("start")
            .0
        };
        let program = fixture("abi_exerciser");
        let v1 = begin(Start::Publish { program: program.clone(), owner: OWNER });
        let view = v1.spec().views.iter().position(|v| v.name == "my_identity").unwrap();
        let (alice, bob) = ([1u8; 32], [2u8; 32]);
        v1.acquire_views(alice, vec![view]).unwrap();
        v1.acquire_views(alice, vec![view]).unwrap(); // two readers
        v1.acquire_views(bob, vec![view]).unwrap();
        assert_eq!(rows(&db, "my_identity").len(), 2, "one row per identity");

        let (plan, compiled) =
            lightcone_host::module_host::prepare_update(&engine, &db, &program, &config).unwrap().unwrap();
        assert!(!plan.breaks_clients, "the same module keeps its clients: {}", plan.describe());
        v1.shutdown();
        let mut readers = v1.take_view_readers();
        assert!(!readers.is_empty());
        if !hand_over {
            readers = Default::default();
        }
        let v2 = begin(Start::PublishCompiled { program: program.clone(), compiled, readers, owner: OWNER });
        if !hand_over {
            assert!(rows(&db, "my_identity").is_empty(), "nobody reads them on the new version");
            continue;
        }
        assert_eq!(rows(&db, "my_identity").len(), 2, "kept, recomputed by the new version");
        v2.release_views(bob, vec![view]).unwrap();
        assert_eq!(rows(&db, "my_identity").len(), 1, "bob's last reader left");
        v2.release_views(alice, vec![view]).unwrap();
        assert_eq!(rows(&db, "my_identity").len(), 1, "alice still has a reader");
        v2.release_views(alice, vec![view]).unwrap();
        assert!(rows(&db, "my_identity").is_empty());
    }
}
