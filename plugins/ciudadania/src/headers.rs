//! The header fields the plugin reads and writes, and how it cleans a request of forged
//! ones.
//!
//! Every field the plugin sets starts with [`PREFIX`]; the upstream can trust them
//! because the plugin removes every field with that prefix that the client sent.

use chasqui_plugin_sdk::{HeaderChanges, RequestHead};

/// The prefix of every field the plugin sets.
pub const PREFIX: &str = "x-ciudadania-";
/// The default header carrying the citizen's token.
pub const TOKEN: &str = "x-ciudadania-token";

/// The citizen's subject identifier (`sub`).
pub const SUB: &str = "x-ciudadania-sub";
/// The citizen's identity-card number (CI).
pub const CI: &str = "x-ciudadania-ci";
/// The citizen's full name, percent-encoded UTF-8.
pub const NOMBRE: &str = "x-ciudadania-nombre";
/// The scopes the token grants, space-separated.
pub const SCOPES: &str = "x-ciudadania-scopes";
/// The citizen's birth date (with the `fecha_nacimiento` scope).
pub const FECHA_NACIMIENTO: &str = "x-ciudadania-fecha-nacimiento";
/// The citizen's e-mail address (with the `email` scope).
pub const EMAIL: &str = "x-ciudadania-email";
/// The citizen's mobile phone number (with the `celular` scope).
pub const CELULAR: &str = "x-ciudadania-celular";

/// The approval request id the plugin assigned.
pub const APROBACION_ID: &str = "x-ciudadania-aprobacion-id";
/// When the approval window closes (RFC 3339).
pub const APROBACION_EXPIRA: &str = "x-ciudadania-aprobacion-expira";
/// The notification id the plugin assigned.
pub const NOTIFICACION_ID: &str = "x-ciudadania-notificacion-id";
/// When the notification was delivered (RFC 3339).
pub const NOTIFICACION_ENTREGADA: &str = "x-ciudadania-notificacion-entregada";
/// The authorization request id the plugin assigned.
pub const AUTORIZACION_ID: &str = "x-ciudadania-autorizacion-id";
/// When the citizen must have answered (RFC 3339).
pub const AUTORIZACION_EXPIRA: &str = "x-ciudadania-autorizacion-expira";
/// The citizen's answer: `ACEPTADA` or `RECHAZADA`.
pub const AUTORIZACION_RESPUESTA: &str = "x-ciudadania-autorizacion-respuesta";
/// The ledger entry kind of a receipt.
pub const RECIBO_TIPO: &str = "x-ciudadania-recibo-tipo";
/// The ledger position of a receipt.
pub const RECIBO_POSICION: &str = "x-ciudadania-recibo-posicion";
/// The ledger hash of a receipt.
pub const RECIBO_HASH: &str = "x-ciudadania-recibo-hash";
/// When the evidence was recorded (RFC 3339).
pub const RECIBO_REGISTRADO: &str = "x-ciudadania-recibo-registrado";

/// Every field the plugin sets; a token header may not be one of them.
const SET_BY_PLUGIN: &[&str] = &[
    SUB,
    CI,
    NOMBRE,
    SCOPES,
    FECHA_NACIMIENTO,
    EMAIL,
    CELULAR,
    APROBACION_ID,
    APROBACION_EXPIRA,
    NOTIFICACION_ID,
    NOTIFICACION_ENTREGADA,
    AUTORIZACION_ID,
    AUTORIZACION_EXPIRA,
    AUTORIZACION_RESPUESTA,
    RECIBO_TIPO,
    RECIBO_POSICION,
    RECIBO_HASH,
    RECIBO_REGISTRADO,
];

/// Whether the plugin sets the field `name` (lowercase) itself.
pub fn is_set_by_plugin(name: &str) -> bool {
    SET_BY_PLUGIN.contains(&name)
}

/// The removals that clean a request before it goes upstream: every `x-ciudadania-*`
/// field the client sent (the plugin alone sets those), and the token header unless
/// `forward_token` keeps it.
pub fn strip(request: &RequestHead, token_header: &str, forward_token: bool) -> HeaderChanges {
    let mut changes = HeaderChanges::new();
    for header in &request.headers {
        let name = header.name.to_ascii_lowercase();
        let is_token = name == token_header;
        let unwanted = if is_token {
            !forward_token
        } else {
            name.starts_with(PREFIX)
        };
        if unwanted && !changes.remove.contains(&name) {
            changes = changes.remove(name);
        }
    }
    changes
}

/// Makes `raw` safe as a header value and reversible: `%`, control characters and every
/// byte outside printable ASCII are percent-encoded (UTF-8), as in RFC 3986.
pub fn encode_value(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(byte >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(byte & 0x0f)]));
        }
    }
    out
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_encoded_only_where_needed() {
        assert_eq!(encode_value("JUAN PEREZ"), "JUAN PEREZ");
        assert_eq!(encode_value("MARÍA ÑUFLO"), "MAR%C3%8DA %C3%91UFLO");
        assert_eq!(encode_value("a%b\r\nc"), "a%25b%0D%0Ac");
    }

    #[test]
    fn strip_removes_forged_fields_and_the_token_once() {
        let request = RequestHead::new("GET", "/")
            .with_header("x-ciudadania-sub", "forged")
            .with_header("X-Ciudadania-CI", "forged")
            .with_header("x-ciudadania-token", "jwt")
            .with_header("x-ciudadania-sub", "again")
            .with_header("accept", "application/json");
        let changes = strip(&request, TOKEN, false);
        assert_eq!(
            changes.remove,
            vec!["x-ciudadania-sub", "x-ciudadania-ci", "x-ciudadania-token"]
        );
        let kept = strip(&request, TOKEN, true);
        assert_eq!(kept.remove, vec!["x-ciudadania-sub", "x-ciudadania-ci"]);
        let custom = strip(
            &RequestHead::new("GET", "/").with_header("x-cd-token", "jwt"),
            "x-cd-token",
            false,
        );
        assert_eq!(custom.remove, vec!["x-cd-token"]);
    }
}
