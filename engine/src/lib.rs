//! Tributary: a durable workflow engine.
//!
//! Workflows are typed step graphs ([`workflow`]). Their steps travel as entries of Redis
//! Streams ([`transport`]) and each step's result is checkpointed in PostgreSQL ([`store`]),
//! the source of truth. The [`runtime`] ties them together: it starts runs, executes steps,
//! retries, reclaims and recovers. [`cli`] is the `tributary` command line.
//! [`ratelimit`] keeps calls to external APIs under their quotas across all processes.
//!
//! Strata, from the bottom: `ids`, `workflow` (no I/O) → `store`, `transport` (one backend
//! each) → `runtime` → `cli`.

pub mod cli;
pub mod config;
pub mod http;
pub mod ids;
pub mod ratelimit;
pub mod runtime;
pub mod secrets;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod transport;
pub mod workflow;
