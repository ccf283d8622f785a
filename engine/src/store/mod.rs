//! The PostgreSQL store: runs, step checkpoints, due-time state and the audit trail.
//!
//! **Architecture Invariant:** this is the source of truth. A checkpoint commits at most once
//! per (run, step): every state change of a step is an `UPDATE … WHERE attempt = $attempt AND
//! status IN (…)`, so a stale or duplicate attempt changes nothing (it is *fenced*). Successors
//! become ready in the same transaction as the checkpoint that readies them.
//!
//! It knows the shape of a [`Workflow`] graph (to decide what becomes ready), but nothing of
//! Redis: what it returns as [`Dispatch`]es is for the caller to publish.

mod batch;
mod error;
mod postgres;

pub use error::Error;
pub use error::redact_url; // also used by the transport and the sources
pub use postgres::{
    Completed, Dispatch, EventRow, Failure, Loaded, NewRun, RunStatus, RunView, StartedRun,
    StepView, Store,
};

#[allow(unused_imports)]
use crate::workflow::Workflow;
