//! Checks on who calls, before anything is inspected: blocked addresses, leaked tokens and
//! unusual volume.

use crate::config::{Mode, Settings};
use crate::net;
use crate::problem;
use crate::report::{self, Report};
use crate::request::RequestInfo;
use crate::text;
use crate::volume;
use chasqui_plugin_sdk::host::incident::{Party, Severity};
use chasqui_plugin_sdk::host::{log, metrics};
use chasqui_plugin_sdk::serde_json::json;
use chasqui_plugin_sdk::{RequestHead, Response};

fn action(mode: Mode) -> &'static str {
    match mode {
        Mode::Block => "blocked",
        Mode::Report => "reported",
    }
}

/// A client whose address is in `blocklist.addresses`: reported, and refused with 403 in
/// `block` mode.
pub fn address(settings: &Settings, info: &RequestInfo) -> Option<Response> {
    let raw = info.client_address.as_deref()?;
    let address = net::parse_address(raw)?;
    let (entry, _) = settings
        .blocked_ranges
        .iter()
        .find(|(_, range)| range.contains(address))?;
    let mode = settings.config.blocklist.mode;
    metrics::counter_add(
        "blocklist_hits_total",
        1,
        &[("list", "address"), ("action", action(mode))],
    );
    let shown = text::escape(raw);
    let filed = report::file(
        &settings.config.incidents,
        info,
        Report {
            kind: "cgii.blocklist.address".into(),
            severity: Severity::Medium,
            summary: format!(
                "Blocked address {shown} ({entry}) called {} as {}",
                info.service, info.consumer
            ),
            detail: json!({ "address": shown, "range": entry, "mode": mode.as_str() }),
            blocked: mode == Mode::Block,
            notify: Vec::new(),
        },
    );
    if mode == Mode::Report {
        return None;
    }
    log::debug(&format!(
        "refused {} {}: address {shown} is blocked",
        info.method, info.path
    ));
    let (reference_es, reference_en) = filed.reference(&info.request_id);
    Some(problem::problem(
        403,
        problem::ADDRESS_BLOCKED,
        "Dirección bloqueada / Address blocked",
        &format!(
            "La dirección de origen está bloqueada por el CGII ({reference_es}). / The client address is blocked by CGII ({reference_en})."
        ),
        json!({ "incident": filed.id(), "request_id": info.request_id }),
    ))
}

/// The bearer token of `authorization`, if the request has one.
fn bearer_tokens(request: &RequestHead) -> impl Iterator<Item = &str> {
    request.header_values("authorization").filter_map(|value| {
        let (scheme, token) = value.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    })
}

/// A bearer token that starts with a prefix in `blocklist.token_prefixes`: reported to the
/// consumer (its token leaked), and refused with 403 in `block` mode. The token itself is
/// never logged or stored: only the configured prefix and its length.
pub fn token(settings: &Settings, info: &RequestInfo, request: &RequestHead) -> Option<Response> {
    let prefixes = &settings.config.blocklist.token_prefixes;
    if prefixes.is_empty() {
        return None;
    }
    let (token, prefix) = bearer_tokens(request).find_map(|token| {
        prefixes
            .iter()
            .find(|prefix| token.starts_with(prefix.as_str()))
            .map(|prefix| (token, prefix))
    })?;
    let mode = settings.config.blocklist.mode;
    metrics::counter_add(
        "blocklist_hits_total",
        1,
        &[("list", "token"), ("action", action(mode))],
    );
    let shown = text::escape(prefix);
    let filed = report::file(
        &settings.config.incidents,
        info,
        Report {
            kind: "cgii.blocklist.token".into(),
            severity: Severity::High,
            summary: format!(
                "Leaked token (prefix {shown}) used by {} on {}",
                info.consumer, info.service
            ),
            detail: json!({
                "token_prefix": shown,
                "token_length": token.len(),
                "mode": mode.as_str(),
            }),
            blocked: mode == Mode::Block,
            notify: vec![Party::Consumer],
        },
    );
    if mode == Mode::Report {
        return None;
    }
    log::debug(&format!(
        "refused {} {}: leaked token prefix {shown}",
        info.method, info.path
    ));
    let (reference_es, reference_en) = filed.reference(&info.request_id);
    Some(problem::problem(
        403,
        problem::TOKEN_BLOCKED,
        "Token bloqueado / Token blocked",
        &format!(
            "El token presentado figura como filtrado y está bloqueado; solicite uno nuevo a AGETIC ({reference_es}). / The token presented is known to have leaked and is blocked; request a new one from AGETIC ({reference_en})."
        ),
        json!({ "incident": filed.id(), "request_id": info.request_id }),
    ))
}

/// Counts the request; over the threshold, the first request of the window reports an
/// incident to the consumer, and in `block` mode every request over it is refused.
pub fn volume(settings: &Settings, info: &RequestInfo) -> Option<Response> {
    let count = volume::count(settings, info)?;
    if !count.exceeded() {
        return None;
    }
    let rule = &count.rule;
    metrics::counter_add(
        "volume_exceeded_total",
        1,
        &[("rule", &rule.name), ("action", action(rule.mode))],
    );
    let filed = if count.first_over() {
        let filed = report::file(
            &settings.config.incidents,
            info,
            Report {
                kind: "cgii.volume".into(),
                severity: Severity::Medium,
                summary: format!(
                    "Unusual volume: {} made more than {} requests in {} s to {} (rule {})",
                    info.consumer, rule.threshold, rule.window_seconds, info.service, rule.name
                ),
                detail: json!({
                    "rule": rule.name,
                    "scope": rule.scope,
                    "threshold": rule.threshold,
                    "window_seconds": rule.window_seconds,
                    "count": count.count,
                    "mode": rule.mode.as_str(),
                }),
                blocked: rule.mode == Mode::Block,
                notify: vec![Party::Consumer],
            },
        );
        filed.id().map(str::to_string)
    } else if rule.mode == Mode::Block {
        report::last_id(info, "cgii.volume")
    } else {
        None
    };
    if rule.mode == Mode::Report {
        return None;
    }
    let status = settings.config.volume.status;
    let reference = match &filed {
        Some(id) => (format!(" (incidente {id})"), format!(" (incident {id})")),
        None => (String::new(), String::new()),
    };
    Some(
        problem::problem(
            status,
            problem::UNUSUAL_VOLUME,
            "Volumen inusual / Unusual volume",
            &format!(
                "Más de {threshold} solicitudes en {window} s para este servicio; intente más tarde{es}. / More than {threshold} requests in {window} s for this service; try again later{en}.",
                threshold = rule.threshold,
                window = rule.window_seconds,
                es = reference.0,
                en = reference.1,
            ),
            json!({ "incident": filed, "request_id": info.request_id }),
        )
        // The window is fixed and started at the first request, so it ends within its length.
        .with_header("retry-after", rule.window_seconds.to_string()),
    )
}
