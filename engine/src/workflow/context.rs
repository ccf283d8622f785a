//! What a running step can see of its run: identity, attempt, and cancellation.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Resources, StepError};
use crate::ids::{Attempt, RunId};

/// Passed to every step function.
///
/// It carries no connection to Redis or PostgreSQL: a step's effects go through its own clients
/// (handed to it as [`Resources`] by the deployment), and its result through its return value.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub(crate) run_id: RunId,
    pub(crate) workflow: Arc<str>,
    pub(crate) step: Arc<str>,
    pub(crate) attempt: Attempt,
    pub(crate) attempts_left: u32,
    pub(crate) item: Option<usize>,
    pub(crate) cancel: CancellationToken,
    pub(crate) resources: Arc<Resources>,
}

impl StepContext {
    /// A context for calling a step function directly, e.g. in a unit test.
    pub fn detached(step: &str) -> Self {
        Self {
            run_id: RunId::new(),
            workflow: Arc::from("detached"),
            step: Arc::from(step),
            attempt: 1,
            attempts_left: 0,
            item: None,
            cancel: CancellationToken::new(),
            resources: Arc::default(),
        }
    }

    /// The same context with these resources, e.g. to unit-test a step that needs a client.
    pub fn with_resources(mut self, resources: Resources) -> Self {
        self.resources = Arc::new(resources);
        self
    }

    /// The run this attempt belongs to.
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    /// The workflow's name.
    pub fn workflow(&self) -> &str {
        &self.workflow
    }

    /// The step's name (`name[i]` for the i-th item of a map step).
    pub fn step(&self) -> &str {
        &self.step
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> Attempt {
        self.attempt
    }

    /// How many more attempts the retry policy allows if this one fails retryably: 0 on the
    /// last attempt (counted from the run's last manual retry, so `tributary retry` gives a
    /// step its full policy again). A step that should give up gracefully, say by recording
    /// what is missing instead of failing, checks it. 0 for a detached context.
    pub fn attempts_left(&self) -> u32 {
        self.attempts_left
    }

    /// For an item of a map step, its index in the mapped list.
    pub fn item_index(&self) -> Option<usize> {
        self.item
    }

    /// `true` once the run has been cancelled (or the worker is shutting down past its grace
    /// period). A long step should check it and return early.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the run is cancelled; use it in a `tokio::select!` with the step's work.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// The deployment's resource of type `T` (see [`Resources`]).
    ///
    /// # Errors
    /// A fatal [`StepError`] naming the type when the process was started without it: a
    /// deployment mistake that no retry can fix.
    pub fn resource<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, StepError> {
        self.resources.get::<T>().ok_or_else(|| {
            StepError::fatal(format!(
                "this worker has no resource {}: the deployment's setup did not provide it",
                std::any::type_name::<T>()
            ))
        })
    }
}
