//! The OpenAPI 3.1 document of the admin API, generated from the handlers'
//! annotations and served at `/openapi.json`.

use super::handlers::{
    audit, discovery, documents, entities, grants, incidents, metrics, policies, principals,
    records, requests, services, tokens, usage,
};
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
        grants::list,
        tokens::list, tokens::issue, tokens::rotate, tokens::revoke,
        discovery::services, discovery::service, discovery::openapi, discovery::callable,
        incidents::list,
        records::list,
        policies::list, policies::current, policies::get, policies::diff, policies::apply, policies::rollback,
        usage::usage, usage::usage_csv, usage::fees, usage::fees_csv,
        audit::list, audit::export,
        metrics::scrape,
    ),
    modifiers(&AdminToken, &Operations),
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

/// Gives every operation a unique id (`<tag>_<handler>`, the handler names
/// repeat across modules) and every answer a description.
struct Operations;

impl Modify for Operations {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                let tag = op
                    .tags
                    .as_ref()
                    .and_then(|t| t.first())
                    .map(|t| t.replace(' ', "_"))
                    .unwrap_or_default();
                if let Some(id) = &op.operation_id {
                    op.operation_id = Some(format!("{tag}_{id}"));
                }
                for (status, response) in op.responses.responses.iter_mut() {
                    if let utoipa::openapi::RefOr::T(response) = response {
                        if response.description.is_empty() {
                            response.description = describe(status).to_string();
                        }
                    }
                }
            }
        }
    }
}

/// What an answer of `status` means in this API.
fn describe(status: &str) -> &'static str {
    match status {
        "200" => "OK",
        "201" => "Created",
        "204" => "Done, nothing to return",
        "400" => "Malformed request (problem `bad-request`)",
        "401" => "No valid admin token (problem `admin-unauthenticated`)",
        "403" => "Not allowed for this role or entity (problem `forbidden`)",
        "404" => "Not found, or not visible to this principal (problem `not-found`)",
        "409" => "Conflicts with existing data or the procedure's state (problems `conflict`, `invalid-transition`)",
        "413" => "Body too large (problem `payload-too-large`)",
        "415" => "Not a PDF (problem `unsupported-document`)",
        "422" => "A field breaks a rule; `field` names it (problem `validation`)",
        _ => "See the problem's type",
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
