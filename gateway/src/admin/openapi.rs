//! The OpenAPI 3.1 document of the admin API, generated from the handlers'
//! annotations and served at `/openapi.json`.

use super::handlers::{discovery, documents, entities, principals, requests, services, tokens};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The admin API's description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Chasqui admin API",
        description = "Catálogo y trámites de la Plataforma de Interoperabilidad del Estado / Catalog and onboarding procedures of the State Interoperability Platform. Authenticate with `Authorization: Bearer chq_admin_...`; errors are RFC 9457 problems.",
    ),
    paths(
        serve,
        principals::me, principals::list, principals::create, principals::revoke,
        entities::list, entities::create, entities::get, entities::update, entities::systems, entities::create_system,
        services::list, services::create, services::get, services::update, services::get_openapi, services::put_openapi,
        services::environments, services::put_environment, services::transition, services::history,
        documents::list, documents::upload, documents::get, documents::content,
        requests::list, requests::create, requests::get, requests::transition, requests::history,
        tokens::list, tokens::issue, tokens::rotate, tokens::revoke,
        discovery::services, discovery::service, discovery::openapi, discovery::callable,
    ),
    modifiers(&AdminToken),
    security(("admin_token" = [])),
)]
pub struct ApiDoc;

/// Declares the bearer admin token scheme.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("chq_admin_...")
                    .build(),
            ),
        );
    }
}

/// The document, as served.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This document (no authentication needed).
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)))]
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}
