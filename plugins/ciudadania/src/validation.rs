//! Checks shared by the JSON bodies of the service's routes.

use crate::call::Call;
use crate::citizens;
use crate::problem::{self, Problem};
use serde::Deserialize;

/// Parses a JSON body into `T`; a body that is not the expected JSON is a 400 naming
/// what is wrong (serde's message: missing field, wrong type, position).
pub fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|err| problem::invalid_body(err.to_string()))
}

/// A citizen `sub` in a body: 1 to 255 bytes without control characters; in the test
/// environment it must name a synthetic citizen (422 otherwise).
pub fn citizen(call: &Call, sub: &str) -> Result<String, Problem> {
    let sub = sub.trim();
    if sub.is_empty() || sub.len() > 255 || sub.chars().any(char::is_control) {
        return Err(problem::invalid_body(
            "sub must be 1 to 255 bytes without control characters",
        ));
    }
    if call.is_test() && citizens::find(sub).is_none() {
        return Err(problem::unknown_citizen(sub));
    }
    Ok(sub.to_string())
}

/// A required text field of 1 to `max_chars` characters; control characters other than
/// line breaks and tabs are refused.
pub fn text(field: &str, value: &str, max_chars: usize) -> Result<String, Problem> {
    let trimmed = value.trim();
    let count = trimmed.chars().count();
    let bad_control = trimmed
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'));
    if count == 0 || count > max_chars || bad_control {
        return Err(problem::invalid_body(format!(
            "{field} must be 1 to {max_chars} characters without control characters"
        )));
    }
    Ok(trimmed.to_string())
}

/// An optional text field, checked like [`text`] when present.
pub fn optional_text(
    field: &str,
    value: Option<&str>,
    max_chars: usize,
) -> Result<Option<String>, Problem> {
    value.map(|v| text(field, v, max_chars)).transpose()
}

/// A link in an authorization request: an absolute `https://` URL of at most 2048 bytes
/// without spaces or control characters.
pub fn link(index: usize, url: &str) -> Result<String, Problem> {
    let ok = url.len() <= 2048
        && url
            .strip_prefix("https://")
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        && url.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(url.to_string())
    } else {
        Err(problem::invalid_body(format!(
            "enlaces[{index}] must be an https:// URL of at most 2048 bytes without spaces"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_bounded_and_clean() {
        assert_eq!(text("asunto", "  Hola  ", 10).unwrap(), "Hola");
        assert!(text("asunto", "", 10).is_err());
        assert!(text("asunto", "ñ".repeat(11).as_str(), 10).is_err());
        assert!(text("asunto", "ñ".repeat(10).as_str(), 10).is_ok());
        assert!(text("asunto", "a\u{0}b", 10).is_err());
        assert!(text("mensaje", "línea\nlínea", 20).is_ok());
    }

    #[test]
    fn links_are_https_only() {
        assert!(link(0, "https://tramites.example.gob.bo/t/1").is_ok());
        assert!(link(0, "http://tramites.example.gob.bo").is_err());
        assert!(link(0, "https://").is_err());
        assert!(link(0, "https://a b").is_err());
        assert!(link(0, "javascript:alert(1)").is_err());
    }
}
