//! The runtime: starts runs, executes steps, retries, reclaims and recovers.
//!
//! [`Engine`] is the cheap-to-clone handle (client API and worker entry point). A worker
//! process runs [`Engine::run_worker`], which spawns:
//! - the consumer (`worker.rs`): reads entries for its free slots, loads the steps of one read
//!   with one statement, executes them, commits checkpoints, publishes successors, then
//!   acknowledges; a step's slot is free again when its function returns, and its entry is
//!   held on (at most [`HELD_PER_SLOT`] per slot) until acknowledged;
//! - the group committer (`committer.rs`): commits the checkpoints of many attempts in one
//!   transaction, publishes their successors in one round and acknowledges them with one XACK;
//! - the lease keeper (`worker.rs`): renews the entries of running steps and cancels steps of
//!   cancelled runs;
//! - the maintenance loops (`maintenance.rs`): due-time poller, reclaimer, epoch watchdog
//!   (rebuilds Redis from PostgreSQL), retention and stream trimming;
//! - the cron scheduler (`scheduler.rs`): starts one run per schedule tick.

mod committer;
mod engine;
mod maintenance;
mod scheduler;
mod worker;

pub use engine::{Engine, Error, StartOptions};
pub use scheduler::Scheduled;
pub(crate) use scheduler::tick_key;
pub use worker::HELD_PER_SLOT;
