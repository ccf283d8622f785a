//! The `fred` implementation of the transport.

use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config, ReconnectPolicy};
use fred::types::{ClusterHash, CustomCommand, Value};

use super::error::Error;
use super::message::Message;
use crate::store::{Dispatch, redact_url};

/// Where and how to reach Redis.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: String,
    /// Prefix of every key this engine writes; isolates deployments sharing one Redis.
    pub prefix: String,
    /// How long start-up waits for a first connection.
    pub connect_timeout: Duration,
    /// Time limit of one command (blocking reads add their block time).
    pub command_timeout: Duration,
    /// Cap on the dead-letter stream's length (approximate trimming).
    pub dead_letter_max_len: u64,
}

/// The keys of one deployment.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The stream of step entries.
    pub steps: String,
    /// The dead-letter stream.
    pub dead: String,
    /// Marks the data set the streams belong to; missing after a flush or a restart without
    /// persistence.
    pub epoch: String,
    /// Held by the process that rebuilds the streams from PostgreSQL.
    pub rebuild_lock: String,
    /// The consumer group.
    pub group: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            steps: format!("{prefix}:steps"),
            dead: format!("{prefix}:dead"),
            epoch: format!("{prefix}:epoch"),
            rebuild_lock: format!("{prefix}:rebuild-lock"),
            group: "workers".to_owned(),
        }
    }
}

/// A raw stream entry: its id and fields, decoded lossily as UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream id.
    pub id: String,
    /// Field/value pairs in order.
    pub fields: Vec<(String, String)>,
}

impl Entry {
    /// Decodes the entry as a step message.
    ///
    /// # Errors
    /// [`Malformed`](super::Malformed) naming the problem.
    pub fn message(&self) -> Result<Message, super::Malformed> {
        Message::from_fields(&self.fields)
    }
}

/// A delivered entry not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The entry id.
    pub id: String,
    /// The consumer it was delivered to.
    pub consumer: String,
    /// Time since it was delivered or its lease renewed.
    pub idle: Duration,
    /// How often it was delivered.
    pub deliveries: u64,
}

/// Shared handle to Redis for non-blocking commands (cheap to clone). Blocking reads use a
/// [`Reader`] each, on its own connection, so they never stall other commands.
#[derive(Clone)]
pub struct Transport {
    client: fred::clients::Client,
    config: TransportConfig,
    keys: Keys,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("url", &redact_url(&self.config.url))
            .field("keys", &self.keys)
            .finish()
    }
}

fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::FirstKey, false)
}

fn command_error(command: &'static str, stream: &str, source: fred::error::Error) -> Error {
    if source.details().contains("NOGROUP") {
        Error::NoGroup {
            stream: stream.to_owned(),
        }
    } else {
        Error::Command { command, source }
    }
}

async fn connect(
    config: &TransportConfig,
    extra_timeout: Duration,
) -> Result<fred::clients::Client, Error> {
    let url = redact_url(&config.url);
    if !(config.url.starts_with("redis://") || config.url.starts_with("rediss://")) {
        return Err(Error::InvalidUrl {
            url,
            problem: "the scheme must be redis:// or rediss://".into(),
        });
    }
    let fred_config = Config::from_url(&config.url).map_err(|e| Error::InvalidUrl {
        url: url.clone(),
        problem: e.details().to_owned(),
    })?;
    let command_timeout = config.command_timeout + extra_timeout;
    let connect_timeout = config.connect_timeout;
    let client = Builder::from_config(fred_config)
        .with_connection_config(|c| {
            c.connection_timeout = connect_timeout;
            c.internal_command_timeout = connect_timeout;
            // Commands issued while Redis is down wait for the reconnect, up to the timeout.
            c.max_command_attempts = 3;
        })
        .with_performance_config(|p| p.default_command_timeout = command_timeout)
        // Reconnect forever: a worker outlives a Redis restart (0 = no attempt limit).
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
        .build()
        .map_err(|e| Error::InvalidUrl {
            url: url.clone(),
            problem: e.details().to_owned(),
        })?;
    match tokio::time::timeout(connect_timeout, client.init()).await {
        Ok(Ok(_handle)) => Ok(client),
        Ok(Err(e)) => Err(Error::Connect {
            url,
            problem: e.details().to_owned(),
        }),
        Err(_) => {
            let _ = client.quit().await;
            Err(Error::Connect {
                url,
                problem: format!("no connection within {connect_timeout:?}"),
            })
        }
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => other.as_string().unwrap_or_default(),
    }
}

/// Parses `[id, [field, value, …]]` entries; deleted entries (nil) are skipped.
fn parse_entries(command: &'static str, value: Value) -> Result<Vec<Entry>, Error> {
    let mut entries = Vec::new();
    for item in value.into_array() {
        if item.is_null() {
            continue;
        }
        let mut parts = item.into_array().into_iter();
        let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
            return Err(Error::Reply {
                command,
                problem: "an entry is not [id, fields]".into(),
            });
        };
        let flat = fields.into_array();
        let fields = flat
            .chunks(2)
            .map(|kv| (text(&kv[0]), kv.get(1).map(text).unwrap_or_default()))
            .collect();
        entries.push(Entry {
            id: text(&id),
            fields,
        });
    }
    Ok(entries)
}

impl Transport {
    /// Runs one command on the shared connection; a missing group becomes [`Error::NoGroup`].
    async fn call(&self, name: &'static str, args: Vec<Value>) -> Result<Value, Error> {
        self.client
            .custom(cmd(name), args)
            .await
            .map_err(|e| command_error(name, &self.keys.steps, e))
    }

    /// Connects, failing with a clear error when Redis cannot be reached within the connect
    /// timeout. Once connected, the client reconnects on its own for as long as it lives.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] or [`Error::Connect`].
    pub async fn connect(config: TransportConfig) -> Result<Self, Error> {
        let client = connect(&config, Duration::ZERO).await?;
        let keys = Keys::new(&config.prefix);
        Ok(Self {
            client,
            config,
            keys,
        })
    }

    /// The deployment's keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Opens a dedicated connection for blocking reads as consumer `consumer`.
    ///
    /// # Errors
    /// As [`Transport::connect`].
    pub async fn reader(&self, consumer: &str, block: Duration) -> Result<Reader, Error> {
        let client = connect(&self.config, block).await?;
        Ok(Reader {
            client,
            keys: self.keys.clone(),
            consumer: consumer.to_owned(),
            block,
        })
    }

    /// Creates the stream and its consumer group if missing (idempotent). The group starts at
    /// the stream's beginning, so entries added before it existed are delivered too.
    ///
    /// # Errors
    /// A command error other than "group exists".
    pub async fn ensure_group(&self) -> Result<(), Error> {
        let args = vec![
            Value::from("CREATE"),
            self.keys.steps.as_str().into(),
            self.keys.group.as_str().into(),
            "0".into(),
            "MKSTREAM".into(),
        ];
        match self
            .client
            .custom::<Value, Value>(
                CustomCommand::new_static("XGROUP", ClusterHash::Offset(1), false),
                args,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.details().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(Error::Command {
                command: "XGROUP CREATE",
                source: e,
            }),
        }
    }

    /// Appends step entries, pipelined. Returns their stream ids.
    ///
    /// # Errors
    /// A command error; some entries may have been added (delivery is at least once).
    pub async fn publish(&self, dispatch: &[Dispatch]) -> Result<Vec<String>, Error> {
        if dispatch.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.client.pipeline();
        for d in dispatch {
            let mut args: Vec<Value> = vec![self.keys.steps.as_str().into(), "*".into()];
            for (k, v) in Message::from(d).to_fields() {
                args.push(k.into());
                args.push(v.into());
            }
            let _: () = pipeline
                .custom(cmd("XADD"), args)
                .await
                .map_err(|e| Error::Command {
                    command: "XADD",
                    source: e,
                })?;
        }
        let ids: Vec<Value> = pipeline.all().await.map_err(|e| Error::Command {
            command: "XADD",
            source: e,
        })?;
        Ok(ids.iter().map(text).collect())
    }

    /// Re-adds raw entries (used when handing back or reclaiming).
    ///
    /// # Errors
    /// A command error.
    pub async fn republish(&self, entries: &[Entry]) -> Result<(), Error> {
        for entry in entries {
            let mut args: Vec<Value> = vec![self.keys.steps.as_str().into(), "*".into()];
            for (k, v) in &entry.fields {
                args.push(k.as_str().into());
                args.push(v.as_str().into());
            }
            let _: Value = self.call("XADD", args).await?;
        }
        Ok(())
    }

    /// Acknowledges entries: they leave the group's pending list.
    ///
    /// # Errors
    /// A command error.
    pub async fn ack(&self, ids: &[String]) -> Result<u64, Error> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut args: Vec<Value> = vec![
            self.keys.steps.as_str().into(),
            self.keys.group.as_str().into(),
        ];
        args.extend(ids.iter().map(|id| Value::from(id.as_str())));
        let n: Value = self.call("XACK", args).await?;
        Ok(n.as_i64().unwrap_or(0) as u64)
    }

    /// Renews the lease on entries this consumer is working on: resets their idle time so that
    /// no other consumer reclaims them.
    ///
    /// # Errors
    /// A command error.
    pub async fn renew(&self, consumer: &str, ids: &[String]) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args: Vec<Value> = vec![
            self.keys.steps.as_str().into(),
            self.keys.group.as_str().into(),
            consumer.into(),
            "0".into(),
        ];
        args.extend(ids.iter().map(|id| Value::from(id.as_str())));
        args.push("JUSTID".into());
        let _: Value = self.call("XCLAIM", args).await?;
        Ok(())
    }

    /// Claims up to `count` entries idle for at least `min_idle` (their consumer stopped
    /// renewing: it died or stalled). Returns the entries still present; ids of entries deleted
    /// while pending are acknowledged, as nothing can be done with them.
    ///
    /// # Errors
    /// A command error.
    pub async fn reclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>, Error> {
        let args: Vec<Value> = vec![
            self.keys.steps.as_str().into(),
            self.keys.group.as_str().into(),
            consumer.into(),
            (min_idle.as_millis() as i64).into(),
            "0-0".into(),
            "COUNT".into(),
            (count as i64).into(),
        ];
        let reply: Value = self.call("XAUTOCLAIM", args).await?;
        let mut parts = reply.into_array().into_iter();
        let _cursor = parts.next();
        let entries = parse_entries("XAUTOCLAIM", parts.next().unwrap_or(Value::Null))?;
        let deleted: Vec<String> = parts
            .next()
            .map(|d| d.into_array().iter().map(text).collect())
            .unwrap_or_default();
        if !deleted.is_empty() {
            tracing::warn!(
                count = deleted.len(),
                "pending entries were deleted from the stream before delivery; PostgreSQL recovery re-publishes their steps"
            );
            self.ack(&deleted).await?;
        }
        Ok(entries)
    }

    /// Adds an entry to the dead-letter stream: the original fields plus the reason.
    ///
    /// # Errors
    /// A command error.
    pub async fn dead_letter(
        &self,
        entry_id: &str,
        fields: &[(String, String)],
        reason: &str,
    ) -> Result<(), Error> {
        let mut args: Vec<Value> = vec![
            self.keys.dead.as_str().into(),
            "MAXLEN".into(),
            "~".into(),
            (self.config.dead_letter_max_len as i64).into(),
            "*".into(),
            "reason".into(),
            reason.into(),
            "entry_id".into(),
            entry_id.into(),
        ];
        for (k, v) in fields {
            args.push(format!("orig.{k}").into());
            args.push(v.as_str().into());
        }
        let _: Value = self.call("XADD", args).await?;
        Ok(())
    }

    /// The dead-letter stream's entries, oldest first (at most `count`).
    ///
    /// # Errors
    /// A command error.
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<Entry>, Error> {
        let args: Vec<Value> = vec![
            self.keys.dead.as_str().into(),
            "-".into(),
            "+".into(),
            "COUNT".into(),
            (count as i64).into(),
        ];
        let reply: Value = self.call("XRANGE", args).await?;
        parse_entries("XRANGE", reply)
    }

    /// The entry with this id, if the stream still holds it.
    ///
    /// # Errors
    /// A command error.
    pub async fn entry(&self, id: &str) -> Result<Option<Entry>, Error> {
        let args: Vec<Value> = vec![self.keys.steps.as_str().into(), id.into(), id.into()];
        let reply: Value = self.call("XRANGE", args).await?;
        Ok(parse_entries("XRANGE", reply)?.into_iter().next())
    }

    /// The current epoch marker, `None` after a flush.
    ///
    /// # Errors
    /// A command error.
    pub async fn epoch(&self) -> Result<Option<String>, Error> {
        let v: Value = self
            .call("GET", vec![Value::from(self.keys.epoch.as_str())])
            .await?;
        Ok(if v.is_null() { None } else { Some(text(&v)) })
    }

    /// Sets the epoch marker.
    ///
    /// # Errors
    /// A command error.
    pub async fn set_epoch(&self, epoch: &str) -> Result<(), Error> {
        let _: Value = self
            .call(
                "SET",
                vec![Value::from(self.keys.epoch.as_str()), Value::from(epoch)],
            )
            .await?;
        Ok(())
    }

    /// Takes the rebuild lock for `ttl` if nobody holds it. Returns whether it was taken.
    ///
    /// # Errors
    /// A command error.
    pub async fn try_rebuild_lock(&self, holder: &str, ttl: Duration) -> Result<bool, Error> {
        let args: Vec<Value> = vec![
            self.keys.rebuild_lock.as_str().into(),
            holder.into(),
            "NX".into(),
            "PX".into(),
            (ttl.as_millis() as i64).into(),
        ];
        let v: Value = self.call("SET", args).await?;
        Ok(!v.is_null())
    }

    /// Releases the rebuild lock.
    ///
    /// # Errors
    /// A command error.
    pub async fn release_rebuild_lock(&self) -> Result<(), Error> {
        let _: Value = self
            .call("DEL", vec![Value::from(self.keys.rebuild_lock.as_str())])
            .await?;
        Ok(())
    }

    /// The number of entries in the step stream and in the group's pending list.
    ///
    /// # Errors
    /// A command error.
    pub async fn depth(&self) -> Result<(u64, u64), Error> {
        let len: Value = self
            .call("XLEN", vec![Value::from(self.keys.steps.as_str())])
            .await?;
        let pending: Value = self
            .client
            .custom(
                cmd("XPENDING"),
                vec![self.keys.steps.as_str(), self.keys.group.as_str()],
            )
            .await
            .map_err(|e| command_error("XPENDING", &self.keys.steps, e))?;
        let pending = pending
            .into_array()
            .first()
            .and_then(Value::as_i64)
            .unwrap_or(0);
        Ok((len.as_i64().unwrap_or(0) as u64, pending as u64))
    }

    /// The dead-letter stream's length.
    ///
    /// # Errors
    /// A command error.
    pub async fn dead_letter_len(&self) -> Result<u64, Error> {
        let len: Value = self
            .call("XLEN", vec![Value::from(self.keys.dead.as_str())])
            .await?;
        Ok(len.as_i64().unwrap_or(0) as u64)
    }

    /// The group's pending entries (delivered, not yet acknowledged), oldest first: id,
    /// consumer, idle time and delivery count.
    ///
    /// # Errors
    /// A command error.
    pub async fn pending(&self, count: usize) -> Result<Vec<Pending>, Error> {
        let args: Vec<Value> = vec![
            self.keys.steps.as_str().into(),
            self.keys.group.as_str().into(),
            "-".into(),
            "+".into(),
            (count as i64).into(),
        ];
        let reply: Value = self.call("XPENDING", args).await?;
        Ok(reply
            .into_array()
            .into_iter()
            .map(|row| {
                let row = row.into_array();
                Pending {
                    id: row.first().map(text).unwrap_or_default(),
                    consumer: row.get(1).map(text).unwrap_or_default(),
                    idle: Duration::from_millis(
                        row.get(2).and_then(Value::as_i64).unwrap_or(0) as u64
                    ),
                    deliveries: row.get(3).and_then(Value::as_i64).unwrap_or(0) as u64,
                }
            })
            .collect())
    }

    /// Deletes entries that every consumer has read and acknowledged: those older than both
    /// the oldest pending entry and the group's last-delivered id. Never drops unread or
    /// unacknowledged work. Returns the number of entries removed.
    ///
    /// # Errors
    /// A command error.
    pub async fn trim(&self) -> Result<u64, Error> {
        let groups: Value = self
            .client
            .custom(
                CustomCommand::new_static("XINFO", ClusterHash::Offset(1), false),
                vec!["GROUPS", self.keys.steps.as_str()],
            )
            .await
            .map_err(|e| command_error("XINFO GROUPS", &self.keys.steps, e))?;
        let mut last_delivered = None;
        for group in groups.into_array() {
            let fields = group.into_array();
            let map: Vec<(String, &Value)> = fields
                .chunks(2)
                .filter(|kv| kv.len() == 2)
                .map(|kv| (text(&kv[0]), &kv[1]))
                .collect();
            if map
                .iter()
                .any(|(k, v)| k == "name" && text(v) == self.keys.group)
            {
                last_delivered = map
                    .iter()
                    .find(|(k, _)| k == "last-delivered-id")
                    .map(|(_, v)| text(v));
            }
        }
        // The last delivered entry itself may go: trim below the id right after it.
        let Some(mut min_id) = last_delivered.map(|id| stream_id_next(&id)) else {
            return Ok(0);
        };
        let pending: Value = self
            .client
            .custom(
                cmd("XPENDING"),
                vec![self.keys.steps.as_str(), self.keys.group.as_str()],
            )
            .await
            .map_err(|e| command_error("XPENDING", &self.keys.steps, e))?;
        let summary = pending.into_array();
        if summary.first().and_then(Value::as_i64).unwrap_or(0) > 0
            && let Some(oldest) = summary.get(1).map(text)
            && stream_id_lt(&oldest, &min_id)
        {
            min_id = oldest;
        }
        let removed: Value = self
            .client
            .custom(
                cmd("XTRIM"),
                vec![self.keys.steps.as_str(), "MINID", min_id.as_str()],
            )
            .await
            .map_err(|e| Error::Command {
                command: "XTRIM",
                source: e,
            })?;
        Ok(removed.as_i64().unwrap_or(0) as u64)
    }

    /// Removes consumers of the group that hold no pending entry and have been idle longer
    /// than `idle`: names of processes that have exited. Returns how many were removed.
    ///
    /// # Errors
    /// A command error.
    pub async fn remove_idle_consumers(&self, idle: Duration) -> Result<usize, Error> {
        let consumers: Value = self
            .client
            .custom(
                CustomCommand::new_static("XINFO", ClusterHash::Offset(1), false),
                vec![
                    "CONSUMERS",
                    self.keys.steps.as_str(),
                    self.keys.group.as_str(),
                ],
            )
            .await
            .map_err(|e| command_error("XINFO CONSUMERS", &self.keys.steps, e))?;
        let mut removed = 0;
        for consumer in consumers.into_array() {
            let fields = consumer.into_array();
            let get = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv.len() == 2 && text(&kv[0]) == name)
                    .map(|kv| kv[1].clone())
            };
            let name = get("name").map(|v| text(&v)).unwrap_or_default();
            let pending = get("pending").and_then(|v| v.as_i64()).unwrap_or(1);
            let idle_ms = get("idle").and_then(|v| v.as_i64()).unwrap_or(0);
            if pending == 0 && idle_ms as u128 > idle.as_millis() {
                let _: Value = self
                    .client
                    .custom(
                        CustomCommand::new_static("XGROUP", ClusterHash::Offset(1), false),
                        vec![
                            "DELCONSUMER",
                            self.keys.steps.as_str(),
                            self.keys.group.as_str(),
                            name.as_str(),
                        ],
                    )
                    .await
                    .map_err(|e| Error::Command {
                        command: "XGROUP DELCONSUMER",
                        source: e,
                    })?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Asks the shared rate limit `<prefix>:ratelimit:<limit>` for one request: GCRA with one
    /// request every `emission_interval` and bursts of up to `burst` (at least 1), on the
    /// server's clock (`gcra.lua`). Returns zero when the request may go now (it is counted),
    /// otherwise how long to wait before asking again (nothing is counted).
    ///
    /// # Errors
    /// A command error.
    pub async fn rate_limit(
        &self,
        limit: &str,
        emission_interval: Duration,
        burst: u32,
    ) -> Result<Duration, Error> {
        let key = format!("{}:ratelimit:{limit}", self.config.prefix);
        // Microseconds: exact in Lua's doubles for centuries, and fine enough for any API.
        let interval = (emission_interval.as_micros() as i64).max(1);
        let reply = self
            .eval(
                &GCRA,
                key,
                vec![interval.into(), i64::from(burst.max(1)).into()],
            )
            .await?;
        let wait = reply.as_i64().ok_or_else(|| Error::Reply {
            command: "EVALSHA gcra",
            problem: format!("expected an integer, got {reply:?}"),
        })?;
        Ok(Duration::from_micros(wait.max(0) as u64))
    }

    /// Counts one request against the daily cap `<prefix>:ratelimit:<limit>:<day>` (`day` as
    /// `YYYY-MM-DD`), unless `cap` requests were already counted that day (`daily_cap.lua`).
    /// Returns the day's count including this request, or `None` when the cap is reached.
    /// Counters expire after two days.
    ///
    /// # Errors
    /// A command error.
    pub async fn daily_count(
        &self,
        limit: &str,
        day: &str,
        cap: u32,
    ) -> Result<Option<u32>, Error> {
        const TTL_SECONDS: i64 = 2 * 24 * 3600;
        let key = format!("{}:ratelimit:{limit}:{day}", self.config.prefix);
        let reply = self
            .eval(
                &DAILY_CAP,
                key,
                vec![i64::from(cap).into(), TTL_SECONDS.into()],
            )
            .await?;
        let n = reply.as_i64().ok_or_else(|| Error::Reply {
            command: "EVALSHA daily_cap",
            problem: format!("expected an integer, got {reply:?}"),
        })?;
        Ok(u32::try_from(n).ok())
    }

    /// Runs a script on one key: `EVALSHA` with the script's digest (learnt once per process
    /// with `SCRIPT LOAD`), or `EVAL` when the server does not know it (after a restart or a
    /// flush), which also caches it there again.
    async fn eval(&self, script: &Script, key: String, args: Vec<Value>) -> Result<Value, Error> {
        // The key is the third argument, after the script (or digest) and the key count.
        let command = |name| CustomCommand::new_static(name, ClusterHash::Offset(2), false);
        let with = |first: Value| {
            let mut all = vec![first, 1.into(), key.as_str().into()];
            all.extend(args.iter().cloned());
            all
        };
        let sha = match script.sha.get() {
            Some(sha) => sha.clone(),
            None => {
                let sha: Value = self
                    .client
                    .custom(
                        CustomCommand::new_static("SCRIPT", ClusterHash::Random, false),
                        vec![Value::from("LOAD"), script.source.into()],
                    )
                    .await
                    .map_err(|source| Error::Command {
                        command: "SCRIPT LOAD",
                        source,
                    })?;
                script.sha.get_or_init(|| text(&sha)).clone()
            }
        };
        match self
            .client
            .custom::<Value, Value>(command("EVALSHA"), with(sha.as_str().into()))
            .await
        {
            Err(e) if e.details().contains("NOSCRIPT") => self
                .client
                .custom(command("EVAL"), with(script.source.into()))
                .await
                .map_err(|source| Error::Command {
                    command: "EVAL",
                    source,
                }),
            other => other.map_err(|source| Error::Command {
                command: "EVALSHA",
                source,
            }),
        }
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self.client.quit().await;
    }
}

/// A Lua script and, once known, its digest (the same for every connection and server).
struct Script {
    source: &'static str,
    sha: std::sync::OnceLock<String>,
}

static GCRA: Script = Script {
    source: include_str!("gcra.lua"),
    sha: std::sync::OnceLock::new(),
};

static DAILY_CAP: Script = Script {
    source: include_str!("daily_cap.lua"),
    sha: std::sync::OnceLock::new(),
};

fn stream_id_next(id: &str) -> String {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    format!("{ms}-{}", seq.parse::<u64>().unwrap_or(0).saturating_add(1))
}

fn stream_id_lt(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a) < parse(b)
}

/// A consumer's dedicated connection for blocking reads.
pub struct Reader {
    client: fred::clients::Client,
    keys: Keys,
    consumer: String,
    block: Duration,
}

impl Reader {
    /// Reads up to `count` new entries for this consumer, blocking up to the reader's block
    /// time. An empty result means none arrived.
    ///
    /// # Errors
    /// [`Error::NoGroup`] when the group is gone (Redis restarted or flushed), or a command
    /// error.
    pub async fn read(&self, count: usize) -> Result<Vec<Entry>, Error> {
        let args: Vec<Value> = vec![
            "GROUP".into(),
            self.keys.group.as_str().into(),
            self.consumer.as_str().into(),
            "COUNT".into(),
            (count.max(1) as i64).into(),
            "BLOCK".into(),
            (self.block.as_millis() as i64).into(),
            "STREAMS".into(),
            self.keys.steps.as_str().into(),
            ">".into(),
        ];
        let reply: Value = self
            .client
            .custom(
                CustomCommand::new_static("XREADGROUP", ClusterHash::Offset(6), true),
                args,
            )
            .await
            .map_err(|e| command_error("XREADGROUP", &self.keys.steps, e))?;
        let mut entries = Vec::new();
        for stream in reply.into_array() {
            let mut parts = stream.into_array().into_iter();
            let _key = parts.next();
            entries.extend(parse_entries(
                "XREADGROUP",
                parts.next().unwrap_or(Value::Null),
            )?);
        }
        Ok(entries)
    }

    /// Closes the connection.
    pub async fn close(&self) {
        let _ = self.client.quit().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_ids_compare_numerically() {
        assert!(super::stream_id_lt("9-1", "10-0"));
        assert!(super::stream_id_lt("10-1", "10-2"));
        assert!(!super::stream_id_lt("10-2", "10-2"));
        assert_eq!(super::stream_id_next("10-2"), "10-3");
    }
}
