//! Shared by the ingestion tests: throwaway Redis + PostgreSQL, a mock HTTP server standing in
//! for the public API, and an engine with the ingestion resources and a worker in this process.
//!
//! Each test file that uses it says `mod support;`.

#![allow(dead_code)] // each test file uses a different part

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tributary::config::Config;
use tributary::runtime::{Engine, StartOptions};
use tributary::store::RunView;
use tributary::testing::TestEnv;
use wiremock::MockServer;

/// How long a test waits for a run.
pub const WAIT: Duration = Duration::from_secs(60);

/// Servers, a mock API, an engine with the ingestion resources, and a worker.
pub struct SourceFixture {
    pub env: TestEnv,
    pub mock: MockServer,
    pub engine: Engine,
    /// A pool on the database the rows land in, for assertions.
    pub db: PgPool,
    stop: CancellationToken,
    worker: Option<tokio::task::JoinHandle<()>>,
}

impl SourceFixture {
    /// Starts everything. `settings` receives the mock server's base URL and returns the
    /// `[sources.*]` configuration as TOML (e.g. `[sources.fred]\nbase-url = "{uri}/fred"`).
    /// `[secrets]` and `[schedules.*]` tables are taken too, and when there are any the scheduler runs (it is
    /// off otherwise, so that declared schedules do not fire in the middle of a test).
    pub async fn start(settings: impl FnOnce(&str) -> String) -> Self {
        let mock = MockServer::start().await;
        Self::start_with(mock, settings).await
    }

    /// As [`SourceFixture::start`], with a mock server the test has already set up.
    pub async fn start_with(mock: MockServer, settings: impl FnOnce(&str) -> String) -> Self {
        let env = TestEnv::start().await;
        let mut config = env.config();
        let extra: Config = toml::from_str(&settings(&mock.uri())).expect("valid settings TOML");
        config.sources = extra.sources;
        config.secrets = extra.secrets;
        // The APIs' real limits (one Comtrade call every 6 s) would make tests slow; a test
        // of the limits sets its own.
        for (api, _) in tributary_workflows::sources::DEFAULT_LIMITS {
            config
                .sources
                .entry((*api).to_owned())
                .or_default()
                .entry("rate-limit")
                .or_insert_with(|| "1000/s".into());
        }
        config.worker.scheduler = !extra.schedules.is_empty();
        config.schedules = extra.schedules;
        let registry = tributary_workflows::registry().expect("valid workflows");
        let engine = Engine::connect(config, registry)
            .await
            .expect("engine connects");
        let resources = tributary_workflows::sources::setup(engine.clone())
            .await
            .expect("ingestion resources");
        let engine = engine.with_resources(resources);
        let db = PgPool::connect(&env.postgres.url()).await.expect("pool");
        let stop = CancellationToken::new();
        let worker = {
            let engine = engine.clone();
            let stop = stop.clone();
            tokio::spawn(async move { engine.run_worker(stop).await.expect("worker runs") })
        };
        Self {
            env,
            mock,
            engine,
            db,
            stop,
            worker: Some(worker),
        }
    }

    /// Starts a run of `workflow` with `input` and waits for it to end.
    pub async fn run(&self, workflow: &str, input: Value) -> RunView {
        let run = self
            .engine
            .start(workflow, input, StartOptions::default())
            .await
            .expect("run starts");
        self.engine.wait(run, WAIT).await.expect("run ends")
    }

    /// `SELECT count(*) FROM <table>`.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.db)
            .await
            .expect("count")
    }

    /// The cursor of `source` under `key`, as JSON.
    pub async fn cursor(&self, source: &str, key: &str) -> Option<Value> {
        sqlx::query_scalar("SELECT value FROM ingest_cursors WHERE source = $1 AND key = $2")
            .bind(source)
            .bind(key)
            .fetch_optional(&self.db)
            .await
            .expect("cursor")
    }
}

impl Drop for SourceFixture {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(w) = self.worker.take() {
            w.abort();
        }
    }
}

/// Asserts that a run succeeded, printing its steps when it did not.
pub fn assert_succeeded(view: &RunView) {
    assert_eq!(
        view.status, "succeeded",
        "run {} {}: {:?}\nsteps: {:#?}",
        view.run_id, view.status, view.error, view.steps
    );
}

/// Asserts that a run failed with an error containing `needle`.
pub fn assert_failed_with(view: &RunView, needle: &str) {
    assert_eq!(
        view.status, "failed",
        "run {}: {:#?}",
        view.run_id, view.steps
    );
    let errors: Vec<String> = view
        .steps
        .iter()
        .filter_map(|s| s.error.clone())
        .chain(view.error.clone())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains(needle)),
        "no error mentions {needle:?}: {errors:#?}"
    );
}
