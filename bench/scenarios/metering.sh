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
#
# The three variants run BENCH_METERING_ROUNDS times (default 3), one round
# after the other (off, batched, strict, off, ...); each round's ratios are
# printed, and the median of the rounds' ratios: one round's figure moved by
# up to 0.1 between runs on this machine kind (checkpoint and writeback
# timing falls differently in a 10 s window).
# Sourced by bench/run.sh, which provides load, ratio, start_chasqui, ...

scenario_metering() {
    if [[ $SKIP_CHASQUI == 1 ]]; then
        log "metering: skipped (BENCH_SKIP_CHASQUI=1)"
        return 0
    fi
    local url="http://$HOST:$PORT_CHASQUI_HTTP$CHASQUI_PREFIX$PERSON_PATH" policy=$WORK/policy-metering.yaml
    printf 'version: 1\nplugins: []\n' >"$policy"
    local variant round rounds=${BENCH_METERING_ROUNDS:-3} offs="" batched="" stricts=""
    [[ $rounds =~ ^[1-9][0-9]*$ ]] || die "BENCH_METERING_ROUNDS must be a positive integer"
    for ((round = 1; round <= rounds; round++)); do
        for variant in off batched strict; do
            case $variant in
                off) start_chasqui "metering-$variant" --policy "$policy" --metering false ;;
                *) start_chasqui "metering-$variant" --policy "$policy" --metering true --ledger-durability "$variant" ;;
            esac
            load "m: $variant #$round" "$url" "Authorization: Bearer $TOKEN"
            stop_chasqui
        done
        ratio "m/off http (batched) #$round" "m: batched #$round" "m: off #$round"
        ratio "m/off http (strict) #$round" "m: strict #$round" "m: off #$round"
        offs+="${offs:+,}m: off #$round" batched+="${batched:+,}m: batched #$round"
        stricts+="${stricts:+,}m: strict #$round"
    done
    median_ratio "m/off http (batched) median" "$batched" "$offs"
    median_ratio "m/off http (strict) median" "$stricts" "$offs"
}
