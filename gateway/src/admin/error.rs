//! Errors of the admin API as RFC 9457 problems, with the same stable types
//! as the data plane ([`crate::problem`]).
//!
//! A handler's error becomes a response carrying a [`PendingProblem`]
//! extension; the [`finish`] middleware, which knows the request id, renders
//! it. Errors produced outside handlers (an unknown path, a wrong method, a
//! malformed path parameter) are turned into problems there too, so every
//! error answer of the admin listener is `application/problem+json`.

use crate::problem::Problem;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chasqui_catalog::documents::UploadError;
use chasqui_catalog::domain::DomainError;
use serde::Serialize;

/// An error answer of the admin API.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The cause.
    pub problem: Problem,
    /// What happened, for a person.
    pub detail: String,
    /// The field at fault, for validation errors.
    pub field: Option<String>,
}

impl ApiError {
    /// An error of `problem` with `detail`.
    pub fn new(problem: Problem, detail: impl Into<String>) -> ApiError {
        ApiError {
            problem,
            detail: detail.into(),
            field: None,
        }
    }

    /// A validation error on `field`.
    pub fn field(field: impl Into<String>, detail: impl Into<String>) -> ApiError {
        let field = field.into();
        let detail = detail.into();
        ApiError {
            problem: Problem::Validation,
            detail: format!("{field}: {detail}"),
            field: Some(field),
        }
    }

    /// A failure inside the gateway; the cause is logged, not shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "admin API failure");
        ApiError::new(
            Problem::Internal,
            "the operation failed inside the gateway; try again",
        )
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> ApiError {
        match e {
            DomainError::NotFound(_) => ApiError::new(Problem::NotFound, e.to_string()),
            DomainError::Validation { field, message } => ApiError::field(field, message),
            DomainError::Conflict(_) => ApiError::new(Problem::Conflict, e.to_string()),
            DomainError::InvalidTransition { .. } => {
                ApiError::new(Problem::InvalidTransition, e.to_string())
            }
            DomainError::Forbidden(_) => ApiError::new(Problem::Forbidden, e.to_string()),
            DomainError::Db(db) => ApiError::internal(&db),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> ApiError {
        match e {
            UploadError::NotPdf => ApiError::new(Problem::UnsupportedDocument, e.to_string()),
            UploadError::TooLarge => ApiError::new(Problem::PayloadTooLarge, e.to_string()),
            UploadError::Domain(d) => d.into(),
        }
    }
}

/// Marks a response whose problem body the middleware still has to write.
#[derive(Debug, Clone)]
pub struct PendingProblem(pub ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.problem.status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = status.into_response();
        resp.extensions_mut().insert(PendingProblem(self));
        resp
    }
}

/// The request id of an admin request (32 hex characters), also sent back
/// as `X-Request-Id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Where the authentication of a request leaves who the caller is, so that
/// the request's log line names the principal (never its token).
#[derive(Debug, Clone, Default)]
pub struct PrincipalSlot(pub std::sync::Arc<std::sync::OnceLock<String>>);

/// The JSON body of a problem.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ProblemBody {
    /// Stable URI of the cause: `https://chasqui.agetic.gob.bo/problems/<slug>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Bilingual title (Spanish / English).
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened.
    pub detail: String,
    /// The request id, also in `X-Request-Id`.
    pub request_id: String,
    /// For `validation`: the field at fault (`contacts[0].email`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

fn render(err: &ApiError, request_id: &str) -> Response {
    let (status, _, title) = err.problem.parts();
    let body = ProblemBody {
        type_uri: err.problem.type_uri(),
        title: title.to_string(),
        status,
        detail: err.detail.clone(),
        request_id: request_id.to_string(),
        field: err.field.clone(),
    };
    let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Body::from(json));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if err.problem == Problem::AdminUnauthenticated {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"chasqui-admin\""),
        );
    }
    resp
}

/// The problem an error status produced outside a handler stands for.
fn problem_for_status(status: StatusCode) -> Problem {
    match status.as_u16() {
        401 => Problem::AdminUnauthenticated,
        403 => Problem::Forbidden,
        404 => Problem::NotFound,
        405 => Problem::MethodNotAllowed,
        409 => Problem::Conflict,
        413 => Problem::PayloadTooLarge,
        415 => Problem::UnsupportedDocument,
        422 => Problem::Validation,
        400..=499 => Problem::BadRequest,
        _ => Problem::Internal,
    }
}

/// Middleware around every admin route: assigns the request id, renders
/// problems, turns any other error answer into a problem, marks answers
/// `no-store`, and logs one line per request (never a token).
pub async fn finish(mut req: Request, next: Next) -> Response {
    let mut raw = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    let request_id = crate::hex(&raw);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let principal = PrincipalSlot::default();
    req.extensions_mut().insert(principal.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    let mut resp = if let Some(PendingProblem(err)) = resp.extensions().get::<PendingProblem>() {
        render(err, &request_id)
    } else if status.is_client_error() || status.is_server_error() {
        let is_problem = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        if is_problem {
            resp
        } else {
            let text = axum::body::to_bytes(resp.into_body(), 4096)
                .await
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .unwrap_or_default();
            let problem = problem_for_status(status);
            let detail = if text.is_empty() {
                problem.parts().2.to_string()
            } else {
                text
            };
            render(&ApiError::new(problem, detail), &request_id)
        }
    } else {
        resp
    };
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", v);
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    tracing::info!(
        target: "chasqui::admin",
        %method,
        %path,
        status = resp.status().as_u16(),
        took_ms = started.elapsed().as_millis() as u64,
        request_id = %request_id,
        principal = principal.0.get().map_or("-", String::as_str),
        "admin request"
    );
    resp
}

/// The answer to a path the admin API does not have.
pub async fn not_found() -> ApiError {
    ApiError::new(Problem::NotFound, "the admin API has no such path")
}

/// The answer to a method a path does not accept.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        Problem::MethodNotAllowed,
        "this path does not accept this method",
    )
}
