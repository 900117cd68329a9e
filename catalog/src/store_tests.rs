//! The store's own reads and writes, on SQLite and on PostgreSQL: the SQL is
//! shared, so each test runs once per database.

use crate::deferred::{DeferredOutcome, NewDeferred};
use crate::incidents::{FeeKey, Incident, IncidentFilter, Recipient};
use crate::model::{now_unix, Environment};
use crate::store::Store;
use crate::testdb::on_both_databases;

const CATALOG: &str = "entities:
  - {code: segip, name: SEGIP}
  - {code: sin, name: SIN}
services:
  - entity: segip
    code: personas
    version: 1
    name: Personas
    category: Identificación
    environments:
      pruebas: {upstreams: [\"http://127.0.0.1:9\"]}
      produccion: {upstreams: [\"http://127.0.0.2:9\", {url: \"http://127.0.0.3:9\", weight: 3}]}
consumers:
  - entity: sin
    code: portal
    name: Portal
    grants:
      - {service: segip/v1, environments: [pruebas]}
";

async fn imported(store: &Store) -> i64 {
    let file = crate::import::parse(CATALOG).unwrap();
    store
        .import(&file, std::path::Path::new("."))
        .await
        .unwrap();
    store.consumer_id("sin", "portal").await.unwrap()
}

on_both_databases! {
    async fn snapshot_and_token_lifecycle(store: Store) {
        let consumer = imported(&store).await;
        let snapshot = store.load_snapshot().await.unwrap();
        assert_eq!(snapshot.seq, store.change_seq().await.unwrap());
        let [service] = snapshot.services.as_slice() else {
            panic!("one service: {:?}", snapshot.services)
        };
        assert_eq!((service.entity_code.as_str(), service.version), ("segip", 1));
        let prod = service.environment(Environment::Produccion).unwrap();
        assert_eq!(
            prod.upstreams.iter().map(|u| u.weight).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(snapshot.grants, [(consumer, service.id, Environment::Pruebas)]);

        let before = store.change_seq().await.unwrap();
        let issued = store
            .issue_token(consumer, Environment::Pruebas, "ci", None)
            .await
            .unwrap();
        assert!(store.change_seq().await.unwrap() > before);
        let record = store.lookup_token(&issued.hash).await.unwrap().unwrap();
        assert_eq!(
            (record.consumer_code.as_str(), record.entity_code.as_str()),
            ("portal", "sin")
        );
        assert_eq!(record.revoked_at, None);

        // Last use is bookkeeping: it moves forward only and changes nothing
        // the data plane reloads for.
        let seq = store.change_seq().await.unwrap();
        store
            .record_last_used(&[(record.token_id, 100), (record.token_id, 50)])
            .await
            .unwrap();
        assert_eq!(store.change_seq().await.unwrap(), seq);
        let listed = store.list_tokens(consumer).await.unwrap();
        assert_eq!(listed[0].last_used_at, Some(100));

        // Rotation: a new token, the old one expiring after the overlap.
        let rotated = store.rotate_token(consumer, "ci", 30).await.unwrap();
        let old = store.lookup_token(&issued.hash).await.unwrap().unwrap();
        let overlap_end = old.expires_at.unwrap();
        assert!(overlap_end > now_unix() && overlap_end <= now_unix() + 31);
        // Both tokens now carry the label: the prefix names one of them.
        let prefix = crate::token::display_prefix(&rotated.secret);
        assert_eq!(store.revoke_tokens(consumer, &prefix).await.unwrap(), 1);
        let new = store.lookup_token(&rotated.hash).await.unwrap().unwrap();
        assert!(new.revoked_at.is_some());
        assert_eq!(store.revoke_tokens(consumer, "ci").await.unwrap(), 1);
        assert_eq!(store.revoke_tokens(consumer, "ci").await.unwrap(), 0);
        assert_eq!(store.list_tokens(consumer).await.unwrap().len(), 2);
    }
}

on_both_databases! {
    async fn queues_plugin_state_incidents_and_fees(store: Store) {
        imported(&store).await;
        // Store-and-forward keeps order and bytes.
        for (i, body) in [b"uno".to_vec(), vec![0, 159, 255]].into_iter().enumerate() {
            store
                .enqueue_deferred(&NewDeferred {
                    id: format!("dfr_{i}"),
                    service: "segip/v1".into(),
                    environment: "pruebas".into(),
                    consumer_entity: "sin".into(),
                    consumer_system: "portal".into(),
                    request_id: format!("req{i}"),
                    method: "POST".into(),
                    upstream_path: "/x".into(),
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body,
                    accepted_at_ms: 1_000 + i as i64,
                })
                .await
                .unwrap();
        }
        assert_eq!(
            store.deferred_queues().await.unwrap(),
            [("segip/v1".to_string(), "pruebas".to_string(), 1_000)]
        );
        let next = store.next_deferred("segip/v1", "pruebas").await.unwrap().unwrap();
        assert_eq!((next.id.as_str(), next.body.as_slice()), ("dfr_0", &b"uno"[..]));
        store
            .record_deferred_outcome(
                "dfr_0",
                2_000,
                &DeferredOutcome::Delivered {
                    status: 201,
                    content_type: Some("application/json".into()),
                    body: b"{}".to_vec(),
                },
            )
            .await
            .unwrap();
        assert_eq!(store.deferred_backlog("segip/v1", "pruebas").await.unwrap(), 1);
        let second = store.deferred("dfr_1").await.unwrap().unwrap();
        assert_eq!(second.body, [0, 159, 255]);

        // Durable plugin state: upsert, delete, expiry.
        store.plugin_kv_put("ppe", "a", Some(b"1"), None).await.unwrap();
        store.plugin_kv_put("ppe", "a", Some(b"2"), Some(5_000)).await.unwrap();
        store.plugin_kv_put("ppe", "b", Some(b"3"), None).await.unwrap();
        store.plugin_kv_put("ppe", "b", None, None).await.unwrap();
        assert_eq!(
            store.plugin_kv_load("ppe", 1_000).await.unwrap(),
            [("a".to_string(), b"2".to_vec(), Some(5_000))]
        );
        assert_eq!(store.plugin_kv_prune(6_000).await.unwrap(), 1);

        // Incidents with their notifications, and fee totals that add up.
        let incident = Incident {
            id: "inc_1".into(),
            at_ms: 10,
            plugin: "cgii".into(),
            kind: "cgii.sqli".into(),
            severity: "high".into(),
            summary: "blocked".into(),
            detail: serde_json::json!({"p": 1}),
            blocked: true,
            request_id: "r".into(),
            service: "segip/v1".into(),
            environment: "pruebas".into(),
            consumer_entity: Some("sin".into()),
            consumer_system: Some("portal".into()),
            client_address: None,
            status: "open".into(),
        };
        let to = [Recipient { entity_code: "segip".into(), party: "publisher" }];
        store.insert_incident(&incident, &to).await.unwrap();
        let by_publisher = store
            .list_incidents(&IncidentFilter {
                entity: Some("segip".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(by_publisher, [incident]);
        let key = FeeKey {
            hour_start: 3_600,
            consumer_entity: "sin".into(),
            consumer_system: "portal".into(),
            service: "sefe/v1".into(),
            environment: "produccion".into(),
            item: "factura".into(),
            currency: "BOB".into(),
        };
        store.add_fees(&[(key.clone(), 150, 1)]).await.unwrap();
        store.add_fees(&[(key, 250, 2)]).await.unwrap();
        let totals = store.fee_totals(Some("sin")).await.unwrap();
        assert_eq!((totals[0].amount_minor, totals[0].count), (400, 3));
    }
}

/// On PostgreSQL a revocation through one store handle (one node) wakes the
/// change watcher of another at once.
#[tokio::test]
async fn postgres_announces_changes_to_other_nodes() {
    let db = crate::testdb::postgres().await;
    let node_a = db.store.clone();
    let consumer = imported(&node_a).await;
    let issued = node_a
        .issue_token(consumer, Environment::Pruebas, "ci", None)
        .await
        .unwrap();
    let node_b = Store::open(node_a.postgres_url().unwrap()).await.unwrap();
    let changes = node_b.watch_changes().expect("PostgreSQL watches changes");
    // The first wake-up says "listening now": reload once.
    tokio::time::timeout(std::time::Duration::from_secs(5), changes.notified())
        .await
        .expect("the listener connects");
    let started = std::time::Instant::now();
    assert_eq!(node_a.revoke_tokens(consumer, "ci").await.unwrap(), 1);
    tokio::time::timeout(std::time::Duration::from_secs(1), changes.notified())
        .await
        .expect("node B hears of the revocation within a second");
    let seen = node_b.lookup_token(&issued.hash).await.unwrap().unwrap();
    assert!(seen.revoked_at.is_some());
    eprintln!("notification after {:?}", started.elapsed());
    node_b.close().await;
    db.finish().await;
}

#[tokio::test]
async fn sqlite_has_nothing_to_watch() {
    let db = crate::testdb::sqlite().await;
    assert!(db.store.watch_changes().is_none());
    db.finish().await;
}
