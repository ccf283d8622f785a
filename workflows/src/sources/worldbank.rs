//! `worldbank`: World Bank Indicators API v2 observations for Venezuela, quarterly, into
//! `worldbank_observations` (migration `0009_worldbank.sql`), one row per (indicator,
//! country, period).
//!
//! ```text
//!                ┌─> fetch[0] ─┐     ┌─> store[0] ─┐
//! window ─> plan ┼─> fetch[1] ─┼───> ┼─> store[1] ─┼─> summary
//!                └─> fetch[n] ─┘     └─> store[n] ─┘
//!   one item per configured indicator (map)
//!   fetch: every page of the indicator (page=1..pages), parsed; the checkpoint holds the
//!          parsed observations (a VEN series is tens of rows), not the raw body
//!   store: one transaction: upsert the observations + advance the indicator's cursor
//! ```
//!
//! **Cursor** (`ingest_cursors`, source `worldbank`, key = indicator id): the series'
//! `lastupdated` date (`YYYY-MM-DD`) from the response's page info, as of the newest stored
//! fetch. It records how fresh each series is (`tributary sources`); it does not skip work:
//! the fetch is needed anyway to read `lastupdated`, the configured date range may have
//! widened since, and the upsert only touches rows whose fields differ, so a re-run of an
//! unchanged series changes nothing (no new rows, no `updated_at` moved).
//!
//! **API quirks handled.** `format=json` is mandatory (XML otherwise). The response is a
//! 2-element array `[page info, rows]`; `[page info, null]` (or a 1-element array) means no
//! data; errors come as **HTTP 200** with `[{"message": [{"id", "key", "value"}]}]` and are
//! fatal with that message. Page info numbers are integers or strings. Rows are newest first
//! and `date` is a string: `"2023"`, `"2023Q1"` or `"2023M01"` (stored as `period`, with its
//! year, frequency and first day parsed). `value` is a number or `null`: Venezuela's recent
//! values are mostly `null`, and those rows are kept with a NULL value. `unit` and
//! `obs_status` are usually `""`, stored as NULL. Under load the API answers 502/503/504 with
//! HTML: retried.

use std::time::Duration;

use chrono::{Datelike, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder};
use tributary::workflow::{
    Error, RetryPolicy, ScheduleSpec, StepContext, StepError, StepOptions, Workflow,
};

use super::{Ingest, ParseError, SourceInfo, Window, advance_cursor, db_error};

/// The source's name: its `[sources.worldbank]` table, its cursors and its API.
pub const SOURCE: &str = "worldbank";

/// What `tributary sources` reports.
pub const INFO: SourceInfo = SourceInfo {
    name: SOURCE,
    workflow: "worldbank",
    tables: &["worldbank_observations"],
};

/// Pages one indicator is followed to at most (a VEN series fits on one page).
const MAX_PAGES: u64 = 1000;

/// The first year asked for by default: the start of the World Development Indicators.
const FIRST_YEAR: i32 = 1960;

/// `[sources.worldbank]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// The API's base URL, version included. Default: `https://api.worldbank.org/v2`.
    pub base_url: String,
    /// The country (ISO 3166 alpha-3 or alpha-2, as the API's path takes it). Default: `VEN`.
    #[serde(deserialize_with = "code")]
    pub country: String,
    /// The indicators ingested, one durable fetch each. Default: GDP (current US$, growth, per
    /// capita), inflation, population, unemployment, exports and imports (% of GDP), life
    /// expectancy, under-5 mortality, oil rents, net migration: `NY.GDP.MKTP.CD`,
    /// `NY.GDP.MKTP.KD.ZG`, `NY.GDP.PCAP.CD`, `FP.CPI.TOTL.ZG`, `SP.POP.TOTL`,
    /// `SL.UEM.TOTL.ZS`, `NE.EXP.GNFS.ZS`, `NE.IMP.GNFS.ZS`, `SP.DYN.LE00.IN`, `SH.DYN.MORT`,
    /// `NY.GDP.PETR.RT.ZS`, `SM.POP.NETM`.
    #[serde(deserialize_with = "indicators")]
    pub indicators: Vec<String>,
    /// The `date` range asked for, in the API's syntax (`2000:2024`, `2013Q1:2024Q4`,
    /// `2012M01:2024M12`). Default: `1960:<year of the run's window end, or this year>`.
    pub date: Option<String>,
    /// Rows per call (`per_page`). Default: `1000`.
    #[serde(deserialize_with = "per_page")]
    pub per_page: u32,
    /// Overrides the API's default rate limit (e.g. `120/min`); default: the API's documented
    /// limit.
    pub rate_limit: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_url: "https://api.worldbank.org/v2".to_owned(),
            country: "VEN".to_owned(),
            indicators: [
                "NY.GDP.MKTP.CD",
                "NY.GDP.MKTP.KD.ZG",
                "NY.GDP.PCAP.CD",
                "FP.CPI.TOTL.ZG",
                "SP.POP.TOTL",
                "SL.UEM.TOTL.ZS",
                "NE.EXP.GNFS.ZS",
                "NE.IMP.GNFS.ZS",
                "SP.DYN.LE00.IN",
                "SH.DYN.MORT",
                "NY.GDP.PETR.RT.ZS",
                "SM.POP.NETM",
            ]
            .map(str::to_owned)
            .to_vec(),
            date: None,
            per_page: 1000,
            rate_limit: None,
        }
    }
}

/// A code that goes into the URL path: letters, digits, `.` and `_` only.
fn valid_code(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
}

fn code<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !valid_code(&s) {
        return Err(serde::de::Error::custom(format!(
            "{s:?} is not a code (letters, digits, `.`, `_`)"
        )));
    }
    Ok(s)
}

fn indicators<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    if list.is_empty() {
        return Err(serde::de::Error::custom("must name at least one indicator"));
    }
    if let Some(bad) = list.iter().find(|s| !valid_code(s)) {
        return Err(serde::de::Error::custom(format!(
            "{bad:?} is not an indicator id (letters, digits, `.`, `_`)"
        )));
    }
    Ok(list)
}

fn per_page<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    if n == 0 {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(n)
}

/// One indicator to fetch: everything a `fetch` item needs, fixed by `plan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The API's base URL.
    pub base_url: String,
    /// The country in the path.
    pub country: String,
    /// The indicator id.
    pub indicator: String,
    /// The `date` range.
    pub date: String,
    /// `per_page`.
    pub per_page: u32,
}

/// One observation, as stored (and as checkpointed between `fetch` and `store`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// `indicator.id`.
    pub indicator_id: String,
    /// `countryiso3code`.
    pub country_iso3: String,
    /// `date`, as the API gives it.
    pub period: String,
    /// The period's year.
    pub year: i32,
    /// `A`, `Q` or `M`.
    pub frequency: String,
    /// The period's first day.
    pub period_start: NaiveDate,
    /// `value` as decimal text (stored as `numeric`), `None` for `null`.
    pub value: Option<String>,
    /// `unit`, `None` when empty.
    pub unit: Option<String>,
    /// `obs_status`, `None` when empty.
    pub obs_status: Option<String>,
    /// `decimal`.
    pub decimal: Option<i32>,
    /// `indicator.value`.
    pub indicator_name: Option<String>,
    /// `country.value`.
    pub country_name: Option<String>,
}

/// Everything fetched for one indicator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fetched {
    /// The indicator id asked for.
    pub indicator: String,
    /// The series' `lastupdated` from the page info, if given.
    pub last_updated: Option<String>,
    /// Calls made.
    pub pages: u64,
    /// The observations, in the API's order.
    pub observations: Vec<Observation>,
}

/// What storing one indicator did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The indicator id.
    pub indicator: String,
    /// Observations received.
    pub observations: u64,
    /// Of which with a value (not `null`).
    pub with_value: u64,
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated (a field changed).
    pub updated: u64,
    /// The series' `lastupdated`, if given.
    pub last_updated: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// One entry per indicator, in the configured order.
    pub indicators: Vec<Stored>,
    /// Rows inserted in all.
    pub inserted: u64,
    /// Rows updated in all.
    pub updated: u64,
}

async fn plan(ctx: StepContext, window: Window) -> Result<Vec<Request>, StepError> {
    let ing = ctx.resource::<Ingest>()?;
    let settings: Settings = ing.settings(SOURCE)?;
    let date = settings.date.clone().unwrap_or_else(|| {
        let year = window.end.unwrap_or_else(Utc::now).year();
        format!("{FIRST_YEAR}:{year}")
    });
    Ok(settings
        .indicators
        .iter()
        .map(|indicator| Request {
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            country: settings.country.clone(),
            indicator: indicator.clone(),
            date: date.clone(),
            per_page: settings.per_page,
        })
        .collect())
}

/// The page info of a response; numbers come as integers or strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Meta {
    pages: u64,
    last_updated: Option<String>,
}

/// One page: the page info and its rows (empty for `[meta, null]`).
fn interpret(indicator: &str, body: Value) -> Result<(Meta, Vec<Value>), StepError> {
    let snippet = || {
        let text = body.to_string();
        text.chars().take(200).collect::<String>()
    };
    let Value::Array(parts) = &body else {
        return Err(StepError::fatal(format!(
            "{SOURCE}: {indicator}: expected a [page info, rows] array, got {}",
            snippet()
        )));
    };
    let Some(Value::Object(head)) = parts.first() else {
        return Err(StepError::fatal(format!(
            "{SOURCE}: {indicator}: expected page info first, got {}",
            snippet()
        )));
    };
    if let Some(messages) = head.get("message") {
        let text: Vec<String> = messages
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|m| {
                        let field = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("");
                        format!(
                            "error {} ({}): {}",
                            field("id"),
                            field("key"),
                            field("value")
                        )
                    })
                    .collect()
            })
            .unwrap_or_else(|| vec![messages.to_string()]);
        return Err(StepError::fatal(format!(
            "{SOURCE}: {indicator}: the API answered {}",
            text.join("; ")
        )));
    }
    let number = |k: &str| -> Option<u64> {
        match head.get(k)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    };
    let meta = Meta {
        pages: number("pages").ok_or_else(|| {
            StepError::fatal(format!(
                "{SOURCE}: {indicator}: page info has no page count: {}",
                snippet()
            ))
        })?,
        last_updated: head
            .get("lastupdated")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    };
    let rows = match parts.get(1) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(rows)) => rows.clone(),
        Some(other) => {
            let text: String = other.to_string().chars().take(200).collect();
            return Err(StepError::fatal(format!(
                "{SOURCE}: {indicator}: expected a list of rows after the page info, got {text}"
            )));
        }
    };
    Ok((meta, rows))
}

/// `"2023"`, `"2023Q1"`, `"2023M01"` → (year, frequency, first day).
fn parse_period(period: &str) -> Option<(i32, &'static str, NaiveDate)> {
    let year: i32 = period.get(..4)?.parse().ok()?;
    if !period.get(..4)?.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = &period[4..];
    let (frequency, month) = if rest.is_empty() {
        ("A", 1)
    } else if let Some(q) = rest.strip_prefix('Q') {
        let q: u32 = q
            .parse()
            .ok()
            .filter(|q| (1..=4).contains(q) && rest.len() == 2)?;
        ("Q", (q - 1) * 3 + 1)
    } else if let Some(m) = rest.strip_prefix('M') {
        let m: u32 = m
            .parse()
            .ok()
            .filter(|m| (1..=12).contains(m) && rest.len() == 3)?;
        ("M", m)
    } else {
        return None;
    };
    Some((year, frequency, NaiveDate::from_ymd_opt(year, month, 1)?))
}

fn parse_observation(
    indicator: &str,
    index: usize,
    row: &Value,
) -> Result<Observation, ParseError> {
    let text = |path: &[&str]| -> Option<&str> {
        let mut v = row;
        for p in path {
            v = v.get(*p)?;
        }
        v.as_str()
    };
    let period_text = text(&["date"]);
    let record = format!(
        "{}/{}/{}",
        text(&["indicator", "id"]).unwrap_or(indicator),
        text(&["countryiso3code"]).unwrap_or("?"),
        period_text.map_or_else(|| format!("row #{index}"), str::to_owned)
    );
    let error = |field: &'static str, problem: String| ParseError {
        api: SOURCE,
        record: record.clone(),
        field,
        problem,
    };
    let indicator_id = text(&["indicator", "id"])
        .filter(|s| !s.is_empty())
        .ok_or_else(|| error("indicator.id", "missing".into()))?;
    let country_iso3 = text(&["countryiso3code"])
        .filter(|s| !s.is_empty())
        .ok_or_else(|| error("countryiso3code", "missing or empty".into()))?;
    let period = period_text.ok_or_else(|| error("date", "missing or not a string".into()))?;
    let (year, frequency, period_start) = parse_period(period).ok_or_else(|| {
        error(
            "date",
            format!("{period:?} is not a year, a quarter (2023Q1) or a month (2023M01)"),
        )
    })?;
    let value = match row.get("value") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
            Some(s.trim().to_owned())
        }
        Some(Value::String(s)) if s.is_empty() => None,
        Some(other) => return Err(error("value", format!("{other} is not a number or null"))),
    };
    let decimal = match row.get("decimal") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| error("decimal", format!("{n} is not a small integer")))?,
        ),
        Some(Value::String(s)) => Some(
            s.trim()
                .parse()
                .map_err(|_| error("decimal", format!("{s:?} is not an integer")))?,
        ),
        Some(other) => return Err(error("decimal", format!("{other} is not an integer"))),
    };
    let non_empty = |path: &[&str]| text(path).filter(|s| !s.is_empty()).map(str::to_owned);
    Ok(Observation {
        indicator_id: indicator_id.to_owned(),
        country_iso3: country_iso3.to_owned(),
        period: period.to_owned(),
        year,
        frequency: frequency.to_owned(),
        period_start,
        value,
        unit: non_empty(&["unit"]),
        obs_status: non_empty(&["obs_status"]),
        decimal,
        indicator_name: non_empty(&["indicator", "value"]),
        country_name: non_empty(&["country", "value"]),
    })
}

async fn fetch(ctx: StepContext, request: Request) -> Result<Fetched, StepError> {
    let ing = ctx.resource::<Ingest>()?;
    let url = format!(
        "{}/country/{}/indicator/{}",
        request.base_url, request.country, request.indicator
    );
    let per_page = request.per_page.to_string();
    let mut fetched = Fetched {
        indicator: request.indicator.clone(),
        last_updated: None,
        pages: 0,
        observations: Vec::new(),
    };
    let mut page = 1u64;
    let mut pages = 1u64;
    while page <= pages {
        if ctx.is_cancelled() {
            return Err(StepError::retryable("cancelled between pages"));
        }
        let page_text = page.to_string();
        let body: Value = ing
            .get_json(
                SOURCE,
                &url,
                &[
                    ("format", "json"),
                    ("date", &request.date),
                    ("per_page", &per_page),
                    ("page", &page_text),
                ],
            )
            .await?;
        let (meta, rows) = interpret(&request.indicator, body)?;
        fetched.pages += 1;
        if page == 1 {
            if meta.pages > MAX_PAGES {
                return Err(StepError::fatal(format!(
                    "{SOURCE}: {}: {} pages announced, more than {MAX_PAGES}: raise per-page",
                    request.indicator, meta.pages
                )));
            }
            pages = meta.pages;
            fetched.last_updated = meta.last_updated;
        }
        if rows.is_empty() {
            break;
        }
        let base = fetched.observations.len();
        for (i, row) in rows.iter().enumerate() {
            fetched
                .observations
                .push(parse_observation(&request.indicator, base + i, row)?);
        }
        page += 1;
    }
    // A key may appear twice only if the series changed between pages; keep the later row.
    let mut seen = std::collections::HashSet::new();
    let mut unique: Vec<Observation> = Vec::with_capacity(fetched.observations.len());
    for o in fetched.observations.into_iter().rev() {
        if seen.insert((
            o.indicator_id.clone(),
            o.country_iso3.clone(),
            o.period.clone(),
        )) {
            unique.push(o);
        }
    }
    unique.reverse();
    fetched.observations = unique;
    Ok(fetched)
}

/// Columns written, in order, besides `ingested_at` / `updated_at`.
const COLUMNS: &[&str] = &[
    "indicator_id",
    "country_iso3",
    "period",
    "year",
    "frequency",
    "period_start",
    "value",
    "unit",
    "obs_status",
    "decimal",
    "indicator_name",
    "country_name",
];

/// The key columns, which an update never changes.
const KEY: &[&str] = &["indicator_id", "country_iso3", "period"];

async fn store(ctx: StepContext, fetched: Fetched) -> Result<Stored, StepError> {
    let ing = ctx.resource::<Ingest>()?;
    let mut tx = ing
        .db
        .begin()
        .await
        .map_err(|e| db_error("beginning a transaction", e))?;
    let mut stored = Stored {
        indicator: fetched.indicator.clone(),
        observations: fetched.observations.len() as u64,
        with_value: fetched
            .observations
            .iter()
            .filter(|o| o.value.is_some())
            .count() as u64,
        last_updated: fetched.last_updated.clone(),
        ..Stored::default()
    };
    let rest: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|c| !KEY.contains(c))
        .collect();
    let tail = format!(
        " ON CONFLICT ({}) DO UPDATE SET {}, updated_at = now() \
         WHERE ({}) IS DISTINCT FROM ({}) \
         RETURNING (xmax = 0) AS inserted",
        KEY.join(", "),
        rest.iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        rest.iter()
            .map(|c| format!("worldbank_observations.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        rest.iter()
            .map(|c| format!("EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    // 12 parameters a row.
    for chunk in fetched.observations.chunks(1000) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "INSERT INTO worldbank_observations ({}) ",
            COLUMNS.join(", ")
        ));
        q.push_values(chunk, |mut row, o| {
            row.push_bind(o.indicator_id.clone())
                .push_bind(o.country_iso3.clone())
                .push_bind(o.period.clone())
                .push_bind(o.year)
                .push_bind(o.frequency.clone())
                .push_bind(o.period_start)
                .push_bind(o.value.clone())
                .push_unseparated("::numeric")
                .push_bind(o.unit.clone())
                .push_bind(o.obs_status.clone())
                .push_bind(o.decimal)
                .push_bind(o.indicator_name.clone())
                .push_bind(o.country_name.clone());
        });
        q.push(&tail);
        let flags: Vec<bool> = q
            .build_query_scalar()
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db_error("upserting worldbank observations", e))?;
        let ins = flags.iter().filter(|b| **b).count() as u64;
        stored.inserted += ins;
        stored.updated += flags.len() as u64 - ins;
    }
    if let Some(last_updated) = &fetched.last_updated {
        advance_cursor(&mut tx, &ctx, SOURCE, &fetched.indicator, last_updated).await?;
    }
    tx.commit()
        .await
        .map_err(|e| db_error("committing worldbank observations", e))?;
    Ok(stored)
}

async fn summary(_: StepContext, stored: Vec<Stored>) -> Result<Summary, StepError> {
    let summary = Summary {
        inserted: stored.iter().map(|s| s.inserted).sum(),
        updated: stored.iter().map(|s| s.updated).sum(),
        indicators: stored,
    };
    tracing::info!(
        indicators = summary.indicators.len(),
        inserted = summary.inserted,
        updated = summary.updated,
        "worldbank ingested"
    );
    Ok(summary)
}

/// Builds the workflow, scheduled quarterly (`worldbank-quarterly`: 05:00 UTC on the first
/// day of January, April, July and October); each run's window is its tick's data interval
/// (its end gives the default date range's last year).
///
/// # Errors
/// Never in practice; the definition is validated like any other.
pub fn workflow() -> Result<Workflow, Error> {
    let mut wf = Workflow::builder::<Window>("worldbank", 1);
    // The HTTP layer retries a call a few times within seconds; the World Bank's 5xx spells
    // under load can last minutes, so a step waits longer between its attempts.
    wf.defaults(
        StepOptions::default().retry(
            RetryPolicy::attempts(5)
                .initial_delay(Duration::from_secs(30))
                .max_delay(Duration::from_secs(600)),
        ),
    );
    let input = wf.input();
    let requests = wf.step("plan", &input, plan);
    let fetched = wf.map("fetch", &requests, fetch);
    let stored = wf.map("store", &fetched, store);
    let out = wf.step("summary", &stored, summary);
    wf.schedule(
        ScheduleSpec::new("worldbank-quarterly", "0 5 1 1,4,7,10 *").timezone("UTC"),
        |tick| Window::from(tick),
    );
    wf.build(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_as_years_quarters_and_months() {
        let d = |y, m| NaiveDate::from_ymd_opt(y, m, 1).unwrap();
        assert_eq!(parse_period("2023"), Some((2023, "A", d(2023, 1))));
        assert_eq!(parse_period("2023Q3"), Some((2023, "Q", d(2023, 7))));
        assert_eq!(parse_period("2023M01"), Some((2023, "M", d(2023, 1))));
        assert_eq!(parse_period("2023M12"), Some((2023, "M", d(2023, 12))));
        for bad in [
            "", "23", "2023Q5", "2023M13", "2023M1", "+202", "2023-01", "2023Q",
        ] {
            assert_eq!(parse_period(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_error_message_array_is_fatal_and_carries_the_apis_message() {
        let body = serde_json::json!([{"message": [{"id": "120", "key": "Invalid value", "value": "The provided parameter value is not valid"}]}]);
        let e = interpret("X.Y", body).unwrap_err();
        assert!(!e.is_retryable());
        assert!(
            e.message()
                .contains("error 120 (Invalid value): The provided parameter value is not valid"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn page_info_numbers_may_be_strings_and_null_rows_mean_empty() {
        let body = serde_json::json!([{"page": "1", "pages": "0", "per_page": "50", "total": "0", "lastupdated": "2025-07-01"}, null]);
        let (meta, rows) = interpret("X.Y", body).unwrap();
        assert_eq!(meta.pages, 0);
        assert_eq!(meta.last_updated.as_deref(), Some("2025-07-01"));
        assert!(rows.is_empty());
    }

    #[test]
    fn settings_reject_an_empty_indicator_list_and_a_bad_id() {
        let e = toml::from_str::<Settings>("indicators = []").unwrap_err();
        assert!(e.to_string().contains("at least one"), "{e}");
        let e = toml::from_str::<Settings>("indicators = [\"NY.GDP/../x\"]").unwrap_err();
        assert!(e.to_string().contains("not an indicator id"), "{e}");
    }
}
