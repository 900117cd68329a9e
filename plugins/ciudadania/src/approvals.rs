//! Document approval: the entity asks a citizen to approve documents; the citizen
//! approves within the window with their own token; the approval goes to the ledger.

use crate::call::Call;
use crate::config::Settings;
use crate::documents::{self, DocumentInput, DocumentSummary};
use crate::evidence::{self, Receipt};
use crate::identity::Identity;
use crate::problem::{self, Problem};
use crate::records;
use crate::routes::Kind;
use crate::time::rfc3339;
use crate::validation;
use chasqui_plugin_sdk::host;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::borrow::Cow;

/// The body of `POST .../aprobaciones`.
#[derive(Debug, Deserialize)]
struct CreateBody<'a> {
    #[serde(borrow)]
    sub: Cow<'a, str>,
    #[serde(default, borrow)]
    descripcion: Option<Cow<'a, str>>,
    #[serde(borrow)]
    documentos: Vec<DocumentInput<'a>>,
}

/// Longest description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 1000;

/// An approval request as the plugin keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// `apr-…`.
    pub id: String,
    /// The entity that asked (gateway consumer entity).
    pub entity: Option<String>,
    /// The entity's system that asked.
    pub system: Option<String>,
    /// The citizen asked to approve.
    pub sub: String,
    /// What the citizen is approving, in words.
    pub description: Option<String>,
    /// The documents, hashed.
    pub documents: Vec<DocumentSummary>,
    /// When the request arrived.
    pub created_ms: u64,
    /// When the window closes.
    pub expires_ms: u64,
    /// The approval, once given.
    pub approval: Option<Approval>,
}

/// A given approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// When the citizen approved.
    pub at_ms: u64,
    /// The citizen's CI, when the token stated it.
    pub ci: Option<String>,
    /// Where the approval is in the ledger.
    pub receipt: Receipt,
}

impl ApprovalRecord {
    /// The record as answers show it; `estado` is computed at `now_ms`.
    pub fn view(&self, now_ms: u64) -> Value {
        let state = match &self.approval {
            Some(_) => "APROBADO",
            None if now_ms > self.expires_ms => "EXPIRADO",
            None => "PENDIENTE",
        };
        let mut view = json!({
            "id": self.id,
            "estado": state,
            "sub": self.sub,
            "creado": rfc3339(self.created_ms),
            "expira": rfc3339(self.expires_ms),
            "documentos": self.documents.iter().map(DocumentSummary::view).collect::<Vec<_>>(),
        });
        if let Some(object) = view.as_object_mut() {
            if let Some(description) = &self.description {
                object.insert("descripcion".into(), json!(description));
            }
            if let Some(approval) = &self.approval {
                object.insert("aprobado".into(), json!(rfc3339(approval.at_ms)));
                object.insert("recibo".into(), approval.receipt.view());
            }
        }
        view
    }
}

/// Checks a creation body and keeps the request under `id`, with the window starting
/// when the request arrived.
pub fn create(
    settings: &Settings,
    call: &Call,
    id: &str,
    body: &[u8],
) -> Result<ApprovalRecord, Problem> {
    let request: CreateBody<'_> = validation::parse_body(body)?;
    let sub = validation::citizen(call, &request.sub)?;
    let description = validation::optional_text(
        "descripcion",
        request.descripcion.as_deref(),
        MAX_DESCRIPTION_CHARS,
    )?;
    if request.documentos.is_empty() {
        return Err(problem::invalid_body(
            "documentos must hold at least one document",
        ));
    }
    let documents = documents::check(
        &request.documentos,
        documents::Limits {
            max_documents: settings.max_documents,
            max_document_bytes: settings.max_document_bytes,
        },
    )?;
    let record = ApprovalRecord {
        id: id.to_string(),
        entity: call.context.consumer_entity.clone(),
        system: call.context.consumer_system.clone(),
        sub,
        description,
        documents,
        created_ms: call.now_ms,
        expires_ms: call.now_ms.saturating_add(settings.approval_window_ms),
        approval: None,
    };
    records::save(
        call.environment,
        Kind::Approval,
        id,
        &record,
        call.now_ms,
        retention_end(settings, &record),
    )?;
    host::metrics::counter_add("approvals_total", 1, &[("event", "requested")]);
    host::log::info(&format!(
        "ciudadania: approval {id} requested for {} document(s)",
        record.documents.len()
    ));
    Ok(record)
}

fn retention_end(settings: &Settings, record: &ApprovalRecord) -> u64 {
    record.created_ms.saturating_add(settings.retention_ms)
}

/// The approval request `id` as the calling entity may see it: 404 for a malformed id,
/// an unknown one, or one of another entity.
pub fn find(call: &Call, id: &str) -> Result<ApprovalRecord, Problem> {
    let not_found = || problem::record_not_found("approval-not-found", "approval request", id);
    if !records::is_id(Kind::Approval, id) {
        return Err(not_found());
    }
    let record: ApprovalRecord =
        records::load(call.environment, Kind::Approval, id)?.ok_or_else(not_found)?;
    if record.entity != call.context.consumer_entity {
        return Err(not_found());
    }
    Ok(record)
}

/// The citizen approves `id`: their token's `sub` must be the record's (403), the
/// approval not given yet (409) and the window open (410). The approval is recorded in
/// the ledger before anything else changes: without evidence nothing is approved (503).
pub fn approve(
    settings: &Settings,
    call: &Call,
    id: &str,
    citizen: &Identity,
) -> Result<ApprovalRecord, Problem> {
    let mut record = find(call, id)?;
    if record.sub != citizen.sub {
        host::metrics::counter_add("approvals_total", 1, &[("event", "wrong_citizen")]);
        return Err(problem::citizen_mismatch("approval request"));
    }
    if record.approval.is_some() {
        host::metrics::counter_add("approvals_total", 1, &[("event", "conflict")]);
        return Err(problem::already_approved(id));
    }
    if call.now_ms > record.expires_ms {
        host::metrics::counter_add("approvals_total", 1, &[("event", "expired")]);
        return Err(problem::approval_expired(id, &rfc3339(record.expires_ms)));
    }
    let evidence = json!({
        "approval_id": record.id,
        "documents": record.documents.iter().map(DocumentSummary::evidence).collect::<Vec<_>>(),
        "citizen": citizen.evidence(),
        "entity": record.entity,
        "system": record.system,
        "environment": call.environment.as_str(),
        "requested_at": rfc3339(record.created_ms),
        "approved_at": rfc3339(call.now_ms),
        "window_expires_at": rfc3339(record.expires_ms),
        "request_id": call.context.request_id,
    });
    let receipt = evidence::append(evidence::APPROVAL, &evidence, call.now_ms)?;
    record.approval = Some(Approval {
        at_ms: call.now_ms,
        ci: citizen.ci.clone(),
        receipt,
    });
    // The ledger holds the approval now; a failure to update the cache only means a later
    // read shows it pending (and a repeated approval would be recorded again).
    if let Err(problem) = records::save(
        call.environment,
        Kind::Approval,
        id,
        &record,
        call.now_ms,
        retention_end(settings, &record),
    ) {
        host::log::warn(&format!(
            "ciudadania: approval {id} recorded in the ledger but not in the store: {}",
            problem.detail
        ));
    }
    host::metrics::counter_add("approvals_total", 1, &[("event", "approved")]);
    Ok(record)
}
