#!/usr/bin/env bash
# Installs what the tests need, then runs every check CI runs: formatting, clippy, all tests.
# Usage: scripts/test.sh            (PROPTEST_CASES defaults to 64 here; raise it for soak runs)
set -euo pipefail
cd "$(dirname "$0")/.."

# Toolchain pieces: the wasm target for module fixtures, rustfmt and clippy for the checks.
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-unknown-unknown >/dev/null
bash scripts/install-powerloss.sh  # FUSE power-cut tool for engine/wal/tests/powerloss.rs

export PROPTEST_CASES="${PROPTEST_CASES:-64}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test (PROPTEST_CASES=$PROPTEST_CASES)"
cargo test --workspace --locked
