//! Domain types shared by the store, the importer and the data plane.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The two environments of every service: `pruebas` (test) and `produccion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// The test environment, reached with test tokens and through the `/fake/` alias.
    Pruebas,
    /// The production environment, enabled after the adhesion agreement.
    Produccion,
}

impl Environment {
    /// Both environments, test first.
    pub const ALL: [Environment; 2] = [Environment::Pruebas, Environment::Produccion];

    /// The name stored in the database and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Pruebas => "pruebas",
            Environment::Produccion => "produccion",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that names no environment.
#[derive(Debug, thiserror::Error)]
#[error("unknown environment `{0}` (expected `pruebas` or `produccion`)")]
pub struct UnknownEnvironment(pub String);

impl FromStr for Environment {
    type Err = UnknownEnvironment;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pruebas" | "test" => Ok(Environment::Pruebas),
            "produccion" | "producción" | "production" | "prod" => Ok(Environment::Produccion),
            _ => Err(UnknownEnvironment(s.to_string())),
        }
    }
}

/// The 13 catalog categories of AGETIC's interoperability catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Category(&'static str);

impl Category {
    /// Every category, with its canonical (Spanish) name.
    pub const ALL: [&'static str; 13] = [
        "Identificación",
        "Migración",
        "Impuestos",
        "Seguridad Social",
        "Salud",
        "Educación",
        "Vivienda",
        "Transporte",
        "Justicia",
        "Empresas",
        "Medio Ambiente",
        "Seguridad",
        "Comercio Exterior",
    ];

    /// The canonical name, as stored.
    pub fn name(self) -> &'static str {
        self.0
    }

    /// Finds a category by its name, ignoring case, accents and the
    /// difference between spaces, `-` and `_`.
    pub fn parse(input: &str) -> Option<Category> {
        let wanted = fold(input);
        Self::ALL
            .iter()
            .find(|name| fold(name) == wanted)
            .map(|name| Category(name))
    }
}

fn fold(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| match c {
            'á' | 'Á' => 'a',
            'é' | 'É' => 'e',
            'í' | 'Í' => 'i',
            'ó' | 'Ó' => 'o',
            'ú' | 'Ú' | 'ü' | 'Ü' => 'u',
            'ñ' | 'Ñ' => 'n',
            '-' | '_' => ' ',
            other => other.to_ascii_lowercase(),
        })
        .collect()
}

/// What the data plane needs to know about a token, loaded from the store
/// when the token is presented. The token itself is never part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Row id of the token.
    pub token_id: i64,
    /// The consumer system that holds the token.
    pub consumer_id: i64,
    /// Code of the consumer system (e.g. `sistema-tramites`).
    pub consumer_code: String,
    /// Code of the entity that owns the consumer system (e.g. `sin`).
    pub entity_code: String,
    /// The environment the token is valid for.
    pub environment: Environment,
    /// Expiry in Unix seconds, if any.
    pub expires_at: Option<i64>,
    /// Revocation time in Unix seconds, if revoked.
    pub revoked_at: Option<i64>,
    /// The first characters of the token, safe to log.
    pub display_prefix: String,
}

/// Current time in Unix seconds.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_parse_loosely_and_store_canonically() {
        assert_eq!(
            Category::parse("identificacion").unwrap().name(),
            "Identificación"
        );
        assert_eq!(
            Category::parse("SEGURIDAD_SOCIAL").unwrap().name(),
            "Seguridad Social"
        );
        assert_eq!(Category::parse("Seguridad").unwrap().name(), "Seguridad");
        assert!(Category::parse("Deportes").is_none());
    }

    #[test]
    fn environments_parse() {
        assert_eq!(
            "pruebas".parse::<Environment>().unwrap(),
            Environment::Pruebas
        );
        assert_eq!(
            "Producción".parse::<Environment>().unwrap(),
            Environment::Produccion
        );
        assert!("staging".parse::<Environment>().is_err());
    }
}
