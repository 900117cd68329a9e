//! RED metrics of the data plane (rate, errors, duration) and their
//! Prometheus text exposition, served by the admin API at `GET /metrics`.
//!
//! Requests are counted per service and environment only: the service's
//! route name from the catalog (`entidad/v{n}`) and `pruebas` or
//! `produccion`. Tokens, consumers and paths never become labels, so the
//! number of series is bounded by the catalog. A request that never routed
//! (no token, unknown service, bad path, health checks, ...) counts under
//! `service="-",environment="-"`.
//!
//! The request path pays for one map look-up under a shard's read lock and a
//! handful of relaxed atomic additions ([`Metrics::record`]); a service's
//! series are created the first time it answers. The exposition
//! ([`render`]) adds, besides the request series, each loaded plugin's own
//! series, the requests in flight, the store-and-forward backlog and the
//! process start time.

use crate::state::Gateway;
use chasqui_catalog::Environment;
use dashmap::DashMap;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The media type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label value of requests that never routed to a service.
pub const UNROUTED: &str = "-";

/// Upper bounds of the latency histogram's buckets, in microseconds.
const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// The same bounds as `le` label values, in seconds.
const BUCKET_LABELS: [&str; 14] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10",
];

/// Status classes; `none` is a request that got no answer (the client left).
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// Classes exposed even while zero, so that rates and ratios exist from the
/// first scrape.
const ALWAYS_SHOWN: [bool; 6] = [false, true, true, true, true, false];

/// Most services with series of their own; beyond it (a catalog far larger
/// than any real one) requests count under [`UNROUTED`].
const MAX_SERVICES: usize = 10_000;

/// Counters of one service in one environment.
#[derive(Debug, Default)]
struct Series {
    classes: [AtomicU64; 6],
    /// Observations per bucket (not cumulative); the last one is `+Inf` only.
    buckets: [AtomicU64; 15],
    duration_us: AtomicU64,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
}

impl Series {
    fn observe(&self, status: u16, elapsed: Duration, request_bytes: u64, response_bytes: u64) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_US.partition_point(|&bound| bound < us);
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.duration_us.fetch_add(us, Ordering::Relaxed);
        self.request_bytes
            .fetch_add(request_bytes, Ordering::Relaxed);
        self.response_bytes
            .fetch_add(response_bytes, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Snapshot {
        let read = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            classes: self.classes.each_ref().map(read),
            buckets: self.buckets.each_ref().map(read),
            duration_us: read(&self.duration_us),
            request_bytes: read(&self.request_bytes),
            response_bytes: read(&self.response_bytes),
        }
    }
}

/// The values of one [`Series`] at one moment.
struct Snapshot {
    classes: [u64; 6],
    buckets: [u64; 15],
    duration_us: u64,
    request_bytes: u64,
    response_bytes: u64,
}

impl Snapshot {
    fn observed(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The series of one service: `pruebas`, `produccion`, and unrouted.
type ServiceSeries = [Series; 3];

/// The request metrics of one gateway process.
#[derive(Debug)]
pub struct Metrics {
    services: DashMap<Box<str>, Box<ServiceSeries>>,
    started: SystemTime,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty metrics; the process start time is now.
    pub fn new() -> Metrics {
        Metrics {
            services: DashMap::new(),
            started: SystemTime::now(),
        }
    }

    /// Counts one finished request: `route` is the service's route name and
    /// environment if it routed, `status` the answer's status (0: none).
    pub fn record(
        &self,
        route: Option<(&str, Environment)>,
        status: u16,
        elapsed: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let (service, slot) = match route {
            Some((service, Environment::Pruebas)) => (service, 0),
            Some((service, Environment::Produccion)) => (service, 1),
            None => (UNROUTED, 2),
        };
        if let Some(series) = self.services.get(service) {
            series[slot].observe(status, elapsed, request_bytes, response_bytes);
            return;
        }
        let (service, slot) = if service != UNROUTED && self.services.len() >= MAX_SERVICES {
            (UNROUTED, 2)
        } else {
            (service, slot)
        };
        self.services.entry(service.into()).or_default().value()[slot].observe(
            status,
            elapsed,
            request_bytes,
            response_bytes,
        );
    }

    /// Every series that counted a request, sorted by service and
    /// environment.
    fn snapshots(&self) -> Vec<(String, &'static str, Snapshot)> {
        let mut all = Vec::new();
        for entry in self.services.iter() {
            let envs = [
                Environment::Pruebas.as_str(),
                Environment::Produccion.as_str(),
                UNROUTED,
            ];
            for (series, env) in entry.value().iter().zip(envs) {
                let snapshot = series.snapshot();
                if snapshot.observed() > 0 {
                    all.push((entry.key().to_string(), env, snapshot));
                }
            }
        }
        all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        all
    }

    /// Seconds since the Unix epoch at which the process started.
    pub fn start_time_seconds(&self) -> f64 {
        self.started
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    /// The request series in the Prometheus text format.
    pub fn render_requests(&self, out: &mut String) {
        let series = self.snapshots();
        let labels = |service: &str, env: &str| {
            format!(
                "service=\"{}\",environment=\"{}\"",
                escape_label(service),
                escape_label(env)
            )
        };
        header(
            out,
            "chasqui_http_requests_total",
            "counter",
            "Requests answered by the data plane, by service, environment and status class (none: the client left before an answer).",
        );
        for (service, env, s) in &series {
            let l = labels(service, env);
            for (i, class) in CLASSES.iter().enumerate() {
                if ALWAYS_SHOWN[i] || s.classes[i] > 0 {
                    let _ = writeln!(
                        out,
                        "chasqui_http_requests_total{{{l},class=\"{class}\"}} {}",
                        s.classes[i]
                    );
                }
            }
        }
        header(
            out,
            "chasqui_http_request_duration_seconds",
            "histogram",
            "Time from the request's arrival to the end of its answer, by service and environment.",
        );
        for (service, env, s) in &series {
            let l = labels(service, env);
            let mut cumulative = 0u64;
            for (i, le) in BUCKET_LABELS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(
                    out,
                    "chasqui_http_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {cumulative}"
                );
            }
            let count = s.observed();
            let _ = writeln!(
                out,
                "chasqui_http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "chasqui_http_request_duration_seconds_sum{{{l}}} {}",
                s.duration_us as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "chasqui_http_request_duration_seconds_count{{{l}}} {count}"
            );
        }
        header(
            out,
            "chasqui_http_request_body_bytes_total",
            "counter",
            "Bytes of request bodies received, by service and environment.",
        );
        for (service, env, s) in &series {
            let _ = writeln!(
                out,
                "chasqui_http_request_body_bytes_total{{{}}} {}",
                labels(service, env),
                s.request_bytes
            );
        }
        header(
            out,
            "chasqui_http_response_body_bytes_total",
            "counter",
            "Bytes of response bodies sent to clients, by service and environment.",
        );
        for (service, env, s) in &series {
            let _ = writeln!(
                out,
                "chasqui_http_response_body_bytes_total{{{}}} {}",
                labels(service, env),
                s.response_bytes
            );
        }
    }
}

/// The whole exposition of a gateway: request series, plugin series, the
/// requests in flight, the store-and-forward backlog and the start time.
pub fn render(gw: &Gateway) -> String {
    let mut out = String::with_capacity(8 << 10);
    gw.metrics.render_requests(&mut out);
    header(
        &mut out,
        "chasqui_http_requests_in_flight",
        "gauge",
        "Data-plane requests being served now.",
    );
    let _ = writeln!(
        out,
        "chasqui_http_requests_in_flight {}",
        gw.lifecycle.inflight()
    );
    header(
        &mut out,
        "chasqui_deferred_backlog",
        "gauge",
        "Requests kept by store-and-forward and not yet delivered.",
    );
    let _ = writeln!(
        out,
        "chasqui_deferred_backlog {}",
        gw.deferred.backlog_total()
    );
    let (commits, entries) = gw.ledger.commit_counts();
    header(
        &mut out,
        "chasqui_ledger_commits_total",
        "counter",
        "Transactions that committed audit-ledger entries.",
    );
    let _ = writeln!(out, "chasqui_ledger_commits_total {commits}");
    header(
        &mut out,
        "chasqui_ledger_entries_written_total",
        "counter",
        "Audit-ledger entries committed (over commits: entries per group commit).",
    );
    let _ = writeln!(out, "chasqui_ledger_entries_written_total {entries}");
    header(
        &mut out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch, in seconds.",
    );
    let _ = writeln!(
        out,
        "process_start_time_seconds {}",
        gw.metrics.start_time_seconds()
    );
    let plugins = gw.plugins.load();
    for plugin in plugins.plugins() {
        render_plugin(&mut out, plugin.name(), &plugin.shared().series());
    }
    out
}

/// Writes the `# HELP` and `# TYPE` lines of a family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped for the exposition format.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A name made of `[a-z0-9_]` (plugin names may hold `-`).
fn metric_name_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes one plugin's series as `chasqui_plugin_<plugin>_<name>`: counters
/// as counters, histograms as the count of their observations (a summary
/// with only `_count`: the host keeps no sum or buckets). A series whose
/// labels cannot be expressed is left out.
fn render_plugin(out: &mut String, plugin: &str, series: &[(String, f64, bool)]) {
    let prefix = format!("chasqui_plugin_{}_", metric_name_part(plugin));
    // family -> (histogram, samples)
    let mut families: BTreeMap<String, (bool, Vec<(String, f64)>)> = BTreeMap::new();
    for (key, value, histogram) in series {
        let Some((name, labels)) = parse_series(key) else {
            tracing::debug!(plugin, series = %key, "plugin metric left out of the exposition");
            continue;
        };
        if !value.is_finite() {
            continue;
        }
        let family = format!("{prefix}{name}");
        let entry = families
            .entry(family)
            .or_insert_with(|| (*histogram, Vec::new()));
        // One name recorded both as counter and histogram: keep the first kind.
        if entry.0 == *histogram {
            entry.1.push((labels, *value));
        }
    }
    let mut seen = HashSet::new();
    for (family, (histogram, samples)) in families {
        let (kind, sample, help) = if histogram {
            (
                "summary",
                format!("{family}_count"),
                format!("Observations recorded by plugin {plugin} (count only)."),
            )
        } else {
            (
                "counter",
                family.clone(),
                format!("Counter recorded by plugin {plugin}."),
            )
        };
        if !seen.insert(sample.clone()) {
            continue;
        }
        header(out, &family, kind, &help);
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{sample} {value}");
            } else {
                let _ = writeln!(out, "{sample}{{{labels}}} {value}");
            }
        }
    }
}

/// Splits a plugin series key (`name{k="v",...}`, values escaped as Rust's
/// `escape_debug` does, see `plugin::host`) into the name and its labels in
/// the exposition's escaping. `None` when the key is malformed, a label is
/// reserved (`__...`) or repeated, or a value holds a control character.
fn parse_series(key: &str) -> Option<(String, String)> {
    let Some((name, rest)) = key.split_once('{') else {
        return valid_name(key).then(|| (key.to_string(), String::new()));
    };
    if !valid_name(name) {
        return None;
    }
    let mut chars = rest.chars().peekable();
    let mut labels = Vec::<(String, String)>::new();
    loop {
        let mut label = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            label.push(c);
        }
        if !valid_name(&label)
            || label.starts_with("__")
            || labels.iter().any(|(k, _)| *k == label)
            || chars.next() != Some('"')
        {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => value.push(match chars.next()? {
                    '\\' => '\\',
                    '"' => '"',
                    '\'' => '\'',
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    'u' => {
                        if chars.next()? != '{' {
                            return None;
                        }
                        let mut hex = String::new();
                        loop {
                            match chars.next()? {
                                '}' => break,
                                h => hex.push(h),
                            }
                        }
                        char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?
                    }
                    _ => return None,
                }),
                c => value.push(c),
            }
        }
        if value.chars().any(|c| c.is_control() && c != '\n') {
            return None;
        }
        labels.push((label, value));
        match chars.next()? {
            ',' => continue,
            '}' if chars.peek().is_none() => break,
            _ => return None,
        }
    }
    let rendered = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect::<Vec<_>>()
        .join(",");
    Some((name.to_string(), rendered))
}

/// A Prometheus metric or label name as plugins may use them.
fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, line_start: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn requests_are_counted_per_service_environment_and_class() {
        let m = Metrics::new();
        let ms = Duration::from_millis;
        m.record(Some(("a/v1", Environment::Pruebas)), 200, ms(3), 10, 100);
        m.record(Some(("a/v1", Environment::Pruebas)), 204, ms(30), 0, 0);
        m.record(Some(("a/v1", Environment::Pruebas)), 404, ms(20_000), 0, 7);
        m.record(Some(("a/v1", Environment::Produccion)), 503, ms(1), 0, 0);
        m.record(None, 401, Duration::from_micros(500), 0, 0);
        m.record(None, 0, Duration::from_micros(501), 0, 0);
        let mut out = String::new();
        m.render_requests(&mut out);
        let a = "service=\"a/v1\",environment=\"pruebas\"";
        assert_eq!(
            sample(
                &out,
                &format!("chasqui_http_requests_total{{{a},class=\"2xx\"}}")
            ),
            2.0
        );
        assert_eq!(
            sample(
                &out,
                &format!("chasqui_http_requests_total{{{a},class=\"4xx\"}}")
            ),
            1.0
        );
        assert_eq!(
            sample(
                &out,
                &format!("chasqui_http_requests_total{{{a},class=\"5xx\"}}")
            ),
            0.0
        );
        let dash = "service=\"-\",environment=\"-\"";
        assert_eq!(
            sample(
                &out,
                &format!("chasqui_http_requests_total{{{dash},class=\"none\"}}")
            ),
            1.0
        );
        // 500 us is in the 0.0005 bucket (le is inclusive), 501 us is not.
        let b = "chasqui_http_request_duration_seconds_bucket";
        assert_eq!(sample(&out, &format!("{b}{{{dash},le=\"0.0005\"}}")), 1.0);
        assert_eq!(sample(&out, &format!("{b}{{{dash},le=\"0.001\"}}")), 2.0);
        // 20 s is beyond the last bound: only in +Inf.
        assert_eq!(sample(&out, &format!("{b}{{{a},le=\"10\"}}")), 2.0);
        assert_eq!(sample(&out, &format!("{b}{{{a},le=\"+Inf\"}}")), 3.0);
        assert_eq!(
            sample(
                &out,
                &format!("chasqui_http_request_duration_seconds_count{{{a}}}")
            ),
            3.0
        );
        assert_eq!(
            sample(
                &out,
                &format!("chasqui_http_request_duration_seconds_sum{{{a}}}")
            ),
            20.033
        );
        assert_eq!(
            sample(
                &out,
                &format!("chasqui_http_response_body_bytes_total{{{a}}}")
            ),
            107.0
        );
        assert_eq!(
            sample(
                &out,
                &format!("chasqui_http_request_body_bytes_total{{{a}}}")
            ),
            10.0
        );
        // Unused environments of a service have no series.
        assert!(!out.contains("service=\"a/v1\",environment=\"-\""));
    }

    #[test]
    fn plugin_series_keep_their_labels_and_kinds() {
        let series = vec![
            ("denied_total{reason=\"missing\"}".to_string(), 2.0, false),
            (
                "denied_total{reason=\"it\\'s \\\"x\\\"\"}".to_string(),
                1.0,
                false,
            ),
            ("latency_ms".to_string(), 5.0, true),
            ("bad{a=\"1\",a=\"2\"}".to_string(), 1.0, false),
            ("ctl{a=\"\\u{7}\"}".to_string(), 1.0, false),
        ];
        let mut out = String::new();
        render_plugin(&mut out, "my-plugin", &series);
        assert!(out.contains("# TYPE chasqui_plugin_my_plugin_denied_total counter\n"));
        assert!(out.contains("chasqui_plugin_my_plugin_denied_total{reason=\"missing\"} 2\n"));
        assert!(
            out.contains("chasqui_plugin_my_plugin_denied_total{reason=\"it's \\\"x\\\"\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("# TYPE chasqui_plugin_my_plugin_latency_ms summary\n"));
        assert!(out.contains("chasqui_plugin_my_plugin_latency_ms_count 5\n"));
        assert!(!out.contains("bad"), "{out}");
        assert!(!out.contains("ctl"), "{out}");
    }

    #[test]
    fn escape_debug_output_parses_back() {
        let raw = "Año \"x\" \\ it's\tok";
        let key = format!("m{{k=\"{}\"}}", raw.escape_debug());
        // A tab is a control character: the series is left out.
        assert!(parse_series(&key).is_none());
        let raw = "Año \"x\" \\ it's";
        let key = format!("m{{k=\"{}\"}}", raw.escape_debug());
        let (_, labels) = parse_series(&key).unwrap();
        assert_eq!(labels, format!("k=\"{}\"", escape_label(raw)));
    }
}
