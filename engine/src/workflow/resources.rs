//! Resources: what a deployment hands its steps (an HTTP client, a connection pool for its own
//! tables, its settings), looked up by type from the [`StepContext`](super::StepContext).
//!
//! **Architecture Invariant:** this is a plain type map. The engine neither knows nor cares what
//! the values are; it only carries them to every step of the process.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Values shared by every step of a worker process, one per type.
///
/// ```
/// use tributary::workflow::Resources;
///
/// struct Settings { base_url: String }
///
/// let mut resources = Resources::default();
/// resources.insert(Settings { base_url: "http://localhost".into() });
/// assert_eq!(resources.get::<Settings>().unwrap().base_url, "http://localhost");
/// assert!(resources.get::<String>().is_none());
/// ```
#[derive(Default, Clone)]
pub struct Resources {
    values: HashMap<TypeId, (&'static str, Arc<dyn Any + Send + Sync>)>,
}

impl Resources {
    /// Adds `value`, replacing an earlier value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> &mut Self {
        self.values
            .insert(TypeId::of::<T>(), (type_name::<T>(), Arc::new(value)));
        self
    }

    /// The value of type `T`, if one was inserted.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let (_, value) = self.values.get(&TypeId::of::<T>())?;
        Arc::clone(value).downcast::<T>().ok()
    }

    /// Whether there is nothing in it.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Type names only: values may hold credentials.
        let mut names: Vec<&str> = self.values.values().map(|(name, _)| *name).collect();
        names.sort_unstable();
        f.debug_set().entries(names).finish()
    }
}
