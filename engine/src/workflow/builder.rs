//! The typed builder of step graphs, and the type-erased [`Workflow`] it produces.
//!
//! Types are checked here, at definition time, by the compiler: a step's input type is the
//! output type of its dependency (a tuple for fan-in). Past [`WorkflowBuilder::build`] every
//! value is JSON; decoding happens at exactly one place (the erased step closures below), and a
//! decode failure there is fatal, never retried.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{Error, StepError};
use super::schedule::{InputFn, Schedule, ScheduleSpec, Tick};
use super::{StepContext, StepOptions};
use crate::ids::RunId;

pub(crate) type StepFuture = Pin<Box<dyn Future<Output = Result<Value, StepError>> + Send>>;
/// Checks that a JSON value decodes as a workflow's input type.
type InputCheck = Arc<dyn Fn(&Value) -> Result<(), Error> + Send + Sync>;
pub(crate) type ErasedFn = Arc<dyn Fn(StepContext, Vec<Value>) -> StepFuture + Send + Sync>;

/// Where a step's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[doc(hidden)]
pub enum Source {
    /// The run's input.
    Input,
    /// The output of the step at this index.
    Step(usize),
}

/// A typed reference to a value of the graph: the run's input or a step's output.
///
/// Handles are what connect steps: passing `&handle` as a step's dependency makes the step's
/// input the handle's value, and the compiler checks that the types agree.
pub struct Handle<T> {
    builder: u64,
    source: Source,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Handle<T> {}

impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("source", &self.source)
            .finish()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The dependencies of a step: one `&Handle<T>` (the step takes `T`) or a tuple of up to four
/// handles (fan-in: the step takes the tuple of their values).
pub trait Deps: sealed::Sealed {
    /// The step's input type.
    type Output: DeserializeOwned + Send + 'static;

    #[doc(hidden)]
    fn sources(&self) -> Vec<(u64, Source)>;

    #[doc(hidden)]
    fn decode(values: Vec<Value>) -> Result<Self::Output, String>;
}

fn decode_one<T: DeserializeOwned>(value: Value, position: usize) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("dependency #{position}: {e}"))
}

impl<T> sealed::Sealed for &Handle<T> {}

impl<T: DeserializeOwned + Send + 'static> Deps for &Handle<T> {
    type Output = T;

    fn sources(&self) -> Vec<(u64, Source)> {
        vec![(self.builder, self.source)]
    }

    fn decode(values: Vec<Value>) -> Result<T, String> {
        let value = values
            .into_iter()
            .next()
            .ok_or("missing dependency value")?;
        decode_one(value, 0)
    }
}

macro_rules! tuple_deps {
    ($($t:ident $v:ident $i:tt),+) => {
        impl<$($t),+> sealed::Sealed for ($(&Handle<$t>,)+) {}

        impl<$($t: DeserializeOwned + Send + 'static),+> Deps for ($(&Handle<$t>,)+) {
            type Output = ($($t,)+);

            fn sources(&self) -> Vec<(u64, Source)> {
                vec![$((self.$i.builder, self.$i.source)),+]
            }

            fn decode(values: Vec<Value>) -> Result<Self::Output, String> {
                let mut values = values.into_iter();
                $(let $v = decode_one(values.next().ok_or("missing dependency value")?, $i)?;)+
                Ok(($($v,)+))
            }
        }
    };
}

tuple_deps!(A a 0, B b 1);
tuple_deps!(A a 0, B b 1, C c 2);
tuple_deps!(A a 0, B b 1, C c 2, D d 3);

/// What a run hook receives: the run and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct RunOutcome {
    /// The finished run.
    pub run_id: RunId,
    /// Its workflow.
    pub workflow: String,
    /// The run's output, when it succeeded.
    pub output: Option<Value>,
    /// The error that failed the run, when it failed.
    pub error: Option<String>,
}

pub(crate) enum StepKind {
    /// A plain step: its dependencies' values in, one value out.
    Task(ErasedFn),
    /// A dynamic fan-out: one durable child per element of the dependency's list, each run
    /// through this function with the element as its only value; the children's outputs are
    /// joined, in order, into the step's output.
    Map(ErasedFn),
    /// A run hook (`on_success` / `on_failure`), given the [`RunOutcome`].
    Hook(ErasedFn),
}

pub(crate) struct StepDef {
    pub(crate) name: String,
    pub(crate) deps: Vec<Source>,
    pub(crate) kind: StepKind,
    pub(crate) options: StepOptions,
}

impl StepDef {
    pub(crate) fn function(&self) -> &ErasedFn {
        match &self.kind {
            StepKind::Task(f) | StepKind::Map(f) | StepKind::Hook(f) => f,
        }
    }

    pub(crate) fn is_map(&self) -> bool {
        matches!(self.kind, StepKind::Map(_))
    }
}

/// The name of the hook step run after a run succeeds.
pub const ON_SUCCESS: &str = "on_success";
/// The name of the hook step run after a run fails.
pub const ON_FAILURE: &str = "on_failure";

static NEXT_BUILDER: AtomicU64 = AtomicU64::new(1);

/// Builds a [`Workflow`] whose run input has type `I`.
///
/// # Example
/// ```
/// use tributary::workflow::{StepContext, StepError, Workflow};
///
/// async fn split(_: StepContext, n: u32) -> Result<Vec<u32>, StepError> { Ok((1..=n).collect()) }
/// async fn square(_: StepContext, x: u32) -> Result<u64, StepError> { Ok(u64::from(x * x)) }
/// async fn count(_: StepContext, n: u32) -> Result<usize, StepError> { Ok(n as usize) }
/// async fn report(_: StepContext, (squares, n): (Vec<u64>, usize)) -> Result<String, StepError> {
///     Ok(format!("{} squares summing to {}", n, squares.iter().sum::<u64>()))
/// }
///
/// let mut wf = Workflow::builder::<u32>("squares", 1);
/// let input = wf.input();
/// let items = wf.step("split", &input, split);
/// let squares = wf.map("square", &items, square); // one durable child per item
/// let n = wf.step("count", &input, count);
/// let out = wf.step("report", (&squares, &n), report); // fan-in: a tuple
/// let workflow = wf.build(&out).unwrap();
/// assert_eq!(workflow.step_names(), ["split", "square", "count", "report"]);
/// ```
///
/// A step whose input type does not match its dependency does not compile:
/// ```compile_fail
/// use tributary::workflow::{StepContext, StepError, Workflow};
///
/// async fn greet(_: StepContext, name: String) -> Result<String, StepError> { Ok(name) }
/// async fn double(_: StepContext, x: u32) -> Result<u32, StepError> { Ok(x * 2) }
///
/// let mut wf = Workflow::builder::<String>("bad", 1);
/// let input = wf.input();
/// let greeting = wf.step("greet", &input, greet);
/// let doubled = wf.step("double", &greeting, double); // String is not u32
/// ```
pub struct WorkflowBuilder<I> {
    id: u64,
    name: String,
    version: u32,
    defaults: StepOptions,
    steps: Vec<StepDef>,
    schedules: Vec<Schedule>,
    errors: Vec<Error>,
    _input: PhantomData<fn(I)>,
}

fn erase<D, O, F, Fut>(step: String, f: F) -> ErasedFn
where
    D: Deps,
    O: Serialize,
    F: Fn(StepContext, D::Output) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, StepError>> + Send + 'static,
{
    let step: Arc<str> = Arc::from(step);
    Arc::new(move |ctx, values| match D::decode(values) {
        Ok(input) => {
            let fut = f(ctx, input);
            let step = step.clone();
            Box::pin(async move {
                let output = fut.await?;
                serde_json::to_value(output).map_err(|e| {
                    StepError::fatal(format!("step {step}: cannot encode output: {e}"))
                })
            })
        }
        Err(problem) => {
            let message = format!("step {step}: input does not decode: {problem}");
            Box::pin(async move { Err(StepError::fatal(message)) })
        }
    })
}

impl<I: Serialize + DeserializeOwned + Send + 'static> WorkflowBuilder<I> {
    fn new(name: &str, version: u32) -> Self {
        let mut errors = Vec::new();
        if !valid_name(name) {
            errors.push(Error::InvalidName {
                what: "workflow",
                name: name.to_owned(),
            });
        }
        Self {
            id: NEXT_BUILDER.fetch_add(1, Ordering::Relaxed),
            name: name.to_owned(),
            version,
            defaults: StepOptions::default(),
            steps: Vec::new(),
            schedules: Vec::new(),
            errors,
            _input: PhantomData,
        }
    }

    /// The run's input, as a dependency for the first steps.
    pub fn input(&self) -> Handle<I> {
        Handle {
            builder: self.id,
            source: Source::Input,
            _type: PhantomData,
        }
    }

    /// Sets the options of the steps added after this call that do not bring their own.
    pub fn defaults(&mut self, options: StepOptions) -> &mut Self {
        self.defaults = options;
        self
    }

    /// Adds a step with the default options. `deps` is `&handle` or a tuple of handles; `f` is
    /// an `async fn(StepContext, Input) -> Result<Output, StepError>`.
    pub fn step<D, O, F, Fut>(&mut self, name: &str, deps: D, f: F) -> Handle<O>
    where
        D: Deps,
        O: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(StepContext, D::Output) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, StepError>> + Send + 'static,
    {
        let options = self.defaults.clone();
        self.step_with(name, deps, options, f)
    }

    /// Adds a step with its own options.
    pub fn step_with<D, O, F, Fut>(
        &mut self,
        name: &str,
        deps: D,
        options: StepOptions,
        f: F,
    ) -> Handle<O>
    where
        D: Deps,
        O: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(StepContext, D::Output) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, StepError>> + Send + 'static,
    {
        let sources = self.check_deps(name, deps.sources());
        let kind = StepKind::Task(erase::<D, O, F, Fut>(name.to_owned(), f));
        self.push(name, sources, kind, options)
    }

    /// Adds a dynamic fan-out: `f` runs once per element of the list `items`, each call a
    /// durable child step (`name[0]`, `name[1]`, …) with its own retries and checkpoint, and
    /// the outputs are joined, in order, into a `Vec` for the steps that depend on this one.
    pub fn map<T, O, F, Fut>(&mut self, name: &str, items: &Handle<Vec<T>>, f: F) -> Handle<Vec<O>>
    where
        T: DeserializeOwned + Send + 'static,
        O: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(StepContext, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, StepError>> + Send + 'static,
    {
        let options = self.defaults.clone();
        self.map_with(name, items, options, f)
    }

    /// [`map`](Self::map) with options that apply to each child.
    pub fn map_with<T, O, F, Fut>(
        &mut self,
        name: &str,
        items: &Handle<Vec<T>>,
        options: StepOptions,
        f: F,
    ) -> Handle<Vec<O>>
    where
        T: DeserializeOwned + Send + 'static,
        O: Serialize + DeserializeOwned + Send + 'static,
        F: Fn(StepContext, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, StepError>> + Send + 'static,
    {
        let sources = self.check_deps(name, vec![(items.builder, items.source)]);
        let item_handle: Handle<T> = Handle {
            builder: self.id,
            source: Source::Input,
            _type: PhantomData,
        };
        let _ = item_handle; // the element type is decoded by the erased closure below
        let kind = StepKind::Map(erase::<&Handle<T>, O, F, Fut>(name.to_owned(), f));
        self.push(name, sources, kind, options)
    }

    /// Starts a run on every tick of a cron schedule; `input` builds the run's input from the
    /// tick (its data interval). Exactly one run starts per tick, however many engine processes
    /// run. Configuration can override the expression, zone and catch-up, or disable it.
    ///
    /// ```
    /// use tributary::workflow::{ScheduleSpec, StepContext, StepError, Tick, Workflow};
    ///
    /// async fn fetch(_: StepContext, window: Tick) -> Result<u32, StepError> { Ok(0) }
    /// let mut wf = Workflow::builder::<Tick>("gdelt", 1);
    /// let input = wf.input();
    /// let out = wf.step("fetch", &input, fetch);
    /// wf.schedule(ScheduleSpec::new("gdelt-15m", "*/15 * * * *"), |tick: &Tick| tick.clone());
    /// assert_eq!(wf.build(&out).unwrap().schedules().len(), 1);
    /// ```
    pub fn schedule<F>(&mut self, spec: ScheduleSpec, input: F) -> &mut Self
    where
        F: Fn(&Tick) -> I + Send + Sync + 'static,
    {
        let name = spec.name.clone();
        let input: InputFn = Arc::new(move |tick: &Tick| {
            serde_json::to_value(input(tick)).map_err(|e| e.to_string())
        });
        if !valid_name(&name) {
            self.errors.push(Error::InvalidName {
                what: "schedule",
                name,
            });
            return self;
        }
        match Schedule::new(spec, input) {
            Ok(schedule) => self.schedules.push(schedule),
            Err(problem) => self.errors.push(Error::InvalidSchedule {
                schedule: name,
                problem,
            }),
        }
        self
    }

    /// Runs `f` after each run that succeeds, as a durable step named `on_success` (Celery's
    /// `on_success`).
    pub fn on_success<F, Fut>(&mut self, f: F) -> &mut Self
    where
        F: Fn(StepContext, RunOutcome) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        self.hook(ON_SUCCESS, f)
    }

    /// Runs `f` after each run that fails, as a durable step named `on_failure`.
    pub fn on_failure<F, Fut>(&mut self, f: F) -> &mut Self
    where
        F: Fn(StepContext, RunOutcome) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        self.hook(ON_FAILURE, f)
    }

    fn hook<F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(StepContext, RunOutcome) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        let function = erase::<&Handle<RunOutcome>, (), F, Fut>(name.to_owned(), f);
        if self.steps.iter().any(|s| s.name == name) {
            self.errors.push(Error::DuplicateStep {
                workflow: self.name.clone(),
                step: name.to_owned(),
            });
        }
        let options = self.defaults.clone();
        self.steps.push(StepDef {
            name: name.to_owned(),
            deps: Vec::new(),
            kind: StepKind::Hook(function),
            options,
        });
        self
    }

    fn check_deps(&mut self, step: &str, sources: Vec<(u64, Source)>) -> Vec<Source> {
        if sources.iter().any(|(builder, _)| *builder != self.id) {
            self.errors.push(Error::ForeignHandle {
                workflow: self.name.clone(),
                step: step.to_owned(),
            });
        }
        sources.into_iter().map(|(_, source)| source).collect()
    }

    fn push<O>(
        &mut self,
        name: &str,
        deps: Vec<Source>,
        kind: StepKind,
        options: StepOptions,
    ) -> Handle<O> {
        if !valid_name(name) {
            self.errors.push(Error::InvalidName {
                what: "step",
                name: name.to_owned(),
            });
        } else if name == ON_SUCCESS || name == ON_FAILURE {
            self.errors.push(Error::ReservedStep {
                workflow: self.name.clone(),
                step: name.to_owned(),
            });
        } else if self.steps.iter().any(|s| s.name == name) {
            self.errors.push(Error::DuplicateStep {
                workflow: self.name.clone(),
                step: name.to_owned(),
            });
        }
        if options.timeout.is_zero() {
            self.errors.push(Error::InvalidOption {
                workflow: self.name.clone(),
                step: name.to_owned(),
                problem: "timeout must be greater than zero".into(),
            });
        }
        let index = self.steps.len();
        self.steps.push(StepDef {
            name: name.to_owned(),
            deps,
            kind,
            options,
        });
        Handle {
            builder: self.id,
            source: Source::Step(index),
            _type: PhantomData,
        }
    }

    /// Finishes the definition; `output` is the value a successful run returns.
    ///
    /// # Errors
    /// The first problem found: an invalid or duplicate name, a handle of another builder, no
    /// steps, or an out-of-range option.
    pub fn build<O>(mut self, output: &Handle<O>) -> Result<Workflow, Error> {
        if output.builder != self.id {
            self.errors.push(Error::ForeignHandle {
                workflow: self.name.clone(),
                step: "(output)".into(),
            });
        }
        if !self
            .steps
            .iter()
            .any(|s| !matches!(s.kind, StepKind::Hook(_)))
        {
            self.errors.push(Error::Empty {
                workflow: self.name.clone(),
            });
        }
        if let Some(error) = self.errors.into_iter().next() {
            return Err(error);
        }
        let mut successors = vec![Vec::new(); self.steps.len()];
        for (index, step) in self.steps.iter().enumerate() {
            for dep in &step.deps {
                if let Source::Step(d) = dep
                    && !successors[*d].contains(&index)
                {
                    successors[*d].push(index);
                }
            }
        }
        let index = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let name = self.name.clone();
        Ok(Workflow {
            name: self.name,
            version: self.version,
            steps: self.steps,
            schedules: self.schedules,
            index,
            successors,
            output: output.source,
            check_input: Arc::new(move |value: &Value| {
                I::deserialize(value)
                    .map(drop)
                    .map_err(|e| Error::InvalidInput {
                        workflow: name.clone(),
                        problem: e.to_string(),
                    })
            }),
        })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A validated, type-erased workflow definition: a name, a version and a graph of steps.
///
/// Built with [`Workflow::builder`] and registered in a [`Registry`](super::Registry).
pub struct Workflow {
    name: String,
    version: u32,
    pub(crate) steps: Vec<StepDef>,
    schedules: Vec<Schedule>,
    index: HashMap<String, usize>,
    successors: Vec<Vec<usize>>,
    pub(crate) output: Source,
    check_input: InputCheck,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("steps", &self.step_names())
            .finish()
    }
}

/// How a step name found in a stream entry or a checkpoint maps onto the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepRef {
    /// A step of the graph (a map step here means its join).
    Graph(usize),
    /// Item `item` of the map step at this index.
    MapItem(usize, usize),
    /// A run hook.
    Hook(usize),
}

impl Workflow {
    /// Starts a definition whose run input has type `I`.
    pub fn builder<I: Serialize + DeserializeOwned + Send + 'static>(
        name: &str,
        version: u32,
    ) -> WorkflowBuilder<I> {
        WorkflowBuilder::new(name, version)
    }

    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The workflow's version; a run records the version it started with.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The cron schedules declared for this workflow.
    pub fn schedules(&self) -> &[Schedule] {
        &self.schedules
    }

    /// The graph's step names in definition order (hooks excluded).
    pub fn step_names(&self) -> Vec<&str> {
        self.graph_steps().map(|(_, s)| s.name.as_str()).collect()
    }

    /// Checks that `input` decodes as the workflow's input type.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the decode problem.
    pub fn check_input(&self, input: &Value) -> Result<(), Error> {
        (self.check_input)(input)
    }

    pub(crate) fn graph_steps(&self) -> impl Iterator<Item = (usize, &StepDef)> {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s.kind, StepKind::Hook(_)))
    }

    pub(crate) fn step(&self, index: usize) -> &StepDef {
        &self.steps[index]
    }

    pub(crate) fn hook(&self, name: &str) -> Option<usize> {
        self.index
            .get(name)
            .copied()
            .filter(|i| matches!(self.steps[*i].kind, StepKind::Hook(_)))
    }

    pub(crate) fn successors(&self, index: usize) -> &[usize] {
        &self.successors[index]
    }

    /// Resolves a stored step name: `fetch`, `square[3]`, `on_success`.
    pub(crate) fn resolve(&self, name: &str) -> Option<StepRef> {
        if let Some(&i) = self.index.get(name) {
            return Some(match self.steps[i].kind {
                StepKind::Hook(_) => StepRef::Hook(i),
                _ => StepRef::Graph(i),
            });
        }
        let (parent, rest) = name.split_once('[')?;
        let item: usize = rest.strip_suffix(']')?.parse().ok()?;
        let &i = self.index.get(parent)?;
        self.steps[i].is_map().then_some(StepRef::MapItem(i, item))
    }

    /// The graph steps whose every dependency is the run input: they are ready at start.
    pub(crate) fn roots(&self) -> Vec<usize> {
        self.graph_steps()
            .filter(|(_, s)| s.deps.iter().all(|d| *d == Source::Input))
            .map(|(i, _)| i)
            .collect()
    }

    /// The step names whose state decides what becomes ready after `index` completes: its
    /// successors and their dependencies.
    pub(crate) fn names_around(&self, index: usize) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for &s in self.successors(index) {
            names.push(&self.steps[s].name);
            for d in &self.steps[s].deps {
                if let Source::Step(d) = d {
                    names.push(&self.steps[*d].name);
                }
            }
        }
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The name under which map item `item` of step `index` is stored.
    pub(crate) fn item_name(&self, index: usize, item: usize) -> String {
        format!("{}[{item}]", self.steps[index].name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn id(_: StepContext, x: u32) -> Result<u32, StepError> {
        Ok(x)
    }

    #[test]
    fn duplicate_step_names_are_rejected() {
        let mut wf = Workflow::builder::<u32>("dup", 1);
        let input = wf.input();
        wf.step("a", &input, id);
        let out = wf.step("a", &input, id);
        assert_eq!(
            wf.build(&out).unwrap_err(),
            Error::DuplicateStep {
                workflow: "dup".into(),
                step: "a".into()
            }
        );
    }

    #[test]
    fn handles_from_another_builder_are_rejected() {
        let other = Workflow::builder::<u32>("other", 1);
        let foreign = other.input();
        let mut wf = Workflow::builder::<u32>("mine", 1);
        let out = wf.step("a", &foreign, id);
        assert!(matches!(wf.build(&out), Err(Error::ForeignHandle { .. })));
    }

    #[test]
    fn invalid_and_reserved_names_are_rejected() {
        let mut wf = Workflow::builder::<u32>("bad name", 1);
        let input = wf.input();
        let out = wf.step("a", &input, id);
        assert!(matches!(
            wf.build(&out),
            Err(Error::InvalidName {
                what: "workflow",
                ..
            })
        ));

        let mut wf = Workflow::builder::<u32>("ok", 1);
        let input = wf.input();
        let out = wf.step("on_success", &input, id);
        assert!(matches!(wf.build(&out), Err(Error::ReservedStep { .. })));

        let mut wf = Workflow::builder::<u32>("ok", 1);
        let input = wf.input();
        let out = wf.step("a[1]", &input, id);
        assert!(matches!(
            wf.build(&out),
            Err(Error::InvalidName { what: "step", .. })
        ));
    }

    #[test]
    fn a_workflow_without_steps_is_rejected() {
        let wf = Workflow::builder::<u32>("empty", 1);
        let input = wf.input();
        assert_eq!(
            wf.build(&input).unwrap_err(),
            Error::Empty {
                workflow: "empty".into()
            }
        );
    }

    #[test]
    fn stored_names_resolve_to_graph_items_and_hooks() {
        async fn list(_: StepContext, n: u32) -> Result<Vec<u32>, StepError> {
            Ok((0..n).collect())
        }
        async fn hook(_: StepContext, _: RunOutcome) -> Result<(), StepError> {
            Ok(())
        }
        let mut wf = Workflow::builder::<u32>("m", 1);
        let input = wf.input();
        let l = wf.step("list", &input, list);
        let m = wf.map("each", &l, id);
        wf.on_success(hook);
        let w = wf.build(&m).unwrap();
        assert_eq!(w.resolve("list"), Some(StepRef::Graph(0)));
        assert_eq!(w.resolve("each[7]"), Some(StepRef::MapItem(1, 7)));
        assert_eq!(w.resolve("list[7]"), None);
        assert_eq!(w.resolve("on_success"), Some(StepRef::Hook(2)));
        assert_eq!(w.resolve("nope"), None);
        assert_eq!(w.roots(), vec![0]);
        assert_eq!(w.successors(0), &[1]);
        assert!(w.check_input(&serde_json::json!("x")).is_err());
    }

    #[tokio::test]
    async fn an_input_that_does_not_decode_is_a_fatal_error() {
        let mut wf = Workflow::builder::<u32>("d", 1);
        let input = wf.input();
        let out = wf.step("a", &input, id);
        let w = wf.build(&out).unwrap();
        let f = w.step(0).function().clone();
        let err = f(
            StepContext::detached("a"),
            vec![serde_json::json!("not a number")],
        )
        .await
        .unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        let ok = f(StepContext::detached("a"), vec![serde_json::json!(7)])
            .await
            .unwrap();
        assert_eq!(ok, serde_json::json!(7));
    }
}
