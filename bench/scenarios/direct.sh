# shellcheck shell=bash
# Scenario "direct" (BENCH_SCENARIOS="direct"): what the direct exchange
# (gateway/src/proxy/direct.rs: bodiless calls proxied by the gateway's own
# loop on pingora's HTTP/1 client) gains over
# pingora's general proxy loop, in the same run, from the same binary:
#   general  --direct-exchange false: every call through pingora-proxy's loop
#   direct   --direct-exchange true (the default)
# Both proxy the `base` call (GET /segip/v2/personas/..., the upstream nginx
# answering, default metering) over plain HTTP and over HTTPS. Ratio:
# direct/general per round and the median of the rounds' (rounds:
# BENCH_DIRECT_ROUNDS, default 3; one after the other, general first).
# Sourced by bench/run.sh, which provides load, ratio, start_chasqui, ...

scenario_direct() {
    if [[ $SKIP_CHASQUI == 1 ]]; then
        log "direct: skipped (BENCH_SKIP_CHASQUI=1)"
        return 0
    fi
    local http="http://$HOST:$PORT_CHASQUI_HTTP$CHASQUI_PREFIX$PERSON_PATH"
    local https="https://$HOST:$PORT_CHASQUI_HTTPS$CHASQUI_PREFIX$PERSON_PATH"
    local policy=$WORK/policy-direct.yaml
    printf 'version: 1\nplugins: []\n' >"$policy"
    local variant round rounds=${BENCH_DIRECT_ROUNDS:-3}
    local generals="" directs="" generals_tls="" directs_tls=""
    [[ $rounds =~ ^[1-9][0-9]*$ ]] || die "BENCH_DIRECT_ROUNDS must be a positive integer"
    for ((round = 1; round <= rounds; round++)); do
        for variant in general direct; do
            local on=false
            [[ $variant == direct ]] && on=true
            start_chasqui "direct-$variant" --policy "$policy" --direct-exchange "$on"
            load "d: $variant http #$round" "$http" "Authorization: Bearer $TOKEN"
            load "d: $variant https #$round" "$https" "Authorization: Bearer $TOKEN"
            stop_chasqui
        done
        ratio "d/general http #$round" "d: direct http #$round" "d: general http #$round"
        ratio "d/general https #$round" "d: direct https #$round" "d: general https #$round"
        generals+="${generals:+,}d: general http #$round" directs+="${directs:+,}d: direct http #$round"
        generals_tls+="${generals_tls:+,}d: general https #$round"
        directs_tls+="${directs_tls:+,}d: direct https #$round"
    done
    median_ratio "d/general http median" "$directs" "$generals"
    median_ratio "d/general https median" "$directs_tls" "$generals_tls"
}
