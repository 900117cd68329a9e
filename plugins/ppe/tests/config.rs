//! The configuration as the gateway checks it: schema first, then the plugin.

use chasqui_plugin_ppe::Ppe;
use chasqui_plugin_sdk::serde_json::{json, Value};
use chasqui_plugin_sdk::testing::{Harness, HarnessError};

fn schema_errors(config: Value) -> String {
    match Harness::<Ppe>::new(config) {
        Err(HarnessError::Config(errors)) => errors.join("; "),
        other => panic!("expected a schema refusal, got {other:?}"),
    }
}

#[test]
fn the_empty_and_a_full_configuration_are_accepted() {
    Harness::<Ppe>::new(json!({})).unwrap();
    Harness::<Ppe>::new(json!({
        "max_body_bytes": 131072,
        "limits": {"cpt_centavos": 2000000, "qr_centavos": 5000000, "tarjeta_centavos": 2000000},
        "cpt": {"default_validity_days": 3, "max_validity_days": 15},
        "fees": {"cpt_digital_centavos": 100, "cpt_bank_desk_centavos": 320, "qr_centavos": 100, "tarjeta_basis_points": 170},
        "retention_days": 90,
        "pending_seconds": 60,
        "retry_after_seconds": 5,
        "max_recorded_response_bytes": 32768,
        "test_checkout_url": "https://pagos.entidad.gob.bo/checkout"
    }))
    .unwrap();
}

#[test]
fn the_schema_refuses_what_it_should() {
    assert_eq!(
        schema_errors(json!({"extra": 1})),
        "/extra: unexpected property"
    );
    assert_eq!(
        schema_errors(json!({"limits": {"qr_centavos": 5000001}})),
        "/limits/qr_centavos: greater than the maximum 5000000"
    );
    assert_eq!(
        schema_errors(json!({"limits": {"tarjeta": 1}})),
        "/limits/tarjeta: unexpected property"
    );
    assert_eq!(
        schema_errors(json!({"max_body_bytes": 2097152})),
        "/max_body_bytes: greater than the maximum 1048576"
    );
    assert!(schema_errors(json!({"test_checkout_url": "http://x.bo/c"})).contains("pattern"));
    assert!(schema_errors(json!({"test_checkout_url": "https://x.bo/c/"})).contains("pattern"));
    assert!(schema_errors(json!({"pending_seconds": 1})).contains("minimum"));
    assert!(schema_errors(json!({"fees": {"tarjeta_basis_points": 10001}})).contains("maximum"));
    assert!(schema_errors(json!([])).contains("expected object"));
}

#[test]
fn the_plugin_refuses_inconsistent_validity() {
    match Harness::<Ppe>::new(
        json!({"cpt": {"default_validity_days": 20, "max_validity_days": 10}}),
    ) {
        Err(HarnessError::Init(message)) => {
            assert!(message.contains("default_validity_days"), "{message}")
        }
        other => panic!("expected the plugin to refuse, got {other:?}"),
    }
}
