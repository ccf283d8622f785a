//! `gdelt`: the GDELT 2.0 Events export, a zip of tab-separated events published every 15
//! minutes, filtered down to the events that involve Venezuela, into `gdelt_events`, with one
//! `gdelt_batches` row per batch dealt with (`migrations/0005_gdelt.sql`).
//!
//! ```text
//!          lastupdate.txt (only when the window has no end)
//!                │
//! Window ──> batches ──> load[0..n] (map: one export batch each) ──> report
//! ```
//!
//! * `batches` turns the run's [`Window`] into the list of batches to load. A batch is named by
//!   its UTC timestamp on a 15-minute boundary (`20250301143000`) and its file URL is computed
//!   from it (`<base-url>/20250301143000.export.CSV.zip`), so a window `[start, end)` maps to
//!   the boundaries inside it without asking GDELT anything, and a backfill works for any past
//!   window. A window without an end ends after the newest batch that `lastupdate.txt` lists; a
//!   window without a start continues after the cursor (at most `max-batches` at a time, the
//!   oldest first, so the next run goes on from there), or is just the newest batch when there
//!   is no cursor yet. An explicit window of more than `max-batches` batches is refused: split
//!   it (one schedule tick covers one batch).
//! * `load[i]` downloads one zip, unzips its single member, checks every line, keeps the rows
//!   with a Venezuelan actor or place, and upserts them with the batch's row and the cursor in
//!   one transaction. **Why one step and not download → parse → upsert:** a step's output is
//!   its checkpoint, stored as JSON in PostgreSQL. An export zip is hundreds of kilobytes and
//!   unzips to megabytes, which does not belong in a checkpoint; the file never changes once
//!   published, so a retried attempt simply downloads it again. The upsert is idempotent, so
//!   repeating the whole step is harmless, and doing it in one transaction means a batch is
//!   either entirely written or not at all. The checkpoint is therefore just the counts
//!   ([`BatchOutcome`]).
//! * `report` adds the counts up ([`GdeltReport`]).
//!
//! **Cursor** (`ingest_cursors`, source `gdelt`, key `export`): the newest batch timestamp
//! loaded or skipped, as GDELT writes it (`"20250301143000"`: digits only, so the JSON string
//! order is the time order). It only moves forward; a run without a window starts after it.
//! The batches of one run load in parallel, so the cursor may pass a batch that is still being
//! retried; if that batch then fails, the run fails, and retrying the run loads it.
//!
//! **Missing or late batches.** GDELT sometimes publishes a file late, and a few batches never
//! appear. A 404 on the zip is retried ([`LOAD_ATTEMPTS`] attempts in all, waiting
//! `retry-delay`, doubling each time: 2, 4, 8 and 16 minutes by default); on the last attempt the
//! step records the batch as `skipped` with the reason and succeeds, so one missing file does
//! not fail the run. A skipped batch is loaded by any later run whose window covers it
//! (`SELECT batch_at FROM gdelt_batches WHERE status = 'skipped'` lists them). A loaded batch is
//! never turned back into a skipped one. Other retryable failures (5xx, network: already
//! retried a few times by the HTTP layer) wait the same way, and fail the run when they last.
//! The last attempt is recognised from [`StepContext::attempts_left`], which counts from the
//! run's last manual retry, so `tributary retry` gives a missing batch its full set of attempts.
//!
//! **Corrupt data fails loudly.** A body that is not a zip, a zip without the export member, or
//! a value that does not parse in a kept row is a fatal [`ParseError`] naming the batch, the
//! line and the field; nothing of that batch is written. A line without exactly 61
//! tab-separated columns (GDELT publishes the odd truncated row) is skipped, counted in
//! `gdelt_batches.rows_skipped` and logged, as the reference notes advise; but when more than
//! [`MAX_SKIPPED_PERCENT`]% of a file's lines are malformed the batch fails, naming the first
//! such line: that is a change of layout (GDELT 1.0 had 58 columns), not noise, and must not
//! be half-read.
//!
//! Quirks handled: the export is tab-separated despite its `.CSV` name, has no header, and ends
//! lines with `\n` (a `\r` is tolerated); an empty field is NULL; CAMEO codes stay text
//! (`043`); actor codes are CAMEO (`VEN`), place codes FIPS 10-4 (`VE`); `lastupdate.txt` lists
//! `http://` URLs whatever the scheme it was fetched with, and its export line is found by its
//! `.export.CSV.zip` suffix, not its position; a byte that is not UTF-8 becomes U+FFFD rather
//! than failing the batch. The zip's own CRC-32 checks the download; the listing's size and
//! MD5 are not re-checked.
//!
//! Default schedule `gdelt-15min`: `5,20,35,50 * * * *` UTC. The tick at 14:35 covers
//! `[14:20, 14:35)`, i.e. the 14:30 batch, five minutes after its timestamp: GDELT publishes a
//! batch a minute or two after its timestamp, and the late-batch retries cover the rest.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use tributary::http;
use tributary::workflow::{
    Classify, Error, RetryPolicy, ScheduleSpec, StepContext, StepError, StepOptions, Workflow,
};

use super::{Ingest, ParseError, SourceInfo, Window, advance_cursor, cursor, db_error};

/// What `tributary sources` reports.
pub const INFO: SourceInfo = SourceInfo {
    name: SOURCE,
    workflow: "gdelt",
    tables: &["gdelt_batches", "gdelt_events"],
};

const SOURCE: &str = "gdelt";
const CURSOR_KEY: &str = "export";

/// Attempts of a `load` step in all, the first included; the last one records a still missing
/// batch as skipped.
pub const LOAD_ATTEMPTS: u32 = 5;

/// GDELT publishes one batch every 15 minutes, on the quarter hour.
const BATCH_SECONDS: i64 = 15 * 60;

/// Columns of a GDELT 2.0 export line.
const COLUMNS: usize = 61;

/// Above this share of malformed lines (in percent of a file's lines), a batch fails instead of
/// skipping them.
pub const MAX_SKIPPED_PERCENT: u64 = 1;

/// The largest export member read (a real one is a few megabytes): a guard against a zip bomb.
const MAX_MEMBER_BYTES: u64 = 512 * 1024 * 1024;

/// Rows per INSERT: 62 parameters each, under PostgreSQL's 65,535.
const CHUNK_ROWS: usize = 500;

/// Settings of `[sources.gdelt]`.
///
/// ```
/// use tributary_workflows::sources::gdelt::Settings;
///
/// let s: Settings = toml::from_str(r#"retry-delay = "30s""#).unwrap();
/// assert_eq!(s.base_url, "http://data.gdeltproject.org/gdeltv2");
/// assert_eq!((s.actor_country.as_str(), s.geo_country.as_str()), ("VEN", "VE"));
/// assert_eq!(s.retry_delay, std::time::Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Where the 15-minute files and `lastupdate.txt` live. Default:
    /// `http://data.gdeltproject.org/gdeltv2` (https is served too).
    pub base_url: String,
    /// Keep events with an actor of this CAMEO country (`Actor1CountryCode` or
    /// `Actor2CountryCode`); empty turns this test off. Default: `VEN`.
    pub actor_country: String,
    /// Keep events placed in this FIPS 10-4 country (`Actor1Geo_`, `Actor2Geo_` or
    /// `ActionGeo_CountryCode`); empty turns this test off. Default: `VE`.
    pub geo_country: String,
    /// Wait before the second attempt at a missing (404) or failing (5xx) batch; doubles with
    /// each attempt. Default: `2m` (then 4, 8 and 16 minutes: a batch is given about half an
    /// hour to appear).
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Most batches one run loads. A run without a start loads the oldest this many after
    /// the cursor; an explicit longer window is refused. Default: 96 (one day).
    pub max_batches: usize,
    /// Overrides the API's default rate limit (e.g. `120/min`); default: the API's documented
    /// limit.
    pub rate_limit: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_url: "http://data.gdeltproject.org/gdeltv2".into(),
            actor_country: "VEN".into(),
            geo_country: "VE".into(),
            retry_delay: Duration::from_secs(120),
            max_batches: 96,
            rate_limit: None,
        }
    }
}

/// One export batch to load: the output of `batches`, the input of a `load` item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The batch timestamp (UTC, on a 15-minute boundary).
    pub at: DateTime<Utc>,
    /// The zip's URL.
    pub url: String,
}

/// What happened to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// The file was read and its Venezuelan rows upserted.
    Loaded,
    /// The file was still missing after every attempt.
    Skipped,
}

/// The checkpoint of a `load` item: counts, never rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// The batch timestamp.
    pub at: DateTime<Utc>,
    /// Loaded or skipped.
    pub status: BatchStatus,
    /// Lines in the file (none when skipped).
    pub rows_in_file: Option<u64>,
    /// Rows kept by the Venezuela filter.
    pub rows_kept: u64,
    /// Malformed lines skipped (without 61 columns).
    #[serde(default)]
    pub rows_skipped: u64,
    /// Rows inserted or changed by this attempt (0 when re-loading an unchanged batch).
    pub rows_written: u64,
    /// Why it was skipped.
    pub reason: Option<String>,
}

/// The run's output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GdeltReport {
    /// Batches in the window.
    pub batches: usize,
    /// Batches loaded.
    pub loaded: usize,
    /// Batches recorded as skipped.
    pub skipped: usize,
    /// Lines in the loaded files.
    pub rows_in_files: u64,
    /// Rows kept by the Venezuela filter.
    pub rows_kept: u64,
    /// Rows inserted or changed.
    pub rows_written: u64,
}

/// `YYYYMMDDHHMMSS`, GDELT's batch name.
fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y%m%d%H%M%S").to_string()
}

fn parse_stamp(text: &str) -> Option<DateTime<Utc>> {
    if text.len() != 14 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    NaiveDateTime::parse_from_str(text, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

fn batch_url(base: &str, at: DateTime<Utc>) -> String {
    format!(
        "{}/{}.export.CSV.zip",
        base.trim_end_matches('/'),
        stamp(at)
    )
}

/// The first batch boundary at or after `t`.
fn ceil_to_batch(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp();
    let floor = secs - secs.rem_euclid(BATCH_SECONDS);
    let exact = floor == secs && t.timestamp_subsec_nanos() == 0;
    let boundary = if exact { floor } else { floor + BATCH_SECONDS };
    DateTime::from_timestamp(boundary, 0).unwrap_or(t)
}

/// The batch boundaries in `[start, end)`, at most `max`. With `truncate`, a longer range
/// gives its first `max`; without, it is an error.
fn boundaries(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    max: usize,
    truncate: bool,
) -> Result<Vec<DateTime<Utc>>, StepError> {
    let step = TimeDelta::seconds(BATCH_SECONDS);
    let mut out = Vec::new();
    let mut t = ceil_to_batch(start);
    while t < end {
        if out.len() == max {
            if truncate {
                break;
            }
            let seconds = (end - ceil_to_batch(start)).num_seconds();
            let total = (seconds + BATCH_SECONDS - 1) / BATCH_SECONDS;
            return Err(StepError::fatal(format!(
                "gdelt: the window [{start}, {end}) covers {total} batches, more than \
                 max-batches ({max}); split it into shorter windows"
            )));
        }
        out.push(t);
        t += step;
    }
    Ok(out)
}

/// The newest export batch listed by `lastupdate.txt`.
fn parse_lastupdate(body: &[u8], content_type: &str) -> Result<DateTime<Utc>, ParseError> {
    let text = String::from_utf8_lossy(body);
    for line in text.lines() {
        // `<size> <md5> <url>`; take the file name from the URL and match on its suffix.
        let Some(url) = line.split_whitespace().nth(2) else {
            continue;
        };
        let name = url.rsplit('/').next().unwrap_or(url);
        if let Some(at) = name.strip_suffix(".export.CSV.zip").and_then(parse_stamp) {
            if at.timestamp().rem_euclid(BATCH_SECONDS) != 0 {
                return Err(ParseError {
                    api: SOURCE,
                    record: "lastupdate.txt".into(),
                    field: "export url",
                    problem: format!("{name} is not on a 15-minute boundary"),
                });
            }
            return Ok(at);
        }
    }
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Err(ParseError {
        api: SOURCE,
        record: "lastupdate.txt".into(),
        field: "export url",
        problem: format!(
            "no line lists a YYYYMMDDHHMMSS.export.CSV.zip file (content type {content_type:?}): {:?}",
            flat.chars().take(200).collect::<String>()
        ),
    })
}

/// Step `batches`: the batches of the run's window (see the module documentation).
///
/// # Errors
/// `lastupdate.txt` unreachable (retryable) or unreadable (fatal), or a window of more than
/// `max-batches` batches (fatal).
pub async fn batches(ctx: StepContext, window: Window) -> Result<Vec<Batch>, StepError> {
    let ing = ctx.resource::<Ingest>()?;
    let settings: Settings = ing.settings(SOURCE)?;
    let base = settings.base_url.trim_end_matches('/');
    let step = TimeDelta::seconds(BATCH_SECONDS);
    let end = match window.end {
        Some(end) => end,
        None => {
            let (body, content_type) = ing
                .get_bytes(SOURCE, &format!("{base}/lastupdate.txt"), &[])
                .await?;
            parse_lastupdate(&body, &content_type)? + step
        }
    };
    let (start, truncate) = match window.start {
        Some(start) => (start, false),
        None => match cursor::<String>(&ing.db, SOURCE, CURSOR_KEY).await? {
            Some(last) => {
                let last = parse_stamp(&last).ok_or_else(|| {
                    StepError::fatal(format!("gdelt: the cursor {last:?} is not a batch"))
                })?;
                (last + step, true)
            }
            None => (end - step, false),
        },
    };
    let batches: Vec<Batch> = boundaries(start, end, settings.max_batches, truncate)?
        .into_iter()
        .map(|at| Batch {
            at,
            url: batch_url(base, at),
        })
        .collect();
    tracing::info!(
        batches = batches.len(),
        first = ?batches.first().map(|b| b.at),
        "gdelt batches to load"
    );
    Ok(batches)
}

/// How a value of a column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `bigint`, required (GLOBALEVENTID).
    Key,
    /// `date` from `YYYYMMDD`, required (SQLDATE).
    Day,
    /// `timestamptz` from `YYYYMMDDHHMMSS` UTC, required (DATEADDED).
    Added,
    /// `smallint`.
    Small,
    /// `integer`.
    Int,
    /// `double precision`.
    Float,
    /// `boolean` from `0`/`1`.
    Flag,
    /// `text`.
    Text,
}

/// A column of the export: its codebook name, its name in `gdelt_events`, its kind.
struct Column(&'static str, &'static str, Kind);

/// The 61 columns of a GDELT 2.0 export line, in file order (Event Codebook V2.0).
const SCHEMA: [Column; COLUMNS] = {
    use Kind::*;
    [
        Column("GLOBALEVENTID", "global_event_id", Key),
        Column("SQLDATE", "event_date", Day),
        Column("MonthYear", "month_year", Int),
        Column("Year", "year", Int),
        Column("FractionDate", "fraction_date", Float),
        Column("Actor1Code", "actor1_code", Text),
        Column("Actor1Name", "actor1_name", Text),
        Column("Actor1CountryCode", "actor1_country_code", Text),
        Column("Actor1KnownGroupCode", "actor1_known_group_code", Text),
        Column("Actor1EthnicCode", "actor1_ethnic_code", Text),
        Column("Actor1Religion1Code", "actor1_religion1_code", Text),
        Column("Actor1Religion2Code", "actor1_religion2_code", Text),
        Column("Actor1Type1Code", "actor1_type1_code", Text),
        Column("Actor1Type2Code", "actor1_type2_code", Text),
        Column("Actor1Type3Code", "actor1_type3_code", Text),
        Column("Actor2Code", "actor2_code", Text),
        Column("Actor2Name", "actor2_name", Text),
        Column("Actor2CountryCode", "actor2_country_code", Text),
        Column("Actor2KnownGroupCode", "actor2_known_group_code", Text),
        Column("Actor2EthnicCode", "actor2_ethnic_code", Text),
        Column("Actor2Religion1Code", "actor2_religion1_code", Text),
        Column("Actor2Religion2Code", "actor2_religion2_code", Text),
        Column("Actor2Type1Code", "actor2_type1_code", Text),
        Column("Actor2Type2Code", "actor2_type2_code", Text),
        Column("Actor2Type3Code", "actor2_type3_code", Text),
        Column("IsRootEvent", "is_root_event", Flag),
        Column("EventCode", "event_code", Text),
        Column("EventBaseCode", "event_base_code", Text),
        Column("EventRootCode", "event_root_code", Text),
        Column("QuadClass", "quad_class", Small),
        Column("GoldsteinScale", "goldstein_scale", Float),
        Column("NumMentions", "num_mentions", Int),
        Column("NumSources", "num_sources", Int),
        Column("NumArticles", "num_articles", Int),
        Column("AvgTone", "avg_tone", Float),
        Column("Actor1Geo_Type", "actor1_geo_type", Small),
        Column("Actor1Geo_FullName", "actor1_geo_full_name", Text),
        Column("Actor1Geo_CountryCode", "actor1_geo_country_code", Text),
        Column("Actor1Geo_ADM1Code", "actor1_geo_adm1_code", Text),
        Column("Actor1Geo_ADM2Code", "actor1_geo_adm2_code", Text),
        Column("Actor1Geo_Lat", "actor1_geo_lat", Float),
        Column("Actor1Geo_Long", "actor1_geo_long", Float),
        Column("Actor1Geo_FeatureID", "actor1_geo_feature_id", Text),
        Column("Actor2Geo_Type", "actor2_geo_type", Small),
        Column("Actor2Geo_FullName", "actor2_geo_full_name", Text),
        Column("Actor2Geo_CountryCode", "actor2_geo_country_code", Text),
        Column("Actor2Geo_ADM1Code", "actor2_geo_adm1_code", Text),
        Column("Actor2Geo_ADM2Code", "actor2_geo_adm2_code", Text),
        Column("Actor2Geo_Lat", "actor2_geo_lat", Float),
        Column("Actor2Geo_Long", "actor2_geo_long", Float),
        Column("Actor2Geo_FeatureID", "actor2_geo_feature_id", Text),
        Column("ActionGeo_Type", "action_geo_type", Small),
        Column("ActionGeo_FullName", "action_geo_full_name", Text),
        Column("ActionGeo_CountryCode", "action_geo_country_code", Text),
        Column("ActionGeo_ADM1Code", "action_geo_adm1_code", Text),
        Column("ActionGeo_ADM2Code", "action_geo_adm2_code", Text),
        Column("ActionGeo_Lat", "action_geo_lat", Float),
        Column("ActionGeo_Long", "action_geo_long", Float),
        Column("ActionGeo_FeatureID", "action_geo_feature_id", Text),
        Column("DATEADDED", "date_added", Added),
        Column("SOURCEURL", "source_url", Text),
    ]
};

/// Indexes of the columns the Venezuela filter looks at.
const ACTOR_COUNTRY: [usize; 2] = [7, 17];
const GEO_COUNTRY: [usize; 3] = [37, 45, 53];

/// A parsed value, typed as its column.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int8(i64),
    Date(NaiveDate),
    Time(DateTime<Utc>),
    Int2(Option<i16>),
    Int4(Option<i32>),
    Float(Option<f64>),
    Flag(Option<bool>),
    Text(Option<String>),
}

/// A kept row: its GLOBALEVENTID and the values of the other 60 columns.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    id: i64,
    values: Vec<Value>,
}

/// Which rows to keep.
#[derive(Debug, Clone)]
struct Filter {
    actor: String,
    geo: String,
}

impl Filter {
    fn keeps(&self, fields: &[&str]) -> bool {
        let actor =
            !self.actor.is_empty() && ACTOR_COUNTRY.iter().any(|&i| fields[i] == self.actor);
        let geo = !self.geo.is_empty() && GEO_COUNTRY.iter().any(|&i| fields[i] == self.geo);
        actor || geo
    }
}

/// A parsed batch file.
#[derive(Debug)]
struct Parsed {
    rows_in_file: u64,
    rows_skipped: u64,
    events: Vec<Event>,
}

fn zip_error(batch: &str, problem: String) -> ParseError {
    ParseError {
        api: SOURCE,
        record: format!("batch {batch}"),
        field: "zip",
        problem,
    }
}

/// The export member of a batch zip, uncompressed.
fn unzip(body: &[u8], batch: &str) -> Result<Vec<u8>, ParseError> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(body)).map_err(|e| {
        let start = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        zip_error(
            batch,
            format!(
                "not a readable zip ({e}); {} bytes starting {start:?}",
                body.len()
            ),
        )
    })?;
    let names: Vec<String> = archive
        .file_names()
        .map(|n| n.map(|n| n.into_owned()).unwrap_or_default())
        .collect();
    let index = names
        .iter()
        .position(|n| n.to_ascii_lowercase().ends_with(".export.csv"))
        .or((names.len() == 1).then_some(0))
        .ok_or_else(|| zip_error(batch, format!("no *.export.CSV member among {names:?}")))?;
    let mut member = archive
        .by_index(index)
        .map_err(|e| zip_error(batch, format!("member {}: {e}", names[index])))?;
    let mut out = Vec::with_capacity(member.size().min(MAX_MEMBER_BYTES) as usize);
    // Reading to the end also checks the member's CRC-32.
    (&mut member)
        .take(MAX_MEMBER_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| zip_error(batch, format!("member {}: {e}", names[index])))?;
    if out.len() as u64 > MAX_MEMBER_BYTES {
        return Err(zip_error(
            batch,
            format!(
                "member {} is larger than {MAX_MEMBER_BYTES} bytes",
                names[index]
            ),
        ));
    }
    Ok(out)
}

/// Parses one field of a kept row.
fn parse_value(kind: Kind, raw: &str) -> Result<Value, String> {
    fn opt<T: std::str::FromStr>(raw: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        if raw.is_empty() {
            return Ok(None);
        }
        raw.parse()
            .map(Some)
            .map_err(|e| format!("{raw:?} is not a number: {e}"))
    }
    let required = || {
        if raw.is_empty() {
            Err("is empty".to_owned())
        } else {
            Ok(raw)
        }
    };
    Ok(match kind {
        Kind::Key => Value::Int8(
            required()?
                .parse()
                .map_err(|e| format!("{raw:?} is not an event id: {e}"))?,
        ),
        Kind::Day => Value::Date(
            NaiveDate::parse_from_str(required()?, "%Y%m%d")
                .map_err(|e| format!("{raw:?} is not a YYYYMMDD date: {e}"))?,
        ),
        Kind::Added => Value::Time(
            parse_stamp(required()?)
                .ok_or_else(|| format!("{raw:?} is not a YYYYMMDDHHMMSS timestamp"))?,
        ),
        Kind::Small => Value::Int2(opt(raw)?),
        Kind::Int => Value::Int4(opt(raw)?),
        Kind::Float => {
            let v: Option<f64> = opt(raw)?;
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(format!("{raw:?} is not a finite number"));
            }
            Value::Float(v)
        }
        Kind::Flag => Value::Flag(match raw {
            "" => None,
            "0" => Some(false),
            "1" => Some(true),
            _ => return Err(format!("{raw:?} is not 0 or 1")),
        }),
        Kind::Text => Value::Text((!raw.is_empty()).then(|| raw.to_owned())),
    })
}

/// Reads a batch's export file: lines without 61 columns are skipped (a few) or fail the batch
/// (more than [`MAX_SKIPPED_PERCENT`]%); the kept rows are parsed.
fn parse_batch(body: &[u8], batch: &str, filter: &Filter) -> Result<Parsed, ParseError> {
    let data = unzip(body, batch)?;
    let mut rows_in_file = 0u64;
    let mut skipped: Vec<(usize, usize)> = Vec::new();
    // Keyed by GLOBALEVENTID: an id appears once per export, but should it repeat, the last
    // line wins rather than the upsert failing on a row it would change twice.
    let mut kept: HashMap<i64, Event> = HashMap::new();
    let mut order = Vec::new();
    for (index, raw) in data.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            continue;
        }
        rows_in_file += 1;
        let text = String::from_utf8_lossy(raw);
        let fields: Vec<&str> = text.split('\t').collect();
        if fields.len() != COLUMNS {
            skipped.push((line, fields.len()));
            continue;
        }
        if !filter.keeps(&fields) {
            continue;
        }
        let error = |field: &'static str, problem: String| ParseError {
            api: SOURCE,
            record: format!("batch {batch} line {line} (GLOBALEVENTID {})", fields[0]),
            field,
            problem,
        };
        let id: i64 = fields[0].parse().map_err(|e| {
            error(
                SCHEMA[0].0,
                format!("{:?} is not an event id: {e}", fields[0]),
            )
        })?;
        let values = SCHEMA[1..]
            .iter()
            .zip(&fields[1..])
            .map(|(column, raw)| parse_value(column.2, raw).map_err(|p| error(column.0, p)))
            .collect::<Result<Vec<_>, _>>()?;
        if kept.insert(id, Event { id, values }).is_some() {
            tracing::warn!(
                batch,
                id,
                line,
                "GLOBALEVENTID repeated in one export; the last line wins"
            );
        } else {
            order.push(id);
        }
    }
    let rows_skipped = skipped.len() as u64;
    if let Some(&(line, columns)) = skipped.first() {
        if rows_skipped * 100 > rows_in_file * MAX_SKIPPED_PERCENT {
            return Err(ParseError {
                api: SOURCE,
                record: format!("batch {batch} line {line}"),
                field: "columns",
                problem: format!(
                    "{columns} columns, expected {COLUMNS} ({rows_skipped} of {rows_in_file} \
                     lines malformed: more than {MAX_SKIPPED_PERCENT}%, a change of layout?)"
                ),
            });
        }
        tracing::warn!(
            batch,
            rows_skipped,
            first_line = line,
            columns,
            "gdelt lines without {COLUMNS} columns skipped"
        );
    }
    let events = order
        .into_iter()
        .filter_map(|id| kept.remove(&id))
        .collect();
    Ok(Parsed {
        rows_in_file,
        rows_skipped,
        events,
    })
}

/// The wait before the attempt after `attempt`: `retry-delay`, doubled per attempt.
fn backoff(settings: &Settings, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(10);
    settings.retry_delay.saturating_mul(1 << doublings)
}

/// Whether the HTTP layer's error is a 404: the batch is not (yet) published.
fn is_not_found(error: &http::Error) -> bool {
    matches!(error, http::Error::Status { status: 404, .. })
}

/// Step `load[i]`: one batch, downloaded, parsed, filtered and upserted in one transaction.
///
/// # Errors
/// Retryable: a 404 before the last attempt, a 5xx or a network error. Fatal: a corrupt zip or
/// line ([`ParseError`]), another 4xx, a database error that will not improve.
pub async fn load(ctx: StepContext, batch: Batch) -> Result<BatchOutcome, StepError> {
    let ing = ctx.resource::<Ingest>()?;
    let settings: Settings = ing.settings(SOURCE)?;
    let name = stamp(batch.at);
    let attempt = ctx.attempt();
    let left = ctx.attempts_left();
    let body = match ing.get_bytes(SOURCE, &batch.url, &[]).await {
        Ok((body, _)) => body,
        Err(e) if is_not_found(&e) && left > 0 => {
            return Err(StepError::retryable_after(
                format!("batch {name} is not published (yet): {e}; {left} more attempts"),
                backoff(&settings, attempt),
            ));
        }
        Err(e) if is_not_found(&e) => {
            let reason = format!("still missing after {attempt} attempts: {e}");
            tracing::warn!(batch = %name, %reason, "gdelt batch recorded as skipped");
            return record_skipped(&ctx, &ing, &batch, reason).await;
        }
        Err(e) if e.is_retryable() => {
            let wait =
                backoff(&settings, attempt).max(Classify::retry_after(&e).unwrap_or_default());
            return Err(StepError::retryable_after(
                format!("batch {name}: {e}"),
                wait,
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let filter = Filter {
        actor: settings.actor_country.clone(),
        geo: settings.geo_country.clone(),
    };
    let parsed = {
        let owned = name.clone();
        tokio::task::spawn_blocking(move || parse_batch(&body, &owned, &filter))
            .await
            .map_err(|e| StepError::fatal(format!("batch {name}: parsing panicked: {e}")))??
    };

    let mut tx = ing
        .db
        .begin()
        .await
        .map_err(|e| db_error("gdelt: beginning a transaction", e))?;
    let rows_kept = parsed.events.len() as u64;
    sqlx::query(
        "INSERT INTO gdelt_batches
             (batch_at, status, rows_in_file, rows_kept, rows_skipped, reason, url)
         VALUES ($1, 'loaded', $2, $3, $4, NULL, $5)
         ON CONFLICT (batch_at) DO UPDATE
         SET status = EXCLUDED.status, rows_in_file = EXCLUDED.rows_in_file,
             rows_kept = EXCLUDED.rows_kept, rows_skipped = EXCLUDED.rows_skipped,
             reason = NULL, url = EXCLUDED.url, loaded_at = now(), updated_at = now()
         WHERE (gdelt_batches.status, gdelt_batches.rows_in_file, gdelt_batches.rows_kept,
                gdelt_batches.rows_skipped, gdelt_batches.url)
               IS DISTINCT FROM
               (EXCLUDED.status, EXCLUDED.rows_in_file, EXCLUDED.rows_kept,
                EXCLUDED.rows_skipped, EXCLUDED.url)",
    )
    .bind(batch.at)
    .bind(i32::try_from(parsed.rows_in_file).unwrap_or(i32::MAX))
    .bind(i32::try_from(rows_kept).unwrap_or(i32::MAX))
    .bind(i32::try_from(parsed.rows_skipped).unwrap_or(i32::MAX))
    .bind(&batch.url)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("gdelt: recording a loaded batch", e))?;
    let mut rows_written = 0;
    for chunk in parsed.events.chunks(CHUNK_ROWS) {
        rows_written += upsert_events(&mut tx, batch.at, chunk).await?;
    }
    advance_cursor(&mut tx, &ctx, SOURCE, CURSOR_KEY, &name).await?;
    tx.commit()
        .await
        .map_err(|e| db_error("gdelt: committing a batch", e))?;
    tracing::info!(batch = %name, rows_in_file = parsed.rows_in_file, rows_kept, rows_skipped = parsed.rows_skipped, rows_written, "gdelt batch loaded");
    Ok(BatchOutcome {
        at: batch.at,
        status: BatchStatus::Loaded,
        rows_in_file: Some(parsed.rows_in_file),
        rows_kept,
        rows_skipped: parsed.rows_skipped,
        rows_written,
        reason: None,
    })
}

/// Records a batch that never appeared, and moves the cursor past it. A batch loaded earlier
/// stays loaded.
async fn record_skipped(
    ctx: &StepContext,
    ing: &Ingest,
    batch: &Batch,
    reason: String,
) -> Result<BatchOutcome, StepError> {
    let mut tx = ing
        .db
        .begin()
        .await
        .map_err(|e| db_error("gdelt: beginning a transaction", e))?;
    sqlx::query(
        "INSERT INTO gdelt_batches (batch_at, status, rows_in_file, rows_kept, reason, url)
         VALUES ($1, 'skipped', NULL, 0, $2, $3)
         ON CONFLICT (batch_at) DO UPDATE
         SET reason = EXCLUDED.reason, url = EXCLUDED.url, updated_at = now()
         WHERE gdelt_batches.status = 'skipped'
           AND (gdelt_batches.reason, gdelt_batches.url)
               IS DISTINCT FROM (EXCLUDED.reason, EXCLUDED.url)",
    )
    .bind(batch.at)
    .bind(&reason)
    .bind(&batch.url)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("gdelt: recording a skipped batch", e))?;
    advance_cursor(&mut tx, ctx, SOURCE, CURSOR_KEY, &stamp(batch.at)).await?;
    tx.commit()
        .await
        .map_err(|e| db_error("gdelt: committing a skipped batch", e))?;
    Ok(BatchOutcome {
        at: batch.at,
        status: BatchStatus::Skipped,
        rows_in_file: None,
        rows_kept: 0,
        rows_skipped: 0,
        rows_written: 0,
        reason: Some(reason),
    })
}

/// Upserts kept rows; returns how many were inserted or changed. An unchanged row is left
/// alone (its `updated_at` too).
async fn upsert_events(
    tx: &mut PgConnection,
    batch_at: DateTime<Utc>,
    events: &[Event],
) -> Result<u64, StepError> {
    if events.is_empty() {
        return Ok(0);
    }
    let names: Vec<&str> = SCHEMA.iter().map(|c| c.1).collect();
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "INSERT INTO gdelt_events ({}, batch_at) ",
        names.join(", ")
    ));
    sql.push_values(events, |mut row, event| {
        row.push_bind(event.id);
        for value in &event.values {
            match value {
                Value::Int8(v) => row.push_bind(*v),
                Value::Date(v) => row.push_bind(*v),
                Value::Time(v) => row.push_bind(*v),
                Value::Int2(v) => row.push_bind(*v),
                Value::Int4(v) => row.push_bind(*v),
                Value::Float(v) => row.push_bind(*v),
                Value::Flag(v) => row.push_bind(*v),
                Value::Text(v) => row.push_bind(v.clone()),
            };
        }
        row.push_bind(batch_at);
    });
    let updated: Vec<&str> = names[1..].iter().copied().chain(["batch_at"]).collect();
    sql.push(format!(
        " ON CONFLICT (global_event_id) DO UPDATE SET {}, updated_at = now() \
         WHERE ({}) IS DISTINCT FROM ({})",
        updated
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        updated
            .iter()
            .map(|c| format!("gdelt_events.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        updated
            .iter()
            .map(|c| format!("EXCLUDED.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    let first = events.first().map_or(0, |e| e.id);
    let done = sql.build().execute(&mut *tx).await.map_err(|e| {
        db_error(
            &format!("gdelt: upserting events from GLOBALEVENTID {first}"),
            e,
        )
    })?;
    Ok(done.rows_affected())
}

/// Step `report`: the run's counts.
///
/// # Errors
/// Never.
pub async fn report(_: StepContext, outcomes: Vec<BatchOutcome>) -> Result<GdeltReport, StepError> {
    let mut report = GdeltReport {
        batches: outcomes.len(),
        ..GdeltReport::default()
    };
    for o in &outcomes {
        match o.status {
            BatchStatus::Loaded => report.loaded += 1,
            BatchStatus::Skipped => report.skipped += 1,
        }
        report.rows_in_files += o.rows_in_file.unwrap_or(0);
        report.rows_kept += o.rows_kept;
        report.rows_written += o.rows_written;
    }
    Ok(report)
}

/// Builds the workflow `gdelt` (input: a [`Window`]) with its schedule `gdelt-15min`.
///
/// # Errors
/// Never in practice; the definition is validated like any other.
pub fn workflow() -> Result<Workflow, Error> {
    let mut wf = Workflow::builder::<Window>("gdelt", 1);
    wf.defaults(
        StepOptions::default()
            .retry(RetryPolicy::attempts(3).initial_delay(Duration::from_secs(10))),
    );
    let input = wf.input();
    let listed = wf.step("batches", &input, batches);
    // The real waits of `load` come from `retry-delay` (as `retry_after`, which the engine
    // honours when it is longer than the policy's back-off), so that a deployment, or a
    // test, can change them without a new build; the policy only fixes the attempts.
    let loaded = wf.map_with(
        "load",
        &listed,
        StepOptions::default().retry(
            RetryPolicy::attempts(LOAD_ATTEMPTS)
                .initial_delay(Duration::from_millis(100))
                .max_delay(Duration::from_secs(1)),
        ),
        load,
    );
    let out = wf.step("report", &loaded, report);
    wf.schedule(
        ScheduleSpec::new("gdelt-15min", "5,20,35,50 * * * *").timezone("UTC"),
        |tick| Window::from(tick),
    );
    wf.build(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_stamp(s).unwrap()
    }

    #[test]
    fn a_window_maps_to_the_batch_boundaries_inside_it() {
        let b = boundaries(at("20250301141700"), at("20250301143200"), 96, false).unwrap();
        assert_eq!(b, vec![at("20250301143000")]);
        let b = boundaries(at("20250301141500"), at("20250301144500"), 96, false).unwrap();
        assert_eq!(b, vec![at("20250301141500"), at("20250301143000")]);
        assert!(
            boundaries(at("20250301143100"), at("20250301144500"), 96, false)
                .unwrap()
                .is_empty()
        );
        let e = boundaries(at("20250301000000"), at("20250302000100"), 96, false).unwrap_err();
        assert!(e.message().contains("97 batches"), "{e}");
        let b = boundaries(at("20250301000000"), at("20250302000100"), 96, true).unwrap();
        assert_eq!(b.len(), 96);
    }

    #[test]
    fn lastupdate_names_the_export_by_its_suffix() {
        let body = b"10768507 ea8dde0beb0ba98810a92db068c0ce99 http://data.gdeltproject.org/gdeltv2/20150218230000.gkg.csv.zip\n\
150383 297a16b493de7cf6ca809a7cc31d0b93 http://data.gdeltproject.org/gdeltv2/20150218230000.export.CSV.zip\n";
        assert_eq!(
            parse_lastupdate(body, "text/plain").unwrap(),
            at("20150218230000")
        );
        let e = parse_lastupdate(b"<html><body>Proxy error</body></html>", "text/html")
            .unwrap_err()
            .to_string();
        assert!(e.contains("text/html") && e.contains("Proxy error"), "{e}");
    }

    #[test]
    fn the_schema_has_one_entry_per_column_and_the_filter_columns_are_country_codes() {
        assert_eq!(SCHEMA.len(), COLUMNS);
        for i in ACTOR_COUNTRY.iter().chain(&GEO_COUNTRY) {
            assert!(SCHEMA[*i].0.ends_with("CountryCode"), "{}", SCHEMA[*i].0);
        }
    }

    #[test]
    fn the_schedule_leaves_gdelt_five_minutes_past_each_quarter_hour() {
        let wf = workflow().unwrap();
        let schedule = &wf.schedules()[0];
        let next = schedule.next_after(at("20250301143000")).unwrap();
        assert_eq!(next, at("20250301143500"));
        let tick = schedule.tick(next);
        let window = Window::from(&tick);
        let b = boundaries(window.start.unwrap(), window.end.unwrap(), 96, false).unwrap();
        assert_eq!(b, vec![at("20250301143000")]);
    }
}
