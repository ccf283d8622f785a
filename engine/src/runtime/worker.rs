//! The consumer: reads step entries for its free slots and executes them; and the lease
//! keeper that renews running entries and cancels steps of cancelled runs.
//!
//! The order for one entry is fixed (Architecture Invariant 2): execute → commit the
//! checkpoint (with the successors it readies) → publish the successors → acknowledge. A crash
//! anywhere leaves the entry pending; it is reclaimed and delivered again, and a delivery of a
//! checkpointed step only re-publishes its successors. A successful attempt's checkpoint,
//! publish and acknowledgement are done by the process's group committer (`committer.rs`),
//! together with those of other attempts; the other acknowledgements also go through it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::Utc;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::committer::{self, Checkpointed, Committer};
use super::engine::{Engine, Error};
use crate::ids::RunId;
use crate::store::{Completed, Dispatch, Failure, Loaded, RunStatus};
use crate::telemetry::metrics::{self, DeadLetter, Outcome};
use crate::transport::{self, Entry, Message};
use crate::workflow::{Source, StepContext, StepError, StepRef, Workflow};

/// Entries this process is executing: entry id → (run, cancellation of the attempt).
type InFlight = Arc<Mutex<HashMap<String, (RunId, CancellationToken)>>>;

/// Entries one process may hold (read and not yet acknowledged) per execution slot. A step
/// gives its slot back when its function returns; its entry is held on while its checkpoint
/// commits with a group of others, and the next steps run meanwhile. Without this, a slot
/// would sit idle through every commit, and a fast step's throughput would be bounded by
/// round trips rather than by the CPUs (`docs/decisions.md`, "Slots free at the step's
/// return"; figures in `docs/benchmarks.md`).
pub const HELD_PER_SLOT: usize = 8;

/// What an entry read by this process holds of its capacity: an execution slot until its step
/// function returns, and a place among the held entries until it is handled.
struct Claim {
    slot: Option<OwnedSemaphorePermit>,
    _held: OwnedSemaphorePermit,
}

impl Claim {
    /// Gives the execution slot back: the step function returned.
    fn release_slot(&mut self) {
        self.slot = None;
    }
}

/// The capacity of one worker process: execution slots (`worker.concurrency`) and held entries
/// ([`HELD_PER_SLOT`] per slot). Only the read loop takes claims.
struct Capacity {
    slots: Arc<Semaphore>,
    held: Arc<Semaphore>,
}

impl Capacity {
    fn new(concurrency: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(concurrency)),
            held: Arc::new(Semaphore::new(concurrency * HELD_PER_SLOT)),
        }
    }

    /// Waits for one claim.
    async fn claim(&self) -> Claim {
        let held = self.held.clone().acquire_owned().await;
        let slot = self.slots.clone().acquire_owned().await;
        Claim {
            slot: Some(slot.expect("semaphore is never closed")),
            _held: held.expect("semaphore is never closed"),
        }
    }

    /// A claim if one is free now.
    fn try_claim(&self) -> Option<Claim> {
        let held = self.held.clone().try_acquire_owned().ok()?;
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        Some(Claim {
            slot: Some(slot),
            _held: held,
        })
    }
}

pub(crate) struct Worker {
    pub(crate) engine: Engine,
    pub(crate) consumer: String,
    in_flight: InFlight,
    /// Cancelled at the end of the shutdown grace: running steps see it.
    hard_stop: CancellationToken,
    /// Nudges the watchdog when a read finds the group missing.
    pub(crate) redis_lost: tokio::sync::Notify,
    /// Group-commits checkpoints and batches acknowledgements.
    committer: Committer,
}

/// A consumer name unique to this process start (Architecture Invariant 4): a restarted
/// process never inherits the pending entries of its previous life by name; they are
/// reclaimed, and fenced.
fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Backs off between retries of an operation that must eventually succeed (a checkpoint
/// commit while PostgreSQL restarts, a publish while Redis restarts).
pub(crate) fn patient_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build()
}

pub(crate) async fn run(engine: Engine, shutdown: CancellationToken) -> Result<(), Error> {
    let consumer = consumer_name();
    let reader = engine
        .transport
        .reader(&consumer, engine.config.worker.read_block)
        .await?;
    let (committer, requests) = Committer::new();
    let worker = Arc::new(Worker {
        engine: engine.clone(),
        consumer,
        in_flight: Arc::default(),
        hard_stop: CancellationToken::new(),
        redis_lost: tokio::sync::Notify::new(),
        committer,
    });
    tracing::info!(consumer = %worker.consumer, concurrency = engine.config.worker.concurrency, "worker started");
    // Stopped last: the step tasks and the maintenance loops acknowledge through it.
    let committer_stop = CancellationToken::new();
    let committer_task = tokio::spawn(committer::run(
        worker.clone(),
        requests,
        committer::Policy {
            batch: engine.config.worker.checkpoint_batch,
            delay: engine.config.worker.checkpoint_delay,
        },
        committer_stop.clone(),
    ));

    let background = CancellationToken::new();
    let mut loops = JoinSet::new();
    loops.spawn(lease_keeper(worker.clone(), background.clone()));
    super::maintenance::spawn_all(worker.clone(), background.clone(), &mut loops);
    loops.spawn(super::scheduler::run(
        engine.clone(),
        engine.schedules.clone(),
        background.clone(),
    ));

    let capacity = Capacity::new(engine.config.worker.concurrency);
    let mut steps = JoinSet::new();
    let mut failures = patient_backoff();
    while !shutdown.is_cancelled() {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            claim = capacity.claim() => claim,
        };
        let mut claims = vec![first];
        while let Some(claim) = capacity.try_claim() {
            claims.push(claim);
        }
        // Not raced against shutdown: a read cut short could lose entries already delivered
        // to this consumer; it returns within the block time anyway.
        match reader.read(claims.len()).await {
            Ok(entries) => {
                failures = patient_backoff();
                if shutdown.is_cancelled() {
                    hand_back(&worker, entries).await;
                    continue;
                }
                let read: Vec<_> = entries
                    .into_iter()
                    .map(|entry| {
                        let claim = claims.pop().expect("read at most one entry per free slot");
                        (entry, claim)
                    })
                    .collect();
                if !read.is_empty() {
                    steps.spawn(handle_read(worker.clone(), read));
                }
            }
            Err(transport::Error::NoGroup { .. }) => {
                tracing::warn!(
                    "consumer group missing: recreating it and asking for a rebuild from PostgreSQL"
                );
                worker.redis_lost.notify_one();
                if let Err(e) = engine.transport.ensure_group().await {
                    tracing::warn!(error = %e, "recreating the consumer group failed");
                }
            }
            Err(e) => {
                let delay = failures.next().unwrap_or(Duration::from_secs(2));
                tracing::warn!(error = %e, ?delay, "reading the step stream failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
        // Reap finished step tasks so the set does not grow.
        while steps.try_join_next().is_some() {}
    }

    tracing::info!(in_flight = steps.len(), grace = ?engine.config.worker.shutdown_grace, "worker draining");
    let drained = tokio::time::timeout(engine.config.worker.shutdown_grace, async {
        while steps.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // Past the grace: cancel the remaining steps, give them a moment to return, then stop
        // them. Their entries were never acknowledged: hand them back for another worker.
        worker.hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while steps.join_next().await.is_some() {}
        })
        .await;
        steps.abort_all();
        while steps.join_next().await.is_some() {}
        let ids: Vec<String> = worker
            .in_flight
            .lock()
            .expect("in-flight lock")
            .keys()
            .cloned()
            .collect();
        tracing::warn!(
            count = ids.len(),
            "handing back steps that did not finish within the shutdown grace"
        );
        hand_back_ids(&worker, ids).await;
    }
    background.cancel();
    while loops.join_next().await.is_some() {}
    committer_stop.cancel();
    let _ = committer_task.await;
    reader.close().await;
    tracing::info!(consumer = %worker.consumer, "worker stopped");
    Ok(())
}

/// Returns entries this consumer will not execute to the stream, for another consumer.
async fn hand_back(worker: &Worker, entries: Vec<Entry>) {
    let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    if let Err(e) = worker.engine.transport.republish(&entries).await {
        tracing::warn!(error = %e, "hand-back failed; the entries will be reclaimed after their lease");
        return;
    }
    let _ = worker.engine.transport.ack(&ids).await;
}

async fn hand_back_ids(worker: &Worker, ids: Vec<String>) {
    // Re-adding an entry needs its fields: read them back from the stream by id.
    let mut entries = Vec::new();
    for id in ids {
        match worker.engine.transport.entry(&id).await {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, entry = %id, "cannot read an entry to hand back; it will be reclaimed")
            }
        }
    }
    hand_back(worker, entries).await;
}

/// Renews the lease of running entries every third of the lease, and cancels the attempts of
/// runs that were cancelled meanwhile.
async fn lease_keeper(worker: Arc<Worker>, stop: CancellationToken) {
    let period = worker.engine.config.worker.lease / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let (ids, runs): (Vec<String>, Vec<RunId>) = {
            let map = worker.in_flight.lock().expect("in-flight lock");
            map.iter().map(|(id, (run, _))| (id.clone(), *run)).unzip()
        };
        if ids.is_empty() {
            continue;
        }
        if let Err(e) = worker.engine.transport.renew(&worker.consumer, &ids).await {
            tracing::warn!(error = %e, "lease renewal failed");
        }
        match worker.engine.store.run_statuses(&runs).await {
            Ok(statuses) => {
                let map = worker.in_flight.lock().expect("in-flight lock");
                for (run, cancel) in map.values() {
                    if statuses.get(run) == Some(&RunStatus::Cancelled) {
                        cancel.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "checking for cancelled runs failed"),
        }
    }
}

/// Sends an entry to the dead-letter stream with a reason, then acknowledges it.
pub(crate) async fn dead_letter(worker: &Worker, entry: &Entry, kind: DeadLetter, reason: &str) {
    tracing::warn!(entry = %entry.id, reason, "dead-lettering a stream entry");
    let mut backoff = patient_backoff().take(20);
    loop {
        match worker
            .engine
            .transport
            .dead_letter(&entry.id, &entry.fields, reason)
            .await
        {
            Ok(()) => {
                metrics::dead_lettered(kind);
                break;
            }
            Err(e) => match backoff.next() {
                Some(d) => {
                    tracing::warn!(error = %e, "dead-lettering failed; retrying");
                    tokio::time::sleep(d).await;
                }
                // Leave it pending: it will be reclaimed and dead-lettered again.
                None => return,
            },
        }
    }
    ack(worker, &entry.id).await;
}

/// Acknowledges an entry with the committer's next XACK (or at once if it has stopped).
async fn ack(worker: &Worker, id: &str) {
    if !worker.committer.ack(id).await {
        ack_now(worker, &[id.to_owned()]).await;
    }
}

/// Acknowledges entries with one XACK.
pub(crate) async fn ack_now(worker: &Worker, ids: &[String]) {
    if let Err(e) = worker.engine.transport.ack(ids).await {
        // Harmless: the entries are reclaimed later and found checkpointed.
        tracing::warn!(error = %e, count = ids.len(), "acknowledgement failed");
    }
}

/// An error that may go away if the operation is tried again.
trait Transient: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

impl Transient for crate::store::Error {
    fn is_transient(&self) -> bool {
        crate::store::Error::is_transient(self)
    }
}

impl Transient for Arc<crate::store::Error> {
    fn is_transient(&self) -> bool {
        crate::store::Error::is_transient(self)
    }
}

impl Transient for committer::Error {
    fn is_transient(&self) -> bool {
        committer::Error::is_transient(self)
    }
}

/// Retries a store operation through transient errors (PostgreSQL restarting) until it
/// succeeds, a permanent error occurs, or the worker is hard-stopped.
async fn patiently<T, E, F, Fut>(worker: &Worker, what: &str, mut op: F) -> Option<T>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = patient_backoff();
    loop {
        match op().await {
            Ok(v) => return Some(v),
            Err(e) if e.is_transient() && !worker.hard_stop.is_cancelled() => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(2));
                tracing::warn!(error = %e, ?delay, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "{what} failed; the entry stays pending and will be reclaimed");
                return None;
            }
        }
    }
}

/// Publishes steps until Redis takes them (it may be restarting).
pub(crate) async fn publish(worker: &Worker, dispatch: &[Dispatch]) -> bool {
    if dispatch.is_empty() {
        return true;
    }
    let mut backoff = patient_backoff();
    loop {
        match worker.engine.transport.publish(dispatch).await {
            Ok(_) => return true,
            Err(e) if !worker.hard_stop.is_cancelled() => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(2));
                tracing::warn!(error = %e, ?delay, "publishing successors failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(_) => return false,
        }
    }
}

/// The dependencies whose outputs a step needs, by stored name.
fn dependency_names(workflow: &Workflow, step: StepRef) -> Vec<&str> {
    match step {
        StepRef::Graph(i) => workflow
            .step(i)
            .deps
            .iter()
            .filter_map(|d| match d {
                Source::Step(d) => Some(workflow.step(*d).name.as_str()),
                Source::Input => None,
            })
            .collect(),
        StepRef::MapItem(..) | StepRef::Hook(_) => Vec::new(),
    }
}

/// The steps to publish again when a checkpointed step is delivered again: its successors
/// that are ready (the delivery may be the retry of a publish that never happened).
async fn successors_to_republish(
    worker: &Worker,
    workflow: &Workflow,
    msg: &Message,
    step: StepRef,
) -> Vec<Dispatch> {
    let index = match step {
        StepRef::Graph(i) | StepRef::MapItem(i, _) => i,
        StepRef::Hook(_) => return Vec::new(),
    };
    let mut names: Vec<String> = workflow
        .successors(index)
        .iter()
        .map(|&s| workflow.step(s).name.clone())
        .collect();
    if let StepRef::MapItem(..) = step {
        names = vec![workflow.step(index).name.clone()];
    }
    let store = worker.engine.store.clone();
    let run = msg.run_id;
    patiently(worker, "listing successors", || {
        let names = names.clone();
        let store = store.clone();
        async move { store.ready_successors(run, &names).await }
    })
    .await
    .unwrap_or_default()
    .into_iter()
    .map(|(step, attempt)| Dispatch {
        trace_context: msg.trace_context.clone(),
        run_id: run,
        workflow: workflow.name().to_owned(),
        step,
        attempt,
    })
    .collect()
}

/// A delivered entry that names a known workflow and step: its step can be loaded.
struct Delivery {
    entry: Entry,
    msg: Message,
    workflow: Arc<Workflow>,
    step: StepRef,
    /// Its claim on the worker's capacity, held until the entry is handled.
    claim: Claim,
}

/// Handles the entries of one read: decodes them, loads all their steps with one statement
/// (`Store::load_many`; a drain or a wide fan-out delivers tens of steps at once), then
/// handles each in a task of its own. Returns when all of them are handled.
async fn handle_read(worker: Arc<Worker>, read: Vec<(Entry, Claim)>) {
    let mut deliveries = Vec::with_capacity(read.len());
    for (entry, claim) in read {
        if let Some(d) = accept(&worker, entry, claim).await {
            deliveries.push(d);
        }
    }
    if deliveries.is_empty() {
        return;
    }
    let deps: Vec<Vec<&str>> = deliveries
        .iter()
        .map(|d| dependency_names(&d.workflow, d.step))
        .collect();
    let keys: Vec<(RunId, &str, &[&str])> = deliveries
        .iter()
        .zip(&deps)
        .map(|(d, deps)| (d.msg.run_id, d.msg.step.as_str(), deps.as_slice()))
        .collect();
    let store = &worker.engine.store;
    // On a permanent error the entries stay pending, to be reclaimed.
    let Some(loaded) = patiently(&worker, "loading steps", || store.load_many(&keys)).await else {
        return;
    };
    drop(keys);
    let mut tasks = JoinSet::new();
    for (delivery, loaded) in deliveries.into_iter().zip(loaded) {
        let worker = worker.clone();
        tasks.spawn(async move { handle(&worker, delivery, loaded).await });
    }
    while tasks.join_next().await.is_some() {}
}

/// Decodes an entry and resolves its workflow and step; dead-letters it if that fails.
async fn accept(worker: &Worker, entry: Entry, claim: Claim) -> Option<Delivery> {
    let msg = match entry.message() {
        Ok(m) => m,
        Err(malformed) => {
            dead_letter(
                worker,
                &entry,
                DeadLetter::Malformed,
                &malformed.to_string(),
            )
            .await;
            return None;
        }
    };
    let Ok(workflow) = worker.engine.registry.get(&msg.workflow).cloned() else {
        let reason = format!("unknown workflow {:?}", msg.workflow);
        dead_letter(worker, &entry, DeadLetter::UnknownWorkflow, &reason).await;
        return None;
    };
    let Some(step) = workflow.resolve(&msg.step) else {
        let reason = format!("workflow {:?} has no step {:?}", msg.workflow, msg.step);
        dead_letter(worker, &entry, DeadLetter::UnknownStep, &reason).await;
        return None;
    };
    Some(Delivery {
        entry,
        msg,
        workflow,
        step,
        claim,
    })
}

/// Handles one loaded delivery through to acknowledgement.
async fn handle(worker: &Worker, delivery: Delivery, loaded: Option<Loaded>) {
    let Delivery {
        entry,
        msg,
        workflow,
        step,
        mut claim,
    } = delivery;
    let Some(loaded) = loaded else {
        return dead_letter(
            worker,
            &entry,
            DeadLetter::UnknownRun,
            &format!("unknown run {}", msg.run_id),
        )
        .await;
    };
    if loaded.workflow != msg.workflow {
        return dead_letter(
            worker,
            &entry,
            DeadLetter::WrongWorkflow,
            &format!(
                "run {} belongs to workflow {:?}",
                msg.run_id, loaded.workflow
            ),
        )
        .await;
    }
    match loaded.step_status.as_deref() {
        None => {
            return dead_letter(
                worker,
                &entry,
                DeadLetter::NotReady,
                &format!("run {} has no step {:?} ready", msg.run_id, msg.step),
            )
            .await;
        }
        Some("completed") => {
            // A duplicate delivery: the checkpoint stands; make sure the successors went out.
            let again = successors_to_republish(worker, &workflow, &msg, step).await;
            if publish(worker, &again).await {
                ack(worker, &entry.id).await;
            }
            return;
        }
        Some("ready" | "waiting") if loaded.attempt == msg.attempt => {}
        // A stale attempt, or a failed, cancelled or expanded step: nothing to do.
        Some(_) => return ack(worker, &entry.id).await,
    }
    let is_hook = matches!(step, StepRef::Hook(_));
    if loaded.run_status != RunStatus::Running && !is_hook {
        return ack(worker, &entry.id).await;
    }
    execute(worker, &entry, &msg, &workflow, step, loaded, &mut claim).await;
}

/// How an attempt's result was recorded, and what is left to do.
enum Recorded {
    /// Committed. `Some`: these steps are still to publish, then the entry to acknowledge (a
    /// recorded failure); `None`: the committer did both.
    Committed(Option<Vec<Dispatch>>),
    /// Fenced; `acked`: the committer already acknowledged the entry.
    Fenced { acked: bool },
    /// The store stayed unavailable: the entry stays pending, to be reclaimed.
    Unrecorded,
}

async fn execute(
    worker: &Worker,
    entry: &Entry,
    msg: &Message,
    workflow: &Arc<Workflow>,
    step: StepRef,
    loaded: Loaded,
    claim: &mut Claim,
) {
    let index = match step {
        StepRef::Graph(i) | StepRef::MapItem(i, _) | StepRef::Hook(i) => i,
    };
    let def = workflow.step(index);
    let values = match inputs(workflow, step, &loaded) {
        Ok(v) => Some(v),
        Err(problem) => {
            tracing::error!(run = %msg.run_id, step = %msg.step, %problem, "step inputs are missing");
            None
        }
    };
    let span = step_span(worker, entry, msg, workflow);
    let cancel = worker.hard_stop.child_token();
    worker
        .in_flight
        .lock()
        .expect("in-flight lock")
        .insert(entry.id.clone(), (msg.run_id, cancel.clone()));
    let started_at = Utc::now();
    let clock = std::time::Instant::now();
    metrics::step_started(workflow.name(), &def.name);
    let result = match values {
        None => Err(StepError::fatal(
            "step inputs are missing from the checkpoints",
        )),
        Some(values) if loaded.version != workflow.version() => {
            drop(values);
            Err(StepError::fatal(format!(
                "run started with version {} of workflow {:?}; this engine runs version {}",
                loaded.version,
                workflow.name(),
                workflow.version()
            )))
        }
        Some(values) => {
            let ctx = StepContext {
                run_id: msg.run_id,
                workflow: Arc::from(workflow.name()),
                step: Arc::from(msg.step.as_str()),
                attempt: msg.attempt,
                attempts_left: def
                    .options
                    .retry
                    .max_attempts
                    .get()
                    .saturating_sub(msg.attempt.saturating_sub(loaded.attempt_base)),
                item: match step {
                    StepRef::MapItem(_, item) => Some(item),
                    _ => None,
                },
                cancel: cancel.clone(),
                resources: Arc::clone(&worker.engine.resources),
            };
            let future = (def.function())(ctx, values);
            // Spawned so that a panic in user code fails the attempt, not the worker.
            let mut task = tokio::spawn(future.instrument(span.clone()));
            match tokio::time::timeout(def.options.timeout, &mut task).await {
                Ok(Ok(result)) => result,
                Ok(Err(join)) if join.is_panic() => Err(StepError::retryable(format!(
                    "step panicked: {}",
                    panic_message(join)
                ))),
                Ok(Err(_)) => Err(StepError::retryable("step was aborted")),
                Err(_) => {
                    task.abort();
                    Err(StepError::retryable(format!(
                        "step timed out after {:?}",
                        def.options.timeout
                    )))
                }
            }
        }
    };
    claim.release_slot();
    if worker.hard_stop.is_cancelled() {
        // Shutting down past the grace: leave the entry pending for the hand-back.
        metrics::step_finished(
            workflow.name(),
            &def.name,
            Outcome::Interrupted,
            clock.elapsed(),
        );
        return;
    }
    let store = worker.engine.store.clone();
    let checkpoint_span = tracing::info_span!(parent: &span, "workflow.checkpoint");
    let mut recorded = Outcome::Succeeded;
    let record = match result {
        Ok(output) => {
            span.record("workflow.step.outcome", "succeeded");
            let done = Completed {
                run_id: msg.run_id,
                step: msg.step.clone(),
                attempt: msg.attempt,
                output,
                started_at,
                worker: worker.consumer.clone(),
            };
            let committed = patiently(worker, "committing a checkpoint", || {
                worker.committer.checkpoint(
                    workflow.clone(),
                    done.clone(),
                    entry.id.clone(),
                    span.clone(),
                )
            })
            .instrument(checkpoint_span)
            .await;
            match committed {
                Some(Checkpointed::Committed { .. }) => Recorded::Committed(None),
                Some(Checkpointed::Fenced) => Recorded::Fenced { acked: true },
                None => Recorded::Unrecorded,
            }
        }
        Err(error) => {
            let used = msg.attempt.saturating_sub(loaded.attempt_base);
            let retry_after = (error.is_retryable() && used < def.options.retry.max_attempts.get())
                .then(|| {
                    let backoff = def.options.retry.delay_after(used);
                    error
                        .retry_after()
                        .map_or(backoff, |asked| asked.max(backoff))
                });
            tracing::info!(parent: &span, run = %msg.run_id, step = %msg.step, attempt = msg.attempt, %error, retry = retry_after.is_some(), "step attempt failed");
            let failure = Failure {
                run_id: msg.run_id,
                step: msg.step.clone(),
                attempt: msg.attempt,
                error: error.message().to_owned(),
                retry_after,
                started_at: Some(started_at),
                retry_event: "step_retried",
            };
            span.record(
                "workflow.step.outcome",
                if retry_after.is_some() {
                    "retrying"
                } else {
                    "failed"
                },
            );
            span.record("otel.status_code", "ERROR");
            span.record("error.message", error.message());
            recorded = if retry_after.is_some() {
                Outcome::Retried
            } else {
                Outcome::Failed
            };
            let outcome = patiently(worker, "recording a failure", || {
                store.fail(workflow, &failure)
            })
            .instrument(checkpoint_span)
            .await;
            if retry_after.is_none() && matches!(outcome, Some(Some(_))) {
                let reason = format!("step failed after {used} attempt(s): {}", error.message());
                if worker
                    .engine
                    .transport
                    .dead_letter(&entry.id, &entry.fields, &reason)
                    .await
                    .is_ok()
                {
                    metrics::dead_lettered(DeadLetter::StepFailed);
                }
            }
            match outcome {
                Some(Some(dispatch)) => Recorded::Committed(Some(dispatch)),
                Some(None) => Recorded::Fenced { acked: false },
                None => Recorded::Unrecorded,
            }
        }
    };
    worker
        .in_flight
        .lock()
        .expect("in-flight lock")
        .remove(&entry.id);
    let recorded = match record {
        Recorded::Committed(_) => recorded,
        Recorded::Fenced { .. } => Outcome::Fenced,
        Recorded::Unrecorded => Outcome::Unrecorded,
    };
    metrics::step_finished(workflow.name(), &def.name, recorded, clock.elapsed());
    match record {
        // Committed: publish what it readied, then acknowledge. (If publishing never
        // succeeds, the entry stays pending: its redelivery re-publishes the successors.)
        Recorded::Committed(Some(dispatch))
            if publish(worker, &dispatch)
                .instrument(
                    tracing::info_span!(parent: &span, "workflow.publish", count = dispatch.len()),
                )
                .await =>
        {
            ack(worker, &entry.id).await
        }
        Recorded::Committed(_) => {}
        // Fenced: a newer attempt owns the step, or it is already checkpointed or cancelled.
        Recorded::Fenced { acked } => {
            span.record("workflow.step.outcome", "fenced");
            tracing::info!(parent: &span, run = %msg.run_id, step = %msg.step, attempt = msg.attempt, "attempt fenced: its result is discarded");
            if !acked {
                ack(worker, &entry.id).await;
            }
        }
        // The store stayed unavailable: leave the entry pending, to be reclaimed.
        Recorded::Unrecorded => {}
    }
}

/// The span of one attempt, a child of the run's span carried by the entry.
fn step_span(worker: &Worker, entry: &Entry, msg: &Message, workflow: &Workflow) -> tracing::Span {
    // A stream id starts with the milliseconds at which the entry was added.
    let added_ms = entry
        .id
        .split('-')
        .next()
        .and_then(|ms| ms.parse::<i64>().ok());
    let queue_wait_ms = added_ms
        .map(|ms| (Utc::now().timestamp_millis() - ms).max(0))
        .unwrap_or(0);
    let span = tracing::info_span!(
        "workflow.step",
        workflow.name = %msg.workflow,
        workflow.version = workflow.version(),
        workflow.run.id = %msg.run_id,
        workflow.step.name = %msg.step,
        workflow.step.attempt = msg.attempt,
        workflow.step.queue_wait_ms = queue_wait_ms,
        workflow.step.outcome = tracing::field::Empty,
        messaging.consumer.name = %worker.consumer,
        otel.status_code = tracing::field::Empty,
        error.message = tracing::field::Empty,
    );
    if let Some(tp) = &msg.trace_context {
        crate::telemetry::propagation::set_parent(&span, tp);
    }
    span
}

fn inputs(workflow: &Workflow, step: StepRef, loaded: &Loaded) -> Result<Vec<Value>, String> {
    match step {
        StepRef::Graph(i) => workflow
            .step(i)
            .deps
            .iter()
            .map(|d| match d {
                Source::Input => Ok(loaded.run_input.clone()),
                Source::Step(d) => {
                    let name = &workflow.step(*d).name;
                    loaded
                        .deps
                        .get(name)
                        .cloned()
                        .ok_or_else(|| format!("no checkpoint of dependency {name:?}"))
                }
            })
            .collect(),
        StepRef::MapItem(..) | StepRef::Hook(_) => loaded
            .step_input
            .clone()
            .map(|v| vec![v])
            .ok_or_else(|| "no stored input".to_owned()),
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    let payload = join.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}
