//! Request tracing: W3C trace context, spans, and their export over
//! OTLP/HTTP with JSON encoding.
//!
//! Every request has a trace id: the caller's, when it sent a valid
//! `traceparent`, else a new random one. It is in the operational record,
//! the access log and the `traceparent` sent upstream (whose parent span is
//! the gateway's upstream span), so an upstream continues the same trace.
//!
//! Spans are collected only when an OTLP endpoint is configured
//! (`otlp_endpoint`): then the request span, one span per plugin phase call
//! and one for the upstream call are handed, at the end of the request, to
//! a bounded queue (never waited for; full means dropped and counted) that
//! an exporter task on the control runtime posts in batches to
//! `<endpoint>/v1/traces`. Without an endpoint the request path only draws
//! the ids; no span is built.
//!
//! The exporter is hand-written (the OTLP/JSON mapping of
//! `ExportTraceServiceRequest`) over the `reqwest` client the gateway
//! already has, instead of the `opentelemetry` SDK: the SDK's own batching,
//! runtime glue and protobuf stack would add much to build for the few
//! fields sent here.

use rand::RngCore;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Spans waiting for export at most; beyond, a request's spans are dropped.
const QUEUE: usize = 10_000;
/// Most spans posted at once.
const BATCH_SPANS: usize = 2_000;
/// How long the exporter gathers spans before a post.
const EXPORT_EVERY: Duration = Duration::from_millis(200);
/// Timeout of one post to the collector.
const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// OTLP span kinds used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside the gateway (plugin calls).
    Internal = 1,
    /// The request as the gateway served it.
    Server = 2,
    /// The call to the upstream.
    Client = 3,
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct Span {
    /// What it measures (`GET segip/v1`, `plugin allowlist request_headers`).
    pub name: String,
    /// Its kind.
    pub kind: SpanKind,
    /// Its id.
    pub span_id: [u8; 8],
    /// Its parent's id (`None`: a root span).
    pub parent: Option<[u8; 8]>,
    /// Start, Unix microseconds.
    pub start_us: i64,
    /// End, Unix microseconds.
    pub end_us: i64,
    /// Attributes (bounded, low-cardinality keys).
    pub attributes: Vec<(&'static str, String)>,
    /// Whether the span ended in error.
    pub error: bool,
}

/// The trace context of one request.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    /// The trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// The span id of the gateway's request span.
    pub span_id: [u8; 8],
    /// The caller's span, when it sent a `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// The span id of the upstream call (parent of the upstream's spans).
    pub upstream_span_id: [u8; 8],
    /// The caller's trace flags (sampled), else sampled.
    pub flags: u8,
    /// Spans of the request's parts, when they are exported.
    pub spans: Option<Vec<Span>>,
}

fn random_id<const N: usize>() -> [u8; N] {
    let mut id = [0u8; N];
    // All-zero ids are invalid in W3C trace context; redraw (practically never).
    while id.iter().all(|b| *b == 0) {
        rand::rng().fill_bytes(&mut id);
    }
    id
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    (out.iter().any(|b| *b != 0)).then_some(out)
}

impl RequestTrace {
    /// Continues the caller's trace when `traceparent` is valid (version
    /// 00 form), else starts a new one; `collect`: gather spans.
    pub fn from_traceparent(traceparent: Option<&[u8]>, collect: bool) -> RequestTrace {
        let continued = traceparent
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| {
                let mut parts = v.trim().split('-');
                let (version, trace, parent, flags) =
                    (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                if version.len() != 2 || version == "ff" {
                    return None;
                }
                let trace = parse_hex::<16>(trace)?;
                let parent = parse_hex::<8>(parent)?;
                let flags = parse_hex::<1>(flags).map_or(0, |f| f[0]);
                Some((trace, parent, flags))
            });
        let (trace, parent, flags) = match continued {
            Some((trace, parent, flags)) => (trace, Some(parent), flags),
            None => (random_id::<16>(), None, 1),
        };
        RequestTrace {
            trace_id: crate::hex(&trace),
            span_id: random_id(),
            parent,
            upstream_span_id: random_id(),
            flags,
            spans: collect.then(Vec::new),
        }
    }

    /// The `traceparent` to send upstream: same trace, parent = the
    /// gateway's upstream span.
    pub fn upstream_traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            crate::hex(&self.upstream_span_id),
            self.flags
        )
    }

    /// Whether spans are being collected.
    pub fn collecting(&self) -> bool {
        self.spans.is_some()
    }

    /// Adds a child span of the request span (when collecting).
    pub fn child(
        &mut self,
        name: String,
        kind: SpanKind,
        span_id: Option<[u8; 8]>,
        times: (i64, i64),
        attributes: Vec<(&'static str, String)>,
        error: bool,
    ) {
        let parent = self.span_id;
        if let Some(spans) = self.spans.as_mut() {
            spans.push(Span {
                name,
                kind,
                span_id: span_id.unwrap_or_else(random_id),
                parent: Some(parent),
                start_us: times.0,
                end_us: times.1.max(times.0),
                attributes,
                error,
            });
        }
    }
}

/// The trace exporter of the process (inactive without an endpoint).
#[derive(Debug)]
pub struct Telemetry {
    queue: Option<mpsc::Sender<(String, Vec<Span>)>>,
    dropped: AtomicU64,
}

impl Telemetry {
    /// No export: spans are never collected.
    pub fn disabled() -> Arc<Telemetry> {
        Arc::new(Telemetry {
            queue: None,
            dropped: AtomicU64::new(0),
        })
    }

    /// Starts the exporter towards `endpoint` on the current (control)
    /// runtime; `None` disables export.
    pub fn start(endpoint: Option<&str>) -> anyhow::Result<Arc<Telemetry>> {
        let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) else {
            return Ok(Self::disabled());
        };
        let url = if endpoint.ends_with("/v1/traces") {
            endpoint.to_string()
        } else {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        };
        let client = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("OTLP client: {e}"))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(export(client, url, rx));
        Ok(Arc::new(Telemetry {
            queue: Some(tx),
            dropped: AtomicU64::new(0),
        }))
    }

    /// Whether spans are exported (and so must be collected).
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues a finished request's spans; never waits.
    pub fn submit(&self, trace: RequestTrace, root: Span) {
        let Some(queue) = &self.queue else { return };
        let mut spans = trace.spans.unwrap_or_default();
        spans.push(root);
        if queue.try_send((trace.trace_id, spans)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests whose spans were dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Gathers spans for [`EXPORT_EVERY`] (or [`BATCH_SPANS`]) and posts them.
async fn export(client: reqwest::Client, url: String, mut rx: mpsc::Receiver<(String, Vec<Span>)>) {
    let mut batch: Vec<(String, Vec<Span>)> = Vec::new();
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut count = first.1.len();
        batch.push(first);
        let deadline = tokio::time::Instant::now() + EXPORT_EVERY;
        while count < BATCH_SPANS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(more)) => {
                    count += more.1.len();
                    batch.push(more);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let body = otlp_json(&batch);
        batch.clear();
        match client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    spans = count,
                    "OTLP collector refused spans"
                )
            }
            Err(e) => tracing::warn!(error = %e, spans = count, "could not export spans"),
        }
    }
}

fn nanos(us: i64) -> String {
    (i128::from(us) * 1000).to_string()
}

/// The OTLP/JSON `ExportTraceServiceRequest` of a batch.
pub fn otlp_json(batch: &[(String, Vec<Span>)]) -> Value {
    let spans: Vec<Value> = batch
        .iter()
        .flat_map(|(trace_id, spans)| {
            spans.iter().map(move |s| {
                let mut span = json!({
                    "traceId": trace_id,
                    "spanId": crate::hex(&s.span_id),
                    "name": s.name,
                    "kind": s.kind as u8,
                    "startTimeUnixNano": nanos(s.start_us),
                    "endTimeUnixNano": nanos(s.end_us),
                    "attributes": s.attributes.iter().map(|(k, v)| json!({
                        "key": k, "value": {"stringValue": v}
                    })).collect::<Vec<_>>(),
                    // 1 OK, 2 ERROR.
                    "status": {"code": if s.error { 2 } else { 1 }},
                });
                if let Some(parent) = s.parent {
                    span["parentSpanId"] = json!(crate::hex(&parent));
                }
                span
            })
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "chasqui"}},
                {"key": "service.version", "value": {"stringValue": env!("CARGO_PKG_VERSION")}},
            ]},
            "scopeSpans": [{
                "scope": {"name": "chasqui", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans,
            }],
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_continued_and_a_bad_one_replaced() {
        let t = RequestTrace::from_traceparent(
            Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            false,
        );
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        let up = t.upstream_traceparent();
        assert!(
            up.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{up}"
        );
        assert!(up.ends_with("-01"));
        assert_ne!(&up[36..52], "00f067aa0ba902b7");
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"garbage",
        ] {
            let t = RequestTrace::from_traceparent(Some(bad), false);
            assert_ne!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(t.trace_id.len(), 32);
            assert!(t.parent.is_none());
        }
        assert!(RequestTrace::from_traceparent(None, false).spans.is_none());
    }
}
