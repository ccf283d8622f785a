//! Rate limits for outbound API calls, per API, shared by every engine process.
//!
//! A step calls [`RateLimiter::acquire`] with the API's name and its [`Quota`] (a rate, an
//! optional burst and an optional daily cap, from the API's documentation) before each
//! request. Three stages, in this order:
//!
//! 1. **Local pre-filter**: a `governor` limiter per API in this process. It keeps one
//!    process's own bursts from hammering Redis and is the whole limit when Redis is out of
//!    reach.
//! 2. **Shared rate**: GCRA in Redis (`transport/gcra.lua`, run atomically with `EVALSHA`),
//!    key `<prefix>:ratelimit:<api>`, so N processes together stay under the quota. When Redis
//!    says "wait", the caller sleeps that long and asks again.
//! 3. **Daily cap**: a counter per calendar day (UTC) in Redis,
//!    `<prefix>:ratelimit:<api>:<YYYY-MM-DD>`, refused without counting once the cap is reached.
//!
//! A step never waits long: if the wait would exceed [`RateLimitConfig::max_wait`], or the day's
//! cap is used up, `acquire` returns [`Error::Exhausted`] with a `retry_after` instead of
//! sleeping. The error is retryable, so the step goes back to due-time state and the engine
//! retries it later (invariant 3: delayed work does not wait inside a step).
//!
//! **Redis unreachable:** `acquire` does not fail. It warns once per outage and falls back to
//! the local limits (rate and this process's view of the day's count), probing Redis again
//! every few seconds. During an outage N processes may together exceed a rate by up to N×; a
//! daily cap continues from the last count Redis returned. An external API's own 429 is still
//! handled by the HTTP layer.
//!
//! Redis is reached only through [`Transport::rate_limit`] and [`Transport::daily_count`] (the
//! transport module owns the scripts and the key names). This module knows nothing of
//! PostgreSQL, streams or workflows.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use governor::clock::Clock;
use serde::{Deserialize, Serialize};

use crate::transport::Transport;
use crate::workflow::Classify;

/// Longest time one Redis call may take before the limiter falls back to the local limits.
/// A healthy Redis answers in milliseconds; the transport's own command timeout (10 s in the
/// engine) is far too long to hold a step for.
const REDIS_CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// After a failed Redis call, how long the limiter uses only the local limits before it asks
/// Redis again. Keeps an outage from costing every `acquire` a timeout.
const REDIS_RETRY: Duration = Duration::from_secs(2);

/// The documented limits of one API: `requests` per `per`, with an optional burst and an
/// optional cap per calendar day (UTC).
///
/// Without a burst, requests are spaced evenly, `per / requests` apart, so the API never sees
/// more than `requests` in any window of length `per`. A burst of `b` lets up to `b` go at once
/// after a quiet spell, which can put `b - 1` more into one window: keep it small for APIs that
/// count in fixed windows.
///
/// # Grammar
///
/// Quotas read from configuration are strings (`FromStr`, and serde as a string):
///
/// ```text
/// quota   = rate *( ";" option )
/// rate    = requests "/" period
/// period  = [ number ] unit         ; "s", "5s", "min", "100ms", "h", "day", "1m 30s", …
/// option  = "burst=" count | "daily=" count
/// ```
///
/// `requests` and `count` are whole numbers from 1. Units are those of `humantime` (`ms`,
/// `s`/`sec`, `m`/`min`, `h`/`hour`, `d`/`day`, …); a unit without a number means one of it.
/// Spaces around the parts are ignored.
///
/// # Example
/// ```
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// use tributary::ratelimit::Quota;
///
/// // UN Comtrade's free tier: one call per second, 500 per day.
/// let comtrade: Quota = "1/s; daily=500".parse().unwrap();
/// assert_eq!(
///     comtrade,
///     Quota::per_second(NonZeroU32::MIN).with_daily(NonZeroU32::new(500).unwrap())
/// );
/// // GDELT: one request every 5 seconds.
/// assert_eq!("1/5s".parse::<Quota>().unwrap(), Quota::every(Duration::from_secs(5)));
/// assert_eq!(comtrade.to_string(), "1/s; daily=500");
/// assert!("120 per minute".parse::<Quota>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Quota {
    /// Requests allowed per period.
    pub requests: NonZeroU32,
    /// The period. A zero period is treated as one microsecond.
    pub per: Duration,
    /// How many requests may go at once. `None`: one (evenly spaced).
    pub burst: Option<NonZeroU32>,
    /// Requests allowed per calendar day (UTC). `None`: no daily cap.
    pub daily: Option<NonZeroU32>,
}

impl Quota {
    /// `n` requests per second.
    pub const fn per_second(n: NonZeroU32) -> Self {
        Self::new(n, Duration::from_secs(1))
    }

    /// `n` requests per minute.
    pub const fn per_minute(n: NonZeroU32) -> Self {
        Self::new(n, Duration::from_secs(60))
    }

    /// One request per `interval`.
    pub const fn every(interval: Duration) -> Self {
        Self::new(NonZeroU32::MIN, interval)
    }

    const fn new(requests: NonZeroU32, per: Duration) -> Self {
        Self {
            requests,
            per,
            burst: None,
            daily: None,
        }
    }

    /// The same quota allowing bursts of `n` requests.
    pub const fn with_burst(mut self, n: NonZeroU32) -> Self {
        self.burst = Some(n);
        self
    }

    /// The same quota capped at `n` requests per calendar day (UTC).
    pub const fn with_daily(mut self, n: NonZeroU32) -> Self {
        self.daily = Some(n);
        self
    }

    /// The spacing of requests: `per / requests`, at least one microsecond.
    pub fn emission_interval(&self) -> Duration {
        (self.per / self.requests.get()).max(Duration::from_micros(1))
    }

    /// The burst size: [`Quota::burst`], or one.
    pub fn burst_size(&self) -> NonZeroU32 {
        self.burst.unwrap_or(NonZeroU32::MIN)
    }

    /// The same rate as a `governor` quota, for the local limiter.
    fn governor(&self) -> governor::Quota {
        governor::Quota::with_period(self.emission_interval())
            .expect("the emission interval is at least one microsecond")
            .allow_burst(self.burst_size())
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = match self.per.as_secs() {
            _ if self.per.subsec_nanos() != 0 => humantime::format_duration(self.per).to_string(),
            1 => "s".into(),
            60 => "min".into(),
            3600 => "h".into(),
            86_400 => "day".into(),
            _ => humantime::format_duration(self.per).to_string(),
        };
        write!(f, "{}/{per}", self.requests)?;
        if let Some(burst) = self.burst {
            write!(f, "; burst={burst}")?;
        }
        if let Some(daily) = self.daily {
            write!(f, "; daily={daily}")?;
        }
        Ok(())
    }
}

impl FromStr for Quota {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let bad = |problem: String| Error::InvalidQuota {
            input: input.to_owned(),
            problem,
        };
        let count = |what: &str, raw: &str| {
            raw.trim().parse::<NonZeroU32>().map_err(|_| {
                bad(format!(
                    "{what} must be a whole number from 1 to {}, got {:?}",
                    u32::MAX,
                    raw.trim()
                ))
            })
        };
        let mut parts = input.split(';');
        let rate = parts.next().unwrap_or_default().trim();
        let Some((requests, period)) = rate.split_once('/') else {
            return Err(bad(format!(
                "expected <requests>/<period> before any ';', got {rate:?}"
            )));
        };
        let requests = count("the number of requests", requests)?;
        let period = period.trim();
        let spelled = if period.starts_with(|c: char| c.is_ascii_digit()) {
            period.to_owned()
        } else {
            format!("1{period}")
        };
        let per = humantime::parse_duration(&spelled)
            .map_err(|e| bad(format!("bad period {period:?}: {e}")))?;
        if per.is_zero() {
            return Err(bad("the period must be longer than zero".into()));
        }
        let mut quota = Quota::new(requests, per);
        for option in parts {
            let option = option.trim();
            let Some((name, value)) = option.split_once('=') else {
                return Err(bad(format!(
                    "expected an option burst=<n> or daily=<n>, got {option:?}"
                )));
            };
            let slot = match name.trim() {
                "burst" => &mut quota.burst,
                "daily" => &mut quota.daily,
                other => {
                    return Err(bad(format!(
                        "unknown option {other:?} (known: burst, daily)"
                    )));
                }
            };
            if slot.is_some() {
                return Err(bad(format!("{} is given twice", name.trim())));
            }
            *slot = Some(count(name.trim(), value)?);
        }
        Ok(quota)
    }
}

impl TryFrom<String> for Quota {
    type Error = Error;

    fn try_from(value: String) -> Result<Self, Error> {
        value.parse()
    }
}

impl From<Quota> for String {
    fn from(quota: Quota) -> Self {
        quota.to_string()
    }
}

/// How a [`RateLimiter`] behaves. Every field documents its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Longest time `acquire` sleeps; a longer wait returns [`Error::Exhausted`] at once, and
    /// the step is retried later from due-time state. Default: 30 s.
    pub max_wait: Duration,
    /// Share the limits with the other processes through Redis. `false` (or a limiter made
    /// with [`RateLimiter::local_only`]): each process limits only itself. Default: `true`.
    pub shared: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(30),
            shared: true,
        }
    }
}

/// A request could not be granted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The wait would exceed `max_wait`, or the day's cap is used up. Retryable.
    #[error("rate limit of {api} exhausted: retry in {}", rounded(.retry_after))]
    Exhausted {
        /// The API.
        api: String,
        /// When a request may go: the wait the limit asked for, or the time to the next
        /// midnight (UTC) for a daily cap.
        retry_after: Duration,
    },
    /// Redis failed. [`RateLimiter::acquire`] does not return this (it falls back to the
    /// local limits); it is here for calls that must reach Redis. Retryable.
    #[error("rate limit in Redis: {0}")]
    Redis(#[from] crate::transport::Error),
    /// A quota string does not follow the grammar of [`Quota`]. Fatal.
    #[error(
        "invalid rate-limit quota {input:?}: {problem} (expected <requests>/<period>[; burst=<n>][; daily=<n>], e.g. \"120/min\", \"1/5s\" or \"1/s; daily=500\")"
    )]
    InvalidQuota {
        /// The string as given.
        input: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn rounded(d: &Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64))
}

impl Error {
    /// When to try again, for [`Error::Exhausted`].
    ///
    /// # Example
    /// ```
    /// use std::time::Duration;
    /// use tributary::ratelimit::Error;
    ///
    /// let e = Error::Exhausted { api: "gdelt".into(), retry_after: Duration::from_secs(4) };
    /// assert_eq!(e.retry_after(), Some(Duration::from_secs(4)));
    /// assert_eq!(e.to_string(), "rate limit of gdelt exhausted: retry in 4s");
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Exhausted { retry_after, .. } => Some(*retry_after),
            Error::Redis(_) | Error::InvalidQuota { .. } => None,
        }
    }
}

impl Classify for Error {
    fn is_retryable(&self) -> bool {
        match self {
            Error::Exhausted { .. } | Error::Redis(_) => true,
            Error::InvalidQuota { .. } => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        Error::retry_after(self)
    }
}

/// Rate limits of outbound API calls, shared through Redis by every process (cheap to clone;
/// clones share their state).
///
/// # Example
/// ```
/// use std::time::Duration;
/// use tributary::ratelimit::{Quota, RateLimitConfig, RateLimiter};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let limiter = RateLimiter::local_only(RateLimitConfig {
///     max_wait: Duration::from_millis(100),
///     ..RateLimitConfig::default()
/// });
/// let gdelt: Quota = "1/5s".parse().unwrap();
/// limiter.acquire("gdelt", &gdelt).await.unwrap();
/// // The next slot is 5 s away, more than `max_wait`: the step should fail and retry later.
/// let refused = limiter.acquire("gdelt", &gdelt).await.unwrap_err();
/// assert!(refused.retry_after().unwrap() > Duration::from_secs(4));
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Option<Transport>,
    config: RateLimitConfig,
    apis: Mutex<HashMap<String, ApiState>>,
    /// `Some(t)`: Redis failed; use only the local limits until `t`.
    redis_down_until: Mutex<Option<Instant>>,
}

/// One API's state in this process.
struct ApiState {
    /// The quota last used; a different rate or burst rebuilds the local limiter.
    quota: Quota,
    local: Arc<governor::DefaultDirectRateLimiter>,
    /// This process's view of the day's count: the last count Redis returned plus the grants
    /// made locally since (exact when Redis is not used).
    day: Option<(NaiveDate, u32)>,
}

impl ApiState {
    fn used_on(&self, day: NaiveDate) -> u32 {
        match self.day {
            Some((d, n)) if d == day => n,
            _ => 0,
        }
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let apis: Vec<String> = lock(&self.inner.apis).keys().cloned().collect();
        f.debug_struct("RateLimiter")
            .field("config", &self.inner.config)
            .field("transport", &self.inner.transport)
            .field("apis", &apis)
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RateLimiter {
    /// A limiter shared through Redis by every process using the same key prefix (unless
    /// `config.shared` is `false`).
    pub fn new(transport: Transport, config: RateLimitConfig) -> Self {
        Self::build(Some(transport), config)
    }

    /// A limiter of this process only, without Redis: for unit tests and offline use.
    pub fn local_only(config: RateLimitConfig) -> Self {
        Self::build(None, config)
    }

    fn build(transport: Option<Transport>, config: RateLimitConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                transport,
                config,
                apis: Mutex::new(HashMap::new()),
                redis_down_until: Mutex::new(None),
            }),
        }
    }

    /// Waits until a request to `api` may be made under `quota`, and returns how long that
    /// took. Call it right before each request.
    ///
    /// # Errors
    /// [`Error::Exhausted`] (retryable) when the wait would exceed
    /// [`RateLimitConfig::max_wait`] or the day's cap is used up; `retry_after` says when to
    /// try again. Nothing else: without Redis the local limits apply.
    pub async fn acquire(&self, api: &str, quota: &Quota) -> Result<Duration, Error> {
        let start = Instant::now();
        let mut slept = false;
        if let Some(cap) = quota.daily {
            // A day's count only grows: once this process has seen the cap reached, refuse
            // without asking anyone (and without taking a slot of the rate).
            let now = Utc::now();
            if self.state(api, quota, |s| s.used_on(now.date_naive())) >= cap.get() {
                return Err(self.day_exhausted(api, now));
            }
        }

        let local = self.state(api, quota, |s| s.local.clone());
        loop {
            match local.check() {
                Ok(()) => break,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(local.clock().now());
                    self.sleep_within(api, start, wait).await?;
                    slept = true;
                }
            }
        }

        if let Some(transport) = self.shared_transport() {
            loop {
                let call =
                    transport.rate_limit(api, quota.emission_interval(), quota.burst_size().get());
                match tokio::time::timeout(REDIS_CALL_TIMEOUT, call).await {
                    Ok(Ok(wait)) => {
                        self.redis_ok();
                        if wait.is_zero() {
                            break;
                        }
                        self.sleep_within(api, start, wait).await?;
                        slept = true;
                    }
                    Ok(Err(e)) => {
                        self.redis_failed(&e);
                        break;
                    }
                    Err(_) => {
                        self.redis_failed(&format_args!("no reply within {REDIS_CALL_TIMEOUT:?}"));
                        break;
                    }
                }
            }
        }

        if let Some(cap) = quota.daily {
            self.count_daily(api, quota, cap).await?;
        }

        let waited = start.elapsed();
        if slept {
            tracing::debug!(
                api,
                waited_ms = waited.as_millis() as u64,
                "rate limit waited"
            );
        }
        record_wait(api, waited);
        Ok(waited)
    }

    /// Runs `f` on the state of `api`, creating it (or rebuilding its local limiter when the
    /// quota changed).
    fn state<R>(&self, api: &str, quota: &Quota, f: impl FnOnce(&mut ApiState) -> R) -> R {
        let mut apis = lock(&self.inner.apis);
        let state = apis.entry(api.to_owned()).or_insert_with(|| ApiState {
            quota: quota.clone(),
            local: Arc::new(governor::RateLimiter::direct(quota.governor())),
            day: None,
        });
        if (state.quota.requests, state.quota.per, state.quota.burst)
            != (quota.requests, quota.per, quota.burst)
        {
            state.local = Arc::new(governor::RateLimiter::direct(quota.governor()));
        }
        state.quota = quota.clone();
        f(state)
    }

    /// Sleeps `wait` unless that would take the whole `acquire` past `max_wait`.
    async fn sleep_within(&self, api: &str, start: Instant, wait: Duration) -> Result<(), Error> {
        if start.elapsed() + wait > self.inner.config.max_wait {
            tracing::debug!(
                api,
                retry_after_ms = wait.as_millis() as u64,
                "rate limit wait exceeds max_wait"
            );
            return Err(Error::Exhausted {
                api: api.to_owned(),
                retry_after: wait,
            });
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Counts one request against the day's cap: in Redis when reachable, else locally.
    async fn count_daily(&self, api: &str, quota: &Quota, cap: NonZeroU32) -> Result<(), Error> {
        let now = Utc::now();
        let today = now.date_naive();
        if let Some(transport) = self.shared_transport() {
            let day = today.format("%Y-%m-%d").to_string();
            let call = transport.daily_count(api, &day, cap.get());
            match tokio::time::timeout(REDIS_CALL_TIMEOUT, call).await {
                Ok(Ok(counted)) => {
                    self.redis_ok();
                    let used = counted.unwrap_or(cap.get());
                    self.state(api, quota, |s| {
                        s.day = Some((today, used.max(s.used_on(today))));
                    });
                    return match counted {
                        Some(_) => Ok(()),
                        None => Err(self.day_exhausted(api, now)),
                    };
                }
                Ok(Err(e)) => self.redis_failed(&e),
                Err(_) => {
                    self.redis_failed(&format_args!("no reply within {REDIS_CALL_TIMEOUT:?}"))
                }
            }
        }
        let granted = self.state(api, quota, |s| {
            let used = s.used_on(today);
            let granted = used < cap.get();
            if granted {
                s.day = Some((today, used + 1));
            }
            granted
        });
        if granted {
            Ok(())
        } else {
            Err(self.day_exhausted(api, now))
        }
    }

    fn day_exhausted(&self, api: &str, now: DateTime<Utc>) -> Error {
        let retry_after = until_next_utc_midnight(now);
        tracing::debug!(
            api,
            retry_after_ms = retry_after.as_millis() as u64,
            "daily rate-limit cap reached"
        );
        Error::Exhausted {
            api: api.to_owned(),
            retry_after,
        }
    }

    /// The transport, if the limits are shared and Redis is not known to be down.
    fn shared_transport(&self) -> Option<&Transport> {
        let transport = self.inner.transport.as_ref()?;
        if !self.inner.config.shared {
            return None;
        }
        match *lock(&self.inner.redis_down_until) {
            Some(until) if Instant::now() < until => None,
            _ => Some(transport),
        }
    }

    fn redis_failed(&self, problem: &dyn fmt::Display) {
        let mut down_until = lock(&self.inner.redis_down_until);
        if down_until.is_none() {
            tracing::warn!(
                error = %problem,
                "Redis unreachable: rate limits fall back to this process's own limits until it is back (processes may together exceed a quota meanwhile)"
            );
        }
        *down_until = Some(Instant::now() + REDIS_RETRY);
    }

    fn redis_ok(&self) {
        if lock(&self.inner.redis_down_until).take().is_some() {
            tracing::info!("Redis reachable again: rate limits are shared again");
        }
    }
}

/// The time from `now` to the next midnight UTC, when a daily cap starts afresh.
fn until_next_utc_midnight(now: DateTime<Utc>) -> Duration {
    now.date_naive()
        .succ_opt()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .and_then(|midnight| (midnight.and_utc() - now).to_std().ok())
        .unwrap_or(Duration::from_secs(24 * 3600))
}

/// Reports how long one granted [`RateLimiter::acquire`] waited to the metrics
/// (`tributary_rate_limit_waits_total`, `tributary_rate_limit_waited_seconds_total`; a call
/// that did not wait is not a wait).
fn record_wait(api: &str, waited: Duration) {
    crate::telemetry::metrics::rate_limit_wait(api, waited);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_utc_midnight_is_counted_from_now() {
        let now = DateTime::parse_from_rfc3339("2025-03-01T23:59:30Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(until_next_utc_midnight(now), Duration::from_secs(30));
        let midnight = DateTime::parse_from_rfc3339("2025-03-02T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            until_next_utc_midnight(midnight),
            Duration::from_secs(24 * 3600)
        );
    }

    #[test]
    fn the_emission_interval_spreads_requests_over_the_period() {
        let fred = Quota::per_minute(NonZeroU32::new(120).unwrap());
        assert_eq!(fred.emission_interval(), Duration::from_millis(500));
        assert_eq!(fred.burst_size().get(), 1);
        let zero = Quota::every(Duration::ZERO);
        assert_eq!(zero.emission_interval(), Duration::from_micros(1));
    }

    #[tokio::test]
    async fn a_local_daily_cap_refuses_the_request_after_the_cap() {
        let limiter = RateLimiter::local_only(RateLimitConfig::default());
        let quota: Quota = "1000/s; daily=2".parse().unwrap();
        limiter.acquire("reliefweb", &quota).await.unwrap();
        limiter.acquire("reliefweb", &quota).await.unwrap();
        let refused = limiter.acquire("reliefweb", &quota).await.unwrap_err();
        assert!(refused.is_retryable());
        assert!(refused.retry_after().unwrap() <= Duration::from_secs(24 * 3600));
        // Another API has its own count.
        limiter.acquire("worldbank", &quota).await.unwrap();
    }
}
