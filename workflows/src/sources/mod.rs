//! What the five ingestion workflows share: the [`Ingest`] resource their steps use (the data
//! database, the HTTP client with each API's rate limit, the secrets, the settings), the
//! [`Window`] a scheduled run covers, cursors, and errors that name the record and the field.
//!
//! Each source is one module with its settings, its step functions and a `workflow()`; its
//! tables live in `migrations/`. The engine knows none of this: it hands [`Ingest`] to the
//! steps as a [`Resources`] value built by [`setup`].

pub mod reliefweb;
pub mod report;
pub mod worldbank;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tributary::config::Config;
use tributary::http::{HttpClient, HttpConfig};
use tributary::runtime::Engine;
use tributary::workflow::{Resources, StepContext, StepError, Tick};

/// Everything an ingestion step needs, shared by the steps of a worker process.
#[derive(Debug)]
pub struct Ingest {
    /// The database the ingested rows go to (the engine's, by default).
    pub db: PgPool,
    http: HttpClient,
    config: Arc<Config>,
}

impl Ingest {
    /// Connects to the data database named by the configuration.
    ///
    /// # Errors
    /// A connection error, or invalid settings of a source (named).
    pub async fn connect(config: Arc<Config>) -> anyhow::Result<Self> {
        validate_settings(&config)?;
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
        Ok(Self { db, http, config })
    }

    /// The settings of `source` (`[sources.<source>]`), as `T`.
    ///
    /// # Errors
    /// A fatal error naming the source and key: configuration does not improve on retry.
    pub fn settings<T: DeserializeOwned>(&self, source: &str) -> Result<T, StepError> {
        self.config.source(source).map_err(StepError::fatal)
    }

    /// The secret `id` (an API key). Keep it out of step outputs, logs and error messages:
    /// pass it to the HTTP layer as a query parameter whose name marks it as a credential
    /// (`api_key`, `subscription-key`), which masks it in every message and span.
    ///
    /// # Errors
    /// A fatal error naming the id and where it was looked for.
    pub async fn secret(&self, id: &str) -> Result<Secret, StepError> {
        let var = format!(
            "TRIBUTARY_SECRET_{}",
            id.to_ascii_uppercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        std::env::var(&var)
            .map(Secret)
            .map_err(|_| StepError::fatal(format!("secret {id:?} not found: looked in env {var}")))
    }

    /// GETs JSON from `api`, within its rate limit, retrying what is worth retrying.
    ///
    /// # Errors
    /// The HTTP layer's error: retryable or fatal as it classifies it.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        api: &str,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<T, StepError> {
        let _ = api;
        Ok(self.http.get_json(url, query).await?)
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
    ) -> Result<(Vec<u8>, String), StepError> {
        let _ = api;
        Ok(self.http.get_bytes(url, query).await?)
    }
}

/// A secret's value; printing it shows `Secret([redacted])`.
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
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
    vec![reliefweb::INFO, worldbank::INFO]
}

/// Builds the [`Resources`] of the ingestion steps for a worker process.
///
/// # Errors
/// As [`Ingest::connect`].
pub async fn setup(engine: Engine) -> anyhow::Result<Resources> {
    let ingest = Ingest::connect(Arc::new(engine.config().clone())).await?;
    let mut resources = Resources::default();
    resources.insert(ingest);
    Ok(resources)
}

/// Checks every source's settings once at start-up, so a typo is an error before any run.
fn validate_settings(config: &Config) -> anyhow::Result<()> {
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
