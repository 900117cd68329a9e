//! Usage reports: the hourly aggregates of the calls
//! ([`chasqui_catalog::usage`]) and the fees plugins recorded, as JSON or
//! CSV. An operator sees everything; a consumer entity the calls it made; a
//! publisher the calls to its services.

use super::ApiResult;
use crate::admin::error::{ApiError, ProblemBody};
use crate::admin::extract::{Auth, Params};
use crate::admin::AppState;
use crate::problem::Problem;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chasqui_catalog::domain::Role;
use chasqui_catalog::usage::{FeeRow, UsageFilter, UsageRow, LATENCY_BUCKETS_MS};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Filters of a usage or fee report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Only calls by this consumer entity (its code). A consumer principal
    /// sees only its own entity's calls.
    pub entity: Option<String>,
    /// Only this service (`entidad/v{n}`). A publisher sees only its own
    /// services.
    pub service: Option<String>,
    /// Only this environment (`pruebas`, `produccion`).
    pub env: Option<String>,
    /// Only hours starting at or after this time (Unix seconds; rounded
    /// down to the hour).
    pub from: Option<i64>,
    /// Only hours starting before this time (Unix seconds).
    pub to: Option<i64>,
}

/// Hourly usage aggregates.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    /// Upper bounds (ms) of the latency buckets; `latency_buckets` has one
    /// more entry, for the calls above the last bound.
    pub latency_buckets_ms: Vec<u64>,
    /// One row per hour x consumer entity x system x service x environment.
    pub items: Vec<UsageRow>,
}

/// Fees recorded by plugins.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeeReport {
    /// One row per hour x consumer x service x environment x item x currency.
    pub items: Vec<FeeRow>,
}

/// Turns the query into a store filter, narrowed to what the principal may
/// see: refuses a filter outside it.
fn filter(auth: &Auth, q: UsageQuery) -> ApiResult<UsageFilter> {
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    if let Some(env) = q.env.as_deref() {
        if !matches!(env, "" | "pruebas" | "produccion") {
            return Err(ApiError::field("env", "must be pruebas or produccion"));
        }
    }
    if let (Some(from), Some(to)) = (q.from, q.to) {
        if to <= from {
            return Err(ApiError::field("to", "must be after from"));
        }
    }
    let mut f = UsageFilter {
        consumer_entity: nonempty(q.entity),
        service: nonempty(q.service),
        service_prefix: None,
        environment: nonempty(q.env),
        from: q.from.map(|t| t.div_euclid(3600) * 3600),
        to: q.to,
    };
    let actor = &auth.actor;
    if actor.is_operator() {
        return Ok(f);
    }
    let Some(own) = actor.entity_code.clone() else {
        return Err(ApiError::new(
            Problem::Forbidden,
            "this principal acts for no entity",
        ));
    };
    match actor.role {
        Role::Consumer => {
            if f.consumer_entity.as_ref().is_some_and(|e| *e != own) {
                return Err(ApiError::new(
                    Problem::Forbidden,
                    "a consumer sees only the calls of its own entity",
                ));
            }
            f.consumer_entity = Some(own);
        }
        Role::Publisher => {
            let prefix = format!("{own}/v");
            if f.service.as_ref().is_some_and(|s| !s.starts_with(&prefix)) {
                return Err(ApiError::new(
                    Problem::Forbidden,
                    "a publisher sees only the usage of its own services",
                ));
            }
            f.service_prefix = Some(prefix);
        }
        Role::Operator => {}
    }
    Ok(f)
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn csv_line(out: &mut String, fields: &[String]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push_str("\r\n");
}

/// `YYYY-MM-DDTHH:00:00Z` of a Unix time (UTC), for people reading a report.
pub fn utc_hour(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let hour = unix.rem_euclid(86_400) / 3600;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:00:00Z")
}

fn csv_response(body: String, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response()
}

/// The header row of `GET /usage.csv`.
pub fn usage_csv_header() -> Vec<String> {
    let mut h: Vec<String> = [
        "hour",
        "hour_start",
        "consumer_entity",
        "consumer_system",
        "service",
        "environment",
        "calls",
        "errors_4xx",
        "errors_5xx",
        "bytes_in",
        "bytes_out",
        "latency_mean_ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    h.extend(
        LATENCY_BUCKETS_MS
            .iter()
            .map(|ms| format!("latency_le_{ms}ms")),
    );
    h.push(format!(
        "latency_gt_{}ms",
        LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1]
    ));
    h
}

async fn usage_rows(auth: &Auth, state: &AppState, q: UsageQuery) -> ApiResult<Vec<UsageRow>> {
    let f = filter(auth, q)?;
    state
        .store
        .usage(&f)
        .await
        .map_err(|e| ApiError::internal(&e))
}

async fn fee_rows(auth: &Auth, state: &AppState, q: UsageQuery) -> ApiResult<Vec<FeeRow>> {
    let f = filter(auth, q)?;
    state
        .store
        .fee_report(&f)
        .await
        .map_err(|e| ApiError::internal(&e))
}

/// Hourly usage: calls, errors by class, bytes and latency histogram per
/// consumer entity x system x service x environment x hour.
#[utoipa::path(get, path = "/usage", tag = "usage", params(UsageQuery),
    responses((status = 200, description = "Hourly usage aggregates", body = UsageReport),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn usage(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<UsageQuery>,
) -> ApiResult<Json<UsageReport>> {
    let items = usage_rows(&auth, &state, q).await?;
    Ok(Json(UsageReport {
        latency_buckets_ms: LATENCY_BUCKETS_MS.to_vec(),
        items,
    }))
}

/// The usage report as CSV (RFC 4180, header row first), same filters.
#[utoipa::path(get, path = "/usage.csv", tag = "usage", params(UsageQuery),
    responses((status = 200, description = "Hourly usage aggregates, CSV with a header row",
            body = String, content_type = "text/csv"),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn usage_csv(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<UsageQuery>,
) -> ApiResult<Response> {
    let items = usage_rows(&auth, &state, q).await?;
    let mut out = String::new();
    csv_line(&mut out, &usage_csv_header());
    for r in &items {
        let mean_ms = if r.calls > 0 {
            format!("{:.3}", r.latency_sum_us as f64 / r.calls as f64 / 1000.0)
        } else {
            "0".into()
        };
        let mut fields = vec![
            utc_hour(r.key.hour_start),
            r.key.hour_start.to_string(),
            r.key.consumer_entity.clone(),
            r.key.consumer_system.clone(),
            r.key.service.clone(),
            r.key.environment.clone(),
            r.calls.to_string(),
            r.errors_4xx.to_string(),
            r.errors_5xx.to_string(),
            r.bytes_in.to_string(),
            r.bytes_out.to_string(),
            mean_ms,
        ];
        fields.extend(r.latency_buckets.iter().map(i64::to_string));
        csv_line(&mut out, &fields);
    }
    Ok(csv_response(out, "usage.csv"))
}

/// Fees recorded by plugins (e.g. PPE's payment fees), same filters.
#[utoipa::path(get, path = "/fees", tag = "usage", params(UsageQuery),
    responses((status = 200, description = "Fee totals", body = FeeReport),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn fees(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<UsageQuery>,
) -> ApiResult<Json<FeeReport>> {
    Ok(Json(FeeReport {
        items: fee_rows(&auth, &state, q).await?,
    }))
}

/// The fee report as CSV (header row first), same filters.
#[utoipa::path(get, path = "/fees.csv", tag = "usage", params(UsageQuery),
    responses((status = 200, description = "Fee totals, CSV with a header row",
            body = String, content_type = "text/csv"),
        (status = 401, body = ProblemBody), (status = 403, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub async fn fees_csv(
    auth: Auth,
    State(state): State<AppState>,
    Params(q): Params<UsageQuery>,
) -> ApiResult<Response> {
    let items = fee_rows(&auth, &state, q).await?;
    let mut out = String::new();
    let header = [
        "hour",
        "hour_start",
        "consumer_entity",
        "consumer_system",
        "service",
        "environment",
        "item",
        "currency",
        "amount_minor",
        "count",
    ];
    csv_line(&mut out, &header.map(String::from));
    for r in &items {
        csv_line(
            &mut out,
            &[
                utc_hour(r.key.hour_start),
                r.key.hour_start.to_string(),
                r.key.consumer_entity.clone(),
                r.key.consumer_system.clone(),
                r.key.service.clone(),
                r.key.environment.clone(),
                r.item.clone(),
                r.currency.clone(),
                r.amount_minor.to_string(),
                r.count.to_string(),
            ],
        );
    }
    Ok(csv_response(out, "fees.csv"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_written_in_utc() {
        assert_eq!(utc_hour(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_hour(1_795_705_200), "2026-11-26T15:00:00Z");
        assert_eq!(utc_hour(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        let mut out = String::new();
        csv_line(&mut out, &["a".into(), "b,c".into(), "d\"e".into()]);
        assert_eq!(out, "a,\"b,c\",\"d\"\"e\"\r\n");
    }
}
