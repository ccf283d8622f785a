//! `tributary-bench`: throughput and latency figures of the engine on durable local servers.
//!
//! Build everything first (the bench spawns the `tributary` binary next to itself as its
//! worker processes), then run it:
//!
//! ```text
//! cargo build --release --bins
//! ./target/release/tributary-bench [--quick] [--repeat N] [--workers-concurrency N] [--only PARTS]
//! ./target/release/tributary-bench --telemetry-overhead [--quick] [--repeat N]
//! ```
//!
//! It starts its own Redis (append-only file, `appendfsync everysec`) and PostgreSQL (`fsync`
//! and `synchronous_commit` on) on free 127.0.0.1 ports in temp dirs, measures the raw limits
//! of those very servers with `redis-benchmark` and `pgbench`, then runs the engine workloads
//! (drain a backlog, multi-step throughput, latency at light load, start rate, idle worker
//! memory), each the median of `--repeat` runs against freshly truncated tables and a flushed
//! Redis. It prints figures and never asserts anything. `--telemetry-overhead` runs only the drain
//! workload, alternately with OpenTelemetry off (`OTEL_SDK_DISABLED=true`) and with spans and
//! metrics exported over OTLP/HTTP to a sink inside this process, and prints the difference. `docs/benchmarks.md` explains the
//! workloads and records measured figures.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{MissedTickBehavior, timeout};
use tributary::config::Config;
use tributary::runtime::{Engine, StartOptions};
use tributary::services::{self, LocalPostgres, LocalRedis, PostgresOptions, RedisOptions};

const USAGE: &str = "\
usage: tributary-bench [options]

Starts a durable Redis and PostgreSQL on 127.0.0.1, measures their raw limits
(redis-benchmark, pgbench) and the engine's workloads, and prints the figures.
Build first with `cargo build --release --bins`: the workers are the `tributary`
binary next to this one.

options:
  --repeat N                 runs per engine workload; the median is reported (default 3)
  --quick                    smaller counts: 2000 drained runs, 400 chains, 3 s of latency
  --workers-concurrency N    TRIBUTARY_WORKER_CONCURRENCY of each worker process (default 64)
  --worker-db-connections N  TRIBUTARY_WORKER_DATABASE_CONNECTIONS of each worker (default 16)
  --timeout SECS             hard limit of one workload run (default 120)
  --pg-stats                 preload pg_stat_statements and print, after each workload
                             run, the statements that took the most PostgreSQL time
  --only LIST                only these parts, comma-separated, of: raw, starts, drain,
                             chains, latency, rss (default: all of them)
  --telemetry-overhead       only the drain workload (1 worker), with OpenTelemetry off
                             (OTEL_SDK_DISABLED=true) and with spans and metrics exported
                             over OTLP/HTTP to an in-process sink; prints both and the difference
  -h, --help                 this text";

/// Runs started per `start_batch` call.
const START_BATCH: usize = 500;
/// How often completion is polled in PostgreSQL.
const POLL: Duration = Duration::from_millis(20);
/// How often the completion poll counts all runs while the newest run is still running.
const FULL_COUNT_EVERY: Duration = Duration::from_secs(1);
/// Limit of one query, one command, one `start_batch`.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long spawned workers may take to register with the consumer group.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Worker settings that the flags do not change.
const WORKER_LEASE: &str = "30s";
const WORKER_POLL_INTERVAL: &str = "50ms";
/// The bench's own engine (starts and nothing else).
const CLIENT_DB_CONNECTIONS: u32 = 4;
/// How long a worker idles before its memory is read.
const IDLE_BEFORE_RSS: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> Result<()> {
    let Some(opts) = Opts::parse()? else {
        println!("{USAGE}");
        return Ok(());
    };
    let worker_bin = std::env::current_exe()
        .context("locating this executable")?
        .with_file_name("tributary");
    ensure!(
        worker_bin.is_file(),
        "the worker binary {} is missing; build it with `cargo build --release --bins`",
        worker_bin.display()
    );
    let work_dir = std::env::temp_dir().join(format!("tributary-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;

    println!("tributary-bench: starting a durable Redis and PostgreSQL on 127.0.0.1 ...");
    let (redis, postgres) = tokio::join!(
        LocalRedis::start(RedisOptions {
            durable: true,
            ..RedisOptions::default()
        }),
        LocalPostgres::start(PostgresOptions {
            durable: true,
            settings: if opts.pg_stats {
                vec![
                    "shared_preload_libraries=pg_stat_statements".into(),
                    "pg_stat_statements.track_planning=on".into(),
                ]
            } else {
                Vec::new()
            },
            ..PostgresOptions::default()
        })
    );
    let redis = redis.context("starting redis-server")?;
    let postgres = postgres.context("starting PostgreSQL")?;
    let mut env = Env {
        pg: Pg::new(postgres.port()),
        resp: Resp::new(redis.port()),
        redis,
        postgres,
        opts,
        worker_bin,
        work_dir,
        counter: 0,
        notes: Vec::new(),
        worker_env: Vec::new(),
    };
    let result = if env.opts.telemetry_overhead {
        telemetry_overhead(&mut env).await
    } else {
        run(&mut env).await
    };
    if env.notes.is_empty() && result.is_ok() {
        let _ = std::fs::remove_dir_all(&env.work_dir);
    } else {
        println!(
            "\nworker logs and scripts kept in {}",
            env.work_dir.display()
        );
    }
    result
}

async fn run(env: &mut Env) -> Result<()> {
    let header = describe(env).await?;
    println!("{header}");

    // Creates the schema (the migrations run at connect).
    let (engine, _) = env.fresh_engine("schema").await?;
    close(&engine).await;

    let mut rows = Rows::default();
    let repeat = env.opts.repeat;
    let o = env.opts.clone();
    if o.runs("raw") {
        println!("\n== raw limits of these servers ==");
        raw_limits(env, &mut rows).await?;
    }

    if o.runs("starts") {
        println!("\n== (d) starts/s: one client, start_batch of {START_BATCH}, no worker ==");
        let ids = rows.add(&[(
            format!("(d) start {} hello, batches of {START_BATCH}", o.start_runs),
            "starts/s",
        )]);
        for rep in 1..=repeat {
            let result = starts_rep(env).await;
            rows.record(&ids, rep, result);
        }
    }

    for workers in [1, 2].into_iter().filter(|_| o.runs("drain")) {
        println!(
            "\n== (a) drain {} started hello runs, {workers} worker process(es) ==",
            o.drain_runs
        );
        let ids = rows.add(&[(
            format!("(a) drain {} hello, {workers} worker(s)", o.drain_runs),
            "runs/s",
        )]);
        for rep in 1..=repeat {
            let result = drain_rep(env, workers).await;
            rows.record(&ids, rep, result);
        }
    }

    for workers in [1, 2].into_iter().filter(|_| o.runs("chains")) {
        println!(
            "\n== (b) {} chain3 runs started at once, {workers} worker process(es) running ==",
            o.chain_runs
        );
        let ids = rows.add(&[(
            format!("(b) {} chain3, {workers} worker(s)", o.chain_runs),
            "workflows/s",
        )]);
        for rep in 1..=repeat {
            let result = chains_rep(env, workers).await;
            rows.record(&ids, rep, result);
        }
    }

    if o.runs("latency") {
        println!(
            "\n== (c) latency at light load: ~{} starts/s for {} s (at most {}), 1 worker ==",
            o.latency_rate, o.latency_secs, o.latency_max
        );
        let ids = rows.add(&[
            ("(c) hello: start -> step running, p50".into(), "ms"),
            ("(c) hello: start -> step running, p99".into(), "ms"),
            ("(c) hello: start -> run succeeded, p50".into(), "ms"),
            ("(c) hello: start -> run succeeded, p99".into(), "ms"),
            ("(c) hello: start() call, client side, p50".into(), "ms"),
            ("(c) hello: start() call, client side, p99".into(), "ms"),
        ]);
        for rep in 1..=repeat {
            let result = latency_rep(env, "hello", "hello").await;
            rows.record(&ids, rep, result);
        }
        let ids = rows.add(&[
            ("(c) chain3: start -> step c running, p50".into(), "ms"),
            ("(c) chain3: start -> step c running, p99".into(), "ms"),
            ("(c) chain3: start -> run succeeded, p50".into(), "ms"),
            ("(c) chain3: start -> run succeeded, p99".into(), "ms"),
        ]);
        for rep in 1..=repeat {
            let result = latency_rep(env, "chain3", "c")
                .await
                .map(|v| v[..4].to_vec());
            rows.record(&ids, rep, result);
        }
    }

    if o.runs("rss") {
        println!(
            "\n== (e) idle worker memory: VmRSS after {} s idle ==",
            IDLE_BEFORE_RSS.as_secs()
        );
        let ids = rows.add(&[("(e) idle worker process, VmRSS".into(), "MiB")]);
        for rep in 1..=repeat {
            let result = idle_rss_rep(env).await;
            rows.record(&ids, rep, result);
        }
    }
    env.notes.append(&mut rows.failures);

    println!("\n\n==================== summary ====================");
    println!("{header}");
    println!("  load average now (1, 5, 15 min): {}", load_average());
    println!("{}", rows.table(repeat));
    if env.notes.is_empty() {
        println!("\nnothing surprising: no timeouts, no failed runs, no worker warnings.");
    } else {
        println!("\nnotes (anything unexpected):");
        for note in &env.notes {
            println!("- {note}");
        }
    }
    Ok(())
}

/// `--telemetry-overhead`: the drain workload with OpenTelemetry off and with spans and
/// metrics exported, alternating run by run so that drift of the machine hits both alike.
async fn telemetry_overhead(env: &mut Env) -> Result<()> {
    let header = describe(env).await?;
    println!("{header}");
    let (engine, _) = env.fresh_engine("schema").await?;
    close(&engine).await;
    let sink = OtlpSink::start().await?;
    let n = env.opts.drain_runs;
    let off: Vec<(String, String)> = vec![("OTEL_SDK_DISABLED".into(), "true".into())];
    // The default: no OTLP endpoint, so no spans; metrics recorded for /metrics (not scraped).
    let default: Vec<(String, String)> = Vec::new();
    let on: Vec<(String, String)> = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", sink.port),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "1000".into()),
        ("TRIBUTARY_METRICS_LISTEN", "none".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut rows = Rows::default();
    let off_ids = rows.add(&[
        (
            format!("drain {n} hello, 1 worker, OTEL_SDK_DISABLED=true"),
            "runs/s",
        ),
        ("  worker CPU per run, telemetry off".into(), "us"),
    ]);
    let default_ids = rows.add(&[
        (
            format!("drain {n} hello, 1 worker, defaults (metrics, no export)"),
            "runs/s",
        ),
        ("  worker CPU per run, defaults".into(), "us"),
    ]);
    let on_ids = rows.add(&[
        (
            format!("drain {n} hello, 1 worker, spans + metrics over OTLP"),
            "runs/s",
        ),
        ("  worker CPU per run, export on".into(), "us"),
    ]);
    let mut medians: [Vec<[f64; 2]>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for rep in 1..=env.opts.repeat {
        for (mode, vars, ids) in [
            (0, &off, &off_ids),
            (1, &on, &on_ids),
            (2, &default, &default_ids),
        ] {
            println!(
                "\n== drain {n} hello, 1 worker, telemetry {} (run {rep}) ==",
                ["off", "exported", "default"][mode]
            );
            env.worker_env = vars.clone();
            let result = drain_rep(env, 1).await;
            if let Ok(v) = &result {
                medians[mode].push([v[0], v[1]]);
            }
            rows.record(ids, rep, result);
        }
    }
    env.worker_env.clear();
    env.notes.append(&mut rows.failures);
    let median = |runs: &[[f64; 2]], i: usize| {
        let mut v: Vec<f64> = runs.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| percentile(&v, 0.5))
    };
    println!("\n\n==================== summary ====================");
    println!("{header}");
    println!("  load average now (1, 5, 15 min): {}", load_average());
    println!("{}", rows.table(env.opts.repeat));
    for (mode, what) in [(1, "export on"), (2, "defaults")] {
        if let (Some(r0), Some(r1), Some(c0), Some(c1)) = (
            median(&medians[0], 0),
            median(&medians[mode], 0),
            median(&medians[0], 1),
            median(&medians[mode], 1),
        ) {
            println!(
                "{what} vs off (medians): throughput {:+.1}% ({} -> {} runs/s), worker CPU per \
                 run {:+.1}% ({} -> {} us)",
                (r1 - r0) * 100.0 / r0,
                num(r0),
                num(r1),
                (c1 - c0) * 100.0 / c0,
                num(c0),
                num(c1)
            );
        }
    }
    println!(
        "the OTLP sink received {} export requests ({} KiB)",
        sink.requests.load(std::sync::atomic::Ordering::Relaxed),
        sink.bytes.load(std::sync::atomic::Ordering::Relaxed) / 1024
    );
    for note in &env.notes {
        println!("- {note}");
    }
    Ok(())
}

/// An OTLP/HTTP receiver that accepts every export and keeps only counts: a stand-in for a
/// collector, so that the measured cost is the engine's (encoding, sending), not a
/// collector's.
struct OtlpSink {
    port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl OtlpSink {
    async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let sink = Self {
            port: listener.local_addr()?.port(),
            requests: Default::default(),
            bytes: Default::default(),
        };
        let (requests, bytes) = (sink.requests.clone(), sink.bytes.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (requests, bytes) = (requests.clone(), bytes.clone());
                tokio::spawn(async move {
                    let _ = Self::serve(conn, &requests, &bytes).await;
                });
            }
        });
        Ok(sink)
    }

    /// HTTP/1.1 with keep-alive: reads each request's headers and `Content-Length` body, and
    /// answers 200 with an empty protobuf body (a valid, empty `Export*ServiceResponse`).
    async fn serve(
        conn: TcpStream,
        requests: &std::sync::atomic::AtomicU64,
        bytes: &std::sync::atomic::AtomicU64,
    ) -> Result<()> {
        let mut conn = BufReader::new(conn);
        loop {
            let mut length = 0usize;
            let mut line = String::new();
            if conn.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            loop {
                line.clear();
                conn.read_line(&mut line).await?;
                let header = line.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            conn.read_exact(&mut body).await?;
            requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            bytes.fetch_add(length as u64, std::sync::atomic::Ordering::Relaxed);
            conn.get_mut()
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                )
                .await?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Opts {
    repeat: usize,
    quick: bool,
    telemetry_overhead: bool,
    concurrency: usize,
    db_connections: u32,
    timeout: Duration,
    drain_runs: usize,
    chain_runs: usize,
    start_runs: usize,
    latency_secs: u64,
    latency_rate: u64,
    latency_max: usize,
    raw_secs: u64,
    redis_requests: u64,
    /// The parts to run (`--only`); all when empty.
    only: Vec<String>,
    /// `--pg-stats`.
    pg_stats: bool,
}

/// The parts `--only` may name.
const PARTS: [&str; 6] = ["raw", "starts", "drain", "chains", "latency", "rss"];

impl Opts {
    /// Whether `--only` leaves this part in.
    fn runs(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }

    /// `None` when help was asked for.
    fn parse() -> Result<Option<Self>> {
        let mut repeat = 3;
        let mut quick = false;
        let mut telemetry_overhead = false;
        let mut concurrency = 64;
        let mut db_connections = 16;
        let mut timeout_secs = 120;
        let mut only = Vec::new();
        let mut pg_stats = false;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let mut value = || -> Result<String> {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| anyhow!("{name} needs a value\n\n{USAGE}"))
            };
            match name.as_str() {
                "-h" | "--help" => return Ok(None),
                "--quick" => quick = true,
                "--pg-stats" => pg_stats = true,
                "--telemetry-overhead" => telemetry_overhead = true,
                "--repeat" => repeat = positive(&name, &value()?)?,
                "--workers-concurrency" => concurrency = positive(&name, &value()?)?,
                "--worker-db-connections" => db_connections = positive(&name, &value()?)?,
                "--timeout" => timeout_secs = positive(&name, &value()?)?,
                "--only" => {
                    for part in value()?.split(',').map(str::trim) {
                        ensure!(
                            PARTS.contains(&part),
                            "--only takes parts among {PARTS:?}, not {part:?}"
                        );
                        only.push(part.to_owned());
                    }
                }
                other => bail!("unknown argument {other:?}\n\n{USAGE}"),
            }
        }
        let (drain_runs, chain_runs, start_runs, latency_secs, raw_secs, redis_requests) = if quick
        {
            (2_000, 400, 2_000, 3, 3, 20_000)
        } else {
            (10_000, 2_000, 10_000, 10, 10, 100_000)
        };
        Ok(Some(Self {
            repeat,
            quick,
            telemetry_overhead,
            concurrency,
            db_connections: u32::try_from(db_connections).context("--worker-db-connections")?,
            timeout: Duration::from_secs(timeout_secs as u64),
            drain_runs,
            chain_runs,
            start_runs,
            latency_secs,
            latency_rate: 100,
            latency_max: 1_000,
            raw_secs,
            redis_requests,
            only,
            pg_stats,
        }))
    }
}

fn positive(name: &str, v: &str) -> Result<usize> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{name} takes a positive integer, not {v:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Environment: servers, connections, worker processes
// ---------------------------------------------------------------------------------------------

struct Env {
    opts: Opts,
    // Connections are declared before the servers, so they close first.
    pg: Pg,
    resp: Resp,
    redis: LocalRedis,
    postgres: LocalPostgres,
    worker_bin: PathBuf,
    work_dir: PathBuf,
    counter: usize,
    /// Anything unexpected, repeated in the summary.
    notes: Vec<String>,
    /// Extra environment of the worker processes (the telemetry settings).
    worker_env: Vec<(String, String)>,
}

impl Env {
    /// Truncates the tables, checkpoints, flushes Redis, and connects a fresh engine with a
    /// key prefix of its own. Returns it and its prefix.
    async fn fresh_engine(&mut self, tag: &str) -> Result<(Engine, String)> {
        if self.counter > 0 {
            self.pg
                .execute("TRUNCATE tributary_runs, tributary_events CASCADE")
                .await?;
            self.pg.execute("CHECKPOINT").await?;
        }
        if self.opts.pg_stats {
            self.pg
                .execute(
                    "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
                     SELECT pg_stat_statements_reset()",
                )
                .await?;
        }
        expect_ok(self.resp.cmd(&["FLUSHALL"]).await?, "FLUSHALL")?;
        self.counter += 1;
        let prefix = format!("bench-{}-{tag}-{}", std::process::id(), self.counter);
        let mut config = Config {
            redis_url: Some(self.redis.url()),
            database_url: Some(self.postgres.url()),
            key_prefix: prefix.clone(),
            connect_timeout: Duration::from_secs(10),
            ..Config::default()
        };
        config.worker.database_connections = CLIENT_DB_CONNECTIONS;
        let registry = tributary_workflows::registry().context("building the registry")?;
        let engine = timeout(IO_TIMEOUT, Engine::connect(config, registry))
            .await
            .context("connecting the engine timed out")?
            .context("connecting the engine")?;
        Ok((engine, prefix))
    }

    fn spawn_workers(&self, prefix: &str, count: usize) -> Result<Vec<WorkerProc>> {
        (1..=count).map(|i| self.spawn_worker(prefix, i)).collect()
    }

    fn spawn_worker(&self, prefix: &str, index: usize) -> Result<WorkerProc> {
        let log = self.work_dir.join(format!("{prefix}-worker{index}.log"));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(&self.worker_bin);
        // Only the settings below: nothing inherited from the caller's environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TRIBUTARY_") {
                command.env_remove(key);
            }
        }
        command
            .arg("worker")
            .env("REDIS_URL", self.redis.url())
            .env("DATABASE_URL", self.postgres.url())
            .env("TRIBUTARY_KEY_PREFIX", prefix)
            .env(
                "TRIBUTARY_WORKER_CONCURRENCY",
                self.opts.concurrency.to_string(),
            )
            .env("TRIBUTARY_WORKER_LEASE", WORKER_LEASE)
            .env("TRIBUTARY_WORKER_POLL_INTERVAL", WORKER_POLL_INTERVAL)
            // The ingestion schedules would fire mid-measurement (GDELT's at :05, :20, …).
            .env("TRIBUTARY_WORKER_SCHEDULER", "false")
            .env(
                "TRIBUTARY_WORKER_DATABASE_CONNECTIONS",
                self.opts.db_connections.to_string(),
            )
            .env("TRIBUTARY_CONNECT_TIMEOUT", "10s")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.worker_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", self.worker_bin.display()))?;
        Ok(WorkerProc {
            pid: child.id().unwrap_or(0),
            child,
            log,
        })
    }

    /// Waits until every worker blocks in its first read. (Counted in `CLIENT LIST`: Redis 7.0
    /// does not list a consumer in `XINFO CONSUMERS` before something was delivered to it.
    /// Only this run's workers are connected: earlier ones were killed and reaped.)
    async fn wait_ready(&mut self, workers: &mut [WorkerProc]) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let joined = match self.resp.cmd(&["CLIENT", "LIST"]).await? {
                RespValue::Bulk(Some(text)) => text
                    .lines()
                    .filter(|l| l.contains(" cmd=xreadgroup "))
                    .count(),
                _ => 0,
            };
            if joined >= workers.len() {
                return Ok(());
            }
            check_alive(workers)?;
            if Instant::now() >= deadline {
                bail!(
                    "only {joined} of {} workers were reading within {READY_TIMEOUT:?}",
                    workers.len()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls PostgreSQL every 20 ms until `expected` runs have ended. Returns the time since
    /// `since` at which that was seen. Fails when the workload's time limit passes (with a
    /// diagnosis) or a worker exits.
    async fn wait_done(
        &mut self,
        expected: usize,
        since: Instant,
        workers: &mut [WorkerProc],
    ) -> Result<Duration> {
        let deadline = since + self.opts.timeout;
        let mut last = (0, Instant::now());
        // The full count below reads every run: about 2 ms of PostgreSQL CPU at 10,000 runs,
        // which every 20 ms is ~5 % of this 2-CPU machine taken from the workload it measures.
        // Until the newest run (run ids are UUIDv7: time-ordered; streams are FIFO, so it is
        // among the last to end) has ended, a primary-key lookup of it stands in, with a full
        // count every second for the progress a timeout reports.
        let mut counted = Instant::now();
        loop {
            if counted.elapsed() < FULL_COUNT_EVERY {
                let newest = self
                    .pg
                    .row("SELECT status FROM tributary_runs ORDER BY run_id DESC LIMIT 1")
                    .await?;
                if newest[0].as_deref() == Some("running") && Instant::now() < deadline {
                    check_alive(workers)?;
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            }
            counted = Instant::now();
            let row = self
                .pg
                .row(
                    "SELECT count(*) FILTER (WHERE status = 'succeeded'),
                            count(*) FILTER (WHERE status IN ('failed', 'cancelled'))
                     FROM tributary_runs",
                )
                .await?;
            let succeeded: usize = parse(&row[0])?;
            let failed: usize = parse(&row[1])?;
            if succeeded + failed >= expected {
                let at = since.elapsed();
                if failed > 0 {
                    self.note(format!(
                        "{failed} of {expected} runs ended failed or cancelled"
                    ));
                }
                return Ok(at);
            }
            if succeeded + failed != last.0 {
                last = (succeeded + failed, Instant::now());
            }
            check_alive(workers)?;
            if Instant::now() >= deadline {
                let diagnosis = self.diagnose(workers).await;
                bail!(
                    "timed out: {}/{expected} runs ended after {:?} (no progress for {:.1} s)\n{diagnosis}",
                    succeeded + failed,
                    self.opts.timeout,
                    last.1.elapsed().as_secs_f64()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What the steps of unfinished runs are doing, what Redis holds, what the workers said.
    async fn diagnose(&mut self, workers: &[WorkerProc]) -> String {
        let mut out = String::new();
        match self
            .pg
            .query(
                "SELECT s.step, s.status, count(*) FROM tributary_steps s
                 JOIN tributary_runs r ON r.run_id = s.run_id
                 WHERE r.status = 'running' GROUP BY 1, 2 ORDER BY 1, 2",
            )
            .await
        {
            Ok(rows) => {
                out.push_str("  steps of unfinished runs (step, status, count):");
                for r in rows {
                    out.push_str(&format!(
                        " [{} {} {}]",
                        cell(&r, 0),
                        cell(&r, 1),
                        cell(&r, 2)
                    ));
                }
                out.push('\n');
            }
            Err(e) => out.push_str(&format!("  (steps: {e:#})\n")),
        }
        let keys = self.redis_keys_summary().await;
        out.push_str(&format!("  redis: {keys}\n"));
        for w in workers {
            out.push_str(&format!(
                "  worker {} log tail:\n{}\n",
                w.pid,
                indent(&tail(&w.log, 8))
            ));
        }
        out
    }

    /// XLEN and XPENDING of every step stream in Redis.
    async fn redis_keys_summary(&mut self) -> String {
        let keys = match self.resp.cmd(&["KEYS", "*:steps"]).await {
            Ok(RespValue::Array(Some(items))) => items
                .into_iter()
                .filter_map(|v| v.text())
                .collect::<Vec<_>>(),
            other => return format!("KEYS failed: {other:?}"),
        };
        let mut parts = Vec::new();
        for key in keys {
            let len = self.resp.cmd(&["XLEN", &key]).await;
            let pending = self.resp.cmd(&["XPENDING", &key, "workers"]).await;
            let pending = match pending {
                Ok(RespValue::Array(Some(items))) => {
                    items.first().and_then(RespValue::int).unwrap_or(-1)
                }
                _ => -1,
            };
            let len = match len {
                Ok(v) => v.int().unwrap_or(-1),
                Err(_) => -1,
            };
            parts.push(format!("{key}: XLEN {len}, pending {pending}"));
        }
        parts.join("; ")
    }

    /// Kills the workers and notes warnings or errors in their logs.
    async fn finish(&mut self, what: &str, workers: Vec<WorkerProc>) {
        if self.opts.pg_stats {
            match self.pg_stats().await {
                Ok(table) => println!("  PostgreSQL time by statement ({what}):\n{table}"),
                Err(e) => self.note(format!("{what}: reading pg_stat_statements failed: {e:#}")),
            }
        }
        for mut w in workers {
            let _ = w.child.kill().await;
            let text = std::fs::read_to_string(&w.log).unwrap_or_default();
            let flagged: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("panicked"))
                .collect();
            if !flagged.is_empty() {
                self.note(format!(
                    "{what}: worker {} logged {} warning/error line(s) ({}); first: {}",
                    w.pid,
                    flagged.len(),
                    w.log.display(),
                    flagged[0]
                ));
            }
        }
    }

    /// The statements that took the most PostgreSQL time since the last reset (planning and
    /// execution), with calls and mean times.
    async fn pg_stats(&mut self) -> Result<String> {
        let rows = self
            .pg
            .query(
                "SELECT calls, round(total_plan_time::numeric, 1), round(total_exec_time::numeric, 1),
                        round((mean_plan_time * 1000)::numeric, 0), round((mean_exec_time * 1000)::numeric, 0),
                        regexp_replace(left(query, 400), '\\s+', ' ', 'g')
                 FROM pg_stat_statements
                 WHERE query NOT LIKE '%pg_stat_statements%'
                 ORDER BY total_plan_time + total_exec_time DESC LIMIT 12",
            )
            .await?;
        let mut out = String::from(
            "    calls    plan ms    exec ms  plan µs/call  exec µs/call  statement\n",
        );
        for row in rows {
            let query = cell(&row, 5);
            out.push_str(&format!(
                "  {:>7} {:>10} {:>10} {:>13} {:>13}  {}\n",
                cell(&row, 0),
                cell(&row, 1),
                cell(&row, 2),
                cell(&row, 3),
                cell(&row, 4),
                query.chars().take(110).collect::<String>()
            ));
        }
        Ok(out)
    }

    fn note(&mut self, note: String) {
        println!("  NOTE: {note}");
        self.notes.push(note);
    }
}

struct WorkerProc {
    child: Child,
    pid: u32,
    log: PathBuf,
}

fn check_alive(workers: &mut [WorkerProc]) -> Result<()> {
    for w in workers {
        if let Ok(Some(status)) = w.child.try_wait() {
            bail!(
                "worker process {} exited ({status}); its log ({}):\n{}",
                w.pid,
                w.log.display(),
                indent(&tail(&w.log, 15))
            );
        }
    }
    Ok(())
}

async fn close(engine: &Engine) {
    engine.transport().close().await;
    engine.store().close().await;
}

/// A kB field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in MiB.
fn proc_mib(pid: u32, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.is_empty() {
        "(empty)".into()
    } else {
        tail
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Engine workloads
// ---------------------------------------------------------------------------------------------

/// Starts `n` runs with `start_batch` calls of [`START_BATCH`]. Returns how long it took.
async fn start_many(
    engine: &Engine,
    workflow: &str,
    n: usize,
    limit: Duration,
    input: impl Fn(usize) -> Value,
) -> Result<Duration> {
    let t0 = Instant::now();
    let mut done = 0;
    while done < n {
        let m = START_BATCH.min(n - done);
        let batch: Vec<(String, Value, StartOptions)> = (done..done + m)
            .map(|k| (workflow.to_owned(), input(k), StartOptions::default()))
            .collect();
        let ids = timeout(IO_TIMEOUT, engine.start_batch(&batch))
            .await
            .context("start_batch timed out")?
            .context("start_batch")?;
        ensure!(
            ids.len() == m,
            "start_batch returned {} ids for {m}",
            ids.len()
        );
        done += m;
        if t0.elapsed() > limit && done < n {
            bail!("timed out: {done}/{n} runs started after {limit:?}");
        }
    }
    Ok(t0.elapsed())
}

/// (d) Starts per second from one client, no worker.
async fn starts_rep(env: &mut Env) -> Result<Vec<f64>> {
    let n = env.opts.start_runs;
    let (engine, _) = env.fresh_engine("starts").await?;
    let took = start_many(&engine, "hello", n, env.opts.timeout, |_| Value::Null).await;
    close(&engine).await;
    env.finish("starts", Vec::new()).await;
    let took = took?;
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "  {n} runs started in {:.2} s: {rate:.0} starts/s",
        took.as_secs_f64()
    );
    Ok(vec![rate])
}

/// (a) Starts the runs with no worker, then spawns the workers and times the drain.
async fn drain_rep(env: &mut Env, workers: usize) -> Result<Vec<f64>> {
    let n = env.opts.drain_runs;
    let (engine, prefix) = env.fresh_engine("drain").await?;
    let started = start_many(&engine, "hello", n, env.opts.timeout, |_| Value::Null).await;
    let started = match started {
        Ok(d) => d,
        Err(e) => {
            close(&engine).await;
            return Err(e);
        }
    };
    let t0 = Instant::now();
    let meter = CpuMeter::start(env, &[]);
    let mut procs = env.spawn_workers(&prefix, workers)?;
    let done = env.wait_done(n, t0, &mut procs).await;
    let cpu = meter.report(env, &procs, n, "run");
    let worker_us = meter.worker_secs(&procs) * 1e6 / n as f64;
    let peak: Vec<String> = procs
        .iter()
        .map(|w| proc_mib(w.pid, "VmHWM").map_or_else(|| "?".into(), |m| format!("{m:.1} MiB")))
        .collect();
    env.finish(&format!("drain, {workers} worker(s)"), procs)
        .await;
    close(&engine).await;
    let took = done?;
    let span = env
        .pg
        .scalar(
            "SELECT extract(epoch FROM max(r.finished_at) - min(s.started_at))::float8
             FROM tributary_runs r JOIN tributary_steps s ON s.run_id = r.run_id",
        )
        .await
        .ok()
        .and_then(|s| s.parse::<f64>().ok());
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "  started {n} runs in {:.2} s ({:.0} starts/s); drained in {:.2} s from spawning the \
         workers: {rate:.0} runs/s (first step start -> last run end in PostgreSQL: {}); worker \
         peak RSS: {}\n    {cpu}",
        started.as_secs_f64(),
        n as f64 / started.as_secs_f64(),
        took.as_secs_f64(),
        span.map_or_else(|| "?".into(), |s| format!("{s:.2} s")),
        peak.join(", ")
    );
    Ok(vec![rate, worker_us])
}

/// CPU time used over a window by PostgreSQL (the postmaster and its backends), Redis, the
/// worker processes and this process (the client), from `/proc/<pid>/stat`.
struct CpuMeter {
    at: Instant,
    pg: f64,
    redis: f64,
    client: f64,
    workers: Vec<(u32, f64)>,
}

impl CpuMeter {
    fn start(env: &Env, workers: &[WorkerProc]) -> Self {
        Self {
            at: Instant::now(),
            pg: env.postgres.pid().map_or(0.0, tree_cpu_secs),
            redis: env.redis.pid().map_or(0.0, tree_cpu_secs),
            client: proc_cpu_secs(std::process::id()).unwrap_or(0.0),
            workers: workers
                .iter()
                .map(|w| (w.pid, proc_cpu_secs(w.pid).unwrap_or(0.0)))
                .collect(),
        }
    }

    /// CPU seconds the worker processes used since the start.
    fn worker_secs(&self, workers: &[WorkerProc]) -> f64 {
        workers
            .iter()
            .map(|w| {
                let before = self
                    .workers
                    .iter()
                    .find(|(pid, _)| *pid == w.pid)
                    .map_or(0.0, |(_, cpu)| *cpu);
                proc_cpu_secs(w.pid).unwrap_or(0.0) - before
            })
            .sum()
    }

    /// CPU per unit of work, and how busy the machine's CPUs were.
    fn report(&self, env: &Env, workers: &[WorkerProc], units: usize, unit: &str) -> String {
        let elapsed = self.at.elapsed().as_secs_f64();
        let pg = env.postgres.pid().map_or(0.0, tree_cpu_secs) - self.pg;
        let redis = env.redis.pid().map_or(0.0, tree_cpu_secs) - self.redis;
        let client = proc_cpu_secs(std::process::id()).unwrap_or(0.0) - self.client;
        let worker = self.worker_secs(workers);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let per = |secs: f64| secs * 1e6 / units as f64;
        format!(
            "CPU per {unit}: PostgreSQL {:.0} us, worker(s) {:.0} us, Redis {:.0} us, bench client \
             {:.0} us; together {:.0}% of {cpus} CPUs over {elapsed:.2} s",
            per(pg),
            per(worker),
            per(redis),
            per(client),
            (pg + worker + redis + client) * 100.0 / (elapsed * cpus)
        )
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`, else 100).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// `(ppid, utime + stime + cutime + cstime)` of a process, in ticks.
fn proc_stat_ticks(pid: u32) -> Option<(u32, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is index 0, ppid 1,
    // utime 11, stime 12, cutime 13, cstime 14.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let mut ticks = 0.0;
    for i in 11..=14 {
        ticks += fields.get(i)?.parse::<f64>().ok()?;
    }
    Some((ppid, ticks))
}

/// CPU seconds of one process (its threads and reaped children).
fn proc_cpu_secs(pid: u32) -> Option<f64> {
    proc_stat_ticks(pid).map(|(_, t)| t / clock_ticks())
}

/// CPU seconds of a process and its live direct children (PostgreSQL's backends; those that
/// exited are in the parent's reaped-children times).
fn tree_cpu_secs(root: u32) -> f64 {
    let mut ticks = proc_stat_ticks(root).map_or(0.0, |(_, t)| t);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((ppid, t)) = proc_stat_ticks(pid)
                && ppid == root
            {
                ticks += t;
            }
        }
    }
    ticks / clock_ticks()
}

/// (b) Workers running first, then the runs are started; times start to last run end.
async fn chains_rep(env: &mut Env, workers: usize) -> Result<Vec<f64>> {
    let n = env.opts.chain_runs;
    let (engine, prefix) = env.fresh_engine("chains").await?;
    let mut procs = env.spawn_workers(&prefix, workers)?;
    let result = async {
        env.wait_ready(&mut procs).await?;
        let t0 = Instant::now();
        let meter = CpuMeter::start(env, &procs);
        let started = start_many(&engine, "chain3", n, env.opts.timeout, |k| {
            Value::from(k as u64)
        })
        .await?;
        let took = env.wait_done(n, t0, &mut procs).await?;
        let cpu = meter.report(env, &procs, n, "workflow");
        Ok::<_, anyhow::Error>((started, took, cpu))
    }
    .await;
    env.finish(&format!("chains, {workers} worker(s)"), procs)
        .await;
    close(&engine).await;
    let (started, took, cpu) = result?;
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "  {n} chain3 runs: starting took {:.2} s, all succeeded after {:.2} s: {rate:.0} \
         workflows/s = {:.0} steps/s\n    {cpu}",
        started.as_secs_f64(),
        took.as_secs_f64(),
        rate * 3.0
    );
    Ok(vec![rate])
}

/// (c) One worker; runs started one by one at a steady rate; latencies from PostgreSQL.
/// Returns step-running p50/p99, run-succeeded p50/p99, start() call p50/p99, in ms.
async fn latency_rep(env: &mut Env, workflow: &str, last_step: &str) -> Result<Vec<f64>> {
    let (engine, prefix) = env.fresh_engine("latency").await?;
    let mut procs = env.spawn_workers(&prefix, 1)?;
    let result = latency_measure(env, &engine, &mut procs, workflow, last_step).await;
    env.finish(&format!("latency {workflow}"), procs).await;
    close(&engine).await;
    result
}

async fn latency_measure(
    env: &mut Env,
    engine: &Engine,
    procs: &mut [WorkerProc],
    workflow: &str,
    last_step: &str,
) -> Result<Vec<f64>> {
    let input = |k: usize| match workflow {
        "chain3" => Value::from(k as u64),
        _ => Value::Null,
    };
    env.wait_ready(procs).await?;
    // One warm-up run, excluded from the figures.
    let warm = timeout(
        IO_TIMEOUT,
        engine.start(workflow, input(0), StartOptions::default()),
    )
    .await
    .context("start timed out")??;
    env.wait_done(1, Instant::now(), procs).await?;

    let period = Duration::from_micros(1_000_000 / env.opts.latency_rate);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let window = Duration::from_secs(env.opts.latency_secs);
    let t0 = Instant::now();
    let mut calls = Vec::new();
    while calls.len() < env.opts.latency_max && t0.elapsed() < window {
        ticker.tick().await;
        let c = Instant::now();
        timeout(
            IO_TIMEOUT,
            engine.start(workflow, input(calls.len() + 1), StartOptions::default()),
        )
        .await
        .context("start timed out")??;
        calls.push(c.elapsed().as_secs_f64() * 1000.0);
    }
    let achieved = calls.len() as f64 / t0.elapsed().as_secs_f64();
    env.wait_done(calls.len() + 1, t0, procs).await?;

    let row = env
        .pg
        .row(&format!(
            "SELECT count(*),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY s_ms),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY s_ms),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY e_ms),
                    percentile_cont(0.99) WITHIN GROUP (ORDER BY e_ms),
                    max(s_ms)
             FROM (SELECT (extract(epoch FROM s.started_at - r.created_at) * 1000)::float8 AS s_ms,
                          (extract(epoch FROM r.finished_at - r.created_at) * 1000)::float8 AS e_ms
                   FROM tributary_runs r
                   JOIN tributary_steps s ON s.run_id = r.run_id AND s.step = '{last_step}'
                   WHERE r.status = 'succeeded' AND r.run_id <> '{warm}') t"
        ))
        .await?;
    let count: usize = parse(&row[0])?;
    ensure!(
        count == calls.len(),
        "{count} of {} runs have a started step {last_step:?}",
        calls.len()
    );
    let figures: Vec<f64> = row[1..6].iter().map(parse::<f64>).collect::<Result<_>>()?;
    calls.sort_by(f64::total_cmp);
    let call_p50 = percentile(&calls, 0.5);
    let call_p99 = percentile(&calls, 0.99);
    println!(
        "  {} {workflow} runs at {achieved:.0} starts/s: start -> step {last_step} running p50 \
         {:.1} ms, p99 {:.1} ms, max {:.1} ms; start -> run succeeded p50 {:.1} ms, p99 {:.1} ms; \
         start() call p50 {call_p50:.1} ms, p99 {call_p99:.1} ms",
        calls.len(),
        figures[0],
        figures[1],
        figures[4],
        figures[2],
        figures[3]
    );
    if workflow == "chain3" {
        stage_breakdown(env, &warm.to_string()).await?;
    }
    Ok(vec![
        figures[0], figures[1], figures[2], figures[3], call_p50, call_p99,
    ])
}

/// Where the time from start to step `c` goes in `chain3`, stage by stage, from the rows'
/// timestamps: `created_at` and `finished_at` are the `now()` of their transactions (the time
/// its `BEGIN` ran), `started_at` the worker's clock just before the step function runs.
/// Printed only: a diagnosis, not a figure of the table.
async fn stage_breakdown(env: &mut Env, warm: &str) -> Result<()> {
    let stages = [
        ("start tx -> a running", "a.started_at - r.created_at"),
        (
            "a running -> a checkpoint tx",
            "a.finished_at - a.started_at",
        ),
        (
            "a checkpoint tx -> b running",
            "b.started_at - a.finished_at",
        ),
        (
            "b running -> b checkpoint tx",
            "b.finished_at - b.started_at",
        ),
        (
            "b checkpoint tx -> c running",
            "c.started_at - b.finished_at",
        ),
    ];
    let columns: Vec<String> = stages
        .iter()
        .map(|(_, expr)| {
            format!(
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM {expr}) * 1000), \
                 percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM {expr}) * 1000)"
            )
        })
        .collect();
    let row = env
        .pg
        .row(&format!(
            "SELECT {} FROM tributary_runs r
             JOIN tributary_steps a ON a.run_id = r.run_id AND a.step = 'a'
             JOIN tributary_steps b ON b.run_id = r.run_id AND b.step = 'b'
             JOIN tributary_steps c ON c.run_id = r.run_id AND c.step = 'c'
             WHERE r.status = 'succeeded' AND r.run_id <> '{warm}'",
            columns.join(", ")
        ))
        .await?;
    let figures: Vec<f64> = row.iter().map(parse::<f64>).collect::<Result<_>>()?;
    let parts: Vec<String> = stages
        .iter()
        .zip(figures.chunks(2))
        .map(|((name, _), f)| format!("{name} {:.2}/{:.2}", f[0], f[1]))
        .collect();
    println!("    stages, p50/p99 ms: {}", parts.join("; "));
    Ok(())
}

/// Linear interpolation between closest ranks, as PostgreSQL's `percentile_cont`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = p * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// (e) VmRSS of a worker process that has been idle for a while.
async fn idle_rss_rep(env: &mut Env) -> Result<Vec<f64>> {
    let (engine, prefix) = env.fresh_engine("idle").await?;
    let mut procs = env.spawn_workers(&prefix, 1)?;
    let result = async {
        env.wait_ready(&mut procs).await?;
        tokio::time::sleep(IDLE_BEFORE_RSS).await;
        check_alive(&mut procs)?;
        proc_mib(procs[0].pid, "VmRSS").ok_or_else(|| anyhow!("cannot read VmRSS"))
    }
    .await;
    env.finish("idle worker", procs).await;
    close(&engine).await;
    let rss = result?;
    println!("  idle worker VmRSS: {rss:.1} MiB");
    Ok(vec![rss])
}

// ---------------------------------------------------------------------------------------------
// Raw limits: redis-benchmark and pgbench against the same servers
// ---------------------------------------------------------------------------------------------

async fn raw_limits(env: &mut Env, rows: &mut Rows) -> Result<()> {
    let n = env.opts.redis_requests.to_string();
    let port = env.redis.port().to_string();
    match services::find_binary("redis-benchmark") {
        Err(e) => env.note(format!("redis-benchmark skipped: {e}")),
        Ok(bin) => {
            for pipeline in ["1", "16"] {
                let name = format!("raw redis-benchmark XADD, 50 conns, -P {pipeline}");
                let args = [
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-q",
                    "-n",
                    &n,
                    "-c",
                    "50",
                    "-P",
                    pipeline,
                    "XADD",
                    "benchstream",
                    "*",
                    "f",
                    "v",
                ];
                let result = run_tool(&bin, &args, &[])
                    .await
                    .and_then(|out| parse_redis_benchmark(&out));
                report_raw(env, rows, name, "ops/s", result);
            }
            let _ = env.resp.cmd(&["DEL", "benchstream"]).await;
        }
    }

    match services::find_binary("pgbench") {
        Err(e) => env.note(format!("pgbench skipped: {e}")),
        Ok(bin) => {
            env.pg
                .execute(
                    "DROP TABLE IF EXISTS bench_insert, bench_runs;
                     CREATE TABLE bench_insert (id bigserial PRIMARY KEY, v integer NOT NULL,
                                                at timestamptz NOT NULL DEFAULT now());
                     CREATE TABLE bench_runs AS
                         SELECT g AS id, 'running'::text AS status, 0 AS n
                         FROM generate_series(1, 100000) g;
                     ALTER TABLE bench_runs ADD PRIMARY KEY (id);
                     CHECKPOINT",
                )
                .await?;
            let insert = env.work_dir.join("insert.sql");
            std::fs::write(&insert, "INSERT INTO bench_insert (v) VALUES (1);\n")?;
            let step_like = env.work_dir.join("step-like.sql");
            std::fs::write(
                &step_like,
                "\\set r random(1, 100000)\n\
                 BEGIN;\n\
                 SELECT status FROM bench_runs WHERE id = :r FOR UPDATE;\n\
                 UPDATE bench_runs SET n = n + 1 WHERE id = :r;\n\
                 INSERT INTO bench_insert (v) VALUES (:r);\n\
                 INSERT INTO bench_insert (v) VALUES (:r);\n\
                 COMMIT;\n",
            )?;
            let port = env.postgres.port().to_string();
            let secs = env.opts.raw_secs.to_string();
            for (script, clients, label) in [
                (&insert, "8", "1-row INSERT tx"),
                (&insert, "32", "1-row INSERT tx"),
                (&step_like, "32", "step-like tx (6 statements)"),
            ] {
                let name = format!("raw pgbench {label}, {clients} clients");
                let script = script.to_string_lossy().into_owned();
                let args = [
                    "-n",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-c",
                    clients,
                    "-j",
                    "2",
                    "-T",
                    &secs,
                    "-f",
                    &script,
                    "postgres",
                ];
                let result = run_tool(&bin, &args, &[("PGCONNECT_TIMEOUT", "10")])
                    .await
                    .and_then(|out| parse_pgbench(&out));
                report_raw(env, rows, name, "tx/s", result);
            }
            env.pg
                .execute("DROP TABLE IF EXISTS bench_insert, bench_runs; CHECKPOINT")
                .await?;
        }
    }
    Ok(())
}

fn report_raw(
    env: &mut Env,
    rows: &mut Rows,
    name: String,
    unit: &'static str,
    result: Result<(f64, String)>,
) {
    match &result {
        Ok((rate, detail)) => println!("  {name}: {rate:.0} {unit} ({detail})"),
        Err(e) => env.note(format!("{name}: {e:#}")),
    }
    let ids = rows.add(&[(name, unit)]);
    rows.record(&ids, 1, result.map(|(rate, _)| vec![rate]));
}

/// Runs a tool to completion (at most 5 minutes); returns its standard output.
async fn run_tool(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<String> {
    let mut command = Command::new(bin);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        command.env(k, v);
    }
    let what = format!("{} {}", bin.display(), args.join(" "));
    let output = timeout(Duration::from_secs(300), command.output())
        .await
        .with_context(|| format!("{what} timed out"))?
        .with_context(|| format!("running {what}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// `XADD benchstream * f v: 123456.79 requests per second, p50=0.215 msec`.
fn parse_redis_benchmark(out: &str) -> Result<(f64, String)> {
    let line = out
        .split(['\r', '\n'])
        .rfind(|l| l.contains("requests per second"))
        .ok_or_else(|| anyhow!("no 'requests per second' in redis-benchmark's output: {out}"))?;
    let before = line.split("requests per second").next().unwrap_or("");
    let rate: f64 = before
        .split_whitespace()
        .last()
        .ok_or_else(|| anyhow!("cannot parse {line:?}"))?
        .parse()
        .with_context(|| format!("parsing {line:?}"))?;
    let detail = line
        .split_once("second, ")
        .map_or("", |(_, rest)| rest)
        .trim()
        .to_owned();
    Ok((rate, detail))
}

/// `tps = 1234.567890 (without initial connection time)` and `latency average = 6.4 ms`.
fn parse_pgbench(out: &str) -> Result<(f64, String)> {
    let tps_line = out
        .lines()
        .find(|l| l.starts_with("tps = "))
        .ok_or_else(|| anyhow!("no 'tps = ' in pgbench's output: {out}"))?;
    let tps: f64 = tps_line["tps = ".len()..]
        .split_whitespace()
        .next()
        .unwrap_or("")
        .parse()
        .with_context(|| format!("parsing {tps_line:?}"))?;
    let latency = out
        .lines()
        .find(|l| l.starts_with("latency average"))
        .unwrap_or("")
        .trim()
        .to_owned();
    Ok((tps, latency))
}

// ---------------------------------------------------------------------------------------------
// Description of the machine, the servers and the settings
// ---------------------------------------------------------------------------------------------

async fn describe(env: &mut Env) -> Result<String> {
    let mut out = String::from("machine:\n");
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "?".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(|| "?".into(), |kb| format!("{:.1} GiB", kb / 1048576.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    out.push_str(&format!("  nproc {cpus}, CPU {model}, memory {mem}\n"));
    out.push_str(&format!(
        "  load average before the bench (1, 5, 15 min): {} (other processes share the CPUs)\n",
        load_average()
    ));
    out.push_str(&format!(
        "  kernel {}, server data under {} ({})\n",
        kernel.trim(),
        std::env::temp_dir().display(),
        mount_of(&std::env::temp_dir())
    ));

    let info = env
        .resp
        .cmd(&["INFO", "server"])
        .await?
        .text()
        .unwrap_or_default();
    let redis_version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    let mut redis_settings = Vec::new();
    for name in ["appendonly", "appendfsync", "save"] {
        if let RespValue::Array(Some(items)) = env.resp.cmd(&["CONFIG", "GET", name]).await? {
            let value = items.get(1).and_then(RespValue::text).unwrap_or_default();
            redis_settings.push(format!("{name}={value:?}"));
        }
    }
    let pg_version = env.pg.scalar("SHOW server_version").await?;
    let pg_settings = env
        .pg
        .query(
            "SELECT name, current_setting(name) FROM pg_settings
             WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method',
                            'commit_delay', 'shared_buffers', 'max_connections', 'max_wal_size',
                            'checkpoint_timeout')
             ORDER BY name",
        )
        .await?
        .iter()
        .map(|r| format!("{}={}", cell(r, 0), cell(r, 1)))
        .collect::<Vec<_>>();
    out.push_str("servers (started by this bench, 127.0.0.1 only):\n");
    out.push_str(&format!(
        "  Redis {redis_version} on port {}: {}\n",
        env.redis.port(),
        redis_settings.join(", ")
    ));
    out.push_str(&format!(
        "  PostgreSQL {pg_version} on port {}: {}\n",
        env.postgres.port(),
        pg_settings.join(", ")
    ));
    let o = &env.opts;
    out.push_str("settings:\n");
    out.push_str(&format!(
        "  repeat {} (median reported){}, workload time limit {} s\n",
        o.repeat,
        if o.quick { ", --quick" } else { "" },
        o.timeout.as_secs()
    ));
    out.push_str(&format!(
        "  worker processes: `tributary worker` with TRIBUTARY_WORKER_CONCURRENCY={}, \
         TRIBUTARY_WORKER_DATABASE_CONNECTIONS={}, TRIBUTARY_WORKER_LEASE={WORKER_LEASE}, \
         TRIBUTARY_WORKER_POLL_INTERVAL={WORKER_POLL_INTERVAL}, \
         TRIBUTARY_WORKER_SCHEDULER=false, other keys default\n",
        o.concurrency, o.db_connections
    ));
    out.push_str(&format!(
        "  client: one engine, {CLIENT_DB_CONNECTIONS} PostgreSQL connections, start_batch of \
         {START_BATCH}; completion polled every {} ms\n",
        POLL.as_millis()
    ));
    out.push_str(&format!(
        "  counts: drain {} hello runs, {} chain3 runs, {} starts, latency ~{}/s for {} s \
         (at most {}); raw: redis-benchmark -n {}, pgbench -T {}\n",
        o.drain_runs,
        o.chain_runs,
        o.start_runs,
        o.latency_rate,
        o.latency_secs,
        o.latency_max,
        o.redis_requests,
        o.raw_secs
    ));
    out.push_str(
        "  before each engine run: TRUNCATE tributary_runs, tributary_events CASCADE, CHECKPOINT, FLUSHALL, \
         and a new key prefix",
    );
    Ok(out)
}

/// The first three fields of `/proc/loadavg`.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    if fields.is_empty() {
        "?".into()
    } else {
        fields.join(" ")
    }
}

/// The mount point and file system holding `path`, from `/proc/mounts`.
fn mount_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, point, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(point)
                .then(|| (point.len(), format!("{fs} on {dev}, mounted at {point}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "file system unknown".into(), |(_, s)| s)
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Rows {
    rows: Vec<Row>,
    /// One line per failed run, for the notes.
    failures: Vec<String>,
}

struct Row {
    name: String,
    unit: &'static str,
    samples: Vec<Result<f64, String>>,
}

impl Rows {
    fn add(&mut self, rows: &[(String, &'static str)]) -> Vec<usize> {
        rows.iter()
            .map(|(name, unit)| {
                self.rows.push(Row {
                    name: name.clone(),
                    unit,
                    samples: Vec::new(),
                });
                self.rows.len() - 1
            })
            .collect()
    }

    /// Records one run's figures (one per row), or its failure in every row.
    fn record(&mut self, ids: &[usize], rep: usize, result: Result<Vec<f64>>) {
        match result {
            Ok(values) => {
                for (&id, v) in ids.iter().zip(values) {
                    self.rows[id].samples.push(Ok(v));
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                println!("  run {rep} FAILED: {message}");
                let first = message.lines().next().unwrap_or("").to_owned();
                let name = ids.first().map_or("", |&id| self.rows[id].name.as_str());
                self.failures
                    .push(format!("{name}, run {rep} failed: {first}"));
                for &id in ids {
                    self.rows[id].samples.push(Err(first.clone()));
                }
            }
        }
    }

    fn table(&self, repeat: usize) -> String {
        let width = self.rows.iter().map(|r| r.name.len()).max().unwrap_or(10);
        let mut out = format!(
            "results (engine rows: median of {repeat} runs, [min - max]; raw rows: one run)\n"
        );
        out.push_str(&format!(
            "{:<width$}  {:>10}  {:<12} {}\n",
            "workload", "median", "unit", "range / problems"
        ));
        out.push_str(&format!("{}\n", "-".repeat(width + 50)));
        for row in &self.rows {
            let mut ok: Vec<f64> = row.samples.iter().filter_map(|s| s.clone().ok()).collect();
            ok.sort_by(f64::total_cmp);
            let errors: Vec<&String> = row
                .samples
                .iter()
                .filter_map(|s| s.as_ref().err())
                .collect();
            let (median, mut range) = if ok.is_empty() {
                ("-".to_owned(), String::new())
            } else {
                let range = if ok.len() > 1 {
                    format!("[{} - {}]", num(ok[0]), num(ok[ok.len() - 1]))
                } else {
                    String::new()
                };
                (num(percentile(&ok, 0.5)), range)
            };
            if !errors.is_empty() {
                range.push_str(&format!(
                    " {} of {} run(s) failed: {}",
                    errors.len(),
                    row.samples.len(),
                    errors[0]
                ));
            }
            out.push_str(&format!(
                "{:<width$}  {:>10}  {:<12} {}\n",
                row.name,
                median,
                row.unit,
                range.trim()
            ));
        }
        out
    }
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn parse<T: std::str::FromStr>(cell: &Option<String>) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    let text = cell.as_deref().ok_or_else(|| anyhow!("unexpected NULL"))?;
    text.parse()
        .map_err(|e| anyhow!("cannot parse {text:?}: {e}"))
}

fn cell(row: &[Option<String>], i: usize) -> String {
    row.get(i)
        .and_then(Clone::clone)
        .unwrap_or_else(|| "NULL".into())
}

fn expect_ok(reply: RespValue, what: &str) -> Result<()> {
    match reply {
        RespValue::Error(e) => bail!("{what}: {e}"),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal PostgreSQL client: simple-query protocol, trust authentication, text results.
// (The workflows package has no direct sqlx dependency, and this is all the bench needs.)
// ---------------------------------------------------------------------------------------------

type PgRow = Vec<Option<String>>;

struct Pg {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
}

impl Pg {
    fn new(port: u16) -> Self {
        Self { port, conn: None }
    }

    /// Runs `sql` (one or more statements) and returns the rows of the last result.
    async fn query(&mut self, sql: &str) -> Result<Vec<PgRow>> {
        if self.conn.is_none() {
            let conn = timeout(IO_TIMEOUT, pg_connect(self.port))
                .await
                .context("connecting to PostgreSQL timed out")??;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected above");
        match timeout(IO_TIMEOUT, pg_query(conn, sql)).await {
            Ok(Ok(Ok(rows))) => Ok(rows),
            // An error reply: the connection is still usable.
            Ok(Ok(Err(message))) => Err(anyhow!("PostgreSQL: {message} (in {sql:?})")),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e.context(format!("PostgreSQL connection failed during {sql:?}")))
            }
            Err(_) => {
                self.conn = None;
                bail!("PostgreSQL query timed out after {IO_TIMEOUT:?}: {sql:?}")
            }
        }
    }

    async fn execute(&mut self, sql: &str) -> Result<()> {
        self.query(sql).await.map(drop)
    }

    async fn row(&mut self, sql: &str) -> Result<PgRow> {
        self.query(sql)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no row from {sql:?}"))
    }

    async fn scalar(&mut self, sql: &str) -> Result<String> {
        Ok(cell(&self.row(sql).await?, 0))
    }
}

async fn pg_connect(port: u16) -> Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| format!("connecting to PostgreSQL on 127.0.0.1:{port}"))?;
    stream.set_nodelay(true)?;
    let mut conn = BufReader::new(stream);
    let mut body = 196_608_i32.to_be_bytes().to_vec(); // protocol 3.0
    for (k, v) in [
        ("user", "postgres"),
        ("database", "postgres"),
        ("application_name", "tributary-bench"),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    message.extend(body);
    conn.get_mut().write_all(&message).await?;
    loop {
        let (tag, body) = pg_message(&mut conn).await?;
        match tag {
            b'R' => {
                let code = body.get(..4).map_or(-1, |b| {
                    i32::from_be_bytes(b.try_into().expect("four bytes"))
                });
                ensure!(
                    code == 0,
                    "PostgreSQL asks for authentication (method {code}); the bench expects trust"
                );
            }
            b'E' => bail!("PostgreSQL refused the connection: {}", pg_error(&body)),
            b'Z' => return Ok(conn),
            _ => {} // ParameterStatus, BackendKeyData, NoticeResponse...
        }
    }
}

/// Sends a simple query; the outer error is a broken connection, the inner one an error reply.
async fn pg_query(
    conn: &mut BufReader<TcpStream>,
    sql: &str,
) -> Result<Result<Vec<PgRow>, String>> {
    let mut message = vec![b'Q'];
    message.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    message.extend_from_slice(sql.as_bytes());
    message.push(0);
    conn.get_mut().write_all(&message).await?;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let (tag, body) = pg_message(conn).await?;
        match tag {
            b'T' => rows.clear(),
            b'D' => rows.push(pg_data_row(&body)?),
            b'E' => error = Some(pg_error(&body)),
            b'Z' => return Ok(error.map_or(Ok(rows), Err)),
            _ => {} // CommandComplete, EmptyQueryResponse, NoticeResponse...
        }
    }
}

async fn pg_message(conn: &mut BufReader<TcpStream>) -> Result<(u8, Vec<u8>)> {
    let tag = conn.read_u8().await.context("reading from PostgreSQL")?;
    let len = conn.read_i32().await?;
    ensure!(
        (4..=1 << 30).contains(&len),
        "bad PostgreSQL message length {len}"
    );
    let mut body = vec![0; len as usize - 4];
    conn.read_exact(&mut body).await?;
    Ok((tag, body))
}

fn pg_data_row(body: &[u8]) -> Result<PgRow> {
    let mut at = 2;
    let columns = i16::from_be_bytes(body.get(..2).context("short DataRow")?.try_into()?);
    let mut row = Vec::with_capacity(columns.max(0) as usize);
    for _ in 0..columns {
        let len = i32::from_be_bytes(body.get(at..at + 4).context("short DataRow")?.try_into()?);
        at += 4;
        if len < 0 {
            row.push(None);
        } else {
            let end = at + len as usize;
            let bytes = body.get(at..end).context("short DataRow")?;
            row.push(Some(String::from_utf8_lossy(bytes).into_owned()));
            at = end;
        }
    }
    Ok(row)
}

fn pg_error(body: &[u8]) -> String {
    let mut severity = "";
    let mut message = "";
    let mut code = "";
    for field in body.split(|&b| b == 0) {
        let Some((&kind, text)) = field.split_first() else {
            continue;
        };
        let text = std::str::from_utf8(text).unwrap_or("?");
        match kind {
            b'S' => severity = text,
            b'M' => message = text,
            b'C' => code = text,
            _ => {}
        }
    }
    format!("{severity} {code}: {message}")
}

// ---------------------------------------------------------------------------------------------
// A minimal Redis client (RESP2), for FLUSHALL, INFO, CONFIG GET and stream diagnostics.
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum RespValue {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Option<Vec<RespValue>>),
}

impl RespValue {
    fn text(&self) -> Option<String> {
        match self {
            RespValue::Simple(s) | RespValue::Bulk(Some(s)) => Some(s.clone()),
            _ => None,
        }
    }

    fn int(&self) -> Option<i64> {
        match self {
            RespValue::Int(i) => Some(*i),
            _ => None,
        }
    }
}

struct Resp {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
}

type RespFuture<'a> = Pin<Box<dyn Future<Output = Result<RespValue>> + Send + 'a>>;

impl Resp {
    fn new(port: u16) -> Self {
        Self { port, conn: None }
    }

    /// Sends one command; an error reply is returned as [`RespValue::Error`].
    async fn cmd(&mut self, args: &[&str]) -> Result<RespValue> {
        if self.conn.is_none() {
            let stream = timeout(
                IO_TIMEOUT,
                TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)),
            )
            .await
            .context("connecting to Redis timed out")?
            .with_context(|| format!("connecting to Redis on 127.0.0.1:{}", self.port))?;
            stream.set_nodelay(true)?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let mut message = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            message.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            message.extend_from_slice(arg.as_bytes());
            message.extend_from_slice(b"\r\n");
        }
        let exchange = async {
            conn.get_mut().write_all(&message).await?;
            read_resp(conn).await
        };
        match timeout(IO_TIMEOUT, exchange).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e.context(format!("Redis {}", args.join(" "))))
            }
            Err(_) => {
                self.conn = None;
                bail!("Redis {} timed out", args.join(" "))
            }
        }
    }
}

fn read_resp(conn: &mut BufReader<TcpStream>) -> RespFuture<'_> {
    Box::pin(async move {
        let mut raw = String::new();
        ensure!(
            conn.read_line(&mut raw).await? > 0,
            "Redis closed the connection"
        );
        let line = raw.trim_end_matches(['\r', '\n']);
        ensure!(!line.is_empty(), "empty Redis reply line");
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Ok(RespValue::Simple(rest.to_owned())),
            "-" => Ok(RespValue::Error(rest.to_owned())),
            ":" => Ok(RespValue::Int(rest.parse()?)),
            "$" => {
                let len: i64 = rest.parse()?;
                if len < 0 {
                    return Ok(RespValue::Bulk(None));
                }
                let mut buf = vec![0; len as usize + 2];
                conn.read_exact(&mut buf).await?;
                buf.truncate(len as usize);
                Ok(RespValue::Bulk(Some(
                    String::from_utf8_lossy(&buf).into_owned(),
                )))
            }
            "*" => {
                let len: i64 = rest.parse()?;
                if len < 0 {
                    return Ok(RespValue::Array(None));
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(read_resp(conn).await?);
                }
                Ok(RespValue::Array(Some(items)))
            }
            _ => bail!("unexpected Redis reply {line:?}"),
        }
    })
}
