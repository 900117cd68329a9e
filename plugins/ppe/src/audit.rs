//! Evidence and accounting of payments: the audit ledger, fees (host metering) and metrics.
//!
//! Each created payment is appended to the ledger as `ppe.payment` and each settlement the
//! plugin sees as `ppe.settlement`, so every charge is attributable to an entity. A ledger
//! failure does not undo a payment that already exists (in produccion PPE has created it):
//! it is logged as an error and counted in `ledger_failures_total` for operators.

use crate::money::{format_centavos, Channel, Method, CURRENCY};
use crate::Caller;
use chasqui_plugin_sdk::host;
use serde_json::{json, Value};

/// A payment that was just created.
pub struct Created<'a> {
    /// The consumer entity.
    pub entity: &'a str,
    /// The entity's debt code.
    pub debt_code: &'a str,
    /// The payment's method.
    pub method: Method,
    /// Centavos.
    pub amount: u64,
    /// The payment's id, when known.
    pub payment_id: Option<&'a str>,
    /// The fee charged at creation (QR, card); `None` for a CPT, charged when paid.
    pub fee: Option<u64>,
}

/// Records a created payment: ledger entry, creation metric and, if due now, its fee.
pub fn payment_created(caller: &Caller, created: &Created) {
    let payload = json!({
        "entity": created.entity,
        "system": caller.system,
        "environment": caller.env.as_str(),
        "debt_code": created.debt_code,
        "payment_id": created.payment_id,
        "method": created.method.as_str(),
        "amount": format_centavos(created.amount),
        "amount_minor": created.amount,
        "currency": CURRENCY,
        "client_address": host::context::client_address(),
    });
    append("ppe.payment", &payload);
    host::metrics::counter_add(
        "payments_created_total",
        1,
        &[("method", created.method.label())],
    );
    if let (Some(fee), Some(channel)) = (created.fee, Channel::of_method(created.method)) {
        charge(created.method, channel, fee);
    }
    host::log::info(&format!(
        "{} payment {} created in {}: Bs {} for {}/{}",
        created.method.as_str(),
        created.payment_id.unwrap_or("(id unknown)"),
        caller.env.as_str(),
        format_centavos(created.amount),
        created.entity,
        created.debt_code
    ));
}

/// A payment that was just paid.
pub struct Settled<'a> {
    /// The consumer entity.
    pub entity: &'a str,
    /// The payment's id.
    pub payment_id: &'a str,
    /// The payment's method.
    pub method: Method,
    /// Where it was paid.
    pub channel: Channel,
    /// The fee to charge now (a CPT's, which depends on the channel); `None` when it was
    /// charged at creation.
    pub fee_due: Option<u64>,
}

/// Records a settlement: ledger entry, settlement metric and, for a CPT, its fee.
pub fn payment_settled(caller: &Caller, settled: &Settled) {
    let payload = json!({
        "entity": settled.entity,
        "environment": caller.env.as_str(),
        "payment_id": settled.payment_id,
        "method": settled.method.as_str(),
        "channel": settled.channel.as_str(),
        "fee_minor": settled.fee_due,
        "currency": CURRENCY,
    });
    append("ppe.settlement", &payload);
    host::metrics::counter_add(
        "payments_settled_total",
        1,
        &[
            ("method", settled.method.label()),
            ("channel", settled.channel.label()),
        ],
    );
    if let Some(fee) = settled.fee_due {
        charge(settled.method, settled.channel, fee);
    }
    host::log::info(&format!(
        "{} payment {} paid ({}) in {}",
        settled.method.as_str(),
        settled.payment_id,
        settled.channel.as_str(),
        caller.env.as_str()
    ));
}

/// Charges a fee: host metering (`ppe.<method>`, centavos, BOB) and `fees_centavos_total`.
fn charge(method: Method, channel: Channel, fee: u64) {
    host::metering::record_fee(method.fee_item(), fee, CURRENCY);
    host::metrics::counter_add(
        "fees_centavos_total",
        fee,
        &[("method", method.label()), ("channel", channel.label())],
    );
}

fn append(kind: &str, payload: &Value) {
    if let Err(err) = host::ledger::append(kind, payload) {
        host::log::error(&format!("{kind} not written to the audit ledger: {err}"));
        host::metrics::counter_add("ledger_failures_total", 1, &[("kind", kind)]);
    }
}
