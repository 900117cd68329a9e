//! Unusual volume: requests counted per consumer in fixed windows, per service or per
//! configured rule. Bulk pulling of identity data shows up here first.

use crate::config::{Mode, Settings, VolumeRuleSettings};
use crate::request::RequestInfo;
use chasqui_plugin_sdk::host::{kv, log, metrics};
use std::time::Duration;

/// The rule that applies to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its name (`default` for the global threshold).
    pub name: String,
    /// The window, in seconds.
    pub window_seconds: u64,
    /// The threshold.
    pub threshold: u64,
    /// The mode.
    pub mode: Mode,
    /// The counter's scope: the rule, or the service under the default.
    pub scope: String,
}

/// The count of a request's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// The rule.
    pub rule: Rule,
    /// Requests in the window so far, this one included.
    pub count: u64,
}

impl Count {
    /// Whether the count is over the threshold.
    pub fn exceeded(&self) -> bool {
        self.count > self.rule.threshold
    }

    /// Whether this request is the first over the threshold in its window: the one that
    /// reports. The counter is atomic, so exactly one request sees this count.
    pub fn first_over(&self) -> bool {
        self.count == self.rule.threshold + 1
    }
}

/// Whether `value` starts with `prefix` on a segment boundary.
fn segment_prefix(value: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || value
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The rule for a request: the most specific matching rule (longest prefixes), or the
/// global threshold per service.
pub fn rule(settings: &Settings, info: &RequestInfo) -> Rule {
    let matches = |rule: &&VolumeRuleSettings| {
        rule.service_prefix
            .as_deref()
            .is_none_or(|prefix| segment_prefix(&info.service, prefix))
            && rule
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| segment_prefix(&info.route, prefix))
    };
    let specificity = |rule: &VolumeRuleSettings| {
        rule.service_prefix.as_deref().map_or(0, str::len)
            + rule.path_prefix.as_deref().map_or(0, str::len)
    };
    let best = settings.volume_rules.iter().filter(matches).fold(
        None::<&VolumeRuleSettings>,
        |best, rule| match best {
            Some(best) if specificity(best) >= specificity(rule) => Some(best),
            _ => Some(rule),
        },
    );
    match best {
        Some(rule) => Rule {
            name: rule.name.clone(),
            window_seconds: rule.window_seconds,
            threshold: rule.threshold,
            mode: rule.mode,
            scope: format!("rule:{}", rule.name),
        },
        None => {
            let volume = &settings.config.volume;
            Rule {
                name: "default".into(),
                window_seconds: volume.window_seconds,
                threshold: volume.threshold,
                mode: volume.mode,
                scope: format!("service:{}", info.service),
            }
        }
    }
}

/// Counts the request; `None` when counting is off or the store is unavailable (volume
/// then fails open: it is a signal, not an access control).
pub fn count(settings: &Settings, info: &RequestInfo) -> Option<Count> {
    if !settings.config.volume.enabled {
        return None;
    }
    let rule = rule(settings, info);
    let key = info.key("vol", &rule.scope);
    match kv::increment(&key, 1, Some(Duration::from_secs(rule.window_seconds))) {
        Ok(count) => Some(Count {
            rule,
            count: u64::try_from(count).unwrap_or(0),
        }),
        Err(err) => {
            log::warn(&format!("volume not counted: {err}"));
            metrics::counter_add("kv_errors_total", 1, &[("operation", "volume")]);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use chasqui_plugin_sdk::serde_json::{self, json};

    fn info(service: &str, route: &str) -> RequestInfo {
        RequestInfo {
            consumer: "e/s".into(),
            service: service.into(),
            environment: "produccion".into(),
            request_id: "r".into(),
            client_address: None,
            method: "GET".into(),
            path: route.into(),
            route: route.into(),
        }
    }

    #[test]
    fn the_most_specific_rule_applies() {
        let config: Config = serde_json::from_value(json!({ "volume": { "rules": [
            { "name": "segip", "service_prefix": "segip", "threshold": 100 },
            { "name": "personas", "service_prefix": "segip/v2", "path_prefix": "/personas", "threshold": 10 },
            { "name": "consultas", "path_prefix": "/consulta", "threshold": 50 }
        ] } }))
        .unwrap();
        let settings = Settings::new(config).unwrap();
        assert_eq!(
            rule(&settings, &info("segip/v2", "/personas/123")).name,
            "personas"
        );
        assert_eq!(
            rule(&settings, &info("segip/v2", "/personasx")).name,
            "segip"
        );
        assert_eq!(
            rule(&settings, &info("segip/v1", "/personas/1")).name,
            "segip"
        );
        assert_eq!(rule(&settings, &info("segipx/v1", "/a")).name, "default");
        assert_eq!(
            rule(&settings, &info("ppe/v1", "/consulta/estado/1")).name,
            "consultas"
        );
        let default = rule(&settings, &info("ppe/v1", "/transaccion/deuda"));
        assert_eq!(default.name, "default");
        assert_eq!(default.scope, "service:ppe/v1");
        assert_eq!(default.threshold, 1200);
    }

    #[test]
    fn over_and_first_over() {
        let rule = Rule {
            name: "r".into(),
            window_seconds: 60,
            threshold: 2,
            mode: Mode::Report,
            scope: "s".into(),
        };
        let at = |count| Count {
            rule: rule.clone(),
            count,
        };
        assert!(!at(2).exceeded());
        assert!(at(3).exceeded() && at(3).first_over());
        assert!(at(4).exceeded() && !at(4).first_over());
    }
}
