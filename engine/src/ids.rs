//! Newtype identifiers shared by every layer: a run's id and a step attempt's number.

use std::fmt;
use std::str::FromStr;

/// Identifies one run of a workflow. Time-ordered (UUIDv7), so recent runs sort last.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct RunId(pub uuid::Uuid);

impl RunId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// The number of an attempt at a step, starting at 1. It doubles as the fencing token: a
/// checkpoint commits only for the step's current attempt, so a stale attempt cannot overwrite
/// a newer one.
pub type Attempt = u32;
