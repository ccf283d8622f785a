//! Errors of the PostgreSQL store.

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database URL does not parse.
    #[error("invalid DATABASE_URL ({url}): {source}")]
    InvalidUrl {
        /// The URL with any password masked.
        url: String,
        /// The parse error.
        source: sqlx::Error,
    },
    /// PostgreSQL could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect {
        /// The URL with any password masked.
        url: String,
        /// The connection error.
        source: sqlx::Error,
    },
    /// Applying the migrations failed.
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("{op}: {source}")]
    Query {
        /// What the store was doing.
        op: &'static str,
        /// The database error.
        source: sqlx::Error,
    },
    /// A run id that is not in the database.
    #[error("no run {0}")]
    UnknownRun(crate::ids::RunId),
    /// An operation that the run's status does not allow.
    #[error("run {run} is {status}: {what}")]
    InvalidState {
        /// The run.
        run: crate::ids::RunId,
        /// Its status.
        status: String,
        /// What was refused.
        what: &'static str,
    },
    /// A stored value has an unexpected shape.
    #[error("corrupt data in {what}: {problem}")]
    Corrupt {
        /// Where.
        what: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl Error {
    /// Whether the operation may succeed if tried again: lost connections, a restarting
    /// server, an exhausted pool, serialization failures and deadlocks.
    pub fn is_transient(&self) -> bool {
        let source = match self {
            Error::Query { source, .. } | Error::Connect { source, .. } => source,
            _ => return false,
        };
        match source {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => true,
            sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                code.starts_with("08")
                    || code.starts_with("57P")
                    || code == "40001"
                    || code == "40P01"
                    || code == "53300"
                    // The server ended a session left idle mid-transaction (see `Store::connect`).
                    || code == "25P03"
            }
            _ => false,
        }
    }
}

pub(crate) trait QueryExt<T> {
    fn op(self, op: &'static str) -> Result<T, Error>;
}

impl<T> QueryExt<T> for Result<T, sqlx::Error> {
    fn op(self, op: &'static str) -> Result<T, Error> {
        self.map_err(|source| Error::Query { op, source })
    }
}

/// Masks the password of a URL for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_masked_in_urls() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            super::redact_url("redis://:pw@h:6379"),
            "redis://:***@h:6379"
        );
    }
}
