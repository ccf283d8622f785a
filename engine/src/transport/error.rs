//! Errors of the stream transport.

/// A Redis operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL does not parse or names an unsupported scheme.
    #[error("invalid REDIS_URL ({url}): {problem}")]
    InvalidUrl {
        /// The URL with any password masked.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// Redis could not be reached in time.
    #[error("cannot connect to Redis at {url}: {problem}")]
    Connect {
        /// The URL with any password masked.
        url: String,
        /// The connection error.
        problem: String,
    },
    /// The consumer group (or the stream) does not exist: Redis restarted or was flushed.
    #[error("consumer group missing on {stream} (Redis restarted or was flushed)")]
    NoGroup {
        /// The stream key.
        stream: String,
    },
    /// A command failed.
    #[error("redis {command}: {source}")]
    Command {
        /// The command.
        command: &'static str,
        /// The client's error.
        source: fred::error::Error,
    },
    /// A reply had an unexpected shape.
    #[error("unexpected reply to {command}: {problem}")]
    Reply {
        /// The command.
        command: &'static str,
        /// What was unexpected.
        problem: String,
    },
}
