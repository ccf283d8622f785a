//! The step loader: one task per worker process that loads the steps about to run together
//! (typically the entries of one read) with one statement (`Store::load_many`) instead of one
//! each. A lone request uses `Store::load`, whose statements PostgreSQL keeps planned.
//!
//! Why: a `load` is one round trip and, for a step with dependencies, one planning per step;
//! a drain or a wide fan-out starts tens of steps at once (`docs/benchmarks.md`).
//!
//! Requests that are queued when the loader wakes up form one batch; each batch runs in a task
//! of its own, so a slow batch never holds up the next one. If the loader has stopped, the
//! caller loads by itself.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::ids::RunId;
use crate::store::{self, Loaded, Store};

/// Most steps loaded by one statement.
const BATCH: usize = 256;

type Reply = oneshot::Sender<Result<Option<Loaded>, Arc<store::Error>>>;

struct Request {
    run: RunId,
    step: String,
    deps: Vec<String>,
    reply: Reply,
}

/// The cheap handle the step tasks use.
#[derive(Debug, Clone)]
pub(crate) struct Loader {
    requests: mpsc::UnboundedSender<Request>,
}

/// The receiving end, consumed by [`run`].
pub(crate) struct Requests(mpsc::UnboundedReceiver<Request>);

impl Loader {
    pub(crate) fn new() -> (Self, Requests) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { requests: tx }, Requests(rx))
    }

    /// Loads a step (as [`Store::load`]), batched with the loads queued at the same time.
    pub(crate) async fn load(
        &self,
        store: &Store,
        run: RunId,
        step: &str,
        deps: &[&str],
    ) -> Result<Option<Loaded>, Arc<store::Error>> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            run,
            step: step.to_owned(),
            deps: deps.iter().map(|d| (*d).to_owned()).collect(),
            reply,
        };
        if self.requests.send(request).is_ok()
            && let Ok(result) = answer.await
        {
            return result;
        }
        // The loader has stopped (the worker is shutting down): load directly.
        store.load(run, step, deps).await.map_err(Arc::new)
    }
}

/// The loader loop; returns when every handle is gone, after the batches in flight.
pub(crate) async fn run(store: Store, Requests(mut requests): Requests) {
    let mut batches = JoinSet::new();
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH
            && let Ok(more) = requests.try_recv()
        {
            batch.push(more);
        }
        let store = store.clone();
        batches.spawn(async move { load(&store, batch).await });
        while batches.try_join_next().is_some() {}
    }
    while batches.join_next().await.is_some() {}
}

async fn load(store: &Store, batch: Vec<Request>) {
    if let [one] = batch.as_slice() {
        let deps: Vec<&str> = one.deps.iter().map(String::as_str).collect();
        let result = store
            .load(one.run, &one.step, &deps)
            .await
            .map_err(Arc::new);
        if let Some(one) = batch.into_iter().next() {
            let _ = one.reply.send(result);
        }
        return;
    }
    let deps: Vec<Vec<&str>> = batch
        .iter()
        .map(|r| r.deps.iter().map(String::as_str).collect())
        .collect();
    let keys: Vec<(RunId, &str, &[&str])> = batch
        .iter()
        .zip(&deps)
        .map(|(r, d)| (r.run, r.step.as_str(), d.as_slice()))
        .collect();
    match store.load_many(&keys).await {
        Ok(loaded) => {
            for (request, loaded) in batch.into_iter().zip(loaded) {
                let _ = request.reply.send(Ok(loaded));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for request in batch {
                let _ = request.reply.send(Err(e.clone()));
            }
        }
    }
}
