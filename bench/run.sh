#!/usr/bin/env bash
# bench/run.sh — Chasqui vs nginx reverse-proxy benchmark on one machine.
#
# Layout (see bench/README.md):
#   core 0 ($BENCH_CORE_LOAD):  wrk (load generator) + upstream nginx (static JSON)
#   core 1 ($BENCH_CORE_PROXY): the proxy under test — nginx proxy_pass, or chasqui
#
# Targets of the base scenario:
#   a: upstream direct   http  127.0.0.1:18100  /personas/1234567
#   b: nginx proxy       http  127.0.0.1:18101  /personas/1234567
#   c: chasqui           http  127.0.0.1:18104  /segip/v2/personas/1234567  (Bearer token)
#   b: nginx proxy       https 127.0.0.1:18102  /personas/1234567
#   c: chasqui           https 127.0.0.1:18103  /segip/v2/personas/1234567  (Bearer token)
#
# Only loopback addresses are ever targeted. Every process started here is
# killed, and the temp work dir removed, on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)

# ---- knobs (env) -----------------------------------------------------------
DURATION=${BENCH_DURATION:-10s}          # measured run length (wrk -d)
CONNECTIONS=${BENCH_CONNECTIONS:-32}     # wrk -c
WRK_THREADS=${BENCH_WRK_THREADS:-1}      # wrk -t
WARMUP=${BENCH_WARMUP:-3s}               # warm-up before each measured run
WORKERS=${BENCH_WORKERS:-1}              # nginx proxy worker_processes == chasqui --threads
CORE_LOAD=${BENCH_CORE_LOAD:-0}          # taskset list for wrk + upstream
CORE_PROXY=${BENCH_CORE_PROXY:-1}        # taskset list for the proxy under test
SCENARIOS=${BENCH_SCENARIOS:-base}       # space-separated; each NAME runs scenario_NAME
SKIP_CHASQUI=${BENCH_SKIP_CHASQUI:-0}    # 1: nginx-only run (no build, no chasqui targets)
READY_TIMEOUT=${BENCH_READY_TIMEOUT:-30} # seconds to wait for chasqui readiness
RESULTS_FILE=${BENCH_RESULTS_FILE:-$BENCH_DIR/results/latest.md}
KEEP_WORK=${BENCH_KEEP_WORK:-0}          # 1: keep the temp dir (logs, configs) for debugging
PROFILE=${BENCH_PROFILE:-0}              # 1: perf-record chasqui during each measured run

HOST=127.0.0.1
PORT_UPSTREAM=18100
PORT_NGINX_HTTP=18101
PORT_NGINX_HTTPS=18102
PORT_CHASQUI_HTTPS=18103
PORT_CHASQUI_HTTP=18104
PERSON_PATH=/personas/1234567
CHASQUI_PREFIX=/segip/v2
# ~100-byte fake person record served by the upstream.
BODY='{"ci":"1234567","nombres":"JUAN CARLOS","apellido_paterno":"MAMANI","apellido_materno":"QUISPE","nacimiento":"1985-04-12"}'

# ---- small helpers ---------------------------------------------------------
log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }
slug() { printf '%s' "$1" | tr -c 'A-Za-z0-9' '-' | tr -s '-' | sed 's/^-//; s/-$//'; }

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# HTTP status of URL (000 when nothing answers); extra args go to curl.
http_code() { curl -sk --http1.1 -o /dev/null -w '%{http_code}' --max-time 2 "$@" 2>/dev/null || true; }

# ---- prerequisites ---------------------------------------------------------
ensure_tools() {
    local missing=() t
    for t in nginx wrk openssl curl taskset awk; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    ((${#missing[@]} == 0)) && return 0
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "bench: missing ${missing[*]}: install them first (Debian, as root: apt-get install -y nginx-light wrk openssl curl util-linux)" >&2
        exit 1
    fi
    log "installing from Debian: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    local pkgs=() ng=nginx
    apt-cache show nginx-light >/dev/null 2>&1 && ng=nginx-light
    for t in "${missing[@]}"; do
        case $t in
            nginx) pkgs+=("$ng") ;;
            taskset) pkgs+=(util-linux) ;;
            awk) pkgs+=(mawk) ;;
            *) pkgs+=("$t") ;;
        esac
    done
    apt-get install -y -qq "${pkgs[@]}" >&2
    for t in "${missing[@]}"; do
        command -v "$t" >/dev/null 2>&1 || die "still missing after apt-get install: $t"
    done
}

check_cores() {
    taskset -c "$CORE_LOAD" true 2>/dev/null || die "cannot pin to CPU list '$CORE_LOAD' (BENCH_CORE_LOAD); nproc=$(nproc)"
    taskset -c "$CORE_PROXY" true 2>/dev/null || die "cannot pin to CPU list '$CORE_PROXY' (BENCH_CORE_PROXY); nproc=$(nproc)"
    [[ $CORE_LOAD != "$CORE_PROXY" ]] || log "WARNING: load and proxy share CPU list '$CORE_LOAD'; results are not comparable with the 2-core layout"
}

build_chasqui() {
    if [[ -n ${CHASQUI_BIN:-} ]]; then
        [[ -x $CHASQUI_BIN ]] || die "CHASQUI_BIN=$CHASQUI_BIN is not an executable"
        log "using CHASQUI_BIN=$CHASQUI_BIN (no build)"
        return 0
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust, or set CHASQUI_BIN to a built chasqui"
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/chasqui-target}
    log "building chasqui (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$REPO" && cargo build --release -p chasqui) >&2
    CHASQUI_BIN=$CARGO_TARGET_DIR/release/chasqui
    [[ -x $CHASQUI_BIN ]] || die "build finished but $CHASQUI_BIN is missing"
}

# ---- process bookkeeping ---------------------------------------------------
PIDS=()

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    log "pid $pid ignored SIGTERM; killing it and its children"
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$? i
    set +e
    trap - EXIT INT TERM
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    if [[ -n ${WORK:-} && -d $WORK ]]; then
        if [[ $KEEP_WORK == 1 ]]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
    fi
    exit "$rc"
}

# Wait until something answers HTTP on URL while PID lives.
wait_http() {
    local name=$1 pid=$2 url=$3 logf=$4 i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || { cat "$logf" >&2 || true; die "$name exited during start-up (log above)"; }
        [[ $(http_code "$url") != 000 ]] && return 0
        sleep 0.1
    done
    cat "$logf" >&2 || true
    die "$name did not answer on $url within 10 s (log above)"
}

ensure_port_free() {
    local p
    for p in "$@"; do
        ! port_in_use "$p" || die "port $HOST:$p is already in use; stop whatever listens there"
    done
}

# nginx >= 1.25.1 wants "http2 on;", older ones "listen ... http2".
nginx_new_http2() {
    local v
    v=$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p')
    [[ $(printf '%s\n1.25.1\n' "$v" | sort -V | head -n1) == 1.25.1 ]]
}

# Common top of an nginx config. $1 = its own dir.
nginx_conf_head() {
    local d=$1
    cat <<EOF
worker_processes $2;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 8192; }
EOF
}

nginx_http_common() {
    local d=$1
    cat <<EOF
    access_log off;
    server_tokens off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    # Never close a client keep-alive connection mid-run (default is 1000
    # requests), so no run pays for reconnects or TLS handshakes.
    keepalive_requests 1000000;
    keepalive_timeout 75s;
EOF
}

# ---- (a) upstream ----------------------------------------------------------
start_upstream() {
    local d=$WORK/upstream
    mkdir -p "$d/tmp"
    {
        nginx_conf_head "$d" 1
        echo "http {"
        nginx_http_common "$d"
        cat <<EOF
    server {
        listen $HOST:$PORT_UPSTREAM;
        location = $PERSON_PATH {
            default_type application/json;
            return 200 '$BODY';
        }
        location / { return 404; }
    }
}
EOF
    } >"$d/nginx.conf"
    ensure_port_free "$PORT_UPSTREAM"
    taskset -c "$CORE_LOAD" nginx -p "$d" -c "$d/nginx.conf" >"$d/stdout.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_http "upstream nginx" "$pid" "http://$HOST:$PORT_UPSTREAM/" "$d/error.log"
    log "upstream nginx up on $HOST:$PORT_UPSTREAM (pid $pid, cpu $CORE_LOAD)"
}

# ---- (b) nginx reverse proxy -----------------------------------------------
make_cert() {
    local d=$1
    # ECDSA P-256, like the certificates rustls/rcgen setups usually use.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -days 2 -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$d/key.pem" -out "$d/cert.pem" >"$d/openssl.log" 2>&1 ||
        { cat "$d/openssl.log" >&2; die "openssl could not make the self-signed certificate"; }
}

# The proxy's pool of keep-alive connections to the upstream, and the
# location that proxies to it (b's setup, shared by scenario instructions).
nginx_backend() {
    cat <<EOF
    upstream backend {
        server $HOST:$PORT_UPSTREAM;
        keepalive 64;
        keepalive_requests 1000000;
    }
EOF
}

nginx_proxy_location() {
    cat <<'EOF'
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
EOF
}

start_nginx_proxy() {
    local d=$WORK/nginx-proxy listen_tls http2_line=""
    mkdir -p "$d/tmp"
    make_cert "$d"
    if nginx_new_http2; then
        listen_tls="listen $HOST:$PORT_NGINX_HTTPS ssl;"
        http2_line="http2 on;"
    else
        listen_tls="listen $HOST:$PORT_NGINX_HTTPS ssl http2;"
    fi
    {
        nginx_conf_head "$d" "$WORKERS"
        echo "http {"
        nginx_http_common "$d"
        cat <<EOF
$(nginx_backend)
    server {
        listen $HOST:$PORT_NGINX_HTTP;
$(nginx_proxy_location)
    }
    server {
        $listen_tls
        $http2_line
        ssl_certificate $d/cert.pem;
        ssl_certificate_key $d/key.pem;
$(nginx_proxy_location)
    }
}
EOF
    } >"$d/nginx.conf"
    ensure_port_free "$PORT_NGINX_HTTP" "$PORT_NGINX_HTTPS"
    taskset -c "$CORE_PROXY" nginx -p "$d" -c "$d/nginx.conf" >"$d/stdout.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_http "nginx proxy" "$pid" "http://$HOST:$PORT_NGINX_HTTP/" "$d/error.log"
    wait_http "nginx proxy (tls)" "$pid" "https://$HOST:$PORT_NGINX_HTTPS/" "$d/error.log"
    log "nginx proxy up on $HOST:$PORT_NGINX_HTTP (http) and $HOST:$PORT_NGINX_HTTPS (https), $WORKERS worker(s), pid $pid, cpu $CORE_PROXY"
}

# ---- (c) chasqui -----------------------------------------------------------
write_catalog() {
    cat <<EOF
entities:
  - {code: segip, name: "Servicio General de Identificación Personal"}
  - {code: bench, name: "Entidad de pruebas de carga"}
services:
  - entity: segip
    code: personas
    version: 2
    name: "Consulta de personas"
    category: "Identificación"
    environments:
      produccion:
        upstreams: ["http://$HOST:$PORT_UPSTREAM"]
consumers:
  - entity: bench
    code: loadgen
    name: "Generador de carga"
    grants:
      - {service: segip/v2, environments: [produccion]}
EOF
}

CHASQUI_PID=""
TOKEN=""

# start_chasqui NAME [extra serve args...]
#   Imports the catalog (SCENARIO_CATALOG if set, else write_catalog's), issues
#   a token into $TOKEN, starts `chasqui serve` pinned to $CORE_PROXY and
#   waits for /_chasqui/health/ready. One chasqui runs at a time (same ports).
start_chasqui() {
    local name=$1
    shift
    [[ -z $CHASQUI_PID ]] || die "start_chasqui $name: another chasqui is running; call stop_chasqui first"
    local d
    d=$WORK/chasqui-$(slug "$name")
    mkdir -p "$d/data"
    local catalog=${SCENARIO_CATALOG:-$d/catalog.yaml}
    [[ -n ${SCENARIO_CATALOG:-} ]] || write_catalog >"$catalog"

    "$CHASQUI_BIN" catalog import "$catalog" --data-dir "$d/data" >"$d/import.log" 2>&1 ||
        { cat "$d/import.log" >&2; die "chasqui catalog import failed (log above)"; }
    local out
    out=$("$CHASQUI_BIN" token issue --data-dir "$d/data" --consumer bench/loadgen \
        --env produccion --label bench 2>"$d/token.err") ||
        { cat "$d/token.err" >&2; die "chasqui token issue failed (stderr above)"; }
    TOKEN=$(printf '%s\n' "$out" | awk 'NF { t = $0 } END { gsub(/[ \t\r]/, "", t); print t }')
    [[ -n $TOKEN ]] || die "chasqui token issue printed no token"

    ensure_port_free "$PORT_CHASQUI_HTTPS" "$PORT_CHASQUI_HTTP"
    taskset -c "$CORE_PROXY" "$CHASQUI_BIN" serve --data-dir "$d/data" \
        --listen "$HOST:$PORT_CHASQUI_HTTPS" --listen-http "$HOST:$PORT_CHASQUI_HTTP" \
        --threads "$WORKERS" --no-demo --access-log false "$@" >"$d/chasqui.log" 2>&1 &
    CHASQUI_PID=$!
    PIDS+=("$CHASQUI_PID")

    local url="https://$HOST:$PORT_CHASQUI_HTTPS/_chasqui/health/ready" deadline=$((SECONDS + READY_TIMEOUT)) code
    while :; do
        if ! kill -0 "$CHASQUI_PID" 2>/dev/null; then
            tail -n 50 "$d/chasqui.log" >&2 || true
            die "chasqui ($name) exited during start-up (log above)"
        fi
        code=$(http_code "$url")
        [[ $code == 200 ]] && break
        if ((SECONDS >= deadline)); then
            tail -n 50 "$d/chasqui.log" >&2 || true
            die "chasqui ($name) not ready after ${READY_TIMEOUT}s (last status $code; log above)"
        fi
        sleep 0.2
    done
    log "chasqui ($name) ready on $HOST:$PORT_CHASQUI_HTTPS (https) and $HOST:$PORT_CHASQUI_HTTP (http), --threads $WORKERS, pid $CHASQUI_PID, cpu $CORE_PROXY"
}

stop_chasqui() {
    [[ -n $CHASQUI_PID ]] || return 0
    stop_pid "$CHASQUI_PID"
    forget_pid "$CHASQUI_PID"
    CHASQUI_PID=""
}

# ---- load + parse ----------------------------------------------------------
TARGETS=()             # labels, in run order
declare -A R_RPS R_P50 R_P99 R_NON2XX R_SOCKERR R_URL R_RAW R_CPU_LOAD R_CPU_PROXY
RATIOS=()              # "name|numerator label|denominator label"
REPORT_NOTES=()        # lines a scenario adds to the report (e.g. instruction counts)
INVALID=()             # messages about runs whose numbers cannot be trusted
IDLE_LOAD=NA IDLE_PROXY=NA BUSY_WARNING=""

# Parse wrk --latency output on stdin: "rps p50ms p99ms non2xx sockerr requests".
parse_wrk() {
    awk '
    function ms(v,   n, u) {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") return n / 1000
        if (u == "ms") return n
        if (u == "s")  return n * 1000
        if (u == "m")  return n * 60000
        if (u == "h")  return n * 3600000
        return "NA"
    }
    /^Requests\/sec:/                 { rps = $2 }
    /^[ \t]+50%[ \t]/                 { p50 = ms($2) }
    /^[ \t]+99%[ \t]/                 { p99 = ms($2) }
    /Non-2xx or 3xx responses:/       { non = $NF }
    /Socket errors:/                  { gsub(/,/, ""); se = $4 + $6 + $8 + $10 }
    / requests in /                   { reqs = $1 }
    END {
        if (rps == "") rps = "NA"; if (p50 == "") p50 = "NA"; if (p99 == "") p99 = "NA"
        if (reqs == "") reqs = "NA"
        print rps, p50, p99, non + 0, se + 0, reqs
    }'
}

# Per-CPU "index total idle" jiffies from /proc/stat.
cpu_snapshot() {
    awk '/^cpu[0-9]+ / { t = 0; for (i = 2; i <= 9; i++) t += $i; print substr($1, 4), t, $5 + $6 }' /proc/stat
}

# cpu_busy LIST BEFORE_FILE AFTER_FILE: busy % of the CPUs in LIST (taskset
# syntax: "1", "0,2", "1-3"), averaged over them.
cpu_busy() {
    awk -v list="$1" '
    BEGIN {
        n = split(list, parts, ",")
        for (i = 1; i <= n; i++) {
            if (split(parts[i], r, "-") == 2) { for (c = r[1]; c <= r[2]; c++) want[c] = 1 }
            else want[parts[i] + 0] = 1
        }
    }
    FNR == NR { t0[$1] = $2; i0[$1] = $3; next }
    ($1 in want) { dt += $2 - t0[$1]; di += $3 - i0[$1] }
    END { if (dt > 0) printf "%.0f\n", 100 * (dt - di) / dt; else print "NA" }' "$2" "$3"
}

# check_target LABEL URL [HEADER...]: status 200 and the upstream body, once,
# before loading.
check_target() {
    local label=$1 url=$2 f code hdr
    shift 2
    f=$WORK/check-$(slug "$label").body
    local args=(-sk --http1.1 --max-time 5 -o "$f" -w '%{http_code}')
    for hdr in "$@"; do [[ -z $hdr ]] || args+=(-H "$hdr"); done
    code=$(curl "${args[@]}" "$url" 2>/dev/null || true)
    [[ $code == 200 ]] || die "check of '$label' ($url) returned HTTP $code, expected 200; body: $(head -c 300 "$f" 2>/dev/null)"
    [[ $(cat "$f") == "$BODY" ]] || die "check of '$label' ($url) returned 200 but not the upstream body: $(head -c 300 "$f")"
}

# load LABEL URL [HEADER...]
load() {
    local label=$1 url=$2 hdr
    shift 2
    local raw
    raw=$WORK/wrk-$(slug "$label").txt
    local args=("-t$WRK_THREADS" "-c$CONNECTIONS" --latency)
    for hdr in "$@"; do [[ -z $hdr ]] || args+=(-H "$hdr"); done
    check_target "$label" "$url" "$@"
    log "$label: warm-up $WARMUP, then $DURATION at $CONNECTIONS connections ($url)"
    taskset -c "$CORE_LOAD" wrk "${args[@]}" "-d$WARMUP" "$url" >"$raw.warmup" 2>&1 ||
        { cat "$raw.warmup" >&2; die "wrk warm-up of '$label' failed"; }
    local perf_pid=""
    if [[ $PROFILE == 1 && -n $CHASQUI_PID ]]; then
        # Sampling only (no call graphs: the release build has no frame
        # pointers), from the load core so the proxy core is not charged.
        # shellcheck disable=SC2086 # BENCH_PROFILE_ARGS is a list of words
        taskset -c "$CORE_LOAD" perf record -q -F 1999 ${BENCH_PROFILE_ARGS:-} -p "$CHASQUI_PID" -o "$raw.perf" \
            -- sleep "${DURATION%s}" >/dev/null 2>&1 &
        perf_pid=$!
    fi
    cpu_snapshot >"$raw.cpu0"
    taskset -c "$CORE_LOAD" wrk "${args[@]}" "-d$DURATION" "$url" >"$raw" 2>&1 ||
        { cat "$raw" >&2; die "wrk run of '$label' failed"; }
    cpu_snapshot >"$raw.cpu1"
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" || true
        mkdir -p "$(dirname "$RESULTS_FILE")"
        local profile
        profile=$(dirname "$RESULTS_FILE")/profile-$(slug "$label").txt
        {
            echo "## by thread"
            perf report -i "$raw.perf" --no-children --sort comm --stdio 2>/dev/null |
                grep -v '^#' | grep -v '^$' | head -n 12
            echo "## by symbol"
            perf report -i "$raw.perf" --no-children --sort comm,dso,symbol --stdio 2>/dev/null |
                grep -v '^#' | grep -v '^$' | head -n 80
        } >"$profile" || true
        log "$label: profile (top 80 symbols) in $profile"
    fi
    R_CPU_LOAD[$label]=$(cpu_busy "$CORE_LOAD" "$raw.cpu0" "$raw.cpu1")
    R_CPU_PROXY[$label]=$(cpu_busy "$CORE_PROXY" "$raw.cpu0" "$raw.cpu1")
    local rps p50 p99 non se reqs
    read -r rps p50 p99 non se reqs < <(parse_wrk <"$raw")
    TARGETS+=("$label")
    R_RPS[$label]=$rps R_P50[$label]=$p50 R_P99[$label]=$p99
    R_NON2XX[$label]=$non R_SOCKERR[$label]=$se
    R_URL[$label]=$url R_RAW[$label]=$raw
    if [[ $rps == NA || $p50 == NA || $p99 == NA ]]; then
        INVALID+=("$label: could not parse wrk output")
    fi
    if ((non > 0 || se > 0)); then
        INVALID+=("$label: $non non-2xx responses and $se socket errors out of $reqs requests")
    fi
}

# ratio NAME NUMERATOR_LABEL DENOMINATOR_LABEL
ratio() { RATIOS+=("$1|$2|$3"); }

# A ratio over rounds: NUMERATORS and DENOMINATORS are comma-separated labels
# of the same length, one pair per round; the table shows the median of the
# pairs' ratios, column by column (each round's pair ran back to back, so
# slow drift of the machine cancels within a pair).
median_ratio() { RATIOS+=("$1|$2|$3"); }

target_ok() {
    local l=$1
    [[ -n ${R_RPS[$l]:-} && ${R_RPS[$l]} != NA && ${R_P50[$l]} != NA && ${R_P99[$l]} != NA &&
        ${R_NON2XX[$l]} == 0 && ${R_SOCKERR[$l]} == 0 ]]
}

# "rps_ratio p50_ratio p99_ratio" or a reason it cannot be given.
ratio_values() {
    local num=$2 den=$3
    if [[ $num == *,* ]]; then
        local -a nums dens
        local i vals all=""
        IFS=',' read -r -a nums <<<"$num"
        IFS=',' read -r -a dens <<<"$den"
        for i in "${!nums[@]}"; do
            vals=$(ratio_values "$1" "${nums[$i]}" "${dens[$i]:-}")
            [[ $vals != n/a* && $vals != INVALID* ]] || { echo "$vals"; return; }
            all+="$vals"$'\n'
        done
        printf '%s' "$all" | awk '
            { for (c = 1; c <= 3; c++) v[c, NR] = $c }
            END {
                for (c = 1; c <= 3; c++) {
                    n = 0
                    for (r = 1; r <= NR; r++) if (v[c, r] != "NA") x[++n] = v[c, r] + 0
                    if (n == 0) { out[c] = "NA"; continue }
                    for (a = 1; a <= n; a++) for (b = a + 1; b <= n; b++) if (x[b] < x[a]) { t = x[a]; x[a] = x[b]; x[b] = t }
                    out[c] = sprintf("%.2f", n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2)
                }
                print out[1], out[2], out[3]
            }'
        return
    fi
    [[ -n ${R_RPS[$num]:-} ]] || { echo "n/a (not run: $num)"; return; }
    [[ -n ${R_RPS[$den]:-} ]] || { echo "n/a (not run: $den)"; return; }
    if ! target_ok "$num" || ! target_ok "$den"; then echo "INVALID (errors in a run)"; return; fi
    awk -v a="${R_RPS[$num]}" -v b="${R_RPS[$den]}" -v c="${R_P50[$num]}" -v d="${R_P50[$den]}" \
        -v e="${R_P99[$num]}" -v f="${R_P99[$den]}" \
        'function r(x, y) { return y > 0 ? sprintf("%.2f", x / y) : "NA" }
         BEGIN { print r(a, b), r(c, d), r(e, f) }'
}

# ---- scenarios -------------------------------------------------------------
# A scenario is a function scenario_NAME, run for each NAME in BENCH_SCENARIOS.
# It calls load/ratio and, for chasqui, start_chasqui/stop_chasqui. More can
# live in bench/scenarios/*.sh (sourced before the run).
scenario_base() {
    local auth=""
    load "a: upstream http" "http://$HOST:$PORT_UPSTREAM$PERSON_PATH"
    load "b: nginx http" "http://$HOST:$PORT_NGINX_HTTP$PERSON_PATH"
    if [[ $SKIP_CHASQUI != 1 ]]; then
        # The plain authenticated proxy: no plugins (the embedded default
        # policy binds CGII to every service; scenario "plugins" measures it).
        printf 'version: 1\nplugins: []\n' >"$WORK/policy-plain.yaml"
        start_chasqui base --policy "$WORK/policy-plain.yaml"
        auth="Authorization: Bearer $TOKEN"
        load "c: chasqui http" "http://$HOST:$PORT_CHASQUI_HTTP$CHASQUI_PREFIX$PERSON_PATH" "$auth"
    fi
    load "b: nginx https" "https://$HOST:$PORT_NGINX_HTTPS$PERSON_PATH"
    if [[ $SKIP_CHASQUI != 1 ]]; then
        load "c: chasqui https" "https://$HOST:$PORT_CHASQUI_HTTPS$CHASQUI_PREFIX$PERSON_PATH" "$auth"
        stop_chasqui
    fi
    ratio "c/b http  (chasqui / nginx)" "c: chasqui http" "b: nginx http"
    ratio "c/b https (chasqui / nginx)" "c: chasqui https" "b: nginx https"
    ratio "c/a http  (chasqui / upstream)" "c: chasqui http" "a: upstream http"
    ratio "c/a https (chasqui / upstream)" "c: chasqui https" "a: upstream http"
    ratio "b/a http  (nginx / upstream)" "b: nginx http" "a: upstream http"
}

# ---- report ----------------------------------------------------------------
fmt_num() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "NA" || v == "") print "NA"; else printf f "\n", v }'; }

report() {
    local l name num den vals r a b c d e f g
    local -a rows=()
    for l in "${TARGETS[@]}"; do
        rows+=("$l|$(fmt_num "${R_RPS[$l]}" %.0f)|$(fmt_num "${R_P50[$l]}" %.3f)|$(fmt_num "${R_P99[$l]}" %.3f)|${R_NON2XX[$l]}|${R_SOCKERR[$l]}|${R_CPU_LOAD[$l]}|${R_CPU_PROXY[$l]}")
    done

    # -- terminal
    echo
    echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency (warm-up $WARMUP); load+upstream on cpu $CORE_LOAD, proxy on cpu $CORE_PROXY, $WORKERS worker(s)/thread(s)"
    printf '%-22s %10s %8s %8s %8s %9s %9s %10s\n' target req/s "p50 ms" "p99 ms" non-2xx sock-err "load cpu%" "proxy cpu%"
    for r in "${rows[@]}"; do
        IFS='|' read -r l a b c d e f g <<<"$r"
        printf '%-22s %10s %8s %8s %8s %9s %9s %10s\n' "$l" "$a" "$b" "$c" "$d" "$e" "$f" "$g"
    done
    echo
    printf '%-32s %8s %8s %8s\n' ratio req/s p50 p99
    for r in "${RATIOS[@]}"; do
        IFS='|' read -r name num den <<<"$r"
        vals=$(ratio_values "$name" "$num" "$den")
        if [[ $vals == n/a* || $vals == INVALID* ]]; then
            printf '%-32s %s\n' "$name" "$vals"
        else
            read -r a b c <<<"$vals"
            printf '%-32s %8s %8s %8s\n' "$name" "$a" "$b" "$c"
        fi
    done
    if ((${#REPORT_NOTES[@]} > 0)); then
        echo
        for r in "${REPORT_NOTES[@]}"; do echo "$r"; done
    fi
    [[ -z $BUSY_WARNING ]] || echo "WARNING: $BUSY_WARNING"
    for l in "${TARGETS[@]}"; do
        [[ $l != a:* && ${R_CPU_PROXY[$l]} != NA ]] || continue
        if ((R_CPU_PROXY[$l] < 90)); then
            echo "note: '$l' kept the proxy cpu only ${R_CPU_PROXY[$l]}% busy: the load core ($CORE_LOAD, ${R_CPU_LOAD[$l]}%) bounded it, not the proxy"
        fi
    done
    if ((${#INVALID[@]} > 0)); then
        {
            echo
            echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
            echo "!! BENCHMARK INVALID: errors during load; ratios involving these runs are"
            echo "!! meaningless (marked INVALID above). Raw wrk output is in $RESULTS_FILE"
            for r in "${INVALID[@]}"; do echo "!!   $r"; done
            echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        }
        log "BENCHMARK INVALID: ${#INVALID[@]} run(s) had errors (see the table); exit status will be 3"
    fi

    # -- markdown
    local commit cpu nginx_v wrk_v chasqui_v
    commit=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo "no commit")
    if [[ $commit != "no commit" ]] && [[ -n $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        commit="$commit (working tree has uncommitted changes)"
    fi
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)
    nginx_v=$(nginx -v 2>&1 | head -n1)
    wrk_v=$(wrk -v 2>&1 | head -n1 | sed 's/ *Copyright.*//' || true)
    if [[ $SKIP_CHASQUI == 1 ]]; then chasqui_v="(skipped: BENCH_SKIP_CHASQUI=1)"; else chasqui_v=$CHASQUI_BIN; fi
    mkdir -p "$(dirname "$RESULTS_FILE")"
    {
        echo "# Chasqui benchmark — $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo
        echo "| | |"
        echo "|---|---|"
        echo "| chasqui commit | \`$commit\` |"
        echo "| chasqui binary | \`$chasqui_v\` |"
        echo "| nproc | $(nproc) |"
        echo "| CPU | ${cpu:-unknown} |"
        echo "| kernel | $(uname -sr) |"
        echo "| nginx | ${nginx_v#nginx version: } |"
        echo "| wrk | $wrk_v |"
        echo "| load | \`wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency\`, warm-up $WARMUP |"
        echo "| pinning | wrk + upstream on cpu $CORE_LOAD; proxy under test on cpu $CORE_PROXY |"
        echo "| proxy workers | nginx \`worker_processes $WORKERS\`, chasqui \`--threads $WORKERS\` |"
        echo "| scenarios | $SCENARIOS |"
        echo "| busy before run | cpu $CORE_LOAD: $IDLE_LOAD%, cpu $CORE_PROXY: $IDLE_PROXY% |"
        echo
        if [[ -n $BUSY_WARNING ]]; then
            echo "> **WARNING:** $BUSY_WARNING."
            echo
        fi
        if ((${#INVALID[@]} > 0)); then
            echo "> **WARNING — BENCHMARK INVALID.** Errors during load; ratios involving these runs are meaningless:"
            for r in "${INVALID[@]}"; do echo ">  - $r"; done
            echo
        fi
        echo "| target | req/s | p50 ms | p99 ms | non-2xx | socket errors | load cpu % | proxy cpu % |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|"
        for r in "${rows[@]}"; do
            IFS='|' read -r l a b c d e f g <<<"$r"
            echo "| $l | $a | $b | $c | $d | $e | $f | $g |"
        done
        echo
        echo "| ratio | req/s | p50 | p99 |"
        echo "|---|---:|---:|---:|"
        for r in "${RATIOS[@]}"; do
            IFS='|' read -r name num den <<<"$r"
            vals=$(ratio_values "$name" "$num" "$den")
            if [[ $vals == n/a* || $vals == INVALID* ]]; then
                echo "| ${name//  / } | $vals | | |"
            else
                read -r a b c <<<"$vals"
                echo "| ${name//  / } | $a | $b | $c |"
            fi
        done
        echo
        if ((${#REPORT_NOTES[@]} > 0)); then
            echo '```'
            for r in "${REPORT_NOTES[@]}"; do echo "$r"; done
            echo '```'
            echo
        fi
        echo "req/s ratio above 1 = the numerator serves more; latency ratios below 1 = it answers faster."
        echo "load cpu % / proxy cpu % = busy share of cpu $CORE_LOAD (wrk + upstream) and cpu $CORE_PROXY (proxy under test) during the measured run;"
        echo "a proxy run whose proxy cpu is well under 100% was bounded by the load core, not by the proxy (see bench/README.md)."
        echo
        echo "<details><summary>raw wrk output</summary>"
        echo
        for l in "${TARGETS[@]}"; do
            echo "#### $l — ${R_URL[$l]}"
            echo
            echo '```'
            cat "${R_RAW[$l]}"
            echo '```'
            echo
        done
        echo "</details>"
    } >"$RESULTS_FILE"
    log "results written to $RESULTS_FILE"
}

# ---- main ------------------------------------------------------------------
main() {
    ensure_tools
    check_cores
    if [[ $SKIP_CHASQUI != 1 ]]; then build_chasqui; fi
    ulimit -n 65536 2>/dev/null || true

    WORK=$(mktemp -d "${TMPDIR:-/tmp}/chasqui-bench.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local f s
    if [[ -d $BENCH_DIR/scenarios ]]; then
        for f in "$BENCH_DIR"/scenarios/*.sh; do
            [[ -e $f ]] || continue
            # shellcheck source=/dev/null
            source "$f"
        done
    fi
    for s in $SCENARIOS; do
        declare -F "scenario_$s" >/dev/null || die "unknown scenario '$s' (no function scenario_$s)"
    done

    # Anything else busy on the two cores (a compile, say) skews every number.
    cpu_snapshot >"$WORK/idle.0"
    sleep 1
    cpu_snapshot >"$WORK/idle.1"
    IDLE_LOAD=$(cpu_busy "$CORE_LOAD" "$WORK/idle.0" "$WORK/idle.1")
    IDLE_PROXY=$(cpu_busy "$CORE_PROXY" "$WORK/idle.0" "$WORK/idle.1")
    if [[ $IDLE_LOAD != NA && $IDLE_PROXY != NA ]] && ((IDLE_LOAD > 10 || IDLE_PROXY > 10)); then
        BUSY_WARNING="cpus were already busy before the run (cpu $CORE_LOAD: $IDLE_LOAD%, cpu $CORE_PROXY: $IDLE_PROXY%): numbers are skewed by other work"
        log "WARNING: $BUSY_WARNING"
    fi

    start_upstream
    start_nginx_proxy
    for s in $SCENARIOS; do
        log "scenario: $s"
        "scenario_$s"
    done
    report
    ((${#INVALID[@]} == 0)) || exit 3
}

main "$@"
