//! The authentication filter: on any service other than the plugin's own, every request
//! must carry a valid citizen token with the required scopes, and goes on with the
//! citizen's identity in `x-ciudadania-*` headers.

use crate::auth;
use crate::call::Call;
use crate::config::Settings;
use crate::headers;
use crate::routes::RequestPath;
use chasqui_plugin_sdk::{HeadersAction, RequestHead};

/// Authenticates the request; refuses it with a 401/403/503 problem otherwise.
pub fn on_headers(settings: &Settings, call: &Call, request: &RequestHead) -> HeadersAction {
    let path = RequestPath::parse(&request.path);
    match auth::required(settings, call, request, path.rest) {
        Ok(identity) => {
            let mut changes =
                headers::strip(request, &settings.token_header, settings.forward_token);
            for (name, value) in identity.headers() {
                changes = changes.set(name, value);
            }
            HeadersAction::Modify(changes)
        }
        Err(problem) => HeadersAction::Respond(problem.into_response()),
    }
}
