//! Path normalisation and route parsing, done before anything else looks at
//! the path.
//!
//! Rules, chosen so that what the gateway authorises is exactly what the
//! upstream receives:
//! - each segment is percent-decoded once; a decoded `/`, `\`, NUL or other
//!   control character is refused (an encoded slash must never become a
//!   separator further down the chain);
//! - empty segments (`//`) and `.` segments are dropped, `..` removes the
//!   segment before it;
//! - a `..` that climbs into or above the service prefix
//!   (`/{entidad}/v{n}/`, or `/fake/{entidad}/v{n}/`) is refused, so a
//!   request can never start under one service and end under another;
//! - the rest of the path is re-encoded canonically before it is sent
//!   upstream, and a trailing slash is kept.

use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, CONTROLS};

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Percent-encoding is broken, or decodes to a separator or control character.
    #[error("the path has an invalid or forbidden percent-encoding (encoded `/`, `\\` or control characters are refused)")]
    BadEncoding,
    /// Dot segments climb out of the service the path starts in.
    #[error("the path uses `..` to leave the service it names")]
    Traversal,
    /// The path is not absolute.
    #[error("the path must start with `/`")]
    NotAbsolute,
}

/// A path that names a catalog service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePath {
    /// Whether the `/fake/` alias of the test environment was used.
    pub fake: bool,
    /// The publishing entity's code.
    pub entity: String,
    /// The major version.
    pub version: u32,
    /// The rest of the path, canonically encoded, starting with `/` (or `/`
    /// alone when nothing follows the version).
    pub rest: String,
}

/// What a normalised path turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A catalog route.
    Route(RoutePath),
    /// A path under the gateway's own reserved prefix `/_chasqui/`.
    Internal(String),
    /// A valid path that names no service.
    NoRoute,
}

/// Characters escaped when re-encoding a path segment: everything except
/// RFC 3986 `pchar` (unreserved, sub-delims, `:` and `@`).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Normalises `raw` (the path, without the query) and parses it.
pub fn parse(raw: &[u8]) -> Result<Parsed, PathError> {
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let trailing_slash = raw.len() > 1 && raw.ends_with(b"/");
    let mut stack: Vec<String> = Vec::with_capacity(8);
    // The shortest the stack became after a `..`; compared with the
    // service prefix once the final path is known.
    let mut lowest_after_pop = usize::MAX;
    for raw_segment in raw[1..].split(|b| *b == b'/') {
        if raw_segment.contains(&b'\\') {
            return Err(PathError::BadEncoding);
        }
        let decoded: Vec<u8> = percent_decode(raw_segment).collect();
        if raw_segment.contains(&b'%') && !valid_escapes(raw_segment) {
            return Err(PathError::BadEncoding);
        }
        if decoded
            .iter()
            .any(|&b| b == b'/' || b == b'\\' || b < 0x20 || b == 0x7f)
        {
            return Err(PathError::BadEncoding);
        }
        let segment = String::from_utf8(decoded).map_err(|_| PathError::BadEncoding)?;
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Err(PathError::Traversal);
                }
                lowest_after_pop = lowest_after_pop.min(stack.len());
            }
            _ => stack.push(segment),
        }
    }

    if stack.first().map(String::as_str) == Some("_chasqui") {
        return Ok(Parsed::Internal(stack[1..].join("/")));
    }
    let fake = stack.first().map(String::as_str) == Some("fake");
    let prefix_len = if fake { 3 } else { 2 };
    let offset = usize::from(fake);
    let (Some(entity), Some(version)) = (stack.get(offset), stack.get(offset + 1)) else {
        if lowest_after_pop != usize::MAX {
            return Err(PathError::Traversal);
        }
        return Ok(Parsed::NoRoute);
    };
    let Some(version) = version.strip_prefix('v').and_then(|v| {
        (!v.is_empty() && v.len() <= 6 && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse().ok())
            .flatten()
    }) else {
        if lowest_after_pop != usize::MAX {
            return Err(PathError::Traversal);
        }
        return Ok(Parsed::NoRoute);
    };
    if lowest_after_pop < prefix_len {
        return Err(PathError::Traversal);
    }
    // Entity codes are lowercase letters, digits, `-` and `_`: anything else
    // cannot name a service.
    if !entity
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Ok(Parsed::NoRoute);
    }
    let mut rest = String::with_capacity(raw.len());
    for segment in &stack[prefix_len..] {
        rest.push('/');
        rest.extend(utf8_percent_encode(segment, SEGMENT));
    }
    if rest.is_empty() || (trailing_slash && stack.len() > prefix_len) {
        rest.push('/');
    }
    Ok(Parsed::Route(RoutePath {
        fake,
        entity: entity.clone(),
        version,
        rest,
    }))
}

fn valid_escapes(segment: &[u8]) -> bool {
    let mut i = 0;
    while i < segment.len() {
        if segment[i] == b'%' {
            let ok = segment.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && segment.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(p: &str) -> RoutePath {
        match parse(p.as_bytes()) {
            Ok(Parsed::Route(r)) => r,
            other => panic!("{p}: expected a route, got {other:?}"),
        }
    }

    #[test]
    fn plain_routes() {
        let r = route("/segip/v2/personas/1234567");
        assert_eq!(
            (r.fake, r.entity.as_str(), r.version, r.rest.as_str()),
            (false, "segip", 2, "/personas/1234567")
        );
        let r = route("/fake/segip/v2/personas");
        assert!(r.fake);
        assert_eq!(r.rest, "/personas");
        assert_eq!(route("/segip/v2").rest, "/");
        assert_eq!(route("/segip/v2/").rest, "/");
        assert_eq!(route("/segip/v2/personas/").rest, "/personas/");
    }

    #[test]
    fn double_slashes_and_dots_inside_the_service_are_resolved() {
        assert_eq!(route("//segip//v2///personas//1").rest, "/personas/1");
        assert_eq!(route("/segip/v2/a/./b/../c").rest, "/a/c");
        assert_eq!(route("/segip/v2/a/%2e%2e/c").rest, "/c");
    }

    #[test]
    fn climbing_out_of_the_service_is_refused() {
        for p in [
            "/a/v1/../../b/v1/x",
            "/a/v1/%2e%2e/%2e%2e/b/v1/x",
            "/a/v1/%2E%2E/%2E%2E/b/v1/x",
            "/a/v1/x/../../../b/v1/x",
            "/fake/a/v1/../../../b/v1/x",
            "/a/v1/..",
            "/..",
            "/a/../b/v1/x",
        ] {
            assert_eq!(parse(p.as_bytes()), Err(PathError::Traversal), "{p}");
        }
    }

    #[test]
    fn encoded_separators_and_controls_are_refused() {
        for p in [
            "/a/v1/x%2fy",
            "/a%2Fv1/x",
            "/a/v1/x%5cy",
            "/a/v1/x\\y",
            "/a/v1/%00",
            "/a/v1/%zz",
            "/a/v1/%4",
        ] {
            assert_eq!(parse(p.as_bytes()), Err(PathError::BadEncoding), "{p}");
        }
    }

    #[test]
    fn segments_are_reencoded_canonically() {
        assert_eq!(route("/a/v1/%41b%20c").rest, "/Ab%20c");
        assert_eq!(route("/a/v1/jos%C3%A9").rest, "/jos%C3%A9");
        assert_eq!(route("/a/v1/x:y@z").rest, "/x:y@z");
    }

    #[test]
    fn non_routes() {
        assert_eq!(parse(b"/"), Ok(Parsed::NoRoute));
        assert_eq!(parse(b"/segip"), Ok(Parsed::NoRoute));
        assert_eq!(parse(b"/segip/version2/x"), Ok(Parsed::NoRoute));
        assert_eq!(
            parse(b"/_chasqui/health/ready"),
            Ok(Parsed::Internal("health/ready".into()))
        );
        assert_eq!(parse(b"segip/v1"), Err(PathError::NotAbsolute));
    }
}

#[cfg(test)]
mod robustness {
    use super::*;
    use rand::{Rng, RngCore};

    /// Random bytes, weighted towards the characters that matter to the
    /// normaliser, never make it panic, and whatever it accepts is canonical:
    /// parsing the rebuilt path gives the same route.
    #[test]
    fn random_paths_never_panic_and_accepted_ones_are_stable() {
        let alphabet = b"/%.2eEfF5cC\\ab01v9?#\0 ";
        let mut rng = rand::rng();
        for _ in 0..50_000 {
            let len = rng.random_range(0..40);
            let mut raw = vec![b'/'];
            for _ in 0..len {
                if rng.random_bool(0.9) {
                    raw.push(alphabet[rng.random_range(0..alphabet.len())]);
                } else {
                    raw.push((rng.next_u32() & 0xff) as u8);
                }
            }
            if let Ok(Parsed::Route(r)) = parse(&raw) {
                let prefix = if r.fake { "/fake" } else { "" };
                let rebuilt = format!("{prefix}/{}/v{}{}", r.entity, r.version, r.rest);
                assert_eq!(
                    parse(rebuilt.as_bytes()),
                    Ok(Parsed::Route(r.clone())),
                    "{raw:?}"
                );
            }
        }
    }
}
