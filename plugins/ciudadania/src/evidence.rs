//! Evidence in the gateway's audit ledger, and the receipts handed back for it.
//!
//! A receipt (ledger position and chained hash) lets anyone check later, with
//! `chasqui audit receipt --position P --hash H`, that the entry is in the ledger and
//! covered by a checkpoint signed by the gateway.

use crate::headers;
use crate::problem::{self, Problem};
use crate::time::rfc3339;
use chasqui_plugin_sdk::host;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Ledger kind of a document approval.
pub const APPROVAL: &str = "ciudadania.approval";
/// Ledger kind of a notification delivery.
pub const NOTIFICATION_DELIVERED: &str = "ciudadania.notification.delivered";
/// Ledger kind of a citizen's answer to an authorization request.
pub const AUTHORIZATION_ANSWER: &str = "ciudadania.authorization.answer";

/// Where a piece of evidence sits in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The ledger entry's kind.
    pub kind: String,
    /// Its position, from 0.
    pub position: u64,
    /// Its chained hash, lowercase hex SHA-256.
    pub hash: String,
    /// When the plugin recorded it (host clock, ms since the epoch).
    pub recorded_ms: u64,
}

impl Receipt {
    /// The receipt as answers show it.
    pub fn view(&self) -> Value {
        json!({
            "tipo": self.kind,
            "posicion": self.position,
            "hash": self.hash,
            "registrado": rfc3339(self.recorded_ms),
        })
    }

    /// The receipt as header fields (for the upstream and, in production, the client).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (headers::RECIBO_TIPO, self.kind.clone()),
            (headers::RECIBO_POSICION, self.position.to_string()),
            (headers::RECIBO_HASH, self.hash.clone()),
            (headers::RECIBO_REGISTRADO, rfc3339(self.recorded_ms)),
        ]
    }
}

/// Appends `payload` as `kind` and returns its receipt. A refusal is logged and counted,
/// and becomes a 503 problem: evidence is never skipped silently.
pub fn append(kind: &'static str, payload: &Value, now_ms: u64) -> Result<Receipt, Problem> {
    match host::ledger::append(kind, payload) {
        Ok(receipt) => {
            host::metrics::counter_add("ledger_entries_total", 1, &[("kind", kind)]);
            host::log::info(&format!(
                "ciudadania: {kind} recorded at ledger position {}",
                receipt.position
            ));
            Ok(Receipt {
                kind: kind.to_string(),
                position: receipt.position,
                hash: receipt.hash,
                recorded_ms: now_ms,
            })
        }
        Err(err) => {
            host::metrics::counter_add("ledger_failures_total", 1, &[("kind", kind)]);
            host::log::error(&format!("ciudadania: {kind} not recorded: {err}"));
            Err(problem::ledger_unavailable())
        }
    }
}
