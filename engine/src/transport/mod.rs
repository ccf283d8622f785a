//! The stream transport: Redis Streams through `fred`, and nothing else of Redis.
//!
//! Steps travel as entries of one stream read through one consumer group; each worker process
//! is a consumer with a name unique to its start. Failed steps end up on a dead-letter stream.
//! This module knows the wire format of an entry ([`Message`]) but not what a step does.
//!
//! **Architecture Invariant:** nothing here is the only copy of anything. PostgreSQL can
//! rebuild every entry (see `runtime::recovery`), so a flushed Redis loses no run.

mod error;
mod message;
mod redis;

pub use error::Error;
pub use message::{Malformed, Message};
pub use redis::{Entry, Keys, Pending, Reader, Transport, TransportConfig};
