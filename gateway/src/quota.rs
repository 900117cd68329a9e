//! Quotas per day and per month per consumer system × service.
//!
//! Days and months are Bolivian (UTC-4, no daylight saving). Counters live
//! in a sharded map on the request path; every [`QUOTA_FLUSH`] the changed
//! ones are written to the store (`quota_usage`), and at start the current
//! periods are read back, so a restart loses at most one flush interval of
//! counting (none on a graceful stop, which flushes). Each gateway counts
//! its own requests: in a cluster the quota applies per node.

use crate::policy::scope::QuotaSettings;
use chasqui_catalog::quotas::QuotaUsage;
use chasqui_catalog::Store;
use dashmap::DashMap;
use std::time::Duration;

/// How often changed counters are written to the store.
pub const QUOTA_FLUSH: Duration = Duration::from_secs(1);

/// Bolivia's offset from UTC, in seconds.
const OFFSET: i64 = -4 * 3600;
const DAY: i64 = 86_400;

/// Unix seconds of the start of the Bolivian day holding `now`.
pub fn day_start(now: i64) -> i64 {
    (now + OFFSET).div_euclid(DAY) * DAY - OFFSET
}

/// Unix seconds of the start of the Bolivian month holding `now`, and of
/// the next one.
pub fn month_bounds(now: i64) -> (i64, i64) {
    let (y, m, _) = civil_from_days((now + OFFSET).div_euclid(DAY));
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (
        days_from_civil(y, m, 1) * DAY - OFFSET,
        days_from_civil(ny, nm, 1) * DAY - OFFSET,
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[derive(Debug, Default, Clone)]
struct Counter {
    day_start: i64,
    day: u64,
    month_start: i64,
    month: u64,
    dirty: bool,
}

/// A quota refusal: which period, and the header values that say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusal {
    /// `day` or `month`.
    pub period: &'static str,
    /// The quota.
    pub limit: u64,
    /// Seconds until the period ends.
    pub retry_after_secs: u64,
    /// `RateLimit-Policy` value.
    pub policy_header: String,
    /// `RateLimit` value.
    pub limit_header: String,
}

/// The counters of one gateway process.
#[derive(Debug, Default)]
pub struct Quotas {
    counters: DashMap<(i64, i64), Counter>,
}

impl Quotas {
    /// Counters read back from the store for the periods holding `now`.
    pub async fn load(store: &Store, now: i64) -> Result<Quotas, chasqui_catalog::StoreError> {
        let day = day_start(now);
        let (month, _) = month_bounds(now);
        let quotas = Quotas::default();
        for row in store.quota_usage_current(day, month).await? {
            let mut c = quotas
                .counters
                .entry((row.consumer_id, row.service_id))
                .or_default();
            let used = u64::try_from(row.used).unwrap_or(0);
            match row.period.as_str() {
                "day" => {
                    c.day_start = row.period_start;
                    c.day = used;
                }
                "month" => {
                    c.month_start = row.period_start;
                    c.month = used;
                }
                _ => {}
            }
        }
        Ok(quotas)
    }

    /// Counts one request of `consumer` to `service` at `now`, or refuses it
    /// when a quota is spent (a refused request is not counted).
    pub fn admit(
        &self,
        consumer: i64,
        service: i64,
        quota: &QuotaSettings,
        now: i64,
    ) -> Result<(), QuotaRefusal> {
        if quota.per_day == 0 && quota.per_month == 0 {
            return Ok(());
        }
        let day = day_start(now);
        let (month, next_month) = month_bounds(now);
        let mut c = self.counters.entry((consumer, service)).or_default();
        if c.day_start != day {
            c.day_start = day;
            c.day = 0;
        }
        if c.month_start != month {
            c.month_start = month;
            c.month = 0;
        }
        let refuse = |period: &'static str, limit: u64, window: i64, ends: i64| {
            let retry_after_secs = u64::try_from(ends - now).unwrap_or(1).max(1);
            QuotaRefusal {
                period,
                limit,
                retry_after_secs,
                policy_header: format!("\"{period}\";q={limit};w={window}"),
                limit_header: format!("\"{period}\";r=0;t={retry_after_secs}"),
            }
        };
        if quota.per_month > 0 && c.month >= quota.per_month {
            return Err(refuse(
                "month",
                quota.per_month,
                next_month - month,
                next_month,
            ));
        }
        if quota.per_day > 0 && c.day >= quota.per_day {
            return Err(refuse("day", quota.per_day, DAY, day + DAY));
        }
        c.day += 1;
        c.month += 1;
        c.dirty = true;
        Ok(())
    }

    /// The changed counters since the last call, as rows to store.
    pub fn take_dirty(&self) -> Vec<QuotaUsage> {
        let mut rows = Vec::new();
        for mut entry in self.counters.iter_mut() {
            if !entry.dirty {
                continue;
            }
            entry.dirty = false;
            let (consumer_id, service_id) = *entry.key();
            rows.push(QuotaUsage {
                consumer_id,
                service_id,
                period: "day".into(),
                period_start: entry.day_start,
                used: i64::try_from(entry.day).unwrap_or(i64::MAX),
            });
            rows.push(QuotaUsage {
                consumer_id,
                service_id,
                period: "month".into(),
                period_start: entry.month_start,
                used: i64::try_from(entry.month).unwrap_or(i64::MAX),
            });
        }
        rows
    }

    /// Writes the changed counters; on failure they are marked changed
    /// again so that the next flush retries them.
    pub async fn flush(&self, store: &Store) {
        let rows = self.take_dirty();
        if rows.is_empty() {
            return;
        }
        let now = chasqui_catalog::model::now_unix();
        if let Err(e) = store.quota_usage_save(&rows, now).await {
            tracing::warn!(error = %e, rows = rows.len(), "could not store quota counters; will retry");
            for row in rows {
                if let Some(mut c) = self.counters.get_mut(&(row.consumer_id, row.service_id)) {
                    c.dirty = true;
                }
            }
        }
    }

    /// Forgets counters of past months (memory and store).
    pub async fn prune(&self, store: &Store, now: i64) {
        let (month, _) = month_bounds(now);
        self.counters
            .retain(|_, c| c.month_start >= month || c.dirty);
        // Day rows of this month stay for operators; older ones go.
        if let Err(e) = store.quota_usage_prune(month).await {
            tracing::warn!(error = %e, "could not prune quota counters");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bolivian_days_and_months() {
        // 2026-11-27T03:30:00Z is still 26 November in La Paz (23:30).
        let t = 1_795_750_200;
        let d = day_start(t);
        assert_eq!(d, 1_795_665_600, "2026-11-26T04:00:00Z");
        let (m, next) = month_bounds(t);
        assert_eq!(m, 1_793_505_600, "2026-11-01T04:00:00Z");
        assert_eq!(next, 1_796_097_600, "2026-12-01T04:00:00Z");
        // December rolls into January of the next year.
        let (m, next) = month_bounds(1_796_097_600 + 10);
        assert_eq!(m, 1_796_097_600);
        assert_eq!(next, 1_798_776_000, "2027-01-01T04:00:00Z");
    }

    #[test]
    fn day_and_month_quotas_refuse_with_the_period() {
        let q = Quotas::default();
        let settings = QuotaSettings {
            per_day: 2,
            per_month: 3,
        };
        let t = 1_795_750_200;
        assert!(q.admit(1, 9, &settings, t).is_ok());
        assert!(q.admit(1, 9, &settings, t).is_ok());
        let r = q.admit(1, 9, &settings, t).unwrap_err();
        assert_eq!(r.period, "day");
        assert_eq!(r.retry_after_secs, 1_795_665_600 + 86_400 - t as u64);
        assert_eq!(r.policy_header, "\"day\";q=2;w=86400");
        // Next Bolivian day: the day quota is fresh, the month one is not.
        let t2 = t + 3_600;
        assert!(q.admit(1, 9, &settings, t2).is_ok());
        let r = q.admit(1, 9, &settings, t2).unwrap_err();
        assert_eq!(r.period, "month");
        assert!(q.admit(2, 9, &settings, t2).is_ok(), "per consumer");
        assert_eq!(q.take_dirty().len(), 4);
        assert!(q.take_dirty().is_empty());
    }
}
