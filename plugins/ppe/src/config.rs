//! The plugin's configuration (`config.schema.json`) and the settings derived from it.
//!
//! The gateway validates a configuration against the schema before `new` runs; the serde
//! defaults below are the schema's `default`s, and [`Settings::from_config`] refuses what
//! the schema cannot express (cross-field rules).

use crate::money::Method;
use serde::Deserialize;
use std::time::Duration;

/// The configuration, as policy gives it. Every field is optional (`{}` is valid).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: u32,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    cpt: CptValidity,
    #[serde(default)]
    fees: Fees,
    #[serde(default = "default_retention_days")]
    retention_days: u32,
    #[serde(default = "default_pending_seconds")]
    pending_seconds: u32,
    #[serde(default = "default_retry_after_seconds")]
    retry_after_seconds: u32,
    #[serde(default = "default_max_recorded_response_bytes")]
    max_recorded_response_bytes: u32,
    #[serde(default = "default_test_checkout_url")]
    test_checkout_url: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body_bytes: default_max_body_bytes(),
            limits: Limits::default(),
            cpt: CptValidity::default(),
            fees: Fees::default(),
            retention_days: default_retention_days(),
            pending_seconds: default_pending_seconds(),
            retry_after_seconds: default_retry_after_seconds(),
            max_recorded_response_bytes: default_max_recorded_response_bytes(),
            test_checkout_url: default_test_checkout_url(),
        }
    }
}

/// Largest amount per method, in centavos.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    #[serde(default = "default_cpt_limit")]
    cpt_centavos: u64,
    #[serde(default = "default_qr_limit")]
    qr_centavos: u64,
    #[serde(default = "default_card_limit")]
    tarjeta_centavos: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpt_centavos: default_cpt_limit(),
            qr_centavos: default_qr_limit(),
            tarjeta_centavos: default_card_limit(),
        }
    }
}

/// Validity of CPT codes, in days.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CptValidity {
    #[serde(default = "default_cpt_validity_days")]
    default_validity_days: u32,
    #[serde(default = "default_cpt_max_validity_days")]
    max_validity_days: u32,
}

impl Default for CptValidity {
    fn default() -> Self {
        CptValidity {
            default_validity_days: default_cpt_validity_days(),
            max_validity_days: default_cpt_max_validity_days(),
        }
    }
}

/// The tariff, in centavos (basis points for cards).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fees {
    #[serde(default = "default_cpt_digital_fee")]
    cpt_digital_centavos: u64,
    #[serde(default = "default_cpt_bank_desk_fee")]
    cpt_bank_desk_centavos: u64,
    #[serde(default = "default_qr_fee")]
    qr_centavos: u64,
    #[serde(default = "default_card_basis_points")]
    tarjeta_basis_points: u64,
}

impl Default for Fees {
    fn default() -> Self {
        Fees {
            cpt_digital_centavos: default_cpt_digital_fee(),
            cpt_bank_desk_centavos: default_cpt_bank_desk_fee(),
            qr_centavos: default_qr_fee(),
            tarjeta_basis_points: default_card_basis_points(),
        }
    }
}

fn default_max_body_bytes() -> u32 {
    64 << 10
}
fn default_cpt_limit() -> u64 {
    10_000_000
}
fn default_qr_limit() -> u64 {
    QR_CEILING_CENTAVOS
}
fn default_card_limit() -> u64 {
    1_500_000
}
fn default_cpt_validity_days() -> u32 {
    7
}
fn default_cpt_max_validity_days() -> u32 {
    30
}
fn default_cpt_digital_fee() -> u64 {
    100
}
fn default_cpt_bank_desk_fee() -> u64 {
    320
}
fn default_qr_fee() -> u64 {
    100
}
fn default_card_basis_points() -> u64 {
    170
}
fn default_retention_days() -> u32 {
    30
}
fn default_pending_seconds() -> u32 {
    120
}
fn default_retry_after_seconds() -> u32 {
    2
}
fn default_max_recorded_response_bytes() -> u32 {
    16 << 10
}
fn default_test_checkout_url() -> String {
    "https://pruebas.ppe.agetic.gob.bo/checkout".to_string()
}

/// The bank's ceiling for a QR payment (Bs 50,000.00), which no configuration can raise.
pub const QR_CEILING_CENTAVOS: u64 = 5_000_000;

/// The validity days a QR may have (document 001: one day or seven days).
pub const QR_VALIDITY_DAYS: [u32; 2] = [1, 7];

/// The configuration in the form the plugin uses.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub max_body_bytes: usize,
    pub cpt_limit: u64,
    pub qr_limit: u64,
    pub card_limit: u64,
    pub cpt_default_validity_days: u32,
    pub cpt_max_validity_days: u32,
    pub cpt_digital_fee: u64,
    pub cpt_bank_desk_fee: u64,
    pub qr_fee: u64,
    pub card_basis_points: u64,
    pub retention: Duration,
    pub pending: Duration,
    pub retry_after_seconds: u32,
    pub max_recorded_response_bytes: usize,
    pub test_checkout_url: String,
}

impl Settings {
    /// Checks the rules the schema cannot state and converts units.
    pub fn from_config(config: Config) -> Result<Settings, String> {
        // The gateway has already checked the schema; these repeat the bounds that matter
        // for correctness, so a hand-built configuration cannot slip past them.
        if config.limits.qr_centavos == 0 || config.limits.qr_centavos > QR_CEILING_CENTAVOS {
            return Err(format!(
                "limits.qr_centavos must be 1 to {QR_CEILING_CENTAVOS} (Bs 50,000.00), not {}",
                config.limits.qr_centavos
            ));
        }
        if config.limits.cpt_centavos == 0 || config.limits.tarjeta_centavos == 0 {
            return Err("limits must be at least 1 centavo".into());
        }
        let cpt = &config.cpt;
        if cpt.default_validity_days == 0 || cpt.max_validity_days == 0 {
            return Err("cpt validity must be at least 1 day".into());
        }
        if cpt.default_validity_days > cpt.max_validity_days {
            return Err(format!(
                "cpt.default_validity_days ({}) is over cpt.max_validity_days ({})",
                cpt.default_validity_days, cpt.max_validity_days
            ));
        }
        if config.fees.tarjeta_basis_points > 10_000 {
            return Err("fees.tarjeta_basis_points is over 10000 (100%)".into());
        }
        let url = &config.test_checkout_url;
        if !url.starts_with("https://") || url.ends_with('/') || url.contains(['?', '#']) {
            return Err(format!(
                "test_checkout_url must be an https URL without query, fragment or trailing slash, not {url:?}"
            ));
        }
        if !(1024..=1 << 20).contains(&config.max_body_bytes) {
            return Err("max_body_bytes must be 1024 to 1048576".into());
        }
        Ok(Settings {
            max_body_bytes: config.max_body_bytes as usize,
            cpt_limit: config.limits.cpt_centavos,
            qr_limit: config.limits.qr_centavos,
            card_limit: config.limits.tarjeta_centavos,
            cpt_default_validity_days: cpt.default_validity_days,
            cpt_max_validity_days: cpt.max_validity_days,
            cpt_digital_fee: config.fees.cpt_digital_centavos,
            cpt_bank_desk_fee: config.fees.cpt_bank_desk_centavos,
            qr_fee: config.fees.qr_centavos,
            card_basis_points: config.fees.tarjeta_basis_points,
            retention: Duration::from_secs(u64::from(config.retention_days.max(1)) * 86_400),
            pending: Duration::from_secs(u64::from(config.pending_seconds.max(1))),
            retry_after_seconds: config.retry_after_seconds.max(1),
            max_recorded_response_bytes: config.max_recorded_response_bytes as usize,
            test_checkout_url: config.test_checkout_url,
        })
    }

    /// The largest amount allowed for `method`, in centavos.
    pub fn limit(&self, method: Method) -> u64 {
        match method {
            Method::Cpt => self.cpt_limit,
            Method::Qr => self.qr_limit,
            Method::Tarjeta => self.card_limit,
        }
    }

    /// How long a payment's records live: its validity, then the retention period.
    pub fn record_ttl(&self, validity_days: Option<u32>) -> Duration {
        let validity = Duration::from_secs(u64::from(validity_days.unwrap_or(0)) * 86_400);
        self.retention.saturating_add(validity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chasqui_plugin_sdk::serde_json::{self, json};

    fn settings(value: serde_json::Value) -> Result<Settings, String> {
        let config: Config = serde_json::from_value(value).map_err(|e| e.to_string())?;
        Settings::from_config(config)
    }

    #[test]
    fn empty_configuration_gives_the_documented_defaults() {
        let s = settings(json!({})).unwrap();
        assert_eq!(s.max_body_bytes, 65_536);
        assert_eq!(
            (s.cpt_limit, s.qr_limit, s.card_limit),
            (10_000_000, 5_000_000, 1_500_000)
        );
        assert_eq!(
            (s.cpt_default_validity_days, s.cpt_max_validity_days),
            (7, 30)
        );
        assert_eq!(
            (
                s.cpt_digital_fee,
                s.cpt_bank_desk_fee,
                s.qr_fee,
                s.card_basis_points
            ),
            (100, 320, 100, 170)
        );
        assert_eq!(s.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(s.pending, Duration::from_secs(120));
        assert_eq!(s.retry_after_seconds, 2);
        assert_eq!(s.max_recorded_response_bytes, 16_384);
        assert_eq!(
            s.test_checkout_url,
            "https://pruebas.ppe.agetic.gob.bo/checkout"
        );
    }

    #[test]
    fn defaults_match_the_schema() {
        // The schema documents the defaults; serde applies them. They must agree.
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../config.schema.json")).unwrap();
        let props = &schema["properties"];
        let s = settings(json!({})).unwrap();
        assert_eq!(props["max_body_bytes"]["default"], json!(s.max_body_bytes));
        let limits = &props["limits"]["properties"];
        assert_eq!(limits["cpt_centavos"]["default"], json!(s.cpt_limit));
        assert_eq!(limits["qr_centavos"]["default"], json!(s.qr_limit));
        assert_eq!(limits["tarjeta_centavos"]["default"], json!(s.card_limit));
        let cpt = &props["cpt"]["properties"];
        assert_eq!(
            cpt["default_validity_days"]["default"],
            json!(s.cpt_default_validity_days)
        );
        assert_eq!(
            cpt["max_validity_days"]["default"],
            json!(s.cpt_max_validity_days)
        );
        let fees = &props["fees"]["properties"];
        assert_eq!(
            fees["cpt_digital_centavos"]["default"],
            json!(s.cpt_digital_fee)
        );
        assert_eq!(
            fees["cpt_bank_desk_centavos"]["default"],
            json!(s.cpt_bank_desk_fee)
        );
        assert_eq!(fees["qr_centavos"]["default"], json!(s.qr_fee));
        assert_eq!(
            fees["tarjeta_basis_points"]["default"],
            json!(s.card_basis_points)
        );
        assert_eq!(
            props["retention_days"]["default"],
            json!(s.retention.as_secs() / 86_400)
        );
        assert_eq!(
            props["pending_seconds"]["default"],
            json!(s.pending.as_secs())
        );
        assert_eq!(
            props["retry_after_seconds"]["default"],
            json!(s.retry_after_seconds)
        );
        assert_eq!(
            props["max_recorded_response_bytes"]["default"],
            json!(s.max_recorded_response_bytes)
        );
        assert_eq!(
            props["test_checkout_url"]["default"],
            json!(s.test_checkout_url)
        );
    }

    #[test]
    fn cross_field_rules_are_enforced() {
        assert!(settings(json!({"cpt": {"default_validity_days": 40}}))
            .unwrap_err()
            .contains("over cpt.max_validity_days"));
        assert!(settings(json!({"limits": {"qr_centavos": 5_000_001}}))
            .unwrap_err()
            .contains("limits.qr_centavos"));
        assert!(settings(json!({"test_checkout_url": "http://x.bo/c"}))
            .unwrap_err()
            .contains("https"));
        assert!(settings(json!({"test_checkout_url": "https://x.bo/c/"}))
            .unwrap_err()
            .contains("trailing slash"));
        assert!(settings(json!({"nope": 1})).unwrap_err().contains("nope"));
    }

    #[test]
    fn record_ttl_adds_validity_to_retention() {
        let s = settings(json!({"retention_days": 2})).unwrap();
        assert_eq!(s.record_ttl(None), Duration::from_secs(2 * 86_400));
        assert_eq!(s.record_ttl(Some(7)), Duration::from_secs(9 * 86_400));
    }
}
