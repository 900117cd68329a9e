//! Every administrative action goes to the audit ledger: kind
//! `admin.<object>.<action>`, the acting principal as actor
//! (`role:id:name`), the request id, and a JSON payload naming the objects
//! touched (never a secret: tokens appear only by display prefix).

use super::extract::Auth;
use super::AppState;

/// Appends one administrative action to the ledger. The ledger assigns its
/// position at once and writes it in its next batch; a refusal (which only
/// a malformed kind or payload can cause) is logged.
pub fn record(state: &AppState, auth: &Auth, kind: &str, payload: serde_json::Value) {
    let kind = format!("admin.{kind}");
    match state.ledger.append(
        &kind,
        &auth.actor.ledger_name(),
        &auth.request_id,
        &payload.to_string(),
    ) {
        Ok(receipt) => tracing::debug!(%kind, position = receipt.position, "admin action recorded"),
        Err(e) => tracing::error!(%kind, error = %e, "admin action not recorded in the ledger"),
    }
}
