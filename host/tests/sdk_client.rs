//! A real client: the official SpacetimeDB TypeScript SDK (npm `spacetimedb`, test-time only)
//! against `lightcone start` — two chat clients connect, subscribe, call reducers and see each
//! other's messages. The scenario lives in `tests/sdk-client/` (`run.sh` installs the SDK with
//! `npm ci` and checks everything); this test runs it with the binary cargo just built.
//! Without `node` and `npm` the test fails (`scripts/test.sh` installs them), unless
//! `LIGHTCONE_SKIP_SDK_CLIENT=1` (set by that script when it could not), which skips it loudly.

use std::path::PathBuf;
use std::process::Command;

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

#[test]
fn typescript_sdk_chat_clients_talk_through_lightcone() {
    let missing: Vec<&str> = ["node", "npm"].into_iter().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        let missing = missing.join(" and ");
        assert!(
            std::env::var("LIGHTCONE_SKIP_SDK_CLIENT").is_ok_and(|v| v == "1"),
            "{missing} not installed: run scripts/test.sh (which installs them), or set \
             LIGHTCONE_SKIP_SDK_CLIENT=1 to skip the official TypeScript SDK client test"
        );
        eprintln!(
            "SKIPPED (LIGHTCONE_SKIP_SDK_CLIENT=1): typescript_sdk_chat_clients_talk_through_lightcone: \
             {missing} not installed, the official TypeScript SDK client test did not run"
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
