//! What plugins report beyond the request: security incidents (stored and
//! notified to the affected entities' security contacts by webhook, with
//! retries) and fees (summed per consumer x service x environment x hour).
//!
//! Plugins call in on the request path, so [`Platform`] only queues; a writer
//! task on the control runtime stores, and a notifier task delivers.
//!
//! Durability: an incident is in memory between the plugin's report and the
//! writer's commit (milliseconds); fees for up to [`FEE_FLUSH`]. A crash in
//! that window loses them; everything committed is delivered at least once.

use crate::plugin::{CallContext, IncidentReport, PlatformSink};
use chasqui_catalog::incidents::{Delivery, FeeKey, Incident, Recipient};
use chasqui_catalog::Store;
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// How often summed fees are written to the store.
pub const FEE_FLUSH: Duration = Duration::from_secs(2);
/// Incidents queued for the writer at most; beyond, reports are refused.
const QUEUE: usize = 10_000;
/// Attempts before a notification is given up.
const MAX_ATTEMPTS: i64 = 12;
/// Time allowed for one webhook delivery.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// The sink of the `incident` and `metering` capabilities.
pub struct Platform {
    incidents: mpsc::Sender<(Incident, Vec<Recipient>)>,
    fees: Mutex<HashMap<FeeKey, (i64, i64)>>,
    store: Store,
    notify: Arc<Notify>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform").finish_non_exhaustive()
    }
}

/// A time-ordered incident id: `inc_`, 12 hex digits of milliseconds, 14 of
/// randomness, so ids sort by time and paginate.
fn incident_id(at_ms: i64) -> String {
    let mut random = [0u8; 7];
    rand::rng().fill_bytes(&mut random);
    format!("inc_{:012x}{}", at_ms.max(0), crate::hex(&random))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Platform {
    /// Starts the writer and notifier tasks on the current (control) runtime.
    pub fn start(store: Store) -> Arc<Platform> {
        let (tx, mut rx) = mpsc::channel::<(Incident, Vec<Recipient>)>(QUEUE);
        let notify = Arc::new(Notify::new());
        let platform = Arc::new(Platform {
            incidents: tx,
            fees: Mutex::default(),
            store: store.clone(),
            notify: notify.clone(),
        });
        let writer_store = store.clone();
        let wake = notify.clone();
        tokio::spawn(async move {
            while let Some((incident, recipients)) = rx.recv().await {
                match writer_store.insert_incident(&incident, &recipients).await {
                    Ok(()) => wake.notify_one(),
                    Err(e) => {
                        tracing::error!(id = %incident.id, error = %e, "could not store an incident")
                    }
                }
            }
        });
        let flusher = platform.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FEE_FLUSH).await;
                if let Err(e) = flusher.flush_fees().await {
                    tracing::warn!(error = %e, "could not record fees");
                }
            }
        });
        tokio::spawn(notifier(store, notify));
        platform
    }

    /// Writes the fees summed so far (also called at shutdown).
    pub async fn flush_fees(&self) -> Result<(), chasqui_catalog::StoreError> {
        let pending: Vec<(FeeKey, i64, i64)> = {
            let mut fees = self.fees.lock().unwrap_or_else(|p| p.into_inner());
            fees.drain().map(|(k, (a, c))| (k, a, c)).collect()
        };
        if pending.is_empty() {
            return Ok(());
        }
        self.store.add_fees(&pending).await
    }

    /// Wakes the notifier (after an entity's webhook changed, say).
    pub fn wake_notifier(&self) {
        self.notify.notify_one();
    }
}

impl PlatformSink for Platform {
    fn incident(&self, context: &CallContext, report: IncidentReport) -> Result<String, String> {
        let request = &context.request;
        let at_ms = now_ms();
        let id = incident_id(at_ms);
        let detail = serde_json::from_str(&report.detail_json)
            .map_err(|e| format!("the detail is not JSON: {e}"))?;
        let publisher = request.service.split('/').next().unwrap_or_default();
        let recipients = report
            .notify
            .iter()
            .filter_map(|party| {
                let entity = match *party {
                    "publisher" => Some(publisher.to_string()),
                    _ => request.consumer_entity.clone(),
                }?;
                (!entity.is_empty()).then_some(Recipient {
                    entity_code: entity,
                    party,
                })
            })
            .collect();
        let incident = Incident {
            id: id.clone(),
            at_ms,
            plugin: report.plugin,
            kind: report.kind,
            severity: report.severity.to_string(),
            summary: report.summary,
            detail,
            blocked: report.blocked,
            request_id: request.request_id.clone(),
            service: request.service.clone(),
            environment: request.environment.clone(),
            consumer_entity: request.consumer_entity.clone(),
            consumer_system: request.consumer_system.clone(),
            client_address: context.client_address.clone(),
            status: "open".into(),
        };
        tracing::warn!(
            target: "chasqui::incident",
            id = %incident.id,
            kind = %incident.kind,
            severity = %incident.severity,
            service = %incident.service,
            request_id = %incident.request_id,
            blocked = incident.blocked,
            "{}", incident.summary
        );
        self.incidents
            .try_send((incident, recipients))
            .map_err(|_| "the incident queue is full".to_string())?;
        Ok(id)
    }

    fn fee(
        &self,
        context: &CallContext,
        plugin: &str,
        item: &str,
        amount_minor: u64,
        currency: &str,
    ) {
        let request = &context.request;
        let key = FeeKey {
            hour_start: now_ms() / 1000 / 3600 * 3600,
            consumer_entity: request.consumer_entity.clone().unwrap_or_default(),
            consumer_system: request.consumer_system.clone().unwrap_or_default(),
            service: request.service.clone(),
            environment: request.environment.clone(),
            item: item.to_string(),
            currency: currency.to_string(),
        };
        tracing::debug!(plugin, item, amount_minor, currency, "fee recorded");
        let amount = i64::try_from(amount_minor).unwrap_or(i64::MAX);
        let mut fees = self.fees.lock().unwrap_or_else(|p| p.into_inner());
        let entry = fees.entry(key).or_insert((0, 0));
        entry.0 = entry.0.saturating_add(amount);
        entry.1 += 1;
    }
}

/// Back-off before attempt `n + 1`: 1 s, 2 s, 4 s ... capped at 5 minutes.
fn backoff(attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 9)).unwrap_or(9);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

/// Delivers due notifications forever; wakes on new incidents or when the
/// next retry is due.
async fn notifier(store: Store, wake: Arc<Notify>) {
    let client = match reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .user_agent(concat!("chasqui/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client: incident notifications are disabled");
            return;
        }
    };
    loop {
        let due = store.due_notifications(now_ms(), 50).await;
        match due {
            Ok(due) => {
                for notification in due {
                    let outcome = deliver(&client, &notification).await;
                    if let Err(e) = store
                        .record_delivery(notification.id, now_ms(), &outcome)
                        .await
                    {
                        tracing::warn!(error = %e, "could not record a notification's delivery");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read due notifications"),
        }
        let wait = match store.next_notification_due().await {
            Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)),
            _ => Duration::from_secs(60),
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait.min(Duration::from_secs(60))) => {}
        }
    }
}

/// POSTs one incident to one webhook.
async fn deliver(
    client: &reqwest::Client,
    notification: &chasqui_catalog::incidents::DueNotification,
) -> Delivery {
    let body = serde_json::json!({
        "incident": notification.incident,
        "notified_entity": notification.entity_code,
        "party": notification.party,
    });
    let sent = client
        .post(&notification.target)
        .header("x-chasqui-incident", notification.incident.id.as_str())
        .json(&body)
        .send()
        .await;
    let error = match sent {
        Ok(response) if response.status().is_success() => {
            tracing::info!(id = %notification.incident.id, entity = %notification.entity_code, "incident notified");
            return Delivery::Delivered;
        }
        Ok(response) => format!("the webhook answered {}", response.status()),
        Err(e) => format!("the webhook could not be reached: {e}"),
    };
    let attempts = notification.attempts + 1;
    if attempts >= MAX_ATTEMPTS {
        tracing::warn!(id = %notification.incident.id, entity = %notification.entity_code, %error, "incident notification given up");
        return Delivery::Failed(error);
    }
    Delivery::Retry {
        next_attempt_ms: now_ms() + backoff(attempts).as_millis() as i64,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(50), Duration::from_secs(300));
    }

    #[test]
    fn incident_ids_sort_by_time() {
        let (a, b) = (incident_id(1_000), incident_id(2_000));
        assert!(a < b);
        assert_eq!(a.len(), 4 + 12 + 14);
    }
}
