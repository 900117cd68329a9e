//! The request path split at the service prefix, and the routes of the Ciudadanía
//! Digital service.
//!
//! The gateway hands plugins the path as the client sent it: `/ciudadania/v1/...`, or
//! through the legacy test alias `/fake/ciudadania/v1/...`. Routes are matched on what
//! follows the first `v<digits>` segment, without the query.

/// A request path split at the first `v<digits>` segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPath<'a> {
    /// Everything up to and including the version segment (`/fake/ciudadania/v1`); empty
    /// if the path has none.
    pub prefix: &'a str,
    /// The rest, without query or trailing slash; `/` at least.
    pub rest: &'a str,
}

impl<'a> RequestPath<'a> {
    /// Splits a path-and-query.
    pub fn parse(path_and_query: &'a str) -> Self {
        let path = path_and_query
            .split(['?', '#'])
            .next()
            .unwrap_or(path_and_query);
        let mut start = 0;
        for segment in path.split('/') {
            let end = start + segment.len();
            if is_version(segment) {
                return RequestPath {
                    prefix: &path[..end],
                    rest: normalize(&path[end..]),
                };
            }
            start = end + 1;
        }
        RequestPath {
            prefix: "",
            rest: normalize(path),
        }
    }
}

fn is_version(segment: &str) -> bool {
    segment.len() > 1
        && segment.starts_with('v')
        && segment[1..].bytes().all(|b| b.is_ascii_digit())
}

fn normalize(rest: &str) -> &str {
    let trimmed = rest.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

/// The three kinds of record the plugin keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Document approval requests (`aprobaciones`).
    Approval,
    /// Electronic notifications (`notificaciones`).
    Notification,
    /// Authorization requests (`autorizaciones`).
    Authorization,
}

impl Kind {
    /// The collection's path segment.
    pub fn collection(self) -> &'static str {
        match self {
            Kind::Approval => "aprobaciones",
            Kind::Notification => "notificaciones",
            Kind::Authorization => "autorizaciones",
        }
    }
}

/// A citizen's answer to an authorization request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `POST .../autorizaciones/{id}/aceptar`.
    Accept,
    /// `POST .../autorizaciones/{id}/rechazar`.
    Reject,
}

impl Answer {
    /// The answer as the API states it.
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Accept => "ACEPTADA",
            Answer::Reject => "RECHAZADA",
        }
    }
}

/// A route of the Ciudadanía Digital service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /userinfo`: the citizen of the token.
    UserInfo,
    /// `POST /{collection}`: the entity creates a record (JSON body).
    Create(Kind),
    /// `GET /{collection}/{id}`: the entity reads a record.
    Read(Kind, &'a str),
    /// `POST /aprobaciones/{id}/aprobar`: the citizen approves.
    Approve(&'a str),
    /// `POST /autorizaciones/{id}/aceptar|rechazar`: the citizen answers.
    Answer(&'a str, Answer),
    /// A known path with another method; the value is the `Allow` field.
    WrongMethod(&'static str),
    /// Any other path.
    Unknown,
}

impl<'a> Route<'a> {
    /// The route of `method` on `rest` (the path after the service prefix).
    pub fn recognize(method: &str, rest: &'a str) -> Route<'a> {
        let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let kind = |name: &str| match name {
            "aprobaciones" => Some(Kind::Approval),
            "notificaciones" => Some(Kind::Notification),
            "autorizaciones" => Some(Kind::Authorization),
            _ => None,
        };
        let (route, allow) = match segments.as_slice() {
            ["userinfo"] => (Route::UserInfo, "GET"),
            [collection] => match kind(collection) {
                Some(k) => (Route::Create(k), "POST"),
                None => return Route::Unknown,
            },
            [collection, id] if !id.is_empty() => match kind(collection) {
                Some(k) => (Route::Read(k, id), "GET"),
                None => return Route::Unknown,
            },
            ["aprobaciones", id, "aprobar"] if !id.is_empty() => (Route::Approve(id), "POST"),
            ["autorizaciones", id, "aceptar"] if !id.is_empty() => {
                (Route::Answer(id, Answer::Accept), "POST")
            }
            ["autorizaciones", id, "rechazar"] if !id.is_empty() => {
                (Route::Answer(id, Answer::Reject), "POST")
            }
            _ => return Route::Unknown,
        };
        if method == allow {
            route
        } else {
            Route::WrongMethod(allow)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_after_the_first_version_segment() {
        let p = RequestPath::parse("/ciudadania/v1/aprobaciones?x=1");
        assert_eq!((p.prefix, p.rest), ("/ciudadania/v1", "/aprobaciones"));
        let p = RequestPath::parse("/fake/ciudadania/v1/aprobaciones/apr-1/aprobar/");
        assert_eq!(
            (p.prefix, p.rest),
            ("/fake/ciudadania/v1", "/aprobaciones/apr-1/aprobar")
        );
        let p = RequestPath::parse("/ppe/v12/transaccion/deuda#frag");
        assert_eq!((p.prefix, p.rest), ("/ppe/v12", "/transaccion/deuda"));
        let p = RequestPath::parse("/ciudadania/v1");
        assert_eq!((p.prefix, p.rest), ("/ciudadania/v1", "/"));
        let p = RequestPath::parse("/sin/version/x");
        assert_eq!((p.prefix, p.rest), ("", "/sin/version/x"));
        // `v` alone and `vx` are not versions; only the first version counts.
        let p = RequestPath::parse("/v/vx/a/v2/b/v3/c");
        assert_eq!((p.prefix, p.rest), ("/v/vx/a/v2", "/b/v3/c"));
    }

    #[test]
    fn routes_are_recognized_by_method_and_path() {
        assert_eq!(Route::recognize("GET", "/userinfo"), Route::UserInfo);
        assert_eq!(
            Route::recognize("POST", "/aprobaciones"),
            Route::Create(Kind::Approval)
        );
        assert_eq!(
            Route::recognize("GET", "/notificaciones/not-1"),
            Route::Read(Kind::Notification, "not-1")
        );
        assert_eq!(
            Route::recognize("POST", "/aprobaciones/apr-1/aprobar"),
            Route::Approve("apr-1")
        );
        assert_eq!(
            Route::recognize("POST", "/autorizaciones/aut-1/rechazar"),
            Route::Answer("aut-1", Answer::Reject)
        );
        assert_eq!(
            Route::recognize("DELETE", "/aprobaciones/apr-1"),
            Route::WrongMethod("GET")
        );
        assert_eq!(
            Route::recognize("GET", "/aprobaciones"),
            Route::WrongMethod("POST")
        );
        assert_eq!(Route::recognize("GET", "/otra"), Route::Unknown);
        assert_eq!(
            Route::recognize("POST", "/aprobaciones/apr-1/rechazar"),
            Route::Unknown
        );
        assert_eq!(Route::recognize("GET", "/"), Route::Unknown);
    }
}
