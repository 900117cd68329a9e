//! Every error the plugin answers, as RFC 9457 problem documents with stable type URIs
//! (`https://chasqui.agetic.gob.bo/problems/ciudadania/<slug>`).
//!
//! Titles carry Spanish and English, for the entity's developers and for citizens'
//! support desks alike; details say what exactly was wrong.

use chasqui_plugin_sdk::Response;

/// The base of every problem type URI of this plugin.
pub const TYPE_BASE: &str = "https://chasqui.agetic.gob.bo/problems/ciudadania/";

/// A problem the plugin answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The HTTP status.
    pub status: u16,
    /// The last segment of the type URI.
    pub slug: &'static str,
    /// The title, Spanish / English.
    pub title: &'static str,
    /// What exactly went wrong.
    pub detail: String,
    /// Extra header fields (`www-authenticate`, `allow`, `retry-after`).
    pub headers: Vec<(&'static str, String)>,
}

impl Problem {
    /// A problem without extra headers.
    pub fn new(
        status: u16,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            slug,
            title,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header field to the answer.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The problem's type URI.
    pub fn type_uri(&self) -> String {
        format!("{TYPE_BASE}{}", self.slug)
    }

    /// The answer: `application/problem+json` with the extra headers.
    pub fn into_response(self) -> Response {
        let mut response =
            Response::problem(self.status, &self.type_uri(), self.title, &self.detail);
        for (name, value) in self.headers {
            response = response.with_header(name, value);
        }
        response
    }
}

/// 404: no route of the plugin's service has this path (test environment only; in
/// production unknown routes pass through).
pub fn route_not_found(path: &str) -> Problem {
    Problem::new(
        404,
        "not-found",
        "Ruta desconocida / Unknown route",
        format!("the Ciudadanía Digital test service has no route {path}"),
    )
}

/// 405: the path exists but not for this method.
pub fn method_not_allowed(method: &str, allow: &'static str) -> Problem {
    Problem::new(
        405,
        "method-not-allowed",
        "Método no permitido / Method not allowed",
        format!("{method} is not allowed here; use {allow}"),
    )
    .with_header("allow", allow)
}

/// 400: a route that needs a JSON body got none.
pub fn body_required() -> Problem {
    Problem::new(
        400,
        "body-required",
        "Cuerpo requerido / Request body required",
        "this route needs a JSON body",
    )
}

/// 415: the request body is not declared as JSON.
pub fn body_not_json(content_type: Option<&str>) -> Problem {
    let declared = content_type.unwrap_or("no content-type");
    Problem::new(
        415,
        "unsupported-media-type",
        "Tipo de contenido no soportado / Unsupported media type",
        format!("the body must be application/json, not {declared}"),
    )
}

/// 413: the request body is over the configured maximum.
pub fn body_too_large(max: usize) -> Problem {
    Problem::new(
        413,
        "body-too-large",
        "Cuerpo demasiado grande / Request body too large",
        format!("the request body is limited to {max} bytes"),
    )
}

/// 400: the body is not the JSON the route expects.
pub fn invalid_body(detail: impl Into<String>) -> Problem {
    Problem::new(
        400,
        "invalid-body",
        "Cuerpo inválido / Invalid request body",
        detail,
    )
}

/// 413: more documents than configured.
pub fn too_many_documents(count: usize, max: usize) -> Problem {
    Problem::new(
        413,
        "too-many-documents",
        "Demasiados documentos / Too many documents",
        format!("{count} documents sent; at most {max} per request"),
    )
}

/// 413: a document is over the configured size.
pub fn document_too_large(index: usize, max: usize) -> Problem {
    Problem::new(
        413,
        "document-too-large",
        "Documento demasiado grande / Document too large",
        format!("documentos[{index}] is over the limit of {max} bytes"),
    )
}

/// 415: a document's declared media type is neither PDF nor JSON.
pub fn document_type_not_allowed(index: usize, declared: &str) -> Problem {
    Problem::new(
        415,
        "document-type-not-allowed",
        "Tipo de documento no permitido / Document type not allowed",
        format!(
            "documentos[{index}].tipo is {declared}; only application/pdf and application/json are accepted"
        ),
    )
}

/// 415: a document's content does not match its declared type.
pub fn document_content_mismatch(index: usize, why: &str) -> Problem {
    Problem::new(
        415,
        "document-content-mismatch",
        "Contenido no corresponde al tipo / Content does not match its type",
        format!("documentos[{index}]: {why}"),
    )
}

/// 400: a document's content is not valid base64.
pub fn invalid_base64(index: usize) -> Problem {
    Problem::new(
        400,
        "invalid-base64",
        "Base64 inválido / Invalid base64",
        format!("documentos[{index}].contenido is not standard base64 (RFC 4648, no line breaks)"),
    )
}

/// 422: the test environment has no synthetic citizen with this `sub`.
pub fn unknown_citizen(sub: &str) -> Problem {
    Problem::new(
        422,
        "unknown-citizen",
        "Ciudadano desconocido / Unknown citizen",
        format!(
            "the test environment has no synthetic citizen with sub {}",
            printable(sub)
        ),
    )
}

/// 404: the test environment's userinfo has no citizen for the token's `sub`.
pub fn citizen_not_found(sub: &str) -> Problem {
    Problem::new(
        404,
        "citizen-not-found",
        "Ciudadano no encontrado / Citizen not found",
        format!(
            "the test environment has no synthetic citizen with sub {}",
            printable(sub)
        ),
    )
}

/// 404: no record with this id is visible to the caller (unknown, of another entity, or
/// gone from the store).
pub fn record_not_found(slug: &'static str, what: &str, id: &str) -> Problem {
    Problem::new(
        404,
        slug,
        "Registro no encontrado / Record not found",
        format!("no {what} {} for this entity", printable(id)),
    )
}

/// 403: the token's citizen is not the one the request was made for.
pub fn citizen_mismatch(what: &str) -> Problem {
    Problem::new(
        403,
        "citizen-mismatch",
        "Ciudadano distinto / Different citizen",
        format!("this {what} was made for another citizen"),
    )
}

/// 409: the approval was already given.
pub fn already_approved(id: &str) -> Problem {
    Problem::new(
        409,
        "already-approved",
        "Ya aprobado / Already approved",
        format!("approval request {id} was already approved"),
    )
}

/// 410: the approval window closed.
pub fn approval_expired(id: &str, expired_at: &str) -> Problem {
    Problem::new(
        410,
        "approval-expired",
        "Plazo de aprobación vencido / Approval window closed",
        format!("approval request {id} could be approved until {expired_at}"),
    )
}

/// 409: the authorization was already answered.
pub fn already_answered(id: &str, answer: &str) -> Problem {
    Problem::new(
        409,
        "already-answered",
        "Ya respondida / Already answered",
        format!("authorization request {id} was already answered: {answer}"),
    )
}

/// 410: the authorization's answer window closed.
pub fn authorization_expired(id: &str, expired_at: &str) -> Problem {
    Problem::new(
        410,
        "authorization-expired",
        "Plazo de respuesta vencido / Answer window closed",
        format!("authorization request {id} could be answered until {expired_at}"),
    )
}

/// 503: the audit ledger refused the evidence, so nothing was done.
pub fn ledger_unavailable() -> Problem {
    Problem::new(
        503,
        "ledger-unavailable",
        "Registro de auditoría no disponible / Audit ledger unavailable",
        "the evidence could not be recorded in the audit ledger; nothing was done, retry shortly",
    )
    .with_header("retry-after", "1")
}

/// 503: the key-value store failed, so the record could not be read or kept.
pub fn storage_unavailable() -> Problem {
    Problem::new(
        503,
        "storage-unavailable",
        "Almacenamiento no disponible / Storage unavailable",
        "the plugin's record store is unavailable; retry shortly",
    )
    .with_header("retry-after", "1")
}

/// 503: no issuer is configured for this environment, so no token can be checked.
pub fn authentication_not_configured(environment: &str) -> Problem {
    Problem::new(
        503,
        "authentication-not-configured",
        "Autenticación no configurada / Authentication not configured",
        format!(
            "no Ciudadanía Digital issuer is configured for {environment}: set issuers.{environment} in the plugin's configuration"
        ),
    )
}

/// Text from the client, shortened and stripped of control characters for a detail.
pub fn printable(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(80).collect();
    if text.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chasqui_plugin_sdk::serde_json::{self, Value};

    #[test]
    fn a_problem_becomes_a_problem_document_with_its_headers() {
        let response = method_not_allowed("PUT", "POST").into_response();
        assert_eq!(response.status, 405);
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(
            body["type"],
            "https://chasqui.agetic.gob.bo/problems/ciudadania/method-not-allowed"
        );
        assert_eq!(body["status"], 405);
        assert!(response
            .headers
            .iter()
            .any(|h| h.name == "allow" && h.value == "POST"));
    }

    #[test]
    fn client_text_is_shortened_for_details() {
        assert_eq!(printable("ab\ncd"), "abcd");
        assert_eq!(printable(&"x".repeat(100)).chars().count(), 81);
    }
}
