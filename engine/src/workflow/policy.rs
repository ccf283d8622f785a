//! Per-step options: retry policy and timeout.

use std::num::NonZeroU32;
use std::time::Duration;

/// How often and how patiently a step is retried after a retryable error.
///
/// The delay before attempt `n + 1` is `initial_delay * factor^(n - 1)`, capped at `max_delay`,
/// then (with `jitter`) drawn uniformly from its upper half so that many failing steps do not
/// retry in lockstep.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Default: 3.
    pub max_attempts: NonZeroU32,
    /// Delay before the second attempt. Default: 1 s.
    pub initial_delay: Duration,
    /// Growth factor per attempt, at least 1. Default: 2.
    pub factor: f64,
    /// Upper bound of a delay. Default: 5 min.
    pub max_delay: Duration,
    /// Randomise each delay within its upper half. Default: true.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: NonZeroU32::new(3).expect("3 is not zero"),
            initial_delay: Duration::from_secs(1),
            factor: 2.0,
            max_delay: Duration::from_secs(300),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        Self {
            max_attempts: NonZeroU32::MIN,
            ..Self::default()
        }
    }

    /// Exponential back-off with the default shape and `max_attempts` attempts in all.
    pub fn attempts(max_attempts: u32) -> Self {
        Self {
            max_attempts: NonZeroU32::new(max_attempts).unwrap_or(NonZeroU32::MIN),
            ..Self::default()
        }
    }

    /// Sets the first delay.
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// Sets the cap on a delay.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Turns jitter on or off.
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The wait before the attempt after `failed_attempt` (1-based).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tributary::workflow::RetryPolicy;
    ///
    /// let p = RetryPolicy::attempts(5).initial_delay(Duration::from_secs(1)).jitter(false);
    /// assert_eq!(p.delay_after(1), Duration::from_secs(1));
    /// assert_eq!(p.delay_after(3), Duration::from_secs(4));
    /// ```
    pub fn delay_after(&self, failed_attempt: u32) -> Duration {
        let exponent = failed_attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_delay.as_secs_f64() * self.factor.max(1.0).powi(exponent);
        let capped = base.min(self.max_delay.as_secs_f64());
        let secs = if self.jitter {
            rand::random_range(capped / 2.0..=capped)
        } else {
            capped
        };
        Duration::from_secs_f64(secs)
    }
}

/// Options of one step. Defaults follow the Celery setup this engine replaces
/// (`task_time_limit` of 300 s).
#[derive(Debug, Clone, PartialEq)]
pub struct StepOptions {
    /// Retry policy for retryable errors. Default: [`RetryPolicy::default`].
    pub retry: RetryPolicy,
    /// Time limit of one attempt; an attempt over it fails as retryable. Default: 300 s.
    pub timeout: Duration,
}

impl Default for StepOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(300),
        }
    }
}

impl StepOptions {
    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the time limit of one attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}
