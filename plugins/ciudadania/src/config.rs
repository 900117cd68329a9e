//! The plugin's configuration as policy gives it ([`Config`], mirroring
//! `config.schema.json`) and the checked form the phases use ([`Settings`]).

use crate::call::Environment;
use crate::headers;
use crate::keys::{self, Key};
use chasqui_plugin_sdk::host::crypto::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The configuration, deserialized from the policy's JSON. Every field has a default, so
/// `{}` is a complete configuration; the defaults are the schema's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The catalog service whose routes the plugin serves (default `ciudadania/v1`); on
    /// every other service it only authenticates.
    #[serde(default = "default_service")]
    pub service: String,
    /// Where the token travels and how it is checked.
    #[serde(default)]
    pub token: TokenConfig,
    /// The trusted issuer of each environment.
    #[serde(default)]
    pub issuers: IssuersConfig,
    /// Extra scopes per service, path prefix and method.
    #[serde(default)]
    pub scope_rules: Vec<ScopeRuleConfig>,
    /// Document approval limits and window.
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// Authorization request window.
    #[serde(default)]
    pub authorizations: AuthorizationsConfig,
    /// Largest JSON body buffered, in bytes (default 1 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// How long records stay in the key-value store, in seconds (default 7 days).
    #[serde(default = "default_retention_seconds")]
    pub retention_seconds: u64,
}

/// The `token` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The header carrying the token (default `x-ciudadania-token`).
    #[serde(default = "default_token_header")]
    pub header: String,
    /// Whether the raw token goes on upstream (default no).
    #[serde(default)]
    pub forward: bool,
    /// Accepted JWS algorithms (default RS256 and ES256).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<AlgorithmName>,
    /// Clock leeway for exp, nbf and iat, in seconds (default 60).
    #[serde(default = "default_leeway_seconds")]
    pub clock_leeway_seconds: u64,
    /// Oldest accepted iat, in seconds before now (default: no limit).
    #[serde(default)]
    pub max_age_seconds: Option<u64>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            header: default_token_header(),
            forward: false,
            algorithms: default_algorithms(),
            clock_leeway_seconds: default_leeway_seconds(),
            max_age_seconds: None,
        }
    }
}

/// A JWS algorithm name as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AlgorithmName {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    #[serde(rename = "RS256")]
    Rs256,
    /// ECDSA P-256 with SHA-256.
    #[serde(rename = "ES256")]
    Es256,
}

impl AlgorithmName {
    /// The host's algorithm.
    pub fn algorithm(self) -> Algorithm {
        match self {
            AlgorithmName::Rs256 => Algorithm::Rs256,
            AlgorithmName::Es256 => Algorithm::Es256,
        }
    }
}

/// The `issuers` section: one optional issuer per environment.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuersConfig {
    /// The test environment's issuer (test keys).
    #[serde(default)]
    pub pruebas: Option<IssuerConfig>,
    /// The production issuer.
    #[serde(default)]
    pub produccion: Option<IssuerConfig>,
}

/// One trusted issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` of valid tokens.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// The issuer's public keys.
    pub jwks: JwksConfig,
}

/// A JWK Set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// The keys, as JSON objects (RFC 7517).
    pub keys: Vec<Map<String, Value>>,
}

/// One scope rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeRuleConfig {
    /// Only for this service (default: any).
    #[serde(default)]
    pub service: Option<String>,
    /// The path prefix after the service prefix, matched by whole segments.
    pub path_prefix: String,
    /// Only for these methods (default: any).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// The scopes required.
    pub scopes: Vec<OptionalScope>,
}

/// The optional scopes of Ciudadanía Digital (`openid` and `profile` are always required).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptionalScope {
    /// The citizen's birth date.
    FechaNacimiento,
    /// The citizen's e-mail address.
    Email,
    /// The citizen's mobile phone number.
    Celular,
    /// Refresh tokens.
    OfflineAccess,
}

impl OptionalScope {
    /// The scope as tokens carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            OptionalScope::FechaNacimiento => "fecha_nacimiento",
            OptionalScope::Email => "email",
            OptionalScope::Celular => "celular",
            OptionalScope::OfflineAccess => "offline_access",
        }
    }
}

/// The `approvals` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// The approval window in seconds (default 600).
    #[serde(default = "default_approval_window_seconds")]
    pub window_seconds: u64,
    /// Most documents per request (default 10).
    #[serde(default = "default_max_documents")]
    pub max_documents: u64,
    /// Largest decoded document in bytes (default 768 KiB).
    #[serde(default = "default_max_document_bytes")]
    pub max_document_bytes: u64,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            window_seconds: default_approval_window_seconds(),
            max_documents: default_max_documents(),
            max_document_bytes: default_max_document_bytes(),
        }
    }
}

/// The `authorizations` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationsConfig {
    /// How long the citizen has to answer, in seconds (default 1 day).
    #[serde(default = "default_authorization_window_seconds")]
    pub window_seconds: u64,
}

impl Default for AuthorizationsConfig {
    fn default() -> Self {
        AuthorizationsConfig {
            window_seconds: default_authorization_window_seconds(),
        }
    }
}

fn default_service() -> String {
    "ciudadania/v1".into()
}
fn default_token_header() -> String {
    headers::TOKEN.into()
}
fn default_algorithms() -> Vec<AlgorithmName> {
    vec![AlgorithmName::Rs256, AlgorithmName::Es256]
}
fn default_leeway_seconds() -> u64 {
    60
}
fn default_approval_window_seconds() -> u64 {
    600
}
fn default_max_documents() -> u64 {
    10
}
fn default_max_document_bytes() -> u64 {
    768 << 10
}
fn default_authorization_window_seconds() -> u64 {
    86_400
}
fn default_max_body_bytes() -> u64 {
    1 << 20
}
fn default_retention_seconds() -> u64 {
    7 * 86_400
}

/// A trusted issuer with its usable keys.
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// The exact `iss`.
    pub issuer: String,
    /// Accepted `aud` values.
    pub audiences: Vec<String>,
    /// Keys usable with the configured algorithms.
    pub keys: Vec<Key>,
}

/// A checked scope rule.
#[derive(Debug, Clone)]
pub struct ScopeRule {
    service: Option<String>,
    path_prefix: String,
    methods: Option<Vec<String>>,
    scopes: Vec<OptionalScope>,
}

impl ScopeRule {
    /// Whether the rule applies to `method` on `path` (after the service prefix) of `service`.
    fn applies(&self, service: &str, method: &str, path: &str) -> bool {
        self.service.as_deref().is_none_or(|s| s == service)
            && self
                .methods
                .as_ref()
                .is_none_or(|methods| methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && path_has_prefix(path, &self.path_prefix)
    }
}

/// Whether `path` starts with `prefix` at a segment boundary: `/personas` matches
/// `/personas` and `/personas/1`, not `/personasx`.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The configuration in the form the phases use: checked, lowercased, in milliseconds.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The plugin's own catalog service.
    pub service: String,
    /// The token header, lowercase.
    pub token_header: String,
    /// Whether the token header goes upstream.
    pub forward_token: bool,
    /// Accepted algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Clock leeway.
    pub leeway_ms: u64,
    /// Oldest accepted iat, if limited.
    pub max_age_ms: Option<u64>,
    /// The test environment's issuer.
    pub pruebas: Option<TrustedIssuer>,
    /// The production issuer.
    pub produccion: Option<TrustedIssuer>,
    /// Scope rules.
    pub rules: Vec<ScopeRule>,
    /// The approval window.
    pub approval_window_ms: u64,
    /// Most documents per request.
    pub max_documents: usize,
    /// Largest decoded document.
    pub max_document_bytes: usize,
    /// The authorization window.
    pub authorization_window_ms: u64,
    /// Largest buffered body.
    pub max_body_bytes: usize,
    /// How long records are kept.
    pub retention_ms: u64,
}

impl Settings {
    /// Checks a configuration beyond its schema (windows against retention, header
    /// collisions, keys the host can use) and converts it.
    pub fn from_config(config: Config) -> Result<Settings, String> {
        let token_header = config.token.header.to_ascii_lowercase();
        if token_header.is_empty() {
            return Err("`token.header` must not be empty".into());
        }
        if headers::is_set_by_plugin(&token_header) {
            return Err(format!(
                "`token.header` {token_header} is a header the plugin sets itself"
            ));
        }
        let algorithms: Vec<Algorithm> = config
            .token
            .algorithms
            .iter()
            .map(|name| name.algorithm())
            .collect();
        if algorithms.is_empty() {
            return Err("`token.algorithms` must name at least one algorithm".into());
        }
        let trusted = |environment: Environment, issuer: Option<IssuerConfig>| {
            issuer
                .map(|issuer| trusted_issuer(environment, issuer, &algorithms))
                .transpose()
        };
        let pruebas = trusted(Environment::Pruebas, config.issuers.pruebas)?;
        let produccion = trusted(Environment::Produccion, config.issuers.produccion)?;

        let retention_ms = seconds_to_ms(config.retention_seconds);
        let approval_window_ms = seconds_to_ms(config.approvals.window_seconds);
        let authorization_window_ms = seconds_to_ms(config.authorizations.window_seconds);
        if retention_ms < approval_window_ms || retention_ms < authorization_window_ms {
            return Err(
                "`retention_seconds` must be at least `approvals.window_seconds` and `authorizations.window_seconds`"
                    .into(),
            );
        }
        let rules = config
            .scope_rules
            .into_iter()
            .map(|rule| ScopeRule {
                service: rule.service,
                path_prefix: rule.path_prefix,
                methods: rule.methods,
                scopes: rule.scopes,
            })
            .collect();
        Ok(Settings {
            service: config.service,
            token_header,
            forward_token: config.token.forward,
            algorithms,
            leeway_ms: seconds_to_ms(config.token.clock_leeway_seconds),
            max_age_ms: config.token.max_age_seconds.map(seconds_to_ms),
            pruebas,
            produccion,
            rules,
            approval_window_ms,
            max_documents: to_usize(config.approvals.max_documents),
            max_document_bytes: to_usize(config.approvals.max_document_bytes),
            authorization_window_ms,
            max_body_bytes: to_usize(config.max_body_bytes),
            retention_ms,
        })
    }

    /// The issuer trusted in `environment`, if one is configured.
    pub fn issuer(&self, environment: Environment) -> Option<&TrustedIssuer> {
        match environment {
            Environment::Pruebas => self.pruebas.as_ref(),
            Environment::Produccion => self.produccion.as_ref(),
        }
    }

    /// The scopes a request must carry: `openid`, `profile`, then those of every matching
    /// rule, without repeats.
    pub fn required_scopes(&self, service: &str, method: &str, path: &str) -> Vec<&'static str> {
        let mut scopes = vec!["openid", "profile"];
        for rule in self
            .rules
            .iter()
            .filter(|rule| rule.applies(service, method, path))
        {
            for scope in &rule.scopes {
                if !scopes.contains(&scope.as_str()) {
                    scopes.push(scope.as_str());
                }
            }
        }
        scopes
    }
}

fn trusted_issuer(
    environment: Environment,
    issuer: IssuerConfig,
    algorithms: &[Algorithm],
) -> Result<TrustedIssuer, String> {
    if issuer.audiences.is_empty() {
        return Err(format!(
            "`issuers.{}.audiences` must name at least one audience",
            environment.as_str()
        ));
    }
    let keys = keys::parse_jwks(&issuer.jwks.keys, algorithms)
        .map_err(|err| format!("`issuers.{}.jwks`: {err}", environment.as_str()))?;
    Ok(TrustedIssuer {
        issuer: issuer.issuer,
        audiences: issuer.audiences,
        keys,
    })
}

fn seconds_to_ms(seconds: u64) -> u64 {
    seconds.saturating_mul(1000)
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(path_has_prefix("/personas", "/personas"));
        assert!(path_has_prefix("/personas/1", "/personas"));
        assert!(path_has_prefix("/personas/1", "/personas/"));
        assert!(!path_has_prefix("/personasx", "/personas"));
        assert!(!path_has_prefix("/otra", "/personas"));
        assert!(path_has_prefix("/anything", "/"));
    }
}
