//! Store-and-forward (contingency), a policy option any service can use
//! (SEFE is the first): when a service's upstream cannot be reached, a
//! request is accepted with 202 and a tracking id, kept in the store, and
//! delivered later, in order of acceptance, by a task of this module.
//!
//! Guarantees, with the reasons:
//! - Nothing acknowledged is lost: the row is committed before the 202 is
//!   written (SQLite in WAL mode survives a crash of the process).
//! - Order: per service environment only the oldest queued request is ever
//!   attempted, and while a backlog exists new requests join the queue
//!   instead of overtaking it through the proxy.
//! - Exactly once in the normal case, at least once across a crash between
//!   the upstream's answer and its recording; every delivery carries the
//!   tracking id as `Idempotency-Key` so that the upstream can drop a repeat.

use crate::state::Gateway;
use chasqui_catalog::deferred::{DeferredOutcome, NewDeferred};
use chasqui_catalog::{Environment, Store, StoreError};
use dashmap::DashMap;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Largest upstream answer kept for the state query.
const MAX_KEPT_RESPONSE: usize = 64 << 10;
/// Time allowed for one delivery.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The deferred requests of this node: backlog counts for the request path
/// and the wake-up of the delivery task.
#[derive(Debug, Default)]
pub struct Deferrals {
    backlog: DashMap<(String, Environment), i64>,
    wake: Notify,
    clients: Mutex<HashMap<Option<Arc<str>>, reqwest::Client>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A tracking id: `dfr_` and 32 hex digits.
pub fn tracking_id() -> String {
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    format!("dfr_{}", crate::hex(&raw))
}

impl Deferrals {
    /// Loads the backlog counts left by an earlier run.
    pub async fn load(store: &Store) -> Result<Deferrals, StoreError> {
        let deferrals = Deferrals::default();
        for (service, env, _) in store.deferred_queues().await? {
            let Ok(env) = env.parse::<Environment>() else {
                continue;
            };
            let count = store.deferred_backlog(&service, env.as_str()).await?;
            deferrals.backlog.insert((service, env), count);
        }
        Ok(deferrals)
    }

    /// Whether requests are waiting for this service environment: a new one
    /// must then queue behind them.
    pub fn has_backlog(&self, service: &str, env: Environment) -> bool {
        self.backlog
            .get(&(service.to_string(), env))
            .is_some_and(|n| *n > 0)
    }

    /// Requests waiting in every queue of this node.
    pub fn backlog_total(&self) -> i64 {
        self.backlog.iter().map(|n| (*n.value()).max(0)).sum()
    }

    /// Stores a request for later delivery; when this returns `Ok` the
    /// request is durable and may be acknowledged.
    pub async fn accept(
        &self,
        store: &Store,
        request: NewDeferred,
        env: Environment,
    ) -> Result<(), StoreError> {
        store.enqueue_deferred(&request).await?;
        *self.backlog.entry((request.service, env)).or_insert(0) += 1;
        self.wake.notify_one();
        Ok(())
    }

    fn delivered(&self, service: &str, env: Environment) {
        if let Some(mut n) = self.backlog.get_mut(&(service.to_string(), env)) {
            *n = (*n - 1).max(0);
        }
    }

    /// A client trusting `ca_pem` (or the system roots).
    pub(crate) fn client(&self, ca_pem: Option<Arc<str>>) -> Result<reqwest::Client, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&ca_pem) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .user_agent(concat!("chasqui/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &ca_pem {
            builder = builder.tls_built_in_root_certs(false);
            for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| format!("the service's CA bundle: {e}"))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        clients.insert(ca_pem, client.clone());
        Ok(client)
    }
}

/// Delivers queued requests forever, on the control runtime.
pub fn spawn_forwarder(gw: Arc<Gateway>) {
    let control = gw.control.clone();
    control.spawn(async move {
        loop {
            let next_due = match deliver_due(&gw).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "store-and-forward: could not read the queue");
                    Some(now_ms() + 1_000)
                }
            };
            let wait = next_due.map_or(Duration::from_secs(60), |at| {
                Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0))
            });
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = gw.deferred.wake.notified() => {}
                _ = tokio::time::sleep(wait.min(Duration::from_secs(60))) => {}
            }
        }
    });
}

/// One pass: for every queue that is due, delivers its requests in order
/// until one fails. Returns when the next attempt is due, if any queue is left.
async fn deliver_due(gw: &Gateway) -> Result<Option<i64>, StoreError> {
    let mut next_due: Option<i64> = None;
    for (service, env_name, due) in gw.store.deferred_queues().await? {
        let Ok(env) = env_name.parse::<Environment>() else {
            continue;
        };
        if due > now_ms() {
            next_due = Some(next_due.map_or(due, |n| n.min(due)));
            continue;
        }
        while let Some(request) = gw.store.next_deferred(&service, &env_name).await? {
            if request.next_attempt_ms > now_ms() {
                let due = request.next_attempt_ms;
                next_due = Some(next_due.map_or(due, |n| n.min(due)));
                break;
            }
            let outcome = deliver(gw, &request, env).await;
            gw.store
                .record_deferred_outcome(&request.id, now_ms(), &outcome)
                .await?;
            match outcome {
                DeferredOutcome::Delivered { status, .. } => {
                    gw.deferred.delivered(&service, env);
                    tracing::info!(id = %request.id, service = %service, status, attempts = request.attempts + 1, "deferred request delivered");
                }
                DeferredOutcome::Retry {
                    next_attempt_ms,
                    error,
                } => {
                    tracing::debug!(id = %request.id, service = %service, %error, "deferred delivery failed; will retry");
                    next_due = Some(next_due.map_or(next_attempt_ms, |n| n.min(next_attempt_ms)));
                    break;
                }
            }
        }
    }
    Ok(next_due)
}

/// Delay before the next attempt after `attempts` failures.
fn retry_delay(attempts: i64, initial_ms: u64, max_ms: u64) -> u64 {
    let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    initial_ms.saturating_mul(1u64 << exp).min(max_ms)
}

/// Sends one request to a healthy upstream of its service environment.
async fn deliver(
    gw: &Gateway,
    request: &chasqui_catalog::deferred::Deferred,
    env: Environment,
) -> DeferredOutcome {
    let policy = gw.policy.load();
    let (initial, max) = policy
        .store_and_forward
        .as_ref()
        .map_or((500, 30_000), |p| (p.retry_initial_ms, p.retry_max_ms));
    let retry = |error: String| DeferredOutcome::Retry {
        next_attempt_ms: now_ms() + retry_delay(request.attempts, initial, max) as i64,
        error,
    };
    let table = gw.routes.load();
    let Some(pool) = table
        .service_named(&request.service)
        .and_then(|s| s.pool(env).cloned())
    else {
        return retry(format!("{} is not enabled in {env}", request.service));
    };
    let Some(index) = pool.select(&[]) else {
        return retry("no healthy upstream".into());
    };
    let backend = &pool.backends[index];
    let client = match gw.deferred.client(pool.ca_pem.clone()) {
        Ok(client) => client,
        Err(e) => return retry(e),
    };
    let scheme = if backend.tls { "https" } else { "http" };
    let url = format!(
        "{scheme}://{}{}{}",
        backend.authority, backend.base_path, request.upstream_path
    );
    let Ok(method) = reqwest::Method::from_bytes(request.method.as_bytes()) else {
        return DeferredOutcome::Delivered {
            status: 0,
            content_type: None,
            body: b"unsupported method".to_vec(),
        };
    };
    let mut builder = client.request(method, &url);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let sent = builder
        .header("idempotency-key", request.id.as_str())
        .header("x-chasqui-deferred", request.id.as_str())
        .body(request.body.clone())
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            if e.is_connect() {
                backend.health.record_connect_failure();
            }
            return retry(format!("{url}: {e}"));
        }
    };
    let status = response.status();
    // A gateway-side temporary failure means the request did not land: keep it.
    if matches!(status.as_u16(), 502..=504) {
        return retry(format!("the upstream answered {status}"));
    }
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = response
        .bytes()
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    body.truncate(MAX_KEPT_RESPONSE);
    DeferredOutcome::Delivered {
        status: status.as_u16(),
        content_type,
        body,
    }
}

/// Builds the stored form of a request being deferred.
#[allow(clippy::too_many_arguments)]
pub fn new_deferred(
    id: String,
    service: &str,
    env: Environment,
    consumer: (&str, &str),
    request_id: &str,
    method: &str,
    upstream_path: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> NewDeferred {
    NewDeferred {
        id,
        service: service.to_string(),
        environment: env.as_str().to_string(),
        consumer_entity: consumer.0.to_string(),
        consumer_system: consumer.1.to_string(),
        request_id: request_id.to_string(),
        method: method.to_string(),
        upstream_path: upstream_path.to_string(),
        headers,
        body,
        accepted_at_ms: now_ms(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        assert_eq!(retry_delay(0, 500, 30_000), 500);
        assert_eq!(retry_delay(2, 500, 30_000), 2_000);
        assert_eq!(retry_delay(40, 500, 30_000), 30_000);
    }

    #[test]
    fn tracking_ids_are_unique_and_shaped() {
        let (a, b) = (tracking_id(), tracking_id());
        assert_ne!(a, b);
        assert!(a.starts_with("dfr_") && a.len() == 36);
    }
}
