//! One HTTP layer for calling external APIs from steps: timeouts, a User-Agent, retries with
//! back-off (`backon`) for what is worth retrying, and errors that say what went wrong.
//!
//! Classification: network errors, timeouts, 429 (honouring `Retry-After`) and 5xx are
//! retryable; any other 4xx (a bad key, a bad query) is fatal and carries the API's own message;
//! a body that is not JSON where JSON was expected (an HTML error page, say) is an error that
//! quotes a short snippet. Errors implement [`Classify`], so `?` in a step makes them
//! retryable or fatal [`StepError`](crate::workflow::StepError)s.
//!
//! Secrets: query parameters whose name looks like a credential (`api_key`, `token`,
//! `subscription-key`, …) are masked in every error message and span. Each call is a span
//! (`http.client.request`) with the method, the masked URL, the status and the retry count.
//!
//! Rate limits: a client made with [`HttpClient::limited`] takes a slot of its API's
//! [`Quota`] from the shared [`RateLimiter`] before every attempt, retries included. A wait too
//! long to sleep through is [`Error::RateLimited`]: retryable, with the time to wait, so the
//! step is retried later from due-time state instead of holding a worker slot.
//!
//! It knows nothing of Redis or PostgreSQL (the limiter reaches Redis through the transport).

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::de::DeserializeOwned;

use crate::ratelimit::{Quota, RateLimiter};
use crate::workflow::Classify;

/// How the client behaves. Every field documents its default.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Time limit of one request, body included. Default: 60 s.
    pub timeout: Duration,
    /// Time limit of establishing a connection. Default: 10 s.
    pub connect_timeout: Duration,
    /// The User-Agent header. Default: `tributary/<version>`.
    pub user_agent: String,
    /// Attempts per call, the first included. Default: 4.
    pub max_attempts: usize,
    /// First back-off delay. Default: 500 ms.
    pub min_delay: Duration,
    /// Longest back-off delay, and longest `Retry-After` honoured. Default: 60 s.
    pub max_delay: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            user_agent: format!("tributary/{}", env!("CARGO_PKG_VERSION")),
            max_attempts: 4,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request could not be sent or the response not read (DNS, refused, reset, timeout).
    #[error("GET {url}: {message}")]
    Network {
        /// The URL, credentials masked.
        url: String,
        /// What failed.
        message: String,
    },
    /// The API answered with an error status.
    #[error("GET {url}: HTTP {status}: {message}")]
    Status {
        /// The URL, credentials masked.
        url: String,
        /// The status code.
        status: u16,
        /// The API's own message (a snippet of its body).
        message: String,
        /// The `Retry-After` the API asked for, if any.
        retry_after: Option<Duration>,
    },
    /// The body is not the JSON that was expected.
    #[error("GET {url}: expected JSON, got {content_type}: {snippet:?}")]
    NotJson {
        /// The URL, credentials masked.
        url: String,
        /// The response's content type.
        content_type: String,
        /// The start of the body.
        snippet: String,
    },
    /// The JSON does not have the expected shape.
    #[error("GET {url}: unexpected JSON: {problem}")]
    Decode {
        /// The URL, credentials masked.
        url: String,
        /// The decoder's message (names the field).
        problem: String,
    },
    /// The client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
    /// The API's rate limit (shared by every engine process) has no slot soon enough.
    #[error("GET {url}: {source}")]
    RateLimited {
        /// The URL, credentials masked.
        url: String,
        /// The limiter's refusal, with when to try again.
        source: crate::ratelimit::Error,
    },
}

impl Error {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Network { .. } => true,
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            Error::RateLimited { source, .. } => source.is_retryable(),
            Error::NotJson { .. } | Error::Decode { .. } | Error::Build(_) => false,
        }
    }

    /// Whether to try again within this call: not after a rate-limit refusal, whose wait is
    /// too long to spend inside a step.
    fn retry_now(&self) -> bool {
        self.is_retryable() && !matches!(self, Error::RateLimited { .. })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            Error::RateLimited { source, .. } => source.retry_after(),
            _ => None,
        }
    }
}

impl Classify for Error {
    fn is_retryable(&self) -> bool {
        Error::is_retryable(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        Error::retry_after(self)
    }
}

/// An HTTP client for external APIs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    config: HttpConfig,
    limit: Option<Limit>,
}

/// The rate limit a client observes.
#[derive(Debug, Clone)]
struct Limit {
    limiter: RateLimiter,
    api: String,
    quota: Quota,
}

/// Query parameter names whose values are masked.
const SECRET_PARAMS: &[&str] = &["key", "token", "secret", "password", "signature", "auth"];

/// The URL with credential-looking query values replaced by `***`.
pub fn mask_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let masked: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _))
                if SECRET_PARAMS
                    .iter()
                    .any(|s| k.to_ascii_lowercase().contains(s)) =>
            {
                format!("{k}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", masked.join("&"))
}

/// A reqwest error's message with its causes, never its URL (which may hold a credential).
fn network_message(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(200).collect()
}

fn parse_retry_after(value: Option<&reqwest::header::HeaderValue>) -> Option<Duration> {
    let value = value?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

impl HttpClient {
    /// Builds a client.
    ///
    /// # Errors
    /// [`Error::Build`] when the TLS set-up fails.
    pub fn new(config: HttpConfig) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| Error::Build(e.to_string()))?;
        Ok(Self {
            client,
            config,
            limit: None,
        })
    }

    /// The same client (sharing its connections), taking a slot of `api`'s `quota` from
    /// `limiter` before every attempt.
    pub fn limited(&self, limiter: RateLimiter, api: &str, quota: Quota) -> Self {
        Self {
            limit: Some(Limit {
                limiter,
                api: api.to_owned(),
                quota,
            }),
            ..self.clone()
        }
    }

    /// GETs `url` with `query` and returns the body, retrying what is worth retrying.
    ///
    /// # Errors
    /// The last attempt's [`Error`].
    pub async fn get_bytes(
        &self,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<(Vec<u8>, String), Error> {
        let full = reqwest::Url::parse_with_params(url, query).map_err(|e| Error::Network {
            url: mask_url(url),
            message: e.to_string(),
        })?;
        let masked = mask_url(full.as_str());
        let span = tracing::info_span!(
            "http.client.request",
            http.request.method = "GET",
            url.full = %masked,
            http.response.status_code = tracing::field::Empty,
            http.request.resend_count = tracing::field::Empty,
            tributary.rate_limit.wait_ms = tracing::field::Empty,
        );
        // Milliseconds spent waiting for rate-limit slots, over all attempts.
        let waited = std::sync::atomic::AtomicU64::new(0);
        let mut attempts = 0u32;
        let once = || {
            attempts += 1;
            let full = full.clone();
            let masked = masked.clone();
            let waited = &waited;
            async move {
                if let Some(limit) = &self.limit {
                    let wait = limit
                        .limiter
                        .acquire(&limit.api, &limit.quota)
                        .await
                        .map_err(|source| Error::RateLimited {
                            url: masked.clone(),
                            source,
                        })?;
                    waited.fetch_add(
                        wait.as_millis() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                }
                let response = self
                    .client
                    .get(full)
                    .send()
                    .await
                    .map_err(|e| Error::Network {
                        url: masked.clone(),
                        message: network_message(e),
                    })?;
                let status = response.status();
                let retry_after =
                    parse_retry_after(response.headers().get(reqwest::header::RETRY_AFTER));
                let content_type = response
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let body = response.bytes().await.map_err(|e| Error::Network {
                    url: masked.clone(),
                    message: network_message(e),
                })?;
                if !status.is_success() {
                    return Err(Error::Status {
                        url: masked,
                        status: status.as_u16(),
                        message: snippet(&body),
                        retry_after,
                    });
                }
                Ok((body.to_vec(), content_type))
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.min_delay)
            .with_max_delay(self.config.max_delay)
            .with_jitter()
            .with_max_times(self.config.max_attempts.saturating_sub(1));
        let max_delay = self.config.max_delay;
        let result = once
            .retry(backoff)
            .when(Error::retry_now)
            .adjust(move |e: &Error, d| e.retry_after().map(|r| r.min(max_delay)).or(d))
            .notify(|e: &Error, d| tracing::warn!(error = %e, delay = ?d, "retrying an HTTP call"))
            .await;
        span.record("http.request.resend_count", attempts.saturating_sub(1));
        if self.limit.is_some() {
            span.record(
                "tributary.rate_limit.wait_ms",
                waited.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
        match &result {
            Ok(_) => {
                span.record("http.response.status_code", 200u16);
            }
            Err(Error::Status { status, .. }) => {
                span.record("http.response.status_code", *status);
            }
            Err(_) => {}
        }
        result
    }

    /// GETs `url` and decodes its JSON body.
    ///
    /// # Errors
    /// As [`HttpClient::get_bytes`], plus [`Error::NotJson`] when the body is not JSON (with a
    /// snippet of what it was) and [`Error::Decode`] when it has the wrong shape.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        query: &[(&str, &str)],
    ) -> Result<T, Error> {
        let (body, content_type) = self.get_bytes(url, query).await?;
        let full = reqwest::Url::parse_with_params(url, query)
            .map(|u| mask_url(u.as_str()))
            .unwrap_or_else(|_| mask_url(url));
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| Error::NotJson {
                url: full.clone(),
                content_type: content_type.clone(),
                snippet: snippet(&body),
            })?;
        serde_json::from_value(value).map_err(|e| Error::Decode {
            url: full,
            problem: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn client() -> HttpClient {
        HttpClient::new(HttpConfig {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(3),
            ..HttpConfig::default()
        })
        .unwrap()
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Obs {
        value: String,
    }

    #[tokio::test]
    async fn a_429_with_retry_after_is_waited_out_then_succeeds() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/obs"))
            .respond_with(
                ResponseTemplate::new(429)
                    .insert_header("Retry-After", "1")
                    .set_body_string("Too Many Requests"),
            )
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/obs"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"value": "1.5"})),
            )
            .mount(&server)
            .await;
        let started = std::time::Instant::now();
        let obs: Obs = client()
            .get_json(&format!("{}/obs", server.uri()), &[])
            .await
            .unwrap();
        assert_eq!(
            obs,
            Obs {
                value: "1.5".into()
            }
        );
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "Retry-After was honoured"
        );
    }

    #[tokio::test]
    async fn a_5xx_is_retried_and_a_4xx_is_fatal_with_the_apis_message() {
        let server = MockServer::start().await;
        Mock::given(path("/flaky"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(2)
            .mount(&server)
            .await;
        Mock::given(path("/flaky"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"value": "x"})),
            )
            .mount(&server)
            .await;
        let obs: Obs = client()
            .get_json(&format!("{}/flaky", server.uri()), &[])
            .await
            .unwrap();
        assert_eq!(obs.value, "x");

        Mock::given(path("/bad"))
            .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({"error_code": 400, "error_message": "Bad Request.  The value for variable api_key is not registered."})))
            .expect(1)
            .mount(&server)
            .await;
        let e = client()
            .get_json::<Obs>(
                &format!("{}/bad", server.uri()),
                &[("api_key", "canary-secret-123")],
            )
            .await
            .unwrap_err();
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(
            text.contains("HTTP 400") && text.contains("is not registered"),
            "{text}"
        );
        assert!(
            text.contains("api_key=***") && !text.contains("canary-secret-123"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn html_where_json_was_expected_is_quoted_and_garbage_json_names_the_field() {
        let server = MockServer::start().await;
        Mock::given(path("/html"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(
                "<html><body><h1>Service maintenance</h1></body></html>",
                "text/html",
            ))
            .mount(&server)
            .await;
        let e = client()
            .get_json::<Obs>(&format!("{}/html", server.uri()), &[])
            .await
            .unwrap_err();
        assert!(matches!(e, Error::NotJson { .. }), "{e}");
        assert!(
            e.to_string().contains("text/html") && e.to_string().contains("Service maintenance"),
            "{e}"
        );

        Mock::given(path("/shape"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"valu": 1})))
            .mount(&server)
            .await;
        let e = client()
            .get_json::<Obs>(&format!("{}/shape", server.uri()), &[])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("missing field `value`"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_api_is_a_retryable_network_error() {
        let port = crate::services::free_port().unwrap();
        let e = client()
            .get_bytes(
                &format!("http://127.0.0.1:{port}/x"),
                &[("token", "t0ps3cret")],
            )
            .await
            .unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(!e.to_string().contains("t0ps3cret"), "{e}");
    }

    #[test]
    fn credentials_in_query_strings_are_masked() {
        assert_eq!(
            mask_url("https://api/x?series_id=DCOILWTICO&api_key=abc"),
            "https://api/x?series_id=DCOILWTICO&api_key=***"
        );
        assert_eq!(
            mask_url("https://api/x?subscription-key=abc&period=2024"),
            "https://api/x?subscription-key=***&period=2024"
        );
        assert_eq!(mask_url("https://api/x"), "https://api/x");
    }

    #[tokio::test]
    async fn a_spent_rate_limit_is_a_retryable_error_with_its_wait_and_sends_nothing() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/obs"))
            .respond_with(ResponseTemplate::new(200).set_body_string("{\"value\":\"1\"}"))
            .expect(1)
            .mount(&server)
            .await;
        let limiter = RateLimiter::local_only(crate::ratelimit::RateLimitConfig {
            max_wait: Duration::from_millis(100),
            shared: false,
        });
        let quota: Quota = "1/10s".parse().unwrap();
        let limited = client().limited(limiter, "obs-api", quota);
        let url = format!("{}/obs", server.uri());
        let first: Obs = limited.get_json(&url, &[("api_key", "k")]).await.unwrap();
        assert_eq!(first.value, "1");
        let err = limited
            .get_json::<Obs>(&url, &[("api_key", "k")])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RateLimited { .. }), "{err}");
        assert!(Classify::is_retryable(&err));
        let wait = Classify::retry_after(&err).expect("a wait");
        assert!(
            wait > Duration::from_secs(5) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        let step: crate::workflow::StepError = err.into();
        assert_eq!(step.retry_after(), Some(wait));
        assert!(!step.message().contains("api_key=k"), "{}", step.message());
    }
}
