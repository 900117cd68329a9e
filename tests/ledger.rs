//! The audit ledger: hash chain, signed checkpoints, continuity across a
//! restart, and `chasqui audit verify` naming the entry that was altered,
//! removed or moved directly in the store.

use chasqui::ledger::{entry_hash, hex, Ledger};
use chasqui_catalog::oprecords::SmolStr;
use chasqui_catalog::Store;
use std::path::Path;
use std::process::Command;

const CHASQUI: &str = env!("CARGO_BIN_EXE_chasqui");

fn verify(dir: &Path) -> (bool, String) {
    let out = Command::new(CHASQUI)
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

async fn store(dir: &Path) -> Store {
    Store::open_sqlite(&dir.join("chasqui.db")).await.unwrap()
}

/// The ledger of `store` (in `dir`), written as the gateway writes it:
/// through the file's append connection (other tests here write through the
/// sqlx pool).
async fn appending_ledger(dir: &Path, store: &Store) -> std::sync::Arc<Ledger> {
    Ledger::open_appending(
        store.sqlite_pool().unwrap().clone(),
        store.appender().cloned(),
        &dir.join("ledger-ed25519.pk8"),
    )
    .await
    .unwrap()
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sql)
        .execute(store.sqlite_pool().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn the_chain_verifies_and_every_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let ledger = appending_ledger(dir.path(), &store).await;
    let mut receipts = Vec::new();
    for i in 0..12 {
        let payload = format!(
            "{{\"documento\":{i},\"sha256\":\"{}\"}}",
            hex(&[i as u8; 32])
        );
        receipts.push(
            ledger
                .append(
                    "ciudadania.aprobacion",
                    "plugin:test",
                    &format!("req-{i}"),
                    &payload,
                )
                .unwrap(),
        );
    }
    assert_eq!(receipts[0].position, 0);
    assert_eq!(receipts[11].position, 11);
    assert!(ledger.append("Bad Kind", "x", "", "{}").is_err());
    assert!(ledger.append("ok.kind", "x", "", "not json").is_err());
    ledger.checkpoint().await.unwrap();
    // The receipt's hash is the one stored (shown in hex by the view), and
    // recomputable by anyone from the entry and the one before.
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT hash FROM ledger_entries WHERE position >= 10 ORDER BY position",
    )
    .fetch_all(store.sqlite_pool().unwrap())
    .await
    .unwrap();
    assert_eq!(
        stored,
        [receipts[10].hash.clone(), receipts[11].hash.clone()]
    );

    let (ok, out) = verify(dir.path());
    assert!(ok, "{out}");
    assert_eq!(
        out,
        "ledger intact: 12 entries, 1 signed checkpoints verified"
    );

    exec(&store, "CREATE TABLE backup AS SELECT * FROM ledger_log").await;
    let restore = "DELETE FROM ledger_log; INSERT INTO ledger_log SELECT * FROM backup;";

    exec(
        &store,
        "UPDATE ledger_log SET payload = '{\"documento\":99}' WHERE position = 5",
    )
    .await;
    let (ok, out) = verify(dir.path());
    assert!(!ok);
    assert!(out.contains("entry 5 was altered"), "{out}");
    sqlx::raw_sql(restore)
        .execute(store.sqlite_pool().unwrap())
        .await
        .unwrap();

    exec(&store, "DELETE FROM ledger_log WHERE position = 5").await;
    let (ok, out) = verify(dir.path());
    assert!(!ok);
    assert!(out.contains("entry 5 is missing"), "{out}");
    sqlx::raw_sql(restore)
        .execute(store.sqlite_pool().unwrap())
        .await
        .unwrap();

    // Swap the contents of entries 5 and 6 (positions stay).
    sqlx::raw_sql(
        "UPDATE ledger_log SET at_ms = (SELECT at_ms FROM backup b WHERE b.position = 11 - ledger_log.position),
            kind = (SELECT kind FROM backup b WHERE b.position = 11 - ledger_log.position),
            actor = (SELECT actor FROM backup b WHERE b.position = 11 - ledger_log.position),
            request_id = (SELECT request_id FROM backup b WHERE b.position = 11 - ledger_log.position),
            payload = (SELECT payload FROM backup b WHERE b.position = 11 - ledger_log.position),
            digest = (SELECT digest FROM backup b WHERE b.position = 11 - ledger_log.position),
            hash = (SELECT hash FROM backup b WHERE b.position = 11 - ledger_log.position)
         WHERE position IN (5, 6)",
    )
    .execute(store.sqlite_pool().unwrap())
    .await
    .unwrap();
    let (ok, out) = verify(dir.path());
    assert!(!ok);
    assert!(out.contains("entry 5 was moved"), "{out}");
    sqlx::raw_sql(restore)
        .execute(store.sqlite_pool().unwrap())
        .await
        .unwrap();
    assert!(verify(dir.path()).0, "restored");

    // Change the signature's first byte (to `ff`, or to `00` when it is
    // `ff` already: a fixed `ff` left one signature in 256 intact).
    exec(
        &store,
        "UPDATE ledger_checkpoints SET signature =
            CASE WHEN substr(signature, 1, 2) = 'ff' THEN '00' ELSE 'ff' END || substr(signature, 3)",
    )
    .await;
    let (ok, out) = verify(dir.path());
    assert!(!ok);
    assert!(out.contains("invalid signature"), "{out}");
}

#[tokio::test]
async fn the_chain_continues_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ledger-ed25519.pk8");
    let first = {
        let store = store(dir.path()).await;
        let ledger = Ledger::open(store.sqlite_pool().unwrap().clone(), &key)
            .await
            .unwrap();
        let r = ledger.append("a.b", "gateway", "", "{}").unwrap();
        ledger.flush().await.unwrap();
        store.close().await;
        r
    };
    let store = store(dir.path()).await;
    let ledger = Ledger::open(store.sqlite_pool().unwrap().clone(), &key)
        .await
        .unwrap();
    let second = ledger.append("a.b", "gateway", "", "{\"n\":2}").unwrap();
    assert_eq!(second.position, first.position + 1);
    ledger.checkpoint().await.unwrap();
    let (ok, out) = verify(dir.path());
    assert!(ok, "{out}");
    // The hash links to the first entry's.
    let (at_ms,): (i64,) = sqlx::query_as("SELECT at_ms FROM ledger_entries WHERE position = 1")
        .fetch_one(store.sqlite_pool().unwrap())
        .await
        .unwrap();
    let mut prev = [0u8; 32];
    for (i, b) in (0..32)
        .map(|i| u8::from_str_radix(&first.hash[2 * i..2 * i + 2], 16).unwrap())
        .enumerate()
    {
        prev[i] = b;
    }
    assert_eq!(
        hex(&entry_hash(
            &prev,
            1,
            at_ms,
            "a.b",
            "gateway",
            "",
            "{\"n\":2}"
        )),
        second.hash
    );
}

#[tokio::test]
async fn receipts_are_verified_against_signed_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let ledger = Ledger::open(
        store.sqlite_pool().unwrap().clone(),
        &dir.path().join("ledger-ed25519.pk8"),
    )
    .await
    .unwrap();
    let receipts: Vec<_> = (0..6)
        .map(|i| {
            ledger
                .append("doc.approval", "plugin:t", "", &format!("{{\"i\":{i}}}"))
                .unwrap()
        })
        .collect();
    ledger.checkpoint().await.unwrap();
    let late = ledger
        .append("doc.approval", "plugin:t", "", "{\"i\":6}")
        .unwrap();
    ledger.flush().await.unwrap();
    let check = |position: u64, hash: String| {
        let out = Command::new(CHASQUI)
            .args([
                "audit",
                "receipt",
                "--position",
                &position.to_string(),
                "--hash",
                &hash,
                "--data-dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    let (code, out) = check(2, receipts[2].hash.clone());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("covered by checkpoint 5"), "{out}");
    let (code, out) = check(2, receipts[3].hash.clone());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("does not hash"), "{out}");
    let (code, out) = check(late.position, late.hash.clone());
    assert_eq!(code, Some(2), "{out}");
    // Tampering with an entry between the receipt and the checkpoint breaks it.
    exec(
        &store,
        "UPDATE ledger_log SET payload = '{\"i\":40}' WHERE position = 4",
    )
    .await;
    let (code, out) = check(2, receipts[2].hash.clone());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("does not reach checkpoint 5"), "{out}");
}

/// Strict durability's group commit: many requests waiting at once each
/// return only once their own entry is in the store (read back through
/// another connection), and the chain they make verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_committed_exchanges_are_each_stored_before_returning() {
    use std::sync::Arc;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let pool = store.sqlite_pool().unwrap().clone();
    let ledger = Ledger::open(pool.clone(), &dir.path().join("ledger-ed25519.pk8"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let ledger = Arc::clone(&ledger);
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            // The gateway's form of request id: stored in runs.
            let request_id = format!("{i:032x}");
            let digest = [i as u8; 32];
            let committed = ledger
                .commit_exchange(
                    &SmolStr::from(&request_id),
                    &digest,
                    Duration::from_secs(10),
                )
                .await;
            // Read through another connection: committed means stored.
            let stored: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries WHERE request_id = ?")
                    .bind(&request_id)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (committed, stored)
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), (true, 1));
    }
    let report = chasqui::ledger::verify(&pool).await.unwrap();
    assert_eq!(report.entries, 200);
    assert!(report.problem.is_none(), "{:?}", report.problem);
    // Every entry written exactly once, in order.
    let positions: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM ledger_entries ORDER BY position")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(positions, (0..200).collect::<Vec<i64>>());
}

/// The gateway's request id of exchange `i` (32 lowercase hex digits).
fn request_id(i: u8) -> String {
    hex(&[i; 16])
}

/// Exchanges' entries are stored in runs (one row of `ledger_runs` per
/// write, up to 256 entries, 93 bytes each: the digest and the hash as 32
/// bytes); the `ledger_entries` view shows every entry as it was hashed,
/// and a digest, a time or a length changed in a run's body is named.
#[tokio::test]
async fn exchange_entries_are_stored_in_runs_and_their_tampering_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let ledger = appending_ledger(dir.path(), &store).await;
    ledger
        .append("doc.approval", "plugin:t", "r0", "{}")
        .unwrap();
    // One write of 300 entries: exchanges 1 to 299, except 150, whose
    // request id is not the gateway's form (it becomes a row).
    for i in 1..=299u16 {
        let id = if i == 150 {
            "req-150".to_string()
        } else {
            request_id(i as u8)
        };
        ledger.append_exchange(&SmolStr::from(&id), &[i as u8; 32]);
    }
    ledger.checkpoint().await.unwrap();
    let pool = store.sqlite_pool().unwrap();
    let runs: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT first_position, length(body) FROM ledger_runs ORDER BY first_position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(runs, [(1, 149 * 93), (151, 149 * 93)]);
    let rows: Vec<(i64, Option<String>, Vec<u8>, i64)> = sqlx::query_as(
        "SELECT position, payload, digest, length(hash) FROM ledger_log ORDER BY position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1], (150, None, vec![150u8; 32], 32));
    // What the view shows is what was hashed: the chain recomputes from it.
    let shown: Vec<(i64, i64, String, String, String, String, String)> = sqlx::query_as(
        "SELECT position, at_ms, kind, actor, request_id, payload, hash FROM ledger_entries ORDER BY position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(shown.len(), 300);
    assert_eq!(
        (
            shown[2].2.as_str(),
            shown[2].3.as_str(),
            shown[2].4.as_str()
        ),
        ("exchange", "gateway", request_id(2).as_str())
    );
    assert_eq!(
        shown[2].5,
        format!("{{\"digest\":\"{}\",\"v\":1}}", hex(&[2u8; 32]))
    );
    let mut prev = [0u8; 32];
    for (position, at_ms, kind, actor, request_id, payload, hash) in &shown {
        let h = entry_hash(
            &prev,
            *position as u64,
            *at_ms,
            kind,
            actor,
            request_id,
            payload,
        );
        assert_eq!(&hex(&h), hash, "entry {position}");
        prev = h;
    }
    let (ok, out) = verify(dir.path());
    assert!(ok, "{out}");
    assert_eq!(
        out,
        "ledger intact: 300 entries, 1 signed checkpoints verified"
    );
    // A range that starts and ends inside runs exports and verifies offline.
    let mut file = Vec::new();
    let summary = chasqui::ledger::export(pool, 100, Some(200), &mut file)
        .await
        .unwrap();
    assert_eq!((summary.from, summary.to, summary.entries), (100, 200, 101));
    let (_, report) = chasqui::ledger::verify_export(&file[..], None).unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert_eq!(report.entries, 101);
    // The ledger continues after a restart from the last run's last entry.
    drop(ledger);
    let ledger = appending_ledger(dir.path(), &store).await;
    ledger.append_exchange(&SmolStr::from(&request_id(0)), &[0; 32]);
    ledger.flush().await.unwrap();
    let (ok, out) = verify(dir.path());
    assert!(ok && out.contains("301 entries"), "{out}");

    exec(&store, "CREATE TABLE backup AS SELECT * FROM ledger_runs").await;
    let restore = "DELETE FROM ledger_runs; INSERT INTO ledger_runs SELECT * FROM backup;";
    // The digest of entry 2 (the run's second entry, bytes 94 to 186):
    // digest at offset 29 within it.
    for (tampering, named) in [
        (
            "UPDATE ledger_runs SET body = CAST(substr(body, 1, 93 + 29) || zeroblob(32) || substr(body, 93 + 62) AS BLOB) \
             WHERE first_position = 1",
            "entry 2 was altered",
        ),
        // Entry 3's time, one millisecond later (its last digit).
        (
            "UPDATE ledger_runs SET body = CAST(substr(body, 1, 2 * 93 + 12) \
             || CAST(CAST((CAST(CAST(substr(body, 2 * 93 + 13, 1) AS TEXT) AS INTEGER) + 1) % 10 AS TEXT) AS BLOB) \
             || substr(body, 2 * 93 + 14) AS BLOB) WHERE first_position = 1",
            "entry 3 was altered",
        ),
        // Entry 4 cut out of its run: entry 5 now sits at 4.
        (
            "UPDATE ledger_runs SET body = CAST(substr(body, 1, 3 * 93) || substr(body, 4 * 93 + 1) AS BLOB) \
             WHERE first_position = 1",
            "entry 4 was",
        ),
        // The second run deleted.
        (
            "DELETE FROM ledger_runs WHERE first_position = 151",
            "entry 151 is missing (removed)",
        ),
    ] {
        exec(&store, tampering).await;
        let (ok, out) = verify(dir.path());
        assert!(!ok, "{tampering}: {out}");
        assert!(out.contains(named), "{tampering}: {out}");
        exec(&store, restore).await;
        let (ok, out) = verify(dir.path());
        assert!(ok, "restored: {out}");
    }
}

/// Writes `rows` (kind, payload) as the ledger was stored before migration
/// 16 (hex hashes, a `prev_hash` column, exchanges' payloads as text) into a
/// new store file at `path`; returns each entry's hex hash. `bad_hash` is
/// stored instead of the hash of that position, when given.
async fn ledger_before_compact_rows(
    path: &Path,
    rows: &[(&str, String)],
    bad_hash: Option<(usize, &str)>,
) -> Vec<String> {
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    let mut before = sqlx::migrate!("../catalog/migrations/sqlite");
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version <= 15)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&pool).await.unwrap();
    let mut prev = [0u8; 32];
    let mut hashes = Vec::new();
    for (i, (kind, payload)) in rows.iter().enumerate() {
        let request_id = format!("req-{i}");
        let hash = entry_hash(
            &prev,
            i as u64,
            1_000 + i as i64,
            kind,
            "gateway",
            &request_id,
            payload,
        );
        let stored = match bad_hash {
            Some((at, bad)) if at == i => bad.to_string(),
            _ => hex(&hash),
        };
        sqlx::query(
            "INSERT INTO ledger_entries (position, at_ms, kind, actor, request_id, payload, prev_hash, hash)
             VALUES (?, ?, ?, 'gateway', ?, ?, ?, ?)",
        )
        .bind(i as i64)
        .bind(1_000 + i as i64)
        .bind(kind)
        .bind(&request_id)
        .bind(payload)
        .bind(hex(&prev))
        .bind(&stored)
        .execute(&pool)
        .await
        .unwrap();
        hashes.push(hex(&hash));
        prev = hash;
    }
    pool.close().await;
    hashes
}

/// A ledger written before the compact rows verifies after migration 16,
/// its receipts stay valid, and the chain continues from it; a stored hash
/// that is not hex is named as an altered entry, not a failed start.
#[tokio::test]
async fn a_ledger_from_before_the_compact_rows_still_verifies_and_continues() {
    use chasqui::ledger::{verify_receipt, ReceiptCheck};
    let exchange = format!("{{\"digest\":\"{}\",\"v\":1}}", hex(&[7u8; 32]));
    let rows = [
        ("doc.approval", "{\"doc\":1}".to_string()),
        ("exchange", exchange.clone()),
        ("admin.grant.approve", "{}".to_string()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let old_hashes = ledger_before_compact_rows(&dir.path().join("chasqui.db"), &rows, None).await;
    let store = store(dir.path()).await;
    let pool = store.sqlite_pool().unwrap();
    let shown: Vec<(String, String)> =
        sqlx::query_as("SELECT payload, hash FROM ledger_entries ORDER BY position")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(shown[1], (exchange, old_hashes[1].clone()));
    let ledger = appending_ledger(dir.path(), &store).await;
    ledger.append_exchange(&SmolStr::from("req-3"), &[3u8; 32]);
    let next = ledger.append("doc.approval", "plugin:t", "", "{}").unwrap();
    assert_eq!(next.position, 4);
    ledger.checkpoint().await.unwrap();
    let (ok, out) = verify(dir.path());
    assert!(ok, "{out}");
    assert_eq!(
        out,
        "ledger intact: 5 entries, 1 signed checkpoints verified"
    );
    for position in [0, 1, 2] {
        let check = verify_receipt(pool, position, &old_hashes[position as usize])
            .await
            .unwrap();
        assert!(
            matches!(check, ReceiptCheck::Valid { checkpoint: 4, .. }),
            "{position}: {check:?}"
        );
    }
    let check = verify_receipt(pool, 1, &old_hashes[2]).await.unwrap();
    assert!(matches!(check, ReceiptCheck::Invalid(_)), "{check:?}");

    let tampered = tempfile::tempdir().unwrap();
    ledger_before_compact_rows(
        &tampered.path().join("chasqui.db"),
        &rows,
        Some((1, "not a hash")),
    )
    .await;
    let (ok, out) = verify(tampered.path());
    assert!(!ok);
    assert!(out.contains("entry 1 was altered"), "{out}");
}

/// Runs the chasqui binary; its exit code and standard output.
fn chasqui(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(CHASQUI).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// `audit export` writes a range with its checkpoints; `audit verify --file`
/// checks it without the store, pins the node key when asked, says how far a
/// checkpoint covers it, and names an entry altered, removed or moved in the
/// file.
#[tokio::test]
async fn an_exported_range_verifies_offline_and_names_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let ledger = appending_ledger(dir.path(), &store).await;
    for i in 0..12 {
        ledger
            .append("doc.approval", "plugin:t", "", &format!("{{\"i\":{i}}}"))
            .unwrap();
    }
    for i in 12..16u8 {
        ledger.append_exchange(&SmolStr::from(format!("req-{i}")), &[i; 32]);
    }
    ledger.checkpoint().await.unwrap();
    for i in 16..19 {
        ledger
            .append("doc.approval", "plugin:t", "", &format!("{{\"i\":{i}}}"))
            .unwrap();
    }
    ledger.flush().await.unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let file = dir.path().join("range.jsonl");
    let file = file.to_str().unwrap();
    let (code, _) = chasqui(&[
        "audit",
        "export",
        "--from",
        "3",
        "--to",
        "15",
        "--output",
        file,
        "--data-dir",
        data_dir,
    ]);
    assert_eq!(code, Some(0));
    let (code, out) = chasqui(&["audit", "verify", "--file", file]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out,
        "export intact: entries 3 to 15 (13), 1 signed checkpoints verified, all of them covered"
    );
    let (node_key,): (String,) = sqlx::query_as("SELECT public_key FROM ledger_checkpoints")
        .fetch_one(store.sqlite_pool().unwrap())
        .await
        .unwrap();
    let (code, out) = chasqui(&["audit", "verify", "--file", file, "--public-key", &node_key]);
    assert_eq!(code, Some(0), "{out}");
    let other_key = "ab".repeat(32);
    let (code, out) = chasqui(&[
        "audit",
        "verify",
        "--file",
        file,
        "--public-key",
        &other_key,
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("checkpoint at entry 15 has an invalid signature"),
        "{out}"
    );

    // To the end: the entries after the checkpoint are not vouched for.
    let tail = dir.path().join("tail.jsonl");
    let tail = tail.to_str().unwrap();
    let (code, _) = chasqui(&[
        "audit",
        "export",
        "--from",
        "10",
        "--output",
        tail,
        "--data-dir",
        data_dir,
    ]);
    assert_eq!(code, Some(0));
    let (code, out) = chasqui(&["audit", "verify", "--file", tail]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("entries 10 to 18 (9)")
            && out.contains("entries after 15 not covered by a signed checkpoint"),
        "{out}"
    );

    // Tampering with the file. Line 0 is the header, line k entry 2 + k.
    let lines: Vec<String> = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let check = |lines: &[String]| {
        let tampered = dir.path().join("tampered.jsonl");
        std::fs::write(&tampered, lines.join("\n")).unwrap();
        chasqui(&["audit", "verify", "--file", tampered.to_str().unwrap()])
    };
    let mut altered = lines.clone();
    let mut entry: serde_json::Value = serde_json::from_str(&altered[3]).unwrap();
    entry["entry"]["payload"] = "{\"i\":99}".into();
    altered[3] = entry.to_string();
    let (code, out) = check(&altered);
    assert_eq!(code, Some(1));
    assert!(out.contains("entry 5 was altered"), "{out}");
    let mut removed = lines.clone();
    removed.remove(3);
    let (code, out) = check(&removed);
    assert_eq!(code, Some(1));
    assert!(out.contains("entry 5 is missing"), "{out}");
    let mut moved = lines.clone();
    moved.swap(3, 4);
    let (code, out) = check(&moved);
    assert_eq!(code, Some(1));
    assert!(out.contains("entry 5 was moved"), "{out}");
    // The last entry (15, under the checkpoint) dropped.
    let mut cut = lines.clone();
    cut.remove(13);
    let (code, out) = check(&cut);
    assert_eq!(code, Some(1));
    assert!(out.contains("entry 15 is missing"), "{out}");
    // An exchange's digest changed in the file.
    let mut digest = lines.clone();
    let mut entry: serde_json::Value = serde_json::from_str(&digest[11]).unwrap();
    assert_eq!(entry["entry"]["kind"], "exchange");
    entry["entry"]["payload"] = format!("{{\"digest\":\"{}\",\"v\":1}}", hex(&[0u8; 32])).into();
    digest[11] = entry.to_string();
    let (code, out) = check(&digest);
    assert_eq!(code, Some(1));
    assert!(out.contains("entry 13 was altered"), "{out}");
    // Not an export at all.
    let (code, _) = check(&["{\"entry\":{}}".to_string()]);
    assert_eq!(code, Some(1));
}

/// Strict durability's journal: entries journaled and never committed (the
/// process died with them queued) are recovered when the ledger opens
/// again, in order and verified; an offline recovery leaves the journal of
/// a running ledger alone.
#[tokio::test]
async fn journaled_entries_survive_a_crash_before_their_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path()).await;
    let pool = store.sqlite_pool().unwrap().clone();
    let key = dir.path().join("ledger-ed25519.pk8");
    let open = || Ledger::open_journaled(pool.clone(), store.appender().cloned(), &key, dir.path());
    let ledger = open().await.unwrap();
    ledger
        .append("doc.approval", "plugin:t", "r0", "{\"n\":0}")
        .unwrap();
    ledger.flush().await.unwrap();
    for i in 1..=20u8 {
        // Journaled: no wait for the commit.
        assert!(
            ledger
                .commit_exchange(
                    &SmolStr::from(&request_id(i)),
                    &[i; 32],
                    std::time::Duration::ZERO
                )
                .await
        );
    }
    ledger
        .append("doc.approval", "plugin:t", "r21", "{\"n\":21}")
        .unwrap();
    // While it runs, nobody else recovers its journal.
    assert_eq!(
        chasqui::ledger::recover_journal(&pool, dir.path())
            .await
            .unwrap(),
        0
    );
    // The process dies: the queued entries were never written.
    drop(ledger);
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    let ledger = open().await.unwrap();
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT request_id FROM ledger_entries ORDER BY position")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ids.len(), 22);
    assert_eq!(ids[5], request_id(5));
    assert_eq!(ids[21], "r21");
    // The chain goes on from the recovered entries.
    ledger.append_exchange(&SmolStr::from(&request_id(22)), &[22; 32]);
    ledger.flush().await.unwrap();
    let (ok, out) = verify(dir.path());
    assert!(ok, "{out}");
    assert!(out.contains("23 entries"), "{out}");
}
