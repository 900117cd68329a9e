//! The production environment (`produccion`): validate, claim, forward, record.
//!
//! A debt request is validated exactly as in `pruebas`. Its single-payment key is then
//! claimed as *pending* with the host's atomic `set_if_absent` (for `pending_seconds`), and
//! only the claiming request is passed on to PPE. PPE's answer decides the key's fate:
//!
//! - 2xx whose body is not `{"finalizado": false, ...}`: PPE accepted the payment. The
//!   answer (status, headers, body) becomes the key's result, so repeats replay it without
//!   reaching PPE; the creation goes to the ledger; a QR or card fee is charged.
//! - anything else (4xx, 5xx, `finalizado: false`, no answer at all): no payment exists, so
//!   the claim is released and the entity may retry with the same debt code.
//!
//! A CPT's fee depends on where it is paid, which only PPE sees. The plugin charges it when
//! a state query answered by PPE first reports the CPT `PAGADO` with its `canalPago`.

use crate::audit::{self, Created, Settled};
use crate::config::Settings;
use crate::ids;
use crate::money::{self, Channel, Method};
use crate::single;
use crate::store::{self, Claim, Settlement, Store, StoredAnswer};
use crate::validation;
use crate::Caller;
use chasqui_plugin_sdk::host::{self, clock};
use chasqui_plugin_sdk::{BodyChunk, Header, Response, ResponseHead};
use serde_json::Value;

/// What happens to a debt request once validated.
pub enum Claimed {
    /// This request holds the key: forward it to PPE.
    Forward(Forwarded),
    /// Answer the client now (a refusal, a replay, a conflict).
    Answer(Response),
}

/// A debt request that holds its key and went to PPE.
pub struct Forwarded {
    claim_key: String,
    fingerprint: String,
    debt_code: String,
    method: Method,
    amount: u64,
    validity_days: Option<u32>,
    status: Option<u16>,
    headers: Vec<Header>,
    body: Vec<u8>,
    overflow: bool,
    complete: bool,
    finished: bool,
}

/// Validates a debt request and claims its key.
pub fn claim(settings: &Settings, caller: &Caller, body: &[u8]) -> Claimed {
    let entity = match caller.entity() {
        Ok(entity) => entity,
        Err(rejection) => return Claimed::Answer(rejection.into_response()),
    };
    let now = clock::now_ms();
    let payment = match validation::parse_create(body, settings, now) {
        Ok(payment) => payment,
        Err(rejection) => return Claimed::Answer(rejection.into_response()),
    };
    let store = Store {
        retry_after_seconds: settings.retry_after_seconds,
    };
    let claim_key = store::claim_key(caller.env, entity, &payment.debt_code);
    let pending = Claim::Pending {
        fingerprint: payment.fingerprint.clone(),
        request_id: caller.request_id.clone(),
        since_ms: now,
    };
    match store.set_if_absent(&claim_key, &pending, settings.pending) {
        Err(rejection) => Claimed::Answer(rejection.into_response()),
        Ok(Some(existing)) => Claimed::Answer(single::answer_existing(
            &existing,
            &payment.fingerprint,
            &payment.debt_code,
            settings.retry_after_seconds,
        )),
        Ok(None) => Claimed::Forward(Forwarded {
            claim_key,
            fingerprint: payment.fingerprint,
            debt_code: payment.debt_code,
            method: payment.method,
            amount: payment.amount,
            validity_days: payment.validity_days,
            status: None,
            headers: Vec::new(),
            body: Vec::new(),
            overflow: false,
            complete: false,
            finished: false,
        }),
    }
}

impl Forwarded {
    /// PPE's answer head: anything but 2xx means no payment, so the key is released now.
    pub fn on_response_headers(
        &mut self,
        settings: &Settings,
        caller: &Caller,
        head: &ResponseHead,
    ) {
        self.status = Some(head.status);
        self.headers = head.headers.clone();
        if !(200..300).contains(&head.status) {
            let outcome = if head.status >= 500 {
                "failed"
            } else {
                "refused"
            };
            self.release(
                settings,
                caller,
                outcome,
                &format!("PPE answered {}", head.status),
            );
        }
    }

    /// A chunk of PPE's answer: kept (up to the recording limit) until the last one.
    pub fn on_response_body(&mut self, settings: &Settings, caller: &Caller, chunk: &BodyChunk) {
        if self.finished {
            return;
        }
        if self.body.len() + chunk.data.len() > settings.max_recorded_response_bytes {
            self.overflow = true;
            self.body = Vec::new();
        } else if !self.overflow {
            self.body.extend_from_slice(&chunk.data);
        }
        if chunk.end_of_stream {
            self.complete = true;
            self.finish(settings, caller);
        }
    }

    /// The request ended. A 2xx head with a body that never ended still means PPE
    /// accepted: the key stays taken (without a replayable answer). No answer at all means
    /// PPE was not reached or failed: the key is released.
    pub fn on_request_end(&mut self, settings: &Settings, caller: &Caller) {
        if self.finished {
            return;
        }
        match self.status {
            Some(status) if (200..300).contains(&status) => {
                // A response without a body never reaches the body phase: it is complete
                // when its head says so; otherwise the body was cut off and is not replayed.
                let bodiless = status == 204
                    || self
                        .headers
                        .iter()
                        .any(|h| h.name == "content-length" && h.value.trim() == "0");
                self.complete = bodiless && self.body.is_empty() && !self.overflow;
                self.finish(settings, caller);
            }
            _ => self.release(settings, caller, "failed", "no answer from PPE"),
        }
    }

    /// PPE answered 2xx: record the answer as the key's result, unless it says
    /// `finalizado: false`.
    fn finish(&mut self, settings: &Settings, caller: &Caller) {
        let status = self.status.unwrap_or(200);
        let text = (self.complete && !self.overflow)
            .then(|| String::from_utf8(std::mem::take(&mut self.body)).ok())
            .flatten();
        let parsed = text
            .as_deref()
            .and_then(|text| serde_json::from_str::<Value>(text).ok());
        let finalizado = parsed
            .as_ref()
            .and_then(|v| v.get("finalizado"))
            .and_then(Value::as_bool);
        if finalizado == Some(false) {
            self.release(
                settings,
                caller,
                "refused",
                "PPE answered finalizado: false",
            );
            return;
        }
        self.finished = true;
        let payment_id = parsed.as_ref().and_then(|v| id_of(&v["datos"]));
        let answer = text.map(|body| StoredAnswer::new(status, &self.headers, body));
        let done = Claim::Done {
            fingerprint: self.fingerprint.clone(),
            payment_id: payment_id.clone(),
            method: self.method.as_str().to_string(),
            answer,
        };
        let store = Store {
            retry_after_seconds: settings.retry_after_seconds,
        };
        self.store_result(settings, caller, &store, &done);
        host::metrics::counter_add("upstream_outcomes_total", 1, &[("outcome", "accepted")]);
        let entity = caller.entity.as_deref().unwrap_or_default();
        audit::payment_created(
            caller,
            &Created {
                entity,
                debt_code: &self.debt_code,
                method: self.method,
                amount: self.amount,
                payment_id: payment_id.as_deref(),
                fee: money::fee(
                    settings,
                    self.method,
                    self.amount,
                    Channel::of_method(self.method),
                ),
            },
        );
    }

    /// Replaces this request's pending claim by the result. If the claim is no longer
    /// this request's (it outlived `pending_seconds` and another request claimed the key),
    /// the other claim is left alone and the event logged: it is the one case where PPE
    /// may see the debt twice, and `pending_seconds` above the upstream timeout prevents it.
    fn store_result(&self, settings: &Settings, caller: &Caller, store: &Store, done: &Claim) {
        let ours = match store.get::<Claim>(&self.claim_key) {
            Ok(None) => true,
            Ok(Some(Claim::Pending { request_id, .. })) => request_id == caller.request_id,
            Ok(Some(Claim::Done { .. })) => false,
            // Unreadable: write anyway; our result is the best knowledge there is.
            Err(_) => true,
        };
        if !ours {
            host::log::error(&format!(
                "the single-payment claim of debt {:?} changed hands while PPE answered; \
                 pending_seconds may be below the upstream timeout",
                self.debt_code
            ));
            host::metrics::counter_add("claims_lost_total", 1, &[]);
            return;
        }
        let ttl = settings.record_ttl(self.validity_days);
        if let Err(rejection) = store.set(&self.claim_key, done, ttl) {
            // The pending claim still blocks repeats until it expires.
            host::log::error(&format!(
                "the result of debt {:?} was not recorded: {}",
                self.debt_code, rejection.detail
            ));
            host::metrics::counter_add("claims_unrecorded_total", 1, &[]);
        }
    }

    /// No payment was created: free the key (only if this request still holds it).
    fn release(&mut self, settings: &Settings, caller: &Caller, outcome: &str, reason: &str) {
        self.finished = true;
        host::metrics::counter_add("upstream_outcomes_total", 1, &[("outcome", outcome)]);
        host::log::info(&format!(
            "debt {:?} not created ({reason}): single-payment key released",
            self.debt_code
        ));
        let store = Store {
            retry_after_seconds: settings.retry_after_seconds,
        };
        // Read-then-delete is not atomic, but the window only matters if this claim
        // expired in between, which pending_seconds makes rare; the key expires anyway.
        if let Ok(Some(Claim::Pending { request_id, .. })) = store.get::<Claim>(&self.claim_key) {
            if request_id == caller.request_id {
                store.delete_quietly(&self.claim_key);
            }
        }
    }
}

/// The payment id in PPE's `datos`: `codigoTransaccion` as a string or an integer.
fn id_of(datos: &Value) -> Option<String> {
    match datos.get("codigoTransaccion")? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A production state query whose answer may reveal a CPT's settlement.
pub struct Observed {
    id: String,
    ok: bool,
    body: Vec<u8>,
    overflow: bool,
}

impl Observed {
    /// Observes the answer to `GET .../consulta/estado/{id}`.
    pub fn new(id: String) -> Self {
        Observed {
            id,
            ok: false,
            body: Vec::new(),
            overflow: false,
        }
    }

    /// Only a 2xx answer can report a settlement.
    pub fn on_response_headers(&mut self, head: &ResponseHead) {
        self.ok = (200..300).contains(&head.status) && ids::is_plausible_id(&self.id);
    }

    /// Collects the answer; on its last chunk, charges a CPT's fee if it is newly paid.
    pub fn on_response_body(&mut self, settings: &Settings, caller: &Caller, chunk: &BodyChunk) {
        if !self.ok {
            return;
        }
        if self.body.len() + chunk.data.len() > settings.max_recorded_response_bytes {
            self.overflow = true;
            self.body = Vec::new();
        } else if !self.overflow {
            self.body.extend_from_slice(&chunk.data);
        }
        if chunk.end_of_stream && !self.overflow {
            self.ok = false;
            self.settle_if_paid(settings, caller);
        }
    }

    fn settle_if_paid(&self, settings: &Settings, caller: &Caller) {
        let Ok(answer) = serde_json::from_slice::<Value>(&self.body) else {
            return;
        };
        let datos = &answer["datos"];
        let is_paid_cpt = datos["metodoPago"].as_str() == Some(Method::Cpt.as_str())
            && datos["estado"].as_str() == Some("PAGADO");
        if !is_paid_cpt {
            return;
        }
        let Some(channel) = datos["canalPago"].as_str().and_then(Channel::parse_cpt) else {
            host::log::warn(&format!(
                "PPE reports CPT {} paid without a canalPago of DIGITAL or CAJA: fee not charged",
                self.id
            ));
            host::metrics::counter_add("fees_unresolved_total", 1, &[("method", "cpt")]);
            return;
        };
        let Ok(entity) = caller.entity() else {
            return;
        };
        let fee = money::fee(settings, Method::Cpt, 0, Some(channel)).unwrap_or(0);
        let settlement = Settlement {
            channel: channel.as_str().to_string(),
            paid_ms: clock::now_ms(),
            fee,
            request_id: caller.request_id.clone(),
        };
        let store = Store {
            retry_after_seconds: settings.retry_after_seconds,
        };
        let key = store::settled_key(caller.env, &self.id);
        // Atomic: the first query that sees the payment charges the fee; later ones do not.
        match store.set_if_absent(&key, &settlement, settings.retention) {
            Ok(None) => audit::payment_settled(
                caller,
                &Settled {
                    entity,
                    payment_id: &self.id,
                    method: Method::Cpt,
                    channel,
                    fee_due: Some(fee),
                },
            ),
            Ok(Some(_)) => {}
            Err(rejection) => host::log::warn(&format!(
                "settlement of CPT {} not recorded (the next query retries): {}",
                self.id, rejection.detail
            )),
        }
    }
}
