//! Test helpers: a gateway stand-in that drives the plugin's phases the way the proxy
//! does, with a fresh request id per request.

#![allow(dead_code)]

use chasqui_plugin_ppe::Ppe;
use chasqui_plugin_sdk::host::context::Context;
use chasqui_plugin_sdk::serde_json::{self, json, Value};
use chasqui_plugin_sdk::testing::Harness;
use chasqui_plugin_sdk::{
    BodyAction, BodyChunk, Header, HeadersAction, RequestHead, Response, ResponseHead,
};

/// The problem type of a slug.
pub fn problem_type(slug: &str) -> String {
    format!("https://chasqui.agetic.gob.bo/problems/ppe/{slug}")
}

/// An answer the plugin gave.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Value,
}

impl Answer {
    pub fn from_response(response: Response) -> Answer {
        let body = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).expect("the plugin answers JSON")
        };
        Answer {
            status: response.status,
            headers: response.headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }

    /// Asserts a problem document of this slug and status; returns it.
    pub fn problem(&self, status: u16, slug: &str) -> &Value {
        assert_eq!(self.status, status, "{self:#?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        assert_eq!(self.body["type"], problem_type(slug), "{self:#?}");
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"]
            .as_str()
            .is_some_and(|t| t.contains(" / ")));
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
        &self.body
    }

    pub fn datos(&self) -> &Value {
        assert_eq!(self.body["finalizado"], true, "{self:#?}");
        &self.body["datos"]
    }
}

/// What the request phases did with a request.
#[derive(Debug)]
pub enum Sent {
    /// The plugin answered.
    Answered(Answer),
    /// The request goes upstream with this body.
    Forwarded(Vec<u8>),
}

impl Sent {
    pub fn answer(self) -> Answer {
        match self {
            Sent::Answered(answer) => answer,
            Sent::Forwarded(body) => panic!(
                "expected an answer, the request was forwarded with {:?}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    pub fn forwarded(self) -> Vec<u8> {
        match self {
            Sent::Forwarded(body) => body,
            Sent::Answered(answer) => panic!("expected forwarding, got {answer:#?}"),
        }
    }
}

/// The gateway stand-in.
pub struct Gateway {
    pub harness: Harness<Ppe>,
    pub environment: &'static str,
    pub entity: Option<String>,
    pub prefix: &'static str,
    requests: u32,
}

impl Gateway {
    pub fn new(environment: &'static str, config: Value) -> Gateway {
        let harness = Harness::<Ppe>::new(config).expect("a valid configuration");
        Gateway {
            harness,
            environment,
            entity: Some("min-salud".into()),
            prefix: "/ppe/v1",
            requests: 0,
        }
    }

    pub fn pruebas() -> Gateway {
        Gateway::new("pruebas", json!({}))
    }

    pub fn produccion() -> Gateway {
        Gateway::new("produccion", json!({}))
    }

    /// Starts a new request: a fresh request id in the context.
    pub fn next_request(&mut self) -> String {
        self.requests += 1;
        let request_id = format!("req-{:04}", self.requests);
        self.harness.set_context(context(
            self.environment,
            self.entity.as_deref(),
            &request_id,
        ));
        request_id
    }

    /// Runs the request phases; the body (if any) in one chunk.
    pub fn send(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> Sent {
        let mut head = RequestHead::new(method, path);
        if let Some(body) = body {
            head = head
                .with_header("content-type", "application/json")
                .with_header("content-length", body.len().to_string());
        }
        self.send_head(&head, body.map(|b| vec![b.to_vec()]).unwrap_or_default())
    }

    /// Runs the request phases with this head and body chunks (the last ends the stream).
    pub fn send_head(&mut self, head: &RequestHead, chunks: Vec<Vec<u8>>) -> Sent {
        self.next_request();
        match self.harness.request_headers(head) {
            HeadersAction::Respond(response) => {
                return Sent::Answered(Answer::from_response(response))
            }
            HeadersAction::Continue => {}
            HeadersAction::Modify(changes) => panic!("unexpected header changes {changes:?}"),
        }
        let count = chunks.len();
        let mut forwarded = Vec::new();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let last = i + 1 == count;
            match self
                .harness
                .request_body(&BodyChunk::new(chunk.clone(), last))
            {
                BodyAction::Respond(response) => {
                    return Sent::Answered(Answer::from_response(response))
                }
                BodyAction::Replace(bytes) => {
                    if !last {
                        assert!(bytes.is_empty(), "early chunks are held back");
                    }
                    forwarded.extend(bytes);
                }
                BodyAction::Continue => forwarded.extend(chunk),
            }
        }
        Sent::Forwarded(forwarded)
    }

    /// A request the plugin must answer (then the request ends). Without a body and its
    /// length the gateway makes no body call and reaches the (test) upstream: the plugin
    /// answers in the response-headers phase instead, as it does behind the real gateway.
    pub fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        let answer = match self.send(method, path, bytes.as_deref()) {
            Sent::Answered(answer) => answer,
            Sent::Forwarded(forwarded) if body.is_none() && forwarded.is_empty() => {
                match self.harness.response_headers(&ResponseHead::new(502)) {
                    HeadersAction::Respond(response) => Answer::from_response(response),
                    other => panic!("expected the plugin to answer, got {other:?}"),
                }
            }
            sent => sent.answer(),
        };
        self.harness.end_request();
        answer
    }

    pub fn path(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// `POST .../transaccion/deuda`, answered by the plugin.
    pub fn create(&mut self, body: &Value) -> Answer {
        let path = self.path("/transaccion/deuda");
        self.call("POST", &path, Some(body))
    }

    /// `GET .../consulta/estado/{id}`, answered by the plugin.
    pub fn status(&mut self, id: &str) -> Answer {
        let path = self.path(&format!("/consulta/estado/{id}"));
        self.call("GET", &path, None)
    }

    /// `POST .../pruebas/pagar/{id}`, answered by the plugin.
    pub fn pay(&mut self, id: &str, body: Option<&Value>) -> Answer {
        let path = self.path(&format!("/pruebas/pagar/{id}"));
        self.call("POST", &path, body)
    }

    /// produccion: a debt request through the request phases.
    pub fn forward(&mut self, body: &Value) -> Sent {
        let path = self.path("/transaccion/deuda");
        let bytes = serde_json::to_vec(body).unwrap();
        self.send("POST", &path, Some(&bytes))
    }

    /// The upstream's answer through the response phases, then the end of the request.
    /// Returns what the client receives (the plugin may only observe).
    pub fn upstream(&mut self, status: u16, body: &Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        let head = ResponseHead::new(status).with_header("content-type", "application/json");
        assert_eq!(
            self.harness.response_headers(&head),
            HeadersAction::Continue
        );
        assert_eq!(
            self.harness.response_body(&BodyChunk::new(bytes, true)),
            BodyAction::Continue
        );
        self.harness.end_request();
    }

    /// The fees recorded so far as (item, centavos).
    pub fn fees(&self) -> Vec<(String, u64)> {
        self.harness
            .fees()
            .into_iter()
            .map(|fee| {
                assert_eq!(fee.currency, "BOB");
                (fee.item, fee.amount_minor)
            })
            .collect()
    }
}

pub fn context(environment: &str, entity: Option<&str>, request_id: &str) -> Context {
    Context {
        consumer_entity: entity.map(str::to_string),
        consumer_system: entity.map(|_| "sistema-cobros".to_string()),
        service: "ppe/v1".into(),
        environment: environment.into(),
        request_id: request_id.into(),
        trace_id: None,
    }
}

/// A valid debt request.
pub fn debt(code: &str, method: &str, amount: Value) -> Value {
    json!({
        "codigoOrden": code,
        "metodoPago": method,
        "descripcion": "Certificado de antecedentes",
        "datosPago": {
            "nombresCliente": "Juana",
            "apellidosCliente": "Mamani Quispe",
            "tipoDocumentoCliente": 1,
            "numeroDocumentoCliente": "4589632",
            "fechaNacimientoCliente": "1990-05-01",
            "correo": "juana@example.bo",
            "montoTotal": amount,
            "moneda": "BOB"
        }
    })
}

/// The payment id of a creation answer.
pub fn id_of(answer: &Answer) -> String {
    answer.datos()["codigoTransaccion"]
        .as_str()
        .expect("a payment id")
        .to_string()
}
