//! Which PPE route a request path names.
//!
//! The path arrives as the client sent it, with the service prefix and query:
//! `/ppe/v1/transaccion/deuda?x=1`, or through the legacy test alias
//! `/fake/ppe/v1/transaccion/deuda`. Routes are matched on what follows the first
//! `v<digits>` segment, without the query; a trailing slash is tolerated.

/// A PPE route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/transaccion/deuda`: register a debt to pay.
    CreateDebt,
    /// `/consulta/estado/{id}`: a payment's state.
    Status(String),
    /// `/pruebas/pagar/{id}`: simulate the payer paying (test environment only).
    TestPay(String),
    /// Anything else.
    Other,
}

impl Route {
    /// The HTTP method the route answers.
    pub fn method(&self) -> Option<&'static str> {
        match self {
            Route::CreateDebt | Route::TestPay(_) => Some("POST"),
            Route::Status(_) => Some("GET"),
            Route::Other => None,
        }
    }
}

/// A parsed request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The service prefix as the client wrote it, up to and including the version segment
    /// (`/ppe/v1`, `/fake/ppe/v1`); empty when the path has no version segment.
    pub prefix: String,
    /// The route.
    pub route: Route,
}

/// Parses a request path (with optional query).
pub fn parse(path_and_query: &str) -> Target {
    let path = path_and_query.split(['?', '#']).next().unwrap_or_default();
    let Some((prefix, rest)) = split_service_prefix(path) else {
        return Target {
            prefix: String::new(),
            route: Route::Other,
        };
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    let route = match segments.as_slice() {
        ["transaccion", "deuda"] => Route::CreateDebt,
        ["consulta", "estado", id] if !id.is_empty() => Route::Status((*id).to_string()),
        ["pruebas", "pagar", id] if !id.is_empty() => Route::TestPay((*id).to_string()),
        _ => Route::Other,
    };
    Target {
        prefix: prefix.to_string(),
        route,
    }
}

/// Splits `/a/b/v1/rest` into `("/a/b/v1", "/rest")` at the first `v<digits>` segment.
fn split_service_prefix(path: &str) -> Option<(&str, &str)> {
    let mut offset = 0;
    for segment in path.split('/') {
        let end = offset + segment.len();
        let is_version = segment.len() >= 2
            && segment.starts_with('v')
            && segment[1..].bytes().all(|b| b.is_ascii_digit());
        if is_version {
            return Some((&path[..end], &path[end..]));
        }
        offset = end + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Route {
        parse(path).route
    }

    #[test]
    fn routes_after_the_version_segment() {
        assert_eq!(route("/ppe/v1/transaccion/deuda"), Route::CreateDebt);
        assert_eq!(route("/ppe/v1/transaccion/deuda?x=1"), Route::CreateDebt);
        assert_eq!(route("/ppe/v1/transaccion/deuda/"), Route::CreateDebt);
        assert_eq!(route("/fake/ppe/v1/transaccion/deuda"), Route::CreateDebt);
        assert_eq!(route("/ppe/v12/transaccion/deuda"), Route::CreateDebt);
        assert_eq!(
            route("/ppe/v1/consulta/estado/abc-1?y"),
            Route::Status("abc-1".into())
        );
        assert_eq!(
            route("/ppe/v1/pruebas/pagar/abc"),
            Route::TestPay("abc".into())
        );
        assert_eq!(
            parse("/fake/ppe/v1/transaccion/deuda").prefix,
            "/fake/ppe/v1"
        );
        assert_eq!(parse("/ppe/v1/transaccion/deuda").prefix, "/ppe/v1");
    }

    #[test]
    fn everything_else_is_other() {
        for path in [
            "/ppe/v1",
            "/ppe/v1/",
            "/ppe/v1/transaccion",
            "/ppe/v1/transaccion/deuda/x",
            "/ppe/v1/consulta/estado",
            "/ppe/v1/consulta/estado/",
            "/ppe/v1/consulta/estado/a/b",
            "/ppe/transaccion/deuda",
            "/ppe/vx/transaccion/deuda",
            "/ppe/v/transaccion/deuda",
            "/ppe/v1/Transaccion/Deuda",
            "/ppe/v1//transaccion/deuda",
            "",
        ] {
            assert_eq!(route(path), Route::Other, "{path}");
        }
    }

    #[test]
    fn the_first_version_segment_wins() {
        // A version-like segment in the rest is part of the route, not the prefix.
        assert_eq!(route("/ppe/v1/v2/transaccion/deuda"), Route::Other);
        assert_eq!(parse("/ppe/v1/v2/x").prefix, "/ppe/v1");
    }
}
