//! The HTTP messages that phases see and the actions they return.

/// One HTTP header field. The gateway gives names in lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name, lowercase.
    pub name: String,
    /// The field value.
    pub value: String,
}

impl Header {
    /// A header field; the name is lowercased.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        let mut name = name.into();
        name.make_ascii_lowercase();
        Header {
            name,
            value: value.into(),
        }
    }
}

/// Every value of the fields named `name` (any case), in order.
fn values<'a>(headers: &'a [Header], name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value.as_str())
}

/// The first value of the field named `name` (any case).
fn first<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case(name))
        .map(|header| header.value.as_str())
}

/// The request head as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHead {
    /// The method, uppercase.
    pub method: String,
    /// The path and query (`/v1/x?a=1`).
    pub path: String,
    /// The header fields, in order; a repeated field appears once per occurrence.
    pub headers: Vec<Header>,
}

impl RequestHead {
    /// A request head without headers (for tests).
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        RequestHead {
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header field (for tests).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// The first value of the field `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// Every value of the field `name` (any case), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        values(&self.headers, name)
    }
}

/// The response head as the upstream sent it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The header fields, in order.
    pub headers: Vec<Header>,
}

impl ResponseHead {
    /// A response head without headers (for tests).
    pub fn new(status: u16) -> Self {
        ResponseHead {
            status,
            headers: Vec::new(),
        }
    }

    /// Adds a header field (for tests).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// The first value of the field `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// Every value of the field `name` (any case), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        values(&self.headers, name)
    }
}

/// A piece of a request or response body; the last one has `end_of_stream` set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BodyChunk {
    /// The bytes of this chunk (at most 64 KiB by default).
    pub data: Vec<u8>,
    /// True on the last chunk of the body.
    pub end_of_stream: bool,
}

impl BodyChunk {
    /// A chunk (for tests).
    pub fn new(data: impl Into<Vec<u8>>, end_of_stream: bool) -> Self {
        BodyChunk {
            data: data.into(),
            end_of_stream,
        }
    }
}

/// Changes to the header fields of the message in flight: `remove` applies first, then
/// `set`. The gateway manages `content-length` and hop-by-hop fields itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderChanges {
    /// Fields to set: each name replaces the fields of that name (repeat a name to give
    /// it several values).
    pub set: Vec<Header>,
    /// Names of fields to remove.
    pub remove: Vec<String>,
}

impl HeaderChanges {
    /// No changes yet.
    pub fn new() -> Self {
        HeaderChanges::default()
    }

    /// Sets the field `name` to `value`, replacing the fields of that name.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set.push(Header::new(name, value));
        self
    }

    /// Removes every field named `name`.
    pub fn remove(mut self, name: impl Into<String>) -> Self {
        let mut name = name.into();
        name.make_ascii_lowercase();
        self.remove.push(name);
        self
    }
}

/// A response that a plugin sends to the client itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, 200 to 599.
    pub status: u16,
    /// The header fields; the gateway adds `content-length`.
    pub headers: Vec<Header>,
    /// The whole body (at most 1 MiB by default).
    pub body: Vec<u8>,
}

impl Response {
    /// A response with this status, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// An RFC 9457 problem document (`application/problem+json`) with `type`, `title`,
    /// `status` and `detail`, the form of every error the gateway returns.
    pub fn problem(status: u16, problem_type: &str, title: &str, detail: &str) -> Self {
        let body = serde_json::json!({
            "type": problem_type,
            "title": title,
            "status": status,
            "detail": detail,
        });
        Response::new(status)
            .with_header("content-type", "application/problem+json")
            .with_body(serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// What a header phase decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadersAction {
    /// Go on with the message unchanged.
    Continue,
    /// Go on after these header changes.
    Modify(HeaderChanges),
    /// Stop and send this response to the client (in the response phase, instead of the
    /// upstream's).
    Respond(Response),
}

/// What a body phase decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyAction {
    /// Pass the chunk on unchanged.
    Continue,
    /// Pass these bytes on instead of the chunk (empty drops it).
    Replace(Vec<u8>),
    /// Stop and send this response to the client. In the response body phase the gateway
    /// can do so only while nothing of the response has been sent; otherwise it aborts it.
    Respond(Response),
}
