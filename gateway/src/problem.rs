//! RFC 9457 problem details: one stable `type` per cause a client can meet.
//!
//! The type URIs never change once published; clients may branch on them.
//! Titles carry Spanish and English, because the people reading them are
//! Bolivian integrators and the tooling around them is English.

use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use serde::Serialize;

/// Base of every problem type URI.
pub const TYPE_BASE: &str = "https://chasqui.agetic.gob.bo/problems/";

/// Every cause of an error answer the gateway gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// No `Authorization: Bearer` token was sent.
    TokenMissing,
    /// The token is malformed or unknown.
    TokenInvalid,
    /// The token has expired.
    TokenExpired,
    /// The token was revoked.
    TokenRevoked,
    /// The token's environment differs from the one the URL asks for (`/fake/`).
    EnvironmentMismatch,
    /// The consumer holds no grant for this service in this environment.
    NoGrant,
    /// No service is published at `/{entidad}/v{n}/`.
    UnknownService,
    /// The path does not name a service at all.
    NotFound,
    /// The service is not enabled in this environment.
    EnvironmentUnavailable,
    /// The path is malformed: bad percent-encoding, an encoded slash, or dot
    /// segments that climb out of the service.
    BadPath,
    /// The request is malformed in some other way.
    BadRequest,
    /// The request body is larger than the limit.
    PayloadTooLarge,
    /// The request headers are larger than the limit.
    HeadersTooLarge,
    /// The upstream refused the connection or could not be reached.
    UpstreamUnreachable,
    /// The upstream broke the exchange (reset, invalid answer).
    UpstreamError,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// Every upstream of the environment is failing its health checks.
    NoHealthyUpstream,
    /// The consumer exceeded its rate limit for the service.
    RateLimited,
    /// The consumer spent its daily or monthly quota for the service.
    QuotaExhausted,
    /// The request body breaks the service's contract (its OpenAPI schema).
    InvalidRequestBody,
    /// The upstream's answer breaks the service's contract.
    InvalidUpstreamResponse,
    /// A plugin on the service's chain failed (trap, time or memory limit,
    /// broken contract) and its policy fails closed.
    PluginFailed,
    /// A plugin on the chain is suspended by its breaker after repeated
    /// failures, and its policy fails closed.
    PluginUnavailable,
    /// Something failed inside the gateway.
    Internal,
    /// Admin API: no valid admin token (`Authorization: Bearer chq_admin_...`).
    AdminUnauthenticated,
    /// Admin API: the principal's role or entity may not do this.
    Forbidden,
    /// Admin API: the operation clashes with what exists (a duplicate code).
    Conflict,
    /// Admin API: the procedure does not allow this step from its current state.
    InvalidTransition,
    /// Admin API: a field of the request breaks a rule; the answer names it.
    Validation,
    /// Admin API: the uploaded document is not of an accepted type (PDF).
    UnsupportedDocument,
    /// Admin API: the path exists but not with this method.
    MethodNotAllowed,
}

impl Problem {
    /// HTTP status, stable type slug and bilingual title.
    pub fn parts(self) -> (u16, &'static str, &'static str) {
        use Problem::*;
        match self {
            TokenMissing => (
                401,
                "token-missing",
                "Falta el token de acceso / Missing access token",
            ),
            TokenInvalid => (
                401,
                "token-invalid",
                "Token de acceso inválido / Invalid access token",
            ),
            TokenExpired => (
                401,
                "token-expired",
                "Token de acceso vencido / Expired access token",
            ),
            TokenRevoked => (
                401,
                "token-revoked",
                "Token de acceso revocado / Revoked access token",
            ),
            EnvironmentMismatch => (
                403,
                "environment-mismatch",
                "El token no corresponde a este entorno / Token not valid for this environment",
            ),
            NoGrant => (
                403,
                "no-grant",
                "Sin autorización para este servicio / No access grant for this service",
            ),
            UnknownService => (
                404,
                "unknown-service",
                "Servicio desconocido / Unknown service",
            ),
            NotFound => (404, "not-found", "Recurso no encontrado / Not found"),
            EnvironmentUnavailable => (
                503,
                "environment-unavailable",
                "Servicio no habilitado en este entorno / Service not enabled in this environment",
            ),
            BadPath => (400, "bad-path", "Ruta inválida / Invalid path"),
            BadRequest => (400, "bad-request", "Solicitud inválida / Bad request"),
            PayloadTooLarge => (
                413,
                "payload-too-large",
                "Cuerpo de la solicitud demasiado grande / Request body too large",
            ),
            HeadersTooLarge => (
                431,
                "headers-too-large",
                "Cabeceras demasiado grandes / Request header fields too large",
            ),
            UpstreamUnreachable => (
                502,
                "upstream-unreachable",
                "El servicio publicado no acepta conexiones / Upstream refused the connection",
            ),
            UpstreamError => (
                502,
                "upstream-error",
                "Respuesta inválida del servicio publicado / Invalid upstream response",
            ),
            UpstreamTimeout => (
                504,
                "upstream-timeout",
                "El servicio publicado no respondió a tiempo / Upstream timed out",
            ),
            NoHealthyUpstream => (
                503,
                "no-healthy-upstream",
                "Ningún servidor del servicio está disponible / No healthy upstream",
            ),
            RateLimited => (
                429,
                "rate-limited",
                "Demasiadas solicitudes / Too many requests",
            ),
            QuotaExhausted => (
                429,
                "quota-exhausted",
                "Cuota del periodo agotada / Quota exhausted for this period",
            ),
            InvalidRequestBody => (
                400,
                "invalid-request-body",
                "El cuerpo no cumple el contrato del servicio / Request body breaks the service contract",
            ),
            InvalidUpstreamResponse => (
                502,
                "invalid-upstream-response",
                "La respuesta del servicio no cumple su contrato / Upstream answer breaks the service contract",
            ),
            PluginFailed => (
                500,
                "plugin-failed",
                "Falló un complemento de la pasarela / A gateway plugin failed",
            ),
            PluginUnavailable => (
                503,
                "plugin-unavailable",
                "Complemento suspendido temporalmente / Gateway plugin temporarily suspended",
            ),
            Internal => (
                500,
                "internal",
                "Error interno de la pasarela / Internal gateway error",
            ),
            AdminUnauthenticated => (
                401,
                "admin-unauthenticated",
                "Falta una credencial de administración válida / Missing or invalid admin token",
            ),
            Forbidden => (
                403,
                "forbidden",
                "Operación no permitida para este rol o entidad / Not allowed for this role or entity",
            ),
            Conflict => (409, "conflict", "Conflicto con datos existentes / Conflict"),
            InvalidTransition => (
                409,
                "invalid-transition",
                "Paso no permitido en el estado actual del trámite / Step not allowed in the current state",
            ),
            Validation => (
                422,
                "validation",
                "Datos inválidos / Invalid field value",
            ),
            UnsupportedDocument => (
                415,
                "unsupported-document",
                "Tipo de documento no admitido / Unsupported document type",
            ),
            MethodNotAllowed => (
                405,
                "method-not-allowed",
                "Método no permitido / Method not allowed",
            ),
        }
    }

    /// HTTP status of this problem.
    pub fn status(self) -> u16 {
        self.parts().0
    }

    /// The full, stable `type` URI.
    pub fn type_uri(self) -> String {
        format!("{TYPE_BASE}{}", self.parts().1)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    request_id: &'a str,
}

/// Renders the JSON body of a problem with extension members (RFC 9457
/// §3.2), such as the failing JSON `pointer` of a contract violation.
pub fn body_with(
    problem: Problem,
    detail: &str,
    request_id: &str,
    members: &[(&'static str, serde_json::Value)],
) -> Bytes {
    let (status, _, title) = problem.parts();
    let mut doc = serde_json::json!({
        "type": problem.type_uri(),
        "title": title,
        "status": status,
        "detail": detail,
        "request_id": request_id,
    });
    if let Some(map) = doc.as_object_mut() {
        for (name, value) in members {
            map.insert((*name).to_string(), value.clone());
        }
    }
    Bytes::from(doc.to_string())
}

/// Writes a problem answer with extension members and extra header fields.
pub async fn respond_with_members(
    session: &mut Session,
    problem: Problem,
    detail: &str,
    request_id: &str,
    members: &[(&'static str, serde_json::Value)],
) -> pingora_error::Result<()> {
    let body = body_with(problem, detail, request_id, members);
    let resp = header(problem, body.len(), request_id)?;
    if !session.is_body_empty() && !session.is_body_done() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// Renders the JSON body of a problem.
pub fn body(problem: Problem, detail: &str, request_id: &str) -> Bytes {
    let (status, _, title) = problem.parts();
    let body = Body {
        type_uri: problem.type_uri(),
        title,
        status,
        detail,
        request_id,
    };
    // Serialising a struct of strings cannot fail; fall back to an empty
    // object rather than panic if it ever did.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec()))
}

/// Builds the response header of a problem answer.
pub fn header(
    problem: Problem,
    body_len: usize,
    request_id: &str,
) -> pingora_error::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(problem.status(), Some(6))?;
    resp.insert_header("content-type", "application/problem+json")?;
    resp.insert_header("content-length", body_len.to_string())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header("x-request-id", request_id)?;
    if problem.status() == 401 {
        let error = if problem == Problem::TokenMissing {
            ""
        } else {
            ", error=\"invalid_token\""
        };
        resp.insert_header(
            "www-authenticate",
            format!("Bearer realm=\"chasqui\"{error}"),
        )?;
    }
    Ok(resp)
}

/// Writes a problem answer to the client. Keep-alive is kept only when the
/// request carried no body that we left unread.
pub async fn respond(
    session: &mut Session,
    problem: Problem,
    detail: &str,
    request_id: &str,
) -> pingora_error::Result<()> {
    respond_with_headers(session, problem, detail, request_id, &[]).await
}

/// Like [`respond`], with extra header fields (e.g. `Retry-After`).
pub async fn respond_with_headers(
    session: &mut Session,
    problem: Problem,
    detail: &str,
    request_id: &str,
    extra: &[(&'static str, String)],
) -> pingora_error::Result<()> {
    let body = body(problem, detail, request_id);
    let mut resp = header(problem, body.len(), request_id)?;
    for (name, value) in extra {
        resp.insert_header(*name, value.as_str())?;
    }
    if !session.is_body_empty() && !session.is_body_done() {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_has_a_distinct_stable_type() {
        use Problem::*;
        let all = [
            TokenMissing,
            TokenInvalid,
            TokenExpired,
            TokenRevoked,
            EnvironmentMismatch,
            NoGrant,
            UnknownService,
            NotFound,
            EnvironmentUnavailable,
            BadPath,
            BadRequest,
            PayloadTooLarge,
            HeadersTooLarge,
            UpstreamUnreachable,
            UpstreamError,
            UpstreamTimeout,
            NoHealthyUpstream,
            RateLimited,
            QuotaExhausted,
            InvalidRequestBody,
            InvalidUpstreamResponse,
            PluginFailed,
            PluginUnavailable,
            Internal,
            AdminUnauthenticated,
            Forbidden,
            Conflict,
            InvalidTransition,
            Validation,
            UnsupportedDocument,
            MethodNotAllowed,
        ];
        let mut types: Vec<String> = all.iter().map(|p| p.type_uri()).collect();
        types.sort();
        types.dedup();
        assert_eq!(types.len(), all.len());
        assert_eq!(
            TokenExpired.type_uri(),
            "https://chasqui.agetic.gob.bo/problems/token-expired"
        );
    }

    #[test]
    fn body_is_rfc9457_json() {
        let b = body(
            Problem::NoGrant,
            "no grant for segip/v2 in produccion",
            "abc",
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["status"], 403);
        assert_eq!(v["type"], "https://chasqui.agetic.gob.bo/problems/no-grant");
        assert_eq!(v["request_id"], "abc");
        assert!(v["title"].as_str().unwrap().contains('/'));
    }
}
