//! Configuration: one typed tree, layered defaults → TOML file → environment → CLI flags, and
//! validated once at start-up.
//!
//! Environment variables: `REDIS_URL`, `DATABASE_URL` (the standard names), and
//! `TRIBUTARY_<SECTION>_<KEY>` for the rest, e.g. `TRIBUTARY_WORKER_CONCURRENCY=32`,
//! `TRIBUTARY_WORKER_LEASE=30s`, `TRIBUTARY_RETENTION_KEEP=7d`. Durations take humantime
//! strings (`250ms`, `30s`, `7d`). The file is named by `--config` or `TRIBUTARY_CONFIG`;
//! `docs/configuration.md` lists every key. For the old stack, `SECRET_MANAGER_ENABLED`
//! (below `TRIBUTARY_SECRETS_PROVIDER`) and `GCP_PROJECT_ID` / `GOOGLE_CLOUD_PROJECT` (only
//! when neither the file nor `TRIBUTARY_SECRETS_PROJECT` names a project) are read too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this tree.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key).
        message: String,
    },
    /// An environment variable has an invalid value.
    #[error("invalid value for {var}: {problem}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong.
        problem: String,
    },
    /// A value is out of range or missing.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration. Every field documents its default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// Redis, the delivery path: `redis://` or `rediss://` (TLS), with optional
    /// `user:password@`. Default: none (`tributary dev` starts a private server).
    pub redis_url: Option<String>,
    /// PostgreSQL, the source of truth. Default: none (`tributary dev` starts a private server).
    pub database_url: Option<String>,
    /// Prefix of every Redis key; deployments sharing one Redis need different prefixes.
    /// Default: `tributary`.
    pub key_prefix: String,
    /// How long start-up waits for Redis and PostgreSQL before giving up. Default: 10 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Worker settings.
    pub worker: WorkerConfig,
    /// Retention of finished runs.
    pub retention: RetentionConfig,
    /// Overrides of the schedules declared in the workflows, by schedule name
    /// (`[schedules.<name>]` in the file).
    pub schedules: std::collections::BTreeMap<String, ScheduleOverride>,
    /// Settings of the deployment's data sources, by source name (`[sources.<name>]` in the
    /// file, `TRIBUTARY_SOURCES_<NAME>_<KEY>` in the environment). The engine does not read
    /// them; each source deserialises its own table with [`Config::source`].
    pub sources: std::collections::BTreeMap<String, toml::Table>,
    /// Where secrets come from (`[secrets]`): GCP Secret Manager or the env/file fallback.
    pub secrets: crate::secrets::SecretsConfig,
    /// The `/metrics` (Prometheus) and `/healthz` endpoint of worker processes.
    pub metrics: MetricsConfig,
}

/// Where worker processes (`tributary worker`, `tributary dev`) serve `/metrics` and `/healthz`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to listen on, e.g. `127.0.0.1:9464` or `0.0.0.0:9464`; `none` (or empty)
    /// serves nothing. Default: none, because several workers often share a host and a fixed
    /// default port would stop the second one from starting.
    #[serde(deserialize_with = "listen_address")]
    pub listen: Option<std::net::SocketAddr>,
}

fn listen_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    listen(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn listen(v: &str) -> Result<Option<std::net::SocketAddr>, String> {
    match v.trim() {
        "" | "none" => Ok(None),
        a => a
            .parse()
            .map(Some)
            .map_err(|e| format!("{e}: expected an address such as 127.0.0.1:9464, or none")),
    }
}

/// Changes to one declared schedule. Unset fields keep the declared value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ScheduleOverride {
    /// Another cron expression.
    pub cron: Option<String>,
    /// Another IANA time zone.
    pub timezone: Option<String>,
    /// Another catch-up limit.
    pub catch_up: Option<u32>,
    /// `false` turns the schedule off in this deployment.
    pub enabled: Option<bool>,
}

/// How a worker process consumes steps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Steps run at once by one process; it reads only as many entries as it has free
    /// slots. A step's slot is free again when its function returns; its entry is held until
    /// its checkpoint commits, at most `HELD_PER_SLOT` (8) held entries per slot. Default: 32.
    pub concurrency: usize,
    /// Lease of a step entry: a worker renews it every third of this while the step runs;
    /// an entry idle longer is reclaimed by another worker. Default: 30 s.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often the due-time poller looks for retries and timers that are due. Default: 200 ms.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a blocking read waits for new entries. Default: 1 s.
    #[serde(with = "humantime_serde")]
    pub read_block: Duration,
    /// How often the worker checks that Redis still holds its streams (a flush or a restart
    /// without persistence is repaired from PostgreSQL). Default: 1 s.
    #[serde(with = "humantime_serde")]
    pub epoch_check: Duration,
    /// On SIGTERM, how long in-flight steps may run on before they are cancelled and handed
    /// back. Default: 30 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// PostgreSQL connections of one process, at least 2: three quarters for the hot path
    /// (step loads and checkpoints), the rest (at least one) for everything else. Default: 16.
    pub database_connections: u32,
    /// At most this many step checkpoints are committed in one transaction by the process's
    /// group committer. Default: 128.
    pub checkpoint_batch: usize,
    /// How long the first checkpoint of a group commit waits for others to join when the
    /// committer is idle; zero commits at once whatever is queued (while one batch commits,
    /// the next gathers anyway). Default: 0 (see `docs/decisions.md`, "Group commit").
    #[serde(with = "humantime_serde")]
    pub checkpoint_delay: Duration,
    /// Run the cron scheduler in this process. Any number of processes may (each tick still
    /// starts one run); turn it off for worker pools that should only execute. Default: true.
    pub scheduler: bool,
}

/// What is kept, and for how long.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Finished runs (with their checkpoints and events) are deleted this long after they
    /// finish. Default: 7 days: the old stack kept results for 24 h, which lost the evidence of
    /// Friday night's failures by Monday.
    #[serde(with = "humantime_serde")]
    pub keep: Duration,
    /// How often retention and stream trimming run. Default: 60 s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Runs deleted per statement, so a large backlog never holds long locks. Default: 1000.
    pub batch: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            redis_url: None,
            database_url: None,
            key_prefix: "tributary".into(),
            connect_timeout: Duration::from_secs(10),
            worker: WorkerConfig::default(),
            retention: RetentionConfig::default(),
            schedules: Default::default(),
            sources: Default::default(),
            secrets: Default::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 32,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            read_block: Duration::from_secs(1),
            epoch_check: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            database_connections: 16,
            checkpoint_batch: 128,
            checkpoint_delay: Duration::ZERO,
            scheduler: true,
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            keep: Duration::from_secs(7 * 24 * 3600),
            interval: Duration::from_secs(60),
            batch: 1000,
        }
    }
}

fn duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v).map_err(|e| format!("{e} (expected e.g. 250ms, 30s, 7d)"))
}

fn number<T: std::str::FromStr>(v: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e: T::Err| e.to_string())
}

/// The environment variables read, in order.
const ENV_VARS: &[&str] = &[
    "REDIS_URL",
    "DATABASE_URL",
    "TRIBUTARY_KEY_PREFIX",
    "TRIBUTARY_CONNECT_TIMEOUT",
    "TRIBUTARY_WORKER_CONCURRENCY",
    "TRIBUTARY_WORKER_LEASE",
    "TRIBUTARY_WORKER_POLL_INTERVAL",
    "TRIBUTARY_WORKER_READ_BLOCK",
    "TRIBUTARY_WORKER_EPOCH_CHECK",
    "TRIBUTARY_WORKER_SHUTDOWN_GRACE",
    "TRIBUTARY_WORKER_DATABASE_CONNECTIONS",
    "TRIBUTARY_WORKER_CHECKPOINT_BATCH",
    "TRIBUTARY_WORKER_CHECKPOINT_DELAY",
    "TRIBUTARY_WORKER_SCHEDULER",
    "TRIBUTARY_RETENTION_KEEP",
    "TRIBUTARY_RETENTION_INTERVAL",
    "TRIBUTARY_RETENTION_BATCH",
    // The old stack's names come first, so that the TRIBUTARY_SECRETS_* ones win; the project
    // variables only fill a project that neither the file nor TRIBUTARY_SECRETS_PROJECT set.
    "SECRET_MANAGER_ENABLED",
    "TRIBUTARY_SECRETS_PROVIDER",
    "TRIBUTARY_SECRETS_PROJECT",
    "GCP_PROJECT_ID",
    "GOOGLE_CLOUD_PROJECT",
    "TRIBUTARY_SECRETS_CACHE_TTL",
    "TRIBUTARY_SECRETS_DIR",
    "TRIBUTARY_SECRETS_ENDPOINT",
    "TRIBUTARY_METRICS_LISTEN",
];

/// Sets the field that environment variable `var` names.
fn set_from_env(c: &mut Config, var: &str, v: &str) -> Result<(), String> {
    match var {
        "REDIS_URL" => c.redis_url = Some(v.to_owned()),
        "DATABASE_URL" => c.database_url = Some(v.to_owned()),
        "TRIBUTARY_KEY_PREFIX" => c.key_prefix = v.to_owned(),
        "TRIBUTARY_CONNECT_TIMEOUT" => c.connect_timeout = duration(v)?,
        "TRIBUTARY_WORKER_CONCURRENCY" => c.worker.concurrency = number(v)?,
        "TRIBUTARY_WORKER_LEASE" => c.worker.lease = duration(v)?,
        "TRIBUTARY_WORKER_POLL_INTERVAL" => c.worker.poll_interval = duration(v)?,
        "TRIBUTARY_WORKER_READ_BLOCK" => c.worker.read_block = duration(v)?,
        "TRIBUTARY_WORKER_EPOCH_CHECK" => c.worker.epoch_check = duration(v)?,
        "TRIBUTARY_WORKER_SHUTDOWN_GRACE" => c.worker.shutdown_grace = duration(v)?,
        "TRIBUTARY_WORKER_DATABASE_CONNECTIONS" => c.worker.database_connections = number(v)?,
        "TRIBUTARY_WORKER_CHECKPOINT_BATCH" => c.worker.checkpoint_batch = number(v)?,
        "TRIBUTARY_WORKER_CHECKPOINT_DELAY" => c.worker.checkpoint_delay = duration(v)?,
        "TRIBUTARY_WORKER_SCHEDULER" => c.worker.scheduler = number(v)?,
        "TRIBUTARY_RETENTION_KEEP" => c.retention.keep = duration(v)?,
        "TRIBUTARY_RETENTION_INTERVAL" => c.retention.interval = duration(v)?,
        "TRIBUTARY_RETENTION_BATCH" => c.retention.batch = number(v)?,
        "SECRET_MANAGER_ENABLED" => {
            c.secrets.provider = match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => crate::secrets::Provider::Gcp,
                "false" | "0" | "no" => crate::secrets::Provider::Env,
                _ => return Err("expected true or false".into()),
            }
        }
        "TRIBUTARY_SECRETS_PROVIDER" => c.secrets.provider = number(v)?,
        "TRIBUTARY_SECRETS_PROJECT" => c.secrets.project = Some(v.to_owned()),
        "GCP_PROJECT_ID" | "GOOGLE_CLOUD_PROJECT" => {
            c.secrets.project.get_or_insert_with(|| v.to_owned());
        }
        "TRIBUTARY_SECRETS_CACHE_TTL" => c.secrets.cache_ttl = duration(v)?,
        "TRIBUTARY_SECRETS_DIR" => c.secrets.dir = Some(v.into()),
        "TRIBUTARY_SECRETS_ENDPOINT" => c.secrets.endpoint = Some(v.to_owned()),
        "TRIBUTARY_METRICS_LISTEN" => c.metrics.listen = listen(v)?,
        other => return Err(format!("{other} is not a configuration variable")),
    }
    Ok(())
}

impl Config {
    /// Loads defaults, then `file` (if any), then the environment, and validates the result.
    ///
    /// # Errors
    /// The first problem found, naming the file, variable or key.
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        let mut config = Self::load_from(file, |name| std::env::var(name).ok())?;
        config.apply_source_vars(std::env::vars())?;
        Ok(config)
    }

    /// Applies `TRIBUTARY_SOURCES_<NAME>_<KEY>=<value>` variables: `<NAME>` is the source
    /// (lower-cased), `<KEY>` the key (lower-cased, `_` → `-`). A value that parses as a TOML
    /// value (`120`, `true`, `["A", "B"]`) is taken as such, anything else as a string.
    ///
    /// ```
    /// use tributary::config::Config;
    ///
    /// let mut config = Config::default();
    /// config.apply_source_vars([
    ///     ("TRIBUTARY_SOURCES_FRED_SERIES".to_owned(), r#"["DCOILWTICO", "DEXVZUS"]"#.to_owned()),
    ///     ("TRIBUTARY_SOURCES_FRED_BASE_URL".to_owned(), "http://127.0.0.1:9000/fred".to_owned()),
    ///     ("PATH".to_owned(), "/bin".to_owned()),
    /// ]).unwrap();
    /// let fred = &config.sources["fred"];
    /// assert_eq!(fred["base-url"].as_str(), Some("http://127.0.0.1:9000/fred"));
    /// assert_eq!(fred["series"].as_array().unwrap().len(), 2);
    /// ```
    ///
    /// # Errors
    /// [`Error::Env`] for a variable without a key (`TRIBUTARY_SOURCES_FRED`).
    pub fn apply_source_vars(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), Error> {
        for (var, value) in vars {
            let Some(rest) = var.strip_prefix("TRIBUTARY_SOURCES_") else {
                continue;
            };
            let Some((source, key)) = rest
                .split_once('_')
                .filter(|(s, k)| !s.is_empty() && !k.is_empty())
            else {
                return Err(Error::Env {
                    var,
                    problem: "expected TRIBUTARY_SOURCES_<SOURCE>_<KEY>".into(),
                });
            };
            let key = key.to_ascii_lowercase().replace('_', "-");
            let parsed = format!("v = {value}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or(toml::Value::String(value));
            self.sources
                .entry(source.to_ascii_lowercase())
                .or_default()
                .insert(key, parsed);
        }
        Ok(())
    }

    /// The settings of source `name` (`[sources.<name>]`), as `T`. A source with no settings
    /// gets `T`'s defaults, so give `T` `#[serde(default)]`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the source and the key when the table does not fit `T`.
    pub fn source<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, Error> {
        let table = self.sources.get(name).cloned().unwrap_or_default();
        T::deserialize(toml::Value::Table(table))
            .map_err(|e| Error::Invalid(format!("sources.{name}: {}", e.to_string().trim())))
    }

    /// [`Config::load`] with an explicit environment, for tests.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn load_from(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| Error::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        for var in ENV_VARS {
            if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                set_from_env(&mut config, var, &value).map_err(|problem| Error::Env {
                    var: (*var).to_owned(),
                    problem,
                })?;
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and URL schemes.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |m: &str| Err(Error::Invalid(m.to_owned()));
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return invalid("redis-url must start with redis:// or rediss://");
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return invalid("database-url must start with postgres:// or postgresql://");
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(char::is_whitespace) {
            return invalid("key-prefix must be non-empty and without spaces");
        }
        if self.worker.concurrency == 0 || self.worker.concurrency > 10_000 {
            return invalid("worker.concurrency must be between 1 and 10000");
        }
        if self.worker.lease < Duration::from_millis(300) {
            return invalid("worker.lease must be at least 300ms");
        }
        if self.worker.read_block.is_zero() || self.worker.read_block >= self.worker.lease {
            return invalid("worker.read-block must be positive and shorter than worker.lease");
        }
        if self.worker.poll_interval.is_zero()
            || self.worker.epoch_check.is_zero()
            || self.retention.interval.is_zero()
        {
            return invalid("intervals must be positive");
        }
        if self.worker.checkpoint_batch == 0 || self.worker.checkpoint_batch > 10_000 {
            return invalid("worker.checkpoint-batch must be between 1 and 10000");
        }
        if self.worker.checkpoint_delay > Duration::from_secs(1) {
            return invalid("worker.checkpoint-delay must be at most 1s");
        }
        if self.worker.database_connections < 2 {
            return invalid("worker.database-connections must be at least 2");
        }
        if self.retention.batch < 1 {
            return invalid("retention.batch must be at least 1");
        }
        if let Err(e) = self.secrets.validate() {
            return invalid(&e.to_string());
        }
        Ok(())
    }

    /// The Redis URL.
    ///
    /// # Errors
    /// [`Error::Invalid`] when unset.
    pub fn redis_url(&self) -> Result<&str, Error> {
        self.redis_url
            .as_deref()
            .ok_or_else(|| Error::Invalid("REDIS_URL is not set (or run `tributary dev`)".into()))
    }

    /// The PostgreSQL URL.
    ///
    /// # Errors
    /// [`Error::Invalid`] when unset.
    pub fn database_url(&self) -> Result<&str, Error> {
        self.database_url.as_deref().ok_or_else(|| {
            Error::Invalid("DATABASE_URL is not set (or run `tributary dev`)".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_environment_overrides_the_file_and_defaults() {
        let dir = std::env::temp_dir().join(format!("tributary-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(
            &file,
            "key-prefix = \"filed\"\n[worker]\nconcurrency = 4\nlease = \"10s\"\n",
        )
        .unwrap();
        let c = Config::load_from(
            Some(&file),
            env(&[
                ("TRIBUTARY_WORKER_CONCURRENCY", "8"),
                ("REDIS_URL", "redis://h:1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.key_prefix, "filed");
        assert_eq!(c.worker.concurrency, 8);
        assert_eq!(c.worker.lease, Duration::from_secs(10));
        assert_eq!(c.redis_url.as_deref(), Some("redis://h:1"));
        assert_eq!(c.retention.keep, Duration::from_secs(7 * 86400));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_values_name_what_is_wrong() {
        let e = Config::load_from(None, env(&[("TRIBUTARY_WORKER_LEASE", "soon")])).unwrap_err();
        assert!(e.to_string().contains("TRIBUTARY_WORKER_LEASE"), "{e}");
        let e = Config::load_from(None, env(&[("REDIS_URL", "http://x")])).unwrap_err();
        assert!(e.to_string().contains("redis://"), "{e}");
        let e = Config::load_from(None, env(&[("TRIBUTARY_WORKER_CONCURRENCY", "0")])).unwrap_err();
        assert!(e.to_string().contains("concurrency"), "{e}");
        let dir = std::env::temp_dir().join(format!("tributary-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t.toml");
        std::fs::write(&file, "[worker]\nconcurency = 4\n").unwrap();
        let e = Config::load_from(Some(&file), env(&[])).unwrap_err();
        assert!(e.to_string().contains("concurency"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_metrics_endpoint_is_off_by_default_and_set_by_file_or_environment() {
        assert_eq!(Config::default().metrics.listen, None);
        let c = Config::load_from(None, env(&[("TRIBUTARY_METRICS_LISTEN", "127.0.0.1:9464")]));
        assert_eq!(
            c.unwrap().metrics.listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        let c = Config::load_from(None, env(&[("TRIBUTARY_METRICS_LISTEN", "none")]));
        assert_eq!(c.unwrap().metrics.listen, None);
        let e = Config::load_from(None, env(&[("TRIBUTARY_METRICS_LISTEN", "9464")])).unwrap_err();
        assert!(e.to_string().contains("TRIBUTARY_METRICS_LISTEN"), "{e}");
        let parsed: Config = toml::from_str("[metrics]\nlisten = \"0.0.0.0:9100\"\n").unwrap();
        assert_eq!(parsed.metrics.listen, Some("0.0.0.0:9100".parse().unwrap()));
        let parsed: Config = toml::from_str("[metrics]\nlisten = \"none\"\n").unwrap();
        assert_eq!(parsed.metrics.listen, None);
    }
}
