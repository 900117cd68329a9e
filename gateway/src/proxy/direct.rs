//! The direct exchange: the common call (a `GET` or `HEAD` without a body)
//! proxied from `request_filter` with pingora's own HTTP/1 client and
//! connection pool, instead of pingora's general proxy loop.
//!
//! Why: the general loop is built for every case (request bodies streamed
//! while the answer streams back, upgrades, its cache): per request it
//! clones and re-validates the head, opens two task channels and runs two
//! halves joined, each with its own `select!`. A bodiless call needs none of
//! that: write the head, read the answer's head, stream its body back. It
//! saves about a tenth of the user-space instructions of a call (see
//! `bench/README.md`, eighth session); the system calls are the same.
//!
//! What stays shared with the general path, so that both behave alike: the
//! upstream choice (`upstream_peer`), the upstream head's fields (`UpstreamHead`, built
//! here in one field map, see `upstream_head`),
//! the answer's filters (`response_filter`, `response_body_filter`: request
//! id, ledger seal, response cache), the failure classification
//! (`fail_to_connect`, `error_while_proxy`) and the problem answers
//! (`fail_to_proxy`, reached by returning the error).
//!
//! Failures before any byte of the answer reached the client are handed
//! back: the request goes on down pingora's general path, which chooses
//! another upstream (the one tried stays in `ctx.tried`) and applies the
//! retry rules, or answers the problem when no retry is allowed (a pooled
//! connection the upstream had closed is not counted as an attempt, on
//! either path: see `error_while_proxy`).

use super::upstream_head::{self, UpstreamHead};
use super::{ChasquiProxy, RequestCtx};
use bytes::Bytes;
use http::header;
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};

impl ChasquiProxy {
    /// Whether the request can take the direct exchange: no body to stream,
    /// no upgrade, nothing kept for later delivery. Plugins do not matter:
    /// their request-body phase never runs for a bodiless request (on either
    /// path), their answer phases run in the shared response filters.
    pub(super) fn direct_eligible(session: &mut Session, ctx: &RequestCtx) -> bool {
        let req = session.req_header();
        let bodiless_method = req.method == http::Method::GET || req.method == http::Method::HEAD;
        bodiless_method
            && ctx.prebuffered.is_none()
            && !ctx.deferrable
            && !req.headers.contains_key(header::UPGRADE)
            && !req.headers.contains_key(header::EXPECT)
            && !session.is_upgrade_req()
            && session.is_body_empty()
    }

    /// Runs the exchange. `Ok(true)`: answered (or failed with an error
    /// already returned); `Ok(false)`: nothing was sent to the client and
    /// pingora's general path takes the request over.
    pub(super) async fn direct_exchange(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let peer = self.upstream_peer(session, ctx).await?;
        let head = UpstreamHead::compute(session, ctx)?;
        let req =
            upstream_head::direct_request(head, session.req_header(), super::body_plugin(ctx));
        ctx.sent_upstream_at_us = Some(crate::oprecords::now_us());

        let Some(upstream) = self.attempt(session, ctx, &peer, req).await? else {
            return Ok(false);
        };
        self.relay_answer(session, ctx, &peer, upstream).await?;
        Ok(true)
    }

    /// One attempt: a connection (pooled or new), the request's head, the
    /// answer's head. `Some`: the answer's head was read, the exchange goes
    /// on here; `None`: nothing reached the client, pingora's general path
    /// takes over.
    async fn attempt(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        peer: &HttpPeer,
        req: RequestHeader,
    ) -> Result<Option<UpstreamSession>> {
        let (mut upstream, reused) = match self.connector.get_http_session(peer).await {
            Ok(got) => got,
            Err(e) => {
                let e = self.fail_to_connect(session, peer, ctx, e.into_up());
                return if e.retry() { Ok(None) } else { Err(e) };
            }
        };
        ctx.upstream_connected = true;
        upstream.read_timeout = peer.options.read_timeout;
        upstream.write_timeout = peer.options.write_timeout;
        let exchanged = match upstream.write_request_header(Box::new(req)).await {
            Ok(_) => read_final_head(&mut upstream).await,
            Err(e) => Err(e),
        };
        match exchanged {
            Ok(()) => Ok(Some(upstream)),
            Err(e) => {
                // Decides the retry (and forgets the attempt when a pooled
                // connection had been closed by the upstream).
                let e = self.error_while_proxy(peer, session, e.into_up(), ctx, reused);
                if e.retry() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Sends the answer's head (through the response filters) and streams
    /// its body; the connection goes back to the pool when it ended cleanly.
    async fn relay_answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        peer: &HttpPeer,
        mut upstream: UpstreamSession,
    ) -> Result<()> {
        let Some(head) = upstream.resp_header() else {
            return Err(Error::explain(
                pingora_error::ErrorType::InvalidHTTPHeader,
                "the upstream's answer has no head",
            ));
        };
        let mut head: Box<ResponseHeader> = Box::new(head.clone());
        // This loop makes the end-of-body filter call itself, also for an
        // answer without a body.
        ctx.direct = true;
        let mut done = upstream.is_body_done();
        let head_only = session.req_header().method == http::Method::HEAD
            || super::status_has_no_body(head.status);
        if !head_only
            && !done
            && !head.headers.contains_key(header::TRANSFER_ENCODING)
            && !head.headers.contains_key(header::CONTENT_LENGTH)
        {
            // An answer delimited by closing its connection: chunked to the
            // client, whose connection stays reusable.
            head.set_version(http::Version::HTTP_11);
            head.insert_header(header::TRANSFER_ENCODING, "chunked")?;
        }
        self.response_filter(session, &mut head, ctx).await?;
        if done {
            // No body; a response-body plugin may still make one at the end.
            let mut body = None;
            self.response_body_filter(session, &mut body, true, ctx)?;
            if head_only {
                // The answer to a HEAD, a 204 or a 304 has no body to give.
                body = None;
            }
            let end_in_head = body.is_none();
            session
                .write_response_header(head, end_in_head)
                .await
                .map_err(|e| e.into_down())?;
            if !end_in_head {
                session
                    .write_response_body(body, true)
                    .await
                    .map_err(|e| e.into_down())?;
            }
        } else {
            session
                .write_response_header(head, false)
                .await
                .map_err(|e| e.into_down())?;
            while !done {
                let chunk = match upstream.read_body_bytes().await {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        return Err(self.error_while_proxy(peer, session, e.into_up(), ctx, false))
                    }
                };
                done = chunk.is_none() || upstream.is_body_done();
                let mut body: Option<Bytes> = chunk;
                self.response_body_filter(session, &mut body, done, ctx)?;
                session
                    .write_response_body(body, done)
                    .await
                    .map_err(|e| e.into_down())?;
            }
        }
        let idle = peer.options.idle_timeout;
        self.connector
            .release_http_session(upstream, peer, idle)
            .await;
        Ok(())
    }
}

/// Reads the answer's head, past any informational (1xx) ones. A `101` is
/// refused: the request asked for no upgrade (pingora's general loop
/// refuses it too).
async fn read_final_head(upstream: &mut UpstreamSession) -> Result<()> {
    loop {
        upstream.read_response().await?;
        match upstream.get_status() {
            Some(http::StatusCode::SWITCHING_PROTOCOLS) => {
                return Err(Error::explain(
                    pingora_error::ErrorType::InvalidHTTPHeader,
                    "the upstream switched protocols on a request that asked no upgrade",
                ))
            }
            Some(s) if s.is_informational() => {}
            _ => return Ok(()),
        }
    }
}
