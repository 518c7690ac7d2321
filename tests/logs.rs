//! Nothing secret reaches a log line: a whole login through `dev` (the built-in login form,
//! a confidential client, code, token, refresh, an `/mcp` call, and a few refusals) with
//! every log line captured at TRACE, then searched for key material, tokens, codes, client
//! secrets, PKCE verifiers and the development password. Its own test binary, since the
//! subscriber it installs is global.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use mcp_connector::dev::{self, DevOptions};
use mcp_connector::keys::Keyset;
use support::server::pkce;

/// Every byte the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn query_value(location: &str, key: &str) -> String {
    let url = url::Url::parse(location).unwrap();
    let found = url.query_pairs().find(|(k, _)| k == key);
    found
        .unwrap_or_else(|| panic!("no {key} in {location}"))
        .1
        .into_owned()
}

/// The secrets to look for, named, and a few slices of each, so that a log that cut one
/// short is caught too.
fn needles(secrets: &[(&str, String)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, secret) in secrets {
        out.push((name.to_string(), secret.clone()));
        if secret.len() >= 48 {
            let mid = secret.len() / 2;
            out.push((
                format!("{name} (middle)"),
                secret[mid - 12..mid + 12].to_string(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_login_writes_no_secret_to_any_log_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .fmt_fields(mcp_connector::logging::text_fields())
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();

    let state_dir = std::env::temp_dir().join(format!("mcp-connector-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state_dir);
    let server = dev::start(DevOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: state_dir.clone(),
        mcp_server: None,
        mcp_server_http2: false,
        oidc: None,
        auto_login: None,
    })
    .await
    .unwrap();
    let base = server.base_url.clone();
    let (user, password) = server.dev_user.clone().unwrap();
    let password = password.expose().to_string();
    let redirect = "http://127.0.0.1:5000/callback";
    let client = http();

    // A confidential client.
    let registered: Value = client
        .post(format!("{base}/register"))
        .json(
            &json!({"redirect_uris": [redirect], "token_endpoint_auth_method": "client_secret_post",
            "client_name": "logs"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_id = registered["client_id"].as_str().unwrap().to_string();
    let client_secret = registered["client_secret"].as_str().unwrap().to_string();

    // The login form, a wrong password, then the right one.
    let (verifier, challenge) = pkce();
    let page = client
        .get(format!("{base}/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", redirect),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", "logs-state"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sealed_login = page
        .split("name=\"request\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let login = |pw: String| {
        let (client, base, sealed, user) = (&client, &base, &sealed_login, &user);
        async move {
            client
                .post(format!("{base}/login"))
                .form(&[
                    ("request", sealed.as_str()),
                    ("username", user.as_str()),
                    ("password", pw.as_str()),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(login(format!("{password}x")).await.status(), 401);
    let signed_in = login(password.clone()).await;
    assert_eq!(signed_in.status(), 302);
    let location = signed_in.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    let code = query_value(&location, "code");

    // The code, a wrong secret, the right one, then a refresh.
    let token = |form: Vec<(&'static str, String)>| {
        let (client, base) = (&client, &base);
        async move {
            let r = client
                .post(format!("{base}/token"))
                .form(&form)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let exchange = |secret: String| {
        vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.clone()),
            ("code_verifier", verifier.clone()),
            ("redirect_uri", redirect.to_string()),
            ("client_id", client_id.clone()),
            ("client_secret", secret),
        ]
    };
    let (status, _) = token(exchange(format!("{client_secret}x"))).await;
    assert_eq!(status, 401);
    let (status, tokens) = token(exchange(client_secret.clone())).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let (status, refreshed) = token(vec![
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", refresh.clone()),
        ("client_id", client_id.clone()),
        ("client_secret", client_secret.clone()),
    ])
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let access2 = refreshed["access_token"].as_str().unwrap().to_string();
    let refresh2 = refreshed["refresh_token"].as_str().unwrap().to_string();

    // An MCP call with the token, and one with a tampered token.
    let call = |bearer: String| {
        let (client, base) = (&client, &base);
        async move {
            client
                .post(format!("{base}/mcp"))
                .bearer_auth(bearer)
                .header("accept", "application/json, text/event-stream")
                .json(
                    &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "logs", "version": "1"}}}),
                )
                .send()
                .await
                .unwrap()
        }
    };
    let answer = call(access2.clone()).await;
    assert_eq!(answer.status(), 200);
    let _ = answer.text().await;
    assert_eq!(call(format!("{access2}x")).await.status(), 401);

    // Input that would forge a log line or drive the reader's terminal, if written raw.
    const FORGED: &str = "\n2026-12-03T16:00:00.000000Z  INFO FORGED tokens issued user=admin";
    let (status, _) = token(vec![
        ("grant_type", format!("x{FORGED}\u{1b}[2J")),
        ("client_id", client_id.clone()),
        ("client_secret", client_secret.clone()),
    ])
    .await;
    assert_eq!(status, 400);
    let refused = client
        .post(format!("{base}/register"))
        .json(&json!({"redirect_uris": [format!("http://127.0.0.1:5000/cb{FORGED}")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    // What must not appear: every key in the state folder, and everything above.
    let mut secrets: Vec<(&str, String)> = vec![
        ("dev password", password.clone()),
        ("client secret", client_secret.clone()),
        ("PKCE verifier", verifier.clone()),
        ("code", code.clone()),
        ("sealed login request", sealed_login.clone()),
        ("access token", access.clone()),
        ("refreshed access token", access2.clone()),
        (
            "access token signature",
            access.rsplit('.').next().unwrap().to_string(),
        ),
        ("refresh token", refresh.clone()),
        ("rotated refresh token", refresh2.clone()),
    ];
    for file in ["dcr-keys.json", "signing-keys.json"] {
        let bytes = std::fs::read(state_dir.join(file)).unwrap();
        let set = Keyset::from_bytes(Some(&bytes)).unwrap();
        for key in set.keys {
            let material = key.material.expose().to_string();
            for line in material
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() > 16)
            {
                secrets.push(("key material (PEM line)", line.to_string()));
            }
            secrets.push(("key material", material));
        }
    }
    secrets.push(("PEM marker", "PRIVATE KEY".to_string()));
    secrets.push(("PEM marker", "-----BEGIN".to_string()));

    server.task.abort();
    let logs = captured.text();
    let lines = logs.lines().count();
    assert!(
        lines > 50,
        "only {lines} log lines were captured: is TRACE on?"
    );
    assert!(
        logs.contains("user signed in"),
        "the login was not logged at all"
    );

    assert!(
        logs.contains("FORGED"),
        "the forging attempts were not logged, so the check below proves nothing"
    );
    let forged: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("Z  INFO FORGED"))
        .collect();
    assert!(
        forged.iter().all(|l| !l.starts_with("2026-12-03T16:00:00")),
        "a client started a log line of its own: {forged:?}"
    );
    assert!(
        !logs.contains('\u{1b}'),
        "an escape sequence reached the log"
    );

    let mut leaks = Vec::new();
    for (name, needle) in needles(&secrets) {
        if let Some(line) = logs.lines().find(|l| l.contains(&needle)) {
            leaks.push(format!("{name}: {}", &line[..line.len().min(300)]));
        }
    }
    let _ = std::fs::remove_dir_all(&state_dir);
    assert!(
        leaks.is_empty(),
        "secrets in {lines} log lines:\n{}",
        leaks.join("\n")
    );
    println!("{lines} log lines at TRACE, none with a secret");
}
