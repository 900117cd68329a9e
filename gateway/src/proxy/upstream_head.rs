//! The head a call carries upstream: the client's fields less those that
//! concern its hop or that it must not forge, plus the fields the gateway
//! sets (`Host`, `X-Forwarded-*`, `Forwarded`, the consumer's identity, the
//! request id, the trace context), on a target below the backend's base path.
//!
//! The fields are computed once (`UpstreamHead::compute`) and applied in one
//! of two ways. Pingora's general path hands `upstream_request_filter` a copy
//! of the client's head that keeps the fields' case: they are set there with
//! `insert_header`, which keeps that case map in step. The direct exchange
//! builds its head itself (`direct_request`), in one field map and without a
//! case map: each field is stored once under a name parsed at compile time,
//! where `insert_header` parses the name and stores it twice (HTTP/1 field
//! names are case-insensitive, RFC 9110 5.1; pingora writes the standard ones
//! title-cased and the others in lower case).

use super::{fail, RequestCtx, STRIPPED_REQUEST_HEADERS};
use crate::problem::Problem;
use http::header::{HeaderName, HeaderValue};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

// The names of the fields the gateway sets, parsed at compile time. Statics,
// not consts: each use is the same name, and the general path writes it as
// spelt here (`as_str` of a static name is `'static`).
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static CONSUMER_ENTITY: HeaderName = HeaderName::from_static("x-chasqui-consumer-entity");
static CONSUMER_SYSTEM: HeaderName = HeaderName::from_static("x-chasqui-consumer-system");
static ENVIRONMENT: HeaderName = HeaderName::from_static("x-chasqui-environment");
static SERVICE: HeaderName = HeaderName::from_static("x-chasqui-service");
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// What the gateway puts in the upstream head.
pub(super) struct UpstreamHead {
    /// The target: the backend's base path, the path below the service, the query.
    pub uri: http::Uri,
    /// `Host`: the backend's authority.
    pub host: HeaderValue,
    /// The fields the gateway sets, each replacing any of its name.
    pub fields: Vec<(&'static HeaderName, HeaderValue)>,
}

/// A value made of the gateway's own text: an error here is the gateway's
/// (a catalog code or an address that cannot be a field value).
fn value(text: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(text)
        .map_err(|e| Error::because(ErrorType::InternalError, "building an upstream field", e))
}

impl UpstreamHead {
    /// Computes the head of a routed request's current attempt (the last
    /// upstream in `ctx.tried`).
    pub fn compute(session: &Session, ctx: &mut RequestCtx) -> Result<UpstreamHead> {
        let Some(routed) = ctx.routed.as_ref() else {
            return Err(fail(
                ctx,
                Problem::Internal,
                "request reached the upstream unrouted",
            ));
        };
        let Some(&index) = ctx.tried.last() else {
            return Err(fail(ctx, Problem::Internal, "no upstream chosen"));
        };
        let backend = &routed.pool.backends[index];
        let mut target =
            String::with_capacity(backend.base_path.len() + routed.upstream_path.len());
        target.push_str(&backend.base_path);
        target.push_str(&routed.upstream_path);
        let uri = http::Uri::try_from(target).map_err(|e| {
            Error::because(ErrorType::InternalError, "building the upstream URI", e)
        })?;

        let req = session.req_header();
        let original_host = req.uri.authority().map(|a| a.as_str()).or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let proto = if session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some()
        {
            "https"
        } else {
            "http"
        };

        let mut fields = Vec::with_capacity(10);
        let mut forwarded = String::with_capacity(64);
        if let Some(ip) = client_ip {
            let ip = ip.to_string();
            fields.push((&X_FORWARDED_FOR, value(&ip)?));
            if ip.contains(':') {
                forwarded.push_str("for=\"[");
                forwarded.push_str(&ip);
                forwarded.push_str("]\";");
            } else {
                forwarded.push_str("for=");
                forwarded.push_str(&ip);
                forwarded.push(';');
            }
        }
        fields.push((&X_FORWARDED_PROTO, HeaderValue::from_static(proto)));
        forwarded.push_str("proto=");
        forwarded.push_str(proto);
        if let Some(host) =
            original_host.filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
        {
            fields.push((&X_FORWARDED_HOST, value(host)?));
            forwarded.push_str(";host=\"");
            forwarded.push_str(host);
            forwarded.push('"');
        }
        fields.push((&FORWARDED, value(&forwarded)?));

        let consumer = &routed.consumer;
        fields.push((&CONSUMER_ENTITY, value(&consumer.entity_code)?));
        fields.push((&CONSUMER_SYSTEM, value(&consumer.consumer_code)?));
        fields.push((&ENVIRONMENT, HeaderValue::from_static(routed.env.as_str())));
        fields.push((&SERVICE, value(&routed.service.route_name)?));
        fields.push((&REQUEST_ID, value(&ctx.request_id)?));
        if let Some(trace) = &ctx.trace {
            // W3C trace context: the upstream continues this trace, under
            // the gateway's upstream span.
            fields.push((&TRACEPARENT, value(&trace.upstream_traceparent())?));
        }
        Ok(UpstreamHead {
            uri,
            host: value(&backend.authority)?,
            fields,
        })
    }
}

/// Whether a client's field stays off the upstream hop: hop-by-hop and
/// forgeable fields, and those its `Connection` field nominates.
fn stripped(name: &HeaderName, nominated: &[HeaderName]) -> bool {
    STRIPPED_REQUEST_HEADERS.contains(&name.as_str()) || nominated.contains(name)
}

/// Applies the head to pingora's copy of the client's head (general path).
/// pingora has already removed the fields `Connection` nominates.
pub(super) fn apply(
    head: UpstreamHead,
    upstream: &mut RequestHeader,
    body_plugin: bool,
    prebuffered: Option<usize>,
) -> Result<()> {
    upstream.set_uri(head.uri);
    let unwanted: Vec<HeaderName> = upstream
        .headers
        .keys()
        .filter(|k| stripped(k, &[]))
        .cloned()
        .collect();
    for name in unwanted {
        upstream.remove_header(&name);
    }
    upstream.insert_header(http::header::HOST, head.host)?;
    if body_plugin {
        // A plugin may change the body's length: send it chunked.
        upstream.remove_header(&http::header::CONTENT_LENGTH);
    }
    if let Some(len) = prebuffered {
        // Read whole before the upstream was chosen: its length is known.
        upstream.remove_header(&http::header::TRANSFER_ENCODING);
        upstream.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
    }
    for (name, value) in head.fields {
        upstream.insert_header(name.as_str(), value)?;
    }
    Ok(())
}

/// Builds the direct exchange's head (a bodiless call) from the client's:
/// one field map, no case map.
pub(super) fn direct_request(
    head: UpstreamHead,
    client: &RequestHeader,
    body_plugin: bool,
) -> RequestHeader {
    let nominated = super::connection_nominated(&client.headers);
    let mut headers = http::HeaderMap::with_capacity(client.headers.len() + head.fields.len() + 1);
    headers.insert(http::header::HOST, head.host);
    for (name, value) in &client.headers {
        if *name == http::header::HOST
            || stripped(name, &nominated)
            || (body_plugin && *name == http::header::CONTENT_LENGTH)
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    for (name, value) in head.fields {
        headers.insert(name.clone(), value);
    }
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = client.method.clone();
    parts.uri = head.uri;
    parts.version = http::Version::HTTP_11;
    parts.headers = headers;
    RequestHeader::from(parts)
}
