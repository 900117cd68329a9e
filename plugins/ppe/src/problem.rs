//! The plugin's RFC 9457 problem documents: one stable `type` per way a request can fail.
//!
//! Every type is `https://chasqui.agetic.gob.bo/problems/ppe/<slug>`; clients may branch
//! on it. Titles are bilingual (Spanish / English), details English, as the gateway's own.

use chasqui_plugin_sdk::{host, Response};
use serde_json::{Map, Value};

/// The prefix of every problem type of this plugin.
pub const TYPE_PREFIX: &str = "https://chasqui.agetic.gob.bo/problems/ppe/";

/// One kind of problem: its status, slug and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The HTTP status.
    pub status: u16,
    /// The last segment of the type URI.
    pub slug: &'static str,
    /// The human title (Spanish / English).
    pub title: &'static str,
}

impl Kind {
    /// The full problem type URI.
    pub fn type_uri(&self) -> String {
        format!("{TYPE_PREFIX}{}", self.slug)
    }
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $name:ident = $status:literal, $slug:literal, $title:literal;)*) => {
        $($(#[$doc])* pub const $name: Kind = Kind { status: $status, slug: $slug, title: $title };)*
        /// Every kind, for documentation and tests.
        pub const ALL: &[Kind] = &[$($name),*];
    };
}

kinds! {
    /// A POST that must carry a JSON body carried none.
    BODY_REQUIRED = 400, "body-required", "Cuerpo requerido / Body required";
    /// The body is not JSON, not UTF-8, not an object, or repeats a member name.
    INVALID_JSON = 400, "invalid-json", "JSON inválido / Invalid JSON";
    /// A field is missing or has a wrong type or value; `field` names it.
    INVALID_FIELD = 400, "invalid-field", "Campo inválido / Invalid field";
    /// `montoTotal` is not a positive amount with at most two decimals.
    INVALID_AMOUNT = 400, "invalid-amount", "Monto inválido / Invalid amount";
    /// `moneda` is not BOB.
    UNSUPPORTED_CURRENCY = 400, "unsupported-currency", "Moneda no admitida / Unsupported currency";
    /// `metodoPago` is not CPT, QR or TARJETA.
    INVALID_METHOD = 400, "invalid-method", "Método de pago inválido / Invalid payment method";
    /// `vigenciaDias` is not allowed for the method.
    INVALID_VALIDITY = 400, "invalid-validity", "Vigencia inválida / Invalid validity";
    /// `canal` of a simulated payment is missing or wrong.
    INVALID_CHANNEL = 400, "invalid-channel", "Canal de pago inválido / Invalid payment channel";
    /// The gateway gave no consumer entity: payments must be attributable.
    CONSUMER_UNIDENTIFIED = 401, "consumer-unidentified", "Entidad consumidora no identificada / Consumer entity not identified";
    /// No payment with that id belongs to the calling entity.
    PAYMENT_NOT_FOUND = 404, "payment-not-found", "Pago no encontrado / Payment not found";
    /// The route does not exist (in this environment).
    ROUTE_NOT_FOUND = 404, "route-not-found", "Ruta no encontrada / Route not found";
    /// The route exists with another HTTP method; `allow` lists it.
    METHOD_NOT_ALLOWED = 405, "method-not-allowed", "Método HTTP no permitido / Method not allowed";
    /// The debt code was already used by this entity for a payment with other content.
    IDEMPOTENCY_CONFLICT = 409, "idempotency-conflict", "Conflicto de pago único / Single-payment conflict";
    /// The first request with this debt code is still being processed.
    PAYMENT_IN_PROGRESS = 409, "payment-in-progress", "Pago en curso / Payment in progress";
    /// The payment exists but its first answer cannot be replayed.
    PAYMENT_ALREADY_CREATED = 409, "payment-already-created", "Pago ya registrado / Payment already registered";
    /// The payment is already paid.
    PAYMENT_NOT_PENDING = 409, "payment-not-pending", "Pago no pendiente / Payment not pending";
    /// The payment's validity has passed.
    PAYMENT_EXPIRED = 409, "payment-expired", "Pago expirado / Payment expired";
    /// The body is larger than the configured maximum.
    BODY_TOO_LARGE = 413, "body-too-large", "Cuerpo demasiado grande / Body too large";
    /// The body is declared as something other than JSON.
    UNSUPPORTED_MEDIA_TYPE = 415, "unsupported-media-type", "Tipo de contenido no admitido / Unsupported media type";
    /// The amount is over the method's limit.
    AMOUNT_OVER_LIMIT = 422, "amount-over-limit", "Monto fuera de límite / Amount over the limit";
    /// The gateway's key-value state could not be used; retry later.
    STATE_UNAVAILABLE = 503, "state-unavailable", "Estado no disponible / State unavailable";
}

/// A refused request: the problem to answer with.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// What kind of problem.
    pub kind: Kind,
    /// The detail sentence.
    pub detail: String,
    /// Extension members of the problem document (e.g. `field`).
    pub extensions: Map<String, Value>,
    /// Extra response header fields (e.g. `retry-after`).
    pub headers: Vec<(&'static str, String)>,
}

impl Rejection {
    /// A rejection of `kind` with this detail.
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Rejection {
            kind,
            detail: detail.into(),
            extensions: Map::new(),
            headers: Vec::new(),
        }
    }

    /// An `invalid-field` rejection naming the field (dotted path, e.g. `datosPago.correo`).
    pub fn field(field: &str, detail: impl Into<String>) -> Self {
        Rejection::new(INVALID_FIELD, detail).with("field", field)
    }

    /// Adds an extension member.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(name.to_string(), value.into());
        self
    }

    /// Adds a response header field.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The problem response; counts it in `rejected_total{reason}`.
    pub fn into_response(self) -> Response {
        host::metrics::counter_add("rejected_total", 1, &[("reason", self.kind.slug)]);
        let mut body = Map::new();
        body.insert("type".into(), Value::String(self.kind.type_uri()));
        body.insert("title".into(), Value::String(self.kind.title.into()));
        body.insert("status".into(), Value::from(self.kind.status));
        body.insert("detail".into(), Value::String(self.detail));
        body.extend(self.extensions);
        let mut response = Response::new(self.kind.status)
            .with_header("content-type", "application/problem+json")
            .with_body(serde_json::to_vec(&Value::Object(body)).unwrap_or_default());
        for (name, value) in self.headers {
            response = response.with_header(name, value);
        }
        response
    }
}

/// A `state-unavailable` rejection with `Retry-After`.
pub fn state_unavailable(retry_after_seconds: u32, what: &str) -> Rejection {
    host::log::warn(&format!("key-value state unavailable: {what}"));
    Rejection::new(
        STATE_UNAVAILABLE,
        "the payment state store cannot be used right now; retry later",
    )
    .with_header("retry-after", retry_after_seconds.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_unique_and_uri_safe() {
        for (i, kind) in ALL.iter().enumerate() {
            assert!(kind
                .slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-'));
            assert!(kind.title.contains(" / "), "{} is bilingual", kind.slug);
            assert!(ALL[..i].iter().all(|other| other.slug != kind.slug));
        }
        assert_eq!(
            AMOUNT_OVER_LIMIT.type_uri(),
            "https://chasqui.agetic.gob.bo/problems/ppe/amount-over-limit"
        );
    }
}
