//! Documents: the adhesion agreements (PDF) the procedures rest on.

use super::ApiResult;
use crate::admin::audit;
use crate::admin::error::ProblemBody;
use crate::admin::extract::{Auth, Params, RawBody};
use crate::admin::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chasqui_catalog::documents::{Document, ADHESION_AGREEMENT, MAX_DOCUMENT_BYTES};
use chasqui_catalog::domain::{Page, PageRequest};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

/// The bytes of a PDF, for the OpenAPI document.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Pdf(pub Vec<u8>);

/// Which entity a document belongs to and how it is named.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The entity the document belongs to (a publisher or consumer may only
    /// name its own).
    pub entity: String,
    /// `adhesion_agreement` (the default).
    pub kind: Option<String>,
    /// The file's name, for people.
    pub filename: Option<String>,
}

/// Filters and page of the document list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DocumentQuery {
    /// Only this entity's documents (operators; others always see their own).
    pub entity: Option<String>,
    /// Page size (1-200, default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Uploads a PDF (the body itself, at most 8 MiB; recognised by its
/// content); stored with its SHA-256.
#[utoipa::path(post, path = "/documents", tag = "documents", params(UploadQuery),
    request_body(content = Pdf, description = "The PDF", content_type = "application/pdf"),
    responses((status = 201, body = Document), (status = 401, body = ProblemBody), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody), (status = 413, body = ProblemBody), (status = 415, body = ProblemBody),
        (status = 422, body = ProblemBody)))]
pub async fn upload(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<UploadQuery>,
    RawBody(content): RawBody<MAX_DOCUMENT_BYTES>,
) -> ApiResult<(StatusCode, Json<Document>)> {
    let doc = state
        .store
        .upload_document(
            &auth.actor,
            &q.entity,
            q.kind.as_deref().unwrap_or(ADHESION_AGREEMENT),
            q.filename.as_deref().unwrap_or(""),
            &content,
        )
        .await?;
    audit::record(
        &state,
        &auth,
        "document.upload",
        json!({
            "document_id": doc.id,
            "entity": doc.entity,
            "kind": doc.kind,
            "sha256": doc.sha256,
            "size_bytes": doc.size_bytes,
        }),
    );
    Ok((StatusCode::CREATED, Json(doc)))
}

/// Lists documents: operators all, others their entity's.
#[utoipa::path(get, path = "/documents", tag = "documents", params(DocumentQuery),
    responses((status = 200, body = Page<Document>), (status = 401, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn list(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<DocumentQuery>,
) -> ApiResult<Json<Page<Document>>> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    Ok(Json(
        state
            .store
            .list_documents(&auth.actor, q.entity.as_deref(), page)
            .await?,
    ))
}

/// A document's metadata (operators and its entity).
#[utoipa::path(get, path = "/documents/{id}", tag = "documents",
    params(("id" = i64, Path, description = "The document's id")),
    responses((status = 200, body = Document), (status = 401, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn get(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Document>> {
    Ok(Json(state.store.document(&auth.actor, id).await?))
}

/// A document's content, as uploaded (operators and its entity).
#[utoipa::path(get, path = "/documents/{id}/content", tag = "documents",
    params(("id" = i64, Path, description = "The document's id")),
    responses((status = 200, description = "The PDF", content_type = "application/pdf", body = Pdf),
        (status = 401, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub async fn content(
    auth: Auth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let (doc, bytes) = state.store.document_content(&auth.actor, id).await?;
    let mut resp = bytes.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pdf"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"sha256:{}\"", doc.sha256)) {
        headers.insert(header::ETAG, v);
    }
    Ok(resp)
}
