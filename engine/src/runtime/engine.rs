//! The engine handle: connections, the client API (start, status, cancel, retry) and the
//! worker entry point.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::Config;
use crate::ids::RunId;
use crate::store::{self, Dispatch, NewRun, RunStatus, RunView, Store};
use crate::transport::{self, Transport, TransportConfig};
use crate::workflow::{self, Registry, Resources, Workflow};

/// A runtime operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// An invalid definition, an unknown workflow or an input that does not match.
    #[error(transparent)]
    Definition(#[from] workflow::Error),
    /// PostgreSQL.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Redis.
    #[error(transparent)]
    Transport(#[from] transport::Error),
    /// Waiting for a run took longer than allowed.
    #[error("run {run} still {status} after {waited:?}")]
    WaitTimeout {
        /// The run.
        run: RunId,
        /// Its status when the wait gave up.
        status: String,
        /// How long the wait lasted.
        waited: Duration,
    },
}

/// Options of a start.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Starting again with a key already used for this workflow returns the existing run.
    pub idempotency_key: Option<String>,
}

/// A connected engine: the workflows, PostgreSQL and Redis. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) registry: Arc<Registry>,
    pub(crate) store: Store,
    pub(crate) transport: Transport,
    pub(crate) config: Arc<Config>,
    pub(crate) schedules: Arc<Vec<super::scheduler::Scheduled>>,
    pub(crate) resources: Arc<Resources>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

/// How long a freshly started step may wait to be handed to Redis before the due-time
/// poller publishes it in place of a starter that died.
pub(crate) const HANDOFF_GRACE: Duration = Duration::from_secs(10);

impl Engine {
    /// Connects to PostgreSQL and Redis and applies migrations.
    ///
    /// # Errors
    /// A configuration error, or a connection error naming the server and the cause.
    pub async fn connect(config: Config, registry: Registry) -> Result<Self, Error> {
        config.validate()?;
        let schedules = Arc::new(super::scheduler::effective(&registry, &config)?);
        let store = Store::connect(
            config.database_url()?,
            config.worker.database_connections,
            config.connect_timeout,
            config.worker.lease,
        )
        .await?;
        store.migrate().await?;
        let transport = Transport::connect(TransportConfig {
            url: config.redis_url()?.to_owned(),
            prefix: config.key_prefix.clone(),
            connect_timeout: config.connect_timeout,
            command_timeout: Duration::from_secs(10),
            dead_letter_max_len: 10_000,
        })
        .await?;
        transport.ensure_group().await?;
        let engine = Self {
            registry: Arc::new(registry),
            store,
            transport,
            config: Arc::new(config),
            schedules,
            resources: Arc::default(),
        };
        let holder = format!("connect-{}", uuid::Uuid::new_v4());
        super::maintenance::await_epoch(&engine, &holder).await?;
        Ok(engine)
    }

    /// The same engine, handing `resources` to every step it runs (see
    /// [`StepContext::resource`](crate::workflow::StepContext::resource)).
    pub fn with_resources(mut self, resources: Resources) -> Self {
        self.resources = Arc::new(resources);
        self
    }

    /// The schedules this deployment runs (declared ones, with configuration overrides).
    pub fn schedules(&self) -> &[super::scheduler::Scheduled] {
        &self.schedules
    }

    /// Pauses (`true`) or resumes a schedule.
    ///
    /// # Errors
    /// An unknown schedule name or a store error.
    pub async fn pause_schedule(&self, name: &str, paused: bool) -> Result<(), Error> {
        let Some(s) = self
            .schedules
            .iter()
            .find(|s| s.schedule.spec().name == name)
        else {
            let known: Vec<&str> = self
                .schedules
                .iter()
                .map(|s| s.schedule.spec().name.as_str())
                .collect();
            return Err(crate::config::Error::Invalid(format!(
                "no schedule {name:?} (schedules: {})",
                known.join(", ")
            ))
            .into());
        };
        let now = chrono::Utc::now();
        let initial = s.schedule.previous_before(now).unwrap_or(now);
        self.store
            .schedule_state(name, &s.workflow, initial)
            .await?;
        self.store.set_paused(name, paused).await?;
        Ok(())
    }

    /// The registered workflows.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The PostgreSQL store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The Redis transport.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts a run of `workflow` with `input`. Returns its id (the existing run's, when the
    /// idempotency key was used before).
    ///
    /// # Errors
    /// An unknown workflow, an input that does not match the workflow's input type, or a
    /// store error. A Redis error after the run was recorded is not an error: the due-time
    /// poller publishes the run's first steps.
    pub async fn start(
        &self,
        workflow: &str,
        input: Value,
        options: StartOptions,
    ) -> Result<RunId, Error> {
        let ids = self
            .start_batch(&[(workflow.to_owned(), input, options)])
            .await?;
        Ok(ids[0])
    }

    /// Starts many runs in one transaction and one pipelined publish.
    ///
    /// # Errors
    /// As [`Engine::start`]; nothing is started when any input is invalid.
    pub async fn start_batch(
        &self,
        runs: &[(String, Value, StartOptions)],
    ) -> Result<Vec<RunId>, Error> {
        let started = self.start_runs(runs).await?;
        Ok(started.into_iter().map(|s| s.run_id).collect())
    }

    /// [`Engine::start_batch`], saying for each run whether it was created or an idempotency
    /// key named an existing one.
    pub(crate) async fn start_runs(
        &self,
        runs: &[(String, Value, StartOptions)],
    ) -> Result<Vec<crate::store::StartedRun>, Error> {
        let mut new = Vec::with_capacity(runs.len());
        for (name, input, options) in runs {
            let wf: &Arc<Workflow> = self.registry.get(name)?;
            wf.check_input(input)?;
            let run_id = RunId::new();
            // The run's span is the root of its own trace (one trace per run, even when one
            // call starts many runs); every step attempt, in any process, becomes its child.
            // It links to the span that started it: the CLI call or the scheduler tick.
            let span = tracing::info_span!(
                parent: None,
                "workflow.run",
                workflow.name = %wf.name(),
                workflow.version = wf.version(),
                workflow.run.id = %run_id,
            );
            let caller = tracing::Span::current()
                .context()
                .span()
                .span_context()
                .clone();
            if caller.is_valid() {
                span.add_link(caller);
            }
            new.push(NewRun {
                trace_context: crate::telemetry::propagation::inject(&span),
                run_id,
                workflow: wf.name().to_owned(),
                version: wf.version(),
                input: input.clone(),
                idempotency_key: options.idempotency_key.clone(),
                roots: wf
                    .roots()
                    .into_iter()
                    .map(|i| wf.step(i).name.clone())
                    .collect(),
            });
        }
        // The I/O runs outside the caller's span: connection tasks that the pool or the Redis
        // client spawn here could otherwise keep that span open (and so never exported) for
        // as long as they live. The runs' own spans carry the trace from here on.
        let io = async {
            let started = self.store.start_runs(&new, HANDOFF_GRACE).await?;
            let dispatch: Vec<Dispatch> = started
                .iter()
                .flat_map(|s| s.dispatch.iter().cloned())
                .collect();
            self.hand_off(&dispatch).await;
            Ok::<_, Error>(started)
        };
        io.instrument(tracing::Span::none()).await
    }

    /// Publishes waiting steps and marks them ready. On failure they stay due-time state, and
    /// the due-time poller publishes them once due: nothing is lost.
    pub(crate) async fn hand_off(&self, dispatch: &[Dispatch]) {
        if dispatch.is_empty() {
            return;
        }
        match self.transport.publish(dispatch).await {
            Ok(_) => {
                if let Err(e) = self.store.mark_ready(dispatch).await {
                    tracing::warn!(error = %e, "published steps stay 'waiting'; the poller may publish them again");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, count = dispatch.len(), "publishing failed; the due-time poller retries")
            }
        }
    }

    /// The run, its steps and its audit trail.
    ///
    /// # Errors
    /// An unknown run or a store error.
    pub async fn status(&self, run: RunId) -> Result<RunView, Error> {
        Ok(self.store.run_view(run).await?)
    }

    /// Cancels a running run: no further step starts, and running steps see the cancellation
    /// in their context. Returns `false` when the run had already ended.
    ///
    /// # Errors
    /// An unknown run or a store error.
    pub async fn cancel(&self, run: RunId) -> Result<bool, Error> {
        Ok(self.store.cancel(run).await?)
    }

    /// Resumes a failed or cancelled run from its failed steps, keeping its checkpoints.
    ///
    /// # Errors
    /// An unknown run or workflow, a run that is not failed or cancelled, or a store error.
    pub async fn retry(&self, run: RunId) -> Result<(), Error> {
        let view = self.store.run_view(run).await?;
        let wf = self.registry.get(&view.workflow)?;
        self.store.retry(wf, run).await?;
        Ok(())
    }

    /// Waits until the run ends, polling PostgreSQL, for at most `timeout`.
    ///
    /// # Errors
    /// [`Error::WaitTimeout`], an unknown run or a store error.
    pub async fn wait(&self, run: RunId, timeout: Duration) -> Result<RunView, Error> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(5);
        loop {
            let statuses = self.store.run_statuses(&[run]).await?;
            match statuses.get(&run) {
                None => return Err(store::Error::UnknownRun(run).into()),
                Some(status) if status.is_final() => return self.status(run).await,
                Some(status) => {
                    if started.elapsed() >= timeout {
                        return Err(Error::WaitTimeout {
                            run,
                            status: status.to_string(),
                            waited: started.elapsed(),
                        });
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// Statuses of several runs.
    ///
    /// # Errors
    /// A store error.
    pub async fn statuses(
        &self,
        runs: &[RunId],
    ) -> Result<std::collections::HashMap<RunId, RunStatus>, Error> {
        Ok(self.store.run_statuses(runs).await?)
    }

    /// Runs a worker until `shutdown` is cancelled, then drains gracefully: it stops reading,
    /// lets in-flight steps finish within the shutdown grace, cancels and hands back the rest.
    ///
    /// # Errors
    /// A transport error when the worker's read connection cannot be opened.
    pub async fn run_worker(&self, shutdown: CancellationToken) -> Result<(), Error> {
        super::worker::run(self.clone(), shutdown).await
    }
}
