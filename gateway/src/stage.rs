//! The plugin stage of the request path: runs a service's plugin chain at
//! each phase and turns the plugins' actions into changes of the request or
//! response, or into an answer.

use crate::plugin::chain::Chain;
use crate::plugin::{
    BodyAction, BodyChunk, CallContext, Checkout, Header, HeaderChanges, HeadersAction, Phase,
    PluginError, RequestHead, Response, ResponseHead,
};
use crate::problem::Problem;
use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::Arc;

/// Fields the gateway manages itself; plugins' changes to them are ignored.
const MANAGED: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
];

/// The chain of one request: one checked-out instance per plugin, or none
/// for a plugin that failed open (it is skipped for the rest of the request).
pub struct PluginRun {
    calls: Vec<Option<Checkout>>,
    /// A plugin's answer that replaces the upstream's response body.
    pub replacement_body: Option<Bytes>,
    replacement_sent: bool,
    /// Timings of every plugin call, when the request is traced.
    timings: Option<Vec<PluginTiming>>,
}

/// One plugin call, for the request's trace.
#[derive(Debug, Clone)]
pub struct PluginTiming {
    /// The plugin's name.
    pub plugin: String,
    /// The phase called.
    pub phase: &'static str,
    /// Start and end, Unix microseconds.
    pub times: (i64, i64),
    /// Whether the call failed.
    pub failed: bool,
}

/// The name of a phase in traces.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::RequestHeaders => "request_headers",
        Phase::RequestBody => "request_body",
        Phase::ResponseHeaders => "response_headers",
        Phase::ResponseBody => "response_body",
    }
}

/// Makes one plugin call, recording its timing when `timings` collects them
/// (untraced requests pay one branch).
fn timed<T, E>(
    timings: &mut Option<Vec<PluginTiming>>,
    phase: Phase,
    call: &mut Checkout,
    f: impl FnOnce(&mut Checkout) -> Result<T, E>,
) -> Result<T, E> {
    let Some(timings) = timings.as_mut() else {
        return f(call);
    };
    let start = crate::oprecords::now_us();
    let result = f(call);
    timings.push(PluginTiming {
        plugin: call.plugin().name().to_string(),
        phase: phase_name(phase),
        times: (start, crate::oprecords::now_us()),
        failed: result.is_err(),
    });
    result
}

/// What the request path must do after a phase.
pub enum Outcome {
    /// Go on.
    Continue,
    /// Answer the client with this plugin response.
    Answer(Response),
    /// Fail the request with this problem.
    Fail(Problem, String),
}

impl PluginRun {
    /// Checks out an instance of every plugin of the chain; they share `context`.
    pub fn start(
        chain: &Chain,
        context: &Arc<CallContext>,
    ) -> Result<PluginRun, (Problem, String)> {
        let mut calls = Vec::with_capacity(chain.len());
        for plugin in chain.iter() {
            match plugin.check_out(context.clone()) {
                Ok(call) => calls.push(Some(call)),
                Err(e) if plugin.fails_open() => {
                    tracing::warn!(plugin = plugin.name(), error = %e, "plugin skipped (fail-open)");
                    calls.push(None);
                }
                Err(e) => return Err(failure(&e)),
            }
        }
        Ok(PluginRun {
            calls,
            replacement_body: None,
            replacement_sent: false,
            timings: None,
        })
    }

    /// Records the timing of every plugin call from now on (traced requests).
    pub fn collect_timings(&mut self) {
        self.timings.get_or_insert_with(Vec::new);
    }

    /// The timings recorded so far, emptied.
    pub fn take_timings(&mut self) -> Vec<PluginTiming> {
        self.timings
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Whether some plugin of the chain handles `phase`.
    pub fn handles(&self, phase: Phase) -> bool {
        self.calls
            .iter()
            .flatten()
            .any(|c| c.plugin().handles(phase))
    }

    /// Runs the request-headers phase, applying changes to `req`.
    pub fn request_headers(&mut self, req: &mut RequestHeader) -> Outcome {
        for slot in &mut self.calls {
            let Some(call) = slot.as_mut() else { continue };
            if !call.plugin().handles(Phase::RequestHeaders) {
                continue;
            }
            let head = request_head(req);
            let result = timed(&mut self.timings, Phase::RequestHeaders, call, |c| {
                c.on_request_headers(&head)
            });
            match result {
                Ok(HeadersAction::Continue) => {}
                Ok(HeadersAction::Modify(changes)) => apply(&changes, req),
                Ok(HeadersAction::Respond(response)) => return Outcome::Answer(response),
                Err(e) => {
                    if let Some(outcome) = on_error(slot, &e) {
                        return outcome;
                    }
                }
            }
        }
        Outcome::Continue
    }

    /// Runs the request-body phase on one chunk.
    pub fn request_body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) -> Outcome {
        self.body(Phase::RequestBody, body, end_of_stream)
    }

    /// Runs the response-body phase on one chunk.
    pub fn response_body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) -> Outcome {
        if let Some(replacement) = &self.replacement_body {
            // A plugin answered in the response-headers phase: its body
            // replaces the upstream's, which is dropped.
            *body = if self.replacement_sent {
                None
            } else {
                Some(replacement.clone())
            };
            self.replacement_sent = true;
            return Outcome::Continue;
        }
        self.body(Phase::ResponseBody, body, end_of_stream)
    }

    fn body(&mut self, phase: Phase, body: &mut Option<Bytes>, end_of_stream: bool) -> Outcome {
        for slot in &mut self.calls {
            let Some(call) = slot.as_mut() else { continue };
            if !call.plugin().handles(phase) {
                continue;
            }
            let chunk = BodyChunk {
                data: body.as_ref().map(|b| b.to_vec()).unwrap_or_default(),
                end_of_stream,
            };
            let result = timed(&mut self.timings, phase, call, |c| match phase {
                Phase::RequestBody => c.on_request_body(&chunk),
                _ => c.on_response_body(&chunk),
            });
            match result {
                Ok(BodyAction::Continue) => {}
                Ok(BodyAction::Replace(data)) => *body = Some(Bytes::from(data)),
                Ok(BodyAction::Respond(response)) => return Outcome::Answer(response),
                Err(e) => {
                    if let Some(outcome) = on_error(slot, &e) {
                        return outcome;
                    }
                }
            }
        }
        Outcome::Continue
    }

    /// Runs the response-headers phase, applying changes to `resp`. A
    /// plugin's answer replaces status, headers and (later) the body.
    pub fn response_headers(&mut self, resp: &mut ResponseHeader) -> Outcome {
        for slot in &mut self.calls {
            let Some(call) = slot.as_mut() else { continue };
            if !call.plugin().handles(Phase::ResponseHeaders) {
                continue;
            }
            let head = ResponseHead {
                status: resp.status.as_u16(),
                headers: headers_of(resp.headers.iter()),
            };
            let result = timed(&mut self.timings, Phase::ResponseHeaders, call, |c| {
                c.on_response_headers(&head)
            });
            match result {
                Ok(HeadersAction::Continue) => {}
                Ok(HeadersAction::Modify(changes)) => apply(&changes, resp),
                Ok(HeadersAction::Respond(response)) => {
                    if let Err(e) = replace_response(resp, &response) {
                        return Outcome::Fail(
                            Problem::PluginFailed,
                            format!("plugin answer unusable: {e}"),
                        );
                    }
                    self.replacement_body = Some(Bytes::from(response.body));
                    return Outcome::Continue;
                }
                Err(e) => {
                    if let Some(outcome) = on_error(slot, &e) {
                        return outcome;
                    }
                }
            }
        }
        Outcome::Continue
    }
}

/// A failed call: fail-open drops the plugin from the rest of the request;
/// fail-closed fails the request.
fn on_error(slot: &mut Option<Checkout>, e: &PluginError) -> Option<Outcome> {
    let fails_open = slot.as_ref().is_some_and(|c| c.plugin().fails_open());
    if fails_open {
        tracing::warn!(error = %e, "plugin failed; continuing without it (fail-open)");
        // Dropping the checkout reports the failure to the breaker.
        *slot = None;
        None
    } else {
        tracing::warn!(error = %e, "plugin failed; failing the request (fail-closed)");
        let (problem, detail) = failure(e);
        Some(Outcome::Fail(problem, detail))
    }
}

fn failure(e: &PluginError) -> (Problem, String) {
    match e {
        PluginError::BreakerOpen { plugin } => (
            Problem::PluginUnavailable,
            format!("plugin {plugin} is suspended after repeated failures"),
        ),
        other => (Problem::PluginFailed, other.to_string()),
    }
}

fn headers_of<'a>(
    headers: impl Iterator<Item = (&'a http::HeaderName, &'a http::HeaderValue)>,
) -> Vec<Header> {
    headers
        .map(|(k, v)| Header {
            name: k.as_str().to_string(),
            value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
        })
        .collect()
}

/// The request as plugins see it.
pub fn request_head(req: &RequestHeader) -> RequestHead {
    let mut headers = headers_of(req.headers.iter());
    if !req.headers.contains_key(http::header::HOST) {
        if let Some(authority) = req.uri.authority() {
            headers.push(Header {
                name: "host".into(),
                value: authority.as_str().to_string(),
            });
        }
    }
    RequestHead {
        method: req.method.as_str().to_string(),
        path: req
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        headers,
    }
}

/// A message head whose fields plugins may change.
trait EditableHead {
    fn remove(&mut self, name: &str);
    fn append(&mut self, name: String, value: String) -> pingora_error::Result<()>;
}

impl EditableHead for RequestHeader {
    fn remove(&mut self, name: &str) {
        self.remove_header(name);
    }
    fn append(&mut self, name: String, value: String) -> pingora_error::Result<()> {
        self.append_header(name, value).map(|_| ())
    }
}

impl EditableHead for ResponseHeader {
    fn remove(&mut self, name: &str) {
        self.remove_header(name);
    }
    fn append(&mut self, name: String, value: String) -> pingora_error::Result<()> {
        self.append_header(name, value).map(|_| ())
    }
}

/// Applies header changes: removals first, then sets (the first value of a
/// name replaces, later ones add). Managed fields are left alone.
fn apply(changes: &HeaderChanges, head: &mut impl EditableHead) {
    let managed = |name: &str| MANAGED.iter().any(|m| m.eq_ignore_ascii_case(name));
    for name in &changes.remove {
        if !managed(name) {
            head.remove(&name.to_ascii_lowercase());
        }
    }
    let mut replaced: Vec<&str> = Vec::new();
    for header in &changes.set {
        if managed(&header.name) {
            continue;
        }
        if !replaced.contains(&header.name.as_str()) {
            head.remove(&header.name.to_ascii_lowercase());
            replaced.push(&header.name);
        }
        // Names and values were checked by the host when the plugin returned.
        if let Err(e) = head.append(header.name.to_ascii_lowercase(), header.value.clone()) {
            tracing::debug!(error = %e, "plugin header not applied");
        }
    }
}

fn replace_response(resp: &mut ResponseHeader, answer: &Response) -> pingora_error::Result<()> {
    resp.set_status(answer.status)?;
    let names: Vec<http::HeaderName> = resp.headers.keys().cloned().collect();
    for name in names {
        resp.remove_header(&name);
    }
    for h in &answer.headers {
        if !MANAGED.iter().any(|m| m.eq_ignore_ascii_case(&h.name)) {
            resp.append_header(h.name.to_ascii_lowercase(), h.value.as_str())?;
        }
    }
    resp.insert_header("content-length", answer.body.len().to_string())?;
    Ok(())
}

/// Writes a plugin's answer to the client.
pub async fn write_answer(
    session: &mut pingora_proxy::Session,
    answer: &Response,
    request_id: &str,
) -> pingora_error::Result<()> {
    let mut resp = ResponseHeader::build(answer.status, Some(answer.headers.len() + 2))?;
    for h in &answer.headers {
        if !MANAGED.iter().any(|m| m.eq_ignore_ascii_case(&h.name)) {
            resp.append_header(h.name.to_ascii_lowercase(), h.value.as_str())?;
        }
    }
    resp.insert_header("content-length", answer.body.len().to_string())?;
    resp.insert_header("x-request-id", request_id)?;
    if !session.is_body_empty() && !session.is_body_done() {
        session.set_keepalive(None);
    }
    session
        .write_response_header(Box::new(resp), answer.body.is_empty())
        .await?;
    if !answer.body.is_empty() {
        session
            .write_response_body(Some(Bytes::from(answer.body.clone())), true)
            .await?;
    }
    Ok(())
}
