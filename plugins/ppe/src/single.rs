//! The single-payment rule: one payment per (consumer entity, debt code).
//!
//! The key is claimed with the host's atomic `set_if_absent`, so among any number of
//! concurrent identical requests, on any instances, exactly one creates the payment. Every
//! other request sees the claim and gets, depending on it:
//!
//! - a different fingerprint: `409 idempotency-conflict` (same debt code, other content);
//! - a claim still pending (produccion, waiting for PPE): `409 payment-in-progress` with
//!   `Retry-After`;
//! - a completed claim: the first answer replayed, with `idempotent-replayed: true`, or
//!   `409 payment-already-created` when that answer could not be recorded.

use crate::money::Method;
use crate::problem::{self, Rejection};
use crate::store::Claim;
use chasqui_plugin_sdk::{host, Response};

/// The answer to a request whose key is already claimed.
pub fn answer_existing(
    existing: &Claim,
    fingerprint: &str,
    debt_code: &str,
    retry_after_seconds: u32,
) -> Response {
    if existing.fingerprint() != fingerprint {
        host::log::info(&format!(
            "debt code {debt_code:?} reused with different content: refused"
        ));
        return Rejection::new(
            problem::IDEMPOTENCY_CONFLICT,
            format!(
                "codigoOrden {debt_code:?} was already used by your entity for a payment with \
                 different content (amount, method, payer or other fields); a repeat must be \
                 identical, and a new debt needs a new codigoOrden"
            ),
        )
        .with("codigoOrden", debt_code)
        .into_response();
    }
    match existing {
        Claim::Pending { .. } => Rejection::new(
            problem::PAYMENT_IN_PROGRESS,
            format!(
                "the first request for codigoOrden {debt_code:?} is still being processed; \
                 repeat it after the Retry-After delay to get its answer"
            ),
        )
        .with("codigoOrden", debt_code)
        .with_header("retry-after", retry_after_seconds.to_string())
        .into_response(),
        Claim::Done {
            answer: Some(answer),
            method,
            ..
        } => {
            let label = Method::parse(method).map_or("unknown", Method::label);
            host::metrics::counter_add("payments_replayed_total", 1, &[("method", label)]);
            answer.replay()
        }
        Claim::Done {
            answer: None,
            payment_id,
            ..
        } => {
            let mut rejection = Rejection::new(
                problem::PAYMENT_ALREADY_CREATED,
                format!(
                    "a payment for codigoOrden {debt_code:?} was already registered, but its \
                     first answer cannot be replayed; query its state instead"
                ),
            )
            .with("codigoOrden", debt_code);
            if let Some(id) = payment_id {
                rejection = rejection.with("codigoTransaccion", id.as_str());
            }
            rejection.into_response()
        }
    }
}
