//! Configurations the plugin accepts and refuses, by schema and by `new`.

mod common;

use chasqui_plugin_ciudadania::Ciudadania;
use chasqui_plugin_sdk::serde_json::{json, Value};
use chasqui_plugin_sdk::testing::{Harness, HarnessError};
use chasqui_plugin_sdk::Plugin;
use common::*;

fn schema_errors(config: Value) -> String {
    match Harness::<Ciudadania>::new(config) {
        Err(HarnessError::Config(errors)) => errors.join("; "),
        other => panic!("expected a schema violation, got {other:?}"),
    }
}

fn refused_by_plugin(config: Value) -> String {
    match Harness::<Ciudadania>::new(config) {
        Err(HarnessError::Init(message)) => message,
        other => panic!("expected the plugin to refuse, got {other:?}"),
    }
}

fn pruebas_with_keys(keys: Value) -> Value {
    json!({ "issuers": { "pruebas": {
        "issuer": PRUEBAS_ISS, "audiences": [AUDIENCE], "jwks": { "keys": keys }
    }}})
}

#[test]
fn metadata_names_the_plugin_its_capabilities_and_phases() {
    let metadata = Ciudadania::METADATA;
    assert_eq!(metadata.name, "ciudadania");
    assert_eq!(
        metadata
            .capabilities
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>(),
        ["log", "kv", "clock", "crypto", "metrics", "ledger", "context"]
    );
    assert_eq!(metadata.phases.len(), 3);
}

#[test]
fn an_empty_configuration_loads_with_the_documented_defaults() {
    let mut gateway = Gateway::new(json!({}));
    // Entity routes work without any issuer: an approval request is accepted...
    let body = approval_body(0, vec![doc("a.pdf", "application/pdf", PDF)]);
    let created = gateway.post_json(&format!("{BASE}/aprobaciones"), None, &body);
    assert_eq!(created.status, 201, "{:#}", created.json);
    // ...with the 10-minute window...
    assert_eq!(created.json["expira"], "2026-01-01T00:10:00.000Z");
    // ...and the default token header is x-ciudadania-token.
    let id = created.json["id"].as_str().unwrap().to_string();
    let approve = gateway.post(&format!("{BASE}/aprobaciones/{id}/aprobar"), None);
    approve.problem(401, "token-missing");
    let approve = gateway.post(&format!("{BASE}/aprobaciones/{id}/aprobar"), Some(&token()));
    approve.problem(503, "authentication-not-configured");
}

#[test]
fn the_schema_refuses_unknown_and_mistyped_settings() {
    assert_eq!(
        schema_errors(json!({ "extra": 1 })),
        "/extra: unexpected property"
    );
    assert_eq!(
        schema_errors(json!({ "token": { "leeway": 5 } })),
        "/token/leeway: unexpected property"
    );
    assert!(
        schema_errors(json!({ "token": { "algorithms": ["HS256"] } }))
            .contains("/token/algorithms/0")
    );
    assert!(schema_errors(json!({ "token": { "algorithms": [] } })).contains("/token/algorithms"));
    assert!(schema_errors(json!({ "token": { "clock_leeway_seconds": 301 } })).contains("maximum"));
    assert!(schema_errors(json!({ "service": "Ciudadania" })).contains("/service"));
    assert!(schema_errors(json!({ "token": { "header": "x token" } })).contains("/token/header"));
    assert!(schema_errors(json!({ "approvals": { "max_documents": 0 } })).contains("minimum"));
    assert!(schema_errors(json!({ "max_body_bytes": 5 << 20 })).contains("maximum"));
    assert!(schema_errors(
        json!({ "scope_rules": [{ "path_prefix": "/x", "scopes": ["openid"] }] })
    )
    .contains("/scope_rules/0/scopes/0"));
    assert!(
        schema_errors(json!({ "scope_rules": [{ "path_prefix": "x", "scopes": ["email"] }] }))
            .contains("/scope_rules/0/path_prefix")
    );
}

#[test]
fn the_schema_refuses_incomplete_issuers_and_private_keys() {
    let errors = schema_errors(json!({ "issuers": { "pruebas": { "issuer": PRUEBAS_ISS } } }));
    assert!(
        errors.contains("audiences") && errors.contains("jwks"),
        "{errors}"
    );
    let errors = schema_errors(json!({ "issuers": { "pruebas": {
        "issuer": PRUEBAS_ISS, "audiences": [], "jwks": { "keys": [rsa_jwk()] }
    }}}));
    assert!(errors.contains("/issuers/pruebas/audiences"), "{errors}");
    let mut private = ec_jwk();
    private["d"] = json!("c2VjcmV0");
    let errors = schema_errors(pruebas_with_keys(json!([private])));
    assert!(errors.contains("/d: unexpected property"), "{errors}");
    let errors = schema_errors(pruebas_with_keys(
        json!([{ "kty": "oct", "k": "c2VjcmV0" }]),
    ));
    assert!(errors.contains("/k: unexpected property"), "{errors}");
    let errors = schema_errors(json!({ "issuers": { "staging": {} } }));
    assert!(errors.contains("/issuers/staging"), "{errors}");
}

#[test]
fn keys_the_host_cannot_use_refuse_the_configuration() {
    let mut short = rsa_jwk();
    short["n"] = json!("AQAB");
    let message = refused_by_plugin(pruebas_with_keys(json!([short])));
    assert!(
        message.contains("issuers.pruebas.jwks") && message.contains("keys[0]"),
        "{message}"
    );
    let mut not_base64 = ec_jwk();
    not_base64["x"] = json!("***");
    refused_by_plugin(pruebas_with_keys(json!([not_base64])));
    let message = refused_by_plugin(pruebas_with_keys(json!([{ "kty": "RSA", "kid": "x" }])));
    assert!(message.contains("`n` and `e`"), "{message}");
}

#[test]
fn a_set_without_a_usable_key_or_with_repeated_kids_is_refused() {
    let mut encryption = rsa_jwk();
    encryption["use"] = json!("enc");
    let message = refused_by_plugin(pruebas_with_keys(json!([encryption])));
    assert!(message.contains("no key usable"), "{message}");
    let message = refused_by_plugin(pruebas_with_keys(json!([rsa_jwk(), rsa_jwk()])));
    assert!(message.contains("repeats the kid"), "{message}");
}

#[test]
fn keys_for_other_uses_and_algorithms_are_skipped_not_fatal() {
    let mut encryption = ec_jwk();
    encryption["use"] = json!("enc");
    encryption["kid"] = json!("enc-1");
    let mut ps256 = rsa_jwk();
    ps256["alg"] = json!("PS256");
    ps256["kid"] = json!("ps-1");
    let okp = json!({ "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" });
    let config = pruebas_with_keys(json!([encryption, ps256, okp, rsa_jwk()]));
    let mut gateway = Gateway::new(config).for_service("segip/v2");
    modified(gateway.headers(&request("GET", "/segip/v2/x", Some(&token()))));
    let logs = gateway.harness.logs();
    assert_eq!(
        logs.iter()
            .filter(|r| r.message.contains("skipped"))
            .count(),
        3
    );
}

#[test]
fn the_plugin_refuses_inconsistent_settings() {
    let message = refused_by_plugin(json!({
        "approvals": { "window_seconds": 7200 },
        "retention_seconds": 3600
    }));
    assert!(message.contains("retention_seconds"), "{message}");
    let message = refused_by_plugin(json!({ "token": { "header": "X-Ciudadania-Sub" } }));
    assert!(message.contains("sets itself"), "{message}");
}
