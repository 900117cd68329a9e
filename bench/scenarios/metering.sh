# shellcheck shell=bash
# Scenario "metering" (BENCH_SCENARIOS="metering"): what the operational
# records, the hourly usage aggregates and the exchange entries of the audit
# ledger cost on throughput, against the same gateway with them switched off
# (`--metering false`), in the same run.
#
# Every variant proxies the same production call (GET /segip/v2/personas/...,
# answered by the upstream nginx) over plain HTTP with no plugin, so that the
# proxy's own work is the largest share and the metering cost shows:
#   off      --metering false: no record, no aggregate, no exchange entry
#   batched  --metering true --ledger-durability batched: records and
#            aggregates written in batches, the exchange appended to the
#            ledger's in-memory batch (a crash may lose the last 50 ms)
#   strict   --metering true --ledger-durability strict (the default): the
#            answer waits for the group commit of its exchange's entry
# Ratios: on/off for each. The goal: at most 10 % lower throughput.
# Sourced by bench/run.sh, which provides load, ratio, start_chasqui, ...

scenario_metering() {
    if [[ $SKIP_CHASQUI == 1 ]]; then
        log "metering: skipped (BENCH_SKIP_CHASQUI=1)"
        return 0
    fi
    local url="http://$HOST:$PORT_CHASQUI_HTTP$CHASQUI_PREFIX$PERSON_PATH" policy=$WORK/policy-metering.yaml
    printf 'version: 1\nplugins: []\n' >"$policy"
    local variant
    for variant in off batched strict; do
        case $variant in
            off) start_chasqui "metering-$variant" --policy "$policy" --metering false ;;
            *) start_chasqui "metering-$variant" --policy "$policy" --metering true --ledger-durability "$variant" ;;
        esac
        load "m: $variant" "$url" "Authorization: Bearer $TOKEN"
        stop_chasqui
    done
    ratio "m/off http (batched)" "m: batched" "m: off"
    ratio "m/off http (strict)" "m: strict" "m: off"
}
