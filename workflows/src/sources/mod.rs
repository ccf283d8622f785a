//! What the five ingestion workflows share: the [`Ingest`] resource their steps use (the data
//! database, the HTTP client with each API's rate limit, the secrets, the settings), the
//! [`Window`] a scheduled run covers, cursors, and errors that name the record and the field.
//!
//! Each source is one module with its settings, its step functions and a `workflow()`; its
//! tables live in `migrations/`. The engine knows none of this: it hands [`Ingest`] to the
//! steps as a [`Resources`] value built by [`setup`].

pub mod comtrade;
pub mod fred;
pub mod gdelt;
pub mod reliefweb;
pub mod report;
pub mod worldbank;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tributary::config::Config;
use tributary::http::{self, HttpClient, HttpConfig};
use tributary::ratelimit::{Quota, RateLimitConfig, RateLimiter};
use tributary::runtime::Engine;
use tributary::secrets::{Secret, Secrets};
use tributary::workflow::{Resources, StepContext, StepError, Tick};

/// Everything an ingestion step needs, shared by the steps of a worker process.
#[derive(Debug)]
pub struct Ingest {
    /// The database the ingested rows go to (the engine's, by default).
    pub db: PgPool,
    /// One client per API, each observing the API's rate limit.
    clients: HashMap<&'static str, HttpClient>,
    secrets: Secrets,
    /// The secret values handed out, to scrub from any API message that echoes one.
    handed_out: Mutex<Vec<String>>,
    config: Arc<Config>,
}

/// Each API's default rate limit, from its documentation (`../shared/reference/apis.md`,
/// "Cross-cutting notes"). `[sources.<api>] rate-limit = "…"` overrides one.
pub const DEFAULT_LIMITS: &[(&str, &str)] = &[
    // Events export files: no documented limit; GDELT asks for at most one file a second.
    ("gdelt", "1/s"),
    // 1,000 calls a day per appname; about one a second is tolerated.
    ("reliefweb", "1/s; daily=1000"),
    // 120 requests a minute per key.
    ("fred", "120/min"),
    // Free tier: 500 calls a day per key, and one every few seconds.
    ("comtrade", "1/6s; daily=500"),
    // No published limit; two a second is polite.
    ("worldbank", "2/s"),
];

/// Each API's quota: its default, or the configured override.
fn quotas(config: &Config) -> anyhow::Result<Vec<(&'static str, Quota)>> {
    DEFAULT_LIMITS
        .iter()
        .map(|(api, default)| {
            let table = config.sources.get(*api).cloned().unwrap_or_default();
            let configured = table
                .get("rate-limit")
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        anyhow::anyhow!(
                            "sources.{api}.rate-limit must be a string like \"120/min\""
                        )
                    })
                })
                .transpose()?;
            let text = configured.as_deref().unwrap_or(default);
            let quota: Quota = text
                .parse()
                .map_err(|e| anyhow::anyhow!("sources.{api}.rate-limit: {e}"))?;
            Ok((*api, quota))
        })
        .collect()
}

impl Ingest {
    /// Connects to the data database named by the configuration.
    ///
    /// # Errors
    /// A connection error, or invalid settings of a source (named).
    pub async fn connect(config: Arc<Config>, limiter: RateLimiter) -> anyhow::Result<Self> {
        validate_settings(&config)?;
        let quotas = quotas(&config)?;
        let secrets = Secrets::from_config(&config.secrets).await?;
        let url = config.database_url()?;
        let db = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(config.connect_timeout)
            .connect(url)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "connecting to the data database {}: {e}",
                    tributary::store::redact_url(url)
                )
            })?;
        let http = HttpClient::new(HttpConfig::default())?;
        let clients = quotas
            .into_iter()
            .map(|(api, quota)| (api, http.limited(limiter.clone(), api, quota)))
            .collect();
        Ok(Self {
            db,
            clients,
            secrets,
            handed_out: Mutex::default(),
            config,
        })
    }

    fn client(&self, api: &str) -> Result<&HttpClient, http::Error> {
        self.clients.get(api).ok_or_else(|| {
            http::Error::Build(format!(
                "no API named {api:?} (known: {})",
                DEFAULT_LIMITS
                    .iter()
                    .map(|(a, _)| *a)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// The settings of `source` (`[sources.<source>]`), as `T`.
    ///
    /// # Errors
    /// A fatal error naming the source and key: configuration does not improve on retry.
    pub fn settings<T: DeserializeOwned>(&self, source: &str) -> Result<T, StepError> {
        self.config.source(source).map_err(StepError::fatal)
    }

    /// The secret `id` (an API key), from GCP Secret Manager or the env/file fallback
    /// (`[secrets]`). Keep it out of step outputs, logs and error messages: pass it to the HTTP
    /// layer as a query parameter whose name marks it as a credential (`api_key`,
    /// `subscription-key`), which masks it in every message and span.
    ///
    /// # Errors
    /// A missing secret is fatal and names the id and where it was looked for; a transient
    /// Secret Manager failure is retryable.
    pub async fn secret(&self, id: &str) -> Result<Secret, StepError> {
        let secret = self.secrets.get(id).await?;
        let mut handed_out = self.handed_out.lock().expect("secrets lock");
        if !handed_out.iter().any(|v| v == secret.expose()) {
            handed_out.push(secret.expose().to_owned());
        }
        Ok(secret)
    }

    /// The error with every secret value this process handed out replaced by `***`: the HTTP
    /// layer masks credentials in URLs, but an API's own message may quote the key it rejected.
    fn scrub(&self, error: http::Error) -> http::Error {
        let handed_out = self.handed_out.lock().expect("secrets lock");
        let clean = |text: String| {
            handed_out
                .iter()
                .filter(|v| !v.is_empty())
                .fold(text, |t, v| t.replace(v.as_str(), "***"))
        };
        match error {
            http::Error::Status {
                url,
                status,
                message,
                retry_after,
            } => http::Error::Status {
                url,
                status,
                message: clean(message),
                retry_after,
            },
            http::Error::NotJson {
                url,
                content_type,
                snippet,
            } => http::Error::NotJson {
                url,
                content_type,
                snippet: clean(snippet),
            },
            http::Error::Decode { url, problem } => http::Error::Decode {
                url,
                problem: clean(problem),
            },
            other => other,
        }
    }

    /// GETs JSON from `api`, within its rate limit, retrying what is worth retrying.
    ///
    /// # Errors
    /// The HTTP layer's error (match on its status where it matters; `?` in a step makes it
    /// retryable or fatal as the layer classifies it), secrets scrubbed from its text.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        api: &str,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<T, http::Error> {
        self.client(api)?
            .get_json(url, query)
            .await
            .map_err(|e| self.scrub(e))
    }

    /// GETs a body (a file, a listing) from `api`, within its rate limit. Returns the body
    /// and its content type.
    ///
    /// # Errors
    /// As [`Ingest::get_json`].
    pub async fn get_bytes(
        &self,
        api: &str,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<(Vec<u8>, String), http::Error> {
        self.client(api)?
            .get_bytes(url, query)
            .await
            .map_err(|e| self.scrub(e))
    }
}

/// What `tributary sources` reports for a source.
#[derive(Debug, Clone, Copy)]
pub struct SourceInfo {
    /// The source's name (its `[sources.<name>]` table and cursor source).
    pub name: &'static str,
    /// The workflow that ingests it.
    pub workflow: &'static str,
    /// The tables its rows land in.
    pub tables: &'static [&'static str],
}

/// Every source of this deployment.
pub fn all() -> Vec<SourceInfo> {
    vec![
        gdelt::INFO,
        reliefweb::INFO,
        fred::INFO,
        comtrade::INFO,
        worldbank::INFO,
    ]
}

/// Builds the [`Resources`] of the ingestion steps for a worker process.
///
/// # Errors
/// As [`Ingest::connect`].
pub async fn setup(engine: Engine) -> anyhow::Result<Resources> {
    let limiter = RateLimiter::new(engine.transport().clone(), RateLimitConfig::default());
    let ingest = Ingest::connect(Arc::new(engine.config().clone()), limiter).await?;
    let mut resources = Resources::default();
    resources.insert(ingest);
    Ok(resources)
}

/// Checks every source's settings once at start-up, so a typo is an error before any run.
fn validate_settings(config: &Config) -> anyhow::Result<()> {
    config.source::<gdelt::Settings>("gdelt")?;
    config.source::<fred::Settings>("fred")?;
    config.source::<comtrade::Settings>("comtrade")?;
    config.source::<reliefweb::Settings>("reliefweb")?;
    config.source::<worldbank::Settings>("worldbank")?;
    Ok(())
}

/// The period a run covers: a schedule tick's data interval `[start, end)`. Both ends are
/// optional so that `tributary start <source>` with `{}` simply continues from the cursor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Window {
    /// Inclusive start.
    pub start: Option<DateTime<Utc>>,
    /// Exclusive end.
    pub end: Option<DateTime<Utc>>,
}

impl From<&Tick> for Window {
    fn from(tick: &Tick) -> Self {
        Self {
            start: Some(tick.start),
            end: Some(tick.end),
        }
    }
}

/// A record that does not parse. Fatal: the same bytes will not parse on retry. The message
/// names the source, the record and the field.
#[derive(Debug, thiserror::Error)]
#[error("{api}: record {record}: field {field}: {problem}")]
pub struct ParseError {
    /// The source.
    pub api: &'static str,
    /// Which record (its natural key, or its line or index).
    pub record: String,
    /// Which field.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl tributary::workflow::Classify for ParseError {
    fn is_retryable(&self) -> bool {
        false
    }
}

/// Maps a database error to a step error: connection trouble is retryable, anything else
/// (a constraint, a type mismatch) is fatal.
pub fn db_error(context: &str, error: sqlx::Error) -> StepError {
    let message = format!("{context}: {error}");
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => StepError::retryable(message),
        sqlx::Error::Database(ref db)
            if db.code().is_some_and(|c| {
                // serialization failure, deadlock, admin shutdown, cannot connect now
                matches!(c.as_ref(), "40001" | "40P01" | "57P01" | "57P03")
            }) =>
        {
            StepError::retryable(message)
        }
        _ => StepError::fatal(message),
    }
}

/// The cursor of `source` under `key`, if any.
///
/// # Errors
/// A database error, or a stored value that is not a `T` (fatal).
pub async fn cursor<T: DeserializeOwned>(
    db: &PgPool,
    source: &str,
    key: &str,
) -> Result<Option<T>, StepError> {
    let value: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT value FROM ingest_cursors WHERE source = $1 AND key = $2")
            .bind(source)
            .bind(key)
            .fetch_optional(db)
            .await
            .map_err(|e| db_error("reading a cursor", e))?;
    value
        .map(|v| {
            serde_json::from_value(v).map_err(|e| {
                StepError::fatal(format!(
                    "cursor {source}/{key:?} has an unexpected shape: {e}"
                ))
            })
        })
        .transpose()
}

/// Moves the cursor of `source` under `key` forward to `value` (never back: re-running an
/// old window leaves it where it is), inside the caller's transaction.
///
/// # Errors
/// A database error.
pub async fn advance_cursor(
    tx: &mut PgConnection,
    ctx: &StepContext,
    source: &str,
    key: &str,
    value: &impl Serialize,
) -> Result<(), StepError> {
    let value = serde_json::to_value(value).map_err(StepError::fatal)?;
    sqlx::query(
        "INSERT INTO ingest_cursors (source, key, value, last_run_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (source, key) DO UPDATE
         SET value = GREATEST(ingest_cursors.value, EXCLUDED.value),
             last_run_id = EXCLUDED.last_run_id,
             updated_at = now()",
    )
    .bind(source)
    .bind(key)
    .bind(value)
    .bind(ctx.run_id().0)
    .execute(tx)
    .await
    .map_err(|e| db_error("advancing a cursor", e))?;
    Ok(())
}
