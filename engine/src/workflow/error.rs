//! Errors of the definition API: what a step returns when it fails ([`StepError`]), and what
//! building or registering a workflow returns when the definition is invalid ([`Error`]).

use std::fmt;
use std::time::Duration;

/// Whether a failed attempt is worth another try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A transient failure (network, 5xx, timeout): the step is retried while its
    /// [`RetryPolicy`](super::RetryPolicy) allows.
    Retryable,
    /// A permanent failure (bad input, 4xx, corrupt data): the step fails at once.
    Fatal,
}

/// The error a step returns.
///
/// Whether to retry is decided by the error's type: implement [`Classify`] for your own error
/// type and `?` converts it, or mark a foreign error at the call site with
/// [`ResultExt::retryable`] / [`ResultExt::fatal`].
///
/// # Example
/// ```
/// use tributary::workflow::{ResultExt, StepError};
///
/// fn parse(raw: &str) -> Result<u32, StepError> {
///     let n: u32 = raw.parse().fatal()?; // garbage input will not improve on retry
///     Ok(n)
/// }
/// assert!(!parse("x").unwrap_err().is_retryable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    kind: ErrorKind,
    message: String,
    retry_after: Option<Duration>,
}

impl StepError {
    /// A transient failure: retried while the retry policy allows.
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Retryable,
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// A transient failure that should not be retried before `delay` has passed (an API's
    /// `Retry-After`, a spent daily quota). The retry waits for the longer of `delay` and the
    /// policy's back-off, as due-time state in PostgreSQL, not inside the worker.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tributary::workflow::StepError;
    ///
    /// let e = StepError::retryable_after("quota spent", Duration::from_secs(3600));
    /// assert_eq!(e.retry_after(), Some(Duration::from_secs(3600)));
    /// ```
    pub fn retryable_after(message: impl fmt::Display, delay: Duration) -> Self {
        Self {
            retry_after: Some(delay),
            ..Self::retryable(message)
        }
    }

    /// A permanent failure: the step fails without further attempts.
    pub fn fatal(message: impl fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Fatal,
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }

    /// Retryable or fatal.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message, as stored in the run's audit trail.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The earliest time another attempt is worth making, when the failure said so.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::Retryable => "retryable",
            ErrorKind::Fatal => "fatal",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

/// An error type that knows whether it is transient.
///
/// Implementing it lets `?` turn the error into a [`StepError`] of the right kind.
///
/// ```
/// use tributary::workflow::{Classify, StepError};
///
/// #[derive(Debug)]
/// enum FetchError { Timeout, NotFound }
/// impl std::fmt::Display for FetchError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{self:?}") }
/// }
/// impl Classify for FetchError {
///     fn is_retryable(&self) -> bool { matches!(self, FetchError::Timeout) }
/// }
///
/// fn fetch() -> Result<(), StepError> { Err(FetchError::NotFound)? }
/// assert!(!fetch().unwrap_err().is_retryable());
/// ```
pub trait Classify: fmt::Display {
    /// `true` when another attempt may succeed.
    fn is_retryable(&self) -> bool;

    /// How long to wait at least before the next attempt, when the error knows (a
    /// `Retry-After`). Default: no opinion.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

impl<E: Classify> From<E> for StepError {
    fn from(error: E) -> Self {
        let kind = if error.is_retryable() {
            ErrorKind::Retryable
        } else {
            ErrorKind::Fatal
        };
        Self {
            kind,
            message: error.to_string(),
            retry_after: error.retry_after(),
        }
    }
}

/// Marks a foreign error as retryable or fatal where it happens.
pub trait ResultExt<T> {
    /// A failure here is transient.
    fn retryable(self) -> Result<T, StepError>;
    /// A failure here is permanent.
    fn fatal(self) -> Result<T, StepError>;
}

impl<T, E: fmt::Display> ResultExt<T> for Result<T, E> {
    fn retryable(self) -> Result<T, StepError> {
        self.map_err(StepError::retryable)
    }

    fn fatal(self) -> Result<T, StepError> {
        self.map_err(StepError::fatal)
    }
}

/// An invalid workflow definition or registry, reported at start-up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A workflow or step name is empty or uses characters outside `[A-Za-z0-9_.-]`.
    #[error("invalid {what} name {name:?}: use 1 to 100 characters from [A-Za-z0-9_.-]")]
    InvalidName {
        /// "workflow" or "step".
        what: &'static str,
        /// The offending name.
        name: String,
    },
    /// Two steps of one workflow share a name.
    #[error("workflow {workflow:?} defines step {step:?} twice")]
    DuplicateStep {
        /// The workflow.
        workflow: String,
        /// The repeated step name.
        step: String,
    },
    /// A step name that the engine reserves (`on_success`, `on_failure`).
    #[error("workflow {workflow:?}: step name {step:?} is reserved for run hooks")]
    ReservedStep {
        /// The workflow.
        workflow: String,
        /// The reserved name.
        step: String,
    },
    /// A handle from another workflow's builder was passed as a dependency.
    #[error("workflow {workflow:?}: step {step:?} depends on a handle of another workflow builder")]
    ForeignHandle {
        /// The workflow.
        workflow: String,
        /// The step whose dependency is foreign.
        step: String,
    },
    /// The workflow has no steps.
    #[error("workflow {workflow:?} has no steps")]
    Empty {
        /// The workflow.
        workflow: String,
    },
    /// A step option is out of range.
    #[error("workflow {workflow:?}, step {step:?}: {problem}")]
    InvalidOption {
        /// The workflow.
        workflow: String,
        /// The step.
        step: String,
        /// What is wrong.
        problem: String,
    },
    /// A schedule's cron expression or time zone is invalid.
    #[error("schedule {schedule:?}: {problem}")]
    InvalidSchedule {
        /// The schedule.
        schedule: String,
        /// What is wrong.
        problem: String,
    },
    /// Two schedules share a name.
    #[error("schedule {0:?} is declared twice")]
    DuplicateSchedule(String),
    /// Two registered workflows share a name.
    #[error("workflow {0:?} is registered twice")]
    DuplicateWorkflow(String),
    /// A workflow name that is not registered.
    #[error("unknown workflow {name:?}; registered workflows: {known}")]
    UnknownWorkflow {
        /// The requested name.
        name: String,
        /// The registered names, comma separated.
        known: String,
    },
    /// The input does not match the workflow's input type.
    #[error("input for workflow {workflow:?} does not match its input type: {problem}")]
    InvalidInput {
        /// The workflow.
        workflow: String,
        /// The decode error.
        problem: String,
    },
}
