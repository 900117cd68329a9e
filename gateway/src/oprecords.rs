//! The operational record of every request ([`OperationalRecord`]): who
//! called what, how it ended, its sizes and the wall-clock times of its
//! steps.
//!
//! The request path only hands a record to [`Recorder::record`], which
//! pushes it onto a bounded in-memory queue under a short lock: when the
//! queue is full the record is dropped and counted ([`Recorder::dropped`]),
//! never waited for. Nothing is woken per record (a channel send woke the
//! writer's thread on every request, and those wake-ups cost more CPU than
//! the writes): a writer task on the control runtime takes the whole queue
//! every [`FLUSH_EVERY`], or as soon as [`BATCH`] records wait, and stores
//! it [`BATCH`] records per transaction; a retention task deletes records
//! older than the configured number of days. At graceful shutdown the drain
//! watcher calls [`Recorder::flush`].
//!
//! Each batch is also folded into the hourly usage aggregates, in the same
//! transaction on a SQLite file (`usage_hourly`, [`chasqui_catalog::usage`]).
//!
//! Durability: a record is in memory between the end of its request and the
//! writer's next commit. A crash loses the records in the queue: at most the
//! last [`FLUSH_EVERY`] (200 ms) of traffic, plus any the queue dropped; the
//! usage aggregates lose the same calls. The audit ledger holds a digest of
//! every exchange under its own, stricter rule ([`crate::ledger`]).

use chasqui_catalog::oprecords::OperationalRecord;
use chasqui_catalog::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// How often the writer stores what is queued.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Records stored in one transaction at most; this many queued are stored at once.
pub const BATCH: usize = chasqui_catalog::oprecords::RECORDS_PER_TRANSACTION;
/// Records queued for the writer at most; beyond, records are dropped.
const QUEUE: usize = 50_000;
/// How often the retention task runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// The recorder of operational records.
pub struct Recorder {
    /// Records waiting for the writer, oldest first.
    queue: Mutex<Vec<OperationalRecord>>,
    /// The buffer the writer gave back, empty, to become the next queue
    /// (no fresh allocation, and so no fresh pages, per round).
    spare: Mutex<Vec<OperationalRecord>>,
    /// Wakes the writer when a full batch waits.
    batch_ready: Notify,
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// Wall-clock time now, Unix microseconds.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl Recorder {
    /// Starts the writer task on the current (control) runtime.
    pub fn start(store: Store) -> Arc<Recorder> {
        let (flush_tx, flush_rx) = mpsc::channel(4);
        let recorder = Arc::new(Recorder {
            queue: Mutex::new(Vec::with_capacity(BATCH)),
            spare: Mutex::new(Vec::with_capacity(BATCH)),
            batch_ready: Notify::new(),
            flushes: flush_tx,
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(writer(store, Arc::downgrade(&recorder), flush_rx));
        recorder
    }

    /// Queues one record; never waits (a full queue drops it and counts it).
    pub fn record(&self, record: OperationalRecord) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= QUEUE {
            drop(queue);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.push(record);
        let full_batch = queue.len() == BATCH;
        drop(queue);
        if full_batch {
            self.batch_ready.notify_one();
        }
    }

    /// Takes everything queued.
    fn take(&self) -> Vec<OperationalRecord> {
        let next = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|p| p.into_inner()));
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *queue, next)
    }

    /// Gives a written buffer back for reuse.
    fn give_back(&self, mut buffer: Vec<OperationalRecord>) {
        buffer.clear();
        // A burst's buffer is not kept at its peak size.
        buffer.shrink_to(8 * BATCH);
        *self.spare.lock().unwrap_or_else(|p| p.into_inner()) = buffer;
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Stores everything queued so far and waits for it (at shutdown).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.flushes.send(done).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Spawns, on the control runtime, the task that deletes the records
    /// older than `days` days, at once and then hourly.
    pub fn spawn_retention(control: &tokio::runtime::Handle, store: Store, days: u32) {
        control.spawn(async move {
            let keep_us = i64::from(days) * 86_400 * 1_000_000;
            loop {
                match store
                    .delete_operational_records_before(now_us() - keep_us)
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, days, "expired operational records"),
                    Err(e) => tracing::warn!(error = %e, "could not expire operational records"),
                }
                tokio::time::sleep(RETENTION_EVERY).await;
            }
        });
    }
}

/// Stores records and their usage aggregates (in transactions of at most
/// [`BATCH`] records), logging a failure (that part is then lost); hands the
/// buffer back for reuse.
async fn store_records(store: &Store, records: Vec<OperationalRecord>) -> Vec<OperationalRecord> {
    let lost = records.len();
    let (records, stored) = store.store_operational_records(records).await;
    if let Err(e) = stored {
        tracing::error!(error = %e, at_most = lost, "could not store operational records");
    }
    records
}

/// Stores the queue every [`FLUSH_EVERY`], when [`BATCH`] records wait, and
/// on request; ends within a tick of the last other handle to the recorder
/// being dropped (what is queued then goes with it: shutdown calls
/// [`Recorder::flush`] first).
async fn writer(
    store: Store,
    recorder: Weak<Recorder>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(live) = recorder.upgrade() else {
            return;
        };
        let done = tokio::select! {
            _ = tick.tick() => None,
            _ = live.batch_ready.notified() => None,
            Some(done) = flushes.recv() => Some(done),
        };
        let records = live.take();
        // Not held across the write: dropping the last handle ends the
        // writer after this round.
        drop(live);
        let records = store_records(&store, records).await;
        if let Some(live) = recorder.upgrade() {
            live.give_back(records);
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

/// The route template of a path below a service: identifier-like segments
/// (all digits, UUIDs, long hex or base64-like tokens, anything with a digit
/// longer than 6 characters) become `{id}`; the query is dropped.
pub fn route_template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if is_identifier(segment) {
            out.push_str("{id}");
        } else {
            out.push_str(segment);
        }
    }
    out
}

fn is_identifier(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let b = segment.as_bytes();
    let has_digit = b.iter().any(u8::is_ascii_digit);
    let all_digits = b.iter().all(u8::is_ascii_digit);
    let all_hex = b.iter().all(|c| c.is_ascii_hexdigit() || *c == b'-');
    let base64ish = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'=' | b'+' | b'.'));
    let mixed_case = b.iter().any(u8::is_ascii_uppercase) && b.iter().any(u8::is_ascii_lowercase);
    all_digits
        || (has_digit && b.len() > 6)
        || (all_hex && b.len() >= 16)
        || (base64ish && mixed_case && b.len() >= 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_become_placeholders() {
        assert_eq!(route_template("/personas/1234567"), "/personas/{id}");
        assert_eq!(route_template("/personas/12?x=1"), "/personas/{id}");
        assert_eq!(
            route_template("/a/550e8400-e29b-41d4-a716-446655440000/b"),
            "/a/{id}/b"
        );
        assert_eq!(route_template("/t/deadbeefcafebabe"), "/t/{id}");
        assert_eq!(route_template("/t/QWxhZGRpbjpvcGVuIHNlc2FtZQ"), "/t/{id}");
        assert_eq!(route_template("/cpt/4821-0937-5512"), "/cpt/{id}");
        assert_eq!(route_template("/transaccion/deuda"), "/transaccion/deuda");
        assert_eq!(route_template("/v2x/abc"), "/v2x/abc");
        assert_eq!(route_template("/"), "/");
    }

    #[tokio::test]
    async fn records_are_stored_on_flush() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let recorder = Recorder::start(store.clone());
        let record = OperationalRecord {
            request_id: "r1".into(),
            trace_id: None,
            consumer_entity: "c".into(),
            consumer_system: "s".into(),
            service: "a/v1".into(),
            route: "/x".into(),
            environment: "pruebas".into(),
            method: "GET".into(),
            status: 200,
            request_bytes: 0,
            response_bytes: 1,
            received_at_us: 1,
            sent_upstream_at_us: None,
            upstream_answered_at_us: None,
            answered_at_us: 2,
            plugin_outcome: Default::default(),
            error_type: Default::default(),
        };
        recorder.record(record.clone());
        recorder.flush().await;
        let listed = store
            .list_operational_records(&chasqui_catalog::oprecords::RecordFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed, vec![record]);
        assert_eq!(recorder.dropped(), 0);
    }
}
