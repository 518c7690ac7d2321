//! Runs the Node helpers in `tests/js`: an upstream OpenID provider (`idp.mjs`), a
//! scripted browser (`browser.mjs`) and an MCP client on the official TypeScript SDK
//! (`ts-client.mjs`). They need Node 20 and `npm ci --prefix tests/js`.
//!
//! Every child is started with `kill_on_drop` and a piped stdin: `idp.mjs` also exits
//! when that pipe closes, so it goes away even when the test process dies without
//! running destructors.

// Test helpers fail the test that called them, loudly and with the child's output; and
// each test binary uses only some of them.
#![allow(clippy::panic, clippy::expect_used, dead_code)]

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);
const TS_CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `idp.mjs`; it is killed when this is dropped.
pub struct Idp {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub issuer: String,
    child: Child,
    logs: Arc<Mutex<String>>,
}

impl Idp {
    /// Runs `node tests/js/idp.mjs` with one confidential client (`redirect_uri` may be a
    /// comma-separated list) and the default user alice / alice-password, and waits for
    /// its `IDP_READY` line.
    pub async fn start(client_id: &str, client_secret: &str, redirect_uri: &str) -> Idp {
        Self::start_with_users(client_id, client_secret, redirect_uri, None).await
    }

    /// Like [`Idp::start`], with `users` as the JSON list `IDP_USERS` takes:
    /// `[{"username", "password", "email", "groups": [...]}]`.
    pub async fn start_with_users(
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        users: Option<&serde_json::Value>,
    ) -> Idp {
        let mut command = node("idp.mjs");
        command
            .env("IDP_PORT", "0")
            .env("IDP_CLIENT_ID", client_id)
            .env("IDP_CLIENT_SECRET", client_secret)
            .env("IDP_REDIRECT_URI", redirect_uri)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(users) = users {
            command.env("IDP_USERS", users.to_string());
        }
        let mut child = spawn(&mut command, "idp.mjs");

        // stderr is drained all along, or a chatty IdP would block on a full pipe.
        let logs = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        let drain = tokio::spawn(collect_lines(pipe, Arc::clone(&logs)));

        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await;
        let issuer = match first {
            Ok(Ok(Some(line))) => line.strip_prefix("IDP_READY ").map(str::to_owned),
            _ => None,
        };
        let Some(issuer) = issuer else {
            // Once the child is gone its stderr ends, and the drain has all of it.
            let _ = child.start_kill();
            let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
            panic!(
                "idp.mjs did not print IDP_READY ({status:?}); its stderr:\n{}",
                snapshot(&logs)
            );
        };
        // Anything after the ready line is kept with the logs; reading it also spares the
        // IdP an EPIPE on a closed stdout.
        tokio::spawn(collect_lines(lines.into_inner(), Arc::clone(&logs)));
        Idp {
            issuer,
            child,
            logs,
        }
    }

    /// What the IdP logged so far (sign-ins, refused requests), for assertions and
    /// failure messages.
    pub fn logs(&self) -> String {
        snapshot(&self.logs)
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        // kill_on_drop would do this too; saying it here keeps the intent in one place.
        let _ = self.child.start_kill();
    }
}

/// Runs `browser.mjs` from `start_url` until a redirect to a URL starting with
/// `stop_at`, and returns that URL (the client callback, with `code`, `state`, `iss`).
pub async fn browser_login(start_url: &str, stop_at: &str, user: &str, password: &str) -> String {
    let mut command = node("browser.mjs");
    command.args([start_url, stop_at, user, password]);
    let output = run(&mut command, "browser.mjs", BROWSER_TIMEOUT).await;
    if !output.status.success() {
        panic!(
            "browser.mjs failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Runs `ts-client.mjs` against `mcp_url`. Returns whether it exited 0 (every step
/// passed) and its stdout lines as JSON, one per step: `{"step": ..., "ok": ...}`.
/// A line that is not JSON comes back as a JSON string.
pub async fn run_ts_client(
    mcp_url: &str,
    user: &str,
    password: &str,
) -> (bool, Vec<serde_json::Value>) {
    let mut command = node("ts-client.mjs");
    command
        .arg(mcp_url)
        .env("LOGIN_USER", user)
        .env("LOGIN_PASSWORD", password);
    let output = run(&mut command, "ts-client.mjs", TS_CLIENT_TIMEOUT).await;

    // Shown by the test harness only when the test fails.
    eprintln!(
        "ts-client.mjs stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let steps = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| serde_json::Value::from(line)))
        .collect();
    (output.status.success(), steps)
}

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("js")
}

/// Installs the npm packages of `tests/js` once, so that `cargo test` alone is enough on a
/// fresh machine. Test binaries run in parallel: an atomic `mkdir` serialises them.
fn ensure_node_modules(dir: &std::path::Path) {
    let installed = dir.join("node_modules").join(".package-lock.json");
    if installed.is_file() {
        return;
    }

    let lock = dir.join(".install-lock");
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while std::fs::create_dir(&lock).is_err() {
        if installed.is_file() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for npm ci"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir)
        .status();
    let _ = std::fs::remove_dir(&lock);
    match status {
        Ok(s) if s.success() => {}
        other => panic!("`npm ci --prefix {}` failed: {other:?}", dir.display()),
    }
}

/// `node tests/js/<script>`, after making sure the npm packages are installed.
fn node(script: &str) -> Command {
    let dir = js_dir();
    ensure_node_modules(&dir);
    let mut command = Command::new("node");
    command
        .arg(dir.join(script))
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    command
}

fn spawn(command: &mut Command, script: &str) -> Child {
    command.spawn().unwrap_or_else(|err| {
        panic!("could not run `node {script}` (is Node.js 20 or later on PATH?): {err}")
    })
}

async fn run(command: &mut Command, script: &str, limit: Duration) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = spawn(command, script);
    // On timeout the child is dropped, and so killed.
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(output) => output.unwrap_or_else(|err| panic!("waiting for {script}: {err}")),
        Err(_) => panic!("{script} did not finish within {limit:?}"),
    }
}

async fn collect_lines(pipe: impl AsyncRead + Unpin, sink: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut text = sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        text.push_str(&line);
        text.push('\n');
    }
}

fn snapshot(text: &Mutex<String>) -> String {
    text.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}
