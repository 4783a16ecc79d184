#!/usr/bin/env bash
# A real client against Lightcone: the official SpacetimeDB TypeScript SDK (npm `spacetimedb`,
# pinned in package-lock.json; test-time only, never part of the product) runs two clients, A
# and B, against `lightcone start` with the quickstart_chat module. They connect, subscribe,
# call reducers and see each other's messages (src/chat.ts has every check).
#
# The scenario runs twice: once as the SDK ships (it offers v3 then v2 and the server must pick
# v3; gzip asked for), once offering only v2.bsatn (what the Rust SDK speaks), no compression.
#
# Installs what it needs (npm ci into tests/sdk-client/node_modules), builds `lightcone` and the
# fixture if missing. Environment:
#   LIGHTCONE_BIN   the lightcone binary to use (default: build target/debug/lightcone)
#   SDK_TIMEOUT     seconds each scenario may take (default 60)
# Exits non-zero with a `FAIL:` line on any failure or timeout; always stops its server.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SDK_TIMEOUT="${SDK_TIMEOUT:-60}"

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

SERVER_PID=""
WORK=""
RUN_DIST=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    [[ -z "$WORK" ]] || rm -rf "$WORK"
    [[ -z "$RUN_DIST" ]] || rm -rf "$RUN_DIST"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v node >/dev/null || fail "node is not installed"
command -v npm >/dev/null || fail "npm is not installed"

# --- the SDK (exact versions from package-lock.json), compiled bindings + client -----------
cd "$HERE"
# One install/compile at a time (cargo test and a developer may run this concurrently).
exec 9>"$HERE/.install.lock"
flock -w 600 9 || fail "could not lock $HERE/.install.lock"
lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ "$(cat node_modules/.lightcone-lock-sum 2>/dev/null || true)" != "$lock_sum" ]]; then
    echo "== npm ci (tests/sdk-client)"
    timeout 600 npm ci --no-audit --no-fund --loglevel=error || fail "npm ci failed"
    echo "$lock_sum" >node_modules/.lightcone-lock-sum
fi
echo "== tsc (bindings + client)"
rm -rf dist
timeout 300 node node_modules/typescript/bin/tsc -p . || fail "the TypeScript client does not compile"
# Run from a private copy so that a concurrent run recompiling dist/ cannot disturb this one.
RUN_DIST="$HERE/.run-$$"
rm -rf "$RUN_DIST" && cp -r dist "$RUN_DIST"
flock -u 9
exec 9>&-

# --- the server binary and the module ---------------------------------------------------------
cd "$ROOT"
if [[ -z "${LIGHTCONE_BIN:-}" ]]; then
    echo "== cargo build -p lightcone-host --bin lightcone"
    cargo build -p lightcone-host --bin lightcone -j 1 || fail "could not build lightcone"
    LIGHTCONE_BIN="$ROOT/target/debug/lightcone"
fi
[[ -x "$LIGHTCONE_BIN" ]] || fail "no lightcone binary at $LIGHTCONE_BIN"
WASM="$ROOT/target/fixtures/wasm/quickstart_chat.wasm"
if [[ ! -f "$WASM" ]]; then
    echo "== building wasm fixtures"
    LIGHTCONE_FIXTURES_SKIP_NIGHTLY=1 bash scripts/build-fixtures.sh || fail "could not build the fixtures"
fi
[[ -f "$WASM" ]] || fail "fixture $WASM is missing"

# --- the server ------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lightcone-sdk-client.XXXXXX")"

server_log() {
    echo "---- server log ($WORK/server.log) ----" >&2
    tail -n 60 "$WORK/server.log" >&2 || true
}

PORT="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
URL="http://127.0.0.1:$PORT"
echo "== lightcone start on $URL"
"$LIGHTCONE_BIN" start --data-dir "$WORK/data" --listen-addr "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
ready=""
for _ in $(seq 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || { server_log; fail "lightcone start exited before it was ready"; }
    if node -e "fetch('$URL/v1/ping').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
[[ -n "$ready" ]] || { server_log; fail "lightcone did not answer $URL/v1/ping within 30 s"; }

export LIGHTCONE_CLI_CONFIG="$WORK/cli.json"
publish() {
    timeout 60 "$LIGHTCONE_BIN" publish -s "$URL" -b "$WASM" "$1" -y >"$WORK/publish-$1.log" 2>&1 || {
        cat "$WORK/publish-$1.log" >&2
        server_log
        fail "lightcone publish $1 failed"
    }
}

# --- the scenario, as the SDK ships and v2-only ------------------------------------------------
run_scenario() {
    local label="$1" db="$2"
    shift 2
    echo "== SDK clients A and B ($label) against database $db"
    publish "$db"
    local rc=0
    env "$@" timeout --kill-after=5 "$SDK_TIMEOUT" node "$RUN_DIST/chat.js" "$URL" "$db" || rc=$?
    if [[ $rc -ne 0 ]]; then
        server_log
        if [[ $rc -eq 124 || $rc -eq 137 ]]; then
            fail "SDK scenario ($label) timed out after ${SDK_TIMEOUT} s"
        fi
        fail "SDK scenario ($label) failed (exit $rc): see the [sdk-client] FAIL line above"
    fi
}
run_scenario "default: v3 preferred, gzip requested" chat-v3 SDK_WS_PROTOCOL= SDK_COMPRESSION=
run_scenario "v2.bsatn only, no compression" chat-v2 SDK_WS_PROTOCOL=v2 SDK_COMPRESSION=none

echo "PASS: the official TypeScript SDK (spacetimedb $(node -p 'require(process.argv[1]).version' "$HERE/node_modules/spacetimedb/package.json" 2>/dev/null || echo '?')) works against Lightcone (v3 and v2)"
