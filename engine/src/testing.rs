//! The test harness: a throwaway Redis and PostgreSQL per test, an engine connected to them,
//! and worker processes to kill, stop and restart.
//!
//! Used by the integration tests of this workspace and usable by anyone testing their own
//! workflows. It starts servers from the binaries on this machine (see [`crate::services`]);
//! a missing binary fails with a message saying what to install.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::config::Config;
use crate::runtime::Engine;
use crate::services::{LocalPostgres, LocalRedis, PostgresOptions, RedisOptions};
use crate::workflow::Registry;

/// A private Redis (no persistence: a restart loses everything) and PostgreSQL.
#[derive(Debug)]
pub struct TestEnv {
    /// The Redis server.
    pub redis: LocalRedis,
    /// The PostgreSQL server.
    pub postgres: LocalPostgres,
}

impl TestEnv {
    /// Starts both servers.
    ///
    /// # Panics
    /// When a server cannot start; the message names what to install.
    pub async fn start() -> Self {
        let (redis, postgres) = tokio::join!(
            LocalRedis::start(RedisOptions::default()),
            LocalPostgres::start(PostgresOptions::default())
        );
        let redis = redis.unwrap_or_else(|e| panic!("cannot start the test Redis: {e}"));
        let postgres = postgres.unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}"));
        Self { redis, postgres }
    }

    /// A configuration for these servers with timings short enough for tests: a 2 s lease,
    /// 50 ms polls, a 5 s shutdown grace.
    pub fn config(&self) -> Config {
        let mut config = Config {
            redis_url: Some(self.redis.url()),
            database_url: Some(self.postgres.url()),
            connect_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        config.worker.lease = Duration::from_secs(2);
        config.worker.poll_interval = Duration::from_millis(50);
        config.worker.read_block = Duration::from_millis(200);
        config.worker.epoch_check = Duration::from_millis(200);
        config.worker.shutdown_grace = Duration::from_secs(5);
        config.worker.database_connections = 8;
        // Declared schedules (an hourly heartbeat, say) would start runs in the middle of
        // unrelated tests; scheduler tests turn it back on.
        config.worker.scheduler = false;
        config
    }

    /// An engine on these servers.
    ///
    /// # Panics
    /// When it cannot connect.
    pub async fn engine(&self, registry: Registry) -> Engine {
        Engine::connect(self.config(), registry)
            .await
            .unwrap_or_else(|e| panic!("cannot connect the test engine: {e}"))
    }

    /// Starts `binary worker` as a separate process with this environment's configuration
    /// (passed as environment variables) plus `extra_env`.
    ///
    /// # Panics
    /// When the process cannot be spawned.
    pub fn spawn_worker(&self, binary: &Path, extra_env: &[(&str, &str)]) -> WorkerProcess {
        let config = self.config();
        let fmt = |d: Duration| format!("{}ms", d.as_millis());
        let mut command = Command::new(binary);
        command
            .arg("worker")
            .env("REDIS_URL", self.redis.url())
            .env("DATABASE_URL", self.postgres.url())
            .env("TRIBUTARY_WORKER_LEASE", fmt(config.worker.lease))
            .env(
                "TRIBUTARY_WORKER_POLL_INTERVAL",
                fmt(config.worker.poll_interval),
            )
            .env("TRIBUTARY_WORKER_READ_BLOCK", fmt(config.worker.read_block))
            .env(
                "TRIBUTARY_WORKER_EPOCH_CHECK",
                fmt(config.worker.epoch_check),
            )
            .env(
                "TRIBUTARY_WORKER_SHUTDOWN_GRACE",
                fmt(config.worker.shutdown_grace),
            )
            .env("TRIBUTARY_WORKER_DATABASE_CONNECTIONS", "4")
            .env(
                "TRIBUTARY_WORKER_SCHEDULER",
                config.worker.scheduler.to_string(),
            )
            .env("TRIBUTARY_CONNECT_TIMEOUT", "5s")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", binary.display()));
        // Drain stderr continuously (a full pipe would block the worker) and keep the lines.
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lock().expect("log lock").push(line);
                }
            });
        }
        WorkerProcess { child, logs }
    }
}

/// A worker process. Dropping it kills it.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl WorkerProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Sends a signal by name (`KILL`, `TERM`, `STOP`, `CONT`) with the `kill` command.
    ///
    /// # Panics
    /// When `kill` cannot be run.
    pub async fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the process to exit, at most `timeout`. `None` if it did not.
    pub async fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// The lines the process wrote to stderr so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Waits until a stderr line contains `needle`, at most `timeout`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        eventually(timeout, || async {
            self.logs().iter().any(|l| l.contains(needle))
        })
        .await
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes. Returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
