//! `tributary sources`: each source's cursors, row counts and last successful run, read from
//! PostgreSQL.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::SourceInfo;

/// One source's state.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceState {
    /// The source.
    pub name: String,
    /// Its workflow.
    pub workflow: String,
    /// Its cursors: key (empty for a source with one cursor), value, last moved.
    pub cursors: Vec<(String, serde_json::Value, DateTime<Utc>)>,
    /// Row counts of its tables.
    pub rows: Vec<(String, i64)>,
    /// The newest successful run still on record, and when it finished.
    pub last_success: Option<(uuid::Uuid, DateTime<Utc>)>,
    /// The newest run's status, if any run is on record.
    pub last_status: Option<String>,
}

/// Reads the state of `sources`.
///
/// # Errors
/// A database error (e.g. migrations not applied: run `tributary migrate`).
pub async fn states(db: &PgPool, sources: &[SourceInfo]) -> Result<Vec<SourceState>, sqlx::Error> {
    let mut out = Vec::with_capacity(sources.len());
    for s in sources {
        let cursors = sqlx::query_as(
            "SELECT key, value, updated_at FROM ingest_cursors WHERE source = $1 ORDER BY key",
        )
        .bind(s.name)
        .fetch_all(db)
        .await?;
        let mut rows = Vec::new();
        for table in s.tables {
            // The names are constants of the source modules, never input.
            let sql = format!("SELECT count(*) FROM {table}");
            let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(db)
                .await?;
            rows.push(((*table).to_owned(), n));
        }
        let last_success = sqlx::query_as(
            "SELECT run_id, finished_at FROM tributary_runs
             WHERE workflow = $1 AND status = 'succeeded'
             ORDER BY finished_at DESC LIMIT 1",
        )
        .bind(s.workflow)
        .fetch_optional(db)
        .await?;
        let last_status = sqlx::query_scalar(
            "SELECT status FROM tributary_runs WHERE workflow = $1 ORDER BY created_at DESC LIMIT 1",
        )
        .bind(s.workflow)
        .fetch_optional(db)
        .await?;
        out.push(SourceState {
            name: s.name.to_owned(),
            workflow: s.workflow.to_owned(),
            cursors,
            rows,
            last_success,
            last_status,
        });
    }
    Ok(out)
}

/// The states as a human-readable table.
pub fn render(states: &[SourceState]) -> String {
    let mut out = String::new();
    for s in states {
        let _ = writeln!(out, "{} (workflow {})", s.name, s.workflow);
        let rows: Vec<String> = s.rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
        let _ = writeln!(out, "  rows          {}", rows.join(", "));
        match &s.last_success {
            Some((run, at)) => {
                let _ = writeln!(
                    out,
                    "  last success  {} (run {run})",
                    at.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
            None => {
                let _ = writeln!(out, "  last success  - (none on record)");
            }
        }
        if let Some(status) = &s.last_status {
            let _ = writeln!(out, "  newest run    {status}");
        }
        if s.cursors.is_empty() {
            let _ = writeln!(out, "  cursor        - (never advanced)");
        }
        for (key, value, at) in &s.cursors {
            let label = if key.is_empty() {
                "cursor".to_owned()
            } else {
                format!("cursor {key}")
            };
            let _ = writeln!(
                out,
                "  {label:<13} {value} (moved {})",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
    }
    out
}

/// The `tributary sources` command.
///
/// # Errors
/// A configuration or database error.
pub async fn command(config: tributary::config::Config) -> anyhow::Result<()> {
    let url = config.database_url()?;
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(config.connect_timeout)
        .connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", tributary::store::redact_url(url)))?;
    let states = states(&db, &super::all()).await?;
    print!("{}", render(&states));
    Ok(())
}
