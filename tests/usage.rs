//! End-to-end test of metering and of the exchanges in the audit ledger: a
//! known mix of calls through the real gateway gives exactly the expected
//! hourly aggregates (`GET /usage`, `GET /usage.csv`), each principal sees
//! only its share, fees are reported (`GET /fees`, `GET /fees.csv`), and
//! every exchange has a ledger entry whose digest is recomputed from its
//! operational record.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use support::*;
use tokio::net::TcpListener;

/// An upstream that answers 404 under `/missing`, else 200 with a fixed body.
async fn upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let missing = req.uri().path().contains("/missing");
                    let _ = req.into_body().collect().await;
                    let (status, body) = if missing {
                        (404, "{\"error\":\"no such person\"}")
                    } else {
                        (200, "{\"nombre\":\"Juana\"}")
                    };
                    Ok::<_, hyper::Error>(
                        Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

fn catalog(upstream: &str) -> String {
    format!(
        "entities:
  - {{code: a, name: Entidad A}}
  - {{code: b, name: Entidad B}}
  - {{code: c, name: Consumidora C}}
  - {{code: d, name: Consumidora D}}
services:
  - {{entity: a, code: personas, version: 1, name: Personas, category: Salud, environments: {{pruebas: {{upstreams: [\"{upstream}\"]}}}}}}
  - {{entity: b, code: vehiculos, version: 1, name: Vehiculos, category: Salud, environments: {{pruebas: {{upstreams: [\"{upstream}\"]}}}}}}
consumers:
  - entity: c
    code: sys
    name: Sistema C
    grants:
      - {{service: a/v1, environments: [pruebas]}}
    tokens:
      - {{environment: pruebas, label: c}}
  - entity: d
    code: sys2
    name: Sistema D
    grants:
      - {{service: a/v1, environments: [pruebas]}}
      - {{service: b/v1, environments: [pruebas]}}
    tokens:
      - {{environment: pruebas, label: d}}
"
    )
}

/// Totals of one consumer x service x environment, summed over hours (a
/// test run may straddle an hour).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Totals {
    calls: i64,
    errors_4xx: i64,
    errors_5xx: i64,
    bytes_in: i64,
    bytes_out: i64,
}

type Key = (String, String, String, String);

fn totals(items: &[Value]) -> BTreeMap<Key, Totals> {
    let mut out: BTreeMap<Key, Totals> = BTreeMap::new();
    for r in items {
        let key = (
            r["consumer_entity"].as_str().unwrap().to_string(),
            r["consumer_system"].as_str().unwrap().to_string(),
            r["service"].as_str().unwrap().to_string(),
            r["environment"].as_str().unwrap().to_string(),
        );
        let t = out.entry(key).or_default();
        let calls = r["calls"].as_i64().unwrap();
        t.calls += calls;
        t.errors_4xx += r["errors_4xx"].as_i64().unwrap();
        t.errors_5xx += r["errors_5xx"].as_i64().unwrap();
        t.bytes_in += r["bytes_in"].as_i64().unwrap();
        t.bytes_out += r["bytes_out"].as_i64().unwrap();
        let buckets: i64 = r["latency_buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_i64().unwrap())
            .sum();
        assert_eq!(buckets, calls, "every call is in one latency bucket: {r}");
        assert_eq!(r["latency_buckets"].as_array().unwrap().len(), 12, "{r}");
    }
    out
}

fn key(e: &str, s: &str, svc: &str, env: &str) -> Key {
    (e.into(), s.into(), svc.into(), env.into())
}

async fn get_json(gw: &Gateway, path: &str, token: &str) -> (u16, Value) {
    let resp = gw
        .client
        .get(gw.admin_url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("admin request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn principal(gw: &Gateway, operator: &str, role: &str, entity: &str) -> String {
    let resp = gw
        .client
        .post(gw.admin_url("/principals"))
        .bearer_auth(operator)
        .json(&serde_json::json!({"role": role, "entity": entity, "name": format!("{role} {entity}")}))
        .send()
        .await
        .expect("principal");
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    v["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_mix_of_calls_gives_exact_aggregates_csv_and_ledger_digests() {
    let upstream = upstream().await;
    let gw = Gateway::start(&catalog(&upstream)).await;
    let (c, d) = (gw.token("c").to_string(), gw.token("d").to_string());
    let operator = gw.admin_token();

    // The mix, with the body bytes each answer carried.
    let mut expected: BTreeMap<Key, Totals> = BTreeMap::new();
    let mut ids: Vec<String> = Vec::new();
    let mut call =
        |k: Key, status: u16, bytes_in: i64, resp_status: u16, body: usize, id: String| {
            assert_eq!(status, resp_status, "{k:?}");
            let t = expected.entry(k).or_default();
            t.calls += 1;
            if (400..500).contains(&status) {
                t.errors_4xx += 1;
            }
            if status >= 500 {
                t.errors_5xx += 1;
            }
            t.bytes_in += bytes_in;
            t.bytes_out += body as i64;
            ids.push(id);
        };
    async fn send(rb: reqwest::RequestBuilder) -> (u16, usize, String) {
        let resp = rb.send().await.expect("call");
        let status = resp.status().as_u16();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        (status, resp.bytes().await.unwrap().len(), id)
    }
    for i in 0..7 {
        let (s, n, id) = send(
            gw.client
                .get(gw.url(&format!("/a/v1/personas/{i}")))
                .bearer_auth(&c),
        )
        .await;
        call(key("c", "sys", "a/v1", "pruebas"), 200, 0, s, n, id);
    }
    for _ in 0..2 {
        let (s, n, id) = send(gw.client.get(gw.url("/a/v1/missing/1")).bearer_auth(&c)).await;
        call(key("c", "sys", "a/v1", "pruebas"), 404, 0, s, n, id);
    }
    // No grant: refused after authentication, so it counts for c.
    let (s, n, id) = send(gw.client.get(gw.url("/b/v1/vehiculos/1")).bearer_auth(&c)).await;
    call(key("c", "sys", "b/v1", "pruebas"), 403, 0, s, n, id);
    for _ in 0..2 {
        let (s, n, id) = send(gw.client.get(gw.url("/b/v1/vehiculos/2")).bearer_auth(&d)).await;
        call(key("d", "sys2", "b/v1", "pruebas"), 200, 0, s, n, id);
    }
    let (s, n, id) = send(
        gw.client
            .post(gw.url("/a/v1/personas"))
            .bearer_auth(&d)
            .body("0123456789"),
    )
    .await;
    call(key("d", "sys2", "a/v1", "pruebas"), 200, 10, s, n, id);
    // No token: nobody's, under the empty consumer.
    let (s, n, id) = send(gw.client.get(gw.url("/a/v1/personas/9"))).await;
    call(key("", "", "a/v1", ""), 401, 0, s, n, id);
    let total_calls: i64 = expected.values().map(|t| t.calls).sum();
    assert_eq!(total_calls, 14);

    // The aggregates are written off the request path: poll.
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let (status, report) = get_json(&gw, "/usage", &operator).await;
        assert_eq!(status, 200, "{report}");
        let seen: i64 = report["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["calls"].as_i64().unwrap())
            .sum();
        if seen >= total_calls {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "usage incomplete after 10 s: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        report["latency_buckets_ms"],
        serde_json::json!([5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000])
    );
    assert_eq!(totals(report["items"].as_array().unwrap()), expected);

    // Filters.
    let (_, only_c) = get_json(&gw, "/usage?entity=c&env=pruebas", &operator).await;
    let only_c = totals(only_c["items"].as_array().unwrap());
    assert_eq!(only_c.len(), 2);
    assert_eq!(only_c[&key("c", "sys", "a/v1", "pruebas")].calls, 9);
    let (_, service_b) = get_json(&gw, "/usage?service=b/v1", &operator).await;
    assert_eq!(totals(service_b["items"].as_array().unwrap()).len(), 2);
    let (_, none) = get_json(&gw, "/usage?env=produccion", &operator).await;
    assert_eq!(none["items"], serde_json::json!([]));
    let (_, future) = get_json(&gw, "/usage?from=99999999999", &operator).await;
    assert_eq!(future["items"], serde_json::json!([]));
    let (status, bad) = get_json(&gw, "/usage?env=staging", &operator).await;
    assert_eq!(status, 422, "{bad}");

    // A consumer sees its own calls only; a publisher the calls to its services.
    let consumer_c = principal(&gw, &operator, "consumer", "c").await;
    let (status, mine) = get_json(&gw, "/usage", &consumer_c).await;
    assert_eq!(status, 200);
    assert_eq!(totals(mine["items"].as_array().unwrap()), only_c);
    let (status, other) = get_json(&gw, "/usage?entity=d", &consumer_c).await;
    assert_eq!(status, 403, "{other}");
    let publisher_b = principal(&gw, &operator, "publisher", "b").await;
    let (status, theirs) = get_json(&gw, "/usage", &publisher_b).await;
    assert_eq!(status, 200);
    let theirs = totals(theirs["items"].as_array().unwrap());
    assert_eq!(
        theirs.keys().cloned().collect::<Vec<_>>(),
        vec![
            key("c", "sys", "b/v1", "pruebas"),
            key("d", "sys2", "b/v1", "pruebas")
        ]
    );
    let (status, _) = get_json(&gw, "/usage?service=a/v1", &publisher_b).await;
    assert_eq!(status, 403);

    // CSV: a header row, then one row per aggregate.
    let csv = gw
        .client
        .get(gw.admin_url("/usage.csv?entity=d"))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "hour,hour_start,consumer_entity,consumer_system,service,environment,calls,errors_4xx,errors_5xx,bytes_in,bytes_out,latency_mean_ms,latency_le_5ms,latency_le_10ms,latency_le_25ms,latency_le_50ms,latency_le_100ms,latency_le_250ms,latency_le_500ms,latency_le_1000ms,latency_le_2500ms,latency_le_5000ms,latency_le_10000ms,latency_gt_10000ms"
    );
    let mut csv_totals: BTreeMap<Key, Totals> = BTreeMap::new();
    for line in &lines[1..] {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 24, "{line}");
        assert!(f[0].ends_with(":00:00Z"), "{line}");
        let n = |i: usize| f[i].parse::<i64>().unwrap();
        let buckets: i64 = (12..24).map(n).sum();
        assert_eq!(buckets, n(6), "{line}");
        let t = csv_totals.entry(key(f[2], f[3], f[4], f[5])).or_default();
        t.calls += n(6);
        t.errors_4xx += n(7);
        t.errors_5xx += n(8);
        t.bytes_in += n(9);
        t.bytes_out += n(10);
    }
    let expected_d: BTreeMap<Key, Totals> = expected
        .iter()
        .filter(|(k, _)| k.0 == "d")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(csv_totals, expected_d);
    assert_eq!(
        expected_d[&key("d", "sys2", "a/v1", "pruebas")],
        Totals {
            calls: 1,
            errors_4xx: 0,
            errors_5xx: 0,
            bytes_in: 10,
            bytes_out: 18
        }
    );

    // Fees recorded by plugins are reported with the same filters.
    let store = chasqui_catalog::Store::open_sqlite(&gw.dir.path().join("chasqui.db"))
        .await
        .unwrap();
    let hour = report["items"][0]["hour_start"].as_i64().unwrap();
    sqlx::query(
        "INSERT INTO metering_fees (hour_start, consumer_entity, consumer_system, service, environment, item, currency, amount_minor, count)
         VALUES ($1, 'c', 'sys', 'a/v1', 'pruebas', 'qr', 'BOB', 450, 3)",
    )
    .bind(hour)
    .execute(store.pool())
    .await
    .unwrap();
    let (status, fees) = get_json(&gw, "/fees?entity=c", &operator).await;
    assert_eq!(status, 200);
    assert_eq!(fees["items"].as_array().unwrap().len(), 1, "{fees}");
    assert_eq!(fees["items"][0]["amount_minor"], 450);
    assert_eq!(fees["items"][0]["item"], "qr");
    let fees_csv = gw
        .client
        .get(gw.admin_url("/fees.csv"))
        .bearer_auth(&consumer_c)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fee_lines: Vec<&str> = fees_csv.lines().collect();
    assert_eq!(
        fee_lines[0],
        "hour,hour_start,consumer_entity,consumer_system,service,environment,item,currency,amount_minor,count"
    );
    assert_eq!(fee_lines.len(), 2, "{fees_csv}");
    assert!(
        fee_lines[1].ends_with(",c,sys,a/v1,pruebas,qr,BOB,450,3"),
        "{fees_csv}"
    );
    let (_, fees_b) = get_json(&gw, "/fees", &publisher_b).await;
    assert_eq!(fees_b["items"], serde_json::json!([]));

    // Every exchange is in the ledger, its digest that of its record.
    let (_, records) = get_json(&gw, "/records?limit=100", &operator).await;
    let records: HashMap<String, Value> = records["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    // Strict durability journals each entry before its answer; the store
    // gets it with the ledger's next batch: poll.
    let deadline = Instant::now() + Duration::from_secs(10);
    let in_ledger: HashMap<String, (String, String)> = loop {
        let entries: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT request_id, actor, payload FROM ledger_entries WHERE kind = 'exchange'",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        let in_ledger: HashMap<String, (String, String)> = entries
            .into_iter()
            .map(|(id, actor, payload)| (id, (actor, payload)))
            .collect();
        if ids.iter().all(|id| in_ledger.contains_key(id)) || Instant::now() > deadline {
            break in_ledger;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for id in &ids {
        let (actor, payload) = in_ledger
            .get(id)
            .unwrap_or_else(|| panic!("exchange {id} is not in the ledger"));
        assert_eq!(actor, "gateway");
        let record: chasqui_catalog::oprecords::OperationalRecord = {
            let r = &records[id];
            chasqui_catalog::oprecords::OperationalRecord {
                request_id: id.as_str().into(),
                trace_id: r["trace_id"].as_str().map(Into::into),
                consumer_entity: r["consumer_entity"].as_str().unwrap().into(),
                consumer_system: r["consumer_system"].as_str().unwrap().into(),
                service: r["service"].as_str().unwrap().into(),
                route: r["route"].as_str().unwrap().into(),
                environment: r["environment"].as_str().unwrap().into(),
                method: r["method"].as_str().unwrap().into(),
                status: r["status"].as_u64().unwrap() as u16,
                request_bytes: r["request_bytes"].as_u64().unwrap(),
                response_bytes: r["response_bytes"].as_u64().unwrap(),
                received_at_us: r["received_at_us"].as_i64().unwrap(),
                sent_upstream_at_us: r["sent_upstream_at_us"].as_i64(),
                upstream_answered_at_us: r["upstream_answered_at_us"].as_i64(),
                answered_at_us: r["answered_at_us"].as_i64().unwrap(),
                plugin_outcome: Default::default(),
                error_type: Default::default(),
            }
        };
        assert_eq!(
            payload,
            &chasqui::ledger::exchange_payload(&record),
            "the digest of {id} is not that of its record"
        );
    }
    drop(gw);
}
