//! Durability against real faults: worker processes killed, stalled and terminated; Redis
//! restarted without persistence; PostgreSQL restarted. Each test has its own servers and runs
//! the real `tributary` binary as worker processes.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use tributary::ids::RunId;
use tributary::runtime::{Engine, HELD_PER_SLOT, StartOptions};
use tributary::testing::{TestEnv, WorkerProcess, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
const WAIT: Duration = Duration::from_secs(60);

fn worker(env: &TestEnv) -> WorkerProcess {
    env.spawn_worker(BIN.as_ref(), &[("RUST_LOG", "info")])
}

/// (run, step) → how many checkpoints committed, from the audit trail.
async fn commits(engine: &Engine) -> Vec<(uuid::Uuid, String, i64)> {
    sqlx::query_as(
        "SELECT run_id, step, count(*) FROM tributary_events WHERE kind = 'step_completed'
         GROUP BY run_id, step ORDER BY run_id, step",
    )
    .fetch_all(engine.store().pool())
    .await
    .expect("events query")
}

async fn assert_each_step_committed_once(engine: &Engine) {
    let commits = commits(engine).await;
    assert!(!commits.is_empty());
    let twice: Vec<_> = commits.iter().filter(|(_, _, n)| *n != 1).collect();
    assert!(
        twice.is_empty(),
        "steps checkpointed more than once: {twice:?}"
    );
}

async fn wait_all(engine: &Engine, runs: &[RunId], workers: &[WorkerProcess]) {
    for run in runs {
        let view = match engine.wait(*run, WAIT).await {
            Ok(view) => view,
            Err(e) => {
                // Everything needed to tell why: the run's steps and events, what Redis holds
                // pending, and what each worker logged.
                let view = engine.status(*run).await;
                let pending = engine.transport().pending(100).await;
                let logs: Vec<_> = workers.iter().map(|w| (w.pid(), w.logs())).collect();
                panic!("run {run}: {e}\n{view:#?}\npending: {pending:#?}\nlogs: {logs:#?}")
            }
        };
        assert_eq!(view.status, "succeeded", "{view:#?}");
    }
}

/// The consumer name ends in `-<pid>-<random>`: the pid of the process holding an entry.
fn pid_of(consumer: &str) -> u32 {
    let mut parts = consumer.rsplit('-');
    let _random = parts.next();
    parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("consumer names carry the pid")
}

/// Waits until some worker holds the entry of `step`; returns that worker's pid.
async fn holder_pid(engine: &Engine, step: &str) -> u32 {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        for pending in engine.transport().pending(100).await.unwrap() {
            let entry = engine.transport().entry(&pending.id).await.unwrap();
            if entry.is_some_and(|e| e.fields.iter().any(|(k, v)| k == "step" && v == step)) {
                return pid_of(&pending.consumer);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no worker picked up {step} within {WAIT:?}");
}

/// Waits until some worker is *executing* `step` (not merely holding its entry: it may still
/// be loading it), and returns that worker's pid. A running step is in the worker's lease
/// keeper, which renews its entry every third of the lease: the entry's idle time drops.
async fn executing_pid(engine: &Engine, step: &str) -> u32 {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen: Option<(String, String, Duration)> = None;
    while tokio::time::Instant::now() < deadline {
        for pending in engine.transport().pending(100).await.unwrap() {
            let entry = engine.transport().entry(&pending.id).await.unwrap();
            if !entry.is_some_and(|e| e.fields.iter().any(|(k, v)| k == "step" && v == step)) {
                continue;
            }
            match &seen {
                Some((id, consumer, idle))
                    if *id == pending.id
                        && *consumer == pending.consumer
                        && pending.idle < *idle =>
                {
                    return pid_of(&pending.consumer);
                }
                _ => seen = Some((pending.id, pending.consumer, pending.idle)),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no worker ran {step} within {WAIT:?}");
}

/// Starts 20 `demo` runs of 3 items whose steps sleep `base + step * i` ms: in flight for a while.
async fn start_demo_runs(engine: &Engine, base: u64, step: u64) -> Vec<RunId> {
    let starts: Vec<_> = (0..20)
        .map(|i| {
            (
                "demo".to_owned(),
                json!({"n": 3, "sleep_ms": base + step * i}),
                StartOptions::default(),
            )
        })
        .collect();
    engine.start_batch(&starts).await.unwrap()
}

async fn client(env: &TestEnv) -> Engine {
    env.engine(tributary_workflows::registry().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_step_is_reclaimed_and_every_step_commits_once() {
    let env = TestEnv::start().await;
    let engine = client(&env).await;
    let mut workers = [worker(&env), worker(&env)];
    let run = engine
        .start(
            "demo",
            json!({"n": 4, "sleep_ms": 1500}),
            StartOptions::default(),
        )
        .await
        .unwrap();
    // Wait until some worker holds a square item, then SIGKILL that worker mid-step.
    let victim = holder_pid(&engine, "square[1]").await;
    let index = workers
        .iter()
        .position(|w| w.pid() == victim)
        .expect("the holder is one of ours");
    workers[index].kill().await;

    wait_all(&engine, &[run], &workers).await;
    let view = engine.status(run).await.unwrap();
    assert!(
        view.events.iter().any(|e| e.kind == "step_reclaimed"),
        "{:#?}",
        view.events
    );
    assert_eq!(
        view.output,
        Some(json!({"sum": 10, "sum_of_squares": 30, "items": 4}))
    );
    assert_each_step_committed_once(&engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_is_fenced_and_its_late_result_is_discarded() {
    let env = TestEnv::start().await;
    let engine = client(&env).await;
    let workers = [worker(&env), worker(&env)];
    let run = engine
        .start(
            "demo",
            json!({"n": 1, "sleep_ms": 4000}),
            StartOptions::default(),
        )
        .await
        .unwrap();
    // Frozen in the middle of square[0]'s 4 s of work.
    let holder = executing_pid(&engine, "square[0]").await;
    let zombie = workers
        .iter()
        .find(|w| w.pid() == holder)
        .expect("one of ours");
    zombie.signal("STOP").await;

    // The other worker reclaims after the 2 s lease, fences attempt 1 and runs attempt 2.
    wait_all(&engine, &[run], &workers).await;
    let view = engine.status(run).await.unwrap();
    let square = view.steps.iter().find(|s| s.step == "square[0]").unwrap();
    assert_eq!(square.attempt, 2, "{square:?}");

    // The zombie wakes up past its sleep and tries to commit attempt 1: fenced.
    zombie.signal("CONT").await;
    assert!(
        zombie.wait_for_log("attempt fenced", WAIT).await,
        "the zombie never reported its fenced attempt: {:#?}",
        zombie.logs()
    );
    let view = engine.status(run).await.unwrap();
    let square = view.steps.iter().find(|s| s.step == "square[0]").unwrap();
    assert_eq!((square.attempt, square.status.as_str()), (2, "completed"));
    let completed: Vec<_> = view
        .events
        .iter()
        .filter(|e| e.kind == "step_completed" && e.step.as_deref() == Some("square[0]"))
        .collect();
    assert_eq!(completed.len(), 1, "{completed:?}");
    assert_eq!(
        completed[0].attempt,
        Some(2),
        "the newer attempt's checkpoint stands"
    );
    assert_each_step_committed_once(&engine).await;
}

/// A process frozen in the middle of a transaction (a SIGSTOP, a VM pause) holds its run's lock
/// only until PostgreSQL ends its session, after the lease: the other processes' writes to that
/// run go through. (Seen in CI before this bound: a worker stopped mid-checkpoint left the other
/// worker's reclaimer waiting on the run lock for good.) Here the frozen transaction is one left
/// open on purpose, holding the lock a checkpoint takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_by_a_frozen_process_does_not_hold_up_the_run() {
    let env = TestEnv::start().await;
    let engine = client(&env).await;
    let run = engine
        .start("demo", json!({"n": 1}), StartOptions::default())
        .await
        .unwrap();
    let mut frozen = engine.store().pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tributary_runs WHERE run_id = $1 FOR UPDATE")
        .bind(run.0)
        .execute(&mut *frozen)
        .await
        .unwrap();

    // Cancelling takes the same lock: it waits for the frozen transaction, then goes through.
    let cancelled = tokio::time::timeout(WAIT, engine.cancel(run))
        .await
        .expect("the cancel still waits on the frozen transaction's lock")
        .unwrap();
    assert!(cancelled);
    assert_eq!(engine.status(run).await.unwrap().status, "cancelled");
    // The frozen transaction was rolled back with its session: it can no longer commit.
    assert!(frozen.commit().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_persistence_loses_no_run() {
    let mut env = TestEnv::start().await;
    let engine = client(&env).await;
    let workers = [worker(&env), worker(&env)];
    let runs = start_demo_runs(&engine, 200, 20).await;
    // Some progress, then all stream data is gone.
    assert!(eventually(WAIT, || async { !commits(&engine).await.is_empty() }).await);
    let before = engine.transport().epoch().await.unwrap();
    assert!(before.is_some());
    env.redis.restart().await.unwrap();
    // A worker notices the empty Redis and rebuilds it from PostgreSQL under a new epoch.
    assert!(
        eventually(WAIT, || async {
            let now = engine.transport().epoch().await.ok().flatten();
            now.is_some() && now != before
        })
        .await,
        "no rebuild after the restart"
    );

    wait_all(&engine, &runs, &workers).await;
    assert_each_step_committed_once(&engine).await;
    // Workers keep consuming after the restart: a new run completes too.
    let late = engine
        .start("hello", json!(null), StartOptions::default())
        .await
        .unwrap();
    wait_all(&engine, &[late], &workers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_connecting_while_another_rebuilds_waits_for_the_rebuild() {
    let env = TestEnv::start().await;
    let config = env.config();
    // "Another process" has found Redis empty and is rebuilding it: it holds the lock, and
    // the epoch marker is not set yet.
    let other = tributary::transport::Transport::connect(tributary::transport::TransportConfig {
        url: env.redis.url(),
        prefix: config.key_prefix.clone(),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        dead_letter_max_len: 100,
    })
    .await
    .unwrap();
    assert!(
        other
            .try_rebuild_lock("other", Duration::from_secs(60))
            .await
            .unwrap()
    );
    let connecting = tokio::spawn(async move {
        tributary::runtime::Engine::connect(config, tributary_workflows::registry().unwrap())
            .await
            .map(|_| ())
    });
    // Had it gone on, steps it started would be published by the rebuild a second time.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !connecting.is_finished(),
        "connect returned while another process was rebuilding the stream"
    );
    other.set_epoch("rebuilt-by-other").await.unwrap();
    other.release_rebuild_lock().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .expect("connect goes on once the rebuild has ended")
        .unwrap()
        .unwrap();
    assert_eq!(
        other.epoch().await.unwrap().as_deref(),
        Some("rebuilt-by-other"),
        "the connecting process did not rebuild a second time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_flight_loses_no_run() {
    let mut env = TestEnv::start().await;
    let engine = client(&env).await;
    let workers = [worker(&env), worker(&env)];
    let runs = start_demo_runs(&engine, 100, 30).await;
    assert!(eventually(WAIT, || async { !commits(&engine).await.is_empty() }).await);
    env.postgres.kill().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // workers now fail to commit and back off
    env.postgres.restart().await.unwrap();

    wait_all(&engine, &runs, &workers).await;
    assert_each_step_committed_once(&engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_load_and_no_step_completes_twice() {
    let env = TestEnv::start().await;
    let engine = client(&env).await;
    let workers = [worker(&env), worker(&env)];
    let starts: Vec<_> = (0..200u64)
        .map(|i| ("chain3".to_owned(), json!(i), StartOptions::default()))
        .collect();
    let runs = engine.start_batch(&starts).await.unwrap();
    wait_all(&engine, &runs, &workers).await;
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(
            engine.status(*run).await.unwrap().output,
            Some(json!(i as u64 + 3))
        );
    }
    assert_each_step_committed_once(&engine).await;
    let consumers: HashSet<String> = sqlx::query_scalar(
        "SELECT DISTINCT detail FROM tributary_events WHERE kind = 'step_completed'",
    )
    .fetch_all(engine.store().pool())
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(consumers.len(), 2, "both workers took steps: {consumers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_step_finish_before_the_worker_exits() {
    let env = TestEnv::start().await;
    let engine = client(&env).await;
    let mut first = worker(&env);
    let run = engine
        .start(
            "demo",
            json!({"n": 1, "sleep_ms": 3000}),
            StartOptions::default(),
        )
        .await
        .unwrap();
    // Terminated while it executes square[0] (not while the entry may still be unread).
    assert_eq!(executing_pid(&engine, "square[0]").await, first.pid());
    first.signal("TERM").await;
    let status = first
        .wait(Duration::from_secs(20))
        .await
        .expect("the worker exits within its grace");
    assert!(status.success(), "{status:?}: {:#?}", first.logs());
    let view = engine.status(run).await.unwrap();
    let square = view.steps.iter().find(|s| s.step == "square[0]").unwrap();
    assert_eq!(
        (square.status.as_str(), square.attempt),
        ("completed", 1),
        "finished, not abandoned"
    );

    // The rest of the run waits for a worker, and completes with one.
    let second = worker(&env);
    wait_all(&engine, &[run], std::slice::from_ref(&second)).await;
    assert!(
        !engine
            .status(run)
            .await
            .unwrap()
            .events
            .iter()
            .any(|e| e.kind == "step_reclaimed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_and_bad_configuration_give_clear_errors() {
    let env = TestEnv::start().await;
    let closed = tributary::services::free_port().unwrap();
    let cases = [
        (
            vec![("REDIS_URL", format!("redis://127.0.0.1:{closed}"))],
            format!("cannot connect to Redis at redis://127.0.0.1:{closed}"),
        ),
        (
            vec![(
                "DATABASE_URL",
                format!("postgres://postgres:hunter2@127.0.0.1:{closed}/postgres"),
            )],
            format!(
                "cannot connect to PostgreSQL at postgres://postgres:***@127.0.0.1:{closed}/postgres"
            ),
        ),
        (
            vec![("TRIBUTARY_WORKER_CONCURRENCY", "many".to_owned())],
            "TRIBUTARY_WORKER_CONCURRENCY".to_owned(),
        ),
        (
            vec![("REDIS_URL", "http://127.0.0.1:1".to_owned())],
            "redis://".to_owned(),
        ),
    ];
    for (overrides, expected) in cases {
        let extra: Vec<(&str, &str)> = overrides.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut w = env.spawn_worker(BIN.as_ref(), &extra);
        let status = w
            .wait(Duration::from_secs(30))
            .await
            .expect("it gives up instead of hanging");
        assert!(!status.success());
        assert!(
            w.wait_for_log(&expected, Duration::from_secs(5)).await,
            "expected {expected:?} in {:#?}",
            w.logs()
        );
        assert!(
            !w.logs().iter().any(|l| l.contains("hunter2")),
            "a password was printed: {:#?}",
            w.logs()
        );
        assert!(
            !w.logs().iter().any(|l| l.contains("panicked")),
            "{:#?}",
            w.logs()
        );
    }
}

/// `tributary start --inputs`: one run per JSON line, started in batches; a file with a bad
/// line starts nothing and names the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_starts_a_batch_of_runs_from_json_lines() {
    let env = TestEnv::start().await;
    let engine = client(&env).await;
    let dir = std::env::temp_dir().join(format!("tributary-inputs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let start = |file: &std::path::Path| {
        let out = std::process::Command::new(BIN)
            .args(["start", "chain3", "--inputs"])
            .arg(file)
            .env("REDIS_URL", env.redis.url())
            .env("DATABASE_URL", env.postgres.url())
            .env("RUST_LOG", "warn")
            .output()
            .expect("the binary runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let runs = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tributary_runs")
            .fetch_one(engine.store().pool())
            .await
            .unwrap();
        n
    };

    let bad_json = dir.join("bad-json.jsonl");
    std::fs::write(&bad_json, "1\n{oops\n3\n").unwrap();
    let (ok, _, stderr) = tokio::task::block_in_place(|| start(&bad_json));
    assert!(!ok && stderr.contains("line 2"), "{stderr}");
    let bad_input = dir.join("bad-input.jsonl");
    std::fs::write(&bad_input, "1\n\n\"three\"\n").unwrap();
    let (ok, _, stderr) = tokio::task::block_in_place(|| start(&bad_input));
    assert!(!ok && stderr.contains("line 3"), "{stderr}");
    assert_eq!(runs().await, 0, "a bad file starts nothing");

    let good = dir.join("good.jsonl");
    let lines: String = (0..1_200).map(|i| format!("{i}\n\n")).collect();
    std::fs::write(&good, lines).unwrap();
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| start(&good));
    assert!(ok, "{stderr}");
    let ids: Vec<RunId> = stdout.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(ids.len(), 1_200);
    assert_eq!(runs().await, 1_200);
    // In the file's order: the first and the last run got the first and the last input.
    for (run, input) in [(ids[0], 0), (ids[1_199], 1_199)] {
        assert_eq!(engine.status(run).await.unwrap().input, json!(input));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_starts_waits_and_shows_status() {
    let env = TestEnv::start().await;
    let worker = worker(&env);
    let cli = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .env("REDIS_URL", env.redis.url())
            .env("DATABASE_URL", env.postgres.url())
            .env("RUST_LOG", "warn")
            .output()
            .expect("the binary runs")
    };
    let out =
        tokio::task::block_in_place(|| cli(&["start", "hello", "--wait", "--timeout", "30s"]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "\"Hello World\""
    );

    let out = tokio::task::block_in_place(|| cli(&["start", "chain3", "--input", "39"]));
    let run = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let engine = client(&env).await;
    wait_all(
        &engine,
        &[run.parse().unwrap()],
        std::slice::from_ref(&worker),
    )
    .await;
    let out = tokio::task::block_in_place(|| cli(&["status", &run]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("succeeded") && text.contains("output    42"),
        "{text}"
    );
    for step in ["a", "b", "c"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(step) && l.contains("completed")),
            "{text}"
        );
    }
    let out = tokio::task::block_in_place(|| cli(&["start", "chain3", "--input", "\"x\""]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match its input type"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_longer_than_its_lease_renews_it_and_is_not_reclaimed() {
    let env = TestEnv::start().await;
    let engine = client(&env).await;
    let workers = [worker(&env), worker(&env)];
    // 5 s of work under a 2 s lease: only renewal keeps the other worker away.
    let run = engine
        .start(
            "demo",
            json!({"n": 1, "sleep_ms": 5000}),
            StartOptions::default(),
        )
        .await
        .unwrap();
    wait_all(&engine, &[run], &workers).await;
    let view = engine.status(run).await.unwrap();
    assert!(
        !view.events.iter().any(|e| e.kind == "step_reclaimed"),
        "{:#?}",
        view.events
    );
    assert_eq!(
        view.steps
            .iter()
            .find(|s| s.step == "square[0]")
            .unwrap()
            .attempt,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_shutdown_grace_a_step_is_cancelled_and_handed_back() {
    let env = TestEnv::start().await;
    let engine = client(&env).await;
    let mut first = env.spawn_worker(
        BIN.as_ref(),
        &[
            ("RUST_LOG", "info"),
            ("TRIBUTARY_WORKER_SHUTDOWN_GRACE", "500ms"),
        ],
    );
    let run = engine
        .start(
            "demo",
            json!({"n": 1, "sleep_ms": 8000, "fail_times": 0}),
            StartOptions::default(),
        )
        .await
        .unwrap();
    // Terminated while it executes square[0] (its entry is then in the hand-back list).
    assert_eq!(executing_pid(&engine, "square[0]").await, first.pid());
    first.signal("TERM").await;
    let status = first
        .wait(Duration::from_secs(20))
        .await
        .expect("the worker exits soon after its grace");
    assert!(status.success(), "{status:?}");
    assert!(
        first
            .wait_for_log("handing back", Duration::from_secs(1))
            .await,
        "{:#?}",
        first.logs()
    );
    // The handed-back entry is waiting on the stream for the next worker, not in a pending list.
    let pending = engine.transport().pending(10).await.unwrap();
    assert!(pending.is_empty(), "{pending:?}");
    let second = worker(&env);
    wait_all(&engine, &[run], std::slice::from_ref(&second)).await;
    assert_each_step_committed_once(&engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_starts_private_servers_and_keeps_their_state_across_restarts() {
    let state = std::env::temp_dir().join(format!("tributary-dev-test-{}", uuid::Uuid::new_v4()));
    let dev = || {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(["dev", "--state-dir"])
            .arg(&state)
            .env_remove("REDIS_URL")
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        command.spawn().expect("tributary dev starts")
    };
    // Reads the URLs that `dev` prints.
    async fn urls(child: &mut tokio::process::Child) -> (String, String) {
        use tokio::io::AsyncBufReadExt;
        let stderr = child.stderr.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let (mut redis, mut pg) = (None, None);
        let read = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(v) = line.trim().strip_prefix("REDIS_URL=") {
                    redis = Some(v.to_owned());
                }
                if let Some(v) = line.trim().strip_prefix("DATABASE_URL=") {
                    pg = Some(v.to_owned());
                }
                if redis.is_some() && pg.is_some() {
                    break;
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .expect("dev printed its URLs in time");
        // Keep draining stderr so that the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (redis.unwrap(), pg.unwrap())
    }
    let cli = |redis: &str, pg: &str, args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .env("REDIS_URL", redis)
            .env("DATABASE_URL", pg)
            .env("RUST_LOG", "warn")
            .output()
            .expect("the binary runs")
    };

    let mut first = dev();
    let (redis, pg) = urls(&mut first).await;
    let out = tokio::task::block_in_place(|| {
        cli(
            &redis,
            &pg,
            &["start", "hello", "--wait", "--timeout", "30s"],
        )
    });
    assert!(out.status.success(), "{out:?}");
    let run = tokio::task::block_in_place(|| {
        cli(&redis, &pg, &["start", "chain3", "--input", "1", "--wait"])
    });
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "4");
    let count = tokio::task::block_in_place(|| {
        cli(
            &redis,
            &pg,
            &["start", "chain3", "--input", "1", "--idempotency-key", "k1"],
        )
    });
    let first_run = String::from_utf8_lossy(&count.stdout).trim().to_owned();

    // SIGTERM: `dev` stops its worker, then its servers. (A SIGKILL would leave the servers
    // running, orphaned.)
    async fn terminate(child: &mut tokio::process::Child) {
        let kill = tokio::process::Command::new("kill")
            .arg(child.id().unwrap().to_string())
            .status()
            .await
            .unwrap();
        assert!(kill.success());
        let status = tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("dev stops on SIGTERM")
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
    terminate(&mut first).await;

    // Started again on the same state directory: the runs are still there.
    let mut second = dev();
    let (redis, pg) = urls(&mut second).await;
    let again = tokio::task::block_in_place(|| {
        cli(
            &redis,
            &pg,
            &["start", "chain3", "--input", "1", "--idempotency-key", "k1"],
        )
    });
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        first_run,
        "the idempotency key survived the restart"
    );
    // The run may have been in flight at the SIGTERM (handed back): the second process
    // finishes it once its worker is up.
    let finished = eventually(WAIT, || async {
        let status = tokio::task::block_in_place(|| cli(&redis, &pg, &["status", &first_run]));
        String::from_utf8_lossy(&status.stdout).contains("status    succeeded")
    })
    .await;
    let status = tokio::task::block_in_place(|| cli(&redis, &pg, &["status", &first_run]));
    assert!(finished, "{status:?}");
    terminate(&mut second).await;
    let _ = std::fs::remove_dir_all(&state);
}

/// The most entries the worker of `engine`'s prefix held at once while `run` ran, sampled
/// every 20 ms (at most 60 s).
async fn most_entries_held(engine: &Engine, run: RunId) -> usize {
    let mut most = 0;
    for _ in 0..3000 {
        most = most.max(engine.transport().pending(100).await.unwrap().len());
        if engine.statuses(&[run]).await.unwrap()[&run].is_final() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_no_more_steps_at_once_than_it_has_slots() {
    let env = TestEnv::start().await;
    let engine = client(&env).await;
    let worker = env.spawn_worker(BIN.as_ref(), &[("TRIBUTARY_WORKER_CONCURRENCY", "2")]);
    let run = engine
        .start(
            "demo",
            json!({"n": 6, "sleep_ms": 300}),
            StartOptions::default(),
        )
        .await
        .unwrap();
    let most = most_entries_held(&engine, run).await;
    wait_all(&engine, &[run], std::slice::from_ref(&worker)).await;
    assert!(most >= 1, "the sampling saw the worker busy");
    assert!(
        most <= 2 * HELD_PER_SLOT,
        "a worker with 2 slots held {most} entries at once"
    );
    // Each item sleeps 300 ms: with 2 slots, a third item starts only once one of the two
    // before it has returned, so items two apart start at least 300 ms apart.
    let view = engine.status(run).await.unwrap();
    let mut starts: Vec<_> = view
        .steps
        .iter()
        .filter(|s| s.step.starts_with("square["))
        .map(|s| s.started_at.expect("a completed item has a start"))
        .collect();
    starts.sort();
    assert_eq!(starts.len(), 6, "{:?}", view.steps);
    for w in starts.windows(3) {
        let apart = w[2] - w[0];
        assert!(
            apart >= chrono::Duration::milliseconds(295),
            "three items ran at once on 2 slots: starts {starts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_gives_its_slot_back_while_its_checkpoint_waits_and_held_entries_stay_bounded() {
    let env = TestEnv::start().await;
    let engine = client(&env).await;
    // Every group commit waits 1 s for company: the entries of returned steps pile up.
    let worker = env.spawn_worker(
        BIN.as_ref(),
        &[
            ("TRIBUTARY_WORKER_CONCURRENCY", "2"),
            ("TRIBUTARY_WORKER_CHECKPOINT_DELAY", "1s"),
        ],
    );
    let run = engine
        .start("demo", json!({"n": 30}), StartOptions::default())
        .await
        .unwrap();
    let most = most_entries_held(&engine, run).await;
    wait_all(&engine, &[run], std::slice::from_ref(&worker)).await;
    assert!(
        most > 2,
        "steps waiting for their checkpoint kept their slots: at most {most} entries held"
    );
    assert!(
        most <= 2 * HELD_PER_SLOT,
        "a worker with 2 slots held {most} entries at once (bound {})",
        2 * HELD_PER_SLOT
    );
}

/// Makes a CA and a server certificate for 127.0.0.1 with `openssl`; returns the directory.
fn tls_material() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tributary-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl runs (install Debian's openssl package)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=Tributary test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_rediss_urls() {
    let env = TestEnv::start().await;
    let tls = tls_material();
    let port = tributary::services::free_port().unwrap();
    let redis_server = tributary::services::find_binary("redis-server").unwrap();
    let _redis = tokio::process::Command::new(redis_server)
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--tls-port",
            &port.to_string(),
        ])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.crt",
        ])
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .current_dir(&tls)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server starts");
    assert!(
        eventually(WAIT, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await
    );
    let url = format!("rediss://127.0.0.1:{port}");
    let ca = tls.join("ca.crt");
    // The server's CA is trusted through the standard SSL_CERT_FILE.
    let _worker = env.spawn_worker(
        BIN.as_ref(),
        &[
            ("REDIS_URL", url.as_str()),
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
        ],
    );
    let cli = |extra: &[(&str, &str)]| {
        std::process::Command::new(BIN)
            .args(["start", "hello", "--wait", "--timeout", "30s"])
            .env("REDIS_URL", &url)
            .env("DATABASE_URL", env.postgres.url())
            .env("TRIBUTARY_CONNECT_TIMEOUT", "5s")
            .env("RUST_LOG", "warn")
            .envs(extra.iter().copied())
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(|| cli(&[("SSL_CERT_FILE", ca.to_str().unwrap())]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "\"Hello World\""
    );
    // Trusting only another CA, the connection is refused with a clear error.
    let other = tls_material();
    let other_ca = other.join("ca.crt");
    let out = tokio::task::block_in_place(|| cli(&[("SSL_CERT_FILE", other_ca.to_str().unwrap())]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to Redis at {url}")),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(tls);
}
