//! Local servers (`tributary::services`) against the real `redis-server` and PostgreSQL
//! binaries of this machine.
//!
//! The missing-binary case is a unit test inside `services.rs`: it needs the environment
//! override, and changing the process environment would race with the other tests here.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tributary::services::{
    Error, LocalPostgres, LocalRedis, PostgresOptions, RedisOptions, free_port,
};

/// A reply to a Redis command, as much of RESP as these tests need.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Bulk(Option<String>),
    Integer(i64),
}

/// Sends one command over a fresh connection and reads its reply.
async fn redis(port: u16, args: &[&str]) -> Reply {
    let call = async {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Integer(rest.parse().unwrap()),
            "$" => {
                let len: i64 = rest.parse().unwrap();
                if len < 0 {
                    return Reply::Bulk(None);
                }
                let mut body = vec![0; len as usize + 2];
                stream.read_exact(&mut body).await.unwrap();
                body.truncate(len as usize);
                Reply::Bulk(Some(String::from_utf8(body).unwrap()))
            }
            other => panic!("unexpected reply type {other:?} in {line:?}"),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("redis reply in time")
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.to_owned()))
}

fn scratch_dir(kind: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "tributary-services-test-{kind}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

#[tokio::test]
async fn redis_starts_answers_and_loses_data_on_restart_without_persistence() {
    let mut server = LocalRedis::start(RedisOptions::default()).await.unwrap();
    let port = server.port();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    let dir = server.dir().to_path_buf();
    assert!(dir.is_dir());

    assert_eq!(redis(port, &["PING"]).await, Reply::Simple("PONG".into()));
    assert_eq!(
        redis(port, &["SET", "greeting", "hello"]).await,
        Reply::Simple("OK".into())
    );
    assert_eq!(redis(port, &["GET", "greeting"]).await, bulk("hello"));

    server.restart().await.unwrap();
    assert_eq!(server.port(), port, "restart keeps the port");
    assert_eq!(redis(port, &["GET", "greeting"]).await, Reply::Bulk(None));
    assert_eq!(redis(port, &["DBSIZE"]).await, Reply::Integer(0));

    server.kill().await.unwrap();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "killed server still accepts connections"
    );
    drop(server);
    assert!(!dir.exists(), "temporary directory {dir:?} left behind");
}

#[tokio::test]
async fn redis_with_persistence_in_a_given_dir_keeps_data_across_kill_and_restart() {
    let dir = scratch_dir("redis");
    let port = free_port().unwrap();
    let mut server = LocalRedis::start(RedisOptions {
        dir: Some(dir.clone()),
        port: Some(port),
        durable: true,
    })
    .await
    .unwrap();
    assert_eq!(server.port(), port);
    assert_eq!(
        redis(port, &["SET", "kept", "yes"]).await,
        Reply::Simple("OK".into())
    );

    server.kill().await.unwrap();
    server.restart().await.unwrap();
    assert_eq!(redis(port, &["GET", "kept"]).await, bulk("yes"));

    drop(server);
    assert!(dir.join("redis.log").is_file(), "a given directory is kept");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn postgres_starts_creates_a_database_and_keeps_data_across_restart() {
    let mut server = LocalPostgres::start(PostgresOptions::default())
        .await
        .unwrap();
    let port = server.port();
    assert_eq!(
        server.url(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );
    let data_dir = server.data_dir().to_path_buf();

    let url = server.create_database("services_test").await.unwrap();
    assert_eq!(url, server.url_for("services_test"));
    assert_eq!(
        server.create_database("services_test").await.unwrap(),
        url,
        "creating an existing database is a no-op"
    );
    assert!(server.create_database("No-Such;Name").await.is_err());

    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO notes VALUES (1, 'kept across restart')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    server.restart().await.unwrap();
    assert_eq!(server.port(), port, "restart keeps the port");

    let mut conn = PgConnection::connect(&url).await.unwrap();
    let body: String = sqlx::query_scalar("SELECT body FROM notes WHERE id = 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(body, "kept across restart");
    conn.close().await.unwrap();

    server.stop().await.unwrap();
    assert!(
        PgConnection::connect(&url).await.is_err(),
        "stopped server answers"
    );
    drop(server);
    assert!(
        !data_dir.exists(),
        "temporary data directory {data_dir:?} left behind"
    );
}

#[tokio::test]
async fn postgres_kill_then_restart_recovers() {
    // The default, non-durable options: the ones fault tests use.
    let mut server = LocalPostgres::start(PostgresOptions::default())
        .await
        .unwrap();
    let url = server.create_database("crash_test").await.unwrap();

    // Keep a connection open across the kill: its backend is orphaned by the SIGKILL.
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE events (id int PRIMARY KEY)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO events SELECT generate_series(1, 100)")
        .execute(&mut conn)
        .await
        .unwrap();

    // Killed right after the commit was acknowledged.
    let old_pid = server.pid().unwrap();
    server.kill().await.unwrap();
    assert!(server.pid().is_none());
    assert!(
        sqlx::query("SELECT 1").execute(&mut conn).await.is_err(),
        "a connection to a killed server still works"
    );
    drop(conn);

    server.restart().await.unwrap();
    assert_ne!(server.pid(), Some(old_pid));
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 100, "acknowledged commits survive a kill");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn postgres_in_a_given_data_dir_is_initialised_once_and_kept() {
    let data_dir = scratch_dir("pg");
    let options = PostgresOptions {
        data_dir: Some(data_dir.clone()),
        port: None,
        durable: true,
        settings: Vec::new(),
    };
    let server = LocalPostgres::start(options.clone()).await.unwrap();
    assert_eq!(server.data_dir(), data_dir);
    let url = server.create_database("kept").await.unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE marks (id int PRIMARY KEY)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO marks VALUES (7)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    drop(server);
    assert!(
        data_dir.join("PG_VERSION").is_file(),
        "a given data directory is kept"
    );
    assert!(
        !data_dir.join("postmaster.pid").exists(),
        "dropping shuts the server down"
    );

    let server = LocalPostgres::start(options).await.unwrap();
    let mut conn = PgConnection::connect(&server.url_for("kept"))
        .await
        .unwrap();
    let id: i32 = sqlx::query_scalar("SELECT id FROM marks")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(id, 7);
    conn.close().await.unwrap();
    drop(server);
    std::fs::remove_dir_all(&data_dir).unwrap();
}

#[tokio::test]
async fn servers_on_a_fixed_port_that_is_taken_fail_with_their_log() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();

    let err = LocalRedis::start(RedisOptions {
        port: Some(port),
        ..RedisOptions::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::StartFailed { log_tail, .. } if log_tail.contains("Address already in use")),
        "{err}"
    );

    let err = LocalPostgres::start(PostgresOptions {
        port: Some(port),
        ..PostgresOptions::default()
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::StartFailed { log_tail, .. } if log_tail.contains("Address already in use")),
        "{err}"
    );
    drop(taken);
}
