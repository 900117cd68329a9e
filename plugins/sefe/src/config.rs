//! The plugin's configuration, as policy gives it (`config.schema.json`).
//!
//! Every member is optional and the defaults here are the schema's: `{}` is a working
//! configuration for the demo. [`Config::check`] repeats the schema's bounds, because a
//! configuration may reach [`Plugin::new`](chasqui_plugin_sdk::Plugin::new) without the
//! gateway's schema check (tests, other hosts) and the limits guard memory and the body
//! size the gateway accepts from a plugin.

use serde::Deserialize;

/// The largest body a plugin may pass on or answer with (the gateway's default).
pub const GATEWAY_BODY_LIMIT: u32 = 1 << 20;

/// The plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Largest request body read, in bytes; larger is answered 413.
    pub max_body_bytes: u32,
    /// Most lines (`detalle` entries) in one invoice.
    pub max_items: u32,
    /// How far `fechaEmision` may lie ahead of the gateway's clock, in seconds.
    pub future_tolerance_seconds: u32,
    /// How old `fechaEmision` may be, in hours.
    pub max_emission_age_hours: u32,
    /// Accepted `codigoMoneda` values (1 is the boliviano).
    pub currencies: Vec<u32>,
    /// Accepted `codigoMotivo` values of an annulment.
    pub annulment_reasons: Vec<u32>,
    /// Whether unknown invoice members are passed on instead of refused.
    pub allow_unknown_fields: bool,
    /// How long the test environment keeps an invoice, in hours.
    pub test_retention_hours: u32,
    /// Whether an operation fails when the audit ledger refuses its entry.
    pub ledger_required: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body_bytes: 256 * 1024,
            max_items: 500,
            future_tolerance_seconds: 300,
            max_emission_age_hours: 72,
            currencies: vec![1],
            annulment_reasons: vec![1, 3, 4],
            allow_unknown_fields: false,
            test_retention_hours: 168,
            ledger_required: false,
        }
    }
}

impl Config {
    /// Refuses values outside the schema's bounds, with a message for the operator.
    pub fn check(&self) -> Result<(), String> {
        fn within(name: &str, value: u32, min: u32, max: u32) -> Result<(), String> {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "`{name}` must be between {min} and {max}, not {value}"
                ))
            }
        }
        fn codes(name: &str, values: &[u32], max: u32) -> Result<(), String> {
            if values.is_empty() {
                return Err(format!("`{name}` must list at least one code"));
            }
            if let Some(bad) = values.iter().find(|&&code| code == 0 || code > max) {
                return Err(format!("`{name}` holds {bad}, outside 1 to {max}"));
            }
            Ok(())
        }
        within(
            "max_body_bytes",
            self.max_body_bytes,
            1024,
            GATEWAY_BODY_LIMIT,
        )?;
        within("max_items", self.max_items, 1, 10_000)?;
        within(
            "future_tolerance_seconds",
            self.future_tolerance_seconds,
            0,
            86_400,
        )?;
        within(
            "max_emission_age_hours",
            self.max_emission_age_hours,
            1,
            8_784,
        )?;
        within("test_retention_hours", self.test_retention_hours, 1, 8_784)?;
        codes("currencies", &self.currencies, 999)?;
        codes("annulment_reasons", &self.annulment_reasons, 99)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The schema's `default` of each property, as JSON.
    fn schema_defaults() -> Value {
        let schema: Value = serde_json::from_str(include_str!("../config.schema.json")).unwrap();
        let properties = schema["properties"].as_object().unwrap();
        properties
            .iter()
            .map(|(name, property)| (name.clone(), property["default"].clone()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    #[test]
    fn the_schema_defaults_are_the_code_defaults() {
        let from_schema: Config = serde_json::from_value(schema_defaults()).unwrap();
        assert_eq!(from_schema, Config::default());
        let empty: Config = serde_json::from_value(json!({})).unwrap();
        assert_eq!(empty, Config::default());
        assert_eq!(Config::default().check(), Ok(()));
    }

    #[test]
    fn every_field_of_the_struct_is_in_the_schema() {
        // deny_unknown_fields plus a full round trip: a field added to one but not the
        // other breaks this test.
        let defaults = schema_defaults();
        let serialized = json!({
            "max_body_bytes": 262144, "max_items": 500, "future_tolerance_seconds": 300,
            "max_emission_age_hours": 72, "currencies": [1], "annulment_reasons": [1, 3, 4],
            "allow_unknown_fields": false, "test_retention_hours": 168, "ledger_required": false
        });
        assert_eq!(defaults, serialized);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let config = |value: Value| -> Config { serde_json::from_value(value).unwrap() };
        assert_eq!(
            config(json!({ "max_body_bytes": 2_000_000 })).check(),
            Err("`max_body_bytes` must be between 1024 and 1048576, not 2000000".into())
        );
        assert_eq!(
            config(json!({ "max_items": 0 })).check(),
            Err("`max_items` must be between 1 and 10000, not 0".into())
        );
        assert_eq!(
            config(json!({ "currencies": [] })).check(),
            Err("`currencies` must list at least one code".into())
        );
        assert_eq!(
            config(json!({ "annulment_reasons": [1, 100] })).check(),
            Err("`annulment_reasons` holds 100, outside 1 to 99".into())
        );
        assert!(serde_json::from_value::<Config>(json!({ "max_items": -1 })).is_err());
        assert!(serde_json::from_value::<Config>(json!({ "unknown": 1 })).is_err());
    }
}
