# shellcheck shell=bash
# Scenario "policies" (BENCH_SCENARIOS="policies"): what the native filters
# of a policy cost, against the same gateway without them, in the same run.
# Every variant proxies the same production call (GET /segip/v2/personas/...,
# answered by the upstream nginx) over plain HTTP with no plugin:
#   none     no rate limit, quota nor cache
#   limits   a rate limit and day/month quotas high enough never to refuse:
#            the GCRA check and the quota counters on every request
#   cache    the response cache on (shared off: keyed per consumer system);
#            after the first call every answer is a hit, the upstream idle
#   all      limits and cache together
# Ratios: each against none. Sourced by bench/run.sh.

scenario_policies() {
    if [[ $SKIP_CHASQUI == 1 ]]; then
        log "policies: skipped (BENCH_SKIP_CHASQUI=1)"
        return 0
    fi
    local url="http://$HOST:$PORT_CHASQUI_HTTP$CHASQUI_PREFIX$PERSON_PATH"
    local limits='rate_limit: {requests_per_second: 1000000, burst: 1000000}
quota: {per_day: 1000000000, per_month: 1000000000}'
    local cache='cache: {enabled: true, ttl_ms: 600000}'
    local variant policy
    for variant in none limits cache all; do
        policy=$WORK/policy-policies-$variant.yaml
        printf 'version: 1\nplugins: []\n' >"$policy"
        case $variant in
            limits) printf '%s\n' "$limits" >>"$policy" ;;
            cache) printf '%s\n' "$cache" >>"$policy" ;;
            all) printf '%s\n%s\n' "$limits" "$cache" >>"$policy" ;;
        esac
        start_chasqui "policies-$variant" --policy "$policy"
        load "f: $variant" "$url" "Authorization: Bearer $TOKEN"
        stop_chasqui
    done
    ratio "f/none http (limits)" "f: limits" "f: none"
    ratio "f/none http (cache)" "f: cache" "f: none"
    ratio "f/none http (all)" "f: all" "f: none"
}
