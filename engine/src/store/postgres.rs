//! The sqlx implementation of the store.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Row};

use super::batch;
use super::error::{Error, QueryExt, redact_url};
use crate::ids::{Attempt, RunId};
use crate::workflow::{ON_FAILURE, ON_SUCCESS, RunOutcome, Source, StepRef, Workflow};

/// The migrations under `migrations/`, compiled in.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A run to start.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Its id (ignored when the idempotency key names an existing run).
    pub run_id: RunId,
    /// The workflow's name.
    pub workflow: String,
    /// The workflow's version.
    pub version: u32,
    /// The run's input.
    pub input: Value,
    /// Starting twice with the same key returns the first run.
    pub idempotency_key: Option<String>,
    /// The steps ready at start.
    pub roots: Vec<String>,
    /// The trace context of the run's root span, if traced.
    pub trace_context: Option<String>,
}

/// The outcome of starting one run.
#[derive(Debug, Clone)]
pub struct StartedRun {
    /// The run's id: new, or the existing run's for a used idempotency key.
    pub run_id: RunId,
    /// `false` when the idempotency key named an existing run.
    pub created: bool,
    /// The steps to publish.
    pub dispatch: Vec<Dispatch>,
}

/// A step attempt to put on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The run.
    pub run_id: RunId,
    /// The run's workflow.
    pub workflow: String,
    /// The step's stored name.
    pub step: String,
    /// The attempt the entry is for.
    pub attempt: Attempt,
    /// The run's trace context, carried by the entry.
    pub trace_context: Option<String>,
}

/// A run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Steps are still to run.
    Running,
    /// Every step completed.
    Succeeded,
    /// A step failed for good.
    Failed,
    /// Cancelled by an operator.
    Cancelled,
}

impl RunStatus {
    fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => {
                return Err(Error::Corrupt {
                    what: "tributary_runs.status",
                    problem: other.to_owned(),
                });
            }
        })
    }

    /// The status as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        self != Self::Running
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a worker needs to execute a step, read in one query.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The run's workflow.
    pub workflow: String,
    /// The version the run started with.
    pub version: u32,
    /// The run's status.
    pub run_status: RunStatus,
    /// The run's input.
    pub run_input: Value,
    /// The step row's status, when the row exists.
    pub step_status: Option<String>,
    /// The step's current attempt.
    pub attempt: Attempt,
    /// Attempts up to this number do not count against the retry policy.
    pub attempt_base: Attempt,
    /// The stored input of a map item or hook.
    pub step_input: Option<Value>,
    /// Completed outputs of the requested dependencies, by step name.
    pub deps: HashMap<String, Value>,
}

/// A successful attempt to checkpoint.
#[derive(Debug, Clone)]
pub struct Completed {
    /// The run.
    pub run_id: RunId,
    /// The step's stored name.
    pub step: String,
    /// The attempt that produced the output.
    pub attempt: Attempt,
    /// The step's output.
    pub output: Value,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// The consumer that ran it, for the audit trail.
    pub worker: String,
}

/// A failed attempt to record.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The run.
    pub run_id: RunId,
    /// The step's stored name.
    pub step: String,
    /// The attempt that failed.
    pub attempt: Attempt,
    /// The error message.
    pub error: String,
    /// `Some(delay)`: retry after the delay; `None`: the step fails for good.
    pub retry_after: Option<Duration>,
    /// When the attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// The audit event kind for a retry (`step_retried` or `step_reclaimed`).
    pub retry_event: &'static str,
}

/// One step as `tributary status` shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct StepView {
    /// Stored name.
    pub step: String,
    /// Status.
    pub status: String,
    /// Current attempt.
    #[sqlx(try_from = "i32")]
    pub attempt: Attempt,
    /// Last error.
    pub error: Option<String>,
    /// Output, once completed.
    pub output: Option<Value>,
    /// When it became ready.
    pub ready_at: DateTime<Utc>,
    /// When the checkpointed attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// For a waiting step: when it is due.
    pub due_at: Option<DateTime<Utc>>,
}

/// One audit event.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct EventRow {
    /// Step, if the event concerns one.
    pub step: Option<String>,
    /// Attempt, if any.
    pub attempt: Option<i32>,
    /// `run_started`, `step_completed`, `step_retried`, `step_failed`, `run_succeeded`, …
    pub kind: String,
    /// Error message or other detail.
    pub detail: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A run with its steps and events.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunView {
    /// The run.
    pub run_id: RunId,
    /// Its workflow.
    pub workflow: String,
    /// Workflow version.
    pub version: u32,
    /// Status.
    pub status: String,
    /// Input.
    pub input: Value,
    /// Output, when succeeded.
    pub output: Option<Value>,
    /// Error, when failed.
    pub error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The run's trace context (`traceparent`), if it was traced.
    pub trace_context: Option<String>,
    /// Steps in the order they became ready.
    pub steps: Vec<StepView>,
    /// The audit trail, oldest first.
    pub events: Vec<EventRow>,
}

/// The PostgreSQL store. Cheap to clone (pool handles).
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    /// The hot path's connections: step loads and checkpoint transactions, whose statements
    /// touch rows only by primary key. Their sessions plan each prepared statement once, with
    /// per-key index lookups (see [`KEYED_SETTINGS`]).
    keyed: PgPool,
}

/// Session settings of the keyed pool, sent with each connection's start-up (no round trip).
///
/// Why: with array parameters PostgreSQL re-plans every execution (a custom plan), and
/// planning took as long as executing: 300–400 µs per statement and batch in a drain, and
/// ~230 µs per `load` of a step with dependencies. A generic plan is made once per connection;
/// made on a freshly created or truncated table (no statistics, a few pages) it would join by
/// sequential scans and keep doing so as the table grows. Without sequential scans the planner
/// has only the per-key plans, right at any size (`docs/decisions.md`, "Fewer statements, one
/// planning per batch" and "A pool for the keyed statements"). The other statements (batch
/// starts, the due-time poller, retention, …) keep PostgreSQL's defaults on the other pool.
const KEYED_SETTINGS: [(&str, &str); 2] = [
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
];

impl Store {
    /// Connects to `url` with at most `max_connections` connections, failing after
    /// `connect_timeout` with a clear error. A quarter of them (at least one) serve the
    /// statements of PostgreSQL's defaults, the rest (at least one) the keyed pool of the hot
    /// path (step loads and checkpoints).
    ///
    /// `stalled_after` bounds how long a transaction of this pool may sit idle between its
    /// statements (PostgreSQL's `idle_in_transaction_session_timeout`): past it, the server
    /// ends the session and rolls the transaction back. A process frozen mid-transaction (a
    /// SIGSTOP, a VM pause, a debugger) would otherwise hold its run locks for as long as it is
    /// frozen, and every other worker's checkpoint or fence of that run would wait behind it.
    /// The engine passes the worker lease: by then the frozen process's entries are being
    /// reclaimed anyway, and its late commit fails (a transient error) and is then fenced.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] or [`Error::Connect`].
    pub async fn connect(
        url: &str,
        max_connections: u32,
        connect_timeout: Duration,
        stalled_after: Duration,
    ) -> Result<Self, Error> {
        let options: PgConnectOptions = url.parse().map_err(|source| Error::InvalidUrl {
            url: redact_url(url),
            source,
        })?;
        let millis = stalled_after
            .as_millis()
            .clamp(1, i32::MAX as u128)
            .to_string();
        let options = options.options([("idle_in_transaction_session_timeout", millis.as_str())]);
        let general = (max_connections / 4).max(1);
        let keyed = max_connections.saturating_sub(general).max(1);
        let connect = |options: PgConnectOptions, size: u32| async move {
            PgPoolOptions::new()
                .max_connections(size)
                .acquire_timeout(connect_timeout)
                .connect_with(options)
                .await
                .map_err(|source| Error::Connect {
                    url: redact_url(url),
                    source,
                })
        };
        let pool = connect(options.clone(), general).await?;
        let keyed = connect(options.options(KEYED_SETTINGS), keyed).await?;
        Ok(Self { pool, keyed })
    }

    /// Applies pending migrations.
    ///
    /// # Errors
    /// [`Error::Migrate`].
    pub async fn migrate(&self) -> Result<(), Error> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Closes both pools, waiting for their connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
        self.keyed.close().await;
    }

    /// The pool, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Records runs and their root steps, atomically, in one statement. Root steps start as
    /// `waiting`, due after `handoff_grace`: the caller publishes them and calls
    /// [`Store::mark_ready`]; if it dies first, the due-time poller publishes them once the
    /// grace has passed.
    ///
    /// # Errors
    /// A query error.
    pub async fn start_runs(
        &self,
        runs: &[NewRun],
        handoff_grace: Duration,
    ) -> Result<Vec<StartedRun>, Error> {
        // One statement for the whole batch, whatever its size (so one round trip and no
        // BEGIN/COMMIT: a start's latency is mostly round trips): the runs, the root steps of
        // the runs actually inserted and their `run_started` events, atomically.
        let (root_runs, root_steps): (Vec<uuid::Uuid>, Vec<&str>) = runs
            .iter()
            .flat_map(|r| r.roots.iter().map(|s| (r.run_id.0, s.as_str())))
            .unzip();
        let inserted: Vec<uuid::Uuid> = sqlx::query_scalar(
            "WITH ins AS (
                 INSERT INTO tributary_runs (run_id, workflow, version, input, idempotency_key, trace_context)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::jsonb[], $5::text[], $6::text[])
                 ON CONFLICT DO NOTHING RETURNING run_id),
             roots AS (
                 INSERT INTO tributary_steps (run_id, step, status, due_at)
                 SELECT t.r, t.s, 'waiting', now() + $9::interval
                 FROM unnest($7::uuid[], $8::text[]) AS t(r, s) JOIN ins ON ins.run_id = t.r),
             started AS (
                 INSERT INTO tributary_events (run_id, kind) SELECT run_id, 'run_started' FROM ins)
             SELECT run_id FROM ins",
        )
        .bind(runs.iter().map(|r| r.run_id.0).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.workflow.clone()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.version as i32).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.input.clone()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.idempotency_key.clone()).collect::<Vec<_>>())
        .bind(runs.iter().map(|r| r.trace_context.clone()).collect::<Vec<_>>())
        .bind(&root_runs)
        .bind(&root_steps)
        .bind(interval(handoff_grace))
        .fetch_all(&self.pool)
        .await
        .op("insert runs")?;
        let inserted: std::collections::HashSet<uuid::Uuid> = inserted.into_iter().collect();
        // Runs not inserted met a used idempotency key: find the runs that hold those keys
        // (committed: `ON CONFLICT DO NOTHING` waited for the transaction that inserted them).
        let keyed: Vec<&NewRun> = runs
            .iter()
            .filter(|r| !inserted.contains(&r.run_id.0))
            .collect();
        let existing: HashMap<(String, String), uuid::Uuid> = if keyed.is_empty() {
            HashMap::new()
        } else {
            let rows: Vec<(String, String, uuid::Uuid)> = sqlx::query_as(
                "SELECT r.workflow, r.idempotency_key, r.run_id FROM tributary_runs r
                 JOIN unnest($1::text[], $2::text[]) AS k(workflow, key)
                   ON r.workflow = k.workflow AND r.idempotency_key = k.key",
            )
            .bind(keyed.iter().map(|r| r.workflow.clone()).collect::<Vec<_>>())
            .bind(
                keyed
                    .iter()
                    .map(|r| r.idempotency_key.clone().unwrap_or_default())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&self.pool)
            .await
            .op("find runs by idempotency key")?;
            rows.into_iter().map(|(w, k, id)| ((w, k), id)).collect()
        };
        let mut started = Vec::with_capacity(runs.len());
        for run in runs {
            if !inserted.contains(&run.run_id.0) {
                let key = (
                    run.workflow.clone(),
                    run.idempotency_key.clone().unwrap_or_default(),
                );
                let id = existing.get(&key).copied().ok_or_else(|| Error::Corrupt {
                    what: "start",
                    problem: format!(
                        "run {} was neither inserted nor found by its idempotency key",
                        run.run_id
                    ),
                })?;
                started.push(StartedRun {
                    run_id: RunId(id),
                    created: false,
                    dispatch: Vec::new(),
                });
                continue;
            }
            let dispatch = run
                .roots
                .iter()
                .map(|step| Dispatch {
                    trace_context: run.trace_context.clone(),
                    run_id: run.run_id,
                    workflow: run.workflow.clone(),
                    step: step.clone(),
                    attempt: 1,
                })
                .collect();
            started.push(StartedRun {
                run_id: run.run_id,
                created: true,
                dispatch,
            });
        }
        Ok(started)
    }

    /// Marks published `waiting` steps as `ready` (on the stream). Steps whose attempt moved on
    /// are left alone.
    ///
    /// # Errors
    /// A query error.
    pub async fn mark_ready(&self, dispatched: &[Dispatch]) -> Result<(), Error> {
        if dispatched.is_empty() {
            return Ok(());
        }
        let (runs, steps, attempts) = columns(dispatched);
        // The rows are locked in (run, step) order, as `complete_batch` locks them: two
        // statements that change several runs' steps never wait for each other in a cycle.
        sqlx::query(
            "WITH l AS MATERIALIZED (
                 SELECT s.run_id, s.step FROM tributary_steps s
                 JOIN unnest($1::uuid[], $2::text[], $3::int[]) AS d(run_id, step, attempt)
                   ON s.run_id = d.run_id AND s.step = d.step AND s.attempt = d.attempt
                 WHERE s.status = 'waiting'
                 ORDER BY s.run_id, s.step FOR UPDATE OF s)
             UPDATE tributary_steps s SET status = 'ready', due_at = NULL, ready_at = now()
             FROM l WHERE s.run_id = l.run_id AND s.step = l.step AND s.status = 'waiting'",
        )
        .bind(runs)
        .bind(steps)
        .bind(attempts)
        .execute(&self.pool)
        .await
        .op("mark steps ready")?;
        Ok(())
    }

    /// Takes up to `limit` waiting steps whose due time has passed and pushes their due time
    /// `lease` ahead, so that no other poller takes them meanwhile. The caller publishes them
    /// and calls [`Store::mark_ready`]; if it dies first, they come due again after `lease`.
    ///
    /// # Errors
    /// A query error.
    pub async fn take_due(&self, limit: i64, lease: Duration) -> Result<Vec<Dispatch>, Error> {
        let rows = sqlx::query(
            "WITH due AS (
                 SELECT s.run_id, s.step FROM tributary_steps s
                 WHERE s.status = 'waiting' AND s.due_at <= now()
                 ORDER BY s.due_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             UPDATE tributary_steps s SET due_at = now() + $2::interval
             FROM due, tributary_runs r
             WHERE s.run_id = due.run_id AND s.step = due.step AND r.run_id = s.run_id
             RETURNING s.run_id, r.workflow, s.step, s.attempt, r.trace_context",
        )
        .bind(limit)
        .bind(interval(lease))
        .fetch_all(&self.pool)
        .await
        .op("take due steps")?;
        rows.iter().map(dispatch_row).collect()
    }

    /// Pages through the `ready` steps of live runs (and hooks of finished ones), for
    /// re-publishing after Redis lost its streams. Keyset pagination: pass the last returned
    /// dispatch as `after`.
    ///
    /// # Errors
    /// A query error.
    pub async fn ready_steps(
        &self,
        after: Option<&Dispatch>,
        limit: i64,
    ) -> Result<Vec<Dispatch>, Error> {
        let (run, step) = match after {
            Some(d) => (d.run_id.0, d.step.clone()),
            None => (uuid::Uuid::nil(), String::new()),
        };
        let rows = sqlx::query(
            "SELECT s.run_id, r.workflow, s.step, s.attempt, r.trace_context FROM tributary_steps s
             JOIN tributary_runs r ON r.run_id = s.run_id
             WHERE s.status = 'ready' AND (r.status = 'running' OR s.step IN ($4, $5))
               AND (s.run_id, s.step) > ($1, $2)
             ORDER BY s.run_id, s.step LIMIT $3",
        )
        .bind(run)
        .bind(step)
        .bind(limit)
        .bind(ON_SUCCESS)
        .bind(ON_FAILURE)
        .fetch_all(&self.pool)
        .await
        .op("list ready steps")?;
        rows.iter().map(dispatch_row).collect()
    }

    /// Reads the run, the step row and the completed outputs of `deps` in one query.
    /// `None` when the run does not exist.
    ///
    /// # Errors
    /// A query error.
    pub async fn load(
        &self,
        run_id: RunId,
        step: &str,
        deps: &[&str],
    ) -> Result<Option<Loaded>, Error> {
        // Two statements, not one with an empty array: the one without dependencies has no
        // subquery to run. Both are planned once per connection (the keyed pool).
        let query = if deps.is_empty() {
            sqlx::query(
                "SELECT r.workflow, r.version, r.status AS run_status, r.input AS run_input,
                        s.status AS step_status, s.attempt, s.attempt_base, s.input AS step_input,
                        '{}'::jsonb AS deps
                 FROM tributary_runs r
                 LEFT JOIN tributary_steps s ON s.run_id = r.run_id AND s.step = $2
                 WHERE r.run_id = $1",
            )
            .bind(run_id.0)
            .bind(step)
        } else {
            sqlx::query(
                "SELECT r.workflow, r.version, r.status AS run_status, r.input AS run_input,
                        s.status AS step_status, s.attempt, s.attempt_base, s.input AS step_input,
                        (SELECT coalesce(jsonb_object_agg(d.step, d.output), '{}'::jsonb) FROM tributary_steps d
                          WHERE d.run_id = r.run_id AND d.step = ANY($3) AND d.status = 'completed') AS deps
                 FROM tributary_runs r
                 LEFT JOIN tributary_steps s ON s.run_id = r.run_id AND s.step = $2
                 WHERE r.run_id = $1",
            )
            .bind(run_id.0)
            .bind(step)
            .bind(deps)
        };
        let row = query.fetch_optional(&self.keyed).await.op("load step")?;
        row.as_ref().map(loaded_row).transpose()
    }

    /// [`Store::load`] for several steps in one statement (the entries of one read): one
    /// round trip and one planning for all. `None` for a step whose run does not exist. Each
    /// lookup is a `LATERAL … LIMIT 1` on a primary key, so the plan stays a per-key index
    /// lookup whatever the table statistics say. A single step goes through [`Store::load`],
    /// whose statements PostgreSQL keeps planned.
    ///
    /// # Errors
    /// A query error.
    pub async fn load_many(
        &self,
        keys: &[(RunId, &str, &[&str])],
    ) -> Result<Vec<Option<Loaded>>, Error> {
        if let [(run, step, deps)] = keys {
            return Ok(vec![self.load(*run, step, deps).await?]);
        }
        let deps: Vec<Value> = keys
            .iter()
            .map(|(_, _, deps)| Value::from(deps.to_vec()))
            .collect();
        // Planned once per connection (its custom plan took longer to make than to run).
        let rows = sqlx::query(
            "SELECT k.i, r.workflow, r.version, r.run_status, r.run_input,
                    s.step_status, s.attempt, s.attempt_base, s.step_input,
                    CASE WHEN jsonb_array_length(k.deps) = 0 THEN '{}'::jsonb ELSE
                      (SELECT coalesce(jsonb_object_agg(d.step, d.output), '{}'::jsonb)
                       FROM jsonb_array_elements_text(k.deps) AS n(step)
                       CROSS JOIN LATERAL (SELECT d.step, d.output FROM tributary_steps d
                         WHERE d.run_id = k.run_id AND d.step = n.step AND d.status = 'completed'
                         LIMIT 1) d)
                    END AS deps
             FROM unnest($1::int[], $2::uuid[], $3::text[], $4::jsonb[]) AS k(i, run_id, step, deps)
             CROSS JOIN LATERAL (
                 SELECT r.workflow, r.version, r.status AS run_status, r.input AS run_input
                 FROM tributary_runs r WHERE r.run_id = k.run_id LIMIT 1) r
             LEFT JOIN LATERAL (
                 SELECT s.status AS step_status, s.attempt, s.attempt_base, s.input AS step_input
                 FROM tributary_steps s WHERE s.run_id = k.run_id AND s.step = k.step LIMIT 1) s
               ON true",
        )
        .bind((0..keys.len() as i32).collect::<Vec<_>>())
        .bind(keys.iter().map(|(run, _, _)| run.0).collect::<Vec<_>>())
        .bind(keys.iter().map(|(_, step, _)| *step).collect::<Vec<_>>())
        .bind(deps)
        .fetch_all(&self.keyed)
        .await
        .op("load steps")?;
        let mut out: Vec<Option<Loaded>> = (0..keys.len()).map(|_| None).collect();
        for row in &rows {
            let i: i32 = row.try_get("i").op("load steps")?;
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) {
                *slot = Some(loaded_row(row)?);
            }
        }
        Ok(out)
    }

    /// Commits a step's checkpoint and, in the same transaction, readies its successors (or
    /// finishes the run). Returns the steps to publish, or `None` when the attempt was fenced:
    /// the step was already checkpointed, moved to a newer attempt, or was cancelled.
    ///
    /// # Errors
    /// A query error; nothing is committed then.
    pub async fn complete(
        &self,
        workflow: &Workflow,
        done: &Completed,
    ) -> Result<Option<Vec<Dispatch>>, Error> {
        let mut tx = self.pool.begin().await.op("begin checkpoint")?;
        let (run_status, trace) = lock_run_traced(&mut tx, done.run_id).await?.unzip();
        let updated = sqlx::query(
            "UPDATE tributary_steps SET status = 'completed', output = $4, error = NULL, due_at = NULL,
                    started_at = $5, finished_at = now()
             WHERE run_id = $1 AND step = $2 AND attempt = $3 AND status IN ('waiting', 'ready')",
        )
        .bind(done.run_id.0)
        .bind(&done.step)
        .bind(done.attempt as i32)
        .bind(&done.output)
        .bind(done.started_at)
        .execute(&mut *tx)
        .await
        .op("commit checkpoint")?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        event(
            &mut tx,
            done.run_id,
            Some(&done.step),
            Some(done.attempt),
            "step_completed",
            Some(&done.worker),
        )
        .await?;
        let mut dispatch = Vec::new();
        if run_status == Some(RunStatus::Running)
            && let Some(step) = workflow.resolve(&done.step)
        {
            advance(&mut tx, workflow, done.run_id, step, &mut dispatch).await?;
        }
        tx.commit().await.op("commit checkpoint")?;
        Ok(Some(with_trace(dispatch, trace.flatten())))
    }

    /// Commits the checkpoints of several attempts in one transaction (group commit): one
    /// commit, so one WAL flush, for the whole batch. Returns, for each member in order, what
    /// [`Store::complete`] would have returned: the steps to publish, or `None` when the attempt
    /// was fenced. A fenced member never fails the batch; a query error fails all of it.
    ///
    /// The members are applied as if one after another in `(run, step)` order: the run rows are
    /// locked first, all in run-id order (so two batches, or a batch and a single-run
    /// transaction, can't deadlock), then the step rows, in `(run, step)` order, by one fenced
    /// `UPDATE`; then each committed member's successors are readied with the others' updates
    /// visible, so a fan-in whose dependencies complete in the same batch is readied once and a
    /// run whose last steps complete together finishes once. Two members for the same attempt
    /// of the same step: the first commits, the other is fenced.
    ///
    /// # Errors
    /// A query error; nothing is committed then.
    pub async fn complete_batch(
        &self,
        batch: &[(&Workflow, &Completed)],
    ) -> Result<Vec<Option<Vec<Dispatch>>>, Error> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.keyed.begin().await.op("begin checkpoint")?;
        let mut runs: Vec<uuid::Uuid> = batch.iter().map(|(_, d)| d.run_id.0).collect();
        runs.sort_unstable();
        runs.dedup();
        let locked: Vec<(uuid::Uuid, String, Option<String>)> = sqlx::query_as(
            "SELECT run_id, status, trace_context FROM tributary_runs
             WHERE run_id = ANY($1) ORDER BY run_id FOR UPDATE",
        )
        .bind(&runs)
        .fetch_all(&mut *tx)
        .await
        .op("lock runs")?;
        let mut run_state: HashMap<uuid::Uuid, (RunStatus, Option<String>)> = HashMap::new();
        for (id, status, trace) in locked {
            run_state.insert(id, (RunStatus::parse(&status)?, trace));
        }
        // The fenced update, set-based, with the completions' events. The rows to change are
        // locked first in (run, step) order (a MATERIALIZED CTE with ORDER BY … FOR UPDATE),
        // the same order as `mark_ready`, the other statement that changes several runs' steps
        // at once. A member twice in the batch updates its row once, and gets one event.
        let updated: Vec<(uuid::Uuid, String, i32)> = sqlx::query_as(
            "WITH d AS MATERIALIZED (
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::jsonb[], $5::timestamptz[], $6::text[])
                     AS d(run_id, step, attempt, output, started_at, worker)),
             l AS MATERIALIZED (
                 SELECT s.run_id, s.step FROM tributary_steps s
                 JOIN d ON s.run_id = d.run_id AND s.step = d.step AND s.attempt = d.attempt
                 WHERE s.status IN ('waiting', 'ready')
                 ORDER BY s.run_id, s.step FOR UPDATE OF s),
             u AS (
                 UPDATE tributary_steps s SET status = 'completed', output = d.output, error = NULL,
                        due_at = NULL, started_at = d.started_at, finished_at = now()
                 FROM d, l
                 WHERE s.run_id = l.run_id AND s.step = l.step
                   AND s.run_id = d.run_id AND s.step = d.step AND s.attempt = d.attempt
                   AND s.status IN ('waiting', 'ready')
                 RETURNING s.run_id, s.step, s.attempt, d.worker),
             e AS (
                 INSERT INTO tributary_events (run_id, step, attempt, kind, detail)
                 SELECT run_id, step, attempt, 'step_completed', worker FROM u ORDER BY run_id, step)
             SELECT run_id, step, attempt FROM u",
        )
        .bind(batch.iter().map(|(_, d)| d.run_id.0).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, d)| d.step.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, d)| d.attempt as i32).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, d)| d.output.clone()).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, d)| d.started_at).collect::<Vec<_>>())
        .bind(batch.iter().map(|(_, d)| d.worker.clone()).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await
        .op("commit checkpoints")?;
        let mut updated: std::collections::HashSet<(uuid::Uuid, String, i32)> =
            updated.into_iter().collect();
        // The members that committed, in (run, step) order; a later duplicate of a committed
        // attempt finds it taken and is fenced, as it would be one transaction later.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (batch[a].1, batch[b].1);
            (a.run_id.0, &a.step).cmp(&(b.run_id.0, &b.step))
        });
        let committed: Vec<usize> = order
            .into_iter()
            .filter(|&i| {
                let d = batch[i].1;
                updated.remove(&(d.run_id.0, d.step.clone(), d.attempt as i32))
            })
            .collect();
        // Map items, steps followed by a map, and hooks advance one by one; the plain members
        // (most steps) all at once afterwards, on the statuses the others left (`batch.rs`).
        let mut results: Vec<Option<Vec<Dispatch>>> = vec![None; batch.len()];
        let mut plain = Vec::new();
        for &i in &committed {
            let (workflow, done) = batch[i];
            let mut dispatch = Vec::new();
            let Some(step) = workflow.resolve(&done.step) else {
                results[i] = Some(dispatch);
                continue;
            };
            if let StepRef::Graph(index) = step
                && batch::is_plain(workflow, index)
            {
                plain.push(batch::Plain {
                    member: i,
                    workflow,
                    run_id: done.run_id,
                    step: index,
                });
                results[i] = Some(dispatch);
                continue;
            }
            if let Some((status, _)) = run_state.get_mut(&done.run_id.0)
                && *status == RunStatus::Running
                && advance(&mut tx, workflow, done.run_id, step, &mut dispatch).await?
            {
                // Later members of this run see it finished, as they would have one
                // transaction later.
                *status = RunStatus::Succeeded;
            }
            results[i] = Some(dispatch);
        }
        plain.retain(|m| {
            run_state
                .get(&m.run_id.0)
                .is_some_and(|(status, _)| *status == RunStatus::Running)
        });
        let advanced = batch::advance(&mut tx, &plain).await?;
        for (i, d) in advanced.dispatch {
            results[i].get_or_insert_with(Vec::new).push(d);
        }
        for i in committed {
            let trace = run_state
                .get(&batch[i].1.run_id.0)
                .and_then(|(_, t)| t.clone());
            results[i] = results[i].take().map(|d| with_trace(d, trace));
        }
        tx.commit().await.op("commit checkpoints")?;
        Ok(results)
    }

    /// Records a failed attempt: a retry as due-time state, or the step's (and run's) failure.
    /// Returns the steps to publish (a failure hook), or `None` when the attempt was fenced.
    ///
    /// # Errors
    /// A query error; nothing is committed then.
    pub async fn fail(
        &self,
        workflow: &Workflow,
        failure: &Failure,
    ) -> Result<Option<Vec<Dispatch>>, Error> {
        let mut tx = self.pool.begin().await.op("begin failure")?;
        let (run_status, trace) = lock_run_traced(&mut tx, failure.run_id).await?.unzip();
        let mut dispatch = Vec::new();
        if let Some(delay) = failure.retry_after {
            let updated = sqlx::query(
                "UPDATE tributary_steps SET status = 'waiting', attempt = attempt + 1, error = $4,
                        due_at = now() + $5::interval
                 WHERE run_id = $1 AND step = $2 AND attempt = $3 AND status IN ('waiting', 'ready')",
            )
            .bind(failure.run_id.0)
            .bind(&failure.step)
            .bind(failure.attempt as i32)
            .bind(&failure.error)
            .bind(interval(delay))
            .execute(&mut *tx)
            .await
            .op("schedule retry")?;
            if updated.rows_affected() == 0 {
                return Ok(None);
            }
            let detail = format!(
                "{} (next attempt in {:.1}s)",
                failure.error,
                delay.as_secs_f64()
            );
            event(
                &mut tx,
                failure.run_id,
                Some(&failure.step),
                Some(failure.attempt),
                failure.retry_event,
                Some(&detail),
            )
            .await?;
        } else {
            let updated = sqlx::query(
                "UPDATE tributary_steps SET status = 'failed', error = $4, due_at = NULL,
                        started_at = coalesce($5, started_at), finished_at = now()
                 WHERE run_id = $1 AND step = $2 AND attempt = $3 AND status IN ('waiting', 'ready')",
            )
            .bind(failure.run_id.0)
            .bind(&failure.step)
            .bind(failure.attempt as i32)
            .bind(&failure.error)
            .bind(failure.started_at)
            .execute(&mut *tx)
            .await
            .op("record step failure")?;
            if updated.rows_affected() == 0 {
                return Ok(None);
            }
            event(
                &mut tx,
                failure.run_id,
                Some(&failure.step),
                Some(failure.attempt),
                "step_failed",
                Some(&failure.error),
            )
            .await?;
            let is_hook = matches!(workflow.resolve(&failure.step), Some(StepRef::Hook(_)));
            if run_status == Some(RunStatus::Running) && !is_hook {
                let error = format!("step {} failed: {}", failure.step, failure.error);
                finish_run(
                    &mut tx,
                    workflow,
                    failure.run_id,
                    RunStatus::Failed,
                    None,
                    Some(error),
                    &mut dispatch,
                )
                .await?;
            }
        }
        tx.commit().await.op("commit failure")?;
        Ok(Some(with_trace(dispatch, trace.flatten())))
    }

    /// Cancels a running run: its run row and every step not yet finished. Returns `false`
    /// when the run had already ended.
    ///
    /// # Errors
    /// [`Error::UnknownRun`] or a query error.
    pub async fn cancel(&self, run_id: RunId) -> Result<bool, Error> {
        let mut tx = self.pool.begin().await.op("begin cancel")?;
        let status = lock_run(&mut tx, run_id)
            .await?
            .ok_or(Error::UnknownRun(run_id))?;
        if status != RunStatus::Running {
            return Ok(false);
        }
        sqlx::query(
            "UPDATE tributary_runs SET status = 'cancelled', finished_at = now(), updated_at = now() WHERE run_id = $1",
        )
        .bind(run_id.0)
        .execute(&mut *tx)
        .await
        .op("cancel run")?;
        sqlx::query(
            "UPDATE tributary_steps SET status = 'cancelled', due_at = NULL, finished_at = now()
             WHERE run_id = $1 AND status IN ('waiting', 'ready')",
        )
        .bind(run_id.0)
        .execute(&mut *tx)
        .await
        .op("cancel steps")?;
        event(&mut tx, run_id, None, None, "run_cancelled", None).await?;
        tx.commit().await.op("commit cancel")?;
        Ok(true)
    }

    /// Resumes a failed or cancelled run: its failed and cancelled steps get a fresh attempt
    /// budget and come due now; completed steps keep their checkpoints, and steps that their
    /// completion should have readied while the run was stopped are readied.
    ///
    /// # Errors
    /// [`Error::UnknownRun`], [`Error::InvalidState`] for a running or succeeded run, or a
    /// query error.
    pub async fn retry(&self, workflow: &Workflow, run_id: RunId) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.op("begin retry")?;
        let status = lock_run(&mut tx, run_id)
            .await?
            .ok_or(Error::UnknownRun(run_id))?;
        if !matches!(status, RunStatus::Failed | RunStatus::Cancelled) {
            return Err(Error::InvalidState {
                run: run_id,
                status: status.to_string(),
                what: "only a failed or cancelled run can be retried",
            });
        }
        sqlx::query(
            "UPDATE tributary_runs SET status = 'running', error = NULL, finished_at = NULL, updated_at = now()
             WHERE run_id = $1",
        )
        .bind(run_id.0)
        .execute(&mut *tx)
        .await
        .op("resume run")?;
        sqlx::query(
            "UPDATE tributary_steps SET status = 'waiting', attempt = attempt + 1, attempt_base = attempt,
                    error = NULL, due_at = now(), finished_at = NULL
             WHERE run_id = $1 AND status IN ('failed', 'cancelled') AND step NOT IN ($2, $3)",
        )
        .bind(run_id.0)
        .bind(ON_SUCCESS)
        .bind(ON_FAILURE)
        .execute(&mut *tx)
        .await
        .op("reschedule failed steps")?;
        // Completions that arrived while the run was stopped readied nothing: catch up.
        let completed: Vec<String> = sqlx::query_scalar(
            "SELECT step FROM tributary_steps WHERE run_id = $1 AND status = 'completed' AND parent IS NULL",
        )
        .bind(run_id.0)
        .fetch_all(&mut *tx)
        .await
        .op("list completed steps")?;
        let mut dispatch = Vec::new();
        for step in completed {
            if let Some(step @ StepRef::Graph(_)) = workflow.resolve(&step) {
                advance(&mut tx, workflow, run_id, step, &mut dispatch).await?;
            }
        }
        // Whatever was readied is published by the due-time poller.
        let (runs, steps, attempts) = columns(&dispatch);
        sqlx::query(
            "UPDATE tributary_steps s SET status = 'waiting', due_at = now()
             FROM unnest($1::uuid[], $2::text[], $3::int[]) AS d(run_id, step, attempt)
             WHERE s.run_id = d.run_id AND s.step = d.step AND s.status = 'ready'",
        )
        .bind(runs)
        .bind(steps)
        .bind(attempts)
        .execute(&mut *tx)
        .await
        .op("hand readied steps to the poller")?;
        event(&mut tx, run_id, None, None, "run_retried", None).await?;
        tx.commit().await.op("commit retry")?;
        Ok(())
    }

    /// The run with its steps and audit trail.
    ///
    /// # Errors
    /// [`Error::UnknownRun`] or a query error.
    pub async fn run_view(&self, run_id: RunId) -> Result<RunView, Error> {
        let run = sqlx::query(
            "SELECT workflow, version, status, input, output, error, created_at, finished_at, trace_context
             FROM tributary_runs WHERE run_id = $1",
        )
        .bind(run_id.0)
        .fetch_optional(&self.pool)
        .await
        .op("read run")?
        .ok_or(Error::UnknownRun(run_id))?;
        let steps: Vec<StepView> = sqlx::query_as(
            "SELECT step, status, attempt, error, output, ready_at, started_at, finished_at, due_at
             FROM tributary_steps WHERE run_id = $1 ORDER BY ready_at, parent NULLS FIRST, item_index, step",
        )
        .bind(run_id.0)
        .fetch_all(&self.pool)
        .await
        .op("read steps")?;
        let events: Vec<EventRow> =
            sqlx::query_as("SELECT step, attempt, kind, detail, at FROM tributary_events WHERE run_id = $1 ORDER BY id")
                .bind(run_id.0)
                .fetch_all(&self.pool)
                .await
                .op("read events")?;
        Ok(RunView {
            run_id,
            workflow: run.try_get("workflow").op("read run")?,
            version: run.try_get::<i32, _>("version").op("read run")? as u32,
            status: run.try_get("status").op("read run")?,
            input: run.try_get("input").op("read run")?,
            output: run.try_get("output").op("read run")?,
            error: run.try_get("error").op("read run")?,
            created_at: run.try_get("created_at").op("read run")?,
            finished_at: run.try_get("finished_at").op("read run")?,
            trace_context: run.try_get("trace_context").op("read run")?,
            steps,
            events,
        })
    }

    /// The statuses of these runs, for cancellation checks and waiting clients.
    ///
    /// # Errors
    /// A query error.
    pub async fn run_statuses(&self, runs: &[RunId]) -> Result<HashMap<RunId, RunStatus>, Error> {
        let ids: Vec<uuid::Uuid> = runs.iter().map(|r| r.0).collect();
        let rows = sqlx::query("SELECT run_id, status FROM tributary_runs WHERE run_id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .op("read run statuses")?;
        rows.iter()
            .map(|r| {
                let id: uuid::Uuid = r.try_get("run_id").op("read run statuses")?;
                let status: &str = r.try_get("status").op("read run statuses")?;
                Ok((RunId(id), RunStatus::parse(status)?))
            })
            .collect()
    }

    /// Deletes up to `batch` runs that finished before `older_than` ago, with their steps and
    /// events. Returns how many were deleted.
    ///
    /// # Errors
    /// A query error.
    pub async fn delete_finished(&self, older_than: Duration, batch: i64) -> Result<u64, Error> {
        // Steps go by ON DELETE CASCADE; events, which have no foreign key (migration 0010),
        // in the same statement.
        let deleted: i64 = sqlx::query_scalar(
            "WITH gone AS (
                 DELETE FROM tributary_runs WHERE run_id IN (
                     SELECT run_id FROM tributary_runs WHERE finished_at < now() - $1::interval
                     ORDER BY finished_at LIMIT $2)
                 RETURNING run_id),
             events AS (
                 DELETE FROM tributary_events WHERE run_id IN (SELECT run_id FROM gone))
             SELECT count(*) FROM gone",
        )
        .bind(interval(older_than))
        .bind(batch)
        .fetch_one(&self.pool)
        .await
        .op("delete finished runs")?;
        Ok(u64::try_from(deleted).unwrap_or_default())
    }
}

fn interval(d: Duration) -> String {
    format!("{} microseconds", d.as_micros())
}

fn columns(dispatch: &[Dispatch]) -> (Vec<uuid::Uuid>, Vec<String>, Vec<i32>) {
    (
        dispatch.iter().map(|d| d.run_id.0).collect(),
        dispatch.iter().map(|d| d.step.clone()).collect(),
        dispatch.iter().map(|d| d.attempt as i32).collect(),
    )
}

/// Stamps the run's trace context on dispatches made inside a transaction of that run.
/// A [`Loaded`] from a row of `load` or `load_many`.
fn loaded_row(row: &sqlx::postgres::PgRow) -> Result<Loaded, Error> {
    let deps: Value = row.try_get("deps").op("load step")?;
    let deps = match deps {
        Value::Object(map) => map.into_iter().collect(),
        _ => HashMap::new(),
    };
    Ok(Loaded {
        workflow: row.try_get("workflow").op("load step")?,
        version: row.try_get::<i32, _>("version").op("load step")? as u32,
        run_status: RunStatus::parse(row.try_get("run_status").op("load step")?)?,
        run_input: row.try_get("run_input").op("load step")?,
        step_status: row.try_get("step_status").op("load step")?,
        attempt: row
            .try_get::<Option<i32>, _>("attempt")
            .op("load step")?
            .unwrap_or(0) as Attempt,
        attempt_base: row
            .try_get::<Option<i32>, _>("attempt_base")
            .op("load step")?
            .unwrap_or(0) as Attempt,
        step_input: row.try_get("step_input").op("load step")?,
        deps,
    })
}

fn with_trace(mut dispatch: Vec<Dispatch>, trace: Option<String>) -> Vec<Dispatch> {
    for d in &mut dispatch {
        d.trace_context.clone_from(&trace);
    }
    dispatch
}

fn dispatch_row(row: &sqlx::postgres::PgRow) -> Result<Dispatch, Error> {
    Ok(Dispatch {
        trace_context: row.try_get("trace_context").op("read dispatch")?,
        run_id: RunId(row.try_get("run_id").op("read dispatch")?),
        workflow: row.try_get("workflow").op("read dispatch")?,
        step: row.try_get("step").op("read dispatch")?,
        attempt: row.try_get::<i32, _>("attempt").op("read dispatch")? as Attempt,
    })
}

/// Locks the run row for the rest of the transaction. Every transaction that changes a run's
/// steps takes this lock first, so concurrent completions of a fan-in's dependencies see each
/// other and exactly one of them readies the fan-in step.
async fn lock_run(tx: &mut PgConnection, run_id: RunId) -> Result<Option<RunStatus>, Error> {
    Ok(lock_run_traced(tx, run_id).await?.map(|(status, _)| status))
}

/// [`lock_run`], also returning the run's trace context.
async fn lock_run_traced(
    tx: &mut PgConnection,
    run_id: RunId,
) -> Result<Option<(RunStatus, Option<String>)>, Error> {
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT status, trace_context FROM tributary_runs WHERE run_id = $1 FOR UPDATE",
    )
    .bind(run_id.0)
    .fetch_optional(&mut *tx)
    .await
    .op("lock run")?;
    row.map(|(status, trace)| Ok((RunStatus::parse(&status)?, trace)))
        .transpose()
}

async fn event(
    tx: &mut PgConnection,
    run_id: RunId,
    step: Option<&str>,
    attempt: Option<Attempt>,
    kind: &str,
    detail: Option<&str>,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO tributary_events (run_id, step, attempt, kind, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(run_id.0)
        .bind(step)
        .bind(attempt.map(|a| a as i32))
        .bind(kind)
        .bind(detail)
        .execute(&mut *tx)
        .await
        .op("record event")?;
    Ok(())
}

/// After `done` completed: readies the successors whose dependencies have all completed,
/// joins a map step whose items are all done, and finishes the run when every step is done.
/// Returns whether it finished the run.
async fn advance(
    tx: &mut PgConnection,
    workflow: &Workflow,
    run_id: RunId,
    done: StepRef,
    dispatch: &mut Vec<Dispatch>,
) -> Result<bool, Error> {
    // Iterative, not recursive: a join or an empty map can complete further steps.
    let mut finished = false;
    let mut completed = vec![done];
    while let Some(done) = completed.pop() {
        let index = match done {
            StepRef::Hook(_) => continue,
            StepRef::MapItem(map, _) => {
                if !join_map(tx, workflow, run_id, map).await? {
                    continue;
                }
                map
            }
            StepRef::Graph(index) => index,
        };
        let around = workflow.names_around(index);
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT step, status FROM tributary_steps WHERE run_id = $1 AND step = ANY($2)",
        )
        .bind(run_id.0)
        .bind(&around)
        .fetch_all(&mut *tx)
        .await
        .op("read successor state")?;
        let status: HashMap<&str, &str> = rows
            .iter()
            .map(|(s, st)| (s.as_str(), st.as_str()))
            .collect();
        for &next in workflow.successors(index) {
            let def = workflow.step(next);
            if status.contains_key(def.name.as_str()) {
                continue; // already readied by an earlier completion
            }
            let all_done = def.deps.iter().all(|d| match d {
                Source::Input => true,
                Source::Step(d) => {
                    status.get(workflow.step(*d).name.as_str()) == Some(&"completed")
                }
            });
            if !all_done {
                continue;
            }
            if def.is_map() {
                if expand_map(tx, workflow, run_id, next, dispatch).await? {
                    completed.push(StepRef::Graph(next));
                }
            } else {
                sqlx::query(
                    "INSERT INTO tributary_steps (run_id, step, status) VALUES ($1, $2, 'ready') ON CONFLICT DO NOTHING",
                )
                .bind(run_id.0)
                .bind(&def.name)
                .execute(&mut *tx)
                .await
                .op("ready step")?;
                dispatch.push(Dispatch {
                    trace_context: None,
                    run_id,
                    workflow: workflow.name().to_owned(),
                    step: def.name.clone(),
                    attempt: 1,
                });
            }
        }
        if workflow.successors(index).is_empty() && !finished {
            finished = finish_if_done(tx, workflow, run_id, dispatch).await?;
        }
    }
    Ok(finished)
}

/// Creates one child row per item of the map step's list. Returns `true` when the list was
/// empty and the map step completed at once.
async fn expand_map(
    tx: &mut PgConnection,
    workflow: &Workflow,
    run_id: RunId,
    map: usize,
    dispatch: &mut Vec<Dispatch>,
) -> Result<bool, Error> {
    let def = workflow.step(map);
    let Some(Source::Step(source)) = def.deps.first().copied() else {
        return Err(Error::Corrupt {
            what: "map step",
            problem: format!("{} has no source step", def.name),
        });
    };
    let list: Value =
        sqlx::query_scalar("SELECT output FROM tributary_steps WHERE run_id = $1 AND step = $2")
            .bind(run_id.0)
            .bind(&workflow.step(source).name)
            .fetch_one(&mut *tx)
            .await
            .op("read map list")?;
    let items = match list {
        Value::Array(items) => items,
        other => {
            return Err(Error::Corrupt {
                what: "map step input",
                problem: format!(
                    "{} expected a list from {}, got {other}",
                    def.name,
                    workflow.step(source).name
                ),
            });
        }
    };
    if items.is_empty() {
        sqlx::query(
            "INSERT INTO tributary_steps (run_id, step, status, output, started_at, finished_at)
             VALUES ($1, $2, 'completed', '[]'::jsonb, now(), now()) ON CONFLICT DO NOTHING",
        )
        .bind(run_id.0)
        .bind(&def.name)
        .execute(&mut *tx)
        .await
        .op("complete empty map")?;
        return Ok(true);
    }
    sqlx::query("INSERT INTO tributary_steps (run_id, step, status) VALUES ($1, $2, 'expanded') ON CONFLICT DO NOTHING")
        .bind(run_id.0)
        .bind(&def.name)
        .execute(&mut *tx)
        .await
        .op("expand map")?;
    let names: Vec<String> = (0..items.len())
        .map(|i| workflow.item_name(map, i))
        .collect();
    let indexes: Vec<i32> = (0..items.len() as i32).collect();
    sqlx::query(
        "INSERT INTO tributary_steps (run_id, step, status, parent, item_index, input)
         SELECT $1, n, 'ready', $2, i, v FROM unnest($3::text[], $4::int[], $5::jsonb[]) AS t(n, i, v)
         ON CONFLICT DO NOTHING",
    )
    .bind(run_id.0)
    .bind(&def.name)
    .bind(&names)
    .bind(&indexes)
    .bind(&items)
    .execute(&mut *tx)
    .await
    .op("insert map items")?;
    dispatch.extend(names.into_iter().map(|step| Dispatch {
        trace_context: None,
        run_id,
        workflow: workflow.name().to_owned(),
        step,
        attempt: 1,
    }));
    Ok(false)
}

/// Completes a map step once all its items have completed. Returns whether it did.
async fn join_map(
    tx: &mut PgConnection,
    workflow: &Workflow,
    run_id: RunId,
    map: usize,
) -> Result<bool, Error> {
    let name = &workflow.step(map).name;
    let (pending, outputs): (i64, Option<Value>) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status <> 'completed'), jsonb_agg(output ORDER BY item_index)
         FROM tributary_steps WHERE run_id = $1 AND parent = $2",
    )
    .bind(run_id.0)
    .bind(name)
    .fetch_one(&mut *tx)
    .await
    .op("count map items")?;
    if pending > 0 {
        return Ok(false);
    }
    let joined = sqlx::query(
        "UPDATE tributary_steps SET status = 'completed', output = $3, finished_at = now()
         WHERE run_id = $1 AND step = $2 AND status = 'expanded'",
    )
    .bind(run_id.0)
    .bind(name)
    .bind(outputs.unwrap_or(Value::Array(Vec::new())))
    .execute(&mut *tx)
    .await
    .op("join map")?;
    if joined.rows_affected() > 0 {
        event(
            tx,
            run_id,
            Some(name),
            None,
            "step_completed",
            Some("all items completed"),
        )
        .await?;
    }
    Ok(joined.rows_affected() > 0)
}

/// Finishes the run when every graph step has completed. Returns whether it did.
async fn finish_if_done(
    tx: &mut PgConnection,
    workflow: &Workflow,
    run_id: RunId,
    dispatch: &mut Vec<Dispatch>,
) -> Result<bool, Error> {
    let names: Vec<&str> = workflow
        .graph_steps()
        .map(|(_, s)| s.name.as_str())
        .collect();
    let done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tributary_steps WHERE run_id = $1 AND step = ANY($2) AND status = 'completed'",
    )
    .bind(run_id.0)
    .bind(&names)
    .fetch_one(&mut *tx)
    .await
    .op("count completed steps")?;
    if done < names.len() as i64 {
        return Ok(false);
    }
    let output: Value = match workflow.output {
        Source::Input => sqlx::query_scalar("SELECT input FROM tributary_runs WHERE run_id = $1")
            .bind(run_id.0)
            .fetch_one(&mut *tx)
            .await
            .op("read run output")?,
        Source::Step(i) => {
            sqlx::query_scalar("SELECT output FROM tributary_steps WHERE run_id = $1 AND step = $2")
                .bind(run_id.0)
                .bind(&workflow.step(i).name)
                .fetch_one(&mut *tx)
                .await
                .op("read run output")?
        }
    };
    finish_run(
        tx,
        workflow,
        run_id,
        RunStatus::Succeeded,
        Some(output),
        None,
        dispatch,
    )
    .await?;
    Ok(true)
}

pub(super) async fn finish_run(
    tx: &mut PgConnection,
    workflow: &Workflow,
    run_id: RunId,
    status: RunStatus,
    output: Option<Value>,
    error: Option<String>,
    dispatch: &mut Vec<Dispatch>,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE tributary_runs SET status = $2, output = $3, error = $4, finished_at = now(), updated_at = now()
         WHERE run_id = $1",
    )
    .bind(run_id.0)
    .bind(status.as_str())
    .bind(&output)
    .bind(&error)
    .execute(&mut *tx)
    .await
    .op("finish run")?;
    let kind = if status == RunStatus::Succeeded {
        "run_succeeded"
    } else {
        "run_failed"
    };
    event(tx, run_id, None, None, kind, error.as_deref()).await?;
    let hook = if status == RunStatus::Succeeded {
        ON_SUCCESS
    } else {
        ON_FAILURE
    };
    if workflow.hook(hook).is_some() {
        let outcome = RunOutcome {
            run_id,
            workflow: workflow.name().to_owned(),
            output,
            error,
        };
        let input = serde_json::to_value(&outcome).map_err(|e| Error::Corrupt {
            what: "run outcome",
            problem: e.to_string(),
        })?;
        // A retried run that ends again runs its hook again, as a new attempt.
        let attempt: i32 = sqlx::query_scalar(
            "INSERT INTO tributary_steps (run_id, step, status, input) VALUES ($1, $2, 'ready', $3)
             ON CONFLICT (run_id, step) DO UPDATE SET status = 'ready', input = EXCLUDED.input,
                 attempt = tributary_steps.attempt + 1, attempt_base = tributary_steps.attempt, error = NULL,
                 ready_at = now(), finished_at = NULL
             RETURNING attempt",
        )
        .bind(run_id.0)
        .bind(hook)
        .bind(input)
        .fetch_one(&mut *tx)
        .await
        .op("ready hook")?;
        dispatch.push(Dispatch {
            trace_context: None,
            run_id,
            workflow: workflow.name().to_owned(),
            step: hook.to_owned(),
            attempt: attempt as Attempt,
        });
    }
    Ok(())
}

impl Store {
    /// The `ready` steps among `names` and among the items of map steps named in `names`,
    /// with their attempts: what a duplicate delivery re-publishes.
    ///
    /// # Errors
    /// A query error.
    pub async fn ready_successors(
        &self,
        run_id: RunId,
        names: &[String],
    ) -> Result<Vec<(String, Attempt)>, Error> {
        let rows: Vec<(String, i32)> = sqlx::query_as(
            "SELECT step, attempt FROM tributary_steps
             WHERE run_id = $1 AND status = 'ready' AND (step = ANY($2) OR parent = ANY($2))",
        )
        .bind(run_id.0)
        .bind(names)
        .fetch_all(&self.pool)
        .await
        .op("list ready successors")?;
        Ok(rows.into_iter().map(|(s, a)| (s, a as Attempt)).collect())
    }
}

/// A schedule's stored state.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct ScheduleRow {
    /// The schedule.
    pub name: String,
    /// Its workflow.
    pub workflow: String,
    /// Paused schedules start no runs.
    pub paused: bool,
    /// The newest tick that fired (or was skipped).
    pub last_tick: DateTime<Utc>,
    /// The run of the newest fired tick.
    pub last_run_id: Option<uuid::Uuid>,
    /// That run's status.
    pub last_run_status: Option<String>,
}

impl Store {
    /// The schedule's state, created with `initial_tick` as its last tick when new.
    ///
    /// # Errors
    /// A query error.
    pub async fn schedule_state(
        &self,
        name: &str,
        workflow: &str,
        initial_tick: DateTime<Utc>,
    ) -> Result<(bool, DateTime<Utc>), Error> {
        sqlx::query("INSERT INTO tributary_schedules (name, workflow, last_tick) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(name)
            .bind(workflow)
            .bind(initial_tick)
            .execute(&self.pool)
            .await
            .op("create schedule state")?;
        sqlx::query_as("SELECT paused, last_tick FROM tributary_schedules WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .op("read schedule state")
    }

    /// Records that `tick` fired (or was skipped); never moves backwards.
    ///
    /// # Errors
    /// A query error.
    pub async fn advance_schedule(
        &self,
        name: &str,
        tick: DateTime<Utc>,
        run: Option<RunId>,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE tributary_schedules SET last_tick = $2, last_run_id = coalesce($3, last_run_id), updated_at = now()
             WHERE name = $1 AND last_tick < $2",
        )
        .bind(name)
        .bind(tick)
        .bind(run.map(|r| r.0))
        .execute(&self.pool)
        .await
        .op("advance schedule")?;
        Ok(())
    }

    /// Pauses or resumes a schedule. Returns `false` when no such schedule has state yet.
    ///
    /// # Errors
    /// A query error.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE tributary_schedules SET paused = $2, updated_at = now() WHERE name = $1",
        )
        .bind(name)
        .bind(paused)
        .execute(&self.pool)
        .await
        .op("pause schedule")?;
        Ok(done.rows_affected() == 1)
    }

    /// Every schedule's state with its last run's status.
    ///
    /// # Errors
    /// A query error.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>, Error> {
        sqlx::query_as(
            "SELECT s.name, s.workflow, s.paused, s.last_tick, s.last_run_id, r.status AS last_run_status
             FROM tributary_schedules s LEFT JOIN tributary_runs r ON r.run_id = s.last_run_id ORDER BY s.name",
        )
        .fetch_all(&self.pool)
        .await
        .op("list schedules")
    }
}
