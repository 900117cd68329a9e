//! The handlers of the admin API, one module per kind of object. Each is
//! annotated for the OpenAPI document ([`super::openapi`]).

pub mod audit;
pub mod discovery;
pub mod documents;
pub mod entities;
pub mod grants;
pub mod incidents;
pub mod metrics;
pub mod policies;
pub mod principals;
pub mod records;
pub mod requests;
pub mod services;
pub mod tokens;
pub mod usage;

use super::error::ApiError;

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
