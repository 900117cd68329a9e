# shellcheck shell=bash
# Scenario "floor" (BENCH_SCENARIOS="base floor"): pingora's own floor on
# this machine. bench/examples/pingora_floor.rs is a reverse proxy on
# pingora configured as chasqui configures it (one single-threaded worker,
# no downstream modules, mimalloc, rustls, keep-alive upstream pool) that
# does nothing of the gateway's: no routing, token, grant, record, ledger,
# metric or log. It is loaded exactly like nginx's `b` (same path, same
# upstream, pinned to the proxy cpu), so that f/b is the best c/b pingora's
# request path allows here and c/f what the gateway's work costs on top.
# bench/examples/tokio_floor.rs, a hand-written HTTP/1.1 relay on tokio
# (plain HTTP, Content-Length answers only), is loaded the same way over
# http: t/b is what a data plane that is not pingora's could start from.
# FLOOR_DIR names a directory holding both built examples (otherwise they
# are built here, before anything is loaded). Sourced by bench/run.sh.

floor_binaries() {
    if [[ -n ${FLOOR_DIR:-} ]]; then
        [[ -x $FLOOR_DIR/pingora_floor && -x $FLOOR_DIR/tokio_floor ]] ||
            die "FLOOR_DIR=$FLOOR_DIR does not hold pingora_floor and tokio_floor"
        printf '%s\n' "$FLOOR_DIR"
        return 0
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust, or set FLOOR_DIR"
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/chasqui-target}
    log "floor: building bench/examples/{pingora,tokio}_floor.rs (release)"
    (cd "$REPO" && cargo build --release -p chasqui-bench --example pingora_floor --example tokio_floor) >&2
    printf '%s\n' "$CARGO_TARGET_DIR/release/examples"
}

scenario_floor() {
    local dir bin d pid
    dir=$(floor_binaries)
    bin=$dir/pingora_floor
    if [[ -z ${R_RPS["b: nginx http"]:-} ]]; then
        # Run alone: nginx's numbers of this run are the yardstick.
        load "b: nginx http" "http://$HOST:$PORT_NGINX_HTTP$PERSON_PATH"
        load "b: nginx https" "https://$HOST:$PORT_NGINX_HTTPS$PERSON_PATH"
    fi
    d=$WORK/floor
    mkdir -p "$d"
    make_cert "$d"
    ensure_port_free "$PORT_CHASQUI_HTTPS" "$PORT_CHASQUI_HTTP"
    taskset -c "$CORE_PROXY" "$bin" "$HOST:$PORT_UPSTREAM" "$HOST:$PORT_CHASQUI_HTTP" \
        "$HOST:$PORT_CHASQUI_HTTPS" "$d/cert.pem" "$d/key.pem" >"$d/floor.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "pingora floor" "$pid" "http://$HOST:$PORT_CHASQUI_HTTP$PERSON_PATH" "$d/floor.log"
    log "pingora floor up on $HOST:$PORT_CHASQUI_HTTP (http) and $HOST:$PORT_CHASQUI_HTTPS (https), pid $pid, cpu $CORE_PROXY"
    load "f: pingora floor http" "http://$HOST:$PORT_CHASQUI_HTTP$PERSON_PATH"
    load "f: pingora floor https" "https://$HOST:$PORT_CHASQUI_HTTPS$PERSON_PATH"
    stop_pid "$pid"
    forget_pid "$pid"

    taskset -c "$CORE_PROXY" "$dir/tokio_floor" "$HOST:$PORT_UPSTREAM" "$HOST:$PORT_CHASQUI_HTTP" \
        >"$d/tokio-floor.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "tokio floor" "$pid" "http://$HOST:$PORT_CHASQUI_HTTP$PERSON_PATH" "$d/tokio-floor.log"
    log "tokio floor up on $HOST:$PORT_CHASQUI_HTTP (http), pid $pid, cpu $CORE_PROXY"
    load "t: tokio floor http" "http://$HOST:$PORT_CHASQUI_HTTP$PERSON_PATH"
    stop_pid "$pid"
    forget_pid "$pid"

    ratio "f/b http  (pingora floor / nginx)" "f: pingora floor http" "b: nginx http"
    ratio "f/b https (pingora floor / nginx)" "f: pingora floor https" "b: nginx https"
    ratio "t/b http  (tokio floor / nginx)" "t: tokio floor http" "b: nginx http"
    if [[ -n ${R_RPS["c: chasqui http"]:-} ]]; then
        ratio "c/f http  (chasqui / pingora floor)" "c: chasqui http" "f: pingora floor http"
        ratio "c/f https (chasqui / pingora floor)" "c: chasqui https" "f: pingora floor https"
    fi
}
