//! The authentication filter, on a service other than the plugin's own (`segip/v2`):
//! every way a token can be wrong, scopes, identity headers and header hygiene.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chasqui_plugin_sdk::serde_json::{json, Value};
use chasqui_plugin_sdk::RequestHead;
use common::*;

const PATH: &str = "/segip/v2/personas/4785123?campos=todos";

fn filter(config: Value) -> Gateway {
    Gateway::new(config).for_service("segip/v2")
}

fn with_token(token: &str) -> RequestHead {
    request("GET", PATH, Some(token))
}

/// The 401/403 answer to a request with `token`, its slug checked; returns the
/// `WWW-Authenticate` value.
fn refused(gateway: &mut Gateway, token: &str, status: u16, slug: &str) -> String {
    let answer = answered(gateway.headers(&with_token(token)));
    answer.problem(status, slug);
    answer
        .header("www-authenticate")
        .expect("a WWW-Authenticate field")
        .to_string()
}

fn expect_invalid_token(gateway: &mut Gateway, token: &str, slug: &str) {
    let challenge = refused(gateway, token, 401, slug);
    assert!(
        challenge.starts_with("Bearer realm=\"ciudadania\", error=\"invalid_token\""),
        "{challenge}"
    );
}

#[test]
fn a_valid_rs256_token_passes_with_the_citizens_identity() {
    let mut gateway = filter(config());
    let request = with_token(&token())
        .with_header("x-ciudadania-sub", "forged")
        .with_header("X-Ciudadania-CI", "0000000");
    let changes = modified(gateway.headers(&request));
    assert_eq!(
        set_value(&changes, "x-ciudadania-sub"),
        Some(chasqui_plugin_ciudadania::CITIZENS[0].sub)
    );
    // In pruebas, what the token leaves out comes from the synthetic citizen.
    assert_eq!(set_value(&changes, "x-ciudadania-ci"), Some("4785123"));
    assert_eq!(
        set_value(&changes, "x-ciudadania-nombre"),
        Some("MAR%C3%8DA ELENA QUISPE MAMANI")
    );
    assert_eq!(
        set_value(&changes, "x-ciudadania-scopes"),
        Some("openid profile")
    );
    // Optional data needs its scope.
    assert_eq!(set_value(&changes, "x-ciudadania-email"), None);
    // Forged identity fields and the raw token are removed.
    for name in ["x-ciudadania-sub", "x-ciudadania-ci", "x-ciudadania-token"] {
        assert!(
            changes.remove.iter().any(|r| r == name),
            "{name} not removed"
        );
    }
    assert!(!changes.remove.iter().any(|r| r == "authorization"));
    assert_eq!(
        gateway
            .harness
            .counter("tokens_total", &[("result", "valid")]),
        1
    );
}

#[test]
fn a_valid_es256_token_passes() {
    let mut gateway = filter(config());
    let changes = modified(gateway.headers(&with_token(&jwt(Signer::Ec, &claims()))));
    assert!(set_value(&changes, "x-ciudadania-sub").is_some());
}

#[test]
fn a_bearer_scheme_in_the_token_header_is_accepted() {
    let mut gateway = filter(config());
    let changes = modified(gateway.headers(&with_token(&format!("Bearer {}", token()))));
    assert!(set_value(&changes, "x-ciudadania-sub").is_some());
}

#[test]
fn the_token_is_forwarded_only_when_configured() {
    let mut gateway = filter(config_with(json!({ "token": { "forward": true } })));
    let changes = modified(gateway.headers(&with_token(&token())));
    assert!(!changes.remove.iter().any(|r| r == "x-ciudadania-token"));
    assert!(set_value(&changes, "x-ciudadania-sub").is_some());
}

#[test]
fn a_configured_header_carries_the_token() {
    let mut gateway = filter(config_with(json!({ "token": { "header": "X-CD-Token" } })));
    let request = request("GET", PATH, None).with_header("x-cd-token", token());
    let changes = modified(gateway.headers(&request));
    assert!(changes.remove.iter().any(|r| r == "x-cd-token"));
    // The default header is then just a forged field.
    let answer = answered(gateway.headers(&with_token(&token())));
    answer.problem(401, "token-missing");
}

#[test]
fn a_missing_token_is_401_invalid_request() {
    let mut gateway = filter(config());
    let answer = answered(gateway.headers(&request("GET", PATH, None)));
    let detail = answer.problem(401, "token-missing");
    assert!(detail.contains("x-ciudadania-token"), "{detail}");
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Bearer realm=\"ciudadania\", error=\"invalid_request\", error_description=\"token missing\"")
    );
    assert_eq!(
        gateway
            .harness
            .counter("tokens_total", &[("result", "missing")]),
        1
    );
}

#[test]
fn a_repeated_token_header_is_refused() {
    let mut gateway = filter(config());
    let request = with_token(&token()).with_header("x-ciudadania-token", token());
    let answer = answered(gateway.headers(&request));
    answer.problem(401, "token-malformed");
    assert!(answer
        .header("www-authenticate")
        .unwrap()
        .contains("error=\"invalid_request\""));
}

#[test]
fn malformed_tokens_are_refused() {
    let mut gateway = filter(config());
    let valid = token();
    let parts: Vec<&str> = valid.split('.').collect();
    let not_json = URL_SAFE_NO_PAD.encode(b"not json");
    let array = URL_SAFE_NO_PAD.encode(b"[1,2]");
    for bad in [
        String::new(),
        "abc".to_string(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{valid}.extra"),
        format!("{not_json}.{}.{}", parts[1], parts[2]),
        format!("{array}.{}.{}", parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], parts[1], "!!!"),
        format!("{}.{}.{}", parts[0], parts[1], "a".repeat(20_000)),
    ] {
        expect_invalid_token(&mut gateway, &bad, "token-malformed");
    }
    // A correctly signed payload that is not a JSON object.
    let input = format!("{}.{}", b64_json(&Signer::Rsa.header()), not_json);
    let signature = URL_SAFE_NO_PAD.encode(Signer::Rsa.sign(input.as_bytes()));
    expect_invalid_token(
        &mut gateway,
        &format!("{input}.{signature}"),
        "token-malformed",
    );
    // Critical extensions are not understood, so refused.
    let header = json!({ "alg": "RS256", "kid": "test-rsa-1", "crit": ["exp"] });
    expect_invalid_token(
        &mut gateway,
        &jwt_with_header(Signer::Rsa, &header, &claims()),
        "token-malformed",
    );
}

#[test]
fn alg_none_hs256_and_unconfigured_algorithms_are_refused() {
    let mut gateway = filter(config());
    let payload = b64_json(&claims());
    let none = format!("{}.{payload}.", b64_json(&json!({ "alg": "none" })));
    expect_invalid_token(&mut gateway, &none, "token-algorithm");
    // The classic confusion attack: HS256 with the public key as the HMAC secret.
    let header = b64_json(&json!({ "alg": "HS256", "kid": "test-rsa-1" }));
    let input = format!("{header}.{payload}");
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        rsa_jwk()["n"].as_str().unwrap().as_bytes(),
    );
    let mac = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, input.as_bytes()).as_ref());
    let answer = answered(gateway.headers(&with_token(&format!("{input}.{mac}"))));
    let detail = answer.problem(401, "token-algorithm");
    assert!(detail.contains("HS256"), "{detail}");
    let rs512 = jwt_with_header(
        Signer::Rsa,
        &json!({ "alg": "RS512", "kid": "test-rsa-1" }),
        &claims(),
    );
    expect_invalid_token(&mut gateway, &rs512, "token-algorithm");
    assert_eq!(
        gateway
            .harness
            .counter("tokens_total", &[("result", "algorithm")]),
        3
    );

    // With only ES256 accepted, a valid RS256 token is refused too (the RSA key of the
    // set is skipped as unusable).
    let mut es_only = filter(json!({
        "token": { "algorithms": ["ES256"] },
        "issuers": { "pruebas": config()["issuers"]["pruebas"].clone() }
    }));
    expect_invalid_token(&mut es_only, &token(), "token-algorithm");
    assert!(
        modified(es_only.headers(&with_token(&jwt(Signer::Ec, &claims()))))
            .set
            .iter()
            .any(|h| h.name == "x-ciudadania-sub")
    );
}

#[test]
fn an_unknown_kid_is_refused() {
    let mut gateway = filter(config());
    let header = json!({ "alg": "RS256", "kid": "rotated-away" });
    expect_invalid_token(
        &mut gateway,
        &jwt_with_header(Signer::Rsa, &header, &claims()),
        "token-key-unknown",
    );
    // A kid naming a key of the other algorithm does not select it either.
    let header = json!({ "alg": "RS256", "kid": "test-ec-1" });
    expect_invalid_token(
        &mut gateway,
        &jwt_with_header(Signer::Rsa, &header, &claims()),
        "token-key-unknown",
    );
}

#[test]
fn a_token_without_kid_is_tried_against_the_keys_of_its_algorithm() {
    let mut gateway = filter(config());
    let header = json!({ "alg": "ES256", "typ": "JWT" });
    let changes = modified(gateway.headers(&with_token(&jwt_with_header(
        Signer::Ec,
        &header,
        &claims(),
    ))));
    assert!(set_value(&changes, "x-ciudadania-sub").is_some());
    let forged = jwt_with_header(Signer::Untrusted, &header, &claims());
    expect_invalid_token(&mut gateway, &forged, "token-signature");
}

#[test]
fn bad_signatures_are_refused() {
    let mut gateway = filter(config());
    // The payload changed after signing (another citizen).
    let valid = token();
    let parts: Vec<&str> = valid.split('.').collect();
    let other = b64_json(&claims_with(|c| {
        c.insert(
            "sub".into(),
            json!(chasqui_plugin_ciudadania::CITIZENS[1].sub),
        );
    }));
    expect_invalid_token(
        &mut gateway,
        &format!("{}.{other}.{}", parts[0], parts[2]),
        "token-signature",
    );
    // Signed by a key nobody trusts, claiming a trusted kid.
    let forged = jwt_with_header(Signer::Untrusted, &Signer::Ec.header(), &claims());
    expect_invalid_token(&mut gateway, &forged, "token-signature");
    // An ES256 signature of the wrong length.
    let ec = jwt(Signer::Ec, &claims());
    let (input, _) = ec.rsplit_once('.').unwrap();
    expect_invalid_token(
        &mut gateway,
        &format!("{input}.{}", URL_SAFE_NO_PAD.encode([1u8; 63])),
        "token-signature",
    );
    assert_eq!(
        gateway
            .harness
            .counter("tokens_total", &[("result", "signature")]),
        3
    );
}

#[test]
fn expiry_is_checked_with_the_leeway() {
    let mut gateway = filter(config());
    let exp = |exp: u64| {
        jwt(
            Signer::Rsa,
            &claims_with(|c| {
                c.insert("iat".into(), json!(NOW - 3600));
                c.insert("exp".into(), json!(exp));
            }),
        )
    };
    // 30 s past exp is within the default 60 s leeway.
    assert!(matches!(
        gateway.headers(&with_token(&exp(NOW - 30))),
        chasqui_plugin_sdk::HeadersAction::Modify(_)
    ));
    expect_invalid_token(&mut gateway, &exp(NOW - 60), "token-expired");
    // The host clock decides: a valid token expires as time passes.
    let fresh = token();
    gateway
        .harness
        .advance(std::time::Duration::from_secs(600 + 60));
    expect_invalid_token(&mut gateway, &fresh, "token-expired");

    let mut strict = filter(config_with(
        json!({ "token": { "clock_leeway_seconds": 0 } }),
    ));
    expect_invalid_token(&mut strict, &exp(NOW), "token-expired");
    expect_invalid_token(&mut strict, &exp(NOW - 1), "token-expired");
    // A token without exp is malformed.
    let no_exp = jwt(
        Signer::Rsa,
        &claims_with(|c| {
            c.remove("exp");
        }),
    );
    expect_invalid_token(&mut strict, &no_exp, "token-malformed");
    let text_exp = jwt(
        Signer::Rsa,
        &claims_with(|c| {
            c.insert("exp".into(), json!("tomorrow"));
        }),
    );
    expect_invalid_token(&mut strict, &text_exp, "token-malformed");
}

#[test]
fn not_before_and_issued_at_are_checked() {
    let mut gateway = filter(config());
    let nbf = |nbf: u64| {
        jwt(
            Signer::Rsa,
            &claims_with(|c| {
                c.insert("nbf".into(), json!(nbf));
            }),
        )
    };
    assert!(matches!(
        gateway.headers(&with_token(&nbf(NOW + 60))),
        chasqui_plugin_sdk::HeadersAction::Modify(_)
    ));
    expect_invalid_token(&mut gateway, &nbf(NOW + 61), "token-not-yet-valid");
    let iat = |iat: u64| {
        jwt(
            Signer::Rsa,
            &claims_with(|c| {
                c.insert("iat".into(), json!(iat));
                c.insert("exp".into(), json!(NOW + 7200));
            }),
        )
    };
    expect_invalid_token(&mut gateway, &iat(NOW + 120), "token-issued-in-future");
    // iat within the leeway but after exp: inconsistent, so malformed.
    let after_exp = jwt(
        Signer::Rsa,
        &claims_with(|c| {
            c.insert("exp".into(), json!(NOW + 40));
            c.insert("iat".into(), json!(NOW + 50));
        }),
    );
    expect_invalid_token(&mut gateway, &after_exp, "token-malformed");
}

#[test]
fn a_maximum_age_refuses_old_tokens_and_needs_iat() {
    let mut gateway = filter(config_with(json!({ "token": { "max_age_seconds": 300 } })));
    let issued = |iat: u64| {
        jwt(
            Signer::Rsa,
            &claims_with(|c| {
                c.insert("iat".into(), json!(iat));
                c.insert("exp".into(), json!(NOW + 3600));
            }),
        )
    };
    assert!(matches!(
        gateway.headers(&with_token(&issued(NOW - 300))),
        chasqui_plugin_sdk::HeadersAction::Modify(_)
    ));
    expect_invalid_token(&mut gateway, &issued(NOW - 361), "token-too-old");
    let no_iat = jwt(
        Signer::Rsa,
        &claims_with(|c| {
            c.remove("iat");
        }),
    );
    expect_invalid_token(&mut gateway, &no_iat, "token-malformed");
}

#[test]
fn issuer_and_audience_must_match() {
    let mut gateway = filter(config());
    let with = |name: &str, value: Value| {
        let name = name.to_string();
        jwt(
            Signer::Rsa,
            &claims_with(move |c| {
                c.insert(name, value);
            }),
        )
    };
    expect_invalid_token(
        &mut gateway,
        &with("iss", json!("https://evil.example")),
        "token-issuer",
    );
    expect_invalid_token(
        &mut gateway,
        &with("iss", json!(PRODUCCION_ISS)),
        "token-issuer",
    );
    expect_invalid_token(
        &mut gateway,
        &with("aud", json!("otra-entidad")),
        "token-audience",
    );
    expect_invalid_token(&mut gateway, &with("aud", json!([])), "token-audience");
    expect_invalid_token(&mut gateway, &with("aud", json!(7)), "token-audience");
    let no_aud = jwt(
        Signer::Rsa,
        &claims_with(|c| {
            c.remove("aud");
        }),
    );
    expect_invalid_token(&mut gateway, &no_aud, "token-audience");
    // An audience array naming the accepted audience passes.
    assert!(matches!(
        gateway.headers(&with_token(&with("aud", json!(["other", AUDIENCE])))),
        chasqui_plugin_sdk::HeadersAction::Modify(_)
    ));
}

#[test]
fn the_subject_must_be_usable() {
    let mut gateway = filter(config());
    for sub in [json!(null), json!(""), json!(12), json!("a\nb")] {
        let token = jwt(
            Signer::Rsa,
            &claims_with(|c| {
                c.insert("sub".into(), sub);
            }),
        );
        expect_invalid_token(&mut gateway, &token, "token-subject");
    }
}

#[test]
fn openid_and_profile_are_always_required() {
    let mut gateway = filter(config());
    let scoped = |scope: &str| {
        let scope = scope.to_string();
        jwt(
            Signer::Rsa,
            &claims_with(move |c| {
                c.insert("scope".into(), json!(scope));
            }),
        )
    };
    let challenge = refused(&mut gateway, &scoped("openid"), 403, "insufficient-scope");
    assert_eq!(
        challenge,
        "Bearer realm=\"ciudadania\", error=\"insufficient_scope\", error_description=\"insufficient scope\", scope=\"openid profile\""
    );
    refused(
        &mut gateway,
        &scoped("profile email"),
        403,
        "insufficient-scope",
    );
    let no_scope = jwt(
        Signer::Rsa,
        &claims_with(|c| {
            c.remove("scope");
        }),
    );
    refused(&mut gateway, &no_scope, 403, "insufficient-scope");
    assert_eq!(
        gateway
            .harness
            .counter("tokens_total", &[("result", "insufficient_scope")]),
        3
    );
}

#[test]
fn scope_rules_add_scopes_by_service_path_and_method() {
    let rules = json!({ "scope_rules": [
        { "path_prefix": "/personas", "methods": ["GET"], "scopes": ["fecha_nacimiento", "email"] },
        { "service": "sin/v1", "path_prefix": "/", "scopes": ["celular"] },
        { "path_prefix": "/personas", "methods": ["POST"], "scopes": ["offline_access"] }
    ]});
    let mut gateway = filter(config_with(rules.clone()));
    let answer = answered(gateway.headers(&with_token(&token())));
    let detail = answer.problem(403, "insufficient-scope");
    assert!(detail.contains("fecha_nacimiento email"), "{detail}");
    assert!(answer
        .header("www-authenticate")
        .unwrap()
        .ends_with("scope=\"openid profile fecha_nacimiento email\""));

    let granted = jwt(
        Signer::Rsa,
        &claims_with(|c| {
            c.insert(
                "scope".into(),
                json!("openid profile email fecha_nacimiento"),
            );
        }),
    );
    let changes = modified(gateway.headers(&with_token(&granted)));
    assert_eq!(
        set_value(&changes, "x-ciudadania-email"),
        Some("maria.quispe@example.com")
    );
    assert_eq!(
        set_value(&changes, "x-ciudadania-fecha-nacimiento"),
        Some("1988-03-14")
    );
    assert_eq!(set_value(&changes, "x-ciudadania-celular"), None);

    // Another path (segment-wise), and another service, need only the base scopes.
    let other = request("GET", "/segip/v2/personasx/1", Some(&token()));
    assert!(matches!(
        gateway.headers(&other),
        chasqui_plugin_sdk::HeadersAction::Modify(_)
    ));
    let mut sin = Gateway::new(config_with(rules)).for_service("sin/v1");
    let answer = answered(sin.headers(&request("GET", "/sin/v1/personas/1", Some(&granted))));
    let detail = answer.problem(403, "insufficient-scope");
    assert!(detail.contains("celular"), "{detail}");
}

#[test]
fn each_environment_trusts_its_own_issuer() {
    let mut production = filter(config()).production();
    // A test token is not a production token.
    expect_invalid_token(&mut production, &token(), "token-issuer");
    // The production issuer does not trust the test EC key.
    let ec = jwt(
        Signer::Ec,
        &claims_with(|c| {
            c.insert("iss".into(), json!(PRODUCCION_ISS));
        }),
    );
    expect_invalid_token(&mut production, &ec, "token-key-unknown");
    let changes = modified(production.headers(&with_token(&production_token())));
    assert_eq!(
        set_value(&changes, "x-ciudadania-sub"),
        Some("prod-subject-1")
    );
    assert_eq!(set_value(&changes, "x-ciudadania-ci"), Some("1234567"));
    assert_eq!(
        set_value(&changes, "x-ciudadania-nombre"),
        Some("JOS%C3%89 P%C3%89REZ")
    );
}

#[test]
fn production_identity_comes_only_from_the_token() {
    let mut production = filter(config()).production();
    let bare = jwt(
        Signer::Rsa,
        &claims_with(|c| {
            c.insert("iss".into(), json!(PRODUCCION_ISS));
        }),
    );
    let changes = modified(production.headers(&with_token(&bare)));
    // The synthetic citizen's data is never used in production.
    assert_eq!(set_value(&changes, "x-ciudadania-ci"), None);
    assert_eq!(set_value(&changes, "x-ciudadania-nombre"), None);
}

#[test]
fn an_environment_without_issuer_refuses_with_503() {
    let mut gateway = filter(json!({}));
    let answer = answered(gateway.headers(&with_token(&token())));
    let detail = answer.problem(503, "authentication-not-configured");
    assert!(detail.contains("issuers.pruebas"), "{detail}");
    // A missing token is still a 401.
    answered(gateway.headers(&request("GET", PATH, None))).problem(401, "token-missing");
}

#[test]
fn filter_mode_keeps_no_request_state() {
    let mut gateway = filter(config());
    modified(gateway.headers(&with_token(&token())));
    let chunk = chasqui_plugin_sdk::BodyChunk::new(b"payload".to_vec(), true);
    assert_eq!(
        gateway.harness.request_body(&chunk),
        chasqui_plugin_sdk::BodyAction::Continue
    );
    let head = chasqui_plugin_sdk::ResponseHead::new(200);
    assert_eq!(
        gateway.harness.response_headers(&head),
        chasqui_plugin_sdk::HeadersAction::Continue
    );
    assert!(gateway.harness.ledger().is_empty());
}
