//! Authorizations: an entity asks a citizen to accept or reject a consultation; the
//! citizen's answer drives the procedure and goes to the ledger.

use crate::call::Call;
use crate::config::Settings;
use crate::evidence::{self, Receipt};
use crate::identity::Identity;
use crate::problem::{self, Problem};
use crate::records::{self, hex};
use crate::routes::{Answer, Kind};
use crate::time::rfc3339;
use crate::validation;
use chasqui_plugin_sdk::host;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::borrow::Cow;

/// Longest consultation, in characters.
const MAX_QUESTION_CHARS: usize = 2000;
/// Most links in one request.
const MAX_LINKS: usize = 5;

/// The body of `POST .../autorizaciones`.
#[derive(Debug, Deserialize)]
struct CreateBody<'a> {
    #[serde(borrow)]
    sub: Cow<'a, str>,
    #[serde(borrow)]
    consulta: Cow<'a, str>,
    #[serde(default, borrow)]
    enlaces: Vec<Cow<'a, str>>,
}

/// An authorization request as the plugin keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRecord {
    /// `aut-…`.
    pub id: String,
    /// The asking entity.
    pub entity: Option<String>,
    /// The asking system.
    pub system: Option<String>,
    /// The citizen asked.
    pub sub: String,
    /// The consultation.
    pub question: String,
    /// SHA-256 of the consultation text (UTF-8), recorded with the answer.
    pub question_sha256: String,
    /// Links the consultation refers to.
    pub links: Vec<String>,
    /// When the request arrived.
    pub created_ms: u64,
    /// When the answer window closes.
    pub expires_ms: u64,
    /// The citizen's answer, once given.
    pub answer: Option<GivenAnswer>,
}

/// A citizen's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GivenAnswer {
    /// `ACEPTADA` or `RECHAZADA`.
    pub value: String,
    /// When the citizen answered.
    pub at_ms: u64,
    /// Where the answer is in the ledger.
    pub receipt: Receipt,
}

impl AuthorizationRecord {
    /// The record as answers show it; `estado` is computed at `now_ms`.
    pub fn view(&self, now_ms: u64) -> Value {
        let state = match &self.answer {
            Some(answer) => answer.value.as_str(),
            None if now_ms > self.expires_ms => "EXPIRADA",
            None => "PENDIENTE",
        };
        let mut view = json!({
            "id": self.id,
            "estado": state,
            "sub": self.sub,
            "consulta": self.question,
            "enlaces": self.links,
            "creado": rfc3339(self.created_ms),
            "expira": rfc3339(self.expires_ms),
        });
        if let (Some(object), Some(answer)) = (view.as_object_mut(), &self.answer) {
            object.insert("respondido".into(), json!(rfc3339(answer.at_ms)));
            object.insert("recibo".into(), answer.receipt.view());
        }
        view
    }
}

/// Checks a creation body and keeps the request under `id`.
pub fn create(
    settings: &Settings,
    call: &Call,
    id: &str,
    body: &[u8],
) -> Result<AuthorizationRecord, Problem> {
    let request: CreateBody<'_> = validation::parse_body(body)?;
    let sub = validation::citizen(call, &request.sub)?;
    let question = validation::text("consulta", &request.consulta, MAX_QUESTION_CHARS)?;
    if request.enlaces.len() > MAX_LINKS {
        return Err(problem::invalid_body(format!(
            "enlaces holds at most {MAX_LINKS} links"
        )));
    }
    let links = request
        .enlaces
        .iter()
        .enumerate()
        .map(|(index, url)| validation::link(index, url))
        .collect::<Result<Vec<_>, _>>()?;
    let record = AuthorizationRecord {
        id: id.to_string(),
        entity: call.context.consumer_entity.clone(),
        system: call.context.consumer_system.clone(),
        sub,
        question_sha256: hex(&host::crypto::sha256(question.as_bytes())),
        question,
        links,
        created_ms: call.now_ms,
        expires_ms: call.now_ms.saturating_add(settings.authorization_window_ms),
        answer: None,
    };
    save(settings, call, &record)?;
    host::metrics::counter_add("authorizations_total", 1, &[("event", "requested")]);
    Ok(record)
}

fn save(settings: &Settings, call: &Call, record: &AuthorizationRecord) -> Result<(), Problem> {
    records::save(
        call.environment,
        Kind::Authorization,
        &record.id,
        record,
        call.now_ms,
        record.created_ms.saturating_add(settings.retention_ms),
    )
}

/// The authorization request `id` as the calling entity may see it.
pub fn find(call: &Call, id: &str) -> Result<AuthorizationRecord, Problem> {
    let not_found =
        || problem::record_not_found("authorization-not-found", "authorization request", id);
    if !records::is_id(Kind::Authorization, id) {
        return Err(not_found());
    }
    let record: AuthorizationRecord =
        records::load(call.environment, Kind::Authorization, id)?.ok_or_else(not_found)?;
    if record.entity != call.context.consumer_entity {
        return Err(not_found());
    }
    Ok(record)
}

/// The citizen answers `id`: their `sub` must be the record's (403), no answer given yet
/// (409), the window open (410). The answer is recorded in the ledger first (503 if it
/// cannot be).
pub fn answer(
    settings: &Settings,
    call: &Call,
    id: &str,
    answer: Answer,
    citizen: &Identity,
) -> Result<AuthorizationRecord, Problem> {
    let mut record = find(call, id)?;
    if record.sub != citizen.sub {
        host::metrics::counter_add("authorizations_total", 1, &[("event", "wrong_citizen")]);
        return Err(problem::citizen_mismatch("authorization request"));
    }
    if let Some(given) = &record.answer {
        host::metrics::counter_add("authorizations_total", 1, &[("event", "conflict")]);
        return Err(problem::already_answered(id, &given.value));
    }
    if call.now_ms > record.expires_ms {
        host::metrics::counter_add("authorizations_total", 1, &[("event", "expired")]);
        return Err(problem::authorization_expired(
            id,
            &rfc3339(record.expires_ms),
        ));
    }
    let evidence = json!({
        "authorization_id": record.id,
        "answer": answer.as_str(),
        "question_sha256": record.question_sha256,
        "citizen": citizen.evidence(),
        "entity": record.entity,
        "system": record.system,
        "environment": call.environment.as_str(),
        "requested_at": rfc3339(record.created_ms),
        "answered_at": rfc3339(call.now_ms),
        "request_id": call.context.request_id,
    });
    let receipt = evidence::append(evidence::AUTHORIZATION_ANSWER, &evidence, call.now_ms)?;
    record.answer = Some(GivenAnswer {
        value: answer.as_str().to_string(),
        at_ms: call.now_ms,
        receipt,
    });
    if let Err(problem) = save(settings, call, &record) {
        host::log::warn(&format!(
            "ciudadania: answer to {id} recorded in the ledger but not in the store: {}",
            problem.detail
        ));
    }
    let event = match answer {
        Answer::Accept => "accepted",
        Answer::Reject => "rejected",
    };
    host::metrics::counter_add("authorizations_total", 1, &[("event", event)]);
    Ok(record)
}
