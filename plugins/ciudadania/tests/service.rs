//! The plugin's own service outside the record flows: userinfo, unknown routes, wrong
//! methods, and how tokens are treated on entity routes.

mod common;

use chasqui_plugin_ciudadania::CITIZENS;
use chasqui_plugin_sdk::serde_json::json;
use chasqui_plugin_sdk::HeadersAction;
use common::*;

#[test]
fn userinfo_answers_the_synthetic_citizen_with_the_granted_scopes() {
    let mut gateway = Gateway::new(config());
    let answer = gateway.get(&format!("{BASE}/userinfo"), Some(&token()));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(
        answer.json,
        json!({
            "sub": CITIZENS[0].sub,
            "profile": {
                "documento_identidad": { "numero_documento": "4785123", "tipo_documento": "CI" },
                "nombre": { "nombres": "MARÍA ELENA", "primer_apellido": "QUISPE", "segundo_apellido": "MAMANI" }
            }
        })
    );
    let all = jwt(
        Signer::Ec,
        &claims_with(|c| {
            c.insert("sub".into(), json!(CITIZENS[4].sub));
            c.insert(
                "scope".into(),
                json!("openid profile fecha_nacimiento email celular"),
            );
        }),
    );
    let answer = gateway.get(&format!("{BASE}/userinfo"), Some(&all));
    assert_eq!(answer.json["fecha_nacimiento"], "2001-12-05");
    assert_eq!(answer.json["email"], "rosa.nuflo@example.com");
    assert_eq!(answer.json["celular"], "70000005");
    assert_eq!(answer.json["profile"]["nombre"]["segundo_apellido"], "");
}

#[test]
fn userinfo_needs_a_valid_token_of_a_known_citizen() {
    let mut gateway = Gateway::new(config());
    gateway
        .get(&format!("{BASE}/userinfo"), None)
        .problem(401, "token-missing");
    let stranger = jwt(
        Signer::Rsa,
        &claims_with(|c| {
            c.insert("sub".into(), json!("not-a-synthetic-citizen"));
        }),
    );
    gateway
        .get(&format!("{BASE}/userinfo"), Some(&stranger))
        .problem(404, "citizen-not-found");
}

#[test]
fn every_synthetic_citizen_can_log_in() {
    let mut gateway = Gateway::new(config());
    for (index, citizen) in CITIZENS.iter().enumerate() {
        let answer = gateway.get(&format!("{BASE}/userinfo"), Some(&token_for(index)));
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.json["profile"]["documento_identidad"]["numero_documento"],
            citizen.ci
        );
    }
}

#[test]
fn scope_rules_apply_to_the_services_own_routes() {
    let rules = json!({ "scope_rules": [
        { "service": SERVICE, "path_prefix": "/userinfo", "scopes": ["email"] }
    ]});
    let mut gateway = Gateway::new(config_with(rules));
    gateway
        .get(&format!("{BASE}/userinfo"), Some(&token()))
        .problem(403, "insufficient-scope");
}

#[test]
fn the_test_service_answers_unknown_routes_and_methods_itself() {
    let mut gateway = Gateway::new(config());
    let detail = gateway
        .get(&format!("{BASE}/firmas"), None)
        .problem(404, "not-found");
    assert!(detail.contains("/firmas"), "{detail}");
    let answer = gateway.call(
        request("DELETE", &format!("{BASE}/aprobaciones/apr-1"), None),
        None,
    );
    answer.problem(405, "method-not-allowed");
    assert_eq!(answer.header("allow"), Some("GET"));
    let answer = gateway.get(&format!("{BASE}/aprobaciones"), None);
    answer.problem(405, "method-not-allowed");
    assert_eq!(answer.header("allow"), Some("POST"));
    let answer = gateway.post(&format!("{BASE}/userinfo"), Some(&token()));
    assert_eq!(answer.header("allow"), Some("GET"));
}

#[test]
fn production_passes_unknown_routes_and_checks_a_token_if_sent() {
    let mut gateway = Gateway::new(config()).production();
    let plain =
        request("GET", &format!("{BASE}/firmas/1"), None).with_header("x-ciudadania-sub", "forged");
    let changes = modified(gateway.headers(&plain));
    assert_eq!(changes.remove, vec!["x-ciudadania-sub"]);
    assert!(changes.set.is_empty());
    // Without anything to clean, the request goes on untouched.
    assert_eq!(
        gateway.headers(&request("PATCH", &format!("{BASE}/aprobaciones/x"), None)),
        HeadersAction::Continue
    );
    // A token that is sent must be valid...
    answered(gateway.headers(&request("GET", &format!("{BASE}/firmas/1"), Some("bad"))))
        .problem(401, "token-malformed");
    // ...and a valid one gives identity headers.
    let changes = modified(gateway.headers(&request(
        "GET",
        &format!("{BASE}/firmas/1"),
        Some(&production_token()),
    )));
    assert_eq!(
        set_value(&changes, "x-ciudadania-sub"),
        Some("prod-subject-1")
    );
}

#[test]
fn production_userinfo_passes_with_the_identity() {
    let mut gateway = Gateway::new(config()).production();
    let changes = modified(gateway.headers(&request(
        "GET",
        &format!("{BASE}/userinfo"),
        Some(&production_token()),
    )));
    assert_eq!(
        set_value(&changes, "x-ciudadania-sub"),
        Some("prod-subject-1")
    );
    assert_eq!(
        set_value(&changes, "x-ciudadania-scopes"),
        Some("openid profile")
    );
    answered(gateway.headers(&request("GET", &format!("{BASE}/userinfo"), None)))
        .problem(401, "token-missing");
}

#[test]
fn entity_routes_refuse_an_invalid_token_even_though_none_is_needed() {
    let mut gateway = Gateway::new(config());
    let expired = jwt(
        Signer::Rsa,
        &claims_with(|c| {
            c.insert("iat".into(), json!(NOW - 7200));
            c.insert("exp".into(), json!(NOW - 3600));
        }),
    );
    let body = approval_body(0, vec![doc("a.pdf", "application/pdf", PDF)]);
    gateway
        .post_json(&format!("{BASE}/aprobaciones"), Some(&expired), &body)
        .problem(401, "token-expired");
    let answer = gateway.post_json(&format!("{BASE}/aprobaciones"), Some(&token()), &body);
    assert_eq!(answer.status, 201);
}
