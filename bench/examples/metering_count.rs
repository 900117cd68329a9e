//! What metering and audit cost per exchange, off the wire: the work the
//! gateway adds to a request when metering is on (the operational record,
//! its digest, the exchange's ledger entry) and what the writers then do
//! with it (the records' and the ledger's SQLite inserts, the hourly usage
//! aggregates), repeated a given number of times on a SQLite file, so that
//! `valgrind --tool=callgrind` can count it:
//!
//! ```sh
//! cargo build --release -p chasqui-bench --example metering_count
//! B=$CARGO_TARGET_DIR/release/examples/metering_count
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/mc.5000 $B 5000
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/mc.10000 $B 10000
//! ```
//!
//! The difference of the two totals over 5,000 is one exchange, all threads
//! (the SQLite worker's included). The writers are flushed every
//! [`BATCH`] exchanges, as the record writer is under load (batched
//! durability; strict commits the same rows in smaller groups).

use chasqui::ledger::{exchange_digest, Ledger};
use chasqui::oprecords::Recorder;
use chasqui_catalog::oprecords::OperationalRecord;
use chasqui_catalog::Store;

/// Exchanges between two flushes of the writers.
const BATCH: usize = 500;

/// The record of the bench's call: a production lookup by an authenticated consumer.
fn record(n: usize) -> OperationalRecord {
    let received = 1_790_000_000_000_000 + n as i64 * 40;
    OperationalRecord {
        request_id: format!("{n:032x}").into(),
        trace_id: None,
        consumer_entity: "bench".into(),
        consumer_system: "loadgen".into(),
        service: "segip/v2".into(),
        route: "/personas/{id}".into(),
        environment: "produccion".into(),
        method: "GET".into(),
        status: 200,
        request_bytes: 0,
        response_bytes: 104,
        received_at_us: received,
        sent_upstream_at_us: Some(received + 12),
        upstream_answered_at_us: Some(received + 30),
        answered_at_us: received + 35,
        plugin_outcome: Default::default(),
        error_type: Default::default(),
    }
}

fn main() -> anyhow::Result<()> {
    let exchanges: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = Store::open_sqlite(&dir.path().join("chasqui.db")).await?;
        let pool = store
            .sqlite_pool()
            .ok_or_else(|| anyhow::anyhow!("not a SQLite store"))?
            .clone();
        let ledger = Ledger::open_appending(
            pool,
            store.appender().cloned(),
            &dir.path().join("ledger-ed25519.pk8"),
        )
        .await?;
        let recorder = Recorder::start(store.clone());
        for n in 0..exchanges {
            // What the request path does (proxy.rs `seal` and `logging`).
            let mut record = record(n);
            let head = OperationalRecord {
                response_bytes: 0,
                answered_at_us: record.received_at_us,
                ..record.clone()
            };
            ledger.append_exchange(&record.request_id, &exchange_digest(&head));
            record.response_bytes = 104;
            recorder.record(record);
            if (n + 1) % BATCH == 0 {
                recorder.flush().await;
                ledger.flush().await?;
            }
        }
        recorder.flush().await;
        ledger.flush().await?;
        let newest = store
            .list_operational_records(&chasqui_catalog::oprecords::RecordFilter {
                limit: 1,
                ..Default::default()
            })
            .await?;
        anyhow::ensure!(newest.len() == 1, "no record was stored");
        println!("{exchanges} exchanges recorded");
        anyhow::Ok(())
    })
}
