//! The citizen's identity as the upstream receives it, from a verified token.

use crate::call::Environment;
use crate::citizens;
use crate::headers::{self, encode_value};
use crate::token::Token;
use serde_json::{json, Map, Value};

/// A verified citizen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject identifier.
    pub sub: String,
    /// The identity-card number, if the token (or, in pruebas, the synthetic citizen) has it.
    pub ci: Option<String>,
    /// The full name, likewise.
    pub name: Option<String>,
    /// Birth date, only with the `fecha_nacimiento` scope.
    pub birth_date: Option<String>,
    /// E-mail, only with the `email` scope.
    pub email: Option<String>,
    /// Mobile phone, only with the `celular` scope.
    pub phone: Option<String>,
    /// The scopes granted.
    pub scopes: Vec<String>,
}

impl Identity {
    /// The identity a verified token states. Claims are read in Ciudadanía Digital's
    /// userinfo shape (`profile.documento_identidad.numero_documento`, `profile.nombre`)
    /// or as flat claims (`documento_identidad`, `name`); in the test environment what the
    /// token leaves out comes from the synthetic citizen with the same `sub`.
    pub fn from_token(token: &Token, environment: Environment) -> Identity {
        let claims = &token.claims;
        let has = |scope: &str| token.scopes.iter().any(|s| s == scope);
        let mut identity = Identity {
            sub: token.subject.clone(),
            ci: ci_claim(claims),
            name: name_claim(claims),
            birth_date: text_claim(claims, "fecha_nacimiento"),
            email: text_claim(claims, "email"),
            phone: text_claim(claims, "celular"),
            scopes: token.scopes.clone(),
        };
        if environment == Environment::Pruebas {
            if let Some(citizen) = citizens::find(&identity.sub) {
                identity.ci.get_or_insert_with(|| citizen.ci.to_string());
                identity.name.get_or_insert_with(|| citizen.full_name());
                identity
                    .birth_date
                    .get_or_insert_with(|| citizen.birth_date.to_string());
                identity
                    .email
                    .get_or_insert_with(|| citizen.email.to_string());
                identity
                    .phone
                    .get_or_insert_with(|| citizen.phone.to_string());
            }
        }
        // Optional data goes on only with its scope, whatever the token carries.
        if !has("fecha_nacimiento") {
            identity.birth_date = None;
        }
        if !has("email") {
            identity.email = None;
        }
        if !has("celular") {
            identity.phone = None;
        }
        identity
    }

    /// The identity header fields for the upstream, values percent-encoded where needed.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            (headers::SUB, encode_value(&self.sub)),
            (headers::SCOPES, self.scopes.join(" ")),
        ];
        let optional = [
            (headers::CI, &self.ci),
            (headers::NOMBRE, &self.name),
            (headers::FECHA_NACIMIENTO, &self.birth_date),
            (headers::EMAIL, &self.email),
            (headers::CELULAR, &self.phone),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                fields.push((name, encode_value(value)));
            }
        }
        fields
    }

    /// The citizen as recorded in ledger evidence: `sub`, and the CI when known.
    pub fn evidence(&self) -> Value {
        match &self.ci {
            Some(ci) => json!({ "sub": self.sub, "ci": ci }),
            None => json!({ "sub": self.sub }),
        }
    }
}

/// A short text claim (at most 256 bytes, no control characters).
fn text_claim(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).and_then(clean)
}

fn clean(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty() && text.len() <= 256 && !text.chars().any(char::is_control))
        .then(|| text.to_string())
}

fn ci_claim(claims: &Map<String, Value>) -> Option<String> {
    let nested = claims
        .get("profile")
        .and_then(|p| p.get("documento_identidad"))
        .and_then(|d| d.get("numero_documento"));
    let value = nested.or_else(|| claims.get("documento_identidad"))?;
    match value {
        Value::String(text) => clean(text),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn name_claim(claims: &Map<String, Value>) -> Option<String> {
    if let Some(nombre) = claims.get("profile").and_then(|p| p.get("nombre")) {
        let parts: Vec<&str> = ["nombres", "primer_apellido", "segundo_apellido"]
            .iter()
            .filter_map(|part| nombre.get(*part).and_then(Value::as_str))
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .collect();
        if let Some(name) = clean(&parts.join(" ")) {
            return Some(name);
        }
    }
    text_claim(claims, "name")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: Value, scopes: &[&str]) -> Token {
        Token {
            subject: claims["sub"].as_str().unwrap_or("someone").to_string(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            claims: claims.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn nested_profile_claims_are_read() {
        let claims = json!({
            "sub": "x",
            "profile": {
                "documento_identidad": { "numero_documento": "123" },
                "nombre": { "nombres": "ANA", "primer_apellido": "ROJAS", "segundo_apellido": "" }
            },
            "email": "ana@example.com"
        });
        let identity = Identity::from_token(
            &token(claims, &["openid", "profile", "email"]),
            Environment::Produccion,
        );
        assert_eq!(identity.ci.as_deref(), Some("123"));
        assert_eq!(identity.name.as_deref(), Some("ANA ROJAS"));
        assert_eq!(identity.email.as_deref(), Some("ana@example.com"));
    }

    #[test]
    fn optional_claims_need_their_scope() {
        let claims = json!({ "sub": "x", "email": "a@example.com", "celular": "7" });
        let identity = Identity::from_token(
            &token(claims, &["openid", "profile"]),
            Environment::Produccion,
        );
        assert_eq!(identity.email, None);
        assert_eq!(identity.phone, None);
        assert_eq!(identity.ci, None);
    }

    #[test]
    fn flat_claims_are_read_and_numbers_accepted() {
        let claims = json!({ "sub": "x", "documento_identidad": 4785123, "name": " Juan Pérez " });
        let identity = Identity::from_token(&token(claims, &[]), Environment::Produccion);
        assert_eq!(identity.ci.as_deref(), Some("4785123"));
        assert_eq!(identity.name.as_deref(), Some("Juan Pérez"));
    }

    #[test]
    fn synthetic_citizens_fill_gaps_only_in_pruebas() {
        let sub = citizens::CITIZENS[0].sub;
        let t = token(json!({ "sub": sub }), &["openid", "profile", "celular"]);
        let test = Identity::from_token(&t, Environment::Pruebas);
        assert_eq!(test.ci.as_deref(), Some("4785123"));
        assert_eq!(test.phone.as_deref(), Some("70000001"));
        assert_eq!(test.email, None);
        let production = Identity::from_token(&t, Environment::Produccion);
        assert_eq!(production.ci, None);
    }
}
