//! The body of an annulment request: `{"codigoMotivo": 1, "descripcion": "..."}`.
//!
//! `codigoMotivo` is one of the SIN's annulment reasons that policy accepts (by default
//! 1 invoice wrongly issued, 3 wrong issue data, 4 goods or service returned);
//! `descripcion` is an optional free text for the issuer's records.

use crate::fields::{self, Object, Presence};
use crate::invoice::Rejection;
use crate::json;
use crate::problem::FieldError;

/// A valid annulment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annulment {
    /// The SIN's annulment reason.
    pub codigo_motivo: u32,
    /// The issuer's note, if any.
    pub descripcion: Option<String>,
}

/// Checks an annulment body against the accepted `reasons`.
pub fn validate(body: &[u8], reasons: &[u32], allow_unknown: bool) -> Result<Annulment, Rejection> {
    let document = json::parse_document(body).map_err(Rejection::Malformed)?;
    let mut errors = Vec::new();
    let Some(mut object) = Object::read(document, "", &mut errors) else {
        return Err(Rejection::Invalid(errors));
    };
    let reason = fields::integer(
        &mut object,
        "codigoMotivo",
        Presence::Required,
        (1, 99),
        &mut errors,
    )
    .and_then(|code| u32::try_from(code).ok());
    if let Some(code) = reason {
        if !reasons.contains(&code) {
            let list: Vec<String> = reasons.iter().map(u32::to_string).collect();
            errors.push(FieldError::new(
                "/codigoMotivo",
                "not-allowed",
                format!(
                    "motivo no admitido; se admite: {} / reason not accepted; accepted: {}",
                    list.join(", "),
                    list.join(", ")
                ),
            ));
        }
    }
    let descripcion = fields::text(
        &mut object,
        "descripcion",
        Presence::Optional,
        500,
        &mut errors,
    );
    object.finish(allow_unknown, &mut errors);
    match reason {
        Some(codigo_motivo) if errors.is_empty() => Ok(Annulment {
            codigo_motivo,
            descripcion,
        }),
        _ => Err(Rejection::Invalid(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(result: Result<Annulment, Rejection>) -> Vec<(String, &'static str)> {
        match result {
            Err(Rejection::Invalid(errors)) => {
                errors.into_iter().map(|e| (e.pointer, e.code)).collect()
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_request() {
        assert_eq!(
            validate(
                br#"{"codigoMotivo": 3, "descripcion": " NIT errado "}"#,
                &[1, 3, 4],
                false
            ),
            Ok(Annulment {
                codigo_motivo: 3,
                descripcion: Some("NIT errado".into())
            })
        );
        assert_eq!(
            validate(br#"{"codigoMotivo": 1, "descripcion": null}"#, &[1], false),
            Ok(Annulment {
                codigo_motivo: 1,
                descripcion: None
            })
        );
    }

    #[test]
    fn each_rule_is_reported() {
        assert_eq!(
            codes(validate(br#"{}"#, &[1], false)),
            [("/codigoMotivo".to_string(), "required")]
        );
        assert_eq!(
            codes(validate(br#"{"codigoMotivo": 2}"#, &[1, 3, 4], false)),
            [("/codigoMotivo".to_string(), "not-allowed")]
        );
        assert_eq!(
            codes(validate(br#"{"codigoMotivo": "1"}"#, &[1], false)),
            [("/codigoMotivo".to_string(), "type")]
        );
        assert_eq!(
            codes(validate(
                br#"{"codigoMotivo": 1, "motivo": "x"}"#,
                &[1],
                false
            )),
            [("/motivo".to_string(), "unknown-field")]
        );
        assert!(validate(br#"{"codigoMotivo": 1, "motivo": "x"}"#, &[1], true).is_ok());
        assert_eq!(
            codes(validate(br#"[1]"#, &[1], false)),
            [(String::new(), "type")]
        );
        assert!(matches!(
            validate(b"{", &[1], false),
            Err(Rejection::Malformed(_))
        ));
    }
}
