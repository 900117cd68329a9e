//! The RFC 9457 problem documents this plugin answers with.
//!
//! Every error a client can cause has a stable `type` URI under
//! `https://chasqui.agetic.gob.bo/problems/sefe/`, a bilingual title and a detail that says
//! what to fix. Validation failures also carry `pointer` (the JSON pointer of the first
//! failing member) and `errors`, every failure found, as RFC 9457's example extension does.

use chasqui_plugin_sdk::Response;
use serde_json::json;

/// The prefix of every problem type of this plugin.
pub const TYPE_PREFIX: &str = "https://chasqui.agetic.gob.bo/problems/sefe/";

/// Most validation errors listed in one answer; the detail counts the rest.
pub const MAX_LISTED_ERRORS: usize = 100;

/// A kind of problem: its slug (the last segment of its type), status and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The last segment of the type URI.
    pub slug: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// The title, Spanish then English.
    pub title: &'static str,
}

/// The body is not JSON.
pub const MALFORMED_JSON: Kind = Kind {
    slug: "json-invalido",
    status: 400,
    title: "JSON inválido / Malformed JSON",
};
/// The invoice breaks a rule (field, format or arithmetic).
pub const INVALID_INVOICE: Kind = Kind {
    slug: "factura-invalida",
    status: 422,
    title: "Factura inválida / Invalid invoice",
};
/// The annulment request breaks a rule.
pub const INVALID_ANNULMENT: Kind = Kind {
    slug: "anulacion-invalida",
    status: 422,
    title: "Solicitud de anulación inválida / Invalid annulment request",
};
/// The CUF in the path is not a CUF.
pub const INVALID_CUF: Kind = Kind {
    slug: "cuf-invalido",
    status: 400,
    title: "CUF inválido / Invalid CUF",
};
/// An emission or annulment came without a body.
pub const BODY_REQUIRED: Kind = Kind {
    slug: "cuerpo-requerido",
    status: 400,
    title: "Cuerpo requerido / Request body required",
};
/// The body is larger than `max_body_bytes`.
pub const BODY_TOO_LARGE: Kind = Kind {
    slug: "cuerpo-demasiado-grande",
    status: 413,
    title: "Cuerpo demasiado grande / Request body too large",
};
/// The body is not declared as JSON.
pub const UNSUPPORTED_MEDIA_TYPE: Kind = Kind {
    slug: "tipo-de-contenido",
    status: 415,
    title: "Tipo de contenido no admitido / Unsupported media type",
};
/// No such route (test environment).
pub const UNKNOWN_ROUTE: Kind = Kind {
    slug: "ruta-desconocida",
    status: 404,
    title: "Ruta desconocida / Unknown route",
};
/// Known route, wrong method (test environment).
pub const METHOD_NOT_ALLOWED: Kind = Kind {
    slug: "metodo-no-permitido",
    status: 405,
    title: "Método no permitido / Method not allowed",
};
/// No invoice with that CUF for this consumer (test environment).
pub const INVOICE_NOT_FOUND: Kind = Kind {
    slug: "factura-no-encontrada",
    status: 404,
    title: "Factura no encontrada / Invoice not found",
};
/// The invoice number was already used at that branch and point of sale (test environment).
pub const DUPLICATE_INVOICE: Kind = Kind {
    slug: "factura-duplicada",
    status: 409,
    title: "Factura duplicada / Duplicate invoice",
};
/// The invoice is already annulled (test environment).
pub const ALREADY_ANNULLED: Kind = Kind {
    slug: "factura-ya-anulada",
    status: 409,
    title: "Factura ya anulada / Invoice already annulled",
};
/// The test environment's state store cannot be used.
pub const STATE_UNAVAILABLE: Kind = Kind {
    slug: "estado-no-disponible",
    status: 503,
    title: "Estado de pruebas no disponible / Test state unavailable",
};
/// The audit ledger refused the entry and the policy requires it.
pub const AUDIT_UNAVAILABLE: Kind = Kind {
    slug: "auditoria-no-disponible",
    status: 503,
    title: "Registro de auditoría no disponible / Audit ledger unavailable",
};
/// The gateway called the plugin in an environment it does not know.
pub const UNKNOWN_ENVIRONMENT: Kind = Kind {
    slug: "entorno-desconocido",
    status: 503,
    title: "Entorno desconocido / Unknown environment",
};
/// Something failed inside the plugin.
pub const INTERNAL: Kind = Kind {
    slug: "error-interno",
    status: 500,
    title: "Error interno / Internal error",
};

impl Kind {
    /// The full type URI.
    pub fn type_uri(self) -> String {
        format!("{TYPE_PREFIX}{}", self.slug)
    }

    /// A problem document of this kind with `detail`.
    pub fn respond(self, detail: &str) -> Response {
        Response::problem(self.status, &self.type_uri(), self.title, detail)
    }
}

/// One failed rule: where (JSON pointer), which rule (stable code) and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The JSON pointer of the failing member (`/detalle/2/subTotal`; `` for the document).
    pub pointer: String,
    /// A stable code of the rule: `required`, `type`, `empty`, `length`, `format`, `range`,
    /// `decimals`, `not-allowed`, `conflict`, `date`, `arithmetic`, `unknown-field`,
    /// `duplicate-key`, `too-many`.
    pub code: &'static str,
    /// What is wrong, Spanish then English.
    pub detail: String,
}

impl FieldError {
    /// A failed rule at `pointer`.
    pub fn new(pointer: impl Into<String>, code: &'static str, detail: impl Into<String>) -> Self {
        FieldError {
            pointer: pointer.into(),
            code,
            detail: detail.into(),
        }
    }
}

/// A validation problem (`kind` is 422) listing `errors`, which must not be empty.
pub fn validation(kind: Kind, errors: &[FieldError]) -> Response {
    let first = errors.first();
    let pointer = first.map_or("", |error| error.pointer.as_str());
    let mut detail = match first {
        Some(error) if error.pointer.is_empty() => error.detail.clone(),
        Some(error) => format!("{}: {}", error.pointer, error.detail),
        None => "la solicitud no es válida / the request is invalid".to_string(),
    };
    if errors.len() > 1 {
        detail.push_str(&format!(
            " (y {} error(es) más / and {} more error(s))",
            errors.len() - 1,
            errors.len() - 1
        ));
    }
    let listed: Vec<_> = errors
        .iter()
        .take(MAX_LISTED_ERRORS)
        .map(
            |error| json!({ "pointer": error.pointer, "code": error.code, "detail": error.detail }),
        )
        .collect();
    let body = json!({
        "type": kind.type_uri(),
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
        "pointer": pointer,
        "errors": listed,
    });
    Response::new(kind.status)
        .with_header("content-type", "application/problem+json")
        .with_body(serde_json::to_vec(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn simple_problems_have_the_plugin_type_prefix() {
        let response = BODY_TOO_LARGE.respond("too big");
        assert_eq!(response.status, 413);
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(
            body["type"],
            "https://chasqui.agetic.gob.bo/problems/sefe/cuerpo-demasiado-grande"
        );
        assert_eq!(body["detail"], "too big");
    }

    #[test]
    fn validation_problems_list_every_error_with_its_pointer() {
        let errors = vec![
            FieldError::new("/detalle/2/subTotal", "arithmetic", "no cuadra / mismatch"),
            FieldError::new("/nitEmisor", "format", "mal / bad"),
        ];
        let response = validation(INVALID_INVOICE, &errors);
        assert_eq!(response.status, 422);
        assert_eq!(response.headers[0].value, "application/problem+json");
        let body: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(body["pointer"], "/detalle/2/subTotal");
        assert_eq!(
            body["detail"],
            "/detalle/2/subTotal: no cuadra / mismatch (y 1 error(es) más / and 1 more error(s))"
        );
        assert_eq!(body["errors"][1]["pointer"], "/nitEmisor");
        assert_eq!(body["errors"][1]["code"], "format");
    }

    #[test]
    fn the_list_is_bounded() {
        let errors: Vec<FieldError> = (0..150)
            .map(|i| FieldError::new(format!("/detalle/{i}"), "type", "x"))
            .collect();
        let body: Value =
            serde_json::from_slice(&validation(INVALID_INVOICE, &errors).body).unwrap();
        assert_eq!(body["errors"].as_array().unwrap().len(), MAX_LISTED_ERRORS);
        assert!(body["detail"].as_str().unwrap().contains("149"));
    }
}
