#!/usr/bin/env bash
# Builds the wasm test fixture modules in host/fixtures/ (see host/fixtures/README.md) and
# copies them to target/fixtures/wasm/:
#   quickstart_chat.wasm           quickstart chat module, spacetimedb 2.10.1 (stable toolchain)
#   abi_exerciser.wasm             every host import / column type, spacetimedb 2.10.1
#   abi_exerciser_unstable.wasm    the same + crate feature `unstable` (RLS filter, schedule_immediate)
#   bench_module.wasm              minimal reducers for the reducer benchmarks, spacetimedb 2.10.1
#   quickstart_chat_2_14.wasm      quickstart chat again, spacetimedb 2.14.0 (needs `cargo +nightly`;
#                                  skipped with a message when nightly is absent)
#
# Needs: the stable toolchain with `rustup target add wasm32-unknown-unknown`.
# All builds share one target dir (target/fixtures), so repeated runs are incremental.
# Env: FIXTURE_JOBS (cargo -j, default 1), LIGHTCONE_FIXTURES_SKIP_NIGHTLY=1 (skip the 2.14 build).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
target_dir="$root/target/fixtures"
out_dir="$target_dir/wasm"
jobs="${FIXTURE_JOBS:-1}"
wasm_target=wasm32-unknown-unknown

# Flags meant for host builds (coverage, sanitizers, target-cpu) must not leak into wasm builds.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET CARGO_TARGET_DIR

# has_wasm_target [+toolchain]: the wasm target's std is installed for that toolchain
# (tries to install it once when rustup is available).
has_wasm_target() {
    local sysroot
    sysroot="$(rustc "$@" --print sysroot 2>/dev/null)" || return 1
    [ -d "$sysroot/lib/rustlib/$wasm_target" ] && return 0
    command -v rustup >/dev/null 2>&1 || return 1
    rustup "$@" target add "$wasm_target" >&2 || return 1
    [ -d "$sysroot/lib/rustlib/$wasm_target" ]
}

# build <out-name> <manifest-dir> <artifact-stem> [cargo toolchain arg] [-- extra cargo args]
build() {
    local out_name="$1" dir="$2" stem="$3"
    shift 3
    local toolchain=()
    if [ $# -gt 0 ] && [ "${1:0:1}" = "+" ]; then
        toolchain=("$1")
        shift
    fi
    [ "${1:-}" = "--" ] && shift
    echo "== building $out_name ($dir${toolchain:+, ${toolchain[*]}}${*:+, $*})"
    cargo "${toolchain[@]}" build -j "$jobs" --release --locked --target "$wasm_target" \
        --manifest-path "$root/$dir/Cargo.toml" --target-dir "$target_dir" "$@"
    mkdir -p "$out_dir"
    cp "$target_dir/$wasm_target/release/$stem.wasm" "$out_dir/$out_name"
    built+=("$out_dir/$out_name")
}

if ! has_wasm_target; then
    echo "error: the $wasm_target target is not installed; run: rustup target add $wasm_target" >&2
    exit 1
fi

built=()
build quickstart_chat.wasm host/fixtures/quickstart-chat quickstart_chat
build abi_exerciser.wasm host/fixtures/abi-exerciser abi_exerciser
build bench_module.wasm host/fixtures/bench-module bench_module
build abi_exerciser_unstable.wasm host/fixtures/abi-exerciser abi_exerciser -- --features unstable

if [ "${LIGHTCONE_FIXTURES_SKIP_NIGHTLY:-0}" = 1 ]; then
    echo "== skipping quickstart_chat_2_14.wasm (LIGHTCONE_FIXTURES_SKIP_NIGHTLY=1)"
elif ! cargo +nightly --version >/dev/null 2>&1; then
    echo "== skipping quickstart_chat_2_14.wasm: no nightly toolchain (spacetimedb 2.14 needs rustc >= 1.97)"
elif ! has_wasm_target +nightly; then
    echo "== skipping quickstart_chat_2_14.wasm: nightly has no $wasm_target target" \
        "(rustup +nightly target add $wasm_target)"
else
    build quickstart_chat_2_14.wasm host/fixtures/quickstart-chat-2.14 quickstart_chat_2_14 +nightly
fi

echo "== fixtures in $out_dir:"
for f in "${built[@]}"; do
    printf '   %s (%s bytes)\n' "$f" "$(wc -c <"$f")"
done
