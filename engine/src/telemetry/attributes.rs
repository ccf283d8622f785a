//! Span names and attribute keys, in one place. Names follow the OpenTelemetry semantic
//! conventions where they exist (`error.type`, `messaging.*`); the rest live under
//! `workflow.*`.

/// The span of a run's start: the root of the run's trace.
pub const RUN_SPAN: &str = "workflow.run";
/// The span of one attempt at one step.
pub const STEP_SPAN: &str = "workflow.step";
/// The checkpoint commit inside a step attempt.
pub const CHECKPOINT_SPAN: &str = "workflow.checkpoint";
/// The publish of the successors a checkpoint readied.
pub const PUBLISH_SPAN: &str = "workflow.publish";

/// The workflow's name.
pub const WORKFLOW_NAME: &str = "workflow.name";
/// The workflow's version.
pub const WORKFLOW_VERSION: &str = "workflow.version";
/// The run id.
pub const RUN_ID: &str = "workflow.run.id";
/// The step's stored name.
pub const STEP: &str = "workflow.step.name";
/// The attempt number.
pub const ATTEMPT: &str = "workflow.step.attempt";
/// `succeeded`, `retrying`, `failed`, `fenced`.
pub const OUTCOME: &str = "workflow.step.outcome";
/// Milliseconds between the entry's publication and the start of the attempt.
pub const QUEUE_WAIT_MS: &str = "workflow.step.queue_wait_ms";
/// The error message of a failed attempt.
pub const ERROR_MESSAGE: &str = "error.message";
/// The consumer that ran the attempt.
pub const CONSUMER: &str = "messaging.consumer.name";
