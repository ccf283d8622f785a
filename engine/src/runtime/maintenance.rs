//! Background loops of every worker process: the due-time poller, the reclaimer, the epoch
//! watchdog that rebuilds Redis from PostgreSQL, and housekeeping (retention, trimming).
//! Each loop stops when its token is cancelled.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::engine::Engine;
use super::worker::{Worker, dead_letter, publish};
use crate::store::{Dispatch, Failure};
use crate::telemetry::metrics::{self, DeadLetter};
use crate::workflow::StepRef;

/// Due rows are pushed this far ahead while a poller publishes them; if the poller dies, they
/// come due again after it.
const DUE_LEASE: Duration = Duration::from_secs(30);
/// Steps taken per poll, and re-published per page during a rebuild.
const BATCH: i64 = 500;
/// How often the stream gauges are refreshed (two cheap commands: XLEN, XPENDING summary).
const DEPTH_POLL: Duration = Duration::from_secs(5);

pub(crate) fn spawn_all(worker: Arc<Worker>, stop: CancellationToken, set: &mut JoinSet<()>) {
    set.spawn(due_poller(worker.clone(), stop.clone()));
    set.spawn(reclaimer(worker.clone(), stop.clone()));
    set.spawn(watchdog(worker.clone(), stop.clone()));
    set.spawn(depth_poller(worker.clone(), stop.clone()));
    set.spawn(housekeeping(worker, stop));
}

/// Feeds the stream gauges (`tributary.stream.length`, `tributary.stream.pending`) of the
/// step stream, at once and then every [`DEPTH_POLL`]; only when metrics are recorded.
async fn depth_poller(worker: Arc<Worker>, stop: CancellationToken) {
    if !metrics::enabled() {
        return;
    }
    let transport = &worker.engine.transport;
    let mut period = Duration::ZERO;
    while tick(&stop, period).await {
        period = DEPTH_POLL;
        match transport.depth().await {
            Ok((length, pending)) => {
                metrics::record_stream_depth(&transport.keys().steps, length, Some(pending))
            }
            Err(e) => tracing::debug!(error = %e, "polling the stream depth failed"),
        }
        match transport.dead_letter_len().await {
            // No consumer group reads the dead letters: nothing is pending there.
            Ok(length) => metrics::record_stream_depth(&transport.keys().dead, length, None),
            Err(e) => tracing::debug!(error = %e, "polling the dead-letter stream failed"),
        }
    }
}

/// Sleeps for `period`, or returns `false` when stopped.
async fn tick(stop: &CancellationToken, period: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(period) => true,
    }
}

/// Moves due-time state (retry back-off, unpublished starts) onto the stream when due
/// (Architecture Invariant 3: delayed work never waits in a pending list).
async fn due_poller(worker: Arc<Worker>, stop: CancellationToken) {
    let engine = &worker.engine;
    let mut period = engine.config.worker.poll_interval;
    while tick(&stop, period).await {
        period = engine.config.worker.poll_interval;
        let due = match engine.store.take_due(BATCH, DUE_LEASE).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "due-time poll failed");
                continue;
            }
        };
        if due.is_empty() {
            continue;
        }
        if engine.transport.publish(&due).await.is_ok()
            && let Err(e) = engine.store.mark_ready(&due).await
        {
            tracing::warn!(error = %e, "marking due steps ready failed; they may be published twice");
        }
        if due.len() as i64 == BATCH {
            period = Duration::ZERO; // more are due: poll again at once
        }
    }
}

/// Reclaims entries whose consumer stopped renewing them (crashed or stalled). The attempt is
/// fenced in PostgreSQL first (Architecture Invariant 4): the step gets a new attempt number
/// as due-time state, so the stalled consumer's late result is discarded.
async fn reclaimer(worker: Arc<Worker>, stop: CancellationToken) {
    let engine = &worker.engine;
    let lease = engine.config.worker.lease;
    while tick(&stop, lease / 2).await {
        let entries = match engine.transport.reclaim(&worker.consumer, lease, 100).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "reclaiming stalled entries failed");
                continue;
            }
        };
        metrics::entries_reclaimed(entries.len() as u64);
        for entry in entries {
            let msg = match entry.message() {
                Ok(m) => m,
                Err(malformed) => {
                    dead_letter(
                        &worker,
                        &entry,
                        DeadLetter::Malformed,
                        &malformed.to_string(),
                    )
                    .await;
                    continue;
                }
            };
            tracing::warn!(run = %msg.run_id, step = %msg.step, attempt = msg.attempt, "reclaiming a stalled step");
            let workflow = engine.registry.get(&msg.workflow).ok().cloned();
            let loaded = engine.store.load(msg.run_id, &msg.step, &[]).await;
            let fence = match (&workflow, &loaded) {
                (Some(wf), Ok(Some(l)))
                    if l.attempt == msg.attempt
                        && matches!(l.step_status.as_deref(), Some("ready" | "waiting")) =>
                {
                    let index = match wf.resolve(&msg.step) {
                        Some(StepRef::Graph(i) | StepRef::MapItem(i, _) | StepRef::Hook(i)) => i,
                        None => {
                            dead_letter(
                                &worker,
                                &entry,
                                DeadLetter::UnknownStep,
                                "reclaimed entry names an unknown step",
                            )
                            .await;
                            continue;
                        }
                    };
                    let used = msg.attempt.saturating_sub(l.attempt_base);
                    let retry = used < wf.step(index).options.retry.max_attempts.get();
                    Some((
                        wf.clone(),
                        Failure {
                            run_id: msg.run_id,
                            step: msg.step.clone(),
                            attempt: msg.attempt,
                            error:
                                "lease expired: the worker running this attempt crashed or stalled"
                                    .into(),
                            retry_after: retry.then_some(Duration::ZERO),
                            started_at: None,
                            retry_event: "step_reclaimed",
                        },
                    ))
                }
                _ => None,
            };
            match fence {
                Some((wf, failure)) => match engine.store.fail(&wf, &failure).await {
                    Ok(Some(dispatch)) => {
                        publish(&worker, &dispatch).await;
                        let _ = engine.transport.ack(std::slice::from_ref(&entry.id)).await;
                    }
                    Ok(None) => {
                        let _ = engine.transport.ack(std::slice::from_ref(&entry.id)).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "fencing a reclaimed step failed; it will be reclaimed again")
                    }
                },
                // Checkpointed, stale, unknown: deliver it again through the normal path, which
                // re-publishes successors or dead-letters as needed.
                None => {
                    if engine
                        .transport
                        .republish(std::slice::from_ref(&entry))
                        .await
                        .is_ok()
                    {
                        let _ = engine.transport.ack(std::slice::from_ref(&entry.id)).await;
                    }
                }
            }
        }
    }
}

/// Watches the epoch marker. When Redis comes back empty (flush, failover, restart without
/// persistence), one process takes the rebuild lock, recreates the group and re-publishes
/// every ready step from PostgreSQL (Architecture Invariant 1), then sets a new epoch.
async fn watchdog(worker: Arc<Worker>, stop: CancellationToken) {
    let period = worker.engine.config.worker.epoch_check;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
            _ = worker.redis_lost.notified() => {}
        }
        if let Err(e) = ensure_epoch(&worker.engine, &worker.consumer).await {
            tracing::warn!(error = %e, "epoch check failed");
        }
    }
}

/// Makes sure Redis holds this deployment's streams: when the epoch marker is missing, takes
/// the rebuild lock and rebuilds them from PostgreSQL. Returns whether this call rebuilt.
/// Called at connect time too, so a process never publishes into a Redis that still awaits
/// its rebuild (which would only cause duplicate deliveries, but needless ones).
pub(crate) async fn ensure_epoch(engine: &Engine, holder: &str) -> Result<bool, super::Error> {
    if engine.transport.epoch().await?.is_some() {
        return Ok(false);
    }
    if !engine
        .transport
        .try_rebuild_lock(holder, REBUILD_LOCK_TTL)
        .await?
    {
        return Ok(false); // another process is rebuilding
    }
    let rebuilt = rebuild(engine).await;
    let _ = engine.transport.release_rebuild_lock().await;
    let count = rebuilt?;
    tracing::info!(
        republished = count,
        "rebuilt the step stream from PostgreSQL"
    );
    Ok(true)
}

/// How long a connecting process waits for another process's rebuild (the lock's lifetime).
const REBUILD_LOCK_TTL: Duration = Duration::from_secs(60);

/// [`ensure_epoch`] for a process that is connecting: when another process holds the rebuild
/// lock, waits until its rebuild has ended (the epoch marker is back), at most the lock's
/// lifetime, retrying the lock meanwhile (its holder may have died). A process that went on at
/// once would start runs whose steps the rebuild then publishes a second time: each would run
/// twice, one attempt fenced (seen as a flaky test under CPU load, when a client and a worker
/// connect together to a new Redis). Past the wait it goes on with a warning: duplicates are
/// safe, only wasteful.
pub(crate) async fn await_epoch(engine: &Engine, holder: &str) -> Result<(), super::Error> {
    let deadline = tokio::time::Instant::now() + REBUILD_LOCK_TTL;
    let mut waited = false;
    loop {
        if ensure_epoch(engine, holder).await? || engine.transport.epoch().await?.is_some() {
            if waited {
                tracing::info!("another process's rebuild of the step stream has ended");
            }
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("another process is still rebuilding the step stream; going on");
            return Ok(());
        }
        if !waited {
            tracing::info!("waiting for another process's rebuild of the step stream");
            waited = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rebuild(engine: &Engine) -> Result<usize, super::Error> {
    engine.transport.ensure_group().await?;
    let mut after: Option<Dispatch> = None;
    let mut count = 0;
    loop {
        let page = engine.store.ready_steps(after.as_ref(), BATCH).await?;
        if page.is_empty() {
            break;
        }
        engine.transport.publish(&page).await?;
        count += page.len();
        after = page.last().cloned();
    }
    engine
        .transport
        .set_epoch(&uuid::Uuid::new_v4().to_string())
        .await?;
    Ok(count)
}

/// Retention of finished runs, trimming of acknowledged entries, and removal of consumers
/// left by exited processes.
async fn housekeeping(worker: Arc<Worker>, stop: CancellationToken) {
    let engine = &worker.engine;
    let retention = &engine.config.retention;
    while tick(&stop, retention.interval).await {
        // Bounded: at most 100 batches per round, so one round never runs away.
        for _ in 0..100 {
            match engine
                .store
                .delete_finished(retention.keep, retention.batch)
                .await
            {
                Ok(n) if n as i64 == retention.batch => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "retention failed");
                    break;
                }
            }
        }
        if let Err(e) = engine.transport.trim().await {
            tracing::warn!(error = %e, "trimming the step stream failed");
        }
        if let Err(e) = engine
            .transport
            .remove_idle_consumers(Duration::from_secs(3600))
            .await
        {
            tracing::warn!(error = %e, "removing idle consumers failed");
        }
    }
}
