//! The secrets provider: GCP Secret Manager against a local fake of its REST API (wiremock,
//! on loopback, anonymous credentials), and the env/file fallback in a private directory.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;
use tributary::config::Config;
use tributary::secrets::{
    Command, Error, Provider, Secret, Secrets, SecretsConfig, run_command, run_command_with_input,
};
use tributary::workflow::StepError;
use wiremock::matchers::{body_partial_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PROJECT: &str = "test-project";
const CANARY: &str = "canary-9f3e2a71-do-not-print";

fn gcp_config(server: &MockServer, cache_ttl: Duration) -> SecretsConfig {
    SecretsConfig {
        provider: Provider::Gcp,
        project: Some(PROJECT.into()),
        cache_ttl,
        endpoint: Some(server.uri()),
        ..SecretsConfig::default()
    }
}

async fn gcp(server: &MockServer, cache_ttl: Duration) -> Secrets {
    Secrets::from_config(&gcp_config(server, cache_ttl))
        .await
        .unwrap()
}

fn access_path(id: &str) -> String {
    format!("/v1/projects/{PROJECT}/secrets/{id}/versions/latest:access")
}

/// Secret Manager's reply to `…/versions/latest:access`.
fn version(id: &str, number: u32, value: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "name": format!("projects/{PROJECT}/secrets/{id}/versions/{number}"),
        "payload": { "data": BASE64.encode(value) },
    }))
}

/// A Google API error body, as Secret Manager sends it.
fn google_error(http: u16, status: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(http).set_body_json(json!({
        "error": { "code": http, "message": message, "status": status }
    }))
}

async fn command_output(secrets: &Secrets, command: Command) -> Result<String, Error> {
    let mut out = Vec::new();
    run_command(secrets, command, &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

fn get(id: &str, show: bool) -> Command {
    Command::Get {
        id: id.into(),
        show,
    }
}

/// A private directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tributary-secrets-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn env_config(dir: Option<&TempDir>) -> SecretsConfig {
    SecretsConfig {
        dir: dir.map(|d| d.0.clone()),
        ..SecretsConfig::default()
    }
}

/// An environment of fixed variables.
fn env_of(
    pairs: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

// ---- GCP Secret Manager ----

#[tokio::test]
async fn gcp_get_returns_the_latest_version_decoded_from_base64() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(access_path("comtrade-key")))
        .respond_with(version("comtrade-key", 3, "s3cr3t-value"))
        .expect(1)
        .mount(&server)
        .await;
    let secrets = gcp(&server, Duration::from_secs(300)).await;
    let secret = secrets.get("comtrade-key").await.unwrap();
    assert_eq!(secret.expose(), "s3cr3t-value");
    assert_eq!(secrets.describe(), format!("gcp project {PROJECT}"));
}

#[tokio::test]
async fn gcp_get_within_the_ttl_is_served_from_the_cache() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(access_path("comtrade-key")))
        .respond_with(version("comtrade-key", 1, "v1"))
        .expect(1)
        .mount(&server)
        .await;
    let secrets = gcp(&server, Duration::from_secs(3600)).await;
    assert_eq!(secrets.get("comtrade-key").await.unwrap().expose(), "v1");
    // A clone shares the cache.
    let clone = secrets.clone();
    assert_eq!(clone.get("comtrade-key").await.unwrap().expose(), "v1");
    assert_eq!(secrets.get("comtrade-key").await.unwrap().expose(), "v1");
}

#[tokio::test]
async fn gcp_get_after_the_ttl_reads_secret_manager_again() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(access_path("rotating")))
        .respond_with(version("rotating", 1, "old"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    let ttl = Duration::from_millis(20);
    let secrets = gcp(&server, ttl).await;
    assert_eq!(secrets.get("rotating").await.unwrap().expose(), "old");
    Mock::given(method("GET"))
        .and(path(access_path("rotating")))
        .respond_with(version("rotating", 2, "new"))
        .expect(1)
        .mount(&server)
        .await;
    // Not waiting for a condition: letting the TTL run out is the behaviour under test.
    tokio::time::sleep(ttl).await;
    assert_eq!(secrets.get("rotating").await.unwrap().expose(), "new");
}

#[tokio::test]
async fn a_zero_ttl_turns_the_cache_off() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(access_path("k")))
        .respond_with(version("k", 1, "v"))
        .expect(2)
        .mount(&server)
        .await;
    let secrets = gcp(&server, Duration::ZERO).await;
    secrets.get("k").await.unwrap();
    secrets.get("k").await.unwrap();
}

#[tokio::test]
async fn gcp_not_found_is_an_error_naming_the_id_and_the_project() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(access_path("comtrade-key")))
        .respond_with(google_error(
            404,
            "NOT_FOUND",
            "Secret [projects/123/secrets/comtrade-key] not found or has no versions.",
        ))
        .mount(&server)
        .await;
    let secrets = gcp(&server, Duration::from_secs(300)).await;
    let e = secrets.get("comtrade-key").await.unwrap_err();
    assert!(
        matches!(&e, Error::NotFound { id, looked_in } if id == "comtrade-key" && looked_in.contains(PROJECT)),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(
        message
            .starts_with("secret \"comtrade-key\" not found: looked in gcp project test-project"),
        "{message}"
    );
    assert!(!StepError::from(e).is_retryable());
}

#[tokio::test]
async fn gcp_permission_denied_is_fatal_and_names_the_status() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(access_path("comtrade-key")))
        .respond_with(google_error(
            403,
            "PERMISSION_DENIED",
            "Permission 'secretmanager.versions.access' denied for resource",
        ))
        .mount(&server)
        .await;
    let secrets = gcp(&server, Duration::from_secs(300)).await;
    let e = secrets.get("comtrade-key").await.unwrap_err();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    assert!(!e.is_retryable());
    let message = e.to_string();
    assert!(
        message.contains("PERMISSION_DENIED (HTTP 403)"),
        "{message}"
    );
    assert!(
        message.contains("secretmanager.versions.access"),
        "{message}"
    );
    assert!(
        message.contains("comtrade-key") && message.contains(PROJECT),
        "{message}"
    );
    let step = StepError::from(e);
    assert!(!step.is_retryable(), "{step}");
}

#[tokio::test]
async fn gcp_unavailable_is_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(access_path("google-says")))
        .respond_with(google_error(
            503,
            "UNAVAILABLE",
            "The service is currently unavailable.",
        ))
        .mount(&server)
        .await;
    // A load balancer's 503 has no Google error body.
    Mock::given(method("GET"))
        .and(path(access_path("proxy-says")))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream connect error"))
        .mount(&server)
        .await;
    let secrets = gcp(&server, Duration::from_secs(300)).await;
    let e = secrets.get("google-says").await.unwrap_err();
    assert!(e.to_string().contains("UNAVAILABLE (HTTP 503)"), "{e}");
    assert!(StepError::from(e).is_retryable());
    let e = secrets.get("proxy-says").await.unwrap_err();
    assert!(e.to_string().contains("HTTP 503"), "{e}");
    assert!(StepError::from(e).is_retryable());
}

#[tokio::test]
async fn a_connection_dropped_by_secret_manager_is_retryable() {
    // A server that accepts and hangs up at once (wiremock keeps its ports in a pool, so a
    // dropped MockServer may still answer).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let config = SecretsConfig {
        provider: Provider::Gcp,
        project: Some(PROJECT.into()),
        endpoint: Some(format!("http://{address}")),
        ..SecretsConfig::default()
    };
    let secrets = Secrets::from_config(&config).await.unwrap();
    let e = secrets.get("comtrade-key").await.unwrap_err();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    assert!(e.is_retryable(), "{e}");
}

#[tokio::test]
async fn a_payload_that_fails_its_checksum_is_rejected_as_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(access_path("k")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("projects/{PROJECT}/secrets/k/versions/1"),
            "payload": { "data": BASE64.encode("value"), "dataCrc32c": "1" },
        })))
        .mount(&server)
        .await;
    let secrets = gcp(&server, Duration::from_secs(300)).await;
    let e = secrets.get("k").await.unwrap_err();
    assert!(e.to_string().contains("CRC32C"), "{e}");
    assert!(e.is_retryable());
}

#[tokio::test]
async fn gcp_set_creates_a_missing_secret_then_adds_a_version() {
    let server = MockServer::start().await;
    let secret = format!("/v1/projects/{PROJECT}/secrets/new-key");
    Mock::given(method("GET"))
        .and(path(secret.clone()))
        .respond_with(google_error(404, "NOT_FOUND", "Secret not found."))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v1/projects/{PROJECT}/secrets")))
        .and(query_param("secretId", "new-key"))
        .and(body_partial_json(json!({"replication": {"automatic": {}}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("projects/{PROJECT}/secrets/new-key"),
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{secret}:addVersion")))
        .and(body_partial_json(
            json!({"payload": {"data": BASE64.encode("fresh-value")}}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("projects/{PROJECT}/secrets/new-key/versions/1"),
        })))
        .expect(1)
        .mount(&server)
        .await;
    let secrets = gcp(&server, Duration::from_secs(300)).await;
    let out = command_output(
        &secrets,
        Command::Set {
            id: "new-key".into(),
            value: "fresh-value".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        "secret new-key: stored in gcp project test-project (version 1)\n"
    );
}

#[tokio::test]
async fn gcp_set_of_an_existing_secret_adds_a_version_and_drops_the_cached_value() {
    let server = MockServer::start().await;
    let secret = format!("/v1/projects/{PROJECT}/secrets/k");
    Mock::given(method("GET"))
        .and(path(access_path("k")))
        .respond_with(version("k", 1, "old"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(secret.clone()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("projects/{PROJECT}/secrets/k"),
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v1/projects/{PROJECT}/secrets")))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{secret}:addVersion")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("projects/{PROJECT}/secrets/k/versions/2"),
        })))
        .expect(1)
        .mount(&server)
        .await;
    let secrets = gcp(&server, Duration::from_secs(3600)).await;
    assert_eq!(secrets.get("k").await.unwrap().expose(), "old");
    secrets.set("k", "new").await.unwrap();
    Mock::given(method("GET"))
        .and(path(access_path("k")))
        .respond_with(version("k", 2, "new"))
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(secrets.get("k").await.unwrap().expose(), "new");
}

#[tokio::test]
async fn gcp_get_command_says_where_the_secret_was_found_and_its_length() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(access_path("comtrade-key")))
        .respond_with(version("comtrade-key", 7, &"x".repeat(32)))
        .mount(&server)
        .await;
    let secrets = gcp(&server, Duration::from_secs(300)).await;
    let out = command_output(&secrets, get("comtrade-key", false))
        .await
        .unwrap();
    assert_eq!(
        out,
        "secret comtrade-key: found in gcp project test-project (version 7, the latest), 32 bytes\n"
    );
}

// ---- The canary: a value that must never be printed ----

/// Collects everything `tracing` emits at any level, from every crate.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_no_canary(what: &str, text: &str) {
    assert!(!text.contains(CANARY), "{what} leaks the value: {text}");
    let encoded = BASE64.encode(CANARY);
    assert!(!text.contains(&encoded), "{what} leaks the value: {text}");
}

/// A step's error message is the error's Display (`StepError::from`), so that covers it too.
fn assert_error_has_no_canary(e: &Error) {
    assert_no_canary("Display of an error", &e.to_string());
    assert_no_canary("Debug of an error", &format!("{e:?}"));
}

#[tokio::test]
async fn a_secret_value_never_appears_in_errors_logs_or_output_without_show() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // With a single registered dispatcher, tracing-core computes the interest of a callsite
    // first hit on another thread (another test) from that thread's default alone, caches
    // "never", and this subscriber would miss the event. A second live dispatcher makes it
    // compute every callsite's interest over all dispatchers, under a lock.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(access_path("canary")))
        .respond_with(version("canary", 1, CANARY))
        .mount(&server)
        .await;
    // A server that echoes the value back in its error message.
    Mock::given(method("GET"))
        .and(path(format!("/v1/projects/{PROJECT}/secrets/echoed")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"name": "x"})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/v1/projects/{PROJECT}/secrets/echoed:addVersion"
        )))
        .respond_with(google_error(
            400,
            "INVALID_ARGUMENT",
            &format!("payload {CANARY} rejected"),
        ))
        .mount(&server)
        .await;
    // Responses that cannot be decoded, with the value in their bodies.
    Mock::given(method("GET"))
        .and(path(access_path("garbled")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"name": 1, "payload": {"data": CANARY}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(access_path("plain")))
        .respond_with(ResponseTemplate::new(500).set_body_string(format!("oops {CANARY}")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(access_path("corrupt")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("projects/{PROJECT}/secrets/corrupt/versions/1"),
            "payload": { "data": BASE64.encode(CANARY), "dataCrc32c": "12345" },
        })))
        .mount(&server)
        .await;

    let secrets = gcp(&server, Duration::from_secs(300)).await;
    let secret = secrets.get("canary").await.unwrap();
    assert_eq!(secret.expose(), CANARY);
    assert_eq!(format!("{secret}"), "Secret([redacted])");
    assert_eq!(format!("{secret:?}"), "Secret([redacted])");
    assert_no_canary("Debug of the provider", &format!("{secrets:?}"));

    let out = command_output(&secrets, get("canary", false))
        .await
        .unwrap();
    assert_no_canary("secrets get", &out);
    assert!(out.contains(&format!("{} bytes", CANARY.len())), "{out}");
    let shown = command_output(&secrets, get("canary", true)).await.unwrap();
    assert_eq!(shown, format!("{CANARY}\n"));

    let e = secrets.set("echoed", CANARY).await.unwrap_err();
    assert!(e.to_string().contains("INVALID_ARGUMENT"), "{e}");
    assert_error_has_no_canary(&e);
    for id in ["garbled", "plain", "corrupt"] {
        let e = secrets.get(id).await.unwrap_err();
        assert_error_has_no_canary(&e);
    }

    // The env/file provider, too: its errors and its `set` output.
    let dir = TempDir::new();
    let files = Secrets::from_config_with_env(&env_config(Some(&dir)), |_| None)
        .await
        .unwrap();
    let set = Command::Set {
        id: "canary".into(),
        value: "-".into(),
    };
    let mut out = Vec::new();
    run_command_with_input(&files, set, CANARY.as_bytes(), &mut out)
        .await
        .unwrap();
    assert_no_canary("secrets set", &String::from_utf8(out).unwrap());
    let out = command_output(&files, get("canary", false)).await.unwrap();
    assert_no_canary("secrets get (file)", &out);
    let e = files.get("absent").await.unwrap_err();
    assert_error_has_no_canary(&e);

    drop(_guard);
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("secret"), "nothing was logged: {logs}");
    assert_no_canary("the logs", &logs);
}

// ---- The env/file provider ----

#[tokio::test]
async fn env_provider_reads_the_prefixed_upper_cased_variable() {
    let secrets = Secrets::from_config_with_env(
        &env_config(None),
        env_of(&[("TRIBUTARY_SECRET_COMTRADE_KEY", "from-env")]),
    )
    .await
    .unwrap();
    assert_eq!(
        secrets.get("comtrade-key").await.unwrap().expose(),
        "from-env"
    );
    let out = command_output(&secrets, get("comtrade-key", false))
        .await
        .unwrap();
    assert_eq!(
        out,
        "secret comtrade-key: found in env TRIBUTARY_SECRET_COMTRADE_KEY, 8 bytes\n"
    );
}

#[tokio::test]
async fn env_provider_reads_the_file_named_by_the_id_without_its_trailing_newline() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("db-password"), "from-file\n").unwrap();
    let secrets = Secrets::from_config_with_env(&env_config(Some(&dir)), |_| None)
        .await
        .unwrap();
    assert_eq!(
        secrets.get("db-password").await.unwrap().expose(),
        "from-file"
    );
}

#[tokio::test]
async fn an_env_variable_takes_precedence_over_the_file_and_an_empty_one_does_not() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("a"), "file-a").unwrap();
    std::fs::write(dir.0.join("b"), "file-b").unwrap();
    let secrets = Secrets::from_config_with_env(
        &env_config(Some(&dir)),
        env_of(&[("TRIBUTARY_SECRET_A", "env-a"), ("TRIBUTARY_SECRET_B", "")]),
    )
    .await
    .unwrap();
    assert_eq!(secrets.get("a").await.unwrap().expose(), "env-a");
    assert_eq!(secrets.get("b").await.unwrap().expose(), "file-b");
}

#[tokio::test]
async fn env_set_writes_the_file_with_mode_0600_and_reads_the_value_from_stdin() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new();
    let secrets = Secrets::from_config_with_env(
        &env_config(Some(&dir)),
        env_of(&[("TRIBUTARY_SECRET_SHADOWED", "env")]),
    )
    .await
    .unwrap();
    secrets.set("api-key", "v1").await.unwrap();
    let file = dir.0.join("api-key");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "v1");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    let set = Command::Set {
        id: "api-key".into(),
        value: "-".into(),
    };
    let mut out = Vec::new();
    run_command_with_input(&secrets, set, &b"v2 from stdin\n"[..], &mut out)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("secret api-key: stored in file {}\n", file.display())
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "v2 from stdin");
    assert_eq!(
        secrets.get("api-key").await.unwrap().expose(),
        "v2 from stdin"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");

    let set = Command::Set {
        id: "shadowed".into(),
        value: "file".into(),
    };
    let mut out = Vec::new();
    run_command_with_input(&secrets, set, std::io::empty(), &mut out)
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("note: TRIBUTARY_SECRET_SHADOWED is set and takes precedence"),
        "{out}"
    );
}

#[tokio::test]
async fn env_set_without_a_directory_or_with_an_empty_value_is_refused() {
    let secrets = Secrets::from_config_with_env(&env_config(None), |_| None)
        .await
        .unwrap();
    let e = secrets.set("k", "v").await.unwrap_err();
    assert!(
        matches!(&e, Error::Config(m) if m.contains("secrets.dir")),
        "{e:?}"
    );
    let e = secrets.set("k", "").await.unwrap_err();
    assert!(matches!(e, Error::InvalidValue { .. }), "{e:?}");
}

#[tokio::test]
async fn a_missing_secret_names_the_variable_and_the_file_it_looked_for() {
    let dir = TempDir::new();
    let secrets = Secrets::from_config_with_env(&env_config(Some(&dir)), |_| None)
        .await
        .unwrap();
    let e = secrets.get("comtrade-key").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "secret \"comtrade-key\" not found: looked in env TRIBUTARY_SECRET_COMTRADE_KEY, \
             file {}",
            dir.0.join("comtrade-key").display()
        )
    );
    assert!(!e.is_retryable());
    assert_eq!(
        secrets.describe(),
        format!(
            "env TRIBUTARY_SECRET_<ID>, file {}",
            dir.0.join("<id>").display()
        )
    );

    let without_dir = Secrets::from_config_with_env(&env_config(None), |_| None)
        .await
        .unwrap();
    let e = without_dir.get("comtrade-key").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("looked in env TRIBUTARY_SECRET_COMTRADE_KEY"),
        "{e}"
    );
}

#[tokio::test]
async fn invalid_ids_are_rejected_before_anything_is_read_or_written() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("x"), "outside").unwrap();
    let inner = TempDir::new();
    let secrets = Secrets::from_config_with_env(&env_config(Some(&inner)), |_| None)
        .await
        .unwrap();
    let escape = format!("../{}/x", dir.0.file_name().unwrap().to_string_lossy());
    for id in [escape.as_str(), "", "has space", "a.b"] {
        let e = secrets.get(id).await.unwrap_err();
        assert!(matches!(e, Error::InvalidId { .. }), "{id}: {e:?}");
        let e = secrets.set(id, "v").await.unwrap_err();
        assert!(matches!(e, Error::InvalidId { .. }), "{id}: {e:?}");
    }
    assert_eq!(std::fs::read_dir(&inner.0).unwrap().count(), 0);
}

// ---- Configuration ----

#[tokio::test]
async fn a_gcp_provider_without_a_project_is_a_configuration_error() {
    let config = SecretsConfig {
        provider: Provider::Gcp,
        ..SecretsConfig::default()
    };
    let e = Secrets::from_config(&config).await.unwrap_err();
    assert!(
        matches!(&e, Error::Config(m) if m.contains("secrets.project")),
        "{e:?}"
    );
    let e = Config::load_from(None, env_of(&[("TRIBUTARY_SECRETS_PROVIDER", "gcp")])).unwrap_err();
    assert!(
        matches!(&e, tributary::config::Error::Invalid(m) if m.contains("secrets.project")),
        "{e:?}"
    );
}

#[test]
fn the_old_stacks_variables_select_the_provider_and_project_below_the_new_ones() {
    let load = |pairs| Config::load_from(None, env_of(pairs)).unwrap().secrets;
    let s = load(&[
        ("SECRET_MANAGER_ENABLED", "True"),
        ("GCP_PROJECT_ID", "old-project"),
        ("GOOGLE_CLOUD_PROJECT", "other-project"),
    ]);
    assert_eq!(s.provider, Provider::Gcp);
    assert_eq!(s.project.as_deref(), Some("old-project"));
    let s = load(&[
        ("SECRET_MANAGER_ENABLED", "False"),
        ("GOOGLE_CLOUD_PROJECT", "p"),
    ]);
    assert_eq!(s.provider, Provider::Env);
    assert_eq!(s.project.as_deref(), Some("p"));
    let s = load(&[
        ("SECRET_MANAGER_ENABLED", "true"),
        ("TRIBUTARY_SECRETS_PROVIDER", "env"),
        ("TRIBUTARY_SECRETS_PROJECT", "new-project"),
        ("GCP_PROJECT_ID", "old-project"),
    ]);
    assert_eq!(s.provider, Provider::Env);
    assert_eq!(s.project.as_deref(), Some("new-project"));
    let e = Config::load_from(None, env_of(&[("SECRET_MANAGER_ENABLED", "maybe")])).unwrap_err();
    assert!(e.to_string().contains("SECRET_MANAGER_ENABLED"), "{e}");
}

#[test]
fn the_secrets_section_of_the_file_is_read_and_the_project_in_it_beats_gcp_project_id() {
    let dir = TempDir::new();
    let file = dir.0.join("t.toml");
    std::fs::write(
        &file,
        "[secrets]\nprovider = \"gcp\"\nproject = \"filed\"\ncache-ttl = \"1m\"\n\
         dir = \"/run/secrets\"\nendpoint = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let c = Config::load_from(
        Some(&file),
        env_of(&[
            ("GCP_PROJECT_ID", "from-env"),
            ("TRIBUTARY_SECRETS_CACHE_TTL", "30s"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.secrets,
        SecretsConfig {
            provider: Provider::Gcp,
            project: Some("filed".into()),
            cache_ttl: Duration::from_secs(30),
            env_prefix: "TRIBUTARY_SECRET_".into(),
            dir: Some("/run/secrets".into()),
            endpoint: Some("http://127.0.0.1:1".into()),
        }
    );
    std::fs::write(&file, "[secrets]\nprovidr = \"gcp\"\n").unwrap();
    let e = Config::load_from(Some(&file), env_of(&[])).unwrap_err();
    assert!(e.to_string().contains("providr"), "{e}");
    let d = Config::load_from(None, env_of(&[])).unwrap().secrets;
    assert_eq!(d, SecretsConfig::default());
    assert_eq!(d.provider, Provider::Env);
    assert_eq!(d.cache_ttl, Duration::from_secs(300));
}

#[test]
fn the_command_parses_get_show_and_set() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }
    let cli = Cli::try_parse_from(["t", "get", "comtrade-key", "--show"]).unwrap();
    assert!(matches!(cli.command, Command::Get { id, show: true } if id == "comtrade-key"));
    let cli = Cli::try_parse_from(["t", "set", "k", "-"]).unwrap();
    assert!(matches!(cli.command, Command::Set { id, value } if id == "k" && value == "-"));
}

#[test]
fn a_secret_prints_redacted() {
    let s = Secret::new(CANARY);
    assert_no_canary("Display", &format!("{s}"));
    assert_no_canary("Debug", &format!("{s:?} {:?}", Some(&s)));
}
