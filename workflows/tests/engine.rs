//! End-to-end behaviour of one engine process against a real Redis and PostgreSQL, each test
//! with its own throwaway servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tributary::runtime::{Engine, StartOptions};
use tributary::testing::{TestEnv, eventually};
use tributary::workflow::{Registry, RetryPolicy, StepContext, StepError, StepOptions, Workflow};
use tributary_workflows::demo::DemoReport;

const WAIT: Duration = Duration::from_secs(30);

/// Runs a worker in this process until the guard is dropped.
struct RunningWorker {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningWorker {
    fn spawn(engine: &Engine) -> Self {
        let stop = CancellationToken::new();
        let engine = engine.clone();
        let token = stop.clone();
        let task =
            tokio::spawn(async move { engine.run_worker(token).await.expect("worker runs") });
        Self {
            stop,
            task: Some(task),
        }
    }

    async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("worker stops cleanly");
        }
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Servers, an engine on them, and a worker in this process.
struct Fixture {
    env: TestEnv,
    engine: Engine,
    worker: RunningWorker,
}

impl Fixture {
    /// With a registry holding just this workflow.
    async fn only(workflow: Workflow) -> Self {
        let mut registry = Registry::default();
        registry.register(workflow).unwrap();
        Self::start(registry).await
    }

    async fn start(registry: Registry) -> Self {
        let env = TestEnv::start().await;
        let engine = env.engine(registry).await;
        let worker = RunningWorker::spawn(&engine);
        Self {
            env,
            engine,
            worker,
        }
    }
}

/// Starts a run and waits for it to end.
async fn finish(
    engine: &Engine,
    workflow: &str,
    input: serde_json::Value,
) -> tributary::store::RunView {
    let run = engine
        .start(workflow, input, StartOptions::default())
        .await
        .unwrap();
    engine.wait(run, WAIT).await.unwrap()
}

async fn count_events(
    engine: &Engine,
    run: tributary::ids::RunId,
    kind: &str,
) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT step, count(*) FROM tributary_events WHERE run_id = $1 AND kind = $2 GROUP BY step ORDER BY step",
    )
    .bind(run.0)
    .bind(kind)
    .fetch_all(engine.store().pool())
    .await
    .expect("events query")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_returns_hello_world() {
    let Fixture {
        env: _env,
        engine,
        worker,
    } = Fixture::start(tributary_workflows::registry().unwrap()).await;
    let view = finish(&engine, "hello", json!(null)).await;
    assert_eq!(view.status, "succeeded");
    assert_eq!(view.output, Some(json!("Hello World")));
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_fans_out_maps_and_fans_in_with_one_checkpoint_per_step() {
    let Fixture {
        env: _env,
        engine,
        worker,
    } = Fixture::start(tributary_workflows::registry().unwrap()).await;
    let run = engine
        .start("demo", json!({"n": 6}), StartOptions::default())
        .await
        .unwrap();
    let view = engine.wait(run, WAIT).await.unwrap();
    assert_eq!(view.status, "succeeded", "{view:#?}");
    let report: DemoReport = serde_json::from_value(view.output.unwrap()).unwrap();
    assert_eq!(
        report,
        DemoReport {
            sum: 21,
            sum_of_squares: 91,
            items: 6
        }
    );
    // numbers, sum, square (join), square[0..6], join, report: each checkpointed exactly once.
    let completed = count_events(&engine, run, "step_completed").await;
    assert_eq!(completed.len(), 4 + 6 + 1, "{completed:?}");
    assert!(completed.iter().all(|(_, n)| *n == 1), "{completed:?}");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_over_an_empty_list_joins_at_once() {
    let Fixture {
        env: _env,
        engine,
        worker,
    } = Fixture::start(tributary_workflows::registry().unwrap()).await;
    let view = finish(&engine, "demo", json!({"n": 0})).await;
    assert_eq!(view.status, "succeeded", "{view:#?}");
    assert_eq!(
        view.output,
        Some(json!({"sum": 0, "sum_of_squares": 0, "items": 0}))
    );
    worker.shutdown().await;
}

/// A workflow whose only step fails `failures` times, with a back-off long enough to observe.
fn flaky(failures: Arc<AtomicU32>, max_attempts: u32, delay: Duration) -> Workflow {
    let mut wf = Workflow::builder::<u32>("flaky", 1);
    let input = wf.input();
    let options = StepOptions::default().retry(
        RetryPolicy::attempts(max_attempts)
            .initial_delay(delay)
            .jitter(false),
    );
    let out = wf.step_with("flaky", &input, options, move |ctx: StepContext, x: u32| {
        let failures = failures.clone();
        async move {
            if failures.load(Ordering::SeqCst) >= ctx.attempt() {
                return Err(StepError::retryable(format!(
                    "attempt {} fails",
                    ctx.attempt()
                )));
            }
            Ok(x + ctx.attempt())
        }
    });
    wf.build(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_waits_as_due_time_state_not_in_a_pending_list() {
    let env = TestEnv::start().await;
    let mut registry = Registry::default();
    registry
        .register(flaky(
            Arc::new(AtomicU32::new(1)),
            3,
            Duration::from_secs(2),
        ))
        .unwrap();
    let engine = env.engine(registry).await;
    let worker = RunningWorker::spawn(&engine);
    let run = engine
        .start("flaky", json!(10), StartOptions::default())
        .await
        .unwrap();

    // After the first failure the step waits in PostgreSQL with a due time...
    let waiting = eventually(WAIT, || async {
        let view = engine.status(run).await.unwrap();
        view.steps
            .iter()
            .any(|s| s.status == "waiting" && s.attempt == 2 && s.due_at.is_some())
    })
    .await;
    assert!(waiting, "the step never entered due-time state");
    // ...and nothing of it stays pending in Redis (the failed attempt's entry is acknowledged
    // right after the retry state commits), while the back-off lasts.
    let acked = eventually(WAIT, || async {
        engine
            .transport()
            .depth()
            .await
            .map(|(_, p)| p == 0)
            .unwrap_or(false)
    })
    .await;
    assert!(acked, "a retry must not wait in a pending list");
    let view = engine.status(run).await.unwrap();
    assert!(
        view.steps.iter().any(|s| s.status == "waiting"),
        "still backing off while nothing is pending: {view:#?}"
    );

    let view = engine.wait(run, WAIT).await.unwrap();
    assert_eq!(view.status, "succeeded");
    assert_eq!(view.output, Some(json!(12)), "the second attempt succeeded");
    assert_eq!(
        count_events(&engine, run, "step_retried").await,
        vec![("flaky".to_owned(), 1)]
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_fail_the_run_dead_letter_the_entry_and_retry_resumes_it() {
    let env = TestEnv::start().await;
    let failures = Arc::new(AtomicU32::new(u32::MAX));
    let mut registry = Registry::default();
    registry
        .register(flaky(failures.clone(), 2, Duration::from_millis(50)))
        .unwrap();
    let engine = env.engine(registry).await;
    let worker = RunningWorker::spawn(&engine);
    let run = engine
        .start("flaky", json!(1), StartOptions::default())
        .await
        .unwrap();
    let view = engine.wait(run, WAIT).await.unwrap();
    assert_eq!(view.status, "failed");
    assert!(
        view.error.as_deref().unwrap().contains("attempt 2 fails"),
        "{:?}",
        view.error
    );
    let dead = engine.transport().dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0]
        .fields
        .iter()
        .find(|(k, _)| k == "reason")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(
        reason.contains("after 2 attempt(s)") && reason.contains("attempt 2 fails"),
        "{reason}"
    );

    // The cause is fixed: `retry` resumes the run with a fresh attempt budget.
    failures.store(0, Ordering::SeqCst);
    engine.retry(run).await.unwrap();
    let view = engine.wait(run, WAIT).await.unwrap();
    assert_eq!(view.status, "succeeded", "{view:#?}");
    assert_eq!(view.output, Some(json!(4)), "attempt 3 ran");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_reuses_the_checkpoints_of_a_failed_run() {
    static HEALED: AtomicBool = AtomicBool::new(false);
    static FIRST_RUNS: AtomicU32 = AtomicU32::new(0);
    let mut wf = Workflow::builder::<u32>("two-steps", 1);
    let input = wf.input();
    let first = wf.step("first", &input, |_: StepContext, x: u32| async move {
        FIRST_RUNS.fetch_add(1, Ordering::SeqCst);
        Ok::<_, StepError>(x * 10)
    });
    let second = wf.step("second", &first, |_: StepContext, x: u32| async move {
        if HEALED.load(Ordering::SeqCst) {
            Ok(x + 1)
        } else {
            Err(StepError::fatal("not yet"))
        }
    });
    let Fixture {
        env: _env,
        engine,
        worker,
    } = Fixture::only(wf.build(&second).unwrap()).await;
    let run = engine
        .start("two-steps", json!(4), StartOptions::default())
        .await
        .unwrap();
    assert_eq!(engine.wait(run, WAIT).await.unwrap().status, "failed");
    HEALED.store(true, Ordering::SeqCst);
    engine.retry(run).await.unwrap();
    let view = engine.wait(run, WAIT).await.unwrap();
    assert_eq!(view.output, Some(json!(41)));
    assert_eq!(
        FIRST_RUNS.load(Ordering::SeqCst),
        1,
        "the checkpointed step never runs again"
    );
    assert!(
        engine.retry(run).await.is_err(),
        "a succeeded run cannot be retried"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_further_steps_and_the_running_step_sees_it() {
    static STARTED: AtomicBool = AtomicBool::new(false);
    static SAW_CANCEL: AtomicBool = AtomicBool::new(false);
    static SECOND_RAN: AtomicBool = AtomicBool::new(false);
    let mut wf = Workflow::builder::<()>("cancellable", 1);
    let input = wf.input();
    let long = wf.step("long", &input, |ctx: StepContext, _: ()| async move {
        STARTED.store(true, Ordering::SeqCst);
        tokio::select! {
            _ = ctx.cancelled() => { SAW_CANCEL.store(true, Ordering::SeqCst); Err(StepError::fatal("cancelled")) }
            _ = tokio::time::sleep(Duration::from_secs(20)) => Ok(()),
        }
    });
    let after = wf.step("after", &long, |_: StepContext, _: ()| async move {
        SECOND_RAN.store(true, Ordering::SeqCst);
        Ok::<_, StepError>(())
    });
    let Fixture {
        env: _env,
        engine,
        worker,
    } = Fixture::only(wf.build(&after).unwrap()).await;
    let run = engine
        .start("cancellable", json!(null), StartOptions::default())
        .await
        .unwrap();
    assert!(
        eventually(WAIT, || async { STARTED.load(Ordering::SeqCst) }).await,
        "the long step never started"
    );
    assert!(engine.cancel(run).await.unwrap());
    assert!(
        !engine.cancel(run).await.unwrap(),
        "a second cancel reports the run already ended"
    );
    // The lease keeper checks every lease/3 (under a second here).
    assert!(
        eventually(WAIT, || async { SAW_CANCEL.load(Ordering::SeqCst) }).await,
        "the step never saw the cancellation"
    );
    let view = engine.wait(run, WAIT).await.unwrap();
    assert_eq!(view.status, "cancelled");
    assert!(
        eventually(WAIT, || async {
            engine
                .transport()
                .depth()
                .await
                .map(|(_, p)| p == 0)
                .unwrap_or(false)
        })
        .await
    );
    assert!(
        !SECOND_RAN.load(Ordering::SeqCst),
        "no step starts after a cancel"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_twice_with_one_idempotency_key_returns_the_first_run() {
    let env = TestEnv::start().await;
    let engine = env.engine(tributary_workflows::registry().unwrap()).await;
    let key = StartOptions {
        idempotency_key: Some("gdelt-2026-11-28T11:00".into()),
    };
    let a = engine.start("hello", json!(1), key.clone()).await.unwrap();
    let b = engine.start("hello", json!(2), key).await.unwrap();
    assert_eq!(a, b);
    let c = engine
        .start("hello", json!(1), StartOptions::default())
        .await
        .unwrap();
    assert_ne!(a, c);
    // Within one batch too: the second start with a key gets the first one's run.
    let key = StartOptions {
        idempotency_key: Some("batch-key".into()),
    };
    let batch = engine
        .start_batch(&[
            ("hello".to_owned(), json!(1), key.clone()),
            ("hello".to_owned(), json!(2), StartOptions::default()),
            ("hello".to_owned(), json!(3), key),
        ])
        .await
        .unwrap();
    assert_eq!(batch[0], batch[2]);
    assert_ne!(batch[0], batch[1]);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM tributary_runs")
        .fetch_one(engine.store().pool())
        .await
        .unwrap();
    assert_eq!(runs, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_an_unknown_workflow_or_a_mistyped_input_is_a_clear_error() {
    let env = TestEnv::start().await;
    let engine = env.engine(tributary_workflows::registry().unwrap()).await;
    let e = engine
        .start("nope", json!(null), StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("unknown workflow \"nope\"") && e.to_string().contains("hello"),
        "{e}"
    );
    let e = engine
        .start("chain3", json!("seven"), StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("chain3") && e.to_string().contains("input"),
        "{e}"
    );
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM tributary_runs")
        .fetch_one(engine.store().pool())
        .await
        .unwrap();
    assert_eq!(runs, 0, "nothing is recorded for a rejected start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_go_to_the_dead_letter_stream_and_the_worker_keeps_running() {
    let Fixture {
        env,
        engine,
        worker,
    } = Fixture::start(tributary_workflows::registry().unwrap()).await;
    let redis = fred::prelude::Builder::from_config(
        fred::prelude::Config::from_url(&env.redis.url()).unwrap(),
    )
    .build()
    .unwrap();
    fred::prelude::ClientLike::init(&redis).await.unwrap();
    let stream = engine.transport().keys().steps.clone();
    let valid_run = tributary::ids::RunId::new().to_string();
    let bad: Vec<Vec<(&str, &str)>> = vec![
        vec![("garbage", "{not json")],
        vec![
            ("v", "1"),
            ("run", "not-a-uuid"),
            ("wf", "hello"),
            ("step", "hello"),
            ("att", "1"),
        ],
        vec![
            ("v", "1"),
            ("run", &valid_run),
            ("wf", "no-such-workflow"),
            ("step", "x"),
            ("att", "1"),
        ],
        vec![
            ("v", "1"),
            ("run", &valid_run),
            ("wf", "hello"),
            ("step", "no-such-step"),
            ("att", "1"),
        ],
        vec![
            ("v", "1"),
            ("run", &valid_run),
            ("wf", "hello"),
            ("step", "hello"),
            ("att", "1"),
        ],
        vec![
            ("v", "9"),
            ("run", &valid_run),
            ("wf", "hello"),
            ("step", "hello"),
            ("att", "1"),
        ],
    ];
    for fields in &bad {
        let _: String = fred::prelude::StreamsInterface::xadd(
            &redis,
            stream.as_str(),
            false,
            None::<()>,
            "*",
            fields.clone(),
        )
        .await
        .unwrap();
    }
    let run = engine
        .start("hello", json!(null), StartOptions::default())
        .await
        .unwrap();
    assert_eq!(
        engine.wait(run, WAIT).await.unwrap().status,
        "succeeded",
        "the worker kept running"
    );
    assert!(
        eventually(WAIT, || async {
            engine.transport().dead_letters(100).await.unwrap().len() == bad.len()
        })
        .await
    );
    let reasons: Vec<String> = engine
        .transport()
        .dead_letters(100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.fields.into_iter().find(|(k, _)| k == "reason").unwrap().1)
        .collect();
    for expected in [
        "missing field",
        "not a run id",
        "unknown workflow",
        "has no step",
        "unknown run",
        "format version",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no reason mentions {expected:?}: {reasons:?}"
        );
    }
    assert!(
        eventually(WAIT, || async {
            engine
                .transport()
                .depth()
                .await
                .map(|(_, p)| p == 0)
                .unwrap_or(false)
        })
        .await
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_as_durable_steps_after_the_run_ends() {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut wf = Workflow::builder::<bool>("hooked", 1);
    let input = wf.input();
    let out = wf.step("maybe", &input, |_: StepContext, ok: bool| async move {
        if ok {
            Ok(7)
        } else {
            Err(StepError::fatal("asked to fail"))
        }
    });
    wf.on_success(
        |_: StepContext, o: tributary::workflow::RunOutcome| async move {
            SEEN.lock()
                .unwrap()
                .push(format!("success {}", o.output.unwrap()));
            Ok(())
        },
    );
    wf.on_failure(
        |_: StepContext, o: tributary::workflow::RunOutcome| async move {
            SEEN.lock()
                .unwrap()
                .push(format!("failure {}", o.error.unwrap()));
            Ok(())
        },
    );
    let Fixture {
        env: _env,
        engine,
        worker,
    } = Fixture::only(wf.build(&out).unwrap()).await;
    let ok = engine
        .start("hooked", json!(true), StartOptions::default())
        .await
        .unwrap();
    let bad = engine
        .start("hooked", json!(false), StartOptions::default())
        .await
        .unwrap();
    engine.wait(ok, WAIT).await.unwrap();
    engine.wait(bad, WAIT).await.unwrap();
    assert!(
        eventually(WAIT, || async { SEEN.lock().unwrap().len() == 2 }).await,
        "{:?}",
        SEEN.lock().unwrap()
    );
    let seen = SEEN.lock().unwrap().clone();
    assert!(seen.contains(&"success 7".to_owned()), "{seen:?}");
    assert!(
        seen.iter()
            .any(|s| s.starts_with("failure step maybe failed: asked to fail")),
        "{seen:?}"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_over_its_timeout_fails_as_retryable_and_a_panic_does_not_kill_the_worker() {
    let mut wf = Workflow::builder::<u32>("misbehaving", 1);
    let input = wf.input();
    let options = StepOptions::default()
        .timeout(Duration::from_millis(1500))
        .retry(RetryPolicy::attempts(2).initial_delay(Duration::from_millis(10)));
    let out = wf.step_with(
        "misbehave",
        &input,
        options,
        |ctx: StepContext, mode: u32| async move {
            match (mode, ctx.attempt()) {
                (0, 1) => tokio::time::sleep(Duration::from_secs(30)).await,
                (1, 1) => panic!("boom"),
                _ => {}
            }
            Ok::<_, StepError>(ctx.attempt())
        },
    );
    let Fixture {
        env: _env,
        engine,
        worker,
    } = Fixture::only(wf.build(&out).unwrap()).await;
    for mode in [0, 1] {
        let run = engine
            .start("misbehaving", json!(mode), StartOptions::default())
            .await
            .unwrap();
        let view = engine.wait(run, WAIT).await.unwrap();
        assert_eq!(view.output, Some(json!(2)), "mode {mode}: {view:#?}");
        let retried = view
            .events
            .iter()
            .find(|e| e.kind == "step_retried")
            .unwrap();
        let expected = if mode == 0 {
            "timed out"
        } else {
            "panicked: boom"
        };
        assert!(
            retried.detail.as_deref().unwrap().contains(expected),
            "{retried:?}"
        );
    }
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_finished_runs_in_batches_and_keeps_running_ones() {
    let Fixture {
        env: _env,
        engine,
        worker,
    } = Fixture::start(tributary_workflows::registry().unwrap()).await;
    let mut runs = Vec::new();
    for i in 0..5 {
        runs.push(
            engine
                .start("hello", json!(i), StartOptions::default())
                .await
                .unwrap(),
        );
    }
    for run in &runs {
        engine.wait(*run, WAIT).await.unwrap();
    }
    worker.shutdown().await;
    let running = engine
        .start("hello", json!("unfinished"), StartOptions::default())
        .await
        .unwrap();
    // Batches of 2: five finished runs go in three rounds, and the running one stays.
    for expected in [2, 2, 1, 0] {
        let deleted = engine
            .store()
            .delete_finished(Duration::ZERO, 2)
            .await
            .unwrap();
        assert_eq!(deleted, expected);
    }
    assert!(
        engine.status(running).await.is_ok(),
        "a running run is kept"
    );
    let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM tributary_steps")
        .fetch_one(engine.store().pool())
        .await
        .unwrap();
    assert_eq!(steps, 1, "checkpoints of deleted runs go with them");
    let events: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT DISTINCT run_id FROM tributary_events")
            .fetch_all(engine.store().pool())
            .await
            .unwrap();
    assert_eq!(events, [running.0], "events of deleted runs go with them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_password_in_the_url_is_used_and_never_printed() {
    let env = TestEnv::start().await;
    let admin = fred::prelude::Builder::from_config(
        fred::prelude::Config::from_url(&env.redis.url()).unwrap(),
    )
    .build()
    .unwrap();
    fred::prelude::ClientLike::init(&admin).await.unwrap();
    let _: String = fred::prelude::ClientLike::custom(
        &admin,
        fred::cmd!("CONFIG"),
        vec!["SET", "requirepass", "s3cret-pw"],
    )
    .await
    .unwrap();

    let mut config = env.config();
    config.redis_url = Some(format!("redis://:s3cret-pw@127.0.0.1:{}", env.redis.port()));
    let engine = Engine::connect(config.clone(), tributary_workflows::registry().unwrap())
        .await
        .unwrap();
    let worker = RunningWorker::spawn(&engine);
    let run = engine
        .start("hello", json!(null), StartOptions::default())
        .await
        .unwrap();
    assert_eq!(engine.wait(run, WAIT).await.unwrap().status, "succeeded");
    worker.shutdown().await;

    config.redis_url = Some(format!("redis://:wrong-pw@127.0.0.1:{}", env.redis.port()));
    let error = Engine::connect(config, tributary_workflows::registry().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot connect to Redis") && error.contains(":***@"),
        "{error}"
    );
    assert!(!error.contains("wrong-pw"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_removes_acknowledged_entries_only() {
    let Fixture {
        env: _env,
        engine,
        worker,
    } = Fixture::start(tributary_workflows::registry().unwrap()).await;
    let starts: Vec<_> = (0..20u64)
        .map(|i| ("chain3".to_owned(), json!(i), StartOptions::default()))
        .collect();
    let runs = engine.start_batch(&starts).await.unwrap();
    for run in &runs {
        engine.wait(*run, WAIT).await.unwrap();
    }
    worker.shutdown().await;
    // Every entry was acknowledged; one more is published and left unread.
    assert!(
        eventually(WAIT, || async {
            engine.transport().depth().await.unwrap().1 == 0
        })
        .await
    );
    let unread = engine
        .start("hello", json!(null), StartOptions::default())
        .await
        .unwrap();
    let (before, _) = engine.transport().depth().await.unwrap();
    assert_eq!(before, 60 + 1);
    let removed = engine.transport().trim().await.unwrap();
    let (after, _) = engine.transport().depth().await.unwrap();
    assert_eq!(
        (removed, after),
        (60, 1),
        "only the read and acknowledged entries go"
    );

    let worker = RunningWorker::spawn(&engine);
    assert_eq!(engine.wait(unread, WAIT).await.unwrap().status, "succeeded");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_sees_how_many_attempts_it_has_left_counted_from_the_last_manual_retry() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let mut wf = Workflow::builder::<u32>("countdown", 1);
    wf.defaults(
        StepOptions::default()
            .retry(RetryPolicy::attempts(3).initial_delay(Duration::from_millis(20))),
    );
    let input = wf.input();
    let out = wf.step("count", &input, move |ctx: StepContext, _: u32| {
        let record = record.clone();
        async move {
            record
                .lock()
                .unwrap()
                .push((ctx.attempt(), ctx.attempts_left()));
            Err::<u32, _>(StepError::retryable("not yet"))
        }
    });
    let fx = Fixture::only(wf.build(&out).unwrap()).await;
    let view = finish(&fx.engine, "countdown", json!(0)).await;
    assert_eq!(view.status, "failed");
    assert_eq!(*seen.lock().unwrap(), [(1, 2), (2, 1), (3, 0)]);

    fx.engine.retry(view.run_id).await.unwrap();
    let view = fx.engine.wait(view.run_id, WAIT).await.unwrap();
    assert_eq!(view.status, "failed");
    assert_eq!(
        seen.lock().unwrap()[3..],
        [(4, 2), (5, 1), (6, 0)],
        "a manual retry restores the budget"
    );
}

/// `input → (left, right) → join`, output `join`.
fn diamond() -> Workflow {
    let mut wf = Workflow::builder::<u32>("diamond", 1);
    let input = wf.input();
    let left = wf.step(
        "left",
        &input,
        |_: StepContext, x: u32| async move { Ok(x) },
    );
    let right = wf.step(
        "right",
        &input,
        |_: StepContext, x: u32| async move { Ok(x) },
    );
    let join = wf.step(
        "join",
        (&left, &right),
        |_: StepContext, (l, r): (u32, u32)| async move { Ok(l + r) },
    );
    wf.build(&join).unwrap()
}

/// One step, and the run's output is its input.
fn echo() -> Workflow {
    let mut wf = Workflow::builder::<u32>("echo", 1);
    let input = wf.input();
    wf.step(
        "touch",
        &input,
        |_: StepContext, x: u32| async move { Ok(x) },
    );
    wf.build(&input).unwrap()
}

/// The checkpoints of one group commit, as the committer hands them to the store: a join whose
/// two dependencies complete in the same batch is readied once; runs finish in the batch that
/// completes their last step (output from a step or from the input); a duplicate in the batch
/// is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_of_checkpoints_readies_a_join_once_and_finishes_runs() {
    let env = TestEnv::start().await;
    let mut registry = Registry::default();
    registry.register(diamond()).unwrap();
    registry.register(echo()).unwrap();
    // No worker: the test plays the committer.
    let engine = env.engine(registry).await;
    let (diamond, echo) = (diamond(), echo());
    let start = |workflow: &str, input: u32| {
        let engine = engine.clone();
        let workflow = workflow.to_owned();
        async move {
            engine
                .start(&workflow, json!(input), StartOptions::default())
                .await
                .unwrap()
        }
    };
    let (r1, r2, e1) = (
        start("diamond", 1).await,
        start("diamond", 2).await,
        start("echo", 5).await,
    );
    let done = |run: tributary::ids::RunId, step: &str, output: serde_json::Value| {
        tributary::store::Completed {
            run_id: run,
            step: step.to_owned(),
            attempt: 1,
            output,
            started_at: chrono::Utc::now(),
            worker: "test".into(),
        }
    };
    let steps = |results: &[Option<Vec<tributary::store::Dispatch>>]| -> Vec<Option<Vec<String>>> {
        results
            .iter()
            .map(|r| {
                r.as_ref().map(|d| {
                    d.iter()
                        .map(|d| format!("{}:{}", d.run_id, d.step))
                        .collect()
                })
            })
            .collect()
    };

    let batch = [
        done(r1, "left", json!(1)),
        done(r2, "left", json!(2)),
        done(r1, "right", json!(1)),
        done(e1, "touch", json!(5)),
    ];
    let members: Vec<_> = batch
        .iter()
        .map(|d| (if d.run_id == e1 { &echo } else { &diamond }, d))
        .collect();
    let results = engine.store().complete_batch(&members).await.unwrap();
    let readied: Vec<String> = steps(&results).into_iter().flatten().flatten().collect();
    assert_eq!(readied, vec![format!("{r1}:join")], "{results:?}");
    let echo_view = engine.status(e1).await.unwrap();
    assert_eq!(echo_view.status, "succeeded");
    assert_eq!(echo_view.output, Some(json!(5)));
    assert_eq!(engine.status(r2).await.unwrap().status, "running");

    let batch = [
        done(r1, "join", json!(2)),
        done(r2, "right", json!(2)),
        done(r1, "join", json!(2)),
    ];
    let members: Vec<_> = batch.iter().map(|d| (&diamond, d)).collect();
    let results = engine.store().complete_batch(&members).await.unwrap();
    assert_eq!(
        steps(&results),
        vec![Some(vec![]), Some(vec![format!("{r2}:join")]), None],
        "the duplicate of r1's join is fenced"
    );
    let view = engine.status(r1).await.unwrap();
    assert_eq!(view.status, "succeeded");
    assert_eq!(view.output, Some(json!(2)));
    let finished = view
        .events
        .iter()
        .filter(|e| e.kind == "run_succeeded")
        .count();
    assert_eq!(finished, 1, "{:?}", view.events);
    let join_completions = view
        .events
        .iter()
        .filter(|e| e.kind == "step_completed" && e.step.as_deref() == Some("join"))
        .count();
    assert_eq!(
        join_completions, 1,
        "one event for the join: {:?}",
        view.events
    );
    assert_eq!(engine.status(r2).await.unwrap().status, "running");
}

/// `load_many` (the loads of steps that start together) answers as `load` does, key by key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_several_steps_at_once_matches_loading_each() {
    let env = TestEnv::start().await;
    let mut registry = Registry::default();
    registry.register(diamond()).unwrap();
    let engine = env.engine(registry).await;
    let diamond = diamond();
    let run = engine
        .start("diamond", json!(4), StartOptions::default())
        .await
        .unwrap();
    let left = tributary::store::Completed {
        run_id: run,
        step: "left".into(),
        attempt: 1,
        output: json!(4),
        started_at: chrono::Utc::now(),
        worker: "test".into(),
    };
    engine
        .store()
        .complete_batch(&[(&diamond, &left)])
        .await
        .unwrap();
    let nobody = tributary::ids::RunId(uuid::Uuid::from_u128(42));
    let keys: Vec<(tributary::ids::RunId, &str, &[&str])> = vec![
        (run, "join", &["left", "right"]),
        (nobody, "left", &[]),
        (run, "right", &[]),
        (run, "left", &[]),
        (run, "nothing", &["left"]),
    ];
    let many = engine.store().load_many(&keys).await.unwrap();
    assert_eq!(many.len(), keys.len());
    for ((run, step, deps), batch) in keys.iter().zip(&many) {
        let one = engine.store().load(*run, step, deps).await.unwrap();
        assert_eq!(format!("{batch:?}"), format!("{one:?}"), "{step}");
    }
    let join = many[0].as_ref().unwrap();
    assert_eq!(join.deps.len(), 1, "only completed dependencies: {join:?}");
    assert_eq!(join.deps["left"], json!(4));
    assert!(many[1].is_none(), "an unknown run");
    assert_eq!(
        many[2].as_ref().unwrap().step_status.as_deref(),
        Some("ready")
    );
    assert_eq!(
        many[3].as_ref().unwrap().step_status.as_deref(),
        Some("completed")
    );
    assert_eq!(many[4].as_ref().unwrap().step_status, None);
}
