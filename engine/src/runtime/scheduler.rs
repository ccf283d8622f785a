//! The cron scheduler. It runs in every worker process; exactly one run starts per tick
//! however many run, because a tick's run is started with the idempotency key
//! `schedule:<name>:<tick>` (unique per workflow in PostgreSQL). A schedule's progress, pause
//! flag and last run live in `tributary_schedules`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::engine::{Engine, Error, StartOptions};
use crate::config::Config;
use crate::telemetry::metrics::{self, TickOutcome};
use crate::workflow::{self, Registry, Schedule, ScheduleSpec};

/// A schedule as this deployment runs it: declared in code, overridden by configuration.
#[derive(Debug, Clone)]
pub struct Scheduled {
    /// The workflow it starts.
    pub workflow: String,
    /// The effective schedule.
    pub schedule: Schedule,
}

/// Applies the configuration's overrides to the declared schedules and drops disabled ones.
///
/// # Errors
/// An override naming no declared schedule, or an overridden expression or zone that is invalid.
pub(crate) fn effective(registry: &Registry, config: &Config) -> Result<Vec<Scheduled>, Error> {
    let declared: Vec<(&str, &Schedule)> = registry
        .iter()
        .flat_map(|wf| wf.schedules().iter().map(move |s| (wf.name(), s)))
        .collect();
    for name in config.schedules.keys() {
        if !declared.iter().any(|(_, s)| &s.spec().name == name) {
            let known: Vec<&str> = declared
                .iter()
                .map(|(_, s)| s.spec().name.as_str())
                .collect();
            return Err(crate::config::Error::Invalid(format!(
                "schedules.{name}: no such schedule (declared: {})",
                known.join(", ")
            ))
            .into());
        }
    }
    let mut out = Vec::new();
    for (workflow, schedule) in declared {
        let spec = schedule.spec();
        let schedule = match config.schedules.get(&spec.name) {
            Some(o) if o.enabled == Some(false) => continue,
            Some(o) => {
                let spec = ScheduleSpec {
                    name: spec.name.clone(),
                    cron: o.cron.clone().unwrap_or_else(|| spec.cron.clone()),
                    timezone: o.timezone.clone().unwrap_or_else(|| spec.timezone.clone()),
                    catch_up: o.catch_up.unwrap_or(spec.catch_up),
                };
                schedule.with_spec(spec.clone()).map_err(|problem| {
                    workflow::Error::InvalidSchedule {
                        schedule: spec.name,
                        problem,
                    }
                })?
            }
            None => schedule.clone(),
        };
        out.push(Scheduled {
            workflow: workflow.to_owned(),
            schedule,
        });
    }
    Ok(out)
}

/// The idempotency key of a tick's run.
pub(crate) fn tick_key(schedule: &str, tick: DateTime<Utc>) -> String {
    format!("schedule:{schedule}:{}", tick.to_rfc3339())
}

/// Fires due ticks until stopped, waking at the next tick (at least once a second, so that a
/// pause, a resume or another process's progress is seen soon).
pub(crate) async fn run(engine: Engine, schedules: Arc<Vec<Scheduled>>, stop: CancellationToken) {
    if schedules.is_empty() {
        return;
    }
    loop {
        let now = Utc::now();
        for s in schedules.iter() {
            if let Err(e) = fire_due(&engine, s, now).await {
                tracing::warn!(schedule = %s.schedule.spec().name, error = %e, "firing a schedule failed; will retry");
                metrics::scheduler_tick(&s.schedule.spec().name, TickOutcome::Failed);
            }
        }
        let next = schedules
            .iter()
            .filter_map(|s| s.schedule.next_after(now))
            .min();
        let wait = next
            .and_then(|n| (n - Utc::now()).to_std().ok())
            .unwrap_or(Duration::ZERO)
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn fire_due(engine: &Engine, s: &Scheduled, now: DateTime<Utc>) -> Result<(), Error> {
    let name = &s.schedule.spec().name;
    // First sight of a schedule: start from the latest tick, without firing the past.
    let initial = s.schedule.previous_before(now).unwrap_or(now);
    let (paused, last) = engine
        .store
        .schedule_state(name, &s.workflow, initial)
        .await?;
    if paused {
        return Ok(());
    }
    let (due, skipped) = s.schedule.due(last, now);
    if skipped > 0 {
        tracing::warn!(schedule = %name, skipped, "missed ticks beyond the catch-up limit are skipped");
        metrics::scheduler_ticks(name, TickOutcome::Skipped, skipped as u64);
    }
    for tick in due {
        let t = s.schedule.tick(tick);
        let input = s
            .schedule
            .input(&t)
            .map_err(|problem| workflow::Error::InvalidInput {
                workflow: s.workflow.clone(),
                problem,
            })?;
        let span = tracing::info_span!("workflow.schedule.tick", workflow.schedule.name = %name, workflow.schedule.tick = %tick.to_rfc3339());
        let options = StartOptions {
            idempotency_key: Some(tick_key(name, tick)),
        };
        let started = engine
            .start_runs(&[(s.workflow.clone(), input, options)])
            .instrument(span)
            .await?;
        let run = started[0].run_id;
        let outcome = if started[0].created {
            TickOutcome::Started
        } else {
            TickOutcome::Duplicate
        };
        metrics::scheduler_tick(name, outcome);
        engine.store.advance_schedule(name, tick, Some(run)).await?;
        tracing::info!(schedule = %name, %tick, run = %run, "schedule fired");
    }
    Ok(())
}
