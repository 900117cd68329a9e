#!/usr/bin/env bash
# Chasqui's developer entry point: the README's two commands go through here.
#
#   ./dev.sh run [serve flags]   build and start the gateway on the embedded default
#   ./dev.sh test                formatting, lints and the whole test suite
#   ./dev.sh chasqui ARGS...     run the built binary (e.g. `token issue ...`)
#
# It installs what a fresh Debian machine with rustup lacks (a C toolchain and
# cmake, which pingora's compression and ring need; the wasm toolchain of
# TOOLCHAIN.md for plugins) when it runs as root, and otherwise says in one
# line what to install. Builds go to a target directory
# outside the clone so that repeated runs and CI build incrementally.
set -euo pipefail

cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chasqui-target}"

say() { printf '[chasqui] %s\n' "$*" >&2; }

ensure_build_tools() {
  local missing=()
  command -v cc >/dev/null 2>&1 || missing+=(build-essential)
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v cargo >/dev/null 2>&1 || { say "cargo not found: install Rust with rustup first"; exit 1; }
  if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      say "installing ${missing[*]} from Debian"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      say "missing build tools: run 'sudo apt-get install -y ${missing[*]}' and try again"
      exit 1
    fi
  fi
}

# The AGETIC plugins the default policy loads, plus the examples and test
# fixtures the tests load.
AGETIC_PLUGINS=(plugins/cgii plugins/ciudadania plugins/ppe plugins/sefe)
TEST_PLUGINS=(plugins/allowlist tests/fixtures/misbehave)

# Builds plugin components with the given chasqui binary (this also installs
# the wasm toolchain of TOOLCHAIN.md when it is missing).
build_plugins() {
  local bin=$1
  shift
  for plugin in "$@"; do
    "$bin" plugin build "$plugin" >/dev/null
  done
}

release_binary() {
  ensure_build_tools
  cargo build --release -p chasqui >&2
  printf '%s/release/chasqui' "$CARGO_TARGET_DIR"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  run)
    bin=$(release_binary)
    say "building the AGETIC plugins (cgii, ciudadania, ppe, sefe)"
    build_plugins "$bin" "${AGETIC_PLUGINS[@]}"
    say "starting the gateway: https://127.0.0.1:8443 (demo upstream on 127.0.0.1:18080, data in ./chasqui-data)"
    exec "$bin" serve "$@"
    ;;
  test)
    ensure_build_tools
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    # The plugin tests load real components: build them once here (this also
    # installs the wasm toolchain of TOOLCHAIN.md when it is missing).
    cargo build -p chasqui --locked
    build_plugins "$CARGO_TARGET_DIR/debug/chasqui" "${TEST_PLUGINS[@]}" "${AGETIC_PLUGINS[@]}"
    if cargo nextest --version >/dev/null 2>&1; then
      cargo nextest run --workspace --locked --no-fail-fast
    else
      cargo test --workspace --locked --no-fail-fast
    fi
    ;;
  chasqui)
    bin=$(release_binary)
    exec "$bin" "$@"
    ;;
  *)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
