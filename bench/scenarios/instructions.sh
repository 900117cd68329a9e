# shellcheck shell=bash
# Scenario "instructions" (BENCH_SCENARIOS="instructions"): user-space
# instructions per call of nginx proxy_pass (b) and of chasqui (c) for the
# same call, counted by valgrind's callgrind. Unlike req/s, the count does
# not move with the machine's mood, so the ratio c/b of two builds, or of
# two machines, compares; it leaves out the kernel's share (the loopback TCP
# work, which is about the same for both proxies: see bench/README.md).
#
#   b  nginx (Debian's), one process (master_process off), the base
#      scenario's proxy_pass with keep-alive to the upstream
#   c  chasqui serve --threads 1, the base scenario's catalog and token,
#      no plugins, default metering; all of its threads counted
#   f  with BENCH_IC_FLOOR=1: pingora's floor (bench/examples/pingora_floor.rs,
#      see floor.sh; FLOOR_DIR as there), http and https
#   t  with BENCH_IC_FLOOR=1: the tokio floor (bench/examples/tokio_floor.rs),
#      http only
#
# Each proxy runs under `valgrind --tool=callgrind`; the client (curl, one
# keep-alive connection per process, BENCH_IC_CLIENTS processes) makes
# BENCH_IC_WARMUP calls, the counters are zeroed, BENCH_IC_CALLS more calls
# are made and counted. Instructions per call = counted / calls. Both over
# plain HTTP and over HTTPS. The top inclusive functions of each count go
# beside the results file (instructions-*.txt).
# Sourced by bench/run.sh, which provides log, die, start_chasqui, ...

IC_PORT_NGINX_HTTP=18111
IC_PORT_NGINX_HTTPS=18112
IC_NOTES=()

ensure_valgrind() {
    command -v valgrind >/dev/null 2>&1 && command -v callgrind_control >/dev/null 2>&1 && return 0
    if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        die "instructions: valgrind is missing: install it first (Debian, as root: apt-get install -y valgrind)"
    fi
    log "installing valgrind from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >&2 ||
        { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >&2; } ||
        die "instructions: could not install valgrind"
}

# ic_calls N URL [HEADER]: N calls spread over BENCH_IC_CLIENTS curl
# processes, each on one keep-alive connection; dies unless every call got a
# 200.
ic_calls() {
    local n=$1 url=$2 hdr=${3:-} clients=${BENCH_IC_CLIENTS:-4} i k
    local per=$(((n + clients - 1) / clients)) cfg out
    local pids=()
    for ((k = 0; k < clients; k++)); do
        cfg=$WORK/ic-client-$k.cfg
        out=$WORK/ic-client-$k.out
        {
            echo "silent"
            echo "insecure"
            echo "http1.1"
            [[ -z $hdr ]] || echo "header = \"$hdr\""
            for ((i = 0; i < per; i++)); do
                echo "url = \"$url\""
                echo "output = \"/dev/null\""
                echo "write-out = \"%{http_code}\\n\""
            done
        } >"$cfg"
        taskset -c "$CORE_LOAD" curl --max-time 600 -K "$cfg" >"$out" 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || die "instructions: a curl client failed on $url"; done
    local ok
    ok=$(cat "$WORK"/ic-client-*.out | grep -c '^200$' || true)
    ((ok == per * clients)) || die "instructions: $ok of $((per * clients)) calls to $url answered 200"
    IC_LAST_CALLS=$((per * clients))
}

# ic_count NAME PID OUTFILE URL [HEADER]: warm-up, zero, counted calls,
# dump; prints instructions per call.
ic_count() {
    local name=$1 pid=$2 outfile=$3 url=$4 hdr=${5:-}
    ic_calls "${BENCH_IC_WARMUP:-400}" "$url" "$hdr"
    callgrind_control -z "$pid" >/dev/null 2>&1 || die "instructions: callgrind_control -z $pid failed ($name)"
    ic_calls "${BENCH_IC_CALLS:-2000}" "$url" "$hdr"
    local calls=$IC_LAST_CALLS before dump
    before=$(ls "$outfile".* 2>/dev/null | wc -l)
    callgrind_control -d "$pid" >/dev/null 2>&1 || die "instructions: callgrind_control -d $pid failed ($name)"
    local i
    for ((i = 0; i < 100; i++)); do
        (($(ls "$outfile".* 2>/dev/null | wc -l) > before)) && break
        sleep 0.1
    done
    dump=$(ls -t "$outfile".* 2>/dev/null | head -n1)
    [[ -n $dump ]] || die "instructions: no callgrind dump for $name"
    local total
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")
    [[ $total =~ ^[0-9]+$ ]] || die "instructions: no total in $dump"
    mkdir -p "$(dirname "$RESULTS_FILE")"
    callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | head -n 80 \
        >"$(dirname "$RESULTS_FILE")/instructions-$(slug "$name").txt" || true
    echo $((total / calls))
}

ic_wait() {
    local name=$1 pid=$2 url=$3 logf=$4 i
    for ((i = 0; i < 1800; i++)); do
        kill -0 "$pid" 2>/dev/null || { tail -n 40 "$logf" >&2 || true; die "instructions: $name exited during start-up"; }
        [[ $(http_code "$url") == 200 ]] && return 0
        sleep 0.1
    done
    die "instructions: $name not ready under valgrind after 180 s"
}

scenario_instructions() {
    ensure_valgrind
    local d=$WORK/ic-nginx
    mkdir -p "$d/tmp"
    make_cert "$d"
    {
        cat <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 1024; }
http {
EOF
        nginx_http_common "$d"
        cat <<EOF
$(nginx_backend)
    server {
        listen $HOST:$IC_PORT_NGINX_HTTP;
        listen $HOST:$IC_PORT_NGINX_HTTPS ssl;
        ssl_certificate $d/cert.pem;
        ssl_certificate_key $d/key.pem;
$(nginx_proxy_location)
    }
}
EOF
    } >"$d/nginx.conf"
    ensure_port_free "$IC_PORT_NGINX_HTTP" "$IC_PORT_NGINX_HTTPS"
    local vg=(valgrind --tool=callgrind --collect-atstart=yes)
    taskset -c "$CORE_PROXY" "${vg[@]}" --callgrind-out-file="$d/callgrind.out" \
        nginx -p "$d" -c "$d/nginx.conf" >"$d/valgrind.log" 2>&1 &
    local npid=$!
    PIDS+=("$npid")
    ic_wait "nginx under callgrind" "$npid" "http://$HOST:$IC_PORT_NGINX_HTTP$PERSON_PATH" "$d/valgrind.log"
    local b_http b_https
    b_http=$(ic_count "b nginx http" "$npid" "$d/callgrind.out" "http://$HOST:$IC_PORT_NGINX_HTTP$PERSON_PATH")
    b_https=$(ic_count "b nginx https" "$npid" "$d/callgrind.out" "https://$HOST:$IC_PORT_NGINX_HTTPS$PERSON_PATH")
    stop_pid "$npid"
    forget_pid "$npid"

    local c_http="" c_https=""
    if [[ $SKIP_CHASQUI != 1 ]]; then
        printf 'version: 1\nplugins: []\n' >"$WORK/policy-ic.yaml"
        local real_bin=$CHASQUI_BIN wrapper=$WORK/chasqui-under-callgrind
        # start_chasqui runs $CHASQUI_BIN for the import and the token too;
        # only `serve` goes under valgrind.
        cat >"$wrapper" <<EOF
#!/usr/bin/env bash
if [[ \$1 == serve ]]; then
    exec valgrind --tool=callgrind --callgrind-out-file="$WORK/ic-chasqui.out" "$real_bin" "\$@"
fi
exec "$real_bin" "\$@"
EOF
        chmod +x "$wrapper"
        local saved_timeout=$READY_TIMEOUT
        CHASQUI_BIN=$wrapper READY_TIMEOUT=300
        start_chasqui instructions --policy "$WORK/policy-ic.yaml"
        CHASQUI_BIN=$real_bin READY_TIMEOUT=$saved_timeout
        local auth="Authorization: Bearer $TOKEN"
        c_http=$(ic_count "c chasqui http" "$CHASQUI_PID" "$WORK/ic-chasqui.out" \
            "http://$HOST:$PORT_CHASQUI_HTTP$CHASQUI_PREFIX$PERSON_PATH" "$auth")
        c_https=$(ic_count "c chasqui https" "$CHASQUI_PID" "$WORK/ic-chasqui.out" \
            "https://$HOST:$PORT_CHASQUI_HTTPS$CHASQUI_PREFIX$PERSON_PATH" "$auth")
        stop_chasqui
    fi
    local f_http="" f_https="" t_http=""
    if [[ ${BENCH_IC_FLOOR:-0} == 1 ]]; then
        local dir fd=$WORK/ic-floor
        dir=$(floor_binaries)
        mkdir -p "$fd"
        make_cert "$fd"
        ensure_port_free "$PORT_CHASQUI_HTTP" "$PORT_CHASQUI_HTTPS"
        taskset -c "$CORE_PROXY" "${vg[@]}" --callgrind-out-file="$fd/pingora.out" \
            "$dir/pingora_floor" "$HOST:$PORT_UPSTREAM" "$HOST:$PORT_CHASQUI_HTTP" \
            "$HOST:$PORT_CHASQUI_HTTPS" "$fd/cert.pem" "$fd/key.pem" >"$fd/pingora.log" 2>&1 &
        local fpid=$!
        PIDS+=("$fpid")
        ic_wait "pingora floor under callgrind" "$fpid" "http://$HOST:$PORT_CHASQUI_HTTP$PERSON_PATH" "$fd/pingora.log"
        f_http=$(ic_count "f pingora floor http" "$fpid" "$fd/pingora.out" "http://$HOST:$PORT_CHASQUI_HTTP$PERSON_PATH")
        f_https=$(ic_count "f pingora floor https" "$fpid" "$fd/pingora.out" "https://$HOST:$PORT_CHASQUI_HTTPS$PERSON_PATH")
        stop_pid "$fpid"
        forget_pid "$fpid"
        ensure_port_free "$PORT_CHASQUI_HTTP"
        taskset -c "$CORE_PROXY" "${vg[@]}" --callgrind-out-file="$fd/tokio.out" \
            "$dir/tokio_floor" "$HOST:$PORT_UPSTREAM" "$HOST:$PORT_CHASQUI_HTTP" >"$fd/tokio.log" 2>&1 &
        fpid=$!
        PIDS+=("$fpid")
        ic_wait "tokio floor under callgrind" "$fpid" "http://$HOST:$PORT_CHASQUI_HTTP$PERSON_PATH" "$fd/tokio.log"
        t_http=$(ic_count "t tokio floor http" "$fpid" "$fd/tokio.out" "http://$HOST:$PORT_CHASQUI_HTTP$PERSON_PATH")
        stop_pid "$fpid"
        forget_pid "$fpid"
    fi

    local calls=${BENCH_IC_CALLS:-2000}
    IC_NOTES+=("instructions per call (callgrind, user space, all threads; $calls calls after ${BENCH_IC_WARMUP:-400}, ${BENCH_IC_CLIENTS:-4} keep-alive clients):")
    IC_NOTES+=("  b nginx http $b_http, https $b_https")
    if [[ -n $c_http ]]; then
        IC_NOTES+=("  c chasqui http $c_http, https $c_https")
        IC_NOTES+=("  c/b http $(awk -v c="$c_http" -v b="$b_http" 'BEGIN { printf "%.2f", c / b }'), https $(awk -v c="$c_https" -v b="$b_https" 'BEGIN { printf "%.2f", c / b }') (instructions: below 1 = chasqui does less)")
    fi
    if [[ -n $f_http ]]; then
        IC_NOTES+=("  f pingora floor http $f_http, https $f_https; t tokio floor http $t_http")
        IC_NOTES+=("  f/b http $(awk -v c="$f_http" -v b="$b_http" 'BEGIN { printf "%.2f", c / b }'), https $(awk -v c="$f_https" -v b="$b_https" 'BEGIN { printf "%.2f", c / b }'); t/b http $(awk -v c="$t_http" -v b="$b_http" 'BEGIN { printf "%.2f", c / b }')")
    fi
    local l
    for l in "${IC_NOTES[@]}"; do log "$l"; done
    REPORT_NOTES+=("${IC_NOTES[@]}")
}
