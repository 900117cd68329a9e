//! Request bodies for the AGETIC plugins, shared by their end-to-end tests.

use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// A PPE debt (`POST .../transaccion/deuda`) for `code`, paid by `method`.
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

/// Now minus a minute as a Bolivian local time (UTC-4), the SIN's form
/// `YYYY-MM-DDTHH:MM:SS.000`.
pub fn bolivian_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let local = now - 4 * 3600 - 60;
    let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The README's example invoice (`plugins/sefe/examples/factura.json`), issued
/// a minute ago with this number: consistent to the centavo.
pub fn invoice(number: u64) -> Value {
    let mut invoice: Value =
        serde_json::from_str(include_str!("../../plugins/sefe/examples/factura.json"))
            .expect("the example invoice is JSON");
    invoice["fechaEmision"] = json!(bolivian_now());
    invoice["numeroFactura"] = json!(number);
    invoice
}
