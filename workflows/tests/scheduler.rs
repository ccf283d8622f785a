//! The cron scheduler with real worker processes: exactly one run per tick however many
//! processes run, data intervals, pause and resume, and configuration errors.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tributary::runtime::Engine;
use tributary::testing::{TestEnv, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
const WAIT: Duration = Duration::from_secs(60);

/// Writes a configuration file and returns its path.
fn config_file(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("tributary-sched-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the `tributary` CLI against the test's servers, with a configuration file if given.
fn run_cli(env: &TestEnv, config: Option<&std::path::Path>, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(BIN);
    command
        .args(args)
        .env("REDIS_URL", env.redis.url())
        .env("DATABASE_URL", env.postgres.url())
        .env("RUST_LOG", "warn");
    if let Some(file) = config {
        command.env("TRIBUTARY_CONFIG", file);
    }
    command.output().unwrap()
}

/// (tick, input) of every scheduled hello run, by tick.
async fn scheduled_runs(engine: &Engine) -> Vec<(DateTime<Utc>, Value, String)> {
    let rows: Vec<(String, Value, String)> = sqlx::query_as(
        "SELECT idempotency_key, input, status FROM tributary_runs
         WHERE idempotency_key LIKE 'schedule:hello-heartbeat:%' ORDER BY idempotency_key",
    )
    .fetch_all(engine.store().pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(key, input, status)| {
            let tick = key.trim_start_matches("schedule:hello-heartbeat:");
            (
                DateTime::parse_from_rfc3339(tick)
                    .unwrap()
                    .with_timezone(&Utc),
                input,
                status,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_engine_processes_start_exactly_one_run_per_tick() {
    let env = TestEnv::start().await;
    let file = config_file("[schedules.hello-heartbeat]\ncron = \"* * * * * *\"\n");
    let file_env = file.to_string_lossy().into_owned();
    let extra = [
        ("TRIBUTARY_CONFIG", file_env.as_str()),
        ("TRIBUTARY_WORKER_SCHEDULER", "true"),
    ];
    let mut workers = [
        env.spawn_worker(BIN.as_ref(), &extra),
        env.spawn_worker(BIN.as_ref(), &extra),
        env.spawn_worker(BIN.as_ref(), &extra),
    ];
    let engine = env.engine(tributary_workflows::registry().unwrap()).await;
    let enough = eventually(WAIT, || async {
        scheduled_runs(&engine)
            .await
            .iter()
            .filter(|(_, _, status)| status == "succeeded")
            .count()
            >= 5
    })
    .await;
    assert!(enough, "{:?}", scheduled_runs(&engine).await);
    for w in &mut workers {
        w.kill().await;
    }
    let runs = scheduled_runs(&engine).await;
    // One run per tick (the key is unique), and no tick was missed between the first and last.
    for pair in runs.windows(2) {
        assert_eq!(
            pair[1].0 - pair[0].0,
            chrono::Duration::seconds(1),
            "{runs:?}"
        );
    }
    // Each run received its tick's data interval [previous tick, tick).
    for (tick, input, _) in &runs {
        let end: DateTime<Utc> = serde_json::from_value(input["end"].clone()).unwrap();
        let start: DateTime<Utc> = serde_json::from_value(input["start"].clone()).unwrap();
        assert_eq!(
            (end, end - start),
            (*tick, chrono::Duration::seconds(1)),
            "{input}"
        );
        assert_eq!(input["schedule"], "hello-heartbeat");
    }
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_schedule_starts_nothing_until_resumed() {
    let env = TestEnv::start().await;
    let file = config_file("[schedules.hello-heartbeat]\ncron = \"* * * * * *\"\ncatch-up = 0\n");
    let file_env = file.to_string_lossy().into_owned();
    let _worker = env.spawn_worker(
        BIN.as_ref(),
        &[
            ("TRIBUTARY_CONFIG", file_env.as_str()),
            ("TRIBUTARY_WORKER_SCHEDULER", "true"),
        ],
    );
    let engine = env.engine(tributary_workflows::registry().unwrap()).await;
    let cli = |args: &[&str]| run_cli(&env, Some(&file), args);
    assert!(eventually(WAIT, || async { !scheduled_runs(&engine).await.is_empty() }).await);
    let out = tokio::task::block_in_place(|| cli(&["schedules", "pause", "hello-heartbeat"]));
    assert!(out.status.success(), "{out:?}");
    // Let a tick in flight settle, then watch for 2.5 s: nothing new may start.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let paused_at = scheduled_runs(&engine).await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        scheduled_runs(&engine).await.len(),
        paused_at,
        "a paused schedule fired"
    );
    let listing = tokio::task::block_in_place(|| cli(&["schedules"]));
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("hello-heartbeat") && l.contains("true")),
        "{text}"
    );

    let out = tokio::task::block_in_place(|| cli(&["schedules", "resume", "hello-heartbeat"]));
    assert!(out.status.success(), "{out:?}");
    assert!(
        eventually(WAIT, || async {
            scheduled_runs(&engine).await.len() > paused_at
        })
        .await
    );
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_schedule_override_stops_start_up_with_its_name() {
    let env = TestEnv::start().await;
    for (text, expected) in [
        (
            "[schedules.hello-heartbeat]\ncron = \"61 * * * *\"\n",
            "schedule \"hello-heartbeat\"",
        ),
        (
            "[schedules.hello-heartbeat]\ntimezone = \"Mars/Base\"\n",
            "Mars/Base",
        ),
        (
            "[schedules.no-such]\nenabled = false\n",
            "schedules.no-such: no such schedule",
        ),
    ] {
        let file = config_file(text);
        let file_env = file.to_string_lossy().into_owned();
        let mut w = env.spawn_worker(BIN.as_ref(), &[("TRIBUTARY_CONFIG", file_env.as_str())]);
        let status = w
            .wait(Duration::from_secs(30))
            .await
            .expect("start-up fails fast");
        assert!(!status.success());
        assert!(
            w.wait_for_log(expected, Duration::from_secs(5)).await,
            "expected {expected:?}: {:#?}",
            w.logs()
        );
        let _ = std::fs::remove_file(file);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_starts_one_run_per_tick_of_the_period_and_never_twice() {
    let env = TestEnv::start().await;
    let _worker = env.spawn_worker(BIN.as_ref(), &[]);
    let engine = env.engine(tributary_workflows::registry().unwrap()).await;
    let cli = |args: &[&str]| run_cli(&env, None, args);
    // hello-heartbeat is hourly: 5 windows in [00:00, 05:00), the last ending at 05:00.
    let args = [
        "backfill",
        "hello",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-01T05:00:00Z",
        "--timeout",
        "60s",
    ];
    let out = tokio::task::block_in_place(|| cli(&args));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("5 runs") && stdout.contains("5 succeeded"),
        "{stdout}"
    );
    let runs = scheduled_runs(&engine).await;
    let ticks: Vec<String> = runs
        .iter()
        .map(|(t, _, _)| t.format("%H:%M").to_string())
        .collect();
    assert_eq!(ticks, ["01:00", "02:00", "03:00", "04:00", "05:00"]);
    // Each run got its tick's data interval.
    assert_eq!(runs[0].1["start"], "2024-01-01T00:00:00Z");
    assert_eq!(runs[0].1["end"], "2024-01-01T01:00:00Z");

    // The same period again starts nothing new; an overlapping one only the new ticks.
    let again = tokio::task::block_in_place(|| cli(&args));
    assert!(again.status.success(), "{again:?}");
    let wider = tokio::task::block_in_place(|| {
        cli(&[
            "backfill",
            "hello",
            "--from",
            "2024-01-01T03:00:00Z",
            "--to",
            "2024-01-01T07:00:00Z",
        ])
    });
    assert!(wider.status.success(), "{wider:?}");
    assert_eq!(scheduled_runs(&engine).await.len(), 7);

    // Mistakes are clear errors.
    for (bad, expected) in [
        (
            vec![
                "backfill",
                "demo",
                "--from",
                "2024-01-01",
                "--to",
                "2024-02-01",
            ],
            "demo has no enabled schedule",
        ),
        (
            vec![
                "backfill",
                "hello",
                "--from",
                "2024-02-01",
                "--to",
                "2024-01-01",
            ],
            "--from must be before --to",
        ),
        (
            vec![
                "backfill",
                "hello",
                "--from",
                "yesterday",
                "--to",
                "2024-01-01",
            ],
            "neither a date",
        ),
        (
            vec![
                "backfill",
                "hello",
                "--from",
                "2000-01-01",
                "--to",
                "2024-01-01",
            ],
            "more than 10000 ticks",
        ),
    ] {
        let out = tokio::task::block_in_place(|| cli(&bad));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(expected),
            "{bad:?}: {stderr}"
        );
    }
}
