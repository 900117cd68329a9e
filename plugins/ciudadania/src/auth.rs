//! Authentication of the citizen: the token header, its validation against the
//! environment's issuer, the scopes the route requires, and the refusals.
//!
//! Every refusal is a problem document with `WWW-Authenticate: Bearer` naming the
//! reason (RFC 6750): 401 `invalid_request` for a missing or repeated token, 401
//! `invalid_token` for one that does not verify, 403 `insufficient_scope` for missing
//! scopes.

use crate::call::Call;
use crate::config::Settings;
use crate::identity::Identity;
use crate::problem::{self, Problem};
use crate::token::{self, TokenError, Validation};
use chasqui_plugin_sdk::{host, RequestHead};

/// Whether a route needs the citizen's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Requirement {
    /// The route acts for the citizen: no token, no request.
    Required,
    /// The route acts for the entity: a token is not needed, but one that is sent must be
    /// valid (an invalid token is never silently ignored).
    Optional,
}

/// Authenticates a request that must carry a token. `rest` is the path after the
/// service prefix, for scope rules.
pub fn required(
    settings: &Settings,
    call: &Call,
    request: &RequestHead,
    rest: &str,
) -> Result<Identity, Problem> {
    authenticate(settings, call, request, rest, Requirement::Required)?
        .ok_or_else(|| refuse(settings, TokenError::Missing))
}

/// Authenticates a request whose token is optional: `Ok(None)` when there is none.
pub fn optional(
    settings: &Settings,
    call: &Call,
    request: &RequestHead,
    rest: &str,
) -> Result<Option<Identity>, Problem> {
    authenticate(settings, call, request, rest, Requirement::Optional)
}

/// Authenticates the request: `Ok(None)` only for an optional token that is absent.
fn authenticate(
    settings: &Settings,
    call: &Call,
    request: &RequestHead,
    rest: &str,
    requirement: Requirement,
) -> Result<Option<Identity>, Problem> {
    let mut values = request.header_values(&settings.token_header);
    let raw = match (values.next(), values.next()) {
        (None, _) if requirement == Requirement::Optional => return Ok(None),
        (None, _) => return Err(refuse(settings, TokenError::Missing)),
        (Some(_), Some(_)) => return Err(refuse(settings, TokenError::Repeated)),
        (Some(value), None) => strip_bearer(value),
    };
    let Some(issuer) = settings.issuer(call.environment) else {
        count("not_configured");
        return Err(problem::authentication_not_configured(
            call.environment.as_str(),
        ));
    };
    let rules = Validation {
        issuer,
        algorithms: &settings.algorithms,
        leeway_ms: settings.leeway_ms,
        max_age_ms: settings.max_age_ms,
        now_ms: call.now_ms,
    };
    let token = token::validate(raw, &rules).map_err(|err| refuse(settings, err))?;
    let required = settings.required_scopes(&call.context.service, &request.method, rest);
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|scope| !token.scopes.iter().any(|granted| granted == scope))
        .collect();
    if !missing.is_empty() {
        count("insufficient_scope");
        host::log::info(&format!(
            "ciudadania: {} {rest}: token lacks scopes {}",
            request.method,
            missing.join(" ")
        ));
        return Err(insufficient_scope(&required, &missing));
    }
    count("valid");
    Ok(Some(Identity::from_token(&token, call.environment)))
}

/// The token without an optional `Bearer ` scheme (for deployments that carry it in an
/// `authorization`-style header).
fn strip_bearer(value: &str) -> &str {
    let value = value.trim();
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => value[7..].trim_start(),
        _ => value,
    }
}

fn count(result: &str) {
    host::metrics::counter_add("tokens_total", 1, &[("result", result)]);
}

/// The 401 for a token error, with its `WWW-Authenticate` field.
fn refuse(settings: &Settings, error: TokenError) -> Problem {
    count(error.reason());
    host::log::info(&format!("ciudadania: token refused: {}", error.reason()));
    let header = settings.token_header.as_str();
    let (error_code, slug, title, description, detail): (_, _, _, &str, String) = match &error {
        TokenError::Missing => (
            "invalid_request",
            "token-missing",
            "Token de Ciudadanía Digital requerido / Ciudadanía Digital token required",
            "token missing",
            format!("send the citizen's access token in the {header} header"),
        ),
        TokenError::Repeated => (
            "invalid_request",
            "token-malformed",
            "Token mal formado / Malformed token",
            "token header repeated",
            format!("the {header} header appears more than once"),
        ),
        TokenError::Malformed(why) => (
            "invalid_token",
            "token-malformed",
            "Token mal formado / Malformed token",
            "malformed token",
            format!("the token in {header} is not a valid JWT: {why}"),
        ),
        TokenError::Algorithm(alg) => (
            "invalid_token",
            "token-algorithm",
            "Algoritmo de firma no aceptado / Signature algorithm not accepted",
            "signature algorithm not accepted",
            format!(
                "tokens signed with {} are refused; accepted: {}",
                problem::printable(alg),
                settings
                    .algorithms
                    .iter()
                    .map(|a| crate::keys::name(*a))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        TokenError::KeyUnknown => (
            "invalid_token",
            "token-key-unknown",
            "Clave desconocida / Unknown signing key",
            "unknown signing key",
            "no trusted key of the issuer matches the token's kid and algorithm".into(),
        ),
        TokenError::Signature => (
            "invalid_token",
            "token-signature",
            "Firma inválida / Invalid signature",
            "invalid signature",
            "the token's signature does not verify with the issuer's keys".into(),
        ),
        TokenError::Expired => (
            "invalid_token",
            "token-expired",
            "Token expirado / Token expired",
            "token expired",
            "the token's exp has passed".into(),
        ),
        TokenError::NotYetValid => (
            "invalid_token",
            "token-not-yet-valid",
            "Token aún no válido / Token not yet valid",
            "token not yet valid",
            "the token's nbf is still ahead".into(),
        ),
        TokenError::IssuedInFuture => (
            "invalid_token",
            "token-issued-in-future",
            "Token emitido en el futuro / Token issued in the future",
            "token issued in the future",
            "the token's iat is ahead of the gateway's clock".into(),
        ),
        TokenError::TooOld => (
            "invalid_token",
            "token-too-old",
            "Token demasiado antiguo / Token too old",
            "token too old",
            "the token was issued longer ago than this service accepts".into(),
        ),
        TokenError::Issuer => (
            "invalid_token",
            "token-issuer",
            "Emisor no confiable / Untrusted issuer",
            "untrusted issuer",
            "the token's iss is not this environment's Ciudadanía Digital issuer".into(),
        ),
        TokenError::Audience => (
            "invalid_token",
            "token-audience",
            "Audiencia no aceptada / Audience not accepted",
            "audience not accepted",
            "the token's aud names none of the accepted audiences".into(),
        ),
        TokenError::Subject => (
            "invalid_token",
            "token-subject",
            "Sujeto inválido / Invalid subject",
            "invalid subject",
            "the token's sub is missing or not 1 to 255 printable bytes".into(),
        ),
    };
    Problem::new(401, slug, title, detail).with_header(
        "www-authenticate",
        format!(
            "Bearer realm=\"ciudadania\", error=\"{error_code}\", error_description=\"{description}\""
        ),
    )
}

/// The 403 for missing scopes; `scope` lists every scope the route needs (RFC 6750 §3).
fn insufficient_scope(required: &[&str], missing: &[&str]) -> Problem {
    let required = required.join(" ");
    Problem::new(
        403,
        "insufficient-scope",
        "Permisos insuficientes / Insufficient scope",
        format!(
            "the token lacks the scopes {}; this route needs {required}",
            missing.join(" ")
        ),
    )
    .with_header(
        "www-authenticate",
        format!(
            "Bearer realm=\"ciudadania\", error=\"insufficient_scope\", error_description=\"insufficient scope\", scope=\"{required}\""
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::strip_bearer;

    #[test]
    fn an_optional_bearer_scheme_is_removed() {
        assert_eq!(strip_bearer("eyJ.a.b"), "eyJ.a.b");
        assert_eq!(strip_bearer("Bearer eyJ.a.b"), "eyJ.a.b");
        assert_eq!(strip_bearer("bearer   eyJ.a.b "), "eyJ.a.b");
        assert_eq!(strip_bearer("Béarer x"), "Béarer x");
    }
}
