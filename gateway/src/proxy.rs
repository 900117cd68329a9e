//! The data plane: pingora's `ProxyHttp` filled with Chasqui's request path.
//!
//! Order of work for one request: reserved endpoints, size limits, path
//! normalisation and routing, token authentication, environment and grant
//! checks, upstream selection, header rewriting, proxying, and on any failure
//! one RFC 9457 answer.

use crate::deferred;
use crate::effective::{PolicyTable, ServicePolicy};
use crate::ledger::Durability;
use crate::path::{self, Parsed};
use crate::plugin::{CallContext, Phase, RequestContext};
use crate::policy::Policy;
use crate::problem::{self, Problem};
use crate::routes::ServiceEntry;
use crate::stage::{self, Outcome, PluginRun};
use crate::state::{Gateway, InflightGuard};
use crate::telemetry::{RequestTrace, Span, SpanKind};
use crate::upstream::UpstreamPool;
use async_trait::async_trait;
use bytes::Bytes;
use chasqui_catalog::oprecords::OperationalRecord;
use chasqui_catalog::{Environment, TokenRecord};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use rand::RngCore;
use smol_str::SmolStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod direct;
mod filters;
mod upstream_head;

use upstream_head::UpstreamHead;

/// Request headers that only concern one hop, plus those a client must not
/// be able to forge towards the upstream.
const STRIPPED_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
];

/// Whether a plugin of the request's chain handles the request body (then
/// the body goes upstream chunked: the plugin may change its length).
fn body_plugin(ctx: &RequestCtx) -> bool {
    ctx.plugins
        .as_ref()
        .is_some_and(|r| r.handles(Phase::RequestBody))
}

/// Largest body read whole before the upstream is chosen: pingora replays
/// the request body from its retry buffer, which holds 64 KiB.
const PREBUFFER_MAX: usize = 64 << 10;

/// Prefix of the identity headers the gateway sets for upstreams.
const IDENTITY_PREFIX: &str = "x-chasqui-";

/// Longest an answer waits for its exchange's ledger commit (strict
/// durability) before it is sent anyway, with an error logged: a stalled
/// store must not hold every answer forever.
const COMMIT_WAIT: Duration = Duration::from_secs(5);

/// The proxy.
pub struct ChasquiProxy {
    gw: Arc<Gateway>,
    /// The HTTP/1 client and connection pool of the direct exchange
    /// (pingora's general path keeps its own).
    connector: pingora_core::connectors::http::v1::Connector,
    /// Whether the direct exchange is on.
    direct: bool,
}

impl ChasquiProxy {
    /// A proxy over the gateway's state; `conf` sets the upstream pool,
    /// `direct` turns the direct exchange on (see `proxy::direct`).
    pub fn new(
        gw: Arc<Gateway>,
        conf: &pingora_core::server::configuration::ServerConf,
        direct: bool,
    ) -> Self {
        let options = pingora_core::connectors::ConnectorOptions::from_server_conf(conf);
        ChasquiProxy {
            gw,
            connector: pingora_core::connectors::http::v1::Connector::new(Some(options)),
            direct,
        }
    }
}

/// Where an authenticated, authorised request goes.
pub struct Routed {
    service: Arc<ServiceEntry>,
    pool: Arc<UpstreamPool>,
    env: Environment,
    consumer: Arc<TokenRecord>,
    /// Path below the service, plus the query, as sent upstream (after the base path).
    upstream_path: String,
}

/// An answer being collected for the response cache.
struct CacheFill {
    status: u16,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    body: bytes::BytesMut,
    max: usize,
}

/// Per-request state.
pub struct RequestCtx {
    /// 32 lowercase hex digits; shared (not copied) by the operational record.
    request_id: SmolStr,
    started: Instant,
    /// The policy resolved per service, loaded once for the whole request.
    table: Arc<PolicyTable>,
    policy: Arc<Policy>,
    /// The routed service's effective policy.
    svc: Option<Arc<ServicePolicy>>,
    /// The response cache key, when the answer may be cached.
    cache_key: Option<String>,
    /// The answer being collected for the cache.
    cache_fill: Option<CacheFill>,
    routed: Option<Routed>,
    /// The cause to answer with if the request fails now.
    problem: Option<(Problem, String)>,
    tried: Vec<usize>,
    body_bytes: u64,
    /// The service's plugin chain for this request, if it has one.
    plugins: Option<PluginRun>,
    /// A plugin's answer to send instead of a problem when the request stops.
    plugin_answer: Option<crate::plugin::Response>,
    /// The whole request body, read and run through the plugins in
    /// `request_filter`, kept to send upstream (or to store-and-forward).
    prebuffered: Option<Bytes>,
    /// Whether store-and-forward applies to this request.
    deferrable: bool,
    /// The status of a plugin's own answer, for the access log.
    answered_by_plugin: Option<u16>,
    /// Whether a connection to an upstream was made (a request that never
    /// reached one can be deferred without risk of a duplicate).
    upstream_connected: bool,
    /// Wall-clock receipt time (Unix microseconds), for the operational record.
    received_at_us: i64,
    /// When the request was (last) sent upstream, if it was.
    sent_upstream_at_us: Option<i64>,
    /// When an upstream answered, if one did.
    upstream_answered_at_us: Option<i64>,
    /// The service as requested (`entidad/v{n}`) and the route template.
    record_route: Option<(SmolStr, SmolStr)>,
    /// The authenticated consumer, even when the request is then refused
    /// (no grant, wrong environment): the record and the usage name it.
    consumer: Option<Arc<TokenRecord>>,
    /// The W3C trace context (set when the request head is read).
    trace: Option<RequestTrace>,
    /// Whether the exchange's ledger entry was appended.
    sealed: bool,
    /// The record the ledger entry was made from, completed at the end
    /// into the operational record (not built twice).
    head_record: Option<OperationalRecord>,
    /// The answer is relayed by the direct exchange, which runs the
    /// end-of-body filters itself (see `response_filter`).
    direct: bool,
    /// An answer pingora's general loop would end with its head while the
    /// plugins gave it a body: written whole by `fail_to_proxy` instead.
    held_answer: Option<(Box<ResponseHeader>, Bytes)>,
    /// Whether an answer was held (its error is not a failure to log).
    answer_held: bool,
    _inflight: InflightGuard,
}

fn new_request_id() -> SmolStr {
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let mut digits = [0u8; 32];
    // One allocation, shared by the record and the ledger entry from here.
    SmolStr::new(crate::hex_into(&raw, &mut digits))
}

/// An error that carries the problem to answer with.
fn fail(ctx: &mut RequestCtx, problem: Problem, detail: impl Into<String>) -> Box<Error> {
    let detail = detail.into();
    let err = Error::explain(ErrorType::HTTPStatus(problem.status()), detail.clone());
    ctx.problem = Some((problem, detail));
    err
}

/// Size of the request head as it would be on the wire (HTTP/1.1 form).
fn head_size(req: &RequestHeader) -> usize {
    let line =
        req.method.as_str().len() + req.uri.path_and_query().map_or(1, |p| p.as_str().len()) + 12;
    line + req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
}

impl ChasquiProxy {
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        problem: Problem,
        detail: &str,
    ) -> Result<bool> {
        ctx.problem = Some((problem, detail.to_string()));
        self.seal(session, ctx, problem.status()).await;
        problem::respond(session, problem, detail, &ctx.request_id).await?;
        Ok(true)
    }

    /// Like [`ChasquiProxy::answer`], with extra headers (a refusal's
    /// `Retry-After` and `RateLimit` fields).
    async fn answer_with_headers(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        problem: Problem,
        detail: &str,
        headers: &[(&'static str, String)],
    ) -> Result<bool> {
        ctx.problem = Some((problem, detail.to_string()));
        self.seal(session, ctx, problem.status()).await;
        problem::respond_with_headers(session, problem, detail, &ctx.request_id, headers).await?;
        Ok(true)
    }

    /// Appends the exchange's digest to the audit ledger just before the
    /// head of its answer is written; under strict durability, waits for
    /// the entry's (group) commit, so that no answer a client receives can
    /// be missing from the ledger after a crash. Once per request.
    async fn seal(&self, session: &Session, ctx: &mut RequestCtx, status: u16) {
        if ctx.sealed || !self.gw.metering {
            return;
        }
        ctx.sealed = true;
        let head = record_of(session, ctx, status, 0, ctx.received_at_us);
        let digest = crate::ledger::exchange_digest(&head);
        ctx.head_record = Some(head);
        match self.gw.ledger_durability {
            Durability::Strict => {
                if !self
                    .gw
                    .ledger
                    .commit_exchange(&ctx.request_id, &digest, COMMIT_WAIT)
                    .await
                {
                    tracing::error!(request_id = %ctx.request_id, "the ledger did not commit the exchange in time; answering anyway");
                }
            }
            Durability::Batched => {
                self.gw.ledger.append_exchange(&ctx.request_id, &digest);
            }
        }
    }

    /// Store-and-forward, first half: reads the whole body (bounded), runs
    /// the request-body plugins on it, and defers the request at once when
    /// its queue has a backlog (order) or no upstream is healthy.
    async fn prepare_deferrable(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let max = ctx
            .policy
            .store_and_forward
            .as_ref()
            .map_or(0, |p| p.max_body_bytes)
            .min(PREBUFFER_MAX);
        ctx.deferrable = true;
        if self.prebuffer_body(session, ctx, max).await? {
            return Ok(true);
        }
        let Some(routed) = ctx.routed.as_ref() else {
            return Ok(false);
        };
        if self
            .gw
            .deferred
            .has_backlog(&routed.service.route_name, routed.env)
            || !routed.pool.has_candidate(&[])
        {
            return self.defer(session, ctx).await;
        }
        Ok(false)
    }

    /// Reads the whole request body now (at most `max` bytes, else 413) and
    /// runs the request-body plugins on it; the result is what goes
    /// upstream. `Ok(true)`: the request was answered (too large, or by a
    /// plugin).
    async fn prebuffer_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        max: usize,
    ) -> Result<bool> {
        if ctx.prebuffered.is_some() {
            // Already read whole (for contract validation).
            return Ok(false);
        }
        let max = max.min(usize::try_from(body_limit(ctx)).unwrap_or(usize::MAX));
        // Pingora replays this buffer to the upstream (and on retries).
        session.as_mut().enable_retry_buffering();
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = session.read_request_body().await? {
            if body.len() + chunk.len() > max {
                let detail = format!("a request to this service is limited to {max} bytes");
                return self
                    .answer(session, ctx, Problem::PayloadTooLarge, &detail)
                    .await;
            }
            body.extend_from_slice(&chunk);
        }
        ctx.body_bytes = body.len() as u64;
        let mut whole = (!body.is_empty()).then(|| body.freeze());
        if let Some(run) = ctx
            .plugins
            .as_mut()
            .filter(|r| whole.is_some() && r.handles(Phase::RequestBody))
        {
            match run.request_body(&mut whole, true) {
                Outcome::Continue => {}
                Outcome::Answer(answer) => {
                    self.seal(session, ctx, answer.status).await;
                    stage::write_answer(session, &answer, &ctx.request_id).await?;
                    return Ok(true);
                }
                Outcome::Fail(problem, detail) => {
                    return self.answer(session, ctx, problem, &detail).await
                }
            }
        }
        ctx.prebuffered = Some(whole.unwrap_or_default());
        Ok(false)
    }

    /// Store-and-forward, second half: keeps the request durably, then
    /// answers 202 with its tracking id.
    async fn defer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let (Some(routed), Some(body)) = (ctx.routed.as_ref(), ctx.prebuffered.clone()) else {
            return self
                .answer(session, ctx, Problem::Internal, "nothing to defer")
                .await;
        };
        let id = deferred::tracking_id();
        let headers = deferred_headers(session.req_header(), routed, &ctx.request_id);
        let record = deferred::new_deferred(
            id.clone(),
            &routed.service.route_name,
            routed.env,
            (&routed.consumer.entity_code, &routed.consumer.consumer_code),
            &ctx.request_id,
            session.req_header().method.as_str(),
            &routed.upstream_path,
            headers,
            body.to_vec(),
        );
        let (store, deferrals, env) = (self.gw.store.clone(), self.gw.deferred.clone(), routed.env);
        let service = routed.service.route_name.clone();
        let kept = self
            .gw
            .control
            .spawn(async move { deferrals.accept(&store, record, env).await })
            .await;
        if !matches!(kept, Ok(Ok(()))) {
            tracing::error!(request_id = %ctx.request_id, ?kept, "store-and-forward: could not keep a request");
            return self
                .answer(
                    session,
                    ctx,
                    Problem::UpstreamUnreachable,
                    "the upstream cannot be reached and the request could not be kept for later",
                )
                .await;
        }
        tracing::info!(request_id = %ctx.request_id, id = %id, %service, "upstream unreachable: request accepted for later delivery");
        ctx.problem = None;
        let location = format!("/_chasqui/deferred/{id}");
        let answer = serde_json::json!({
            "id": id,
            "estado": "en_cola",
            "state": "queued",
            "service": service,
            "consulta": location,
            "detail": "El servicio destino no está disponible; la solicitud quedó registrada y se entregará en orden cuando vuelva. / The upstream is unavailable; the request was kept and will be delivered in order when it is back.",
        })
        .to_string();
        self.seal(session, ctx, 202).await;
        let mut resp = ResponseHeader::build(202, Some(5))?;
        resp.insert_header("content-type", "application/json")?;
        resp.insert_header("content-length", answer.len().to_string())?;
        resp.insert_header("location", location.as_str())?;
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(answer)), true)
            .await?;
        Ok(true)
    }

    /// `GET /_chasqui/deferred/{id}`: the state of a deferred request, for
    /// the consumer system that sent it.
    async fn deferred_state(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
    ) -> Result<bool> {
        let authorization = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let consumer = match self.gw.tokens.authenticate(authorization).await {
            Ok(consumer) => consumer,
            Err((problem, detail)) => return self.answer(session, ctx, problem, detail).await,
        };
        let store = self.gw.store.clone();
        let wanted = id.to_string();
        let found = self
            .gw
            .control
            .spawn(async move { store.deferred(&wanted).await })
            .await;
        let record = match found {
            Ok(Ok(Some(record)))
                if record.consumer_entity == consumer.entity_code
                    && record.consumer_system == consumer.consumer_code =>
            {
                record
            }
            Ok(Ok(_)) => {
                return self
                    .answer(
                        session,
                        ctx,
                        Problem::NotFound,
                        "no deferred request of yours has this id",
                    )
                    .await
            }
            _ => {
                return self
                    .answer(
                        session,
                        ctx,
                        Problem::Internal,
                        "the deferred requests cannot be read now",
                    )
                    .await
            }
        };
        let response = record.response_body.as_deref().map(|raw| {
            serde_json::from_slice::<serde_json::Value>(raw).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(raw).into_owned())
            })
        });
        let mut doc = serde_json::to_value(&record).unwrap_or_default();
        if let Some(map) = doc.as_object_mut() {
            map.insert(
                "response".into(),
                response.unwrap_or(serde_json::Value::Null),
            );
        }
        let body = doc.to_string();
        self.seal(session, ctx, 200).await;
        let mut resp = ResponseHeader::build(200, Some(4))?;
        resp.insert_header("content-type", "application/json")?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("cache-control", "no-store")?;
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await?;
        Ok(true)
    }

    async fn internal_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        what: &str,
    ) -> Result<bool> {
        if let Some(id) = what.strip_prefix("deferred/") {
            if session.req_header().method == http::Method::GET
                && id.starts_with("dfr_")
                && id.len() <= 64
                && !id.contains('/')
            {
                return self.deferred_state(session, ctx, id).await;
            }
        }
        let (status, body) = match what {
            "health/live" => (200, r#"{"status":"live"}"#),
            "health/ready" if self.gw.lifecycle.is_ready() => (200, r#"{"status":"ready"}"#),
            "health/ready" => (503, r#"{"status":"not-ready"}"#),
            _ => {
                return self
                    .answer(session, ctx, Problem::NotFound, "no such gateway endpoint")
                    .await
            }
        };
        let mut resp = ResponseHeader::build(status, Some(4))?;
        resp.insert_header("content-type", "application/json")?;
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("cache-control", "no-store")?;
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
            .await?;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for ChasquiProxy {
    type CTX = RequestCtx;

    /// No downstream modules: the gateway does not compress answers, and an
    /// idle module still costs work on every request.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        let table = self.gw.table.load_full();
        RequestCtx {
            request_id: new_request_id(),
            started: Instant::now(),
            policy: table.policy.clone(),
            table,
            svc: None,
            cache_key: None,
            cache_fill: None,
            routed: None,
            problem: None,
            tried: Vec::new(),
            body_bytes: 0,
            plugins: None,
            plugin_answer: None,
            prebuffered: None,
            deferrable: false,
            answered_by_plugin: None,
            upstream_connected: false,
            received_at_us: crate::oprecords::now_us(),
            sent_upstream_at_us: None,
            upstream_answered_at_us: None,
            record_route: None,
            consumer: None,
            trace: None,
            sealed: false,
            head_record: None,
            direct: false,
            held_answer: None,
            answer_held: false,
            _inflight: self.gw.lifecycle.enter(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.trace = Some(RequestTrace::from_traceparent(
            session
                .req_header()
                .headers
                .get("traceparent")
                .map(|v| v.as_bytes()),
            self.gw.telemetry.enabled(),
        ));
        // Before routing, the loosest limits of any scope: the service's own
        // are checked once it is known.
        let limits = &ctx.table.loosest;
        let req = session.req_header();
        if req.headers.len() > limits.max_request_headers
            || head_size(req) > limits.max_request_header_bytes
        {
            let detail = format!(
                "the request head is limited to {} bytes and {} fields",
                limits.max_request_header_bytes, limits.max_request_headers
            );
            return self
                .answer(session, ctx, Problem::HeadersTooLarge, &detail)
                .await;
        }
        let declared_len = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared_len.is_some_and(|n| n > limits.max_request_body_bytes) {
            let detail = format!(
                "the request body is limited to {} bytes",
                limits.max_request_body_bytes
            );
            return self
                .answer(session, ctx, Problem::PayloadTooLarge, &detail)
                .await;
        }

        let route = match path::parse(req.uri.path().as_bytes()) {
            Ok(Parsed::Route(route)) => route,
            Ok(Parsed::Internal(what)) => return self.internal_endpoint(session, ctx, &what).await,
            Ok(Parsed::NoRoute) => {
                return self
                    .answer(
                        session,
                        ctx,
                        Problem::NotFound,
                        "catalog services live at /{entidad}/v{n}/...",
                    )
                    .await
            }
            Err(e) => {
                return self
                    .answer(session, ctx, Problem::BadPath, &e.to_string())
                    .await
            }
        };
        let query = req.uri.query().map(str::to_owned);
        ctx.record_route = Some((
            smol_str::format_smolstr!("{}/v{}", route.entity, route.version),
            SmolStr::from(crate::oprecords::route_template(&route.rest)),
        ));

        let table = self.gw.routes.load();
        let Some(service) = table.service(&route.entity, route.version).cloned() else {
            let detail = format!(
                "no service is published at /{}/v{}/",
                route.entity, route.version
            );
            return self
                .answer(session, ctx, Problem::UnknownService, &detail)
                .await;
        };

        let authorization = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let consumer = match self.gw.tokens.authenticate(authorization).await {
            Ok(consumer) => consumer,
            Err((problem, detail)) => return self.answer(session, ctx, problem, detail).await,
        };
        let env = consumer.environment;
        ctx.consumer = Some(consumer.clone());
        if route.fake && env != Environment::Pruebas {
            return self
                .answer(
                    session,
                    ctx,
                    Problem::EnvironmentMismatch,
                    "/fake/ is the test environment; use a test (chq_test_) token there",
                )
                .await;
        }
        if !table.granted(consumer.consumer_id, service.id, env) {
            let detail = format!(
                "{}/{} holds no grant for {} in {}",
                consumer.entity_code, consumer.consumer_code, service.route_name, env
            );
            return self.answer(session, ctx, Problem::NoGrant, &detail).await;
        }
        let Some(pool) = service.pool(env).cloned() else {
            let detail = format!("{} is not enabled in {}", service.route_name, env);
            return self
                .answer(session, ctx, Problem::EnvironmentUnavailable, &detail)
                .await;
        };
        let mut upstream_path = route.rest;
        if let Some(q) = query {
            upstream_path.push('?');
            upstream_path.push_str(&q);
        }
        let svc = ctx
            .table
            .service(service.id)
            .unwrap_or_else(|| ctx.table.fallback())
            .clone();
        ctx.svc = Some(svc.clone());
        let limits = &svc.settings.limits;
        let req = session.req_header();
        if req.headers.len() > limits.max_request_headers
            || head_size(req) > limits.max_request_header_bytes
        {
            let detail = format!(
                "a request to {} is limited to {} bytes and {} fields of head",
                service.route_name, limits.max_request_header_bytes, limits.max_request_headers
            );
            return self
                .answer(session, ctx, Problem::HeadersTooLarge, &detail)
                .await;
        }
        if declared_len.is_some_and(|n| n > limits.max_request_body_bytes) {
            let detail = format!(
                "a request body to {} is limited to {} bytes",
                service.route_name, limits.max_request_body_bytes
            );
            return self
                .answer(session, ctx, Problem::PayloadTooLarge, &detail)
                .await;
        }
        if let Some(limits) = svc.rate.as_ref() {
            if let Err(refusal) = limits.check(consumer.consumer_id, service.id) {
                let detail = format!(
                    "{}/{} is over its rate limit for {}; retry in {} s",
                    consumer.entity_code,
                    consumer.consumer_code,
                    service.route_name,
                    refusal.retry_after_secs
                );
                let headers = [
                    ("retry-after", refusal.retry_after_secs.to_string()),
                    ("ratelimit-policy", refusal.policy_header),
                    ("ratelimit", refusal.limit_header),
                ];
                return self
                    .answer_with_headers(session, ctx, Problem::RateLimited, &detail, &headers)
                    .await;
            }
        }
        if let Err(refusal) = self.gw.quotas.admit(
            consumer.consumer_id,
            service.id,
            &svc.settings.quota,
            chasqui_catalog::model::now_unix(),
        ) {
            let detail = format!(
                "{}/{} spent its {} quota of {} requests to {}; it renews in {} s",
                consumer.entity_code,
                consumer.consumer_code,
                if refusal.period == "day" {
                    "daily"
                } else {
                    "monthly"
                },
                refusal.limit,
                service.route_name,
                refusal.retry_after_secs
            );
            let headers = [
                ("retry-after", refusal.retry_after_secs.to_string()),
                ("ratelimit-policy", refusal.policy_header),
                ("ratelimit", refusal.limit_header),
            ];
            return self
                .answer_with_headers(session, ctx, Problem::QuotaExhausted, &detail, &headers)
                .await;
        }
        if let Some(why) = &svc.broken {
            let detail = format!(
                "the plugin chain of {} is unavailable: {why}",
                service.route_name
            );
            return self
                .answer(session, ctx, Problem::PluginFailed, &detail)
                .await;
        }

        // Identity fields are the gateway's to set: drop any the client sent
        // before plugins run (plugins may then set their own).
        let forged: Vec<http::HeaderName> = session
            .req_header()
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with(IDENTITY_PREFIX))
            .cloned()
            .collect();
        for name in forged {
            session.req_header_mut().remove_header(&name);
        }

        // Routed from here on, so that the access log names the service and
        // consumer of a request a plugin answers.
        ctx.routed = Some(Routed {
            service: service.clone(),
            pool,
            env,
            consumer: consumer.clone(),
            upstream_path,
        });
        let chain = match ctx.table.service(service.id) {
            Some(known) => known.chain.clone(),
            // A service newer than the table: the global chain, never none.
            None => ctx.table.plugins.chain_for(&service.route_name),
        };
        if let Some(chain) = chain {
            let context = Arc::new(CallContext {
                request: RequestContext {
                    consumer_entity: Some(consumer.entity_code.clone()),
                    consumer_system: Some(consumer.consumer_code.clone()),
                    service: service.route_name.clone(),
                    environment: env.as_str().to_string(),
                    request_id: ctx.request_id.to_string(),
                    trace_id: ctx.trace.as_ref().map(|t| t.trace_id.clone()),
                },
                client_address: session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.ip().to_string()),
            });
            let mut run = match PluginRun::start(&chain, &context) {
                Ok(run) => run,
                Err((problem, detail)) => return self.answer(session, ctx, problem, &detail).await,
            };
            if ctx.trace.as_ref().is_some_and(RequestTrace::collecting) {
                run.collect_timings();
            }
            let outcome = run.request_headers(session.req_header_mut());
            ctx.plugins = Some(run);
            match outcome {
                Outcome::Continue => {}
                Outcome::Answer(answer) => {
                    ctx.answered_by_plugin = Some(answer.status);
                    self.seal(session, ctx, answer.status).await;
                    stage::write_answer(session, &answer, &ctx.request_id).await?;
                    return Ok(true);
                }
                Outcome::Fail(problem, detail) => {
                    return self.answer(session, ctx, problem, &detail).await
                }
            }
        }
        if self.contract_and_cache(session, ctx).await? {
            return Ok(true);
        }
        let deferrable =
            ctx.policy.store_and_forward.as_ref().is_some_and(|p| {
                p.applies(&service.route_name, session.req_header().method.as_str())
            });
        if deferrable {
            return self.prepare_deferrable(session, ctx).await;
        }
        if ctx
            .plugins
            .as_ref()
            .is_some_and(|r| r.handles(Phase::RequestBody))
            && declared_len.is_some_and(|n| n > 0 && n <= PREBUFFER_MAX as u64)
        {
            // A body plugin may answer on its own (a test environment, a
            // validation error): give it the whole body before any upstream
            // is chosen or connected.
            let max = PREBUFFER_MAX;
            if self.prebuffer_body(session, ctx, max).await? {
                return Ok(true);
            }
        }
        if self.direct && Self::direct_eligible(session, ctx) {
            return self.direct_exchange(session, ctx).await;
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(whole) = &ctx.prebuffered {
            // Read, checked and run through the plugins in request_filter:
            // send that version, whole, with the last chunk (pingora replays
            // its retry buffer here, again on a retry).
            *body = (end_of_stream && !whole.is_empty()).then(|| whole.clone());
            return Ok(());
        }
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            let max = body_limit(ctx);
            if ctx.body_bytes > max {
                return Err(fail(
                    ctx,
                    Problem::PayloadTooLarge,
                    format!("the request body is limited to {max} bytes"),
                ));
            }
        }
        let has_body = body.is_some() || ctx.body_bytes > 0;
        if let Some(run) = ctx
            .plugins
            .as_mut()
            .filter(|r| has_body && r.handles(Phase::RequestBody))
        {
            match run.request_body(body, end_of_stream) {
                Outcome::Continue => {}
                Outcome::Answer(answer) => {
                    ctx.plugin_answer = Some(answer);
                    return Err(fail(ctx, Problem::PluginFailed, "answered by a plugin"));
                }
                Outcome::Fail(problem, detail) => return Err(fail(ctx, problem, detail)),
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(routed) = ctx.routed.as_ref() else {
            return Err(fail(
                ctx,
                Problem::Internal,
                "request reached upstream selection unrouted",
            ));
        };
        let pool = routed.pool.clone();
        let Some(index) = pool.select(&ctx.tried) else {
            if ctx.tried.is_empty() {
                let detail = format!(
                    "every upstream of {} in {} is failing its health checks",
                    routed.service.route_name, routed.env
                );
                return Err(fail(ctx, Problem::NoHealthyUpstream, detail));
            }
            // Retries exhausted the healthy backends: answer with the last failure.
            let (problem, detail) = ctx
                .problem
                .clone()
                .unwrap_or((Problem::UpstreamUnreachable, String::new()));
            return Err(fail(ctx, problem, detail));
        };
        ctx.tried.push(index);
        let backend = &pool.backends[index];
        let up = upstream_settings(ctx);
        let mut peer = HttpPeer::new(backend.addr, backend.tls, backend.sni.clone());
        // The catalog's per-environment timeouts win over policy.
        let connect_timeout = pool
            .connect_timeout
            .unwrap_or(Duration::from_millis(up.connect_timeout_ms));
        peer.options.connection_timeout = Some(connect_timeout);
        peer.options.total_connection_timeout = Some(connect_timeout);
        peer.options.read_timeout = Some(
            pool.read_timeout
                .unwrap_or(Duration::from_millis(up.read_timeout_ms)),
        );
        peer.options.write_timeout = Some(Duration::from_millis(up.write_timeout_ms));
        peer.options.idle_timeout = Some(Duration::from_millis(up.idle_timeout_ms));
        peer.options.ca = pool.ca.clone();
        // Pooled connections are shared only within one service environment:
        // the pool key does not cover the trusted CA, and a connection
        // verified under one service's CA must never serve another service.
        peer.group_key =
            (routed.service.id as u64) << 1 | u64::from(routed.env == Environment::Produccion);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let head = UpstreamHead::compute(session, ctx)?;
        upstream_head::apply(
            head,
            upstream,
            body_plugin(ctx),
            ctx.prebuffered.as_ref().map(|b| b.len()),
        )?;
        ctx.sent_upstream_at_us = Some(crate::oprecords::now_us());
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.sent_upstream_at_us.is_some() {
            ctx.upstream_answered_at_us = Some(crate::oprecords::now_us());
        }
        // pingora's general loop ends an answer the upstream declared empty
        // with its head, without calling `response_body_filter`: the
        // plugins' end-of-body call runs here instead (the direct exchange
        // makes that call itself).
        let ends_with_head =
            !ctx.direct && ctx.plugins.is_some() && declared_empty(session.req_header(), response);
        if let Some(run) = ctx.plugins.as_mut() {
            if run.handles(Phase::ResponseHeaders) {
                if let Outcome::Fail(problem, detail) = run.response_headers(response) {
                    return Err(fail(ctx, problem, detail));
                }
            }
            if run.replacement_body.is_none()
                && run.handles(Phase::ResponseBody)
                && !status_has_no_body(response.status)
            {
                // A plugin may change the body's length: chunked, so that an
                // HTTP/1.1 connection stays reusable (pingora would otherwise
                // delimit the body by closing it; HTTP/2 drops the field).
                // Not for answers that carry no body by their status: they
                // must not have body framing (RFC 9112, 6.1 and 6.3).
                response.remove_header(&http::header::CONTENT_LENGTH);
                if session.req_header().version == http::Version::HTTP_11 {
                    response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
                }
            }
        }
        if let Some(svc) = ctx.svc.as_ref().filter(|_| ctx.cache_key.is_some()) {
            let cache = &svc.settings.cache;
            let declared = response
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            let storable = response.status.as_u16() == 200
                && (cache.allow_personalised
                    || !crate::respcache::uncacheable_response(&response.headers))
                && declared.is_none_or(|n| n <= cache.max_entry_bytes);
            if storable {
                ctx.cache_fill = Some(CacheFill {
                    status: 200,
                    headers: response
                        .headers
                        .iter()
                        .filter(|(k, _)| crate::respcache::replayable(k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    body: bytes::BytesMut::new(),
                    max: cache.max_entry_bytes,
                });
            }
            response.insert_header("x-cache", "miss")?;
        }
        if response.status != http::StatusCode::SWITCHING_PROTOCOLS {
            strip_response_hop_by_hop(response);
        }
        response.insert_header("x-request-id", ctx.request_id.as_str())?;
        self.seal(session, ctx, response.status.as_u16()).await;
        if ends_with_head {
            let mut body = None;
            self.response_body_filter(session, &mut body, true, ctx)?;
            if let Some(body) = body.filter(|b| !b.is_empty()) {
                // The plugins made a body that pingora's loop would not
                // send: the answer is held and written whole by
                // `fail_to_proxy`, reached through this error.
                let mut head = Box::new(response.clone());
                head.remove_header(&http::header::TRANSFER_ENCODING);
                head.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
                ctx.held_answer = Some((head, body));
                ctx.answer_held = true;
                return Err(Error::explain(
                    ErrorType::Custom("answer held"),
                    "the plugins gave a body to an answer the upstream declared empty",
                ));
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(run) = ctx.plugins.as_mut() {
            if run.replacement_body.is_some() || run.handles(Phase::ResponseBody) {
                match run.response_body(body, end_of_stream) {
                    Outcome::Continue => {}
                    // The response has begun: the only honest thing left is to abort it.
                    Outcome::Answer(_) => {
                        return Err(fail(
                            ctx,
                            Problem::PluginFailed,
                            "a plugin answered after the response began",
                        ))
                    }
                    Outcome::Fail(problem, detail) => return Err(fail(ctx, problem, detail)),
                }
                if run.replacement_body.is_some() {
                    // A plugin's own answer is not the service's: not cached.
                    ctx.cache_fill = None;
                }
            }
        }
        // The cache keeps what the client gets, after the plugins.
        if let Some(fill) = ctx.cache_fill.as_mut() {
            if let Some(chunk) = body.as_ref() {
                if fill.body.len() + chunk.len() > fill.max {
                    ctx.cache_fill = None;
                    return Ok(None);
                }
                fill.body.extend_from_slice(chunk);
            }
        }
        if end_of_stream {
            // Stored before the last chunk is written: a client that repeats
            // the call as soon as it has the answer finds it (filling it
            // after the answer, in `logging`, raced such a client).
            if let (Some(key), Some(fill)) = (ctx.cache_key.take(), ctx.cache_fill.take()) {
                let ttl = ctx.svc.as_ref().map_or(0, |s| s.settings.cache.ttl_ms);
                // A fill still here at the end holds the whole body (one
                // over its bound was dropped on the way).
                if ttl > 0 {
                    ctx.table.cache.put(
                        key,
                        fill.status,
                        fill.headers,
                        fill.body.freeze(),
                        Duration::from_millis(ttl),
                    );
                }
            }
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(routed) = ctx.routed.as_ref() else {
            e.set_retry(false);
            return e;
        };
        if let Some(&index) = ctx.tried.last() {
            routed.pool.backends[index].health.record_connect_failure();
        }
        let problem = classify(&e).unwrap_or(Problem::UpstreamUnreachable);
        let detail = match problem {
            Problem::UpstreamTimeout => format!(
                "the upstream of {} did not accept the connection in time",
                routed.service.route_name
            ),
            _ => format!(
                "the upstream of {} refused the connection",
                routed.service.route_name
            ),
        };
        // Nothing was sent, so any method may go to another upstream.
        let retry = ctx.tried.len() <= usize::from(upstream_settings(ctx).retries)
            && routed.pool.has_candidate(&ctx.tried);
        ctx.problem = Some((problem, detail));
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if ctx.answer_held {
            // Not a failure: the answer is complete and waits to be written.
            e.set_retry(false);
            return e;
        }
        if matches!(e.etype(), ErrorType::HTTPStatus(_)) && ctx.problem.is_some() {
            // The gateway's own refusal (`fail`: a plugin failing on the
            // answer, say), not the upstream's failure: the upstream did its
            // part, and another attempt would send the call twice.
            e.set_retry(false);
            return e;
        }
        // The request may have reached the upstream: only idempotent methods
        // whose body is still fully buffered may be sent again.
        let Some(routed) = ctx.routed.as_ref() else {
            e.set_retry(false);
            return e;
        };
        let resendable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if resendable && client_reused && matches!(e.retry, pingora_error::RetryType::ReusedOnly) {
            // A pooled connection the upstream had closed while idle (the
            // connection ended before any answer): not the upstream's
            // failure, nor an attempt. The same upstream again, on another
            // connection.
            ctx.tried.pop();
            e.set_retry(true);
            return e;
        }
        let retry = resendable
            && ctx.tried.len() <= usize::from(upstream_settings(ctx).retries)
            && routed.pool.has_candidate(&ctx.tried);
        if ctx.problem.is_none() || retry {
            let problem = classify(&e).unwrap_or(Problem::UpstreamError);
            let detail = match problem {
                Problem::UpstreamTimeout => format!(
                    "the upstream of {} did not answer in time",
                    routed.service.route_name
                ),
                _ => format!(
                    "the upstream of {} broke the exchange",
                    routed.service.route_name
                ),
            };
            ctx.problem = Some((problem, detail));
        }
        e.set_retry(retry);
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_connected = true;
        Ok(())
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _error: &Error) -> bool {
        // A held answer went out whole: nothing failed.
        ctx.answer_held
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if let Some((head, body)) = ctx.held_answer.take() {
            return write_held_answer(session, head, body).await;
        }
        let unreachable = matches!(
            ctx.problem.as_ref().map(|(p, _)| *p),
            Some(
                Problem::UpstreamUnreachable
                    | Problem::UpstreamTimeout
                    | Problem::NoHealthyUpstream
            )
        );
        if ctx.deferrable
            && ctx.prebuffered.is_some()
            && !ctx.upstream_connected
            && unreachable
            && session.response_written().is_none()
        {
            // Nothing reached an upstream: keep the request and deliver it later.
            match self.defer(session, ctx).await {
                Ok(_) => {
                    return FailToProxy {
                        error_code: 202,
                        can_reuse_downstream: true,
                    }
                }
                Err(write_err) => {
                    tracing::debug!(error = %write_err, "could not answer a deferred request");
                    return FailToProxy {
                        error_code: 0,
                        can_reuse_downstream: false,
                    };
                }
            }
        }
        let (problem, detail) = match ctx.problem.clone() {
            Some(found) => found,
            None => match classify(e) {
                Some(p) => (p, String::new()),
                // The client's connection is gone: nobody to answer.
                None => {
                    return FailToProxy {
                        error_code: 0,
                        can_reuse_downstream: false,
                    }
                }
            },
        };
        if session.response_written().is_none() {
            if let Some(answer) = ctx.plugin_answer.take() {
                let status = answer.status;
                // Not a failure: a plugin answered from a body phase.
                ctx.answered_by_plugin = Some(status);
                ctx.problem = None;
                self.seal(session, ctx, status).await;
                if let Err(write_err) = stage::write_answer(session, &answer, &ctx.request_id).await
                {
                    tracing::debug!(error = %write_err, "could not write the plugin's answer");
                }
                return FailToProxy {
                    error_code: status,
                    can_reuse_downstream: false,
                };
            }
            self.seal(session, ctx, problem.status()).await;
            if let Err(write_err) =
                problem::respond(session, problem, &detail, &ctx.request_id).await
            {
                tracing::debug!(error = %write_err, "could not write the problem answer");
            }
        }
        FailToProxy {
            error_code: problem.status(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.gw.metrics.record(
            ctx.routed
                .as_ref()
                .map(|r| (r.service.route_name.as_str(), r.env)),
            session.response_written().map_or(0, |r| r.status.as_u16()),
            ctx.started.elapsed(),
            ctx.body_bytes,
            session.body_bytes_sent() as u64,
        );
        // Health probes are not calls: they would drown the record.
        let probe = session
            .req_header()
            .uri
            .path()
            .starts_with("/_chasqui/health/");
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if !probe && self.gw.metering {
            let response_bytes = session.body_bytes_sent() as u64;
            let now = crate::oprecords::now_us();
            let record = match ctx.head_record.take() {
                Some(mut head) => {
                    complete_record(&mut head, ctx, status, response_bytes, now);
                    head
                }
                None => record_of(session, ctx, status, response_bytes, now),
            };
            if !ctx.sealed {
                // No answer head went through `seal` (the client left, or
                // pingora answered on its own): the exchange still goes in
                // the ledger, batched.
                ctx.sealed = true;
                let head = OperationalRecord {
                    response_bytes: 0,
                    answered_at_us: ctx.received_at_us,
                    ..record.clone()
                };
                let digest = crate::ledger::exchange_digest(&head);
                self.gw.ledger.append_exchange(&ctx.request_id, &digest);
            }
            self.gw.records.record(record);
        }
        if !probe && self.gw.telemetry.enabled() {
            self.export_spans(session, ctx, status);
        }
        if !self.gw.access_log {
            return;
        }
        let routed = ctx.routed.as_ref();
        tracing::info!(
            target: "chasqui::access",
            request_id = %ctx.request_id,
            trace_id = ctx.trace.as_ref().map_or("-", |t| t.trace_id.as_str()),
            method = %session.req_header().method,
            service = routed.map_or("-", |r| r.service.route_name.as_str()),
            environment = routed.map_or("-", |r| r.env.as_str()),
            consumer = %routed.map_or_else(|| "-".to_string(), |r| format!("{}/{}", r.consumer.entity_code, r.consumer.consumer_code)),
            status,
            problem = ctx.problem.as_ref().map_or("-", |(p, _)| p.parts().1),
            plugin_answer = ctx.answered_by_plugin.unwrap_or(0),
            attempts = ctx.tried.len(),
            duration_us = ctx.started.elapsed().as_micros() as u64,
            // A held answer's error only carried it to `fail_to_proxy`.
            error = e
                .filter(|_| !ctx.answer_held)
                .map(|e| e.etype().as_str())
                .unwrap_or("-"),
        );
    }
}

impl ChasquiProxy {
    /// Hands the request's spans to the exporter: the request span, its
    /// plugin calls and the upstream call.
    fn export_spans(&self, session: &Session, ctx: &mut RequestCtx, status: u16) {
        // The trace id stays in the context for the access log.
        let Some(kept) = ctx.trace.as_mut() else {
            return;
        };
        let spans = kept.spans.take();
        let mut trace = kept.clone();
        trace.spans = spans;
        let now = crate::oprecords::now_us();
        if let Some(run) = ctx.plugins.as_mut() {
            for t in run.take_timings() {
                trace.child(
                    format!("plugin {} {}", t.plugin, t.phase),
                    SpanKind::Internal,
                    None,
                    t.times,
                    vec![
                        ("chasqui.plugin", t.plugin),
                        ("chasqui.phase", t.phase.into()),
                    ],
                    t.failed,
                );
            }
        }
        let service = ctx.routed.as_ref().map_or_else(
            || {
                ctx.record_route
                    .as_ref()
                    .map(|r| r.0.to_string())
                    .unwrap_or_default()
            },
            |r| r.service.route_name.clone(),
        );
        if let Some(sent) = ctx.sent_upstream_at_us {
            let mut attributes = vec![("chasqui.service", service.clone())];
            if ctx.upstream_answered_at_us.is_some() {
                attributes.push(("http.response.status_code", status.to_string()));
            }
            attributes.push(("chasqui.attempts", ctx.tried.len().to_string()));
            trace.child(
                format!("upstream {service}"),
                SpanKind::Client,
                Some(trace.upstream_span_id),
                (sent, ctx.upstream_answered_at_us.unwrap_or(now)),
                attributes,
                ctx.upstream_answered_at_us.is_none(),
            );
        }
        let method = session.req_header().method.as_str();
        let route = ctx.record_route.as_ref().map_or("", |r| r.1.as_str());
        let mut attributes = vec![
            ("http.request.method", method.to_string()),
            ("http.route", format!("/{service}{route}")),
            ("http.response.status_code", status.to_string()),
            ("chasqui.request_id", ctx.request_id.to_string()),
        ];
        if let Some(consumer) = &ctx.consumer {
            attributes.push(("chasqui.environment", consumer.environment.as_str().into()));
            attributes.push((
                "chasqui.consumer",
                format!("{}/{}", consumer.entity_code, consumer.consumer_code),
            ));
        }
        if let Some((problem, _)) = &ctx.problem {
            attributes.push(("chasqui.problem", problem.parts().1.to_string()));
        }
        let root = Span {
            name: format!("{method} {service}"),
            kind: SpanKind::Server,
            span_id: trace.span_id,
            parent: trace.parent,
            start_us: ctx.received_at_us,
            end_us: now.max(ctx.received_at_us),
            attributes,
            error: status >= 500 || status == 0,
        };
        self.gw.telemetry.submit(trace, root);
    }
}

/// The operational record of a request that answered `status`: at the
/// answer's head (`response_bytes` 0, see [`crate::ledger::exchange_digest`])
/// or at its end.
fn record_of(
    session: &Session,
    ctx: &RequestCtx,
    status: u16,
    response_bytes: u64,
    answered_at_us: i64,
) -> OperationalRecord {
    let routed = ctx.routed.as_ref();
    let consumer = routed.map(|r| &r.consumer).or(ctx.consumer.as_ref());
    // Strings up to 23 bytes are inline (codes, service, route, method),
    // the environment and the problem slug static, the request id shared:
    // for the usual call the record costs the request path no allocation
    // (a trace id or a long route does), and the writer's thread no free
    // of memory another thread allocated.
    let (service, route) = ctx.record_route.clone().unwrap_or_default();
    let mut record = OperationalRecord {
        request_id: ctx.request_id.clone(),
        trace_id: ctx.trace.as_ref().map(|t| SmolStr::new(&t.trace_id)),
        consumer_entity: consumer.map_or_else(SmolStr::default, |c| SmolStr::new(&c.entity_code)),
        consumer_system: consumer.map_or_else(SmolStr::default, |c| SmolStr::new(&c.consumer_code)),
        service: routed.map_or(service, |r| SmolStr::new(&r.service.route_name)),
        route,
        environment: routed
            .map(|r| r.env)
            .or(consumer.map(|c| c.environment))
            .map_or_else(SmolStr::default, |e| SmolStr::new_static(e.as_str())),
        method: SmolStr::new(session.req_header().method.as_str()),
        received_at_us: ctx.received_at_us,
        // The request's progress, filled in below.
        status: 0,
        request_bytes: 0,
        response_bytes: 0,
        sent_upstream_at_us: None,
        upstream_answered_at_us: None,
        answered_at_us: 0,
        plugin_outcome: SmolStr::default(),
        error_type: SmolStr::default(),
    };
    complete_record(&mut record, ctx, status, response_bytes, answered_at_us);
    record
}

/// Sets the fields of a record that follow the request's progress (status,
/// sizes, times, plugin answer, problem): when [`record_of`] makes it, and
/// again at the end on the record made when the answer's head was sealed.
fn complete_record(
    record: &mut OperationalRecord,
    ctx: &RequestCtx,
    status: u16,
    response_bytes: u64,
    answered_at_us: i64,
) {
    record.status = status;
    record.request_bytes = ctx.body_bytes;
    record.response_bytes = response_bytes;
    record.sent_upstream_at_us = ctx.sent_upstream_at_us;
    record.upstream_answered_at_us = ctx.upstream_answered_at_us;
    record.answered_at_us = answered_at_us.max(ctx.received_at_us);
    record.plugin_outcome = ctx
        .answered_by_plugin
        .map_or_else(SmolStr::default, |s| smol_str::format_smolstr!("{s}"));
    record.error_type = ctx
        .problem
        .as_ref()
        .map_or_else(SmolStr::default, |(p, _)| SmolStr::new_static(p.parts().1));
}

/// The field names a `Connection` field lists (RFC 9110, 7.6.1).
fn connection_nominated(headers: &http::HeaderMap) -> Vec<http::HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Whether pingora's HTTP/1 client takes this answer as ended with its
/// head although it could carry a body: the upstream declared
/// `Content-Length: 0` (a `HEAD`, `1xx`, `204` or `304` answer has no body
/// to make).
fn declared_empty(request: &RequestHeader, response: &ResponseHeader) -> bool {
    request.method != http::Method::HEAD
        && !status_has_no_body(response.status)
        && response
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes().trim_ascii() == b"0")
}

/// Whether an answer of this status carries no body, whatever its fields
/// say (RFC 9110, 6.4.1): `1xx`, `204`, `304`.
fn status_has_no_body(status: http::StatusCode) -> bool {
    status.is_informational() || matches!(status.as_u16(), 204 | 304)
}

/// Writes an answer held by `response_filter` (see `RequestCtx::held_answer`);
/// the client's connection stays reusable when its request was read whole.
async fn write_held_answer(
    session: &mut Session,
    head: Box<ResponseHeader>,
    body: Bytes,
) -> FailToProxy {
    let status = head.status.as_u16();
    let written = match session.write_response_header(head, false).await {
        Ok(()) => session.write_response_body(Some(body), true).await,
        Err(e) => Err(e),
    };
    match written {
        Ok(()) => FailToProxy {
            error_code: status,
            can_reuse_downstream: session.is_body_done(),
        },
        Err(e) => {
            tracing::debug!(error = %e, "could not write a held answer");
            FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            }
        }
    }
}

/// Drops the upstream's hop-by-hop fields from its answer: those its
/// `Connection` field names and the standard ones. pingora's downstream
/// session sets the client's `Connection` and the framing itself.
fn strip_response_hop_by_hop(response: &mut ResponseHeader) {
    if !response.headers.contains_key(http::header::CONNECTION) {
        // The common answer: only `keep-alive` could be left to drop.
        if response.headers.contains_key("keep-alive") {
            response.remove_header("keep-alive");
        }
        return;
    }
    for name in connection_nominated(&response.headers) {
        // Framing stays: pingora reads it to frame the answer to the client.
        if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
            response.remove_header(&name);
        }
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        if response.headers.contains_key(name) {
            response.remove_header(name);
        }
    }
}

/// Maps a pingora error to the problem a client should see; `None` when
/// the client's own connection failed and no answer can be sent.
fn classify(e: &Error) -> Option<Problem> {
    use ErrorType::*;
    Some(match (e.etype(), e.esource()) {
        (HTTPStatus(413), _) => Problem::PayloadTooLarge,
        (HTTPStatus(431), _) => Problem::HeadersTooLarge,
        (HTTPStatus(code), ErrorSource::Upstream) if *code >= 500 => Problem::UpstreamError,
        (HTTPStatus(code), _) if (400..500).contains(code) => Problem::BadRequest,
        (
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout,
            ErrorSource::Upstream,
        ) => Problem::UpstreamTimeout,
        (ConnectTimedout, _) => Problem::UpstreamTimeout,
        (
            ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure | InvalidCert
            | HandshakeError | SocketError,
            _,
        ) => Problem::UpstreamUnreachable,
        (_, ErrorSource::Upstream) => Problem::UpstreamError,
        (
            ReadError | WriteError | ConnectionClosed | ReadTimedout | WriteTimedout,
            ErrorSource::Downstream,
        ) => return None,
        (_, ErrorSource::Downstream) => Problem::BadRequest,
        _ => Problem::Internal,
    })
}

/// The header fields a deferred request takes upstream: the client's (after
/// the plugins), without hop-by-hop fields and the token, plus the identity
/// fields the gateway sets.
fn deferred_headers(
    req: &RequestHeader,
    routed: &Routed,
    request_id: &str,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !STRIPPED_REQUEST_HEADERS.contains(&name)
                && !matches!(
                    name,
                    "host" | "content-length" | "transfer-encoding" | "expect"
                )
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    let consumer = &routed.consumer;
    headers.extend([
        (
            "x-chasqui-consumer-entity".into(),
            consumer.entity_code.clone(),
        ),
        (
            "x-chasqui-consumer-system".into(),
            consumer.consumer_code.clone(),
        ),
        (
            "x-chasqui-environment".into(),
            routed.env.as_str().to_string(),
        ),
        (
            "x-chasqui-service".into(),
            routed.service.route_name.clone(),
        ),
        ("x-request-id".into(), request_id.to_string()),
    ]);
    headers
}

/// The request body limit of the routed service (the global one before
/// routing).
fn body_limit(ctx: &RequestCtx) -> u64 {
    ctx.svc
        .as_ref()
        .map_or(ctx.policy.limits.max_request_body_bytes, |s| {
            s.settings.limits.max_request_body_bytes
        })
}

/// The upstream settings of the routed service.
fn upstream_settings(ctx: &RequestCtx) -> crate::policy::scope::ServiceUpstream {
    match ctx.svc.as_ref() {
        Some(s) => s.settings.upstream.clone(),
        None => crate::policy::scope::ServiceUpstream {
            connect_timeout_ms: ctx.policy.upstream.connect_timeout_ms,
            read_timeout_ms: ctx.policy.upstream.read_timeout_ms,
            write_timeout_ms: ctx.policy.upstream.write_timeout_ms,
            idle_timeout_ms: ctx.policy.upstream.idle_timeout_ms,
            retries: ctx.policy.upstream.retries,
        },
    }
}
