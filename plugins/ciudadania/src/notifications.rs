//! Electronic notifications: a notification is legally valid from the moment it is
//! delivered to the citizen's mailbox, so that moment goes to the ledger with the hash of
//! what was delivered.
//!
//! In the test environment the plugin is the mailbox: delivery happens when it accepts
//! the notification. In production the upstream is the mailbox: delivery is its 2xx
//! answer, which the plugin witnesses and records.

use crate::call::Call;
use crate::config::Settings;
use crate::documents::{self, DocumentInput, DocumentSummary};
use crate::evidence::{self, Receipt};
use crate::problem::Problem;
use crate::records::{self, hex};
use crate::routes::Kind;
use crate::time::rfc3339;
use crate::validation;
use chasqui_plugin_sdk::host;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::borrow::Cow;

/// Longest subject, in characters.
const MAX_SUBJECT_CHARS: usize = 200;
/// Longest message, in characters.
const MAX_MESSAGE_CHARS: usize = 20_000;

/// The body of `POST .../notificaciones`.
#[derive(Debug, Deserialize)]
struct CreateBody<'a> {
    #[serde(borrow)]
    sub: Cow<'a, str>,
    #[serde(borrow)]
    asunto: Cow<'a, str>,
    #[serde(borrow)]
    mensaje: Cow<'a, str>,
    #[serde(default, borrow)]
    documentos: Vec<DocumentInput<'a>>,
}

/// A checked notification, not yet delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// `not-…`.
    pub id: String,
    /// The sending entity.
    pub entity: Option<String>,
    /// The sending system.
    pub system: Option<String>,
    /// The addressee.
    pub sub: String,
    /// The subject line.
    pub subject: String,
    /// SHA-256 of the request body exactly as received: what was delivered.
    pub content_sha256: String,
    /// Attached documents, hashed.
    pub documents: Vec<DocumentSummary>,
}

/// A delivered notification as the plugin keeps it (test environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRecord {
    /// `not-…`.
    pub id: String,
    /// The sending entity.
    pub entity: Option<String>,
    /// The sending system.
    pub system: Option<String>,
    /// The addressee.
    pub sub: String,
    /// The subject line.
    pub subject: String,
    /// SHA-256 of the request body.
    pub content_sha256: String,
    /// Attached documents, hashed.
    pub documents: Vec<DocumentSummary>,
    /// When it was delivered: legal validity starts here.
    pub delivered_ms: u64,
    /// Where the delivery is in the ledger.
    pub receipt: Receipt,
}

impl NotificationRecord {
    /// The record as answers show it.
    pub fn view(&self) -> Value {
        json!({
            "id": self.id,
            "estado": "ENTREGADA",
            "sub": self.sub,
            "asunto": self.subject,
            "entregada": rfc3339(self.delivered_ms),
            "contenido_sha256": self.content_sha256,
            "documentos": self.documents.iter().map(DocumentSummary::view).collect::<Vec<_>>(),
            "recibo": self.receipt.view(),
        })
    }
}

/// Checks a notification body: addressee, subject, message and optional documents.
pub fn check(
    settings: &Settings,
    call: &Call,
    id: &str,
    body: &[u8],
) -> Result<Notification, Problem> {
    let request: CreateBody<'_> = validation::parse_body(body)?;
    let sub = validation::citizen(call, &request.sub)?;
    let subject = validation::text("asunto", &request.asunto, MAX_SUBJECT_CHARS)?;
    validation::text("mensaje", &request.mensaje, MAX_MESSAGE_CHARS)?;
    let documents = documents::check(
        &request.documentos,
        documents::Limits {
            max_documents: settings.max_documents,
            max_document_bytes: settings.max_document_bytes,
        },
    )?;
    Ok(Notification {
        id: id.to_string(),
        entity: call.context.consumer_entity.clone(),
        system: call.context.consumer_system.clone(),
        sub,
        subject,
        content_sha256: hex(&host::crypto::sha256(body)),
        documents,
    })
}

/// Records the delivery of `notification` at `delivered_ms` in the ledger.
pub fn record_delivery(
    call: &Call,
    notification: &Notification,
    delivered_ms: u64,
) -> Result<Receipt, Problem> {
    let evidence = json!({
        "notification_id": notification.id,
        "citizen": { "sub": notification.sub },
        "entity": notification.entity,
        "system": notification.system,
        "environment": call.environment.as_str(),
        "subject": notification.subject,
        "content_sha256": notification.content_sha256,
        "documents": notification.documents.iter().map(DocumentSummary::evidence).collect::<Vec<_>>(),
        "delivered_at": rfc3339(delivered_ms),
        "request_id": call.context.request_id,
    });
    let receipt = evidence::append(evidence::NOTIFICATION_DELIVERED, &evidence, delivered_ms)?;
    host::metrics::counter_add("notifications_total", 1, &[("event", "delivered")]);
    Ok(receipt)
}

/// Test environment: delivers to the synthetic mailbox now, records the delivery and
/// keeps the notification for reads.
pub fn deliver(
    settings: &Settings,
    call: &Call,
    notification: Notification,
) -> Result<NotificationRecord, Problem> {
    let receipt = record_delivery(call, &notification, call.now_ms)?;
    let record = NotificationRecord {
        id: notification.id,
        entity: notification.entity,
        system: notification.system,
        sub: notification.sub,
        subject: notification.subject,
        content_sha256: notification.content_sha256,
        documents: notification.documents,
        delivered_ms: call.now_ms,
        receipt,
    };
    // Delivered and recorded: a store failure only hides it from later reads.
    if let Err(problem) = records::save(
        call.environment,
        Kind::Notification,
        &record.id,
        &record,
        call.now_ms,
        call.now_ms.saturating_add(settings.retention_ms),
    ) {
        host::log::warn(&format!(
            "ciudadania: notification {} delivered but not stored: {}",
            record.id, problem.detail
        ));
    }
    Ok(record)
}

/// The notification `id` as the calling entity may see it (test environment).
pub fn find(call: &Call, id: &str) -> Result<NotificationRecord, Problem> {
    let not_found =
        || crate::problem::record_not_found("notification-not-found", "notification", id);
    if !records::is_id(Kind::Notification, id) {
        return Err(not_found());
    }
    let record: NotificationRecord =
        records::load(call.environment, Kind::Notification, id)?.ok_or_else(not_found)?;
    if record.entity != call.context.consumer_entity {
        return Err(not_found());
    }
    Ok(record)
}
