//! Local Redis and PostgreSQL servers, started from the binaries installed on this machine.
//!
//! This module owns everything about running a private `redis-server` or PostgreSQL server as
//! a child process: finding the binaries ([`find_binary`]), picking free loopback ports
//! ([`free_port`]), preparing directories (throwaway ones under the system temp dir, or a
//! persistent one chosen by the caller), `initdb`, spawning, waiting until the server really
//! answers, and killing, stopping and restarting it. Two users rely on it: the integration-test
//! harness (a throwaway server per test; fault tests kill and restart them) and the
//! `tributary dev` command (a private Redis and PostgreSQL kept under a state directory).
//!
//! It knows nothing about workflows, schemas or the engine: it hands out URLs and nothing more.
//!
//! Notes on the machine it runs on:
//! - PostgreSQL refuses to run as root. When the effective uid is 0, `initdb` and `postgres`
//!   run as the `postgres` system user (through [`tokio::process::Command::uid`]/`gid`, no
//!   `unsafe`), and the directories handed to them are owned by that user.
//! - Servers are plain children of this process, in its process group: a Ctrl-C in a terminal
//!   reaches them too. Dropping a handle stops its server (bounded, best effort).
//! - Every wait in here is bounded in time.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Environment variable naming the `redis-server` binary to use, overriding the search.
pub const REDIS_SERVER_ENV: &str = "TRIBUTARY_REDIS_SERVER";
/// Environment variable naming the PostgreSQL bin directory to use, overriding the search.
pub const PG_BINDIR_ENV: &str = "TRIBUTARY_PG_BINDIR";

const REDIS_HINT: &str = "install Debian's redis-server package (apt-get install redis-server), \
     or set TRIBUTARY_REDIS_SERVER to the path of a redis-server binary";
const PG_HINT: &str = "install PostgreSQL (Debian: apt-get install postgresql), or set \
     TRIBUTARY_PG_BINDIR to its bin directory (e.g. /usr/lib/postgresql/15/bin)";

/// Where Debian installs the versioned PostgreSQL server binaries (`<version>/bin`).
const PG_LIB_DIR: &str = "/usr/lib/postgresql";

const REDIS_READY_TIMEOUT: Duration = Duration::from_secs(20);
const PG_READY_TIMEOUT: Duration = Duration::from_secs(30);
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const DROP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a PostgreSQL start keeps retrying while a killed predecessor's processes linger.
const PG_BUSY_RETRY_WINDOW: Duration = Duration::from_secs(15);
/// Tries at finding a free port when the caller did not fix one.
const PORT_ATTEMPTS: u32 = 3;
const POLL: Duration = Duration::from_millis(50);

/// What can go wrong while finding, starting or driving a local server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A server binary is not installed (or not where the override says).
    #[error("cannot find the `{name}` binary (looked for: {}); {hint}", display_paths(.searched))]
    MissingBinary {
        /// The binary looked for, e.g. `redis-server` or `initdb`.
        name: &'static str,
        /// Every path that was tried, in order.
        searched: Vec<PathBuf>,
        /// What to install, and the environment variable that overrides the search.
        hint: &'static str,
    },
    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The server (or `initdb`) exited instead of coming up.
    #[error("{what} failed to start; end of its log:\n{log_tail}")]
    StartFailed {
        /// What was started, with its exit status.
        what: String,
        /// The last lines of its log or output.
        log_tail: String,
    },
    /// The server kept running but did not answer within the time allowed.
    #[error("{what} did not become ready within {waited:?}; end of its log:\n{log_tail}")]
    NotReady {
        /// What was started.
        what: String,
        /// How long it was given.
        waited: Duration,
        /// The last lines of its log.
        log_tail: String,
    },
    /// A helper command (`psql`, `id`, ...) failed or timed out.
    #[error("{what} failed ({status}):\n{output}")]
    CommandFailed {
        /// The command.
        what: String,
        /// Its exit status, or that it timed out.
        status: String,
        /// Its standard error and output.
        output: String,
    },
    /// Running as root, but there is no `postgres` user to run PostgreSQL as.
    #[error(
        "PostgreSQL refuses to run as root and the `postgres` user could not be looked up \
         ({detail}); install PostgreSQL (Debian: apt-get install postgresql), which creates it"
    )]
    NoPostgresUser {
        /// Why the lookup failed.
        detail: String,
    },
    /// A directory on the way to the data directory cannot be entered by the `postgres` user.
    #[error(
        "{} cannot be entered by the postgres user (uid {uid}); make it traversable \
         (chmod o+x) or choose a data directory elsewhere",
        .path.display()
    )]
    NotAccessible {
        /// The directory that lacks the execute permission.
        path: PathBuf,
        /// The uid of the `postgres` user.
        uid: u32,
    },
    /// A database name outside `[a-z0-9_]{1,63}`.
    #[error("invalid database name {name:?}: use 1 to 63 characters from [a-z0-9_]")]
    InvalidDatabaseName {
        /// The rejected name.
        name: String,
    },
}

impl Error {
    fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// Whether the server failed because its port was taken.
    fn is_port_conflict(&self) -> bool {
        matches!(self, Error::StartFailed { log_tail, .. } if log_tail.contains("Address already in use"))
    }

    /// Whether PostgreSQL failed because processes of a killed predecessor still hold the data
    /// directory (shared memory still attached, or the lock file's owner still alive).
    fn is_pg_busy(&self) -> bool {
        matches!(self, Error::StartFailed { log_tail, .. }
            if log_tail.contains("pre-existing shared memory block")
                || (log_tail.contains("lock file") && log_tail.contains("already exists")))
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nowhere".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Binaries and ports
// ---------------------------------------------------------------------------------------------

/// Finds a server binary by name (`redis-server`, `postgres`, `initdb`, `pg_isready`, `psql`...).
///
/// Order: the environment override ([`REDIS_SERVER_ENV`], the path of `redis-server` itself;
/// [`PG_BINDIR_ENV`], the directory holding the PostgreSQL binaries) — which, when set, is the
/// only place looked at — then each absolute directory of `PATH`, then (for PostgreSQL)
/// `/usr/lib/postgresql/<highest version>/bin`, then `/usr/local/bin` and `/usr/bin`.
pub fn find_binary(name: &'static str) -> Result<PathBuf, Error> {
    let var = if is_redis(name) {
        REDIS_SERVER_ENV
    } else {
        PG_BINDIR_ENV
    };
    find_binary_in(
        name,
        std::env::var_os(var).as_deref(),
        std::env::var_os("PATH").as_deref(),
        Path::new(PG_LIB_DIR),
    )
}

fn is_redis(name: &str) -> bool {
    name.starts_with("redis")
}

/// [`find_binary`] with its environment passed in, so that it can be tested without touching
/// the process environment.
fn find_binary_in(
    name: &'static str,
    override_value: Option<&OsStr>,
    path: Option<&OsStr>,
    pg_lib_dir: &Path,
) -> Result<PathBuf, Error> {
    let redis = is_redis(name);
    let hint = if redis { REDIS_HINT } else { PG_HINT };
    if let Some(value) = override_value.filter(|v| !v.is_empty()) {
        let value = Path::new(value);
        let candidate = match (redis, name == "redis-server") {
            (true, true) => value.to_path_buf(),
            // Other Redis tools live next to the overriding redis-server.
            (true, false) => value.with_file_name(name),
            (false, _) => value.join(name),
        };
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        return Err(Error::MissingBinary {
            name,
            searched: vec![candidate],
            hint,
        });
    }

    let mut dirs: Vec<PathBuf> = path
        .map(|p| {
            std::env::split_paths(p)
                .filter(|d| d.is_absolute())
                .collect()
        })
        .unwrap_or_default();
    if !redis && let Some(dir) = highest_pg_bindir(pg_lib_dir) {
        dirs.push(dir);
    }
    dirs.push(PathBuf::from("/usr/local/bin"));
    dirs.push(PathBuf::from("/usr/bin"));

    let mut searched: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let candidate = dir.join(name);
        if searched.contains(&candidate) {
            continue;
        }
        if is_executable(&candidate) {
            return Ok(candidate);
        }
        searched.push(candidate);
    }
    Err(Error::MissingBinary {
        name,
        searched,
        hint,
    })
}

/// `<lib>/<highest numeric version>/bin`, if any.
fn highest_pg_bindir(lib: &Path) -> Option<PathBuf> {
    let entries = fs::read_dir(lib).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version: Vec<u32> = name
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            bin.is_dir().then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A free TCP port on 127.0.0.1: binds port 0, reads the port the kernel chose, and releases it.
///
/// Another process may take the port before it is used; the servers here retry with a new one.
pub fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("binding 127.0.0.1:0 to find a free port", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the address of a bound socket", e))?;
    Ok(addr.port())
}

// ---------------------------------------------------------------------------------------------
// Shared helpers: directories, logs, processes
// ---------------------------------------------------------------------------------------------

/// A directory under the system temp dir, removed (best effort) when dropped.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<temp>/tributary-<kind>-<uuid>`, mode 0755 so that other users (the `postgres`
    /// user) can traverse it.
    fn new(kind: &str) -> Result<Self, Error> {
        let base = std::path::absolute(std::env::temp_dir())
            .map_err(|e| Error::io("resolving the temp directory", e))?;
        let dir = base.join(format!(
            "tributary-{kind}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let guard = TempDir(dir);
        set_mode(&guard.0, 0o755)?;
        Ok(guard)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A server that was just killed may still be closing files: try twice.
        for _ in 0..2 {
            match fs::remove_dir_all(&self.0) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                _ => return,
            }
        }
        tracing::warn!(dir = %self.0.display(), "could not remove a temporary server directory");
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {mode:o} {}", path.display()), e))
}

fn chown_to(path: &Path, user: Option<PgUser>) -> Result<(), Error> {
    match user {
        Some(u) => std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
            .map_err(|e| Error::io(format!("chown {}:{} {}", u.uid, u.gid, path.display()), e)),
        None => Ok(()),
    }
}

/// Creates `dir` (parents with default permissions, `dir` itself with `mode`) if missing.
fn ensure_dir(dir: &Path, mode: u32) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(Error::io(format!("creating {}", dir.display()), e))
        }
        _ => Ok(()),
    }
}

/// Opens `path` for appending, returning the file and its current length (where this run's
/// output starts).
fn open_log(path: &Path) -> Result<(File, u64), Error> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening log {}", path.display()), e))?;
    let start = file
        .metadata()
        .map_err(|e| Error::io(format!("reading log {}", path.display()), e))?
        .len();
    Ok((file, start))
}

fn log_stdio(file: &File, path: &Path) -> Result<(Stdio, Stdio), Error> {
    let clone = |f: &File| {
        f.try_clone()
            .map_err(|e| Error::io(format!("duplicating log {}", path.display()), e))
    };
    Ok((Stdio::from(clone(file)?), Stdio::from(clone(file)?)))
}

/// The last lines written to `path` since byte offset `from`, followed by the log's path.
fn log_tail(path: &Path, from: u64) -> String {
    const MAX_BYTES: u64 = 8 * 1024;
    const MAX_LINES: usize = 40;
    let read = || -> io::Result<Vec<u8>> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let start = from.max(len.saturating_sub(MAX_BYTES)).min(len);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        file.take(MAX_BYTES).read_to_end(&mut buf)?;
        Ok(buf)
    };
    let body = match read() {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(MAX_LINES)..].join("\n");
            if tail.trim().is_empty() {
                "(nothing logged)".to_owned()
            } else {
                tail
            }
        }
        Err(e) => format!("(cannot read the log: {e})"),
    };
    format!("{body}\n(log: {})", path.display())
}

fn output_tail(output: &std::process::Output) -> String {
    const MAX_LINES: usize = 40;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(MAX_LINES)..].join("\n")
}

/// Runs a short helper command to completion, capturing its output; killed after `limit`.
async fn run_captured(
    cmd: &mut Command,
    what: &str,
    limit: Duration,
) -> Result<std::process::Output, Error> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(limit, cmd.output()).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(Error::io(format!("running {what}"), e)),
        Err(_) => Err(Error::CommandFailed {
            what: what.to_owned(),
            status: format!("timed out after {limit:?}"),
            output: String::new(),
        }),
    }
}

/// Kills `child` with SIGKILL (unless it already exited) and reaps it, bounded.
async fn kill_and_wait(child: &mut Child) -> io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    if let Err(e) = child.start_kill() {
        // It may have exited in between.
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        return Err(e);
    }
    match tokio::time::timeout(KILL_TIMEOUT, child.wait()).await {
        Ok(status) => status.map(drop),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("process did not exit within {KILL_TIMEOUT:?} of SIGKILL"),
        )),
    }
}

/// The `kill` utility: signals other than SIGKILL need it, since `unsafe` (libc) is denied.
fn kill_utility() -> &'static str {
    ["/usr/bin/kill", "/bin/kill"]
        .into_iter()
        .find(|p| is_executable(Path::new(p)))
        .unwrap_or("kill")
}

/// Sends `signal` (a name such as `INT`) to `pid`, bounded.
async fn send_signal(pid: u32, signal: &str) -> Result<(), Error> {
    let mut cmd = Command::new(kill_utility());
    cmd.args(["-s", signal, &pid.to_string()]);
    let what = format!("kill -s {signal} {pid}");
    let output = run_captured(&mut cmd, &what, COMMAND_TIMEOUT).await?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::CommandFailed {
            what,
            status: output.status.to_string(),
            output: output_tail(&output),
        })
    }
}

/// Blocking variant of [`send_signal`] for `Drop`.
fn send_signal_blocking(pid: u32, signal: &str) -> bool {
    std::process::Command::new(kill_utility())
        .args(["-s", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// State and parent pid of a process, from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may itself contain spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is a live (not zombie) process.
fn process_alive(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
}

/// The pids of `parent`'s children.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Waits (bounded) until none of `pids` is alive any more.
async fn wait_until_gone(pids: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !pids.iter().any(|&pid| process_alive(pid)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Why a just-spawned server is not up yet.
enum Exited {
    Status(ExitStatus),
    Unknown(io::Error),
}

impl std::fmt::Display for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exited::Status(status) => write!(f, "{status}"),
            Exited::Unknown(e) => write!(f, "status unknown: {e}"),
        }
    }
}

/// `Some` when the child has exited (or cannot be asked).
/// Polls `ready` until it holds (bounded by `timeout`). If the server exits first or never
/// becomes ready, it is stopped, `slot` is emptied, and the error carries its new log lines.
async fn wait_ready<F, Fut>(
    slot: &mut Option<Child>,
    what: String,
    timeout: Duration,
    log_file: &Path,
    log_start: u64,
    mut ready: F,
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        let Some(child) = slot.as_mut() else {
            return Err(Error::StartFailed {
                what,
                log_tail: log_tail(log_file, log_start),
            });
        };
        if let Some(exited) = has_exited(child) {
            *slot = None;
            return Err(Error::StartFailed {
                what: format!("{what} (exited: {exited})"),
                log_tail: log_tail(log_file, log_start),
            });
        }
        if ready().await {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let _ = kill_and_wait(child).await;
            *slot = None;
            return Err(Error::NotReady {
                what,
                waited: timeout,
                log_tail: log_tail(log_file, log_start),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

fn has_exited(child: &mut Child) -> Option<Exited> {
    match child.try_wait() {
        Ok(Some(status)) => Some(Exited::Status(status)),
        Ok(None) => None,
        Err(e) => Some(Exited::Unknown(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

/// How to run a [`LocalRedis`].
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// Working directory (data and `redis.log`). `None`: a fresh temp dir, removed on drop.
    pub dir: Option<PathBuf>,
    /// Port on 127.0.0.1. `None`: a free port (retried if another process takes it first).
    pub port: Option<u16>,
    /// `true`: append-only file with `appendfsync everysec` (acknowledged writes survive a
    /// kill). `false`: no persistence at all (`--save "" --appendonly no`), so a restart
    /// starts empty.
    pub durable: bool,
}

/// A `redis-server` child process listening on 127.0.0.1.
///
/// Dropping it kills the server (SIGKILL) and removes its directory if it was temporary.
#[derive(Debug)]
pub struct LocalRedis {
    bin: PathBuf,
    dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    durable: bool,
    child: Option<Child>,
    // Declared last: removed after `Drop::drop` has killed the server.
    _temp: Option<TempDir>,
}

impl LocalRedis {
    /// Starts `redis-server` and waits (at most 20 s) until it answers `PING` with `+PONG` (and
    /// `INFO` confirms the answer came from this very process).
    pub async fn start(opts: RedisOptions) -> Result<Self, Error> {
        let bin = find_binary("redis-server")?;
        let (dir, temp) = match opts.dir {
            Some(dir) => {
                let dir = std::path::absolute(&dir)
                    .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
                fs::create_dir_all(&dir)
                    .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                (dir, None)
            }
            None => {
                let temp = TempDir::new("redis")?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let mut redis = LocalRedis {
            bin,
            log_file: dir.join("redis.log"),
            dir,
            port: opts.port.unwrap_or(0),
            durable: opts.durable,
            child: None,
            _temp: temp,
        };
        redis.launch(opts.port.is_some()).await?;
        Ok(redis)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its working directory (data files and `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file the server's output goes to (appended to across restarts).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Kills the server with SIGKILL and waits for it to exit. Does nothing if it is not
    /// running.
    pub async fn kill(&mut self) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            kill_and_wait(&mut child)
                .await
                .map_err(|e| Error::io(format!("killing redis-server on port {}", self.port), e))?;
            tracing::debug!(port = self.port, "redis-server killed");
        }
        Ok(())
    }

    /// Kills the server and starts it again with the same port, directory and options. With
    /// `durable: false` all data is gone afterwards.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.kill().await?;
        self.launch(true).await
    }

    /// Spawns and waits for readiness, retrying with a new port when the port was not fixed
    /// and turned out to be taken.
    async fn launch(&mut self, port_fixed: bool) -> Result<(), Error> {
        let mut attempt = 1;
        loop {
            if !port_fixed {
                self.port = free_port()?;
            }
            match self.spawn_and_wait().await {
                Err(e) if !port_fixed && attempt < PORT_ATTEMPTS && e.is_port_conflict() => {
                    tracing::debug!(port = self.port, "redis port taken, trying another");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn spawn_and_wait(&mut self) -> Result<(), Error> {
        let (log, log_start) = open_log(&self.log_file)?;
        let (stdout, stderr) = log_stdio(&log, &self.log_file)?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--daemonize", "no", "--logfile", ""])
            .arg("--dir")
            .arg(&self.dir);
        if self.durable {
            cmd.args(["--appendonly", "yes", "--appendfsync", "everysec"]);
        } else {
            cmd.args(["--save", "", "--appendonly", "no"]);
        }
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let what = format!("redis-server on port {}", self.port);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("spawning {}", self.bin.display()), e))?;
        let pid = child.id();
        self.child = Some(child);
        let port = self.port;
        wait_ready(
            &mut self.child,
            what,
            REDIS_READY_TIMEOUT,
            &self.log_file,
            log_start,
            || redis_answers(port, pid),
        )
        .await?;
        tracing::info!(port = self.port, dir = %self.dir.display(), "redis-server ready");
        Ok(())
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// Whether a server on `port` answers `PING` with `+PONG` and, when `pid` is given, reports
/// that process id in `INFO server` (so that another server that grabbed the port does not
/// pass for ours).
async fn redis_answers(port: u16, pid: Option<u32>) -> bool {
    let probe = async {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
        let mut stream = BufReader::new(stream);
        stream.get_mut().write_all(b"PING\r\n").await.ok()?;
        let mut line = String::new();
        stream.read_line(&mut line).await.ok()?;
        if !line.starts_with("+PONG") {
            return None;
        }
        let Some(pid) = pid else {
            return Some(());
        };
        stream.get_mut().write_all(b"INFO server\r\n").await.ok()?;
        line.clear();
        stream.read_line(&mut line).await.ok()?;
        let len: usize = line.strip_prefix('$')?.trim().parse().ok()?;
        if len > 1 << 20 {
            return None;
        }
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await.ok()?;
        let expected = format!("process_id:{pid}");
        String::from_utf8_lossy(&body)
            .lines()
            .any(|l| l.trim() == expected)
            .then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(()))
    )
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// How to run a [`LocalPostgres`].
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// The data directory; `initdb` runs only if it holds no `PG_VERSION` yet. `None`: a fresh
    /// temp dir, removed on drop.
    pub data_dir: Option<PathBuf>,
    /// Port on 127.0.0.1. `None`: a free port (retried if another process takes it first).
    pub port: Option<u16>,
    /// `true`: PostgreSQL's defaults (fsync on): commits survive a machine crash.
    /// `false`: `fsync=off` and `full_page_writes=off`: nothing is flushed to disk, which is
    /// fast, yet every acknowledged commit survives [`LocalPostgres::kill`] (a process crash;
    /// the kernel keeps what was written). `synchronous_commit` deliberately stays on: with it
    /// off, a commit acknowledged just before a kill is lost, which would break fault tests.
    pub durable: bool,
    /// Further server settings, `name=value`, each passed as `-c` (the benchmark preloads
    /// `pg_stat_statements` with them).
    pub settings: Vec<String>,
}

/// The `postgres` system user that PostgreSQL runs as when we are root.
#[derive(Debug, Clone, Copy)]
struct PgUser {
    uid: u32,
    gid: u32,
}

/// The PostgreSQL binaries used by one server.
#[derive(Debug, Clone)]
struct PgBins {
    postgres: PathBuf,
    /// The real directory of `postgres`: its tools are taken from there first, so that their
    /// version matches the server's.
    dir: Option<PathBuf>,
}

impl PgBins {
    fn resolve() -> Result<Self, Error> {
        let postgres = find_binary("postgres")?;
        let dir = fs::canonicalize(&postgres)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        Ok(PgBins { postgres, dir })
    }

    fn tool(&self, name: &'static str) -> Result<PathBuf, Error> {
        if let Some(dir) = &self.dir {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
        find_binary(name)
    }
}

/// A PostgreSQL server (`postgres`) child process listening on 127.0.0.1, user `postgres`,
/// `trust` authentication.
///
/// Its log goes to `<data_dir>/log/postgres.log`; its Unix socket to a private temp dir.
/// Dropping it shuts the server down (immediate shutdown for a temp data dir, fast shutdown
/// for a caller's data dir; SIGKILL after 10 s) and removes its temp dirs.
#[derive(Debug)]
pub struct LocalPostgres {
    bins: PgBins,
    user: Option<PgUser>,
    data_dir: PathBuf,
    temp_data: bool,
    socket_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    durable: bool,
    settings: Vec<String>,
    child: Option<Child>,
    // Declared last: removed after `Drop::drop` has stopped the server. Holds the socket
    // directory, and the data directory when it is temporary.
    _runtime: TempDir,
}

impl LocalPostgres {
    /// Initialises the data directory if needed, starts `postgres` and waits (at most 30 s)
    /// until `pg_isready` succeeds and the server's `postmaster.pid` says it is ready.
    ///
    /// As root, `initdb` and `postgres` run as the `postgres` user and the data directory is
    /// handed to it (mode 0700); every directory above it must be traversable by that user.
    pub async fn start(opts: PostgresOptions) -> Result<Self, Error> {
        let bins = PgBins::resolve()?;
        let user = postgres_user().await?;
        let runtime = TempDir::new("pg")?;

        let socket_dir = runtime.path().join("run");
        ensure_dir(&socket_dir, 0o700)?;
        chown_to(&socket_dir, user)?;

        let temp_data = opts.data_dir.is_none();
        let data_dir = match opts.data_dir {
            Some(dir) => std::path::absolute(&dir)
                .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?,
            None => runtime.path().join("data"),
        };
        ensure_dir(&data_dir, 0o700)?;
        let initialised = data_dir.join("PG_VERSION").exists();
        if !initialised {
            chown_to(&data_dir, user)?;
            set_mode(&data_dir, 0o700)?;
        }
        if let Some(user) = user {
            check_traversable(&data_dir, user)?;
        }

        let mut pg = LocalPostgres {
            log_file: data_dir.join("log").join("postgres.log"),
            bins,
            user,
            data_dir,
            temp_data,
            socket_dir,
            port: opts.port.unwrap_or(0),
            durable: opts.durable,
            settings: opts.settings,
            child: None,
            _runtime: runtime,
        };
        if !initialised {
            pg.initdb().await?;
        }
        let log_dir = pg.data_dir.join("log");
        ensure_dir(&log_dir, 0o700)?;
        chown_to(&log_dir, user)?;

        pg.launch(opts.port.is_some()).await?;
        Ok(pg)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// `postgres://postgres@127.0.0.1:PORT/<database>`.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file the server logs to (appended to across restarts).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Creates database `name` (if it does not exist yet) with `psql`, and returns its URL.
    /// `name` must match `[a-z0-9_]{1,63}`.
    pub async fn create_database(&self, name: &str) -> Result<String, Error> {
        validate_database_name(name)?;
        let exists = self
            .psql(&format!(
                "SELECT 1 FROM pg_database WHERE datname = '{name}'"
            ))
            .await?;
        if exists.trim() != "1" {
            match self.psql(&format!("CREATE DATABASE \"{name}\"")).await {
                Err(Error::CommandFailed { output, .. }) if output.contains("already exists") => {}
                other => {
                    other?;
                }
            }
        }
        Ok(self.url_for(name))
    }

    /// Stops the server gracefully (fast shutdown: SIGINT, as `pg_ctl stop -m fast` sends) and
    /// waits for it, at most 30 s, then falls back to SIGKILL. Does nothing if it is not
    /// running.
    pub async fn stop(&mut self) -> Result<(), Error> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if has_exited(&mut child).is_some() {
            return Ok(());
        }
        if let Some(pid) = child.id() {
            match send_signal(pid, "INT").await {
                Ok(()) => match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
                    Ok(Ok(_)) => {
                        tracing::debug!(port = self.port, "postgres stopped");
                        return Ok(());
                    }
                    Ok(Err(e)) => {
                        return Err(Error::io(
                            format!("waiting for postgres on port {} to stop", self.port),
                            e,
                        ));
                    }
                    Err(_) => tracing::warn!(
                        port = self.port,
                        "postgres did not stop within {STOP_TIMEOUT:?}; killing it"
                    ),
                },
                Err(e) => {
                    tracing::warn!(port = self.port, error = %e, "cannot signal postgres; killing it")
                }
            }
        }
        self.kill_child(child).await
    }

    /// Kills the postmaster with SIGKILL (a crash, as far as PostgreSQL is concerned), waits
    /// for it, then waits (at most 10 s) for its orphaned backends to notice and exit, so that
    /// a following [`restart`](Self::restart) finds the data directory free. Does nothing if
    /// it is not running.
    pub async fn kill(&mut self) -> Result<(), Error> {
        match self.child.take() {
            Some(child) => self.kill_child(child).await,
            None => Ok(()),
        }
    }

    /// Stops the server (fast shutdown) if it runs, and starts it again on the same port and
    /// data directory: data is kept. After a [`kill`](Self::kill), this runs crash recovery.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.stop().await?;
        self.launch(true).await
    }

    async fn kill_child(&self, mut child: Child) -> Result<(), Error> {
        let backends = child.id().map(children_of).unwrap_or_default();
        kill_and_wait(&mut child)
            .await
            .map_err(|e| Error::io(format!("killing postgres on port {}", self.port), e))?;
        if !wait_until_gone(&backends, KILL_TIMEOUT).await {
            tracing::warn!(
                port = self.port,
                "backends of a killed postgres still run after {KILL_TIMEOUT:?}"
            );
        }
        tracing::debug!(port = self.port, "postgres killed");
        Ok(())
    }

    async fn initdb(&self) -> Result<(), Error> {
        let initdb = self.bins.tool("initdb")?;
        let mut cmd = Command::new(&initdb);
        cmd.arg("-D").arg(&self.data_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ]);
        if !self.durable {
            cmd.arg("-N");
        }
        cmd.current_dir("/");
        as_user(&mut cmd, self.user);
        let what = format!("initdb -D {}", self.data_dir.display());
        let output = run_captured(&mut cmd, &what, INITDB_TIMEOUT).await?;
        if !output.status.success() {
            return Err(Error::StartFailed {
                what: format!("{what} (exited: {})", output.status),
                log_tail: output_tail(&output),
            });
        }
        tracing::debug!(data_dir = %self.data_dir.display(), "initdb done");
        Ok(())
    }

    /// Spawns and waits for readiness, retrying with a new port when the port was not fixed
    /// and turned out to be taken, and retrying (bounded) while a killed predecessor's
    /// processes still hold the data directory.
    async fn launch(&mut self, port_fixed: bool) -> Result<(), Error> {
        let busy_deadline = Instant::now() + PG_BUSY_RETRY_WINDOW;
        let mut port_attempt = 1;
        if !port_fixed {
            self.port = free_port()?;
        }
        loop {
            match self.spawn_and_wait().await {
                Err(e) if !port_fixed && port_attempt < PORT_ATTEMPTS && e.is_port_conflict() => {
                    tracing::debug!(port = self.port, "postgres port taken, trying another");
                    port_attempt += 1;
                    self.port = free_port()?;
                }
                Err(e)
                    if e.is_pg_busy()
                        && !live_postmaster(&self.data_dir)
                        && Instant::now() < busy_deadline =>
                {
                    tracing::debug!(port = self.port, "data directory still busy, retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => return other,
            }
        }
    }

    async fn spawn_and_wait(&mut self) -> Result<(), Error> {
        let pg_isready = self.bins.tool("pg_isready")?;
        let (log, log_start) = open_log(&self.log_file)?;
        chown_to(&self.log_file, self.user)?;
        let (stdout, stderr) = log_stdio(&log, &self.log_file)?;

        let mut cmd = Command::new(&self.bins.postgres);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.socket_dir);
        let mut settings = vec![
            "listen_addresses=127.0.0.1",
            "max_connections=200",
            "lc_messages=C",
        ];
        if !self.durable {
            // Not `synchronous_commit=off`: see `PostgresOptions::durable`.
            settings.extend(["fsync=off", "full_page_writes=off"]);
        }
        for setting in settings
            .into_iter()
            .chain(self.settings.iter().map(String::as_str))
        {
            cmd.arg("-c").arg(setting);
        }
        cmd.current_dir("/")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        as_user(&mut cmd, self.user);
        let what = format!("postgres -D {} -p {}", self.data_dir.display(), self.port);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("spawning {}", self.bins.postgres.display()), e))?;
        let pid = child.id();
        self.child = Some(child);
        let (data_dir, port) = (self.data_dir.clone(), self.port);
        wait_ready(
            &mut self.child,
            what,
            PG_READY_TIMEOUT,
            &self.log_file,
            log_start,
            || {
                let (data_dir, pg_isready) = (data_dir.clone(), pg_isready.clone());
                async move {
                    pid.is_some_and(|pid| postmaster_ready(&data_dir, pid))
                        && pg_isready_ok(&pg_isready, port).await
                }
            },
        )
        .await?;
        tracing::info!(port = self.port, data_dir = %self.data_dir.display(), "postgres ready");
        Ok(())
    }

    /// Runs one SQL command with `psql` against database `postgres`; returns its unaligned,
    /// tuples-only output.
    async fn psql(&self, sql: &str) -> Result<String, Error> {
        let psql = self.bins.tool("psql")?;
        let mut cmd = Command::new(&psql);
        cmd.args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10");
        let what = format!("psql -p {} -c {sql:?}", self.port);
        let output = run_captured(&mut cmd, &what, COMMAND_TIMEOUT).await?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(Error::CommandFailed {
                what,
                status: output.status.to_string(),
                output: output_tail(&output),
            })
        }
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        // Immediate shutdown (SIGQUIT) for throwaway data, fast shutdown (SIGINT) for a
        // caller's data directory. Either way the postmaster removes its shared memory, which
        // a SIGKILL would leak.
        let signal = if self.temp_data { "QUIT" } else { "INT" };
        let signalled = child
            .id()
            .is_some_and(|pid| send_signal_blocking(pid, signal));
        let deadline = Instant::now() + DROP_TIMEOUT;
        while signalled && Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.start_kill();
        }
    }
}

/// Whether `<data_dir>/postmaster.pid` names a live process: another server owns the data
/// directory, and waiting will not help.
fn live_postmaster(data_dir: &Path) -> bool {
    fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
        .is_some_and(process_alive)
}

/// Whether `<data_dir>/postmaster.pid` names `pid` and says `ready` (PostgreSQL writes its
/// status on line 8 once it accepts connections, which implies it bound its port).
fn postmaster_ready(data_dir: &Path, pid: u32) -> bool {
    let Ok(text) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.first().is_some_and(|l| l.trim() == pid.to_string())
        && lines.get(7).is_some_and(|l| l.trim() == "ready")
}

async fn pg_isready_ok(pg_isready: &Path, port: u16) -> bool {
    let mut cmd = Command::new(pg_isready);
    cmd.args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-t", "2"]);
    run_captured(&mut cmd, "pg_isready", Duration::from_secs(5))
        .await
        .is_ok_and(|output| output.status.success())
}

fn as_user(cmd: &mut Command, user: Option<PgUser>) {
    if let Some(user) = user {
        cmd.gid(user.gid).uid(user.uid);
    }
}

fn validate_database_name(name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidDatabaseName {
            name: name.to_owned(),
        })
    }
}

/// Every directory above `dir` must let `user` through (owner, group or other execute bit, as
/// the spawned process has only the user's primary group).
fn check_traversable(dir: &Path, user: PgUser) -> Result<(), Error> {
    for ancestor in dir.ancestors().skip(1) {
        let meta = fs::metadata(ancestor)
            .map_err(|e| Error::io(format!("inspecting {}", ancestor.display()), e))?;
        let mode = meta.mode();
        let bit = if meta.uid() == user.uid {
            0o100
        } else if meta.gid() == user.gid {
            0o010
        } else {
            0o001
        };
        if mode & bit == 0 {
            return Err(Error::NotAccessible {
                path: ancestor.to_path_buf(),
                uid: user.uid,
            });
        }
    }
    Ok(())
}

/// The effective uid of this process, from `/proc/self/status`, else from `id -u`.
async fn effective_uid() -> Result<u32, Error> {
    let from_proc = fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
    });
    match from_proc {
        Some(uid) => Ok(uid),
        None => id_number(&["-u"]).await,
    }
}

/// Runs `id <args>` and parses the number it prints.
async fn id_number(args: &[&str]) -> Result<u32, Error> {
    let what = format!("id {}", args.join(" "));
    let mut cmd = Command::new("id");
    cmd.args(args);
    let output = run_captured(&mut cmd, &what, COMMAND_TIMEOUT).await?;
    let text = String::from_utf8_lossy(&output.stdout);
    match (output.status.success(), text.trim().parse()) {
        (true, Ok(n)) => Ok(n),
        _ => Err(Error::CommandFailed {
            what,
            status: output.status.to_string(),
            output: output_tail(&output),
        }),
    }
}

/// `Some(postgres user)` when running as root (PostgreSQL must then be run as that user).
async fn postgres_user() -> Result<Option<PgUser>, Error> {
    if effective_uid().await? != 0 {
        return Ok(None);
    }
    let lookup = async {
        Ok::<_, Error>(PgUser {
            uid: id_number(&["-u", "postgres"]).await?,
            gid: id_number(&["-g", "postgres"]).await?,
        })
    };
    match lookup.await {
        Ok(user) if user.uid != 0 => Ok(Some(user)),
        Ok(_) => Err(Error::NoPostgresUser {
            detail: "the postgres user has uid 0".to_owned(),
        }),
        Err(e) => Err(Error::NoPostgresUser {
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_gives_an_error_naming_what_to_install() {
        let nowhere = Path::new("/nonexistent/tributary");

        let err = find_binary_in(
            "redis-server",
            Some(OsStr::new("/nonexistent/tributary/redis-server")),
            None,
            nowhere,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::MissingBinary { name: "redis-server", searched, .. }
                if searched == &[PathBuf::from("/nonexistent/tributary/redis-server")]),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("install Debian's redis-server package"),
            "{message}"
        );
        assert!(message.contains(REDIS_SERVER_ENV), "{message}");
        assert!(
            message.contains("/nonexistent/tributary/redis-server"),
            "{message}"
        );

        let err = find_binary_in("initdb", Some(nowhere.as_os_str()), None, nowhere).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::MissingBinary { name: "initdb", .. }));
        assert!(
            message.contains("install PostgreSQL (Debian: "),
            "{message}"
        );
        assert!(message.contains(PG_BINDIR_ENV), "{message}");
        assert!(
            message.contains("/nonexistent/tributary/initdb"),
            "{message}"
        );
    }

    #[test]
    fn binaries_are_found_on_path_then_in_the_highest_postgresql_version() {
        let root = TempDir::new("find-binary-test").unwrap();
        let make = |rel: &str| {
            let p = root.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, "#!/bin/sh\n").unwrap();
            set_mode(&p, 0o755).unwrap();
            p
        };
        let on_path = make("path/redis-server");
        make("lib/9.6/bin/postgres");
        let newest = make("lib/15/bin/postgres");
        fs::create_dir_all(root.path().join("lib/not-a-version/bin")).unwrap();
        let not_executable = root.path().join("path/postgres");
        fs::write(&not_executable, "").unwrap();

        let path = root.path().join("path").into_os_string();
        let lib = root.path().join("lib");
        assert_eq!(
            find_binary_in("redis-server", None, Some(&path), &lib).unwrap(),
            on_path
        );
        assert_eq!(
            find_binary_in("postgres", None, Some(&path), &lib).unwrap(),
            newest
        );
        assert_eq!(
            find_binary_in(
                "postgres",
                Some(lib.join("9.6/bin").as_os_str()),
                None,
                &lib
            )
            .unwrap(),
            lib.join("9.6/bin/postgres")
        );
    }

    #[test]
    fn database_names_are_limited_to_lowercase_digits_and_underscores() {
        assert!(validate_database_name("tributary_test_1").is_ok());
        for bad in [
            "",
            "Upper",
            "semi;colon",
            "quote'",
            "dash-ed",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(
                    validate_database_name(bad),
                    Err(Error::InvalidDatabaseName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn proc_stat_reads_this_process() {
        let me = std::process::id();
        assert!(process_alive(me));
        let (_, ppid) = proc_stat(me).unwrap();
        assert!(children_of(ppid).contains(&me));
    }
}
