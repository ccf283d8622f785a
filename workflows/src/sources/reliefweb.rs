//! `reliefweb`: ReliefWeb reports about Venezuela (API v2 `/reports`), daily, into
//! `reliefweb_reports` (migration `0006_reliefweb.sql`), one row per report id.
//!
//! ```text
//! window ──> plan ──> pages ──────────────────────────────────────────────────> summary
//!                     │ loop, one page at a time, until the feed is exhausted:
//!                     │   GET /reports (date.changed ≥ position, sorted by date.changed, id)
//!                     │   → parse every report (a bad one fails the run, naming id and field)
//!                     │   → one transaction: upsert the page + advance the cursor, commit
//! ```
//!
//! **Cursor** (`ingest_cursors`, source `reliefweb`, key `''`): the greatest `date.changed`
//! stored, as `"YYYY-MM-DDTHH:MM:SSZ"`. A run asks for reports whose `date.changed` is at or
//! after the earlier of the cursor and the window's start (no cursor: the whole history), and
//! up to the window's end when there is one. Re-fetching the reports at the cursor's own second
//! is harmless: the upsert changes a row only when a field differs.
//!
//! **Why pages are walked in one step, not one step per page.** Reports get edited while a
//! walk is under way, and an edit moves a report to the end of a `date.changed` ordering: with
//! fixed offsets (`map` over `0, 1000, 2000…` computed from the first page's `totalCount`)
//! every later page shifts by one and a report is silently skipped, behind a cursor that has
//! already passed it. So the walk is keyset pagination: each page starts at the last page's
//! greatest `date.changed`, with `offset` only skipping the reports of that same second already
//! seen (`sort[]=date.changed:asc&sort[]=id:asc` makes the order total). Each page depends on
//! the previous one, so they are sequential, and each page commits its rows together with the
//! cursor: that commit is the durable progress. A retried step starts again from the cursor
//! (the earlier of it and the window's start), so no page is fetched twice in an incremental
//! run; the step's checkpoint is only the counts.
//!
//! **API quirks handled.** `appname` is mandatory and must be approved by ReliefWeb (since
//! November 2025): a missing one is a 400, an unapproved one a 403, and `/v1` answers 410; all
//! three are fatal and carry the API's own message. Every member of `fields` is optional
//! (absent, not `null`); the item `id` is a string while `fields.id` is a number; country
//! `iso3` codes are lower-case; `+` in a date filter must be sent as `%2B` (the query encoder
//! does). At most 1,000 reports per call (`page-size`), 1,000 calls a day per appname.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sqlx::{Postgres, QueryBuilder};
use tributary::workflow::{
    Error, RetryPolicy, ScheduleSpec, StepContext, StepError, StepOptions, Workflow,
};

use super::{Ingest, ParseError, SourceInfo, Window, advance_cursor, cursor, db_error};

/// The source's name: its `[sources.reliefweb]` table, its cursor and its API.
pub const SOURCE: &str = "reliefweb";

/// What `tributary sources` reports.
pub const INFO: SourceInfo = SourceInfo {
    name: SOURCE,
    workflow: "reliefweb",
    tables: &["reliefweb_reports"],
};

/// The cursor's key: one cursor for the whole feed.
const CURSOR_KEY: &str = "";

/// The API's ceiling on `limit`.
const MAX_PAGE_SIZE: u32 = 1000;

/// Pages one run walks at most beyond what the first page announced (reports edited during
/// the walk come back at its end). A run that reaches the bound stops; the next one continues
/// from the cursor.
const EXTRA_PAGES: u64 = 10;

/// `[sources.reliefweb]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// The API's base URL, version included. Default: `https://api.reliefweb.int/v2`.
    pub base_url: String,
    /// The `appname` sent with every call. ReliefWeb answers 403 to any name it has not
    /// approved (request one at <https://apidoc.reliefweb.int/parameters#appname>), so
    /// operators must set theirs. Must not be empty. Default: `tributary-venezuela` (a
    /// placeholder, not approved).
    #[serde(deserialize_with = "non_empty")]
    pub appname: String,
    /// The country whose reports are ingested: any report tagged with it (`country.iso3`),
    /// ReliefWeb's lower-case ISO 3166 alpha-3 code. Default: `ven`.
    #[serde(deserialize_with = "non_empty")]
    pub country: String,
    /// Reports per call, 1 to 1000 (the API's maximum). Default: `1000`.
    #[serde(deserialize_with = "page_size")]
    pub page_size: u32,
    /// Overrides the API's default rate limit (e.g. `120/min`); default: the API's documented
    /// limit.
    pub rate_limit: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_url: "https://api.reliefweb.int/v2".to_owned(),
            appname: "tributary-venezuela".to_owned(),
            country: "ven".to_owned(),
            page_size: MAX_PAGE_SIZE,
            rate_limit: None,
        }
    }
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(serde::de::Error::custom("must not be empty"));
    }
    Ok(s)
}

fn page_size<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u32::deserialize(d)?;
    if !(1..=MAX_PAGE_SIZE).contains(&n) {
        return Err(serde::de::Error::custom(format!(
            "{n} is out of range: the API takes 1 to {MAX_PAGE_SIZE}"
        )));
    }
    Ok(n)
}

/// What `plan` fixes for the run: the settings and window, read once so that every attempt of
/// `pages` asks the same question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The settings in force.
    pub settings: Settings,
    /// The run's window.
    pub window: Window,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Calls made (pages read) by the attempt that succeeded.
    pub pages: u64,
    /// Reports received.
    pub fetched: u64,
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated (a field changed).
    pub updated: u64,
    /// Reports received that were already stored as they are.
    pub unchanged: u64,
    /// The cursor after the run (`None`: no report ever stored).
    pub cursor: Option<String>,
    /// `false` when the walk stopped at its page bound; the next run continues.
    pub complete: bool,
}

/// One report, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// ReliefWeb's report id.
    pub id: i64,
    /// `title`.
    pub title: Option<String>,
    /// `status` (`published`, …).
    pub status: Option<String>,
    /// `url` (the node URL).
    pub url: Option<String>,
    /// `url_alias` (the readable URL).
    pub url_alias: Option<String>,
    /// `origin`: where the source published it.
    pub origin: Option<String>,
    /// `date.created`.
    pub date_created: Option<DateTime<Utc>>,
    /// `date.changed`: required, it is the cursor.
    pub date_changed: DateTime<Utc>,
    /// `date.original`.
    pub date_original: Option<DateTime<Utc>>,
    /// `primary_country.iso3`.
    pub primary_country_iso3: Option<String>,
    /// `primary_country.name`.
    pub primary_country_name: Option<String>,
    /// `country[].iso3`.
    pub country_iso3: Vec<String>,
    /// `source[].name`.
    pub sources: Vec<String>,
    /// `source[].shortname` (the name when there is none).
    pub source_shortnames: Vec<String>,
    /// `format[].name`.
    pub formats: Vec<String>,
    /// `theme[].name`.
    pub themes: Vec<String>,
    /// `language[].code` (the name when there is none).
    pub languages: Vec<String>,
    /// `disaster_type[].name`.
    pub disaster_types: Vec<String>,
    /// `body`, plain text.
    pub body: Option<String>,
}

/// The members of `fields` asked for (whole objects: nested paths are not needed).
const FIELDS: &[&str] = &[
    "id",
    "title",
    "status",
    "url",
    "url_alias",
    "origin",
    "date",
    "primary_country",
    "country",
    "source",
    "format",
    "theme",
    "language",
    "disaster_type",
    "body",
];

/// The envelope of a list response; items are parsed one by one so that an error names the
/// report.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    total_count: u64,
    count: u64,
    #[serde(default)]
    data: Vec<Value>,
}

async fn plan(ctx: StepContext, window: Window) -> Result<Plan, StepError> {
    let ing = ctx.resource::<Ingest>()?;
    let settings: Settings = ing.settings(SOURCE)?;
    Ok(Plan { settings, window })
}

/// The position a walk starts at: the earlier of the cursor and the window's start. No cursor
/// means nothing was ever stored: the whole history (up to the window's end).
fn start_position(
    cursor: Option<DateTime<Utc>>,
    window_start: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    match (cursor, window_start) {
        (None, _) => None,
        (Some(c), None) => Some(c),
        (Some(c), Some(s)) => Some(c.min(s)),
    }
}

fn cursor_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The query of one page: reports tagged with the country, changed in `[from, to]`, in a total
/// order, `offset` skipping reports of the `from` second already seen.
fn page_query(
    settings: &Settings,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    offset: u64,
) -> Vec<(String, String)> {
    let mut q: Vec<(String, String)> = vec![
        ("appname".into(), settings.appname.clone()),
        ("limit".into(), settings.page_size.to_string()),
        ("offset".into(), offset.to_string()),
        ("sort[]".into(), "date.changed:asc".into()),
        ("sort[]".into(), "id:asc".into()),
    ];
    q.extend(
        FIELDS
            .iter()
            .map(|f| ("fields[include][]".to_owned(), (*f).to_owned())),
    );
    q.push(("filter[operator]".into(), "AND".into()));
    q.push(("filter[conditions][0][field]".into(), "country.iso3".into()));
    q.push((
        "filter[conditions][0][value]".into(),
        settings.country.to_ascii_lowercase(),
    ));
    if from.is_some() || to.is_some() {
        q.push(("filter[conditions][1][field]".into(), "date.changed".into()));
        // `+00:00`, not `Z`: the API's own format (the encoder sends `+` as `%2B`).
        let iso = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, false);
        if let Some(from) = from {
            q.push(("filter[conditions][1][value][from]".into(), iso(from)));
        }
        if let Some(to) = to {
            q.push(("filter[conditions][1][value][to]".into(), iso(to)));
        }
    }
    q
}

async fn pages(ctx: StepContext, plan: Plan) -> Result<Summary, StepError> {
    let ing = ctx.resource::<Ingest>()?;
    let Plan { settings, window } = plan;
    let stored: Option<String> = cursor(&ing.db, SOURCE, CURSOR_KEY).await?;
    let stored = stored
        .map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| StepError::fatal(format!("{SOURCE}: stored cursor {s:?}: {e}")))
        })
        .transpose()?;
    let url = format!("{}/reports", settings.base_url.trim_end_matches('/'));
    let limit = u64::from(settings.page_size);

    let mut summary = Summary {
        cursor: stored.map(cursor_text),
        ..Summary::default()
    };
    let mut from = start_position(stored, window.start);
    let mut offset = 0u64;
    // Set from the first page's totalCount; the loop never runs past it.
    let mut max_pages = 1u64;
    while summary.pages < max_pages {
        if ctx.is_cancelled() {
            return Err(StepError::retryable("cancelled between pages"));
        }
        let query = page_query(&settings, from, window.end, offset);
        let query: Vec<(&str, &str)> = query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let page: Page = ing.get_json(SOURCE, &url, &query).await?;
        if summary.pages == 0 {
            max_pages = page.total_count.div_ceil(limit) + EXTRA_PAGES;
        }
        summary.pages += 1;
        let reports = parse_page(&page.data)?;
        if reports.is_empty() {
            summary.complete = true;
            break;
        }
        summary.fetched += reports.len() as u64;
        let newest = reports
            .iter()
            .map(|r| r.date_changed)
            .max()
            .unwrap_or(reports[0].date_changed);

        let mut tx = ing
            .db
            .begin()
            .await
            .map_err(|e| db_error("beginning a transaction", e))?;
        let (inserted, updated) = upsert(&mut tx, &reports).await?;
        advance_cursor(&mut tx, &ctx, SOURCE, CURSOR_KEY, &cursor_text(newest)).await?;
        tx.commit()
            .await
            .map_err(|e| db_error("committing reliefweb reports", e))?;
        summary.inserted += inserted;
        summary.updated += updated;
        summary.unchanged += reports.len() as u64 - inserted - updated;
        if summary.cursor.as_deref() < Some(cursor_text(newest).as_str()) {
            summary.cursor = Some(cursor_text(newest));
        }

        if offset + page.count >= page.total_count {
            summary.complete = true;
            break;
        }
        // Next position: the newest second of this page, skipping its reports already seen.
        let ties = reports.iter().filter(|r| r.date_changed == newest).count() as u64;
        if from == Some(newest) {
            offset += reports.len() as u64;
        } else {
            from = Some(newest);
            offset = ties;
        }
    }
    if !summary.complete {
        tracing::warn!(
            pages = summary.pages,
            "reliefweb: page bound reached; the next run continues from the cursor"
        );
    }
    Ok(summary)
}

/// Parses the items of a page, in order, keeping the last of duplicate ids.
fn parse_page(items: &[Value]) -> Result<Vec<Report>, ParseError> {
    let mut reports: Vec<Report> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let report = parse_report(i, item)?;
        reports.retain(|r| r.id != report.id);
        reports.push(report);
    }
    Ok(reports)
}

/// The `fields` of one item, with the record's name for errors.
struct Fields<'a> {
    record: String,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn error(&self, field: &'static str, problem: impl Into<String>) -> ParseError {
        ParseError {
            api: SOURCE,
            record: self.record.clone(),
            field,
            problem: problem.into(),
        }
    }

    /// The value at a dotted path; absent and `null` are both `None`.
    fn get(&self, path: &str) -> Option<&Value> {
        let mut parts = path.split('.');
        let mut value = self.map.get(parts.next()?)?;
        for part in parts {
            value = value.get(part)?;
        }
        (!value.is_null()).then_some(value)
    }

    fn text(&self, field: &'static str) -> Result<Option<String>, ParseError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.error(field, format!("expected a string, got {other}"))),
        }
    }

    fn time(&self, field: &'static str) -> Result<Option<DateTime<Utc>>, ParseError> {
        self.text(field)?
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| self.error(field, format!("{s:?} is not an ISO 8601 date: {e}")))
            })
            .transpose()
    }

    /// A list of objects (or one object), each giving the first of `keys` it has, as text.
    fn list(&self, field: &'static str, keys: &[&str]) -> Result<Vec<String>, ParseError> {
        let entries: Vec<&Value> = match self.get(field) {
            None => return Ok(Vec::new()),
            Some(Value::Array(a)) => a.iter().collect(),
            Some(o @ Value::Object(_)) => vec![o],
            Some(other) => {
                return Err(self.error(field, format!("expected a list, got {other}")));
            }
        };
        entries
            .into_iter()
            .map(|entry| {
                keys.iter()
                    .find_map(|k| entry.get(*k).and_then(Value::as_str))
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        self.error(field, format!("entry {entry} has no {}", keys.join(" or ")))
                    })
            })
            .collect()
    }
}

fn parse_report(index: usize, item: &Value) -> Result<Report, ParseError> {
    let id_text = match item.get("id") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => item
            .get("fields")
            .and_then(|f| f.get("id"))
            .map(|v| v.to_string()),
    };
    let record = id_text
        .clone()
        .unwrap_or_else(|| format!("#{index} of the page"));
    let error = |field: &'static str, problem: String| ParseError {
        api: SOURCE,
        record: record.clone(),
        field,
        problem,
    };
    let id: i64 = id_text
        .ok_or_else(|| error("id", "missing".into()))?
        .parse()
        .map_err(|e| error("id", format!("not an integer: {e}")))?;
    let map = item
        .get("fields")
        .and_then(Value::as_object)
        .ok_or_else(|| error("fields", "missing or not an object".into()))?;
    let f = Fields {
        record: record.clone(),
        map,
    };
    Ok(Report {
        id,
        title: f.text("title")?,
        status: f.text("status")?,
        url: f.text("url")?,
        url_alias: f.text("url_alias")?,
        origin: f.text("origin")?,
        date_created: f.time("date.created")?,
        date_changed: f
            .time("date.changed")?
            .ok_or_else(|| f.error("date.changed", "missing (it is the cursor)"))?,
        date_original: f.time("date.original")?,
        primary_country_iso3: f.text("primary_country.iso3")?,
        primary_country_name: f.text("primary_country.name")?,
        country_iso3: f.list("country", &["iso3"])?,
        sources: f.list("source", &["name"])?,
        source_shortnames: f.list("source", &["shortname", "name"])?,
        formats: f.list("format", &["name"])?,
        themes: f.list("theme", &["name"])?,
        languages: f.list("language", &["code", "name"])?,
        disaster_types: f.list("disaster_type", &["name"])?,
        body: f.text("body")?,
    })
}

/// Columns written, in order, besides `ingested_at` / `updated_at`.
const COLUMNS: &str = "id, title, status, url, url_alias, origin, date_created, date_changed, \
     date_original, primary_country_iso3, primary_country_name, country_iso3, sources, \
     source_shortnames, formats, themes, languages, disaster_types, body";

/// Upserts `reports` (ids unique); returns (inserted, updated). A row that is already as
/// received is left alone: its `updated_at` does not move.
async fn upsert(tx: &mut sqlx::PgConnection, reports: &[Report]) -> Result<(u64, u64), StepError> {
    let mut inserted = 0;
    let mut updated = 0;
    // 19 parameters a row: 1000 rows stay well under PostgreSQL's 65,535.
    for chunk in reports.chunks(MAX_PAGE_SIZE as usize) {
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("INSERT INTO reliefweb_reports ({COLUMNS}) "));
        q.push_values(chunk, |mut row, r| {
            row.push_bind(r.id)
                .push_bind(r.title.clone())
                .push_bind(r.status.clone())
                .push_bind(r.url.clone())
                .push_bind(r.url_alias.clone())
                .push_bind(r.origin.clone())
                .push_bind(r.date_created)
                .push_bind(r.date_changed)
                .push_bind(r.date_original)
                .push_bind(r.primary_country_iso3.clone())
                .push_bind(r.primary_country_name.clone())
                .push_bind(r.country_iso3.clone())
                .push_bind(r.sources.clone())
                .push_bind(r.source_shortnames.clone())
                .push_bind(r.formats.clone())
                .push_bind(r.themes.clone())
                .push_bind(r.languages.clone())
                .push_bind(r.disaster_types.clone())
                .push_bind(r.body.clone());
        });
        let set: Vec<String> = COLUMNS
            .split(',')
            .map(str::trim)
            .filter(|c| *c != "id")
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let old: Vec<String> = COLUMNS
            .split(',')
            .map(str::trim)
            .filter(|c| *c != "id")
            .map(|c| format!("reliefweb_reports.{c}"))
            .collect();
        let new: Vec<String> = COLUMNS
            .split(',')
            .map(str::trim)
            .filter(|c| *c != "id")
            .map(|c| format!("EXCLUDED.{c}"))
            .collect();
        q.push(format!(
            " ON CONFLICT (id) DO UPDATE SET {}, updated_at = now() \
             WHERE ({}) IS DISTINCT FROM ({}) \
             RETURNING (xmax = 0) AS inserted",
            set.join(", "),
            old.join(", "),
            new.join(", "),
        ));
        let flags: Vec<bool> = q
            .build_query_scalar()
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db_error("upserting reliefweb reports", e))?;
        let ins = flags.iter().filter(|b| **b).count() as u64;
        inserted += ins;
        updated += flags.len() as u64 - ins;
    }
    Ok((inserted, updated))
}

async fn summary(_: StepContext, summary: Summary) -> Result<Summary, StepError> {
    tracing::info!(
        pages = summary.pages,
        fetched = summary.fetched,
        inserted = summary.inserted,
        updated = summary.updated,
        unchanged = summary.unchanged,
        cursor = ?summary.cursor,
        "reliefweb ingested"
    );
    Ok(summary)
}

/// The HTTP layer already retries a call a few times within seconds; a step retry is for an
/// outage that outlasts those (and resumes from the cursor), so it waits longer.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::attempts(4)
        .initial_delay(Duration::from_secs(30))
        .max_delay(Duration::from_secs(600))
}

/// Builds the workflow, scheduled daily at 06:00 UTC (`reliefweb-daily`); each run's window is
/// its tick's data interval.
///
/// # Errors
/// Never in practice; the definition is validated like any other.
pub fn workflow() -> Result<Workflow, Error> {
    let mut wf = Workflow::builder::<Window>("reliefweb", 1);
    wf.defaults(StepOptions::default().retry(retry_policy()));
    let input = wf.input();
    let plan = wf.step("plan", &input, plan);
    // A first run walks the whole history (tens of pages at ≤ 1 call/s): more than the
    // default 5 minutes.
    let walked = wf.step_with(
        "pages",
        &plan,
        StepOptions::default()
            .retry(retry_policy())
            .timeout(Duration::from_secs(3600)),
        pages,
    );
    let out = wf.step("summary", &walked, summary);
    wf.schedule(
        ScheduleSpec::new("reliefweb-daily", "0 6 * * *").timezone("UTC"),
        |tick| Window::from(tick),
    );
    wf.build(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_walk_starts_at_the_earlier_of_cursor_and_window_and_at_the_beginning_without_cursor() {
        let c = t("2025-04-01T00:00:00Z");
        let s = t("2025-03-01T00:00:00Z");
        assert_eq!(start_position(None, Some(s)), None);
        assert_eq!(start_position(Some(c), None), Some(c));
        assert_eq!(start_position(Some(c), Some(s)), Some(s));
        assert_eq!(start_position(Some(s), Some(c)), Some(s));
    }

    #[test]
    fn settings_reject_an_out_of_range_page_size_and_an_empty_appname() {
        let e = toml::from_str::<Settings>("page-size = 5000").unwrap_err();
        assert!(e.to_string().contains("1 to 1000"), "{e}");
        let e = toml::from_str::<Settings>("appname = \"\"").unwrap_err();
        assert!(e.to_string().contains("must not be empty"), "{e}");
        let s: Settings = toml::from_str("appname = \"acme-ven-x7k\"").unwrap();
        assert_eq!(s.page_size, 1000);
        assert_eq!(s.base_url, "https://api.reliefweb.int/v2");
    }

    #[test]
    fn the_date_filter_uses_the_apis_offset_format() {
        let q = page_query(
            &Settings::default(),
            Some(t("2025-04-29T08:12:44Z")),
            None,
            3,
        );
        assert!(q.contains(&(
            "filter[conditions][1][value][from]".into(),
            "2025-04-29T08:12:44+00:00".into()
        )));
        assert!(q.contains(&("offset".into(), "3".into())));
    }
}
