//! The load generator end to end against an in-process server, as the server issue's load
//! acceptance asks: 64 connections calling quickstart-chat's `send_message` over loopback
//! WebSocket, durable and not, each beside its SQLite baseline; every run reports tx/s, p50
//! and p99, and none has an error. One second per run: this proves the tool and the server
//! under load; the numbers worth quoting come from release runs (README, performance).

use std::process::Command;

#[test]
fn loadgen_reports_send_message_round_trips_durable_and_not() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--seconds", "1", "--workloads", "send_message"])
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(!stdout.contains("\nerrors\n"), "errors reported:\n{stdout}");

    let all_runs = stdout.split("\nall runs\n").nth(1).expect("an `all runs` table");
    let rows: Vec<Vec<&str>> = all_runs
        .lines()
        .skip(1) // the header
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    for durability in ["fsync", "none"] {
        for system in ["lightcone", "sqlite"] {
            let row = rows
                .iter()
                .find(|r| r[0] == "send_message" && r[1] == durability && r[2] == system)
                .unwrap_or_else(|| panic!("no {system} {durability} row in:\n{all_runs}"));
            // From the end: errors, then p999, p99 and p50 as "<number> <unit>" each, then tx/s.
            let n = row.len();
            assert!(n >= 12 && !row.contains(&"-"), "{system} {durability}: a latency is missing: {row:?}");
            let tps: f64 = row[n - 8].parse().unwrap_or_else(|_| panic!("tx/s in {row:?}"));
            assert!(tps > 0.0, "{system} {durability}: no transactions: {row:?}");
            for unit in [row[n - 6], row[n - 4], row[n - 2]] {
                assert!(["ns", "µs", "ms", "s"].contains(&unit), "{system} {durability}: {row:?}");
            }
            assert_eq!(row[n - 1], "0", "{system} {durability}: errors: {row:?}");
            if system == "lightcone" {
                assert_eq!(&row[3..6], ["64", "conn", "×"], "64 connections: {row:?}");
            }
        }
    }
    let lightcone_rows = rows.iter().filter(|r| r[2] == "lightcone").count();
    assert_eq!(lightcone_rows, 2, "{all_runs}");
}
