//! The Prometheus scrape endpoint, for operators: the data plane's RED
//! metrics per service and environment, each plugin's own series, the
//! requests in flight, the store-and-forward backlog and the process start
//! time ([`crate::metrics`]).
//!
//! Prometheus authenticates with an operator's admin token kept in a file:
//!
//! ```yaml
//! scrape_configs:
//!   - job_name: chasqui
//!     scheme: https
//!     authorization: {credentials_file: /etc/prometheus/chasqui-admin-token}
//!     tls_config: {ca_file: /etc/prometheus/chasqui-ca.pem}
//!     static_configs: [{targets: ["gateway-1:9443"]}]
//! ```

use super::ApiResult;
use crate::admin::error::ProblemBody;
use crate::admin::extract::Auth;
use crate::admin::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The gateway's metrics in the Prometheus text format 0.0.4 (operators).
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "The metrics in the Prometheus text exposition format 0.0.4",
            body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody)))]
pub async fn scrape(auth: Auth, State(state): State<AppState>) -> ApiResult<Response> {
    auth.actor.require_operator("read the metrics")?;
    let body = crate::metrics::render(&state.gateway);
    Ok((
        [
            (header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}
