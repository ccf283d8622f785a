//! Rate limits (`tributary::ratelimit`) against a real `redis-server` started per test.
//!
//! Two `RateLimiter`s on separate connections stand for two engine processes. Time is real;
//! every loop is bounded in count and time, and the assertions count grants within quota
//! windows (with slack for scheduling jitter) rather than measure speed.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tributary::ratelimit::{Error, Quota, RateLimitConfig, RateLimiter};
use tributary::services::{LocalRedis, RedisOptions};
use tributary::transport::{Transport, TransportConfig};
use tributary::workflow::Classify;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

async fn start_redis() -> LocalRedis {
    LocalRedis::start(RedisOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot start the test Redis: {e}"))
}

/// A limiter on its own connection: one "process".
async fn process(redis: &LocalRedis, prefix: &str, max_wait: Duration) -> RateLimiter {
    let transport = Transport::connect(TransportConfig {
        url: redis.url(),
        prefix: prefix.to_owned(),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(2),
        dead_letter_max_len: 1_000,
    })
    .await
    .expect("connect to the test Redis");
    RateLimiter::new(
        transport,
        RateLimitConfig {
            max_wait,
            ..RateLimitConfig::default()
        },
    )
}

fn exhausted(result: Result<Duration, Error>) -> (String, Duration) {
    match result {
        Err(e @ Error::Exhausted { .. }) => {
            assert!(e.is_retryable(), "Exhausted must be retryable");
            let Error::Exhausted { api, retry_after } = e else {
                unreachable!()
            };
            (api, retry_after)
        }
        other => panic!("expected Exhausted, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_hammering_one_api_together_stay_within_the_quota() {
    let redis = start_redis().await;
    let a = process(&redis, "rl", Duration::from_secs(5)).await;
    let b = process(&redis, "rl", Duration::from_secs(5)).await;
    let quota = Quota::per_second(nz(20)).with_burst(nz(1));
    let run = Duration::from_millis(1_500);

    let grants: Arc<Mutex<Vec<(Instant, char)>>> = Arc::default();
    let start = Instant::now();
    let deadline = start + run;
    let mut tasks = Vec::new();
    for (name, limiter) in [('a', &a), ('b', &b)] {
        for _ in 0..4 {
            let (limiter, quota, grants) = (limiter.clone(), quota.clone(), grants.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..200 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    limiter.acquire("fred", &quota).await.expect("granted");
                    grants.lock().unwrap().push((Instant::now(), name));
                }
            }));
        }
    }
    tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks))
        .await
        .expect("the hammering ends");

    let mut grants: Vec<(Instant, char)> = grants
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|(t, _)| *t < deadline)
        .collect();
    grants.sort();
    // 20/s over 1.5 s is 30, plus the burst, plus one for jitter at the window's edges.
    let most = 30 + 1 + 1;
    // At least 60% of the quota: the limiter must not starve the callers either.
    let least = 18;
    assert!(
        (least..=most).contains(&grants.len()),
        "{} grants in 1.5 s at 20/s (expected {least}..={most})",
        grants.len()
    );
    // No one-second window holds more than the quota plus the burst plus slack for jitter.
    for (i, (t, _)) in grants.iter().enumerate() {
        let in_window = grants[i..]
            .iter()
            .take_while(|(u, _)| *u < *t + Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 20 + 1 + 1,
            "{in_window} grants within one second"
        );
    }
    for name in ['a', 'b'] {
        assert!(
            grants.iter().any(|(_, n)| *n == name),
            "process {name} got no grant"
        );
    }
}

#[tokio::test]
async fn each_api_and_each_key_prefix_has_its_own_limit() {
    let redis = start_redis().await;
    let max_wait = Duration::from_millis(200);
    let a = process(&redis, "rl", max_wait).await;
    let b = process(&redis, "rl", max_wait).await;
    let other_deployment = process(&redis, "other", max_wait).await;
    let gdelt = Quota::every(Duration::from_secs(5));

    a.acquire("gdelt", &gdelt).await.unwrap();
    let (api, _) = exhausted(b.acquire("gdelt", &gdelt).await);
    assert_eq!(api, "gdelt");
    b.acquire("worldbank", &gdelt).await.unwrap();
    a.acquire("comtrade", &gdelt).await.unwrap();
    other_deployment.acquire("gdelt", &gdelt).await.unwrap();
}

#[tokio::test]
async fn a_wait_longer_than_max_wait_fails_at_once_with_a_retry_after() {
    let redis = start_redis().await;
    let a = process(&redis, "rl", Duration::from_secs(1)).await;
    let b = process(&redis, "rl", Duration::from_secs(1)).await;
    let gdelt = Quota::every(Duration::from_secs(5));

    a.acquire("gdelt", &gdelt).await.unwrap();
    // Refused by the shared limit (b's own local limiter has not seen a request yet)…
    let (_, shared) = exhausted(b.acquire("gdelt", &gdelt).await);
    // …and by a's local pre-filter.
    let (_, local) = exhausted(a.acquire("gdelt", &gdelt).await);
    for retry_after in [shared, local] {
        assert!(
            retry_after > Duration::from_secs(3) && retry_after <= Duration::from_secs(5),
            "retry_after {retry_after:?} should be the rest of the 5 s interval"
        );
    }
    let message = b.acquire("gdelt", &gdelt).await.unwrap_err().to_string();
    assert!(
        message.starts_with("rate limit of gdelt exhausted: retry in"),
        "{message}"
    );

    // A wait within max_wait is slept, not refused.
    let worldbank = Quota::per_second(nz(10));
    a.acquire("worldbank", &worldbank).await.unwrap();
    b.acquire("worldbank", &worldbank).await.unwrap();
    b.acquire("worldbank", &worldbank).await.unwrap();
}

#[tokio::test]
async fn a_daily_cap_is_shared_and_refuses_until_the_next_utc_midnight() {
    let redis = start_redis().await;
    let a = process(&redis, "rl", Duration::from_secs(5)).await;
    let b = process(&redis, "rl", Duration::from_secs(5)).await;
    let comtrade: Quota = "1000/s; daily=3".parse().unwrap();

    a.acquire("comtrade", &comtrade).await.unwrap();
    a.acquire("comtrade", &comtrade).await.unwrap();
    b.acquire("comtrade", &comtrade).await.unwrap();
    let expected = (Utc::now().date_naive().succ_opt().unwrap())
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        - Utc::now();
    let expected = expected.to_std().unwrap();
    for limiter in [&a, &b] {
        let (api, retry_after) = exhausted(limiter.acquire("comtrade", &comtrade).await);
        assert_eq!(api, "comtrade");
        assert!(
            retry_after.abs_diff(expected) < Duration::from_secs(10),
            "retry_after {retry_after:?}, time to midnight UTC {expected:?}"
        );
    }
    // Other APIs keep their own count.
    b.acquire("reliefweb", &comtrade).await.unwrap();
}

#[test]
fn quotas_parse_print_and_round_trip_through_serde() {
    let cases = [
        ("120/min", Quota::per_minute(nz(120))),
        ("1/5s", Quota::every(Duration::from_secs(5))),
        (
            "1/s; daily=500",
            Quota::per_second(nz(1)).with_daily(nz(500)),
        ),
        ("10/s; burst=5", Quota::per_second(nz(10)).with_burst(nz(5))),
        (
            "3/1m 30s; burst=2; daily=9",
            Quota {
                requests: nz(3),
                per: Duration::from_secs(90),
                burst: Some(nz(2)),
                daily: Some(nz(9)),
            },
        ),
        (
            "500/100ms",
            Quota {
                requests: nz(500),
                per: Duration::from_millis(100),
                burst: None,
                daily: None,
            },
        ),
        (
            "1000/day",
            Quota {
                requests: nz(1000),
                per: Duration::from_secs(86_400),
                burst: None,
                daily: None,
            },
        ),
    ];
    for (text, quota) in cases {
        let parsed: Quota = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(parsed, quota, "{text}");
        assert_eq!(parsed.to_string(), text);
        assert_eq!(parsed.to_string().parse::<Quota>().unwrap(), parsed);
        let json = serde_json::to_string(&parsed).unwrap();
        assert_eq!(json, format!("\"{parsed}\""));
        assert_eq!(serde_json::from_str::<Quota>(&json).unwrap(), parsed);
    }
    // Spaces around the parts do not matter.
    assert_eq!(
        " 1 / 5s ;daily = 500 ".parse::<Quota>().unwrap(),
        Quota::every(Duration::from_secs(5)).with_daily(nz(500))
    );
}

#[test]
fn garbage_quotas_are_rejected_with_a_message_naming_the_problem() {
    let cases = [
        ("", "expected <requests>/<period>"),
        ("120 per minute", "expected <requests>/<period>"),
        (
            "0/s",
            "the number of requests must be a whole number from 1",
        ),
        (
            "-1/s",
            "the number of requests must be a whole number from 1",
        ),
        (
            "x/s",
            "the number of requests must be a whole number from 1",
        ),
        ("120/", "bad period \"\""),
        ("120/fortnight", "bad period \"fortnight\""),
        ("1/0s", "the period must be longer than zero"),
        ("1/s; burst=0", "burst must be a whole number from 1"),
        ("1/s; daily", "expected an option burst=<n> or daily=<n>"),
        ("1/s; rate=3", "unknown option \"rate\""),
        ("1/s; daily=1; daily=2", "daily is given twice"),
    ];
    for (text, problem) in cases {
        let error = text.parse::<Quota>().unwrap_err();
        assert!(!error.is_retryable(), "{text}: a bad quota is fatal");
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("invalid rate-limit quota {text:?}: ")),
            "{message}"
        );
        assert!(message.contains(problem), "{text}: {message}");
        assert!(message.contains("e.g. \"120/min\""), "{message}");
    }
    let error = serde_json::from_str::<Quota>("\"lots\"").unwrap_err();
    assert!(
        error.to_string().contains("invalid rate-limit quota"),
        "{error}"
    );
}

#[tokio::test]
async fn without_redis_the_local_limits_apply_and_sharing_resumes_when_it_is_back() {
    let mut redis = start_redis().await;
    let max_wait = Duration::from_millis(500);
    let a = process(&redis, "rl", max_wait).await;
    let gdelt = Quota::every(Duration::from_secs(5));
    a.acquire("warm-up", &gdelt).await.unwrap();

    redis.kill().await.unwrap();
    let bounded = Duration::from_secs(10);
    // Granted by the local limiter alone, not an error…
    tokio::time::timeout(bounded, a.acquire("gdelt", &gdelt))
        .await
        .expect("acquire ends while Redis is down")
        .expect("granted by the local limits");
    // …which still limits this process.
    let (_, retry_after) = exhausted(
        tokio::time::timeout(bounded, a.acquire("gdelt", &gdelt))
            .await
            .unwrap(),
    );
    assert!(retry_after > Duration::from_secs(3));
    // A daily cap continues locally.
    let comtrade: Quota = "1000/s; daily=2".parse().unwrap();
    for _ in 0..2 {
        tokio::time::timeout(bounded, a.acquire("comtrade", &comtrade))
            .await
            .unwrap()
            .unwrap();
    }
    exhausted(
        tokio::time::timeout(bounded, a.acquire("comtrade", &comtrade))
            .await
            .unwrap(),
    );

    // Back (empty: no persistence). Once a's client has reconnected and a has left its
    // fallback, a's grants count in Redis again, so b is refused.
    redis.restart().await.unwrap();
    let b = process(&redis, "rl", max_wait).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut shared_again = false;
    for i in 0..100 {
        let api = format!("after-restart-{i}");
        let granted_to_a = tokio::time::timeout(bounded, a.acquire(&api, &gdelt))
            .await
            .unwrap();
        let granted_to_b = tokio::time::timeout(bounded, b.acquire(&api, &gdelt))
            .await
            .unwrap();
        assert!(granted_to_a.is_ok(), "{granted_to_a:?}");
        if granted_to_b.is_err() {
            exhausted(granted_to_b);
            shared_again = true;
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        shared_again,
        "the limits were not shared again after Redis came back"
    );
}
