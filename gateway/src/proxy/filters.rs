//! Native filters of the request path set by policy per service: contract
//! validation of request and response bodies, and the response cache.
//!
//! They run after authentication, the grant check, rate limits, quotas and
//! the request-header plugins, in this order: request validation (reads the
//! body whole, up to 64 KiB, and runs the request-body plugins on it first),
//! cache lookup, then, when the answer must be validated, the exchange with
//! the upstream done here rather than by pingora: an invalid answer must
//! become a 502 before any of it reaches the client, and pingora sends the
//! upstream's status before its body arrives.

use super::{deferred_headers, ChasquiProxy, RequestCtx, PREBUFFER_MAX};
use crate::plugin::Phase;
use crate::problem::{self, Problem};
use crate::respcache;
use crate::stage::{self, Outcome};
use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::time::Duration;

/// Largest upstream answer the gateway reads whole to validate it.
const MAX_VALIDATED_RESPONSE: usize = 4 << 20;

/// Response header fields not passed on from a validated exchange.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// What the validated exchange got from the upstream.
struct Fetched {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Bytes,
    sent_at_us: i64,
    answered_at_us: i64,
}

impl ChasquiProxy {
    /// Contract validation and the response cache. `Ok(true)`: answered.
    pub(super) async fn contract_and_cache(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<bool> {
        let Some(svc) = ctx.svc.clone() else {
            return Ok(false);
        };
        // Owned copies: reading the body below borrows the whole context.
        let Some((service_id, env, consumer_id, path)) = ctx.routed.as_ref().map(|r| {
            (
                r.service.id,
                r.env,
                r.consumer.consumer_id,
                r.upstream_path.clone(),
            )
        }) else {
            return Ok(false);
        };
        let method = session.req_header().method.clone();
        let validation = &svc.settings.validation;
        let contract = svc.contract.clone();

        // 1. The request body against the contract.
        if let Some(contract) = contract
            .as_ref()
            .filter(|c| validation.request && c.checks_request(method.as_str(), &path))
        {
            let max = PREBUFFER_MAX;
            if self.prebuffer_body(session, ctx, max).await? {
                return Ok(true);
            }
            let content_type = session
                .req_header()
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = ctx.prebuffered.clone();
            if let Err(v) = contract.check_request(
                method.as_str(),
                &path,
                content_type.as_deref(),
                body.as_deref(),
            ) {
                let at = if v.pointer.is_empty() {
                    "/"
                } else {
                    v.pointer.as_str()
                };
                let detail = format!(
                    "the request body breaks the contract at {at}: {}",
                    v.message
                );
                ctx.problem = Some((Problem::InvalidRequestBody, detail.clone()));
                problem::respond_with_members(
                    session,
                    Problem::InvalidRequestBody,
                    &detail,
                    &ctx.request_id,
                    &[("pointer", serde_json::Value::String(at.to_string()))],
                )
                .await?;
                return Ok(true);
            }
        }

        // 2. The cache.
        let cache = &svc.settings.cache;
        let safe = method == http::Method::GET || method == http::Method::HEAD;
        let req_headers = &session.req_header().headers;
        if cache.enabled
            && safe
            && !respcache::request_bypasses(req_headers)
            && (cache.allow_personalised || !respcache::personalised_request(req_headers))
        {
            let consumer = (!cache.shared).then_some(consumer_id);
            let key = respcache::key(
                service_id,
                env.as_str(),
                consumer,
                &path,
                &cache.vary,
                req_headers,
            );
            if let Some(hit) = ctx.table.cache.get(&key) {
                let mut resp = ResponseHeader::build(hit.status, Some(hit.headers.len() + 4))?;
                for (k, v) in &hit.headers {
                    resp.append_header(k.clone(), v.clone())?;
                }
                resp.insert_header("content-length", hit.body.len().to_string())?;
                resp.insert_header("age", hit.age_secs().to_string())?;
                resp.insert_header("x-cache", "hit")?;
                resp.insert_header("x-request-id", ctx.request_id.as_str())?;
                let head_only = method == http::Method::HEAD;
                session
                    .write_response_header(Box::new(resp), head_only)
                    .await?;
                if !head_only {
                    session
                        .write_response_body(Some(hit.body.clone()), true)
                        .await?;
                }
                return Ok(true);
            }
            // HEAD answers carry no body to keep.
            if method == http::Method::GET {
                ctx.cache_key = Some(key);
            }
        }

        // 3. The answer against the contract: the exchange is done here.
        if let Some(contract) = contract
            .as_ref()
            .filter(|c| validation.response && c.checks_response(method.as_str(), &path))
        {
            return self
                .validated_exchange(session, ctx, contract.clone())
                .await
                .map(|()| true);
        }
        Ok(false)
    }

    /// Sends the request to the upstream, reads the answer whole, checks it
    /// against the contract and answers: the answer (after the
    /// response plugins), or 502 naming where it breaks the contract.
    async fn validated_exchange(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        contract: std::sync::Arc<crate::contract::Contract>,
    ) -> pingora_error::Result<()> {
        if self.prebuffer_body(session, ctx, PREBUFFER_MAX).await? {
            return Ok(());
        }
        let Some(routed) = ctx.routed.as_ref() else {
            return self
                .answer(session, ctx, Problem::Internal, "unrouted exchange")
                .await
                .map(|_| ());
        };
        let method = session.req_header().method.clone();
        let path = routed.upstream_path.clone();
        let up = super::upstream_settings(ctx);
        let headers = deferred_headers(session.req_header(), routed, &ctx.request_id);
        let body = ctx.prebuffered.clone().unwrap_or_default();
        let pool = routed.pool.clone();
        let deferrals = self.gw.deferred.clone();
        let service = routed.service.route_name.clone();
        let attempts = usize::from(up.retries) + 1;
        let timeout = Duration::from_millis(up.read_timeout_ms);
        let (method_sent, path_sent) = (method.clone(), path.clone());
        let fetched = self
            .gw
            .control
            .spawn(async move {
                let (method, path) = (method_sent, path_sent);
                let mut tried = Vec::new();
                let mut last = (Problem::NoHealthyUpstream, format!("every upstream of {service} is failing its health checks"));
                while tried.len() < attempts {
                    let Some(index) = pool.select(&tried) else { break };
                    tried.push(index);
                    let backend = &pool.backends[index];
                    let client = match deferrals.client(pool.ca_pem.clone()) {
                        Ok(c) => c,
                        Err(e) => return Err((Problem::Internal, e)),
                    };
                    let scheme = if backend.tls { "https" } else { "http" };
                    let url = format!("{scheme}://{}{}{path}", backend.authority, backend.base_path);
                    let mut request = client
                        .request(method.clone(), &url)
                        .timeout(timeout)
                        .body(body.clone());
                    for (name, value) in &headers {
                        request = request.header(name.as_str(), value.as_str());
                    }
                    let sent_at_us = crate::oprecords::now_us();
                    match request.send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let headers = response
                                .headers()
                                .iter()
                                .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                                .collect();
                            let mut response = response;
                            let mut body = bytes::BytesMut::new();
                            loop {
                                match response.chunk().await {
                                    Ok(Some(chunk)) => {
                                        if body.len() + chunk.len() > MAX_VALIDATED_RESPONSE {
                                            return Err((Problem::UpstreamError, format!("the answer of {service} is larger than the {MAX_VALIDATED_RESPONSE} bytes contract validation reads")));
                                        }
                                        body.extend_from_slice(&chunk);
                                    }
                                    Ok(None) => break,
                                    Err(e) if e.is_timeout() => return Err((Problem::UpstreamTimeout, format!("the upstream of {service} did not answer in time"))),
                                    Err(e) => return Err((Problem::UpstreamError, format!("the upstream of {service} broke the exchange: {e}"))),
                                }
                            }
                            return Ok(Fetched {
                                status,
                                headers,
                                body: body.freeze(),
                                sent_at_us,
                                answered_at_us: crate::oprecords::now_us(),
                            });
                        }
                        Err(e) if e.is_connect() => {
                            // Nothing was sent: another upstream may take it.
                            backend.health.record_connect_failure();
                            last = (Problem::UpstreamUnreachable, format!("the upstream of {service} refused the connection"));
                        }
                        Err(e) if e.is_timeout() => {
                            return Err((Problem::UpstreamTimeout, format!("the upstream of {service} did not answer in time")))
                        }
                        Err(e) => {
                            return Err((Problem::UpstreamError, format!("the upstream of {service} broke the exchange: {e}")))
                        }
                    }
                }
                Err(last)
            })
            .await;
        let fetched = match fetched {
            Ok(Ok(f)) => f,
            Ok(Err((problem, detail))) => {
                return self
                    .answer(session, ctx, problem, &detail)
                    .await
                    .map(|_| ())
            }
            Err(e) => {
                let detail = format!("the exchange task failed: {e}");
                return self
                    .answer(session, ctx, Problem::Internal, &detail)
                    .await
                    .map(|_| ());
            }
        };
        ctx.sent_upstream_at_us = Some(fetched.sent_at_us);
        ctx.upstream_answered_at_us = Some(fetched.answered_at_us);
        ctx.upstream_connected = true;
        let content_type = fetched
            .headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::to_owned);
        if let Err(v) = contract.check_response(
            method.as_str(),
            &path,
            fetched.status,
            content_type.as_deref(),
            &fetched.body,
        ) {
            let at = if v.pointer.is_empty() {
                "/"
            } else {
                v.pointer.as_str()
            };
            let service = ctx
                .routed
                .as_ref()
                .map_or(String::new(), |r| r.service.route_name.clone());
            let detail = format!(
                "the answer of {service} ({}) breaks its contract at {at}: {}",
                fetched.status, v.message
            );
            tracing::warn!(request_id = %ctx.request_id, %service, pointer = %at, "upstream answer breaks the contract");
            ctx.problem = Some((Problem::InvalidUpstreamResponse, detail.clone()));
            return problem::respond_with_members(
                session,
                Problem::InvalidUpstreamResponse,
                &detail,
                &ctx.request_id,
                &[("pointer", serde_json::Value::String(at.to_string()))],
            )
            .await;
        }

        let mut resp = ResponseHeader::build(fetched.status, Some(fetched.headers.len() + 3))?;
        for (k, v) in &fetched.headers {
            if HOP_BY_HOP.contains(&k.as_str()) {
                continue;
            }
            resp.append_header(k.clone(), v.as_slice())?;
        }
        let mut body = Some(fetched.body);
        if let Some(run) = ctx.plugins.as_mut() {
            if run.handles(Phase::ResponseHeaders) {
                if let Outcome::Fail(problem, detail) = run.response_headers(&mut resp) {
                    return self
                        .answer(session, ctx, problem, &detail)
                        .await
                        .map(|_| ());
                }
            }
            if run.replacement_body.is_some() || run.handles(Phase::ResponseBody) {
                match run.response_body(&mut body, true) {
                    Outcome::Continue => {}
                    Outcome::Answer(answer) => {
                        ctx.answered_by_plugin = Some(answer.status);
                        return stage::write_answer(session, &answer, &ctx.request_id).await;
                    }
                    Outcome::Fail(problem, detail) => {
                        return self
                            .answer(session, ctx, problem, &detail)
                            .await
                            .map(|_| ())
                    }
                }
                if run.replacement_body.is_some() {
                    ctx.cache_key = None;
                }
            }
        }
        let body = body.unwrap_or_default();
        if ctx.cache_key.is_some() {
            if let Some(svc) = ctx.svc.as_ref() {
                let cache = &svc.settings.cache;
                if resp.status.as_u16() == 200
                    && body.len() <= cache.max_entry_bytes
                    && (cache.allow_personalised || !respcache::uncacheable_response(&resp.headers))
                {
                    // Stored before the answer goes out (the body filter,
                    // which stores proxied answers, does not see this one).
                    if let (Some(key), true) = (ctx.cache_key.take(), cache.ttl_ms > 0) {
                        ctx.table.cache.put(
                            key,
                            200,
                            resp.headers
                                .iter()
                                .filter(|(k, _)| respcache::replayable(k))
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                            body.clone(),
                            std::time::Duration::from_millis(cache.ttl_ms),
                        );
                    }
                }
            }
            resp.insert_header("x-cache", "miss")?;
        }
        resp.insert_header("content-length", body.len().to_string())?;
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        let head_only = method == http::Method::HEAD;
        session
            .write_response_header(Box::new(resp), head_only || body.is_empty())
            .await?;
        if !head_only && !body.is_empty() {
            session.write_response_body(Some(body), true).await?;
        }
        Ok(())
    }
}
