//! Crash test of the audit ledger: concurrent clients load the real
//! gateway, which is killed with SIGKILL mid-load. After it, `chasqui audit
//! verify` passes, and the acknowledged exchanges (answers the clients
//! received, by their `x-request-id`) missing from the ledger are within the
//! stated bound: none under `ledger_durability = strict` (the store's commits
//! and what `audit verify` recovers from the journal); under `batched`,
//! only exchanges answered in the last moments before the kill. The gateway
//! then restarts on the same store, continues the chain, and verifies again.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// Concurrent clients.
const CLIENTS: usize = 16;
/// Answers to wait for before the kill (or [`LOAD_FOR`], whichever first).
const KILL_AFTER_ANSWERS: usize = 2_000;
const LOAD_FOR: Duration = Duration::from_secs(3);

fn catalog(echo: &Upstream) -> String {
    format!(
        "entities:
  - {{code: a, name: Entidad A}}
  - {{code: c, name: Consumidora}}
services:
  - {{entity: a, code: personas, version: 1, name: Personas, category: Salud, environments: {{pruebas: {{upstreams: [\"{}\"]}}}}}}
consumers:
  - entity: c
    code: sys
    name: Sistema
    grants:
      - {{service: a/v1, environments: [pruebas]}}
    tokens:
      - {{environment: pruebas, label: test}}
",
        echo.url()
    )
}

fn verify(dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(CHASQUI)
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

async fn exchanges_in_ledger(dir: &Path) -> HashSet<String> {
    let store = chasqui_catalog::Store::open_sqlite(&dir.join("chasqui.db"))
        .await
        .unwrap();
    let ids: Vec<(String,)> =
        sqlx::query_as("SELECT request_id FROM ledger_entries WHERE kind = 'exchange'")
            .fetch_all(store.pool())
            .await
            .unwrap();
    store.close().await;
    ids.into_iter().map(|(id,)| id).collect()
}

/// Loads the gateway, kills it, and returns the acknowledged request ids
/// with how long before the kill each was acknowledged.
async fn load_and_kill(gw: &Gateway) -> Vec<(String, Duration)> {
    let token = gw.token("test").to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let acks: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let client = gw.https_client(true);
        let url = gw.url(&format!("/a/v1/personas/{n}"));
        let (token, stop, answered, acks) =
            (token.clone(), stop.clone(), answered.clone(), acks.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(resp) = client.get(&url).bearer_auth(&token).send().await else {
                    break;
                };
                let id = resp.headers().get("x-request-id").cloned();
                // Acknowledged = the whole answer received.
                if resp.status() == 200 && resp.bytes().await.is_ok() {
                    if let Some(id) = id {
                        let at = Instant::now();
                        acks.lock()
                            .unwrap()
                            .push((id.to_str().unwrap().to_string(), at));
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let began = Instant::now();
    while answered.load(Ordering::Relaxed) < KILL_AFTER_ANSWERS && began.elapsed() < LOAD_FOR {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.kill();
    let killed = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let acks = acks.lock().unwrap();
    acks.iter()
        .filter(|(_, at)| *at <= killed)
        .map(|(id, at)| (id.clone(), killed - *at))
        .collect()
}

async fn crash_once(durability: &str) -> (usize, usize, Option<Duration>) {
    let echo = Upstream::start("a", Behavior::Echo).await;
    let mut gw = Gateway::start_with_env(
        &catalog(&echo),
        TEST_POLICY,
        &[
            ("CHASQUI_LEDGER_DURABILITY", durability),
            ("CHASQUI_ACCESS_LOG", "false"),
        ],
    )
    .await;
    let began = Instant::now();
    let acked = load_and_kill(&gw).await;
    let took = began.elapsed();
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "killed, not exited: {status}");

    // What the store held at the kill; `audit verify` first recovers what
    // strict durability journaled and the store did not commit yet.
    let committed = exchanges_in_ledger(gw.dir.path()).await.len();
    let (ok, out) = verify(gw.dir.path());
    assert!(ok, "the ledger does not verify after SIGKILL: {out}");
    let in_ledger = exchanges_in_ledger(gw.dir.path()).await;
    let missing: Vec<&(String, Duration)> = acked
        .iter()
        .filter(|(id, _)| !in_ledger.contains(id))
        .collect();
    let oldest_missing = missing.iter().map(|(_, age)| *age).max();
    println!(
        "ledger_durability={durability}: {} clients, {} exchanges acknowledged in {:.2} s ({:.0}/s), \
         {} exchange entries in the ledger after SIGKILL ({committed} committed, {} recovered \
         from the journal), {} acknowledged exchanges missing \
         (oldest acknowledged {:?} before the kill); audit verify: {out}",
        CLIENTS,
        acked.len(),
        took.as_secs_f64(),
        acked.len() as f64 / took.as_secs_f64(),
        in_ledger.len(),
        in_ledger.len() - committed,
        missing.len(),
        oldest_missing,
    );
    assert!(acked.len() > 100, "too little load to mean anything");

    // Restart on the same store: the chain continues and verifies.
    gw.spawn().await;
    for _ in 0..3 {
        let resp = gw.get("/a/v1/personas/1", gw.token("test")).await;
        assert_eq!(resp.status(), 200);
    }
    gw.terminate();
    assert!(gw.wait_exit(Duration::from_secs(15)).success());
    let (ok, out) = verify(gw.dir.path());
    assert!(ok, "the ledger does not verify after the restart: {out}");
    assert_eq!(
        exchanges_in_ledger(gw.dir.path()).await.len(),
        in_ledger.len() + 3,
        "a graceful stop writes every exchange"
    );
    (acked.len(), missing.len(), oldest_missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_exchange_in_strict_mode() {
    let (acked, missing, _) = crash_once("strict").await;
    assert_eq!(
        missing, 0,
        "strict durability lost {missing} of {acked} acknowledged exchanges"
    );
    // Batched: the stated bound is the last flush period (50 ms) plus one
    // write; the margin covers a loaded two-core machine's scheduling.
    let (_, _, oldest) = crash_once("batched").await;
    if let Some(age) = oldest {
        assert!(
            age < Duration::from_millis(1000),
            "batched durability lost an exchange acknowledged {age:?} before the kill"
        );
    }
}
