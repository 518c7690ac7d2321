//! Upstream sign-in against a real OpenID provider: `tests/js/idp.mjs` (node `oidc-provider`)
//! as the IdP and `tests/js/browser.mjs` as alice's browser. Each test starts its own IdP.
//!
//! Needs node and `npm ci --prefix tests/js`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mcp_connector::keys::SecretString;
use mcp_connector::upstream::oidc::{Identity, OidcClient, OidcUpstream, UpstreamError};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const CLIENT_ID: &str = "connector";
const CLIENT_SECRET: &str = "connector-secret-3f9a1c";
// Nothing listens here: the browser stops at the redirect and never fetches it.
const REDIRECT_URI: &str = "http://127.0.0.1:9/oauth/callback";
const STATE: &str = "state-5b1e0c";
const NONCE: &str = "nonce-9d7f42";
const VERIFIER: &str = "verifier-0123456789abcdefghijklmnopqrstuvwxyz-ABCDEFG";

/// A running idp.mjs; dropping it ends the process.
struct Idp {
    issuer: url::Url,
    _process: Child,
}

fn js(file: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    assert!(
        dir.join("node_modules/oidc-provider").is_dir(),
        "run `npm ci --prefix tests/js` first"
    );
    dir.join(file)
}

async fn start_idp() -> Idp {
    let mut process = Command::new("node")
        .arg(js("idp.mjs"))
        .env("IDP_PORT", "0")
        .env("IDP_CLIENT_ID", CLIENT_ID)
        .env("IDP_CLIENT_SECRET", CLIENT_SECRET)
        .env("IDP_REDIRECT_URI", REDIRECT_URI)
        // idp.mjs exits when its stdin closes, so it cannot outlive a killed test run.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");

    let stdout = process.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("idp.mjs is ready within 30 s")
        .expect("idp.mjs stdout is readable")
        .expect("idp.mjs prints a line");
    let issuer = line
        .strip_prefix("IDP_READY ")
        .expect("the line is IDP_READY <issuer>");

    Idp {
        issuer: issuer.parse().expect("the issuer is a URL"),
        _process: process,
    }
}

fn upstream(idp: &Idp, secret: &str) -> OidcUpstream {
    OidcUpstream {
        issuer_url: idp.issuer.clone(),
        client_id: CLIENT_ID.to_owned(),
        client_secret: SecretString::new(secret),
        scopes: ["openid", "email", "profile", "groups"]
            .map(String::from)
            .to_vec(),
        username_claim: "email".to_owned(),
        groups_claim: "groups".to_owned(),
    }
}

fn oidc_client() -> OidcClient {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client");
    OidcClient::new(http)
}

fn unix_now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since_epoch.as_secs()).expect("fits")
}

/// Alice signs in at the IdP; returns the code from the callback URL it redirects to.
async fn sign_in(client: &OidcClient, up: &OidcUpstream) -> String {
    let start = client
        .authorize_url(up, REDIRECT_URI, STATE, NONCE, VERIFIER)
        .await
        .expect("an authorization URL");

    let browser = Command::new("node")
        .arg(js("browser.mjs"))
        .args([start.as_str(), REDIRECT_URI, "alice", "alice-password"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), browser)
        .await
        .expect("the browser finishes within 60 s")
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser.mjs failed: {stderr}");

    let callback: url::Url = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a URL");
    let param = |name: &str| {
        callback
            .query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    assert_eq!(
        param("state").as_deref(),
        Some(STATE),
        "callback: {callback}"
    );
    assert_eq!(param("error"), None, "callback: {callback}");
    param("code").expect("the callback carries a code")
}

/// No error message, nor its `Debug`, may carry the code, the verifier or the secret.
fn assert_discreet(err: &UpstreamError, code: &str) {
    let shown = format!("{err} / {err:?}");
    for secret in [code, VERIFIER, CLIENT_SECRET] {
        assert!(!shown.contains(secret), "`{shown}` reveals `{secret}`");
    }
}

#[tokio::test]
async fn alice_signs_in_with_her_email_and_groups() {
    let idp = start_idp().await;
    let up = upstream(&idp, CLIENT_SECRET);
    let client = oidc_client();

    let code = sign_in(&client, &up).await;
    let identity = client
        .finish(&up, REDIRECT_URI, &code, NONCE, VERIFIER, unix_now())
        .await
        .expect("alice is signed in");

    let groups = vec!["sre".to_owned(), "dev".to_owned()];
    assert_eq!(
        identity,
        Identity {
            username: "alice@example.com".to_owned(),
            groups
        }
    );

    // RFC 6749 4.1.2: a code works once.
    let again = client
        .finish(&up, REDIRECT_URI, &code, NONCE, VERIFIER, unix_now())
        .await;
    let err = again.expect_err("a used code is refused");
    assert!(matches!(&err, UpstreamError::Exchange { error, .. } if error == "invalid_grant"));
    assert_discreet(&err, &code);
}

#[tokio::test]
async fn the_authorization_url_carries_only_our_parameters() {
    let idp = start_idp().await;
    let up = upstream(&idp, CLIENT_SECRET);

    let url = oidc_client()
        .authorize_url(&up, REDIRECT_URI, STATE, NONCE, VERIFIER)
        .await
        .expect("an authorization URL");

    let mut names: Vec<String> = url
        .query_pairs()
        .map(|(name, _)| name.into_owned())
        .collect();
    names.sort();
    let expected = [
        "client_id",
        "code_challenge",
        "code_challenge_method",
        "nonce",
        "redirect_uri",
        "response_type",
        "scope",
        "state",
    ];
    assert_eq!(names, expected);
    let param = |name: &str| {
        url.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, v)| v)
    };
    assert_eq!(param("response_type").as_deref(), Some("code"));
    assert_eq!(
        param("scope").as_deref(),
        Some("openid email profile groups")
    );
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert!(
        url.as_str()
            .starts_with(idp.issuer.as_str().trim_end_matches('/'))
    );
}

#[tokio::test]
async fn a_wrong_nonce_is_refused() {
    let idp = start_idp().await;
    let up = upstream(&idp, CLIENT_SECRET);
    let client = oidc_client();
    let code = sign_in(&client, &up).await;

    let result = client.finish(
        &up,
        REDIRECT_URI,
        &code,
        "another-nonce",
        VERIFIER,
        unix_now(),
    );
    let err = result
        .await
        .expect_err("a token for another login is refused");

    assert!(
        matches!(&err, UpstreamError::IdToken(reason) if reason.contains("nonce")),
        "{err}"
    );
    assert!(!err.is_transient());
    assert_discreet(&err, &code);
}

#[tokio::test]
async fn a_tampered_code_is_refused() {
    let idp = start_idp().await;
    let up = upstream(&idp, CLIENT_SECRET);
    let client = oidc_client();
    let code = sign_in(&client, &up).await;

    let tampered = format!("{}x", &code[..code.len() - 1]);
    let result = client.finish(&up, REDIRECT_URI, &tampered, NONCE, VERIFIER, unix_now());
    let err = result.await.expect_err("a tampered code is refused");

    assert!(
        matches!(&err, UpstreamError::Exchange { error, .. } if error == "invalid_grant"),
        "{err}"
    );
    assert!(!err.is_transient());
    assert_discreet(&err, &code);
    assert_discreet(&err, &tampered);
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused() {
    let idp = start_idp().await;
    let client = oidc_client();
    let code = sign_in(&client, &upstream(&idp, CLIENT_SECRET)).await;

    let wrong = upstream(&idp, "not-the-secret-7c2d");
    let result = client.finish(&wrong, REDIRECT_URI, &code, NONCE, VERIFIER, unix_now());
    let err = result.await.expect_err("a wrong secret is refused");

    assert!(
        matches!(&err, UpstreamError::Exchange { error, .. } if error == "invalid_client"),
        "{err}"
    );
    assert!(!err.is_transient());
    assert_discreet(&err, &code);
    assert!(!err.to_string().contains("not-the-secret-7c2d"));
}

#[tokio::test]
async fn a_wrong_pkce_verifier_is_refused() {
    let idp = start_idp().await;
    let up = upstream(&idp, CLIENT_SECRET);
    let client = oidc_client();
    let code = sign_in(&client, &up).await;

    let other = "another-verifier-0123456789abcdefghijklmnopqrstuvwxyz";
    let err = client
        .finish(&up, REDIRECT_URI, &code, NONCE, other, unix_now())
        .await
        .expect_err("PKCE binds the code to its verifier");

    assert!(matches!(&err, UpstreamError::Exchange { error, .. } if error == "invalid_grant"));
    assert!(!err.to_string().contains(other));
    assert_discreet(&err, &code);
}

#[tokio::test]
async fn an_id_token_is_checked_against_the_given_clock() {
    let idp = start_idp().await;
    let up = upstream(&idp, CLIENT_SECRET);
    let client = oidc_client();
    let code = sign_in(&client, &up).await;

    // idp.mjs issues ID tokens for 600 s; an hour later, with 60 s of leeway, it is stale.
    let later = unix_now() + 3600;
    let err = client
        .finish(&up, REDIRECT_URI, &code, NONCE, VERIFIER, later)
        .await
        .expect_err("an expired ID token is refused");

    assert!(
        matches!(&err, UpstreamError::IdToken(reason) if reason.contains("xpired")),
        "{err}"
    );
    assert_discreet(&err, &code);
}

#[tokio::test]
async fn a_missing_user_name_claim_fails_the_login() {
    let idp = start_idp().await;
    let up = OidcUpstream {
        username_claim: "upn".to_owned(),
        ..upstream(&idp, CLIENT_SECRET)
    };
    let client = oidc_client();
    let code = sign_in(&client, &up).await;

    let err = client
        .finish(&up, REDIRECT_URI, &code, NONCE, VERIFIER, unix_now())
        .await
        .expect_err("no user name, no login");

    assert!(
        matches!(&err, UpstreamError::MissingClaim { claim } if claim == "upn"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_provider_is_a_transient_failure() {
    let up = OidcUpstream {
        issuer_url: "http://127.0.0.1:9".parse().expect("a URL"),
        client_id: CLIENT_ID.to_owned(),
        client_secret: SecretString::new(CLIENT_SECRET),
        scopes: vec!["openid".to_owned()],
        username_claim: "email".to_owned(),
        groups_claim: "groups".to_owned(),
    };

    let result = oidc_client()
        .authorize_url(&up, REDIRECT_URI, STATE, NONCE, VERIFIER)
        .await;
    let err = result.expect_err("nothing listens on port 9");

    assert!(matches!(err, UpstreamError::Discovery { .. }), "{err}");
    assert!(err.is_transient(), "{err}");
}
