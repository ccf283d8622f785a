//! Secrets: API keys and passwords that steps and services need, read from GCP Secret Manager
//! or, for development, from environment variables and a directory of files.
//!
//! This module owns the lookup of a secret by id ([`Secrets::get`]), its creation or update
//! ([`Secrets::set`]), the in-memory cache of Secret Manager values, and the
//! `tributary secrets` command ([`Command`], [`run_command`]). It knows nothing of Redis or
//! PostgreSQL: a secret never travels through a stream entry or a checkpoint, steps fetch it
//! when they run.
//!
//! **Where a secret is looked up** depends on [`SecretsConfig::provider`] alone, so that a
//! deployment never reads a stale development value by accident:
//!
//! - [`Provider::Gcp`]: only Secret Manager, `projects/<project>/secrets/<id>/versions/latest`.
//!   Values are cached in memory for [`SecretsConfig::cache_ttl`]; a missing secret is
//!   [`Error::NotFound`], there is no silent fall-back to the environment.
//! - [`Provider::Env`] (the default, the old stack's `SECRET_MANAGER_ENABLED=False`): the
//!   environment variable `<env-prefix><ID>` first, then the file `<dir>/<id>`. The variable
//!   wins, as the environment overrides files everywhere else in the configuration. An empty
//!   variable counts as unset; one trailing newline of a file is dropped. Not cached.
//!
//! **Architecture Invariant:** a secret's value is never formatted. [`Secret`]'s `Debug` and
//! `Display` print `Secret([redacted])`, it has no `Serialize`, and no [`Error`] carries a value
//! (Secret Manager's own messages are scrubbed of the value being written, and undecodable
//! responses are reported without their body). Only [`Secret::expose`] and
//! `tributary secrets get --show` reveal it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tributary::secrets::Error> {
//! use tributary::secrets::{Provider, Secrets, SecretsConfig};
//!
//! let secrets = Secrets::from_config(&SecretsConfig {
//!     provider: Provider::Gcp,
//!     project: Some("my-project".into()),
//!     ..SecretsConfig::default()
//! })
//! .await?;
//! let key = secrets.get("comtrade-key").await?;
//! let header = format!("Bearer {}", key.expose());
//! # let _ = header;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use google_cloud_gax::error::rpc::Code;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use google_cloud_secretmanager_v1::model;
use serde::{Deserialize, Serialize};

/// What went wrong getting or setting a secret. No variant carries a secret's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The secret does not exist where the provider looks.
    #[error("secret \"{id}\" not found: looked in {looked_in}")]
    NotFound {
        /// The secret's id.
        id: String,
        /// Every place that was looked in, e.g.
        /// `env TRIBUTARY_SECRET_COMTRADE_KEY, file /etc/tributary/secrets/comtrade-key`.
        looked_in: String,
    },
    /// The id is not 1 to 255 characters of `[A-Za-z0-9_-]` (Secret Manager's rule, also
    /// applied to the env/file provider so that ids work with either).
    #[error("invalid secret id {id:?}: use 1 to 255 characters of A-Z, a-z, 0-9, - and _")]
    InvalidId {
        /// The rejected id.
        id: String,
    },
    /// A value that cannot be stored or used (empty, not UTF-8, corrupted in transit).
    #[error("invalid value for secret \"{id}\": {problem}")]
    InvalidValue {
        /// The secret's id.
        id: String,
        /// What is wrong with it (never the value itself).
        problem: String,
    },
    /// The provider is misconfigured (names the configuration key).
    #[error("{0}")]
    Config(String),
    /// Secret Manager refused or failed the call.
    #[error("secret \"{id}\": {operation} in {location} failed: {status}: {message}")]
    Backend {
        /// The secret's id.
        id: String,
        /// The call: `access`, `get`, `create`, `add version`.
        operation: &'static str,
        /// Where, e.g. `gcp project my-project`.
        location: String,
        /// The status, e.g. `UNAVAILABLE (HTTP 503)`, `PERMISSION_DENIED (HTTP 403)`, `TIMEOUT`.
        status: String,
        /// The service's message, scrubbed of the value.
        message: String,
        /// Whether another attempt may succeed (5xx, 429, unavailable, timeouts, connection
        /// failures).
        retryable: bool,
    },
    /// A file or stdin could not be read or written.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done, e.g. `read /etc/tributary/secrets/comtrade-key`.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Error {
    /// `true` when another attempt may succeed: transient Secret Manager failures and
    /// interrupted I/O. A missing secret, a bad id, a permission problem or a configuration
    /// error is final.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Backend { retryable, .. } => *retryable,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }
}

impl crate::workflow::Classify for Error {
    fn is_retryable(&self) -> bool {
        Error::is_retryable(self)
    }
}

/// Where secrets come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Environment variables, then files in [`SecretsConfig::dir`]: for development.
    #[default]
    Env,
    /// GCP Secret Manager in [`SecretsConfig::project`].
    Gcp,
}

impl std::str::FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "env" => Ok(Provider::Env),
            "gcp" => Ok(Provider::Gcp),
            _ => Err(format!(
                "unknown secrets provider {s:?} (expected env or gcp)"
            )),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Env => "env",
            Provider::Gcp => "gcp",
        })
    }
}

/// The `[secrets]` section of the configuration. Every field documents its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// `env` or `gcp`. Default: `env`.
    pub provider: Provider,
    /// The GCP project holding the secrets; required when `provider = "gcp"`. Default: none.
    pub project: Option<String>,
    /// How long a value read from Secret Manager is reused before it is read again; `0s`
    /// turns the cache off. Only the `gcp` provider caches. Default: 5 min.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// `env` provider: prefix of the variable holding a secret. The variable's name is the
    /// prefix followed by the id upper-cased, with every character other than a letter or a
    /// digit replaced by `_` (`comtrade-key` → `TRIBUTARY_SECRET_COMTRADE_KEY`).
    /// Default: `TRIBUTARY_SECRET_`.
    pub env_prefix: String,
    /// `env` provider: a directory with one file per secret, named by the id; also where
    /// `tributary secrets set` writes. Default: none (environment variables only).
    pub dir: Option<PathBuf>,
    /// `gcp` provider: another Secret Manager endpoint, for tests and emulators. An `http://`
    /// endpoint is called without credentials (anonymous): it can only be a local fake, and
    /// real credentials must not travel in plain text. Default: none
    /// (`https://secretmanager.googleapis.com`, with Application Default Credentials).
    pub endpoint: Option<String>,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            provider: Provider::Env,
            project: None,
            cache_ttl: Duration::from_secs(300),
            env_prefix: "TRIBUTARY_SECRET_".into(),
            dir: None,
            endpoint: None,
        }
    }
}

impl SecretsConfig {
    /// Checks that the provider has what it needs.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key (`secrets.project`, `secrets.env-prefix`,
    /// `secrets.endpoint`).
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |m: &str| Err(Error::Config(m.to_owned()));
        if self.provider == Provider::Gcp {
            match self.project.as_deref() {
                None | Some("") => {
                    return invalid(
                        "secrets.project must be set when secrets.provider is gcp \
                         (or set TRIBUTARY_SECRETS_PROJECT or GCP_PROJECT_ID)",
                    );
                }
                Some(p) if p.contains(['/', ' ']) => {
                    return invalid("secrets.project must be a project id, without / or spaces");
                }
                Some(_) => {}
            }
        }
        if !self
            .env_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return invalid("secrets.env-prefix may only contain A-Z, a-z, 0-9 and _");
        }
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return invalid("secrets.endpoint must start with http:// or https://");
        }
        Ok(())
    }

    /// The environment variable the `env` provider reads for `id`.
    ///
    /// ```
    /// let config = tributary::secrets::SecretsConfig::default();
    /// assert_eq!(config.env_var("comtrade-key"), "TRIBUTARY_SECRET_COMTRADE_KEY");
    /// ```
    pub fn env_var(&self, id: &str) -> String {
        let mut var = self.env_prefix.clone();
        var.extend(id.chars().map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        }));
        var
    }
}

/// A secret's value. It prints as `Secret([redacted])`; [`Secret::expose`] gives the value.
/// Cheap to clone.
///
/// ```
/// let s = tributary::secrets::Secret::new("hunter2");
/// assert_eq!(format!("{s} {s:?}"), "Secret([redacted]) Secret([redacted])");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::from(value.into()))
    }

    /// The value. Pass it straight to where it is needed (a header, a connection string);
    /// never format it into a log line, span, error or step output.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Reads environment variables; replaceable for tests ([`Secrets::from_config_with_env`]).
type EnvFn = dyn Fn(&str) -> Option<String> + Send + Sync;

/// The secrets provider of a process. Cheap to clone (the cache is shared).
#[derive(Clone)]
pub struct Secrets {
    inner: Arc<Inner>,
}

struct Inner {
    config: SecretsConfig,
    backend: Backend,
    env: Box<EnvFn>,
}

enum Backend {
    Env,
    Gcp {
        client: SecretManagerService,
        project: String,
        cache: Mutex<HashMap<String, Cached>>,
    },
}

struct Cached {
    secret: Secret,
    version: String,
    fetched: Instant,
}

/// Where a value was found, for `tributary secrets get`.
enum Source {
    Gcp { project: String, version: String },
    Env(String),
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Gcp { project, version } => {
                write!(f, "gcp project {project} (version {version}, the latest)")
            }
            Source::Env(var) => write!(f, "env {var}"),
            Source::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Secrets");
        d.field("provider", &self.inner.config.provider)
            .field("looks_in", &self.describe());
        if let Backend::Gcp { cache, .. } = &self.inner.backend {
            let cached = cache.lock().map(|c| c.len()).unwrap_or_default();
            d.field("cached", &cached);
        }
        d.finish_non_exhaustive()
    }
}

/// Secret Manager's rule for ids, applied to both providers.
fn check_id(id: &str) -> Result<(), Error> {
    let ok = (1..=255).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId { id: id.to_owned() })
    }
}

impl Secrets {
    /// The provider that `config` describes, reading the process environment.
    ///
    /// For `gcp`, this builds the Secret Manager client: with Application Default
    /// Credentials, or anonymously when [`SecretsConfig::endpoint`] is an `http://` URL.
    ///
    /// # Errors
    /// [`Error::Config`] when the configuration is invalid or no credentials are found.
    pub async fn from_config(config: &SecretsConfig) -> Result<Self, Error> {
        Self::from_config_with_env(config, |name| std::env::var(name).ok()).await
    }

    /// [`Secrets::from_config`] with an explicit environment, for tests.
    ///
    /// # Errors
    /// As [`Secrets::from_config`].
    pub async fn from_config_with_env(
        config: &SecretsConfig,
        env: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        config.validate()?;
        let backend = match config.provider {
            Provider::Env => Backend::Env,
            Provider::Gcp => {
                let project = config.project.clone().unwrap_or_default();
                let mut builder = SecretManagerService::builder()
                    // Retries belong to the step that needs the secret (its back-off and
                    // attempt limit); retrying here as well would multiply the two.
                    .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
                if let Some(endpoint) = &config.endpoint {
                    builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
                    if endpoint.starts_with("http://") {
                        builder = builder.with_credentials(
                            google_cloud_auth::credentials::anonymous::Builder::new().build(),
                        );
                    }
                }
                let client = builder.build().await.map_err(|e| {
                    Error::Config(format!(
                        "cannot create the Secret Manager client for secrets.project {project}: \
                         {e} (run `gcloud auth application-default login`, or set \
                         GOOGLE_APPLICATION_CREDENTIALS)"
                    ))
                })?;
                Backend::Gcp {
                    client,
                    project,
                    cache: Mutex::new(HashMap::new()),
                }
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                backend,
                env: Box::new(env),
            }),
        })
    }

    /// Where this provider looks, for messages: `gcp project P`, or
    /// `env TRIBUTARY_SECRET_<ID>, file /etc/tributary/secrets/<id>`.
    pub fn describe(&self) -> String {
        match &self.inner.backend {
            Backend::Gcp { project, .. } => format!("gcp project {project}"),
            Backend::Env => self.looked_in("<id>"),
        }
    }

    fn looked_in(&self, id: &str) -> String {
        match &self.inner.backend {
            Backend::Gcp { project, .. } => {
                format!("gcp project {project} (projects/{project}/secrets/{id}/versions/latest)")
            }
            Backend::Env => {
                let config = &self.inner.config;
                let var = if id == "<id>" {
                    format!("{}<ID>", config.env_prefix)
                } else {
                    config.env_var(id)
                };
                match &config.dir {
                    Some(dir) => format!("env {var}, file {}", dir.join(id).display()),
                    None => format!("env {var} (no secrets.dir for files)"),
                }
            }
        }
    }

    /// The secret `id`'s value (for `gcp`, its latest version).
    ///
    /// # Errors
    /// [`Error::InvalidId`], [`Error::NotFound`] naming where it looked, [`Error::Backend`]
    /// (retryable when transient), [`Error::Io`], [`Error::InvalidValue`].
    pub async fn get(&self, id: &str) -> Result<Secret, Error> {
        self.lookup(id).await.map(|(secret, _)| secret)
    }

    async fn lookup(&self, id: &str) -> Result<(Secret, Source), Error> {
        check_id(id)?;
        let found = match &self.inner.backend {
            Backend::Env => self.lookup_env(id)?,
            Backend::Gcp {
                client,
                project,
                cache,
            } => self.lookup_gcp(client, project, cache, id).await?,
        };
        match found {
            Some((secret, source)) => {
                tracing::debug!(secret.id = id, secret.source = %source, "secret read");
                Ok((secret, source))
            }
            None => Err(Error::NotFound {
                id: id.to_owned(),
                looked_in: self.looked_in(id),
            }),
        }
    }

    fn lookup_env(&self, id: &str) -> Result<Option<(Secret, Source)>, Error> {
        let var = self.inner.config.env_var(id);
        if let Some(value) = (self.inner.env)(&var).filter(|v| !v.is_empty()) {
            return Ok(Some((Secret::new(value), Source::Env(var))));
        }
        let Some(dir) = &self.inner.config.dir else {
            return Ok(None);
        };
        let path = dir.join(id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    what: format!("read {}", path.display()),
                    source,
                });
            }
        };
        let mut value = String::from_utf8(bytes).map_err(|_| Error::InvalidValue {
            id: id.to_owned(),
            problem: format!("file {} is not UTF-8", path.display()),
        })?;
        strip_newline(&mut value);
        Ok(Some((Secret::new(value), Source::File(path))))
    }

    async fn lookup_gcp(
        &self,
        client: &SecretManagerService,
        project: &str,
        cache: &Mutex<HashMap<String, Cached>>,
        id: &str,
    ) -> Result<Option<(Secret, Source)>, Error> {
        let ttl = self.inner.config.cache_ttl;
        if let Some(hit) = lock(cache).get(id).filter(|c| c.fetched.elapsed() < ttl) {
            let source = Source::Gcp {
                project: project.to_owned(),
                version: hit.version.clone(),
            };
            return Ok(Some((hit.secret.clone(), source)));
        }
        let name = format!("projects/{project}/secrets/{id}/versions/latest");
        let response = match client.access_secret_version().set_name(&name).send().await {
            Ok(r) => r,
            Err(e) if e.status().is_some_and(|s| s.code == Code::NotFound) => return Ok(None),
            Err(e) => return Err(backend_error(id, "access", project, &e, None)),
        };
        let payload = response.payload.unwrap_or_default();
        if let Some(expected) = payload.data_crc32c
            && i64::from(crc32c(&payload.data)) != expected
        {
            return Err(Error::Backend {
                id: id.to_owned(),
                operation: "access",
                location: format!("gcp project {project}"),
                status: "DATA_LOSS".into(),
                message: "the payload does not match its CRC32C checksum".into(),
                retryable: true,
            });
        }
        let value = String::from_utf8(payload.data.to_vec()).map_err(|_| Error::InvalidValue {
            id: id.to_owned(),
            problem: format!("the value in gcp project {project} is not UTF-8"),
        })?;
        let version = response
            .name
            .rsplit('/')
            .next()
            .filter(|v| !v.is_empty())
            .unwrap_or("latest")
            .to_owned();
        let secret = Secret::new(value);
        if !ttl.is_zero() {
            lock(cache).insert(
                id.to_owned(),
                Cached {
                    secret: secret.clone(),
                    version: version.clone(),
                    fetched: Instant::now(),
                },
            );
        }
        let source = Source::Gcp {
            project: project.to_owned(),
            version,
        };
        Ok(Some((secret, source)))
    }

    /// Creates or updates the secret `id`. For `gcp`: creates the secret (automatic
    /// replication) if it is missing, then adds `value` as its new latest version. For `env`:
    /// writes the file `<dir>/<id>` with mode 0600 (atomically, by rename).
    ///
    /// # Errors
    /// [`Error::InvalidId`], [`Error::InvalidValue`] (empty), [`Error::Config`] (`env`
    /// without `secrets.dir`), [`Error::Backend`], [`Error::Io`].
    pub async fn set(&self, id: &str, value: &str) -> Result<(), Error> {
        self.store(id, value).await.map(|_| ())
    }

    /// [`Secrets::set`], saying where the value went.
    async fn store(&self, id: &str, value: &str) -> Result<String, Error> {
        check_id(id)?;
        if value.is_empty() {
            return Err(Error::InvalidValue {
                id: id.to_owned(),
                problem: "the value is empty".into(),
            });
        }
        let stored = match &self.inner.backend {
            Backend::Env => self.store_file(id, value)?,
            Backend::Gcp {
                client,
                project,
                cache,
            } => {
                let version = store_gcp(client, project, id, value).await?;
                lock(cache).remove(id);
                format!("gcp project {project} (version {version})")
            }
        };
        tracing::info!(secret.id = id, secret.stored = %stored, "secret set");
        Ok(stored)
    }

    fn store_file(&self, id: &str, value: &str) -> Result<String, Error> {
        use std::os::unix::fs::OpenOptionsExt;
        let Some(dir) = &self.inner.config.dir else {
            return Err(Error::Config(
                "secrets.dir is not set: the env provider writes secrets as files there \
                 (or set TRIBUTARY_SECRETS_DIR)"
                    .into(),
            ));
        };
        let io = |what: String| move |source| Error::Io { what, source };
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let path = dir.join(id);
        // Written beside the target and renamed over it, so a reader never sees half a value
        // and the file is 0600 from its first byte.
        let temp = dir.join(format!(".{id}.{}.tmp", uuid::Uuid::new_v4()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut f| {
                f.write_all(value.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&temp, &path));
        if let Err(source) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(Error::Io {
                what: format!("write {}", path.display()),
                source,
            });
        }
        Ok(format!("file {}", path.display()))
    }
}

/// Creates the secret if missing and adds a version; returns the new version's number.
async fn store_gcp(
    client: &SecretManagerService,
    project: &str,
    id: &str,
    value: &str,
) -> Result<String, Error> {
    let name = format!("projects/{project}/secrets/{id}");
    let fail = |op, e: &google_cloud_secretmanager_v1::Error| {
        backend_error(id, op, project, e, Some(value))
    };
    let code = |e: &google_cloud_secretmanager_v1::Error| e.status().map(|s| s.code);
    match client.get_secret().set_name(&name).send().await {
        Ok(_) => {}
        Err(e) if code(&e) == Some(Code::NotFound) => {
            let created = client
                .create_secret()
                .set_parent(format!("projects/{project}"))
                .set_secret_id(id)
                .set_secret(model::Secret::new().set_replication(
                    model::Replication::new().set_automatic(model::replication::Automatic::new()),
                ))
                .send()
                .await;
            match created {
                // Someone else created it in between: fine, it exists.
                Err(e) if code(&e) == Some(Code::AlreadyExists) => {}
                Err(e) => return Err(fail("create", &e)),
                Ok(_) => {}
            }
        }
        Err(e) => return Err(fail("get", &e)),
    }
    let version = client
        .add_secret_version()
        .set_parent(&name)
        .set_payload(
            model::SecretPayload::new()
                .set_data(value.to_owned())
                .set_data_crc32c(i64::from(crc32c(value.as_bytes()))),
        )
        .send()
        .await
        .map_err(|e| fail("add version", &e))?;
    Ok(version
        .name
        .rsplit('/')
        .next()
        .filter(|v| !v.is_empty())
        .unwrap_or("new")
        .to_owned())
}

/// A Secret Manager failure as [`Error::Backend`]: the status code and the service's own
/// message, never a response body (an undecodable body might hold the value) and never
/// `value`.
fn backend_error(
    id: &str,
    operation: &'static str,
    project: &str,
    e: &google_cloud_secretmanager_v1::Error,
    value: Option<&str>,
) -> Error {
    let http = e
        .http_status_code()
        .map(|c| format!(" (HTTP {c})"))
        .unwrap_or_default();
    let (status, message, retryable) = if let Some(s) = e.status() {
        let retryable = matches!(
            s.code,
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Internal
                | Code::ResourceExhausted
                | Code::Aborted
        ) || e.http_status_code().is_some_and(|c| c >= 500 || c == 429);
        (
            format!("{}{http}", s.code.name()),
            s.message.clone(),
            retryable,
        )
    } else if let Some(c) = e.http_status_code() {
        let message = "the response carried no Google error status".to_owned();
        (format!("HTTP {c}"), message, c >= 500 || c == 429)
    } else if e.is_deserialization() {
        let message = "cannot decode the response (is secrets.endpoint right?)".to_owned();
        ("INVALID_RESPONSE".into(), message, false)
    } else if e.is_timeout() {
        ("TIMEOUT".into(), e.to_string(), true)
    } else if e.is_connect() || e.is_io() || e.is_transport() || e.is_exhausted() {
        ("UNAVAILABLE".into(), e.to_string(), true)
    } else if e.is_authentication() {
        let transient = std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<google_cloud_gax::error::CredentialsError>())
            .is_some_and(|c| c.is_transient());
        let message = format!(
            "{e} (for local use: `gcloud auth application-default login`, or set \
             GOOGLE_APPLICATION_CREDENTIALS)"
        );
        ("UNAUTHENTICATED".into(), message, transient)
    } else {
        ("UNKNOWN".into(), e.to_string(), false)
    };
    let message = match value {
        Some(v) if !v.is_empty() => message.replace(v, "[redacted]"),
        _ => message,
    };
    Error::Backend {
        id: id.to_owned(),
        operation,
        location: format!("gcp project {project}"),
        status,
        message,
        retryable,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The cache holds no invariant a panicking holder could break.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn strip_newline(value: &mut String) {
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
}

/// CRC32C (Castagnoli), the checksum Secret Manager keeps with each payload.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `tributary secrets …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check that a secret can be read: prints where it was found and its length, not its
    /// value (unless --show).
    Get {
        /// The secret's id.
        id: String,
        /// Print the value itself (and nothing else).
        #[arg(long)]
        show: bool,
    },
    /// Create or update a secret (for gcp: create it if missing, then add a version).
    Set {
        /// The secret's id.
        id: String,
        /// The value; `-` reads it from stdin (one trailing newline is dropped), which keeps
        /// it out of the shell history.
        value: String,
    },
}

/// Runs a `tributary secrets` command, printing to `out`; `set <id> -` reads standard input.
///
/// # Errors
/// Those of [`Secrets::get`] and [`Secrets::set`], and failures to write `out`.
pub async fn run_command(
    secrets: &Secrets,
    command: Command,
    out: &mut impl Write,
) -> Result<(), Error> {
    run_command_with_input(secrets, command, std::io::stdin(), out).await
}

/// [`run_command`] with `input` instead of standard input, for tests.
///
/// ```
/// # async fn demo() -> Result<(), tributary::secrets::Error> {
/// use tributary::secrets::{Command, Secrets, SecretsConfig, run_command_with_input};
///
/// let dir = std::env::temp_dir().join(format!("doc-secrets-{}", std::process::id()));
/// let config = SecretsConfig { dir: Some(dir.clone()), ..SecretsConfig::default() };
/// let secrets = Secrets::from_config_with_env(&config, |_| None).await?;
/// let set = Command::Set { id: "api-key".into(), value: "-".into() };
/// run_command_with_input(&secrets, set, &b"hunter2\n"[..], &mut Vec::new()).await?;
/// let mut out = Vec::new();
/// let get = Command::Get { id: "api-key".into(), show: false };
/// run_command_with_input(&secrets, get, std::io::empty(), &mut out).await?;
/// let out = String::from_utf8(out).unwrap();
/// assert!(out.starts_with("secret api-key: found in file"), "{out}");
/// assert!(out.ends_with(", 7 bytes\n") && !out.contains("hunter2"), "{out}");
/// # std::fs::remove_dir_all(dir).unwrap();
/// # Ok(())
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
///
/// # Errors
/// As [`run_command`].
pub async fn run_command_with_input(
    secrets: &Secrets,
    command: Command,
    input: impl Read,
    out: &mut impl Write,
) -> Result<(), Error> {
    let written = |source| Error::Io {
        what: "write the output".into(),
        source,
    };
    match command {
        Command::Get { id, show } => {
            let (secret, source) = secrets.lookup(&id).await?;
            if show {
                writeln!(out, "{}", secret.expose()).map_err(written)?;
            } else {
                let bytes = secret.expose().len();
                writeln!(out, "secret {id}: found in {source}, {bytes} bytes").map_err(written)?;
            }
        }
        Command::Set { id, value } => {
            let value = if value == "-" {
                read_value(input, &id)?
            } else {
                value
            };
            let stored = secrets.store(&id, &value).await?;
            writeln!(out, "secret {id}: stored in {stored}").map_err(written)?;
            if let Backend::Env = secrets.inner.backend {
                let var = secrets.inner.config.env_var(&id);
                if (secrets.inner.env)(&var).is_some_and(|v| !v.is_empty()) {
                    writeln!(out, "note: {var} is set and takes precedence over the file")
                        .map_err(written)?;
                }
            }
        }
    }
    Ok(())
}

fn read_value(mut input: impl Read, id: &str) -> Result<String, Error> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(|source| Error::Io {
        what: "read the value from stdin".into(),
        source,
    })?;
    let mut value = String::from_utf8(bytes).map_err(|_| Error::InvalidValue {
        id: id.to_owned(),
        problem: "stdin is not UTF-8".into(),
    })?;
    strip_newline(&mut value);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_castagnoli_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn ids_follow_secret_managers_rule() {
        assert!(check_id("comtrade-key_2").is_ok());
        assert!(check_id(&"a".repeat(255)).is_ok());
        for bad in ["", "a/b", "a b", "ключ", "../etc", &"a".repeat(256)] {
            assert!(
                matches!(check_id(bad), Err(Error::InvalidId { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_provider_parses_case_insensitively() {
        assert_eq!("GCP".parse::<Provider>(), Ok(Provider::Gcp));
        assert_eq!("env".parse::<Provider>(), Ok(Provider::Env));
        assert!("vault".parse::<Provider>().is_err());
    }
}
