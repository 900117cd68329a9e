//! The plugin's configuration as policy gives it (mirrored by `config.schema.json`, whose
//! defaults are these), and the checked form the plugin runs with.

use crate::detect::Category;
use crate::net::Cidr;
use serde::Deserialize;

/// What to do with a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Answer the client with a problem and report an incident.
    #[default]
    Block,
    /// Let the request go on and report an incident.
    Report,
}

impl Mode {
    /// The name used in metrics and evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Block => "block",
            Mode::Report => "report",
        }
    }
}

/// How readily the detectors fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Only blatant payloads (score 9 and more).
    Low,
    /// Strong signs (score 6 and more).
    #[default]
    Medium,
    /// Weak signs too (score 4 and more); expect some false positives.
    High,
}

impl Sensitivity {
    /// The score a value must reach to be a detection.
    pub fn threshold(self) -> u32 {
        match self {
            Sensitivity::Low => 9,
            Sensitivity::Medium => 6,
            Sensitivity::High => 4,
        }
    }

    /// The name used in evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Low => "low",
            Sensitivity::Medium => "medium",
            Sensitivity::High => "high",
        }
    }
}

/// The configuration, as policy gives it. Every field is optional: `{}` is a working
/// configuration (block at medium sensitivity, volume reported above 1200 requests a minute).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// What detections do unless a detector says otherwise.
    pub mode: Mode,
    /// The sensitivity unless the environment has its own.
    pub sensitivity: Sensitivity,
    /// A sensitivity per environment (`pruebas`, `produccion`).
    pub sensitivity_by_environment: EnvironmentSensitivity,
    /// Per-detector switches and overrides.
    pub detectors: Detectors,
    /// What parts of the request are inspected.
    pub inspect: Inspect,
    /// Blocked client addresses and leaked tokens.
    pub blocklist: Blocklist,
    /// Unusual volume per consumer.
    pub volume: Volume,
    /// Incident rate limiting.
    pub incidents: Incidents,
}

/// A sensitivity per environment; an absent one falls back to `sensitivity`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct EnvironmentSensitivity {
    /// For the test environment.
    pub pruebas: Option<Sensitivity>,
    /// For production.
    pub produccion: Option<Sensitivity>,
}

/// The five detectors' settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Detectors {
    /// SQL injection.
    pub sqli: Detector,
    /// Cross-site scripting.
    pub xss: Detector,
    /// Path traversal.
    pub traversal: Detector,
    /// Command injection.
    pub cmdi: Detector,
    /// Server-side request forgery.
    pub ssrf: Detector,
}

/// One detector's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Detector {
    /// Whether it runs.
    pub enabled: bool,
    /// Overrides the global `mode` for its detections.
    pub mode: Option<Mode>,
    /// Names of fields it skips (query and form parameters, JSON keys, header names; any
    /// case). `None` keeps the detector's own list (for `ssrf`: OAuth redirect URIs, which a
    /// browser follows and no server fetches).
    pub ignore_fields: Option<Vec<String>>,
}

impl Default for Detector {
    fn default() -> Self {
        Detector {
            enabled: true,
            mode: None,
            ignore_fields: None,
        }
    }
}

/// The fields `ssrf` skips unless configured: redirect URIs are followed by the user's
/// browser, never fetched by the service, and clients in `pruebas` point them at localhost.
pub const SSRF_DEFAULT_IGNORED: &[&str] = &["redirect_uri", "post_logout_redirect_uri"];

/// What an over-long body gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Oversize {
    /// Inspect the first `max_body_bytes` and let the rest through uninspected.
    #[default]
    InspectPrefix,
    /// Answer 413: nothing passes uninspected.
    Reject,
}

/// What parts of the request are inspected.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Inspect {
    /// The path.
    pub path: bool,
    /// The query parameters.
    pub query: bool,
    /// Header values (never `authorization` or `proxy-authorization`).
    pub headers: bool,
    /// JSON, form and text bodies.
    pub body: bool,
    /// More header names to skip (any case).
    pub ignore_headers: Vec<String>,
    /// How much of a body is held and inspected, in bytes.
    pub max_body_bytes: u32,
    /// What a body longer than `max_body_bytes` gets.
    pub oversize_body: Oversize,
}

impl Default for Inspect {
    fn default() -> Self {
        Inspect {
            path: true,
            query: true,
            headers: true,
            body: true,
            ignore_headers: Vec::new(),
            max_body_bytes: 64 * 1024,
            oversize_body: Oversize::InspectPrefix,
        }
    }
}

/// The largest `max_body_bytes`: what the plugin passes on after holding a body (the limit
/// plus one 64 KiB chunk) must stay within the gateway's 1 MiB replacement limit.
pub const MAX_INSPECTED_BODY: u32 = 960 * 1024;

/// Blocked client addresses and leaked token prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Blocklist {
    /// IPv4 and IPv6 addresses and CIDR ranges.
    pub addresses: Vec<String>,
    /// Prefixes of bearer tokens known to have leaked (at least 8 characters).
    pub token_prefixes: Vec<String>,
    /// `block` (default, whatever the global mode) or `report` (a watch list).
    pub mode: Mode,
}

/// The shortest token prefix accepted: a shorter one would match tokens that did not leak.
pub const MIN_TOKEN_PREFIX: usize = 8;

/// Unusual volume per consumer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Volume {
    /// Whether requests are counted.
    pub enabled: bool,
    /// The counting window, in seconds (fixed windows).
    pub window_seconds: u64,
    /// Requests per consumer and service per window above which volume is unusual.
    pub threshold: u64,
    /// `report` (default) or `block` requests over the threshold.
    pub mode: Mode,
    /// The status of a blocked request: 429 or 403.
    pub status: u16,
    /// Thresholds for particular services or routes.
    pub rules: Vec<VolumeRule>,
}

impl Default for Volume {
    fn default() -> Self {
        Volume {
            enabled: true,
            window_seconds: 60,
            threshold: 1200,
            mode: Mode::Report,
            status: 429,
            rules: Vec::new(),
        }
    }
}

/// A volume threshold for the services whose code starts with `service_prefix` and the
/// routes that start with `path_prefix`; unset fields take the `volume` defaults.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct VolumeRule {
    /// The rule's name in metrics and incidents (default: its prefixes).
    pub name: Option<String>,
    /// A prefix of the service code, by whole segments: `segip` matches `segip/v2`.
    pub service_prefix: Option<String>,
    /// A prefix of the route after the version segment, by whole segments: `/personas`.
    pub path_prefix: Option<String>,
    /// The window, in seconds.
    pub window_seconds: Option<u64>,
    /// The threshold.
    pub threshold: Option<u64>,
    /// `report` or `block`.
    pub mode: Option<Mode>,
}

/// Incident rate limiting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Incidents {
    /// The window, in seconds.
    pub window_seconds: u64,
    /// Incidents reported per consumer, kind and service per window; later detections are
    /// counted in metrics and refer to the last reported incident.
    pub max_per_window: u64,
}

impl Default for Incidents {
    fn default() -> Self {
        Incidents {
            window_seconds: 300,
            max_per_window: 1,
        }
    }
}

/// A detector as the plugin runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectorSettings {
    /// Its category.
    pub category: Category,
    /// Whether it runs.
    pub enabled: bool,
    /// Its mode.
    pub mode: Mode,
    /// Field names it skips, lowercase.
    pub ignore_fields: Vec<String>,
}

impl DetectorSettings {
    /// Whether the detector skips the field `name`.
    pub fn ignores(&self, name: &str) -> bool {
        self.ignore_fields
            .iter()
            .any(|ignored| ignored.eq_ignore_ascii_case(name))
    }
}

/// A volume rule as the plugin runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRuleSettings {
    /// Its name.
    pub name: String,
    /// The service code prefix, if any.
    pub service_prefix: Option<String>,
    /// The route prefix, if any.
    pub path_prefix: Option<String>,
    /// The window, in seconds.
    pub window_seconds: u64,
    /// The threshold.
    pub threshold: u64,
    /// The mode.
    pub mode: Mode,
}

/// The configuration, checked and ready.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration as given (for the fields used as they are).
    pub config: Config,
    /// The detectors, in `Category::ALL` order.
    pub detectors: Vec<DetectorSettings>,
    /// Header names never inspected, lowercase.
    pub ignored_headers: Vec<String>,
    /// The blocked address ranges, with the entry as configured.
    pub blocked_ranges: Vec<(String, Cidr)>,
    /// The volume rules.
    pub volume_rules: Vec<VolumeRuleSettings>,
}

/// Headers whose values are credentials: never inspected, never quoted in evidence.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "proxy-authorization"];

impl Settings {
    /// Checks a configuration; `Err` says what is wrong, for the operator.
    pub fn new(config: Config) -> Result<Settings, String> {
        let detectors = Category::ALL
            .iter()
            .map(|&category| {
                let detector = match category {
                    Category::Sqli => &config.detectors.sqli,
                    Category::Xss => &config.detectors.xss,
                    Category::Traversal => &config.detectors.traversal,
                    Category::Cmdi => &config.detectors.cmdi,
                    Category::Ssrf => &config.detectors.ssrf,
                };
                let ignore_fields = match (&detector.ignore_fields, category) {
                    (Some(fields), _) => fields.clone(),
                    (None, Category::Ssrf) => {
                        SSRF_DEFAULT_IGNORED.iter().map(|s| s.to_string()).collect()
                    }
                    (None, _) => Vec::new(),
                };
                DetectorSettings {
                    category,
                    enabled: detector.enabled,
                    mode: detector.mode.unwrap_or(config.mode),
                    ignore_fields,
                }
            })
            .collect();
        let ignored_headers = CREDENTIAL_HEADERS
            .iter()
            .map(|name| name.to_string())
            .chain(
                config
                    .inspect
                    .ignore_headers
                    .iter()
                    .map(|name| name.to_ascii_lowercase()),
            )
            .collect();
        if config.inspect.max_body_bytes == 0 || config.inspect.max_body_bytes > MAX_INSPECTED_BODY
        {
            return Err(format!(
                "`inspect.max_body_bytes` must be 1 to {MAX_INSPECTED_BODY}"
            ));
        }
        let blocked_ranges = config
            .blocklist
            .addresses
            .iter()
            .map(|entry| {
                Cidr::parse(entry.trim())
                    .map(|cidr| (entry.trim().to_string(), cidr))
                    .map_err(|err| format!("`blocklist.addresses`: {err}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(short) = config.blocklist.token_prefixes.iter().find(|prefix| {
            prefix.chars().count() < MIN_TOKEN_PREFIX || prefix.contains(char::is_whitespace)
        }) {
            return Err(format!(
                "`blocklist.token_prefixes`: `{}` must be at least {MIN_TOKEN_PREFIX} characters without spaces, or it would block tokens that did not leak",
                crate::text::escape(short)
            ));
        }
        let volume_rules = volume_rules(&config.volume)?;
        if config.volume.window_seconds == 0 || config.incidents.window_seconds == 0 {
            return Err("windows must be at least 1 second".into());
        }
        if !matches!(config.volume.status, 403 | 429) {
            return Err("`volume.status` must be 403 or 429".into());
        }
        if config.incidents.max_per_window == 0 {
            return Err("`incidents.max_per_window` must be at least 1".into());
        }
        Ok(Settings {
            config,
            detectors,
            ignored_headers,
            blocked_ranges,
            volume_rules,
        })
    }

    /// The sensitivity in force in `environment`.
    pub fn sensitivity(&self, environment: &str) -> Sensitivity {
        let by_environment = &self.config.sensitivity_by_environment;
        let specific = match environment {
            "pruebas" => by_environment.pruebas,
            "produccion" => by_environment.produccion,
            _ => None,
        };
        specific.unwrap_or(self.config.sensitivity)
    }

    /// Whether a header's value is inspected.
    pub fn inspects_header(&self, name: &str) -> bool {
        !self
            .ignored_headers
            .iter()
            .any(|ignored| ignored.eq_ignore_ascii_case(name))
    }
}

fn volume_rules(volume: &Volume) -> Result<Vec<VolumeRuleSettings>, String> {
    let mut rules: Vec<VolumeRuleSettings> = Vec::with_capacity(volume.rules.len());
    for (index, rule) in volume.rules.iter().enumerate() {
        if rule.service_prefix.is_none() && rule.path_prefix.is_none() {
            return Err(format!(
                "`volume.rules[{index}]` needs a `service_prefix` or a `path_prefix`"
            ));
        }
        let name = rule.name.clone().unwrap_or_else(|| {
            format!(
                "{}{}",
                rule.service_prefix.as_deref().unwrap_or("*"),
                rule.path_prefix.as_deref().unwrap_or("")
            )
        });
        if name == "default" || rules.iter().any(|other| other.name == name) {
            return Err(format!(
                "`volume.rules[{index}]`: the name `{name}` is taken; give the rule a unique `name`"
            ));
        }
        let window_seconds = rule.window_seconds.unwrap_or(volume.window_seconds);
        if window_seconds == 0 {
            return Err(format!(
                "`volume.rules[{index}].window_seconds` must be at least 1"
            ));
        }
        rules.push(VolumeRuleSettings {
            name,
            service_prefix: rule
                .service_prefix
                .as_ref()
                .map(|prefix| prefix.trim_end_matches('/').to_string()),
            path_prefix: rule
                .path_prefix
                .as_ref()
                .map(|prefix| prefix.trim_end_matches('/').to_string()),
            window_seconds,
            threshold: rule.threshold.unwrap_or(volume.threshold),
            mode: rule.mode.unwrap_or(volume.mode),
        });
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chasqui_plugin_sdk::serde_json::{self, json, Map, Value};

    fn settings(config: Value) -> Result<Settings, String> {
        Settings::new(serde_json::from_value(config).map_err(|err| err.to_string())?)
    }

    /// The object that the schema's `default` annotations describe.
    fn schema_defaults(schema: &Value) -> Value {
        if let Some(default) = schema.get("default") {
            return default.clone();
        }
        let mut object = Map::new();
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                let value = schema_defaults(property);
                if !value.is_null() {
                    object.insert(name.clone(), value);
                }
            }
        }
        if object.is_empty() && schema.get("type") != Some(&json!("object")) {
            Value::Null
        } else {
            Value::Object(object)
        }
    }

    #[test]
    fn the_schema_documents_the_serde_defaults() {
        let schema: Value = serde_json::from_str(include_str!("../config.schema.json")).unwrap();
        let defaults = schema_defaults(&schema);
        // Every property with a fixed default has it in the schema.
        assert_eq!(defaults["mode"], "block");
        assert_eq!(defaults["inspect"]["max_body_bytes"], 65536);
        assert_eq!(defaults["volume"]["threshold"], 1200);
        let from_schema: Config = serde_json::from_value(defaults).unwrap();
        assert_eq!(from_schema, Config::default());
        let empty: Config = serde_json::from_value(json!({})).unwrap();
        assert_eq!(empty, Config::default());
    }

    #[test]
    fn detectors_take_the_global_mode_unless_overridden() {
        let settings = settings(json!({
            "mode": "report",
            "detectors": { "sqli": { "mode": "block" }, "xss": { "enabled": false } }
        }))
        .unwrap();
        let by = |category| {
            settings
                .detectors
                .iter()
                .find(|detector| detector.category == category)
                .unwrap()
                .clone()
        };
        assert_eq!(by(Category::Sqli).mode, Mode::Block);
        assert_eq!(by(Category::Traversal).mode, Mode::Report);
        assert!(!by(Category::Xss).enabled);
        assert!(by(Category::Cmdi).enabled);
        assert!(by(Category::Ssrf).ignores("Redirect_URI"));
        assert!(!by(Category::Sqli).ignores("redirect_uri"));
        let custom = super::Settings::new(
            serde_json::from_value(json!({"detectors": {"ssrf": {"ignore_fields": ["callback"]}}}))
                .unwrap(),
        )
        .unwrap();
        assert!(custom.detectors[4].ignores("callback"));
        assert!(!custom.detectors[4].ignores("redirect_uri"));
    }

    #[test]
    fn sensitivity_per_environment() {
        let settings = settings(json!({
            "sensitivity": "low",
            "sensitivity_by_environment": { "pruebas": "high" }
        }))
        .unwrap();
        assert_eq!(settings.sensitivity("pruebas"), Sensitivity::High);
        assert_eq!(settings.sensitivity("produccion"), Sensitivity::Low);
        assert_eq!(settings.sensitivity(""), Sensitivity::Low);
        assert_eq!(Sensitivity::Low.threshold(), 9);
        assert_eq!(Sensitivity::Medium.threshold(), 6);
        assert_eq!(Sensitivity::High.threshold(), 4);
    }

    #[test]
    fn credential_headers_are_never_inspected() {
        let settings = settings(json!({ "inspect": { "ignore_headers": ["X-Firma"] } })).unwrap();
        assert!(!settings.inspects_header("authorization"));
        assert!(!settings.inspects_header("Proxy-Authorization"));
        assert!(!settings.inspects_header("x-firma"));
        assert!(settings.inspects_header("user-agent"));
    }

    #[test]
    fn invalid_values_are_refused_with_a_reason() {
        let refused = |config: Value| settings(config).unwrap_err();
        assert!(
            refused(json!({ "blocklist": { "addresses": ["10.0.0.0/33"] } }))
                .contains("blocklist.addresses")
        );
        assert!(
            refused(json!({ "blocklist": { "token_prefixes": ["chq_"] } })).contains("at least 8")
        );
        assert!(
            refused(json!({ "volume": { "rules": [{ "threshold": 5 }] } }))
                .contains("needs a `service_prefix`")
        );
        assert!(refused(json!({ "volume": { "rules": [
            { "service_prefix": "segip" }, { "service_prefix": "segip" }
        ] } }))
        .contains("unique"));
        assert!(refused(json!({ "volume": { "status": 500 } })).contains("403 or 429"));
        assert!(
            refused(json!({ "inspect": { "max_body_bytes": 2000000 } })).contains("max_body_bytes")
        );
        assert!(refused(json!({ "incidents": { "max_per_window": 0 } })).contains("at least 1"));
        assert!(refused(json!({ "volume": { "window_seconds": 0 } })).contains("at least 1"));
        assert!(refused(json!({ "unknown": 1 })).contains("unknown field"));
        assert!(refused(json!({ "detectors": { "sqlx": {} } })).contains("unknown field"));
        assert!(refused(json!({ "sensitivity": "extreme" })).contains("unknown variant"));
    }

    #[test]
    fn volume_rules_inherit_and_are_named() {
        let settings = settings(json!({
            "volume": {
                "threshold": 100,
                "mode": "block",
                "rules": [
                    { "service_prefix": "segip/", "path_prefix": "/personas/", "threshold": 10 },
                    { "name": "sin", "service_prefix": "impuestos", "mode": "report", "window_seconds": 3600 }
                ]
            }
        }))
        .unwrap();
        let rules = &settings.volume_rules;
        assert_eq!(rules[0].name, "segip//personas/");
        assert_eq!(rules[0].service_prefix.as_deref(), Some("segip"));
        assert_eq!(rules[0].path_prefix.as_deref(), Some("/personas"));
        assert_eq!(
            (rules[0].threshold, rules[0].window_seconds, rules[0].mode),
            (10, 60, Mode::Block)
        );
        assert_eq!(rules[1].name, "sin");
        assert_eq!(
            (rules[1].threshold, rules[1].window_seconds, rules[1].mode),
            (100, 3600, Mode::Report)
        );
    }
}
