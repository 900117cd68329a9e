//! The Ciudadanía Digital service's routes in the request-headers phase.
//!
//! | route | who | pruebas | produccion |
//! | --- | --- | --- | --- |
//! | `GET /userinfo` | citizen token | synthetic citizen | passes with identity headers |
//! | `POST /{aprobaciones,notificaciones,autorizaciones}` | entity | checked and answered | checked, passes with the assigned id |
//! | `GET /{collection}/{id}` | entity | answered from the store | passes |
//! | `POST /aprobaciones/{id}/aprobar` | citizen token | recorded and answered | recorded, passes with the receipt |
//! | `POST /autorizaciones/{id}/{aceptar,rechazar}` | citizen token | recorded and answered | recorded, passes with the receipt |
//! | anything else | — | 404 / 405 | passes |
//!
//! On every route a token that is sent must be valid, and identity headers are set from
//! it; forged `x-ciudadania-*` headers never reach the upstream.

use crate::answer;
use crate::approvals;
use crate::auth;
use crate::authorizations;
use crate::call::Call;
use crate::citizens;
use crate::config::Settings;
use crate::exchange::{Body, Exchange, Reply};
use crate::headers;
use crate::identity::Identity;
use crate::notifications;
use crate::problem::{self, Problem};
use crate::records;
use crate::routes::{Kind, RequestPath, Route};
use crate::time::rfc3339;
use chasqui_plugin_sdk::{HeaderChanges, HeadersAction, RequestHead};

/// Handles the request head of a request to the plugin's own service: the action, and
/// the exchange to keep for the later phases (if any).
pub fn on_headers(
    settings: &Settings,
    call: Call,
    request: &RequestHead,
) -> (HeadersAction, Option<Exchange>) {
    match dispatch(settings, call, request) {
        Ok(outcome) => outcome,
        Err(problem) => (HeadersAction::Respond(problem.into_response()), None),
    }
}

type Outcome = (HeadersAction, Option<Exchange>);

fn dispatch(settings: &Settings, call: Call, request: &RequestHead) -> Result<Outcome, Problem> {
    let path = RequestPath::parse(&request.path);
    let route = Route::recognize(&request.method, path.rest);
    if call.is_test() {
        // The test service answers everything itself: an unknown route is an error there.
        match route {
            Route::Unknown => return Err(problem::route_not_found(path.rest)),
            Route::WrongMethod(allow) => {
                return Err(problem::method_not_allowed(&request.method, allow))
            }
            _ => {}
        }
    }
    let identity = match route {
        Route::UserInfo | Route::Approve(_) | Route::Answer(..) => {
            Some(auth::required(settings, &call, request, path.rest)?)
        }
        _ => auth::optional(settings, &call, request, path.rest)?,
    };
    let mut changes = headers::strip(request, &settings.token_header, settings.forward_token);
    if let Some(identity) = &identity {
        changes = set(changes, identity.headers());
    }
    match (route, identity) {
        (Route::UserInfo, Some(citizen)) if call.is_test() => userinfo(&citizen),
        (Route::Create(kind), _) => create(settings, call, request, path.prefix, kind, changes),
        (Route::Read(kind, id), _) if call.is_test() => read(&call, kind, id),
        (Route::Approve(id), Some(citizen)) => {
            let record = approvals::approve(settings, &call, id, &citizen)?;
            let Some(approval) = &record.approval else {
                return Err(problem::storage_unavailable());
            };
            if call.is_test() {
                return Ok(respond(200, &record.view(call.now_ms)));
            }
            let mut fields = vec![(headers::APROBACION_ID, record.id.clone())];
            fields.extend(approval.receipt.headers());
            Ok(forward_with(changes, fields, call, path.prefix))
        }
        (Route::Answer(id, answer), Some(citizen)) => {
            let record = authorizations::answer(settings, &call, id, answer, &citizen)?;
            let Some(given) = &record.answer else {
                return Err(problem::storage_unavailable());
            };
            if call.is_test() {
                return Ok(respond(200, &record.view(call.now_ms)));
            }
            let mut fields = vec![
                (headers::AUTORIZACION_ID, record.id.clone()),
                (headers::AUTORIZACION_RESPUESTA, given.value.clone()),
            ];
            fields.extend(given.receipt.headers());
            Ok(forward_with(changes, fields, call, path.prefix))
        }
        // Production (and the production side of every route above): pass through.
        _ => Ok((modify(changes), None)),
    }
}

/// `GET /userinfo` in the test environment: the synthetic citizen of the token.
fn userinfo(citizen: &Identity) -> Result<Outcome, Problem> {
    let synthetic =
        citizens::find(&citizen.sub).ok_or_else(|| problem::citizen_not_found(&citizen.sub))?;
    Ok(respond(200, &synthetic.userinfo(&citizen.scopes)))
}

/// `GET /{collection}/{id}` in the test environment.
fn read(call: &Call, kind: Kind, id: &str) -> Result<Outcome, Problem> {
    let view = match kind {
        Kind::Approval => approvals::find(call, id)?.view(call.now_ms),
        Kind::Notification => notifications::find(call, id)?.view(),
        Kind::Authorization => authorizations::find(call, id)?.view(call.now_ms),
    };
    Ok(respond(200, &view))
}

/// `POST /{collection}`: checks what the head says about the body, assigns the record's
/// id and waits for the body. In production the id (and window end) also go upstream
/// and, on a 2xx answer, back to the client.
fn create(
    settings: &Settings,
    call: Call,
    request: &RequestHead,
    prefix: &str,
    kind: Kind,
    mut changes: HeaderChanges,
) -> Result<Outcome, Problem> {
    check_body_head(settings, request)?;
    let id = records::new_id(kind, &call);
    let mut reply = Reply::Nothing;
    if !call.is_test() {
        let fields = match kind {
            Kind::Approval => vec![
                (headers::APROBACION_ID, id.clone()),
                (
                    headers::APROBACION_EXPIRA,
                    rfc3339(call.now_ms.saturating_add(settings.approval_window_ms)),
                ),
            ],
            Kind::Authorization => vec![
                (headers::AUTORIZACION_ID, id.clone()),
                (
                    headers::AUTORIZACION_EXPIRA,
                    rfc3339(call.now_ms.saturating_add(settings.authorization_window_ms)),
                ),
            ],
            // The notification's fields go back once the upstream has delivered it.
            Kind::Notification => vec![(headers::NOTIFICACION_ID, id.clone())],
        };
        changes = set(changes, fields.clone());
        reply = Reply::Headers {
            fields,
            only_on_success: true,
        };
    }
    let exchange = Exchange {
        call,
        prefix: prefix.to_string(),
        body: Body::Collect {
            kind,
            id,
            buffer: Vec::new(),
        },
        reply,
    };
    Ok((modify(changes), Some(exchange)))
}

/// What the head says about a JSON body: present (400), not over the limit (413),
/// declared as JSON (415).
fn check_body_head(settings: &Settings, request: &RequestHead) -> Result<(), Problem> {
    if let Some(length) = request
        .header("content-length")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if length == 0 {
            return Err(problem::body_required());
        }
        if length > settings.max_body_bytes as u64 {
            return Err(problem::body_too_large(settings.max_body_bytes));
        }
    }
    let content_type = request.header("content-type");
    let is_json = content_type.is_some_and(|value| {
        let essence = value.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
    });
    if is_json {
        Ok(())
    } else {
        Err(problem::body_not_json(content_type))
    }
}

/// Production: the request goes upstream with these fields, and the client gets them on
/// the upstream's answer whatever its status (the evidence exists either way).
fn forward_with(
    changes: HeaderChanges,
    fields: Vec<(&'static str, String)>,
    call: Call,
    prefix: &str,
) -> Outcome {
    let changes = set(changes, fields.clone());
    let exchange = Exchange {
        call,
        prefix: prefix.to_string(),
        body: Body::Pass,
        reply: Reply::Headers {
            fields,
            only_on_success: false,
        },
    };
    (modify(changes), Some(exchange))
}

fn set(changes: HeaderChanges, fields: Vec<(&'static str, String)>) -> HeaderChanges {
    fields
        .into_iter()
        .fold(changes, |changes, (name, value)| changes.set(name, value))
}

fn modify(changes: HeaderChanges) -> HeadersAction {
    if changes.set.is_empty() && changes.remove.is_empty() {
        HeadersAction::Continue
    } else {
        HeadersAction::Modify(changes)
    }
}

fn respond(status: u16, body: &serde_json::Value) -> Outcome {
    (HeadersAction::Respond(answer::json(status, body)), None)
}
