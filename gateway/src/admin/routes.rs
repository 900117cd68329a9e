//! The route table of the admin API. The router is built from it, and the
//! tests compare it with the OpenAPI document, so neither can drift from the
//! other unnoticed.

use super::error::{finish, method_not_allowed, not_found};
use super::handlers::{
    audit, discovery, documents, entities, grants, incidents, metrics, policies, principals,
    records, requests, services, tokens, usage,
};
use super::{openapi, AppState};
use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

/// One route: method, path (axum and OpenAPI share the `{param}` syntax),
/// and its handler.
pub type Route = (Method, &'static str, MethodRouter<AppState>);

macro_rules! route {
    ($method:ident $path:literal => $handler:expr) => {
        (Method::$method, $path, on(MethodFilter::$method, $handler))
    };
}

/// Every route of the admin API.
pub fn table() -> Vec<Route> {
    vec![
        route!(GET "/openapi.json" => openapi::serve),
        route!(GET "/me" => principals::me),
        route!(GET "/principals" => principals::list),
        route!(POST "/principals" => principals::create),
        route!(POST "/principals/{id}/revoke" => principals::revoke),
        route!(GET "/entities" => entities::list),
        route!(POST "/entities" => entities::create),
        route!(GET "/entities/{code}" => entities::get),
        route!(PATCH "/entities/{code}" => entities::update),
        route!(GET "/entities/{code}/systems" => entities::systems),
        route!(POST "/entities/{code}/systems" => entities::create_system),
        route!(GET "/services" => services::list),
        route!(POST "/services" => services::create),
        route!(GET "/services/{id}" => services::get),
        route!(PATCH "/services/{id}" => services::update),
        route!(GET "/services/{id}/openapi" => services::get_openapi),
        route!(PUT "/services/{id}/openapi" => services::put_openapi),
        route!(GET "/services/{id}/environments" => services::environments),
        route!(PUT "/services/{id}/environments/{environment}" => services::put_environment),
        route!(POST "/services/{id}/transitions" => services::transition),
        route!(GET "/services/{id}/history" => services::history),
        route!(GET "/documents" => documents::list),
        route!(POST "/documents" => documents::upload),
        route!(GET "/documents/{id}" => documents::get),
        route!(GET "/documents/{id}/content" => documents::content),
        route!(GET "/access-requests" => requests::list),
        route!(POST "/access-requests" => requests::create),
        route!(GET "/access-requests/{id}" => requests::get),
        route!(POST "/access-requests/{id}/transitions" => requests::transition),
        route!(GET "/access-requests/{id}/history" => requests::history),
        route!(GET "/grants" => grants::list),
        route!(GET "/systems/{id}/tokens" => tokens::list),
        route!(POST "/systems/{id}/tokens" => tokens::issue),
        route!(POST "/systems/{id}/tokens/{token_id}/rotate" => tokens::rotate),
        route!(POST "/systems/{id}/tokens/{token_id}/revoke" => tokens::revoke),
        route!(GET "/catalog/services" => discovery::services),
        route!(GET "/catalog/services/{id}" => discovery::service),
        route!(GET "/catalog/services/{id}/openapi" => discovery::openapi),
        route!(GET "/catalog/callable" => discovery::callable),
        route!(GET "/incidents" => incidents::list),
        route!(GET "/records" => records::list),
        route!(GET "/policies" => policies::list),
        route!(GET "/policies/current" => policies::current),
        route!(PUT "/policies/current" => policies::apply),
        route!(GET "/policies/diff" => policies::diff),
        route!(GET "/policies/{id}" => policies::get),
        route!(POST "/policies/{id}/rollback" => policies::rollback),
        route!(GET "/usage" => usage::usage),
        route!(GET "/usage.csv" => usage::usage_csv),
        route!(GET "/fees" => usage::fees),
        route!(GET "/fees.csv" => usage::fees_csv),
        route!(GET "/audit" => audit::list),
        route!(GET "/audit/export" => audit::export),
        route!(GET "/metrics" => metrics::scrape),
    ]
}

/// `(METHOD, path)` of every route, as the router serves them.
pub fn route_list() -> Vec<(String, String)> {
    table()
        .into_iter()
        .map(|(method, path, _)| (method.to_string(), path.to_string()))
        .collect()
}

/// The admin API's router over `state`.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in table() {
        router = router.route(path, handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(finish))
        .with_state(state)
}
