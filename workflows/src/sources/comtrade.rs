//! `comtrade`: UN Comtrade trade flows with Venezuela into `comtrade_flows` (migration 0008):
//! what Venezuela itself reported (`reporterCode=862`, every partner) and what its partners
//! reported about their trade with it (`partnerCode=862`, every reporter: the *mirror*
//! flows, the only recent data, since Venezuela has not reported recent years).
//!
//! ```text
//!                  ┌─> fetch[0] (query, period) ─> store[0] ─┐
//! window ─> plan ──┤   …                                      ├─> output
//!                  └─> fetch[n] (query, period) ─> store[n] ─┘
//! ```
//!
//! `plan` lists, for both queries, the periods from `start-year` to the last period that
//! ended before the window's end, minus those already loaded; `fetch` (one durable step per
//! query and period, so a spent quota or a retry never repeats the others) GETs
//! `get/C/{A|M}/HS` and parses every record; `store` upserts them on the natural key and
//! records the period as loaded, in one transaction. The stores start once every fetch has
//! succeeded, so a malformed record writes nothing.
//!
//! Annual data (`freqCode=A`) by default: it is what most partners report (and all that
//! Venezuela reported), its revisions settle, and a year is one call per query, within the
//! free tier's 500 calls a day; `frequency = "M"` switches to monthly periods.
//!
//! Cursor: the `comtrade_loaded_periods` table, one row per (query, period) fetched, with its
//! record count. A period with records is skipped by later runs, except the most recent
//! `refresh-periods` ones, which partners keep reporting and revising; a period that came
//! back empty is asked again next time. To reload a period, delete its row. The latest
//! period with records is also the source's cursor in `ingest_cursors` (key: the query), for
//! `tributary sources`.
//!
//! API quirks handled: the subscription key goes as the `subscription-key` query parameter
//! (the HTTP layer masks it; it cannot send the `Ocp-Apim-Subscription-Key` header); an
//! `error` string in a 200 answer is a failure; `count` equal to `maxRecords` means the answer
//! was truncated (fatal: narrow the query); `cifvalue`/`fobvalue` may be null (NULL);
//! `cmdCode` keeps its leading zeros; a 429 "Try again in N seconds" without `Retry-After` is
//! retried after N seconds; a 403 "Out of call volume quota. Quota will be replenished in
//! HH:MM:SS" is retried when the quota is back; a 401 (bad key) is fatal with the API's message.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use tributary::http;
use tributary::workflow::{
    Error, RetryPolicy, ScheduleSpec, StepContext, StepError, StepOptions, Workflow,
};

use super::{Ingest, ParseError, SourceInfo, Window, advance_cursor, db_error};

/// The source's name: its `[sources.comtrade]` table, cursor source and rate-limited API.
const SOURCE: &str = "comtrade";

/// The secret holding the Comtrade subscription key.
const SECRET: &str = "comtrade-subscription-key";

/// Goods (`C`), classification as reported (`HS`).
const TYPE_CODE: &str = "C";
const CLASSIFICATION: &str = "HS";

/// When a spent quota does not say when it comes back: the free tier's quota is daily.
const QUOTA_FALLBACK: Duration = Duration::from_secs(3600);

/// What `tributary sources` reports.
pub const INFO: SourceInfo = SourceInfo {
    name: SOURCE,
    workflow: "comtrade",
    tables: &["comtrade_flows", "comtrade_loaded_periods"],
};

/// Annual or monthly data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frequency {
    /// `A`: periods `YYYY`.
    #[serde(rename = "A")]
    Annual,
    /// `M`: periods `YYYYMM`.
    #[serde(rename = "M")]
    Monthly,
}

impl Frequency {
    fn code(self) -> &'static str {
        match self {
            Frequency::Annual => "A",
            Frequency::Monthly => "M",
        }
    }
}

/// `[sources.comtrade]`.
///
/// ```
/// let s: tributary_workflows::sources::comtrade::Settings =
///     toml::from_str("frequency = \"M\"\nstart-year = 2020").unwrap();
/// assert_eq!(s.partner, 862);
/// assert_eq!(s.cmd_code, "TOTAL");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// The API's base URL. Default: `https://comtradeapi.un.org/data/v1`.
    pub base_url: String,
    /// The reporter of the first query (all its partners). Default: 862 (Venezuela, UN M49).
    pub reporter: u32,
    /// The partner of the second query (all reporters: mirror flows). Default: 862.
    pub partner: u32,
    /// Flow codes asked (`M` import, `X` export, `RM`, `RX`). Default: `["M", "X"]`.
    pub flows: Vec<String>,
    /// Commodity code(s) (`cmdCode`): `TOTAL`, an HS chapter (`27`), heading (`2709`), or a
    /// comma list. Default: `TOTAL`.
    pub cmd_code: String,
    /// `"A"` (annual) or `"M"` (monthly). Default: `"A"`.
    pub frequency: Frequency,
    /// The first year loaded. Default: 2010.
    pub start_year: i32,
    /// How many of the most recent periods are fetched again on every run, loaded or not
    /// (partners report late and revise). Default: 2.
    pub refresh_periods: u32,
    /// `maxRecords` per call; an answer this long is truncated, and the step fails asking for
    /// a narrower query. Default: 100000 (the free tier's limit).
    pub max_records: NonZeroU32,
    /// Overrides the API's default rate limit (e.g. `10/min`); default: the API's documented
    /// limit.
    pub rate_limit: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_url: "https://comtradeapi.un.org/data/v1".to_owned(),
            reporter: 862,
            partner: 862,
            flows: vec!["M".to_owned(), "X".to_owned()],
            cmd_code: "TOTAL".to_owned(),
            frequency: Frequency::Annual,
            start_year: 2010,
            refresh_periods: 2,
            max_records: NonZeroU32::new(100_000).expect("not zero"),
            rate_limit: None,
        }
    }
}

/// One query: the filters of a `get` call, all but the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Annual or monthly.
    pub frequency: Frequency,
    /// `reporterCode`, or every reporter.
    pub reporter: Option<u32>,
    /// `partnerCode`, or every partner.
    pub partner: Option<u32>,
    /// `cmdCode`.
    pub cmd_code: String,
    /// `flowCode` (comma list).
    pub flows: String,
}

impl Query {
    /// The query's name in `comtrade_loaded_periods` and the cursor key, e.g.
    /// `C/A/HS reporterCode=* partnerCode=862 cmdCode=TOTAL flowCode=M,X`.
    pub fn label(&self) -> String {
        let code = |c: Option<u32>| c.map_or_else(|| "*".to_owned(), |c| c.to_string());
        format!(
            "{TYPE_CODE}/{}/{CLASSIFICATION} reporterCode={} partnerCode={} cmdCode={} flowCode={}",
            self.frequency.code(),
            code(self.reporter),
            code(self.partner),
            self.cmd_code,
            self.flows
        )
    }
}

/// One call to make: a query and a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodPlan {
    /// The query.
    pub query: Query,
    /// `YYYY` or `YYYYMM`.
    pub period: String,
}

/// One record of `data`, parsed; its fields are the columns of `comtrade_flows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // the columns are documented in migrations/0008_comtrade.sql
pub struct Flow {
    pub type_code: String,
    pub freq_code: String,
    pub period: String,
    pub ref_date: NaiveDate,
    pub ref_year: i64,
    pub ref_month: i64,
    pub reporter_code: i64,
    pub reporter_iso: Option<String>,
    pub reporter_desc: Option<String>,
    pub flow_code: String,
    pub flow_desc: Option<String>,
    pub partner_code: i64,
    pub partner_iso: Option<String>,
    pub partner_desc: Option<String>,
    pub partner2_code: i64,
    pub partner2_iso: Option<String>,
    pub partner2_desc: Option<String>,
    pub classification_code: String,
    pub classification_search_code: Option<String>,
    pub is_original_classification: Option<bool>,
    pub cmd_code: String,
    pub cmd_desc: Option<String>,
    pub aggr_level: Option<i64>,
    pub is_leaf: Option<bool>,
    pub customs_code: String,
    pub customs_desc: Option<String>,
    pub mos_code: Option<String>,
    pub mot_code: i64,
    pub mot_desc: Option<String>,
    pub qty_unit_code: Option<i64>,
    pub qty_unit_abbr: Option<String>,
    pub qty: Option<Number>,
    pub is_qty_estimated: Option<bool>,
    pub alt_qty_unit_code: Option<i64>,
    pub alt_qty_unit_abbr: Option<String>,
    pub alt_qty: Option<Number>,
    pub is_alt_qty_estimated: Option<bool>,
    pub net_wgt: Option<Number>,
    pub is_net_wgt_estimated: Option<bool>,
    pub gross_wgt: Option<Number>,
    pub is_gross_wgt_estimated: Option<bool>,
    pub cif_value: Option<Number>,
    pub fob_value: Option<Number>,
    pub primary_value: Option<Number>,
    pub legacy_estimation_flag: Option<i64>,
    pub is_reported: Option<bool>,
    pub is_aggregate: Option<bool>,
}

/// The parsed records of one (query, period).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodBatch {
    /// What was asked.
    pub plan: PeriodPlan,
    /// The records, one per natural key.
    pub flows: Vec<Flow>,
}

/// What storing one (query, period) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodReport {
    /// The query's label.
    pub query: String,
    /// The period.
    pub period: String,
    /// Records received.
    pub received: usize,
    /// Rows inserted.
    pub inserted: usize,
    /// Rows that changed.
    pub updated: usize,
}

/// The answer's envelope. Records are parsed one by one so that an error names the record.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    count: Option<u64>,
    #[serde(default)]
    data: Option<Vec<Value>>,
    #[serde(default)]
    error: Option<String>,
}

/// The queries of a run.
fn queries(settings: &Settings) -> [Query; 2] {
    let query = |reporter, partner| Query {
        frequency: settings.frequency,
        reporter,
        partner,
        cmd_code: settings.cmd_code.clone(),
        flows: settings.flows.join(","),
    };
    [
        query(Some(settings.reporter), None),
        query(None, Some(settings.partner)),
    ]
}

/// The periods from `start_year` to the last one that ended at or before `end`, oldest first.
fn periods(frequency: Frequency, start_year: i32, end: DateTime<Utc>) -> Vec<String> {
    match frequency {
        Frequency::Annual => (start_year..end.year()).map(|y| y.to_string()).collect(),
        Frequency::Monthly => {
            let last = end.year() * 12 + end.month0() as i32; // the current month, excluded
            (start_year * 12..last)
                .map(|m| format!("{}{:02}", m.div_euclid(12), m.rem_euclid(12) + 1))
                .collect()
        }
    }
}

/// Lists the (query, period) calls to make.
async fn plan(ctx: StepContext, window: Window) -> Result<Vec<PeriodPlan>, StepError> {
    let ing = ctx.resource::<Ingest>()?;
    let settings: Settings = ing.settings(SOURCE)?;
    let end = window.end.unwrap_or_else(Utc::now);
    let all = periods(settings.frequency, settings.start_year, end);
    let recent = all.len().saturating_sub(settings.refresh_periods as usize);
    let mut plans = Vec::new();
    for query in queries(&settings) {
        let loaded: HashMap<String, i32> = sqlx::query_as::<_, (String, i32)>(
            "SELECT period, records FROM comtrade_loaded_periods WHERE query = $1",
        )
        .bind(query.label())
        .fetch_all(&ing.db)
        .await
        .map_err(|e| db_error("comtrade: reading the loaded periods", e))?
        .into_iter()
        .collect();
        for (i, period) in all.iter().enumerate() {
            let has_records = loaded.get(period).is_some_and(|records| *records > 0);
            if has_records && i < recent {
                continue;
            }
            plans.push(PeriodPlan {
                query: query.clone(),
                period: period.clone(),
            });
        }
    }
    Ok(plans)
}

/// GETs one (query, period) and parses its records.
async fn fetch(ctx: StepContext, plan: PeriodPlan) -> Result<PeriodBatch, StepError> {
    let ing = ctx.resource::<Ingest>()?;
    let settings: Settings = ing.settings(SOURCE)?;
    let key = ing.secret(SECRET).await?;
    let url = format!(
        "{}/get/{TYPE_CODE}/{}/{CLASSIFICATION}",
        settings.base_url.trim_end_matches('/'),
        plan.query.frequency.code()
    );
    let reporter = plan.query.reporter.map(|c| c.to_string());
    let partner = plan.query.partner.map(|c| c.to_string());
    let max_records = settings.max_records.to_string();
    let mut query = vec![
        ("period", plan.period.as_str()),
        ("partner2Code", "0"),
        ("cmdCode", plan.query.cmd_code.as_str()),
        ("flowCode", plan.query.flows.as_str()),
        ("customsCode", "C00"),
        ("motCode", "0"),
        ("maxRecords", max_records.as_str()),
        ("format", "JSON"),
        ("breakdownMode", "classic"),
        ("includeDesc", "true"),
        ("subscription-key", key.expose()),
    ];
    if let Some(r) = &reporter {
        query.push(("reporterCode", r.as_str()));
    }
    if let Some(p) = &partner {
        query.push(("partnerCode", p.as_str()));
    }
    let envelope: Envelope = ing.get_json(SOURCE, &url, &query).await.map_err(classify)?;
    let label = plan.query.label();
    if let Some(error) = envelope.error.filter(|e| !e.trim().is_empty()) {
        let message = format!(
            "comtrade: {label} period {}: the API says: {error}",
            plan.period
        );
        return Err(StepError::fatal(message.replace(key.expose(), "***")));
    }
    let data = envelope.data.unwrap_or_default();
    if data.len() >= settings.max_records.get() as usize
        || envelope.count.unwrap_or(0) >= u64::from(settings.max_records.get())
    {
        return Err(StepError::fatal(format!(
            "comtrade: {label} period {}: {} records, the maxRecords limit: the answer is \
             truncated; narrow the query (cmd-code, flows) or raise max-records",
            plan.period,
            data.len()
        )));
    }
    let mut by_key = BTreeMap::new();
    for (i, raw) in data.iter().enumerate() {
        let record = format!("{label} period {} data[{i}]", plan.period);
        let flow = parse_flow(&record, raw)?;
        check(&record, &plan, &flow)?;
        by_key.insert(natural_key(&flow), flow);
    }
    if by_key.len() < data.len() {
        tracing::warn!(query = %label, period = %plan.period, duplicates = data.len() - by_key.len(), "records repeated a natural key; the last one is kept");
    }
    Ok(PeriodBatch {
        plan,
        flows: by_key.into_values().collect(),
    })
}

/// Upserts one (query, period), records it as loaded and advances the cursor, in one
/// transaction.
async fn store(ctx: StepContext, batch: PeriodBatch) -> Result<PeriodReport, StepError> {
    let ing = ctx.resource::<Ingest>()?;
    let label = batch.plan.query.label();
    let rows = serde_json::to_value(&batch.flows).map_err(StepError::fatal)?;
    let mut tx = ing
        .db
        .begin()
        .await
        .map_err(|e| db_error("comtrade: beginning a transaction", e))?;
    let written: Vec<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(UPSERT.as_str()))
        .bind(rows)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| db_error("comtrade: upserting flows", e))?;
    let received = batch.flows.len();
    sqlx::query(
        "INSERT INTO comtrade_loaded_periods (query, period, records, last_run_id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (query, period) DO UPDATE
         SET records = EXCLUDED.records, last_run_id = EXCLUDED.last_run_id, updated_at = now()
         WHERE comtrade_loaded_periods.records IS DISTINCT FROM EXCLUDED.records",
    )
    .bind(&label)
    .bind(&batch.plan.period)
    .bind(i32::try_from(received).unwrap_or(i32::MAX))
    .bind(ctx.run_id().0)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("comtrade: recording a loaded period", e))?;
    if received > 0 {
        advance_cursor(&mut tx, &ctx, SOURCE, &label, &batch.plan.period).await?;
    }
    tx.commit()
        .await
        .map_err(|e| db_error("comtrade: committing flows", e))?;
    let inserted = written.iter().filter(|inserted| **inserted).count();
    Ok(PeriodReport {
        query: label,
        period: batch.plan.period,
        received,
        inserted,
        updated: written.len() - inserted,
    })
}

/// The natural key, as in the table's primary key.
fn natural_key(
    f: &Flow,
) -> (
    String,
    String,
    String,
    i64,
    i64,
    i64,
    String,
    String,
    String,
    i64,
    String,
) {
    (
        f.type_code.clone(),
        f.freq_code.clone(),
        f.period.clone(),
        f.reporter_code,
        f.partner_code,
        f.partner2_code,
        f.flow_code.clone(),
        f.cmd_code.clone(),
        f.customs_code.clone(),
        f.mot_code,
        f.classification_code.clone(),
    )
}

const KEY_COLUMNS: &[&str] = &[
    "type_code",
    "freq_code",
    "period",
    "reporter_code",
    "partner_code",
    "partner2_code",
    "flow_code",
    "cmd_code",
    "customs_code",
    "mot_code",
    "classification_code",
];

const VALUE_COLUMNS: &[&str] = &[
    "ref_date",
    "ref_year",
    "ref_month",
    "reporter_iso",
    "reporter_desc",
    "flow_desc",
    "partner_iso",
    "partner_desc",
    "partner2_iso",
    "partner2_desc",
    "classification_search_code",
    "is_original_classification",
    "cmd_desc",
    "aggr_level",
    "is_leaf",
    "customs_desc",
    "mos_code",
    "mot_desc",
    "qty_unit_code",
    "qty_unit_abbr",
    "qty",
    "is_qty_estimated",
    "alt_qty_unit_code",
    "alt_qty_unit_abbr",
    "alt_qty",
    "is_alt_qty_estimated",
    "net_wgt",
    "is_net_wgt_estimated",
    "gross_wgt",
    "is_gross_wgt_estimated",
    "cif_value",
    "fob_value",
    "primary_value",
    "legacy_estimation_flag",
    "is_reported",
    "is_aggregate",
];

/// The batch upsert: the records travel as one JSON array, which PostgreSQL turns into rows
/// of the table's own types (`jsonb_populate_recordset`); only a changed row is updated.
static UPSERT: LazyLock<String> = LazyLock::new(|| {
    let all: Vec<&str> = KEY_COLUMNS.iter().chain(VALUE_COLUMNS).copied().collect();
    let columns = all.join(", ");
    let set: Vec<String> = VALUE_COLUMNS
        .iter()
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let old: Vec<String> = VALUE_COLUMNS.iter().map(|c| format!("f.{c}")).collect();
    let new: Vec<String> = VALUE_COLUMNS
        .iter()
        .map(|c| format!("EXCLUDED.{c}"))
        .collect();
    format!(
        "INSERT INTO comtrade_flows AS f ({columns})
         SELECT {columns} FROM jsonb_populate_recordset(NULL::comtrade_flows, $1)
         ON CONFLICT ({keys}) DO UPDATE SET {set}, updated_at = now()
         WHERE ({old}) IS DISTINCT FROM ({new})
         RETURNING (xmax = 0)",
        keys = KEY_COLUMNS.join(", "),
        set = set.join(", "),
        old = old.join(", "),
        new = new.join(", "),
    )
});

/// A record that parsed but does not answer the question asked is the wrong shape too.
fn check(record: &str, plan: &PeriodPlan, flow: &Flow) -> Result<(), ParseError> {
    let wrong = |field: &'static str, problem: String| ParseError {
        api: SOURCE,
        record: record.to_owned(),
        field,
        problem,
    };
    if flow.period != plan.period {
        return Err(wrong(
            "period",
            format!("{:?}, but {:?} was asked", flow.period, plan.period),
        ));
    }
    if flow.freq_code != plan.query.frequency.code() {
        return Err(wrong(
            "freqCode",
            format!(
                "{:?}, but {:?} was asked",
                flow.freq_code,
                plan.query.frequency.code()
            ),
        ));
    }
    if let Some(r) = plan
        .query
        .reporter
        .filter(|r| i64::from(*r) != flow.reporter_code)
    {
        return Err(wrong(
            "reporterCode",
            format!("{}, but {r} was asked", flow.reporter_code),
        ));
    }
    if let Some(p) = plan
        .query
        .partner
        .filter(|p| i64::from(*p) != flow.partner_code)
    {
        return Err(wrong(
            "partnerCode",
            format!("{}, but {p} was asked", flow.partner_code),
        ));
    }
    Ok(())
}

/// Reads the fields of one record, each by its API name.
struct Fields<'a> {
    record: &'a str,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn error(&self, field: &'static str, problem: String) -> ParseError {
        ParseError {
            api: SOURCE,
            record: self.record.to_owned(),
            field,
            problem,
        }
    }

    fn get(&self, field: &'static str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn required<T>(&self, field: &'static str, value: Option<T>) -> Result<T, ParseError> {
        value.ok_or_else(|| self.error(field, "missing or null".to_owned()))
    }

    fn text(&self, field: &'static str) -> Result<Option<String>, ParseError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.error(field, format!("expected a string, got {other}"))),
        }
    }

    /// A code the API writes as a string but that a careless producer may send as a number;
    /// numbers are refused because they lose leading zeros (`"0901"`).
    fn code(&self, field: &'static str) -> Result<String, ParseError> {
        let value = self.text(field)?;
        self.required(field, value)
    }

    fn int(&self, field: &'static str) -> Result<Option<i64>, ParseError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.error(field, format!("expected an integer, got {n}"))),
            Some(other) => Err(self.error(field, format!("expected an integer, got {other}"))),
        }
    }

    fn number(&self, field: &'static str) -> Result<Option<Number>, ParseError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(Some(n.clone())),
            Some(other) => Err(self.error(field, format!("expected a number, got {other}"))),
        }
    }

    fn boolean(&self, field: &'static str) -> Result<Option<bool>, ParseError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.error(field, format!("expected true or false, got {other}"))),
        }
    }
}

/// Parses one record of `data`; `record` names it in errors.
fn parse_flow(record: &str, raw: &Value) -> Result<Flow, ParseError> {
    let Some(map) = raw.as_object() else {
        return Err(ParseError {
            api: SOURCE,
            record: record.to_owned(),
            field: "record",
            problem: format!("expected an object, got {raw}"),
        });
    };
    let f = Fields { record, map };
    let ref_period = f.int("refPeriodId")?;
    let ref_period = f.required("refPeriodId", ref_period)?;
    let ref_date = NaiveDate::parse_from_str(&ref_period.to_string(), "%Y%m%d")
        .map_err(|_| f.error("refPeriodId", format!("not a YYYYMMDD date: {ref_period}")))?;
    let int = |field| f.int(field).and_then(|v| f.required(field, v));
    Ok(Flow {
        type_code: f.code("typeCode")?,
        freq_code: f.code("freqCode")?,
        period: f.code("period")?,
        ref_date,
        ref_year: int("refYear")?,
        ref_month: int("refMonth")?,
        reporter_code: int("reporterCode")?,
        reporter_iso: f.text("reporterISO")?,
        reporter_desc: f.text("reporterDesc")?,
        flow_code: f.code("flowCode")?,
        flow_desc: f.text("flowDesc")?,
        partner_code: int("partnerCode")?,
        partner_iso: f.text("partnerISO")?,
        partner_desc: f.text("partnerDesc")?,
        partner2_code: int("partner2Code")?,
        partner2_iso: f.text("partner2ISO")?,
        partner2_desc: f.text("partner2Desc")?,
        classification_code: f.code("classificationCode")?,
        classification_search_code: f.text("classificationSearchCode")?,
        is_original_classification: f.boolean("isOriginalClassification")?,
        cmd_code: f.code("cmdCode")?,
        cmd_desc: f.text("cmdDesc")?,
        aggr_level: f.int("aggrLevel")?,
        is_leaf: f.boolean("isLeaf")?,
        customs_code: f.code("customsCode")?,
        customs_desc: f.text("customsDesc")?,
        mos_code: f.text("mosCode")?,
        mot_code: int("motCode")?,
        mot_desc: f.text("motDesc")?,
        qty_unit_code: f.int("qtyUnitCode")?,
        qty_unit_abbr: f.text("qtyUnitAbbr")?,
        qty: f.number("qty")?,
        is_qty_estimated: f.boolean("isQtyEstimated")?,
        alt_qty_unit_code: f.int("altQtyUnitCode")?,
        alt_qty_unit_abbr: f.text("altQtyUnitAbbr")?,
        alt_qty: f.number("altQty")?,
        is_alt_qty_estimated: f.boolean("isAltQtyEstimated")?,
        net_wgt: f.number("netWgt")?,
        is_net_wgt_estimated: f.boolean("isNetWgtEstimated")?,
        gross_wgt: f.number("grossWgt")?,
        is_gross_wgt_estimated: f.boolean("isGrossWgtEstimated")?,
        cif_value: f.number("cifvalue")?,
        fob_value: f.number("fobvalue")?,
        primary_value: f.number("primaryValue")?,
        legacy_estimation_flag: f.int("legacyEstimationFlag")?,
        is_reported: f.boolean("isReported")?,
        is_aggregate: f.boolean("isAggregate")?,
    })
}

/// Turns the throttle and quota answers into retries at the time the API names.
///
/// 429 "Rate limit is exceeded. Try again in N seconds." — the HTTP layer honours a
/// `Retry-After`, but APIM may only say it in the body; 403 "Out of call volume quota. Quota
/// will be replenished in HH:MM:SS." — a spent daily quota is a wait, not a failure (the HTTP
/// layer calls any 403 fatal).
fn classify(error: http::Error) -> StepError {
    match &error {
        http::Error::Status {
            status: 429,
            message,
            retry_after: None,
            ..
        } => {
            if let Some(after) = try_again_in(message) {
                return StepError::retryable_after(error.to_string(), after);
            }
        }
        http::Error::Status {
            status: 403,
            message,
            ..
        } if message.contains("quota") => {
            let after = replenished_in(message).unwrap_or(QUOTA_FALLBACK);
            return StepError::retryable_after(error.to_string(), after);
        }
        _ => {}
    }
    error.into()
}

/// N from "Try again in N seconds".
fn try_again_in(message: &str) -> Option<Duration> {
    let rest = &message[message.find("Try again in ")? + "Try again in ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().map(Duration::from_secs)
}

/// HH:MM:SS from "Quota will be replenished in HH:MM:SS".
fn replenished_in(message: &str) -> Option<Duration> {
    let rest = &message[message.find("replenished in ")? + "replenished in ".len()..];
    let clock: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ':')
        .collect();
    let parts: Vec<u64> = clock
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match parts.as_slice() {
        [h, m, s] => Some(Duration::from_secs(h * 3600 + m * 60 + s)),
        _ => None,
    }
}

/// Builds the workflow, scheduled monthly on the 5th at 06:00 UTC (`comtrade-monthly`):
/// Comtrade publishes irregularly as countries report, so a monthly look suffices and keeps
/// well inside the free tier's 500 calls a day.
///
/// # Errors
/// Never in practice; the definition is validated like any other.
pub fn workflow() -> Result<Workflow, Error> {
    let mut wf = Workflow::builder::<Window>("comtrade", 1);
    // The HTTP layer retries 429/5xx within a call; these retries are for longer outages and
    // for waits the API names (a throttle's N seconds, a spent quota's hours).
    wf.defaults(
        StepOptions::default().retry(
            RetryPolicy::attempts(6)
                .initial_delay(Duration::from_secs(6))
                .max_delay(Duration::from_secs(600)),
        ),
    );
    let input = wf.input();
    let plans = wf.step("plan", &input, plan);
    let batches = wf.map("fetch", &plans, fetch);
    let reports = wf.map("store", &batches, store);
    wf.schedule(
        ScheduleSpec::new("comtrade-monthly", "0 6 5 * *").timezone("UTC"),
        |tick| Window::from(tick),
    );
    wf.build(&reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn periods_end_with_the_last_one_complete_before_the_window_end() {
        let end = Utc.with_ymd_and_hms(2024, 3, 5, 6, 0, 0).unwrap();
        assert_eq!(
            periods(Frequency::Annual, 2021, end),
            ["2021", "2022", "2023"]
        );
        let jan1 = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(periods(Frequency::Annual, 2022, jan1), ["2022", "2023"]);
        assert_eq!(
            periods(
                Frequency::Monthly,
                2023,
                Utc.with_ymd_and_hms(2023, 3, 1, 0, 0, 0).unwrap()
            ),
            ["202301", "202302"]
        );
        assert_eq!(periods(Frequency::Monthly, 2022, end).len(), 26);
        assert!(periods(Frequency::Annual, 2030, end).is_empty());
    }

    #[test]
    fn throttle_and_quota_messages_give_the_wait() {
        assert_eq!(
            try_again_in(
                "HTTP 429: { \"statusCode\": 429, \"message\": \"Rate limit is exceeded. Try again in 2 seconds.\" }"
            ),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            replenished_in("Out of call volume quota. Quota will be replenished in 03:14:17."),
            Some(Duration::from_secs(3 * 3600 + 14 * 60 + 17))
        );
        let status = |status: u16, message: &str| http::Error::Status {
            url: "x".into(),
            status,
            message: message.into(),
            retry_after: None,
        };
        let e = classify(status(
            403,
            "Out of call volume quota. Quota will be replenished in 00:00:05.",
        ));
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(5)));
        let e = classify(status(
            429,
            "Rate limit is exceeded. Try again in 2 seconds.",
        ));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        let e = classify(status(401, "Access denied"));
        assert!(!e.is_retryable());
    }

    #[test]
    fn the_upsert_names_every_column_once() {
        let n = KEY_COLUMNS.len() + VALUE_COLUMNS.len();
        let fields = serde_json::to_value(Flow {
            type_code: "C".into(),
            freq_code: "A".into(),
            period: "2023".into(),
            ref_date: NaiveDate::from_ymd_opt(2023, 1, 1).unwrap(),
            ref_year: 2023,
            ref_month: 52,
            reporter_code: 842,
            reporter_iso: None,
            reporter_desc: None,
            flow_code: "M".into(),
            flow_desc: None,
            partner_code: 862,
            partner_iso: None,
            partner_desc: None,
            partner2_code: 0,
            partner2_iso: None,
            partner2_desc: None,
            classification_code: "H6".into(),
            classification_search_code: None,
            is_original_classification: None,
            cmd_code: "TOTAL".into(),
            cmd_desc: None,
            aggr_level: None,
            is_leaf: None,
            customs_code: "C00".into(),
            customs_desc: None,
            mos_code: None,
            mot_code: 0,
            mot_desc: None,
            qty_unit_code: None,
            qty_unit_abbr: None,
            qty: None,
            is_qty_estimated: None,
            alt_qty_unit_code: None,
            alt_qty_unit_abbr: None,
            alt_qty: None,
            is_alt_qty_estimated: None,
            net_wgt: None,
            is_net_wgt_estimated: None,
            gross_wgt: None,
            is_gross_wgt_estimated: None,
            cif_value: None,
            fob_value: None,
            primary_value: None,
            legacy_estimation_flag: None,
            is_reported: None,
            is_aggregate: None,
        })
        .unwrap();
        let keys: Vec<&String> = fields.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), n);
        for column in KEY_COLUMNS.iter().chain(VALUE_COLUMNS) {
            assert!(keys.iter().any(|k| k == column), "{column}");
        }
    }
}
