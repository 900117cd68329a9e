//! Incidents: reported through the host, at most a few per consumer, kind and service per
//! window, so that a flood of attacks becomes a handful of incidents; and the metrics that
//! count every detection.

use crate::config::Incidents;
use crate::request::RequestInfo;
use crate::text;
use chasqui_plugin_sdk::host::incident::{self, Incident, Party, Severity};
use chasqui_plugin_sdk::host::{kv, log, metrics};
use chasqui_plugin_sdk::serde_json::{Map, Value};
use std::time::Duration;

/// The longest incident summary the host accepts, in bytes.
const MAX_SUMMARY: usize = 256;

/// An incident to report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `cgii.sqli`, `cgii.blocklist.token`, ...
    pub kind: String,
    /// How serious.
    pub severity: Severity,
    /// One line for people.
    pub summary: String,
    /// The evidence (an object; the request's method and path are added).
    pub detail: Value,
    /// Whether the request was blocked.
    pub blocked: bool,
    /// Whom the gateway notifies.
    pub notify: Vec<Party>,
}

/// What became of a report, for the answer to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filed {
    /// Reported now, with this id.
    New(String),
    /// Held back by the rate limit; this is the last incident reported for the same
    /// consumer, kind and service.
    Related(String),
    /// Not reported (rate limited with no id at hand, or the host refused it).
    Missing,
}

impl Filed {
    /// The incident id, if there is one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Filed::New(id) | Filed::Related(id) => Some(id),
            Filed::Missing => None,
        }
    }

    /// A reference for the client (Spanish, English): the incident, or the request id
    /// when there is no incident id.
    pub fn reference(&self, request_id: &str) -> (String, String) {
        let request_id = text::escape(request_id);
        match self {
            Filed::New(id) => (format!("incidente {id}"), format!("incident {id}")),
            Filed::Related(id) => (
                format!("incidente relacionado {id}"),
                format!("related incident {id}"),
            ),
            Filed::Missing => (
                format!("solicitud {request_id}"),
                format!("request {request_id}"),
            ),
        }
    }
}

/// A summary as the host wants it: one line, at most 256 bytes.
pub fn one_line(summary: &str) -> String {
    let line: String = summary
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // `…` takes 3 bytes.
    text::truncate(&line, MAX_SUMMARY - 3).into_owned()
}

/// The id of the last incident of `kind` reported for this request's consumer and service
/// within the rate-limit window.
pub fn last_id(info: &RequestInfo, kind: &str) -> Option<String> {
    let id_key = info.key("incid", &format!("{kind}/{}", info.service));
    kv::get(&id_key)
        .ok()
        .flatten()
        .map(|id| String::from_utf8_lossy(&id).into_owned())
}

/// Reports an incident unless the rate limit holds it back, and counts the outcome in
/// `incidents_total{kind, outcome}`.
pub fn file(limits: &Incidents, info: &RequestInfo, report: Report) -> Filed {
    let window = Duration::from_secs(limits.window_seconds);
    let scope = format!("{}/{}", report.kind, info.service);
    let count_key = info.key("inc", &scope);
    let id_key = info.key("incid", &scope);
    match kv::increment(&count_key, 1, Some(window)) {
        Ok(count) if count > 0 && count as u64 > limits.max_per_window => {
            metrics::counter_add(
                "incidents_total",
                1,
                &[("kind", &report.kind), ("outcome", "suppressed")],
            );
            return match kv::get(&id_key) {
                Ok(Some(id)) => Filed::Related(String::from_utf8_lossy(&id).into_owned()),
                _ => Filed::Missing,
            };
        }
        Ok(_) => {}
        Err(err) => {
            // Without the store there is no rate limit: reporting too much beats missing
            // an attack.
            log::warn(&format!(
                "incident rate limit unavailable, reporting anyway: {err}"
            ));
            metrics::counter_add("kv_errors_total", 1, &[("operation", "incident_limit")]);
        }
    }
    let mut detail = match report.detail {
        Value::Object(map) => map,
        other => {
            let mut map = Map::new();
            map.insert("evidence".into(), other);
            map
        }
    };
    detail.insert("method".into(), info.method.clone().into());
    detail.insert("path".into(), info.path.clone().into());
    let incident = Incident {
        kind: report.kind.clone(),
        severity: report.severity,
        summary: one_line(&report.summary),
        detail: Value::Object(detail),
        blocked: report.blocked,
        notify: report.notify,
    };
    match incident::report(&incident) {
        Ok(id) => {
            metrics::counter_add(
                "incidents_total",
                1,
                &[("kind", &report.kind), ("outcome", "reported")],
            );
            if let Err(err) = kv::set(&id_key, id.as_bytes(), Some(window)) {
                log::warn(&format!("could not keep incident id {id}: {err}"));
            }
            log::info(&format!(
                "incident {id} ({}): {}",
                report.kind, incident.summary
            ));
            Filed::New(id)
        }
        Err(err) => {
            metrics::counter_add(
                "incidents_total",
                1,
                &[("kind", &report.kind), ("outcome", "failed")],
            );
            log::error(&format!(
                "incident ({}) not reported: {err}; {}",
                report.kind, incident.summary
            ));
            Filed::Missing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_one_bounded_line() {
        assert_eq!(one_line("a\nb\tc"), "a b c");
        let long = "ñ".repeat(300);
        let cut = one_line(&long);
        assert!(cut.len() <= MAX_SUMMARY);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn references_name_the_incident_or_the_request() {
        assert_eq!(
            Filed::New("inc-1".into()).reference("r").1,
            "incident inc-1"
        );
        assert_eq!(
            Filed::Related("inc-1".into()).reference("r").0,
            "incidente relacionado inc-1"
        );
        assert_eq!(Filed::Missing.reference("r<1>").1, "request r\\x3c1\\x3e");
        assert_eq!(Filed::Missing.id(), None);
        assert_eq!(Filed::Related("x".into()).id(), Some("x"));
    }
}
