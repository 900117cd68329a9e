#!/usr/bin/env bash
# Chasqui's developer entry point: the README's two commands go through here.
#
#   ./dev.sh run [serve flags]   build and start the gateway on the embedded default
#   ./dev.sh test                formatting, lints and the whole test suite
#                                (on SQLite and on PostgreSQL, started if absent)
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

# The tests run the store on SQLite and on a real PostgreSQL on loopback
# (CHASQUI_TEST_PG_URL, default postgres://postgres@127.0.0.1:5432/postgres,
# a superuser that may create and drop databases). Uses the server the
# machine runs; as root on Debian, installs and starts one when none answers.
PG_URL_DEFAULT=postgres://postgres@127.0.0.1:5432/postgres
pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
ensure_postgres() {
  export CHASQUI_TEST_PG_URL="${CHASQUI_TEST_PG_URL:-$PG_URL_DEFAULT}"
  if [[ $CHASQUI_TEST_PG_URL != "$PG_URL_DEFAULT" ]] || pg_ready; then
    return
  fi
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    say "PostgreSQL is not reachable on 127.0.0.1:5432: run 'sudo apt-get install -y postgresql && sudo service postgresql start' (trust for local TCP) or set CHASQUI_TEST_PG_URL"
    exit 1
  fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    say "installing PostgreSQL from Debian for the tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  local hba=/etc/postgresql/$version/main/pg_hba.conf
  # Loopback only, and only for the tests' throwaway databases: trust.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  pg_ctlcluster "$version" main start 2>/dev/null || service postgresql start >/dev/null
  for _ in $(seq 1 60); do pg_ready && break; sleep 0.5; done
  pg_ready || { say "PostgreSQL did not start"; exit 1; }
  pg_ctlcluster "$version" main reload 2>/dev/null || true
  say "PostgreSQL $version running on 127.0.0.1:5432"
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
    ensure_postgres
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
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
