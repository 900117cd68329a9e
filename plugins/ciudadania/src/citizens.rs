//! The synthetic citizens of the test environment (`pruebas`).
//!
//! An entity integrates its whole flow against these people before any real citizen is
//! involved: test tokens name one of them in `sub`, userinfo answers their data, and
//! approvals, notifications and authorizations must be addressed to one of them. The data
//! is invented; the CI numbers are not real identity cards.

use serde_json::{json, Value};

/// A synthetic digital citizen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Citizen {
    /// The subject identifier test tokens carry.
    pub sub: &'static str,
    /// Identity-card number (cédula de identidad).
    pub ci: &'static str,
    /// Given names.
    pub given_names: &'static str,
    /// First surname.
    pub first_surname: &'static str,
    /// Second surname; empty when the citizen has only one.
    pub second_surname: &'static str,
    /// Birth date, ISO 8601.
    pub birth_date: &'static str,
    /// E-mail address.
    pub email: &'static str,
    /// Mobile phone number.
    pub phone: &'static str,
}

/// The fixed set of synthetic citizens, documented in the README.
pub const CITIZENS: [Citizen; 5] = [
    Citizen {
        sub: "5f0c2a8e-1b7d-4c3e-9a61-000000000001",
        ci: "4785123",
        given_names: "MARÍA ELENA",
        first_surname: "QUISPE",
        second_surname: "MAMANI",
        birth_date: "1988-03-14",
        email: "maria.quispe@example.com",
        phone: "70000001",
    },
    Citizen {
        sub: "5f0c2a8e-1b7d-4c3e-9a61-000000000002",
        ci: "3421987",
        given_names: "JUAN CARLOS",
        first_surname: "MAMANI",
        second_surname: "CONDORI",
        birth_date: "1979-11-02",
        email: "juan.mamani@example.com",
        phone: "70000002",
    },
    Citizen {
        sub: "5f0c2a8e-1b7d-4c3e-9a61-000000000003",
        ci: "6543210",
        given_names: "ANA LUCÍA",
        first_surname: "FERNÁNDEZ",
        second_surname: "ROJAS",
        birth_date: "1995-07-21",
        email: "ana.fernandez@example.com",
        phone: "60000003",
    },
    Citizen {
        sub: "5f0c2a8e-1b7d-4c3e-9a61-000000000004",
        ci: "5123678",
        given_names: "LUIS ALBERTO",
        first_surname: "CHOQUE",
        second_surname: "APAZA",
        birth_date: "1969-01-30",
        email: "luis.choque@example.com",
        phone: "60000004",
    },
    Citizen {
        sub: "5f0c2a8e-1b7d-4c3e-9a61-000000000005",
        ci: "8765432",
        given_names: "ROSA",
        first_surname: "ÑUFLO",
        second_surname: "",
        birth_date: "2001-12-05",
        email: "rosa.nuflo@example.com",
        phone: "70000005",
    },
];

/// The synthetic citizen with this `sub`.
pub fn find(sub: &str) -> Option<&'static Citizen> {
    CITIZENS.iter().find(|citizen| citizen.sub == sub)
}

impl Citizen {
    /// Given names and surnames, separated by single spaces.
    pub fn full_name(&self) -> String {
        [self.given_names, self.first_surname, self.second_surname]
            .iter()
            .filter(|part| !part.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The citizen as Ciudadanía Digital's userinfo answers: `sub` and `profile` always,
    /// `fecha_nacimiento`, `email` and `celular` only when `granted` holds their scopes.
    pub fn userinfo(&self, granted: &[String]) -> Value {
        let has = |scope: &str| granted.iter().any(|s| s == scope);
        let mut info = json!({
            "sub": self.sub,
            "profile": {
                "documento_identidad": {
                    "numero_documento": self.ci,
                    "tipo_documento": "CI",
                },
                "nombre": {
                    "nombres": self.given_names,
                    "primer_apellido": self.first_surname,
                    "segundo_apellido": self.second_surname,
                },
            },
        });
        if let Some(object) = info.as_object_mut() {
            if has("fecha_nacimiento") {
                object.insert("fecha_nacimiento".into(), json!(self.birth_date));
            }
            if has("email") {
                object.insert("email".into(), json!(self.email));
            }
            if has("celular") {
                object.insert("celular".into(), json!(self.phone));
            }
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subs_and_cis_are_unique() {
        for (i, a) in CITIZENS.iter().enumerate() {
            for b in &CITIZENS[i + 1..] {
                assert_ne!(a.sub, b.sub);
                assert_ne!(a.ci, b.ci);
            }
        }
    }

    #[test]
    fn full_names_skip_a_missing_surname() {
        assert_eq!(CITIZENS[0].full_name(), "MARÍA ELENA QUISPE MAMANI");
        assert_eq!(CITIZENS[4].full_name(), "ROSA ÑUFLO");
    }
}
