//! A real client: the official SpacetimeDB TypeScript SDK (npm `spacetimedb`, test-time only)
//! against `lightcone start` — two chat clients connect, subscribe, call reducers and see each
//! other's messages. The scenario lives in `tests/sdk-client/` (`run.sh` installs the SDK with
//! `npm ci` and checks everything); this test runs it with the binary cargo just built.
//! Skipped, loudly, only when `node` or `npm` is not installed.

use std::path::PathBuf;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

#[test]
fn typescript_sdk_chat_clients_talk_through_lightcone() {
    let missing: Vec<&str> = ["node", "npm"].into_iter().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED: typescript_sdk_chat_clients_talk_through_lightcone: {} not installed, \
             the official TypeScript SDK client test did not run",
            missing.join(" and ")
        );
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests/sdk-client/run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("LIGHTCONE_BIN", env!("CARGO_BIN_EXE_lightcone"))
        .current_dir(&root)
        .output()
        .expect("run tests/sdk-client/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/sdk-client/run.sh failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    assert!(stdout.contains("PASS: the official TypeScript SDK"), "no PASS line:\n{stdout}\n{stderr}");
    println!("{stdout}");
}
