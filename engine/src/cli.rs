//! The `tributary` command line: `dev`, `worker`, `start`, `status`, `retry`, `cancel`,
//! `migrate`, `workflows`, `schedules`, `backfill`, `dead-letters`, `secrets`.
//!
//! The binary lives in the `workflows` package (it needs the workflows); it calls [`main`]
//! with an [`App`]: its [`Registry`], how to build the [`Resources`] its steps use, and any
//! commands of its own. `anyhow` is used here, at the edge, and nowhere below.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Config;
use crate::ids::RunId;
use crate::runtime::{Engine, StartOptions};
use crate::services::{LocalPostgres, LocalRedis, PostgresOptions, RedisOptions};
use crate::store::Store;
use crate::workflow::{Registry, Resources};

/// A deployment's command line: its workflows, the resources its steps need, and commands of
/// its own.
///
/// ```no_run
/// use tributary::cli::App;
/// use tributary::workflow::{Registry, Resources};
///
/// struct Settings { greeting: String }
///
/// let app = App::new(Registry::default())
///     .setup(|_engine| async {
///         let mut resources = Resources::default();
///         resources.insert(Settings { greeting: "hola".into() });
///         Ok(resources)
///     })
///     .command("hello", "Say hello", |_config| async {
///         println!("hello");
///         Ok(())
///     });
/// std::process::exit(match tributary::cli::main(app) { _ => 0 });
/// ```
pub struct App {
    registry: Registry,
    setup: Option<Setup>,
    commands: Vec<Extension>,
}

type Setup = Box<dyn Fn(Engine) -> BoxFuture<'static, anyhow::Result<Resources>> + Send + Sync>;

struct Extension {
    name: &'static str,
    about: &'static str,
    run: Box<dyn Fn(Config) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>,
}

impl App {
    /// An app running `registry`'s workflows, with no resources and no commands of its own.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            setup: None,
            commands: Vec::new(),
        }
    }

    /// How a worker process builds the [`Resources`] of its steps, once, after connecting.
    /// A setup error stops the process before it takes any step.
    pub fn setup<F, Fut>(mut self, setup: F) -> Self
    where
        F: Fn(Engine) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<Resources>> + Send + 'static,
    {
        self.setup = Some(Box::new(move |engine| Box::pin(setup(engine))));
        self
    }

    /// A subcommand of the deployment's own, without arguments, given the loaded
    /// configuration (e.g. a report on its data).
    pub fn command<F, Fut>(mut self, name: &'static str, about: &'static str, run: F) -> Self
    where
        F: Fn(Config) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.commands.push(Extension {
            name,
            about,
            run: Box::new(move |config| Box::pin(run(config))),
        });
        self
    }

    /// Connects an engine for running steps: with the resources of [`App::setup`].
    async fn worker_engine(&self, config: Config) -> anyhow::Result<Engine> {
        let engine = Engine::connect(config, self.registry.clone()).await?;
        match &self.setup {
            None => Ok(engine),
            Some(setup) => {
                let resources = setup(engine.clone())
                    .await
                    .context("setting up the deployment's resources")?;
                Ok(engine.with_resources(resources))
            }
        }
    }
}

impl From<Registry> for App {
    fn from(registry: Registry) -> Self {
        Self::new(registry)
    }
}

/// Durable workflows on Redis Streams with PostgreSQL checkpoints.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about)]
struct Cli {
    /// Configuration file (TOML). Also `TRIBUTARY_CONFIG`.
    #[arg(long, global = true, env = "TRIBUTARY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole engine for development. Without REDIS_URL / DATABASE_URL it starts a
    /// private redis-server and PostgreSQL under the state directory (kept across restarts).
    Dev {
        /// Where the private servers keep their data.
        #[arg(long, env = "TRIBUTARY_STATE_DIR", default_value = ".tributary")]
        state_dir: PathBuf,
    },
    /// Run a worker: consume steps until SIGTERM or Ctrl-C.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Start a run; prints its id (with --wait, its output).
    Start {
        /// The workflow's name.
        workflow: String,
        /// The run's input, as JSON.
        #[arg(long, default_value = "null")]
        input: String,
        /// Start one run per line of this JSON Lines file (`-`: standard input), in batches
        /// of 500 (the batch start); prints the run ids in order. Every line is checked before
        /// any run starts.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["input", "idempotency_key", "wait"])]
        inputs: Option<PathBuf>,
        /// Return the existing run when this key was used before.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Wait for the run to end and print its output.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Show a run: its steps, attempts, errors and timings.
    Status {
        /// The run id.
        run: RunId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Resume a failed or cancelled run from its failed steps.
    Retry {
        /// The run id.
        run: RunId,
    },
    /// Cancel a run.
    Cancel {
        /// The run id.
        run: RunId,
    },
    /// List the registered workflows.
    Workflows,
    /// List the schedules (next fire time, last run), or pause or resume one.
    Schedules {
        #[command(subcommand)]
        action: Option<ScheduleAction>,
    },
    /// Start the runs of a scheduled workflow for the ticks between two dates (each with its
    /// data interval), and wait for them with a progress bar. A tick that already has a run
    /// (scheduled or backfilled) is not started again.
    Backfill {
        /// The workflow's name.
        workflow: String,
        /// Start of the period: a date (`2024-01-01`, midnight UTC) or an RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        from: DateTime<Utc>,
        /// End of the period (exclusive): the last run's interval ends at or before it.
        #[arg(long, value_parser = parse_time)]
        to: DateTime<Utc>,
        /// Which of the workflow's schedules gives the ticks (needed when it has several).
        #[arg(long)]
        schedule: Option<String>,
        /// Start the runs and return without waiting.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the runs.
        #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// List the newest entries of the dead-letter stream.
    DeadLetters {
        /// How many.
        #[arg(long, default_value_t = 20)]
        count: usize,
    },
    /// Get or set a secret (GCP Secret Manager or the env/file fallback).
    Secrets {
        #[command(subcommand)]
        action: crate::secrets::Command,
    },
}

#[derive(Debug, Subcommand)]
enum ScheduleAction {
    /// Stop starting runs for this schedule.
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Start runs again (missed ticks are caught up within the schedule's limit).
    Resume {
        /// The schedule's name.
        name: String,
    },
}

/// Parses the command line, runs the command, and maps errors to a message and exit code 1.
pub fn main(app: impl Into<App>) -> ExitCode {
    let app = app.into();
    let mut command = Cli::command();
    for e in &app.commands {
        command = command.subcommand(clap::Command::new(e.name).about(e.about));
    }
    let matches = command.get_matches();
    let extension = matches
        .subcommand_name()
        .and_then(|name| app.commands.iter().position(|e| e.name == name));
    let invocation = match extension {
        Some(i) => Err(i),
        None => match Cli::from_arg_matches(&matches) {
            Ok(cli) => Ok(cli),
            Err(e) => e.exit(),
        },
    };
    let config_file = matches.get_one::<PathBuf>("config").cloned();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the gRPC exporter needs one.
    let mut telemetry = runtime.block_on(async { crate::telemetry::init() });
    let _ = &mut telemetry;
    let result = runtime.block_on(async {
        match invocation {
            Ok(cli) => run(cli, app).await,
            Err(i) => {
                let config =
                    Config::load(config_file.as_deref()).context("loading configuration")?;
                (app.commands[i].run)(config).await
            }
        }
    });
    // Flush queued spans: blocking, so on a blocking thread, while the runtime (which drives
    // the exporter's connection) still runs.
    let flushed = runtime.block_on(runtime.spawn_blocking(move || telemetry.shutdown()));
    if let Err(e) = flushed {
        eprintln!("warning: flushing spans failed: {e}");
    }
    drop(runtime);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, app: App) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    let registry = app.registry.clone();
    match cli.command {
        Command::Dev { state_dir } => dev(config, app, state_dir).await,
        Command::Worker => {
            let engine = app.worker_engine(config).await?;
            serve(engine).await
        }
        Command::Migrate => {
            let store = Store::connect(
                config.database_url()?,
                2,
                config.connect_timeout,
                config.worker.lease,
            )
            .await?;
            store.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Start {
            workflow,
            inputs: Some(file),
            ..
        } => {
            let inputs = read_json_lines(&file)?;
            let definition = registry.get(&workflow)?;
            for (line, input) in &inputs {
                definition.check_input(input).with_context(|| {
                    format!(
                        "{} line {line}: not an input of {workflow:?}; no run was started",
                        file.display()
                    )
                })?;
            }
            config.worker.database_connections = 2;
            let engine = Engine::connect(config, registry).await?;
            let mut out = std::io::stdout().lock();
            for chunk in inputs.chunks(START_BATCH) {
                let starts: Vec<_> = chunk
                    .iter()
                    .map(|(_, input)| (workflow.clone(), input.clone(), StartOptions::default()))
                    .collect();
                for run in engine.start_batch(&starts).await? {
                    writeln!(out, "{run}")?;
                }
            }
            Ok(())
        }
        Command::Start {
            workflow,
            input,
            idempotency_key,
            wait,
            timeout,
            inputs: None,
        } => {
            let input: serde_json::Value =
                serde_json::from_str(&input).context("--input is not valid JSON")?;
            config.worker.database_connections = 2;
            let engine = Engine::connect(config, registry).await?;
            // The CLI call is the parent of the run's span.
            let run = engine
                .start(&workflow, input, StartOptions { idempotency_key })
                .instrument(tracing::info_span!("tributary start", workflow.name = %workflow))
                .await?;
            if !wait {
                println!("{run}");
                return Ok(());
            }
            let view = engine.wait(run, timeout).await?;
            match view.status.as_str() {
                "succeeded" => {
                    println!("{}", serde_json::to_string_pretty(&view.output)?);
                    Ok(())
                }
                other => bail!("run {run} {other}: {}", view.error.unwrap_or_default()),
            }
        }
        Command::Status { run, json } => {
            config.worker.database_connections = 2;
            let store = Store::connect(
                config.database_url()?,
                2,
                config.connect_timeout,
                config.worker.lease,
            )
            .await?;
            let view = store.run_view(run).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print_status(&view);
            }
            Ok(())
        }
        Command::Retry { run } => {
            config.worker.database_connections = 2;
            let engine = Engine::connect(config, registry).await?;
            engine.retry(run).await?;
            println!("run {run} resumed");
            Ok(())
        }
        Command::Cancel { run } => {
            let store = Store::connect(
                config.database_url()?,
                2,
                config.connect_timeout,
                config.worker.lease,
            )
            .await?;
            if store.cancel(run).await? {
                println!("run {run} cancelled");
            } else {
                println!("run {run} had already ended");
            }
            Ok(())
        }
        Command::Workflows => {
            for wf in registry.iter() {
                println!(
                    "{} v{}: {}",
                    wf.name(),
                    wf.version(),
                    wf.step_names().join(" → ")
                );
            }
            Ok(())
        }
        Command::Schedules { action } => {
            config.worker.database_connections = 2;
            let engine = Engine::connect(config, registry).await?;
            match action {
                Some(ScheduleAction::Pause { name }) => {
                    engine.pause_schedule(&name, true).await?;
                    println!("schedule {name} paused");
                }
                Some(ScheduleAction::Resume { name }) => {
                    engine.pause_schedule(&name, false).await?;
                    println!("schedule {name} resumed");
                }
                None => print_schedules(&engine).await?,
            }
            Ok(())
        }
        Command::Backfill {
            workflow,
            from,
            to,
            schedule,
            no_wait,
            timeout,
        } => {
            config.worker.database_connections = 2;
            let engine = Engine::connect(config, registry).await?;
            let window = BackfillWindow { from, to, schedule };
            backfill(&engine, &workflow, window, (!no_wait).then_some(timeout)).await
        }
        Command::DeadLetters { count } => {
            config.worker.database_connections = 2;
            let engine = Engine::connect(config, registry).await?;
            for entry in engine.transport().dead_letters(count).await? {
                let fields: Vec<String> = entry
                    .fields
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!("{} {}", entry.id, fields.join(" "));
            }
            Ok(())
        }
        Command::Secrets { action } => {
            let secrets = crate::secrets::Secrets::from_config(&config.secrets).await?;
            crate::secrets::run_command(&secrets, action, &mut std::io::stdout()).await?;
            Ok(())
        }
    }
}

fn print_status(view: &crate::store::RunView) {
    println!("run       {}", view.run_id);
    println!("workflow  {} v{}", view.workflow, view.version);
    println!("status    {}", view.status);
    println!("created   {}", view.created_at);
    if let Some(f) = view.finished_at {
        println!(
            "finished  {f} ({} ms)",
            (f - view.created_at).num_milliseconds()
        );
    }
    if let Some(e) = &view.error {
        println!("error     {e}");
    }
    if let Some(trace) = view
        .trace_context
        .as_deref()
        .and_then(crate::telemetry::propagation::trace_id)
    {
        println!("trace     {trace}");
    }
    if let Some(o) = &view.output {
        println!("output    {o}");
    }
    println!(
        "\n{:<24} {:<10} {:>7} {:>10}  error",
        "step", "status", "attempt", "ms"
    );
    for s in &view.steps {
        let ms = match (s.started_at, s.finished_at) {
            (Some(a), Some(b)) => format!("{}", (b - a).num_milliseconds()),
            _ => "-".into(),
        };
        println!(
            "{:<24} {:<10} {:>7} {:>10}  {}",
            s.step,
            s.status,
            s.attempt,
            ms,
            s.error.as_deref().unwrap_or("")
        );
    }
    println!("\nevents");
    for e in &view.events {
        println!(
            "  {} {:<15} {} {}",
            e.at.format("%H:%M:%S%.3f"),
            e.kind,
            e.step.as_deref().unwrap_or(""),
            e.detail.as_deref().unwrap_or("")
        );
    }
}

async fn print_schedules(engine: &Engine) -> anyhow::Result<()> {
    let rows = engine.store().schedules().await?;
    let now = chrono::Utc::now();
    println!(
        "{:<24} {:<14} {:<20} {:<16} {:<7} {:<26} {:<26} last run",
        "schedule", "workflow", "cron", "zone", "paused", "next fire (UTC)", "last tick (UTC)"
    );
    for s in engine.schedules() {
        let spec = s.schedule.spec();
        let row = rows.iter().find(|r| r.name == spec.name);
        let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into())
        };
        let last_run = row
            .and_then(|r| {
                r.last_run_id
                    .map(|id| format!("{id} {}", r.last_run_status.as_deref().unwrap_or("deleted")))
            })
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:<14} {:<20} {:<16} {:<7} {:<26} {:<26} {last_run}",
            spec.name,
            s.workflow,
            spec.cron,
            spec.timezone,
            row.is_some_and(|r| r.paused),
            fmt(s.schedule.next_after(now)),
            fmt(row.map(|r| r.last_tick)),
        );
    }
    Ok(())
}

/// Runs a worker until SIGTERM or Ctrl-C.
async fn serve(engine: Engine) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
        }
        signal.cancel();
    });
    // Up until the worker has drained, so the last scrapes see the shutdown.
    let endpoint = CancellationToken::new();
    let _endpoint_stops = endpoint.clone().drop_guard();
    if let Some(addr) = engine.config().metrics.listen {
        crate::telemetry::endpoint::serve(addr, endpoint.clone()).await?;
    }
    engine.run_worker(shutdown).await?;
    Ok(())
}

async fn dev(mut config: Config, app: App, state_dir: PathBuf) -> anyhow::Result<()> {
    // Kept alive until the engine stops; dropping them stops the servers.
    let mut _redis = None;
    let mut _postgres = None;
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating state directory {}", state_dir.display()))?;
    let state_dir = state_dir.canonicalize()?;
    if config.redis_url.is_none() {
        let redis = LocalRedis::start(RedisOptions {
            dir: Some(state_dir.join("redis")),
            port: None,
            durable: true,
        })
        .await
        .context("starting a private redis-server (or set REDIS_URL)")?;
        config.redis_url = Some(redis.url());
        _redis = Some(redis);
    }
    if config.database_url.is_none() {
        let pg = LocalPostgres::start(PostgresOptions {
            data_dir: Some(state_dir.join("postgres")),
            port: None,
            durable: true,
            settings: Vec::new(),
        })
        .await
        .context("starting a private PostgreSQL (or set DATABASE_URL)")?;
        config.database_url = Some(pg.url());
        _postgres = Some(pg);
    }
    eprintln!("tributary dev: state in {}", state_dir.display());
    eprintln!(
        "  REDIS_URL={}",
        config.redis_url.as_deref().unwrap_or_default()
    );
    eprintln!(
        "  DATABASE_URL={}",
        crate::store::redact_url(config.database_url.as_deref().unwrap_or_default())
    );
    eprintln!("  try: REDIS_URL=… DATABASE_URL=… tributary start hello --wait");
    let engine = app.worker_engine(config).await?;
    serve(engine).await
}

/// `2024-01-01` (midnight UTC) or an RFC 3339 time.
fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| format!("{s:?} is neither a date (2024-01-01) nor an RFC 3339 time"))
}

/// The period of a backfill, and which schedule gives its ticks.
struct BackfillWindow {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    schedule: Option<String>,
}

/// Runs per `start_batch` call of `tributary start --inputs`.
const START_BATCH: usize = 500;

/// Reads run inputs, one JSON value per line (blank lines skipped), from `path` or, for `-`,
/// standard input, each with its line number. A line that is not JSON is an error naming its
/// number.
fn read_json_lines(path: &std::path::Path) -> anyhow::Result<Vec<(usize, serde_json::Value)>> {
    use std::io::BufRead;
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut inputs = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: not a JSON value; no run was started",
                path.display(),
                number + 1
            )
        })?;
        inputs.push((number + 1, value));
    }
    Ok(inputs)
}

/// Most runs one backfill starts: a typo in a date should not start a million runs.
const BACKFILL_MAX_RUNS: usize = 10_000;

/// Starts one run per tick whose data interval lies in `[from, to)`, keyed like the
/// scheduler's own runs, then waits for them with a progress bar.
async fn backfill(
    engine: &Engine,
    workflow: &str,
    window: BackfillWindow,
    wait: Option<Duration>,
) -> anyhow::Result<()> {
    engine.registry().get(workflow)?;
    if window.from >= window.to {
        bail!("--from must be before --to");
    }
    let candidates: Vec<_> = engine
        .schedules()
        .iter()
        .filter(|s| s.workflow == workflow)
        .filter(|s| {
            window
                .schedule
                .as_ref()
                .is_none_or(|n| *n == s.schedule.spec().name)
        })
        .collect();
    let scheduled = match candidates.as_slice() {
        [one] => *one,
        [] => bail!(
            "workflow {workflow} has no enabled schedule{}: a backfill takes its windows from one",
            window
                .schedule
                .map(|n| format!(" named {n}"))
                .unwrap_or_default()
        ),
        many => bail!(
            "workflow {workflow} has several schedules ({}): choose one with --schedule",
            many.iter()
                .map(|s| s.schedule.spec().name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let schedule = &scheduled.schedule;
    let name = &schedule.spec().name;
    let mut starts = Vec::new();
    let mut at = window.from;
    while let Some(tick_at) = schedule.next_after(at) {
        let tick = schedule.tick(tick_at);
        if tick.end > window.to {
            break;
        }
        if tick.start >= window.from {
            if starts.len() == BACKFILL_MAX_RUNS {
                bail!("more than {BACKFILL_MAX_RUNS} ticks in that period: split it");
            }
            let input = schedule
                .input(&tick)
                .map_err(|problem| anyhow::anyhow!("schedule {name}: {problem}"))?;
            let options = StartOptions {
                idempotency_key: Some(crate::runtime::tick_key(name, tick_at)),
            };
            starts.push((workflow.to_owned(), input, options));
        }
        at = tick_at;
    }
    if starts.is_empty() {
        bail!(
            "no tick of schedule {name} ({}) has its interval inside that period",
            schedule.spec().cron
        );
    }
    let mut runs = Vec::with_capacity(starts.len());
    for chunk in starts.chunks(500) {
        runs.extend(engine.start_batch(chunk).await?);
    }
    println!(
        "backfill {workflow}: {} runs for schedule {name}",
        runs.len()
    );
    let Some(timeout) = wait else {
        for run in &runs {
            println!("{run}");
        }
        return Ok(());
    };
    let bar = indicatif::ProgressBar::new(runs.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} runs finished {msg}",
        )
        .expect("a valid progress template"),
    );
    let deadline = tokio::time::Instant::now() + timeout;
    let (succeeded, failed) = loop {
        let statuses = engine.statuses(&runs).await?;
        let done = |wanted: &[&str]| {
            statuses
                .values()
                .filter(|s| wanted.contains(&s.as_str()))
                .count()
        };
        let (succeeded, failed) = (done(&["succeeded"]), done(&["failed", "cancelled"]));
        bar.set_position((succeeded + failed) as u64);
        bar.set_message(format!("({failed} failed or cancelled)"));
        if succeeded + failed == runs.len() {
            break (succeeded, failed);
        }
        if tokio::time::Instant::now() >= deadline {
            bar.abandon();
            bail!(
                "gave up waiting after {}: {} of {} runs finished",
                humantime::format_duration(timeout),
                succeeded + failed,
                runs.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bar.finish();
    println!("backfill {workflow}: {succeeded} succeeded, {failed} failed or cancelled");
    if failed > 0 {
        bail!("{failed} runs did not succeed: see `tributary status <run>`");
    }
    Ok(())
}
