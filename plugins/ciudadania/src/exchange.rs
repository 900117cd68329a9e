//! One request to the plugin's own service after its headers: the body it waits for, and
//! what it adds when the upstream answers (production).

use crate::answer;
use crate::approvals;
use crate::authorizations;
use crate::call::Call;
use crate::config::Settings;
use crate::headers;
use crate::notifications::{self, Notification};
use crate::problem::{self, Problem};
use crate::routes::Kind;
use crate::time::rfc3339;
use chasqui_plugin_sdk::{host, BodyAction, BodyChunk, HeaderChanges, HeadersAction, ResponseHead};

/// The state of a request between its phases; dropped at the request's end.
#[derive(Debug)]
pub struct Exchange {
    /// The request's facts, from its headers phase.
    pub call: Call,
    /// The path up to the service version (`/fake/ciudadania/v1`), for `location`.
    pub prefix: String,
    /// What the body phase does.
    pub body: Body,
    /// What the response-headers phase does.
    pub reply: Reply,
}

/// What the body phase does.
#[derive(Debug)]
pub enum Body {
    /// Chunks pass unchanged: no body is expected, or it was already handled.
    Pass,
    /// Hold every chunk back until the whole body is there, then check it.
    Collect {
        /// The record the body creates.
        kind: Kind,
        /// The id assigned to it in the headers phase.
        id: String,
        /// The chunks so far.
        buffer: Vec<u8>,
    },
}

/// What the response-headers phase does (production: the upstream answered).
#[derive(Debug)]
pub enum Reply {
    /// Nothing.
    Nothing,
    /// Add these fields; if `only_on_success`, only to a 2xx answer.
    Headers {
        /// The fields.
        fields: Vec<(&'static str, String)>,
        /// Whether a non-2xx answer goes on without them.
        only_on_success: bool,
    },
    /// A 2xx answer is the delivery of this notification: record it and add the receipt.
    Delivery(Notification),
}

impl Exchange {
    /// One request-body chunk: collects, and on the last chunk checks the body and either
    /// answers (test environment) or releases it upstream whole (production).
    pub fn on_body(&mut self, settings: &Settings, chunk: &BodyChunk) -> BodyAction {
        let Body::Collect {
            kind,
            id,
            mut buffer,
        } = std::mem::replace(&mut self.body, Body::Pass)
        else {
            return BodyAction::Continue;
        };
        if buffer.len().saturating_add(chunk.data.len()) > settings.max_body_bytes {
            host::metrics::counter_add("bodies_refused_total", 1, &[("reason", "too_large")]);
            return respond(problem::body_too_large(settings.max_body_bytes));
        }
        buffer.extend_from_slice(&chunk.data);
        if !chunk.end_of_stream {
            self.body = Body::Collect { kind, id, buffer };
            // Hold the chunk back: nothing goes upstream before the body is checked.
            return BodyAction::Replace(Vec::new());
        }
        if buffer.is_empty() {
            return respond(problem::body_required());
        }
        match self.complete(settings, kind, &id, buffer) {
            Ok(action) => action,
            Err(problem) => respond(problem),
        }
    }

    fn complete(
        &mut self,
        settings: &Settings,
        kind: Kind,
        id: &str,
        body: Vec<u8>,
    ) -> Result<BodyAction, Problem> {
        let call = &self.call;
        let location = format!("{}/{}/{id}", self.prefix, kind.collection());
        match kind {
            Kind::Approval => {
                let record = approvals::create(settings, call, id, &body)?;
                if call.is_test() {
                    return Ok(created(location, &record.view(call.now_ms)));
                }
            }
            Kind::Authorization => {
                let record = authorizations::create(settings, call, id, &body)?;
                if call.is_test() {
                    return Ok(created(location, &record.view(call.now_ms)));
                }
            }
            Kind::Notification => {
                let notification = notifications::check(settings, call, id, &body)?;
                if call.is_test() {
                    let record = notifications::deliver(settings, call, notification)?;
                    return Ok(created(location, &record.view()));
                }
                self.reply = Reply::Delivery(notification);
            }
        }
        // Production: the checked body goes upstream unchanged, in one piece.
        Ok(BodyAction::Replace(body))
    }

    /// The upstream's answer head (only reached when the plugin did not answer itself).
    pub fn on_response(&mut self, response: &ResponseHead) -> HeadersAction {
        if matches!(self.body, Body::Collect { .. }) {
            // The body never came (or the upstream answered before it ended).
            self.body = Body::Pass;
            self.reply = Reply::Nothing;
            if self.call.is_test() {
                return HeadersAction::Respond(problem::body_required().into_response());
            }
            return HeadersAction::Continue;
        }
        let success = (200..300).contains(&response.status);
        match std::mem::replace(&mut self.reply, Reply::Nothing) {
            Reply::Nothing => HeadersAction::Continue,
            Reply::Headers {
                fields,
                only_on_success,
            } => {
                if success || !only_on_success {
                    set_all(fields)
                } else {
                    HeadersAction::Continue
                }
            }
            Reply::Delivery(notification) if success => {
                let delivered_ms = host::clock::now_ms();
                let mut fields = vec![
                    (headers::NOTIFICACION_ID, notification.id.clone()),
                    (headers::NOTIFICACION_ENTREGADA, rfc3339(delivered_ms)),
                ];
                // A ledger refusal is logged and counted; the delivery happened upstream,
                // so its answer goes on, without receipt fields.
                if let Ok(receipt) =
                    notifications::record_delivery(&self.call, &notification, delivered_ms)
                {
                    fields.extend(receipt.headers());
                }
                set_all(fields)
            }
            Reply::Delivery(_) => HeadersAction::Continue,
        }
    }
}

fn set_all(fields: Vec<(&'static str, String)>) -> HeadersAction {
    let changes = fields
        .into_iter()
        .fold(HeaderChanges::new(), |changes, (name, value)| {
            changes.set(name, value)
        });
    HeadersAction::Modify(changes)
}

fn respond(problem: Problem) -> BodyAction {
    BodyAction::Respond(problem.into_response())
}

fn created(location: String, body: &serde_json::Value) -> BodyAction {
    BodyAction::Respond(answer::created(location, body))
}
