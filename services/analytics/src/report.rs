//! Report definitions: which dimensions and metrics each report has, the checks on a request,
//! and the SQL that computes it from the fact tables. Every metric is defined in words in
//! `docs/METRICS.md`; the SQL here is the one place that computes it.

use callback_calendar::start_of_local_day;
use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, Utc};
use chrono_tz::Tz;

/// The most dimensions a report may be grouped or filtered by.
pub const MAX_DIMENSIONS: usize = 10;

/// A report request that cannot be answered, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    pub field: String,
    pub reason: String,
}

fn spec_error(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The tenant (`$1`)'s policies that have callbacks, as an array: a loose index scan, one
/// descent of `an_callbacks_policy_due` per policy. The callback reports select
/// `policy_id = ANY(...)` of it, so that PostgreSQL (which has no skip scan before version 18)
/// reads each policy's due-time range from the index, whose first columns are the tenant and the
/// policy (migration 5003). A report filtered to one policy then reads only that policy's
/// entries; the filter makes the other policies' descents end at once.
macro_rules! tenant_policies {
    () => {
        "ARRAY(WITH RECURSIVE p(id) AS ( \
           SELECT min(policy_id) FROM an_callbacks WHERE tenant_id = $1 \
           UNION ALL \
           SELECT (SELECT min(q.policy_id) FROM an_callbacks q WHERE q.tenant_id = $1 AND q.policy_id > p.id) \
           FROM p WHERE p.id IS NOT NULL) \
         SELECT id FROM p WHERE id IS NOT NULL)"
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    Callbacks,
    Satisfaction,
    Complaints,
    Honesty,
}

impl ReportKind {
    pub const ALL: [ReportKind; 4] = [
        ReportKind::Callbacks,
        ReportKind::Satisfaction,
        ReportKind::Complaints,
        ReportKind::Honesty,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ReportKind::Callbacks => "callbacks",
            ReportKind::Satisfaction => "satisfaction",
            ReportKind::Complaints => "complaints",
            ReportKind::Honesty => "honesty",
        }
    }

    /// Dimension name and its SQL expression.
    pub fn dimensions(self) -> &'static [(&'static str, &'static str)] {
        match self {
            ReportKind::Callbacks => &[
                ("department", "coalesce(c.department, '')"),
                ("policy", "c.policy_id"),
                ("step", "c.step"),
                ("agent", "coalesce(c.reached_by, c.last_agent, '')"),
                ("channel", "c.channel"),
                ("status", "c.status"),
                ("end_reason", "coalesce(c.end_reason, '')"),
            ],
            ReportKind::Satisfaction => &[
                ("department", "coalesce(c.department, '')"),
                ("policy", "c.policy_id"),
                ("step", "c.step"),
                ("agent", "coalesce(c.reached_by, c.last_agent, '')"),
                ("channel", "c.channel"),
                ("questionnaire", "a.questionnaire_id"),
                ("item", "a.item_id"),
                ("value", "coalesce(a.value::text, '')"),
            ],
            ReportKind::Complaints => &[
                ("class", "k.class"),
                ("origin", "k.origin"),
                ("department", "k.department"),
                ("channel", "k.channel"),
                ("status", "k.status"),
            ],
            ReportKind::Honesty => &[("kind", "f.kind"), ("agent", "f.agent_id")],
        }
    }

    /// Metric name, value SQL, sample-size SQL, and whether it is a plain count (exact at any
    /// sample size, so never "too few").
    pub fn metrics(self) -> &'static [(&'static str, &'static str, &'static str, bool)] {
        const DUE: &str = "count(*)";
        const REACHED: &str = "count(*) FILTER (WHERE c.status = 'completed')";
        const RATING: &str = "count(a.value) FILTER (WHERE i.kind = 'rating')";
        const RECOMMEND: &str = "count(a.value) FILTER (WHERE i.kind = 'recommend')";
        const RESOLVED: &str = "count(*) FILTER (WHERE k.resolved_at IS NOT NULL)";
        match self {
            ReportKind::Callbacks => &[
                ("due", DUE, DUE, true),
                ("reached", REACHED, DUE, true),
                (
                    "reached_on_time",
                    "count(*) FILTER (WHERE c.status = 'completed' AND c.reached_at <= c.deadline)",
                    DUE,
                    true,
                ),
                (
                    "callback_rate",
                    "count(*) FILTER (WHERE c.status = 'completed')::float8 / nullif(count(*), 0)",
                    DUE,
                    false,
                ),
                (
                    "on_time_rate",
                    "count(*) FILTER (WHERE c.status = 'completed' AND c.reached_at <= c.deadline)::float8 \
                     / nullif(count(*), 0)",
                    DUE,
                    false,
                ),
                (
                    "lost",
                    "count(*) FILTER (WHERE c.status IN ('lost', 'skipped'))",
                    DUE,
                    true,
                ),
                (
                    "lost_rate",
                    "count(*) FILTER (WHERE c.status IN ('lost', 'skipped'))::float8 / nullif(count(*), 0)",
                    DUE,
                    false,
                ),
                ("open", "count(*) FILTER (WHERE c.status = 'open')", DUE, true),
                (
                    "attempts_per_reached",
                    "sum(c.attempts) FILTER (WHERE c.status = 'completed')::float8 \
                     / nullif(count(*) FILTER (WHERE c.status = 'completed'), 0)",
                    REACHED,
                    false,
                ),
            ],
            ReportKind::Satisfaction => &[
                ("answers", "count(*)", "count(*)", true),
                ("rating_responses", RATING, RATING, true),
                (
                    "rating_mean",
                    "avg(a.value) FILTER (WHERE i.kind = 'rating')",
                    RATING,
                    false,
                ),
                (
                    "satisfaction_rate",
                    "count(*) FILTER (WHERE i.kind = 'rating' AND a.value >= 4)::float8 \
                     / nullif(count(a.value) FILTER (WHERE i.kind = 'rating'), 0)",
                    RATING,
                    false,
                ),
                ("recommend_responses", RECOMMEND, RECOMMEND, true),
                (
                    "nps",
                    "100.0 * (count(*) FILTER (WHERE i.kind = 'recommend' AND a.value >= 9) \
                     - count(*) FILTER (WHERE i.kind = 'recommend' AND a.value <= 6))::float8 \
                     / nullif(count(a.value) FILTER (WHERE i.kind = 'recommend'), 0)",
                    RECOMMEND,
                    false,
                ),
            ],
            ReportKind::Complaints => &[
                ("complaints", "count(*)", "count(*)", true),
                (
                    "valid",
                    "count(*) FILTER (WHERE NOT k.rejected)",
                    "count(*)",
                    true,
                ),
                (
                    "valid_per_mille_of_population",
                    "1000.0 * count(*) FILTER (WHERE NOT k.rejected) / $5",
                    "count(*)",
                    false,
                ),
                (
                    "first_response_compliance",
                    "count(*) FILTER (WHERE k.responded_at IS NOT NULL AND NOT k.first_response_breached)::float8 \
                     / nullif(count(*) FILTER (WHERE k.responded_at IS NOT NULL OR k.first_response_breached), 0)",
                    "count(*) FILTER (WHERE k.responded_at IS NOT NULL OR k.first_response_breached)",
                    false,
                ),
                (
                    "update_compliance",
                    "count(*) FILTER (WHERE k.responded_at IS NOT NULL AND NOT k.update_breached)::float8 \
                     / nullif(count(*) FILTER (WHERE k.responded_at IS NOT NULL), 0)",
                    "count(*) FILTER (WHERE k.responded_at IS NOT NULL)",
                    false,
                ),
                (
                    "resolution_compliance",
                    "count(*) FILTER (WHERE k.resolved_at IS NOT NULL AND NOT k.resolution_breached)::float8 \
                     / nullif(count(*) FILTER (WHERE k.resolved_at IS NOT NULL OR k.resolution_breached), 0)",
                    "count(*) FILTER (WHERE k.resolved_at IS NOT NULL OR k.resolution_breached)",
                    false,
                ),
                (
                    "resolve_hours_median",
                    "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM k.resolved_at - k.filed_at) / 3600) \
                     FILTER (WHERE k.resolved_at IS NOT NULL)",
                    RESOLVED,
                    false,
                ),
                (
                    "resolve_hours_p90",
                    "percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM k.resolved_at - k.filed_at) / 3600) \
                     FILTER (WHERE k.resolved_at IS NOT NULL)",
                    RESOLVED,
                    false,
                ),
                (
                    "verification_satisfaction",
                    "sum(k.verifications_satisfied)::float8 / nullif(sum(k.verifications), 0)",
                    "coalesce(sum(k.verifications), 0)",
                    false,
                ),
                (
                    "reopen_rate",
                    "count(*) FILTER (WHERE k.reopenings > 0)::float8 / nullif(count(*) FILTER (WHERE k.resolved_at IS NOT NULL), 0)",
                    RESOLVED,
                    false,
                ),
            ],
            ReportKind::Honesty => &[
                ("flags", "count(*)", "count(*)", true),
                (
                    "flagged_attempts",
                    "count(DISTINCT f.attempt_id)",
                    "count(*)",
                    true,
                ),
            ],
        }
    }

    /// The fact rows and their time column; `$1` tenant, `$2`-`$3` the range, `$4` now.
    fn source(self) -> (&'static str, &'static str) {
        match self {
            ReportKind::Callbacks => (
                concat!(
                    "FROM an_callbacks c WHERE c.tenant_id = $1 AND c.policy_id = ANY(",
                    tenant_policies!(),
                    ") AND c.status <> 'cancelled' \
                     AND c.due_at >= $2 AND c.due_at < $3 AND c.due_at <= $4"
                ),
                "c.due_at",
            ),
            ReportKind::Satisfaction => (
                "FROM an_answers a \
                 JOIN an_questionnaire_items i ON i.tenant_id = a.tenant_id AND i.questionnaire_id = a.questionnaire_id \
                   AND i.version = a.questionnaire_version AND i.item_id = a.item_id \
                 JOIN an_callbacks c ON c.callback_id = a.callback_id \
                 WHERE a.tenant_id = $1 AND c.due_at >= $2 AND c.due_at < $3 AND c.due_at <= $4",
                "c.due_at",
            ),
            ReportKind::Complaints => (
                "FROM an_complaints k WHERE k.tenant_id = $1 AND k.filed_at >= $2 AND k.filed_at < $3",
                "k.filed_at",
            ),
            ReportKind::Honesty => (
                "FROM an_honesty_flags f WHERE f.tenant_id = $1 AND f.raised_at >= $2 AND f.raised_at < $3",
                "f.raised_at",
            ),
        }
    }

    pub fn parse(name: &str) -> Option<ReportKind> {
        ReportKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    Whole,
    Day,
    Week,
    Month,
}

impl Granularity {
    fn parse(text: &str) -> Option<Granularity> {
        match text {
            "" => Some(Granularity::Whole),
            "day" => Some(Granularity::Day),
            "week" => Some(Granularity::Week),
            "month" => Some(Granularity::Month),
            _ => None,
        }
    }

    /// The longest range a report of this granularity may span (enough for dashboards, small
    /// enough that one answer stays a few thousand rows at most).
    fn max_range(self) -> (Duration, &'static str) {
        match self {
            Granularity::Day => (Duration::days(366), "366 days"),
            Granularity::Week => (Duration::days(3 * 366), "3 years"),
            Granularity::Month | Granularity::Whole => (Duration::days(10 * 366), "10 years"),
        }
    }

    /// The label of the period starting at `start`: its local date (the Monday of a week), or
    /// its month. Computed here from the same zone data as the period starts, so a server whose
    /// time-zone database differs cannot label a period as its neighbour.
    pub fn label(self, tz: Tz, start: DateTime<Utc>) -> String {
        let local = start.with_timezone(&tz).date_naive();
        match self {
            Granularity::Month => local.format("%Y-%m").to_string(),
            _ => local.format("%Y-%m-%d").to_string(),
        }
    }

    /// The instants at which the periods covering `[from, to)` begin in `tz`: local midnights
    /// of each day, Monday or first of the month, the first at or before `from`. Empty for a
    /// report without periods.
    pub fn period_starts(
        self,
        tz: Tz,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        let first = from.with_timezone(&tz).date_naive();
        let (mut date, step): (NaiveDate, fn(NaiveDate) -> Option<NaiveDate>) = match self {
            Granularity::Whole => return Vec::new(),
            Granularity::Day => (first, |d| d.succ_opt()),
            Granularity::Week => (
                first - Duration::days(i64::from(first.weekday().num_days_from_monday())),
                |d| d.checked_add_signed(Duration::days(7)),
            ),
            Granularity::Month => (first.with_day(1).unwrap_or(first), |d| {
                d.checked_add_months(Months::new(1))
            }),
        };
        let mut starts = Vec::new();
        loop {
            let start = start_of_local_day(tz, date);
            if start >= to && !starts.is_empty() {
                return starts;
            }
            starts.push(start);
            match step(date) {
                Some(next) => date = next,
                None => return starts,
            }
        }
    }
}

/// A checked report request.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportSpec {
    pub tenant_id: String,
    pub kind: ReportKind,
    pub group_by: Vec<&'static str>,
    pub granularity: Granularity,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub filters: Vec<(&'static str, String)>,
}

impl ReportSpec {
    /// Checks a request: a known report, dimensions it has, a forward range within what the
    /// granularity allows.
    pub fn new(
        tenant_id: &str,
        report: &str,
        group_by: &[String],
        granularity: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        filters: &[(String, String)],
    ) -> Result<ReportSpec, SpecError> {
        let kind = ReportKind::parse(report).ok_or_else(|| {
            spec_error(
                "report",
                format!("unknown report `{report}` (use callbacks, satisfaction, complaints or honesty)"),
            )
        })?;
        let dimension = |field: String, name: &str| -> Result<&'static str, SpecError> {
            kind.dimensions()
                .iter()
                .find(|(d, _)| *d == name)
                .map(|(d, _)| *d)
                .ok_or_else(|| {
                    let known: Vec<&str> = kind.dimensions().iter().map(|(d, _)| *d).collect();
                    spec_error(
                        field,
                        format!(
                            "unknown dimension {} for the {} report (use {})",
                            callback_rules::input::excerpt(name),
                            kind.name(),
                            known.join(", ")
                        ),
                    )
                })
        };
        let mut dims = Vec::new();
        for (i, name) in group_by.iter().enumerate() {
            let d = dimension(format!("group_by[{i}]"), name)?;
            if dims.contains(&d) {
                return Err(spec_error(
                    format!("group_by[{i}]"),
                    format!("{} is listed twice", callback_rules::input::excerpt(name)),
                ));
            }
            dims.push(d);
        }
        for (field, count) in [("group_by", group_by.len()), ("filters", filters.len())] {
            if count > MAX_DIMENSIONS {
                let reason = format!("at most {MAX_DIMENSIONS} entries, got {count}");
                return Err(spec_error(field, reason));
            }
        }
        let mut checked_filters = Vec::new();
        for (name, value) in filters {
            // A long key is not repeated as the field's name.
            let field = format!("filters.{}", if name.len() <= 32 { name } else { "" });
            checked_filters.push((dimension(field, name)?, value.clone()));
        }
        checked_filters.sort();
        let granularity = Granularity::parse(granularity)
            .ok_or_else(|| spec_error("granularity", "must be day, week, month or empty"))?;
        let from = from.ok_or_else(|| spec_error("from", "is required"))?;
        let to = to.ok_or_else(|| spec_error("to", "is required"))?;
        if to <= from {
            return Err(spec_error("to", "must be after from"));
        }
        let (max, words) = granularity.max_range();
        if to - from > max {
            return Err(spec_error(
                "to",
                format!("the range is too large for this granularity (at most {words})"),
            ));
        }
        Ok(ReportSpec {
            tenant_id: tenant_id.to_owned(),
            kind,
            group_by: dims,
            granularity,
            from,
            to,
            filters: checked_filters,
        })
    }

    /// Column names of the answer's keys: the period first (when a granularity is set), then
    /// the dimensions.
    pub fn key_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.granularity != Granularity::Whole {
            names.push("period");
        }
        names.extend(&self.group_by);
        names
    }

    pub fn metric_names(&self) -> Vec<&'static str> {
        self.kind.metrics().iter().map(|m| m.0).collect()
    }

    /// The SQL: keys (the period's number in `$6`, counted from 1, then the dimensions as text),
    /// then each metric's value and sample size. Parameters: `$1`
    /// tenant, `$2` from, `$3` to, `$4` now, `$5` population (may be NULL),
    /// `$6` the period starts ([`Granularity::period_starts`]), then the filter values in order.
    ///
    /// The inner query puts each fact row in its period by a binary search of the period starts
    /// (`width_bucket`, instead of converting every row's time to the tenant's zone) and groups
    /// by the keys under the "C" collation (the same groups, as collations here are
    /// deterministic), so PostgreSQL hashes the groups instead of sorting every fact row by
    /// locale-aware text; the outer query orders only the groups. Periods are labelled by the
    /// caller ([`Granularity::label`]).
    pub fn sql(&self) -> String {
        let (source, time) = self.kind.source();
        let expr = |name: &str| -> &'static str {
            self.kind
                .dimensions()
                .iter()
                .find(|(d, _)| *d == name)
                .map(|(_, sql)| *sql)
                .unwrap_or("''")
        };
        let mut inner: Vec<String> = Vec::new();
        let mut outer: Vec<String> = Vec::new();
        if self.granularity != Granularity::Whole {
            inner.push(format!("width_bucket({time}, $6::timestamptz[]) AS period"));
            outer.push("g.period".to_owned());
        }
        for (i, d) in self.group_by.iter().enumerate() {
            inner.push(format!("({})::text COLLATE \"C\" AS k{i}", expr(d)));
            outer.push(format!("g.k{i} COLLATE \"default\""));
        }
        let keys = inner.len();
        for (j, (_, value, sample, _)) in self.kind.metrics().iter().enumerate() {
            inner.push(format!("({value})::float8 AS v{j}"));
            inner.push(format!("({sample})::bigint AS n{j}"));
            outer.push(format!("g.v{j}"));
            outer.push(format!("g.n{j}"));
        }
        let mut sql = format!("SELECT {} {source}", inner.join(", "));
        for (i, (name, _)) in self.filters.iter().enumerate() {
            sql.push_str(&format!(" AND ({})::text = ${}", expr(name), i + 7));
        }
        if keys == 0 {
            return sql;
        }
        let positions: Vec<String> = (1..=keys).map(|i| i.to_string()).collect();
        sql.push_str(&format!(" GROUP BY {}", positions.join(", ")));
        format!(
            "SELECT {} FROM ({sql}) g ORDER BY {}",
            outer.join(", "),
            positions.join(", ")
        )
    }
}

/// One computed figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figure {
    pub value: Option<f64>,
    pub sample_size: u64,
    pub too_few: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReportRow {
    pub keys: Vec<String>,
    pub figures: Vec<Figure>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub dimensions: Vec<&'static str>,
    pub metrics: Vec<&'static str>,
    pub rows: Vec<ReportRow>,
}

impl Report {
    /// CSV (RFC 4180): the keys, then each metric with its sample size (`<metric>_n`); an
    /// undefined figure is an empty cell.
    pub fn to_csv(&self) -> String {
        let mut header: Vec<String> = self.dimensions.iter().map(|d| (*d).to_owned()).collect();
        for m in &self.metrics {
            header.push((*m).to_owned());
            header.push(format!("{m}_n"));
        }
        let mut out = String::new();
        out.push_str(&csv_line(&header));
        for row in &self.rows {
            let mut cells = row.keys.clone();
            for figure in &row.figures {
                cells.push(figure.value.map(format_number).unwrap_or_default());
                cells.push(figure.sample_size.to_string());
            }
            out.push_str(&csv_line(&cells));
        }
        out
    }
}

fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.6}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn csv_line(cells: &[String]) -> String {
    let quoted: Vec<String> = cells
        .iter()
        .map(|cell| {
            if cell.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", cell.replace('"', "\"\""))
            } else {
                cell.clone()
            }
        })
        .collect();
    format!("{}\r\n", quoted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> Option<DateTime<Utc>> {
        Some(Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap())
    }

    fn spec(report: &str, group_by: &[&str], granularity: &str) -> Result<ReportSpec, SpecError> {
        let group_by: Vec<String> = group_by.iter().map(|s| (*s).to_owned()).collect();
        ReportSpec::new(
            "t",
            report,
            &group_by,
            granularity,
            at(2026, 9, 1),
            at(2026, 10, 1),
            &[],
        )
    }

    #[test]
    fn bad_requests_name_the_field() {
        assert_eq!(spec("sales", &[], "").unwrap_err().field, "report");
        assert_eq!(
            spec("callbacks", &["department", "colour"], "")
                .unwrap_err()
                .field,
            "group_by[1]"
        );
        assert_eq!(
            spec("callbacks", &["agent", "agent"], "")
                .unwrap_err()
                .field,
            "group_by[1]"
        );
        assert_eq!(
            spec("honesty", &[], "hour").unwrap_err().field,
            "granularity"
        );
        let inverted = ReportSpec::new(
            "t",
            "callbacks",
            &[],
            "",
            at(2026, 10, 1),
            at(2026, 9, 1),
            &[],
        );
        assert_eq!(inverted.unwrap_err().field, "to");
        let too_long = ReportSpec::new(
            "t",
            "callbacks",
            &[],
            "day",
            at(2024, 1, 1),
            at(2026, 1, 1),
            &[],
        );
        assert!(too_long.unwrap_err().reason.contains("366 days"));
        let weekly = ReportSpec::new(
            "t",
            "callbacks",
            &[],
            "week",
            at(2024, 1, 1),
            at(2026, 1, 1),
            &[],
        );
        assert!(weekly.is_ok());
        let filter = ReportSpec::new(
            "t",
            "complaints",
            &[],
            "",
            at(2026, 9, 1),
            at(2026, 10, 1),
            &[("agent".into(), "x".into())],
        );
        assert_eq!(filter.unwrap_err().field, "filters.agent");
        assert_eq!(
            ReportSpec::new("t", "callbacks", &[], "", None, at(2026, 9, 1), &[])
                .unwrap_err()
                .field,
            "from"
        );
    }

    #[test]
    fn sql_groups_by_period_and_dimensions_and_binds_filters_after_the_fixed_parameters() {
        let s = ReportSpec::new(
            "t",
            "callbacks",
            &["department".into()],
            "month",
            at(2026, 1, 1),
            at(2026, 12, 1),
            &[("channel".into(), "phone".into())],
        )
        .unwrap();
        assert_eq!(s.key_names(), ["period", "department"]);
        let sql = s.sql();
        assert!(sql.contains("width_bucket(c.due_at, $6::timestamptz[]) AS period"));
        assert!(sql.starts_with("SELECT g.period, g.k0"));
        assert!(sql.contains("(c.channel)::text = $7"));
        assert!(sql.contains("GROUP BY 1, 2) g"));
        assert!(sql.ends_with("ORDER BY 1, 2"));
    }

    fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn periods_start_at_local_midnights_of_days_mondays_and_months() {
        let shanghai: Tz = "Asia/Shanghai".parse().unwrap();
        // Wednesday 25 November 2026, 10:00 in Shanghai.
        let (from, to) = (utc(2026, 11, 25, 2), utc(2026, 12, 9, 0));
        assert_eq!(
            Granularity::Day.period_starts(shanghai, from, from + Duration::days(2)),
            [
                utc(2026, 11, 24, 16),
                utc(2026, 11, 25, 16),
                utc(2026, 11, 26, 16)
            ]
        );
        assert_eq!(
            Granularity::Week.period_starts(shanghai, from, to),
            [
                utc(2026, 11, 22, 16),
                utc(2026, 11, 29, 16),
                utc(2026, 12, 6, 16)
            ]
        );
        assert_eq!(
            Granularity::Month.period_starts(shanghai, from, to),
            [utc(2026, 10, 31, 16), utc(2026, 11, 30, 16)]
        );
        assert!(Granularity::Whole
            .period_starts(shanghai, from, to)
            .is_empty());
        let monday = utc(2026, 11, 22, 16);
        assert_eq!(Granularity::Week.label(shanghai, monday), "2026-11-23");
        assert_eq!(Granularity::Day.label(shanghai, monday), "2026-11-23");
        assert_eq!(
            Granularity::Month.label(shanghai, utc(2026, 10, 31, 16)),
            "2026-11"
        );
    }

    #[test]
    fn a_day_that_begins_in_a_dst_gap_or_overlap_starts_at_its_first_instant() {
        // Havana moves its clocks at midnight: on 11 March 2018 from 00:00 to 01:00 (the day
        // begins at 01:00 CDT), on 4 November 2018 from 01:00 back to 00:00 (midnight happens
        // twice; the day begins at the first).
        let havana: Tz = "America/Havana".parse().unwrap();
        assert_eq!(
            Granularity::Day.period_starts(havana, utc(2018, 3, 10, 12), utc(2018, 3, 12, 12)),
            [
                utc(2018, 3, 10, 5),
                utc(2018, 3, 11, 5),
                utc(2018, 3, 12, 4)
            ]
        );
        assert_eq!(
            Granularity::Day.period_starts(havana, utc(2018, 11, 3, 12), utc(2018, 11, 5, 12)),
            [
                utc(2018, 11, 3, 4),
                utc(2018, 11, 4, 4),
                utc(2018, 11, 5, 5)
            ]
        );
    }

    #[test]
    fn csv_quotes_and_leaves_undefined_figures_empty() {
        let report = Report {
            dimensions: vec!["department"],
            metrics: vec!["callback_rate"],
            rows: vec![
                ReportRow {
                    keys: vec!["ward, east".into()],
                    figures: vec![Figure {
                        value: Some(0.875),
                        sample_size: 8,
                        too_few: false,
                    }],
                },
                ReportRow {
                    keys: vec!["ward \"b\"".into()],
                    figures: vec![Figure {
                        value: None,
                        sample_size: 0,
                        too_few: true,
                    }],
                },
            ],
        };
        assert_eq!(
            report.to_csv(),
            "department,callback_rate,callback_rate_n\r\n\"ward, east\",0.875,8\r\n\"ward \"\"b\"\"\",,0\r\n"
        );
    }
}
