//! What a request with attack findings gets: an incident for the publisher of the service,
//! metrics for every finding, and in `block` mode a 403 problem.

use crate::config::Incidents;
use crate::config::{Mode, Sensitivity};
use crate::detect::Category;
use crate::inspect::{self, Finding};
use crate::problem;
use crate::report::{self, Report};
use crate::request::RequestInfo;
use chasqui_plugin_sdk::host::incident::{Party, Severity};
use chasqui_plugin_sdk::host::{log, metrics};
use chasqui_plugin_sdk::serde_json::{json, Value};
use chasqui_plugin_sdk::Response;

/// The most other findings listed in one incident: with escaped excerpts of at most about
/// 1 KiB each, the detail stays far under the host's 16 KiB.
const MAX_LISTED_FINDINGS: usize = 5;

/// How serious an attack of each category is: command injection runs code on the server;
/// SQL injection, traversal and SSRF reach data or the internal network; XSS hits users.
pub fn severity(category: Category) -> Severity {
    match category {
        Category::Cmdi => Severity::Critical,
        Category::Sqli | Category::Traversal | Category::Ssrf => Severity::High,
        Category::Xss => Severity::Medium,
    }
}

/// Handles the findings of one inspection (headers, or the body): counts them, reports one
/// incident naming the primary finding and listing the others, and answers 403 if any is
/// in `block` mode.
pub fn respond(
    limits: &Incidents,
    info: &RequestInfo,
    sensitivity: Sensitivity,
    findings: &[Finding],
) -> Option<Response> {
    let primary = inspect::primary(findings)?;
    let blocked = primary.mode == Mode::Block;
    for finding in findings {
        let action = if finding.mode == Mode::Block {
            "blocked"
        } else {
            "reported"
        };
        metrics::counter_add(
            "detections_total",
            1,
            &[
                ("category", finding.category.as_str()),
                ("location", finding.location.as_str()),
                ("action", action),
            ],
        );
    }
    let (place_es, place_en) = primary.place();
    let others: Vec<Value> = findings
        .iter()
        .filter(|finding| !std::ptr::eq(*finding, primary))
        .take(MAX_LISTED_FINDINGS)
        .map(Finding::evidence)
        .collect();
    let mut detail = primary.evidence();
    detail["threshold"] = sensitivity.threshold().into();
    detail["sensitivity"] = sensitivity.as_str().into();
    detail["blocked"] = blocked.into();
    detail["other_findings"] = others.into();
    let category = primary.category;
    let filed = report::file(
        limits,
        info,
        Report {
            kind: format!("cgii.{}", category.as_str()),
            severity: severity(category),
            summary: format!(
                "{} in {place_en} of {} by {} ({})",
                category.name_en(),
                info.service,
                info.consumer,
                if blocked { "blocked" } else { "reported" }
            ),
            detail,
            blocked,
            notify: vec![Party::Publisher],
        },
    );
    if !blocked {
        return None;
    }
    // The incident (logged when reported) is the record; a flood must not flood the log.
    log::debug(&format!(
        "blocked {} {}: {} in {}",
        info.method,
        info.path,
        category.as_str(),
        primary.location.as_str()
    ));
    let (reference_es, reference_en) = filed.reference(&info.request_id);
    Some(problem::problem(
        403,
        problem::ATTACK_DETECTED,
        "Solicitud bloqueada por seguridad / Request blocked for security",
        &format!(
            "Se detectó un posible ataque de tipo {} en {place_es}; la solicitud fue bloqueada ({reference_es}). / A possible {} attack was detected in {place_en}; the request was blocked ({reference_en}).",
            category.name_es(),
            category.name_en(),
        ),
        json!({
            "incident": filed.id(),
            "category": category.as_str(),
            "location": primary.location.as_str(),
            "request_id": info.request_id,
        }),
    ))
}
