//! The workflow-definition API: typed step graphs, step errors, options and the registry.
//!
//! **Architecture Invariant:** nothing here knows of Redis or PostgreSQL. A workflow is plain
//! Rust: async functions wired by typed [`Handle`]s. The runtime erases the types to JSON and
//! drives the graph; this module only describes it.

mod builder;
mod context;
mod error;
mod policy;
mod registry;
mod resources;
mod schedule;

#[doc(hidden)]
pub use builder::Source;
pub(crate) use builder::StepRef;
pub use builder::{Deps, Handle, ON_FAILURE, ON_SUCCESS, RunOutcome, Workflow, WorkflowBuilder};
pub use context::StepContext;
pub use error::{Classify, Error, ErrorKind, ResultExt, StepError};
pub use policy::{RetryPolicy, StepOptions};
pub use registry::Registry;
pub use resources::Resources;
pub use schedule::{Schedule, ScheduleSpec, Tick, parse_cron};
