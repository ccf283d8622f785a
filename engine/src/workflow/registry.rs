//! The set of workflows one engine process runs, checked once at start-up.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Error, Workflow};

/// Workflows by name. Registering a name twice is an error, as is looking up an unknown name.
///
/// ```
/// use tributary::workflow::{Registry, StepContext, StepError, Workflow};
///
/// async fn hello(_: StepContext, _: ()) -> Result<String, StepError> { Ok("Hello World".into()) }
/// let build = || {
///     let mut wf = Workflow::builder::<()>("hello", 1);
///     let input = wf.input();
///     let out = wf.step("hello", &input, hello);
///     wf.build(&out).unwrap()
/// };
/// let mut registry = Registry::default();
/// registry.register(build()).unwrap();
/// assert!(registry.register(build()).is_err());
/// assert!(registry.get("hello").is_ok());
/// assert!(registry.get("nope").is_err());
/// ```
#[derive(Debug, Default, Clone)]
pub struct Registry {
    workflows: BTreeMap<String, Arc<Workflow>>,
}

impl Registry {
    /// Adds a workflow.
    ///
    /// # Errors
    /// [`Error::DuplicateWorkflow`] when the name is taken.
    pub fn register(&mut self, workflow: Workflow) -> Result<&mut Self, Error> {
        if self.workflows.contains_key(workflow.name()) {
            return Err(Error::DuplicateWorkflow(workflow.name().to_owned()));
        }
        for schedule in workflow.schedules() {
            let taken = self
                .workflows
                .values()
                .flat_map(|w| w.schedules())
                .any(|s| s.spec().name == schedule.spec().name);
            if taken {
                return Err(Error::DuplicateSchedule(schedule.spec().name.clone()));
            }
        }
        self.workflows
            .insert(workflow.name().to_owned(), Arc::new(workflow));
        Ok(self)
    }

    /// The workflow named `name`.
    ///
    /// # Errors
    /// [`Error::UnknownWorkflow`], listing the registered names.
    pub fn get(&self, name: &str) -> Result<&Arc<Workflow>, Error> {
        self.workflows
            .get(name)
            .ok_or_else(|| Error::UnknownWorkflow {
                name: name.to_owned(),
                known: self
                    .workflows
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// All registered workflows, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Workflow>> {
        self.workflows.values()
    }

    /// Whether no workflow is registered.
    pub fn is_empty(&self) -> bool {
        self.workflows.is_empty()
    }
}
