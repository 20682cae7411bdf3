//! The analytics service's commands and queries: settings, reports, spot checks and the
//! monthly summary, all read from the fact tables (`src/facts.rs`).

use std::sync::Arc;

use callback_calendar::{Calendar, CalendarSpec, TimeOfDay};
use callback_eventstore::{EventStore, ExpectedVersion, StreamName};
use callback_kit::telemetry::event_metadata;
use callback_rules::Clock;
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::report::{Figure, Granularity, Report, ReportKind, ReportRow, ReportSpec};
use crate::settings::{in_spot_check, reviewer_for, validate_settings, AnalyticsSettings};
use crate::Error;
use callback_contracts::EventContract;

pub use callback_contracts::analytics::AnalyticsSettingsPublished as SettingsPublished;

#[derive(Clone, Debug, PartialEq)]
pub struct SpotCheck {
    pub rate: f64,
    pub population: u64,
    pub sample: Vec<SpotCheckItem>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SpotCheckItem {
    pub callback_id: Uuid,
    pub department: String,
    pub agent_id: String,
    pub reviewer: Option<String>,
    pub reached_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MonthlySummary {
    pub month: String,
    pub ready_at: DateTime<Utc>,
    pub ready: bool,
    pub reports: Vec<Report>,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field: field.into(),
        reason: reason.into(),
    }
}

pub(crate) fn validate_id(field: &str, value: &str) -> Result<(), Error> {
    match callback_rules::ids::id_problem(value) {
        None => Ok(()),
        Some(reason) => Err(invalid(field, reason)),
    }
}

#[derive(Clone)]
pub struct Analytics {
    store: EventStore,
    clock: Arc<dyn Clock>,
}

impl Analytics {
    pub fn new(store: EventStore, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    #[tracing::instrument(name = "analytics.publish_settings", skip_all, fields(tenant_id))]
    pub async fn publish_settings(
        &self,
        tenant_id: &str,
        settings_json: &str,
    ) -> Result<u64, Error> {
        validate_id("tenant_id", tenant_id)?;
        let settings: AnalyticsSettings =
            callback_rules::input::parse_document("settings_json", settings_json)
                .map_err(|(field, reason)| invalid(field, reason))?;
        validate_settings(&settings)
            .map_err(|(field, reason)| invalid(format!("settings_json.{field}"), reason))?;
        let published = SettingsPublished {
            tenant_id: tenant_id.to_owned(),
            settings,
        };
        let mut tx = self.store.begin().await?;
        let event = callback_kit::events::new_event(&published)?.with_metadata(event_metadata(
            Some(tenant_id),
            Some("api:publish_settings"),
        ));
        let result = self
            .store
            .append_in(
                &mut tx,
                &StreamName::new(SettingsPublished::CATEGORY, tenant_id)?,
                ExpectedVersion::Any,
                &[event],
            )
            .await?;
        project_settings(&mut tx, &published, result.stream_version).await?;
        self.store.commit(tx).await?;
        Ok(result.stream_version)
    }

    async fn settings(&self, tenant_id: &str) -> Result<AnalyticsSettings, Error> {
        let value: Option<Value> =
            sqlx::query_scalar("SELECT settings FROM an_settings WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(self.store.pool())
                .await?;
        decode_settings(value)
    }

    /// A report's context in one round trip: the tenant's analytics settings and time zone
    /// (UTC until scheduling's tenant settings have arrived).
    async fn settings_and_zone(
        conn: &mut PgConnection,
        tenant_id: &str,
    ) -> Result<(AnalyticsSettings, String), Error> {
        let (settings, zone): (Option<Value>, Option<String>) = sqlx::query_as(
            "SELECT (SELECT settings FROM an_settings WHERE tenant_id = $1), \
                    (SELECT time_zone FROM an_tenants WHERE tenant_id = $1)",
        )
        .bind(tenant_id)
        .fetch_one(conn)
        .await?;
        Ok((
            decode_settings(settings)?,
            zone.unwrap_or_else(|| "UTC".into()),
        ))
    }

    /// Computes one report.
    #[tracing::instrument(name = "analytics.report", skip_all, fields(tenant_id = %spec.tenant_id, report = spec.kind.name()))]
    pub async fn report(&self, spec: &ReportSpec) -> Result<Report, Error> {
        validate_id("tenant_id", &spec.tenant_id)?;
        let mut tx = self.store.pool().begin().await?;
        let (settings, time_zone) = Self::settings_and_zone(&mut tx, &spec.tenant_id).await?;
        let tz: chrono_tz::Tz = time_zone
            .parse()
            .map_err(|_| Error::Corrupt(format!("tenant time zone `{time_zone}` is unknown")))?;
        let period_starts = spec.granularity.period_starts(tz, spec.from, spec.to);
        let sql = spec.sql();
        let mut query = sqlx::query(&sql)
            .bind(&spec.tenant_id)
            .bind(spec.from)
            .bind(spec.to)
            .bind(self.now())
            .bind(settings.population.map(|p| p as f64))
            .bind(&period_starts);
        for (_, value) in &spec.filters {
            query = query.bind(value);
        }
        // The planner cannot know how few groups a report has and, estimating one per fact
        // row, would sort every row to group them within the default 4 MB; with room to hash
        // them it groups in one pass (reports are bounded: a checked range, a few dimensions).
        sqlx::query("SET LOCAL work_mem = '64MB'")
            .execute(&mut *tx)
            .await?;
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let keys = spec.key_names().len();
        let metrics = spec.kind.metrics();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut key_values = Vec::with_capacity(keys);
            for i in 0..keys {
                let value = if i == 0 && spec.granularity != Granularity::Whole {
                    // The period's number among the period starts, counted from 1.
                    let number: i32 = row.try_get(0)?;
                    let start = usize::try_from(number - 1)
                        .ok()
                        .and_then(|n| period_starts.get(n))
                        .ok_or_else(|| Error::Corrupt(format!("period number {number}")))?;
                    spec.granularity.label(tz, *start)
                } else {
                    row.try_get::<Option<String>, _>(i)?.unwrap_or_default()
                };
                key_values.push(value);
            }
            let mut figures = Vec::with_capacity(metrics.len());
            for (m, (_, _, _, is_count)) in metrics.iter().enumerate() {
                let value: Option<f64> = row.try_get(keys + 2 * m)?;
                let sample: Option<i64> = row.try_get(keys + 2 * m + 1)?;
                let sample_size = sample.unwrap_or(0).max(0) as u64;
                figures.push(Figure {
                    value,
                    sample_size,
                    too_few: !is_count && sample_size < settings.min_sample,
                });
            }
            out.push(ReportRow {
                keys: key_values,
                figures,
            });
        }
        Ok(Report {
            dimensions: spec.key_names(),
            metrics: spec.metric_names(),
            rows: out,
        })
    }

    /// The tenant's calendar (from scheduling's feed), and the bounds of `month` in its zone.
    async fn month_range(
        &self,
        tenant_id: &str,
        month: &str,
    ) -> Result<(Calendar, DateTime<Utc>, DateTime<Utc>), Error> {
        let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
            .map_err(|_| invalid("month", "must be YYYY-MM"))?;
        let spec: Option<Value> =
            sqlx::query_scalar("SELECT calendar FROM an_tenants WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_optional(self.store.pool())
                .await?;
        let spec = spec.ok_or_else(|| {
            Error::NotFound(format!(
                "tenant `{tenant_id}` (its calendar has not reached analytics)"
            ))
        })?;
        let spec: CalendarSpec =
            serde_json::from_value(spec).map_err(|e| Error::Corrupt(e.to_string()))?;
        let calendar = Calendar::new(&spec).map_err(|e| Error::Corrupt(e.to_string()))?;
        let next = first
            .checked_add_months(Months::new(1))
            .ok_or_else(|| invalid("month", "is out of range"))?;
        let from = calendar.resolve(first, TimeOfDay::MIDNIGHT);
        let to = calendar.resolve(next, TimeOfDay::MIDNIGHT);
        Ok((calendar, from, to))
    }

    /// The re-check sample of a department's reached callbacks in a month.
    pub async fn spot_check(
        &self,
        tenant_id: &str,
        department: &str,
        month: &str,
    ) -> Result<SpotCheck, Error> {
        validate_id("tenant_id", tenant_id)?;
        let (_, from, to) = self.month_range(tenant_id, month).await?;
        let settings = self.settings(tenant_id).await?;
        let rows: Vec<(Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT callback_id, coalesce(department, ''), coalesce(reached_by, ''), reached_at FROM an_callbacks \
             WHERE tenant_id = $1 AND status = 'completed' AND coalesce(department, '') = $2 \
             AND reached_at >= $3 AND reached_at < $4 ORDER BY reached_at, callback_id",
        )
        .bind(tenant_id)
        .bind(department)
        .bind(from)
        .bind(to)
        .fetch_all(self.store.pool())
        .await?;
        let population = rows.len() as u64;
        let sample = rows
            .into_iter()
            .filter(|(id, ..)| in_spot_check(tenant_id, month, *id, settings.spot_check_rate))
            .map(
                |(callback_id, department, agent_id, reached_at)| SpotCheckItem {
                    reviewer: reviewer_for(callback_id, &agent_id, &settings.reviewers),
                    callback_id,
                    department,
                    agent_id,
                    reached_at,
                },
            )
            .collect();
        Ok(SpotCheck {
            rate: settings.spot_check_rate,
            population,
            sample,
        })
    }

    /// A tenant's month: every report over the month (no grouping), and when it is final (the
    /// first working day of the next month, on the tenant's calendar).
    pub async fn monthly_summary(
        &self,
        tenant_id: &str,
        month: &str,
    ) -> Result<MonthlySummary, Error> {
        validate_id("tenant_id", tenant_id)?;
        let (calendar, from, to) = self.month_range(tenant_id, month).await?;
        let mut day = calendar.local_date(to);
        for _ in 0..366 {
            if calendar.is_working_day(day) {
                break;
            }
            day = day.succ_opt().unwrap_or(day);
        }
        let ready_at = calendar.resolve(day, TimeOfDay::MIDNIGHT);
        let mut reports = Vec::new();
        for kind in ReportKind::ALL {
            let spec = ReportSpec::new(tenant_id, kind.name(), &[], "", Some(from), Some(to), &[])
                .map_err(|e| invalid(e.field, e.reason))?;
            reports.push(self.report(&spec).await?);
        }
        Ok(MonthlySummary {
            month: format!(
                "{:04}-{:02}",
                calendar.local_date(from).year(),
                calendar.local_date(from).month()
            ),
            ready_at,
            ready: self.now() >= ready_at,
            reports,
        })
    }
}

/// Stored analytics settings, or the defaults for a tenant that has published none.
fn decode_settings(value: Option<Value>) -> Result<AnalyticsSettings, Error> {
    match value {
        Some(value) => serde_json::from_value(value).map_err(|e| Error::Corrupt(e.to_string())),
        None => Ok(AnalyticsSettings::default()),
    }
}

pub(crate) async fn project_settings(
    conn: &mut PgConnection,
    published: &SettingsPublished,
    version: u64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO an_settings (tenant_id, version, settings) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant_id) DO UPDATE SET version = EXCLUDED.version, settings = EXCLUDED.settings",
    )
    .bind(&published.tenant_id)
    .bind(version as i64)
    .bind(serde_json::to_value(&published.settings).map_err(|e| Error::Corrupt(e.to_string()))?)
    .execute(conn)
    .await?;
    Ok(())
}
