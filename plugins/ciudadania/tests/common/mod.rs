//! Shared test support: fixture keys and tokens, a test configuration, and a small
//! client that drives the plugin through the SDK harness like the gateway would.
//!
//! The private keys in `tests/fixtures` are test-only keys, generated once for these tests
//! (RSA 2048 and P-256, PKCS#8 DER); the plugin itself never holds a private key.

#![allow(dead_code)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chasqui_plugin_ciudadania::{Ciudadania, CITIZENS};
use chasqui_plugin_sdk::host::context::Context;
use chasqui_plugin_sdk::serde_json::{self, json, Value};
use chasqui_plugin_sdk::testing::Harness;
use chasqui_plugin_sdk::{BodyAction, BodyChunk, Header, HeadersAction, RequestHead, Response};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};

/// The harness clock's start, 2026-01-01T00:00:00Z, in seconds.
pub const NOW: u64 = 1_767_225_600;
/// The test issuer.
pub const PRUEBAS_ISS: &str = "https://pruebas.ciudadania.example";
/// The production issuer.
pub const PRODUCCION_ISS: &str = "https://proveedor.ciudadania.example";
/// The entity's client id, the accepted audience.
pub const AUDIENCE: &str = "entidad-demo";
/// The plugin's own service.
pub const SERVICE: &str = "ciudadania/v1";
/// The base path of the plugin's service.
pub const BASE: &str = "/ciudadania/v1";
/// The problem type base.
pub const PROBLEMS: &str = "https://chasqui.agetic.gob.bo/problems/ciudadania/";

/// The trusted RSA key's public JWK.
pub fn rsa_jwk() -> Value {
    serde_json::from_str(include_str!("../fixtures/rsa-2048.jwk.json")).unwrap()
}
/// The trusted P-256 key's public JWK.
pub fn ec_jwk() -> Value {
    serde_json::from_str(include_str!("../fixtures/p256.jwk.json")).unwrap()
}
/// A P-256 key nobody trusts.
pub fn untrusted_jwk() -> Value {
    serde_json::from_str(include_str!("../fixtures/p256-untrusted.jwk.json")).unwrap()
}

/// A signing key of the fixtures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// RS256 with `test-rsa-1`.
    Rsa,
    /// ES256 with `test-ec-1`.
    Ec,
    /// ES256 with the untrusted key.
    Untrusted,
}

impl Signer {
    /// The JOSE header this key signs with by default.
    pub fn header(self) -> Value {
        match self {
            Signer::Rsa => json!({ "alg": "RS256", "typ": "JWT", "kid": "test-rsa-1" }),
            Signer::Ec => json!({ "alg": "ES256", "typ": "JWT", "kid": "test-ec-1" }),
            Signer::Untrusted => {
                json!({ "alg": "ES256", "typ": "JWT", "kid": "test-ec-untrusted" })
            }
        }
    }

    /// Signs `input` (the JWS signing input).
    pub fn sign(self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa => {
                let key = RsaKeyPair::from_pkcs8(include_bytes!("../fixtures/rsa-2048.pk8"))
                    .expect("fixture RSA key");
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, &rng, input, &mut signature)
                    .expect("RSA signature");
                signature
            }
            Signer::Ec | Signer::Untrusted => {
                let pkcs8: &[u8] = if self == Signer::Ec {
                    include_bytes!("../fixtures/p256.pk8")
                } else {
                    include_bytes!("../fixtures/p256-untrusted.pk8")
                };
                let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                    .expect("fixture EC key");
                key.sign(&rng, input)
                    .expect("EC signature")
                    .as_ref()
                    .to_vec()
            }
        }
    }
}

/// Base64url without padding of a JSON value.
pub fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// A JWT with this header and these claims, signed by `signer`.
pub fn jwt_with_header(signer: Signer, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = signer.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A JWT with the signer's usual header.
pub fn jwt(signer: Signer, claims: &Value) -> String {
    jwt_with_header(signer, &signer.header(), claims)
}

/// Valid test-environment claims for the first synthetic citizen, issued at [`NOW`].
pub fn claims() -> Value {
    json!({
        "iss": PRUEBAS_ISS,
        "aud": AUDIENCE,
        "sub": CITIZENS[0].sub,
        "scope": "openid profile",
        "iat": NOW,
        "exp": NOW + 600,
    })
}

/// [`claims`] changed by `f`.
pub fn claims_with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut value = claims();
    if let Some(map) = value.as_object_mut() {
        f(map);
    }
    value
}

/// A valid RS256 token for the synthetic citizen `index`.
pub fn token_for(index: usize) -> String {
    jwt(
        Signer::Rsa,
        &claims_with(|c| {
            c.insert("sub".into(), json!(CITIZENS[index].sub));
        }),
    )
}

/// A valid RS256 test token for the first synthetic citizen.
pub fn token() -> String {
    token_for(0)
}

/// A valid production token (production issuer).
pub fn production_token() -> String {
    jwt(
        Signer::Rsa,
        &claims_with(|c| {
            c.insert("iss".into(), json!(PRODUCCION_ISS));
            c.insert("sub".into(), json!("prod-subject-1"));
            c.insert(
                "profile".into(),
                json!({
                    "documento_identidad": { "numero_documento": "1234567" },
                    "nombre": { "nombres": "JOSÉ", "primer_apellido": "PÉREZ", "segundo_apellido": "" }
                }),
            );
        }),
    )
}

/// The test configuration: both issuers, the test one with both keys.
pub fn config() -> Value {
    json!({
        "issuers": {
            "pruebas": {
                "issuer": PRUEBAS_ISS,
                "audiences": [AUDIENCE],
                "jwks": { "keys": [rsa_jwk(), ec_jwk()] }
            },
            "produccion": {
                "issuer": PRODUCCION_ISS,
                "audiences": [AUDIENCE, "otra-entidad"],
                "jwks": { "keys": [rsa_jwk()] }
            }
        }
    })
}

/// [`config`] with top-level members replaced.
pub fn config_with(extra: Value) -> Value {
    let mut value = config();
    if let (Some(map), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        for (key, member) in extra {
            map.insert(key.clone(), member.clone());
        }
    }
    value
}

/// A minimal PDF.
pub const PDF: &[u8] =
    b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n";
/// A JSON document.
pub const JSON_DOC: &[u8] = br#"{"tramite":"licencia","numero":42}"#;

/// A document as the API takes it.
pub fn doc(name: &str, media_type: &str, content: &[u8]) -> Value {
    json!({ "nombre": name, "tipo": media_type, "contenido": STANDARD.encode(content) })
}

/// SHA-256 in lowercase hex, computed independently of the plugin.
pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An answer the plugin gave, decoded.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Header fields.
    pub headers: Vec<Header>,
    /// Body as JSON (`Null` if empty).
    pub json: Value,
}

impl Answer {
    /// Decodes a plugin response.
    pub fn of(response: Response) -> Answer {
        let json = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).expect("a JSON body")
        };
        Answer {
            status: response.status,
            headers: response.headers,
            json,
        }
    }

    /// The first value of a header field.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }

    /// Asserts a problem document of this status and slug, and returns its detail.
    pub fn problem(&self, status: u16, slug: &str) -> String {
        assert_eq!(self.status, status, "{:#}", self.json);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(
            self.json["type"],
            format!("{PROBLEMS}{slug}"),
            "{:#}",
            self.json
        );
        assert_eq!(self.json["status"], status);
        assert!(self.json["title"]
            .as_str()
            .is_some_and(|t| t.contains(" / ")));
        self.json["detail"].as_str().unwrap_or_default().to_string()
    }
}

/// The gateway's side of a request: drives the plugin's phases through the harness.
pub struct Gateway {
    /// The harness.
    pub harness: Harness<Ciudadania>,
    /// The environment requests run in.
    pub environment: String,
    /// The service requests go to.
    pub service: String,
    /// The consumer entity.
    pub entity: Option<String>,
    requests: u32,
}

impl Gateway {
    /// A plugin with `config`, called in `pruebas` on its own service.
    pub fn new(config: Value) -> Gateway {
        Gateway {
            harness: Harness::new(config).expect("the configuration loads"),
            environment: "pruebas".into(),
            service: SERVICE.into(),
            entity: Some("test-entity".into()),
            requests: 0,
        }
    }

    /// The same plugin, called in `produccion`.
    pub fn production(mut self) -> Gateway {
        self.environment = "produccion".into();
        self
    }

    /// The same plugin, called for another service (filter mode).
    pub fn for_service(mut self, service: &str) -> Gateway {
        self.service = service.into();
        self
    }

    /// Sets the context of a new request (a fresh request id, as the gateway gives).
    pub fn begin(&mut self) {
        self.requests += 1;
        self.harness.set_context(Context {
            consumer_entity: self.entity.clone(),
            consumer_system: Some("test-system".into()),
            service: self.service.clone(),
            environment: self.environment.clone(),
            request_id: format!("req-{}", self.requests),
            trace_id: None,
        });
    }

    /// Runs the request-headers phase of a new request.
    pub fn headers(&mut self, request: &RequestHead) -> HeadersAction {
        self.begin();
        self.harness.request_headers(request)
    }

    /// Sends `body` in chunks of at most `chunk` bytes; returns every action.
    pub fn body(&mut self, body: &[u8], chunk: usize) -> Vec<BodyAction> {
        let mut actions = Vec::new();
        let pieces: Vec<&[u8]> = if body.is_empty() {
            vec![&[]]
        } else {
            body.chunks(chunk).collect()
        };
        let last = pieces.len() - 1;
        for (index, piece) in pieces.into_iter().enumerate() {
            let action = self
                .harness
                .request_body(&BodyChunk::new(piece.to_vec(), index == last));
            let answered = matches!(action, BodyAction::Respond(_));
            actions.push(action);
            if answered {
                break;
            }
        }
        actions
    }

    /// A whole request that the plugin must answer itself (test environment): headers,
    /// then the body if any; the request then ends.
    pub fn call(&mut self, request: RequestHead, body: Option<&[u8]>) -> Answer {
        let answer = match self.headers(&request) {
            HeadersAction::Respond(response) => Answer::of(response),
            other => {
                let Some(body) = body else {
                    panic!("expected an answer to the head, got {other:?}");
                };
                match self.body(body, 64 << 10).pop() {
                    Some(BodyAction::Respond(response)) => Answer::of(response),
                    other => panic!("expected an answer to the body, got {other:?}"),
                }
            }
        };
        self.harness.end_request();
        answer
    }

    /// `GET path`, with a citizen token if given.
    pub fn get(&mut self, path: &str, token: Option<&str>) -> Answer {
        self.call(request("GET", path, token), None)
    }

    /// `POST path` with a JSON body.
    pub fn post_json(&mut self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        let bytes = serde_json::to_vec(body).unwrap();
        self.call(json_request("POST", path, token, bytes.len()), Some(&bytes))
    }

    /// `POST path` without a body, with a citizen token.
    pub fn post(&mut self, path: &str, token: Option<&str>) -> Answer {
        self.call(request("POST", path, token), None)
    }
}

/// A request head with an optional citizen token.
pub fn request(method: &str, path: &str, token: Option<&str>) -> RequestHead {
    let request = RequestHead::new(method, path).with_header("authorization", "Bearer chq_test_x");
    match token {
        Some(token) => request.with_header("x-ciudadania-token", token),
        None => request,
    }
}

/// A request head for a JSON body of `length` bytes.
pub fn json_request(method: &str, path: &str, token: Option<&str>, length: usize) -> RequestHead {
    request(method, path, token)
        .with_header("content-type", "application/json")
        .with_header("content-length", length.to_string())
}

/// The header changes of a `Modify`, or a panic.
pub fn modified(action: HeadersAction) -> chasqui_plugin_sdk::HeaderChanges {
    match action {
        HeadersAction::Modify(changes) => changes,
        other => panic!("expected Modify, got {other:?}"),
    }
}

/// The answer of a `Respond` header action, or a panic.
pub fn answered(action: HeadersAction) -> Answer {
    match action {
        HeadersAction::Respond(response) => Answer::of(response),
        other => panic!("expected an answer, got {other:?}"),
    }
}

/// The value set for `name` in header changes.
pub fn set_value<'a>(
    changes: &'a chasqui_plugin_sdk::HeaderChanges,
    name: &str,
) -> Option<&'a str> {
    changes
        .set
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.value.as_str())
}

/// An approval request body for the synthetic citizen `index` with these documents.
pub fn approval_body(index: usize, documents: Vec<Value>) -> Value {
    json!({
        "sub": CITIZENS[index].sub,
        "descripcion": "Contrato de servicios",
        "documentos": documents,
    })
}
