//! The demo of the embedded default: a catalog imported into an empty store
//! and a small upstream with synthetic data that its services point to.

use async_trait::async_trait;
use chasqui_catalog::Store;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::path::Path;

/// The demo catalog (YAML).
pub const DEMO_CATALOG: &str = include_str!("catalog.yaml");

/// Imports the demo catalog if the store holds no entity yet; returns
/// whether it did.
pub async fn seed_if_empty(store: &Store) -> anyhow::Result<bool> {
    let entities = store.entity_count().await?;
    if entities > 0 {
        return Ok(false);
    }
    let file = chasqui_catalog::import::parse(DEMO_CATALOG)?;
    store.import(&file, Path::new(".")).await?;
    Ok(true)
}

/// The demo upstream: answers like the publishers' systems would, with
/// synthetic records, and echoes the identity headers the gateway set.
pub struct DemoUpstream;

#[async_trait]
impl ServeHttp for DemoUpstream {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let consumer = format!(
            "{}/{}",
            header("x-chasqui-consumer-entity"),
            header("x-chasqui-consumer-system")
        );
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (status, body) = match segments.as_slice() {
            ["segip", env, "personas", ci]
                if ci.chars().all(|c| c.is_ascii_digit()) && !ci.is_empty() =>
            {
                (
                    200,
                    serde_json::json!({
                        "finalizado": true,
                        "mensaje": "Consulta realizada (datos sintéticos)",
                        "datos": {
                            "numeroDocumento": ci,
                            "nombres": "JUANA",
                            "primerApellido": "MAMANI",
                            "segundoApellido": "QUISPE",
                            "fechaNacimiento": "1990-05-17",
                            "entorno": env,
                            "consumidor": consumer,
                        }
                    }),
                )
            }
            ["fundempresa", env, "nit", nit] => (
                200,
                serde_json::json!({
                    "finalizado": true,
                    "mensaje": "Consulta realizada (datos sintéticos)",
                    "datos": { "nit": nit, "razonSocial": "EMPRESA DEMO S.R.L.", "matricula": "00123456", "entorno": env }
                }),
            ),
            // Production stand-ins for AGETIC's systems behind their plugins:
            // they accept what the plugin let through and say what they got.
            [system @ ("ciudadania" | "ppe" | "sefe"), "produccion", rest @ ..] => (
                if req.method == http::Method::POST {
                    201
                } else {
                    200
                },
                serde_json::json!({
                    "finalizado": true,
                    "mensaje": "Respuesta del sistema de demostración (producción simulada)",
                    "datos": {
                        "sistema": system,
                        "metodo": req.method.as_str(),
                        "ruta": format!("/{}", rest.join("/")),
                        "consumidor": consumer,
                        "solicitud": header("x-request-id"),
                    }
                }),
            ),
            _ => (
                404,
                serde_json::json!({ "finalizado": false, "mensaje": "Recurso no encontrado en el servicio de demostración", "datos": null }),
            ),
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
