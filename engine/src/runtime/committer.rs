//! The group committer: one task per worker process that commits the checkpoints of many
//! attempts in one PostgreSQL transaction, then publishes all the successors they readied in
//! one pipelined round of XADDs and acknowledges all their entries with one XACK. It also
//! gathers the other acknowledgements of the hot path (duplicate deliveries, stale attempts,
//! retries, dead letters) into that XACK.
//!
//! Why: a per-step transaction costs a commit (a WAL flush) and BEGIN/COMMIT round trips for
//! every step; a batch pays them once (`docs/decisions.md`, "Group commit").
//!
//! Flush policy: the committer takes the first request, then whatever else is queued, and, when
//! `worker.checkpoint-delay` is not zero, waits up to that long for more; it stops at
//! `worker.checkpoint-batch` checkpoints. Up to [`COMMITS_IN_FLIGHT`] batches commit at once
//! (each in a task of its own, with its publish and acknowledgement); when all are busy, the
//! next batch gathers meanwhile, so the batch size follows the load.
//!
//! **Architecture Invariant 2 holds for each member:** an entry is acknowledged only after the
//! transaction holding its checkpoint committed and the successors it readied were published.
//! A fenced member is acknowledged (as before, it has nothing to publish); a batch that fails
//! (a query error) acknowledges none of its checkpoints and hands the error to every member,
//! whose `patiently` retries apply. A permanent error of a batch of several is retried one
//! member per transaction, so one bad member can't hold back the others.
//!
//! It knows the store and the transport through the [`Worker`]; it knows nothing of how steps
//! execute.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::worker::{Worker, ack_now, publish};
use crate::store::{self, Completed, Dispatch};
use crate::workflow::Workflow;

/// Batches committing at once. One alone leaves the CPUs idle while its transaction waits on
/// round trips (measured: a 1-worker drain went 25 % slower than per-step transactions); the
/// run locks, taken in run-id order, keep concurrent batches from deadlocking.
pub(crate) const COMMITS_IN_FLIGHT: usize = 4;

/// What became of a checkpoint handed to the committer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkpointed {
    /// Committed. `published`: its successors went out and its entry was acknowledged; if not
    /// (the worker was hard-stopped while Redis was unreachable), the entry stays pending and
    /// its redelivery publishes them.
    Committed { published: bool },
    /// The attempt was fenced (the step moved on); its entry was acknowledged.
    Fenced,
}

/// Why a checkpoint was not recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Error {
    /// The batch's transaction failed; every member of the batch gets this.
    #[error(transparent)]
    Store(Arc<store::Error>),
    /// The committer task is gone (the worker is stopping): the entry stays pending.
    #[error("the checkpoint committer has stopped")]
    Stopped,
}

impl Error {
    /// Whether trying again may succeed (a transient store error).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => e.is_transient(),
            Self::Stopped => false,
        }
    }
}

/// Flush policy of the committer (from `WorkerConfig`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// At most this many checkpoints per transaction.
    pub(crate) batch: usize,
    /// How long the first checkpoint of a batch waits for others (zero: only what is queued).
    pub(crate) delay: Duration,
}

/// One completed attempt to checkpoint.
struct Member {
    workflow: Arc<Workflow>,
    done: Completed,
    entry: String,
    /// The attempt's span: the publish span is its child.
    span: tracing::Span,
    reply: oneshot::Sender<Result<Checkpointed, Error>>,
}

/// The closed set of requests the committer loop handles.
enum Request {
    Checkpoint(Member),
    /// Acknowledge this entry with the next XACK; the sender learns when it was sent.
    Ack {
        entry: String,
        sent: oneshot::Sender<()>,
    },
}

/// The cheap handle the step tasks use.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    requests: mpsc::UnboundedSender<Request>,
}

/// The receiving end, consumed by [`run`].
pub(crate) struct Requests(mpsc::UnboundedReceiver<Request>);

impl Committer {
    pub(crate) fn new() -> (Self, Requests) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { requests: tx }, Requests(rx))
    }

    /// Hands a completed attempt over and waits until its checkpoint committed (and its
    /// successors were published and its entry acknowledged) or was fenced.
    pub(crate) async fn checkpoint(
        &self,
        workflow: Arc<Workflow>,
        done: Completed,
        entry: String,
        span: tracing::Span,
    ) -> Result<Checkpointed, Error> {
        let (reply, outcome) = oneshot::channel();
        let member = Member {
            workflow,
            done,
            entry,
            span,
            reply,
        };
        self.requests
            .send(Request::Checkpoint(member))
            .map_err(|_| Error::Stopped)?;
        outcome.await.map_err(|_| Error::Stopped)?
    }

    /// Acknowledges an entry with the committer's next XACK. `false` when the committer is
    /// gone: the caller acknowledges it itself.
    pub(crate) async fn ack(&self, entry: &str) -> bool {
        let (sent, done) = oneshot::channel();
        let request = Request::Ack {
            entry: entry.to_owned(),
            sent,
        };
        self.requests.send(request).is_ok() && done.await.is_ok()
    }
}

/// The committer loop; returns when `stop` is cancelled, after the batches being published.
pub(crate) async fn run(
    worker: Arc<Worker>,
    Requests(mut requests): Requests,
    policy: Policy,
    stop: CancellationToken,
) {
    let mut batches = JoinSet::new();
    let slots = Arc::new(Semaphore::new(COMMITS_IN_FLIGHT));
    loop {
        let first = tokio::select! {
            request = requests.recv() => match request {
                Some(r) => r,
                None => break,
            },
            _ = stop.cancelled() => break,
        };
        // While every slot is busy, requests queue up and join this batch.
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let mut members = Vec::new();
        let mut acks = Vec::new();
        let mut take = |request: Request, members: &mut Vec<Member>| match request {
            Request::Checkpoint(m) => members.push(m),
            Request::Ack { entry, sent } => acks.push((entry, sent)),
        };
        take(first, &mut members);
        let deadline = tokio::time::Instant::now() + policy.delay;
        while members.len() < policy.batch {
            match requests.try_recv() {
                Ok(r) => take(r, &mut members),
                // Only a batch with a checkpoint waits for company; acknowledgements alone go
                // out at once.
                Err(mpsc::error::TryRecvError::Empty)
                    if !policy.delay.is_zero() && !members.is_empty() =>
                {
                    match tokio::time::timeout_at(deadline, requests.recv()).await {
                        Ok(Some(r)) => take(r, &mut members),
                        _ => break,
                    }
                }
                Err(_) => break,
            }
        }
        let worker = worker.clone();
        batches.spawn(async move {
            let results = commit(&worker, &members).await;
            // Failed members learn it now, so their retries need not wait for Redis.
            let mut committed = Vec::with_capacity(members.len());
            for (member, result) in members.into_iter().zip(results) {
                match result {
                    Ok(dispatch) => committed.push((member, dispatch)),
                    Err(e) => {
                        let _ = member.reply.send(Err(e));
                    }
                }
            }
            drop(slot);
            publish_and_ack(worker, committed, acks).await;
        });
        while batches.try_join_next().is_some() {}
    }
    while batches.join_next().await.is_some() {}
}

/// Commits the members' checkpoints in one transaction. A permanent error of a batch of several
/// is retried one member per transaction, so that it fails only the member that causes it.
async fn commit(worker: &Worker, members: &[Member]) -> Vec<Result<Option<Vec<Dispatch>>, Error>> {
    if members.is_empty() {
        return Vec::new();
    }
    let store = &worker.engine.store;
    let batch: Vec<(&Workflow, &Completed)> = members
        .iter()
        .map(|m| (m.workflow.as_ref(), &m.done))
        .collect();
    match store.complete_batch(&batch).await {
        Ok(results) => results.into_iter().map(Ok).collect(),
        Err(e) if e.is_transient() || members.len() == 1 => {
            let e = Error::Store(Arc::new(e));
            members.iter().map(|_| Err(e.clone())).collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, count = members.len(), "a batch of checkpoints failed; committing its members one by one");
            let mut results = Vec::with_capacity(members.len());
            for one in &batch {
                results.push(
                    match store.complete_batch(std::slice::from_ref(one)).await {
                        Ok(mut r) => Ok(r.pop().flatten()),
                        Err(e) => Err(Error::Store(Arc::new(e))),
                    },
                );
            }
            results
        }
    }
}

/// After the commit: publishes every successor the batch readied (one pipelined round), then
/// acknowledges the committed and fenced entries and the gathered acknowledgements (one
/// XACK), then tells each member.
async fn publish_and_ack(
    worker: Arc<Worker>,
    committed: Vec<(Member, Option<Vec<Dispatch>>)>,
    acks: Vec<(String, oneshot::Sender<()>)>,
) {
    let mut dispatch = Vec::new();
    // Each committed attempt gets its publish span, open while the batch publishes.
    let mut spans = Vec::new();
    for (member, readied) in &committed {
        if let Some(readied) = readied {
            spans.push(tracing::info_span!(parent: &member.span, "workflow.publish", count = readied.len()));
            dispatch.extend(readied.iter().cloned());
        }
    }
    let published = publish(&worker, &dispatch).await;
    drop(spans);
    let mut ids: Vec<String> = acks.iter().map(|(id, _)| id.clone()).collect();
    for (member, readied) in &committed {
        if readied.is_none() || published {
            ids.push(member.entry.clone());
        }
    }
    ack_now(&worker, &ids).await;
    for (member, readied) in committed {
        let outcome = match readied {
            Some(_) => Checkpointed::Committed { published },
            None => Checkpointed::Fenced,
        };
        let _ = member.reply.send(Ok(outcome));
    }
    for (_, sent) in acks {
        let _ = sent.send(());
    }
}
