//! The routes of the SEFE service, matched on the path after the service prefix.
//!
//! The client's path is `/{entidad}/v{n}/...` or, through the legacy test alias,
//! `/fake/{entidad}/v{n}/...`. Routes are matched on what follows the first `v<digits>`
//! segment, ignoring the query and empty segments:
//!
//! | method | rest of the path | route |
//! | --- | --- | --- |
//! | `POST` | `/facturas` | [`Route::Emit`] |
//! | `GET` | `/facturas/{cuf}` | [`Route::Query`] |
//! | `POST` | `/facturas/{cuf}/anulacion` | [`Route::Annul`] |

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Emit an invoice (`POST /facturas`).
    Emit,
    /// Read an invoice's state (`GET /facturas/{cuf}`).
    Query {
        /// The CUF as written in the path (not yet checked).
        cuf: String,
    },
    /// Annul an invoice (`POST /facturas/{cuf}/anulacion`).
    Annul {
        /// The CUF as written in the path (not yet checked).
        cuf: String,
    },
    /// A known path with another method; `allow` is the method it takes.
    WrongMethod {
        /// The value of the `allow` header.
        allow: &'static str,
    },
    /// Anything else.
    Unknown,
}

/// A parsed request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    /// The service prefix as the client wrote it, up to the version segment
    /// (`/sefe/v1` or `/fake/sefe/v1`), empty if the path has no version segment.
    pub prefix: String,
    /// The route.
    pub route: Route,
}

fn is_version(segment: &str) -> bool {
    segment.len() > 1
        && segment.starts_with('v')
        && segment[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Matches `method` and `path` (path and query as the client sent them).
pub fn parse(method: &str, path: &str) -> RequestPath {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(version) = segments.iter().position(|segment| is_version(segment)) else {
        return RequestPath {
            prefix: String::new(),
            route: Route::Unknown,
        };
    };
    let prefix = format!("/{}", segments[..=version].join("/"));
    let route = match (method, &segments[version + 1..]) {
        ("POST", ["facturas"]) => Route::Emit,
        (_, ["facturas"]) => Route::WrongMethod { allow: "POST" },
        ("GET", ["facturas", cuf]) => Route::Query {
            cuf: (*cuf).to_string(),
        },
        (_, ["facturas", _]) => Route::WrongMethod { allow: "GET" },
        ("POST", ["facturas", cuf, "anulacion"]) => Route::Annul {
            cuf: (*cuf).to_string(),
        },
        (_, ["facturas", _, "anulacion"]) => Route::WrongMethod { allow: "POST" },
        _ => Route::Unknown,
    };
    RequestPath { prefix, route }
}

/// Whether `cuf` has the form of a CUF: 16 to 100 uppercase hexadecimal digits (the SIN's
/// codes are hexadecimal; the test environment's are 48 digits long).
pub fn is_cuf(cuf: &str) -> bool {
    (16..=100).contains(&cuf.len())
        && cuf
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUF: &str = "0123456789ABCDEF0123";

    #[test]
    fn routes_match_after_the_version_segment() {
        for prefix in ["/sefe/v1", "/fake/sefe/v1", "/otra/entidad/v12"] {
            let emit = parse("POST", &format!("{prefix}/facturas"));
            assert_eq!(emit.route, Route::Emit);
            assert_eq!(emit.prefix, prefix);
            assert_eq!(
                parse("GET", &format!("{prefix}/facturas/{CUF}?x=1")).route,
                Route::Query { cuf: CUF.into() }
            );
            assert_eq!(
                parse("POST", &format!("{prefix}/facturas/{CUF}/anulacion")).route,
                Route::Annul { cuf: CUF.into() }
            );
        }
    }

    #[test]
    fn queries_trailing_and_double_slashes_are_ignored() {
        assert_eq!(parse("POST", "/sefe/v1/facturas/?a=b").route, Route::Emit);
        assert_eq!(parse("POST", "/sefe/v1//facturas").route, Route::Emit);
        assert_eq!(parse("POST", "/sefe/v1/facturas#x").route, Route::Emit);
    }

    #[test]
    fn other_methods_on_known_paths_say_which_is_allowed() {
        assert_eq!(
            parse("GET", "/sefe/v1/facturas").route,
            Route::WrongMethod { allow: "POST" }
        );
        assert_eq!(
            parse("DELETE", &format!("/sefe/v1/facturas/{CUF}")).route,
            Route::WrongMethod { allow: "GET" }
        );
        assert_eq!(
            parse("GET", &format!("/sefe/v1/facturas/{CUF}/anulacion")).route,
            Route::WrongMethod { allow: "POST" }
        );
    }

    #[test]
    fn other_paths_are_unknown() {
        for path in [
            "/",
            "/sefe",
            "/sefe/v1",
            "/sefe/v1/",
            "/sefe/v1/factura",
            "/sefe/v1/Facturas",
            "/sefe/v1/facturas/X/anulacion/extra",
            "/sefe/vx/facturas",
            "/sefe/v/facturas",
            "",
        ] {
            assert_eq!(parse("POST", path).route, Route::Unknown, "{path}");
        }
        assert_eq!(parse("POST", "/sefe/facturas").prefix, "");
    }

    #[test]
    fn cuf_form() {
        assert!(is_cuf(CUF));
        assert!(is_cuf(&"A".repeat(100)));
        assert!(!is_cuf(&"A".repeat(101)));
        assert!(!is_cuf("0123456789ABCDE"));
        assert!(!is_cuf("0123456789abcdef0123"));
        assert!(!is_cuf("0123456789ABCDEG0123"));
        assert!(!is_cuf("0123456789ABCDEF%20123"));
    }
}
