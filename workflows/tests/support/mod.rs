//! Shared by the ingestion tests: throwaway Redis + PostgreSQL, a mock HTTP server standing in
//! for the public API, and an engine with the ingestion resources and a worker in this process.
//!
//! Each test file that uses it says `mod support;`. The OTLP receivers of the telemetry tests
//! are in [`otlp`].

#![allow(dead_code)] // each test file uses a different part

pub mod otlp;

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tributary::config::Config;
use tributary::runtime::{Engine, StartOptions};
use tributary::store::RunView;
use tributary::testing::TestEnv;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

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

    /// As [`SourceFixture::run`], asserting that the run succeeded.
    pub async fn run_ok(&self, workflow: &str, input: Value) -> RunView {
        let view = self.run(workflow, input).await;
        assert_succeeded(&view);
        view
    }

    /// `SELECT count(*) FROM <table>`.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&self.db)
            .await
            .expect("count")
    }

    /// Asserts that each of `tables` is empty: a failed run wrote nothing.
    pub async fn assert_empty(&self, tables: &[&str]) {
        for table in tables {
            assert_eq!(self.count(table).await, 0, "{table} has rows");
        }
    }

    /// Every row of `table` as (its key, its `updated_at`), ordered by the key: two equal
    /// snapshots mean that nothing in between inserted, deleted or touched a row. `keys` is
    /// the comma-separated key columns; the key is their text joined by `/`
    /// (`"NY.GDP.MKTP.CD/2015"`).
    pub async fn snapshot(&self, table: &str, keys: &str) -> Vec<(String, DateTime<Utc>)> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT concat_ws('/', {keys}), updated_at FROM {table} ORDER BY {keys}"
        )))
        .fetch_all(&self.db)
        .await
        .expect("snapshot")
    }

    /// Rows of runs, steps, events and cursors whose text contains `needle`: a secret found
    /// here leaked into PostgreSQL.
    pub async fn mentions(&self, needle: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM (
                 SELECT r::text AS t FROM tributary_runs r
                 UNION ALL SELECT s::text FROM tributary_steps s
                 UNION ALL SELECT e::text FROM tributary_events e
                 UNION ALL SELECT c::text FROM ingest_cursors c
             ) x WHERE strpos(t, $1) > 0",
        )
        .bind(needle)
        .fetch_one(&self.db)
        .await
        .expect("search")
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

/// Sets the environment variable `name` (a `TRIBUTARY_SECRET_*` secret) to `value` for the rest
/// of this test binary. Every test of a binary that uses it calls it first, before it starts
/// anything; only the first call writes, later ones check the value.
#[allow(unsafe_code)] // `set_var` is unsafe since Rust 2024; see SAFETY below
pub fn set_secret_env(name: &str, value: &str) {
    static WRITING: Mutex<()> = Mutex::new(());
    let _guard = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
    match std::env::var_os(name) {
        Some(set) => assert_eq!(set, value, "{name} is already set to another value"),
        // SAFETY: this is the binary's first call. Every test calls this before it starts
        // anything, and calls after the first only read (under the lock above), so no other
        // thread of ours reads the environment now; the value never changes afterwards.
        None => unsafe { std::env::set_var(name, value) },
    }
}

/// A JSON fixture of `tests/fixtures/<source>/`.
pub fn json_fixture(source: &str, name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/{source}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture exists")).expect("JSON")
}

/// Mounts `GET <at>` answering `response`, expecting `times` calls (checked by
/// `mock.verify()`, or when the server drops).
pub async fn answer(mock: &MockServer, at: &str, response: ResponseTemplate, times: u64) {
    Mock::given(method("GET"))
        .and(path(at))
        .respond_with(response)
        .expect(times)
        .mount(mock)
        .await;
}

/// As [`answer`], for the first `times` calls only: later calls fall through to the mocks
/// mounted after it (a failure that a retry gets past).
pub async fn answer_first(mock: &MockServer, at: &str, response: ResponseTemplate, times: u64) {
    Mock::given(method("GET"))
        .and(path(at))
        .respond_with(response)
        .up_to_n_times(times)
        .expect(times)
        .mount(mock)
        .await;
}

/// The error of building the ingestion resources with `[sources.<source>]` = `settings`:
/// invalid settings are refused there, before any connection is made.
pub async fn startup_error(source: &str, settings: &str) -> String {
    let mut config = Config::default();
    config
        .sources
        .insert(source.into(), toml::from_str(settings).expect("TOML"));
    tributary_workflows::sources::Ingest::connect(
        std::sync::Arc::new(config),
        tributary::ratelimit::RateLimiter::local_only(Default::default()),
    )
    .await
    .expect_err("the settings are refused")
    .to_string()
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
