# shellcheck shell=bash
# Scenario "plugins" (BENCH_SCENARIOS="plugins"): what each AGETIC plugin costs
# on the request path, against the plain authenticated proxy in the same run.
#
# Every variant proxies the same production call (GET /segip/v2/personas/...,
# answered by the upstream nginx) over HTTPS with one plugin bound to the
# service, as the plugin would sit in front of a service:
#   none        the plain authenticated proxy (no plugin)
#   cgii        attack detectors, blocklists and volume counting (as the
#               default policy binds it: every service)
#   ciudadania  the citizen-token filter: an RS256 JWT verified on every call
#               (signed here with the test key of plugins/ciudadania)
#   ppe, sefe   bound to a route that is not theirs: the cost of passing
#               through a plugin's phases
#   all         cgii + ciudadania + ppe + sefe chained
# Sourced by bench/run.sh, which provides load, ratio, start_chasqui, ...

# Builds the four components with the benchmarked binary; prints their folder.
plugin_components() {
    local p out=""
    for p in cgii ciudadania ppe sefe; do
        out=$("$CHASQUI_BIN" plugin build "$REPO/plugins/$p") ||
            die "chasqui plugin build plugins/$p failed"
    done
    dirname "$out"
}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# A Ciudadanía Digital access token valid for a day, RS256 with the test key.
ciudadania_jwt() {
    local key=$REPO/plugins/ciudadania/tests/fixtures/rsa-2048.pk8 now header payload input pem
    now=$(date +%s)
    header=$(printf '{"alg":"RS256","typ":"JWT","kid":"test-rsa-1"}' | b64url)
    payload=$(printf '{"iss":"https://bench.ciudadania.example","aud":"bench","sub":"5f0c2a8e-1b7d-4c3e-9a61-000000000001","iat":%d,"exp":%d,"scope":"openid profile"}' \
        "$now" $((now + 86400)) | b64url)
    input="$header.$payload"
    pem=$WORK/ciudadania-key.pem
    openssl pkcs8 -inform DER -nocrypt -in "$key" -out "$pem" 2>/dev/null ||
        die "cannot read the test key $key"
    printf '%s.%s' "$input" "$(printf '%s' "$input" | openssl dgst -sha256 -sign "$pem" -binary | b64url)"
}

# plugin_policy VARIANT COMPONENT_DIR: a policy with that variant's chain.
plugin_policy() {
    local variant=$1 dir=$2 jwk
    jwk=$(tr -d '\n' <"$REPO/plugins/ciudadania/tests/fixtures/rsa-2048.jwk.json")
    echo "version: 1"
    echo "plugins:"
    if [[ $variant == cgii || $variant == all ]]; then
        cat <<EOF
  - name: cgii
    component: $dir/chasqui-plugin-cgii.wasm
    config: {mode: block, sensitivity: medium}
    capabilities: [log, kv, metrics, context, incident]
    isolation: pooled
    services: [segip/v2]
EOF
    fi
    if [[ $variant == ciudadania || $variant == all ]]; then
        cat <<EOF
  - name: ciudadania
    component: $dir/chasqui-plugin-ciudadania.wasm
    config:
      issuers:
        produccion:
          issuer: https://bench.ciudadania.example
          audiences: [bench]
          jwks: {keys: [$jwk]}
    capabilities: [log, kv, clock, crypto, metrics, ledger, context]
    isolation: pooled
    services: [segip/v2]
EOF
    fi
    if [[ $variant == ppe || $variant == all ]]; then
        cat <<EOF
  - name: ppe
    component: $dir/chasqui-plugin-ppe.wasm
    config: {}
    capabilities: [log, kv, clock, crypto, metrics, ledger, context, metering]
    isolation: pooled
    services: [segip/v2]
EOF
    fi
    if [[ $variant == sefe || $variant == all ]]; then
        cat <<EOF
  - name: sefe
    component: $dir/chasqui-plugin-sefe.wasm
    config: {}
    capabilities: [log, kv, clock, crypto, metrics, ledger, context]
    isolation: pooled
    services: [segip/v2]
EOF
    fi
}

scenario_plugins() {
    if [[ $SKIP_CHASQUI == 1 ]]; then
        log "plugins: skipped (BENCH_SKIP_CHASQUI=1)"
        return 0
    fi
    local dir jwt url variant policy
    dir=$(plugin_components)
    jwt=$(ciudadania_jwt)
    url="https://$HOST:$PORT_CHASQUI_HTTPS$CHASQUI_PREFIX$PERSON_PATH"
    for variant in none cgii ciudadania ppe sefe all; do
        policy=$WORK/policy-$variant.yaml
        if [[ $variant == none ]]; then
            printf 'version: 1\nplugins: []\n' >"$policy"
        else
            plugin_policy "$variant" "$dir" >"$policy"
        fi
        start_chasqui "plugins-$variant" --policy "$policy"
        if [[ $variant == ciudadania || $variant == all ]]; then
            load "p: $variant" "$url" "Authorization: Bearer $TOKEN" "x-ciudadania-token: $jwt"
        else
            load "p: $variant" "$url" "Authorization: Bearer $TOKEN"
        fi
        stop_chasqui
        [[ $variant == none ]] || ratio "p/none https ($variant)" "p: $variant" "p: none"
    done
}
