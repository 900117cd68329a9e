//! Extractors of the admin API: the authenticated principal, JSON bodies and
//! query strings whose errors name the field, and raw uploads with a size
//! limit.

use super::error::{ApiError, PrincipalSlot, RequestId};
use super::AppState;
use crate::problem::Problem;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use bytes::{Bytes, BytesMut};
use chasqui_catalog::domain::Actor;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

/// Largest JSON body accepted (OpenAPI documents included), in bytes.
pub const MAX_JSON_BYTES: usize = 1 << 20;
/// An upload larger than its limit is read and dropped up to this many bytes
/// so the client gets a clean 413; beyond it the connection is closed.
const DRAIN_LIMIT: usize = 64 << 20;

/// The authenticated principal of a request, and the request id.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Who is acting.
    pub actor: Actor,
    /// The request id, for the audit ledger.
    pub request_id: String,
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Auth, ApiError> {
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let unauthenticated = |detail: &str| ApiError::new(Problem::AdminUnauthenticated, detail);
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            unauthenticated("send an admin token as `Authorization: Bearer chq_admin_...`")
        })?;
        let value = value
            .to_str()
            .map_err(|_| unauthenticated("the Authorization header is not valid text"))?;
        let token = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => {
                return Err(unauthenticated(
                    "the Authorization header must use the Bearer scheme",
                ))
            }
        };
        let actor = state
            .store
            .authenticate_admin(token)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| unauthenticated("the admin token is malformed, unknown or revoked"))?;
        if let Some(slot) = parts.extensions.get::<PrincipalSlot>() {
            let _ = slot.0.set(actor.ledger_name());
        }
        Ok(Auth { actor, request_id })
    }
}

/// Reads a whole body of at most `limit` bytes. A larger body is read on
/// (up to a bound) and dropped, then refused with 413.
async fn read_limited(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            Problem::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let mut body = req.into_body();
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                Problem::BadRequest,
                format!("the body could not be read: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > DRAIN_LIMIT {
                return Err(too_large());
            }
            if seen <= limit {
                buf.extend_from_slice(&data);
            }
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

/// Parses JSON naming the field at fault: a syntax error is `bad-request`,
/// a value of the wrong shape is `validation` with the field's path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_data() {
                let field = if path == "." {
                    "body".to_string()
                } else {
                    path
                };
                Err(ApiError::field(field, inner.to_string()))
            } else {
                Err(ApiError::new(
                    Problem::BadRequest,
                    format!("the body is not valid JSON: {inner}"),
                ))
            }
        }
    }
}

/// A JSON request body of at most [`MAX_JSON_BYTES`].
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let v = v.to_ascii_lowercase();
                v.starts_with("application/json")
                    || (v.starts_with("application/") && v.contains("+json"))
            });
        if !json {
            return Err(ApiError::new(
                Problem::BadRequest,
                "send the body as `Content-Type: application/json`",
            ));
        }
        let bytes = read_limited(req, MAX_JSON_BYTES).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`], but an empty body (no `Content-Type`, no bytes)
/// stands for `T::default()`: for actions whose options are all optional.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let empty = !req.headers().contains_key(header::CONTENT_TYPE)
            && req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
        if empty {
            let bytes = read_limited(req, MAX_JSON_BYTES).await?;
            if bytes.is_empty() {
                return Ok(OptionalJson(T::default()));
            }
            return parse_json(&bytes).map(OptionalJson);
        }
        JsonBody::from_request(req, state)
            .await
            .map(|JsonBody(v)| OptionalJson(v))
    }
}

/// The raw bytes of a request body of at most `N` bytes (uploads).
#[derive(Debug)]
pub struct RawBody<const N: usize>(pub Bytes);

impl<const N: usize, S: Send + Sync> FromRequest<S> for RawBody<N> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        read_limited(req, N).await.map(RawBody)
    }
}

/// A query string whose errors name the parameter at fault.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize::<_, T>(de)
            .map(Params)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "query".to_string()
                } else {
                    path
                };
                ApiError::field(field, e.into_inner().to_string())
            })
    }
}
