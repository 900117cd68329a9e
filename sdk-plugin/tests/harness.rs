//! The native harness and host fakes, exercised through a plugin that uses every capability.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chasqui_plugin_sdk::host::{
    self, context::Context, crypto::Algorithm, kv::KvError, log::Level,
};
use chasqui_plugin_sdk::serde_json::{json, Value};
use chasqui_plugin_sdk::testing::{Harness, HarnessError, MetricKind, SchemaError};
use chasqui_plugin_sdk::*;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::Deserialize;
use std::time::Duration;

/// Uses every host interface; its behaviour is steered by the request path.
struct Everything {
    greeting: String,
    seen: Vec<u8>,
}

#[derive(Deserialize)]
struct EverythingConfig {
    greeting: String,
}

impl Plugin for Everything {
    type Config = EverythingConfig;
    const METADATA: Metadata = Metadata {
        name: "everything",
        version: "1.2.3-rc.1",
        capabilities: &Capability::ALL,
        phases: &[
            Phase::RequestHeaders,
            Phase::RequestBody,
            Phase::ResponseHeaders,
            Phase::ResponseBody,
        ],
        config_schema: r#"{
            "type": "object",
            "properties": { "greeting": { "type": "string", "minLength": 1 } },
            "required": ["greeting"],
            "additionalProperties": false
        }"#,
    };

    fn new(config: EverythingConfig) -> Result<Self, String> {
        if config.greeting == "refuse" {
            return Err("greeting must not be `refuse`".into());
        }
        let context = host::context::get();
        host::log::debug(&format!(
            "configured; service during init: {:?}",
            context.service
        ));
        Ok(Everything {
            greeting: config.greeting,
            seen: Vec::new(),
        })
    }

    fn on_request_headers(&mut self, request: &RequestHead) -> HeadersAction {
        let context = host::context::get();
        match request.path.as_str() {
            "/kv" => {
                let count = match host::kv::get("count") {
                    Ok(Some(bytes)) => bytes.first().copied().unwrap_or(0),
                    Ok(None) => 0,
                    Err(err) => {
                        return HeadersAction::Respond(
                            Response::new(503).with_body(err.to_string()),
                        )
                    }
                };
                if let Err(err) =
                    host::kv::set("count", &[count + 1], Some(Duration::from_secs(60)))
                {
                    return HeadersAction::Respond(Response::new(503).with_body(err.to_string()));
                }
                HeadersAction::Modify(HeaderChanges::new().set("x-count", (count + 1).to_string()))
            }
            "/ledger" => {
                match host::ledger::append("test.evidence", &json!({"path": request.path})) {
                    Ok(receipt) => HeadersAction::Modify(
                        HeaderChanges::new()
                            .set("x-ledger", format!("{}:{}", receipt.position, receipt.hash)),
                    ),
                    Err(err) => HeadersAction::Respond(Response::problem(
                        503,
                        "about:blank",
                        "Ledger",
                        &err.to_string(),
                    )),
                }
            }
            "/bad-status" => HeadersAction::Respond(Response::new(99)),
            "/bad-metric" => {
                host::metrics::counter_add("Bad-Name", 1, &[]);
                HeadersAction::Continue
            }
            _ => {
                let started = host::clock::monotonic_ns();
                host::log::info(&format!(
                    "{} from {:?}",
                    self.greeting, context.consumer_entity
                ));
                host::metrics::counter_add("requests_total", 1, &[("method", &request.method)]);
                let elapsed = host::clock::monotonic_ns() - started;
                host::metrics::histogram_record("latency_ns", elapsed as f64, &[]);
                HeadersAction::Modify(
                    HeaderChanges::new()
                        .set("X-Request-Id", context.request_id)
                        .set("x-now", host::clock::now_ms().to_string())
                        .remove("Authorization"),
                )
            }
        }
    }

    fn on_request_body(&mut self, chunk: &BodyChunk) -> BodyAction {
        // Hold the body back and pass on its digest at the end.
        self.seen.extend_from_slice(&chunk.data);
        if chunk.end_of_stream {
            BodyAction::Replace(host::crypto::sha256(&self.seen).to_vec())
        } else {
            BodyAction::Replace(Vec::new())
        }
    }

    fn on_response_headers(&mut self, response: &ResponseHead) -> HeadersAction {
        if response.status >= 500 {
            host::log::warn("upstream failed");
            return HeadersAction::Respond(Response::problem(
                502,
                "about:blank",
                "Bad Gateway",
                "upstream failed",
            ));
        }
        HeadersAction::Continue
    }

    fn on_response_body(&mut self, chunk: &BodyChunk) -> BodyAction {
        let mac = host::crypto::hmac_sha256(self.greeting.as_bytes(), &chunk.data);
        BodyAction::Replace(mac.to_vec())
    }

    fn on_request_end(&mut self) {
        self.seen.clear();
    }
}

export_plugin!(Everything);

fn everything() -> Harness<Everything> {
    Harness::new(json!({"greeting": "hola"})).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn headers_phase_sees_the_fakes_and_returns_changes() {
    let mut harness = everything();
    let request = RequestHead::new("GET", "/x").with_header("Authorization", "Bearer t");
    assert_eq!(request.header("authorization"), Some("Bearer t"));
    let action = harness.request_headers(&request);
    let expected = HeaderChanges::new()
        .set("x-request-id", "test-request")
        .set("x-now", "1767225600000")
        .remove("authorization");
    assert_eq!(action, HeadersAction::Modify(expected));

    let logs = harness.logs();
    assert_eq!(logs[0].level, Level::Debug);
    assert_eq!(logs[0].message, "configured; service during init: \"\"");
    assert_eq!(logs[1].level, Level::Info);
    assert_eq!(logs[1].message, "hola from Some(\"test-entity\")");
    assert_eq!(harness.counter("requests_total", &[("method", "GET")]), 1);
    assert_eq!(harness.counter("requests_total", &[]), 0);
    assert_eq!(harness.histogram("latency_ns", &[]), vec![0.0]);
    assert_eq!(
        harness
            .metrics()
            .iter()
            .filter(|m| m.kind == MetricKind::Histogram)
            .count(),
        1
    );
}

#[test]
fn context_and_clock_are_set_by_the_test() {
    let mut harness = everything();
    harness.set_context(Context {
        request_id: "r-42".into(),
        ..Context::default()
    });
    harness.set_now_ms(5);
    harness.advance(Duration::from_millis(7));
    let HeadersAction::Modify(changes) = harness.request_headers(&RequestHead::new("GET", "/"))
    else {
        panic!("expected changes");
    };
    assert_eq!(changes.set[0], Header::new("x-request-id", "r-42"));
    assert_eq!(changes.set[1], Header::new("x-now", "12"));
    assert_eq!(harness.logs()[1].message, "hola from None");
}

#[test]
fn kv_state_persists_across_requests_and_expires() {
    let mut harness = everything();
    let count = |harness: &mut Harness<Everything>| {
        harness.request_headers(&RequestHead::new("GET", "/kv"))
    };
    assert_eq!(
        count(&mut harness),
        HeadersAction::Modify(HeaderChanges::new().set("x-count", "1"))
    );
    assert_eq!(
        count(&mut harness),
        HeadersAction::Modify(HeaderChanges::new().set("x-count", "2"))
    );
    assert_eq!(harness.kv_get("count"), Some(vec![2]));
    harness.advance(Duration::from_secs(60));
    assert_eq!(harness.kv_get("count"), None);
    harness.kv_set("count", &[9], None);
    assert_eq!(
        count(&mut harness),
        HeadersAction::Modify(HeaderChanges::new().set("x-count", "10"))
    );

    harness.fail_kv(Some(KvError::Unavailable("down".into())));
    let HeadersAction::Respond(response) = count(&mut harness) else {
        panic!("expected a response")
    };
    assert_eq!(
        (response.status, response.body),
        (503, b"key-value store unavailable: down".to_vec())
    );
}

#[test]
fn ledger_entries_are_chained_and_failures_reported() {
    let mut harness = everything();
    harness.request_headers(&RequestHead::new("POST", "/ledger"));
    harness.request_headers(&RequestHead::new("POST", "/ledger"));
    let entries = harness.ledger();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].kind, "test.evidence");
    assert_eq!(entries[0].payload, json!({"path": "/ledger"}));
    assert_eq!(entries[1].receipt.position, 1);
    assert_eq!(entries[1].receipt.hash.len(), 64);
    assert_ne!(entries[0].receipt.hash, entries[1].receipt.hash);

    harness.fail_ledger(Some("full"));
    let HeadersAction::Respond(response) =
        harness.request_headers(&RequestHead::new("POST", "/ledger"))
    else {
        panic!("expected a response");
    };
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        response.headers,
        vec![Header::new("content-type", "application/problem+json")]
    );
    assert_eq!(
        body,
        json!({"type": "about:blank", "title": "Ledger", "status": 503, "detail": "ledger append refused: full"})
    );
}

#[test]
fn body_phases_hold_back_replace_and_reset() {
    let mut harness = everything();
    assert_eq!(
        harness.request_body(&BodyChunk::new("ab", false)),
        BodyAction::Replace(vec![])
    );
    let BodyAction::Replace(digest) = harness.request_body(&BodyChunk::new("c", true)) else {
        panic!()
    };
    assert_eq!(
        hex(&digest),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    harness.end_request();
    assert!(harness.plugin().seen.is_empty());

    // RFC 4231, test case 2.
    let mut jefe = Harness::<Everything>::new(json!({"greeting": "Jefe"})).unwrap();
    let BodyAction::Replace(mac) =
        jefe.response_body(&BodyChunk::new("what do ya want for nothing?", true))
    else {
        panic!()
    };
    assert_eq!(
        hex(&mac),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // Each harness has its own host.
    assert_eq!(jefe.logs().len(), 1);
    assert_eq!(harness.logs().len(), 1);
}

#[test]
fn response_headers_can_answer() {
    let mut harness = everything();
    assert_eq!(
        harness.response_headers(&ResponseHead::new(200)),
        HeadersAction::Continue
    );
    let HeadersAction::Respond(response) = harness.response_headers(&ResponseHead::new(503)) else {
        panic!()
    };
    assert_eq!(response.status, 502);
    assert_eq!(
        harness.logs().last().map(|record| record.level),
        Some(Level::Warn)
    );
}

#[test]
fn configuration_is_validated_then_offered_to_the_plugin() {
    let missing = Harness::<Everything>::new(json!({})).unwrap_err();
    assert_eq!(
        missing,
        HarnessError::Config(vec!["/: missing required property `greeting`".into()])
    );
    let extra = Harness::<Everything>::new(json!({"greeting": "x", "other": 1})).unwrap_err();
    assert_eq!(
        extra.to_string(),
        "the configuration does not match the schema: /other: unexpected property"
    );
    let refused = Harness::<Everything>::new(json!({"greeting": "refuse"})).unwrap_err();
    assert_eq!(
        refused,
        HarnessError::Init("greeting must not be `refuse`".into())
    );
}

struct Misdeclared;

impl Plugin for Misdeclared {
    type Config = Value;
    const METADATA: Metadata = Metadata {
        name: "Bad_Name",
        version: "1",
        capabilities: &[],
        phases: &[],
        config_schema: "{}",
    };
    fn new(_: Value) -> Result<Self, String> {
        Ok(Misdeclared)
    }
}

struct Unsupported;

impl Plugin for Unsupported {
    type Config = Value;
    const METADATA: Metadata = Metadata {
        name: "unsupported",
        version: "0.1.0",
        capabilities: &[],
        phases: &[Phase::RequestHeaders],
        config_schema: r#"{"anyOf": [{"type": "string"}]}"#,
    };
    fn new(_: Value) -> Result<Self, String> {
        Ok(Unsupported)
    }
    fn on_request_headers(&mut self, _: &RequestHead) -> HeadersAction {
        host::log::info("not declared");
        HeadersAction::Continue
    }
}

/// Declares no capability but logs; accepts any configuration.
struct Sneaky;

impl Plugin for Sneaky {
    type Config = Value;
    const METADATA: Metadata = Metadata {
        config_schema: "true",
        ..Unsupported::METADATA
    };
    fn new(_: Value) -> Result<Self, String> {
        Ok(Sneaky)
    }
    fn on_request_headers(&mut self, _: &RequestHead) -> HeadersAction {
        host::log::info("not declared");
        HeadersAction::Continue
    }
}

#[test]
fn metadata_and_schema_are_checked() {
    let err = Harness::<Misdeclared>::new(json!({})).unwrap_err();
    assert!(
        matches!(err, HarnessError::Metadata(ref m) if m.contains("Bad_Name")),
        "{err}"
    );
    let err = Harness::<Unsupported>::new(json!("x")).unwrap_err();
    assert_eq!(
        err,
        HarnessError::Schema(SchemaError::Unsupported {
            keyword: "anyOf".into(),
            path: "/anyOf".into()
        })
    );
}

#[test]
#[should_panic(expected = "does not declare Capability::Log")]
fn undeclared_capability_panics() {
    Harness::<Sneaky>::new(json!(null))
        .unwrap()
        .request_headers(&RequestHead::new("GET", "/"));
}

#[test]
#[should_panic(expected = "does not declare it")]
fn undeclared_phase_panics() {
    Harness::<Sneaky>::new(json!(null))
        .unwrap()
        .request_body(&BodyChunk::new("", true));
}

#[test]
#[should_panic(expected = "status 99")]
fn contract_breaking_actions_panic() {
    everything().request_headers(&RequestHead::new("GET", "/bad-status"));
}

#[test]
#[should_panic(expected = "is not [a-z_][a-z0-9_]*")]
fn invalid_metric_names_panic() {
    everything().request_headers(&RequestHead::new("GET", "/bad-metric"));
}

#[test]
#[should_panic(expected = "outside a test harness")]
fn host_functions_need_a_harness() {
    host::log::info("nobody listens");
}

/// A plugin that only verifies signatures, to call the crypto fake directly.
struct Verifier;

impl Plugin for Verifier {
    type Config = Value;
    const METADATA: Metadata = Metadata {
        name: "verifier",
        version: "0.1.0",
        capabilities: &[Capability::Crypto],
        phases: &[Phase::RequestHeaders],
        config_schema: "{}",
    };
    fn new(_: Value) -> Result<Self, String> {
        Ok(Verifier)
    }
}

/// Runs `f` with the crypto fake in place, as inside a phase of [`Verifier`].
fn with_crypto<R>(f: impl FnOnce() -> R) -> R {
    Harness::<Verifier>::new(json!({})).unwrap().run(|_| f())
}

const RSA_N: &str = "0eDNhrxv_0LxTAazU85oR_Ep2YshascVkFGxZpxpx5tYyIzmeS4BSvwTK_0sfGvu8SNb7HVNk7ulWlhyt5ZnPaIIWElEqH2gFWcq-Y4l2vaNeoLLhXD5UpD59LBytIExP3AQOdOt29EgbIGVz5M_rvwDLsny24psQaVccGiBlLxdOtgCLbbpx80QApc7tBQPwDMUIQM21_Jh23cYd0w6MHldeA-IIkbmYkLndWnmRNhfiBf1jMmFVDXmU7QkORIE6GLT_aLZKUwu1zdj10DtQ2WYFWYJvr73UO-28zUS6HuzvvuNmqHqjC5D5cwONo3AwWvcY5Yd7oMB_jruTGWx9w";
const RSA_SIG: &str = "sXl5UAFH7VPoGGaS9F6pwrrTIT3qcvEVYhJNLWY9aHUNGiUkKwCvbciohRx8Hh_jtCx9rkFgnQmBuq2iQ_Hmq8Vi-BjfhFvlFJxjF1iRzpepej4jO1TpRlVR3C3zvAKGWMtbDhYSF3koiC7zg2lGbtUl_HpQX584gvYZBglSMQJiunQPVFoCA41KPfPz7R0rZyidNNQ2wjx4O2Wn_3bl2T1RAnRC40ghrwF9G7cJNT0aLmTeQuVnPZuKhvlZBO3UndwWAWZ87I68aHli8ni05C_eRk2mf_b8ro9U61yFbTr0ahxfvX-sPX84e3HE3PW_hme6hG_9DfQ72i9ujh3R5g";
const SIGNING_INPUT: &[u8] = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaGFzcXVpIn0";

#[test]
fn rs256_signatures_verify() {
    let jwk = json!({"kty": "RSA", "n": RSA_N, "e": "AQAB", "alg": "RS256"}).to_string();
    let sig = URL_SAFE_NO_PAD.decode(RSA_SIG).unwrap();
    with_crypto(|| {
        let verify = |jwk: &str, input: &[u8], sig: &[u8]| {
            host::crypto::verify_signature(Algorithm::Rs256, jwk, input, sig)
        };
        assert_eq!(verify(&jwk, SIGNING_INPUT, &sig), Ok(true));
        assert_eq!(verify(&jwk, b"eyJhbGciOiJSUzI1NiJ9.e30", &sig), Ok(false));
        assert_eq!(verify(&jwk, SIGNING_INPUT, &sig[1..]), Ok(false));
        let wrong_alg = json!({"kty": "RSA", "n": RSA_N, "e": "AQAB", "alg": "ES256"}).to_string();
        assert!(verify(&wrong_alg, SIGNING_INPUT, &sig).is_err());
        let short = json!({"kty": "RSA", "n": &RSA_N[..200], "e": "AQAB"}).to_string();
        assert!(verify(&short, SIGNING_INPUT, &sig)
            .unwrap_err()
            .0
            .contains("bits"));
        assert!(verify("not json", SIGNING_INPUT, &sig).is_err());
        let ec = json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}).to_string();
        assert!(verify(&ec, SIGNING_INPUT, &sig)
            .unwrap_err()
            .0
            .contains("kty"));
    });
}

#[test]
fn es256_signatures_verify() {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    let (x, y) = (
        URL_SAFE_NO_PAD.encode(&point[1..33]),
        URL_SAFE_NO_PAD.encode(&point[33..]),
    );
    let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}).to_string();
    let sig = pair.sign(&rng, SIGNING_INPUT).unwrap();
    with_crypto(|| {
        let verify = |jwk: &str, sig: &[u8]| {
            host::crypto::verify_signature(Algorithm::Es256, jwk, SIGNING_INPUT, sig)
        };
        assert_eq!(verify(&jwk, sig.as_ref()), Ok(true));
        let mut tampered = sig.as_ref().to_vec();
        tampered[10] ^= 1;
        assert_eq!(verify(&jwk, &tampered), Ok(false));
        assert_eq!(verify(&jwk, &tampered[..63]), Ok(false));
        let p384 = json!({"kty": "EC", "crv": "P-384", "x": x, "y": y}).to_string();
        assert!(verify(&p384, sig.as_ref()).unwrap_err().0.contains("P-256"));
        let bad = json!({"kty": "EC", "crv": "P-256", "x": "!!", "y": y}).to_string();
        assert!(verify(&bad, sig.as_ref())
            .unwrap_err()
            .0
            .contains("base64url"));
    });
}
