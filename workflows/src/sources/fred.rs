//! `fred`: daily observations of FRED series (St. Louis Fed), by default the oil prices that
//! drive Venezuela's export revenue: `DCOILWTICO` (WTI spot) and `DCOILBRENTEU` (Brent spot),
//! into `fred_observations` (migration 0007).
//!
//! ```text
//!                     ┌─> fetch[0] (series 0: every page, parsed) ─> store[0] ─┐
//! window ─> plan ─────┤   …                                                     ├─> output
//!                     └─> fetch[n] (series n)                    ─> store[n] ─┘
//! ```
//!
//! `plan` reads the cursors and lists one item per series with its `observation_start`;
//! `fetch` (one durable step per series) GETs `series/observations` page by page and parses
//! every observation, so its checkpoint holds parsed records, never the key; `store` upserts
//! them on `(series_id, date)` and advances the series' cursor in the same transaction. The
//! stores start once every fetch has succeeded, so a bad page of one series writes nothing.
//!
//! Cursor: per series (key = series id), the last observation date stored. A run asks from the
//! day after it (the `start` setting the first time), or from the window's start when that is
//! earlier (a backfill, or a re-run of an old window, re-reads its days), up to the last day
//! of the window (`observation_end`, omitted when the window has no end). Re-reading changes
//! nothing: a row is only updated when its value differs.
//!
//! API quirks handled: `file_type=json` is always sent (the default is XML); `value` is a
//! string, `"."` meaning no value (stored as NULL, never 0); values may be negative
//! (DCOILWTICO 2020-04-20 is -36.98); paging with `limit`/`offset` until `count`; error
//! bodies may be labelled `text/xml` (the HTTP layer reads them by status, not type). A bad
//! key is a 400 with FRED's message; the key travels as the `api_key` query parameter, which
//! the HTTP layer masks, and any error text that would still contain it is scrubbed by `Ingest`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use chrono::{NaiveDate, TimeDelta};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tributary::workflow::{
    Error, RetryPolicy, ScheduleSpec, StepContext, StepError, StepOptions, Workflow,
};

use super::{Ingest, ParseError, SourceInfo, Window, advance_cursor, cursor, db_error};

/// The source's name: its `[sources.fred]` table, cursor source and rate-limited API.
const SOURCE: &str = "fred";

/// The secret holding the FRED API key.
const SECRET: &str = "fred-api-key";

/// More pages than this for one series is a runaway, not data (100,000 rows a page).
const MAX_PAGES: u64 = 1_000;

/// What `tributary sources` reports.
pub const INFO: SourceInfo = SourceInfo {
    name: SOURCE,
    workflow: "fred",
    tables: &["fred_observations"],
};

/// `[sources.fred]`.
///
/// ```
/// let s: tributary_workflows::sources::fred::Settings = toml::from_str(
///     "series = [\"DCOILWTICO\"]\nstart = \"2020-01-01\"",
/// ).unwrap();
/// assert_eq!(s.base_url, "https://api.stlouisfed.org/fred");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// The API's base URL. Default: `https://api.stlouisfed.org/fred`.
    pub base_url: String,
    /// The series to ingest. Default: `["DCOILWTICO", "DCOILBRENTEU"]` (WTI and Brent crude
    /// spot prices, daily, USD per barrel).
    pub series: Vec<String>,
    /// The first observation date asked for a series without a cursor (a TOML date or a
    /// `"YYYY-MM-DD"` string). Default: 2000-01-01.
    pub start: NaiveDate,
    /// Observations per request (`limit`, at most 100,000). Default: 100000.
    pub page_size: NonZeroU32,
    /// Overrides the API's default rate limit (e.g. `120/min`); default: the API's documented
    /// limit.
    pub rate_limit: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_url: "https://api.stlouisfed.org/fred".to_owned(),
            series: vec!["DCOILWTICO".to_owned(), "DCOILBRENTEU".to_owned()],
            start: NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date"),
            page_size: NonZeroU32::new(100_000).expect("not zero"),
            rate_limit: None,
        }
    }
}

/// One series to fetch in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesPlan {
    /// The FRED series id.
    pub series_id: String,
    /// First date asked (`observation_start`).
    pub observation_start: NaiveDate,
    /// Last date asked (`observation_end`), when the window has an end.
    pub observation_end: Option<NaiveDate>,
}

/// One observation, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The observation date.
    pub date: NaiveDate,
    /// The value as FRED wrote it (a validated decimal), `None` for `"."`.
    pub value: Option<String>,
    /// Start of the vintage's real-time period.
    pub realtime_start: NaiveDate,
    /// End of the vintage's real-time period.
    pub realtime_end: NaiveDate,
}

/// The parsed observations of one series, in date order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesBatch {
    /// The FRED series id.
    pub series_id: String,
    /// The observations, one per date.
    pub observations: Vec<Observation>,
}

/// What storing one series did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesReport {
    /// The FRED series id.
    pub series_id: String,
    /// Observations received.
    pub received: usize,
    /// Rows inserted.
    pub inserted: usize,
    /// Rows whose value changed.
    pub updated: usize,
    /// The series' cursor after this run (the last date stored), if any.
    pub cursor: Option<NaiveDate>,
}

/// A page of `series/observations`. Only what paging needs is typed; observations are parsed
/// one by one so that an error names the record.
#[derive(Debug, Deserialize)]
struct Page {
    count: u64,
    observations: Vec<Value>,
}

/// Lists the series to fetch and where each starts.
async fn plan(ctx: StepContext, window: Window) -> Result<Vec<SeriesPlan>, StepError> {
    let ing = ctx.resource::<Ingest>()?;
    let settings: Settings = ing.settings(SOURCE)?;
    let observation_end = window
        .end
        .map(|end| (end - TimeDelta::microseconds(1)).date_naive());
    let mut plans = Vec::with_capacity(settings.series.len());
    for series_id in settings.series {
        let last: Option<NaiveDate> = cursor(&ing.db, SOURCE, &series_id).await?;
        let mut start = last.map_or(settings.start, |d| d + TimeDelta::days(1));
        if let Some(window_start) = window.start {
            start = start.min(window_start.date_naive());
        }
        if observation_end.is_some_and(|end| end < start) {
            tracing::info!(series = %series_id, %start, "nothing to ask: the window ends before the cursor");
            continue;
        }
        plans.push(SeriesPlan {
            series_id,
            observation_start: start,
            observation_end,
        });
    }
    Ok(plans)
}

/// GETs every page of one series and parses it.
async fn fetch(ctx: StepContext, plan: SeriesPlan) -> Result<SeriesBatch, StepError> {
    let ing = ctx.resource::<Ingest>()?;
    let settings: Settings = ing.settings(SOURCE)?;
    let key = ing.secret(SECRET).await?;
    let url = format!(
        "{}/series/observations",
        settings.base_url.trim_end_matches('/')
    );
    let start = plan.observation_start.to_string();
    let end = plan.observation_end.map(|d| d.to_string());
    let limit = settings.page_size.to_string();
    // By date: a page boundary that shifts while paging must not give a date twice.
    let mut by_date = BTreeMap::new();
    let mut offset: u64 = 0;
    for page_number in 0.. {
        if page_number == MAX_PAGES {
            return Err(StepError::fatal(format!(
                "fred: series {}: more than {MAX_PAGES} pages; lower the window",
                plan.series_id
            )));
        }
        let offset_text = offset.to_string();
        let mut query = vec![
            ("series_id", plan.series_id.as_str()),
            ("api_key", key.expose()),
            ("file_type", "json"),
            ("observation_start", start.as_str()),
            ("sort_order", "asc"),
            ("limit", limit.as_str()),
            ("offset", offset_text.as_str()),
        ];
        if let Some(end) = &end {
            query.push(("observation_end", end.as_str()));
        }
        let page: Page = ing.get_json(SOURCE, &url, &query).await?;
        let received = page.observations.len() as u64;
        for (i, raw) in page.observations.iter().enumerate() {
            let observation = parse_observation(&plan.series_id, offset + i as u64, raw)?;
            by_date.insert(observation.date, observation);
        }
        offset += received;
        if received == 0 || offset >= page.count {
            break;
        }
    }
    Ok(SeriesBatch {
        series_id: plan.series_id,
        observations: by_date.into_values().collect(),
    })
}

/// Upserts one series' observations and advances its cursor, in one transaction.
async fn store(ctx: StepContext, batch: SeriesBatch) -> Result<SeriesReport, StepError> {
    let ing = ctx.resource::<Ingest>()?;
    let last = batch.observations.last().map(|o| o.date);
    let mut tx = ing
        .db
        .begin()
        .await
        .map_err(|e| db_error("fred: beginning a transaction", e))?;
    let dates: Vec<NaiveDate> = batch.observations.iter().map(|o| o.date).collect();
    let values: Vec<Option<String>> = batch.observations.iter().map(|o| o.value.clone()).collect();
    let starts: Vec<NaiveDate> = batch
        .observations
        .iter()
        .map(|o| o.realtime_start)
        .collect();
    let ends: Vec<NaiveDate> = batch.observations.iter().map(|o| o.realtime_end).collect();
    // Only a changed value is an update: the real-time period of an unchanged value moves
    // with every read (it is the day of the read) and would touch every row every day.
    let written: Vec<bool> = sqlx::query_scalar(
        "INSERT INTO fred_observations AS o (series_id, date, value, realtime_start, realtime_end)
         SELECT $1, t.date, t.value::numeric, t.realtime_start, t.realtime_end
         FROM UNNEST($2::date[], $3::text[], $4::date[], $5::date[])
              AS t(date, value, realtime_start, realtime_end)
         ON CONFLICT (series_id, date) DO UPDATE
         SET value = EXCLUDED.value,
             realtime_start = EXCLUDED.realtime_start,
             realtime_end = EXCLUDED.realtime_end,
             updated_at = now()
         WHERE o.value IS DISTINCT FROM EXCLUDED.value
         RETURNING (xmax = 0)",
    )
    .bind(&batch.series_id)
    .bind(&dates)
    .bind(&values)
    .bind(&starts)
    .bind(&ends)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| db_error("fred: upserting observations", e))?;
    if let Some(last) = last {
        advance_cursor(&mut tx, &ctx, SOURCE, &batch.series_id, &last).await?;
    }
    tx.commit()
        .await
        .map_err(|e| db_error("fred: committing observations", e))?;
    let inserted = written.iter().filter(|inserted| **inserted).count();
    let stored: Option<NaiveDate> = cursor(&ing.db, SOURCE, &batch.series_id).await?;
    Ok(SeriesReport {
        series_id: batch.series_id,
        received: batch.observations.len(),
        inserted,
        updated: written.len() - inserted,
        cursor: stored,
    })
}

/// Parses observation `index` of `series`.
fn parse_observation(series: &str, index: u64, raw: &Value) -> Result<Observation, ParseError> {
    let record = |date: Option<&str>| match date {
        Some(d) => format!("{series} {d}"),
        None => format!("{series} observations[{index}]"),
    };
    let text = |field: &'static str, date: Option<&str>| -> Result<String, ParseError> {
        match raw.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(ParseError {
                api: SOURCE,
                record: record(date),
                field,
                problem: format!("expected a string, got {other}"),
            }),
            None => Err(ParseError {
                api: SOURCE,
                record: record(date),
                field,
                problem: "missing".to_owned(),
            }),
        }
    };
    let date_of = |field: &'static str, date: Option<&str>| -> Result<NaiveDate, ParseError> {
        let s = text(field, date)?;
        NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(|_| ParseError {
            api: SOURCE,
            record: record(date),
            field,
            problem: format!("not a YYYY-MM-DD date: {s:?}"),
        })
    };
    if !raw.is_object() {
        return Err(ParseError {
            api: SOURCE,
            record: record(None),
            field: "observation",
            problem: format!("expected an object, got {raw}"),
        });
    }
    let date = date_of("date", None)?;
    let day = date.to_string();
    let value = text("value", Some(&day))?;
    let value = match value.trim() {
        "." => None,
        v if is_decimal(v) => Some(v.to_owned()),
        _ => {
            return Err(ParseError {
                api: SOURCE,
                record: record(Some(&day)),
                field: "value",
                problem: format!("not a number or \".\": {value:?}"),
            });
        }
    };
    Ok(Observation {
        date,
        value,
        realtime_start: date_of("realtime_start", Some(&day))?,
        realtime_end: date_of("realtime_end", Some(&day))?,
    })
}

/// A plain decimal as PostgreSQL's `numeric` reads it: `-36.98`, `71.7`, `1e3`; not `NaN`,
/// `inf` or `""`.
fn is_decimal(s: &str) -> bool {
    let digits = s.trim_start_matches(['-', '+']);
    digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Builds the workflow, scheduled daily at 23:00 UTC (`fred-daily`): FRED publishes the
/// day's updates in the US afternoon (`last_updated` around 15:30 US Central).
///
/// # Errors
/// Never in practice; the definition is validated like any other.
pub fn workflow() -> Result<Workflow, Error> {
    let mut wf = Workflow::builder::<Window>("fred", 1);
    // The HTTP layer already retries 429/5xx a few times within a call; these retries are
    // for longer outages (FRED asks for a 60 s pause after a 429 burst).
    wf.defaults(
        StepOptions::default().retry(
            RetryPolicy::attempts(5)
                .initial_delay(Duration::from_secs(5))
                .max_delay(Duration::from_secs(300)),
        ),
    );
    let input = wf.input();
    let plans = wf.step("plan", &input, plan);
    let batches = wf.map("fetch", &plans, fetch);
    let reports = wf.map("store", &batches, store);
    wf.schedule(
        ScheduleSpec::new("fred-daily", "0 23 * * *").timezone("UTC"),
        |tick| Window::from(tick),
    );
    wf.build(&reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_plain_numbers_only() {
        for ok in ["71.72", "-36.98", "0", "1e3", ".5"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", ".", "NaN", "inf", "-inf", "abc", "1,5", "--1"] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }

    #[test]
    fn a_parse_error_names_the_series_the_date_and_the_field() {
        let raw = serde_json::json!({"realtime_start": "2025-03-04", "realtime_end": "2025-03-04", "date": "2025-01-02", "value": "n/a"});
        let e = parse_observation("DCOILWTICO", 3, &raw)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DCOILWTICO 2025-01-02") && e.contains("field value"),
            "{e}"
        );
        let raw = serde_json::json!({"date": 20250102, "value": "1"});
        let e = parse_observation("DCOILWTICO", 3, &raw)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("observations[3]") && e.contains("field date"),
            "{e}"
        );
    }
}
