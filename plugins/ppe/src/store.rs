//! What the plugin keeps in the gateway's key-value store, and its keys.
//!
//! Every key starts with the environment, so a test payment never blocks or answers a
//! production one. Keys (the gateway namespaces them per plugin):
//!
//! | key | value | written by |
//! | --- | --- | --- |
//! | `claim/{env}/{sha256(entity, debt code)}` | [`Claim`] | creation (atomic `set_if_absent`) |
//! | `payment/{env}/{id}` | [`PaymentRecord`] | test-environment creation |
//! | `cpt/{env}/{code}` | payment id | test-environment CPT creation (uniqueness) |
//! | `settled/{env}/{id}` | [`Settlement`] | payment (atomic `set_if_absent`) |

use crate::ids::{hex, length_prefixed};
use crate::money::Method;
use crate::problem::{self, Rejection};
use crate::validation::Payer;
use crate::Environment;
use chasqui_plugin_sdk::host::{crypto, kv};
use chasqui_plugin_sdk::{Header, Response};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The single-payment key of `entity`'s `debt_code`.
pub fn claim_key(env: Environment, entity: &str, debt_code: &str) -> String {
    let digest = crypto::sha256(&length_prefixed(&[entity.as_bytes(), debt_code.as_bytes()]));
    format!("claim/{}/{}", env.as_str(), hex(&digest))
}

/// The key of a test payment.
pub fn payment_key(env: Environment, id: &str) -> String {
    format!("payment/{}/{id}", env.as_str())
}

/// The key reserving a CPT code.
pub fn cpt_key(env: Environment, code: &str) -> String {
    format!("cpt/{}/{code}", env.as_str())
}

/// The key of a payment's settlement.
pub fn settled_key(env: Environment, id: &str) -> String {
    format!("settled/{}/{id}", env.as_str())
}

/// The state of a single-payment key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Claim {
    /// A request holds the key and is waiting for PPE (produccion).
    Pending {
        /// The claiming request's fingerprint.
        fingerprint: String,
        /// The claiming request's id (so only it releases the key).
        request_id: String,
        /// When it claimed the key.
        since_ms: u64,
    },
    /// The payment exists: its first answer, to replay.
    Done {
        /// The creating request's fingerprint.
        fingerprint: String,
        /// The payment's id, when known.
        payment_id: Option<String>,
        /// The payment's method (`CPT`, ...).
        method: String,
        /// The first answer; `None` when it could not be recorded (too large, incomplete).
        answer: Option<StoredAnswer>,
    },
}

impl Claim {
    /// The fingerprint of the request that created the claim.
    pub fn fingerprint(&self) -> &str {
        match self {
            Claim::Pending { fingerprint, .. } | Claim::Done { fingerprint, .. } => fingerprint,
        }
    }
}

/// An answer recorded to be replayed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    /// Its status.
    pub status: u16,
    /// Its header fields (without hop-by-hop and per-response fields).
    pub headers: Vec<(String, String)>,
    /// Its body, as text.
    pub body: String,
}

/// Header fields never recorded for a replay: hop-by-hop, recomputed by the gateway, or
/// specific to one response.
const UNRECORDED_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "date",
    "keep-alive",
    "proxy-connection",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-request-id",
];

impl StoredAnswer {
    /// Records a response (its body must be UTF-8 text, as every PPE answer is).
    pub fn new(status: u16, headers: &[Header], body: String) -> Self {
        let headers = headers
            .iter()
            .filter(|h| !UNRECORDED_HEADERS.contains(&h.name.as_str()))
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        StoredAnswer {
            status,
            headers,
            body,
        }
    }

    /// Records a response the plugin built itself.
    pub fn of_response(response: &Response) -> Option<Self> {
        let body = String::from_utf8(response.body.clone()).ok()?;
        Some(StoredAnswer::new(response.status, &response.headers, body))
    }

    /// The replayed response, marked with `idempotent-replayed: true`.
    pub fn replay(&self) -> Response {
        let mut response = Response::new(self.status);
        for (name, value) in &self.headers {
            response = response.with_header(name.as_str(), value.as_str());
        }
        response
            .with_header("idempotent-replayed", "true")
            .with_body(self.body.as_bytes().to_vec())
    }
}

/// A test-environment payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// Its id (`codigoTransaccion`).
    pub id: String,
    /// The consumer entity that created it (only it may read or pay it).
    pub entity: String,
    /// The entity's debt code.
    pub debt_code: String,
    /// `CPT`, `QR` or `TARJETA`.
    pub method: Method,
    /// Centavos.
    pub amount: u64,
    /// What is paid.
    pub description: String,
    /// Who pays.
    pub payer: Payer,
    /// Creation time (Unix ms).
    pub created_ms: u64,
    /// End of validity (Unix ms); `None` for a card.
    pub expires_ms: Option<u64>,
    /// The fee, when known at creation (QR, card).
    pub fee: Option<u64>,
    /// The CPT code.
    pub cpt_code: Option<String>,
    /// The QR id and payload.
    pub qr: Option<QrCode>,
    /// The card checkout URL stand-in.
    pub checkout_url: Option<String>,
}

/// A test QR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QrCode {
    /// Its id (`idQr`).
    pub id: String,
    /// The text to render as a QR code.
    pub payload: String,
}

/// A payment's settlement: written once, atomically, by whoever pays first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// `DIGITAL`, `CAJA`, `QR` or `TARJETA`.
    pub channel: String,
    /// When it was paid (Unix ms).
    pub paid_ms: u64,
    /// The fee, in centavos.
    pub fee: u64,
    /// The request that settled it.
    pub request_id: String,
}

/// The store's failures, as the problem to answer with.
pub struct Store {
    /// `Retry-After` of a `state-unavailable` answer.
    pub retry_after_seconds: u32,
}

impl Store {
    fn unavailable(&self, err: kv::KvError, what: &str) -> Rejection {
        problem::state_unavailable(self.retry_after_seconds, &format!("{what}: {err}"))
    }

    /// Reads and decodes a JSON value.
    pub fn get<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, Rejection> {
        match kv::get(key).map_err(|err| self.unavailable(err, "get"))? {
            None => Ok(None),
            Some(bytes) => self.decode(key, &bytes).map(Some),
        }
    }

    /// Encodes and writes a JSON value.
    pub fn set<T: Serialize>(&self, key: &str, value: &T, ttl: Duration) -> Result<(), Rejection> {
        let bytes = self.encode(value)?;
        kv::set(key, &bytes, Some(ttl)).map_err(|err| self.unavailable(err, "set"))
    }

    /// Writes `value` unless the key holds a live value; returns that value if it does.
    pub fn set_if_absent<T: Serialize + for<'de> Deserialize<'de>>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<Option<T>, Rejection> {
        let bytes = self.encode(value)?;
        match kv::set_if_absent(key, &bytes, Some(ttl))
            .map_err(|err| self.unavailable(err, "set_if_absent"))?
        {
            None => Ok(None),
            Some(existing) => self.decode(key, &existing).map(Some),
        }
    }

    /// Removes a key; a failure is logged, not answered (the key expires anyway).
    pub fn delete_quietly(&self, key: &str) {
        if let Err(err) = kv::delete(key) {
            chasqui_plugin_sdk::host::log::warn(&format!("could not delete {key}: {err}"));
        }
    }

    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, Rejection> {
        serde_json::to_vec(value).map_err(|err| {
            problem::state_unavailable(self.retry_after_seconds, &format!("encode: {err}"))
        })
    }

    fn decode<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, Rejection> {
        // Only this plugin writes its namespace: an undecodable value is a bug or a
        // version skew; answer 503 and log, rather than act on a guess.
        serde_json::from_slice(bytes).map_err(|err| {
            chasqui_plugin_sdk::host::log::error(&format!("undecodable value under {key}: {err}"));
            Rejection::new(
                problem::STATE_UNAVAILABLE,
                "the stored payment state cannot be read",
            )
            .with_header("retry-after", self.retry_after_seconds.to_string())
        })
    }
}
